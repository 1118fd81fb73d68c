// The gateway's player page: hls.js with the P2P engine as its fragment loader, a stats panel, a
// chart of bytes from peers and over HTTP (and the live latency) over the last 3 minutes, the table
// of linked peers, and a box to play another stream of the gateway (it reloads the page with ?src=).
//
// Query parameters: src (multivariant playlist, default /demo/live/master.m3u8), level (fix the
// rendition: its 0-based index in the master playlist; default automatic ABR), p2p=0 (no engine),
// cmcd=1 (hls.js sends CMCD, CTA-5004, in the query; cmcd=headers: in CMCD-* headers).
// Exposes window.hls, window.p2pEngine and window.p2pStats for tests and curious viewers; with P2P,
// p2pStats also has this page's public key (nodeKey, keyAlg, receipts*) and what the gateway's
// ledger credits it with this epoch (helpedViewers, helpedBytes, helpedSegments, ledger). The page
// adds bitrate, live, latency, targetLatency and chartSamples (see renderStats).

import Hls from 'hls.js';
import { P2PEngine } from '../engine.js';
import { fetchRenditions, renditionOfUrl } from '../master.js';
import { watchStalls } from '../playback.js';
import { Recovery } from '../recovery.js';
import { drawChart } from './chart.js';
import { DeliveryHistory, formatBytes, formatKbps, formatSeconds, shortPeerId, summaryText } from './series.js';
import { streamQuery } from './stream-url.js';

const DEFAULT_SRC = '/demo/live/master.m3u8';
const CONFIG_URL = '/player/config.json';
const WORKER_URL = '/hls.worker.js';
/** The gateway's contribution ledger (docs/LEDGER.md): 404 when it keeps none. */
const LEDGER_URL = '/p2p/v1/ledger';
const LEDGER_EVERY_MS = 10_000;
/** The chart's span and sampling period. */
const CHART_SPAN_MS = 180_000;
const SAMPLE_EVERY_MS = 1000;

main().catch((e) => {
  console.error('[player]', e);
  showError(e?.message ?? String(e));
});

async function main() {
  const params = new URLSearchParams(location.search);
  const src = params.get('src') || DEFAULT_SRC;
  const level = parseLevel(params.get('level'));
  const p2p = params.get('p2p') !== '0';
  const cmcd = cmcdConfig(params.get('cmcd'), src);
  const video = /** @type {HTMLVideoElement} */ (document.getElementById('video'));
  setUpStreamBox(src);

  if (!Hls.isSupported()) {
    showError('This browser cannot play HLS with Media Source Extensions.');
    return;
  }

  let engine = null;
  let stats;
  if (p2p) {
    engine = new P2PEngine({ stream: src, iceServers: await iceServers(), trace: params.get('trace') === '1' });
    stats = engine.stats;
    window.p2pEngine = engine;
  } else {
    stats = { httpBytes: 0, p2pBytes: 0, peers: 0, verifiedSegments: 0, rejectedSegments: 0, stalls: 0 };
    watchStalls(video, { stalled: () => stats.stalls++ });
  }
  Object.assign(stats, { bitrate: 0, live: null, latency: null, targetLatency: null, chartSamples: 0 });
  window.p2pStats = stats;

  const hls = new Hls({
    workerPath: WORKER_URL,
    autoStartLoad: level === null,
    // Low-latency streams: a viewer that started (or fell) behind the target latency plays up
    // to 1.25× until it is back (hls.js does it only within a target duration of the target
    // and with more than 1 s buffered, so never into a stall). Without it a slow first load
    // stays as latency for the whole session.
    maxLiveSyncPlaybackRate: 1.25,
    ...(cmcd ? { cmcd } : {}),
    ...(engine ? { fLoader: engine.createLoaderClass(Hls) } : {}),
  });
  window.hls = hls;
  engine?.attach(hls);
  if (!engine) {
    hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
      stats.httpBytes += d.frag.stats.loaded;
    });
  }
  if (level !== null) fixLevel(hls, src, level);
  recoverFromFatalErrors(hls);
  hls.loadSource(src);
  hls.attachMedia(video);
  video.play().catch(() => {}); // autoplay may need the muted attribute, which the page has

  const history = new DeliveryHistory({ spanMs: CHART_SPAN_MS, everyMs: SAMPLE_EVERY_MS });
  const tick = () => {
    try {
      renderStats(hls, stats, video, history);
    } catch (e) {
      console.warn('[player] cannot show the figures', e?.message ?? e);
    }
  };
  tick();
  setInterval(tick, SAMPLE_EVERY_MS);
  if (engine) watchLedger(engine, stats);
}

