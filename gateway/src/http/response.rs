//! The body type of every gateway answer and the small answers every part of the gateway sends:
//! plain text for the operational endpoints, uncacheable text or JSON for errors and scripts.
//!
//! A leaf: it imports no other gateway module, so any module (the HTTP service, delivery, the
//! peer-assist endpoints) may use it without an import cycle.

use bytes::Bytes;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// The response body type of every gateway answer.
pub type Body = Full<Bytes>;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A short plain-text answer of an operational endpoint (`/healthz`, `/readyz`, 404s, 405).
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
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
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
