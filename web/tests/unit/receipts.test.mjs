// Contribution accounting in the browser (docs/LEDGER.md): the core says which verified deliveries
// to sign (`delivered`, as the Rust core's `delivered_by`), the engine signs them with the page's
// key and reports them; `join` announces the key.

import { createHash } from 'node:crypto';
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { NodeCore } from '../../src/core.js';
import { MAX_PENDING_RECEIPTS, P2PEngine, mergeReports } from '../../src/engine.js';
import { receiptText, sessionKey } from '../../src/keys.js';
import { MAX_RECEIPTS, decodeClient } from '../../src/protocol/signal.js';
import { FakeTracker, GATEWAY, STREAM, ask, body, fakeGateway, joinedEngine, newEngine, sleep, until } from './fakes.js';
import { unhex } from './vectors.js';

const ID = '/s/0/7.ts';
const KEY = 'ab'.repeat(32);
const SWARM = '/s/master.m3u8#0';

// ---------------------------------------------------------------------------------------------
// The core

/** A core in a swarm with peer p-2 (key `key`) linked, and segment ID's digest published. */
function coreWithPeer(config, bytes, key = KEY) {
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const core = new NodeCore(config, '', 0);
  core.handle({ type: 'signal', message: { type: 'welcome', v: 1, peer_id: 'p-1', swarm: SWARM, playlist: '/s/0.m3u8', max_peers: 8 } }, 0);
  const peer = { peer_id: 'p-2', transports: ['webrtc'], ...(key ? { key } : {}) };
  core.handle({ type: 'signal', message: { type: 'peers', peers: [peer] } }, 0);
  core.handle({ type: 'signal', message: { type: 'digests', playlist: '/s/0.m3u8', segments: [{ id: ID, sha256, size: bytes.length }] } }, 0);
  core.handle({ type: 'link_up', link: 1, peer: 'p-2', initiated: true, max_frame: 262_144 }, 1);
  core.handle({ type: 'frame', link: 1, frame: { type: 'have', segments: [ID] } }, 2);
  drain(core);
  return { core, sha256 };
}

function drain(core) {
  const out = [];
  for (let o = core.pollOutput(); o !== undefined; o = core.pollOutput()) out.push(o);
  return out;
}

/** The whole segment from p-2, verified: the outputs from the verification on. */
function wholeFromPeer(config, key) {
  const bytes = body(30_000, 3);
  const { core, sha256 } = coreWithPeer(config, bytes, key);
  core.handle({ type: 'need', waiter: 1, id: ID, plays_at: 5000, p2p: true }, 10);
  const request = drain(core).find((o) => o.type === 'send' && o.frame.type === 'request');
  assert.ok(request, 'asked the peer');
  const rid = request.frame.request_id;
  core.handle({ type: 'frame', link: 1, frame: { type: 'response', request_id: rid, size: bytes.length, offset: 0, digest: unhex(sha256) } }, 20);
  core.handle({ type: 'frame', link: 1, frame: { type: 'chunk', request_id: rid, offset: 0, data: bytes } }, 30);
  const verify = drain(core).find((o) => o.type === 'verify');
  core.handle({ type: 'verified', ticket: verify.ticket, sha256 }, 31);
  return { core, sha256, bytes, out: drain(core) };
}

test('core: a verified segment from a peer with a key is `delivered` (receipts on), just before it is delivered', () => {
  const { core, sha256, bytes, out } = wholeFromPeer({ receipts: true });
  assert.deepEqual(out.map((o) => o.type).slice(0, 2), ['delivered', 'deliver']);
  assert.deepEqual(out[0], { type: 'delivered', uploader: KEY, swarm: SWARM, segment: ID, sha256, bytes: bytes.length });
  assert.deepEqual([...core.receivedFrom], [[KEY, bytes.length]]);
});

test('core: receipts off (the default, the traces) or a peer without a key: no `delivered`', () => {
  const off = wholeFromPeer({});
  assert.equal(off.out.some((o) => o.type === 'delivered'), false);
  assert.equal(off.out.some((o) => o.type === 'deliver'), true);
  assert.deepEqual([...off.core.receivedFrom], [[KEY, off.bytes.length]], 'counted all the same, as in Rust');
  const keyless = wholeFromPeer({ receipts: true }, null);
  assert.equal(keyless.out.some((o) => o.type === 'delivered'), false);
  assert.equal(keyless.core.receivedFrom.size, 0);
});

