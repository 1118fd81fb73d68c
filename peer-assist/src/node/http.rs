//! The node's HTTP side: GETs (and range GETs) of segments and playlists from the gateway, with
//! errors that say what went wrong (absent, the gateway's or origin's error, a timeout, the network).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::net::stream::ShapedConnector;
use crate::net::Link;

/// Longest accepted segment or playlist.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// One GET may take this long at most.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an HTTP GET from the gateway gave no usable body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// 404 or 410: the object does not exist (yet, or any more).
    #[error("absent ({0})")]
    Absent(StatusCode),
    /// Any other non-success status: the gateway's or its origin's error.
    #[error("the gateway answered {0}")]
    Status(StatusCode),
    /// No complete answer in time.
    #[error("timed out")]
    Timeout,
    /// The connection failed or broke.
    #[error("connection failed: {0}")]
    Network(String),
    /// The body is larger than this node accepts.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// A playlist that cannot be used (the origin's fault).
    #[error("unusable playlist: {0}")]
    Playlist(String),
    /// A request this node could not even build (its own fault).
    #[error("bad request: {0}")]
    Request(String),
}

impl HttpError {
    /// The error for a non-success status.
    pub fn from_status(status: StatusCode) -> Self {
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            HttpError::Absent(status)
        } else {
            HttpError::Status(status)
        }
    }
}

/// An HTTP client for one gateway.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    base: String,
    client: Client<ShapedConnector, Empty<Bytes>>,
    /// Sent as the `token` cookie on every request (a stream under a protected prefix).
    cookie: Option<http::HeaderValue>,
}

impl GatewayClient {
    pub fn new(base: &str) -> Self {
        Self::through(base, None)
    }

    /// A client whose connections go through an emulated link (the load-test harness).
    pub fn through(base: &str, link: Option<Arc<Link>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new())
                .build(ShapedConnector::new(connector, link)),
            cookie: None,
        }
    }

    /// The same client, sending `token` as the `token` cookie on every request; an error if the
    /// token cannot be a header value.
    pub fn with_token(mut self, token: &str) -> Result<Self, HttpError> {
        let cookie = http::HeaderValue::from_str(&format!("token={token}"))
            .map_err(|_| HttpError::Request("the token is not a valid cookie value".into()))?;
        self.cookie = Some(cookie);
        Ok(self)
    }

    /// GETs `id` (a gateway path, or the byte range of one: [`crate::hls::range_id`]) from byte
    /// `from` of it on (a range request when `from > 0` or `id` is a range).
    pub async fn get(&self, id: &str, from: u64) -> Result<Bytes, HttpError> {
        let (path, range) = crate::hls::split_range_id(id);
        // The bytes of the file wanted: [first, end) (end None: to the end of the file).
        let (first, end) = match range {
            Some(r) => (r.offset.saturating_add(from), Some(r.end())),
            None => (from, None),
        };
        if end.is_some_and(|end| first >= end) {
            return Ok(Bytes::new());
        }
        let mut request = http::Request::get(format!("{}{}", self.base, path));
        match end {
            Some(end) => {
                let last = end - 1;
                request = request.header(http::header::RANGE, format!("bytes={first}-{last}"));
            }
            None if first > 0 => {
                request = request.header(http::header::RANGE, format!("bytes={first}-"));
            }
            None => {}
        }
        if let Some(cookie) = &self.cookie {
            request = request.header(http::header::COOKIE, cookie.clone());
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| HttpError::Request(e.to_string()))?;
        let (status, body) = tokio::time::timeout(GET_TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| HttpError::Network(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Ok((status, Bytes::new()));
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge(MAX_BODY)
                    } else {
                        HttpError::Network(e.to_string())
                    }
                })?
                .to_bytes();
            Ok::<_, HttpError>((status, body))
        })
        .await
        .map_err(|_| HttpError::Timeout)??;
        let ranged = first > 0 || end.is_some();
        if status == StatusCode::PARTIAL_CONTENT && ranged {
            Ok(body)
        } else if status.is_success() {
            // A server that ignored the range sent everything: keep the part asked for.
            let at = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).min(body.len());
            let stop = end.map_or(body.len(), at);
            Ok(body.slice(at(first).min(stop)..stop))
        } else {
            Err(HttpError::from_status(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            HttpError::from_status(StatusCode::NOT_FOUND),
            HttpError::Absent(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            HttpError::from_status(StatusCode::BAD_GATEWAY),
            HttpError::Status(StatusCode::BAD_GATEWAY)
        );
    }
}
