//! Native peers over WebRTC data channels (no QUIC), through a real gateway on the demo live
//! stream: segments flow peer to peer, verified; transports are matched; liars are caught the same
//! way as over QUIC.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use peer_assist::node::{self, NodeConfig, NodeHandle, TestBehaviour};
use peer_assist::protocol::signal::Transport;
use support::TestGateway;

fn node_config(gw: &TestGateway, seconds: u64, transports: &[Transport]) -> NodeConfig {
    let mut config = NodeConfig::new(&format!("http://{}", gw.addr), "/demo/live/master.m3u8");
    config.duration = Some(Duration::from_secs(seconds));
    config.transports = transports.to_vec();
    config
}

async fn start(config: NodeConfig) -> NodeHandle {
    let only_webrtc = config.transports == [Transport::Webrtc];
    let handle = node::start(config).await.expect("node joins");
    if only_webrtc {
        assert_eq!(handle.quic_addr, None, "no QUIC endpoint at all");
    }
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_webrtc_only_nodes_share_the_live_stream() {
    let gw = support::demo_gateway().await;
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(start(node_config(&gw, 24, &[Transport::Webrtc])).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut summaries = Vec::new();
    for h in handles {
        summaries.push(h.wait().await);
    }
    let p2p: u64 = summaries.iter().map(|s| s.p2p_bytes).sum();
    let uploaded: u64 = summaries.iter().map(|s| s.uploaded_bytes).sum();
    for s in &summaries {
        eprintln!(
            "{}: segments {} (peer {}, http {}), p2p {} B, http {} B, uploaded {} B, missed {}, failures {:?}",
            s.peer_id,
            s.segments,
            s.p2p_segments,
            s.http_segments,
            s.p2p_bytes,
            s.http_bytes,
            s.uploaded_bytes,
            s.missed_deadlines,
            s.failures
        );
        assert_eq!(s.mismatches, 0, "{s:?}");
        assert!(s.peers_dropped_for_lying.is_empty());
        assert!(
            s.segments >= 5,
            "peer {} got {} segments",
            s.peer_id,
            s.segments
        );
    }
    assert!(
        p2p > 0,
        "segments went peer to peer over WebRTC: {summaries:#?}"
    );
    assert!(uploaded >= p2p, "every peer byte was uploaded by a peer");
    support::assert_all_authentic(&gw, &summaries).await;
    assert_eq!(gw.metric("p2p_digest_mismatches_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_are_matched_and_chosen_per_pair() {
    let gw = support::demo_gateway().await;
    // The first peer has both transports and fetches first; a QUIC-only and a WebRTC-only peer
    // never meet each other, and each gets segments from the first over its own transport.
    let both = start(node_config(&gw, 26, &[Transport::Quic, Transport::Webrtc])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quic = start(node_config(&gw, 20, &[Transport::Quic])).await;
    let webrtc = start(node_config(&gw, 20, &[Transport::Webrtc])).await;
    let (quic, webrtc) = (quic.wait().await, webrtc.wait().await);
    let both = both.wait().await;
    for s in [&both, &quic, &webrtc] {
        eprintln!(
            "{}: peer {} B, http {} B, uploaded {} B, failures {:?}",
            s.peer_id, s.p2p_bytes, s.http_bytes, s.uploaded_bytes, s.failures
        );
        assert_eq!(s.mismatches, 0, "{s:?}");
    }
    assert!(quic.p2p_bytes > 0, "QUIC-only peer served: {quic:#?}");
    assert!(webrtc.p2p_bytes > 0, "WebRTC-only peer served: {webrtc:#?}");
    assert!(both.uploaded_bytes > 0);
    support::assert_all_authentic(&gw, &[both, quic, webrtc]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_webrtc_peer_is_caught_and_dropped() {
    let gw = support::demo_gateway().await;
    let mut liar_config = node_config(&gw, 26, &[Transport::Webrtc]);
    liar_config.test = TestBehaviour {
        forge_receipts: Default::default(),
        lie: true,
        slow_upload: None,
        honest_uploads: 0,
    };
    let liar = start(liar_config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut honest = Vec::new();
    for _ in 0..2 {
        honest.push(start(node_config(&gw, 20, &[Transport::Webrtc])).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut summaries = Vec::new();
    for h in honest {
        summaries.push(h.wait().await);
    }
    let liar = liar.stop().await;
    assert!(
        liar.uploaded_bytes > 0,
        "the liar did upload (corrupted) data"
    );
    let caught: u64 = summaries.iter().map(|s| s.mismatches).sum();
    assert!(
        caught > 0,
        "someone asked the liar and caught it: {summaries:#?}"
    );
    for s in &summaries {
        assert!(
            s.peers_dropped_for_lying.iter().all(|p| p == &liar.peer_id),
            "only the liar is ever dropped: {:?}",
            s.peers_dropped_for_lying
        );
    }
    support::assert_all_authentic(&gw, &summaries).await;
}
