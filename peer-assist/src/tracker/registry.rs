//! The tracker's state (pure: no I/O, explicit time): swarms, who is in them, how peers score, whom to
//! introduce to whom, and per-connection message budgets.
//!
//! A swarm is the media playlist a rendition resolves to (so every spelling of one stream is one
//! swarm), optionally split by network region, and split into shards of at most
//! `max_peers_per_swarm` peers: a peer asks for a shard (0 unless the WebSocket URL names one); a
//! join that finds it full is told which shard to ask for instead ([`JoinError::SwarmFull`]), so
//! that a balancer hashing on stream and shard can put each shard on another gateway. Peers are
//! matched only within their shard. One client address may hold at most
//! `max_peers_per_address` peers in at most `max_swarms_per_address` streams.
//!
//! Peer lists are paced: a member's list is recomputed only when something that could change it
//! happened (its mesh neighbours changed, a peer it was given left, a change of reputation in its
//! swarm), and pushed only if it differs from the last one it was sent, at most once per
//! `peer_list_interval` ([`Registry::due_lists`]).
//!
//! Matching returns up to K peers, never the asker, never a peer excluded by its reputation, never
//! a peer the asker shares no transport with (a browser, WebRTC only, is never offered a QUIC-only
//! native peer). A shard of K + 1 or fewer lists everybody. A bigger one keeps a mesh: each member
//! has about K neighbours, the relation is symmetric (so both ends of a listed pair expect the
//! link) and nobody is everybody's neighbour (so the upload is shared, not left to the first K to
//! join). A newcomer takes members with room, else splices itself into existing edges; a leave or
//! an exclusion pairs up the neighbours left behind. A list the mesh leaves short is filled with
//! peers several others vouch for (at most half the list), then by a per-pair hash.
//!
//! Reputation is what other peers report, kept reporter by reporter: a report counts only from a
//! peer of the same swarm that was introduced to the subject (or the subject to it), each reporter's
//! tally is capped, and it takes [`MIN_AGREEING`] independent reporters to exclude a peer (a digest
//! mismatch, or failing most transfers) and [`MIN_VOUCHING`] to promote one. No single client can
//! get an honest peer excluded, and praise never moves the mesh.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::protocol::signal::{
    PeerInfo, PeerOutcome, QuicAddress, Transport, CAPACITY_STEP, MAX_UPLOAD_RATE,
};

/// Tracker limits and matching parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Peers returned to each peer. Default 8.
    pub peers_returned: usize,
    /// Peers in one shard of a swarm; the next join opens another shard. Default 500.
    pub max_peers_per_swarm: usize,
    /// Swarms (shards included) at once; a join that would open one more is refused. Default 10 000.
    pub max_swarms: usize,
    /// Peers joined at once from one client address (an IPv6 /64); more are refused with
    /// `rate_limited`. Default 100.
    pub max_peers_per_address: usize,
    /// Streams (swarms, shards not counted) one client address may be in at once; more are
    /// refused with `too_many_swarms`. Default 8.
    pub max_swarms_per_address: usize,
    /// A member is sent a new peer list at most this often (and only when its list changed).
    /// Default 1 s.
    pub peer_list_interval: Duration,
    /// Messages queued for one peer; a peer whose queue is full has stopped reading and is dropped.
    /// Default 128.
    pub outbound_queue: usize,
    /// A send to a peer that takes longer drops the peer. Default 5 s.
    pub send_timeout: Duration,
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
    /// A reporter whose transfers from a peer succeeded less than this often (of at least 3)
    /// counts as saying it fails. Default 0.2.
    pub min_score: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            peers_returned: 8,
            max_peers_per_swarm: 500,
            max_swarms: 10_000,
            max_peers_per_address: 100,
            max_swarms_per_address: 8,
            peer_list_interval: Duration::from_secs(1),
            outbound_queue: 128,
            send_timeout: Duration::from_secs(5),
            messages_per_second: 20.0,
            message_burst: 40.0,
            max_message_bytes: 64 * 1024,
            reap_after: Duration::from_secs(20),
            split_by_region: false,
            min_score: 0.2,
        }
    }
}

/// The identity of a swarm: the media playlist its peers watch, the region (only when swarms are
/// split by region) and the shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwarmKey {
    /// The normalised media playlist path the gateway serves to this swarm.
    pub playlist: String,
    /// Set only when swarms are split by region.
    pub region: Option<String>,
    /// Shards of one playlist and region are numbered from 0.
    pub shard: u32,
}

impl SwarmKey {
    /// A short printable name (used as `swarm` in `welcome`).
    pub fn label(&self) -> String {
        let mut label = self.playlist.clone();
        if let Some(r) = &self.region {
            label.push('@');
            label.push_str(r);
        }
        if self.shard > 0 {
            label.push_str(&format!("~{}", self.shard));
        }
        label
    }

    fn with_shard(&self, shard: u32) -> SwarmKey {
        SwarmKey {
            shard,
            ..self.clone()
        }
    }
}

/// What one client address holds, for the per-address caps. IPv6 addresses count by /64.
#[derive(Debug, Default)]
struct AddressUse {
    peers: usize,
    /// Playlist → peers of this address watching it.
    streams: HashMap<String, usize>,
}

/// The address a client counts under: IPv4 as is, IPv6 by its /64 (one subscriber's prefix).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Independent reporters that must agree before a peer is excluded.
pub const MIN_AGREEING: usize = 2;
/// Independent reporters whose transfers from a peer went well before it is preferred.
pub const MIN_VOUCHING: usize = 3;
/// Reporters remembered per peer (the most recent).
pub const MAX_REPORTERS: usize = 32;
/// The most one reporter's tally of one peer can hold, per counter.
pub const TALLY_CAP: u64 = 1_000;
/// Peers remembered as introduced to one peer (the most recent).
pub const MAX_INTRODUCED: usize = 512;

/// What one reporter said about one peer, capped.
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

    fn add(&mut self, outcome: &PeerOutcome) {
        let add = |a: u64, b: u64| a.saturating_add(b).min(TALLY_CAP);
        self.ok = add(self.ok, outcome.ok);
        self.failed = add(self.failed, outcome.failed);
        self.mismatch = add(self.mismatch, outcome.mismatch);
        self.bytes = self.bytes.saturating_add(outcome.bytes);
    }

    /// This reporter says the peer fails: at least 3 outcomes, success below `min_score`.
    fn failing(&self, min_score: f64) -> bool {
        self.ok + self.failed >= 3 && self.value() < min_score
    }
}

/// What other peers reported about one peer, reporter by reporter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reputation {
    by_reporter: BTreeMap<String, Score>,
    /// Reporters in the order they first reported (to forget the oldest).
    order: VecDeque<String>,
}

