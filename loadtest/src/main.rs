//! `loadtest`: simulated HLS viewers and a synthetic origin. See `loadtest --help`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::origin::{self, OriginStats, Outages, SyntheticStream};
use loadtest::report::{render_summary, P2pMode};
use loadtest::run::{parse_duration, parse_rendition, RunConfig};
use loadtest::scenario::Scenario;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load-test harness for the HLS gateway: simulated viewers and a synthetic origin."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a synthetic HLS stream (generated segments of the right sizes) for scale tests.
    Origin(OriginArgs),
    /// Connect many signalling peers to one gateway's tracker and report the join rate, join
    /// latency, and the gateway's RSS and CPU per peer (read from /proc/PID of the gateway).
    Tracker(TrackerArgs),
    /// Run simulated viewers (HTTP, or through peer-assist nodes) against an HLS stream and report
    /// QoE and cost.
    ///
    /// Scenario file (--scenario FILE, TOML): any of the keys viewers, duration, ramp, churn, p2p,
    /// rendition, liars, slow_peers, slow_rate, seed, restart_cmd, restart_at, e.g.
    ///
    ///     viewers = 200
    ///     duration = "2m"
    ///     p2p = "on"
    ///     slow_peers = 0.2
    ///     restart_cmd = "systemctl restart gateway"
    ///     restart_at = "60s"
    ///
    /// Durations are strings ("2m", "20s", "500ms"); rendition is "auto" or an index. Unknown keys
    /// are an error. Command-line flags override the file's values.
    #[command(verbatim_doc_comment)]
    Run(Box<RunArgs>),
    /// Merge the JSON reports of the shards of one run (`loadtest run --shard I/N --json FILE`)
    /// into the report of the whole run: every shard exactly once; percentiles over all the
    /// sessions, histograms added, per-node ratios over all the nodes, CPU of all the shards.
    Merge(MergeArgs),
    /// Measure how much later a new live segment is visible through a gateway than at its origin:
    /// poll the same media playlist at both, side by side, and print a JSON report (median, p99,
    /// and the gateway's origin playlist requests per segment duration).
    EdgeDelay(EdgeDelayArgs),
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The shards' JSON reports.
    #[arg(required = true, value_name = "REPORT")]
    reports: Vec<PathBuf>,
    /// Write the merged report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write the merged report as self-contained HTML to this file.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
}

