//! HLS as every part of the project reads it: the gateway (classes, what a playlist names,
//! digests), the native node and the load test (what to fetch and when), and, by the same rules,
//! the browser engine. One parser ([`playlist`]), one way to turn a URI into a segment id
//! ([`uri`]), one reload rule ([`reload_interval`]), one byte-preserving rewrite ([`rewrite`]).

pub mod attributes;
pub mod playlist;
pub mod rewrite;
pub mod uri;

use std::time::Duration;

pub use playlist::{
    parse, parse_with, Limits, MediaPlaylist, MultivariantPlaylist, ParseError, Playlist,
};

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
                    Some(ListedSegment {
                        sequence: s.sequence,
                        id: uri::resolve_path(playlist_path, &s.uri, &[])?,
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
    fn reload_interval_follows_rfc8216() {
        let t = Duration::from_secs(4);
        assert_eq!(reload_interval(t, true), t);
        assert_eq!(reload_interval(t, false), Duration::from_secs(2));
    }
}
