//! The browser player, built from `web/` into `web/dist/` and embedded in the binary, so the
//! page plays right after `cargo run -p gateway` with no npm step.
//!
//! Routes (checked before the cache, so an origin cannot shadow them):
//! - `/` and `/player` (any query, such as `?src=/live/master.m3u8`): the page, `index.html`;
//! - `/player/config.json`: what the page needs from this gateway's configuration (ICE servers);
//! - `/<file>` for every other file of `web/dist/` (`/player.js`, `/p2p-engine.mjs`, ...).
//!
//! Files are served with a strong `ETag` (SHA-256 of the bytes), `Cache-Control: no-cache` (the
//! browser revalidates, a new binary is picked up at once) and `304` on a matching `If-None-Match`.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::http::response::Body;

mod files {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

/// Path of the page's configuration document.
pub const CONFIG_PATH: &str = "/player/config.json";

/// One embedded file, ready to serve.
#[derive(Debug)]
struct Asset {
    body: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

fn assets() -> &'static HashMap<&'static str, Asset> {
    static ASSETS: OnceLock<HashMap<&'static str, Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        files::FILES
            .iter()
            .filter_map(|(path, bytes)| {
                let digest = Sha256::digest(bytes);
                let etag =
                    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16]))).ok()?;
                let asset = Asset {
                    body: Bytes::from_static(bytes),
                    content_type: content_type(path),
                    etag,
                };
                Some((*path, asset))
            })
            .collect()
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "text/plain; charset=utf-8",
    }
}

/// Whether the player was built into this binary (`web/dist/index.html` existed at build time).
pub fn is_embedded() -> bool {
    assets().contains_key("index.html")
}

/// The page's configuration document: `{"iceServers":[{"urls":"stun:..."}]}`.
pub fn config_document(ice_servers: &[String]) -> Bytes {
    let servers: Vec<serde_json::Value> = ice_servers
        .iter()
        .map(|url| serde_json::json!({ "urls": url }))
        .collect();
    Bytes::from(serde_json::json!({ "iceServers": servers }).to_string())
}

/// Answers `path` if it is one of the player's routes; `None` lets the request go to the cache.
pub fn respond(path: &str, request: &HeaderMap, config: &Bytes) -> Option<Response<Body>> {
    if path == CONFIG_PATH {
        let mut response = Response::new(Body::full(config.clone()));
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Some(response);
    }
    let name = match path {
        "/" | "/player" | "/player/" => "index.html",
        other => other.strip_prefix('/')?,
    };
    let Some(asset) = assets().get(name) else {
        if name == "index.html" {
            let mut response = Response::new(Body::full(Bytes::from_static(
                b"the web player is not built into this binary (web/dist was missing at build time)\n",
            )));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return Some(response);
        }
        return None;
    };
    let matches = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| asset.etag.to_str().ok().map(|etag| (v, etag)))
        .is_some_and(|(inm, etag)| crate::http::range::if_none_match(inm, etag));
    let mut response = if matches {
        let mut r = Response::new(Body::full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::full(asset.body.clone()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(ETAG, asset.etag.clone());
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_document_lists_ice_servers() {
        let doc = config_document(&["stun:stun.example.org:3478".into()]);
        assert_eq!(
            &doc[..],
            br#"{"iceServers":[{"urls":"stun:stun.example.org:3478"}]}"#
        );
        assert_eq!(&config_document(&[])[..], br#"{"iceServers":[]}"#);
    }

    #[test]
    fn unknown_paths_go_to_the_cache() {
        let config = config_document(&[]);
        assert!(respond("/demo/live/master.m3u8", &HeaderMap::new(), &config).is_none());
        assert!(respond("/no-such-file.js", &HeaderMap::new(), &config).is_none());
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("player.js"), "text/javascript; charset=utf-8");
        assert_eq!(
            content_type("p2p-engine.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("LICENSE"), "text/plain; charset=utf-8");
    }
}
