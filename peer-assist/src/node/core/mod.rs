//! The peer node without I/O, in the manner of `quinn-proto` under `quinn`.
//!
//! [`NodeCore`] holds every decision a peer makes: which peers to link to, where each segment comes
//! from (the [`Scheduler`]), when a peer is too slow and HTTP takes over, what a peer's bytes must
//! hash to before they are used, who is banned, what to upload and how fast, what to report. It
//! never reads a clock, opens a socket or spawns a task. The driver (`node::driver`, or a test
//! harness on virtual time) feeds it [`Input`]s with the current instant ([`NodeCore::handle`]),
//! wakes it at [`NodeCore::poll_timeout`] ([`NodeCore::handle_timeout`]), and carries out the
//! [`Output`]s it queues ([`NodeCore::poll_output`]): connect, send a frame, close a link, an HTTP
//! GET, hash some bytes, a signalling message, deliver a segment.
//!
//! Iteration orders are deterministic (links by [`LinkId`], segments by id or play order), so the
//! same inputs at the same instants always give the same outputs: the browser engine replays the
//! traces this core produces (`tests/vectors/node_traces.json`).

mod links;
mod store;
mod transfers;
mod uploads;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};

use crate::accounting::{NodeKey, Receipt, ReceiptBody};
use crate::protocol::frame::{Frame, RECOMMENDED_CHUNK_LEN};
use crate::protocol::signal::{
    ClientMessage, FailureCause, PeerInfo, PeerOutcome, QuicAddress, Report, ServerMessage,
    Transport,
};
use crate::scheduler::{
    Decision, Need, PeerState, Scheduler, SchedulerConfig, Seniority, Transfer, TRANSFER_POLL,
    WAIT_POLL,
};

use super::http::HttpError;
use super::playback::Timeline;
use super::{HttpCause, SegmentRecord, Source, Summary, TestBehaviour};
use crate::hls::SegmentList;
pub use links::{CONNECT_TIMEOUT, LINK_FALLBACK, LINK_RETRY_FIRST, LINK_RETRY_MAX};
use store::Store;
pub use uploads::{TokenBucket, LINK_WINDOW};

/// Segments ahead of the playhead a playing node works on at once.
pub const LOOKAHEAD: usize = 8;
/// Have frames go out at most this often (the first change at once).
pub const HAVE_INTERVAL: Duration = Duration::from_millis(100);
/// Running work for a segment nobody waits for any more is stopped after this.
pub const ABANDONED_GRACE: Duration = Duration::from_secs(3);
/// Announced segments fetched ahead of a driving player, at most (the newest kept).
pub const MAX_ANNOUNCED: usize = 3;
/// A playing or seeding node tries a failed HTTP fetch again after this.
pub const HTTP_RETRY: Duration = Duration::from_millis(500);
/// A playlist reload that failed is tried again after this.
pub const PLAYLIST_RETRY: Duration = Duration::from_millis(500);
/// Largest segment accepted from a peer (by the gateway's size).
pub const MAX_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// Digests remembered (oldest forgotten first).
pub const MAX_DIGESTS: usize = 4096;
/// Segment ids whose first sighting is remembered (for "fresh live").
pub const MAX_FIRST_SEEN: usize = 4096;
/// Segment records a summary keeps (the most recent).
pub const MAX_LOG: usize = 20_000;
/// Peers one report speaks of at most; the rest wait for the next report.
pub const MAX_REPORT_PEERS: usize = 256;
/// Signed receipts waiting for a report, at most (the oldest are dropped first).
pub const MAX_PENDING_RECEIPTS: usize = 1024;

/// A link, named by the driver when it reports the link up. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// One caller waiting for a segment (driven mode), named by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// A hashing job handed to the driver ([`Output::Verify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What the node does with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Follow the live playlist and play it like a player (deadlines from the playhead).
    Play,
    /// Fetch the whole playlist window over HTTP at once to serve others; do not play.
    Seed,
    /// Fetch only what callers ask for ([`Input::Need`]), by the deadlines they give: a player
    /// drives the node (the load-test harness, the browser engine).
    Driven,
}

/// The core's settings (the I/O settings stay with the driver).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub mode: Mode,
    /// Transports this node links over.
    pub transports: Vec<Transport>,
    /// Upload to other peers at all.
    pub upload: bool,
    /// Upload cap in bytes per second.
    pub upload_rate: u64,
    /// The upload capacity declared in `join` (bytes per second), see `NodeConfig::capacity`.
    pub capacity: Option<u64>,
    /// No upload until the swarm has at least this many peers (this one included).
    pub privacy_floor: usize,
    /// Segments kept to serve others, at most.
    pub window: usize,
    /// Bytes of segments kept to serve others, at most.
    pub max_store_bytes: u64,
    /// Peer links kept open (the tracker's `max_peers` lowers it).
    pub max_links: usize,
    /// Time from joining to the planned start of playback ([`Mode::Play`]).
    pub startup: Duration,
    /// Delivery reports are sent this often.
    pub report_every: Duration,
    pub scheduler: SchedulerConfig,
    pub test: TestBehaviour,
    /// Sign a receipt for every verified delivery from a peer with a key (docs/LEDGER.md);
    /// `None`: no receipts.
    pub receipts: Option<ReceiptSigner>,
    /// Serve a segment to other peers while it still arrives from a peer (its last byte once it
    /// is verified): a live segment spreads through a swarm at the pace of the slowest uplink on
    /// its path instead of a whole segment's transfer per hop.
    pub forward_arriving: bool,
    /// Driven: when a digest announces one newly cached segment while the player plays, fetch it
    /// ahead of the player's ask: from peers only (never HTTP before the player asks), or over
    /// HTTP at once if this node is one of the swarm's seeders. A player learns of a new live
    /// segment at its next playlist reload, up to a target duration after the gateway had it;
    /// this time is the swarm's to spread it.
    pub prefetch_announced: bool,
}

/// What a node signs receipts with.
#[derive(Debug, Clone)]
pub struct ReceiptSigner {
    pub key: std::sync::Arc<NodeKey>,
    /// Unix time (ms) at an instant, to turn the core's instants into receipt times.
    pub clock: WallClock,
    /// The first half of every nonce (random per run); the second half counts receipts.
    pub nonce_prefix: [u8; 8],
}

impl ReceiptSigner {
    /// A signer with `key`, the system clock and a random nonce prefix.
    pub fn new(key: std::sync::Arc<NodeKey>) -> Self {
        Self {
            key,
            clock: WallClock::now(),
            nonce_prefix: rand::random(),
        }
    }
}

/// A pairing of an [`Instant`] with the Unix time in milliseconds at that instant.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    pub at: Instant,
    pub unix_ms: u64,
}

