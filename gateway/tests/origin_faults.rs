//! What one misbehaving origin answer, or one client steering the origin, must not do to everyone:
//! poison a URL, open the circuit breaker, get an empty or short segment cached, share one viewer's
//! 403 with others, hold viewers past one deadline, open unbounded origin connections or buffer
//! unbounded bodies, or pass an origin's internal `Location` on. Each test runs the attack against
//! a real origin on loopback while a well-behaved client is served.
#![allow(clippy::unwrap_used)]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use gateway::origin::breaker::BreakerState;
use support::{pattern, test_config, wait_until, Reply, TestGateway, TestOrigin};

/// The slowest answer a well-behaved client may get while an attack runs.
const GOOD_LATENCY: Duration = Duration::from_millis(1500);

/// Runs `attack` while a well-behaved client asks for `good` (a path the origin serves with
/// `expected`, a new cache-busting query each time so the origin is asked too) on its own
/// connections; every good answer must be a 200 with the right body, within [`GOOD_LATENCY`].
/// Returns the attack's output.
async fn while_served<T>(
    gw: &TestGateway,
    good: &str,
    expected: Bytes,
    attack: impl Future<Output = T>,
) -> T {
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::clone(&done);
    let url = gw.url(good);
    let client = tokio::spawn(async move {
        let mut served = 0usize;
        let mut i = 0usize;
        while stop.load(Ordering::SeqCst) == 0 || served == 0 {
            i += 1;
            let started = Instant::now();
            let r = support::get(&format!("{url}?good={i}"), &[]).await;
            let took = started.elapsed();
            assert_eq!(r.status, 200, "the good client was refused ({i})");
            assert_eq!(r.body, expected, "the good client got another body");
            assert!(took < GOOD_LATENCY, "the good client waited {took:?}");
            served += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served
    });
    let out = attack.await;
    done.store(1, Ordering::SeqCst);
    let served = client.await.unwrap();
    assert!(served >= 1);
    out
}

fn live_playlist(target: &str, first: u64, count: u64, prefix: &str) -> String {
    let mut p = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    for s in first..first + count {
        p.push_str(&format!("#EXTINF:1.0,\n{prefix}{s}.ts\n"));
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Item 1: a value that overflowed `Duration` arithmetic and panicked the fetch task.

#[tokio::test]
async fn a_hostile_target_duration_never_poisons_the_url() {
    let origin = TestOrigin::start().await;
    let playlist = live_playlist("18446744073709551615", 0, 3, "");
    origin.set("/p/index.m3u8", Reply::ok(playlist.clone()));
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    let gw = TestGateway::start(config).await;

    while_served(&gw, "/good.ts", pattern(100, 1), async {
        for _ in 0..3 {
            let r = gw.get("/p/index.m3u8").await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.text(), playlist);
        }
    })
    .await;
    assert!(
        origin.count("/p/index.m3u8") >= 1,
        "the origin was asked for the playlist"
    );
    let fetches = gw.metric("gateway_origin_in_flight").await;
    assert!(fetches <= 1.0, "{fetches} fetches left in flight");
}

// ---------------------------------------------------------------------------------------------
// Item 5: the breaker.

#[tokio::test]
async fn clients_cannot_open_the_circuit_breaker() {
    let origin = TestOrigin::start().await;
    origin.set("/bad.ts", Reply::status(500));
    origin.set("/big.ts", Reply::ok(pattern(8 * 1024, 2)));
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    let mut config = test_config(&origin);
    config.origin.max_body_bytes = 4 * 1024;
    let gw = TestGateway::start(config).await;

    while_served(&gw, "/good.ts", pattern(100, 1), async {
        for i in 0..20 {
            let r = gw.get(&format!("/bad.ts?bust={i}")).await;
            assert_eq!(r.status, 500, "one path's 5xx is passed on");
            let r = gw.get(&format!("/big.ts?bust={i}")).await;
            assert_eq!(r.status, 502, "a body over our limit");
            let r = gw.get(&format!("/missing{i}.ts")).await;
            assert_eq!(r.status, 404);
        }
    })
    .await;
    assert!(
        origin.count("/bad.ts") >= 20,
        "the origin was asked each time"
    );
    assert_eq!(
        gw.gateway.edge().origin.breaker_state(0),
        Some(BreakerState::Closed)
    );
    assert_eq!(gw.get("/good.ts?after=1").await.status, 200);

    // The breaker still works: on a fresh gateway, failures of many paths open it.
    let gw = TestGateway::start(test_config(&origin)).await;
    for path in ["/e1.ts", "/e2.ts", "/e3.ts"] {
        origin.set(path, Reply::status(503));
    }
    for path in ["/e1.ts", "/e2.ts", "/e3.ts"] {
        assert_eq!(gw.get(path).await.status, 503);
    }
    assert_eq!(
        gw.gateway.edge().origin.breaker_state(0),
        Some(BreakerState::Open),
        "5xx of three paths, twice each, open it"
    );
    assert_eq!(gw.get("/good.ts?during=1").await.status, 502);
}

// ---------------------------------------------------------------------------------------------
// Item 12: empty and short media bodies.

#[tokio::test]
async fn an_empty_segment_is_an_origin_error_and_never_cached() {
    let origin = TestOrigin::start().await;
    origin.set("/s/0.ts", Reply::ok(Bytes::new()));
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    let gw = TestGateway::start(test_config(&origin)).await;

    while_served(&gw, "/good.ts", pattern(100, 1), async {
        for _ in 0..3 {
            let r = gw.get("/s/0.ts").await;
            assert_eq!(r.status, 502, "an empty 200 for a segment");
        }
    })
    .await;
    assert!(
        origin.count("/s/0.ts") >= 3,
        "never answered from the cache"
    );
    origin.set("/s/0.ts", Reply::ok(pattern(500, 3)));
    let fixed = gw.get("/s/0.ts").await;
    assert_eq!(fixed.status, 200);
    assert_eq!(fixed.body, pattern(500, 3));
}

#[tokio::test]
async fn a_body_shorter_than_its_byte_range_is_an_origin_error() {
    let origin = TestOrigin::start().await;
    let playlist = "#EXTM3U\n#EXT-X-VERSION:4\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
                    #EXTINF:2,\n#EXT-X-BYTERANGE:1000@0\nall.ts\n\
                    #EXTINF:2,\n#EXT-X-BYTERANGE:1000\nall.ts\n#EXT-X-ENDLIST\n";
    origin.set("/v/index.m3u8", Reply::ok(playlist));
    origin.set("/v/all.ts", Reply::ok(pattern(1500, 4)));
    let gw = TestGateway::start(test_config(&origin)).await;
    assert_eq!(gw.get("/v/index.m3u8").await.status, 200);
    let short = gw.get("/v/all.ts").await;
    assert_eq!(
        short.status, 502,
        "1500 bytes where the ranges need 2000, declared: never streamed"
    );
    origin.set(
        "/v/all.ts",
        Reply::BrokenChunked {
            body: pattern(3000, 4),
        },
    );
    let (status, body) = support::get_outcome(&gw.url("/v/all.ts")).await;
    assert_eq!(status, 200, "undeclared length: streamed");
    assert!(body.is_err(), "and cut, never short: {body:?}");
    origin.set("/v/all.ts", Reply::ok(pattern(2000, 4)));
    let whole = gw.get("/v/all.ts").await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len(), 2000);
}

// ---------------------------------------------------------------------------------------------
// Item 10: 401/403 and credentials.

#[tokio::test]
async fn a_403_for_one_viewer_is_never_served_to_another() {
    let origin = TestOrigin::start().await;
    let body = pattern(300, 5);
    origin.set(
        "/t/seg.ts",
        Reply::Requires {
            needle: "token=good".into(),
            body: body.clone(),
            delay: Duration::ZERO,
        },
    );
    origin.set(
        "/t/slow.ts",
        Reply::Requires {
            needle: "token=good".into(),
            body: body.clone(),
            delay: Duration::from_millis(300),
        },
    );
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    // A playlist names the segment: errors for named segments used to be cached for a second.
    origin.set(
        "/t/index.m3u8",
        Reply::ok("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg.ts\n#EXTINF:2,\nslow.ts\n"),
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    assert_eq!(gw.get("/t/index.m3u8").await.status, 200);

    while_served(&gw, "/good.ts", pattern(100, 1), async {
        let denied = gw.get("/t/seg.ts").await;
        assert_eq!(denied.status, 403);
        let valid = gw.get("/t/seg.ts?token=good").await;
        assert_eq!(valid.status, 200, "not the other viewer's cached 403");
        assert_eq!(valid.body, body);

        // A valid viewer that joins a no-token viewer's fetch is not handed its 403 either.
        let first = gw.get("/t/slow.ts?token=bad");
        let second = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            gw.get("/t/slow.ts?token=good").await
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.status, 403);
        assert_eq!(second.status, 200);
    })
    .await;
}

#[tokio::test]
async fn prefetches_carry_the_configured_origin_credentials() {
    let origin = TestOrigin::start().await;
    let needle = "token=op";
    for s in 0..4u8 {
        origin.set(
            &format!("/c/{s}.ts"),
            Reply::Requires {
                needle: needle.into(),
                body: pattern(200, s),
                delay: Duration::ZERO,
            },
        );
    }
    origin.set(
        "/c/index.m3u8",
        Reply::Requires {
            needle: "x-origin-key: k1".into(),
            body: live_playlist("2", 0, 4, "").into(),
            delay: Duration::ZERO,
        },
    );
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    config.origin.query = needle.into();
    config.origin.headers = vec![("X-Origin-Key".into(), "k1".into())];
    let gw = TestGateway::start(config).await;
    assert_eq!(gw.get("/c/index.m3u8").await.status, 200);
    assert!(
        wait_until(
            || origin.count("/c/3.ts?token=op") == 1,
            Duration::from_secs(5)
        )
        .await,
        "the newest segment was prefetched with the operator's token: {:?}",
        origin.targets()
    );
    let r = gw.get("/c/3.ts").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, pattern(200, 3));
}

