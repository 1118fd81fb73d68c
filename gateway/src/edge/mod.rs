//! The edge cache in motion: look objects up, fetch misses from the origin exactly once however many
//! viewers ask, refresh stale playlists in the background, and learn from playlists what the objects
//! they name are.
//!
//! A fetch runs in a task of its own, so a viewer that goes away neither cancels nor restarts it. Every
//! viewer waiting for the same key holds a clone of one shared future and is woken when the task ends;
//! a media body is also published as it arrives ([`crate::origin::arriving`]), so those viewers may
//! stream it at the origin's pace instead.

pub mod blocking;
pub mod followed;
pub mod follower;
pub mod in_flight;
pub mod restart;
pub mod schedule;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{AGE, CACHE_CONTROL, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use http::HeaderValue;
use sha2::{Digest as _, Sha256};

use self::followed::FollowedRenditions;
use crate::cache::policy::{self, CacheControl, State};
use crate::cache::CacheKey;
use crate::cache::{CachedObject, Digest, ObjectCache};
use crate::clock::Clock;
use crate::config::{CacheConfig, FollowerConfig};
use crate::error::FetchError;
use crate::hls::{self, LiveShape, ObjectClass, PlaylistInfo};
use crate::metrics::Metrics;
use crate::origin::{OriginClient, OriginResponse};
use peer_assist::hls::{ByteRange, ParseError};

use self::in_flight::InFlight;
pub use self::in_flight::{FetchResult, Joined, SharedFetch};
use crate::origin::arriving::{OpenedHead, Tap};

/// A media object was cached with its digest: what peers need to verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEvent {
    /// The media playlist that names the object.
    pub playlist: String,
    /// The object's path (its id in the peer protocol).
    pub id: String,
    pub digest: Digest,
    pub size: u64,
}

/// Bodies larger than this are hashed on the blocking pool rather than on a runtime worker.
const HASH_INLINE_MAX: usize = 64 * 1024;
/// Playlists larger than this are parsed on the blocking pool.
const PARSE_INLINE_MAX: usize = 64 * 1024;

/// A live segment's fetch is worthless after this many target durations: its deadline.
const LIVE_DEADLINE_TARGETS: u32 = 3;

/// What the playlists that named a path said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    pub class: ObjectClass,
    /// The target duration of the live playlist that named it, if live.
    pub live_target: Option<Duration>,
    /// The least body length its byte ranges need.
    pub min_len: Option<u64>,
}

/// An object to fetch: its cache key and how to ask the origin for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: CacheKey,
    /// Gateway (and origin) path, percent-encoded, no query.
    pub path: String,
    /// Query to send to the origin, if any.
    pub origin_query: Option<String>,
}

impl ObjectRef {
    /// A reference found in a playlist: no query.
    pub fn from_path(path: &str) -> Self {
        Self {
            key: CacheKey(path.into()),
            path: path.to_owned(),
            origin_query: None,
        }
    }
}

/// What the cache holds for a key right now.
#[derive(Debug)]
pub enum Lookup {
    Fresh(Arc<CachedObject>),
    Stale(Arc<CachedObject>),
    Expired(Arc<CachedObject>),
    Miss,
}

/// See the module docs.
pub struct Edge {
    pub cache: ObjectCache,
    pub origin: OriginClient,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    config: CacheConfig,
    /// What playlists said each path is.
    names: moka::sync::Cache<String, Named>,
    in_flight: InFlight<CacheKey>,
    /// The live renditions the follower refreshes (see [`follower`]).
    pub follower: FollowedRenditions,
    /// Media object path → the media playlist that names it.
    owners: moka::sync::Cache<String, Arc<str>>,
    digests: tokio::sync::broadcast::Sender<DigestEvent>,
    /// The origins' base URLs: an absolute URL under one of them in a playlist is a gateway path.
    bases: Arc<[String]>,
    /// Live media playlist path → what its last version named, to tell a restart of its encoder
    /// under the same names ([`restart`]). Weighed by segments.
    live_shapes: moka::sync::Cache<String, Arc<LiveShape>>,
    /// Playlists whose last origin fetch failed (an error or a 5xx), until one succeeds: their
    /// cached copy is answered with `X-Origin-Unreachable`.
    failing: moka::sync::Cache<CacheKey, ()>,
    /// Live media playlist key → a signal raised whenever a new copy of it is stored, for the
    /// blocking reloads held on it ([`blocking`]).
    stored: moka::sync::Cache<CacheKey, Arc<tokio::sync::watch::Sender<()>>>,
    /// File path → the byte ranges of it that playlists name as segments or init sections (the
    /// newest playlist's), each a segment for peers with its own digest.
    ranges: moka::sync::Cache<String, Arc<[ByteRange]>>,
    /// (digest of the whole file, range) → digest of that range, so a join does not hash a
    /// whole VOD file again. Keyed by the file's digest: a new body never reuses an old answer.
    range_digests: moka::sync::Cache<(Digest, ByteRange), Digest>,
}

