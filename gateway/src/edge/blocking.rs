//! LL-HLS blocking playlist reloads at the edge (RFC 8216bis §6.2.5.2), without I/O: what a request's
//! delivery directives ask for, and whether the newest copy of the playlist the follower holds
//! answers it now, later, or never.
//!
//! A player at the live edge asks for the playlist that will contain the next part
//! (`?_HLS_msn=M&_HLS_part=P`) before it exists. The gateway holds the request and answers it the
//! moment its follower (which itself asks the origin with a blocking reload for the next part) has
//! a copy that contains it; every holder of one rendition waits on that one origin request. Rules:
//!
//! - `_HLS_part` without `_HLS_msn`, or a directive that is not a number: 400.
//! - `_HLS_msn` more than two segments beyond the last segment of the playlist, or `_HLS_part` more
//!   than the Advance Part Limit beyond its last part: 400.
//! - Not answered within three target durations: 503.
//! - `_HLS_skip=YES|v2` (a delta update) is held the same way and then asked of the origin, which
//!   now has what it names.

use std::time::Duration;

use crate::hls::LowLatency;

/// A blocking reload: the playlist must contain segment `msn` (whole), or part `part` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub msn: u64,
    pub part: Option<u64>,
    /// `_HLS_skip`: a delta update is asked for.
    pub skip: bool,
}

/// Why a request's delivery directives are refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    #[error("{0} is not a number")]
    NotANumber(&'static str),
    #[error("_HLS_skip must be YES or v2")]
    BadSkip,
    #[error("_HLS_msn or _HLS_part is too far beyond the live edge")]
    TooFar,
}

/// The delivery directives of a (raw) query: `None` when it asks for no blocking reload (it may
/// still carry `_HLS_skip` alone, which is the origin's business).
pub fn directives(query: Option<&str>) -> Result<Option<Want>, DirectiveError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let (mut msn, mut part, mut skip) = (None, None, false);
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "_HLS_msn" => msn = Some(number(value, "_HLS_msn")?),
            "_HLS_part" => part = Some(number(value, "_HLS_part")?),
            "_HLS_skip" => match value {
                "YES" | "v2" => skip = true,
                _ => return Err(DirectiveError::BadSkip),
            },
            _ => {}
        }
    }
    match (msn, part) {
        (None, Some(_)) => Err(DirectiveError::PartWithoutMsn),
        (None, None) => Ok(None),
        (Some(msn), part) => Ok(Some(Want { msn, part, skip })),
    }
}

fn number(value: &str, name: &'static str) -> Result<u64, DirectiveError> {
    // Decimal digits only (no sign, no spaces): what the spec's decimal-integer is.
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DirectiveError::NotANumber(name));
    }
    value.parse().map_err(|_| DirectiveError::NotANumber(name))
}

/// What to do with a blocking reload, given the newest copy of the playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The copy contains what was asked for: answer with it.
    Ready,
    /// Not yet: wait for the follower's next copy.
    Wait,
    /// Further ahead than a client may ask (400).
    TooFar,
}

/// Judges `want` against the live edge of the newest copy.
pub fn judge(edge: &LowLatency, want: Want) -> Verdict {
    // The segment in progress (whose parts are listed after the last whole segment), and how many
    // of its parts exist.
    let (current, parts) = (edge.next_msn, edge.trailing_parts);
    if want.msn < current {
        return Verdict::Ready;
    }
    if let Some(part) = want.part {
        if want.msn == current && part < parts {
            return Verdict::Ready;
        }
    }
    // "More than two segments beyond the last segment": the last whole one is `current - 1`.
    if want.msn > current.saturating_add(1) {
        return Verdict::TooFar;
    }
    if let Some(part) = want.part {
        let limit = advance_part_limit(edge.part_target);
        let ahead = if want.msn == current {
            part.saturating_sub(parts)
        } else {
            // Parts of the next segment count after the ones still due in this one.
            let per_segment = parts_per_segment(edge);
            per_segment.saturating_sub(parts).saturating_add(part)
        };
        if ahead >= limit {
            return Verdict::TooFar;
        }
    }
    Verdict::Wait
}

/// How long a blocking reload is held before it is answered 503: three target durations.
pub fn hold_limit(target: Duration) -> Duration {
    target.saturating_mul(3)
}

/// The spec's Advance Part Limit: three divided by the part target when that is under a second,
/// else three; counted here in parts beyond the last one (at least three).
fn advance_part_limit(part_target: Duration) -> u64 {
    let secs = part_target.as_secs_f64();
    if secs > 0.0 && secs < 1.0 {
        ((3.0 / secs).ceil() as u64).max(3)
    } else {
        3
    }
}

