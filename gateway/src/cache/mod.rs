//! The object cache: moka, bounded by body bytes, each entry kept for its class lifetime.
//!
//! Freshness is judged by the gateway's [`Clock`](crate::clock::Clock) (see [`policy`]); moka's own
//! expiry only bounds how long an entry may be kept at all, in real time.

pub mod policy;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CONTENT_TYPE, ETAG,
    LAST_MODIFIED, LOCATION,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use moka::future::Cache;
use moka::policy::EvictionPolicy;

use self::policy::{Lifetime, State};
use crate::hls::{ObjectClass, PlaylistInfo};
use crate::http::path::CacheKey;

/// SHA-256 of an object's body.
pub type Digest = [u8; 32];

/// Per-entry bookkeeping counted against the byte bound besides the body.
const ENTRY_OVERHEAD: usize = 256;

/// One cached answer from the origin (a success or a briefly cached error).
#[derive(Debug)]
pub struct CachedObject {
    pub status: StatusCode,
    pub class: ObjectClass,
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
    pub etag: HeaderValue,
    pub last_modified: Option<HeaderValue>,
    /// Headers passed through for non-2xx answers (e.g. `Location`, `Retry-After`).
    pub location: Option<HeaderValue>,
    /// When the object was generated, by the gateway clock (stored time minus the origin's `Age`).
    pub stored_at: Instant,
    pub lifetime: Lifetime,
    /// SHA-256 of the body, for media objects (segments, init sections, parts).
    pub digest: Option<Digest>,
    pub playlist: Option<PlaylistInfo>,
    /// `last_modified`, parsed once.
    pub last_modified_at: Option<SystemTime>,
    /// The response headers that are the same for every answer (CORS, validators, type), built once
    /// when the object is stored; each answer adds `Age`, `Cache-Control`, `X-Cache` and the length.
    pub headers: HeaderMap,
}

/// Headers a browser player may read besides the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str = "Age, Content-Length, Content-Range, ETag, X-Cache";

/// The per-object part of every answer's headers (see [`CachedObject::headers`]).
pub fn fixed_headers(
    status: StatusCode,
    content_type: Option<&HeaderValue>,
    etag: &HeaderValue,
    last_modified: Option<&HeaderValue>,
    location: Option<&HeaderValue>,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(12);
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    h.insert(ETAG, etag.clone());
    if let Some(v) = content_type {
        h.insert(CONTENT_TYPE, v.clone());
    }
    if let Some(v) = last_modified {
        h.insert(LAST_MODIFIED, v.clone());
    }
    if let Some(v) = location {
        h.insert(LOCATION, v.clone());
    }
    if status.is_success() {
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    h
}

impl CachedObject {
    pub fn state(&self, now: Instant) -> State {
        policy::state(self.stored_at, self.lifetime, now)
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// Target duration, for media playlists.
    pub fn target_duration(&self) -> Option<Duration> {
        self.playlist.as_ref().and_then(|p| p.target_duration)
    }
}

struct ByLifetime;

impl moka::Expiry<CacheKey, Arc<CachedObject>> for ByLifetime {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedObject>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // Slack so an entry is still there for the request that finds it just expired; a live
        // playlist is kept a minute past its bound so an origin outage keeps answering 503.
        let slack = if value.class == ObjectClass::LiveMedia {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(1)
        };
        Some(value.lifetime.total() + slack)
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
    pub fn new(max_bytes: u64) -> Self {
        let inner = Cache::builder()
            .max_capacity(max_bytes)
            // Live streams make new objects the most wanted: plain LRU never refuses them, where
            // TinyLFU admission could turn away the newest segment.
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &CacheKey, value: &Arc<CachedObject>| {
                let weight = value.body.len() + key.0.len() + ENTRY_OVERHEAD;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(ByLifetime)
            .build();
        Self { inner, max_bytes }
    }

    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedObject>> {
        self.inner.get(key).await
    }

    pub async fn insert(&self, key: CacheKey, value: Arc<CachedObject>) {
        self.inner.insert(key, value).await;
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
