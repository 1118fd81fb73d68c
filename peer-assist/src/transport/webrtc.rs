//! Peer links over WebRTC data channels (webrtc-rs), negotiated through the tracker's `relay`.
//!
//! Browsers can only reach other peers over WebRTC, so a native node speaks it too. Nothing of
//! webrtc-rs leaks out of this module: the node feeds relayed signalling payloads in
//! ([`WebrtcTransport::handle_signal`]), sends what comes out of the outgoing channel as relays,
//! and gets a [`PeerLink`] when a data channel opens ([`WebrtcEvent::Open`]), so another
//! implementation (str0m, ...) can replace this one behind the same API.
//!
//! # Channel
//!
//! One reliable, ordered data channel labelled [`LABEL`] (`p2pa/1`) per peer connection, binary
//! messages, **one whole frame per message** (header + payload, at most [`MAX_MESSAGE_LEN`]
//! bytes). A received message that is a text message or not exactly one frame closes the link as
//! a protocol error; so does a message larger than [`MAX_MESSAGE_LEN`]. Outgoing frames are
//! checked by [`LinkSender::send`](super::LinkSender::send) like on every transport. Our SDP
//! advertises `a=max-message-size:70005` (webrtc-rs does not write the attribute, and without it
//! a browser assumes 64 KiB).
//!
//! # Signalling
//!
//! Payloads (JSON, through the tracker's `relay`): `{"kind":"offer","sdp":...}`,
//! `{"kind":"answer","sdp":...}` and `{"kind":"candidate","candidate":{"candidate":
//! "candidate:...","sdpMid":"0","sdpMLineIndex":0}}` — what `RTCIceCandidate.toJSON()` gives in a
//! browser; `usernameFragment` is accepted, unknown members are ignored, and `candidate: null` or
//! an empty candidate string (end of candidates) is ignored. Both sides trickle their candidates
//! (we never send an end-of-candidates marker); candidates inside a remote SDP work as well.
//! Candidates that arrive before the remote description are kept (up to
//! [`MAX_EARLY_CANDIDATES`]) and applied after it. mDNS (`.local`) candidates are ignored: mDNS is
//! disabled.
//!
//! Who offers: of two peers, the one with the greater peer id (byte order, as for QUIC dialing)
//! creates the data channel and sends the offer ([`WebrtcTransport::connect`] refuses a peer whose
//! id is not smaller than ours); the other answers. An offer from a peer with a greater id always
//! gets an answer: if we already have an attempt or a link with that peer, it is replaced (the
//! peer started over). An offer from a peer with a smaller id (a browser not following the rule)
//! is answered only if we have no attempt or link with that peer, and ignored otherwise.
//!
//! # ICE
//!
//! Host candidates only unless [`WebrtcConfig::ice_servers`] lists STUN/TURN URLs. Loopback
//! candidates are gathered; a specific [`WebrtcConfig::bind_ip`] (such as `127.0.0.1`) restricts
//! gathering to that address, the unspecified address gathers on every interface. ICE gives up on
//! a silent peer after 10 s (5 s to "disconnected", keep-alives every 2 s), like the QUIC idle
//! timeout.
//!
//! # Lifetime and closing
//!
//! Each attempt must reach an open data channel within [`WebrtcConfig::connect_timeout`]
//! (default [`CONNECT_TIMEOUT`]); otherwise, or when negotiation fails, it ends with
//! [`WebrtcEvent::Failed`] and its peer connection is closed. Once open, the link follows the
//! closing rules of the [`transport`](super) module as far as a data channel allows:
//!
//! * [`LinkSender::close`](super::LinkSender::close) aborts: the channel and the peer connection
//!   are closed at once, the peer's receiver returns `None`.
//! * Dropping every sender ends the link gracefully: queued frames are sent and acknowledged by
//!   the peer's SCTP stack (bounded by [`LINGER`]), then the channel is closed (SCTP stream
//!   reset) and so is the peer connection. A data channel has no half-close: the peer's receiver
//!   returns `None` after the last frame, and frames the peer had queued but not sent yet are
//!   lost. webrtc-rs drops messages its application has not read yet when the stream is reset,
//!   so a native receiver that lags more than [`LINK_CHANNEL_CAPACITY`](super::LINK_CHANNEL_CAPACITY)
//!   frames behind may lose the tail (the node aborts links, it never ends them gracefully).
//! * A peer connection that fails or is closed by the peer closes the link.
//!
//! The peer connection is closed whenever the link ends. Dropping the [`WebrtcTransport`] (or
//! [`WebrtcTransport::close`]) ends every attempt and link.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Mutex, Notify};
use tracing::debug;
use webrtc::api::setting_engine::{SctpMaxMessageSize, SettingEngine};
use webrtc::api::{APIBuilder, API};
use webrtc::data::data_channel::DataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::data_channel::RTCDataChannel;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

