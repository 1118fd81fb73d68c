//! What an object is, from its bytes or its name (pure).
//!
//! Playlists are classified by parsing them with the project's one HLS parser
//! ([`peer_assist::hls`]); the body is passed through byte for byte, except that absolute URLs
//! pointing at an origin are made root-relative so viewers come through the gateway. Segments, init sections, parts and keys are known from the playlists that name them
//! and otherwise guessed from the extension.

use std::time::{Duration, SystemTime};

use std::borrow::Cow;
use std::collections::HashMap;

use peer_assist::hls::playlist::ByteRange;
use peer_assist::hls::{self, rewrite, uri, ParseError, Playlist};

/// The classes of DESIGN.md §3. The label values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    Multivariant,
    LiveMedia,
    VodMedia,
    /// A playlist by name whose body has not been seen yet.
    Playlist,
    Segment,
    Init,
    Part,
    Key,
    Other,
}

impl ObjectClass {
    pub const ALL: [ObjectClass; 9] = [
        ObjectClass::Multivariant,
        ObjectClass::LiveMedia,
        ObjectClass::VodMedia,
        ObjectClass::Playlist,
        ObjectClass::Segment,
        ObjectClass::Init,
        ObjectClass::Part,
        ObjectClass::Key,
        ObjectClass::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ObjectClass::Multivariant => "multivariant",
            ObjectClass::LiveMedia => "live_media",
            ObjectClass::VodMedia => "vod_media",
            ObjectClass::Playlist => "playlist",
            ObjectClass::Segment => "segment",
            ObjectClass::Init => "init",
            ObjectClass::Part => "part",
            ObjectClass::Key => "key",
            ObjectClass::Other => "other",
        }
    }

    pub fn is_playlist(self) -> bool {
        matches!(
            self,
            ObjectClass::Multivariant
                | ObjectClass::LiveMedia
                | ObjectClass::VodMedia
                | ObjectClass::Playlist
        )
    }

    /// Media objects whose bytes peers may exchange, so they carry a digest.
    pub fn is_media(self) -> bool {
        matches!(
            self,
            ObjectClass::Segment | ObjectClass::Init | ObjectClass::Part
        )
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

fn extension(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.').map_or("", |(_, ext)| ext)
}

/// The class guessed from the name alone.
pub fn class_from_name(path: &str) -> ObjectClass {
    let ext = extension(path).to_ascii_lowercase();
    match ext.as_str() {
        "m3u8" | "m3u" => ObjectClass::Playlist,
        "ts" | "m4s" | "m4v" | "m4a" | "aac" | "ac3" | "ec3" | "mp3" | "cmfv" | "cmfa" | "vtt"
        | "webvtt" => ObjectClass::Segment,
        "mp4" => {
            let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
            if name.contains("init") {
                ObjectClass::Init
            } else {
                ObjectClass::Segment
            }
        }
        "key" => ObjectClass::Key,
        _ => ObjectClass::Other,
    }
}

/// The `Content-Type` for an object, or `None` to keep the origin's.
pub fn content_type(path: &str, class: ObjectClass) -> Option<&'static str> {
    if class.is_playlist() {
        return Some("application/vnd.apple.mpegurl");
    }
    let ext = extension(path).to_ascii_lowercase();
    Some(match ext.as_str() {
        "ts" => "video/mp2t",
        "mp4" | "m4s" | "m4v" | "cmfv" => "video/mp4",
        "m4a" | "cmfa" => "audio/mp4",
        "aac" => "audio/aac",
        "ac3" => "audio/ac3",
        "ec3" => "audio/eac3",
        "mp3" => "audio/mpeg",
        "vtt" | "webvtt" => "text/vtt",
        "key" => "application/octet-stream",
        _ => return None,
    })
}

/// A media object a playlist names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Gateway path (no query).
    pub path: String,
    pub class: ObjectClass,
    /// For segments: the media sequence number.
    pub sequence: Option<u64>,
    /// The length the body must have at least: the end of the furthest `EXT-X-BYTERANGE` (or
    /// `EXT-X-MAP` `BYTERANGE`) naming it, when the playlist gives one.
    pub min_len: Option<u64>,
    /// The byte ranges of it that are segments or init sections of their own, in playlist order
    /// (at most [`MAX_RANGES`]): each is a segment id for peers
    /// ([`peer_assist::hls::range_id`]) with its own digest.
    pub ranges: Vec<ByteRange>,
}

