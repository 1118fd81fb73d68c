//! Alternate audio and subtitle renditions (`EXT-X-MEDIA` with a `URI`) are swarms of their own:
//! numbered after the variants (docs/PROTOCOL.md §1), in `join` and on the digests endpoint alike.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{pattern, test_config, Reply, TestGateway, TestOrigin};
use tokio_tungstenite::tungstenite::Message;

/// Two variants sharing an audio group (one listed twice, for a second audio group), English and
/// French audio, subtitles, muxed-audio and closed-caption entries without a URI, an absolute
/// URL at the origin: renditions 0, 1 (variants), 2 (`en`), 3 (`fr`), 4 (`subs`), 5 (`abs`).
fn master(origin: &str) -> String {
    format!(
        "#EXTM3U\n\
         #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"en\",DEFAULT=YES,URI=\"audio/en.m3u8\"\n\
         #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"fr\",URI=\"audio/fr.m3u8\"\n\
         #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"ac3\",NAME=\"en\",URI=\"audio/en.m3u8?g=ac3\"\n\
         #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"muxed\",NAME=\"main\"\n\
         #EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"cc1\",INSTREAM-ID=\"CC1\"\n\
         #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"en\",URI=\"subs/en.m3u8\"\n\
         #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"abs\",URI=\"{origin}m/subs/abs.m3u8\"\n\
         #EXT-X-STREAM-INF:BANDWIDTH=200000,AUDIO=\"aac\",SUBTITLES=\"subs\"\nlow/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=210000,AUDIO=\"ac3\",SUBTITLES=\"subs\"\nlow/index.m3u8\n\
         #EXT-X-STREAM-INF:BANDWIDTH=400000,AUDIO=\"aac\",SUBTITLES=\"subs\"\nhigh/index.m3u8\n"
    )
}

fn vod(name: &str, ext: &str) -> String {
    format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXTINF:2,\n{name}0.{ext}\n#EXTINF:2,\n{name}1.{ext}\n#EXT-X-ENDLIST\n"
    )
}

async fn setup() -> (TestOrigin, TestGateway) {
    let origin = TestOrigin::start().await;
    origin.set("/m/master.m3u8", Reply::ok(master(&origin.base())));
    for (playlist, name, ext) in [
        ("/m/low/index.m3u8", "v", "ts"),
        ("/m/high/index.m3u8", "v", "ts"),
        ("/m/audio/en.m3u8", "en", "aac"),
        ("/m/audio/fr.m3u8", "fr", "aac"),
        ("/m/subs/en.m3u8", "en", "vtt"),
        ("/m/subs/abs.m3u8", "abs", "vtt"),
    ] {
        origin.set(playlist, Reply::ok(vod(name, ext)));
        let dir = playlist.rsplit_once('/').unwrap().0;
        for (i, s) in [0u8, 1].into_iter().enumerate() {
            let body = pattern(500 + 100 * i, s + name.len() as u8);
            origin.set(&format!("{dir}/{name}{s}.{ext}"), Reply::ok(body));
        }
    }
    let gw = TestGateway::start(test_config(&origin)).await;
    (origin, gw)
}

#[tokio::test]
async fn each_alternate_rendition_has_its_index_after_the_variants() {
    let (_origin, gw) = setup().await;
    let want = [
        "/m/low/index.m3u8",
        "/m/high/index.m3u8",
        "/m/audio/en.m3u8",
        "/m/audio/fr.m3u8",
        "/m/subs/en.m3u8",
        "/m/subs/abs.m3u8",
    ];
    for (rendition, playlist) in want.iter().enumerate() {
        let r = gw
            .get(&format!("/p2p/v1/digests/m/master.m3u8/{rendition}"))
            .await;
        assert_eq!(r.status, 200, "rendition {rendition}: {}", r.text());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["playlist"], *playlist, "rendition {rendition}");
    }
    let r = gw.get("/p2p/v1/digests/m/master.m3u8/6").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("has 6 renditions"), "{}", r.text());
    let max = gw
        .get(&format!("/p2p/v1/digests/m/master.m3u8/{}", u32::MAX))
        .await;
    assert_eq!(
        max.status, 404,
        "the largest index is refused, not overflowed"
    );

    // A segment of the French audio is published under its rendition once it is cached.
    assert_eq!(gw.get("/m/audio/fr.m3u8").await.status, 200);
    assert_eq!(gw.get("/m/audio/fr1.aac").await.status, 200);
    let ids = support::digest_ids(&gw, "/m/master.m3u8", 3).await;
    assert_eq!(ids, ["/m/audio/fr1.aac"]);
}

/// The next message on `ws`, as JSON.
async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Text(text) = message else {
        panic!("not text: {message:?}");
    };
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_join_of_an_audio_rendition_is_the_audio_playlists_swarm() {
    let (_origin, gw) = setup().await;
    assert_eq!(gw.get("/m/audio/en0.aac").await.status, 200);
    let url = format!("ws://{}/p2p/v1/ws?stream=/m/master.m3u8", gw.addr);
    let mut welcomes = Vec::new();
    for rendition in [2u32, 0, 7] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let join = json!({
            "type": "join", "v": 1, "stream": "/m/master.m3u8", "rendition": rendition,
            "capabilities": { "transports": ["webrtc"], "upload": true }
        });
        ws.send(Message::Text(join.to_string().into()))
            .await
            .unwrap();
        let message = next_json(&mut ws).await;
        if rendition == 2 {
            // Its digests follow the welcome: the English audio segment cached above.
            let digests = next_json(&mut ws).await;
            assert_eq!(digests["type"], "digests", "{digests}");
            assert_eq!(digests["playlist"], "/m/audio/en.m3u8");
            assert_eq!(digests["segments"][0]["id"], "/m/audio/en0.aac");
        }
        welcomes.push((message, ws));
    }
    assert_eq!(welcomes[0].0["type"], "welcome", "{}", welcomes[0].0);
    assert_eq!(welcomes[0].0["swarm"], "/m/audio/en.m3u8");
    assert_eq!(welcomes[1].0["swarm"], "/m/low/index.m3u8");
    assert_eq!(welcomes[2].0["type"], "error");
    assert_eq!(welcomes[2].0["code"], "not_found");
}
