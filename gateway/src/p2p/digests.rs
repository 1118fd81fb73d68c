//! `GET /p2p/v1/digests/{stream}/{rendition}`: the digests of the recent segments of a rendition, for
//! peers and tools that do not hold a signalling connection.

use std::sync::Arc;

use http::{Response, StatusCode};
use peer_assist::tracker::{Backend, ResolveError};

use crate::edge::Edge;
use crate::http::response::{text, text_response, Body};
use crate::p2p::backend::{digest_window, GatewayBackend};

/// `GET /p2p/v1/digests/{stream path without the leading slash}/{rendition}`.
pub async fn digests_endpoint(edge: &Arc<Edge>, rest: &str) -> Response<Body> {
    let Some((stream, rendition)) = rest.rsplit_once('/') else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /p2p/v1/digests/{stream}/{rendition}\n",
        );
    };
    let Ok(rendition) = rendition.parse::<u32>() else {
        return text(
            StatusCode::BAD_REQUEST,
            "the rendition must be a variant index (0, 1, ...)\n",
        );
    };
    let stream = format!("/{stream}");
    let backend = GatewayBackend::new(Arc::clone(edge));
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
