//! The HTML report of `loadtest run --html PATH`: one self-contained page (inline CSS and SVG, no
//! script, no external resource) with the run's parameters, the summary table (both cohorts side by
//! side with `--p2p ab`), a warning when the harness was saturated, and four charts drawn with
//! plotters' SVG backend: active viewers, stalls, the segment latency distribution and bytes by
//! source over time.
//!
//! Pure: the page is a function of the [`Report`].

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::report::{CohortReport, P2pMode, Report, Sample, LATENCY_BUCKETS, LATENCY_MIN_MS};

const CHART_SIZE: (u32, u32) = (760, 320);
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const RED: RGBColor = RGBColor(214, 39, 40);
const GREEN: RGBColor = RGBColor(44, 160, 44);

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:64em}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}\
table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}\
th:first-child,td:first-child{text-align:left}\
thead th{background:#f0f0f0}\
.params td{text-align:left}\
.warning{border:2px solid #c00;background:#fee;color:#900;padding:.8em;margin:1em 0;font-weight:bold}\
.chart{margin:1em 0}";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML page of `report`.
pub fn render(report: &Report) -> Result<String, String> {
    let mut out = String::new();
    let mode = mode_name(report.p2p);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<title>loadtest run: {} viewers, P2P {mode}</title>",
        report.viewers
    );
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    out.push_str("<h1>loadtest run</h1>\n");
    out.push_str(&params_table(report));
    if report.harness.machine_saturated() {
        let busy = report.harness.machine_busy.unwrap_or(1.0);
        let _ = writeln!(
            out,
            "<div class=\"warning\">Machine CPU saturated ({:.0}% busy): the gateway, the origin \
             and the harness on it may have been the bottleneck; the figures are suspect.</div>",
            busy * 100.0
        );
    } else if report.harness.saturated {
        let ratio = report
            .harness
            .cpu_ratio
            .map_or_else(String::new, |r| format!(" (CPU ratio {r:.2})"));
        let _ = writeln!(
            out,
            "<div class=\"warning\">Harness CPU saturated{ratio}: the load generator itself may have \
             been the bottleneck; the figures are suspect.</div>"
        );
    }
    out.push_str("<h2>Summary</h2>\n");
    out.push_str(&summary_table(report));
    out.push_str("<h2>Active viewers</h2>\n");
    push_chart(&mut out, &active_chart(&report.timeline)?);
    out.push_str("<h2>Stalls</h2>\n");
    push_chart(&mut out, &stalls_chart(&report.timeline)?);
    out.push_str("<h2>Segment latency distribution</h2>\n");
    push_chart(&mut out, &latency_chart(report)?);
    out.push_str("<h2>Bytes by source</h2>\n");
    push_chart(&mut out, &bytes_chart(&report.timeline)?);
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

fn mode_name(mode: P2pMode) -> &'static str {
    match mode {
        P2pMode::Off => "off",
        P2pMode::On => "on",
        P2pMode::Ab => "ab",
    }
}

/// Inline SVG: the namespace declaration is dropped (HTML does not need it, and the page then names
/// no URL but the run's).
fn push_chart(out: &mut String, svg: &str) {
    let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    let _ = writeln!(out, "<div class=\"chart\">\n{svg}\n</div>");
}

fn params_table(report: &Report) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    match &report.params {
        Some(p) => {
            rows.push(("URL", escape(&p.url)));
            rows.push(("viewers", p.viewers.to_string()));
            rows.push(("duration", format!("{} s", p.duration_s)));
            rows.push(("ramp", format!("{} s", p.ramp_s)));
            rows.push(("churn", p.churn.to_string()));
            rows.push(("live start", format!("{} target durations", p.live_start)));
        }
        None => rows.push(("URL", "-".to_owned())),
    }
    rows.push(("p2p", mode_name(report.p2p).to_owned()));
    if let Some(p2p) = &report.peer_assist {
        rows.push((
            "rendition",
            p2p.rendition
                .map_or_else(|| "auto".to_owned(), |r| r.to_string()),
        ));
    }
    rows.push(("sessions started", report.viewers.to_string()));
    rows.push(("wall time", format!("{:.1} s", report.duration_s)));
    let mut out = String::from("<table class=\"params\">\n");
    for (label, value) in rows {
        let _ = writeln!(out, "<tr><th>{label}</th><td>{value}</td></tr>");
    }
    out.push_str("</table>\n");
    out
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
}

fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit == "B" {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// The run-wide figures in the shape of a cohort's.
fn overall(report: &Report) -> CohortReport {
    CohortReport {
        viewers: report.viewers,
        qoe: report.qoe,
        segments: report.segments,
    }
}

type Row = (&'static str, fn(&CohortReport) -> String);

const ROWS: [Row; 17] = [
    ("sessions", |c| c.viewers.to_string()),
    ("startup p50", |c| fmt_ms(c.qoe.startup_ms.p50)),
    ("startup p95", |c| fmt_ms(c.qoe.startup_ms.p95)),
    ("startup p99", |c| fmt_ms(c.qoe.startup_ms.p99)),
    ("never started", |c| c.qoe.startup_failures.to_string()),
    ("stall ratio", |c| format!("{:.4}", c.qoe.stall_ratio)),
    ("stalls", |c| c.qoe.stalls.to_string()),
    ("stalled / watched", |c| {
        format!("{:.1} s / {:.1} s", c.qoe.stalled_s, c.qoe.watched_s)
    }),
    ("average bitrate", |c| {
        format!("{:.0} kbit/s", c.qoe.average_bitrate / 1e3)
    }),
    ("switches", |c| c.qoe.switches.to_string()),
    ("failed fetches", |c| c.qoe.failures.to_string()),
    ("segments", |c| c.segments.to_string()),
    ("segment latency p50", |c| {
        fmt_ms(c.qoe.segment_latency_ms.p50)
    }),
    ("segment latency p95 / p99", |c| {
        format!(
            "{} / {}",
            fmt_ms(c.qoe.segment_latency_ms.p95),
            fmt_ms(c.qoe.segment_latency_ms.p99)
        )
    }),
    ("segment latency max", |c| {
        fmt_ms(c.qoe.segment_latency_ms.max)
    }),
    ("bytes HTTP / peer", |c| {
        format!(
            "{} / {}",
            fmt_bytes(c.qoe.bytes.http),
            fmt_bytes(c.qoe.bytes.peer)
        )
    }),
    ("offload", |c| {
        format!("{:.1}%", c.qoe.offload_ratio * 100.0)
    }),
];

fn summary_table(report: &Report) -> String {
    let all = overall(report);
    let mut columns: Vec<(&str, &CohortReport)> = vec![("all", &all)];
    if let Some(cohorts) = &report.cohorts {
        columns.push(("P2P cohort", &cohorts.p2p));
        columns.push(("HTTP cohort", &cohorts.http));
    }
    let mut out = String::from("<table class=\"summary\">\n<thead><tr><th></th>");
    for (name, _) in &columns {
        let _ = write!(out, "<th>{name}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (label, value) in ROWS {
        let _ = write!(out, "<tr><td>{label}</td>");
        for (_, cohort) in &columns {
            let _ = write!(out, "<td>{}</td>", escape(&value(cohort)));
        }
        out.push_str("</tr>\n");
    }
    let span = columns.len();
    let mut wide = |label: &str, value: String| {
        let _ = writeln!(
            out,
            "<tr><td>{label}</td><td colspan=\"{span}\">{}</td></tr>",
            escape(&value)
        );
    };
    wide("distinct segments", report.distinct_segments.to_string());
    let errors = crate::report::http_errors_text(&report.http_errors);
    wide("HTTP errors", errors);
    wide(
        "origin requests / segment",
        report
            .origin_requests_per_segment
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}")),
    );
    wide(
        "gateway",
        report.gateway.map_or_else(
            || "-".to_owned(),
            |g| {
                format!(
                    "{:.2} s CPU, RSS {}",
                    g.cpu_s,
                    g.rss_bytes.map_or_else(|| "-".to_owned(), fmt_bytes)
                )
            },
        ),
    );
    wide(
        "harness CPU",
        match (report.harness.cpu_s, report.harness.cpu_ratio) {
            (Some(s), Some(r)) => format!("{s:.2} s (ratio {r:.3})"),
            _ => "-".to_owned(),
        },
    );
    if let Some(p) = &report.peer_assist {
        wide("corrupted accepted", p.corrupted_accepted.to_string());
        wide("unverified segments", p.unverified_segments.to_string());
        wide("verification mismatches", p.mismatches.to_string());
        wide("liars", p.liars.to_string());
        wide("uploaded", fmt_bytes(p.uploaded_bytes));
        wide(
            "fallbacks (timeout / mismatch / absent / disconnect)",
            format!(
                "{} / {} / {} / {}",
                p.fallbacks.timeout,
                p.fallbacks.mismatch,
                p.fallbacks.absent,
                p.fallbacks.disconnect
            ),
        );
        wide("node start failures", p.node_start_failures.to_string());
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn draw_error<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// One line of a [`line_chart`]: legend, colour, value of a sample.
type Line = (&'static str, RGBColor, fn(&Sample) -> f64);

/// A line chart over the run's elapsed seconds.
fn line_chart(
    caption: &str,
    y_desc: &str,
    timeline: &[Sample],
    series: &[Line],
) -> Result<String, String> {
    let x_max = timeline.iter().map(|s| s.elapsed_s).fold(1.0_f64, f64::max);
    let y_max = timeline
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, f)| f(s)))
        .fold(0.0_f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("elapsed (s)")
            .y_desc(y_desc)
            .draw()
            .map_err(draw_error)?;
        for &(name, color, value) in series {
            chart
                .draw_series(LineSeries::new(
                    timeline.iter().map(|s| (s.elapsed_s, value(s))),
                    color.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

fn active_chart(timeline: &[Sample]) -> Result<String, String> {
    line_chart(
        "Active viewers",
        "viewers",
        timeline,
        &[("active viewers", BLUE, |s| s.active as f64)],
    )
}

fn stalls_chart(timeline: &[Sample]) -> Result<String, String> {
    line_chart(
        "Stalls",
        "stalls / viewers",
        timeline,
        &[
            ("cumulative stalls", RED, |s| s.stalls as f64),
            ("viewers stalled now", ORANGE, |s| s.stalled as f64),
        ],
    )
}

fn bytes_chart(timeline: &[Sample]) -> Result<String, String> {
    line_chart(
        "Bytes received by source (cumulative)",
        "MB",
        timeline,
        &[
            ("HTTP", BLUE, |s| s.bytes_http as f64 / 1e6),
            ("peers", GREEN, |s| s.bytes_peer as f64 / 1e6),
        ],
    )
}

/// Histogram of segment download times on log-spaced buckets, one colour per cohort.
fn latency_chart(report: &Report) -> Result<String, String> {
    let h = &report.latency_histogram;
    let upper = &h.upper_ms;
    // Lower bound of the first bucket: one bucket ratio below its upper bound.
    let ratio = upper
        .get(1)
        .zip(upper.first())
        .map_or(10f64.powf(5.0 / LATENCY_BUCKETS as f64), |(b, a)| b / a);
    let first = upper.first().copied().unwrap_or(LATENCY_MIN_MS);
    let x_min = first / ratio;
    let x_max = upper.last().copied().unwrap_or(10_000.0).max(first * 2.0);
    let mut series: Vec<(&str, RGBColor, &Vec<u64>)> = Vec::new();
    match report.p2p {
        P2pMode::Off => series.push(("HTTP", BLUE, &h.http)),
        P2pMode::On => series.push(("P2P", GREEN, &h.p2p)),
        P2pMode::Ab => {
            series.push(("HTTP cohort", BLUE, &h.http));
            series.push(("P2P cohort", GREEN, &h.p2p));
        }
    }
    let y_max = series
        .iter()
        .flat_map(|(_, _, counts)| counts.iter().copied())
        .max()
        .unwrap_or(0);
    let y_max = if y_max > 0 { y_max as f64 * 1.1 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Segment download time", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("segments")
            .draw()
            .map_err(draw_error)?;
        for &(name, color, counts) in &series {
            let alpha = if series.len() > 1 { 0.5 } else { 0.8 };
            let bars =
                upper
                    .iter()
                    .zip(counts)
                    .filter(|(_, c)| **c > 0)
                    .map(move |(&high, &count)| {
                        Rectangle::new(
                            [(high / ratio, 0.0), (high, count as f64)],
                            color.mix(alpha).filled(),
                        )
                    });
            chart
                .draw_series(bars)
                .map_err(draw_error)?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.mix(alpha).filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{
        build_report, harness_usage, latency_histogram, P2pChecks, ReportInputs, RunParams,
        SessionResult, Traffic,
    };

    fn synthetic(mode: P2pMode, saturated: bool) -> Report {
        let sessions: Vec<SessionResult> = (0..4)
            .map(|number| SessionResult {
                number,
                p2p: mode.cohort_of(number) == crate::report::Cohort::P2p,
                ..SessionResult::default()
            })
            .collect();
        let mut http = Traffic::default();
        http.totals.segments = 123;
        http.totals.bytes = 4_567_890;
        let mut hist = latency_histogram();
        for us in [50, 900, 12_000, 12_500, 250_000, 20_000_000] {
            hist.record(us).unwrap();
        }
        http.segment_latency_us = hist.clone();
        let mut p2p = Traffic {
            segment_latency_us: hist,
            ..Traffic::default()
        };
        p2p.totals.peer_bytes = 1_000_000;
        let cpu = if saturated { 19.0 } else { 1.0 };
        let mut report = build_report(ReportInputs {
            mode,
            sessions: &sessions,
            wall: Duration::from_secs(10),
            http: &http,
            p2p: &p2p,
            distinct_segments: 42,
            origin_requests_per_segment: Some(1.25),
            gateway: None,
            harness: harness_usage(Some(cpu), Duration::from_secs(10), 2),
            checks: P2pChecks::default(),
        });
        report.params = Some(RunParams {
            url: "http://127.0.0.1:8080/live/master.m3u8?a=1&b=<x>".to_owned(),
            viewers: 4,
            duration_s: 10.0,
            ramp_s: 1.0,
            churn: 0.0,
            live_start: 3,
            network: None,
        });
        report.timeline = (0..=10u32)
            .map(|i| Sample {
                elapsed_s: f64::from(i),
                active: 4,
                stalls: u64::from(i / 3),
                stalled: u64::from(i % 2),
                bytes_http: u64::from(i) * 400_000,
                bytes_peer: u64::from(i) * 100_000,
            })
            .collect();
        report
    }

    #[test]
    fn renders_a_self_contained_page() {
        let report = synthetic(P2pMode::Off, false);
        let html = render(&report).unwrap();
        assert_eq!(html.matches("<svg").count(), 4, "{html}");
        assert!(html.starts_with("<!DOCTYPE html>"));
        // Titles and axis labels are SVG text (no font files involved).
        assert!(html.contains("<text"), "{html}");
        assert!(html.contains("Segment download time"));
        // Summary numbers.
        assert!(html.contains("<td>123</td>"), "segments");
        assert!(html.contains("\">42</td>"), "distinct segments");
        assert!(html.contains("1.250"), "origin requests per segment");
        assert!(html.contains("4.4 MiB"), "bytes over HTTP");
        assert!(html.contains("<td>4</td>"), "sessions");
        // The URL, escaped.
        let url = "http://127.0.0.1:8080/live/master.m3u8?a=1&amp;b=&lt;x&gt;";
        assert!(html.contains(url));
        assert!(!html.contains("<x>"));
        // Self-contained: the run's URL is the only URL.
        let without_url = html.replace(url, "");
        assert!(!without_url.contains("http://"), "{without_url}");
        assert!(!without_url.contains("https://"));
        for forbidden in ["<script", "<link", "<img", "url(", "@import"] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
        assert!(!html.contains("class=\"warning\""));
        assert!(!html.contains("P2P cohort"));
    }

    #[test]
    fn ab_columns_and_saturation_warning() {
        let report = synthetic(P2pMode::Ab, true);
        let html = render(&report).unwrap();
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("class=\"warning\""));
        assert!(html.contains("<th>P2P cohort</th><th>HTTP cohort</th>"));
        assert!(html.contains("corrupted accepted"));
    }

    #[test]
    fn empty_report_still_renders() {
        let mut report = synthetic(P2pMode::On, false);
        report.timeline.clear();
        report.params = None;
        let html = render(&report).unwrap();
        assert_eq!(html.matches("<svg").count(), 4);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }
}
