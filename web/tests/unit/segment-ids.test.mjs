// Segment ids of byte ranges: the shared vectors (peer-assist/tests/vectors/segment_ids.json) that
// the Rust side (peer_assist::hls::{range_id, split_range_id}) passes too.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { rangeId, splitRangeId } from '../../src/util.js';
import { loadVectors } from './vectors.js';

const v = loadVectors('segment_ids.json');

test('a range of a file names the same segment id as in Rust, and splits back', () => {
  for (const c of v.ranges) {
    assert.equal(rangeId(c.path, c.offset, c.offset + c.length), c.id);
    assert.deepEqual(splitRangeId(c.id), { path: c.path, range: { offset: c.offset, length: c.length } });
  }
  for (const c of v.empty) assert.equal(rangeId(c.path, c.offset, c.offset + c.length), null);
});

test('ids without a valid range suffix are plain paths; odd ones split as in Rust', () => {
  for (const id of v.plain) assert.deepEqual(splitRangeId(id), { path: id, range: null }, id);
  for (const c of v.split) {
    assert.deepEqual(splitRangeId(c.id), { path: c.path, range: { offset: c.offset, length: c.length } }, c.id);
  }
});
