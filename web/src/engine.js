// The browser P2P engine: a thin driver around the node core (core.js), in the manner of the native
// node's driver (peer-assist/src/node/driver.rs). The core decides everything: which peers to link
// to, where each segment comes from and when HTTP takes over, what peer bytes must hash to, who is
// banned, what to upload and how fast, what to report. The engine feeds it what happened — hls.js
// needs (with their deadlines), tracker messages, WebRTC link events and frames, HTTP results,
// WebCrypto hashes — and carries out what it asks for: links, frames, HTTP fetches, hashes,
// signalling, and segments handed to hls.js's loader callbacks.
//
// One core lives as long as the engine: joining another swarm (a rendition switch, a reconnect)
// gives a new `welcome` with a new peer id, and the core starts a new swarm session while what it
// waits for and holds stays. Distribution first: without signalling or peers, everything goes over
// HTTP in time.
//
// Each track hls.js loads from a playlist of its own is a swarm of its own: the engine the page
// creates follows the main track (hls.js levels, LEVEL_SWITCHING), and makes one more engine for
// alternate audio (AUDIO_TRACK_SWITCHING) and one for subtitles (SUBTITLE_TRACK_SWITCH) when
// hls.js has such a track, each joining the swarm of the EXT-X-MEDIA rendition selected (its
// index after the variants, master.js). The loader hands each fragment to the engine of its
// track (`engineFor`); `stats` adds the tracks up (`stats.tracks` has each one).
//
// Contribution accounting (docs/LEDGER.md): the engine has the page's long-lived key (keys.js),
// announces it in `join`, and for every verified delivery from a peer with a key (the core's
// `delivered`) signs a receipt, kept until a `report` to the tracker carries it (at most
// MAX_RECEIPTS a report; at most MAX_PENDING_RECEIPTS waiting, the oldest dropped first).

import { DEFAULT_CORE_CONFIG, NodeCore } from './core.js';
import { createP2PLoader } from './loader.js';
import { fetchRenditions, renditionOfUrl } from './master.js';
import { BUFFER_LOW, PeerLink } from './peer-link.js';
import { watchStalls } from './playback.js';
import { pageNodeKey, randomHex, receiptText } from './keys.js';
import { encodedLen } from './protocol/frame.js';
import { MAX_LIST_LEN, MAX_RECEIPTS, MAX_SIGNAL_LEN, utf8Length } from './protocol/signal.js';
import { SignallingChannel } from './signalling.js';
import { Backoff, BoundedMap, WarningLog, compareIds, concatBytes, gatewayPath, now, rangeId, sha256Hex, splitRangeId } from './util.js';

export const DEFAULT_MAX_PEERS = DEFAULT_CORE_CONFIG.maxLinks;
export const DEFAULT_REPORT_INTERVAL_MS = DEFAULT_CORE_CONFIG.reportEveryMs;
export const DEFAULT_MAX_STORE_BYTES = DEFAULT_CORE_CONFIG.maxStoreBytes;
/** Segments kept to upload, at most (the store is bounded by bytes first). */
export const DEFAULT_MAX_STORE_SEGMENTS = DEFAULT_CORE_CONFIG.window;
/** Largest segment body accepted over HTTP (the core's limit for peers). */
const MAX_SEGMENT_BYTES = 256 * 1024 * 1024;
/** A waiting segment's deadline is sent again to the core when it moved by more than this. */
const DEADLINE_SLACK_MS = 100;
/**
 * An init section whose media fragments the engine has not seen in a playlist is needed this soon
 * (ms): soon enough that the scheduler goes to HTTP at once unless a linked peer can deliver well
 * before, never a wait that could delay the fragments it initialises.
 */
export const INIT_UNKNOWN_PLAYS_IN_MS = 2000;
/**
 * The close code (RFC 6455 registry: Service Restart) of a gateway that shuts down: join again at
 * once, within this jitter, through the balancer (docs/PROTOCOL.md §2.2).
 */
export const CLOSE_SERVICE_RESTART = 1012;
const RESTART_JITTER_MS = 500;
/** Tracker errors after which reconnecting cannot help. */
const NO_RECONNECT = new Set(['unsupported_version', 'unauthorized']);
/**
 * `swarm_full` redirects to the next shard followed in a row (docs/PROTOCOL.md §2, "Swarm shards"); past them
 * the engine backs off as after any other refusal.
 */
const MAX_SHARD_HOPS = 16;
/** Stands for "the core's timer fired" in the input queue. */
const TIMEOUT = Symbol('timeout');
/** Input to `feed`: the core reports what it has now (the page is going away). */
const REPORT_NOW = Symbol('report now');
/** Signed receipts waiting for a report, at most (the oldest are dropped first). */
export const MAX_PENDING_RECEIPTS = 1024;
/**
 * Leaving for good (destroy, pagehide), the receipts still waiting go out in at most this many
 * more reports (MAX_RECEIPTS each) before `leave`.
 */
const LAST_RECEIPT_REPORTS = 4;
/** A report with its receipts stays this far below the tracker's message limit. */
const REPORT_SIZE_LIMIT = MAX_SIGNAL_LEN - 1024;

/**
 * @typedef {object} P2PEngineOptions
 * @property {string} [gateway]  gateway base URL (default: the page's origin)
 * @property {string} stream     the stream: its multivariant playlist path (or URL) on the gateway
 * @property {RTCIceServer[]} [iceServers] for RTCPeerConnection (default [])
 * @property {number} [maxStoreBytes] memory for verified segments (default 64 MiB)
 * @property {number} [maxStoreSegments] segments kept, at most (default 512)
 * @property {boolean} [upload]  serve segments to other peers (default true)
 * @property {number} [uploadRate] upload cap, bytes/s (default 20 MB/s)
 * @property {number} [maxPeers] at most this many peer links (default 8; the tracker's max_peers
 *   lowers it)
 * @property {string} [token]    sent in `join` when the gateway requires one
 * @property {number} [reportIntervalMs] delivery reports (default 2000)
 * @property {object} [scheduler] scheduler tuning (see scheduler.js DEFAULT_SCHEDULER_CONFIG)
 * @property {boolean} [trace]   keep the last events in `traceLog`
 * @property {boolean} [receipts] announce the page's key in `join` and sign delivery receipts for
 *   the bytes peers send (default: true where WebCrypto is available)
 * @property {import('./keys.js').NodeKey|Promise<import('./keys.js').NodeKey>|null} [nodeKey] the key
 *   to use (default: the page's key from keys.js, kept in IndexedDB); null: no key, no receipts
 * @property {'main'|'audio'|'subtitle'} [track] the hls.js track type this engine serves (default
 *   'main'; the main engine makes the others itself, see `engineFor`)
 * @property {P2PEngine} [parent] for a track engine: the main engine (renditions, media, stats)
 * @property {typeof WebSocket} [WebSocket]
 * @property {typeof RTCPeerConnection} [RTCPeerConnection]
 * @property {typeof fetch} [fetch]
 */

