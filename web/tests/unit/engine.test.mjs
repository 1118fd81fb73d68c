// The engine's delivery rules with fake links and a fake gateway: peer bytes reach the player only
// after they match the gateway digest, liars are banned and replaced by HTTP, requests need digests,
// uploads come from the store, reports carry deltas.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { encodeClient } from '../../src/protocol/signal.js';
import { ask, body, deliver, fakeGateway, fakeLink, joinedEngine, publish, sha256, sleep } from './fakes.js';

const ID = '/s/0/100.ts';

/** Waits until the engine has sent a request over `link`; returns it. */
async function requestOn(link) {
  for (let i = 0; i < 100; i++) {
    const r = link.frames.find((f) => f.type === 'request');
    if (r) return r;
    await sleep(5);
  }
  assert.fail('no request was sent');
}

/**
 * A joined engine, a gateway serving `bytes` at ID with its digest published, and peer p-2 that
 * has it and has just been asked for it (the player needs it in 5 s). Runs `run` with them, then
 * destroys the engine.
 */
async function withRequestToPeer(bytes, run) {
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch });
  try {
    publish(engine, ID, bytes);
    const link = fakeLink(engine, conn, 'p-2');
    link.has.add(ID);
    const got = ask(engine, ID, 5000);
    const req = await requestOn(link);
    await run({ engine, conn, gw, link, got, req });
  } finally {
    engine.destroy();
  }
}

test('a verified peer segment goes to the player, is stored, counted and reported', async () => {
  const bytes = body(40_000);
  await withRequestToPeer(bytes, async ({ engine, conn, gw, link, got, req }) => {
    assert.deepEqual({ ...req, request_id: 0 }, { type: 'request', request_id: 0, segment: ID, offset: 0 });
    assert.equal(link.inFlight, 1);
    deliver(engine, conn, link, req.request_id, bytes);
    const r = await got;
    assert.ok(r.ok);
    assert.equal(r.source, 'p2p');
    assert.deepEqual(new Uint8Array(r.data), bytes);
    assert.ok(r.timing.end >= r.timing.first && r.timing.first >= r.timing.start);
    assert.equal(gw.requests.length, 0, 'no HTTP');
    assert.equal(engine.stats.p2pBytes, bytes.length);
    assert.equal(engine.stats.verifiedSegments, 1);
    assert.equal(engine.stats.rejectedSegments, 0);
    assert.equal(link.inFlight, 0);
    assert.ok(link.rate > 0, 'the peer rate is measured');
    assert.ok(engine.store.has(ID));
    const report = engine.reportMessage();
    assert.deepEqual(report.peers, [{ peer_id: 'p-2', ok: 1, failed: 0, mismatch: 0, bytes: bytes.length }]);
    assert.equal(report.p2p_bytes, bytes.length);
    assert.equal(report.p2p_segments, 1);
    encodeClient(report); // valid on the wire
    const next = engine.reportMessage();
    assert.equal(next.p2p_bytes, 0, 'reports carry deltas');
    assert.equal('peers' in next, false);
  });
});

test('a body that fails the digest is never delivered: mismatch, ban, HTTP', async () => {
  const bytes = body(40_000);
  await withRequestToPeer(bytes, async ({ engine, conn, gw, link, got, req }) => {
    deliver(engine, conn, link, req.request_id, bytes, { corrupt: true }); // claims the true digest
    const r = await got;
    assert.ok(r.ok);
    assert.equal(r.source, 'http');
    assert.deepEqual(new Uint8Array(r.data), bytes, 'the player gets the gateway bytes');
    assert.deepEqual(gw.requests, [{ path: ID, range: null }]);
    assert.equal(engine.stats.rejectedSegments, 1);
    assert.equal(engine.stats.verifiedSegments, 0);
    assert.equal(engine.stats.failures.mismatch, 1);
    assert.equal(engine.stats.p2pBytes, 0);
    assert.equal(engine.stats.httpBytes, bytes.length);
    assert.equal(link.closedWith, 'banned');
    assert.ok(engine.banned.has('p-2'));
    assert.equal(engine.store.peek(ID).sha256, sha256(bytes));
    assert.deepEqual(engine.reportMessage().peers, [{ peer_id: 'p-2', ok: 0, failed: 0, mismatch: 1, bytes: 0 }]);
  });
});

