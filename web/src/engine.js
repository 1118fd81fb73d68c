// The browser P2P engine: joins the swarm of the rendition being played through the gateway's
// tracker, links to other viewers over WebRTC data channels, gets each segment the player asks for
// from peers or over HTTP as the deadline scheduler decides, verifies every peer byte against the
// gateway's SHA-256 before the player sees it, keeps verified segments to upload to others, and
// reports delivery to the gateway.
//
// Distribution first: a segment from peers is only ever an optimisation. The scheduler starts HTTP
// early enough to make the player's deadline, a peer that lies is banned and its segment fetched over
// HTTP, and when signalling is unavailable everything goes over HTTP.

import { MAX_FRAME_LEN, MAX_HAVE_IDS } from './protocol/frame.js';
import { fetchVariantUrls, renditionOfUrl } from './master.js';
import { PeerLink } from './peer-link.js';
import { Scheduler, TRANSFER_POLL_MS, WAIT_POLL_MS, updateRate } from './scheduler.js';
import { SignallingChannel } from './signalling.js';
import { DEFAULT_MAX_STORE_BYTES, SegmentStore } from './store.js';
import { Backoff, BoundedMap, WarningLog, concatBytes, fromHex, now, sha256Hex, toHex } from './util.js';
import { createP2PLoader } from './loader.js';
import { watchStalls } from './playback.js';

export const DEFAULT_MAX_PEERS = 8;
export const DEFAULT_REPORT_INTERVAL_MS = 2000;
/** Have is sent at most this often per link (the first change goes at once). */
export const HAVE_INTERVAL_MS = 1000;
/** A peer listed this long that has not offered a link (greater ids offer) is offered one by us. */
export const LINK_FALLBACK_MS = 5000;
/** Waiting before offering a link again to a peer whose link closed: doubles up to 60 s. */
const LINK_RETRY_FIRST_MS = 5000;
const LINK_RETRY_MAX_MS = 60_000;
/** Running work for a segment nobody waits for any more is stopped after this. */
const ABANDONED_GRACE_MS = 3000;
/** Largest segment body accepted, from peers (by the digest's size) or over HTTP. */
const MAX_SEGMENT_BYTES = 256 * 1024 * 1024;
const MAX_DIGESTS = 4096;
const MAX_FIRST_SEEN = 4096;
const MAX_REPORT_PEERS = 256;
/** Peers whose outcomes wait for a report (while the socket is down, say). */
const MAX_PEER_DELTAS = 1024;
/** Tracker errors after which reconnecting cannot help. */
const NO_RECONNECT = new Set(['unsupported_version', 'unauthorized']);
const FAILURE_CAUSES = ['timeout', 'mismatch', 'absent', 'disconnect'];

