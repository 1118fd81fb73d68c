// The peer node without I/O: a port of peer-assist/src/node/core/ (`NodeCore`) in driven mode, the
// mode of a node a player drives (the browser is always driven by hls.js).
//
// The core holds every decision: which peers to link to, where each segment comes from (the
// scheduler), when a peer is too slow and HTTP takes over, what a peer's bytes must hash to before
// they are used, who is banned, what to upload and how fast, what to report. It never reads a clock,
// opens a socket or sets a timer. The driver (engine.js) feeds it inputs with the current time
// (`handle(input, now)`), wakes it at `pollTimeout()` (`handleTimeout(now)`) and carries out the
// outputs it queues (`pollOutput()`). Inputs and outputs are plain objects with a `type`, the
// vocabulary of the Rust `Input`/`Output` (and of the traces):
//
//   inputs:  signal {message}, signal_closed, link_up {link, peer, initiated, max_frame, fingerprint},
//            link_down {link}, connect_failed {peer}, frame {link, frame}, written {link, bytes},
//            playlist {ok: {segments: [{sequence, id, duration_ms}], target_duration_ms, ended} | err},
//            http {id, from, ok: Uint8Array | err: HttpError}, verified {ticket, sha256 (hex)},
//            need {waiter, id, plays_at, p2p}, abandon {waiter}, stop
//   outputs: connect {peer, transport, quic}, send {link, frame}, close {link, reason},
//            http_get {id, from}, http_cancel {id}, verify {ticket, bytes}, signal {message},
//            deliver {waiters, id, ok: {bytes, source, started, finished} | err: HttpError},
//            delivered {uploader, swarm, segment, sha256, bytes} (only with config.receipts)
//
// HttpError is {kind: "absent"|"status"|"timeout"|"network"|"too_large", status?, ...}. Times are
// milliseconds on the driver's clock; bytes are Uint8Array; frames and signalling messages are those
// of protocol/frame.js and protocol/signal.js (wire field names).
//
// Iteration orders are deterministic and the Rust ones (links by id, segments by id, report peers by
// peer id, uploads first in first out), so the same inputs at the same instants give the same
// outputs as the Rust core: tests/unit/node-traces.test.mjs replays the traces the Rust core
// produced (peer-assist/tests/vectors/node_traces.json), and a port that drifts fails.
//
// Receipts (docs/LEDGER.md): the Rust core signs a receipt for every verified delivery from a peer
// whose key the tracker listed. Signing is asynchronous in a browser (WebCrypto), so this core
// says what to sign instead: with `config.receipts` it queues `delivered` {uploader: the peer's key,
// swarm: the welcome's, segment, sha256: the digest the bytes matched, bytes: what that peer sent}
// just before the segment is delivered, and the driver signs and reports it (engine.js). Without
// `config.receipts` (the traces) the outputs are the Rust core's without a key.

import { HEADER_LEN, MAX_FRAME_LEN, MAX_HAVE_IDS, RECOMMENDED_CHUNK_LEN, encodedLen } from './protocol/frame.js';
import { utf8Length } from './protocol/signal.js';
import { DEFAULT_SCHEDULER_CONFIG, MAX_IN_FLIGHT_PER_PEER, MIN_RECHECK_MS, Scheduler, TRANSFER_POLL_MS, WAIT_POLL_MS, updateRate } from './scheduler.js';
import { compareIds, concatBytes, fromHex, toHex } from './util.js';

/** Have frames go out at most this often (the first change at once). */
export const HAVE_INTERVAL_MS = 100;
/** Running work for a segment nobody waits for any more is stopped after this. */
export const ABANDONED_GRACE_MS = 3000;
/** Largest segment accepted from a peer (by the gateway's size). */
export const MAX_SEGMENT_BYTES = 256 * 1024 * 1024;
/** Digests remembered (oldest forgotten first). */
export const MAX_DIGESTS = 4096;
/** Segment ids whose first sighting is remembered (for "fresh live"). */
export const MAX_FIRST_SEEN = 4096;
/** Peers one report speaks of at most; the rest wait for the next report. */
export const MAX_REPORT_PEERS = 256;
/** A peer listed this long without a link is connected to by us, whatever the ids. */
export const LINK_FALLBACK_MS = 5000;
/** After a link to a peer ends (or an attempt fails), wait this long before trying it again… */
export const LINK_RETRY_FIRST_MS = 5000;
/** …doubling up to this. */
export const LINK_RETRY_MAX_MS = 60_000;
/** An attempt the driver never answered is forgotten after this. */
export const CONNECT_TIMEOUT_MS = 15_000;
/** How often the peer list is looked at again for links to open (fallbacks, retries). */
export const CONNECT_CHECK_MS = 1000;
/** Bytes of frames a link may have queued and not yet written before its uploads wait. */
export const LINK_WINDOW = 64 * 1024;
/** Uploads accepted and waiting for the one being sent; a request beyond them is answered Absent. */
export const MAX_WAITING_UPLOADS = 0;
/**
 * The next upload starts when no other link holds more than this many unwritten bytes (the
 * previous upload has all but drained into its transport).
 */
export const DRAIN_SLACK = 32 * 1024;
/**
 * A peer that answered Absent for a segment it advertises is busy (it serves one upload at a
 * time): it is not asked for anything new for this long.
 */
export const BUSY_BACKOFF_MS = 250;

/**
 * The backoff after `streak` busy answers in a row from one peer: BUSY_BACKOFF_MS doubled each
 * time, at most 32 times as long (8 s). A requester that keeps asking the same busy peers wastes
 * a round trip each time while other holders sit idle.
 */
export function busyBackoffMs(streak) {
  return BUSY_BACKOFF_MS * 2 ** Math.min(streak, 5);
}

const FAILURE_CAUSES = ['timeout', 'mismatch', 'absent', 'disconnect'];
const LOWER_HEX_64 = /^[0-9a-f]{64}$/;
const NO_BYTES = new Uint8Array(0);

/**
 * @typedef {object} CoreConfig
 * @property {"driven"} mode          the only mode of this port
 * @property {string[]} transports    "webrtc" (and "quic") this node links over
 * @property {boolean} upload         upload to other peers at all
 * @property {number} uploadRate      upload cap, bytes/s
 * @property {number} privacyFloor    no upload until the swarm has this many peers (this one included)
 * @property {number} window          segments kept to serve others, at most
 * @property {number} maxStoreBytes   bytes of segments kept, at most
 * @property {number} maxLinks        peer links kept open (the tracker's max_peers lowers it)
 * @property {number} reportEveryMs   delivery reports are sent this often
 * @property {object} [scheduler]     scheduler tuning (scheduler.js DEFAULT_SCHEDULER_CONFIG)
 * @property {boolean} [receipts]     queue a `delivered` output for every verified delivery from
 *   a peer with a key (the driver signs a receipt for it)
 * @property {boolean} [prefetchAnnounced] while the player plays, fetch a live segment a `digests`
 *   message announces (one newly cached segment) before the player asks: from peers only, or over
 *   HTTP at once on a seeder (PROTOCOL.md §2.4); the native core's `prefetch_announced`
 * @property {{lie?: boolean, slowUpload?: number|null}} [test] misbehaviour, for tests only
 */

