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

// ---------------------------------------------------------------------------------------------
// Contribution accounting (docs/LEDGER.md): `key` in join and in peers, `receipts` in report. JS-only
// checks of signal.rs's rules until the shared vectors have them.

const ED_KEY = 'ab'.repeat(32);
const P256_KEY = `04${'cd'.repeat(64)}`;
const FP = '0123456789abcdef'.repeat(4);

function receipt(over = {}) {
  return {
    alg: 'ed25519',
    uploader: ED_KEY,
    receiver: 'ef'.repeat(32),
    swarm: '/demo/live/v0.m3u8',
    segment: '/demo/live/v0/seg7.ts',
    sha256: '07'.repeat(32),
    bytes: 1234,
    time: 1_700_000_000_000,
    nonce: '09'.repeat(16),
    sig: '11'.repeat(64),
    ...over,
  };
}

const REPORT_HEAD = '"type":"report","http_bytes":1,"p2p_bytes":2,"http_segments":3,"p2p_segments":4,"uploaded_bytes":5,"failures":{"timeout":0,"mismatch":0,"absent":0,"disconnect":0}';

test('join carries an optional key after quic, Ed25519 or P-256', () => {
  for (const key of [ED_KEY, P256_KEY]) {
    const text = `{"type":"join","v":1,"stream":"/s/master.m3u8","rendition":0,"capabilities":{"transports":["webrtc"],"upload":true},"token":"t","quic":{"addr":"1.2.3.4:5","fingerprint":"${FP}"},"key":"${key}"}`;
    const m = decodeClient(text);
    assert.equal(m.key, key);
    assert.equal(encodeClient(m), text);
  }
  // Canonical order whatever the order given; absent or null: omitted.
  assert.equal(
    encodeClient({ key: ED_KEY, capabilities: { upload: false, transports: [] }, rendition: 1, stream: '/s.m3u8', v: 1, type: 'join' }),
    `{"type":"join","v":1,"stream":"/s.m3u8","rendition":1,"capabilities":{"transports":[],"upload":false},"key":"${ED_KEY}"}`,
  );
  const j = decodeClient('{"type":"join","v":1,"stream":"/s.m3u8","rendition":0,"capabilities":{"transports":[],"upload":true},"key":null}');
  assert.equal('key' in j, false);
});

test('a key is 64 or 130 lowercase hex digits (Invalid), a string (Malformed)', () => {
  const join = (key) => `{"type":"join","v":1,"stream":"/s.m3u8","rendition":0,"capabilities":{"transports":[],"upload":true},"key":${JSON.stringify(key)}}`;
  for (const bad of ['', 'ab'.repeat(31), `${ED_KEY}a`, ED_KEY.toUpperCase(), `${'g'}${ED_KEY.slice(1)}`, 'ab'.repeat(64), `${P256_KEY}00`, ` ${ED_KEY.slice(1)}`]) {
    const e = errorOf(() => decodeClient(join(bad)));
    assert.equal(e.kind, 'Invalid', bad);
    assert.match(e.message, /key: not a public key \(64 or 130 lowercase hex digits\)/);
  }
  assert.equal(errorOf(() => decodeClient(join(1))).kind, 'Malformed');
  assert.equal(errorOf(() => encodeClient({ type: 'join', v: 1, stream: '/s.m3u8', rendition: 0, capabilities: { transports: [], upload: true }, key: 'x' })).kind, 'Invalid');
});

test('peers entries carry an optional key after quic', () => {
  const text = `{"type":"peers","peers":[{"peer_id":"p-1","region":"eu","transports":["quic","webrtc"],"quic":{"addr":"1.2.3.4:5","fingerprint":"${FP}"},"key":"${ED_KEY}"},{"peer_id":"p-2","transports":["webrtc"],"key":"${P256_KEY}"},{"peer_id":"p-3","transports":["webrtc"]}]}`;
  const m = decodeServer(text);
  assert.deepEqual(m.peers.map((p) => p.key), [ED_KEY, P256_KEY, undefined]);
  assert.equal(encodeServer(m), text);
  assert.deepEqual(Object.keys(decodeServer(`{"type":"peers","peers":[{"key":"${ED_KEY}","transports":[],"peer_id":"p"}]}`).peers[0]), ['peer_id', 'transports', 'key']);
  const bad = errorOf(() => decodeServer('{"type":"peers","peers":[{"peer_id":"p","transports":[],"key":"AB"}]}'));
  assert.equal(bad.kind, 'Invalid');
  assert.match(bad.message, /key: not a public key/);
  assert.equal(errorOf(() => decodeServer('{"type":"peers","peers":[{"peer_id":"p","transports":[],"keys":"ab"}]}')).kind, 'Malformed');
});