impl WallClock {
    /// The system clock now (the only place the node reads wall time).
    pub fn now() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            at: Instant::now(),
            unix_ms,
        }
    }

    /// The Unix time (ms) at `now`.
    pub fn unix_ms_at(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis();
        let before = self.at.saturating_duration_since(now).as_millis();
        let since = u64::try_from(since).unwrap_or(u64::MAX);
        let before = u64::try_from(before).unwrap_or(u64::MAX);
        self.unix_ms.saturating_add(since).saturating_sub(before)
    }
}

/// Something that happened, for [`NodeCore::handle`].
#[derive(Debug, Clone)]
pub enum Input {
    /// A message from the tracker.
    Signal(ServerMessage),
    /// The tracker connection ended.
    SignalClosed,
    /// A link to `peer` is open and its handshake done. `initiated`: this node connected.
    /// `max_frame`: the largest frame (header included) the link carries. `fingerprint`: the
    /// certificate the peer proved it holds (QUIC), which must be the one the tracker published
    /// for `peer`.
    LinkUp {
        link: LinkId,
        peer: String,
        initiated: bool,
        max_frame: usize,
        fingerprint: Option<String>,
    },
    /// A link ended (either side, or the transport).
    LinkDown { link: LinkId },
    /// An [`Output::Connect`] did not give a link.
    ConnectFailed { peer: String },
    /// A frame from a peer.
    Frame { link: LinkId, frame: Frame },
    /// `bytes` of frames queued on `link` were handed to the transport (upload flow control).
    Written { link: LinkId, bytes: u64 },
    /// The transport's estimate of the rate `link`'s path carries, bytes/s (QUIC: congestion
    /// window over smoothed round trip), taken while it was sending. While this node uploads on
    /// that link, it is a sample of this node's uplink.
    PathRate { link: LinkId, rate: u64 },
    /// The answer to [`Output::FetchPlaylist`], or a playlist the driving player loaded.
    Playlist(Result<SegmentList, HttpError>),
    /// The answer to [`Output::HttpGet`].
    Http {
        id: String,
        from: u64,
        result: Result<Bytes, HttpError>,
    },
    /// The SHA-256 of the bytes of [`Output::Verify`].
    Verified { ticket: Ticket, sha256: [u8; 32] },
    /// A caller needs segment `id` by `plays_at` ([`Mode::Driven`]). The same waiter again
    /// updates its deadline. `p2p: false`: straight to HTTP (another rendition, an init section).
    Need {
        waiter: WaiterId,
        id: String,
        plays_at: Instant,
        p2p: bool,
    },
    /// The caller stopped waiting.
    Abandon { waiter: WaiterId },
    /// Leave: last report, `leave`, every link closed.
    Stop,
}

/// Something for the driver to do, from [`NodeCore::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a link to `peer` over `transport` (QUIC: at `quic`), then report
    /// [`Input::LinkUp`] (`initiated: true`) or [`Input::ConnectFailed`].
    Connect {
        peer: String,
        transport: Transport,
        quic: Option<QuicAddress>,
    },
    /// Send a frame on a link, then report [`Input::Written`] with its encoded length.
    Send { link: LinkId, frame: Frame },
    /// Close a link (no [`Input::LinkDown`] is needed for it).
    Close { link: LinkId, reason: &'static str },
    /// GET segment `id` from the gateway from byte `from` (a Range request when > 0).
    HttpGet { id: String, from: u64 },
    /// Stop the HTTP fetch of `id` (its answer, if it comes, is ignored).
    HttpCancel { id: String },
    /// Reload the media playlist ([`Mode::Play`], [`Mode::Seed`]).
    FetchPlaylist,
    /// Hash `bytes` (SHA-256) and report [`Input::Verified`].
    Verify { ticket: Ticket, bytes: Bytes },
    /// Send a message to the tracker.
    Signal(ClientMessage),
    /// Hand segment `id` to the callers waiting for it.
    Deliver {
        waiters: Vec<WaiterId>,
        id: String,
        result: Result<Delivery, HttpError>,
    },
}

/// A segment handed to its callers: verified against the gateway's digest when peers sent any of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub bytes: Bytes,
    /// Where it came from (a peer transfer finished over HTTP counts as HTTP).
    pub source: Source,
    /// When the transfer that produced it started and ended (for bandwidth estimation). For a
    /// segment from the store: ending now, as long as the transfer that stored it took. For a
    /// peer's prefix joined with an HTTP rest: the HTTP fetch's (the peer's pace says nothing of
    /// the viewer's HTTP path, and a prefix fetched ahead of the player would make it look slow).
    pub started: Instant,
    pub finished: Instant,
    /// It was in the store already (no transfer now).
    pub from_store: bool,
}

/// A segment transfer from a peer.
#[derive(Debug)]
struct PeerTransfer {
    link: LinkId,
    peer: String,
    request_id: u32,
    started: Instant,
    last_progress: Instant,
    size: Option<u64>,
    data: BytesMut,
    /// Complete and being hashed: the ticket, and when the last byte arrived.
    verifying: Option<(Ticket, Instant)>,
}

/// An HTTP fetch of a segment.
#[derive(Debug)]
struct HttpFetch {
    from: u64,
    /// The rule that started it.
    cause: HttpCause,
    started: Instant,
    /// The body arrived and is being hashed.
    verifying: bool,
}

/// The work on one segment.
#[derive(Debug, Default)]
struct Work {
    transfer: Option<PeerTransfer>,
    http: Option<HttpFetch>,
    /// The first bytes of the segment from a peer transfer HTTP took over: (peer, bytes).
    /// They are joined with the HTTP rest and verified as a whole.
    partial: Option<(String, Bytes)>,
    /// No new HTTP fetch before this (after a failed one).
    retry_at: Option<Instant>,
}

/// Callers waiting for one segment ([`Mode::Driven`]).
#[derive(Debug, Default)]
struct Waiting {
    waiters: BTreeMap<WaiterId, Instant>,
    /// Straight to HTTP, never peers.
    http_only: bool,
    /// When the last waiter left.
    abandoned_at: Option<Instant>,
}

impl Waiting {
    fn plays_at(&self) -> Option<Instant> {
        self.waiters.values().min().copied()
    }
}

/// What a hashing job was for.
#[derive(Debug)]
enum Job {
    /// A complete peer transfer of `id`.
    Peer { id: String },
    /// An HTTP body of `id` (from `from`), joined with `prefix` peer bytes: (peer, length).
    Http {
        id: String,
        from: u64,
        prefix: Option<(String, u64)>,
        http_started: Instant,
        whole: Bytes,
    },
}