/**
 * "You helped N viewers, M MB this hour": this page's line in the gateway's ledger (the current
 * epoch), polled every 10 s; hidden while the gateway keeps no ledger (404) or it cannot be read.
 * The figures go to `stats` (window.p2pStats) too: helpedViewers, helpedBytes, helpedSegments
 * (null while unknown) and ledger ("on", "off", "error", or null before the first answer).
 */
function watchLedger(engine, stats) {
  Object.assign(stats, { helpedViewers: null, helpedBytes: null, helpedSegments: null, ledger: null });
  const poll = async () => {
    const key = (await engine.keyReady)?.publicHex;
    if (!key) return false; // no key, nothing to be credited with
    let view = null;
    try {
      const resp = await fetch(LEDGER_URL, { credentials: 'same-origin', cache: 'no-store' });
      if (resp.status === 404) stats.ledger = 'off';
      else if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      else view = await resp.json();
    } catch (e) {
      if (stats.ledger !== 'error') console.warn('[player] cannot read', LEDGER_URL, e?.message ?? e);
      stats.ledger = 'error';
    }
    if (view && !Array.isArray(view.uploaders)) {
      stats.ledger = 'error';
      view = null;
    }
    if (!view) {
      Object.assign(stats, { helpedViewers: null, helpedBytes: null, helpedSegments: null });
      showHelped(null);
      return true;
    }
    const mine = view.uploaders.find((u) => u?.key === key);
    stats.ledger = 'on';
    stats.helpedViewers = Number(mine?.receivers ?? 0);
    stats.helpedBytes = Number(mine?.bytes ?? 0);
    stats.helpedSegments = Number(mine?.segments ?? 0);
    const viewers = stats.helpedViewers;
    showHelped(
      `You helped ${viewers} ${viewers === 1 ? 'viewer' : 'viewers'}, ${(stats.helpedBytes / 1e6).toFixed(1)} MB ${periodName(view.epoch_seconds)}`,
    );
    return true;
  };
  const loop = async () => {
    if (await poll().catch(() => true)) setTimeout(loop, LEDGER_EVERY_MS);
  };
  loop();
}

/** How the ledger's epoch is named on the page ("this hour" for the usual one-hour epochs). */
function periodName(seconds) {
  if (!(seconds > 0) || seconds === 3600) return 'this hour';
  if (seconds === 86_400) return 'today';
  if (seconds % 3600 === 0) return `in these ${seconds / 3600} hours`;
  return seconds % 60 === 0 ? `in these ${seconds / 60} minutes` : `in these ${seconds} seconds`;
}

function showHelped(text) {
  const el = document.getElementById('helped');
  if (!el) return;
  if (text === null) {
    el.hidden = true;
    return;
  }
  if (el.textContent !== text) el.textContent = text;
  el.hidden = false;
}

/**
 * hls.js's CMCD option for the page's `cmcd` parameter (`1`/`query`, `headers`), or null: the
 * stream's path as the content id, one session id per page load (hls.js makes its own where
 * crypto.randomUUID is missing: outside a secure context).
 */
function cmcdConfig(mode, src) {
  if (mode !== '1' && mode !== 'query' && mode !== 'headers') return null;
  const sessionId = globalThis.crypto?.randomUUID?.();
  return { contentId: src.split('?')[0], ...(sessionId ? { sessionId } : {}), useHeaders: mode === 'headers' };
}

/**
 * Fatal hls.js errors are recovered from by the page itself (see src/recovery.js): loading restarts
 * after an origin outage, media errors are recovered, anything else reloads the player. The error
 * line says what is going on and disappears once media loads again.
 */
