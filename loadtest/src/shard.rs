//! A run split over processes (or machines): `loadtest run --shard I/N` plays only the sessions of
//! shard I, with the same arrival schedule, cohorts, seeds and emulated links as the whole run
//! would give them, and writes into its JSON report (`"shard"`) the raw inputs of its figures.
//! `loadtest merge` adds the shards' raw inputs and builds the report of the whole run from them
//! with the same code as a single run ([`crate::report::build_report`]): percentiles over all the
//! sessions, histograms added bucket by bucket, per-node ratios over all the nodes.
//!
//! Sessions go to shards in pairs of arrival numbers (`(number / 2) % N`), so that every shard
//! holds as many sessions of each `--p2p ab` cohort.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::time::Duration;

use hdrhistogram::Histogram;
use peer_assist::node::{HttpBytesByCause, Summary};
use peer_assist::protocol::signal::Failures;
use serde::{Deserialize, Serialize};

use crate::player::PlayerStats;
use crate::report::{
    self, latency_histogram, CorruptionCount, HarnessUsage, P2pChecks, P2pMode, ProcessUsage,
    Report, ReportInputs, RequestTotals, Sample, SessionResult, Traffic,
};

/// Most shards of one run.
pub const MAX_SHARDS: usize = 1024;

/// Shard `index` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub of: usize,
}

impl Shard {
    /// Parses `I/N` (0 ≤ I < N ≤ [`MAX_SHARDS`]).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("expected I/N (e.g. 0/4), got {s:?}"))?;
        let number = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("expected I/N with whole numbers, got {s:?}"))
        };
        let (index, of) = (number(i)?, number(n)?);
        if of == 0 || of > MAX_SHARDS {
            return Err(format!("{s:?}: N must be 1 to {MAX_SHARDS}"));
        }
        if index >= of {
            return Err(format!("{s:?}: I must be below N (shards are 0 to N-1)"));
        }
        Ok(Self { index, of })
    }

    /// Whether session `number` (0-based arrival number of the whole run) is this shard's.
    pub fn holds(&self, number: usize) -> bool {
        (number / 2) % self.of == self.index
    }
}

/// What a shard writes for `loadtest merge` (the `"shard"` member of its JSON report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardData {
    #[serde(flatten)]
    pub shard: Shard,
    pub mode: P2pMode,
    /// Wall-clock length of this shard's run, seconds.
    pub wall_s: f64,
    /// This process's CPU seconds during the run, and the CPUs of its machine.
    pub harness_cpu_s: Option<f64>,
    /// The busy share of this shard's machine during its run (absent in older shard reports).
    #[serde(default)]
    pub machine_busy: Option<f64>,
    pub cpus: usize,
    /// The gateway's usage as this shard read it (`--gateway-pid`).
    pub gateway: Option<ProcessUsage>,
    /// The increase of the gateway's origin segment fetches during this shard's run
    /// (`--gateway-metrics`); shards running side by side each see all of them.
    pub origin_segment_fetches: Option<f64>,
    pub checks: RawChecks,
    pub sessions: Vec<RawSession>,
    pub http: RawTraffic,
    pub p2p: RawTraffic,
    /// Distinct segment URLs fetched by this shard's viewers.
    pub distinct: Vec<String>,
    pub timeline: Vec<Sample>,
}

/// [`P2pChecks`], raw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawChecks {
    pub rendition: Option<usize>,
    pub corrupted: u64,
    pub unverified: u64,
    pub node_start_failures: u64,
}

/// One session: what the report's figures are computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawSession {
    pub number: usize,
    pub p2p: bool,
    pub liar: bool,
    pub slow: bool,
    pub stats: Option<RawStats>,
    pub node: Option<RawNode>,
}

/// [`PlayerStats`], durations in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawStats {
    pub startup_us: Option<u64>,
    pub stalls: u32,
    pub stalled_us: u64,
    pub watched_us: u64,
    pub switches: u32,
    pub average_bitrate: f64,
    pub failures: u32,
    pub playing_rendition: usize,
}

