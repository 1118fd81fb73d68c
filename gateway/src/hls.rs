//! What an object is, from its bytes or its name (pure).
//!
//! Playlists are classified by parsing them with m3u8-rs; the body itself is always passed through
//! byte for byte. Segments, init sections, parts and keys are known from the playlists that name them
//! and otherwise guessed from the extension.

use std::time::Duration;

use crate::http::path::resolve_reference;

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
}

impl PlaylistInfo {
    /// Highest media sequence number present (the live edge).
    pub fn last_sequence(&self) -> Option<u64> {
        self.references.iter().filter_map(|r| r.sequence).max()
    }
}

/// Classifies a playlist body. Bodies m3u8-rs cannot parse are classified by their tags, so an unusual
/// but valid playlist is never refused.
pub fn parse_playlist(playlist_path: &str, body: &[u8]) -> PlaylistInfo {
    match m3u8_rs::parse_playlist_res(body) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(master)) => {
            let mut references = Vec::new();
            let mut add = |uri: &str, class| {
                if let Some(path) = resolve_reference(playlist_path, uri) {
                    references.push(Reference {
                        path,
                        class,
                        sequence: None,
                    });
                    1
                } else {
                    0
                }
            };
            let mut variants = 0;
            for v in &master.variants {
                variants += add(&v.uri, ObjectClass::Playlist);
            }
            for a in &master.alternatives {
                if let Some(uri) = &a.uri {
                    add(uri, ObjectClass::Playlist);
                }
            }
            for k in &master.session_key {
                if let Some(uri) = &k.0.uri {
                    add(uri, ObjectClass::Key);
                }
            }
            PlaylistInfo {
                class: ObjectClass::Multivariant,
                target_duration: None,
                media_sequence: 0,
                references,
                variants,
            }
        }
        Ok(m3u8_rs::Playlist::MediaPlaylist(media)) => {
            let mut references = Vec::new();
            let mut push = |uri: &str, class, sequence| {
                if let Some(path) = resolve_reference(playlist_path, uri) {
                    if !references.iter().any(|r: &Reference| r.path == path) {
                        references.push(Reference {
                            path,
                            class,
                            sequence,
                        });
                    }
                }
            };
            for (i, seg) in media.segments.iter().enumerate() {
                if let Some(map) = &seg.map {
                    push(&map.uri, ObjectClass::Init, None);
                }
                if let Some(uri) = seg.key.as_ref().and_then(|k| k.uri.as_deref()) {
                    if !uri.starts_with("skd:") {
                        push(uri, ObjectClass::Key, None);
                    }
                }
                for tag in &seg.unknown_tags {
                    if tag.tag == "X-PART" || tag.tag == "X-PRELOAD-HINT" {
                        if let Some(uri) = tag.rest.as_deref().and_then(quoted_uri) {
                            push(uri, ObjectClass::Part, None);
                        }
                    }
                }
                push(
                    &seg.uri,
                    ObjectClass::Segment,
                    Some(media.media_sequence + i as u64),
                );
            }
            for tag in &media.unknown_tags {
                if tag.tag == "X-PART" || tag.tag == "X-PRELOAD-HINT" {
                    if let Some(uri) = tag.rest.as_deref().and_then(quoted_uri) {
                        push(uri, ObjectClass::Part, None);
                    }
                }
            }
            let vod = media.end_list
                || matches!(media.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
            PlaylistInfo {
                class: if vod {
                    ObjectClass::VodMedia
                } else {
                    ObjectClass::LiveMedia
                },
                target_duration: Some(Duration::from_secs(media.target_duration.max(1))),
                media_sequence: media.media_sequence,
                references,
                variants: 0,
            }
        }
        Err(_) => classify_by_tags(body),
    }
}

fn quoted_uri(attrs: &str) -> Option<&str> {
    let start = attrs.find("URI=\"")? + 5;
    let len = attrs[start..].find('"')?;
    Some(&attrs[start..start + len])
}

fn classify_by_tags(body: &[u8]) -> PlaylistInfo {
    let text = String::from_utf8_lossy(body);
    let has = |tag: &str| text.lines().any(|l| l.trim_start().starts_with(tag));
    let target = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("#EXT-X-TARGETDURATION:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.max(1)));
    let class = if has("#EXT-X-STREAM-INF") {
        ObjectClass::Multivariant
    } else if has("#EXT-X-ENDLIST") {
        ObjectClass::VodMedia
    } else if target.is_some() {
        ObjectClass::LiveMedia
    } else {
        ObjectClass::Playlist
    };
    PlaylistInfo {
        class,
        target_duration: target,
        media_sequence: 0,
        references: Vec::new(),
        variants: 0,
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
        let info = parse_playlist("/demo/live/master.m3u8", MASTER.as_bytes());
        assert_eq!(info.class, ObjectClass::Multivariant);
        assert_eq!(info.references.len(), 2);
        assert_eq!(info.variants, 2);
        assert_eq!(info.references[0].path, "/demo/live/240p/index.m3u8");
        assert_eq!(info.references[0].class, ObjectClass::Playlist);
    }

    #[test]
    fn classifies_live_media_with_target_and_sequences() {
        let info = parse_playlist("/s/v/index.m3u8", LIVE.as_bytes());
        assert_eq!(info.class, ObjectClass::LiveMedia);
        assert_eq!(info.target_duration, Some(Duration::from_secs(4)));
        assert_eq!(info.references[0].path, "/s/v/init.mp4");
        assert_eq!(info.references[0].class, ObjectClass::Init);
        assert_eq!(info.references[1].sequence, Some(100));
        assert_eq!(info.last_sequence(), Some(101));
    }

    #[test]
    fn classifies_vod_media() {
        let info = parse_playlist("/v/index.m3u8", VOD.as_bytes());
        assert_eq!(info.class, ObjectClass::VodMedia);
        assert_eq!(info.references[0].class, ObjectClass::Segment);
    }

    #[test]
    fn finds_ll_hls_parts() {
        let body = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1.0\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PART:DURATION=1.0,URI=\"p1.0.m4s\"\n#EXTINF:4.0,\ns1.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.0.m4s\"\n";
        let info = parse_playlist("/a/i.m3u8", body.as_bytes());
        assert_eq!(info.class, ObjectClass::LiveMedia);
        let parts: Vec<_> = info
            .references
            .iter()
            .filter(|r| r.class == ObjectClass::Part)
            .map(|r| r.path.as_str())
            .collect();
        assert!(parts.contains(&"/a/p1.0.m4s"), "{parts:?}");
    }

    #[test]
    fn garbage_never_panics_and_falls_back_to_tags() {
        for body in [
            &b""[..],
            b"\xff\xfe",
            b"#EXTM3U\n#EXT-X-STREAM-INF\n",
            b"not a playlist",
        ] {
            let _ = parse_playlist("/x.m3u8", body);
        }
        let info = classify_by_tags(b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\na.ts\n");
        assert_eq!(info.class, ObjectClass::LiveMedia);
        assert_eq!(info.target_duration, Some(Duration::from_secs(6)));
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
