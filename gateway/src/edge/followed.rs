//! The live follower's state, without I/O or async: which renditions are followed, when a viewer last
//! asked for each, what was already prefetched, and the decisions the follower task takes from that
//! (when a rendition is idle, how long to wait between reloads, which new objects to prefetch).
//! Time is passed in: callers read the gateway [`Clock`](crate::clock::Clock), tests give explicit
//! instants.
//!
//! [`Edge`](super::Edge) holds a [`FollowedRenditions`] and consults it whenever it stores a live
//! playlist; the task in [`follower`](super::follower) drives it. This module knows neither, so
//! neither imports the other through it.
//!
//! What is followed is the origin object viewers watch, never a spelling of it: the key is the
//! request path in canonical form ([`follow_path`]) without the viewer's query, so any number of
//! `?v=` variants of one live playlist share one follower. Who caused a rendition to be followed is
//! remembered, and one client address (an IPv4 address, an IPv6 /64: [`ClientGroup`]) may start at
//! most `follower.max_per_client` of them, so one client cannot take every follower slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::IntGauge;

use crate::cache::key::CacheKey;
use crate::config::FollowerConfig;
use crate::hls::{ObjectClass, PlaylistInfo, Reference};

/// Segments prefetched the first time a rendition is seen (where live players start), and at most
/// after any reload: a window that jumps by thousands of segments prefetches only its newest few.
pub const MAX_PREFETCH: usize = 3;

/// Target durations a followed live playlist stays fresh for viewers (see
/// [`FollowedRenditions::keeps_fresh`]).
pub const FRESH_WHILE_FOLLOWED: f32 = 1.5;

#[derive(Debug)]
struct Followed {
    /// When a viewer last asked for the playlist, by the gateway clock.
    last_request: Instant,
    /// Highest media sequence number already prefetched.
    last_prefetched: Option<u64>,
    /// The client whose request started following it (counted against its limit until it stops).
    started_by: Option<ClientGroup>,
    /// The origin refused the follower's own request (a 4xx without the viewer's query): not
    /// followed, and not started again, until then.
    refused_until: Option<Instant>,
}

impl Followed {
    fn active(&self) -> bool {
        self.refused_until.is_none()
    }
}

/// The addresses one client controls, for per-client limits: an IPv4 address, or the /64 an IPv6
/// address is in (one subscriber's prefix). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientGroup(IpAddr);