/// Parts in a whole segment, estimated from the target durations (at least one).
fn parts_per_segment(edge: &LowLatency) -> u64 {
    let part = edge.part_target.as_secs_f64();
    if part <= 0.0 {
        return 1;
    }
    ((edge.target.as_secs_f64() / part).round() as u64).max(1)
}

/// The directives the follower sends to the origin to be answered when the next part exists.
pub fn next_part_query(edge: &LowLatency) -> String {
    format!(
        "_HLS_msn={}&_HLS_part={}",
        edge.next_msn, edge.trailing_parts
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(next_msn: u64, trailing_parts: u64) -> LowLatency {
        LowLatency {
            can_block_reload: true,
            part_target: Duration::from_millis(500),
            target: Duration::from_secs(2),
            next_msn,
            trailing_parts,
        }
    }

    fn want(msn: u64, part: Option<u64>) -> Want {
        Want {
            msn,
            part,
            skip: false,
        }
    }

    #[test]
    fn directives_are_read_and_checked() {
        assert_eq!(directives(None), Ok(None));
        assert_eq!(directives(Some("v=1")), Ok(None));
        assert_eq!(directives(Some("_HLS_skip=YES")), Ok(None));
        assert_eq!(
            directives(Some("_HLS_msn=10&_HLS_part=2")),
            Ok(Some(want(10, Some(2))))
        );
        assert_eq!(
            directives(Some("_HLS_skip=v2&_HLS_msn=10")),
            Ok(Some(Want {
                msn: 10,
                part: None,
                skip: true
            }))
        );
        assert_eq!(
            directives(Some("_HLS_part=2")),
            Err(DirectiveError::PartWithoutMsn)
        );
        for bad in [
            "_HLS_msn=",
            "_HLS_msn=-1",
            "_HLS_msn=1e3",
            "_HLS_msn=+1",
            "_HLS_msn",
        ] {
            assert_eq!(
                directives(Some(bad)),
                Err(DirectiveError::NotANumber("_HLS_msn")),
                "{bad}"
            );
        }
        assert_eq!(
            directives(Some("_HLS_msn=1&_HLS_part=99999999999999999999999")),
            Err(DirectiveError::NotANumber("_HLS_part"))
        );
        assert_eq!(
            directives(Some("_HLS_msn=1&_HLS_skip=NO")),
            Err(DirectiveError::BadSkip)
        );
    }

    #[test]
    fn what_the_copy_holds_is_ready_what_comes_next_waits() {
        // Segments up to 99 whole, two parts of 100.
        let e = edge(100, 2);
        assert_eq!(judge(&e, want(99, None)), Verdict::Ready);
        assert_eq!(judge(&e, want(99, Some(7))), Verdict::Ready);
        assert_eq!(judge(&e, want(100, Some(1))), Verdict::Ready);
        assert_eq!(judge(&e, want(100, Some(2))), Verdict::Wait);
        assert_eq!(judge(&e, want(100, None)), Verdict::Wait);
        assert_eq!(judge(&e, want(101, Some(0))), Verdict::Wait);
        assert_eq!(judge(&e, want(101, None)), Verdict::Wait);
        // An old request is answered with the newest copy.
        assert_eq!(judge(&e, want(3, Some(0))), Verdict::Ready);
    }

    #[test]
    fn too_far_ahead_is_refused() {
        let e = edge(100, 2);
        // The last whole segment is 99: 101 is two beyond, 102 three.
        assert_eq!(judge(&e, want(102, None)), Verdict::TooFar);
        assert_eq!(judge(&e, want(u64::MAX, Some(u64::MAX))), Verdict::TooFar);
        // Advance Part Limit for 0.5 s parts: six parts.
        assert_eq!(judge(&e, want(100, Some(7))), Verdict::Wait);
        assert_eq!(judge(&e, want(100, Some(8))), Verdict::TooFar);
        // Two parts left of 100, then parts of 101.
        assert_eq!(judge(&e, want(101, Some(3))), Verdict::Wait);
        assert_eq!(judge(&e, want(101, Some(4))), Verdict::TooFar);
    }

    #[test]
    fn the_follower_asks_for_the_next_part() {
        assert_eq!(next_part_query(&edge(100, 2)), "_HLS_msn=100&_HLS_part=2");
        assert_eq!(hold_limit(Duration::from_secs(2)), Duration::from_secs(6));
        assert_eq!(advance_part_limit(Duration::from_millis(333)), 10);
        assert_eq!(advance_part_limit(Duration::from_secs(2)), 3);
        assert_eq!(advance_part_limit(Duration::ZERO), 3);
    }
}