/** The defaults of a browser's core (the native node's, but a 64 MiB store of up to 512 segments). */
export const DEFAULT_CORE_CONFIG = Object.freeze({
  mode: 'driven',
  transports: ['webrtc'],
  upload: true,
  uploadRate: 20_000_000,
  privacyFloor: 2,
  window: MAX_HAVE_IDS,
  maxStoreBytes: 64 * 1024 * 1024,
  maxLinks: 8,
  reportEveryMs: 2000,
  scheduler: DEFAULT_SCHEDULER_CONFIG,
  receipts: false,
  prefetchAnnounced: true,
  test: Object.freeze({ lie: false, slowUpload: null }),
});

/** Announced segments fetched ahead of the player, at most (the newest kept). */
export const MAX_ANNOUNCED = 3;

export class NodeCore {
  /**
   * A node that joined as `me` at `now` (a browser that has no id yet passes ''; the first
   * `welcome` names it).
   * @param {Partial<CoreConfig>} config
   * @param {string} me
   * @param {number} now
   */
  constructor(config, me, now) {
    const c = { ...DEFAULT_CORE_CONFIG, ...config, test: { ...DEFAULT_CORE_CONFIG.test, ...config.test } };
    if (c.mode !== 'driven') {
      throw new Error(`NodeCore: mode ${JSON.stringify(c.mode)} is not supported here; the browser's core is driven by its player ("driven")`);
    }
    this.config = c;
    this.scheduler = new Scheduler(c.scheduler);
    this.me = me;
    this.started = now;
    this.outputs = [];
    this.stopped = false;

    // The swarm.
    /** The latest peer list (this node excluded), best first. */
    this.listed = [];
    /** @type {Map<string, number>} when each listed peer was first listed */
    this.listedSince = new Map();
    /** @type {Set<string>|null} the peers of the first `peers` message after welcome: older */
    this.elders = null;
    this.maxPeers = null;
    /** @type {Map<number, Link>} */
    this.links = new Map();
    /** @type {Map<string, number>} peer → link */
    this.linkOf = new Map();
    /** @type {Map<string, number>} peer → when we asked the driver to connect */
    this.connecting = new Map();
    /** @type {Map<string, {at: number, delay: number}>} */
    this.retry = new Map();
    this.banned = new Set();
    /** Peers whose prefix, joined with the HTTP rest, failed the check once (a second time bans). */
    this.prefixStrikes = new Set();
    this.nextConnectCheck = null;

    // Segments.
    /** @type {Bounded<{digest: string, size: number}>} */
    this.digests = new Bounded(MAX_DIGESTS);
    /** @type {Bounded<number>} */
    this.firstSeen = new Bounded(MAX_FIRST_SEEN);
    this.live = true;
    this.targetMs = 2000;
    this.store = new Store(c.window, c.maxStoreBytes);
    /** @type {Map<string, Work>} */
    this.work = new Map();
    /** @type {Map<string, Waiting>} */
    this.waiting = new Map();
    /** @type {Map<number, string>} waiter → segment */
    this.waiterSegment = new Map();
    /** @type {Array<[string, number]>} segments a digest announced that the player has not asked
     * for yet, and when (oldest first, at most MAX_ANNOUNCED) */
    this.announced = [];
    /** When the player last asked for a segment (null: never). */
    this.lastNeed = null;
    /** @type {Map<number, string>} request id → segment */
    this.requests = new Map();
    this.nextRequest = 1;
    /** @type {Map<number, object>} ticket → what the hash is for */
    this.jobs = new Map();
    this.nextTicket = 1;
    /** Measured HTTP rate (EWMA), bytes/s. */
    this.httpRate = null;
    /** When to run the scheduler again (null: at once). */
    this.nextWork = now;
    this.dirty = false;

    // Uploads.
    /** @type {Upload[]} */
    this.uploads = [];
    const rate = c.test.slowUpload == null ? c.uploadRate : Math.min(c.test.slowUpload, c.uploadRate);
    // Half a second of the cap, at least one chunk.
    this.bucket = new TokenBucket(rate, Math.max(rate / 2, RECOMMENDED_CHUNK_LEN), now);
    this.nextUpload = null;
    this.haveDirty = false;
    this.lastHave = null;

    // Accounting.
    this.summary = newCounters();
    this.mismatches = 0;
    this.peersDroppedForLying = [];
    /** Links refused because their certificate was not the one published for their peer id. */
    this.identityMismatches = 0;
    this.reported = newCounters();
    /** @type {Map<string, {peer_id: string, ok: number, failed: number, mismatch: number, bytes: number}>} */
    this.peerDeltas = new Map();
    this.nextReport = now + c.reportEveryMs;
    /** The swarm of the current tracker session (its `welcome`), named in receipts. */
    this.swarm = '';
    /** @type {Map<string, string>} public keys of the peers ever listed, by peer id (never forgotten) */
    this.peerKeys = new Map();
    /** @type {Map<string, number>} verified bytes received from peers, by the uploader's key */
    this.receivedFrom = new Map();
  }

  /** Whether `peer` was caught lying (its relays are ignored). */
  isBanned(peer) {
    return this.banned.has(peer);
  }

  /** Whether Stop was handled. */
  isStopped() {
    return this.stopped;
  }

  /** What the node did so far, and where it stands (for the page's figures). */
  stats() {
    const s = this.summary;
    return {
      peerId: this.me,
      httpBytes: s.http_bytes,
      p2pBytes: s.p2p_bytes,
      uploadedBytes: s.uploaded_bytes,
      segments: s.segments,
      httpSegments: s.http_segments,
      p2pSegments: s.p2p_segments,
      failures: { ...s.failures },
      mismatches: this.mismatches,
      links: this.links.size,
      seeder: this.scheduler.isSeeder(this.seniority()),
      storedSegments: this.store.entries.size,
      storedBytes: this.store.bytes,
      activeUploads: this.uploads.length,
    };
  }

  /**
   * The open links, by link id (read-only: a copy of what the core keeps, for the page's peer
   * table): the remote peer, the measured rate of its transfers to us (EWMA, bytes/s; null before
   * the first verified one), our requests running on it and the segments it advertises.
   * @returns {{link: number, peer: string, initiated: boolean, rate: number|null, inFlight: number, advertised: number}[]}
   */
  linkStats() {
    return this.linkIds().map((link) => {
      const l = this.links.get(link);
      return { link, peer: l.peer, initiated: l.initiated, rate: l.rate, inFlight: l.inFlight, advertised: l.has.size };
    });
  }

  /** The next output to carry out, or undefined. */
  pollOutput() {
    return this.outputs.shift();
  }

  /** When `handleTimeout` must be called next (null: only on input). */
  pollTimeout() {
    if (this.stopped) return null;
    let at = null;
    for (const t of [this.nextWork, this.nextReport, this.nextUpload, this.nextHave(), this.nextConnectCheck]) {
      if (t !== null && (at === null || t < at)) at = t;
    }
    return at;
  }

