//! Freshness by class, stale-while-revalidate and stale-if-error, driven by an explicit clock.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use gateway::ManualClock;
use support::{test_config, wait_until, Reply, TestGateway, TestOrigin};

fn live_playlist(first: u64) -> String {
    let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for s in first..first + 3 {
        text.push_str(&format!("#EXTINF:4.0,\n{s}.ts\n"));
    }
    text
}

async fn start(origin: &TestOrigin) -> (TestGateway, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let mut config = test_config(origin);
    // Keep the breaker out of these tests: they count origin requests exactly.
    config.origin.breaker_failures = 1000;
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;
    (gw, clock)
}

/// Waits (in real time) until the origin has seen `n` requests for `path`.
async fn origin_reaches(origin: &TestOrigin, path: &str, n: usize) {
    assert!(
        wait_until(|| origin.count(path) >= n, Duration::from_secs(2)).await,
        "origin saw {} requests for {path}, expected {n}",
        origin.count(path)
    );
}

/// Waits until the background refresh of `path` has ended (its in-flight entry is gone).
async fn refreshes_settle(gw: &TestGateway) {
    assert!(
        wait_until(
            || gw.gateway.edge().fetches_in_flight() == 0,
            Duration::from_secs(2)
        )
        .await,
        "a background refresh never finished"
    );
}

#[tokio::test]
async fn live_playlist_is_stale_if_error_for_one_target_duration_then_503() {
    let origin = TestOrigin::start().await;
    let path = "/live/index.m3u8";
    origin.set(path, Reply::ok(live_playlist(10)));
    let clock = Arc::new(ManualClock::new());
    let mut config = test_config(&origin);
    config.origin.breaker_failures = 1000;
    // No outage allowance past the stale bound (`live_failures.rs` tests the default).
    config.cache.live_outage_max = Duration::ZERO;
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;

    let first = gw.get(path).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));

    origin.set(path, Reply::status(500));
    clock.advance(Duration::from_millis(1900));
    let fresh = gw.get(path).await;
    assert_eq!(
        fresh.header("x-cache"),
        Some("HIT"),
        "fresh for half a target duration"
    );
    assert_eq!(origin.count(path), 1);

    // Past freshness (2 s): served stale while one background refresh fails (1 try + 1 retry).
    clock.advance(Duration::from_millis(200));
    let stale = gw.get(path).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(stale.body, first.body);
    origin_reaches(&origin, path, 3).await;
    refreshes_settle(&gw).await;

    // The failed refresh did not replace the good playlist: still served, up to one target duration
    // (4 s) past freshness.
    clock.advance(Duration::from_millis(3800)); // age 5.9 s
    let still = gw.get(path).await;
    assert_eq!(still.status, 200, "stale-if-error inside the bound");
    assert_eq!(still.body, first.body);
    refreshes_settle(&gw).await;

    clock.advance(Duration::from_millis(100)); // age 6.0 s: the bound
    let expired = gw.get(path).await;
    assert_eq!(
        expired.status, 503,
        "never older than one target duration past freshness"
    );
    assert_eq!(expired.header("retry-after"), Some("4"));
    let again = gw.get(path).await;
    assert_eq!(
        again.status, 503,
        "the origin's 500 does not replace the 503 decision"
    );

    origin.set(path, Reply::ok(live_playlist(11)));
    let recovered = gw.get(path).await;
    assert_eq!(recovered.status, 200);
    assert_eq!(recovered.text(), live_playlist(11));
}

#[tokio::test]
async fn stale_playlist_is_refreshed_once_in_the_background() {
    let origin = TestOrigin::start().await;
    let path = "/live/index.m3u8";
    origin.set(path, Reply::ok(live_playlist(10)));
    let (gw, clock) = start(&origin).await;
    assert_eq!(gw.get(path).await.status, 200);

    origin.set(
        path,
        Reply::Slow {
            delay: Duration::from_millis(300),
            body: live_playlist(11).into(),
        },
    );
    clock.advance(Duration::from_millis(2500));
    let url = gw.url(path);
    let answers = join_all((0..20).map(|_| support::get(&url, &[]))).await;
    for a in &answers {
        assert_eq!(
            a.header("x-cache"),
            Some("STALE"),
            "answered at once from the stale copy"
        );
        assert_eq!(a.text(), live_playlist(10));
    }
    origin_reaches(&origin, path, 2).await;
    refreshes_settle(&gw).await;
    assert_eq!(
        origin.count(path),
        2,
        "one coalesced background refresh for 20 stale hits"
    );

    let refreshed = gw.get(path).await;
    assert_eq!(refreshed.header("x-cache"), Some("HIT"));
    assert_eq!(refreshed.text(), live_playlist(11));
}

