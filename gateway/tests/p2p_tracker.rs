//! The peer-assist tracker mounted in the gateway, over real WebSockets: joining, peer lists, digests
//! (pushed and on the HTTP endpoint), and limits that close abusive connections while serving others.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{pattern, test_config, wait_until_async, Reply, TestGateway, TestOrigin};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const MASTER: &str = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=400000\nhigh/index.m3u8\n";

fn live(first: u64, last: u64) -> String {
    let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for s in first..=last {
        text.push_str(&format!("#EXTINF:1.0,\n{s}.ts\n"));
    }
    text
}

async fn setup(configure: impl FnOnce(&mut gateway::Config)) -> (TestOrigin, TestGateway) {
    let origin = TestOrigin::start().await;
    origin.set("/s/master.m3u8", Reply::ok(MASTER));
    origin.set("/s/low/index.m3u8", Reply::ok(live(0, 2)));
    for s in 0..=5u8 {
        origin.set(&format!("/s/low/{s}.ts"), Reply::ok(pattern(2000, s)));
    }
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    configure(&mut config);
    let gw = TestGateway::start(config).await;
    (origin, gw)
}

async fn connect(gw: &TestGateway, stream: &str) -> Ws {
    let url = format!("ws://{}/p2p/v1/ws?stream={stream}", gw.addr);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect in time")
    .expect("websocket upgrade");
    ws
}

fn join(rendition: u32) -> String {
    join_stream("/s/master.m3u8", rendition)
}

fn join_stream(stream: &str, rendition: u32) -> String {
    json!({
        "type": "join", "v": 1, "stream": stream, "rendition": rendition,
        "capabilities": { "transports": ["quic"], "upload": true },
        "quic": { "addr": "127.0.0.1:4000", "fingerprint": "ab".repeat(32) }
    })
    .to_string()
}

/// An origin holding a one-rendition VOD under `prefix`: `{prefix}/master.m3u8`, its media
/// playlist `{prefix}/v.m3u8` (`EXTINF` lines of `ranges`, each `#EXT-X-BYTERANGE:{range}` of
/// `v.mp4`, after the `head` tags) and the file `{prefix}/v.mp4`.
async fn ranged_vod(prefix: &str, head: &str, ranges: &[String], file: bytes::Bytes) -> TestOrigin {
    let origin = TestOrigin::start().await;
    let mut media = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n{head}");
    for range in ranges {
        media.push_str(&format!("#EXTINF:2,\n#EXT-X-BYTERANGE:{range}\nv.mp4\n"));
    }
    media.push_str("#EXT-X-ENDLIST\n");
    origin.set(
        &format!("{prefix}/master.m3u8"),
        Reply::ok("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\nv.m3u8\n"),
    );
    origin.set(&format!("{prefix}/v.m3u8"), Reply::ok(media));
    origin.set(&format!("{prefix}/v.mp4"), Reply::ok(file));
    origin
}