  /** Handles one input at `now`. */
  handle(input, now) {
    if (this.stopped) return;
    switch (input.type) {
      case 'signal':
        this.onSignal(input.message, now);
        break;
      case 'signal_closed':
        break; // HTTP only until a new welcome
      case 'link_up':
        this.onLinkUp(input.link, input.peer, input.initiated, input.max_frame, input.fingerprint ?? null, now);
        break;
      case 'link_down':
        if (this.links.has(input.link)) this.forgetLink(input.link, 'disconnect', now);
        break;
      case 'connect_failed':
        if (this.connecting.delete(input.peer)) this.backOff(input.peer, now);
        break;
      case 'frame':
        this.onFrame(input.link, input.frame, now);
        break;
      case 'written': {
        const l = this.links.get(input.link);
        if (l) l.unacked = Math.max(0, l.unacked - input.bytes);
        break;
      }
      case 'playlist':
        this.onPlaylist(input, now);
        break;
      case 'http':
        this.onHttp(input.id, input.from, input, now);
        break;
      case 'verified':
        this.onVerified(input.ticket, input.sha256, now);
        break;
      case 'need':
        this.onNeed(input.waiter, input.id, input.plays_at, input.p2p, now);
        break;
      case 'abandon':
        this.onAbandon(input.waiter, now);
        break;
      case 'stop':
        this.stop();
        return;
      default:
        throw new Error(`NodeCore: unknown input ${JSON.stringify(input?.type)}`);
    }
    this.step(now);
  }

  /** Called at (or after) `pollTimeout()`. */
  handleTimeout(now) {
    if (this.stopped) return;
    if (now >= this.nextReport) {
      this.sendReport();
      this.nextReport = now + this.config.reportEveryMs;
    }
    if (this.nextConnectCheck !== null && now >= this.nextConnectCheck) this.connectPeers(now);
    this.step(now);
  }

  /** Runs what may have become due: the scheduler, uploads, Have frames. */
  step(now) {
    if (this.dirty || this.nextWork === null || now >= this.nextWork) {
      this.dirty = false;
      this.runWork(now);
    }
    this.pumpUploads(now);
    this.flushHave(now);
  }

  // =============================================================================================
  // Signalling

  onSignal(m, now) {
    switch (m.type) {
      case 'digests':
        for (const e of m.segments) {
          if (LOWER_HEX_64.test(e.sha256)) this.digests.insert(e.id, { digest: e.sha256, size: e.size });
        }
        this.haveDirty = true;
        this.dirty = true;
        // One newly cached segment (the window after `welcome` comes in bigger batches).
        if (m.segments.length === 1) this.announce(m.segments[0].id, now);
        break;
      case 'peers':
        this.onPeers(m.peers, now);
        break;
      case 'welcome':
        this.maxPeers = m.max_peers;
        this.swarm = m.swarm;
        if (m.peer_id !== this.me) this.rejoined(m.peer_id, now);
        break;
      default:
        break; // errors are the driver's to log; relays are its transport's business
    }
  }

  /**
   * A new tracker session (a reconnect, or another rendition's swarm) under a new peer id: the old
   * swarm is gone (its links close, transfers on them fall back to HTTP); what the node waits for,
   * holds and knows about segments stays.
   */
  rejoined(peerId, now) {
    for (const link of this.linkIds()) this.dropLink(link, 'disconnect', 'left the swarm', now);
    this.me = peerId;
    this.listed = [];
    this.listedSince.clear();
    this.elders = null;
    this.connecting.clear();
    this.retry.clear();
    this.banned.clear();
    // Outcomes of the old swarm's peers mean nothing to the new session's tracker.
    this.peerDeltas.clear();
    this.nextConnectCheck = null;
    this.dirty = true;
  }

  /** Where this node stands in its swarm (for the seeder rule). */
  seniority() {
    let older = 0;
    if (this.elders) {
      for (const p of this.listed) if (this.elders.has(p.peer_id) && !this.banned.has(p.peer_id)) older++;
    }
    return { older, swarm: this.listed.length + 1 };
  }

  onPlaylist(input, now) {
    // Driven: the player's own reloads; only freshness is learnt from them.
    const playlist = input.ok;
    if (!playlist) return;
    this.live = !playlist.ended;
    this.targetMs = playlist.target_duration_ms;
    for (const s of playlist.segments) {
      if (!this.firstSeen.contains(s.id)) this.firstSeen.insert(s.id, now);
    }
    this.dirty = true;
  }

  // =============================================================================================
  // Needs

  /** A digest announced one newly cached segment (config.prefetchAnnounced). */
  announce(id, now) {
    const playing = this.lastNeed !== null && Math.max(0, now - this.lastNeed) < this.targetMs * 2;
    if (!this.config.prefetchAnnounced || !playing || this.firstSeen.contains(id) || this.store.contains(id)) return;
    this.firstSeen.insert(id, now);
    this.announced.push([id, now]);
    while (this.announced.length > MAX_ANNOUNCED) this.dropUnwanted(this.announced.shift()[0]);
    this.dirty = true;
  }

  /** Stops the work on a segment nobody waits for (an announcement that expired or was pushed out). */
  dropUnwanted(id) {
    const waiting = this.waiting.get(id);
    if (waiting && waiting.waiters.size > 0) return;
    this.failTransfer(id, 'timeout');
    this.cancelHttp(id);
    this.work.delete(id);
  }

  /**
   * The announced segments to work on now: a seeder's over HTTP at once (null), the others' as
   * prefetches, which the scheduler never sends to HTTP. An announcement ends when the player asks
   * for the segment, when it is stored, or after two target durations.
   */
  announcedAgenda(now) {
    const expired = this.announced.filter(([, at]) => Math.max(0, now - at) >= this.targetMs * 2).map(([id]) => id);
    for (const id of expired) this.dropUnwanted(id);
    this.announced = this.announced.filter(([id]) => {
      const waiting = this.waiting.get(id);
      return !expired.includes(id) && !this.store.contains(id) && !(waiting && waiting.waiters.size > 0);
    });
    const seeder = this.schedulerNow().isSeeder(this.seniority());
    const prefetch = now + this.scheduler.config.urgentWindowMs + WAIT_POLL_MS;
    return this.announced.map(([id]) => [id, seeder ? null : prefetch]);
  }

  onNeed(waiter, id, playsAt, p2p, now) {
    this.lastNeed = now;
    this.announced = this.announced.filter(([a]) => a !== id);
    const previous = this.waiterSegment.get(waiter);
    if (previous !== undefined && previous !== id) {
      this.onAbandon(waiter, now);
      this.waiterSegment.delete(waiter);
    }
    const stored = this.store.get(id);
    if (stored) {
      // The transfer that brought it in, as long as it took then (a bandwidth estimate must not
      // see a store hit as an infinitely fast download).
      const delivery = { bytes: stored.bytes, source: stored.source, started: now - stored.took, finished: now, from_store: true };
      this.store.touch(id);
      this.outputs.push({ type: 'deliver', waiters: [waiter], id, ok: delivery });
      return;
    }
    if (!this.firstSeen.contains(id)) this.firstSeen.insert(id, now);
    this.waiterSegment.set(waiter, id);
    let waiting = this.waiting.get(id);
    if (!waiting) {
      waiting = { waiters: new Map(), httpOnly: false, abandonedAt: null };
      this.waiting.set(id, waiting);
    }
    if (waiting.waiters.size === 0 && waiting.abandonedAt === null) waiting.httpOnly = !p2p;
    waiting.waiters.set(waiter, playsAt);
    waiting.abandonedAt = null;
    if (waiting.httpOnly) this.startHttp(id, 0, now);
    else this.dirty = true;
  }

  onAbandon(waiter, now) {
    const id = this.waiterSegment.get(waiter);
    if (id === undefined) return;
    this.waiterSegment.delete(waiter);
    const waiting = this.waiting.get(id);
    if (waiting) {
      waiting.waiters.delete(waiter);
      if (waiting.waiters.size === 0) {
        waiting.abandonedAt = now;
        this.dirty = true;
      }
    }
  }

