//! The live follower's state, without I/O or async: which renditions are followed, when a viewer last
//! asked for each, what was already prefetched, and the decisions the follower task takes from that
//! (when a rendition is idle, how long to wait between reloads, which new objects to prefetch).
//! Time is passed in: callers read the gateway [`Clock`](crate::clock::Clock), tests give explicit
//! instants.
//!
//! [`Edge`](super::Edge) holds a [`FollowedRenditions`] and consults it whenever it stores a live
//! playlist; the task in [`follower`](super::follower) drives it. This module knows neither, so
//! neither imports the other through it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use crate::cache::key::CacheKey;
use crate::config::FollowerConfig;
use crate::hls::{ObjectClass, PlaylistInfo, Reference};

/// Segments prefetched the first time a rendition is seen (where live players start), and at most
/// after any reload: a window that jumps by thousands of segments prefetches only its newest few.
pub const MAX_PREFETCH: usize = 3;

#[derive(Debug)]
struct Followed {
    /// When a viewer last asked for the playlist, by the gateway clock.
    last_request: Instant,
    /// Highest media sequence number already prefetched.
    last_prefetched: Option<u64>,
}

/// What a viewer's request for a live playlist did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The follower is turned off.
    Disabled,
    /// The rendition was followed already; its last request moved to now.
    Renewed,
    /// The rendition is followed from now on: the caller starts its task.
    Started,
    /// Not followed: as many renditions as allowed are followed already.
    AtLimit,
}

/// See the module docs.
#[derive(Debug)]
pub struct FollowedRenditions {
    config: FollowerConfig,
    renditions: Mutex<HashMap<CacheKey, Followed>>,
    /// Set to the number of followed renditions whenever it changes (under the lock, so it is exact).
    gauge: IntGauge,
}

