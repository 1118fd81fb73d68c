//! HTTP semantics of object delivery: HEAD, byte ranges, validators, content types, CORS, `Age`, cache
//! keys, methods, operational endpoints, HTTP/2 and per-class freshness.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use gateway::ManualClock;
use http::Version;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{pattern, test_config, wait_until, Fetched, Reply, TestGateway, TestOrigin};

const VOD: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
#EXTINF:2.0,\nseg_0.ts\n#EXTINF:2.0,\nseg_1.ts\n#EXT-X-ENDLIST\n";
const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n\
#EXTINF:2.0,\nseg_5.ts\n#EXTINF:2.0,\nseg_6.ts\n";
const MULTIVARIANT: &str = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n\
low/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=1280x720\nhigh/index.m3u8\n";

/// Origin timeouts far beyond the test origin's delays, so a loaded machine causes no retries.
fn roomy(mut config: gateway::Config) -> gateway::Config {
    config.origin.first_byte_timeout = Duration::from_secs(10);
    config.origin.total_timeout = Duration::from_secs(15);
    config
}

fn cache(r: &Fetched) -> &str {
    r.header("x-cache").unwrap_or("<none>")
}

// ---------------------------------------------------------------------------------------------------
// HEAD

#[tokio::test]
async fn head_matches_get_without_a_body_and_fills_the_cache_once() {
    let origin = TestOrigin::start().await;
    let body = pattern(5_000, 1);
    origin.set("/v/head.ts", Reply::ok(body.clone()));
    let gw = TestGateway::start(test_config(&origin)).await;
    let client = support::client();

    let head = support::request(&client, "HEAD", &gw.url("/v/head.ts"), &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(
        origin.count("/v/head.ts"),
        1,
        "a HEAD on a cold object fetches it once"
    );

    let get = gw.get("/v/head.ts").await;
    assert_eq!(get.status, 200);
    assert_eq!(cache(&get), "HIT", "the HEAD filled the cache");
    assert_eq!(get.body, body);
    assert_eq!(origin.count("/v/head.ts"), 1);

    assert_eq!(head.header("content-length"), Some("5000"));
    assert_eq!(get.header("content-length"), Some("5000"));
    assert!(get.header("etag").is_some());
    assert_eq!(head.header("etag"), get.header("etag"));
    assert_eq!(head.header("content-type"), Some("video/mp2t"));
    assert_eq!(head.header("content-type"), get.header("content-type"));

    let head_again = support::request(&client, "HEAD", &gw.url("/v/head.ts"), &[]).await;
    assert_eq!(cache(&head_again), "HIT");
    assert!(head_again.body.is_empty());
    assert_eq!(head_again.header("content-length"), Some("5000"));
    assert_eq!(origin.count("/v/head.ts"), 1);
}

// ---------------------------------------------------------------------------------------------------
// Ranges

#[tokio::test]
async fn byte_ranges_on_a_cached_object() {
    let origin = TestOrigin::start().await;
    let body = pattern(1000, 5);
    origin.set("/v/range.ts", Reply::ok(body.clone()));
    let gw = TestGateway::start(test_config(&origin)).await;

    let first = gw.get_with("/v/range.ts", &[("range", "bytes=0-99")]).await;
    assert_eq!(
        first.status, 206,
        "a range on a cold object is answered as a range"
    );
    assert_eq!(first.header("content-range"), Some("bytes 0-99/1000"));
    assert_eq!(first.header("content-length"), Some("100"));
    assert_eq!(first.header("accept-ranges"), Some("bytes"));
    assert_eq!(first.body, body.slice(0..100));
    assert_eq!(origin.count("/v/range.ts"), 1);

    let cached = gw.get_with("/v/range.ts", &[("range", "bytes=0-99")]).await;
    assert_eq!(cached.status, 206);
    assert_eq!(cache(&cached), "HIT");
    assert_eq!(cached.body, body.slice(0..100));

    let open = gw.get_with("/v/range.ts", &[("range", "bytes=900-")]).await;
    assert_eq!(open.status, 206);
    assert_eq!(open.header("content-range"), Some("bytes 900-999/1000"));
    assert_eq!(open.body, body.slice(900..1000));

    let suffix = gw.get_with("/v/range.ts", &[("range", "bytes=-100")]).await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.header("content-range"), Some("bytes 900-999/1000"));
    assert_eq!(suffix.body, body.slice(900..1000));

    let middle = gw
        .get_with("/v/range.ts", &[("range", "bytes=10-19")])
        .await;
    assert_eq!(middle.status, 206);
    assert_eq!(middle.header("content-range"), Some("bytes 10-19/1000"));
    assert_eq!(middle.body, body.slice(10..20));

    let beyond = gw
        .get_with("/v/range.ts", &[("range", "bytes=1000-")])
        .await;
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range"), Some("bytes */1000"));
    assert!(beyond.body.is_empty());

    let multi = gw
        .get_with("/v/range.ts", &[("range", "bytes=0-1,5-6")])
        .await;
    assert_eq!(
        multi.status, 200,
        "multi-range requests get the whole object"
    );
    assert_eq!(multi.body, body);
    assert!(multi.header("content-range").is_none());

    assert_eq!(
        origin.count("/v/range.ts"),
        1,
        "every range was cut from the one cached copy"
    );
}

