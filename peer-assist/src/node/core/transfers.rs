//! Getting segments: requests to peers and what comes back, HTTP answers, and the check of every
//! byte against the gateway's digest before anything is used.
//!
//! A peer's Response header is only its claim: one that differs from the gateway's digest or size
//! is a lie told up front. A complete transfer is hashed ([`Output::Verify`]) and used only if it
//! matches. Peer bytes that HTTP took over (a Range request for the rest) are joined with the HTTP
//! rest and verified as a whole; if the whole does not match, the segment is fetched whole over
//! HTTP, and the peer is banned the second time (the first may be an honest relay that forwarded
//! a liar's bytes before it found out, see `uploads`).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::MAX_SEGMENT_BYTES;
use super::{Job, LinkId, Mode, NodeCore, Output, PeerTransfer, Ticket, HTTP_RETRY};
use crate::node::http::HttpError;
use crate::node::HttpCause;
use crate::node::Source;
use crate::protocol::frame::Frame;
use crate::protocol::signal::FailureCause;
use crate::scheduler::update_rate;

/// A peer that answered Absent for a segment it advertises is busy (it serves one upload at a
/// time): it is not asked for anything new for this long after its first busy answer.
pub const BUSY_BACKOFF: Duration = Duration::from_millis(250);

/// The backoff after `streak` busy answers in a row from one peer (reset when it sends a
/// Response): [`BUSY_BACKOFF`] doubled each time, at most 32 times as long (8 s). A requester
/// that knows no rates ranks its holders the same way every time; with a fixed backoff about one
/// round trip long it asked its first two or three busy holders over and over while the others
/// sat idle (in `node::sim`'s 575 kB swarm, 13,576 Absent answers and uplinks 20% used).
pub fn busy_backoff(streak: u32) -> Duration {
    BUSY_BACKOFF * (1u32 << streak.min(5))
}

impl NodeCore {
    pub(super) fn on_frame(&mut self, link: LinkId, frame: Frame, now: Instant) {
        if !self.links.contains_key(&link) {
            return;
        }
        match frame {
            Frame::Handshake { .. } => {}
            Frame::Have { segments } => {
                if let Some(l) = self.links.get_mut(&link) {
                    l.has = segments.into_iter().collect();
                }
                self.dirty = true;
            }
            Frame::Request {
                request_id,
                segment,
                offset,
            } => self.serve(link, request_id, &segment, offset, now),
            Frame::Cancel { request_id } => {
                self.uploads
                    .retain(|u| !(u.link == link && u.request_id == request_id));
            }
            Frame::Absent { request_id } => {
                if let Some(id) = self.transfer_of(link, request_id) {
                    // Absent for a segment it advertises: busy (it serves one upload at a time).
                    // Keep what it has; ask it again later.
                    let busy = self.links.get_mut(&link).filter(|l| l.has.contains(&id));
                    if let Some(l) = busy {
                        l.busy_until = Some(now + busy_backoff(l.busy_streak));
                        l.busy_streak = l.busy_streak.saturating_add(1);
                    }
                    self.fail_transfer(&id, FailureCause::Absent);
                }
            }
            Frame::Response {
                request_id,
                size,
                offset,
                digest,
            } => {
                let Some(id) = self.transfer_of(link, request_id) else {
                    return; // cancelled or unknown: frames in flight are ignored
                };
                let truth = self.digests.get(&id).copied();
                let started = self
                    .work
                    .get(&id)
                    .and_then(|w| w.transfer.as_ref())
                    .is_some_and(|t| t.size.is_some());
                let honest = truth.is_some_and(|(d, s)| d == digest && s == size)
                    && offset == 0
                    && size <= MAX_SEGMENT_BYTES
                    && !started;
                if !honest {
                    self.caught_lying(&id, link, now);
                    return;
                }
                let complete = size == 0;
                if let Some(l) = self.links.get_mut(&link) {
                    l.busy_streak = 0;
                }
                if let Some(t) = self.work.get_mut(&id).and_then(|w| w.transfer.as_mut()) {
                    t.size = Some(size);
                    t.data.reserve(usize::try_from(size).unwrap_or(0));
                }
                if self.config.forward_arriving {
                    self.have_dirty = true; // it may be forwarded from now on
                }
                if complete {
                    self.complete_peer_transfer(&id, now);
                }
            }
            Frame::Chunk {
                request_id,
                offset,
                data,
            } => {
                self.summary.p2p_received_bytes += data.len() as u64;
                let Some(id) = self.transfer_of(link, request_id) else {
                    self.summary.p2p_late_bytes += data.len() as u64;
                    return;
                };
                let Some(t) = self.work.get_mut(&id).and_then(|w| w.transfer.as_mut()) else {
                    return;
                };
                let fits = t.size.is_some_and(|size| {
                    t.verifying.is_none()
                        && offset == t.data.len() as u64
                        && t.data.len() as u64 + data.len() as u64 <= size
                });
                if !fits {
                    return self.caught_lying(&id, link, now);
                }
                t.data.extend_from_slice(&data);
                t.last_progress = now;
                if Some(t.data.len() as u64) == t.size {
                    self.complete_peer_transfer(&id, now);
                }
            }
        }
    }

