//! Accepting connections: HTTP/1.1 and HTTP/2 on one port, header limits and timeouts, a concurrency
//! limit that sheds load with 503, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::config::ServerConfig;
use crate::http::response::Body;
use crate::http::service::{self, AppState};
use crate::http::tls::CertStore;
use crate::http::ClientAddr;

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

fn builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
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
        .max_concurrent_streams(256);
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
    let builder = builder(&config);
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let first_bytes = config.header_read_timeout;
        let limited = limited.clone();
        let shed = state.edge.metrics.load_shed.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            let mut limited = limited.clone();
            let shed = shed.clone();
            async move {
                let ready = match limited.ready().await {
                    Ok(ready) => ready.call(request).await,
                    Err(e) => Err(e),
                };
                Ok::<_, Infallible>(ready.unwrap_or_else(|e| {
                    if e.is::<tower::load_shed::error::Overloaded>() {
                        shed.inc();
                    } else {
                        tracing::error!(error = %e, "request service failed");
                    }
                    overloaded()
                }))
            }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let gauge = state.edge.metrics.open_connections.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                Some(acceptor) => {
                    // The handshake is bounded like a request head; ALPN then says which protocol
                    // is spoken, so nothing is sniffed.
                    let handshake =
                        tokio::time::timeout(first_bytes, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake took too long");
                            return;
                        }
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let builder = if h2 {
                        builder.http2_only()
                    } else {
                        builder.http1_only()
                    };
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    gauge.inc();
                    let result = watcher.watch(connection).await;
                    gauge.dec();
                    result
                }
                None => {
                    // hyper-util reads the first bytes to tell HTTP/1 from HTTP/2 without a
                    // timeout, and the header-read timer only starts after that: bound it here,
                    // or a silent client holds the connection forever.
                    if !protocol_bytes_arrive(&stream, first_bytes).await {
                        tracing::debug!(%peer, "closing a connection that sent no request in time");
                        return;
                    }
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    gauge.inc();
                    let result = watcher.watch(connection).await;
                    gauge.dec();
                    result
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    state.start_draining();
    tracing::info!(connections = graceful.count(), timeout = ?config.drain_timeout, "draining");
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
    let drained = async { tokio::join!(graceful.shutdown(), peers_gone) };
    match tokio::time::timeout(config.drain_timeout, drained).await {
        Ok(_) => Drained::Clean,
        Err(_) => Drained::TimedOut,
    }
}

/// The HTTP/2 connection preface: a client that starts it must finish it before hyper can tell the
/// protocol.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the client has sent enough to tell its protocol: one byte that cannot start the HTTP/2
/// preface, or the whole preface. False when `limit` passes first or the client goes away.
async fn protocol_bytes_arrive(stream: &tokio::net::TcpStream, limit: std::time::Duration) -> bool {
    let wait = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= H2_PREFACE.len() || !H2_PREFACE.starts_with(&buf[..n]) => {
                    return true
                }
                // A partial preface: peek returns at once while those bytes sit unread.
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
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
