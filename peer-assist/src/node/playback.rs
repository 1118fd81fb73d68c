//! When each segment plays (pure, explicit time).
//!
//! Playback starts `startup` after the node joined, at the segment three target durations behind the
//! live edge (or the first one for VOD), and then advances in real time. A segment not in hand when it
//! should play is a missed deadline: the playhead stalls until it arrives and everything after it
//! shifts by the stall, as in a real player.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One segment of the followed rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub id: String,
    pub duration: Duration,
    pub obtained: Option<Instant>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    slots: BTreeMap<u64, Slot>,
    first: Option<u64>,
    /// The next segment to play.
    next: Option<u64>,
    /// When `next` plays (stalls included).
    next_plays_at: Instant,
    missed: u64,
    stalled: Duration,
}

impl Timeline {
    /// Playback begins at `start` (join time plus the startup allowance).
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            slots: BTreeMap::new(),
            first: None,
            next: None,
            next_plays_at: start,
            missed: 0,
            stalled: Duration::ZERO,
        }
    }

    /// Adds segments from a playlist. The first call fixes where playback starts: `first_to_play`.
    pub fn add(&mut self, sequence: u64, id: &str, duration: Duration, first_to_play: u64) {
        if self.first.is_none() {
            self.first = Some(first_to_play);
            self.next = Some(first_to_play);
        }
        if sequence < self.first.unwrap_or(0) {
            return;
        }
        self.slots.entry(sequence).or_insert_with(|| Slot {
            id: id.to_owned(),
            duration,
            obtained: None,
        });
    }

    /// Records that segment `sequence` is in hand at `now`.
    pub fn obtained(&mut self, sequence: u64, now: Instant) {
        if let Some(slot) = self.slots.get_mut(&sequence) {
            slot.obtained.get_or_insert(now);
        }
    }

    /// Moves the playhead to `now`: a segment starts playing when its start time has come and it is in
    /// hand; one that arrives after its start time is a missed deadline and a stall of that length.
    pub fn advance(&mut self, now: Instant) {
        while let Some(next) = self.next {
            // Not listed yet (too close to the live edge): its stall is counted when it arrives.
            let Some(slot) = self.slots.get(&next) else {
                return;
            };
            match slot.obtained {
                Some(at) if at <= self.next_plays_at => {}
                Some(at) if at <= now => {
                    self.missed += 1;
                    self.stalled += at - self.next_plays_at;
                    self.next_plays_at = at;
                }
                _ => return,
            }
            if self.next_plays_at > now {
                return;
            }
            self.next_plays_at += slot.duration;
            self.next = Some(next + 1);
        }
    }

    /// When `sequence` is expected to play, given what is known now (stalls so far included; a stall
    /// in progress pushes everything after it).
    pub fn plays_at(&self, sequence: u64, now: Instant) -> Option<Instant> {
        let next = self.next?;
        if sequence < next {
            return None;
        }
        let mut at = self.next_plays_at;
        if let Some(slot) = self.slots.get(&next) {
            if slot.obtained.is_none() && now > at {
                at = now;
            }
        }
        for s in next..sequence {
            at += self
                .slots
                .get(&s)
                .map_or(Duration::ZERO, |slot| slot.duration);
        }
        Some(at)
    }

    /// Segments still needed, in play order: not obtained and not yet played.
    pub fn needed(&self) -> impl Iterator<Item = (u64, &Slot)> {
        let next = self.next.unwrap_or(u64::MAX);
        self.slots
            .range(next..)
            .filter(|(_, s)| s.obtained.is_none())
            .map(|(k, s)| (*k, s))
    }

    pub fn slot(&self, sequence: u64) -> Option<&Slot> {
        self.slots.get(&sequence)
    }

    /// Segments that were not in hand when they should have played.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    pub fn stalled(&self) -> Duration {
        self.stalled
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Drops segments played long ago (keeps the map bounded on long runs).
    pub fn forget_before(&mut self, sequence: u64) {
        let keep = self.next.map_or(sequence, |n| n.min(sequence));
        self.slots = self.slots.split_off(&keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: Duration = Duration::from_secs(2);

    fn timeline(t0: Instant) -> Timeline {
        let mut t = Timeline::new(t0);
        for s in 10..15 {
            t.add(s, &format!("/{s}.ts"), TWO, 10);
        }
        t
    }

    #[test]
    fn deadlines_follow_durations_from_the_start() {
        let t0 = Instant::now();
        let t = timeline(t0);
        assert_eq!(t.plays_at(10, t0), Some(t0));
        assert_eq!(t.plays_at(12, t0), Some(t0 + 2 * TWO));
        assert_eq!(t.needed().count(), 5);
    }

    #[test]
    fn segments_in_time_play_without_stalls() {
        let t0 = Instant::now();
        let mut t = timeline(t0);
        for s in 10..15 {
            t.obtained(s, t0);
        }
        let now = t0 + Duration::from_secs(7);
        t.advance(now);
        assert_eq!(t.missed(), 0);
        assert_eq!(t.stalled(), Duration::ZERO);
        assert_eq!(t.plays_at(14, now), Some(t0 + 4 * TWO));
        assert_eq!(t.plays_at(12, now), None, "already played");
    }

    #[test]
    fn a_late_segment_is_a_missed_deadline_and_shifts_the_rest() {
        let t0 = Instant::now();
        let mut t = timeline(t0);
        t.obtained(10, t0);
        t.advance(t0 + Duration::from_secs(1));
        // 11 should play at t0+2 s; at t0+3 s it is still missing: everything after waits.
        let now = t0 + Duration::from_secs(3);
        t.advance(now);
        assert_eq!(t.plays_at(12, now), Some(now + TWO));
        t.obtained(11, now);
        t.advance(now);
        assert_eq!(t.missed(), 1);
        assert_eq!(t.stalled(), Duration::from_secs(1));
        assert_eq!(
            t.plays_at(12, now),
            Some(now + TWO),
            "12 plays one stall later than planned"
        );
    }

    #[test]
    fn early_segments_before_the_start_are_ignored() {
        let t0 = Instant::now();
        let mut t = timeline(t0);
        t.add(5, "/5.ts", TWO, 99);
        assert!(t.slot(5).is_none());
        t.forget_before(12);
        assert!(t.slot(10).is_some(), "not yet played: kept");
    }
}