test('a Response claiming another digest or size is cancelled at once', async () => {
  for (const claim of [{ digest: sha256(body(10)) }, { size: 39_999 }]) {
    const bytes = body(40_000);
    const gw = fakeGateway(new Map([[ID, bytes]]));
    const { engine, conn } = joinedEngine({ fetch: gw.fetch });
    try {
      publish(engine, ID, bytes);
      const link = fakeLink(engine, conn, 'p-2');
      link.has.add(ID);
      const got = ask(engine, ID, 5000);
      const req = await requestOn(link);
      engine.onFrame(conn, link, {
        type: 'response',
        request_id: req.request_id,
        size: claim.size ?? bytes.length,
        offset: 0,
        digest: Buffer.from(claim.digest ?? sha256(bytes), 'hex'),
      });
      assert.deepEqual(link.frames.at(-1), { type: 'cancel', request_id: req.request_id });
      assert.equal(engine.stats.failures.mismatch, 1);
      assert.equal(engine.stats.rejectedSegments, 1);
      assert.ok(engine.banned.has('p-2'));
      const r = await got;
      assert.equal(r.source, 'http', JSON.stringify(claim));
    } finally {
      engine.destroy();
    }
  }
});

test('a chunk out of order is a protocol lie', async () => {
  const bytes = body(40_000);
  await withRequestToPeer(bytes, async ({ engine, conn, link, got, req }) => {
    engine.onFrame(conn, link, { type: 'response', request_id: req.request_id, size: bytes.length, offset: 0, digest: Buffer.from(sha256(bytes), 'hex') });
    engine.onFrame(conn, link, { type: 'chunk', request_id: req.request_id, offset: 16384, data: bytes.slice(16384, 32768) });
    assert.equal(engine.stats.failures.mismatch, 1);
    assert.equal((await got).source, 'http');
  });
});

test('without a gateway digest a peer is never asked, even one that has it', async () => {
  const bytes = body(1000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch });
  try {
    const link = fakeLink(engine, conn, 'p-2');
    link.has.add(ID);
    const r = await ask(engine, ID, 3000);
    assert.equal(r.source, 'http');
    assert.equal(link.frames.filter((f) => f.type === 'request').length, 0);
  } finally {
    engine.destroy();
  }
});

test('a segment asked for far ahead that no peer has goes over HTTP at once, not at the urgent window', async () => {
  const bytes = body(1000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch });
  try {
    publish(engine, ID, bytes);
    fakeLink(engine, conn, 'p-2'); // a peer without the segment
    const started = performance.now();
    const r = await ask(engine, ID, 25_000); // hls.js filling a 30 s buffer
    assert.equal(r.source, 'http');
    assert.ok(performance.now() - started < 2000, 'no wait for the 6 s urgent window');
    assert.deepEqual(gw.requests, [{ path: ID, range: null }]);
  } finally {
    engine.destroy();
  }
});

test('absent: the peer loses the segment from its Have, HTTP delivers', async () => {
  const bytes = body(1000);
  await withRequestToPeer(bytes, async ({ engine, conn, link, got, req }) => {
    engine.onFrame(conn, link, { type: 'absent', request_id: req.request_id });
    assert.equal(link.has.has(ID), false);
    assert.equal(engine.stats.failures.absent, 1);
    assert.equal((await got).source, 'http');
    assert.equal(engine.banned.has('p-2'), false, 'absent is not a lie');
  });
});

