//! CMCD in, CMSD out: what players say about themselves (CTA-5004, in the query or in headers)
//! becomes metrics by object class and never reaches the cache key or the origin; every answer
//! says what the object is (`CMSD-Static`) and, once the connection carried a body the client had
//! to be waited for, the gateway's throughput estimate to this client
//! (`CMSD-Dynamic: "<cmsd.server_id>";etp=…`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use support::{client, pattern, request, test_config, Reply, TestGateway, TestOrigin};

const VOD: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n";

/// Larger than a loopback connection's socket buffers can hold (4 MiB to send, about 128 KiB to
/// receive while the client does not read): the gateway has to wait for a client that pauses, and
/// the rate at which the full socket then takes the rest is what the estimate measures.
const SEGMENT_BYTES: usize = 16 * 1024 * 1024;

/// A GET whose body the client starts reading only after `pause` (hyper reads no further than
/// its buffer while the body is not polled), then reads at once.
async fn get_pausing(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    pause: Duration,
) -> (StatusCode, HeaderMap, Bytes) {
    let request = Request::get(url).body(Empty::new()).unwrap();
    let response = client.request(request).await.unwrap();
    tokio::time::sleep(pause).await;
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// `"edge-1";etp=<kbit/s>` → the kbit/s.
fn etp(dynamic: &str) -> u64 {
    dynamic
        .strip_prefix("\"edge-1\";etp=")
        .unwrap_or_else(|| panic!("CMSD-Dynamic {dynamic:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("CMSD-Dynamic {dynamic:?}"))
}

#[tokio::test]
async fn cmcd_becomes_metrics_and_never_reaches_the_cache_key_or_the_origin() {
    let origin = TestOrigin::start().await;
    origin.set("/v/index.m3u8", Reply::ok(VOD));
    origin.set("/v/seg.ts", Reply::ok(pattern(SEGMENT_BYTES, 7)));
    let mut config = test_config(&origin);
    config.cmsd.server_id = "edge-1".to_owned();
    let gw = TestGateway::start(config).await;
    // One client, one keep-alive connection: the estimate is the connection's.
    let client = client();
    let send =
        |method: &'static str, path: &str, headers: &'static [(&'static str, &'static str)]| {
            let url = gw.url(path);
            let client = client.clone();
            async move { request(&client, method, &url, headers).await }
        };

    // The query as hls.js writes it (encodeURIComponent of the list).
    let playlist = send(
        "GET",
        "/v/index.m3u8?CMCD=cid%3D%22%2Fv%2Findex.m3u8%22%2Cot%3Dm%2Csf%3Dh%2Csid%3D%22abc%22%2Csu",
        &[],
    )
    .await;
    assert_eq!(playlist.status, 200);
    assert_eq!(playlist.header("cmsd-static"), Some("ot=m,sf=h,st=v,v=1"));
    assert_eq!(
        playlist.header("cmsd-dynamic"),
        None,
        "no estimate before the connection carried a body the client had to be waited for"
    );
    // In the query: buffer 4 s, throughput 25 Mbit/s, starting, rebuffered. The client reads the
    // body only 200 ms after its head.
    let (status, headers, body) = get_pausing(
        &client,
        &gw.url(
            "/v/seg.ts?CMCD=bl%3D4000%2Cbr%3D3200%2Cbs%2Cd%3D2000%2Cmtp%3D25000%2Cot%3Dav%2Csu",
        ),
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), SEGMENT_BYTES);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("cmsd-static"), Some("ot=av,sf=h,st=v,v=1"));
    assert_eq!(header("cmsd-dynamic"), None);
    let exposed = header("access-control-expose-headers").unwrap();
    assert!(
        exposed.contains("CMSD-Static") && exposed.contains("CMSD-Dynamic"),
        "{exposed}"
    );
    // In the four headers, on the same connection, after the body went out: an estimate.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = send(
        "GET",
        "/v/seg.ts",
        &[
            ("cmcd-request", "bl=1500,mtp=800"),
            ("cmcd-object", "br=3200,d=2000,ot=av"),
            ("cmcd-status", "rtp=16000"),
            (
                "cmcd-session",
                "cid=\"/v/index.m3u8\",sf=h,sid=\"abc\",st=v",
            ),
        ],
    )
    .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, body);
    let dynamic = second.header("cmsd-dynamic").unwrap();
    let estimate = etp(dynamic);
    // About 12 MB after the socket filled up, in a little over 200 ms: some 500 Mbit/s. Far below
    // what copying into socket buffers runs at, which is what a naive count of bytes over write
    // time would have said.
    assert!(estimate > 10_000 && estimate < 1_000_000, "{dynamic}");
    // HEAD: CMCD counted, CMSD sent, the estimate kept.
    let head = send("HEAD", "/v/seg.ts", &[("cmcd-request", "bl=500")]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("cmsd-static"), Some("ot=av,sf=h,st=v,v=1"));
    assert!(etp(head.header("cmsd-dynamic").unwrap()) > 0);
    // Malformed: counted, otherwise ignored.
    let bad = send("GET", "/v/seg.ts?CMCD=bl%3Dlots", &[]).await;
    assert_eq!(bad.status, 200);
    let bad = send("GET", "/v/seg.ts", &[("cmcd-status", "bs=maybe")]).await;
    assert_eq!(bad.status, 200);
    // An origin error carries CMSD too, and its CMCD counts under the class of its name.
    let missing = send("GET", "/v/gone.ts?CMCD=bl%3D100", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("cmsd-static"), Some("ot=av,sf=h,v=1"));

    let m = |series: &'static str| gw.metric(series);
    assert_eq!(
        m("gateway_cmcd_requests_total{class=\"segment\"}").await,
        4.0
    );
    assert_eq!(
        m("gateway_cmcd_requests_total{class=\"vod_media\"}").await,
        1.0
    );
    assert_eq!(m("gateway_cmcd_invalid_total").await, 2.0);
    assert_eq!(
        m("gateway_cmcd_startup_total{class=\"segment\"}").await,
        1.0
    );
    assert_eq!(
        m("gateway_cmcd_startup_total{class=\"vod_media\"}").await,
        1.0
    );
    assert_eq!(
        m("gateway_cmcd_buffer_starvation_total{class=\"segment\"}").await,
        1.0
    );
    // bl: 4 s, 1.5 s, 0.5 s, 0.1 s.
    assert_eq!(
        m("gateway_cmcd_buffer_length_seconds_count{class=\"segment\"}").await,
        4.0
    );
    assert_eq!(
        m("gateway_cmcd_buffer_length_seconds_sum{class=\"segment\"}").await,
        6.1
    );
    assert_eq!(
        m("gateway_cmcd_buffer_length_seconds_bucket{class=\"segment\",le=\"1\"}").await,
        2.0
    );
    assert_eq!(
        m("gateway_cmcd_buffer_length_seconds_bucket{class=\"segment\",le=\"2\"}").await,
        3.0
    );
    // mtp: 25 Mbit/s and 800 kbit/s.
    assert_eq!(
        m("gateway_cmcd_throughput_bits_per_second_count{class=\"segment\"}").await,
        2.0
    );
    assert_eq!(
        m("gateway_cmcd_throughput_bits_per_second_sum{class=\"segment\"}").await,
        25_800_000.0
    );
    assert_eq!(
        m("gateway_cmcd_throughput_bits_per_second_bucket{class=\"segment\",le=\"1000000\"}").await,
        1.0
    );
    assert_eq!(
        m("gateway_cmcd_throughput_bits_per_second_bucket{class=\"segment\",le=\"25000000\"}")
            .await,
        2.0
    );

    // One cache key for every spelling: one origin fetch each, and no CMCD ever reached the
    // origin, in the target or in a header.
    assert_eq!(origin.count("/v/seg.ts"), 1);
    assert_eq!(origin.count("/v/index.m3u8"), 1);
    let heads = origin.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for head in heads {
        assert!(!head.to_ascii_lowercase().contains("cmcd"), "{head}");
    }
    println!(
        "CMSD-Dynamic after a {SEGMENT_BYTES}-byte body read 200 ms late on loopback: {dynamic}; \
         then after the next body, read at once: {:?}",
        head.header("cmsd-dynamic")
    );
}