function recoverFromFatalErrors(hls) {
  const recovery = new Recovery();
  let pending = null;
  const loaded = () => {
    recovery.onLoaded();
    hideError();
  };
  hls.on(Hls.Events.LEVEL_LOADED, loaded);
  hls.on(Hls.Events.FRAG_LOADED, loaded);
  hls.on(Hls.Events.ERROR, (_, d) => {
    if (!d.fatal) return;
    const { action, delayMs } = recovery.onFatal(d.type, performance.now());
    console.warn('[player] fatal hls.js error', d.type, d.details, '→', action, 'in', delayMs, 'ms');
    showError(`Playback interrupted (${d.details}); recovering…`);
    if (pending !== null) clearTimeout(pending);
    pending = setTimeout(() => {
      pending = null;
      if (action === 'startLoad') hls.startLoad(-1);
      else if (action === 'recoverMedia') hls.recoverMediaError();
      else if (action === 'swapAndRecover') {
        hls.swapAudioCodec();
        hls.recoverMediaError();
      } else location.reload();
    }, delayMs);
  });
}

/** ICE servers from /player/config.json; none if it is absent. */
async function iceServers() {
  try {
    const resp = await fetch(CONFIG_URL, { credentials: 'same-origin' });
    if (resp.status === 404) return [];
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const config = await resp.json();
    if (config.iceServers !== undefined && !Array.isArray(config.iceServers)) throw new Error('iceServers is not a list');
    return config.iceServers ?? [];
  } catch (e) {
    console.warn('[player] cannot read', CONFIG_URL, e?.message ?? e, '— using no ICE servers');
    return [];
  }
}

function parseLevel(value) {
  if (value === null || value === '') return null;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    console.warn('[player] ignoring level', value);
    return null;
  }
  return n;
}

/** Plays rendition `rendition` (master playlist order) only: finds its hls.js level, then loads. */
function fixLevel(hls, src, rendition) {
  const master = new URL(src, location.href).href;
  const renditions = fetchRenditions(master).catch((e) => {
    console.warn('[player] cannot read the master playlist', e?.message ?? e);
    return [];
  });
  hls.once(Hls.Events.MANIFEST_PARSED, async () => {
    const list = await renditions;
    const index = hls.levels.findIndex((l) => renditionOfUrl(list, l.uri ?? l.url?.[0], hls.url ?? master) === rendition);
    if (index >= 0) hls.currentLevel = index;
    else console.warn('[player] no rendition', rendition, 'in', master, '— adaptive bitrate instead');
    hls.startLoad(-1);
  });
}

/**
 * Once a second: the figures of the stats panel, a sample for the chart (bytes by source and the
 * live latency), the chart and its summary line, and the peer table. Adds to `stats`: bitrate
 * (bits/s of the current level), live (the playlist is live; null before one is loaded), latency
 * (s behind the live edge: hls.js's latency; null when not live or not playing yet),
 * targetLatency (hls.js's target, s, or null) and chartSamples (samples the chart holds).
 */
function renderStats(hls, stats, video, history) {
  const level = hls.levels?.[hls.currentLevel >= 0 ? hls.currentLevel : hls.loadLevel];
  stats.bitrate = level?.bitrate ?? 0;
  const live = liveLatency(hls, video);
  Object.assign(stats, live);
  history.add(performance.now(), stats.p2pBytes, stats.httpBytes, stats.latency);
  stats.chartSamples = history.length;

  const total = stats.httpBytes + stats.p2pBytes;
  const share = total > 0 ? (100 * stats.p2pBytes) / total : 0;
  set('stat-share', `${share.toFixed(1)} %`);
  set('stat-p2p', formatBytes(stats.p2pBytes));
  set('stat-http', formatBytes(stats.httpBytes));
  set('stat-peers', String(stats.peers));
  set('stat-verified', String(stats.verifiedSegments));
  set('stat-rejected', String(stats.rejectedSegments));
  set('stat-stalls', String(stats.stalls));
  set('stat-latency', stats.live === false ? 'not live' : stats.latency === null ? '–' : formatSeconds(stats.latency));
  set('stat-bitrate', level ? `${Math.round(stats.bitrate / 1000)} kbit/s${level.height ? ` (${level.height}p)` : ''}` : '–');
  set('stat-uploaded', stats.uploadedBytes === undefined ? '–' : formatBytes(stats.uploadedBytes));
  set('stat-swarm', stats.peerId ? `${stats.peerId}${stats.seeder ? ' · seeder' : ''}` : window.p2pEngine ? 'connecting…' : 'P2P off');

  const canvas = document.getElementById('chart');
  if (canvas) {
    const points = history.points();
    if (drawChart(canvas, points, { spanMs: CHART_SPAN_MS })) canvas.dataset.samples = String(points.length);
  }
  set('chart-summary', summaryText(history.summary(), CHART_SPAN_MS));
  renderPeers(stats);
}

