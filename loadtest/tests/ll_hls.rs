//! LL-HLS at the edge: the synthetic origin in LL-HLS mode (1 s segments, 250 ms parts, blocking
//! reloads) behind an in-process gateway with default settings, on loopback. Each rule of blocking
//! playlist reloads (RFC 8216bis §6.2.5.2) as the gateway applies it, the one origin request that
//! every holder of a reload shares, the preload-hinted part fetched once, delta updates and a
//! player switching rendition by its rendition report.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use loadtest::origin::{serve_with, OriginStats, Outages, SyntheticStream};
use peer_assist::hls::{MediaPlaylist, Playlist};
use tokio::net::TcpListener;

const SEGMENT: Duration = Duration::from_secs(1);
const PART: Duration = Duration::from_millis(250);
const PARTS_PER_SEGMENT: u64 = 4;

struct Stack {
    gateway: SocketAddr,
    stream: SyntheticStream,
    stats: Arc<OriginStats>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

struct Got {
    status: u16,
    body: Bytes,
    /// When the answer's last byte arrived.
    done: Instant,
}

impl Stack {
    async fn start(outages: Outages) -> Stack {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let stream = SyntheticStream {
            bitrates: vec![300_000, 800_000],
            segment_duration: SEGMENT,
            part: Some(PART),
            live_window: 12,
            // Far enough back that the window is full.
            epoch: SystemTime::now() - Duration::from_secs(30),
            ..SyntheticStream::default()
        };
        stream.validate().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = listener.local_addr().unwrap();
        let stats = Arc::new(OriginStats::default());
        tokio::spawn(serve_with(
            Arc::new(stream.clone()),
            listener,
            Arc::clone(&stats),
            outages,
        ));
        let config = gateway::Config {
            origins: vec![format!("http://{origin}/")],
            ..Default::default()
        };
        let gateway = gateway::Gateway::new(config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(gateway.serve(listener, std::future::pending()));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1000)
            .build_http();
        Stack {
            gateway: addr,
            stream,
            stats,
            client,
        }
    }

    async fn get(&self, path: &str) -> Got {
        let url: http::Uri = format!("http://{}{path}", self.gateway).parse().unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.get(url))
            .await
            .unwrap()
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Got {
            status,
            body,
            done: Instant::now(),
        }
    }