export class P2PEngine {
  /** @param {P2PEngineOptions} options */
  constructor(options = {}) {
    const env = globalThis;
    const gateway = options.gateway ?? env.location?.origin;
    if (!gateway) throw new Error('P2PEngine: options.gateway is required outside a page');
    this.gatewayOrigin = new URL(gateway).origin;
    /** The hls.js track type served ('main', 'audio', 'subtitle') and, for the last two, the main engine. */
    this.track = options.track ?? 'main';
    this.parent = options.parent ?? null;
    /** What this engine was made with: a track engine is made with the same. */
    this.givenOptions = options;
    /** Track engines of the main one, by hls.js track type ('audio', 'subtitle'). */
    this.tracks = new Map();
    /** The URL of the hls.js track a track engine follows (null: none selected). */
    this.trackUrl = null;
    const streamUrl = options.stream ? new URL(options.stream, this.gatewayOrigin) : null;
    this.streamPath = streamUrl ? streamUrl.pathname : null;
    this.options = {
      iceServers: options.iceServers ?? [],
      upload: options.upload ?? true,
      maxPeers: options.maxPeers ?? DEFAULT_MAX_PEERS,
      // A signed URL's token (docs/SECURITY.md): given, or the `token` of the stream's URL.
      token: options.token ?? streamUrl?.searchParams.get('token') ?? null,
    };
    this.impl = {
      WebSocket: options.WebSocket ?? env.WebSocket,
      RTCPeerConnection: options.RTCPeerConnection ?? env.RTCPeerConnection,
      fetch: options.fetch ?? env.fetch?.bind(env),
    };
    /** Receipts on: the core says what to sign once the key is here. */
    this.receiptsOn = (options.receipts ?? Boolean(env.crypto?.subtle)) && options.nodeKey !== null;
    const core = { transports: ['webrtc'], upload: this.options.upload, maxLinks: this.options.maxPeers, receipts: this.receiptsOn };
    const tuning = {
      uploadRate: options.uploadRate,
      window: options.maxStoreSegments,
      maxStoreBytes: options.maxStoreBytes,
      reportEveryMs: options.reportIntervalMs,
      scheduler: options.scheduler,
    };
    for (const [k, v] of Object.entries(tuning)) if (v !== undefined) core[k] = v;
    /** The node core; its peer id is '' until the first welcome names it. */
    this.core = new NodeCore(core, '', now());
    /** With options.trace: the last events ({t, what, ...}), for debugging. */
    this.traceLog = options.trace ? [] : null;

    /** Live figures, also exposed by the page as window.p2pStats. */
    this.stats = {
      httpBytes: 0,
      p2pBytes: 0,
      httpSegments: 0,
      p2pSegments: 0,
      peers: 0,
      verifiedSegments: 0,
      rejectedSegments: 0,
      stalls: 0,
      uploadedBytes: 0,
      failures: { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 },
      peerId: null,
      swarm: null,
      rendition: null,
      seeder: null,
      storedSegments: 0,
      storedBytes: 0,
      warnings: 0,
      /** Tracker sockets lost and joined again (the gateway went away or restarted). */
      signallingReconnects: 0,
      shard: 0,
      /** This page's public key (hex), sent in `join`; null without receipts (or until loaded). */
      nodeKey: null,
      keyAlg: null,
      /** Receipts signed, sent in reports, dropped unsent (too many waiting), waiting. */
      receiptsSigned: 0,
      receiptsSent: 0,
      receiptsDropped: 0,
      receiptsPending: 0,
      /** Measured HTTP transfer rate (EWMA of the core's fetches), bytes/s; null before the first. */
      httpRate: null,
      /** Init sections (EXT-X-MAP) handed to hls.js, by the source of their bytes (all tracks). */
      initSections: { http: 0, p2p: 0 },
      /**
       * Each track's own figures ({rendition, swarm, peerId, peers, httpBytes, p2pBytes, httpSegments,
       * p2pSegments, verifiedSegments, rejectedSegments, uploadedBytes}) by hls.js track type: `main`,
       * and `audio` / `subtitle` once hls.js has such a track. The byte, segment and failure
       * counters above are their sums; peerId, swarm, rendition, seeder, shard, peers and links are
       * the main track's.
       */
      tracks: {},
    };
    // The open peer links, computed when read (the page reads it once a second): see peerStats().
    Object.defineProperty(this.stats, 'links', { enumerable: true, configurable: true, get: () => this.peerStats() });
    /** Fragments hls.js's own loader fetched (LL-HLS parts, other origins): HTTP, outside the core. */
    this.otherHttp = { bytes: 0, segments: 0 };
    /** Init sections this engine handed to hls.js, by source (`stats.initSections` adds the tracks). */
    this.initDelivered = { http: 0, p2p: 0 };
    this.log = new WarningLog('[p2p]', (n) => (this.stats.warnings = n));

    // The core's inputs wait here while outputs are carried out (hooks may fire meanwhile).
    this.inbox = [];
    this.busy = false;
    this.timer = null;
    this.timerAt = null;

    /** hls.js callers: waiter id → {id, p2p, playsAt(t), sentPlaysAt, onSuccess, onError, cancelled}. */
    this.waiters = new Map();
    this.nextWaiter = 1;
    /** The URL hls.js asked for, by segment id (it may carry a query the id drops). */
    this.urls = new BoundedMap(1024);
    /** The headers hls.js asked with (CMCD in header mode), by segment id, for the HTTP fetch. */
    this.requestHeaders = new BoundedMap(1024);
    /** Running HTTP fetches: segment id → {controller}. */
    this.http = new Map();
    /** When the first byte of a segment's running transfer came (HTTP or peer), for LoadStats. */
    this.firstByte = new BoundedMap(1024);
    /** Our peer requests the core sent: "link:request_id" → segment id, until their first chunk. */
    this.requested = new BoundedMap(1024);
    /** The transfer times of delivered segments, for a later store hit's LoadStats. */
    this.timings = new BoundedMap(1024);
    /** A report that found no open socket, merged into the next one. */
    this.pendingReport = null;
    /** Signed receipts not yet sent, oldest first. */
    this.receipts = [];
    /** The page's key (keys.js NodeKey) once loaded; null without one. */
    this.nodeKey = null;
    /** A tracker connection waits for the key (so that `join` carries it). */
    this.keyPending = false;
    this.connectWhenKeyReady = false;
    /** Leaving for good: destroy() runs. */
    this.stopping = false;

    /** Peer links known to the core (open, handshake done): link id → PeerLink. */
    this.links = new Map();
    /** Every PeerLink, negotiating or open, by remote peer: one per peer. */
    this.peerLinks = new Map();
    this.nextLinkId = 1;
    /** Bytes sent on each core link not yet acknowledged to the core as written. */
    this.unwritten = new Map();

    this.rendition = null;
    this.conn = null;
    this.backoff = new Backoff();
    this.reconnectTimer = null;
    this.noReconnect = false;
    /** The swarm shard to ask for (kept across reconnects), and redirects followed in a row. */
    this.shard = 0;
    this.shardHops = 0;
    this.suspended = false;
    this.destroyed = false;

    this.hls = null;
    this.hlsHandlers = [];
    /** The stream's renditions (master.js parseRenditions), once read. */
    this.renditions = null;
    /**
     * hls.js init fragment → the [start, end) (s) of the media fragments it initialises, from the
     * playlists hls.js loaded (the main engine's, for every track): when an init section is needed.
     */
    this.initUsers = new WeakMap();
    this.levelRendition = [];
    this.currentLevel = null;
    this.media = null;
    this.unwatchMedia = null;
    this.playbackStarted = false;

    this.onPageHide = () => this.suspend();
    this.onPageShow = (e) => {
      if (e.persisted) this.resume();
    };
    env.addEventListener?.('pagehide', this.onPageHide);
    env.addEventListener?.('pageshow', this.onPageShow);
    /** Resolves with the key (null: none) once it is settled. */
    this.keyReady = this.receiptsOn ? this.loadKey(options.nodeKey) : Promise.resolve(null);
    this.armTimer();
  }