  /** Segments to decide on now, by id, with when each plays (null: over HTTP at once). */
  agenda(now) {
    const out = [];
    for (const id of sortedKeys(this.waiting)) {
      const w = this.waiting.get(id);
      if (!w.httpOnly && w.waiters.size > 0) out.push([id, Math.min(...w.waiters.values())]);
    }
    if (this.announced.length > 0) out.push(...this.announcedAgenda(now));
    return out;
  }

  /** Runs the scheduler over every segment on the agenda. */
  runWork(now) {
    let next = Math.min(now + WAIT_POLL_MS, this.tendAbandoned(now));
    const seniority = this.seniority();
    const scheduler = this.schedulerNow();
    for (const [id, playsAt] of this.agenda(now)) {
      if (this.store.contains(id)) continue;
      const work = this.workOf(id);
      if (work.transfer?.verifying) continue;
      if (playsAt === null) {
        // A seeder's announced segment: over HTTP at once.
        this.startHttp(id, 0, now);
        continue;
      }
      const digest = this.digests.get(id);
      const seen = this.firstSeen.get(id);
      const freshLive = this.live && seen !== undefined && Math.max(0, now - seen) < this.targetMs * 2;
      const need = { segment: id, size: digest ? digest.size : null, playsAt, freshLive };
      const peers = this.linkIds().map((link) => {
        const l = this.links.get(link);
        return {
          peer: l.peer,
          // Only verifiable bytes are worth asking for.
          has: digest !== undefined && l.has.has(id),
          rate: l.rate,
          // A busy peer is not a candidate for a new request until its backoff ends.
          inFlight: l.busyUntil > now ? Math.max(l.inFlight, MAX_IN_FLIGHT_PER_PEER) : l.inFlight,
          healthy: !this.banned.has(l.peer),
        };
      });
      const t = work.transfer;
      const transfer = t && { peer: t.peer, started: t.started, received: t.received, offset: 0, lastProgress: t.lastProgress };
      const decision = scheduler.decide(now, this.me, seniority, need, peers, transfer, work.http !== null);
      next = Math.min(next, this.execute(id, decision, now));
    }
    this.nextWork = Math.max(next, now + MIN_RECHECK_MS);
  }

  /** The scheduler with the HTTP rate to assume now: the measured one when it is lower. */
  schedulerNow() {
    const measured = this.httpRate;
    if (measured !== null && measured > 0 && measured < this.scheduler.config.httpRate) {
      return new Scheduler({ ...this.scheduler.config, httpRate: measured });
    }
    return this.scheduler;
  }

  /** Carries out a decision; returns when to look at the segment again. */
  execute(id, d, now) {
    switch (d.kind) {
      case 'FetchFromPeer':
        this.requestFromPeer(id, d.peer, now);
        break;
      case 'FetchHttp':
      case 'RaceHttp':
        // A race keeps the peer transfer: the HTTP rest is joined with its first bytes.
        this.startHttp(id, this.prefixLen(id) >= d.from ? d.from : 0, now);
        break;
      case 'ReplaceWithHttp': {
        let from = d.from;
        const running = this.work.get(id)?.transfer;
        if (running) {
          if (from > 0 && running.received >= from) {
            this.work.get(id).partial = { peer: running.peer, bytes: running.data.slice(0, from) };
          } else {
            from = 0;
          }
          this.failTransfer(id, 'timeout');
        } else if (this.prefixLen(id) < from) {
          from = 0;
        }
        this.startHttp(id, from, now);
        break;
      }
      case 'WaitUntil':
      case 'Continue':
        return d.at;
      case 'DropPeer': {
        // The peer stalled, failed or will miss while there is time for another: it is kept out
        // of new requests for a backoff, and the need is decided again.
        const link = this.work.get(id)?.transfer?.link;
        this.failTransfer(id, 'timeout');
        const l = link === undefined ? undefined : this.links.get(link);
        if (l) l.busyUntil = now + BUSY_BACKOFF_MS;
        return now;
      }
      case 'Skip': {
        // A prefetch no peer can serve (or whose peer stalled). The player asked for it to fill its
        // buffer: waiting would only shrink the buffer, so HTTP it is. An announced segment the
        // player has not asked for is dropped.
        this.failTransfer(id, 'timeout');
        const waiting = this.waiting.get(id);
        if (waiting && waiting.waiters.size > 0) {
          this.startHttp(id, 0, now);
          break;
        }
        this.announced = this.announced.filter(([a]) => a !== id);
        return now + WAIT_POLL_MS;
      }
      default:
        throw new Error(`NodeCore: unknown decision ${d.kind}`);
    }
    return now + TRANSFER_POLL_MS;
  }

  /**
   * Needs nobody waits for: their running work may finish (into the store) for a short while.
   * Returns when to look again.
   */
  tendAbandoned(now) {
    let next = now + WAIT_POLL_MS;
    const abandoned = [];
    for (const id of sortedKeys(this.waiting)) {
      const w = this.waiting.get(id);
      if (w.waiters.size === 0) abandoned.push([id, w.abandonedAt ?? now]);
    }
    for (const [id, since] of abandoned) {
      const w = this.work.get(id);
      const running = Boolean(w && (w.transfer || w.http));
      const until = since + ABANDONED_GRACE_MS;
      if (running && now < until) {
        next = Math.min(next, until);
        continue;
      }
      this.waiting.delete(id);
      if (running) {
        this.failTransfer(id, 'timeout');
        this.cancelHttp(id);
      }
      this.work.delete(id);
    }
    return next;
  }

  cancelHttp(id) {
    const w = this.work.get(id);
    if (w?.http) {
      w.http = null;
      this.outputs.push({ type: 'http_cancel', id });
    }
  }

  /** Bytes of `id` already in hand from a peer (a running transfer or a kept prefix). */
  prefixLen(id) {
    const w = this.work.get(id);
    if (!w) return 0;
    if (w.transfer) return w.transfer.received;
    return w.partial ? w.partial.bytes.length : 0;
  }

  startHttp(id, from, now) {
    const work = this.workOf(id);
    if (work.http) return;
    if (from === 0) work.partial = null;
    work.http = { from, started: now, verifying: false };
    this.outputs.push({ type: 'http_get', id, from });
  }

  /**
   * Takes a whole segment (verified, or from the gateway): stores it, hands it to its callers,
   * counts it, tells the peers.
   */
  accept(id, bytes, digest, source, started, finished) {
    // A transfer still running lost the race; an HTTP fetch still running is not needed.
    this.failTransfer(id, 'timeout');
    this.cancelHttp(id);
    this.work.delete(id);
    const waiting = this.waiting.get(id);
    this.waiting.delete(id);
    if (waiting) {
      const waiters = [...waiting.waiters.keys()].sort((a, b) => a - b);
      for (const w of waiters) this.waiterSegment.delete(w);
      if (waiters.length > 0) {
        this.outputs.push({ type: 'deliver', waiters, id, ok: { bytes, source, started, finished, from_store: false } });
      }
    }
    this.store.put(id, bytes, digest, source, Math.max(0, finished - started));
    this.summary.segments++;
    if (source === 'p2p') this.summary.p2p_segments++;
    else this.summary.http_segments++;
    this.haveDirty = true;
    this.dirty = true;
  }

