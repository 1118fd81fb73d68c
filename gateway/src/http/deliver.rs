//! Answering a request from the cache: find the object (a hit, a stale answer while one background
//! fetch revalidates it, or the one shared origin fetch), then build the answer with `Age`,
//! `Cache-Control`, `X-Cache`, validators (304), a single byte range (206/416) and HEAD.
//!
//! A plain GET of a media object whose fetch is under way is answered as the body arrives: the
//! answer starts with the origin's first bytes and ends with an error (an aborted connection or
//! stream) if the fetch fails midway. HEAD, ranges and conditional requests wait for the whole
//! object, which they need.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ACCESS_CONTROL_EXPOSE_HEADERS, AGE, CACHE_CONTROL, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, IF_MODIFIED_SINCE, IF_NONE_MATCH, RANGE, RETRY_AFTER,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};

use crate::auth::gate::Granted;
use crate::cache::key::{self, CacheKey, DEFAULT_DROPPED_PARAMS};
use crate::cache::object::EXPOSED_HEADERS;
use crate::cache::{policy, CachePhase, CachedObject};
use crate::edge::blocking::{self, DirectiveError, Verdict, Want};
use crate::edge::followed::{follow_path, Touch};
use crate::edge::follower;
use crate::edge::{Edge, FetchResult, Lookup, ObjectRef};
use crate::error::FetchError;
use crate::hls::ObjectClass;
use crate::http::cmcd;
use crate::http::path::CleanTarget;
use crate::http::range::{self, RangeAnswer};
use crate::http::response::{error_response, Body, BodyError};
use crate::http::send_rate::SendRate;
use crate::origin::arriving::{self, Arrivals, OpenedHead, Reader};
use sha2::Digest as _;

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// On a live playlist answered from the last copy because the origin cannot replace it.
pub static X_ORIGIN_UNREACHABLE: HeaderName = HeaderName::from_static("x-origin-unreachable");

/// How a request may be answered, once the gate let it through.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The token that granted it, if the path is protected.
    pub granted: Option<&'a Granted>,
    /// The gateway checks tokens itself: its `token` parameter is not the origin's business.
    pub gated: bool,
    /// The viewer's address (for per-client limits), if known.
    pub client: Option<std::net::IpAddr>,
}