/// Most byte ranges of one file that get their own digest (the node core keeps 4,096 digests).
pub const MAX_RANGES: usize = 4096;

/// The end of a live media playlist's timeline: what the follower schedules its reloads by
/// ([`crate::edge::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timeline {
    /// The newest segment: its media sequence number and `EXTINF` duration.
    pub newest: Option<(u64, Duration)>,
    /// When the newest segment ends by `EXT-X-PROGRAM-DATE-TIME` (its date plus its duration).
    pub newest_end: Option<SystemTime>,
}

/// What an LL-HLS media playlist (one with `EXT-X-PART-INF`) says about its live edge: what
/// blocking reloads are judged by ([`crate::edge::blocking`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowLatency {
    /// `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES`: the origin holds blocking reloads.
    pub can_block_reload: bool,
    /// `PART-TARGET`.
    pub part_target: Duration,
    /// `EXT-X-TARGETDURATION`.
    pub target: Duration,
    /// The media sequence number of the segment in progress (after the last whole one).
    pub next_msn: u64,
    /// How many of its parts the playlist lists.
    pub trailing_parts: u64,
}

/// What a playlist says about itself and what it names.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistInfo {
    pub class: ObjectClass,
    /// `EXT-X-TARGETDURATION`, for media playlists.
    pub target_duration: Option<Duration>,
    /// Media sequence number of the first segment.
    pub media_sequence: u64,
    /// Objects the playlist names, resolvable to gateway paths, in playlist order. For a multivariant
    /// playlist the first `variants` of them are its variant streams, in order.
    pub references: Vec<Reference>,
    pub variants: usize,
    /// For live media playlists: how their timeline ends.
    pub timeline: Timeline,
    /// For live LL-HLS media playlists: their live edge in parts.
    pub low_latency: Option<LowLatency>,
    /// Gateway paths of the whole parts its `EXT-X-PRELOAD-HINT`s announce (also in
    /// `references`): fetched once ahead of viewers, the origin answering when they exist.
    pub hints: Vec<String>,
}

impl PlaylistInfo {
    /// A playlist of `class` that names nothing.
    pub fn empty(class: ObjectClass) -> Self {
        Self {
            class,
            target_duration: None,
            media_sequence: 0,
            references: Vec::new(),
            variants: 0,
            timeline: Timeline::default(),
            low_latency: None,
            hints: Vec::new(),
        }
    }

    /// Highest media sequence number present (the live edge).
    pub fn last_sequence(&self) -> Option<u64> {
        self.references.iter().filter_map(|r| r.sequence).max()
    }
}

/// What identifies the objects of a live media playlist, so that a later version of it can be told
/// apart from a restart of its encoder under the same names (see `edge::restart`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveShape {
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    /// Its segments (those that name a gateway path), in order.
    pub segments: Vec<SegmentShape>,
}

/// One segment of a [`LiveShape`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentShape {
    /// Gateway path.
    pub path: String,
    pub sequence: u64,
    pub discontinuity_sequence: u64,
    /// Its init section (`EXT-X-MAP`): gateway path and byte range (offset, length).
    pub map: Option<(String, Option<(u64, u64)>)>,
}

/// Classifies a playlist body served at `playlist_path` and lists what it names (see
/// [`peer_assist::hls`]: one parser, linear and bounded). `bases` are the origins' base URLs: an
/// absolute URL under one of them names a gateway path. A body that is not a playlist is
/// `Err(NotAPlaylist)`; one over the limits is the origin's error.
pub fn parse_playlist(
    playlist_path: &str,
    body: &[u8],
    bases: &[&str],
) -> Result<PlaylistInfo, ParseError> {
    parse_playlist_shaped(playlist_path, body, bases).map(|(info, _)| info)
}

/// [`parse_playlist`], and for a live media playlist its [`LiveShape`].
pub fn parse_playlist_shaped(
    playlist_path: &str,
    body: &[u8],
    bases: &[&str],
) -> Result<(PlaylistInfo, Option<LiveShape>), ParseError> {
    let playlist = match hls::parse(body) {
        Ok(p) => p,
        // A playlist that names nothing yet (`#EXTM3U` and headers only) is still a playlist.
        Err(ParseError::Empty) => return Ok((PlaylistInfo::empty(ObjectClass::Playlist), None)),
        Err(e) => return Err(e),
    };
    let shape = match &playlist {
        Playlist::Media(m) if !m.is_vod() => Some(live_shape(playlist_path, m, bases)),
        _ => None,
    };
    parse_info(playlist_path, playlist, bases).map(|info| (info, shape))
}

