//! The one grammar for durations and byte sizes, in every command line and configuration file of
//! the project (gateway, peer-assist, loadtest): `"250ms"`, `"2s"`, `"1.5s"`, `"1m30s"`, `"1h"`, a
//! bare number of seconds; `"16KiB"`, `"64 MiB"`, `"10MB"`, a bare number of bytes.

use std::time::Duration;

/// How the grammar of durations reads in an error message.
pub const DURATION_EXPECTED: &str =
    "a duration such as \"250ms\", \"2s\", \"1.5s\", \"1m\" or \"1h\"";
/// How the grammar of byte sizes reads in an error message.
pub const BYTES_EXPECTED: &str = "a byte size such as 1048576, \"16KiB\", \"512MiB\" or \"10MB\"";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Duration units; lowercase only (`M` could mean months).
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("min", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
];

/// Byte units, matched case-insensitively: decimal (`MB` = 10^6) and binary (`MiB` = 2^20).
const BYTE_UNITS: &[(&str, u128)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// Fractional digits beyond this many are ignored (they are below 1 ns / 1 byte
/// for every unit), which keeps the arithmetic inside `u128`.
const MAX_FRACTION_DIGITS: usize = 18;

/// A decimal number `123`, `1.5` or `.5`, split into parts.
struct Decimal {
    int: u128,
    frac: u128,
    /// 10^(number of fractional digits kept).
    frac_scale: u128,
}

impl Decimal {
    fn parse(s: &str) -> Result<Decimal, &'static str> {
        let (int_digits, frac_digits) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        let all_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if (int_digits.is_empty() && frac_digits.is_empty())
            || !all_digits(int_digits)
            || !all_digits(frac_digits)
        {
            return Err("not a number");
        }
        let mut int: u128 = 0;
        for b in int_digits.bytes() {
            int = int
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(b - b'0')))
                .ok_or("number is too large")?;
        }
        let mut frac: u128 = 0;
        let mut frac_scale: u128 = 1;
        for b in frac_digits.bytes().take(MAX_FRACTION_DIGITS) {
            frac = frac * 10 + u128::from(b - b'0');
            frac_scale *= 10;
        }
        Ok(Decimal {
            int,
            frac,
            frac_scale,
        })
    }

    /// `self * unit`, and whether the result is exact.
    fn scale(&self, unit: u128) -> Option<(u128, bool)> {
        let whole = self.int.checked_mul(unit)?;
        let frac = self.frac * unit; // < 10^18 * 2^47: no overflow
        let total = whole.checked_add(frac / self.frac_scale)?;
        Some((total, frac % self.frac_scale == 0))
    }
}

/// Splits a leading run of digits and dots off `s`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a duration: `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`, `"1d"`,
/// combinations such as `"1m30s"`, or a bare number of seconds (`"5"`, `"0.5"`).
/// Units: ns, us, µs, ms, s, m, min, h, d.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let err =
        |why: String| format!("invalid duration {input:?}: {why}; expected {DURATION_EXPECTED}");
    if s.is_empty() {
        return Err(err("empty".to_owned()));
    }
    if s.starts_with('-') {
        return Err(err("must not be negative".to_owned()));
    }
    let mut rest = s;
    let mut total: u128 = 0;
    let mut first = true;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        if number.is_empty() {
            return Err(err(format!("expected a number at {rest:?}")));
        }
        let decimal = Decimal::parse(number).map_err(|why| err(why.to_owned()))?;
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_end);
        let unit_nanos = if unit.is_empty() {
            if first && tail.is_empty() {
                NANOS_PER_SEC // bare number = seconds
            } else {
                return Err(err(format!("missing unit after {number:?}")));
            }
        } else {
            DURATION_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, nanos)| *nanos)
                .ok_or_else(|| {
                    err(format!(
                        "unknown unit {unit:?} (units: ns, us, ms, s, m, min, h, d)"
                    ))
                })?
        };
        let (nanos, _) = decimal
            .scale(unit_nanos)
            .ok_or_else(|| err("too large".to_owned()))?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| err("too large".to_owned()))?;
        rest = tail.trim_start();
        first = false;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| err("too large".to_owned()))?;
    // The remainder is below 10^9, so it fits in u32.
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| err("too large".to_owned()))?;
    Ok(Duration::new(secs, nanos))
}