/**
 * How far behind the live edge the playhead is (hls.js's `latency`: the playlist's edge minus
 * currentTime), for a live playlist once playback has started; `liveSyncPosition - currentTime`
 * while hls.js has no estimate yet.
 */
function liveLatency(hls, video) {
  const details = hls.latestLevelDetails ?? hls.levels?.[hls.currentLevel]?.details ?? null;
  if (!details) return { live: null, latency: null, targetLatency: null };
  if (!details.live) return { live: false, latency: null, targetLatency: null };
  const target = hls.targetLatency;
  const targetLatency = Number.isFinite(target) ? round2(target) : null;
  if (!(video.currentTime > 0)) return { live: true, latency: null, targetLatency };
  let latency = hls.latency;
  if (!(latency > 0)) {
    const sync = hls.liveSyncPosition;
    latency = Number.isFinite(sync) ? Math.max(0, sync - video.currentTime) : null;
  }
  return { live: true, latency: latency === null ? null : round2(latency), targetLatency };
}

const round2 = (x) => Math.round(x * 100) / 100;

/** The table of linked peers (stats.links; the engine's) and a last row for the gateway. */
function renderPeers(stats) {
  const body = document.getElementById('peers-body');
  if (!body) return;
  const links = Array.isArray(stats.links) ? stats.links : null;
  const rows = (links ?? []).map((l) => [
    l.peer,
    shortPeerId(l.peer),
    l.transport ?? 'webrtc',
    l.rate === null || l.rate === undefined ? '–' : formatKbps(l.rate * 8),
    formatBytes(l.bytesFrom ?? 0),
    l.bytesTo === undefined ? '–' : formatBytes(l.bytesTo),
  ]);
  const empty = links === null ? 'P2P is off.' : stats.peerId ? 'No peer links yet.' : 'Not in a swarm yet.';
  const http = [
    'Gateway',
    'HTTP',
    Number.isFinite(stats.httpRate) ? formatKbps(stats.httpRate * 8) : '–',
    formatBytes(stats.httpBytes),
    '–',
  ];
  const key = JSON.stringify([rows, rows.length === 0 ? empty : '', http]);
  if (body.dataset.key === key) return;
  body.dataset.key = key;
  const cell = (tag, text, cls) => {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = text;
    return el;
  };
  const trs = rows.map(([peer, short, transport, rate, from, to]) => {
    const tr = document.createElement('tr');
    tr.dataset.peer = peer;
    const id = cell('td', '');
    const code = cell('code', short);
    code.title = peer;
    id.append(code);
    tr.append(id, cell('td', transport), cell('td', rate, 'num'), cell('td', from, 'num'), cell('td', to, 'num'));
    return tr;
  });
  if (trs.length === 0) {
    const tr = document.createElement('tr');
    tr.className = 'empty';
    const td = cell('td', empty);
    td.colSpan = 5;
    tr.append(td);
    trs.push(tr);
  }
  const gateway = document.createElement('tr');
  gateway.className = 'gateway';
  const [name, ...rest] = http;
  gateway.append(cell('th', name), ...rest.map((text, i) => cell('td', text, i === 0 ? '' : 'num')));
  gateway.firstChild.scope = 'row';
  trs.push(gateway);
  body.replaceChildren(...trs);
}

/**
 * The "play another stream" box: shows the current `src`; a playlist of this gateway (a path or a
 * same-origin URL) reloads the page with it as ?src= (other parameters kept, but level).
 */
function setUpStreamBox(src) {
  const form = document.getElementById('src-form');
  const input = /** @type {HTMLInputElement|null} */ (document.getElementById('src-input'));
  if (!form || !input) return;
  input.value = src;
  input.addEventListener('input', () => input.setCustomValidity(''));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const next = streamQuery(input.value, location.href);
    if ('error' in next) {
      input.setCustomValidity(next.error);
      input.reportValidity();
      return;
    }
    location.assign(location.pathname + next.query);
  });
}

function set(id, text) {
  const el = document.getElementById(id);
  if (el && el.textContent !== text) el.textContent = text;
}

function hideError() {
  const el = document.getElementById('error');
  if (el && !el.hidden) el.hidden = true;
}

function showError(text) {
  const el = document.getElementById('error');
  if (el) {
    el.textContent = text;
    el.hidden = false;
  }
}