/// A FIFO-bounded map.
#[derive(Debug)]
struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct NodeCore {
    config: CoreConfig,
    scheduler: Scheduler,
    me: String,
    started: Instant,
    outputs: VecDeque<Output>,
    stopped: bool,

    // The swarm.
    /// The latest peer list (this node excluded), best first.
    listed: Vec<PeerInfo>,
    /// When each listed peer was first listed.
    listed_since: HashMap<String, Instant>,
    /// The peers of the first `peers` message after `welcome`: older than this node.
    elders: Option<HashSet<String>>,
    /// The tracker's cap on links.
    max_peers: Option<usize>,
    links: BTreeMap<LinkId, links::Link>,
    link_of: HashMap<String, LinkId>,
    connecting: HashMap<String, Instant>,
    retry: HashMap<String, links::Retry>,
    banned: HashSet<String>,
    /// Peers whose bytes, taken over by HTTP, made a whole that failed the check once: a second
    /// time bans them (see `http_verified`).
    prefix_strikes: HashSet<String>,
    next_connect_check: Option<Instant>,

    // Segments.
    digests: Bounded<([u8; 32], u64)>,
    first_seen: Bounded<Instant>,
    live: bool,
    target: Duration,
    store: Store,
    work: BTreeMap<String, Work>,
    waiting: BTreeMap<String, Waiting>,
    /// Driven, [`CoreConfig::prefetch_announced`]: segments a digest announced that the player
    /// has not asked for yet, and when (oldest first, at most [`MAX_ANNOUNCED`]).
    announced: VecDeque<(String, Instant)>,
    /// When the driving player last asked for a segment.
    last_need: Option<Instant>,
    waiter_segment: HashMap<WaiterId, String>,
    requests: HashMap<u32, String>,
    next_request: u32,
    jobs: HashMap<Ticket, Job>,
    next_ticket: u64,
    /// Measured HTTP rate (EWMA), bytes/s.
    http_rate: Option<f64>,
    /// When to run the scheduler again (`None`: at once).
    next_work: Option<Instant>,
    dirty: bool,

    // Playing and seeding.
    timeline: Timeline,
    sequence_of: HashMap<String, u64>,
    /// Segments of the current playlist, in order (seeding, lookahead).
    playlist_ids: Vec<String>,
    last_playlist_id: Option<String>,
    next_playlist: Option<Instant>,
    playlist_in_flight: bool,

    // Uploads.
    uploads: VecDeque<uploads::Upload>,
    /// Uploads sent whole so far.
    uploads_sent: u64,
    bucket: TokenBucket,
    next_upload: Option<Instant>,
    have_dirty: bool,
    last_have: Option<Instant>,

    // Accounting.
    summary: Summary,
    reported: Summary,
    peer_deltas: BTreeMap<String, PeerOutcome>,
    next_report: Instant,
    /// The swarm of the current tracker session (its `welcome`), named in receipts.
    swarm: String,
    /// Public keys of the peers ever listed, by peer id (this session and earlier ones).
    peer_keys: HashMap<String, String>,
    /// Signed receipts not yet reported.
    receipts: VecDeque<Receipt>,
    receipts_made: u64,
    /// The newest samples of this node's uplink (see [`Input::PathRate`]), bytes/s.
    uplink_samples: VecDeque<u64>,
}

impl NodeCore {
    /// A node that joined as `me` at `now`.
    pub fn new(config: CoreConfig, me: &str, now: Instant) -> Self {
        let rate = upload_cap(&config);
        let playing = matches!(config.mode, Mode::Play | Mode::Seed);
        let mut core = Self {
            scheduler: Scheduler::new(config.scheduler.clone()),
            me: me.to_owned(),
            started: now,
            outputs: VecDeque::new(),
            stopped: false,
            listed: Vec::new(),
            listed_since: HashMap::new(),
            elders: None,
            max_peers: None,
            links: BTreeMap::new(),
            link_of: HashMap::new(),
            connecting: HashMap::new(),
            retry: HashMap::new(),
            banned: HashSet::new(),
            prefix_strikes: HashSet::new(),
            next_connect_check: None,
            digests: Bounded::new(MAX_DIGESTS),
            first_seen: Bounded::new(MAX_FIRST_SEEN),
            live: true,
            target: Duration::from_secs(2),
            store: Store::new(config.window, config.max_store_bytes),
            work: BTreeMap::new(),
            waiting: BTreeMap::new(),
            announced: VecDeque::new(),
            last_need: None,
            waiter_segment: HashMap::new(),
            requests: HashMap::new(),
            next_request: 1,
            jobs: HashMap::new(),
            next_ticket: 1,
            http_rate: None,
            next_work: Some(now),
            dirty: false,
            timeline: Timeline::new(now + config.startup),
            sequence_of: HashMap::new(),
            playlist_ids: Vec::new(),
            last_playlist_id: None,
            next_playlist: playing.then_some(now),
            playlist_in_flight: false,
            uploads: VecDeque::new(),
            uploads_sent: 0,
            bucket: TokenBucket::new(
                rate as f64,
                // Half a second of the cap, at least one chunk.
                (rate as f64 / 2.0).max(RECOMMENDED_CHUNK_LEN as f64),
                now,
            ),
            next_upload: None,
            have_dirty: false,
            last_have: None,
            summary: Summary {
                peer_id: me.to_owned(),
                node_key: config
                    .receipts
                    .as_ref()
                    .map(|r| r.key.public_hex().to_owned()),
                ..Summary::default()
            },
            reported: Summary::default(),
            peer_deltas: BTreeMap::new(),
            next_report: now + config.report_every,
            swarm: String::new(),
            peer_keys: HashMap::new(),
            receipts: VecDeque::new(),
            receipts_made: 0,
            uplink_samples: VecDeque::new(),
            config,
        };
        core.pace_uploads(now);
        core
    }

    /// The core's settings.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// What the node does with the stream.
    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    /// This node's peer id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether `peer` was caught lying (its relays are ignored).
    pub fn is_banned(&self, peer: &str) -> bool {
        self.banned.contains(peer)
    }

    /// Uploads running now.
    pub fn active_uploads(&self) -> usize {
        self.uploads.len()
    }

    /// Transfers from peers running right now (requested and not yet ended or abandoned).
    pub fn active_transfers(&self) -> usize {
        self.work.values().filter(|w| w.transfer.is_some()).count()
    }

    /// Bytes uploaded so far.
    pub fn uploaded_bytes(&self) -> u64 {
        self.summary.uploaded_bytes
    }

