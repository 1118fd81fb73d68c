//! The node's async shell: carries out what [`NodeCore`] asks (links over QUIC and WebRTC, HTTP
//! GETs, hashing, signalling, deliveries) and feeds it what happened, with the real clock.
//!
//! One task owns the core. Links, signalling, HTTP fetches and hashing run in their own tasks (all
//! aborted with the node) and send it events; after each event or timeout the task drains the
//! core's outputs.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::core::{Delivery, Input, LinkId, NodeCore, Output, Ticket, WaiterId};
use super::http::{GatewayClient, HttpError};
use super::{FetchError, NodeConfig, NodeError, SignallingError, Source, Summary};
use crate::hls::SegmentList;
use crate::protocol::frame::{self, Frame, PROTOCOL_VERSION};
use crate::protocol::signal::{
    self, Capabilities, ClientMessage, ErrorCode, QuicAddress, ServerMessage, Transport,
    CLOSE_SERVICE_RESTART, SIGNAL_VERSION,
};
use crate::transport::quic::{QuicIdentity, QuicTransport, QuicTuning};
#[cfg(feature = "webrtc")]
use crate::transport::webrtc::{WebrtcConfig, WebrtcEvent, WebrtcTransport};
use crate::transport::{LinkReceiver, LinkSender, PeerLink};

/// How long a new link may take to say who it is.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one path-rate sample per link this often (`Input::PathRate`).
const PATH_RATE_EVERY: Duration = Duration::from_millis(100);
/// Bodies up to this size are hashed on the node's task; larger ones on the blocking pool.
const HASH_INLINE_MAX: usize = 64 * 1024;
/// Relayed WebRTC signalling is paced to this many messages per second (burst: twice as many), so
/// that with reports and leave the node stays well inside the tracker's budget (20/s, burst 40).
#[cfg(feature = "webrtc")]
const RELAY_RATE: f64 = 12.0;
/// Reconnect backoff after a lost tracker connection: the first delay, and the largest.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// After close code 1012 (the gateway restarts) the node joins again within this.
const RESTART_JITTER: Duration = Duration::from_millis(500);
/// The largest frame a QUIC link carries, header included.
const QUIC_MAX_FRAME: usize = crate::transport::FRAME_HEADER_LEN + crate::transport::MAX_FRAME_LEN;

/// A running node.
pub struct NodeHandle {
    task: JoinHandle<Summary>,
    stop: Option<oneshot::Sender<()>>,
    /// Where the node accepts QUIC links (`None` when QUIC is not among its transports).
    pub quic_addr: Option<SocketAddr>,
    stats: Arc<LiveStats>,
    events: mpsc::UnboundedSender<Event>,
    waiters: Arc<AtomicU64>,
    switch: mpsc::UnboundedSender<u32>,
}

/// Figures of a running node that can be read while it runs.
#[derive(Debug, Default)]
struct LiveStats {
    uploaded_bytes: AtomicU64,
    active_uploads: AtomicUsize,
    active_transfers: AtomicUsize,
}

/// Asks a driven node for segments (see [`NodeConfig::driven`]). Cheap to clone.
#[derive(Clone)]
pub struct SegmentFetcher {
    events: mpsc::UnboundedSender<Event>,
    waiters: Arc<AtomicU64>,
    switch: mpsc::UnboundedSender<u32>,
}

/// A segment a driven node delivered: verified against the gateway's digest when it came from peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: Bytes,
    pub source: Source,
    /// How long the transfer that produced it took (for bandwidth estimation).
    pub took: Duration,
}

/// Sends [`Input::Abandon`] when a `fetch` future is dropped before its answer.
struct AbandonOnDrop {
    events: mpsc::UnboundedSender<Event>,
    waiter: WaiterId,
    armed: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.events.send(Event::Input(Input::Abandon {
                waiter: self.waiter,
            }));
        }
    }
}

impl SegmentFetcher {
    /// The segment `id` (its gateway path), needed by `plays_at`: from the store, from peers or
    /// over HTTP. Fails when HTTP failed and no peer could deliver, or the node has stopped.
    pub async fn fetch(&self, id: &str, plays_at: Instant) -> Result<Fetched, FetchError> {
        let waiter = WaiterId(self.waiters.fetch_add(1, Ordering::Relaxed));
        let (reply, answer) = oneshot::channel();
        self.events
            .send(Event::Need {
                waiter,
                id: id.to_owned(),
                plays_at,
                reply,
            })
            .map_err(|_| FetchError::Stopped)?;
        let mut guard = AbandonOnDrop {
            events: self.events.clone(),
            waiter,
            armed: true,
        };
        let result = answer.await.map_err(|_| FetchError::Stopped)?;
        guard.armed = false;
        result
    }

