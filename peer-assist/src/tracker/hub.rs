//! The tracker's async shell: one task per WebSocket connection. A connection must `join` first; it
//! then gets `welcome`, the recent digests of its rendition and a peer list, and afterwards digests as
//! the gateway caches new segments and a new peer list when its own list changed (at most one per
//! `peer_list_interval`, sent by one pacing task). Abuse (too many or too large messages, malformed
//! JSON, a silent connection) closes the connection with a reason; other peers are not affected. A
//! peer that stops reading (its bounded queue fills, or one send takes over `send_timeout`) is
//! delisted and dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::metrics::TrackerMetrics;
use super::receipts::{Accounts, Checked, Published};
use super::registry::{JoinError, Member, MessageBudget, Registry, SwarmKey, TrackerConfig};
use super::reports::{self, ReportLimits};
use crate::accounting::Rejection;
use crate::protocol::signal::{
    self, ClientMessage, DigestEntry, ErrorCode, Report, ServerMessage, SignalError, SIGNAL_VERSION,
};

/// How long a new connection may take to send its `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Reports whose receipts may be waiting for the ledger at once (a stalled database refuses the
/// rest as `storage` instead of piling them up).
pub const MAX_LEDGER_WRITES: usize = 256;
/// How long the courtesy messages of a close (the `error`, the close frame) may take each.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most digests sent at a join (the newest of the window): what a node core keeps.
const MAX_WINDOW: usize = crate::node::core::MAX_DIGESTS;

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
    /// Where believed receipts are stored; `None`: no ledger, receipts are ignored.
    fn ledger(&self) -> Option<Arc<dyn ReceiptLedger>> {
        None
    }
}

/// The ledger as the tracker sees it (the gateway's `ledger` module).
pub trait ReceiptLedger: Send + Sync + 'static {
    /// Stores receipts the tracker believes, in one transaction; says for each whether it was
    /// stored or why not ([`Rejection::Replay`], [`Rejection::Duplicate`], [`Rejection::Storage`]).
    /// A receipt reported stored is durable.
    fn store(&self, receipts: Vec<Checked>) -> BoxFuture<'static, Vec<Result<(), Rejection>>>;
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
    /// The `shard` query parameter of the WebSocket URL (0 when absent): which shard of the
    /// stream's swarm to join.
    pub shard: u32,
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

/// How other tasks reach a connection: its bounded queue of text messages (serialised once and
/// shared: a digest pushed to a whole swarm is one allocation), and a way to end it at once when the
/// queue is full (a peer that stopped reading).
struct Outlet {
    queue: mpsc::Sender<Utf8Bytes>,
    kill: Arc<Notify>,
}

/// Why a joined connection's loop ended.
enum End {
    /// `leave`, or the socket closed.
    Left,
    /// The tracker closes it, saying why.
    Close(ErrorCode, String),
    /// At `join`: the shard asked for is full; closed with `swarm_full` naming shard `next`.
    Full { message: String, next: u32 },
    /// The peer stopped reading (its queue filled or a send timed out): dropped without courtesies.
    Slow,
    /// The gateway shuts down: close with 1012, the peer joins again elsewhere.
    Restart,
}

