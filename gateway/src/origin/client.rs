//! The origin client: GET an object from one of several origins, in failover order, within one
//! deadline (retries, jittered backoff and redirects inside it), with connect and first-byte
//! timeouts, a circuit breaker per origin, a body size limit, a global bound on concurrent origin
//! requests and a global budget of buffered body bytes. A body that ends early (Content-Length
//! mismatch, broken chunked encoding) is an error, never a short object. Redirects are followed only
//! within the origin's base; an origin's `Location` never reaches a viewer.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, LOCATION};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounter, IntGauge};
use rand::Rng;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::config::OriginConfig;
use crate::error::FetchError;
use crate::metrics::Metrics;
use crate::origin::arriving::Tap;
use crate::origin::breaker::{Breaker, Outcome};
use peer_assist::hls::uri;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Redirects followed for one fetch, within the origin's base.
pub const MAX_REDIRECTS: usize = 3;

/// A complete answer from an origin.
#[derive(Debug)]
pub struct OriginResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which origin answered (index in failover order).
    pub origin: usize,
    /// The body's bytes counted against the global budget until this answer is dropped.
    pub reservation: Reservation,
}

/// Why one attempt did not give a usable answer, for the retry loop.
enum Attempt {
    Done(OriginResponse),
    /// An answer worth retrying elsewhere (5xx), kept in case every attempt ends like this.
    Retry(OriginResponse),
    Failed(FetchError),
}

#[derive(Debug)]
struct Origin {
    base: String,
    breaker: Mutex<Breaker>,
}

/// The bytes all origin fetches buffer at once, bounded (pure counting, no I/O).
#[derive(Debug)]
pub struct BodyBudget {
    held: AtomicU64,
    max: u64,
    gauge: IntGauge,
    refused: IntCounter,
}

/// Bytes taken from a [`BodyBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl BodyBudget {
    pub fn new(max: u64, gauge: IntGauge, refused: IntCounter) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicU64::new(0),
            max,
            gauge,
            refused,
        })
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// An empty reservation, to grow as a body arrives.
    pub fn empty(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    fn take(&self, bytes: u64) -> bool {
        let taken = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.max)
            })
            .is_ok();
        if taken {
            self.gauge
                .set(i64::try_from(self.held()).unwrap_or(i64::MAX));
        } else {
            self.refused.inc();
        }
        taken
    }

    fn give_back(&self, bytes: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                Some(held.saturating_sub(bytes))
            });
        self.gauge
            .set(i64::try_from(self.held()).unwrap_or(i64::MAX));
    }
}

