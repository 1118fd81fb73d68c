//! Shared helpers for the gateway's integration tests: a real HTTP/1.1 origin on an ephemeral loopback
//! port that counts requests and can be told to misbehave, a gateway started in-process, and a client.
#![allow(dead_code, clippy::unwrap_used, clippy::field_reassign_with_default)]

#[allow(dead_code)]
pub mod binary;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::{Clock, Config, Drained, Gateway};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How the origin answers one path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, extra headers, body (with a correct Content-Length).
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// Declares `declared` bytes, sends `body`, then closes.
    Truncated { declared: usize, body: Bytes },
    /// Chunked encoding that stops in the middle of a chunk.
    BrokenChunked { body: Bytes },
    /// Waits, then answers like `Full`.
    Slow { delay: Duration, body: Bytes },
    /// Accepts the request and never answers.
    Hang,
    /// Sends the head (declaring the whole body) and `sent` bytes of `body`, then stalls forever.
    StallBody { body: Bytes, sent: usize },
    /// Sends the head and half the body, waits `pause`, then sends the rest.
    Dribble { body: Bytes, pause: Duration },
    /// Sends the head (declaring the whole body), then `body` in `pieces` equal pieces spread over
    /// `over` (the first at once); with `cut_after`, closes the connection after that many pieces.
    /// The instant of the first body byte is kept ([`TestOrigin::first_byte_at`]).
    Paced {
        body: Bytes,
        pieces: usize,
        over: Duration,
        cut_after: Option<usize>,
    },
    /// `body` with `ETag: etag` and `Cache-Control: cache_control`; a request whose
    /// `If-None-Match` names `etag` gets `304 Not Modified` (counted: [`TestOrigin::not_modified`]).
    Validated {
        body: Bytes,
        etag: String,
        cache_control: String,
    },
    /// After `delay`, `body` with 200 if the request head (line and headers) contains `needle`,
    /// else a 403: an origin that checks a token or a header.
    Requires {
        needle: String,
        body: Bytes,
        delay: Duration,
    },
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Reply::Full {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn with_headers(body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Self {
        Reply::Full {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    pub fn status(status: u16) -> Self {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Bytes::from_static(b"origin error\n"),
        }
    }
}

#[derive(Default)]
struct OriginState {
    routes: Mutex<HashMap<String, Reply>>,
    counts: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    /// Connections being served now, and the most at once.
    active: AtomicUsize,
    peak: AtomicUsize,
    /// When a `Paced` answer of each path sent its first body byte (the last time it did).
    first_bytes: Mutex<HashMap<String, Instant>>,
    /// While set, every connection is closed as soon as its request head is read (no answer).
    down: std::sync::atomic::AtomicBool,
    /// Requests that carried `If-None-Match` or `If-Modified-Since`, and `304`s sent.
    conditional: AtomicUsize,
    not_modified: AtomicUsize,
    /// Every request head received (request line and headers), in order.
    heads: Mutex<Vec<String>>,
}

/// Counts one connection as active while it lives.
struct ActiveConnection(Arc<OriginState>);

impl ActiveConnection {
    fn new(state: &Arc<OriginState>) -> Self {
        let now = state.active.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        ActiveConnection(Arc::clone(state))
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A real origin on 127.0.0.1:0. Every connection carries one request (`Connection: close`).
#[derive(Clone)]
pub struct TestOrigin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
}

impl TestOrigin {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    let active = ActiveConnection::new(&state);
                    let _ = serve_one(stream, state, active).await;
                });
            }
        });
        TestOrigin { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    /// Requests received for `path` (query included as sent).
    pub fn count(&self, path: &str) -> usize {
        self.state
            .counts
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// The most connections this origin served at once (see `serve_one` for when one stops
    /// counting).
    pub fn peak_connections(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// When the last `Paced` answer for `path` sent its first body byte.
    pub fn first_byte_at(&self, path: &str) -> Option<Instant> {
        self.state.first_bytes.lock().unwrap().get(path).copied()
    }

    /// While `down`, the origin closes every connection without answering (requests still count).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Requests received with `If-None-Match` or `If-Modified-Since`.
    pub fn conditional(&self) -> usize {
        self.state.conditional.load(Ordering::SeqCst)
    }

    /// `304 Not Modified` answers sent.
    pub fn not_modified(&self) -> usize {
        self.state.not_modified.load(Ordering::SeqCst)
    }

    /// Every request target received (path and query as sent).
    #[allow(dead_code)]
    pub fn targets(&self) -> Vec<String> {
        self.state.counts.lock().unwrap().keys().cloned().collect()
    }

    /// Every request head received (request line and headers, as sent), in order.
    pub fn heads(&self) -> Vec<String> {
        self.state.heads.lock().unwrap().clone()
    }
}

/// `active` counts the connection until its answer's last write starts (a `Full` or `Slow` one) or
/// it ends: a client that holds a whole answer never sees its connection still counted.
async fn serve_one(
    mut stream: TcpStream,
    state: Arc<OriginState>,
    active: ActiveConnection,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    state.heads.lock().unwrap().push(head.to_string());
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let path = target.split('?').next().unwrap_or("/").to_owned();
    state.total.fetch_add(1, Ordering::SeqCst);
    *state
        .counts
        .lock()
        .unwrap()
        .entry(target.clone())
        .or_default() += 1;
    if target != path {
        *state
            .counts
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default() += 1;
    }
    let lower = head.to_ascii_lowercase();
    let if_none_match = lower
        .split("\r\n")
        .find_map(|line| line.strip_prefix("if-none-match:"))
        .map(|v| v.trim().to_owned());
    if if_none_match.is_some() || lower.contains("\r\nif-modified-since:") {
        state.conditional.fetch_add(1, Ordering::SeqCst);
    }
    if state.down.load(Ordering::SeqCst) {
        drop(active);
        return Ok(());
    }
    let reply = state.routes.lock().unwrap().get(&path).cloned();
    let reply = reply.unwrap_or(Reply::Full {
        status: 404,
        headers: Vec::new(),
        body: Bytes::from_static(b"not found\n"),
    });
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            drop(active);
            write_full(&mut stream, status, &headers, &body).await
        }
        Reply::Slow { delay, body } => {
            tokio::time::sleep(delay).await;
            drop(active);
            write_full(&mut stream, 200, &[], &body).await
        }
        Reply::Truncated { declared, body } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
            stream.shutdown().await
        }
        Reply::BrokenChunked { body } => {
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await?;
            let half = body.len() / 2;
            stream
                .write_all(format!("{:x}\r\n", body.len()).as_bytes())
                .await?;
            stream.write_all(&body[..half]).await?;
            stream.shutdown().await
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Reply::StallBody { body, sent } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body[..sent.min(body.len())]).await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Reply::Dribble { body, pause } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            let half = body.len() / 2;
            stream.write_all(&body[..half]).await?;
            tokio::time::sleep(pause).await;
            stream.write_all(&body[half..]).await?;
            stream.shutdown().await
        }
        Reply::Paced {
            body,
            pieces,
            over,
            cut_after,
        } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            let pieces = pieces.max(1);
            let size = body.len().div_ceil(pieces).max(1);
            let pause = over / pieces as u32;
            let started = tokio::time::Instant::now();
            for (i, piece) in body.chunks(size).enumerate() {
                if cut_after == Some(i) {
                    return stream.shutdown().await;
                }
                tokio::time::sleep_until(started + pause * i as u32).await;
                if i == 0 {
                    state
                        .first_bytes
                        .lock()
                        .unwrap()
                        .insert(path.clone(), Instant::now());
                }
                stream.write_all(piece).await?;
            }
            stream.shutdown().await
        }
        Reply::Validated {
            body,
            etag,
            cache_control,
        } => {
            let headers = vec![
                ("ETag".to_owned(), etag.clone()),
                ("Cache-Control".to_owned(), cache_control),
            ];
            drop(active);
            if if_none_match.as_deref() == Some(etag.to_ascii_lowercase().as_str()) {
                state.not_modified.fetch_add(1, Ordering::SeqCst);
                write_full(&mut stream, 304, &headers, b"").await
            } else {
                write_full(&mut stream, 200, &headers, &body).await
            }
        }
        Reply::Requires {
            needle,
            body,
            delay,
        } => {
            tokio::time::sleep(delay).await;
            if head.contains(needle.as_str()) {
                write_full(&mut stream, 200, &[], &body).await
            } else {
                write_full(&mut stream, 403, &[], b"forbidden\n").await
            }
        }
    }
}

