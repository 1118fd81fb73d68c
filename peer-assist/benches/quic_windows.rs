//! Throughput of QUIC peer links with different flow-control windows.
//!
//! `cargo bench -p peer-assist --bench quic_windows`
//!
//! A "segment" is 2 MiB sent as 128 frames of 16 KiB payload over one [`PeerLink`], timed from
//! the first `send` until the receiving task has taken the last frame out of its
//! [`LinkReceiver`](peer_assist::transport::LinkReceiver). Scenarios:
//!
//! * `1→1 loopback`: one link on 127.0.0.1;
//! * `1→4 loopback`: one sender serving four receivers at once (one segment each per round);
//! * `1→1 20 ms RTT`: one link through an in-process UDP relay that delays every datagram by
//!   10 ms each way, the only way to see window effects without touching the host's network
//!   configuration (loopback RTT is ~50 µs, so any window of a few hundred KB already covers
//!   its bandwidth-delay product).
//!
//! The last column counts the datagrams the kernel dropped for lack of socket receive-buffer
//! space during a run (system-wide `Udp: RcvbufErrors` from `/proc/net/snmp`, so other jobs on
//! the machine could add to it); the candidates with "4 MiB UDP rcvbuf" set
//! [`QuicTuning::udp_recv_buffer`].
//!
//! Every run uses fresh endpoints and a fresh link: the first segment is reported as "cold"
//! (slow start, windows not yet grown), then [`WARM_SEGMENTS`] more are timed and their median is
//! the "warm" figure. Each candidate tuning is run [`REPS`] times, candidates taking turns in a
//! rotating order; the tables show medians over the repetitions. MB = 10^6 bytes.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peer_assist::transport::quic::{QuicIdentity, QuicTransport, QuicTuning};
use peer_assist::transport::{LinkSender, PeerLink, FRAME_HEADER_LEN};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

type BoxError = Box<dyn Error + Send + Sync>;

const FRAME_PAYLOAD: usize = 16 * 1024;
const FRAMES_PER_SEGMENT: usize = 128;
const SEGMENT_BYTES: usize = FRAME_PAYLOAD * FRAMES_PER_SEGMENT;
const REPS: usize = 5;
const WARM_SEGMENTS: usize = 6;
const FANOUT: usize = 4;
const RELAY_ONE_WAY_DELAY: Duration = Duration::from_millis(10);
const MIB: u64 = 1024 * 1024;

#[derive(Clone, Copy)]
struct Candidate {
    name: &'static str,
    tuning: QuicTuning,
}