    /// Open links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Whether [`Input::Stop`] was handled.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The next output to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`NodeCore::handle_timeout`] must be called next (`None`: only on input).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        [
            self.next_work,
            Some(self.next_report),
            self.next_playlist,
            self.next_upload,
            self.next_have(),
            self.next_connect_check,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one input at `now`.
    pub fn handle(&mut self, input: Input, now: Instant) {
        if self.stopped {
            return;
        }
        match input {
            Input::Signal(message) => self.on_signal(message, now),
            Input::SignalClosed => {
                tracing::info!(peer = %self.me, "tracker connection closed: HTTP and open links until the next welcome");
            }
            Input::LinkUp {
                link,
                peer,
                initiated,
                max_frame,
                fingerprint,
            } => self.on_link_up(link, peer, initiated, max_frame, fingerprint, now),
            Input::LinkDown { link } => self.on_link_down(link, now),
            Input::ConnectFailed { peer } => self.on_connect_failed(&peer, now),
            Input::Frame { link, frame } => self.on_frame(link, frame, now),
            Input::Written { link, bytes } => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.unacked = l.unacked.saturating_sub(bytes);
                }
            }
            Input::PathRate { link, rate } => self.on_path_rate(link, rate, now),
            Input::Playlist(result) => self.on_playlist(result, now),
            Input::Http { id, from, result } => self.on_http(id, from, result, now),
            Input::Verified { ticket, sha256 } => self.on_verified(ticket, sha256, now),
            Input::Need {
                waiter,
                id,
                plays_at,
                p2p,
            } => self.on_need(waiter, id, plays_at, p2p, now),
            Input::Abandon { waiter } => self.on_abandon(waiter, now),
            Input::Stop => return self.stop(now),
        }
        self.step(now);
    }

    /// Called at (or after) [`NodeCore::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if now >= self.next_report {
            self.send_report();
            self.next_report = now + self.config.report_every;
        }
        if self.next_playlist.is_some_and(|at| now >= at) && !self.playlist_in_flight {
            self.next_playlist = None;
            self.playlist_in_flight = true;
            self.outputs.push_back(Output::FetchPlaylist);
        }
        if self.next_connect_check.is_some_and(|at| now >= at) {
            self.connect_peers(now);
        }
        self.step(now);
    }

    /// What the node did, as of `now`.
    pub fn summary(&mut self, now: Instant) -> Summary {
        self.timeline.advance(now);
        let mut summary = self.summary.clone();
        summary.missed_deadlines = if self.config.mode == Mode::Play {
            self.timeline.missed()
        } else {
            0
        };
        summary.stalled_ms = self.timeline.stalled().as_millis() as u64;
        summary.duration_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        summary.upload_capacity = self.measured_uplink();
        summary
    }

    /// Runs what may have become due: the scheduler, uploads, Have frames.
    fn step(&mut self, now: Instant) {
        if self.dirty || self.next_work.is_none_or(|at| now >= at) {
            self.dirty = false;
            self.run_work(now);
        }
        self.pump_uploads(now);
        self.flush_have(now);
    }

    fn on_signal(&mut self, message: ServerMessage, now: Instant) {
        match message {
            ServerMessage::Digests { segments, .. } => {
                // The gateway publishes a digest when it sees a new segment: a node following its
                // own playlist reloads it now instead of at its next reload (up to a target
                // duration later), so the segment becomes a need while the most time is left.
                let unseen = segments
                    .iter()
                    .any(|entry| !self.first_seen.contains(&entry.id));
                // One newly cached segment (the window after `welcome` comes in bigger batches).
                let announced = match segments.as_slice() {
                    [one] => Some(one.id.clone()),
                    _ => None,
                };
                for entry in segments {
                    if let Ok(digest) = crate::protocol::signal::parse_digest_hex(&entry.sha256) {
                        self.digests.insert(entry.id, (digest, entry.size));
                    }
                }
                if unseen
                    && self.config.mode == Mode::Play
                    && self.live
                    && self.next_playlist.is_some()
                    && !self.playlist_in_flight
                {
                    self.next_playlist = Some(now);
                }
                if let Some(id) = announced {
                    self.announce(id, now);
                }
                self.have_dirty = true;
                self.dirty = true;
            }
            ServerMessage::Peers { peers } => self.on_peers(peers, now),
            ServerMessage::Welcome {
                max_peers,
                peer_id,
                swarm,
                ..
            } => {
                self.max_peers = Some(max_peers as usize);
                self.swarm = swarm;
                if peer_id != self.me {
                    self.rejoined(peer_id, now);
                }
            }
            ServerMessage::Error { code, message, .. } => {
                tracing::warn!(?code, %message, "tracker error");
            }
            // WebRTC negotiation is the driver's (its transport's) business.
            ServerMessage::Relay { .. } => {}
        }
    }

    /// A new tracker session (a reconnect, or another rendition's swarm) under a new peer id: the
    /// old swarm is gone (its links close, transfers on them fall back to HTTP); what the node
    /// waits for, holds and knows about segments stays.
    fn rejoined(&mut self, peer_id: String, now: Instant) {
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            self.drop_link(link, FailureCause::Disconnect, "left the swarm", now);
        }
        self.me = peer_id.clone();
        self.summary.peer_id = peer_id;
        self.listed.clear();
        self.listed_since.clear();
        self.elders = None;
        self.connecting.clear();
        self.retry.clear();
        self.banned.clear();
        // Outcomes of the old swarm's peers mean nothing to the new session's tracker.
        self.peer_deltas.clear();
        self.next_connect_check = None;
        self.dirty = true;
    }

    /// A sample of this node's uplink: the path rate of a link while an upload on it is under
    /// way (uploads go one after another, so that link has the uplink to itself).
    fn on_path_rate(&mut self, link: LinkId, rate: u64, now: Instant) {
        if rate == 0 || !self.uploads.iter().any(|u| u.link == link && u.started) {
            return;
        }
        if self.uplink_samples.len() >= UPLINK_SAMPLES {
            self.uplink_samples.pop_front();
        }
        self.uplink_samples.push_back(rate);
        self.pace_uploads(now);
    }

    /// Paces uploads at [`UPLINK_PACE`] of this node's uplink once it is known (declared, else
    /// measured), within the upload cap, with a burst of [`PACE_BURST`]. Congestion control
    /// fills the bottleneck's queue before it backs off; below the uplink's rate that queue
    /// stays empty, and what else this node sends (acknowledgements of its own downloads,
    /// requests, Have, HTTP requests) does not wait behind a quarter second of its uploads.
    fn pace_uploads(&mut self, now: Instant) {
        let Some(capacity) = self.capacity().filter(|&c| c > 0) else {
            return;
        };
        let rate = (capacity as f64 * UPLINK_PACE).min(upload_cap(&self.config) as f64);
        let burst = (rate * PACE_BURST.as_secs_f64()).max(RECOMMENDED_CHUNK_LEN as f64);
        self.bucket.set_rate(rate, burst, now);
    }

    /// This node's uplink as measured (the upper median of the newest [`UPLINK_SAMPLES`], once
    /// there are [`MIN_UPLINK_SAMPLES`]), at most its upload cap.
    fn measured_uplink(&self) -> Option<u64> {
        if self.uplink_samples.len() < MIN_UPLINK_SAMPLES {
            return None;
        }
        let mut sorted: Vec<u64> = self.uplink_samples.iter().copied().collect();
        sorted.sort_unstable();
        Some(sorted[sorted.len() / 2].min(self.config.upload_rate))
    }

    /// The capacity the tracker lists for `peer` (bytes/s), if any: where a new link's rate
    /// starts.
    pub(super) fn listed_capacity(&self, peer: &str) -> Option<f64> {
        self.listed
            .iter()
            .find(|p| p.peer_id == peer)
            .and_then(|p| p.upload_rate)
            .filter(|&r| r > 0)
            .map(|r| r as f64)
    }

    /// The upload capacity this node ranks itself by: declared (in `join`), else measured.
    fn capacity(&self) -> Option<u64> {
        self.declared().or_else(|| self.measured_uplink())
    }

    /// The capacity declared in `join`, at most the upload cap.
    fn declared(&self) -> Option<u64> {
        self.config.capacity.map(|c| c.min(self.config.upload_rate))
    }

    /// Where this node stands in its swarm: by capacity against peers whose capacity is known
    /// and more than `CAPACITY_STEP` apart from its own, else by seniority.
    fn seniority(&self) -> Seniority {
        let mine = self.capacity();
        let older = self.elders.as_ref().map_or(0, |elders| {
            self.listed
                .iter()
                .filter(|p| !self.banned.contains(&p.peer_id))
                .filter(|p| match faster(p.upload_rate, mine) {
                    Some(above) => above,
                    None => elders.contains(&p.peer_id),
                })
                .count()
        });
        Seniority {
            older,
            swarm: self.listed.len() + 1,
        }
    }

    fn on_playlist(&mut self, result: Result<SegmentList, HttpError>, now: Instant) {
        let from_reload = self.playlist_in_flight;
        self.playlist_in_flight = false;
        let playlist = match result {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "playlist reload failed");
                if from_reload {
                    self.next_playlist = Some(now + PLAYLIST_RETRY);
                }
                return;
            }
        };
        self.live = !playlist.ended;
        self.target = playlist.target_duration;
        let last = playlist.segments.last().map(|s| s.id.clone());
        if from_reload || self.config.mode != Mode::Driven {
            let changed = last != self.last_playlist_id;
            self.next_playlist = (!playlist.ended)
                .then(|| now + crate::hls::reload_interval(playlist.target_duration, changed));
        }
        self.last_playlist_id = last;
        for segment in &playlist.segments {
            if !self.first_seen.contains(&segment.id) {
                self.first_seen.insert(segment.id.clone(), now);
            }
        }
        if self.config.mode == Mode::Driven {
            self.dirty = true;
            return;
        }
        let Some(last) = playlist.segments.last().map(|s| s.sequence) else {
            return;
        };
        let first = playlist.segments.first().map_or(last, |s| s.sequence);
        let first_to_play = if self.live {
            last.saturating_sub(2).max(first)
        } else {
            first
        };
        self.playlist_ids.clear();
        for segment in &playlist.segments {
            self.timeline.add(
                segment.sequence,
                &segment.id,
                segment.duration,
                first_to_play,
            );
            self.sequence_of
                .insert(segment.id.clone(), segment.sequence);
            if segment.sequence >= first_to_play {
                self.playlist_ids.push(segment.id.clone());
            }
        }
        // Work on segments that left the playlist stops unless something runs for it.
        let listed: HashSet<&str> = playlist.segments.iter().map(|s| s.id.as_str()).collect();
        self.work.retain(|id, w| {
            listed.contains(id.as_str()) || w.transfer.is_some() || w.http.is_some()
        });
        self.dirty = true;
    }

    /// A digest announced one newly cached segment ([`CoreConfig::prefetch_announced`]).
    fn announce(&mut self, id: String, now: Instant) {
        let playing = self
            .last_need
            .is_some_and(|t| now.saturating_duration_since(t) < self.target * 2);
        if self.config.mode != Mode::Driven
            || !self.config.prefetch_announced
            || !playing
            || self.first_seen.contains(&id)
            || self.store.contains(&id)
        {
            return;
        }
        self.first_seen.insert(id.clone(), now);
        self.announced.push_back((id, now));
        while self.announced.len() > MAX_ANNOUNCED {
            if let Some((old, _)) = self.announced.pop_front() {
                self.drop_unwanted(&old);
            }
        }
        self.dirty = true;
    }

    /// Stops the work on a segment nobody waits for (an announcement that expired or was pushed
    /// out).
    fn drop_unwanted(&mut self, id: &str) {
        if self.waiting.get(id).is_some_and(|w| !w.waiters.is_empty()) {
            return;
        }
        self.fail_transfer(id, FailureCause::Timeout);
        self.cancel_http(id);
        self.work.remove(id);
    }

    /// The announced segments to work on now: a seeder's over HTTP at once (`None`), the others'
    /// as prefetches, which the scheduler never sends to HTTP. An announcement ends when the
    /// player asks for the segment, when it is stored, or after two target durations.
    fn announced_agenda(&mut self, now: Instant) -> Vec<(String, Option<Instant>)> {
        let expired: Vec<String> = self
            .announced
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(*at) >= self.target * 2)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.drop_unwanted(id);
        }
        let store = &self.store;
        let waiting = &self.waiting;
        self.announced.retain(|(id, _)| {
            !expired.contains(id)
                && !store.contains(id)
                && waiting.get(id).is_none_or(|w| w.waiters.is_empty())
        });
        let seeder = self.scheduler_now().is_seeder(self.seniority());
        let prefetch = now + self.scheduler.config().urgent_window + WAIT_POLL;
        self.announced
            .iter()
            .map(|(id, _)| (id.clone(), (!seeder).then_some(prefetch)))
            .collect()
    }

    fn on_need(
        &mut self,
        waiter: WaiterId,
        id: String,
        plays_at: Instant,
        p2p: bool,
        now: Instant,
    ) {
        self.last_need = Some(now);
        self.announced.retain(|(a, _)| a != &id);
        if let Some(previous) = self.waiter_segment.get(&waiter) {
            if previous != &id {
                let previous = previous.clone();
                self.on_abandon(waiter, now);
                self.waiter_segment.remove(&waiter);
                tracing::debug!(%previous, %id, "a waiter changed segment");
            }
        }
        if let Some(stored) = self.store.get(&id) {
            // The transfer that brought it in, as long as it took then (a bandwidth estimate must
            // not see a store hit as an infinitely fast download).
            let delivery = Delivery {
                bytes: stored.bytes.clone(),
                source: stored.source,
                started: now.checked_sub(stored.took).unwrap_or(now),
                finished: now,
                from_store: true,
            };
            self.store.touch(&id);
            self.outputs.push_back(Output::Deliver {
                waiters: vec![waiter],
                id,
                result: Ok(delivery),
            });
            return;
        }
        if !self.first_seen.contains(&id) {
            self.first_seen.insert(id.clone(), now);
        }
        self.waiter_segment.insert(waiter, id.clone());
        let waiting = self.waiting.entry(id.clone()).or_default();
        let new = waiting.waiters.is_empty() && waiting.abandoned_at.is_none();
        if new {
            waiting.http_only = !p2p;
        }
        waiting.waiters.insert(waiter, plays_at);
        waiting.abandoned_at = None;
        if waiting.http_only {
            self.start_http(&id, 0, HttpCause::HttpOnly, now);
        } else {
            self.dirty = true;
        }
    }

    fn on_abandon(&mut self, waiter: WaiterId, now: Instant) {
        let Some(id) = self.waiter_segment.remove(&waiter) else {
            return;
        };
        if let Some(waiting) = self.waiting.get_mut(&id) {
            waiting.waiters.remove(&waiter);
            if waiting.waiters.is_empty() {
                waiting.abandoned_at = Some(now);
                self.dirty = true;
            }
        }
    }

    /// Segments to decide on now, with when each plays (`None`: seeding, no deadline).
    fn agenda(&mut self, now: Instant) -> Vec<(String, Option<Instant>)> {
        match self.config.mode {
            Mode::Seed => self
                .playlist_ids
                .iter()
                .filter(|id| !self.store.contains(id))
                .map(|id| (id.clone(), None))
                .collect(),
            Mode::Play => {
                self.timeline.advance(now);
                self.timeline
                    .needed()
                    .take(LOOKAHEAD)
                    .map(|(seq, slot)| (slot.id.clone(), self.timeline.plays_at(seq, now)))
                    .collect()
            }
            Mode::Driven => {
                let mut agenda: Vec<(String, Option<Instant>)> = self
                    .waiting
                    .iter()
                    .filter(|(_, w)| !w.http_only && !w.waiters.is_empty())
                    .map(|(id, w)| (id.clone(), w.plays_at()))
                    .collect();
                if !self.announced.is_empty() {
                    agenda.extend(self.announced_agenda(now));
                }
                agenda
            }
        }
    }

    /// Runs the scheduler over every segment on the agenda.
    fn run_work(&mut self, now: Instant) {
        let mut next = now + WAIT_POLL;
        next = next.min(self.tend_abandoned(now));
        let seniority = self.seniority();
        let scheduler = self.scheduler_now();
        for (id, plays_at) in self.agenda(now) {
            if self.store.contains(&id) {
                continue;
            }
            let work = self.work.entry(id.clone()).or_default();
            if work
                .transfer
                .as_ref()
                .is_some_and(|t| t.verifying.is_some())
            {
                continue;
            }
            if let Some(at) = work.retry_at {
                if now < at {
                    next = next.min(at);
                    continue;
                }
                work.retry_at = None;
            }
            let Some(plays_at) = plays_at else {
                // Seeding: everything over HTTP at once.
                let cause = if self.config.mode == Mode::Seed {
                    HttpCause::Seeding
                } else {
                    HttpCause::Seeder
                };
                self.start_http(&id, 0, cause, now);
                continue;
            };
            let digest = self.digests.get(&id).copied();
            let fresh_live = self.live
                && self
                    .first_seen
                    .get(&id)
                    .is_some_and(|t| now.saturating_duration_since(*t) < self.target * 2);
            let need = Need {
                segment: id.clone(),
                size: digest.map(|d| d.1),
                plays_at,
                fresh_live,
            };
            let peers: Vec<PeerState> = self
                .links
                .values()
                .map(|link| PeerState {
                    peer: link.peer.clone(),
                    // Only verifiable bytes are worth asking for.
                    has: digest.is_some() && link.has.contains(&id),
                    rate: link.rate,
                    // A busy peer is not a candidate for a new request until its backoff ends.
                    in_flight: if link.busy_until.is_some_and(|t| t > now) {
                        link.in_flight.max(crate::scheduler::MAX_IN_FLIGHT_PER_PEER)
                    } else {
                        link.in_flight
                    },
                    healthy: !self.banned.contains(&link.peer),
                })
                .collect();
            let work = self.work.entry(id.clone()).or_default();
            let transfer = work.transfer.as_ref().map(|t| Transfer {
                peer: t.peer.clone(),
                started: t.started,
                received: t.data.len() as u64,
                offset: 0,
                last_progress: t.last_progress,
            });
            let decision = scheduler.decide(
                now,
                &self.me,
                seniority,
                &need,
                &peers,
                transfer.as_ref(),
                work.http.is_some(),
            );
            // Why HTTP, if the decision is a fresh fetch over HTTP.
            let cause = if need.fresh_live && scheduler.is_seeder(seniority) {
                HttpCause::Seeder
            } else if peers.iter().any(|p| p.has && p.healthy) {
                HttpCause::HoldersTooSlow
            } else {
                HttpCause::NoHolder
            };
            next = next.min(self.execute(&id, decision, cause, now));
        }
        self.next_work = Some(next.max(now + crate::scheduler::MIN_RECHECK));
    }

    /// The scheduler with the HTTP rate to assume now: the measured one when it is lower.
    fn scheduler_now(&self) -> Scheduler {
        match self.http_rate {
            Some(measured) if measured > 0.0 && measured < self.scheduler.config().http_rate => {
                Scheduler::new(SchedulerConfig {
                    http_rate: measured,
                    ..self.scheduler.config().clone()
                })
            }
            _ => self.scheduler.clone(),
        }
    }

    /// Carries out a decision (`cause`: why, should it be a fresh fetch over HTTP); returns when
    /// to look at the segment again.
    fn execute(&mut self, id: &str, decision: Decision, cause: HttpCause, now: Instant) -> Instant {
        match decision {
            Decision::FetchFromPeer(peer) => self.request_from_peer(id, &peer, now),
            Decision::FetchHttp { from } | Decision::RaceHttp { from } => {
                let cause = if matches!(decision, Decision::RaceHttp { .. }) {
                    HttpCause::Race
                } else {
                    cause
                };
                // A race keeps the peer transfer: the HTTP rest is joined with its first bytes.
                let from = if self.prefix_len(id) >= from { from } else { 0 };
                self.start_http(id, from, cause, now);
            }
            Decision::ReplaceWithHttp { from } => {
                let mut from = from;
                let running = self.work.get(id).and_then(|w| w.transfer.as_ref());
                if let Some(t) = running {
                    if from > 0 && t.data.len() as u64 >= from {
                        let kept = (
                            t.peer.clone(),
                            Bytes::copy_from_slice(&t.data[..from as usize]),
                        );
                        if let Some(w) = self.work.get_mut(id) {
                            w.partial = Some(kept);
                        }
                    } else {
                        from = 0;
                    }
                    self.fail_transfer(id, FailureCause::Timeout);
                } else if self.prefix_len(id) < from {
                    from = 0;
                }
                self.start_http(id, from, HttpCause::Takeover, now);
            }
            Decision::WaitUntil(at) | Decision::Continue(at) => return at,
            Decision::DropPeer => {
                let peer = self
                    .work
                    .get(id)
                    .and_then(|w| w.transfer.as_ref())
                    .map(|t| t.link);
                self.fail_transfer(id, FailureCause::Timeout);
                if let Some(l) = peer.and_then(|link| self.links.get_mut(&link)) {
                    l.busy_until = Some(now + transfers::BUSY_BACKOFF);
                }
                return now;
            }
            Decision::Skip => {
                // A prefetch no peer can serve (or whose peer stalled). A caller waiting for it
                // is filling its buffer: waiting would only shrink the buffer, so HTTP it is.
                // A playing node just drops its own speculative fetch.
                // An announced segment the player has not asked for is dropped too.
                self.fail_transfer(id, FailureCause::Timeout);
                let waited = self.waiting.get(id).is_some_and(|w| !w.waiters.is_empty());
                if self.config.mode == Mode::Driven && waited {
                    self.start_http(id, 0, HttpCause::Other, now);
                } else {
                    self.announced.retain(|(a, _)| a != id);
                    return now + WAIT_POLL;
                }
            }
        }
        now + TRANSFER_POLL
    }

    /// Needs nobody waits for: their running work may finish (into the store) for a short while.
    /// Returns when to look again.
    fn tend_abandoned(&mut self, now: Instant) -> Instant {
        let mut next = now + WAIT_POLL;
        let abandoned: Vec<(String, Instant)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.waiters.is_empty())
            .map(|(id, w)| (id.clone(), w.abandoned_at.unwrap_or(now)))
            .collect();
        for (id, since) in abandoned {
            let running = self
                .work
                .get(&id)
                .is_some_and(|w| w.transfer.is_some() || w.http.is_some());
            let until = since + ABANDONED_GRACE;
            if running && now < until {
                next = next.min(until);
                continue;
            }
            self.waiting.remove(&id);
            if running {
                self.fail_transfer(&id, FailureCause::Timeout);
                self.cancel_http(&id);
            }
            self.work.remove(&id);
        }
        next
    }

    fn cancel_http(&mut self, id: &str) {
        if let Some(w) = self.work.get_mut(id) {
            if w.http.take().is_some() {
                self.outputs
                    .push_back(Output::HttpCancel { id: id.to_owned() });
            }
        }
    }

    /// Bytes of `id` already in hand from a peer (a running transfer or a kept prefix).
    fn prefix_len(&self, id: &str) -> u64 {
        let Some(w) = self.work.get(id) else {
            return 0;
        };
        match (&w.transfer, &w.partial) {
            (Some(t), _) => t.data.len() as u64,
            (None, Some((_, bytes))) => bytes.len() as u64,
            (None, None) => 0,
        }
    }

    fn start_http(&mut self, id: &str, from: u64, cause: HttpCause, now: Instant) {
        let work = self.work.entry(id.to_owned()).or_default();
        if work.http.is_some() {
            return;
        }
        if from == 0 {
            work.partial = None;
        }
        work.http = Some(HttpFetch {
            from,
            cause,
            started: now,
            verifying: false,
        });
        self.outputs.push_back(Output::HttpGet {
            id: id.to_owned(),
            from,
        });
    }

    /// Takes a whole segment (verified, or from the gateway): stores it, hands it to its callers,
    /// records it, tells the peers.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        id: &str,
        bytes: Bytes,
        digest: [u8; 32],
        source: Source,
        started: Instant,
        finished: Instant,
        now: Instant,
    ) {
        // A transfer still running lost the race; an HTTP fetch still running is not needed.
        self.fail_transfer(id, FailureCause::Timeout);
        self.cancel_http(id);
        self.work.remove(id);
        let sequence = self.sequence_of.get(id).copied();
        let waiting = self.waiting.remove(id);
        let plays_at = match &waiting {
            Some(w) => w.plays_at(),
            None => sequence.and_then(|s| self.timeline.plays_at(s, now)),
        };
        let in_time = self.config.mode == Mode::Seed || plays_at.is_none_or(|at| now <= at);
        if let Some(sequence) = sequence {
            self.timeline.obtained(sequence, now);
        }
        if let Some(waiting) = waiting {
            let waiters: Vec<WaiterId> = waiting.waiters.keys().copied().collect();
            for w in &waiters {
                self.waiter_segment.remove(w);
            }
            if !waiters.is_empty() {
                self.outputs.push_back(Output::Deliver {
                    waiters,
                    id: id.to_owned(),
                    result: Ok(Delivery {
                        bytes: bytes.clone(),
                        source,
                        started,
                        finished,
                        from_store: false,
                    }),
                });
            }
        }
        let len = bytes.len() as u64;
        let took = finished.saturating_duration_since(started);
        self.store.put(id, bytes, digest, source, took);
        self.summary.segments += 1;
        match source {
            Source::P2p => self.summary.p2p_segments += 1,
            Source::Http => self.summary.http_segments += 1,
        }
        if self.summary.log.len() >= MAX_LOG {
            // Long runs keep the most recent records; the counters above stay complete.
            self.summary.log.drain(..MAX_LOG / 10);
        }
        self.summary.log.push(SegmentRecord {
            id: id.to_owned(),
            source,
            bytes: len,
            sha256: hex::encode(digest),
            at_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            in_time,
        });
        self.have_dirty = true;
        self.dirty = true;
    }

    /// A caller's HTTP fetch failed and no peer can deliver: the callers get the error.
    fn fail_waiters(&mut self, id: &str, error: HttpError) {
        let Some(waiting) = self.waiting.remove(id) else {
            return;
        };
        self.fail_transfer(id, FailureCause::Timeout);
        self.work.remove(id);
        let waiters: Vec<WaiterId> = waiting.waiters.keys().copied().collect();
        for w in &waiters {
            self.waiter_segment.remove(w);
        }
        if !waiters.is_empty() {
            self.outputs.push_back(Output::Deliver {
                waiters,
                id: id.to_owned(),
                result: Err(error),
            });
        }
    }

    fn peer_delta(&mut self, peer: &str) -> &mut PeerOutcome {
        self.peer_deltas
            .entry(peer.to_owned())
            .or_insert_with(|| PeerOutcome {
                peer_id: peer.to_owned(),
                ok: 0,
                failed: 0,
                mismatch: 0,
                bytes: 0,
            })
    }

    fn send_report(&mut self) {
        let s = &self.summary;
        let r = &self.reported;
        let mut peers = Vec::new();
        while peers.len() < MAX_REPORT_PEERS {
            let Some((_, outcome)) = self.peer_deltas.pop_first() else {
                break;
            };
            peers.push(outcome);
        }
        let take = self
            .receipts
            .len()
            .min(crate::protocol::signal::MAX_RECEIPTS);
        let receipts: Vec<Receipt> = self.receipts.drain(..take).collect();
        let report = Report {
            receipts,
            http_bytes: s.http_bytes.saturating_sub(r.http_bytes),
            p2p_bytes: s.p2p_bytes.saturating_sub(r.p2p_bytes),
            http_segments: s.http_segments.saturating_sub(r.http_segments),
            p2p_segments: s.p2p_segments.saturating_sub(r.p2p_segments),
            uploaded_bytes: s.uploaded_bytes.saturating_sub(r.uploaded_bytes),
            failures: s.failures.since(&r.failures),
            peers,
            // A declared capacity stands: the tracker lists it, not this node's measurement.
            upload_rate: self
                .declared()
                .is_none()
                .then(|| self.measured_uplink())
                .flatten(),
        };
        self.reported = Summary {
            http_bytes: s.http_bytes,
            p2p_bytes: s.p2p_bytes,
            http_segments: s.http_segments,
            p2p_segments: s.p2p_segments,
            uploaded_bytes: s.uploaded_bytes,
            failures: s.failures.clone(),
            ..Summary::default()
        };
        self.outputs
            .push_back(Output::Signal(ClientMessage::Report(report)));
    }

    /// `peer` sent `bytes` of segment `id` that verified against `sha256`: counts them by the
    /// peer's key and signs a receipt for them (with the test switch, forged ones too).
    fn delivered_by(&mut self, peer: &str, id: &str, sha256: [u8; 32], bytes: u64, now: Instant) {
        let Some(uploader) = self.peer_keys.get(peer).cloned() else {
            return;
        };
        if bytes == 0 {
            return;
        }
        let credited = self
            .summary
            .received_from
            .entry(uploader.clone())
            .or_default();
        *credited = credited.saturating_add(bytes);
        let Some(signer) = self.config.receipts.clone() else {
            return;
        };
        if self.swarm.is_empty() {
            return;
        }
        let mut delivery = ReceiptBody {
            uploader,
            swarm: self.swarm.clone(),
            segment: id.to_owned(),
            sha256,
            bytes,
            time_ms: signer.clock.unix_ms_at(now),
            nonce: [0; 16],
        };
        let sign = |d: &mut ReceiptBody, core: &mut Self| {
            core.receipts_made += 1;
            d.nonce[..8].copy_from_slice(&signer.nonce_prefix);
            d.nonce[8..].copy_from_slice(&core.receipts_made.to_be_bytes());
            Receipt::sign(d, &signer.key)
        };
        let honest = sign(&mut delivery, self);
        self.queue_receipt(honest.clone());
        self.summary.receipts_signed += 1;
        if self.config.test.forge_receipts {
            let mut forged = Vec::new();
            let mut bad_sig = sign(&mut delivery, self);
            let mut sig = hex::decode(&bad_sig.sig).unwrap_or_default();
            if let Some(b) = sig.first_mut() {
                *b ^= 0xff;
            }
            bad_sig.sig = hex::encode(sig);
            forged.push(bad_sig);
            let mut other = delivery.clone();
            other.uploader = hex::encode(Sha256::digest(other.uploader.as_bytes()));
            forged.push(sign(&mut other, self));
            let mut unpublished = delivery.clone();
            unpublished.sha256 = Sha256::digest(unpublished.sha256).into();
            forged.push(sign(&mut unpublished, self));
            forged.push(honest);
            let mut inflated = delivery.clone();
            inflated.bytes = inflated.bytes.saturating_mul(2).max(1);
            forged.push(sign(&mut inflated, self));
            for r in forged {
                self.queue_receipt(r);
            }
        }
    }

    fn queue_receipt(&mut self, receipt: Receipt) {
        self.receipts.push_back(receipt);
        while self.receipts.len() > MAX_PENDING_RECEIPTS {
            self.receipts.pop_front();
            self.summary.receipts_dropped += 1;
        }
    }

    fn stop(&mut self, now: Instant) {
        self.send_report();
        // Every receipt still waiting goes out now, a report's worth at a time.
        while !self.receipts.is_empty() {
            self.send_report();
        }
        self.outputs
            .push_back(Output::Signal(ClientMessage::Leave {}));
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            self.outputs.push_back(Output::Close {
                link,
                reason: "node stopped",
            });
        }
        self.links.clear();
        self.link_of.clear();
        self.uploads.clear();
        let fetching: Vec<String> = self
            .work
            .iter()
            .filter(|(_, w)| w.http.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in fetching {
            self.outputs.push_back(Output::HttpCancel { id });
        }
        self.timeline.advance(now);
        self.stopped = true;
    }
}