use super::{
    check_frame, new_link, CloseCause, LinkControl, LinkEnds, LinkError, PeerLink, RemoteAddr,
    FRAME_HEADER_LEN, LINGER, MAX_FRAME_LEN,
};

/// The data channel's label (the data protocol's version, like the QUIC ALPN).
pub const LABEL: &str = "p2pa/1";
/// Largest message: one frame with the largest payload.
pub const MAX_MESSAGE_LEN: usize = FRAME_HEADER_LEN + MAX_FRAME_LEN;
/// Default limit on the time from the start of an attempt to an open data channel.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Peer connections (attempts and links) at once; offers beyond are ignored.
pub const MAX_SESSIONS: usize = 64;
/// Remote candidates kept per attempt until the remote description is known.
pub const MAX_EARLY_CANDIDATES: usize = 64;
/// Longest SDP accepted from a peer (the tracker limits a whole message to 64 KiB anyway).
const MAX_SDP_LEN: usize = 64 * 1024;
/// `send` waits while more than this many bytes are queued in the SCTP stack ... (A larger
/// window does not make webrtc-rs faster: its SCTP moves 15–35 MB/s on loopback in a release build
/// either way, CPU not saturated.)
const SEND_HIGH_WATER: usize = 1024 * 1024;
/// ... until it is back below this.
const SEND_LOW_WATER: usize = 256 * 1024;
/// Close reason of a link whose session the transport stopped.
const STOPPED: &str = "session stopped (transport closed, or the peer started over)";
/// How often buffered-amount waits look again, in case a notification was missed.
const BUFFER_POLL: Duration = Duration::from_millis(20);

/// How the transport gathers candidates and how long attempts may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcConfig {
    /// STUN/TURN server URLs (`stun:stun.example.net:3478`); empty: host candidates only.
    pub ice_servers: Vec<String>,
    /// Gather candidates on this address only (a loopback address in tests); the unspecified
    /// address (`0.0.0.0`, `::`) gathers on every interface, loopback included.
    pub bind_ip: IpAddr,
    /// Limit on the time from the start of an attempt to an open data channel.
    pub connect_timeout: Duration,
}

