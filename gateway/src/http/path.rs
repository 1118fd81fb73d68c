//! Request-path hygiene (pure).
//!
//! A request path is accepted only if it cannot name anything outside the origin's tree: dot segments,
//! encoded separators and control bytes are rejected, in plain and percent-encoded (also double-encoded)
//! forms. Playlist URIs resolve to gateway paths in the same tree. The cache key built from a clean
//! target is in [`crate::cache::key`].

/// Why a request target was refused. Always the client's fault (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains a dot segment ('.' or '..')")]
    DotSegment,
    #[error("path contains an encoded separator or control character")]
    EncodedSeparator,
    #[error("path contains an invalid percent-encoding")]
    BadEncoding,
    #[error("path decodes to bytes that are not UTF-8 (such as an overlong encoding of '.')")]
    NotUtf8,
    #[error("path is longer than {0} bytes")]
    TooLong(usize),
}

/// Longest accepted path plus query.
pub const MAX_TARGET_LEN: usize = 4096;

/// A request target that passed [`normalize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanTarget {
    /// The path, still percent-encoded as received, with repeated slashes folded.
    pub path: String,
    /// The query string as received (without '?'), if any.
    pub query: Option<String>,
}

/// Checks and normalises a request path.
pub fn normalize(path: &str, query: Option<&str>) -> Result<CleanTarget, PathError> {
    if path.len() + query.map_or(0, str::len) > MAX_TARGET_LEN {
        return Err(PathError::TooLong(MAX_TARGET_LEN));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut clean = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        if segment.is_empty() {
            continue;
        }
        check_segment(segment)?;
        clean.push('/');
        clean.push_str(segment);
    }
    if clean.is_empty() || path.ends_with('/') {
        clean.push('/');
    }
    Ok(CleanTarget {
        path: clean,
        query: query.filter(|q| !q.is_empty()).map(str::to_owned),
    })
}

/// `path` percent-decoded once, as an origin reads it (invalid UTF-8 replaced): what the gate
/// compares with protected prefixes, so `/%6Cive/` is `/live/` there too.
pub fn decoded(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// Decodes a segment layer by layer (up to three encodings deep); any layer that names a separator, a
/// control byte or a dot segment makes the whole path invalid. The received form must be valid
/// percent-encoding; a deeper layer that is not is a literal '%' in a name and ends the check.
fn check_segment(segment: &str) -> Result<(), PathError> {
    let raw = segment.as_bytes();
    if !raw.contains(&b'%') {
        // The common case, checked without copying.
        return check_layer(raw);
    }
    let mut current: Vec<u8> = raw.to_vec();
    for layer in 0..4 {
        check_layer(&current)?;
        if !current.contains(&b'%') {
            return Ok(());
        }
        current = match percent_decode_strict(&current) {
            Ok(decoded) => decoded,
            Err(e) if layer == 0 => return Err(e),
            Err(_) => return Ok(()),
        };
    }
    // Encoded four or more times: nobody names a file like that but an attacker.
    Err(PathError::BadEncoding)
}

fn check_layer(bytes: &[u8]) -> Result<(), PathError> {
    // `..;x` is `..` to servers that strip path parameters (Tomcat, Spring).
    let name = bytes.split(|&b| b == b';').next().unwrap_or(bytes);
    if name == b"." || name == b".." {
        return Err(PathError::DotSegment);
    }
    // `%c0%ae` is an overlong '.', which lenient decoders read as one.
    if std::str::from_utf8(bytes).is_err() {
        return Err(PathError::NotUtf8);
    }
    // A '#' would end the path in the origin's URL: `/..#x` is `/..` there (found by fuzzing).
    if bytes
        .iter()
        .any(|&b| b == b'/' || b == b'\\' || b == b'#' || b < 0x20 || b == 0x7f)
    {
        return Err(PathError::EncodedSeparator);
    }
    Ok(())
}

fn percent_decode_strict(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = input.get(i + 1).and_then(|b| (*b as char).to_digit(16));
            let lo = input.get(i + 2).and_then(|b| (*b as char).to_digit(16));
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => return Err(PathError::BadEncoding),
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths_and_folds_slashes() {
        let t = normalize("/live//a/seg_1.ts", Some("x=1")).expect("valid");
        assert_eq!(t.path, "/live/a/seg_1.ts");
        assert_eq!(t.query.as_deref(), Some("x=1"));
        assert_eq!(normalize("/", None).expect("root").path, "/");
        assert_eq!(normalize("/a/", Some("")).expect("dir").path, "/a/");
    }

    #[test]
    fn a_fragment_mark_never_reaches_the_origin() {
        for path in ["/..#k", "/a/b#c.ts", "/a/%23/b", "/a/%2523x"] {
            assert_eq!(
                normalize(path, None),
                Err(PathError::EncodedSeparator),
                "{path}"
            );
        }
    }

    #[test]
    fn rejects_traversal_in_every_encoding() {
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a/%2E%2e/b",
            "/a/.%2e/b",
            "/a/%252e%252e/b",
            "/a%2fb",
            "/a%5c..%5cb",
            "/a/%25252e%25252e/b",
            "/a/..;/b",
            "/a/..;x=1/b",
            "/a/.;/b",
            "/a/%2e%2e;/b",
            "/a/%c0%ae%c0%ae/b",
            "/a/%C0%AE/b",
            "/a/%25c0%25ae%25c0%25ae/b",
            "/a/%e0%80%ae/b",
        ] {
            assert!(normalize(bad, None).is_err(), "{bad} must be rejected");
        }
        assert_eq!(
            normalize("/a/%c0%ae%c0%ae/b", None),
            Err(PathError::NotUtf8)
        );
        assert_eq!(normalize("/a/..;/b", None), Err(PathError::DotSegment));
        assert_eq!(normalize("/a/%zz", None), Err(PathError::BadEncoding));
        assert_eq!(normalize("/a/%00", None), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("a", None), Err(PathError::NotAbsolute));
        let long = format!("/{}", "a".repeat(MAX_TARGET_LEN));
        assert!(matches!(normalize(&long, None), Err(PathError::TooLong(_))));
    }

    #[test]
    fn allows_dots_inside_names() {
        assert!(normalize("/a/..b/c.d.ts", None).is_ok());
        assert!(normalize("/a/%41.ts", None).is_ok());
        assert!(normalize("/a/seg;v=1.ts", None).is_ok(), "a ';' in a name");
        assert!(normalize("/a/caf%C3%A9.ts", None).is_ok(), "UTF-8 names");
        assert!(
            normalize("/a/100%25.ts", None).is_ok(),
            "a literal percent sign"
        );
    }
}
