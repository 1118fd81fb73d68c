//! How long an object may be served, by class (pure). DESIGN.md §3.
//!
//! An entry has two windows after it is stored: *fresh* (served as a hit) and then *stale* (served
//! while a background refresh runs, or when the origin fails). After both it is *expired*: never served.

use std::time::{Duration, Instant};

use crate::config::CacheConfig;
use crate::hls::ObjectClass;

/// Freshness of a long-lived object (VOD playlists, segments, init sections).
pub const LONG: Duration = Duration::from_secs(24 * 3600);
/// Freshness of a multivariant playlist (it may belong to a live stream).
pub const MULTIVARIANT_FRESH: Duration = Duration::from_secs(2);
/// How long a multivariant playlist may be served stale when the origin fails.
pub const MULTIVARIANT_STALE: Duration = Duration::from_secs(300);
/// Freshness of an unclassified object.
pub const OTHER_FRESH: Duration = Duration::from_secs(60);
/// The longest any origin error is cached.
pub const ERROR_MAX: Duration = Duration::from_secs(1);

/// The parts of an origin `Cache-Control` header the gateway honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
}

impl CacheControl {
    /// Parses a `Cache-Control` value; unknown or malformed directives are ignored.
    pub fn parse(value: &str) -> Self {
        let mut cc = CacheControl::default();
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            let secs = || {
                arg.and_then(|a| a.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            match name.to_ascii_lowercase().as_str() {
                "max-age" => cc.max_age = secs().or(cc.max_age),
                "s-maxage" => cc.s_maxage = secs().or(cc.s_maxage),
                "no-store" => cc.no_store = true,
                "private" => cc.private = true,
                "no-cache" => cc.no_cache = true,
                _ => {}
            }
        }
        cc
    }

    /// The lifetime a shared cache may give the response, if the origin limits it.
    fn shared_max_age(&self) -> Option<Duration> {
        if self.no_cache {
            return Some(Duration::ZERO);
        }
        self.s_maxage.or(self.max_age)
    }
}

/// How long an object stays fresh, then usable when stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub fresh: Duration,
    pub stale: Duration,
}

impl Lifetime {
    /// Total time the entry may be kept (saturating: durations may come from the origin).
    pub fn total(&self) -> Duration {
        self.fresh.saturating_add(self.stale)
    }
}

/// The lifetime of a successful (2xx) response, or `None` when it must not be stored.
pub fn lifetime(
    class: ObjectClass,
    target_duration: Option<Duration>,
    cc: &CacheControl,
    config: &CacheConfig,
) -> Option<Lifetime> {
    if cc.no_store || cc.private {
        return None;
    }
    let target = target_duration.unwrap_or(Duration::from_secs(2));
    let (default_fresh, stale, overridden) = match class {
        ObjectClass::Multivariant => (
            MULTIVARIANT_FRESH,
            MULTIVARIANT_STALE,
            config.ttl_multivariant,
        ),
        ObjectClass::LiveMedia => (target / 2, target, config.ttl_live_media),
        // `target` comes from the origin; the parser clamps it, but nothing here relies on that.
        ObjectClass::VodMedia => (LONG, LONG, config.ttl_vod_media),
        ObjectClass::Segment | ObjectClass::Init | ObjectClass::Part | ObjectClass::Key => {
            (LONG, LONG, config.ttl_segment)
        }
        ObjectClass::Playlist => (MULTIVARIANT_FRESH, target, None),
        ObjectClass::Other => (OTHER_FRESH, OTHER_FRESH, None),
    };
    match (overridden, cc.shared_max_age()) {
        (Some(configured), _) => Some(Lifetime {
            fresh: configured,
            stale,
        }),
        // A live media playlist marked `no-cache` or `max-age=0` is stored and revalidated
        // conditionally, one request at a time, at most every `cache.revalidate_interval`
        // (see [`must_revalidate`]): otherwise every viewer's reload would reach the origin.
        (None, Some(origin)) if origin.is_zero() && class == ObjectClass::LiveMedia => {
            Some(Lifetime {
                fresh: config.revalidate_interval.min(default_fresh),
                stale,
            })
        }
        // Other objects marked `no-cache` or `max-age=0`: every reuse needs the origin's word
        // (RFC 9111 §4.2.4), so the object is not stored; concurrent requests still share one fetch.
        (None, Some(origin)) if origin.is_zero() => None,
        (None, Some(origin)) => Some(Lifetime {
            fresh: default_fresh.min(origin),
            stale,
        }),
        (None, None) => Some(Lifetime {
            fresh: default_fresh,
            stale,
        }),
    }
}