impl WebrtcConfig {
    /// No ICE servers, [`CONNECT_TIMEOUT`], candidates on `bind_ip`.
    pub fn new(bind_ip: IpAddr) -> Self {
        Self {
            ice_servers: Vec::new(),
            bind_ip,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// The outcome of an attempt.
#[derive(Debug)]
pub enum WebrtcEvent {
    /// The data channel with `peer` is open.
    Open { peer: String, link: PeerLink },
    /// The attempt with `peer` failed (timed out, negotiation or ICE failed): treat the peer as
    /// unreachable for now.
    Failed { peer: String, error: LinkError },
}

/// Signalling payloads to relay: `(peer id, payload)`, in order.
pub type Outgoing = mpsc::UnboundedReceiver<(String, Value)>;

/// WebRTC peer links of one peer (see the [module documentation](self)).
pub struct WebrtcTransport {
    shared: Arc<Shared>,
    events: Mutex<mpsc::UnboundedReceiver<WebrtcEvent>>,
}

impl std::fmt::Debug for WebrtcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcTransport")
            .field("me", &self.shared.me())
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// Our peer id: a new tracker session (a reconnect) gives a new one.
    me: std::sync::RwLock<String>,
    api: API,
    rtc_config: RTCConfiguration,
    connect_timeout: Duration,
    outgoing: mpsc::UnboundedSender<(String, Value)>,
    events: mpsc::UnboundedSender<WebrtcEvent>,
    sessions: std::sync::Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    by_peer: HashMap<String, SessionHandle>,
    next_id: u64,
    closed: bool,
}

/// The transport's handle on a session task; dropping it stops the session.
struct SessionHandle {
    id: u64,
    signals: mpsc::UnboundedSender<Signal>,
    _stop: watch::Sender<()>,
}

/// A parsed signalling payload.
#[derive(Debug)]
enum Signal {
    Offer(String),
    Answer(String),
    Candidate(RTCIceCandidateInit),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Payload {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    Candidate {
        #[serde(default)]
        candidate: Option<CandidateJson>,
    },
}

/// `RTCIceCandidateInit` as browsers serialize it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateJson {
    #[serde(default)]
    candidate: Option<String>,
    #[serde(default)]
    sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    sdp_mline_index: Option<u16>,
    #[serde(default)]
    username_fragment: Option<String>,
}

impl WebrtcTransport {
    /// A transport for peer `me` (our id from the tracker's `welcome`), and the channel of the
    /// signalling payloads it wants relayed: send each as a `relay` to the peer it names.
    ///
    /// Must be called within a Tokio runtime.
    pub fn new(me: &str, config: WebrtcConfig) -> Result<(Self, Outgoing), LinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LinkError::Config(
                "WebrtcTransport::new must be called within a Tokio runtime".into(),
            ));
        }
        for url in &config.ice_servers {
            webrtc::ice::url::Url::parse_url(url)
                .map_err(|e| LinkError::Config(format!("ICE server {url:?}: {e}")))?;
        }
        let mut settings = SettingEngine::default();
        settings.detach_data_channels();
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        settings.set_include_loopback_candidate(true);
        if !config.bind_ip.is_unspecified() {
            let only = config.bind_ip;
            settings.set_ip_filter(Box::new(move |ip: IpAddr| ip == only));
        }
        settings.set_ice_timeouts(
            Some(Duration::from_secs(5)),
            Some(Duration::from_secs(10)),
            Some(Duration::from_secs(2)),
        );
        settings.set_sctp_max_message_size_can_send(SctpMaxMessageSize::Bounded(
            MAX_MESSAGE_LEN as u32,
        ));
        let api = APIBuilder::new().with_setting_engine(settings).build();
        let rtc_config = RTCConfiguration {
            ice_servers: if config.ice_servers.is_empty() {
                Vec::new()
            } else {
                vec![RTCIceServer {
                    urls: config.ice_servers.clone(),
                    ..RTCIceServer::default()
                }]
            },
            ..RTCConfiguration::default()
        };
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            me: std::sync::RwLock::new(me.to_owned()),
            api,
            rtc_config,
            connect_timeout: config.connect_timeout,
            outgoing,
            events,
            sessions: std::sync::Mutex::new(Sessions::default()),
        });
        Ok((
            Self {
                shared,
                events: Mutex::new(events_rx),
            },
            outgoing_rx,
        ))
    }

    /// Our peer id.
    pub fn me(&self) -> String {
        self.shared.me()
    }

    /// Our new peer id, after a new tracker session (a reconnect): who offers to whom follows it.
    pub fn set_me(&self, me: &str) {
        *self.shared.me.write().unwrap_or_else(|e| e.into_inner()) = me.to_owned();
    }

    /// Starts an attempt with `peer` as the offerer: creates the data channel and sends an offer.
    /// Its outcome arrives as a [`WebrtcEvent`]. If an attempt or a link with `peer` exists
    /// already, nothing new is started (that one's outcome will arrive, unless it is open).
    ///
    /// Fails at once if `peer` is not smaller than our id (the peer with the greater id offers),
    /// if there are [`MAX_SESSIONS`] already, or if the transport is closed.
    pub fn connect(&self, peer: &str) -> Result<(), LinkError> {
        if peer >= self.shared.me().as_str() {
            return Err(LinkError::Connect(format!(
                "{peer}: the peer with the greater id offers, and it is not us"
            )));
        }
        let mut sessions = self.shared.lock_sessions();
        if sessions.by_peer.contains_key(peer) {
            return Ok(());
        }
        self.shared.start_session(&mut sessions, peer, None)
    }

    /// Feeds a signalling payload relayed from `from`. Fails (the caller logs it) on a payload
    /// that is not one of the shapes of the [module documentation](self); the attempt, if any,
    /// goes on. Payloads for peers we have no attempt with are ignored, except offers.
    pub fn handle_signal(&self, from: &str, payload: &Value) -> Result<(), LinkError> {
        let payload = Payload::deserialize(payload)
            .map_err(|e| LinkError::Signalling(format!("from {from}: {e}")))?;
        let signal = match payload {
            Payload::Offer { sdp } | Payload::Answer { sdp } if sdp.len() > MAX_SDP_LEN => {
                return Err(LinkError::Signalling(format!(
                    "from {from}: SDP of {} bytes (maximum {MAX_SDP_LEN})",
                    sdp.len()
                )))
            }
            Payload::Offer { sdp } => Signal::Offer(sdp),
            Payload::Answer { sdp } => Signal::Answer(sdp),
            Payload::Candidate { candidate: None } => return Ok(()),
            Payload::Candidate { candidate: Some(c) } => {
                let text = c.candidate.unwrap_or_default();
                if text.trim().is_empty() {
                    return Ok(()); // end of candidates
                }
                Signal::Candidate(RTCIceCandidateInit {
                    candidate: text,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                    username_fragment: c.username_fragment,
                })
            }
        };
        let me = self.shared.me();
        let me = me.as_str();
        if from == me {
            return Ok(());
        }
        let mut sessions = self.shared.lock_sessions();
        match signal {
            Signal::Offer(sdp) => {
                if sessions.by_peer.contains_key(from) {
                    if from < me {
                        debug!(peer = %from, "ignoring an offer from a smaller peer id: we have a session");
                        return Ok(());
                    }
                    debug!(peer = %from, "new offer: replacing the session with that peer");
                    sessions.by_peer.remove(from);
                }
                self.shared
                    .start_session(&mut sessions, from, Some(Signal::Offer(sdp)))
            }
            other => {
                if let Some(session) = sessions.by_peer.get(from) {
                    let _ = session.signals.send(other);
                }
                Ok(())
            }
        }
    }

    /// The next outcome of an attempt; `None` once the transport is dropped.
    pub async fn next_event(&self) -> Option<WebrtcEvent> {
        self.events.lock().await.recv().await
    }

    /// Ends every attempt and link (their peer connections are closed); later attempts fail.
    pub fn close(&self) {
        let mut sessions = self.shared.lock_sessions();
        sessions.closed = true;
        sessions.by_peer.clear();
    }
}

