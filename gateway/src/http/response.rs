//! The body type of every gateway answer and the small answers every part of the gateway sends:
//! plain text for the operational endpoints, uncacheable text or JSON for errors and scripts.
//!
//! A leaf: it imports no other gateway module, so any module (the HTTP service, delivery, the
//! peer-assist endpoints) may use it without an import cycle.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::Full;

/// Why a streamed body ended before its end: hyper aborts the connection (HTTP/1) or resets the
/// stream (HTTP/2), so the client sees an error, never a short body that looks complete.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of every gateway answer: bytes at hand, or bytes that are still arriving
/// from the origin.
pub struct Body(Kind);

enum Kind {
    Full(Full<Bytes>),
    Streamed {
        chunks: BoxStream<'static, Result<Bytes, BodyError>>,
        len: Option<u64>,
    },
}

impl Body {
    /// A body whose bytes are all here.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body(Kind::Full(Full::new(bytes.into())))
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// A body sent as `chunks` come; `len`, when known, is what they add up to. An error from
    /// `chunks` aborts the answer.
    pub fn streamed(
        chunks: impl Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
        len: Option<u64>,
    ) -> Self {
        Body(Kind::Streamed {
            chunks: chunks.boxed(),
            len,
        })
    }

    /// Whether the body is still arriving.
    pub fn is_streamed(&self) -> bool {
        matches!(self.0, Kind::Streamed { .. })
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Full(full) => f.debug_tuple("Body::Full").field(full).finish(),
            Kind::Streamed { len, .. } => {
                f.debug_struct("Body::Streamed").field("len", len).finish()
            }
        }
    }
}

impl From<Full<Bytes>> for Body {
    fn from(full: Full<Bytes>) -> Self {
        Body(Kind::Full(full))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Kind::Streamed { chunks, .. } => chunks
                .poll_next_unpin(cx)
                .map(|next| next.map(|chunk| chunk.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(full) => full.is_end_stream(),
            Kind::Streamed { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(full) => full.size_hint(),
            Kind::Streamed { len: Some(n), .. } => SizeHint::with_exact(*n),
            Kind::Streamed { len: None, .. } => SizeHint::default(),
        }
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A short plain-text answer of an operational endpoint (`/healthz`, `/readyz`, 404s, 405).
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
    response
}

/// A small uncacheable answer for browsers and scripts (errors, JSON from the peer-assist endpoints).
pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    text: String,
) -> Response<Body> {
    error_response_typed(status, content_type, text, false)
}

/// [`text_response`] in plain text.
pub fn text(status: StatusCode, message: &str) -> Response<Body> {
    text_response(status, TEXT_PLAIN, message.to_owned())
}

/// An uncacheable plain-text error; an answer to HEAD carries no body.
pub fn error_response(status: StatusCode, text: String, head: bool) -> Response<Body> {
    error_response_typed(status, TEXT_PLAIN, text, head)
}

fn error_response_typed(
    status: StatusCode,
    content_type: &'static str,
    text: String,
    head: bool,
) -> Response<Body> {
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(text)
    };
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
