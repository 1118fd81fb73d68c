//! The end-of-run report of `loadtest run`: aggregation of per-viewer QoE counters and request
//! counters into a [`Report`] (written as JSON and printed as a summary table), plus the small parsers
//! the runner needs (`/metrics` text, `/proc` files, loopback URL check).
//!
//! Everything here is pure: no I/O, no clock.
//!
//! # Definitions
//!
//! * `viewers`: sessions started (with `--churn`, replacements count as new sessions).
//! * `startup_ms`: nearest-rank percentiles of the startup time (session start, i.e. the request for
//!   the URL, → first frame) over the sessions that started playing; `startup_failures` counts the
//!   sessions that never started (including viewers that left, or were stopped by the end of the run,
//!   before their first frame).
//! * `stall_ratio`: Σ stalled time / Σ watched time over all sessions; `stalls` and `stalled_s` are
//!   totals.
//! * `failures`: failed fetches (multivariant, media playlists and segments: transport errors,
//!   timeouts, non-2xx statuses and unparsable playlists; for P2P viewers also segments their node
//!   did not deliver within the request timeout, and failed node starts). `http_errors` counts the non-2xx answers by
//!   status code, and fetches that got no answer as `"timeout"` or `"network"`.
//! * `average_bitrate`: mean of the sessions' average bitrates weighted by their watched time (bits/s).
//! * `segment_latency_ms`: request sent → last body byte, successful segment fetches only.
//! * `origin_requests_per_segment`: the increase of the gateway's
//!   `gateway_origin_requests_total{class="segment",outcome="ok"}` over the run divided by the number
//!   of distinct segment URLs the viewers fetched.
//! * `gateway.cpu_s`: user + system CPU time of the gateway process during the run, from
//!   `/proc/PID/stat` in clock ticks of [`USER_HZ`] (the kernel reports these fields in `USER_HZ`,
//!   which is 100 on every mainstream Linux architecture; `sysconf(_SC_CLK_TCK)` is not read, to avoid
//!   a libc dependency). `gateway.rss_bytes`: `VmRSS` of `/proc/PID/status` at the end of the run.
//! * `harness.cpu_ratio`: CPU seconds of this process / (wall seconds × CPUs); above
//!   [`SATURATION_RATIO`] the harness itself was the bottleneck and the figures are suspect.
//!
//! # Peer-assisted runs (`--p2p on|ab`)
//!
//! * `bytes.http`: every body received over HTTP by the viewers, including the segments a P2P
//!   viewer's node fetched over HTTP for it; `bytes.peer`: segment bytes a node handed to its viewer
//!   as coming from peers (as the node labels the delivery).
//! * `offload_ratio`: Σ `p2p_bytes` / Σ (`p2p_bytes` + `http_bytes`) of the node summaries of the P2P
//!   viewers: verified peer bytes only, as the nodes count them ([`offload_from_summaries`]).
//! * `upload_ratio` (`p50`, `p99`, `max`): per node, bytes uploaded / segment bytes received (HTTP
//!   and peers), over the nodes that received anything; `uploaders`: nodes that uploaded anything;
//!   `rendition_switches`: swarms the nodes joined because their players switched rendition.
//! * `mismatches`, `uploaded_bytes`, `p2p_received_bytes` (segment bytes that arrived from peers,
//!   used or not), `p2p_late_bytes` (those that arrived after their transfer ended), `fallbacks` (peer transfers given up, by cause),
//!   `http_bytes_by_cause` (the nodes' HTTP bytes by the rule that started each fetch: `seeder`,
//!   `seeding`, `no_holder`, `holders_too_slow`, `takeover`, `race`, `http_only`, `other`),
//!   `peers_dropped_for_lying`: sums over the node summaries. `liars`: P2P sessions whose node
//!   corrupts what it uploads (`--liars`). `node_start_failures`: failed attempts to start a node.
//! * `corrupted_accepted`: segments a P2P viewer accepted (handed to it by its node, or logged as
//!   accepted in its node's summary) whose SHA-256 differs from the harness's own HTTP fetch of the
//!   same path ([`count_corrupted`]); must be 0. `unverified_segments`: such segments for which no
//!   reference could be fetched.
//! * `cohorts` (`--p2p ab` only): the QoE figures above over each cohort alone (`p2p`: even-numbered
//!   sessions in arrival order, `http`: odd-numbered).
//!
//! # Run parameters, timeline and latency histogram
//!
//! * `params`: the URL, `--viewers`, `--duration`, `--ramp`, `--churn` and `--live-start` of the run.
//! * `timeline`: one [`Sample`] per second from the start to the end of the run: viewers active,
//!   stall events so far, viewers stalled at that instant (as of their last wake-up), bytes received
//!   so far over HTTP and from peers (same definitions as `bytes`).
//! * `latency_histogram`: the segment download times of each cohort (`http`, `p2p`) in
//!   [`LATENCY_BUCKETS`] log-spaced buckets from 0.1 ms to 10 s (`upper_ms`: bucket upper bounds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use peer_assist::node::{HttpBytesByCause, Summary};
use serde::{Deserialize, Serialize};

use crate::player::PlayerStats;

/// Clock ticks per second of the `utime`/`stime` fields of `/proc/PID/stat` (Linux `USER_HZ`).
pub const USER_HZ: f64 = 100.0;
/// Harness CPU ratio above which the run is flagged as saturated.
pub const SATURATION_RATIO: f64 = 0.8;
/// Share of the whole machine's CPU time busy (every process: the gateway and an origin on the
/// same machine too) above which the run is flagged as saturated.
pub const MACHINE_SATURATION: f64 = 0.9;
/// The gateway series counting successful segment fetches from the origin.
pub const ORIGIN_SEGMENT_SERIES: &str = "gateway_origin_requests_total";

/// The report of one run (serialised as the `--json` file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `off`, `on` or `ab`.
    pub p2p: P2pMode,
    /// Sessions started.
    pub viewers: u64,
    /// Wall-clock length of the run.
    pub duration_s: f64,
    /// The QoE figures of all the sessions.
    #[serde(flatten)]
    pub qoe: Qoe,
    /// Non-2xx statuses, and fetches without an answer (`"timeout"`, `"network"`), by count.
    pub http_errors: BTreeMap<String, u64>,
    /// Segments fetched successfully.
    pub segments: u64,
    /// Distinct segment URLs fetched successfully.
    pub distinct_segments: u64,
    /// Gateway origin segment fetches per distinct segment (`null` without `--gateway-metrics`).
    pub origin_requests_per_segment: Option<f64>,
    /// Gateway process usage (`null` without `--gateway-pid`).
    pub gateway: Option<ProcessUsage>,
    /// This process's CPU usage.
    pub harness: HarnessUsage,
    /// Peer-assist figures (absent with `--p2p off`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub peer_assist: Option<P2pFigures>,
    /// Per-cohort QoE (`--p2p ab` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohorts: Option<Cohorts>,
    /// The run's parameters (`null` when the report was not built by a run).
    pub params: Option<RunParams>,
    /// One sample per second of the run.
    pub timeline: Vec<Sample>,
    /// The gateway restart (`--restart-cmd`), if one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// Segment download times per cohort, in [`LATENCY_BUCKETS`] log-spaced buckets.
    pub latency_histogram: LatencyHistogram,
    /// A shard's raw inputs, for `loadtest merge` (`--shard` runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::ShardData>,
}

/// What the gateway restart command did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Restart {
    /// When it started, seconds after the start of the run.
    pub at_s: f64,
    /// How long it ran, seconds.
    pub duration_s: f64,
    /// Its exit status (e.g. `exit status: 0`), or why it has none (killed, could not start).
    pub status: String,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
}

/// What the run was asked to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunParams {
    /// The URL the viewers played.
    pub url: String,
    /// `--viewers` (concurrent viewers asked for).
    pub viewers: u64,
    /// `--duration`, seconds.
    pub duration_s: f64,
    /// `--ramp`, seconds.
    pub ramp_s: f64,
    /// `--churn`.
    pub churn: f64,
    /// `--live-start`: target durations behind the end a live stream starts (classic live).
    pub live_start: u32,
    /// The emulated network (`--uplink`, `--downlink`, `--rtt`, `--loss`, `--unreachable`);
    /// absent: loopback as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::netem::Network>,
}

/// The state of the run at one instant (taken once per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub elapsed_s: f64,
    /// Viewers running.
    pub active: u64,
    /// Stall events so far.
    pub stalls: u64,
    /// Viewers stalled at this instant (as of their last wake-up).
    pub stalled: u64,
    /// Bytes received so far over HTTP.
    pub bytes_http: u64,
    /// Segment bytes received so far from peers.
    pub bytes_peer: u64,
}

