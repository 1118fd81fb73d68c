//! An encoder restarted under the same names (pure): a live media playlist whose new version
//! cannot follow from the previous one. An encoder started again from scratch writes `0.ts`,
//! `1.ts`, `init.mp4` again; segments are cached as immutable for a day, so without this viewers
//! (and peers, through the digests) would get the previous run's bytes and init section under the
//! new playlist.
//!
//! [`detect`] compares what the gateway kept of the previous version ([`LiveShape`]) with the new
//! one; [`invalidations`] says which names then lose their cached objects. The edge also drops every
//! other object the playlist named before (see `Edge::learn`): a restarted encoder reaches those
//! names again later.

use std::collections::{HashMap, HashSet};

use crate::hls::{LiveShape, PlaylistInfo};

/// Why a new version of a live playlist is a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// `EXT-X-MEDIA-SEQUENCE` went backwards.
    SequenceBack,
    /// A segment name now has another media sequence number.
    NameReused,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` went backwards, or a segment name now belongs to another
    /// discontinuity sequence.
    Discontinuity,
    /// A segment name now has another init section, or an init section URI another byte range.
    InitChanged,
}

impl Restart {
    pub fn label(self) -> &'static str {
        match self {
            Restart::SequenceBack => "sequence_back",
            Restart::NameReused => "name_reused",
            Restart::Discontinuity => "discontinuity",
            Restart::InitChanged => "init_changed",
        }
    }
}

/// Whether `new` cannot be a later version of the live playlist `old` of the same encoder run.
///
/// A version whose sequence numbers went back but whose names still mean what they meant (an origin
/// behind a balancer lagging by a segment) is no restart: only names that changed meaning, or a
/// window that went back and shares no name with the old one, are.
pub fn detect(old: &LiveShape, new: &LiveShape) -> Option<Restart> {
    let mut shared = 0usize;
    let before: HashMap<&str, _> = old.segments.iter().map(|s| (s.path.as_str(), s)).collect();
    let mut old_ranges: HashMap<&str, HashSet<Option<(u64, u64)>>> = HashMap::new();
    for (path, range) in old.segments.iter().filter_map(|s| s.map.as_ref()) {
        old_ranges.entry(path.as_str()).or_default().insert(*range);
    }
    for segment in &new.segments {
        if let Some((path, range)) = &segment.map {
            if old_ranges
                .get(path.as_str())
                .is_some_and(|ranges| !ranges.contains(range))
            {
                return Some(Restart::InitChanged);
            }
        }
        let Some(was) = before.get(segment.path.as_str()) else {
            continue;
        };
        shared += 1;
        if was.sequence != segment.sequence {
            return Some(Restart::NameReused);
        }
        if was.discontinuity_sequence != segment.discontinuity_sequence {
            return Some(Restart::Discontinuity);
        }
        if was.map != segment.map {
            return Some(Restart::InitChanged);
        }
    }
    if shared == 0 && new.media_sequence < old.media_sequence {
        return Some(Restart::SequenceBack);
    }
    if shared == 0 && new.discontinuity_sequence < old.discontinuity_sequence {
        return Some(Restart::Discontinuity);
    }
    None
}

/// The names whose cached objects a restart makes wrong: every media object the new version names
/// (segments, parts, init sections: anything cached under them is from before), and every segment
/// and init section the old version named (the new run will reach those names too). Sorted, each
/// once.
pub fn invalidations(old: &LiveShape, new: &PlaylistInfo) -> Vec<String> {
    let mut names: Vec<String> = new
        .references
        .iter()
        .filter(|r| r.class.is_media())
        .map(|r| r.path.clone())
        .collect();
    for segment in &old.segments {
        names.push(segment.path.clone());
        if let Some((path, _)) = &segment.map {
            names.push(path.clone());
        }
    }
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::parse_playlist_shaped;

    fn parsed(body: &str) -> (PlaylistInfo, LiveShape) {
        let (info, shape) = parse_playlist_shaped("/l/index.m3u8", body.as_bytes(), &[]).unwrap();
        (info, shape.expect("a live playlist has a shape"))
    }

    /// A live playlist from `first`, three segments named `{first + i}.m4s` after `names_from`.
    fn playlist(first: u64, names_from: u64, map: &str, disc: u64) -> String {
        let mut text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:{disc}\n{map}\n"
        );
        for i in 0..3 {
            text.push_str(&format!("#EXTINF:2,\n{}.m4s\n", names_from + i));
        }
        text
    }

    const INIT: &str = "#EXT-X-MAP:URI=\"init.mp4\"";

    #[test]
    fn a_live_window_moving_on_is_no_restart() {
        let (_, a) = parsed(&playlist(100, 100, INIT, 0));
        let (_, b) = parsed(&playlist(101, 101, INIT, 0));
        assert_eq!(detect(&a, &b), None);
        assert_eq!(detect(&a, &a), None, "unchanged");
        // A discontinuity sliding out raises the discontinuity sequence: normal.
        let (_, c) = parsed(&playlist(102, 102, INIT, 1));
        let (_, d) = parsed(&playlist(103, 103, INIT, 1));
        assert_eq!(detect(&c, &d), None);
    }

    #[test]
    fn the_media_sequence_going_back_is_a_restart() {
        let (_, old) = parsed(&playlist(100, 100, INIT, 0));
        let (new_info, new) = parsed(&playlist(0, 0, INIT, 0));
        assert_eq!(detect(&old, &new), Some(Restart::SequenceBack));
        assert_eq!(
            invalidations(&old, &new_info),
            [
                "/l/0.m4s",
                "/l/1.m4s",
                "/l/100.m4s",
                "/l/101.m4s",
                "/l/102.m4s",
                "/l/2.m4s",
                "/l/init.mp4"
            ]
        );
    }

    #[test]
    fn a_name_under_another_sequence_number_is_a_restart() {
        // The sequence number moved on, but `5.m4s` is now segment 7: names were reused.
        let (_, old) = parsed(&playlist(5, 5, INIT, 0));
        let (_, new) = parsed(&playlist(7, 5, INIT, 0));
        assert_eq!(detect(&old, &new), Some(Restart::NameReused));
    }

    #[test]
    fn another_init_section_or_discontinuity_under_the_same_names_is_a_restart() {
        let (_, old) = parsed(&playlist(5, 5, INIT, 0));
        let (_, new_map) = parsed(&playlist(5, 5, "#EXT-X-MAP:URI=\"init2.mp4\"", 0));
        assert_eq!(detect(&old, &new_map), Some(Restart::InitChanged));
        let (_, ranged) = parsed(&playlist(
            5,
            5,
            "#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"800@0\"",
            0,
        ));
        let (_, reranged) = parsed(&playlist(
            6,
            6,
            "#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"900@0\"",
            0,
        ));
        assert_eq!(
            detect(&ranged, &reranged),
            Some(Restart::InitChanged),
            "the same init URI with another byte range, even under new segment names"
        );
        let (_, disc) = parsed(&playlist(5, 5, INIT, 3));
        assert_eq!(detect(&old, &disc), Some(Restart::Discontinuity));
        assert_eq!(
            detect(&disc, &old),
            Some(Restart::Discontinuity),
            "backwards"
        );
        let (_, later) = parsed(&playlist(50, 50, INIT, 1));
        assert_eq!(
            detect(&disc, &later),
            Some(Restart::Discontinuity),
            "the discontinuity sequence back, no name shared"
        );
    }

    #[test]
    fn an_origin_lagging_a_segment_behind_is_no_restart() {
        let (_, ahead) = parsed(&playlist(101, 101, INIT, 0));
        let (_, behind) = parsed(&playlist(100, 100, INIT, 0));
        assert_eq!(detect(&ahead, &behind), None, "the names mean the same");
    }

    #[test]
    fn vod_and_multivariant_playlists_have_no_shape() {
        let vod = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n";
        let (_, shape) = parse_playlist_shaped("/v/i.m3u8", vod.as_bytes(), &[]).unwrap();
        assert_eq!(shape, None);
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n";
        let (_, shape) = parse_playlist_shaped("/m.m3u8", master.as_bytes(), &[]).unwrap();
        assert_eq!(shape, None);
    }
}
