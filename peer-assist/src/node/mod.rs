//! The native peer node: joins a swarm through the gateway's tracker, follows the live playlist like a
//! player (or seeds it, or is driven by a player model), gets each segment from peers or over HTTP as
//! the [`Scheduler`](crate::scheduler::Scheduler) decides from the playback deadline, verifies every
//! peer byte against the gateway's SHA-256 before use, keeps a bounded store to upload to others
//! (rate-capped, opt-out, privacy floor) and reports how delivery went.
//!
//! Every decision lives in [`core::NodeCore`], a state machine without I/O driven on explicit time;
//! [`driver`] is the thin async shell that carries out its outputs (links, HTTP, signalling,
//! hashing) and feeds it what happened. [`start`] runs both.

pub mod core;
pub mod driver;
pub mod http;
pub mod playback;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod trace;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::protocol::signal::{ErrorCode, Failures, SignalError, Transport};
use crate::scheduler::SchedulerConfig;
use crate::transport::LinkError;

pub use driver::{start, Fetched, NodeHandle, SegmentFetcher};

/// Where a segment came from. The same spelling as the report's `p2p_bytes` / `http_bytes` and the
/// browser engine's `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// From other peers, verified against the gateway's digest.
    P2p,
    /// From the gateway (a peer transfer finished over HTTP counts here).
    Http,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::P2p => "p2p",
            Source::Http => "http",
        }
    }
}

/// Switches that make a node misbehave, for tests and the load-test harness only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestBehaviour {
    /// Corrupt every chunk it uploads (it still claims the true digest).
    pub lie: bool,
    /// With `lie`: this many uploads are honest first (a liar that earns trust, then lies).
    pub honest_uploads: u64,
    /// Upload at most this many bytes per second, whatever the upload cap says.
    pub slow_upload: Option<u64>,
    /// With every honest receipt, also send forged ones: a broken signature, another uploader,
    /// an unpublished digest, the honest one again (replay), twice the bytes.
    pub forge_receipts: bool,
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
    /// The upload capacity this node declares in `join` (bytes per second): peers expect its
    /// transfers at this rate until they measured it, and rank seeders by it; it stands for the
    /// whole session (the node's own measurement is not reported). None: not declared, the node
    /// reports what it measures. Either way its uploads are paced at 90% of it
    /// (`core::UPLINK_PACE`).
    pub capacity: Option<u64>,
    /// No upload until the swarm has at least this many peers (this one included).
    pub privacy_floor: usize,
    /// Segments kept to serve others.
    pub window: usize,
    /// Bytes of segments kept to serve others.
    pub max_store_bytes: u64,
    /// Peer links kept open.
    pub max_links: usize,
    /// Time from joining to the planned start of playback.
    pub startup: Duration,
    /// Delivery reports are sent this often.
    pub report_every: Duration,
    pub scheduler: SchedulerConfig,
    pub test: TestBehaviour,
    /// Serve segments to peers while they still arrive from a peer (see
    /// `CoreConfig::forward_arriving`). On by default; the browser engine does not do it yet.
    pub forward_arriving: bool,
    /// Driven: fetch a newly announced live segment before the player asks (see
    /// `CoreConfig::prefetch_announced`). On by default, as in the browser engine.
    pub prefetch_announced: bool,
    /// Do not play: fetch only what [`SegmentFetcher::fetch`] asks for, by the deadline it gives (a
    /// player model drives the node, as in the load-test harness).
    pub driven: bool,
    /// The viewer's token for a stream under a protected prefix (docs/SECURITY.md): sent in
    /// `join` and, as the `token` cookie, on every request to the gateway.
    pub token: Option<String>,
    /// An emulated network link for all of this node's QUIC and HTTP traffic (the load-test
    /// harness's `--uplink`, `--rtt`, ...); None: the network as it is. WebRTC is not shaped.
    pub link: Option<std::sync::Arc<crate::net::Link>>,
    /// The node's key (announced in `join`, signs its receipts); None: no key, no receipts.
    pub key: Option<std::sync::Arc<crate::accounting::NodeKey>>,
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
            capacity: None,
            privacy_floor: 2,
            window: 30,
            max_store_bytes: 256 * 1024 * 1024,
            max_links: 8,
            startup: Duration::from_secs(2),
            report_every: Duration::from_secs(2),
            scheduler: SchedulerConfig::default(),
            test: TestBehaviour::default(),
            forward_arriving: true,
            prefetch_announced: true,
            driven: false,
            token: None,
            link: None,
            key: None,
        }
    }

    /// The settings of the node's core.
    pub fn core(&self, transports: Vec<Transport>) -> core::CoreConfig {
        core::CoreConfig {
            mode: if self.driven {
                core::Mode::Driven
            } else if self.seed {
                core::Mode::Seed
            } else {
                core::Mode::Play
            },
            transports,
            upload: self.upload,
            upload_rate: self.upload_rate,
            capacity: self.capacity,
            privacy_floor: self.privacy_floor,
            window: self.window,
            max_store_bytes: self.max_store_bytes,
            max_links: self.max_links,
            startup: self.startup,
            report_every: self.report_every,
            scheduler: self.scheduler.clone(),
            test: self.test.clone(),
            receipts: self
                .key
                .as_ref()
                .map(|k| core::ReceiptSigner::new(std::sync::Arc::clone(k))),
            forward_arriving: self.forward_arriving,
            prefetch_announced: self.prefetch_announced,
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

/// One segment the node obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRecord {
    pub id: String,
    pub source: Source,
    pub bytes: u64,
    /// SHA-256 of what was accepted.
    pub sha256: String,
    /// Milliseconds since the node started.
    pub at_ms: u64,
    /// Whether it was in hand before it had to play (always true for seeds).
    pub in_time: bool,
}

/// Why a node fetched a segment over HTTP: the rule that started the fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCause {
    /// One of its swarm's seeders (no listed peer outranks it, docs/PROTOCOL.md §4.1): a fresh
    /// live segment, at once.
    Seeder,
    /// A seed node (`--seed`): every segment of its playlist.
    Seeding,
    /// No listed peer held a verifiable copy when HTTP had to start.
    NoHolder,
    /// Peers held it, but none could deliver before the deadline (busy, or too slow).
    HoldersTooSlow,
    /// A peer transfer projected to miss its deadline, or stalled too late for another peer:
    /// HTTP fetched the rest.
    Takeover,
    /// HTTP raced a peer transfer at the last moment, and finished first.
    Race,
    /// The player asked for this segment over HTTP only.
    HttpOnly,
    /// A prefetch no peer could serve while the player waited for it, or a peer's first bytes
    /// that failed the check (the whole segment fetched again).
    Other,
}

