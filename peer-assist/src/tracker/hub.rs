//! The tracker's async shell: one task per WebSocket connection. A connection must `join` first; it
//! then gets `welcome`, the recent digests of its rendition and a peer list, and afterwards digests as
//! the gateway caches new segments and fresh peer lists whenever its swarm changes. Abuse (too many or
//! too large messages, malformed JSON, a silent connection) closes the connection with a reason; other
//! peers are not affected.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::metrics::TrackerMetrics;
use super::registry::{JoinError, Member, MessageBudget, Registry, SwarmKey, TrackerConfig};
use super::reports::{self, ReportLimits};
use crate::protocol::signal::{
    self, ClientMessage, DigestEntry, ErrorCode, Report, ServerMessage, SignalError, SIGNAL_VERSION,
};

/// How long a new connection may take to send its `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one peer before it is considered too slow and dropped.
const OUTBOUND_QUEUE: usize = 256;

/// What the tracker needs from the gateway it is mounted in.
pub trait Backend: Send + Sync + 'static {
    /// The media playlist path of variant `rendition` of the multivariant playlist `stream`.
    fn resolve(
        &self,
        stream: &str,
        rendition: u32,
    ) -> BoxFuture<'static, Result<String, ResolveError>>;
    /// The digests of the recent segments of a media playlist.
    fn digests(&self, playlist: &str) -> BoxFuture<'static, Vec<DigestEntry>>;
    /// Whether `token` grants a client at `client` the swarms of `stream`; `Err` says why not
    /// (no auth configured: always `Ok`).
    fn authorize(
        &self,
        _stream: &str,
        _token: Option<&str>,
        _client: Option<std::net::IpAddr>,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// Why a rendition of a stream could not be resolved, by whose fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The client's: no such stream, or not that many renditions (`not_found`).
    #[error("{0}")]
    NotFound(String),
    /// The origin's or the network's: the playlist cannot be fetched now (`unavailable`).
    #[error("{0}")]
    Unavailable(String),
}

impl ResolveError {
    /// The `error` code the tracker answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ResolveError::NotFound(_) => ErrorCode::NotFound,
            ResolveError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

/// Facts about a connection the tracker cannot learn from its messages.
#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// The `stream` query parameter of the WebSocket URL.
    pub stream: String,
    /// The region, from the header the load balancer sets.
    pub region: Option<String>,
    /// A token the connection carried (the WebSocket URL's `token`, or a cookie); `join.token`
    /// takes precedence.
    pub token: Option<String>,
    /// The client's address (for tokens bound to a client).
    pub client: Option<std::net::IpAddr>,
}

/// Segments of a playlist as the tracker saw them go by.
#[derive(Debug, Clone, Copy, Default)]
struct PlaylistStats {
    /// Digests published since the tracker started.
    published: u64,
    /// Segments in the window a joining peer is given.
    window: u64,
    /// The largest segment seen.
    max_size: u64,
}

enum Outbound {
    Message(ServerMessage),
    Close(ErrorCode, String),
    /// The gateway shuts down: close with 1012, the peer joins again elsewhere.
    Restart,
}

struct Inner {
    registry: Mutex<Registry>,
    outbound: Mutex<HashMap<String, mpsc::Sender<Outbound>>>,
    /// Media playlist path → the swarms watching it, for digest pushes.
    playlists: Mutex<HashMap<String, HashSet<SwarmKey>>>,
    swarm_playlists: Mutex<HashMap<SwarmKey, String>>,
    /// What the tracker knows of each watched playlist's segments, to bound what reports claim.
    playlist_stats: Mutex<HashMap<String, PlaylistStats>>,
    metrics: TrackerMetrics,
    backend: Arc<dyn Backend>,
    /// Set by [`Tracker::restart_all`]: a peer that joins afterwards is closed at once.
    restarting: std::sync::atomic::AtomicBool,
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The metric label and close reason of an error code.
pub fn code_label(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadMessage => "bad_message",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::NotFound => "not_found",
        ErrorCode::SwarmFull => "swarm_full",
        ErrorCode::TooManySwarms => "too_many_swarms",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::MessageTooLarge => "message_too_large",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
    }
}

impl Tracker {
    pub fn new(
        config: TrackerConfig,
        backend: Arc<dyn Backend>,
        registry: &prometheus::Registry,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::new(config)),
                outbound: Mutex::new(HashMap::new()),
                playlists: Mutex::new(HashMap::new()),
                swarm_playlists: Mutex::new(HashMap::new()),
                playlist_stats: Mutex::new(HashMap::new()),
                metrics: TrackerMetrics::register(registry),
                backend,
                restarting: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn config(&self) -> TrackerConfig {
        lock(&self.inner.registry).config().clone()
    }