  /** A caller's HTTP fetch failed and no peer can deliver: the callers get the error. */
  failWaiters(id, error) {
    const waiting = this.waiting.get(id);
    if (!waiting) return;
    this.waiting.delete(id);
    this.failTransfer(id, 'timeout');
    this.work.delete(id);
    const waiters = [...waiting.waiters.keys()].sort((a, b) => a - b);
    for (const w of waiters) this.waiterSegment.delete(w);
    if (waiters.length > 0) this.outputs.push({ type: 'deliver', waiters, id, err: error });
  }

  workOf(id) {
    let w = this.work.get(id);
    if (!w) {
      w = { transfer: null, http: null, partial: null };
      this.work.set(id, w);
    }
    return w;
  }

  // =============================================================================================
  // Reports

  peerDelta(peer) {
    let d = this.peerDeltas.get(peer);
    if (!d) {
      d = { peer_id: peer, ok: 0, failed: 0, mismatch: 0, bytes: 0 };
      this.peerDeltas.set(peer, d);
    }
    return d;
  }

  sendReport() {
    const s = this.summary;
    const r = this.reported;
    const peers = [];
    for (const peer of sortedKeys(this.peerDeltas).slice(0, MAX_REPORT_PEERS)) {
      peers.push(this.peerDeltas.get(peer));
      this.peerDeltas.delete(peer);
    }
    const failures = {};
    for (const c of FAILURE_CAUSES) failures[c] = Math.max(0, s.failures[c] - r.failures[c]);
    const report = {
      type: 'report',
      http_bytes: Math.max(0, s.http_bytes - r.http_bytes),
      p2p_bytes: Math.max(0, s.p2p_bytes - r.p2p_bytes),
      http_segments: Math.max(0, s.http_segments - r.http_segments),
      p2p_segments: Math.max(0, s.p2p_segments - r.p2p_segments),
      uploaded_bytes: Math.max(0, s.uploaded_bytes - r.uploaded_bytes),
      failures,
    };
    if (peers.length > 0) report.peers = peers;
    this.reported = { ...s, failures: { ...s.failures } };
    this.outputs.push({ type: 'signal', message: report });
  }

  /**
   * `peer` sent `bytes` of segment `id` that verified against `sha256`: counted by the peer's key,
   * and (with receipts on) a receipt to sign.
   */
  deliveredBy(peer, id, sha256, bytes) {
    const uploader = this.peerKeys.get(peer);
    if (uploader === undefined || bytes === 0) return;
    this.receivedFrom.set(uploader, (this.receivedFrom.get(uploader) ?? 0) + bytes);
    if (!this.config.receipts || this.swarm === '') return;
    this.outputs.push({ type: 'delivered', uploader, swarm: this.swarm, segment: id, sha256, bytes });
  }

  /** Leave: last report, `leave`, every link closed, HTTP fetches cancelled. Final. */
  stop() {
    this.sendReport();
    this.outputs.push({ type: 'signal', message: { type: 'leave' } });
    for (const link of this.linkIds()) this.outputs.push({ type: 'close', link, reason: 'node stopped' });
    this.links.clear();
    this.linkOf.clear();
    this.uploads = [];
    for (const id of sortedKeys(this.work)) {
      if (this.work.get(id).http) this.outputs.push({ type: 'http_cancel', id });
    }
    this.stopped = true;
  }

  // =============================================================================================
  // Links: which peers to link to, link lifetimes, duplicates, retries, bans. Of two peers the one
  // with the greater id connects at once; the smaller one connects too if no link came after
  // LINK_FALLBACK_MS (its list may not hold us). Two links to one peer (both sides connected at
  // once) resolve the same way on both sides: the link the greater id initiated stays.

  /** Link ids, ascending. */
  linkIds() {
    return [...this.links.keys()].sort((a, b) => a - b);
  }

  onPeers(peers, now) {
    const listed = peers.filter((p) => p.peer_id !== this.me);
    if (this.elders === null) this.elders = new Set(listed.map((p) => p.peer_id));
    for (const p of listed) {
      if (!this.listedSince.has(p.peer_id)) this.listedSince.set(p.peer_id, now);
      if (p.key !== undefined) this.peerKeys.set(p.peer_id, p.key);
    }
    const ids = new Set(listed.map((p) => p.peer_id));
    for (const id of [...this.listedSince.keys()]) if (!ids.has(id)) this.listedSince.delete(id);
    this.listed = listed;
    this.connectPeers(now);
    this.dirty = true;
  }

  /** Links a transport both sides have: QUIC first. */
  commonTransport(peer) {
    const ours = this.config.transports;
    if (ours.includes('quic') && peer.transports.includes('quic') && peer.quic) return 'quic';
    return ours.includes('webrtc') && peer.transports.includes('webrtc') ? 'webrtc' : null;
  }

  linkCap() {
    return this.maxPeers === null ? this.config.maxLinks : Math.min(this.maxPeers, this.config.maxLinks);
  }

  /** Opens links to listed peers, up to the cap, and plans the next look. */
  connectPeers(now) {
    for (const [peer, since] of [...this.connecting]) {
      if (!(Math.max(0, now - since) < CONNECT_TIMEOUT_MS)) this.connecting.delete(peer);
    }
    let waitingForSomething = false;
    for (const peer of [...this.listed]) {
      if (this.links.size + this.connecting.size >= this.linkCap()) break;
      const id = peer.peer_id;
      if (this.linkOf.has(id) || this.connecting.has(id) || this.banned.has(id)) continue;
      const transport = this.commonTransport(peer);
      if (transport === null) continue;
      const retry = this.retry.get(id);
      if (retry && retry.at > now) {
        waitingForSomething = true;
        continue;
      }
      const since = this.listedSince.get(id) ?? now;
      const ours = compareIds(this.me, id) > 0 || Math.max(0, now - since) >= LINK_FALLBACK_MS;
      if (!ours) {
        waitingForSomething = true;
        continue;
      }
      this.connecting.set(id, now);
      this.outputs.push({ type: 'connect', peer: id, transport, quic: transport === 'quic' ? (peer.quic ?? null) : null });
    }
    const pending = waitingForSomething || this.connecting.size > 0;
    this.nextConnectCheck = pending ? now + CONNECT_CHECK_MS : null;
  }

  /** The next try of `peer` waits (doubling). */
  backOff(peer, now) {
    const r = this.retry.get(peer);
    const delay = r ? Math.min(r.delay * 2, LINK_RETRY_MAX_MS) : LINK_RETRY_FIRST_MS;
    this.retry.set(peer, { at: now + delay, delay });
    if (this.nextConnectCheck === null) this.nextConnectCheck = now + CONNECT_CHECK_MS;
  }

  onLinkUp(link, peer, initiated, maxFrame, fingerprint, now) {
    this.connecting.delete(peer);
    if (this.banned.has(peer)) {
      this.outputs.push({ type: 'close', link, reason: 'banned' });
      return;
    }
    // The peer id in the Handshake is only a claim: for a peer the tracker listed here, the key
    // behind the link (QUIC) must be the one it published for that id. A dialer not listed here
    // cannot be checked and is taken as a stranger (the tracker ignores reports about peers it did
    // not introduce). Browser links (WebRTC) have no key to check.
    const listed = this.listed.find((p) => p.peer_id === peer);
    if (fingerprint !== null && listed !== undefined) {
      const published = listed.quic?.fingerprint;
      if (published === undefined || normalFingerprint(published) !== normalFingerprint(fingerprint)) {
        this.identityMismatches++;
        this.outputs.push({ type: 'close', link, reason: 'identity' });
        return;
      }
    }
    const existing = this.linkOf.get(peer);
    if (existing !== undefined) {
      // Two links to one peer: the one the greater id initiated stays, on both sides.
      const iAmGreater = compareIds(this.me, peer) > 0;
      const newWins = initiated === iAmGreater;
      const oldWins = this.links.get(existing)?.initiated === iAmGreater;
      if (!newWins || oldWins) {
        this.outputs.push({ type: 'close', link, reason: 'duplicate link' });
        return;
      }
      this.dropLink(existing, 'disconnect', 'duplicate link', now);
    }
    this.retry.delete(peer);
    this.linkOf.set(peer, link);
    this.links.set(link, { peer, initiated, maxFrame, has: new Set(), rate: null, inFlight: 0, unacked: 0, busyUntil: 0, busyStreak: 0 });
    this.send(link, this.haveFrame(link));
    this.dirty = true;
  }

