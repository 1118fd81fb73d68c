//! The native peer node: joins a swarm through the gateway's tracker, follows the live playlist like a
//! player, gets each segment from peers or over HTTP as the [`Scheduler`] decides from the playback
//! deadline, verifies every peer byte against the gateway's SHA-256 before use, keeps a bounded window
//! to upload to others (rate-capped, opt-out, privacy floor) and reports how delivery went.
//!
//! One task owns all state ([`Node`]); links, signalling, playlist reloads and HTTP fetches run in their
//! own tasks and talk to it through one event channel, so the logic reads top to bottom and never races.

pub mod http;
pub mod playback;
pub mod upload;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::frame::{self, Frame, PROTOCOL_VERSION, RECOMMENDED_CHUNK_LEN};
use crate::protocol::signal::{
    self, Capabilities, ClientMessage, Failures, PeerInfo, PeerOutcome, QuicAddress, Report,
    ServerMessage, Transport, SIGNAL_VERSION,
};
use crate::scheduler::{Decision, Need, PeerState, Scheduler, SchedulerConfig, Transfer};
use crate::transport::quic::{QuicIdentity, QuicTransport, QuicTuning};
#[cfg(feature = "webrtc")]
use crate::transport::webrtc::{WebrtcConfig, WebrtcEvent, WebrtcTransport};
use crate::transport::{LinkReceiver, LinkSender, PeerLink};
use http::GatewayClient;
use playback::Timeline;
use upload::{LiveStats, TokenBucket};

/// How often the node looks at every pending segment.
const TICK: Duration = Duration::from_millis(50);
/// Segments ahead of the playhead the node works on at once.
const LOOKAHEAD: usize = 8;
/// In a large swarm, one peer in this many fetches each new live segment over HTTP first.
const PEERS_PER_SEEDER: usize = 20;
/// How long a new link may take to say who it is.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Relayed WebRTC signalling is paced to this many messages per second (burst: twice as many), so
/// that with reports and leave the node stays well inside the tracker's budget (20/s, burst 40).
#[cfg(feature = "webrtc")]
const RELAY_RATE: f64 = 12.0;

/// Switches that make a node misbehave, for tests and the load-test harness only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestBehaviour {
    /// Corrupt every chunk it uploads (it still claims the true digest).
    pub lie: bool,
    /// Upload at most this many bytes per second, whatever the upload cap says.
    pub slow_upload: Option<u64>,
}

/// Everything a node needs to run. `NodeConfig::new` gives the defaults.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Gateway base URL, e.g. `http://127.0.0.1:8080`.
    pub gateway: String,
    /// The stream: the path of its multivariant playlist on the gateway.
    pub stream: String,
    /// Variant index in the multivariant playlist.
    pub rendition: u32,
    /// Keep the whole playlist window cached (fetched over HTTP at once) to serve others; do not play.
    pub seed: bool,
    /// Stop after this long (None: run until stopped).
    pub duration: Option<Duration>,
    /// QUIC bind address. Its IP also restricts where WebRTC gathers candidates (a loopback IP:
    /// loopback only; the unspecified address: every interface).
    pub bind: SocketAddr,
    /// Transports this node links over and announces in `join` (QUIC is used with peers that
    /// have both). Default: QUIC and, when built with the `webrtc` feature, WebRTC.
    pub transports: Vec<Transport>,
    /// STUN/TURN server URLs for WebRTC; empty: host candidates only.
    pub ice_servers: Vec<String>,
    /// Upload to other peers at all.
    pub upload: bool,
    /// Upload cap in bytes per second.
    pub upload_rate: u64,
    /// No upload until the swarm has at least this many peers (this one included).
    pub privacy_floor: usize,
    /// Segments kept to serve others.
    pub window: usize,
    /// Peer links kept open.
    pub max_links: usize,
    /// Time from joining to the planned start of playback.
    pub startup: Duration,
    /// Delivery reports are sent this often.
    pub report_every: Duration,
    pub scheduler: SchedulerConfig,
    pub test: TestBehaviour,
    /// Do not play: fetch only what [`SegmentFetcher::fetch`] asks for, by the deadline it gives (a
    /// player model drives the node, as in the load-test harness).
    pub driven: bool,
}

impl NodeConfig {
    pub fn new(gateway: &str, stream: &str) -> Self {
        Self {
            gateway: gateway.trim_end_matches('/').to_owned(),
            stream: stream.to_owned(),
            rendition: 0,
            seed: false,
            duration: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            transports: default_transports(),
            ice_servers: Vec::new(),
            upload: true,
            upload_rate: 20_000_000,
            privacy_floor: 2,
            window: 30,
            max_links: 8,
            startup: Duration::from_secs(2),
            report_every: Duration::from_secs(2),
            scheduler: SchedulerConfig::default(),
            test: TestBehaviour::default(),
            driven: false,
        }
    }
}

/// QUIC, and WebRTC when this crate is built with it.
pub fn default_transports() -> Vec<Transport> {
    let mut transports = vec![Transport::Quic];
    if cfg!(feature = "webrtc") {
        transports.push(Transport::Webrtc);
    }
    transports
}

/// Failures by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FailureCounts {
    pub timeout: u64,
    pub mismatch: u64,
    pub absent: u64,
    pub disconnect: u64,
}

/// One segment the node obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRecord {
    pub id: String,
    /// `peer` or `http`.
    pub source: &'static str,
    pub bytes: u64,
    /// SHA-256 of what was accepted.
    pub sha256: String,
    /// Milliseconds since the node started.
    pub at_ms: u64,
    /// Whether it was in hand before it had to play (always true for seeds).
    pub in_time: bool,
}

/// What a run did. `--json FILE` writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub peer_id: String,
    pub http_bytes: u64,
    pub p2p_bytes: u64,
    pub uploaded_bytes: u64,
    pub mismatches: u64,
    pub missed_deadlines: u64,
    pub segments: u64,
    pub http_segments: u64,
    pub p2p_segments: u64,
    pub stalled_ms: u64,
    pub failures: FailureCounts,
    /// Peers this node disconnected for sending data that failed verification.
    pub peers_dropped_for_lying: Vec<String>,
    pub duration_ms: u64,
    pub log: Vec<SegmentRecord>,
}

impl Summary {
    /// Share of segment bytes that came from peers.
    pub fn offload(&self) -> f64 {
        let total = self.http_bytes + self.p2p_bytes;
        if total == 0 {
            0.0
        } else {
            self.p2p_bytes as f64 / total as f64
        }
    }
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot reach the gateway's tracker: {0}")]
    Signalling(String),
    #[error("the tracker refused the join: {0}")]
    Refused(String),
    #[error("transport setup failed: {0}")]
    Transport(String),
}