#[tokio::test]
async fn concurrent_ranges_on_a_cold_object_cause_one_origin_fetch() {
    let origin = TestOrigin::start().await;
    let body = pattern(1000, 6);
    origin.set(
        "/v/cold.ts",
        Reply::Slow {
            delay: Duration::from_millis(300),
            body: body.clone(),
        },
    );
    let gw = TestGateway::start(roomy(test_config(&origin))).await;
    let client = support::client();
    let url = gw.url("/v/cold.ts");
    let ranges = [
        (0usize, 99usize),
        (100, 199),
        (500, 999),
        (0, 0),
        (999, 999),
    ];
    let answers = join_all(ranges.iter().map(|(a, b)| {
        let header = format!("bytes={a}-{b}");
        let client = &client;
        let url = &url;
        async move { support::request(client, "GET", url, &[("range", header.as_str())]).await }
    }))
    .await;
    for ((a, b), r) in ranges.iter().zip(&answers) {
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{b}/1000").as_str())
        );
        assert_eq!(r.body, body.slice(*a..b + 1));
    }
    assert_eq!(origin.count("/v/cold.ts"), 1);
}

// ---------------------------------------------------------------------------------------------------
// Validators

#[tokio::test]
async fn etag_and_if_none_match() {
    let origin = TestOrigin::start().await;
    let body = pattern(2_000, 8);
    origin.set("/v/etag.ts", Reply::ok(body.clone()));
    let gw = TestGateway::start(test_config(&origin)).await;

    // The first answer may stream as the origin sends it: the gateway's validator (from the
    // digest) exists once the whole object is in the cache.
    let first = gw.get("/v/etag.ts").await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let full = gw.get("/v/etag.ts").await;
    let etag = full
        .header("etag")
        .expect("an ETag on every object")
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong ETag: {etag}"
    );
    assert!(first.header("etag").is_none_or(|first| first == etag));

    let same = gw.get_with("/v/etag.ts", &[("if-none-match", &etag)]).await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), Some(etag.as_str()));

    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {weak}");
    let weak_match = gw
        .get_with("/v/etag.ts", &[("if-none-match", &listed)])
        .await;
    assert_eq!(
        weak_match.status, 304,
        "If-None-Match uses the weak comparison and accepts lists"
    );

    let other = gw
        .get_with("/v/etag.ts", &[("if-none-match", "\"something-else\"")])
        .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body, body);

    let any = gw.get_with("/v/etag.ts", &[("if-none-match", "*")]).await;
    assert_eq!(any.status, 304);
    assert!(any.body.is_empty());

    // The ETag is stable: a second gateway derives the same one from the same bytes.
    let gw2 = TestGateway::start(test_config(&origin)).await;
    assert_eq!(
        gw2.get("/v/etag.ts").await.header("etag"),
        Some(etag.as_str())
    );
    assert_eq!(origin.count("/v/etag.ts"), 2);
}