/// Parses a byte size: a plain number of bytes (`"1000000"`) or a number with
/// a unit, optionally separated by spaces: `"16KiB"`, `"64 MiB"`, `"1.5GiB"`,
/// `"10MB"` (MB = 10^6, MiB = 2^20). Units (any case): B, KB, MB, GB, TB, KiB, MiB, GiB, TiB.
pub fn parse_bytes(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let err =
        |why: String| format!("invalid byte size {input:?}: {why}; expected {BYTES_EXPECTED}");
    if s.is_empty() {
        return Err(err("empty".to_owned()));
    }
    if s.starts_with('-') {
        return Err(err("must not be negative".to_owned()));
    }
    let (number, unit) = split_number(s);
    if number.is_empty() {
        return Err(err("expected a number".to_owned()));
    }
    let decimal = Decimal::parse(number).map_err(|why| err(why.to_owned()))?;
    let unit = unit.trim_start();
    let multiplier = if unit.is_empty() {
        1
    } else {
        BYTE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                err(format!(
                    "unknown unit {unit:?} (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ))
            })?
    };
    let (total, exact) = decimal
        .scale(multiplier)
        .ok_or_else(|| err("too large".to_owned()))?;
    if !exact {
        return Err(err("not a whole number of bytes".to_owned()));
    }
    u64::try_from(total).map_err(|_| err(format!("too large (maximum {} bytes)", u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const SECS: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn durations_parse() {
        let ok: &[(&str, Duration)] = &[
            ("250ms", MS(250)),
            ("2s", SECS(2)),
            ("1.5s", MS(1500)),
            ("1m", SECS(60)),
            ("1min", SECS(60)),
            ("1h", SECS(3600)),
            ("1d", SECS(86_400)),
            ("1m30s", SECS(90)),
            ("1h 2m 3s", SECS(3723)),
            ("5", SECS(5)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("0.5", MS(500)),
            (".5s", MS(500)),
            ("5.s", SECS(5)),
            (" 2 s ", SECS(2)),
            ("100ns", Duration::from_nanos(100)),
            ("7us", Duration::from_micros(7)),
            ("7µs", Duration::from_micros(7)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1.0000000019s", Duration::new(1, 1)),
            (
                "0.1234567890123456789012345h",
                Duration::new(444, 444_440_444),
            ),
            ("18446744073709551615s", Duration::new(u64::MAX, 0)),
            ("18446744073709551615.999999999s", Duration::MAX),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input), Ok(*want), "{input:?}");
        }
    }

    #[test]
    fn bad_durations_are_errors() {
        for input in [
            "",
            "   ",
            "-1s",
            "-5",
            "- 5s",
            "s",
            "ms",
            "5x",
            "5 x",
            "2S",
            "1M",
            "1.2.3s",
            ".",
            ".s",
            "abc",
            "1e3s",
            "+5s",
            "1s-",
            "1s 5",
            "5 5s",
            "NaN",
            "inf",
            "1_000s",
            "18446744073709551616s",
            "18446744073709551616",
            "99999999999999999999999999999999999999999999h",
            "213503982334602d",
            "5124095576030432h",
            "18446744073709551615s1s",
        ] {
            let err = parse_duration(input).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid duration {input:?}")),
                "{input:?}: {err}"
            );
        }
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
        assert!(parse_duration("9999999999999999h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn byte_sizes_parse() {
        let ok: &[(&str, u64)] = &[
            ("512MiB", 512 << 20),
            ("64 MiB", 64 << 20),
            ("16KiB", 16 << 10),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("1000000", 1_000_000),
            ("10MB", 10_000_000),
            ("1KB", 1000),
            ("3GB", 3_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("1kb", 1000),
            ("1mib", 1 << 20),
            ("7B", 7),
            ("0", 0),
            ("1.5KiB", 1536),
            ("0.5MiB", 512 << 10),
            ("1.0", 1),
            (" 8 KiB ", 8192),
            ("18446744073709551615", u64::MAX),
            ("16777215TiB", u64::MAX - (1 << 40) + 1),
        ];
        for (input, want) in ok {
            assert_eq!(parse_bytes(input), Ok(*want), "{input:?}");
        }
    }
}
