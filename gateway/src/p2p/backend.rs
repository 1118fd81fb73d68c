//! What the tracker asks of the gateway, answered from the edge cache: which media playlist is a
//! rendition of a stream, and the digests of the segments of a playlist that are cached.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use peer_assist::protocol::signal::{self, DigestEntry};
use peer_assist::tracker::{Backend, ResolveError};

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
}

impl GatewayBackend {
    pub fn new(edge: Arc<Edge>, gate: Option<Arc<Gate>>) -> Self {
        Self { edge, gate }
    }
}

/// The decoded, normalised path of a stream, as the gate compares it.
pub fn stream_path(stream: &str) -> Option<String> {
    path::normalize(stream, None)
        .ok()
        .map(|t| path::decoded(&t.path))
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
            if let Some(digest) = cached.digest {
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

impl Backend for GatewayBackend {
    fn resolve(
        &self,
        stream: &str,
        rendition: u32,
    ) -> BoxFuture<'static, Result<String, ResolveError>> {
        let edge = Arc::clone(&self.edge);
        let stream = stream.to_owned();
        async move {
            let clean = path::normalize(&stream, None)
                .map_err(|e| ResolveError::NotFound(format!("{stream}: {e}")))?;
            let multivariant = playlist(&edge, &clean.path).await?;
            let Some(info) = multivariant.playlist.as_ref() else {
                return Err(ResolveError::NotFound(format!(
                    "{stream} is not a playlist"
                )));
            };
            match info.class {
                ObjectClass::Multivariant => info
                    .references
                    .get(..info.variants)
                    .and_then(|variants| variants.get(rendition as usize))
                    .map(|r| r.path.clone())
                    .ok_or_else(|| {
                        ResolveError::NotFound(format!(
                            "{stream} has {} renditions, not {}",
                            info.variants,
                            rendition + 1
                        ))
                    }),
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
