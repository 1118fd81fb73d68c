//! HLS as every part of the project reads it: the gateway (classes, what a playlist names,
//! digests), the native node and the load test (what to fetch and when), and, by the same rules,
//! the browser engine. One parser ([`playlist`]), one way to turn a URI into a segment id
//! ([`uri`]), one reload rule ([`reload_interval`]), one byte-preserving rewrite ([`rewrite`]),
//! one way to name a byte range of a file as a segment ([`range_id`]), one numbering of a
//! stream's renditions ([`stream_renditions`]).

pub mod attributes;
pub mod playlist;
pub mod renditions;
pub mod rewrite;
pub mod uri;

use std::time::Duration;

pub use playlist::{
    parse, parse_with, ByteRange, Limits, MediaPlaylist, MultivariantPlaylist, ParseError, Playlist,
};
pub use renditions::{stream_renditions, RenditionKind, StreamRendition};

/// The segment id of `range` of the file at gateway path `path` (an `EXT-X-BYTERANGE` segment):
/// `{path}#bytes={first}-{last}`, the first and last byte as in an HTTP `Range` header. A path
/// never holds a raw `#` (URL parsers percent-encode it), so the two cannot be confused. An empty
/// range has no id.
pub fn range_id(path: &str, range: ByteRange) -> Option<String> {
    let last = range.offset.checked_add(range.length.checked_sub(1)?)?;
    Some(format!("{path}#bytes={}-{last}", range.offset))
}

/// A segment id split into the gateway path to GET and, for a byte-range segment
/// ([`range_id`]), its range. An id whose suffix is not a valid range is a plain path.
pub fn split_range_id(id: &str) -> (&str, Option<ByteRange>) {
    let parsed = id.rsplit_once("#bytes=").and_then(|(path, span)| {
        let (first, last) = span.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(first) || !digits(last) {
            return None;
        }
        let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
        let length = last.checked_sub(first)?.checked_add(1)?;
        Some((
            path,
            ByteRange {
                offset: first,
                length,
            },
        ))
    });
    match parsed {
        Some((path, range)) => (path, Some(range)),
        None => (id, None),
    }
}

/// RFC 8216 §6.3.4: after a change wait a target duration, after no change half of one.
pub fn reload_interval(target: Duration, changed: bool) -> Duration {
    if changed {
        target
    } else {
        target / 2
    }
}

/// One segment of a [`SegmentList`].
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSegment {
    pub sequence: u64,
    /// Its segment id: the gateway path it resolves to.
    pub id: String,
    pub duration: Duration,
}

/// A media playlist as a peer needs it: its segments named by gateway path, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentList {
    pub segments: Vec<ListedSegment>,
    pub target_duration: Duration,
    pub ended: bool,
}

impl SegmentList {
    /// The segments of `playlist`, served at gateway path `playlist_path`, that resolve to
    /// gateway paths (see [`uri::resolve_path`]).
    pub fn of(playlist_path: &str, playlist: &MediaPlaylist) -> Self {
        Self {
            segments: playlist
                .segments
                .iter()
                .filter_map(|s| {
                    let path = uri::resolve_path(playlist_path, &s.uri, &[])?;
                    let id = match s.byterange {
                        Some(range) => range_id(&path, range)?,
                        None => path,
                    };
                    Some(ListedSegment {
                        sequence: s.sequence,
                        id,
                        duration: s.duration,
                    })
                })
                .collect(),
            target_duration: playlist.target_duration,
            ended: playlist.is_vod(),
        }
    }
}