#[tokio::test]
async fn each_class_keeps_its_own_freshness() {
    let origin = TestOrigin::start().await;
    let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nv/index.m3u8\n";
    let vod = "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\nseg_0.ts\n#EXT-X-ENDLIST\n";
    origin.set("/s/master.m3u8", Reply::ok(master));
    origin.set("/s/live.m3u8", Reply::ok(live_playlist(1)));
    origin.set("/s/v/index.m3u8", Reply::ok(vod));
    origin.set("/s/v/seg_0.ts", Reply::ok(support::pattern(5000, 1)));
    origin.set("/s/missing.m3u8", Reply::status(404));
    let (gw, clock) = start(&origin).await;

    for path in [
        "/s/master.m3u8",
        "/s/live.m3u8",
        "/s/v/index.m3u8",
        "/s/v/seg_0.ts",
        "/s/missing.m3u8",
    ] {
        let r = gw.get(path).await;
        assert_eq!(r.header("x-cache"), Some("MISS"), "{path}");
    }
    let cache_state = |path: &'static str| {
        let gw = &gw;
        async move { gw.get(path).await.header("x-cache").map(str::to_owned) }
    };

    // 0.9 s: everything fresh, the 404 too.
    clock.advance(Duration::from_millis(900));
    assert_eq!(cache_state("/s/missing.m3u8").await.as_deref(), Some("HIT"));
    // 1.0 s: origin errors are cached for at most a second.
    clock.advance(Duration::from_millis(100));
    assert_eq!(
        cache_state("/s/missing.m3u8").await.as_deref(),
        Some("MISS")
    );
    assert_eq!(origin.count("/s/missing.m3u8"), 2);

    // 2.0 s: live media (half of target 4 s) and multivariant (2 s) turn stale; VOD and segments not.
    clock.advance(Duration::from_millis(1000));
    assert_eq!(cache_state("/s/live.m3u8").await.as_deref(), Some("STALE"));
    assert_eq!(
        cache_state("/s/master.m3u8").await.as_deref(),
        Some("STALE")
    );
    assert_eq!(cache_state("/s/v/index.m3u8").await.as_deref(), Some("HIT"));
    assert_eq!(cache_state("/s/v/seg_0.ts").await.as_deref(), Some("HIT"));
    refreshes_settle(&gw).await;

    // A day later the VOD playlist and the segment are still served (stale), never a miss.
    clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(cache_state("/s/v/seg_0.ts").await.as_deref(), Some("STALE"));
    refreshes_settle(&gw).await;
    assert_eq!(
        origin.count("/s/v/seg_0.ts"),
        2,
        "refreshed once in the background"
    );
}

#[tokio::test]
async fn origin_cache_control_shortens_and_config_overrides() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/a/seg.ts",
        Reply::with_headers(support::pattern(100, 1), &[("Cache-Control", "max-age=5")]),
    );
    origin.set(
        "/a/private.ts",
        Reply::with_headers(support::pattern(100, 2), &[("Cache-Control", "private")]),
    );
    origin.set("/a/index.m3u8", Reply::ok(live_playlist(1)));
    let clock = Arc::new(ManualClock::new());
    let mut config = test_config(&origin);
    config.cache.ttl_live_media = Some(Duration::from_millis(500));
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;

    for path in ["/a/seg.ts", "/a/private.ts", "/a/index.m3u8"] {
        assert_eq!(gw.get(path).await.status, 200);
    }
    assert_eq!(
        gw.get("/a/private.ts").await.header("x-cache"),
        Some("MISS"),
        "private is never stored"
    );
    assert_eq!(origin.count("/a/private.ts"), 2);

    clock.advance(Duration::from_millis(600));
    assert_eq!(
        gw.get("/a/index.m3u8").await.header("x-cache"),
        Some("STALE"),
        "config: 500 ms"
    );
    assert_eq!(gw.get("/a/seg.ts").await.header("x-cache"), Some("HIT"));
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        gw.get("/a/seg.ts").await.header("x-cache"),
        Some("STALE"),
        "origin max-age=5"
    );
}