/// The digest of one byte range of a cached file, named by its segment id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDigest {
    pub id: String,
    pub digest: Digest,
    pub size: u64,
}

/// Segments of all live playlist shapes kept at once.
const LIVE_SHAPES_MAX_SEGMENTS: u64 = 1_000_000;
/// Playlists remembered as failing at once.
const FAILING_MAX: u64 = 10_000;
/// Live playlists with blocking reloads held on them at once.
const HELD_PLAYLISTS_MAX: u64 = 10_000;

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Edge {
    pub fn new(
        cache_config: CacheConfig,
        follower_config: FollowerConfig,
        origin: OriginClient,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let follower =
            FollowedRenditions::new(follower_config, metrics.followed_renditions.clone());
        let bases = origin.bases().map(str::to_owned).collect();
        let in_flight = InFlight::new(metrics.in_flight_fetches.clone());
        Arc::new(Self {
            bases,
            cache: ObjectCache::new(cache_config.max_bytes, cache_config.live_outage_max),
            live_shapes: moka::sync::Cache::builder()
                .max_capacity(LIVE_SHAPES_MAX_SEGMENTS)
                .weigher(|_: &String, shape: &Arc<LiveShape>| {
                    u32::try_from(shape.segments.len().saturating_add(1)).unwrap_or(u32::MAX)
                })
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            failing: moka::sync::Cache::builder()
                .max_capacity(FAILING_MAX)
                .time_to_live(
                    cache_config
                        .live_outage_max
                        .saturating_add(Duration::from_secs(60)),
                )
                .build(),
            stored: moka::sync::Cache::builder()
                .max_capacity(HELD_PLAYLISTS_MAX)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            origin,
            metrics,
            clock,
            config: cache_config,
            names: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            in_flight,
            follower,
            owners: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            digests: tokio::sync::broadcast::channel(4096).0,
            ranges: moka::sync::Cache::builder()
                .max_capacity(20_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            range_digests: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        })
    }

    /// Whether an object belongs to a live stream (`None`: not known): a playlist by its class, a
    /// media object by the playlists that named it.
    pub fn liveness(&self, path: &str, class: ObjectClass) -> Option<bool> {
        match class {
            ObjectClass::LiveMedia => Some(true),
            ObjectClass::VodMedia => Some(false),
            _ => self.names.get(path).map(|n| n.live_target.is_some()),
        }
    }

    /// The class of a path before its body is seen: from the playlists that named it, else its name.
    pub fn class_hint(&self, path: &str) -> ObjectClass {
        self.names
            .get(path)
            .map_or_else(|| hls::class_from_name(path), |n| n.class)
    }

    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        let Some(object) = self.cache.get(key).await else {
            return Lookup::Miss;
        };
        let now = self.clock.now();
        match object.state(now) {
            State::Fresh => Lookup::Fresh(object),
            // A followed live playlist is as fresh as the follower keeps it: it reloads when the
            // next segment is due, and viewers get what it last saw.
            // (Not one the origin wants revalidated at every reuse: that has its own interval.)
            _ if object.class == ObjectClass::LiveMedia
                && object.is_success()
                && !object.revalidate
                && self.follower.keeps_fresh(
                    key,
                    object.age(now),
                    object.target_duration().unwrap_or(Duration::from_secs(2)),
                ) =>
            {
                Lookup::Fresh(object)
            }
            State::Stale => Lookup::Stale(object),
            State::Expired => Lookup::Expired(object),
        }
    }

    /// Joins the fetch of `object` in progress, or starts one. The second value is true when this call
    /// started it.
    pub fn fetch(self: &Arc<Self>, object: &ObjectRef) -> (Joined, bool) {
        self.in_flight.join_or_start(&object.key, |tap| {
            Arc::clone(self).run_fetch(object.clone(), Some(tap), false)
        })
    }

    /// [`Edge::fetch`] from the origin even when the cache holds a fresh copy: the live follower's
    /// reload (it is what keeps the copy fresh).
    pub fn reload(self: &Arc<Self>, object: &ObjectRef) -> (Joined, bool) {
        self.in_flight.join_or_start(&object.key, |tap| {
            Arc::clone(self).run_fetch(object.clone(), Some(tap), true)
        })
    }

    /// Fetches `object` for this caller alone, outside the in-flight map (an answer that depends on
    /// the caller's credentials must not be shared).
    pub async fn fetch_alone(self: &Arc<Self>, object: &ObjectRef) -> FetchResult {
        Arc::clone(self)
            .run_fetch(object.clone(), None, false)
            .await
    }

    /// Starts a background refresh of `object` unless one is running. Nobody waits for it.
    pub fn refresh(self: &Arc<Self>, object: &ObjectRef) {
        let _ = self.fetch(object);
    }

    /// Makes sure `object` is cached or being fetched; returns whether an origin fetch was started.
    pub async fn prefetch(self: &Arc<Self>, object: &ObjectRef) -> bool {
        match self.lookup(&object.key).await {
            Lookup::Fresh(_) | Lookup::Stale(_) => false,
            Lookup::Expired(_) | Lookup::Miss => {
                let (_, started) = self.fetch(object);
                if started {
                    self.metrics.prefetches.inc();
                }
                started
            }
        }
    }

    /// Whether the last origin fetch of `key` (a playlist) failed and none succeeded since.
    pub fn origin_failing(&self, key: &CacheKey) -> bool {
        self.failing.contains_key(key)
    }

    /// How long past its stale bound a live playlist is served while its origin fails.
    pub fn live_outage_max(&self) -> Duration {
        self.config.live_outage_max
    }

    /// Notes how an origin fetch of a playlist ended (`failed`: an error or a 5xx).
    fn note_playlist_fetch(&self, key: &CacheKey, hint: ObjectClass, failed: bool) {
        if !hint.is_playlist() {
            return;
        }
        if failed {
            self.failing.insert(key.clone(), ());
        } else {
            self.failing.invalidate(key);
        }
    }

    /// Digest events of media objects as they are cached (for the peer-assist tracker).
    pub fn subscribe_digests(&self) -> tokio::sync::broadcast::Receiver<DigestEvent> {
        self.digests.subscribe()
    }

    /// A receiver woken whenever a new copy of the live playlist `key` is stored: what a blocking
    /// reload held on it waits for.
    pub fn watch_stored(&self, key: &CacheKey) -> tokio::sync::watch::Receiver<()> {
        self.stored
            .get_with_by_ref(key, || Arc::new(tokio::sync::watch::channel(()).0))
            .subscribe()
    }

    /// Number of origin fetches in progress.
    pub fn fetches_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The fetch task: `tap` (when given) publishes a media body to waiters as it arrives and is
    /// finished with what the waiters of a complete answer must see. With `force`, the origin is
    /// asked even when the cache holds a fresh copy.
    async fn run_fetch(
        self: Arc<Self>,
        object: ObjectRef,
        tap: Option<Tap>,
        force: bool,
    ) -> FetchResult {
        // Another fetch may have completed between the caller's lookup and this task.
        if !force {
            if let Lookup::Fresh(cached) = self.lookup(&object.key).await {
                return Ok(cached);
            }
        }
        let hint = self.class_hint(&object.path);
        // Only media bodies are streamed: playlists are parsed and rewritten first.
        let mut tap = tap.filter(|_| hint.is_media());
        let result = self.fetch_from_origin(&object, hint, tap.as_mut()).await;
        if let Some(tap) = tap {
            tap.finish(match &result {
                Ok(built) => Ok(built.body.clone()),
                Err(e) => Err(e.clone()),
            });
        }
        result
    }

    async fn fetch_from_origin(
        self: &Arc<Self>,
        object: &ObjectRef,
        hint: ObjectClass,
        tap: Option<&mut Tap>,
    ) -> FetchResult {
        let target = match &object.origin_query {
            Some(q) => format!("{}?{}", object.path, q),
            None => object.path.clone(),
        };
        let named = self.names.get(&object.path);
        let min_len = named.and_then(|n| n.min_len);
        let mut tap = tap;
        if let Some(tap) = tap.as_deref_mut() {
            tap.expect_at_least(min_len.unwrap_or(1));
        }
        // One deadline for the whole fetch; a live segment's is a few target durations.
        let limit = named
            .and_then(|n| n.live_target)
            .filter(|_| hint.is_media())
            .map(|t| t.saturating_mul(LIVE_DEADLINE_TARGETS));
        // A cached playlist is revalidated conditionally: a 304 refreshes it without a body.
        let previous = match hint.is_playlist() {
            true => self
                .cache
                .get(&object.key)
                .await
                .filter(|o| o.is_success() && o.playlist.is_some()),
            false => None,
        };
        let conditions = previous
            .as_deref()
            .map(CachedObject::validators)
            .unwrap_or_default();
        let started = Instant::now();
        let result = self
            .origin
            .get_conditional(&target, limit, tap, &conditions)
            .await;
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(path = %object.path, error = %e, "origin fetch failed");
                self.metrics.origin_request(hint, e.outcome());
                self.note_playlist_fetch(&object.key, hint, true);
                return Err(e);
            }
        };
        if response.status == http::StatusCode::NOT_MODIFIED {
            let Some(previous) = previous.filter(|_| !conditions.is_empty()) else {
                self.metrics.origin_request(hint, "redirect");
                return Err(FetchError::Redirect(
                    "304 Not Modified to a request without validators".into(),
                ));
            };
            let refreshed = Arc::new(self.revalidated(&previous, &response.headers));
            self.metrics.origin_request(refreshed.class, "not_modified");
            self.metrics.revalidation(true);
            self.note_playlist_fetch(&object.key, hint, false);
            self.store(object, Arc::clone(&refreshed)).await;
            return Ok(refreshed);
        }
        if !conditions.is_empty() && response.status.is_success() {
            self.metrics.revalidation(false);
        }
        let body_len = response.body.len();
        let (built, shape) = match self.build(object, hint, min_len, response).await {
            Ok((built, shape)) => (Arc::new(built), shape),
            Err(e) => {
                tracing::warn!(path = %object.path, error = %e, "origin answer refused");
                self.metrics.origin_request(hint, e.outcome());
                self.note_playlist_fetch(&object.key, hint, true);
                return Err(e);
            }
        };
        self.note_playlist_fetch(&object.key, hint, built.status.is_server_error());
        let outcome = if built.status.is_success() {
            "ok"
        } else if built.status.is_client_error() {
            "http_4xx"
        } else {
            "http_error"
        };
        self.metrics.origin_request(built.class, outcome);
        self.metrics
            .origin_fetch(built.class, started.elapsed().as_secs_f64(), body_len);
        if built.is_success() {
            if let Some(info) = &built.playlist {
                self.learn(object, info, shape).await;
            }
        }
        self.store(object, Arc::clone(&built)).await;
        if let (Some(digest), Some(playlist)) = (built.digest, self.owners.get(&object.path)) {
            let ranged = self.range_digests_of(&object.path, &built).await;
            if ranged.is_empty() {
                let _ = self.digests.send(DigestEvent {
                    playlist: playlist.to_string(),
                    id: object.path.clone(),
                    digest,
                    size: built.body.len() as u64,
                });
            }
            for r in ranged {
                let _ = self.digests.send(DigestEvent {
                    playlist: playlist.to_string(),
                    id: r.id,
                    digest: r.digest,
                    size: r.size,
                });
            }
        }
        Ok(built)
    }

    /// The headers of an answer streamed while its body arrives (`head` is the origin's): what the
    /// cached object's answers will say, except the validator the gateway derives from the digest
    /// (not known yet; the origin's `ETag` is passed on when it sent one) and the length when the
    /// origin did not declare it. Adds `Age` and `Cache-Control`; the caller adds `X-Cache`.
    pub fn arriving_headers(
        &self,
        path: &str,
        class: ObjectClass,
        head: &OpenedHead,
    ) -> http::HeaderMap {
        let header = |name| {
            head.headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let cc = header(CACHE_CONTROL)
            .map(CacheControl::parse)
            .unwrap_or_default();
        let lifetime = policy::lifetime(class, None, &cc, &self.config);
        let content_type = hls::content_type(path, class)
            .map(HeaderValue::from_static)
            .or_else(|| head.headers.get(CONTENT_TYPE).cloned());
        let mut headers = crate::cache::object::fixed_headers(
            head.status,
            content_type.as_ref(),
            origin_etag(&head.headers).as_ref(),
            head.headers.get(LAST_MODIFIED),
        );
        let age = lifetime.map_or(Duration::ZERO, |l| origin_age(&head.headers).min(l.total()));
        headers.insert(AGE, HeaderValue::from(age.as_secs()));
        let cache_control = match lifetime.filter(|l| !l.total().is_zero()) {
            Some(l) => HeaderValue::from_str(&format!(
                "public, max-age={}",
                l.fresh.saturating_sub(age).as_secs()
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("no-store")),
            None => HeaderValue::from_static("no-store"),
        };
        headers.insert(CACHE_CONTROL, cache_control);
        headers
    }

    /// `previous` confirmed by the origin's `304 Not Modified` (`headers`): the same body and
    /// validators, fresh again from now (less the origin's `Age`), with the lifetime its
    /// `Cache-Control` gives when it sent one (RFC 9111 §4.3.4).
    fn revalidated(&self, previous: &CachedObject, headers: &http::HeaderMap) -> CachedObject {
        let now = self.clock.now();
        let cc = headers
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(CacheControl::parse);
        let (lifetime, revalidate) = match cc {
            Some(cc) => (
                policy::lifetime(
                    previous.class,
                    previous.target_duration(),
                    &cc,
                    &self.config,
                )
                .unwrap_or(previous.lifetime),
                policy::must_revalidate(previous.class, &cc, &self.config),
            ),
            None => (previous.lifetime, previous.revalidate),
        };
        let age = origin_age(headers).min(lifetime.total());
        CachedObject {
            status: previous.status,
            class: previous.class,
            body: previous.body.clone(),
            content_type: previous.content_type.clone(),
            etag: previous.etag.clone(),
            etag_from_origin: previous.etag_from_origin,
            last_modified: previous.last_modified.clone(),
            stored_at: now.checked_sub(age).unwrap_or(now),
            lifetime,
            revalidate,
            digest: previous.digest,
            playlist: previous.playlist.clone(),
            last_modified_at: previous.last_modified_at,
            headers: previous.headers.clone(),
        }
    }

    /// Turns an origin answer into a cache entry (not yet stored), with the shape of a live media
    /// playlist; a playlist over the parser's limits is the origin's error.
    async fn build(
        &self,
        object: &ObjectRef,
        hint: ObjectClass,
        min_len: Option<u64>,
        response: OriginResponse,
    ) -> Result<(CachedObject, Option<LiveShape>), FetchError> {
        let now = self.clock.now();
        let OriginResponse {
            status,
            headers,
            body,
            // The body stays counted against the fetch budget until it is built (and stored).
            reservation: _counted,
            ..
        } = response;
        // Kept for as long as the entry lives: never as views into the origin client's buffers.
        let (headers, body) = (owned_headers(&headers), owned_body(body));
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let origin_type = headers.get(CONTENT_TYPE).cloned();
        let looks_like_playlist = hint.is_playlist()
            || header(CONTENT_TYPE).is_some_and(|t| t.to_ascii_lowercase().contains("mpegurl"))
            || body.starts_with(b"#EXTM3U");
        let (playlist, shape, body) = if status.is_success() && looks_like_playlist {
            self.parse_playlist(&object.path, body).await?
        } else {
            (None, None, body)
        };
        let class = match &playlist {
            Some(info) => info.class,
            None if hint.is_playlist() => ObjectClass::Other,
            None => hint,
        };
        // An empty 200 for a media object, or one shorter than its byte ranges, is no object.
        if status == http::StatusCode::OK && class.is_media() {
            let got = body.len() as u64;
            let expected = min_len.unwrap_or(1).max(1);
            if got < expected {
                return Err(FetchError::ShortBody { expected, got });
            }
        }
        let cc = header(CACHE_CONTROL)
            .map(CacheControl::parse)
            .unwrap_or_default();
        let lifetime = if status.is_success() {
            policy::lifetime(
                class,
                playlist.as_ref().and_then(|p| p.target_duration),
                &cc,
                &self.config,
            )
        } else if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN
        {
            // The answer to one viewer's credentials: never shared through the cache.
            None
        } else if self.may_cache_error(object, class) {
            policy::error_lifetime(&self.config, &cc)
        } else {
            None
        };
        let lifetime = lifetime.unwrap_or(policy::Lifetime {
            fresh: Duration::ZERO,
            stale: Duration::ZERO,
        });
        let revalidate = status.is_success() && policy::must_revalidate(class, &cc, &self.config);
        let digest = self.digest(&body).await;
        let from_origin = origin_etag(&headers);
        let etag_from_origin = from_origin.is_some();
        let etag = from_origin.unwrap_or_else(|| etag_from(&digest));
        let origin_age = origin_age(&headers).min(lifetime.total());
        let content_type = hls::content_type(&object.path, class)
            .map(HeaderValue::from_static)
            .or(origin_type);
        let last_modified = headers.get(LAST_MODIFIED).cloned();
        let fixed = crate::cache::object::fixed_headers(
            status,
            content_type.as_ref(),
            Some(&etag),
            last_modified.as_ref(),
        );
        let built = CachedObject {
            status,
            class,
            headers: fixed,
            last_modified_at: last_modified
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            content_type,
            etag,
            etag_from_origin,
            last_modified,
            stored_at: now.checked_sub(origin_age).unwrap_or(now),
            lifetime,
            revalidate,
            digest: (class.is_media() && status.is_success()).then_some(digest),
            playlist,
            body,
        };
        Ok((built, shape))
    }

    /// Parses a playlist body (on the blocking pool when it is large, so a huge playlist never
    /// holds a runtime worker) and makes absolute URLs at the origins root-relative. A body that
    /// is not a playlist after all comes back as it is, without info.
    async fn parse_playlist(
        &self,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<(Option<PlaylistInfo>, Option<LiveShape>, bytes::Bytes), FetchError> {
        let bases = Arc::clone(&self.bases);
        let path = path.to_owned();
        let large = body.len() > PARSE_INLINE_MAX;
        let work = move || {
            let bases: Vec<&str> = bases.iter().map(String::as_str).collect();
            let (info, shape) = match hls::parse_playlist_shaped(&path, &body, &bases) {
                Ok(parsed) => parsed,
                Err(ParseError::NotAPlaylist) => return Ok((None, None, body)),
                Err(e) => return Err(FetchError::Playlist(e)),
            };
            let absolute = body.windows(3).any(|w| w == b"://");
            let body = match absolute
                .then(|| hls::rebase_playlist(&body, &bases))
                .flatten()
            {
                Some(rebased) => bytes::Bytes::from(rebased),
                None => body,
            };
            Ok((Some(info), shape, body))
        };
        if !large {
            return work();
        }
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(e) => Err(FetchError::Internal(format!("playlist parse task: {e}"))),
        }
    }

    /// Errors are cached (briefly) only for objects known to exist in a playlist, or playlists: a 404 for
    /// a segment beyond the live edge, or a blocking LL-HLS request, must not stick.
    fn may_cache_error(&self, object: &ObjectRef, class: ObjectClass) -> bool {
        if object.key.0.contains("_HLS_") {
            return false;
        }
        match class {
            ObjectClass::Segment | ObjectClass::Init => self.names.contains_key(&object.path),
            // A part is named (a preload hint) before it exists: an early 404 must not stick.
            ObjectClass::Part => false,
            _ => true,
        }
    }

    /// The digests of the byte ranges of `file` (cached at `path`) that playlists name as
    /// segments or init sections, in playlist order; empty when none do. Ranges past the end of
    /// the body are left out, and so is everything past twice the body's length in all (ranges
    /// that overlap over and over are an origin's mistake, not work for the gateway).
    pub async fn range_digests_of(&self, path: &str, file: &CachedObject) -> Vec<RangeDigest> {
        let (Some(whole), Some(ranges)) = (file.digest, self.ranges.get(path)) else {
            return Vec::new();
        };
        let len = file.body.len() as u64;
        let mut budget = len.saturating_mul(2);
        let mut seen = std::collections::HashSet::new();
        let mut wanted = Vec::new();
        for &range in ranges.iter() {
            if range.end() > len || range.length > budget || !seen.insert(range) {
                continue;
            }
            budget -= range.length;
            wanted.push(range);
        }
        let missing: Vec<ByteRange> = wanted
            .iter()
            .filter(|r| !self.range_digests.contains_key(&(whole, **r)))
            .copied()
            .collect();
        let to_hash: u64 = missing.iter().map(|r| r.length).sum();
        if !missing.is_empty() {
            let body = file.body.clone();
            let hash = move || -> Vec<(ByteRange, Digest)> {
                missing
                    .into_iter()
                    .map(|r| {
                        // In bounds: every range ends within the body (checked above).
                        let slice = body.slice(r.offset as usize..r.end() as usize);
                        (r, Sha256::digest(&slice).into())
                    })
                    .collect()
            };
            let hashed = if to_hash <= HASH_INLINE_MAX as u64 {
                hash()
            } else {
                tokio::task::spawn_blocking(hash).await.unwrap_or_default()
            };
            for (range, digest) in hashed {
                self.range_digests.insert((whole, range), digest);
            }
        }
        wanted
            .into_iter()
            .filter_map(|range| {
                let digest = self.range_digests.get(&(whole, range))?;
                Some(RangeDigest {
                    id: peer_assist::hls::range_id(path, range)?,
                    digest,
                    size: range.length,
                })
            })
            .collect()
    }

    async fn digest(&self, body: &bytes::Bytes) -> Digest {
        let started = Instant::now();
        let digest = if body.len() <= HASH_INLINE_MAX {
            Sha256::digest(body).into()
        } else {
            let owned = body.clone();
            match tokio::task::spawn_blocking(move || Sha256::digest(&owned).into()).await {
                Ok(d) => d,
                Err(_) => Sha256::digest(body).into(),
            }
        };
        self.metrics
            .digest_seconds
            .observe(started.elapsed().as_secs_f64());
        digest
    }

    async fn store(&self, object: &ObjectRef, built: Arc<CachedObject>) {
        if built.lifetime.total().is_zero() {
            return;
        }
        if !built.is_success() {
            if let Some(existing) = self.cache.get(&object.key).await {
                // Stale-if-error: an origin error never replaces a good object that may still be
                // served. Nor does a 5xx replace a live playlist past its bound: that one is kept so
                // viewers keep getting a 503 with Retry-After while the origin is down.
                let servable = existing.state(self.clock.now()) != State::Expired;
                let live_outage =
                    existing.class == ObjectClass::LiveMedia && built.status.is_server_error();
                if existing.is_success() && (servable || live_outage) {
                    return;
                }
            }
        }
        let live = built.class == ObjectClass::LiveMedia && built.is_success();
        self.cache.insert(object.key.clone(), built).await;
        if live {
            if let Some(signal) = self.stored.get(&object.key) {
                signal.send_replace(());
            }
        }
    }

    /// Records what a playlist names and hands live playlists to the follower; a live playlist
    /// whose encoder restarted under the same names first loses what it named ([`restart`]).
    async fn learn(
        self: &Arc<Self>,
        object: &ObjectRef,
        info: &PlaylistInfo,
        shape: Option<LiveShape>,
    ) {
        if let Some(shape) = shape {
            let shape = Arc::new(shape);
            if let Some(old) = self.live_shapes.get(&object.path) {
                if let Some(reason) = restart::detect(&old, &shape) {
                    self.restarted(object, &old, info, reason).await;
                }
            }
            self.live_shapes.insert(object.path.clone(), shape);
        }
        let media_playlist = matches!(info.class, ObjectClass::LiveMedia | ObjectClass::VodMedia);
        let owner: Arc<str> = object.path.as_str().into();
        let live_target = info
            .target_duration
            .filter(|_| info.class == ObjectClass::LiveMedia);
        for reference in &info.references {
            if media_playlist && reference.class.is_media() {
                self.owners
                    .insert(reference.path.clone(), Arc::clone(&owner));
                if !reference.ranges.is_empty() {
                    self.ranges
                        .insert(reference.path.clone(), reference.ranges.as_slice().into());
                }
            }
            let known = self.names.get(&reference.path).map(|n| n.class);
            if known.is_none_or(|k| k == ObjectClass::Playlist || k == reference.class) {
                let named = Named {
                    class: reference.class,
                    live_target: live_target.filter(|_| reference.class.is_media()),
                    min_len: reference.min_len,
                };
                self.names.insert(reference.path.clone(), named);
            }
        }
        if info.class == ObjectClass::LiveMedia {
            for reference in self.follower.new_references(&object.key, info) {
                let target = ObjectRef::from_path(&reference.path);
                self.prefetch(&target).await;
            }
        }
    }
}

impl Edge {
    /// The live playlist `object` restarted (`reason`): drops every cached object its new version
    /// names, that its previous version (`old`) named, and that it named before (as far as `owners`
    /// remembers), so none of the previous run's bytes is served, or its digest published, under
    /// a reused name. The follower prefetches the new window as if it were the first.
    async fn restarted(
        &self,
        object: &ObjectRef,
        old: &LiveShape,
        info: &PlaylistInfo,
        reason: restart::Restart,
    ) {
        let mut names = restart::invalidations(old, info);
        let owner = object.path.as_str();
        names.extend(
            self.owners
                .iter()
                .filter(|(_, o)| &**o == owner)
                .map(|(path, _)| path.as_ref().clone()),
        );
        names.sort_unstable();
        names.dedup();
        let mut dropped = 0u64;
        for name in &names {
            let key = CacheKey(name.as_str().into());
            if self.cache.get(&key).await.is_some() {
                dropped += 1;
                self.cache.invalidate(&key).await;
            }
        }
        self.metrics.live_restarts.inc();
        self.metrics.restart_invalidated.inc_by(dropped);
        self.follower.restarted(&object.key);
        tracing::warn!(
            playlist = %object.path,
            reason = reason.label(),
            dropped,
            "live playlist restarted under reused names; dropped what it named"
        );
    }
}

/// The origin's `ETag`, if it is a well-formed one (strong or weak, quoted).
fn origin_etag(headers: &http::HeaderMap) -> Option<HeaderValue> {
    headers
        .get(ETAG)
        .filter(|v| v.as_bytes().first() == Some(&b'"') || v.as_bytes().starts_with(b"W/\""))
        .cloned()
}

/// The origin's `Age`, zero when absent or unreadable.
fn origin_age(headers: &http::HeaderMap) -> Duration {
    headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// Bodies up to this size are copied out of the buffer they arrived in (see [`owned_body`]).
const COPY_BODY_MAX: usize = 64 * 1024;

/// `headers` with every value in an allocation of its own. hyper parses header values as views into
/// its read buffer, so a cached entry holding one kept that whole buffer (8 KiB or more) alive: 100,000
/// cached 404s for distinct playlist URLs held ~450 MB that the cache weighed at a few hundred bytes
/// each, and RSS kept growing from flood to flood.
fn owned_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut owned = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.append(name.clone(), copy);
    }
    owned
}