/// The next JSON message, skipping pings.
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()??;
        match message.ok()? {
            Message::Text(text) => return serde_json::from_str(&text).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads until a message of `kind` arrives.
async fn until(ws: &mut Ws, kind: &str) -> Value {
    for _ in 0..50 {
        match next(ws).await {
            Some(m) if m["type"] == kind => return m,
            Some(_) => continue,
            None => panic!("connection ended before a {kind} message"),
        }
    }
    panic!("no {kind} message");
}

#[tokio::test]
async fn peers_join_get_welcome_digests_and_each_other() {
    let (_origin, gw) = setup(|_| {}).await;
    // A viewer watches the rendition, so the follower caches its segments and digests exist.
    assert_eq!(gw.get("/s/low/index.m3u8").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut a = connect(&gw, "/s/master.m3u8").await;
    a.send(Message::text(join(0))).await.unwrap();
    let welcome = next(&mut a).await.expect("welcome");
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(
        welcome["playlist"], "/s/low/index.m3u8",
        "rendition 0 is the first variant"
    );
    let a_id = welcome["peer_id"].as_str().unwrap().to_owned();
    let digests = next(&mut a).await.expect("digests");
    assert_eq!(digests["type"], "digests");
    let expected = hex::encode(Sha256::digest(pattern(2000, 2)));
    let entries = digests["segments"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|d| d["id"] == "/s/low/2.ts" && d["sha256"] == expected && d["size"] == 2000),
        "the gateway's SHA-256 of 2.ts is published: {digests}"
    );
    let alone = until(&mut a, "peers").await;
    assert_eq!(alone["peers"], json!([]), "never matched with itself");

    let mut b = connect(&gw, "/s/master.m3u8").await;
    b.send(Message::text(join(0))).await.unwrap();
    let b_id = next(&mut b).await.unwrap()["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_peers = until(&mut b, "peers").await;
    assert_eq!(b_peers["peers"][0]["peer_id"], a_id.as_str());
    assert_eq!(b_peers["peers"][0]["quic"]["addr"], "127.0.0.1:4000");
    let a_peers = until(&mut a, "peers").await;
    assert_eq!(
        a_peers["peers"][0]["peer_id"],
        b_id.as_str(),
        "the first peer learns about the second"
    );

    // Another rendition is another swarm.
    let mut c = connect(&gw, "/s/master.m3u8").await;
    c.send(Message::text(join(1))).await.unwrap();
    assert_eq!(
        next(&mut c).await.unwrap()["playlist"],
        "/s/high/index.m3u8"
    );
    assert_eq!(until(&mut c, "peers").await["peers"], json!([]));

    // A new segment appears: its digest is pushed to the swarm.
    _origin.set("/s/low/index.m3u8", Reply::ok(live(1, 3)));
    let expected3 = hex::encode(Sha256::digest(pattern(2000, 3)));
    let mut pushed = false;
    for _ in 0..20 {
        let m = until(&mut a, "digests").await;
        if m["segments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == "/s/low/3.ts" && d["sha256"] == expected3)
        {
            pushed = true;
            break;
        }
    }
    assert!(pushed, "the digest of the new segment was pushed");

    // Reports move the p2p metrics.
    let report = json!({"type": "report", "http_bytes": 1000, "p2p_bytes": 3000, "http_segments": 1,
        "p2p_segments": 3, "uploaded_bytes": 0, "failures": {"timeout": 1}, "peers": []});
    a.send(Message::text(report.to_string())).await.unwrap();
    let reported = || async {
        let peer = gw.metric("p2p_reported_bytes_total{source=\"peer\"}").await;
        let http = gw.metric("p2p_reported_bytes_total{source=\"http\"}").await;
        let timeouts = gw.metric("p2p_fallbacks_total{cause=\"timeout\"}").await;
        (peer, http, timeouts) == (3000.0, 1000.0, 1.0)
    };
    // Wait until the report is counted; if it never is, the assertions below say what differs.
    wait_until_async(reported, Duration::from_secs(5)).await;
    assert_eq!(
        gw.metric("p2p_reported_bytes_total{source=\"peer\"}").await,
        3000.0
    );
    assert_eq!(
        gw.metric("p2p_reported_bytes_total{source=\"http\"}").await,
        1000.0
    );
    assert_eq!(
        gw.metric("p2p_fallbacks_total{cause=\"timeout\"}").await,
        1.0
    );
    assert_eq!(gw.metric("p2p_peers").await, 3.0);
    assert_eq!(gw.metric("p2p_swarms").await, 2.0);

    // Leaving updates the others.
    a.send(Message::text(json!({"type": "leave"}).to_string()))
        .await
        .unwrap();
    let after = until(&mut b, "peers").await;
    assert_eq!(after["peers"], json!([]));
}

#[tokio::test]
async fn digests_endpoint_serves_the_recent_window() {
    let (_origin, gw) = setup(|_| {}).await;
    assert_eq!(gw.get("/s/low/index.m3u8").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = gw.get("/p2p/v1/digests/s/master.m3u8/0").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["playlist"], "/s/low/index.m3u8");
    let ids = support::digest_ids(&gw, "/s/master.m3u8", 0).await;
    assert!(ids.iter().any(|id| id == "/s/low/2.ts"), "{ids:?}");
    assert_eq!(gw.get("/p2p/v1/digests/s/master.m3u8/7").await.status, 404);
    assert_eq!(gw.get("/p2p/v1/digests/s/master.m3u8/x").await.status, 400);
}

/// Sends `messages` on a fresh joined connection and returns the error code it was closed with.
async fn closed_with(gw: &TestGateway, messages: Vec<Message>) -> String {
    let mut ws = connect(gw, "/s/master.m3u8").await;
    ws.send(Message::text(join(0))).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["type"], "welcome");
    for m in messages {
        if ws.send(m).await.is_err() {
            break;
        }
    }
    loop {
        match next(&mut ws).await {
            // A relay to an unknown peer is answered with a non-fatal not_found: keep reading.
            Some(m) if m["type"] == "error" && m["code"] == "not_found" => continue,
            Some(m) if m["type"] == "error" => return m["code"].as_str().unwrap().to_owned(),
            Some(_) => continue,
            None => return "closed without error".into(),
        }
    }
}

#[tokio::test]
async fn tracker_limits_close_abusive_connections_and_keep_serving_others() {
    let (origin, gw) = setup(|c| {
        c.p2p.messages_per_second = 5;
        c.p2p.max_message_bytes = 4096;
        c.p2p.max_peers_per_swarm = 3;
    })
    .await;
    let mut good = connect(&gw, "/s/master.m3u8").await;
    good.send(Message::text(join(0))).await.unwrap();
    assert_eq!(next(&mut good).await.unwrap()["type"], "welcome");

    let flood = (0..40).map(|_| {
        Message::text(json!({"type": "relay", "to": "nobody", "payload": {}}).to_string())
    });
    assert_eq!(closed_with(&gw, flood.collect()).await, "rate_limited");
    let big = json!({"type": "relay", "to": "x", "payload": "y".repeat(10_000)}).to_string();
    let code = closed_with(&gw, vec![Message::text(big)]).await;
    assert!(
        code == "message_too_large" || code == "closed without error",
        "{code}"
    );
    assert_eq!(
        closed_with(&gw, vec![Message::text("{not json")]).await,
        "bad_message"
    );
    assert_eq!(
        closed_with(
            &gw,
            vec![Message::text(json!({"type": "hello"}).to_string())]
        )
        .await,
        "bad_message"
    );

    // Join problems: wrong version, unknown rendition, stream other than the URL's, a stream
    // the origin does not have (the client's fault), one the origin cannot give now (not the
    // client's: it may retry).
    origin.set("/gone/master.m3u8", Reply::status(404));
    origin.set("/down/master.m3u8", Reply::status(503));
    for (stream, message, code) in [
        (
            "/s/master.m3u8",
            join(0).replace("\"v\":1", "\"v\":2"),
            "unsupported_version",
        ),
        ("/s/master.m3u8", join(9), "not_found"),
        (
            "/s/master.m3u8",
            join(0).replace("/s/master.m3u8", "/other.m3u8"),
            "bad_message",
        ),
        (
            "/gone/master.m3u8",
            join(0).replace("/s/master.m3u8", "/gone/master.m3u8"),
            "not_found",
        ),
        (
            "/down/master.m3u8",
            join(0).replace("/s/master.m3u8", "/down/master.m3u8"),
            "unavailable",
        ),
    ] {
        let mut ws = connect(&gw, stream).await;
        ws.send(Message::text(message)).await.unwrap();
        let m = next(&mut ws).await.expect("an error");
        assert_eq!(m["code"], code, "{m}");
    }

    // The swarm limit: good + 2 more fit, the fourth is refused.
    let mut extra = Vec::new();
    for _ in 0..2 {
        let mut ws = connect(&gw, "/s/master.m3u8").await;
        ws.send(Message::text(join(0))).await.unwrap();
        let welcome = next(&mut ws).await.unwrap();
        assert_eq!(welcome["type"], "welcome");
        extra.push((welcome["peer_id"].as_str().unwrap().to_owned(), ws));
    }
    // A fourth viewer is sent to the second shard of the swarm, and joins it there.
    let mut full = connect(&gw, "/s/master.m3u8").await;
    full.send(Message::text(join(0))).await.unwrap();
    let redirect = next(&mut full).await.unwrap();
    assert_eq!(redirect["code"], "swarm_full", "{redirect}");
    assert_eq!(redirect["shard"], 1, "{redirect}");
    let (_sharded, welcome) = join_at(&gw, "/s/master.m3u8", 1).await;
    assert_eq!(welcome["swarm"], "/s/low/index.m3u8~1", "{welcome}");

    // A relay to a peer that is not in the swarm is refused without closing the connection.
    let relay = json!({"type": "relay", "to": "nobody", "payload": {}}).to_string();
    good.send(Message::text(relay)).await.unwrap();
    let refused = until(&mut good, "error").await;
    assert_eq!(refused["code"], "not_found");

    // The well-behaved peer is still served: its relay reaches another peer.
    let (target_id, target) = &mut extra[0];
    let relay = json!({"type": "relay", "to": target_id, "payload": {"sdp": "offer"}}).to_string();
    good.send(Message::text(relay)).await.unwrap();
    let relayed = until(target, "relay").await;
    assert_eq!(relayed["payload"]["sdp"], "offer");
    assert!(
        gw.metric("p2p_connections_closed_total{reason=\"rate_limited\"}")
            .await
            >= 1.0
    );
    assert_eq!(gw.metric("p2p_peers").await, 4.0);
}

#[tokio::test]
async fn a_plain_get_on_the_socket_path_is_a_clean_400() {
    let (_origin, gw) = setup(|_| {}).await;
    assert_eq!(gw.get("/p2p/v1/ws?stream=/s/master.m3u8").await.status, 400);
}

/// Joins rendition `rendition` and returns the socket and the peer id.
async fn member(gw: &TestGateway, rendition: u32) -> (Ws, String) {
    let mut ws = connect(gw, "/s/master.m3u8").await;
    ws.send(Message::text(join(rendition))).await.unwrap();
    let welcome = until(&mut ws, "welcome").await;
    let id = welcome["peer_id"].as_str().unwrap().to_owned();
    (ws, id)
}

/// The peer ids of the newest `peers` list that has arrived on `ws` (within a moment).
async fn latest_list(ws: &mut Ws) -> Vec<String> {
    let mut latest = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        if let Message::Text(text) = message {
            let m: Value = serde_json::from_str(&text).unwrap();
            if m["type"] == "peers" {
                latest = m["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["peer_id"].as_str().unwrap().to_owned())
                    .collect();
            }
        }
    }
    latest
}

fn report(peers: Value, p2p_bytes: u64) -> String {
    json!({
        "type": "report", "http_bytes": 0, "p2p_bytes": p2p_bytes, "http_segments": 0,
        "p2p_segments": 1_000_000, "uploaded_bytes": 0,
        "failures": { "timeout": 0, "mismatch": 1_000_000, "absent": 0, "disconnect": 0 },
        "peers": peers
    })
    .to_string()
}

/// One client's reports can neither get honest peers delisted (not even in another swarm) nor
/// inflate the offload counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_single_client_can_ban_eclipse_or_inflate() {
    let (_origin, gw) = setup(|c| c.p2p.peers_returned = 8).await;
    assert_eq!(gw.get("/s/low/index.m3u8").await.status, 200);
    let mut honest = Vec::new();
    for _ in 0..4 {
        honest.push(member(&gw, 0).await);
    }
    let (_elsewhere, elsewhere_id) = member(&gw, 1).await;
    let (mut attacker, _) = member(&gw, 0).await;
    let accused: Vec<Value> = honest
        .iter()
        .map(|(_, id)| id.clone())
        .chain([elsewhere_id.clone()])
        .map(|id| json!({"peer_id": id, "ok": 0, "failed": 1_000, "mismatch": 1, "bytes": 0}))
        .collect();
    attacker
        .send(Message::text(report(Value::Array(accused), (1 << 53) - 1)))
        .await
        .unwrap();
    let ignored = wait_until_async(
        || async { gw.metric("p2p_report_outcomes_ignored_total").await >= 1.0 },
        Duration::from_secs(5),
    )
    .await;
    assert!(
        ignored,
        "the outcome about a peer of another swarm is ignored"
    );
    // A newcomer is still offered every honest peer.
    let (mut newcomer, _) = member(&gw, 0).await;
    let list = latest_list(&mut newcomer).await;
    for (_, id) in &honest {
        assert!(list.contains(id), "{id} delisted by one report: {list:?}");
    }
    // The absurd claim was cut to what could have happened.
    assert_eq!(gw.metric("p2p_reports_cut_total").await, 1.0);
    let counted = gw.metric("p2p_reported_bytes_total{source=\"peer\"}").await;
    assert!(counted < 1e12, "{counted} bytes counted from one report");

    // How little praise earns (vouched peers fill at most half of a short list, and never
    // change a member's mesh neighbours) is checked on the registry itself:
    // `a_short_list_is_filled_with_vouched_peers_first_but_never_more_than_half`.
}

/// A WebSocket URL for `stream`, percent-encoded as a query value.
fn ws_url(gw: &TestGateway, stream: &str) -> String {
    let value = percent_encoding::utf8_percent_encode(stream, percent_encoding::NON_ALPHANUMERIC);
    format!("ws://{}/p2p/v1/ws?stream={value}", gw.addr)
}

/// Joins rendition 0 of `stream` (spelled as given, in the URL and in `join`); returns the
/// socket and the `welcome`.
async fn join_spelled(gw: &TestGateway, stream: &str) -> (Ws, Value) {
    join_at(gw, stream, 0).await
}

/// [`join_spelled`], asking for shard `shard` (`&shard=` on the URL, when not 0).
async fn join_at(gw: &TestGateway, stream: &str, shard: u32) -> (Ws, Value) {
    let mut url = ws_url(gw, stream);
    if shard > 0 {
        url.push_str(&format!("&shard={shard}"));
    }
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect in time")
    .expect("websocket upgrade");
    let message = join(0).replace("/s/master.m3u8", stream);
    ws.send(Message::text(message)).await.unwrap();
    let first = next(&mut ws).await.expect("an answer to join");
    (ws, first)
}

/// Joins and reads up to the first peer list; returns the socket, the id, the list and how long
/// it took from connecting to the list.
async fn join_timed(gw: &TestGateway) -> (Ws, String, Vec<String>, Duration) {
    let started = std::time::Instant::now();
    let (mut ws, welcome) = join_spelled(gw, "/s/master.m3u8").await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let list = until(&mut ws, "peers").await;
    let elapsed = started.elapsed();
    let ids = list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer_id"].as_str().unwrap().to_owned())
        .collect();
    (
        ws,
        welcome["peer_id"].as_str().unwrap().to_owned(),
        ids,
        elapsed,
    )
}

/// A peer that joins and then never reads again (a tiny receive buffer, never polled) while
/// others relay to it: it is delisted and dropped within the send timeout, and a well-behaved
/// peer joining meanwhile gets its welcome and peers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_delisted_and_dropped() {
    let (_origin, gw) = setup(|c| {
        c.p2p.send_timeout = Duration::from_secs(1);
        c.p2p.messages_per_second = 100;
    })
    .await;
    // The stalled peer: its own socket with a 4 KiB receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(gw.addr).await.unwrap();
    let (mut stalled, _) =
        tokio_tungstenite::client_async(ws_url(&gw, "/s/master.m3u8"), MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    stalled.send(Message::text(join(0))).await.unwrap();
    let welcome = until(&mut stalled, "welcome").await;
    let stalled_id = welcome["peer_id"].as_str().unwrap().to_owned();
    // From here on `stalled` is never polled again.

    let (_a, _a_id, listed, _) = join_timed(&gw).await;
    assert_eq!(listed, vec![stalled_id.clone()], "listed while it reads");
    // Two peers flood it with relays of 32 KiB (within their message budget).
    let payload = "x".repeat(32 * 1024);
    let flood_started = std::time::Instant::now();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (mut ws, _, _, _) = join_timed(&gw).await;
        let relay =
            json!({"type": "relay", "to": stalled_id, "payload": {"sdp": payload}}).to_string();
        senders.push(tokio::spawn(async move {
            for _ in 0..150 {
                if ws.send(Message::text(relay.clone())).await.is_err() {
                    break;
                }
            }
            ws
        }));
    }
    // A well-behaved newcomer meanwhile: welcome and peers at once.
    let (_good, _, _, took) = join_timed(&gw).await;
    assert!(
        took < Duration::from_secs(1),
        "the good peer waited {took:?}"
    );
    let dropped = wait_until_async(
        || async {
            gw.metric("p2p_connections_closed_total{reason=\"slow\"}")
                .await
                >= 1.0
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(dropped, "the stalled peer was never dropped");
    let within = flood_started.elapsed();
    assert!(within < Duration::from_secs(4), "dropped after {within:?}");
    // It is no longer offered to anybody.
    let (_late, _, list, took) = join_timed(&gw).await;
    assert!(!list.contains(&stalled_id), "still offered: {list:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        gw.metric("p2p_peers").await,
        5.0,
        "a, 2 senders, good, late"
    );
    for s in senders {
        let _ = s.await;
    }
    drop(stalled);
}

/// Many spellings of one stream (folded slashes, queries, encoded letters) are one swarm: the
/// table does not grow with them, and everybody is matched with everybody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_stream_is_one_swarm() {
    let (_origin, gw) = setup(|c| c.p2p.max_peers_per_address = 1_000).await;
    let spellings = |i: usize| match i % 4 {
        0 => format!("/s//master.m3u8?x={i}"),
        1 => format!("//s/master.m3u8?cachebust={i}&y=1"),
        2 => format!("/s/%6Daster.m3u8?{i}"),
        _ => format!("/s///master.m3u8#{i}"),
    };
    let mut held = Vec::new();
    for i in 0..200 {
        let (ws, welcome) = join_spelled(&gw, &spellings(i)).await;
        assert_eq!(welcome["type"], "welcome", "{}: {welcome}", spellings(i));
        assert_eq!(welcome["swarm"], "/s/low/index.m3u8");
        held.push(ws);
    }
    assert_eq!(gw.metric("p2p_swarms").await, 1.0);
    assert_eq!(gw.metric("p2p_peers").await, 200.0);
    // A spelling that names something else is not this swarm (and a traversal is refused).
    let (_, refused) = join_spelled(&gw, "/s/../s/master.m3u8").await;
    assert_eq!(refused["code"], "not_found", "{refused}");
    assert_eq!(gw.metric("p2p_swarms").await, 1.0);
}

/// One address cannot hold more than `max_peers_per_address` peers; a peer already in is still
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_a_bounded_number_of_peers() {
    let (_origin, gw) = setup(|c| c.p2p.max_peers_per_address = 20).await;
    let (mut good, _, _, _) = join_timed(&gw).await;
    let mut held = Vec::new();
    for _ in 0..19 {
        held.push(join_timed(&gw).await.0);
    }
    let (_, refused) = join_spelled(&gw, "/s/master.m3u8").await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(gw.metric("p2p_peers").await, 20.0);
    // The good peer is still served: a relay to a peer that left is answered.
    let relay = json!({"type": "relay", "to": "nobody", "payload": {}}).to_string();
    good.send(Message::text(relay)).await.unwrap();
    assert_eq!(until(&mut good, "error").await["code"], "not_found");
    // A place freed is a place for the next.
    drop(held.pop());
    let joined = wait_until_async(
        || async {
            let (_, m) = join_spelled(&gw, "/s/master.m3u8").await;
            m["type"] == "welcome"
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(joined);
}

/// The 501st viewer of a swarm (default limits) is told to join shard 1 (`swarm_full` naming
/// it: the shard is in the URL so that a balancer can put it on another gateway), and is matched
/// there; shard numbers out of range are a clean 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_501st_viewer_is_sent_to_the_next_shard_and_matched_there() {
    let (_origin, gw) = setup(|c| c.p2p.max_peers_per_address = 1_000).await;
    let mut held = Vec::new();
    for _ in 0..500 {
        let (ws, welcome) = join_spelled(&gw, "/s/master.m3u8").await;
        assert_eq!(welcome["swarm"], "/s/low/index.m3u8", "{welcome}");
        held.push(ws);
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, redirect) = join_spelled(&gw, "/s/master.m3u8").await;
        assert_eq!(redirect["type"], "error", "{redirect}");
        assert_eq!(redirect["code"], "swarm_full", "{redirect}");
        assert_eq!(redirect["shard"], 1, "{redirect}");
        let (mut ws, welcome) = join_at(&gw, "/s/master.m3u8", 1).await;
        assert_eq!(welcome["swarm"], "/s/low/index.m3u8~1", "{welcome}");
        let list = until(&mut ws, "peers").await;
        let list: Vec<&str> = list["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["peer_id"].as_str().unwrap())
            .collect();
        assert_eq!(list, ids, "matched within shard 1 only");
        ids.push(welcome["peer_id"].as_str().unwrap().to_owned());
        held.push(ws);
    }
    assert_eq!(gw.metric("p2p_swarms").await, 2.0);
    assert_eq!(gw.metric("p2p_peers").await, 502.0);
    assert_eq!(
        gw.metric("p2p_connections_closed_total{reason=\"swarm_full\"}")
            .await,
        2.0
    );
    // A place freed in shard 0 goes to the next newcomer asking for shard 0.
    drop(held.swap_remove(0));
    let rejoined = support::wait_until_async(
        || async { gw.metric("p2p_peers").await == 501.0 },
        Duration::from_secs(5),
    )
    .await;
    assert!(rejoined, "the closed socket left");
    let (_ws, welcome) = join_spelled(&gw, "/s/master.m3u8").await;
    assert_eq!(welcome["swarm"], "/s/low/index.m3u8", "{welcome}");
    for bad in ["abc", "-1", "4096", "99999999999"] {
        let url = format!("{}&shard={bad}", ws_url(&gw, "/s/master.m3u8"));
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 400, "shard={bad}")
            }
            other => panic!("shard={bad}: {other:?}"),
        }
    }
}

