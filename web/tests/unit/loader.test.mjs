// The hls.js fragment loader: hls.js's Loader interface, truthful LoadStats (real transfer times,
// also for store hits), abort, and hls.js's own loader for what the engine does not take.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createP2PLoader, loadingTimes, newLoadStats } from '../../src/loader.js';
import { GATEWAY, body, fakeGateway, newEngine, sleep } from './fakes.js';

/** A stand-in for hls.js's default loader: records its use, answers from `bytes`. */
function fakeHls(bytes = body(10)) {
  const used = [];
  class DefaultLoader {
    constructor(config) {
      this.config = config;
      this.stats = newLoadStats();
    }
    load(context, config, callbacks) {
      used.push(context);
      this.stats.loading.start = 1;
      this.stats.loading.first = 2;
      this.stats.loading.end = 3;
      this.stats.loaded = bytes.length;
      queueMicrotask(() => callbacks.onSuccess({ url: context.url, data: bytes.slice().buffer }, this.stats, context, null));
    }
    abort() {}
    destroy() {}
  }
  return { Hls: { DefaultConfig: { loader: DefaultLoader } }, used };
}

const context = (url, extra = {}) => ({
  url,
  responseType: 'arraybuffer',
  type: 'media-fragment',
  frag: { type: 'main', level: 0, sn: 5, start: 10, duration: 2 },
  part: null,
  headers: {},
  rangeStart: 0,
  rangeEnd: 0,
  ...extra,
});
const loadConfig = { loadPolicy: { maxLoadTimeMs: 20_000 }, timeout: 20_000, maxRetry: 0, retryDelay: 0, maxRetryDelay: 0 };

/** Loads `ctx` with a fresh loader; resolves with the callback that was called. */
function load(Loader, ctx) {
  const loader = new Loader({});
  return new Promise((resolve) => {
    loader.load(ctx, loadConfig, {
      onSuccess: (response, stats, c, details) => resolve({ kind: 'success', response, stats, loader }),
      onError: (error, c, details, stats) => resolve({ kind: 'error', error, stats, loader }),
      onTimeout: (stats) => resolve({ kind: 'timeout', stats, loader }),
      onAbort: (stats) => resolve({ kind: 'abort', stats, loader }),
    });
  });
}

test('loadingTimes keeps the durations and ends at delivery', () => {
  assert.deepEqual(loadingTimes({ start: 100, first: 150, end: 600 }, 600), { start: 100, first: 150, end: 600 });
  assert.deepEqual(loadingTimes({ start: 100, first: 150, end: 600 }, 5600), { start: 5100, first: 5150, end: 5600 });
  // A first byte outside the transfer is clamped into it.
  assert.deepEqual(loadingTimes({ start: 100, first: 0, end: 600 }, 600), { start: 100, first: 100, end: 600 });
});

test('a store hit reports the earlier transfer\'s times, not a near-zero copy', async () => {
  const id = '/s/0/5.ts';
  const bytes = body(48_000);
  const gw = fakeGateway(new Map([[id, bytes]]), { delayMs: 80 });
  const engine = newEngine({ gateway: gw });
  try {
    const { Hls, used } = fakeHls();
    const Loader = createP2PLoader(Hls, engine);
    const first = (await load(Loader, context(GATEWAY + id))).loader.stats.loading;
    const took = first.end - first.start;
    assert.ok(took >= 70, `the HTTP transfer took ${took} ms`);
    await sleep(50);
    const before = performance.now();
    const r = await load(Loader, context(GATEWAY + id));
    const after = performance.now();
    assert.equal(r.kind, 'success');
    assert.equal(used.length, 0, 'not hls.js\'s loader');
    assert.equal(gw.requests.length, 1, 'from the store');
    const s = r.loader.stats;
    assert.equal(r.stats, s, 'the stats object hls.js holds');
    assert.ok(Math.abs(s.loading.end - s.loading.start - took) < 1e-6, `transfer took ${took} ms, stats say ${s.loading.end - s.loading.start}`);
    assert.ok(Math.abs(s.loading.first - s.loading.start - (first.first - first.start)) < 1e-6);
    assert.ok(s.loading.end >= before && s.loading.end <= after, 'ends when handed over');
    assert.equal(s.loaded, bytes.length);
    assert.equal(s.total, bytes.length);
    assert.equal(s.aborted, false);
    assert.deepEqual(new Uint8Array(r.response.data), bytes);
    assert.equal(r.response.code, 200);
    assert.equal(engine.stats.httpBytes + engine.stats.p2pBytes, bytes.length, 'a store hit is not counted twice');
  } finally {
    engine.destroy();
  }
});