impl Drop for WebrtcTransport {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn me(&self) -> String {
        self.me.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_session(
        self: &Arc<Self>,
        sessions: &mut Sessions,
        peer: &str,
        offer: Option<Signal>,
    ) -> Result<(), LinkError> {
        if sessions.closed {
            return Err(LinkError::Closed);
        }
        if sessions.by_peer.len() >= MAX_SESSIONS {
            return Err(LinkError::Connect(format!(
                "{peer}: already {MAX_SESSIONS} WebRTC sessions"
            )));
        }
        sessions.next_id += 1;
        let id = sessions.next_id;
        let (signals, signals_rx) = mpsc::unbounded_channel();
        let offerer = offer.is_none();
        if let Some(offer) = offer {
            let _ = signals.send(offer);
        }
        let (stop, stop_rx) = watch::channel(());
        sessions.by_peer.insert(
            peer.to_owned(),
            SessionHandle {
                id,
                signals,
                _stop: stop,
            },
        );
        let session = Session {
            shared: Arc::clone(self),
            peer: peer.to_owned(),
            id,
            offerer,
            signals: signals_rx,
            stop: stop_rx,
        };
        tokio::spawn(session.run());
        Ok(())
    }

    /// Forgets session `id` of `peer` (not a newer one that replaced it).
    fn remove_session(&self, peer: &str, id: u64) {
        let mut sessions = self.lock_sessions();
        if sessions.by_peer.get(peer).is_some_and(|s| s.id == id) {
            sessions.by_peer.remove(peer);
        }
    }