impl Reputation {
    fn record(&mut self, reporter: &str, outcome: &PeerOutcome) {
        if !self.by_reporter.contains_key(reporter) {
            if self.order.len() >= MAX_REPORTERS {
                if let Some(oldest) = self.order.pop_front() {
                    self.by_reporter.remove(&oldest);
                }
            }
            self.order.push_back(reporter.to_owned());
        }
        self.by_reporter
            .entry(reporter.to_owned())
            .or_default()
            .add(outcome);
    }

    /// Reporters that caught it sending bytes that failed the digest.
    pub fn mismatch_reporters(&self) -> usize {
        self.by_reporter.values().filter(|s| s.mismatch > 0).count()
    }

    /// Whether it is excluded: [`MIN_AGREEING`] reporters caught it lying, or as many say it fails
    /// and they are at least half of those with an opinion.
    pub fn excluded(&self, min_score: f64) -> bool {
        if self.mismatch_reporters() >= MIN_AGREEING {
            return true;
        }
        let informed = self
            .by_reporter
            .values()
            .filter(|s| s.ok + s.failed >= 3)
            .count();
        let failing = self
            .by_reporter
            .values()
            .filter(|s| s.failing(min_score))
            .count();
        failing >= MIN_AGREEING && 2 * failing >= informed
    }

    /// Whether it is preferred: [`MIN_VOUCHING`] reporters got segments from it, none caught it
    /// lying, and it is not excluded.
    pub fn promoted(&self, min_score: f64) -> bool {
        let vouching = self
            .by_reporter
            .values()
            .filter(|s| s.ok > 0 && !s.failing(min_score))
            .count();
        vouching >= MIN_VOUCHING && self.mismatch_reporters() == 0 && !self.excluded(min_score)
    }

    /// Everything reported, summed over reporters (for status pages and tests).
    pub fn total(&self) -> Score {
        self.by_reporter
            .values()
            .fold(Score::default(), |mut t, s| {
                t.ok += s.ok;
                t.failed += s.failed;
                t.mismatch += s.mismatch;
                t.bytes = t.bytes.saturating_add(s.bytes);
                t
            })
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
    pub reputation: Reputation,
    /// The client's address, for the per-address caps (None: not counted).
    pub address: Option<IpAddr>,
    /// Ids of the list it was last sent, and when.
    pub listed: Vec<String>,
    pub listed_at: Option<Instant>,
    /// The public key it announced in `join` (hex), if any.
    pub key: Option<String>,
    /// Its upload capacity, bytes per second: declared in `join`, then as its reports measure it
    /// (see [`Registry::set_upload_rate`]).
    pub upload_rate: Option<u64>,
}

impl Member {
    fn info(&self) -> PeerInfo {
        PeerInfo {
            peer_id: self.id.clone(),
            region: self.region.clone(),
            transports: self.transports.clone(),
            quic: self.quic.clone(),
            key: self.key.clone(),
            upload_rate: self.upload_rate,
        }
    }
}

/// Shard numbers a peer may ask for: `0..MAX_SHARDS` (500 peers a shard by default: two million
/// viewers of one rendition).
pub const MAX_SHARDS: u32 = 4096;

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Nobody's: the shard asked for is full; `next` is the first shard after it that this
    /// tracker does not hold full (it may live on another gateway of the fleet).
    #[error("shard {full} of this swarm is full: join shard {next}")]
    SwarmFull { full: u32, next: u32 },
    /// Ours: the gateway holds `max_swarms` swarms.
    #[error("too many swarms")]
    TooManySwarms,
    /// The client's: its address holds `max_peers_per_address` peers.
    #[error("too many peers from this address")]
    TooManyFromAddress,
    /// The client's: its address is in `max_swarms_per_address` streams.
    #[error("too many streams from this address")]
    TooManySwarmsFromAddress,
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
    /// Peer → the peers it was introduced to (the most recent), so a report can be checked against
    /// who could really have dealt with whom.
    introduced: HashMap<String, (HashSet<String>, VecDeque<String>)>,
    addresses: HashMap<IpAddr, AddressUse>,
    /// Members whose peer list may have changed since they were last sent one.
    pending: HashSet<String>,
    /// Marked members whose list had room for a newcomer: sent at once, not paced. A newcomer
    /// dials the peers of its first list right away, and a peer checks a dialer's key against the
    /// lists it was given, so a list that lagged would refuse the newcomer's link (and the dialer
    /// would wait its retry backoff). At most `peers_returned` such pushes a member, as each one
    /// adds a peer to a list with room.
    urgent: HashSet<String>,
    /// Peer lists computed and pushed (for tests and metrics).
    lists_pushed: u64,
    /// The mesh of each shard: member → its neighbours, symmetric, at most `peers_returned`
    /// each (see [`Registry::matches`]).
    mesh: HashMap<String, BTreeSet<String>>,
    /// Marked members whose next list goes out even if it names the same peers: a capacity on
    /// it moved (see [`Registry::set_upload_rate`]).
    refresh: HashSet<String>,
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

    /// Shard `shard` of the swarm of peers watching `playlist` in `region`.
    pub fn swarm_key(&self, playlist: &str, region: Option<&str>, shard: u32) -> SwarmKey {
        SwarmKey {
            playlist: playlist.to_owned(),
            region: if self.config.split_by_region {
                region.map(str::to_owned)
            } else {
                None
            },
            shard,
        }
    }

    /// Adds a peer to the shard `swarm` names if it has room (opening it if it does not exist)
    /// and returns it; a full shard is refused with the shard to ask for instead. The member's
    /// `swarm`, `joined`, `reputation` and list are set here. Members whose list the newcomer
    /// could enter are marked for a new list.
    pub fn join(&mut self, mut member: Member, swarm: SwarmKey) -> Result<SwarmKey, JoinError> {
        if self.members.contains_key(&member.id) {
            return Err(JoinError::DuplicateId);
        }
        let address = member.address.map(address_key);
        if let Some(usage) = address.and_then(|a| self.addresses.get(&a)) {
            if usage.peers >= self.config.max_peers_per_address {
                return Err(JoinError::TooManyFromAddress);
            }
            if !usage.streams.contains_key(&swarm.playlist)
                && usage.streams.len() >= self.config.max_swarms_per_address
            {
                return Err(JoinError::TooManySwarmsFromAddress);
            }
        }
        let shard = self.shard_with_room(&swarm)?;
        if let Some(a) = address {
            let usage = self.addresses.entry(a).or_default();
            usage.peers += 1;
            *usage.streams.entry(shard.playlist.clone()).or_default() += 1;
        }
        self.joins += 1;
        member.joined = self.joins;
        member.swarm = shard.clone();
        member.reputation = Reputation::default();
        member.listed = Vec::new();
        member.listed_at = None;
        self.swarms
            .entry(shard.clone())
            .or_default()
            .push(member.id.clone());
        let id = member.id.clone();
        self.members.insert(id.clone(), member);
        self.mesh_join(&id);
        Ok(shard)
    }