/// Answers a GET or HEAD for an object (a target that passed [`path::normalize`]): from the cache,
/// or from the origin through it.
pub async fn deliver<B>(
    edge: &Arc<Edge>,
    request: &Request<B>,
    target: CleanTarget,
    access: Access<'_>,
    settings: &cmcd::Settings,
    head: bool,
) -> Response<Body> {
    let directives = blocking::directives(target.query.as_deref());
    let client_data = settings
        .read_cmcd
        .then(|| cmcd::of_request(target.query.as_deref(), request.headers()))
        .flatten();
    let object = ObjectRef {
        key: CacheKey::new(&target, DEFAULT_DROPPED_PARAMS),
        origin_query: key::origin_query(target.query.as_deref(), access.gated),
        path: target.path,
    };
    let may_stream = !head
        && [RANGE, IF_NONE_MATCH, IF_MODIFIED_SINCE]
            .iter()
            .all(|name| !request.headers().contains_key(name));
    // Only a request with delivery directives pays for the class lookup.
    let playlist = || edge.class_hint(&object.path).is_playlist();
    let held = match directives {
        Ok(Some(want)) if playlist() => hold(edge, &object, want, access.client).await,
        Err(e) if playlist() => {
            edge.metrics.blocking_reload("bad_request");
            Some(Err(Failure::BadDirectives(e)))
        }
        _ => None,
    };
    let found = match held {
        Some(found) => found,
        None => find(edge, &object, may_stream).await,
    };
    let (mut response, class) = match found {
        Ok(Found::Arriving(opened, arrivals, phase)) => (
            arriving_answer(edge, &object.path, opened, arrivals, phase),
            edge.class_hint(&object.path),
        ),
        Ok(Found::Object(cached, phase, outage)) => {
            if cached.class == ObjectClass::LiveMedia && cached.is_success() {
                follower::touch(edge, &object, access.client);
            }
            edge.metrics.cache_result(cached.class, phase);
            // A viewer with a token in its URL gets playlists whose URIs carry it on: players do not
            // pass a playlist's query to the URIs it names. The cached body stays the origin's.
            let carried = access
                .granted
                .filter(|g| g.from_query)
                .and_then(|g| carry_token(&cached, &object.path, &g.token));
            let answered = carried.as_ref().unwrap_or(&cached);
            let mut response = respond(answered, request.headers(), edge.clock.now(), phase, head);
            if outage {
                edge.metrics.live_outage_answers.inc();
                response
                    .headers_mut()
                    .insert(X_ORIGIN_UNREACHABLE.clone(), HeaderValue::from_static("1"));
            }
            edge.metrics.request(cached.class, response.status());
            if !head {
                edge.metrics.served(cached.class, content_len(&response));
            }
            (response, cached.class)
        }
        Err(failure) => {
            let class = edge.class_hint(&object.path);
            edge.metrics.cache_result(class, CachePhase::Error);
            let response = match failure {
                Failure::LivePlaylistTooOld { retry_after } => {
                    let mut r = error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "503 Service Unavailable: the live playlist cannot be refreshed from the origin\n".into(),
                        head,
                    );
                    r.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
                    r
                }
                Failure::Fetch(e) => {
                    error_response(e.status(), format!("{} {e}\n", e.status()), head)
                }
                Failure::BadDirectives(e) => error_response(
                    StatusCode::BAD_REQUEST,
                    format!("400 Bad Request: {e}\n"),
                    head,
                ),
                Failure::HoldTimedOut => error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "503 Service Unavailable: the blocking playlist reload was not satisfied within three target durations\n".into(),
                    head,
                ),
            };
            edge.metrics.request(class, response.status());
            (response, class)
        }
    };
    // CMCD in: metrics by our own class of the object. CMSD out: what it is, and how fast this
    // connection takes what we send.
    match client_data {
        Some(Ok(data)) => edge.metrics.cmcd(class, &data),
        Some(Err(cmcd::Invalid)) => edge.metrics.cmcd_invalid.inc(),
        None => {}
    }
    if let Some(server) = &settings.cmsd {
        let etp = request
            .extensions()
            .get::<Arc<SendRate>>()
            .and_then(|rate| rate.kbps(Instant::now()));
        let headers = response.headers_mut();
        headers.insert(
            cmcd::CMSD_STATIC.clone(),
            cmcd::cmsd_static(class, &object.path, edge.liveness(&object.path, class)),
        );
        if let Some(dynamic) = server.dynamic(etp) {
            headers.insert(cmcd::CMSD_DYNAMIC.clone(), dynamic);
        }
        // Answers built here from an error lack the object headers: a player may read CMSD there
        // too.
        headers
            .entry(ACCESS_CONTROL_EXPOSE_HEADERS)
            .or_insert(HeaderValue::from_static(EXPOSED_HEADERS));
    }
    response
}

/// `cached`, a playlist at `path`, with `token` on every URI that names a gateway object; `None`
/// when it is not a playlist or names none.
fn carry_token(cached: &CachedObject, path: &str, token: &str) -> Option<CachedObject> {
    if !cached.is_success() || !cached.class.is_playlist() {
        return None;
    }
    let body = crate::hls::with_token(path, &cached.body, token)?;
    // Another body, another validator: the origin's, marked with the token's hash.
    let tag = cached.etag.to_str().unwrap_or("\"\"");
    let (weak, inner) = match tag.strip_prefix("W/") {
        Some(rest) => ("W/", rest),
        None => ("", tag),
    };
    let mark = &hex::encode(sha2::Sha256::digest(token.as_bytes()))[..12];
    let etag = HeaderValue::from_str(&format!("{weak}\"{}-{mark}\"", inner.trim_matches('"')))
        .unwrap_or_else(|_| cached.etag.clone());
    let mut headers = cached.headers.clone();
    headers.insert(http::header::ETAG, etag.clone());
    Some(CachedObject {
        status: cached.status,
        class: cached.class,
        body: Bytes::from(body),
        content_type: cached.content_type.clone(),
        etag,
        etag_from_origin: false,
        last_modified: cached.last_modified.clone(),
        stored_at: cached.stored_at,
        lifetime: cached.lifetime,
        revalidate: cached.revalidate,
        digest: None,
        playlist: None,
        last_modified_at: cached.last_modified_at,
        headers,
    })
}

/// What a request is answered with.
enum Found {
    /// An object and its phase; `true` for a live playlist answered from its last copy because the
    /// origin cannot replace it (an error, a 5xx, or no answer within a target duration): `STALE`
    /// with `X-Origin-Unreachable`.
    Object(Arc<CachedObject>, CachePhase, bool),
    /// A media body still arriving from the origin: streamed as it comes.
    Arriving(OpenedHead, Arrivals, CachePhase),
}