/// Number of buckets of [`LatencyHistogram`].
pub const LATENCY_BUCKETS: usize = 30;
/// Lower edge of the first bucket, ms (anything faster is counted in the first bucket).
pub const LATENCY_MIN_MS: f64 = 0.1;
/// Upper bound of the last bucket, ms (anything slower is counted in the last bucket).
pub const LATENCY_MAX_MS: f64 = 10_000.0;

/// A compact histogram of segment download times: bucket `i` counts the downloads in
/// (`upper_ms[i-1]`, `upper_ms[i]`], the first one everything up to `upper_ms[0]`, the last one
/// everything above `upper_ms[LATENCY_BUCKETS - 2]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyHistogram {
    /// Bucket upper bounds, ms (log-spaced from 0.1 ms to 10 s).
    pub upper_ms: Vec<f64>,
    /// Segments fetched by the HTTP cohort (everyone with `--p2p off`).
    pub http: Vec<u64>,
    /// Segments fetched through nodes.
    pub p2p: Vec<u64>,
}

/// The bucket upper bounds of [`LatencyHistogram`], ms.
pub fn latency_bucket_bounds() -> Vec<f64> {
    let decades = (LATENCY_MAX_MS / LATENCY_MIN_MS).log10();
    (1..=LATENCY_BUCKETS)
        .map(|i| {
            let bound = LATENCY_MIN_MS * 10f64.powf(decades * i as f64 / LATENCY_BUCKETS as f64);
            // 4 significant digits are plenty for a chart.
            let scale = 10f64.powi(3 - bound.log10().floor() as i32);
            (bound * scale).round() / scale
        })
        .collect()
}

/// Bins a microsecond histogram into the buckets of [`latency_bucket_bounds`].
pub fn bin_latencies(histogram: &Histogram<u64>, upper_ms: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; upper_ms.len()];
    if counts.is_empty() {
        return counts;
    }
    for value in histogram.iter_recorded() {
        let ms = value.value_iterated_to() as f64 / 1e3;
        let index = upper_ms
            .iter()
            .position(|&upper| ms <= upper)
            .unwrap_or(upper_ms.len() - 1);
        if let Some(c) = counts.get_mut(index) {
            *c += value.count_at_value();
        }
    }
    counts
}

impl LatencyHistogram {
    /// The histograms of the two cohorts' download times (microseconds).
    pub fn from_cohorts(http: &Histogram<u64>, p2p: &Histogram<u64>) -> Self {
        let upper_ms = latency_bucket_bounds();
        Self {
            http: bin_latencies(http, &upper_ms),
            p2p: bin_latencies(p2p, &upper_ms),
            upper_ms,
        }
    }
}

/// How the viewers get their segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum P2pMode {
    /// HTTP only.
    #[default]
    Off,
    /// Every viewer through a peer-assist node.
    On,
    /// Even-numbered sessions through a node, odd-numbered over HTTP.
    Ab,
}

impl P2pMode {
    /// Parses `off`, `on` or `ab`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(P2pMode::Off),
            "on" => Ok(P2pMode::On),
            "ab" => Ok(P2pMode::Ab),
            _ => Err(format!("expected off, on or ab, got {s:?}")),
        }
    }

    /// The cohort of the `number`-th session (0-based, in arrival order).
    pub fn cohort_of(self, number: usize) -> Cohort {
        match self {
            P2pMode::Off => Cohort::Http,
            P2pMode::On => Cohort::P2p,
            P2pMode::Ab if number % 2 == 0 => Cohort::P2p,
            P2pMode::Ab => Cohort::Http,
        }
    }
}

/// How one session gets its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cohort {
    Http,
    P2p,
}

impl Cohort {
    /// 0 for HTTP, 1 for P2P (to index per-cohort arrays).
    pub fn index(self) -> usize {
        match self {
            Cohort::Http => 0,
            Cohort::P2p => 1,
        }
    }
}

/// Peer-assist figures of a run (flattened into the report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct P2pFigures {
    /// Fixed rendition of every viewer (index in bandwidth-ascending order); `null`: ABR, the
    /// nodes switching swarms with their players.
    pub rendition: Option<usize>,
    /// Verification failures of peer data, summed over the nodes.
    pub mismatches: u64,
    /// P2P sessions whose node corrupted its uploads.
    pub liars: u64,
    /// P2P sessions whose node's upload was throttled (`--slow-peers`).
    pub slow_peers: u64,
    /// Segments accepted by P2P viewers whose SHA-256 differs from the HTTP reference (must be 0).
    pub corrupted_accepted: u64,
    /// Segments accepted by P2P viewers that could not be checked (no HTTP reference).
    pub unverified_segments: u64,
    /// Bytes uploaded to other peers, summed over the nodes.
    pub uploaded_bytes: u64,
    /// Segment bytes that arrived from peers, used or not, summed over the nodes: what
    /// `uploaded_bytes` became at the receivers. Less the verified peer bytes it is uplink spent
    /// for nothing (transfers given up or cut short by HTTP, chunks in flight after a Cancel).
    pub p2p_received_bytes: u64,
    /// The part of it that arrived after its requester had ended the transfer (a Cancel
    /// too late to stop it), summed over the nodes.
    pub p2p_late_bytes: u64,
    /// Per node: bytes uploaded / segment bytes it got (HTTP and peers), nearest-rank p50, p99
    /// and max over the nodes that got anything. Fair upload keeps p99 at a few.
    pub upload_ratio: RatioSpread,
    /// Nodes that uploaded anything.
    pub uploaders: u64,
    /// Swarms joined by the nodes because their players switched rendition (ABR), summed.
    pub rendition_switches: u64,
    /// Peer transfers abandoned for HTTP or another peer, by cause.
    pub fallbacks: Fallbacks,
    /// The nodes' HTTP segment bytes by the rule that started each fetch, summed.
    pub http_bytes_by_cause: HttpBytesByCause,
    /// Peers disconnected for sending corrupt data (sum over the nodes; one liar may count once per
    /// node it lied to).
    pub peers_dropped_for_lying: u64,
    /// Failed attempts to start a node.
    pub node_start_failures: u64,
    /// P2P sessions whose node summary was not collected.
    pub nodes_lost: u64,
}

/// A per-node ratio over the nodes (`None` when no node counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RatioSpread {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl RatioSpread {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            p50: percentile(&values, 0.5).map(round3),
            p99: percentile(&values, 0.99).map(round3),
            max: values.last().copied().map(round3),
        }
    }
}

/// Peer transfers that failed, by cause (sums of the nodes' `failures`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Fallbacks {
    pub timeout: u64,
    pub mismatch: u64,
    pub absent: u64,
    pub disconnect: u64,
}

/// QoE per cohort (`--p2p ab`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohorts {
    pub p2p: CohortReport,
    pub http: CohortReport,
}

/// The QoE figures of one cohort (same definitions as the run-wide ones).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortReport {
    /// Sessions started.
    pub viewers: u64,
    #[serde(flatten)]
    pub qoe: Qoe,
    /// Segments fetched successfully.
    pub segments: u64,
}

/// The QoE figures of a set of sessions: the whole run's ([`Report`]) and each cohort's
/// ([`CohortReport`]), flattened into both (see [`cohort_report`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Qoe {
    /// Startup time percentiles over the sessions that started.
    pub startup_ms: Percentiles,
    /// Sessions that never started playing.
    pub startup_failures: u64,
    /// Σ stalled / Σ watched.
    pub stall_ratio: f64,
    /// Stall events.
    pub stalls: u64,
    /// Total stalled time.
    pub stalled_s: f64,
    /// Total watched (played) time.
    pub watched_s: f64,
    /// Failed fetches.
    pub failures: u64,
    /// Watched-time-weighted mean of the sessions' average bitrates, bits/s.
    pub average_bitrate: f64,
    /// Rendition switches.
    pub switches: u64,
    /// Segment download time percentiles.
    pub segment_latency_ms: LatencyPercentiles,
    /// How far behind live the picture was (wall clock − `EXT-X-PROGRAM-DATE-TIME` at the
    /// playhead), sampled at each playlist load of a playing viewer; `null` for VOD or without dates.
    pub live_latency_ms: LatencyPercentiles,
    /// Bytes received.
    pub bytes: Bytes,
    /// Share of segment bytes received from peers, over the sessions' node summaries (always 0
    /// for HTTP-only viewers: they have no node).
    pub offload_ratio: f64,
}