/// 400 members and 428 joins: each joiner gets its list, and a member gets a new one only when
/// its own list changed (a join or leave changes the lists of its mesh neighbours, about K), at
/// most once a second — not a full list to every member on every join (which would be 342,400
/// pushes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_list_pushes_grow_with_joins_not_with_joins_times_members() {
    let (_origin, gw) = setup(|c| c.p2p.max_peers_per_address = 1_000).await;
    let mut members = Vec::new();
    for _ in 0..400 {
        let (ws, welcome) = join_spelled(&gw, "/s/master.m3u8").await;
        assert_eq!(welcome["type"], "welcome");
        let id = welcome["peer_id"].as_str().unwrap().to_owned();
        members.push((id, ws));
    }
    for _ in 0..28 {
        let (ws, _, _, _) = join_timed(&gw).await;
        drop(ws);
    }
    // The pacer has had time to send whatever was due.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let pushed = gw.metric("p2p_peer_lists_pushed_total").await;
    assert!(
        pushed >= 428.0,
        "every joiner gets its first list: {pushed}"
    );
    assert!(pushed <= 3.0 * 428.0, "{pushed} peer lists pushed");
    // A member still learns what changed for it: a peer on its list leaves, and it gets a new
    // list without it.
    let (mut newest, _, list, _) = join_timed(&gw).await;
    let senior = list[0].clone();
    let at = members.iter().position(|(id, _)| *id == senior).unwrap();
    members.remove(at).1.close(None).await.unwrap();
    let mut updated = Vec::new();
    for _ in 0..10 {
        match next(&mut newest).await {
            Some(m) if m["type"] == "peers" => {
                updated = m["peers"].as_array().unwrap().clone();
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert_eq!(updated.len(), 8);
    assert!(!updated.iter().any(|p| p["peer_id"] == senior.as_str()));
}

/// Joins rendition 0 through a connection that says it comes from `forwarded_for` (as a load
/// balancer would write it); returns the socket and the answer to `join`.
async fn join_forwarded(gw: &TestGateway, forwarded_for: &str) -> (Ws, Value) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = ws_url(gw, "/s/master.m3u8").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("connect in time")
    .expect("websocket upgrade");
    ws.send(Message::text(join(0))).await.unwrap();
    let first = next(&mut ws).await.expect("an answer to join");
    (ws, first)
}

/// Behind a load balancer every peer arrives from the balancer's address: with
/// `auth.client_ip_header` set (and no auth at all), the per-address caps count the viewers'
/// addresses (the last entry, the one the balancer appended), not the balancer's.
#[tokio::test]
async fn per_address_caps_count_the_viewers_behind_a_balancer() {
    let (_origin, gw) = setup(|c| {
        c.p2p.max_peers_per_address = 2;
        c.auth.client_ip_header = "x-forwarded-for".into();
    })
    .await;
    let mut held = Vec::new();
    for n in 1..=4 {
        let (ws, m) = join_forwarded(&gw, &format!("192.0.2.{n}")).await;
        assert_eq!(m["type"], "welcome", "viewer {n} from its own address: {m}");
        held.push(ws);
    }
    // A second viewer at 192.0.2.1 (what it wrote itself comes first and is ignored) fits...
    let (ws, m) = join_forwarded(&gw, "198.51.100.7, 192.0.2.1").await;
    assert_eq!(m["type"], "welcome", "{m}");
    held.push(ws);
    // ...a third does not, whatever it claims before the balancer's entry.
    let (_, m) = join_forwarded(&gw, "198.51.100.8, 192.0.2.1").await;
    assert_eq!(m["code"], "rate_limited", "{m}");
    assert_eq!(gw.metric("p2p_peers").await, 5.0);
}

/// A VOD as PeerTube publishes it: one file, its init section and every segment a byte range.
/// Each range is a segment for peers: pushed when the file is cached, in the join window and on
/// the digests endpoint, with the digest and size of the range (and none for the whole file).
#[tokio::test]
async fn byte_ranges_of_one_file_are_segments_with_their_own_digests() {
    let file = pattern(10_000, 7);
    let origin = ranged_vod(
        "/r",
        "#EXT-X-MAP:URI=\"v.mp4\",BYTERANGE=\"1000@0\"\n",
        &["4000@1000".into(), "5000".into()],
        file.clone(),
    )
    .await;
    let gw = TestGateway::start(test_config(&origin)).await;
    let expected = |offset: usize, len: usize| {
        let id = format!("/r/v.mp4#bytes={offset}-{}", offset + len - 1);
        let sha: String = Sha256::digest(&file[offset..offset + len])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        json!({"id": id, "sha256": sha, "size": len})
    };
    let ranges = [
        expected(0, 1000),
        expected(1000, 4000),
        expected(5000, 5000),
    ];

    // A peer joins before anything is cached, then a viewer fetches one range: the gateway
    // caches the file and pushes a digest for each range.
    let mut ws = connect(&gw, "/r/master.m3u8").await;
    ws.send(Message::text(join_stream("/r/master.m3u8", 0)))
        .await
        .unwrap();
    assert_eq!(until(&mut ws, "welcome").await["type"], "welcome");
    let r = gw
        .get_with("/r/v.mp4", &[("range", "bytes=1000-4999")])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &file[1000..5000]);
    let mut pushed = Vec::new();
    while pushed.len() < 3 {
        let m = until(&mut ws, "digests").await;
        pushed.extend(m["segments"].as_array().unwrap().iter().cloned());
    }
    for range in &ranges {
        assert!(pushed.contains(range), "{range} not in {pushed:?}");
    }
    assert!(
        pushed.iter().all(|d| d["id"] != "/r/v.mp4"),
        "no digest for the whole file: {pushed:?}"
    );

    // The endpoint (and a join's window) list the ranges of the cached file.
    let r = gw.get("/p2p/v1/digests/r/master.m3u8/0").await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["segments"], json!(ranges), "{body}");
}

