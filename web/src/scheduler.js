// The deadline scheduler: for each segment the player needs, where to fetch it from (a peer or the
// gateway over HTTP), and when to give up on a peer. A pure port of peer-assist/src/scheduler.rs
// (`Scheduler::decide`): no I/O, no clock reads; times are numbers in milliseconds passed in, rates
// are bytes per second, sizes bytes.
//
// Who fetches a fresh live segment over HTTP first (the seeder rule, PROTOCOL.md §4.1: the seeders
// are the most senior peers) is decided here too, from the caller's view of the swarm: `decide` takes
// a `Seniority` {older, swarm}, and `isSeeder(seniority)` is older < max(httpFirstCount, ⌊swarm / 20⌋).
//
// The contract is peer-assist/tests/vectors/scheduler.json, generated from the Rust scheduler and
// replayed by tests/unit/scheduler.test.mjs: a change on either side that alters a decision fails.
//
// Quantities for a need evaluated at `now` with config `c`:
//   deadline = max(playsAt − c.safetyMarginMs, now); left = deadline − now
//   size = need.size ?? c.defaultSegmentSize; httpTime = size / httpRate
//   urgent = playsAt − now ≤ c.urgentWindowMs (else the need is a prefetch)
//   httpStartBy = playsAt − c.safetyMarginMs − httpTime; httpSwitchAt = httpStartBy − HTTP_START_SLACK_MS
//
// Rules (see the Rust module documentation for the reasoning):
// 1. HTTP already running: Continue(now + 200 ms).
// 2. Nothing running:
//    a. fresh live, urgent and isSeeder(seniority): FetchHttp{from: 0};
//    b. the best candidate peer (has, healthy, inFlight < 2; smallest expected finish, ties by id) if
//       expected ≤ left × budget and expected + httpTime ≤ left: FetchFromPeer;
//    c. prefetch: Skip if not fresh live and no healthy peer has it, else WaitUntil(min(now + 250,
//       playsAt − urgentWindow));
//    d. urgent: FetchHttp{from: 0} if now ≥ httpSwitchAt or (not fresh live and nobody has it), else
//       WaitUntil(min(now + 250, httpSwitchAt)).
// 3. A peer transfer running (done = offset + received):
//    urgent: stalled/unhealthy/gone → DropPeer while now < httpSwitchAt, else
//    ReplaceWithHttp{from: done}; projected finish after the deadline → Continue(clamp(httpSwitchAt,
//    now + 10, now + 200)) while now < httpSwitchAt, else ReplaceWithHttp; projected after
//    takeoverBy and now + 100 ms ≥ takeoverBy → RaceHttp{from: done};
//    else Continue(clamp(takeoverBy − 100 ms, now + 10 ms, now + 200 ms)).
//    prefetch: stalled/unhealthy/gone → Skip; else Continue(clamp(playsAt − urgentWindow, now + 10, now + 200)).
// Every WaitUntil/Continue instant is strictly after `now`.

import { compareIds } from './util.js';

/** A peer with this many transfers running is not asked for more. */
export const MAX_IN_FLIGHT_PER_PEER = 2;
/** How often a waiting need is looked at again, at most (ms). */
export const WAIT_POLL_MS = 250;
/** How often a running transfer is looked at again, at most (ms). */
export const TRANSFER_POLL_MS = 200;
/** The shortest delay of a WaitUntil/Continue from a running transfer (ms). */
export const MIN_RECHECK_MS = 10;
/** HTTP starts this much before the latest instant it could (ms). */
export const HTTP_START_SLACK_MS = 100;
/** A transfer without progress for longer than this (at least) is stalled (ms). */
export const MIN_STALL_MS = 500;
/** Chunk size assumed for stall detection: stalled after twice its time at the expected rate. */
export const STALL_CHUNK_BYTES = 64 * 1024;
/** Weight of a new sample in `updateRate`. */
export const RATE_EWMA_ALPHA = 0.3;
/** In a large swarm, one peer in this many fetches each new live segment over HTTP first. */
export const PEERS_PER_SEEDER = 20;

