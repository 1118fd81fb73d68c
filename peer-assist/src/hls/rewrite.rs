//! Rewriting the URIs of a playlist, line by line, keeping every other byte: line ends, unknown
//! tags, attribute order and spacing, comments. Used to point absolute origin URLs at the gateway
//! and to carry a viewer's token onto every URI of the playlists it is served.

use std::borrow::Cow;

use super::attributes;

/// What a URI names, by where it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriKind {
    /// The line after `EXT-X-STREAM-INF`: a variant's media playlist.
    Variant,
    /// `EXT-X-MEDIA` `URI=`: an alternate rendition's media playlist.
    Rendition,
    /// `EXT-X-I-FRAME-STREAM-INF` `URI=`.
    IFramePlaylist,
    /// A plain line in a media playlist: a segment.
    Segment,
    /// `EXT-X-MAP` `URI=`.
    Map,
    /// `EXT-X-KEY` / `EXT-X-SESSION-KEY` `URI=`.
    Key,
    /// `EXT-X-PART` `URI=`.
    Part,
    /// `EXT-X-PRELOAD-HINT` `URI=`.
    PreloadHint,
    /// `EXT-X-RENDITION-REPORT` `URI=`.
    RenditionReport,
    /// `EXT-X-SESSION-DATA` `URI=`.
    SessionData,
}

/// The kind of the `URI=` attribute of `tag`, for the tags that have one.
fn attribute_kind(tag: &str) -> Option<UriKind> {
    Some(match tag {
        "#EXT-X-MEDIA" => UriKind::Rendition,
        "#EXT-X-I-FRAME-STREAM-INF" => UriKind::IFramePlaylist,
        "#EXT-X-MAP" => UriKind::Map,
        "#EXT-X-KEY" | "#EXT-X-SESSION-KEY" => UriKind::Key,
        "#EXT-X-PART" => UriKind::Part,
        "#EXT-X-PRELOAD-HINT" => UriKind::PreloadHint,
        "#EXT-X-RENDITION-REPORT" => UriKind::RenditionReport,
        "#EXT-X-SESSION-DATA" => UriKind::SessionData,
        _ => return None,
    })
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// Calls `rewrite` with every URI of the playlist and its kind; where it returns a new URI, that
/// replaces the old one. The body is borrowed back unchanged when nothing was replaced.
pub fn rewrite_uris(
    body: &[u8],
    mut rewrite: impl FnMut(&str, UriKind) -> Option<String>,
) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut after_stream_inf = false;
    let mut at = 0;
    for raw in body.split_inclusive(|&b| b == b'\n') {
        let start = at;
        at += raw.len();
        let content_len = raw
            .iter()
            .rposition(|&b| b != b'\n' && b != b'\r')
            .map_or(0, |i| i + 1);
        // A byte order mark before `#EXTM3U` (the parser allows one) is kept, never read as a URI.
        let bom = if start == 0 && raw.starts_with(BOM) {
            BOM.len()
        } else {
            0
        };
        let Ok(line) = std::str::from_utf8(&raw[bom..content_len.max(bom)]) else {
            if let Some(out) = &mut out {
                out.extend_from_slice(raw);
            }
            continue;
        };
        let trimmed = line.trim();
        let mut replaced: Option<String> = None;
        if trimmed.is_empty() {
            // Blank lines are kept as they are.
        } else if trimmed.starts_with('#') {
            let (tag, _) = trimmed.split_once(':').unwrap_or((trimmed, ""));
            if tag == "#EXT-X-STREAM-INF" {
                after_stream_inf = true;
            }
            if let Some(kind) = attribute_kind(tag) {
                if let Some(colon) = line.find(':') {
                    let list = &line[colon + 1..];
                    let uri = attributes::parse(list)
                        .into_iter()
                        .find(|a| a.name == "URI" && a.quoted);
                    if let Some(uri) = uri {
                        if let Some(new) = rewrite(uri.value, kind) {
                            let span = (colon + 1 + uri.span.start)..(colon + 1 + uri.span.end);
                            replaced = Some(format!(
                                "{}{}{}",
                                &line[..span.start],
                                new,
                                &line[span.end..]
                            ));
                        }
                    }
                }
            }
        } else {
            let kind = if after_stream_inf {
                UriKind::Variant
            } else {
                UriKind::Segment
            };
            after_stream_inf = false;
            if let Some(new) = rewrite(trimmed, kind) {
                let lead = line.len() - line.trim_start().len();
                let tail = line.trim_end().len();
                replaced = Some(format!("{}{}{}", &line[..lead], new, &line[tail..]));
            }
        }
        match (replaced, &mut out) {
            (Some(new), out) => {
                let out = out.get_or_insert_with(|| body[..start + bom].to_vec());
                out.extend_from_slice(new.as_bytes());
                out.extend_from_slice(&raw[content_len..]);
            }
            (None, Some(out)) => out.extend_from_slice(raw),
            (None, None) => {}
        }
    }
    match out {
        Some(out) => Cow::Owned(out),
        None => Cow::Borrowed(body),
    }
}

