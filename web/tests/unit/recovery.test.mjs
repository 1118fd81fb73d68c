import { test } from 'node:test';
import assert from 'node:assert/strict';

import { MEDIA_ERROR, NETWORK_ERROR, Recovery } from '../../src/recovery.js';

test('fatal network errors restart loading with a doubling delay, reset by a successful load', () => {
  const r = new Recovery({ baseDelayMs: 1000, maxDelayMs: 8000 });
  const delays = [0, 1, 2, 3, 4, 5].map((i) => r.onFatal(NETWORK_ERROR, i * 1000));
  assert.deepEqual(
    delays.map((d) => d.action),
    ['startLoad', 'startLoad', 'startLoad', 'startLoad', 'startLoad', 'startLoad'],
    'never gives up: the origin may come back',
  );
  assert.deepEqual(
    delays.map((d) => d.delayMs),
    [1000, 2000, 4000, 8000, 8000, 8000],
  );
  r.onLoaded();
  assert.deepEqual(r.onFatal(NETWORK_ERROR, 10_000), { action: 'startLoad', delayMs: 1000 });
});

test('fatal media errors: recover, then swap the audio codec, then recreate the player', () => {
  const r = new Recovery({ mediaWindowMs: 3000, baseDelayMs: 500 });
  assert.deepEqual(r.onFatal(MEDIA_ERROR, 0), { action: 'recoverMedia', delayMs: 0 });
  assert.deepEqual(r.onFatal(MEDIA_ERROR, 1000), { action: 'swapAndRecover', delayMs: 0 });
  assert.deepEqual(r.onFatal(MEDIA_ERROR, 2000), { action: 'recreate', delayMs: 500 });
  // Errors far apart are each recovered on their own.
  assert.equal(r.onFatal(MEDIA_ERROR, 10_000).action, 'recoverMedia');
  assert.equal(r.onFatal(MEDIA_ERROR, 14_000).action, 'recoverMedia');
});

test('other fatal errors recreate the player', () => {
  const r = new Recovery({ baseDelayMs: 700 });
  assert.deepEqual(r.onFatal('muxError', 0), { action: 'recreate', delayMs: 700 });
  assert.deepEqual(r.onFatal('otherError', 0), { action: 'recreate', delayMs: 700 });
});