const FALLBACK_RATE = 2_000_000;
const FALLBACK_BUDGET = 0.5;

/** Defaults of the scheduler's tuning (the Rust SchedulerConfig defaults). */
export const DEFAULT_SCHEDULER_CONFIG = Object.freeze({
  /** Work must finish this much before the segment plays (ms). */
  safetyMarginMs: 1000,
  /** A peer is used only if its expected finish is within this fraction of the time left. */
  peerTimeBudget: 0.5,
  /** Needs playing further away than this are prefetches: peers only, never HTTP (ms). */
  urgentWindowMs: 6000,
  /** Rate assumed for a peer never measured (bytes/s). */
  defaultPeerRate: 2_000_000,
  /** HTTP rate estimate (bytes/s), to know when HTTP must start at the latest. */
  httpRate: 2_000_000,
  /** How many peers of a swarm fetch a new live segment over HTTP first at least (the seeders). */
  httpFirstCount: 1,
  /** Size assumed when the segment size is unknown (bytes). */
  defaultSegmentSize: 1_000_000,
});

/**
 * @typedef {object} Need
 * @property {string} segment    segment id (its path)
 * @property {number|null} [size] its size from the gateway's digest, if known
 * @property {number} playsAt    when the player needs the whole segment (ms)
 * @property {boolean} freshLive a live segment just published
 *
 * @typedef {object} Seniority where this peer stands in its swarm (PROTOCOL.md §4.1)
 * @property {number} older  healthy peers older than this one (listed in its first `peers` message
 *   after `welcome`, still listed, not banned)
 * @property {number} swarm  peers in the swarm, this one included
 *
 * @typedef {object} PeerState
 * @property {string} peer
 * @property {boolean} has        advertised the segment (and it is verifiable)
 * @property {number|null} [rate] measured bytes/s, null if never measured
 * @property {number} inFlight    transfers running from this peer
 * @property {boolean} healthy    false after a mismatch: never picked
 *
 * @typedef {object} Transfer
 * @property {string} peer
 * @property {number} started      (ms)
 * @property {number} received     bytes so far, contiguous from `offset`
 * @property {number} offset       first byte requested
 * @property {number} lastProgress when bytes last arrived (`started` before the first bytes)
 *
 * @typedef {{kind: "FetchFromPeer", peer: string}
 *   | {kind: "FetchHttp", from: number}
 *   | {kind: "RaceHttp", from: number}
 *   | {kind: "ReplaceWithHttp", from: number}
 *   | {kind: "WaitUntil", at: number}
 *   | {kind: "Continue", at: number}
 *   | {kind: "Skip"}
 *   | {kind: "DropPeer"}} Decision
 */

/** Whether a decision starts an HTTP fetch. */
export const isHttpDecision = (d) => d.kind === 'FetchHttp' || d.kind === 'RaceHttp' || d.kind === 'ReplaceWithHttp';

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const U64 = (1n << 64n) - 1n;
const utf8 = new TextEncoder();

/**
 * A tie-break between equally good peers that differs from one requester to the next (FNV-1a,
 * 64 bits, over the UTF-8 of `me`, a zero byte and `peer`; the Rust `pair_rank`), so that
 * requesters who know nothing of their peers' rates do not all ask the same one.
 * @returns {bigint}
 */
export function pairRank(me, peer) {
  let h = FNV_OFFSET;
  const eat = (b) => {
    h = ((h ^ BigInt(b)) * FNV_PRIME) & U64;
  };
  for (const b of utf8.encode(me)) eat(b);
  eat(0);
  for (const b of utf8.encode(peer)) eat(b);
  return h;
}

export class Scheduler {
  /** @param {Partial<typeof DEFAULT_SCHEDULER_CONFIG>} [config] */
  constructor(config = {}) {
    this.config = { ...DEFAULT_SCHEDULER_CONFIG, ...config };
  }