    /// The segment whose running transfer is `request_id` on `link`.
    fn transfer_of(&self, link: LinkId, request_id: u32) -> Option<String> {
        let id = self.requests.get(&request_id)?;
        let t = self.work.get(id)?.transfer.as_ref()?;
        (t.link == link && t.request_id == request_id).then(|| id.clone())
    }

    pub(super) fn request_from_peer(&mut self, id: &str, peer: &str, now: Instant) {
        let Some(&link) = self.link_of.get(peer) else {
            return;
        };
        let request_id = self.next_request;
        self.next_request = self.next_request.checked_add(1).unwrap_or(1);
        if let Some(l) = self.links.get_mut(&link) {
            l.in_flight += 1;
        }
        self.send(
            link,
            Frame::Request {
                request_id,
                segment: id.to_owned(),
                offset: 0,
            },
        );
        self.requests.insert(request_id, id.to_owned());
        self.work.entry(id.to_owned()).or_default().transfer = Some(PeerTransfer {
            link,
            peer: peer.to_owned(),
            request_id,
            started: now,
            last_progress: now,
            size: None,
            data: BytesMut::new(),
            verifying: None,
        });
    }

    /// Ends the running transfer of `id` because of `cause`, telling the peer when it may still
    /// be sending.
    pub(super) fn fail_transfer(&mut self, id: &str, cause: FailureCause) {
        let Some(t) = self.work.get_mut(id).and_then(|w| w.transfer.take()) else {
            return;
        };
        self.requests.remove(&t.request_id);
        if t.verifying.is_none() && matches!(cause, FailureCause::Timeout | FailureCause::Mismatch)
        {
            self.send(
                t.link,
                Frame::Cancel {
                    request_id: t.request_id,
                },
            );
        }
        if let Some(ticket) = t.verifying.map(|(ticket, _)| ticket) {
            self.jobs.remove(&ticket);
        }
        self.summary.failures.add(cause);
        if self.config.forward_arriving {
            self.have_dirty = true; // it may no longer be arriving
        }
        let delta = self.peer_delta(&t.peer);
        match cause {
            FailureCause::Mismatch => delta.mismatch += 1,
            // A busy uploader says Absent on purpose (it serves its uploads one after another):
            // not a failure to report against it.
            FailureCause::Absent => {}
            _ => delta.failed += 1,
        }
        if let Some(l) = self.links.get_mut(&t.link) {
            // After Absent it still has the segment if it advertises it (it was busy); a Have
            // that no longer lists it says otherwise.
            l.in_flight = l.in_flight.saturating_sub(1);
        }
        self.dirty = true;
    }

    /// Every byte is in: hash it.
    fn complete_peer_transfer(&mut self, id: &str, now: Instant) {
        let ticket = self.ticket();
        let Some(t) = self.work.get_mut(id).and_then(|w| w.transfer.as_mut()) else {
            return;
        };
        self.requests.remove(&t.request_id);
        t.verifying = Some((ticket, now));
        let bytes = t.data.clone().freeze();
        self.jobs.insert(ticket, Job::Peer { id: id.to_owned() });
        self.outputs.push_back(Output::Verify { ticket, bytes });
    }

