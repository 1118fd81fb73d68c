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
//!
//! # Peer-assisted viewers (`--p2p on|ab`)
//!
//! A P2P viewer runs the real peer-assist node library in driven mode
//! ([`peer_assist::node::NodeConfig::driven`]): its node joins the swarm of the stream (the URL's
//! path, which must be a multivariant playlist, on the URL's gateway) while the player loads the
//! multivariant playlist, and every segment the player asks for is requested from the node with the
//! instant it plays (`now + buffer` while playing, `now + 1 s` while starting or stalled); the node
//! gets it from peers (verified against the gateway's digest) or over HTTP. Playlists still go over
//! HTTP from the viewer, as a real player's do. When the session ends (churn or end of run) the node
//! is stopped and its summary collected.
//!
//! A node serves one rendition's swarm at a time. With ABR (the default) a P2P viewer's node starts
//! in the swarm of the rendition the player starts with and switches swarms whenever the player
//! asks for a segment of another rendition
//! ([`SegmentFetcher::switch_rendition`](peer_assist::node::SegmentFetcher::switch_rendition)), as
//! the browser engine does on a level switch. ABR is fed the time of the transfer that brought each
//! segment in (the node's [`Fetched::took`](peer_assist::node::Fetched); for a peer's prefix
//! finished over HTTP, the HTTP fetch's), not the time the viewer waited for it, so it is fooled
//! neither by a fast peer nor by a wait for seeders nor by a slow peer HTTP took over from. With
//! `--rendition N` (bandwidth-ascending index) every viewer of both cohorts plays that one
//! rendition, given to the node as its index in playlist order.
//!
//! With `--p2p ab`, sessions alternate in arrival order: even-numbered ones are P2P, odd-numbered
//! ones HTTP. With `--liars F`, `round(F × P2P sessions)` of the P2P sessions, picked from the seed,
//! run a node that corrupts what it uploads.
//! With `--slow-peers F`, `round(F × P2P sessions)` of them, picked from the seed among the
//! honest ones first, run a node uploading at most `--slow-rate` bytes/s.
//!
//! With `--restart-cmd C --restart-at D`, `sh -c C` runs at `D` after the start (killed after
//! [`RESTART_TIMEOUT`]) while the viewers go on; its status and duration are reported.
//!
//! Verification: the first HTTP fetch of each segment path by an HTTP viewer is the reference;
//! every segment handed to a P2P viewer and every segment its node's summary logs is compared with
//! it. Paths without a reference are fetched once over HTTP after the run (at most
//! [`MAX_REFERENCE_FETCHES`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use peer_assist::hls::{self, Playlist};
use peer_assist::net::stream::ShapedConnector;
use peer_assist::net::Link;
use peer_assist::node::http::HttpError;
use peer_assist::node::{
    FetchError, NodeConfig, NodeHandle, SegmentFetcher, Source, TestBehaviour,
};
use peer_assist::protocol::signal::Transport;
use tokio::task::JoinSet;

use crate::netem::Network;
use crate::player::{
    Action, LowLatency, MediaPlaylistUpdate, PartRef, PlaybackState, Player, PlayerConfig,
    Rendition, Segment,
};
use crate::report::{
    self, Accepted, Cohort, P2pChecks, P2pMode, ProcessUsage, Report, ReportInputs, RequestTotals,
    RunParams, Sample, SessionResult, Traffic,
};

/// Per-request timeout (connection, headers and body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay before a viewer fetches the URL again after a failure.
const ENTRY_RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long after the end of the run viewers may take to hand back their counters.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Progress bar refresh period.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);
/// How long a node may take to stop and hand back its summary.
const NODE_STOP_TIMEOUT: Duration = Duration::from_millis(1500);
/// Deadline given to the node for a segment while the player is starting or stalled.
const P2P_UNSTARTED_DEADLINE: Duration = Duration::from_secs(1);
/// Segment paths without a reference fetched over HTTP after a P2P run, at most.
pub const MAX_REFERENCE_FETCHES: usize = 200;
/// Period of the timeline samples.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// `User-Agent` of every request.
const USER_AGENT: &str = concat!("loadtest/", env!("CARGO_PKG_VERSION"));

pub(crate) type HttpClient = Client<ShapedConnector, Empty<Bytes>>;
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
    /// Seed of the churn and liar draws.
    pub seed: u64,
    /// Fixed rendition (index in bandwidth-ascending order; no ABR); `None`: ABR.
    pub rendition: Option<usize>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Where to write the HTML report.
    pub html: Option<PathBuf>,
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
    /// Peer-assisted viewers: none, all, or every other one.
    pub p2p: P2pMode,
    /// Fraction (0..=1) of the P2P sessions whose node corrupts its uploads (test switch).
    pub liars: f64,
    /// Fraction (0..=1) of the P2P sessions whose node uploads at most `slow_rate` bytes/s.
    pub slow_peers: f64,
    /// Upload rate of the slow peers, bytes per second.
    pub slow_rate: u64,
    /// Shell command restarting the gateway, run with `sh -c` at `restart_at`.
    pub restart_cmd: Option<String>,
    /// When to run `restart_cmd`, after the start of the run.
    pub restart_at: Option<Duration>,
    /// Each viewer's emulated link, drawn from these ranges (all its HTTP and QUIC traffic).
    pub network: Network,
    /// The address P2P viewers' nodes bind their QUIC sockets to (and announce); default
    /// 127.0.0.1.
    pub p2p_bind: Option<std::net::IpAddr>,
    /// Play only this shard's sessions of the run (`--shard I/N`, [`crate::shard`]).
    pub shard: Option<crate::shard::Shard>,
}

/// Default upload rate of slow peers (`--slow-rate`), bytes per second.
pub const DEFAULT_SLOW_RATE: u64 = 50_000;
/// How long the restart command may run before it is killed.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

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
            html: None,
            gateway_metrics: None,
            gateway_pid: None,
            allow_remote: false,
            progress: false,
            request_timeout: REQUEST_TIMEOUT,
            player: PlayerConfig::default(),
            p2p: P2pMode::Off,
            liars: 0.0,
            slow_peers: 0.0,
            slow_rate: DEFAULT_SLOW_RATE,
            restart_cmd: None,
            restart_at: None,
            network: Network::default(),
            p2p_bind: None,
            shard: None,
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
    /// The JSON or HTML report could not be written (exit status 1).
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

/// The project's one duration grammar ("20s", "2m", "1m30s", "500ms", plain seconds).
pub use peer_assist::units::parse_duration;

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

