//! The built-in demo origin: a small test-pattern HLS ladder embedded in the binary, served as VOD
//! (`/demo/vod/…`) and as a live stream that loops it forever (`/demo/live/…`), with an advancing media
//! sequence, `EXT-X-PROGRAM-DATE-TIME` and an `EXT-X-DISCONTINUITY` at each loop.
//!
//! The same live stream is also served as Low-Latency HLS under `/demo/ll/…`: each segment in four
//! parts (`{sequence}.{part}.ts`, slices of the segment at 188-byte packet boundaries, each
//! declared a quarter of the segment), blocking playlist reloads (`_HLS_msn`, `_HLS_part`) held
//! until the part is due, and the next part held until it is complete: what a browser player in
//! low-latency mode plays.
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
/// Parts of each segment of the LL-HLS demo.
pub const LL_PARTS: u64 = 4;
/// Segments whose parts the LL-HLS demo playlist lists (the last three target durations).
const LL_PART_SEGMENTS: u64 = 3;

/// When an LL-HLS demo request may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlWait {
    Ready,
    /// At this instant (ms since the epoch).
    At(u64),
    /// Malformed or too far ahead: 400.
    BadRequest,
}

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

    fn duration_of(&self, sequence: u64) -> u64 {
        let n = self.count();
        self.durations_ms[(sequence % n) as usize]
    }

    /// When part `part` of segment `sequence` is complete (ms since the epoch).
    pub fn part_complete_ms(&self, sequence: u64, part: u64) -> u64 {
        let d = self.duration_of(sequence);
        let end = if part + 1 >= LL_PARTS {
            d
        } else {
            d / LL_PARTS * (part + 1)
        };
        self.start_ms(sequence) + end
    }

    /// The LL-HLS live edge at `now_ms`: the segment in progress and how many of its parts exist.
    pub fn ll_edge(&self, now_ms: u64) -> (u64, u64) {
        let next = self.live_edge(now_ms) + 1;
        let parts = (0..LL_PARTS)
            .take_while(|&j| self.part_complete_ms(next, j) <= now_ms)
            .count() as u64;
        (next, parts)
    }

    /// When a blocking reload for part `part` (or the whole segment) of `msn` may be answered.
    pub fn ll_playlist_wait(&self, now_ms: u64, msn: u64, part: Option<u64>) -> LlWait {
        let (next, parts) = self.ll_edge(now_ms);
        // The last whole segment is `next - 1`: two beyond it is the most one may ask for.
        if msn > next + 1 {
            return LlWait::BadRequest;
        }
        let due = match part {
            Some(p) if p < LL_PARTS => self.part_complete_ms(msn, p),
            _ => self.part_complete_ms(msn, LL_PARTS - 1),
        };
        if msn < next || (msn == next && part.is_some_and(|p| p < parts)) || due <= now_ms {
            LlWait::Ready
        } else {
            LlWait::At(due)
        }
    }

    /// The live media playlist at `now_ms`, for a stream whose discontinuities are counted from the
    /// loop before the one playing at `since_ms` (the gateway's start; 0 counts from the epoch).
    pub fn live_playlist(&self, now_ms: u64, since_ms: u64) -> String {
        self.playlist(now_ms, since_ms, false)
    }

    /// The LL-HLS live media playlist at `now_ms` (see [`live_playlist`](Self::live_playlist)).
    pub fn ll_playlist(&self, now_ms: u64, since_ms: u64) -> String {
        self.playlist(now_ms, since_ms, true)
    }

    fn playlist(&self, now_ms: u64, since_ms: u64, ll: bool) -> String {
        let n = self.count();
        let edge = self.live_edge(now_ms);
        let first = edge.saturating_sub(LIVE_WINDOW - 1);
        // Discontinuity tags already removed from the window: one per loop start in 1..first,
        // less those before the counting base. The window (LIVE_WINDOW segments) is shorter than a
        // loop, so at `since_ms` the window never reaches back before the base loop.
        let base = (since_ms / self.loop_ms()).saturating_sub(1);
        let discontinuity_sequence = (first.saturating_sub(1) / n).saturating_sub(base);
        let mut text = String::with_capacity(1024);
        let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        let part_target = self.durations_ms.iter().max().copied().unwrap_or(0) / LL_PARTS;
        let (version, low_latency) = if ll {
            (
                9,
                format!(
                    "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}\n\
                     #EXT-X-PART-INF:PART-TARGET={}\n",
                    seconds(part_target * 3),
                    seconds(part_target)
                ),
            )
        } else {
            (3, String::new())
        };
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n{low_latency}#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
            self.target_duration
        );
        let head = |text: &mut String, sequence: u64| {
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
        };
        let part = |text: &mut String, sequence: u64, j: u64| {
            let begins = match j {
                0 => self.start_ms(sequence),
                _ => self.part_complete_ms(sequence, j - 1),
            };
            let d = self.part_complete_ms(sequence, j).saturating_sub(begins);
            let independent = if j == 0 { ",INDEPENDENT=YES" } else { "" };
            let _ = writeln!(
                text,
                "#EXT-X-PART:DURATION={},URI=\"{sequence}.{j}.ts\"{independent}",
                seconds(d)
            );
        };
        for sequence in first..=edge {
            head(&mut text, sequence);
            if ll && sequence + LL_PART_SEGMENTS > edge {
                for j in 0..LL_PARTS {
                    part(&mut text, sequence, j);
                }
            }
            let duration = self.duration_of(sequence);
            let _ = write!(text, "#EXTINF:{},\n{sequence}.ts\n", seconds(duration));
        }
        if ll {
            let (next, parts) = self.ll_edge(now_ms);
            if parts > 0 {
                head(&mut text, next);
            }
            for j in 0..parts {
                part(&mut text, next, j);
            }
            let (hinted, j) = if parts < LL_PARTS {
                (next, parts)
            } else {
                (next + 1, 0)
            };
            let _ = writeln!(
                text,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hinted}.{j}.ts\""
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
        let (live, ll) = match rest.strip_prefix("live/") {
            Some(live) => (live, false),
            None => (rest.strip_prefix("ll/")?, true),
        };
        if live == "master.m3u8" {
            return Some((PLAYLIST, self.files.get("vod/master.m3u8")?.clone()));
        }
        let (name, file) = live.split_once('/')?;
        let rendition = self.renditions.get(name)?;
        if file == "index.m3u8" {
            let playlist = match ll {
                true => rendition.ll_playlist(now_ms, self.started_ms),
                false => rendition.live_playlist(now_ms, self.started_ms),
            };
            return Some((PLAYLIST, Bytes::from(playlist)));
        }
        let stem = file.strip_suffix(".ts")?;
        if let Some((sequence, part)) = stem.split_once('.').filter(|_| ll) {
            let (sequence, part): (u64, u64) = (sequence.parse().ok()?, part.parse().ok()?);
            if part >= LL_PARTS || rendition.part_complete_ms(sequence, part) > now_ms {
                return None;
            }
            let vod_name = format!("vod/{name}/seg_{:03}.ts", sequence % rendition.count());
            let whole = self.files.get(vod_name.as_str())?;
            let duration = rendition.duration_of(sequence);
            return Some(("video/mp2t", part_slice(whole, part, duration)));
        }
        let sequence: u64 = stem.parse().ok()?;
        if sequence > rendition.live_edge(now_ms) {
            return None;
        }
        let vod_name = format!("vod/{name}/seg_{:03}.ts", sequence % rendition.count());
        Some(("video/mp2t", self.files.get(vod_name.as_str())?.clone()))
    }
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";

