//! The live playlist follower. While a live rendition is being watched, the gateway reloads its
//! playlist itself at the RFC 8216 §6.3.4 interval (a target duration after a change, half of one after
//! none) and prefetches the segments that appear, so viewers hit a warm cache and every new segment has
//! a digest before any peer asks for it. A rendition nobody asked for during `idle_after` (and at least
//! three target durations: players reload a watched playlist every target duration) is dropped, so a
//! rendition viewers switched away from stops costing origin fetches within seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::FollowerConfig;
use crate::edge::{Edge, Lookup, ObjectRef};
use crate::hls::{ObjectClass, PlaylistInfo, Reference};
use crate::http::path::CacheKey;

/// Segments prefetched the first time a rendition is seen: where live players start.
const INITIAL_PREFETCH: usize = 3;

#[derive(Debug)]
struct Followed {
    last_request: Instant,
    /// Highest media sequence number already prefetched.
    last_prefetched: Option<u64>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Follower {
    config: FollowerConfig,
    renditions: Mutex<HashMap<CacheKey, Followed>>,
}

impl Follower {
    pub fn new(config: FollowerConfig) -> Self {
        Self {
            config,
            renditions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Followed>> {
        self.renditions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes that a viewer asked for the live playlist `object`; starts following it if needed.
    pub fn touch(edge: &Arc<Edge>, object: &ObjectRef) {
        let follower = &edge.follower;
        if !follower.config.enabled {
            return;
        }
        let mut renditions = follower.lock();
        if let Some(followed) = renditions.get_mut(&object.key) {
            followed.last_request = Instant::now();
            return;
        }
        if renditions.len() >= follower.config.max_renditions {
            tracing::debug!(key = %object.key, "follower is at its rendition limit");
            return;
        }
        renditions.insert(
            object.key.clone(),
            Followed {
                last_request: Instant::now(),
                last_prefetched: None,
            },
        );
        edge.metrics
            .followed_renditions
            .set(renditions.len() as i64);
        drop(renditions);
        tracing::info!(key = %object.key, "following live rendition");
        tokio::spawn(Self::run(Arc::clone(edge), object.clone()));
    }

    /// Whether `key` is being followed.
    pub fn is_following(&self, key: &CacheKey) -> bool {
        self.lock().contains_key(key)
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

    async fn run(edge: Arc<Edge>, object: ObjectRef) {
        let idle_after = edge.follower.config.idle_after;
        let mut last_etag = None;
        let mut target = Duration::from_secs(2);
        loop {
            let limit = idle_limit(idle_after, target);
            let idle = edge
                .follower
                .lock()
                .get(&object.key)
                .is_none_or(|f| f.last_request.elapsed() >= limit);
            if idle {
                break;
            }
            let current = match edge.lookup(&object.key).await {
                Lookup::Fresh(fresh) => Ok(fresh),
                _ => edge.fetch(&object).0.await,
            };
            let wait = match current {
                Ok(playlist) if playlist.is_success() => {
                    // Also covers the playlist stored just before the rendition became followed.
                    if let Some(info) = &playlist.playlist {
                        for reference in edge.follower.new_references(&object.key, info) {
                            edge.prefetch(&ObjectRef::from_path(&reference.path)).await;
                        }
                    }
                    if playlist.class != ObjectClass::LiveMedia {
                        break; // It ended (EXT-X-ENDLIST): nothing more will appear.
                    }
                    target = playlist.target_duration().unwrap_or(target);
                    let changed = last_etag.as_ref() != Some(&playlist.etag);
                    last_etag = Some(playlist.etag.clone());
                    reload_interval(target, changed)
                }
                _ => Duration::from_millis(500),
            };
            tokio::time::sleep(wait).await;
        }
        let mut renditions = edge.follower.lock();
        renditions.remove(&object.key);
        edge.metrics
            .followed_renditions
            .set(renditions.len() as i64);
        tracing::info!(key = %object.key, "stopped following idle rendition");
    }
}

/// How long a rendition may go without a viewer's request before it is dropped.
pub fn idle_limit(idle_after: Duration, target: Duration) -> Duration {
    idle_after.max(target * 3)
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
        None => {
            let skip = segments.len().saturating_sub(INITIAL_PREFETCH);
            segments.into_iter().skip(skip).collect()
        }
    };
    let mut picked: Vec<Reference> = info
        .references
        .iter()
        .filter(|r| r.class == ObjectClass::Init && last_prefetched.is_none())
        .cloned()
        .collect();
    picked.extend(fresh.into_iter().cloned());
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
        }];
        references.extend((first..first + count).map(|s| Reference {
            path: format!("/l/{s}.m4s"),
            class: ObjectClass::Segment,
            sequence: Some(s),
        }));
        PlaylistInfo {
            class: ObjectClass::LiveMedia,
            target_duration: Some(Duration::from_secs(2)),
            media_sequence: first,
            references,
            variants: 0,
        }
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
    fn tracks_what_was_prefetched_per_followed_rendition() {
        let follower = Follower::new(crate::config::Config::default().follower);
        let key = CacheKey("/l/index.m3u8".into());
        assert!(
            follower.new_references(&key, &info(0, 3)).is_empty(),
            "not followed"
        );
        follower.lock().insert(
            key.clone(),
            Followed {
                last_request: Instant::now(),
                last_prefetched: None,
            },
        );
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
    fn reload_interval_follows_rfc8216() {
        let t = Duration::from_secs(4);
        assert_eq!(reload_interval(t, true), t);
        assert_eq!(reload_interval(t, false), Duration::from_secs(2));
    }
}
