//! WebRTC peer links on 127.0.0.1, two in-process transports (and a raw webrtc-rs peer playing a
//! browser) whose signalling payloads are relayed through channels: framing, volume, closing,
//! failed negotiations, the offer rules.
#![allow(clippy::unwrap_used)]

mod support;

use support::{frame, seq_frame};

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peer_assist::transport::webrtc::{Outgoing, WebrtcConfig, WebrtcEvent, WebrtcTransport, LABEL};
use peer_assist::transport::{LinkError, PeerLink, RemoteAddr, FRAME_HEADER_LEN, MAX_FRAME_LEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Every test must finish within this.
const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    timeout(TEST_LIMIT, f).await.expect("test took too long")
}

fn config() -> WebrtcConfig {
    WebrtcConfig::new([127, 0, 0, 1].into())
}

fn transport(me: &str, config: WebrtcConfig) -> (Arc<WebrtcTransport>, Outgoing) {
    let (t, out) = WebrtcTransport::new(me, config).unwrap();
    (Arc::new(t), out)
}

/// How the test relay treats the payloads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// Everything, in order, through a JSON text round trip (like the tracker).
    Trickle,
    /// No candidate payloads: they are folded into the next offer/answer SDP instead, which is
    /// held back until the sender's candidates have been gathered.
    InSdp,
}

/// Forwards `from`'s outgoing payloads to `to`, as the tracker would.
fn relay(mut outgoing: Outgoing, from: &str, to: Arc<WebrtcTransport>, mode: Relay) {
    let from = from.to_owned();
    tokio::spawn(async move {
        let mut held: Option<Value> = None;
        let mut candidates: Vec<String> = Vec::new();
        loop {
            let next = if held.is_some() {
                match timeout(Duration::from_millis(500), outgoing.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        // Gathering is over: send the description with the candidates in it.
                        let mut description = held.take().unwrap();
                        let mut sdp = description["sdp"].as_str().unwrap().to_owned();
                        for c in candidates.drain(..) {
                            sdp.push_str(&format!("a={c}\r\n"));
                        }
                        description["sdp"] = Value::String(sdp);
                        let _ = to.handle_signal(&from, &description);
                        continue;
                    }
                }
            } else {
                outgoing.recv().await
            };
            let Some((peer, payload)) = next else { return };
            assert_eq!(peer, to.me(), "payload addressed to the other peer");
            let text = payload.to_string();
            let payload: Value = serde_json::from_str(&text).unwrap();
            match mode {
                Relay::Trickle => to.handle_signal(&from, &payload).unwrap(),
                Relay::InSdp if payload["kind"] == "candidate" => {
                    candidates.push(
                        payload["candidate"]["candidate"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    );
                }
                Relay::InSdp => held = Some(payload),
            }
        }
    });
}

async fn next_event(t: &WebrtcTransport) -> WebrtcEvent {
    t.next_event().await.expect("transport alive")
}

async fn open_link(t: &WebrtcTransport, peer: &str) -> PeerLink {
    match next_event(t).await {
        WebrtcEvent::Open { peer: p, link } => {
            assert_eq!(p, peer);
            link
        }
        WebrtcEvent::Failed { peer, error } => panic!("attempt with {peer} failed: {error}"),
    }
}

