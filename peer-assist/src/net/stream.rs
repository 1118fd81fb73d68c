//! HTTP over an emulated [`Link`]: a TCP stream whose received bytes become readable only when
//! the link would have delivered them (the round trip, the downlink's rate, a retransmission's
//! delay for a lost segment), and a connector for hyper's client that makes such streams.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::link::Link;

/// Bytes read from the socket at once.
const CHUNK: usize = 16 * 1024;

/// A TCP stream seen through a viewer's link (or as it is, without one).
pub struct ShapedStream {
    inner: TcpStream,
    link: Option<Arc<Link>>,
    /// Bytes received and when they may be read.
    pending: VecDeque<(Instant, Bytes)>,
    eof: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Where the socket is read into (allocated once, with the link).
    scratch: Vec<u8>,
}

impl ShapedStream {
    pub fn new(inner: TcpStream, link: Option<Arc<Link>>) -> Self {
        Self {
            inner,
            link,
            pending: VecDeque::new(),
            eof: false,
            sleep: None,
            scratch: Vec::new(),
        }
    }
}

impl AsyncRead for ShapedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(link) = this.link.clone() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        // Take in everything the socket has now, stamping each chunk with its delivery time.
        if this.scratch.is_empty() {
            this.scratch = vec![0u8; CHUNK];
        }
        while !this.eof {
            let mut read = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        this.eof = true;
                    } else {
                        let chunk = Bytes::copy_from_slice(read.filled());
                        let at = link.receive_stream(Instant::now(), n);
                        this.pending.push_back((at, chunk));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            let Some((at, bytes)) = this.pending.front_mut() else {
                // Nothing held back: end of stream, or wait for the socket (its waker is set).
                return if this.eof {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            };
            if Instant::now() >= *at {
                let n = bytes.len().min(buf.remaining());
                buf.put_slice(&bytes[..n]);
                bytes.advance(n);
                if bytes.is_empty() {
                    this.pending.pop_front();
                }
                this.sleep = None;
                return Poll::Ready(Ok(()));
            }
            let deadline = tokio::time::Instant::from_std(*at);
            match &mut this.sleep {
                Some(sleep) if sleep.deadline() == deadline => {}
                slot => *slot = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            if let Some(sleep) = &mut this.sleep {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for ShapedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connection for ShapedStream {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// hyper's HTTP connector, its streams seen through a link (when there is one).
#[derive(Clone, Debug)]
pub struct ShapedConnector {
    inner: HttpConnector,
    link: Option<Arc<Link>>,
}

impl ShapedConnector {
    pub fn new(inner: HttpConnector, link: Option<Arc<Link>>) -> Self {
        Self { inner, link }
    }
}

impl tower_service::Service<Uri> for ShapedConnector {
    type Response = TokioIo<ShapedStream>;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let link = self.link.clone();
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            Ok(TokioIo::new(ShapedStream::new(tcp, link)))
        })
    }
}
