//! How fast a connection takes the bytes the gateway writes: the estimate `CMSD-Dynamic` carries
//! (`etp`). Pure: the connection's writer reports each write with its time
//! ([`SendRate::wrote`]); a burst of writes with no pause longer than [`GAP`] is one sample of
//! bytes over the burst's duration, and the estimate is an exponentially weighted mean of the
//! samples of bursts of at least [`MIN_BURST`] bytes (smaller ones say more about latency than
//! throughput). What it measures is the rate at which the socket accepted the bytes, which for
//! bodies larger than the socket's buffers is the rate at which the client received them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A pause longer than this ends a burst.
pub const GAP: Duration = Duration::from_millis(20);
/// Bursts smaller than this are not samples.
pub const MIN_BURST: u64 = 32 * 1024;
/// The weight of a new sample.
const ALPHA: f64 = 0.3;

#[derive(Debug, Default)]
struct State {
    /// The burst in progress: its first write, last write, bytes.
    burst: Option<(Instant, Instant, u64)>,
    /// Estimate in bit/s.
    estimate: Option<f64>,
}

/// The estimate of one connection, shared by its writer and its requests.
#[derive(Debug, Default)]
pub struct SendRate(Mutex<State>);

impl SendRate {
    /// `bytes` were accepted by the socket at `now`, in a write that began at `began`.
    pub fn wrote(&self, began: Instant, now: Instant, bytes: u64) {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state.burst {
            Some((start, last, total)) if began.saturating_duration_since(last) <= GAP => {
                state.burst = Some((start, now, total.saturating_add(bytes)));
            }
            previous => {
                if let Some(done) = previous {
                    sample(&mut state, done);
                }
                state.burst = Some((began, now, bytes));
            }
        }
    }

    /// The estimate in kbit/s at `now` (a burst that ended by then counts).
    pub fn kbps(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = state
            .burst
            .filter(|&(_, last, _)| now.saturating_duration_since(last) > GAP)
        {
            state.burst = None;
            sample(&mut state, done);
        }
        state.estimate.map(|bps| (bps / 1000.0).round() as u64)
    }
}

fn sample(state: &mut State, (start, last, bytes): (Instant, Instant, u64)) {
    if bytes < MIN_BURST {
        return;
    }
    let seconds = last
        .saturating_duration_since(start)
        .max(Duration::from_micros(100))
        .as_secs_f64();
    let bps = bytes as f64 * 8.0 / seconds;
    state.estimate = Some(match state.estimate {
        Some(old) => old + ALPHA * (bps - old),
        None => bps,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_sample_small_ones_are_none() {
        let rate = SendRate::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(rate.kbps(t0), None);
        // 1 MB in 100 ms of back-to-back writes: 80 Mbit/s.
        for i in 0..10 {
            rate.wrote(ms(i * 10), ms(i * 10 + 10), 100_000);
        }
        assert_eq!(rate.kbps(ms(100)), None, "the burst is still going");
        assert_eq!(rate.kbps(ms(200)), Some(80_000));
        // A small answer changes nothing.
        rate.wrote(ms(300), ms(300), 500);
        assert_eq!(rate.kbps(ms(400)), Some(80_000));
        // A slower burst moves the estimate by ALPHA: 8 Mbit/s sample.
        rate.wrote(ms(500), ms(600), 100_000);
        assert_eq!(rate.kbps(ms(700)), Some(58_400));
    }
}