/// Nearest-rank percentiles, milliseconds (`null` without samples).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Latency percentiles and maximum, milliseconds (`null` without samples).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyPercentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Bytes received, by transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bytes {
    /// Response bodies received over HTTP (playlists and segments, errors included; segments a
    /// node fetched over HTTP for its viewer included).
    pub http: u64,
    /// Segment bytes nodes handed to their viewers as coming from peers.
    pub peer: u64,
}

/// CPU and memory of a process during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessUsage {
    /// User + system CPU seconds spent during the run.
    pub cpu_s: f64,
    /// Resident set size at the end of the run (`null` if unreadable).
    pub rss_bytes: Option<u64>,
}

/// CPU usage of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HarnessUsage {
    /// User + system CPU seconds spent during the run (`null` if `/proc/self/stat` is unreadable).
    pub cpu_s: Option<f64>,
    /// `cpu_s / (wall seconds × CPUs)`.
    pub cpu_ratio: Option<f64>,
    /// Share of the machine's CPU time that was busy during the run, every process counted
    /// (`/proc/stat`; `null` if unreadable). A gateway and an origin on the same machine compete
    /// with the harness: at 1,000 viewers on 2 CPUs the harness alone took 74% and the HTTP-only
    /// viewers stalled.
    #[serde(default)]
    pub machine_busy: Option<f64>,
    /// `cpu_ratio > 0.8` or `machine_busy > 0.9`: the harness, or the machine it shares, may have
    /// been the bottleneck.
    pub saturated: bool,
}

impl HarnessUsage {
    /// With the machine's busy share during the run ([`machine_busy`]), which also flags
    /// saturation.
    pub fn with_machine(self, busy: Option<f64>) -> Self {
        let busy = busy.map(round3);
        Self {
            machine_busy: busy,
            saturated: self.saturated || busy.is_some_and(|b| b > MACHINE_SATURATION),
            ..self
        }
    }

    /// Whether the machine, not the harness process itself, is what was saturated.
    pub fn machine_saturated(&self) -> bool {
        self.machine_busy.is_some_and(|b| b > MACHINE_SATURATION)
            && !self.cpu_ratio.is_some_and(|r| r > SATURATION_RATIO)
    }
}

/// Request counters collected by the runner (for the whole run or one cohort).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTotals {
    pub segments: u64,
    pub distinct_segments: u64,
    /// Bytes received over HTTP.
    pub bytes: u64,
    /// Segment bytes received from peers (through a node).
    pub peer_bytes: u64,
    pub failures: u64,
    pub http_errors: BTreeMap<String, u64>,
}

impl RequestTotals {
    /// The counters of two disjoint sets of viewers together. `distinct_segments` cannot be added
    /// (the sets may overlap): it is the caller's.
    pub fn merged(&self, other: &RequestTotals, distinct_segments: u64) -> RequestTotals {
        let mut http_errors = self.http_errors.clone();
        for (key, count) in &other.http_errors {
            *http_errors.entry(key.clone()).or_default() += count;
        }
        RequestTotals {
            segments: self.segments + other.segments,
            distinct_segments,
            bytes: self.bytes + other.bytes,
            peer_bytes: self.peer_bytes + other.peer_bytes,
            failures: self.failures + other.failures,
            http_errors,
        }
    }
}

/// What the runner measured for one cohort.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub totals: RequestTotals,
    /// Segment download times, microseconds.
    pub segment_latency_us: Histogram<u64>,
    /// How far behind live the pictures were (by `EXT-X-PROGRAM-DATE-TIME`), microseconds.
    pub live_latency_us: Histogram<u64>,
}

impl Default for Traffic {
    fn default() -> Self {
        Self {
            totals: RequestTotals::default(),
            segment_latency_us: latency_histogram(),
            live_latency_us: latency_histogram(),
        }
    }
}

/// One session as the report sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionResult {
    /// 0-based arrival number.
    pub number: usize,
    /// Whether it watched through a node.
    pub p2p: bool,
    /// Its counters at the end, or `None` if it never got as far as a player (the multivariant
    /// playlist never loaded).
    pub stats: Option<PlayerStats>,
    /// Its node's summary (P2P sessions whose node started and stopped in time).
    pub node: Option<Summary>,
    /// Its node corrupted what it uploaded.
    pub liar: bool,
    /// Its node's upload was throttled (`--slow-peers`).
    pub slow: bool,
}

impl SessionResult {
    pub fn cohort(&self) -> Cohort {
        if self.p2p {
            Cohort::P2p
        } else {
            Cohort::Http
        }
    }
}

/// Run-wide peer-assist inputs that are not per session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct P2pChecks {
    /// Fixed rendition (bandwidth-ascending index); `None`: ABR.
    pub rendition: Option<usize>,
    pub corruption: CorruptionCount,
    pub node_start_failures: u64,
}

/// HTTP errors by status as one line for people: `none`, or `503: 6, error: 1`.
pub fn http_errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".to_owned();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything [`build_report`] aggregates.
#[derive(Debug)]
pub struct ReportInputs<'a> {
    pub mode: P2pMode,
    /// One entry per session.
    pub sessions: &'a [SessionResult],
    /// Wall-clock length of the run.
    pub wall: Duration,
    /// The HTTP cohort's counters (everyone with `--p2p off`).
    pub http: &'a Traffic,
    /// The P2P cohort's counters.
    pub p2p: &'a Traffic,
    /// Distinct segment URLs fetched by anyone.
    pub distinct_segments: u64,
    pub origin_requests_per_segment: Option<f64>,
    pub gateway: Option<ProcessUsage>,
    pub harness: HarnessUsage,
    /// Ignored with `--p2p off`.
    pub checks: P2pChecks,
}

/// The sessions of one cohort.
pub fn cohort_sessions(sessions: &[SessionResult], cohort: Cohort) -> Vec<&SessionResult> {
    sessions.iter().filter(|s| s.cohort() == cohort).collect()
}

/// QoE of a set of sessions with their request counters: the one place the figures of [`Qoe`]
/// are computed, for the whole run and for each cohort.
pub fn cohort_report(sessions: &[&SessionResult], traffic: &Traffic) -> CohortReport {
    let started: Vec<&PlayerStats> = sessions.iter().filter_map(|s| s.stats.as_ref()).collect();
    let mut startups: Vec<f64> = started
        .iter()
        .filter_map(|s| s.startup)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    startups.sort_by(f64::total_cmp);
    let stalled: Duration = started.iter().map(|s| s.stalled).sum();
    let watched: Duration = started.iter().map(|s| s.watched).sum();
    let summaries: Vec<&Summary> = sessions.iter().filter_map(|s| s.node.as_ref()).collect();
    CohortReport {
        viewers: sessions.len() as u64,
        qoe: Qoe {
            startup_ms: Percentiles {
                p50: percentile(&startups, 0.50).map(round3),
                p95: percentile(&startups, 0.95).map(round3),
                p99: percentile(&startups, 0.99).map(round3),
            },
            startup_failures: sessions.len() as u64 - startups.len() as u64,
            stall_ratio: stall_ratio(&started),
            stalls: started.iter().map(|s| u64::from(s.stalls)).sum(),
            stalled_s: round3(stalled.as_secs_f64()),
            watched_s: round3(watched.as_secs_f64()),
            failures: traffic.totals.failures,
            average_bitrate: weighted_bitrate(&started).round(),
            switches: started.iter().map(|s| u64::from(s.switches)).sum(),
            segment_latency_ms: latency_ms(&traffic.segment_latency_us),
            live_latency_ms: latency_ms(&traffic.live_latency_us),
            bytes: Bytes {
                http: traffic.totals.bytes,
                peer: traffic.totals.peer_bytes,
            },
            offload_ratio: round3(offload_from_summaries(&summaries)),
        },
        segments: traffic.totals.segments,
    }
}

/// Σ peer bytes / Σ (peer + HTTP) segment bytes of node summaries (0 when there are none).
pub fn offload_from_summaries(summaries: &[&Summary]) -> f64 {
    let p2p: u64 = summaries.iter().map(|s| s.p2p_bytes).sum();
    let http: u64 = summaries.iter().map(|s| s.http_bytes).sum();
    if p2p + http == 0 {
        0.0
    } else {
        p2p as f64 / (p2p + http) as f64
    }
}