fn candidates() -> Vec<Candidate> {
    let window = |mib: u64, udp_recv_buffer: usize| QuicTuning {
        stream_receive_window: mib * MIB,
        receive_window: mib * MIB,
        send_window: 2 * mib * MIB,
        udp_recv_buffer,
        ..QuicTuning::tuned()
    };
    let big_socket = 4 * MIB as usize;
    vec![
        Candidate {
            name: "quinn defaults (1.25 MB stream, unlimited conn, 10 MB send)",
            tuning: QuicTuning::quinn_defaults(),
        },
        Candidate {
            name: "1 MiB stream/conn, 2 MiB send",
            tuning: window(1, 0),
        },
        Candidate {
            name: "4 MiB stream/conn, 8 MiB send",
            tuning: window(4, 0),
        },
        Candidate {
            name: "8 MiB stream/conn, 16 MiB send",
            tuning: window(8, 0),
        },
        Candidate {
            name: "quinn default windows + 4 MiB UDP rcvbuf",
            tuning: QuicTuning {
                udp_recv_buffer: big_socket,
                ..QuicTuning::quinn_defaults()
            },
        },
        Candidate {
            name: "1 MiB stream/conn, 2 MiB send + 4 MiB UDP rcvbuf",
            tuning: window(1, big_socket),
        },
        Candidate {
            name: "4 MiB stream/conn, 8 MiB send + 4 MiB UDP rcvbuf (= tuned())",
            tuning: window(4, big_socket),
        },
        Candidate {
            name: "8 MiB stream/conn, 16 MiB send + 4 MiB UDP rcvbuf",
            tuning: window(8, big_socket),
        },
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Loopback,
    Fanout,
    Delayed,
}

impl Scenario {
    fn title(self) -> String {
        match self {
            Scenario::Loopback => "1→1 loopback".to_owned(),
            Scenario::Fanout => format!("1→{FANOUT} loopback (per round: one segment to each)"),
            Scenario::Delayed => format!(
                "1→1 through a relay adding {} ms each way ({} ms RTT)",
                RELAY_ONE_WAY_DELAY.as_millis(),
                2 * RELAY_ONE_WAY_DELAY.as_millis()
            ),
        }
    }

    /// Bytes delivered per round.
    fn round_bytes(self) -> usize {
        match self {
            Scenario::Fanout => FANOUT * SEGMENT_BYTES,
            _ => SEGMENT_BYTES,
        }
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn segment_frames() -> Vec<Bytes> {
    (0..FRAMES_PER_SEGMENT)
        .map(|i| {
            let mut f = Vec::with_capacity(FRAME_HEADER_LEN + FRAME_PAYLOAD);
            f.push(7);
            f.extend_from_slice(&(FRAME_PAYLOAD as u32).to_be_bytes());
            f.resize(FRAME_HEADER_LEN + FRAME_PAYLOAD, i as u8);
            Bytes::from(f)
        })
        .collect()
}

/// Spawns a task draining `link`'s receiver that reports each complete segment.
fn spawn_segment_counter(link: PeerLink) -> (LinkSender, mpsc::UnboundedReceiver<Instant>) {
    let PeerLink {
        sender,
        mut receiver,
        ..
    } = link;
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut bytes = 0;
        while let Some(frame) = receiver.recv().await {
            bytes += frame.len() - FRAME_HEADER_LEN;
            if bytes >= SEGMENT_BYTES {
                bytes -= SEGMENT_BYTES;
                if done_tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        }
        if !done_tx.is_closed() {
            eprintln!("link ended early: {:?}", receiver.close_reason());
        }
    });
    (sender, done_rx)
}

/// A relay socket with a 4 MiB receive buffer (so the emulated path itself does not drop).
/// `UdpSocketState::new` also enables GRO, so received buffers are split at `stride`.
struct RelaySocket {
    io: UdpSocket,
    state: quinn::udp::UdpSocketState,
}

impl RelaySocket {
    fn bind() -> Result<Self, BoxError> {
        let socket = std::net::UdpSocket::bind(localhost())?;
        let state = quinn::udp::UdpSocketState::new((&socket).into())?; // also non-blocking
        state.set_recv_buffer_size((&socket).into(), 4 * MIB as usize)?;
        Ok(Self {
            io: UdpSocket::from_std(socket)?,
            state,
        })
    }

    /// Waits for datagrams and appends them, one by one, to `out`.
    async fn recv_batch(
        &self,
        buf: &mut [u8],
        out: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) -> std::io::Result<()> {
        let mut meta = [quinn::udp::RecvMeta::default()];
        let n = self
            .io
            .async_io(tokio::io::Interest::READABLE, || {
                let mut bufs = [std::io::IoSliceMut::new(&mut *buf)];
                self.state.recv((&self.io).into(), &mut bufs, &mut meta)
            })
            .await?;
        for m in &meta[..n] {
            for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                out.push((m.addr, datagram.to_vec()));
            }
        }
        Ok(())
    }
}

/// A UDP relay that forwards between one client and `target`, delaying every datagram by
/// `delay` (a fixed delay keeps the order).
async fn delay_relay(target: SocketAddr, delay: Duration) -> Result<SocketAddr, BoxError> {
    let front = Arc::new(RelaySocket::bind()?);
    let back = Arc::new(RelaySocket::bind()?);
    let addr = front.io.local_addr()?;
    let (client_tx, client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);

    // Receiving: timestamp each datagram and queue it for its direction.
    type Queue = mpsc::UnboundedSender<(Instant, Vec<u8>)>;
    async fn receive(
        socket: Arc<RelaySocket>,
        queue: Queue,
        delay: Duration,
        on_peer: impl Fn(SocketAddr),
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut batch = Vec::new();
        loop {
            if let Err(e) = socket.recv_batch(&mut buf, &mut batch).await {
                eprintln!("relay receive error: {e}");
                continue;
            }
            let due = Instant::now() + delay;
            for (from, datagram) in batch.drain(..) {
                on_peer(from);
                if queue.send((due, datagram)).is_err() {
                    return;
                }
            }
        }
    }
    // Sending: wait until each datagram is due.
    async fn deliver(
        socket: Arc<RelaySocket>,
        mut queue: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
        to: impl Fn() -> Option<SocketAddr>,
    ) {
        while let Some((due, datagram)) = queue.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if let Some(to) = to() {
                let _ = socket.io.send_to(&datagram, to).await;
            }
        }
    }
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    tokio::spawn(receive(front.clone(), up_tx, delay, move |from| {
        client_tx.send_if_modified(|c| (*c != Some(from)).then(|| *c = Some(from)).is_some());
    }));
    tokio::spawn(deliver(back.clone(), up_rx, move || Some(target)));
    tokio::spawn(receive(back, down_tx, delay, |_| {}));
    tokio::spawn(deliver(front, down_rx, move || *client_rx.borrow()));
    Ok(addr)
}

struct RunResult {
    cold: Duration,
    warm: Duration,
    /// Datagrams the kernel dropped for lack of receive-buffer space during the run.
    udp_drops: u64,
}