/// Whether a stored object must be revalidated with the origin before it is served once it is no
/// longer fresh (a viewer waits for the revalidation, coalesced with every other; the stale copy is
/// served only when the origin fails): a live media playlist the origin marked `no-cache` or
/// `max-age=0`, without an operator override.
pub fn must_revalidate(class: ObjectClass, cc: &CacheControl, config: &CacheConfig) -> bool {
    class == ObjectClass::LiveMedia
        && config.ttl_live_media.is_none()
        && !cc.no_store
        && !cc.private
        && cc.shared_max_age().is_some_and(|a| a.is_zero())
}

/// Whether a live media playlist stored at `stored_at` with `lifetime` may still be served at `now`
/// because the origin cannot replace it: up to `outage_max` past its stale bound.
pub fn outage_servable(
    stored_at: Instant,
    lifetime: Lifetime,
    outage_max: Duration,
    now: Instant,
) -> bool {
    now.saturating_duration_since(stored_at) < lifetime.total().saturating_add(outage_max)
}

/// The lifetime of an origin error answer (4xx/5xx): at most [`ERROR_MAX`], never stale, and no
/// longer than the origin's `Cache-Control` allows (`None`: not stored). When the origin is another
/// gateway (a shield), its `max-age` on an error is what is left of its own lifetime, so an edge
/// never keeps an error longer than the shield does.
pub fn error_lifetime(config: &CacheConfig, cc: &CacheControl) -> Option<Lifetime> {
    if cc.no_store || cc.private {
        return None;
    }
    let fresh = config.ttl_error.min(ERROR_MAX);
    let fresh = cc
        .shared_max_age()
        .map_or(fresh, |origin| fresh.min(origin));
    (!fresh.is_zero()).then_some(Lifetime {
        fresh,
        stale: Duration::ZERO,
    })
}

/// Where an entry stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Fresh,
    Stale,
    Expired,
}

