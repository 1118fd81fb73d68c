//! Serving other peers: requests answered from the store within the upload policy (opt-out,
//! privacy floor), chunks paced by one token bucket for the whole node (the upload cap, and
//! [`UPLINK_PACE`](super::UPLINK_PACE) of the uplink once it is known, so the uplink's queue
//! stays empty for what else the node sends) and by each link's window of unwritten bytes (a slow
//! link does not pile frames up in memory).
//!
//! Uploads are served **one after another**, not all at once: an uplink shared by every requester
//! finishes every transfer late (each requester then gives up at its deadline, and the bytes sent
//! are wasted), where one served at a time finishes early and its requester can serve the next.
//! The next upload starts once the previous one has drained from its link
//! ([`DRAIN_SLACK`]); at most [`MAX_WAITING_UPLOADS`] wait behind it, and a request beyond them is
//! answered Absent at once, so its requester asks another peer (or HTTP) while there is time.
//!
//! A segment still arriving from a peer is served as it arrives ([`NodeCore::arriving`]):
//! its last byte only once verified, and withdrawn (Absent after the Response) if the check
//! fails. Such an upload, when it has sent all that arrived, does not count as the one being sent.

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

    /// From `now` on, a new rate and burst (what filled until then is kept, up to the new
    /// burst). An unusable rate means no limit, as in [`TokenBucket::new`].
    pub fn set_rate(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(now);
        self.rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            f64::MAX
        };
        self.burst = burst;
        self.tokens = self.tokens.min(burst);
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
    pub id: String,
    /// The segment's size.
    pub size: usize,
    /// Its bytes once stored (verified); empty while it is still arriving here (forwarded as it
    /// arrives, see [`NodeCore::arriving`]).
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
            .map(|s| (s.bytes.clone(), s.bytes.len() as u64, s.digest))
            .or_else(|| {
                let (digest, size) = self.arriving(id)?;
                Some((Bytes::new(), size, digest))
            })
            .filter(|(_, size, _)| offset <= *size);
        let duplicate = self
            .uploads
            .iter()
            .any(|u| u.link == link && u.request_id == request_id);
        // Busy: one upload being sent and as many waiting as may.
        let busy = self.sending() > MAX_WAITING_UPLOADS;
        let (Some((bytes, size, digest)), true, false, false) = (stored, allowed, duplicate, busy)
        else {
            self.send(link, Frame::Absent { request_id });
            return;
        };
        self.send(
            link,
            Frame::Response {
                request_id,
                size,
                offset,
                digest,
            },
        );
        if offset < size {
            self.uploads.push_back(Upload {
                link,
                request_id,
                id: id.to_owned(),
                size: usize::try_from(size).unwrap_or(usize::MAX),
                bytes,
                next: offset as usize,
                started: false,
            });
        }
        self.pump_uploads(now);
    }

    /// Sends chunks of the oldest upload that has bytes to send, while the bucket and its link's
    /// window allow; a new upload starts only once the links of earlier ones have drained (see
    /// the module docs). An upload forwarding a segment that is still arriving and has sent all
    /// that arrived does not hold the uplink: the next one is sent meanwhile.
    pub(super) fn pump_uploads(&mut self, now: Instant) {
        self.next_upload = None;
        loop {
            let mut head = None;
            let mut i = 0;
            while i < self.uploads.len() {
                match self.available(i) {
                    None => {
                        // What it was forwarding failed here: the requester must drop what it got.
                        if let Some(u) = self.uploads.remove(i) {
                            self.send(
                                u.link,
                                Frame::Absent {
                                    request_id: u.request_id,
                                },
                            );
                        }
                    }
                    Some(available) if available > self.uploads[i].next => {
                        head = Some((i, available));
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            let Some((i, available)) = head else {
                return;
            };
            let (link, request_id, start, end, len, started) = {
                let u = &self.uploads[i];
                let end = (u.next + RECOMMENDED_CHUNK_LEN).min(available);
                (u.link, u.request_id, u.next, end, u.size, u.started)
            };
            if !started {
                let draining = self
                    .links
                    .iter()
                    .any(|(id, l)| *id != link && l.unacked > DRAIN_SLACK);
                if draining {
                    return;
                }
            }
            if self
                .links
                .get(&link)
                .is_none_or(|l| l.unacked >= LINK_WINDOW)
            {
                return;
            }
            if let Err(at) = self.bucket.try_take((end - start) as u64, now) {
                self.next_upload = Some(at);
                return;
            }
            let data = {
                let chunk = self.chunk_of(i, start, end);
                let test = &self.config.test;
                if test.lie && self.uploads_sent >= test.honest_uploads {
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
            if end >= len {
                self.uploads.remove(i);
                self.uploads_sent += 1;
            } else {
                self.uploads[i].next = end;
            }
        }
    }

    /// Whether an upload is sending (not only waiting for a segment to arrive): a request is
    /// answered Absent while one is (uploads one after another).
    pub(super) fn sending(&self) -> usize {
        self.uploads
            .iter()
            .filter(|u| {
                u.bytes.len() == u.size || self.store.contains(&u.id) || self.arrived(u) > u.next
            })
            .count()
    }
}

impl NodeCore {
    /// A segment this node may forward while it arrives: a peer transfer whose Response matched
    /// the gateway's digest and size, or the kept prefix of one that HTTP took over. Its digest
    /// and size (the gateway's).
    ///
    /// A requester that takes over a forwarded transfer with HTTP before this node found a lie
    /// and withdrew it sees a whole that fails the check and cannot tell this node from the liar:
    /// so a requester bans a peer only at the second such failure (`http_verified`), and this
    /// node drops the liar at its first lie.
    pub(super) fn arriving(&self, id: &str) -> Option<([u8; 32], u64)> {
        if !self.config.forward_arriving {
            return None;
        }
        self.arrived_bytes(id)?;
        self.digests.get(id).copied()
    }

    /// What has arrived of a segment this node receives: the bytes of a peer transfer past its
    /// Response, or the kept prefix of one that HTTP is taking over.
    fn arrived_bytes(&self, id: &str) -> Option<&[u8]> {
        let work = self.work.get(id)?;
        match (&work.transfer, &work.partial) {
            (Some(t), _) => t.size.is_some().then_some(&t.data[..]),
            (None, Some((_, prefix))) => work.http.is_some().then_some(&prefix[..]),
            (None, None) => None,
        }
    }

    /// How many bytes of upload `i` can be sent: all of a stored segment; of one still arriving,
    /// what has arrived but its last byte (sent only once the whole is verified and stored, so a
    /// requester never completes a segment from what this node could not check). `None`: the
    /// segment is neither stored nor arriving any more.
    fn available(&mut self, i: usize) -> Option<usize> {
        let u = &self.uploads[i];
        if u.bytes.len() == u.size {
            return Some(u.size);
        }
        if let Some(stored) = self.store.get(&u.id) {
            let bytes = stored.bytes.clone();
            let u = &mut self.uploads[i];
            if bytes.len() != u.size {
                return None;
            }
            u.bytes = bytes;
            return Some(u.size);
        }
        self.arriving(&u.id)?;
        Some(self.arrived(u))
    }

    /// How much of a forwarded segment has arrived, its last byte held back (0 when not
    /// arriving).
    fn arrived(&self, u: &Upload) -> usize {
        self.arrived_bytes(&u.id)
            .map_or(0, <[u8]>::len)
            .min(u.size.saturating_sub(1))
    }

    /// Bytes `start..end` of upload `i` (within [`NodeCore::available`]).
    fn chunk_of(&self, i: usize, start: usize, end: usize) -> Bytes {
        let u = &self.uploads[i];
        if u.bytes.len() == u.size {
            return u.bytes.slice(start..end);
        }
        self.arrived_bytes(&u.id)
            .and_then(|arrived| arrived.get(start..end))
            .map(Bytes::copy_from_slice)
            .unwrap_or_default()
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
        // A second at the old rate fills it up to the new, smaller burst.
        let t1 = t0 + Duration::from_millis(1500);
        b.set_rate(4000.0, 100.0, t1);
        assert_eq!(b.try_take(100, t1), Ok(()));
        assert_eq!(b.try_take(1, t1), Ok(()), "into debt");
        let wait = b.try_take(1, t1).expect_err("in debt").duration_since(t1);
        assert!(
            wait > Duration::from_micros(240) && wait < Duration::from_micros(260),
            "{wait:?}: one byte at 4000 B/s"
        );
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
