//! The object cache: moka, bounded by body bytes, each entry kept for its class lifetime.
//! What an entry is ([`object`]), how long it may be served ([`policy`]), what identifies it
//! ([`key`]) and which phase a request went through ([`phase`]) are pure modules of their own.
//!
//! Freshness is judged by the gateway's [`Clock`](crate::clock::Clock) (see [`policy`]); moka's own
//! expiry only bounds how long an entry may be kept at all, in real time.

pub mod key;
pub mod object;
pub mod phase;
pub mod policy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::policy::EvictionPolicy;

pub use self::key::CacheKey;
pub use self::object::{CachedObject, Digest};
pub use self::phase::CachePhase;
use crate::hls::ObjectClass;

/// Per-entry bookkeeping counted against the byte bound besides the body.
const ENTRY_OVERHEAD: usize = 256;

/// Expiry by the entry's lifetime; a live playlist is kept `live_slack` longer.
struct ByLifetime {
    live_slack: Duration,
}

impl moka::Expiry<CacheKey, Arc<CachedObject>> for ByLifetime {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedObject>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // Slack so an entry is still there for the request that finds it just expired; a live
        // playlist is kept past its bound for as long as an origin outage may be served from it
        // (`cache.live_outage_max`), and a minute more of 503s after that.
        let slack = if value.class == ObjectClass::LiveMedia {
            self.live_slack
        } else {
            Duration::from_secs(1)
        };
        Some(value.lifetime.total().saturating_add(slack))
    }

    fn expire_after_update(
        &self,
        key: &CacheKey,
        value: &Arc<CachedObject>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

/// What an entry counts against the byte bound.
fn weight(key: &CacheKey, value: &CachedObject) -> usize {
    value.body.len() + key.0.len() + ENTRY_OVERHEAD
}

/// See the module docs.
#[derive(Clone)]
pub struct ObjectCache {
    inner: Cache<CacheKey, Arc<CachedObject>>,
    max_bytes: u64,
}

impl std::fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCache")
            .field("max_bytes", &self.max_bytes)
            .field("weighted_size", &self.inner.weighted_size())
            .finish()
    }
}

impl ObjectCache {
    /// A cache of at most `max_bytes` that keeps live playlists `live_outage_max` (and a minute)
    /// past their stale bound.
    pub fn new(max_bytes: u64, live_outage_max: Duration) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_bytes)
            // Live streams make new objects the most wanted: plain LRU never refuses them, where
            // TinyLFU admission could turn away the newest segment.
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &CacheKey, value: &Arc<CachedObject>| {
                u32::try_from(weight(key, value)).unwrap_or(u32::MAX)
            })
            .expire_after(ByLifetime {
                live_slack: live_outage_max.saturating_add(Duration::from_secs(60)),
            })
            .build();
        Self { inner, max_bytes }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedObject>> {
        self.inner.get(key).await
    }

    /// Keeps `value` unless it alone outweighs the whole bound: moka would admit it, evict
    /// everything else to make room, serve it until its next maintenance and then drop it too.
    pub async fn insert(&self, key: CacheKey, value: Arc<CachedObject>) {
        if weight(&key, &value) as u64 > self.max_bytes {
            return;
        }
        self.inner.insert(key, value).await;
    }

    /// Drops `key`'s entry, if any.
    pub async fn invalidate(&self, key: &CacheKey) {
        self.inner.invalidate(key).await;
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes held, after moka has applied pending evictions.
    pub async fn weighted_size(&self) -> u64 {
        self.inner.run_pending_tasks().await;
        self.inner.weighted_size()
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }
}
