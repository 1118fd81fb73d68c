//! Scenario: a synthetic origin with an outage window (6 s + 4 s) behind the gateway, 10 HTTP
//! viewers for 20 s. The run must complete on time and the origin must have rejected requests.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use loadtest::origin::Outages;
use loadtest::run::{run, RunConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_outage_through_the_gateway() {
    let outages = Outages(vec![Outages::parse_window("6s+4s").unwrap()]);
    let stack = support::origin_behind_gateway(outages).await;
    let (gateway_addr, origin_stats) = (stack.gateway, stack.origin_stats);

    let json = std::env::temp_dir().join(format!("loadtest-outage-{}.json", std::process::id()));
    let began = Instant::now();
    let report = run(RunConfig {
        url: format!("http://{gateway_addr}/synthetic/master.m3u8"),
        viewers: 10,
        duration: Duration::from_secs(20),
        ramp: Duration::from_secs(1),
        json: Some(json.clone()),
        ..RunConfig::default()
    })
    .await
    .unwrap();
    let took = began.elapsed();

    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    println!("{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["viewers"], 10, "{text}");
    assert!(value["failures"].as_u64().is_some(), "{text}");
    assert!(value["stalls"].as_u64().is_some(), "{text}");
    assert!(report.duration_s <= 23.0, "{text}");
    assert!(took < Duration::from_secs(24), "{took:?}");
    let rejected = origin_stats.outage_rejections.load(Ordering::Relaxed);
    println!("origin outage rejections: {rejected}");
    assert!(
        rejected > 0,
        "the origin rejected nothing during its outage"
    );
}
