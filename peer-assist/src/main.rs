//! `peer-assist`: the native peer. `peer-assist node --gateway URL --stream PATH` joins a swarm.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use peer_assist::accounting::credit::read_credit;
use peer_assist::accounting::NodeKey;
use peer_assist::node::{self, NodeConfig, TestBehaviour};
use peer_assist::protocol::signal::Transport;
use peer_assist::units::parse_duration;

#[derive(Parser)]
#[command(
    name = "peer-assist",
    version,
    about = "Peer-assisted HLS delivery: a native peer node."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a stream's swarm, play it like a player (or seed it), exchange verified segments.
    Node(NodeArgs),
    /// Read this key's credit from a gateway's ledger (docs/LEDGER.md).
    Ledger(LedgerArgs),
}

#[derive(clap::Args)]
struct LedgerArgs {
    /// Gateway base URL.
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// The node's key file (as given to `node --key-file`); it is not created here.
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// The epoch to read (default: the current one, so far).
    #[arg(long, value_name = "N")]
    epoch: Option<u64>,
}

#[derive(clap::Args)]
struct NodeArgs {
    /// Gateway base URL.
    #[arg(long, value_name = "URL")]
    gateway: String,
    /// The viewer's token, for a stream under a protected prefix (docs/SECURITY.md): sent when
    /// joining the swarm and with every request to the gateway.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// The stream: the path of its multivariant playlist on the gateway, e.g. /demo/live/master.m3u8.
    /// A seed (--seed) may be given several: it seeds each, under one key.
    #[arg(long, value_name = "PATH", required = true)]
    stream: Vec<String>,
    /// Variant index in the multivariant playlist (0 = the first listed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    rendition: u32,
    /// Fetch the whole playlist window over HTTP at once and keep it to serve others; do not play.
    #[arg(long)]
    seed: bool,
    /// Stop after this long: "40s", "2m", "1m30s", "500ms" or plain seconds (default: run until
    /// Ctrl-C).
    #[arg(long, value_name = "DURATION", allow_negative_numbers = true, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// UDP address for QUIC. Its IP also limits WebRTC candidates (a loopback IP: loopback only;
    /// 0.0.0.0: every interface).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Transport to link with peers over; repeat for several (default: quic and webrtc). QUIC is
    /// used with peers that have both.
    #[arg(long = "transport", value_name = "NAME")]
    transports: Vec<TransportArg>,
    /// STUN/TURN server URL for WebRTC (stun:host:port); repeatable. Default: none, host
    /// candidates only.
    #[arg(long = "ice-server", value_name = "URL")]
    ice_servers: Vec<String>,
    /// Never upload to other peers.
    #[arg(long)]
    no_upload: bool,
    /// Upload cap in bytes per second.
    #[arg(long, value_name = "BYTES_PER_S", default_value_t = 20_000_000)]
    upload_rate: u64,
    /// No upload until the swarm has at least this many peers (this one included).
    #[arg(long, value_name = "N", default_value_t = 2)]
    privacy_floor: usize,
    /// The node's Ed25519 key: its identity across runs and gateways, which receipts credit
    /// (docs/LEDGER.md). Created on first use, readable by its owner only. Without it the node
    /// uses a key of this run.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// TEST ONLY: with every receipt, send forged ones too (they must all be refused).
    #[arg(long, hide = true)]
    test_forge_receipts: bool,
    /// TEST ONLY: corrupt every chunk this node uploads.
    #[arg(long, hide = true)]
    test_lie: bool,
    /// TEST ONLY: upload at most this many bytes per second.
    #[arg(long, hide = true, value_name = "BYTES_PER_S")]
    test_slow_upload: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Quic,
    Webrtc,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-assist: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Node(args) => runtime.block_on(run(args)),
        Command::Ledger(args) => runtime.block_on(ledger(args)),
    }
}

