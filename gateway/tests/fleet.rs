//! A gateway in a fleet: on SIGTERM the real binary closes its tracker peers with 1012 (service
//! restart, docs/PROTOCOL.md §2.2) before it exits, and a native node joins again, on whatever
//! gateway now answers at the same address (as a balancer would send it to the next one).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use peer_assist::node::{self, NodeConfig};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const STREAM: &str = "/demo/live/master.m3u8";

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn p2p_peers(base: &str) -> f64 {
    let text = support::get(&format!("{base}/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("p2p_peers "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_peers_with_1012_and_a_native_node_rejoins_the_next_gateway() {
    let listen = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{listen}");
    let (mut first, _) = support::binary::start(&["--listen", &listen]).await;

    // A bare WebSocket peer, to read the close frame itself.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{listen}/p2p/v1/ws?stream={STREAM}"))
            .await
            .unwrap();
    let join = json!({
        "type": "join", "v": 1, "stream": STREAM, "rendition": 0,
        "capabilities": { "transports": ["quic"], "upload": true },
        "quic": { "addr": "127.0.0.1:4000", "fingerprint": "ab".repeat(32) }
    });
    ws.send(Message::text(join.to_string())).await.unwrap();
    // And a native node, playing for 10 s.
    let mut config = NodeConfig::new(&base, STREAM);
    config.duration = Some(Duration::from_secs(10));
    let node = node::start(config)
        .await
        .expect("the node joins the first gateway");
    let both = support::wait_until_async(
        || async { p2p_peers(&base).await == 2.0 },
        Duration::from_secs(5),
    )
    .await;
    assert!(both, "two peers on the first gateway");

    first.signal("TERM");
    let sent = Instant::now();
    let close = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(message) = ws.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame;
            }
        }
        None
    })
    .await
    .expect("a close frame within 3 s of SIGTERM")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1012, "service restart: {close:?}");
    assert_eq!(close.reason.as_str(), "restart");
    let status = first.wait_for_exit(Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the first gateway exits 0 after its drain: {status:?}; stderr:\n{}",
        first.stderr()
    );
    let exited = sent.elapsed();

    // The next gateway, at the address the node knows (a balancer's job in a fleet).
    let (_second, _) = support::binary::start(&["--listen", &listen]).await;
    let rejoined = support::wait_until_async(
        || async { p2p_peers(&base).await == 1.0 },
        Duration::from_secs(6),
    )
    .await;
    assert!(rejoined, "the node joined the second gateway's tracker");
    let summary = node.wait().await;
    assert_eq!(summary.signalling_reconnects, 1, "{summary:?}");
    assert!(
        summary.segments >= 3,
        "kept playing: {} segments",
        summary.segments
    );
    assert!(exited < Duration::from_secs(5), "drained in {exited:?}");
}

/// A full swarm shard sends a newcomer on (`swarm_full` naming the next shard, PROTOCOL.md §2, "Swarm shards"):
/// the native node follows it at once, joins shard 1 (`&shard=1` on the URL, which a balancer
/// hashes on), says so in its summary, and is not counted as a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_node_sent_on_by_a_full_shard_joins_the_next() {
    let mut config = support::demo_config().await;
    config.p2p.max_peers_per_swarm = 1;
    let gw = support::TestGateway::start(config).await;
    let base = format!("http://{}", gw.addr);
    let start = |seconds| {
        let mut config = NodeConfig::new(&base, STREAM);
        config.duration = Some(Duration::from_secs(seconds));
        node::start(config)
    };
    let first = start(6).await.expect("the first node joins");
    let second = start(4).await.expect("the second node joins another shard");
    assert_eq!(gw.metric("p2p_swarms").await, 2.0, "one peer per shard");
    assert_eq!(
        gw.metric("p2p_connections_closed_total{reason=\"swarm_full\"}")
            .await,
        1.0
    );
    let second = second.wait().await;
    let first = first.wait().await;
    assert_eq!(first.shard, 0);
    assert_eq!(second.shard, 1, "{second:#?}");
    assert_eq!(second.signalling_reconnects, 0);
    assert_eq!(second.p2p_bytes, 0, "alone in its shard");
    assert_eq!(second.missed_deadlines, 0);
}