/// The upload cap (bytes/s): `--upload-rate`, or the test's slow upload below it. The bucket's
/// rate until the uplink is known.
fn upload_cap(config: &CoreConfig) -> u64 {
    config
        .test
        .slow_upload
        .map_or(config.upload_rate, |s| s.min(config.upload_rate))
}

/// Uploads are paced at this share of the node's uplink once it is known (see
/// `NodeCore::pace_uploads`).
pub const UPLINK_PACE: f64 = 0.9;
/// The burst the pace allows: this long at the paced rate (at least one chunk).
pub const PACE_BURST: Duration = Duration::from_millis(50);

/// Uplink samples kept (see [`Input::PathRate`]); the driver sends at most one per link every
/// 100 ms, so this is about the last 6 s of uploading.
const UPLINK_SAMPLES: usize = 64;
/// Samples needed before this node reports a measured uplink.
const MIN_UPLINK_SAMPLES: usize = 4;

/// Whether a peer declaring `theirs` ranks above one declaring `mine` by capacity (None: both
/// unknown or too close to tell, seniority decides).
fn faster(theirs: Option<u64>, mine: Option<u64>) -> Option<bool> {
    use crate::protocol::signal::CAPACITY_STEP;
    let (t, m) = (theirs? as f64, mine? as f64);
    if t > m * CAPACITY_STEP {
        Some(true)
    } else if m > t * CAPACITY_STEP {
        Some(false)
    } else {
        None
    }
}
