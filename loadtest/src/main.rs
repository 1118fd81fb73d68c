//! `loadtest`: simulated HLS viewers and a synthetic origin. See `loadtest --help`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadtest::origin::{self, OriginStats, SyntheticStream};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let kind = if stream.live { "live" } else { "VOD" };
    println!(
        "synthetic {kind} origin on http://{addr}{}/master.m3u8",
        stream.prefix
    );
    let stats = Arc::new(OriginStats::default());
    tokio::select! {
        () = origin::serve(Arc::new(stream), listener, Arc::clone(&stats)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!(
        "served {} requests, {:.2} origin requests per distinct segment",
        stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        stats.requests_per_distinct_segment()
    );
    ExitCode::SUCCESS
}