/// A running node.
pub struct NodeHandle {
    task: JoinHandle<Summary>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Where the node accepts QUIC links (`None` when QUIC is not among its transports).
    pub quic_addr: Option<SocketAddr>,
    stats: Arc<LiveStats>,
    events: mpsc::UnboundedSender<Event>,
}

/// Asks a driven node for segments (see [`NodeConfig::driven`]). Cheap to clone.
#[derive(Clone)]
pub struct SegmentFetcher {
    events: mpsc::UnboundedSender<Event>,
}

/// A segment a driven node delivered: verified against the gateway's digest when it came from peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: Bytes,
    /// `peer` or `http` (mostly: a peer transfer finished over HTTP counts as `http`).
    pub source: &'static str,
}

impl SegmentFetcher {
    /// The segment `id` (its gateway path), needed by `plays_at`. Fails only if the node has stopped;
    /// otherwise the node keeps trying (peers, then HTTP) until it has the segment.
    pub async fn fetch(&self, id: &str, plays_at: Instant) -> Result<Fetched, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let need = Event::Need {
            id: id.to_owned(),
            plays_at,
            reply,
        };
        self.events
            .send(need)
            .map_err(|_| "the node has stopped".to_owned())?;
        answer.await.map_err(|_| "the node has stopped".to_owned())
    }
}

impl NodeHandle {
    /// Asks the node to stop and returns its summary.
    pub async fn stop(mut self) -> Summary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap_or_default()
    }

    /// Waits for the node to end by itself (`duration`).
    pub async fn wait(self) -> Summary {
        self.task.await.unwrap_or_default()
    }

    /// Asks this node for segments; meaningful when it runs [`NodeConfig::driven`].
    pub fn fetcher(&self) -> SegmentFetcher {
        SegmentFetcher {
            events: self.events.clone(),
        }
    }

    /// Bytes uploaded so far.
    pub fn uploaded_bytes(&self) -> u64 {
        self.stats.uploaded_bytes.load(Ordering::Relaxed)
    }

    /// Uploads running right now.
    pub fn active_uploads(&self) -> usize {
        self.stats.active_uploads.load(Ordering::Relaxed)
    }

    /// Ends the node abruptly, as if its process died: no leave, no goodbye to peers.
    pub fn kill(self) {
        self.task.abort();
    }
}

enum Event {
    Signal(ServerMessage),
    SignalClosed,
    LinkUp {
        peer: String,
        sender: LinkSender,
    },
    Frame {
        peer: String,
        frame: Frame,
    },
    /// A link ended, or an attempt to make one failed (`link: None`).
    LinkDown {
        peer: String,
        link: Option<LinkSender>,
    },
    Playlist(Result<http::MediaPlaylist, String>),
    Http {
        id: String,
        from: u64,
        result: Result<Bytes, String>,
    },
    Need {
        id: String,
        plays_at: Instant,
        reply: tokio::sync::oneshot::Sender<Fetched>,
    },
}

