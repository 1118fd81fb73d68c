//! What a URI written in a playlist names: one answer for the gateway, the native node, the load
//! test and the browser (whose URL parser the rules follow), so one object has one segment id
//! everywhere.
//!
//! Resolution is RFC 3986 §5.2 (dot segments removed, `..` above the root stays at the root, as
//! browsers do); the query and fragment are not part of a path; bytes a browser would
//! percent-encode in a path (spaces, quotes, `<>`, `` ` ``, `{}`, controls, non-ASCII) are
//! percent-encoded the same way; and, as a browser does for `http(s)` URLs, a backslash before
//! the query is a slash (`browser_slashes`).

use std::borrow::Cow;

/// The path on the gateway named by `reference` in the playlist at `playlist_path` (a gateway path):
/// relative and root-relative references, and absolute URLs that start with one of `bases` (the
/// gateway's origins: `http://origin:8080/hls` names gateway path `/x` as
/// `http://origin:8080/hls/x`). `None` for other absolute URLs (another host) and `data:` URIs.
pub fn resolve_path(playlist_path: &str, reference: &str, bases: &[&str]) -> Option<String> {
    let reference = browser_slashes(reference.trim());
    let reference = strip_query(&reference);
    if reference.is_empty() {
        return None;
    }
    if let Some(rest) = absolute_under(reference, bases) {
        return Some(normalize_path(&format!("/{rest}")));
    }
    if has_scheme(reference) || reference.starts_with("//") {
        return None;
    }
    if reference.starts_with('/') {
        return Some(normalize_path(reference));
    }
    let dir = playlist_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    Some(normalize_path(&format!("{dir}/{reference}")))
}

/// The part of an absolute URL after one of `bases`, if it starts with one.
fn absolute_under<'a>(reference: &'a str, bases: &[&str]) -> Option<&'a str> {
    bases.iter().find_map(|base| {
        let base = base.trim_end_matches('/');
        let rest = reference.strip_prefix(base)?;
        rest.strip_prefix('/').or(rest.is_empty().then_some(""))
    })
}

/// `reference` made root-relative if it is an absolute URL under one of `bases` (query and
/// fragment kept): how the gateway points viewers at itself for objects its origin named by
/// absolute URL. `None` for anything else.
pub fn rebase(reference: &str, bases: &[&str]) -> Option<String> {
    let trimmed = browser_slashes(reference.trim());
    let trimmed = trimmed.as_ref();
    let path_end = trimmed.find(['?', '#']).unwrap_or(trimmed.len());
    let (url, tail) = trimmed.split_at(path_end);
    let rest = absolute_under(url, bases)?;
    Some(format!("{}{tail}", normalize_path(&format!("/{rest}"))))
}

/// The absolute URL `reference` names in a playlist whose own URL is `base` (an absolute
/// `http(s)://authority/path?query` URL), query kept, fragment dropped.
pub fn resolve_url(base: &str, reference: &str) -> Result<String, String> {
    let reference = browser_slashes(reference.trim());
    let reference = reference.as_ref();
    let reference = reference.split('#').next().unwrap_or_default();
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| format!("{base:?} is not an absolute URL"))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, base_rest) = rest.split_at(authority_end);
    let base_path_query = base_rest.split('#').next().unwrap_or_default();
    let (base_path, base_query) = match base_path_query.split_once('?') {
        Some((p, q)) => (if p.is_empty() { "/" } else { p }, Some(q)),
        None => (
            if base_path_query.is_empty() {
                "/"
            } else {
                base_path_query
            },
            None,
        ),
    };
    if has_scheme(reference) {
        let (s, r) = reference
            .split_once("://")
            .ok_or_else(|| format!("{reference:?} is not a URL"))?;
        return Ok(with_normal_path(s, r));
    }
    if let Some(r) = reference.strip_prefix("//") {
        return Ok(with_normal_path(scheme, r));
    }
    let (ref_path, ref_query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    let (path, query) = if ref_path.is_empty() {
        (normalize_path(base_path), ref_query.or(base_query))
    } else if ref_path.starts_with('/') {
        (normalize_path(ref_path), ref_query)
    } else {
        let dir = base_path.rsplit_once('/').map_or("", |(dir, _)| dir);
        (normalize_path(&format!("{dir}/{ref_path}")), ref_query)
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("{scheme}://{authority}{path}{query}"))
}