/// The part of a node's [`Summary`] the report uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawNode {
    pub http_bytes: u64,
    pub p2p_bytes: u64,
    pub uploaded_bytes: u64,
    /// Absent in shard reports written before it existed.
    #[serde(default)]
    pub p2p_received_bytes: u64,
    #[serde(default)]
    pub p2p_late_bytes: u64,
    #[serde(default)]
    pub http_bytes_by_cause: HttpBytesByCause,
    pub mismatches: u64,
    pub failures: Failures,
    pub rendition_switches: u64,
    pub peers_dropped_for_lying: u64,
}

/// One cohort's request counters, its histograms as (value, count) pairs in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RawTraffic {
    pub segments: u64,
    pub bytes: u64,
    pub peer_bytes: u64,
    pub failures: u64,
    pub http_errors: BTreeMap<String, u64>,
    pub segment_latency_us: Vec<(u64, u64)>,
    pub live_latency_us: Vec<(u64, u64)>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds (value, count) pairs to `h`; values beyond its bounds are clamped into them.
fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        let value = value.clamp(h.low(), h.high());
        let _ = h.record_n(value, count);
    }
}

impl RawSession {
    pub fn of(s: &SessionResult) -> Self {
        Self {
            number: s.number,
            p2p: s.p2p,
            liar: s.liar,
            slow: s.slow,
            stats: s.stats.as_ref().map(|p| RawStats {
                startup_us: p.startup.map(micros),
                stalls: p.stalls,
                stalled_us: micros(p.stalled),
                watched_us: micros(p.watched),
                switches: p.switches,
                average_bitrate: p.average_bitrate,
                failures: p.failures,
                playing_rendition: p.playing_rendition,
            }),
            node: s.node.as_ref().map(|n| RawNode {
                http_bytes: n.http_bytes,
                p2p_bytes: n.p2p_bytes,
                uploaded_bytes: n.uploaded_bytes,
                p2p_received_bytes: n.p2p_received_bytes,
                p2p_late_bytes: n.p2p_late_bytes,
                http_bytes_by_cause: n.http_bytes_by_cause.clone(),
                mismatches: n.mismatches,
                failures: n.failures.clone(),
                rendition_switches: n.rendition_switches,
                peers_dropped_for_lying: n.peers_dropped_for_lying.len() as u64,
            }),
        }
    }

    fn result(&self) -> SessionResult {
        SessionResult {
            number: self.number,
            p2p: self.p2p,
            liar: self.liar,
            slow: self.slow,
            stats: self.stats.as_ref().map(|p| PlayerStats {
                startup: p.startup_us.map(Duration::from_micros),
                stalls: p.stalls,
                stalled: Duration::from_micros(p.stalled_us),
                watched: Duration::from_micros(p.watched_us),
                switches: p.switches,
                average_bitrate: p.average_bitrate,
                failures: p.failures,
                playing_rendition: p.playing_rendition,
            }),
            node: self.node.as_ref().map(|n| Summary {
                http_bytes: n.http_bytes,
                p2p_bytes: n.p2p_bytes,
                uploaded_bytes: n.uploaded_bytes,
                p2p_received_bytes: n.p2p_received_bytes,
                p2p_late_bytes: n.p2p_late_bytes,
                http_bytes_by_cause: n.http_bytes_by_cause.clone(),
                mismatches: n.mismatches,
                failures: n.failures.clone(),
                rendition_switches: n.rendition_switches,
                // Only their number is reported.
                peers_dropped_for_lying: vec![String::new(); n.peers_dropped_for_lying as usize],
                ..Summary::default()
            }),
        }
    }
}

impl RawTraffic {
    pub fn of(t: &Traffic) -> Self {
        Self {
            segments: t.totals.segments,
            bytes: t.totals.bytes,
            peer_bytes: t.totals.peer_bytes,
            failures: t.totals.failures,
            http_errors: t.totals.http_errors.clone(),
            segment_latency_us: pairs(&t.segment_latency_us),
            live_latency_us: pairs(&t.live_latency_us),
        }
    }

    fn add_to(&self, t: &mut Traffic) {
        let totals = &mut t.totals;
        totals.segments += self.segments;
        totals.bytes += self.bytes;
        totals.peer_bytes += self.peer_bytes;
        totals.failures += self.failures;
        for (k, v) in &self.http_errors {
            *totals.http_errors.entry(k.clone()).or_default() += v;
        }
        add_pairs(&mut t.segment_latency_us, &self.segment_latency_us);
        add_pairs(&mut t.live_latency_us, &self.live_latency_us);
    }
}