/// `uri` with its `name` query parameters replaced by `name=value` (before any fragment). `name`
/// and `value` must already be percent-encoded as needed.
pub fn set_query(uri: &str, name: &str, value: &str) -> String {
    let (base, fragment) = match uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (uri, None),
    };
    let (path, query) = base.split_once('?').unwrap_or((base, ""));
    let prefix = format!("{name}=");
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && *p != name && !p.starts_with(&prefix))
        .collect();
    let mut out = path.to_owned();
    for (i, p) in kept.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(p);
    }
    out.push(if kept.is_empty() { '?' } else { '&' });
    out.push_str(&prefix);
    out.push_str(value);
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// `uri` with `name=value` added to its query (before any fragment). `name` and `value` must
/// already be percent-encoded as needed.
pub fn add_query(uri: &str, name: &str, value: &str) -> String {
    let (base, fragment) = match uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (uri, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    match fragment {
        Some(f) => format!("{base}{sep}{name}={value}#{f}"),
        None => format!("{base}{sep}{name}={value}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\r\n#EXT-X-VERSION:6\r\n\
        #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"\r\n\
        #EXT-X-STREAM-INF:BANDWIDTH=300000,AUDIO=\"a\"\r\n  240p/index.m3u8  \r\n\
        #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=9,URI=\"if.m3u8\"\r\n# comment with URI=\"x\"\r\n\
        #EXT-X-FUTURE-TAG:URI=\"keep.me\"\r\n";

    #[test]
    fn every_uri_is_seen_with_its_kind_and_other_bytes_are_kept() {
        let mut seen = Vec::new();
        let out = rewrite_uris(MASTER.as_bytes(), |uri, kind| {
            seen.push((uri.to_owned(), kind));
            Some(add_query(uri, "token", "T"))
        });
        assert_eq!(
            seen,
            [
                ("audio/en.m3u8".to_owned(), UriKind::Rendition),
                ("240p/index.m3u8".to_owned(), UriKind::Variant),
                ("if.m3u8".to_owned(), UriKind::IFramePlaylist),
            ]
        );
        let expected = MASTER
            .replace("audio/en.m3u8", "audio/en.m3u8?token=T")
            .replace("  240p/index.m3u8  ", "  240p/index.m3u8?token=T  ")
            .replace("\"if.m3u8\"", "\"if.m3u8?token=T\"");
        assert_eq!(String::from_utf8(out.into_owned()).unwrap(), expected);
    }

    #[test]
    fn media_playlist_tags() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"7@0\"\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"k?x=1\",IV=0x1\n#EXT-X-PART:DURATION=1,URI=\"p.0.m4s\"\n\
            #EXTINF:4,\ns.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p.1.m4s\"\n\
            #EXT-X-RENDITION-REPORT:URI=\"../b/i.m3u8\",LAST-MSN=3\n";
        let mut kinds = Vec::new();
        let out = rewrite_uris(text.as_bytes(), |uri, kind| {
            kinds.push(kind);
            Some(add_query(uri, "t", "1"))
        });
        assert_eq!(
            kinds,
            [
                UriKind::Map,
                UriKind::Key,
                UriKind::Part,
                UriKind::Segment,
                UriKind::PreloadHint,
                UriKind::RenditionReport
            ]
        );
        let out = String::from_utf8(out.into_owned()).unwrap();
        assert!(out.contains("URI=\"k?x=1&t=1\",IV=0x1"), "{out}");
        assert!(out.contains("\ns.m4s?t=1\n"), "{out}");
        assert!(out.contains("BYTERANGE=\"7@0\""));
    }

    /// Found by the `playlist` fuzz target: a BOM made `#EXTM3U` look like a segment line.
    #[test]
    fn a_byte_order_mark_is_kept_and_never_read_as_a_uri() {
        let body = "\u{feff}#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n";
        let out = rewrite_uris(body.as_bytes(), |u, _| Some(format!("{u}?t=1")));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\u{feff}#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts?t=1\n"
        );
        let bare = "\u{feff}a.ts\n";
        let out = rewrite_uris(bare.as_bytes(), |u, _| Some(format!("{u}?t=1")));
        assert_eq!(std::str::from_utf8(&out).unwrap(), "\u{feff}a.ts?t=1\n");
    }

    #[test]
    fn nothing_replaced_borrows_the_body() {
        let out = rewrite_uris(MASTER.as_bytes(), |_, _| None);
        assert!(matches!(out, Cow::Borrowed(_)));
        let binary = b"#EXTM3U\n\xff\xfe\n#EXTINF:1,\na.ts";
        let out = rewrite_uris(binary, |u, _| Some(format!("/x/{u}")));
        assert_eq!(
            &*out,
            &b"#EXTM3U\n\xff\xfe\n#EXTINF:1,\n/x/a.ts"[..],
            "no final newline kept"
        );
    }

    #[test]
    fn queries_are_appended_before_fragments() {
        assert_eq!(add_query("a.ts", "t", "1"), "a.ts?t=1");
        assert_eq!(add_query("a.ts?x=2", "t", "1"), "a.ts?x=2&t=1");
        assert_eq!(add_query("a.ts#f", "t", "1"), "a.ts?t=1#f");
        assert_eq!(
            set_query("a.ts?token=x&v=1#f", "token", "T"),
            "a.ts?v=1&token=T#f"
        );
        assert_eq!(set_query("a.ts", "token", "T"), "a.ts?token=T");
        assert_eq!(set_query("a.ts?token", "token", "T"), "a.ts?token=T");
    }
}
