//! The live edge at once: a new segment is visible through the gateway moments after the origin
//! publishes it, and following costs at most about two origin playlist requests per segment. Loose
//! bounds here; the precise numbers are in docs/BENCHMARKS.md (scripts/bench/live-edge.sh).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{pattern, test_config, Reply, TestGateway, TestOrigin};

const SEGMENT: Duration = Duration::from_secs(1);
const WINDOW: u64 = 4;

fn playlist(newest: u64) -> String {
    let first = newest.saturating_sub(WINDOW - 1);
    let mut p = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    for s in first..=newest {
        p.push_str(&format!("#EXTINF:1.000,\n{s}.ts\n"));
    }
    p
}

fn newest_in(body: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(body)
        .lines()
        .rev()
        .find_map(|l| l.strip_suffix(".ts").and_then(|n| n.parse().ok()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_segments_are_visible_at_the_gateway_moments_after_the_origin() {
    let origin = TestOrigin::start().await;
    for s in 0..=3 {
        origin.set(&format!("/e/{s}.ts"), Reply::ok(pattern(500, s as u8)));
    }
    origin.set("/e/index.m3u8", Reply::ok(playlist(3)));
    let mut config = test_config(&origin);
    config.follower.enabled = true;
    let gw = TestGateway::start(config).await;

    // The origin publishes segment n at a known instant, off the gateway's reload phase.
    let published: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let publisher = {
        let origin_routes = origin.clone();
        let published = Arc::clone(&published);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(370)).await;
            for n in 4..=12u64 {
                origin_routes.set(&format!("/e/{n}.ts"), Reply::ok(pattern(500, n as u8)));
                origin_routes.set("/e/index.m3u8", Reply::ok(playlist(n)));
                published.lock().unwrap().insert(n, Instant::now());
                tokio::time::sleep(SEGMENT).await;
            }
        })
    };

    // A viewer polls the gateway every 20 ms and notes when each segment first shows.
    let mut seen: BTreeMap<u64, Instant> = BTreeMap::new();
    let until = Instant::now() + Duration::from_millis(9_700);
    while Instant::now() < until {
        let r = gw.get("/e/index.m3u8").await;
        assert_eq!(r.status, 200);
        if let Some(n) = newest_in(&r.body) {
            seen.entry(n).or_insert_with(Instant::now);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.await.unwrap();

    let published = published.lock().unwrap().clone();
    let delays: Vec<Duration> = (7..=12u64)
        .map(|n| {
            let at = seen
                .get(&n)
                .unwrap_or_else(|| panic!("segment {n} never showed: {seen:?}"));
            at.saturating_duration_since(published[&n])
        })
        .collect();
    eprintln!(
        "live edge: added delays {delays:?}, {} origin playlist requests",
        origin.count("/e/index.m3u8")
    );
    // Segments 4 to 6 are the follower's learning; the client rule would add 0.5 to 1 s to each.
    assert!(
        delays.iter().all(|d| *d <= Duration::from_secs(1)),
        "added delays {delays:?}"
    );
    assert!(
        median(delays.clone()) <= Duration::from_millis(400),
        "{delays:?}"
    );
    // 10 segment durations of following: about one reload per segment, two while it learns.
    let reloads = origin.count("/e/index.m3u8");
    assert!(reloads <= 2 * 10 + 3, "{reloads} origin playlist requests");
    let new = gw
        .metric("gateway_follower_reloads_total{result=\"new\"}")
        .await;
    assert!(
        new >= 9.0,
        "the follower saw each new segment itself ({new})"
    );
}