    /// `swarm` if it has room or can be opened. When it is full: the first shard after it that
    /// this tracker does not hold full, so a peer needs one more hop when every shard lives here,
    /// and about one per gateway when a balancer spreads the shards over a fleet.
    fn shard_with_room(&self, swarm: &SwarmKey) -> Result<SwarmKey, JoinError> {
        let max = self.config.max_peers_per_swarm.max(1);
        let full = |key: &SwarmKey| self.swarms.get(key).is_some_and(|p| p.len() >= max);
        if swarm.shard >= MAX_SHARDS {
            return Err(JoinError::TooManySwarms);
        }
        if full(swarm) {
            // At most MAX_SHARDS lookups.
            let next = (swarm.shard + 1..MAX_SHARDS)
                .find(|&n| !full(&swarm.with_shard(n)))
                .ok_or(JoinError::TooManySwarms)?;
            return Err(JoinError::SwarmFull {
                full: swarm.shard,
                next,
            });
        }
        if !self.swarms.contains_key(swarm) && self.swarms.len() >= self.config.max_swarms {
            return Err(JoinError::TooManySwarms);
        }
        Ok(swarm.clone())
    }

    /// Whether `a` and `b` may be neighbours: two members of one shard with a transport in
    /// common, neither excluded.
    fn meshable(&self, a: &Member, b: &Member) -> bool {
        let min = self.config.min_score;
        a.id != b.id
            && a.swarm == b.swarm
            && a.transports.iter().any(|t| b.transports.contains(t))
            && !a.reputation.excluded(min)
            && !b.reputation.excluded(min)
    }

    fn degree(&self, id: &str) -> usize {
        self.mesh.get(id).map_or(0, BTreeSet::len)
    }

    fn adjacent(&self, a: &str, b: &str) -> bool {
        self.mesh.get(a).is_some_and(|n| n.contains(b))
    }

    fn connect(&mut self, a: &str, b: &str) {
        self.mesh
            .entry(a.to_owned())
            .or_default()
            .insert(b.to_owned());
        self.mesh
            .entry(b.to_owned())
            .or_default()
            .insert(a.to_owned());
    }