#[tokio::test]
async fn preflight_allows_the_cmcd_headers() {
    let origin = TestOrigin::start().await;
    let gw = TestGateway::start(test_config(&origin)).await;
    let asked = "cmcd-object,cmcd-request,cmcd-session,cmcd-status";
    let preflight = request(
        &client(),
        "OPTIONS",
        &gw.url("/v/seg.ts"),
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", asked),
        ],
    )
    .await;
    assert_eq!(preflight.status, 204);
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in asked.split(',') {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert_eq!(origin.total(), 0);
}

#[tokio::test]
async fn switched_off_cmcd_is_not_read_and_no_cmsd_is_sent() {
    let origin = TestOrigin::start().await;
    origin.set("/v/seg.ts", Reply::ok(pattern(SEGMENT_BYTES, 3)));
    let mut config = test_config(&origin);
    config.cmcd.enabled = false;
    config.cmsd.enabled = false;
    let gw = TestGateway::start(config).await;
    let client = client();
    for _ in 0..2 {
        let answer = request(
            &client,
            "GET",
            &gw.url("/v/seg.ts?CMCD=bl%3D4000%2Csu"),
            &[("cmcd-status", "bs")],
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("cmsd-static"), None);
        assert_eq!(answer.header("cmsd-dynamic"), None);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gw.metric("gateway_cmcd_requests_total{class=\"segment\"}")
            .await,
        0.0
    );
    // Still out of the cache key and the origin's requests.
    assert_eq!(origin.count("/v/seg.ts"), 1);
    for head in origin.heads() {
        assert!(!head.to_ascii_lowercase().contains("cmcd"), "{head}");
    }
}

#[tokio::test]
async fn an_error_answer_carries_cmsd_a_player_can_read() {
    let origin = TestOrigin::start().await;
    origin.set_down(true);
    let gw = TestGateway::start(test_config(&origin)).await;
    let answer = gw
        .get_with(
            "/v/index.m3u8",
            &[("cmcd-request", "bl=0"), ("cmcd-status", "bs")],
        )
        .await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.header("cmsd-static"), Some("ot=m,sf=h,v=1"));
    let exposed = answer.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("CMSD-Static"), "{exposed}");
    assert_eq!(
        gw.metric("gateway_cmcd_buffer_starvation_total{class=\"playlist\"}")
            .await,
        1.0
    );
}
