//! Signed URLs against a real origin: every kind of bad token is a 403 (with CORS) for playlists,
//! segments, keys, digests and swarms; a valid one plays, its playlists carry it on; it never
//! reaches the origin or a cache key; keys rotate.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use gateway::auth::{self, Claims, KeySet};
use serde_json::{json, Value};
use support::{pattern, Reply, TestGateway, TestOrigin};
use tokio_tungstenite::tungstenite::Message;

const KEY_OLD: &str = "old:000102030405060708090a0b0c0d0e0f";
const KEY_NEW: &str = "new:101112131415161718191a1b1c1d1e1f";
const STRANGER: &str = "new:ffffffffffffffffffffffffffffffff";

const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:6\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=300000,AUDIO=\"a\"\nv/index.m3u8\n";

const MEDIA: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MAP:URI=\"init.mp4\"\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"../keys/k1\",IV=0x1\n#EXTINF:2.0,\n0.m4s\n\
#EXT-X-PART:DURATION=0.5,URI=\"1.0.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"1.1.m4s\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=0\n#EXTINF:2.0,\nhttps://cdn.example/1.m4s\n";

struct Stack {
    origin: TestOrigin,
    gw: TestGateway,
    _dir: tempfile::TempDir,
    key_file: std::path::PathBuf,
}

async fn stack(keys: &str) -> Stack {
    let origin = TestOrigin::start().await;
    origin.set("/s/master.m3u8", Reply::ok(MASTER));
    origin.set("/s/v/index.m3u8", Reply::ok(MEDIA));
    origin.set("/s/audio/index.m3u8", Reply::ok(MEDIA));
    for name in ["init.mp4", "0.m4s", "1.0.m4s", "1.1.m4s"] {
        origin.set(&format!("/s/v/{name}"), Reply::ok(pattern(3000, 7)));
    }
    origin.set("/s/keys/k1", Reply::ok(pattern(16, 1)));
    origin.set("/open/a.ts", Reply::ok(pattern(100, 2)));
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("auth.keys");
    std::fs::write(&key_file, keys).unwrap();
    let mut config = support::test_config(&origin);
    config.auth.key_file = Some(key_file.clone());
    config.auth.protect = vec!["/s/".into()];
    let gw = TestGateway::start(config).await;
    Stack {
        origin,
        gw,
        _dir: dir,
        key_file,
    }
}

fn token(keys: &str, prefix: &str, ttl: Duration) -> String {
    auth::mint(
        &KeySet::parse(keys).unwrap(),
        prefix,
        ttl,
        None,
        SystemTime::now(),
    )
}