/// Resolves a URI reference found in a playlist against the playlist's URL: the project's one
/// resolution ([`peer_assist::hls::uri::resolve_url`], RFC 3986 as browsers apply it).
pub fn resolve_uri(base: &Uri, reference: &str) -> Result<Uri, String> {
    let url = hls::uri::resolve_url(&base.to_string(), reference)?;
    url.parse()
        .map_err(|e: http::uri::InvalidUri| format!("invalid URI {reference:?}: {e}"))
}

/// The renditions named by the URL's playlist: the variant streams of a multivariant playlist
/// (I-frame streams excluded; URIs resolved against `url`), or the URL itself for a media playlist
/// (bandwidth unknown: 0).
pub fn parse_entry_playlist(body: &[u8], url: &Uri) -> Result<Vec<Rendition>, String> {
    match hls::parse(body) {
        Ok(Playlist::Multivariant(master)) => {
            let renditions = master
                .variants
                .iter()
                .map(|v| {
                    Ok(Rendition {
                        bandwidth: v.bandwidth.unwrap_or(0),
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
        Ok(Playlist::Media(_)) => Ok(vec![Rendition {
            bandwidth: 0,
            playlist: url.to_string(),
        }]),
        Err(e) => Err(format!("not a usable HLS playlist: {e}")),
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

/// The index in playlist order (what the gateway's tracker calls the rendition: the position among
/// the `EXT-X-STREAM-INF` entries) of each rendition the player plays, in the player's order
/// (bandwidth-ascending, a stable sort): every variant, or only `fixed` (bandwidth-ascending index).
/// `body` must be a multivariant playlist.
pub fn p2p_positions(body: &[u8], fixed: Option<usize>) -> Result<Vec<u32>, String> {
    let master = match hls::parse(body) {
        Ok(Playlist::Multivariant(master)) => master,
        Ok(Playlist::Media(_)) => return Err(
            "--p2p needs --url to be a multivariant playlist (a node joins the swarm of one of \
                 its variants), not a media playlist"
                .to_owned(),
        ),
        Err(e) => return Err(format!("not a usable HLS playlist: {e}")),
    };
    let mut variants: Vec<(usize, u64)> = master
        .variants
        .iter()
        .enumerate()
        .map(|(position, v)| (position, v.bandwidth.unwrap_or(0)))
        .collect();
    // Stable, like the player's and `select_renditions`' sort.
    variants.sort_by_key(|&(_, bandwidth)| bandwidth);
    let count = variants.len();
    if count == 0 {
        return Err("the multivariant playlist has no variant stream".to_owned());
    }
    let positions = variants
        .into_iter()
        .map(|(position, _)| u32::try_from(position).map_err(|_| "too many variants".to_owned()))
        .collect::<Result<Vec<u32>, String>>()?;
    match fixed {
        None => Ok(positions),
        Some(sorted) => positions.get(sorted).map(|&p| vec![p]).ok_or_else(|| {
            format!("--rendition {sorted}: the stream has {count} rendition(s), numbered from 0")
        }),
    }
}

/// Which of `count` P2P sessions (in arrival order) run a lying node: `round(fraction × count)` of
/// them, picked from `seed`.
pub fn pick_liars(count: usize, fraction: f64, seed: u64) -> Vec<bool> {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let liars = ((fraction * count as f64).round() as usize).min(count);
    // A stream of draws independent of the churn's for the same seed.
    let mut rng = SplitMix64(seed ^ 0x6C69_6172_735F_7032);
    let mut order: Vec<usize> = (0..count).collect();
    let mut picked = vec![false; count];
    for k in 0..liars {
        let j = k + rng.below(count - k);
        order.swap(k, j);
        if let Some(p) = picked.get_mut(order[k]) {
            *p = true;
        }
    }
    picked
}

/// Which of `count` P2P sessions (in arrival order) run a slow node: `round(fraction × count)` of
/// them, picked from `seed`, among the sessions that are not liars first (liars only when there are
/// not enough honest sessions).
pub fn pick_slow_peers(count: usize, fraction: f64, seed: u64, liars: &[bool]) -> Vec<bool> {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let wanted = ((fraction * count as f64).round() as usize).min(count);
    let mut rng = SplitMix64(seed ^ 0x736C_6F77_5F70_3032);
    let is_liar = |i: usize| liars.get(i).copied().unwrap_or(false);
    let mut honest: Vec<usize> = (0..count).filter(|&i| !is_liar(i)).collect();
    let mut lying: Vec<usize> = (0..count).filter(|&i| is_liar(i)).collect();
    // Seeded shuffles of both groups; honest ones are taken first.
    for group in [&mut honest, &mut lying] {
        for k in 0..group.len() {
            let j = k + rng.below(group.len() - k);
            group.swap(k, j);
        }
    }
    let mut picked = vec![false; count];
    for i in honest.into_iter().chain(lying).take(wanted) {
        picked[i] = true;
    }
    picked
}

/// What the restart command did (`restart` in the report).
pub type RestartOutcome = report::Restart;

/// Runs `command` with `sh -c` at `at` after `start`, killing it after [`RESTART_TIMEOUT`].
async fn restart_gateway(command: String, start: Instant, at: Duration) -> RestartOutcome {
    tokio::time::sleep_until(tokio::time::Instant::from_std(start + at)).await;
    let began = Instant::now();
    let at_s = began.duration_since(start).as_secs_f64();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let (status, code) = match child {
        Err(e) => (format!("cannot start: {e}"), None),
        Ok(mut child) => match tokio::time::timeout(RESTART_TIMEOUT, child.wait()).await {
            Ok(Ok(st)) => (st.to_string(), st.code()),
            Ok(Err(e)) => (format!("wait failed: {e}"), None),
            Err(_) => {
                let _ = child.kill().await;
                (
                    format!("killed after {} s", RESTART_TIMEOUT.as_secs()),
                    None,
                )
            }
        },
    };
    report::Restart {
        at_s: round3(at_s),
        duration_s: round3(began.elapsed().as_secs_f64()),
        status,
        code,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The node configuration of a P2P viewer for `url` (a loopback or allowed gateway URL).
fn node_config(url: &Uri, rendition: u32) -> NodeConfig {
    let scheme = url.scheme_str().unwrap_or("http");
    let authority = url.authority().map_or("", |a| a.as_str());
    NodeConfig {
        driven: true,
        rendition,
        duration: None,
        // Simulated viewers are native peers: QUIC between them, no idle WebRTC stack per viewer.
        transports: vec![Transport::Quic],
        ..NodeConfig::new(&format!("{scheme}://{authority}"), url.path())
    }
}

/// A media playlist as a [`MediaPlaylistUpdate`] for `rendition`, segment URIs resolved against
/// `url` (the playlist's URL).
pub fn parse_media_playlist(
    body: &[u8],
    rendition: usize,
    url: &Uri,
) -> Result<MediaPlaylistUpdate, String> {
    let playlist = match hls::parse(body) {
        Ok(Playlist::Media(p)) => p,
        Ok(Playlist::Multivariant(_)) => {
            return Err("expected a media playlist, got a multivariant playlist".to_owned())
        }
        Err(e) => return Err(format!("not a usable HLS playlist: {e}")),
    };
    let parts = |parts: &[hls::playlist::Part]| {
        parts
            .iter()
            .map(|part| {
                Ok(PartRef {
                    uri: resolve_uri(url, &part.uri)?.to_string(),
                    duration: part.duration,
                })
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let segments = playlist
        .segments
        .iter()
        .map(|segment| {
            Ok(Segment {
                sequence: segment.sequence,
                uri: resolve_uri(url, &segment.uri)?.to_string(),
                duration: segment.duration,
                program_date_time: segment.program_date_time,
                parts: parts(&segment.parts)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let control = &playlist.server_control;
    let low_latency = playlist
        .part_target
        .filter(|_| control.can_block_reload)
        .map(|part_target| LowLatency {
            part_target,
            part_hold_back: control
                .part_hold_back
                .unwrap_or(part_target.saturating_mul(3)),
        });
    Ok(MediaPlaylistUpdate {
        rendition,
        target_duration: playlist.target_duration,
        media_sequence: playlist.media_sequence,
        segments,
        ended: playlist.is_vod(),
        trailing_parts: parts(&playlist.trailing_parts)?,
        low_latency,
    })
}

/// Counters of one cohort's viewers.
struct Recorder {
    active: AtomicU64,
    stalls: AtomicU64,
    /// Viewers stalled as of their last wake-up.
    stalled: AtomicU64,
    segments: AtomicU64,
    bytes: AtomicU64,
    peer_bytes: AtomicU64,
    failures: AtomicU64,
    http_errors: Mutex<BTreeMap<String, u64>>,
    latency_us: Mutex<Histogram<u64>>,
    /// How far behind live the viewers' pictures were, sampled at each playlist load.
    live_latency_us: Mutex<Histogram<u64>>,
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
            stalled: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            peer_bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            http_errors: Mutex::new(BTreeMap::new()),
            latency_us: Mutex::new(report::latency_histogram()),
            live_latency_us: Mutex::new(report::latency_histogram()),
            distinct: Mutex::new(HashSet::new()),
        }
    }

    /// A failed fetch with an HTTP status (or `"timeout"`, `"network"`... when there was no answer).
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

    fn live_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        lock(&self.live_latency_us).saturating_record(us);
    }

    fn traffic(&self) -> Traffic {
        Traffic {
            totals: RequestTotals {
                segments: self.segments.load(Ordering::Relaxed),
                distinct_segments: lock(&self.distinct).len() as u64,
                bytes: self.bytes.load(Ordering::Relaxed),
                peer_bytes: self.peer_bytes.load(Ordering::Relaxed),
                failures: self.failures.load(Ordering::Relaxed),
                http_errors: lock(&self.http_errors).clone(),
            },
            segment_latency_us: lock(&self.latency_us).clone(),
            live_latency_us: lock(&self.live_latency_us).clone(),
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
    /// By [`Cohort::index`].
    recorders: [Recorder; 2],
    /// With `--p2p on|ab`.
    p2p: Option<P2pShared>,
}

/// What the P2P side of a run shares.
struct P2pShared {
    /// Every viewer's node starts from this (driven, the player's first rendition, no duration).
    node: NodeConfig,
    /// The player's renditions (bandwidth-ascending, as it numbers them) by their index in
    /// playlist order, as the tracker numbers them.
    positions: Vec<u32>,
    /// Segment path → SHA-256 (hex) of the first successful HTTP fetch of it by an HTTP viewer.
    references: Mutex<HashMap<String, String>>,
    /// Segments handed to P2P viewers by their nodes.
    accepted: Mutex<Vec<Accepted>>,
    node_start_failures: AtomicU64,
    /// Each node declares its emulated uplink in `join` (`--declare-uplink`).
    declare_uplink: bool,
    /// One warning per run for node start failures.
    warned: AtomicBool,
}

impl Shared {
    fn recorder(&self, cohort: Cohort) -> &Recorder {
        &self.recorders[cohort.index()]
    }

    fn active(&self) -> u64 {
        self.recorders
            .iter()
            .map(|r| r.active.load(Ordering::Relaxed))
            .sum()
    }
}

/// A completed HTTP exchange.
pub(crate) struct Fetched {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
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

/// An HTTP client; with a link, every connection it opens goes through it.
pub(crate) fn build_client(link: Option<Arc<Link>>) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(ShapedConnector::new(connector, link))
}

/// Why a GET gave no answer at all (an error status is an answer). Neither is the viewer's fault:
/// the server or the network failed it.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Network(String),
}

impl GetError {
    /// The key it is counted under in the report's `http_errors`.
    pub fn label(&self) -> &'static str {
        match self {
            GetError::Timeout => "timeout",
            GetError::Network(_) => "network",
        }
    }
}

/// The key a driven node's failure is counted under in `http_errors`: the status, or what broke.
pub fn fetch_error_label(error: &FetchError) -> String {
    match error {
        FetchError::Http(HttpError::Absent(s) | HttpError::Status(s)) => s.as_str().to_owned(),
        FetchError::Http(HttpError::Timeout) => "timeout".to_owned(),
        FetchError::Http(HttpError::TooLarge(_)) => "too_large".to_owned(),
        FetchError::Http(_) => "network".to_owned(),
        FetchError::Stopped => "node_stopped".to_owned(),
    }
}

/// GET `uri` (headers and whole body within `timeout`).
pub(crate) async fn http_get(
    client: &HttpClient,
    uri: Uri,
    timeout: Duration,
) -> Result<Fetched, GetError> {
    let started = Instant::now();
    let request = Request::get(uri)
        .header(header::USER_AGENT, USER_AGENT)
        .body(Empty::new())
        .map_err(|e| GetError::Network(error_chain(&e)))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| GetError::Network(error_chain(&e)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| GetError::Network(error_chain(&e)))?
            .to_bytes();
        Ok::<_, GetError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| GetError::Timeout)??;
    Ok(Fetched {
        status,
        body,
        elapsed: started.elapsed(),
    })
}

/// One session's identity, handed to its fetches.
#[derive(Clone)]
struct Session {
    shared: Arc<Shared>,
    /// Arrival number (0-based).
    number: usize,
    cohort: Cohort,
    /// This viewer's HTTP client: the shared one, or its own through its emulated link.
    client: HttpClient,
    /// Its emulated link (`--uplink` ...), also given to its node.
    link: Option<Arc<Link>>,
}

impl Session {
    fn recorder(&self) -> &Recorder {
        self.shared.recorder(self.cohort)
    }

    /// GET, recording bytes and failures; the body and download time of a 2xx answer.
    async fn fetch(&self, uri: Uri) -> Option<(Bytes, Duration)> {
        let recorder = self.recorder();
        match http_get(&self.client, uri, self.shared.timeout).await {
            Ok(fetched) => {
                recorder
                    .bytes
                    .fetch_add(fetched.body.len() as u64, Ordering::Relaxed);
                if fetched.status.is_success() {
                    Some((fetched.body, fetched.elapsed))
                } else {
                    recorder.http_error(fetched.status.as_str());
                    None
                }
            }
            Err(e) => {
                recorder.http_error(e.label());
                None
            }
        }
    }

    /// The renditions this viewer plays, from the URL.
    async fn load_renditions(&self) -> Option<Vec<Rendition>> {
        let url = &self.shared.url;
        let (body, _) = self.fetch(url.clone()).await?;
        let renditions = parse_entry_playlist(&body, url)
            .and_then(|r| select_renditions(r, self.shared.rendition));
        if renditions.is_err() {
            self.recorder().failure();
        }
        renditions.ok()
    }

    /// Starts this viewer's node, retrying until it runs (or the session is cancelled).
    async fn start_node(&self, test: TestBehaviour) -> Option<NodeHandle> {
        let p2p = self.shared.p2p.as_ref()?;
        let mut config = p2p.node.clone();
        config.test = test;
        config.link = self.link.clone();
        if p2p.declare_uplink {
            config.capacity = self
                .link
                .as_ref()
                .and_then(|l| l.profile.uplink_bps)
                .map(|b| b / 8);
        }
        loop {
            match peer_assist::node::start(config.clone()).await {
                Ok(node) => return Some(node),
                Err(e) => {
                    p2p.node_start_failures.fetch_add(1, Ordering::Relaxed);
                    self.recorder().failure();
                    if !p2p.warned.swap(true, Ordering::Relaxed) {
                        eprintln!("loadtest: warning: a viewer's node did not start: {e}");
                    }
                    tokio::time::sleep(ENTRY_RETRY_DELAY).await;
                }
            }
        }
    }
}

type PlaylistDone = (usize, Option<MediaPlaylistUpdate>);
/// (rendition, sequence, Some((bytes, time for ABR, from peers)) or None on failure).
type SegmentDone = (usize, u64, Option<(u64, Duration, bool)>);
type PartDone = (usize, u64, u64, bool);

/// An LL-HLS part, over HTTP for every viewer: parts are at the live edge, where no peer holds
/// them in time.
async fn fetch_part(
    session: Session,
    rendition: usize,
    sequence: u64,
    part: u64,
    uri: String,
) -> PartDone {
    let Ok(parsed) = uri.parse::<Uri>() else {
        session.recorder().failure();
        return (rendition, sequence, part, false);
    };
    let Some((_, elapsed)) = session.fetch(parsed).await else {
        return (rendition, sequence, part, false);
    };
    session.recorder().segment(&uri, elapsed);
    (rendition, sequence, part, true)
}

/// The playlist URL with a blocking reload's directives.
fn blocking_uri(uri: &Uri, msn: u64, part: u64) -> Option<Uri> {
    let directives = format!("_HLS_msn={msn}&_HLS_part={part}");
    let path_and_query = match uri.query() {
        Some(q) => format!("{}?{q}&{directives}", uri.path()),
        None => format!("{}?{directives}", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

async fn fetch_playlist(session: Session, rendition: usize, uri: Uri) -> PlaylistDone {
    let Some((body, _)) = session.fetch(uri.clone()).await else {
        return (rendition, None);
    };
    let update = parse_media_playlist(&body, rendition, &uri).ok();
    if update.is_none() {
        session.recorder().failure();
    }
    (rendition, update)
}

/// A segment over HTTP. In a P2P run, the first HTTP fetch of each path is the reference the P2P
/// viewers' segments are checked against.
async fn fetch_segment(
    session: Session,
    rendition: usize,
    sequence: u64,
    uri: String,
) -> SegmentDone {
    let Ok(parsed) = uri.parse::<Uri>() else {
        session.recorder().failure();
        return (rendition, sequence, None);
    };
    let path = parsed.path().to_owned();
    let Some((body, elapsed)) = session.fetch(parsed).await else {
        return (rendition, sequence, None);
    };
    session.recorder().segment(&uri, elapsed);
    if let Some(p2p) = &session.shared.p2p {
        if !lock(&p2p.references).contains_key(&path) {
            let digest = report::sha256_hex(&body);
            lock(&p2p.references).entry(path).or_insert(digest);
        }
    }
    (
        rendition,
        sequence,
        Some((body.len() as u64, elapsed, false)),
    )
}

/// A segment through the viewer's node, needed at `plays_at`.
async fn fetch_segment_p2p(
    session: Session,
    fetcher: SegmentFetcher,
    rendition: usize,
    sequence: u64,
    uri: String,
    plays_at: Instant,
) -> SegmentDone {
    let recorder = session.recorder();
    let Ok(parsed) = uri.parse::<Uri>() else {
        recorder.failure();
        return (rendition, sequence, None);
    };
    let path = parsed.path();
    let started = Instant::now();
    // The node answers with the segment (from peers or HTTP) or HTTP's error; the request timeout
    // bounds the wait.
    let result = tokio::time::timeout(session.shared.timeout, fetcher.fetch(path, plays_at)).await;
    let elapsed = started.elapsed();
    let fetched = match result {
        Ok(Ok(fetched)) => fetched,
        Ok(Err(e)) => {
            recorder.http_error(&fetch_error_label(&e));
            return (rendition, sequence, None);
        }
        Err(_) => {
            recorder.http_error(GetError::Timeout.label());
            return (rendition, sequence, None);
        }
    };
    let len = fetched.bytes.len() as u64;
    let peer = fetched.source == Source::P2p;
    if peer {
        recorder.peer_bytes.fetch_add(len, Ordering::Relaxed);
    } else {
        recorder.bytes.fetch_add(len, Ordering::Relaxed);
    }
    recorder.segment(&uri, elapsed);
    // ABR sees the transfer that brought the segment in (a store hit: the one that stored it).
    let took = fetched.took.max(Duration::from_millis(1));
    if let Some(p2p) = &session.shared.p2p {
        let sha256 = report::sha256_hex(&fetched.bytes);
        lock(&p2p.accepted).push(Accepted {
            viewer: session.number,
            id: path.to_owned(),
            sha256,
            peer,
        });
    }
    (rendition, sequence, Some((len, took, peer)))
}

/// When the segment about to be fetched plays: when the buffer runs dry while playing, else in a
/// second (starting or stalled).
fn plays_at(player: &Player, now: Instant) -> Instant {
    match player.state_at(now) {
        PlaybackState::Playing => now + player.buffer(now),
        _ => now + P2P_UNSTARTED_DEADLINE,
    }
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
    node: Option<NodeHandle>,
    stalls_reported: u32,
    /// Counted in the recorder's `stalled`.
    stalled: bool,
}

/// One session until `leave_at`: its QoE counters (`None` if it never got a player) and, for a P2P
/// viewer, its node's summary.
async fn viewer(session: Session, leave_at: Instant, test: TestBehaviour) -> SessionResult {
    let liar = test.lie;
    let slow = test.slow_upload.is_some();
    let recorder = session.recorder();
    let _active = ActiveGuard::enter(&recorder.active);
    let mut state = Viewer::default();
    let deadline = tokio::time::Instant::from_std(leave_at);
    // Cancelled at `leave_at` (in-flight requests are dropped) unless the session ends first.
    let _ = tokio::time::timeout_at(deadline, drive(&session, &mut state, test)).await;
    if state.stalled {
        recorder.stalled.fetch_sub(1, Ordering::Relaxed);
        state.stalled = false;
    }
    let now = Instant::now();
    let stats = state.player.as_ref().map(|p| p.stats(now));
    let node = match state.node.take() {
        Some(node) => tokio::time::timeout(NODE_STOP_TIMEOUT, node.stop())
            .await
            .ok(),
        None => None,
    };
    SessionResult {
        number: session.number,
        p2p: session.cohort == Cohort::P2p,
        stats,
        node,
        liar,
        slow,
    }
}

async fn drive(session: &Session, state: &mut Viewer, test: TestBehaviour) {
    let session_start = Instant::now();
    let Viewer {
        player: player_slot,
        node: node_slot,
        stalls_reported,
        stalled,
    } = state;
    let load = async {
        loop {
            if let Some(renditions) = session.load_renditions().await {
                break renditions;
            }
            tokio::time::sleep(ENTRY_RETRY_DELAY).await;
        }
    };
    // A P2P viewer's node joins the swarm while the player loads the multivariant playlist.
    let start = async {
        if session.cohort == Cohort::P2p {
            *node_slot = session.start_node(test).await;
        }
    };
    let (renditions, ()) = tokio::join!(load, start);
    let fetcher = node_slot.as_ref().map(NodeHandle::fetcher);
    // The swarm the node is in (playlist order), and the player's renditions in that numbering.
    let positions: &[u32] = session.shared.p2p.as_ref().map_or(&[], |p| &p.positions);
    let mut node_rendition = session.shared.p2p.as_ref().map(|p| p.node.rendition);
    // The session (and its startup time) began with the request for the URL.
    let player = player_slot.insert(Player::new(
        session.shared.player.clone(),
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
    let mut part_fetch: Option<BoxFuture<PartDone>> = None;
    loop {
        let now = Instant::now();
        let wake = loop {
            match player.poll(now) {
                Action::FetchPlaylist { rendition } => {
                    match playlists.get(rendition).cloned().flatten() {
                        Some(uri) => {
                            playlist_fetch =
                                Some(Box::pin(fetch_playlist(session.clone(), rendition, uri)));
                        }
                        None => {
                            session.recorder().failure();
                            player.playlist_failed(now, rendition);
                        }
                    }
                }
                Action::BlockingReload {
                    rendition,
                    msn,
                    part,
                } => {
                    let uri = playlists.get(rendition).cloned().flatten();
                    match uri.and_then(|uri| blocking_uri(&uri, msn, part)) {
                        Some(uri) => {
                            playlist_fetch =
                                Some(Box::pin(fetch_playlist(session.clone(), rendition, uri)));
                        }
                        None => {
                            session.recorder().failure();
                            player.playlist_failed(now, rendition);
                        }
                    }
                }
                Action::FetchPart {
                    rendition,
                    sequence,
                    part,
                    uri,
                } => {
                    part_fetch = Some(Box::pin(fetch_part(
                        session.clone(),
                        rendition,
                        sequence,
                        part,
                        uri,
                    )));
                }
                Action::FetchSegment {
                    rendition,
                    sequence,
                    uri,
                } => {
                    if let (Some(fetcher), Some(&want)) = (&fetcher, positions.get(rendition)) {
                        if node_rendition != Some(want) {
                            fetcher.switch_rendition(want);
                            node_rendition = Some(want);
                        }
                    }
                    segment_fetch = Some(match &fetcher {
                        Some(fetcher) => Box::pin(fetch_segment_p2p(
                            session.clone(),
                            fetcher.clone(),
                            rendition,
                            sequence,
                            uri,
                            plays_at(player, now),
                        )),
                        None => Box::pin(fetch_segment(session.clone(), rendition, sequence, uri)),
                    });
                }
                Action::WaitUntil(at) => break Some(at),
                Action::Done => break None,
            }
        };
        let stalls = player.stats(now).stalls;
        if stalls > *stalls_reported {
            session
                .recorder()
                .stalls
                .fetch_add(u64::from(stalls - *stalls_reported), Ordering::Relaxed);
            *stalls_reported = stalls;
        }
        let stalled_now = player.state_at(now) == PlaybackState::Stalled;
        if stalled_now != *stalled {
            let counter = &session.recorder().stalled;
            if stalled_now {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
            *stalled = stalled_now;
        }
        let Some(wake) = wake else {
            return;
        };
        tokio::select! {
            (rendition, update) = completion(&mut playlist_fetch) => {
                playlist_fetch = None;
                let now = Instant::now();
                match update {
                    Some(update) => {
                        player.playlist_loaded(now, update);
                        if let Some(latency) = player.live_latency(now, SystemTime::now()) {
                            session.recorder().live_latency(latency);
                        }
                    }
                    None => player.playlist_failed(now, rendition),
                }
            }
            (rendition, sequence, part, loaded) = completion(&mut part_fetch) => {
                part_fetch = None;
                let now = Instant::now();
                if loaded {
                    player.part_loaded(now, rendition, sequence, part);
                } else {
                    player.part_failed(now, rendition, sequence, part);
                }
            }
            (rendition, sequence, result) = completion(&mut segment_fetch) => {
                segment_fetch = None;
                let now = Instant::now();
                match result {
                    Some((bytes, elapsed, false)) => {
                        player.segment_loaded(now, rendition, sequence, bytes, elapsed);
                    }
                    Some((bytes, elapsed, true)) => {
                        player.segment_loaded_from_peers(now, rendition, sequence, bytes, elapsed);
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
    if !(config.liars.is_finite() && (0.0..=1.0).contains(&config.liars)) {
        return usage("--liars must be a fraction between 0 and 1");
    }
    if config.liars > 0.0 && config.p2p == P2pMode::Off {
        return usage("--liars needs --p2p on or --p2p ab");
    }
    if !(config.slow_peers.is_finite() && (0.0..=1.0).contains(&config.slow_peers)) {
        return usage("--slow-peers must be a fraction between 0 and 1");
    }
    if config.slow_peers > 0.0 && config.p2p == P2pMode::Off {
        return usage("--slow-peers needs --p2p on or --p2p ab");
    }
    if config.slow_rate == 0 {
        return usage("--slow-rate must be positive");
    }
    if config.restart_at.is_some() && config.restart_cmd.is_none() {
        return usage("--restart-at needs --restart-cmd");
    }
    if config.restart_at.is_some_and(|at| at >= config.duration) {
        return usage("--restart-at must be before the end of the run (--duration)");
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
    let fetched = http_get(client, url.clone(), timeout)
        .await
        .map_err(|e| e.to_string())?;
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

fn read_machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    report::proc_stat_machine_ticks(&stat)
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
        let sum = |counter: fn(&Recorder) -> &AtomicU64| -> u64 {
            shared
                .recorders
                .iter()
                .map(|r| counter(r).load(Ordering::Relaxed))
                .sum()
        };
        bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!(
            "{:.0}/{:.0} s  {} viewers  {} stalls  {} segments",
            elapsed.as_secs_f64(),
            duration.as_secs_f64(),
            shared.active(),
            sum(|r| &r.stalls),
            sum(|r| &r.segments),
        ));
    }
}

/// The run's state now (summed over the cohorts).
fn sample(shared: &Shared, elapsed: Duration) -> Sample {
    let sum = |counter: fn(&Recorder) -> &AtomicU64| -> u64 {
        shared
            .recorders
            .iter()
            .map(|r| counter(r).load(Ordering::Relaxed))
            .sum()
    };
    Sample {
        elapsed_s: (elapsed.as_secs_f64() * 1e3).round() / 1e3,
        active: sum(|r| &r.active),
        stalls: sum(|r| &r.stalls),
        stalled: sum(|r| &r.stalled),
        bytes_http: sum(|r| &r.bytes),
        bytes_peer: sum(|r| &r.peer_bytes),
    }
}

/// Samples the run every [`SAMPLE_PERIOD`] from `start` to `start + duration` (both included).
async fn sample_timeline(
    shared: Arc<Shared>,
    start: Instant,
    duration: Duration,
    timeline: Arc<Mutex<Vec<Sample>>>,
) {
    for k in 0u32.. {
        let at = SAMPLE_PERIOD.saturating_mul(k).min(duration);
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + at)).await;
        let elapsed = start.elapsed().min(duration);
        lock(&timeline).push(sample(&shared, elapsed));
        if at >= duration {
            return;
        }
    }
}

/// Runs the viewers and returns the report (also written to `config.json` and `config.html` if
/// set).
pub async fn run(config: RunConfig) -> Result<Report, RunError> {
    validate(&config)?;
    let url = check_url("--url", &config.url, config.allow_remote)?;
    let metrics_url = config
        .gateway_metrics
        .as_deref()
        .map(|m| check_url("--gateway-metrics", m, config.allow_remote))
        .transpose()?;
    for path in [&config.json, &config.html].into_iter().flatten() {
        // Fail before the run rather than lose its report.
        std::fs::File::create(path).map_err(|source| RunError::Io {
            path: path.clone(),
            source,
        })?;
    }
    let client = build_client(None);
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
    let rendition = config.rendition;
    let mut p2p = None;
    let mut checks = P2pChecks::default();
    if config.p2p != P2pMode::Off {
        let positions = p2p_positions(&entry.body, config.rendition).map_err(RunError::Usage)?;
        checks.rendition = config.rendition;
        // The player starts with its lowest rendition (or the one configured), its node there.
        let first = match config.rendition {
            Some(_) => 0,
            None => config.player.abr.initial_rendition.unwrap_or(0),
        };
        let position = positions
            .get(first)
            .or(positions.last())
            .copied()
            .unwrap_or(0);
        let mut node = node_config(&url, position);
        if let Some(ip) = config.p2p_bind {
            node.bind = std::net::SocketAddr::new(ip, 0);
        }
        preflight_node(&node).await?;
        p2p = Some(P2pShared {
            node,
            positions,
            references: Mutex::new(HashMap::new()),
            accepted: Mutex::new(Vec::new()),
            node_start_failures: AtomicU64::new(0),
            declare_uplink: config.network.declare_uplink,
            warned: AtomicBool::new(false),
        });
    }
    select_renditions(renditions, rendition).map_err(RunError::Usage)?;
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
    let machine_before = read_machine_ticks();

    let plans = plan_sessions(
        config.viewers,
        config.duration,
        config.ramp,
        config.churn,
        config.seed,
    );
    let cohorts: Vec<Cohort> = (0..plans.len()).map(|i| config.p2p.cohort_of(i)).collect();
    let p2p_count = cohorts.iter().filter(|c| **c == Cohort::P2p).count();
    let liar_picks = pick_liars(p2p_count, config.liars, config.seed);
    let slow_picks = pick_slow_peers(p2p_count, config.slow_peers, config.seed, &liar_picks);
    let mut liars = liar_picks.into_iter().zip(slow_picks);
    let shared = Arc::new(Shared {
        client: client.clone(),
        url,
        rendition,
        player: config.player.clone(),
        timeout,
        recorders: [Recorder::new(), Recorder::new()],
        p2p,
    });
    let start = Instant::now();
    let end = start + config.duration;
    let restart = config.restart_cmd.clone().map(|command| {
        tokio::spawn(restart_gateway(
            command,
            start,
            config.restart_at.unwrap_or(Duration::ZERO),
        ))
    });
    let bar = progress_bar(config.progress, config.duration);
    let ticker = tokio::spawn(show_progress(
        bar.clone(),
        Arc::clone(&shared),
        start,
        config.duration,
    ));
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let sampler = tokio::spawn(sample_timeline(
        Arc::clone(&shared),
        start,
        config.duration,
        Arc::clone(&timeline),
    ));
    let mut viewers = JoinSet::new();
    for (number, (plan, cohort)) in plans.iter().zip(&cohorts).enumerate() {
        // Liars and slow peers are drawn over the whole run's P2P sessions, shards or not.
        let (liar, slow) = if *cohort == Cohort::P2p {
            liars.next().unwrap_or((false, false))
        } else {
            (false, false)
        };
        if config.shard.is_some_and(|s| !s.holds(number)) {
            continue;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + plan.start)).await;
        let test = TestBehaviour {
            forge_receipts: Default::default(),
            lie: liar,
            slow_upload: slow.then_some(config.slow_rate),
            honest_uploads: 0,
        };
        let (client, link) = if config.network.is_ideal() {
            (client.clone(), None)
        } else {
            let profile = config.network.draw(config.seed, number);
            let link = Arc::new(Link::new(profile, config.seed ^ number as u64));
            (build_client(Some(Arc::clone(&link))), Some(link))
        };
        let session = Session {
            shared: Arc::clone(&shared),
            number,
            cohort: *cohort,
            client,
            link,
        };
        viewers.spawn(viewer(session, start + plan.end, test));
    }
    let mut sessions: Vec<SessionResult> = Vec::with_capacity(plans.len());
    let mut lost = 0usize;
    let collect = async {
        while let Some(joined) = viewers.join_next().await {
            match joined {
                Ok(result) => sessions.push(result),
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
    sampler.abort();
    let restart = match restart {
        Some(mut task) => {
            match tokio::time::timeout(STOP_GRACE, &mut task).await {
                Ok(Ok(outcome)) => Some(outcome),
                Ok(Err(_)) => None,
                Err(_) => {
                    // Still running at the end of the run: killed (kill_on_drop).
                    task.abort();
                    let at = config.restart_at.unwrap_or(Duration::ZERO);
                    Some(report::Restart {
                        at_s: round3(at.as_secs_f64()),
                        duration_s: round3(start.elapsed().saturating_sub(at).as_secs_f64()),
                        status: "still running at the end of the run (killed)".to_owned(),
                        code: None,
                    })
                }
            }
        }
        None => None,
    };
    bar.finish_and_clear();
    let wall = start.elapsed();
    {
        // The run may end before the sampler's last sample (all viewers done, or a race at the end).
        let mut timeline = lock(&timeline);
        let elapsed = wall.min(config.duration);
        if timeline
            .last()
            .is_none_or(|last| last.elapsed_s < elapsed.as_secs_f64() - 0.5)
        {
            timeline.push(sample(&shared, elapsed));
        }
    }
    if lost > 0 {
        eprintln!("loadtest: warning: {lost} viewer(s) did not report (not counted)");
    }
    sessions.sort_by_key(|s| s.number);
    let distinct_urls: Vec<String> = {
        let http = lock(&shared.recorders[0].distinct);
        let p2p = lock(&shared.recorders[1].distinct);
        http.union(&p2p).cloned().collect()
    };
    let distinct = distinct_urls.len() as u64;

    let mut origin_fetches = None;
    let origin_requests_per_segment = match (&metrics_url, metrics_before) {
        (Some(m), Some(before)) => match gateway_segment_fetches(&client, m, timeout).await {
            Ok(after) => {
                origin_fetches = Some(after - before);
                report::origin_requests_per_segment(before, after, distinct)
            }
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
    let machine = machine_before
        .zip(read_machine_ticks())
        .and_then(|(before, after)| report::machine_busy(before, after));
    if let Some(p2p) = &shared.p2p {
        checks.corruption = verify_accepted(&shared, p2p, &sessions).await;
        checks.node_start_failures = p2p.node_start_failures.load(Ordering::Relaxed);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let http_traffic = shared.recorder(Cohort::Http).traffic();
    let p2p_traffic = shared.recorder(Cohort::P2p).traffic();
    let shard = config.shard.map(|shard| crate::shard::ShardData {
        shard,
        mode: config.p2p,
        wall_s: wall.as_secs_f64(),
        harness_cpu_s: harness_cpu,
        machine_busy: machine,
        cpus,
        gateway,
        origin_segment_fetches: origin_fetches,
        checks: crate::shard::RawChecks::of(&checks),
        sessions: sessions.iter().map(crate::shard::RawSession::of).collect(),
        http: crate::shard::RawTraffic::of(&http_traffic),
        p2p: crate::shard::RawTraffic::of(&p2p_traffic),
        distinct: distinct_urls,
        timeline: lock(&timeline).clone(),
    });
    let mut report = report::build_report(ReportInputs {
        mode: config.p2p,
        sessions: &sessions,
        wall,
        http: &http_traffic,
        p2p: &p2p_traffic,
        distinct_segments: distinct,
        origin_requests_per_segment,
        gateway,
        harness: report::harness_usage(harness_cpu, wall, cpus).with_machine(machine),
        checks,
    });
    report.shard = shard;
    report.params = Some(RunParams {
        url: config.url.clone(),
        viewers: config.viewers as u64,
        duration_s: config.duration.as_secs_f64(),
        ramp_s: config.ramp.as_secs_f64(),
        churn: config.churn,
        live_start: config.player.live_start_target_durations,
        network: (!config.network.is_ideal()).then(|| config.network.clone()),
    });
    report.timeline = std::mem::take(&mut *lock(&timeline));
    report.restart = restart;
    if let Some(path) = &config.json {
        let io = |source| RunError::Io {
            path: path.clone(),
            source,
        };
        let mut json = serde_json::to_string_pretty(&report).map_err(|e| io(e.into()))?;
        json.push('\n');
        std::fs::write(path, json).map_err(io)?;
    }
    if let Some(path) = &config.html {
        let html = crate::html::render(&report).map_err(|e| RunError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(path, html).map_err(|source| RunError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

/// Starts and stops one node before the run, so that a gateway without a tracker (or a stream it
/// cannot resolve) is reported at once rather than as viewers that never start.
async fn preflight_node(node: &NodeConfig) -> Result<(), RunError> {
    // The QUIC transport needs a process-wide crypto provider; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let handle = peer_assist::node::start(node.clone()).await.map_err(|e| {
        RunError::Unreachable(format!(
            "--p2p: cannot join the swarm of {}{} (rendition {}): {e}",
            node.gateway, node.stream, node.rendition
        ))
    })?;
    let _ = tokio::time::timeout(NODE_STOP_TIMEOUT, handle.stop()).await;
    Ok(())
}

/// Checks every segment P2P viewers accepted (handed over, or logged in their nodes' summaries)
/// against the HTTP references, fetching up to [`MAX_REFERENCE_FETCHES`] missing references.
async fn verify_accepted(
    shared: &Shared,
    p2p: &P2pShared,
    sessions: &[SessionResult],
) -> report::CorruptionCount {
    let mut accepted = std::mem::take(&mut *lock(&p2p.accepted));
    for session in sessions {
        let Some(summary) = &session.node else {
            continue;
        };
        accepted.extend(summary.log.iter().map(|record| Accepted {
            viewer: session.number,
            id: record.id.clone(),
            sha256: record.sha256.clone(),
            peer: record.source == Source::P2p,
        }));
    }
    let mut references = std::mem::take(&mut *lock(&p2p.references));
    let missing = report::references_missing(&references, &accepted, MAX_REFERENCE_FETCHES);
    let mut fetches = JoinSet::new();
    for path in missing {
        let uri = resolve_uri(&shared.url, &path).and_then(|u| {
            // Only a path was named: keep it on the gateway of the URL.
            (u.authority() == shared.url.authority())
                .then_some(u)
                .ok_or_else(|| format!("{path} is not a path"))
        });
        let Ok(uri) = uri else {
            continue;
        };
        let client = shared.client.clone();
        let timeout = shared.timeout;
        fetches.spawn(async move {
            let fetched = http_get(&client, uri, timeout).await.ok()?;
            fetched
                .status
                .is_success()
                .then(|| (path, report::sha256_hex(&fetched.body)))
        });
    }
    while let Some(joined) = fetches.join_next().await {
        if let Ok(Some((path, digest))) = joined {
            references.insert(path, digest);
        }
    }
    report::count_corrupted(&references, &accepted)
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
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
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
                    ..Segment::default()
                },
                Segment {
                    sequence: 42,
                    uri: "http://127.0.0.1/s/r1/42.ts".to_owned(),
                    duration: Duration::from_millis(1500),
                    ..Segment::default()
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
    fn p2p_positions_map_sorted_index_to_playlist_order() {
        // Playlist order: 800k, I-frames, 300k, 2M. I-frame playlists are not renditions (for the
        // gateway's tracker and the browser engine alike).
        let master = "#EXTM3U\n\
            #EXT-X-STREAM-INF:BANDWIDTH=800000\nr1/index.m3u8\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI=\"iframes.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=300000\nr0/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=2000000\nr2/index.m3u8\n";
        let body = master.as_bytes();
        // ABR: every rendition, bandwidth-ascending.
        assert_eq!(p2p_positions(body, None), Ok(vec![1, 0, 2]));
        assert_eq!(p2p_positions(body, Some(0)), Ok(vec![1]));
        assert_eq!(p2p_positions(body, Some(1)), Ok(vec![0]));
        assert_eq!(p2p_positions(body, Some(2)), Ok(vec![2]));
        assert!(p2p_positions(body, Some(3))
            .unwrap_err()
            .contains("3 rendition"));
        // Equal bandwidths keep playlist order (a stable sort, like the player's).
        let same = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000\na.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=300000\nb.m3u8\n";
        assert_eq!(p2p_positions(same.as_bytes(), None), Ok(vec![0, 1]));
        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n0.ts\n";
        assert!(p2p_positions(media.as_bytes(), None)
            .unwrap_err()
            .contains("multivariant"));
        assert!(p2p_positions(b"<html>", None).is_err());
    }

    #[test]
    fn node_config_names_the_gateway_and_the_stream() {
        let url = uri("http://127.0.0.1:8088/synthetic/master.m3u8?x=1");
        let node = node_config(&url, 3);
        assert_eq!(node.gateway, "http://127.0.0.1:8088");
        assert_eq!(node.stream, "/synthetic/master.m3u8");
        assert_eq!(node.rendition, 3);
        assert!(node.driven);
        assert_eq!(node.duration, None);
        assert!(!node.test.lie);
    }

    #[test]
    fn slow_peers_are_seeded_and_disjoint_from_liars() {
        let liars = pick_liars(10, 0.3, 7);
        let slow = pick_slow_peers(10, 0.4, 7, &liars);
        assert_eq!(slow, pick_slow_peers(10, 0.4, 7, &liars));
        assert_eq!(slow.iter().filter(|s| **s).count(), 4);
        assert!(slow.iter().zip(&liars).all(|(s, l)| !(*s && *l)));
        // Not enough honest sessions: every honest one, then liars.
        let all = pick_slow_peers(10, 0.9, 7, &liars);
        assert_eq!(all.iter().filter(|s| **s).count(), 9);
        assert!(all.iter().zip(&liars).all(|(s, l)| *s || *l));
        assert_eq!(pick_slow_peers(4, 0.0, 1, &[]), vec![false; 4]);
        assert_eq!(pick_slow_peers(0, 0.5, 1, &[]), Vec::<bool>::new());
        let seeds: HashSet<Vec<bool>> = (0..20).map(|s| pick_slow_peers(8, 0.25, s, &[])).collect();
        assert!(seeds.len() > 1);
    }

    #[test]
    fn liars_are_a_seeded_fraction() {
        let picked = pick_liars(8, 0.25, 1);
        assert_eq!(picked.len(), 8);
        assert_eq!(picked.iter().filter(|l| **l).count(), 2);
        assert_eq!(picked, pick_liars(8, 0.25, 1));
        assert_eq!(pick_liars(8, 0.0, 1), vec![false; 8]);
        assert_eq!(pick_liars(3, 1.0, 1), vec![true; 3]);
        assert_eq!(pick_liars(0, 0.5, 1), Vec::<bool>::new());
        assert_eq!(pick_liars(10, 0.33, 9).iter().filter(|l| **l).count(), 3);
        let seeds: HashSet<Vec<bool>> = (0..20).map(|s| pick_liars(8, 0.25, s)).collect();
        assert!(seeds.len() > 1);
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
        let liars = RunConfig {
            p2p: P2pMode::Ab,
            liars: 0.25,
            ..RunConfig::default()
        };
        assert!(validate(&liars).is_ok());
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
            RunConfig {
                liars: 0.25,
                ..RunConfig::default()
            },
            RunConfig {
                p2p: P2pMode::On,
                liars: 1.5,
                ..RunConfig::default()
            },
        ] {
            assert_eq!(validate(&bad).map_err(|e| e.exit_code()), Err(2));
        }
    }
}
