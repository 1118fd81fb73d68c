//! The network the simulated viewers live in: per-viewer uplink and downlink rates, round-trip
//! times and loss drawn from ranges (`--uplink 1M..10M --downlink 10M..50M --rtt 20ms..150ms
//! --loss 0..1%`), and a share of viewers behind NATs that accept no inbound connection
//! (`--unreachable 0.2`). Each viewer's draw is deterministic (its arrival number and the run's
//! seed), uniform within each range, and becomes a [`LinkProfile`] applied to all its traffic
//! (`peer_assist::net`).

use std::time::Duration;

use peer_assist::net::link::Dice;
use peer_assist::net::LinkProfile;
use serde::Serialize;

use crate::origin::parse_bitrate;

/// A value, or a range of values drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span<T> {
    pub min: T,
    pub max: T,
}

impl<T: Copy + PartialOrd + std::fmt::Debug> Span<T> {
    fn parse(
        input: &str,
        what: &str,
        one: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Self, String> {
        let (min, max) = match input.split_once("..") {
            Some((a, b)) => (one(a.trim())?, one(b.trim())?),
            None => {
                let v = one(input.trim())?;
                (v, v)
            }
        };
        if max < min {
            return Err(format!(
                "{what} range {input:?}: the upper bound is below the lower one"
            ));
        }
        Ok(Self { min, max })
    }
}

/// Parses a bit rate or a range of them: `10M`, `1M..10M`, `400k..2.5M`.
pub fn parse_rate_span(input: &str) -> Result<Span<u64>, String> {
    let span = Span::parse(input, "rate", parse_bitrate)?;
    if span.min == 0 {
        return Err(format!(
            "rate {input:?}: must be above 0 (leave the option out for an unlimited link)"
        ));
    }
    Ok(span)
}

/// Parses a duration or a range of them: `50ms`, `20ms..150ms`.
pub fn parse_duration_span(input: &str) -> Result<Span<Duration>, String> {
    Span::parse(input, "duration", peer_assist::units::parse_duration)
}

/// Parses a loss rate or a range: `1%`, `0..1%`, `0.5%..2%`, or fractions (`0.01`). A `%` at the
/// end of a range applies to both bounds.
pub fn parse_loss_span(input: &str) -> Result<Span<f64>, String> {
    let trimmed = input.trim();
    let (body, scale) = match trimmed.strip_suffix('%') {
        Some(b) => (b, 0.01),
        None => (trimmed, 1.0),
    };
    let one = |s: &str| -> Result<f64, String> {
        let s = s.trim().trim_end_matches('%');
        let v: f64 = s
            .parse()
            .map_err(|_| format!("invalid loss {input:?}: expected e.g. 1%, 0..1% or 0.01"))?;
        let v = v * scale;
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("loss {input:?}: must be between 0 and 100%"));
        }
        Ok(v)
    };
    Span::parse(body, "loss", one)
}

/// Parses the share of unreachable viewers: `0.2` or `20%`.
pub fn parse_share(input: &str) -> Result<f64, String> {
    let t = input.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("invalid share {input:?}: expected e.g. 0.2 or 20%"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("share {input:?}: must be between 0 and 1"));
    }
    Ok(v)
}

/// The network of a run. `Network::default()` is the ideal one (loopback as it is).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Network {
    /// Bits per second.
    pub uplink: Option<Span<u64>>,
    pub downlink: Option<Span<u64>>,
    #[serde(serialize_with = "serialize_ms_span")]
    pub rtt: Option<Span<Duration>>,
    pub loss: Option<Span<f64>>,
    /// Share of viewers that accept no inbound connection.
    pub unreachable: f64,
    /// Each P2P viewer's node declares its uplink in `join` (an oracle: real viewers do not know
    /// theirs; nodes measure it while uploading either way).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub declare_uplink: bool,
}

fn serialize_ms_span<S: serde::Serializer>(
    span: &Option<Span<Duration>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    span.map(|r| Span {
        min: r.min.as_secs_f64() * 1000.0,
        max: r.max.as_secs_f64() * 1000.0,
    })
    .serialize(s)
}

