//! Peer links over QUIC (quinn + rustls with the ring provider).
//!
//! # Streams
//!
//! One QUIC connection per link, carrying exactly **one bidirectional stream**: the connecting
//! side opens it right after the handshake, the accepting side accepts it. Both directions carry
//! the frames back to back; the reader takes the 5-byte header, rejects a length above
//! [`MAX_FRAME_LEN`] (the link is closed with a protocol error, the peer sees QUIC application
//! error code 2), then the payload, and delivers header + payload as one [`Bytes`].
//!
//! QUIC announces a stream to the peer only once data is written on it, so the accepting side
//! learns about the stream when the connecting side sends its first frame. [`QuicTransport::accept`]
//! does not wait for that: it yields the link as soon as the TLS handshake is complete, and the
//! link's task accepts the stream in the background (frames sent meanwhile are queued). The data
//! protocol starts with a Handshake frame from both sides, so the connector's first `send` makes
//! the stream visible immediately; a connector that sends nothing within
//! [`STREAM_OPEN_TIMEOUT`] gets its connection closed.
//!
//! Data flows on that one stream only. The accepting side allows the peer exactly one concurrent
//! bidirectional stream, the connecting side none; each side allows the peer one unidirectional
//! stream, used only to end a link gracefully (below). This bounds what a peer can make us buffer
//! to about two stream windows per connection (quinn's default of 100 + 100 streams that we would
//! never read would let a peer pin 200 windows).
//!
//! # Graceful end
//!
//! A side finishes its direction of the stream (QUIC FIN) when all its senders are dropped or
//! when it has read the peer's FIN (see the module documentation of
//! [`transport`](super)). QUIC acknowledges data once its stack has it, not once the application
//! has read it, and a CONNECTION_CLOSE lets the peer discard data it has not delivered yet. So,
//! after reading the peer's FIN (having consumed everything), each side opens and immediately
//! finishes an empty unidirectional stream: "I have consumed your stream". A side closes the
//! connection (application code 0) only when it has read the peer's FIN, its own data is
//! acknowledged, and it got that signal. Whoever closes first, nothing unread is cut off.
//!
//! # Certificate pinning
//!
//! Each peer has a self-signed certificate ([`QuicIdentity`]); the tracker publishes its
//! SHA-256 fingerprint. [`QuicTransport::connect`] installs a verifier that accepts exactly the
//! certificate with that fingerprint (names, dates and chains are not looked at) and checks the
//! TLS 1.3 `CertificateVerify` signature with the ring provider, so the peer proves possession
//! of the certificate's key. The connector presents its own certificate too (mutual TLS), and the
//! accepting side checks that it holds that certificate's key; [`PeerLink::remote_fingerprint`]
//! gives its fingerprint on both sides, and the node compares it with the one the tracker
//! published for the peer id the link's Handshake claims, so no peer can pass for another.
//! TLS 1.3 only, ALPN `p2pa/1` required on both sides.
//!
//! # Lifetime
//!
//! Dropping the [`QuicTransport`] (or calling [`QuicTransport::close`]) closes the endpoint and
//! with it every link it made or accepted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    Connection, ConnectionError, ReadError, RecvStream, SendStream, StoppedError, VarInt,
    WriteError,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::DistinguishedName;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tracing::debug;

use super::{
    new_link, CloseCause, LinkControl, LinkEnds, LinkError, PeerLink, RemoteAddr, ALPN,
    FRAME_HEADER_LEN, LINGER, MAX_FRAME_LEN,
};

/// The name every peer certificate is issued for and every connection asks for. It is not
/// checked (the fingerprint is); `.invalid` makes sure it never resolves to anything.
pub const SERVER_NAME: &str = "peer-assist.invalid";
/// Limit on the QUIC + TLS handshake of one connection, both sides.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted connection may go without the connector's first frame.
pub const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken links waiting for [`QuicTransport::accept`].
const ACCEPT_QUEUE: usize = 32;
/// Largest chunk taken from quinn at once when reading a stream.
const READ_CHUNK: usize = 256 * 1024;

/// QUIC application error codes used when a link's connection is closed.
mod code {
    /// Both directions ended gracefully (or the peer closed first).
    pub const DONE: u32 = 0;
    /// `close()` was called.
    pub const CLOSED: u32 = 1;
    /// The peer violated the framing (frame too large, truncated frame, ...).
    pub const PROTOCOL: u32 = 2;
    /// The endpoint was closed or dropped.
    pub const SHUTDOWN: u32 = 3;
}

