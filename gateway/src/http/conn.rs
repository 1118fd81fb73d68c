//! What the server wraps around each client connection so that no client can hold its resources
//! without making progress:
//!
//! - [`read_preface`]: the first bytes are read here, under the header-read timeout, until the
//!   protocol is known ([`sniff`], pure); they are replayed to hyper by [`ClientIo`]. A client that
//!   sends nothing, or half an HTTP/2 preface, is closed when the timeout passes. (hyper-util's own
//!   sniffing read has no timeout; the peek-and-sleep loop that bounded it before woke every 5 ms
//!   per waiting connection, so 5,000 half-sent prefaces kept a core busy.)
//! - [`ClientIo`]: a write the socket does not accept for `server.send_timeout` fails the
//!   connection (a client that stops reading: HTTP/1, HTTP/2 and upgraded WebSockets alike).
//! - [`StreamExecutor`] and [`SendBody`]: each HTTP/2 stream runs in a task of its own; a response
//!   body the client gives no flow-control window to for `server.send_timeout` is dropped, and h2
//!   resets the stream (`RST_STREAM`). Bodies are handed over in pieces of [`SEND_CHUNK`], so
//!   "progress" is a piece accepted, and the last byte is held back so that the stream task ends only
//!   once the client's window took everything.
//! - [`ConnStreams`]: how many streams of a connection are open and since when none is, for the
//!   idle timeout of HTTP/2 connections.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::http::send_rate::SendRate;

/// Largest piece of a response body handed to the connection at a time (one HTTP/2 frame at the
/// default frame size).
pub const SEND_CHUNK: usize = 16 * 1024;

/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    Http1,
    Http2,
    /// So far a prefix of the HTTP/2 preface (or nothing): more is needed.
    NeedMore,
}

/// The protocol `received` (the first bytes of a connection) starts: HTTP/2 once the whole preface
/// is there, HTTP/1 as soon as a byte differs from it.
pub fn sniff(received: &[u8]) -> Sniff {
    let n = received.len().min(H2_PREFACE.len());
    if received[..n] != H2_PREFACE[..n] {
        Sniff::Http1
    } else if n == H2_PREFACE.len() {
        Sniff::Http2
    } else {
        Sniff::NeedMore
    }
}

/// Why a connection was closed before its protocol was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefaceError {
    /// The client's fault: too little arrived within the header-read timeout.
    TimedOut,
    /// The client closed the connection (or it failed) first.
    Closed,
}

