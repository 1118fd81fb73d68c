//! Serving other peers: requests answered from the store within the upload policy (opt-out,
//! privacy floor), chunks paced by one token bucket for the whole node (the upload cap) and by
//! each link's window of unwritten bytes (a slow link does not pile frames up in memory).
//!
//! Uploads are served **one after another**, not all at once: an uplink shared by every requester
//! finishes every transfer late (each requester then gives up at its deadline, and the bytes sent
//! are wasted), where one served at a time finishes early and its requester can serve the next.
//! The next upload starts once the previous one has drained from its link
//! ([`DRAIN_SLACK`]); at most [`MAX_WAITING_UPLOADS`] wait behind it, and a request beyond them is
//! answered Absent at once, so its requester asks another peer (or HTTP) while there is time.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{LinkId, NodeCore};
use crate::protocol::frame::{Frame, RECOMMENDED_CHUNK_LEN};

/// Bytes of frames a link may have queued and not yet written before its uploads wait.
pub const LINK_WINDOW: u64 = 64 * 1024;
/// Uploads accepted and waiting for the one being sent; a request beyond them is answered Absent.
pub const MAX_WAITING_UPLOADS: usize = 0;
/// The next upload starts when no other link holds more than this many unwritten bytes (the
/// previous upload has all but drained into its transport).
pub const DRAIN_SLACK: u64 = 32 * 1024;

/// A token bucket in bytes (pure, explicit time).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket filling at `rate` bytes/s up to `burst`, full at `now`. An unusable rate (≤ 0,
    /// NaN, infinite) means no limit.
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

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes `bytes` if the bucket is not in debt at `now` (the take itself may go into debt, so
    /// large chunks are not starved); otherwise returns when it will be out of debt.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        if self.tokens < 0.0 {
            let wait = Duration::try_from_secs_f64(-self.tokens / self.rate)
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            return Err(now + wait.max(Duration::from_micros(1)));
        }
        self.tokens -= bytes as f64;
        Ok(())
    }
}

/// One segment being sent to a peer.
#[derive(Debug)]
pub(super) struct Upload {
    pub link: LinkId,
    pub request_id: u32,
    pub bytes: Bytes,
    pub next: usize,
    /// Its first chunk is sent.
    pub started: bool,
}

impl NodeCore {
    /// Answers a peer's request from the store, within the upload policy.
    pub(super) fn serve(
        &mut self,
        link: LinkId,
        request_id: u32,
        id: &str,
        offset: u64,
        now: Instant,
    ) {
        let allowed = self.config.upload && self.listed.len() + 1 >= self.config.privacy_floor;
        let stored = self
            .store
            .get(id)
            .filter(|s| offset <= s.bytes.len() as u64)
            .map(|s| (s.bytes.clone(), s.digest));
        let duplicate = self
            .uploads
            .iter()
            .any(|u| u.link == link && u.request_id == request_id);
        // Busy: one upload being sent and as many waiting as may.
        let busy = self.uploads.len() > MAX_WAITING_UPLOADS;
        let (Some((bytes, digest)), true, false, false) = (stored, allowed, duplicate, busy) else {
            self.send(link, Frame::Absent { request_id });
            return;
        };
        self.send(
            link,
            Frame::Response {
                request_id,
                size: bytes.len() as u64,
                offset,
                digest,
            },
        );
        if offset < bytes.len() as u64 {
            self.uploads.push_back(Upload {
                link,
                request_id,
                bytes,
                next: offset as usize,
                started: false,
            });
        }
        self.pump_uploads(now);
    }

    /// Sends chunks of the oldest upload while the bucket and its link's window allow; a new
    /// upload starts only once the links of earlier ones have drained (see the module docs).
    pub(super) fn pump_uploads(&mut self, now: Instant) {
        self.next_upload = None;
        loop {
            let mut sent = false;
            let mut i = 0;
            // Only the head of the queue is sent.
            while i < self.uploads.len().min(1) {
                if !self.uploads[i].started {
                    let head = self.uploads[i].link;
                    let draining = self
                        .links
                        .iter()
                        .any(|(id, l)| *id != head && l.unacked > DRAIN_SLACK);
                    if draining {
                        return;
                    }
                }
                let (link, request_id, start, end, len) = {
                    let u = &self.uploads[i];
                    let end = (u.next + RECOMMENDED_CHUNK_LEN).min(u.bytes.len());
                    (u.link, u.request_id, u.next, end, u.bytes.len())
                };
                let open = self
                    .links
                    .get(&link)
                    .is_some_and(|l| l.unacked < LINK_WINDOW);
                if !open {
                    i += 1;
                    continue;
                }
                if let Err(at) = self.bucket.try_take((end - start) as u64, now) {
                    self.next_upload = Some(at);
                    return;
                }
                let data = {
                    let chunk = self.uploads[i].bytes.slice(start..end);
                    if self.config.test.lie {
                        corrupt(&chunk)
                    } else {
                        chunk
                    }
                };
                self.send(
                    link,
                    Frame::Chunk {
                        request_id,
                        offset: start as u64,
                        data,
                    },
                );
                self.summary.uploaded_bytes += (end - start) as u64;
                self.uploads[i].started = true;
                sent = true;
                if end >= len {
                    self.uploads.remove(i);
                } else {
                    self.uploads[i].next = end;
                    i += 1;
                }
            }
            if !sent {
                return;
            }
        }
    }
}

/// The test switch `lie`: flips bits in every chunk.
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
        assert_eq!(b.try_take(1000, t0), Ok(()), "the burst is free");
        assert_eq!(b.try_take(500, t0), Ok(()), "a take may go into debt");
        assert_eq!(b.try_take(1, t0), Err(t0 + Duration::from_millis(500)));
        assert_eq!(b.try_take(1, t0 + Duration::from_millis(500)), Ok(()));
        let mut unlimited = TokenBucket::new(0.0, 0.0, t0);
        assert_eq!(unlimited.try_take(1 << 30, t0), Ok(()));
        assert_eq!(
            unlimited.try_take(1 << 30, t0 + Duration::from_millis(1)),
            Ok(())
        );
    }

    #[test]
    fn corruption_changes_every_chunk() {
        let data = vec![7u8; 300];
        assert_ne!(&corrupt(&data)[..], &data[..]);
        assert_eq!(corrupt(&data).len(), 300);
    }
}
