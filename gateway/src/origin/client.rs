//! The origin client: GET an object from one of several origins, in failover order, with connect,
//! first-byte and total timeouts, bounded retries with jittered backoff, a circuit breaker per origin and
//! a body size limit. A body that ends early (Content-Length mismatch, broken chunked encoding) is an
//! error, never a short object.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;

use crate::clock::Clock;
use crate::config::OriginConfig;
use crate::error::FetchError;
use crate::origin::breaker::Breaker;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A complete answer from an origin.
#[derive(Debug, Clone)]
pub struct OriginResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which origin answered (index in failover order).
    pub origin: usize,
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

/// See the module docs.
#[derive(Debug, Clone)]
pub struct OriginClient {
    origins: Arc<[Origin]>,
    client: Client<Connector, Empty<Bytes>>,
    config: OriginConfig,
    clock: Arc<dyn Clock>,
}

impl OriginClient {
    /// `bases` are absolute `http(s)://…/` URLs ending in '/'.
    pub fn new(
        bases: &[String],
        config: OriginConfig,
        clock: Arc<dyn Clock>,
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
            .build(connector);
        let origins = bases
            .iter()
            .map(|b| Origin {
                base: b.trim_end_matches('/').to_owned(),
                breaker: Mutex::new(Breaker::new(config.breaker_failures, config.breaker_open)),
            })
            .collect();
        Ok(Self {
            origins,
            client,
            config,
            clock,
        })
    }

    /// GETs `path_and_query` (starting with '/'), retrying and failing over as configured. A final
    /// origin 5xx is returned as a response, not an error: the caller caches it briefly.
    pub async fn get(&self, path_and_query: &str) -> Result<OriginResponse, FetchError> {
        let attempts = self.config.retries.saturating_add(1);
        let mut last: Option<Attempt> = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
            let Some(index) = self.pick(attempt as usize) else {
                // Every circuit is open: waiting will not help within this request.
                break;
            };
            let outcome = self.attempt(index, path_and_query).await;
            let now = self.clock.now();
            let breaker = &self.origins[index].breaker;
            let mut breaker = breaker.lock().unwrap_or_else(|e| e.into_inner());
            match &outcome {
                Attempt::Done(_) => breaker.on_success(),
                Attempt::Retry(_) => breaker.on_failure(now),
                Attempt::Failed(e) => {
                    breaker.on_failure(now);
                    if !e.retryable() {
                        drop(breaker);
                        last = Some(outcome);
                        break;
                    }
                }
            }
            drop(breaker);
            if let Attempt::Done(response) = outcome {
                return Ok(response);
            }
            last = Some(outcome);
        }
        match last {
            Some(Attempt::Done(r)) | Some(Attempt::Retry(r)) => Ok(r),
            Some(Attempt::Failed(e)) => Err(e),
            None => Err(FetchError::CircuitOpen),
        }
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
        let millis = exp.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    async fn attempt(&self, index: usize, path_and_query: &str) -> Attempt {
        let url = format!("{}{}", self.origins[index].base, path_and_query);
        let uri: Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => {
                return Attempt::Failed(FetchError::Internal(format!("bad origin URL {url}: {e}")))
            }
        };
        let request = Request::get(uri)
            .header(
                http::header::USER_AGENT,
                HeaderValue::from_static(concat!("gateway/", env!("CARGO_PKG_VERSION"))),
            )
            .header(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            )
            .body(Empty::new());
        let request = match request {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(FetchError::Internal(e.to_string())),
        };
        let total = tokio::time::timeout(self.config.total_timeout, async {
            let head =
                tokio::time::timeout(self.config.first_byte_timeout, self.client.request(request));
            let response = match head.await {
                Err(_) => return Err(FetchError::FirstByteTimeout),
                Ok(Err(e)) => return Err(classify_client_error(&e)),
                Ok(Ok(r)) => r,
            };
            let (parts, body) = response.into_parts();
            let limit = self.config.max_body_bytes;
            let expected = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if expected.is_some_and(|len| len > limit) {
                return Err(FetchError::TooLarge(limit));
            }
            let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
            let body = match limited.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(FetchError::TooLarge(limit))
                }
                Err(e) => return Err(FetchError::Body(error_chain(&*e))),
            };
            if let Some(expected) = expected {
                if body.len() as u64 != expected {
                    return Err(FetchError::Truncated {
                        expected,
                        got: body.len() as u64,
                    });
                }
            }
            Ok(OriginResponse {
                status: parts.status,
                headers: parts.headers,
                body,
                origin: index,
            })
        });
        match total.await {
            Err(_) => Attempt::Failed(FetchError::TotalTimeout),
            Ok(Err(e)) => Attempt::Failed(e),
            Ok(Ok(r)) if r.status.is_server_error() => Attempt::Retry(r),
            Ok(Ok(r)) => Attempt::Done(r),
        }
    }

    /// The configured origin base URLs, in failover order.
    pub fn bases(&self) -> impl Iterator<Item = &str> {
        self.origins.iter().map(|o| o.base.as_str())
    }

    /// When the circuit of origin `index` was last seen open (for tests and status pages).
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
