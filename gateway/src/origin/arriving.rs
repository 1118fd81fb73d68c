//! An origin body seen while it arrives: the fetch task's [`Tap`] publishes each chunk the origin
//! sends, and every viewer waiting for that fetch reads them through a [`Reader`] at the origin's
//! pace, instead of waiting for the whole object.
//!
//! A body is *opened* to readers only when it is one that may be streamed: a 200 whose type and
//! first bytes do not say playlist (playlists are parsed and rewritten, so they are answered whole)
//! and whose declared length is not already too short. An attempt that fails before it opens is
//! retried (elsewhere) as before, unseen. Once it is open, bytes have gone out: a failure ends every
//! reader's body with that error (an aborted connection or HTTP/2 stream, never a short body that
//! looks complete), and the tap is spent. The fetch itself may still retry to fill the cache; those
//! who join it after that wait for the whole object.
//!
//! The state lives in a `tokio::sync::watch` channel: the tap (owned by the fetch task) is its only
//! sender, so a task that ends in any way without finishing (a panic, a cancellation) is seen by
//! every reader as a failure. When the fetch ends well, the chunks are replaced by the one
//! contiguous body that is cached, so slow readers share the cached bytes rather than a copy.
//! The chunk that completes a declared length is held back until then: a viewer never holds a
//! whole body the gateway has not yet accepted and stored.

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use tokio::sync::watch;

use crate::error::FetchError;

/// The first bytes of every playlist.
const PLAYLIST_MAGIC: &[u8] = b"#EXTM3U";

/// What readers of one fetch see of its body.
pub type Arrivals = watch::Receiver<Arriving>;

/// The body of one fetch so far (see the module docs).
#[derive(Debug, Default)]
pub struct Arriving {
    /// The origin's answer head, once its body may be streamed.
    opened: Option<OpenedHead>,
    /// The chunks so far, in order (empty once the fetch ended).
    chunks: Vec<Bytes>,
    received: u64,
    end: End,
}

/// The head of an origin answer whose body readers may stream.
#[derive(Debug, Clone)]
pub struct OpenedHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The length the origin declared, if it did (the fetch fails if the body differs).
    pub declared: Option<u64>,
}

#[derive(Debug, Default)]
enum End {
    #[default]
    Running,
    /// The whole body, as cached.
    Complete(Bytes),
    Failed(FetchError),
}

impl Arriving {
    /// The head, once the body may be streamed.
    pub fn opened(&self) -> Option<&OpenedHead> {
        self.opened.as_ref()
    }

