//! The live playlist follower prefetches new segments before any viewer asks, and lets go of idle
//! renditions.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::{pattern, test_config, Reply, TestGateway, TestOrigin};

fn playlist(first: u64, last: u64) -> String {
    let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for s in first..=last {
        text.push_str(&format!("#EXTINF:1.0,\n{s}.ts\n"));
    }
    text
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

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
    config.follower.idle_after = Duration::from_secs(2);
    let gw = TestGateway::start(config).await;

    // One viewer asks for the playlist once: the follower starts and prefetches the live edge.
    assert_eq!(gw.get("/live/index.m3u8").await.status, 200);
    wait_for("initial prefetch", || origin.count("/live/2.ts") == 1).await;

    // A new segment appears at the origin; nobody asks for the playlist again.
    origin.set("/live/index.m3u8", Reply::ok(playlist(1, 3)));
    wait_for("prefetch of 3.ts", || origin.count("/live/3.ts") == 1).await;
    assert!(
        origin.count("/live/index.m3u8") >= 2,
        "the follower reloaded the playlist itself"
    );

    let viewer = gw.get("/live/3.ts").await;
    assert_eq!(
        viewer.header("x-cache"),
        Some("HIT"),
        "the viewer hits a warm cache"
    );
    assert_eq!(origin.count("/live/3.ts"), 1);
    assert!(gw.metric("gateway_prefetches_total").await >= 2.0);

    // Every cached segment carries its SHA-256 digest.
    let key = gateway::cache::CacheKey("/live/3.ts".into());
    let cached = gw.gateway.edge().cache.get(&key).await.expect("cached");
    let expected: [u8; 32] = Sha256::digest(pattern(10_000, 3)).into();
    assert_eq!(cached.digest, Some(expected));

    // Nobody watches any more: the follower lets go after idle_after.
    let before = origin.count("/live/index.m3u8");
    // Idle after max(idle_after 2 s, 3 target durations = 3 s), noticed within one reload interval.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    assert_eq!(gw.metric("gateway_followed_renditions").await, 0.0);
    let after = origin.count("/live/index.m3u8");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        origin.count("/live/index.m3u8"),
        after,
        "no more reloads once idle"
    );
    assert!(after >= before);
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