/// Segment bytes that came over HTTP, by the rule that started each fetch ([`HttpCause`]). The
/// fields add up to [`Summary::http_bytes`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HttpBytesByCause {
    pub seeder: u64,
    pub seeding: u64,
    pub no_holder: u64,
    pub holders_too_slow: u64,
    pub takeover: u64,
    pub race: u64,
    pub http_only: u64,
    pub other: u64,
}

impl HttpCause {
    pub const ALL: [HttpCause; 8] = [
        HttpCause::Seeder,
        HttpCause::Seeding,
        HttpCause::NoHolder,
        HttpCause::HoldersTooSlow,
        HttpCause::Takeover,
        HttpCause::Race,
        HttpCause::HttpOnly,
        HttpCause::Other,
    ];
}

impl HttpBytesByCause {
    fn counter(&mut self, cause: HttpCause) -> &mut u64 {
        match cause {
            HttpCause::Seeder => &mut self.seeder,
            HttpCause::Seeding => &mut self.seeding,
            HttpCause::NoHolder => &mut self.no_holder,
            HttpCause::HoldersTooSlow => &mut self.holders_too_slow,
            HttpCause::Takeover => &mut self.takeover,
            HttpCause::Race => &mut self.race,
            HttpCause::HttpOnly => &mut self.http_only,
            HttpCause::Other => &mut self.other,
        }
    }

    pub fn get(&self, cause: HttpCause) -> u64 {
        match cause {
            HttpCause::Seeder => self.seeder,
            HttpCause::Seeding => self.seeding,
            HttpCause::NoHolder => self.no_holder,
            HttpCause::HoldersTooSlow => self.holders_too_slow,
            HttpCause::Takeover => self.takeover,
            HttpCause::Race => self.race,
            HttpCause::HttpOnly => self.http_only,
            HttpCause::Other => self.other,
        }
    }