  /** Loads the key; the tracker connection waits for it. */
  async loadKey(given) {
    this.keyPending = true;
    try {
      const key = await (given ?? pageNodeKey({ warn: (...a) => this.log.warn(...a) }));
      if (key && !this.destroyed) {
        this.nodeKey = key;
        this.stats.nodeKey = key.publicHex;
        this.stats.keyAlg = key.alg;
      }
    } catch (e) {
      this.log.warn('no-key', e?.message ?? e, 'no receipts');
    } finally {
      this.keyPending = false;
    }
    if (this.connectWhenKeyReady) {
      this.connectWhenKeyReady = false;
      const idle = !this.conn && this.reconnectTimer === null;
      if (idle && !this.destroyed && !this.suspended && !this.noReconnect && this.rendition !== null) this.connect();
    }
    return this.nodeKey;
  }

  /** An hls.js fragment loader class (config.fLoader) that gets segments through this engine. */
  createLoaderClass(Hls) {
    this.Hls = Hls;
    return createP2PLoader(Hls, this);
  }

  // ===========================================================================================
  // The core: inputs in, outputs carried out

  /** Hands inputs to the core (after the ones already queued), then carries out what it asks. */
  feed(...inputs) {
    this.inbox.push(...inputs);
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.inbox.length > 0) {
        const input = this.inbox.shift();
        if (input === TIMEOUT) this.core.handleTimeout(now());
        else if (input === REPORT_NOW) this.core.sendReport();
        else this.core.handle(input, now());
        for (let o = this.core.pollOutput(); o !== undefined; o = this.core.pollOutput()) {
          try {
            this.perform(o);
          } catch (e) {
            this.log.warn('output-failed', o.type, e?.message ?? e);
          }
        }
      }
    } finally {
      this.busy = false;
    }
    this.updateStats();
    this.armTimer();
  }

  /** Wakes the core when it asked to be; deadlines that moved are sent first. */
  armTimer() {
    const at = this.destroyed ? null : this.core.pollTimeout();
    if (at === this.timerAt && this.timer !== null) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = at;
    if (at === null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = null;
      this.feed(...this.movedDeadlines(), TIMEOUT);
    }, Math.max(0, Math.ceil(at - now())));
  }

  perform(o) {
    switch (o.type) {
      case 'connect':
        this.connectTo(o.peer);
        return;
      case 'send':
        this.send(o.link, o.frame);
        return;
      case 'close': {
        const link = this.links.get(o.link);
        if (!link) return;
        this.forgetLink(o.link);
        this.trace('close', { peer: link.remote, reason: o.reason });
        link.close(o.reason);
        return;
      }
      case 'http_get':
        this.trace('http', { id: o.id, from: o.from });
        this.httpGet(o.id, o.from);
        return;
      case 'http_cancel':
        this.http.get(o.id)?.controller.abort();
        this.http.delete(o.id);
        return;
      case 'verify':
        this.verify(o.ticket, o.bytes);
        return;
      case 'signal':
        this.signal(o.message);
        return;
      case 'deliver':
        this.deliver(o);
        return;
      case 'delivered':
        this.signReceipt(o);
        return;
      default:
        this.log.warn('unknown-output', o.type);
    }
  }

  /** The page's figures, from the core's counters (a main engine's: with its tracks' added). */
  updateStats() {
    const c = this.core.stats();
    const s = this.stats;
    s.httpBytes = c.httpBytes + this.otherHttp.bytes;
    s.p2pBytes = c.p2pBytes;
    s.httpSegments = c.httpSegments + this.otherHttp.segments;
    s.p2pSegments = c.p2pSegments;
    s.verifiedSegments = c.p2pSegments;
    s.rejectedSegments = c.mismatches;
    s.uploadedBytes = c.uploadedBytes;
    s.failures = { ...c.failures };
    s.peers = c.links;
    s.storedSegments = c.storedSegments;
    s.storedBytes = c.storedBytes;
    s.seeder = this.conn?.peerId ? c.seeder : null;
    s.httpRate = this.core.httpRate;
    if (this.parent) {
      this.parent.updateStats();
      return;
    }
    s.tracks = { main: trackFigures(s) };
    for (const [type, engine] of this.tracks) {
      const t = engine.stats;
      s.tracks[type] = trackFigures(t);
      for (const k of ['httpBytes', 'p2pBytes', 'httpSegments', 'p2pSegments', 'verifiedSegments', 'rejectedSegments', 'uploadedBytes', 'storedSegments', 'storedBytes']) {
        s[k] += t[k];
      }
      for (const [k, n] of Object.entries(t.failures)) s.failures[k] = (s.failures[k] ?? 0) + n;
    }
    s.initSections = { ...this.initDelivered };
    for (const engine of this.tracks.values()) {
      for (const k of ['http', 'p2p']) s.initSections[k] += engine.initDelivered[k];
    }
  }

  /**
   * The open peer links (`stats.links`), by link id: the remote peer id, the transport, the
   * measured rate of its transfers to us (the core's EWMA over verified transfers, bytes/s; null
   * before the first), the segment payload bytes received from it and sent to it on this link
   * (chunks, verified or not), our requests running on it, the segments it advertises, and how
   * long the link has been open (s).
   */
  peerStats() {
    const t = now();
    return this.core.linkStats().map((l) => {
      const link = this.links.get(l.link);
      return {
        peer: l.peer,
        transport: 'webrtc',
        rate: l.rate,
        bytesFrom: link?.bytesFrom ?? 0,
        bytesTo: link?.bytesTo ?? 0,
        inFlight: l.inFlight,
        advertised: l.advertised,
        initiated: l.initiated,
        openFor: link?.readyAt === undefined ? 0 : Math.max(0, Math.round((t - link.readyAt) / 1000)),
      };
    });
  }

  trace(what, details) {
    if (!this.traceLog) return;
    if (this.traceLog.length >= 2000) this.traceLog.splice(0, 500);
    this.traceLog.push({ t: Math.round(now()), what, ...details });
  }

  // ===========================================================================================
  // hls.js

  /** Follows an hls.js instance: its renditions (swarms), playlists (freshness) and media (deadlines). */
  attach(hls) {
    if (this.destroyed) throw new Error('P2PEngine: destroyed');
    this.detach();
    this.hls = hls;
    const E = hls.constructor?.Events ?? this.Hls?.Events;
    if (!E) throw new Error('P2PEngine.attach: cannot find Hls.Events (pass Hls to createLoaderClass first)');
    const on = (event, fn) => {
      hls.on(event, fn);
      this.hlsHandlers.push([event, fn]);
    };
    on(E.MANIFEST_PARSED, () => this.mapLevels());
    on(E.LEVELS_UPDATED, () => this.mapLevels());
    on(E.LEVEL_SWITCHING, (_, d) => this.onLevel(d.level));
    on(E.LEVEL_UPDATED, (_, d) => this.onLevelDetails(d.details));
    on(E.LEVEL_LOADED, (_, d) => this.onLevelDetails(d.details));
    // Alternate audio and subtitles: each in the swarm of its own EXT-X-MEDIA rendition.
    on(E.AUDIO_TRACK_SWITCHING, (_, d) => this.engineForTrack('audio')?.followTrack(d?.url ?? null));
    on(E.AUDIO_TRACK_LOADED, (_, d) => this.engineForTrack('audio')?.onLevelDetails(d.details));
    on(E.SUBTITLE_TRACK_SWITCH, (_, d) => this.engineForTrack('subtitle')?.followTrack(d?.url ?? null));
    on(E.SUBTITLE_TRACK_LOADED, (_, d) => this.engineForTrack('subtitle')?.onLevelDetails(d.details));
    on(E.MEDIA_ATTACHED, (_, d) => this.attachMedia(d.media));
    on(E.MEDIA_DETACHING, () => this.detachMedia());
    on(E.DESTROYING, () => this.detach());
    if (hls.media) this.attachMedia(hls.media);
    this.loadVariants();
    if (hls.levels?.length) this.mapLevels();
  }

  /** Stops following hls.js (the swarm is left; segments keep coming over HTTP if asked). */
  detach() {
    if (this.hls) {
      for (const [event, fn] of this.hlsHandlers) this.hls.off(event, fn);
    }
    this.hlsHandlers = [];
    this.hls = null;
    this.detachMedia();
    this.leaveSwarm();
    this.rendition = null;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    for (const engine of this.tracks.values()) engine.detach();
  }

  async loadVariants() {
    if (!this.streamPath || this.renditions) return;
    const master = new URL(this.streamPath, this.gatewayOrigin);
    if (this.options.token) master.searchParams.set('token', this.options.token);
    const url = master.href;
    for (let attempt = 0; attempt < 3 && !this.destroyed; attempt++) {
      try {
        this.renditions = await fetchRenditions(url, this.impl.fetch);
        this.mapLevels();
        for (const engine of this.tracks.values()) engine.followTrack(engine.trackUrl);
        return;
      } catch (e) {
        this.log.warn('master-playlist', url, e?.message ?? e);
        await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
      }
    }
  }

  /** hls.js level index → rendition index (position in the master playlist), by URL. */
  mapLevels() {
    const hls = this.hls;
    if (!hls || !this.renditions || !hls.levels) return;
    const base = this.masterUrl();
    this.levelRendition = hls.levels.map((level) => {
      const url = level.uri ?? (Array.isArray(level.url) ? level.url[0] : level.url);
      const r = url ? renditionOfUrl(this.renditions, url, base) : -1;
      if (r < 0) this.log.warn('level-not-in-stream', url);
      return r;
    });
    const level = this.currentLevel ?? (hls.currentLevel >= 0 ? hls.currentLevel : null);
    if (level !== null) this.onLevel(level);
  }

  /** The rendition of an hls.js level index, or -1 when unknown. */
  renditionOfLevel(level) {
    return this.levelRendition[level] ?? -1;
  }

  /** The master playlist's URL, against which hls.js's level and track URLs are resolved. */
  masterUrl() {
    return this.hls?.url ?? new URL(this.streamPath, this.gatewayOrigin).href;
  }

  /**
   * The rendition a fragment belongs to, or -1: a main fragment's by its hls.js level, an audio or
   * subtitle fragment's by the playlist it was listed in (hls.js numbers tracks within a group).
   */
  renditionOfFrag(frag) {
    if (!frag) return -1;
    if (!this.parent) return this.renditionOfLevel(frag.level);
    const renditions = this.parent.renditions;
    return renditions ? renditionOfUrl(renditions, frag.baseurl, this.parent.masterUrl()) : -1;
  }

  // ===========================================================================================
  // Tracks: alternate audio and subtitles in swarms of their own

  /**
   * The engine for a fragment of hls.js track type `frag.type`: this one for the main track,
   * the track's own engine for 'audio' and 'subtitle' (made on first use); null for any other.
   */
  engineFor(frag) {
    const type = frag?.type ?? 'main';
    if (type === 'main' || this.parent) return this;
    return this.engineForTrack(type);
  }

  /** The main engine's engine for track type `type` ('audio' or 'subtitle'), made on first use. */
  engineForTrack(type) {
    if (this.parent || this.destroyed || (type !== 'audio' && type !== 'subtitle')) return null;
    let engine = this.tracks.get(type);
    if (!engine) {
      // The same options; the page's key is loaded once, by this engine.
      const options = { ...this.givenOptions, gateway: this.gatewayOrigin, track: type, parent: this, trace: Boolean(this.traceLog) };
      if (this.receiptsOn) options.nodeKey = this.keyReady;
      engine = new P2PEngine(options);
      this.tracks.set(type, engine);
      this.updateStats();
    }
    return engine;
  }

  /**
   * A track engine follows the hls.js track at `url` (null: none, such as subtitles off): it
   * joins the swarm of its rendition, or leaves its swarm when the track has none (its fragments
   * then go over HTTP, through this engine, as those of a rendition not joined do).
   */
  followTrack(url) {
    if (!this.parent || this.destroyed) return;
    this.trackUrl = url;
    const renditions = this.parent.renditions;
    if (!renditions) return; // mapped when the master playlist has been read
    const r = url ? renditionOfUrl(renditions, url, this.parent.masterUrl()) : -1;
    if (r >= 0) {
      this.setRendition(r);
      return;
    }
    if (url) this.log.warn('track-not-in-stream', this.track, url);
    this.leaveSwarm();
    this.rendition = null;
    this.stats.rendition = null;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** The hls.js level index of a rendition, or -1 (for a page that fixes the rendition). */
  levelOfRendition(rendition) {
    return this.levelRendition.indexOf(rendition);
  }

  onLevel(level) {
    this.currentLevel = level;
    const r = this.renditionOfLevel(level);
    if (r >= 0) this.setRendition(r);
  }

  /** A media playlist hls.js loaded: the core learns which segments are fresh live. */
  onLevelDetails(details) {
    if (!details || !(details.targetduration > 0)) return;
    const segments = [];
    // Each init section's fragments in this playlist (the newest load says which they are).
    const users = new Map();
    for (const frag of details.fragments ?? []) {
      const range = frag.byteRange?.length === 2 ? frag.byteRange : null;
      const id = this.segmentId(frag.url, range);
      if (id) segments.push({ sequence: frag.sn, id, duration_ms: frag.duration * 1000 });
      const init = frag.initSegment;
      if (init && typeof init === 'object' && Number.isFinite(frag.start)) {
        if (!users.has(init)) users.set(init, []);
        users.get(init).push({ start: frag.start, end: frag.start + frag.duration });
      }
    }
    for (const [init, list] of users) (this.parent ?? this).initUsers.set(init, list);
    this.feed({ type: 'playlist', ok: { segments, target_duration_ms: details.targetduration * 1000, ended: !details.live } });
  }

  attachMedia(media) {
    if (this.media === media) return;
    this.detachMedia();
    this.media = media;
    this.playbackStarted = false;
    this.unwatchMedia = watchStalls(media, {
      started: () => (this.playbackStarted = true),
      stalled: () => {
        this.stats.stalls++;
        const b = media.buffered;
        this.trace('stall', { at: media.currentTime, buffered: b.length ? [b.start(0), b.end(b.length - 1)] : [] });
      },
    });
  }

  detachMedia() {
    this.unwatchMedia?.();
    this.unwatchMedia = null;
    this.media = null;
  }

  // ===========================================================================================
  // Segments for the player

  /**
   * The segment id (gateway path, percent-encoded, no query) of a URL on the gateway, or null;
   * with `range` ([start, end) of a byte-range segment) the id of that range (util.rangeId).
   * @param {string} url
   * @param {[number, number] | null} [range]
   */
  segmentId(url, range = null) {
    const path = gatewayPath(url, this.gatewayOrigin);
    if (path === null) return null;
    return range ? rangeId(path, range[0], range[1]) : path;
  }

  /**
   * When the player needs a fragment (ms, performance.now() scale): now + its distance from the
   * playhead at the playback rate; before playback has started, now (urgent).
   */
  playsAt(frag, t = now()) {
    if (this.parent) return this.parent.playsAt(frag, t); // one player, one playhead
    const media = this.media;
    if (!media || !this.playbackStarted || !frag) return t;
    if (frag.sn === 'initSegment') return this.initPlaysAt(frag, t);
    if (!Number.isFinite(frag.start)) return t;
    const rate = media.playbackRate > 0 ? media.playbackRate : 1;
    return t + (Math.max(0, frag.start - media.currentTime) / rate) * 1000;
  }

  /**
   * When an init section is needed (playback started): when the first media fragment it
   * initialises that has not finished playing plays (from the playlists hls.js loaded), else
   * INIT_UNKNOWN_PLAYS_IN_MS from now.
   */
  initPlaysAt(init, t) {
    const current = this.media.currentTime;
    let first = null;
    for (const u of this.initUsers.get(init) ?? []) {
      if (u.end > current && (first === null || u.start < first.start)) first = u;
    }
    return first ? this.playsAt({ start: first.start }, t) : t + INIT_UNKNOWN_PLAYS_IN_MS;
  }

  /**
   * Gets a segment for the player: from the store, from peers or over HTTP, verified.
   * `onSuccess({data: ArrayBuffer, source: "http"|"p2p", timing: {start, first, end}})` gets a copy
   * of the bytes (hls.js may transfer the buffer to a worker) and the times of the transfer that
   * produced them; `onError({code, text})` when HTTP failed and nothing else can deliver.
   * `headers` (hls.js's `context.headers`: its CMCD in header mode) go with the HTTP fetch, as the
   * query of `url` does (its CMCD in query mode); neither is part of the segment's id.
   * `range` ([start, end)) asks for one byte range of the file at `url` (an EXT-X-BYTERANGE
   * segment): a segment of its own, with its own id and digest.
   * @param {string} url
   * @param {{frag?: object, range?: [number, number] | null, headers?: Record<string, string>, playsAt?: (t: number) => number, onSuccess: Function, onError: Function}} o
   * @returns {{cancel: () => void}}
   */
  fetchSegment(url, { frag = null, range = null, headers = null, playsAt = null, onSuccess, onError }) {
    const id = this.segmentId(url, range);
    if (!id) throw new Error(`P2PEngine.fetchSegment: ${url} is not on the gateway`);
    this.urls.set(id, url);
    if (headers && Object.keys(headers).length > 0) this.requestHeaders.set(id, { ...headers });
    else this.requestHeaders.delete(id);
    const waiter = this.nextWaiter++;
    const t = now();
    // Peers only for the swarm we are in (init sections too); another rendition goes to the gateway.
    const conn = this.conn;
    const rendition = this.renditionOfFrag(frag);
    const p2p = Boolean(conn?.peerId) && rendition === conn.rendition;
    const init = frag?.sn === 'initSegment';
    const w = { id, p2p, init, playsAt: playsAt ?? ((at) => this.playsAt(frag, at)), sentPlaysAt: 0, onSuccess, onError, cancelled: false };
    w.sentPlaysAt = w.playsAt(t);
    this.waiters.set(waiter, w);
    this.trace('need', { id, in: Math.round(w.sentPlaysAt - t), level: frag?.level, p2p });
    this.feed({ type: 'need', waiter, id, plays_at: w.sentPlaysAt, p2p });
    return {
      cancel: () => {
        if (w.cancelled) return;
        w.cancelled = true;
        if (this.waiters.delete(waiter)) this.feed({ type: 'abandon', waiter });
      },
    };
  }

  /** `need` again for the waiters whose deadline moved (playback started, paused, seeked…). */
  movedDeadlines() {
    const t = now();
    const moved = [];
    for (const [waiter, w] of this.waiters) {
      const at = w.playsAt(t);
      const due = at <= t && w.sentPlaysAt <= t; // both "now": nothing changed for the core
      if (due || Math.abs(at - w.sentPlaysAt) <= DEADLINE_SLACK_MS) continue;
      w.sentPlaysAt = at;
      moved.push({ type: 'need', waiter, id: w.id, plays_at: at, p2p: w.p2p });
    }
    return moved;
  }

  /** HTTP bytes of a fragment fetched by hls.js's own loader (byte ranges, other tracks). */
  countHttpOnly(bytes) {
    this.otherHttp.bytes += bytes;
    this.otherHttp.segments++;
    this.updateStats();
  }

  /** Hands a segment (or an error) to its hls.js callers, each with its own copy of the bytes. */
  deliver(o) {
    let timing = null;
    if (o.ok) {
      timing = this.transferTiming(o.id, o.ok);
      this.trace('deliver', { id: o.id, source: o.ok.source, took: Math.round(timing.end - timing.start) });
    } else {
      this.trace('deliver', { id: o.id, error: o.err.kind });
    }
    for (const waiter of o.waiters) {
      const w = this.waiters.get(waiter);
      if (!w) continue;
      this.waiters.delete(waiter);
      if (o.ok && w.init) this.initDelivered[o.ok.source === 'p2p' ? 'p2p' : 'http']++;
      // Later: the loader is not called back from inside its own load(), and may still abort.
      queueMicrotask(() => {
        if (w.cancelled) return;
        if (o.ok) w.onSuccess({ data: o.ok.bytes.slice().buffer, source: o.ok.source, timing: { ...timing } });
        else w.onError({ code: o.err.status ?? 0, text: describeHttpError(o.err) });
      });
    }
  }

  /**
   * The real times of the transfer that produced a delivered segment. A store hit gets the times of
   * the transfer that stored it (the core gives its duration, ending now, when this driver did not
   * see it), so hls.js never sees a near-zero copy.
   */
  transferTiming(id, ok) {
    if (ok.from_store) {
      const earlier = this.timings.get(id);
      return earlier ?? { start: ok.started, first: ok.started, end: ok.finished };
    }
    const first = this.firstByte.get(id) ?? ok.started;
    this.firstByte.delete(id);
    const timing = { start: ok.started, first: Math.min(Math.max(first, ok.started), ok.finished), end: ok.finished };
    this.timings.set(id, timing);
    return timing;
  }

  // ===========================================================================================
  // HTTP and hashing for the core

  /**
   * The gateway URL of a segment hls.js has not asked for (one a digest announced): its id on the
   * gateway, with the viewer's token for a stream under a protected prefix (the URLs hls.js asks
   * for carry it already, from the playlists the gateway rewrote).
   */
  gatewayUrl(id) {
    const url = new URL(id, this.gatewayOrigin);
    if (this.options.token) url.searchParams.set('token', this.options.token);
    return url.href;
  }

  httpGet(id, from) {
    this.http.get(id)?.controller.abort();
    const controller = new AbortController();
    const fetch = { controller };
    this.http.set(id, fetch);
    const url = this.urls.get(id) ?? this.gatewayUrl(id);
    const headers = this.requestHeaders.get(id) ?? null;
    const { range } = splitRangeId(id);
    this.fetchBody(url, from, controller.signal, () => {
      if (!this.firstByte.has(id)) this.firstByte.set(id, now());
    }, headers, range).then(
      (bytes) => {
        if (this.http.get(id) !== fetch) return; // cancelled or replaced
        this.http.delete(id);
        this.feed({ type: 'http', id, from, ok: bytes });
      },
      (err) => {
        if (this.http.get(id) !== fetch || err?.name === 'AbortError') return;
        this.http.delete(id);
        this.log.warn('http-failed', id, describeHttpError(err));
        this.feed({ type: 'http', id, from, err: err.kind ? err : { kind: 'network', message: String(err?.message ?? err) } });
      },
    );
  }

  /**
   * GET url from byte `from` (a Range request when > 0), with `headers` if any: the body from
   * `from` on. With `range` ({offset, length}: a byte-range segment), `from` counts from the
   * range's start and the body ends with the range. Rejects with an HttpError ({kind, status?})
   * or the fetch's own error (network, abort).
   */
  async fetchBody(url, from, signal, firstByte, headers = null, range = null) {
    const first = (range?.offset ?? 0) + from;
    const end = range ? range.offset + range.length : null; // exclusive; null: the file's end
    if (end !== null && first >= end) return new Uint8Array(0);
    const spec = end !== null ? `bytes=${first}-${end - 1}` : first > 0 ? `bytes=${first}-` : null;
    const init = { signal, credentials: 'same-origin' };
    if (headers || spec) init.headers = { ...headers, ...(spec ? { Range: spec } : {}) };
    const resp = await this.impl.fetch(url, init);
    if (!resp.ok) {
      const kind = resp.status === 404 || resp.status === 410 ? 'absent' : 'status';
      throw { kind, status: resp.status };
    }
    let skip = 0; // a server that ignores the Range sends the whole body
    let keep = Infinity;
    if (spec && resp.status === 206) {
      const m = /^bytes (\d+)-/.exec(resp.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== first) throw { kind: 'network', message: `unexpected Content-Range for ${spec}` };
    } else {
      skip = first;
    }
    if (end !== null) keep = end - first;
    const parts = [];
    let total = 0;
    if (resp.body?.getReader) {
      const reader = resp.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        firstByte();
        parts.push(value);
        total += value.length;
        if (total > MAX_SEGMENT_BYTES) {
          reader.cancel().catch(() => {});
          throw { kind: 'too_large', limit: MAX_SEGMENT_BYTES };
        }
      }
    } else {
      const buf = new Uint8Array(await resp.arrayBuffer());
      firstByte();
      parts.push(buf);
      total = buf.length;
    }
    const body = concatBytes(parts, total);
    const start = Math.min(skip, body.length);
    return skip > 0 || keep < body.length ? body.subarray(start, Math.min(body.length, start + keep)) : body;
  }

  /** SHA-256 by WebCrypto, answered as `verified` (a failed hash matches no digest). */
  verify(ticket, bytes) {
    sha256Hex(bytes).then(
      (sha256) => this.feed({ type: 'verified', ticket, sha256 }),
      (e) => {
        this.log.warn('sha256-failed', e?.message ?? e);
        this.feed({ type: 'verified', ticket, sha256: '' });
      },
    );
  }

  // ===========================================================================================
  // Peer links for the core

  /** The core asks for a link to `peer`: offer one (the outcome is `link_up` or `connect_failed`). */
  connectTo(peer) {
    const conn = this.conn;
    if (!conn?.peerId || !conn.channel.open || !this.impl.RTCPeerConnection) {
      this.feed({ type: 'connect_failed', peer });
      return;
    }
    const existing = this.peerLinks.get(peer);
    if (existing) {
      existing.asked = true; // its negotiation (their offer) answers for us
      return;
    }
    this.trace('connect', { peer });
    const link = this.createLink(conn, peer, true);
    link.asked = true;
    link.start();
  }

  createLink(conn, remote, initiator) {
    const link = new PeerLink({
      me: conn.peerId,
      remote,
      initiator,
      iceServers: this.options.iceServers,
      RTCPeerConnection: this.impl.RTCPeerConnection,
      hooks: {
        signal: (payload) => {
          if (conn === this.conn) conn.channel.send({ type: 'relay', to: remote, payload });
        },
        ready: (l) => this.onLinkReady(conn, l),
        frame: (l, f) => this.onFrame(l, f),
        closed: (l) => this.onLinkClosed(l),
        drained: (l) => this.written(l.coreId),
        warn: (...a) => this.log.warn(...a),
      },
    });
    /** The core waits for this link (`link_up` or `connect_failed`). */
    link.asked = false;
    /** Its id for the core, once open. */
    link.coreId = null;
    this.peerLinks.set(remote, link);
    return link;
  }

  onLinkReady(conn, link) {
    if (conn !== this.conn) {
      link.close('left the swarm');
      return;
    }
    link.coreId = this.nextLinkId++;
    link.asked = false;
    /** Segment payload bytes (chunks) received on and sent over this link, and when it opened. */
    link.bytesFrom = 0;
    link.bytesTo = 0;
    link.readyAt = now();
    this.links.set(link.coreId, link);
    this.unwritten.set(link.coreId, 0);
    this.feed({ type: 'link_up', link: link.coreId, peer: link.remote, initiated: link.initiator, max_frame: link.maxMessageSize });
  }

  onFrame(link, frame) {
    if (link.coreId === null || this.links.get(link.coreId) !== link) return;
    if (frame.type === 'chunk') {
      link.bytesFrom += frame.data.length;
      // The first byte of one of our requests: when its transfer started delivering.
      const key = `${link.coreId}:${frame.request_id}`;
      const id = this.requested.get(key);
      if (id !== undefined) {
        this.requested.delete(key);
        if (!this.firstByte.has(id)) this.firstByte.set(id, now());
      }
    }
    this.feed({ type: 'frame', link: link.coreId, frame });
  }

  onLinkClosed(link) {
    if (this.peerLinks.get(link.remote) === link) this.peerLinks.delete(link.remote);
    if (link.coreId !== null && this.links.get(link.coreId) === link) {
      this.forgetLink(link.coreId);
      this.feed({ type: 'link_down', link: link.coreId });
    } else if (link.asked) {
      link.asked = false;
      this.feed({ type: 'connect_failed', peer: link.remote });
    }
  }

  forgetLink(id) {
    this.links.delete(id);
    this.unwritten.delete(id);
  }

  /** A frame from the core; `written` follows when the channel has taken it (its buffer is low). */
  send(id, frame) {
    const link = this.links.get(id);
    if (!link) {
      this.feed({ type: 'link_down', link: id });
      return;
    }
    if (frame.type === 'request') this.requested.set(`${id}:${frame.request_id}`, frame.segment);
    if (!link.sendFrame(frame)) return; // the link closes itself: link_down follows
    if (frame.type === 'chunk') link.bytesTo += frame.data.length;
    this.unwritten.set(id, (this.unwritten.get(id) ?? 0) + encodedLen(frame));
    if (link.bufferedAmount <= BUFFER_LOW) this.written(id);
  }

  written(id) {
    const bytes = this.unwritten.get(id);
    if (!bytes) return;
    this.unwritten.set(id, 0);
    this.feed({ type: 'written', link: id, bytes });
  }

  /** A relayed negotiation message. Of two crossing offers the greater id's wins (PROTOCOL.md §6). */
  onRelay(conn, from, payload) {
    if (!conn.peerId || this.core.isBanned(from)) return;
    const kind = payload?.kind;
    const valid =
      (kind === 'offer' || kind === 'answer'
        ? typeof payload.sdp === 'string'
        : kind === 'candidate' && typeof payload.candidate === 'object' && payload.candidate !== null) &&
      from !== conn.peerId;
    if (!valid) {
      this.log.warn('bad-relay', from, kind);
      return;
    }
    let link = this.peerLinks.get(from);
    if (kind === 'offer') {
      let asked = false;
      if (link) {
        if (link.initiator && compareIds(conn.peerId, from) > 0) return;
        // Their offer replaces our attempt (or a link they gave up on); the core's wait carries over.
        asked = link.asked;
        link.asked = false;
        link.close('replaced by a new offer');
      } else if (this.peerLinks.size >= conn.maxPeers || !this.impl.RTCPeerConnection) {
        return; // full: the offerer times out and tries later
      }
      link = this.createLink(conn, from, false);
      link.asked = asked;
    }
    link?.handleSignal(payload);
  }

  closePeerLinks(reason) {
    for (const link of [...this.peerLinks.values()]) link.close(reason);
  }

  // ===========================================================================================
  // Signalling

  /** Joins the swarm of `rendition` on a new socket, leaving the current one. */
  setRendition(rendition) {
    if (this.destroyed || !this.streamPath) return;
    if (rendition === this.rendition && (this.conn || this.reconnectTimer)) return;
    this.rendition = rendition;
    this.stats.rendition = rendition;
    this.leaveSwarm();
    this.backoff.reset();
    // Shards are per rendition: another rendition's swarm starts at shard 0.
    this.shard = this.shardHops = 0;
    // After unsupported_version or unauthorized no swarm of this stream will take us.
    if (!this.suspended && !this.noReconnect) this.connect();
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (!this.impl.WebSocket) {
      this.log.warn('no-websocket', 'P2P disabled');
      return;
    }
    if (!globalThis.crypto?.subtle) {
      this.log.warn('no-webcrypto', 'P2P disabled: peer bytes cannot be verified outside a secure context');
      return;
    }
    if (this.keyPending) {
      this.connectWhenKeyReady = true; // `join` carries the key
      return;
    }
    const shard = this.shard > 0 ? `&shard=${this.shard}` : '';
    const ws = new URL(`/p2p/v1/ws?stream=${encodeURIComponent(this.streamPath)}${shard}`, this.gatewayOrigin);
    ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
    const conn = {
      rendition: this.rendition,
      channel: null,
      peerId: null,
      swarm: null,
      maxPeers: this.options.maxPeers,
      nextShard: null,
    };
    conn.channel = new SignallingChannel({
      url: ws.href,
      join: {
        stream: this.streamPath,
        rendition: this.rendition,
        upload: this.options.upload,
        token: this.options.token,
        key: this.nodeKey?.publicHex ?? null,
      },
      WebSocket: this.impl.WebSocket,
      hooks: {
        message: (m) => this.onSignal(conn, m),
        closed: (info) => this.onSignalClosed(conn, info),
        warn: (...a) => this.log.warn(...a),
      },
    });
    this.conn = conn;
  }

  onSignal(conn, m) {
    if (conn !== this.conn) return;
    switch (m.type) {
      case 'welcome':
        if (conn.peerId) {
          this.log.warn('bad-signal', 'second welcome');
          return;
        }
        conn.peerId = m.peer_id;
        conn.swarm = m.swarm;
        conn.maxPeers = Math.min(this.options.maxPeers, m.max_peers);
        this.stats.peerId = m.peer_id;
        this.stats.swarm = m.swarm;
        this.stats.shard = this.shard;
        this.shardHops = 0;
        this.backoff.reset();
        this.feed({ type: 'signal', message: m });
        this.flushReport();
        return;
      case 'digests':
      case 'peers':
        if (!conn.peerId) {
          this.log.warn('bad-signal', `${m.type} before welcome`);
          return;
        }
        this.feed({ type: 'signal', message: m });
        return;
      case 'relay':
        this.onRelay(conn, m.from, m.payload);
        return;
      case 'error':
        if (m.code === 'swarm_full' && m.shard !== undefined) {
          conn.nextShard = m.shard;
          return;
        }
        this.log.warn('tracker-error', m.code, m.message);
        if (NO_RECONNECT.has(m.code)) this.noReconnect = true;
        return;
    }
  }

  onSignalClosed(conn, info) {
    if (conn !== this.conn) return;
    this.conn = null;
    this.stats.peerId = this.stats.swarm = null;
    // Open links keep working until the next welcome starts a new swarm session in the core.
    this.feed({ type: 'signal_closed' });
    if (this.destroyed || this.suspended || this.rendition === null) return;
    if (this.noReconnect || NO_RECONNECT.has(info.error)) {
      this.noReconnect = true;
      this.log.warn('signalling-closed', `no reconnect after ${info.error}`);
      return;
    }
    // A full shard named the next one: ask for it at once (not a reconnect: no session was lost).
    if (conn.nextShard !== null && conn.nextShard > this.shard && this.shardHops < MAX_SHARD_HOPS) {
      this.shard = conn.nextShard;
      this.shardHops += 1;
      this.connect();
      return;
    }
    const delay = info.code === CLOSE_SERVICE_RESTART
      ? Math.floor(Math.random() * RESTART_JITTER_MS)
      : this.backoff.next();
    this.stats.signallingReconnects += 1;
    this.log.warn('signalling-closed', info.code, info.reason || info.error || '', `reconnecting in ${delay} ms`);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Leaves the current swarm on purpose: a pending report, `leave`, links closed. */
  leaveSwarm() {
    const conn = this.conn;
    if (!conn) return;
    this.conn = null;
    this.stats.peerId = this.stats.swarm = null;
    const last = [];
    if (conn.peerId && conn.channel.open) {
      if (this.pendingReport) last.push(this.withReceipts(this.pendingReport));
      this.pendingReport = null;
      // Leaving for good: the receipts still waiting go too (another swarm session would carry them).
      const forGood = this.stopping || this.suspended;
      while (forGood && this.receipts.length > 0 && last.length < LAST_RECEIPT_REPORTS + 1) {
        last.push(this.withReceipts(emptyReport()));
      }
    }
    conn.channel.leave(last);
    this.closePeerLinks('leave');
    this.updateStats();
  }

  /** A message from the core for the tracker. */
  signal(message) {
    if (message.type === 'leave') {
      this.leaveSwarm(); // the core stopped (destroy): its last report went out just before
      return;
    }
    if (this.pendingReport) {
      const merged = mergeReports(this.pendingReport, message);
      // Receipts of both, MAX_RECEIPTS at most: the rest wait for the next report.
      const rest = merged.receipts?.splice(MAX_RECEIPTS) ?? [];
      if (rest.length > 0) this.unsendReceipts(rest);
      this.pendingReport = merged;
    } else {
      this.pendingReport = message;
    }
    this.flushReport();
  }

  /** Sends the pending report if the tracker can take it, with the receipts that wait. */
  flushReport() {
    const conn = this.conn;
    if (!this.pendingReport || !conn?.peerId || !conn.channel.open) return;
    conn.channel.send(this.withReceipts(this.pendingReport));
    this.pendingReport = null;
  }

  // ===========================================================================================
  // Receipts

  /** The core's `delivered`: a receipt, signed now (its time) and queued for a report. */
  signReceipt(o) {
    const key = this.nodeKey;
    // Without a key nothing is signed; a peer with this very key (another tab of this browser) is
    // never credited by the gateway.
    if (!key || o.uploader === key.publicHex) return;
    const receipt = {
      alg: key.alg,
      uploader: o.uploader,
      receiver: key.publicHex,
      swarm: o.swarm,
      segment: o.segment,
      sha256: o.sha256,
      bytes: o.bytes,
      time: Date.now(),
      nonce: randomHex(16),
    };
    key.sign(receiptText(receipt)).then(
      (sig) => {
        if (this.destroyed) return;
        this.stats.receiptsSigned++;
        this.trace('receipt', { segment: o.segment, bytes: o.bytes });
        this.queueReceipts([{ ...receipt, sig }]);
      },
      (e) => this.log.warn('sign-failed', e?.message ?? e),
    );
  }

  /** Queues signed receipts behind the ones waiting; beyond MAX_PENDING_RECEIPTS the oldest go. */
  queueReceipts(receipts) {
    this.receipts.push(...receipts);
    if (this.receipts.length > MAX_PENDING_RECEIPTS) {
      const dropped = this.receipts.length - MAX_PENDING_RECEIPTS;
      this.receipts.splice(0, dropped);
      this.stats.receiptsDropped += dropped;
    }
    this.stats.receiptsPending = this.receipts.length;
  }

  /** Receipts taken for a report that will not carry them: first in line again. */
  unsendReceipts(receipts) {
    this.receipts.unshift(...receipts);
    this.queueReceipts([]);
  }

  /**
   * `report` (not changed) with the receipts it has and the oldest waiting ones added: MAX_RECEIPTS
   * at most, and the message within the tracker's size limit.
   */
  withReceipts(report) {
    const own = report.receipts ?? [];
    const room = Math.max(0, MAX_RECEIPTS - own.length);
    if (room === 0 || this.receipts.length === 0) return report;
    const taken = this.receipts.splice(0, room);
    const out = { ...report, receipts: [...own, ...taken] };
    // ~600 bytes a receipt: 64 fit unless the report is large itself (a long peers list).
    while (taken.length > 0 && utf8Length(JSON.stringify(out)) > REPORT_SIZE_LIMIT) {
      out.receipts.pop();
      this.unsendReceipts([taken.pop()]);
    }
    if (out.receipts.length === 0) delete out.receipts;
    this.stats.receiptsSent += taken.length;
    this.stats.receiptsPending = this.receipts.length;
    return out;
  }

  // ===========================================================================================
  // Lifecycle

  /** The page is going away (pagehide): leave now, links closed. */
  suspend() {
    if (this.destroyed || this.suspended) return;
    this.suspended = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    // What was verified since the last report is reported now: its receipts, which go out with
    // `leave`, would otherwise be refused as `not_reported`.
    this.feed(REPORT_NOW);
    this.leaveSwarm();
  }

  /** The page came back from the back/forward cache: rejoin. */
  resume() {
    if (this.destroyed || !this.suspended) return;
    this.suspended = false;
    if (this.rendition !== null && !this.noReconnect) this.connect();
  }

  /** Last report and leave, every link, timer and transfer stopped; the engine cannot be used again. */
  destroy() {
    if (this.destroyed) return;
    // The track engines first: each reports and leaves its swarm before this one detaches them.
    for (const engine of this.tracks.values()) engine.destroy();
    this.stopping = true;
    this.feed({ type: 'stop' });
    this.destroyed = true;
    this.detach();
    globalThis.removeEventListener?.('pagehide', this.onPageHide);
    globalThis.removeEventListener?.('pageshow', this.onPageShow);
    clearTimeout(this.timer);
    clearTimeout(this.reconnectTimer);
    this.timer = this.reconnectTimer = null;
    this.closePeerLinks('destroyed');
    for (const fetch of this.http.values()) fetch.controller.abort();
    this.http.clear();
    this.waiters.clear();
  }
}