test('a link lost mid-transfer counts a disconnect; HTTP takes over', async () => {
  const bytes = body(40_000);
  await withRequestToPeer(bytes, async ({ engine, conn, link, got, req }) => {
    engine.onFrame(conn, link, { type: 'response', request_id: req.request_id, size: bytes.length, offset: 0, digest: Buffer.from(sha256(bytes), 'hex') });
    engine.onFrame(conn, link, { type: 'chunk', request_id: req.request_id, offset: 0, data: bytes.slice(0, 16384) });
    link.close('channel closed');
    assert.equal(engine.stats.failures.disconnect, 1);
    const r = await got;
    assert.equal(r.source, 'http');
    assert.deepEqual(new Uint8Array(r.data), bytes);
  });
});

test('replace with HTTP keeps the verified-later peer prefix and asks for the rest with a Range', async () => {
  const bytes = body(100_000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch });
  try {
    publish(engine, ID, bytes);
    const link = fakeLink(engine, conn, 'p-2');
    link.has.add(ID);
    const got = ask(engine, ID, 4000);
    const req = await requestOn(link);
    engine.onFrame(conn, link, { type: 'response', request_id: req.request_id, size: bytes.length, offset: 0, digest: Buffer.from(sha256(bytes), 'hex') });
    engine.onFrame(conn, link, { type: 'chunk', request_id: req.request_id, offset: 0, data: bytes.slice(0, 32768) });
    // The peer stops: after the stall threshold the scheduler replaces it from byte 32768.
    const r = await got;
    assert.equal(r.source, 'http');
    assert.deepEqual(new Uint8Array(r.data), bytes);
    assert.deepEqual(gw.requests, [{ path: ID, range: 'bytes=32768-' }]);
    assert.equal(engine.stats.p2pBytes, 32768, 'the peer part counts as P2P bytes');
    assert.equal(engine.stats.httpBytes, bytes.length - 32768);
    assert.equal(engine.stats.failures.timeout, 1);
    assert.deepEqual(link.frames.at(-1), { type: 'cancel', request_id: req.request_id });
  } finally {
    engine.destroy();
  }
});

test('a non-seeder waits for the senior peer of a fresh live segment, then gets it from it', async () => {
  const bytes = body(30_000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch });
  try {
    engine.live = true;
    const senior = fakeLink(engine, conn, 'p-1');
    conn.older = new Set(['p-1']); // p-1 was listed in our first peers message
    assert.equal(engine.isSeeder(conn), false);
    publish(engine, ID, bytes);
    const got = ask(engine, ID, 5000); // fresh live: first seen now
    await sleep(300);
    assert.equal(gw.requests.length, 0, 'the non-seeder waits');
    senior.has.add(ID); // its Have arrives
    engine.onFrame(conn, senior, { type: 'have', segments: [ID] });
    const req = await requestOn(senior);
    deliver(engine, conn, senior, req.request_id, bytes);
    assert.equal((await got).source, 'p2p');
    assert.equal(gw.requests.length, 0);
  } finally {
    engine.destroy();
  }
});

test('the senior peer seeds: fresh live segments over HTTP at once', async () => {
  const bytes = body(30_000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch });
  try {
    engine.live = true;
    const newer = fakeLink(engine, conn, 'p-9'); // listed only after our first peers message
    newer.has.add(ID);
    assert.equal(engine.isSeeder(conn), true);
    publish(engine, ID, bytes);
    const r = await ask(engine, ID, 5000);
    assert.equal(r.source, 'http');
    assert.equal(newer.frames.filter((f) => f.type === 'request').length, 0);
    // A senior that is banned does not count.
    conn.older = new Set(['p-9']);
    assert.equal(engine.isSeeder(conn), false);
    engine.banned.set('p-9', true);
    assert.equal(engine.isSeeder(conn), true);
  } finally {
    engine.destroy();
  }
});

