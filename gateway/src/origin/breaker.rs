//! A circuit breaker per origin (pure, explicit time).
//!
//! Closed: requests flow. It opens, and requests skip this origin for `open_for`, only when the
//! origin as a whole looks broken:
//! - `threshold` consecutive attempts could not reach it at all (connect refused or timed out), or
//! - within the last [`WINDOW`], at least `threshold` attempts failed after reaching it (a 5xx, a
//!   timeout or reset after connecting), for at least [`MIN_FAILING_PATHS`] distinct paths, and they
//!   were at least half of the attempts that reached it.
//!
//! So clients cannot open it: a 4xx, the 5xx of one path however often it is asked for (cache-busting
//! queries do not make it another path), or a limit the gateway imposes (a body over the limit, the
//! memory budget) is never an origin outage. After `open_for`, one trial request is let through
//! (half-open): an answer closes the circuit, a failure opens it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back failures of distinct paths are counted together.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Distinct failing paths needed before failures after connecting open the circuit.
pub const MIN_FAILING_PATHS: usize = 3;
/// Attempts remembered in the window, whatever the request rate (bounded memory).
const WINDOW_MAX: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// What one attempt said about the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The origin answered (2xx, 3xx, 4xx, or a body the gateway refused for its own limits).
    Answered,
    /// The request reached the origin, which failed it: a 5xx, a timeout, a reset or a truncated
    /// body. About this path until several paths say the same.
    PathFailed,
    /// The origin could not be reached at all: connection refused or connect timeout.
    Unreachable,
    /// Says nothing about the origin (the gateway gave up for reasons of its own).
    Neutral,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    path: u64,
    failed: bool,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    unreachable: u32,
    window: VecDeque<Seen>,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            unreachable: 0,
            window: VecDeque::new(),
            opened_at: None,
            trial_in_flight: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if now.saturating_duration_since(at) < self.open_for => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may go to this origin now. In half-open state only one trial is allowed.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                if self.trial_in_flight {
                    false
                } else {
                    self.trial_in_flight = true;
                    true
                }
            }
        }
    }

    /// Records the outcome of an attempt for `path` (a hash of the request path, query excluded).
    pub fn record(&mut self, now: Instant, path: u64, outcome: Outcome) {
        self.trial_in_flight = false;
        match outcome {
            Outcome::Neutral => {}
            Outcome::Answered => {
                self.unreachable = 0;
                self.opened_at = None;
                self.remember(now, path, false);
            }
            Outcome::Unreachable => {
                self.unreachable = self.unreachable.saturating_add(1);
                if self.opened_at.is_some() || self.unreachable >= self.threshold {
                    self.open(now);
                }
            }
            Outcome::PathFailed => {
                // The attempt reached the origin: it is reachable.
                self.unreachable = 0;
                self.remember(now, path, true);
                if self.opened_at.is_some() || self.widespread() {
                    self.open(now);
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.opened_at = Some(now);
        self.window.clear();
    }

    fn remember(&mut self, now: Instant, path: u64, failed: bool) {
        while self
            .window
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) >= WINDOW)
        {
            self.window.pop_front();
        }
        if self.window.len() >= WINDOW_MAX {
            self.window.pop_front();
        }
        self.window.push_back(Seen {
            at: now,
            path,
            failed,
        });
    }

    /// Failures of several paths, and at least half of what reached the origin, in the window.
    fn widespread(&self) -> bool {
        let mut failing: Vec<u64> = Vec::new();
        let mut failures = 0usize;
        for seen in self.window.iter().filter(|s| s.failed) {
            failures += 1;
            if !failing.contains(&seen.path) && failing.len() < MIN_FAILING_PATHS {
                failing.push(seen.path);
            }
        }
        let needed_paths = MIN_FAILING_PATHS.min(self.threshold as usize);
        failures >= self.threshold as usize
            && failing.len() >= needed_paths
            && failures.saturating_mul(2) >= self.window.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 1;
    const B: u64 = 2;
    const C: u64 = 3;

    #[test]
    fn opens_after_unreachable_threshold_and_recovers_through_one_trial() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            assert!(b.try_acquire(t0));
            b.record(t0, A, Outcome::Unreachable);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.record(t0, A, Outcome::Unreachable);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.try_acquire(t0 + Duration::from_secs(9)));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.try_acquire(t1));
        assert!(!b.try_acquire(t1), "only one trial at a time");
        b.record(t1, A, Outcome::Unreachable);
        assert_eq!(b.state(t1 + Duration::from_secs(1)), BreakerState::Open);
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.try_acquire(t2));
        b.record(t2, A, Outcome::Answered);
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert!(b.try_acquire(t2));
    }

    #[test]
    fn an_answer_resets_the_unreachable_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.record(t0, A, Outcome::Unreachable);
        b.record(t0, A, Outcome::Answered);
        b.record(t0, A, Outcome::Unreachable);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn one_failing_path_never_opens_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(10));
        for i in 0..1000 {
            let now = t0 + Duration::from_millis(i);
            b.record(now, A, Outcome::PathFailed);
            assert_eq!(b.state(now), BreakerState::Closed, "after {i}");
        }
    }

    #[test]
    fn answers_and_neutral_outcomes_never_open_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, Duration::from_secs(10));
        for i in 0..100 {
            b.record(t0, i, Outcome::Answered);
            b.record(t0, i, Outcome::Neutral);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn widespread_failures_open_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(5, Duration::from_secs(10));
        for (i, path) in [A, B, C, A].into_iter().enumerate() {
            b.record(t0, path, Outcome::PathFailed);
            assert_eq!(b.state(t0), BreakerState::Closed, "after {}", i + 1);
        }
        b.record(t0, B, Outcome::PathFailed);
        assert_eq!(b.state(t0), BreakerState::Open, "5 failures of 3 paths");
    }

    #[test]
    fn failures_among_many_answers_do_not_open_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(5, Duration::from_secs(10));
        for i in 0..20 {
            b.record(t0, 100 + i, Outcome::Answered);
        }
        for path in [A, B, C, A, B, C] {
            b.record(t0, path, Outcome::PathFailed);
        }
        assert_eq!(b.state(t0), BreakerState::Closed, "6 failures of 26");
    }

    #[test]
    fn old_failures_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(4, Duration::from_secs(10));
        for path in [A, B, C] {
            b.record(t0, path, Outcome::PathFailed);
        }
        let later = t0 + WINDOW;
        b.record(later, A, Outcome::PathFailed);
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn a_failed_trial_opens_it_again() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for path in [A, B, C] {
            b.record(t0, path, Outcome::PathFailed);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.try_acquire(t1));
        b.record(t1, A, Outcome::PathFailed);
        assert_eq!(b.state(t1), BreakerState::Open);
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.try_acquire(t2));
        b.record(t2, A, Outcome::Neutral);
        assert!(b.try_acquire(t2), "a neutral trial frees the trial slot");
    }
}
