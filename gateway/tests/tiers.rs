//! Tiers: a real origin, a shield gateway in front of it, and three edge gateways whose origin is the
//! shield (edge → shield → origin, docs/OPERATIONS.md). All on 127.0.0.1, all driven by one
//! explicit clock so that freshness and `Age` are exact.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use gateway::ManualClock;
use sha2::{Digest, Sha256};
use support::{config_for, pattern, test_config, Fetched, Reply, TestGateway, TestOrigin};

const EDGES: usize = 3;
const MASTER: &str = "/s/master.m3u8";
const MEDIA: &str = "/s/0/index.m3u8";
const SEGMENTS: [&str; 3] = ["/s/0/10.ts", "/s/0/11.ts", "/s/0/12.ts"];

struct Tiers {
    origin: TestOrigin,
    shield: TestGateway,
    edges: Vec<TestGateway>,
    clock: Arc<ManualClock>,
}

fn live_playlist() -> String {
    let mut text =
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:10\n".to_owned();
    for s in 10..13 {
        text.push_str(&format!("#EXTINF:4.0,\n{s}.ts\n"));
    }
    text
}

fn segment_body(i: usize) -> bytes::Bytes {
    pattern(20_000 + i * 100, i as u8)
}

/// A live stream at a fresh origin, a shield in front of it and [`EDGES`] edges in front of the
/// shield. Retries are off and the breakers never open, so origin requests are counted exactly.
async fn tiers() -> Tiers {
    let origin = TestOrigin::start().await;
    origin.set(
        MASTER,
        Reply::ok("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n0/index.m3u8\n"),
    );
    origin.set(MEDIA, Reply::ok(live_playlist()));
    for (i, path) in SEGMENTS.iter().enumerate() {
        origin.set(path, Reply::ok(segment_body(i)));
    }
    let clock = Arc::new(ManualClock::new());
    let exact = |mut config: gateway::Config| {
        config.origin.retries = 0;
        config.origin.breaker_failures = 1000;
        config
    };
    let shield = TestGateway::start_with_clock(exact(test_config(&origin)), clock.clone()).await;
    let mut edges = Vec::new();
    for _ in 0..EDGES {
        let config = exact(config_for(format!("http://{}/", shield.addr)));
        edges.push(TestGateway::start_with_clock(config, clock.clone()).await);
    }
    Tiers {
        origin,
        shield,
        edges,
        clock,
    }
}

fn x_cache(r: &Fetched) -> &str {
    r.header("x-cache").unwrap_or("")
}

fn age(r: &Fetched) -> u64 {
    r.header("age")
        .expect("an Age header")
        .parse()
        .expect("Age is a number")
}

/// What a viewer does: the master playlist, the media playlist, then every segment.
async fn watch(edge: &TestGateway) {
    for path in [MASTER, MEDIA].iter().chain(SEGMENTS.iter()) {
        let r = edge.get(path).await;
        assert_eq!(r.status, 200, "{path} through an edge");
    }
}

#[tokio::test]
async fn n_edges_and_their_viewers_cost_the_origin_one_fetch_per_object() {
    let t = tiers().await;
    // 3 edges × 8 viewers, all at once, then once more (everything cached by then).
    for _ in 0..2 {
        join_all(
            t.edges
                .iter()
                .flat_map(|edge| (0..8).map(move |_| watch(edge))),
        )
        .await;
    }
    for path in [MASTER, MEDIA].iter().chain(SEGMENTS.iter()) {
        assert_eq!(t.origin.count(path), 1, "origin requests for {path}");
    }
    assert_eq!(t.origin.total(), 2 + SEGMENTS.len());
    // The shield itself was asked at most once per object by each edge.
    for edge in &t.edges {
        let fetched = edge
            .metric("gateway_origin_requests_total{class=\"segment\",outcome=\"ok\"}")
            .await;
        assert_eq!(
            fetched,
            SEGMENTS.len() as f64,
            "segment fetches of one edge"
        );
    }
}

