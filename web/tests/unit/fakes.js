// Test doubles for the engine: an HTTP gateway (fetch), the gateway's tracker over a WebSocket
// double, and WebRTC (RTCPeerConnection and data channels) inside the process, so that real engines
// link to each other and exchange real frames.

import { createHash } from 'node:crypto';

import { P2PEngine } from '../../src/engine.js';
import { sessionKey } from '../../src/keys.js';
import { decodeClient, encodeServer } from '../../src/protocol/signal.js';

export const GATEWAY = 'http://gw.test';
export const STREAM = '/s/master.m3u8';
export const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Bytes 0, 1, 2, … of length n (distinct per seed). */
export function body(n, seed = 0) {
  return new Uint8Array(n).map((_, i) => (i * 7 + seed) & 0xff);
}

/**
 * A gateway serving `files` (path → bytes) with single byte ranges, each answer `delayMs` late;
 * records the requests (and whether they were aborted).
 */
export function fakeGateway(files, { delayMs = 0 } = {}) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    const path = new URL(url).pathname;
    const range = init.headers?.Range ?? null;
    const request = { url, path, range, headers: { ...init.headers }, aborted: false };
    requests.push(request);
    init.signal?.addEventListener('abort', () => (request.aborted = true));
    if (delayMs > 0) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        init.signal?.addEventListener('abort', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (init.signal?.aborted) throw new DOMException('aborted', 'AbortError');
    const bytes = files.get(path);
    if (!bytes) return new Response('not found', { status: 404, statusText: 'Not Found' });
    if (range) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      const from = Number(m[1]);
      const last = m[2] === '' ? bytes.length - 1 : Math.min(Number(m[2]), bytes.length - 1);
      return new Response(bytes.slice(from, last + 1), {
        status: 206,
        headers: { 'content-range': `bytes ${from}-${last}/${bytes.length}` },
      });
    }
    return new Response(bytes.slice(), { status: 200 });
  };
  return { fetch, requests };
}

/**
 * The gateway's tracker for one stream: peers join in order (ids p-1, p-2, …) the swarm of their
 * rendition, every change of a swarm sends its members the full list, relays are forwarded within
 * a swarm, digests can be published to all.
 * `tracker.WebSocket` is the class to give the engines.
 */
export class FakeTracker {
  constructor() {
    this.sockets = [];
    this.received = [];
    this.digests = [];
    this.nextId = 1;
    const tracker = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        this.peerId = null;
        queueMicrotask(() => {
          if (this.readyState !== 0) return;
          this.readyState = 1;
          this.onopen?.();
        });
      }
      send(text) {
        if (this.readyState !== 1) throw new Error('not open');
        const msg = decodeClient(text); // every message an engine sends is valid for the gateway
        this.sent.push(msg);
        tracker.received.push(msg);
        queueMicrotask(() => tracker.onMessage(this, msg));
      }
      /** A message from the gateway. */
      receive(msg) {
        if (this.readyState === 1) this.onmessage?.({ data: encodeServer(msg) });
      }
      close(code = 1000, reason = '') {
        if (this.readyState === 3) return;
        this.readyState = 3;
        tracker.left(this);
        queueMicrotask(() => this.onclose?.({ code, reason }));
      }
    };
  }

  /** The peer ids of the swarm, in join order. */
  get peers() {
    return this.sockets.map((s) => s.peerId);
  }

  onMessage(ws, msg) {
    switch (msg.type) {
      case 'join':
        ws.peerId = `p-${this.nextId++}`;
        ws.key = msg.key ?? null;
        ws.swarm = `${msg.stream}#${msg.rendition}`;
        this.sockets.push(ws);
        ws.receive({ type: 'welcome', v: 1, peer_id: ws.peerId, swarm: `${msg.stream}#${msg.rendition}`, playlist: '/s/0.m3u8', max_peers: 8 });
        ws.receive({ type: 'digests', playlist: '/s/0.m3u8', segments: this.digests });
        this.announce();
        return;
      case 'relay':
        this.sockets.find((s) => s.peerId === msg.to && s.swarm === ws.swarm)?.receive({ type: 'relay', from: ws.peerId, payload: msg.payload });
        return;
      case 'leave':
        ws.close(1000, 'leave');
        return;
    }
  }

  left(ws) {
    const i = this.sockets.indexOf(ws);
    if (i < 0) return;
    this.sockets.splice(i, 1);
    this.announce();
  }

  announce() {
    for (const s of this.sockets) {
      const peers = this.sockets
        .filter((o) => o !== s && o.swarm === s.swarm)
        .map((o) => ({ peer_id: o.peerId, transports: ['webrtc'], ...(o.key ? { key: o.key } : {}) }));
      s.receive({ type: 'peers', peers });
    }
  }

  /** A newly cached segment's digest, to every peer. */
  publish(id, bytes) {
    const entry = { id, sha256: sha256(bytes), size: bytes.length };
    this.digests.push(entry);
    for (const s of this.sockets) s.receive({ type: 'digests', playlist: '/s/0.m3u8', segments: [entry] });
  }

  /** The receipts of every report the tracker got, in order. */
  receipts() {
    return this.received.filter((m) => m.type === 'report').flatMap((m) => m.receipts ?? []);
  }

  /** The reports the tracker got, summed. */
  reported() {
    const sum = { http_bytes: 0, p2p_bytes: 0, uploaded_bytes: 0, mismatch: 0 };
    for (const m of this.received.filter((r) => r.type === 'report')) {
      sum.http_bytes += m.http_bytes;
      sum.p2p_bytes += m.p2p_bytes;
      sum.uploaded_bytes += m.uploaded_bytes;
      sum.mismatch += m.failures.mismatch;
    }
    return sum;
  }
}