async fn write_full(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// A gateway serving on 127.0.0.1:0 in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Drained>>,
}

/// A config for tests: fast timeouts, few retries, the follower off unless a test turns it on.
pub fn test_config(origin: &TestOrigin) -> Config {
    config_for(origin.base())
}

/// [`test_config`] for any origin base URL.
pub fn config_for(base: String) -> Config {
    let mut config = Config::default();
    config.origins = vec![base];
    config.origin.connect_timeout = Duration::from_secs(1);
    config.origin.first_byte_timeout = Duration::from_secs(2);
    config.origin.total_timeout = Duration::from_secs(3);
    config.origin.retries = 1;
    config.origin.backoff_base = Duration::from_millis(10);
    config.origin.backoff_max = Duration::from_millis(20);
    config.follower.enabled = false;
    config
}

impl TestGateway {
    pub async fn start(config: Config) -> Self {
        Self::start_with_clock(config, Arc::new(gateway::SystemClock)).await
    }

    pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Gateway::with_clock(config, clock).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = gateway.clone();
        let done = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        TestGateway {
            addr,
            gateway,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> Fetched {
        get(&self.url(path), &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Fetched {
        get(&self.url(path), headers).await
    }

    /// The value of one metric series line from `/metrics`, e.g.
    /// `gateway_cache_results_total{class="segment",result="hit"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub async fn stop(mut self) -> Drained {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().unwrap().await.unwrap()
    }
}

/// A gateway in front of the built-in demo origin, with the live follower on.
pub async fn demo_gateway() -> TestGateway {
    TestGateway::start(demo_config().await).await
}

/// The configuration of [`demo_gateway`], to change before starting it.
pub async fn demo_config() -> Config {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let demo = gateway::demo::spawn().await.expect("demo origin");
    let mut config = config_for(format!("http://{demo}/"));
    config.follower.enabled = true;
    config
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Fetched {
    request(&client(), "GET", url, headers).await
}

pub async fn request(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Fetched {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(builder.body(Empty::new()).unwrap()),
    )
    .await
    .expect("gateway answered in time")
    .expect("request to the gateway");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Fetched {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET whose body may end in an error: its status and its body, or how the body ended. An
/// answer streamed while the origin sends it ends with an error when the origin fetch fails.
pub async fn get_outcome(url: &str) -> (StatusCode, Result<Bytes, String>) {
    let request = Request::get(url).body(Empty::new()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("gateway answered in time")
        .expect("request to the gateway");
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(20), response.into_body().collect())
        .await
        .expect("body ended in time")
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    (status, body)
}

/// Polls `done` every 10 ms until it holds or `within` passes (checking once more at the end);
/// whether it held. For conditions something else makes true (a background fetch, a task that notices
/// the clock moved), instead of sleeping a fixed time and hoping it was long enough.
pub async fn wait_until(mut done: impl FnMut() -> bool, within: Duration) -> bool {
    wait_until_async(|| std::future::ready(done()), within).await
}

/// [`wait_until`] for conditions that are checked by asking, such as a metric of the gateway:
/// `wait_until_async(|| async { gw.metric(series).await == 1.0 }, within)`.
pub async fn wait_until_async<F>(mut done: impl FnMut() -> F, within: Duration) -> bool
where
    F: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A body of `len` bytes whose content depends on `seed`.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Every segment the native peers accepted must be byte-identical to what the gateway serves.
pub async fn assert_all_authentic(gw: &TestGateway, summaries: &[peer_assist::node::Summary]) {
    for s in summaries {
        for r in &s.log {
            // A byte-range segment is checked against that range of its file.
            let body = match peer_assist::hls::split_range_id(&r.id) {
                (path, Some(range)) => {
                    let spec = format!("bytes={}-{}", range.offset, range.end() - 1);
                    let body = gw.get_with(path, &[("range", spec.as_str())]).await;
                    assert_eq!(body.status, 206, "{}", r.id);
                    body
                }
                (path, None) => {
                    let body = gw.get(path).await;
                    assert_eq!(body.status, 200, "{}", r.id);
                    body
                }
            };
            let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body.body));
            assert_eq!(
                r.sha256, expected,
                "peer {} accepted a corrupted {}",
                s.peer_id, r.id
            );
        }
    }
}

/// The ids of the digests the gateway publishes for a rendition (`/p2p/v1/digests/...`).
#[allow(dead_code)]
pub async fn digest_ids(gw: &TestGateway, stream: &str, rendition: u32) -> Vec<String> {
    let r = gw
        .get(&format!("/p2p/v1/digests{stream}/{rendition}"))
        .await;
    assert_eq!(r.status, 200, "digests of {stream} #{rendition}");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    body["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}
