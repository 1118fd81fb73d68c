//! The tracker's state (pure: no I/O, explicit time): swarms, who is in them, how peers score, whom to
//! introduce to whom, and per-connection message budgets.
//!
//! A swarm is (stream, rendition), optionally split by network region. Matching returns up to K peers:
//! same region first, then best score, never the asker, never a peer caught lying or failing, never a
//! peer the asker shares no transport with (a browser, WebRTC only, is never offered a QUIC-only
//! native peer).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::signal::{PeerInfo, PeerOutcome, QuicAddress, Transport};

/// Tracker limits and matching parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Peers returned to each peer. Default 8.
    pub peers_returned: usize,
    /// Peers in one swarm; the next join is refused with `swarm_full`. Default 500.
    pub max_peers_per_swarm: usize,
    /// Swarms at once; a join that would open one more is refused. Default 10 000.
    pub max_swarms: usize,
    /// Sustained signalling messages per second per connection. Default 20.
    pub messages_per_second: f64,
    /// Burst allowance on top of the sustained rate. Default 40.
    pub message_burst: f64,
    /// Largest signalling message in bytes. Default 64 KiB.
    pub max_message_bytes: usize,
    /// A connection silent for this long (no message, no pong) is reaped. Default 20 s.
    pub reap_after: Duration,
    /// Swarms are split by region (else region only orders matching). Default false.
    pub split_by_region: bool,
    /// Below this score a peer is no longer matched (after enough evidence). Default 0.2.
    pub min_score: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            peers_returned: 8,
            max_peers_per_swarm: 500,
            max_swarms: 10_000,
            messages_per_second: 20.0,
            message_burst: 40.0,
            max_message_bytes: 64 * 1024,
            reap_after: Duration::from_secs(20),
            split_by_region: false,
            min_score: 0.2,
        }
    }
}

/// The identity of a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwarmKey {
    pub stream: String,
    pub rendition: u32,
    /// Set only when swarms are split by region.
    pub region: Option<String>,
}

impl SwarmKey {
    /// A short printable name (used as `swarm` in `welcome`).
    pub fn label(&self) -> String {
        match &self.region {
            Some(r) => format!("{}#{}@{}", self.stream, self.rendition, r),
            None => format!("{}#{}", self.stream, self.rendition),
        }
    }
}

/// What other peers reported about one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub ok: u64,
    pub failed: u64,
    pub mismatch: u64,
    pub bytes: u64,
}

impl Score {
    /// Laplace-smoothed success ratio in (0, 1); a new peer starts at 0.5.
    pub fn value(&self) -> f64 {
        (self.ok as f64 + 1.0) / ((self.ok + self.failed) as f64 + 2.0)
    }

    /// Whether the peer may still be introduced to others: never after a digest mismatch, and not once
    /// at least 5 outcomes put it below `min_score`.
    pub fn matchable(&self, min_score: f64) -> bool {
        self.mismatch == 0 && (self.ok + self.failed < 5 || self.value() >= min_score)
    }
}

/// One peer the tracker knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    pub swarm: SwarmKey,
    pub region: Option<String>,
    pub transports: Vec<Transport>,
    pub quic: Option<QuicAddress>,
    pub upload: bool,
    pub joined: u64,
    pub score: Score,
}

impl Member {
    fn info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.id.clone(),
            region: self.region.clone(),
            transports: self.transports.clone(),
            quic: self.quic.clone(),
        }
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the swarm is full")]
    SwarmFull,
    #[error("too many swarms")]
    TooManySwarms,
    #[error("this peer id is already in use")]
    DuplicateId,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Registry {
    config: TrackerConfig,
    members: HashMap<String, Member>,
    swarms: BTreeMap<SwarmKey, Vec<String>>,
    joins: u64,
}

impl Registry {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// The swarm a peer of `stream`/`rendition` in `region` belongs to.
    pub fn swarm_key(&self, stream: &str, rendition: u32, region: Option<&str>) -> SwarmKey {
        SwarmKey {
            stream: stream.to_owned(),
            rendition,
            region: if self.config.split_by_region {
                region.map(str::to_owned)
            } else {
                None
            },
        }
    }

    /// Adds a peer. The member's `swarm`, `joined` and `score` are set here.
    pub fn join(&mut self, mut member: Member, swarm: SwarmKey) -> Result<(), JoinError> {
        if self.members.contains_key(&member.id) {
            return Err(JoinError::DuplicateId);
        }
        match self.swarms.get(&swarm) {
            Some(peers) if peers.len() >= self.config.max_peers_per_swarm => {
                return Err(JoinError::SwarmFull)
            }
            None if self.swarms.len() >= self.config.max_swarms => {
                return Err(JoinError::TooManySwarms)
            }
            _ => {}
        }
        self.joins += 1;
        member.joined = self.joins;
        member.swarm = swarm.clone();
        member.score = Score::default();
        self.swarms
            .entry(swarm)
            .or_default()
            .push(member.id.clone());
        self.members.insert(member.id.clone(), member);
        Ok(())
    }