/// The answer to a viewer that joined a media fetch under way: the origin's bytes as they come.
fn arriving_answer(
    edge: &Arc<Edge>,
    path: &str,
    opened: OpenedHead,
    arrivals: Arrivals,
    phase: CachePhase,
) -> Response<Body> {
    let class = edge.class_hint(path);
    edge.metrics.cache_result(class, phase);
    edge.metrics.request(class, opened.status);
    edge.metrics.streamed.inc();
    let mut headers = edge.arriving_headers(path, class, &opened);
    headers.insert(X_CACHE.clone(), HeaderValue::from_static(phase.x_cache()));
    if let Some(len) = opened.declared {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    let served = edge.metrics.served_counter(class);
    let aborted = edge.metrics.streams_aborted.clone();
    let chunks = futures_util::stream::unfold(Reader::new(arrivals), move |mut reader| {
        let served = served.clone();
        let aborted = aborted.clone();
        async move {
            match reader.next().await? {
                Ok(bytes) => {
                    served.inc_by(bytes.len() as u64);
                    Some((Ok(bytes), reader))
                }
                Err(e) => {
                    aborted.inc();
                    tracing::debug!(error = %e, sent = reader.read(), "streamed answer aborted");
                    Some((Err(BodyError::from(e)), reader))
                }
            }
        }
    });
    let mut response = Response::new(Body::streamed(chunks, opened.declared));
    *response.status_mut() = opened.status;
    *response.headers_mut() = headers;
    response
}

enum Failure {
    /// The live playlist is past its stale bound and the origin cannot give a new one.
    LivePlaylistTooOld {
        retry_after: Duration,
    },
    Fetch(FetchError),
    /// LL-HLS delivery directives that are malformed or ask too far ahead (400).
    BadDirectives(DirectiveError),
    /// A blocking reload not satisfied within three target durations (503).
    HoldTimedOut,
}

/// An LL-HLS blocking playlist reload (RFC 8216bis §6.2.5.2): held until the follower's copy of
/// the playlist contains the segment or part asked for, then answered with that copy; all holders
/// of a rendition wait on the follower's one origin request for its next part. `None` when the
/// request goes its ordinary way (to the origin, coalesced by its key): the gateway has no copy of
/// the playlist yet, the rendition is not followed, its origin offers no blocking reloads, or a
/// delta update (`_HLS_skip`) is asked for, which the origin makes once it has what it names.
async fn hold(
    edge: &Arc<Edge>,
    object: &ObjectRef,
    want: Want,
    client: Option<std::net::IpAddr>,
) -> Option<Result<Found, Failure>> {
    let followed = ObjectRef::from_path(&follow_path(&object.path));
    // Watch before looking, so that no copy stored in between is missed.
    let mut stored = edge.watch_stored(&followed.key);
    // No copy yet (a rendition nobody watches, a player switching to it): the origin holds this
    // one, and answering it starts the follower.
    let mut copy = match edge.lookup(&followed.key).await {
        Lookup::Fresh(copy) | Lookup::Stale(copy) => copy,
        Lookup::Expired(_) | Lookup::Miss => return pass(edge),
    };
    if !is_live(&copy) || low_latency(&copy).is_none() {
        return pass(edge);
    }
    if !matches!(
        follower::touch(edge, &followed, client),
        Touch::Started | Touch::Renewed
    ) {
        return pass(edge);
    }
    let mut phase = CachePhase::Hit;
    let mut deadline = None;
    let _held = Held::new(&edge.metrics.blocking_held);
    loop {
        let Some(ll) = low_latency(&copy) else {
            return pass(edge);
        };
        match blocking::judge(&ll, want) {
            Verdict::Ready => break,
            Verdict::TooFar => {
                edge.metrics.blocking_reload("bad_request");
                return Some(Err(Failure::BadDirectives(DirectiveError::TooFar)));
            }
            Verdict::Wait => {}
        }
        phase = CachePhase::Coalesced;
        let deadline = *deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + blocking::hold_limit(ll.target));
        match tokio::time::timeout_at(deadline, stored.changed()).await {
            Ok(Ok(())) => {}
            // The signal was dropped (not watched for a minute): watch anew.
            Ok(Err(_)) => stored = edge.watch_stored(&followed.key),
            Err(_) => {
                edge.metrics.blocking_reload("timeout");
                return Some(Err(Failure::HoldTimedOut));
            }
        }
        if let Some(newer) = edge.cache.get(&followed.key).await.filter(|c| is_live(c)) {
            copy = newer;
        }
    }
    if want.skip {
        // The origin has what the delta update names now: it answers at once.
        return None;
    }
    edge.metrics.blocking_reload(if phase == CachePhase::Hit {
        "ready"
    } else {
        "held"
    });
    Some(Ok(Found::Object(copy, phase, false)))
}