/// Lowercase hex SHA-256 of a certificate's DER encoding: the fingerprint the tracker publishes.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Parses a fingerprint: 64 hex digits, either case, optionally `:`-separated.
fn parse_fingerprint(fingerprint: &str) -> Result<[u8; 32], LinkError> {
    let digits: String = fingerprint.trim().chars().filter(|c| *c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).map_err(|e| {
        LinkError::Connect(format!(
            "invalid fingerprint {fingerprint:?} (want 64 hex digits): {e}"
        ))
    })?;
    Ok(out)
}

/// A peer's TLS identity: a self-signed certificate and its private key.
#[derive(Clone)]
pub struct QuicIdentity {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    key_der: Vec<u8>,
    /// Lowercase hex SHA-256 of `cert_der`.
    pub fingerprint: String,
}

impl QuicIdentity {
    /// A fresh ECDSA P-256 key and a self-signed certificate for [`SERVER_NAME`].
    pub fn generate() -> Result<Self, LinkError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| LinkError::Tls(format!("generating the certificate: {e}")))?;
        let cert_der = certified.cert.der().to_vec();
        let fingerprint = fingerprint_of(&cert_der);
        Ok(Self {
            cert_der,
            key_der: certified.signing_key.serialize_der(),
            fingerprint,
        })
    }
}

impl std::fmt::Debug for QuicIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Flow-control and liveness settings of every connection of a [`QuicTransport`].
///
/// Zero durations disable the idle timeout / keep-alives (quinn's `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicTuning {
    /// Bytes the peer may send on our one stream beyond what we have read (per-stream receive
    /// window).
    pub stream_receive_window: u64,
    /// Bytes the peer may send on the whole connection beyond what we have read.
    pub receive_window: u64,
    /// Bytes we buffer for sending per connection, unacknowledged data included.
    pub send_window: u64,
    /// The connection is dropped after this long without hearing from the peer (the smaller of
    /// both sides' values applies).
    pub max_idle_timeout: Duration,
    /// Interval of keep-alive packets when nothing else is sent; must be well below the idle
    /// timeout for idle links to survive.
    pub keep_alive: Duration,
    /// `SO_RCVBUF` requested for the UDP socket, in bytes; 0 keeps the OS default. Best effort:
    /// Linux caps it at `net.core.rmem_max`. Datagrams arriving while it is full are dropped
    /// and count as losses for congestion control.
    pub udp_recv_buffer: usize,
    /// Congestion window of a new connection in bytes (Cubic's initial window); 0 keeps quinn's,
    /// RFC 9002's ten datagrams (12,000 bytes).
    pub initial_window: u64,
}

