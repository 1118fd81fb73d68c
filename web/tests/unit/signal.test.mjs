import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  decodeClient,
  decodeServer,
  encodeClient,
  encodeServer,
  MAX_SIGNAL_LEN,
  SignalError,
  utf8Length,
} from '../../src/protocol/signal.js';
import { loadVectors, vectorText } from './vectors.js';

const vectors = loadVectors('signals.json');

function errorOf(fn) {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SignalError, `expected a SignalError, got ${e}`);
    return e;
  }
  assert.fail('expected an error');
}

test('the vector file has every section', () => {
  assert.equal(vectors.protocol_version, 1);
  for (const k of ['client', 'server', 'invalid_client', 'invalid_server']) assert.ok(vectors[k].length > 0, k);
});

for (const v of vectors.client) {
  test(`client: ${v.name}`, () => {
    const text = vectorText(v);
    const msg = decodeClient(text);
    assert.equal(encodeClient(msg), text, 're-encodes to the identical text');
    // The type is checked by direction: a client message is not a server message.
    assert.throws(() => decodeServer(text), SignalError);
  });
}

for (const v of vectors.server) {
  test(`server: ${v.name}`, () => {
    const text = vectorText(v);
    const msg = decodeServer(text);
    assert.equal(encodeServer(msg), text, 're-encodes to the identical text');
  });
}

for (const v of vectors.invalid_client) {
  test(`invalid client: ${v.name} → ${v.error}`, () => {
    assert.equal(errorOf(() => decodeClient(vectorText(v))).kind, v.error);
  });
}

for (const v of vectors.invalid_server) {
  test(`invalid server: ${v.name} → ${v.error}`, () => {
    assert.equal(errorOf(() => decodeServer(vectorText(v))).kind, v.error);
  });
}

test('repeat expansions reach the sizes their names say', () => {
  const byName = (list, name) => vectorText(list.find((v) => v.name === name));
  assert.equal(utf8Length(byName(vectors.client, 'join of exactly 65536 bytes')), MAX_SIGNAL_LEN);
  assert.equal(utf8Length(byName(vectors.invalid_client, 'join of 65537 bytes')), MAX_SIGNAL_LEN + 1);
  const wide = byName(vectors.invalid_client, 'over 65536 UTF-8 bytes, under 65536 UTF-16 units');
  assert.ok(wide.length < MAX_SIGNAL_LEN && utf8Length(wide) > MAX_SIGNAL_LEN);
});

test('decoded messages hold the fields in canonical order, payload keys sorted', () => {
  const m = decodeServer('{"payload":{"sdp":"x","kind":"offer","b":{"z":1,"a":[{"y":0,"x":0}]}},"from":"p-1","type":"relay"}');
  assert.deepEqual(Object.keys(m), ['type', 'from', 'payload']);
  assert.equal(encodeServer(m), '{"type":"relay","from":"p-1","payload":{"b":{"a":[{"x":0,"y":0}],"z":1},"kind":"offer","sdp":"x"}}');
});

test('encoding what the engine sends gives the canonical text', () => {
  assert.equal(
    encodeClient({ capabilities: { upload: true, transports: ['webrtc'] }, rendition: 2, stream: '/s/master.m3u8', v: 1, type: 'join' }),
    '{"type":"join","v":1,"stream":"/s/master.m3u8","rendition":2,"capabilities":{"transports":["webrtc"],"upload":true}}',
  );
  assert.equal(
    encodeClient({ type: 'relay', to: 'p-2', payload: { sdp: 'v=0', kind: 'answer' } }),
    '{"type":"relay","to":"p-2","payload":{"kind":"answer","sdp":"v=0"}}',
  );
  // A report with no per-peer outcomes omits `peers`.
  const report = {
    type: 'report',
    http_bytes: 1,
    p2p_bytes: 2,
    http_segments: 3,
    p2p_segments: 4,
    uploaded_bytes: 5,
    failures: { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 },
    peers: [],
  };
  assert.equal(
    encodeClient(report),
    '{"type":"report","http_bytes":1,"p2p_bytes":2,"http_segments":3,"p2p_segments":4,"uploaded_bytes":5,"failures":{"timeout":0,"mismatch":0,"absent":0,"disconnect":0}}',
  );
  assert.equal(encodeClient({ type: 'leave' }), '{"type":"leave"}');
});

test('encoding refuses what the gateway would reject', () => {
  assert.equal(errorOf(() => encodeClient({ type: 'relay', to: '', payload: null })).kind, 'Invalid');
  assert.equal(errorOf(() => encodeClient({ type: 'leave', reason: 'x' })).kind, 'Malformed');
  assert.equal(errorOf(() => encodeClient({ type: 'join', v: 1, stream: 'no-slash', rendition: 0, capabilities: { transports: [], upload: true } })).kind, 'Invalid');
  assert.equal(errorOf(() => encodeClient({ type: 'report', http_bytes: -1 })).kind, 'Malformed');
});

test('strictness beyond the vectors, as in signal.rs', () => {
  const kind = (t) => errorOf(() => decodeClient(t)).kind;
  // Missing failure counters default to 0 (and are written back).
  const r = decodeClient('{"type":"report","http_bytes":0,"p2p_bytes":0,"http_segments":0,"p2p_segments":0,"uploaded_bytes":0,"failures":{}}');
  assert.deepEqual(r.failures, { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 });
  assert.equal(kind('{"type":"join","v":2,"new":true}'), 'UnsupportedVersion');
  assert.equal(kind('{"type":"join","v":1,"new":true}'), 'Malformed');
  assert.equal(kind('{"type":"join","v":1.5}'), 'Malformed');
  assert.equal(errorOf(() => decodeServer('{"type":"welcome","v":0}')).kind, 'UnsupportedVersion');
  // Optional members given as null are absent.
  const j = decodeClient('{"type":"join","v":1,"stream":"/a.m3u8","rendition":0,"capabilities":{"transports":[],"upload":false},"token":null}');
  assert.equal('token' in j, false);
  // Integers beyond 2^53 - 1 cannot be represented exactly here.
  assert.equal(kind('{"type":"report","http_bytes":9007199254740993,"p2p_bytes":0,"http_segments":0,"p2p_segments":0,"uploaded_bytes":0,"failures":{}}'), 'Malformed');
  // A lone surrogate escape is not a string serde_json accepts.
  assert.equal(kind('{"type":"relay","to":"p","payload":"\\ud800"}'), 'Malformed');
  // Peer ids are counted in UTF-8 bytes: 64 is the limit.
  assert.ok(decodeServer(`{"type":"relay","from":"${'é'.repeat(32)}","payload":{}}`));
  assert.equal(errorOf(() => decodeServer(`{"type":"relay","from":"${'é'.repeat(32)}x","payload":{}}`)).kind, 'Invalid');
  // Signalling is text.
  assert.equal(errorOf(() => decodeServer(new Uint8Array(3))).kind, 'Malformed');
});
