//! What the tracker asks of the gateway, answered from the edge cache: which media playlist is a
//! rendition of a stream (a variant, or an `EXT-X-MEDIA` playlist after the variants), and the
//! digests of the segments of a playlist that are cached.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use peer_assist::hls;
use peer_assist::protocol::signal::{self, DigestEntry};
use peer_assist::tracker::{Backend, ReceiptLedger, ResolveError};

use crate::auth::gate::Gate;
use crate::auth::TokenError;
use crate::cache::{CacheKey, CachedObject};
use crate::edge::{Edge, Lookup, ObjectRef};
use crate::hls::ObjectClass;
use crate::http::path;

/// What the tracker asks of the gateway, answered from the edge cache.
pub struct GatewayBackend {
    edge: Arc<Edge>,
    gate: Option<Arc<Gate>>,
    ledger: Option<Arc<dyn ReceiptLedger>>,
}

impl GatewayBackend {
    pub fn new(edge: Arc<Edge>, gate: Option<Arc<Gate>>) -> Self {
        Self {
            edge,
            gate,
            ledger: None,
        }
    }

    /// Receipts the tracker believes go to `ledger`.
    pub fn with_ledger(mut self, ledger: Option<crate::ledger::Ledger>) -> Self {
        self.ledger = ledger.map(|l| Arc::new(l) as Arc<dyn ReceiptLedger>);
        self
    }
}

/// The decoded, normalised path of a stream, as the gate compares it.
pub fn stream_path(stream: &str) -> Option<String> {
    path::normalize(stream, None)
        .ok()
        .map(|t| path::decoded(&t.path))
}

/// The stream a tracker `stream` parameter names, as the gateway serves it: the query dropped
/// (`?x=` variants are the same stream), repeated slashes folded, dot segments and encoded
/// separators refused ([`path::normalize`]), and percent-encoded unreserved characters
/// (RFC 3986 §2.3: letters, digits, `-._~`) decoded, so every spelling of one playlist is one key.
pub fn swarm_stream(stream: &str) -> Result<path::CleanTarget, path::PathError> {
    let path = stream.split(['?', '#']).next().unwrap_or_default();
    let mut clean = path::normalize(path, None)?;
    clean.path = decode_unreserved(&clean.path);
    Ok(clean)
}

/// `%41` → `A` for unreserved characters only; every other escape stays as it was (uppercased).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                let c = (hi * 16 + lo) as u8;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(c));
                } else {
                    out.push_str(&format!("%{c:02X}"));
                }
                i += 3;
                continue;
            }
        }
        let len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + len]);
        i += len;
    }
    out
}

/// A playlist from the cache, fetched through the normal coalesced path if needed. An origin that
/// cannot answer is `Unavailable`; one that says there is no such playlist, `NotFound`.
async fn playlist(edge: &Arc<Edge>, path: &str) -> Result<Arc<CachedObject>, ResolveError> {
    let object = ObjectRef::from_path(path);
    let found = match edge.lookup(&object.key).await {
        Lookup::Fresh(o) | Lookup::Stale(o) => o,
        Lookup::Expired(_) | Lookup::Miss => edge
            .fetch(&object)
            .0
            .result
            .await
            .map_err(|e| ResolveError::Unavailable(format!("{path}: {e}")))?,
    };
    if found.status.is_server_error() {
        return Err(ResolveError::Unavailable(format!(
            "{path}: the origin answered {}",
            found.status
        )));
    }
    if !found.is_success() {
        return Err(ResolveError::NotFound(format!(
            "{path}: the origin answered {}",
            found.status
        )));
    }
    if found.playlist.is_none() {
        return Err(ResolveError::NotFound(format!("{path} is not a playlist")));
    }
    Ok(found)
}

/// The recent digests of a media playlist: its segments and init sections that are cached.
pub async fn digest_window(edge: &Arc<Edge>, playlist_path: &str) -> Vec<DigestEntry> {
    let Ok(playlist) = playlist(edge, playlist_path).await else {
        return Vec::new();
    };
    let Some(info) = &playlist.playlist else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for reference in info.references.iter().filter(|r| r.class.is_media()) {
        let key = CacheKey(reference.path.as_str().into());
        if let Some(cached) = edge.cache.get(&key).await {
            if !reference.ranges.is_empty() {
                // A file whose segments are byte ranges: each range is a segment of its own.
                for r in edge.range_digests_of(&reference.path, &cached).await {
                    entries.push(DigestEntry {
                        id: r.id,
                        sha256: signal::digest_hex(&r.digest),
                        size: r.size,
                    });
                }
            } else if let Some(digest) = cached.digest {
                entries.push(DigestEntry {
                    id: reference.path.clone(),
                    sha256: signal::digest_hex(&digest),
                    size: cached.body.len() as u64,
                });
            }
        }
    }
    entries
}