#[tokio::test]
async fn classes_and_digests_carry_through_the_tiers() {
    let t = tiers().await;
    let edge = &t.edges[0];
    watch(edge).await;

    // The edge classified what the shield sent exactly as the shield classified the origin's.
    for gw in [&t.shield, edge] {
        for (class, n) in [("multivariant", 1.0), ("live_media", 1.0), ("segment", 3.0)] {
            let series =
                format!("gateway_origin_requests_total{{class=\"{class}\",outcome=\"ok\"}}");
            assert_eq!(gw.metric(&series).await, n, "{series}");
        }
    }
    // Live media playlist: fresh for half a target duration (2 s) on both tiers...
    let media = edge.get(MEDIA).await;
    assert_eq!(x_cache(&media), "HIT");
    assert_eq!(media.header("cache-control"), Some("public, max-age=2"));
    assert_eq!(
        media.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let segment = edge.get(SEGMENTS[0]).await;
    assert_eq!(
        segment.header("cache-control"),
        Some("public, max-age=86400")
    );
    assert_eq!(segment.header("content-type"), Some("video/mp2t"));
    // ...then stale at the edge (served while it refreshes), while segments stay fresh.
    t.clock.advance(Duration::from_millis(2_500));
    assert_eq!(x_cache(&edge.get(MEDIA).await), "STALE");
    assert_eq!(x_cache(&edge.get(SEGMENTS[0]).await), "HIT");

    // Digests: the edge publishes the shield's, and both are the SHA-256 of the bytes.
    let at_edge = digests(edge).await;
    let at_shield = digests(&t.shield).await;
    assert_eq!(at_edge.len(), SEGMENTS.len(), "{at_edge:?}");
    assert_eq!(at_edge, at_shield);
    for (i, d) in at_edge.iter().enumerate() {
        assert_eq!(d["id"], SEGMENTS[i]);
        let body = segment_body(i);
        assert_eq!(
            d["sha256"],
            hex::encode(Sha256::digest(&body)),
            "{}",
            d["id"]
        );
        assert_eq!(d["size"], body.len() as u64);
    }
}

/// The digests a gateway publishes for rendition 0 of the stream.
async fn digests(gw: &TestGateway) -> Vec<serde_json::Value> {
    let url = format!("/p2p/v1/digests{MASTER}/0");
    let r = gw.get(&url).await;
    assert_eq!(r.status, 200, "{url}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["segments"].as_array().unwrap().clone()
}

#[tokio::test]
async fn age_adds_up_across_tiers() {
    let t = tiers().await;
    let edge = &t.edges[1];
    // Cached at the shield (through another edge) at t = 0.
    watch(&t.edges[0]).await;
    t.clock.advance(Duration::from_millis(5_500));

    // First fetch by this edge, 5.5 s later: the shield's age, whole seconds.
    let first = edge.get(SEGMENTS[1]).await;
    assert_eq!(x_cache(&first), "MISS", "a miss at this edge");
    assert_eq!(age(&first), 5, "Age after 5.5 s at the shield");
    t.clock.advance(Duration::from_secs(3));
    let later = edge.get(SEGMENTS[1]).await;
    assert_eq!(x_cache(&later), "HIT");
    let shield = t.shield.get(SEGMENTS[1]).await;
    assert!(
        (8..=age(&shield)).contains(&age(&later)),
        "edge Age {} after 8.5 s in the tiers (shield says {})",
        age(&later),
        age(&shield)
    );
    assert_eq!(t.origin.count(SEGMENTS[1]), 1);

    // A live media playlist 1 s old at the shield (fresh for 2 s) is fresh at the edge for the
    // rest of those 2 s, not less (the edge must not count the shield's Age twice) and not more.
    let t = tiers().await;
    assert_eq!(t.shield.get(MEDIA).await.status, 200);
    t.clock.advance(Duration::from_secs(1));
    let edge = &t.edges[0];
    let first = edge.get(MEDIA).await;
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(age(&first), 1);
    t.clock.advance(Duration::from_millis(900));
    let again = edge.get(MEDIA).await;
    assert_eq!(
        x_cache(&again),
        "HIT",
        "fresh at the edge while fresh at the shield ({:?}, Age {:?})",
        again.header("cache-control"),
        again.header("age")
    );
    assert_eq!(t.origin.count(MEDIA), 1);
    t.clock.advance(Duration::from_millis(200));
    assert_eq!(x_cache(&t.shield.get(MEDIA).await), "STALE");
    assert_eq!(x_cache(&edge.get(MEDIA).await), "STALE");
}

/// An origin error cached at the shield (at most 1 s) is kept by an edge at most for what is left
/// of the shield's lifetime: once the shield would ask the origin again, so does every edge.
#[tokio::test]
async fn errors_are_not_cached_longer_at_the_edge_than_at_the_shield() {
    // A segment the playlist names (errors are cached only for known objects) and a playlist.
    for (path, error) in [(SEGMENTS[2], 503), ("/s/gone/index.m3u8", 404)] {
        let t = tiers().await;
        t.origin.set(path, Reply::status(error));
        for edge in &t.edges[..2] {
            assert_eq!(edge.get(MEDIA).await.status, 200);
        }
        // Edge 0 gets the error at t = 0: cached at the shield, and at edge 0 for 1 s.
        assert_eq!(t.edges[0].get(path).await.status.as_u16(), error);
        assert_eq!(t.origin.count(path), 1);
        // Edge 1 asks 0.8 s later: the shield answers from its cache.
        t.clock.advance(Duration::from_millis(800));
        let r = t.edges[1].get(path).await;
        assert_eq!(r.status.as_u16(), error);
        assert_eq!(t.origin.count(path), 1, "{path}: the shield's cached error");
        assert_eq!(r.header("age"), Some("0"));
        // The origin recovers; at 1.2 s the shield's error has expired, and so have the edges'.
        t.origin.set(path, Reply::ok(pattern(1000, 9)));
        t.clock.advance(Duration::from_millis(400));
        let r = t.edges[1].get(path).await;
        assert_eq!(
            r.status, 200,
            "{path}: edge 1 kept the shield's {error} beyond the shield's lifetime"
        );
        assert_eq!(t.origin.count(path), 2);
        assert_eq!(t.edges[0].get(path).await.status, 200);
        assert_eq!(t.origin.count(path), 2);
    }
}
