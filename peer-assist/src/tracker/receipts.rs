//! Which receipts the tracker believes (pure; docs/LEDGER.md §3). A receipt is a receiver's word
//! that an uploader sent it verified bytes. The tracker checks it against what it knows itself:
//! the signature, that the receiver is the peer reporting (same key as its `join`), that the
//! receiver was in that swarm lately, that the tracker listed the uploader to it, that the digest
//! is one it published for that segment and the bytes within the segment's size, that the time
//! is recent, and that the receiver reported at least that many bytes from peers. The ledger then
//! refuses replayed nonces and a receiver crediting more than a segment's size in all (those need
//! storage, shared by every gateway of a fleet).

use std::collections::{HashMap, VecDeque};

use crate::accounting::{Receipt, Rejection};

/// A receipt older than this (by its own time, against the gateway's clock) is refused.
pub const MAX_RECEIPT_AGE_MS: u64 = 10 * 60 * 1000;
/// A receipt from further in the future than this is refused (clock skew allowance).
pub const MAX_RECEIPT_SKEW_MS: u64 = 60 * 1000;
/// Swarms remembered per receiver key.
pub const MAX_SWARMS_PER_KEY: usize = 16;
/// Uploader keys remembered per receiver key (oldest listing forgotten first).
pub const MAX_LISTED_PER_KEY: usize = 1024;
/// An account with no connection is forgotten this long after its last one left.
pub const ACCOUNT_IDLE_MS: u64 = MAX_RECEIPT_AGE_MS;
/// Published digests remembered (oldest forgotten first).
pub const MAX_PUBLISHED: usize = 65_536;
/// Nonces remembered per receiver key, to refuse a replay before it costs the ledger a write.
pub const MAX_NONCES_PER_KEY: usize = 4096;

/// What the tracker knows of one receiver key.
#[derive(Debug, Default, Clone)]
struct Account {
    /// Swarm label → the last time the key was in it (`None`: it is now).
    swarms: VecDeque<(String, Option<u64>)>,
    /// Uploader key → when it was last listed to this key.
    listed: HashMap<String, u64>,
    /// Bytes this key reported from peers and has not yet receipted.
    budget: u64,
    /// Nonces of its receipts believed lately (the ledger keeps them all).
    nonces: std::collections::HashSet<String>,
    nonce_order: VecDeque<String>,
    connections: usize,
    idle_since: u64,
}

/// Digests the tracker published, by segment: (sha256 hex, size).
#[derive(Debug, Default)]
pub struct Published {
    map: HashMap<String, (String, u64)>,
    order: VecDeque<String>,
}