    /// Whether the fetch has ended (well or not).
    pub fn ended(&self) -> bool {
        !matches!(self.end, End::Running)
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

/// The fetch task's end of the channel (see the module docs).
#[derive(Debug)]
pub struct Tap {
    tx: watch::Sender<Arriving>,
    /// The current attempt's answer may be streamed (a 200 not typed as a playlist).
    engaged: bool,
    head: Option<OpenedHead>,
    /// Bytes of the current attempt, kept here (not in readers' view) until the body opens.
    pending: Vec<Bytes>,
    pending_len: usize,
    open: bool,
    /// Opened once and failed: never opens again.
    spent: bool,
    /// A declared length below this is no object (a playlist's byte ranges need more).
    min_len: u64,
}

impl Tap {
    pub fn new() -> (Self, Arrivals) {
        let (tx, rx) = watch::channel(Arriving::default());
        (
            Tap {
                tx,
                engaged: false,
                head: None,
                pending: Vec::new(),
                pending_len: 0,
                open: false,
                spent: false,
                min_len: 0,
            },
            rx,
        )
    }

    /// A body whose declared length is below `min_len` is never opened (its fetch will fail).
    pub fn expect_at_least(&mut self, min_len: u64) {
        self.min_len = min_len;
    }

    /// An answer head arrived; returns whether its body goes through the tap (then [`Tap::push`]
    /// each chunk and take it whole with [`Tap::body`]).
    pub fn begin(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        declared: Option<u64>,
    ) -> bool {
        self.reset();
        let typed_playlist = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().contains("mpegurl"));
        let too_short = declared.is_some_and(|len| len < self.min_len.max(1));
        self.engaged = status == StatusCode::OK && !typed_playlist && !too_short && !self.spent;
        if self.engaged {
            self.head = Some(OpenedHead {
                status,
                headers: headers.clone(),
                declared,
            });
        }
        self.engaged
    }

    /// One chunk of an engaged body. The body opens to readers once its first bytes show it is
    /// not a playlist.
    pub fn push(&mut self, data: Bytes) {
        if !self.engaged || data.is_empty() {
            return;
        }
        if self.open {
            let len = data.len() as u64;
            self.tx.send_modify(|a| {
                a.chunks.push(data);
                a.received = a.received.saturating_add(len);
            });
            return;
        }
        self.pending_len = self.pending_len.saturating_add(data.len());
        self.pending.push(data);
        if self.pending_len < PLAYLIST_MAGIC.len() {
            return;
        }
        let mut first = Vec::with_capacity(PLAYLIST_MAGIC.len());
        for chunk in &self.pending {
            let want = PLAYLIST_MAGIC.len() - first.len();
            first.extend_from_slice(&chunk[..want.min(chunk.len())]);
            if first.len() == PLAYLIST_MAGIC.len() {
                break;
            }
        }
        if first == PLAYLIST_MAGIC {
            // A playlist after all: answered whole when the fetch ends. Keep buffering.
            self.head = None;
            return;
        }
        let Some(head) = self.head.take() else {
            return;
        };
        self.open = true;
        let chunks = std::mem::take(&mut self.pending);
        let len = self.pending_len as u64;
        self.pending_len = 0;
        self.tx.send_modify(|a| {
            a.opened = Some(head);
            a.chunks = chunks;
            a.received = len;
        });
    }

    /// Whether readers have been given bytes of this answer: a failure now is final.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Forgets an attempt that failed before it opened (another may be made).
    pub fn reset(&mut self) {
        if self.open {
            return;
        }
        self.engaged = false;
        self.head = None;
        self.pending.clear();
        self.pending_len = 0;
    }

    /// The engaged body so far, contiguous (a copy; the chunks stay readable until [`Tap::finish`]).
    pub fn body(&self) -> Bytes {
        if !self.open && self.pending.len() == 1 {
            return self.pending[0].clone();
        }
        let mut whole = BytesMut::new();
        if self.open {
            let view = self.tx.borrow();
            whole.reserve(usize::try_from(view.received).unwrap_or(0));
            for chunk in &view.chunks {
                whole.extend_from_slice(chunk);
            }
        } else {
            whole.reserve(self.pending_len);
            for chunk in &self.pending {
                whole.extend_from_slice(chunk);
            }
        }
        whole.freeze()
    }

    /// The open body's attempt failed: its readers end with `error` now, and the tap is spent
    /// (another attempt of the same fetch is buffered unseen).
    pub fn fail(&mut self, error: FetchError) {
        if !self.open {
            self.reset();
            return;
        }
        self.open = false;
        self.spent = true;
        self.engaged = false;
        self.tx.send_modify(|a| {
            a.chunks = Vec::new();
            a.end = End::Failed(error);
        });
    }

    /// Ends the fetch: readers get the rest of `body`, or the error (a spent tap's readers have
    /// had theirs).
    pub fn finish(self, result: Result<Bytes, FetchError>) {
        if self.spent {
            return;
        }
        self.tx.send_modify(|a| {
            a.chunks = Vec::new();
            a.end = match result {
                Ok(body) => End::Complete(body),
                Err(e) => End::Failed(e),
            };
        });
    }
}

/// A reader's place in one fetch's body.
#[derive(Debug)]
pub struct Reader {
    rx: Arrivals,
    /// Chunks and bytes read so far.
    chunk: usize,
    offset: u64,
    done: bool,
}

impl Reader {
    pub fn new(rx: Arrivals) -> Self {
        Reader {
            rx,
            chunk: 0,
            offset: 0,
            done: false,
        }
    }

    /// Bytes handed out so far.
    pub fn read(&self) -> u64 {
        self.offset
    }

