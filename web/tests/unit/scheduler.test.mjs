// The deadline scheduler. Its behaviour is defined by peer-assist/tests/vectors/scheduler.json,
// generated from the Rust scheduler: every case is replayed here, so a JS port that drifts (a rule, a
// constant, a default) fails. The tests after the replay are properties over many inputs and small
// simulations that no single vector shows (HTTP always in time, a prefetch never HTTP, no throw).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  pairRank,
  DEFAULT_SCHEDULER_CONFIG,
  HTTP_START_SLACK_MS,
  MAX_IN_FLIGHT_PER_PEER,
  MIN_STALL_MS,
  Scheduler,
  WAIT_POLL_MS,
  isHttpDecision,
  updateRate,
} from '../../src/scheduler.js';
import { loadVectors } from './vectors.js';

const vectors = loadVectors('scheduler.json');

/** The Rust SchedulerConfig of a vector, as the JS config. */
const jsConfig = (c) => ({
  safetyMarginMs: c.safety_margin_ms,
  peerTimeBudget: c.peer_time_budget,
  urgentWindowMs: c.urgent_window_ms,
  defaultPeerRate: c.default_peer_rate,
  httpRate: c.http_rate,
  httpFirstCount: c.http_first_count,
  defaultSegmentSize: c.default_segment_size,
});

/** Rust uses "me" as the deciding peer's id in every vector. */
function replay(v) {
  const need = { segment: v.need.segment, size: v.need.size, playsAt: v.need.plays_at, freshLive: v.need.fresh_live };
  const peers = v.peers.map((p) => ({ peer: p.peer, has: p.has, rate: p.rate, inFlight: p.in_flight, healthy: p.healthy }));
  const t = v.transfer && {
    peer: v.transfer.peer,
    started: v.transfer.started,
    received: v.transfer.received,
    offset: v.transfer.offset,
    lastProgress: v.transfer.last_progress,
  };
  return new Scheduler(jsConfig(v.config)).decide(0, 'me', v.seniority, need, peers, t, v.http_running);
}