    fn send(&self, peer: &str, payload: Value) {
        let _ = self.outgoing.send((peer.to_owned(), payload));
    }
}

/// What webrtc-rs callbacks tell a session.
enum PcEvent {
    Candidate(RTCIceCandidate),
    State(RTCPeerConnectionState),
    Open(Arc<DataChannel>),
}

/// One peer connection with one peer, from the first signal to the end of its link.
struct Session {
    shared: Arc<Shared>,
    peer: String,
    id: u64,
    offerer: bool,
    signals: mpsc::UnboundedReceiver<Signal>,
    /// Changes (is dropped) when the transport stops this session.
    stop: watch::Receiver<()>,
}

/// Negotiation state of a session.
struct Negotiation {
    pc: Arc<RTCPeerConnection>,
    offerer: bool,
    remote_set: bool,
    early: Vec<RTCIceCandidateInit>,
    /// `sdpMid` / `sdpMLineIndex` of our data section, for the candidates we send.
    mid: String,
    mline: u16,
}

/// Why negotiation stopped without an open channel.
enum Stopped {
    Failed(LinkError),
    /// Transport closed or session replaced: nobody waits for an outcome.
    Quiet,
}

impl Session {
    async fn run(mut self) {
        let pc = match self
            .shared
            .api
            .new_peer_connection(self.shared.rtc_config.clone())
            .await
        {
            Ok(pc) => Arc::new(pc),
            Err(e) => {
                self.fail(LinkError::Connect(format!(
                    "creating the peer connection: {e}"
                )));
                return;
            }
        };
        let (pc_tx, mut pc_events) = mpsc::unbounded_channel();
        install_callbacks(&pc, &pc_tx);
        let mut negotiation = Negotiation {
            pc: Arc::clone(&pc),
            offerer: self.offerer,
            remote_set: false,
            early: Vec::new(),
            mid: "0".to_owned(),
            mline: 0,
        };
        let deadline = tokio::time::sleep(self.shared.connect_timeout);
        tokio::pin!(deadline);
        let opened = async {
            if self.offerer {
                negotiation.offer(&self.shared, &self.peer, &pc_tx).await?;
            }
            loop {
                tokio::select! {
                    () = &mut deadline => {
                        return Err(Stopped::Failed(LinkError::Connect(format!(
                            "{}: no open data channel within {:?}",
                            self.peer, self.shared.connect_timeout
                        ))));
                    }
                    _ = self.stop.changed() => return Err(Stopped::Quiet),
                    signal = self.signals.recv() => match signal {
                        Some(signal) => negotiation.handle(&self.shared, &self.peer, signal).await?,
                        None => return Err(Stopped::Quiet),
                    },
                    event = pc_events.recv() => match event {
                        Some(PcEvent::Candidate(c)) => negotiation.send_candidate(&self.shared, &self.peer, &c),
                        Some(PcEvent::State(state)) => {
                            if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                                return Err(Stopped::Failed(LinkError::Connect(format!(
                                    "{}: peer connection {state}", self.peer
                                ))));
                            }
                        }
                        Some(PcEvent::Open(channel)) => return Ok(channel),
                        None => return Err(Stopped::Quiet),
                    },
                }
            }
        }
        .await;
        let channel = match opened {
            Ok(channel) => channel,
            Err(stopped) => {
                close_pc(&pc).await;
                if let Stopped::Failed(error) = stopped {
                    debug!(peer = %self.peer, %error, "WebRTC attempt failed");
                    self.fail(error);
                } else {
                    self.shared.remove_session(&self.peer, self.id);
                }
                return;
            }
        };
        let (link, ends) = new_link(RemoteAddr::Label(self.peer.clone()), None);
        let control = ends.control.clone();
        if self
            .shared
            .events
            .send(WebrtcEvent::Open {
                peer: self.peer.clone(),
                link,
            })
            .is_err()
        {
            control.abort(CloseCause::Local, "transport dropped");
        }
        debug!(peer = %self.peer, "WebRTC data channel open");
        let serving = serve(Arc::clone(&channel), ends);
        tokio::pin!(serving);
        loop {
            tokio::select! {
                biased;
                () = &mut serving => break,
                _ = self.stop.changed() => {
                    control.abort(CloseCause::Local, STOPPED);
                }
                signal = self.signals.recv() => match signal {
                    // Late candidates; anything else is ignored once open.
                    Some(signal) => {
                        let _ = negotiation.handle(&self.shared, &self.peer, signal).await;
                    }
                    None => control.abort(CloseCause::Local, STOPPED),
                },
                event = pc_events.recv() => match event {
                    Some(PcEvent::State(state @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed))) => {
                        control.abort(CloseCause::Remote, &format!("peer connection {state}"));
                    }
                    Some(_) => {}
                    None => control.abort(CloseCause::Remote, "peer connection gone"),
                },
            }
        }
        // Forget the session first: the node may try again as soon as it sees the link end.
        self.shared.remove_session(&self.peer, self.id);
        let _ = channel.close().await;
        close_pc(&pc).await;
        debug!(peer = %self.peer, reason = ?control.closed_cause(), "WebRTC link closed");
    }

    fn fail(&self, error: LinkError) {
        self.shared.remove_session(&self.peer, self.id);
        let _ = self.shared.events.send(WebrtcEvent::Failed {
            peer: self.peer.clone(),
            error,
        });
    }
}

async fn close_pc(pc: &RTCPeerConnection) {
    if let Err(e) = pc.close().await {
        debug!(error = %e, "closing the peer connection");
    }
}

/// Routes webrtc-rs callbacks to the session's event channel.
fn install_callbacks(pc: &Arc<RTCPeerConnection>, tx: &mpsc::UnboundedSender<PcEvent>) {
    let candidates = tx.clone();
    pc.on_ice_candidate(Box::new(move |candidate| {
        if let Some(candidate) = candidate {
            let _ = candidates.send(PcEvent::Candidate(candidate));
        }
        Box::pin(async {})
    }));
    let states = tx.clone();
    pc.on_peer_connection_state_change(Box::new(move |state| {
        let _ = states.send(PcEvent::State(state));
        Box::pin(async {})
    }));
    let channels = tx.clone();
    pc.on_data_channel(Box::new(move |channel| {
        if channel.label() == LABEL {
            on_open_detach(&channel, &channels);
        } else {
            debug!(label = %channel.label(), "ignoring a data channel with another label");
            let unwanted = Arc::clone(&channel);
            tokio::spawn(async move {
                let _ = unwanted.close().await;
            });
        }
        Box::pin(async {})
    }));
}

