//! How fast a connection takes the bytes the gateway writes: the estimate `CMSD-Dynamic` carries
//! (`etp`). Pure: the connection's writer reports each write that the socket accepted, with when
//! that write first found the socket full, if it did ([`SendRate::wrote`]).
//!
//! While the socket's send buffer is full, every byte it accepts is a byte that left for the
//! client: bytes accepted from the moment the socket was first found full, over the time since
//! then, is the rate at which the client takes them. Writes the socket accepts at once say only
//! that the client keeps up with the gateway (and fill the send buffer at memory speed): they
//! give no sample, so a fast client, or a body smaller than the socket's buffers, leaves the
//! estimate where it was (none at first: none is invented). A burst is a run of writes with no
//! pause longer than [`GAP`]; a burst that carried at least [`MIN_SAMPLE`] bytes after the socket
//! was full is one sample, and the estimate is an exponentially weighted mean of the samples.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A pause longer than this between writes ends a burst.
pub const GAP: Duration = Duration::from_millis(20);
/// Bursts that carried fewer bytes after the socket was full are not samples.
pub const MIN_SAMPLE: u64 = 32 * 1024;
/// The shortest time a sample is taken to have lasted.
const MIN_TIME: Duration = Duration::from_micros(100);
/// The weight of a new sample.
const ALPHA: f64 = 0.3;

#[derive(Debug, Clone, Copy)]
struct Burst {
    /// When the last write of the burst was accepted.
    last: Instant,
    /// When a write of the burst first found the socket full.
    full_since: Option<Instant>,
    /// Bytes accepted since then.
    bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    burst: Option<Burst>,
    /// Estimate in bit/s.
    estimate: Option<f64>,
}

/// The estimate of one connection, shared by its writer and its requests.
#[derive(Debug, Default)]
pub struct SendRate(Mutex<State>);

impl SendRate {
    /// The socket accepted `bytes` at `now`, in a write that first found it full at `full_since`
    /// (`None`: accepted at once).
    pub fn wrote(&self, now: Instant, bytes: u64, full_since: Option<Instant>) {
        let began = full_since.unwrap_or(now);
        let mut state = self.lock();
        let burst = match state.burst {
            Some(burst) if began.saturating_duration_since(burst.last) <= GAP => burst,
            previous => {
                if let Some(done) = previous {
                    sample(&mut state, done);
                }
                Burst {
                    last: now,
                    full_since: None,
                    bytes: 0,
                }
            }
        };
        let full_since = burst.full_since.or(full_since);
        state.burst = Some(Burst {
            last: now,
            full_since,
            bytes: if full_since.is_some() {
                burst.bytes.saturating_add(bytes)
            } else {
                0
            },
        });
    }

    /// The estimate in kbit/s at `now` (a burst that ended by then counts).
    pub fn kbps(&self, now: Instant) -> Option<u64> {
        let mut state = self.lock();
        if let Some(done) = state
            .burst
            .filter(|burst| now.saturating_duration_since(burst.last) > GAP)
        {
            state.burst = None;
            sample(&mut state, done);
        }
        // An f64 → u64 cast saturates; the estimate is finite and positive.
        state.estimate.map(|bps| (bps / 1000.0).round() as u64)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn sample(state: &mut State, burst: Burst) {
    let Some(full_since) = burst.full_since else {
        return;
    };
    if burst.bytes < MIN_SAMPLE {
        return;
    }
    let seconds = burst
        .last
        .saturating_duration_since(full_since)
        .max(MIN_TIME)
        .as_secs_f64();
    let bps = burst.bytes as f64 * 8.0 / seconds;
    state.estimate = Some(match state.estimate {
        Some(old) => old + ALPHA * (bps - old),
        None => bps,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_the_full_socket_took_over_the_time_are_a_sample() {
        let rate = SendRate::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(rate.kbps(t0), None);
        // The first 200 kB go at once (the send buffer), then the socket is full: 1 MB more, each
        // 100 kB write waiting 10 ms for room, 100 ms in all: 80 Mbit/s.
        rate.wrote(ms(0), 100_000, None);
        rate.wrote(ms(0), 100_000, None);
        for i in 0..10 {
            rate.wrote(ms(i * 10 + 10), 100_000, Some(ms(i * 10)));
        }
        assert_eq!(rate.kbps(ms(100)), None, "the burst is still going");
        assert_eq!(rate.kbps(ms(200)), Some(80_000));
        // A small answer, and a large one the socket took at once, change nothing.
        rate.wrote(ms(300), 500, None);
        rate.wrote(ms(400), 4_000_000, None);
        assert_eq!(rate.kbps(ms(500)), Some(80_000));
        // A slower burst moves the estimate by ALPHA: 100 kB in 100 ms is 8 Mbit/s.
        rate.wrote(ms(700), 100_000, Some(ms(600)));
        assert_eq!(rate.kbps(ms(800)), Some(58_400));
        // A burst with too few bytes after the socket filled up is no sample.
        rate.wrote(ms(900), 1000, Some(ms(850)));
        assert_eq!(rate.kbps(ms(1000)), Some(58_400));
    }

    #[test]
    fn a_pause_ends_a_burst_and_the_next_one_starts_afresh() {
        let rate = SendRate::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // 64 kB in 8 ms with the socket full: 64 Mbit/s.
        rate.wrote(ms(8), 64_000, Some(ms(0)));
        // 30 ms later (a new answer) the socket takes a little at once: a new burst, which does
        // not count the pause as sending time.
        rate.wrote(ms(38), 1000, None);
        assert_eq!(rate.kbps(ms(39)), Some(64_000));
        // Writes that keep coming within the gap are one burst even across answers.
        rate.wrote(ms(48), 40_000, Some(ms(40)));
        rate.wrote(ms(58), 40_000, Some(ms(50)));
        // 80 kB from 40 ms to 58 ms: 35.6 Mbit/s; EWMA: 64 + 0.3 × (35.6 − 64) = 55.5.
        assert_eq!(rate.kbps(ms(100)), Some(55_467));
    }

    #[test]
    fn instants_out_of_order_and_huge_counts_never_panic() {
        let rate = SendRate::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        rate.wrote(later, u64::MAX, Some(later));
        rate.wrote(t0, u64::MAX, Some(later));
        rate.wrote(t0, 1, None);
        assert!(rate.kbps(t0 + Duration::from_secs(2)).is_some());
        assert!(rate.kbps(t0).is_some());
    }
}