impl QuicTuning {
    /// The settings this crate uses: 4 MiB stream and connection receive windows, 8 MiB send
    /// window, 4 MiB UDP receive buffer, 10 s idle timeout, 3 s keep-alive, 64 KiB initial
    /// congestion window.
    ///
    /// Chosen from `cargo bench -p peer-assist --bench quic_windows`, 2026-11-21, on a shared
    /// 2-core VM (AMD EPYC, 23 GiB, Linux, `net.core.rmem_max` = 4 MiB; other jobs were
    /// running, load average ~2–3). A 2 MiB segment in 16 KiB frames over one link; medians of
    /// 5 runs of 6 segments each on an established link, candidates taking turns:
    ///
    /// | tuning | loopback 1→1 | loopback 1→4 (per round) | 20 ms RTT relay, 1→1 | UDP drops/run (relay) |
    /// |---|---:|---:|---:|---:|
    /// | quinn defaults (1.25 MB stream, 10 MB send) | 3.5 ms (605 MB/s) | 9.0 ms (933 MB/s) | 85.4 ms (25 MB/s) | 91 |
    /// | 1 MiB windows, 2 MiB send | 2.6 ms (798 MB/s) | 8.9 ms (945 MB/s) | 89.9 ms (23 MB/s) | 81 |
    /// | 4 MiB windows, 8 MiB send | 3.2 ms (665 MB/s) | 8.6 ms (972 MB/s) | 80.3 ms (26 MB/s) | 159 |
    /// | 8 MiB windows, 16 MiB send | 3.1 ms (683 MB/s) | 8.7 ms (962 MB/s) | 77.8 ms (27 MB/s) | 137 |
    /// | quinn default windows + 4 MiB UDP rcvbuf | 3.0 ms (698 MB/s) | 8.8 ms (953 MB/s) | 47.8 ms (44 MB/s) | 0 |
    /// | 1 MiB windows + 4 MiB UDP rcvbuf | 2.6 ms (822 MB/s) | 9.2 ms (910 MB/s) | 59.5 ms (35 MB/s) | 0 |
    /// | **4 MiB windows + 4 MiB UDP rcvbuf (this)** | 3.2 ms (655 MB/s) | 10.2 ms (822 MB/s) | **26.2 ms (80 MB/s)** | 0 |
    /// | 8 MiB windows + 4 MiB UDP rcvbuf | 3.0 ms (692 MB/s) | 9.4 ms (889 MB/s) | 26.9 ms (78 MB/s) | 0 |
    ///
    /// Reading:
    /// * On loopback the windows make no measurable difference: the run-to-run spread
    ///   (e.g. 2.4–6.2 ms for the same candidate) exceeds the gaps between candidates. The RTT
    ///   is ~50 µs, so any window covers the bandwidth-delay product; both endpoints share the
    ///   2 CPUs and the CPU is the limit.
    /// * With a 20 ms RTT (in-process relay) the first-order effect is the UDP socket receive
    ///   buffer: with the OS default (208 KB) the kernel drops ~1% of the datagrams in bursts,
    ///   congestion control backs off and every window setting ends up at ~25 MB/s. With 4 MiB
    ///   there are no drops, and the stream window sets the number of round trips a segment
    ///   takes: 1 MiB → 3 RTTs (59.5 ms), quinn's 1.25 MB → 2+ (47.8 ms), 4 MiB → one (26.2
    ///   ms); 8 MiB gains nothing over 4 MiB for one segment at a time.
    /// * The first segment on a new connection takes ~200 ms at 20 ms RTT whatever the
    ///   windows: that is congestion-control slow start, not flow control.
    ///
    /// So: windows of 4 MiB = two 2 MB segments, the largest we carry, so a whole segment fits
    /// in flight while the previous one is read (and 4 MiB covers e.g. 320 Mbit/s at 100 ms
    /// RTT); not more, because the receive window is also what one peer can make us buffer, per
    /// link. The send window is twice that so the sender never limits itself below what the
    /// receiver allows. The UDP receive buffer is capped by `net.core.rmem_max` (often 208 KB
    /// by default; raise it to 4 MiB on hosts running native peers).
    ///
    /// Initial congestion window 64 KiB instead of RFC 9002's 12,000 bytes: a peer link carries
    /// a segment now and then, often on a connection it has just opened, and a 575 kB segment
    /// that starts at 12,000 bytes spends six round trips in slow start (0.5 s at 85 ms). In the
    /// harness's issue-14 check (200 viewers, uplinks 1-10 Mbit/s, round trips 20-150 ms, 20%
    /// unreachable; docs/BENCHMARKS.md, "Eleventh step") 64 KiB gave 51.3-52.9% offload against
    /// 47.4-47.8% (128 KiB 50.8-54.4%, 256 KiB 48.1-50.0%: the slowest uplinks' 250 ms queues
    /// overflow).
    ///
    /// Liveness: a 10 s idle timeout (the smaller of both sides' applies) bounds how long a
    /// vanished peer keeps a link open; 3 s keep-alives keep idle links well inside it even if
    /// two in a row are lost. A peer that closes properly is noticed at once.
    pub fn tuned() -> Self {
        Self {
            stream_receive_window: 4 * 1024 * 1024,
            receive_window: 4 * 1024 * 1024,
            send_window: 8 * 1024 * 1024,
            max_idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3),
            udp_recv_buffer: 4 * 1024 * 1024,
            initial_window: 64 * 1024,
        }
    }

    /// quinn 0.11's defaults: a 1.25 MB stream window (sized for 100 Mbit/s at 100 ms), an
    /// unlimited connection window, a 10 MB send window, 30 s idle timeout, no keep-alives.
    pub fn quinn_defaults() -> Self {
        Self {
            stream_receive_window: 1_250_000,
            receive_window: VarInt::MAX.into_inner(),
            send_window: 10_000_000,
            max_idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::ZERO,
            udp_recv_buffer: 0,
            initial_window: 0,
        }
    }

    fn transport_config(&self, role: Role) -> Result<quinn::TransportConfig, LinkError> {
        let varint = |name: &str, value: u64| {
            VarInt::from_u64(value)
                .map_err(|_| LinkError::Config(format!("{name} = {value} is out of range")))
        };
        let mut config = quinn::TransportConfig::default();
        config
            .stream_receive_window(varint("stream_receive_window", self.stream_receive_window)?)
            .receive_window(varint("receive_window", self.receive_window)?)
            .send_window(self.send_window)
            .max_concurrent_uni_streams(VarInt::from_u32(1))
            .max_concurrent_bidi_streams(VarInt::from_u32(match role {
                Role::Accept => 1,
                Role::Connect => 0,
            }));
        let idle = if self.max_idle_timeout.is_zero() {
            None
        } else {
            Some(
                quinn::IdleTimeout::try_from(self.max_idle_timeout).map_err(|_| {
                    LinkError::Config(format!(
                        "max_idle_timeout = {:?} is out of range",
                        self.max_idle_timeout
                    ))
                })?,
            )
        };
        config.max_idle_timeout(idle);
        if self.initial_window > 0 {
            let mut cubic = quinn::congestion::CubicConfig::default();
            cubic.initial_window(self.initial_window);
            config.congestion_controller_factory(Arc::new(cubic));
        }
        config.keep_alive_interval((!self.keep_alive.is_zero()).then_some(self.keep_alive));
        Ok(config)
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Accept,
    Connect,
}

