//! QUIC peer links on 127.0.0.1: framing, pinning, closing, concurrency.
#![allow(clippy::unwrap_used)]

mod support;

use support::{frame, seq_frame};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peer_assist::transport::quic::{QuicIdentity, QuicTransport, QuicTuning, SERVER_NAME};
use peer_assist::transport::{LinkError, PeerLink, FRAME_HEADER_LEN, MAX_FRAME_LEN};
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// Every test must finish within this.
const TEST_LIMIT: Duration = Duration::from_secs(60);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn transport(tuning: QuicTuning) -> QuicTransport {
    QuicTransport::bind(localhost(), QuicIdentity::generate().unwrap(), tuning).unwrap()
}

/// A connected pair of links: (A's end, B's end). A has sent a first frame (kind 0) so B's
/// stream is visible; it has been consumed from B's receiver.
async fn connect_pair(a: &QuicTransport, b: &QuicTransport) -> (PeerLink, PeerLink) {
    let link_a = a.connect(b.local_addr(), b.fingerprint()).await.unwrap();
    let mut link_b = b.accept().await.unwrap();
    link_a.sender.send(frame(0, b"hello")).await.unwrap();
    let hello = link_b.receiver.recv().await.unwrap();
    assert_eq!(hello, frame(0, b"hello"));
    (link_a, link_b)
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    timeout(TEST_LIMIT, f).await.expect("test took too long")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_flow_both_ways_in_order() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let (link_a, link_b) = connect_pair(&a, &b).await;
        assert_eq!(link_a.remote_addr.socket_addr(), Some(b.local_addr()));
        assert_eq!(link_b.remote_addr.socket_addr(), Some(a.local_addr()));

        support::exchange_in_order_and_refuse_bad_frames(link_a, link_b).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_is_rejected() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let impostor = QuicIdentity::generate().unwrap();
        let err = a
            .connect(b.local_addr(), &impostor.fingerprint)
            .await
            .unwrap_err();
        assert!(
            matches!(err, LinkError::FingerprintMismatch),
            "unexpected error: {err:?}"
        );
        // Malformed fingerprints are refused before dialing.
        assert!(matches!(
            a.connect(b.local_addr(), "not-hex").await,
            Err(LinkError::Connect(_))
        ));
        // B never yields a link for the rejected handshake.
        assert!(timeout(Duration::from_millis(1_500), b.accept())
            .await
            .is_err());
        // The right fingerprint still works afterwards, in uppercase too.
        let link = a
            .connect(b.local_addr(), &b.fingerprint().to_uppercase())
            .await
            .unwrap();
        link.sender.send(frame(0, b"hi")).await.unwrap();
        let mut accepted = timeout(Duration::from_secs(5), b.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(accepted.receiver.recv().await.unwrap(), frame(0, b"hi"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_header_closes_link() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        // Drive quinn directly with A's pinning client config, to put raw bytes on the wire.
        let raw = quinn::Endpoint::client(localhost()).unwrap();
        let conn = raw
            .connect_with(
                a.client_config(b.fingerprint()).unwrap(),
                b.local_addr(),
                SERVER_NAME,
            )
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let good = frame(3, b"fine");
        send.write_all(&good).await.unwrap();
        // Announces MAX_FRAME_LEN + 1 payload bytes; the payload never needs to arrive.
        let mut bad = vec![3u8];
        bad.extend_from_slice(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes());
        send.write_all(&bad).await.unwrap();

        let mut link = timeout(Duration::from_secs(5), b.accept())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(link.receiver.recv().await.unwrap(), good);
        assert!(timeout(Duration::from_secs(5), link.receiver.recv())
            .await
            .unwrap()
            .is_none());
        assert!(link.sender.is_closed());
        let reason = link.sender.close_reason().unwrap();
        assert!(reason.contains("protocol error"), "{reason}");
        // The offender sees the connection closed with application code 2.
        match timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap()
        {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, quinn::VarInt::from_u32(2));
            }
            other => panic!("unexpected close: {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_transport_closes_the_peers_link() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let (mut link_a, mut link_b) = connect_pair(&a, &b).await;
        let start = Instant::now();
        drop(b);
        assert!(timeout(Duration::from_secs(2), link_a.receiver.recv())
            .await
            .unwrap()
            .is_none());
        assert!(link_a.sender.is_closed());
        assert!(matches!(
            link_a.sender.send(frame(1, b"x")).await,
            Err(LinkError::Closed)
        ));
        let reason = link_a.sender.close_reason().unwrap();
        assert!(reason.contains("endpoint closed"), "{reason}");
        // B's own link is closed as well.
        assert!(timeout(Duration::from_secs(2), link_b.receiver.recv())
            .await
            .unwrap()
            .is_none());
        eprintln!("noticed in {:?}", start.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reaches_the_peer_with_its_reason() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let (link_a, mut link_b) = connect_pair(&a, &b).await;
        link_a.sender.close("going away");
        assert!(link_a.sender.is_closed());
        assert!(timeout(Duration::from_secs(2), link_b.receiver.recv())
            .await
            .unwrap()
            .is_none());
        let reason = link_b.sender.close_reason().unwrap();
        assert!(reason.contains("going away"), "{reason}");
        // The transports keep working.
        let (_c, _d) = connect_pair(&a, &b).await;
    })
    .await;
}

/// A UDP relay between a client and `target` that can be made to swallow everything, so a peer
/// disappears without closing anything.
struct Relay {
    addr: SocketAddr,
    blackhole: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn relay(target: SocketAddr) -> Relay {
    let front = UdpSocket::bind(localhost()).await.unwrap();
    let back = UdpSocket::bind(localhost()).await.unwrap();
    back.connect(target).await.unwrap();
    let addr = front.local_addr().unwrap();
    let blackhole = Arc::new(AtomicBool::new(false));
    let dead = blackhole.clone();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut buf_in = vec![0u8; 65_536];
        let mut buf_out = vec![0u8; 65_536];
        loop {
            tokio::select! {
                r = front.recv_from(&mut buf_in) => {
                    let Ok((n, from)) = r else { continue };
                    client = Some(from);
                    if !dead.load(Ordering::SeqCst) {
                        let _ = back.send(&buf_in[..n]).await;
                    }
                }
                r = back.recv(&mut buf_out) => {
                    let Ok(n) = r else { continue };
                    if let (Some(c), false) = (client, dead.load(Ordering::SeqCst)) {
                        let _ = front.send_to(&buf_out[..n], c).await;
                    }
                }
            }
        }
    });
    Relay {
        addr,
        blackhole,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silently_vanished_peer_times_out() {
    bounded(async {
        let tuning = QuicTuning {
            max_idle_timeout: Duration::from_millis(1_000),
            keep_alive: Duration::from_millis(250),
            ..QuicTuning::tuned()
        };
        let a = transport(tuning);
        let b = transport(tuning);
        let r = relay(b.local_addr()).await;
        let link_a = a.connect(r.addr, b.fingerprint()).await.unwrap();
        link_a.sender.send(frame(0, b"hello")).await.unwrap();
        let mut link_b = b.accept().await.unwrap();
        assert_eq!(link_b.receiver.recv().await.unwrap(), frame(0, b"hello"));
        let PeerLink {
            sender: sender_a,
            receiver: mut receiver_a,
            ..
        } = link_a;

        // Idle for longer than the idle timeout: keep-alives keep the link up.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(!sender_a.is_closed());
        sender_a.send(frame(1, b"still there")).await.unwrap();
        assert_eq!(
            link_b.receiver.recv().await.unwrap(),
            frame(1, b"still there")
        );

        // The network path dies; nobody sends a CONNECTION_CLOSE that arrives.
        r.blackhole.store(true, Ordering::SeqCst);
        let start = Instant::now();
        assert!(timeout(Duration::from_secs(3), receiver_a.recv())
            .await
            .unwrap()
            .is_none());
        let noticed = start.elapsed();
        assert!(noticed < Duration::from_millis(2_500), "took {noticed:?}");
        let reason = sender_a.close_reason().unwrap();
        assert!(reason.contains("idle timeout"), "{reason}");
        assert!(timeout(Duration::from_secs(3), link_b.receiver.recv())
            .await
            .unwrap()
            .is_none());
        eprintln!("vanished peer noticed in {noticed:?}");
        r.task.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_link_ends_it_gracefully_on_both_sides() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let (link_a, mut link_b) = connect_pair(&a, &b).await;
        for seq in 0..100 {
            link_a.sender.send(seq_frame(seq, 1_000)).await.unwrap();
        }
        drop(link_a);
        for seq in 0..100 {
            assert_eq!(link_b.receiver.recv().await.unwrap(), seq_frame(seq, 1_000));
        }
        assert!(timeout(Duration::from_secs(2), link_b.receiver.recv())
            .await
            .unwrap()
            .is_none());
        assert!(link_b.sender.is_closed());
        assert!(matches!(
            link_b.sender.send(frame(1, b"late")).await,
            Err(LinkError::Closed)
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_only_the_receiver_keeps_the_link_open() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let (link_a, mut link_b) = connect_pair(&a, &b).await;
        let PeerLink {
            sender: sender_a,
            receiver: receiver_a,
            ..
        } = link_a;
        drop(receiver_a);
        // B's frames are discarded at A, more than the channels and windows hold.
        for seq in 0..600 {
            link_b.sender.send(seq_frame(seq, 16 * 1024)).await.unwrap();
        }
        assert!(!sender_a.is_closed());
        for seq in 0..10 {
            sender_a.send(seq_frame(seq, 100)).await.unwrap();
            assert_eq!(link_b.receiver.recv().await.unwrap(), seq_frame(seq, 100));
        }
        // Dropping the last half ends the link.
        drop(sender_a);
        assert!(timeout(Duration::from_secs(2), link_b.receiver.recv())
            .await
            .unwrap()
            .is_none());
    })
    .await;
}

/// The peer that ends the link first must not cut off frames the other side has queued but not
/// read yet: every frame whose `send` returned `Ok` arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_end_loses_no_queued_frame() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let (link_a, link_b) = connect_pair(&a, &b).await;
        let PeerLink {
            sender: sender_a,
            receiver: mut receiver_a,
            ..
        } = link_a;

        // B sends 16 KiB frames as fast as it can until the link stops accepting them.
        let sender_b = link_b.sender.clone();
        let producer = tokio::spawn(async move {
            let mut sent = 0u32;
            while sender_b.send(seq_frame(sent, 16 * 1024)).await.is_ok() {
                sent += 1;
            }
            sent
        });
        // A reads 100, then drops its sender (ending its direction) while B's frames fill the
        // channels and the QUIC windows, and keeps reading, slowly.
        for seq in 0..100 {
            assert_eq!(receiver_a.recv().await.unwrap(), seq_frame(seq, 16 * 1024));
        }
        drop(sender_a);
        let mut received = 100u32;
        while let Some(f) = receiver_a.recv().await {
            assert_eq!(f, seq_frame(received, 16 * 1024));
            received += 1;
            if received % 16 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let sent = producer.await.unwrap();
        eprintln!("sent {sent}, received {received}");
        assert_eq!(received, sent);
        // More than B's own outgoing channel holds: frames were in QUIC and in A's incoming
        // channel when A ended its direction.
        let own = peer_assist::transport::LINK_OUTGOING_CAPACITY as u32;
        assert!(
            sent > 100 + own,
            "the test should have queued more than B's channel holds"
        );
        drop(link_b);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_links_transfer_concurrently() {
    const CLIENTS: usize = 8;
    const FRAME_PAYLOAD: usize = 16 * 1024;
    const FRAMES: u32 = 128; // 2 MiB per client
    bounded(async {
        let server = Arc::new(transport(QuicTuning::tuned()));
        let start = Instant::now();

        let srv = server.clone();
        let serving = tokio::spawn(async move {
            let mut handlers = Vec::new();
            for _ in 0..CLIENTS {
                let link = srv.accept().await.unwrap();
                handlers.push(tokio::spawn(async move {
                    let PeerLink {
                        sender,
                        mut receiver,
                        ..
                    } = link;
                    let mut hasher = Sha256::new();
                    let mut bytes = 0usize;
                    for _ in 0..FRAMES {
                        let f = receiver.recv().await.unwrap();
                        assert_eq!(f.len(), FRAME_HEADER_LEN + FRAME_PAYLOAD);
                        bytes += f.len() - FRAME_HEADER_LEN;
                        hasher.update(&f[FRAME_HEADER_LEN..]);
                    }
                    let digest = hasher.finalize();
                    sender.send(frame(9, &digest)).await.unwrap();
                    // The client ends the link once it has the digest.
                    assert!(receiver.recv().await.is_none());
                    bytes
                }));
            }
            let mut total = 0;
            for h in handlers {
                total += h.await.unwrap();
            }
            total
        });

        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let addr = server.local_addr();
            let fingerprint = server.fingerprint().to_owned();
            clients.push(tokio::spawn(async move {
                let t = transport(QuicTuning::tuned());
                let link = t.connect(addr, &fingerprint).await.unwrap();
                let PeerLink {
                    sender,
                    mut receiver,
                    ..
                } = link;
                let mut hasher = Sha256::new();
                for seq in 0..FRAMES {
                    let f = seq_frame(seq ^ (c as u32) << 16, FRAME_PAYLOAD);
                    hasher.update(&f[FRAME_HEADER_LEN..]);
                    sender.send(f).await.unwrap();
                }
                let digest = hasher.finalize();
                let reply = receiver.recv().await.unwrap();
                assert_eq!(reply, frame(9, &digest), "client {c}: digest differs");
                drop(sender);
                assert!(receiver.recv().await.is_none());
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let total = serving.await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(total, CLIENTS * FRAMES as usize * FRAME_PAYLOAD);
        eprintln!(
            "{CLIENTS} links x 2 MiB in {elapsed:?} ({:.0} MB/s)",
            total as f64 / elapsed.as_secs_f64() / 1e6
        );
        assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_learn_the_certificate_the_other_proved() {
    bounded(async {
        let a = transport(QuicTuning::tuned());
        let b = transport(QuicTuning::tuned());
        let (link_a, link_b) = connect_pair(&a, &b).await;
        assert_eq!(link_a.remote_fingerprint.as_deref(), Some(b.fingerprint()));
        assert_eq!(link_b.remote_fingerprint.as_deref(), Some(a.fingerprint()));
    })
    .await;
}

/// A server verifier that accepts anything: the connector below only wants to show that the
/// accepting side refuses a client without a certificate.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_without_a_certificate_is_refused() {
    bounded(async {
        let b = transport(QuicTuning::tuned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"p2pa/1".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let attempt = endpoint.connect(b.local_addr(), SERVER_NAME).unwrap();
        let refused = match timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(conn)) => {
                // TLS 1.3 may report the refusal after the client's side finished: the connection
                // is closed at once and no link is ever yielded.
                timeout(Duration::from_secs(5), conn.closed()).await.is_ok()
            }
            Ok(Err(_)) | Err(_) => true,
        };
        assert!(
            refused,
            "a connector without a certificate got a connection"
        );
        assert!(timeout(Duration::from_millis(1_500), b.accept())
            .await
            .is_err());
    })
    .await;
}

fn shaped(profile: peer_assist::net::LinkProfile) -> QuicTransport {
    let link = Arc::new(peer_assist::net::Link::new(profile, 7));
    QuicTransport::bind_through(
        localhost(),
        QuicIdentity::generate().unwrap(),
        QuicTuning::tuned(),
        Some(link),
    )
    .unwrap()
}

/// The load-test harness's emulated links (`peer_assist::net`) shape real QUIC: the handshake
/// pays the round trip, a transfer is paced by the sender's uplink, and QUIC's loss recovery
/// still delivers every byte in order over a lossy link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emulated_link_paces_and_delays_quic_and_loses_nothing_quic_cannot_recover() {
    bounded(async {
        let a = shaped(peer_assist::net::LinkProfile {
            uplink_bps: Some(8_000_000),
            rtt: Duration::from_millis(100),
            loss: 0.01,
            ..Default::default()
        });
        let b = transport(QuicTuning::tuned());
        let started = Instant::now();
        let (link_a, mut link_b) = connect_pair(&a, &b).await;
        let handshake = started.elapsed();
        assert!(
            handshake >= Duration::from_millis(100),
            "a handshake costs at least the round trip: {handshake:?}"
        );
        // 16 frames of 60 kB: 960 kB, 0.96 s at 8 Mbit/s.
        let started = Instant::now();
        let sender = tokio::spawn(async move {
            for seq in 0..16 {
                link_a.sender.send(seq_frame(seq, 60_000)).await.unwrap();
            }
            link_a
        });
        for seq in 0..16 {
            let got = link_b.receiver.recv().await.expect("every frame arrives");
            assert_eq!(
                got,
                seq_frame(seq, 60_000),
                "frame {seq} intact and in order"
            );
        }
        let elapsed = started.elapsed();
        let _link_a = sender.await.unwrap();
        eprintln!("handshake {handshake:?}, 960 kB in {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(950),
            "paced by the 8 Mbit/s uplink: {elapsed:?}"
        );
    })
    .await;
}

/// While a link sends bulk, its path-rate estimate (congestion window over round trip) reads the
/// uplink it goes through: the right order of magnitude, the node's uplink samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_rate_of_a_busy_link_reads_its_uplink() {
    bounded(async {
        let uplink = 500_000.0; // bytes/s: 4 Mbit/s
        let a = shaped(peer_assist::net::LinkProfile {
            uplink_bps: Some(4_000_000),
            rtt: Duration::from_millis(60),
            ..Default::default()
        });
        let b = transport(QuicTuning::tuned());
        let (link_a, mut link_b) = connect_pair(&a, &b).await;
        assert_eq!(link_a.sender.path_rate(), None, "nothing sent yet");
        // 24 frames of 60 kB: 1.44 MB, about 2.9 s at 4 Mbit/s.
        let sender = tokio::spawn(async move {
            let mut samples = Vec::new();
            for seq in 0..24 {
                link_a.sender.send(seq_frame(seq, 60_000)).await.unwrap();
                samples.extend(link_a.sender.path_rate());
            }
            (link_a, samples)
        });
        for _ in 0..24 {
            link_b.receiver.recv().await.expect("every frame arrives");
        }
        let (_link_a, mut samples) = sender.await.unwrap();
        samples.sort_unstable();
        let median = samples[samples.len() / 2] as f64;
        eprintln!(
            "path rate median {median:.0} B/s of {} samples",
            samples.len()
        );
        assert!(
            median > uplink / 3.0 && median < uplink * 3.0,
            "{median} B/s for a {uplink} B/s uplink: {samples:?}"
        );
    })
    .await;
}

/// A viewer behind a NAT that accepts no inbound connection can dial out, and cannot be dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_viewer_dials_out_but_cannot_be_dialled() {
    bounded(async {
        let natted = shaped(peer_assist::net::LinkProfile {
            unreachable: true,
            ..Default::default()
        });
        let open = transport(QuicTuning::tuned());
        let inbound = timeout(
            Duration::from_secs(2),
            open.connect(natted.local_addr(), natted.fingerprint()),
        )
        .await;
        assert!(
            !matches!(inbound, Ok(Ok(_))),
            "nobody can dial an unreachable viewer"
        );
        let (out_a, out_b) = connect_pair(&natted, &open).await;
        out_b.sender.send(frame(1, b"answer")).await.unwrap();
        let mut out_a = out_a;
        assert_eq!(out_a.receiver.recv().await.unwrap(), frame(1, b"answer"));
    })
    .await;
}
