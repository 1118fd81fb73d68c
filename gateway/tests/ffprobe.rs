//! A real third-party HLS client (ffprobe/ffmpeg) reads every rendition of the demo through the gateway.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

fn tool(name: &str) -> String {
    let found = Command::new(name)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is required for this test: install Debian's ffmpeg (scripts/test does)"
    );
    name.to_owned()
}

async fn run(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("spawn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_and_ffmpeg_decode_every_demo_rendition_through_the_gateway() {
    let ffprobe = tool("ffprobe");
    let ffmpeg = tool("ffmpeg");
    let gw = support::demo_gateway().await;

    for kind in ["vod", "live"] {
        let master = gw.url(&format!("/demo/{kind}/master.m3u8"));
        let mut probe = Command::new(&ffprobe);
        probe.args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            &master,
        ]);
        let out = tokio::time::timeout(Duration::from_secs(60), run(probe))
            .await
            .expect("ffprobe in time");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ffprobe {master}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for size in ["426,240", "640,360", "854,480"] {
            assert!(
                text.contains(&format!("h264,{size}")),
                "{kind}: no {size} video in\n{text}"
            );
        }
        assert!(text.contains("aac"), "{kind}: no audio in\n{text}");

        for rendition in ["240p", "360p", "480p"] {
            let url = gw.url(&format!("/demo/{kind}/{rendition}/index.m3u8"));
            let mut decode = Command::new(&ffmpeg);
            decode.args(["-nostdin", "-v", "error", "-i", &url]);
            if kind == "live" {
                decode.args(["-t", "4"]);
            }
            decode.args(["-f", "null", "-"]);
            let out = tokio::time::timeout(Duration::from_secs(60), run(decode))
                .await
                .expect("ffmpeg in time");
            let errors = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "ffmpeg {url} failed: {errors}");
            // The live demo loops: at each loop timestamps restart, signalled by EXT-X-DISCONTINUITY.
            // ffmpeg's null muxer reports that restart when a read spans it; it is not a decode error.
            let real: Vec<&str> = errors
                .lines()
                .filter(|l| !(kind == "live" && l.contains("non monotonically increasing dts")))
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert!(
                real.is_empty(),
                "ffmpeg {url} reported decode errors:\n{errors}"
            );
        }
    }
    let hits = gw
        .metric("gateway_cache_results_total{class=\"segment\",result=\"hit\"}")
        .await;
    let misses = gw
        .metric("gateway_cache_results_total{class=\"segment\",result=\"miss\"}")
        .await;
    assert!(
        hits + misses > 0.0,
        "segments went through the gateway's cache"
    );
}

/// With signed URLs on, a token in the master playlist's URL is all a third-party player needs: the
/// playlists it is served carry the token on to every rendition, segment and key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_plays_a_protected_demo_with_a_token() {
    let ffprobe = tool("ffprobe");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("auth.keys");
    std::fs::write(&keys, "k1:00112233445566778899aabbccddeeff\n").unwrap();
    let mut config = support::demo_config().await;
    config.auth.key_file = Some(keys.clone());
    config.auth.protect = vec!["/demo/".into()];
    let gw = support::TestGateway::start(config).await;
    let token = gateway::auth::mint(
        &gateway::auth::KeySet::load(&keys).unwrap(),
        "/demo/",
        Duration::from_secs(600),
        None,
        std::time::SystemTime::now(),
    );
    for kind in ["vod", "live"] {
        let master = gw.url(&format!("/demo/{kind}/master.m3u8?token={token}"));
        let mut probe = Command::new(&ffprobe);
        probe.args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
        ]);
        probe.args(["-of", "csv=p=0", &master]);
        let out = tokio::time::timeout(Duration::from_secs(60), run(probe))
            .await
            .expect("ffprobe in time");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for size in ["426,240", "640,360", "854,480"] {
            assert!(text.contains(&format!("h264,{size}")), "{kind}: {text}");
        }
        let without = gw.get(&format!("/demo/{kind}/master.m3u8")).await;
        assert_eq!(without.status, 403);
    }
    assert_eq!(
        gw.metric("gateway_auth_denied_total{reason=\"missing\"}")
            .await,
        2.0
    );
}
