// The player page's pure helpers: the ring of samples, rates over a trailing window, the chart's
// scales and layout, the summary line, and the "play another stream" box's URL handling.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  DeliveryHistory,
  Ring,
  formatBytes,
  formatKbps,
  formatSeconds,
  layoutChart,
  niceCeil,
  shortPeerId,
  summaryText,
  ticks,
} from '../../src/page/series.js';
import { streamQuery } from '../../src/page/stream-url.js';

test('Ring keeps the newest `capacity` items, oldest first', () => {
  const r = new Ring(3);
  assert.deepEqual(r.toArray(), []);
  assert.equal(r.at(0), undefined);
  assert.equal(r.at(-1), undefined);
  r.push(1);
  r.push(2);
  assert.deepEqual(r.toArray(), [1, 2]);
  assert.equal(r.length, 2);
  r.push(3);
  r.push(4);
  r.push(5);
  assert.deepEqual(r.toArray(), [3, 4, 5]);
  assert.equal(r.length, 3);
  assert.equal(r.at(0), 3);
  assert.equal(r.at(2), 5);
  assert.equal(r.at(-1), 5);
  assert.equal(r.at(-3), 3);
  assert.equal(r.at(3), undefined);
  assert.equal(r.at(-4), undefined);
  assert.equal(r.at(0.5), undefined);
  for (let i = 6; i < 100; i++) r.push(i);
  assert.deepEqual(r.toArray(), [97, 98, 99]);
  r.clear();
  assert.equal(r.length, 0);
  assert.deepEqual(r.toArray(), []);
  assert.throws(() => new Ring(0), RangeError);
  assert.throws(() => new Ring(1.5), RangeError);
});

test('DeliveryHistory: rates in bits/s over the trailing window, latency carried along', () => {
  const h = new DeliveryHistory({ spanMs: 10_000, everyMs: 1000, rateWindowMs: 2000 });
  assert.deepEqual(h.points(), []);
  // 1000 B/s from peers, 500 B/s over HTTP from the start; latency from the third sample.
  for (let i = 0; i <= 4; i++) h.add(i * 1000, i * 1000, i * 500, i >= 2 ? 4 + i / 10 : null);
  const p = h.points();
  assert.equal(p.length, 5);
  assert.deepEqual(p[0], { t: 0, p2pRate: 0, httpRate: 0, latency: null });
  assert.deepEqual(p[1], { t: 1000, p2pRate: 8000, httpRate: 4000, latency: null });
  // Over 2 s from sample 2 on.
  assert.deepEqual(p[4], { t: 4000, p2pRate: 8000, httpRate: 4000, latency: 4.4 });
  assert.equal(h.length, 5);
});

test('DeliveryHistory: a burst is spread over the window; older samples leave the span', () => {
  const h = new DeliveryHistory({ spanMs: 5000, everyMs: 1000, rateWindowMs: 4000 });
  let bytes = 0;
  for (let t = 0; t <= 20_000; t += 1000) {
    if (t === 10_000) bytes += 100_000; // one segment
    h.add(t, bytes, 0);
  }
  const p = h.points();
  assert.equal(p[0].t, 15_000, 'only the last 5 s are drawn');
  assert.equal(p[p.length - 1].t, 20_000);
  const at = (t) => h.points().find((x) => x.t === t);
  assert.equal(at(14_000), undefined);
  assert.equal(at(15_000).p2pRate, 0, 'the burst is out of the window by then');
  // The ring keeps the span plus the window (and two more).
  assert.ok(h.length <= Math.ceil((5000 + 4000) / 1000) + 2, String(h.length));

  const g = new DeliveryHistory({ spanMs: 60_000, rateWindowMs: 4000 });
  g.add(0, 0, 0);
  g.add(1000, 100_000, 0);
  g.add(2000, 100_000, 0);
  g.add(4000, 100_000, 0);
  g.add(6000, 100_000, 0);
  const q = g.points();
  assert.equal(q[1].p2pRate, 800_000);
  assert.equal(q[2].p2pRate, 400_000, 'the burst over 2 s');
  assert.equal(q[3].p2pRate, 200_000, 'over 4 s (from the sample at 0 s)');
  assert.equal(q[4].p2pRate, 0, 'out of the window');
});

