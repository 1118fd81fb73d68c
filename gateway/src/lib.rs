//! The edge gateway: serves HLS playlists and segments from an in-memory cache, fetching each missing
//! object from the origin exactly once however many viewers ask for it at the same time.
//!
//! The modules follow a request: [`http`] accepts, routes and delivers; [`edge`] looks objects up,
//! runs the one origin fetch per object and follows live playlists; [`cache`] is what is stored, for
//! how long and under which key; [`origin`] fetches from the origins. Beside them: [`p2p`] (the
//! peer-assist tracker), [`hls`], [`config`], [`metrics`], [`clock`], [`error`] and [`demo`].
//!
//! Pure logic (paths and keys, classification, freshness policy, ranges, the circuit breaker, the
//! follower's decisions, the demo live timeline) lives in modules without I/O; the async shells around
//! it stay thin. See `docs/ARCHITECTURE.md`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cache;
pub mod clock;
pub mod config;
pub mod demo;
pub mod edge;
pub mod error;
pub mod hls;
pub mod http;
pub mod metrics;
pub mod origin;
pub mod p2p;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use crate::http::server::Drained;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;

/// A configured gateway, ready to serve.
#[derive(Debug, Clone)]
pub struct Gateway {
    state: Arc<crate::http::service::AppState>,
    config: Config,
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no origin configured")]
    NoOrigin,
    #[error("TLS setup for origins failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl Gateway {
    /// A gateway on the real clock.
    pub fn new(config: Config) -> Result<Self, BuildError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A gateway whose freshness decisions read `clock` (tests drive it explicitly). Call it inside a
    /// Tokio runtime: the peer-assist tracker starts a task.
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        if config.origins.is_empty() {
            return Err(BuildError::NoOrigin);
        }
        let origin =
            origin::OriginClient::new(&config.origins, config.origin.clone(), Arc::clone(&clock))?;
        let edge = edge::Edge::new(
            config.cache.clone(),
            config.follower.clone(),
            origin,
            metrics::Metrics::new(),
            clock,
        );
        let p2p = config
            .p2p
            .enabled
            .then(|| p2p::P2p::start(&edge, &config.p2p));
        Ok(Self {
            state: crate::http::service::AppState::new(
                edge,
                p2p,
                crate::http::web::config_document(&config.p2p.ice_servers),
            ),
            config,
        })
    }

    pub fn edge(&self) -> &Arc<edge::Edge> {
        &self.state.edge
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.state.edge.metrics
    }

    /// Serves `listener` until `shutdown` resolves, then stops accepting, turns `/readyz` to 503 and
    /// waits up to the drain timeout for requests in flight.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Drained {
        crate::http::server::serve(listener, self.state, self.config.server.clone(), shutdown).await
    }
}
