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
//!   timeouts, non-2xx statuses and unparsable playlists). `http_errors` counts the non-2xx answers by
//!   status code and transport errors (timeouts included) as `"error"`.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::player::PlayerStats;

/// Clock ticks per second of the `utime`/`stime` fields of `/proc/PID/stat` (Linux `USER_HZ`).
pub const USER_HZ: f64 = 100.0;
/// Harness CPU ratio above which the run is flagged as saturated.
pub const SATURATION_RATIO: f64 = 0.8;
/// The gateway series counting successful segment fetches from the origin.
pub const ORIGIN_SEGMENT_SERIES: &str = "gateway_origin_requests_total";

/// The report of one run (serialised as the `--json` file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Sessions started.
    pub viewers: u64,
    /// Wall-clock length of the run.
    pub duration_s: f64,
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
    /// Bytes received.
    pub bytes: Bytes,
    /// Share of segment bytes received from peers (always 0 for HTTP-only viewers).
    pub offload_ratio: f64,
    /// Non-2xx statuses and transport errors (`"error"`), by count.
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
    /// Response bodies received over HTTP (playlists and segments, errors included).
    pub http: u64,
}

/// CPU and memory of a process during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
    /// `cpu_ratio > 0.8`: the harness may have been the bottleneck.
    pub saturated: bool,
}

/// Request counters collected by the runner.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTotals {
    pub segments: u64,
    pub distinct_segments: u64,
    pub bytes: u64,
    pub failures: u64,
    pub http_errors: BTreeMap<String, u64>,
}

/// Everything [`build_report`] aggregates.
#[derive(Debug)]
pub struct ReportInputs<'a> {
    /// One entry per session: its counters at the end, or `None` if it never got as far as a
    /// player (the multivariant playlist never loaded).
    pub sessions: &'a [Option<PlayerStats>],
    /// Wall-clock length of the run.
    pub wall: Duration,
    pub totals: RequestTotals,
    /// Segment download times, microseconds.
    pub segment_latency_us: &'a Histogram<u64>,
    pub origin_requests_per_segment: Option<f64>,
    pub gateway: Option<ProcessUsage>,
    pub harness: HarnessUsage,
}

