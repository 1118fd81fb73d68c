//! The deadline scheduler: for each segment the player needs, where to fetch it from (a peer or the
//! gateway over HTTP), and when to give up on a peer.
//!
//! Distribution comes first: a viewer must never stall because of P2P. Every choice is made from the
//! player's real deadline (when the segment plays, minus a safety margin), never from fixed timers.
//! The module is pure: no I/O, no async, no clock reads. Time comes in as [`Instant`] values, so the
//! tests drive it with explicit time.
//!
//! # Quantities
//!
//! For a [`Need`] evaluated at `now` with a [`SchedulerConfig`] `c`:
//!
//! - `deadline = max(plays_at − c.safety_margin, now)` (saturating: a deadline in the past is `now`);
//! - `left = deadline − now`;
//! - `size = need.size.unwrap_or(c.default_segment_size)`;
//! - `http_time = size / http_rate`;
//! - `urgent = (plays_at − now) ≤ c.urgent_window` (saturating at zero), otherwise the need is a
//!   *prefetch*;
//! - `http_start_by = plays_at − c.safety_margin − http_time` ([`Scheduler::http_start_by`]): the latest
//!   instant an HTTP fetch of the whole segment can start and still finish before the deadline;
//! - `http_switch_at = http_start_by − HTTP_START_SLACK` (100 ms): when a waiting urgent need goes to
//!   HTTP, a little before the latest instant so a late timer wake-up does not cost the deadline.
//!
//! Rates: a rate that is `≤ 0`, NaN or infinite is *unknown*. An unknown measured peer rate is replaced
//! by `c.default_peer_rate`; an unusable `c.default_peer_rate` or `c.http_rate` is replaced by 2 MB/s.
//! A `c.peer_time_budget` that is NaN means the default 0.5; otherwise it is clamped to `[0, 1]`.
//! All instant and duration arithmetic saturates, nothing panics.
//!
//! # Rules of [`Scheduler::decide`]
//!
//! 1. **HTTP already running** (`http_running`): never start anything else. The answer is
//!    `Continue(now + 200 ms)`, whether or not a peer transfer also runs (it is kept).
//! 2. **No transfer running:**
//!    1. *Seeder.* If `fresh_live`, `urgent` and [`Scheduler::is_seeder`]`(seniority)` (fewer than
//!       `max(c.http_first_count, ⌊swarm / 20⌋)` peers are older than this one):
//!       `FetchHttp { from: 0 }`. The most senior peers of the swarm (those that joined first) fetch
//!       a new live segment from the gateway so the others can get it from them.
//!    2. *Best peer.* Candidates are the peers other than `me` with `has && healthy && in_flight < 2`
//!       ([`MAX_IN_FLIGHT_PER_PEER`]). Each one's `expected_finish = size / rate` (`rate` = measured
//!       rate, else `c.default_peer_rate`). The best is the smallest `expected_finish`, ties broken by
//!       the FNV-1a hash of (`me`, peer id) ([`pair_rank`]), then by peer id: requesters that know
//!       nothing of their peers' rates spread over them instead of all asking the same one. It is *usable* iff both
//!       - `expected_finish ≤ left × peer_time_budget` — headroom for the estimate being wrong
//!         (with 0.5, the peer may be twice as slow as expected and still make it), and
//!       - `expected_finish + http_time ≤ left` — if the peer fails right at the end, a full HTTP
//!         fetch still fits before the deadline. This one binds when time is short (`http_time` is
//!         more than `(1 − budget) × left`); the first one binds otherwise.
//!
//!       If usable: `FetchFromPeer(best)`. This applies to urgent and prefetch needs alike.
//!    3. *Prefetch, no usable peer* (never HTTP): if not `fresh_live` and no healthy peer (other than
//!       `me`) advertises the segment: `Skip`. Otherwise (a busy or slow peer has it, or it is fresh
//!       live and the seeders may soon have it):
//!       `WaitUntil(min(now + 250 ms, plays_at − c.urgent_window))` — look again at the latest when the
//!       need becomes urgent.
//!    4. *Urgent, no usable peer:* `FetchHttp { from: 0 }` if `now ≥ http_switch_at`, or if not
//!       `fresh_live` and no healthy peer advertises it (nothing to wait for). Otherwise (the segment
//!       is fresh live and a seeder is fetching it, or a busy/slow peer has it and may become usable):
//!       `WaitUntil(min(now + 250 ms, http_switch_at))` — non-seeders wait for peers until their own
//!       deadline forces HTTP, and never later than that.
//! 3. **A peer transfer is running** (`transfer`):
//!    - `done = offset + received` (the bytes so far are kept and verified with the rest, so every
//!      HTTP takeover below asks `from = done`), `remaining = size − done` (saturating);
//!    - `observed_rate = received / (now − started)`; if `now == started` or `received == 0` (or the
//!      result is unknown), the peer's measured rate or `c.default_peer_rate`;
//!    - `projected_finish = now + remaining / observed_rate`;
//!    - `http_remaining = remaining / http_rate`, `takeover_by = deadline − http_remaining` (the latest
//!      instant HTTP can take over the rest and still make the deadline);
//!    - *stalled* iff `now − last_progress > max(500 ms, 2 × STALL_CHUNK_BYTES / expected_rate)`, with
//!      `expected_rate` the peer's measured rate or `c.default_peer_rate` and [`STALL_CHUNK_BYTES`]
//!      64 KiB.
//!
//!    Then, for an **urgent** need:
//!    1. stalled, or the peer is unhealthy or no longer in `peers`: `DropPeer` while
//!       `now < http_switch_at` (another peer may still do: the caller cancels this one, keeps it
//!       out of new requests for a backoff and decides again by rule 2, which starts HTTP by
//!       `http_switch_at` at the latest); from `http_switch_at` on, `ReplaceWithHttp { from: done }`;
//!    2. `projected_finish > deadline` (the peer is far behind, it will miss): before
//!       `http_switch_at`, `Continue(clamp(http_switch_at, now + 10 ms, now + 200 ms))` (an early
//!       projection holds the request's round trip and slow start, and HTTP can still fetch the
//!       whole rest at `http_switch_at`); from then on `ReplaceWithHttp { from: done }`;
//!    3. `projected_finish > takeover_by` and `now + HTTP_START_SLACK ≥ takeover_by` (the peer is
//!       projected to make it, but if it falters HTTP could no longer rescue it, and HTTP must start
//!       now to make it): `RaceHttp { from: done }`. Racing only at the last moment lets the peer
//!       deliver as much as possible first, so HTTP duplicates as few bytes as possible;
//!    4. otherwise `Continue(clamp(takeover_by − HTTP_START_SLACK, now + 10 ms, now + 200 ms))`.
//!
//!    For a **prefetch** need, HTTP is never used, not even raced:
//!    1. stalled, or the peer is unhealthy or gone: `Skip` (the caller cancels the peer request and
//!       does nothing more for now);
//!    2. otherwise `Continue(clamp(plays_at − c.urgent_window, now + 10 ms, now + 200 ms))`; once the
//!       need is urgent the urgent rules apply to the same transfer.
//!
//! Every `WaitUntil`/`Continue` instant is strictly after `now`.

use std::time::{Duration, Instant};

/// A peer's identifier in the swarm.
pub type PeerId = String;

/// A peer with this many transfers running is not asked for more.
pub const MAX_IN_FLIGHT_PER_PEER: usize = 2;
/// How often a waiting need (prefetch, or urgent waiting for peers) is looked at again, at most.
pub const WAIT_POLL: Duration = Duration::from_millis(250);
/// How often a running transfer is looked at again, at most.
pub const TRANSFER_POLL: Duration = Duration::from_millis(200);
/// The shortest delay of a `WaitUntil`/`Continue` from a running transfer (no busy loops).
pub const MIN_RECHECK: Duration = Duration::from_millis(10);
/// HTTP starts this much before the latest instant it could (timer wake-ups are not exact).
pub const HTTP_START_SLACK: Duration = Duration::from_millis(100);
/// A transfer without progress for longer than this (at least) is stalled.
pub const MIN_STALL: Duration = Duration::from_millis(500);
/// The chunk size assumed for stall detection: a transfer is stalled after twice the time this
/// many bytes take at the peer's expected rate (when that is longer than [`MIN_STALL`]).
pub const STALL_CHUNK_BYTES: u64 = 64 * 1024;
/// Weight of a new sample in [`update_rate`].
pub const RATE_EWMA_ALPHA: f64 = 0.3;
/// In a large swarm, one peer in this many fetches each new live segment over HTTP first.
pub const PEERS_PER_SEEDER: usize = 20;

/// Used when a configured rate is unusable (≤ 0, NaN, infinite).
const FALLBACK_RATE: f64 = 2_000_000.0;
/// Used when the configured peer time budget is NaN.
const FALLBACK_BUDGET: f64 = 0.5;

/// Tuning of the [`Scheduler`].
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Subtracted from the playback deadline: work must finish this much before the segment plays.
    /// Default 1 s.
    pub safety_margin: Duration,
    /// A peer is used only if its expected finish time is within this fraction of the time left
    /// (0.5 = it must finish in half the time left). Default 0.5. Clamped to `[0, 1]`.
    pub peer_time_budget: f64,
    /// Segments whose playback is further than this are "prefetch": fetched from peers only, never
    /// over HTTP. Default 6 s.
    pub urgent_window: Duration,
    /// Rate assumed for a peer never measured, bytes/s (optimistic but bounded). Default 2 000 000.
    pub default_peer_rate: f64,
    /// HTTP rate estimate, bytes/s, used to know when HTTP must start at the latest.
    /// Default 2 000 000.
    pub http_rate: f64,
    /// How many peers of a swarm fetch a new live segment over HTTP first at least (the seeders,
    /// the most senior peers), see [`Scheduler::is_seeder`]; large swarms have one per
    /// [`PEERS_PER_SEEDER`] peers. Default 1.
    pub http_first_count: usize,
    /// Size assumed when the segment size is unknown, bytes. Default 1 000 000.
    pub default_segment_size: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            safety_margin: Duration::from_secs(1),
            peer_time_budget: 0.5,
            urgent_window: Duration::from_secs(6),
            default_peer_rate: 2_000_000.0,
            http_rate: 2_000_000.0,
            http_first_count: 1,
            default_segment_size: 1_000_000,
        }
    }
}