/// Every way a token can be wrong, with the reason label it is counted under.
fn bad_tokens() -> Vec<(String, &'static str)> {
    let keys = format!("{KEY_OLD}\n{KEY_NEW}\n");
    let good = token(&keys, "/s/", Duration::from_secs(600));
    let parts: Vec<&str> = good.split('.').collect();
    let expired = auth::sign(
        &Claims {
            kid: "new".into(),
            expires: 1_000,
            prefix: "/s/".into(),
            binding: None,
        },
        KeySet::parse(&keys).unwrap().get("new").unwrap(),
    );
    vec![
        ("".into(), "missing"),
        ("garbage".into(), "malformed"),
        (expired, "expired"),
        (
            format!(
                "v1.new.{}.{}.{}.{}",
                u64::MAX / 2,
                parts[3],
                parts[4],
                parts[5]
            ),
            "bad_signature",
        ),
        (
            token(&keys, "/other/", Duration::from_secs(600)),
            "wrong_prefix",
        ),
        (
            token(STRANGER, "/s/", Duration::from_secs(600)),
            "bad_signature",
        ),
        (good.replacen("v1.new.", "v1.gone.", 1), "unknown_key"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_everywhere_with_cors() {
    let s = stack(&format!("{KEY_OLD}\n{KEY_NEW}\n")).await;
    for (bad, reason) in bad_tokens() {
        let query = if bad.is_empty() {
            String::new()
        } else {
            format!("?token={bad}")
        };
        for path in [
            "/s/master.m3u8",
            "/s/v/index.m3u8",
            "/s/v/0.m4s",
            "/s/keys/k1",
            "/p2p/v1/digests/s/master.m3u8/0",
            // Another spelling of a protected path is still protected.
            "/%73/v/0.m4s",
            "/s//v/0.m4s",
        ] {
            let r = s.gw.get(&format!("{path}{query}")).await;
            assert_eq!(r.status, 403, "{path} with a {reason} token");
            assert_eq!(r.header("access-control-allow-origin"), Some("*"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
        let counted =
            s.gw.metric(&format!("gateway_auth_denied_total{{reason=\"{reason}\"}}"))
                .await;
        assert!(counted >= 7.0, "{reason}: {counted}");
    }
    assert_eq!(s.origin.total(), 0, "nothing refused reached the origin");
    // Unprotected paths need nothing.
    assert_eq!(s.gw.get("/open/a.ts").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_plays_and_playlists_carry_it_on() {
    let keys = format!("{KEY_OLD}\n{KEY_NEW}\n");
    let s = stack(&keys).await;
    let t = token(&keys, "/s/", Duration::from_secs(600));
    let master = s.gw.get(&format!("/s/master.m3u8?token={t}")).await;
    assert_eq!(master.status, 200);
    let text = master.text();
    assert!(
        text.contains(&format!("URI=\"audio/index.m3u8?token={t}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\nv/index.m3u8?token={t}\n")),
        "{text}"
    );
    let media = s.gw.get(&format!("/s/v/index.m3u8?token={t}")).await.text();
    for carried in [
        format!("URI=\"init.mp4?token={t}\""),
        format!("URI=\"../keys/k1?token={t}\",IV=0x1"),
        format!("\n0.m4s?token={t}\n"),
        format!("URI=\"1.0.m4s?token={t}\""),
        format!("URI=\"1.1.m4s?token={t}\""),
        format!("URI=\"../audio/index.m3u8?token={t}\",LAST-MSN=0"),
    ] {
        assert!(media.contains(&carried), "{carried} in {media}");
    }
    assert!(
        media.contains("\nhttps://cdn.example/1.m4s\n"),
        "another host never gets the token: {media}"
    );
    // Every URI the player follows is served.
    for path in ["/s/v/init.mp4", "/s/v/0.m4s", "/s/keys/k1", "/s/v/1.0.m4s"] {
        assert_eq!(
            s.gw.get(&format!("{path}?token={t}")).await.status,
            200,
            "{path}"
        );
    }
    // A token in a cookie works too, and then playlists are served as the origin wrote them.
    let cookie = format!("token={t}");
    let r =
        s.gw.get_with("/s/v/index.m3u8", &[("cookie", &cookie)])
            .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), MEDIA);
    // The token is never part of what the origin is asked.
    assert_eq!(
        s.origin
            .targets()
            .iter()
            .filter(|t| t.contains("token"))
            .count(),
        0
    );
    // Nor of a cache key: another viewer's token hits the same entry.
    let other = token(&keys, "/s/", Duration::from_secs(300));
    let before = s.origin.count("/s/v/0.m4s");
    let r = s.gw.get(&format!("/s/v/0.m4s?token={other}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(s.origin.count("/s/v/0.m4s"), before);
    // A rewritten playlist has its own validator, and revalidates.
    let r = s.gw.get(&format!("/s/v/index.m3u8?token={t}")).await;
    let etag = r.header("etag").unwrap().to_owned();
    assert_ne!(
        Some(etag.as_str()),
        s.gw.get_with("/s/v/index.m3u8", &[("cookie", &cookie)])
            .await
            .header("etag")
    );
    let again =
        s.gw.get_with(
            &format!("/s/v/index.m3u8?token={t}"),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart() {
    let s = stack(&format!("{KEY_OLD}\n")).await;
    let old = token(KEY_OLD, "/s/", Duration::from_secs(600));
    assert_eq!(
        s.gw.get(&format!("/s/v/0.m4s?token={old}")).await.status,
        200
    );
    let new = token(
        &format!("{KEY_OLD}\n{KEY_NEW}\n"),
        "/s/",
        Duration::from_secs(600),
    );
    assert!(new.starts_with("v1.new."), "the last key signs: {new}");
    assert_eq!(
        s.gw.get(&format!("/s/v/0.m4s?token={new}")).await.status,
        403
    );
    // The operator appends the new key: the gateway picks the file up by itself.
    std::fs::write(&s.key_file, format!("{KEY_OLD}\n{KEY_NEW}\n")).unwrap();
    let path = format!("/s/v/0.m4s?token={new}");
    let accepted = support::wait_until_async(
        || async { s.gw.get(&path).await.status == 200 },
        Duration::from_secs(5),
    )
    .await;
    assert!(accepted, "the new key verifies after the file changed");
    assert_eq!(
        s.gw.get(&format!("/s/v/0.m4s?token={old}")).await.status,
        200,
        "the old key still verifies"
    );
    // A broken file keeps the keys in use.
    std::fs::write(&s.key_file, "not a key file\n").unwrap();
    let counted = support::wait_until_async(
        || async {
            s.gw.metric("gateway_reloads_total{result=\"error\",what=\"auth_keys\"}")
                .await
                >= 1.0
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(counted);
    assert_eq!(s.gw.get(&path).await.status, 200);
}

async fn ws(
    gw: &TestGateway,
    query: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    let url = format!("ws://{}/p2p/v1/ws?stream=/s/master.m3u8{query}", gw.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

fn join(token: Option<&str>) -> String {
    let mut j = json!({
        "type": "join", "v": 1, "stream": "/s/master.m3u8", "rendition": 0,
        "capabilities": { "transports": ["webrtc"], "upload": true }
    });
    if let Some(t) = token {
        j["token"] = json!(t);
    }
    j.to_string()
}

async fn first_message(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer");
        if let Some(Ok(Message::Text(text))) = next {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarms_of_a_protected_stream_need_a_token() {
    let keys = format!("{KEY_OLD}\n{KEY_NEW}\n");
    let s = stack(&keys).await;
    let good = token(&keys, "/s/", Duration::from_secs(600));
    // A bad token on the URL: no socket at all.
    for (bad, _) in bad_tokens().into_iter().skip(1) {
        assert_eq!(ws(&s.gw, &format!("&token={bad}")).await.err(), Some(403));
    }
    // No token anywhere, or a bad one in join: unauthorized.
    for token in [None, Some("garbage".to_owned())] {
        let mut socket = ws(&s.gw, "").await.unwrap();
        socket
            .send(Message::text(join(token.as_deref())))
            .await
            .unwrap();
        let m = first_message(&mut socket).await;
        assert_eq!(m["type"], "error", "{m}");
        assert_eq!(m["code"], "unauthorized", "{m}");
    }
    // A good token, on the URL or in join.
    let mut socket = ws(&s.gw, &format!("&token={good}")).await.unwrap();
    socket.send(Message::text(join(None))).await.unwrap();
    assert_eq!(first_message(&mut socket).await["type"], "welcome");
    let mut socket = ws(&s.gw, "").await.unwrap();
    socket.send(Message::text(join(Some(&good)))).await.unwrap();
    assert_eq!(first_message(&mut socket).await["type"], "welcome");
    // The digests of the stream, with the token.
    let r =
        s.gw.get(&format!("/p2p/v1/digests/s/master.m3u8/0?token={good}"))
            .await;
    assert_eq!(r.status, 200);
}

/// `peer-assist node --token`: the token goes in `join` and, as a cookie, with every request to
/// the gateway; without it the node is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_node_passes_its_token_along() {
    use peer_assist::node::{self, NodeConfig, NodeError, Source};
    use peer_assist::protocol::signal::ErrorCode;
    let keys = format!("{KEY_OLD}\n{KEY_NEW}\n");
    let s = stack(&keys).await;
    let config = |token: Option<String>| {
        let mut c = NodeConfig::new(&format!("http://{}", s.gw.addr), "/s/master.m3u8");
        c.driven = true;
        c.duration = None;
        c.token = token;
        c
    };
    match node::start(config(None)).await {
        Err(NodeError::Refused { code, .. }) => assert_eq!(code, ErrorCode::Unauthorized),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a node without a token joined a protected swarm"),
    }
    let good = token(&keys, "/s/", Duration::from_secs(600));
    let n = node::start(config(Some(good)))
        .await
        .expect("joins with its token");
    let by = std::time::Instant::now() + Duration::from_secs(5);
    let fetched = n.fetcher().fetch("/s/v/0.m4s", by).await.expect("fetched");
    assert_eq!(fetched.source, Source::Http);
    assert_eq!(fetched.bytes, pattern(3000, 7));
    let summary = n.stop().await;
    assert_eq!(summary.http_segments, 1);
    // The gateway checked the token; the origin was asked for the bare path, once.
    assert_eq!(s.origin.count("/s/v/0.m4s"), 1);
}