test('report carries receipts after peers, fields in canonical order; none: omitted', () => {
  const r = receipt();
  const fields = `"alg":"ed25519","uploader":"${r.uploader}","receiver":"${r.receiver}","swarm":"/demo/live/v0.m3u8","segment":"/demo/live/v0/seg7.ts","sha256":"${r.sha256}","bytes":1234,"time":1700000000000,"nonce":"${r.nonce}","sig":"${r.sig}"`;
  const text = `{${REPORT_HEAD},"peers":[{"peer_id":"p-2","ok":1,"failed":0,"mismatch":0,"bytes":1234}],"receipts":[{${fields}},{${fields.replace('"ed25519"', '"p256"')}}]}`;
  const m = decodeClient(text);
  assert.equal(m.receipts.length, 2);
  assert.deepEqual(m.receipts[0], r);
  assert.equal(encodeClient(m), text);
  // Given in any order, encoded in the canonical one.
  const shuffled = Object.fromEntries(Object.entries(r).reverse());
  assert.equal(
    encodeClient({ type: 'report', http_bytes: 1, p2p_bytes: 2, http_segments: 3, p2p_segments: 4, uploaded_bytes: 5, failures: {}, receipts: [shuffled] }),
    `{${REPORT_HEAD},"receipts":[{${fields}}]}`,
  );
  assert.equal(encodeClient({ type: 'report', http_bytes: 1, p2p_bytes: 2, http_segments: 3, p2p_segments: 4, uploaded_bytes: 5, failures: {}, receipts: [] }), `{${REPORT_HEAD}}`);
  assert.equal('receipts' in decodeClient(`{${REPORT_HEAD},"receipts":[]}`), false);
});

test('at most 64 receipts in a report (Invalid beyond)', () => {
  const list = (n) => JSON.stringify(Array.from({ length: n }, () => receipt()));
  assert.equal(decodeClient(`{${REPORT_HEAD},"receipts":${list(64)}}`).receipts.length, 64);
  const e = errorOf(() => decodeClient(`{${REPORT_HEAD},"receipts":${list(65)}}`));
  assert.equal(e.kind, 'Invalid');
  assert.match(e.message, /receipts: 65 entries, at most 64/);
});

test('a receipt is a strict struct: its shape only (Malformed), the gateway checks the rest', () => {
  const report = (r) => `{${REPORT_HEAD},"receipts":[${JSON.stringify(r)}]}`;
  const kind = (r) => errorOf(() => decodeClient(report(r))).kind;
  assert.equal(kind({ ...receipt(), extra: 1 }), 'Malformed', 'unknown field');
  for (const field of Object.keys(receipt())) {
    const r = receipt();
    delete r[field];
    assert.equal(kind(r), 'Malformed', `missing ${field}`);
  }
  assert.equal(kind(receipt({ alg: 'rsa' })), 'Malformed');
  assert.equal(kind(receipt({ alg: 'Ed25519' })), 'Malformed');
  assert.equal(kind(receipt({ bytes: 2 ** 53 })), 'Malformed', 'above 2^53 - 1');
  assert.equal(kind(receipt({ time: -1 })), 'Malformed');
  assert.equal(kind(receipt({ bytes: 1.5 })), 'Malformed');
  assert.equal(kind(receipt({ bytes: '1' })), 'Malformed');
  assert.equal(kind(receipt({ sig: null })), 'Malformed');
  assert.equal(errorOf(() => decodeClient(`{${REPORT_HEAD},"receipts":null}`)).kind, 'Malformed');
  assert.equal(errorOf(() => decodeClient(`{${REPORT_HEAD},"receipts":{}}`)).kind, 'Malformed');
  // The largest safe integers are fine; forms (hex lengths, paths) are not the codec's business.
  const edge = receipt({ bytes: Number.MAX_SAFE_INTEGER, time: Number.MAX_SAFE_INTEGER, uploader: 'x', sig: '', segment: 'no path' });
  assert.deepEqual(decodeClient(report(edge)).receipts[0], edge);
});