fn live_shape(playlist_path: &str, m: &hls::MediaPlaylist, bases: &[&str]) -> LiveShape {
    let segments = m
        .segments
        .iter()
        .filter_map(|seg| {
            let path = uri::resolve_path(playlist_path, &seg.uri, bases)?;
            let map = seg.map.as_ref().and_then(|map| {
                let path = uri::resolve_path(playlist_path, &map.uri, bases)?;
                Some((path, map.byterange.map(|r| (r.offset, r.length))))
            });
            Some(SegmentShape {
                path,
                sequence: seg.sequence,
                discontinuity_sequence: seg.discontinuity_sequence,
                map,
            })
        })
        .collect();
    LiveShape {
        media_sequence: m.media_sequence,
        discontinuity_sequence: m.discontinuity_sequence,
        segments,
    }
}

fn parse_info(
    playlist_path: &str,
    playlist: Playlist,
    bases: &[&str],
) -> Result<PlaylistInfo, ParseError> {
    let mut references: Vec<Reference> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut add = |uri: &str, class, sequence, range: Option<&ByteRange>| {
        let Some(path) = uri::resolve_path(playlist_path, uri, bases) else {
            return false;
        };
        let end = range.map(ByteRange::end);
        // Segments and init sections that are ranges of a file are objects for peers of their own.
        let own = matches!(class, ObjectClass::Segment | ObjectClass::Init);
        let own_range = range.filter(|r| own && r.length > 0).copied();
        if let Some(&i) = seen.get(&path) {
            if let Some(known) = references.get_mut(i) {
                known.min_len = known.min_len.max(end);
                if let Some(r) = own_range {
                    if known.ranges.len() < MAX_RANGES && known.ranges.last() != Some(&r) {
                        known.ranges.push(r);
                    }
                }
            }
            return false;
        }
        seen.insert(path.clone(), references.len());
        references.push(Reference {
            path,
            class,
            sequence,
            min_len: end,
            ranges: own_range.into_iter().collect(),
        });
        true
    };
    match playlist {
        Playlist::Multivariant(m) => {
            let mut variants = 0;
            for v in &m.variants {
                variants += usize::from(add(&v.uri, ObjectClass::Playlist, None, None));
            }
            for r in &m.renditions {
                if let Some(uri) = &r.uri {
                    add(uri, ObjectClass::Playlist, None, None);
                }
            }
            for uri in &m.iframe_playlists {
                add(uri, ObjectClass::Playlist, None, None);
            }
            for k in &m.session_keys {
                if let Some(uri) = &k.uri {
                    add(uri, ObjectClass::Key, None, None);
                }
            }
            Ok(PlaylistInfo {
                class: ObjectClass::Multivariant,
                target_duration: None,
                media_sequence: 0,
                references,
                variants,
                timeline: Timeline::default(),
                low_latency: None,
                hints: Vec::new(),
            })
        }
        Playlist::Media(m) => {
            for seg in &m.segments {
                if let Some(map) = &seg.map {
                    add(&map.uri, ObjectClass::Init, None, map.byterange.as_ref());
                }
                if let Some(uri) = seg.key.as_ref().and_then(|k| k.uri.as_deref()) {
                    add(uri, ObjectClass::Key, None, None);
                }
                for part in &seg.parts {
                    add(&part.uri, ObjectClass::Part, None, part.byterange.as_ref());
                }
                add(
                    &seg.uri,
                    ObjectClass::Segment,
                    Some(seg.sequence),
                    seg.byterange.as_ref(),
                );
            }
            for part in &m.trailing_parts {
                add(&part.uri, ObjectClass::Part, None, part.byterange.as_ref());
            }
            let mut hints = Vec::new();
            for hint in &m.preload_hints {
                let class = if hint.kind == "MAP" {
                    ObjectClass::Init
                } else {
                    ObjectClass::Part
                };
                add(&hint.uri, class, None, None);
                let whole = hint.byterange_start.is_none() && hint.byterange_length.is_none();
                if class == ObjectClass::Part && whole {
                    hints.extend(uri::resolve_path(playlist_path, &hint.uri, bases));
                }
            }
            Ok(PlaylistInfo {
                class: if m.is_vod() {
                    ObjectClass::VodMedia
                } else {
                    ObjectClass::LiveMedia
                },
                target_duration: Some(m.target_duration),
                media_sequence: m.media_sequence,
                references,
                variants: 0,
                timeline: timeline(&m.segments),
                low_latency: low_latency(&m),
                hints,
            })
        }
    }
}

