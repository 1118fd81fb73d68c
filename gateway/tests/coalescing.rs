//! One origin fetch per object however many viewers ask at once; failed fetches are never cached.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use support::{pattern, test_config, Reply, TestGateway, TestOrigin};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_cold_requests_cause_one_origin_fetch() {
    let origin = TestOrigin::start().await;
    let body = pattern(1 << 20, 7);
    // Slow enough that every request arrives while the fetch is in flight, even on a loaded machine;
    // timeouts generous enough that the one fetch is never retried.
    origin.set(
        "/live/seg_1.ts",
        Reply::Slow {
            delay: Duration::from_millis(1500),
            body: body.clone(),
        },
    );
    let mut config = test_config(&origin);
    config.origin.first_byte_timeout = Duration::from_secs(20);
    config.origin.total_timeout = Duration::from_secs(30);
    let gw = TestGateway::start(config).await;

    let client = support::client();
    let url = gw.url("/live/seg_1.ts");
    let responses = join_all((0..500).map(|_| support::request(&client, "GET", &url, &[]))).await;

    assert_eq!(
        origin.count("/live/seg_1.ts"),
        1,
        "exactly one origin request"
    );
    assert_eq!(responses.len(), 500);
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body, "every viewer gets the whole, identical body");
        assert_eq!(r.header("content-type"), Some("video/mp2t"));
    }
    let misses = gw
        .metric("gateway_cache_results_total{class=\"segment\",result=\"miss\"}")
        .await;
    let coalesced = gw
        .metric("gateway_cache_results_total{class=\"segment\",result=\"coalesced\"}")
        .await;
    let hits = gw
        .metric("gateway_cache_results_total{class=\"segment\",result=\"hit\"}")
        .await;
    assert_eq!(misses, 1.0);
    // A request the client opened after the fetch had ended is a hit: still no second fetch.
    assert_eq!(misses + coalesced + hits, 500.0);
    assert!(
        coalesced >= 400.0,
        "most requests waited on the one fetch: {coalesced}"
    );
    // Later requests are hits and still cost the origin nothing.
    let again = gw.get("/live/seg_1.ts").await;
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(origin.count("/live/seg_1.ts"), 1);
}

#[tokio::test]
async fn a_viewer_leaving_does_not_cancel_or_restart_the_fetch() {
    let origin = TestOrigin::start().await;
    let body = pattern(64 * 1024, 3);
    origin.set(
        "/v/seg.ts",
        Reply::Slow {
            delay: Duration::from_millis(400),
            body: body.clone(),
        },
    );
    let gw = TestGateway::start(test_config(&origin)).await;

    let url = gw.url("/v/seg.ts");
    let impatient = tokio::spawn(async move { support::get(&url, &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    impatient.abort();
    let patient = gw.get("/v/seg.ts").await;
    assert_eq!(patient.status, 200);
    assert_eq!(patient.body, body);
    assert_eq!(origin.count("/v/seg.ts"), 1);
}

#[tokio::test]
async fn truncated_body_is_never_cached_and_is_refetched() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/v/cut.ts",
        Reply::Truncated {
            declared: 10_000,
            body: pattern(4_000, 1),
        },
    );
    let gw = TestGateway::start(test_config(&origin)).await;

    // The answer streams as the origin sends it: the cut is an error, never a short body.
    let (status, body) = support::get_outcome(&gw.url("/v/cut.ts")).await;
    assert_eq!(status, 200);
    assert!(
        body.is_err(),
        "a truncated fetch is an aborted answer: {body:?}"
    );
    // One retry is configured: the fetch tried again (unseen) to fill the cache; also truncated.
    let settled = support::wait_until_async(
        || async { gw.metric("gateway_origin_in_flight").await == 0.0 },
        Duration::from_secs(3),
    )
    .await;
    assert!(settled, "the fetch ended");
    assert_eq!(origin.count("/v/cut.ts"), 2);

    let good = pattern(10_000, 1);
    origin.set("/v/cut.ts", Reply::ok(good.clone()));
    let second = gw.get("/v/cut.ts").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, good);
    assert_eq!(origin.count("/v/cut.ts"), 3, "the next request refetched");
    let truncated = gw
        .metric("gateway_origin_requests_total{class=\"segment\",outcome=\"truncated\"}")
        .await;
    assert_eq!(truncated, 1.0);
}

#[tokio::test]
async fn broken_chunked_body_is_an_aborted_answer_not_a_short_object() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/v/chunk.ts",
        Reply::BrokenChunked {
            body: pattern(8_000, 2),
        },
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    let (status, body) = support::get_outcome(&gw.url("/v/chunk.ts")).await;
    assert_eq!(status, 200, "streamed from the first bytes");
    assert!(body.is_err(), "and aborted, not a short object: {body:?}");
    origin.set("/v/chunk.ts", Reply::ok(pattern(8_000, 2)));
    let r = gw.get("/v/chunk.ts").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 8_000);
}

#[tokio::test]
async fn origin_timeout_is_a_504_for_every_waiter() {
    let origin = TestOrigin::start().await;
    origin.set("/v/hang.ts", Reply::Hang);
    let mut config = test_config(&origin);
    config.origin.first_byte_timeout = Duration::from_millis(300);
    config.origin.retries = 0;
    let gw = TestGateway::start(config).await;
    let url = gw.url("/v/hang.ts");
    let rs = join_all((0..20).map(|_| support::get(&url, &[]))).await;
    assert!(
        rs.iter().all(|r| r.status == 504),
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(origin.count("/v/hang.ts"), 1);
}

#[tokio::test]
async fn origin_errors_are_cached_for_at_most_a_second() {
    let origin = TestOrigin::start().await;
    origin.set("/v/index.m3u8", Reply::status(404));
    let gw = TestGateway::start(test_config(&origin)).await;
    assert_eq!(gw.get("/v/index.m3u8").await.status, 404);
    assert_eq!(gw.get("/v/index.m3u8").await.status, 404);
    assert_eq!(
        origin.count("/v/index.m3u8"),
        1,
        "the 404 was cached briefly"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.set(
        "/v/index.m3u8",
        Reply::ok("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n"),
    );
    let r = gw.get("/v/index.m3u8").await;
    assert_eq!(r.status, 200, "after a second the error is forgotten");
    assert_eq!(origin.count("/v/index.m3u8"), 2);
}

#[tokio::test]
async fn failover_to_the_second_origin() {
    let broken = TestOrigin::start().await;
    broken.set("/v/a.ts", Reply::status(503));
    let healthy = TestOrigin::start().await;
    healthy.set("/v/a.ts", Reply::ok(pattern(1000, 9)));
    let mut config = test_config(&broken);
    config.origins = vec![broken.base(), healthy.base()];
    let gw = TestGateway::start(config).await;
    let r = gw.get("/v/a.ts").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(1000, 9));
    assert_eq!(broken.count("/v/a.ts"), 1);
    assert_eq!(healthy.count("/v/a.ts"), 1);
}