  /** The latest instant HTTP must start to finish the whole segment before the deadline (ms). */
  httpStartBy(need) {
    return need.playsAt - this.config.safetyMarginMs - transferTime(this.size(need), this.httpRate());
  }

  /**
   * How many of a swarm of `swarm` peers (this one included) are HTTP-first seeders:
   * max(httpFirstCount, ⌊swarm / PEERS_PER_SEEDER⌋).
   * @param {number} swarm
   */
  seederCount(swarm) {
    return Math.max(this.config.httpFirstCount, Math.floor(swarm / PEERS_PER_SEEDER));
  }

  /**
   * Whether a peer at `seniority` is one of the swarm's HTTP-first seeders: fewer than
   * `seederCount(seniority.swarm)` peers are older than it.
   * @param {Seniority} seniority
   */
  isSeeder(seniority) {
    return seniority.older < this.seederCount(seniority.swarm);
  }

  /**
   * What to do for `need` at `now`.
   * @param {number} now
   * @param {string} me          this peer's id (never a candidate)
   * @param {Seniority} seniority where this peer stands in its swarm (for the seeder rule)
   * @param {Need} need
   * @param {PeerState[]} peers
   * @param {Transfer|null} transfer the running peer transfer for this need
   * @param {boolean} httpRunning   an HTTP fetch for it is running
   * @returns {Decision}
   */
  decide(now, me, seniority, need, peers, transfer, httpRunning) {
    if (httpRunning) return { kind: 'Continue', at: now + TRANSFER_POLL_MS };
    const f = this.frame(now, need);
    return transfer ? this.decideTransfer(now, need, peers, transfer, f) : this.decideIdle(now, me, seniority, need, peers, f);
  }

  /** Rule 2: nothing is running for this need. */
  decideIdle(now, me, seniority, need, peers, f) {
    const c = this.config;
    if (need.freshLive && f.urgent && this.isSeeder(seniority)) return { kind: 'FetchHttp', from: 0 };
    const best = this.bestPeer(me, peers, f.size);
    if (best) {
      const withinBudget = best.expected <= f.left * this.budget();
      const leavesFallback = best.expected + f.httpTime <= f.left;
      if (withinBudget && leavesFallback) return { kind: 'FetchFromPeer', peer: best.peer };
    }
    const someoneHas = peers.some((p) => p.peer !== me && p.has && p.healthy);
    if (!f.urgent) {
      if (!need.freshLive && !someoneHas) return { kind: 'Skip' };
      return { kind: 'WaitUntil', at: Math.min(now + WAIT_POLL_MS, need.playsAt - c.urgentWindowMs) };
    }
    const switchAt = this.httpStartBy(need) - HTTP_START_SLACK_MS;
    if (now >= switchAt || (!need.freshLive && !someoneHas)) return { kind: 'FetchHttp', from: 0 };
    return { kind: 'WaitUntil', at: Math.min(now + WAIT_POLL_MS, switchAt) };
  }

  /** Rule 3: a peer transfer is running for this need. */
  decideTransfer(now, need, peers, t, f) {
    const state = peers.find((p) => p.peer === t.peer);
    const peerOk = Boolean(state?.healthy);
    const expectedRate = validRate(state?.rate) ?? this.defaultPeerRate();
    const done = t.offset + t.received;
    const remaining = Math.max(0, f.size - done);
    const elapsed = Math.max(0, now - t.started);
    const observedRate =
      elapsed === 0 || t.received === 0 ? expectedRate : (validRate(t.received / (elapsed / 1000)) ?? expectedRate);
    const projectedFinish = now + transferTime(remaining, observedRate);
    const stallAfter = Math.max(MIN_STALL_MS, 2 * transferTime(STALL_CHUNK_BYTES, expectedRate));
    const stalled = Math.max(0, now - t.lastProgress) > stallAfter;
    const failed = stalled || !peerOk;

    if (!f.urgent) {
      if (failed) return { kind: 'Skip' };
      return { kind: 'Continue', at: recheck(now, need.playsAt - this.config.urgentWindowMs) };
    }
    const takeoverBy = f.deadline - transferTime(remaining, this.httpRate());
    const switchAt = this.httpStartBy(need) - HTTP_START_SLACK_MS;
    // A failed peer: while HTTP need not start yet another peer may still do.
    if (failed) return now < switchAt ? { kind: 'DropPeer' } : { kind: 'ReplaceWithHttp', from: done };
    // Projected to miss: not trusted before the switch instant (round trip, slow start).
    if (projectedFinish > f.deadline) {
      return now < switchAt ? { kind: 'Continue', at: recheck(now, switchAt) } : { kind: 'ReplaceWithHttp', from: done };
    }
    if (projectedFinish > takeoverBy && now + HTTP_START_SLACK_MS >= takeoverBy) return { kind: 'RaceHttp', from: done };
    return { kind: 'Continue', at: recheck(now, takeoverBy - HTTP_START_SLACK_MS) };
  }

