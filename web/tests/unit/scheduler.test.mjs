// The deadline scheduler: the important cases of peer-assist/src/scheduler.rs's tests, ported with
// times in milliseconds, plus the senior-peer seeder rule.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  DEFAULT_SCHEDULER_CONFIG,
  HTTP_START_SLACK_MS,
  MAX_IN_FLIGHT_PER_PEER,
  MIN_STALL_MS,
  Scheduler,
  TRANSFER_POLL_MS,
  WAIT_POLL_MS,
  isHttpDecision,
  isSeeder,
  seederCount,
  updateRate,
} from '../../src/scheduler.js';

const MB = 1_000_000;
const T0 = 1_000_000; // an arbitrary "now" in ms

const sched = (c = {}) => new Scheduler(c);
const need = (playsAt, size, freshLive = false) => ({ segment: '/live/720p/42.ts', size, playsAt, freshLive });
const peer = (id, has, rate, inFlight, healthy) => ({ peer: id, has, rate, inFlight, healthy });
/** ms for `bytes` at `rate` bytes/s */
const ms = (bytes, rate) => (bytes / rate) * 1000;

/** decide() with nothing running and no seeding, the common case of the Rust tests. */
const idle = (s, now, n, peers, seeder = false) => s.decide(now, 'me', n, peers, null, false, seeder);

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

test('defaults are the Rust SchedulerConfig defaults', () => {
  assert.deepEqual({ ...DEFAULT_SCHEDULER_CONFIG }, {
    safetyMarginMs: 1000,
    peerTimeBudget: 0.5,
    urgentWindowMs: 6000,
    defaultPeerRate: 2_000_000,
    httpRate: 2_000_000,
    defaultSegmentSize: 1_000_000,
  });
  assert.equal(MAX_IN_FLIGHT_PER_PEER, 2);
  assert.equal(WAIT_POLL_MS, 250);
  assert.equal(TRANSFER_POLL_MS, 200);
  assert.equal(HTTP_START_SLACK_MS, 100);
  assert.equal(MIN_STALL_MS, 500);
});

test('httpStartBy is the deadline minus the HTTP time', () => {
  const s = sched();
  assert.equal(s.httpStartBy(need(T0 + 10_000, 2 * MB)), T0 + 8000);
  assert.equal(s.httpStartBy(need(T0 + 10_000, null)), T0 + 8500); // 1 MB default size
});

test('a healthy fast peer is chosen; ties go to the smaller id', () => {
  const s = sched();
  const n = need(T0 + 5000, 2 * MB);
  const peers = [
    peer('slow', true, 1_000_000, 0, true),
    peer('fast', true, 8_000_000, 0, true),
    peer('unknown', true, null, 0, true),
    peer('lacks', false, 50_000_000, 0, true),
  ];
  assert.deepEqual(idle(s, T0, n, peers), { kind: 'FetchFromPeer', peer: 'fast' });
  const tie = [peer('b', true, 4_000_000, 0, true), peer('a', true, 4_000_000, 1, true)];
  assert.deepEqual(idle(s, T0, n, tie), { kind: 'FetchFromPeer', peer: 'a' });
  // Never measured: assumed at the default rate, 2 MB in 1 s of 4 s left.
  assert.deepEqual(idle(s, T0, n, [peer('new', true, null, 0, true)]), { kind: 'FetchFromPeer', peer: 'new' });
});