impl FollowedRenditions {
    pub fn new(config: FollowerConfig, gauge: IntGauge) -> Self {
        Self {
            config,
            renditions: Mutex::new(HashMap::new()),
            gauge,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Followed>> {
        self.renditions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that a viewer asked for the live playlist `key` at `now`.
    pub fn touch(&self, key: &CacheKey, now: Instant) -> Touch {
        if !self.config.enabled {
            return Touch::Disabled;
        }
        let mut renditions = self.lock();
        if let Some(followed) = renditions.get_mut(key) {
            followed.last_request = now;
            return Touch::Renewed;
        }
        if renditions.len() >= self.config.max_renditions {
            return Touch::AtLimit;
        }
        renditions.insert(
            key.clone(),
            Followed {
                last_request: now,
                last_prefetched: None,
            },
        );
        self.gauge.set(renditions.len() as i64);
        Touch::Started
    }

    /// Whether `key` is being followed.
    pub fn is_following(&self, key: &CacheKey) -> bool {
        self.lock().contains_key(key)
    }

    /// Whether the follower should let go of `key` at `now`, given the playlist's target duration:
    /// no viewer asked for it for long enough (see [`is_idle`]), or it is not followed.
    pub fn is_idle(&self, key: &CacheKey, now: Instant, target: Duration) -> bool {
        self.lock()
            .get(key)
            .is_none_or(|f| is_idle(f.last_request, now, self.config.idle_after, target))
    }

    /// Stops following `key`.
    pub fn stop(&self, key: &CacheKey) {
        let mut renditions = self.lock();
        renditions.remove(key);
        self.gauge.set(renditions.len() as i64);
    }

    /// The media objects of a newly stored live playlist that should be prefetched: everything newer
    /// than what was prefetched before, or the last few segments (and their init section) the first
    /// time. Empty for renditions not followed.
    pub fn new_references(&self, key: &CacheKey, info: &PlaylistInfo) -> Vec<Reference> {
        let mut renditions = self.lock();
        let Some(followed) = renditions.get_mut(key) else {
            return Vec::new();
        };
        let picked = select_new(info, followed.last_prefetched);
        if let Some(last) = info.last_sequence() {
            followed.last_prefetched = Some(followed.last_prefetched.map_or(last, |p| p.max(last)));
        }
        picked
    }
}

/// How long a rendition may go without a viewer's request before it is dropped.
pub fn idle_limit(idle_after: Duration, target: Duration) -> Duration {
    idle_after.max(target.saturating_mul(3))
}

/// Whether a rendition last requested at `last_request` is idle at `now`: nobody asked for it during
/// `idle_after` and at least three target durations (players reload a watched playlist every target
/// duration).
pub fn is_idle(
    last_request: Instant,
    now: Instant,
    idle_after: Duration,
    target: Duration,
) -> bool {
    now.saturating_duration_since(last_request) >= idle_limit(idle_after, target)
}

/// RFC 8216 §6.3.4: after a change wait a target duration, after no change half of one.
pub fn reload_interval(target: Duration, changed: bool) -> Duration {
    if changed {
        target
    } else {
        target / 2
    }
}

fn select_new(info: &PlaylistInfo, last_prefetched: Option<u64>) -> Vec<Reference> {
    let segments: Vec<&Reference> = info
        .references
        .iter()
        .filter(|r| r.sequence.is_some())
        .collect();
    let fresh: Vec<&Reference> = match last_prefetched {
        Some(last) => segments
            .into_iter()
            .filter(|r| r.sequence.is_some_and(|s| s > last))
            .collect(),
        None => segments,
    };
    let skip = fresh.len().saturating_sub(MAX_PREFETCH);
    let fresh = &fresh[skip..];
    let mut picked: Vec<Reference> = info
        .references
        .iter()
        .filter(|r| r.class == ObjectClass::Init && last_prefetched.is_none())
        .cloned()
        .collect();
    picked.extend(fresh.iter().map(|r| (*r).clone()));
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(first: u64, count: u64) -> PlaylistInfo {
        let mut references = vec![Reference {
            path: "/l/init.mp4".into(),
            class: ObjectClass::Init,
            sequence: None,
            min_len: None,
        }];
        references.extend((first..first + count).map(|s| Reference {
            path: format!("/l/{s}.m4s"),
            class: ObjectClass::Segment,
            sequence: Some(s),
            min_len: None,
        }));
        PlaylistInfo {
            class: ObjectClass::LiveMedia,
            target_duration: Some(Duration::from_secs(2)),
            media_sequence: first,
            references,
            variants: 0,
        }
    }

    fn followed(config: FollowerConfig) -> FollowedRenditions {
        let gauge = IntGauge::new("followed", "followed renditions").unwrap();
        FollowedRenditions::new(config, gauge)
    }

    #[test]
    fn first_sight_takes_init_and_last_three() {
        let picked = select_new(&info(10, 6), None);
        let paths: Vec<_> = picked.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/l/init.mp4", "/l/13.m4s", "/l/14.m4s", "/l/15.m4s"]
        );
    }

    #[test]
    fn later_takes_only_new_segments() {
        let picked = select_new(&info(11, 6), Some(15));
        let paths: Vec<_> = picked.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/l/16.m4s"]);
        assert!(select_new(&info(11, 6), Some(16)).is_empty());
    }

    #[test]
    fn a_window_that_jumps_prefetches_only_its_newest_few() {
        let picked = select_new(&info(3000, 3000), Some(5));
        let paths: Vec<&str> = picked.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/l/5997.m4s", "/l/5998.m4s", "/l/5999.m4s"]);
    }

    #[test]
    fn tracks_what_was_prefetched_per_followed_rendition() {
        let follower = followed(crate::config::Config::default().follower);
        let key = CacheKey("/l/index.m3u8".into());
        assert!(
            follower.new_references(&key, &info(0, 3)).is_empty(),
            "not followed"
        );
        assert_eq!(follower.touch(&key, Instant::now()), Touch::Started);
        assert_eq!(follower.new_references(&key, &info(0, 3)).len(), 4);
        assert_eq!(follower.new_references(&key, &info(1, 3)).len(), 1);
        assert!(follower.new_references(&key, &info(1, 3)).is_empty());
    }

    #[test]
    fn idle_is_at_least_three_target_durations() {
        let s = Duration::from_secs;
        assert_eq!(idle_limit(s(6), s(2)), s(6));
        assert_eq!(
            idle_limit(s(6), s(6)),
            s(18),
            "long segments: players reload less often"
        );
    }

    #[test]
    fn idle_decision_on_explicit_time() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        // idle_after 6 s, target 2 s: idle from 6 s after the last request.
        assert!(!is_idle(t0, t0, s(6), s(2)));
        assert!(!is_idle(t0, t0 + Duration::from_millis(5999), s(6), s(2)));
        assert!(is_idle(t0, t0 + s(6), s(6), s(2)));
        // Long segments: three target durations (18 s) win over idle_after.
        assert!(!is_idle(t0, t0 + s(17), s(6), s(6)));
        assert!(is_idle(t0, t0 + s(18), s(6), s(6)));
        // A clock read before the last request is not idle time.
        assert!(!is_idle(t0 + s(10), t0, s(6), s(2)));
    }

    #[test]
    fn a_request_renews_and_idleness_follows_the_given_time() {
        let mut config = crate::config::Config::default().follower;
        config.idle_after = Duration::from_secs(6);
        config.max_renditions = 1;
        let follower = followed(config);
        let key = CacheKey("/l/index.m3u8".into());
        let target = Duration::from_secs(2);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert!(follower.is_idle(&key, t0, target), "not followed");
        assert_eq!(follower.touch(&key, t0), Touch::Started);
        assert!(follower.is_following(&key));
        assert_eq!(follower.gauge.get(), 1);
        assert!(!follower.is_idle(&key, at(5), target));
        assert_eq!(follower.touch(&key, at(5)), Touch::Renewed);
        assert!(!follower.is_idle(&key, at(10), target), "renewed at 5 s");
        assert!(follower.is_idle(&key, at(11), target));
        let other = CacheKey("/other/index.m3u8".into());
        assert_eq!(follower.touch(&other, at(11)), Touch::AtLimit);
        follower.stop(&key);
        assert!(!follower.is_following(&key));
        assert_eq!(follower.gauge.get(), 0);
        assert_eq!(follower.touch(&other, at(12)), Touch::Started);
    }

    #[test]
    fn a_disabled_follower_follows_nothing() {
        let mut config = crate::config::Config::default().follower;
        config.enabled = false;
        let follower = followed(config);
        let key = CacheKey("/l/index.m3u8".into());
        assert_eq!(follower.touch(&key, Instant::now()), Touch::Disabled);
        assert!(!follower.is_following(&key));
    }

    #[test]
    fn reload_interval_follows_rfc8216() {
        let t = Duration::from_secs(4);
        assert_eq!(reload_interval(t, true), t);
        assert_eq!(reload_interval(t, false), Duration::from_secs(2));
    }
}