/// Reads from `io` until the protocol is known, for `limit` at most. Returns it and the bytes read
/// (at most the preface's length), which must be replayed ([`ClientIo`]).
pub async fn read_preface<R: AsyncRead + Unpin>(
    io: &mut R,
    limit: Duration,
) -> Result<(Sniff, Bytes), PrefaceError> {
    let read = async {
        let mut received = Vec::with_capacity(H2_PREFACE.len());
        let mut chunk = [0u8; H2_PREFACE.len()];
        loop {
            match sniff(&received) {
                Sniff::NeedMore => {}
                found => return Ok((found, Bytes::from(received))),
            }
            let want = H2_PREFACE.len().saturating_sub(received.len()).max(1);
            match io.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return Err(PrefaceError::Closed),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(PrefaceError::TimedOut))
}

/// A client connection as hyper sees it: the bytes [`read_preface`] took replayed first, and writes
/// that fail once the socket has accepted nothing for the send timeout.
#[derive(Debug)]
pub struct ClientIo<T> {
    inner: T,
    prefix: Bytes,
    send_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    timeouts: IntCounter,
    /// What the socket accepted, and when: the connection's throughput estimate.
    rate: Arc<SendRate>,
    /// When the write in progress first found the socket full (it returned `Pending`).
    write_began: Option<std::time::Instant>,
}

impl<T> ClientIo<T> {
    /// `timeouts` counts connections failed for a stalled write.
    pub fn new(inner: T, prefix: Bytes, send_timeout: Duration, timeouts: IntCounter) -> Self {
        Self {
            inner,
            prefix,
            send_timeout,
            stalled: None,
            timeouts,
            rate: Arc::default(),
            write_began: None,
        }
    }

    /// The connection's throughput estimate, fed by its writes.
    pub fn send_rate(&self) -> Arc<SendRate> {
        Arc::clone(&self.rate)
    }

    /// Feeds a write's outcome to the throughput estimate: what the socket accepted, and whether
    /// (since when) the write had found it full.
    fn measure(&mut self, polled: &Poll<io::Result<usize>>) {
        let now = std::time::Instant::now();
        match polled {
            Poll::Ready(Ok(n)) => {
                let full_since = self.write_began.take();
                self.rate.wrote(now, *n as u64, full_since);
            }
            Poll::Ready(Err(_)) => self.write_began = None,
            Poll::Pending => {
                self.write_began.get_or_insert(now);
            }
        }
    }

    /// A write's outcome, turned into an error when the socket has been stalled for too long.
    fn bound<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.send_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            self.timeouts.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client accepted no data for the send timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.measure(&polled);
        self.bound(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.measure(&polled);
        self.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.bound(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bound(cx, polled)
    }
}

/// The streams of one connection: how many are open, and when the last one ended.
#[derive(Debug)]
pub struct ConnStreams {
    open: AtomicUsize,
    last_end: Mutex<Instant>,
}

impl ConnStreams {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        })
    }

    /// Since when the connection has had no open stream; `None` while one is open.
    pub fn idle_since(&self) -> Option<Instant> {
        (self.open.load(Ordering::SeqCst) == 0)
            .then(|| *self.last_end.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Holds one stream open in its [`ConnStreams`] until dropped.
#[derive(Debug)]
struct OpenStream(Arc<ConnStreams>);

impl OpenStream {
    fn new(streams: Arc<ConnStreams>) -> Self {
        streams.open.fetch_add(1, Ordering::SeqCst);
        Self(streams)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// When the response body of the stream being polled last made progress (`None`: not sending yet).
#[derive(Debug, Default)]
struct StreamProgress {
    last: Mutex<Option<Instant>>,
}

impl StreamProgress {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

tokio::task_local! {
    /// The progress record of the HTTP/2 stream task being polled, for its [`SendBody`].
    static STREAM: Arc<StreamProgress>;
}

/// The executor hyper runs one connection's HTTP/2 streams on: each stream is a task watched for
/// send progress (see the module docs).
#[derive(Debug, Clone)]
pub struct StreamExecutor {
    streams: Arc<ConnStreams>,
    send_timeout: Duration,
    timeouts: IntCounter,
}

impl StreamExecutor {
    /// `timeouts` counts streams reset for a stalled body.
    pub fn new(streams: Arc<ConnStreams>, send_timeout: Duration, timeouts: IntCounter) -> Self {
        Self {
            streams,
            send_timeout,
            timeouts,
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(Watched {
            inner: Box::pin(future),
            progress: Arc::default(),
            timer: None,
            send_timeout: self.send_timeout,
            timeouts: self.timeouts.clone(),
            _open: OpenStream::new(Arc::clone(&self.streams)),
        });
    }
}

/// A stream task that ends (dropping the stream, which h2 then resets) when its response body made
/// no progress for the send timeout.
struct Watched<F> {
    inner: Pin<Box<F>>,
    progress: Arc<StreamProgress>,
    timer: Option<Pin<Box<Sleep>>>,
    send_timeout: Duration,
    timeouts: IntCounter,
    _open: OpenStream,
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let progress = Arc::clone(&this.progress);
        let inner = &mut this.inner;
        if STREAM
            .sync_scope(progress, || inner.as_mut().poll(cx))
            .is_ready()
        {
            return Poll::Ready(());
        }
        // Before the body is first polled the service is still answering: its own deadlines apply.
        let Some(last) = this.progress.last() else {
            return Poll::Pending;
        };
        let deadline = last + this.send_timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            this.timeouts.inc();
            tracing::debug!("a response stream made no progress for the send timeout: reset");
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// A response body handed to hyper in pieces of at most [`SEND_CHUNK`], its last byte on its own,
/// noting each piece taken as progress of the HTTP/2 stream it is sent on (if any).
#[derive(Debug)]
pub struct SendBody<B> {
    inner: B,
    pending: Bytes,
}

impl<B> SendBody<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
        }
    }
}

impl<B> HttpBody for SendBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let _ = STREAM.try_with(|progress| progress.touch());
        let this = &mut *self;
        while this.pending.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => this.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let last = this.inner.is_end_stream();
        let take = next_piece(this.pending.len(), last);
        Poll::Ready(Some(Ok(Frame::data(this.pending.split_to(take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let pending = self.pending.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(pending));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(pending));
        }
        hint
    }
}

/// How many of `pending` bytes to hand over now: at most [`SEND_CHUNK`], and when they are the last
/// of the body (`last`), all but the final byte, which goes alone.
pub fn next_piece(pending: usize, last: bool) -> usize {
    if last && pending <= SEND_CHUNK {
        if pending > 1 {
            pending - 1
        } else {
            pending
        }
    } else {
        pending.min(SEND_CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn sniff_tells_http2_only_from_the_whole_preface() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Sniff::NeedMore);
        assert_eq!(sniff(H2_PREFACE), Sniff::Http2);
        assert_eq!(sniff(b"G"), Sniff::Http1);
        assert_eq!(sniff(b"PRI * HTTP/1.1"), Sniff::Http1);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\0");
        assert_eq!(sniff(&more), Sniff::Http2);
    }

    #[test]
    fn pieces_are_bounded_and_the_last_byte_goes_alone() {
        assert_eq!(next_piece(100_000, false), SEND_CHUNK);
        assert_eq!(next_piece(100_000, true), SEND_CHUNK);
        assert_eq!(next_piece(SEND_CHUNK, true), SEND_CHUNK - 1);
        assert_eq!(next_piece(500, true), 499);
        assert_eq!(next_piece(1, true), 1);
        assert_eq!(next_piece(500, false), 500);
    }

    #[tokio::test]
    async fn a_send_body_yields_the_same_bytes_in_pieces() {
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut body = SendBody::new(Full::new(Bytes::from(data.clone())));
        assert_eq!(body.size_hint().exact(), Some(40_000));
        assert!(!body.is_end_stream());
        let mut sizes = Vec::new();
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            sizes.push(chunk.len());
            received.extend_from_slice(&chunk);
        }
        assert_eq!(received, data);
        assert_eq!(
            sizes,
            [SEND_CHUNK, SEND_CHUNK, 40_000 - 2 * SEND_CHUNK - 1, 1]
        );
        assert!(body.is_end_stream());
        assert!(SendBody::new(Full::new(Bytes::new())).is_end_stream());
    }

    #[tokio::test]
    async fn a_preface_read_replays_what_it_read() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut server = server;
        let (found, prefix) = read_preface(&mut server, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(found, Sniff::Http1);
        let counter = IntCounter::new("t", "t").unwrap();
        let mut io = ClientIo::new(server, prefix, Duration::from_secs(1), counter);
        let mut line = [0u8; 16];
        io.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn half_a_preface_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &H2_PREFACE[..10])
            .await
            .unwrap();
        let read = read_preface(&mut server, Duration::from_millis(100)).await;
        assert_eq!(read.unwrap_err(), PrefaceError::TimedOut);
        drop(client);
    }
}