/// `peer-assist ledger`: this key's line of an epoch, and the epoch's root.
async fn ledger(args: LedgerArgs) -> ExitCode {
    let key = match std::fs::metadata(&args.key_file) {
        Ok(_) => match NodeKey::load_or_create(&args.key_file) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("peer-assist: {e}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("peer-assist: {}: {e}", args.key_file.display());
            return ExitCode::from(2);
        }
    };
    let credit = match read_credit(&args.gateway, key.public_hex(), args.epoch).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peer-assist: {}: {e}", args.gateway);
            return ExitCode::FAILURE;
        }
    };
    let line = serde_json::to_string(&credit).unwrap_or_default();
    println!("{line}");
    ExitCode::SUCCESS
}

async fn run(args: NodeArgs) -> ExitCode {
    let duration = match args.duration {
        Some(d) if d.is_zero() => {
            eprintln!("peer-assist: --duration must be longer than zero");
            return ExitCode::from(2);
        }
        d => d,
    };
    if args.stream.len() > 1 && !args.seed {
        eprintln!("peer-assist: several --stream need --seed (a viewer plays one stream)");
        return ExitCode::from(2);
    }
    if args.stream.len() > 1 && args.bind.port() != 0 {
        eprintln!(
            "peer-assist: --bind with a fixed port serves one stream; use port 0 to seed several"
        );
        return ExitCode::from(2);
    }
    let mut config = NodeConfig::new(&args.gateway, &args.stream[0]);
    config.rendition = args.rendition;
    config.token = args.token.clone();
    config.seed = args.seed;
    config.duration = duration;
    config.bind = args.bind;
    if !args.transports.is_empty() {
        config.transports = args
            .transports
            .iter()
            .map(|t| match t {
                TransportArg::Quic => Transport::Quic,
                TransportArg::Webrtc => Transport::Webrtc,
            })
            .collect();
    }
    config.ice_servers = args.ice_servers;
    config.upload = !args.no_upload;
    config.upload_rate = args.upload_rate;
    config.privacy_floor = args.privacy_floor;
    config.test = TestBehaviour {
        lie: args.test_lie,
        slow_upload: args.test_slow_upload,
        forge_receipts: args.test_forge_receipts,
        honest_uploads: 0,
    };
    let key = match &args.key_file {
        Some(path) => NodeKey::load_or_create(path),
        None => NodeKey::generate(),
    };
    match key {
        Ok(k) => config.key = Some(Arc::new(k)),
        Err(e) => {
            eprintln!("peer-assist: {e}");
            return ExitCode::from(2);
        }
    }
    let mut handles = Vec::new();
    for stream in &args.stream {
        let mut config = config.clone();
        config.stream = stream.clone();
        match node::start(config).await {
            Ok(h) => {
                match h.quic_addr {
                    Some(addr) => eprintln!("peer-assist: joined {stream}, QUIC on {addr}"),
                    None => eprintln!("peer-assist: joined {stream} (no QUIC)"),
                }
                handles.push(h);
            }
            Err(e) => {
                eprintln!("peer-assist: {stream}: {e}");
                for h in handles {
                    let _ = h.stop().await;
                }
                return ExitCode::FAILURE;
            }
        }
    }
    if duration.is_none() {
        let _ = tokio::signal::ctrl_c().await;
    }
    let mut summaries = Vec::new();
    for h in handles {
        summaries.push(if duration.is_some() {
            h.wait().await
        } else {
            h.stop().await
        });
    }
    for summary in &summaries {
        println!(
            "segments {} (peer {}, http {}), bytes peer {} http {} ({:.0}% offload), uploaded {}, mismatches {}, missed deadlines {}",
            summary.segments,
            summary.p2p_segments,
            summary.http_segments,
            summary.p2p_bytes,
            summary.http_bytes,
            summary.offload() * 100.0,
            summary.uploaded_bytes,
            summary.mismatches,
            summary.missed_deadlines
        );
    }
    if let Some(path) = args.json {
        // One stream: its summary; several (a seed): one per stream, in the order given.
        let encoded = match summaries.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            all => serde_json::to_string_pretty(all),
        };
        let text = match encoded {
            Ok(t) => t,
            Err(e) => {
                eprintln!("peer-assist: cannot encode the summary: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("peer-assist: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