#[tokio::test]
async fn origin_etag_and_last_modified_pass_through() {
    let origin = TestOrigin::start().await;
    let modified = "Wed, 21 Oct 2015 07:28:00 GMT";
    origin.set(
        "/v/validated.ts",
        Reply::with_headers(
            pattern(500, 2),
            &[("ETag", "\"origin-v1\""), ("Last-Modified", modified)],
        ),
    );
    let gw = TestGateway::start(test_config(&origin)).await;

    let r = gw.get("/v/validated.ts").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some("\"origin-v1\""));
    assert_eq!(r.header("last-modified"), Some(modified));

    let inm = gw
        .get_with("/v/validated.ts", &[("if-none-match", "\"origin-v1\"")])
        .await;
    assert_eq!(inm.status, 304);
    assert_eq!(inm.header("etag"), Some("\"origin-v1\""));

    let same_time = gw
        .get_with("/v/validated.ts", &[("if-modified-since", modified)])
        .await;
    assert_eq!(same_time.status, 304);
    assert!(same_time.body.is_empty());
    let later = gw
        .get_with(
            "/v/validated.ts",
            &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")],
        )
        .await;
    assert_eq!(later.status, 304);
    let earlier = gw
        .get_with(
            "/v/validated.ts",
            &[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")],
        )
        .await;
    assert_eq!(earlier.status, 200);
    assert_eq!(earlier.body, pattern(500, 2));
    let garbage = gw
        .get_with("/v/validated.ts", &[("if-modified-since", "yesterday")])
        .await;
    assert_eq!(garbage.status, 200, "an unparsable date is ignored");

    // If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.1.3).
    let both = gw
        .get_with(
            "/v/validated.ts",
            &[
                ("if-none-match", "\"origin-v0\""),
                ("if-modified-since", modified),
            ],
        )
        .await;
    assert_eq!(both.status, 200);
    assert_eq!(origin.count("/v/validated.ts"), 1);
}

// ---------------------------------------------------------------------------------------------------
// Content types

#[tokio::test]
async fn content_types_by_extension() {
    let origin = TestOrigin::start().await;
    let gw = TestGateway::start(test_config(&origin)).await;
    let cases = [
        (
            "/ct/index.m3u8",
            Bytes::from_static(VOD.as_bytes()),
            "application/vnd.apple.mpegurl",
        ),
        ("/ct/seg.ts", pattern(100, 1), "video/mp2t"),
        ("/ct/seg.m4s", pattern(100, 2), "video/mp4"),
        ("/ct/seg.mp4", pattern(100, 3), "video/mp4"),
        ("/ct/init.mp4", pattern(100, 4), "video/mp4"),
        ("/ct/audio.m4a", pattern(100, 5), "audio/mp4"),
        ("/ct/audio.aac", pattern(100, 6), "audio/aac"),
    ];
    for (path, body, _) in &cases {
        // The origin's generic type is replaced by the one the name implies.
        origin.set(
            path,
            Reply::with_headers(
                body.clone(),
                &[("Content-Type", "application/octet-stream")],
            ),
        );
    }
    for (path, body, expected) in &cases {
        let r = gw.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(*expected), "{path}");
        assert_eq!(&r.body, body, "{path}");
        let hit = gw.get(path).await;
        assert_eq!(
            hit.header("content-type"),
            Some(*expected),
            "{path} from the cache"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// CORS

fn assert_cors(r: &Fetched, what: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "{what}: {:?}",
        r.headers
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let names: Vec<&str> = exposed.split(',').map(str::trim).collect();
    assert!(
        names.contains(&"age"),
        "{what}: Age is exposed: {exposed:?}"
    );
}

#[tokio::test]
async fn cors_on_every_object_response() {
    let origin = TestOrigin::start().await;
    origin.set("/c/seg.ts", Reply::ok(pattern(300, 1)));
    origin.set("/c/index.m3u8", Reply::ok(VOD));
    let gw = TestGateway::start(test_config(&origin)).await;
    let origin_header = [("origin", "https://player.example")];

    let miss = gw.get_with("/c/seg.ts", &origin_header).await;
    assert_eq!(miss.status, 200);
    assert_cors(&miss, "miss");
    let hit = gw.get_with("/c/seg.ts", &origin_header).await;
    assert_eq!(cache(&hit), "HIT");
    assert_cors(&hit, "hit");
    let playlist = gw.get_with("/c/index.m3u8", &origin_header).await;
    assert_eq!(playlist.status, 200);
    assert_cors(&playlist, "playlist");
    let partial = gw.get_with("/c/seg.ts", &[("range", "bytes=0-9")]).await;
    assert_eq!(partial.status, 206);
    assert_cors(&partial, "206");
    let etag = hit.header("etag").unwrap().to_owned();
    let not_modified = gw.get_with("/c/seg.ts", &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert_cors(&not_modified, "304");
    let unsatisfiable = gw.get_with("/c/seg.ts", &[("range", "bytes=5000-")]).await;
    assert_eq!(unsatisfiable.status, 416);
    assert_cors(&unsatisfiable, "416");
    // Origin errors and refused paths still let the player read the status.
    let missing = gw.get("/c/index_missing.m3u8").await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("access-control-allow-origin"),
        Some("*"),
        "origin 404"
    );
    let refused = gw.get("/c/%2e%2e/secret.ts").await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.header("access-control-allow-origin"),
        Some("*"),
        "400"
    );
}

#[tokio::test]
async fn cors_preflight_is_answered_locally() {
    let origin = TestOrigin::start().await;
    origin.set("/c/seg.ts", Reply::ok(pattern(300, 1)));
    let gw = TestGateway::start(test_config(&origin)).await;
    let client = support::client();

    let pre = support::request(
        &client,
        "OPTIONS",
        &gw.url("/c/seg.ts"),
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "range"),
        ],
    )
    .await;
    assert_eq!(pre.status, 204);
    assert!(pre.body.is_empty());
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    let methods = pre
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(
        methods.split(',').any(|m| m.trim() == "GET"),
        "allow-methods: {methods:?}"
    );
    let headers = pre
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.split(',').any(|h| h.trim() == "range"),
        "allow-headers: {headers:?}"
    );

    // Without Access-Control-Request-Headers the defaults still allow Range.
    let bare = support::request(
        &client,
        "OPTIONS",
        &gw.url("/c/other.ts"),
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(bare.status, 204);
    let headers = bare
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.split(',').any(|h| h.trim() == "range"),
        "default allow-headers: {headers:?}"
    );

    assert_eq!(origin.total(), 0, "a preflight never reaches the origin");
}

