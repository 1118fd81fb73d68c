//! Transport-agnostic peer links.
//!
//! A [`PeerLink`] is a bidirectional, ordered, reliable link to one peer that carries whole data
//! protocol frames: `type: u8` + `length: u32` big-endian + `length` payload bytes, moved as one
//! [`Bytes`] each (header included). The transport looks at nothing but the 5-byte header: it
//! checks that the announced length matches (outgoing) and does not exceed [`MAX_FRAME_LEN`]
//! (both directions); decoding the frame is the codec's business.
//!
//! Every link is served by background tasks that pump frames between two bounded channels
//! ([`LINK_CHANNEL_CAPACITY`] frames each, which gives backpressure in both directions) and the
//! transport. QUIC is implemented in [`quic`]; WebRTC data channels (for browsers) in `webrtc`,
//! behind the cargo feature of the same name.
//!
//! # Closing
//!
//! * [`LinkSender::close`] (either side) aborts the link at once: frames still queued locally
//!   are discarded, the transport connection is closed and the peer's receiver returns `None`.
//! * Dropping **every** [`LinkSender`] clone ends the link gracefully: the queued frames are
//!   flushed, then the peer's receiver returns `None` after the last one. The peer's link then
//!   ends its own direction the same way (it stops accepting new frames, flushes the queued
//!   ones), our receiver returns `None` after the last of them, and the connection is closed.
//!   Every frame whose `send` returned `Ok` is delivered, unless the link is aborted. There is
//!   no half-open state: a link whose peer has ended its direction refuses new frames.
//! * Dropping the [`LinkReceiver`] alone does not end the link: frames from the peer are read
//!   and discarded from then on. Dropping both halves (all senders and the receiver) ends it as
//!   above, so the connection is always closed.
//! * A graceful end that does not complete within [`LINGER`] (a peer that stops reading) is
//!   turned into an abort.
//! * The transport failing (peer gone, idle timeout, protocol violation such as a header
//!   announcing more than [`MAX_FRAME_LEN`] bytes) closes the link: the receiver yields the
//!   frames already received, then `None`.
//!
//! Once a link is no longer open, [`LinkSender::is_closed`] is true, [`LinkSender::send`] fails
//! with [`LinkError::Closed`], and [`LinkSender::close_reason`] says why.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

pub mod quic;
#[cfg(feature = "webrtc")]
pub mod webrtc;

/// Largest valid frame payload, in bytes (the 5-byte header is not counted).
pub const MAX_FRAME_LEN: usize = 70_000;
/// Size of the frame header: `type: u8` + `length: u32` big-endian.
pub const FRAME_HEADER_LEN: usize = 5;
/// ALPN protocol identifier of the peer data protocol, version 1.
pub const ALPN: &[u8] = b"p2pa/1";
/// Frames buffered per direction and link before `send` waits (outgoing) or the transport stops
/// reading from the peer (incoming).
pub const LINK_CHANNEL_CAPACITY: usize = 64;
/// Outgoing frames buffered per link between the node and the transport's writer. Small: what a
/// sender has handed over here is out of its hands (a Cancel cannot take it back, and the node's
/// per-link window and its one-upload-at-a-time rule count it as written), so the backlog must
/// wait in the node, not here. With 64 slots, a whole segment went into the channel at once and
/// the uplink was committed to uploads their requesters had already given up on; with 4, a
/// Cancel still could not take back 64 KiB per link (docs/BENCHMARKS.md, "Seventh step").
pub const LINK_OUTGOING_CAPACITY: usize = 1;
/// How long a graceful end of a link may take before it is turned into an abort.
pub const LINGER: Duration = Duration::from_secs(10);

/// Errors of the link layer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The link is closed (or closing): nothing more can be sent.
    #[error("link closed")]
    Closed,
    /// A frame whose payload exceeds [`MAX_FRAME_LEN`]; carries the payload length.
    #[error("frame payload of {0} bytes exceeds the maximum of {MAX_FRAME_LEN}")]
    FrameTooLarge(usize),
    /// A frame that is not `header + payload` with a consistent length.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// The connection could not be established (unreachable, timed out, refused, ...).
    #[error("connect failed: {0}")]
    Connect(String),
    /// TLS failure: the handshake failed for a reason other than the pinned fingerprint, or a
    /// TLS configuration could not be built.
    #[error("tls: {0}")]
    Tls(String),
    /// Local I/O failure (binding the socket, ...).
    #[error("i/o: {0}")]
    Io(String),
    /// Invalid configuration (tuning values out of range, no Tokio runtime, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The peer's certificate does not have the pinned SHA-256 fingerprint.
    #[error("peer certificate does not match the pinned fingerprint")]
    FingerprintMismatch,
    /// A signalling payload (relayed WebRTC offer, answer or candidate) that cannot be used.
    #[error("signalling: {0}")]
    Signalling(String),
}