struct Inner {
    registry: Mutex<Registry>,
    outbound: Mutex<HashMap<String, Outlet>>,
    /// Media playlist path → the swarms watching it, for digest pushes.
    playlists: Mutex<HashMap<String, HashSet<SwarmKey>>>,
    /// What the tracker knows of each watched playlist's segments, to bound what reports claim.
    playlist_stats: Mutex<HashMap<String, PlaylistStats>>,
    metrics: TrackerMetrics,
    backend: Arc<dyn Backend>,
    /// Wakes the task that sends paced peer lists.
    lists_changed: Arc<Notify>,
    pacer_started: std::sync::Once,
    /// Set by [`Tracker::restart_all`]: every peer, and any that joins afterwards, is closed with
    /// 1012.
    restarting: tokio::sync::watch::Sender<bool>,
    /// Receiver keys: their swarms, who was listed to them, what they reported (receipt checks).
    accounts: Mutex<Accounts>,
    /// Digests published to peers, by segment (receipt checks).
    published: Mutex<Published>,
    /// Reports' receipts being checked and stored at once.
    ledger_writes: Arc<tokio::sync::Semaphore>,
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

/// Sends one text message, giving up after `timeout` (a peer that does not read).
async fn send_text<S>(
    ws: &mut WebSocketStream<S>,
    text: Utf8Bytes,
    timeout: Duration,
) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match tokio::time::timeout(timeout, ws.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Left),
        Err(_) => Err(End::Slow),
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
                playlist_stats: Mutex::new(HashMap::new()),
                metrics: TrackerMetrics::register(registry),
                backend,
                lists_changed: Arc::new(Notify::new()),
                pacer_started: std::sync::Once::new(),
                restarting: tokio::sync::watch::channel(false).0,
                accounts: Mutex::new(Accounts::default()),
                published: Mutex::new(Published::default()),
                ledger_writes: Arc::new(tokio::sync::Semaphore::new(MAX_LEDGER_WRITES)),
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
        self.inner.restarting.send_replace(true);
    }

    /// Pushes the digest of a newly cached segment of `playlist` to every peer watching it.
    pub fn publish_digest(&self, playlist: &str, entry: DigestEntry) {
        lock(&self.inner.published).insert(&entry.id, &entry.sha256, entry.size);
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
        // Serialised once for the whole swarm.
        let text: Utf8Bytes = signal::encode_server(&ServerMessage::Digests {
            playlist: playlist.to_owned(),
            segments: vec![entry],
        })
        .into();
        for swarm in swarms {
            let members: Vec<String> = lock(&self.inner.registry).swarm_members(&swarm).to_vec();
            for id in members {
                self.send(&id, text.clone());
                self.inner.metrics.digests_pushed.inc();
            }
        }
    }

    /// Queues `text` for peer `id`. A peer whose queue is full has stopped reading: it is
    /// delisted at once (no longer offered to others) and its connection ended.
    fn send(&self, id: &str, text: Utf8Bytes) {
        let full = {
            let outbound = lock(&self.inner.outbound);
            match outbound.get(id) {
                Some(outlet) => matches!(
                    outlet.queue.try_send(text),
                    Err(mpsc::error::TrySendError::Full(_))
                ),
                None => false,
            }
        };
        if full {
            tracing::debug!(peer = id, "outbound queue full, dropping the peer");
            self.drop_slow(id);
        }
    }

    /// Ends a peer that stopped reading: out of the registry (its swarm gets new lists) and told
    /// to close without courtesies.
    fn drop_slow(&self, id: &str) {
        let outlet = lock(&self.inner.outbound).remove(id);
        let Some(outlet) = outlet else { return };
        outlet.kill.notify_one();
        self.inner.metrics.closed("slow");
        self.leave(id);
    }

    /// Forgets a peer: the members that were given it get new lists; an empty swarm stops
    /// getting digests.
    fn leave(&self, id: &str) {
        let (left, empty) = {
            let mut registry = lock(&self.inner.registry);
            if let Some(m) = registry.member(id) {
                if let Some(key) = &m.key {
                    lock(&self.inner.accounts).left(key, &m.swarm.label(), unix_ms());
                }
            }
            match registry.leave(id) {
                Some(swarm) => {
                    let empty = registry.swarm_members(&swarm).is_empty();
                    (Some(swarm), empty)
                }
                None => (None, false),
            }
        };
        if let (Some(swarm), true) = (&left, empty) {
            let mut playlists = lock(&self.inner.playlists);
            if let Some(set) = playlists.get_mut(&swarm.playlist) {
                set.remove(swarm);
                if set.is_empty() {
                    playlists.remove(&swarm.playlist);
                    lock(&self.inner.playlist_stats).remove(&swarm.playlist);
                }
            }
        }
        if left.is_some() {
            self.inner.lists_changed.notify_one();
        }
        self.update_gauges();
    }

    /// Starts (once) the task that sends members their changed peer lists, paced.
    fn start_pacer(&self) {
        self.inner.pacer_started.call_once(|| {
            let weak = Arc::downgrade(&self.inner);
            let wake = Arc::clone(&self.inner.lists_changed);
            tokio::spawn(async move {
                loop {
                    let next = {
                        let Some(inner) = weak.upgrade() else { return };
                        let tracker = Tracker { inner };
                        tracker.push_due_lists()
                    };
                    // Wake at the next due list, on news, and at least every second (to notice
                    // that the tracker is gone).
                    let until = tokio::time::Instant::now() + Duration::from_secs(1);
                    let until = next.map_or(until, |n| until.min(n.into()));
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = wake.notified() => {}
                    }
                }
            });
        });
    }

    /// Sends the peer lists that are due; returns when the next one will be.
    fn push_due_lists(&self) -> Option<Instant> {
        let (lists, next) = lock(&self.inner.registry).due_lists(Instant::now());
        for (id, peers) in lists {
            self.record_listed(&id, &peers);
            self.inner.metrics.peer_lists_pushed.inc();
            self.send(
                &id,
                signal::encode_server(&ServerMessage::Peers { peers }).into(),
            );
        }
        next
    }

    /// Segments published so far for `playlist`.
    /// Remembers whose keys were listed to `id`'s key (receipts may credit only those).
    fn record_listed(&self, id: &str, peers: &[signal::PeerInfo]) {
        let receiver = lock(&self.inner.registry)
            .member(id)
            .and_then(|m| m.key.clone());
        if let Some(receiver) = receiver {
            lock(&self.inner.accounts).listed(
                &receiver,
                peers.iter().filter_map(|p| p.key.as_deref()),
                unix_ms(),
            );
        }
    }

    /// Runs [`Tracker::take_receipts`] beside the connection's loop (a slow ledger must not stall
    /// signalling), at most [`MAX_LEDGER_WRITES`] at once: beyond, the receipts are refused as
    /// `storage`.
    fn spawn_receipts(&self, key: Option<String>, receipts: Vec<crate::accounting::Receipt>) {
        if receipts.is_empty() || self.inner.backend.ledger().is_none() {
            return;
        }
        let Ok(permit) = Arc::clone(&self.inner.ledger_writes).try_acquire_owned() else {
            for _ in &receipts {
                self.inner.metrics.receipt_rejected(Rejection::Storage);
            }
            return;
        };
        let tracker = self.clone();
        tokio::spawn(async move {
            tracker.take_receipts(key.as_deref(), receipts).await;
            drop(permit);
        });
    }

    /// Checks the receipts of a report from `key` and stores those believed in the ledger.
    async fn take_receipts(&self, key: Option<&str>, receipts: Vec<crate::accounting::Receipt>) {
        if receipts.is_empty() {
            return;
        }
        let Some(ledger) = self.inner.backend.ledger() else {
            return;
        };
        let metrics = &self.inner.metrics;
        let Some(key) = key else {
            for _ in &receipts {
                metrics.receipt_rejected(Rejection::Receiver);
            }
            return;
        };
        let now = unix_ms();
        let mut believed = Vec::new();
        {
            let published = lock(&self.inner.published);
            let mut accounts = lock(&self.inner.accounts);
            for r in &receipts {
                match accounts.check(r, key, &published, now) {
                    Ok(checked) => believed.push(checked),
                    Err(reason) => {
                        tracing::debug!(%reason, segment = %r.segment, "receipt refused");
                        metrics.receipt_rejected(reason);
                    }
                }
            }
        }
        if believed.is_empty() {
            return;
        }
        let bytes: Vec<u64> = believed.iter().map(|c| c.receipt.bytes).collect();
        let outcomes = ledger.store(believed).await;
        for (i, b) in bytes.into_iter().enumerate() {
            match outcomes.get(i).copied().unwrap_or(Err(Rejection::Storage)) {
                Ok(()) => {
                    metrics.receipts_accepted.inc();
                    metrics.receipted_bytes.inc_by(b);
                }
                Err(reason) => {
                    lock(&self.inner.accounts).refund(key, b);
                    metrics.receipt_rejected(reason);
                }
            }
        }
    }

    fn published(&self, playlist: &str) -> u64 {
        lock(&self.inner.playlist_stats)
            .get(playlist)
            .map_or(0, |s| s.published)
    }

    /// `report` cut to what could have happened since the connection's previous one.
    fn bound_report(&self, swarm: &SwarmKey, seen: &mut u64, report: &Report) -> (Report, bool) {
        let stats = lock(&self.inner.playlist_stats)
            .get(&swarm.playlist)
            .copied()
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

    /// Runs one peer's connection until it leaves, breaks a rule, goes silent or stops reading.
    pub async fn serve<S>(&self, mut ws: WebSocketStream<S>, conn: ConnectionInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.start_pacer();
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
            Ok(Err(End::Close(code, message))) => return self.close(ws, code, message).await,
            Ok(Err(End::Full { message, next })) => {
                return self
                    .close_with(ws, ErrorCode::SwarmFull, message, Some(next))
                    .await
            }
            Ok(Err(End::Slow)) => {
                self.inner.metrics.closed("slow");
                return;
            }
            Ok(Err(End::Left | End::Restart)) => return,
            Err(_) => {
                return self
                    .close(ws, ErrorCode::BadMessage, "no join in time".into())
                    .await
            }
        };
        let (id, swarm, mut outbound, kill) = joined;
        let mut restart = self.inner.restarting.subscribe();
        let end = if *restart.borrow_and_update() {
            End::Restart
        } else {
            self.run(
                &mut ws,
                &id,
                &swarm,
                &mut outbound,
                (&kill, &mut restart),
                &config,
                &mut budget,
            )
            .await
        };
        // Leave: forget the peer, tell the others (a slow peer is already gone).
        lock(&self.inner.outbound).remove(&id);
        self.leave(&id);
        match end {
            End::Close(code, message) => self.close(ws, code, message).await,
            End::Full { message, next } => {
                self.close_with(ws, ErrorCode::SwarmFull, message, Some(next))
                    .await
            }
            End::Left => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
            }
            End::Slow => {}
            End::Restart => {
                self.inner.metrics.closed("restart");
                let frame = CloseFrame {
                    code: CloseCode::Restart,
                    reason: "restart".into(),
                };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
            }
        }
    }

    async fn close<S>(&self, ws: WebSocketStream<S>, code: ErrorCode, message: String)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.close_with(ws, code, message, None).await
    }

    /// [`Self::close`], the `error` naming a shard to join instead.
    async fn close_with<S>(
        &self,
        mut ws: WebSocketStream<S>,
        code: ErrorCode,
        message: String,
        shard: Option<u32>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.inner.metrics.closed(code_label(&code));
        let label = code_label(&code);
        let error = ServerMessage::Error {
            code,
            message: message.clone(),
            shard,
        };
        let text = signal::encode_server(&error);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.send(Message::text(text))).await;
        let close_code = match label {
            "message_too_large" => CloseCode::Size,
            "internal" => CloseCode::Error,
            _ => CloseCode::Policy,
        };
        let frame = CloseFrame {
            code: close_code,
            reason: label.into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
    }

    /// Reads the `join`, resolves the rendition, admits the peer and sends it `welcome`, the
    /// digest window and its first peer list.
    #[allow(clippy::type_complexity)]
    async fn join<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        conn: &ConnectionInfo,
        config: &TrackerConfig,
        budget: &mut MessageBudget,
    ) -> Result<(String, SwarmKey, mpsc::Receiver<Utf8Bytes>, Arc<Notify>), End>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let close = |(code, message): (ErrorCode, String)| End::Close(code, message);
        let text = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    return Err(End::Close(
                        ErrorCode::BadMessage,
                        "signalling is JSON text".into(),
                    ))
                }
                _ => {
                    return Err(End::Close(
                        ErrorCode::BadMessage,
                        "closed before join".into(),
                    ))
                }
            }
        };
        check_message(&text, config, budget).map_err(close)?;
        let message = signal::decode_client(&text).map_err(|e| close(signal_error(e)))?;
        let ClientMessage::Join {
            v,
            stream,
            rendition,
            capabilities,
            token,
            quic,
            key,
        } = message
        else {
            return Err(End::Close(
                ErrorCode::BadMessage,
                "the first message must be join".into(),
            ));
        };
        if v != SIGNAL_VERSION {
            return Err(End::Close(
                ErrorCode::UnsupportedVersion,
                format!("version {v} is not supported"),
            ));
        }
        if !conn.stream.is_empty() && conn.stream != stream {
            return Err(End::Close(
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
            return Err(End::Close(ErrorCode::Unauthorized, why));
        }
        // The swarm is the media playlist the gateway serves, whatever the spelling of `stream`.
        let playlist = self
            .inner
            .backend
            .resolve(&stream, rendition)
            .await
            .map_err(|e| End::Close(e.code(), e.to_string()))?;
        let id = new_peer_id();
        let (tx, rx) = mpsc::channel(config.outbound_queue.max(1));
        let kill = Arc::new(Notify::new());
        let swarm = {
            let mut registry = lock(&self.inner.registry);
            let swarm = registry.swarm_key(&playlist, conn.region.as_deref(), conn.shard);
            let member = Member {
                id: id.clone(),
                swarm: swarm.clone(),
                region: conn.region.clone(),
                transports: capabilities.transports.clone(),
                quic,
                upload: capabilities.upload,
                joined: 0,
                reputation: Default::default(),
                address: conn.client,
                listed: Vec::new(),
                listed_at: None,
                key: key.clone(),
                upload_rate: capabilities
                    .upload_rate
                    .filter(|&r| r > 0)
                    .map(|r| r.min(signal::MAX_UPLOAD_RATE)),
            };
            registry.join(member, swarm).map_err(|e| match e {
                JoinError::SwarmFull { next, .. } => End::Full {
                    message: e.to_string(),
                    next,
                },
                JoinError::TooManySwarms | JoinError::TooManySwarmsFromAddress => {
                    End::Close(ErrorCode::TooManySwarms, e.to_string())
                }
                JoinError::TooManyFromAddress => End::Close(ErrorCode::RateLimited, e.to_string()),
                JoinError::DuplicateId => End::Close(ErrorCode::Internal, e.to_string()),
            })?
        };
        lock(&self.inner.outbound).insert(
            id.clone(),
            Outlet {
                queue: tx,
                kill: Arc::clone(&kill),
            },
        );
        lock(&self.inner.playlists)
            .entry(playlist.clone())
            .or_default()
            .insert(swarm.clone());
        if let Some(key) = &key {
            lock(&self.inner.accounts).joined(key, &swarm.label(), unix_ms());
        }
        self.update_gauges();
        self.inner.lists_changed.notify_one();
        match self.greet(ws, &id, &swarm, &playlist, config).await {
            Ok(()) => {
                tracing::debug!(peer = %id, swarm = %swarm.label(), "peer joined");
                Ok((id, swarm, rx, kill))
            }
            Err(end) => {
                lock(&self.inner.outbound).remove(&id);
                self.leave(&id);
                Err(end)
            }
        }
    }

    /// `welcome`, the digest window and the first peer list of a peer that just joined.
    async fn greet<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        id: &str,
        swarm: &SwarmKey,
        playlist: &str,
        config: &TrackerConfig,
    ) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let welcome = ServerMessage::Welcome {
            v: SIGNAL_VERSION,
            peer_id: id.to_owned(),
            swarm: swarm.label(),
            playlist: playlist.to_owned(),
            max_peers: u32::try_from(config.peers_returned).unwrap_or(u32::MAX),
        };
        send_text(
            ws,
            signal::encode_server(&welcome).into(),
            config.send_timeout,
        )
        .await?;
        let window = self.inner.backend.digests(playlist).await;
        {
            let mut published = lock(&self.inner.published);
            for d in &window {
                published.insert(&d.id, &d.sha256, d.size);
            }
        }
        {
            let mut stats = lock(&self.inner.playlist_stats);
            let s = stats.entry(playlist.to_owned()).or_default();
            s.window = s.window.max(window.len() as u64);
            s.max_size = window.iter().map(|d| d.size).fold(s.max_size, u64::max);
        }
        // A window longer than a message may list (a long VOD, a file of byte ranges) goes in
        // several messages, its newest MAX_WINDOW entries at most; an empty one is still sent
        // (it says "nothing cached yet").
        let mut start = window.len().saturating_sub(MAX_WINDOW);
        loop {
            let end = (start + signal::MAX_LIST_LEN).min(window.len());
            let digests = ServerMessage::Digests {
                playlist: playlist.to_owned(),
                segments: window.get(start..end).unwrap_or_default().to_vec(),
            };
            send_text(
                ws,
                signal::encode_server(&digests).into(),
                config.send_timeout,
            )
            .await?;
            start = end;
            if start >= window.len() {
                break;
            }
        }
        let peers = lock(&self.inner.registry).first_list(id, Instant::now());
        self.record_listed(id, &peers);
        self.inner.metrics.peer_lists_pushed.inc();
        let list = ServerMessage::Peers { peers };
        send_text(ws, signal::encode_server(&list).into(), config.send_timeout).await
    }

    /// The joined connection's loop. Returns why it ended.
    #[allow(clippy::too_many_arguments)]
    async fn run<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        id: &str,
        swarm: &SwarmKey,
        outbound: &mut mpsc::Receiver<Utf8Bytes>,
        (kill, restart): (&Notify, &mut tokio::sync::watch::Receiver<bool>),
        config: &TrackerConfig,
        budget: &mut MessageBudget,
    ) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut last_heard = Instant::now();
        let key = lock(&self.inner.registry)
            .member(id)
            .and_then(|m| m.key.clone());
        let mut published_seen = self.published(&swarm.playlist);
        let mut ping = tokio::time::interval(config.reap_after / 4);
        ping.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = kill.notified() => return End::Slow,
                Ok(()) = restart.changed() => if *restart.borrow_and_update() { return End::Restart },
                incoming = ws.next() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => { last_heard = Instant::now(); continue; }
                        Some(Ok(Message::Binary(_))) => return End::Close(ErrorCode::BadMessage, "signalling is JSON text".into()),
                        Some(Ok(Message::Close(_))) | None => return End::Left,
                        Some(Ok(Message::Frame(_))) => continue,
                        Some(Err(e)) => {
                            let too_large = matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_));
                            return if too_large { End::Close(ErrorCode::MessageTooLarge, e.to_string()) } else { End::Left };
                        }
                    };
                    last_heard = Instant::now();
                    if let Err((code, message)) = check_message(&text, config, budget) {
                        return End::Close(code, message);
                    }
                    match signal::decode_client(&text) {
                        Ok(ClientMessage::Relay { to, payload }) => {
                            let same_swarm = lock(&self.inner.registry).member(&to).is_some_and(|m| &m.swarm == swarm);
                            if same_swarm {
                                let relay = ServerMessage::Relay { from: id.to_owned(), payload };
                                self.send(&to, signal::encode_server(&relay).into());
                            } else {
                                // Not fatal: the target may just have left.
                                let error = ServerMessage::Error { code: ErrorCode::NotFound, message: format!("no peer {to} in this swarm"), shard: None };
                                self.send(id, signal::encode_server(&error).into());
                            }
                        }
                        Ok(ClientMessage::Report(mut report)) => {
                            let receipts = std::mem::take(&mut report.receipts);
                            let (report, cut) = self.bound_report(swarm, &mut published_seen, &report);
                            if let Some(key) = &key {
                                lock(&self.inner.accounts).reported(key, report.p2p_bytes);
                            }
                            if cut {
                                self.inner.metrics.reports_cut.inc();
                            }
                            self.inner.metrics.report(&report);
                            let changed = {
                                let mut registry = lock(&self.inner.registry);
                                let (changed, ignored) = registry.ingest(id, &report.peers);
                                self.inner.metrics.ignored_outcomes.inc_by(ignored as u64);
                                for swarm in &changed {
                                    registry.mark_swarm(swarm);
                                }
                                let moved = report
                                    .upload_rate
                                    .is_some_and(|rate| registry.set_upload_rate(id, rate));
                                !changed.is_empty() || moved
                            };
                            if changed {
                                self.inner.lists_changed.notify_one();
                            }
                            self.spawn_receipts(key.clone(), receipts);
                        }
                        Ok(ClientMessage::Leave {}) => return End::Left,
                        Ok(ClientMessage::Join { .. }) => return End::Close(ErrorCode::BadMessage, "already joined".into()),
                        Err(e) => {
                            let (code, message) = signal_error(e);
                            return End::Close(code, message);
                        }
                    }
                }
                queued = outbound.recv() => match queued {
                    Some(text) => {
                        if let Err(end) = send_text(ws, text, config.send_timeout).await {
                            if matches!(end, End::Slow) {
                                self.inner.metrics.closed("slow");
                                tracing::debug!(peer = id, "a send timed out, dropping the peer");
                            }
                            return end;
                        }
                    }
                    None => return End::Left,
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= config.reap_after {
                        self.inner.metrics.closed("silent");
                        tracing::debug!(peer = id, "reaping a silent peer");
                        return End::Left;
                    }
                    match tokio::time::timeout(config.send_timeout, ws.send(Message::Ping(Vec::new().into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Left,
                        Err(_) => {
                            self.inner.metrics.closed("slow");
                            return End::Slow;
                        }
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

/// Unix time in milliseconds (receipts carry wall-clock times).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn new_peer_id() -> String {
    let bytes: [u8; 8] = rand::random();
    hex::encode(bytes)
}