test('core: the part a peer sent before HTTP took over is `delivered` once the whole verifies', () => {
  const bytes = body(100_000, 5);
  const { core, sha256 } = coreWithPeer({ receipts: true }, bytes);
  core.handle({ type: 'need', waiter: 1, id: ID, plays_at: 3000, p2p: true }, 10);
  const rid = drain(core).find((o) => o.type === 'send' && o.frame.type === 'request').frame.request_id;
  core.handle({ type: 'frame', link: 1, frame: { type: 'response', request_id: rid, size: bytes.length, offset: 0, digest: unhex(sha256) } }, 20);
  // A slow peer: 1000 bytes every 50 ms, until the scheduler fetches the rest over HTTP.
  let t = 20;
  let sent = 0;
  let get;
  while (!get && t < 5000) {
    t += 50;
    core.handle({ type: 'frame', link: 1, frame: { type: 'chunk', request_id: rid, offset: sent, data: bytes.subarray(sent, sent + 1000) } }, t);
    sent += 1000;
    if (core.pollTimeout() <= t) core.handleTimeout(t);
    get = drain(core).find((o) => o.type === 'http_get');
  }
  assert.ok(get && get.from > 0, `the rest over HTTP (${JSON.stringify(get)})`);
  core.handle({ type: 'http', id: ID, from: get.from, ok: bytes.slice(get.from) }, t + 10);
  const verify = drain(core).find((o) => o.type === 'verify');
  core.handle({ type: 'verified', ticket: verify.ticket, sha256 }, t + 20);
  const out = drain(core);
  assert.deepEqual(out[0], { type: 'delivered', uploader: KEY, swarm: SWARM, segment: ID, sha256, bytes: get.from });
  assert.equal(out[1].type, 'deliver');
});

test('core: keys are never forgotten; the swarm is the latest welcome\'s', () => {
  const core = new NodeCore({ receipts: true }, '', 0);
  core.handle({ type: 'signal', message: { type: 'welcome', v: 1, peer_id: 'p-1', swarm: 'a', playlist: '/s/0.m3u8', max_peers: 8 } }, 0);
  core.handle({ type: 'signal', message: { type: 'peers', peers: [{ peer_id: 'p-2', transports: ['webrtc'], key: KEY }] } }, 0);
  core.handle({ type: 'signal', message: { type: 'peers', peers: [] } }, 1);
  core.handle({ type: 'signal', message: { type: 'welcome', v: 1, peer_id: 'p-9', swarm: 'b', playlist: '/s/1.m3u8', max_peers: 8 } }, 2);
  assert.equal(core.peerKeys.get('p-2'), KEY);
  assert.equal(core.swarm, 'b');
});

// ---------------------------------------------------------------------------------------------
// The engine