/// A UDP endpoint that both accepts links and makes them.
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    identity: QuicIdentity,
    provider: Arc<CryptoProvider>,
    client_transport: Arc<quinn::TransportConfig>,
    /// The largest send window a connection's may grow to (`QuicTuning::send_window`).
    send_window: u64,
    local_addr: SocketAddr,
    accepted: Mutex<mpsc::Receiver<PeerLink>>,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("local_addr", &self.local_addr)
            .field("fingerprint", &self.identity.fingerprint)
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Binds a UDP endpoint on `addr` (`127.0.0.1:0` in tests) acting as both server and client.
    ///
    /// Must be called from within a Tokio runtime (the endpoint and the accept loop run on it).
    pub fn bind(
        addr: SocketAddr,
        identity: QuicIdentity,
        tuning: QuicTuning,
    ) -> Result<Self, LinkError> {
        Self::bind_through(addr, identity, tuning, None)
    }

    /// [`QuicTransport::bind`], every datagram going through an emulated link when there is one
    /// (`crate::net`).
    pub fn bind_through(
        addr: SocketAddr,
        identity: QuicIdentity,
        tuning: QuicTuning,
        link: Option<Arc<crate::net::Link>>,
    ) -> Result<Self, LinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LinkError::Config(
                "QuicTransport::bind must be called within a Tokio runtime".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_err = |e: rustls::Error| LinkError::Tls(e.to_string());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(Arc::new(ProvenClientCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_single_cert(
                vec![CertificateDer::from(identity.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone())),
            )
            .map_err(tls_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| LinkError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(tuning.transport_config(Role::Accept)?));
        let client_transport = Arc::new(tuning.transport_config(Role::Connect)?);

        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|e| LinkError::Io(format!("binding {addr}: {e}")))?;
        if tuning.udp_recv_buffer > 0 {
            let state = quinn::udp::UdpSocketState::new((&socket).into())
                .map_err(|e| LinkError::Io(format!("configuring the UDP socket: {e}")))?;
            if let Err(e) = state.set_recv_buffer_size((&socket).into(), tuning.udp_recv_buffer) {
                debug!(error = %e, "could not set the UDP receive buffer size");
            }
        }
        let runtime = quinn::default_runtime()
            .ok_or_else(|| LinkError::Config("no async runtime found".into()))?;
        let endpoint = match link {
            None => quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server),
                socket,
                runtime,
            ),
            Some(link) => crate::net::udp::ShapedUdpSocket::new(socket, link).and_then(|shaped| {
                quinn::Endpoint::new_with_abstract_socket(
                    quinn::EndpointConfig::default(),
                    Some(server),
                    Arc::new(shaped),
                    runtime,
                )
            }),
        }
        .map_err(|e| LinkError::Io(format!("creating the endpoint on {addr}: {e}")))?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| LinkError::Io(format!("local address: {e}")))?;
        let (accepted_tx, accepted_rx) = mpsc::channel(ACCEPT_QUEUE);
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            accepted_tx,
            tuning.send_window,
        ));
        Ok(Self {
            endpoint,
            identity,
            provider,
            client_transport,
            send_window: tuning.send_window,
            local_addr,
            accepted: Mutex::new(accepted_rx),
            accept_task,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Our certificate's fingerprint, for the tracker.
    pub fn fingerprint(&self) -> &str {
        &self.identity.fingerprint
    }

    /// A quinn client configuration that pins `fingerprint` (64 hex digits), with this
    /// transport's tuning and ALPN. [`connect`](Self::connect) uses it; it is public for callers
    /// that drive quinn themselves (the tests use it to put raw bytes on the wire).
    pub fn client_config(&self, fingerprint: &str) -> Result<quinn::ClientConfig, LinkError> {
        let pinned = parse_fingerprint(fingerprint)?;
        let verifier = PinnedCertVerifier::new(pinned, &self.provider);
        self.client_config_with(verifier)
    }

    fn client_config_with(
        &self,
        verifier: Arc<PinnedCertVerifier>,
    ) -> Result<quinn::ClientConfig, LinkError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| LinkError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(
                vec![CertificateDer::from(self.identity.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.identity.key_der.clone())),
            )
            .map_err(|e| LinkError::Tls(e.to_string()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| LinkError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.client_transport.clone());
        Ok(config)
    }

    /// Connects to a peer and pins its certificate: the handshake fails with
    /// [`LinkError::FingerprintMismatch`] unless SHA-256(cert DER) == `fingerprint` (64 hex
    /// digits, either case, `:` separators allowed).
    ///
    /// The link's stream is opened before this returns; the peer's `accept` sees the link after
    /// the handshake, and its stream once the first frame is sent.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        fingerprint: &str,
    ) -> Result<PeerLink, LinkError> {
        let pinned = parse_fingerprint(fingerprint)?;
        let verifier = PinnedCertVerifier::new(pinned, &self.provider);
        let mismatch = verifier.mismatch.clone();
        let config = self.client_config_with(verifier)?;
        let connecting = self
            .endpoint
            .connect_with(config, addr, SERVER_NAME)
            .map_err(|e| LinkError::Connect(format!("{addr}: {e}")))?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(_)) if mismatch.load(Ordering::SeqCst) => {
                return Err(LinkError::FingerprintMismatch)
            }
            Ok(Err(e)) => return Err(handshake_error(addr, e)),
            Err(_) => {
                return Err(LinkError::Connect(format!(
                    "{addr}: handshake timed out after {CONNECT_TIMEOUT:?}"
                )))
            }
        };
        let (send, recv) = match tokio::time::timeout(STREAM_OPEN_TIMEOUT, conn.open_bi()).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(LinkError::Connect(format!("{addr}: opening stream: {e}"))),
            Err(_) => {
                conn.close(VarInt::from_u32(code::PROTOCOL), b"no stream credit");
                return Err(LinkError::Connect(format!(
                    "{addr}: peer granted no stream within {STREAM_OPEN_TIMEOUT:?}"
                )));
            }
        };
        let fingerprint = peer_fingerprint(&conn);
        let (link, ends) = new_link(RemoteAddr::Socket(conn.remote_address()), fingerprint);
        tokio::spawn(drive_link(conn, Some((send, recv)), ends, self.send_window));
        Ok(link)
    }

    /// The next incoming link, once its handshake is complete (`None` when the endpoint is
    /// closed). Failed handshakes, including connectors that pinned another fingerprint, never
    /// show up here.
    pub async fn accept(&self) -> Option<PeerLink> {
        self.accepted.lock().await.recv().await
    }

    /// Closes the endpoint: every link of this transport is closed at once (the peers see QUIC
    /// application error code 3) and [`accept`](Self::accept) returns `None`.
    pub fn close(&self) {
        self.endpoint
            .close(VarInt::from_u32(code::SHUTDOWN), b"endpoint closed");
        self.accept_task.abort();
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.close();
    }
}