/// The run-wide peer-assist figures of the P2P sessions.
pub fn p2p_figures(p2p_sessions: &[&SessionResult], checks: &P2pChecks) -> P2pFigures {
    let summaries: Vec<&Summary> = p2p_sessions
        .iter()
        .filter_map(|s| s.node.as_ref())
        .collect();
    let mut fallbacks = Fallbacks::default();
    let mut http_bytes_by_cause = HttpBytesByCause::default();
    for s in &summaries {
        http_bytes_by_cause.merge(&s.http_bytes_by_cause);
        fallbacks.timeout += s.failures.timeout;
        fallbacks.mismatch += s.failures.mismatch;
        fallbacks.absent += s.failures.absent;
        fallbacks.disconnect += s.failures.disconnect;
    }
    P2pFigures {
        rendition: checks.rendition,
        mismatches: summaries.iter().map(|s| s.mismatches).sum(),
        liars: p2p_sessions.iter().filter(|s| s.liar).count() as u64,
        slow_peers: p2p_sessions.iter().filter(|s| s.slow).count() as u64,
        corrupted_accepted: checks.corruption.corrupted,
        unverified_segments: checks.corruption.unverified,
        uploaded_bytes: summaries.iter().map(|s| s.uploaded_bytes).sum(),
        p2p_received_bytes: summaries.iter().map(|s| s.p2p_received_bytes).sum(),
        p2p_late_bytes: summaries.iter().map(|s| s.p2p_late_bytes).sum(),
        upload_ratio: RatioSpread::of(
            summaries
                .iter()
                .filter(|s| s.http_bytes + s.p2p_bytes > 0)
                .map(|s| s.uploaded_bytes as f64 / (s.http_bytes + s.p2p_bytes) as f64)
                .collect(),
        ),
        uploaders: summaries.iter().filter(|s| s.uploaded_bytes > 0).count() as u64,
        rendition_switches: summaries.iter().map(|s| s.rendition_switches).sum(),
        fallbacks,
        http_bytes_by_cause,
        peers_dropped_for_lying: summaries
            .iter()
            .map(|s| s.peers_dropped_for_lying.len() as u64)
            .sum(),
        node_start_failures: checks.node_start_failures,
        nodes_lost: (p2p_sessions.len() - summaries.len()) as u64,
    }
}

/// A segment a P2P viewer accepted: handed to it by its node, or logged as accepted in the node's
/// summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The session's arrival number.
    pub viewer: usize,
    /// Gateway path.
    pub id: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Labelled as coming from peers.
    pub peer: bool,
}

/// Outcome of checking accepted segments against HTTP references.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorruptionCount {
    /// (viewer, segment) pairs with an accepted SHA-256 different from the reference.
    pub corrupted: u64,
    /// (viewer, segment) pairs without a reference.
    pub unverified: u64,
}

/// Counts the (viewer, segment) pairs whose accepted bytes differ from `references` (path →
/// SHA-256 hex of the harness's own HTTP fetch). A pair seen several times (handed over and logged)
/// counts once.
pub fn count_corrupted(
    references: &HashMap<String, String>,
    accepted: &[Accepted],
) -> CorruptionCount {
    let mut corrupted = BTreeSet::new();
    let mut unverified = BTreeSet::new();
    for a in accepted {
        let key = (a.viewer, a.id.as_str());
        match references.get(&a.id) {
            Some(reference) if !reference.eq_ignore_ascii_case(&a.sha256) => {
                corrupted.insert(key);
            }
            Some(_) => {}
            None => {
                unverified.insert(key);
            }
        }
    }
    CorruptionCount {
        corrupted: corrupted.len() as u64,
        unverified: unverified.len() as u64,
    }
}

/// The accepted segment paths without a reference, the ones that came from peers first, at most
/// `limit` (to fetch over HTTP after the run).
pub fn references_missing(
    references: &HashMap<String, String>,
    accepted: &[Accepted],
    limit: usize,
) -> Vec<String> {
    let mut from_peers = BTreeSet::new();
    let mut others = BTreeSet::new();
    for a in accepted.iter().filter(|a| !references.contains_key(&a.id)) {
        if a.peer {
            from_peers.insert(a.id.as_str());
        } else {
            others.insert(a.id.as_str());
        }
    }
    let others = others.into_iter().filter(|id| !from_peers.contains(id));
    from_peers
        .iter()
        .copied()
        .chain(others)
        .take(limit)
        .map(str::to_owned)
        .collect()
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Aggregates a run.
pub fn build_report(inputs: ReportInputs<'_>) -> Report {
    let everyone: Vec<&SessionResult> = inputs.sessions.iter().collect();
    let mut segment_latency_us = inputs.http.segment_latency_us.clone();
    // Same bounds: adding cannot fail; if it did, the HTTP cohort's latencies would stand alone.
    let _ = segment_latency_us.add(&inputs.p2p.segment_latency_us);
    let mut live_latency_us = inputs.http.live_latency_us.clone();
    let _ = live_latency_us.add(&inputs.p2p.live_latency_us);
    let all = Traffic {
        totals: inputs
            .http
            .totals
            .merged(&inputs.p2p.totals, inputs.distinct_segments),
        segment_latency_us,
        live_latency_us,
    };
    // Only P2P sessions have a node summary, so the run-wide offload is the P2P viewers' (0 with
    // `--p2p off`).
    let CohortReport {
        viewers,
        qoe,
        segments,
    } = cohort_report(&everyone, &all);
    let p2p_sessions = cohort_sessions(inputs.sessions, Cohort::P2p);
    let peer_assist =
        (inputs.mode != P2pMode::Off).then(|| p2p_figures(&p2p_sessions, &inputs.checks));
    let cohorts = (inputs.mode == P2pMode::Ab).then(|| Cohorts {
        p2p: cohort_report(&p2p_sessions, inputs.p2p),
        http: cohort_report(&cohort_sessions(inputs.sessions, Cohort::Http), inputs.http),
    });
    Report {
        p2p: inputs.mode,
        viewers,
        duration_s: round3(inputs.wall.as_secs_f64()),
        qoe,
        http_errors: all.totals.http_errors,
        segments,
        distinct_segments: all.totals.distinct_segments,
        origin_requests_per_segment: inputs.origin_requests_per_segment.map(round3),
        gateway: inputs.gateway,
        harness: inputs.harness,
        peer_assist,
        cohorts,
        params: None,
        timeline: Vec::new(),
        restart: None,
        latency_histogram: LatencyHistogram::from_cohorts(
            &inputs.http.segment_latency_us,
            &inputs.p2p.segment_latency_us,
        ),
        shard: None,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Nearest-rank percentile (`q` in 0..=1) of ascending `sorted` values; `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Σ stalled / Σ watched (0 when nothing was watched).
pub fn stall_ratio(sessions: &[&PlayerStats]) -> f64 {
    let stalled: f64 = sessions.iter().map(|s| s.stalled.as_secs_f64()).sum();
    let watched: f64 = sessions.iter().map(|s| s.watched.as_secs_f64()).sum();
    if watched > 0.0 {
        stalled / watched
    } else {
        0.0
    }
}

/// Mean of the sessions' average bitrates weighted by watched time (0 when nothing was watched).
pub fn weighted_bitrate(sessions: &[&PlayerStats]) -> f64 {
    let watched: f64 = sessions.iter().map(|s| s.watched.as_secs_f64()).sum();
    if watched <= 0.0 {
        return 0.0;
    }
    sessions
        .iter()
        .map(|s| s.average_bitrate * s.watched.as_secs_f64())
        .sum::<f64>()
        / watched
}

/// Percentiles and maximum of a microsecond histogram, in milliseconds.
pub fn latency_ms(histogram: &Histogram<u64>) -> LatencyPercentiles {
    if histogram.is_empty() {
        return LatencyPercentiles {
            p50: None,
            p95: None,
            p99: None,
            max: None,
        };
    }
    let ms = |us: u64| Some(round3(us as f64 / 1e3));
    LatencyPercentiles {
        p50: ms(histogram.value_at_quantile(0.50)),
        p95: ms(histogram.value_at_quantile(0.95)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
    }
}

/// A histogram for download times in microseconds (1 µs to 1 h, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

/// Sum of the values of the samples of `name` whose labels include all of `labels`, in a Prometheus
/// text exposition. `None` when no sample matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (sample_labels, value) = if let Some(inner) = rest.strip_prefix('{') {
            let Some((parsed, after)) = parse_labels(inner) else {
                continue;
            };
            (parsed, after)
        } else if rest.starts_with([' ', '\t']) {
            (Vec::new(), rest)
        } else {
            // A longer metric name with this one as a prefix.
            continue;
        };
        if !labels
            .iter()
            .all(|(k, v)| sample_labels.iter().any(|(lk, lv)| lk == k && lv == v))
        {
            continue;
        }
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and the text after `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once('=')?;
        let mut chars = after_key.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = after_key.get(end + 2..)?;
    }
}

/// The gateway's successful origin segment fetches in a `/metrics` text (0 when the series has no
/// sample yet: Prometheus counters with labels appear on first use).
pub fn origin_segment_fetches(metrics_text: &str) -> f64 {
    metric_value(
        metrics_text,
        ORIGIN_SEGMENT_SERIES,
        &[("class", "segment"), ("outcome", "ok")],
    )
    .unwrap_or(0.0)
}

/// Origin segment fetches during the run per distinct segment fetched by the viewers.
pub fn origin_requests_per_segment(before: f64, after: f64, distinct_segments: u64) -> Option<f64> {
    if distinct_segments == 0 {
        return None;
    }
    Some((after - before).max(0.0) / distinct_segments as f64)
}

/// User + system CPU time in clock ticks from the contents of `/proc/PID/stat`.
pub fn proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain anything: fields are counted
    // after the last ')'. Field 3 (state) is the first one there; utime and stime are fields 14, 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// (busy, total) clock ticks of all CPUs from the contents of `/proc/stat` (its aggregate `cpu`
/// line: user nice system idle iowait irq softirq steal ...; idle and iowait are not busy).
pub fn proc_stat_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 5 {
        return None;
    }
    let total = fields.iter().try_fold(0u64, |a, &f| a.checked_add(f))?;
    let idle = fields[3].saturating_add(fields[4]);
    Some((total.saturating_sub(idle), total))
}