/// A segment the player needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// Segment id (its path).
    pub segment: String,
    /// Its size from the gateway's digest list, if known.
    pub size: Option<u64>,
    /// When the player needs the whole segment (its playback start time).
    pub plays_at: Instant,
    /// True for a live segment just published (nobody may have it yet).
    pub fresh_live: bool,
}

/// What this peer knows about another peer, for one need.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerState {
    pub peer: PeerId,
    /// It advertised the segment in its Have list.
    pub has: bool,
    /// Measured bytes/s from past transfers (EWMA, see [`update_rate`]), `None` if never measured.
    pub rate: Option<f64>,
    /// Transfers currently running from this peer.
    pub in_flight: usize,
    /// False after failures or a digest mismatch: never picked.
    pub healthy: bool,
}

/// Where this peer stands in its swarm by seniority, as it sees it (PROTOCOL.md §4.1).
///
/// Seniority is each peer's own view: the peers of the first `peers` message after `welcome` joined
/// before it, peers listed later joined after it. Two peers agree on which of them is older
/// whenever each lists the other, so every pair agrees without a global clock. The senior peers
/// seed because a peer that has stayed long is the one most likely to stay (and a newcomer mostly
/// needs segments the swarm already has). Where views disagree (a peer left out of a truncated
/// list), two peers may both seed (a little more HTTP) or both wait (until their own deadline
/// sends them to HTTP): never a stall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seniority {
    /// Healthy peers of the swarm that are older than this one (listed in its first `peers`
    /// message after `welcome`, still listed, not banned).
    pub older: usize,
    /// Peers in the swarm, this one included.
    pub swarm: usize,
}

/// A peer transfer in progress for a need.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub peer: PeerId,
    pub started: Instant,
    /// Bytes so far (contiguous from `offset`).
    pub received: u64,
    /// First byte requested (normally 0).
    pub offset: u64,
    /// When bytes last arrived (`started` before the first bytes).
    pub last_progress: Instant,
}

/// What to do for a need now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Ask this peer (no transfer running).
    FetchFromPeer(PeerId),
    /// Fetch over HTTP now, from byte `from` (a Range request when > 0; the bytes so far are
    /// verified with the rest).
    FetchHttp { from: u64 },
    /// Keep the peer transfer AND start HTTP in parallel from `from` (whichever completes first and
    /// verifies wins).
    RaceHttp { from: u64 },
    /// Cancel the peer transfer and fetch everything it has not delivered over HTTP, from `from`.
    ReplaceWithHttp { from: u64 },
    /// Do nothing now; look again at this instant at the latest (or earlier if something changes).
    WaitUntil(Instant),
    /// Keep waiting on the running transfer; look again at this instant at the latest.
    Continue(Instant),
    /// Give up on a prefetch (beyond the urgent window) that no peer can serve, or whose peer
    /// transfer stalled or failed (the caller cancels the peer request): don't use HTTP for it.
    Skip,
    /// Cancel the peer transfer of an urgent need that stalled, failed or will miss, while there
    /// is still time to get the segment elsewhere before HTTP must start: the caller keeps the
    /// peer out of new requests for a backoff and decides again at once (another peer, a wait for
    /// one, or HTTP, by the idle rules).
    DropPeer,
}

/// The deadline scheduler. See the module documentation for the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduler {
    config: SchedulerConfig,
}

/// A tie-break between equally good peers that differs from one requester to the next (FNV-1a
/// of both ids), so that requesters who know nothing of their peers' rates do not all ask the
/// same one.
pub fn pair_rank(me: &str, peer: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in me.bytes().chain([0u8]).chain(peer.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Quantities shared by the rules, computed once per decision.
struct Frame {
    size: u64,
    deadline: Instant,
    left: Duration,
    http_time: Duration,
    urgent: bool,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The latest instant HTTP must start to finish the segment's `size` bytes before the deadline:
    /// `plays_at − safety_margin − size / http_rate` (saturating).
    pub fn http_start_by(&self, need: &Need) -> Instant {
        let size = self.size(need);
        let deadline = sat_sub(need.plays_at, self.config.safety_margin);
        sat_sub(deadline, transfer_time(size, self.http_rate()))
    }

    /// How many of a swarm of `swarm` peers (this one included) are HTTP-first seeders:
    /// `max(http_first_count, ⌊swarm / PEERS_PER_SEEDER⌋)`.
    pub fn seeder_count(&self, swarm: usize) -> usize {
        self.config.http_first_count.max(swarm / PEERS_PER_SEEDER)
    }

    /// Whether a peer at `seniority` is one of the swarm's HTTP-first seeders: fewer than
    /// [`Scheduler::seeder_count`] peers are older than it.
    pub fn is_seeder(&self, seniority: Seniority) -> bool {
        seniority.older < self.seeder_count(seniority.swarm)
    }

    /// What to do for `need` at `now`.
    ///
    /// `me` is this peer's id (never a candidate), `seniority` where it stands in the swarm (for
    /// the seeder rule); `peers` the candidate peers' state; `transfer` the running peer transfer
    /// for this need, if any; `http_running` whether an HTTP fetch for it is already running.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        now: Instant,
        me: &str,
        seniority: Seniority,
        need: &Need,
        peers: &[PeerState],
        transfer: Option<&Transfer>,
        http_running: bool,
    ) -> Decision {
        if http_running {
            // Rule 1.
            return Decision::Continue(sat_add(now, TRANSFER_POLL));
        }
        let frame = self.frame(now, need);
        match transfer {
            Some(transfer) => self.decide_transfer(now, need, peers, transfer, &frame),
            None => self.decide_idle(now, me, seniority, need, peers, &frame),
        }
    }

    /// Rule 2: nothing is running for this need.
    fn decide_idle(
        &self,
        now: Instant,
        me: &str,
        seniority: Seniority,
        need: &Need,
        peers: &[PeerState],
        f: &Frame,
    ) -> Decision {
        let c = &self.config;
        // 2a: seeders of a fresh live segment go to the gateway.
        if need.fresh_live && f.urgent && self.is_seeder(seniority) {
            return Decision::FetchHttp { from: 0 };
        }
        // 2b: the best candidate peer, if usable.
        if let Some((best, expected)) = self.best_peer(me, peers, f.size) {
            let within_budget = expected.as_secs_f64() <= f.left.as_secs_f64() * self.budget();
            let leaves_fallback = expected.saturating_add(f.http_time) <= f.left;
            if within_budget && leaves_fallback {
                return Decision::FetchFromPeer(best.peer.clone());
            }
        }
        let someone_has = peers.iter().any(|p| p.peer != me && p.has && p.healthy);
        if !f.urgent {
            // 2c: prefetch never uses HTTP.
            if !need.fresh_live && !someone_has {
                return Decision::Skip;
            }
            let becomes_urgent = sat_sub(need.plays_at, c.urgent_window);
            return Decision::WaitUntil(sat_add(now, WAIT_POLL).min(becomes_urgent));
        }
        // 2d: urgent, no usable peer.
        let switch_at = sat_sub(self.http_start_by(need), HTTP_START_SLACK);
        if now >= switch_at || (!need.fresh_live && !someone_has) {
            return Decision::FetchHttp { from: 0 };
        }
        Decision::WaitUntil(sat_add(now, WAIT_POLL).min(switch_at))
    }

    /// Rule 3: a peer transfer is running for this need.
    fn decide_transfer(
        &self,
        now: Instant,
        need: &Need,
        peers: &[PeerState],
        t: &Transfer,
        f: &Frame,
    ) -> Decision {
        let state = peers.iter().find(|p| p.peer == t.peer);
        let peer_ok = state.is_some_and(|p| p.healthy);
        let expected_rate = state
            .and_then(|p| p.rate)
            .and_then(valid_rate)
            .unwrap_or_else(|| self.default_peer_rate());
        let done = t.offset.saturating_add(t.received);
        let remaining = f.size.saturating_sub(done);
        let elapsed = now.saturating_duration_since(t.started);
        let observed_rate = if elapsed.is_zero() || t.received == 0 {
            expected_rate
        } else {
            valid_rate(t.received as f64 / elapsed.as_secs_f64()).unwrap_or(expected_rate)
        };
        let projected_finish = sat_add(now, transfer_time(remaining, observed_rate));
        let stall_after =
            MIN_STALL.max(transfer_time(STALL_CHUNK_BYTES, expected_rate).saturating_mul(2));
        let stalled = now.saturating_duration_since(t.last_progress) > stall_after;
        let failed = stalled || !peer_ok;

        if !f.urgent {
            // 3d: a prefetch is never raced with HTTP.
            if failed {
                return Decision::Skip;
            }
            let becomes_urgent = sat_sub(need.plays_at, self.config.urgent_window);
            return Decision::Continue(recheck(now, becomes_urgent));
        }
        let takeover_by = sat_sub(f.deadline, transfer_time(remaining, self.http_rate()));
        let switch_at = sat_sub(self.http_start_by(need), HTTP_START_SLACK);
        // 3a: a failed peer. While HTTP need not start yet another peer may still do: drop this
        // one and decide again; else HTTP takes over.
        if failed {
            if now < switch_at {
                return Decision::DropPeer;
            }
            return Decision::ReplaceWithHttp { from: done };
        }
        // 3b: a peer projected to miss. Before the switch instant the projection is not trusted
        // (early in a transfer the observed rate holds the request's round trip and the
        // connection's slow start; acting on it dropped most transfers on long, capped paths):
        // keep it and look again by the switch instant, when HTTP can still fetch all of the rest.
        if projected_finish > f.deadline {
            if now < switch_at {
                return Decision::Continue(recheck(now, switch_at));
            }
            return Decision::ReplaceWithHttp { from: done };
        }
        if projected_finish > takeover_by && sat_add(now, HTTP_START_SLACK) >= takeover_by {
            return Decision::RaceHttp { from: done };
        }
        // 3c.
        Decision::Continue(recheck(now, sat_sub(takeover_by, HTTP_START_SLACK)))
    }

    /// The usable-or-not best candidate: `(peer, expected finish time)`.
    fn best_peer<'p>(
        &self,
        me: &str,
        peers: &'p [PeerState],
        size: u64,
    ) -> Option<(&'p PeerState, Duration)> {
        peers
            .iter()
            .filter(|p| p.peer != me && p.has && p.healthy && p.in_flight < MAX_IN_FLIGHT_PER_PEER)
            .map(|p| {
                let rate = p
                    .rate
                    .and_then(valid_rate)
                    .unwrap_or_else(|| self.default_peer_rate());
                (p, transfer_time(size, rate))
            })
            .min_by(|(a, ta), (b, tb)| {
                ta.cmp(tb)
                    .then_with(|| pair_rank(me, &a.peer).cmp(&pair_rank(me, &b.peer)))
                    .then_with(|| a.peer.cmp(&b.peer))
            })
    }

    fn frame(&self, now: Instant, need: &Need) -> Frame {
        let size = self.size(need);
        let deadline = sat_sub(need.plays_at, self.config.safety_margin).max(now);
        Frame {
            size,
            deadline,
            left: deadline.saturating_duration_since(now),
            http_time: transfer_time(size, self.http_rate()),
            urgent: need.plays_at.saturating_duration_since(now) <= self.config.urgent_window,
        }
    }

    fn size(&self, need: &Need) -> u64 {
        need.size.unwrap_or(self.config.default_segment_size)
    }

    fn http_rate(&self) -> f64 {
        valid_rate(self.config.http_rate).unwrap_or(FALLBACK_RATE)
    }

    fn default_peer_rate(&self) -> f64 {
        valid_rate(self.config.default_peer_rate).unwrap_or(FALLBACK_RATE)
    }

    fn budget(&self) -> f64 {
        let b = self.config.peer_time_budget;
        if b.is_nan() {
            FALLBACK_BUDGET
        } else {
            b.clamp(0.0, 1.0)
        }
    }
}