  /** Closes a link we no longer want and forgets it. */
  dropLink(link, cause, reason, now) {
    if (this.links.has(link)) {
      this.outputs.push({ type: 'close', link, reason });
      this.forgetLink(link, cause, now);
    }
  }

  /** A link is gone: its transfers fail with `cause`, its uploads stop, the peer may be retried. */
  forgetLink(link, cause, now) {
    const gone = this.links.get(link);
    if (!gone) return;
    this.links.delete(link);
    if (this.linkOf.get(gone.peer) === link) this.linkOf.delete(gone.peer);
    const failed = sortedKeys(this.work).filter((id) => {
      const t = this.work.get(id).transfer;
      return t && t.link === link && !t.verifying;
    });
    for (const id of failed) this.failTransfer(id, cause);
    this.uploads = this.uploads.filter((u) => u.link !== link);
    if (!this.banned.has(gone.peer)) this.backOff(gone.peer, now);
    this.dirty = true;
  }

  /** Queues a frame on a link (counted against the link's upload window until written). */
  send(link, frame) {
    const l = this.links.get(link);
    if (l) {
      l.unacked += encodedLen(frame);
      this.outputs.push({ type: 'send', link, frame });
    }
  }

  /** When the pending Have frames may go out. */
  nextHave() {
    if (!this.haveDirty || this.links.size === 0) return null;
    return this.lastHave === null ? this.started : this.lastHave + HAVE_INTERVAL_MS;
  }

  /** Sends Have to every link if the store changed and the last Have is old enough. */
  flushHave(now) {
    const at = this.nextHave();
    if (at === null || now < at) return;
    this.haveDirty = false;
    this.lastHave = now;
    for (const link of this.linkIds()) this.send(link, this.haveFrame(link));
  }

  /**
   * Have: the newest stored segments whose bytes match the gateway's digest, at most MAX_HAVE_IDS
   * and within the link's frame size; empty when this node does not upload.
   */
  haveFrame(link) {
    const segments = [];
    if (this.config.upload) {
      const maxFrame = this.links.get(link)?.maxFrame ?? 0;
      const budget = Math.min(MAX_FRAME_LEN, Math.max(0, maxFrame - HEADER_LEN));
      let size = 2;
      for (const [id, stored] of this.store.newest()) {
        if (segments.length >= MAX_HAVE_IDS) break;
        const d = this.digests.get(id);
        if (!d || d.digest !== stored.digest) continue;
        const len = 2 + utf8Length(id);
        if (size + len > budget) break;
        size += len;
        segments.push(id);
      }
    }
    return { type: 'have', segments };
  }

  /**
   * A peer sent data that does not match the gateway's digest: never used, the peer is banned and
   * disconnected and will be reported (`mismatch`).
   */
  caughtLying(id, link, now) {
    const peer = this.links.get(link)?.peer;
    if (peer === undefined) {
      this.failTransfer(id, 'mismatch');
      return;
    }
    this.mismatches++;
    this.failTransfer(id, 'mismatch');
    this.ban(peer, now);
  }

  /** Bans `peer`: its link closes, it is never linked or asked again (in this swarm session). */
  ban(peer, now) {
    if (!this.banned.has(peer)) {
      this.banned.add(peer);
      this.peersDroppedForLying.push(peer);
    }
    const link = this.linkOf.get(peer);
    if (link !== undefined) this.dropLink(link, 'disconnect', 'banned', now);
  }

  // =============================================================================================
  // Transfers: requests to peers and what comes back, HTTP answers, and the check of every byte
  // against the gateway's digest before anything is used. A Response header is only the peer's
  // claim; a complete transfer is hashed (`verify`) and used only if it matches. Peer bytes that
  // HTTP took over (a Range request for the rest) are joined with the HTTP rest and verified as a
  // whole; if the whole does not match, the peer lied and the segment is fetched whole over HTTP.

  onFrame(link, frame, now) {
    const l = this.links.get(link);
    if (!l) return;
    switch (frame.type) {
      case 'handshake':
        return;
      case 'have':
        l.has = new Set(frame.segments);
        this.dirty = true;
        return;
      case 'request':
        this.serve(link, frame.request_id, frame.segment, frame.offset, now);
        return;
      case 'cancel':
        this.uploads = this.uploads.filter((u) => !(u.link === link && u.requestId === frame.request_id));
        return;
      case 'absent': {
        const id = this.transferOf(link, frame.request_id);
        // Absent for a segment it advertises: busy (it serves one upload at a time). Keep what it
        // has; ask it again later.
        if (id !== null && l.has.has(id)) {
          l.busyUntil = now + busyBackoffMs(l.busyStreak);
          l.busyStreak += 1;
        }
        if (id !== null) this.failTransfer(id, 'absent');
        return;
      }
      case 'response': {
        const id = this.transferOf(link, frame.request_id);
        if (id === null) return; // cancelled or unknown: frames in flight are ignored
        const truth = this.digests.get(id);
        const t = this.work.get(id).transfer;
        const honest =
          truth !== undefined &&
          truth.digest === toHex(frame.digest) &&
          truth.size === frame.size &&
          frame.offset === 0 &&
          frame.size <= MAX_SEGMENT_BYTES &&
          t.size === null;
        if (!honest) {
          this.caughtLying(id, link, now);
          return;
        }
        l.busyStreak = 0;
        t.size = frame.size;
        t.data = new Uint8Array(frame.size);
        if (frame.size === 0) this.completePeerTransfer(id, now);
        return;
      }
      case 'chunk': {
        const id = this.transferOf(link, frame.request_id);
        if (id === null) return;
        const t = this.work.get(id).transfer;
        const fits =
          t.size !== null && !t.verifying && frame.offset === t.received && t.received + frame.data.length <= t.size;
        if (!fits) {
          this.caughtLying(id, link, now);
          return;
        }
        t.data.set(frame.data, t.received);
        t.received += frame.data.length;
        t.lastProgress = now;
        if (t.received === t.size) this.completePeerTransfer(id, now);
        return;
      }
      default:
        return;
    }
  }

  /** The segment whose running transfer is `requestId` on `link`, or null. */
  transferOf(link, requestId) {
    const id = this.requests.get(requestId);
    if (id === undefined) return null;
    const t = this.work.get(id)?.transfer;
    return t && t.link === link && t.requestId === requestId ? id : null;
  }