    pub fn add(&mut self, cause: HttpCause, bytes: u64) {
        let counter = self.counter(cause);
        *counter = counter.saturating_add(bytes);
    }

    /// Adds another node's counts (a harness report sums its viewers').
    pub fn merge(&mut self, other: &HttpBytesByCause) {
        for cause in HttpCause::ALL {
            self.add(cause, other.get(cause));
        }
    }

    pub fn total(&self) -> u64 {
        HttpCause::ALL
            .into_iter()
            .fold(0u64, |sum, cause| sum.saturating_add(self.get(cause)))
    }
}

/// What a run did. `--json FILE` writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub peer_id: String,
    pub http_bytes: u64,
    /// `http_bytes` by why each fetch started.
    pub http_bytes_by_cause: HttpBytesByCause,
    pub p2p_bytes: u64,
    pub uploaded_bytes: u64,
    /// Every segment byte that arrived from peers, used or not: `p2p_bytes` plus what was thrown
    /// away (a transfer given up or cut short by HTTP, chunks still in flight after a Cancel). The
    /// difference is peers' uplink spent for nothing.
    pub p2p_received_bytes: u64,
    /// The part of `p2p_received_bytes` that arrived for a request this node no longer ran
    /// (cancelled, or ended by HTTP): what a sender had queued when the Cancel reached it.
    pub p2p_late_bytes: u64,
    pub mismatches: u64,
    pub missed_deadlines: u64,
    pub segments: u64,
    pub http_segments: u64,
    pub p2p_segments: u64,
    pub stalled_ms: u64,
    pub failures: Failures,
    /// Peers this node disconnected for sending data that failed verification.
    pub peers_dropped_for_lying: Vec<String>,
    /// Links refused because the peer's certificate was not the one published for its id.
    pub identity_mismatches: u64,
    /// Tracker sessions joined after the first (the gateway went away, or restarted).
    pub signalling_reconnects: u64,
    /// Swarms joined because the driving player switched rendition
    /// ([`SegmentFetcher::switch_rendition`]).
    pub rendition_switches: u64,
    /// This node's public key (hex), when it has one (`--key-file`, or a key of this run).
    pub node_key: Option<String>,
    /// Verified bytes received from peers, by the uploader's key (hex): what its receipts
    /// credit.
    pub received_from: std::collections::BTreeMap<String, u64>,
    /// Receipts signed for deliveries from peers.
    pub receipts_signed: u64,
    /// Receipts dropped unsent (more were waiting than a node keeps).
    pub receipts_dropped: u64,
    /// Its uplink as it measured it while uploading (bytes/s; see `NodeCore`'s uplink samples),
    /// which it reports to the tracker; None: not measured (too few uploads, or WebRTC only).
    pub upload_capacity: Option<u64>,
    /// The shard of the swarm it joined last: 0 unless a full shard sent it on (PROTOCOL.md §2, "Swarm shards").
    pub shard: u32,
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

/// Why the tracker connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SignallingError {
    #[error("no answer in time")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("closed before the welcome")]
    Closed,
    #[error("the tracker sent an invalid message: {0}")]
    Protocol(#[from] SignalError),
}

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The network or the gateway: the tracker could not be reached or spoke nonsense.
    #[error("cannot use the gateway's tracker: {0}")]
    Signalling(#[from] SignallingError),
    /// The tracker said no (unknown stream, full swarm, unauthorized...).
    #[error("the tracker refused the join: {code:?}: {message}")]
    Refused {
        code: ErrorCode,
        message: String,
        /// With `swarm_full`: the shard to ask for instead.
        shard: Option<u32>,
    },
    /// This node's configuration.
    #[error("no transport configured")]
    NoTransport,
    #[error("WebRTC requested, but this build has no `webrtc` feature")]
    WebrtcUnavailable,
    /// This node's configuration: a token that cannot travel in a cookie.
    #[error("the token is not a valid cookie value")]
    BadToken,
    /// This machine: a socket could not be bound, a certificate not made.
    #[error("transport setup failed: {0}")]
    Transport(#[from] LinkError),
}

/// Why [`SegmentFetcher::fetch`] gave no segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the node has stopped")]
    Stopped,
    /// HTTP failed and no peer could deliver.
    #[error("{0}")]
    Http(#[from] http::HttpError),
}
