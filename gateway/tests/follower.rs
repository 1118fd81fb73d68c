//! The live playlist follower prefetches new segments before any viewer asks, and lets go of idle
//! renditions.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use gateway::cache::CacheKey;
use gateway::ManualClock;
use sha2::{Digest, Sha256};
use support::{pattern, test_config, wait_until, Reply, TestGateway, TestOrigin};

fn playlist(first: u64, last: u64) -> String {
    let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for s in first..=last {
        text.push_str(&format!("#EXTINF:1.0,\n{s}.ts\n"));
    }
    text
}

/// Long enough for a loaded machine; conditions are usually met within a reload interval (1 s here).
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn follower_prefetches_a_new_live_segment_before_any_viewer_asks() {
    let origin = TestOrigin::start().await;
    for s in 0..=4 {
        origin.set(
            &format!("/live/{s}.ts"),
            Reply::ok(pattern(10_000, s as u8)),
        );
    }
    origin.set("/live/index.m3u8", Reply::ok(playlist(0, 2)));
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    // Longer than any wait below: only the gateway clock can make the rendition idle in this test.
    config.follower.idle_after = Duration::from_secs(30);
    // Freshness and idleness follow this clock; the follower still waits in real time between
    // reloads (one target duration, 1 s, or half of one).
    let clock = Arc::new(ManualClock::new());
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;
    let key = CacheKey("/live/index.m3u8".into());
    let following = || gw.gateway.edge().follower.is_following(&key);
    let reloads = || origin.count("/live/index.m3u8");

    // One viewer asks for the playlist once (at 0 s): the follower starts and prefetches the live edge.
    assert_eq!(gw.get("/live/index.m3u8").await.status, 200);
    assert!(following());
    assert!(
        wait_until(|| origin.count("/live/2.ts") == 1, WAIT).await,
        "initial prefetch"
    );

    // A new segment appears at the origin; nobody asks for the playlist again. At 1 s the cached
    // playlist is stale (fresh for half a target duration), so the follower reloads it itself.
    origin.set("/live/index.m3u8", Reply::ok(playlist(1, 3)));
    clock.advance(Duration::from_secs(1));
    assert!(
        wait_until(|| origin.count("/live/3.ts") == 1, WAIT).await,
        "prefetch of 3.ts"
    );
    assert!(reloads() >= 2, "the follower reloaded the playlist itself");

    let viewer = gw.get("/live/3.ts").await;
    assert_eq!(
        viewer.header("x-cache"),
        Some("HIT"),
        "the viewer hits a warm cache"
    );
    assert_eq!(origin.count("/live/3.ts"), 1);
    assert!(gw.metric("gateway_prefetches_total").await >= 2.0);

    // Every cached segment carries its SHA-256 digest.
    let cached = gw
        .gateway
        .edge()
        .cache
        .get(&CacheKey("/live/3.ts".into()))
        .await
        .expect("cached");
    let expected: [u8; 32] = Sha256::digest(pattern(10_000, 3)).into();
    assert_eq!(cached.digest, Some(expected));

    // Idle after max(idle_after 30 s, 3 target durations) without a request. At 29 s the rendition
    // is still watched: the follower reloads the expired playlist again.
    let before = reloads();
    clock.advance(Duration::from_secs(28));
    assert!(
        wait_until(|| reloads() > before, WAIT).await,
        "the follower keeps reloading while the rendition is watched"
    );
    assert!(following());

    // At 30 s nobody has asked for it long enough: the follower lets go.
    clock.advance(Duration::from_secs(1));
    assert!(
        wait_until(|| !following(), WAIT).await,
        "the idle rendition is dropped"
    );
    assert_eq!(gw.metric("gateway_followed_renditions").await, 0.0);
    // The playlist is stale again: a follower still running would reload it within one interval.
    let after = reloads();
    clock.advance(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(reloads(), after, "no more reloads once idle");
}

#[tokio::test]
async fn vod_playlists_are_not_followed() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/vod/index.m3u8",
        Reply::ok(format!("{}#EXT-X-ENDLIST\n", playlist(0, 2))),
    );
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    let gw = TestGateway::start(config).await;
    assert_eq!(gw.get("/vod/index.m3u8").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.metric("gateway_followed_renditions").await, 0.0);
    assert_eq!(origin.count("/vod/0.ts"), 0, "no prefetch for VOD");
}

