//! The built-in demo origin: a small test-pattern HLS ladder embedded in the binary, served as VOD
//! (`/demo/vod/…`) and as a live stream that loops it forever (`/demo/live/…`), with an advancing media
//! sequence, `EXT-X-PROGRAM-DATE-TIME` and an `EXT-X-DISCONTINUITY` at each loop.
//!
//! It is an ordinary HTTP origin on a loopback port: the gateway fetches and caches it exactly like any
//! other. The live timeline is a pure function of wall-clock time counted from the Unix epoch, so every
//! gateway instance serves the same live edge and the same segment names. Only the discontinuity
//! sequence counts from the gateway's start (the loop before it): counted from 1970 it would be near
//! 10^8, and hls.js keeps an array indexed by it that it walks on every playlist reload (over a
//! second of main-thread time per reload, enough to stall playback on a busy machine).

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

mod files {
    include!(concat!(env!("OUT_DIR"), "/demo_files.rs"));
}

/// Segments listed in a live demo playlist.
pub const LIVE_WINDOW: u64 = 6;

/// One rendition of the demo: its segment durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    pub name: String,
    pub target_duration: u64,
    pub durations_ms: Vec<u64>,
}

impl Rendition {
    fn loop_ms(&self) -> u64 {
        self.durations_ms.iter().sum()
    }

    fn count(&self) -> u64 {
        self.durations_ms.len() as u64
    }

    /// Start time of live segment `sequence`, in ms since the epoch.
    fn start_ms(&self, sequence: u64) -> u64 {
        let n = self.count();
        let before: u64 = self.durations_ms[..(sequence % n) as usize].iter().sum();
        (sequence / n) * self.loop_ms() + before
    }

    /// The newest live segment complete at `now_ms` (ms since the epoch).
    pub fn live_edge(&self, now_ms: u64) -> u64 {
        let n = self.count();
        let loops = now_ms / self.loop_ms();
        let mut within = now_ms % self.loop_ms();
        let mut complete = 0;
        for d in &self.durations_ms {
            if *d > within {
                break;
            }
            within -= d;
            complete += 1;
        }
        // `complete` segments of the current loop are done; the edge is the last of them.
        (loops * n + complete).saturating_sub(1)
    }

    /// The live media playlist at `now_ms`, for a stream whose discontinuities are counted from the
    /// loop before the one playing at `since_ms` (the gateway's start; 0 counts from the epoch).
    pub fn live_playlist(&self, now_ms: u64, since_ms: u64) -> String {
        let n = self.count();
        let edge = self.live_edge(now_ms);
        let first = edge.saturating_sub(LIVE_WINDOW - 1);
        // Discontinuity tags already removed from the window: one per loop start in 1..first,
        // less those before the counting base. The window (LIVE_WINDOW segments) is shorter than a
        // loop, so at `since_ms` the window never reaches back before the base loop.
        let base = (since_ms / self.loop_ms()).saturating_sub(1);
        let discontinuity_sequence = (first.saturating_sub(1) / n).saturating_sub(base);
        let mut text = String::with_capacity(1024);
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            self.target_duration
        );
        for sequence in first..=edge {
            if sequence > 0 && sequence % n == 0 {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let start = self.start_ms(sequence);
            if let Some(pdt) = chrono::DateTime::from_timestamp_millis(start as i64) {
                let _ = writeln!(
                    text,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    pdt.format("%Y-%m-%dT%H:%M:%S%.3fZ")
                );
            }
            let duration = self.durations_ms[(sequence % n) as usize];
            let _ = write!(
                text,
                "#EXTINF:{}.{:03},\n{sequence}.ts\n",
                duration / 1000,
                duration % 1000
            );
        }
        text
    }
}

/// The demo content: embedded files and the renditions read from their playlists.
#[derive(Debug)]
pub struct DemoStream {
    files: HashMap<&'static str, Bytes>,
    renditions: HashMap<String, Rendition>,
    /// When this origin started (ms since the epoch): the base of the discontinuity sequence.
    started_ms: u64,
}

