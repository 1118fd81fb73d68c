//! Signed URLs (pure): tokens that grant a path prefix until an expiry, optionally to one client
//! address, signed with HMAC-SHA256 under rotating keys. `docs/SECURITY.md` specifies the format
//! with a worked example, so any backend can mint them.
//!
//! ```text
//! token   = "v1" "." kid "." expires "." b64url(prefix) "." b64url(binding) "." b64url(mac)
//! mac     = HMAC-SHA256(key[kid], "v1\n" kid "\n" expires "\n" prefix "\n" binding)
//! ```
//!
//! `kid` names the key (`[A-Za-z0-9_-]{1,32}`), `expires` is Unix seconds, `prefix` the path prefix
//! the token grants (it starts with `/`), `binding` the client address it is bound to or empty.
//! `b64url` is base64url without padding.

pub mod gate;
pub mod keys;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

pub use keys::{KeyError, KeySet};

/// How far a token's expiry may be in the past and still be honoured (clocks differ).
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Longest token accepted (anything longer is not one of ours).
pub const MAX_TOKEN_LEN: usize = 1024;
const VERSION: &str = "v1";

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub kid: String,
    /// Unix seconds.
    pub expires: u64,
    pub prefix: String,
    /// The client address the token is bound to, if any.
    pub binding: Option<String>,
}

/// Why a request's token does not grant it. Always the client's fault (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token is required")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's key is unknown")]
    UnknownKey,
    #[error("the token's signature is wrong")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token does not cover this path")]
    WrongPrefix,
    #[error("the token is bound to another client")]
    WrongClient,
}

impl TokenError {
    /// The `reason` label of `gateway_auth_denied_total`.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::WrongPrefix => "wrong_prefix",
            TokenError::WrongClient => "wrong_client",
        }
    }

    pub const ALL_LABELS: [&'static str; 7] = [
        "missing",
        "malformed",
        "unknown_key",
        "bad_signature",
        "expired",
        "wrong_prefix",
        "wrong_client",
    ];
}

fn message(claims: &Claims) -> String {
    format!(
        "{VERSION}\n{}\n{}\n{}\n{}",
        claims.kid,
        claims.expires,
        claims.prefix,
        claims.binding.as_deref().unwrap_or("")
    )
}

/// HMAC-SHA256 (RFC 2104) of the claims' message under `key`.
fn mac(key: &[u8], claims: &Claims) -> [u8; 32] {
    hmac_sha256(key, message(claims).as_bytes())
}

/// HMAC-SHA256 (RFC 2104): keys longer than the 64-byte block are hashed first.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Signs `claims` with `key` (whose id must be `claims.kid`).
pub fn sign(claims: &Claims, key: &[u8]) -> String {
    let tag = mac(key, claims);
    format!(
        "{VERSION}.{}.{}.{}.{}.{}",
        claims.kid,
        claims.expires,
        b64url(claims.prefix.as_bytes()),
        b64url(claims.binding.as_deref().unwrap_or("").as_bytes()),
        b64url(&tag)
    )
}

/// A token for `prefix`, valid for `ttl` from `now`, signed with the newest key of `keys`.
pub fn mint(
    keys: &KeySet,
    prefix: &str,
    ttl: Duration,
    binding: Option<IpAddr>,
    now: SystemTime,
) -> String {
    let (kid, key) = keys.newest();
    let expires = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let claims = Claims {
        kid: kid.to_owned(),
        expires,
        prefix: prefix.to_owned(),
        binding: binding.map(|ip| ip.to_string()),
    };
    sign(&claims, key)
}

/// Reads a token's claims and its MAC, without checking anything but its form.
pub fn parse(token: &str) -> Result<(Claims, Vec<u8>), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let mut next = || parts.next().ok_or(TokenError::Malformed);
    if next()? != VERSION {
        return Err(TokenError::Malformed);
    }
    let kid = next()?;
    if !keys::valid_id(kid) {
        return Err(TokenError::Malformed);
    }
    let expires_text = next()?;
    let expires: u64 = expires_text.parse().map_err(|_| TokenError::Malformed)?;
    if expires.to_string() != expires_text {
        // One token, one spelling: no sign, no leading zeros.
        return Err(TokenError::Malformed);
    }
    let prefix = String::from_utf8(unb64url(next()?)?).map_err(|_| TokenError::Malformed)?;
    let binding = String::from_utf8(unb64url(next()?)?).map_err(|_| TokenError::Malformed)?;
    let tag = unb64url(next()?)?;
    if parts.next().is_some() || !prefix.starts_with('/') || tag.len() != 32 {
        return Err(TokenError::Malformed);
    }
    Ok((
        Claims {
            kid: kid.to_owned(),
            expires,
            prefix,
            binding: (!binding.is_empty()).then_some(binding),
        },
        tag,
    ))
}