impl RawChecks {
    pub fn of(c: &P2pChecks) -> Self {
        Self {
            rendition: c.rendition,
            corrupted: c.corruption.corrupted,
            unverified: c.corruption.unverified,
            node_start_failures: c.node_start_failures,
        }
    }
}

/// Why shards cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("no shard reports to merge")]
    Empty,
    #[error("{0}")]
    Mismatch(String),
}

/// The report of the whole run from all its shards (each exactly once, in any order).
pub fn merge(shards: &[ShardData]) -> Result<Report, MergeError> {
    let first = shards.first().ok_or(MergeError::Empty)?;
    let of = first.shard.of;
    let mut seen = vec![false; of];
    for s in shards {
        if s.shard.of != of {
            return Err(MergeError::Mismatch(format!(
                "shard {}/{} is of another split than {}/{of}",
                s.shard.index, s.shard.of, first.shard.index
            )));
        }
        if s.mode != first.mode {
            return Err(MergeError::Mismatch(format!(
                "shard {}/{of} ran with --p2p {:?}, shard {}/{of} with {:?}",
                s.shard.index, s.mode, first.shard.index, first.mode
            )));
        }
        match seen.get_mut(s.shard.index) {
            Some(slot) if !*slot => *slot = true,
            Some(_) => {
                return Err(MergeError::Mismatch(format!(
                    "shard {}/{of} is given twice",
                    s.shard.index
                )))
            }
            None => {
                return Err(MergeError::Mismatch(format!(
                    "shard {}/{of} is out of range",
                    s.shard.index
                )))
            }
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(MergeError::Mismatch(format!(
            "shard {missing}/{of} is missing (every shard of the run is needed)"
        )));
    }
    let mut sessions: Vec<SessionResult> = shards
        .iter()
        .flat_map(|s| s.sessions.iter().map(RawSession::result))
        .collect();
    sessions.sort_by_key(|s| s.number);
    if let Some(w) = sessions.windows(2).find(|w| w[0].number == w[1].number) {
        return Err(MergeError::Mismatch(format!(
            "session {} is in two shards",
            w[0].number
        )));
    }
    let traffic = || Traffic {
        totals: RequestTotals::default(),
        segment_latency_us: latency_histogram(),
        live_latency_us: latency_histogram(),
    };
    let (mut http, mut p2p) = (traffic(), traffic());
    let mut distinct: HashSet<&str> = HashSet::new();
    for s in shards {
        s.http.add_to(&mut http);
        s.p2p.add_to(&mut p2p);
        distinct.extend(s.distinct.iter().map(String::as_str));
    }
    let distinct = distinct.len() as u64;
    let wall_s = shards.iter().map(|s| s.wall_s).fold(0.0, f64::max);
    let origin = shards
        .iter()
        .filter_map(|s| s.origin_segment_fetches)
        .reduce(f64::max);
    let gateway = shards
        .iter()
        .filter_map(|s| s.gateway)
        .reduce(|a, b| ProcessUsage {
            cpu_s: a.cpu_s.max(b.cpu_s),
            rss_bytes: a.rss_bytes.max(b.rss_bytes),
        });
    let checks = P2pChecks {
        rendition: first.checks.rendition,
        corruption: CorruptionCount {
            corrupted: shards.iter().map(|s| s.checks.corrupted).sum(),
            unverified: shards.iter().map(|s| s.checks.unverified).sum(),
        },
        node_start_failures: shards.iter().map(|s| s.checks.node_start_failures).sum(),
    };
    let mut report = report::build_report(ReportInputs {
        mode: first.mode,
        sessions: &sessions,
        wall: Duration::from_secs_f64(wall_s.max(0.0)),
        http: &http,
        p2p: &p2p,
        distinct_segments: distinct,
        origin_requests_per_segment: origin
            .and_then(|delta| report::origin_requests_per_segment(0.0, delta, distinct)),
        gateway,
        harness: harness(shards),
        checks,
    });
    report.timeline = timeline(shards);
    Ok(report)
}

/// The shards' CPU together: seconds summed, the ratio over all their machines' CPU time.
fn harness(shards: &[ShardData]) -> HarnessUsage {
    let cpu: Option<f64> = shards.iter().map(|s| s.harness_cpu_s).sum();
    let capacity: f64 = shards.iter().map(|s| s.wall_s * s.cpus.max(1) as f64).sum();
    let ratio = cpu.filter(|_| capacity > 0.0).map(|c| c / capacity);
    let shard_saturated = shards.iter().any(|s| {
        s.harness_cpu_s
            .is_some_and(|c| s.wall_s > 0.0 && c / (s.wall_s * s.cpus.max(1) as f64) > 0.8)
    });
    // The busiest machine: one saturated machine makes its shard's figures suspect.
    let machine = shards
        .iter()
        .filter_map(|s| s.machine_busy)
        .max_by(f64::total_cmp);
    HarnessUsage {
        cpu_s: cpu.map(|c| (c * 1e3).round() / 1e3),
        cpu_ratio: ratio.map(|r| (r * 1e3).round() / 1e3),
        machine_busy: None,
        saturated: shard_saturated || ratio.is_some_and(|r| r > report::SATURATION_RATIO),
    }
    .with_machine(machine)
}

/// The shards' timelines added second by second.
fn timeline(shards: &[ShardData]) -> Vec<Sample> {
    let len = shards.iter().map(|s| s.timeline.len()).max().unwrap_or(0);
    (0..len)
        .map(|i| {
            let mut sum = Sample::default();
            for s in shards.iter().filter_map(|s| s.timeline.get(i)) {
                sum.elapsed_s = sum.elapsed_s.max(s.elapsed_s);
                sum.active += s.active;
                sum.stalls += s.stalls;
                sum.stalled += s.stalled;
                sum.bytes_http += s.bytes_http;
                sum.bytes_peer += s.bytes_peer;
            }
            sum
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_hold_pairs_of_sessions() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, of: 4 }));
        for bad in ["", "1", "4/4", "0/0", "a/2", "1/2/3", "-1/2", "0/1025"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let two = [Shard { index: 0, of: 2 }, Shard { index: 1, of: 2 }];
        let held: Vec<Vec<usize>> = two
            .iter()
            .map(|s| (0..8).filter(|n| s.holds(*n)).collect())
            .collect();
        assert_eq!(held, [vec![0, 1, 4, 5], vec![2, 3, 6, 7]]);
        // Each shard holds as many sessions of each `ab` cohort (even P2P, odd HTTP).
        for h in &held {
            assert_eq!(h.iter().filter(|n| *n % 2 == 0).count(), 2);
        }
    }

    fn session(number: usize) -> SessionResult {
        let p2p = number % 2 == 0;
        let n = number as u64;
        SessionResult {
            number,
            p2p,
            liar: number == 4,
            slow: false,
            stats: (number != 7).then(|| PlayerStats {
                startup: (number != 5).then(|| Duration::from_millis(200 + 37 * n)),
                stalls: (number % 3) as u32,
                stalled: Duration::from_millis(100 * (n % 3)),
                watched: Duration::from_secs(30 + n),
                switches: (number % 4) as u32,
                average_bitrate: 1_000_000.0 + 50_000.0 * n as f64,
                failures: 0,
                playing_rendition: number % 3,
            }),
            node: p2p.then(|| Summary {
                http_bytes: 1_000_000 - 90_000 * n,
                p2p_bytes: 90_000 * n,
                uploaded_bytes: 40_000 * (n + 1),
                failures: Failures {
                    timeout: n,
                    ..Failures::default()
                },
                peers_dropped_for_lying: vec!["x".into(); number % 2],
                ..Summary::default()
            }),
        }
    }

    fn traffic_of(numbers: &[usize], cohort_p2p: bool) -> Traffic {
        let mut t = Traffic::default();
        for &n in numbers.iter().filter(|n| (*n % 2 == 0) == cohort_p2p) {
            t.totals.segments += 10;
            t.totals.bytes += 1000 * n as u64;
            *t.totals.http_errors.entry("503".into()).or_default() += 1;
            for i in 0..10u64 {
                let _ = t
                    .segment_latency_us
                    .record(1_000 + 7_919 * i * (n as u64 + 1));
                let _ = t.live_latency_us.record(4_000_000 + 10_007 * i);
            }
        }
        t
    }

    /// Two shards merged give the report one process would have built from all the sessions.
    #[test]
    fn merged_shards_report_what_one_run_would() {
        let all: Vec<usize> = (0..12).collect();
        let shards: Vec<ShardData> = (0..2)
            .map(|index| {
                let shard = Shard { index, of: 2 };
                let mine: Vec<usize> = all.iter().copied().filter(|n| shard.holds(*n)).collect();
                ShardData {
                    shard,
                    mode: P2pMode::Ab,
                    wall_s: 60.0 + index as f64,
                    harness_cpu_s: Some(30.0),
                    machine_busy: Some(0.5 + 0.45 * index as f64),
                    cpus: 2,
                    gateway: None,
                    origin_segment_fetches: Some(40.0),
                    checks: RawChecks::default(),
                    sessions: mine.iter().map(|n| RawSession::of(&session(*n))).collect(),
                    http: RawTraffic::of(&traffic_of(&mine, false)),
                    p2p: RawTraffic::of(&traffic_of(&mine, true)),
                    distinct: mine.iter().map(|n| format!("/s/{}.ts", n / 3)).collect(),
                    timeline: vec![Sample {
                        elapsed_s: 1.0,
                        active: mine.len() as u64,
                        ..Sample::default()
                    }],
                }
            })
            .collect();
        let merged = merge(&shards).unwrap();
        let reversed: Vec<ShardData> = shards.iter().rev().cloned().collect();
        assert_eq!(
            merge(&reversed).unwrap(),
            merged,
            "the order of the shards is irrelevant"
        );

        let sessions: Vec<SessionResult> = all.iter().map(|n| session(*n)).collect();
        let (http, p2p) = (traffic_of(&all, false), traffic_of(&all, true));
        let mut expected = report::build_report(ReportInputs {
            mode: P2pMode::Ab,
            sessions: &sessions,
            wall: Duration::from_secs(61),
            http: &http,
            p2p: &p2p,
            distinct_segments: 4,
            origin_requests_per_segment: Some(10.0),
            gateway: None,
            // The busiest shard's machine (0.95 busy) counts.
            harness: report::harness_usage(Some(60.0), Duration::from_secs_f64(60.5), 4)
                .with_machine(Some(0.95)),
            checks: P2pChecks::default(),
        });
        expected.timeline = vec![Sample {
            elapsed_s: 1.0,
            active: 12,
            ..Sample::default()
        }];
        assert_eq!(merged, expected);
        assert_eq!(merged.viewers, 12);
        assert!(merged.cohorts.is_some());
        assert!(merged.harness.saturated && merged.harness.machine_saturated());
    }

    #[test]
    fn shards_missing_twice_or_of_other_runs_are_refused() {
        let data = |index, of| ShardData {
            shard: Shard { index, of },
            mode: P2pMode::On,
            wall_s: 1.0,
            harness_cpu_s: None,
            machine_busy: None,
            cpus: 1,
            gateway: None,
            origin_segment_fetches: None,
            checks: RawChecks::default(),
            sessions: Vec::new(),
            http: RawTraffic::default(),
            p2p: RawTraffic::default(),
            distinct: Vec::new(),
            timeline: Vec::new(),
        };
        assert_eq!(merge(&[]), Err(MergeError::Empty));
        let err = |shards: &[ShardData]| merge(shards).unwrap_err().to_string();
        assert!(err(&[data(0, 2)]).contains("shard 1/2 is missing"));
        assert!(err(&[data(0, 2), data(0, 2)]).contains("given twice"));
        assert!(err(&[data(0, 2), data(1, 3)]).contains("another split"));
        let mut other_mode = data(1, 2);
        other_mode.mode = P2pMode::Ab;
        assert!(err(&[data(0, 2), other_mode]).contains("--p2p"));
        // Round trip through JSON, as `loadtest merge` reads them.
        let text = serde_json::to_string(&data(0, 1)).unwrap();
        let back: ShardData = serde_json::from_str(&text).unwrap();
        assert_eq!(back, data(0, 1));
        assert!(merge(&[back]).is_ok());
    }
}