    fn disconnect(&mut self, a: &str, b: &str) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(n) = self.mesh.get_mut(x) {
                n.remove(y);
                if n.is_empty() {
                    self.mesh.remove(x);
                }
            }
        }
    }

    /// A member whose neighbours changed gets a new list: at once (`urgent`) when it gained the
    /// newcomer that is dialling it now, else paced. A member not sent a first list yet needs
    /// nothing.
    fn mark(&mut self, id: &str, urgent: bool) {
        if self.members.get(id).is_some_and(|m| m.listed_at.is_some()) {
            self.pending.insert(id.to_owned());
            if urgent {
                self.urgent.insert(id.to_owned());
            }
        }
    }

    /// Puts a member into its shard's mesh. It takes members with room first (same region
    /// first, then the fewest neighbours, then a per-pair hash, so nobody is everyone's
    /// neighbour); when nobody has room it splices itself into edges: `y – z` becomes
    /// `y – id – z`, which leaves y and z as many neighbours as before. About
    /// `peers_returned` members get a new list, whatever the size of the shard.
    fn mesh_join(&mut self, id: &str) {
        let k = self.config.peers_returned;
        let Some(me) = self.members.get(id) else {
            return;
        };
        let region = |m: &Member| m.region.is_some() && m.region == me.region;
        // Members with room (usually few), and the full ones in the order they are tried: only
        // the first few of those are ever used, so only they are sorted out of the shard.
        let mut with_room: Vec<(bool, usize, u64, &str)> = Vec::new();
        let mut full: Vec<(bool, u64, &str)> = Vec::new();
        for m in self
            .swarm_members(&me.swarm)
            .iter()
            .filter_map(|p| self.members.get(p))
            .filter(|m| self.meshable(me, m))
        {
            let degree = self.degree(&m.id);
            if degree < k {
                with_room.push((!region(m), degree, pair_hash(id, &m.id), &m.id));
            } else {
                full.push((!region(m), pair_hash(id, &m.id), &m.id));
            }
        }
        with_room.sort_unstable();
        let tries = (2 * k).min(full.len());
        if tries > 0 && tries < full.len() {
            full.select_nth_unstable(tries - 1);
            full.truncate(tries);
        }
        full.sort_unstable();
        let with_room: Vec<String> = with_room.into_iter().map(|c| c.3.to_owned()).collect();
        let full: Vec<String> = full.into_iter().map(|c| c.2.to_owned()).collect();
        for other in with_room {
            if self.degree(id) >= k {
                break;
            }
            self.connect(id, &other);
            self.mark(&other, true);
        }
        for y in full {
            if self.degree(id) + 2 > k {
                break;
            }
            if self.adjacent(id, &y) {
                continue;
            }
            let Some(me) = self.members.get(id) else {
                return;
            };
            // The neighbour of y to splice out: one that may be ours too, by hash.
            let z: Option<String> = self
                .mesh
                .get(&y)
                .into_iter()
                .flatten()
                .filter(|z| z.as_str() != id && !self.adjacent(id, z))
                .filter(|z| self.members.get(*z).is_some_and(|m| self.meshable(me, m)))
                .min_by_key(|z| pair_hash(id, z))
                .cloned();
            let Some(z) = z else {
                continue;
            };
            self.disconnect(&y, &z);
            self.connect(id, &y);
            self.connect(id, &z);
            self.mark(&y, false);
            self.mark(&z, false);
        }
    }

    /// Takes a member out of the mesh (it left or is excluded) and pairs up the neighbours it
    /// leaves behind, so that they keep their degree where they can.
    fn mesh_remove(&mut self, id: &str) {
        let k = self.config.peers_returned;
        let Some(neighbours) = self.mesh.remove(id) else {
            return;
        };
        let mut left: Vec<String> = neighbours.into_iter().collect();
        for n in &left {
            if let Some(set) = self.mesh.get_mut(n) {
                set.remove(id);
                if set.is_empty() {
                    self.mesh.remove(n);
                }
            }
        }
        left.sort_by_key(|n| pair_hash(id, n));
        for (i, a) in left.iter().enumerate() {
            for b in &left[i + 1..] {
                if self.degree(a) >= k {
                    break;
                }
                if self.degree(b) >= k || self.adjacent(a, b) {
                    continue;
                }
                let ok = match (self.members.get(a), self.members.get(b)) {
                    (Some(ma), Some(mb)) => self.meshable(ma, mb),
                    _ => false,
                };
                if ok {
                    self.connect(a, b);
                    self.mark(a, false);
                    self.mark(b, false);
                }
            }
        }
    }

    /// Removes a peer; returns its swarm. Members that were given it are marked for a new list.
    pub fn leave(&mut self, id: &str) -> Option<SwarmKey> {
        self.mesh_remove(id);
        let member = self.members.remove(id)?;
        self.introduced.remove(id);
        self.pending.remove(id);
        self.urgent.remove(id);
        if let Some(a) = member.address.map(address_key) {
            if let Some(usage) = self.addresses.get_mut(&a) {
                usage.peers = usage.peers.saturating_sub(1);
                if let Some(n) = usage.streams.get_mut(&member.swarm.playlist) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        usage.streams.remove(&member.swarm.playlist);
                    }
                }
                if usage.peers == 0 {
                    self.addresses.remove(&a);
                }
            }
        }
        if let Some(peers) = self.swarms.get_mut(&member.swarm) {
            peers.retain(|p| p != id);
            if peers.is_empty() {
                self.swarms.remove(&member.swarm);
            } else {
                for p in peers.iter() {
                    if self
                        .members
                        .get(p)
                        .is_some_and(|m| m.listed.iter().any(|l| l == id))
                    {
                        self.pending.insert(p.clone());
                    }
                }
            }
        }
        Some(member.swarm)
    }

    /// The first list of a member that just joined, recorded as sent at `now`.
    pub fn first_list(&mut self, id: &str, now: Instant) -> Vec<PeerInfo> {
        let peers = self.matches(id);
        self.record_sent(id, &peers, now);
        peers
    }

    fn record_sent(&mut self, id: &str, peers: &[PeerInfo], now: Instant) {
        self.pending.remove(id);
        if let Some(m) = self.members.get_mut(id) {
            m.listed = peers.iter().map(|p| p.peer_id.clone()).collect();
            m.listed_at = Some(now);
        }
        self.record_introductions(id, peers);
        self.lists_pushed = self.lists_pushed.saturating_add(1);
    }

    /// A member's upload capacity as it measured it (bytes/s, at most [`MAX_UPLOAD_RATE`]): listed
    /// from now on if none was known or it moved by more than [`CAPACITY_STEP`], and then the
    /// members whose list names it get a new list (paced). Returns whether it moved.
    pub fn set_upload_rate(&mut self, id: &str, rate: u64) -> bool {
        let rate = rate.min(MAX_UPLOAD_RATE);
        let Some(m) = self.members.get_mut(id) else {
            return false;
        };
        let moved = match m.upload_rate {
            None => rate > 0,
            Some(old) => {
                let (old, new) = (old as f64, rate as f64);
                new > old * CAPACITY_STEP || old > new * CAPACITY_STEP
            }
        };
        if !moved {
            return false;
        }
        m.upload_rate = Some(rate);
        let swarm = m.swarm.clone();
        let holders: Vec<String> = self
            .swarm_members(&swarm)
            .iter()
            .filter(|h| {
                self.members
                    .get(*h)
                    .is_some_and(|o| o.listed.iter().any(|l| l == id))
            })
            .cloned()
            .collect();
        for h in holders {
            self.mark(&h, false);
            // Only a member marked for a list (it had its first) is refreshed: no stale entry.
            if self.pending.contains(&h) {
                self.refresh.insert(h);
            }
        }
        true
    }

    /// Marks every member of `swarm` for a new list (its matching changed).
    pub fn mark_swarm(&mut self, swarm: &SwarmKey) {
        if let Some(ids) = self.swarms.get(swarm) {
            self.pending.extend(ids.iter().cloned());
        }
    }

    /// The peer lists due at `now`: for each marked member whose previous list is at least
    /// `peer_list_interval` old, its list if it differs from the one it was sent (a list equal to
    /// the last one is not sent). Also returns when the next marked member becomes due.
    pub fn due_lists(&mut self, now: Instant) -> (Vec<(String, Vec<PeerInfo>)>, Option<Instant>) {
        let interval = self.config.peer_list_interval;
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let mut done = Vec::new();
        for id in &self.pending {
            let Some(m) = self.members.get(id) else {
                done.push(id.clone());
                continue;
            };
            let paced = !self.urgent.contains(id);
            if let Some(at) = m.listed_at.and_then(|t| t.checked_add(interval)) {
                if paced && at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
            }
            done.push(id.clone());
            let peers = self.matches(id);
            let same = peers.len() == m.listed.len()
                && peers.iter().zip(&m.listed).all(|(p, l)| &p.peer_id == l);
            if !same || self.refresh.contains(id) {
                due.push((id.clone(), peers));
            }
        }
        for id in done {
            self.pending.remove(&id);
            self.urgent.remove(&id);
            self.refresh.remove(&id);
        }
        for (id, peers) in &due {
            self.record_sent(id, peers, now);
        }
        (due, next)
    }

    /// Members marked for a new list.
    pub fn pending_lists(&self) -> usize {
        self.pending.len()
    }

    /// Peer lists sent so far (first lists included).
    pub fn lists_pushed(&self) -> u64 {
        self.lists_pushed
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

    /// Up to K peers for `id`: same swarm, not excluded, not itself, at least one transport in
    /// common. In a shard of at most K such peers, all of them. In a bigger one, its mesh
    /// neighbours: the mesh is symmetric (a peer is listed by the peers it is given, so both ends
    /// expect the link) and spread (each peer is the neighbour of about K others), so that every
    /// peer uploads a share instead of the K most senior uploading to everybody. A list the mesh
    /// leaves short is filled with peers [`MIN_VOUCHING`] others vouch for (up to half the list),
    /// then with others by a per-pair hash. Listed in order: same region first, then seniority.
    pub fn matches(&self, id: &str) -> Vec<PeerInfo> {
        let Some(me) = self.members.get(id) else {
            return Vec::new();
        };
        let min = self.config.min_score;
        let eligible = |m: &&Member| {
            m.id != id
                && !m.reputation.excluded(min)
                && m.transports.iter().any(|t| me.transports.contains(t))
        };
        let k = self.config.peers_returned;
        let shard = self.swarm_members(&me.swarm);
        let mut candidates = shard
            .iter()
            .filter_map(|p| self.members.get(p))
            .filter(eligible);
        let mut chosen: Vec<&Member> = candidates.by_ref().take(k + 1).collect();
        if chosen.len() > k {
            // A big shard: the mesh neighbours, and a fill if they are short.
            chosen = self
                .neighbours(id)
                .filter_map(|p| self.members.get(p))
                .filter(|m| m.swarm == me.swarm)
                .filter(eligible)
                .take(k)
                .collect();
            if chosen.len() < k {
                let mut rest: Vec<&Member> = shard
                    .iter()
                    .filter_map(|p| self.members.get(p))
                    .filter(eligible)
                    .filter(|m| !self.adjacent(id, &m.id))
                    .collect();
                rest.sort_by_key(|m| (!m.reputation.promoted(min), pair_hash(id, &m.id)));
                let mut promoted = 0;
                for m in rest {
                    if chosen.len() >= k {
                        break;
                    }
                    if m.reputation.promoted(min) {
                        if promoted >= k / 2 {
                            continue;
                        }
                        promoted += 1;
                    }
                    chosen.push(m);
                }
            }
        }
        let region = |m: &Member| m.region.is_some() && m.region == me.region;
        chosen.sort_by(|a, b| region(b).cmp(&region(a)).then(a.joined.cmp(&b.joined)));
        chosen.into_iter().map(Member::info).collect()
    }

    /// The mesh neighbours of a member (for status pages and tests).
    pub fn neighbours(&self, id: &str) -> impl Iterator<Item = &str> {
        self.mesh.get(id).into_iter().flatten().map(String::as_str)
    }

    /// Remembers that `id` was introduced to `peers` (called with every list it is sent).
    pub fn record_introductions(&mut self, id: &str, peers: &[PeerInfo]) {
        let (set, order) = self.introduced.entry(id.to_owned()).or_default();
        for p in peers {
            if set.insert(p.peer_id.clone()) {
                order.push_back(p.peer_id.clone());
                if order.len() > MAX_INTRODUCED {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
            }
        }
    }

    /// Whether `a` and `b` could have dealt with each other: one was introduced to the other.
    fn introduced(&self, a: &str, b: &str) -> bool {
        let knows = |x: &str, y: &str| self.introduced.get(x).is_some_and(|(s, _)| s.contains(y));
        knows(a, b) || knows(b, a)
    }

    /// Applies what `reporter` said about the peers it dealt with: only about peers of its swarm
    /// it was introduced to (or that were introduced to it). Returns the swarms whose matching
    /// changed (a peer became excluded or preferred), so their members get new lists, and how many
    /// entries were ignored.
    pub fn ingest(&mut self, reporter: &str, outcomes: &[PeerOutcome]) -> (Vec<SwarmKey>, usize) {
        let mut changed = Vec::new();
        let mut ignored = 0;
        let Some(swarm) = self.members.get(reporter).map(|m| m.swarm.clone()) else {
            return (changed, outcomes.len());
        };
        let min = self.config.min_score;
        for outcome in outcomes {
            let allowed = outcome.peer_id != reporter
                && self
                    .members
                    .get(&outcome.peer_id)
                    .is_some_and(|p| p.swarm == swarm)
                && self.introduced(reporter, &outcome.peer_id);
            if !allowed {
                ignored += 1;
                continue;
            }
            let Some(peer) = self.members.get_mut(&outcome.peer_id) else {
                continue;
            };
            let before = (peer.reputation.excluded(min), peer.reputation.promoted(min));
            peer.reputation.record(reporter, outcome);
            let after = (peer.reputation.excluded(min), peer.reputation.promoted(min));
            if before != after && !changed.contains(&peer.swarm) {
                changed.push(peer.swarm.clone());
            }
            if before.0 != after.0 {
                // Excluded: out of the mesh, its neighbours paired up; cleared: back in.
                if after.0 {
                    self.mesh_remove(&outcome.peer_id);
                } else {
                    self.mesh_join(&outcome.peer_id);
                }
            }
        }
        (changed, ignored)
    }
}

/// A hash of an unordered pair of ids (FNV-1a over both, smaller first): the order in which the
/// mesh tries candidates, the same for both ends and different for every pair, so no peer is
/// everybody's first choice. Ids are the tracker's own random ones, so clients cannot steer it.
fn pair_hash(a: &str, b: &str) -> u64 {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in x.bytes().chain([0xff]).chain(y.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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
                playlist: String::new(),
                region: None,
                shard: 0,
            },
            region: region.map(Into::into),
            transports: vec![Transport::Quic],
            quic: None,
            upload: true,
            joined: 0,
            reputation: Reputation::default(),
            address: None,
            listed: Vec::new(),
            listed_at: None,
            key: None,
            upload_rate: None,
        }
    }

    fn outcome(peer: &str, ok: u64, failed: u64, mismatch: u64) -> PeerOutcome {
        PeerOutcome {
            peer_id: peer.into(),
            ok,
            failed,
            mismatch,
            bytes: ok.saturating_mul(1000),
        }
    }

    /// Introduces everybody of the swarm to everybody, as the hub does with the lists it sends.
    fn introduce_all(r: &mut Registry, ids: &[&str]) {
        for id in ids {
            let everybody: Vec<PeerInfo> = ids
                .iter()
                .filter(|p| *p != id)
                .map(|p| PeerInfo {
                    key: None,
                    upload_rate: None,
                    peer_id: (*p).into(),
                    region: None,
                    transports: vec![],
                    quic: None,
                })
                .collect();
            r.record_introductions(id, &everybody);
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
        let s = r.swarm_key("/live/low.m3u8", Some("eu"), 0);
        let other = r.swarm_key("/live/high.m3u8", None, 0);
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
        let s = r.swarm_key("/s", None, 0);
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
    fn a_short_list_is_filled_with_vouched_peers_first_but_never_more_than_half() {
        let mut r = registry(4);
        let s = r.swarm_key("/s", None, 0);
        let all = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for id in all {
            r.join(member(id, None), s.clone()).unwrap();
        }
        introduce_all(&mut r, &all);
        let mesh: Vec<String> = r.neighbours("a").map(str::to_owned).collect();
        assert_eq!(mesh.len(), 4);
        // A member that is not a's neighbour, and its full list.
        let other = all
            .iter()
            .find(|id| **id != "a" && !mesh.iter().any(|m| m == *id))
            .copied()
            .unwrap();
        assert_eq!(r.neighbours(other).count(), 4);
        let other_before = r.matches(other);
        let mut listed: Vec<String> = ids(&r.matches("a")).iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(listed, mesh, "a full mesh list is the mesh neighbours");
        // A list the mesh leaves short (here: all of a's edges gone) is filled.
        for n in &mesh {
            r.disconnect("a", n);
        }
        let by_hash = r.matches("a");
        assert_eq!(by_hash.len(), 4);
        // A clique (f, g, h) praising one another: two voices each are not enough...
        for (reporter, subject) in [
            ("f", "g"),
            ("f", "h"),
            ("g", "f"),
            ("g", "h"),
            ("h", "f"),
            ("h", "g"),
        ] {
            r.ingest(reporter, &[outcome(subject, 900, 0, 0)]);
        }
        assert_eq!(r.matches("a"), by_hash);
        // ... a third (e) makes f, g and h vouched for: two of them fill half of a's list, no
        // more.
        r.ingest(
            "e",
            &[
                outcome("h", 1, 0, 0),
                outcome("g", 1, 0, 0),
                outcome("f", 1, 0, 0),
            ],
        );
        assert_eq!(
            r.matches(other),
            other_before,
            "praise never moves the mesh"
        );
        let list = r.matches("a");
        let vouched = ids(&list)
            .iter()
            .filter(|id| ["f", "g", "h"].contains(id))
            .count();
        assert_eq!(list.len(), 4);
        assert_eq!(vouched, 2, "{list:?}");
    }

    #[test]
    fn one_reporter_cannot_exclude_an_honest_peer_two_can() {
        let mut r = registry(8);
        let s = r.swarm_key("/s", None, 0);
        let all = ["a", "b", "c", "honest", "liar"];
        for id in all {
            r.join(member(id, None), s.clone()).unwrap();
        }
        introduce_all(&mut r, &all);
        let (changed, ignored) = r.ingest("a", &[outcome("honest", 0, 50, 9)]);
        assert!(changed.is_empty() && ignored == 0);
        assert!(
            ids(&r.matches("b")).contains(&"honest"),
            "one accuser is not enough"
        );
        // Two independent reporters caught the liar: it is no longer offered.
        r.ingest("a", &[outcome("liar", 0, 0, 1)]);
        let (changed, _) = r.ingest("b", &[outcome("liar", 0, 0, 1)]);
        assert_eq!(changed, vec![s.clone()]);
        assert!(!ids(&r.matches("c")).contains(&"liar"));
        // Failing most transfers, said by two of the three who know: excluded too.
        r.ingest("b", &[outcome("honest", 0, 5, 0)]);
        assert!(!ids(&r.matches("c")).contains(&"honest"));
        // Nobody rates themselves, whatever it says.
        let (_, ignored) = r.ingest("liar", &[outcome("liar", 100, 0, 0)]);
        assert_eq!(ignored, 1);
        assert_eq!(r.member("liar").unwrap().reputation.total().ok, 0);
    }

    #[test]
    fn reports_about_strangers_or_other_swarms_are_ignored() {
        let mut r = registry(8);
        let s = r.swarm_key("/s", None, 0);
        let other = r.swarm_key("/s1", None, 0);
        for id in ["a", "b", "c"] {
            r.join(member(id, None), s.clone()).unwrap();
        }
        r.join(member("x", None), other).unwrap();
        // a was introduced to b only.
        let list = r.matches("a");
        r.record_introductions("a", &list[..1]);
        let (_, ignored) = r.ingest(
            "a",
            &[
                outcome("b", 0, 0, 1),
                outcome("c", 0, 0, 1),
                outcome("x", 0, 0, 1),
                outcome("gone", 0, 0, 1),
            ],
        );
        assert_eq!(ignored, 3, "only b could have dealt with a");
        assert_eq!(r.member("c").unwrap().reputation.total().mismatch, 0);
        assert_eq!(r.member("x").unwrap().reputation.total().mismatch, 0);
        // b may speak of a: a was introduced to it.
        let (_, ignored) = r.ingest("b", &[outcome("a", 1, 0, 0)]);
        assert_eq!(ignored, 0);
    }

    #[test]
    fn one_reporters_tally_is_capped() {
        let mut rep = Reputation::default();
        rep.record("a", &outcome("p", u64::MAX, u64::MAX, 0));
        let t = rep.total();
        assert_eq!((t.ok, t.failed), (TALLY_CAP, TALLY_CAP));
        for i in 0..(MAX_REPORTERS + 5) {
            rep.record(&format!("r{i}"), &outcome("p", 1, 0, 0));
        }
        assert_eq!(
            rep.by_reporter.len(),
            MAX_REPORTERS,
            "the most recent reporters"
        );
    }

    #[test]
    fn limits_on_swarm_count_and_ids_and_big_swarms_get_shards() {
        let mut r = Registry::new(TrackerConfig {
            max_peers_per_swarm: 2,
            max_swarms: 3,
            ..TrackerConfig::default()
        });
        let s1 = r.swarm_key("/a", None, 0);
        assert_eq!(r.join(member("a", None), s1.clone()), Ok(s1.clone()));
        assert_eq!(
            r.join(member("a", None), s1.clone()),
            Err(JoinError::DuplicateId)
        );
        r.join(member("b", None), s1.clone()).unwrap();
        // The third viewer of /a is told to ask for shard 1; there it is matched in it only.
        assert_eq!(
            r.join(member("c", None), s1.clone()),
            Err(JoinError::SwarmFull { full: 0, next: 1 })
        );
        let shard1 = r.join(member("c", None), s1.with_shard(1)).unwrap();
        assert_eq!(shard1.shard, 1);
        assert_eq!(shard1.label(), "/a~1");
        assert!(
            r.matches("c").is_empty(),
            "peers are matched within their shard"
        );
        assert_eq!(ids(&r.matches("a")), ["b"]);
        r.join(member("d", None), r.swarm_key("/b", None, 0))
            .unwrap();
        assert_eq!(
            r.join(member("e", None), r.swarm_key("/c", None, 0)),
            Err(JoinError::TooManySwarms)
        );
        assert_eq!(
            r.join(member("e", None), shard1.clone()),
            Ok(shard1.clone()),
            "room in shard 1"
        );
        assert_eq!(
            r.join(member("f", None), s1.clone()),
            Err(JoinError::SwarmFull { full: 0, next: 2 }),
            "the full shards this tracker holds are skipped"
        );
        assert_eq!(
            r.join(member("f", None), s1.with_shard(2)),
            Err(JoinError::TooManySwarms),
            "a third shard would be a fourth swarm"
        );
        assert_eq!(
            r.join(member("f", None), s1.with_shard(MAX_SHARDS)),
            Err(JoinError::TooManySwarms),
            "shard numbers are bounded"
        );
        assert_eq!(r.leave("d"), Some(r.swarm_key("/b", None, 0)));
        assert_eq!(r.swarm_count(), 2, "an empty swarm is dropped");
        // A place freed in shard 0 is filled first.
        r.leave("a");
        assert_eq!(r.join(member("g", None), s1.clone()), Ok(s1));
        assert_eq!(r.peer_count(), 4);
    }

    #[test]
    fn one_address_holds_a_bounded_number_of_peers_and_streams() {
        let mut r = Registry::new(TrackerConfig {
            max_peers_per_address: 3,
            max_swarms_per_address: 2,
            ..TrackerConfig::default()
        });
        let at = |id: &str, ip: &str| Member {
            address: Some(ip.parse().unwrap()),
            ..member(id, None)
        };
        r.join(at("a", "10.0.0.1"), r.swarm_key("/1", None, 0))
            .unwrap();
        r.join(at("b", "10.0.0.1"), r.swarm_key("/2", None, 0))
            .unwrap();
        assert_eq!(
            r.join(at("c", "10.0.0.1"), r.swarm_key("/3", None, 0)),
            Err(JoinError::TooManySwarmsFromAddress)
        );
        r.join(at("c", "10.0.0.1"), r.swarm_key("/2", None, 0))
            .unwrap();
        assert_eq!(
            r.join(at("d", "10.0.0.1"), r.swarm_key("/1", None, 0)),
            Err(JoinError::TooManyFromAddress)
        );
        // IPv6 counts by /64; other addresses are not affected.
        for (i, ip) in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"]
            .iter()
            .enumerate()
        {
            r.join(at(&format!("v6-{i}"), ip), r.swarm_key("/1", None, 0))
                .unwrap();
        }
        assert_eq!(
            r.join(at("v6-x", "2001:db8:0:0:1::9"), r.swarm_key("/1", None, 0)),
            Err(JoinError::TooManyFromAddress)
        );
        r.join(at("other", "2001:db8:0:1::1"), r.swarm_key("/1", None, 0))
            .unwrap();
        r.join(at("e", "10.0.0.2"), r.swarm_key("/3", None, 0))
            .unwrap();
        // Leaving frees the places.
        r.leave("a");
        r.join(at("d", "10.0.0.1"), r.swarm_key("/2", None, 0))
            .unwrap();
        r.leave("b");
        r.leave("c");
        r.leave("d");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(
            !r.addresses.contains_key(&ip),
            "no entry kept for an address with no peers"
        );
        assert_eq!(r.addresses.len(), 3, "10.0.0.2 and two /64s");
    }

    #[test]
    fn ten_thousand_joins_of_one_playlist_fill_shards_not_the_table() {
        let mut r = Registry::new(TrackerConfig {
            max_peers_per_address: usize::MAX,
            ..TrackerConfig::default()
        });
        let s = r.swarm_key("/demo/live/low.m3u8", None, 0);
        for i in 0..10_000 {
            // Every peer asks for shard 0, then where it is told: one hop at most, as every shard
            // lives on this tracker.
            let joined = match r.join(member(&format!("p{i}"), None), s.clone()) {
                Err(JoinError::SwarmFull { next, .. }) => {
                    r.join(member(&format!("p{i}"), None), s.with_shard(next))
                }
                other => other,
            };
            assert!(joined.is_ok(), "{joined:?}");
        }
        assert_eq!(r.swarm_count(), 20, "10,000 peers in shards of 500");
        assert_eq!(r.swarm_members(&s.with_shard(19)).len(), 500);
    }

    /// Pushes of peer lists: a list is sent only when it changed, at most once per interval.
    /// A newcomer dials the peers of its first list at once; a peer checks a dialer's key against
    /// the lists it was given, so those peers must learn of the newcomer at once, not a second
    /// later (found by `p2p_native::a_driven_node_fetches_what_it_is_asked_for_from_a_peer`).
    #[test]
    fn peers_with_room_learn_of_a_newcomer_at_once() {
        let t0 = Instant::now();
        let mut r = Registry::new(TrackerConfig::default());
        let s = r.swarm_key("/s", None, 0);
        r.join(member("a", None), s.clone()).unwrap();
        r.first_list("a", t0);
        let later = t0 + Duration::from_millis(5);
        r.join(member("b", None), s.clone()).unwrap();
        assert_eq!(ids(&r.first_list("b", later)), ["a"]);
        let (due, _) = r.due_lists(later);
        assert_eq!(due.len(), 1, "not paced");
        assert_eq!(due[0].0, "a");
        assert_eq!(ids(&due[0].1), ["b"]);
        // A score change is still paced.
        r.mark_swarm(&s);
        assert!(r.due_lists(later).0.is_empty());
    }

    #[test]
    fn peer_lists_are_paced_and_sent_only_when_they_change() {
        let t0 = Instant::now();
        let mut r = Registry::new(TrackerConfig {
            max_peers_per_address: usize::MAX,
            ..TrackerConfig::default()
        });
        let s = r.swarm_key("/s", None, 0);
        let mut now = t0;
        let mut pushed = 0u64;
        // 400 members join one by one, 50 ms apart; each gets its first list at once, and the
        // pacer runs after every join.
        for i in 0..400 {
            now += Duration::from_millis(50);
            let id = format!("p{i:03}");
            r.join(member(&id, None), s.clone()).unwrap();
            let first = r.first_list(&id, now);
            assert_eq!(first.len(), i.min(8));
            pushed += 1;
            pushed += r.due_lists(now).0.len() as u64;
        }
        // 28 more join and leave again.
        for i in 0..28 {
            now += Duration::from_millis(50);
            let id = format!("q{i:02}");
            r.join(member(&id, None), s.clone()).unwrap();
            r.first_list(&id, now);
            pushed += 1;
            pushed += r.due_lists(now).0.len() as u64;
            r.leave(&id);
            pushed += r.due_lists(now).0.len() as u64;
        }
        // Later, whatever is still pending goes out once.
        now += Duration::from_secs(2);
        pushed += r.due_lists(now).0.len() as u64;
        assert_eq!(r.pending_lists(), 0);
        assert_eq!(pushed, r.lists_pushed());
        // 428 first lists, and each join or leave changed the lists of about K members (the
        // newcomer's mesh neighbours), coalesced by the pacing: a few pushes a join, whatever
        // the size of the shard.
        assert!(pushed <= 428 * 3, "{pushed} pushes");
        let members: Vec<String> = (0..400).map(|i| format!("p{i:03}")).collect();
        assert_mesh(&r, &members, 8);

        // A peer leaves: only the members that were given it get a new list, once, and not
        // before a second has passed since their previous one.
        let before = r.lists_pushed();
        let neighbours: Vec<String> = r.neighbours("p003").map(str::to_owned).collect();
        assert_eq!(neighbours.len(), 8);
        r.leave("p003");
        let (due, next) = r.due_lists(now);
        let mut got: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
        got.sort_unstable();
        assert_eq!(got, neighbours, "only its neighbours");
        assert!(next.is_none());
        assert!(!due
            .iter()
            .any(|(_, l)| l.iter().any(|p| p.peer_id == "p003")));
        // Its neighbours were paired up among themselves: they keep their degree, or lose one.
        for n in &neighbours {
            assert!(r.neighbours(n).count() >= 7, "{n}");
        }
        let (pushed_then, first) = (r.lists_pushed(), neighbours[0].clone());
        let leaver = r.neighbours(&first).next().map(str::to_owned).unwrap();
        r.leave(&leaver);
        let (due, next) = r.due_lists(now + Duration::from_millis(10));
        assert!(!due.iter().any(|(id, _)| *id == first), "paced");
        assert_eq!(next, Some(now + Duration::from_secs(1)));
        let (due, _) = r.due_lists(now + Duration::from_secs(1));
        assert!(due.iter().any(|(id, _)| *id == first));
        assert!(r.lists_pushed() - pushed_then <= 8);
        assert!(r.lists_pushed() - before <= 16);
    }

    #[test]
    fn a_measured_capacity_is_listed_again_only_when_it_moves_by_more_than_the_step() {
        let t0 = Instant::now();
        let mut r = Registry::new(TrackerConfig {
            max_peers_per_address: usize::MAX,
            ..TrackerConfig::default()
        });
        let s = r.swarm_key("/s", None, 0);
        for id in ["a", "b", "c"] {
            r.join(member(id, None), s.clone()).unwrap();
            r.first_list(id, t0);
        }
        r.due_lists(t0);
        let rate_of = |list: &[PeerInfo], id: &str| {
            list.iter()
                .find(|p| p.peer_id == id)
                .and_then(|p| p.upload_rate)
        };
        // The first measurement: the two members whose lists name "a" get them again (the
        // same peers), paced, with its capacity.
        assert!(r.set_upload_rate("a", 1_000_000));
        let (due, _) = r.due_lists(t0 + Duration::from_secs(2));
        let mut got: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
        got.sort_unstable();
        assert_eq!(got, ["b", "c"]);
        assert!(due.iter().all(|(_, l)| rate_of(l, "a") == Some(1_000_000)));
        // Noise within 1.25x changes nothing and sends nothing.
        assert!(!r.set_upload_rate("a", 1_200_000));
        assert!(!r.set_upload_rate("a", 810_000));
        assert_eq!(r.pending_lists(), 0);
        // A real move is listed; an absurd claim is capped; strangers are ignored.
        assert!(r.set_upload_rate("a", 400_000));
        let (due, _) = r.due_lists(t0 + Duration::from_secs(4));
        assert_eq!(due.len(), 2);
        assert!(due.iter().all(|(_, l)| rate_of(l, "a") == Some(400_000)));
        assert!(r.set_upload_rate("b", u64::MAX));
        assert_eq!(
            r.member("b").and_then(|m| m.upload_rate),
            Some(MAX_UPLOAD_RATE)
        );
        assert!(!r.set_upload_rate("nobody", 1_000_000));
        // A newcomer's first list carries what is known.
        r.join(member("d", None), s.clone()).unwrap();
        let first = r.first_list("d", t0 + Duration::from_secs(5));
        assert_eq!(rate_of(&first, "a"), Some(400_000));
        assert_eq!(rate_of(&first, "c"), None);
    }

    /// The mesh of `members`: symmetric (a lists b iff b lists a), at most `k` a list and at
    /// least `k - 1`, and nobody listed by more than `k` others.
    fn assert_mesh(r: &Registry, members: &[String], k: usize) {
        let mut listed_by: HashMap<String, usize> = HashMap::new();
        for m in members {
            let list = r.matches(m);
            assert!(
                list.len() <= k && list.len() + 1 >= k,
                "{m}: {}",
                list.len()
            );
            for p in &list {
                *listed_by.entry(p.peer_id.clone()).or_default() += 1;
                assert!(
                    r.matches(&p.peer_id).iter().any(|q| q.peer_id == *m),
                    "{m} lists {} but not the other way",
                    p.peer_id
                );
            }
        }
        let most = listed_by.values().copied().max().unwrap_or(0);
        assert!(most <= k, "a peer is listed by {most}");
    }

    #[test]
    fn a_leave_or_join_changes_only_the_lists_of_the_mesh_neighbours() {
        let t0 = Instant::now();
        let mut r = registry(4);
        let s = r.swarm_key("/s", None, 0);
        let members: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
        for id in &members {
            r.join(member(id, None), s.clone()).unwrap();
            r.first_list(id, t0);
        }
        r.due_lists(t0 + Duration::from_secs(5));
        assert_eq!(r.pending_lists(), 0);
        assert_mesh(&r, &members, 4);
        // A newcomer enters about K lists, by splicing itself into edges: at most K members
        // are marked, whatever the size of the shard.
        r.join(member("new", None), s.clone()).unwrap();
        assert!(r.pending_lists() <= 4, "{}", r.pending_lists());
        let first = r.first_list("new", t0 + Duration::from_secs(5));
        assert_eq!(first.len(), 4);
        r.due_lists(t0 + Duration::from_secs(10));
        let mut all = members.clone();
        all.push("new".into());
        assert_mesh(&r, &all, 4);
        // A leave: only the members that listed it.
        r.leave("new");
        assert!(r.pending_lists() <= 4);
        r.due_lists(t0 + Duration::from_secs(15));
        assert_mesh(&r, &members, 4);
    }

    /// In a shard of K + 1 or fewer everybody lists everybody; in a bigger one the mesh spreads
    /// the lists, where the K most senior used to be on every list (and upload to everybody).
    #[test]
    fn a_big_shard_is_a_mesh_not_a_star() {
        let mut r = registry(8);
        let s = r.swarm_key("/s", None, 0);
        let members: Vec<String> = (0..200).map(|i| format!("v{i:03}")).collect();
        for id in &members {
            r.join(member(id, None), s.clone()).unwrap();
        }
        assert_mesh(&r, &members, 8);
        let seniors_listed = members[9..]
            .iter()
            .filter(|m| r.matches(m).iter().any(|p| p.peer_id == "v000"))
            .count();
        assert!(seniors_listed <= 8);
    }

    #[test]
    fn region_split_is_optional() {
        let plain = registry(8);
        assert_eq!(plain.swarm_key("/a", Some("eu"), 0).region, None);
        let split = Registry::new(TrackerConfig {
            split_by_region: true,
            ..TrackerConfig::default()
        });
        assert_eq!(
            split.swarm_key("/a", Some("eu"), 0).region.as_deref(),
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
        let few = Score {
            ok: 0,
            failed: 2,
            mismatch: 0,
            bytes: 0,
        };
        assert!(!few.failing(0.2), "too little evidence");
    }
}
