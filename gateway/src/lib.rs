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

pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod demo;
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hls;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod origin;
pub mod p2p;
pub mod tools;

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
    tls: Option<Arc<crate::http::tls::CertStore>>,
}

/// Reloads what can change without a restart: the TLS certificate and the token keys. Cheap to
/// clone; `main` calls it on SIGHUP, and the gateway itself when the files change.
#[derive(Debug, Clone)]
pub struct Reloader {
    tls: Option<Arc<crate::http::tls::CertStore>>,
    gate: Option<Arc<auth::gate::Gate>>,
    metrics: metrics::Metrics,
}

impl Reloader {
    /// Reloads everything (`force`) or what changed on disk. Failures are logged and counted; the
    /// certificate and keys in use stay.
    pub fn reload(&self, force: bool) {
        if let Some(tls) = &self.tls {
            if force || tls.changed() {
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!("TLS certificate reloaded");
                        self.metrics.reloaded("tls", "ok");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload failed; keeping the old one");
                        self.metrics.reloaded("tls", "error");
                    }
                }
            }
        }
        if let Some(gate) = self.gate.as_ref().filter(|g| force || g.changed()) {
            match gate.reload() {
                Ok(changed) => {
                    if changed {
                        tracing::info!("token keys reloaded");
                    }
                    self.metrics.reloaded("auth_keys", "ok");
                }
                Err(e) => {
                    tracing::error!(error = %e, "token key reload failed; keeping the old keys");
                    self.metrics.reloaded("auth_keys", "error");
                }
            }
        }
    }
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no origin configured")]
    NoOrigin,
    #[error("TLS setup for origins failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS for viewers: {0}")]
    ServerTls(#[from] crate::http::tls::TlsError),
    #[error("auth.key_file: {0}")]
    Keys(#[from] auth::KeyError),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::LedgerError),
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
        let metrics = metrics::Metrics::new();
        let origin = origin::OriginClient::new(
            &config.origins,
            config.origin.clone(),
            Arc::clone(&clock),
            &metrics,
        )?;
        let edge = edge::Edge::new(
            config.cache.clone(),
            config.follower.clone(),
            origin,
            metrics,
            clock,
        );
        let gate = auth::gate::Gate::from_config(&config.auth)?;
        if gate.is_some() && config.auth.protect.is_empty() {
            tracing::warn!("auth.key_file is set but auth.protect is empty: nothing is protected");
        }
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(crate::http::tls::CertStore::open(cert, key)?),
            _ => None,
        };
        let ledger = if config.p2p.enabled {
            ledger::Ledger::open(&config.ledger)?
        } else {
            None
        };
        let p2p = config.p2p.enabled.then(|| {
            let client_ip_header = auth::gate::client_ip_header(&config.auth);
            p2p::P2p::start(&edge, &config.p2p, gate.clone(), client_ip_header, ledger)
        });
        Ok(Self {
            state: crate::http::service::AppState::new(
                edge,
                p2p,
                crate::http::web::config_document(&config.p2p.ice_servers),
                gate,
                crate::http::cmcd::Settings::new(&config.cmcd, &config.cmsd),
            ),
            config,
            tls,
        })
    }

    /// What reloads the certificate and the keys (see [`Reloader`]).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            tls: self.tls.clone(),
            gate: self.state.gate.clone(),
            metrics: self.state.edge.metrics.clone(),
        }
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn edge(&self) -> &Arc<edge::Edge> {
        &self.state.edge
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.state.edge.metrics
    }

    /// Serves `listener` until `shutdown` resolves, then stops accepting, turns `/readyz` to 503 and
    /// waits up to the drain timeout for requests in flight.
    /// The certificate and the keys are reloaded when their files change (looked at every second).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Drained {
        let reloader = self.reloader();
        let watch = (reloader.tls.is_some() || reloader.gate.is_some()).then(|| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    reloader.reload(false);
                }
            })
        });
        let drained = crate::http::server::serve(
            listener,
            self.state,
            self.config.server.clone(),
            self.tls,
            shutdown,
        )
        .await;
        if let Some(watch) = watch {
            watch.abort();
        }
        drained
    }
}