// ---------------------------------------------------------------------------------------------
// Item 14: one deadline per request.

#[tokio::test]
async fn a_stalled_body_is_cut_within_one_deadline() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/stall.ts",
        Reply::StallBody {
            body: pattern(10_000, 6),
            sent: 100,
        },
    );
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    let mut config = test_config(&origin);
    config.origin.total_timeout = Duration::from_millis(800);
    config.origin.retries = 3;
    let gw = TestGateway::start(config).await;

    let url = gw.url("/stall.ts");
    let took = while_served(&gw, "/good.ts", pattern(100, 1), async {
        let started = Instant::now();
        // The first 100 bytes went out as they came: the deadline cuts the answer.
        let (status, body) = support::get_outcome(&url).await;
        assert_eq!(status, 200);
        assert!(body.is_err(), "cut at the deadline: {body:?}");
        started.elapsed()
    })
    .await;
    assert!(
        took >= Duration::from_millis(700),
        "not before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "four attempts of 800 ms each would take 3.2 s; took {took:?}"
    );
}

#[tokio::test]
async fn a_live_segment_gives_up_after_a_few_target_durations() {
    let origin = TestOrigin::start().await;
    origin.set("/l/index.m3u8", Reply::ok(live_playlist("1", 0, 3, "")));
    origin.set(
        "/l/2.ts",
        Reply::StallBody {
            body: pattern(10_000, 6),
            sent: 100,
        },
    );
    let mut config = test_config(&origin);
    config.origin.first_byte_timeout = Duration::from_secs(10);
    config.origin.total_timeout = Duration::from_secs(10);
    let gw = TestGateway::start(config).await;
    assert_eq!(gw.get("/l/index.m3u8").await.status, 200);
    let started = Instant::now();
    let (status, body) = support::get_outcome(&gw.url("/l/2.ts")).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "streamed from the first bytes");
    assert!(body.is_err(), "cut at the live deadline: {body:?}");
    assert!(
        took >= Duration::from_millis(2800) && took < Duration::from_millis(4500),
        "three target durations of 1 s, not the 10 s timeout: {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 11: bounded origin connections and prefetch.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connections_are_bounded() {
    let origin = TestOrigin::start().await;
    for i in 0..24u8 {
        origin.set(
            &format!("/slow/{i}.ts"),
            Reply::Slow {
                delay: Duration::from_millis(150),
                body: pattern(100, i),
            },
        );
    }
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    let mut config = test_config(&origin);
    config.origin.max_connections = 4;
    let gw = TestGateway::start(config).await;

    let answers = while_served(&gw, "/good.ts", pattern(100, 1), async {
        let urls: Vec<String> = (0..24).map(|i| format!("/slow/{i}.ts")).collect();
        join_all(urls.iter().map(|u| gw.get(u))).await
    })
    .await;
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(r.status, 200, "/slow/{i}.ts");
        assert_eq!(r.body, pattern(100, i as u8));
    }
    let peak = origin.peak_connections();
    assert!(peak <= 4, "the origin saw {peak} connections at once");
    assert!(peak >= 2, "requests did run concurrently ({peak})");
}