/// The busy share of the machine between two [`proc_stat_machine_ticks`] readings.
pub fn machine_busy(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let busy = after.0.checked_sub(before.0)?;
    let total = after.1.checked_sub(before.1)?;
    (total > 0).then(|| (busy as f64 / total as f64).min(1.0))
}

/// Clock ticks to seconds (see [`USER_HZ`]).
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    ticks as f64 / USER_HZ
}

/// `VmRSS` in bytes from the contents of `/proc/PID/status`.
pub fn proc_status_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let factor = match parts.next().map(str::to_ascii_lowercase).as_deref() {
        Some("kb") | None => 1024,
        Some("mb") => 1024 * 1024,
        Some("b") => 1,
        Some(_) => return None,
    };
    value.checked_mul(factor)
}

/// Harness CPU usage over a run of `wall` on `cpus` CPUs.
pub fn harness_usage(cpu_s: Option<f64>, wall: Duration, cpus: usize) -> HarnessUsage {
    let capacity = wall.as_secs_f64() * cpus.max(1) as f64;
    let cpu_ratio = cpu_s
        .filter(|_| capacity > 0.0)
        .map(|cpu| round3(cpu / capacity));
    HarnessUsage {
        cpu_s: cpu_s.map(round3),
        cpu_ratio,
        machine_busy: None,
        saturated: cpu_ratio.is_some_and(|r| r > SATURATION_RATIO),
    }
}

/// Whether `host` (as in a URL authority: IPv6 in brackets allowed) is a loopback IP address
/// (127.0.0.0/8, ::1) or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    })
}

/// Whether `url` is an absolute URL whose host is loopback (see [`is_loopback_host`]).
pub fn is_loopback_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(is_loopback_host))
        .unwrap_or(false)
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms >= 1000.0 => format!("{:.2} s", ms / 1e3),
        Some(ms) if ms >= 100.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".to_owned(),
    }
}

fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// The terminal summary. `color`: ANSI colours (a terminal); else plain text.
pub fn render_summary(report: &Report, color: bool) -> String {
    let mut out = String::new();
    let mode = match report.p2p {
        P2pMode::Off => "",
        P2pMode::On => ", P2P on",
        P2pMode::Ab => ", P2P A/B",
    };
    let _ = writeln!(
        out,
        "loadtest run: {} sessions over {:.1} s{mode}",
        report.viewers, report.duration_s
    );
    let row = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "  {label:<22} {value}");
    };
    let q = &report.qoe;
    let s = &q.startup_ms;
    row(
        &mut out,
        "startup",
        format!(
            "p50 {}  p95 {}  p99 {}  ({} never started)",
            fmt_ms(s.p50),
            fmt_ms(s.p95),
            fmt_ms(s.p99),
            q.startup_failures
        ),
    );
    row(
        &mut out,
        "stalls",
        format!(
            "{} ({:.1} s stalled of {:.1} s watched, ratio {:.4})",
            q.stalls, q.stalled_s, q.watched_s, q.stall_ratio
        ),
    );
    row(
        &mut out,
        "average bitrate",
        format!(
            "{:.0} kbit/s ({} switches)",
            q.average_bitrate / 1e3,
            q.switches
        ),
    );
    row(
        &mut out,
        "segments",
        format!(
            "{} fetched, {} distinct, {} over HTTP, {} from peers (offload {:.1}%)",
            report.segments,
            report.distinct_segments,
            fmt_bytes(q.bytes.http),
            fmt_bytes(q.bytes.peer),
            q.offload_ratio * 100.0
        ),
    );
    let l = &q.segment_latency_ms;
    row(
        &mut out,
        "segment latency",
        format!(
            "p50 {}  p95 {}  p99 {}  max {}",
            fmt_ms(l.p50),
            fmt_ms(l.p95),
            fmt_ms(l.p99),
            fmt_ms(l.max)
        ),
    );
    let live = &q.live_latency_ms;
    if live.p50.is_some() {
        row(
            &mut out,
            "live latency",
            format!(
                "p50 {}  p95 {}  max {} behind live",
                fmt_ms(live.p50),
                fmt_ms(live.p95),
                fmt_ms(live.max)
            ),
        );
    }
    let errors = crate::report::http_errors_text(&report.http_errors);
    row(
        &mut out,
        "failures",
        format!("{} failed fetches (HTTP errors: {errors})", q.failures),
    );
    row(
        &mut out,
        "origin req / segment",
        report.origin_requests_per_segment.map_or_else(
            || "- (no --gateway-metrics)".to_owned(),
            |r| format!("{r:.3}"),
        ),
    );
    row(
        &mut out,
        "gateway",
        report.gateway.map_or_else(
            || "- (no --gateway-pid)".to_owned(),
            |g| {
                format!(
                    "{:.2} s CPU, RSS {}",
                    g.cpu_s,
                    g.rss_bytes.map_or_else(|| "-".to_owned(), fmt_bytes)
                )
            },
        ),
    );
    if let Some(r) = &report.restart {
        row(
            &mut out,
            "gateway restart",
            format!(
                "at {:.1} s, took {:.1} s, {}",
                r.at_s, r.duration_s, r.status
            ),
        );
    }
    if let Some(p) = &report.peer_assist {
        row(
            &mut out,
            "peer assist",
            format!(
                "rendition {}, {} liar(s), {} slow peer(s), {} uploaded by {} node(s), {} arrived",
                p.rendition
                    .map_or_else(|| "auto".to_owned(), |r| r.to_string()),
                p.liars,
                p.slow_peers,
                fmt_bytes(p.uploaded_bytes),
                p.uploaders,
                fmt_bytes(p.p2p_received_bytes)
            ),
        );
        let r = &p.upload_ratio;
        let show = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        row(
            &mut out,
            "upload/download",
            format!(
                "per node p50 {}, p99 {}, max {}",
                show(r.p50),
                show(r.p99),
                show(r.max)
            ),
        );
        let f = &p.fallbacks;
        row(
            &mut out,
            "verification",
            format!(
                "{} mismatches, {} peers dropped for lying, {} corrupted accepted \
                 ({} unverified)",
                p.mismatches,
                p.peers_dropped_for_lying,
                p.corrupted_accepted,
                p.unverified_segments
            ),
        );
        row(
            &mut out,
            "fallbacks",
            format!(
                "timeout {}, mismatch {}, absent {}, disconnect {} \
                 ({} node start failures, {} nodes lost)",
                f.timeout, f.mismatch, f.absent, f.disconnect, p.node_start_failures, p.nodes_lost
            ),
        );
        let h = &p.http_bytes_by_cause;
        row(
            &mut out,
            "HTTP by cause",
            format!(
                "seeder {}, no holder {}, holders too slow {}, takeover {}, race {}, other {}",
                fmt_bytes(h.seeder + h.seeding),
                fmt_bytes(h.no_holder),
                fmt_bytes(h.holders_too_slow),
                fmt_bytes(h.takeover),
                fmt_bytes(h.race),
                fmt_bytes(h.http_only + h.other)
            ),
        );
    }
    if let Some(c) = &report.cohorts {
        out.push_str(&render_cohorts(c));
    }
    let h = &report.harness;
    row(
        &mut out,
        "harness",
        match (h.cpu_s, h.cpu_ratio, h.machine_busy) {
            (Some(cpu), Some(ratio), Some(busy)) => format!(
                "{cpu:.2} s CPU ({:.1}% of the machine; the machine {:.1}% busy)",
                ratio * 100.0,
                busy * 100.0
            ),
            (Some(cpu), Some(ratio), None) => {
                format!("{cpu:.2} s CPU ({:.1}% of the machine)", ratio * 100.0)
            }
            _ => "- (CPU time unavailable)".to_owned(),
        },
    );
    if h.saturated {
        let warning = if h.machine_saturated() {
            "machine CPU saturated (gateway, origin and harness together): figures are suspect"
        } else {
            "harness CPU saturated: figures are suspect"
        };
        if color {
            let _ = writeln!(out, "\x1b[31m{warning}\x1b[0m");
        } else {
            let _ = writeln!(out, "{warning}");
        }
    }
    out
}