test('an HTTP fetch reports its own times and bytes', async () => {
  const id = '/s/0/6.ts';
  const bytes = body(30_000);
  const engine = newEngine({ gateway: fakeGateway(new Map([[id, bytes]])) });
  try {
    const { Hls } = fakeHls();
    const before = performance.now();
    const r = await load(createP2PLoader(Hls, engine), context(GATEWAY + id));
    assert.equal(r.kind, 'success');
    const s = r.loader.stats;
    assert.ok(s.loading.start >= before && s.loading.first >= s.loading.start && s.loading.end >= s.loading.first);
    assert.equal(s.loaded, bytes.length);
    assert.equal(engine.stats.httpBytes, bytes.length);
    assert.equal(engine.stats.httpSegments, 1);
  } finally {
    engine.destroy();
  }
});

test('hls.js\'s CMCD goes with the engine\'s HTTP fetch: the query in the URL, the headers as headers', async () => {
  const id = '/s/0/7.ts';
  const bytes = body(20_000);
  const gw = fakeGateway(new Map([[id, bytes], ['/s/0/8.ts', bytes]]));
  const engine = newEngine({ gateway: gw });
  try {
    const { Hls } = fakeHls();
    const Loader = createP2PLoader(Hls, engine);
    // Query mode (hls.js appends the CMCD parameter to context.url).
    const query = await load(Loader, context(`${GATEWAY}${id}?CMCD=bl%3D4000%2Csu`));
    assert.equal(query.kind, 'success');
    // Header mode (hls.js sets context.headers).
    const cmcd = { 'CMCD-Request': 'bl=4000,mtp=25000', 'CMCD-Session': 'sid="abc"' };
    const headers = await load(Loader, context(`${GATEWAY}/s/0/8.ts`, { headers: cmcd }));
    assert.equal(headers.kind, 'success');
    assert.equal(gw.requests.length, 2);
    const [q, h] = gw.requests;
    assert.equal(new URL(q.url).searchParams.get('CMCD'), 'bl=4000,su');
    assert.deepEqual(q.headers, {});
    assert.equal(new URL(h.url).search, '');
    assert.deepEqual(h.headers, cmcd);
    // The segment's id (what peers exchange) is the path either way.
    assert.equal(engine.segmentId(q.url), id);
  } finally {
    engine.destroy();
  }
});

test('a byte-range fragment is a segment of its own: its range over HTTP, its own id', async () => {
  const file = body(1000);
  const gw = fakeGateway(new Map([['/s/0/v.mp4', file]]));
  const engine = newEngine({ gateway: gw });
  try {
    const { Hls, used } = fakeHls();
    const Loader = createP2PLoader(Hls, engine);
    const r = await load(Loader, context(`${GATEWAY}/s/0/v.mp4`, { rangeStart: 100, rangeEnd: 300 }));
    assert.equal(r.kind, 'success');
    assert.equal(used.length, 0, 'the engine took it');
    assert.deepEqual(new Uint8Array(r.response.data), file.slice(100, 300));
    assert.equal(gw.requests.at(-1).range, 'bytes=100-299');
    assert.equal(engine.segmentId(`${GATEWAY}/s/0/v.mp4`, [100, 300]), '/s/0/v.mp4#bytes=100-299');
    assert.equal(engine.segmentId(`${GATEWAY}/s/0/v.mp4`, [300, 300]), null, 'an empty range is no segment');
  } finally {
    engine.destroy();
  }
});

test('a server that ignores the range: the engine keeps only the range asked for', async () => {
  const file = body(1000);
  const gw = fakeGateway(new Map([['/s/0/v.mp4', file]]));
  const whole = gw.fetch;
  gw.fetch = (url, init = {}) => whole(url, { ...init, headers: {} });
  const engine = newEngine({ gateway: gw });
  try {
    const bytes = await engine.fetchBody(`${GATEWAY}/s/0/v.mp4`, 50, undefined, () => {}, null, { offset: 100, length: 200 });
    assert.deepEqual(bytes, file.slice(150, 300));
    const none = await engine.fetchBody(`${GATEWAY}/s/0/v.mp4`, 200, undefined, () => {}, null, { offset: 100, length: 200 });
    assert.equal(none.length, 0, 'nothing left of the range: no request');
  } finally {
    engine.destroy();
  }
});