/// The renditions of the multivariant playlist `body` served at `master_path`, numbered as
/// `join.rendition` names them: variants, then `EXT-X-MEDIA` playlists ([`hls::stream_renditions`]).
/// The cached body has its absolute origin URLs made root-relative already; the origins' bases
/// are passed anyway, so that the numbering never depends on that rewrite.
fn renditions_of(edge: &Edge, master_path: &str, body: &[u8]) -> Vec<hls::StreamRendition> {
    let bases: Vec<&str> = edge.origin.bases().collect();
    match hls::parse(body) {
        Ok(hls::Playlist::Multivariant(m)) => hls::stream_renditions(master_path, &m, &bases),
        _ => Vec::new(),
    }
}

impl Backend for GatewayBackend {
    fn ledger(&self) -> Option<Arc<dyn ReceiptLedger>> {
        self.ledger.clone()
    }

    fn resolve(
        &self,
        stream: &str,
        rendition: u32,
    ) -> BoxFuture<'static, Result<String, ResolveError>> {
        let edge = Arc::clone(&self.edge);
        let stream = stream.to_owned();
        async move {
            let clean = swarm_stream(&stream)
                .map_err(|e| ResolveError::NotFound(format!("{stream}: {e}")))?;
            let multivariant = playlist(&edge, &clean.path).await?;
            let Some(info) = multivariant.playlist.as_ref() else {
                return Err(ResolveError::NotFound(format!(
                    "{stream} is not a playlist"
                )));
            };
            match info.class {
                ObjectClass::Multivariant => {
                    let renditions = renditions_of(&edge, &clean.path, &multivariant.body);
                    renditions
                        .get(rendition as usize)
                        .map(|r| r.path.clone())
                        .ok_or_else(|| {
                            ResolveError::NotFound(format!(
                                "{stream} has {} renditions, not {}",
                                renditions.len(),
                                u64::from(rendition) + 1
                            ))
                        })
                }
                // A stream named by its media playlist has one rendition: itself.
                ObjectClass::LiveMedia | ObjectClass::VodMedia if rendition == 0 => Ok(clean.path),
                _ => Err(ResolveError::NotFound(format!(
                    "{stream} has no rendition {rendition}"
                ))),
            }
        }
        .boxed()
    }

    fn authorize(
        &self,
        stream: &str,
        token: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<(), String> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        let Some(path) = stream_path(stream) else {
            return Err(format!("{stream} is not a valid path"));
        };
        if !gate.protects(&path) {
            return Ok(());
        }
        let result = match token {
            Some(token) => gate.grant_to(token, &path, client, SystemTime::now()),
            None => Err(TokenError::Missing),
        };
        result.map_err(|e| {
            self.edge.metrics.auth_denied(e.label());
            e.to_string()
        })
    }

    fn digests(&self, playlist: &str) -> BoxFuture<'static, Vec<DigestEntry>> {
        let edge = Arc::clone(&self.edge);
        let playlist = playlist.to_owned();
        async move { digest_window(&edge, &playlist).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_stream_is_one_key() {
        for spelling in [
            "/demo/live/master.m3u8",
            "/demo//live/master.m3u8",
            "//demo/live///master.m3u8?x=1",
            "/demo/live/master.m3u8?x=2&y=3",
            "/demo/%6Cive/master.m3u8",
            "/demo/live/master%2Em3u8#frag",
        ] {
            assert_eq!(
                swarm_stream(spelling).unwrap().path,
                "/demo/live/master.m3u8",
                "{spelling}"
            );
        }
        assert_eq!(
            swarm_stream("/a/b%20c.m3u8").unwrap().path,
            "/a/b%20c.m3u8",
            "reserved escapes stay"
        );
        assert!(swarm_stream("/a/../b.m3u8").is_err());
        assert!(swarm_stream("/a/%2e%2e/b.m3u8").is_err());
    }
}