    /// Removes a peer; returns its swarm (so the caller can update the others).
    pub fn leave(&mut self, id: &str) -> Option<SwarmKey> {
        let member = self.members.remove(id)?;
        if let Some(peers) = self.swarms.get_mut(&member.swarm) {
            peers.retain(|p| p != id);
            if peers.is_empty() {
                self.swarms.remove(&member.swarm);
            }
        }
        Some(member.swarm)
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Ids of the peers of a swarm, in join order.
    pub fn swarm_members(&self, swarm: &SwarmKey) -> &[String] {
        self.swarms.get(swarm).map_or(&[], Vec::as_slice)
    }

    pub fn peer_count(&self) -> usize {
        self.members.len()
    }

    pub fn swarm_count(&self) -> usize {
        self.swarms.len()
    }

    /// Up to K peers for `id`: same swarm, matchable, not itself, at least one transport in common;
    /// same region first, then best score, then the longest-standing (they hold the most segments).
    pub fn matches(&self, id: &str) -> Vec<PeerInfo> {
        let Some(me) = self.members.get(id) else {
            return Vec::new();
        };
        let mut candidates: Vec<&Member> = self
            .swarm_members(&me.swarm)
            .iter()
            .filter(|p| p.as_str() != id)
            .filter_map(|p| self.members.get(p))
            .filter(|m| m.score.matchable(self.config.min_score))
            .filter(|m| m.transports.iter().any(|t| me.transports.contains(t)))
            .collect();
        candidates.sort_by(|a, b| {
            let same_a = a.region.is_some() && a.region == me.region;
            let same_b = b.region.is_some() && b.region == me.region;
            same_b
                .cmp(&same_a)
                .then(b.score.value().total_cmp(&a.score.value()))
                .then(a.joined.cmp(&b.joined))
        });
        candidates
            .into_iter()
            .take(self.config.peers_returned)
            .map(Member::info)
            .collect()
    }

    /// Applies what `reporter` said about the peers it dealt with. Returns the swarms whose matching
    /// changed (a peer became unmatchable), so their members get new lists.
    pub fn ingest(&mut self, reporter: &str, outcomes: &[PeerOutcome]) -> Vec<SwarmKey> {
        let mut changed = Vec::new();
        for outcome in outcomes {
            if outcome.peer_id == reporter {
                continue; // nobody rates themselves
            }
            let Some(peer) = self.members.get_mut(&outcome.peer_id) else {
                continue;
            };
            let before = peer.score.matchable(self.config.min_score);
            peer.score.ok = peer.score.ok.saturating_add(outcome.ok);
            peer.score.failed = peer.score.failed.saturating_add(outcome.failed);
            peer.score.mismatch = peer.score.mismatch.saturating_add(outcome.mismatch);
            peer.score.bytes = peer.score.bytes.saturating_add(outcome.bytes);
            if before
                && !peer.score.matchable(self.config.min_score)
                && !changed.contains(&peer.swarm)
            {
                changed.push(peer.swarm.clone());
            }
        }
        changed
    }
}

/// A token bucket limiting the signalling messages of one connection.
#[derive(Debug, Clone)]
pub struct MessageBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl MessageBudget {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one message from the budget; false when the connection is over its rate.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, region: Option<&str>) -> Member {
        Member {
            id: id.into(),
            swarm: SwarmKey {
                stream: String::new(),
                rendition: 0,
                region: None,
            },
            region: region.map(Into::into),
            transports: vec![Transport::Quic],
            quic: None,
            upload: true,
            joined: 0,
            score: Score::default(),
        }
    }

    fn registry(k: usize) -> Registry {
        Registry::new(TrackerConfig {
            peers_returned: k,
            ..TrackerConfig::default()
        })
    }

    fn ids(list: &[PeerInfo]) -> Vec<&str> {
        list.iter().map(|p| p.peer_id.as_str()).collect()
    }

    #[test]
    fn matches_same_swarm_never_self_same_region_first() {
        let mut r = registry(8);
        let s = r.swarm_key("/live/master.m3u8", 0, Some("eu"));
        let other = r.swarm_key("/live/master.m3u8", 1, None);
        r.join(member("a", Some("us")), s.clone()).unwrap();
        r.join(member("b", Some("eu")), s.clone()).unwrap();
        r.join(member("c", Some("eu")), s.clone()).unwrap();
        r.join(member("x", Some("eu")), other).unwrap();
        assert_eq!(
            ids(&r.matches("c")),
            ["b", "a"],
            "same region first, other rendition excluded"
        );
        assert_eq!(ids(&r.matches("a")), ["b", "c"]);
        assert!(r.matches("nobody").is_empty());
    }

