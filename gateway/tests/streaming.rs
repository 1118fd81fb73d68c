//! Viewers that join a media fetch under way get the body as the origin sends it, not when it has
//! all arrived; a fetch that fails midway ends every such answer with an error, never with a short
//! body that looks complete.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{pattern, test_config, wait_until, Reply, TestGateway, TestOrigin};

const SEGMENT: &str = "/live/stream/seg1.ts";
const SIZE: usize = 2 * 1024 * 1024;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// What one waiter saw: its status, when its first body byte came, and its body (or the error
/// that ended it).
#[derive(Debug)]
struct Seen {
    status: StatusCode,
    x_cache: String,
    first_byte: Option<Instant>,
    body: Result<Vec<u8>, String>,
}

async fn watch(client: &HttpClient, url: &str) -> Seen {
    let request = Request::get(url).body(Empty::new()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("head in time")
        .expect("head");
    let status = response.status();
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = response.into_body();
    let mut got = Vec::new();
    let mut first_byte = None;
    let outcome = loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Err(_) => break Err("stalled".to_owned()),
            Ok(None) => break Ok(got),
            Ok(Some(Err(e))) => break Err(e.to_string()),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() && first_byte.is_none() {
                        first_byte = Some(Instant::now());
                    }
                    got.extend_from_slice(&data);
                }
            }
        }
    };
    Seen {
        status,
        x_cache,
        first_byte,
        body: outcome,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_waiters_get_the_first_bytes_as_the_origin_sends_them() {
    let origin = TestOrigin::start().await;
    let body = pattern(SIZE, 7);
    origin.set(
        SEGMENT,
        Reply::Paced {
            body: body.clone(),
            pieces: 40,
            over: Duration::from_secs(2),
            cut_after: None,
        },
    );
    let mut config = test_config(&origin);
    config.origin.total_timeout = Duration::from_secs(8);
    let gw = TestGateway::start(config).await;
    let url = gw.url(SEGMENT);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Half join before the origin sends anything, half a second into the transfer.
    let early: Vec<_> = (0..100)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { watch(&client, &url).await })
        })
        .collect();
    assert!(
        wait_until(
            || origin.first_byte_at(SEGMENT).is_some(),
            Duration::from_secs(5)
        )
        .await,
        "the origin started sending"
    );
    let origin_first = origin.first_byte_at(SEGMENT).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late_joined = Instant::now();
    let late: Vec<_> = (0..100)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { watch(&client, &url).await })
        })
        .collect();
    // A range and a HEAD join too: they wait for the whole object, and are answered right.
    let range = gw.get_with(SEGMENT, &[("range", "bytes=1000-1999")]);
    let head_client = support::client();
    let head = support::request(&head_client, "HEAD", &url, &[]);
    let (range, head) = tokio::join!(range, head);

    // Per group: how long after the origin's first byte (early) or after joining (late) each
    // waiter's first body byte came.
    let mut groups = Vec::new();
    let mut last_first_byte = origin_first;
    for (joined, waiters) in [(origin_first, early), (late_joined, late)] {
        let mut delays = Vec::new();
        for waiter in waiters {
            let seen = waiter.await.unwrap();
            assert_eq!(seen.status, StatusCode::OK);
            assert!(
                seen.x_cache == "MISS" || seen.x_cache == "COALESCED",
                "{}",
                seen.x_cache
            );
            let got = seen.body.expect("a whole body");
            assert!(got == body, "every waiter gets the origin's bytes");
            let first = seen.first_byte.unwrap();
            last_first_byte = last_first_byte.max(first);
            delays.push(first.saturating_duration_since(joined));
        }
        delays.sort();
        groups.push((percentile(&delays, 0.5), percentile(&delays, 1.0)));
    }
    assert_eq!(origin.count(SEGMENT), 1, "one origin fetch for everyone");
    let [(early_p50, early_max), (late_p50, late_max)] = groups[..] else {
        unreachable!()
    };
    eprintln!(
        "first body byte, 100 waiters from the start: p50 {early_p50:?} max {early_max:?} after \
         the origin's; 100 joining 0.5 s in: p50 {late_p50:?} max {late_max:?} after joining"
    );
    // The transfer takes 2 s: a waiter given the object whole would see its first byte ~2 s after
    // the origin's (a late joiner ~1.5 s after joining). Loose bounds for a loaded debug build on
    // 2 CPUs (a CI run with a release build compiling beside it saw late joiners at p50 436 ms);
    // the numbers are printed above and measured in docs/BENCHMARKS.md.
    assert!(
        early_max < Duration::from_millis(300),
        "first bytes at the origin's pace: p50 {early_p50:?}, max {early_max:?}"
    );
    assert!(
        late_p50 < Duration::from_millis(750),
        "late joiners start at once: p50 {late_p50:?}, max {late_max:?}"
    );
    assert!(
        last_first_byte < origin_first + Duration::from_millis(1500),
        "every waiter started well before the origin finished: {:?} after its first byte",
        last_first_byte - origin_first
    );
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.body, body.slice(1000..2000));
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some(&*SIZE.to_string()));
    assert!(head.body.is_empty());
    let streamed = gw.metric("gateway_streamed_answers_total").await;
    assert!(streamed >= 200.0, "{streamed}");
    assert_eq!(gw.metric("gateway_streamed_aborted_total").await, 0.0);
    // Cached whole, with its digest-derived validator, once the fetch is done.
    let hit = gw.get(SEGMENT).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.body, body);
    assert!(hit.header("etag").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cut_midway_is_an_error_for_every_waiter_on_http1_and_http2() {
    let origin = TestOrigin::start().await;
    let body = pattern(SIZE, 9);
    origin.set(
        SEGMENT,
        Reply::Paced {
            body: body.clone(),
            pieces: 20,
            over: Duration::from_secs(1),
            cut_after: Some(10),
        },
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    let url = gw.url(SEGMENT);
    let h1: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let h2: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let waiters: Vec<_> = (0..40)
        .map(|i| {
            let client = if i % 2 == 0 { h1.clone() } else { h2.clone() };
            let url = url.clone();
            tokio::spawn(async move { watch(&client, &url).await })
        })
        .collect();
    let mut cut = 0;
    for waiter in waiters {
        let seen = waiter.await.unwrap();
        match (&seen.status, &seen.body) {
            (&StatusCode::OK, Err(e)) => {
                assert!(!e.contains("stalled"), "ended, not left hanging: {e}");
                cut += 1;
            }
            (status, body) => panic!(
                "a waiter saw {status} and {:?} bytes complete",
                body.as_ref().map(Vec::len)
            ),
        }
    }
    assert_eq!(cut, 40, "every waiter saw its answer cut");
    assert_eq!(gw.metric("gateway_streamed_aborted_total").await, 40.0);
    // The fetch retried once (configured), unseen by the waiters, to fill the cache: cut again.
    let settled = support::wait_until_async(
        || async { gw.metric("gateway_origin_in_flight").await == 0.0 },
        Duration::from_secs(5),
    )
    .await;
    assert!(settled, "the fetch ended");
    assert_eq!(origin.count(SEGMENT), 2);

    // Nothing short was cached: the next viewer gets the whole object from a new fetch.
    origin.set(SEGMENT, Reply::ok(body.clone()));
    let next = gw.get(SEGMENT).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.body, body);
    assert_eq!(origin.count(SEGMENT), 3);
}
