//! `GET /p2p/v1/digests/{stream}/{rendition}`: the digests of the recent segments of a rendition, for
//! peers and tools that do not hold a signalling connection.

use std::sync::Arc;

use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use peer_assist::tracker::{Backend, ResolveError};

use crate::auth::gate::Gate;
use crate::edge::Edge;
use crate::http::response::{text, text_response, Body};
use crate::http::ClientAddr;
use crate::p2p::backend::{digest_window, stream_path, GatewayBackend};

/// `GET /p2p/v1/digests/{stream path without the leading slash}/{rendition}`; for a protected
/// stream, with a token for it (query or cookie).
pub async fn digests_endpoint<B>(
    edge: &Arc<Edge>,
    gate: Option<&Gate>,
    request: &Request<B>,
    rest: &str,
) -> Response<Body> {
    let Some((stream, rendition)) = rest.rsplit_once('/') else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /p2p/v1/digests/{stream}/{rendition}\n",
        );
    };
    let Ok(rendition) = rendition.parse::<u32>() else {
        return text(
            StatusCode::BAD_REQUEST,
            "the rendition must be a rendition index (0, 1, ...: variants, then EXT-X-MEDIA playlists)\n",
        );
    };
    let stream = format!("/{stream}");
    if let Some(gate) = gate {
        let Some(path) = stream_path(&stream) else {
            return text(StatusCode::BAD_REQUEST, "the stream is not a valid path\n");
        };
        let peer = ClientAddr::of(request);
        let checked = gate.check(
            &path,
            request.uri().query(),
            request.headers(),
            peer,
            SystemTime::now(),
        );
        if let Err(e) = checked {
            edge.metrics.auth_denied(e.label());
            return text(StatusCode::FORBIDDEN, &format!("403 Forbidden: {e}\n"));
        }
    }
    let backend = GatewayBackend::new(Arc::clone(edge), None);
    let playlist = match backend.resolve(&stream, rendition).await {
        Ok(p) => p,
        Err(e @ ResolveError::NotFound(_)) => {
            return text(StatusCode::NOT_FOUND, &format!("{e}\n"))
        }
        Err(e @ ResolveError::Unavailable(_)) => {
            return text(StatusCode::BAD_GATEWAY, &format!("{e}\n"))
        }
    };
    let segments = digest_window(edge, &playlist).await;
    let body = serde_json::json!({ "playlist": playlist, "segments": segments });
    text_response(StatusCode::OK, "application/json", body.to_string())
}