test('unhealthy peers are never chosen', () => {
  const s = sched();
  const n = need(T0 + 5000, MB);
  const mixed = [peer('sick-fast', true, 100_000_000, 0, false), peer('ok', true, 3_000_000, 0, true)];
  assert.deepEqual(idle(s, T0, n, mixed), { kind: 'FetchFromPeer', peer: 'ok' });
  const sick = [peer('sick', true, 100_000_000, 0, false)];
  assert.deepEqual(idle(s, T0, n, sick), { kind: 'FetchHttp', from: 0 }, 'urgent, nobody usable has it');
  assert.deepEqual(idle(s, T0, need(T0 + 30_000, MB), sick), { kind: 'Skip' }, 'a prefetch is skipped');
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

test('in-flight limit: a busy peer is waited for, not past the HTTP switch', () => {
  const s = sched();
  const n = need(T0 + 5000, MB);
  const busy = peer('busy', true, 50_000_000, 2, true);
  const d = idle(s, T0, n, [busy]);
  assert.equal(d.kind, 'WaitUntil');
  assert.ok(d.at > T0 && d.at <= s.httpStartBy(n) - HTTP_START_SLACK_MS);
  assert.deepEqual(idle(s, T0, n, [peer('one', true, 50_000_000, 1, true)]), { kind: 'FetchFromPeer', peer: 'one' });
  assert.deepEqual(idle(s, T0, n, [busy, peer('idle', true, 3_000_000, 0, true)]), { kind: 'FetchFromPeer', peer: 'idle' });
});

test('this peer is never its own candidate', () => {
  assert.deepEqual(idle(sched(), T0, need(T0 + 5000, MB), [peer('me', true, 50_000_000, 0, true)]), { kind: 'FetchHttp', from: 0 });
});

test('the budget and the HTTP-fallback conditions each reject a peer', () => {
  // Urgent: plays 6 s ahead, deadline 5 s ahead, 2 MB over HTTP = 1 s.
  const n = need(T0 + 6000, 2 * MB);
  const p3 = [peer('p', true, (2 * MB) / 3, 0, true)]; // 3 s: fallback fits, over the 0.5 budget
  assert.notEqual(idle(sched(), T0, n, p3).kind, 'FetchFromPeer');
  const relaxed = sched({ peerTimeBudget: 1 });
  assert.deepEqual(idle(relaxed, T0, n, p3), { kind: 'FetchFromPeer', peer: 'p' });
  const p45 = [peer('p', true, (2 * MB) / 4.5, 0, true)]; // 4.5 s + 1 s of HTTP > 5 s
  assert.notEqual(idle(relaxed, T0, n, p45).kind, 'FetchFromPeer');
  const p4 = [peer('p', true, (2 * MB) / 4, 0, true)];
  assert.deepEqual(idle(relaxed, T0, n, p4), { kind: 'FetchFromPeer', peer: 'p' });
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
    const d = s.decide(now, 'me', n, peers, t, false, false);
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

test('a slow running transfer gets HTTP in time (race or replace), at every rate', () => {
  const s = sched();
  const n = need(T0 + 4000, 2 * MB);
  const deadline = n.playsAt - 1000;
  const far = simulateRunning(s, n, 300_000);
  assert.deepEqual(far.d, { kind: 'ReplaceWithHttp', from: far.got });
  assert.ok(far.at <= T0 + 100, 'a far-behind peer is replaced right away');
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

test('race when the peer cuts it close; continue with a recheck when there is time', () => {
  const s = sched();
  const n = need(T0 + 4000, 2 * MB);
  const peers = [peer('p', true, 670_000, 1, true)];
  let now = T0 + 2900;
  let t = { peer: 'p', started: T0, received: 1_943_000, offset: 0, lastProgress: now };
  assert.deepEqual(s.decide(now, 'me', n, peers, t, false, false), { kind: 'RaceHttp', from: 1_943_000 });
  now = T0 + 1000;
  t = { ...t, received: 670_000, lastProgress: now };
  assert.deepEqual(s.decide(now, 'me', n, peers, t, false, false), { kind: 'Continue', at: now + TRANSFER_POLL_MS });
});

test('a stopped peer is completed over HTTP in time, from the bytes it delivered', () => {
  const s = sched();
  const n = need(T0 + 4000, 2 * MB);
  const r = simulateRunning(s, n, 2_000_000, 400);
  assert.equal(r.got, 800_000);
  assert.deepEqual(r.d, { kind: 'ReplaceWithHttp', from: 800_000 });
  assert.ok(r.at <= T0 + 400 + MIN_STALL_MS + 100);
  assert.ok(r.at + ms(2 * MB - r.got, 2_000_000) <= n.playsAt - 1000);
});

test('stall threshold: 500 ms, longer for a peer measured slow', () => {
  const s = sched();
  const n = need(T0 + 5000, 2 * MB);
  const unknown = [peer('p', true, null, 1, true)];
  let t = { peer: 'p', started: T0, received: 200_000, offset: 100, lastProgress: T0 + 100 };
  assert.equal(s.decide(T0 + 200, 'me', n, unknown, t, false, false).kind, 'Continue');
  t = { ...t, received: 1_500_000 };
  assert.deepEqual(s.decide(T0 + 601, 'me', n, unknown, t, false, false), { kind: 'ReplaceWithHttp', from: 1_500_100 });
  const slow = [peer('p', true, 100_000, 1, true)]; // 2 × 64 KiB at 100 kB/s ≈ 1.31 s
  t = { ...t, received: 1_999_000, offset: 0 };
  assert.equal(s.decide(T0 + 601, 'me', n, slow, t, false, false).kind, 'Continue');
  assert.deepEqual(s.decide(T0 + 1500, 'me', n, slow, t, false, false), { kind: 'ReplaceWithHttp', from: 1_999_000 });
});

test('an unhealthy or vanished transfer peer is replaced; a prefetch is dropped instead', () => {
  const s = sched();
  const n = need(T0 + 5000, 2 * MB);
  const t = { peer: 'p', started: T0, received: 1_000_000, offset: 0, lastProgress: T0 + 400 };
  const sick = [peer('p', true, 4_000_000, 1, false)];
  const healthy = [peer('p', true, 4_000_000, 1, true)];
  assert.deepEqual(s.decide(T0 + 500, 'me', n, sick, t, false, false), { kind: 'ReplaceWithHttp', from: 1_000_000 });
  assert.deepEqual(s.decide(T0 + 500, 'me', n, [], t, false, false), { kind: 'ReplaceWithHttp', from: 1_000_000 });
  assert.equal(s.decide(T0 + 500, 'me', n, healthy, t, false, false).kind, 'Continue');
  const far = need(T0 + 30_000, 2 * MB);
  assert.deepEqual(s.decide(T0 + 500, 'me', far, sick, t, false, false), { kind: 'Skip' });
  assert.deepEqual(s.decide(T0 + 2000, 'me', far, healthy, t, false, false), { kind: 'Skip' }, 'stalled prefetch');
});

test('HTTP already running starts nothing else', () => {
  const s = sched();
  const n = need(T0 + 500, 2 * MB, true);
  const peers = [peer('p', true, 50_000_000, 0, true)];
  assert.deepEqual(s.decide(T0, 'me', n, peers, null, true, true), { kind: 'Continue', at: T0 + TRANSFER_POLL_MS });
  const t = { peer: 'p', started: T0 - 5000, received: 10, offset: 0, lastProgress: T0 - 5000 };
  assert.deepEqual(s.decide(T0, 'me', n, peers, t, true, false), { kind: 'Continue', at: T0 + TRANSFER_POLL_MS });
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
    const d = sc.decide(now, `peer-${r.below(6)}`, nd, peers, t, r.below(8) === 0, r.coin());
    assert.ok(!isHttpDecision(d), `case ${i}: a prefetch got ${d.kind}`);
    if (d.kind === 'WaitUntil' || d.kind === 'Continue') assert.ok(d.at > now, `case ${i}`);
  }
});

test('urgent and nobody has it: HTTP now', () => {
  assert.deepEqual(idle(sched(), T0, need(T0 + 5000, MB), [peer('p', false, 50_000_000, 0, true)]), { kind: 'FetchHttp', from: 0 });
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

test('senior-peer seeder rule: fewer than max(1, ⌊swarm/20⌋) older peers', () => {
  assert.equal(seederCount(1), 1);
  assert.equal(seederCount(19), 1);
  assert.equal(seederCount(39), 1);
  assert.equal(seederCount(40), 2);
  assert.equal(seederCount(100), 5);
  // The first peer of a swarm seeds, the second does not.
  assert.equal(isSeeder(0, 1), true);
  assert.equal(isSeeder(0, 2), true);
  assert.equal(isSeeder(1, 2), false);
  // 40 peers: the two most senior seed.
  assert.equal(isSeeder(1, 40), true);
  assert.equal(isSeeder(2, 40), false);
  // The seniors leave (older count falls back): the next in line seeds.
  assert.equal(isSeeder(0, 30), true);
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
  assert.deepEqual(s.decide(T0, 'me', past, fast, t, false, false), { kind: 'ReplaceWithHttp', from: 0 });
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
                const d = sc.decide(T0, 'peer-00', { segment: 'x', size, playsAt, freshLive }, peers, t, http, freshLive);
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