/// Starts a node: joins the swarm and begins playing. Returns once it has joined.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    let transports: Vec<Transport> = [Transport::Quic, Transport::Webrtc]
        .into_iter()
        .filter(|t| config.transports.contains(t))
        .collect();
    if transports.is_empty() {
        return Err(NodeError::Transport("no transport configured".into()));
    }
    if cfg!(not(feature = "webrtc")) && transports.contains(&Transport::Webrtc) {
        return Err(NodeError::Transport(
            "WebRTC requested, but this build has no `webrtc` feature".into(),
        ));
    }
    let quic = if transports.contains(&Transport::Quic) {
        let identity = QuicIdentity::generate().map_err(|e| NodeError::Transport(e.to_string()))?;
        let transport = QuicTransport::bind(config.bind, identity, QuicTuning::tuned())
            .map_err(|e| NodeError::Transport(e.to_string()))?;
        Some(Arc::new(transport))
    } else {
        None
    };
    let quic_addr = quic.as_ref().map(|t| t.local_addr());
    let ws_url = format!(
        "{}/p2p/v1/ws?stream={}",
        config.gateway.replacen("http", "ws", 1),
        config.stream
    );
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(ws_url),
    )
    .await
    .map_err(|_| NodeError::Signalling("timed out".into()))?
    .map_err(|e| NodeError::Signalling(e.to_string()))?;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let join = ClientMessage::Join {
        v: SIGNAL_VERSION,
        stream: config.stream.clone(),
        rendition: config.rendition,
        capabilities: Capabilities {
            transports,
            upload: config.upload,
        },
        token: None,
        quic: quic.as_ref().map(|t| QuicAddress {
            addr: t.local_addr().to_string(),
            fingerprint: t.fingerprint().to_owned(),
        }),
    };
    ws_tx
        .send(Message::text(signal::encode_client(&join)))
        .await
        .map_err(|e| NodeError::Signalling(e.to_string()))?;
    let welcome = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
            .await
            .map_err(|_| NodeError::Signalling("no welcome".into()))?;
        match next {
            Some(Ok(Message::Text(text))) => match signal::decode_server(&text) {
                Ok(ServerMessage::Welcome {
                    peer_id, playlist, ..
                }) => break (peer_id, playlist),
                Ok(ServerMessage::Error { code, message }) => {
                    return Err(NodeError::Refused(format!("{code:?}: {message}")))
                }
                Ok(_) => continue,
                Err(e) => return Err(NodeError::Signalling(e.to_string())),
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(NodeError::Signalling(e.to_string())),
            None => return Err(NodeError::Signalling("closed before welcome".into())),
        }
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let (signal_out, mut signal_queue) = mpsc::unbounded_channel::<ClientMessage>();
    // Signalling reader and writer.
    let tx = events_tx.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = ws_rx.next().await {
            if let Message::Text(text) = message {
                match signal::decode_server(&text) {
                    Ok(m) => {
                        let _ = tx.send(Event::Signal(m));
                    }
                    Err(e) => tracing::warn!(error = %e, "bad message from the tracker"),
                }
            }
        }
        let _ = tx.send(Event::SignalClosed);
    });
    let writer = tokio::spawn(async move {
        while let Some(message) = signal_queue.recv().await {
            if ws_tx
                .send(Message::text(signal::encode_client(&message)))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = ws_tx.close().await;
    });
    let client = GatewayClient::new(&config.gateway);
    // A driven node's player reloads the playlist already; the node learns what it needs from it.
    let follower = if config.driven {
        tokio::spawn(async {})
    } else {
        tokio::spawn(http::follow_playlist(
            client.clone(),
            welcome.1.clone(),
            events_tx.clone(),
        ))
    };
    let tasks = TaskSet::default();
    let mut background = vec![reader, writer, follower];
    if let Some(quic) = &quic {
        let transport = Arc::clone(quic);
        let tx = events_tx.clone();
        let me = welcome.0.clone();
        let tasks = tasks.clone();
        background.push(tokio::spawn(async move {
            while let Some(link) = transport.accept().await {
                tasks.spawn(run_link(link, me.clone(), None, tx.clone()));
            }
        }));
    }
    let node_transports = NodeTransports {
        quic,
        #[cfg(feature = "webrtc")]
        webrtc: if config.transports.contains(&Transport::Webrtc) {
            let started = start_webrtc(
                &config,
                &welcome.0,
                &events_tx,
                &signal_out,
                &tasks,
                &mut background,
            );
            match started {
                Ok(webrtc) => Some(webrtc),
                Err(e) => {
                    for task in &background {
                        task.abort();
                    }
                    return Err(e);
                }
            }
        } else {
            None
        },
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let node = Node::new(
        config,
        welcome.0,
        client,
        node_transports,
        events_tx,
        signal_out,
        tasks.clone(),
    );
    let stats = Arc::clone(&node.stats);
    let needs = node.events.clone();
    let task = tokio::spawn(async move {
        let _guard = AbortOnDrop(background, tasks);
        node.run(events, stop_rx).await
    });
    Ok(NodeHandle {
        task,
        stop: Some(stop_tx),
        quic_addr,
        stats,
        events: needs,
    })
}

/// The transports of a node; QUIC is preferred with peers that have both.
struct NodeTransports {
    quic: Option<Arc<QuicTransport>>,
    #[cfg(feature = "webrtc")]
    webrtc: Option<Arc<WebrtcTransport>>,
}

impl NodeTransports {
    /// Closes every link and attempt.
    fn close(&self) {
        if let Some(quic) = &self.quic {
            quic.close();
        }
        #[cfg(feature = "webrtc")]
        if let Some(webrtc) = &self.webrtc {
            webrtc.close();
        }
    }
}

/// Creates the WebRTC transport and its two pumps: opened data channels become links (run like
/// accepted QUIC links, but the peer id is known), outgoing signalling becomes paced relays.
#[cfg(feature = "webrtc")]
fn start_webrtc(
    config: &NodeConfig,
    me: &str,
    events: &mpsc::UnboundedSender<Event>,
    signal: &mpsc::UnboundedSender<ClientMessage>,
    tasks: &TaskSet,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Arc<WebrtcTransport>, NodeError> {
    let webrtc_config = WebrtcConfig {
        ice_servers: config.ice_servers.clone(),
        ..WebrtcConfig::new(config.bind.ip())
    };
    let (transport, mut outgoing) =
        WebrtcTransport::new(me, webrtc_config).map_err(|e| NodeError::Transport(e.to_string()))?;
    let transport = Arc::new(transport);
    {
        let transport = Arc::clone(&transport);
        let tx = events.clone();
        let me = me.to_owned();
        let tasks = tasks.clone();
        background.push(tokio::spawn(async move {
            while let Some(event) = transport.next_event().await {
                match event {
                    WebrtcEvent::Open { peer, link } => {
                        tasks.spawn(run_link(link, me.clone(), Some(peer), tx.clone()));
                    }
                    WebrtcEvent::Failed { peer, error } => {
                        tracing::debug!(%peer, %error, "WebRTC attempt failed");
                        let _ = tx.send(Event::LinkDown { peer, link: None });
                    }
                }
            }
        }));
    }
    let signal = signal.clone();
    background.push(tokio::spawn(async move {
        let mut budget = crate::tracker::registry::MessageBudget::new(
            RELAY_RATE,
            2.0 * RELAY_RATE,
            Instant::now(),
        );
        while let Some((to, payload)) = outgoing.recv().await {
            while !budget.take(Instant::now()) {
                tokio::time::sleep(Duration::from_secs_f64(1.0 / RELAY_RATE)).await;
            }
            if signal.send(ClientMessage::Relay { to, payload }).is_err() {
                return;
            }
        }
    }));
    Ok(transport)
}

/// Every task a node spawns (links, uploads, HTTP fetches), so that nothing of a stopped or killed
/// node lives on.
#[derive(Clone, Default)]
struct TaskSet(Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>);

impl TaskSet {
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(future);
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.abort_handle());
        handle
    }

    fn abort_all(&self) {
        for task in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

/// Aborts the node's tasks when the node task ends or is aborted.
struct AbortOnDrop(Vec<JoinHandle<()>>, TaskSet);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
        self.1.abort_all();
    }
}

/// Runs one link: exchanges handshakes, then forwards frames to the node and the node's frames out.
async fn run_link(
    link: PeerLink,
    me: String,
    expected: Option<String>,
    events: mpsc::UnboundedSender<Event>,
) {
    let PeerLink {
        sender,
        mut receiver,
        ..
    } = link;
    let Some(peer) = handshake(&sender, &mut receiver, me, expected.as_deref()).await else {
        // A link we asked for: the node stops waiting for it.
        if let Some(peer) = expected {
            let _ = events.send(Event::LinkDown {
                peer,
                link: Some(sender),
            });
        }
        return;
    };
    if events
        .send(Event::LinkUp {
            peer: peer.clone(),
            sender: sender.clone(),
        })
        .is_err()
    {
        return;
    }
    forward_frames(&mut receiver, &peer, &events).await;
    sender.close("link ended");
    let _ = events.send(Event::LinkDown {
        peer,
        link: Some(sender),
    });
}

/// Sends our Handshake and reads the peer's: its peer id, or `None` (the link is closed) if it
/// sends something else, nothing in time, or is not `expected`.
async fn handshake(
    sender: &LinkSender,
    receiver: &mut LinkReceiver,
    me: String,
    expected: Option<&str>,
) -> Option<String> {
    let hello = Frame::Handshake {
        version: PROTOCOL_VERSION,
        peer_id: me,
    };
    if sender.send(hello.encode()).await.is_err() {
        return None;
    }
    let peer = match tokio::time::timeout(HANDSHAKE_TIMEOUT, receiver.recv()).await {
        Ok(Some(bytes)) => match frame::decode_exact(&bytes) {
            Ok(Frame::Handshake { peer_id, .. }) => peer_id,
            _ => {
                sender.close("expected a handshake");
                return None;
            }
        },
        _ => {
            sender.close("no handshake");
            return None;
        }
    };
    if expected.is_some_and(|e| e != peer) {
        sender.close("unexpected peer id");
        return None;
    }
    Some(peer)
}