test('uploads: stored segments are served, others answered Absent; Have lists verifiable ids', async () => {
  const bytes = body(20_000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch });
  try {
    publish(engine, ID, bytes);
    await ask(engine, ID, 0); // fetched over HTTP, stored
    const link = fakeLink(engine, conn, 'p-3');
    engine.onFrame(conn, link, { type: 'request', request_id: 7, segment: ID, offset: 0 });
    assert.equal(link.uploads.length, 1);
    assert.equal(link.uploads[0].requestId, 7);
    assert.equal(Buffer.from(link.uploads[0].digest).toString('hex'), sha256(bytes));
    engine.onFrame(conn, link, { type: 'request', request_id: 8, segment: '/s/0/unknown.ts', offset: 0 });
    engine.onFrame(conn, link, { type: 'request', request_id: 9, segment: ID, offset: bytes.length + 1 });
    assert.deepEqual(link.frames, [
      { type: 'absent', request_id: 8 },
      { type: 'absent', request_id: 9 },
    ]);
    assert.deepEqual(engine.haveFrame(conn, link), { type: 'have', segments: [ID] });
    // A stored segment whose digest this swarm never published is not announced.
    engine.store.put({ id: '/s/1/5.ts', bytes: body(10), sha256: sha256(body(10)), source: 'http', timing: { start: 0, first: 0, end: 0 } });
    assert.deepEqual(engine.haveFrame(conn, link).segments, [ID]);
  } finally {
    engine.destroy();
  }
});

test('upload off: empty Have, every request Absent', async () => {
  const bytes = body(2000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine, conn } = joinedEngine({ fetch: gw.fetch, options: { upload: false } });
  try {
    publish(engine, ID, bytes);
    await ask(engine, ID, 0);
    const link = fakeLink(engine, conn, 'p-3');
    assert.deepEqual(engine.haveFrame(conn, link), { type: 'have', segments: [] });
    engine.onFrame(conn, link, { type: 'request', request_id: 1, segment: ID, offset: 0 });
    assert.deepEqual(link.frames, [{ type: 'absent', request_id: 1 }]);
  } finally {
    engine.destroy();
  }
});

test('HTTP errors reach the player when nothing else can deliver', async () => {
  const gw = fakeGateway(new Map());
  const { engine } = joinedEngine({ fetch: gw.fetch });
  try {
    const r = await ask(engine, '/s/0/missing.ts', 0);
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 404);
    assert.equal(engine.needs.size, 0);
  } finally {
    engine.destroy();
  }
});

test('two requests for one segment share one fetch', async () => {
  const bytes = body(5000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const { engine } = joinedEngine({ fetch: gw.fetch });
  try {
    const [a, b] = await Promise.all([ask(engine, ID, 0), ask(engine, ID, 0)]);
    assert.equal(gw.requests.length, 1);
    assert.deepEqual(new Uint8Array(a.data), bytes);
    assert.notEqual(a.data, b.data, 'each gets its own copy (hls.js may transfer it)');
    new Uint8Array(a.data).fill(0);
    assert.deepEqual(engine.store.peek(ID).bytes, bytes, 'the store keeps its own bytes');
  } finally {
    engine.destroy();
  }
});

test('slow HTTP makes the scheduler start HTTP earlier (measured rate below the configured one)', async () => {
  const bytes = body(10_000);
  const gw = fakeGateway(new Map([[ID, bytes]]));
  const slowFetch = async (url, init) => {
    await sleep(100);
    return gw.fetch(url, init);
  };
  const { engine } = joinedEngine({ fetch: slowFetch });
  try {
    assert.equal(engine.schedulerNow(), engine.scheduler, 'nothing measured yet: the configured rate');
    await ask(engine, ID, 0);
    assert.ok(engine.httpRate > 0 && engine.httpRate <= 100_000, `10 kB in ≥ 100 ms, measured ${engine.httpRate} B/s`);
    const s = engine.schedulerNow();
    assert.equal(s.config.httpRate, engine.httpRate);
    const need = { segment: '/x', size: 100_000, playsAt: 10_000, freshLive: false };
    assert.ok(s.httpStartBy(need) <= engine.scheduler.httpStartBy(need) - 900, 'HTTP starts about a second earlier');
  } finally {
    engine.destroy();
  }
});
