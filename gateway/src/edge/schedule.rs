//! When a followed live rendition's next segment will appear at the origin, learned from what the
//! follower sees, so the follower reloads just after it is due instead of at the client rule (a
//! target duration after a change): the gateway then adds next to nothing to the time a new segment
//! becomes visible. Pure: every instant is passed in; the follower task drives it.
//!
//! The model: segment n+1 appears at the origin about its duration after segment n (a live encoder
//! writes in real time), and the durations are the playlist's `EXTINF`s. A reload that first shows a
//! segment bounds when it appeared: after the start of the last reload that did not show it, no later
//! than the answer that did. Carried forward by the durations in between, the bounds of earlier
//! segments narrow the interval further; an observation that contradicts them (jitter, drift, a
//! stalled encoder) replaces them. At first sight the newest segment appeared less than one duration
//! ago (or the next would be there too), or when its `EXT-X-PROGRAM-DATE-TIME` says so, if that is
//! consistent with the local clock.
//!
//! The follower reloads at the late end of the predicted interval plus [`MARGIN`]. While the interval
//! is wider than [`PRECISE`] it first probes its middle once (bisection: a few segments narrow it to
//! tens of milliseconds), so a segment costs one origin request, two while the model learns. A reload
//! that finds nothing new after the segment was due makes the schedule late: up to [`LATE_RETRIES`]
//! retries follow at a short step, then the client rule (half a target duration) until a new segment
//! shows.

use std::time::{Duration, Instant, SystemTime};

pub use crate::hls::Timeline;

/// Added to the predicted late end of a publication, for jitter.
pub const MARGIN: Duration = Duration::from_millis(20);
/// An interval narrower than this is not probed.
pub const PRECISE: Duration = Duration::from_millis(100);
/// Retries, at [`late_step`], after a reload that found nothing new when it was due.
pub const LATE_RETRIES: u32 = 3;
/// Reloads are never closer together than this.
pub const MIN_GAP: Duration = Duration::from_millis(50);

/// One reload of the playlist by the follower.
#[derive(Debug, Clone, Copy)]
pub struct Reload {
    /// When the request was sent (by the follower; `None` when it joined a fetch someone else had
    /// started, whose start it does not know).
    pub sent: Option<Instant>,
    /// When the answer was at hand.
    pub done: Instant,
    /// The wall clock at `done`, to relate `EXT-X-PROGRAM-DATE-TIME` to `done`.
    pub wall: SystemTime,
}