#[tokio::test]
async fn a_live_window_that_jumps_prefetches_only_its_newest_segments() {
    let origin = TestOrigin::start().await;
    origin.set("/j/index.m3u8", Reply::ok(live_playlist("1", 0, 3, "")));
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    config.origin.max_connections = 8;
    let gw = TestGateway::start(config).await;
    assert_eq!(gw.get("/j/index.m3u8").await.status, 200);
    assert!(wait_until(|| origin.count("/j/2.ts") == 1, Duration::from_secs(5)).await);

    // The window jumps by 3,000 segments.
    origin.set("/j/index.m3u8", Reply::ok(live_playlist("1", 10, 3000, "")));
    while_served(&gw, "/good.ts", pattern(100, 1), async {
        assert!(
            wait_until(|| origin.count("/j/3009.ts") == 1, Duration::from_secs(5)).await,
            "the follower reloaded and prefetched the newest segment"
        );
        // Whatever else the follower does for a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let segments: Vec<String> = origin
        .targets()
        .into_iter()
        .filter(|t| t.starts_with("/j/") && t.ends_with(".ts"))
        .collect();
    assert!(
        segments.len() <= 6,
        "three at first sight, three after the jump: {segments:?}"
    );
    for s in ["/j/3007.ts", "/j/3008.ts", "/j/3009.ts"] {
        assert!(segments.iter().any(|t| t == s), "{s} in {segments:?}");
    }
    assert!(origin.peak_connections() <= 8);
}

// ---------------------------------------------------------------------------------------------
// Item 3: the global budget of buffered body bytes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_origin_bodies_are_bounded_globally() {
    let origin = TestOrigin::start().await;
    let large = 400 * 1024;
    for i in 0..6u8 {
        origin.set(
            &format!("/big/{i}.ts"),
            Reply::Dribble {
                body: pattern(large, i),
                pause: Duration::from_millis(400),
            },
        );
    }
    origin.set("/small.ts", Reply::ok(pattern(1000, 9)));
    let mut config = test_config(&origin);
    config.origin.max_buffered_bytes = 1024 * 1024;
    let gw = TestGateway::start(config).await;

    let answers = while_served(&gw, "/small.ts", pattern(1000, 9), async {
        let urls: Vec<String> = (0..6).map(|i| format!("/big/{i}.ts")).collect();
        join_all(urls.iter().map(|u| gw.get(u))).await
    })
    .await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let refused = answers.iter().filter(|r| r.status == 503).count();
    assert_eq!(
        ok + refused,
        6,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 1, "bodies within the budget are served");
    assert!(refused >= 1, "6 × 400 KiB at once do not fit in 1 MiB");
    for (i, r) in answers.iter().enumerate() {
        if r.status == 200 {
            assert_eq!(r.body, pattern(large, i as u8));
        }
    }
    assert_eq!(
        gw.metric("gateway_origin_budget_refused_total").await,
        refused as f64
    );
    assert_eq!(
        gw.metric("gateway_origin_buffered_bytes").await,
        0.0,
        "every counted byte is given back"
    );
    assert_eq!(gw.gateway.edge().origin.buffered_bytes(), 0);
}

// ---------------------------------------------------------------------------------------------
// Item 16: redirects.

#[tokio::test]
async fn an_origin_location_never_reaches_viewers() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/r/away.ts",
        Reply::Full {
            status: 302,
            headers: vec![(
                "Location".into(),
                "http://internal.example:8080/secret.ts".into(),
            )],
            body: Bytes::new(),
        },
    );
    origin.set(
        "/r/moved.ts",
        Reply::Full {
            status: 301,
            headers: vec![("Location".into(), "/real/seg.ts".into())],
            body: Bytes::new(),
        },
    );
    origin.set(
        "/r/loop.ts",
        Reply::Full {
            status: 302,
            headers: vec![("Location".into(), "/r/loop.ts".into())],
            body: Bytes::new(),
        },
    );
    origin.set("/real/seg.ts", Reply::ok(pattern(300, 7)));
    origin.set("/good.ts", Reply::ok(pattern(100, 1)));
    let gw = TestGateway::start(test_config(&origin)).await;

    while_served(&gw, "/good.ts", pattern(100, 1), async {
        let away = gw.get("/r/away.ts").await;
        assert_eq!(away.status, 502);
        assert!(away.header("location").is_none());
        assert!(!away.text().contains("internal.example"), "{}", away.text());

        let moved = gw.get("/r/moved.ts").await;
        assert_eq!(moved.status, 200, "followed within the origin's base");
        assert_eq!(moved.body, pattern(300, 7));
        assert!(moved.header("location").is_none());

        let looped = gw.get("/r/loop.ts").await;
        assert_eq!(looped.status, 502);
        assert!(looped.header("location").is_none());
    })
    .await;
    assert_eq!(
        origin.count("/r/loop.ts"),
        4,
        "at most 3 redirects followed"
    );
}