/// A GET over HTTP/1.1 from the local address `from` (any 127/8 address is loopback): another
/// client address than the test's other requests. Returns the status.
async fn get_from(from: std::net::IpAddr, gw: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    let mut stream = socket.connect(gw).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn query_variants_share_one_follower_and_one_client_cannot_take_every_slot() {
    let origin = TestOrigin::start().await;
    origin.set("/live/index.m3u8", Reply::ok(playlist(0, 2)));
    // The test origin matches paths literally; a real one decodes this to the same object.
    origin.set("/%6Cive/index.m3u8", Reply::ok(playlist(0, 2)));
    for i in 0..20 {
        origin.set(&format!("/a{i}/index.m3u8"), Reply::ok(playlist(0, 2)));
    }
    origin.set("/real/index.m3u8", Reply::ok(playlist(0, 2)));
    for s in 0..=2 {
        origin.set(&format!("/real/{s}.ts"), Reply::ok(pattern(1000, s)));
    }
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    config.follower.idle_after = Duration::from_secs(30);
    config.follower.max_renditions = 8;
    config.follower.max_per_client = 4;
    let gw = TestGateway::start(config).await;
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();

    // 300 query variants and another spelling of one live playlist: one follower, of the path.
    for v in 0..300 {
        let path = format!("/live/index.m3u8?v={v}");
        assert_eq!(get_from(attacker, gw.addr, &path).await, 200);
    }
    assert_eq!(
        get_from(attacker, gw.addr, "/%6Cive/index.m3u8?v=x").await,
        200
    );
    assert_eq!(gw.metric("gateway_followed_renditions").await, 1.0);
    let follower = &gw.gateway.edge().follower;
    assert!(follower.is_following(&CacheKey("/live/index.m3u8".into())));
    assert!(
        origin.targets().iter().any(|t| t == "/live/index.m3u8"),
        "the follower asks the origin for the object itself, without a viewer's query"
    );

    // Twenty other live playlists from the same address: it may start four renditions in all.
    for i in 0..20 {
        let path = format!("/a{i}/index.m3u8");
        assert_eq!(
            get_from(attacker, gw.addr, &path).await,
            200,
            "still served"
        );
    }
    assert_eq!(follower.started_by(attacker), 4);
    assert_eq!(gw.metric("gateway_followed_renditions").await, 4.0);
    assert_eq!(
        gw.metric("gateway_follower_refused_total{reason=\"client_limit\"}")
            .await,
        17.0
    );

    // A viewer on another address watches a real rendition: served at once, followed, and its
    // newest segment is prefetched, so the viewer's request for it is a cache hit.
    let started = std::time::Instant::now();
    let playlist_answer = gw.get("/real/index.m3u8").await;
    assert_eq!(playlist_answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(follower.is_following(&CacheKey("/real/index.m3u8".into())));
    assert!(
        wait_until(|| origin.count("/real/2.ts") == 1, WAIT).await,
        "the newest segment is prefetched"
    );
    let segment = gw.get("/real/2.ts").await;
    assert_eq!(segment.status, 200);
    assert_eq!(segment.header("x-cache"), Some("HIT"));
    assert_eq!(gw.metric("gateway_followed_renditions").await, 5.0);
}

#[tokio::test]
async fn a_playlist_the_origin_refuses_to_the_follower_is_let_go() {
    let origin = TestOrigin::start().await;
    origin.set("/tok/index.m3u8", Reply::ok(playlist(0, 2)));
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    config.follower.idle_after = Duration::from_secs(30);
    let gw = TestGateway::start(config).await;
    let key = CacheKey("/tok/index.m3u8".into());
    let follower = &gw.gateway.edge().follower;
    assert_eq!(gw.get("/tok/index.m3u8?token=abc").await.status, 200);
    assert!(follower.is_following(&key));
    // From now on the origin wants what only viewers have (here: it refuses everyone). The
    // follower's next reload is a 403: it lets go instead of asking twice a second.
    origin.set("/tok/index.m3u8", Reply::status(403));
    assert!(
        wait_until(|| !follower.is_following(&key), WAIT).await,
        "the refused rendition is dropped"
    );
    assert_eq!(gw.metric("gateway_followed_renditions").await, 0.0);
    // A viewer asking again does not start it again while the refusal lasts: beyond the viewer's
    // own fetch, nobody asks the origin for it (a follower would, every half second).
    let asked = origin.count("/tok/index.m3u8");
    let _ = gw.get("/tok/index.m3u8?token=abc").await;
    assert!(!follower.is_following(&key));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        origin.count("/tok/index.m3u8") <= asked + 1,
        "nobody reloads it"
    );
}
