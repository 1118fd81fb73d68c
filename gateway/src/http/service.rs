//! Routing: the operational endpoints (`/healthz`, `/readyz`, `/metrics`), CORS preflight, method
//! checks, then the player's files, the peer-assist endpoints, and everything else to
//! [`deliver`](crate::http::deliver) from the cache.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ALLOW, CONTENT_TYPE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use std::time::SystemTime;

use crate::auth::gate::Gate;
use crate::auth::TokenError;
use crate::edge::Edge;
use crate::hls::ObjectClass;
use crate::http::cmcd;
use crate::http::deliver::{deliver, Access};
use crate::http::path;
use crate::http::response::{error_response, plain, Body};
use crate::http::ClientAddr;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    pub edge: Arc<Edge>,
    pub p2p: Option<crate::p2p::P2p>,
    /// The web player's `/player/config.json` document.
    pub player_config: Bytes,
    /// Signed URLs, when configured.
    pub gate: Option<Arc<Gate>>,
    /// CMCD read, CMSD sent (`cmcd.*`, `cmsd.*`).
    pub cmcd: cmcd::Settings,
    draining: AtomicBool,
}

impl AppState {
    pub fn new(
        edge: Arc<Edge>,
        p2p: Option<crate::p2p::P2p>,
        player_config: Bytes,
        gate: Option<Arc<Gate>>,
        cmcd: cmcd::Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            edge,
            p2p,
            player_config,
            gate,
            cmcd,
            draining: AtomicBool::new(false),
        })
    }

    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Answers one request. Never fails: every problem becomes a status code.
pub async fn handle<B: Send + 'static>(
    state: Arc<AppState>,
    request: Request<B>,
) -> Response<Body> {
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return preflight(request.headers());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET, HEAD and OPTIONS\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
        return response;
    }
    let head = method == Method::HEAD;
    let mut response = match request.uri().path() {
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" if state.is_draining() => plain(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => plain(StatusCode::OK, "ready\n"),
        "/metrics" => metrics(&state).await,
        // A draining gateway takes no new peers: they join where the balancer sends them next.
        "/p2p/v1/ws" if state.is_draining() => plain(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        p if p.starts_with(crate::p2p::PREFIX) => match &state.p2p {
            Some(p2p) => return p2p.handle(&state.edge, request).await,
            None => plain(
                StatusCode::NOT_FOUND,
                "peer-assist is disabled on this gateway\n",
            ),
        },
        path => match crate::http::web::respond(path, request.headers(), &state.player_config) {
            Some(response) => response,
            None => return gated_delivery(&state, &request, head).await,
        },
    };
    if head {
        *response.body_mut() = Body::empty();
    }
    response
}

/// Normalises the path (400 for unsafe ones), checks the token of a protected path (403), and
/// delivers. The gate compares the path as the origin will read it (percent-decoded), so no
/// spelling of a protected path gets around it.
async fn gated_delivery<B>(state: &AppState, request: &Request<B>, head: bool) -> Response<Body> {
    let edge = &state.edge;
    let uri = request.uri();
    let target = match path::normalize(uri.path(), uri.query()) {
        Ok(t) => t,
        Err(e) => {
            edge.metrics
                .request(ObjectClass::Other, StatusCode::BAD_REQUEST);
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request: {e}\n"),
                head,
            );
        }
    };
    let granted = match &state.gate {
        Some(gate) => {
            let decoded = path::decoded(&target.path);
            let client = ClientAddr::of(request);
            match gate.check(
                &decoded,
                uri.query(),
                request.headers(),
                client,
                SystemTime::now(),
            ) {
                Ok(granted) => granted,
                Err(e) => return forbidden(state, e, head),
            }
        }
        None => None,
    };
    // Behind a trusted load balancer the gate knows the viewer's address from its header.
    let peer = ClientAddr::of(request);
    let client = match &state.gate {
        Some(gate) => gate.client_ip(request.headers(), peer),
        None => peer,
    };
    let access = Access {
        granted: granted.as_ref(),
        gated: state.gate.is_some(),
        client,
    };
    deliver(edge, request, target, access, &state.cmcd, head).await
}

/// 403 for a request a token does not grant, with CORS so a player can tell, never cached.
pub fn forbidden(state: &AppState, e: TokenError, head: bool) -> Response<Body> {
    state.edge.metrics.auth_denied(e.label());
    let mut response = error_response(StatusCode::FORBIDDEN, format!("403 Forbidden: {e}\n"), head);
    response.headers_mut().insert(
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length"),
    );
    response
}

async fn metrics(state: &AppState) -> Response<Body> {
    let edge = &state.edge;
    edge.metrics
        .cache_bytes
        .set(edge.cache.weighted_size().await as i64);
    edge.metrics
        .cache_entries
        .set(edge.cache.entry_count() as i64);
    let mut response = Response::new(Body::full(Bytes::from(edge.metrics.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn preflight(headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    let allowed = headers
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("Range, If-None-Match, If-Modified-Since"));
    h.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}