/// Maps a failed client handshake to a [`LinkError`].
fn handshake_error(addr: SocketAddr, e: ConnectionError) -> LinkError {
    let is_crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        ConnectionError::TransportError(te) if is_crypto(te.code) => {
            LinkError::Tls(format!("{addr}: {te}"))
        }
        ConnectionError::ConnectionClosed(cc) if is_crypto(cc.error_code) => {
            LinkError::Tls(format!("{addr}: peer aborted the handshake: {cc}"))
        }
        ConnectionError::TimedOut => LinkError::Connect(format!("{addr}: handshake timed out")),
        other => LinkError::Connect(format!("{addr}: {other}")),
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    accepted: mpsc::Sender<PeerLink>,
    send_window: u64,
) {
    while let Some(incoming) = endpoint.accept().await {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connecting = match incoming.accept() {
                Ok(connecting) => connecting,
                Err(e) => {
                    debug!(%remote, error = %e, "refused incoming QUIC connection");
                    return;
                }
            };
            let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "incoming QUIC handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "incoming QUIC handshake timed out");
                    return;
                }
            };
            let fingerprint = peer_fingerprint(&conn);
            let (link, ends) = new_link(RemoteAddr::Socket(conn.remote_address()), fingerprint);
            tokio::spawn(drive_link(conn, None, ends, send_window));
            // Fails only when the transport is gone; dropping the link then closes it.
            let _ = accepted.send(link).await;
        });
    }
}