/// Part `part` of a segment of `duration_ms`: cut at the first video PES that starts at or after
/// each quarter of the segment by its PTS, so that a part holds the media its `DURATION` says
/// (within a frame). A segment whose video cannot be read is cut in equal 188-byte packets.
fn part_slice(whole: &Bytes, part: u64, duration_ms: u64) -> Bytes {
    let starts = video_pes_starts(whole);
    let packets = whole.len() / TS_PACKET;
    let cut = |j: u64| -> usize {
        if j == 0 {
            return 0;
        }
        if j >= LL_PARTS {
            return whole.len();
        }
        let by_time = starts.first().and_then(|&(_, first)| {
            let due = first + duration_ms * 90 * j / LL_PARTS;
            starts
                .iter()
                .find(|&&(_, pts)| pts >= due)
                .map(|&(packet, _)| packet * TS_PACKET)
        });
        by_time
            .unwrap_or(packets * j as usize / LL_PARTS as usize * TS_PACKET)
            .min(whole.len())
    };
    let (from, to) = (cut(part), cut(part + 1));
    whole.slice(from.min(to)..to)
}

const TS_PACKET: usize = 188;

/// The packets (index, PTS in 90 kHz units) where a video PES starts, in order.
fn video_pes_starts(ts: &[u8]) -> Vec<(usize, u64)> {
    let mut starts = Vec::new();
    for (index, packet) in ts.chunks_exact(TS_PACKET).enumerate() {
        let unit_start = packet[1] & 0x40 != 0;
        if packet[0] != 0x47 || !unit_start {
            continue;
        }
        let adaptation = (packet[3] >> 4) & 0x3;
        let payload = match adaptation {
            1 => 4,
            3 => 5 + usize::from(packet[4]),
            _ => continue,
        };
        let Some(pes) = packet.get(payload..) else {
            continue;
        };
        let video = pes.len() >= 14 && pes[..3] == [0, 0, 1] && (0xE0..=0xEF).contains(&pes[3]);
        if !video || pes[7] & 0x80 == 0 {
            continue;
        }
        let pts = (u64::from(pes[9] >> 1) & 0x7) << 30
            | u64::from(pes[10]) << 22
            | (u64::from(pes[11]) >> 1) << 15
            | u64::from(pes[12]) << 7
            | u64::from(pes[13]) >> 1;
        starts.push((index, pts));
    }
    starts
}

