//! Live failures viewers survive (issue 12, item 6): the origin going away, an encoder restarted
//! from scratch under the same names, and an origin that marks its playlists `no-cache`.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use gateway::ManualClock;
use sha2::Digest as _;
use support::{pattern, test_config, wait_until_async, Reply, TestGateway, TestOrigin};

/// A live playlist from `first`: three segments named `{prefix}{n}.m4s`, target `target` s.
fn live(first: u64, target: u64, map: Option<&str>) -> String {
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    if let Some(map) = map {
        text.push_str(&format!("#EXT-X-MAP:URI=\"{map}\"\n"));
    }
    for s in first..first + 3 {
        text.push_str(&format!("#EXTINF:{target}.0,\ns{s}.m4s\n"));
    }
    text
}

#[tokio::test]
async fn origin_down_the_last_live_playlist_is_served_with_a_header_until_it_returns() {
    let origin = TestOrigin::start().await;
    let path = "/live/index.m3u8";
    let before = live(10, 1, None);
    origin.set(path, Reply::ok(before.clone()));
    origin.set("/vod/seg.ts", Reply::ok(pattern(5000, 3)));
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    let gw = TestGateway::start(config).await;

    let first = gw.get(path).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), before);
    assert_eq!(first.header("x-origin-unreachable"), None);
    assert_eq!(gw.get("/vod/seg.ts").await.status, 200);

    // Down: first it closes every connection unanswered, then it answers 503.
    origin.set_down(true);
    let outage = Instant::now();
    let mut answers = Vec::new();
    let mut switched = false;
    while outage.elapsed() < Duration::from_secs(4) {
        if !switched && outage.elapsed() >= Duration::from_secs(2) {
            origin.set(path, Reply::status(503));
            origin.set_down(false);
            switched = true;
        }
        let asked = Instant::now();
        let r = gw.get(path).await;
        let took = asked.elapsed();
        assert_eq!(r.status, 200, "at {:?} into the outage", outage.elapsed());
        assert_eq!(r.text(), before, "the last playlist");
        assert!(
            took < Duration::from_millis(1500),
            "answered within a target duration and a half, took {took:?}"
        );
        answers.push((
            asked.duration_since(outage),
            r.header("x-origin-unreachable").map(str::to_owned),
            r.header("x-cache").map(str::to_owned),
        ));
        // Another viewer of a cached object is not held up by the outage.
        let asked = Instant::now();
        let other = gw.get("/vod/seg.ts").await;
        assert_eq!(other.status, 200);
        assert!(asked.elapsed() < Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Fresh for half a target duration, stale for one: from then on the origin has failed and
    // every answer says so.
    let marked: Vec<_> = answers.iter().filter(|(_, h, _)| h.is_some()).collect();
    eprintln!(
        "outage: {} answers, {} marked, {} origin requests",
        answers.len(),
        marked.len(),
        origin.count(path)
    );
    for (at, header, x_cache) in &answers {
        if *at >= Duration::from_millis(1500) {
            assert_eq!(header.as_deref(), Some("1"), "at {at:?}: {answers:?}");
            assert_eq!(x_cache.as_deref(), Some("STALE"), "at {at:?}");
        }
    }
    assert!(marked.len() >= 8, "{answers:?}");
    assert_eq!(
        gw.metric("gateway_live_outage_answers_total").await,
        marked.len() as f64,
        "the metric counts every answer given from the last copy"
    );

    // Back: the new playlist is served within two target durations.
    let after = live(11, 1, None);
    origin.set(path, Reply::ok(after.clone()));
    let back = Instant::now();
    let served = wait_until_async(
        || {
            let gw = &gw;
            let after = after.clone();
            async move {
                let r = gw.get(path).await;
                r.status == 200 && r.text() == after && r.header("x-origin-unreachable").is_none()
            }
        },
        Duration::from_secs(2),
    )
    .await;
    assert!(served, "the new playlist was not served within 2 s");
    eprintln!(
        "outage: new playlist served {:?} after the origin returned",
        back.elapsed()
    );
    assert!(back.elapsed() <= Duration::from_secs(2));
}

#[tokio::test]
async fn past_the_outage_bound_a_live_playlist_is_503_with_retry_after() {
    let origin = TestOrigin::start().await;
    let path = "/live/index.m3u8";
    origin.set(path, Reply::ok(live(10, 4, None)));
    let clock = Arc::new(ManualClock::new());
    let mut config = test_config(&origin);
    config.cache.live_outage_max = Duration::from_secs(20);
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;
    assert_eq!(gw.get(path).await.status, 200);
    origin.set(path, Reply::status(500));

    // Fresh 2 s + stale 4 s + the outage bound 20 s: served until 26 s, 503 from then.
    clock.advance(Duration::from_millis(25_900));
    let last = gw.get(path).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("x-origin-unreachable"), Some("1"));
    clock.advance(Duration::from_millis(100));
    let gone = gw.get(path).await;
    assert_eq!(gone.status, 503);
    assert_eq!(gone.header("retry-after"), Some("4"));
}

/// The digests the gateway publishes for `/live/index.m3u8`: id → sha256 hex.
async fn digests(gw: &TestGateway) -> Vec<(String, String)> {
    let r = gw.get("/p2p/v1/digests/live/index.m3u8/0").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let json: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sha(body: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(body))
}

