//! The live playlist follower prefetches new segments before any viewer asks, and lets go of idle
//! renditions.

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