// ---------------------------------------------------------------------------------------------------
// Age

#[tokio::test]
async fn age_counts_the_time_an_object_spent_in_the_cache() {
    let origin = TestOrigin::start().await;
    origin.set("/a/seg.ts", Reply::ok(pattern(100, 1)));
    let clock = Arc::new(ManualClock::new());
    let gw = TestGateway::start_with_clock(test_config(&origin), clock.clone()).await;

    let first = gw.get("/a/seg.ts").await;
    assert_eq!(first.header("age"), Some("0"));
    clock.advance(Duration::from_millis(2_100));
    let later = gw.get("/a/seg.ts").await;
    assert_eq!(cache(&later), "HIT");
    assert_eq!(
        later.header("age"),
        Some("2"),
        "Age in whole seconds after 2.1 s in the cache"
    );
    assert_eq!(origin.count("/a/seg.ts"), 1);
}

#[tokio::test]
async fn origin_age_is_included() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/a/aged.ts",
        Reply::with_headers(pattern(100, 1), &[("Age", "5")]),
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    let first = gw.get("/a/aged.ts").await;
    assert_eq!(cache(&first), "MISS");
    let age: u64 = first
        .header("age")
        .expect("Age")
        .parse()
        .expect("Age is a number");
    assert!(
        (5..=10).contains(&age),
        "the origin's Age 5 counts: got {age}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Cache keys

#[tokio::test]
async fn viewer_tokens_and_cmcd_do_not_split_the_cache() {
    let origin = TestOrigin::start().await;
    let body = pattern(700, 4);
    origin.set("/v/seg.ts", Reply::ok(body.clone()));
    let gw = TestGateway::start(test_config(&origin)).await;

    let a = gw.get("/v/seg.ts?token=abc").await;
    assert_eq!(a.status, 200);
    assert_eq!(cache(&a), "MISS");
    let b = gw.get("/v/seg.ts?token=xyz&CMCD=bl%3D100").await;
    assert_eq!(b.status, 200);
    assert_eq!(cache(&b), "HIT", "token and CMCD are not part of the key");
    assert_eq!(b.body, body);
    let c = gw.get("/v/seg.ts").await;
    assert_eq!(cache(&c), "HIT");
    assert_eq!(
        origin.count("/v/seg.ts"),
        1,
        "one origin fetch for all three"
    );
    assert_eq!(
        origin.count("/v/seg.ts?token=abc"),
        1,
        "the origin got the first viewer's token"
    );
}

#[tokio::test]
async fn the_origin_gets_the_token_but_not_cmcd() {
    let origin = TestOrigin::start().await;
    origin.set("/v/seg2.ts", Reply::ok(pattern(700, 4)));
    let gw = TestGateway::start(test_config(&origin)).await;
    let r = gw.get("/v/seg2.ts?token=xyz&CMCD=bl%3D100").await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.count("/v/seg2.ts"), 1);
    assert_eq!(
        origin.count("/v/seg2.ts?token=xyz"),
        1,
        "the token reached the origin, CMCD did not"
    );
    assert_eq!(origin.count("/v/seg2.ts?token=xyz&CMCD=bl%3D100"), 0);
}

