//! Native peers over real QUIC, through a real gateway on the demo live stream: offload, verification,
//! liars and peers that die mid-transfer.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use peer_assist::node::{self, NodeConfig, Source, Summary, TestBehaviour};
use support::TestGateway;

/// Segments obtained before this are the warm-up (startup, the first fetches over HTTP).
const WARM_UP_MS: u64 = 8_000;

fn node_config(gw: &TestGateway, seconds: u64) -> NodeConfig {
    let mut config = NodeConfig::new(&format!("http://{}", gw.addr), "/demo/live/master.m3u8");
    config.duration = Some(Duration::from_secs(seconds));
    config
}

fn after_warm_up(summary: &Summary) -> (u64, u64) {
    summary
        .log
        .iter()
        .filter(|r| r.at_ms >= WARM_UP_MS)
        .fold((0, 0), |(peer, total), r| {
            let from_peer = if r.source == Source::P2p { r.bytes } else { 0 };
            (peer + from_peer, total + r.bytes)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_native_peers_share_the_live_stream() {
    let gw = support::demo_gateway().await;
    let mut handles = Vec::new();
    for _ in 0..5 {
        handles.push(node::start(node_config(&gw, 28)).await.expect("node joins"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The p2p series move while the peers run.
    let all_in = support::wait_until_async(
        || async { gw.metric("p2p_peers").await == 5.0 },
        Duration::from_secs(10),
    )
    .await;
    assert!(all_in, "five peers in the tracker");
    assert_eq!(gw.metric("p2p_swarms").await, 1.0);

    let mut summaries = Vec::new();
    for h in handles {
        summaries.push(h.wait().await);
    }
    let (mut peer_bytes, mut total) = (0, 0);
    for s in &summaries {
        let (p, t) = after_warm_up(s);
        peer_bytes += p;
        total += t;
        assert_eq!(s.mismatches, 0, "{s:?}");
        assert_eq!(
            s.missed_deadlines, 0,
            "peer {} stalled: {:?}",
            s.peer_id, s.log
        );
        assert!(s.log.iter().all(|r| r.in_time));
        assert!(
            s.segments >= 10,
            "peer {} got {} segments",
            s.peer_id,
            s.segments
        );
    }
    let offload = peer_bytes as f64 / total as f64;
    eprintln!(
        "offload after warm-up: {:.1}% of {total} bytes",
        offload * 100.0
    );
    assert!(
        offload >= 0.60,
        "offload after warm-up {offload:.2} < 0.60: {summaries:#?}"
    );
    support::assert_all_authentic(&gw, &summaries).await;

    let reported_peer = gw.metric("p2p_reported_bytes_total{source=\"peer\"}").await;
    let reported_http = gw.metric("p2p_reported_bytes_total{source=\"http\"}").await;
    let sent: u64 = summaries.iter().map(|s| s.p2p_bytes).sum();
    assert_eq!(reported_peer as u64, sent, "every peer byte was reported");
    assert!(reported_http > 0.0);
    assert_eq!(gw.metric("p2p_digest_mismatches_total").await, 0.0);
}

/// The seeder rule (PROTOCOL.md §4.1): the peer that was there first fetches new live segments over
/// HTTP, the newcomer gets them from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_gets_the_live_stream_from_the_senior_peer() {
    let gw = support::demo_gateway().await;
    let senior = node::start(node_config(&gw, 30)).await.expect("node joins");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let newcomer = node::start(node_config(&gw, 24)).await.expect("node joins");
    let newcomer = newcomer.wait().await;
    let senior = senior.wait().await;
    let (from_peers, total) = after_warm_up(&newcomer);
    let share = from_peers as f64 / total as f64;
    eprintln!(
        "newcomer after warm-up: {:.1}% of {total} bytes from the senior peer",
        share * 100.0
    );
    assert!(
        total > 0 && share >= 0.8,
        "newcomer {share:.2}: {newcomer:#?}"
    );
    assert_eq!(
        senior.p2p_bytes, 0,
        "the senior peer seeds, it never waits: {senior:#?}"
    );
    assert!(senior.uploaded_bytes >= from_peers, "{senior:#?}");
    for s in [&senior, &newcomer] {
        assert_eq!(s.mismatches, 0);
        assert_eq!(
            s.missed_deadlines, 0,
            "peer {} stalled: {:?}",
            s.peer_id, s.log
        );
    }
    support::assert_all_authentic(&gw, &[senior, newcomer]).await;
}

/// Joins the tracker as an observer and returns the peer ids it is offered.
async fn offered_peers(gw: &TestGateway) -> Vec<String> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/p2p/v1/ws?stream=/demo/live/master.m3u8", gw.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("observer connects");
    let join = serde_json::json!({"type": "join", "v": 1, "stream": "/demo/live/master.m3u8", "rendition": 0,
        "capabilities": {"transports": ["quic"], "upload": false}});
    ws.send(Message::text(join.to_string()))
        .await
        .expect("join");
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a peer list in time")
            .expect("open")
            .expect("message");
        if let Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(&text).expect("json");
            if value["type"] == "peers" {
                return value["peers"]
                    .as_array()
                    .expect("list")
                    .iter()
                    .map(|p| p["peer_id"].as_str().unwrap_or_default().to_owned())
                    .collect();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_peer_is_caught_dropped_and_no_longer_matched() {
    let gw = support::demo_gateway().await;
    let mut liar_config = node_config(&gw, 30);
    liar_config.test = TestBehaviour {
        forge_receipts: Default::default(),
        lie: true,
        slow_upload: None,
        honest_uploads: 0,
    };
    let liar = node::start(liar_config).await.expect("liar joins");
    // The liar gets a head start so it holds segments others will ask it for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The tracker delists a peer only when several independent receivers caught it lying
    // (`MIN_AGREEING`), so two watchers are made to catch it for sure: they upload nothing and never
    // seed over HTTP, so the liar is the only peer they can ask until it is caught. Two ordinary
    // honest peers join after them.
    let mut honest = Vec::new();
    for i in 0..4 {
        let mut config = node_config(&gw, 24);
        if i < 2 {
            config.upload = false;
            config.scheduler.http_first_count = 0;
        }
        honest.push(node::start(config).await.expect("node joins"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut summaries = Vec::new();
    for h in honest {
        summaries.push(h.wait().await);
    }
    // Ask the tracker while the liar is still connected: it must not be offered any more.
    let offered = offered_peers(&gw).await;
    let liar_summary = liar.stop().await;
    let liar_id = liar_summary.peer_id.clone();
    assert!(
        liar_summary.uploaded_bytes > 0,
        "the liar did upload (corrupted) data"
    );

    let caught: u64 = summaries.iter().map(|s| s.mismatches).sum();
    assert!(
        summaries[..2].iter().all(|s| s.mismatches > 0),
        "both watchers asked the liar and caught it: {summaries:#?}"
    );
    for s in &summaries {
        assert_eq!(s.missed_deadlines, 0, "peer {} stalled", s.peer_id);
        assert!(
            s.peers_dropped_for_lying.iter().all(|p| p == &liar_id),
            "only the liar is ever dropped: {:?}",
            s.peers_dropped_for_lying
        );
        if s.mismatches > 0 {
            assert_eq!(
                s.peers_dropped_for_lying,
                vec![liar_id.clone()],
                "the receiver disconnected the liar"
            );
        }
    }
    assert!(
        !offered.contains(&liar_id),
        "the tracker stopped matching the liar: {offered:?}"
    );
    support::assert_all_authentic(&gw, &summaries).await;
    assert!(gw.metric("p2p_digest_mismatches_total").await >= caught as f64);
    assert!(gw.metric("p2p_fallbacks_total{cause=\"mismatch\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_killed_mid_transfer_is_replaced_by_http_in_time() {
    let gw = support::demo_gateway().await;
    // A seed that uploads slowly, so transfers from it are always in progress.
    let mut seed_config = node_config(&gw, 60);
    seed_config.seed = true;
    seed_config.test = TestBehaviour {
        forge_receipts: Default::default(),
        lie: false,
        slow_upload: Some(20_000),
        honest_uploads: 0,
    };
    let seed = node::start(seed_config).await.expect("seed joins");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut viewer_config = node_config(&gw, 18);
    viewer_config.upload = false;
    // Never an HTTP-first seeder itself: every fresh segment is asked of the seed.
    viewer_config.scheduler.http_first_count = 0;
    let viewer_started = std::time::Instant::now();
    let viewer = node::start(viewer_config).await.expect("viewer joins");
    // Kill the seed while it is sending the viewer a segment: an upload at the seed is not enough
    // (the viewer may already have given up on it and its Cancel be on the way), the viewer must
    // be waiting for it too.
    let mut waited = Duration::ZERO;
    while seed.active_uploads() == 0 || viewer.active_transfers() == 0 {
        if waited >= Duration::from_secs(12) {
            let v = viewer.stop().await;
            let s = seed.stop().await;
            panic!("the viewer never asked the seed:\nviewer {v:#?}\nseed {s:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    let killed_ms = viewer_started.elapsed().as_millis() as u64;
    seed.kill();
    let summary = viewer.wait().await;
    assert_eq!(summary.missed_deadlines, 0, "{summary:#?}");
    // The transfer running at the kill failed: as a disconnect when the link's loss is noticed
    // first, as a timeout when the stalled transfer is (a killed process closes nothing; which
    // comes first depends on where the transfer was).
    assert!(
        summary.failures.disconnect + summary.failures.timeout >= 1,
        "a transfer was running when the seed died: {summary:#?}"
    );
    assert!(summary.log.iter().all(|r| r.in_time));
    assert!(
        summary
            .log
            .iter()
            .filter(|r| r.at_ms > killed_ms)
            .all(|r| r.source == Source::Http),
        "nothing came from the dead seed (killed at {killed_ms} ms): {summary:#?}"
    );
    support::assert_all_authentic(&gw, &[summary]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driven_node_fetches_what_it_is_asked_for_from_a_peer() {
    let gw = support::demo_gateway().await;
    let start = |gw: &TestGateway, may_seed: bool| {
        let mut c = node_config(gw, 60);
        c.driven = true;
        c.duration = None;
        // Only what the players ask for (no new live segment a digest announces meanwhile).
        c.prefetch_announced = false;
        if !may_seed {
            // Never an HTTP-first seeder: b waits for its peer.
            c.scheduler.http_first_count = 0;
        }
        node::start(c)
    };
    let a = start(&gw, true).await.expect("a joins");
    let b = start(&gw, false).await.expect("b joins");
    let playlist = gw.get("/demo/live/240p/index.m3u8").await.text();
    let newest = playlist
        .lines()
        .rev()
        .find(|l| l.ends_with(".ts"))
        .expect("a segment");
    let id = format!("/demo/live/240p/{newest}");
    let by = std::time::Instant::now() + Duration::from_secs(6);
    let first = a.fetcher().fetch(&id, by).await.expect("a gets it");
    let expected = gw.get(&id).await.body;
    assert_eq!(first.bytes, expected);
    // b asks at once: the segment is new to it and not due for 8 s, so it waits for a's Have
    // rather than going to HTTP, and is served by a.
    let second = b
        .fetcher()
        .fetch(&id, by + Duration::from_secs(2))
        .await
        .expect("b gets it");
    assert_eq!(second.bytes, expected);
    assert_eq!(second.source, Source::P2p, "b got it from a");
    let (a, b) = (a.stop().await, b.stop().await);
    assert_eq!(
        a.segments, 1,
        "a driven node fetches only what it is asked for"
    );
    assert_eq!(b.p2p_bytes, expected.len() as u64);
    assert_eq!(a.mismatches + b.mismatches, 0);
}

/// A driven node follows its player's rendition switches: it leaves one swarm and joins the other,
/// and is served by the peers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driven_node_switches_swarms_with_its_player() {
    let gw = support::demo_gateway().await;
    let start = |gw: &TestGateway, rendition: u32, may_seed: bool| {
        let mut c = node_config(gw, 60);
        c.driven = true;
        c.duration = None;
        c.rendition = rendition;
        // Only what the players ask for: the byte counts below are of that one segment, not of
        // a new live segment a digest announces meanwhile.
        c.prefetch_announced = false;
        if !may_seed {
            c.scheduler.http_first_count = 0;
        }
        node::start(c)
    };
    // a watches rendition 0 (240p); b starts in rendition 1.
    let a = start(&gw, 0, true).await.expect("a joins");
    let b = start(&gw, 1, false).await.expect("b joins");
    let playlist = gw.get("/demo/live/240p/index.m3u8").await.text();
    let newest = playlist
        .lines()
        .rev()
        .find(|l| l.ends_with(".ts"))
        .expect("a segment");
    let id = format!("/demo/live/240p/{newest}");
    let by = std::time::Instant::now() + Duration::from_secs(6);
    let first = a.fetcher().fetch(&id, by).await.expect("a gets it");
    // b's player switches down to 240p: its node joins a's swarm and gets the segment from a.
    b.fetcher().switch_rendition(0);
    b.fetcher().switch_rendition(0);
    let second = b
        .fetcher()
        .fetch(&id, by + Duration::from_secs(2))
        .await
        .expect("b gets it");
    assert_eq!(second.bytes, first.bytes);
    assert_eq!(second.source, Source::P2p, "b got it from a, in a's swarm");
    let (a, b) = (a.stop().await, b.stop().await);
    assert_eq!(
        b.rendition_switches, 1,
        "a second switch to the same rendition is none"
    );
    assert_eq!(b.signalling_reconnects, 0);
    assert_eq!(b.p2p_bytes, first.bytes.len() as u64);
    assert_eq!(a.uploaded_bytes, first.bytes.len() as u64);
}

/// A live origin at `/s/`: one variant whose media playlist names each segment `/s/seg/N.ts` as
/// `name(origin base URL, N)` (relative with `..`, absolute...), a new 2 s segment every 2 s, six
/// in the window.
async fn live_origin(name: impl Fn(&str, u64) -> String + Send + 'static) -> support::TestOrigin {
    use support::Reply;
    let origin = support::TestOrigin::start().await;
    let base = origin.base();
    origin.set(
        "/s/master.m3u8",
        Reply::ok("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nv0/index.m3u8\n"),
    );
    let publish = origin.clone();
    let update = move |last: u64| {
        publish.set(
            &format!("/s/seg/{last}.ts"),
            Reply::ok(support::pattern(200_000, last as u8)),
        );
        let first = last.saturating_sub(5);
        let mut text = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
        );
        for n in first..=last {
            text.push_str(&format!("#EXTINF:2.0,\n{}\n", name(&base, n)));
        }
        publish.set("/s/v0/index.m3u8", Reply::ok(text));
    };
    for n in 0..6 {
        update(n);
    }
    tokio::spawn(async move {
        for n in 6.. {
            tokio::time::sleep(Duration::from_secs(2)).await;
            update(n);
        }
    });
    origin
}

/// Segment ids are the gateway paths the playlist's URIs resolve to, whatever their spelling
/// (`../seg/N.ts`, an absolute URL at the origin): the digests name them the same way and P2P works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_works_whatever_the_playlist_calls_its_segments() {
    let relative = live_origin(|_, n| format!("../seg/{n}.ts")).await;
    let absolute = live_origin(|base, n| format!("{base}s/seg/{n}.ts?v=1")).await;
    let mut runs = Vec::new();
    for origin in [&relative, &absolute] {
        let gw = TestGateway::start(support::test_config(origin)).await;
        let url = format!("http://{}", gw.addr);
        let mut config = NodeConfig::new(&url, "/s/master.m3u8");
        config.duration = Some(Duration::from_secs(24));
        let senior = node::start(config.clone()).await.expect("node joins");
        runs.push((gw, senior, config));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut newcomers = Vec::new();
    for (_, _, config) in &runs {
        let mut config = config.clone();
        config.duration = Some(Duration::from_secs(20));
        newcomers.push(node::start(config).await.expect("node joins"));
    }
    for ((gw, senior, _), newcomer) in runs.into_iter().zip(newcomers) {
        let newcomer = newcomer.wait().await;
        let senior = senior.wait().await;
        let (from_peers, total) = after_warm_up(&newcomer);
        let share = from_peers as f64 / total.max(1) as f64;
        eprintln!(
            "newcomer after warm-up: {:.1}% of {total} bytes from peers",
            share * 100.0
        );
        assert!(share >= 0.5, "newcomer {newcomer:#?} senior {senior:#?}");
        for s in [&senior, &newcomer] {
            assert_eq!(s.mismatches + s.missed_deadlines, 0, "{s:#?}");
            assert!(s.log.iter().all(|r| r.id.starts_with("/s/seg/")), "{s:#?}");
        }
        // The digests name the segments by the same ids.
        let ids = support::digest_ids(&gw, "/s/master.m3u8", 0).await;
        assert!(
            !ids.is_empty() && ids.iter().all(|id| id.starts_with("/s/seg/")),
            "{ids:?}"
        );
        support::assert_all_authentic(&gw, &[senior, newcomer]).await;
    }
}

/// A VOD whose segments are byte ranges of one file (as PeerTube publishes): native nodes name
/// each range as a segment of its own, fetch it with a range request, and share it verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_peers_share_the_byte_ranges_of_one_file() {
    use support::Reply;
    let origin = support::TestOrigin::start().await;
    let file = support::pattern(20 * 150_000, 9);
    let mut media = String::from(
        "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n",
    );
    for _ in 0..20 {
        media.push_str("#EXTINF:2.0,\n#EXT-X-BYTERANGE:150000\nall.bin\n");
    }
    media.push_str("#EXT-X-ENDLIST\n");
    origin.set(
        "/b/master.m3u8",
        Reply::ok("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=600000\nv.m3u8\n"),
    );
    origin.set("/b/v.m3u8", Reply::ok(media));
    origin.set("/b/all.bin", Reply::ok(file));
    let gw = TestGateway::start(support::test_config(&origin)).await;
    let mut config = NodeConfig::new(&format!("http://{}", gw.addr), "/b/master.m3u8");
    config.duration = Some(Duration::from_secs(24));
    let senior = node::start(config.clone()).await.expect("node joins");
    tokio::time::sleep(Duration::from_secs(3)).await;
    config.duration = Some(Duration::from_secs(20));
    let newcomer = node::start(config).await.expect("node joins");
    let newcomer = newcomer.wait().await;
    let senior = senior.wait().await;
    let (from_peers, total) = after_warm_up(&newcomer);
    let share = from_peers as f64 / total.max(1) as f64;
    eprintln!(
        "newcomer after warm-up: {:.1}% of {total} bytes from peers",
        share * 100.0
    );
    assert!(share >= 0.5, "newcomer {newcomer:#?} senior {senior:#?}");
    for s in [&senior, &newcomer] {
        assert_eq!(s.mismatches + s.missed_deadlines, 0, "{s:#?}");
        assert!(
            s.log
                .iter()
                .all(|r| r.id.starts_with("/b/all.bin#bytes=") && r.bytes == 150_000),
            "{s:#?}"
        );
    }
    support::assert_all_authentic(&gw, &[senior, newcomer]).await;
    assert_eq!(
        origin.count("/b/all.bin"),
        1,
        "one origin fetch for the whole file"
    );
}