    /// The next bytes of the body as they arrive; `None` at its end; an error (once, then `None`)
    /// if the fetch failed or its task went away without finishing.
    pub async fn next(&mut self) -> Option<Result<Bytes, FetchError>> {
        if self.done {
            return None;
        }
        let mut closed = false;
        loop {
            {
                let view = self.rx.borrow_and_update();
                match &view.end {
                    End::Complete(body) => {
                        let start = usize::try_from(self.offset).unwrap_or(usize::MAX);
                        if start >= body.len() {
                            self.done = true;
                            return None;
                        }
                        self.offset = body.len() as u64;
                        return Some(Ok(body.slice(start..)));
                    }
                    End::Failed(e) => {
                        self.done = true;
                        return Some(Err(e.clone()));
                    }
                    End::Running => {
                        // The chunk that completes a declared length waits for the fetch's
                        // end: a viewer that holds the whole body can count on the cache holding
                        // it too, and a body refused at the end is cut, never seen complete.
                        let declared = view.opened.as_ref().and_then(|h| h.declared);
                        let completes = |chunk: &&Bytes| {
                            let through = self.offset.saturating_add(chunk.len() as u64);
                            declared.is_some_and(|len| through >= len)
                        };
                        if let Some(chunk) = view.chunks.get(self.chunk).filter(|c| !completes(c)) {
                            self.chunk += 1;
                            self.offset = self.offset.saturating_add(chunk.len() as u64);
                            return Some(Ok(chunk.clone()));
                        }
                    }
                }
            }
            if closed {
                self.done = true;
                return Some(Err(FetchError::Internal(
                    "the fetch ended without finishing its body".into(),
                )));
            }
            if self.rx.changed().await.is_err() {
                // The tap is gone: look once more at what it left.
                closed = true;
            }
        }
    }
}

/// Waits until the fetch behind `rx` opens its body to readers (its head), or ends: then the caller
/// takes the fetch's result (the whole object, or its error).
pub async fn opened(rx: &mut Arrivals) -> Option<OpenedHead> {
    loop {
        {
            let view = rx.borrow_and_update();
            if !matches!(view.end, End::Running) {
                // Failed, or complete: the whole object (with its validator) is at hand.
                return None;
            }
            if let Some(head) = view.opened() {
                return Some(head.clone());
            }
            if view.ended() {
                return None;
            }
        }
        if rx.changed().await.is_err() {
            let view = rx.borrow();
            return match view.end {
                End::Running => view.opened().cloned(),
                _ => None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> HeaderMap {
        HeaderMap::new()
    }

    async fn drain(reader: &mut Reader) -> (Vec<u8>, Option<FetchError>) {
        let mut got = Vec::new();
        while let Some(next) = reader.next().await {
            match next {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn readers_get_chunks_as_they_come_then_the_cached_rest() {
        let (mut tap, rx) = Tap::new();
        assert!(tap.begin(StatusCode::OK, &head(), Some(12)));
        tap.push(Bytes::from_static(b"abc"));
        assert!(!tap.is_open(), "fewer bytes than the playlist magic");
        assert!(rx.borrow().opened().is_none());
        tap.push(Bytes::from_static(b"defgh"));
        assert!(tap.is_open());
        let mut early = Reader::new(rx.clone());
        assert_eq!(early.next().await, Some(Ok(Bytes::from_static(b"abc"))));
        assert_eq!(early.next().await, Some(Ok(Bytes::from_static(b"defgh"))));
        tap.push(Bytes::from_static(b"ijkl"));
        assert_eq!(tap.body(), Bytes::from_static(b"abcdefghijkl"));
        let mut late = Reader::new(rx.clone());
        assert_eq!(late.next().await, Some(Ok(Bytes::from_static(b"abc"))));
        tap.finish(Ok(Bytes::from_static(b"abcdefghijkl")));
        assert_eq!(drain(&mut early).await, (b"ijkl".to_vec(), None));
        assert_eq!(drain(&mut late).await, (b"defghijkl".to_vec(), None));
        assert_eq!(late.read(), 12);
    }

    #[tokio::test]
    async fn the_chunk_that_completes_a_declared_length_waits_for_the_end() {
        let (mut tap, rx) = Tap::new();
        assert!(tap.begin(StatusCode::OK, &head(), Some(16)));
        tap.push(Bytes::from_static(b"01234567"));
        let mut reader = Reader::new(rx.clone());
        assert_eq!(
            reader.next().await,
            Some(Ok(Bytes::from_static(b"01234567")))
        );
        tap.push(Bytes::from_static(b"89abcdef"));
        let held = tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(held.is_err(), "the last chunk is held until the fetch ends");
        tap.finish(Err(FetchError::Internal("refused".into())));
        assert_eq!(
            drain(&mut reader).await,
            (Vec::new(), Some(FetchError::Internal("refused".into()))),
            "a body refused at its end is never seen complete"
        );

        let (mut tap, rx) = Tap::new();
        assert!(tap.begin(StatusCode::OK, &head(), Some(16)));
        tap.push(Bytes::from_static(b"0123456789abcdef"));
        let mut reader = Reader::new(rx.clone());
        drop(tap);
        assert!(
            matches!(drain(&mut reader).await, (got, Some(_)) if got.is_empty()),
            "a lost task ends a held reader with an error"
        );
    }

    #[tokio::test]
    async fn a_failure_or_a_lost_task_ends_every_reader_with_an_error() {
        let (mut tap, rx) = Tap::new();
        tap.begin(StatusCode::OK, &head(), None);
        tap.push(Bytes::from_static(b"0123456789"));
        let mut reader = Reader::new(rx.clone());
        tap.finish(Err(FetchError::Truncated {
            expected: 20,
            got: 10,
        }));
        let (_, error) = drain(&mut reader).await;
        assert!(matches!(error, Some(FetchError::Truncated { .. })));
        assert_eq!(reader.next().await, None, "one error, then the end");

        let (mut tap, rx) = Tap::new();
        tap.begin(StatusCode::OK, &head(), None);
        tap.push(Bytes::from_static(b"0123456789"));
        let mut reader = Reader::new(rx);
        let task = tokio::spawn(async move { drain(&mut reader).await });
        tokio::task::yield_now().await;
        drop(tap);
        let (got, error) = task.await.expect("reader");
        assert_eq!(got, b"0123456789");
        assert!(matches!(error, Some(FetchError::Internal(_))), "{error:?}");
    }

    #[tokio::test]
    async fn playlists_and_errors_never_open() {
        let (mut tap, mut rx) = Tap::new();
        assert!(tap.begin(StatusCode::OK, &head(), None));
        tap.push(Bytes::from_static(b"#EXT"));
        tap.push(Bytes::from_static(b"M3U\n#EXT-X-VERSION:3\n"));
        assert!(!tap.is_open());
        assert_eq!(
            tap.body(),
            Bytes::from_static(b"#EXTM3U\n#EXT-X-VERSION:3\n")
        );
        tap.finish(Ok(Bytes::new()));
        assert!(opened(&mut rx).await.is_none());

        let (mut tap, mut rx) = Tap::new();
        tap.begin(StatusCode::OK, &head(), None);
        tap.push(Bytes::from_static(b"0123456789"));
        tap.finish(Ok(Bytes::from_static(b"0123456789")));
        assert!(opened(&mut rx).await.is_none(), "complete: answered whole");

        let (mut tap, _rx) = Tap::new();
        assert!(!tap.begin(StatusCode::NOT_FOUND, &head(), None));
        let mut typed = HeaderMap::new();
        typed.insert(
            CONTENT_TYPE,
            "application/vnd.apple.mpegURL".parse().expect("value"),
        );
        assert!(!tap.begin(StatusCode::OK, &typed, None));
        tap.push(Bytes::from_static(b"not a playlist at all"));
        assert!(!tap.is_open());
    }

    #[tokio::test]
    async fn a_failed_open_attempt_ends_its_readers_and_later_ones_wait_for_the_result() {
        let (mut tap, rx) = Tap::new();
        tap.begin(StatusCode::OK, &head(), Some(20));
        tap.push(Bytes::from_static(b"0123456789"));
        let mut reader = Reader::new(rx.clone());
        tap.fail(FetchError::TotalTimeout);
        let (got, error) = drain(&mut reader).await;
        assert_eq!((got.len(), error), (0, Some(FetchError::TotalTimeout)));
        let mut later = rx.clone();
        assert!(
            opened(&mut later).await.is_none(),
            "joins after the failure wait"
        );
        // The retry is buffered unseen, and its success does not reopen the answer.
        assert!(!tap.begin(StatusCode::OK, &head(), Some(20)));
        tap.finish(Ok(Bytes::from_static(b"01234567890123456789")));
        assert!(opened(&mut later).await.is_none());
    }

    #[tokio::test]
    async fn a_declared_length_below_the_needed_one_never_opens() {
        let (mut tap, _rx) = Tap::new();
        tap.expect_at_least(2000);
        assert!(!tap.begin(StatusCode::OK, &head(), Some(1500)));
        assert!(
            !tap.begin(StatusCode::OK, &head(), Some(0)),
            "an empty 200 is no object"
        );
        assert!(tap.begin(StatusCode::OK, &head(), Some(2000)));
        assert!(
            tap.begin(StatusCode::OK, &head(), None),
            "unknown: checked at the end"
        );
    }

    #[tokio::test]
    async fn an_attempt_that_fails_before_opening_leaves_nothing_behind() {
        let (mut tap, rx) = Tap::new();
        tap.begin(StatusCode::OK, &head(), Some(100));
        tap.push(Bytes::from_static(b"abc"));
        tap.reset();
        tap.begin(StatusCode::OK, &head(), Some(8));
        tap.push(Bytes::from_static(b"12345678"));
        assert_eq!(tap.body(), Bytes::from_static(b"12345678"));
        assert_eq!(rx.borrow().received(), 8);
        assert_eq!(rx.borrow().opened().and_then(|h| h.declared), Some(8));
    }
}