#[tokio::test]
async fn hls_directives_and_unknown_parameters_split_the_cache() {
    let origin = TestOrigin::start().await;
    origin.set("/live/index.m3u8", Reply::ok(LIVE));
    origin.set("/v/q.ts", Reply::ok(pattern(10, 1)));
    let gw = TestGateway::start(test_config(&origin)).await;

    let five = gw.get("/live/index.m3u8?_HLS_msn=5").await;
    let six = gw.get("/live/index.m3u8?_HLS_msn=6").await;
    assert_eq!(
        (five.status, six.status),
        (http::StatusCode::OK, http::StatusCode::OK)
    );
    assert_eq!(cache(&six), "MISS");
    assert_eq!(origin.count("/live/index.m3u8?_HLS_msn=5"), 1);
    assert_eq!(origin.count("/live/index.m3u8?_HLS_msn=6"), 1);
    assert_eq!(
        origin.count("/live/index.m3u8"),
        2,
        "two distinct objects, two origin fetches"
    );
    let five_again = gw.get("/live/index.m3u8?_HLS_msn=5").await;
    assert_eq!(cache(&five_again), "HIT");
    assert_eq!(origin.count("/live/index.m3u8"), 2);

    // Unknown parameters are kept in the key, in a stable order.
    assert_eq!(cache(&gw.get("/v/q.ts?b=2&a=1").await), "MISS");
    assert_eq!(
        cache(&gw.get("/v/q.ts?a=1&b=2").await),
        "HIT",
        "parameter order does not matter"
    );
    assert_eq!(cache(&gw.get("/v/q.ts?a=1&b=3").await), "MISS");
    assert_eq!(origin.count("/v/q.ts"), 2);
}

// ---------------------------------------------------------------------------------------------------
// Methods and operational endpoints

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let origin = TestOrigin::start().await;
    origin.set("/v/seg.ts", Reply::ok(pattern(10, 1)));
    let gw = TestGateway::start(test_config(&origin)).await;
    let client = support::client();
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = support::request(&client, method, &gw.url("/v/seg.ts"), &[]).await;
        assert_eq!(r.status, 405, "{method}");
        let allow = r.header("allow").unwrap_or_default();
        assert!(
            allow.split(',').any(|m| m.trim() == "GET"),
            "{method}: Allow {allow:?}"
        );
        assert!(
            allow.split(',').any(|m| m.trim() == "HEAD"),
            "{method}: Allow {allow:?}"
        );
    }
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let origin = TestOrigin::start().await;
    origin.set("/m/seg.ts", Reply::ok(pattern(1234, 1)));
    let gw = TestGateway::start(test_config(&origin)).await;
    assert_eq!(gw.get("/healthz").await.status, 200);
    assert_eq!(gw.get("/readyz").await.status, 200);
    // One object through the cache so that every labelled family has a series.
    assert_eq!(gw.get("/m/seg.ts").await.status, 200);
    assert_eq!(gw.get("/m/seg.ts").await.status, 200);

    let m = gw.get("/metrics").await;
    assert_eq!(m.status, 200);
    let ct = m.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = m.text();
    for family in [
        "gateway_requests_total",
        "gateway_cache_results_total",
        "gateway_origin_requests_total",
        "gateway_origin_fetch_seconds",
        "gateway_served_bytes_total",
        "gateway_cache_bytes",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "{family} has a sample in:\n{text}"
        );
    }
    assert_eq!(
        gw.metric("gateway_requests_total{class=\"segment\",status=\"200\"}")
            .await,
        2.0
    );
    assert_eq!(
        gw.metric("gateway_cache_results_total{class=\"segment\",result=\"hit\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("gateway_origin_requests_total{class=\"segment\",outcome=\"ok\"}")
            .await,
        1.0
    );
    assert_eq!(
        gw.metric("gateway_served_bytes_total{class=\"segment\"}")
            .await,
        2468.0
    );
    assert!(gw.metric("gateway_cache_bytes").await >= 1234.0);
    // The operational endpoints never touch the origin.
    assert_eq!(origin.total(), 1);
}