/// `scheme://rest` with the path of `rest` normalised.
fn with_normal_path(scheme: &str, rest: &str) -> String {
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        normalize_path(path)
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{scheme}://{authority}{path}{query}")
}

/// `reference` with every backslash before its query or fragment made a slash, unless it names a
/// scheme other than `http(s)`, `ws(s)`, `ftp` or `file`: what the WHATWG URL parser does for
/// these ("special") schemes, and so what a browser's player requests (`v0\1.ts` is `v0/1.ts`).
/// Playlist references are resolved against `http(s)` URLs, so a relative one is special too.
fn browser_slashes(reference: &str) -> Cow<'_, str> {
    let path_end = reference.find(['?', '#']).unwrap_or(reference.len());
    let (path, tail) = reference.split_at(path_end);
    let special = || {
        !has_scheme(path)
            || ["http:", "https:", "ws:", "wss:", "ftp:", "file:"]
                .iter()
                .any(|s| {
                    path.get(..s.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(s))
                })
    };
    if path.contains('\\') && special() {
        Cow::Owned(format!("{}{tail}", path.replace('\\', "/")))
    } else {
        Cow::Borrowed(reference)
    }
}

/// The reference without its query and fragment.
fn strip_query(reference: &str) -> &str {
    reference.split(['?', '#']).next().unwrap_or(reference)
}

/// Whether `s` starts with a URI scheme (`http:`, `data:`, `skd:`...).
pub fn has_scheme(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let scheme = &s[..colon];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// An absolute path with dot segments removed (RFC 3986 §5.2.4) and percent-encoded like a
/// browser's URL parser would.
pub fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | "%2e" | "%2E" => {
                if i == last {
                    out.push("");
                }
            }
            ".." | ".%2e" | ".%2E" | "%2e." | "%2E." | "%2e%2e" | "%2E%2E" | "%2e%2E"
            | "%2E%2e" => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    encode_path(&format!("/{}", out.join("/")))
}

