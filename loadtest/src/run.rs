//! `loadtest run`: simulated HTTP viewers against an HLS URL, bounded in time, with a QoE and cost
//! report (see [`crate::report`] for the definitions of the figures).
//!
//! Each viewer is one Tokio task driving a [`Player`] (the pure player model): it fetches the URL
//! (a multivariant or a media playlist), then performs the playlist and segment fetches the player
//! asks for, a playlist fetch and a segment fetch possibly in flight at the same time, and sleeps
//! until the player's next deadline or a completion, whichever comes first. All viewers share one
//! HTTP/1.1 client with a connection pool.
//!
//! Sessions ([`plan_sessions`]): `viewers` arrivals spread evenly over the ramp (viewer `i` of `n` at
//! `ramp × i / n`), each watching until the end of the run. With a churn fraction `F`,
//! `round(F × n)` of these viewers, picked at random (deterministically from the seed), leave at a
//! time uniformly distributed between their arrival and the end of the run, and a new viewer arrives
//! at that instant and watches until the end (replacements do not churn again), so about `n` viewers
//! are active once the ramp is over.
//!
//! The run stops hard at `duration`: every viewer is cancelled then, in-flight requests included. A
//! request taking longer than [`REQUEST_TIMEOUT`] fails.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use m3u8_rs::Playlist;
use tokio::task::JoinSet;

use crate::player::{
    Action, MediaPlaylistUpdate, Player, PlayerConfig, PlayerStats, Rendition, Segment,
};
use crate::report::{self, ProcessUsage, Report, ReportInputs, RequestTotals};

/// Per-request timeout (connection, headers and body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay before a viewer fetches the URL again after a failure.
const ENTRY_RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long after the end of the run viewers may take to hand back their counters.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Progress bar refresh period.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);
/// `User-Agent` of every request.
const USER_AGENT: &str = concat!("loadtest/", env!("CARGO_PKG_VERSION"));

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Multivariant or media playlist URL.
    pub url: String,
    /// Concurrent viewers (sessions started at the arrivals; churn adds replacements).
    pub viewers: usize,
    /// Length of the run (hard stop).
    pub duration: Duration,
    /// Arrivals are spread evenly over this.
    pub ramp: Duration,
    /// Fraction (0..=1) of the viewers leaving early and replaced.
    pub churn: f64,
    /// Seed of the churn draws.
    pub seed: u64,
    /// Fixed rendition (index in bandwidth-ascending order; no ABR); `None`: ABR.
    pub rendition: Option<usize>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// The gateway's `/metrics` URL (for `origin_requests_per_segment`).
    pub gateway_metrics: Option<String>,
    /// The gateway's process id (for its CPU time and RSS).
    pub gateway_pid: Option<u32>,
    /// Allow URLs whose host is not loopback.
    pub allow_remote: bool,
    /// Show a progress bar on stderr (only if stderr is a terminal).
    pub progress: bool,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Player tuning of every viewer.
    pub player: PlayerConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            viewers: 1,
            duration: Duration::from_secs(10),
            ramp: Duration::ZERO,
            churn: 0.0,
            seed: 1,
            rendition: None,
            json: None,
            gateway_metrics: None,
            gateway_pid: None,
            allow_remote: false,
            progress: false,
            request_timeout: REQUEST_TIMEOUT,
            player: PlayerConfig::default(),
        }
    }
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Invalid arguments (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The stream or the gateway could not be reached or understood before the run (exit status 1).
    #[error("{0}")]
    Unreachable(String),
    /// The JSON report could not be written (exit status 1).
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RunError {
    /// Process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Unreachable(_) | RunError::Io { .. } => 1,
        }
    }
}

/// Parses "20s", "2m", "500ms", "1h" or bare (possibly fractional) seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 20s, 2m, 500ms, 30)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("invalid duration unit {other:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {s:?}"))
}

/// Parses `--rendition`: "auto" (ABR) or an index in bandwidth-ascending order.
pub fn parse_rendition(s: &str) -> Result<Option<usize>, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("expected \"auto\" or a rendition index, got {s:?}"))
}