    pub fn peer_count(&self) -> usize {
        lock(&self.inner.registry).peer_count()
    }

    /// The gateway shuts down: every peer's socket is closed with 1012 (service restart), and so is
    /// any that joins from now on, so that peers join again through the balancer, elsewhere.
    /// [`Tracker::peer_count`] falls to zero as the close frames go out.
    pub fn restart_all(&self) {
        self.inner
            .restarting
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let senders: Vec<_> = lock(&self.inner.outbound).values().cloned().collect();
        for sender in senders {
            let _ = sender.try_send(Outbound::Restart);
        }
    }

    /// Pushes the digest of a newly cached segment of `playlist` to every peer watching it.
    pub fn publish_digest(&self, playlist: &str, entry: DigestEntry) {
        {
            let mut stats = lock(&self.inner.playlist_stats);
            if let Some(s) = stats.get_mut(playlist) {
                s.published = s.published.saturating_add(1);
                s.max_size = s.max_size.max(entry.size);
            }
        }
        let swarms: Vec<SwarmKey> = match lock(&self.inner.playlists).get(playlist) {
            Some(s) => s.iter().cloned().collect(),
            None => return,
        };
        let message = ServerMessage::Digests {
            playlist: playlist.to_owned(),
            segments: vec![entry],
        };
        for swarm in swarms {
            let members: Vec<String> = lock(&self.inner.registry).swarm_members(&swarm).to_vec();
            for id in members {
                self.send(&id, Outbound::Message(message.clone()));
                self.inner.metrics.digests_pushed.inc();
            }
        }
    }

    fn send(&self, id: &str, message: Outbound) {
        let sender = lock(&self.inner.outbound).get(id).cloned();
        if let Some(sender) = sender {
            if sender.try_send(message).is_err() {
                // A peer that cannot keep up with signalling is dropped rather than buffered forever.
                tracing::debug!(peer = id, "outbound queue full, dropping the peer");
                let _ = sender.try_send(Outbound::Close(ErrorCode::Internal, "too slow".into()));
            }
        }
    }

    /// Sends every member of `swarm` its current peer list.
    fn refresh_swarm(&self, swarm: &SwarmKey) {
        let lists: Vec<(String, Vec<signal::PeerInfo>)> = {
            let mut registry = lock(&self.inner.registry);
            let lists: Vec<(String, Vec<signal::PeerInfo>)> = registry
                .swarm_members(swarm)
                .iter()
                .map(|id| (id.clone(), registry.matches(id)))
                .collect();
            for (id, peers) in &lists {
                registry.record_introductions(id, peers);
            }
            lists
        };
        for (id, peers) in lists {
            self.send(&id, Outbound::Message(ServerMessage::Peers { peers }));
        }
    }

    /// Segments published so far for the playlist of `swarm`.
    fn published(&self, swarm: &SwarmKey) -> u64 {
        let playlist = lock(&self.inner.swarm_playlists).get(swarm).cloned();
        playlist
            .and_then(|p| {
                lock(&self.inner.playlist_stats)
                    .get(&p)
                    .map(|s| s.published)
            })
            .unwrap_or(0)
    }

    /// `report` cut to what could have happened since the connection's previous one.
    fn bound_report(&self, swarm: &SwarmKey, seen: &mut u64, report: &Report) -> (Report, bool) {
        let playlist = lock(&self.inner.swarm_playlists).get(swarm).cloned();
        let stats = playlist
            .and_then(|p| lock(&self.inner.playlist_stats).get(&p).copied())
            .unwrap_or_default();
        let since = stats.published.saturating_sub(*seen);
        *seen = stats.published;
        reports::bound(
            report,
            &ReportLimits::new(since, stats.window, stats.max_size),
        )
    }

    fn update_gauges(&self) {
        let registry = lock(&self.inner.registry);
        self.inner.metrics.peers.set(registry.peer_count() as i64);
        self.inner.metrics.swarms.set(registry.swarm_count() as i64);
    }