impl DemoStream {
    /// Reads the embedded files. Fails only if the build embedded a broken demo.
    pub fn embedded() -> Result<Self, String> {
        let files: HashMap<&'static str, Bytes> = files::FILES
            .iter()
            .map(|(path, bytes)| (*path, Bytes::from_static(bytes)))
            .collect();
        let mut renditions = HashMap::new();
        for (path, bytes) in &files {
            let Some(name) = path
                .strip_prefix("vod/")
                .and_then(|p| p.strip_suffix("/index.m3u8"))
            else {
                continue;
            };
            let rendition = parse_rendition(name, bytes)?;
            renditions.insert(name.to_owned(), rendition);
        }
        if renditions.is_empty() || !files.contains_key("vod/master.m3u8") {
            return Err("the demo stream was not embedded (gateway/demo is empty)".into());
        }
        Ok(Self {
            files,
            renditions,
            started_ms: now_ms(),
        })
    }

    pub fn renditions(&self) -> impl Iterator<Item = &Rendition> {
        self.renditions.values()
    }

    /// The answer for an origin path at `now_ms`: (content type, body), or `None` for 404.
    pub fn get(&self, path: &str, now_ms: u64) -> Option<(&'static str, Bytes)> {
        let rest = path.strip_prefix("/demo/")?;
        if let Some(file) = rest.strip_prefix("vod/") {
            let bytes = self.files.get(format!("vod/{file}").as_str())?;
            return Some((content_type(file), bytes.clone()));
        }
        let live = rest.strip_prefix("live/")?;
        if live == "master.m3u8" {
            return Some((PLAYLIST, self.files.get("vod/master.m3u8")?.clone()));
        }
        let (name, file) = live.split_once('/')?;
        let rendition = self.renditions.get(name)?;
        if file == "index.m3u8" {
            return Some((
                PLAYLIST,
                Bytes::from(rendition.live_playlist(now_ms, self.started_ms)),
            ));
        }
        let sequence: u64 = file.strip_suffix(".ts")?.parse().ok()?;
        if sequence > rendition.live_edge(now_ms) {
            return None;
        }
        let vod_name = format!("vod/{name}/seg_{:03}.ts", sequence % rendition.count());
        Some(("video/mp2t", self.files.get(vod_name.as_str())?.clone()))
    }
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";

fn content_type(file: &str) -> &'static str {
    if file.ends_with(".m3u8") {
        PLAYLIST
    } else {
        "video/mp2t"
    }
}

fn parse_rendition(name: &str, playlist: &[u8]) -> Result<Rendition, String> {
    match peer_assist::hls::parse(playlist) {
        Ok(peer_assist::hls::Playlist::Media(media)) if !media.segments.is_empty() => {
            Ok(Rendition {
                name: name.to_owned(),
                target_duration: media.target_duration.as_secs(),
                durations_ms: media
                    .segments
                    .iter()
                    .map(|s| (s.duration.as_secs_f64() * 1000.0).round() as u64)
                    .collect(),
            })
        }
        Ok(_) => Err(format!("demo rendition {name} has no segments")),
        Err(e) => Err(format!("demo rendition {name} does not parse: {e}")),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the demo origin on an ephemeral loopback port.
pub async fn spawn() -> std::io::Result<SocketAddr> {
    let stream = Arc::new(DemoStream::embedded().map_err(std::io::Error::other)?);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let stream = Arc::clone(&stream);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let stream = Arc::clone(&stream);
                async move { Ok::<_, Infallible>(answer(&stream, &request)) }
            });
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(conn), service).await;
            });
        }
    });
    Ok(addr)
}