/// One viewer session: arrival and departure, relative to the start of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPlan {
    pub start: Duration,
    pub end: Duration,
}

/// The sessions of a run (see the module docs), sorted by arrival.
pub fn plan_sessions(
    viewers: usize,
    duration: Duration,
    ramp: Duration,
    churn: f64,
    seed: u64,
) -> Vec<SessionPlan> {
    let ramp = ramp.min(duration);
    let mut plans: Vec<SessionPlan> = (0..viewers)
        .map(|i| SessionPlan {
            start: ramp.mul_f64(i as f64 / viewers as f64),
            end: duration,
        })
        .collect();
    let churn = if churn.is_finite() {
        churn.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let leavers = ((churn * viewers as f64).round() as usize).min(viewers);
    let mut rng = SplitMix64(seed);
    let mut order: Vec<usize> = (0..viewers).collect();
    for k in 0..leavers {
        // Partial Fisher–Yates: `order[..=k]` are distinct random viewers.
        let j = k + rng.below(viewers - k);
        order.swap(k, j);
        let Some(plan) = plans.get_mut(order[k]) else {
            continue;
        };
        let leave = plan.start + (duration - plan.start).mul_f64(rng.unit());
        plan.end = leave;
        plans.push(SessionPlan {
            start: leave,
            end: duration,
        });
    }
    plans.sort_by_key(|p| p.start);
    plans
}

/// splitmix64: small, seedable, good enough for picking leavers.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (n > 0).
    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// Resolves a URI reference found in a playlist against the playlist's URL (RFC 3986 §5.2, for
/// the `http(s)://authority/path?query` URLs HLS uses).
pub fn resolve_uri(base: &Uri, reference: &str) -> Result<Uri, String> {
    let reference = reference.trim();
    let invalid = |e: http::uri::InvalidUri| format!("invalid URI {reference:?}: {e}");
    if has_scheme(reference) {
        return reference.parse().map_err(invalid);
    }
    let scheme = base.scheme_str().unwrap_or("http");
    if let Some(rest) = reference.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().map_err(invalid);
    }
    let authority = base.authority().map_or("", |a| a.as_str());
    let reference = reference.split('#').next().unwrap_or_default();
    let (ref_path, ref_query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    let (path, query) = if ref_path.is_empty() {
        (base.path().to_owned(), ref_query.or(base.query()))
    } else if ref_path.starts_with('/') {
        (remove_dot_segments(ref_path), ref_query)
    } else {
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        let merged = if dir.is_empty() {
            format!("/{ref_path}")
        } else {
            format!("{dir}{ref_path}")
        };
        (remove_dot_segments(&merged), ref_query)
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{authority}{path}{query}")
        .parse()
        .map_err(invalid)
}

fn has_scheme(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let scheme = &s[..colon];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// RFC 3986 §5.2.4 on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

/// The renditions named by the URL's playlist: the variant streams of a multivariant playlist
/// (I-frame streams excluded; URIs resolved against `url`), or the URL itself for a media playlist
/// (bandwidth unknown: 0).
pub fn parse_entry_playlist(body: &[u8], url: &Uri) -> Result<Vec<Rendition>, String> {
    match m3u8_rs::parse_playlist_res(body) {
        Ok(Playlist::MasterPlaylist(master)) => {
            let renditions = master
                .variants
                .iter()
                .filter(|v| !v.is_i_frame)
                .map(|v| {
                    Ok(Rendition {
                        bandwidth: v.bandwidth,
                        playlist: resolve_uri(url, &v.uri)?.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            if renditions.is_empty() {
                Err("the multivariant playlist has no variant stream".to_owned())
            } else {
                Ok(renditions)
            }
        }
        Ok(Playlist::MediaPlaylist(_)) => Ok(vec![Rendition {
            bandwidth: 0,
            playlist: url.to_string(),
        }]),
        Err(_) => Err("not an HLS playlist".to_owned()),
    }
}

/// With `fixed`, only that rendition (index in bandwidth-ascending order); else all of them.
pub fn select_renditions(
    mut renditions: Vec<Rendition>,
    fixed: Option<usize>,
) -> Result<Vec<Rendition>, String> {
    let Some(index) = fixed else {
        return Ok(renditions);
    };
    renditions.sort_by_key(|r| r.bandwidth);
    let count = renditions.len();
    renditions
        .into_iter()
        .nth(index)
        .map(|r| vec![r])
        .ok_or_else(|| {
            format!("--rendition {index}: the stream has {count} rendition(s), numbered from 0")
        })
}

/// A media playlist as a [`MediaPlaylistUpdate`] for `rendition`, segment URIs resolved against
/// `url` (the playlist's URL).
pub fn parse_media_playlist(
    body: &[u8],
    rendition: usize,
    url: &Uri,
) -> Result<MediaPlaylistUpdate, String> {
    let playlist = match m3u8_rs::parse_playlist_res(body) {
        Ok(Playlist::MediaPlaylist(p)) => p,
        Ok(Playlist::MasterPlaylist(_)) => {
            return Err("expected a media playlist, got a multivariant playlist".to_owned())
        }
        Err(_) => return Err("not an HLS playlist".to_owned()),
    };
    let segments = playlist
        .segments
        .iter()
        .zip(playlist.media_sequence..)
        .map(|(segment, sequence)| {
            Ok(Segment {
                sequence,
                uri: resolve_uri(url, &segment.uri)?.to_string(),
                duration: Duration::try_from_secs_f64(f64::from(segment.duration))
                    .unwrap_or(Duration::ZERO),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(MediaPlaylistUpdate {
        rendition,
        target_duration: Duration::from_secs(playlist.target_duration),
        media_sequence: playlist.media_sequence,
        segments,
        ended: playlist.end_list,
    })
}

/// Counters shared by all viewers.
struct Recorder {
    active: AtomicU64,
    stalls: AtomicU64,
    segments: AtomicU64,
    bytes: AtomicU64,
    failures: AtomicU64,
    http_errors: Mutex<BTreeMap<String, u64>>,
    latency_us: Mutex<Histogram<u64>>,
    distinct: Mutex<HashSet<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    fn new() -> Self {
        Self {
            active: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            http_errors: Mutex::new(BTreeMap::new()),
            latency_us: Mutex::new(report::latency_histogram()),
            distinct: Mutex::new(HashSet::new()),
        }
    }

    /// A failed fetch with an HTTP status (or `"error"` for transport errors).
    fn http_error(&self, key: &str) {
        *lock(&self.http_errors).entry(key.to_owned()).or_default() += 1;
        self.failure();
    }

    /// A failed fetch (any cause).
    fn failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    fn segment(&self, uri: &str, elapsed: Duration) {
        self.segments.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        lock(&self.latency_us).saturating_record(us);
        let mut distinct = lock(&self.distinct);
        if !distinct.contains(uri) {
            distinct.insert(uri.to_owned());
        }
    }

    fn totals(&self) -> RequestTotals {
        RequestTotals {
            segments: self.segments.load(Ordering::Relaxed),
            distinct_segments: lock(&self.distinct).len() as u64,
            bytes: self.bytes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            http_errors: lock(&self.http_errors).clone(),
        }
    }
}

/// Counts a viewer as active while alive (also when its task is aborted).
struct ActiveGuard<'a>(&'a AtomicU64);

impl<'a> ActiveGuard<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every viewer task shares.
struct Shared {
    client: HttpClient,
    url: Uri,
    rendition: Option<usize>,
    player: PlayerConfig,
    timeout: Duration,
    recorder: Recorder,
}

/// A completed HTTP exchange.
struct Fetched {
    status: StatusCode,
    body: Bytes,
    elapsed: Duration,
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn build_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// GET `uri` (headers and whole body within `timeout`).
async fn http_get(client: &HttpClient, uri: Uri, timeout: Duration) -> Result<Fetched, String> {
    let started = Instant::now();
    let request = Request::get(uri)
        .header(header::USER_AGENT, USER_AGENT)
        .body(Empty::new())
        .map_err(|e| error_chain(&e))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| error_chain(&e))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timed out after {:?}", timeout))??;
    Ok(Fetched {
        status,
        body,
        elapsed: started.elapsed(),
    })
}

impl Shared {
    /// GET, recording bytes and failures; the body and download time of a 2xx answer.
    async fn fetch(&self, uri: Uri) -> Option<(Bytes, Duration)> {
        match http_get(&self.client, uri, self.timeout).await {
            Ok(fetched) => {
                self.recorder
                    .bytes
                    .fetch_add(fetched.body.len() as u64, Ordering::Relaxed);
                if fetched.status.is_success() {
                    Some((fetched.body, fetched.elapsed))
                } else {
                    self.recorder.http_error(fetched.status.as_str());
                    None
                }
            }
            Err(_) => {
                self.recorder.http_error("error");
                None
            }
        }
    }

    /// The renditions this viewer plays, from the URL.
    async fn load_renditions(&self) -> Option<Vec<Rendition>> {
        let (body, _) = self.fetch(self.url.clone()).await?;
        let renditions = parse_entry_playlist(&body, &self.url)
            .and_then(|r| select_renditions(r, self.rendition));
        if renditions.is_err() {
            self.recorder.failure();
        }
        renditions.ok()
    }
}

type PlaylistDone = (usize, Option<MediaPlaylistUpdate>);
type SegmentDone = (usize, u64, Option<(u64, Duration)>);

async fn fetch_playlist(shared: Arc<Shared>, rendition: usize, uri: Uri) -> PlaylistDone {
    let Some((body, _)) = shared.fetch(uri.clone()).await else {
        return (rendition, None);
    };
    let update = parse_media_playlist(&body, rendition, &uri).ok();
    if update.is_none() {
        shared.recorder.failure();
    }
    (rendition, update)
}

async fn fetch_segment(
    shared: Arc<Shared>,
    rendition: usize,
    sequence: u64,
    uri: String,
) -> SegmentDone {
    let Ok(parsed) = uri.parse::<Uri>() else {
        shared.recorder.failure();
        return (rendition, sequence, None);
    };
    let Some((body, elapsed)) = shared.fetch(parsed).await else {
        return (rendition, sequence, None);
    };
    shared.recorder.segment(&uri, elapsed);
    (rendition, sequence, Some((body.len() as u64, elapsed)))
}

/// Awaits the fetch if there is one, else never completes.
async fn completion<T>(fetch: &mut Option<BoxFuture<T>>) -> T {
    match fetch {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

/// One viewer's state, kept outside the driving future so that it survives its cancellation.
#[derive(Default)]
struct Viewer {
    player: Option<Player>,
    stalls_reported: u32,
}

/// One session until `leave_at`: its QoE counters, or `None` if it never got a player.
async fn viewer(shared: Arc<Shared>, leave_at: Instant) -> Option<PlayerStats> {
    let _active = ActiveGuard::enter(&shared.recorder.active);
    let mut state = Viewer::default();
    let deadline = tokio::time::Instant::from_std(leave_at);
    // Cancelled at `leave_at` (in-flight requests are dropped) unless the session ends first.
    let _ = tokio::time::timeout_at(deadline, drive(&shared, &mut state)).await;
    let now = Instant::now();
    state.player.map(|p| p.stats(now))
}

async fn drive(shared: &Arc<Shared>, state: &mut Viewer) {
    let session_start = Instant::now();
    let renditions = loop {
        if let Some(renditions) = shared.load_renditions().await {
            break renditions;
        }
        tokio::time::sleep(ENTRY_RETRY_DELAY).await;
    };
    // The session (and its startup time) began with the request for the URL.
    let player = state.player.insert(Player::new(
        shared.player.clone(),
        renditions,
        session_start,
    ));
    let playlists: Vec<Option<Uri>> = player
        .renditions()
        .iter()
        .map(|r| r.playlist.parse().ok())
        .collect();
    let mut playlist_fetch: Option<BoxFuture<PlaylistDone>> = None;
    let mut segment_fetch: Option<BoxFuture<SegmentDone>> = None;
    loop {
        let now = Instant::now();
        let wake = loop {
            match player.poll(now) {
                Action::FetchPlaylist { rendition } => {
                    match playlists.get(rendition).cloned().flatten() {
                        Some(uri) => {
                            playlist_fetch =
                                Some(Box::pin(fetch_playlist(Arc::clone(shared), rendition, uri)));
                        }
                        None => {
                            shared.recorder.failure();
                            player.playlist_failed(now, rendition);
                        }
                    }
                }
                Action::FetchSegment {
                    rendition,
                    sequence,
                    uri,
                } => {
                    segment_fetch = Some(Box::pin(fetch_segment(
                        Arc::clone(shared),
                        rendition,
                        sequence,
                        uri,
                    )));
                }
                Action::WaitUntil(at) => break Some(at),
                Action::Done => break None,
            }
        };
        let stalls = player.stats(now).stalls;
        if stalls > state.stalls_reported {
            shared
                .recorder
                .stalls
                .fetch_add(u64::from(stalls - state.stalls_reported), Ordering::Relaxed);
            state.stalls_reported = stalls;
        }
        let Some(wake) = wake else {
            return;
        };
        tokio::select! {
            (rendition, update) = completion(&mut playlist_fetch) => {
                playlist_fetch = None;
                let now = Instant::now();
                match update {
                    Some(update) => player.playlist_loaded(now, update),
                    None => player.playlist_failed(now, rendition),
                }
            }
            (rendition, sequence, result) = completion(&mut segment_fetch) => {
                segment_fetch = None;
                let now = Instant::now();
                match result {
                    Some((bytes, elapsed)) => {
                        player.segment_loaded(now, rendition, sequence, bytes, elapsed);
                    }
                    None => player.segment_failed(now, rendition, sequence),
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    }
}

fn validate(config: &RunConfig) -> Result<(), RunError> {
    let usage = |m: &str| Err(RunError::Usage(m.to_owned()));
    if config.viewers == 0 {
        return usage("--viewers must be at least 1");
    }
    if config.duration.is_zero() {
        return usage("--duration must be positive");
    }
    if config.ramp > config.duration {
        return usage("--ramp must not exceed --duration");
    }
    if !(config.churn.is_finite() && (0.0..=1.0).contains(&config.churn)) {
        return usage("--churn must be a fraction between 0 and 1");
    }
    if config.request_timeout.is_zero() {
        return usage("the request timeout must be positive");
    }
    Ok(())
}

/// Parses an `http://` URL and, unless `allow_remote`, checks that its host is loopback.
fn check_url(option: &str, url: &str, allow_remote: bool) -> Result<Uri, RunError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| RunError::Usage(format!("{option}: invalid URL {url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(RunError::Usage(format!(
                "{option}: only http:// URLs are supported, not {other}://"
            )))
        }
        None => {
            return Err(RunError::Usage(format!(
                "{option}: {url:?} is not an absolute http:// URL"
            )))
        }
    }
    let host = uri.host().unwrap_or_default();
    if !allow_remote && !report::is_loopback_host(host) {
        return Err(RunError::Usage(format!(
            "{option}: refusing to load-test {host:?}, which is not a loopback address \
             (127.0.0.0/8, ::1, localhost); pass --allow-remote to target another host"
        )));
    }
    Ok(uri)
}

async fn gateway_segment_fetches(
    client: &HttpClient,
    url: &Uri,
    timeout: Duration,
) -> Result<f64, String> {
    let fetched = http_get(client, url.clone(), timeout).await?;
    if !fetched.status.is_success() {
        return Err(format!("HTTP {}", fetched.status));
    }
    Ok(report::origin_segment_fetches(&String::from_utf8_lossy(
        &fetched.body,
    )))
}

fn read_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    report::proc_stat_cpu_ticks(&stat)
}

fn read_rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    report::proc_status_rss_bytes(&status)
}

fn progress_bar(enabled: bool, duration: Duration) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let length = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn show_progress(bar: ProgressBar, shared: Arc<Shared>, start: Instant, duration: Duration) {
    let mut interval = tokio::time::interval(PROGRESS_PERIOD);
    loop {
        interval.tick().await;
        let elapsed = start.elapsed().min(duration);
        let recorder = &shared.recorder;
        bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{:.0}/{:.0} s  {} viewers  {} stalls  {} segments",
            elapsed.as_secs_f64(),
            duration.as_secs_f64(),
            recorder.active.load(Ordering::Relaxed),
            recorder.stalls.load(Ordering::Relaxed),
            recorder.segments.load(Ordering::Relaxed),
        ));
    }
}

/// Runs the viewers and returns the report (also written to `config.json` if set).
pub async fn run(config: RunConfig) -> Result<Report, RunError> {
    validate(&config)?;
    let url = check_url("--url", &config.url, config.allow_remote)?;
    let metrics_url = config
        .gateway_metrics
        .as_deref()
        .map(|m| check_url("--gateway-metrics", m, config.allow_remote))
        .transpose()?;
    if let Some(path) = &config.json {
        // Fail before the run rather than lose its report.
        std::fs::File::create(path).map_err(|source| RunError::Io {
            path: path.clone(),
            source,
        })?;
    }
    let client = build_client();
    let timeout = config.request_timeout;

    // Preflight: the URL must answer with a playlist (and have the rendition asked for).
    let entry = http_get(&client, url.clone(), timeout)
        .await
        .map_err(|e| RunError::Unreachable(format!("cannot fetch {url}: {e}")))?;
    if !entry.status.is_success() {
        return Err(RunError::Unreachable(format!(
            "cannot fetch {url}: HTTP {}",
            entry.status
        )));
    }
    let renditions = parse_entry_playlist(&entry.body, &url)
        .map_err(|e| RunError::Unreachable(format!("{url}: {e}")))?;
    select_renditions(renditions, config.rendition).map_err(RunError::Usage)?;
    let metrics_before = match &metrics_url {
        Some(m) => Some(
            gateway_segment_fetches(&client, m, timeout)
                .await
                .map_err(|e| RunError::Unreachable(format!("cannot read {m}: {e}")))?,
        ),
        None => None,
    };
    let gateway_pid = config.gateway_pid.map(|pid| pid.to_string());
    let gateway_before = match &gateway_pid {
        Some(pid) => Some(read_cpu_ticks(pid).ok_or_else(|| {
            RunError::Usage(format!("--gateway-pid {pid}: cannot read /proc/{pid}/stat"))
        })?),
        None => None,
    };
    let harness_before = read_cpu_ticks("self");

    let plans = plan_sessions(
        config.viewers,
        config.duration,
        config.ramp,
        config.churn,
        config.seed,
    );
    let shared = Arc::new(Shared {
        client: client.clone(),
        url,
        rendition: config.rendition,
        player: config.player.clone(),
        timeout,
        recorder: Recorder::new(),
    });
    let start = Instant::now();
    let end = start + config.duration;
    let bar = progress_bar(config.progress, config.duration);
    let ticker = tokio::spawn(show_progress(
        bar.clone(),
        Arc::clone(&shared),
        start,
        config.duration,
    ));
    let mut viewers = JoinSet::new();
    for plan in &plans {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + plan.start)).await;
        viewers.spawn(viewer(Arc::clone(&shared), start + plan.end));
    }
    let mut sessions: Vec<Option<PlayerStats>> = Vec::with_capacity(plans.len());
    let mut lost = 0usize;
    let collect = async {
        while let Some(joined) = viewers.join_next().await {
            match joined {
                Ok(stats) => sessions.push(stats),
                Err(_) => lost += 1,
            }
        }
    };
    let collected =
        tokio::time::timeout_at(tokio::time::Instant::from_std(end + STOP_GRACE), collect).await;
    if collected.is_err() {
        viewers.abort_all();
        while viewers.join_next().await.is_some() {
            lost += 1;
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let wall = start.elapsed();
    if lost > 0 {
        eprintln!("loadtest: warning: {lost} viewer(s) did not report (not counted)");
    }

    let origin_requests_per_segment = match (&metrics_url, metrics_before) {
        (Some(m), Some(before)) => match gateway_segment_fetches(&client, m, timeout).await {
            Ok(after) => report::origin_requests_per_segment(
                before,
                after,
                lock(&shared.recorder.distinct).len() as u64,
            ),
            Err(e) => {
                eprintln!("loadtest: warning: cannot read {m} after the run: {e}");
                None
            }
        },
        _ => None,
    };
    let gateway = match (&gateway_pid, gateway_before) {
        (Some(pid), Some(before)) => match read_cpu_ticks(pid) {
            Some(after) => Some(ProcessUsage {
                cpu_s: report::ticks_to_seconds(after.saturating_sub(before)),
                rss_bytes: read_rss_bytes(pid),
            }),
            None => {
                eprintln!("loadtest: warning: gateway process {pid} is gone");
                None
            }
        },
        _ => None,
    };
    let harness_cpu = harness_before
        .zip(read_cpu_ticks("self"))
        .map(|(before, after)| report::ticks_to_seconds(after.saturating_sub(before)));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let latency = lock(&shared.recorder.latency_us).clone();
    let report = report::build_report(ReportInputs {
        sessions: &sessions,
        wall,
        totals: shared.recorder.totals(),
        segment_latency_us: &latency,
        origin_requests_per_segment,
        gateway,
        harness: report::harness_usage(harness_cpu, wall, cpus),
    });
    if let Some(path) = &config.json {
        let io = |source| RunError::Io {
            path: path.clone(),
            source,
        };
        let mut json = serde_json::to_string_pretty(&report).map_err(|e| io(e.into()))?;
        json.push('\n');
        std::fs::write(path, json).map_err(io)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn renditions_argument() {
        assert_eq!(parse_rendition("auto"), Ok(None));
        assert_eq!(parse_rendition("1"), Ok(Some(1)));
        assert!(parse_rendition("high").is_err());
    }

    #[test]
    fn uri_resolution() {
        let base = uri("http://127.0.0.1:8080/live/stream/master.m3u8?token=1");
        let cases = [
            (
                "r0/index.m3u8",
                "http://127.0.0.1:8080/live/stream/r0/index.m3u8",
            ),
            ("../other/a.ts", "http://127.0.0.1:8080/live/other/a.ts"),
            (
                "./a.ts?x=1#frag",
                "http://127.0.0.1:8080/live/stream/a.ts?x=1",
            ),
            ("/abs/b.ts", "http://127.0.0.1:8080/abs/b.ts"),
            ("//cdn.example/c.ts", "http://cdn.example/c.ts"),
            ("https://elsewhere/d.ts", "https://elsewhere/d.ts"),
            ("../../../../e.ts", "http://127.0.0.1:8080/e.ts"),
            ("", "http://127.0.0.1:8080/live/stream/master.m3u8?token=1"),
        ];
        for (reference, want) in cases {
            assert_eq!(resolve_uri(&base, reference).unwrap().to_string(), want);
        }
    }

    #[test]
    fn entry_playlists() {
        let url = uri("http://localhost/s/master.m3u8");
        let master = "#EXTM3U\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000\nr1/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=300000\nr0/index.m3u8\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI=\"iframes.m3u8\"\n";
        let renditions = parse_entry_playlist(master.as_bytes(), &url).unwrap();
        assert_eq!(
            renditions,
            vec![
                Rendition {
                    bandwidth: 800_000,
                    playlist: "http://localhost/s/r1/index.m3u8".to_owned(),
                },
                Rendition {
                    bandwidth: 300_000,
                    playlist: "http://localhost/s/r0/index.m3u8".to_owned(),
                },
            ]
        );
        let fixed = select_renditions(renditions.clone(), Some(0)).unwrap();
        assert_eq!(fixed.len(), 1);
        assert_eq!(fixed[0].bandwidth, 300_000);
        assert!(select_renditions(renditions, Some(2)).is_err());

        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n0.ts\n";
        let single = parse_entry_playlist(media.as_bytes(), &url).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].playlist, "http://localhost/s/master.m3u8");
        assert!(parse_entry_playlist(b"<html>", &url).is_err());
    }

    #[test]
    fn media_playlist_update() {
        let url = uri("http://127.0.0.1/s/r1/index.m3u8");
        let text = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:2.000,\n41.ts\n#EXTINF:1.5,\n42.ts\n#EXT-X-ENDLIST\n";
        let update = parse_media_playlist(text.as_bytes(), 1, &url).unwrap();
        assert_eq!(update.rendition, 1);
        assert_eq!(update.target_duration, Duration::from_secs(2));
        assert_eq!(update.media_sequence, 41);
        assert!(update.ended);
        assert_eq!(
            update.segments,
            vec![
                Segment {
                    sequence: 41,
                    uri: "http://127.0.0.1/s/r1/41.ts".to_owned(),
                    duration: Duration::from_secs(2),
                },
                Segment {
                    sequence: 42,
                    uri: "http://127.0.0.1/s/r1/42.ts".to_owned(),
                    duration: Duration::from_millis(1500),
                },
            ]
        );
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n";
        assert!(parse_media_playlist(master.as_bytes(), 0, &url).is_err());
    }

    #[test]
    fn sessions_without_churn_arrive_evenly() {
        let plans = plan_sessions(4, Duration::from_secs(20), Duration::from_secs(2), 0.0, 1);
        let starts: Vec<u64> = plans.iter().map(|p| p.start.as_millis() as u64).collect();
        assert_eq!(starts, vec![0, 500, 1000, 1500]);
        assert!(plans.iter().all(|p| p.end == Duration::from_secs(20)));
    }

    #[test]
    fn churn_replaces_a_fraction_of_viewers_deterministically() {
        let duration = Duration::from_secs(60);
        let plans = plan_sessions(100, duration, Duration::from_secs(10), 0.3, 7);
        assert_eq!(plans.len(), 130);
        let early: Vec<&SessionPlan> = plans.iter().filter(|p| p.end < duration).collect();
        assert_eq!(early.len(), 30);
        for leaver in &early {
            assert!(leaver.end >= leaver.start);
            // Its replacement arrives when it leaves.
            assert!(plans
                .iter()
                .any(|p| p.start == leaver.end && p.end == duration));
        }
        // About 100 active at any time after the ramp.
        for t in [15u64, 30, 45, 59] {
            let t = Duration::from_secs(t);
            let active = plans.iter().filter(|p| p.start <= t && t < p.end).count();
            assert_eq!(active, 100, "{t:?}");
        }
        assert_eq!(
            plans,
            plan_sessions(100, duration, Duration::from_secs(10), 0.3, 7)
        );
        assert_ne!(
            plans,
            plan_sessions(100, duration, Duration::from_secs(10), 0.3, 8)
        );
        assert!(plans.windows(2).all(|w| w[0].start <= w[1].start));
        let everyone = plan_sessions(10, duration, Duration::ZERO, 1.0, 1);
        assert_eq!(everyone.iter().filter(|p| p.end < duration).count(), 10);
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("--url", "http://127.0.0.1:8080/m.m3u8", false).is_ok());
        assert!(check_url("--url", "http://[::1]:8080/m.m3u8", false).is_ok());
        let remote = check_url("--url", "http://example.com/m.m3u8", false);
        assert!(matches!(remote, Err(RunError::Usage(ref m)) if m.contains("--allow-remote")));
        assert!(check_url("--url", "http://example.com/m.m3u8", true).is_ok());
        assert!(check_url("--url", "https://127.0.0.1/m.m3u8", false).is_err());
        assert!(check_url("--url", "/m.m3u8", false).is_err());
    }

    #[test]
    fn invalid_configs() {
        let ok = RunConfig::default();
        assert!(validate(&ok).is_ok());
        for bad in [
            RunConfig {
                viewers: 0,
                ..RunConfig::default()
            },
            RunConfig {
                churn: 1.5,
                ..RunConfig::default()
            },
            RunConfig {
                ramp: Duration::from_secs(20),
                ..RunConfig::default()
            },
            RunConfig {
                duration: Duration::ZERO,
                ..RunConfig::default()
            },
        ] {
            assert_eq!(validate(&bad).map_err(|e| e.exit_code()), Err(2));
        }
    }
}