// ---------------------------------------------------------------------------------------------------
// HTTP/2

#[tokio::test]
async fn http2_prior_knowledge() {
    let origin = TestOrigin::start().await;
    let body = pattern(100_000, 9);
    origin.set(
        "/h2/seg.ts",
        Reply::Slow {
            delay: Duration::from_millis(200),
            body: body.clone(),
        },
    );
    let gw = TestGateway::start(roomy(test_config(&origin))).await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();

    let url = gw.url("/h2/seg.ts");
    // Several streams at once on the one connection.
    let answers = join_all((0..8).map(|_| async {
        let request = http::Request::get(url.as_str()).body(Empty::new()).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("answered in time")
            .expect("h2 request");
        let version = response.version();
        let status = response.status();
        let ct = response.headers().get("content-type").cloned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (version, status, ct, bytes)
    }))
    .await;
    for (version, status, ct, bytes) in answers {
        assert_eq!(version, Version::HTTP_2);
        assert_eq!(status, 200);
        assert_eq!(
            ct.as_ref().and_then(|v| v.to_str().ok()),
            Some("video/mp2t")
        );
        assert_eq!(bytes, body);
    }
    assert_eq!(origin.count("/h2/seg.ts"), 1);
    let r = support::request(&client, "GET", &gw.url("/healthz"), &[]).await;
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------------------------------------------
// Per-class freshness

/// Fresh (HIT) at once; after `past` on the gateway's clock the entry is stale: served as STALE while
/// one background fetch runs, after which it is a HIT again.
async fn fresh_then_stale_then_refreshed(
    gw: &TestGateway,
    clock: &ManualClock,
    origin: &TestOrigin,
    path: &str,
    body: &Bytes,
    past: Duration,
) {
    let first = gw.get(path).await;
    assert_eq!(first.status, 200, "{path}");
    assert_eq!(cache(&first), "MISS", "{path}");
    let second = gw.get(path).await;
    assert_eq!(cache(&second), "HIT", "{path} is fresh at once");
    assert_eq!(origin.count(path), 1);

    clock.advance(past);
    let stale = gw.get(path).await;
    assert_eq!(stale.status, 200, "{path}");
    assert_eq!(
        cache(&stale),
        "STALE",
        "{path} past its fresh time is served stale"
    );
    assert_eq!(&stale.body, body);
    assert!(
        wait_until(|| origin.count(path) == 2, Duration::from_secs(2)).await,
        "{path}: the stale answer started one background refresh (count {})",
        origin.count(path)
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = gw.get(path).await;
        assert_eq!(&r.body, body);
        match cache(&r) {
            "HIT" => break,
            "STALE" if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => panic!("{path}: expected a HIT once the refresh finished, got {other}"),
        }
    }
    assert_eq!(origin.count(path), 2, "{path}: exactly one refresh");
}

#[tokio::test]
async fn segment_ttl_override() {
    let origin = TestOrigin::start().await;
    let body = pattern(1000, 3);
    origin.set("/ttl/seg.ts", Reply::ok(body.clone()));

    // By default a segment stays fresh for a long time.
    let plain = TestGateway::start(test_config(&origin)).await;
    assert_eq!(cache(&plain.get("/ttl/seg.ts").await), "MISS");
    assert_eq!(origin.count("/ttl/seg.ts"), 1);

    let mut config = test_config(&origin);
    config.cache.ttl_segment = Some(Duration::from_millis(300));
    let gw = TestGateway::start(config).await;
    // Start the 400 ms wait for the first gateway at the same time as the second one's.
    let origin2 = origin.clone();
    let control = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = plain.get("/ttl/seg.ts").await;
        assert_eq!(
            cache(&r),
            "HIT",
            "without the override the segment is still fresh"
        );
    };
    let overridden = async {
        // Counts below include the control gateway's one fetch.
        let first = gw.get("/ttl/seg.ts").await;
        assert_eq!(cache(&first), "MISS");
        assert_eq!(cache(&gw.get("/ttl/seg.ts").await), "HIT");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let stale = gw.get("/ttl/seg.ts").await;
        assert_eq!(cache(&stale), "STALE");
        assert_eq!(stale.body, body);
        assert!(wait_until(|| origin2.count("/ttl/seg.ts") == 3, Duration::from_secs(2)).await);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = gw.get("/ttl/seg.ts").await;
            match cache(&r) {
                "HIT" => break,
                "STALE" if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => panic!("expected a HIT once the refresh finished, got {other}"),
            }
        }
    };
    tokio::join!(control, overridden);
    assert_eq!(
        origin.count("/ttl/seg.ts"),
        3,
        "one fetch each, plus one refresh"
    );
}