  requestFromPeer(id, peer, now) {
    const link = this.linkOf.get(peer);
    if (link === undefined) return;
    const requestId = this.nextRequest;
    this.nextRequest = this.nextRequest >= 0xffff_ffff ? 1 : this.nextRequest + 1;
    const l = this.links.get(link);
    if (l) l.inFlight++;
    this.send(link, { type: 'request', request_id: requestId, segment: id, offset: 0 });
    this.requests.set(requestId, id);
    this.workOf(id).transfer = {
      link,
      peer,
      requestId,
      started: now,
      lastProgress: now,
      /** The size the Response announced (null before it). */
      size: null,
      data: NO_BYTES,
      received: 0,
      /** Complete and being hashed: {ticket, at} (when the last byte arrived). */
      verifying: null,
    };
  }

  /** Ends the running transfer of `id` because of `cause`, telling the peer when it may still be sending. */
  failTransfer(id, cause) {
    const w = this.work.get(id);
    const t = w?.transfer;
    if (!t) return;
    w.transfer = null;
    this.requests.delete(t.requestId);
    if (!t.verifying && (cause === 'timeout' || cause === 'mismatch')) {
      this.send(t.link, { type: 'cancel', request_id: t.requestId });
    }
    if (t.verifying) this.jobs.delete(t.verifying.ticket);
    this.summary.failures[cause]++;
    const delta = this.peerDelta(t.peer);
    // A busy uploader says Absent on purpose (it serves its uploads one after another): not a
    // failure to report against it.
    if (cause === 'mismatch') delta.mismatch++;
    else if (cause !== 'absent') delta.failed++;
    const l = this.links.get(t.link);
    if (l) {
      // After Absent it still has the segment if it advertises it (it was busy); a Have that no
      // longer lists it says otherwise.
      l.inFlight = Math.max(0, l.inFlight - 1);
    }
    this.dirty = true;
  }

  /** Every byte is in: hash it. */
  completePeerTransfer(id, now) {
    const ticket = this.nextTicket++;
    const t = this.work.get(id)?.transfer;
    if (!t) return;
    this.requests.delete(t.requestId);
    t.verifying = { ticket, at: now };
    this.jobs.set(ticket, { kind: 'peer', id });
    this.outputs.push({ type: 'verify', ticket, bytes: t.data });
  }

  onHttp(id, from, result, now) {
    const work = this.work.get(id);
    if (!work) return;
    const fetch = work.http;
    if (!fetch || fetch.from !== from || fetch.verifying) return; // cancelled, or an older fetch
    const httpStarted = fetch.started;
    if (result.ok === undefined) {
      work.http = null;
      if (work.transfer) this.dirty = true; // the peer may still deliver
      else this.failWaiters(id, result.err);
      return;
    }
    const body = result.ok;
    this.summary.http_bytes += body.length;
    this.httpRate = updateRate(this.httpRate, body.length, Math.max(0, now - httpStarted)) ?? this.httpRate;
    // The peer bytes this HTTP range continues: a running transfer's, or a kept prefix.
    let prefix = null;
    if (from !== 0) {
      const t = work.transfer;
      if (t && !t.verifying && t.received >= from) {
        prefix = { peer: t.peer, bytes: t.data.slice(0, from) };
      } else if (work.partial && work.partial.bytes.length === from) {
        prefix = work.partial;
      }
    }
    if (from > 0 && prefix === null) {
      work.http = null;
      this.startHttp(id, 0, now);
      return;
    }
    fetch.verifying = true;
    const whole = prefix ? concatBytes([prefix.bytes, body]) : body;
    const ticket = this.nextTicket++;
    this.jobs.set(ticket, {
      kind: 'http',
      id,
      from,
      prefix: prefix && { peer: prefix.peer, len: prefix.bytes.length },
      httpStarted,
      whole,
    });
    this.outputs.push({ type: 'verify', ticket, bytes: whole });
  }

  onVerified(ticket, sha256, now) {
    const job = this.jobs.get(ticket);
    if (!job) return; // dropped meanwhile
    this.jobs.delete(ticket);
    if (job.kind === 'peer') this.peerVerified(job.id, ticket, sha256, now);
    else this.httpVerified(job, sha256, now);
  }

  peerVerified(id, ticket, sha256, now) {
    const work = this.work.get(id);
    const t = work?.transfer;
    if (!t || t.verifying?.ticket !== ticket) return;
    work.transfer = null;
    const ended = t.verifying.at;
    const bytes = t.data;
    const truth = this.digests.get(id);
    if (!truth || truth.digest !== sha256 || truth.size !== bytes.length) {
      // Put it back so the failure is counted against it.
      work.transfer = { ...t, lastProgress: ended, data: NO_BYTES, received: 0 };
      this.caughtLying(id, t.link, now);
      return;
    }
    const len = bytes.length;
    const l = this.links.get(t.link);
    if (l) {
      l.inFlight = Math.max(0, l.inFlight - 1);
      l.rate = updateRate(l.rate, len, Math.max(0, ended - t.started)) ?? l.rate;
    }
    const delta = this.peerDelta(t.peer);
    delta.ok++;
    delta.bytes += len;
    this.summary.p2p_bytes += len;
    this.deliveredBy(t.peer, id, sha256, len);
    this.accept(id, bytes, sha256, 'p2p', t.started, ended);
  }

  httpVerified({ id, from, prefix, httpStarted, whole }, sha256, now) {
    const w = this.work.get(id);
    if (!(w?.http && w.http.from === from && w.http.verifying)) return;
    const truth = this.digests.get(id);
    if (prefix && (!truth || truth.digest !== sha256 || truth.size !== whole.length)) {
      // The peer's part was wrong: never use it, fetch the whole segment over HTTP.
      // The first time, the peer may be an honest relay that forwarded a liar's bytes before it
      // found out (it withdraws them when it does): not banned nor reported. A second time, it lies.
      this.mismatches++;
      this.summary.failures.mismatch++;
      w.partial = null;
      w.http = null;
      if (this.prefixStrikes.has(prefix.peer)) {
        this.peerDelta(prefix.peer).mismatch++;
        this.ban(prefix.peer, now);
      } else {
        this.prefixStrikes.add(prefix.peer);
      }
      this.startHttp(id, 0, now);
      return;
    }
    // (Without a prefix, gateway bytes that differ from its own digest are used all the same.)
    w.http = null;
    this.summary.p2p_bytes += prefix ? prefix.len : 0;
    if (prefix) this.deliveredBy(prefix.peer, id, sha256, prefix.len);
    // Bandwidth estimation sees the HTTP fetch: a peer's pace says nothing of the viewer's HTTP
    // path (and a prefix fetched ahead of the player would make it look slow).
    this.accept(id, whole, sha256, 'http', httpStarted, now);
  }

  // =============================================================================================
  // Uploads: requests answered from the store within the upload policy (opt-out, privacy floor),
  // chunks paced by one token bucket for the whole node (the upload cap) and by each link's window
  // of unwritten bytes (a slow link does not pile frames up in memory). Served one after another,
  // not all at once (an uplink shared by every requester finishes every transfer late): the next
  // starts once the previous one has drained from its link (DRAIN_SLACK), at most
  // MAX_WAITING_UPLOADS wait behind it, and a request beyond them is answered Absent at once.