#[tokio::test]
async fn an_encoder_restarted_under_the_same_names_never_gets_the_old_bytes_served() {
    let origin = TestOrigin::start().await;
    let path = "/live/index.m3u8";
    let clock = Arc::new(ManualClock::new());
    let gw = TestGateway::start_with_clock(test_config(&origin), clock.clone()).await;
    let old_init = pattern(300, 9);
    let old = |s: u64| pattern(1000 + s as usize, s as u8);
    let new_init = pattern(320, 99);
    let new = |s: u64| pattern(2000 + s as usize, 100 + s as u8);

    // The first run: 0..2, then (much later) 100..102; viewers fetched everything.
    origin.set("/live/init.mp4", Reply::ok(old_init.clone()));
    for s in (0..3).chain(100..103) {
        origin.set(&format!("/live/s{s}.m4s"), Reply::ok(old(s)));
    }
    origin.set(path, Reply::ok(live(0, 2, Some("init.mp4"))));
    assert_eq!(gw.get(path).await.status, 200);
    for s in 0..3 {
        assert_eq!(gw.get(&format!("/live/s{s}.m4s")).await.body, old(s));
    }
    assert_eq!(gw.get("/live/init.mp4").await.body, old_init);
    origin.set(path, Reply::ok(live(100, 2, Some("init.mp4"))));
    clock.advance(Duration::from_secs(10));
    assert_eq!(gw.get(path).await.text(), live(100, 2, Some("init.mp4")));
    for s in 100..103 {
        assert_eq!(gw.get(&format!("/live/s{s}.m4s")).await.body, old(s));
    }
    assert_eq!(gw.metric("gateway_live_restarts_total").await, 0.0);

    // The encoder restarts from scratch: 0..2 again, new bytes, a new init section, same names.
    origin.set("/live/init.mp4", Reply::ok(new_init.clone()));
    for s in 0..3 {
        origin.set(&format!("/live/s{s}.m4s"), Reply::ok(new(s)));
    }
    origin.set(path, Reply::ok(live(0, 2, Some("init.mp4"))));
    clock.advance(Duration::from_secs(10));
    assert_eq!(gw.get(path).await.text(), live(0, 2, Some("init.mp4")));

    for s in 0..3 {
        let r = gw.get(&format!("/live/s{s}.m4s")).await;
        assert_eq!(r.status, 200);
        assert!(r.body == new(s), "s{s}.m4s: the previous run's bytes");
        assert_eq!(origin.count(&format!("/live/s{s}.m4s")), 2);
    }
    let init = gw.get("/live/init.mp4").await;
    assert!(init.body == new_init, "the previous run's init section");
    assert_eq!(gw.metric("gateway_live_restarts_total").await, 1.0);
    // What the old window named is gone too: the new run will reach those names.
    assert_eq!(
        gw.get("/live/s100.m4s").await.header("x-cache"),
        Some("MISS")
    );
    assert!(gw.metric("gateway_restart_invalidated_total").await >= 7.0);

    // Peers are told the new digests only.
    let published = digests(&gw).await;
    let mut expected: Vec<(String, String)> = (0..3)
        .map(|s| (format!("/live/s{s}.m4s"), sha(&new(s))))
        .collect();
    expected.push(("/live/init.mp4".into(), sha(&new_init)));
    for entry in &expected {
        assert!(published.contains(entry), "{entry:?} not in {published:?}");
    }
    let stale: Vec<String> = (0..3)
        .map(|s| sha(&old(s)))
        .chain([sha(&old_init)])
        .collect();
    assert!(
        published.iter().all(|(_, d)| !stale.contains(d)),
        "an old digest is published: {published:?}"
    );
}

#[tokio::test]
async fn a_no_cache_playlist_is_revalidated_conditionally_once_at_a_time() {
    let origin = TestOrigin::start().await;
    let path = "/live/index.m3u8";
    let body = live(10, 2, None);
    origin.set(
        path,
        Reply::Validated {
            body: body.clone().into(),
            etag: "\"v1\"".into(),
            cache_control: "no-cache".into(),
        },
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    let url = gw.url(path);

    // 20 viewers reloading every 100 ms for 3 s, spread over the interval as real players are
    // (in step, they would share one fetch each time): about 600 requests.
    let started = Instant::now();
    let viewers = (0..20u64).map(|i| {
        let url = url.clone();
        let body = body.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(i * 5)).await;
            let mut served = 0;
            while started.elapsed() < Duration::from_secs(3) {
                let r = support::get(&url, &[]).await;
                assert_eq!(r.status, 200);
                assert_eq!(r.text(), body, "the full playlist");
                served += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            served
        }
    });
    let served: usize = join_all(viewers).await.into_iter().sum();
    assert!(served >= 400, "{served} answers");
    // At most one revalidation per 500 ms (cache.revalidate_interval), whatever the viewers.
    let asked = origin.count(path);
    eprintln!(
        "no-cache: {served} answers, {asked} origin requests, {} conditional, {} answered 304",
        origin.conditional(),
        origin.not_modified()
    );
    assert!(
        asked <= 3000 / 500 + 3,
        "{asked} origin requests for {served} answers"
    );
    assert!(
        origin.conditional() >= 3,
        "{} conditional",
        origin.conditional()
    );
    assert_eq!(origin.conditional(), asked - 1, "every one after the first");
    assert_eq!(origin.not_modified(), asked - 1);
    assert_eq!(
        gw.metric("gateway_revalidations_total{result=\"not_modified\"}")
            .await,
        (asked - 1) as f64
    );

    // A new version replaces it at the next revalidation.
    let newer = live(11, 2, None);
    origin.set(
        path,
        Reply::Validated {
            body: newer.clone().into(),
            etag: "\"v2\"".into(),
            cache_control: "no-cache".into(),
        },
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = gw.get(path).await;
    assert_eq!(r.text(), newer);
}