/// Checks that `token` grants `path` to a client at `client` at `now`.
pub fn verify(
    keys: &KeySet,
    token: &str,
    path: &str,
    client: Option<IpAddr>,
    now: SystemTime,
) -> Result<Claims, TokenError> {
    let (claims, tag) = parse(token)?;
    let key = keys.get(&claims.kid).ok_or(TokenError::UnknownKey)?;
    if !constant_time_eq(&mac(key, &claims), &tag) {
        return Err(TokenError::BadSignature);
    }
    let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if claims.expires.saturating_add(CLOCK_SKEW.as_secs()) < now_secs {
        return Err(TokenError::Expired);
    }
    if !covers(&claims.prefix, path) {
        return Err(TokenError::WrongPrefix);
    }
    if let Some(bound) = &claims.binding {
        let ok = client.is_some_and(|ip| bound.parse::<IpAddr>().is_ok_and(|b| b == ip));
        if !ok {
            return Err(TokenError::WrongClient);
        }
    }
    Ok(claims)
}

/// Whether a token for `prefix` covers `path`: the path starts with it, and a prefix that does not
/// end in `/` is a whole name (`/a` covers `/a` and `/a/b`, not `/ab`).
pub fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether `path` is under one of the protected `prefixes` (with the same rule as [`covers`]).
pub fn is_protected(prefixes: &[String], path: &str) -> bool {
    prefixes.iter().any(|p| covers(p, path))
}

