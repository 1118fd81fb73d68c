//! The `peer-assist node` binary against a real gateway on the demo live stream.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use gateway::{Config, Gateway};
use tokio::net::TcpListener;

async fn demo_gateway() -> std::net::SocketAddr {
    let demo = gateway::demo::spawn().await.unwrap();
    let config = Config {
        origins: vec![format!("http://{demo}/")],
        ..Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gw = Gateway::new(config).unwrap();
    tokio::spawn(gw.serve(listener, std::future::pending()));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_binary_plays_and_writes_its_json_summary() {
    let addr = demo_gateway().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_peer-assist"));
    command.args([
        "node",
        "--gateway",
        &format!("http://{addr}"),
        "--stream",
        "/demo/live/master.m3u8",
    ]);
    command
        .args(["--rendition", "1", "--duration", "7s", "--json"])
        .arg(&json);
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("the node ends after --duration")
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("missed deadlines 0"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for key in [
        "http_bytes",
        "p2p_bytes",
        "uploaded_bytes",
        "mismatches",
        "missed_deadlines",
        "segments",
    ] {
        assert!(summary[key].is_u64(), "{key} missing in {summary}");
    }
    assert!(summary["segments"].as_u64().unwrap() >= 3, "{summary}");
    assert!(summary["http_bytes"].as_u64().unwrap() > 0);
    let first = summary["log"][0]["id"].as_str().unwrap();
    assert!(
        first.starts_with("/demo/live/360p/"),
        "rendition 1 is the second variant: {first}"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_peer-assist"))
        .args([
            "node",
            "--gateway",
            "http://127.0.0.1:9",
            "--stream",
            "/x.m3u8",
            "--duration",
            "-1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--duration"));
    // The project's one duration grammar: units, combinations, plain seconds; zero is refused.
    for bad in ["0", "0s", "5x", "1M"] {
        let output = Command::new(env!("CARGO_BIN_EXE_peer-assist"))
            .args([
                "node",
                "--gateway",
                "http://127.0.0.1:9",
                "--stream",
                "/x.m3u8",
            ])
            .args(["--duration", bad])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "--duration {bad}");
        assert!(String::from_utf8_lossy(&output.stderr).contains("duration"));
    }
    let unreachable = Command::new(env!("CARGO_BIN_EXE_peer-assist"))
        .args([
            "node",
            "--gateway",
            "http://127.0.0.1:9",
            "--stream",
            "/x.m3u8",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("tracker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_policy_privacy_floor_and_opt_out() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = demo_gateway().await;
    let base = format!("http://{addr}");
    let start = |floor: usize, upload: bool| {
        let mut c = peer_assist::node::NodeConfig::new(&base, "/demo/live/master.m3u8");
        c.duration = Some(Duration::from_secs(10));
        c.privacy_floor = floor;
        c.upload = upload;
        peer_assist::node::start(c)
    };
    // Two peers, each requiring a swarm of three before uploading: nobody uploads.
    let a = start(3, true).await.unwrap();
    let b = start(3, true).await.unwrap();
    let (a, b) = (a.wait().await, b.wait().await);
    assert_eq!(
        a.uploaded_bytes + b.uploaded_bytes,
        0,
        "privacy floor: {a:?} {b:?}"
    );
    assert_eq!(a.p2p_bytes + b.p2p_bytes, 0);
    assert_eq!(
        a.missed_deadlines + b.missed_deadlines,
        0,
        "HTTP carried everything"
    );
    // One opted out: it never uploads, the other may.
    let a = start(2, false).await.unwrap();
    let b = start(2, true).await.unwrap();
    let (a, b) = (a.wait().await, b.wait().await);
    assert_eq!(a.uploaded_bytes, 0, "--no-upload never uploads");
    assert_eq!(b.p2p_bytes, 0, "nothing came from the peer that opted out");
    assert_eq!(a.missed_deadlines + b.missed_deadlines, 0);
}