/// The live edge of an LL-HLS media playlist, in parts.
fn low_latency(m: &hls::MediaPlaylist) -> Option<LowLatency> {
    if m.is_vod() {
        return None;
    }
    Some(LowLatency {
        can_block_reload: m.server_control.can_block_reload,
        part_target: m.part_target?,
        target: m.target_duration,
        next_msn: m.next_sequence(),
        trailing_parts: m.trailing_parts.len() as u64,
    })
}

/// The newest segment of a media playlist, and when it ends by its date.
fn timeline(segments: &[hls::playlist::Segment]) -> Timeline {
    let newest = segments.last();
    Timeline {
        newest: newest.map(|s| (s.sequence, s.duration)),
        newest_end: newest
            .and_then(|s| s.program_date_time.and_then(|d| d.checked_add(s.duration))),
    }
}

/// The body with absolute URLs at one of the origins (`bases`) made root-relative, so viewers
/// fetch those objects through the gateway; `None` when there are none.
pub fn rebase_playlist(body: &[u8], bases: &[&str]) -> Option<Vec<u8>> {
    if bases.is_empty() {
        return None;
    }
    match rewrite::rewrite_uris(body, |u, _| uri::rebase(u, bases)) {
        Cow::Borrowed(_) => None,
        Cow::Owned(rewritten) => Some(rewritten),
    }
}