/// The fingerprint of the certificate the peer proved it holds in the handshake.
fn peer_fingerprint(conn: &Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(|cert| fingerprint_of(cert.as_ref()))
}

/// Serves one link until it is closed, then closes the connection.
async fn drive_link(
    conn: Connection,
    stream: Option<(SendStream, RecvStream)>,
    ends: LinkEnds,
    max_window: u64,
) {
    let LinkEnds {
        outgoing,
        incoming,
        control,
    } = ends;
    let pair = match stream {
        Some(pair) => pair,
        // Accepting side: the stream shows up with the connector's first frame. Frames sent on
        // the link meanwhile wait in its channel.
        None => {
            let accepted = tokio::select! {
                biased;
                () = control.wait_closed() => None,
                accepted = tokio::time::timeout(STREAM_OPEN_TIMEOUT, conn.accept_bi()) => Some(accepted),
            };
            match accepted {
                Some(Ok(Ok(pair))) => pair,
                None => return close_connection(&conn, &control),
                Some(Ok(Err(e))) => {
                    control.abort(CloseCause::Remote, &connection_reason(&e));
                    return close_connection(&conn, &control);
                }
                Some(Err(_)) => {
                    control.abort(
                        CloseCause::Protocol,
                        &format!("peer opened no stream within {STREAM_OPEN_TIMEOUT:?}"),
                    );
                    return close_connection(&conn, &control);
                }
            }
        }
    };
    serve_stream(conn, pair, outgoing, incoming, control, max_window).await;
}

async fn serve_stream(
    conn: Connection,
    (send, recv): (SendStream, RecvStream),
    outgoing: mpsc::Receiver<Bytes>,
    incoming: mpsc::Sender<Bytes>,
    control: LinkControl,
    max_window: u64,
) {
    let writing = write_loop(&conn, send, outgoing, &control, max_window);
    let reading = async {
        if read_loop(recv, &incoming, &control).await {
            // Tell the peer we have consumed its whole stream, so it may close the connection
            // without cutting off data we have not read yet.
            match conn.open_uni().await {
                Ok(mut signal) => {
                    let _ = signal.finish();
                }
                Err(e) => control.abort(CloseCause::Remote, &connection_reason(&e)),
            }
        }
        // Otherwise the link was aborted: the `wait_closed` arm below takes over.
    };
    let peer_consumed = async {
        // Any error means the connection is gone: the `closed` arm below takes over.
        if conn.accept_uni().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let linger = async {
        control.wait_not_open().await;
        tokio::time::sleep(LINGER).await;
    };
    // Pinned outside the `select!` so it is dropped only after the cause is recorded: the
    // receiver must not see `None` while the link still looks open.
    let mut pump = Box::pin(async { tokio::join!(writing, reading, peer_consumed) });
    tokio::select! {
        biased;
        () = control.wait_closed() => {}
        e = conn.closed() => {
            let cause = match &e {
                ConnectionError::ApplicationClosed(close)
                    if close.error_code == VarInt::from_u32(code::DONE) => CloseCause::Finished,
                _ => CloseCause::Remote,
            };
            control.abort(cause, &connection_reason(&e));
        }
        _ = &mut pump => {
            control.abort(CloseCause::Finished, "both directions ended");
        }
        () = linger => control.abort(
            CloseCause::Protocol,
            &format!("graceful end did not complete within {LINGER:?}"),
        ),
    }
    drop(pump);
    // Only now, with the cause recorded, may the receiver see `None`: a peer that aborts also
    // ends its stream, and that end may arrive just before its close reason.
    drop(incoming);
    close_connection(&conn, &control);
}

fn close_connection(conn: &Connection, control: &LinkControl) {
    let (cause, reason) = control
        .closed_cause()
        .unwrap_or((CloseCause::Finished, String::new()));
    let code = match cause {
        CloseCause::Finished | CloseCause::Remote => code::DONE,
        CloseCause::Local => code::CLOSED,
        CloseCause::Protocol => code::PROTOCOL,
    };
    debug!(remote = %conn.remote_address(), %cause, %reason, "closing QUIC link");
    // quinn truncates the reason to fit in one packet.
    conn.close(VarInt::from_u32(code), reason.as_bytes());
}

fn connection_reason(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ApplicationClosed(close) => format!(
            "peer closed the connection (code {}): {}",
            close.error_code,
            String::from_utf8_lossy(&close.reason)
        ),
        ConnectionError::TimedOut => "idle timeout: nothing heard from the peer".to_owned(),
        other => format!("connection lost: {other}"),
    }
}