/// An origin whose playlist names overlapping ranges over and over: the gateway hashes no more
/// than twice the file's length for them (the rest get no digest, so peers leave them to HTTP).
#[tokio::test]
async fn overlapping_byte_ranges_cost_at_most_twice_the_file() {
    let ranges: Vec<String> = (0..50).map(|offset| format!("9000@{offset}")).collect();
    let origin = ranged_vod("/o", "", &ranges, pattern(10_000, 3)).await;
    let gw = TestGateway::start(test_config(&origin)).await;
    assert_eq!(gw.get("/o/v.m3u8").await.status, 200);
    assert_eq!(gw.get("/o/v.mp4").await.status, 200);
    let ids = support::digest_ids(&gw, "/o/master.m3u8", 0).await;
    assert_eq!(
        ids,
        ["/o/v.mp4#bytes=0-8999", "/o/v.mp4#bytes=1-9000"],
        "two ranges of 9,000 bytes fit in 20,000"
    );
    // The file itself is served as usual.
    let r = gw.get_with("/o/v.mp4", &[("range", "bytes=5-9")]).await;
    assert_eq!(&r.body[..], &pattern(10_000, 3)[5..10]);
}

/// A join's digest window longer than one message may list (256 entries) comes in several
/// messages, every entry once: here 300 byte ranges of one cached file.
#[tokio::test]
async fn a_long_digest_window_comes_in_messages_of_at_most_256() {
    let origin = ranged_vod("/w", "", &vec!["100".to_string(); 300], pattern(30_000, 5)).await;
    let gw = TestGateway::start(test_config(&origin)).await;
    assert_eq!(gw.get("/w/v.m3u8").await.status, 200);
    assert_eq!(gw.get("/w/v.mp4").await.status, 200);

    let mut ws = connect(&gw, "/w/master.m3u8").await;
    ws.send(Message::text(join_stream("/w/master.m3u8", 0)))
        .await
        .unwrap();
    assert_eq!(until(&mut ws, "welcome").await["type"], "welcome");
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    while ids.len() < 300 {
        let m = until(&mut ws, "digests").await;
        let segments = m["segments"].as_array().unwrap();
        sizes.push(segments.len());
        ids.extend(
            segments
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(sizes, [256, 44]);
    let expected: Vec<String> = (0..300)
        .map(|i| format!("/w/v.mp4#bytes={}-{}", i * 100, i * 100 + 99))
        .collect();
    assert_eq!(ids, expected);
    // Then the peer list, as after any join.
    assert_eq!(until(&mut ws, "peers").await["type"], "peers");
}