/// Once `channel` is open, detaches it and hands it to the session.
fn on_open_detach(channel: &Arc<RTCDataChannel>, tx: &mpsc::UnboundedSender<PcEvent>) {
    let opened = Arc::clone(channel);
    let tx = tx.clone();
    channel.on_open(Box::new(move || {
        Box::pin(async move {
            match opened.detach().await {
                Ok(raw) => {
                    let _ = tx.send(PcEvent::Open(raw));
                }
                Err(e) => debug!(error = %e, "detaching the data channel"),
            }
        })
    }));
}

impl Negotiation {
    async fn offer(
        &mut self,
        shared: &Shared,
        peer: &str,
        pc_tx: &mpsc::UnboundedSender<PcEvent>,
    ) -> Result<(), Stopped> {
        let failed = |what: &str, e: webrtc::Error| {
            Stopped::Failed(LinkError::Connect(format!("{peer}: {what}: {e}")))
        };
        let channel = self
            .pc
            .create_data_channel(
                LABEL,
                Some(RTCDataChannelInit {
                    ordered: Some(true),
                    ..RTCDataChannelInit::default()
                }),
            )
            .await
            .map_err(|e| failed("creating the data channel", e))?;
        on_open_detach(&channel, pc_tx);
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(|e| failed("creating the offer", e))?;
        let sdp = offer.sdp.clone();
        self.pc
            .set_local_description(offer)
            .await
            .map_err(|e| failed("setting the offer", e))?;
        self.note_local_mid(&sdp);
        shared.send(
            peer,
            json!({"kind": "offer", "sdp": advertise_max_message_size(&sdp)}),
        );
        Ok(())
    }

    async fn handle(&mut self, shared: &Shared, peer: &str, signal: Signal) -> Result<(), Stopped> {
        let failed = |what: &str, e: webrtc::Error| {
            Stopped::Failed(LinkError::Connect(format!("{peer}: {what}: {e}")))
        };
        match signal {
            Signal::Offer(sdp) => {
                if self.offerer || self.remote_set {
                    debug!(%peer, "ignoring an unexpected offer");
                    return Ok(());
                }
                let offer = RTCSessionDescription::offer(without_mdns_candidates(&sdp))
                    .map_err(|e| failed("parsing the offer", e))?;
                self.pc
                    .set_remote_description(offer)
                    .await
                    .map_err(|e| failed("applying the offer", e))?;
                self.remote_set = true;
                let answer = self
                    .pc
                    .create_answer(None)
                    .await
                    .map_err(|e| failed("creating the answer", e))?;
                let sdp = answer.sdp.clone();
                self.pc
                    .set_local_description(answer)
                    .await
                    .map_err(|e| failed("setting the answer", e))?;
                self.note_local_mid(&sdp);
                shared.send(
                    peer,
                    json!({"kind": "answer", "sdp": advertise_max_message_size(&sdp)}),
                );
                self.apply_early(peer).await;
            }
            Signal::Answer(sdp) => {
                if !self.offerer || self.remote_set {
                    debug!(%peer, "ignoring an unexpected answer");
                    return Ok(());
                }
                let answer = RTCSessionDescription::answer(without_mdns_candidates(&sdp))
                    .map_err(|e| failed("parsing the answer", e))?;
                self.pc
                    .set_remote_description(answer)
                    .await
                    .map_err(|e| failed("applying the answer", e))?;
                self.remote_set = true;
                self.apply_early(peer).await;
            }
            Signal::Candidate(candidate) => {
                if is_mdns_candidate(&candidate.candidate) {
                    debug!(%peer, "ignoring an mDNS candidate");
                } else if self.remote_set {
                    self.add_candidate(peer, candidate).await;
                } else if self.early.len() < MAX_EARLY_CANDIDATES {
                    self.early.push(candidate);
                }
            }
        }
        Ok(())
    }

    async fn apply_early(&mut self, peer: &str) {
        for candidate in std::mem::take(&mut self.early) {
            self.add_candidate(peer, candidate).await;
        }
    }

    async fn add_candidate(&self, peer: &str, candidate: RTCIceCandidateInit) {
        if let Err(e) = self.pc.add_ice_candidate(candidate).await {
            debug!(%peer, error = %e, "ignoring a remote candidate");
        }
    }

