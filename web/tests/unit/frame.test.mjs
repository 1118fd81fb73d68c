import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  decodeFrame,
  decodeFrameExact,
  encodeFrame,
  encodedLen,
  FrameError,
  MAX_CHUNK_LEN,
  MAX_HAVE_IDS,
} from '../../src/protocol/frame.js';
import { hex, loadVectors, unhex } from './vectors.js';

const vectors = loadVectors('frames.json');

/** The vector's JSON frame as the JS frame object. */
function fromVector(f) {
  const out = { ...f };
  if ('data_hex' in f) {
    out.data = unhex(f.data_hex);
    delete out.data_hex;
  }
  if ('digest_hex' in f) {
    out.digest = unhex(f.digest_hex);
    delete out.digest_hex;
  }
  return out;
}

/** A decoded JS frame in the vector's JSON form. */
function toVector(frame) {
  const out = { ...frame };
  if (frame.data) {
    out.data_hex = hex(frame.data);
    delete out.data;
  }
  if (frame.digest) {
    out.digest_hex = hex(frame.digest);
    delete out.digest;
  }
  return out;
}

function errorKind(fn) {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof FrameError, `expected a FrameError, got ${e}`);
    return e;
  }
  assert.fail('expected an error');
}

test('the vector file has both sections', () => {
  assert.equal(vectors.protocol_version, 1);
  assert.ok(vectors.valid.length >= 19);
  assert.ok(vectors.invalid.length >= 38);
});

for (const v of vectors.valid) {
  test(`valid: ${v.name}`, () => {
    const frame = fromVector(v.frame);
    assert.equal(hex(encodeFrame(frame)), v.hex, 'encodes to the vector bytes');
    const bytes = unhex(v.hex);
    assert.deepEqual(toVector(decodeFrameExact(bytes)), v.frame, 'decodes to the vector frame');
    const { frame: streamed, used } = decodeFrame(concat(bytes, unhex('06000000040000')));
    assert.equal(used, bytes.length, 'stream decoding leaves the next frame');
    assert.deepEqual(toVector(streamed), v.frame);
    // Every proper prefix is Incomplete: the header's missing bytes, then the frame's.
    for (let n = 0; n < bytes.length; n++) {
      const e = errorKind(() => decodeFrameExact(bytes.subarray(0, n)));
      assert.equal(e.kind, 'Incomplete', `prefix of ${n} bytes`);
      assert.equal(e.needed, n < 5 ? 5 - n : bytes.length - n, `needed for a prefix of ${n} bytes`);
    }
  });
}

for (const v of vectors.invalid) {
  test(`invalid: ${v.name} → ${v.error}`, () => {
    const bytes = unhex(v.hex);
    const e = errorKind(() => decodeFrameExact(bytes));
    assert.equal(e.kind, v.error);
    if ('needed' in v) assert.equal(e.needed, v.needed);
    // Stream decoding fails the same way, except that bytes after a whole frame are the next frame.
    if (v.error === 'TrailingBytes') {
      // Inside the declared payload it is an error on a stream too; after it, the next frame.
      let used = null;
      try {
        ({ used } = decodeFrame(bytes));
      } catch (e) {
        assert.equal(e.kind, 'TrailingBytes');
      }
      if (used !== null) assert.ok(used < bytes.length);
    } else {
      assert.equal(errorKind(() => decodeFrame(bytes)).kind, v.error);
    }
  });
}

test('decodeFrameExact accepts an ArrayBuffer (a data channel message)', () => {
  const bytes = unhex(vectors.valid[0].hex);
  assert.equal(decodeFrameExact(bytes.slice().buffer).peer_id, 'p-7f3a9c');
});

test('encoding refuses what a receiver would reject', () => {
  const kind = (frame) => errorKind(() => encodeFrame(frame)).kind;
  assert.equal(kind({ type: 'hello' }), 'UnknownType');
  assert.equal(kind({ type: 'handshake', version: 2, peer_id: 'p' }), 'UnsupportedVersion');
  assert.equal(kind({ type: 'request', request_id: 1, offset: 0, segment: 'no-slash' }), 'InvalidSegmentId');
  assert.equal(kind({ type: 'request', request_id: 1, offset: 0, segment: '/' + 'a'.repeat(1024) }), 'InvalidSegmentId');
  assert.equal(kind({ type: 'have', segments: Array(MAX_HAVE_IDS + 1).fill('/a.ts') }), 'TooManyIds');
  assert.equal(kind({ type: 'chunk', request_id: 1, offset: 0, data: new Uint8Array(MAX_CHUNK_LEN + 1) }), 'ChunkTooLarge');
  // 512 ids of 200 bytes: within the id count, over the 70000-byte frame limit.
  assert.equal(kind({ type: 'have', segments: Array(512).fill('/' + 'b'.repeat(199)) }), 'TooLarge');
  assert.throws(() => encodeFrame({ type: 'cancel', request_id: 2 ** 32 }), RangeError);
  assert.throws(() => encodeFrame({ type: 'request', request_id: 1, offset: -1, segment: '/a' }), RangeError);
});

test('u64 values: safe integers as Numbers, larger ones as BigInt (never equal to a Number)', () => {
  const big = encodeFrame({ type: 'request', request_id: 1, offset: 2n ** 60n, segment: '/a.ts' });
  const f = decodeFrameExact(big);
  assert.equal(typeof f.offset, 'bigint');
  assert.equal(f.offset, 2n ** 60n);
  assert.notEqual(f.offset, 2 ** 60);
  const safe = decodeFrameExact(encodeFrame({ type: 'request', request_id: 1, offset: Number.MAX_SAFE_INTEGER, segment: '/a.ts' }));
  assert.equal(safe.offset, Number.MAX_SAFE_INTEGER);
});

test('chunk data up to the limit round-trips, including empty', () => {
  for (const n of [0, 1, 16384, MAX_CHUNK_LEN]) {
    const data = new Uint8Array(n).map((_, i) => i & 0xff);
    const f = decodeFrameExact(encodeFrame({ type: 'chunk', request_id: 9, offset: 32768, data }));
    assert.deepEqual(f, { type: 'chunk', request_id: 9, offset: 32768, data });
  }
});

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

test('encodedLen is the length encodeFrame gives, for every valid vector', () => {
  for (const v of vectors.valid) {
    const frame = fromVector(v.frame);
    assert.equal(encodedLen(frame), encodeFrame(frame).length, v.name);
  }
});