impl Reservation {
    /// Makes the reservation `total` bytes; `MemoryBudget` when the budget cannot give them.
    pub fn grow_to(&mut self, total: u64) -> Result<(), FetchError> {
        if total <= self.bytes {
            return Ok(());
        }
        let more = total - self.bytes;
        if !self.budget.take(more) {
            return Err(FetchError::MemoryBudget(self.budget.max));
        }
        self.bytes = total;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

/// One origin request in flight: holds a connection slot and moves the gauge.
struct Active {
    _permit: tokio::sync::OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct OriginClient {
    origins: Arc<[Origin]>,
    client: Client<Connector, Empty<Bytes>>,
    config: OriginConfig,
    clock: Arc<dyn Clock>,
    /// Origin requests in flight, all origins together.
    slots: Arc<Semaphore>,
    active: IntGauge,
    budget: Arc<BodyBudget>,
    /// `origin.headers`, parsed once.
    extra_headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl OriginClient {
    /// `bases` are absolute `http(s)://…/` URLs ending in '/'.
    pub fn new(
        bases: &[String],
        config: OriginConfig,
        clock: Arc<dyn Clock>,
        metrics: &Metrics,
    ) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.max_connections)
            .build(connector);
        let origins = bases
            .iter()
            .map(|b| Origin {
                base: b.trim_end_matches('/').to_owned(),
                breaker: Mutex::new(Breaker::new(config.breaker_failures, config.breaker_open)),
            })
            .collect();
        // Checked by `Config::validate`; anything invalid here is skipped rather than sent.
        let extra_headers = config
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Ok(Self {
            origins,
            client,
            slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            active: metrics.origin_requests_active.clone(),
            budget: BodyBudget::new(
                config.max_buffered_bytes,
                metrics.origin_buffered_bytes.clone(),
                metrics.origin_budget_refused.clone(),
            ),
            extra_headers,
            config,
            clock,
        })
    }

    /// Body bytes all fetches buffer now (counted against `origin.max_buffered_bytes`).
    pub fn buffered_bytes(&self) -> u64 {
        self.budget.held()
    }

    /// GETs `path_and_query` (starting with '/'), retrying and failing over as configured, all
    /// within one deadline: `origin.total_timeout`, or `limit` when shorter. A final origin 5xx is
    /// returned as a response, not an error: the caller caches it briefly.
    pub async fn get(
        &self,
        path_and_query: &str,
        limit: Option<Duration>,
    ) -> Result<OriginResponse, FetchError> {
        self.get_tapped(path_and_query, limit, None).await
    }

    /// [`OriginClient::get`], publishing a 200 body through `tap` as it arrives (see
    /// [`crate::origin::arriving`]). A failure after the tap opened ends its readers' answers (bytes
    /// are out); the fetch goes on retrying as configured, unseen, to fill the cache.
    pub async fn get_tapped(
        &self,
        path_and_query: &str,
        limit: Option<Duration>,
        tap: Option<&mut Tap>,
    ) -> Result<OriginResponse, FetchError> {
        self.get_conditional(path_and_query, limit, tap, &[]).await
    }

    /// [`OriginClient::get_tapped`] with `conditions` (`If-None-Match`, `If-Modified-Since`) on
    /// every attempt: a `304 Not Modified` is then an answer like a 200 (its body empty), never a
    /// redirect to follow.
    pub async fn get_conditional(
        &self,
        path_and_query: &str,
        limit: Option<Duration>,
        mut tap: Option<&mut Tap>,
        conditions: &[(HeaderName, HeaderValue)],
    ) -> Result<OriginResponse, FetchError> {
        let within = limit.map_or(self.config.total_timeout, |l| {
            l.min(self.config.total_timeout)
        });
        let now = tokio::time::Instant::now();
        // `total_timeout` is validated to at most a year; the fallback only guards other callers.
        let deadline = now
            .checked_add(within)
            .unwrap_or_else(|| now + Duration::from_secs(3600));
        let target = self.with_configured_query(path_and_query);
        let path_key = path_hash(path_and_query);
        let attempts = self.config.retries.saturating_add(1);
        let mut last: Option<Attempt> = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                let pause = self.backoff(attempt);
                if tokio::time::Instant::now() + pause >= deadline {
                    break; // No time left for another attempt.
                }
                tokio::time::sleep(pause).await;
            }
            // A connection slot first (FIFO), then an origin whose circuit lets the request through.
            let slot = Arc::clone(&self.slots).acquire_owned();
            let permit = match tokio::time::timeout_at(deadline, slot).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return Err(FetchError::Internal("origin slots closed".into())),
                Err(_) if last.is_none() => return Err(FetchError::QueueTimeout),
                Err(_) => break,
            };
            let Some(index) = self.pick(attempt as usize) else {
                // Every circuit is open: waiting will not help within this request.
                break;
            };
            let attempt = self.attempt(permit, index, &target, tap.as_deref_mut(), conditions);
            let outcome = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => Attempt::Failed(FetchError::TotalTimeout),
            };
            let now = self.clock.now();
            let breaker = &self.origins[index].breaker;
            breaker.lock().unwrap_or_else(|e| e.into_inner()).record(
                now,
                path_key,
                breaker_outcome(&outcome),
            );
            if let (Some(tap), Attempt::Failed(e)) = (tap.as_deref_mut(), &outcome) {
                // Readers of an open body end now; a retry (to fill the cache) is not streamed.
                tap.fail(e.clone());
            }
            match outcome {
                Attempt::Done(response) => return Ok(response),
                Attempt::Failed(e) if !e.retryable() => return Err(e),
                other => last = Some(other),
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        match last {
            Some(Attempt::Done(r)) | Some(Attempt::Retry(r)) => Ok(r),
            Some(Attempt::Failed(e)) => Err(e),
            None if tokio::time::Instant::now() >= deadline => Err(FetchError::TotalTimeout),
            None => Err(FetchError::CircuitOpen),
        }
    }

    /// `path_and_query` with `origin.query` appended.
    fn with_configured_query(&self, path_and_query: &str) -> String {
        let extra = self.config.query.as_str();
        if extra.is_empty() {
            return path_and_query.to_owned();
        }
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{path_and_query}{sep}{extra}")
    }

    /// The first origin, starting at `attempt` in failover order, whose circuit lets a request through.
    fn pick(&self, attempt: usize) -> Option<usize> {
        let n = self.origins.len();
        let now = self.clock.now();
        (0..n).map(|i| (attempt + i) % n).find(|&i| {
            self.origins[i]
                .breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_acquire(now)
        })
    }