/// Percent-encodes what the WHATWG URL standard's path percent-encode set holds (controls,
/// space, `"`, `#`, `<`, `>`, `?`, `` ` ``, `{`, `}`, and non-ASCII); `%` stays (an existing
/// escape, or a lone `%` a browser also leaves alone).
fn encode_path(path: &str) -> String {
    let needs = |b: u8| {
        b <= 0x20 || b >= 0x7f || matches!(b, b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}')
    };
    if !path.bytes().any(needs) {
        return path.to_owned();
    }
    let mut out = String::with_capacity(path.len() + 16);
    for b in path.bytes() {
        if needs(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_a_browser() {
        let p = |r: &str| resolve_path("/demo/vod/240p/index.m3u8", r, &[]);
        assert_eq!(
            p("seg_001.ts").as_deref(),
            Some("/demo/vod/240p/seg_001.ts")
        );
        assert_eq!(
            p("seg_001.ts?token=1#t").as_deref(),
            Some("/demo/vod/240p/seg_001.ts")
        );
        assert_eq!(p("../seg/1.ts").as_deref(), Some("/demo/vod/seg/1.ts"));
        assert_eq!(
            p("./a/./b/../c.ts").as_deref(),
            Some("/demo/vod/240p/a/c.ts")
        );
        assert_eq!(p("/x/y.ts").as_deref(), Some("/x/y.ts"));
        assert_eq!(
            p("../../../../x.ts").as_deref(),
            Some("/x.ts"),
            "stays at the root"
        );
        assert_eq!(p("seg 1.ts").as_deref(), Some("/demo/vod/240p/seg%201.ts"));
        assert_eq!(p("é.ts").as_deref(), Some("/demo/vod/240p/%C3%A9.ts"));
        assert_eq!(p("a%20b.ts").as_deref(), Some("/demo/vod/240p/a%20b.ts"));
        assert_eq!(p("https://cdn.example/x.ts"), None);
        assert_eq!(p("//cdn.example/x.ts"), None);
        assert_eq!(p("data:text/plain,x"), None);
        assert_eq!(p("skd://key"), None);
        assert_eq!(p(""), None);
        // A backslash before the query is a slash, as in a browser (not in the query).
        assert_eq!(p("v0\\1.ts").as_deref(), Some("/demo/vod/240p/v0/1.ts"));
        assert_eq!(p("..\\seg\\1.ts").as_deref(), Some("/demo/vod/seg/1.ts"));
        assert_eq!(p("\\x\\y.ts").as_deref(), Some("/x/y.ts"));
        assert_eq!(p("\\\\cdn.example\\x.ts"), None, "another host");
        assert_eq!(
            browser_slashes("a\\b.ts?k=\\#f\\"),
            "a/b.ts?k=\\#f\\",
            "query and fragment kept"
        );
        assert_eq!(browser_slashes("data:a\\b"), "data:a\\b");
        assert_eq!(browser_slashes("HTTP://h\\a.ts"), "HTTP://h/a.ts");
    }

    #[test]
    fn absolute_urls_at_an_origin_are_gateway_paths() {
        let bases = ["http://127.0.0.1:9000/hls/", "https://origin.example"];
        let p = |r: &str| resolve_path("/s/v/index.m3u8", r, &bases);
        assert_eq!(
            p("http://127.0.0.1:9000/hls/s/seg/1.ts").as_deref(),
            Some("/s/seg/1.ts")
        );
        assert_eq!(
            p("https://origin.example/a/../b.ts?x=1").as_deref(),
            Some("/b.ts")
        );
        assert_eq!(
            p("http://127.0.0.1:9000/other/1.ts"),
            None,
            "outside the origin's base"
        );
        assert_eq!(
            p("http://127.0.0.1:9000/hlsx/1.ts"),
            None,
            "a prefix is not a folder"
        );
        assert_eq!(
            rebase("http://127.0.0.1:9000/hls/s/1.ts?t=1#x", &bases).as_deref(),
            Some("/s/1.ts?t=1#x")
        );
        assert_eq!(rebase("s/1.ts", &bases), None);
        assert_eq!(
            rebase("http://127.0.0.1:9000/hls\\s\\1.ts?t=\\", &bases).as_deref(),
            Some("/s/1.ts?t=\\"),
            "the path a browser would request"
        );
        assert_eq!(rebase("https://elsewhere/1.ts", &bases), None);
    }

    #[test]
    fn urls_resolve_per_rfc3986() {
        let base = "http://h:1/a/b/index.m3u8?q=1";
        let r = |x: &str| resolve_url(base, x).unwrap();
        assert_eq!(r("s.ts"), "http://h:1/a/b/s.ts");
        assert_eq!(r("../s.ts?x=2#f"), "http://h:1/a/s.ts?x=2");
        assert_eq!(r("/root.ts"), "http://h:1/root.ts");
        assert_eq!(r("//cdn/x.ts"), "http://cdn/x.ts");
        assert_eq!(r("https://o/p/../q.ts"), "https://o/q.ts");
        assert_eq!(r(""), "http://h:1/a/b/index.m3u8?q=1");
        assert_eq!(resolve_url("http://h", "x.ts").unwrap(), "http://h/x.ts");
        assert_eq!(r("c\\d.ts?x=\\"), "http://h:1/a/b/c/d.ts?x=\\");
        assert!(resolve_url("/relative", "x.ts").is_err());
    }

    #[test]
    fn ids_agree_between_path_and_url_resolution() {
        for r in [
            "s.ts",
            "../s.ts",
            "/x/../y.ts",
            "a b.ts",
            "./q.ts?x",
            "../../../z.ts",
        ] {
            let path = resolve_path("/a/b/index.m3u8", r, &[]).unwrap();
            let url = resolve_url("http://gw:8080/a/b/index.m3u8", r).unwrap();
            let url_path = url.trim_start_matches("http://gw:8080");
            let url_path = url_path.split('?').next().unwrap();
            assert_eq!(path, url_path, "{r}");
        }
    }
}