test('DeliveryHistory ignores samples out of order and bad figures; a counter that goes down counts nothing', () => {
  const h = new DeliveryHistory({ spanMs: 60_000, rateWindowMs: 5000 });
  assert.equal(h.add(1000, 10, 10), true);
  assert.equal(h.add(1000, 20, 20), false);
  assert.equal(h.add(500, 20, 20), false);
  assert.equal(h.add(NaN, 20, 20), false);
  assert.equal(h.add(2000, undefined, 1010, NaN), true);
  const p = h.points();
  assert.equal(p.length, 2);
  assert.equal(p[1].p2pRate, 0, 'down from 10 to 0: no bytes');
  assert.equal(p[1].httpRate, 8000);
  assert.equal(p[1].latency, null);
});

test('DeliveryHistory.summary: bytes and share over the span, rates and latency now', () => {
  const h = new DeliveryHistory({ spanMs: 10_000, rateWindowMs: 2000 });
  assert.deepEqual(h.summary(), { seconds: 0, p2pBytes: 0, httpBytes: 0, share: null, p2pRate: 0, httpRate: 0, latency: null });
  for (let i = 0; i <= 20; i++) h.add(i * 1000, 5_000_000 + i * 3000, 7_000_000 + i * 1000, 6.25);
  const s = h.summary();
  assert.equal(s.seconds, 10);
  assert.equal(s.p2pBytes, 30_000);
  assert.equal(s.httpBytes, 10_000);
  assert.equal(s.share, 0.75);
  assert.equal(s.p2pRate, 24_000);
  assert.equal(s.httpRate, 8000);
  assert.equal(s.latency, 6.25);
  assert.equal(
    summaryText(s, 10_000),
    'Last 10 s: 75 % of 39.1 KiB from peers. Now 24 kbit/s from peers, 8 kbit/s over HTTP. Live latency 6.3 s.',
  );
  assert.equal(summaryText(h.summary(), 180_000).startsWith('Last 10 s: '), true, 'a span not full yet says how long');
  assert.equal(summaryText({ seconds: 0 }), 'Collecting the first samples…');
  assert.equal(
    summaryText({ seconds: 180, p2pBytes: 0, httpBytes: 0, share: null, p2pRate: 0, httpRate: 0, latency: null }),
    'Last 3 min: no segment bytes. Now 0 kbit/s from peers, 0 kbit/s over HTTP.',
  );
});

test('niceCeil and ticks give round scales', () => {
  assert.equal(niceCeil(0), 1);
  assert.equal(niceCeil(-5), 1);
  assert.equal(niceCeil(NaN), 1);
  assert.equal(niceCeil(50, 100), 100);
  assert.equal(niceCeil(101, 100), 200);
  assert.equal(niceCeil(1), 1);
  assert.equal(niceCeil(1.01, 0), 2);
  assert.equal(niceCeil(2.2, 0), 2.5);
  assert.equal(niceCeil(3, 0), 5);
  assert.equal(niceCeil(7, 0), 10);
  assert.equal(niceCeil(0.29, 0), 0.5);
  assert.equal(niceCeil(0.3, 0.1), 0.5);
  assert.equal(niceCeil(0.2, 0.1), 0.2);
  assert.equal(niceCeil(1234, 100), 2000);
  assert.equal(niceCeil(2001, 100), 2500);
  assert.equal(niceCeil(4999, 100), 5000);
  assert.equal(niceCeil(5001, 100), 10_000);
  assert.deepEqual(ticks(1000), [0, 250, 500, 750, 1000]);
  assert.deepEqual(ticks(2.5), [0, 0.625, 1.25, 1.875, 2.5]);
  assert.deepEqual(ticks(1, 2), [0, 0.5, 1]);
});