/// A blocking reload that goes its ordinary way (to the origin, coalesced by its key).
fn pass(edge: &Edge) -> Option<Result<Found, Failure>> {
    edge.metrics.blocking_reload("passed");
    None
}

/// The live edge of an LL-HLS playlist copy whose origin holds blocking reloads.
fn low_latency(copy: &CachedObject) -> Option<crate::hls::LowLatency> {
    copy.playlist
        .as_ref()
        .and_then(|info| info.low_latency)
        .filter(|ll| ll.can_block_reload)
}

/// Counts a held request in a gauge for as long as it lives.
struct Held(prometheus::IntGauge);

impl Held {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The object to answer with and the phase it went through; a failure is [`CachePhase::Error`].
/// With `may_stream`, a media body under way is answered as it arrives.
///
/// A live media playlist is never left without an answer while the origin is down: once it is
/// past its freshness (or, marked `no-cache`, needs the origin's word), a viewer waits for the one
/// shared refresh at most a target duration, and gets the last copy if the refresh fails or is
/// late, for up to `cache.live_outage_max` past its stale bound; after that, 503 + `Retry-After`.
async fn find(edge: &Arc<Edge>, object: &ObjectRef, may_stream: bool) -> Result<Found, Failure> {
    let old = match edge.lookup(&object.key).await {
        Lookup::Fresh(cached) => return Ok(Found::Object(cached, CachePhase::Hit, false)),
        Lookup::Stale(cached) if !cached.revalidate => {
            edge.refresh(object);
            let outage = is_live(&cached) && edge.origin_failing(&object.key);
            return Ok(Found::Object(cached, CachePhase::Stale, outage));
        }
        Lookup::Stale(old) | Lookup::Expired(old) => Some(old),
        Lookup::Miss => None,
    };
    let now = edge.clock.now();
    let fallback = old.as_ref().filter(|o| {
        is_live(o) && policy::outage_servable(o.stored_at, o.lifetime, edge.live_outage_max(), now)
    });
    let (fetch, started) = edge.fetch(object);
    let mut phase = if started {
        CachePhase::Miss
    } else {
        CachePhase::Coalesced
    };
    if may_stream && edge.class_hint(&object.path).is_media() {
        let mut arrivals = fetch.arrivals.clone();
        if let Some(opened) = arriving::opened(&mut arrivals).await {
            return Ok(Found::Arriving(opened, arrivals, phase));
        }
    }
    let mut fetched = match fallback {
        Some(last) => {
            let patience = last.target_duration().unwrap_or(Duration::from_secs(2));
            match tokio::time::timeout(patience, fetch.result).await {
                Ok(result) => result,
                Err(_) => return Ok(Found::Object(Arc::clone(last), CachePhase::Stale, true)),
            }
        }
        None => fetch.result.await,
    };
    // A 401/403 answers the credentials of the viewer whose request started the fetch; one who
    // joined it with credentials of its own asks the origin with them.
    let denied = |r: &FetchResult| {
        r.as_ref().is_ok_and(|o| {
            o.status == StatusCode::UNAUTHORIZED || o.status == StatusCode::FORBIDDEN
        })
    };
    if !started && object.origin_query.is_some() && denied(&fetched) {
        fetched = edge.fetch_alone(object).await;
        phase = CachePhase::Miss;
    }
    let failed = match &fetched {
        Ok(new) => new.status.is_server_error(),
        Err(_) => true,
    };
    if failed {
        if let Some(last) = fallback {
            return Ok(Found::Object(Arc::clone(last), CachePhase::Stale, true));
        }
        // Past the outage bound: players get a clear 503 and retry after a target duration.
        if let Some(old) = old.filter(|o| is_live(o)) {
            let retry_after = old.target_duration().unwrap_or(Duration::from_secs(2));
            return Err(Failure::LivePlaylistTooOld { retry_after });
        }
    }
    fetched
        .map(|new| Found::Object(new, phase, false))
        .map_err(Failure::Fetch)
}

/// A live media playlist the origin gave (not an error answer).
fn is_live(object: &CachedObject) -> bool {
    object.class == ObjectClass::LiveMedia && object.is_success()
}

/// Body bytes of an answer (HEAD answers carry none).
fn content_len(response: &Response<Body>) -> usize {
    http_body::Body::size_hint(response.body())
        .exact()
        .map_or(0, |n| n as usize)
}

/// Builds the answer for a cached object: status, validators, `Age`, `X-Cache` (the phase), range,
/// CORS.
pub fn respond(
    object: &CachedObject,
    request: &HeaderMap,
    now: Instant,
    phase: CachePhase,
    head: bool,
) -> Response<Body> {
    let age = object.age(now);
    let mut headers = object.headers.clone();
    headers.insert(AGE, small_number(age.as_secs()));
    headers.insert(X_CACHE.clone(), HeaderValue::from_static(phase.x_cache()));
    headers.insert(CACHE_CONTROL, cache_control(object, age));

    if object.is_success() && not_modified(object, request) {
        headers.remove(CONTENT_TYPE);
        headers.remove(ACCEPT_RANGES);
        return finish(StatusCode::NOT_MODIFIED, headers, Bytes::new(), None);
    }
    if !object.is_success() {
        let body = if head {
            Bytes::new()
        } else {
            object.body.clone()
        };
        return finish(object.status, headers, body, Some(object.body.len() as u64));
    }
    let len = object.body.len() as u64;
    let range = request
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeAnswer::Full, |r| range::parse_range(r, len));
    match range {
        RangeAnswer::Full => {
            let body = if head {
                Bytes::new()
            } else {
                object.body.clone()
            };
            finish(StatusCode::OK, headers, body, Some(len))
        }
        RangeAnswer::Partial(r) => {
            let text = format!("bytes {}-{}/{len}", r.start, r.end - 1);
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.insert(CONTENT_RANGE, v);
            }
            let count = r.end - r.start;
            let body = if head {
                Bytes::new()
            } else {
                object.body.slice(r.start as usize..r.end as usize)
            };
            finish(StatusCode::PARTIAL_CONTENT, headers, body, Some(count))
        }
        RangeAnswer::Unsatisfiable => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(CONTENT_RANGE, v);
            }
            headers.remove(CONTENT_TYPE);
            finish(
                StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                Bytes::new(),
                Some(0),
            )
        }
    }
}