    #[test]
    fn only_peers_with_a_common_transport_are_matched() {
        let with = |id: &str, transports: &[Transport]| Member {
            transports: transports.to_vec(),
            ..member(id, None)
        };
        let mut r = registry(8);
        let s = r.swarm_key("/s", 0, None);
        r.join(with("quic", &[Transport::Quic]), s.clone()).unwrap();
        r.join(
            with("both", &[Transport::Quic, Transport::Webrtc]),
            s.clone(),
        )
        .unwrap();
        r.join(with("browser", &[Transport::Webrtc]), s.clone())
            .unwrap();
        r.join(with("browser2", &[Transport::Webrtc]), s.clone())
            .unwrap();
        r.join(with("mute", &[]), s.clone()).unwrap();
        assert_eq!(
            ids(&r.matches("browser")),
            ["both", "browser2"],
            "never a QUIC-only peer"
        );
        assert_eq!(ids(&r.matches("quic")), ["both"]);
        assert_eq!(ids(&r.matches("both")), ["quic", "browser", "browser2"]);
        assert!(r.matches("mute").is_empty());
    }

    #[test]
    fn returns_at_most_k_best_scored() {
        let mut r = registry(2);
        let s = r.swarm_key("/s", 0, None);
        for id in ["a", "b", "c", "d"] {
            r.join(member(id, None), s.clone()).unwrap();
        }
        let good = |id: &str| PeerOutcome {
            peer_id: id.into(),
            ok: 10,
            failed: 0,
            mismatch: 0,
            bytes: 1,
        };
        r.ingest("a", &[good("d")]);
        assert_eq!(
            ids(&r.matches("a")),
            ["d", "b"],
            "best score first, then join order"
        );
    }

    #[test]
    fn liars_and_failing_peers_are_no_longer_matched() {
        let mut r = registry(8);
        let s = r.swarm_key("/s", 0, None);
        for id in ["a", "b", "liar", "flaky"] {
            r.join(member(id, None), s.clone()).unwrap();
        }
        let lie = PeerOutcome {
            peer_id: "liar".into(),
            ok: 0,
            failed: 0,
            mismatch: 1,
            bytes: 0,
        };
        let flaky = PeerOutcome {
            peer_id: "flaky".into(),
            ok: 0,
            failed: 6,
            mismatch: 0,
            bytes: 0,
        };
        let changed = r.ingest("a", &[lie, flaky]);
        assert_eq!(changed, vec![s.clone()]);
        assert_eq!(ids(&r.matches("b")), ["a"]);
        let self_praise = PeerOutcome {
            peer_id: "liar".into(),
            ok: 100,
            failed: 0,
            mismatch: 0,
            bytes: 0,
        };
        r.ingest("liar", &[self_praise]);
        assert_eq!(
            r.member("liar").unwrap().score.ok,
            0,
            "nobody rates themselves"
        );
    }

    #[test]
    fn limits_on_swarm_size_swarm_count_and_ids() {
        let mut r = Registry::new(TrackerConfig {
            max_peers_per_swarm: 2,
            max_swarms: 2,
            ..TrackerConfig::default()
        });
        let s1 = r.swarm_key("/a", 0, None);
        r.join(member("a", None), s1.clone()).unwrap();
        assert_eq!(
            r.join(member("a", None), s1.clone()),
            Err(JoinError::DuplicateId)
        );
        r.join(member("b", None), s1.clone()).unwrap();
        assert_eq!(
            r.join(member("c", None), s1.clone()),
            Err(JoinError::SwarmFull)
        );
        r.join(member("c", None), r.swarm_key("/b", 0, None))
            .unwrap();
        assert_eq!(
            r.join(member("d", None), r.swarm_key("/c", 0, None)),
            Err(JoinError::TooManySwarms)
        );
        assert_eq!(r.leave("c"), Some(r.swarm_key("/b", 0, None)));
        assert_eq!(r.swarm_count(), 1, "an empty swarm is dropped");
        r.join(member("d", None), r.swarm_key("/c", 0, None))
            .unwrap();
        assert_eq!(r.peer_count(), 3);
    }

    #[test]
    fn region_split_is_optional() {
        let plain = registry(8);
        assert_eq!(plain.swarm_key("/a", 0, Some("eu")).region, None);
        let split = Registry::new(TrackerConfig {
            split_by_region: true,
            ..TrackerConfig::default()
        });
        assert_eq!(
            split.swarm_key("/a", 0, Some("eu")).region.as_deref(),
            Some("eu")
        );
    }

    #[test]
    fn message_budget_allows_bursts_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = MessageBudget::new(10.0, 5.0, t0);
        assert!((0..5).all(|_| b.take(t0)));
        assert!(!b.take(t0), "burst used up");
        assert!(
            b.take(t0 + Duration::from_millis(100)),
            "one more after 1/rate"
        );
        assert!(!b.take(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn scores_are_smoothed() {
        assert_eq!(Score::default().value(), 0.5);
        let s = Score {
            ok: 8,
            failed: 0,
            mismatch: 0,
            bytes: 0,
        };
        assert!((s.value() - 0.9).abs() < 1e-9, "(8 + 1) / (8 + 2)");
        assert!(
            Score {
                ok: 0,
                failed: 4,
                mismatch: 0,
                bytes: 0
            }
            .matchable(0.2),
            "too little evidence"
        );
    }
}