/// The payload length announced by a frame header.
pub fn frame_payload_len(header: &[u8; FRAME_HEADER_LEN]) -> usize {
    u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize
}

/// Checks that `frame` is one whole frame: a header whose announced length equals the number of
/// payload bytes that follow it, and is at most [`MAX_FRAME_LEN`].
pub fn check_frame(frame: &[u8]) -> Result<(), LinkError> {
    let Some((header, payload)) = frame.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(LinkError::InvalidFrame(format!(
            "{} bytes is shorter than the {FRAME_HEADER_LEN}-byte header",
            frame.len()
        )));
    };
    let announced = frame_payload_len(header);
    if payload.len() > MAX_FRAME_LEN {
        return Err(LinkError::FrameTooLarge(payload.len()));
    }
    if announced != payload.len() {
        return Err(LinkError::InvalidFrame(format!(
            "header announces {announced} payload bytes, {} follow",
            payload.len()
        )));
    }
    Ok(())
}

/// Who is at the other end of a link.
///
/// QUIC links are addressed by socket address; transports without a meaningful socket address
/// (WebRTC data channels negotiated through the tracker) use a label: the peer id. Hence the enum
/// rather than a bare [`SocketAddr`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RemoteAddr {
    /// A peer reached at a UDP/TCP socket address (QUIC).
    Socket(SocketAddr),
    /// A peer identified by a transport-specific label.
    Label(String),
}

impl RemoteAddr {
    /// The socket address, for socket-based transports.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            RemoteAddr::Socket(addr) => Some(*addr),
            RemoteAddr::Label(_) => None,
        }
    }
}

impl fmt::Display for RemoteAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteAddr::Socket(addr) => write!(f, "{addr}"),
            RemoteAddr::Label(label) => f.write_str(label),
        }
    }
}

impl From<SocketAddr> for RemoteAddr {
    fn from(addr: SocketAddr) -> Self {
        RemoteAddr::Socket(addr)
    }
}

/// A bidirectional, ordered, reliable link to one peer carrying whole frames (header + payload).
///
/// The halves can be moved apart (`let PeerLink { sender, receiver, .. } = link;`); see the
/// [module documentation](self) for what dropping them does.
#[derive(Debug)]
pub struct PeerLink {
    /// The peer's address: [`RemoteAddr::Socket`] for QUIC, [`RemoteAddr::Label`] (the peer id)
    /// for WebRTC.
    pub remote_addr: RemoteAddr,
    /// The SHA-256 fingerprint (lowercase hex) of the certificate the peer proved it holds in the
    /// handshake: QUIC links, both sides (see `quic`'s mutual TLS). `None` for WebRTC, whose peer
    /// the tracker's relay vouches for.
    pub remote_fingerprint: Option<String>,
    /// Sends frames to the peer; cheap to clone.
    pub sender: LinkSender,
    /// Frames from the peer, in order.
    pub receiver: LinkReceiver,
}

/// The sending half of a [`PeerLink`].
#[derive(Debug, Clone)]
pub struct LinkSender {
    tx: mpsc::Sender<Bytes>,
    control: LinkControl,
}

impl LinkSender {
    /// Queues one whole frame (header + payload) for the peer, waiting while
    /// [`LINK_CHANNEL_CAPACITY`] frames are already queued.
    ///
    /// `Ok` means the frame was queued, not that the peer received it. Fails with
    /// [`LinkError::FrameTooLarge`] / [`LinkError::InvalidFrame`] for a frame that is not one
    /// valid frame (the link stays open), and [`LinkError::Closed`] once the link is not open.
    pub async fn send(&self, frame: Bytes) -> Result<(), LinkError> {
        check_frame(&frame)?;
        if !self.control.is_open() {
            return Err(LinkError::Closed);
        }
        tokio::select! {
            biased;
            sent = self.tx.send(frame) => sent.map_err(|_| LinkError::Closed),
            () = self.control.wait_not_open() => Err(LinkError::Closed),
        }
    }

    /// Aborts the link: frames not yet handed to the transport are discarded and the transport
    /// connection is closed with `reason`, which the peer sees in its close reason.
    pub fn close(&self, reason: &str) {
        self.control.abort(CloseCause::Local, reason);
    }