test('engine: join carries the key; a segment from a peer is receipted, signed, verifiable and reported', async () => {
  const bytes = body(40_000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const tracker = new FakeTracker();
  const first = await joinedEngine({ gateway: gw, tracker, options: { reportIntervalMs: 100 } });
  const second = await joinedEngine({ gateway: gw, tracker, options: { reportIntervalMs: 100 } });
  try {
    await until(() => first.stats.peers === 1 && second.stats.peers === 1, 'the link');
    const joins = tracker.received.filter((m) => m.type === 'join');
    assert.deepEqual(joins.map((j) => j.key), [first.nodeKey.publicHex, second.nodeKey.publicHex]);
    assert.equal(second.stats.nodeKey, second.nodeKey.publicHex);
    assert.notEqual(first.nodeKey.publicHex, second.nodeKey.publicHex);

    tracker.publish(ID, bytes);
    const [a, b] = await Promise.all([ask(first, ID, 5000), ask(second, ID, 5000)]);
    assert.equal(a.source, 'http');
    assert.equal(b.source, 'p2p');
    const before = Date.now();
    const [r] = await until(() => tracker.receipts().length > 0 && tracker.receipts(), 'the receipt in a report');
    assert.equal(tracker.receipts().length, 1, 'one delivery, one receipt');
    assert.equal(r.alg, second.nodeKey.alg);
    assert.equal(r.uploader, first.nodeKey.publicHex);
    assert.equal(r.receiver, second.nodeKey.publicHex);
    assert.equal(r.swarm, `${STREAM}#0`, 'the welcome\'s swarm');
    assert.equal(r.segment, ID);
    assert.equal(r.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.equal(r.bytes, bytes.length);
    assert.ok(Math.abs(r.time - before) < 5000, 'Unix ms');
    assert.match(r.nonce, /^[0-9a-f]{32}$/);
    assert.match(r.sig, /^[0-9a-f]{128}$/);
    // Anyone verifies it with the receiver's key.
    const key = await crypto.subtle.importKey('raw', unhex(r.receiver), { name: 'Ed25519' }, false, ['verify']);
    assert.equal(await crypto.subtle.verify({ name: 'Ed25519' }, key, unhex(r.sig), new TextEncoder().encode(receiptText(r))), true);
    assert.equal(await crypto.subtle.verify({ name: 'Ed25519' }, key, unhex(r.sig), new TextEncoder().encode(receiptText({ ...r, bytes: r.bytes + 1 }))), false);
    // The report with the receipt is the one with the peer bytes or a later one (the tracker's budget).
    const reports = tracker.received.filter((m) => m.type === 'report' && m.receipts);
    assert.equal(reports.length, 1);
    assert.equal(second.stats.receiptsSigned, 1);
    assert.equal(second.stats.receiptsSent, 1);
    assert.equal(second.stats.receiptsPending, 0);
    assert.equal(first.stats.receiptsSigned, 0, 'the uploader signs nothing');
  } finally {
    first.destroy();
    second.destroy();
  }
});

test('engine: receipts off: no key in join, nothing signed', async () => {
  const bytes = body(20_000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const tracker = new FakeTracker();
  const first = await joinedEngine({ gateway: gw, tracker, options: { receipts: false, reportIntervalMs: 50 } });
  const second = await joinedEngine({ gateway: gw, tracker, options: { receipts: false, reportIntervalMs: 50 } });
  try {
    await until(() => first.stats.peers === 1 && second.stats.peers === 1, 'the link');
    assert.equal(tracker.received.filter((m) => m.type === 'join').some((j) => 'key' in j), false);
    assert.equal(first.nodeKey, null);
    assert.equal(first.stats.nodeKey, null);
    tracker.publish(ID, bytes);
    await Promise.all([ask(first, ID, 5000), ask(second, ID, 5000)]);
    await until(() => tracker.reported().p2p_bytes === bytes.length, 'the report');
    await sleep(120);
    assert.equal(tracker.receipts().length, 0);
    assert.equal(second.core.config.receipts, false);
  } finally {
    first.destroy();
    second.destroy();
  }
});

/** A receipt of the right shape (not a valid signature: the engine does not check its own). */
const fakeReceipt = (i) => ({
  alg: 'ed25519',
  uploader: KEY,
  receiver: 'cd'.repeat(32),
  swarm: SWARM,
  segment: `/s/0/${i}.ts`,
  sha256: '07'.repeat(32),
  bytes: 1000 + i,
  time: 1_700_000_000_000 + i,
  nonce: String(i).padStart(32, '0'),
  sig: '11'.repeat(64),
});

const report = (n) => ({
  type: 'report',
  http_bytes: n,
  p2p_bytes: 0,
  http_segments: 0,
  p2p_segments: 0,
  uploaded_bytes: 0,
  failures: { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 },
});

/** An engine with no tracker; `open()` gives it a socket that records what it sends. */
function bareEngine() {
  const engine = new P2PEngine({ gateway: GATEWAY, stream: STREAM, WebSocket: null, RTCPeerConnection: null, nodeKey: null });
  const sent = [];
  const open = () => {
    engine.conn = {
      peerId: 'p-1',
      channel: {
        open: true,
        send: (m) => sent.push(decodeClient(JSON.stringify(m))), // as the gateway would decode it
        leave: (last) => sent.push(...last.map((m) => decodeClient(JSON.stringify(m))), { type: 'leave' }),
      },
    };
  };
  return { engine, sent, open };
}

test('engine: at most 64 receipts a report, oldest first, the rest wait; the core\'s reports are not changed', () => {
  const { engine, sent, open } = bareEngine();
  try {
    engine.queueReceipts(Array.from({ length: 100 }, (_, i) => fakeReceipt(i)));
    const a = report(1);
    const b = report(2);
    engine.signal(a); // no socket: kept, merged with the next
    engine.signal(b);
    assert.equal(sent.length, 0);
    assert.equal(engine.pendingReport.http_bytes, 3);
    open();
    engine.flushReport();
    assert.equal(sent.length, 1);
    assert.equal(sent[0].http_bytes, 3);
    assert.equal(sent[0].receipts.length, MAX_RECEIPTS);
    assert.deepEqual(sent[0].receipts.map((r) => r.bytes), Array.from({ length: 64 }, (_, i) => 1000 + i));
    assert.equal(engine.receipts.length, 36);
    assert.equal('receipts' in a || 'receipts' in b, false, 'the core\'s reports are not changed');
    engine.signal(report(4));
    assert.equal(sent[1].receipts.length, 36);
    assert.equal(sent[1].receipts[0].bytes, 1064);
    engine.signal(report(5));
    assert.equal('receipts' in sent[2], false, 'none left: no field');
    assert.equal(engine.stats.receiptsSent, 100);
  } finally {
    engine.destroy();
  }
});

test('engine: merged reports concatenate their receipts, 64 at most, the rest first in line again', () => {
  const merged = mergeReports({ ...report(1), receipts: [fakeReceipt(1)] }, { ...report(2), receipts: [fakeReceipt(2)] });
  assert.deepEqual(merged.receipts.map((r) => r.bytes), [1001, 1002]);
  assert.equal('receipts' in mergeReports(report(1), report(2)), false);
  const { engine } = bareEngine();
  try {
    engine.queueReceipts([fakeReceipt(999)]);
    engine.signal({ ...report(1), receipts: Array.from({ length: 40 }, (_, i) => fakeReceipt(i)) });
    engine.signal({ ...report(2), receipts: Array.from({ length: 40 }, (_, i) => fakeReceipt(100 + i)) });
    assert.equal(engine.pendingReport.receipts.length, MAX_RECEIPTS);
    assert.deepEqual(engine.receipts.map((r) => r.bytes), [...Array.from({ length: 16 }, (_, i) => 1124 + i), 1999]);
  } finally {
    engine.destroy();
  }
});

test('engine: at most 1024 receipts wait, the oldest dropped', () => {
  const { engine } = bareEngine();
  try {
    engine.queueReceipts(Array.from({ length: MAX_PENDING_RECEIPTS + 10 }, (_, i) => fakeReceipt(i)));
    assert.equal(engine.receipts.length, MAX_PENDING_RECEIPTS);
    assert.equal(engine.receipts[0].bytes, 1010);
    assert.equal(engine.stats.receiptsDropped, 10);
  } finally {
    engine.destroy();
  }
});

test('engine: a report stays within the message limit, receipts or not', () => {
  const { engine, sent, open } = bareEngine();
  try {
    const long = 'x'.repeat(900);
    engine.queueReceipts(Array.from({ length: 64 }, (_, i) => ({ ...fakeReceipt(i), swarm: long })));
    open();
    engine.signal(report(1));
    const n = sent[0].receipts.length;
    assert.ok(n > 0 && n < 64, `${n} receipts`);
    assert.ok(JSON.stringify(sent[0]).length <= 64 * 1024);
    assert.equal(engine.receipts.length, 64 - n);
    assert.equal(engine.receipts[0].bytes, 1000 + n, 'the rest, in order');
  } finally {
    engine.destroy();
  }
});

test('engine: leaving for good sends the receipts still waiting before leave; a rendition switch keeps them', () => {
  const { engine, sent, open } = bareEngine();
  engine.queueReceipts(Array.from({ length: 150 }, (_, i) => fakeReceipt(i)));
  open();
  engine.rendition = 0;
  engine.leaveSwarm(); // as a rendition switch does: the next session carries them
  assert.deepEqual(sent, [{ type: 'leave' }]);
  assert.equal(engine.receipts.length, 150);
  sent.length = 0;
  open();
  engine.destroy();
  const reports = sent.filter((m) => m.type === 'report');
  assert.deepEqual(reports.map((r) => r.receipts?.length ?? 0), [64, 64, 22]);
  assert.deepEqual(sent.at(-1), { type: 'leave' });
});

test('engine: a key that cannot be had: no key in join, no receipts, P2P all the same', async () => {
  const warn = console.warn;
  console.warn = () => {};
  const tracker = new FakeTracker();
  try {
    const engine = await joinedEngine({ gateway: fakeGateway(new Map()), tracker, options: { nodeKey: Promise.reject(new Error('no key')) } });
    assert.equal(engine.nodeKey, null);
    assert.equal('key' in tracker.received[0], false);
    engine.signReceipt({ type: 'delivered', uploader: KEY, swarm: SWARM, segment: ID, sha256: '07'.repeat(32), bytes: 1 });
    await sleep(10);
    assert.equal(engine.receipts.length, 0);
    engine.destroy();
  } finally {
    console.warn = warn;
  }
});

test('engine: the tracker connection waits for the key', async () => {
  let give;
  const tracker = new FakeTracker();
  const engine = newEngine({ gateway: fakeGateway(new Map()), tracker, options: { nodeKey: new Promise((r) => (give = r)) } });
  try {
    engine.setRendition(0);
    await sleep(20);
    assert.equal(engine.conn, null, 'not yet');
    const key = await sessionKey();
    give(key);
    await until(() => engine.conn?.peerId, 'the welcome');
    assert.equal(tracker.received[0].key, key.publicHex);
  } finally {
    engine.destroy();
  }
});