impl Published {
    pub fn insert(&mut self, segment: &str, sha256: &str, size: u64) {
        if self
            .map
            .insert(segment.to_owned(), (sha256.to_owned(), size))
            .is_none()
        {
            self.order.push_back(segment.to_owned());
            while self.order.len() > MAX_PUBLISHED {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    pub fn get(&self, segment: &str) -> Option<&(String, u64)> {
        self.map.get(segment)
    }
}

/// A receipt the tracker believes, for the ledger to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub receipt: Receipt,
    /// The segment's size by the gateway's digest (a receiver's receipts for one segment add up
    /// to at most this).
    pub segment_size: u64,
}

/// Receiver keys and what they did: see the module docs.
#[derive(Debug, Default)]
pub struct Accounts {
    accounts: HashMap<String, Account>,
}

impl Accounts {
    /// A connection with key `key` joined swarm `swarm` at `now_ms`.
    pub fn joined(&mut self, key: &str, swarm: &str, now_ms: u64) {
        self.forget_idle(now_ms);
        let a = self.accounts.entry(key.to_owned()).or_default();
        a.connections += 1;
        a.swarms.retain(|(s, _)| s != swarm);
        a.swarms.push_back((swarm.to_owned(), None));
        while a.swarms.len() > MAX_SWARMS_PER_KEY {
            a.swarms.pop_front();
        }
    }

    /// That connection left its swarm at `now_ms`.
    pub fn left(&mut self, key: &str, swarm: &str, now_ms: u64) {
        if let Some(a) = self.accounts.get_mut(key) {
            a.connections = a.connections.saturating_sub(1);
            for (s, until) in a.swarms.iter_mut() {
                if s == swarm {
                    *until = Some(now_ms);
                }
            }
            if a.connections == 0 {
                a.idle_since = now_ms;
            }
        }
    }

    /// The tracker listed peers with keys `uploaders` to `receiver`.
    pub fn listed<'a>(
        &mut self,
        receiver: &str,
        uploaders: impl IntoIterator<Item = &'a str>,
        now_ms: u64,
    ) {
        let Some(a) = self.accounts.get_mut(receiver) else {
            return;
        };
        for u in uploaders {
            a.listed.insert(u.to_owned(), now_ms);
        }
        if a.listed.len() > MAX_LISTED_PER_KEY {
            let mut by_age: Vec<(u64, String)> =
                a.listed.iter().map(|(k, t)| (*t, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.iter().take(a.listed.len() - MAX_LISTED_PER_KEY) {
                a.listed.remove(k);
            }
        }
    }

    /// `key` reported `p2p_bytes` (already bounded by the report limits) from peers.
    pub fn reported(&mut self, key: &str, p2p_bytes: u64) {
        if let Some(a) = self.accounts.get_mut(key) {
            a.budget = a.budget.saturating_add(p2p_bytes);
        }
    }

    /// Checks `receipt`, sent by a connection that joined with `key`, at `now_ms`: its form, then
    /// what the tracker knows (receiver, uploader, time, swarm, listing, digest, size), the
    /// signature, a nonce seen lately, and last the receiver's budget. On success the
    /// receipt's bytes are taken from the key's budget ([`Accounts::refund`] gives them back if
    /// the ledger refuses it).
    pub fn check(
        &mut self,
        receipt: &Receipt,
        key: &str,
        published: &Published,
        now_ms: u64,
    ) -> Result<Checked, Rejection> {
        receipt.check_form()?;
        if receipt.receiver != key {
            return Err(Rejection::Receiver);
        }
        if receipt.uploader == receipt.receiver {
            return Err(Rejection::SelfDealing);
        }
        if receipt.time.saturating_add(MAX_RECEIPT_AGE_MS) < now_ms
            || receipt.time > now_ms.saturating_add(MAX_RECEIPT_SKEW_MS)
        {
            return Err(Rejection::Time);
        }
        let a = self.accounts.get(key).ok_or(Rejection::Receiver)?;
        let in_swarm = a.swarms.iter().any(|(s, until)| {
            s == &receipt.swarm
                && until.is_none_or(|t| t.saturating_add(MAX_RECEIPT_AGE_MS) >= now_ms)
        });
        if !in_swarm {
            return Err(Rejection::Swarm);
        }
        if !a.listed.contains_key(&receipt.uploader) {
            return Err(Rejection::Uploader);
        }
        let Some((sha256, size)) = published.get(&receipt.segment) else {
            return Err(Rejection::Digest);
        };
        if sha256 != &receipt.sha256 {
            return Err(Rejection::Digest);
        }
        if receipt.bytes == 0 || receipt.bytes > *size {
            return Err(Rejection::Size);
        }
        receipt.check_signature()?;
        if a.nonces.contains(&receipt.nonce) {
            return Err(Rejection::Replay);
        }
        if receipt.bytes > a.budget {
            return Err(Rejection::NotReported);
        }
        if let Some(a) = self.accounts.get_mut(key) {
            a.budget -= receipt.bytes;
            a.nonces.insert(receipt.nonce.clone());
            a.nonce_order.push_back(receipt.nonce.clone());
            while a.nonce_order.len() > MAX_NONCES_PER_KEY {
                if let Some(old) = a.nonce_order.pop_front() {
                    a.nonces.remove(&old);
                }
            }
        }
        Ok(Checked {
            receipt: receipt.clone(),
            segment_size: *size,
        })
    }

    /// Gives back the budget of a receipt the ledger refused.
    pub fn refund(&mut self, key: &str, bytes: u64) {
        if let Some(a) = self.accounts.get_mut(key) {
            a.budget = a.budget.saturating_add(bytes);
        }
    }

    /// Receiver keys known.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    fn forget_idle(&mut self, now_ms: u64) {
        self.accounts.retain(|_, a| {
            a.connections > 0 || a.idle_since.saturating_add(ACCOUNT_IDLE_MS) >= now_ms
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{NodeKey, ReceiptBody};

    const NOW: u64 = 1_800_000_000_000;

    struct World {
        accounts: Accounts,
        published: Published,
        receiver: NodeKey,
        uploader: NodeKey,
    }

    fn world() -> World {
        let receiver = NodeKey::from_seed(&[1; 32]);
        let uploader = NodeKey::from_seed(&[2; 32]);
        let mut accounts = Accounts::default();
        accounts.joined(receiver.public_hex(), "/s/v0.m3u8", NOW - 60_000);
        accounts.listed(receiver.public_hex(), [uploader.public_hex()], NOW - 50_000);
        accounts.reported(receiver.public_hex(), 10_000);
        let mut published = Published::default();
        published.insert("/s/v0/1.ts", &"11".repeat(32), 4000);
        World {
            accounts,
            published,
            receiver,
            uploader,
        }
    }

    fn delivery(w: &World) -> ReceiptBody {
        ReceiptBody {
            uploader: w.uploader.public_hex().to_owned(),
            swarm: "/s/v0.m3u8".into(),
            segment: "/s/v0/1.ts".into(),
            sha256: [0x11; 32],
            bytes: 4000,
            time_ms: NOW - 1000,
            nonce: [3; 16],
        }
    }

    fn check(w: &mut World, r: &Receipt) -> Result<Checked, Rejection> {
        let key = w.receiver.public_hex().to_owned();
        w.accounts.check(r, &key, &w.published, NOW)
    }

    #[test]
    fn an_honest_receipt_is_believed_and_charged_to_the_budget() {
        let mut w = world();
        let r = Receipt::sign(&delivery(&w), &w.receiver);
        let checked = check(&mut w, &r).unwrap();
        assert_eq!(checked.segment_size, 4000);
        // 10,000 reported, 4,000 receipted: a third receipt of 4,000 exceeds what is left.
        let mut d = delivery(&w);
        d.nonce = [4; 16];
        let second = Receipt::sign(&d, &w.receiver);
        assert!(check(&mut w, &second).is_ok());
        d.nonce = [5; 16];
        let third = Receipt::sign(&d, &w.receiver);
        assert_eq!(check(&mut w, &third), Err(Rejection::NotReported));
        let key = w.receiver.public_hex().to_owned();
        w.accounts.refund(&key, 4000);
        assert!(check(&mut w, &third).is_ok());
    }

    #[test]
    fn every_forgery_is_refused_with_its_reason() {
        let mut w = world();
        let other = NodeKey::from_seed(&[9; 32]);
        let honest = delivery(&w);
        let cases: Vec<(Rejection, Receipt)> = vec![
            (Rejection::Signature, {
                let mut r = Receipt::sign(&honest, &w.receiver);
                r.sig = "00".repeat(64);
                r
            }),
            (Rejection::Signature, {
                // Another uploader written in after signing.
                let mut r = Receipt::sign(&honest, &w.receiver);
                r.uploader = other.public_hex().to_owned();
                w.accounts
                    .listed(w.receiver.public_hex(), [other.public_hex()], NOW);
                r
            }),
            (Rejection::Uploader, {
                let mut d = honest.clone();
                d.uploader = "77".repeat(32);
                Receipt::sign(&d, &w.receiver)
            }),
            (Rejection::Receiver, Receipt::sign(&honest, &other)),
            (Rejection::SelfDealing, {
                let mut d = honest.clone();
                d.uploader = w.receiver.public_hex().to_owned();
                Receipt::sign(&d, &w.receiver)
            }),
            (Rejection::Digest, {
                let mut d = honest.clone();
                d.sha256 = [0x22; 32];
                Receipt::sign(&d, &w.receiver)
            }),
            (Rejection::Digest, {
                let mut d = honest.clone();
                d.segment = "/s/v0/2.ts".into();
                Receipt::sign(&d, &w.receiver)
            }),
            (Rejection::Size, {
                let mut d = honest.clone();
                d.bytes = 4001;
                Receipt::sign(&d, &w.receiver)
            }),
            (Rejection::Swarm, {
                let mut d = honest.clone();
                d.swarm = "/s/v1.m3u8".into();
                Receipt::sign(&d, &w.receiver)
            }),
            (Rejection::Time, {
                let mut d = honest.clone();
                d.time_ms = NOW - MAX_RECEIPT_AGE_MS - 1;
                Receipt::sign(&d, &w.receiver)
            }),
            (Rejection::Malformed, {
                let mut r = Receipt::sign(&honest, &w.receiver);
                r.segment = "no-slash".into();
                r
            }),
        ];
        for (want, r) in cases {
            assert_eq!(check(&mut w, &r), Err(want), "{r:?}");
        }
        // None of them took budget: the honest receipt still fits; sent again, it is a replay.
        let r = Receipt::sign(&honest, &w.receiver);
        assert!(check(&mut w, &r).is_ok());
        assert_eq!(check(&mut w, &r), Err(Rejection::Replay));
    }

    #[test]
    fn a_swarm_left_long_ago_no_longer_counts_and_idle_keys_are_forgotten() {
        let mut w = world();
        let key = w.receiver.public_hex().to_owned();
        w.accounts
            .left(&key, "/s/v0.m3u8", NOW - MAX_RECEIPT_AGE_MS - 10);
        let r = Receipt::sign(&delivery(&w), &w.receiver);
        assert_eq!(check(&mut w, &r), Err(Rejection::Swarm));
        w.accounts.joined("aa", "/x", NOW);
        assert_eq!(w.accounts.len(), 1, "the idle receiver key is forgotten");
    }
}