/// The late step: retries after a missed due time are this far apart.
pub fn late_step(target: Duration) -> Duration {
    (target / 8).clamp(MIN_GAP, Duration::from_millis(250))
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Schedule {
    target: Duration,
    /// The newest segment seen.
    newest: Option<u64>,
    /// When the newest segment appeared: after `.0`, no later than `.1`.
    appeared: Option<(Instant, Instant)>,
    /// The newest segment's duration: the estimate of the next one's.
    next_duration: Duration,
    /// Start of the last reload that did not show a segment newer than `newest`.
    last_miss: Option<Instant>,
    /// Reloads since the newest appeared that missed the next before its late end (probes).
    probes: u32,
    /// Reloads since the next was due that found nothing new.
    late: u32,
}

impl Schedule {
    pub fn new(target: Duration) -> Self {
        Self {
            target,
            newest: None,
            appeared: None,
            next_duration: target,
            last_miss: None,
            probes: 0,
            late: 0,
        }
    }

    /// The newest segment seen.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// The interval in which the next segment is expected to appear, once the model has one.
    pub fn due(&self) -> Option<(Instant, Instant)> {
        let (lo, hi) = self.appeared?;
        let lo = lo + self.next_duration;
        let hi = hi + self.next_duration;
        // What reloads since have not shown it narrows the early end.
        let lo = self.last_miss.map_or(lo, |m| lo.max(m)).min(hi);
        Some((lo, hi))
    }

    /// Learns from a reload that returned a live media playlist of `target` duration ending in
    /// `timeline`.
    pub fn observe(&mut self, reload: Reload, target: Duration, timeline: &Timeline) {
        self.target = target;
        let Some((newest, duration)) = timeline.newest else {
            return;
        };
        match self.newest {
            Some(known) if newest == known => {
                if let (Some(sent), Some((_, hi))) = (reload.sent, self.due()) {
                    if sent >= hi {
                        self.late = self.late.saturating_add(1);
                    } else {
                        self.probes = self.probes.saturating_add(1);
                    }
                }
                if let Some(sent) = reload.sent {
                    self.last_miss = Some(self.last_miss.map_or(sent, |m| m.max(sent)));
                }
            }
            Some(known) if newest > known => {
                let early = self
                    .last_miss
                    .unwrap_or_else(|| sub(reload.done, self.next_duration));
                let observed = (early, reload.done);
                // The next one after the newest: it appeared one (its) duration later.
                let carried = self
                    .appeared
                    .filter(|_| newest == known + 1)
                    .map(|(lo, hi)| (lo + duration, hi + duration));
                self.appeared = Some(match carried {
                    Some((lo, hi)) if lo.max(observed.0) < hi.min(observed.1) => {
                        (lo.max(observed.0), hi.min(observed.1))
                    }
                    _ => observed,
                });
                self.settle(newest, duration, reload);
            }
            // First sight, or the sequence went back (an encoder restarted): learn afresh.
            _ => {
                let mut early = sub(reload.done, duration);
                if let Some(end) = timeline.newest_end {
                    // The date says when the segment was complete; believed only when consistent.
                    if let Ok(ago) = reload.wall.duration_since(end) {
                        let at = sub(reload.done, ago);
                        if at > early {
                            early = at;
                        }
                    }
                }
                self.appeared = Some((early.min(reload.done), reload.done));
                self.settle(newest, duration, reload);
            }
        }
    }

    fn settle(&mut self, newest: u64, duration: Duration, reload: Reload) {
        self.newest = Some(newest);
        self.next_duration = if duration.is_zero() {
            self.target
        } else {
            duration
        };
        // The answer that showed this segment did not show the next.
        self.last_miss = reload.sent;
        self.probes = 0;
        self.late = 0;
    }

    /// When to reload next, at `now` (never sooner than [`MIN_GAP`]).
    pub fn next_reload(&self, now: Instant) -> Instant {
        let client_rule = now + self.target / 2;
        let at = match self.due() {
            None => client_rule,
            Some(_) if self.late > LATE_RETRIES => client_rule,
            Some(_) if self.late > 0 => now + late_step(self.target),
            Some((lo, hi)) if self.probes == 0 && hi.saturating_duration_since(lo) > PRECISE => {
                lo + (hi - lo) / 2
            }
            Some((_, hi)) => hi + MARGIN,
        };
        at.max(now + MIN_GAP)
    }
}

/// `at - by`, or `at` when the monotonic clock does not reach back that far.
fn sub(at: Instant, by: Duration) -> Instant {
    at.checked_sub(by).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: Duration = Duration::from_secs(2);

    fn timeline(newest: u64) -> Timeline {
        Timeline {
            newest: Some((newest, SEG)),
            newest_end: None,
        }
    }

    /// An origin that publishes segment n at `start + n * SEG + jitter(n)`, answering in `rtt`.
    struct Origin {
        start: Instant,
        rtt: Duration,
        jitter: fn(u64) -> Duration,
    }

    impl Origin {
        fn newest_at(&self, at: Instant) -> u64 {
            let mut n = 0;
            while self.start + SEG * (n as u32 + 1) + (self.jitter)(n + 1) <= at {
                n += 1;
            }
            n
        }
        fn published(&self, n: u64) -> Instant {
            self.start + SEG * n as u32 + (self.jitter)(n)
        }
    }

    /// Follows `origin` for `segments` segments from `first`; returns the delay of each new segment
    /// (answer time minus publication) after the first few, and the reloads made.
    fn follow(origin: &Origin, first: Instant, segments: u64) -> (Vec<Duration>, usize) {
        let mut schedule = Schedule::new(SEG);
        let mut now = first;
        let mut reloads = 0;
        let mut seen = None;
        let mut delays = Vec::new();
        let end = origin.start + SEG * (segments as u32 + 1);
        while now < end {
            let sent = now;
            // The origin answers with what it has halfway through the round trip.
            let newest = origin.newest_at(sent + origin.rtt / 2);
            let done = sent + origin.rtt;
            reloads += 1;
            if seen.is_some_and(|s| newest > s) {
                delays.push(done - origin.published(newest));
            }
            seen = Some(newest);
            let reload = Reload {
                sent: Some(sent),
                done,
                wall: SystemTime::UNIX_EPOCH,
            };
            schedule.observe(reload, SEG, &timeline(newest));
            now = schedule.next_reload(done);
        }
        (delays, reloads)
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    #[test]
    fn a_regular_origin_is_followed_within_tens_of_milliseconds() {
        let t0 = Instant::now();
        let origin = Origin {
            start: t0,
            rtt: Duration::from_millis(10),
            jitter: |_| Duration::ZERO,
        };
        // Joined at an arbitrary phase.
        let (delays, reloads) = follow(&origin, t0 + Duration::from_millis(1300), 60);
        assert_eq!(delays.len(), 60, "every segment seen: {delays:?}");
        let settled = delays[8..].to_vec();
        assert!(
            settled.iter().all(|d| *d <= Duration::from_millis(120)),
            "{settled:?}"
        );
        assert!(median(settled) <= Duration::from_millis(80));
        // The client rule costs 1.5 to 2 reloads per segment and adds a second on average.
        assert!(
            reloads <= 60 + 12,
            "{reloads} reloads for 60 segments: one each once learnt"
        );
    }

    #[test]
    fn a_jittery_origin_costs_at_most_two_reloads_per_segment() {
        let t0 = Instant::now();
        let origin = Origin {
            start: t0,
            rtt: Duration::from_millis(30),
            // Up to 180 ms late, in a pattern that does not repeat soon.
            jitter: |n| Duration::from_millis((n * 7919 % 13) * 15),
        };
        let (delays, reloads) = follow(&origin, t0 + Duration::from_millis(700), 90);
        let settled = delays[8..].to_vec();
        assert!(
            median(settled.clone()) <= Duration::from_millis(250),
            "{settled:?}"
        );
        assert!(
            settled.iter().all(|d| *d <= Duration::from_millis(500)),
            "{settled:?}"
        );
        assert!(reloads <= 2 * 90, "{reloads} reloads for 90 segments");
    }

    #[test]
    fn a_stalled_origin_falls_back_to_the_client_rule_then_relearns() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(SEG);
        let mut now = t0;
        for n in 1..=6u64 {
            now = t0 + SEG * n as u32;
            let reload = Reload {
                sent: Some(now),
                done: now + Duration::from_millis(5),
                wall: SystemTime::UNIX_EPOCH,
            };
            schedule.observe(reload, SEG, &timeline(n));
        }
        // The encoder stops: misses pile up past the due time.
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let next = schedule.next_reload(now);
            gaps.push(next - now);
            now = next;
            let reload = Reload {
                sent: Some(now),
                done: now + Duration::from_millis(5),
                wall: SystemTime::UNIX_EPOCH,
            };
            schedule.observe(reload, SEG, &timeline(6));
        }
        assert!(
            gaps.iter().all(|g| *g >= MIN_GAP),
            "never hammers: {gaps:?}"
        );
        assert_eq!(
            *gaps.last().unwrap(),
            SEG / 2,
            "the client rule once late: {gaps:?}"
        );
        // It restarts from sequence 0: learnt afresh, on time again.
        let reload = Reload {
            sent: Some(now),
            done: now + Duration::from_millis(5),
            wall: SystemTime::UNIX_EPOCH,
        };
        schedule.observe(reload, SEG, &timeline(0));
        let next = schedule.next_reload(now + Duration::from_millis(5));
        assert!(next > now + SEG / 2 && next <= now + SEG + MARGIN + Duration::from_millis(5));
    }

    #[test]
    fn a_consistent_program_date_time_narrows_the_first_guess() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut with_date = timeline(10);
        // Complete 300 ms before the answer: the next is due about 1.7 s after it.
        with_date.newest_end = Some(wall - Duration::from_millis(300));
        let reload = Reload {
            sent: Some(t0),
            done: t0 + Duration::from_millis(10),
            wall,
        };
        let mut dated = Schedule::new(SEG);
        dated.observe(reload, SEG, &with_date);
        let (lo, hi) = dated.due().unwrap();
        assert_eq!(hi, t0 + Duration::from_millis(10) + SEG);
        assert_eq!(
            lo,
            t0 + Duration::from_millis(10) + SEG - Duration::from_millis(300)
        );
        // A date in the future (a fast encoder clock) is not believed.
        with_date.newest_end = Some(wall + Duration::from_millis(300));
        let mut undated = Schedule::new(SEG);
        undated.observe(reload, SEG, &with_date);
        assert_eq!(undated.due().unwrap().0, t0 + Duration::from_millis(10));
    }

    #[test]
    fn without_a_model_it_reloads_at_the_client_rule() {
        let t0 = Instant::now();
        let schedule = Schedule::new(Duration::from_secs(6));
        assert_eq!(schedule.next_reload(t0), t0 + Duration::from_secs(3));
    }
}
