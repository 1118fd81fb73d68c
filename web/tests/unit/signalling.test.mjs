// The engine's signalling: join first, strict decoding, pacing under the tracker's budget, seniority
// from the first peers message (in the core), reports held while there is no socket, reconnect with
// backoff (not after unauthorized), a new swarm session per rendition, a last report on destroy.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { SIGNAL_BURST, SignallingChannel } from '../../src/signalling.js';
import { P2PEngine } from '../../src/engine.js';
import { Backoff } from '../../src/util.js';
import { decodeClient } from '../../src/protocol/signal.js';
import { GATEWAY, fakeGateway, sleep } from './fakes.js';

/** A WebSocket double: records what is sent; the test plays the gateway. */
class FakeWebSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.all.push(this);
    queueMicrotask(() => this.open());
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  send(text) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(decodeClient(text)); // every message we send is valid for the gateway
  }
  receive(msg) {
    this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
  }
  close(code = 1000, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

const welcome = (id) => ({ type: 'welcome', v: 1, peer_id: id, swarm: '/s/master.m3u8#0', playlist: '/s/0.m3u8', max_peers: 8 });

test('the channel sends join first and paces a burst under the budget', async () => {
  FakeWebSocket.all = [];
  const warnings = [];
  const ch = new SignallingChannel({
    url: 'ws://gw.test/p2p/v1/ws?stream=%2Fs%2Fmaster.m3u8',
    join: { stream: '/s/master.m3u8', rendition: 2, upload: true },
    WebSocket: FakeWebSocket,
    hooks: { message() {}, closed() {}, warn: (...a) => warnings.push(a) },
  });
  const ws = FakeWebSocket.all[0];
  await sleep(0);
  assert.deepEqual(ws.sent[0], { type: 'join', v: 1, stream: '/s/master.m3u8', rendition: 2, capabilities: { transports: ['webrtc'], upload: true } });
  for (let i = 0; i < 50; i++) ch.send({ type: 'relay', to: 'p-2', payload: { kind: 'candidate', candidate: { candidate: `c${i}` } } });
  assert.equal(ws.sent.length, SIGNAL_BURST, 'a burst goes at once, the rest waits');
  await sleep(600);
  assert.ok(ws.sent.length > SIGNAL_BURST && ws.sent.length < 51, `${ws.sent.length} sent after 0.6 s`);
  ch.leave([{ type: 'report', http_bytes: 1, p2p_bytes: 0, http_segments: 1, p2p_segments: 0, uploaded_bytes: 0, failures: {} }]);
  assert.equal(ws.sent.length, 53, 'leave flushes the queue, then the report and leave');
  assert.equal(ws.sent.at(-2).type, 'report');
  assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
  assert.equal(ws.readyState, 3);
  assert.deepEqual(warnings, []);
});

test('bad server messages are counted and dropped, not fatal', async () => {
  FakeWebSocket.all = [];
  const got = [];
  const warnings = [];
  new SignallingChannel({
    url: 'ws://x',
    join: { stream: '/s/master.m3u8', rendition: 0, upload: true },
    WebSocket: FakeWebSocket,
    hooks: { message: (m) => got.push(m), closed() {}, warn: (...a) => warnings.push(a[1]) },
  });
  await sleep(0);
  const ws = FakeWebSocket.all[0];
  ws.receive('{"type":"welcome","v":1,"peer_id":"p","swarm":"s","playlist":"/p.m3u8","max_peers":8,"motd":"hi"}');
  ws.receive({ type: 'peers', peers: [] });
  assert.deepEqual(warnings, ['Malformed']);
  assert.deepEqual(got, [{ type: 'peers', peers: [] }]);
});

test('the engine joins; the core learns its seniors from the first peers message; reports wait for a socket', async () => {
  FakeWebSocket.all = [];
  const bytes = new Uint8Array(300);
  const gateway = fakeGateway(new Map([['/s/0/1.ts', bytes]]));
  const engine = new P2PEngine({ gateway: GATEWAY, stream: '/s/master.m3u8', WebSocket: FakeWebSocket, RTCPeerConnection: null, fetch: gateway.fetch, reportIntervalMs: 50 });
  await engine.keyReady; // `join` waits for the key
  try {
    // Fetched before the engine joins: the reports of it wait for the tracker.
    await new Promise((resolve) => engine.fetchSegment(`${GATEWAY}/s/0/1.ts`, { onSuccess: resolve, onError: resolve }));
    await sleep(120);
    engine.setRendition(1);
    await sleep(0);
    const ws = FakeWebSocket.all[0];
    assert.equal(ws.url, 'ws://gw.test/p2p/v1/ws?stream=%2Fs%2Fmaster.m3u8');
    assert.equal(ws.sent[0].rendition, 1);
    ws.receive(welcome('p-5'));
    const report = ws.sent.find((m) => m.type === 'report');
    assert.equal(report?.http_bytes, bytes.length, 'the reports made before the welcome, merged');
    assert.equal(report.http_segments, 1);
    ws.receive({ type: 'digests', playlist: '/s/0.m3u8', segments: [{ id: '/s/0/1.ts', sha256: 'a'.repeat(64), size: 3 }] });
    ws.receive({ type: 'peers', peers: [{ peer_id: 'p-1', transports: ['webrtc'] }] });
    assert.equal(engine.stats.peerId, 'p-5');
    assert.equal(engine.core.me, 'p-5');
    assert.deepEqual(engine.core.seniority(), { older: 1, swarm: 2 });
    assert.equal(engine.stats.seeder, false, 'p-1 is older: it seeds');
    ws.receive({ type: 'peers', peers: [{ peer_id: 'p-1', transports: ['webrtc'] }, { peer_id: 'p-9', transports: ['webrtc'] }] });
    assert.deepEqual(engine.core.seniority(), { older: 1, swarm: 3 }, 'later peers are newer');
    ws.receive({ type: 'peers', peers: [{ peer_id: 'p-9', transports: ['webrtc'] }] });
    assert.equal(engine.stats.seeder, true, 'the senior left: this peer seeds now');
    await sleep(120);
    assert.ok(ws.sent.filter((m) => m.type === 'report').length >= 2, 'periodic reports');
    // A rendition change: leave on this socket, join on a new one, a new swarm session in the core.
    engine.setRendition(2);
    assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
    assert.equal(engine.stats.peerId, null);
    await sleep(0);
    assert.equal(FakeWebSocket.all.length, 2);
    const next = FakeWebSocket.all[1];
    assert.equal(next.sent[0].rendition, 2);
    next.receive(welcome('p-12'));
    assert.equal(engine.core.me, 'p-12');
    assert.deepEqual(engine.core.seniority(), { older: 0, swarm: 1 }, 'the old swarm is forgotten');
  } finally {
    engine.destroy();
  }
});

test('Backoff: 1 s doubling to 30 s, each delay in [d/2, d)', () => {
  const b = new Backoff();
  assert.deepEqual([0, 0, 0, 0, 0, 0, 0].map(() => b.next(0)), [500, 1000, 2000, 4000, 8000, 15000, 15000]);
  b.reset();
  assert.deepEqual([1, 1, 1, 1, 1, 1].map(() => b.next(0.999999)), [999, 1999, 3999, 7999, 15999, 29999]);
});

test('reconnects with backoff after a close, never after unauthorized', async () => {
  FakeWebSocket.all = [];
  const engine = new P2PEngine({ gateway: GATEWAY, stream: '/s/master.m3u8', WebSocket: FakeWebSocket, RTCPeerConnection: null });
  await engine.keyReady; // `join` waits for the key
  const warn = console.warn;
  console.warn = () => {};
  try {
    engine.backoff.firstMs = 20; // shorten the 1 s first delay for the test
    engine.backoff.reset();
    engine.setRendition(0);
    await sleep(0);
    FakeWebSocket.all[0].close(1006, '');
    assert.equal(FakeWebSocket.all.length, 1);
    await sleep(40);
    assert.equal(FakeWebSocket.all.length, 2, 'reconnected after the backoff');
    assert.equal(engine.backoff.nextMs, 40, 'the next delay doubles');
    assert.equal(engine.stats.signallingReconnects, 1);
    // A gateway that restarts (1012) is rejoined at once (within 500 ms), whatever the backoff.
    engine.backoff.firstMs = engine.backoff.nextMs = 60_000;
    const restarted = Date.now();
    FakeWebSocket.all[1].close(1012, 'restart');
    while (FakeWebSocket.all.length < 3 && Date.now() - restarted < 2000) await sleep(10);
    assert.equal(FakeWebSocket.all.length, 3, 'rejoined after 1012');
    assert.ok(Date.now() - restarted < 700, `rejoined within the restart jitter (${Date.now() - restarted} ms)`);
    assert.equal(engine.stats.signallingReconnects, 2);
    const ws = FakeWebSocket.all[2];
    ws.receive({ type: 'error', code: 'unauthorized', message: 'token refused' });
    ws.close(1008, 'unauthorized');
    await sleep(100);
    assert.equal(FakeWebSocket.all.length, 3, 'no reconnect after unauthorized');
    assert.equal(engine.stats.warnings > 0, true);
  } finally {
    console.warn = warn;
    engine.destroy();
  }
});

test('a full shard sends the engine on: it joins the shard named at once, keeps it across reconnects, and starts at 0 for another rendition', async () => {
  FakeWebSocket.all = [];
  const engine = new P2PEngine({ gateway: GATEWAY, stream: '/s/master.m3u8', WebSocket: FakeWebSocket, RTCPeerConnection: null });
  await engine.keyReady; // `join` waits for the key
  const warn = console.warn;
  console.warn = () => {};
  try {
    engine.backoff.firstMs = engine.backoff.nextMs = 60_000; // a redirect must not wait for it
    engine.setRendition(0);
    await sleep(0);
    const full = FakeWebSocket.all[0];
    assert.ok(!full.url.includes('shard='), 'shard 0 is the default: no parameter');
    full.receive({ type: 'error', code: 'swarm_full', message: 'shard 0 is full', shard: 3 });
    full.close(1008, 'swarm_full');
    await sleep(0);
    assert.equal(FakeWebSocket.all.length, 2, 'joined again at once');
    const there = FakeWebSocket.all[1];
    assert.match(there.url, /[?&]shard=3(&|$)/);
    await sleep(0);
    assert.equal(there.sent[0].type, 'join');
    there.receive(welcome('p-30'));
    assert.equal(engine.stats.shard, 3);
    assert.equal(engine.stats.signallingReconnects, 0, 'a redirect is not a lost session');
    // The gateway restarts: the shard is asked for again (it re-forms wherever it hashes now).
    there.close(1012, 'restart');
    while (FakeWebSocket.all.length < 3) await sleep(10);
    assert.match(FakeWebSocket.all[2].url, /[?&]shard=3(&|$)/);
    // A redirect backwards (or to the same shard) is not followed: a loop would never end.
    const back = FakeWebSocket.all[2];
    await sleep(0);
    back.receive({ type: 'error', code: 'swarm_full', message: 'full', shard: 2 });
    back.close(1008, 'swarm_full');
    await sleep(20);
    assert.equal(FakeWebSocket.all.length, 3, 'backing off, not hopping back');
    // Another rendition: shard 0 of its own swarm.
    engine.setRendition(1);
    await sleep(0);
    assert.ok(!FakeWebSocket.all.at(-1).url.includes('shard='));
  } finally {
    console.warn = warn;
    engine.destroy();
  }
});

test('destroy reports, leaves and clears every timer', async () => {
  FakeWebSocket.all = [];
  const engine = new P2PEngine({ gateway: GATEWAY, stream: '/s/master.m3u8', WebSocket: FakeWebSocket, RTCPeerConnection: null });
  await engine.keyReady; // `join` waits for the key
  engine.setRendition(0);
  await sleep(0);
  const ws = FakeWebSocket.all[0];
  ws.receive(welcome('p-5'));
  engine.destroy();
  assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
  assert.equal(ws.sent.at(-2).type, 'report', 'the last report first');
  assert.equal(ws.readyState, 3);
  assert.equal(engine.conn, null);
  assert.equal(engine.timer, null);
  assert.equal(engine.reconnectTimer, null);
  // Nothing keeps the process alive: the test runner would hang otherwise.
});

test('pagehide leaves the swarm; pageshow from the back/forward cache joins again', async () => {
  FakeWebSocket.all = [];
  const engine = new P2PEngine({ gateway: GATEWAY, stream: '/s/master.m3u8', WebSocket: FakeWebSocket, RTCPeerConnection: null });
  await engine.keyReady; // `join` waits for the key
  try {
    engine.setRendition(0);
    await sleep(0);
    FakeWebSocket.all[0].receive(welcome('p-5'));
    engine.onPageHide();
    assert.deepEqual(FakeWebSocket.all[0].sent.at(-1), { type: 'leave' });
    assert.equal(engine.conn, null);
    engine.onPageShow({ persisted: false });
    assert.equal(FakeWebSocket.all.length, 1, 'a fresh page load is not a return');
    engine.onPageShow({ persisted: true });
    await sleep(0);
    assert.equal(FakeWebSocket.all.length, 2);
    assert.equal(FakeWebSocket.all[1].sent[0].type, 'join');
    FakeWebSocket.all[1].receive(welcome('p-8'));
    assert.equal(engine.core.me, 'p-8', 'a new swarm session in the same core');
  } finally {
    engine.destroy();
  }
});