/** One track's figures for `stats.tracks`. */
function trackFigures(s) {
  return {
    rendition: s.rendition,
    swarm: s.swarm,
    peerId: s.peerId,
    peers: s.peers,
    httpBytes: s.httpBytes,
    p2pBytes: s.p2pBytes,
    httpSegments: s.httpSegments,
    p2pSegments: s.p2pSegments,
    verifiedSegments: s.verifiedSegments,
    rejectedSegments: s.rejectedSegments,
    uploadedBytes: s.uploadedBytes,
  };
}

/** A report of nothing (to carry receipts). */
function emptyReport() {
  return {
    type: 'report',
    http_bytes: 0,
    p2p_bytes: 0,
    http_segments: 0,
    p2p_segments: 0,
    uploaded_bytes: 0,
    failures: { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 },
  };
}

/**
 * One report for two consecutive ones (the first found no open socket); their receipts one after
 * the other (the caller keeps MAX_RECEIPTS of them).
 */
export function mergeReports(a, b) {
  const out = { ...b, failures: { ...b.failures } };
  for (const k of ['http_bytes', 'p2p_bytes', 'http_segments', 'p2p_segments', 'uploaded_bytes']) out[k] += a[k];
  for (const c of Object.keys(a.failures)) out.failures[c] = (out.failures[c] ?? 0) + a.failures[c];
  const peers = new Map();
  for (const p of [...(a.peers ?? []), ...(b.peers ?? [])]) {
    const q = peers.get(p.peer_id);
    if (q) for (const k of ['ok', 'failed', 'mismatch', 'bytes']) q[k] += p[k];
    else if (peers.size < MAX_LIST_LEN) peers.set(p.peer_id, { ...p });
  }
  if (peers.size > 0) out.peers = [...peers.values()];
  const receipts = [...(a.receipts ?? []), ...(b.receipts ?? [])];
  if (receipts.length > 0) out.receipts = receipts;
  else delete out.receipts;
  return out;
}

function describeHttpError(e) {
  if (e?.status) return `HTTP ${e.status}`;
  if (e?.kind === 'too_large') return 'segment too large';
  return e?.message ?? e?.kind ?? String(e);
}