    /// Whether the link is no longer open (closed, or ending gracefully).
    pub fn is_closed(&self) -> bool {
        !self.control.is_open()
    }

    /// Why the link is no longer open, or `None` while it is open.
    pub fn close_reason(&self) -> Option<String> {
        self.control.reason()
    }

    /// The transport's latest estimate of the rate this link's path carries while sending, in
    /// bytes/s: QUIC's congestion window over its smoothed round trip, taken as a large frame is
    /// written (with a full pipe, bytes in flight over the round trip are the delivery rate,
    /// whatever the queue). None before the first estimate, and always for WebRTC.
    pub fn path_rate(&self) -> Option<u64> {
        Some(self.control.path_rate.load(Ordering::Relaxed)).filter(|&r| r > 0)
    }

    /// Whether `other` is a sender of the same link (not merely of a link to the same peer).
    pub fn same_link(&self, other: &LinkSender) -> bool {
        Arc::ptr_eq(&self.control.state, &other.control.state)
    }
}

/// The receiving half of a [`PeerLink`].
#[derive(Debug)]
pub struct LinkReceiver {
    rx: mpsc::Receiver<Bytes>,
    control: LinkControl,
}

impl LinkReceiver {
    /// The next frame from the peer (header + payload, at most `5 + MAX_FRAME_LEN` bytes), or
    /// `None` once the link is closed (by either side, or by a transport failure) and every frame
    /// received before that has been returned.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// Aborts the link, like [`LinkSender::close`].
    pub fn close(&self, reason: &str) {
        self.control.abort(CloseCause::Local, reason);
    }

    /// Whether the link is no longer open. Frames received earlier may still be buffered.
    pub fn is_closed(&self) -> bool {
        !self.control.is_open()
    }

    /// Why the link is no longer open, or `None` while it is open.
    pub fn close_reason(&self) -> Option<String> {
        self.control.reason()
    }
}

/// Why a link stopped being open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCause {
    /// Both directions ended gracefully.
    Finished,
    /// `close()` was called on this side.
    Local,
    /// The peer violated the framing, or a graceful end did not complete in time.
    Protocol,
    /// The peer closed the connection, or the transport failed (timeout, reset, ...).
    Remote,
}

impl fmt::Display for CloseCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseCause::Finished => "finished",
            CloseCause::Local => "closed locally",
            CloseCause::Protocol => "protocol error",
            CloseCause::Remote => "closed by peer or transport",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkState {
    Open,
    /// Ending gracefully: no new frames are accepted, queued ones are flushed.
    Draining(String),
    Closed {
        cause: CloseCause,
        reason: String,
    },
}

/// Shared state of one link, watched by both halves and the transport's tasks.
#[derive(Debug, Clone)]
pub(crate) struct LinkControl {
    state: Arc<watch::Sender<LinkState>>,
    /// The transport's latest estimate of the rate the path carries, bytes/s (0: none yet).
    path_rate: Arc<AtomicU64>,
}