    /// The driving player switched to rendition `rendition` (its index in the multivariant
    /// playlist): the node leaves its swarm and joins that rendition's, as the browser engine
    /// does on a level switch. Its store and what it waits for stay. A switch to the rendition
    /// it is in does nothing.
    pub fn switch_rendition(&self, rendition: u32) {
        let _ = self.switch.send(rendition);
    }

    /// A media playlist the driving player loaded (the node learns what is live and fresh).
    pub fn playlist(&self, playlist: SegmentList) {
        let _ = self
            .events
            .send(Event::Input(Input::Playlist(Ok(playlist))));
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
            waiters: Arc::clone(&self.waiters),
            switch: self.switch.clone(),
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

    /// Transfers from peers running right now.
    pub fn active_transfers(&self) -> usize {
        self.stats.active_transfers.load(Ordering::Relaxed)
    }

    /// Ends the node abruptly, as if its process died: no leave, no goodbye to peers.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// What the node's task hears about.
enum Event {
    Input(Input),
    /// A link is up; `initiated` is `None` for WebRTC (the driver knows whom it asked).
    LinkUp {
        link: LinkId,
        peer: String,
        sender: LinkSender,
        initiated: Option<bool>,
        max_frame: usize,
        fingerprint: Option<String>,
    },
    Need {
        waiter: WaiterId,
        id: String,
        plays_at: Instant,
        reply: oneshot::Sender<Result<Fetched, FetchError>>,
    },
    Relay {
        from: String,
        payload: serde_json::Value,
    },
    /// Joined again after the tracker connection was lost: the new session's `welcome`.
    Rejoined(ServerMessage),
}

/// Starts a node: joins the swarm and begins. Returns once it has joined.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    let client = match &config.token {
        Some(token) => GatewayClient::through(&config.gateway, config.link.clone())
            .with_token(token)
            .map_err(|_| NodeError::BadToken)?,
        None => GatewayClient::through(&config.gateway, config.link.clone()),
    };
    let transports: Vec<Transport> = [Transport::Quic, Transport::Webrtc]
        .into_iter()
        .filter(|t| config.transports.contains(t))
        .collect();
    if transports.is_empty() {
        return Err(NodeError::NoTransport);
    }
    if cfg!(not(feature = "webrtc")) && transports.contains(&Transport::Webrtc) {
        return Err(NodeError::WebrtcUnavailable);
    }
    let quic = if transports.contains(&Transport::Quic) {
        let identity = QuicIdentity::generate()?;
        let transport = QuicTransport::bind_through(
            config.bind,
            identity,
            QuicTuning::tuned(),
            config.link.clone(),
        )?;
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
    let hello = ClientMessage::Join {
        v: SIGNAL_VERSION,
        stream: config.stream.clone(),
        rendition: config.rendition,
        capabilities: Capabilities {
            transports: transports.clone(),
            upload: config.upload,
            upload_rate: config.capacity.map(|c| c.min(config.upload_rate)),
        },
        token: config.token.clone(),
        quic: quic.as_ref().map(|t| QuicAddress {
            addr: t.local_addr().to_string(),
            fingerprint: t.fingerprint().to_owned(),
        }),
        key: config.key.as_ref().map(|k| k.public_hex().to_owned()),
    };
    let rejoin = Rejoin {
        ws_url,
        hello,
        shard: Arc::new(AtomicU32::new(0)),
    };
    let shard = Arc::clone(&rejoin.shard);
    let (ws_tx, ws_rx, welcome) = rejoin.join().await?;
    let ServerMessage::Welcome {
        peer_id: me,
        playlist,
        ..
    } = &welcome
    else {
        return Err(NodeError::Signalling(SignallingError::Closed));
    };
    let (me, playlist) = (me.clone(), playlist.clone());
    let peer_id = Arc::new(std::sync::RwLock::new(me.clone()));
    let (events_tx, events) = mpsc::unbounded_channel();
    let (signal_out, signal_queue) = mpsc::unbounded_channel::<ClientMessage>();
    let reconnects = Arc::new(AtomicU64::new(0));
    let switches = Arc::new(AtomicU64::new(0));
    let (switch_tx, switch_rx) = mpsc::unbounded_channel();
    // Signalling: this connection, then new ones whenever it closes or the rendition changes.
    let signalling = tokio::spawn(signalling(
        rejoin,
        (ws_tx, ws_rx),
        (signal_queue, switch_rx),
        events_tx.clone(),
        (Arc::clone(&reconnects), Arc::clone(&switches)),
    ));
    let tasks = TaskSet::default();
    let link_ids = Arc::new(AtomicU64::new(1));
    let mut background = vec![signalling];
    if let Some(quic) = &quic {
        let transport = Arc::clone(quic);
        let tx = events_tx.clone();
        let me = Arc::clone(&peer_id);
        let tasks = tasks.clone();
        let ids = Arc::clone(&link_ids);
        background.push(tokio::spawn(async move {
            while let Some(link) = transport.accept().await {
                let id = LinkId(ids.fetch_add(1, Ordering::Relaxed));
                tasks.spawn(run_link(
                    link,
                    id,
                    current(&me),
                    None,
                    Some(false),
                    tx.clone(),
                ));
            }
        }));
    }
    #[cfg(feature = "webrtc")]
    let webrtc = if transports.contains(&Transport::Webrtc) {
        match start_webrtc(
            &config,
            &me,
            &events_tx,
            &signal_out,
            &tasks,
            &link_ids,
            &mut background,
        ) {
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
    };
    let now = Instant::now();
    let mut core = NodeCore::new(config.core(transports), &me, now);
    core.handle(Input::Signal(welcome), now);
    let stats = Arc::new(LiveStats::default());
    let driver = Driver {
        core,
        me,
        peer_id,
        reconnects,
        switches,
        shard,
        playlist,
        client,
        events: events_tx.clone(),
        signal: signal_out,
        tasks: tasks.clone(),
        link_ids,
        links: HashMap::new(),
        http: HashMap::new(),
        waiters: HashMap::new(),
        webrtc_asked: HashSet::new(),
        quic,
        #[cfg(feature = "webrtc")]
        webrtc,
        stats: Arc::clone(&stats),
        end: config.duration.map(|d| now + d),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let _guard = AbortOnDrop(background, tasks);
        driver.run(events, stop_rx).await
    });
    Ok(NodeHandle {
        task,
        stop: Some(stop_tx),
        quic_addr,
        stats,
        events: events_tx,
        waiters: Arc::new(AtomicU64::new(1)),
        switch: switch_tx,
    })
}

type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;
type WsStream = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// Connects to the tracker, joins, and waits for the welcome.
async fn join(
    ws_url: &str,
    hello: &ClientMessage,
) -> Result<(WsSink, WsStream, ServerMessage), NodeError> {
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(ws_url),
    )
    .await
    .map_err(|_| SignallingError::Timeout)?
    .map_err(|e| SignallingError::Connect(e.to_string()))?;
    let (mut ws_tx, mut ws_rx) = ws.split();
    ws_tx
        .send(Message::text(signal::encode_client(hello)))
        .await
        .map_err(|e| SignallingError::Connect(e.to_string()))?;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws_rx.next())
            .await
            .map_err(|_| SignallingError::Timeout)?;
        match next {
            Some(Ok(Message::Text(text))) => match signal::decode_server(&text) {
                Ok(welcome @ ServerMessage::Welcome { .. }) => {
                    return Ok((ws_tx, ws_rx, welcome));
                }
                Ok(ServerMessage::Error {
                    code,
                    message,
                    shard,
                }) => {
                    return Err(NodeError::Refused {
                        code,
                        message,
                        shard,
                    })
                }
                Ok(_) => continue,
                Err(e) => return Err(SignallingError::Protocol(e).into()),
            },
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(SignallingError::Connect(e.to_string()).into()),
            None => return Err(SignallingError::Closed.into()),
        }
    }
}