    async fn playlist(&self, path: &str) -> MediaPlaylist {
        let got = self.get(path).await;
        assert_eq!(got.status, 200, "{path}");
        media(&got.body)
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.body;
        let text = String::from_utf8_lossy(&text).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

fn media(body: &[u8]) -> MediaPlaylist {
    match peer_assist::hls::parse(body).unwrap() {
        Playlist::Media(m) => m,
        Playlist::Multivariant(_) => panic!("a multivariant playlist"),
    }
}

const R0: &str = "/synthetic/r0/index.m3u8";

/// The next part after the newest one a playlist lists: (msn, part index).
fn next_part(m: &MediaPlaylist) -> (u64, u64) {
    (m.next_sequence(), m.trailing_parts.len() as u64)
}

/// Whether the playlist lists part `part` of segment `msn` (or anything later).
fn contains(m: &MediaPlaylist, (msn, part): (u64, u64)) -> bool {
    let (next, parts) = next_part(m);
    msn < next || (msn == next && part < parts)
}

/// When part `part` of segment `msn` is complete at the origin.
fn due(stream: &SyntheticStream, (msn, part): (u64, u64)) -> SystemTime {
    stream.epoch + SEGMENT * u32::try_from(msn).unwrap() + PART * u32::try_from(part + 1).unwrap()
}

/// Follows the rendition through the gateway and waits until the follower has switched to
/// blocking reloads.
async fn followed(stack: &Stack) -> MediaPlaylist {
    let first = stack.playlist(R0).await;
    assert!(first.server_control.can_block_reload);
    assert_eq!(first.part_target, Some(PART));
    tokio::time::sleep(SEGMENT).await;
    stack.playlist(R0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_reload_is_answered_when_its_part_exists() {
    let stack = Stack::start(Outages::default()).await;
    let mut late = Vec::new();
    for _ in 0..6 {
        let newest = followed(&stack).await;
        // The next part the gateway lists may already exist at the origin (the follower learns
        // of a part only after it is made), and on a loaded machine the follower can see it
        // before our request arrives, which is then rightly answered at once. Ask for the first
        // part that is still at least a quarter part away, so the gateway must hold every one.
        let mut want = next_part(&newest);
        while due(&stack.stream, want) < SystemTime::now() + PART / 4 {
            want = if want.1 + 1 < PARTS_PER_SEGMENT {
                (want.0, want.1 + 1)
            } else {
                (want.0 + 1, 0)
            };
        }
        let path = format!("{R0}?_HLS_msn={}&_HLS_part={}", want.0, want.1);
        let got = stack.get(&path).await;
        let done = SystemTime::now();
        assert_eq!(got.status, 200);
        let answer = media(&got.body);
        assert!(contains(&answer, want), "{want:?} not in the answer");
        let due = due(&stack.stream, want);
        // Never before the part exists; soon after.
        assert!(done >= due, "answered before the part was due");
        late.push(done.duration_since(due).unwrap());
    }
    late.sort();
    println!("blocking reloads answered after their part was due: {late:?}");
    assert!(
        late[late.len() / 2] <= Duration::from_millis(150),
        "{late:?}"
    );
    assert_eq!(
        stack
            .metric("gateway_blocking_reloads_total{result=\"held\"}")
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reloads_too_far_ahead_or_malformed_are_400() {
    let stack = Stack::start(Outages::default()).await;
    let newest = followed(&stack).await;
    let (next, _) = next_part(&newest);
    // Far enough that the follower's copy moving on by a segment meanwhile changes nothing.
    for query in [
        format!("_HLS_msn={}", next + 3),
        format!("_HLS_msn={}&_HLS_part=40", next + 1),
        "_HLS_part=1".to_owned(),
        "_HLS_msn=abc".to_owned(),
        "_HLS_msn=-1".to_owned(),
        format!("_HLS_msn={next}&_HLS_skip=MAYBE"),
    ] {
        let got = stack.get(&format!("{R0}?{query}")).await;
        assert_eq!(got.status, 400, "{query}");
    }
    // Two segments beyond the last whole one is still fine: held, then answered.
    let got = stack.get(&format!("{R0}?_HLS_msn={}", next + 1)).await;
    assert_eq!(got.status, 200);
    assert!(contains(&media(&got.body), (next + 1, 99)));
    // An old one is answered at once with the newest copy.
    let asked = Instant::now();
    let got = stack.get(&format!("{R0}?_HLS_msn={}", next - 3)).await;
    assert_eq!(got.status, 200);
    assert!(got.done - asked < Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_the_origin_cannot_satisfy_ends_in_503_after_three_target_durations() {
    // The origin goes away 4 s after it starts, for 10 s.
    let stack = Stack::start(Outages(vec![(
        Duration::from_secs(4),
        Duration::from_secs(10),
    )]))
    .await;
    followed(&stack).await;
    // The origin is gone from 4 s on; the follower's copy stops there.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (next, parts) = next_part(&stack.playlist(R0).await);
    // Still within the limits, but never coming while the origin is down.
    let asked = Instant::now();
    let got = stack
        .get(&format!("{R0}?_HLS_msn={}&_HLS_part={}", next, parts + 1))
        .await;
    let held = got.done - asked;
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    // Three target durations (1 s), give or take.
    assert!(
        held >= Duration::from_millis(2900) && held < Duration::from_millis(4500),
        "{held:?}"
    );
    assert!(
        stack
            .metric("gateway_blocking_reloads_total{result=\"timeout\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_holders_of_one_reload_cost_one_origin_request() {
    let stack = Stack::start(Outages::default()).await;
    let newest = followed(&stack).await;
    // Ask for the part after next, so that every holder is in place before it exists.
    let (msn, part) = next_part(&newest);
    let want = (msn, part + 1);
    let before = stack.stats.blocking_requests.load(Ordering::Relaxed);
    let path = format!("{R0}?_HLS_msn={}&_HLS_part={}", want.0, want.1);
    let holders: Vec<_> = (0..500)
        .map(|_| {
            let stack_client = stack.client.clone();
            let url: http::Uri = format!("http://{}{path}", stack.gateway).parse().unwrap();
            tokio::spawn(async move {
                let response = stack_client.get(url).await.unwrap();
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    for holder in holders {
        let (status, body) = holder.await.unwrap();
        assert_eq!(status, 200);
        assert!(contains(&media(&body), want));
    }
    let after = stack.stats.blocking_requests.load(Ordering::Relaxed);
    // The follower asks for each next part once, and its request for the next part was already
    // held at the origin when the viewers came: one more request brought the part they held for
    // (a second may start before the last holder is answered).
    println!(
        "origin blocking requests while 500 viewers held: {}",
        after - before
    );
    assert!(after - before <= 2, "{} origin requests", after - before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preload_hinted_part_is_fetched_once_and_streamed_to_every_viewer() {
    let stack = Stack::start(Outages::default()).await;
    let newest = followed(&stack).await;
    let hint = newest.preload_hints.first().unwrap().uri.clone();
    let path = format!("/synthetic/r0/{hint}");
    let (msn, part) = {
        let (m, p) = hint.trim_end_matches(".ts").split_once('.').unwrap();
        (m.parse::<u64>().unwrap(), p.parse::<u64>().unwrap())
    };
    let gets: Vec<_> = (0..20)
        .map(|_| {
            let client = stack.client.clone();
            let url: http::Uri = format!("http://{}{path}", stack.gateway).parse().unwrap();
            tokio::spawn(async move {
                let response = client.get(url).await.unwrap();
                let status = response.status().as_u16();
                (
                    status,
                    response.into_body().collect().await.unwrap().to_bytes(),
                )
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for get in gets {
        let (status, body) = get.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    let whole = stack.stream.segment(0, msn);
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    assert!(!bodies[0].is_empty());
    // The part is its slice of the segment.
    assert!(
        whole.windows(bodies[0].len()).any(|w| w == &bodies[0][..]),
        "part {part}"
    );
    let asked = stack
        .stats
        .per_part
        .lock()
        .unwrap()
        .get(&(0, 0, msn, part))
        .copied();
    assert_eq!(
        asked,
        Some(1),
        "the hinted part was asked of the origin once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_updates_and_rendition_switches_pass_through() {
    let stack = Stack::start(Outages::default()).await;
    let newest = followed(&stack).await;
    let want = next_part(&newest);
    let got = stack
        .get(&format!(
            "{R0}?_HLS_msn={}&_HLS_part={}&_HLS_skip=YES",
            want.0, want.1
        ))
        .await;
    assert_eq!(got.status, 200);
    let delta = media(&got.body);
    assert!(
        delta.skipped_segments > 0,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    assert!(contains(&delta, want));

    // A player switching to the other rendition asks for what its rendition report names.
    let report = newest
        .rendition_reports
        .iter()
        .find(|r| r.uri.contains("r1"))
        .unwrap()
        .clone();
    let (msn, part) = (report.last_msn.unwrap(), report.last_part.unwrap());
    let asked = Instant::now();
    let got = stack
        .get(&format!(
            "/synthetic/r1/index.m3u8?_HLS_msn={msn}&_HLS_part={}",
            part + 1
        ))
        .await;
    assert_eq!(got.status, 200);
    assert!(contains(&media(&got.body), (msn, part + 1)));
    assert!(got.done - asked < SEGMENT, "{:?}", got.done - asked);
    // Then it is followed, and its next reload is held at the gateway.
    let got = stack
        .get(&format!("/synthetic/r1/index.m3u8?_HLS_msn={}", msn + 1))
        .await;
    assert_eq!(got.status, 200);
}

/// The harness's player model through the gateway: LL-HLS viewers (blocking reloads, parts at the
/// edge) against classic viewers of the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_viewers_play_at_low_latency_with_blocking_reloads() {
    let stack = Stack::start(Outages::default()).await;
    let play = |low_latency: bool| {
        let player = loadtest::player::PlayerConfig {
            low_latency,
            ..Default::default()
        };
        loadtest::run::RunConfig {
            url: format!("http://{}/synthetic/master.m3u8", stack.gateway),
            viewers: 4,
            duration: Duration::from_secs(8),
            player,
            progress: false,
            ..loadtest::run::RunConfig::default()
        }
    };
    let low = loadtest::run::run(play(true)).await.unwrap();
    let classic = loadtest::run::run(play(false)).await.unwrap();
    let latency = |r: &loadtest::report::Report| r.qoe.live_latency_ms.p50.unwrap();
    println!(
        "live latency p50: low latency {:.0} ms (p95 {:?}), classic {:.0} ms; stalls {} / {}",
        latency(&low),
        low.qoe.live_latency_ms.p95,
        latency(&classic),
        low.qoe.stalls,
        classic.qoe.stalls
    );
    assert_eq!(low.qoe.startup_failures, 0);
    assert_eq!(low.qoe.failures, 0, "{:?}", low.http_errors);
    assert_eq!(low.qoe.stalls, 0);
    assert!(latency(&low) < 2000.0, "{}", latency(&low));
    assert!(latency(&classic) > latency(&low) + 1000.0);
    assert!(
        stack
            .metric("gateway_blocking_reloads_total{result=\"held\"}")
            .await
            > 20.0
    );
}