test('parts and other origins go through hls.js\'s loader', async () => {
  const engine = newEngine({ gateway: fakeGateway(new Map()) });
  try {
    const { Hls, used } = fakeHls(body(123));
    const Loader = createP2PLoader(Hls, engine);
    const cases = [
      context(`${GATEWAY}/s/0/a.ts`, { part: { index: 0 } }),
      context(`${GATEWAY}/s/audio/a.aac`, { part: { index: 0 }, frag: { type: 'audio', level: 0, sn: 1, start: 0 } }),
      context('http://elsewhere.test/s/0/a.ts'),
    ];
    for (const c of cases) {
      const r = await load(Loader, c);
      assert.equal(r.kind, 'success');
      assert.equal(r.loader.stats.loading.end, 3, 'the default loader wrote into the shared stats');
    }
    assert.equal(used.length, 3);
    assert.equal(engine.stats.httpBytes, 3 * 123, 'still counted as HTTP bytes');
    assert.equal(engine.tracks.size, 0, 'no track engine for parts');
  } finally {
    engine.destroy();
  }
});

test('audio and subtitle fragments go through their track\'s engine, counted in the totals and per track', async () => {
  const audio = body(300, 1);
  const vtt = body(40, 2);
  const main = body(500, 3);
  const gw = fakeGateway(new Map([['/s/audio/a.aac', audio], ['/s/subs/1.vtt', vtt], ['/s/0/7.ts', main]]));
  const engine = newEngine({ gateway: gw });
  try {
    const { Hls, used } = fakeHls(body(1));
    const Loader = createP2PLoader(Hls, engine);
    const a = await load(Loader, context(`${GATEWAY}/s/audio/a.aac`, { frag: { type: 'audio', level: 0, sn: 1, start: 0 } }));
    const t = await load(Loader, context(`${GATEWAY}/s/subs/1.vtt`, { frag: { type: 'subtitle', level: 0, sn: 1, start: 0 } }));
    const m = await load(Loader, context(`${GATEWAY}/s/0/7.ts`));
    for (const r of [a, t, m]) assert.equal(r.kind, 'success');
    assert.deepEqual(new Uint8Array(a.response.data), audio);
    assert.equal(used.length, 0, 'not hls.js\'s loader');
    assert.deepEqual([...engine.tracks.keys()], ['audio', 'subtitle']);
    assert.equal(engine.stats.httpBytes, audio.length + vtt.length + main.length, 'totals over the tracks');
    assert.equal(engine.stats.httpSegments, 3);
    assert.equal(engine.stats.tracks.main.httpBytes, main.length);
    assert.equal(engine.stats.tracks.audio.httpBytes, audio.length);
    assert.equal(engine.stats.tracks.subtitle.httpBytes, vtt.length);
    assert.equal(engine.engineFor({ type: 'audio' }), engine.tracks.get('audio'));
    assert.equal(engine.engineFor({ type: 'main' }), engine);
    assert.equal(engine.engineFor({ type: 'other' }), null);
  } finally {
    engine.destroy();
  }
  assert.ok([...engine.tracks.values()].every((e) => e.destroyed), 'destroyed with the main engine');
});

test('abort: onAbort, stats.aborted, and no success afterwards', async () => {
  const id = '/s/0/7.ts';
  const bytes = body(100);
  const engine = newEngine({ gateway: fakeGateway(new Map([[id, bytes]])) });
  try {
    const { Hls } = fakeHls();
    assert.equal((await load(createP2PLoader(Hls, engine), context(GATEWAY + id))).kind, 'success'); // stored
    const loader = new (createP2PLoader(Hls, engine))({});
    const calls = [];
    loader.load(context(GATEWAY + id), loadConfig, {
      onSuccess: () => calls.push('success'),
      onError: () => calls.push('error'),
      onTimeout: () => calls.push('timeout'),
      onAbort: (stats) => calls.push(stats.aborted ? 'abort' : 'abort-without-flag'),
    });
    loader.abort(); // before the store hit is delivered (a microtask)
    await sleep(10);
    assert.deepEqual(calls, ['abort']);
    loader.destroy();
  } finally {
    engine.destroy();
  }
});

test('the load time limit from hls.js\'s policy ends a load with onTimeout', async () => {
  const engine = newEngine({ gateway: { fetch: () => new Promise(() => {}) } }); // a gateway that never answers
  try {
    const { Hls } = fakeHls();
    const loader = new (createP2PLoader(Hls, engine))({});
    const r = await new Promise((resolve) => {
      loader.load(context(`${GATEWAY}/s/0/8.ts`), { ...loadConfig, loadPolicy: { maxLoadTimeMs: 50 } }, {
        onSuccess: () => resolve('success'),
        onError: () => resolve('error'),
        onTimeout: () => resolve('timeout'),
      });
    });
    assert.equal(r, 'timeout');
  } finally {
    engine.destroy();
  }
});