    /// Full-jitter exponential backoff.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.backoff_max);
        let millis = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    /// One attempt at origin `index`, following redirects within its base. Holds a connection slot
    /// for as long as it runs.
    async fn attempt(
        &self,
        permit: tokio::sync::OwnedSemaphorePermit,
        index: usize,
        path_and_query: &str,
        mut tap: Option<&mut Tap>,
        conditions: &[(HeaderName, HeaderValue)],
    ) -> Attempt {
        self.active.inc();
        let _active = Active {
            _permit: permit,
            gauge: self.active.clone(),
        };
        let base = &self.origins[index].base;
        let mut url = format!("{base}{path_and_query}");
        for _ in 0..=MAX_REDIRECTS {
            let response = match self.request(&url, tap.as_deref_mut(), conditions).await {
                Ok(r) => r,
                Err(e) => return Attempt::Failed(e),
            };
            let (status, headers, body, reservation) = response;
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                match redirect_target(&url, &headers, base) {
                    Ok(next) => {
                        url = next;
                        continue;
                    }
                    Err(why) => return Attempt::Failed(FetchError::Redirect(why)),
                }
            }
            let answer = OriginResponse {
                status,
                headers,
                body,
                origin: index,
                reservation,
            };
            return if status.is_server_error() {
                Attempt::Retry(answer)
            } else {
                Attempt::Done(answer)
            };
        }
        Attempt::Failed(FetchError::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// One GET of `url`: headers within the first-byte timeout, then the whole body, counted
    /// against the body limit and the global budget; a body `tap` takes is published as it arrives.
    async fn request(
        &self,
        url: &str,
        tap: Option<&mut Tap>,
        conditions: &[(HeaderName, HeaderValue)],
    ) -> Result<(StatusCode, HeaderMap, Bytes, Reservation), FetchError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| FetchError::Internal(format!("bad origin URL {url}: {e}")))?;
        let mut request = Request::get(uri)
            .header(
                http::header::USER_AGENT,
                HeaderValue::from_static(concat!("gateway/", env!("CARGO_PKG_VERSION"))),
            )
            .header(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Internal(e.to_string()))?;
        for (name, value) in self.extra_headers.iter().chain(conditions) {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let head =
            tokio::time::timeout(self.config.first_byte_timeout, self.client.request(request));
        let response = match head.await {
            Err(_) => return Err(FetchError::FirstByteTimeout),
            Ok(Err(e)) => return Err(classify_client_error(&e)),
            Ok(Ok(r)) => r,
        };
        let (parts, mut body) = response.into_parts();
        let limit = self.config.max_body_bytes;
        let expected = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if expected.is_some_and(|len| len > limit) {
            return Err(FetchError::TooLarge(limit));
        }
        let mut reservation = self.budget.empty();
        // A declared length is taken from the budget at once: refused before a byte is buffered.
        reservation.grow_to(expected.unwrap_or(0))?;
        // A tapped body lives in the tap's chunks (readers share them); others in one buffer.
        let mut tap =
            tap.and_then(|t| t.begin(parts.status, &parts.headers, expected).then_some(t));
        let capacity = if tap.is_some() {
            0
        } else {
            usize::try_from(expected.unwrap_or(0)).unwrap_or(0)
        };
        let mut buffer = BytesMut::with_capacity(capacity);
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FetchError::Body(error_chain(&e)))?;
            let Ok(data) = frame.into_data() else {
                continue; // Trailers.
            };
            let total = received.saturating_add(data.len() as u64);
            if total > limit {
                return Err(FetchError::TooLarge(limit));
            }
            reservation.grow_to(total)?;
            received = total;
            match tap.as_deref_mut() {
                Some(tap) => tap.push(data),
                None => buffer.extend_from_slice(&data),
            }
        }
        if let Some(expected) = expected {
            if received != expected {
                return Err(FetchError::Truncated {
                    expected,
                    got: received,
                });
            }
        }
        let body = match tap {
            Some(tap) => tap.body(),
            None => buffer.freeze(),
        };
        Ok((parts.status, parts.headers, body, reservation))
    }

    /// The configured origin base URLs, in failover order.
    pub fn bases(&self) -> impl Iterator<Item = &str> {
        self.origins.iter().map(|o| o.base.as_str())
    }

    /// The circuit state of origin `index` (for tests and status pages).
    pub fn breaker_state(&self, index: usize) -> Option<crate::origin::breaker::BreakerState> {
        let now: Instant = self.clock.now();
        self.origins.get(index).map(|o| {
            o.breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .state(now)
        })
    }
}