/// The token a request carries: the `token` query parameter, else the `token` cookie.
/// (`from_query` tells which, so playlists are rewritten only for query tokens.)
pub fn from_request<'a>(
    query: Option<&'a str>,
    cookies: impl Iterator<Item = &'a str>,
) -> Option<(String, bool)> {
    if let Some(query) = query {
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("token=") {
                let decoded = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .ok()?;
                return Some((decoded.into_owned(), true));
            }
        }
    }
    for header in cookies {
        for cookie in header.split(';') {
            if let Some(value) = cookie.trim().strip_prefix("token=") {
                return Some((value.trim_matches('"').to_owned(), false));
            }
        }
    }
    None
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64url without padding (padding and other alphabets are malformed).
pub fn unb64url(text: &str) -> Result<Vec<u8>, TokenError> {
    let value = |c: u8| {
        B64.iter()
            .position(|&x| x == c)
            .map(|p| p as u32)
            .ok_or(TokenError::Malformed)
    };
    if text.len() % 4 == 1 {
        return Err(TokenError::Malformed);
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        for i in 0..bytes {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        // Non-canonical trailing bits would let two strings decode to the same bytes.
        let used = 8 * bytes;
        let spare = 6 * chunk.len() - used;
        if spare > 0 && n >> (24 - 6 * chunk.len()) & ((1 << spare) - 1) != 0 {
            return Err(TokenError::Malformed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeySet {
        KeySet::parse("# rotation: the last key signs\nold:000102030405060708090a0b0c0d0e0f\nnew:101112131415161718191a1b1c1d1e1f\n")
            .unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test cases 1 and 6 (a key longer than the block).
        let key = [0x0b; 20];
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let key = [0xaa; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn a_minted_token_grants_its_prefix_until_it_expires() {
        let keys = keys();
        let token = mint(&keys, "/demo/", Duration::from_secs(600), None, at(1_000));
        assert!(token.starts_with("v1.new.1600."), "{token}");
        let ok = |path: &str, t: u64| verify(&keys, &token, path, None, at(t));
        assert!(ok("/demo/live/master.m3u8", 1_000).is_ok());
        assert!(ok("/demo/", 1_629).is_ok(), "within the clock skew");
        assert_eq!(ok("/demo/x.ts", 1_631), Err(TokenError::Expired));
        assert_eq!(ok("/other/x.ts", 1_000), Err(TokenError::WrongPrefix));
        assert_eq!(ok("/demox/x.ts", 1_000), Err(TokenError::WrongPrefix));
    }

    #[test]
    fn rotation_old_keys_verify_the_newest_signs() {
        let keys = keys();
        let claims = Claims {
            kid: "old".into(),
            expires: 2_000,
            prefix: "/a".into(),
            binding: None,
        };
        let old = sign(&claims, keys.get("old").unwrap());
        assert!(verify(&keys, &old, "/a/b", None, at(1_000)).is_ok());
        assert_eq!(keys.newest().0, "new");
        let retired = KeySet::parse("new:101112131415161718191a1b1c1d1e1f\n").unwrap();
        assert_eq!(
            verify(&retired, &old, "/a/b", None, at(1_000)),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn tampering_is_caught() {
        let keys = keys();
        let token = mint(&keys, "/demo/", Duration::from_secs(600), None, at(1_000));
        let parts: Vec<&str> = token.split('.').collect();
        // Another expiry, another prefix, another key id, a flipped signature.
        let later = format!("v1.new.9999.{}.{}.{}", parts[3], parts[4], parts[5]);
        let wider = format!("v1.new.1600.{}.{}.{}", b64url(b"/"), parts[4], parts[5]);
        let other_kid = format!("v1.old.1600.{}.{}.{}", parts[3], parts[4], parts[5]);
        let mut sig = unb64url(parts[5]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("v1.new.1600.{}.{}.{}", parts[3], parts[4], b64url(&sig));
        for bad in [later, wider, other_kid, flipped] {
            assert_eq!(
                verify(&keys, &bad, "/demo/x", None, at(1_000)),
                Err(TokenError::BadSignature),
                "{bad}"
            );
        }
        // Signed by a key this gateway does not have.
        let stranger = KeySet::parse("new:ffffffffffffffffffffffffffffffff\n").unwrap();
        let forged = mint(
            &stranger,
            "/demo/",
            Duration::from_secs(60),
            None,
            at(1_000),
        );
        assert_eq!(
            verify(&keys, &forged, "/demo/x", None, at(1_000)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn binding_to_a_client_address() {
        let keys = keys();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let token = mint(&keys, "/", Duration::from_secs(60), Some(ip), at(0));
        assert!(verify(&keys, &token, "/x", Some(ip), at(0)).is_ok());
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert_eq!(
            verify(&keys, &token, "/x", Some(other), at(0)),
            Err(TokenError::WrongClient)
        );
        assert_eq!(
            verify(&keys, &token, "/x", None, at(0)),
            Err(TokenError::WrongClient)
        );
    }

    #[test]
    fn malformed_tokens_never_panic() {
        let keys = keys();
        for bad in [
            "",
            "v1",
            "v2.new.1.Lw..AAAA",
            "v1..1.Lw..x",
            "v1.new.x.Lw..x",
            "v1.new.1.Lw..x.y",
            "v1.new.1.!!..x",
            "v1.new.1.bm9zbGFzaA..AAAA",
            "v1.a b.1.Lw..AAAA",
        ] {
            assert!(verify(&keys, bad, "/", None, at(0)).is_err(), "{bad:?}");
        }
        let long = "v".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(parse(&long), Err(TokenError::Malformed));
        // A valid token respelled (`+`, leading zeros) is not the same token.
        let claims = Claims {
            kid: "new".into(),
            expires: 7,
            prefix: "/".into(),
            binding: None,
        };
        let good = sign(&claims, keys.get("new").unwrap());
        assert!(parse(&good).is_ok());
        for respelled in [good.replace(".7.", ".+7."), good.replace(".7.", ".007.")] {
            assert_eq!(parse(&respelled), Err(TokenError::Malformed), "{respelled}");
        }
    }

    #[test]
    fn base64url_round_trips_and_is_canonical() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unb64url(&b64url(&bytes)).unwrap(), bytes);
        }
        assert_eq!(b64url(b"/demo/"), "L2RlbW8v");
        assert!(unb64url("L2RlbW8v=").is_err(), "no padding");
        assert!(unb64url("Lw").is_ok());
        assert!(unb64url("Lx").is_err(), "non-canonical trailing bits");
        assert!(unb64url("L").is_err());
    }

    #[test]
    fn prefixes_cover_whole_names() {
        assert!(covers("/demo/", "/demo/a.ts"));
        assert!(covers("/demo", "/demo"));
        assert!(covers("/demo", "/demo/a.ts"));
        assert!(!covers("/demo", "/demox/a.ts"));
        assert!(!covers("/demo/", "/demo"));
        assert!(is_protected(&["/a/".into(), "/b".into()], "/b/c"));
        assert!(!is_protected(&["/a/".into()], "/b/c"));
    }

    #[test]
    fn tokens_come_from_the_query_or_a_cookie() {
        let cookies = ["a=1; token=\"c\"", "token=d"];
        assert_eq!(
            from_request(Some("x=1&token=q%2Eq"), cookies.iter().copied()),
            Some(("q.q".into(), true))
        );
        assert_eq!(
            from_request(Some("x=1"), cookies.iter().copied()),
            Some(("c".into(), false))
        );
        assert_eq!(from_request(None, std::iter::empty()), None);
    }

    /// The tokens `docs/SECURITY.md` gives as its worked example, so that text cannot drift.
    #[test]
    fn the_worked_example_of_security_md() {
        let keys = KeySet::parse(
            "k2026:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        )
        .unwrap();
        let key = keys.get("k2026").unwrap();
        let mut claims = Claims {
            kid: "k2026".into(),
            expires: 1_798_761_600,
            prefix: "/demo/".into(),
            binding: None,
        };
        let unbound = "v1.k2026.1798761600.L2RlbW8v..jZVza6HMUI-mKbaYw79D16Igp2bYaLr7BwRnxZUx7-8";
        assert_eq!(sign(&claims, key), unbound);
        claims.binding = Some("203.0.113.7".into());
        let bound = "v1.k2026.1798761600.L2RlbW8v.MjAzLjAuMTEzLjc.\
                     sHWVcBT--UTpH1u8fMa40q22C2NJGTcy1ScLCknRy4A";
        assert_eq!(sign(&claims, key), bound);
        let doc = include_str!("../../../docs/SECURITY.md");
        assert!(doc.contains(unbound) && doc.contains(bound));
        let before = UNIX_EPOCH + Duration::from_secs(1_798_761_000);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(verify(&keys, bound, "/demo/a.ts", Some(ip), before).is_ok());
        assert_eq!(
            verify(&keys, unbound, "/other/a.ts", None, before),
            Err(TokenError::WrongPrefix)
        );
    }
}