test('layoutChart stacks HTTP on peers, scales both axes, and breaks the latency line on gaps', () => {
  const points = [
    { t: 0, p2pRate: 0, httpRate: 0, latency: null },
    { t: 90_000, p2pRate: 600_000, httpRate: 200_000, latency: 4 },
    { t: 120_000, p2pRate: 300_000, httpRate: 100_000, latency: null },
    { t: 180_000, p2pRate: 0, httpRate: 900_000, latency: 9 },
  ];
  const pad = { left: 50, right: 50, top: 0, bottom: 0 };
  const L = layoutChart(points, { width: 400, height: 100, pad, spanMs: 180_000 });
  assert.deepEqual(L.plot, { left: 50, top: 0, width: 300, height: 100 });
  assert.equal(L.baseline, 100);
  assert.equal(L.rate.max, 1000, '900 kbit/s at most, with headroom: 1000');
  assert.deepEqual(L.rate.ticks, [0, 250, 500, 750, 1000]);
  assert.equal(L.latencyScale.max, 10, '9 s with headroom: 10');
  // x: the newest point at the right edge, 180 s before it at the left.
  assert.deepEqual(L.p2p.map(([x]) => x), [50, 200, 250, 350]);
  assert.deepEqual(L.p2p.map(([, y]) => y), [100, 40, 70, 100]);
  assert.deepEqual(L.total.map(([, y]) => y), [100, 20, 60, 10]);
  assert.deepEqual(L.latency, [[[200, 60]], [[350, 10]]]);
  assert.equal(L.rate.y(2000), 0, 'clamped at the top');
  assert.equal(L.latencyScale.y(-1), 100, 'clamped at the bottom');

  const empty = layoutChart([], { width: 10, height: 10 });
  assert.equal(empty.rate.max, 100, 'a minimum scale of 100 kbit/s');
  assert.equal(empty.latencyScale.max, 1);
  assert.deepEqual(empty.p2p, []);
  assert.equal(empty.plot.width, 1, 'never a zero or negative plot');
});

test('formatting for the page', () => {
  assert.equal(formatKbps(1_234_567), '1235 kbit/s');
  assert.equal(formatKbps(0), '0 kbit/s');
  assert.equal(formatKbps(null), '–');
  assert.equal(formatKbps(-1), '–');
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(2048), '2.0 KiB');
  assert.equal(formatBytes(3 * 1024 * 1024), '3.00 MiB');
  assert.equal(formatBytes(undefined), '–');
  assert.equal(formatSeconds(4.24), '4.2 s');
  assert.equal(formatSeconds(null), '–');
  assert.equal(shortPeerId('abcdefgh'), 'abcdefgh');
  assert.equal(shortPeerId('abcdefghi'), 'abcdefghi');
  assert.equal(shortPeerId('0123456789abcdef'), '01234567…');
  assert.equal(shortPeerId(null), '');
});

test('streamQuery: a path or a same-origin URL becomes ?src=, other parameters kept but level', () => {
  const page = 'http://127.0.0.1:8080/player?src=/demo/live/master.m3u8&level=0&p2p=0&trace=1';
  assert.deepEqual(streamQuery('/demo/vod/master.m3u8', page), {
    query: '?src=/demo/vod/master.m3u8&p2p=0&trace=1',
    src: '/demo/vod/master.m3u8',
  });
  assert.deepEqual(streamQuery('  http://127.0.0.1:8080/demo/vod/master.m3u8#x ', 'http://127.0.0.1:8080/'), {
    query: '?src=/demo/vod/master.m3u8',
    src: '/demo/vod/master.m3u8',
  });
  // A token in the stream's URL stays with it (encoded in the page's query).
  const signed = streamQuery('/demo/vod/master.m3u8?token=a.b=', 'http://127.0.0.1:8080/player');
  assert.equal(signed.src, '/demo/vod/master.m3u8?token=a.b=');
  assert.equal(new URLSearchParams(signed.query).get('src'), '/demo/vod/master.m3u8?token=a.b=');
  // Relative to the page.
  assert.equal(streamQuery('demo/vod/master.m3u8', 'http://127.0.0.1:8080/player').src, '/demo/vod/master.m3u8');
  assert.match(streamQuery('', page).error, /Enter/);
  assert.match(streamQuery('   ', page).error, /Enter/);
  assert.match(streamQuery('https://elsewhere.example/live.m3u8', page).error, /Only streams this gateway serves/);
  assert.match(streamQuery('http://127.0.0.1:9999/demo/vod/master.m3u8', page).error, /Only streams/);
  assert.match(streamQuery('http://[::1', page).error, /Not a URL/);
});