/// A small body copied out of the (possibly much larger) buffer it may be a view into.
fn owned_body(body: bytes::Bytes) -> bytes::Bytes {
    if body.len() <= COPY_BODY_MAX {
        bytes::Bytes::copy_from_slice(&body)
    } else {
        body
    }
}

fn etag_from(digest: &Digest) -> HeaderValue {
    let text = format!("\"{}\"", hex::encode(&digest[..16]));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod owned_tests {
    use super::*;

    /// Whether `part` lies inside `whole`'s memory.
    fn inside(part: &[u8], whole: &[u8]) -> bool {
        let range = whole.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[test]
    fn cached_headers_and_small_bodies_do_not_pin_the_read_buffer() {
        let buffer = bytes::Bytes::from(vec![b'a'; 64 * 1024 + 100]);
        let mut headers = http::HeaderMap::new();
        let value = HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap();
        assert!(
            inside(value.as_bytes(), &buffer),
            "a view, as hyper makes them"
        );
        headers.insert(CONTENT_TYPE, value);
        let owned = owned_headers(&headers);
        let copied = owned.get(CONTENT_TYPE).unwrap();
        assert_eq!(copied.as_bytes(), b"aaaaaaaaaa");
        assert!(!inside(copied.as_bytes(), &buffer));

        let small = owned_body(buffer.slice(0..100));
        assert_eq!(small.len(), 100);
        assert!(!inside(&small, &buffer));
        let large = owned_body(buffer.slice(0..COPY_BODY_MAX + 1));
        assert!(inside(&large, &buffer), "large bodies are kept as they are");
    }
}