/// Numbers below this are answered from a table instead of being formatted per request.
const SMALL: u64 = 128;

fn small_number(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let table = TABLE.get_or_init(|| (0..SMALL).map(HeaderValue::from).collect());
    table
        .get(n as usize)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// `Cache-Control` for an answer; `no-store` for answers the gateway itself did not store (no-store,
/// private, no-cache...), so no downstream cache stores them. A downstream cache (a browser, an edge
/// gateway whose origin is this one) counts `max-age` from the `Age` it is sent (RFC 9111 §4.2), so
/// `max-age` is `Age` plus the whole seconds of freshness left: it stays fresh downstream exactly
/// as long as here, rounded down, never longer (whole-second `Age` drops the fraction).
fn cache_control(object: &CachedObject, age: Duration) -> HeaderValue {
    static PUBLIC: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    if object.lifetime.total().is_zero() {
        return HeaderValue::from_static("no-store");
    }
    let max_age = object
        .lifetime
        .fresh
        .saturating_sub(age)
        .as_secs()
        .saturating_add(age.as_secs());
    let text = |prefix: &str| {
        HeaderValue::from_str(&format!("{prefix}max-age={max_age}"))
            .unwrap_or_else(|_| HeaderValue::from_static("no-store"))
    };
    if !object.is_success() {
        return text("");
    }
    let table = PUBLIC.get_or_init(|| {
        (0..SMALL)
            .map(|n| {
                HeaderValue::from_str(&format!("public, max-age={n}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("public"))
            })
            .collect()
    });
    table
        .get(max_age as usize)
        .cloned()
        .unwrap_or_else(|| text("public, "))
}

fn not_modified(object: &CachedObject, request: &HeaderMap) -> bool {
    if let Some(inm) = request.get(IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else {
            return false;
        };
        return object
            .etag
            .to_str()
            .is_ok_and(|etag| range::if_none_match(inm, etag));
    }
    let (Some(since), Some(modified)) = (request.get(IF_MODIFIED_SINCE), object.last_modified_at)
    else {
        return false;
    };
    since
        .to_str()
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| modified <= since)
}

fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Bytes,
    len: Option<u64>,
) -> Response<Body> {
    if let Some(len) = len {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
