//! CMCD in, CMSD out: what players say about themselves (CTA-5004, in the query or in headers)
//! becomes metrics by object class and never reaches the cache key or the origin; every answer
//! says what the object is (`CMSD-Static`) and, once the connection carried a body, the
//! gateway's throughput estimate to this client (`CMSD-Dynamic: "gateway";etp=…`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{client, pattern, request, test_config, Reply, TestGateway, TestOrigin};

const VOD: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n";

#[tokio::test]
async fn cmcd_becomes_metrics_and_stays_out_of_the_cache_key_and_the_origin() {
    let origin = TestOrigin::start().await;
    origin.set("/v/index.m3u8", Reply::ok(VOD));
    origin.set("/v/seg.ts", Reply::ok(pattern(2 * 1024 * 1024, 7)));
    let gw = TestGateway::start(test_config(&origin)).await;
    let client = client();
    let get = |path: &str, headers: &'static [(&'static str, &'static str)]| {
        let url = gw.url(path);
        let client = client.clone();
        async move { request(&client, "GET", &url, headers).await }
    };

    let playlist = get("/v/index.m3u8?CMCD=ot%3Dm%2Csu%2Csid%3D%22abc%22", &[]).await;
    assert_eq!(playlist.status, 200);
    assert_eq!(playlist.header("cmsd-static"), Some("ot=m,sf=h,st=v,v=1"));
    // In the query: buffer 4 s, throughput 25 Mbit/s, starting, rebuffered.
    let first = get(
        "/v/seg.ts?CMCD=bl%3D4000%2Cmtp%3D25000%2Cot%3Dav%2Csu%2Cbs",
        &[],
    )
    .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cmsd-static"), Some("ot=av,sf=h,st=v,v=1"));
    let exposed = first.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("CMSD-Static") && exposed.contains("CMSD-Dynamic"));
    // In headers, on the same connection, after the 2 MiB body went out: the edge has an estimate.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = get(
        "/v/seg.ts",
        &[
            ("cmcd-request", "bl=1500,mtp=800"),
            ("cmcd-session", "sid=\"abc\",sf=h"),
        ],
    )
    .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    let dynamic = second.header("cmsd-dynamic").unwrap();
    let etp: u64 = dynamic
        .strip_prefix("\"gateway\";etp=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(etp > 1000, "{dynamic}");
    // Malformed: counted, otherwise ignored.
    let bad = get("/v/seg.ts?CMCD=bl%3Dlots", &[]).await;
    assert_eq!(bad.status, 200);

    let m = |series: &'static str| gw.metric(series);
    assert_eq!(
        m("gateway_cmcd_requests_total{class=\"segment\"}").await,
        2.0
    );
    assert_eq!(
        m("gateway_cmcd_requests_total{class=\"vod_media\"}").await,
        1.0
    );
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
    assert_eq!(
        m("gateway_cmcd_buffer_length_seconds_sum{class=\"segment\"}").await,
        5.5
    );
    assert_eq!(
        m("gateway_cmcd_buffer_length_seconds_count{class=\"segment\"}").await,
        2.0
    );
    assert_eq!(
        m("gateway_cmcd_throughput_bits_per_second_sum{class=\"segment\"}").await,
        25_800_000.0
    );
    assert_eq!(m("gateway_cmcd_invalid_total").await, 1.0);
    // One cache key for all spellings: one origin fetch each, and no CMCD ever reached it.
    assert_eq!(origin.count("/v/seg.ts"), 1);
    assert_eq!(origin.count("/v/index.m3u8"), 1);
    for target in origin.targets() {
        assert!(!target.to_ascii_lowercase().contains("cmcd"), "{target}");
    }
}