    /// Runs one peer's connection until it leaves, breaks a rule or goes silent.
    pub async fn serve<S>(&self, mut ws: WebSocketStream<S>, conn: ConnectionInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let config = self.config();
        let mut budget = MessageBudget::new(
            config.messages_per_second,
            config.message_burst,
            Instant::now(),
        );
        let joined = match tokio::time::timeout(
            JOIN_TIMEOUT,
            self.join(&mut ws, &conn, &config, &mut budget),
        )
        .await
        {
            Ok(Ok(joined)) => joined,
            Ok(Err((code, message))) => return self.close(ws, code, message).await,
            Err(_) => {
                return self
                    .close(ws, ErrorCode::BadMessage, "no join in time".into())
                    .await
            }
        };
        let (id, swarm, mut outbound) = joined;
        if self
            .inner
            .restarting
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.send(&id, Outbound::Restart);
        }
        let reason = self
            .run(&mut ws, &id, &swarm, &mut outbound, &config, &mut budget)
            .await;
        // Leave: forget the peer, tell the others.
        lock(&self.inner.outbound).remove(&id);
        let left = lock(&self.inner.registry).leave(&id);
        if let Some(swarm) = left {
            if lock(&self.inner.registry).swarm_members(&swarm).is_empty() {
                if let Some(playlist) = lock(&self.inner.swarm_playlists).remove(&swarm) {
                    let mut playlists = lock(&self.inner.playlists);
                    if let Some(set) = playlists.get_mut(&playlist) {
                        set.remove(&swarm);
                        if set.is_empty() {
                            playlists.remove(&playlist);
                        }
                    }
                }
            }
            self.refresh_swarm(&swarm);
        }
        self.update_gauges();
        match reason {
            Some((code, message)) => self.close(ws, code, message).await,
            None => {
                let _ = ws.close(None).await;
            }
        }
    }

    async fn close<S>(&self, mut ws: WebSocketStream<S>, code: ErrorCode, message: String)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.inner.metrics.closed(code_label(&code));
        let label = code_label(&code);
        let error = ServerMessage::Error {
            code,
            message: message.clone(),
        };
        if let Ok(text) = serde_json::to_string(&error) {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), ws.send(Message::text(text))).await;
        }
        let close_code = match label {
            "message_too_large" => CloseCode::Size,
            "internal" => CloseCode::Error,
            _ => CloseCode::Policy,
        };
        let frame = CloseFrame {
            code: close_code,
            reason: label.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
    }

    /// Reads the `join`, resolves the rendition and admits the peer.
    async fn join<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        conn: &ConnectionInfo,
        config: &TrackerConfig,
        budget: &mut MessageBudget,
    ) -> Result<(String, SwarmKey, mpsc::Receiver<Outbound>), (ErrorCode, String)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let text = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err((ErrorCode::BadMessage, "signalling is JSON text".into()))
                }
                _ => return Err((ErrorCode::BadMessage, "closed before join".into())),
            }
        };
        check_message(&text, config, budget)?;
        let message = signal::decode_client(&text).map_err(signal_error)?;
        let ClientMessage::Join {
            v,
            stream,
            rendition,
            capabilities,
            token,
            quic,
        } = message
        else {
            return Err((
                ErrorCode::BadMessage,
                "the first message must be join".into(),
            ));
        };
        if v != SIGNAL_VERSION {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!("version {v} is not supported"),
            ));
        }
        if !conn.stream.is_empty() && conn.stream != stream {
            return Err((
                ErrorCode::BadMessage,
                "join names another stream than the URL".into(),
            ));
        }
        let token = token.or_else(|| conn.token.clone());
        if let Err(why) = self
            .inner
            .backend
            .authorize(&stream, token.as_deref(), conn.client)
        {
            return Err((ErrorCode::Unauthorized, why));
        }
        let playlist = self
            .inner
            .backend
            .resolve(&stream, rendition)
            .await
            .map_err(|e| (e.code(), e.to_string()))?;
        let id = new_peer_id();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let swarm = {
            let mut registry = lock(&self.inner.registry);
            let swarm = registry.swarm_key(&stream, rendition, conn.region.as_deref());
            let member = Member {
                id: id.clone(),
                swarm: swarm.clone(),
                region: conn.region.clone(),
                transports: capabilities.transports.clone(),
                quic,
                upload: capabilities.upload,
                joined: 0,
                reputation: Default::default(),
            };
            registry.join(member, swarm.clone()).map_err(|e| match e {
                JoinError::SwarmFull => (ErrorCode::SwarmFull, e.to_string()),
                JoinError::TooManySwarms => (ErrorCode::TooManySwarms, e.to_string()),
                JoinError::DuplicateId => (ErrorCode::Internal, e.to_string()),
            })?;
            swarm
        };
        lock(&self.inner.outbound).insert(id.clone(), tx);
        lock(&self.inner.playlists)
            .entry(playlist.clone())
            .or_default()
            .insert(swarm.clone());
        lock(&self.inner.swarm_playlists).insert(swarm.clone(), playlist.clone());
        self.update_gauges();
        let welcome = ServerMessage::Welcome {
            v: SIGNAL_VERSION,
            peer_id: id.clone(),
            swarm: swarm.label(),
            playlist: playlist.clone(),
            max_peers: config.peers_returned as u32,
        };
        let window = self.inner.backend.digests(&playlist).await;
        {
            let mut stats = lock(&self.inner.playlist_stats);
            let s = stats.entry(playlist.clone()).or_default();
            s.window = s.window.max(window.len() as u64);
            s.max_size = window.iter().map(|d| d.size).fold(s.max_size, u64::max);
        }
        let digests = ServerMessage::Digests {
            playlist: playlist.clone(),
            segments: window,
        };
        for message in [welcome, digests] {
            let text = serde_json::to_string(&message)
                .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
            ws.send(Message::text(text))
                .await
                .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        }
        tracing::debug!(peer = %id, swarm = %swarm.label(), "peer joined");
        self.refresh_swarm(&swarm);
        Ok((id, swarm, rx))
    }

    /// The joined connection's loop. Returns why the tracker closes it, or None for a normal leave.
    async fn run<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        id: &str,
        swarm: &SwarmKey,
        outbound: &mut mpsc::Receiver<Outbound>,
        config: &TrackerConfig,
        budget: &mut MessageBudget,
    ) -> Option<(ErrorCode, String)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut last_heard = Instant::now();
        let mut published_seen = self.published(swarm);
        let mut ping = tokio::time::interval(config.reap_after / 4);
        ping.tick().await;
        loop {
            tokio::select! {
                incoming = ws.next() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => { last_heard = Instant::now(); continue; }
                        Some(Ok(Message::Binary(_))) => return Some((ErrorCode::BadMessage, "signalling is JSON text".into())),
                        Some(Ok(Message::Close(_))) | None => return None,
                        Some(Ok(Message::Frame(_))) => continue,
                        Some(Err(e)) => {
                            let too_large = matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_));
                            return too_large.then(|| (ErrorCode::MessageTooLarge, e.to_string()));
                        }
                    };
                    last_heard = Instant::now();
                    if let Err(reason) = check_message(&text, config, budget) {
                        return Some(reason);
                    }
                    match signal::decode_client(&text) {
                        Ok(ClientMessage::Relay { to, payload }) => {
                            let same_swarm = lock(&self.inner.registry).member(&to).is_some_and(|m| &m.swarm == swarm);
                            if same_swarm {
                                self.send(&to, Outbound::Message(ServerMessage::Relay { from: id.to_owned(), payload }));
                            } else {
                                // Not fatal: the target may just have left.
                                let error = ServerMessage::Error { code: ErrorCode::NotFound, message: format!("no peer {to} in this swarm") };
                                self.send(id, Outbound::Message(error));
                            }
                        }
                        Ok(ClientMessage::Report(report)) => {
                            let (report, cut) = self.bound_report(swarm, &mut published_seen, &report);
                            if cut {
                                self.inner.metrics.reports_cut.inc();
                            }
                            self.inner.metrics.report(&report);
                            let (changed, ignored) = lock(&self.inner.registry).ingest(id, &report.peers);
                            self.inner.metrics.ignored_outcomes.inc_by(ignored as u64);
                            for swarm in changed {
                                self.refresh_swarm(&swarm);
                            }
                        }
                        Ok(ClientMessage::Leave {}) => return None,
                        Ok(ClientMessage::Join { .. }) => return Some((ErrorCode::BadMessage, "already joined".into())),
                        Err(e) => return Some(signal_error(e)),
                    }
                }
                queued = outbound.recv() => match queued {
                    Some(Outbound::Message(message)) => {
                        let Ok(text) = serde_json::to_string(&message) else { continue };
                        if ws.send(Message::text(text)).await.is_err() {
                            return None;
                        }
                    }
                    Some(Outbound::Close(code, message)) => return Some((code, message)),
                    Some(Outbound::Restart) => {
                        self.inner.metrics.closed("restart");
                        let frame = CloseFrame { code: CloseCode::Restart, reason: "restart".into() };
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
                        return None;
                    }
                    None => return None,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= config.reap_after {
                        self.inner.metrics.closed("silent");
                        tracing::debug!(peer = id, "reaping a silent peer");
                        return None;
                    }
                    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}

fn check_message(
    text: &str,
    config: &TrackerConfig,
    budget: &mut MessageBudget,
) -> Result<(), (ErrorCode, String)> {
    if text.len() > config.max_message_bytes {
        return Err((
            ErrorCode::MessageTooLarge,
            format!("messages are limited to {} bytes", config.max_message_bytes),
        ));
    }
    if !budget.take(Instant::now()) {
        return Err((
            ErrorCode::RateLimited,
            format!(
                "more than {} messages per second",
                config.messages_per_second
            ),
        ));
    }
    Ok(())
}

fn signal_error(e: SignalError) -> (ErrorCode, String) {
    match e {
        SignalError::UnsupportedVersion(_) => (ErrorCode::UnsupportedVersion, e.to_string()),
        SignalError::TooLarge { .. } => (ErrorCode::MessageTooLarge, e.to_string()),
        other => (ErrorCode::BadMessage, other.to_string()),
    }
}

fn new_peer_id() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)
}