/// What an attempt says about the origin, for its breaker.
fn breaker_outcome(attempt: &Attempt) -> Outcome {
    match attempt {
        Attempt::Done(_) => Outcome::Answered,
        Attempt::Retry(_) => Outcome::PathFailed,
        Attempt::Failed(e) => match e {
            FetchError::Connect(_) | FetchError::ConnectTimeout => Outcome::Unreachable,
            FetchError::FirstByteTimeout
            | FetchError::TotalTimeout
            | FetchError::Body(_)
            | FetchError::Truncated { .. } => Outcome::PathFailed,
            // The origin answered; the gateway refused what it said.
            FetchError::TooLarge(_) | FetchError::Redirect(_) => Outcome::Answered,
            FetchError::MemoryBudget(_)
            | FetchError::QueueTimeout
            | FetchError::Internal(_)
            | FetchError::CircuitOpen
            | FetchError::Playlist(_)
            | FetchError::ShortBody { .. } => Outcome::Neutral,
        },
    }
}

/// The breaker's key for a request: its path, query excluded (cache-busting queries name one
/// object).
fn path_hash(path_and_query: &str) -> u64 {
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    hasher.finish()
}

/// The absolute URL a redirect from `current` points to, if it stays within `base` (the origin's
/// base URL without its trailing '/'); why not otherwise.
fn redirect_target(current: &str, headers: &HeaderMap, base: &str) -> Result<String, String> {
    let location = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| "a 3xx without a usable Location".to_owned())?;
    let next = uri::resolve_url(current, location.trim())
        .map_err(|e| format!("unresolvable Location: {e}"))?;
    let within = next
        .strip_prefix(base)
        .is_some_and(|rest| rest.starts_with('/'));
    if within {
        Ok(next)
    } else {
        Err("Location outside the origin's base".to_owned())
    }
}

fn classify_client_error(e: &hyper_util::client::legacy::Error) -> FetchError {
    let chain = error_chain(e);
    if e.is_connect() {
        if chain.contains("timed out") || chain.contains("timeout") {
            FetchError::ConnectTimeout
        } else {
            FetchError::Connect(chain)
        }
    } else {
        FetchError::Body(chain)
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: u64) -> Arc<BodyBudget> {
        BodyBudget::new(
            max,
            IntGauge::new("t_held", "t").expect("gauge"),
            IntCounter::new("t_refused", "t").expect("counter"),
        )
    }

    #[test]
    fn the_budget_refuses_past_its_bound_and_gets_everything_back() {
        let b = budget(100);
        let mut one = b.empty();
        let mut two = b.empty();
        one.grow_to(60).expect("fits");
        assert_eq!(two.grow_to(41), Err(FetchError::MemoryBudget(100)));
        assert_eq!(b.refused.get(), 1);
        two.grow_to(40).expect("fits exactly");
        assert_eq!(b.held(), 100);
        assert_eq!(b.gauge.get(), 100);
        one.grow_to(u64::MAX).expect_err("never overflows");
        drop(one);
        assert_eq!(b.held(), 40);
        drop(two);
        assert_eq!(b.held(), 0);
        assert_eq!(b.gauge.get(), 0);
    }

    #[test]
    fn redirects_are_followed_only_within_the_base() {
        let mut h = HeaderMap::new();
        let base = "http://o:1/hls";
        let at = |loc: &str, h: &mut HeaderMap| {
            h.insert(LOCATION, HeaderValue::from_str(loc).expect("value"));
            redirect_target("http://o:1/hls/a/b.ts?x=1", h, base)
        };
        assert_eq!(at("c.ts", &mut h).as_deref(), Ok("http://o:1/hls/a/c.ts"));
        assert_eq!(
            at("/hls/z.ts?t=1", &mut h).as_deref(),
            Ok("http://o:1/hls/z.ts?t=1")
        );
        for outside in [
            "http://internal:8080/hls/a.ts",
            "/other/a.ts",
            "../../x.ts",
            "/hlsx/a.ts",
            "https://o:1/hls/a.ts",
        ] {
            assert!(at(outside, &mut h).is_err(), "{outside}");
        }
        assert!(redirect_target("http://o:1/hls/a", &HeaderMap::new(), base).is_err());
    }

    #[test]
    fn one_path_is_one_breaker_key_whatever_its_query() {
        assert_eq!(path_hash("/a.ts?x=1"), path_hash("/a.ts?x=2"));
        assert_ne!(path_hash("/a.ts"), path_hash("/b.ts"));
    }
}
