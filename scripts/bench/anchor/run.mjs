// Drives scripts/bench/anchor.sh: the same live stream of a fresh gateway, played in Debian's
// Chromium by VIEWERS viewers joining every JOIN_EVERY seconds, each setup in turn:
//   ours         the gateway's own player page (hls.js + our engine, the gateway's tracker)
//   ours-http    the same page without the engine (?p2p=0): hls.js alone, the HTTP baseline
//   pml-default  hls.js + p2p-media-loader 2.3 with its default settings (local bittorrent-tracker)
//   pml-live     the same with live tuning (pml-page.js says which)
// Every viewer is measured the same way for every setup, by a script the driver puts in its page:
// startup (navigation to the first `playing`), stalls (`waiting` after the first `playing`, not
// while seeking), live latency (hls.js's `latency`, sampled each second once playing, median);
// segment bytes by source from each engine's own counters. Prints a Markdown table and writes
// JSON. Loopback only.

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import TrackerServer from 'bittorrent-tracker/server';
import { chromium } from 'playwright-core';

const env = process.env;
const GATEWAY_BIN = env.GATEWAY_BIN;
const PAGE_DIR = env.PAGE_DIR;
const VIEWERS = Number(env.VIEWERS ?? 4);
const JOIN_EVERY = Number(env.JOIN_EVERY ?? 10);
const WATCH = Number(env.WATCH ?? 60); // seconds after the last join
const ROUNDS = Number(env.ROUNDS ?? 1);
const STREAM = env.STREAM ?? '/demo/live/master.m3u8';
const OUT = env.OUT ?? 'anchor.json';
const SETUPS = (env.SETUPS ?? 'ours,pml-default,pml-live').split(',');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.error('[anchor]', ...a);

/** The same measuring for every page: startup, stalls, nothing engine-specific. */
const MEASURE = () => {
  const m = { firstPlaying: null, stalls: 0 };
  window.__measure = m;
  document.addEventListener('playing', () => {
    if (m.firstPlaying === null) m.firstPlaying = performance.now();
  }, true);
  document.addEventListener('waiting', (e) => {
    if (m.firstPlaying !== null && !e.target.seeking) m.stalls++;
  }, true);
};

async function startGateway() {
  const childEnv = Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('GATEWAY_')));
  const child = spawn(GATEWAY_BIN, ['--listen', '127.0.0.1:0', '--log-level', 'warn'], { env: childEnv });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  for (let i = 0; i < 300; i++) {
    const m = out.match(/gateway listening on (http:\/\/127\.0\.0\.1:\d+)\//);
    if (m) return { url: m[1], stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }) };
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`gateway did not start: ${out}`);
}

async function startStatic() {
  const files = { '/pml.html': 'text/html', '/pml.bundle.js': 'text/javascript' };
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (!files[path]) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': files[path] }).end(readFileSync(join(PAGE_DIR, path)));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

async function startTracker() {
  const server = new TrackerServer({ udp: false, http: false, ws: true, stats: false });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return { url: `ws://127.0.0.1:${server.ws.address().port}`, close: () => server.close() };
}

function median(values) {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : null;
}

async function openViewer(browser, setup, gw, page0, tracker) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.addInitScript(MEASURE);
  const url = setup.startsWith('ours')
    ? `${gw.url}/player?src=${STREAM}${setup === 'ours-http' ? '&p2p=0' : ''}`
    : `${page0.url}/pml.html?src=${encodeURIComponent(gw.url + STREAM)}&tracker=${encodeURIComponent(tracker.url)}&tuning=${setup === 'pml-live' ? 'live' : 'default'}`;
  await page.goto(url, { waitUntil: 'load' });
  const viewer = { setup, page, context, latencies: [] };
  viewer.sampler = setInterval(async () => {
    try {
      const l = await page.evaluate(() => (window.__measure?.firstPlaying != null ? window.hls?.latency : null));
      if (Number.isFinite(l) && l > 0) viewer.latencies.push(l);
    } catch {
      /* closing */
    }
  }, 1000);
  return viewer;
}

async function readViewer(v) {
  clearInterval(v.sampler);
  const s = await v.page.evaluate(() => {
    const m = window.__measure;
    const bytes = window.p2pStats
      ? { http: window.p2pStats.httpBytes ?? 0, p2p: window.p2pStats.p2pBytes ?? 0 }
      : { ...window.pmlBytes };
    return { startupMs: m.firstPlaying, stalls: m.stalls, bytes };
  });
  const total = s.bytes.http + s.bytes.p2p;
  return {
    startup_ms: s.startupMs === null ? null : Math.round(s.startupMs),
    stalls: s.stalls,
    http_bytes: s.bytes.http,
    p2p_bytes: s.bytes.p2p,
    offload: total > 0 ? s.bytes.p2p / total : 0,
    live_latency_s: median(v.latencies),
  };
}

async function runSetup(browser, setup, page0, tracker) {
  const gw = await startGateway();
  const viewers = [];
  try {
    for (let i = 0; i < VIEWERS; i++) {
      if (i > 0) await sleep(JOIN_EVERY * 1000);
      viewers.push(await openViewer(browser, setup, gw, page0, tracker));
    }
    await sleep(WATCH * 1000);
    const results = [];
    for (const v of viewers) results.push(await readViewer(v));
    return results;
  } finally {
    for (const v of viewers) await v.context.close().catch(() => {});
    await gw.stop();
  }
}

const page0 = await startStatic();
const tracker = await startTracker();
const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required',
    '--disable-features=WebRtcHideLocalIpsWithMdns', '--allow-loopback-in-peer-connection',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows',
  ],
});
const runs = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    // Taking turns: every round plays every setup, in an order that rotates.
    const order = SETUPS.map((_, i) => SETUPS[(i + round) % SETUPS.length]);
    for (const setup of order) {
      log(`round ${round + 1}: ${setup}, ${VIEWERS} viewers every ${JOIN_EVERY} s, ${WATCH} s after the last`);
      runs.push({ round, setup, viewers: await runSetup(browser, setup, page0, tracker) });
    }
  }
} finally {
  await browser.close();
  tracker.close();
  page0.close();
}
writeFileSync(OUT, JSON.stringify({ viewers: VIEWERS, join_every_s: JOIN_EVERY, watch_s: WATCH, stream: STREAM, runs }, null, 2));

const pct = (x) => `${(x * 100).toFixed(1)}%`;
console.log('| setup | round | viewer | offload | stalls | startup | live latency |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const r of runs) {
  r.viewers.forEach((v, i) => {
    console.log(`| ${r.setup} | ${r.round + 1} | ${i + 1} | ${pct(v.offload)} | ${v.stalls} | ${v.startup_ms ?? '–'} ms | ${v.live_latency_s?.toFixed(1) ?? '–'} s |`);
  });
}
console.log('\n| setup | joiners\' offload (median) | all viewers\' offload (median) | stalls (all) | startup (median) | live latency (median) |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const setup of SETUPS) {
  const vs = runs.filter((r) => r.setup === setup).flatMap((r) => r.viewers);
  const joiners = runs.filter((r) => r.setup === setup).flatMap((r) => r.viewers.slice(1));
  console.log(`| ${setup} | ${pct(median(joiners.map((v) => v.offload)) ?? 0)} | ${pct(median(vs.map((v) => v.offload)) ?? 0)} | ${vs.reduce((n, v) => n + v.stalls, 0)} | ${median(vs.map((v) => v.startup_ms))} ms | ${median(vs.map((v) => v.live_latency_s))?.toFixed(1)} s |`);
}