/// The two cohorts side by side.
pub fn render_cohorts(cohorts: &Cohorts) -> String {
    let mut out = String::new();
    let mut row = |label: &str, p2p: String, http: String| {
        let _ = writeln!(out, "  {label:<22} {p2p:>14} {http:>14}");
    };
    row("cohorts", "p2p".to_owned(), "http".to_owned());
    row(
        "  viewers",
        cohorts.p2p.viewers.to_string(),
        cohorts.http.viewers.to_string(),
    );
    let (p, h) = (&cohorts.p2p.qoe, &cohorts.http.qoe);
    row(
        "  startup p50",
        fmt_ms(p.startup_ms.p50),
        fmt_ms(h.startup_ms.p50),
    );
    row(
        "  startup p95",
        fmt_ms(p.startup_ms.p95),
        fmt_ms(h.startup_ms.p95),
    );
    row(
        "  startup p99",
        fmt_ms(p.startup_ms.p99),
        fmt_ms(h.startup_ms.p99),
    );
    row(
        "  never started",
        p.startup_failures.to_string(),
        h.startup_failures.to_string(),
    );
    row(
        "  stall ratio",
        format!("{:.4}", p.stall_ratio),
        format!("{:.4}", h.stall_ratio),
    );
    row("  stalls", p.stalls.to_string(), h.stalls.to_string());
    row("  failures", p.failures.to_string(), h.failures.to_string());
    row(
        "  average bitrate",
        format!("{:.0} kbit/s", p.average_bitrate / 1e3),
        format!("{:.0} kbit/s", h.average_bitrate / 1e3),
    );
    row(
        "  segment latency p50",
        fmt_ms(p.segment_latency_ms.p50),
        fmt_ms(h.segment_latency_ms.p50),
    );
    row(
        "  segment latency p95",
        fmt_ms(p.segment_latency_ms.p95),
        fmt_ms(h.segment_latency_ms.p95),
    );
    row(
        "  live latency p50",
        fmt_ms(p.live_latency_ms.p50),
        fmt_ms(h.live_latency_ms.p50),
    );
    row(
        "  bytes over HTTP",
        fmt_bytes(p.bytes.http),
        fmt_bytes(h.bytes.http),
    );
    row(
        "  bytes from peers",
        fmt_bytes(p.bytes.peer),
        fmt_bytes(h.bytes.peer),
    );
    row(
        "  offload",
        format!("{:.1}%", p.offload_ratio * 100.0),
        format!("{:.1}%", h.offload_ratio * 100.0),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(stalled_ms: u64, watched_ms: u64, bitrate: f64) -> PlayerStats {
        PlayerStats {
            startup: Some(Duration::from_millis(500)),
            stalls: u32::from(stalled_ms > 0),
            stalled: Duration::from_millis(stalled_ms),
            watched: Duration::from_millis(watched_ms),
            switches: 1,
            average_bitrate: bitrate,
            failures: 0,
            playing_rendition: 0,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), Some(50.0));
        assert_eq!(percentile(&values, 0.95), Some(95.0));
        assert_eq!(percentile(&values, 0.99), Some(99.0));
        assert_eq!(percentile(&values, 1.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.95), Some(4.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn latency_percentiles_of_known_samples() {
        let mut h = latency_histogram();
        for ms in 1..=100u64 {
            h.saturating_record(ms * 1000);
        }
        let l = latency_ms(&h);
        // 3 significant digits: within 0.1%.
        let close = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() <= want * 1e-3);
        assert!(close(l.p50, 50.0), "{l:?}");
        assert!(close(l.p95, 95.0), "{l:?}");
        assert!(close(l.p99, 99.0), "{l:?}");
        assert!(close(l.max, 100.0), "{l:?}");
        let empty = latency_ms(&latency_histogram());
        assert_eq!(empty.p50, None);
        assert_eq!(empty.max, None);
    }

    #[test]
    fn stall_ratio_is_total_stalled_over_total_watched() {
        let a = stats(1_000, 9_000, 1e6);
        let b = stats(0, 11_000, 1e6);
        assert!((stall_ratio(&[&a, &b]) - 0.05).abs() < 1e-12);
        assert_eq!(stall_ratio(&[]), 0.0);
        let idle = stats(2_000, 0, 0.0);
        assert_eq!(stall_ratio(&[&idle]), 0.0);
    }

    #[test]
    fn bitrate_is_weighted_by_watched_time() {
        let a = stats(0, 10_000, 1e6);
        let b = stats(0, 30_000, 3e6);
        let none = stats(0, 0, 0.0);
        assert!((weighted_bitrate(&[&a, &b, &none]) - 2.5e6).abs() < 1e-6);
        assert_eq!(weighted_bitrate(&[&none]), 0.0);
    }

    fn http_session(number: usize, stats: Option<PlayerStats>) -> SessionResult {
        SessionResult {
            number,
            stats,
            ..SessionResult::default()
        }
    }

    fn summary(p2p_bytes: u64, http_bytes: u64) -> Summary {
        Summary {
            p2p_bytes,
            http_bytes,
            ..Summary::default()
        }
    }

    fn traffic(totals: RequestTotals, latencies_us: &[u64]) -> Traffic {
        let mut segment_latency_us = latency_histogram();
        for &us in latencies_us {
            segment_latency_us.saturating_record(us);
        }
        Traffic {
            totals,
            segment_latency_us,
            live_latency_us: latency_histogram(),
        }
    }

    #[test]
    fn report_aggregates_sessions() {
        let mut slow = stats(500, 10_000, 2e6);
        slow.startup = Some(Duration::from_millis(1500));
        let mut never = stats(0, 0, 0.0);
        never.startup = None;
        let sessions = vec![
            http_session(0, Some(stats(0, 10_000, 1e6))),
            http_session(1, Some(slow)),
            http_session(2, Some(never)),
            http_session(3, None),
        ];
        let mut errors = BTreeMap::new();
        errors.insert("404".to_owned(), 2);
        let http = traffic(
            RequestTotals {
                segments: 10,
                distinct_segments: 5,
                bytes: 1234,
                peer_bytes: 0,
                failures: 2,
                http_errors: errors.clone(),
            },
            &[2_000],
        );
        let report = build_report(ReportInputs {
            mode: P2pMode::Off,
            sessions: &sessions,
            wall: Duration::from_millis(20_004),
            http: &http,
            p2p: &Traffic::default(),
            distinct_segments: 5,
            origin_requests_per_segment: Some(1.0),
            gateway: None,
            harness: harness_usage(Some(1.0), Duration::from_secs(20), 2),
            checks: P2pChecks::default(),
        });
        assert_eq!(report.viewers, 4);
        assert_eq!(report.qoe.startup_failures, 2);
        assert_eq!(report.qoe.startup_ms.p50, Some(500.0));
        assert_eq!(report.qoe.startup_ms.p95, Some(1500.0));
        assert_eq!(report.qoe.stalls, 1);
        assert_eq!(report.qoe.stalled_s, 0.5);
        assert_eq!(report.qoe.watched_s, 20.0);
        assert!((report.qoe.stall_ratio - 0.025).abs() < 1e-12);
        assert_eq!(report.qoe.average_bitrate, 1.5e6);
        assert_eq!(report.qoe.switches, 3);
        assert_eq!(report.duration_s, 20.004);
        assert_eq!(report.http_errors, errors);
        assert_eq!(report.harness.cpu_ratio, Some(0.025));
        assert!(!report.harness.saturated);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["p2p"], "off");
        assert_eq!(json["startup_ms"]["p95"], 1500.0);
        assert_eq!(json["bytes"]["http"], 1234);
        assert_eq!(json["bytes"]["peer"], 0);
        assert_eq!(json["http_errors"]["404"], 2);
        assert!(json["gateway"].is_null());
        assert_eq!(json["offload_ratio"], 0.0);
        assert_eq!(json["segment_latency_ms"]["max"].as_f64(), Some(2.0));
        // HTTP-only runs carry no peer-assist keys.
        for key in [
            "mismatches",
            "corrupted_accepted",
            "fallbacks",
            "http_bytes_by_cause",
            "liars",
            "cohorts",
        ] {
            assert!(json.get(key).is_none(), "{key}");
        }
    }

    #[test]
    fn cohorts_are_alternate_arrivals() {
        let cohorts: Vec<Cohort> = (0..5).map(|i| P2pMode::Ab.cohort_of(i)).collect();
        assert_eq!(
            cohorts,
            [
                Cohort::P2p,
                Cohort::Http,
                Cohort::P2p,
                Cohort::Http,
                Cohort::P2p
            ]
        );
        assert!((0..5).all(|i| P2pMode::On.cohort_of(i) == Cohort::P2p));
        assert!((0..5).all(|i| P2pMode::Off.cohort_of(i) == Cohort::Http));
        assert_eq!(P2pMode::parse("AB"), Ok(P2pMode::Ab));
        assert_eq!(P2pMode::parse("off"), Ok(P2pMode::Off));
        assert!(P2pMode::parse("yes").is_err());
    }

    #[test]
    fn offload_is_verified_peer_bytes_over_all_segment_bytes() {
        let a = summary(300, 100);
        let b = summary(0, 600);
        assert!((offload_from_summaries(&[&a, &b]) - 0.3).abs() < 1e-12);
        assert_eq!(offload_from_summaries(&[]), 0.0);
        assert_eq!(offload_from_summaries(&[&summary(0, 0)]), 0.0);
        assert_eq!(offload_from_summaries(&[&summary(5, 0)]), 1.0);
    }

    #[test]
    fn ab_report_splits_cohorts() {
        let mut liar_summary = summary(100, 300);
        liar_summary.mismatches = 0;
        liar_summary.uploaded_bytes = 50;
        let mut honest = summary(500, 100);
        honest.mismatches = 2;
        honest.uploaded_bytes = 70;
        honest.failures.mismatch = 2;
        honest.failures.timeout = 1;
        honest.peers_dropped_for_lying = vec!["x".to_owned()];
        honest.http_bytes_by_cause.seeder = 60;
        honest.http_bytes_by_cause.takeover = 40;
        liar_summary.http_bytes_by_cause.seeder = 100;
        let mut stalled = stats(1_000, 10_000, 8e5);
        stalled.startup = Some(Duration::from_millis(900));
        let sessions = vec![
            SessionResult {
                number: 0,
                p2p: true,
                stats: Some(stats(0, 10_000, 8e5)),
                node: Some(honest),
                liar: false,
                slow: false,
            },
            http_session(1, Some(stalled)),
            SessionResult {
                number: 2,
                p2p: true,
                stats: Some(stats(0, 10_000, 8e5)),
                node: Some(liar_summary),
                liar: true,
                slow: true,
            },
            http_session(3, Some(stats(0, 10_000, 8e5))),
            // A P2P session whose node summary was lost.
            SessionResult {
                number: 4,
                p2p: true,
                stats: None,
                node: None,
                liar: false,
                slow: false,
            },
        ];
        let http = traffic(
            RequestTotals {
                segments: 10,
                bytes: 2_000,
                failures: 1,
                ..RequestTotals::default()
            },
            &[2_000],
        );
        let p2p = traffic(
            RequestTotals {
                segments: 12,
                bytes: 700,
                peer_bytes: 600,
                http_errors: BTreeMap::from([("503".to_owned(), 1)]),
                ..RequestTotals::default()
            },
            &[1_000, 1_000],
        );
        let report = build_report(ReportInputs {
            mode: P2pMode::Ab,
            sessions: &sessions,
            wall: Duration::from_secs(10),
            http: &http,
            p2p: &p2p,
            distinct_segments: 15,
            origin_requests_per_segment: None,
            gateway: None,
            harness: harness_usage(None, Duration::from_secs(10), 1),
            checks: P2pChecks {
                rendition: Some(1),
                corruption: CorruptionCount {
                    corrupted: 0,
                    unverified: 3,
                },
                node_start_failures: 1,
            },
        });
        assert_eq!(report.viewers, 5);
        assert_eq!(report.segments, 22);
        assert_eq!(report.distinct_segments, 15);
        assert_eq!(report.qoe.failures, 1);
        assert_eq!(
            report.qoe.bytes,
            Bytes {
                http: 2_700,
                peer: 600
            }
        );
        assert_eq!(report.http_errors.get("503"), Some(&1));
        // 600 of 1000 node bytes came from peers.
        assert_eq!(report.qoe.offload_ratio, 0.6);
        let p = report.peer_assist.clone().unwrap();
        assert_eq!(p.rendition, Some(1));
        assert_eq!(p.mismatches, 2);
        assert_eq!(p.liars, 1);
        assert_eq!(p.uploaded_bytes, 120);
        assert_eq!(p.uploaders, 2);
        // 50 of 400 and 70 of 600 bytes.
        assert_eq!(p.upload_ratio.p50, Some(0.117));
        assert_eq!(p.upload_ratio.max, Some(0.125));
        assert_eq!(p.fallbacks.mismatch, 2);
        assert_eq!(p.fallbacks.timeout, 1);
        assert_eq!(p.http_bytes_by_cause.seeder, 160);
        assert_eq!(p.http_bytes_by_cause.takeover, 40);
        assert_eq!(p.http_bytes_by_cause.total(), 200);
        assert_eq!(p.peers_dropped_for_lying, 1);
        assert_eq!(p.unverified_segments, 3);
        assert_eq!(p.node_start_failures, 1);
        assert_eq!(p.nodes_lost, 1);
        let c = report.cohorts.clone().unwrap();
        assert_eq!(c.p2p.viewers, 3);
        assert_eq!(c.http.viewers, 2);
        assert_eq!(c.p2p.qoe.startup_failures, 1);
        assert_eq!(c.p2p.qoe.stall_ratio, 0.0);
        assert!((c.http.qoe.stall_ratio - 0.05).abs() < 1e-12);
        assert_eq!(c.http.qoe.stalls, 1);
        assert_eq!(c.http.qoe.startup_ms.p95, Some(900.0));
        assert_eq!(c.p2p.qoe.offload_ratio, 0.6);
        assert_eq!(c.http.qoe.offload_ratio, 0.0);
        assert_eq!(c.http.qoe.failures, 1);
        assert_eq!(c.p2p.qoe.failures, 0);
        assert_eq!(c.p2p.segments, 12);
        assert_eq!(
            c.p2p.qoe.bytes,
            Bytes {
                http: 700,
                peer: 600
            }
        );
        assert_eq!(c.http.qoe.segment_latency_ms.p50, Some(2.0));
        assert_eq!(c.p2p.qoe.segment_latency_ms.p50, Some(1.0));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["p2p"], "ab");
        assert_eq!(json["corrupted_accepted"], 0);
        assert_eq!(json["mismatches"], 2);
        assert_eq!(json["liars"], 1);
        assert_eq!(json["uploaded_bytes"], 120);
        assert_eq!(json["fallbacks"]["mismatch"], 2);
        assert_eq!(json["http_bytes_by_cause"]["seeder"], 160);
        assert_eq!(json["http_bytes_by_cause"]["no_holder"], 0);
        assert_eq!(json["cohorts"]["p2p"]["viewers"], 3);
        assert_eq!(json["cohorts"]["http"]["startup_ms"]["p95"], 900.0);
        assert_eq!(json["cohorts"]["p2p"]["offload_ratio"], 0.6);
        let text = render_summary(&report, false);
        assert!(text.contains("P2P A/B"), "{text}");
        let header = text.lines().find(|l| l.contains("cohorts")).unwrap();
        assert!(header.trim_end().ends_with("p2p           http"), "{text}");
        let viewers = text.lines().find(|l| l.contains("  viewers")).unwrap();
        assert_eq!(
            viewers.split_whitespace().collect::<Vec<_>>(),
            ["viewers", "3", "2"]
        );

        // `on`: P2P figures without cohorts.
        let on = build_report(ReportInputs {
            mode: P2pMode::On,
            sessions: &sessions[..1],
            wall: Duration::from_secs(10),
            http: &Traffic::default(),
            p2p: &p2p,
            distinct_segments: 6,
            origin_requests_per_segment: None,
            gateway: None,
            harness: harness_usage(None, Duration::from_secs(10), 1),
            checks: P2pChecks::default(),
        });
        assert!(on.cohorts.is_none());
        assert_eq!(on.qoe.offload_ratio, round3(500.0 / 600.0));
        assert!(on.peer_assist.is_some());
        let text = render_summary(&on, false);
        assert!(!text.contains("cohorts"), "{text}");
        assert!(text.contains("corrupted accepted"), "{text}");
    }

    fn accepted(viewer: usize, id: &str, sha256: &str, peer: bool) -> Accepted {
        Accepted {
            viewer,
            id: id.to_owned(),
            sha256: sha256.to_owned(),
            peer,
        }
    }

    #[test]
    fn corrupted_segments_are_counted_once_per_viewer() {
        let references = HashMap::from([
            ("/s/1.ts".to_owned(), "aa".to_owned()),
            ("/s/2.ts".to_owned(), "bb".to_owned()),
        ]);
        let list = vec![
            // Good, from a peer and over HTTP; hex case does not matter.
            accepted(0, "/s/1.ts", "aa", true),
            accepted(1, "/s/1.ts", "AA", false),
            // Corrupt: handed over and logged (one pair).
            accepted(0, "/s/2.ts", "cc", true),
            accepted(0, "/s/2.ts", "cc", true),
            // The same corruption at another viewer counts again.
            accepted(1, "/s/2.ts", "cc", true),
            // Corrupt bytes labelled `http` (a peer prefix joined with an HTTP rest) count too.
            accepted(2, "/s/2.ts", "dd", false),
            // No reference.
            accepted(0, "/s/3.ts", "ee", true),
            accepted(1, "/s/4.ts", "ff", false),
        ];
        assert_eq!(
            count_corrupted(&references, &list),
            CorruptionCount {
                corrupted: 3,
                unverified: 2
            }
        );
        assert_eq!(
            count_corrupted(&references, &list[..2]),
            CorruptionCount::default()
        );
        // Peer-delivered ones first, then the others, bounded.
        assert_eq!(
            references_missing(&references, &list, 10),
            ["/s/3.ts", "/s/4.ts"]
        );
        assert_eq!(references_missing(&references, &list, 1), ["/s/3.ts"]);
        let more = vec![
            accepted(0, "/s/9.ts", "x", false),
            accepted(1, "/s/9.ts", "x", true),
            accepted(0, "/s/5.ts", "x", false),
        ];
        assert_eq!(
            references_missing(&references, &more, 10),
            ["/s/9.ts", "/s/5.ts"]
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    const METRICS: &str = r#"# HELP gateway_origin_requests_total Origin fetch attempts by object class and outcome.
# TYPE gateway_origin_requests_total counter
gateway_origin_requests_total{class="media",outcome="ok"} 41
gateway_origin_requests_total{class="segment",outcome="error"} 3
gateway_origin_requests_total{class="segment",outcome="ok"} 117
gateway_origin_requests_total_extra{class="segment",outcome="ok"} 5
gateway_requests_total{class="segment",status="200"} 5000
"#;

    #[test]
    fn origin_segment_fetches_from_metrics_text() {
        assert_eq!(origin_segment_fetches(METRICS), 117.0);
        // Label order does not matter; no sample yet counts as 0.
        let reordered = "gateway_origin_requests_total{outcome=\"ok\",class=\"segment\"} 9\n";
        assert_eq!(origin_segment_fetches(reordered), 9.0);
        assert_eq!(origin_segment_fetches("# nothing yet\n"), 0.0);
        assert_eq!(
            metric_value(METRICS, "gateway_requests_total", &[("status", "200")]),
            Some(5000.0)
        );
        assert_eq!(
            metric_value("up 1\nup_time 5\n", "up", &[]),
            Some(1.0),
            "a name prefix is not a match"
        );
        assert_eq!(
            metric_value("m{a=\"x,\\\"}\",b=\"y\"} 2\n", "m", &[("a", "x,\"}")]),
            Some(2.0)
        );
        assert_eq!(origin_requests_per_segment(117.0, 237.0, 120), Some(1.0));
        assert_eq!(origin_requests_per_segment(0.0, 10.0, 0), None);
    }

    #[test]
    fn proc_files() {
        let stat = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 \
                    12345 1000000 500 18446744073709551615";
        assert_eq!(proc_stat_cpu_ticks(stat), Some(300));
        assert_eq!(ticks_to_seconds(300), 3.0);
        assert_eq!(proc_stat_cpu_ticks("garbage"), None);
        let status = "Name:\tgateway\nVmPeak:\t  2000 kB\nVmRSS:\t   1536 kB\nThreads:\t8\n";
        assert_eq!(proc_status_rss_bytes(status), Some(1536 * 1024));
        assert_eq!(proc_status_rss_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn harness_saturation() {
        let busy = harness_usage(Some(17.0), Duration::from_secs(10), 2);
        assert_eq!(busy.cpu_ratio, Some(0.85));
        assert!(busy.saturated);
        let idle = harness_usage(Some(1.0), Duration::from_secs(10), 2);
        assert!(!idle.saturated);
        let unknown = harness_usage(None, Duration::from_secs(10), 2);
        assert_eq!(unknown.cpu_ratio, None);
        assert!(!unknown.saturated);
        // The harness is under its limit, but the machine it shares is not.
        let shared = harness_usage(Some(14.8), Duration::from_secs(10), 2).with_machine(Some(0.97));
        assert!(shared.saturated && shared.machine_saturated());
        let calm = harness_usage(Some(7.0), Duration::from_secs(10), 2).with_machine(Some(0.45));
        assert!(!calm.saturated && !calm.machine_saturated());
        assert!(!busy.machine_saturated());
        assert!(!idle.with_machine(None).saturated);
    }

    #[test]
    fn machine_busy_from_proc_stat() {
        let before = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\nintr 1\n";
        let after = "cpu  250 0 100 850 50 0 0 0 0 0\ncpu0 1 1 1 1 1 0 0 0 0 0\n";
        let (b, a) = (
            proc_stat_machine_ticks(before).unwrap(),
            proc_stat_machine_ticks(after).unwrap(),
        );
        assert_eq!(b, (150, 1000));
        assert_eq!(a, (350, 1250));
        assert_eq!(machine_busy(b, a), Some(0.8));
        assert_eq!(
            machine_busy(a, b),
            None,
            "a counter that went back is no reading"
        );
        assert_eq!(machine_busy(a, a), None);
        assert_eq!(proc_stat_machine_ticks("intr 1\n"), None);
        assert_eq!(proc_stat_machine_ticks("cpu  1 2 x 4 5\n"), None);
        assert_eq!(proc_stat_machine_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn loopback_urls() {
        for url in [
            "http://127.0.0.1:8080/live/master.m3u8",
            "http://127.1.2.3/x",
            "http://localhost:9000/",
            "http://LOCALHOST/",
            "http://[::1]:8080/a.m3u8",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.1/master.m3u8",
            "http://example.com/master.m3u8",
            "http://localhost.example.com/",
            "http://[::2]/",
            "http://0.0.0.0/",
            "/relative/master.m3u8",
            "not a url",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn summary_warns_when_saturated() {
        let sessions = vec![http_session(0, Some(stats(0, 1_000, 1e6)))];
        let report = build_report(ReportInputs {
            mode: P2pMode::Off,
            sessions: &sessions,
            wall: Duration::from_secs(1),
            http: &Traffic::default(),
            p2p: &Traffic::default(),
            distinct_segments: 0,
            origin_requests_per_segment: None,
            gateway: None,
            harness: harness_usage(Some(1.9), Duration::from_secs(1), 2),
            checks: P2pChecks::default(),
        });
        let plain = render_summary(&report, false);
        assert!(plain.contains("\nharness CPU saturated: figures are suspect\n"));
        assert!(!plain.contains('\x1b'));
        let colored = render_summary(&report, true);
        assert!(colored.contains("\x1b[31mharness CPU saturated"));
    }

    #[test]
    fn http_errors_read_as_one_line() {
        let mut errors = BTreeMap::new();
        assert_eq!(http_errors_text(&errors), "none");
        errors.insert("503".to_owned(), 6);
        errors.insert("error".to_owned(), 1);
        assert_eq!(http_errors_text(&errors), "503: 6, error: 1");
    }
}