/// The send window follows the congestion window: `cwnd` + [`SEND_WINDOW_SLACK`], within these
/// bounds. quinn accepts writes until the send window is full, so a fixed 8 MiB window would take
/// a whole segment at once however slow the uplink, and the node, which serves its uploads one
/// after another, would start the next while the first is still on the wire (every transfer
/// late). What quinn holds beyond what the path carries is also what a requester's Cancel cannot
/// take back (the harness's `p2p_late_bytes`; docs/BENCHMARKS.md, "Seventh step": twice `cwnd`
/// wasted a third more). A fast path is not capped (`quic_windows` bench).
const MIN_SEND_WINDOW: u64 = 64 * 1024;
/// See [`MIN_SEND_WINDOW`]: two frames beyond the congestion window, so quinn always has the
/// next one at hand when an acknowledgment opens the window.
const SEND_WINDOW_SLACK: u64 = 32 * 1024;

/// Frames this large (segment chunks) sample the path rate (see
/// [`LinkSender::path_rate`](super::LinkSender::path_rate)): while they are written the
/// connection is sending bulk, so its congestion window is in use.
const PATH_RATE_MIN_FRAME: usize = 8 * 1024;

/// Writes queued frames until the senders are gone or the link drains, then finishes the stream
/// and waits until the peer has received everything. The connection's send window follows its
/// congestion window (at most `max_window`, the configured one).
async fn write_loop(
    conn: &Connection,
    mut send: SendStream,
    mut outgoing: mpsc::Receiver<Bytes>,
    control: &LinkControl,
    max_window: u64,
) {
    while let Some(frame) = super::next_outgoing(&mut outgoing, control).await {
        let path = conn.stats().path;
        let cwnd = path.cwnd;
        if frame.len() >= PATH_RATE_MIN_FRAME && !path.rtt.is_zero() {
            control.set_path_rate((cwnd as f64 / path.rtt.as_secs_f64()) as u64);
        }
        conn.set_send_window(
            cwnd.saturating_add(SEND_WINDOW_SLACK)
                .clamp(MIN_SEND_WINDOW, max_window.max(MIN_SEND_WINDOW)),
        );
        if !write_frame(&mut send, frame, control).await {
            return;
        }
    }
    // Ok(Err) = already finished/reset: harmless.
    let _ = send.finish();
    match send.stopped().await {
        Ok(None) => {}
        Ok(Some(code)) => debug!(%code, "peer stopped reading before the end of the stream"),
        // The peer may end its stream (a `close()` on its side finishes it too) just before its
        // close reaches us: keep the reason it gave, not quinn's bare "connection lost".
        Err(StoppedError::ConnectionLost(e)) => {
            control.abort(CloseCause::Remote, &connection_reason(&e));
        }
        Err(e) => control.abort(CloseCause::Remote, &format!("finishing the stream: {e}")),
    }
}

async fn write_frame(send: &mut SendStream, frame: Bytes, control: &LinkControl) -> bool {
    match send.write_chunk(frame).await {
        Ok(()) => true,
        Err(WriteError::ConnectionLost(e)) => {
            control.abort(CloseCause::Remote, &connection_reason(&e));
            false
        }
        Err(e) => {
            control.abort(CloseCause::Remote, &format!("writing: {e}"));
            false
        }
    }
}

