// The gateway's player page: hls.js with the P2P engine as its fragment loader, and a stats panel.
//
// Query parameters: src (multivariant playlist, default /demo/live/master.m3u8), level (fix the
// rendition: its 0-based index in the master playlist; default automatic ABR), p2p=0 (no engine),
// cmcd=1 (hls.js sends CMCD, CTA-5004, in the query; cmcd=headers: in CMCD-* headers).
// Exposes window.hls, window.p2pEngine and window.p2pStats for tests and curious viewers; with P2P,
// p2pStats also has this page's public key (nodeKey, keyAlg, receipts*) and what the gateway's
// ledger credits it with this epoch (helpedViewers, helpedBytes, helpedSegments, ledger).

import Hls from 'hls.js';
import { P2PEngine } from '../engine.js';
import { fetchVariantUrls, renditionOfUrl } from '../master.js';
import { watchStalls } from '../playback.js';
import { Recovery } from '../recovery.js';

const DEFAULT_SRC = '/demo/live/master.m3u8';
const CONFIG_URL = '/player/config.json';
const WORKER_URL = '/hls.worker.js';
/** The gateway's contribution ledger (docs/LEDGER.md): 404 when it keeps none. */
const LEDGER_URL = '/p2p/v1/ledger';
const LEDGER_EVERY_MS = 10_000;

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
  stats.bitrate = 0;
  window.p2pStats = stats;

  const hls = new Hls({
    workerPath: WORKER_URL,
    autoStartLoad: level === null,
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

  renderStats(hls, stats);
  setInterval(() => renderStats(hls, stats), 1000);
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
  const variants = fetchVariantUrls(master).catch((e) => {
    console.warn('[player] cannot read the master playlist', e?.message ?? e);
    return [];
  });
  hls.once(Hls.Events.MANIFEST_PARSED, async () => {
    const urls = await variants;
    const index = hls.levels.findIndex((l) => renditionOfUrl(urls, l.uri ?? l.url?.[0], hls.url ?? master) === rendition);
    if (index >= 0) hls.currentLevel = index;
    else console.warn('[player] no rendition', rendition, 'in', master, '— adaptive bitrate instead');
    hls.startLoad(-1);
  });
}

function renderStats(hls, stats) {
  const level = hls.levels?.[hls.currentLevel >= 0 ? hls.currentLevel : hls.loadLevel];
  stats.bitrate = level?.bitrate ?? 0;
  const total = stats.httpBytes + stats.p2pBytes;
  const share = total > 0 ? (100 * stats.p2pBytes) / total : 0;
  set('stat-share', `${share.toFixed(1)} %`);
  set('stat-p2p', formatBytes(stats.p2pBytes));
  set('stat-http', formatBytes(stats.httpBytes));
  set('stat-peers', String(stats.peers));
  set('stat-verified', String(stats.verifiedSegments));
  set('stat-rejected', String(stats.rejectedSegments));
  set('stat-stalls', String(stats.stalls));
  set('stat-bitrate', level ? `${Math.round(stats.bitrate / 1000)} kbit/s${level.height ? ` (${level.height}p)` : ''}` : '–');
  set('stat-uploaded', stats.uploadedBytes === undefined ? '–' : formatBytes(stats.uploadedBytes));
  set('stat-swarm', stats.peerId ? `${stats.peerId}${stats.seeder ? ' · seeder' : ''}` : window.p2pEngine ? 'connecting…' : 'P2P off');
}

function set(id, text) {
  const el = document.getElementById(id);
  if (el && el.textContent !== text) el.textContent = text;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(2)} MiB`;
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
