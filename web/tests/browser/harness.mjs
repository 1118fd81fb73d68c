// Shared pieces of the browser tests: a real gateway (the debug binary, built-in demo origin) on
// 127.0.0.1, Debian's Chromium driven by playwright-core, and native `peer-assist` nodes.
//
// Binaries: $TEST_GATEWAY_BIN and $TEST_PEER_ASSIST_BIN, else target/debug/{gateway,peer-assist} of this
// repository (scripts/test builds them). Chromium: $CHROMIUM, else /usr/bin/chromium.

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const GATEWAY_BIN = process.env.TEST_GATEWAY_BIN ?? join(root, 'target/debug/gateway');
const PEER_ASSIST_BIN = process.env.TEST_PEER_ASSIST_BIN ?? join(root, 'target/debug/peer-assist');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

export const LIVE = '/demo/live/master.m3u8';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function need(path, what) {
  if (!existsSync(path)) {
    throw new Error(`${what} not found at ${path} (run scripts/test, or set the environment variable)`);
  }
}

/** Starts a child process; its output is kept (the last 64 KiB) for failure messages. */
function start(bin, args, name) {
  // The gateway refuses GATEWAY_* variables it does not know: none leak in from the caller.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GATEWAY_')));
  env.RUST_LOG ??= 'warn,dtls=error,webrtc=error,webrtc_ice=error,webrtc_sctp=error';
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const state = { child, name, out: '' };
  const keep = (chunk) => {
    state.out = (state.out + chunk.toString()).slice(-65536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  state.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return state;
}

async function stop(state, signal = 'SIGTERM') {
  if (state.child.exitCode !== null || state.child.signalCode !== null) return state.exited;
  state.child.kill(signal);
  const result = await Promise.race([state.exited, sleep(10_000).then(() => null)]);
  if (result === null) {
    state.child.kill('SIGKILL');
    return state.exited;
  }
  return result;
}

/**
 * A gateway on 127.0.0.1 (ephemeral port) serving the built-in demo and the embedded player;
 * `extra` adds flags (such as --auth-protect).
 */
export async function startGateway(extra = []) {
  need(GATEWAY_BIN, 'the gateway binary');
  const gw = start(GATEWAY_BIN, ['--listen', '127.0.0.1:0', '--log-level', 'warn', ...extra], 'gateway');
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const m = gw.out.match(/gateway listening on (http:\/\/127\.0\.0\.1:\d+)\//);
    if (m) {
      gw.url = m[1];
      gw.stop = () => stop(gw);
      gw.logs = () => gw.out;
      return gw;
    }
    if (gw.child.exitCode !== null) break;
    await sleep(50);
  }
  await stop(gw);
  throw new Error(`gateway did not start:\n${gw.out}`);
}

/** A signing key file in a fresh directory: { dir, file }. */
export function keyFile() {
  const dir = mkdtempSync(join(tmpdir(), 'gw-keys-'));
  const file = join(dir, 'auth.keys');
  writeFileSync(file, 'k1:00112233445566778899aabbccddeeff\n');
  return { dir, file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A token for `prefix`, minted by `gateway token` (the operator's tool). */
export function mintToken(file, prefix, ttl = '10m') {
  const out = execFileSync(GATEWAY_BIN, ['token', '--key-file', file, '--prefix', prefix, '--ttl', ttl]);
  return out.toString().trim();
}

/** Reads one counter family from the gateway's /metrics: the sum over its label sets. */
export async function metric(gw, name) {
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + ' ') || line.startsWith(name + '{')) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

/**
 * A native peer-assist node (WebRTC only, so the browser can reach it) on the demo live stream's
 * rendition 0. `extra` adds flags such as --seed or --test-lie. Resolves once it has started;
 * `finish()` stops it (SIGINT: the node leaves the swarm and writes its summary) and returns its
 * JSON summary.
 */
export async function startNode(gw, extra = []) {
  need(PEER_ASSIST_BIN, 'the peer-assist binary');
  const dir = mkdtempSync(join(tmpdir(), 'p2pa-node-'));
  const json = join(dir, 'summary.json');
  const args = [
    'node', '--gateway', gw.url, '--stream', LIVE, '--rendition', '0',
    '--transport', 'webrtc', '--json', json, ...extra,
  ];
  const node = start(PEER_ASSIST_BIN, args, 'peer-assist');
  node.finish = async () => {
    await stop(node, 'SIGINT');
    try {
      return JSON.parse(readFileSync(json, 'utf8'));
    } catch {
      return null;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  node.logs = () => node.out;
  await sleep(500);
  if (node.child.exitCode !== null) {
    throw new Error(`peer-assist node exited at once:\n${node.out}`);
  }
  return node;
}

export async function launchBrowser() {
  need(CHROMIUM, 'Chromium');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--autoplay-policy=no-user-gesture-required',
      // Host candidates as IP addresses (not mDNS names), loopback included: tests stay on 127.0.0.1.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      '--allow-loopback-in-peer-connection',
      // Several players in one browser: none of them may be throttled as a background page.
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
  });
}

/**
 * Opens the gateway's player page in a fresh browser context (its own peer identity). Console
 * errors and warnings are kept in `viewer.console` for failure messages.
 */
export async function openPlayer(browser, gw, query = '') {
  const context = await browser.newContext();
  const page = await context.newPage();
  const viewer = { page, context, console: [] };
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') {
      viewer.console.push(`${m.type()}: ${m.text()}`.slice(0, 500));
      if (viewer.console.length > 200) viewer.console.shift();
    }
  });
  page.on('pageerror', (e) => viewer.console.push(`pageerror: ${e.message}`));
  await page.goto(`${gw.url}/player${query}`, { waitUntil: 'load', timeout: 30_000 });
  viewer.stats = () => stats(page);
  viewer.close = () => context.close();
  return viewer;
}

/** `window.p2pStats` plus the video element's clock. */
export async function stats(page) {
  return page.evaluate(() => {
    const video = document.querySelector('video');
    return {
      ...(window.p2pStats ?? {}),
      currentTime: video ? video.currentTime : -1,
      paused: video ? video.paused : true,
    };
  });
}

/** Waits until the video has played `seconds` of media (playback started). */
export async function waitForPlayback(viewer, seconds = 0.5, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await viewer.stats();
    if (last.currentTime >= seconds && !last.paused) return last;
    await sleep(250);
  }
  throw new Error(
    `playback did not start within ${timeoutMs} ms: ${JSON.stringify(last)}\n${viewer.console.join('\n')}`,
  );
}

/** Share of segment bytes from peers between two `stats` snapshots. */
export function offloadBetween(before, after) {
  const p2p = after.p2pBytes - before.p2pBytes;
  const http = after.httpBytes - before.httpBytes;
  return p2p + http === 0 ? 0 : p2p / (p2p + http);
}