    fn send_candidate(&self, shared: &Shared, peer: &str, candidate: &RTCIceCandidate) {
        match candidate.to_json() {
            Ok(init) => shared.send(
                peer,
                json!({"kind": "candidate", "candidate": {
                    "candidate": init.candidate,
                    "sdpMid": self.mid,
                    "sdpMLineIndex": self.mline,
                }}),
            ),
            Err(e) => debug!(%peer, error = %e, "cannot encode a local candidate"),
        }
    }

    /// Remembers the mid and m-line index of our data section (webrtc-rs gives its candidates an
    /// empty `sdpMid`, which browsers refuse).
    fn note_local_mid(&mut self, sdp: &str) {
        if let Some((mline, mid)) = application_mid(sdp) {
            self.mline = mline;
            self.mid = mid;
        }
    }
}

/// The m-line index and mid of the first `m=application` section of `sdp`.
fn application_mid(sdp: &str) -> Option<(u16, String)> {
    let mut index: Option<u16> = None;
    let mut in_application = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            index = Some(index.map_or(0, |i| i.saturating_add(1)));
            in_application = media.starts_with("application");
        } else if in_application {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                return Some((index.unwrap_or(0), mid.to_owned()));
            }
        }
    }
    None
}

/// `sdp` with `a=max-message-size:70005` in its data section if it has none.
fn advertise_max_message_size(sdp: &str) -> String {
    if sdp.contains("a=max-message-size:") {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 32);
    for line in sdp.split_inclusive('\n') {
        out.push_str(line);
        if line.starts_with("a=sctp-port:") {
            out.push_str(&format!("a=max-message-size:{MAX_MESSAGE_LEN}\r\n"));
        }
    }
    out
}

/// Whether an ICE candidate line (`candidate:...` or `a=candidate:...`) has an mDNS host name.
fn is_mdns_candidate(candidate: &str) -> bool {
    candidate
        .split_whitespace()
        .nth(4)
        .is_some_and(|address| address.ends_with(".local"))
}

/// `sdp` without its mDNS candidates (mDNS is disabled: they could only be ignored).
fn without_mdns_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|line| !(line.starts_with("a=candidate:") && is_mdns_candidate(line)))
        .collect()
}

/// Pumps frames between the link's channels and the open data channel until the link ends.
async fn serve(channel: Arc<DataChannel>, ends: LinkEnds) {
    let LinkEnds {
        outgoing,
        incoming,
        control,
    } = ends;
    let low = Arc::new(Notify::new());
    channel.set_buffered_amount_low_threshold(SEND_LOW_WATER);
    {
        let low = Arc::clone(&low);
        channel.on_buffered_amount_low(Box::new(move || {
            low.notify_one();
            Box::pin(async {})
        }));
    }
    // Reading is not cancel-safe in webrtc-rs: it runs in its own task, which ends when the
    // channel or the peer connection closes.
    let reader = tokio::spawn(read_loop(Arc::clone(&channel), incoming, control.clone()));
    let reader_abort = reader.abort_handle();
    let writing = write_loop(&channel, outgoing, &control, &low);
    let linger = async {
        control.wait_not_open().await;
        tokio::time::sleep(LINGER).await;
    };
    let mut pump = Box::pin(async {
        let (_, _) = tokio::join!(writing, reader);
    });
    tokio::select! {
        biased;
        () = control.wait_closed() => {}
        () = &mut pump => control.abort(CloseCause::Finished, "both directions ended"),
        () = linger => control.abort(
            CloseCause::Protocol,
            &format!("graceful end did not complete within {LINGER:?}"),
        ),
    }
    drop(pump);
    reader_abort.abort();
}

/// Delivers the peer's messages as frames until the channel ends or a message is not one frame.
/// Once the receiver is dropped, messages are still read (and checked) but discarded.
async fn read_loop(channel: Arc<DataChannel>, incoming: mpsc::Sender<Bytes>, control: LinkControl) {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut incoming = Some(incoming);
    loop {
        match channel.read_data_channel(&mut buf).await {
            // End of the channel (an empty message reads the same, and is not a frame anyway).
            Ok((0, _)) => {
                control.drain("peer closed the data channel");
                return;
            }
            Ok((_, true)) => {
                control.abort(CloseCause::Protocol, "text message on the data channel");
                return;
            }
            Ok((n, false)) => {
                let Some(message) = buf.get(..n) else {
                    control.abort(CloseCause::Protocol, "message longer than the buffer");
                    return;
                };
                if let Err(e) = check_frame(message) {
                    control.abort(
                        CloseCause::Protocol,
                        &format!("message is not one whole frame: {e}"),
                    );
                    return;
                }
                if let Some(tx) = &incoming {
                    if tx.send(Bytes::copy_from_slice(message)).await.is_err() {
                        incoming = None;
                    }
                }
            }
            Err(webrtc::data::Error::Sctp(webrtc::sctp::Error::ErrShortBuffer { .. })) => {
                control.abort(
                    CloseCause::Protocol,
                    &format!("message larger than {MAX_MESSAGE_LEN} bytes"),
                );
                return;
            }
            Err(e) => {
                control.abort(CloseCause::Remote, &format!("reading: {e}"));
                return;
            }
        }
    }
}