/**
 * @typedef {object} P2PEngineOptions
 * @property {string} [gateway]  gateway base URL (default: the page's origin)
 * @property {string} stream     the stream: its multivariant playlist path (or URL) on the gateway
 * @property {RTCIceServer[]} [iceServers] for RTCPeerConnection (default [])
 * @property {number} [maxStoreBytes] memory for verified segments (default 64 MiB)
 * @property {boolean} [upload]  serve segments to other peers (default true)
 * @property {number} [maxPeers] at most this many peer links (default 8; the tracker's max_peers
 *   lowers it)
 * @property {string} [token]    sent in `join` when the gateway requires one
 * @property {number} [reportIntervalMs] delivery reports (default 2000)
 * @property {object} [scheduler] scheduler tuning (see scheduler.js DEFAULT_SCHEDULER_CONFIG)
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
    this.streamPath = options.stream ? new URL(options.stream, this.gatewayOrigin).pathname : null;
    this.options = {
      iceServers: options.iceServers ?? [],
      maxStoreBytes: options.maxStoreBytes ?? DEFAULT_MAX_STORE_BYTES,
      upload: options.upload ?? true,
      maxPeers: options.maxPeers ?? DEFAULT_MAX_PEERS,
      token: options.token ?? null,
      reportIntervalMs: options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS,
    };
    this.impl = {
      WebSocket: options.WebSocket ?? env.WebSocket,
      RTCPeerConnection: options.RTCPeerConnection ?? env.RTCPeerConnection,
      fetch: options.fetch ?? env.fetch?.bind(env),
    };
    this.scheduler = new Scheduler(options.scheduler);
    /**
     * Measured HTTP rate (bytes/s, EWMA over the engine's own fetches, request to last byte). The
     * scheduler uses the lower of it and its configured rate: when the network or a busy page makes
     * HTTP slow, HTTP starts earlier.
     */
    this.httpRate = null;
    /** With options.trace: the last decisions and events, for debugging ({t, what, ...}). */
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
    };
    this.log = new WarningLog('[p2p]', (n) => (this.stats.warnings = n));
    this.store = new SegmentStore(this.options.maxStoreBytes);
    this.store.onChange = () => {
      this.stats.storedSegments = this.store.size;
      this.stats.storedBytes = this.store.bytes;
      this.haveChanged();
    };
    /** Gateway digests: segment id → {sha256, size}. */
    this.digests = new BoundedMap(MAX_DIGESTS);
    /** When each segment id was first seen in a playlist (or asked for), for "fresh live". */
    this.firstSeen = new BoundedMap(MAX_FIRST_SEEN);
    this.live = false;
    this.targetDurationMs = 6000;
    /** Segments the player waits for: id → Need. */
    this.needs = new Map();
    /** Our outstanding peer requests: request_id → Need. */
    this.requests = new Map();
    this.nextRequestId = 1;
    /** Peers caught sending bad data (ids are per connection, so this does not grow much). */
    this.banned = new BoundedMap(1024);
    this.reported = { httpBytes: 0, p2pBytes: 0, httpSegments: 0, p2pSegments: 0, uploadedBytes: 0, failures: { ...this.stats.failures } };
    this.peerDeltas = new Map();

    this.rendition = null;
    this.conn = null;
    this.backoff = new Backoff();
    this.reconnectTimer = null;
    this.noReconnect = false;
    this.suspended = false;
    this.destroyed = false;

    this.tickTimer = null;
    this.tickAt = Infinity;
    this.haveTimer = null;
    this.lastHaveAt = -Infinity;

    this.hls = null;
    this.hlsHandlers = [];
    this.variantUrls = null;
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
  }

  /** An hls.js fragment loader class (config.fLoader) that gets segments through this engine. */
  createLoaderClass(Hls) {
    this.Hls = Hls;
    return createP2PLoader(Hls, this);
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
  }

  async loadVariants() {
    if (!this.streamPath || this.variantUrls) return;
    const url = new URL(this.streamPath, this.gatewayOrigin).href;
    for (let attempt = 0; attempt < 3 && !this.destroyed; attempt++) {
      try {
        this.variantUrls = await fetchVariantUrls(url, this.impl.fetch);
        this.mapLevels();
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
    if (!hls || !this.variantUrls || !hls.levels) return;
    const base = hls.url ?? new URL(this.streamPath, this.gatewayOrigin).href;
    this.levelRendition = hls.levels.map((level) => {
      const url = level.uri ?? (Array.isArray(level.url) ? level.url[0] : level.url);
      const r = url ? renditionOfUrl(this.variantUrls, url, base) : -1;
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

  /** The hls.js level index of a rendition, or -1 (for a page that fixes the rendition). */
  levelOfRendition(rendition) {
    return this.levelRendition.indexOf(rendition);
  }

  onLevel(level) {
    this.currentLevel = level;
    const r = this.renditionOfLevel(level);
    if (r >= 0) this.setRendition(r);
  }

  onLevelDetails(details) {
    if (!details) return;
    this.live = Boolean(details.live);
    if (details.targetduration > 0) this.targetDurationMs = details.targetduration * 1000;
    const t = now();
    for (const frag of details.fragments ?? []) {
      const id = this.segmentId(frag.url);
      if (id && !this.firstSeen.has(id)) this.firstSeen.set(id, t);
    }
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

  /** The segment id (gateway path, percent-encoded, no query) of a URL on the gateway, or null. */
  segmentId(url) {
    try {
      const u = new URL(url, this.gatewayOrigin);
      return u.origin === this.gatewayOrigin ? u.pathname : null;
    } catch {
      return null;
    }
  }

  /**
   * When the player needs a fragment (ms, performance.now() scale): now + its distance from the
   * playhead at the playback rate; before playback has started, now (urgent).
   */
  playsAt(frag, t = now()) {
    const media = this.media;
    if (!media || !this.playbackStarted || !frag || !Number.isFinite(frag.start)) return t;
    const rate = media.playbackRate > 0 ? media.playbackRate : 1;
    return t + (Math.max(0, frag.start - media.currentTime) / rate) * 1000;
  }

  /**
   * Gets a segment for the player: from the store, from peers or over HTTP, verified.
   * `onSuccess({data: ArrayBuffer, source: "http"|"p2p", timing: {start, first, end}})` gets a copy
   * of the bytes (hls.js may transfer the buffer to a worker) and the times of the transfer that
   * produced them; `onError({code, text})` when HTTP failed and nothing else can deliver.
   * @param {string} url
   * @param {{frag?: object, playsAt?: (t: number) => number, onSuccess: Function, onError: Function}} o
   * @returns {{cancel: () => void}}
   */
  fetchSegment(url, { frag = null, playsAt = null, onSuccess, onError }) {
    const id = this.segmentId(url);
    if (!id) throw new Error(`P2PEngine.fetchSegment: ${url} is not on the gateway`);
    const waiter = {
      playsAt: playsAt ?? ((t) => this.playsAt(frag, t)),
      onSuccess,
      onError,
    };
    const handle = { cancel: () => this.dropWaiter(id, waiter) };
    const stored = this.store.get(id);
    if (this.traceLog) {
      const t = now();
      this.trace('fetch', { id, in: Math.round(waiter.playsAt(t) - t), level: frag?.level, stored: Boolean(stored) });
    }
    if (stored) {
      queueMicrotask(() => waiter.onSuccess(deliverable(stored)));
      return handle;
    }
    if (!this.firstSeen.has(id)) this.firstSeen.set(id, now());
    let need = this.needs.get(id);
    if (!need) {
      const rendition = frag ? this.renditionOfLevel(frag.level) : -1;
      const conn = this.conn;
      // P2P only for the swarm we are in; anything else goes straight to the gateway.
      const p2p = Boolean(conn?.peerId) && rendition === conn.rendition && frag?.sn !== 'initSegment';
      need = newNeed(id, url, !p2p);
      this.needs.set(id, need);
      if (need.httpOnly) this.startHttp(need, 0);
    }
    need.waiters.add(waiter);
    need.abandonedAt = null;
    if (!need.httpOnly) this.kick();
    return handle;
  }

  dropWaiter(id, waiter) {
    const need = this.needs.get(id);
    if (!need || !need.waiters.delete(waiter)) return;
    if (need.waiters.size === 0) {
      need.abandonedAt = now();
      this.scheduleTick(need.abandonedAt + ABANDONED_GRACE_MS);
      this.kick();
    }
  }

  /** HTTP bytes of a fragment fetched by hls.js's own loader (byte ranges, other tracks). */
  countHttpOnly(bytes) {
    this.stats.httpBytes += bytes;
    this.stats.httpSegments++;
  }

  // ===========================================================================================
  // The scheduler loop

  kick() {
    this.scheduleTick(now());
  }

  trace(what, details) {
    if (!this.traceLog) return;
    if (this.traceLog.length >= 2000) this.traceLog.splice(0, 500);
    this.traceLog.push({ t: Math.round(now()), what, ...details });
  }

  scheduleTick(at) {
    if (this.destroyed || at >= this.tickAt) return;
    clearTimeout(this.tickTimer);
    this.tickAt = at;
    this.tickTimer = setTimeout(() => this.tick(), Math.max(0, at - now()));
  }

  tick() {
    this.tickTimer = null;
    this.tickAt = Infinity;
    if (this.destroyed) return;
    const t = now();
    const conn = this.conn?.peerId ? this.conn : null;
    const me = conn?.peerId ?? '';
    const links = conn ? [...conn.links.values()].filter((l) => l.state === 'ready') : [];
    const seniority = this.seniority(conn);
    const seeder = this.scheduler.isSeeder(seniority);
    this.stats.seeder = conn ? seeder : null;
    const scheduler = this.schedulerNow();
    let next = Infinity;
    for (const need of [...this.needs.values()]) {
      if (need.waiters.size === 0) {
        next = Math.min(next, this.tendAbandoned(need, t));
        continue;
      }
      if (need.httpOnly || need.transfer?.verifying) continue;
      const digest = this.digests.get(need.id);
      const playsAt = Math.min(...[...need.waiters].map((w) => w.playsAt(t)));
      const decision = scheduler.decide(
        t,
        me,
        seniority,
        { segment: need.id, size: digest?.size ?? null, playsAt, freshLive: this.isFreshLive(need.id, t) },
        links.map((l) => ({
          peer: l.remote,
          has: Boolean(digest) && l.has.has(need.id),
          rate: l.rate,
          inFlight: l.inFlight,
          healthy: !this.banned.has(l.remote),
        })),
        need.transfer && {
          peer: need.transfer.peer,
          started: need.transfer.started,
          received: need.transfer.received,
          offset: 0,
          lastProgress: need.transfer.lastProgress,
        },
        need.http !== null,
      );
      if (this.traceLog && decision.kind !== 'Continue' && decision.kind !== 'WaitUntil') {
        this.trace('decide', { id: need.id, d: decision.kind, from: decision.from, peer: decision.peer, in: Math.round(playsAt - t), fresh: this.isFreshLive(need.id, t), seeder, digest: Boolean(digest) });
      }
      next = Math.min(next, this.execute(need, decision, t, conn));
    }
    if (next < Infinity) this.scheduleTick(next);
  }

  /** The scheduler with the HTTP rate it should assume now (see `httpRate`). */
  schedulerNow() {
    const configured = this.scheduler.config.httpRate;
    if (!(this.httpRate > 0) || !(this.httpRate < configured)) return this.scheduler;
    return new Scheduler({ ...this.scheduler.config, httpRate: this.httpRate });
  }

  /** Carries out a decision; returns when to look at the need again. */
  execute(need, d, t, conn) {
    switch (d.kind) {
      case 'FetchFromPeer': {
        const link = conn?.links.get(d.peer);
        if (link) this.requestFromPeer(need, link, t);
        return t + TRANSFER_POLL_MS;
      }
      case 'FetchHttp':
      case 'RaceHttp':
        // A race keeps the peer transfer: the HTTP rest is joined with its first `from` bytes.
        this.startHttp(need, this.prefixLength(need) >= d.from ? d.from : 0);
        return t + TRANSFER_POLL_MS;
      case 'ReplaceWithHttp': {
        let from = d.from;
        const tr = need.transfer;
        if (tr) {
          if (from > 0 && tr.received >= from) {
            need.partial = { peer: tr.peer, bytes: tr.buffer.slice(0, from), start: tr.started, first: tr.first };
          } else {
            from = 0;
          }
          this.failTransfer(need, 'timeout');
        } else if (this.prefixLength(need) < from) {
          from = 0;
        }
        this.startHttp(need, from);
        return t + TRANSFER_POLL_MS;
      }
      case 'WaitUntil':
      case 'Continue':
        return d.at;
      case 'Skip':
        // "A prefetch no peer can serve" (or whose peer stalled). For a native node that is a
        // speculative fetch to drop; here hls.js asked for the segment to fill its buffer, so
        // waiting would only shrink the buffer (to the urgent window on VOD): fetch it over HTTP.
        if (need.transfer) this.failTransfer(need, 'timeout');
        this.startHttp(need, 0);
        return t + TRANSFER_POLL_MS;
      default:
        this.log.warn('bad-decision', d);
        return t + WAIT_POLL_MS;
    }
  }

  /** A need nobody waits for: its running work may finish (into the store) for a short while. */
  tendAbandoned(need, t) {
    if (!need.transfer && !need.http) {
      this.needs.delete(need.id);
      return Infinity;
    }
    const until = (need.abandonedAt ?? t) + ABANDONED_GRACE_MS;
    if (t < until) return until;
    if (need.transfer && !need.transfer.verifying) this.failTransfer(need, 'timeout');
    need.http?.controller.abort();
    need.http = null;
    this.needs.delete(need.id);
    return Infinity;
  }

  isFreshLive(id, t) {
    const seen = this.firstSeen.get(id);
    return this.live && seen !== undefined && t - seen < 2 * this.targetDurationMs;
  }

  /**
   * Where this peer stands in its swarm (PROTOCOL.md §4.1): the peers older than it (listed in the
   * first `peers` message after welcome, still listed, not banned) and the swarm's size.
   */
  seniority(conn) {
    let older = 0;
    for (const id of conn?.older ?? []) if (conn.listed.has(id) && !this.banned.has(id)) older++;
    return { older, swarm: (conn?.listed.size ?? 0) + 1 };
  }

  /** Whether this peer fetches fresh live segments over HTTP first (the scheduler's seeder rule). */
  isSeeder(conn) {
    return this.scheduler.isSeeder(this.seniority(conn));
  }

  prefixLength(need) {
    if (need.transfer) return need.transfer.received;
    return need.partial ? need.partial.bytes.length : 0;
  }

  // ===========================================================================================
  // Peer transfers (this side requests)

  requestFromPeer(need, link, t) {
    const requestId = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffff_ffff ? 1 : this.nextRequestId + 1;
    if (!link.sendFrame({ type: 'request', request_id: requestId, segment: need.id, offset: 0 })) return;
    link.inFlight++;
    need.transfer = {
      link,
      peer: link.remote,
      requestId,
      started: t,
      first: 0,
      end: 0,
      lastProgress: t,
      size: null,
      buffer: null,
      received: 0,
      verifying: false,
    };
    this.requests.set(requestId, need);
  }

  /** The need whose running transfer is `requestId` on `link`, if any. */
  transferNeed(link, requestId) {
    const need = this.requests.get(requestId);
    const tr = need?.transfer;
    return tr && tr.link === link && tr.requestId === requestId ? need : null;
  }

  onResponse(link, f) {
    const need = this.transferNeed(link, f.request_id);
    if (!need) return; // cancelled or unknown: frames in flight are ignored
    const tr = need.transfer;
    const d = this.digests.get(need.id);
    const claimOk =
      tr.size === null && d && toHex(f.digest) === d.sha256 && f.size === d.size && f.offset === 0 && f.size <= MAX_SEGMENT_BYTES;
    if (!claimOk) {
      // The digest in a Response is only the sender's claim; one that differs is a lie told up front.
      link.sendFrame({ type: 'cancel', request_id: f.request_id });
      this.caughtLying(need, link, 'response differs from the gateway digest');
      return;
    }
    tr.size = f.size;
    tr.buffer = new Uint8Array(f.size);
    if (f.size === 0) this.completePeerTransfer(need);
  }

  onChunk(link, f) {
    const need = this.transferNeed(link, f.request_id);
    if (!need) return;
    const tr = need.transfer;
    if (tr.size === null || tr.verifying || f.offset !== tr.received || tr.received + f.data.length > tr.size) {
      link.sendFrame({ type: 'cancel', request_id: f.request_id });
      this.caughtLying(need, link, 'chunk out of order or past the size');
      return;
    }
    tr.buffer.set(f.data, tr.received);
    tr.received += f.data.length;
    const t = now();
    if (!tr.first) tr.first = t;
    tr.lastProgress = t;
    if (tr.received === tr.size) this.completePeerTransfer(need);
  }

  async completePeerTransfer(need) {
    const tr = need.transfer;
    tr.verifying = true;
    tr.end = now();
    this.requests.delete(tr.requestId);
    let sha;
    try {
      sha = await sha256Hex(tr.buffer);
    } catch (e) {
      this.log.warn('sha256-failed', e?.message ?? e);
      sha = null;
    }
    if (this.destroyed || need.transfer !== tr) return; // dropped meanwhile
    const d = this.digests.get(need.id);
    if (!d || sha !== d.sha256 || tr.buffer.length !== d.size) {
      // Never handed to the player: ban the peer, fetch the segment over HTTP.
      this.caughtLying(need, tr.link, 'segment does not match the gateway digest');
      if (this.needs.get(need.id) === need && !need.http) this.startHttp(need, 0);
      return;
    }
    need.transfer = null;
    const link = tr.link;
    link.inFlight = Math.max(0, link.inFlight - 1);
    link.rate = updateRate(link.rate, tr.size, tr.end - tr.started) ?? link.rate;
    const delta = this.peerDelta(tr.peer);
    delta.ok++;
    delta.bytes += tr.size;
    this.stats.p2pBytes += tr.size;
    this.stats.p2pSegments++;
    this.stats.verifiedSegments++;
    this.accept(need, tr.buffer, sha, 'p2p', { start: tr.started, first: tr.first || tr.end, end: tr.end });
  }

  /** Ends the running transfer of `need` because of `cause` (and tells the peer when it may still send). */
  failTransfer(need, cause) {
    const tr = need.transfer;
    if (!tr) return;
    need.transfer = null;
    this.trace('fail', { id: need.id, cause, peer: tr.peer, received: tr.received, size: tr.size, ms: Math.round(now() - tr.started) });
    this.requests.delete(tr.requestId);
    if (cause === 'timeout' && !tr.verifying) tr.link.sendFrame({ type: 'cancel', request_id: tr.requestId });
    this.stats.failures[cause]++;
    const delta = this.peerDelta(tr.peer);
    if (cause === 'mismatch') delta.mismatch++;
    else delta.failed++;
    tr.link.inFlight = Math.max(0, tr.link.inFlight - 1);
    if (cause === 'absent') tr.link.has.delete(need.id);
    this.kick();
  }

  /** A peer sent data that does not match the gateway's digest: never used, the peer is dropped. */
  caughtLying(need, link, why) {
    this.log.warn('mismatch', link.remote, need.id, why);
    this.stats.rejectedSegments++;
    this.failTransfer(need, 'mismatch');
    this.ban(link.remote);
  }

  ban(peer) {
    this.banned.set(peer, true);
    this.conn?.links.get(peer)?.close('banned');
  }

  /** This peer's outcome counters for the next report (at most MAX_PEER_DELTAS peers wait). */
  peerDelta(peer) {
    let d = this.peerDeltas.get(peer);
    if (!d) {
      d = { peer_id: peer, ok: 0, failed: 0, mismatch: 0, bytes: 0 };
      if (this.peerDeltas.size >= MAX_PEER_DELTAS) {
        this.log.warn('report-backlog', 'per-peer outcome dropped', peer);
        return d; // counted in the totals, not per peer
      }
      this.peerDeltas.set(peer, d);
    }
    return d;
  }

  // ===========================================================================================
  // HTTP

  startHttp(need, from) {
    if (need.http) return;
    const controller = new AbortController();
    need.http = { from, controller };
    this.httpGet(need.url, from, controller.signal).then(
      (r) => this.onHttpDone(need, r),
      (e) => this.onHttpFailed(need, e),
    );
  }

  /**
   * GET url (from byte `from` with a Range header when > 0). Resolves to {bytes, from, timing}
   * where `from` is 0 when the server sent the whole body; rejects with {status} on HTTP errors.
   */
  async httpGet(url, from, signal) {
    const start = now();
    const init = { signal, credentials: 'same-origin' };
    if (from > 0) init.headers = { Range: `bytes=${from}-` };
    const resp = await this.impl.fetch(url, init);
    if (!resp.ok) throw httpError(resp.status, `HTTP ${resp.status} ${resp.statusText ?? ''}`.trim());
    let got = 0;
    if (from > 0 && resp.status === 206) {
      const m = /^bytes (\d+)-/.exec(resp.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== from) throw httpError(0, `unexpected Content-Range for bytes=${from}-`);
      got = from;
    }
    let first = 0;
    const parts = [];
    let total = 0;
    if (resp.body?.getReader) {
      const reader = resp.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!first) first = now();
        parts.push(value);
        total += value.length;
        if (total > MAX_SEGMENT_BYTES) {
          reader.cancel().catch(() => {});
          throw httpError(0, 'segment too large');
        }
      }
    } else {
      const buf = new Uint8Array(await resp.arrayBuffer());
      first = now();
      parts.push(buf);
      total = buf.length;
    }
    const end = now();
    return { bytes: concatBytes(parts, total), from: got, timing: { start, first: first || end, end } };
  }

  async onHttpDone(need, r) {
    if (this.needs.get(need.id) !== need) return; // delivered or dropped meanwhile
    // need.http stays set until the bytes are accepted or refused: nothing else starts meanwhile.
    this.stats.httpBytes += r.bytes.length;
    this.httpRate = updateRate(this.httpRate, r.bytes.length, r.timing.end - r.timing.start) ?? this.httpRate;
    // The peer bytes this HTTP range continues: a running transfer's, or a kept prefix.
    let prefix = null;
    if (r.from > 0) {
      const tr = need.transfer;
      if (tr && !tr.verifying && tr.received >= r.from) {
        prefix = { peer: tr.peer, bytes: tr.buffer.subarray(0, r.from), start: tr.started, first: tr.first };
      } else if (need.partial && need.partial.bytes.length === r.from) {
        prefix = need.partial;
      }
      if (!prefix) {
        this.log.warn('range-without-prefix', need.id);
        need.http = null;
        this.startHttp(need, 0);
        return;
      }
    }
    const whole = prefix ? concatBytes([prefix.bytes, r.bytes]) : r.bytes;
    let sha;
    try {
      sha = await sha256Hex(whole);
    } catch (e) {
      this.log.warn('sha256-failed', e?.message ?? e);
      need.http = null;
      this.failNeed(need, { code: 0, text: 'cannot hash the segment' });
      return;
    }
    if (this.needs.get(need.id) !== need) return;
    need.http = null;
    const d = this.digests.get(need.id);
    if (prefix) {
      if (!d || sha !== d.sha256 || whole.length !== d.size) {
        // The peer's part was wrong: never use it, fetch the whole segment over HTTP.
        this.log.warn('mismatch', prefix.peer, need.id, 'peer prefix failed the check');
        this.stats.rejectedSegments++;
        this.stats.failures.mismatch++;
        this.peerDelta(prefix.peer).mismatch++;
        need.partial = null;
        this.ban(prefix.peer);
        this.startHttp(need, 0);
        return;
      }
      this.stats.p2pBytes += prefix.bytes.length;
    } else if (d && d.sha256 !== sha) {
      this.log.warn('http-digest-differs', need.id);
    }
    this.stats.httpSegments++;
    const timing = prefix
      ? { start: Math.min(prefix.start, r.timing.start), first: prefix.first || r.timing.first, end: r.timing.end }
      : r.timing;
    this.accept(need, whole, sha, 'http', timing);
  }

  onHttpFailed(need, e) {
    if (this.needs.get(need.id) !== need || e?.name === 'AbortError') return;
    need.http = null;
    this.log.warn('http-failed', need.id, e?.message ?? e);
    if (need.transfer) {
      this.kick(); // the peer may still deliver
      return;
    }
    this.failNeed(need, { code: e?.status ?? 0, text: e?.message ?? String(e) });
  }

  failNeed(need, error) {
    this.needs.delete(need.id);
    need.http?.controller.abort();
    if (need.transfer) this.failTransfer(need, 'timeout');
    for (const w of need.waiters) w.onError(error);
    need.waiters.clear();
  }

  /** Takes a whole segment (verified, or from the gateway): stores it and hands it to the waiters. */
  accept(need, bytes, sha256, source, timing) {
    this.needs.delete(need.id);
    need.http?.controller.abort();
    need.http = null;
    if (need.transfer) this.failTransfer(need, 'timeout'); // it lost the race
    const entry = { id: need.id, bytes, sha256, source, timing };
    this.trace('accept', { id: need.id, source, waiters: need.waiters.size, took: Math.round(timing.end - timing.start) });
    this.store.put(entry);
    for (const w of need.waiters) w.onSuccess(deliverable(entry));
    need.waiters.clear();
  }

  // ===========================================================================================
  // The swarm: signalling

  /** Joins the swarm of `rendition` on a new socket, leaving the current one. */
  setRendition(rendition) {
    if (this.destroyed || !this.streamPath) return;
    if (rendition === this.rendition && (this.conn || this.reconnectTimer)) return;
    this.rendition = rendition;
    this.stats.rendition = rendition;
    this.leaveSwarm();
    this.backoff.reset();
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
    const ws = new URL(`/p2p/v1/ws?stream=${encodeURIComponent(this.streamPath)}`, this.gatewayOrigin);
    ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
    const conn = {
      rendition: this.rendition,
      channel: null,
      peerId: null,
      swarm: null,
      maxPeers: this.options.maxPeers,
      /** The latest peers list: id → PeerInfo, best first. */
      listed: new Map(),
      /** Ids in the first peers message after welcome: the senior peers. */
      older: null,
      listedSince: new Map(),
      links: new Map(),
      retry: new Map(),
      /** Segment ids whose digests came on this connection (this rendition): what Have may list. */
      digestIds: new BoundedMap(MAX_DIGESTS),
      timers: [],
    };
    conn.channel = new SignallingChannel({
      url: ws.href,
      join: { stream: this.streamPath, rendition: this.rendition, upload: this.options.upload, token: this.options.token },
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
        this.backoff.reset();
        conn.timers.push(setInterval(() => this.sendReport(conn), this.options.reportIntervalMs));
        conn.timers.push(setInterval(() => this.connectPeers(conn), 1000));
        return;
      case 'digests':
        for (const s of m.segments) {
          this.digests.set(s.id, { sha256: s.sha256, size: s.size });
          conn.digestIds.set(s.id, true);
        }
        this.haveChanged();
        this.kick();
        return;
      case 'peers': {
        if (!conn.peerId) {
          this.log.warn('bad-signal', 'peers before welcome');
          return;
        }
        const t = now();
        conn.listed = new Map(m.peers.filter((p) => p.peer_id !== conn.peerId).map((p) => [p.peer_id, p]));
        if (conn.older === null) conn.older = new Set(conn.listed.keys());
        for (const id of conn.listed.keys()) if (!conn.listedSince.has(id)) conn.listedSince.set(id, t);
        for (const id of conn.listedSince.keys()) if (!conn.listed.has(id)) conn.listedSince.delete(id);
        this.connectPeers(conn);
        this.kick();
        return;
      }
      case 'relay':
        this.onRelay(conn, m.from, m.payload);
        return;
      case 'error':
        this.log.warn('tracker-error', m.code, m.message);
        if (NO_RECONNECT.has(m.code)) this.noReconnect = true;
        return;
    }
  }

  onSignalClosed(conn, info) {
    if (conn !== this.conn) return;
    this.conn = null;
    this.closeConn(conn, 'signalling closed');
    if (this.destroyed || this.suspended || this.rendition === null) return;
    if (this.noReconnect || NO_RECONNECT.has(info.error)) {
      this.noReconnect = true;
      this.log.warn('signalling-closed', `no reconnect after ${info.error}`);
      return;
    }
    const delay = this.backoff.next();
    this.log.warn('signalling-closed', info.code, info.reason || info.error || '', `reconnecting in ${delay} ms`);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Leaves the current swarm on purpose: last report, `leave`, links closed. */
  leaveSwarm() {
    const conn = this.conn;
    if (!conn) return;
    this.conn = null;
    const last = conn.peerId && conn.channel.open ? [this.reportMessage()] : [];
    conn.channel.leave(last);
    this.closeConn(conn, 'leave');
  }

  closeConn(conn, reason) {
    for (const t of conn.timers) clearInterval(t);
    conn.timers = [];
    for (const link of [...conn.links.values()]) link.close(reason);
    conn.links.clear();
    this.stats.peers = 0;
    this.stats.peerId = null;
    this.stats.swarm = null;
    this.stats.seeder = null;
  }

  sendReport(conn) {
    if (conn !== this.conn || !conn.channel.open) return;
    conn.channel.send(this.reportMessage());
  }

  /** The `report` with the deltas since the previous one (which it marks as reported). */
  reportMessage() {
    const s = this.stats;
    const r = this.reported;
    const failures = {};
    for (const c of FAILURE_CAUSES) failures[c] = s.failures[c] - r.failures[c];
    const msg = {
      type: 'report',
      http_bytes: s.httpBytes - r.httpBytes,
      p2p_bytes: s.p2pBytes - r.p2pBytes,
      http_segments: s.httpSegments - r.httpSegments,
      p2p_segments: s.p2pSegments - r.p2pSegments,
      uploaded_bytes: s.uploadedBytes - r.uploadedBytes,
      failures,
    };
    const peers = [];
    for (const [id, d] of this.peerDeltas) {
      if (peers.length >= MAX_REPORT_PEERS) break;
      peers.push(d);
      this.peerDeltas.delete(id);
    }
    if (peers.length > 0) msg.peers = peers;
    this.reported = {
      httpBytes: s.httpBytes,
      p2pBytes: s.p2pBytes,
      httpSegments: s.httpSegments,
      p2pSegments: s.p2pSegments,
      uploadedBytes: s.uploadedBytes,
      failures: { ...s.failures },
    };
    return msg;
  }

  // ===========================================================================================
  // The swarm: links

  /** Opens links to listed peers, up to the cap. Of two peers the greater id offers. */
  connectPeers(conn) {
    if (conn !== this.conn || !conn.peerId || !this.impl.RTCPeerConnection) return;
    const t = now();
    for (const [id, p] of conn.listed) {
      if (conn.links.size >= conn.maxPeers) break;
      if (conn.links.has(id) || this.banned.has(id) || !p.transports.includes('webrtc')) continue;
      if ((conn.retry.get(id)?.at ?? 0) > t) continue;
      // A greater id offers; if it has not after a while (its list may not hold us), we do.
      const ours = conn.peerId > id || t - (conn.listedSince.get(id) ?? t) >= LINK_FALLBACK_MS;
      if (ours) this.createLink(conn, id, true).start();
    }
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
        frame: (l, f) => this.onFrame(conn, l, f),
        closed: (l, reason) => this.onLinkClosed(conn, l, reason),
        uploaded: (n) => (this.stats.uploadedBytes += n),
        warn: (...a) => this.log.warn(...a),
      },
    });
    conn.links.set(remote, link);
    return link;
  }

  onRelay(conn, from, payload) {
    if (!conn.peerId || this.banned.has(from)) return;
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
    let link = conn.links.get(from);
    if (kind === 'offer') {
      if (link) {
        // Two offers crossed: the greater id's wins. A fresh offer from the answering side's
        // peer replaces a link it gave up on.
        if (link.initiator && conn.peerId > from) return;
        link.close('replaced by a new offer');
      } else if (conn.links.size >= conn.maxPeers || !this.impl.RTCPeerConnection) {
        return; // full: the offerer times out and tries later
      }
      link = this.createLink(conn, from, false);
    }
    link?.handleSignal(payload);
  }

  onLinkReady(conn, link) {
    if (conn !== this.conn) return;
    conn.retry.delete(link.remote);
    this.stats.peers = [...conn.links.values()].filter((l) => l.state === 'ready').length;
    link.sendFrame(this.haveFrame(conn, link));
    this.kick();
  }

  onLinkClosed(conn, link, reason) {
    if (conn.links.get(link.remote) === link) conn.links.delete(link.remote);
    for (const need of this.needs.values()) {
      if (need.transfer?.link === link && !need.transfer.verifying) this.failTransfer(need, 'disconnect');
    }
    if (conn !== this.conn) return;
    this.stats.peers = [...conn.links.values()].filter((l) => l.state === 'ready').length;
    if (!this.banned.has(link.remote) && reason !== 'replaced by a new offer') {
      const prev = conn.retry.get(link.remote)?.delay ?? 0;
      const delay = prev ? Math.min(prev * 2, LINK_RETRY_MAX_MS) : LINK_RETRY_FIRST_MS;
      conn.retry.set(link.remote, { at: now() + delay, delay });
    }
    this.kick();
  }

  onFrame(conn, link, f) {
    switch (f.type) {
      case 'have':
        link.has = new Set(f.segments);
        this.kick();
        return;
      case 'request':
        this.serve(link, f);
        return;
      case 'cancel':
        link.cancelUpload(f.request_id);
        return;
      case 'absent': {
        const need = this.transferNeed(link, f.request_id);
        if (need) this.failTransfer(need, 'absent');
        return;
      }
      case 'response':
        this.onResponse(link, f);
        return;
      case 'chunk':
        this.onChunk(link, f);
        return;
    }
  }

  /** Answers a peer's request from the store: Response and chunks, or Absent. */
  serve(link, f) {
    const stored = this.options.upload ? this.store.peek(f.segment) : undefined;
    const ok = stored && typeof f.offset === 'number' && f.offset <= stored.bytes.length;
    if (!ok || !link.startUpload(f.request_id, stored.bytes, fromHex(stored.sha256), f.offset)) {
      link.sendFrame({ type: 'absent', request_id: f.request_id });
    }
  }

  /** The store changed (or digests arrived): tell the peers, at most once a second. */
  haveChanged() {
    if (this.haveTimer !== null || this.destroyed) return;
    const wait = Math.max(0, this.lastHaveAt + HAVE_INTERVAL_MS - now());
    this.haveTimer = setTimeout(() => {
      this.haveTimer = null;
      this.lastHaveAt = now();
      const conn = this.conn;
      if (!conn) return;
      for (const link of conn.links.values()) {
        if (link.state === 'ready') link.sendFrame(this.haveFrame(conn, link));
      }
    }, wait);
  }

  /**
   * Have: the newest stored segments of this swarm whose bytes match the gateway's digest, at most
   * 512 ids and within the frame and the remote's message size limits; empty with upload off.
   */
  haveFrame(conn, link) {
    const segments = [];
    if (this.options.upload) {
      const budget = Math.min(MAX_FRAME_LEN, link.maxMessageSize - 5);
      let size = 2;
      for (const id of this.store.newestIds()) {
        if (segments.length >= MAX_HAVE_IDS) break;
        const d = this.digests.get(id);
        if (!d || !conn.digestIds.has(id) || this.store.peek(id)?.sha256 !== d.sha256) continue;
        const len = 2 + new TextEncoder().encode(id).length;
        if (size + len > budget) break;
        size += len;
        segments.push(id);
      }
    }
    return { type: 'have', segments };
  }

  // ===========================================================================================
  // Lifecycle

  /** The page is going away (pagehide): last report and leave now, links closed. */
  suspend() {
    if (this.destroyed || this.suspended) return;
    this.suspended = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.leaveSwarm();
  }

  /** The page came back from the back/forward cache: rejoin. */
  resume() {
    if (this.destroyed || !this.suspended) return;
    this.suspended = false;
    if (this.rendition !== null && !this.noReconnect) this.connect();
  }

  /** Leaves the swarm, stops every timer and transfer; the engine cannot be used again. */
  destroy() {
    if (this.destroyed) return;
    this.detach();
    this.destroyed = true;
    globalThis.removeEventListener?.('pagehide', this.onPageHide);
    globalThis.removeEventListener?.('pageshow', this.onPageShow);
    clearTimeout(this.tickTimer);
    clearTimeout(this.haveTimer);
    clearTimeout(this.reconnectTimer);
    this.tickTimer = this.haveTimer = this.reconnectTimer = null;
    for (const need of this.needs.values()) {
      need.http?.controller.abort();
      need.http = null;
      need.transfer = null;
      need.waiters.clear();
    }
    this.needs.clear();
    this.requests.clear();
    this.store.onChange = null;
    this.store.clear();
  }
}

function newNeed(id, url, httpOnly) {
  return {
    id,
    url,
    /** No peers for this one (another rendition, not joined, init section): HTTP at once. */
    httpOnly,
    waiters: new Set(),
    transfer: null,
    http: null,
    /** Peer bytes kept when HTTP took over: {peer, bytes, start, first}. */
    partial: null,
    abandonedAt: null,
  };
}

/** What a waiter gets: a copy of the bytes (the player may transfer it away) and the transfer times. */
function deliverable(entry) {
  return { data: entry.bytes.slice().buffer, source: entry.source, timing: { ...entry.timing } };
}

function httpError(status, message) {
  const e = new Error(message);
  e.status = status;
  return e;
}
