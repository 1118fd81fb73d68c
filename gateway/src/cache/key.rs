//! Cache keys (pure). The key of a request keeps the path and the query parameters that change the
//! object (`_HLS_*` and unknown ones) and drops those that only identify the viewer (tokens, CMCD), in
//! a stable order. The query forwarded to the origin drops only CMCD.

use std::fmt;

use crate::http::path::CleanTarget;

/// Query parameters that never take part in a cache key: viewer tokens and CMCD.
pub const DEFAULT_DROPPED_PARAMS: &[&str] = &[
    "token",
    "hdnts",
    "hdnea",
    "policy",
    "signature",
    "key-pair-id",
    "expires",
    "sig",
    "cmcd",
];

/// The identity of a cached object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub std::sync::Arc<str>);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl CacheKey {
    /// The key for `target`: path plus the query parameters that matter, sorted.
    pub fn new(target: &CleanTarget, dropped: &[&str]) -> Self {
        let Some(query) = target.query.as_deref() else {
            return CacheKey(target.path.as_str().into());
        };
        let mut kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| {
                let name = pair.split('=').next().unwrap_or(pair);
                !is_dropped(name, dropped)
            })
            .collect();
        if kept.is_empty() {
            return CacheKey(target.path.as_str().into());
        }
        kept.sort_unstable();
        let mut key = String::with_capacity(target.path.len() + query.len() + 1);
        key.push_str(&target.path);
        key.push('?');
        key.push_str(&kept.join("&"));
        CacheKey(key.into())
    }

    /// The path part of the key (no query).
    pub fn path(&self) -> &str {
        self.0.split('?').next().unwrap_or(&self.0)
    }
}

fn is_dropped(name: &str, dropped: &[&str]) -> bool {
    if name.starts_with("_HLS_") {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.starts_with("cmcd") || dropped.iter().any(|d| lower == *d)
}

/// The query to forward to the origin: the received one without CMCD (per-viewer telemetry that would
/// make the single shared fetch look like one viewer's), and without the gateway's own `token` when
/// the gateway checks tokens itself (`own_token`). Other tokens are kept: the origin may check them.
pub fn origin_query(query: Option<&str>, own_token: bool) -> Option<String> {
    let query = query?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("cmcd"))
        .filter(|p| !(own_token && (p.starts_with("token=") || *p == "token")))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::path::normalize;

    #[test]
    fn key_drops_tokens_and_cmcd_keeps_hls_directives_sorted() {
        let t = normalize(
            "/live/index.m3u8",
            Some("token=abc&_HLS_part=2&CMCD=bl%3D200&_HLS_msn=10&v=3"),
        )
        .expect("valid");
        let key = CacheKey::new(&t, DEFAULT_DROPPED_PARAMS);
        assert_eq!(&*key.0, "/live/index.m3u8?_HLS_msn=10&_HLS_part=2&v=3");
        assert_eq!(key.path(), "/live/index.m3u8");
        let only_token = normalize("/s.ts", Some("token=1&hdnts=exp%3D1")).expect("valid");
        assert_eq!(
            &*CacheKey::new(&only_token, DEFAULT_DROPPED_PARAMS).0,
            "/s.ts"
        );
    }

    #[test]
    fn origin_query_drops_cmcd_and_the_gateways_own_token() {
        assert_eq!(
            origin_query(Some("CMCD=x&token=1"), false).as_deref(),
            Some("token=1")
        );
        assert_eq!(
            origin_query(Some("CMCD=x&token=1&v=2&hdnts=a"), true).as_deref(),
            Some("v=2&hdnts=a")
        );
        assert_eq!(origin_query(Some("CMCD=x"), false), None);
        assert_eq!(origin_query(None, false), None);
    }
}