/// Parses a media playlist body served at gateway path `playlist_path` into its segment list.
pub fn segment_list(playlist_path: &str, body: &[u8]) -> Result<SegmentList, ParseError> {
    match parse(body)? {
        Playlist::Media(m) => Ok(SegmentList::of(playlist_path, &m)),
        Playlist::Multivariant(_) => Err(ParseError::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_lists_name_segments_by_gateway_path() {
        let body = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\n../seg/7.ts\n#EXTINF:1.5,\n/abs/8.ts?x=1\n";
        let list = segment_list("/demo/live/240p/index.m3u8", body).unwrap();
        assert_eq!(list.segments[0].id, "/demo/live/seg/7.ts");
        assert_eq!(list.segments[0].sequence, 7);
        assert_eq!(list.segments[1].id, "/abs/8.ts");
        assert_eq!(list.segments[1].duration, Duration::from_millis(1500));
        assert!(!list.ended);
        assert!(segment_list("/x", b"garbage").is_err());
    }

    #[test]
    fn byte_range_segments_are_named_by_their_range() {
        let body = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
            #EXT-X-MAP:URI=\"v.mp4\",BYTERANGE=\"720@0\"\n\
            #EXTINF:2,\n#EXT-X-BYTERANGE:1000@720\nv.mp4\n#EXTINF:2,\n#EXT-X-BYTERANGE:500\nv.mp4\n\
            #EXT-X-ENDLIST\n";
        let list = segment_list("/vod/index.m3u8", body).unwrap();
        let ids: Vec<&str> = list.segments.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["/vod/v.mp4#bytes=720-1719", "/vod/v.mp4#bytes=1720-2219"]
        );
        for id in ids {
            let (path, range) = split_range_id(id);
            assert_eq!(path, "/vod/v.mp4");
            assert_eq!(range_id(path, range.unwrap()).as_deref(), Some(id));
        }
        assert_eq!(
            split_range_id("/vod/v.mp4#bytes=0-0"),
            (
                "/vod/v.mp4",
                Some(ByteRange {
                    offset: 0,
                    length: 1
                })
            )
        );
    }

    /// The shared vectors (`tests/vectors/segment_ids.json`) the browser's `util.js` passes too.
    #[test]
    fn range_ids_match_the_shared_vectors() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/segment_ids.json")).unwrap();
        let range = |c: &serde_json::Value| ByteRange {
            offset: c["offset"].as_u64().unwrap(),
            length: c["length"].as_u64().unwrap(),
        };
        for c in v["ranges"].as_array().unwrap() {
            let (path, id) = (c["path"].as_str().unwrap(), c["id"].as_str().unwrap());
            assert_eq!(range_id(path, range(c)).as_deref(), Some(id));
            assert_eq!(split_range_id(id), (path, Some(range(c))));
        }
        for c in v["empty"].as_array().unwrap() {
            assert_eq!(range_id(c["path"].as_str().unwrap(), range(c)), None);
        }
        for id in v["plain"].as_array().unwrap() {
            let id = id.as_str().unwrap();
            assert_eq!(split_range_id(id), (id, None), "{id}");
        }
        for c in v["split"].as_array().unwrap() {
            let (path, id) = (c["path"].as_str().unwrap(), c["id"].as_str().unwrap());
            assert_eq!(split_range_id(id), (path, Some(range(c))), "{id}");
        }
    }

    #[test]
    fn odd_range_ids_are_plain_paths() {
        for id in [
            "/a.ts",
            "/a.ts#bytes=",
            "/a.ts#bytes=5-4",
            "/a.ts#bytes=-4",
            "/a.ts#bytes=+1-4",
            "/a.ts#bytes=1-18446744073709551616",
            "/a.ts#bytes=0-18446744073709551615",
        ] {
            assert_eq!(split_range_id(id), (id, None), "{id}");
        }
        let empty = ByteRange {
            offset: 9,
            length: 0,
        };
        assert_eq!(range_id("/a.ts", empty), None);
        let at_end = ByteRange {
            offset: u64::MAX,
            length: 2,
        };
        assert_eq!(range_id("/a.ts", at_end), None, "past u64::MAX");
    }

    #[test]
    fn reload_interval_follows_rfc8216() {
        let t = Duration::from_secs(4);
        assert_eq!(reload_interval(t, true), t);
        assert_eq!(reload_interval(t, false), Duration::from_secs(2));
    }
}
