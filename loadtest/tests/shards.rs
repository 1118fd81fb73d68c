//! A run split in two shards (`--shard 0/2`, `--shard 1/2`) played side by side against one
//! gateway, then merged (`loadtest merge`, the binary): the merged report is the whole run's.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use loadtest::origin::Outages;
use loadtest::run::{run, RunConfig};
use loadtest::shard::{Shard, ShardData};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_merge_into_the_whole_run() {
    let stack = support::origin_behind_gateway(Outages::default()).await;
    let dir = std::env::temp_dir().join(format!("loadtest-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |index| RunConfig {
        url: format!("http://{}/synthetic/master.m3u8", stack.gateway),
        viewers: 20,
        duration: Duration::from_secs(12),
        ramp: Duration::from_secs(2),
        gateway_metrics: Some(format!("http://{}/metrics", stack.gateway)),
        json: Some(dir.join(format!("shard-{index}.json"))),
        shard: Some(Shard { index, of: 2 }),
        ..RunConfig::default()
    };
    let (a, b) = tokio::join!(run(config(0)), run(config(1)));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.viewers, b.viewers), (10, 10), "each shard plays half");
    let numbers = |r: &loadtest::report::Report| -> Vec<usize> {
        r.shard
            .as_ref()
            .unwrap()
            .sessions
            .iter()
            .map(|s| s.number)
            .collect()
    };
    assert_eq!(numbers(&a), [0, 1, 4, 5, 8, 9, 12, 13, 16, 17]);
    assert_eq!(numbers(&b), [2, 3, 6, 7, 10, 11, 14, 15, 18, 19]);

    // The JSON files carry the raw inputs; merged, they give the whole run.
    let shards: Vec<ShardData> = [0, 1]
        .iter()
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("shard-{i}.json"))).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            serde_json::from_value(value["shard"].clone()).unwrap()
        })
        .collect();
    let merged = loadtest::shard::merge(&shards).unwrap();
    assert_eq!(merged.viewers, 20);
    assert_eq!(merged.segments, a.segments + b.segments);
    assert_eq!(merged.qoe.bytes.http, a.qoe.bytes.http + b.qoe.bytes.http);
    assert_eq!(merged.qoe.startup_failures, 0);
    assert!(merged.qoe.startup_ms.p50.is_some());
    let peak = merged.timeline.iter().map(|s| s.active).max().unwrap();
    assert!(peak >= 18, "both shards' viewers at once: {peak}");
    assert!(merged.origin_requests_per_segment.is_some());

    // The binary does the same, and refuses a missing shard.
    let bin = env!("CARGO_BIN_EXE_loadtest");
    let out = dir.join("merged.json");
    let status = std::process::Command::new(bin)
        .arg("merge")
        .arg(dir.join("shard-0.json"))
        .arg(dir.join("shard-1.json"))
        .arg("--json")
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(value["viewers"], 20);
    assert_eq!(value["shards"], 2);
    assert_eq!(value["params"]["viewers"], 20);
    assert_eq!(value["segments"], serde_json::json!(merged.segments));
    let alone = std::process::Command::new(bin)
        .arg("merge")
        .arg(dir.join("shard-0.json"))
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(2));
    let message = String::from_utf8_lossy(&alone.stderr);
    assert!(message.contains("shard 1/2 is missing"), "{message}");
    // A live start outside 1..=30 target durations is refused before anything runs.
    let refused = std::process::Command::new(bin)
        .args([
            "run",
            "--url",
            "http://127.0.0.1:9/x.m3u8",
            "--viewers",
            "1",
        ])
        .args(["--duration", "1s", "--live-start", "0"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--live-start"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}