/// The state of an entry stored at `stored_at` (already backdated by the origin's `Age`).
pub fn state(stored_at: Instant, lifetime: Lifetime, now: Instant) -> State {
    let age = now.saturating_duration_since(stored_at);
    if age < lifetime.fresh {
        State::Fresh
    } else if age < lifetime.total() {
        State::Stale
    } else {
        State::Expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CacheConfig {
        crate::config::Config::default().cache
    }

    #[test]
    fn parses_cache_control() {
        let cc = CacheControl::parse("public, max-age=10, s-maxage=\"5\", foo=bar");
        assert_eq!(cc.max_age, Some(Duration::from_secs(10)));
        assert_eq!(cc.s_maxage, Some(Duration::from_secs(5)));
        assert!(!cc.no_store);
        assert!(CacheControl::parse("no-store").no_store);
        assert!(CacheControl::parse("Private").private);
        assert_eq!(CacheControl::parse("max-age=-1, max-age=x").max_age, None);
        assert_eq!(CacheControl::parse(",,="), CacheControl::default());
    }

    #[test]
    fn class_defaults() {
        let c = config();
        let none = CacheControl::default();
        let live = lifetime(
            ObjectClass::LiveMedia,
            Some(Duration::from_secs(4)),
            &none,
            &c,
        );
        assert_eq!(
            live,
            Some(Lifetime {
                fresh: Duration::from_secs(2),
                stale: Duration::from_secs(4)
            })
        );
        let mv = lifetime(ObjectClass::Multivariant, None, &none, &c).expect("cacheable");
        assert_eq!(mv.fresh, Duration::from_secs(2));
        let seg = lifetime(ObjectClass::Segment, None, &none, &c).expect("cacheable");
        assert_eq!(seg.fresh, LONG);
        let vod = lifetime(
            ObjectClass::VodMedia,
            Some(Duration::from_secs(2)),
            &none,
            &c,
        );
        assert_eq!(vod.map(|l| l.fresh), Some(LONG));
    }

    #[test]
    fn origin_may_shorten_never_lengthen() {
        let c = config();
        let short = CacheControl::parse("max-age=1");
        let long = CacheControl::parse("max-age=3600");
        let t = Some(Duration::from_secs(6));
        assert_eq!(
            lifetime(ObjectClass::LiveMedia, t, &short, &c).map(|l| l.fresh),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            lifetime(ObjectClass::LiveMedia, t, &long, &c).map(|l| l.fresh),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            lifetime(
                ObjectClass::Segment,
                None,
                &CacheControl::parse("s-maxage=7, max-age=1"),
                &c
            )
            .map(|l| l.fresh),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            lifetime(
                ObjectClass::Segment,
                None,
                &CacheControl::parse("no-store"),
                &c
            ),
            None
        );
        assert_eq!(
            lifetime(
                ObjectClass::Segment,
                None,
                &CacheControl::parse("private"),
                &c
            ),
            None
        );
        assert_eq!(
            lifetime(
                ObjectClass::Segment,
                None,
                &CacheControl::parse("no-cache"),
                &c
            ),
            None
        );
        assert_eq!(
            lifetime(
                ObjectClass::VodMedia,
                None,
                &CacheControl::parse("max-age=0"),
                &c
            ),
            None
        );
        let mut overridden = config();
        overridden.ttl_live_media = Some(Duration::from_secs(1));
        assert_eq!(
            lifetime(
                ObjectClass::LiveMedia,
                None,
                &CacheControl::parse("no-cache"),
                &overridden
            )
            .map(|l| l.fresh),
            Some(Duration::from_secs(1)),
            "the operator's override wins over the origin"
        );
    }

    #[test]
    fn no_cache_live_playlists_are_stored_and_revalidated() {
        let c = config();
        let t = Some(Duration::from_secs(4));
        for value in ["no-cache", "max-age=0", "public, s-maxage=0, max-age=10"] {
            let cc = CacheControl::parse(value);
            assert_eq!(
                lifetime(ObjectClass::LiveMedia, t, &cc, &c),
                Some(Lifetime {
                    fresh: c.revalidate_interval,
                    stale: Duration::from_secs(4)
                }),
                "{value}"
            );
            assert!(must_revalidate(ObjectClass::LiveMedia, &cc, &c), "{value}");
            assert!(!must_revalidate(ObjectClass::Segment, &cc, &c), "{value}");
        }
        // Never fresh longer than the class default (half a target duration).
        let short = lifetime(
            ObjectClass::LiveMedia,
            Some(Duration::from_millis(600)),
            &CacheControl::parse("no-cache"),
            &c,
        );
        assert_eq!(short.map(|l| l.fresh), Some(Duration::from_millis(300)));
        for value in ["max-age=2", "", "no-store", "private, no-cache"] {
            let cc = CacheControl::parse(value);
            assert!(!must_revalidate(ObjectClass::LiveMedia, &cc, &c), "{value}");
        }
        assert_eq!(
            lifetime(
                ObjectClass::LiveMedia,
                t,
                &CacheControl::parse("no-store, no-cache"),
                &c
            ),
            None
        );
    }

    #[test]
    fn a_live_playlist_outlives_its_bound_only_by_the_outage_limit() {
        let t0 = Instant::now();
        let life = Lifetime {
            fresh: Duration::from_secs(1),
            stale: Duration::from_secs(2),
        };
        let max = Duration::from_secs(10);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(outage_servable(t0, life, max, at(0)));
        assert!(outage_servable(t0, life, max, at(3_000)), "past its bound");
        assert!(outage_servable(t0, life, max, at(12_999)));
        assert!(!outage_servable(t0, life, max, at(13_000)));
        assert!(
            !outage_servable(t0, life, Duration::ZERO, at(3_000)),
            "0 turns it off"
        );
        let huge = Lifetime {
            fresh: Duration::MAX,
            stale: Duration::MAX,
        };
        assert!(outage_servable(t0, huge, Duration::MAX, at(1)), "saturates");
    }

    #[test]
    fn config_overrides_class_default() {
        let mut c = config();
        c.ttl_live_media = Some(Duration::from_millis(500));
        c.ttl_segment = Some(Duration::from_secs(10));
        let none = CacheControl::default();
        assert_eq!(
            lifetime(
                ObjectClass::LiveMedia,
                Some(Duration::from_secs(6)),
                &none,
                &c
            )
            .map(|l| l.fresh),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            lifetime(ObjectClass::Init, None, &none, &c).map(|l| l.fresh),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn errors_are_cached_at_most_a_second() {
        let mut c = config();
        c.ttl_error = Duration::from_secs(5);
        let none = CacheControl::default();
        let l = error_lifetime(&c, &none).expect("cached");
        assert_eq!(l.fresh, ERROR_MAX);
        assert_eq!(l.stale, Duration::ZERO);
    }

    #[test]
    fn errors_follow_the_origins_cache_control() {
        let c = config();
        let cc = CacheControl::parse;
        assert_eq!(error_lifetime(&c, &cc("max-age=0")), None);
        assert_eq!(error_lifetime(&c, &cc("no-store")), None);
        assert_eq!(error_lifetime(&c, &cc("private, max-age=1")), None);
        assert_eq!(error_lifetime(&c, &cc("no-cache")), None);
        let one = error_lifetime(&c, &cc("max-age=1")).expect("cached");
        assert_eq!(one.fresh, Duration::from_secs(1));
        let long = error_lifetime(&c, &cc("s-maxage=600")).expect("cached");
        assert_eq!(long.fresh, ERROR_MAX, "never longer than a second");
    }

    #[test]
    fn hostile_origin_durations_never_overflow() {
        let c = config();
        let none = CacheControl::default();
        let huge = Some(Duration::MAX);
        let live = lifetime(ObjectClass::LiveMedia, huge, &none, &c).expect("cacheable");
        assert_eq!(live.total(), Duration::MAX, "saturates");
        let t0 = Instant::now();
        assert_eq!(state(t0, live, t0 + Duration::from_secs(1)), State::Fresh);
        let cc = CacheControl::parse(&format!("max-age={}", u64::MAX));
        let seg = lifetime(ObjectClass::Segment, None, &cc, &c).expect("cacheable");
        assert_eq!(seg.fresh, LONG, "the origin may shorten, never lengthen");
    }

    #[test]
    fn state_moves_fresh_stale_expired_with_explicit_time() {
        let t0 = Instant::now();
        let life = Lifetime {
            fresh: Duration::from_secs(2),
            stale: Duration::from_secs(4),
        };
        assert_eq!(state(t0, life, t0), State::Fresh);
        assert_eq!(
            state(t0, life, t0 + Duration::from_millis(1999)),
            State::Fresh
        );
        assert_eq!(state(t0, life, t0 + Duration::from_secs(2)), State::Stale);
        assert_eq!(
            state(t0, life, t0 + Duration::from_millis(5999)),
            State::Stale
        );
        assert_eq!(state(t0, life, t0 + Duration::from_secs(6)), State::Expired);
    }
}