/**
 * RTCPeerConnection inside the process: the "SDP" names the connection, an answer pairs the two
 * data channels, messages arrive a macrotask later. `lie(pc)`-style hooks are not needed: what a
 * peer sends is what its engine's core asks for.
 */
export function fakeWebRtc() {
  const connections = new Map();
  let next = 1;

  class FakeDataChannel {
    constructor(label) {
      this.label = label;
      this.readyState = 'connecting';
      this.bufferedAmount = 0;
      this.bufferedAmountLowThreshold = 0;
      this.binaryType = 'blob';
      this.other = null;
    }
    send(data) {
      if (this.readyState !== 'open') throw new Error('channel not open');
      const copy = data.slice().buffer;
      const other = this.other;
      setTimeout(() => {
        if (other.readyState === 'open') other.onmessage?.({ data: copy });
      }, 0);
    }
    close() {
      for (const dc of [this, this.other]) {
        if (!dc || dc.readyState === 'closed') continue;
        dc.readyState = 'closed';
        setTimeout(() => dc.onclose?.(), 0);
      }
    }
  }

  return class FakeRTCPeerConnection {
    constructor() {
      this.id = next++;
      connections.set(this.id, this);
      this.sctp = { maxMessageSize: 262_144 };
      this.connectionState = 'new';
      this.localDescription = null;
      this.dc = null;
    }
    createDataChannel(label) {
      this.dc = new FakeDataChannel(label);
      return this.dc;
    }
    async createOffer() {
      return { type: 'offer', sdp: `fake ${this.id}` };
    }
    async createAnswer() {
      return { type: 'answer', sdp: `fake ${this.id}` };
    }
    async setLocalDescription(d) {
      this.localDescription = d;
    }
    async setRemoteDescription(d) {
      const remote = connections.get(Number(d.sdp.split(' ')[1]));
      if (!remote) throw new Error('unknown remote description');
      if (d.type !== 'answer') return;
      const mine = this.dc;
      const theirs = new FakeDataChannel(mine.label);
      mine.other = theirs;
      theirs.other = mine;
      setTimeout(() => {
        remote.ondatachannel?.({ channel: theirs });
        mine.readyState = theirs.readyState = 'open';
        mine.onopen?.();
        theirs.onopen?.();
      }, 0);
    }
    async addIceCandidate() {}
    close() {
      this.connectionState = 'closed';
      connections.delete(this.id);
      this.dc?.close();
    }
  };
}

/** One WebRTC for every engine of the process: they reach each other. */
const FakeRTCPeerConnection = fakeWebRtc();

/**
 * An engine on the fake gateway and tracker (WebRTC in the process unless `RTCPeerConnection: null`),
 * with a key of its own (engines of one page would share the page's key).
 */
export function newEngine({ gateway, tracker, options = {} }) {
  return new P2PEngine({
    gateway: GATEWAY,
    stream: STREAM,
    fetch: gateway.fetch,
    WebSocket: tracker?.WebSocket ?? null,
    RTCPeerConnection: FakeRTCPeerConnection,
    nodeKey: sessionKey(),
    ...options,
  });
}

/** An engine that joined rendition 0 (its hls.js level 0 is rendition 0); resolves once welcomed. */
export async function joinedEngine(o) {
  const engine = newEngine(o);
  engine.levelRendition = [0];
  engine.setRendition(0);
  await until(() => engine.conn?.peerId, 'the welcome');
  return engine;
}

/** Waits until `check()` is truthy (polling); returns its value. */
export async function until(check, what = 'the condition', timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * Asks the engine for a segment needed in `playsInMs` (as the loader does, for hls.js level 0);
 * resolves with the outcome.
 */
export function ask(engine, id, playsInMs, frag = { type: 'main', level: 0, sn: 1, start: 0 }) {
  const at = performance.now() + playsInMs;
  return new Promise((resolve) => {
    engine.fetchSegment(GATEWAY + id, {
      frag,
      playsAt: () => at,
      onSuccess: (r) => resolve({ ok: true, ...r }),
      onError: (e) => resolve({ ok: false, error: e }),
    });
  });
}