/// `loadtest merge`: reads the shards, merges them, prints the summary and writes the files.
fn merge_reports(args: MergeArgs) -> Result<(), String> {
    let mut shards = Vec::with_capacity(args.reports.len());
    let mut params = None;
    for path in &args.reports {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a JSON report: {e}", path.display()))?;
        let shard = value
            .get_mut("shard")
            .map(serde_json::Value::take)
            .ok_or_else(|| {
                format!(
                    "{}: not the report of a shard (run with --shard I/N)",
                    path.display()
                )
            })?;
        let shard: loadtest::shard::ShardData = serde_json::from_value(shard)
            .map_err(|e| format!("{}: its shard data: {e}", path.display()))?;
        if params.is_none() {
            params = value.get("params").cloned();
        }
        shards.push(shard);
    }
    let report = loadtest::shard::merge(&shards).map_err(|e| e.to_string())?;
    print!(
        "{}",
        render_summary(&report, std::io::stdout().is_terminal())
    );
    if let Some(path) = &args.json {
        let mut value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        if let (Some(object), Some(params)) = (value.as_object_mut(), params) {
            object.insert("params".into(), params);
            object.insert("shards".into(), shards.len().into());
        }
        let mut json = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        json.push('\n');
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &args.html {
        let html = loadtest::html::render(&report)?;
        std::fs::write(path, html).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("HTML report written to {}", path.display());
    }
    Ok(())
}

#[derive(clap::Args)]
struct EdgeDelayArgs {
    /// The live media playlist at the origin.
    #[arg(long, value_name = "URL")]
    origin: http::Uri,
    /// The same playlist through the gateway.
    #[arg(long, value_name = "URL")]
    gateway: http::Uri,
    /// The gateway's /metrics URL (for its origin playlist requests).
    #[arg(long, value_name = "URL")]
    metrics: Option<http::Uri>,
    /// Poll interval at each.
    #[arg(long, value_parser = parse_duration, default_value = "20ms")]
    every: Duration,
    /// Not counted at the start (the gateway learns the stream).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    warmup: Duration,
    #[arg(long, value_parser = parse_duration, default_value = "90s")]
    duration: Duration,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Multivariant or media playlist URL (loopback only unless --allow-remote).
    #[arg(long, value_name = "URL")]
    url: String,
    /// TOML scenario file (see above); flags given on the command line override its values.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Concurrent viewers (required, here or in the scenario file).
    #[arg(long, value_name = "N")]
    viewers: Option<usize>,
    /// Play LL-HLS streams like a classic player (whole segments, reloads every target
    /// duration) instead of at low latency (blocking reloads, parts at the live edge).
    #[arg(long)]
    no_low_latency: bool,
    /// Live: start this many target durations behind the end of the playlist, like hls.js's
    /// `liveSyncDurationCount` (further behind: more time for peers to bring each segment, at
    /// that much more latency).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=30))]
    live_start: u32,
    /// Length of the run, e.g. "20s", "2m", "500ms" or bare seconds (hard stop; required, here or
    /// in the scenario file).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Viewers arrive evenly over this period [default: 0s].
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    ramp: Option<Duration>,
    /// Fraction (0..1) of the viewers leaving at a random time, each replaced by a new viewer
    /// [default: 0].
    #[arg(long, value_name = "FRACTION")]
    churn: Option<f64>,
    /// Seed of the churn, liar and slow-peer draws [default: 1].
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// "auto" (adaptive bitrate) or a fixed rendition index, 0 = lowest bandwidth. With --p2p on|ab
    /// and ABR, each P2P viewer's node switches swarms with its player; with an index, both
    /// cohorts play that rendition [default: auto].
    #[arg(long, value_name = "auto|N", value_parser = rendition_arg)]
    rendition: Option<RenditionArg>,
    /// Peer-assisted viewers: "off" (HTTP only), "on" (every viewer runs a peer-assist node) or
    /// "ab" (even-numbered viewers P2P, odd-numbered HTTP; both cohorts reported side by side).
    /// The URL must then be a multivariant playlist on a gateway running the tracker
    /// [default: off].
    #[arg(long, value_name = "off|on|ab", value_parser = P2pMode::parse)]
    p2p: Option<P2pMode>,
    /// Test switch: fraction (0..1) of the P2P viewers whose node corrupts what it uploads
    /// (picked from --seed). Requires --p2p on|ab [default: 0].
    #[arg(long, value_name = "FRACTION")]
    liars: Option<f64>,
    /// Test switch: fraction (0..1) of the P2P viewers whose node uploads at most --slow-rate
    /// bytes/s (picked from --seed, liars last). Requires --p2p on|ab [default: 0].
    #[arg(long, value_name = "FRACTION")]
    slow_peers: Option<f64>,
    /// Upload rate of the slow peers, bytes per second [default: 50000].
    #[arg(long, value_name = "BYTES_PER_S")]
    slow_rate: Option<u64>,
    /// Shell command restarting the gateway, run with `sh -c` at --restart-at (killed after 30 s);
    /// its exit status and duration are reported under "restart". The run goes on meanwhile.
    #[arg(long, value_name = "SHELL COMMAND")]
    restart_cmd: Option<String>,
    /// When to run --restart-cmd, after the start of the run [default: 0s]. Requires
    /// --restart-cmd.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    restart_at: Option<Duration>,
    /// Emulated network: each viewer's uplink in bits/s, a value or a range drawn uniformly per
    /// viewer (`1M..10M`). Applies to its QUIC (peer) and HTTP traffic [default: unlimited].
    #[arg(long, value_name = "RATE[..RATE]", value_parser = loadtest::netem::parse_rate_span)]
    uplink: Option<loadtest::netem::Span<u64>>,
    /// Each viewer's downlink in bits/s, a value or a range (`10M..50M`) [default: unlimited].
    #[arg(long, value_name = "RATE[..RATE]", value_parser = loadtest::netem::parse_rate_span)]
    downlink: Option<loadtest::netem::Span<u64>>,
    /// Round-trip time each viewer's link adds, a value or a range (`20ms..150ms`); two viewers
    /// are the sum of their two apart [default: 0].
    #[arg(long, value_name = "D[..D]", value_parser = loadtest::netem::parse_duration_span)]
    rtt: Option<loadtest::netem::Span<std::time::Duration>>,
    /// Packet loss on each viewer's uplink, a value or a range (`0..1%`) [default: 0].
    #[arg(long, value_name = "P[..P]", value_parser = loadtest::netem::parse_loss_span)]
    loss: Option<loadtest::netem::Span<f64>>,
    /// Share of viewers behind a NAT that accepts no inbound connection (`0.2` or `20%`): they
    /// can dial peers but nobody can dial them [default: 0].
    #[arg(long, value_name = "SHARE", value_parser = loadtest::netem::parse_share)]
    unreachable: Option<f64>,
    /// Each P2P viewer's node declares its emulated uplink (--uplink) to the tracker when it
    /// joins, as if it knew it: an oracle to compare the nodes' own measurement of their uplinks
    /// against (docs/BENCHMARKS.md) [default: off, nodes only measure].
    #[arg(long, requires = "uplink")]
    declare_uplink: bool,
    /// The IP address the P2P viewers' nodes bind their QUIC sockets to and announce to peers
    /// (a viewer in its own network namespace needs its own) [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    p2p_bind: Option<std::net::IpAddr>,
    /// Play only shard I of N of the run (0-based): the sessions of the whole run whose arrival
    /// number n has (n / 2) % N == I, on the whole run's schedule, cohorts and links. Run every
    /// shard with the same other flags (at once, in as many processes or machines), each with
    /// --json, then `loadtest merge` their reports.
    #[arg(long, value_name = "I/N", value_parser = loadtest::shard::Shard::parse)]
    shard: Option<loadtest::shard::Shard>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (summary table and charts) to this file.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// The gateway's /metrics URL: reports origin requests per distinct segment.
    #[arg(long, value_name = "URL")]
    gateway_metrics: Option<String>,
    /// The gateway's process id: reports its CPU time and RSS (Linux /proc).
    #[arg(long, value_name = "PID")]
    gateway_pid: Option<u32>,
    /// Allow a URL whose host is not a loopback address.
    #[arg(long)]
    allow_remote: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct OriginArgs {
    /// Serve a live stream (a window advancing in real time).
    #[arg(long, conflicts_with = "vod")]
    live: bool,
    /// Serve a VOD stream.
    #[arg(long)]
    vod: bool,
    /// Bit rates of the renditions, e.g. "400k,1M,2.5M".
    #[arg(long, value_name = "LIST", default_value = "400k,1M,2.5M")]
    bitrate: String,
    /// Segment duration in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    segment_duration: f64,
    /// VOD length in segments.
    #[arg(long, value_name = "N", default_value_t = 30)]
    vod_segments: u64,
    /// Segments in a live playlist.
    #[arg(long, value_name = "N", default_value_t = 6)]
    live_window: u64,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Path prefix of a stream (repeat for several streams, each its own master playlist at
    /// PREFIX/master.m3u8) [default: /synthetic].
    #[arg(long, value_name = "PREFIX")]
    prefix: Vec<String>,
    /// Origin outage window START+LENGTH after the origin starts, e.g. "30s+15s" (repeatable):
    /// every request gets 503 during it.
    #[arg(long, value_name = "START+LENGTH", value_parser = Outages::parse_window)]
    outage: Vec<(Duration, Duration)>,
    /// Serve the live stream as Low-Latency HLS: parts, preload hints, rendition reports,
    /// blocking playlist reloads (`_HLS_msn`, `_HLS_part`) and delta updates (`_HLS_skip`).
    #[arg(long, requires = "live")]
    ll_hls: bool,
    /// LL-HLS part duration, e.g. "0.5s" or "250ms": whole milliseconds dividing the segment
    /// duration [default: 0.5s with --ll-hls].
    #[arg(long, value_name = "DURATION", requires = "ll_hls", value_parser = peer_assist::units::parse_duration)]
    part: Option<Duration>,
}

/// `--rendition`: `None` = auto (a newtype, so that clap does not treat the argument as optional).
#[derive(Clone, Copy)]
struct RenditionArg(Option<usize>);

fn rendition_arg(s: &str) -> Result<RenditionArg, String> {
    parse_rendition(s).map(RenditionArg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Peer-assist nodes (QUIC) need a process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Origin(args) => runtime.block_on(run_origin(args)),
        Command::Run(args) => runtime.block_on(run_viewers(*args)),
        Command::Merge(args) => match merge_reports(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest: merge: {e}");
                ExitCode::from(2)
            }
        },
        Command::EdgeDelay(args) => {
            if args.duration <= args.warmup || args.every.is_zero() {
                eprintln!("loadtest: edge-delay: --duration must exceed --warmup, --every be > 0");
                return ExitCode::from(2);
            }
            let report = runtime.block_on(loadtest::edge_delay::run(
                loadtest::edge_delay::EdgeDelayConfig {
                    origin: args.origin,
                    gateway: args.gateway,
                    metrics: args.metrics,
                    every: args.every,
                    warmup: args.warmup,
                    duration: args.duration,
                },
            ));
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("loadtest: edge-delay: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Tracker(args) => {
            let report =
                runtime.block_on(loadtest::tracker::run(loadtest::tracker::TrackerBench {
                    gateway: args.gateway,
                    stream: args.stream,
                    peers: args.peers,
                    swarm_size: args.swarm_size,
                    rate: args.rate,
                    hold: args.hold,
                    pid: args.gateway_pid,
                }));
            println!("{report}");
            ExitCode::SUCCESS
        }
    }
}

#[derive(clap::Args)]
struct TrackerArgs {
    /// The gateway, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway: String,
    /// Multivariant playlist path; swarm i joins its rendition i.
    #[arg(long, default_value = "/synthetic/master.m3u8")]
    stream: String,
    /// Peers to connect.
    #[arg(long, default_value_t = 1000)]
    peers: usize,
    /// Peers per swarm (rendition).
    #[arg(long, default_value_t = 200)]
    swarm_size: usize,
    /// Joins started per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// How long to hold every peer after the joins.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    hold: Duration,
    /// The gateway's process id (for RSS and CPU from /proc).
    #[arg(long)]
    gateway_pid: Option<u32>,
}

async fn run_viewers(args: RunArgs) -> ExitCode {
    let file = match &args.scenario {
        Some(path) => match Scenario::load(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("loadtest: --scenario: {e}");
                return ExitCode::from(2);
            }
        },
        None => Scenario::default(),
    };
    let flags = Scenario {
        viewers: args.viewers,
        duration: args.duration,
        ramp: args.ramp,
        churn: args.churn,
        p2p: args.p2p,
        rendition: args.rendition.map(|r| r.0),
        liars: args.liars,
        slow_peers: args.slow_peers,
        slow_rate: args.slow_rate,
        seed: args.seed,
        restart_cmd: args.restart_cmd,
        restart_at: args.restart_at,
    };
    let player = loadtest::player::PlayerConfig {
        low_latency: !args.no_low_latency,
        live_start_target_durations: args.live_start,
        ..Default::default()
    };
    let base = RunConfig {
        url: args.url,
        player,
        json: args.json.clone(),
        html: args.html.clone(),
        gateway_metrics: args.gateway_metrics,
        gateway_pid: args.gateway_pid,
        allow_remote: args.allow_remote,
        progress: !args.quiet,
        network: loadtest::netem::Network {
            uplink: args.uplink,
            downlink: args.downlink,
            rtt: args.rtt,
            loss: args.loss,
            unreachable: args.unreachable.unwrap_or(0.0),
            declare_uplink: args.declare_uplink,
        },
        p2p_bind: args.p2p_bind,
        shard: args.shard,
        ..RunConfig::default()
    };
    let config = match file.overridden_by(flags).apply(base) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    match loadtest::run::run(config).await {
        Ok(report) => {
            print!(
                "{}",
                render_summary(&report, std::io::stdout().is_terminal())
            );
            if let Some(path) = args.json {
                println!("report written to {}", path.display());
            }
            if let Some(path) = args.html {
                println!("HTML report written to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run_origin(args: OriginArgs) -> ExitCode {
    let bitrates = match origin::parse_bitrates(&args.bitrate) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("loadtest: --bitrate: {e}");
            return ExitCode::from(2);
        }
    };
    if !(args.segment_duration.is_finite() && args.segment_duration >= 0.001) {
        eprintln!("loadtest: --segment-duration must be at least 0.001 seconds");
        return ExitCode::from(2);
    }
    let mut stream = SyntheticStream::new(!args.vod, bitrates);
    stream.segment_duration = Duration::from_secs_f64(args.segment_duration);
    stream.vod_segments = args.vod_segments;
    stream.live_window = args.live_window;
    if args.ll_hls {
        stream.part = Some(args.part.unwrap_or(Duration::from_millis(500)));
    }
    if let Err(e) = stream.validate() {
        eprintln!("loadtest: {e}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("loadtest: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(args.listen, |a| a);
    let kind = match (stream.live, stream.part) {
        (true, Some(part)) => format!("LL-HLS live ({} ms parts)", part.as_millis()),
        (true, None) => "live".to_owned(),
        (false, _) => "VOD".to_owned(),
    };
    let prefixes = if args.prefix.is_empty() {
        vec![stream.prefix.clone()]
    } else {
        args.prefix.clone()
    };
    let streams: Vec<SyntheticStream> = prefixes
        .iter()
        .map(|prefix| SyntheticStream {
            prefix: prefix.clone(),
            ..stream.clone()
        })
        .collect();
    for s in &streams {
        println!(
            "synthetic {kind} origin on http://{addr}{}/master.m3u8",
            s.prefix
        );
    }
    let stats = Arc::new(OriginStats::default());
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = origin::serve_many(
            Arc::new(streams),
            listener,
            Arc::clone(&stats),
            Outages(args.outage),
        ) => {}
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "served {} requests ({} rejected by outages, {} blocking playlist reloads, {} parts), {:.2} origin requests per distinct segment",
        count(&stats.requests),
        count(&stats.outage_rejections),
        count(&stats.blocking_requests),
        count(&stats.part_requests),
        stats.requests_per_distinct_segment()
    );
    ExitCode::SUCCESS
}