/// Delivers the peer's frames until its stream ends (returns `true`) or the link is aborted
/// (transport failure, broken framing: returns `false`). Once the
/// [`LinkReceiver`](super::LinkReceiver) is dropped, frames are still read (flow control keeps
/// working, the framing is still checked) but discarded. The caller keeps `incoming` open until
/// the link is closed, so the receiver never sees the end before the reason.
async fn read_loop(
    mut recv: RecvStream,
    incoming: &mpsc::Sender<Bytes>,
    control: &LinkControl,
) -> bool {
    let mut frames = FrameReader::default();
    let mut delivering = true;
    loop {
        let next = if delivering {
            tokio::select! {
                biased;
                () = incoming.closed() => {
                    delivering = false;
                    continue;
                }
                // Cancel-safe: FrameReader keeps all progress in itself.
                next = frames.next(&mut recv) => next,
            }
        } else {
            frames.next(&mut recv).await
        };
        match next {
            Ok(Some(frame)) => {
                if delivering && incoming.send(frame).await.is_err() {
                    delivering = false;
                }
            }
            Ok(None) => {
                control.drain("peer finished sending");
                return true;
            }
            Err(FrameError::Protocol(reason)) => {
                control.abort(CloseCause::Protocol, &reason);
                return false;
            }
            Err(FrameError::Read(ReadError::ConnectionLost(e))) => {
                control.abort(CloseCause::Remote, &connection_reason(&e));
                return false;
            }
            Err(FrameError::Read(e)) => {
                control.abort(CloseCause::Remote, &format!("reading: {e}"));
                return false;
            }
        }
    }
}

#[derive(Debug)]
enum FrameError {
    Protocol(String),
    Read(ReadError),
}

/// Splits a stream into frames; cancel-safe (all progress is kept in `buf`).
#[derive(Default)]
struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    async fn next(&mut self, recv: &mut RecvStream) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(chunk.bytes.chunk()),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => {
                    return Err(FrameError::Protocol(format!(
                        "stream ended inside a frame ({} bytes of it received)",
                        self.buf.len()
                    )))
                }
                Err(e) => return Err(FrameError::Read(e)),
            }
        }
    }

    fn take_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = self.buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = super::frame_payload_len(header);
        if len > MAX_FRAME_LEN {
            return Err(FrameError::Protocol(format!(
                "peer announced a {len}-byte frame payload (maximum {MAX_FRAME_LEN})"
            )));
        }
        let total = FRAME_HEADER_LEN + len;
        if self.buf.len() >= total {
            Ok(Some(self.buf.split_to(total).freeze()))
        } else {
            self.buf.reserve(total - self.buf.len());
            Ok(None)
        }
    }
}

/// Accepts exactly one certificate, by SHA-256 fingerprint, and checks the handshake signature.
#[derive(Debug)]
struct PinnedCertVerifier {
    pinned: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    /// Set when a certificate was rejected, so `connect` can report `FingerprintMismatch`.
    mismatch: Arc<AtomicBool>,
}

impl PinnedCertVerifier {
    fn new(pinned: [u8; 32], provider: &CryptoProvider) -> Arc<Self> {
        Arc::new(Self {
            pinned,
            algorithms: provider.signature_verification_algorithms,
            mismatch: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if digest == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            self.mismatch.store(true, Ordering::SeqCst);
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: the client config offers TLS 1.3 only (QUIC requires it).
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The accepting side's check of the connector: a certificate is required and the connector must
/// prove it holds its key (the TLS 1.3 `CertificateVerify` signature); which certificate it is, is
/// for the node to compare with the fingerprint the tracker published for the peer id it claims.
#[derive(Debug)]
struct ProvenClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ProvenClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: the server config offers TLS 1.3 only (QUIC requires it).
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_any_common_spelling() {
        let identity = QuicIdentity::generate().unwrap();
        assert_eq!(identity.fingerprint.len(), 64);
        assert_eq!(identity.fingerprint, identity.fingerprint.to_lowercase());
        let bytes = parse_fingerprint(&identity.fingerprint).unwrap();
        let upper_colons = bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&upper_colons).unwrap(), bytes);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn tunings_build_transport_configs() {
        for tuning in [QuicTuning::tuned(), QuicTuning::quinn_defaults()] {
            tuning.transport_config(Role::Accept).unwrap();
            tuning.transport_config(Role::Connect).unwrap();
        }
        let bad = QuicTuning {
            stream_receive_window: u64::MAX,
            ..QuicTuning::tuned()
        };
        assert!(matches!(
            bad.transport_config(Role::Accept),
            Err(LinkError::Config(_))
        ));
    }

    #[test]
    fn frame_reader_splits_and_rejects() {
        let mut reader = FrameReader::default();
        reader.buf.extend_from_slice(&[1, 0, 0, 0, 2, 9, 9, 2, 0]);
        let frame = reader.take_frame().unwrap().unwrap();
        assert_eq!(&frame[..], &[1, 0, 0, 0, 2, 9, 9]);
        assert!(reader.take_frame().unwrap().is_none());
        reader.buf.extend_from_slice(&[0x01, 0x11, 0x71]);
        // 0x00011171 = 70_001 bytes
        assert!(matches!(reader.take_frame(), Err(FrameError::Protocol(_))));
    }
}