async fn forward_frames(
    receiver: &mut LinkReceiver,
    peer: &str,
    events: &mpsc::UnboundedSender<Event>,
) {
    while let Some(bytes) = receiver.recv().await {
        match frame::decode_exact(&bytes) {
            Ok(frame) => {
                if events
                    .send(Event::Frame {
                        peer: peer.to_owned(),
                        frame,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "malformed frame: closing the link");
                receiver.close("malformed frame");
                return;
            }
        }
    }
}

/// A peer link as the node sees it.
struct Link {
    sender: LinkSender,
    /// Frames to this peer, in order (a writer task drains it so the node never blocks).
    out: mpsc::UnboundedSender<Bytes>,
    has: HashSet<String>,
    rate: Option<f64>,
    in_flight: usize,
    outcome: PeerOutcome,
}

/// A segment transfer from a peer.
struct PeerTransfer {
    peer: String,
    request_id: u32,
    started: Instant,
    last_progress: Instant,
    size: Option<u64>,
    data: BytesMut,
}

#[derive(Default)]
struct Pending {
    transfer: Option<PeerTransfer>,
    /// An HTTP fetch is running from this byte.
    http_from: Option<u64>,
    first_seen: Option<Instant>,
    /// The first bytes of the segment, from a peer transfer replaced by HTTP: (peer, bytes). They are
    /// joined with the HTTP rest and verified as a whole.
    partial: Option<(String, Bytes)>,
}

struct Stored {
    bytes: Bytes,
    digest: [u8; 32],
    source: &'static str,
}

struct Node {
    tasks: TaskSet,
    config: NodeConfig,
    me: String,
    started: Instant,
    client: GatewayClient,
    transports: NodeTransports,
    events: mpsc::UnboundedSender<Event>,
    signal: mpsc::UnboundedSender<ClientMessage>,
    scheduler: Scheduler,
    digests: HashMap<String, ([u8; 32], u64)>,
    swarm: Vec<PeerInfo>,
    /// The peers of the first `peers` message after `welcome`: they joined before this node
    /// (seniority, for the HTTP-first seeder rule). `None` until that message arrives.
    elders: Option<HashSet<String>>,
    links: HashMap<String, Link>,
    connecting: HashSet<String>,
    banned: HashSet<String>,
    /// Stored segment ids, oldest first (the upload window).
    store: VecDeque<String>,
    stored: HashMap<String, Stored>,
    timeline: Timeline,
    sequence_of: HashMap<String, u64>,
    pending: HashMap<String, Pending>,
    requests: HashMap<u32, String>,
    next_request: u32,
    uploads: HashMap<(String, u32), JoinHandle<()>>,
    stats: Arc<LiveStats>,
    bucket: Arc<std::sync::Mutex<TokenBucket>>,
    live: bool,
    target: Duration,
    summary: Summary,
    reported: Summary,
    peer_deltas: HashMap<String, PeerOutcome>,
    /// Driven mode: segments asked for, when they play, and who waits for them.
    needs: HashMap<String, (Instant, Vec<tokio::sync::oneshot::Sender<Fetched>>)>,
}

impl Node {
    fn new(
        config: NodeConfig,
        me: String,
        client: GatewayClient,
        transports: NodeTransports,
        events: mpsc::UnboundedSender<Event>,
        signal: mpsc::UnboundedSender<ClientMessage>,
        tasks: TaskSet,
    ) -> Self {
        let now = Instant::now();
        let rate = config
            .test
            .slow_upload
            .map_or(config.upload_rate, |s| s.min(config.upload_rate));
        Self {
            tasks,
            scheduler: Scheduler::new(config.scheduler.clone()),
            timeline: Timeline::new(now + config.startup),
            bucket: Arc::new(std::sync::Mutex::new(TokenBucket::new(
                rate as f64,
                // Half a second of the cap, at least one chunk.
                (rate as f64 / 2.0).max(RECOMMENDED_CHUNK_LEN as f64),
                now,
            ))),
            summary: Summary {
                peer_id: me.clone(),
                ..Summary::default()
            },
            config,
            me,
            started: now,
            client,
            transports,
            events,
            signal,
            digests: HashMap::new(),
            swarm: Vec::new(),
            elders: None,
            links: HashMap::new(),
            connecting: HashSet::new(),
            banned: HashSet::new(),
            store: VecDeque::new(),
            stored: HashMap::new(),
            sequence_of: HashMap::new(),
            pending: HashMap::new(),
            requests: HashMap::new(),
            next_request: 1,
            uploads: HashMap::new(),
            stats: Arc::new(LiveStats::default()),
            live: true,
            target: Duration::from_secs(2),
            reported: Summary::default(),
            peer_deltas: HashMap::new(),
            needs: HashMap::new(),
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Summary {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut report = tokio::time::interval(self.config.report_every);
        report.tick().await;
        let end = self.config.duration.map(|d| self.started + d);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                _ = tick.tick() => {
                    if end.is_some_and(|end| Instant::now() >= end) {
                        break;
                    }
                    self.on_tick(Instant::now());
                }
                _ = report.tick() => self.send_report(),
                _ = &mut stop => break,
            }
        }
        self.send_report();
        let _ = self.signal.send(ClientMessage::Leave {});
        // Give the writer a moment to deliver the last report and the leave.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for task in self.uploads.values() {
            task.abort();
        }
        self.transports.close();
        self.finish()
    }

    fn finish(mut self) -> Summary {
        self.timeline.advance(Instant::now());
        self.summary.uploaded_bytes = self.stats.uploaded_bytes.load(Ordering::Relaxed);
        self.summary.missed_deadlines = if self.config.seed {
            0
        } else {
            self.timeline.missed()
        };
        self.summary.stalled_ms = self.timeline.stalled().as_millis() as u64;
        self.summary.duration_ms = self.started.elapsed().as_millis() as u64;
        std::mem::take(&mut self.summary)
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Signal(message) => self.on_signal(message),
            Event::SignalClosed => {
                tracing::warn!(peer = %self.me, "tracker connection closed: HTTP only from now on")
            }
            Event::LinkUp { peer, sender } => self.on_link_up(peer, sender),
            Event::LinkDown { peer, link } => self.on_link_down(&peer, link.as_ref()),
            Event::Frame { peer, frame } => self.on_frame(&peer, frame, now),
            Event::Playlist(Ok(playlist)) => self.on_playlist(playlist, now),
            Event::Playlist(Err(e)) => tracing::debug!(error = %e, "playlist reload failed"),
            Event::Http { id, from, result } => self.on_http(id, from, result, now),
            Event::Need {
                id,
                plays_at,
                reply,
            } => {
                self.on_need(id, plays_at, reply, now);
                // Decide at once rather than at the next tick: a player is waiting.
                self.on_tick(now);
            }
        }
    }

    fn on_signal(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Digests { segments, .. } => {
                for entry in segments {
                    if let Ok(digest) = signal::parse_digest_hex(&entry.sha256) {
                        self.digests.insert(entry.id, (digest, entry.size));
                    }
                }
            }
            ServerMessage::Peers { peers } => {
                if self.elders.is_none() {
                    self.elders = Some(peers.iter().map(|p| p.peer_id.clone()).collect());
                }
                self.swarm = peers;
                self.connect_peers();
            }
            ServerMessage::Error { code, message } => {
                tracing::warn!(?code, %message, "tracker error");
            }
            ServerMessage::Relay { from, payload } => self.on_relay(&from, &payload),
            ServerMessage::Welcome { .. } => {}
        }
    }

    /// Opens links to listed peers. Of two peers, the one with the greater id connects, so each pair
    /// has one link: over QUIC if both have it, else over WebRTC if both have that (the peer with
    /// the smaller id applies the same rule to the same list, so both sides agree).
    fn connect_peers(&mut self) {
        let candidates: Vec<PeerInfo> = self
            .swarm
            .iter()
            .filter(|p| p.peer_id.as_str() < self.me.as_str())
            .filter(|p| {
                !self.links.contains_key(&p.peer_id) && !self.connecting.contains(&p.peer_id)
            })
            .filter(|p| !self.banned.contains(&p.peer_id))
            .cloned()
            .collect();
        for peer in candidates {
            if self.links.len() + self.connecting.len() >= self.config.max_links {
                break;
            }
            let quic =
                self.transports
                    .quic
                    .clone()
                    .zip(peer.quic.as_ref().and_then(|q| {
                        Some((q.addr.parse::<SocketAddr>().ok()?, q.fingerprint.clone()))
                    }));
            if let Some((transport, (addr, fingerprint))) = quic {
                self.connecting.insert(peer.peer_id.clone());
                let events = self.events.clone();
                let me = self.me.clone();
                let peer = peer.peer_id;
                self.tasks.spawn(async move {
                    match transport.connect(addr, &fingerprint).await {
                        Ok(link) => run_link(link, me, Some(peer), events).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "cannot connect to peer");
                            let _ = events.send(Event::LinkDown { peer, link: None });
                        }
                    }
                });
                continue;
            }
            #[cfg(feature = "webrtc")]
            if let Some(webrtc) = &self.transports.webrtc {
                if peer.transports.contains(&Transport::Webrtc) {
                    // The outcome arrives as a WebRTC event (a link, or a LinkDown).
                    match webrtc.connect(&peer.peer_id) {
                        Ok(()) => {
                            self.connecting.insert(peer.peer_id);
                        }
                        Err(e) => {
                            tracing::debug!(peer = %peer.peer_id, error = %e, "cannot offer to peer")
                        }
                    }
                }
            }
        }
    }

    /// A relayed signalling payload: WebRTC negotiation.
    fn on_relay(&mut self, from: &str, payload: &serde_json::Value) {
        if self.banned.contains(from) {
            return;
        }
        #[cfg(feature = "webrtc")]
        if let Some(webrtc) = &self.transports.webrtc {
            if let Err(e) = webrtc.handle_signal(from, payload) {
                tracing::debug!(peer = %from, error = %e, "unusable relay payload");
            }
            return;
        }
        tracing::debug!(peer = %from, kind = ?payload.get("kind"), "relay ignored: no WebRTC");
    }

    /// A link ended or an attempt failed. Only the link in use counts: a stale link's end (one
    /// that was replaced, or refused as a duplicate) changes nothing.
    fn on_link_down(&mut self, peer: &str, link: Option<&LinkSender>) {
        let current = self
            .links
            .get(peer)
            .is_some_and(|l| link.is_some_and(|s| l.sender.same_link(s)));
        if current {
            self.drop_link(peer, Cause::Disconnect);
        } else if !self.links.contains_key(peer) {
            self.connecting.remove(peer);
        }
    }

    fn on_link_up(&mut self, peer: String, sender: LinkSender) {
        self.connecting.remove(&peer);
        // A link that closed but whose end we have not processed yet gives way to the new one (a
        // WebRTC peer that started over).
        if self.links.get(&peer).is_some_and(|l| l.sender.is_closed()) {
            self.drop_link(&peer, Cause::Disconnect);
        }
        if self.banned.contains(&peer) || self.links.contains_key(&peer) {
            sender.close("not wanted");
            return;
        }
        let (out, mut queue) = mpsc::unbounded_channel::<Bytes>();
        let writer = sender.clone();
        self.tasks.spawn(async move {
            while let Some(frame) = queue.recv().await {
                if writer.send(frame).await.is_err() {
                    break;
                }
            }
        });
        let have = self.have_frame();
        let _ = out.send(have);
        self.links.insert(
            peer.clone(),
            Link {
                sender,
                out,
                has: HashSet::new(),
                rate: None,
                in_flight: 0,
                outcome: PeerOutcome {
                    peer_id: peer,
                    ok: 0,
                    failed: 0,
                    mismatch: 0,
                    bytes: 0,
                },
            },
        );
    }

    /// What this node offers: nothing when it does not upload, else its newest stored segments.
    fn have_frame(&self) -> Bytes {
        if !self.config.upload {
            return Frame::Have {
                segments: Vec::new(),
            }
            .encode();
        }
        let segments: Vec<String> = self
            .store
            .iter()
            .rev()
            .take(frame::MAX_HAVE_IDS)
            .cloned()
            .collect();
        Frame::Have { segments }.encode()
    }

    fn send_to(&self, peer: &str, frame: &Frame) {
        if let Some(link) = self.links.get(peer) {
            let _ = link.out.send(frame.encode());
        }
    }

    /// Forgets a link; a transfer running on it fails with `cause`.
    fn drop_link(&mut self, peer: &str, cause: Cause) {
        self.connecting.remove(peer);
        if let Some(link) = self.links.remove(peer) {
            link.sender.close(cause.label());
        }
        let failed: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.transfer.as_ref().is_some_and(|t| t.peer == peer))
            .map(|(id, _)| id.clone())
            .collect();
        for id in failed {
            self.fail_transfer(&id, cause);
        }
        self.uploads.retain(|(p, _), task| {
            if p == peer {
                task.abort();
            }
            p != peer
        });
    }

    fn fail_transfer(&mut self, id: &str, cause: Cause) {
        let Some(transfer) = self.pending.get_mut(id).and_then(|p| p.transfer.take()) else {
            return;
        };
        self.requests.remove(&transfer.request_id);
        match cause {
            Cause::Timeout => self.summary.failures.timeout += 1,
            Cause::Mismatch => self.summary.failures.mismatch += 1,
            Cause::Absent => self.summary.failures.absent += 1,
            Cause::Disconnect => self.summary.failures.disconnect += 1,
        }
        let delta = self
            .peer_deltas
            .entry(transfer.peer.clone())
            .or_insert_with(|| blank(&transfer.peer));
        if cause == Cause::Mismatch {
            delta.mismatch += 1;
        } else {
            delta.failed += 1;
        }
        if let Some(link) = self.links.get_mut(&transfer.peer) {
            link.in_flight = link.in_flight.saturating_sub(1);
            if cause == Cause::Absent {
                link.has.remove(id);
            }
        }
    }

    /// Driven mode: a player needs `id` by `plays_at`.
    fn on_need(
        &mut self,
        id: String,
        plays_at: Instant,
        reply: tokio::sync::oneshot::Sender<Fetched>,
        now: Instant,
    ) {
        if let Some(stored) = self.stored.get(&id) {
            let _ = reply.send(Fetched {
                bytes: stored.bytes.clone(),
                source: stored.source,
            });
            return;
        }
        let pending = self.pending.entry(id.clone()).or_default();
        pending.first_seen.get_or_insert(now);
        let entry = self.needs.entry(id).or_insert((plays_at, Vec::new()));
        entry.0 = entry.0.min(plays_at);
        entry.1.push(reply);
    }

    fn on_playlist(&mut self, playlist: http::MediaPlaylist, now: Instant) {
        self.live = !playlist.ended;
        self.target = playlist.target_duration;
        let Some(last) = playlist.segments.last().map(|s| s.sequence) else {
            return;
        };
        let first = playlist.segments.first().map_or(last, |s| s.sequence);
        let first_to_play = if self.live {
            last.saturating_sub(2).max(first)
        } else {
            first
        };
        for segment in &playlist.segments {
            self.timeline.add(
                segment.sequence,
                &segment.id,
                segment.duration,
                first_to_play,
            );
            self.sequence_of
                .insert(segment.id.clone(), segment.sequence);
            if self.config.seed
                && !self.stored.contains_key(&segment.id)
                && segment.sequence >= first_to_play
            {
                self.pending.entry(segment.id.clone()).or_default();
            }
            if let Some(pending) = self.pending.get_mut(&segment.id) {
                pending.first_seen.get_or_insert(now);
            } else if !self.stored.contains_key(&segment.id) {
                self.pending.insert(
                    segment.id.clone(),
                    Pending {
                        first_seen: Some(now),
                        ..Pending::default()
                    },
                );
            }
        }
        // Segments that left the playlist and are not needed any more.
        let listed: HashSet<&str> = playlist.segments.iter().map(|s| s.id.as_str()).collect();
        let needs = &self.needs;
        self.pending.retain(|id, p| {
            listed.contains(id.as_str())
                || p.transfer.is_some()
                || p.http_from.is_some()
                || needs.contains_key(id)
        });
    }

    fn on_tick(&mut self, now: Instant) {
        self.timeline.advance(now);
        // The swarm by seniority as this node sees it: the elders still listed, this node, then
        // the peers that joined after it. Banned peers seed nothing for us.
        let (mut swarm, newer): (Vec<String>, Vec<String>) = self
            .swarm
            .iter()
            .map(|p| p.peer_id.clone())
            .filter(|p| !self.banned.contains(p))
            .partition(|p| self.elders.as_ref().is_some_and(|e| e.contains(p)));
        swarm.push(self.me.clone());
        swarm.extend(newer);
        // One HTTP-first seeder per PEERS_PER_SEEDER peers, at least the configured count.
        let seeders = self
            .scheduler
            .config()
            .http_first_count
            .max(swarm.len() / PEERS_PER_SEEDER);
        let scheduler = Scheduler::new(SchedulerConfig {
            http_first_count: seeders,
            ..self.scheduler.config().clone()
        });
        // Needs nobody waits for any more (the player left or gave up) are dropped.
        let abandoned: Vec<String> = self
            .needs
            .iter_mut()
            .filter_map(|(id, (_, waiters))| {
                waiters.retain(|w| !w.is_closed());
                waiters.is_empty().then(|| id.clone())
            })
            .collect();
        for id in abandoned {
            self.needs.remove(&id);
            let idle = self
                .pending
                .get(&id)
                .is_some_and(|p| p.transfer.is_none() && p.http_from.is_none());
            if idle {
                self.pending.remove(&id);
            }
        }
        // What to work on and when each plays: asked for (driven), or the next segments to play.
        let work: Vec<(String, Option<Instant>)> = if self.config.seed {
            self.pending.keys().map(|id| (id.clone(), None)).collect()
        } else if self.config.driven {
            self.needs
                .iter()
                .map(|(id, (at, _))| (id.clone(), Some(*at)))
                .collect()
        } else {
            self.timeline
                .needed()
                .take(LOOKAHEAD)
                .map(|(seq, slot)| (slot.id.clone(), self.timeline.plays_at(seq, now)))
                .collect()
        };
        for (id, plays_at) in work {
            if self.stored.contains_key(&id) {
                continue;
            }
            let pending = self.pending.entry(id.clone()).or_default();
            if self.config.seed {
                if pending.http_from.is_none() {
                    self.start_http(&id, 0);
                }
                continue;
            }
            let Some(plays_at) = plays_at else {
                continue;
            };
            let fresh_live = self.live
                && pending
                    .first_seen
                    .is_some_and(|t| now.duration_since(t) < self.target * 2);
            let digest = self.digests.get(&id).copied();
            let need = Need {
                segment: id.clone(),
                size: digest.map(|d| d.1),
                plays_at,
                fresh_live,
            };
            let peers: Vec<PeerState> = self
                .links
                .iter()
                .map(|(peer, link)| PeerState {
                    peer: peer.clone(),
                    // Only verifiable bytes are worth asking for.
                    has: digest.is_some() && link.has.contains(&id),
                    rate: link.rate,
                    in_flight: link.in_flight,
                    healthy: !self.banned.contains(peer),
                })
                .collect();
            let transfer = pending.transfer.as_ref().map(|t| Transfer {
                peer: t.peer.clone(),
                started: t.started,
                received: t.data.len() as u64,
                offset: 0,
                last_progress: t.last_progress,
            });
            let http_running = pending.http_from.is_some();
            let decision = scheduler.decide(
                now,
                &self.me,
                &swarm,
                &need,
                &peers,
                transfer.as_ref(),
                http_running,
            );
            self.execute(&id, decision, now);
        }
        // Keep the bookkeeping bounded on long runs.
        let oldest_needed = self.timeline.needed().next().map(|(sequence, _)| sequence);
        if let Some(oldest) = oldest_needed {
            self.timeline
                .forget_before(oldest.saturating_sub(self.config.window as u64));
        }
    }

    fn execute(&mut self, id: &str, decision: Decision, now: Instant) {
        match decision {
            Decision::FetchFromPeer(peer) => self.request_from_peer(id, &peer, now),
            Decision::FetchHttp { from } | Decision::RaceHttp { from } => {
                // A race keeps the peer transfer: the HTTP rest is joined with its first `from` bytes.
                let from = if self.prefix_len(id) >= from { from } else { 0 };
                self.start_http(id, from);
            }
            Decision::ReplaceWithHttp { from } => {
                let running = self.pending.get_mut(id).and_then(|p| p.transfer.take());
                let mut from = from;
                if let Some(transfer) = running {
                    self.send_to(
                        &transfer.peer,
                        &Frame::Cancel {
                            request_id: transfer.request_id,
                        },
                    );
                    let kept = transfer.data.clone().freeze();
                    let peer = transfer.peer.clone();
                    if let Some(p) = self.pending.get_mut(id) {
                        p.transfer = Some(transfer);
                    }
                    self.fail_transfer(id, Cause::Timeout);
                    if kept.len() as u64 >= from && from > 0 {
                        if let Some(p) = self.pending.get_mut(id) {
                            p.partial = Some((peer, kept.slice(..from as usize)));
                        }
                    } else {
                        from = 0;
                    }
                } else if self.prefix_len(id) < from {
                    from = 0;
                }
                self.start_http(id, from);
            }
            Decision::WaitUntil(_) | Decision::Continue(_) | Decision::Skip => {}
        }
    }

    /// Bytes of `id` already in hand from a peer (a running transfer or a kept prefix).
    fn prefix_len(&self, id: &str) -> u64 {
        let Some(p) = self.pending.get(id) else {
            return 0;
        };
        match (&p.transfer, &p.partial) {
            (Some(t), _) => t.data.len() as u64,
            (None, Some((_, bytes))) => bytes.len() as u64,
            (None, None) => 0,
        }
    }

    fn request_from_peer(&mut self, id: &str, peer: &str, now: Instant) {
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let request_id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        link.in_flight += 1;
        let _ = link.out.send(
            Frame::Request {
                request_id,
                segment: id.to_owned(),
                offset: 0,
            }
            .encode(),
        );
        self.requests.insert(request_id, id.to_owned());
        let pending = self.pending.entry(id.to_owned()).or_default();
        pending.transfer = Some(PeerTransfer {
            peer: peer.to_owned(),
            request_id,
            started: now,
            last_progress: now,
            size: None,
            data: BytesMut::new(),
        });
    }

    fn start_http(&mut self, id: &str, from: u64) {
        let pending = self.pending.entry(id.to_owned()).or_default();
        if pending.http_from.is_some() {
            return;
        }
        pending.http_from = Some(from);
        let client = self.client.clone();
        let events = self.events.clone();
        let id = id.to_owned();
        self.tasks.spawn(async move {
            let result = client.get(&id, from).await;
            let _ = events.send(Event::Http { id, from, result });
        });
    }

    fn on_http(&mut self, id: String, from: u64, result: Result<Bytes, String>, now: Instant) {
        if self.stored.contains_key(&id) {
            return; // The peer won the race.
        }
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        pending.http_from = None;
        let body = match result {
            Ok(body) => body,
            Err(e) => {
                tracing::debug!(%id, error = %e, "HTTP fetch failed; the scheduler will retry");
                return;
            }
        };
        // The peer bytes this HTTP range continues.
        let prefix: Option<(String, Bytes)> = if from == 0 {
            None
        } else if let Some(t) = pending
            .transfer
            .as_ref()
            .filter(|t| t.data.len() as u64 >= from)
        {
            Some((
                t.peer.clone(),
                t.data.clone().freeze().slice(..from as usize),
            ))
        } else {
            pending
                .partial
                .clone()
                .filter(|(_, b)| b.len() as u64 == from)
        };
        if from > 0 && prefix.is_none() {
            self.start_http(&id, 0);
            return;
        }
        let whole = match &prefix {
            Some((_, head)) => {
                let mut joined = BytesMut::with_capacity(head.len() + body.len());
                joined.extend_from_slice(head);
                joined.extend_from_slice(&body);
                joined.freeze()
            }
            None => body.clone(),
        };
        let digest: [u8; 32] = Sha256::digest(&whole).into();
        if let (Some((peer, _)), Some((expected, _))) = (&prefix, self.digests.get(&id)) {
            if &digest != expected {
                // The peer's part was wrong: never use it, fetch the whole segment over HTTP.
                let peer = peer.clone();
                if let Some(p) = self.pending.get_mut(&id) {
                    p.partial = None;
                }
                self.caught_lying(&peer, &id);
                self.start_http(&id, 0);
                return;
            }
        }
        // A peer transfer still running lost the race.
        let running = self.pending.get_mut(&id).and_then(|p| p.transfer.take());
        if let Some(transfer) = running {
            self.send_to(
                &transfer.peer,
                &Frame::Cancel {
                    request_id: transfer.request_id,
                },
            );
            if let Some(p) = self.pending.get_mut(&id) {
                p.transfer = Some(transfer);
            }
            self.fail_transfer(&id, Cause::Timeout);
        }
        let peer_part = prefix.as_ref().map_or(0, |(_, b)| b.len() as u64);
        self.summary.p2p_bytes += peer_part;
        self.summary.http_bytes += body.len() as u64;
        self.accept(&id, whole, digest, "http", now);
    }

    fn on_frame(&mut self, peer: &str, frame: Frame, now: Instant) {
        match frame {
            Frame::Handshake { .. } => {}
            Frame::Have { segments } => {
                if let Some(link) = self.links.get_mut(peer) {
                    link.has = segments.into_iter().collect();
                }
            }
            Frame::Request {
                request_id,
                segment,
                offset,
            } => self.serve(peer, request_id, &segment, offset),
            Frame::Cancel { request_id } => {
                if let Some(task) = self.uploads.remove(&(peer.to_owned(), request_id)) {
                    task.abort();
                }
            }
            Frame::Absent { request_id } => {
                if let Some(id) = self.transfer_of(peer, request_id) {
                    self.fail_transfer(&id, Cause::Absent);
                }
            }
            Frame::Response {
                request_id,
                size,
                offset,
                digest,
            } => {
                let Some(id) = self.transfer_of(peer, request_id) else {
                    return;
                };
                let claimed_wrong = self.digests.get(&id).is_some_and(|(d, _)| d != &digest);
                if claimed_wrong || offset != 0 || size > 256 * 1024 * 1024 {
                    // A claim that differs from the gateway's digest is a lie told up front.
                    self.send_to(peer, &Frame::Cancel { request_id });
                    self.caught_lying(peer, &id);
                    return;
                }
                if let Some(t) = self.pending.get_mut(&id).and_then(|p| p.transfer.as_mut()) {
                    t.size = Some(size);
                    t.data.reserve(size as usize);
                }
            }
            Frame::Chunk {
                request_id,
                offset,
                data,
            } => {
                let Some(id) = self.transfer_of(peer, request_id) else {
                    return;
                };
                let Some(t) = self.pending.get_mut(&id).and_then(|p| p.transfer.as_mut()) else {
                    return;
                };
                let Some(size) = t.size else {
                    return self.caught_lying(peer, &id);
                };
                if offset != t.data.len() as u64 || t.data.len() as u64 + data.len() as u64 > size {
                    return self.caught_lying(peer, &id);
                }
                t.data.extend_from_slice(&data);
                t.last_progress = now;
                if t.data.len() as u64 == size {
                    self.complete_peer_transfer(peer, &id, now);
                }
            }
        }
    }

    fn transfer_of(&self, peer: &str, request_id: u32) -> Option<String> {
        let id = self.requests.get(&request_id)?;
        let transfer = self.pending.get(id)?.transfer.as_ref()?;
        (transfer.peer == peer && transfer.request_id == request_id).then(|| id.clone())
    }

    fn complete_peer_transfer(&mut self, peer: &str, id: &str, now: Instant) {
        let Some(transfer) = self.pending.get_mut(id).and_then(|p| p.transfer.take()) else {
            return;
        };
        self.requests.remove(&transfer.request_id);
        let bytes = transfer.data.freeze();
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let verified = self.digests.get(id).is_some_and(|(d, _)| d == &digest);
        if !verified {
            if let Some(p) = self.pending.get_mut(id) {
                p.transfer = Some(PeerTransfer {
                    peer: peer.to_owned(),
                    request_id: transfer.request_id,
                    started: transfer.started,
                    last_progress: now,
                    size: transfer.size,
                    data: BytesMut::new(),
                });
            }
            return self.caught_lying(peer, id);
        }
        let elapsed = now.saturating_duration_since(transfer.started);
        if let Some(link) = self.links.get_mut(peer) {
            link.in_flight = link.in_flight.saturating_sub(1);
            link.rate =
                crate::scheduler::update_rate(link.rate, bytes.len() as u64, elapsed).or(link.rate);
            link.outcome.ok += 1;
        }
        let delta = self
            .peer_deltas
            .entry(peer.to_owned())
            .or_insert_with(|| blank(peer));
        delta.ok += 1;
        delta.bytes += bytes.len() as u64;
        self.summary.p2p_bytes += bytes.len() as u64;
        self.accept(id, bytes, digest, "peer", now);
    }

    /// A peer sent data that does not match the gateway's digest: never use it, drop the peer,
    /// report it; the segment is fetched again (the scheduler will not pick this peer).
    fn caught_lying(&mut self, peer: &str, id: &str) {
        tracing::warn!(%peer, segment = %id, "digest mismatch: dropping the peer");
        self.summary.mismatches += 1;
        self.fail_transfer(id, Cause::Mismatch);
        if self.banned.insert(peer.to_owned()) {
            self.summary.peers_dropped_for_lying.push(peer.to_owned());
        }
        self.drop_link(peer, Cause::Disconnect);
    }

    /// Takes a verified segment: stores it, marks it played-ready, tells the peers.
    fn accept(
        &mut self,
        id: &str,
        bytes: Bytes,
        digest: [u8; 32],
        source: &'static str,
        now: Instant,
    ) {
        let sequence = self.sequence_of.get(id).copied();
        let waiting = self.needs.remove(id);
        let plays_at = match &waiting {
            Some((at, _)) => Some(*at),
            None => sequence.and_then(|s| self.timeline.plays_at(s, now)),
        };
        let in_time = self.config.seed || plays_at.is_none_or(|at| now <= at);
        if let Some(sequence) = sequence {
            self.timeline.obtained(sequence, now);
        }
        if let Some((_, waiters)) = waiting {
            for waiter in waiters {
                let _ = waiter.send(Fetched {
                    bytes: bytes.clone(),
                    source,
                });
            }
        }
        self.pending.remove(id);
        let len = bytes.len() as u64;
        self.store.push_back(id.to_owned());
        self.stored.insert(
            id.to_owned(),
            Stored {
                bytes,
                digest,
                source,
            },
        );
        while self.store.len() > self.config.window {
            if let Some(old) = self.store.pop_front() {
                self.stored.remove(&old);
            }
        }
        self.summary.segments += 1;
        if source == "peer" {
            self.summary.p2p_segments += 1;
        } else {
            self.summary.http_segments += 1;
        }
        self.summary.log.push(SegmentRecord {
            id: id.to_owned(),
            source,
            bytes: len,
            sha256: hex::encode(digest),
            at_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            in_time,
        });
        let have = self.have_frame();
        for link in self.links.values() {
            let _ = link.out.send(have.clone());
        }
    }

    /// Answers a peer's request from the stored window, within the upload policy.
    fn serve(&mut self, peer: &str, request_id: u32, id: &str, offset: u64) {
        self.uploads.retain(|_, task| !task.is_finished());
        let swarm_size = self.swarm.len() + 1;
        let allowed = self.config.upload && swarm_size >= self.config.privacy_floor;
        let stored = self
            .stored
            .get(id)
            .filter(|s| offset < s.bytes.len() as u64);
        let (Some(link), Some(stored), true) = (self.links.get(peer), stored, allowed) else {
            self.send_to(peer, &Frame::Absent { request_id });
            return;
        };
        let task = self.tasks.spawn(upload::send_segment(upload::Upload {
            sender: link.sender.clone(),
            request_id,
            bytes: stored.bytes.clone(),
            digest: stored.digest,
            offset,
            chunk: RECOMMENDED_CHUNK_LEN,
            bucket: Arc::clone(&self.bucket),
            lie: self.config.test.lie,
            stats: Arc::clone(&self.stats),
        }));
        self.uploads.insert((peer.to_owned(), request_id), task);
    }

    fn send_report(&mut self) {
        let s = &self.summary;
        let r = &self.reported;
        let uploaded = self.stats.uploaded_bytes.load(Ordering::Relaxed);
        let report = Report {
            http_bytes: s.http_bytes - r.http_bytes,
            p2p_bytes: s.p2p_bytes - r.p2p_bytes,
            http_segments: s.http_segments - r.http_segments,
            p2p_segments: s.p2p_segments - r.p2p_segments,
            uploaded_bytes: uploaded.saturating_sub(r.uploaded_bytes),
            failures: Failures {
                timeout: s.failures.timeout - r.failures.timeout,
                mismatch: s.failures.mismatch - r.failures.mismatch,
                absent: s.failures.absent - r.failures.absent,
                disconnect: s.failures.disconnect - r.failures.disconnect,
            },
            peers: self.peer_deltas.drain().map(|(_, v)| v).collect(),
        };
        self.reported = Summary {
            http_bytes: s.http_bytes,
            p2p_bytes: s.p2p_bytes,
            http_segments: s.http_segments,
            p2p_segments: s.p2p_segments,
            uploaded_bytes: uploaded,
            failures: s.failures,
            ..Summary::default()
        };
        let _ = self.signal.send(ClientMessage::Report(report));
    }
}

impl Drop for Node {
    /// Whether it ends normally or is killed, a node's QUIC endpoint and WebRTC peer connections
    /// close with it.
    fn drop(&mut self) {
        self.transports.close();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Timeout,
    Mismatch,
    Absent,
    Disconnect,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::Mismatch => "mismatch",
            Cause::Absent => "absent",
            Cause::Disconnect => "disconnect",
        }
    }
}

fn blank(peer: &str) -> PeerOutcome {
    PeerOutcome {
        peer_id: peer.to_owned(),
        ok: 0,
        failed: 0,
        mismatch: 0,
        bytes: 0,
    }
}