impl LinkControl {
    fn new() -> Self {
        let (state, _) = watch::channel(LinkState::Open);
        Self {
            state: Arc::new(state),
            path_rate: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records the transport's estimate of the path's rate, bytes/s.
    pub(crate) fn set_path_rate(&self, rate: u64) {
        self.path_rate.store(rate, Ordering::Relaxed);
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(*self.state.borrow(), LinkState::Open)
    }

    /// Starts a graceful end (no-op unless the link is open).
    pub(crate) fn drain(&self, reason: &str) {
        self.state.send_if_modified(|state| {
            if matches!(state, LinkState::Open) {
                *state = LinkState::Draining(reason.to_owned());
                true
            } else {
                false
            }
        });
    }

    /// Closes the link (no-op if it is already closed: the first cause wins).
    pub(crate) fn abort(&self, cause: CloseCause, reason: &str) {
        self.state.send_if_modified(|state| {
            if matches!(state, LinkState::Closed { .. }) {
                false
            } else {
                *state = LinkState::Closed {
                    cause,
                    reason: reason.to_owned(),
                };
                true
            }
        });
    }

    /// The cause and reason, once closed.
    pub(crate) fn closed_cause(&self) -> Option<(CloseCause, String)> {
        match &*self.state.borrow() {
            LinkState::Closed { cause, reason } => Some((*cause, reason.clone())),
            _ => None,
        }
    }

    pub(crate) fn reason(&self) -> Option<String> {
        match &*self.state.borrow() {
            LinkState::Open => None,
            LinkState::Draining(reason) => Some(format!("ending: {reason}")),
            LinkState::Closed { cause, reason } => Some(format!("{cause}: {reason}")),
        }
    }

    /// Resolves once the link is draining or closed.
    pub(crate) async fn wait_not_open(&self) {
        let mut rx = self.state.subscribe();
        // `Err` would mean the sender was dropped, impossible while `self` holds it.
        let _ = rx.wait_for(|s| !matches!(s, LinkState::Open)).await;
    }

    /// Resolves once the link is closed.
    pub(crate) async fn wait_closed(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| matches!(s, LinkState::Closed { .. })).await;
    }
}

/// The sending side every transport shares: the next queued frame to write, or `None` when there
/// is nothing more to send. When every [`LinkSender`] is dropped the link starts draining; once
/// the link is not open, the frames queued before that are still returned and later ones refused.
/// After `None` the transport ends its direction gracefully.
pub(crate) async fn next_outgoing(
    outgoing: &mut mpsc::Receiver<Bytes>,
    control: &LinkControl,
) -> Option<Bytes> {
    tokio::select! {
        biased;
        frame = outgoing.recv() => {
            if frame.is_none() {
                control.drain("all senders dropped");
            }
            frame
        }
        () = control.wait_not_open() => {
            outgoing.close();
            outgoing.recv().await
        }
    }
}

/// The transport's ends of a new link's channels.
pub(crate) struct LinkEnds {
    /// Frames queued by the [`LinkSender`]s; `None` once all of them are dropped.
    pub(crate) outgoing: mpsc::Receiver<Bytes>,
    /// Where received frames go; dropping it makes the [`LinkReceiver`] return `None`.
    pub(crate) incoming: mpsc::Sender<Bytes>,
    pub(crate) control: LinkControl,
}

/// Creates a link's user-facing halves and the ends the transport's tasks serve.
pub(crate) fn new_link(
    remote_addr: RemoteAddr,
    remote_fingerprint: Option<String>,
) -> (PeerLink, LinkEnds) {
    let (out_tx, out_rx) = mpsc::channel(LINK_OUTGOING_CAPACITY);
    let (in_tx, in_rx) = mpsc::channel(LINK_CHANNEL_CAPACITY);
    let control = LinkControl::new();
    let link = PeerLink {
        remote_addr,
        remote_fingerprint,
        sender: LinkSender {
            tx: out_tx,
            control: control.clone(),
        },
        receiver: LinkReceiver {
            rx: in_rx,
            control: control.clone(),
        },
    };
    let ends = LinkEnds {
        outgoing: out_rx,
        incoming: in_tx,
        control,
    };
    (link, ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload_len: usize, announced: u32) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&announced.to_be_bytes());
        f.resize(FRAME_HEADER_LEN + payload_len, 7);
        f
    }

    #[test]
    fn check_frame_accepts_consistent_frames() {
        assert!(check_frame(&frame(1, 0, 0)).is_ok());
        assert!(check_frame(&frame(1, 10, 10)).is_ok());
        assert!(check_frame(&frame(1, MAX_FRAME_LEN, MAX_FRAME_LEN as u32)).is_ok());
    }

    #[test]
    fn check_frame_rejects_bad_frames() {
        assert!(matches!(
            check_frame(&[1, 0, 0]),
            Err(LinkError::InvalidFrame(_))
        ));
        assert!(matches!(
            check_frame(&frame(1, 10, 11)),
            Err(LinkError::InvalidFrame(_))
        ));
        assert!(matches!(
            check_frame(&frame(1, MAX_FRAME_LEN + 1, MAX_FRAME_LEN as u32 + 1)),
            Err(LinkError::FrameTooLarge(n)) if n == MAX_FRAME_LEN + 1
        ));
    }

    #[tokio::test]
    async fn close_is_first_cause_wins_and_fails_sends() {
        let (link, ends) = new_link(RemoteAddr::Label("test".into()), None);
        assert!(!link.sender.is_closed());
        link.sender.close("bye");
        ends.control.abort(CloseCause::Remote, "later");
        assert!(link.sender.is_closed());
        assert_eq!(
            link.sender.close_reason().as_deref(),
            Some("closed locally: bye")
        );
        assert!(matches!(
            link.sender.send(Bytes::from(frame(1, 1, 1))).await,
            Err(LinkError::Closed)
        ));
    }
}