impl ClientGroup {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientGroup(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientGroup(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientGroup(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// The canonical form of a (clean, percent-encoded) request path, so that spellings of one origin
/// object share one follower: escapes of unreserved characters (RFC 3986 §2.3) decoded, the others
/// in upper-case hex. A `%` not followed by two hex digits is kept as it is.
pub fn follow_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escape {
            Some(decoded) if decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded) => {
                out.push(char::from(decoded));
                i += 3;
            }
            Some(decoded) => {
                out.push_str(&format!("%{decoded:02X}"));
                i += 3;
            }
            None => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    out
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
    /// Not followed: this client started as many followed renditions as it may.
    ClientAtLimit,
    /// Not followed: the origin refused the follower's own request for it a short while ago.
    Refused,
}

/// See the module docs.
#[derive(Debug, Default)]
struct State {
    renditions: HashMap<CacheKey, Followed>,
    /// Renditions (active or refused) each client started.
    started: HashMap<ClientGroup, usize>,
}

impl State {
    fn remove(&mut self, key: &CacheKey) -> Option<Followed> {
        let followed = self.renditions.remove(key)?;
        if let Some(client) = followed.started_by {
            if let Some(count) = self.started.get_mut(&client) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.started.remove(&client);
                }
            }
        }
        Some(followed)
    }

    fn active(&self) -> i64 {
        let n = self.renditions.values().filter(|f| f.active()).count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

#[derive(Debug)]
pub struct FollowedRenditions {
    config: FollowerConfig,
    state: Mutex<State>,
    /// Set to the number of followed renditions whenever it changes (under the lock, so it is exact).
    gauge: IntGauge,
}

impl FollowedRenditions {
    pub fn new(config: FollowerConfig, gauge: IntGauge) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
            gauge,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that a viewer (from `client`, if known) asked for the live playlist `key` (a
    /// [`follow_path`], no query) at `now`.
    pub fn touch(&self, key: &CacheKey, client: Option<IpAddr>, now: Instant) -> Touch {
        if !self.config.enabled {
            return Touch::Disabled;
        }
        let mut state = self.lock();
        if let Some(followed) = state.renditions.get_mut(key) {
            match followed.refused_until {
                Some(until) if now < until => return Touch::Refused,
                Some(_) => {
                    // The refusal is over: start afresh (and count it for this client).
                    state.remove(key);
                }
                None => {
                    followed.last_request = now;
                    return Touch::Renewed;
                }
            }
        }
        if state.renditions.len() >= self.config.max_renditions {
            // Refusals that are over make room; nothing else does.
            let over: Vec<CacheKey> = state
                .renditions
                .iter()
                .filter(|(_, f)| f.refused_until.is_some_and(|until| now >= until))
                .map(|(k, _)| k.clone())
                .collect();
            for k in &over {
                state.remove(k);
            }
            if state.renditions.len() >= self.config.max_renditions {
                return Touch::AtLimit;
            }
        }
        let client = client.map(ClientGroup::of);
        if let Some(group) = client {
            let count = state.started.entry(group).or_default();
            if *count >= self.config.max_per_client {
                return Touch::ClientAtLimit;
            }
            *count += 1;
        }
        state.renditions.insert(
            key.clone(),
            Followed {
                last_request: now,
                last_prefetched: None,
                started_by: client,
                refused_until: None,
            },
        );
        self.gauge.set(state.active());
        Touch::Started
    }

    /// Whether `key` is being followed.
    pub fn is_following(&self, key: &CacheKey) -> bool {
        self.lock()
            .renditions
            .get(key)
            .is_some_and(Followed::active)
    }

    /// Whether a stored copy of the followed live playlist `key`, `age` old, is still the newest the
    /// origin has as far as viewers need to know: the follower reloads it at least once a segment
    /// duration while it works, so a copy younger than [`FRESH_WHILE_FOLLOWED`] target durations is
    /// served as fresh. Older ones (the follower's reloads failing) take the usual path.
    pub fn keeps_fresh(&self, key: &CacheKey, age: Duration, target: Duration) -> bool {
        age <= target.mul_f32(FRESH_WHILE_FOLLOWED) && self.is_following(key)
    }

    /// Whether the follower should let go of `key` at `now`, given the playlist's target duration:
    /// no viewer asked for it for long enough (see [`is_idle`]), or it is not followed.
    pub fn is_idle(&self, key: &CacheKey, now: Instant, target: Duration) -> bool {
        self.lock().renditions.get(key).is_none_or(|f| {
            !f.active() || is_idle(f.last_request, now, self.config.idle_after, target)
        })
    }

    /// Stops following `key`.
    pub fn stop(&self, key: &CacheKey) {
        let mut state = self.lock();
        state.remove(key);
        self.gauge.set(state.active());
    }

    /// Stops following `key` because the origin refused the follower's request for it (a 4xx: the
    /// object needs something of the viewer's, such as its query). Viewers' requests do not start it
    /// again for `follower.idle_after`; the entry still counts against the limits meanwhile.
    pub fn refuse(&self, key: &CacheKey, now: Instant) {
        let mut state = self.lock();
        if let Some(followed) = state.renditions.get_mut(key) {
            followed.refused_until = Some(now + self.config.idle_after);
        }
        self.gauge.set(state.active());
    }

    /// Number of renditions `client` started that still count against its limit.
    pub fn started_by(&self, client: IpAddr) -> usize {
        self.lock()
            .started
            .get(&ClientGroup::of(client))
            .copied()
            .unwrap_or(0)
    }

    /// The live playlist `key` restarted (its sequence numbers may start over): its next version
    /// is prefetched as if seen for the first time.
    pub fn restarted(&self, key: &CacheKey) {
        if let Some(followed) = self.lock().renditions.get_mut(key) {
            followed.last_prefetched = None;
        }
    }

    /// The media objects of a newly stored live playlist that should be prefetched: everything newer
    /// than what was prefetched before, or the last few segments (and their init section) the first
    /// time. Empty for renditions not followed.
    pub fn new_references(&self, key: &CacheKey, info: &PlaylistInfo) -> Vec<Reference> {
        let mut state = self.lock();
        let Some(followed) = state.renditions.get_mut(key).filter(|f| f.active()) else {
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
            ranges: Vec::new(),
        }];
        references.extend((first..first + count).map(|s| Reference {
            path: format!("/l/{s}.m4s"),
            class: ObjectClass::Segment,
            sequence: Some(s),
            min_len: None,
            ranges: Vec::new(),
        }));
        PlaylistInfo {
            class: ObjectClass::LiveMedia,
            target_duration: Some(Duration::from_secs(2)),
            media_sequence: first,
            references,
            variants: 0,
            timeline: Default::default(),
            low_latency: None,
            hints: Vec::new(),
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
        assert_eq!(follower.touch(&key, None, Instant::now()), Touch::Started);
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
        assert_eq!(follower.touch(&key, None, t0), Touch::Started);
        assert!(follower.is_following(&key));
        assert_eq!(follower.gauge.get(), 1);
        assert!(!follower.is_idle(&key, at(5), target));
        assert_eq!(follower.touch(&key, None, at(5)), Touch::Renewed);
        assert!(!follower.is_idle(&key, at(10), target), "renewed at 5 s");
        assert!(follower.is_idle(&key, at(11), target));
        let other = CacheKey("/other/index.m3u8".into());
        assert_eq!(follower.touch(&other, None, at(11)), Touch::AtLimit);
        follower.stop(&key);
        assert!(!follower.is_following(&key));
        assert_eq!(follower.gauge.get(), 0);
        assert_eq!(follower.touch(&other, None, at(12)), Touch::Started);
    }

    #[test]
    fn a_disabled_follower_follows_nothing() {
        let mut config = crate::config::Config::default().follower;
        config.enabled = false;
        let follower = followed(config);
        let key = CacheKey("/l/index.m3u8".into());
        assert_eq!(follower.touch(&key, None, Instant::now()), Touch::Disabled);
        assert!(!follower.is_following(&key));
    }

    #[test]
    fn spellings_of_one_path_have_one_follow_path() {
        assert_eq!(follow_path("/live/index.m3u8"), "/live/index.m3u8");
        assert_eq!(follow_path("/%6Cive/%69ndex.m3u8"), "/live/index.m3u8");
        assert_eq!(follow_path("/live/a%2db%7E.m3u8"), "/live/a-b~.m3u8");
        assert_eq!(follow_path("/live/a%20b%e2.m3u8"), "/live/a%20b%E2.m3u8");
        assert_eq!(follow_path("/live/100%"), "/live/100%", "a lone % stays");
        assert_eq!(follow_path("/live/%zz%4"), "/live/%zz%4");
    }

    #[test]
    fn client_groups_are_ipv4_addresses_and_ipv6_prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ClientGroup::of(ip("10.0.0.1")), ClientGroup(ip("10.0.0.1")));
        assert_ne!(
            ClientGroup::of(ip("10.0.0.1")),
            ClientGroup::of(ip("10.0.0.2"))
        );
        assert_eq!(
            ClientGroup::of(ip("2001:db8:1:2:aaaa::1")),
            ClientGroup::of(ip("2001:db8:1:2:bbbb::9")),
            "one /64"
        );
        assert_ne!(
            ClientGroup::of(ip("2001:db8:1:2::1")),
            ClientGroup::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            ClientGroup::of(ip("::ffff:10.0.0.1")),
            ClientGroup::of(ip("10.0.0.1"))
        );
    }

    #[test]
    fn one_client_starts_at_most_its_share() {
        let mut config = crate::config::Config::default().follower;
        config.max_per_client = 2;
        config.max_renditions = 10;
        let follower = followed(config);
        let t0 = Instant::now();
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let viewer: IpAddr = "192.0.2.2".parse().unwrap();
        let key = |i: u32| CacheKey(format!("/l{i}/index.m3u8").into());
        assert_eq!(follower.touch(&key(0), Some(attacker), t0), Touch::Started);
        assert_eq!(follower.touch(&key(1), Some(attacker), t0), Touch::Started);
        assert_eq!(
            follower.touch(&key(2), Some(attacker), t0),
            Touch::ClientAtLimit
        );
        assert_eq!(follower.started_by(attacker), 2);
        // Renewing what is followed is always allowed, and others are not affected.
        assert_eq!(follower.touch(&key(0), Some(attacker), t0), Touch::Renewed);
        assert_eq!(follower.touch(&key(2), Some(viewer), t0), Touch::Started);
        assert_eq!(follower.touch(&key(1), Some(viewer), t0), Touch::Renewed);
        assert_eq!(follower.gauge.get(), 3);
        // When one of its renditions stops, the client may start another.
        follower.stop(&key(0));
        assert_eq!(follower.started_by(attacker), 1);
        assert_eq!(follower.touch(&key(3), Some(attacker), t0), Touch::Started);
    }

    #[test]
    fn a_refused_rendition_is_not_restarted_until_the_refusal_is_over() {
        let mut config = crate::config::Config::default().follower;
        config.idle_after = Duration::from_secs(6);
        config.max_renditions = 1;
        let follower = followed(config);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let key = CacheKey("/l/index.m3u8".into());
        assert_eq!(follower.touch(&key, None, t0), Touch::Started);
        follower.refuse(&key, at(1));
        assert!(!follower.is_following(&key));
        assert!(follower.is_idle(&key, at(1), Duration::from_secs(2)));
        assert_eq!(follower.gauge.get(), 0);
        assert_eq!(follower.touch(&key, None, at(6)), Touch::Refused);
        let other = CacheKey("/other/index.m3u8".into());
        assert_eq!(
            follower.touch(&other, None, at(6)),
            Touch::AtLimit,
            "a refusal holds its slot while it lasts"
        );
        assert_eq!(follower.touch(&other, None, at(7)), Touch::Started);
        assert_eq!(follower.touch(&key, None, at(7)), Touch::AtLimit);
    }
}