test(`scheduler.json: all ${vectors.cases.length} cases decide as the Rust scheduler`, () => {
  assert.ok(vectors.cases.length >= 400, 'the vector file is complete');
  const wrong = [];
  for (const v of vectors.cases) {
    const got = replay(v);
    const want = v.decision;
    const same =
      got.kind === want.kind &&
      got.peer === want.peer &&
      got.from === want.from &&
      ('at' in want ? Math.abs(got.at - want.at) <= 0.001 : !('at' in got));
    if (!same) wrong.push(`${v.name}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
  }
  assert.deepEqual(wrong, [], `${wrong.length} cases differ:\n${wrong.slice(0, 20).join('\n')}`);
});

test('the JS defaults are the Rust defaults (the config of the vectors built from SchedulerConfig::default)', () => {
  const defaults = vectors.cases.find((v) => v.name === 'fastest peer');
  assert.deepEqual(jsConfig(defaults.config), { ...DEFAULT_SCHEDULER_CONFIG });
  assert.deepEqual(new Scheduler().config, { ...DEFAULT_SCHEDULER_CONFIG });
});

const MB = 1_000_000;
const T0 = 1_000_000; // an arbitrary "now" in ms
/** The first peer of its swarm (a seeder), and a peer with an older one (not a seeder). */
const SENIOR = Object.freeze({ older: 0, swarm: 1 });
const NEWER = Object.freeze({ older: 1, swarm: 2 });

const sched = (c = {}) => new Scheduler(c);
const need = (playsAt, size, freshLive = false) => ({ segment: '/live/720p/42.ts', size, playsAt, freshLive });
const peer = (id, has, rate, inFlight, healthy) => ({ peer: id, has, rate, inFlight, healthy });
/** ms for `bytes` at `rate` bytes/s */
const ms = (bytes, rate) => (bytes / rate) * 1000;

/** decide() with nothing running, as a seeder or not. */
const idle = (s, now, n, peers, seeder = false) => s.decide(now, 'me', seeder ? SENIOR : NEWER, n, peers, null, false);

/** xorshift64 for reproducible random cases. */
function rng(seed) {
  let x = BigInt(seed);
  const next = () => {
    x ^= (x << 13n) & 0xffff_ffff_ffff_ffffn;
    x ^= x >> 7n;
    x ^= (x << 17n) & 0xffff_ffff_ffff_ffffn;
    return x;
  };
  return {
    below: (n) => Number(next() % BigInt(n)),
    coin: () => (next() & 1n) === 1n,
  };
}

test('this peer is never its own candidate (no vector names a peer after the decider)', () => {
  assert.deepEqual(idle(sched(), T0, need(T0 + 5000, MB), [peer('me', true, 50_000_000, 0, true)]), { kind: 'FetchHttp', from: 0 });
});

test('unhealthy peers are never chosen', () => {
  const s = sched();
  const r = rng(0x9e3779b97f4a7c15n);
  for (let i = 0; i < 2000; i++) {
    const peers = Array.from({ length: r.below(6) }, (_, j) =>
      peer(`p${j}`, r.coin(), 1 + r.below(20_000_000), r.below(3), r.coin()),
    );
    const d = idle(s, T0, need(T0 + r.below(30_000), r.below(4 * MB), r.coin()), peers);
    if (d.kind === 'FetchFromPeer') {
      const p = peers.find((x) => x.peer === d.peer);
      assert.ok(p.healthy && p.has && p.inFlight < MAX_IN_FLIGHT_PER_PEER);
    }
  }
});

test('a slow peer is not chosen and HTTP starts before its latest instant', () => {
  const s = sched();
  const n = need(T0 + 4000, 2 * MB);
  const deadline = n.playsAt - 1000;
  const peers = [peer('slow', true, 500_000, 0, true)];
  let now = T0;
  let waits = 0;
  for (;;) {
    const d = idle(s, now, n, peers);
    if (d.kind === 'FetchHttp') break;
    assert.equal(d.kind, 'WaitUntil');
    assert.ok(d.at > now && d.at <= s.httpStartBy(n));
    now = d.at;
    waits++;
  }
  assert.ok(waits > 0, 'it waited for the peer that has it');
  assert.ok(now <= s.httpStartBy(n) && now >= s.httpStartBy(n) - HTTP_START_SLACK_MS - WAIT_POLL_MS);
  assert.ok(now + ms(2 * MB, 2_000_000) <= deadline);
});

/**
 * A transfer from a peer measured at 4 MB/s (so it is chosen) that delivers `rate`, in 100 ms steps.
 * Returns the first decision other than Continue with its time and the bytes received, or null if
 * the peer completed (checked to be before the deadline).
 */
function simulateRunning(s, n, rate, stopsAfter = null) {
  const deadline = n.playsAt - s.config.safetyMarginMs;
  const peers = [peer('p', true, 4_000_000, 1, true)];
  assert.deepEqual(idle(s, T0, n, peers), { kind: 'FetchFromPeer', peer: 'p' });
  const t = { peer: 'p', started: T0, received: 0, offset: 0, lastProgress: T0 };
  let now = T0;
  for (;;) {
    const d = s.decide(now, 'me', NEWER, n, peers, t, false);
    if (d.kind !== 'Continue') return { d, at: now, got: t.received };
    assert.ok(d.at > now);
    now += 100;
    if (stopsAfter === null || now - T0 <= stopsAfter) {
      const total = Math.min(n.size, Math.floor(((now - T0) / 1000) * rate));
      if (total > t.received) {
        t.received = total;
        t.lastProgress = now;
      }
    }
    if (t.received >= n.size) {
      assert.ok(now <= deadline, 'the peer finished after the deadline unnoticed');
      return null;
    }
    assert.ok(now < n.playsAt, 'never decided before playback');
  }
}

test('a slow running transfer delivers until the switch instant, then HTTP takes over in time', () => {
  const s = sched();
  const n = need(T0 + 4000, 2 * MB);
  const deadline = n.playsAt - 1000;
  const switchAt = s.httpStartBy(n) - 100;
  const far = simulateRunning(s, n, 300_000);
  assert.deepEqual(far.d, { kind: 'ReplaceWithHttp', from: far.got });
  assert.ok(far.at >= switchAt && far.at <= switchAt + 100, 'replaced at the switch instant');
  let raced = false;
  let replaced = false;
  for (let kb = 50; kb <= 4000; kb += 10) {
    const r = simulateRunning(s, n, kb * 1000);
    if (!r) continue;
    assert.ok(r.d.kind === 'RaceHttp' || r.d.kind === 'ReplaceWithHttp', `${kb} kB/s: ${r.d.kind}`);
    assert.equal(r.d.from, r.got);
    raced ||= r.d.kind === 'RaceHttp';
    replaced ||= r.d.kind === 'ReplaceWithHttp';
    assert.ok(r.at + ms(2 * MB - r.got, 2_000_000) <= deadline, `${kb} kB/s: HTTP misses the deadline`);
  }
  assert.ok(raced && replaced, 'both takeover kinds happen');
});

test('a stopped peer is dropped while there is time, else completed over HTTP from its bytes', () => {
  const s = sched();
  const n = need(T0 + 4000, 2 * MB);
  const r = simulateRunning(s, n, 2_000_000, 400);
  assert.equal(r.got, 800_000);
  assert.deepEqual(r.d, { kind: 'DropPeer' });
  assert.ok(r.at <= T0 + 400 + MIN_STALL_MS + 100);
  // The same stall noticed past the switch instant: HTTP takes over from the bytes delivered.
  const late = { peer: 'p', started: T0, received: 800_000, offset: 0, lastProgress: T0 + 1300 };
  const peers = [peer('p', true, 4_000_000, 1, true)];
  const d = s.decide(T0 + 1950, 'me', NEWER, n, peers, late, false);
  assert.deepEqual(d, { kind: 'ReplaceWithHttp', from: 800_000 });
  assert.ok(T0 + 1950 + ms(2 * MB - 800_000, 2_000_000) <= n.playsAt - 1000);
});

test('prefetch: skip when nobody has it, wait for a busy peer or the seeders, never HTTP', () => {
  const s = sched();
  const n = need(T0 + 6100, MB);
  assert.deepEqual(idle(s, T0, n, []), { kind: 'Skip' });
  const busy = [peer('p', true, null, 2, true)];
  assert.deepEqual(idle(s, T0, n, busy), { kind: 'WaitUntil', at: T0 + 100 }, 'look again when it becomes urgent');
  const far = need(T0 + 20_000, MB);
  assert.deepEqual(idle(s, T0, far, busy), { kind: 'WaitUntil', at: T0 + WAIT_POLL_MS });
  // Fresh live and not urgent: even a seeder waits (the segment is not due yet).
  assert.deepEqual(idle(s, T0, need(T0 + 20_000, MB, true), [], true), { kind: 'WaitUntil', at: T0 + WAIT_POLL_MS });
  assert.deepEqual(idle(s, T0, far, [peer('p', true, null, 0, true)]), { kind: 'FetchFromPeer', peer: 'p' });

  const r = rng(0xdeadbeefcafef00dn);
  for (let i = 0; i < 20_000; i++) {
    const c = {
      safetyMarginMs: r.below(3000),
      peerTimeBudget: r.below(150) / 100,
      urgentWindowMs: r.below(10_000),
      defaultPeerRate: 1 + r.below(5_000_000),
      httpRate: 1 + r.below(5_000_000),
      defaultSegmentSize: r.below(4 * MB),
      httpFirstCount: r.below(4),
    };
    const sc = sched(c);
    const now = T0 + r.below(10_000);
    const nd = need(now + c.urgentWindowMs + 1 + r.below(30_000), r.coin() ? r.below(8 * MB) : null, r.coin());
    const peers = Array.from({ length: r.below(6) }, (_, j) =>
      peer(`peer-${j}`, r.coin(), [null, 0, r.below(10_000_000)][r.below(3)], r.below(3), r.below(4) !== 0),
    );
    const started = now - r.below(5000);
    const t = r.coin()
      ? { peer: `peer-${r.below(6)}`, started, received: r.below(4 * MB), offset: r.below(4) === 0 ? r.below(MB) : 0, lastProgress: started + ((now - started) * r.below(101)) / 100 }
      : null;
    const d = sc.decide(now, `peer-${r.below(6)}`, r.coin() ? SENIOR : NEWER, nd, peers, t, r.below(8) === 0);
    assert.ok(!isHttpDecision(d), `case ${i}: a prefetch got ${d.kind}`);
    if (d.kind === 'WaitUntil' || d.kind === 'Continue') assert.ok(d.at > now, `case ${i}`);
  }
});

test('a seeder fetches a fresh live segment at once; a non-seeder waits for peers, then HTTP by its start-by', () => {
  const s = sched();
  const n = need(T0 + 5000, 2 * MB, true);
  assert.deepEqual(idle(s, T0, n, [], true), { kind: 'FetchHttp', from: 0 }, 'seeder');
  const startBy = s.httpStartBy(n);
  assert.equal(startBy, T0 + 3000);
  let now = T0;
  let waits = 0;
  for (;;) {
    const d = idle(s, now, n, [], false);
    if (d.kind === 'FetchHttp') break;
    assert.equal(d.kind, 'WaitUntil');
    assert.ok(d.at > now && d.at <= startBy);
    now = d.at;
    waits++;
  }
  assert.ok(waits > 1, 'the non-seeder waited for the seeders');
  assert.ok(now <= startBy && now >= startBy - HTTP_START_SLACK_MS);
  assert.ok(now + ms(2 * MB, 2_000_000) <= n.playsAt - 1000);
  // The seeder announces it meanwhile: fetched from it…
  const seeder = [peer('senior', true, null, 0, true)];
  assert.deepEqual(idle(s, T0 + 500, n, seeder), { kind: 'FetchFromPeer', peer: 'senior' });
  // …but not once the peer could no longer finish with an HTTP fallback.
  assert.deepEqual(idle(s, T0 + 2950, n, seeder), { kind: 'FetchHttp', from: 0 });
  // Not fresh live: nobody seeds; a miss that no peer has is HTTP for everyone.
  assert.deepEqual(idle(s, T0, need(T0 + 4000, MB, false), [], false), { kind: 'FetchHttp', from: 0 });
});

test('updateRate: EWMA of 0.3', () => {
  assert.equal(updateRate(null, 1000, 0), null);
  assert.equal(updateRate(5, 1000, 0), null);
  assert.equal(updateRate(null, 2_000_000, 500), 4_000_000);
  assert.ok(Math.abs(updateRate(1_000_000, 2_000_000, 1000) - 1_300_000) < 1e-6);
  let r = 10_000_000;
  for (let i = 0; i < 50; i++) r = updateRate(r, 1_000_000, 1000);
  assert.ok(Math.abs(r - 1_000_000) < 1);
  for (const bad of [0, -5, NaN, Infinity]) assert.equal(updateRate(bad, 100, 100), 1000);
});

test('unusable rates count as unknown; absurd inputs never throw and look again later', () => {
  const s = sched();
  const n = need(T0 + 5000, MB);
  for (const bad of [0, -1, NaN, Infinity, -Infinity]) {
    assert.deepEqual(idle(s, T0, n, [peer('p', true, bad, 0, true)]), idle(s, T0, n, [peer('p', true, null, 0, true)]));
  }
  const past = need(T0 - 10_000, MB);
  const fast = [peer('p', true, 1e12, 0, true)];
  assert.deepEqual(idle(s, T0, past, fast), { kind: 'FetchHttp', from: 0 }, 'deadline passed: HTTP now');
  assert.deepEqual(idle(s, T0, { ...past, freshLive: true }, []), { kind: 'FetchHttp', from: 0 });
  const t = { peer: 'p', started: T0, received: 0, offset: 0, lastProgress: T0 };
  assert.deepEqual(s.decide(T0, 'me', NEWER, past, fast, t, false), { kind: 'ReplaceWithHttp', from: 0 });
  const configs = [
    { safetyMarginMs: Infinity, peerTimeBudget: NaN, urgentWindowMs: Infinity, defaultPeerRate: 0, httpRate: NaN, defaultSegmentSize: Number.MAX_SAFE_INTEGER },
    { safetyMarginMs: 0, peerTimeBudget: Infinity, urgentWindowMs: 0, defaultPeerRate: -1, httpRate: 0, defaultSegmentSize: 0 },
    { peerTimeBudget: -3, defaultPeerRate: Infinity, httpRate: 1e-300 },
  ];
  const peerSets = [[], [peer('a', true, 0, 0, true), peer('b', true, NaN, 1, true), peer('c', true, 1e-300, 0, true), peer('d', true, Number.MAX_VALUE, 0, true)]];
  const transfers = [
    null,
    { peer: 'a', started: T0, received: Number.MAX_SAFE_INTEGER, offset: Number.MAX_SAFE_INTEGER, lastProgress: T0 },
    { peer: 'b', started: T0 + 100_000, received: 5, offset: 0, lastProgress: T0 + 100_000 },
    { peer: 'd', started: T0 - 100_000, received: 1, offset: 0, lastProgress: T0 - 100_000 },
  ];
  for (const c of configs) {
    const sc = sched(c);
    for (const playsAt of [T0 - 100_000, T0, T0 + 1, T0 + 1e12]) {
      for (const size of [null, 0, 1, Number.MAX_SAFE_INTEGER]) {
        for (const freshLive of [false, true]) {
          for (const peers of peerSets) {
            for (const t of transfers) {
              for (const http of [false, true]) {
                const d = sc.decide(T0, 'peer-00', freshLive ? SENIOR : NEWER, { segment: 'x', size, playsAt, freshLive }, peers, t, http);
                assert.ok(typeof d.kind === 'string');
                if (d.kind === 'WaitUntil' || d.kind === 'Continue') assert.ok(d.at > T0, JSON.stringify(d));
                if ('from' in d) assert.ok(Number.isFinite(d.from) && d.from >= 0);
              }
            }
          }
        }
      }
    }
  }
});

test('pairRank is FNV-1a 64 of both ids, as the Rust pair_rank', () => {
  assert.equal(pairRank('p001', 'p002'), 0x395bbf79c0919ce0n);
  assert.equal(pairRank('p001', 'p003'), 0x395bc079c0919e93n);
  assert.equal(pairRank('', 'x'), 0x08325007b4eb10c5n);
  assert.equal(pairRank('é', 'peer'), 0x46c53d925e048fe3n);
});