  /** The usable-or-not best candidate: {peer, expected} (expected finish time in ms), or null. */
  bestPeer(me, peers, size) {
    let best = null;
    for (const p of peers) {
      if (p.peer === me || !p.has || !p.healthy || p.inFlight >= MAX_IN_FLIGHT_PER_PEER) continue;
      const expected = transferTime(size, validRate(p.rate) ?? this.defaultPeerRate());
      if (!best || expected < best.expected) {
        best = { peer: p.peer, expected };
      } else if (expected === best.expected) {
        const rank = pairRank(me, p.peer);
        const bestRank = pairRank(me, best.peer);
        if (rank < bestRank || (rank === bestRank && compareIds(p.peer, best.peer) < 0)) best = { peer: p.peer, expected };
      }
    }
    return best;
  }

  frame(now, need) {
    const size = this.size(need);
    const deadline = Math.max(need.playsAt - this.config.safetyMarginMs, now);
    return {
      size,
      deadline,
      left: deadline - now,
      httpTime: transferTime(size, this.httpRate()),
      urgent: Math.max(0, need.playsAt - now) <= this.config.urgentWindowMs,
    };
  }

  size(need) {
    return need.size ?? this.config.defaultSegmentSize;
  }

  httpRate() {
    return validRate(this.config.httpRate) ?? FALLBACK_RATE;
  }

  defaultPeerRate() {
    return validRate(this.config.defaultPeerRate) ?? FALLBACK_RATE;
  }

  budget() {
    const b = this.config.peerTimeBudget;
    return Number.isNaN(b) ? FALLBACK_BUDGET : Math.min(1, Math.max(0, b));
  }
}

/**
 * Exponentially weighted moving average of a rate in bytes/s: 0.3 × sample + 0.7 × old, with
 * sample = bytes / elapsed; an unknown old rate gives the sample. null if elapsed is not positive.
 * @param {number|null|undefined} old
 * @param {number} bytes
 * @param {number} elapsedMs
 */
export function updateRate(old, bytes, elapsedMs) {
  if (!(elapsedMs > 0)) return null;
  const sample = bytes / (elapsedMs / 1000);
  const prev = validRate(old);
  return prev === null ? sample : RATE_EWMA_ALPHA * sample + (1 - RATE_EWMA_ALPHA) * prev;
}

/** A rate usable in divisions (finite and positive), else null. */
function validRate(rate) {
  return typeof rate === 'number' && Number.isFinite(rate) && rate > 0 ? rate : null;
}

/** Milliseconds `bytes` take at `rate` bytes/s (Infinity when not representable). */
function transferTime(bytes, rate) {
  const ms = (bytes / rate) * 1000;
  return Number.isFinite(ms) ? ms : Infinity;
}

/** `target` clamped to [now + MIN_RECHECK_MS, now + TRANSFER_POLL_MS]. */
function recheck(now, target) {
  return Math.min(Math.max(target, now + MIN_RECHECK_MS), now + TRANSFER_POLL_MS);
}
