// The parts of the node core that the traces do not reach, as the Rust unit tests check them
// (peer-assist/src/node/core/store.rs and uploads.rs): store eviction, the upload token bucket, and
// a node that does not upload.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { NodeCore, Store, TokenBucket } from '../../src/core.js';

const bytes = (n) => new Uint8Array(n);

test('the store is bounded by count and bytes, least recently used out', () => {
  const s = new Store(3, 100);
  for (const id of ['a', 'b', 'c']) s.put(id, bytes(10), 'x', 'http');
  s.touch('a');
  s.put('d', bytes(10), 'x', 'p2p');
  assert.equal(s.contains('b'), false, 'b was the least recently used');
  assert.deepEqual([...s.newest()].map(([id]) => id), ['d', 'a', 'c']);
  s.put('big', bytes(95), 'x', 'http');
  assert.equal(s.entries.size, 1, 'bytes bound: only the newest fits');
  assert.equal(s.bytes, 95);
  s.put('big', bytes(5), 'x', 'http');
  assert.equal(s.bytes, 5, 'a replaced entry is not counted twice');
});

test('the upload bucket paces to its rate; a take may go into debt', () => {
  const t0 = 1000;
  const b = new TokenBucket(1000, 1000, t0);
  assert.equal(b.tryTake(1000, t0), null, 'the burst is free');
  assert.equal(b.tryTake(500, t0), null, 'a take may go into debt');
  assert.equal(b.tryTake(1, t0), t0 + 500);
  assert.equal(b.tryTake(1, t0 + 500), null);
  const unlimited = new TokenBucket(0, 0, t0);
  assert.equal(unlimited.tryTake(2 ** 30, t0), null);
  assert.equal(unlimited.tryTake(2 ** 30, t0 + 1), null);
});

test('upload off: an empty Have, every request answered Absent (no trace has it)', () => {
  const core = new NodeCore({ upload: false }, 'p-1', 0);
  const digest = 'ab'.repeat(32);
  core.handle({ type: 'signal', message: { type: 'peers', peers: [{ peer_id: 'p-2', transports: ['webrtc'] }] } }, 0);
  core.store.put('/s/1.ts', bytes(10), digest, 'http');
  core.handle({ type: 'signal', message: { type: 'digests', playlist: '/s.m3u8', segments: [{ id: '/s/1.ts', sha256: digest, size: 10 }] } }, 0);
  core.handle({ type: 'link_up', link: 1, peer: 'p-2', initiated: false, max_frame: 70_005 }, 1);
  core.handle({ type: 'frame', link: 1, frame: { type: 'request', request_id: 4, segment: '/s/1.ts', offset: 0 } }, 2);
  const frames = [];
  for (let o = core.pollOutput(); o; o = core.pollOutput()) if (o.type === 'send') frames.push(o.frame);
  assert.deepEqual(frames, [
    { type: 'have', segments: [] },
    { type: 'have', segments: [] },
    { type: 'absent', request_id: 4 },
  ]);
});

test('linkStats is a read-only copy of the open links, by link id, and changes no output', () => {
  const core = new NodeCore({}, 'p-1', 0);
  core.handle({ type: 'signal', message: { type: 'peers', peers: [{ peer_id: 'p-2', transports: ['webrtc'] }, { peer_id: 'p-3', transports: ['webrtc'] }] } }, 0);
  core.handle({ type: 'link_up', link: 7, peer: 'p-3', initiated: true, max_frame: 70_005 }, 1);
  core.handle({ type: 'link_up', link: 2, peer: 'p-2', initiated: false, max_frame: 70_005 }, 1);
  core.handle({ type: 'frame', link: 2, frame: { type: 'have', segments: ['/s/1.ts', '/s/2.ts'] } }, 2);
  const outputs = [];
  for (let o = core.pollOutput(); o; o = core.pollOutput()) outputs.push(o);
  const before = core.pollTimeout();
  const stats = core.linkStats();
  assert.deepEqual(stats, [
    { link: 2, peer: 'p-2', initiated: false, rate: null, inFlight: 0, advertised: 2 },
    { link: 7, peer: 'p-3', initiated: true, rate: null, inFlight: 0, advertised: 0 },
  ]);
  stats[0].rate = 1;
  stats[0].advertised = 99;
  assert.equal(core.links.get(2).rate, null, 'a copy');
  assert.equal(core.links.get(2).has.size, 2);
  assert.equal(core.pollOutput(), undefined, 'no output');
  assert.equal(core.pollTimeout(), before);
  core.handle({ type: 'link_down', link: 7 }, 3);
  assert.deepEqual(core.linkStats().map((l) => l.peer), ['p-2']);
});