/// A number in [0, 1), keyed by the run's seed, the viewer and the quantity drawn.
fn unit(seed: u64, viewer: usize, what: u64) -> f64 {
    Dice::new(
        seed ^ (viewer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ what.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
    .unit()
}

impl Network {
    /// Whether every viewer gets an ideal link.
    pub fn is_ideal(&self) -> bool {
        self.uplink.is_none()
            && self.downlink.is_none()
            && self.rtt.is_none()
            && self.loss.is_none()
            && self.unreachable <= 0.0
    }

    /// The link of viewer number `viewer`.
    pub fn draw(&self, seed: u64, viewer: usize) -> LinkProfile {
        let between = |lo: f64, hi: f64, what| lo + (hi - lo) * unit(seed, viewer, what);
        let rate = |span: &Option<Span<u64>>, what| {
            span.map(|s| between(s.min as f64, s.max as f64, what).round() as u64)
        };
        LinkProfile {
            uplink_bps: rate(&self.uplink, 1),
            downlink_bps: rate(&self.downlink, 2),
            rtt: self.rtt.map_or(Duration::ZERO, |s| {
                Duration::from_secs_f64(between(s.min.as_secs_f64(), s.max.as_secs_f64(), 3))
            }),
            loss: self.loss.map_or(0.0, |s| between(s.min, s.max, 4)),
            unreachable: unit(seed, viewer, 5) < self.unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_units_and_refuse_nonsense() {
        assert_eq!(
            parse_rate_span("1M..10M"),
            Ok(Span {
                min: 1_000_000,
                max: 10_000_000
            })
        );
        assert_eq!(
            parse_rate_span("400k"),
            Ok(Span {
                min: 400_000,
                max: 400_000
            })
        );
        assert!(parse_rate_span("10M..1M").is_err());
        assert!(parse_rate_span("0..1M").is_err());
        assert!(parse_rate_span("fast").is_err());
        assert_eq!(
            parse_duration_span("20ms..150ms"),
            Ok(Span {
                min: Duration::from_millis(20),
                max: Duration::from_millis(150)
            })
        );
        assert_eq!(
            parse_loss_span("0..1%"),
            Ok(Span {
                min: 0.0,
                max: 0.01
            })
        );
        assert_eq!(
            parse_loss_span("0.5%..2%"),
            Ok(Span {
                min: 0.005,
                max: 0.02
            })
        );
        assert_eq!(
            parse_loss_span("0.01"),
            Ok(Span {
                min: 0.01,
                max: 0.01
            })
        );
        assert!(parse_loss_span("150%").is_err());
        assert!(parse_loss_span("-1%").is_err());
        assert_eq!(parse_share("0.2"), Ok(0.2));
        assert_eq!(parse_share("20%"), Ok(0.2));
        assert!(parse_share("1.5").is_err());
    }

    #[test]
    fn draws_are_deterministic_within_their_ranges_and_unreachable_at_the_share() {
        let net = Network {
            uplink: Some(Span {
                min: 1_000_000,
                max: 10_000_000,
            }),
            downlink: None,
            rtt: parse_duration_span("20ms..150ms").ok(),
            loss: parse_loss_span("0..1%").ok(),
            unreachable: 0.2,
            declare_uplink: false,
        };
        let links: Vec<LinkProfile> = (0..1000).map(|v| net.draw(42, v)).collect();
        assert_eq!(
            links[7],
            net.draw(42, 7),
            "same seed, same viewer, same link"
        );
        assert_ne!(links[7], net.draw(43, 7), "another seed, another draw");
        for l in &links {
            let up = l.uplink_bps.unwrap();
            assert!((1_000_000..=10_000_000).contains(&up));
            assert_eq!(l.downlink_bps, None);
            assert!(l.rtt >= Duration::from_millis(20) && l.rtt <= Duration::from_millis(150));
            assert!((0.0..=0.01).contains(&l.loss));
        }
        let unreachable = links.iter().filter(|l| l.unreachable).count();
        assert!(
            (150..250).contains(&unreachable),
            "{unreachable} of 1000 at 0.2"
        );
        let mean_up = links.iter().map(|l| l.uplink_bps.unwrap()).sum::<u64>() / 1000;
        assert!(
            (5_000_000..6_000_000).contains(&mean_up),
            "uniform: mean {mean_up}"
        );
        assert!(Network::default().is_ideal());
        assert!(Network::default().draw(1, 1).is_ideal());
    }
}