/// Aggregates a run.
pub fn build_report(inputs: ReportInputs<'_>) -> Report {
    let started: Vec<&PlayerStats> = inputs.sessions.iter().flatten().collect();
    let mut startups: Vec<f64> = started
        .iter()
        .filter_map(|s| s.startup)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    startups.sort_by(f64::total_cmp);
    let startup_failures = inputs.sessions.len() as u64 - startups.len() as u64;
    let stalled: Duration = started.iter().map(|s| s.stalled).sum();
    let watched: Duration = started.iter().map(|s| s.watched).sum();
    Report {
        viewers: inputs.sessions.len() as u64,
        duration_s: round3(inputs.wall.as_secs_f64()),
        startup_ms: Percentiles {
            p50: percentile(&startups, 0.50).map(round3),
            p95: percentile(&startups, 0.95).map(round3),
            p99: percentile(&startups, 0.99).map(round3),
        },
        startup_failures,
        stall_ratio: stall_ratio(&started),
        stalls: started.iter().map(|s| u64::from(s.stalls)).sum(),
        stalled_s: round3(stalled.as_secs_f64()),
        watched_s: round3(watched.as_secs_f64()),
        failures: inputs.totals.failures,
        average_bitrate: weighted_bitrate(&started).round(),
        switches: started.iter().map(|s| u64::from(s.switches)).sum(),
        segment_latency_ms: latency_ms(inputs.segment_latency_us),
        bytes: Bytes {
            http: inputs.totals.bytes,
        },
        offload_ratio: 0.0,
        http_errors: inputs.totals.http_errors,
        segments: inputs.totals.segments,
        distinct_segments: inputs.totals.distinct_segments,
        origin_requests_per_segment: inputs.origin_requests_per_segment.map(round3),
        gateway: inputs.gateway,
        harness: inputs.harness,
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
    let _ = writeln!(
        out,
        "loadtest run: {} sessions over {:.1} s",
        report.viewers, report.duration_s
    );
    let row = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "  {label:<22} {value}");
    };
    let s = &report.startup_ms;
    row(
        &mut out,
        "startup",
        format!(
            "p50 {}  p95 {}  p99 {}  ({} never started)",
            fmt_ms(s.p50),
            fmt_ms(s.p95),
            fmt_ms(s.p99),
            report.startup_failures
        ),
    );
    row(
        &mut out,
        "stalls",
        format!(
            "{} ({:.1} s stalled of {:.1} s watched, ratio {:.4})",
            report.stalls, report.stalled_s, report.watched_s, report.stall_ratio
        ),
    );
    row(
        &mut out,
        "average bitrate",
        format!(
            "{:.0} kbit/s ({} switches)",
            report.average_bitrate / 1e3,
            report.switches
        ),
    );
    row(
        &mut out,
        "segments",
        format!(
            "{} fetched, {} distinct, {} over HTTP (offload {:.1}%)",
            report.segments,
            report.distinct_segments,
            fmt_bytes(report.bytes.http),
            report.offload_ratio * 100.0
        ),
    );
    let l = &report.segment_latency_ms;
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
    let errors = if report.http_errors.is_empty() {
        "none".to_owned()
    } else {
        report
            .http_errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row(
        &mut out,
        "failures",
        format!("{} failed fetches (HTTP errors: {errors})", report.failures),
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
    let h = &report.harness;
    row(
        &mut out,
        "harness",
        match (h.cpu_s, h.cpu_ratio) {
            (Some(cpu), Some(ratio)) => {
                format!("{cpu:.2} s CPU ({:.1}% of the machine)", ratio * 100.0)
            }
            _ => "- (CPU time unavailable)".to_owned(),
        },
    );
    if h.saturated {
        let warning = "harness CPU saturated: figures are suspect";
        if color {
            let _ = writeln!(out, "\x1b[31m{warning}\x1b[0m");
        } else {
            let _ = writeln!(out, "{warning}");
        }
    }
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

    #[test]
    fn report_aggregates_sessions() {
        let mut slow = stats(500, 10_000, 2e6);
        slow.startup = Some(Duration::from_millis(1500));
        let mut never = stats(0, 0, 0.0);
        never.startup = None;
        let sessions = vec![Some(stats(0, 10_000, 1e6)), Some(slow), Some(never), None];
        let mut h = latency_histogram();
        h.saturating_record(2_000);
        let mut errors = BTreeMap::new();
        errors.insert("404".to_owned(), 2);
        let report = build_report(ReportInputs {
            sessions: &sessions,
            wall: Duration::from_millis(20_004),
            totals: RequestTotals {
                segments: 10,
                distinct_segments: 5,
                bytes: 1234,
                failures: 2,
                http_errors: errors.clone(),
            },
            segment_latency_us: &h,
            origin_requests_per_segment: Some(1.0),
            gateway: None,
            harness: harness_usage(Some(1.0), Duration::from_secs(20), 2),
        });
        assert_eq!(report.viewers, 4);
        assert_eq!(report.startup_failures, 2);
        assert_eq!(report.startup_ms.p50, Some(500.0));
        assert_eq!(report.startup_ms.p95, Some(1500.0));
        assert_eq!(report.stalls, 1);
        assert_eq!(report.stalled_s, 0.5);
        assert_eq!(report.watched_s, 20.0);
        assert!((report.stall_ratio - 0.025).abs() < 1e-12);
        assert_eq!(report.average_bitrate, 1.5e6);
        assert_eq!(report.switches, 3);
        assert_eq!(report.duration_s, 20.004);
        assert_eq!(report.http_errors, errors);
        assert_eq!(report.harness.cpu_ratio, Some(0.025));
        assert!(!report.harness.saturated);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["startup_ms"]["p95"], 1500.0);
        assert_eq!(json["bytes"]["http"], 1234);
        assert_eq!(json["http_errors"]["404"], 2);
        assert!(json["gateway"].is_null());
        assert_eq!(json["offload_ratio"], 0.0);
        assert_eq!(json["segment_latency_ms"]["max"].as_f64(), Some(2.0));
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
        let sessions = vec![Some(stats(0, 1_000, 1e6))];
        let h = latency_histogram();
        let report = build_report(ReportInputs {
            sessions: &sessions,
            wall: Duration::from_secs(1),
            totals: RequestTotals::default(),
            segment_latency_us: &h,
            origin_requests_per_segment: None,
            gateway: None,
            harness: harness_usage(Some(1.9), Duration::from_secs(1), 2),
        });
        let plain = render_summary(&report, false);
        assert!(plain.contains("\nharness CPU saturated: figures are suspect\n"));
        assert!(!plain.contains('\x1b'));
        let colored = render_summary(&report, true);
        assert!(colored.contains("\x1b[31mharness CPU saturated"));
    }
}
