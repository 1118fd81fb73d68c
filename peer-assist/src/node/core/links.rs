//! The swarm side of the core: which peers to link to, link lifetimes, duplicates, retries, bans.
//!
//! Of two peers the one with the greater id connects at once; the smaller one connects too if no
//! link came after [`LINK_FALLBACK`] (its list may not hold us). Two links to one peer (both sides
//! connected at once) resolve the same way on both sides: the link the greater id initiated stays.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{LinkId, NodeCore, Output};
use crate::protocol::frame::{self, Frame, MAX_FRAME_LEN, MAX_HAVE_IDS};
use crate::protocol::signal::{FailureCause, PeerInfo, Transport};

/// A peer listed this long without a link is connected to by us, whatever the ids.
pub const LINK_FALLBACK: Duration = Duration::from_secs(5);
/// After a link to a peer ends (or an attempt fails), wait this long before trying it again; the
/// wait doubles up to [`LINK_RETRY_MAX`].
pub const LINK_RETRY_FIRST: Duration = Duration::from_secs(5);
pub const LINK_RETRY_MAX: Duration = Duration::from_secs(60);
/// An attempt the driver never answered is forgotten after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the peer list is looked at again for links to open (fallbacks, retries).
const CONNECT_CHECK: Duration = Duration::from_secs(1);