impl DemoStream {
    /// When a request to the LL-HLS demo may be answered at `now_ms`: blocking playlist reloads
    /// when their part is due, the next part when it is complete.
    pub fn ll_wait(&self, path: &str, query: Option<&str>, now_ms: u64) -> LlWait {
        let Some((name, file)) = path
            .strip_prefix("/demo/ll/")
            .and_then(|rest| rest.split_once('/'))
        else {
            return LlWait::Ready;
        };
        let Some(rendition) = self.renditions.get(name) else {
            return LlWait::Ready;
        };
        if file == "index.m3u8" {
            let (mut msn, mut part) = (None, None);
            for pair in query.unwrap_or("").split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let number = value.parse::<u64>().ok();
                match key {
                    "_HLS_msn" if number.is_some() => msn = number,
                    "_HLS_part" if number.is_some() => part = number,
                    "_HLS_msn" | "_HLS_part" => return LlWait::BadRequest,
                    _ => {}
                }
            }
            return match msn {
                Some(msn) => rendition.ll_playlist_wait(now_ms, msn, part),
                None if part.is_some() => LlWait::BadRequest,
                None => LlWait::Ready,
            };
        }
        let next_part = file
            .strip_suffix(".ts")
            .and_then(|stem| stem.split_once('.'))
            .and_then(|(k, j)| Some((k.parse::<u64>().ok()?, j.parse::<u64>().ok()?)));
        match next_part {
            Some(wanted) if wanted == rendition.ll_edge(now_ms) => {
                LlWait::At(rendition.part_complete_ms(wanted.0, wanted.1))
            }
            _ => LlWait::Ready,
        }
    }
}

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
                async move {
                    let uri = request.uri();
                    match stream.ll_wait(uri.path(), uri.query(), now_ms()) {
                        LlWait::Ready => {}
                        LlWait::At(at) => {
                            // Never longer than three target durations.
                            let wait = at.saturating_sub(now_ms()).min(6_000);
                            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                        }
                        LlWait::BadRequest => {
                            let mut response = Response::new(Full::new(Bytes::from_static(
                                b"bad LL-HLS delivery directives\n",
                            )));
                            *response.status_mut() = StatusCode::BAD_REQUEST;
                            return Ok(response);
                        }
                    }
                    Ok::<_, Infallible>(answer(&stream, &request))
                }
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
    fn the_ll_playlist_lists_parts_a_hint_and_holds_blocking_reloads() {
        let r = rendition();
        // 46.6 s: segments up to 22 whole, one part (500 ms) of 23.
        let now = 46_600;
        assert_eq!(r.ll_edge(now), (23, 1));
        let text = r.ll_playlist(now, 0);
        let info =
            crate::hls::parse_playlist("/demo/ll/r/index.m3u8", text.as_bytes(), &[]).unwrap();
        let ll = info.low_latency.unwrap();
        assert!(ll.can_block_reload, "{text}");
        assert_eq!((ll.next_msn, ll.trailing_parts), (23, 1), "{text}");
        assert_eq!(ll.part_target, std::time::Duration::from_millis(500));
        assert_eq!(info.hints, vec!["/demo/ll/r/23.1.ts".to_owned()]);
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.500,URI=\"22.3.ts\"\n#EXTINF:2.000,\n22.ts\n"),
            "{text}"
        );
        assert!(!text.contains("URI=\"19.0.ts\""), "{text}");
        // Blocking reloads.
        assert_eq!(r.ll_playlist_wait(now, 23, Some(0)), LlWait::Ready);
        assert_eq!(r.ll_playlist_wait(now, 23, Some(1)), LlWait::At(47_000));
        assert_eq!(r.ll_playlist_wait(now, 23, None), LlWait::At(48_000));
        assert_eq!(r.ll_playlist_wait(now, 24, None), LlWait::At(50_000));
        assert_eq!(r.ll_playlist_wait(now, 25, None), LlWait::BadRequest);
        // The last part of a segment: the hint is the next segment's first.
        let text = r.ll_playlist(47_999, 0);
        assert!(
            text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"23.3.ts\"\n"),
            "{text}"
        );
    }

    #[test]
    fn ll_parts_are_slices_of_their_segment() {
        let stream = DemoStream::embedded().unwrap();
        let whole = stream.get("/demo/live/240p/3.ts", 100_000).unwrap().1;
        let joined: Vec<u8> = (0..LL_PARTS)
            .flat_map(|j| {
                stream
                    .get(&format!("/demo/ll/240p/3.{j}.ts"), 100_000)
                    .unwrap()
                    .1
                    .to_vec()
            })
            .collect();
        assert_eq!(joined, whole.to_vec());
        assert!(stream.get("/demo/ll/240p/3.4.ts", 100_000).is_none());
        // Cut by time: the parts begin at the video frames nearest each half second.
        let starts = video_pes_starts(&whole);
        assert!(starts.len() > 10, "{} video frames", starts.len());
        let first = stream.get("/demo/ll/240p/3.0.ts", 100_000).unwrap().1;
        let second = stream.get("/demo/ll/240p/3.1.ts", 100_000).unwrap().1;
        let second_pts = video_pes_starts(&second)[0].1;
        let offset = second_pts - starts[0].1;
        assert!((45_000..45_000 + 3_100).contains(&offset), "{offset}");
        assert!(first.len() % 188 == 0);
        assert!(stream.get("/demo/live/240p/3.0.ts", 100_000).is_none());
        // Not complete yet.
        assert!(stream.get("/demo/ll/240p/3.0.ts", 6_100).is_none());
        assert_eq!(
            stream.ll_wait("/demo/ll/240p/3.0.ts", None, 6_100),
            LlWait::At(6_500)
        );
        assert_eq!(
            stream.ll_wait("/demo/ll/240p/3.2.ts", None, 6_100),
            LlWait::Ready
        );
        assert_eq!(
            stream.ll_wait("/demo/ll/240p/index.m3u8", Some("_HLS_part=1"), 6_100),
            LlWait::BadRequest
        );
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
