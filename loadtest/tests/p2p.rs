//! Synthetic origin + in-process gateway (with its tracker) + viewers running real peer-assist nodes
//! in driven mode, on loopback; checks the JSON report of `--p2p ab` and of `--p2p on` with liars.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use loadtest::origin::Outages;
use loadtest::report::P2pMode;
use loadtest::run::{run, RunConfig};
use serde_json::Value;

/// The multivariant playlist URL of a synthetic origin behind a default gateway.
async fn gateway_with_origin() -> String {
    support::origin_behind_gateway(Outages::default()).await.url
}

/// Runs `config` with a JSON report and returns it parsed (and printed).
async fn run_json(name: &str, config: RunConfig) -> (Value, String) {
    let json =
        std::env::temp_dir().join(format!("loadtest-p2p-{name}-{}.json", std::process::id()));
    let report = run(RunConfig {
        json: Some(json.clone()),
        ..config
    })
    .await
    .unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    println!("{text}");
    print!("{}", loadtest::report::render_summary(&report, false));
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value, serde_json::to_value(&report).unwrap());
    (value, text)
}

fn number(value: &Value, pointer: &str, text: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {text}"))
}

/// With ABR (no `--rendition`) every P2P viewer starts low and climbs; its node follows it from
/// swarm to swarm, and peers still serve verified bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abr_viewers_take_their_nodes_from_swarm_to_swarm() {
    let url = gateway_with_origin().await;
    let (value, text) = run_json(
        "abr",
        RunConfig {
            url,
            viewers: 4,
            duration: Duration::from_secs(24),
            ramp: Duration::from_secs(2),
            p2p: P2pMode::On,
            ..RunConfig::default()
        },
    )
    .await;
    let f = |pointer: &str| number(&value, pointer, &text);
    assert_eq!(value["rendition"], Value::Null, "ABR: {text}");
    assert!(
        f("/rendition_switches") >= 4.0,
        "every viewer climbs: {text}"
    );
    assert!(f("/bytes/peer") > 0.0, "{text}");
    assert_eq!(value["corrupted_accepted"], 0, "{text}");
    assert_eq!(value["mismatches"], 0, "{text}");
    assert_eq!(value["failures"], 0, "{text}");
    assert!(f("/stall_ratio") <= 0.02, "{text}");
    assert!(f("/upload_ratio/max") > 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ab_cohorts_on_one_stream() {
    let url = gateway_with_origin().await;
    let (value, text) = run_json(
        "ab",
        RunConfig {
            url,
            viewers: 8,
            duration: Duration::from_secs(24),
            ramp: Duration::from_secs(2),
            rendition: Some(1),
            p2p: P2pMode::Ab,
            ..RunConfig::default()
        },
    )
    .await;
    let f = |pointer: &str| number(&value, pointer, &text);
    assert_eq!(value["p2p"], "ab", "{text}");
    assert_eq!(value["rendition"], 1, "{text}");
    assert_eq!(value["cohorts"]["p2p"]["viewers"], 4, "{text}");
    assert_eq!(value["cohorts"]["http"]["viewers"], 4, "{text}");
    let offload = f("/cohorts/p2p/offload_ratio");
    println!("measured offload (ab, 4 P2P viewers of one swarm): {offload}");
    assert!(offload >= 0.3, "offload {offload}: {text}");
    assert_eq!(f("/offload_ratio"), offload, "{text}");
    assert_eq!(f("/cohorts/http/offload_ratio"), 0.0, "{text}");
    assert_eq!(value["corrupted_accepted"], 0, "{text}");
    assert_eq!(value["mismatches"], 0, "{text}");
    assert_eq!(value["liars"], 0, "{text}");
    assert_eq!(value["node_start_failures"], 0, "{text}");
    assert_eq!(value["nodes_lost"], 0, "{text}");
    for cohort in ["p2p", "http"] {
        assert!(
            f(&format!("/cohorts/{cohort}/stall_ratio")) <= 0.02,
            "{cohort}: {text}"
        );
        assert_eq!(value["cohorts"][cohort]["failures"], 0, "{cohort}: {text}");
        assert_eq!(
            value["cohorts"][cohort]["startup_failures"], 0,
            "{cohort}: {text}"
        );
        assert!(
            f(&format!("/cohorts/{cohort}/segments")) >= 4.0 * 5.0,
            "{text}"
        );
    }
    // Both cohorts play the same fixed rendition (800k; BANDWIDTH 880000 in the playlist).
    assert_eq!(
        f("/cohorts/p2p/average_bitrate"),
        f("/cohorts/http/average_bitrate"),
        "{text}"
    );
    assert!(f("/average_bitrate") > 800_000.0, "{text}");
    assert!(f("/cohorts/p2p/bytes/peer") > 0.0, "{text}");
    assert_eq!(f("/cohorts/http/bytes/peer"), 0.0, "{text}");
    assert!(f("/uploaded_bytes") > 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn liars_never_get_corrupt_segments_accepted() {
    let url = gateway_with_origin().await;
    let (value, text) = run_json(
        "liars",
        RunConfig {
            url,
            viewers: 8,
            duration: Duration::from_secs(24),
            ramp: Duration::from_secs(2),
            rendition: Some(1),
            p2p: P2pMode::On,
            liars: 0.25,
            ..RunConfig::default()
        },
    )
    .await;
    let f = |pointer: &str| number(&value, pointer, &text);
    assert_eq!(value["p2p"], "on", "{text}");
    assert_eq!(value["viewers"], 8, "{text}");
    assert_eq!(value["liars"], 2, "{text}");
    assert!(value.get("cohorts").is_none(), "{text}");
    assert_eq!(value["corrupted_accepted"], 0, "{text}");
    println!(
        "measured offload (on, 8 viewers, 2 liars): {}; mismatches {}",
        f("/offload_ratio"),
        f("/mismatches")
    );
    // Liars may never be asked; when they were, every lie was caught and fell back.
    if f("/mismatches") > 0.0 {
        assert!(f("/fallbacks/mismatch") > 0.0, "{text}");
    }
    assert!(f("/stall_ratio") <= 0.02, "{text}");
    assert_eq!(value["startup_failures"], 0, "{text}");
}