#[tokio::test]
async fn vod_media_playlist_ttl_override() {
    let origin = TestOrigin::start().await;
    origin.set("/vod/index.m3u8", Reply::ok(VOD));
    let mut config = test_config(&origin);
    config.cache.ttl_vod_media = Some(Duration::from_millis(300));
    let clock = Arc::new(ManualClock::new());
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;
    let body = Bytes::from_static(VOD.as_bytes());
    fresh_then_stale_then_refreshed(
        &gw,
        &clock,
        &origin,
        "/vod/index.m3u8",
        &body,
        Duration::from_millis(400),
    )
    .await;
}

#[tokio::test]
async fn multivariant_playlist_ttl_override() {
    let origin = TestOrigin::start().await;
    origin.set("/mv/master.m3u8", Reply::ok(MULTIVARIANT));
    let mut config = test_config(&origin);
    config.cache.ttl_multivariant = Some(Duration::from_millis(300));
    let clock = Arc::new(ManualClock::new());
    let gw = TestGateway::start_with_clock(config, clock.clone()).await;
    let body = Bytes::from_static(MULTIVARIANT.as_bytes());
    fresh_then_stale_then_refreshed(
        &gw,
        &clock,
        &origin,
        "/mv/master.m3u8",
        &body,
        Duration::from_millis(400),
    )
    .await;
}

#[tokio::test]
async fn no_store_and_private_objects_are_fetched_every_time() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/ns/seg.ts",
        Reply::with_headers(pattern(100, 1), &[("Cache-Control", "no-store")]),
    );
    origin.set(
        "/ns/private.ts",
        Reply::with_headers(
            pattern(100, 2),
            &[("Cache-Control", "private, max-age=600")],
        ),
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    for i in 1..=3 {
        let r = gw.get("/ns/seg.ts").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, pattern(100, 1));
        assert_eq!(cache(&r), "MISS");
        assert_eq!(origin.count("/ns/seg.ts"), i);
        let p = gw.get("/ns/private.ts").await;
        assert_eq!(p.status, 200);
        assert_eq!(cache(&p), "MISS");
        assert_eq!(origin.count("/ns/private.ts"), i);
    }
}

#[tokio::test]
async fn uncacheable_origin_answers_are_not_advertised_as_public() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/ns/seg.ts",
        Reply::with_headers(pattern(100, 1), &[("Cache-Control", "no-store")]),
    );
    origin.set(
        "/ns/private.ts",
        Reply::with_headers(
            pattern(100, 2),
            &[("Cache-Control", "private, max-age=600")],
        ),
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    let r = gw.get("/ns/seg.ts").await;
    let cc = r
        .header("cache-control")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        !cc.contains("public"),
        "origin said no-store, gateway says {cc:?}"
    );
    assert!(
        cc.contains("no-store"),
        "origin said no-store, gateway says {cc:?}"
    );
    let p = gw.get("/ns/private.ts").await;
    let cc = p
        .header("cache-control")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        !cc.contains("public"),
        "origin said private, gateway says {cc:?}"
    );
    assert!(
        cc.contains("private") || cc.contains("no-store"),
        "origin said private, gateway says {cc:?}"
    );
}

#[tokio::test]
async fn no_cache_and_max_age_zero_are_revalidated_before_reuse() {
    let origin = TestOrigin::start().await;
    origin.set(
        "/nc/seg.ts",
        Reply::with_headers(pattern(100, 1), &[("Cache-Control", "no-cache")]),
    );
    origin.set(
        "/nc/zero.ts",
        Reply::with_headers(pattern(100, 2), &[("Cache-Control", "max-age=0")]),
    );
    let gw = TestGateway::start(test_config(&origin)).await;
    for path in ["/nc/seg.ts", "/nc/zero.ts"] {
        assert_eq!(gw.get(path).await.status, 200);
        assert_eq!(origin.count(path), 1);
        let second = gw.get(path).await;
        assert_eq!(second.status, 200);
        assert_ne!(
            cache(&second),
            "STALE",
            "{path}: served from the cache without asking the origin"
        );
        assert_eq!(
            origin.count(path),
            2,
            "{path}: the origin was asked before the second answer"
        );
    }
}
