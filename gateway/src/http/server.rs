//! Accepting connections: HTTP/1.1 and HTTP/2 on one port, a cap on open connections, header limits
//! and timeouts, send timeouts (see [`conn`](super::conn)), a concurrency limit that sheds load with
//! 503, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::config::ServerConfig;
use crate::http::conn::{
    read_preface, ClientIo, ConnStreams, PrefaceError, SendBody, Sniff, StreamExecutor,
};
use crate::http::response::Body;
use crate::http::service::{self, AppState};
use crate::http::tls::CertStore;
use crate::http::ClientAddr;
use crate::metrics::Metrics;

/// hyper refuses read buffers smaller than this.
const MIN_BUF: usize = 8192;

/// How a server run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished.
    Clean,
    /// The drain timeout passed with requests still running.
    TimedOut,
}

fn builder(config: &ServerConfig, streams: StreamExecutor) -> auto::Builder<StreamExecutor> {
    let mut builder = auto::Builder::new(streams);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also bounds how long a keep-alive connection may sit idle between requests.
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(MIN_BUF))
        .max_headers(config.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(config.idle_timeout))
        .keep_alive_timeout(config.send_timeout)
        .max_concurrent_streams(config.max_streams);
    builder
}

/// Serves `listener` (over TLS when `tls` is given) until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    config: ServerConfig,
    tls: Option<Arc<CertStore>>,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let acceptor = tls.map(|store| tokio_rustls::TlsAcceptor::from(store.server_config()));
    let handler_state = Arc::clone(&state);
    let limited = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(config.max_concurrency.max(1))
        .service_fn(move |request: Request<Incoming>| {
            let state = Arc::clone(&handler_state);
            async move { Ok::<_, Infallible>(service::handle(state, request).await) }
        });
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    // Every connection task holds a clone of `alive`; draining ends when the last one is dropped.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let (drain, draining) = watch::channel(false);
    let metrics = state.edge.metrics.clone();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // At the cap: close at once, before reading anything.
            metrics.connection_refused("max_connections");
            tracing::debug!(%peer, "connection limit reached: closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer,
            config: Arc::clone(&config),
            limited: limited.clone(),
            metrics: metrics.clone(),
            draining: draining.clone(),
        };
        let acceptor = acceptor.clone();
        let alive = alive.clone();
        let gauge = metrics.open_connections.clone();
        tokio::spawn(async move {
            gauge.inc();
            match acceptor {
                Some(acceptor) => {
                    // The handshake is bounded like a request head.
                    let limit = connection.config.header_read_timeout;
                    let handshake = Box::pin(acceptor.accept(stream));
                    match tokio::time::timeout(limit, handshake).await {
                        Ok(Ok(stream)) => connection.run(stream).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake took too long"),
                    }
                }
                None => connection.run(stream).await,
            }
            gauge.dec();
            drop(slot);
            drop(alive);
        });
    }
    drop(listener);
    state.start_draining();
    let _ = drain.send(true);
    drop(alive);
    tracing::info!(
        connections = metrics.open_connections.get(),
        timeout = ?config.drain_timeout,
        "draining"
    );
    // Upgraded WebSockets are no longer hyper's connections: the tracker closes them itself (1012,
    // "join again elsewhere") and the drain waits until every close frame is out.
    let peers_gone = async {
        if let Some(p2p) = &state.p2p {
            p2p.tracker.restart_all();
            while p2p.tracker.peer_count() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    let drained = async { tokio::join!(all_closed.recv(), peers_gone) };
    match tokio::time::timeout(config.drain_timeout, drained).await {
        Ok(_) => Drained::Clean,
        Err(_) => Drained::TimedOut,
    }
}

/// One accepted client connection and what serving it needs.
struct Connection<S> {
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    limited: S,
    metrics: Metrics,
    draining: watch::Receiver<bool>,
}

impl<S> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = tower::BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Serves the connection until it ends: reads its first bytes (bounded by the header-read
    /// timeout) to know the protocol, then hands it to hyper, with the send timeout on every write
    /// and every HTTP/2 stream; closes an HTTP/2 connection without streams after the idle timeout,
    /// and every connection gracefully once the server drains.
    async fn run<T>(self, mut io: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (protocol, prefix) = match read_preface(&mut io, self.config.header_read_timeout).await
        {
            Ok(read) => read,
            Err(PrefaceError::TimedOut) => {
                self.metrics.connection_refused("preface_timeout");
                tracing::debug!(peer = %self.peer, "closing a connection that sent no request in time");
                return;
            }
            Err(PrefaceError::Closed) => return,
        };
        // hyper's connection state is large: allocated only for a client that started a request,
        // so that idle and half-open connections cost little (and leave little behind).
        Box::pin(self.serve(io, protocol, prefix)).await;
    }

    async fn serve<T>(self, io: T, protocol: Sniff, prefix: Bytes)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            peer,
            config,
            limited,
            metrics,
            mut draining,
        } = self;
        let io = ClientIo::new(
            io,
            prefix,
            config.send_timeout,
            metrics.send_timeouts.clone(),
        );
        let rate = io.send_rate();
        let streams = ConnStreams::new();
        let executor = StreamExecutor::new(
            Arc::clone(&streams),
            config.send_timeout,
            metrics.send_timeouts.clone(),
        );
        let builder = builder(&config, executor);
        let shed = metrics.load_shed.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            request.extensions_mut().insert(Arc::clone(&rate));
            let mut limited = limited.clone();
            let shed = shed.clone();
            async move {
                let ready = match limited.ready().await {
                    Ok(ready) => ready.call(request).await,
                    Err(e) => Err(e),
                };
                let response = ready.unwrap_or_else(|e| {
                    if e.is::<tower::load_shed::error::Overloaded>() {
                        shed.inc();
                    } else {
                        tracing::error!(error = %e, "request service failed");
                    }
                    overloaded()
                });
                Ok::<_, Infallible>(response.map(SendBody::new))
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let h2 = protocol == Sniff::Http2;
        let idle = config.idle_timeout;
        let mut idle_check =
            tokio::time::interval((idle / 4).max(std::time::Duration::from_millis(10)));
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = *draining.borrow();
        if closing {
            connection.as_mut().graceful_shutdown();
        }
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                _ = draining.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = idle_check.tick(), if h2 && !closing => {
                    // HTTP/1 keep-alive idleness is bounded by hyper's header-read timeout.
                    if streams.idle_since().is_some_and(|since| since.elapsed() >= idle) {
                        tracing::debug!(%peer, "closing an idle HTTP/2 connection");
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

fn overloaded() -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(
        b"503 Service Unavailable: overloaded\n",
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    // Browser players must be able to read the status and Retry-After.
    headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