fn answer<B>(stream: &DemoStream, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match stream.get(request.uri().path(), now_ms()) {
        Some((ct, body)) => (StatusCode::OK, ct, body),
        None => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendition() -> Rendition {
        Rendition {
            name: "r".into(),
            target_duration: 2,
            durations_ms: vec![2000; 10],
        }
    }

    #[test]
    fn live_edge_advances_with_time() {
        let r = rendition();
        assert_eq!(r.live_edge(2000), 0);
        assert_eq!(r.live_edge(3999), 0);
        assert_eq!(r.live_edge(4000), 1);
        assert_eq!(r.live_edge(20_000 * 5 + 2000), 50);
    }

    #[test]
    fn live_playlist_window_sequence_and_discontinuities() {
        let r = rendition();
        // Edge at sequence 22: window 17..=22, a loop starts at 20.
        let text = r.live_playlist(46_000, 0);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:17\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:40.000Z\n#EXTINF:2.000,\n20.ts\n"), "{text}");
        assert_eq!(text.matches("#EXTINF").count(), LIVE_WINDOW as usize);
        assert!(text.ends_with("22.ts\n"));
        assert!(!text.contains("#EXT-X-ENDLIST"));
        let info =
            crate::hls::parse_playlist("/demo/live/r/index.m3u8", text.as_bytes(), &[]).unwrap();
        assert_eq!(info.class, crate::hls::ObjectClass::LiveMedia);
        assert_eq!(info.media_sequence, 17);
    }

    #[test]
    fn discontinuity_sequence_counts_removed_tags() {
        let r = rendition();
        // Window starting exactly at a loop start keeps its tag: only the earlier ones were removed.
        let at_loop = r.live_playlist((20 + LIVE_WINDOW) * 2000, 0);
        assert!(
            at_loop.contains("#EXT-X-MEDIA-SEQUENCE:20\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
            "{at_loop}"
        );
        let after = r.live_playlist((21 + LIVE_WINDOW) * 2000, 0);
        assert!(
            after.contains("#EXT-X-MEDIA-SEQUENCE:21\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"),
            "{after}"
        );
    }

    #[test]
    fn discontinuity_sequence_counts_from_the_start() {
        let r = rendition();
        // Started at 1000 s (loop 50): counting begins with loop 49, so the number stays small,
        // never decreases and still grows by one per removed tag.
        let since = 1_000_000;
        let mut last = 0;
        for now in (since..since + 200_000).step_by(500) {
            let text = r.live_playlist(now, since);
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
                .unwrap();
            let value: u64 = line.parse().unwrap();
            assert!(value >= last && value <= 11, "{now}: {value}");
            // The epoch-based count minus the base, whenever the window is past the base loop.
            let epoch_based: u64 = r
                .live_playlist(now, 0)
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(value, epoch_based - 49, "{now}");
            last = value;
        }
        assert!(last >= 9);
    }

    #[test]
    fn embedded_demo_serves_vod_and_live() {
        let demo = DemoStream::embedded().expect("demo embedded");
        assert_eq!(demo.renditions().count(), 3);
        let now = 1_800_000_000_000;
        let (ct, master) = demo.get("/demo/vod/master.m3u8", now).expect("master");
        assert_eq!(ct, PLAYLIST);
        assert!(master.starts_with(b"#EXTM3U"));
        let (_, live) = demo
            .get("/demo/live/240p/index.m3u8", now)
            .expect("live playlist");
        let info = crate::hls::parse_playlist("/demo/live/240p/index.m3u8", &live, &[]).unwrap();
        let edge = info.last_sequence().expect("segments");
        let (ct, seg) = demo
            .get(&format!("/demo/live/240p/{edge}.ts"), now)
            .expect("edge segment");
        assert_eq!(ct, "video/mp2t");
        assert_eq!(seg[0], 0x47, "MPEG-TS sync byte");
        assert!(
            demo.get(&format!("/demo/live/240p/{}.ts", edge + 1), now)
                .is_none(),
            "future segment"
        );
        assert!(demo.get("/demo/live/999p/index.m3u8", now).is_none());
        assert!(demo.get("/demo/vod/../secret", now).is_none());
    }
}