/// Connects `a` (the greater id, offering) and `b`; returns (a's link, b's link).
async fn connect_pair(
    a: &Arc<WebrtcTransport>,
    a_out: Outgoing,
    b: &Arc<WebrtcTransport>,
    b_out: Outgoing,
    mode: Relay,
) -> (PeerLink, PeerLink) {
    relay(a_out, &a.me(), Arc::clone(b), mode);
    relay(b_out, &b.me(), Arc::clone(a), mode);
    a.connect(&b.me()).unwrap();
    let (a_id, b_id) = (a.me(), b.me());
    let (link_a, link_b) = tokio::join!(open_link(a, &b_id), open_link(b, &a_id));
    (link_a, link_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_flow_both_ways_in_order() {
    bounded(async {
        let (a, a_out) = transport("p-b", config());
        let (b, b_out) = transport("p-a", config());
        let started = Instant::now();
        let (link_a, link_b) = connect_pair(&a, a_out, &b, b_out, Relay::Trickle).await;
        eprintln!("channel open after {:?}", started.elapsed());
        assert_eq!(link_a.remote_addr, RemoteAddr::Label("p-a".into()));
        assert_eq!(link_b.remote_addr, RemoteAddr::Label("p-b".into()));

        support::exchange_in_order_and_refuse_bad_frames(link_a, link_b).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_only_inside_the_sdp_work_too() {
    bounded(async {
        let (a, a_out) = transport("p-2", config());
        let (b, b_out) = transport("p-1", config());
        let (link_a, mut link_b) = connect_pair(&a, a_out, &b, b_out, Relay::InSdp).await;
        link_a.sender.send(frame(2, b"hello")).await.unwrap();
        assert_eq!(link_b.receiver.recv().await.unwrap(), frame(2, b"hello"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_in_chunk_frames_arrive_intact() {
    bounded(async {
        let (a, a_out) = transport("p-b", config());
        let (b, b_out) = transport("p-a", config());
        let (link_a, mut link_b) = connect_pair(&a, a_out, &b, b_out, Relay::Trickle).await;
        const TOTAL: usize = 16 * 1024 * 1024;
        const CHUNK: usize = 16 * 1024;
        let mut data = vec![0u8; TOTAL];
        let mut x: u32 = 0x1234_5678;
        for b in data.iter_mut() {
            // xorshift: incompressible, reproducible
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let expected: [u8; 32] = Sha256::digest(&data).into();
        let data = Bytes::from(data);
        let started = Instant::now();
        let sender = link_a.sender.clone();
        let sending = tokio::spawn(async move {
            for chunk in data.chunks(CHUNK) {
                sender.send(frame(5, chunk)).await.unwrap();
            }
        });
        let mut hasher = Sha256::new();
        let mut received = 0;
        while received < TOTAL {
            let f = link_b.receiver.recv().await.unwrap();
            assert_eq!(f[0], 5);
            hasher.update(&f[FRAME_HEADER_LEN..]);
            received += f.len() - FRAME_HEADER_LEN;
        }
        sending.await.unwrap();
        let elapsed = started.elapsed();
        let got: [u8; 32] = hasher.finalize().into();
        assert_eq!(got, expected);
        eprintln!(
            "16 MiB in {elapsed:?} ({:.1} MB/s)",
            TOTAL as f64 / elapsed.as_secs_f64() / 1e6
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_side_ends_the_others_receiver() {
    bounded(async {
        // Abort: close() on one side.
        let (a, a_out) = transport("p-b", config());
        let (b, b_out) = transport("p-a", config());
        let (link_a, mut link_b) = connect_pair(&a, a_out, &b, b_out, Relay::Trickle).await;
        link_a.sender.send(frame(1, b"x")).await.unwrap();
        assert_eq!(link_b.receiver.recv().await.unwrap(), frame(1, b"x"));
        link_a.sender.close("bye");
        assert!(link_a.sender.is_closed());
        assert!(matches!(
            link_a.sender.send(frame(1, b"y")).await,
            Err(LinkError::Closed)
        ));
        let end = timeout(Duration::from_secs(15), link_b.receiver.recv())
            .await
            .expect("the peer notices the close");
        assert!(end.is_none());
        assert!(link_b.sender.is_closed());
        eprintln!("b's close reason: {:?}", link_b.sender.close_reason());

        // Graceful: every sender dropped; the peer gets every frame, then None.
        let (c, c_out) = transport("p-d", config());
        let (d, d_out) = transport("p-c", config());
        let (link_c, mut link_d) = connect_pair(&c, c_out, &d, d_out, Relay::Trickle).await;
        let PeerLink {
            sender,
            receiver: _keep,
            ..
        } = link_c;
        for seq in 0..200 {
            sender.send(seq_frame(seq, 1000)).await.unwrap();
        }
        drop(sender);
        for seq in 0..200 {
            assert_eq!(link_d.receiver.recv().await.unwrap(), seq_frame(seq, 1000));
        }
        let end = timeout(Duration::from_secs(15), link_d.receiver.recv())
            .await
            .expect("the graceful end reaches the peer");
        assert!(end.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_negotiations_fail_within_the_bound() {
    bounded(async {
        let bound = Duration::from_secs(3);
        let short = WebrtcConfig {
            connect_timeout: bound,
            ..config()
        };
        // A peer that never answers.
        let (a, mut a_out) = transport("p-2", short.clone());
        let started = Instant::now();
        a.connect("p-1").unwrap();
        let (to, offer) = a_out.recv().await.unwrap();
        assert_eq!(to, "p-1");
        assert_eq!(offer["kind"], "offer");
        assert!(offer["sdp"]
            .as_str()
            .unwrap()
            .contains("a=max-message-size:70005"));
        match next_event(&a).await {
            WebrtcEvent::Failed { peer, error } => {
                assert_eq!(peer, "p-1");
                assert!(matches!(error, LinkError::Connect(_)), "{error:?}");
            }
            WebrtcEvent::Open { .. } => panic!("opened without an answer"),
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= bound && elapsed < bound + Duration::from_secs(2),
            "{elapsed:?}"
        );
        // The attempt is forgotten: a new one can start.
        a.connect("p-1").unwrap();
        assert!(next_kind(&mut a_out, "offer", Duration::from_secs(5))
            .await
            .is_some());

        // Garbage SDP in an offer fails at once; in an answer too.
        let (b, _b_out) = transport("p-5", short.clone());
        let started = Instant::now();
        b.handle_signal("p-9", &json!({"kind": "offer", "sdp": "this is not SDP"}))
            .unwrap();
        assert!(matches!(next_event(&b).await, WebrtcEvent::Failed { peer, .. } if peer == "p-9"));
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
        let (c, mut c_out) = transport("p-9", short);
        c.connect("p-5").unwrap();
        let _offer = c_out.recv().await.unwrap();
        c.handle_signal("p-5", &json!({"kind": "answer", "sdp": "v=0\r\nnonsense"}))
            .unwrap();
        assert!(matches!(next_event(&c).await, WebrtcEvent::Failed { peer, .. } if peer == "p-5"));
    })
    .await;
}

/// The next `kind` payload `t` sends, within `within`.
async fn next_kind(out: &mut Outgoing, kind: &str, within: Duration) -> Option<(String, Value)> {
    timeout(within, async {
        loop {
            let (to, payload) = out.recv().await?;
            if payload["kind"] == kind {
                return Some((to, payload));
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_follow_the_id_rule() {
    bounded(async {
        // A real offer to relay as if other peers had sent it.
        let (maker, mut maker_out) = transport("p-9", config());
        maker.connect("p-0").unwrap();
        let (_, offer) = maker_out.recv().await.unwrap();

        let (t, mut out) = transport("p-5", config());
        assert!(t.connect("p-7").is_err(), "the smaller id never offers");
        // An offer from a smaller id (a browser ignoring the rule) is answered when there is
        // no session with that peer ...
        t.handle_signal("p-1", &offer).unwrap();
        let (to, _) = next_kind(&mut out, "answer", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(to, "p-1");
        // ... and ignored while there is one.
        t.handle_signal("p-1", &offer).unwrap();
        assert!(next_kind(&mut out, "answer", Duration::from_secs(1))
            .await
            .is_none());
        // Offering to p-1 ourselves is a no-op while that session exists.
        t.connect("p-1").unwrap();
        assert!(next_kind(&mut out, "offer", Duration::from_millis(500))
            .await
            .is_none());
        // An offer from a greater id replaces an existing session: answered every time.
        for _ in 0..2 {
            t.handle_signal("p-8", &offer).unwrap();
            let (to, _) = next_kind(&mut out, "answer", Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(to, "p-8");
        }
    })
    .await;
}

/// A bare webrtc-rs peer that behaves like a browser: it offers whatever the ids, sends its
/// candidates as `RTCIceCandidate.toJSON()` does, reads ours as `RTCIceCandidateInit`, and can put
/// arbitrary messages on the channel.
mod raw {
    use super::*;
    use webrtc::api::APIBuilder;
    use webrtc::data_channel::RTCDataChannel;
    use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
    use webrtc::peer_connection::configuration::RTCConfiguration;
    use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
    use webrtc::peer_connection::RTCPeerConnection;

    pub struct Browser {
        pub pc: Arc<RTCPeerConnection>,
        pub channel: Arc<RTCDataChannel>,
    }

    /// Connects a raw peer `id` to `t` (whose outgoing payloads are `out`); returns it with the
    /// link `t` opened.
    pub async fn connect(
        t: &Arc<WebrtcTransport>,
        mut out: Outgoing,
        id: &str,
    ) -> (Browser, PeerLink) {
        let mut settings = webrtc::api::setting_engine::SettingEngine::default();
        settings.set_include_loopback_candidate(true);
        settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
        // No limit of its own, and it misreads ours (below): it may send oversized messages.
        settings.set_sctp_max_message_size_can_send(
            webrtc::api::setting_engine::SctpMaxMessageSize::Unbounded,
        );
        let api = APIBuilder::new().with_setting_engine(settings).build();
        let pc = Arc::new(
            api.new_peer_connection(RTCConfiguration::default())
                .await
                .unwrap(),
        );
        let channel = pc.create_data_channel(LABEL, None).await.unwrap();
        let (open_tx, mut open_rx) = mpsc::unbounded_channel();
        channel.on_open(Box::new(move || {
            let _ = open_tx.send(());
            Box::pin(async {})
        }));
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
        pc.on_ice_candidate(Box::new(move |c| {
            if let Some(c) = c {
                let _ = cand_tx.send(c.to_json().unwrap());
            }
            Box::pin(async {})
        }));
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer.clone()).await.unwrap();
        t.handle_signal(id, &json!({"kind": "offer", "sdp": offer.sdp}))
            .unwrap();
        // Our candidates, serialized like a browser's toJSON().
        let to = Arc::clone(t);
        let from = id.to_owned();
        tokio::spawn(async move {
            while let Some(c) = cand_rx.recv().await {
                let json =
                    json!({"kind": "candidate", "candidate": serde_json::to_value(&c).unwrap()});
                let _ = to.handle_signal(&from, &json);
            }
        });
        let remote = Arc::clone(&pc);
        tokio::spawn(async move {
            while let Some((_, payload)) = out.recv().await {
                match payload["kind"].as_str() {
                    Some("answer") => {
                        let sdp = payload["sdp"]
                            .as_str()
                            .unwrap()
                            .replace("a=max-message-size:70005", "a=max-message-size:262144");
                        remote
                            .set_remote_description(RTCSessionDescription::answer(sdp).unwrap())
                            .await
                            .unwrap();
                    }
                    Some("candidate") => {
                        let init: RTCIceCandidateInit =
                            serde_json::from_value(payload["candidate"].clone()).unwrap();
                        assert_eq!(init.sdp_mid.as_deref(), Some("0"));
                        assert_eq!(init.sdp_mline_index, Some(0));
                        remote.add_ice_candidate(init).await.unwrap();
                    }
                    other => panic!("unexpected payload {other:?}"),
                }
            }
        });
        let link = open_link(t, id).await;
        open_rx.recv().await.unwrap();
        (Browser { pc, channel }, link)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_one_frame_closes_the_link() {
    bounded(async {
        let bad: [(&str, Option<Bytes>); 4] = [
            ("text", None),
            (
                "truncated",
                Some(Bytes::from_static(&[1, 0, 0, 0, 9, 1, 2])),
            ),
            (
                "two frames",
                Some(Bytes::from(
                    [&frame(1, b"a")[..], &frame(1, b"b")[..]].concat(),
                )),
            ),
            ("oversized", Some(frame(5, &vec![0u8; MAX_FRAME_LEN + 1]))),
        ];
        for (what, message) in bad {
            let (t, out) = transport("p-5", config());
            // "p-0" < "p-5": the raw peer offers against the rule, and is answered anyway.
            let (browser, mut link) = raw::connect(&t, out, "p-0").await;
            // A good frame first, as a browser would send its Handshake.
            browser.channel.send(&frame(1, b"hello")).await.unwrap();
            assert_eq!(link.receiver.recv().await.unwrap(), frame(1, b"hello"));
            match message {
                None => {
                    browser.channel.send_text("hello").await.unwrap();
                }
                Some(m) => {
                    browser.channel.send(&m).await.unwrap();
                }
            }
            let end = timeout(Duration::from_secs(10), link.receiver.recv())
                .await
                .expect("the link closes");
            assert!(end.is_none(), "{what}");
            let reason = link.sender.close_reason().unwrap();
            assert!(reason.starts_with("protocol error"), "{what}: {reason}");
            let _ = browser.pc.close().await;
        }
    })
    .await;
}
