//! Byte ranges and validators of a request against a cached object (pure). RFC 9110 §13–14.

use std::ops::Range;

/// What to send for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range: send the whole object (also for multi-range requests, which RFC 9110 allows).
    Full,
    /// 206 with these bytes.
    Partial(Range<u64>),
    /// 416.
    Unsatisfiable,
}

/// Interprets a `Range` header for an object of `len` bytes. Only a single `bytes=` range is honoured.
pub fn parse_range(header: &str, len: u64) -> RangeAnswer {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        return match parse(last) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len == 0 => {
                let _ = n;
                RangeAnswer::Unsatisfiable
            }
            Some(n) => RangeAnswer::Partial(len.saturating_sub(n)..len),
            None => RangeAnswer::Full,
        };
    }
    let Some(start) = parse(first) else {
        return RangeAnswer::Full;
    };
    let end_inclusive = if last.is_empty() {
        None
    } else {
        match parse(last) {
            Some(e) if e >= start => Some(e),
            _ => return RangeAnswer::Full,
        }
    };
    if start >= len {
        return RangeAnswer::Unsatisfiable;
    }
    let end = end_inclusive.map_or(len, |e| e.saturating_add(1).min(len));
    RangeAnswer::Partial(start..end)
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC 9110 §13.1.2).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let ours = strip(etag);
    header.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || strip(candidate) == ours
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(
            parse_range("bytes=0-99", 1000),
            RangeAnswer::Partial(0..100)
        );
        assert_eq!(
            parse_range("bytes=900-", 1000),
            RangeAnswer::Partial(900..1000)
        );
        assert_eq!(
            parse_range("bytes=-100", 1000),
            RangeAnswer::Partial(900..1000)
        );
        assert_eq!(
            parse_range("bytes=-5000", 1000),
            RangeAnswer::Partial(0..1000)
        );
        assert_eq!(
            parse_range("bytes=990-5000", 1000),
            RangeAnswer::Partial(990..1000)
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse_range("bytes=1000-", 1000), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeAnswer::Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeAnswer::Full);
        assert_eq!(parse_range("items=0-1", 1000), RangeAnswer::Full);
        assert_eq!(parse_range("bytes=a-b", 1000), RangeAnswer::Full);
        assert_eq!(parse_range("bytes=+1-2", 1000), RangeAnswer::Full);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 1000),
            RangeAnswer::Full
        );
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 10),
            RangeAnswer::Partial(0..10)
        );
    }

    #[test]
    fn validators() {
        assert!(if_none_match("\"abc\"", "\"abc\""));
        assert!(if_none_match("W/\"abc\"", "\"abc\""));
        assert!(if_none_match("\"x\", \"abc\"", "\"abc\""));
        assert!(if_none_match("*", "\"abc\""));
        assert!(!if_none_match("\"abd\"", "\"abc\""));
    }
}
