//! The properties the gateway's fuzz targets check (not a public API). Each function takes arbitrary
//! bytes and panics only when a property fails; `fuzz/` runs them under libFuzzer and
//! `tests/fuzz_corpus.rs` replays the committed seed corpora through them on every CI run.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use crate::auth::{self, KeySet, TokenError};
use crate::cache::key::{origin_query, CacheKey, DEFAULT_DROPPED_PARAMS};
use crate::hls::{parse_playlist, with_token, ObjectClass};
use crate::http::cmcd::{self, CmsdServer};
use crate::http::path::{decoded, normalize};
use crate::http::range::{if_none_match, parse_range, RangeAnswer};
use peer_assist::fuzzing::assert_absolute_clean;
pub use peer_assist::fuzzing::{frames, signals};

const PLAYLIST_PATH: &str = "/f/live/index.m3u8";
const BASES: &[&str] = &["http://origin.test/f/"];
const TOKEN: &str = "v1.k.1.L2Yv..AAAA";

/// Playlists as the gateway reads and rewrites them: classification never panics and names only
/// clean absolute paths; the token rewrite keeps the line count, is idempotent, and leaves a body
/// that classifies the same with the same references. Also runs [`peer_assist::fuzzing::playlist`].
pub fn playlist(data: &[u8]) {
    peer_assist::fuzzing::playlist(data);
    let parsed = parse_playlist(PLAYLIST_PATH, data, BASES);
    if let Ok(info) = &parsed {
        assert!(info.variants <= info.references.len());
        if info.class != ObjectClass::Multivariant {
            assert_eq!(info.variants, 0);
        }
        for reference in &info.references {
            assert_absolute_clean(&reference.path);
        }
    }
    let _ = crate::hls::rebase_playlist(data, BASES);
    let Some(once) = with_token(PLAYLIST_PATH, data, TOKEN) else {
        return;
    };
    let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    assert_eq!(lines(&once), lines(data), "the rewrite keeps every line");
    let twice = with_token(PLAYLIST_PATH, &once, TOKEN);
    assert_eq!(
        twice.as_deref(),
        Some(&once[..]),
        "the rewrite is idempotent"
    );
    let again = parse_playlist(PLAYLIST_PATH, &once, BASES);
    match (&parsed, &again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.class, b.class);
            let paths = |i: &crate::hls::PlaylistInfo| {
                i.references
                    .iter()
                    .map(|r| r.path.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(paths(a), paths(b), "the token changes no reference");
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("rewriting changed acceptance: {a:?} then {b:?}"),
    }
}

/// Tokens: parsing and verifying arbitrary text never panics; what parses re-signs to a token
/// that parses to the same claims; base64url is canonical both ways; nothing unsigned verifies.
pub fn token(data: &[u8]) {
    assert_eq!(auth::unb64url(&auth::b64url(data)).as_deref(), Ok(data));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = auth::unb64url(text) {
        assert_eq!(
            auth::b64url(&bytes),
            text,
            "base64url decoding is canonical"
        );
    }
    let keys = match KeySet::parse("k:000102030405060708090a0b0c0d0e0f\n") {
        Ok(keys) => keys,
        Err(e) => panic!("the fixed key set: {e}"),
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let client = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let verdict = auth::verify(&keys, text, "/f/live/index.m3u8", client, now);
    if let Ok((claims, _)) = auth::parse(text) {
        if let Some(key) = keys.get(&claims.kid) {
            let signed = auth::sign(&claims, key);
            assert!(matches!(auth::parse(&signed), Ok((c, _)) if c == claims));
            if verdict.is_ok() {
                assert_eq!(signed, text, "a token has one spelling");
            }
        } else {
            assert_eq!(verdict, Err(TokenError::UnknownKey));
        }
    } else {
        assert_eq!(verdict, Err(TokenError::Malformed));
    }
    let _ = auth::from_request(Some(text), text.split('\n'));
}

/// Byte ranges and validators: never panic, and a partial answer lies inside the object. The
/// first 8 bytes are the object's length.
pub fn range(data: &[u8]) {
    let Some((len, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let len = u64::from_le_bytes(*len) >> (len[0] % 64);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    match parse_range(header, len) {
        RangeAnswer::Partial(r) => assert!(r.start < r.end && r.end <= len, "{r:?} of {len}"),
        RangeAnswer::Full | RangeAnswer::Unsatisfiable => {}
    }
    let _ = if_none_match(header, "\"abc\"");
    let _ = if_none_match(header, "W/\"abc\"");
}

/// Request targets: normalising never panics; what is accepted is absolute, has no empty or dot
/// segment even once decoded, normalises to itself, and its cache key and origin query never carry
/// the viewer's token.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let Ok(clean) = normalize(path, query) else {
        return;
    };
    assert!(clean.path.starts_with('/') && !clean.path.contains("//"));
    assert_eq!(
        normalize(&clean.path, clean.query.as_deref()).as_ref(),
        Ok(&clean),
        "normalising is idempotent"
    );
    assert_absolute_clean(&decoded(&clean.path));
    let key = CacheKey::new(&clean, DEFAULT_DROPPED_PARAMS);
    assert_eq!(key.path(), clean.path);
    let has_token = |q: &str| {
        q.split('&')
            .any(|p| p == "token" || p.starts_with("token="))
    };
    assert!(!key.0.split_once('?').is_some_and(|(_, q)| has_token(q)));
    assert!(!origin_query(clean.query.as_deref(), true).is_some_and(|q| has_token(&q)));
}

/// CMCD, as a query parameter and as a header: reading never panics and stays within its bounds;
/// the same list reads the same from a header and percent-encoded in the query; no spelling of a
/// `CMCD` parameter reaches a cache key or the origin's query; any server id makes a valid
/// `CMSD-Dynamic`.
pub fn cmcd(data: &[u8]) {
    let none = http::HeaderMap::new();
    let encoded: String = data.iter().map(|b| format!("%{b:02X}")).collect();
    let from_query = cmcd::of_request(Some(&format!("a=1&CMCD={encoded}")), &none);
    if let Some(Ok(read)) = from_query {
        for n in [
            read.buffer_ms,
            read.throughput_kbps,
            read.bitrate_kbps,
            read.duration_ms,
        ] {
            assert!(n.is_none_or(|n| n < 10u64.pow(15)), "{n:?}");
        }
    }
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let readable = value.to_str().is_ok();
        let mut headers = http::HeaderMap::new();
        headers.insert("cmcd-request", value);
        let from_header = cmcd::of_request(None, &headers);
        if readable {
            assert_eq!(from_header, from_query, "a header reads like the query");
        } else {
            assert_eq!(from_header, Some(Err(cmcd::Invalid)));
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = cmcd::parse(text);
    assert!(CmsdServer::new(text).dynamic(Some(u64::MAX)).is_some());
    let query = format!("{text}&CMCD={text}&cmcd-x=1&v=2");
    let is_cmcd = |q: &str| {
        q.split('&')
            .any(|p| p.to_ascii_lowercase().starts_with("cmcd"))
    };
    if let Ok(clean) = normalize("/f/s.ts", Some(&query)) {
        let key = CacheKey::new(&clean, DEFAULT_DROPPED_PARAMS);
        assert!(
            !key.0.split_once('?').is_some_and(|(_, q)| is_cmcd(q)),
            "{key}"
        );
        assert!(!origin_query(clean.query.as_deref(), false).is_some_and(|q| is_cmcd(&q)));
    }
}