    fn ticket(&mut self) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        ticket
    }

    pub(super) fn on_http(
        &mut self,
        id: String,
        from: u64,
        result: Result<Bytes, HttpError>,
        now: Instant,
    ) {
        let Some(work) = self.work.get_mut(&id) else {
            return;
        };
        let Some(fetch) = work
            .http
            .as_ref()
            .filter(|h| h.from == from && !h.verifying)
        else {
            return; // cancelled, or an answer to an older fetch
        };
        let http_started = fetch.started;
        let cause = fetch.cause;
        let body = match result {
            Ok(body) => body,
            Err(e) => {
                work.http = None;
                tracing::debug!(%id, error = %e, "HTTP fetch failed");
                if work.transfer.is_some() {
                    self.dirty = true; // the peer may still deliver
                } else if self.config.mode == Mode::Driven {
                    self.fail_waiters(&id, e);
                } else {
                    work.retry_at = Some(now + HTTP_RETRY);
                }
                return;
            }
        };
        self.summary.http_bytes += body.len() as u64;
        self.summary
            .http_bytes_by_cause
            .add(cause, body.len() as u64);
        self.http_rate = update_rate(
            self.http_rate,
            body.len() as u64,
            now.saturating_duration_since(http_started),
        )
        .or(self.http_rate);
        // The peer bytes this HTTP range continues: a running transfer's, or a kept prefix.
        let prefix: Option<(String, Bytes)> = if from == 0 {
            None
        } else if let Some(t) = work
            .transfer
            .as_ref()
            .filter(|t| t.verifying.is_none() && t.data.len() as u64 >= from)
        {
            Some((
                t.peer.clone(),
                Bytes::copy_from_slice(&t.data[..from as usize]),
            ))
        } else {
            work.partial.clone().filter(|(_, b)| b.len() as u64 == from)
        };
        let Some(fetch) = work.http.as_mut() else {
            return;
        };
        if from > 0 && prefix.is_none() {
            fetch.from = 0;
            work.http = None;
            self.start_http(&id, 0, cause, now);
            return;
        }
        fetch.verifying = true;
        let whole = match &prefix {
            Some((_, head)) => {
                let mut joined = BytesMut::with_capacity(head.len() + body.len());
                joined.extend_from_slice(head);
                joined.extend_from_slice(&body);
                joined.freeze()
            }
            None => body,
        };
        let ticket = self.ticket();
        self.jobs.insert(
            ticket,
            Job::Http {
                id,
                from,
                prefix: prefix.map(|(peer, bytes)| (peer, bytes.len() as u64)),
                http_started,
                whole: whole.clone(),
            },
        );
        self.outputs.push_back(Output::Verify {
            ticket,
            bytes: whole,
        });
    }

    pub(super) fn on_verified(&mut self, ticket: Ticket, sha256: [u8; 32], now: Instant) {
        match self.jobs.remove(&ticket) {
            Some(Job::Peer { id }) => self.peer_verified(&id, ticket, sha256, now),
            Some(Job::Http {
                id,
                from,
                prefix,
                http_started,
                whole,
            }) => self.http_verified(&id, from, prefix, http_started, whole, sha256, now),
            None => {} // dropped meanwhile
        }
    }

    fn peer_verified(&mut self, id: &str, ticket: Ticket, sha256: [u8; 32], now: Instant) {
        let Some(work) = self.work.get_mut(id) else {
            return;
        };
        let current = work
            .transfer
            .as_ref()
            .is_some_and(|t| t.verifying.is_some_and(|(k, _)| k == ticket));
        if !current {
            return;
        }
        let Some(t) = work.transfer.take() else {
            return;
        };
        let ended = t.verifying.map_or(now, |(_, at)| at);
        let bytes = t.data.freeze();
        let truth = self.digests.get(id).copied();
        if truth.is_none_or(|(d, size)| d != sha256 || size != bytes.len() as u64) {
            // Put it back so the failure is counted against it.
            if let Some(w) = self.work.get_mut(id) {
                w.transfer = Some(PeerTransfer {
                    link: t.link,
                    peer: t.peer,
                    request_id: t.request_id,
                    started: t.started,
                    last_progress: ended,
                    size: t.size,
                    data: BytesMut::new(),
                    verifying: Some((ticket, ended)),
                });
            }
            return self.caught_lying(id, t.link, now);
        }
        let len = bytes.len() as u64;
        if let Some(l) = self.links.get_mut(&t.link) {
            l.in_flight = l.in_flight.saturating_sub(1);
            l.rate =
                update_rate(l.rate, len, ended.saturating_duration_since(t.started)).or(l.rate);
        }
        let delta = self.peer_delta(&t.peer);
        delta.ok += 1;
        delta.bytes += len;
        self.summary.p2p_bytes += len;
        self.delivered_by(&t.peer, id, sha256, len, now);
        self.accept(id, bytes, sha256, Source::P2p, t.started, ended, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn http_verified(
        &mut self,
        id: &str,
        from: u64,
        prefix: Option<(String, u64)>,
        http_started: Instant,
        whole: Bytes,
        sha256: [u8; 32],
        now: Instant,
    ) {
        let current = self
            .work
            .get(id)
            .and_then(|w| w.http.as_ref())
            .is_some_and(|h| h.from == from && h.verifying);
        if !current {
            return;
        }
        let truth = self.digests.get(id).copied();
        if let Some((peer, _)) = &prefix {
            if truth.is_none_or(|(d, size)| d != sha256 || size != whole.len() as u64) {
                // The peer's part was wrong: never use it, fetch the whole segment over HTTP.
                // The first time, the peer may be an honest relay that forwarded a liar's bytes
                // and had not found out yet (it withdraws them when it does): not banned nor
                // reported. A second time, it is a liar.
                tracing::warn!(%peer, segment = %id, "peer prefix failed the check");
                self.summary.mismatches += 1;
                self.summary.failures.add(FailureCause::Mismatch);
                let peer = peer.clone();
                if let Some(w) = self.work.get_mut(id) {
                    w.partial = None;
                    w.http = None;
                }
                if !self.prefix_strikes.insert(peer.clone()) {
                    self.peer_delta(&peer).mismatch += 1;
                    self.ban(&peer, now);
                }
                self.start_http(id, 0, HttpCause::Other, now);
                return;
            }
        } else if truth.is_some_and(|(d, _)| d != sha256) {
            tracing::warn!(segment = %id, "the gateway's bytes differ from its own digest");
        }
        if let Some(w) = self.work.get_mut(id) {
            w.http = None;
        }
        let peer_part = prefix.as_ref().map_or(0, |(_, len)| *len);
        self.summary.p2p_bytes += peer_part;
        if let Some((peer, len)) = &prefix {
            self.delivered_by(peer, id, sha256, *len, now);
        }
        // Bandwidth estimation sees the HTTP fetch (see `Delivery::started`).
        self.accept(id, whole, sha256, Source::Http, http_started, now, now);
    }
}