/// Redirects from full shards followed in a row; past them the join fails with `swarm_full`.
/// Each gateway of a fleet skips every full shard it holds, so a chain is about one hop per
/// gateway.
const MAX_SHARD_HOPS: u32 = 16;

/// What it takes to join (and join again): the tracker URL without its shard, the `join`
/// message, and the shard last joined (kept across reconnects: after a gateway goes away its
/// shard re-forms, whole, wherever the balancer hashes it).
struct Rejoin {
    ws_url: String,
    hello: ClientMessage,
    shard: Arc<AtomicU32>,
}

impl Rejoin {
    /// Another rendition from now on (from its first shard); false if it is the current one.
    fn switch(&mut self, to: u32) -> bool {
        let ClientMessage::Join { rendition, .. } = &mut self.hello else {
            return false;
        };
        if *rendition == to {
            return false;
        }
        *rendition = to;
        self.shard.store(0, Ordering::Relaxed);
        true
    }

    fn url(&self, shard: u32) -> String {
        if shard == 0 {
            self.ws_url.clone()
        } else {
            format!("{}&shard={shard}", self.ws_url)
        }
    }

    /// Joins the current shard, following `swarm_full` to the shard it names (only forwards,
    /// at most [`MAX_SHARD_HOPS`] times).
    async fn join(&self) -> Result<(WsSink, WsStream, ServerMessage), NodeError> {
        let mut shard = self.shard.load(Ordering::Relaxed);
        let mut hops = 0;
        loop {
            match join(&self.url(shard), &self.hello).await {
                Err(NodeError::Refused {
                    code: ErrorCode::SwarmFull,
                    shard: Some(next),
                    ..
                }) if next > shard && hops < MAX_SHARD_HOPS => {
                    tracing::debug!(full = shard, next, "swarm shard full: joining the next");
                    shard = next;
                    hops += 1;
                }
                Ok(joined) => {
                    self.shard.store(shard, Ordering::Relaxed);
                    return Ok(joined);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The id a new link presents in its Handshake: the current session's.
fn current(id: &std::sync::RwLock<String>) -> String {
    id.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Tracker sessions, one after another, for the life of the node: messages from the core go out on
/// the current socket; when it closes, the core is told (`SignalClosed`, it keeps playing over HTTP
/// and keeps its store) and the node joins again after [`Backoff`] (at once, within
/// [`RESTART_JITTER`], when the gateway said it restarts: close code 1012), through whatever the
/// gateway URL leads to now (a balancer picks another gateway). A rendition switch sends `leave`,
/// closes the socket and joins the other rendition's swarm at once. A new `welcome` starts a new
/// swarm session in the core. Ends when the node stops (the core's queue closes), or after a
/// refusal that rejoining cannot cure (`unsupported_version`, `unauthorized`).
async fn signalling(
    mut rejoin: Rejoin,
    (mut ws_tx, mut ws_rx): (WsSink, WsStream),
    (mut queue, mut switch): (
        mpsc::UnboundedReceiver<ClientMessage>,
        mpsc::UnboundedReceiver<u32>,
    ),
    events: mpsc::UnboundedSender<Event>,
    (reconnects, switches): (Arc<AtomicU64>, Arc<AtomicU64>),
) {
    let mut backoff = Backoff::default();
    loop {
        let code = match pump(&mut ws_tx, &mut ws_rx, &mut queue, &mut switch, &events).await {
            Ended::Stopped => {
                let _ = ws_tx.close().await;
                return;
            }
            Ended::Switch(to) => {
                if !rejoin.switch(to) {
                    continue;
                }
                let leave = signal::encode_client(&ClientMessage::Leave {});
                let _ = ws_tx.send(Message::text(leave)).await;
                let _ = ws_tx.close().await;
                match rejoin.join().await {
                    Ok((tx, rx, welcome)) => {
                        (ws_tx, ws_rx) = (tx, rx);
                        switches.fetch_add(1, Ordering::Relaxed);
                        if events.send(Event::Rejoined(welcome)).is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, rendition = to, "joining the new rendition's swarm failed");
                        None
                    }
                }
            }
            Ended::Closed(code) => code,
        };
        if events.send(Event::Input(Input::SignalClosed)).is_err() {
            return;
        }
        let mut delay = reconnect_delay(&mut backoff, code, rand::random());
        tracing::info!(
            ?code,
            ?delay,
            "tracker connection closed: playing over HTTP, joining again"
        );
        loop {
            // What the core says meanwhile (reports, relays) belongs to a session that is gone;
            // a switch meanwhile is where the next join goes.
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    message = queue.recv() => if message.is_none() { return },
                    Some(to) = switch.recv() => { rejoin.switch(to); }
                }
            }
            match rejoin.join().await {
                Ok((tx, rx, welcome)) => {
                    (ws_tx, ws_rx) = (tx, rx);
                    reconnects.fetch_add(1, Ordering::Relaxed);
                    backoff = Backoff::default();
                    if events.send(Event::Rejoined(welcome)).is_err() {
                        return;
                    }
                    break;
                }
                Err(NodeError::Refused { code, message, .. })
                    if matches!(
                        code,
                        ErrorCode::UnsupportedVersion | ErrorCode::Unauthorized
                    ) =>
                {
                    tracing::warn!(?code, %message, "the tracker refuses this node: HTTP only from now on");
                    while queue.recv().await.is_some() {}
                    return;
                }
                Err(e) => {
                    delay = backoff.next(rand::random());
                    tracing::debug!(error = %e, ?delay, "joining again failed");
                }
            }
        }
    }
}

/// How a tracker socket ended.
enum Ended {
    /// The node stops.
    Stopped,
    /// The driving player switched to this rendition.
    Switch(u32),
    /// The socket closed, with the close code if the gateway sent one.
    Closed(Option<u16>),
}

/// Carries messages both ways on one socket until it closes or the node stops.
async fn pump(
    ws_tx: &mut WsSink,
    ws_rx: &mut WsStream,
    queue: &mut mpsc::UnboundedReceiver<ClientMessage>,
    switch: &mut mpsc::UnboundedReceiver<u32>,
    events: &mpsc::UnboundedSender<Event>,
) -> Ended {
    loop {
        tokio::select! {
            Some(to) = switch.recv() => return Ended::Switch(to),
            incoming = ws_rx.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let event = match signal::decode_server(&text) {
                        Ok(ServerMessage::Relay { from, payload }) => Event::Relay { from, payload },
                        Ok(m) => Event::Input(Input::Signal(m)),
                        Err(e) => {
                            tracing::warn!(error = %e, "bad message from the tracker");
                            continue;
                        }
                    };
                    if events.send(event).is_err() {
                        return Ended::Stopped;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ended::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ended::Closed(None),
            },
            outgoing = queue.recv() => match outgoing {
                Some(message) => {
                    if ws_tx.send(Message::text(signal::encode_client(&message))).await.is_err() {
                        return Ended::Closed(None);
                    }
                }
                None => return Ended::Stopped,
            },
        }
    }
}

/// The first reconnect delay: after close code 1012 (the gateway restarts, [`CLOSE_SERVICE_RESTART`])
/// at once within [`RESTART_JITTER`]; otherwise the backoff's next. `random` is in [0, 1).
fn reconnect_delay(backoff: &mut Backoff, code: Option<u16>, random: f64) -> Duration {
    if code == Some(CLOSE_SERVICE_RESTART) {
        RESTART_JITTER.mul_f64(random.clamp(0.0, 1.0))
    } else {
        backoff.next(random)
    }
}

/// Reconnect delays after a lost tracker connection: 1 s doubling to 30 s, each drawn in [d/2, d)
/// so that the peers of a gateway that went away do not all come back in the same instant.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    /// The delay to wait now (`random` in [0, 1) picks it in [d/2, d)); the next one doubles.
    fn next(&mut self, random: f64) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(BACKOFF_MAX);
        d.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }
}

/// Creates the WebRTC transport and its two pumps: opened data channels become links, outgoing
/// signalling becomes paced relays.
#[cfg(feature = "webrtc")]
fn start_webrtc(
    config: &NodeConfig,
    me: &str,
    events: &mpsc::UnboundedSender<Event>,
    signal: &mpsc::UnboundedSender<ClientMessage>,
    tasks: &TaskSet,
    link_ids: &Arc<AtomicU64>,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Arc<WebrtcTransport>, NodeError> {
    let webrtc_config = WebrtcConfig {
        ice_servers: config.ice_servers.clone(),
        ..WebrtcConfig::new(config.bind.ip())
    };
    let (transport, mut outgoing) = WebrtcTransport::new(me, webrtc_config)?;
    let transport = Arc::new(transport);
    {
        let transport = Arc::clone(&transport);
        let tx = events.clone();
        let me = me.to_owned();
        let tasks = tasks.clone();
        let ids = Arc::clone(link_ids);
        background.push(tokio::spawn(async move {
            while let Some(event) = transport.next_event().await {
                match event {
                    WebrtcEvent::Open { peer, link } => {
                        let id = LinkId(ids.fetch_add(1, Ordering::Relaxed));
                        tasks.spawn(run_link(link, id, me.clone(), Some(peer), None, tx.clone()));
                    }
                    WebrtcEvent::Failed { peer, error } => {
                        tracing::debug!(%peer, %error, "WebRTC attempt failed");
                        let _ = tx.send(Event::Input(Input::ConnectFailed { peer }));
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

/// Every task a node spawns (links, HTTP fetches, hashing), so that nothing of a stopped or killed
/// node lives on.
#[derive(Clone, Default)]
struct TaskSet(Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>);

impl TaskSet {
    fn spawn<F>(&self, future: F) -> tokio::task::AbortHandle
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(future).abort_handle();
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.clone());
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

/// Runs one link: exchanges handshakes, then forwards frames to the node.
async fn run_link(
    link: PeerLink,
    id: LinkId,
    me: String,
    expected: Option<String>,
    initiated: Option<bool>,
    events: mpsc::UnboundedSender<Event>,
) {
    let PeerLink {
        sender,
        mut receiver,
        remote_fingerprint,
        ..
    } = link;
    let Some(peer) = handshake(&sender, &mut receiver, me, expected.as_deref()).await else {
        if let (Some(peer), Some(true)) = (expected, initiated) {
            let _ = events.send(Event::Input(Input::ConnectFailed { peer }));
        }
        return;
    };
    let max_frame = QUIC_MAX_FRAME;
    let up = Event::LinkUp {
        link: id,
        peer: peer.clone(),
        sender: sender.clone(),
        initiated,
        max_frame,
        fingerprint: remote_fingerprint,
    };
    if events.send(up).is_err() {
        return;
    }
    while let Some(bytes) = receiver.recv().await {
        match frame::decode_exact(&bytes) {
            Ok(frame) => {
                if events
                    .send(Event::Input(Input::Frame { link: id, frame }))
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "malformed frame: closing the link");
                receiver.close("malformed frame");
                break;
            }
        }
    }
    sender.close("link ended");
    let _ = events.send(Event::Input(Input::LinkDown { link: id }));
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

/// A link as the driver holds it: its sender and the queue its writer task drains.
struct DriverLink {
    sender: LinkSender,
    out: mpsc::UnboundedSender<Bytes>,
}

struct Driver {
    core: NodeCore,
    me: String,
    /// The current session's peer id, as the QUIC accept loop reads it.
    peer_id: Arc<std::sync::RwLock<String>>,
    /// New tracker sessions after the first.
    reconnects: Arc<AtomicU64>,
    /// Rendition switches (the driving player's) done so far.
    switches: Arc<AtomicU64>,
    /// The shard the signalling task joined last.
    shard: Arc<AtomicU32>,
    /// The media playlist of the joined rendition.
    playlist: String,
    client: GatewayClient,
    events: mpsc::UnboundedSender<Event>,
    signal: mpsc::UnboundedSender<ClientMessage>,
    tasks: TaskSet,
    link_ids: Arc<AtomicU64>,
    links: HashMap<LinkId, DriverLink>,
    http: HashMap<String, tokio::task::AbortHandle>,
    waiters: HashMap<WaiterId, oneshot::Sender<Result<Fetched, FetchError>>>,
    /// WebRTC peers this node offered a link to.
    webrtc_asked: HashSet<String>,
    quic: Option<Arc<QuicTransport>>,
    #[cfg(feature = "webrtc")]
    webrtc: Option<Arc<WebrtcTransport>>,
    stats: Arc<LiveStats>,
    end: Option<Instant>,
}

impl Driver {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut stop: oneshot::Receiver<()>,
    ) -> Summary {
        self.drain(Instant::now());
        loop {
            let wake = [self.core.poll_timeout(), self.end]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                () = sleep => {
                    let now = Instant::now();
                    if self.end.is_some_and(|end| now >= end) {
                        break;
                    }
                    self.core.handle_timeout(now);
                }
                _ = &mut stop => break,
            }
            self.drain(Instant::now());
        }
        let now = Instant::now();
        self.core.handle(Input::Stop, now);
        self.drain(now);
        // Give the writer a moment to deliver the last report and the leave.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.close_transports();
        let mut summary = self.core.summary(Instant::now());
        summary.signalling_reconnects = self.reconnects.load(Ordering::Relaxed);
        summary.rendition_switches = self.switches.load(Ordering::Relaxed);
        summary.shard = self.shard.load(Ordering::Relaxed);
        summary
    }

    fn close_transports(&self) {
        if let Some(quic) = &self.quic {
            quic.close();
        }
        #[cfg(feature = "webrtc")]
        if let Some(webrtc) = &self.webrtc {
            webrtc.close();
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Input(input) => self.core.handle(input, now),
            Event::LinkUp {
                link,
                peer,
                sender,
                initiated,
                max_frame,
                fingerprint,
            } => {
                let initiated = initiated.unwrap_or_else(|| self.webrtc_asked.remove(&peer));
                let (out, mut queue) = mpsc::unbounded_channel::<Bytes>();
                let writer = sender.clone();
                let events = self.events.clone();
                self.tasks.spawn(async move {
                    let mut sampled: Option<tokio::time::Instant> = None;
                    while let Some(frame) = queue.recv().await {
                        let len = frame.len() as u64;
                        if writer.send(frame).await.is_err() {
                            break;
                        }
                        let written = Input::Written { link, bytes: len };
                        if events.send(Event::Input(written)).is_err() {
                            break;
                        }
                        // The path's rate, at most every PATH_RATE_EVERY: samples of the uplink
                        // while this link carries an upload.
                        let now = tokio::time::Instant::now();
                        if sampled.is_none_or(|t| now.duration_since(t) >= PATH_RATE_EVERY) {
                            if let Some(rate) = writer.path_rate() {
                                sampled = Some(now);
                                let sample = Input::PathRate { link, rate };
                                if events.send(Event::Input(sample)).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
                self.links.insert(link, DriverLink { sender, out });
                self.core.handle(
                    Input::LinkUp {
                        link,
                        peer,
                        initiated,
                        max_frame,
                        fingerprint,
                    },
                    now,
                );
            }
            Event::Need {
                waiter,
                id,
                plays_at,
                reply,
            } => {
                self.waiters.insert(waiter, reply);
                self.core.handle(
                    Input::Need {
                        waiter,
                        id,
                        plays_at,
                        p2p: true,
                    },
                    now,
                );
            }
            Event::Relay { from, payload } => self.on_relay(&from, &payload),
            Event::Rejoined(welcome) => {
                // A new session: new links present the new id; the core starts a new swarm
                // session (its old links close) and keeps its store.
                if let ServerMessage::Welcome {
                    peer_id, playlist, ..
                } = &welcome
                {
                    self.playlist.clone_from(playlist);
                    self.me.clone_from(peer_id);
                    *self.peer_id.write().unwrap_or_else(|e| e.into_inner()) = peer_id.clone();
                    #[cfg(feature = "webrtc")]
                    if let Some(webrtc) = &self.webrtc {
                        webrtc.set_me(peer_id);
                    }
                }
                self.webrtc_asked.clear();
                self.core.handle(Input::Signal(welcome), now);
            }
        }
    }

    /// A relayed signalling payload: WebRTC negotiation.
    fn on_relay(&mut self, from: &str, payload: &serde_json::Value) {
        if self.core.is_banned(from) {
            return;
        }
        #[cfg(feature = "webrtc")]
        if let Some(webrtc) = &self.webrtc {
            if let Err(e) = webrtc.handle_signal(from, payload) {
                tracing::debug!(peer = %from, error = %e, "unusable relay payload");
            }
            return;
        }
        tracing::debug!(peer = %from, kind = ?payload.get("kind"), "relay ignored: no WebRTC");
    }

    /// Carries out every output the core has queued.
    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            self.perform(output, now);
        }
        self.stats
            .uploaded_bytes
            .store(self.core.uploaded_bytes(), Ordering::Relaxed);
        self.stats
            .active_uploads
            .store(self.core.active_uploads(), Ordering::Relaxed);
        self.stats
            .active_transfers
            .store(self.core.active_transfers(), Ordering::Relaxed);
    }

    fn perform(&mut self, output: Output, now: Instant) {
        match output {
            Output::Connect {
                peer,
                transport,
                quic,
            } => self.connect(peer, transport, quic),
            Output::Send { link, frame } => match self.links.get(&link) {
                Some(l) => {
                    let _ = l.out.send(frame.encode());
                }
                None => self.core.handle(Input::LinkDown { link }, now),
            },
            Output::Close { link, reason } => {
                if let Some(l) = self.links.remove(&link) {
                    l.sender.close(reason);
                }
            }
            Output::HttpGet { id, from } => {
                let client = self.client.clone();
                let events = self.events.clone();
                let key = id.clone();
                let task = self.tasks.spawn(async move {
                    let result = client.get(&id, from).await;
                    let _ = events.send(Event::Input(Input::Http { id, from, result }));
                });
                if let Some(old) = self.http.insert(key, task) {
                    old.abort();
                }
            }
            Output::HttpCancel { id } => {
                if let Some(task) = self.http.remove(&id) {
                    task.abort();
                }
            }
            Output::FetchPlaylist => {
                let client = self.client.clone();
                let events = self.events.clone();
                let path = self.playlist.clone();
                self.tasks.spawn(async move {
                    let result = match client.get(&path, 0).await {
                        Ok(body) => crate::hls::segment_list(&path, &body)
                            .map_err(|e| HttpError::Playlist(format!("{path}: {e}"))),
                        Err(e) => Err(e),
                    };
                    let _ = events.send(Event::Input(Input::Playlist(result)));
                });
            }
            Output::Verify { ticket, bytes } => self.verify(ticket, bytes, now),
            Output::Signal(message) => {
                let _ = self.signal.send(message);
            }
            Output::Deliver {
                waiters,
                result,
                id: _,
            } => {
                let answer = result.map(|d| fetched(&d)).map_err(FetchError::Http);
                for waiter in waiters {
                    if let Some(reply) = self.waiters.remove(&waiter) {
                        let _ = reply.send(answer.clone());
                    }
                }
            }
        }
    }

    fn verify(&mut self, ticket: Ticket, bytes: Bytes, now: Instant) {
        if bytes.len() <= HASH_INLINE_MAX {
            let sha256: [u8; 32] = Sha256::digest(&bytes).into();
            self.core.handle(Input::Verified { ticket, sha256 }, now);
            return;
        }
        let events = self.events.clone();
        self.tasks.spawn(async move {
            let hashed = tokio::task::spawn_blocking(move || Sha256::digest(&bytes).into()).await;
            if let Ok(sha256) = hashed {
                let _ = events.send(Event::Input(Input::Verified { ticket, sha256 }));
            }
        });
    }

    fn connect(&mut self, peer: String, transport: Transport, quic: Option<QuicAddress>) {
        match transport {
            Transport::Quic => {
                let target =
                    quic.and_then(|q| Some((q.addr.parse::<SocketAddr>().ok()?, q.fingerprint)));
                let (Some(local), Some((addr, fingerprint))) = (self.quic.clone(), target) else {
                    return self.fail_connect(peer);
                };
                let events = self.events.clone();
                let me = self.me.clone();
                let id = LinkId(self.link_ids.fetch_add(1, Ordering::Relaxed));
                self.tasks.spawn(async move {
                    match local.connect(addr, &fingerprint).await {
                        Ok(link) => run_link(link, id, me, Some(peer), Some(true), events).await,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "cannot connect to peer");
                            let _ = events.send(Event::Input(Input::ConnectFailed { peer }));
                        }
                    }
                });
            }
            Transport::Webrtc => {
                #[cfg(feature = "webrtc")]
                if let Some(webrtc) = &self.webrtc {
                    // The outcome arrives as a WebRTC event (a link, or a failure).
                    match webrtc.connect(&peer) {
                        Ok(()) => {
                            self.webrtc_asked.insert(peer);
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "cannot offer to peer");
                            self.fail_connect(peer);
                        }
                    }
                    return;
                }
                self.fail_connect(peer);
            }
        }
    }

    fn fail_connect(&mut self, peer: String) {
        let _ = self
            .events
            .send(Event::Input(Input::ConnectFailed { peer }));
    }
}

fn fetched(delivery: &Delivery) -> Fetched {
    Fetched {
        bytes: delivery.bytes.clone(),
        source: delivery.source,
        took: delivery
            .finished
            .saturating_duration_since(delivery.started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_thirty_with_jitter_below_each_step() {
        let mut b = Backoff::default();
        let lows: Vec<u64> = (0..7).map(|_| b.next(0.0).as_millis() as u64).collect();
        assert_eq!(lows, [500, 1000, 2000, 4000, 8000, 15000, 15000]);
        let mut b = Backoff::default();
        let highs: Vec<u64> = (0..7)
            .map(|_| b.next(0.999_999).as_millis() as u64)
            .collect();
        assert_eq!(highs, [999, 1999, 3999, 7999, 15999, 29999, 29999]);
    }

    #[test]
    fn a_restarting_gateway_is_rejoined_at_once_and_leaves_the_backoff_alone() {
        let mut b = Backoff::default();
        let d = reconnect_delay(&mut b, Some(CLOSE_SERVICE_RESTART), 0.5);
        assert_eq!(d, Duration::from_millis(250));
        assert!(reconnect_delay(&mut b, Some(1012), 1.0) <= RESTART_JITTER);
        // Other closes (1008, 1011, none) back off, starting at 1 s.
        assert_eq!(
            reconnect_delay(&mut b, Some(1011), 0.0),
            Duration::from_millis(500)
        );
        assert_eq!(
            reconnect_delay(&mut b, None, 0.0),
            Duration::from_millis(1000)
        );
    }
}
