//! Uploading to other peers: a token bucket shared by every upload of a node (the upload cap), and the
//! task that sends one segment as a response header and chunks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::frame::Frame;
use crate::transport::LinkSender;

/// A token bucket in bytes (pure, explicit time). Taking more than is there is allowed: the caller waits
/// for the debt to be paid back, so large chunks are not starved.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            f64::MAX
        };
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `bytes`; returns how long to wait before sending them.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((-self.tokens / self.rate).min(3600.0))
        }
    }
}

/// One segment to send.
pub struct Upload {
    pub sender: LinkSender,
    pub request_id: u32,
    pub bytes: Bytes,
    pub digest: [u8; 32],
    pub offset: u64,
    pub chunk: usize,
    pub bucket: Arc<Mutex<TokenBucket>>,
    /// Test switch: corrupt every chunk.
    pub lie: bool,
    pub stats: Arc<LiveStats>,
}

/// Figures of a running node that can be read while it runs.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub uploaded_bytes: AtomicU64,
    pub active_uploads: AtomicUsize,
}

/// Counts an upload as active for as long as it lives (aborted included).
struct Active(Arc<LiveStats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active_uploads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sends the response header and the chunks, paced by the bucket.
pub async fn send_segment(upload: Upload) {
    let Upload {
        sender,
        request_id,
        bytes,
        digest,
        offset,
        chunk,
        bucket,
        lie,
        stats,
    } = upload;
    stats.active_uploads.fetch_add(1, Ordering::Relaxed);
    let _active = Active(Arc::clone(&stats));
    let size = bytes.len() as u64;
    let header = Frame::Response {
        request_id,
        size,
        offset,
        digest,
    };
    if sender.send(header.encode()).await.is_err() {
        return;
    }
    let mut at = offset as usize;
    while at < bytes.len() {
        let end = (at + chunk).min(bytes.len());
        let wait = bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take((end - at) as u64, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let data = if lie {
            corrupt(&bytes[at..end])
        } else {
            bytes.slice(at..end)
        };
        let frame = Frame::Chunk {
            request_id,
            offset: at as u64,
            data,
        };
        if sender.send(frame.encode()).await.is_err() {
            return;
        }
        stats
            .uploaded_bytes
            .fetch_add((end - at) as u64, Ordering::Relaxed);
        at = end;
    }
}

fn corrupt(data: &[u8]) -> Bytes {
    let mut bad = data.to_vec();
    for byte in bad.iter_mut().step_by(97) {
        *byte ^= 0x5a;
    }
    Bytes::from(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_paces_to_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 1000.0, t0);
        assert_eq!(b.take(1000, t0), Duration::ZERO, "the burst is free");
        assert_eq!(b.take(500, t0), Duration::from_millis(500));
        assert_eq!(
            b.take(0, t0 + Duration::from_millis(500)),
            Duration::ZERO,
            "debt paid back"
        );
        let mut unlimited = TokenBucket::new(0.0, 0.0, t0);
        assert!(unlimited.take(1 << 30, t0) < Duration::from_millis(1));
    }

    #[test]
    fn corruption_changes_every_chunk() {
        let data = vec![7u8; 300];
        assert_ne!(&corrupt(&data)[..], &data[..]);
        assert_eq!(corrupt(&data).len(), 300);
    }
}