/// A playlist body served at `playlist_path` with `token=` set on every URI that names a gateway
/// object (segments, variants, `URI=` attributes), every other byte kept; `None` when it names none.
pub fn with_token(playlist_path: &str, body: &[u8], token: &str) -> Option<Vec<u8>> {
    let rewritten = rewrite::rewrite_uris(body, |uri, _| {
        uri::resolve_path(playlist_path, uri, &[]).map(|_| rewrite::set_query(uri, "token", token))
    });
    match rewritten {
        Cow::Borrowed(_) => None,
        Cow::Owned(rewritten) => Some(rewritten),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=426x240\n240p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=600000\n360p/index.m3u8\n";
    const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:100\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\nseg_100.m4s\n#EXTINF:4.0,\nseg_101.m4s\n";
    const VOD: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2.0,\nseg_000.ts\n#EXT-X-ENDLIST\n";

    #[test]
    fn classifies_multivariant_and_names_variants() {
        let info = parse_playlist("/demo/live/master.m3u8", MASTER.as_bytes(), &[]).unwrap();
        assert_eq!(info.class, ObjectClass::Multivariant);
        assert_eq!(info.references.len(), 2);
        assert_eq!(info.variants, 2);
        assert_eq!(info.references[0].path, "/demo/live/240p/index.m3u8");
        assert_eq!(info.references[0].class, ObjectClass::Playlist);
    }

    #[test]
    fn classifies_live_media_with_target_and_sequences() {
        let info = parse_playlist("/s/v/index.m3u8", LIVE.as_bytes(), &[]).unwrap();
        assert_eq!(info.class, ObjectClass::LiveMedia);
        assert_eq!(info.target_duration, Some(Duration::from_secs(4)));
        assert_eq!(info.references[0].path, "/s/v/init.mp4");
        assert_eq!(info.references[0].class, ObjectClass::Init);
        assert_eq!(info.references[1].sequence, Some(100));
        assert_eq!(info.last_sequence(), Some(101));
    }

    #[test]
    fn classifies_vod_media() {
        let info = parse_playlist("/v/index.m3u8", VOD.as_bytes(), &[]).unwrap();
        assert_eq!(info.class, ObjectClass::VodMedia);
        assert_eq!(info.references[0].class, ObjectClass::Segment);
    }

    #[test]
    fn finds_ll_hls_parts() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1.0\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PART:DURATION=1.0,URI=\"p1.0.m4s\"\n#EXTINF:4.0,\ns1.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.0.m4s\"\n";
        let info = parse_playlist("/a/i.m3u8", body.as_bytes(), &[]).unwrap();
        assert_eq!(info.class, ObjectClass::LiveMedia);
        let parts: Vec<_> = info
            .references
            .iter()
            .filter(|r| r.class == ObjectClass::Part)
            .map(|r| r.path.as_str())
            .collect();
        assert!(parts.contains(&"/a/p1.0.m4s"), "{parts:?}");
        // Segment 1 is whole, segment 2 has no part yet; no blocking reloads offered.
        let ll = info.low_latency.unwrap();
        assert_eq!((ll.next_msn, ll.trailing_parts), (2, 0));
        assert!(!ll.can_block_reload);
        assert_eq!(ll.part_target, Duration::from_secs(1));
        assert_eq!(info.hints, vec!["/a/p2.0.m4s".to_owned()]);
        let trailing = format!(
            "{}#EXT-X-PART:DURATION=1.0,URI=\"p2.0.m4s\"\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES\n",
            body.replace("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.0.m4s\"\n", "")
        );
        let ll = parse_playlist("/a/i.m3u8", trailing.as_bytes(), &[])
            .unwrap()
            .low_latency
            .unwrap();
        assert_eq!((ll.next_msn, ll.trailing_parts), (2, 1));
        assert!(ll.can_block_reload);
        let classic = parse_playlist("/s/v/index.m3u8", LIVE.as_bytes(), &[]).unwrap();
        assert_eq!(classic.low_latency, None);
    }

    #[test]
    fn not_playlists_and_empty_playlists() {
        for body in [&b""[..], b"\xff\xfe", b"not a playlist", b"<html>"] {
            assert_eq!(
                parse_playlist("/x.m3u8", body, &[]),
                Err(ParseError::NotAPlaylist)
            );
        }
        let empty = parse_playlist("/x.m3u8", b"#EXTM3U\n#EXT-X-VERSION:3\n", &[]).unwrap();
        assert_eq!(empty.class, ObjectClass::Playlist);
        let headers_only = parse_playlist("/x.m3u8", b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n", &[]);
        assert_eq!(headers_only.unwrap().class, ObjectClass::LiveMedia);
    }

    #[test]
    fn references_are_deduplicated_in_linear_time() {
        let mut body =
            String::from("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n");
        for i in 0..60_000 {
            body.push_str(&format!("#EXTINF:2,\n{i}.m4s\n"));
        }
        let info = parse_playlist("/l/i.m3u8", body.as_bytes(), &[]).unwrap();
        assert_eq!(
            info.references.len(),
            60_001,
            "one init section, named once"
        );
        assert_eq!(info.last_sequence(), Some(59_999));
    }

    #[test]
    fn absolute_origin_urls_are_gateway_objects_and_are_rebased() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nhttp://o:9/hls/s/seg/1.ts?v=1\n\
                    #EXTINF:2,\nhttps://elsewhere/2.ts\n";
        let bases = ["http://o:9/hls/"];
        let info = parse_playlist("/s/v/i.m3u8", body.as_bytes(), &bases).unwrap();
        let paths: Vec<&str> = info.references.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/s/seg/1.ts"]);
        let rebased = rebase_playlist(body.as_bytes(), &bases).unwrap();
        let text = String::from_utf8(rebased).unwrap();
        assert!(text.contains("\n/s/seg/1.ts?v=1\n"), "{text}");
        assert!(
            text.contains("\nhttps://elsewhere/2.ts\n"),
            "other hosts are left alone"
        );
        assert_eq!(
            rebase_playlist(b"#EXTM3U\n#EXTINF:2,\na.ts\n", &bases),
            None
        );
    }

    #[test]
    fn names_and_content_types() {
        assert_eq!(class_from_name("/a/seg.ts"), ObjectClass::Segment);
        assert_eq!(class_from_name("/a/init.mp4"), ObjectClass::Init);
        assert_eq!(class_from_name("/a/index.m3u8"), ObjectClass::Playlist);
        assert_eq!(class_from_name("/a/k.key"), ObjectClass::Key);
        assert_eq!(class_from_name("/a/README"), ObjectClass::Other);
        assert_eq!(
            content_type("/a.ts", ObjectClass::Segment),
            Some("video/mp2t")
        );
        assert_eq!(
            content_type("/a.m4s", ObjectClass::Segment),
            Some("video/mp4")
        );
        assert_eq!(
            content_type("/a.m4a", ObjectClass::Segment),
            Some("audio/mp4")
        );
        assert_eq!(
            content_type("/a.aac", ObjectClass::Segment),
            Some("audio/aac")
        );
        assert_eq!(
            content_type("/a.m3u8", ObjectClass::LiveMedia),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(content_type("/a.bin", ObjectClass::Other), None);
    }
}