/// The system-wide `Udp: RcvbufErrors` counter (0 where unavailable).
fn udp_rcvbuf_errors() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// One run: fresh endpoints and links, a cold round, then `WARM_SEGMENTS` timed rounds.
async fn run(scenario: Scenario, tuning: QuicTuning) -> Result<RunResult, BoxError> {
    let drops_before = udp_rcvbuf_errors();
    let sender_side = QuicTransport::bind(localhost(), QuicIdentity::generate()?, tuning)?;
    let receivers = if scenario == Scenario::Fanout {
        FANOUT
    } else {
        1
    };
    let mut transports = Vec::new();
    let mut links = Vec::new();
    for _ in 0..receivers {
        let rx_side = QuicTransport::bind(localhost(), QuicIdentity::generate()?, tuning)?;
        let target = match scenario {
            Scenario::Delayed => delay_relay(rx_side.local_addr(), RELAY_ONE_WAY_DELAY).await?,
            _ => rx_side.local_addr(),
        };
        let link = sender_side.connect(target, rx_side.fingerprint()).await?;
        // The first frame makes the stream visible; the segment counter ignores 5-byte frames.
        link.sender
            .send(Bytes::from_static(&[0, 0, 0, 0, 0]))
            .await?;
        let accepted = rx_side.accept().await.ok_or("endpoint closed")?;
        // The receiving side keeps its sender: dropping it would end the link.
        let (keep_open, done) = spawn_segment_counter(accepted);
        links.push((link.sender, done, keep_open));
        transports.push(rx_side);
    }
    let frames = segment_frames();

    let mut times = Vec::new();
    for _ in 0..=WARM_SEGMENTS {
        let start = Instant::now();
        let mut sending = Vec::new();
        for (sender, _, _) in &links {
            let sender = sender.clone();
            let frames = frames.clone();
            sending.push(tokio::spawn(async move {
                for f in frames {
                    sender.send(f).await?;
                }
                Ok::<(), peer_assist::transport::LinkError>(())
            }));
        }
        for s in sending {
            s.await??;
        }
        let mut last = start;
        for (_, done, _) in &mut links {
            let at = done.recv().await.ok_or("receiver ended early")?;
            last = last.max(at);
        }
        times.push(last - start);
    }
    let cold = times[0];
    let warm = median(&mut times[1..].to_vec());
    let udp_drops = udp_rcvbuf_errors().saturating_sub(drops_before);
    // Teardown: no report is expected any more (the counters stay quiet from here).
    for (_, done, _) in &mut links {
        done.close();
    }
    drop(links);
    drop(transports);
    Ok(RunResult {
        cold,
        warm,
        udp_drops,
    })
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn mb_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{date}, {cpus} CPUs, load average before: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; a filter argument selects scenarios by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("# QUIC window tuning ({})\n", machine());
    println!(
        "Segment: {} frames x {} KiB = {} MiB; {REPS} repetitions per candidate (rotating order), \
         medians shown; warm = median of {WARM_SEGMENTS} segments on an established link.\n",
        FRAMES_PER_SEGMENT,
        FRAME_PAYLOAD / 1024,
        SEGMENT_BYTES / (1024 * 1024)
    );
    let candidates = candidates();
    for scenario in [Scenario::Loopback, Scenario::Fanout, Scenario::Delayed] {
        let title = scenario.title();
        if let Some(f) = &filter {
            if !title.contains(f.as_str()) {
                continue;
            }
        }
        let mut cold: Vec<Vec<Duration>> = vec![Vec::new(); candidates.len()];
        let mut warm: Vec<Vec<Duration>> = vec![Vec::new(); candidates.len()];
        let mut drops: Vec<u64> = vec![0; candidates.len()];
        for rep in 0..REPS {
            for k in 0..candidates.len() {
                let i = (k + rep) % candidates.len();
                let r = runtime.block_on(run(scenario, candidates[i].tuning))?;
                cold[i].push(r.cold);
                warm[i].push(r.warm);
                drops[i] += r.udp_drops;
            }
        }
        let round = scenario.round_bytes();
        println!("## {title}\n");
        println!(
            "| tuning | warm ms/round | warm MB/s | cold (first round) ms | cold MB/s | warm min–max ms | UDP drops/run |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (i, c) in candidates.iter().enumerate() {
            let w = median(&mut warm[i]);
            let cd = median(&mut cold[i]);
            let (lo, hi) = (warm[i][0], warm[i][warm[i].len() - 1]);
            println!(
                "| {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1}–{:.1} | {} |",
                c.name,
                w.as_secs_f64() * 1e3,
                mb_per_s(round, w),
                cd.as_secs_f64() * 1e3,
                mb_per_s(round, cd),
                lo.as_secs_f64() * 1e3,
                hi.as_secs_f64() * 1e3,
                drops[i] / REPS as u64,
            );
        }
        println!();
    }
    Ok(())
}
