//! The peer-assist tracker mounted in the gateway: WebSocket signalling at `/p2p/v1/ws?stream=PATH`,
//! the digests of a rendition at `/p2p/v1/digests/{stream}/{rendition}`, and digests pushed to peers as
//! the gateway caches new segments. The tracker itself lives in `peer-assist`; this module gives it
//! what only the gateway knows (playlists, digests) through [`GatewayBackend`].

pub mod backend;
pub mod digests;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use peer_assist::protocol::signal::{self, DigestEntry};
use peer_assist::tracker::{ConnectionInfo, Tracker, TrackerConfig, MAX_SHARDS};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use std::time::SystemTime;

use crate::auth::{self, gate::Gate};
use crate::config::P2pConfig;
use crate::edge::Edge;
use crate::http::response::{text, Body};
use crate::http::ClientAddr;
use crate::ledger::Ledger;
use crate::p2p::backend::stream_path;
pub use crate::p2p::backend::{digest_window, GatewayBackend};
use crate::p2p::digests::digests_endpoint;

/// Path prefix of everything peer-assist on the gateway.
pub const PREFIX: &str = "/p2p/v1/";

/// Read buffer of one signalling socket (grows for a larger message, up to `max_message_bytes`).
const WS_READ_BUFFER: usize = 2 * 1024;

/// The tracker and the settings the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct P2p {
    pub tracker: Tracker,
    region_header: Option<http::HeaderName>,
    max_message_bytes: usize,
    gate: Option<Arc<Gate>>,
    /// `auth.client_ip_header`: behind a balancer, the per-address caps count viewers, not it.
    client_ip_header: Option<http::HeaderName>,
    /// The contribution ledger, when one is configured.
    pub ledger: Option<Ledger>,
}

impl P2p {
    /// Builds the tracker, registers its metrics and starts forwarding digest events to it.
    pub fn start(
        edge: &Arc<Edge>,
        config: &P2pConfig,
        gate: Option<Arc<Gate>>,
        client_ip_header: Option<http::HeaderName>,
        ledger: Option<Ledger>,
    ) -> Self {
        let tracker_config = TrackerConfig {
            peers_returned: config.peers_returned,
            max_peers_per_swarm: config.max_peers_per_swarm,
            max_swarms: config.max_swarms,
            max_peers_per_address: config.max_peers_per_address,
            max_swarms_per_address: config.max_swarms_per_address,
            send_timeout: config.send_timeout,
            messages_per_second: f64::from(config.messages_per_second),
            message_burst: f64::from(config.messages_per_second) * 2.0,
            max_message_bytes: config.max_message_bytes,
            split_by_region: config.split_by_region,
            ..TrackerConfig::default()
        };
        let tracker = Tracker::new(
            tracker_config,
            Arc::new(
                GatewayBackend::new(Arc::clone(edge), gate.clone()).with_ledger(ledger.clone()),
            ),
            edge.metrics.registry(),
        );
        if let Some(ledger) = &ledger {
            ledger.spawn_sealer();
        }
        let mut events = edge.subscribe_digests();
        let forward = tracker.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => forward.publish_digest(
                        &event.playlist,
                        DigestEntry {
                            id: event.id,
                            sha256: signal::digest_hex(&event.digest),
                            size: event.size,
                        },
                    ),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "digest events lagged");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        let region_header = (!config.region_header.is_empty())
            .then(|| http::HeaderName::from_bytes(config.region_header.as_bytes()).ok())
            .flatten();
        Self {
            tracker,
            region_header,
            max_message_bytes: config.max_message_bytes,
            gate,
            client_ip_header,
            ledger,
        }
    }

    /// Answers a request under [`PREFIX`].
    pub async fn handle<B: Send + 'static>(
        &self,
        edge: &Arc<Edge>,
        mut request: Request<B>,
    ) -> Response<Body> {
        let path = request.uri().path().to_owned();
        if path == "/p2p/v1/ws" {
            return self.upgrade(edge, &mut request);
        }
        if let Some(rest) = path.strip_prefix("/p2p/v1/digests/") {
            return digests_endpoint(edge, self.gate.as_deref(), &request, rest).await;
        }
        if let Some(response) =
            crate::ledger::endpoints::respond(self.ledger.as_ref(), &request).await
        {
            return response;
        }
        text(StatusCode::NOT_FOUND, "unknown peer-assist endpoint\n")
    }

    fn upgrade<B: Send + 'static>(&self, edge: &Edge, request: &mut Request<B>) -> Response<Body> {
        let headers = request.headers();
        let is_websocket = headers
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let version_ok = headers
            .get(SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
        let Some(key) = headers
            .get(SEC_WEBSOCKET_KEY)
            .map(|k| derive_accept_key(k.as_bytes()))
        else {
            return text(StatusCode::BAD_REQUEST, "a WebSocket upgrade is required\n");
        };
        if !is_websocket || !version_ok {
            return text(
                StatusCode::BAD_REQUEST,
                "a WebSocket (version 13) upgrade is required\n",
            );
        }
        let query = request.uri().query();
        let stream = query_param(query, "stream").unwrap_or_default();
        if !stream.starts_with('/') {
            return text(
                StatusCode::BAD_REQUEST,
                "the stream query parameter must name a playlist path\n",
            );
        }
        let shard = match query_param(query, "shard").map(|v| v.parse::<u32>()) {
            None => 0,
            Some(Ok(n)) if n < MAX_SHARDS => n,
            Some(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &format!("the shard query parameter must be a number below {MAX_SHARDS}\n"),
                )
            }
        };
        let region = self
            .region_header
            .as_ref()
            .and_then(|h| request.headers().get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A token on the URL (or in a cookie) is checked now: a bad one never gets a socket. One
        // may also come in `join`; the tracker checks whichever it gets.
        let peer = ClientAddr::of(request);
        // The client's address: from the configured header when there is one (with or without
        // auth), else the socket's.
        let client = auth::gate::client_ip(self.client_ip_header.as_ref(), request.headers(), peer);
        let cookies = request
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let token = auth::from_request(request.uri().query(), cookies).map(|(t, _)| t);
        if let (Some(gate), Some(token)) = (&self.gate, &token) {
            let protected = stream_path(&stream).filter(|p| gate.protects(p));
            if let Some(path) = protected {
                if let Err(e) = gate.grant_to(token, &path, client, SystemTime::now()) {
                    edge.metrics.auth_denied(e.label());
                    return text(StatusCode::FORBIDDEN, &format!("403 Forbidden: {e}\n"));
                }
            }
        }
        let on_upgrade = hyper::upgrade::on(request);
        let tracker = self.tracker.clone();
        // Small buffers: signalling messages are small and a gateway holds many idle sockets
        // (tungstenite's defaults allocate 128 KiB per socket for reading alone).
        let mut ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(self.max_message_bytes.saturating_mul(2).max(WS_READ_BUFFER));
        ws_config.max_message_size = Some(self.max_message_bytes);
        ws_config.max_frame_size = Some(self.max_message_bytes);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(ws_config),
                    )
                    .await;
                    let info = ConnectionInfo {
                        stream,
                        shard,
                        region,
                        token,
                        client,
                    };
                    tracker.serve(ws, info).await;
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(Body::full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&key) {
            h.insert(SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
}
