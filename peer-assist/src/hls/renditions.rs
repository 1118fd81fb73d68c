//! The renditions of a stream, numbered as `join.rendition` and the digests endpoint name them
//! (docs/PROTOCOL.md §1): the variants (`EXT-X-STREAM-INF`) first, in playlist order, then every
//! `EXT-X-MEDIA` with a `URI` (alternate audio, subtitles, any `TYPE`), in playlist order. Each is
//! a media playlist named by its gateway path ([`uri::resolve_path`]); a URI that names no
//! gateway path is not a rendition, and one that resolves to a path already listed is not listed
//! again. So old clients, which only ever counted variants, keep their numbers, and the browser
//! (`web/src/master.js` `parseRenditions`) gives the same list: both pass
//! `tests/vectors/renditions.json`.

use super::playlist::MultivariantPlaylist;
use super::uri;

/// What kind of media playlist a rendition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenditionKind {
    /// An `EXT-X-STREAM-INF` variant.
    Variant,
    /// An `EXT-X-MEDIA`, with its `TYPE` as written (`AUDIO`, `SUBTITLES`, `VIDEO`...).
    Media(String),
}

/// One rendition of a stream: a media playlist peers can swarm on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRendition {
    /// Gateway path of its media playlist.
    pub path: String,
    pub kind: RenditionKind,
}

/// The renditions of the multivariant playlist `m` served at gateway path `master_path`, in
/// rendition-index order. `bases` as in [`uri::resolve_path`].
pub fn stream_renditions(
    master_path: &str,
    m: &MultivariantPlaylist,
    bases: &[&str],
) -> Vec<StreamRendition> {
    let mut out: Vec<StreamRendition> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let variants = m.variants.iter().map(|v| (Some(v.uri.as_str()), None));
    let media = m
        .renditions
        .iter()
        .map(|r| (r.uri.as_deref(), Some(r.kind.as_str())));
    for (reference, media_type) in variants.chain(media) {
        let Some(path) = reference.and_then(|r| uri::resolve_path(master_path, r, bases)) else {
            continue;
        };
        if !seen.insert(path.clone()) {
            continue;
        }
        let kind = match media_type {
            None => RenditionKind::Variant,
            Some(t) => RenditionKind::Media(t.to_owned()),
        };
        out.push(StreamRendition { path, kind });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::{parse, Playlist};

    fn master(text: &str) -> MultivariantPlaylist {
        match parse(text.as_bytes()) {
            Ok(Playlist::Multivariant(m)) => m,
            other => panic!("not a multivariant playlist: {other:?}"),
        }
    }

    /// The shared vectors, which `web/tests/unit/master.test.mjs` replays too.
    #[test]
    fn renditions_match_the_shared_vectors() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/renditions.json")).unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for c in cases {
            let name = c["name"].as_str().unwrap();
            let m = master(c["playlist"].as_str().unwrap());
            let got: Vec<(String, String)> =
                stream_renditions(c["master"].as_str().unwrap(), &m, &[])
                    .into_iter()
                    .map(|r| {
                        let kind = match r.kind {
                            RenditionKind::Variant => "VARIANT".to_owned(),
                            RenditionKind::Media(t) => t,
                        };
                        (r.path, kind)
                    })
                    .collect();
            let want: Vec<(String, String)> = c["renditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap().to_owned();
                    (s("path"), s("kind"))
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn absolute_urls_at_the_origin_are_renditions_too() {
        let m = master(
            "#EXTM3U\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"http://o:1/hls/s/a.m3u8\"\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"fr\",URI=\"http://elsewhere/a.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\nv.m3u8\n",
        );
        let paths: Vec<String> = stream_renditions("/s/master.m3u8", &m, &["http://o:1/hls/"])
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, ["/s/v.m3u8", "/s/a.m3u8"]);
    }
}
