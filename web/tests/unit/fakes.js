// Test doubles for the engine: an HTTP gateway (fetch), a joined swarm without a socket, and peer
// links without WebRTC.

import { createHash } from 'node:crypto';

import { P2PEngine } from '../../src/engine.js';
import { BoundedMap } from '../../src/util.js';

export const GATEWAY = 'http://gw.test';
export const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Bytes 0, 1, 2, … of length n (distinct per seed). */
export function body(n, seed = 0) {
  return new Uint8Array(n).map((_, i) => (i * 7 + seed) & 0xff);
}

/** A gateway serving `files` (path → bytes) with single byte ranges; records the requests. */
export function fakeGateway(files) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    const path = new URL(url).pathname;
    const range = init.headers?.Range ?? null;
    requests.push({ path, range });
    const bytes = files.get(path);
    if (!bytes) return new Response('not found', { status: 404, statusText: 'Not Found' });
    if (range) {
      const from = Number(/^bytes=(\d+)-$/.exec(range)[1]);
      return new Response(bytes.slice(from), {
        status: 206,
        headers: { 'content-range': `bytes ${from}-${bytes.length - 1}/${bytes.length}` },
      });
    }
    return new Response(bytes.slice(), { status: 200 });
  };
  return { fetch, requests };
}

/** An engine that believes it joined rendition 0 as peer `me`, with fake links. */
export function joinedEngine({ fetch, me = 'p-5', options = {} }) {
  const engine = new P2PEngine({ gateway: GATEWAY, stream: '/s/master.m3u8', fetch, ...options });
  const signals = [];
  const conn = {
    rendition: 0,
    channel: { open: true, send: (m) => signals.push(m), leave() {}, close() {} },
    peerId: me,
    swarm: '/s/master.m3u8#0',
    maxPeers: 8,
    listed: new Map(),
    older: new Set(),
    listedSince: new Map(),
    links: new Map(),
    retry: new Map(),
    digestIds: new BoundedMap(100),
    timers: [],
  };
  engine.conn = conn;
  engine.rendition = 0;
  engine.levelRendition = [0];
  engine.live = false; // a test that wants fresh live segments says so
  engine.targetDurationMs = 2000;
  return { engine, conn, signals };
}

/** Publishes a gateway digest for `id` (as the `digests` message would). */
export function publish(engine, id, bytes) {
  engine.onSignal(engine.conn, { type: 'digests', playlist: '/s/0.m3u8', segments: [{ id, sha256: sha256(bytes), size: bytes.length }] });
}

/** A ready link to `remote` that records the frames the engine sends and the uploads it starts. */
export function fakeLink(engine, conn, remote) {
  const link = {
    remote,
    state: 'ready',
    has: new Set(),
    rate: null,
    inFlight: 0,
    maxMessageSize: 65_536,
    frames: [],
    uploads: [],
    closedWith: null,
    sendFrame(f) {
      this.frames.push(f);
      return true;
    },
    startUpload(requestId, bytes, digest, offset) {
      this.uploads.push({ requestId, bytes, digest, offset });
      return true;
    },
    cancelUpload() {},
    close(reason) {
      if (this.state === 'closed') return;
      this.state = 'closed';
      this.closedWith = reason;
      engine.onLinkClosed(conn, this, reason);
    },
  };
  conn.links.set(remote, link);
  conn.listed.set(remote, { peer_id: remote, transports: ['webrtc'] });
  return link;
}

/** Asks the engine for a segment needed in `playsInMs` (like the loader does); resolves with the outcome. */
export function ask(engine, id, playsInMs) {
  const at = performance.now() + playsInMs;
  return new Promise((resolve) => {
    engine.fetchSegment(GATEWAY + id, {
      frag: { type: 'main', level: 0, sn: 1, start: 0 },
      playsAt: () => at,
      onSuccess: (r) => resolve({ ok: true, ...r }),
      onError: (e) => resolve({ ok: false, error: e }),
    });
  });
}

/** Sends a whole segment over a fake link as Response + 16 KiB chunks (optionally corrupted). */
export function deliver(engine, conn, link, requestId, bytes, { digest = sha256(bytes), size = bytes.length, corrupt = false } = {}) {
  engine.onFrame(conn, link, { type: 'response', request_id: requestId, size, offset: 0, digest: Buffer.from(digest, 'hex') });
  for (let at = 0; at < bytes.length; at += 16384) {
    const data = bytes.slice(at, at + 16384);
    if (corrupt && at === 0) data[0] ^= 0xff;
    engine.onFrame(conn, link, { type: 'chunk', request_id: requestId, offset: at, data });
  }
}
