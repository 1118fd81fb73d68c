//! One cached answer from the origin: its body and metadata, its digest, and the headers that are the
//! same for every answer built from it. Its state at an instant (fresh, stale, expired) follows
//! [`policy`].

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CONTENT_TYPE, ETAG,
    LAST_MODIFIED,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::cache::policy::{self, Lifetime, State};
use crate::hls::{ObjectClass, PlaylistInfo};

/// SHA-256 of an object's body.
pub type Digest = [u8; 32];

/// One cached answer from the origin (a success or a briefly cached error).
#[derive(Debug)]
pub struct CachedObject {
    pub status: StatusCode,
    pub class: ObjectClass,
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
    pub etag: HeaderValue,
    /// Whether `etag` is the origin's (else the gateway derived it from the digest): only the
    /// origin's may be sent back to it in `If-None-Match`.
    pub etag_from_origin: bool,
    pub last_modified: Option<HeaderValue>,
    /// When the object was generated, by the gateway clock (stored time minus the origin's `Age`).
    pub stored_at: Instant,
    pub lifetime: Lifetime,
    /// Once not fresh, served only after the origin confirmed it (a conditional request), or when
    /// the origin fails ([`policy::must_revalidate`]).
    pub revalidate: bool,
    /// SHA-256 of the body, for media objects (segments, init sections, parts).
    pub digest: Option<Digest>,
    pub playlist: Option<PlaylistInfo>,
    /// `last_modified`, parsed once.
    pub last_modified_at: Option<SystemTime>,
    /// The response headers that are the same for every answer (CORS, validators, type), built once
    /// when the object is stored; each answer adds `Age`, `Cache-Control`, `X-Cache` and the length.
    pub headers: HeaderMap,
}

/// Headers a browser player may read besides the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str =
    "Age, Content-Length, Content-Range, ETag, X-Cache, X-Origin-Unreachable, CMSD-Static, CMSD-Dynamic";

/// The per-object part of every answer's headers (see [`CachedObject::headers`]).
pub fn fixed_headers(
    status: StatusCode,
    content_type: Option<&HeaderValue>,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(12);
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    if let Some(v) = etag {
        h.insert(ETAG, v.clone());
    }
    if let Some(v) = content_type {
        h.insert(CONTENT_TYPE, v.clone());
    }
    if let Some(v) = last_modified {
        h.insert(LAST_MODIFIED, v.clone());
    }
    if status.is_success() {
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    h
}

impl CachedObject {
    pub fn state(&self, now: Instant) -> State {
        policy::state(self.stored_at, self.lifetime, now)
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The conditions of a request that revalidates this object with the origin: its `ETag` if
    /// the origin sent one, its `Last-Modified`. Empty when there is nothing to validate.
    pub fn validators(&self) -> Vec<(http::HeaderName, HeaderValue)> {
        let mut conditions = Vec::with_capacity(2);
        if self.etag_from_origin {
            conditions.push((http::header::IF_NONE_MATCH, self.etag.clone()));
        }
        if let Some(modified) = &self.last_modified {
            conditions.push((http::header::IF_MODIFIED_SINCE, modified.clone()));
        }
        conditions
    }

    /// Target duration, for media playlists.
    pub fn target_duration(&self) -> Option<Duration> {
        self.playlist.as_ref().and_then(|p| p.target_duration)
    }
}