/// A fingerprint as 64 lowercase hex digits (`:` separators and case dropped).
fn normal_fingerprint(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A peer link as the core sees it.
#[derive(Debug)]
pub(super) struct Link {
    pub peer: String,
    pub initiated: bool,
    /// Largest frame the link carries, header included.
    pub max_frame: usize,
    /// What the peer advertised in its last Have.
    pub has: HashSet<String>,
    /// Measured transfer rate from this peer (EWMA), bytes/s, starting from the capacity the
    /// tracker listed for it when the link came up (if any).
    pub rate: Option<f64>,
    /// Our requests running on it.
    pub in_flight: usize,
    /// Bytes of frames queued on it that the driver has not reported written yet.
    pub unacked: u64,
    /// It answered Absent for a segment it advertises (busy with another upload): not asked for
    /// anything new before this.
    pub busy_until: Option<Instant>,
    /// Busy answers in a row (reset when it starts sending): each doubles the backoff.
    pub busy_streak: u32,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    pub at: Instant,
    pub delay: Duration,
}

impl NodeCore {
    pub(super) fn on_peers(&mut self, peers: Vec<PeerInfo>, now: Instant) {
        let listed: Vec<PeerInfo> = peers.into_iter().filter(|p| p.peer_id != self.me).collect();
        if self.elders.is_none() {
            self.elders = Some(listed.iter().map(|p| p.peer_id.clone()).collect());
        }
        for p in &listed {
            self.listed_since.entry(p.peer_id.clone()).or_insert(now);
            if let Some(key) = &p.key {
                self.peer_keys.insert(p.peer_id.clone(), key.clone());
            }
        }
        let ids: HashSet<&str> = listed.iter().map(|p| p.peer_id.as_str()).collect();
        self.listed_since.retain(|id, _| ids.contains(id.as_str()));
        self.listed = listed;
        self.connect_peers(now);
        self.dirty = true;
    }

    /// Links a transport both sides have: QUIC first.
    fn common_transport(&self, peer: &PeerInfo) -> Option<Transport> {
        let ours = &self.config.transports;
        if ours.contains(&Transport::Quic)
            && peer.transports.contains(&Transport::Quic)
            && peer.quic.is_some()
        {
            return Some(Transport::Quic);
        }
        (ours.contains(&Transport::Webrtc) && peer.transports.contains(&Transport::Webrtc))
            .then_some(Transport::Webrtc)
    }

    fn link_cap(&self) -> usize {
        self.max_peers
            .map_or(self.config.max_links, |m| m.min(self.config.max_links))
    }

    /// Opens links to listed peers, up to the cap, and plans the next look.
    pub(super) fn connect_peers(&mut self, now: Instant) {
        self.connecting
            .retain(|_, since| now.saturating_duration_since(*since) < CONNECT_TIMEOUT);
        let mut waiting_for_something = false;
        let candidates: Vec<PeerInfo> = self.listed.clone();
        for peer in candidates {
            if self.links.len() + self.connecting.len() >= self.link_cap() {
                break;
            }
            let id = &peer.peer_id;
            if self.link_of.contains_key(id)
                || self.connecting.contains_key(id)
                || self.banned.contains(id)
            {
                continue;
            }
            let Some(transport) = self.common_transport(&peer) else {
                continue;
            };
            if self.retry.get(id).is_some_and(|r| r.at > now) {
                waiting_for_something = true;
                continue;
            }
            let since = self.listed_since.get(id).copied().unwrap_or(now);
            let ours = self.me.as_str() > id.as_str()
                || now.saturating_duration_since(since) >= LINK_FALLBACK;
            if !ours {
                waiting_for_something = true;
                continue;
            }
            self.connecting.insert(id.clone(), now);
            self.outputs.push_back(Output::Connect {
                peer: id.clone(),
                transport,
                quic: (transport == Transport::Quic)
                    .then(|| peer.quic.clone())
                    .flatten(),
            });
        }
        let pending = waiting_for_something || !self.connecting.is_empty();
        self.next_connect_check = pending.then(|| now + CONNECT_CHECK);
    }

    pub(super) fn on_connect_failed(&mut self, peer: &str, now: Instant) {
        if self.connecting.remove(peer).is_some() {
            self.back_off(peer, now);
        }
    }

    /// The next try of `peer` waits (doubling).
    fn back_off(&mut self, peer: &str, now: Instant) {
        let delay = self.retry.get(peer).map_or(LINK_RETRY_FIRST, |r| {
            r.delay.saturating_mul(2).min(LINK_RETRY_MAX)
        });
        self.retry.insert(
            peer.to_owned(),
            Retry {
                at: now + delay,
                delay,
            },
        );
        if self.next_connect_check.is_none() {
            self.next_connect_check = Some(now + CONNECT_CHECK);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_link_up(
        &mut self,
        link: LinkId,
        peer: String,
        initiated: bool,
        max_frame: usize,
        fingerprint: Option<String>,
        now: Instant,
    ) {
        self.connecting.remove(&peer);
        if self.banned.contains(&peer) {
            self.outputs.push_back(Output::Close {
                link,
                reason: "banned",
            });
            return;
        }
        // The peer id in the Handshake is only a claim: for a peer the tracker listed to this
        // node, the key behind the link must be the one it published for that id. A dialer the
        // tracker has not listed here (this node is on its list, it is not on this node's: lists
        // are capped and sent at different times) cannot be checked, and is taken as the stranger
        // it is: the tracker ignores what this node reports of a peer it was not introduced to.
        let listed = self.listed.iter().find(|p| p.peer_id == peer);
        if let (Some(proven), Some(listed)) = (fingerprint, listed) {
            let published = listed
                .quic
                .as_ref()
                .map(|q| normal_fingerprint(&q.fingerprint));
            if published.as_deref() != Some(normal_fingerprint(&proven).as_str()) {
                tracing::warn!(%peer, "a link whose certificate is not the one published for its peer id");
                self.summary.identity_mismatches += 1;
                self.outputs.push_back(Output::Close {
                    link,
                    reason: "identity",
                });
                return;
            }
        }
        if let Some(&existing) = self.link_of.get(&peer) {
            // Two links to one peer: the one the greater id initiated stays, on both sides.
            let i_am_greater = self.me > peer;
            let new_wins = initiated == i_am_greater;
            let old_wins = self
                .links
                .get(&existing)
                .is_some_and(|l| l.initiated == i_am_greater);
            if !new_wins || old_wins {
                self.outputs.push_back(Output::Close {
                    link,
                    reason: "duplicate link",
                });
                return;
            }
            self.drop_link(existing, FailureCause::Disconnect, "duplicate link", now);
        }
        self.retry.remove(&peer);
        let prior = self.listed_capacity(&peer);
        self.link_of.insert(peer.clone(), link);
        self.links.insert(
            link,
            Link {
                peer,
                initiated,
                max_frame,
                has: HashSet::new(),
                rate: prior,
                in_flight: 0,
                busy_until: None,
                busy_streak: 0,
                unacked: 0,
            },
        );
        let have = self.have_frame(link);
        self.send(link, have);
        self.dirty = true;
    }

    pub(super) fn on_link_down(&mut self, link: LinkId, now: Instant) {
        if self.links.contains_key(&link) {
            self.forget_link(link, FailureCause::Disconnect, now);
        }
    }

    /// Closes a link we no longer want and forgets it.
    pub(super) fn drop_link(
        &mut self,
        link: LinkId,
        cause: FailureCause,
        reason: &'static str,
        now: Instant,
    ) {
        if self.links.contains_key(&link) {
            self.outputs.push_back(Output::Close { link, reason });
            self.forget_link(link, cause, now);
        }
    }

    /// A link is gone: its transfers fail with `cause`, its uploads stop, the peer may be retried.
    fn forget_link(&mut self, link: LinkId, cause: FailureCause, now: Instant) {
        let Some(gone) = self.links.remove(&link) else {
            return;
        };
        if self.link_of.get(&gone.peer) == Some(&link) {
            self.link_of.remove(&gone.peer);
        }
        let failed: Vec<String> = self
            .work
            .iter()
            .filter(|(_, w)| {
                w.transfer
                    .as_ref()
                    .is_some_and(|t| t.link == link && t.verifying.is_none())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in failed {
            self.fail_transfer(&id, cause);
        }
        self.uploads.retain(|u| u.link != link);
        if !self.banned.contains(&gone.peer) {
            self.back_off(&gone.peer, now);
        }
        self.dirty = true;
    }

    /// Queues a frame on a link (counted against the link's upload window until written).
    pub(super) fn send(&mut self, link: LinkId, frame: Frame) {
        if let Some(l) = self.links.get_mut(&link) {
            l.unacked = l.unacked.saturating_add(frame.encoded_len() as u64);
            self.outputs.push_back(Output::Send { link, frame });
        }
    }

    /// When the pending Have frames may go out.
    pub(super) fn next_have(&self) -> Option<Instant> {
        if !self.have_dirty || self.links.is_empty() {
            return None;
        }
        Some(
            self.last_have
                .map_or(self.started, |t| t + super::HAVE_INTERVAL),
        )
    }

    /// Sends Have to every link if the store changed and the last Have is old enough.
    pub(super) fn flush_have(&mut self, now: Instant) {
        if self.next_have().is_none_or(|at| now < at) {
            return;
        }
        self.have_dirty = false;
        self.last_have = Some(now);
        let links: Vec<LinkId> = self.links.keys().copied().collect();
        for link in links {
            let have = self.have_frame(link);
            self.send(link, have);
        }
    }

    /// Have: the newest stored segments whose bytes match the gateway's digest, at most
    /// [`MAX_HAVE_IDS`] and within the link's frame size; empty when this node does not upload.
    pub(super) fn have_frame(&self, link: LinkId) -> Frame {
        let mut segments = Vec::new();
        if self.config.upload {
            let max_frame = self.links.get(&link).map_or(0, |l| l.max_frame);
            let budget = MAX_FRAME_LEN.min(max_frame.saturating_sub(frame::HEADER_LEN));
            let mut size = 2;
            // Segments still arriving first (the newest live ones), then the store, newest first.
            let arriving = self
                .work
                .keys()
                .filter(|id| !self.store.contains(id) && self.arriving(id).is_some())
                .map(String::as_str);
            let stored = self
                .store
                .newest()
                .filter(|(id, stored)| self.digests.get(id).is_some_and(|d| d.0 == stored.digest))
                .map(|(id, _)| id);
            for id in arriving.chain(stored) {
                if segments.len() >= MAX_HAVE_IDS {
                    break;
                }
                let len = 2 + id.len();
                if size + len > budget {
                    break;
                }
                size += len;
                segments.push(id.to_owned());
            }
        }
        Frame::Have { segments }
    }

    /// A peer sent data that does not match the gateway's digest: never used, the peer is banned
    /// and disconnected and will be reported (`mismatch`).
    pub(super) fn caught_lying(&mut self, id: &str, link: LinkId, now: Instant) {
        let Some(peer) = self.links.get(&link).map(|l| l.peer.clone()) else {
            self.fail_transfer(id, FailureCause::Mismatch);
            return;
        };
        tracing::warn!(%peer, segment = %id, "digest mismatch: dropping the peer");
        self.summary.mismatches += 1;
        self.fail_transfer(id, FailureCause::Mismatch);
        self.ban(&peer, now);
    }

    /// Bans `peer`: its link closes, it is never linked or asked again.
    pub(super) fn ban(&mut self, peer: &str, now: Instant) {
        if self.banned.insert(peer.to_owned()) {
            self.summary.peers_dropped_for_lying.push(peer.to_owned());
        }
        if let Some(&link) = self.link_of.get(peer) {
            self.drop_link(link, FailureCause::Disconnect, "banned", now);
        }
    }
}
