import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_MAX_STORE_BYTES, SegmentStore } from '../../src/store.js';

const seg = (id, n) => ({ id, bytes: new Uint8Array(n), sha256: 'x', source: 'http', timing: { start: 0, first: 0, end: 0 } });

test('the default bound is 64 MiB', () => {
  assert.equal(DEFAULT_MAX_STORE_BYTES, 64 * 1024 * 1024);
  assert.equal(new SegmentStore().maxBytes, 64 * 1024 * 1024);
});

test('the total stays within the byte bound, evicting the least recently used', () => {
  const s = new SegmentStore(1000);
  s.put(seg('/a', 400));
  s.put(seg('/b', 400));
  assert.equal(s.bytes, 800);
  assert.ok(s.get('/a'), 'reading /a makes /b the least recently used');
  s.put(seg('/c', 400));
  assert.equal(s.bytes, 800);
  assert.ok(s.has('/a') && s.has('/c') && !s.has('/b'));
  // Peeking (an upload) does not refresh: /a stays older than /c.
  s.peek('/a');
  s.put(seg('/d', 300));
  assert.ok(!s.has('/a') && s.has('/c') && s.has('/d'));
  assert.equal(s.bytes, 700);
});

test('one put can evict several segments; a segment over the whole bound is refused', () => {
  const s = new SegmentStore(1000);
  for (let i = 0; i < 10; i++) s.put(seg(`/s${i}`, 100));
  assert.equal(s.size, 10);
  s.put(seg('/big', 950));
  assert.deepEqual([...s.entries.keys()], ['/big']);
  assert.equal(s.bytes, 950);
  assert.equal(s.put(seg('/huge', 1001)), false);
  assert.ok(!s.has('/huge') && s.has('/big'));
});

test('storing an id again replaces it and its size', () => {
  const s = new SegmentStore(1000);
  s.put(seg('/a', 600));
  s.put(seg('/a', 100));
  assert.equal(s.size, 1);
  assert.equal(s.bytes, 100);
  assert.equal(s.delete('/a'), true);
  assert.equal(s.bytes, 0);
  assert.equal(s.delete('/a'), false);
});

test('newestIds lists by storage order, newest first, whatever was read since', () => {
  const s = new SegmentStore(10_000);
  for (const id of ['/1', '/2', '/3']) s.put(seg(id, 10));
  s.get('/1');
  assert.deepEqual(s.newestIds(), ['/3', '/2', '/1']);
  s.put(seg('/1', 10));
  assert.deepEqual(s.newestIds(), ['/1', '/3', '/2']);
});

test('changes are reported (announcements follow them)', () => {
  const s = new SegmentStore(100);
  let changes = 0;
  s.onChange = () => changes++;
  s.put(seg('/a', 10));
  s.delete('/a');
  s.clear();
  assert.equal(changes, 3);
});