  serve(link, requestId, id, offset, now) {
    const allowed = this.config.upload && this.listed.length + 1 >= this.config.privacyFloor;
    const s = this.store.get(id);
    const stored = s && offset <= s.bytes.length ? s : null;
    const duplicate = this.uploads.some((u) => u.link === link && u.requestId === requestId);
    const busy = this.uploads.length > MAX_WAITING_UPLOADS;
    if (!stored || !allowed || duplicate || busy) {
      this.send(link, { type: 'absent', request_id: requestId });
      return;
    }
    const bytes = stored.bytes;
    this.send(link, { type: 'response', request_id: requestId, size: bytes.length, offset, digest: fromHex(stored.digest) });
    if (offset < bytes.length) this.uploads.push({ link, requestId, bytes, next: offset, started: false });
    this.pumpUploads(now);
  }

  /**
   * Sends chunks of the oldest upload while the bucket and its link's window allow; a new upload
   * starts only once the links of earlier ones have drained.
   */
  pumpUploads(now) {
    this.nextUpload = null;
    for (;;) {
      let sent = false;
      let i = 0;
      // Only the head of the queue is sent.
      while (i < Math.min(this.uploads.length, 1)) {
        const u = this.uploads[i];
        if (!u.started) {
          const draining = [...this.links].some(([id, l]) => id !== u.link && l.unacked > DRAIN_SLACK);
          if (draining) return;
        }
        const start = u.next;
        const end = Math.min(start + RECOMMENDED_CHUNK_LEN, u.bytes.length);
        const l = this.links.get(u.link);
        if (!(l && l.unacked < LINK_WINDOW)) {
          i++;
          continue;
        }
        const wait = this.bucket.tryTake(end - start, now);
        if (wait !== null) {
          this.nextUpload = wait;
          return;
        }
        const chunk = u.bytes.subarray(start, end);
        const data = this.config.test.lie ? corrupt(chunk) : chunk;
        this.send(u.link, { type: 'chunk', request_id: u.requestId, offset: start, data });
        this.summary.uploaded_bytes += end - start;
        u.started = true;
        sent = true;
        if (end >= u.bytes.length) {
          this.uploads.splice(i, 1);
        } else {
          u.next = end;
          i++;
        }
      }
      if (!sent) return;
    }
  }
}

/**
 * @typedef {object} Link
 * @property {string} peer
 * @property {boolean} initiated
 * @property {number} maxFrame   largest frame the link carries, header included
 * @property {Set<string>} has   what the peer advertised in its last Have
 * @property {number|null} rate  measured transfer rate from this peer (EWMA), bytes/s
 * @property {number} inFlight   our requests running on it
 * @property {number} unacked    bytes of frames queued on it that the driver has not reported written
 *
 * @typedef {object} Work        the work on one segment
 * @property {object|null} transfer  a peer transfer
 * @property {{from: number, started: number, verifying: boolean}|null} http
 * @property {{peer: string, bytes: Uint8Array}|null} partial  the first bytes of
 *   the segment from a peer transfer HTTP took over, joined with the HTTP rest and verified whole
 *
 * @typedef {object} Waiting     callers waiting for one segment
 * @property {Map<number, number>} waiters  waiter → when it plays
 * @property {boolean} httpOnly  straight to HTTP, never peers
 * @property {number|null} abandonedAt  when the last waiter left
 *
 * @typedef {{link: number, requestId: number, bytes: Uint8Array, next: number}} Upload
 */

function newCounters() {
  return {
    http_bytes: 0,
    p2p_bytes: 0,
    uploaded_bytes: 0,
    segments: 0,
    http_segments: 0,
    p2p_segments: 0,
    failures: { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 },
  };
}

/** Keys of a map in id order (the Rust BTreeMap order). */
function sortedKeys(map) {
  return [...map.keys()].sort(compareIds);
}

/** The test switch `lie`: flips bits in every chunk (every 97th byte xor 0x5a). */
function corrupt(data) {
  const bad = data.slice();
  for (let i = 0; i < bad.length; i += 97) bad[i] ^= 0x5a;
  return bad;
}

/** A map that forgets its oldest insertion first beyond `cap` (a value replaced keeps its place). */
class Bounded {
  constructor(cap) {
    this.cap = cap;
    this.map = new Map();
  }

  insert(key, value) {
    const fresh = !this.map.has(key);
    this.map.set(key, value);
    if (fresh) {
      while (this.map.size > this.cap) this.map.delete(this.map.keys().next().value);
    }
  }

  get(key) {
    return this.map.get(key);
  }

  contains(key) {
    return this.map.has(key);
  }
}

/** Segments kept to serve others: least recently used first out, bounded by count and by bytes. */
export class Store {
  constructor(maxCount, maxBytes) {
    this.maxCount = maxCount;
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.clock = 0;
    /** @type {Map<string, {bytes: Uint8Array, digest: string, source: string, used: number}>} */
    this.entries = new Map();
    /** @type {Map<number, string>} use order, oldest first (the clock only grows) */
    this.order = new Map();
  }

  contains(id) {
    return this.entries.has(id);
  }

  /** Looks without marking it used (serving peers does not keep a segment). */
  get(id) {
    return this.entries.get(id);
  }

  /** Marks `id` used now (the player asked for it again). */
  touch(id) {
    this.clock++;
    const e = this.entries.get(id);
    if (e) {
      this.order.delete(e.used);
      e.used = this.clock;
      this.order.set(this.clock, id);
    }
  }

  put(id, bytes, digest, source, took = 0) {
    this.remove(id);
    this.clock++;
    this.bytes += bytes.length;
    this.order.set(this.clock, id);
    this.entries.set(id, { bytes, digest, source, took, used: this.clock });
    while (this.entries.size > this.maxCount || this.bytes > this.maxBytes) {
      const first = this.order.entries().next();
      if (first.done) break;
      const [used, oldest] = first.value;
      this.order.delete(used);
      const gone = this.entries.get(oldest);
      if (gone) {
        this.entries.delete(oldest);
        this.bytes -= gone.bytes.length;
      }
    }
  }

  remove(id) {
    const gone = this.entries.get(id);
    if (gone) {
      this.entries.delete(id);
      this.order.delete(gone.used);
      this.bytes -= gone.bytes.length;
    }
  }

  /** Stored segments, most recently used first: [id, stored]. */
  *newest() {
    const ids = [...this.order.values()];
    for (let i = ids.length - 1; i >= 0; i--) {
      const e = this.entries.get(ids[i]);
      if (e) yield [ids[i], e];
    }
  }
}

/** A token bucket in bytes on explicit time (ms). */
export class TokenBucket {
  /** Fills at `rate` bytes/s up to `burst`, full at `now`; an unusable rate means no limit. */
  constructor(rate, burst, now) {
    this.rate = Number.isFinite(rate) && rate > 0 ? rate : Number.MAX_VALUE;
    this.burst = burst;
    this.tokens = burst;
    this.last = now;
  }

  refill(now) {
    const elapsed = Math.max(0, now - this.last) / 1000;
    this.last = Math.max(this.last, now);
    this.tokens = Math.min(this.tokens + elapsed * this.rate, this.burst);
  }

  /**
   * Takes `bytes` if the bucket is not in debt at `now` (the take itself may go into debt, so large
   * chunks are not starved) and returns null; otherwise returns when it will be out of debt.
   */
  tryTake(bytes, now) {
    this.refill(now);
    if (this.tokens < 0) {
      const waitMs = Math.min((-this.tokens / this.rate) * 1000, 3_600_000);
      return now + Math.max(waitMs, 0.001);
    }
    this.tokens -= bytes;
    return null;
  }
}

/** A fingerprint as lowercase hex without separators. */
function normalFingerprint(fingerprint) {
  return fingerprint.replaceAll(':', '').toLowerCase();
}