/// Sends queued frames until the senders are gone or the link drains, then waits until the peer
/// has acknowledged everything and closes the channel.
async fn write_loop(
    channel: &DataChannel,
    mut outgoing: mpsc::Receiver<Bytes>,
    control: &LinkControl,
    low: &Notify,
) {
    while let Some(frame) = super::next_outgoing(&mut outgoing, control).await {
        if !write_frame(channel, frame, control, low).await {
            return;
        }
    }
    while channel.buffered_amount() > 0 {
        let _ = tokio::time::timeout(BUFFER_POLL, low.notified()).await;
    }
    if let Err(e) = channel.close().await {
        debug!(error = %e, "closing the data channel");
    }
}

async fn write_frame(
    channel: &DataChannel,
    frame: Bytes,
    control: &LinkControl,
    low: &Notify,
) -> bool {
    if let Err(e) = channel.write_data_channel(&frame, false).await {
        control.abort(CloseCause::Remote, &format!("writing: {e}"));
        return false;
    }
    while channel.buffered_amount() > SEND_HIGH_WATER {
        let _ = tokio::time::timeout(BUFFER_POLL, low.notified()).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
        a=candidate:1 1 udp 2113937151 4f1c6c9e-3b2f.local 54321 typ host generation 0\r\n\
        a=candidate:2 1 udp 2113937151 127.0.0.1 54322 typ host generation 0\r\n\
        a=mid:0\r\na=sctp-port:5000\r\n";

    #[test]
    fn sdp_helpers() {
        assert_eq!(application_mid(OFFER), Some((0, "0".to_owned())));
        let two = "v=0\r\nm=audio 9 RTP/AVP 0\r\na=mid:a\r\nm=application 9 x\r\na=mid:data\r\n";
        assert_eq!(application_mid(two), Some((1, "data".to_owned())));
        assert_eq!(application_mid("v=0\r\n"), None);

        let advertised = advertise_max_message_size(OFFER);
        assert!(advertised.ends_with("a=sctp-port:5000\r\na=max-message-size:70005\r\n"));
        assert_eq!(advertise_max_message_size(&advertised), advertised);

        let cleaned = without_mdns_candidates(OFFER);
        assert!(!cleaned.contains(".local"));
        assert!(cleaned.contains("127.0.0.1 54322"));
        assert!(is_mdns_candidate(
            "candidate:1 1 udp 2113937151 abc.local 5000 typ host"
        ));
        assert!(!is_mdns_candidate(
            "candidate:1 1 udp 2113937151 127.0.0.1 5000 typ host"
        ));
        assert!(!is_mdns_candidate("garbage"));
    }

    #[tokio::test]
    async fn payloads_parse_like_browsers_send_them() {
        let (t, _out) =
            WebrtcTransport::new("m", WebrtcConfig::new([127, 0, 0, 1].into())).unwrap();
        // Candidates for peers without a session are ignored; end of candidates too.
        let ok = [
            json!({"kind": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "abcd"}}),
            json!({"kind": "candidate", "candidate": null}),
            json!({"kind": "candidate", "candidate": {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}}),
            json!({"kind": "answer", "sdp": "v=0\r\n", "extra": 1}),
        ];
        for payload in ok {
            t.handle_signal("a", &payload).unwrap();
        }
        for bad in [
            json!({"kind": "hello"}),
            json!({"sdp": "v=0"}),
            json!("offer"),
            json!({"kind": "offer"}),
            json!({"kind": "offer", "sdp": "x".repeat(MAX_SDP_LEN + 1)}),
        ] {
            assert!(
                matches!(t.handle_signal("a", &bad), Err(LinkError::Signalling(_))),
                "{bad}"
            );
        }
        assert!(
            matches!(t.connect("z"), Err(LinkError::Connect(_))),
            "z > m offers"
        );
        assert!(matches!(t.connect("m"), Err(LinkError::Connect(_))));
        assert!(WebrtcTransport::new(
            "m",
            WebrtcConfig {
                ice_servers: vec!["http://example.com".into()],
                ..WebrtcConfig::new([127, 0, 0, 1].into())
            }
        )
        .is_err());
    }
}