/// Exponentially weighted moving average of a rate in bytes/s:
/// `new = 0.3 × sample + 0.7 × old` with `sample = bytes / elapsed`; an unknown `old` (`None`, ≤ 0,
/// NaN, infinite) gives `sample`. `None` if `elapsed` is zero.
pub fn update_rate(old: Option<f64>, bytes: u64, elapsed: Duration) -> Option<f64> {
    if elapsed.is_zero() {
        return None;
    }
    let sample = bytes as f64 / elapsed.as_secs_f64();
    match old.and_then(valid_rate) {
        Some(old) => Some(RATE_EWMA_ALPHA * sample + (1.0 - RATE_EWMA_ALPHA) * old),
        None => Some(sample),
    }
}

/// A rate usable in divisions: finite and positive.
fn valid_rate(rate: f64) -> Option<f64> {
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// How long `bytes` take at `rate` (which must be valid); `Duration::MAX` if not representable.
fn transfer_time(bytes: u64, rate: f64) -> Duration {
    Duration::try_from_secs_f64(bytes as f64 / rate).unwrap_or(Duration::MAX)
}

/// `target` clamped to `[now + MIN_RECHECK, now + TRANSFER_POLL]`.
fn recheck(now: Instant, target: Instant) -> Instant {
    target
        .max(sat_add(now, MIN_RECHECK))
        .min(sat_add(now, TRANSFER_POLL))
}

/// `t + d`, or the latest representable instant towards it.
fn sat_add(t: Instant, d: Duration) -> Instant {
    saturate(t, d, |t, d| t.checked_add(d))
}

/// `t − d`, or the earliest representable instant towards it.
fn sat_sub(t: Instant, d: Duration) -> Instant {
    saturate(t, d, |t, d| t.checked_sub(d))
}

/// Applies `op(t, d)`; if that overflows, the largest `d' < d` that does not (binary search, only
/// ever taken with absurd inputs).
fn saturate(t: Instant, d: Duration, op: impl Fn(Instant, Duration) -> Option<Instant>) -> Instant {
    if let Some(x) = op(t, d) {
        return x;
    }
    let (mut ok, mut overflows) = (Duration::ZERO, d);
    while overflows - ok > Duration::from_nanos(1) {
        let mid = ok + (overflows - ok) / 2;
        if op(t, mid).is_some() {
            ok = mid;
        } else {
            overflows = mid;
        }
    }
    op(t, ok).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    /// A base instant far enough from the platform's origin that subtracting minutes is fine.
    fn base() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sched() -> Scheduler {
        Scheduler::new(SchedulerConfig::default())
    }

    /// FNV-1a 64 of `me`, a zero byte and `peer` (the browser's `pairRank` checks the same values).
    #[test]
    fn pair_rank_is_fnv1a_of_both_ids() {
        assert_eq!(pair_rank("p001", "p002"), 0x395b_bf79_c091_9ce0);
        assert_eq!(pair_rank("p001", "p003"), 0x395b_c079_c091_9e93);
        assert_eq!(pair_rank("", "x"), 0x0832_5007_b4eb_10c5);
        assert_eq!(pair_rank("é", "peer"), 0x46c5_3d92_5e04_8fe3);
    }

    /// Requesters that know nothing of two holders' rates do not all pick the same one: each
    /// picks by the rank of its own pair, so over many requesters both are asked about as often.
    #[test]
    fn ties_spread_over_requesters() {
        let s = sched();
        let peers = [
            peer("a", true, None, 0, true),
            peer("b", true, None, 0, true),
        ];
        let picked_a = (0..1000)
            .filter(|i| {
                let me = format!("p{i:04}");
                s.best_peer(&me, &peers, MB)
                    .is_some_and(|(p, _)| p.peer == "a")
            })
            .count();
        assert!(
            (350..=650).contains(&picked_a),
            "a picked by {picked_a} of 1000"
        );
    }

    fn need(plays_at: Instant, size: Option<u64>, fresh_live: bool) -> Need {
        Need {
            segment: "/live/720p/42.ts".into(),
            size,
            plays_at,
            fresh_live,
        }
    }

    fn peer(id: &str, has: bool, rate: Option<f64>, in_flight: usize, healthy: bool) -> PeerState {
        PeerState {
            peer: id.into(),
            has,
            rate,
            in_flight,
            healthy,
        }
    }

    fn swarm(n: usize) -> Vec<PeerId> {
        (0..n).map(|i| format!("peer-{i:02}")).collect()
    }

    fn is_http(d: &Decision) -> bool {
        matches!(
            d,
            Decision::FetchHttp { .. }
                | Decision::RaceHttp { .. }
                | Decision::ReplaceWithHttp { .. }
        )
    }

    fn secs(bytes: u64, rate: f64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / rate)
    }

    /// A peer that is never a seeder.
    const NOT_SEEDER: Seniority = Seniority {
        older: usize::MAX,
        swarm: 1,
    };

    /// The seniority of `me` in `swarm` (oldest first); a stranger is never a seeder.
    fn rank(me: &str, swarm: &[PeerId]) -> Seniority {
        match swarm.iter().position(|p| p == me) {
            Some(older) => Seniority {
                older,
                swarm: swarm.len(),
            },
            None => NOT_SEEDER,
        }
    }

    /// Whether `me` seeds in `swarm` with `count` seeders at least.
    fn seeds(me: &str, swarm: &[PeerId], count: usize) -> bool {
        Scheduler::new(SchedulerConfig {
            http_first_count: count,
            ..SchedulerConfig::default()
        })
        .is_seeder(rank(me, swarm))
    }

    /// A peer id in the swarm that is not a seeder (count 2).
    fn non_seeder(swarm: &[PeerId]) -> String {
        swarm.iter().find(|p| !seeds(p, swarm, 2)).cloned().unwrap()
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn coin(&mut self) -> bool {
            self.next() & 1 == 1
        }
    }

    #[test]
    fn config_defaults() {
        let c = SchedulerConfig::default();
        assert_eq!(c.safety_margin, Duration::from_secs(1));
        assert_eq!(c.peer_time_budget, 0.5);
        assert_eq!(c.urgent_window, Duration::from_secs(6));
        assert_eq!(c.default_peer_rate, 2_000_000.0);
        assert_eq!(c.http_rate, 2_000_000.0);
        assert_eq!(c.http_first_count, 1);
        assert_eq!(c.default_segment_size, 1_000_000);
        assert_eq!(Scheduler::new(c.clone()).config(), &c);
    }

    #[test]
    fn http_start_by_is_deadline_minus_http_time() {
        let t0 = base();
        let s = sched();
        // 2 MB at 2 MB/s = 1 s; deadline = plays_at - 1 s.
        let n = need(t0 + Duration::from_secs(10), Some(2 * MB), false);
        assert_eq!(s.http_start_by(&n), t0 + Duration::from_secs(8));
        // Unknown size: 1 MB default = 0.5 s.
        let n = need(t0 + Duration::from_secs(10), None, false);
        assert_eq!(s.http_start_by(&n), t0 + ms(8500));
    }

    #[test]
    fn healthy_fast_peer_is_chosen() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(5), Some(2 * MB), false);
        let peers = [
            peer("slow", true, Some(1_000_000.0), 0, true),
            peer("fast", true, Some(8_000_000.0), 0, true),
            peer("unknown", true, None, 0, true),
            peer("lacks", false, Some(50_000_000.0), 0, true),
        ];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false);
        assert_eq!(d, Decision::FetchFromPeer("fast".into()));
        // Equal expected finish: the smaller id wins, whatever the order.
        let peers = [
            peer("b", true, Some(4_000_000.0), 0, true),
            peer("a", true, Some(4_000_000.0), 1, true),
        ];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false);
        assert_eq!(d, Decision::FetchFromPeer("a".into()));
        // A never-measured peer is assumed at default_peer_rate: 2 MB in 1 s, left 4 s → usable.
        let peers = [peer("new", true, None, 0, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false);
        assert_eq!(d, Decision::FetchFromPeer("new".into()));
    }

    #[test]
    fn unhealthy_peers_are_never_chosen() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(5), Some(MB), false);
        let peers = [
            peer("sick-fast", true, Some(100_000_000.0), 0, false),
            peer("ok", true, Some(3_000_000.0), 0, true),
        ];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false);
        assert_eq!(d, Decision::FetchFromPeer("ok".into()));
        // Only unhealthy peers have it: that is "nobody has it" → HTTP now (urgent, not fresh).
        let peers = [peer("sick", true, Some(100_000_000.0), 0, false)];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false);
        assert_eq!(d, Decision::FetchHttp { from: 0 });
        // … and Skip for a prefetch.
        let far = need(t0 + Duration::from_secs(30), Some(MB), false);
        let d = s.decide(t0, "me", NOT_SEEDER, &far, &peers, None, false);
        assert_eq!(d, Decision::Skip);
        // Random states: an unhealthy peer is never the answer.
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let peers: Vec<PeerState> = (0..rng.below(6))
                .map(|i| {
                    peer(
                        &format!("p{i}"),
                        rng.coin(),
                        Some(1.0 + rng.below(20_000_000) as f64),
                        rng.below(3) as usize,
                        rng.coin(),
                    )
                })
                .collect();
            let n = need(
                t0 + ms(rng.below(30_000)),
                Some(rng.below(4 * MB)),
                rng.coin(),
            );
            if let Decision::FetchFromPeer(id) =
                s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false)
            {
                let p = peers.iter().find(|p| p.peer == id).unwrap();
                assert!(p.healthy && p.has && p.in_flight < MAX_IN_FLIGHT_PER_PEER);
            }
        }
    }

    #[test]
    fn in_flight_limit() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(5), Some(MB), false);
        let busy = peer("busy", true, Some(50_000_000.0), 2, true);
        let d = s.decide(
            t0,
            "me",
            NOT_SEEDER,
            &n,
            std::slice::from_ref(&busy),
            None,
            false,
        );
        // Busy but it has it: wait for it (not past the HTTP switch instant).
        let switch_at = s.http_start_by(&n) - HTTP_START_SLACK;
        match d {
            Decision::WaitUntil(at) => assert!(at > t0 && at <= switch_at),
            other => panic!("expected WaitUntil, got {other:?}"),
        }
        // One transfer running is fine.
        let one = peer("one", true, Some(50_000_000.0), 1, true);
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &[one], None, false);
        assert_eq!(d, Decision::FetchFromPeer("one".into()));
        // A slower idle peer beats a faster busy one.
        let idle = peer("idle", true, Some(3_000_000.0), 0, true);
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &[busy, idle], None, false);
        assert_eq!(d, Decision::FetchFromPeer("idle".into()));
    }

    #[test]
    fn me_is_never_a_candidate() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(5), Some(MB), false);
        let peers = [peer("me", true, Some(50_000_000.0), 0, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false);
        assert_eq!(d, Decision::FetchHttp { from: 0 });
    }

    #[test]
    fn budget_and_fallback_conditions_each_reject() {
        let t0 = base();
        // plays_at 6 s ahead: urgent, deadline 5 s ahead, 2 MB over HTTP = 1 s.
        let n = need(t0 + Duration::from_secs(6), Some(2 * MB), false);
        // expected_finish 3 s: fallback ok (3 + 1 ≤ 5) but over budget (3 > 0.5 × 5).
        let p3 = [peer("p", true, Some(2.0 * MB as f64 / 3.0), 0, true)];
        let d = sched().decide(t0, "me", NOT_SEEDER, &n, &p3, None, false);
        assert!(!matches!(d, Decision::FetchFromPeer(_)), "{d:?}");
        let relaxed = Scheduler::new(SchedulerConfig {
            peer_time_budget: 1.0,
            ..SchedulerConfig::default()
        });
        let d = relaxed.decide(t0, "me", NOT_SEEDER, &n, &p3, None, false);
        assert_eq!(d, Decision::FetchFromPeer("p".into()));
        // expected_finish 4.5 s: within a budget of 1.0 (4.5 ≤ 5) but no HTTP fallback left
        // (4.5 + 1 > 5).
        let p45 = [peer("p", true, Some(2.0 * MB as f64 / 4.5), 0, true)];
        let d = relaxed.decide(t0, "me", NOT_SEEDER, &n, &p45, None, false);
        assert!(!matches!(d, Decision::FetchFromPeer(_)), "{d:?}");
        // 4 s exactly fits both with a budget of 1.0.
        let p4 = [peer("p", true, Some(2.0 * MB as f64 / 4.0), 0, true)];
        let d = relaxed.decide(t0, "me", NOT_SEEDER, &n, &p4, None, false);
        assert_eq!(d, Decision::FetchFromPeer("p".into()));
    }

    #[test]
    fn slow_peer_is_not_chosen_and_http_starts_before_deadline() {
        let t0 = base();
        let s = sched();
        // Urgent: plays 4 s ahead, deadline 3 s ahead, 2 MB over HTTP takes 1 s.
        let n = need(t0 + Duration::from_secs(4), Some(2 * MB), false);
        let deadline = n.plays_at - s.config().safety_margin;
        let http_time = secs(2 * MB, s.config().http_rate);
        // The slow peer would take 4 s: after the deadline.
        let peers = [peer("slow", true, Some(500_000.0), 0, true)];
        assert!(t0 + secs(2 * MB, 500_000.0) > deadline);
        let mut now = t0;
        let started_http = loop {
            match s.decide(now, "me", NOT_SEEDER, &n, &peers, None, false) {
                Decision::FetchHttp { from: 0 } => break now,
                Decision::WaitUntil(at) => {
                    assert!(at > now, "WaitUntil must be in the future");
                    assert!(at <= s.http_start_by(&n), "waits past the HTTP start-by");
                    now = at;
                }
                other => panic!("slow peer: unexpected {other:?} at {:?}", now - t0),
            }
        };
        assert!(started_http <= s.http_start_by(&n));
        assert!(started_http + http_time <= deadline);
        // It did wait for the peer a little (it has it), but not beyond the switch instant.
        assert!(started_http >= s.http_start_by(&n) - HTTP_START_SLACK - WAIT_POLL);
    }

    /// Simulates a transfer from a peer measured at 4 MB/s (so it is chosen) that actually delivers
    /// `actual_rate`; steps of 100 ms. Returns the first non-Continue decision and its time, or
    /// `None` if the peer completed (asserting it completed before the deadline).
    fn simulate_running(
        s: &Scheduler,
        t0: Instant,
        n: &Need,
        actual_rate: f64,
        stops_after: Option<Duration>,
    ) -> Option<(Decision, Instant, u64)> {
        let size = n.size.unwrap();
        let deadline = n.plays_at - s.config().safety_margin;
        let peers = [peer("p", true, Some(4_000_000.0), 1, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, n, &peers, None, false);
        assert_eq!(
            d,
            Decision::FetchFromPeer("p".into()),
            "the peer is chosen first"
        );
        let mut t = Transfer {
            peer: "p".into(),
            started: t0,
            received: 0,
            offset: 0,
            last_progress: t0,
        };
        let mut now = t0;
        loop {
            match s.decide(now, "me", NOT_SEEDER, n, &peers, Some(&t), false) {
                Decision::Continue(at) => assert!(at > now),
                other => return Some((other, now, t.received)),
            }
            now += ms(100);
            let active = stops_after.is_none_or(|stop| now - t0 <= stop);
            if active {
                let total = ((now - t0).as_secs_f64() * actual_rate) as u64;
                let total = total.min(size);
                if total > t.received {
                    t.received = total;
                    t.last_progress = now;
                }
            }
            if t.received >= size {
                assert!(
                    now <= deadline,
                    "peer finished after the deadline unnoticed"
                );
                return None;
            }
            assert!(now < n.plays_at, "never took a decision before playback");
        }
    }

    #[test]
    fn slow_running_transfer_gets_http_in_time() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(4), Some(2 * MB), false);
        let deadline = n.plays_at - s.config().safety_margin;
        let http_rate = s.config().http_rate;
        let switch_at = s.http_start_by(&n) - HTTP_START_SLACK;
        // 300 kB/s: far behind. It delivers until the switch instant, then HTTP fetches the rest.
        let (d, at, got) = simulate_running(&s, t0, &n, 300_000.0, None).unwrap();
        assert_eq!(d, Decision::ReplaceWithHttp { from: got });
        assert!(
            at >= switch_at && at <= switch_at + ms(100),
            "{:?}",
            at - t0
        );
        assert!(at + secs(2 * MB - got, http_rate) <= deadline);
        // Every rate: either the peer finishes before the deadline, or HTTP takes over (or races)
        // in time; a peer that keeps delivering is never dropped.
        let mut raced = false;
        let mut replaced = false;
        for rate_kb in (50..=4000).step_by(10) {
            let rate = rate_kb as f64 * 1000.0;
            if let Some((d, at, got)) = simulate_running(&s, t0, &n, rate, None) {
                match d {
                    Decision::RaceHttp { from } => {
                        raced = true;
                        assert_eq!(from, got)
                    }
                    Decision::ReplaceWithHttp { from } => {
                        replaced = true;
                        assert_eq!(from, got)
                    }
                    other => panic!("rate {rate}: unexpected {other:?}"),
                }
                assert!(
                    at + secs(2 * MB - got, http_rate) <= deadline,
                    "rate {rate}: HTTP at {:?} for {} bytes misses the deadline",
                    at - t0,
                    2 * MB - got
                );
            }
        }
        assert!(raced && replaced, "both takeover kinds exercised");
    }

    #[test]
    fn race_when_peer_cuts_it_close() {
        let t0 = base();
        let s = sched();
        // Deadline 3 s ahead of t0; at 2.9 s the peer has 1.943 MB of 2 MB at 0.67 MB/s: it
        // projects to finish at ~2.985 s (before the deadline) but HTTP for the rest (28.5 ms)
        // must start now to be safe.
        let n = need(t0 + Duration::from_secs(4), Some(2 * MB), false);
        let peers = [peer("p", true, Some(670_000.0), 1, true)];
        let now = t0 + ms(2900);
        let t = Transfer {
            peer: "p".into(),
            started: t0,
            received: 1_943_000,
            offset: 0,
            last_progress: now,
        };
        let d = s.decide(now, "me", NOT_SEEDER, &n, &peers, Some(&t), false);
        assert_eq!(d, Decision::RaceHttp { from: 1_943_000 });
        // Earlier, with plenty of time, the same peer is just continued, with a recheck before the
        // takeover instant.
        let now = t0 + ms(1000);
        let t = Transfer {
            received: 670_000,
            last_progress: now,
            ..t
        };
        let d = s.decide(now, "me", NOT_SEEDER, &n, &peers, Some(&t), false);
        assert_eq!(d, Decision::Continue(now + TRANSFER_POLL));
    }

    #[test]
    fn continue_rechecks_before_takeover() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(4), Some(2 * MB), false);
        let deadline = n.plays_at - s.config().safety_margin;
        let peers = [peer("p", true, Some(2_000_000.0), 1, true)];
        // At 2.5 s, 1.9 MB done at 0.76 MB/s: projects 2.63 s; takeover_by = 3 − 0.05 = 2.95 s.
        let now = t0 + ms(2500);
        let t = Transfer {
            peer: "p".into(),
            started: t0,
            received: 1_900_000,
            offset: 0,
            last_progress: now,
        };
        match s.decide(now, "me", NOT_SEEDER, &n, &peers, Some(&t), false) {
            Decision::Continue(at) => {
                assert!(at > now);
                let takeover_by = deadline - secs(100_000, 2_000_000.0);
                assert!(at <= takeover_by - HTTP_START_SLACK);
            }
            other => panic!("expected Continue, got {other:?}"),
        }
    }

    #[test]
    fn stopped_peer_is_completed_over_http_in_time() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(4), Some(2 * MB), false);
        let deadline = n.plays_at - s.config().safety_margin;
        // 2 MB/s for 400 ms (800 kB), then nothing: with time left, the peer is dropped (the
        // idle rules then try another or HTTP by the switch instant).
        let (d, at, got) = simulate_running(&s, t0, &n, 2_000_000.0, Some(ms(400))).unwrap();
        assert_eq!(got, 800_000);
        assert_eq!(d, Decision::DropPeer);
        assert!(at < s.http_start_by(&n) - HTTP_START_SLACK);
        // Detected within the stall threshold (+ one step) of the last progress.
        assert!(at <= t0 + ms(400) + MIN_STALL + ms(100), "{:?}", at - t0);
        let _ = deadline;
        // With only a few seconds left, the stall is still caught in time: dropped before the
        // switch instant, or the rest over HTTP in time after it.
        let mut kinds = (false, false);
        for stop_ms in (100..=1500).step_by(100) {
            let n = need(t0 + ms(3500), Some(MB), false);
            let deadline = n.plays_at - s.config().safety_margin;
            let switch_at = s.http_start_by(&n) - HTTP_START_SLACK;
            if let Some((d, at, got)) = simulate_running(&s, t0, &n, 1_000_000.0, Some(ms(stop_ms)))
            {
                match d {
                    Decision::DropPeer => {
                        kinds.0 = true;
                        assert!(at < switch_at, "stop at {stop_ms}");
                    }
                    Decision::ReplaceWithHttp { from } => {
                        kinds.1 = true;
                        assert_eq!(from, got, "stop at {stop_ms}");
                        assert!(at >= switch_at);
                        assert!(at + secs(MB - got, s.config().http_rate) <= deadline);
                    }
                    other => panic!("stop at {stop_ms}: {other:?}"),
                }
            }
        }
        assert!(kinds.0, "a stall with time left is dropped");
    }

    #[test]
    fn stall_threshold() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(5), Some(2 * MB), false);
        let peers = [peer("p", true, None, 1, true)];
        let t = Transfer {
            peer: "p".into(),
            started: t0,
            received: 200_000,
            offset: 100,
            last_progress: t0 + ms(100),
        };
        // 100 ms without progress, observed 1 MB/s: on track.
        let now = t0 + ms(200);
        let d = s.decide(now, "me", NOT_SEEDER, &n, &peers, Some(&t), false);
        assert!(matches!(d, Decision::Continue(_)), "{d:?}");
        // 501 ms without progress: stalled. With time left, dropped for another peer; past the
        // switch instant (2.9 s), the rest goes over HTTP from offset + received.
        let t = Transfer {
            received: 1_500_000,
            ..t
        };
        let now = t0 + ms(601);
        let d = s.decide(now, "me", NOT_SEEDER, &n, &peers, Some(&t), false);
        assert_eq!(d, Decision::DropPeer);
        let late = Transfer {
            last_progress: t0 + ms(2400),
            ..t.clone()
        };
        let d = s.decide(
            t0 + ms(2950),
            "me",
            NOT_SEEDER,
            &n,
            &peers,
            Some(&late),
            false,
        );
        assert_eq!(d, Decision::ReplaceWithHttp { from: 1_500_100 });
        // A peer measured slow has a longer stall threshold: 2 × 64 KiB at 100 kB/s ≈ 1.31 s.
        let slow = [peer("p", true, Some(100_000.0), 1, true)];
        let t = Transfer {
            received: 1_999_000,
            offset: 0,
            ..t
        };
        let d = s.decide(now, "me", NOT_SEEDER, &n, &slow, Some(&t), false);
        assert!(matches!(d, Decision::Continue(_)), "{d:?}");
        let d = s.decide(t0 + ms(1500), "me", NOT_SEEDER, &n, &slow, Some(&t), false);
        assert_eq!(d, Decision::DropPeer);
    }

    #[test]
    fn unhealthy_or_missing_transfer_peer_is_replaced() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(5), Some(2 * MB), false);
        let t = Transfer {
            peer: "p".into(),
            started: t0,
            received: 1_000_000,
            offset: 0,
            last_progress: t0 + ms(400),
        };
        let now = t0 + ms(500);
        let sick = [peer("p", true, Some(4_000_000.0), 1, false)];
        let d = s.decide(now, "me", NOT_SEEDER, &n, &sick, Some(&t), false);
        assert_eq!(d, Decision::DropPeer, "time for another peer");
        let d = s.decide(now, "me", NOT_SEEDER, &n, &[], Some(&t), false);
        assert_eq!(d, Decision::DropPeer);
        // Past the switch instant (5 s − 1 s − 0.5 s − 0.1 s), HTTP takes over the rest.
        let late = t0 + ms(3450);
        let d = s.decide(late, "me", NOT_SEEDER, &n, &sick, Some(&t), false);
        assert_eq!(d, Decision::ReplaceWithHttp { from: 1_000_000 });
        let d = s.decide(late, "me", NOT_SEEDER, &n, &[], Some(&t), false);
        assert_eq!(d, Decision::ReplaceWithHttp { from: 1_000_000 });
        let healthy = [peer("p", true, Some(4_000_000.0), 1, true)];
        let d = s.decide(now, "me", NOT_SEEDER, &n, &healthy, Some(&t), false);
        assert!(matches!(d, Decision::Continue(_)), "{d:?}");
        // A prefetch transfer from a failed peer is dropped, not moved to HTTP.
        let far = need(t0 + Duration::from_secs(30), Some(2 * MB), false);
        let d = s.decide(now, "me", NOT_SEEDER, &far, &sick, Some(&t), false);
        assert_eq!(d, Decision::Skip);
        let d = s.decide(
            t0 + ms(2000),
            "me",
            NOT_SEEDER,
            &far,
            &healthy,
            Some(&t),
            false,
        );
        assert_eq!(d, Decision::Skip, "stalled prefetch");
    }

    #[test]
    fn http_running_starts_nothing_else() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + ms(500), Some(2 * MB), true);
        let peers = [peer("p", true, Some(50_000_000.0), 0, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, true);
        assert_eq!(d, Decision::Continue(t0 + TRANSFER_POLL));
        let t = Transfer {
            peer: "p".into(),
            started: t0 - Duration::from_secs(5),
            received: 10,
            offset: 0,
            last_progress: t0 - Duration::from_secs(5),
        };
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, Some(&t), true);
        assert_eq!(d, Decision::Continue(t0 + TRANSFER_POLL));
    }

    #[test]
    fn urgent_with_nobody_having_it_goes_http_now() {
        let t0 = base();
        let s = sched();
        let n = need(t0 + Duration::from_secs(5), Some(MB), false);
        let peers = [peer("p", false, Some(50_000_000.0), 0, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &peers, None, false);
        assert_eq!(d, Decision::FetchHttp { from: 0 });
    }

    #[test]
    fn prefetch_skips_or_waits() {
        let t0 = base();
        let s = sched();
        let plays_at = t0 + Duration::from_secs(6) + ms(100);
        // Nobody has it, not live: Skip.
        let n = need(plays_at, Some(MB), false);
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &[], None, false);
        assert_eq!(d, Decision::Skip);
        // A busy peer has it: wait, but look again when it becomes urgent at the latest.
        let busy = [peer("p", true, None, 2, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, &n, &busy, None, false);
        assert_eq!(d, Decision::WaitUntil(t0 + ms(100)));
        let far = need(t0 + Duration::from_secs(20), Some(MB), false);
        let d = s.decide(t0, "me", NOT_SEEDER, &far, &busy, None, false);
        assert_eq!(d, Decision::WaitUntil(t0 + WAIT_POLL));
        // Fresh live, nobody has it yet: wait for the seeders (even a seeder: not urgent yet).
        let sw = swarm(5);
        let live = need(t0 + Duration::from_secs(20), Some(MB), true);
        for me in &sw {
            let d = s.decide(t0, me, rank(me, &sw), &live, &[], None, false);
            assert_eq!(d, Decision::WaitUntil(t0 + WAIT_POLL));
        }
        // A usable peer: fetched from it.
        let ok = [peer("p", true, None, 0, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, &far, &ok, None, false);
        assert_eq!(d, Decision::FetchFromPeer("p".into()));
    }

    #[test]
    fn prefetch_never_touches_http() {
        let t0 = base();
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let sw = swarm(6);
        for i in 0..20_000 {
            let config = SchedulerConfig {
                safety_margin: ms(rng.below(3000)),
                peer_time_budget: rng.below(150) as f64 / 100.0,
                urgent_window: ms(rng.below(10_000)),
                default_peer_rate: 1.0 + rng.below(5_000_000) as f64,
                http_rate: 1.0 + rng.below(5_000_000) as f64,
                http_first_count: rng.below(7) as usize,
                default_segment_size: rng.below(4 * MB),
            };
            let s = Scheduler::new(config.clone());
            let now = t0 + ms(rng.below(10_000));
            let plays_at = now + config.urgent_window + ms(1 + rng.below(30_000));
            let n = Need {
                segment: format!("/live/{}.ts", rng.below(50)),
                size: rng.coin().then(|| rng.below(8 * MB)),
                plays_at,
                fresh_live: rng.coin(),
            };
            let peers: Vec<PeerState> = (0..rng.below(6))
                .map(|j| PeerState {
                    peer: sw[j as usize].clone(),
                    has: rng.coin(),
                    rate: match rng.below(4) {
                        0 => None,
                        1 => Some(0.0),
                        _ => Some(rng.below(10_000_000) as f64),
                    },
                    in_flight: rng.below(3) as usize,
                    healthy: rng.below(4) != 0,
                })
                .collect();
            let transfer = rng.coin().then(|| {
                let started = now - ms(rng.below(5000));
                let since_start = now - started;
                Transfer {
                    peer: sw[rng.below(6) as usize].clone(),
                    started,
                    received: rng.below(4 * MB),
                    offset: if rng.below(4) == 0 { rng.below(MB) } else { 0 },
                    last_progress: started + since_start.mul_f64(rng.below(101) as f64 / 100.0),
                }
            });
            let me = &sw[rng.below(6) as usize];
            let http_running = rng.below(8) == 0;
            let d = s.decide(
                now,
                me,
                rank(me, &sw),
                &n,
                &peers,
                transfer.as_ref(),
                http_running,
            );
            assert!(!is_http(&d), "case {i}: prefetch got {d:?}");
            match d {
                Decision::WaitUntil(at) | Decision::Continue(at) => assert!(at > now),
                Decision::FetchFromPeer(id) => assert!(transfer.is_none() && id != *me),
                _ => {}
            }
        }
    }

    #[test]
    fn fresh_live_seeder_fetches_http_first() {
        let t0 = base();
        let s = Scheduler::new(SchedulerConfig {
            http_first_count: 2,
            ..SchedulerConfig::default()
        });
        let sw = swarm(10);
        let n = need(t0 + Duration::from_secs(4), Some(MB), true);
        let seeders: Vec<&PeerId> = sw.iter().filter(|p| seeds(p, &sw, 2)).collect();
        assert_eq!(seeders, [&sw[0], &sw[1]]);
        for me in &sw {
            let d = s.decide(t0, me, rank(me, &sw), &n, &[], None, false);
            if seeders.contains(&me) {
                assert_eq!(d, Decision::FetchHttp { from: 0 }, "seeder {me}");
            } else {
                assert!(
                    matches!(d, Decision::WaitUntil(_)),
                    "non-seeder {me}: {d:?}"
                );
            }
        }
        // Not fresh live: nobody seeds, a non-live miss is plain HTTP for everyone.
        let old = need(t0 + Duration::from_secs(4), Some(MB), false);
        for me in &sw {
            let d = s.decide(t0, me, rank(me, &sw), &old, &[], None, false);
            assert_eq!(d, Decision::FetchHttp { from: 0 });
        }
    }

    #[test]
    fn fresh_live_non_seeder_waits_for_peers_then_http_by_start_by() {
        let t0 = base();
        let s = sched();
        let sw = swarm(10);
        let n = need(t0 + Duration::from_secs(5), Some(2 * MB), true);
        let me = non_seeder(&sw);
        let deadline = n.plays_at - s.config().safety_margin;
        let start_by = s.http_start_by(&n);
        assert_eq!(start_by, t0 + Duration::from_secs(3));
        // Nobody has it yet: wait, re-deciding at each WaitUntil, until HTTP is due.
        let mut now = t0;
        let mut waits = 0;
        let http_at = loop {
            match s.decide(now, &me, rank(&me, &sw), &n, &[], None, false) {
                Decision::WaitUntil(at) => {
                    assert!(at > now && at <= start_by);
                    waits += 1;
                    now = at;
                }
                Decision::FetchHttp { from: 0 } => break now,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(waits > 1, "it waited for peers first");
        assert!(http_at <= start_by && http_at >= start_by - HTTP_START_SLACK);
        assert!(http_at + secs(2 * MB, s.config().http_rate) <= deadline);
        // If a seeder gets it meanwhile (its Have arrives), the peer is used instead.
        let seeder = sw.iter().find(|p| seeds(p, &sw, 2)).unwrap();
        let peers = [peer(seeder, true, None, 0, true)];
        let d = s.decide(t0 + ms(500), &me, rank(&me, &sw), &n, &peers, None, false);
        assert_eq!(d, Decision::FetchFromPeer(seeder.clone()));
        // … but not once the peer could no longer finish with an HTTP fallback.
        let d = s.decide(t0 + ms(2950), &me, rank(&me, &sw), &n, &peers, None, false);
        assert_eq!(d, Decision::FetchHttp { from: 0 });
    }

    #[test]
    fn seeders_are_the_most_senior_peers() {
        let sw = swarm(20);
        for count in 0..=21 {
            for (older, p) in sw.iter().enumerate() {
                // Twenty peers make one seeder at least, whatever the configured count.
                assert_eq!(
                    seeds(p, &sw, count),
                    older < count.max(1),
                    "{p} count {count}"
                );
            }
        }
        // Seniority is the order given, whatever the ids.
        let mut reversed = sw.clone();
        reversed.reverse();
        assert!(seeds("peer-19", &reversed, 1));
        assert!(!seeds("peer-00", &reversed, 1));
    }

    #[test]
    fn one_seeder_per_twenty_peers() {
        let s = sched();
        assert_eq!(s.seeder_count(0), 1);
        assert_eq!(s.seeder_count(19), 1);
        assert_eq!(s.seeder_count(40), 2);
        assert_eq!(s.seeder_count(119), 5);
        assert!(s.is_seeder(Seniority {
            older: 4,
            swarm: 100
        }));
        assert!(!s.is_seeder(Seniority {
            older: 5,
            swarm: 100
        }));
        let none = Scheduler::new(SchedulerConfig {
            http_first_count: 0,
            ..SchedulerConfig::default()
        });
        assert!(!none.is_seeder(Seniority { older: 0, swarm: 3 }));
        assert!(!seeds("stranger", &swarm(3), 100));
        assert!(seeds("peer-02", &swarm(3), 3));
    }

    #[test]
    fn update_rate_ewma() {
        assert_eq!(update_rate(None, 1000, Duration::ZERO), None);
        assert_eq!(update_rate(Some(5.0), 1000, Duration::ZERO), None);
        assert_eq!(update_rate(None, 2_000_000, ms(500)), Some(4_000_000.0));
        let r = update_rate(Some(1_000_000.0), 2_000_000, Duration::from_secs(1)).unwrap();
        assert!((r - 1_300_000.0).abs() < 1e-6, "{r}");
        // Converges towards a constant sample.
        let mut r = Some(10_000_000.0);
        for _ in 0..50 {
            r = update_rate(r, 1_000_000, Duration::from_secs(1));
        }
        assert!((r.unwrap() - 1_000_000.0).abs() < 1.0);
        // An unusable old rate counts as unknown.
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            assert_eq!(update_rate(Some(bad), 100, ms(100)), Some(1000.0));
        }
        assert_eq!(update_rate(None, 0, ms(100)), Some(0.0));
    }

    #[test]
    fn bad_rates_are_unknown_and_arithmetic_saturates() {
        let t0 = base();
        let s = sched();
        // A peer with an unusable rate behaves like a never-measured one.
        let n = need(t0 + Duration::from_secs(5), Some(MB), false);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let p = [peer("p", true, Some(bad), 0, true)];
            let q = [peer("p", true, None, 0, true)];
            assert_eq!(
                s.decide(t0, "me", NOT_SEEDER, &n, &p, None, false),
                s.decide(t0, "me", NOT_SEEDER, &n, &q, None, false)
            );
        }
        // Deadline already past: HTTP right now, no peer.
        let past = need(t0 - Duration::from_secs(10), Some(MB), false);
        let fast = [peer("p", true, Some(1e12), 0, true)];
        let d = s.decide(t0, "me", NOT_SEEDER, &past, &fast, None, false);
        assert_eq!(d, Decision::FetchHttp { from: 0 });
        let fresh_past = Need {
            fresh_live: true,
            ..past.clone()
        };
        let d = s.decide(t0, "me", NOT_SEEDER, &fresh_past, &[], None, false);
        assert_eq!(d, Decision::FetchHttp { from: 0 });
        let t = Transfer {
            peer: "p".into(),
            started: t0,
            received: 0,
            offset: 0,
            last_progress: t0,
        };
        let d = s.decide(t0, "me", NOT_SEEDER, &past, &fast, Some(&t), false);
        assert_eq!(d, Decision::ReplaceWithHttp { from: 0 });
        assert!(s.http_start_by(&past) < t0);

        // Absurd configurations and inputs never panic.
        let configs = [
            SchedulerConfig {
                safety_margin: Duration::MAX,
                peer_time_budget: f64::NAN,
                urgent_window: Duration::MAX,
                default_peer_rate: 0.0,
                http_rate: f64::NAN,
                http_first_count: usize::MAX,
                default_segment_size: u64::MAX,
            },
            SchedulerConfig {
                safety_margin: Duration::ZERO,
                peer_time_budget: f64::INFINITY,
                urgent_window: Duration::ZERO,
                default_peer_rate: -1.0,
                http_rate: 0.0,
                http_first_count: 0,
                default_segment_size: 0,
            },
            SchedulerConfig {
                peer_time_budget: -3.0,
                default_peer_rate: f64::INFINITY,
                http_rate: 1e-300,
                ..SchedulerConfig::default()
            },
        ];
        let plays = [
            t0 - Duration::from_secs(100),
            t0,
            t0 + ms(1),
            t0 + Duration::from_secs(1_000_000_000),
        ];
        let sizes = [None, Some(0), Some(1), Some(u64::MAX)];
        let peer_sets = [
            vec![],
            vec![
                peer("a", true, Some(0.0), 0, true),
                peer("b", true, Some(f64::NAN), 1, true),
                peer("c", true, Some(1e-300), 0, true),
                peer("d", true, Some(f64::MAX), 0, true),
            ],
        ];
        let transfers = [
            None,
            Some(Transfer {
                peer: "a".into(),
                started: t0,
                received: u64::MAX,
                offset: u64::MAX,
                last_progress: t0,
            }),
            Some(Transfer {
                peer: "b".into(),
                started: t0 + Duration::from_secs(100),
                received: 5,
                offset: 0,
                last_progress: t0 + Duration::from_secs(100),
            }),
            Some(Transfer {
                peer: "d".into(),
                started: t0 - Duration::from_secs(100),
                received: 1,
                offset: 0,
                last_progress: t0 - Duration::from_secs(100),
            }),
        ];
        let sw = swarm(3);
        for c in configs {
            let s = Scheduler::new(c);
            for plays_at in plays {
                for size in sizes {
                    for fresh_live in [false, true] {
                        let n = Need {
                            segment: "x".into(),
                            size,
                            plays_at,
                            fresh_live,
                        };
                        let _ = s.http_start_by(&n);
                        for peers in &peer_sets {
                            for t in &transfers {
                                for http_running in [false, true] {
                                    let d = s.decide(
                                        t0,
                                        "peer-00",
                                        rank("peer-00", &sw),
                                        &n,
                                        peers,
                                        t.as_ref(),
                                        http_running,
                                    );
                                    if let Decision::WaitUntil(at) | Decision::Continue(at) = d {
                                        assert!(at > t0, "{d:?}");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // The saturating helpers themselves.
        assert!(sat_sub(t0, Duration::MAX) <= t0 - Duration::from_secs(3600));
        assert!(sat_add(t0, Duration::MAX) >= t0 + Duration::from_secs(1_000_000_000));
    }

    // ---------------------------------------------------------------------------------------
    // The shared vectors: tests/vectors/scheduler.json, replayed by the browser engine.

    fn ms_of(base: Instant, t: Instant) -> serde_json::Value {
        let ns = if t >= base {
            (t - base).as_nanos() as f64
        } else {
            -((base - t).as_nanos() as f64)
        };
        serde_json::json!(ns / 1e6)
    }

    fn decision_json(base: Instant, d: &Decision) -> serde_json::Value {
        use serde_json::json;
        match d {
            Decision::FetchFromPeer(p) => json!({ "kind": "FetchFromPeer", "peer": p }),
            Decision::FetchHttp { from } => json!({ "kind": "FetchHttp", "from": from }),
            Decision::RaceHttp { from } => json!({ "kind": "RaceHttp", "from": from }),
            Decision::ReplaceWithHttp { from } => {
                json!({ "kind": "ReplaceWithHttp", "from": from })
            }
            Decision::WaitUntil(at) => json!({ "kind": "WaitUntil", "at": ms_of(base, *at) }),
            Decision::Continue(at) => json!({ "kind": "Continue", "at": ms_of(base, *at) }),
            Decision::Skip => json!({ "kind": "Skip" }),
            Decision::DropPeer => json!({ "kind": "DropPeer" }),
        }
    }

    /// One vector: inputs and the decision. `now` is 0; times are milliseconds from it.
    struct Case {
        name: String,
        config: SchedulerConfig,
        seniority: Seniority,
        need: Need,
        peers: Vec<PeerState>,
        transfer: Option<Transfer>,
        http_running: bool,
    }

    impl Case {
        fn decide(&self, now: Instant) -> Decision {
            Scheduler::new(self.config.clone()).decide(
                now,
                "me",
                self.seniority,
                &self.need,
                &self.peers,
                self.transfer.as_ref(),
                self.http_running,
            )
        }

        /// The same kind of decision a microsecond either side and with rates a hair off: the
        /// case does not sit on a boundary where another language's rounding could tip it.
        fn robust(&self, base: Instant) -> bool {
            let kind = |d: &Decision| std::mem::discriminant(d);
            let here = self.decide(base);
            let mut nudged = Case {
                ..self.clone_case()
            };
            for p in &mut nudged.peers {
                p.rate = p.rate.map(|r| r * (1.0 + 1e-9));
            }
            nudged.config.http_rate *= 1.0 - 1e-9;
            [
                self.decide(base + Duration::from_micros(1)),
                self.decide(base - Duration::from_micros(1)),
                nudged.decide(base),
            ]
            .iter()
            .all(|d| kind(d) == kind(&here) && same_target(d, &here))
        }

        fn clone_case(&self) -> Case {
            Case {
                name: self.name.clone(),
                config: self.config.clone(),
                seniority: self.seniority,
                need: self.need.clone(),
                peers: self.peers.clone(),
                transfer: self.transfer.clone(),
                http_running: self.http_running,
            }
        }

        fn json(&self, base: Instant) -> serde_json::Value {
            use serde_json::json;
            let c = &self.config;
            let d = |d: Duration| d.as_nanos() as f64 / 1e6;
            json!({
                "name": self.name,
                "config": {
                    "safety_margin_ms": d(c.safety_margin),
                    "peer_time_budget": c.peer_time_budget,
                    "urgent_window_ms": d(c.urgent_window),
                    "default_peer_rate": c.default_peer_rate,
                    "http_rate": c.http_rate,
                    "http_first_count": c.http_first_count,
                    "default_segment_size": c.default_segment_size,
                },
                "seniority": { "older": self.seniority.older, "swarm": self.seniority.swarm },
                "need": {
                    "segment": self.need.segment,
                    "size": self.need.size,
                    "plays_at": ms_of(base, self.need.plays_at),
                    "fresh_live": self.need.fresh_live,
                },
                "peers": self.peers.iter().map(|p| json!({
                    "peer": p.peer, "has": p.has, "rate": p.rate, "in_flight": p.in_flight,
                    "healthy": p.healthy,
                })).collect::<Vec<_>>(),
                "transfer": self.transfer.as_ref().map(|t| json!({
                    "peer": t.peer,
                    "started": ms_of(base, t.started),
                    "received": t.received,
                    "offset": t.offset,
                    "last_progress": ms_of(base, t.last_progress),
                })),
                "http_running": self.http_running,
                "decision": decision_json(base, &self.decide(base)),
            })
        }
    }

    fn same_target(a: &Decision, b: &Decision) -> bool {
        match (a, b) {
            (Decision::FetchFromPeer(x), Decision::FetchFromPeer(y)) => x == y,
            (Decision::FetchHttp { from: x }, Decision::FetchHttp { from: y })
            | (Decision::RaceHttp { from: x }, Decision::RaceHttp { from: y })
            | (Decision::ReplaceWithHttp { from: x }, Decision::ReplaceWithHttp { from: y }) => {
                x == y
            }
            _ => true,
        }
    }

    fn vector_cases(base: Instant) -> Vec<Case> {
        let mut cases = Vec::new();
        let at = |ms: i64| {
            if ms >= 0 {
                base + Duration::from_millis(ms as u64)
            } else {
                base - Duration::from_millis((-ms) as u64)
            }
        };
        let n = |plays_ms: i64, size: Option<u64>, fresh: bool| Need {
            segment: "/live/720p/42.ts".into(),
            size,
            plays_at: at(plays_ms),
            fresh_live: fresh,
        };
        let solo = Seniority { older: 1, swarm: 2 };
        let mut push = |name: &str,
                        config: SchedulerConfig,
                        seniority: Seniority,
                        need: Need,
                        peers: Vec<PeerState>,
                        transfer: Option<Transfer>,
                        http_running: bool| {
            cases.push(Case {
                name: name.into(),
                config,
                seniority,
                need,
                peers,
                transfer,
                http_running,
            })
        };
        let d = SchedulerConfig::default;
        push(
            "fastest peer",
            d(),
            solo,
            n(5000, Some(2 * MB), false),
            vec![
                peer("slow", true, Some(1e6), 0, true),
                peer("fast", true, Some(8e6), 0, true),
                peer("lacks", false, Some(5e7), 0, true),
            ],
            None,
            false,
        );
        push(
            "ties go by the rank of the pair (me, peer)",
            d(),
            solo,
            n(5000, Some(2 * MB), false),
            vec![
                peer("b", true, Some(4e6), 0, true),
                peer("a", true, Some(4e6), 1, true),
            ],
            None,
            false,
        );
        // pair_rank("me", "d") < pair_rank("me", "c"): the larger id wins this tie.
        push(
            "ties: the pair's rank, not the id",
            d(),
            solo,
            n(5000, Some(2 * MB), false),
            vec![
                peer("c", true, None, 0, true),
                peer("d", true, None, 0, true),
            ],
            None,
            false,
        );
        push(
            "unhealthy only: HTTP",
            d(),
            solo,
            n(5000, Some(MB), false),
            vec![peer("sick", true, Some(1e8), 0, false)],
            None,
            false,
        );
        push(
            "unhealthy only, prefetch: skip",
            d(),
            solo,
            n(30_000, Some(MB), false),
            vec![peer("sick", true, Some(1e8), 0, false)],
            None,
            false,
        );
        push(
            "busy peer: wait",
            d(),
            solo,
            n(5000, Some(MB), false),
            vec![peer("busy", true, Some(5e7), 2, true)],
            None,
            false,
        );
        push(
            "budget rejects",
            d(),
            solo,
            n(6000, Some(2 * MB), false),
            vec![peer("p", true, Some(2.0 * MB as f64 / 3.0), 0, true)],
            None,
            false,
        );
        push(
            "fallback fits exactly",
            SchedulerConfig {
                peer_time_budget: 1.0,
                ..d()
            },
            solo,
            n(6000, Some(2 * MB), false),
            vec![peer("p", true, Some(5e5), 0, true)],
            None,
            false,
        );
        push(
            "fresh live seeder goes HTTP first",
            SchedulerConfig {
                http_first_count: 2,
                ..d()
            },
            Seniority {
                older: 1,
                swarm: 10,
            },
            n(4000, Some(MB), true),
            vec![],
            None,
            false,
        );
        push(
            "fresh live non-seeder waits",
            SchedulerConfig {
                http_first_count: 2,
                ..d()
            },
            Seniority {
                older: 2,
                swarm: 10,
            },
            n(4000, Some(MB), true),
            vec![],
            None,
            false,
        );
        push(
            "one seeder per twenty",
            d(),
            Seniority {
                older: 4,
                swarm: 100,
            },
            n(4000, Some(MB), true),
            vec![],
            None,
            false,
        );
        push(
            "not one of five seeders",
            d(),
            Seniority {
                older: 5,
                swarm: 100,
            },
            n(4000, Some(MB), true),
            vec![],
            None,
            false,
        );
        push(
            "HTTP running",
            d(),
            solo,
            n(4000, Some(MB), false),
            vec![],
            None,
            true,
        );
        let t = |peer: &str, started: i64, received: u64, progress: i64| Transfer {
            peer: peer.into(),
            started: at(started),
            received,
            offset: 0,
            last_progress: at(progress),
        };
        push(
            "stalled transfer with time left is dropped",
            d(),
            solo,
            n(3000, Some(2 * MB), false),
            vec![peer("p", true, Some(2e6), 1, true)],
            Some(t("p", -2000, 100_000, -1500)),
            false,
        );
        push(
            "stalled transfer past the switch instant is replaced",
            d(),
            solo,
            n(1900, Some(2 * MB), false),
            vec![peer("p", true, Some(2e6), 1, true)],
            Some(t("p", -2000, 100_000, -1500)),
            false,
        );
        push(
            "far-behind transfer before the switch instant goes on",
            d(),
            solo,
            n(4000, Some(2 * MB), false),
            vec![peer("p", true, Some(4e6), 1, true)],
            Some(t("p", -200, 20_000, 0)),
            false,
        );
        push(
            "slow transfer is raced",
            d(),
            solo,
            n(1140, Some(933_333), false),
            vec![peer("p", true, Some(2e6), 1, true)],
            Some(t("p", -1000, 833_333, 0)),
            false,
        );
        push(
            "healthy transfer continues",
            d(),
            solo,
            n(4000, Some(2 * MB), false),
            vec![peer("p", true, Some(4e6), 1, true)],
            Some(t("p", -200, 800_000, 0)),
            false,
        );
        push(
            "prefetch transfer stalled: skip",
            d(),
            solo,
            n(30_000, Some(MB), false),
            vec![peer("p", true, Some(2e6), 1, true)],
            Some(t("p", -3000, 10, -2000)),
            false,
        );
        push(
            "transfer peer gone",
            d(),
            solo,
            n(3000, Some(MB), false),
            vec![],
            Some(t("p", -100, 10, -50)),
            false,
        );
        // Cases that pin constants: one seeder per twenty (38 peers: one seeder, not two), the stall
        // threshold (two 64 KiB chunks at 100 kB/s: 1.31 s), the HTTP start slack (100 ms).
        push(
            "38 peers have one seeder",
            d(),
            Seniority {
                older: 1,
                swarm: 38,
            },
            n(4000, Some(MB), true),
            vec![],
            None,
            false,
        );
        push(
            "silent for 1.3 s at 100 kB/s is not stalled",
            d(),
            solo,
            n(3500, Some(MB), false),
            vec![peer("p", true, Some(100_000.0), 1, true)],
            Some(t("p", -1400, 900_000, -1300)),
            false,
        );
        push(
            "silent for 1.35 s at 100 kB/s is stalled",
            d(),
            solo,
            n(3500, Some(MB), false),
            vec![peer("p", true, Some(100_000.0), 1, true)],
            Some(t("p", -1400, 900_000, -1350)),
            false,
        );
        push(
            "a busy peer has it, HTTP due in 180 ms",
            d(),
            solo,
            n(2180, Some(2 * MB), false),
            vec![peer("busy", true, Some(5e7), 2, true)],
            None,
            false,
        );
        push(
            "deadline past",
            d(),
            solo,
            n(-10_000, Some(MB), false),
            vec![peer("p", true, Some(1e12), 0, true)],
            None,
            false,
        );
        // Random ones, from the same generator as the property tests.
        let mut rng = XorShift(0x005E_ED0F_5C4E_D01E);
        let ids = swarm(6);
        let mut made = 0;
        while made < 400 {
            let config = SchedulerConfig {
                safety_margin: ms(rng.below(3000)),
                peer_time_budget: (1 + rng.below(99)) as f64 / 100.0,
                urgent_window: ms(rng.below(10_000)),
                default_peer_rate: 1.0 + rng.below(5_000_000) as f64,
                http_rate: 1.0 + rng.below(5_000_000) as f64,
                http_first_count: rng.below(4) as usize,
                default_segment_size: 1 + rng.below(4 * MB),
            };
            let plays = rng.below(20_000) as i64 - 2000;
            let need = Need {
                segment: format!("/live/{}.ts", rng.below(50)),
                size: rng.coin().then(|| 1 + rng.below(4 * MB)),
                plays_at: at(plays),
                fresh_live: rng.coin(),
            };
            let peers: Vec<PeerState> = (0..rng.below(5))
                .map(|j| PeerState {
                    peer: ids[j as usize].clone(),
                    has: rng.below(4) != 0,
                    rate: match rng.below(5) {
                        0 => None,
                        1 => Some(0.0),
                        _ => Some((1 + rng.below(10_000_000)) as f64 + 0.25),
                    },
                    in_flight: rng.below(3) as usize,
                    healthy: rng.below(5) != 0,
                })
                .collect();
            let transfer = (rng.below(3) == 0).then(|| {
                let started = rng.below(5000) as i64;
                let progress = rng.below(started as u64 + 1) as i64;
                Transfer {
                    peer: ids[rng.below(6) as usize].clone(),
                    started: at(-started),
                    received: rng.below(4 * MB),
                    offset: if rng.below(4) == 0 { rng.below(MB) } else { 0 },
                    last_progress: at(-progress),
                }
            });
            let case = Case {
                name: format!("random {made}"),
                config,
                seniority: Seniority {
                    older: rng.below(5) as usize,
                    swarm: 1 + rng.below(60) as usize,
                },
                need,
                peers,
                transfer,
                http_running: rng.below(8) == 0,
            };
            if case.robust(base) {
                cases.push(case);
                made += 1;
            }
        }
        cases
    }

    #[test]
    fn scheduler_vectors_match() {
        let base = base();
        // The named cases may sit on a boundary on purpose (exact fits, in whole milliseconds);
        // the random ones never do (see `Case::robust`).
        let cases = vector_cases(base);
        let document = serde_json::json!({
            "description": "Scheduler vectors (peer-assist src/scheduler.rs, Scheduler::decide): with \
                'config', a peer of 'seniority' deciding for 'need' at time 0 with 'peers', 'transfer' \
                and 'http_running' must answer 'decision'. Times are milliseconds from that 'now' \
                (decision instants within 0.001 ms); rates bytes/s; a null rate is unknown. \
                Generated by the Rust scheduler (test scheduler_vectors_match; \
                P2PA_UPDATE_VECTORS=1 rewrites this file) and replayed by the browser engine.",
            "cases": cases.iter().map(|c| c.json(base)).collect::<Vec<_>>(),
        });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/scheduler.json");
        if std::env::var_os("P2PA_UPDATE_VECTORS").is_some() {
            let mut text = String::from("{\n");
            text.push_str(&format!(
                "  \"description\": {},\n  \"cases\": [\n",
                document["description"]
            ));
            let rows: Vec<String> = document["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| format!("    {c}"))
                .collect();
            text.push_str(&rows.join(",\n"));
            text.push_str("\n  ]\n}\n");
            std::fs::write(path, text).unwrap();
            return;
        }
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("scheduler.json")).unwrap();
        let theirs = committed["cases"].as_array().unwrap();
        let ours = document["cases"].as_array().unwrap();
        assert_eq!(ours.len(), theirs.len(), "number of cases");
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(
                a, b,
                "case {} differs from tests/vectors/scheduler.json",
                a["name"]
            );
        }
    }
}
