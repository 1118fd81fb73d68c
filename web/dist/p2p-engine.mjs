// P2P engine for hls.js pages (edge gateway). See README.md in the web/ sources.
var __defProp = Object.defineProperty;
var __export = (target, all) => {
  for (var name in all)
    __defProp(target, name, { get: all[name], enumerable: true });
};

// src/protocol/frame.js
var frame_exports = {};
__export(frame_exports, {
  FRAME_TYPES: () => FRAME_TYPES,
  FrameError: () => FrameError,
  HEADER_LEN: () => HEADER_LEN,
  MAGIC: () => MAGIC,
  MAX_CHUNK_LEN: () => MAX_CHUNK_LEN,
  MAX_FRAME_LEN: () => MAX_FRAME_LEN,
  MAX_HAVE_IDS: () => MAX_HAVE_IDS,
  MAX_SEGMENT_ID_LEN: () => MAX_SEGMENT_ID_LEN,
  PROTOCOL_VERSION: () => PROTOCOL_VERSION,
  RECOMMENDED_CHUNK_LEN: () => RECOMMENDED_CHUNK_LEN,
  decodeFrame: () => decodeFrame,
  decodeFrameExact: () => decodeFrameExact,
  encodeFrame: () => encodeFrame,
  encodedLen: () => encodedLen,
  validateSegmentId: () => validateSegmentId
});
var PROTOCOL_VERSION = 1;
var MAGIC = Uint8Array.of(80, 50, 80, 65);
var HEADER_LEN = 5;
var MAX_SEGMENT_ID_LEN = 1024;
var MAX_CHUNK_LEN = 64 * 1024;
var MAX_HAVE_IDS = 512;
var MAX_FRAME_LEN = 7e4;
var RECOMMENDED_CHUNK_LEN = 16 * 1024;
var FRAME_TYPES = Object.freeze({
  handshake: 1,
  have: 2,
  request: 3,
  response: 4,
  chunk: 5,
  cancel: 6,
  absent: 7
});
var TYPE_NAMES = ["", "handshake", "have", "request", "response", "chunk", "cancel", "absent"];
var FrameError = class extends Error {
  /**
   * @param {string} kind the FrameError variant name of the vectors (e.g. "Truncated")
   * @param {string} message
   * @param {number} [needed] for Incomplete: how many more bytes are needed at least
   */
  constructor(kind, message, needed) {
    super(message);
    this.name = "FrameError";
    this.kind = kind;
    if (needed !== void 0) this.needed = needed;
  }
};
var utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
var utf8Encoder = new TextEncoder();
function validateSegmentId(id, byteLength) {
  const len = byteLength ?? utf8Encoder.encode(id).length;
  let reason = null;
  if (id.length === 0) reason = "empty";
  else if (len > MAX_SEGMENT_ID_LEN) reason = "too long";
  else if (id[0] !== "/") reason = "does not start with '/'";
  else if (id.includes("\0")) reason = "contains NUL";
  if (reason) throw new FrameError("InvalidSegmentId", `invalid segment id: ${reason}`);
}
function encodeFrame(frame) {
  const type = FRAME_TYPES[frame?.type];
  if (!type) throw new FrameError("UnknownType", `unknown frame type ${String(frame?.type)}`);
  const w = new Writer();
  switch (frame.type) {
    case "handshake":
      if (frame.version !== PROTOCOL_VERSION) {
        throw new FrameError("UnsupportedVersion", `unsupported protocol version ${frame.version}`);
      }
      w.bytes(MAGIC);
      w.u16(frame.version);
      w.str(frame.peer_id);
      break;
    case "have": {
      const segments = frame.segments;
      if (segments.length > MAX_HAVE_IDS) {
        throw new FrameError("TooManyIds", `too many segment ids: ${segments.length}`);
      }
      w.u16(segments.length);
      for (const s of segments) w.segment(s);
      break;
    }
    case "request":
      w.u32(frame.request_id);
      w.u64(frame.offset);
      w.segment(frame.segment);
      break;
    case "response":
      if (!(frame.digest instanceof Uint8Array) || frame.digest.length !== 32) {
        throw new FrameError("Truncated", "a response digest is 32 bytes");
      }
      w.u32(frame.request_id);
      w.u64(frame.size);
      w.u64(frame.offset);
      w.bytes(frame.digest);
      break;
    case "chunk":
      if (frame.data.length > MAX_CHUNK_LEN) {
        throw new FrameError("ChunkTooLarge", `chunk of ${frame.data.length} bytes exceeds the limit`);
      }
      w.u32(frame.request_id);
      w.u64(frame.offset);
      w.bytes(frame.data);
      break;
    case "cancel":
    case "absent":
      w.u32(frame.request_id);
      break;
  }
  const payload = w.finish();
  if (payload.length > MAX_FRAME_LEN) {
    throw new FrameError("TooLarge", `payload of ${payload.length} bytes exceeds ${MAX_FRAME_LEN}`);
  }
  const out = new Uint8Array(HEADER_LEN + payload.length);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, HEADER_LEN);
  return out;
}
function encodedLen(frame) {
  const str2 = (s) => 2 + utf8Encoder.encode(s).length;
  let payload;
  switch (frame.type) {
    case "handshake":
      payload = MAGIC.length + 2 + str2(frame.peer_id);
      break;
    case "have":
      payload = 2 + frame.segments.reduce((n, s) => n + str2(s), 0);
      break;
    case "request":
      payload = 4 + 8 + str2(frame.segment);
      break;
    case "response":
      payload = 4 + 8 + 8 + 32;
      break;
    case "chunk":
      payload = 4 + 8 + frame.data.length;
      break;
    case "cancel":
    case "absent":
      payload = 4;
      break;
    default:
      throw new FrameError("UnknownType", `unknown frame type ${String(frame?.type)}`);
  }
  return HEADER_LEN + payload;
}
var Writer = class {
  constructor() {
    this.parts = [];
    this.length = 0;
  }
  bytes(b) {
    this.parts.push(b);
    this.length += b.length;
  }
  fixed(n, set) {
    const b = new Uint8Array(n);
    set(new DataView(b.buffer));
    this.bytes(b);
  }
  u16(v) {
    checkUint(v, 65535, "u16");
    this.fixed(2, (d) => d.setUint16(0, v));
  }
  u32(v) {
    checkUint(v, 4294967295, "u32");
    this.fixed(4, (d) => d.setUint32(0, v));
  }
  u64(v) {
    const big = typeof v === "bigint" ? v : (checkUint(v, Number.MAX_SAFE_INTEGER, "u64"), BigInt(v));
    if (big < 0n || big > 0xffffffffffffffffn) throw new RangeError(`u64 out of range: ${v}`);
    this.fixed(8, (d) => d.setBigUint64(0, big));
  }
  str(s) {
    const b = utf8Encoder.encode(s);
    if (b.length > 65535) throw new RangeError(`string of ${b.length} bytes is too long`);
    this.u16(b.length);
    this.bytes(b);
  }
  segment(s) {
    const b = utf8Encoder.encode(s);
    validateSegmentId(s, b.length);
    this.u16(b.length);
    this.bytes(b);
  }
  finish() {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
};
function checkUint(v, max, what) {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${what} out of range: ${v}`);
}
function decodeFrame(buf) {
  if (buf.length === 0) throw incomplete(HEADER_LEN);
  const type = buf[0];
  if (type < FRAME_TYPES.handshake || type > FRAME_TYPES.absent) {
    throw new FrameError("UnknownType", `unknown frame type 0x${type.toString(16).padStart(2, "0")}`);
  }
  if (buf.length < HEADER_LEN) throw incomplete(HEADER_LEN - buf.length);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const len = view.getUint32(1);
  if (len > MAX_FRAME_LEN) {
    throw new FrameError("TooLarge", `declared payload length ${len} exceeds ${MAX_FRAME_LEN}`);
  }
  const total = HEADER_LEN + len;
  if (buf.length < total) throw incomplete(total - buf.length);
  const frame = decodePayload(type, buf.subarray(HEADER_LEN, total));
  return { frame, used: total };
}
function decodeFrameExact(buf) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  const { frame, used } = decodeFrame(bytes);
  if (used !== bytes.length) throw new FrameError("TrailingBytes", "bytes after the frame");
  return frame;
}
function incomplete(needed) {
  return new FrameError("Incomplete", `incomplete frame: ${needed} more bytes needed`, needed);
}
var Reader = class {
  /** @param {Uint8Array} buf */
  constructor(buf) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.at = 0;
  }
  need(n) {
    if (this.buf.length - this.at < n) throw new FrameError("Truncated", "payload shorter than its fields");
    const at = this.at;
    this.at += n;
    return at;
  }
  take(n) {
    const at = this.need(n);
    return this.buf.subarray(at, at + n);
  }
  u16() {
    return this.view.getUint16(this.need(2));
  }
  u32() {
    return this.view.getUint32(this.need(4));
  }
  u64() {
    const v = this.view.getBigUint64(this.need(8));
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  /** @returns {{text: string, byteLength: number}} */
  str() {
    const bytes = this.take(this.u16());
    try {
      return { text: utf8Decoder.decode(bytes), byteLength: bytes.length };
    } catch {
      throw new FrameError("InvalidUtf8", "string is not valid UTF-8");
    }
  }
  segment() {
    const { text, byteLength } = this.str();
    validateSegmentId(text, byteLength);
    return text;
  }
  rest() {
    const r = this.buf.subarray(this.at);
    this.at = this.buf.length;
    return r;
  }
  finish() {
    if (this.at !== this.buf.length) throw new FrameError("TrailingBytes", "bytes after the payload's fields");
  }
};
function decodePayload(type, payload) {
  const r = new Reader(payload);
  let frame;
  switch (TYPE_NAMES[type]) {
    case "handshake": {
      const magic = r.take(4);
      if (!MAGIC.every((b, i) => magic[i] === b)) throw new FrameError("BadMagic", "bad handshake magic");
      const version = r.u16();
      if (version !== PROTOCOL_VERSION) {
        throw new FrameError("UnsupportedVersion", `unsupported protocol version ${version}`);
      }
      frame = { type: "handshake", version, peer_id: r.str().text };
      break;
    }
    case "have": {
      const count = r.u16();
      if (count > MAX_HAVE_IDS) throw new FrameError("TooManyIds", `too many segment ids: ${count}`);
      const segments = [];
      for (let i = 0; i < count; i++) segments.push(r.segment());
      frame = { type: "have", segments };
      break;
    }
    case "request": {
      const request_id = r.u32();
      const offset = r.u64();
      frame = { type: "request", request_id, segment: r.segment(), offset };
      break;
    }
    case "response": {
      const request_id = r.u32();
      const size = r.u64();
      const offset = r.u64();
      frame = { type: "response", request_id, size, offset, digest: r.take(32).slice() };
      break;
    }
    case "chunk": {
      const request_id = r.u32();
      const offset = r.u64();
      const data = r.rest();
      if (data.length > MAX_CHUNK_LEN) {
        throw new FrameError("ChunkTooLarge", `chunk of ${data.length} bytes exceeds the limit`);
      }
      frame = { type: "chunk", request_id, offset, data };
      break;
    }
    case "cancel":
      frame = { type: "cancel", request_id: r.u32() };
      break;
    case "absent":
      frame = { type: "absent", request_id: r.u32() };
      break;
  }
  r.finish();
  return frame;
}

// src/master.js
function parseVariantUrls(text, baseUrl) {
  const urls = [];
  let expectUri = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith("#EXT-X-STREAM-INF")) {
      expectUri = true;
    } else if (line === "" || line.startsWith("#")) {
      continue;
    } else if (expectUri) {
      urls.push(new URL(line, baseUrl).href);
      expectUri = false;
    }
  }
  return urls;
}
function renditionOfUrl(variantUrls, levelUrl, baseUrl) {
  let abs;
  try {
    abs = new URL(levelUrl, baseUrl);
  } catch {
    return -1;
  }
  const exact = variantUrls.indexOf(abs.href);
  if (exact >= 0) return exact;
  const bare = (u) => {
    const x = new URL(u);
    x.search = "";
    x.hash = "";
    return x.href;
  };
  const target = bare(abs.href);
  return variantUrls.findIndex((u) => bare(u) === target);
}
async function fetchVariantUrls(url, fetchImpl = globalThis.fetch) {
  const resp = await fetchImpl(url, { credentials: "same-origin" });
  if (!resp.ok) throw new Error(`HTTP ${resp.status} for ${url}`);
  return parseVariantUrls(await resp.text(), resp.url || url);
}

// src/peer-link.js
var DATA_CHANNEL_LABEL = "p2pa/1";
var CONNECT_TIMEOUT_MS = 15e3;
var HANDSHAKE_TIMEOUT_MS = 5e3;
var BUFFER_HIGH = 256 * 1024;
var BUFFER_LOW = 64 * 1024;
var MAX_UPLOADS_PER_LINK = 8;
var MAX_EARLY_CANDIDATES = 64;
var PeerLink = class {
  /**
   * @param {object} o
   * @param {string} o.me           this peer's id
   * @param {string} o.remote       the other peer's id
   * @param {boolean} o.initiator   this side creates the channel and the offer
   * @param {RTCIceServer[]} o.iceServers
   * @param {typeof RTCPeerConnection} o.RTCPeerConnection
   * @param {LinkHooks} o.hooks
   */
  constructor({ me, remote, initiator, iceServers, RTCPeerConnection, hooks }) {
    this.me = me;
    this.remote = remote;
    this.initiator = initiator;
    this.hooks = hooks;
    this.state = "connecting";
    this.createdAt = globalThis.performance.now();
    this.has = /* @__PURE__ */ new Set();
    this.rate = null;
    this.inFlight = 0;
    this.uploads = /* @__PURE__ */ new Map();
    this.remoteDescriptionSet = false;
    this.earlyCandidates = [];
    this.timers = /* @__PURE__ */ new Set();
    this.dc = null;
    this.pc = new RTCPeerConnection({ iceServers });
    this.pc.onicecandidate = (e) => {
      if (e.candidate && this.state !== "closed") {
        this.hooks.signal({ kind: "candidate", candidate: e.candidate.toJSON() });
      }
    };
    this.pc.onconnectionstatechange = () => {
      const s = this.pc.connectionState;
      if (s === "failed" || s === "closed") this.close(`connection ${s}`);
    };
    this.pc.ondatachannel = (e) => {
      if (this.initiator || this.dc || e.channel.label !== DATA_CHANNEL_LABEL) {
        this.hooks.warn("unexpected-channel", this.remote, e.channel.label);
        e.channel.close();
        return;
      }
      this.useChannel(e.channel);
    };
    this.later(CONNECT_TIMEOUT_MS, () => {
      if (this.state !== "ready") this.close("connect timeout");
    });
  }
  /** Starts an initiator's negotiation: the channel and the offer. */
  async start() {
    try {
      this.useChannel(this.pc.createDataChannel(DATA_CHANNEL_LABEL, { ordered: true }));
      const offer = await this.pc.createOffer();
      if (this.state === "closed") return;
      await this.pc.setLocalDescription(offer);
      if (this.state === "closed") return;
      this.hooks.signal({ kind: "offer", sdp: this.pc.localDescription.sdp });
    } catch (e) {
      this.hooks.warn("offer-failed", this.remote, e?.message ?? e);
      this.close("offer failed");
    }
  }
  /** A relay payload from the remote peer: offer, answer or candidate. */
  async handleSignal(payload) {
    if (this.state === "closed") return;
    try {
      if (payload.kind === "offer") {
        if (this.initiator || this.remoteDescriptionSet) throw new Error("unexpected offer");
        await this.pc.setRemoteDescription({ type: "offer", sdp: payload.sdp });
        await this.remoteSet();
        const answer = await this.pc.createAnswer();
        if (this.state === "closed") return;
        await this.pc.setLocalDescription(answer);
        if (this.state === "closed") return;
        this.hooks.signal({ kind: "answer", sdp: this.pc.localDescription.sdp });
      } else if (payload.kind === "answer") {
        if (!this.initiator || this.remoteDescriptionSet) throw new Error("unexpected answer");
        await this.pc.setRemoteDescription({ type: "answer", sdp: payload.sdp });
        await this.remoteSet();
      } else if (payload.kind === "candidate") {
        if (!this.remoteDescriptionSet) {
          if (this.earlyCandidates.length >= MAX_EARLY_CANDIDATES) throw new Error("too many early candidates");
          this.earlyCandidates.push(payload.candidate);
        } else {
          await this.pc.addIceCandidate(payload.candidate);
        }
      }
    } catch (e) {
      if (this.state === "closed") return;
      this.hooks.warn("negotiation-failed", this.remote, payload.kind, e?.message ?? e);
      this.close("negotiation failed");
    }
  }
  async remoteSet() {
    this.remoteDescriptionSet = true;
    const early = this.earlyCandidates;
    this.earlyCandidates = [];
    for (const c of early) await this.pc.addIceCandidate(c);
  }
  useChannel(dc) {
    this.dc = dc;
    dc.binaryType = "arraybuffer";
    dc.bufferedAmountLowThreshold = BUFFER_LOW;
    dc.onopen = () => this.onOpen();
    dc.onclose = () => this.close("channel closed");
    dc.onerror = (e) => {
      if (this.state === "closed" || e?.error?.sctpCauseCode === 12) return;
      this.hooks.warn("channel-error", this.remote, e?.error?.message ?? "");
    };
    dc.onmessage = (e) => this.onMessage(e.data);
    dc.onbufferedamountlow = () => this.pump();
    if (dc.readyState === "open") this.onOpen();
  }
  onOpen() {
    if (this.state !== "connecting") return;
    this.state = "open";
    this.sendFrame({ type: "handshake", version: PROTOCOL_VERSION, peer_id: this.me });
    this.later(HANDSHAKE_TIMEOUT_MS, () => {
      if (this.state === "open") this.close("no handshake");
    });
  }
  onMessage(data) {
    if (this.state === "closed") return;
    if (!(data instanceof ArrayBuffer)) {
      this.hooks.warn("bad-frame", this.remote, "text message on the data channel");
      this.close("protocol error");
      return;
    }
    let frame;
    try {
      frame = decodeFrameExact(new Uint8Array(data));
    } catch (e) {
      this.hooks.warn("bad-frame", this.remote, e.kind ?? e.message);
      this.close("protocol error");
      return;
    }
    if (this.state === "open") {
      if (frame.type !== "handshake" || frame.peer_id !== this.remote) {
        this.hooks.warn("bad-handshake", this.remote, frame.type, frame.peer_id);
        this.close("bad handshake");
        return;
      }
      this.state = "ready";
      this.hooks.ready(this);
      return;
    }
    if (frame.type === "handshake") {
      this.hooks.warn("bad-frame", this.remote, "second handshake");
      this.close("protocol error");
      return;
    }
    this.hooks.frame(this, frame);
  }
  /** The remote side's SCTP max-message-size (bytes), for trimming a large Have. */
  get maxMessageSize() {
    const m = this.pc.sctp?.maxMessageSize;
    return typeof m === "number" && m > 0 ? m : 65536;
  }
  /** Encodes and sends a frame; false if the channel is not open (or the frame is invalid). */
  sendFrame(frame) {
    if (!this.dc || this.dc.readyState !== "open") return false;
    try {
      this.dc.send(encodeFrame(frame));
      return true;
    } catch (e) {
      this.hooks.warn("send-failed", this.remote, frame.type, e?.message ?? e);
      this.close("send failed");
      return false;
    }
  }
  // -------------------------------------------------------------------------------------------
  // Uploads: Response, then Chunks of 16 KiB, paced by the channel's buffer.
  /**
   * Starts answering a request with `bytes` from `offset` (offset ≤ bytes.length, checked by the
   * caller). False when this peer already has too many requests running here.
   * @param {number} requestId
   * @param {Uint8Array} bytes the whole segment
   * @param {Uint8Array} digest its SHA-256 (32 bytes)
   * @param {number} offset
   */
  startUpload(requestId, bytes, digest, offset) {
    if (!this.uploads.has(requestId) && this.uploads.size >= MAX_UPLOADS_PER_LINK) return false;
    this.uploads.delete(requestId);
    if (!this.sendFrame({ type: "response", request_id: requestId, size: bytes.length, offset, digest })) return true;
    this.uploads.set(requestId, { bytes, next: offset });
    this.pump();
    return true;
  }
  cancelUpload(requestId) {
    this.uploads.delete(requestId);
  }
  /** Sends chunks round-robin over the running uploads until the channel's buffer is full. */
  pump() {
    const dc = this.dc;
    while (this.uploads.size > 0 && dc && dc.readyState === "open" && dc.bufferedAmount < BUFFER_HIGH) {
      for (const [requestId, u] of this.uploads) {
        const end = Math.min(u.bytes.length, u.next + RECOMMENDED_CHUNK_LEN);
        const data = u.bytes.subarray(u.next, end);
        if (!this.sendFrame({ type: "chunk", request_id: requestId, offset: u.next, data })) return;
        this.hooks.uploaded(data.length);
        u.next = end;
        if (u.next >= u.bytes.length) this.uploads.delete(requestId);
        if (dc.bufferedAmount >= BUFFER_HIGH) break;
      }
    }
  }
  // -------------------------------------------------------------------------------------------
  later(ms, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }
  /** Closes everything; the `closed` hook runs once. */
  close(reason) {
    if (this.state === "closed") return;
    this.state = "closed";
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.uploads.clear();
    this.earlyCandidates = [];
    if (this.dc) {
      this.dc.onopen = this.dc.onclose = this.dc.onmessage = this.dc.onerror = this.dc.onbufferedamountlow = null;
      try {
        this.dc.close();
      } catch {
      }
    }
    this.pc.onicecandidate = this.pc.onconnectionstatechange = this.pc.ondatachannel = null;
    try {
      this.pc.close();
    } catch {
    }
    this.hooks.closed(this, reason);
  }
};

// src/util.js
var HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
function toHex(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]];
  return s;
}
function fromHex(hex) {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error(`not hex: ${hex.slice(0, 20)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
async function sha256Hex(bytes) {
  return toHex(new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes)));
}
function compareIds(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codeOrder(x) - codeOrder(y);
  }
  return a.length - b.length;
}
var codeOrder = (u) => u >= 55296 && u <= 57343 ? u + 8192 : u >= 57344 ? u - 2048 : u;
function concatBytes(parts, total = parts.reduce((n, p) => n + p.length, 0)) {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
var now = () => globalThis.performance.now();
var TokenBucket = class {
  constructor(rate, burst, at = now()) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.last = at;
  }
  refill(at) {
    this.tokens = Math.min(this.burst, this.tokens + Math.max(0, at - this.last) / 1e3 * this.rate);
    this.last = at;
  }
  take(at = now()) {
    this.refill(at);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
  /** Milliseconds until one token is there. */
  waitMs(at = now()) {
    this.refill(at);
    return this.tokens >= 1 ? 0 : (1 - this.tokens) / this.rate * 1e3;
  }
};
var Backoff = class {
  constructor(firstMs = 1e3, maxMs = 6e4) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.nextMs = firstMs;
  }
  /** The delay to wait now; the next one doubles. */
  next() {
    const d = this.nextMs;
    this.nextMs = Math.min(this.maxMs, this.nextMs * 2);
    return d;
  }
  reset() {
    this.nextMs = this.firstMs;
  }
};
var WarningLog = class {
  constructor(prefix = "[p2p]", onCount = () => {
  }) {
    this.prefix = prefix;
    this.onCount = onCount;
    this.byKind = /* @__PURE__ */ new Map();
    this.total = 0;
  }
  /** @param {string} kind a short stable label, e.g. "bad-frame" */
  warn(kind, ...details) {
    const n = (this.byKind.get(kind) ?? 0) + 1;
    if (this.byKind.size < 200 || this.byKind.has(kind)) this.byKind.set(kind, n);
    this.total++;
    this.onCount(this.total, kind);
    if (n <= 10 || n % 100 === 0) {
      console.warn(this.prefix, kind, ...details, n > 10 ? `(${n} times)` : "");
    }
  }
};
var BoundedMap = class extends Map {
  constructor(limit) {
    super();
    this.limit = limit;
  }
  set(key, value) {
    if (!this.has(key) && this.size >= this.limit) {
      const oldest = this.keys().next().value;
      this.delete(oldest);
    }
    return super.set(key, value);
  }
};

// src/scheduler.js
var MAX_IN_FLIGHT_PER_PEER = 2;
var WAIT_POLL_MS = 250;
var TRANSFER_POLL_MS = 200;
var MIN_RECHECK_MS = 10;
var HTTP_START_SLACK_MS = 100;
var MIN_STALL_MS = 500;
var STALL_CHUNK_BYTES = 64 * 1024;
var RATE_EWMA_ALPHA = 0.3;
var PEERS_PER_SEEDER = 20;
var FALLBACK_RATE = 2e6;
var FALLBACK_BUDGET = 0.5;
var DEFAULT_SCHEDULER_CONFIG = Object.freeze({
  /** Work must finish this much before the segment plays (ms). */
  safetyMarginMs: 1e3,
  /** A peer is used only if its expected finish is within this fraction of the time left. */
  peerTimeBudget: 0.5,
  /** Needs playing further away than this are prefetches: peers only, never HTTP (ms). */
  urgentWindowMs: 6e3,
  /** Rate assumed for a peer never measured (bytes/s). */
  defaultPeerRate: 2e6,
  /** HTTP rate estimate (bytes/s), to know when HTTP must start at the latest. */
  httpRate: 2e6,
  /** How many peers of a swarm fetch a new live segment over HTTP first at least (the seeders). */
  httpFirstCount: 1,
  /** Size assumed when the segment size is unknown (bytes). */
  defaultSegmentSize: 1e6
});
var Scheduler = class {
  /** @param {Partial<typeof DEFAULT_SCHEDULER_CONFIG>} [config] */
  constructor(config = {}) {
    this.config = { ...DEFAULT_SCHEDULER_CONFIG, ...config };
  }
  /** The latest instant HTTP must start to finish the whole segment before the deadline (ms). */
  httpStartBy(need) {
    return need.playsAt - this.config.safetyMarginMs - transferTime(this.size(need), this.httpRate());
  }
  /**
   * How many of a swarm of `swarm` peers (this one included) are HTTP-first seeders:
   * max(httpFirstCount, ⌊swarm / PEERS_PER_SEEDER⌋).
   * @param {number} swarm
   */
  seederCount(swarm) {
    return Math.max(this.config.httpFirstCount, Math.floor(swarm / PEERS_PER_SEEDER));
  }
  /**
   * Whether a peer at `seniority` is one of the swarm's HTTP-first seeders: fewer than
   * `seederCount(seniority.swarm)` peers are older than it.
   * @param {Seniority} seniority
   */
  isSeeder(seniority) {
    return seniority.older < this.seederCount(seniority.swarm);
  }
  /**
   * What to do for `need` at `now`.
   * @param {number} now
   * @param {string} me          this peer's id (never a candidate)
   * @param {Seniority} seniority where this peer stands in its swarm (for the seeder rule)
   * @param {Need} need
   * @param {PeerState[]} peers
   * @param {Transfer|null} transfer the running peer transfer for this need
   * @param {boolean} httpRunning   an HTTP fetch for it is running
   * @returns {Decision}
   */
  decide(now2, me, seniority, need, peers, transfer, httpRunning) {
    if (httpRunning) return { kind: "Continue", at: now2 + TRANSFER_POLL_MS };
    const f = this.frame(now2, need);
    return transfer ? this.decideTransfer(now2, need, peers, transfer, f) : this.decideIdle(now2, me, seniority, need, peers, f);
  }
  /** Rule 2: nothing is running for this need. */
  decideIdle(now2, me, seniority, need, peers, f) {
    const c = this.config;
    if (need.freshLive && f.urgent && this.isSeeder(seniority)) return { kind: "FetchHttp", from: 0 };
    const best = this.bestPeer(me, peers, f.size);
    if (best) {
      const withinBudget = best.expected <= f.left * this.budget();
      const leavesFallback = best.expected + f.httpTime <= f.left;
      if (withinBudget && leavesFallback) return { kind: "FetchFromPeer", peer: best.peer };
    }
    const someoneHas = peers.some((p) => p.peer !== me && p.has && p.healthy);
    if (!f.urgent) {
      if (!need.freshLive && !someoneHas) return { kind: "Skip" };
      return { kind: "WaitUntil", at: Math.min(now2 + WAIT_POLL_MS, need.playsAt - c.urgentWindowMs) };
    }
    const switchAt = this.httpStartBy(need) - HTTP_START_SLACK_MS;
    if (now2 >= switchAt || !need.freshLive && !someoneHas) return { kind: "FetchHttp", from: 0 };
    return { kind: "WaitUntil", at: Math.min(now2 + WAIT_POLL_MS, switchAt) };
  }
  /** Rule 3: a peer transfer is running for this need. */
  decideTransfer(now2, need, peers, t, f) {
    const state = peers.find((p) => p.peer === t.peer);
    const peerOk = Boolean(state?.healthy);
    const expectedRate = validRate(state?.rate) ?? this.defaultPeerRate();
    const done = t.offset + t.received;
    const remaining = Math.max(0, f.size - done);
    const elapsed = Math.max(0, now2 - t.started);
    const observedRate = elapsed === 0 || t.received === 0 ? expectedRate : validRate(t.received / (elapsed / 1e3)) ?? expectedRate;
    const projectedFinish = now2 + transferTime(remaining, observedRate);
    const stallAfter = Math.max(MIN_STALL_MS, 2 * transferTime(STALL_CHUNK_BYTES, expectedRate));
    const stalled = Math.max(0, now2 - t.lastProgress) > stallAfter;
    const failed = stalled || !peerOk;
    if (!f.urgent) {
      if (failed) return { kind: "Skip" };
      return { kind: "Continue", at: recheck(now2, need.playsAt - this.config.urgentWindowMs) };
    }
    if (failed) return { kind: "ReplaceWithHttp", from: done };
    const takeoverBy = f.deadline - transferTime(remaining, this.httpRate());
    if (projectedFinish > f.deadline) return { kind: "ReplaceWithHttp", from: done };
    if (projectedFinish > takeoverBy && now2 + HTTP_START_SLACK_MS >= takeoverBy) return { kind: "RaceHttp", from: done };
    return { kind: "Continue", at: recheck(now2, takeoverBy - HTTP_START_SLACK_MS) };
  }
  /** The usable-or-not best candidate: {peer, expected} (expected finish time in ms), or null. */
  bestPeer(me, peers, size) {
    let best = null;
    for (const p of peers) {
      if (p.peer === me || !p.has || !p.healthy || p.inFlight >= MAX_IN_FLIGHT_PER_PEER) continue;
      const expected = transferTime(size, validRate(p.rate) ?? this.defaultPeerRate());
      if (!best || expected < best.expected || expected === best.expected && compareIds(p.peer, best.peer) < 0) {
        best = { peer: p.peer, expected };
      }
    }
    return best;
  }
  frame(now2, need) {
    const size = this.size(need);
    const deadline = Math.max(need.playsAt - this.config.safetyMarginMs, now2);
    return {
      size,
      deadline,
      left: deadline - now2,
      httpTime: transferTime(size, this.httpRate()),
      urgent: Math.max(0, need.playsAt - now2) <= this.config.urgentWindowMs
    };
  }
  size(need) {
    return need.size ?? this.config.defaultSegmentSize;
  }
  httpRate() {
    return validRate(this.config.httpRate) ?? FALLBACK_RATE;
  }
  defaultPeerRate() {
    return validRate(this.config.defaultPeerRate) ?? FALLBACK_RATE;
  }
  budget() {
    const b = this.config.peerTimeBudget;
    return Number.isNaN(b) ? FALLBACK_BUDGET : Math.min(1, Math.max(0, b));
  }
};
function updateRate(old, bytes, elapsedMs) {
  if (!(elapsedMs > 0)) return null;
  const sample = bytes / (elapsedMs / 1e3);
  const prev = validRate(old);
  return prev === null ? sample : RATE_EWMA_ALPHA * sample + (1 - RATE_EWMA_ALPHA) * prev;
}
function validRate(rate) {
  return typeof rate === "number" && Number.isFinite(rate) && rate > 0 ? rate : null;
}
function transferTime(bytes, rate) {
  const ms = bytes / rate * 1e3;
  return Number.isFinite(ms) ? ms : Infinity;
}
function recheck(now2, target) {
  return Math.min(Math.max(target, now2 + MIN_RECHECK_MS), now2 + TRANSFER_POLL_MS);
}

// src/protocol/signal.js
var signal_exports = {};
__export(signal_exports, {
  ERROR_CODES: () => ERROR_CODES,
  MAX_LIST_LEN: () => MAX_LIST_LEN,
  MAX_PEER_ID_LEN: () => MAX_PEER_ID_LEN,
  MAX_SIGNAL_LEN: () => MAX_SIGNAL_LEN,
  SIGNAL_VERSION: () => SIGNAL_VERSION,
  SignalError: () => SignalError,
  decodeClient: () => decodeClient,
  decodeServer: () => decodeServer,
  encodeClient: () => encodeClient,
  encodeServer: () => encodeServer,
  utf8Length: () => utf8Length
});
var SIGNAL_VERSION = 1;
var MAX_SIGNAL_LEN = 64 * 1024;
var MAX_PEER_ID_LEN = 64;
var MAX_LIST_LEN = 256;
var ERROR_CODES = Object.freeze([
  "bad_message",
  "unsupported_version",
  "unauthorized",
  "not_found",
  "swarm_full",
  "too_many_swarms",
  "rate_limited",
  "message_too_large",
  "internal"
]);
var TRANSPORTS = ["quic", "webrtc"];
var U32_MAX = 4294967295;
var U64_MAX_AS_NUMBER = 2 ** 64;
var SignalError = class extends Error {
  /** @param {"TooLarge"|"Malformed"|"UnsupportedVersion"|"Invalid"} kind */
  constructor(kind, message) {
    super(message);
    this.name = "SignalError";
    this.kind = kind;
  }
};
var malformed = (msg) => new SignalError("Malformed", `malformed message: ${msg}`);
var invalid = (msg) => new SignalError("Invalid", `invalid message: ${msg}`);
var isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);
function str(v, at) {
  if (typeof v !== "string") throw malformed(`${at}: expected a string`);
  return v;
}
function bool(v, at) {
  if (typeof v !== "boolean") throw malformed(`${at}: expected a boolean`);
  return v;
}
var uint = (max) => (v, at) => {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
    throw malformed(`${at}: expected an unsigned integer`);
  }
  if (v > max) throw malformed(`${at}: ${v} is out of range`);
  return v;
};
var u32 = uint(U32_MAX);
var u64 = uint(Number.MAX_SAFE_INTEGER);
var oneOf = (names) => (v, at) => {
  if (!names.includes(v)) throw malformed(`${at}: unknown variant ${JSON.stringify(v)}`);
  return v;
};
var list = (item) => (v, at) => {
  if (!Array.isArray(v)) throw malformed(`${at}: expected an array`);
  return v.map((x, i) => item(x, `${at}[${i}]`));
};
function anyValue(v, at) {
  if (Array.isArray(v)) return v.map((x, i) => anyValue(x, `${at}[${i}]`));
  if (isObject(v)) {
    const out = {};
    for (const k of Object.keys(v).sort(byUtf8)) out[k] = anyValue(v[k], `${at}.${k}`);
    return out;
  }
  if (typeof v === "number" && !Number.isFinite(v)) throw malformed(`${at}: not a JSON number`);
  if (v === void 0 || typeof v === "function" || typeof v === "bigint" || typeof v === "symbol") {
    throw malformed(`${at}: not a JSON value`);
  }
  return v;
}
function byUtf8(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}
var REQUIRED = 0;
var OPTIONAL = 1;
var DEFAULT_ZERO = 2;
var OMIT_EMPTY = 3;
var struct = (fields, skip = []) => {
  const known = /* @__PURE__ */ new Set([...fields.map((f) => f[0]), ...skip]);
  return (v, at) => {
    if (!isObject(v)) throw malformed(`${at}: expected an object`);
    for (const k of Object.keys(v)) if (!known.has(k)) throw malformed(`${at}: unknown field \`${k}\``);
    const out = {};
    for (const [name, shape2, presence = REQUIRED] of fields) {
      const value = v[name];
      const where = at ? `${at}.${name}` : name;
      if (!(name in v) || value === null && presence === OPTIONAL) {
        if (presence === REQUIRED) throw malformed(`missing field \`${where}\``);
        if (presence === DEFAULT_ZERO) out[name] = 0;
        continue;
      }
      const shaped = shape2(value, where);
      if (presence === OMIT_EMPTY && shaped.length === 0) continue;
      out[name] = shaped;
    }
    return out;
  };
};
var quicAddress = struct([
  ["addr", str],
  ["fingerprint", str]
]);
var CLIENT_SHAPES = {
  join: struct(
    [
      ["v", u32],
      ["stream", str],
      ["rendition", u32],
      [
        "capabilities",
        struct([
          ["transports", list(oneOf(TRANSPORTS))],
          ["upload", bool]
        ])
      ],
      ["token", str, OPTIONAL],
      ["quic", quicAddress, OPTIONAL]
    ],
    ["type"]
  ),
  relay: struct(
    [
      ["to", str],
      ["payload", anyValue]
    ],
    ["type"]
  ),
  report: struct(
    [
      ["http_bytes", u64],
      ["p2p_bytes", u64],
      ["http_segments", u64],
      ["p2p_segments", u64],
      ["uploaded_bytes", u64],
      [
        "failures",
        struct([
          ["timeout", u64, DEFAULT_ZERO],
          ["mismatch", u64, DEFAULT_ZERO],
          ["absent", u64, DEFAULT_ZERO],
          ["disconnect", u64, DEFAULT_ZERO]
        ])
      ],
      [
        "peers",
        list(
          struct([
            ["peer_id", str],
            ["ok", u64],
            ["failed", u64],
            ["mismatch", u64],
            ["bytes", u64]
          ])
        ),
        OMIT_EMPTY
      ]
    ],
    ["type"]
  ),
  leave: struct([], ["type"])
};
var SERVER_SHAPES = {
  welcome: struct(
    [
      ["v", u32],
      ["peer_id", str],
      ["swarm", str],
      ["playlist", str],
      ["max_peers", u32]
    ],
    ["type"]
  ),
  peers: struct(
    [
      [
        "peers",
        list(
          struct([
            ["peer_id", str],
            ["region", str, OPTIONAL],
            ["transports", list(oneOf(TRANSPORTS))],
            ["quic", quicAddress, OPTIONAL]
          ])
        )
      ]
    ],
    ["type"]
  ),
  relay: struct(
    [
      ["from", str],
      ["payload", anyValue]
    ],
    ["type"]
  ),
  digests: struct(
    [
      ["playlist", str],
      [
        "segments",
        list(
          struct([
            ["id", str],
            ["sha256", str],
            ["size", u64]
          ])
        )
      ]
    ],
    ["type"]
  ),
  error: struct(
    [
      ["code", oneOf(ERROR_CODES)],
      ["message", str]
    ],
    ["type"]
  )
};
function checkVersion(v) {
  if (v !== SIGNAL_VERSION) throw new SignalError("UnsupportedVersion", `unsupported signalling version ${v}`);
}
function checkPath(field, path) {
  try {
    validateSegmentId(path);
  } catch (e) {
    throw invalid(`${field}: ${e.message}`);
  }
}
function checkPeerId(field, id) {
  const len = utf8Length(id);
  if (len === 0 || len > MAX_PEER_ID_LEN) {
    throw invalid(`${field}: peer id must be 1 to ${MAX_PEER_ID_LEN} bytes, got ${len}`);
  }
}
function checkList(field, len) {
  if (len > MAX_LIST_LEN) throw invalid(`${field}: ${len} entries, at most ${MAX_LIST_LEN}`);
}
var LOWER_HEX_64 = /^[0-9a-f]{64}$/;
function checkQuic(q) {
  if (!LOWER_HEX_64.test(q.fingerprint)) throw invalid("quic.fingerprint: not 64 lowercase hex digits");
}
var CLIENT_RULES = {
  join(m) {
    checkVersion(m.v);
    checkPath("stream", m.stream);
    if (m.quic) checkQuic(m.quic);
  },
  relay(m) {
    checkPeerId("to", m.to);
  },
  report(m) {
    const peers = m.peers ?? [];
    checkList("peers", peers.length);
    for (const p of peers) checkPeerId("peer_id", p.peer_id);
  },
  leave() {
  }
};
var SERVER_RULES = {
  welcome(m) {
    checkVersion(m.v);
    checkPeerId("peer_id", m.peer_id);
    checkPath("playlist", m.playlist);
  },
  peers(m) {
    checkList("peers", m.peers.length);
    for (const p of m.peers) {
      checkPeerId("peer_id", p.peer_id);
      if (p.quic) checkQuic(p.quic);
    }
  },
  relay(m) {
    checkPeerId("from", m.from);
  },
  digests(m) {
    checkPath("playlist", m.playlist);
    checkList("segments", m.segments.length);
    for (const d of m.segments) {
      checkPath("id", d.id);
      if (!LOWER_HEX_64.test(d.sha256)) throw invalid("sha256: not 64 lowercase hex digits");
    }
  },
  error() {
  }
};
function decodeClient(text) {
  return decode(text, CLIENT_SHAPES, CLIENT_RULES, "join");
}
function decodeServer(text) {
  return decode(text, SERVER_SHAPES, SERVER_RULES, "welcome");
}
function encodeClient(msg) {
  return encode(msg, CLIENT_SHAPES, CLIENT_RULES);
}
function encodeServer(msg) {
  return encode(msg, SERVER_SHAPES, SERVER_RULES);
}
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 128) n += 1;
    else if (c < 2048) n += 2;
    else if (c >= 55296 && c <= 56319 && i + 1 < s.length && (s.charCodeAt(i + 1) & 64512) === 56320) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
function decode(text, shapes, rules, versionedType) {
  if (typeof text !== "string") throw malformed("signalling messages are text");
  if (text.length > MAX_SIGNAL_LEN || utf8Length(text) > MAX_SIGNAL_LEN) {
    throw new SignalError("TooLarge", `message of ${utf8Length(text)} bytes exceeds ${MAX_SIGNAL_LEN}`);
  }
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw malformed(e.message);
  }
  const msg = shape(value, shapes, versionedType);
  rules[msg.type](msg);
  return msg;
}
function encode(msg, shapes, rules) {
  const canonical = shape(msg, shapes, null);
  rules[canonical.type](canonical);
  return JSON.stringify(canonical);
}
function shape(value, shapes, versionedType) {
  try {
    if (!isObject(value)) throw malformed("expected a JSON object");
    if (!("type" in value)) throw malformed("missing field `type`");
    const type = value.type;
    if (typeof type !== "string" || !Object.hasOwn(shapes, type)) {
      throw malformed(`unknown variant ${JSON.stringify(type)}`);
    }
    checkStrings(value, "message");
    return { type, ...shapes[type](value, "") };
  } catch (e) {
    const v = value?.v;
    const versioned = versionedType !== null && isObject(value) && value.type === versionedType && typeof v === "number" && Number.isInteger(v) && v >= 0 && v < U64_MAX_AS_NUMBER;
    if (versioned && v !== SIGNAL_VERSION) {
      throw new SignalError("UnsupportedVersion", `unsupported signalling version ${v}`);
    }
    throw e;
  }
}
function checkStrings(v, at) {
  if (typeof v === "string") {
    if (!isWellFormed(v)) throw malformed(`${at}: lone surrogate in a string`);
  } else if (Array.isArray(v)) {
    v.forEach((x) => checkStrings(x, at));
  } else if (isObject(v)) {
    for (const [k, x] of Object.entries(v)) {
      checkStrings(k, at);
      checkStrings(x, at);
    }
  }
}
var LONE_SURROGATE = new RegExp("[\\ud800-\\udbff](?![\\udc00-\\udfff])|(?<![\\ud800-\\udbff])[\\udc00-\\udfff]");
var isWellFormed = (s) => typeof s.isWellFormed === "function" ? s.isWellFormed() : !LONE_SURROGATE.test(s);

// src/signalling.js
var SIGNAL_RATE = 10;
var SIGNAL_BURST = 20;
var MAX_SIGNAL_QUEUE = 256;
var SignallingChannel = class {
  /**
   * @param {object} o
   * @param {string} o.url        ws:// or wss:// URL of /p2p/v1/ws?stream=…
   * @param {object} o.join       {stream, rendition, upload, token?}
   * @param {typeof WebSocket} o.WebSocket
   * @param {SignallingHooks} o.hooks
   */
  constructor({ url, join, WebSocket, hooks }) {
    this.hooks = hooks;
    this.queue = [];
    this.bucket = new TokenBucket(SIGNAL_RATE, SIGNAL_BURST);
    this.timer = null;
    this.closed = false;
    this.lastError = null;
    this.ws = new WebSocket(url);
    this.ws.onopen = () => {
      const msg = {
        type: "join",
        v: SIGNAL_VERSION,
        stream: join.stream,
        rendition: join.rendition,
        capabilities: { transports: ["webrtc"], upload: join.upload }
      };
      if (join.token) msg.token = join.token;
      this.send(msg);
    };
    this.ws.onmessage = (e) => {
      if (typeof e.data !== "string") {
        this.hooks.warn("bad-signal", "binary message from the tracker");
        return;
      }
      let msg;
      try {
        msg = decodeServer(e.data);
      } catch (err) {
        this.hooks.warn("bad-signal", err.kind ?? "", err.message);
        return;
      }
      if (msg.type === "error") this.lastError = msg.code;
      this.hooks.message(msg);
    };
    this.ws.onerror = () => {
    };
    this.ws.onclose = (e) => this.finish(e.code, e.reason);
  }
  get open() {
    return !this.closed && this.ws.readyState === 1;
  }
  /** Queues a client message under the pace. */
  send(msg) {
    if (this.closed) return;
    let text;
    try {
      text = encodeClient(msg);
    } catch (e) {
      this.hooks.warn("bad-outgoing-signal", msg?.type, e.message);
      return;
    }
    if (this.queue.length >= MAX_SIGNAL_QUEUE) {
      const i = this.queue.findIndex((t) => t.startsWith('{"type":"relay"'));
      this.queue.splice(i >= 0 ? i : 0, 1);
      this.hooks.warn("signal-queue-full", "dropped a queued message");
    }
    this.queue.push(text);
    this.flush();
  }
  /** Sends at once, outside the pace (the last report and leave when the page goes away). */
  sendNow(msg) {
    if (!this.open) return;
    try {
      this.ws.send(encodeClient(msg));
    } catch (e) {
      this.hooks.warn("bad-outgoing-signal", msg?.type, e.message);
    }
  }
  flush() {
    if (this.timer !== null || this.closed || this.ws.readyState !== 1) return;
    while (this.queue.length > 0) {
      if (!this.bucket.take()) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.flush();
        }, Math.max(1, this.bucket.waitMs()));
        return;
      }
      this.ws.send(this.queue.shift());
    }
  }
  /** Sends what is queued now, then `leave`, and closes. */
  leave(lastMessages = []) {
    if (this.closed) return;
    if (this.ws.readyState === 1) {
      for (const text of this.queue) this.ws.send(text);
      this.queue = [];
      for (const m of lastMessages) this.sendNow(m);
      this.sendNow({ type: "leave" });
    }
    this.close(1e3, "leave");
  }
  close(code = 1e3, reason = "") {
    if (this.closed) return;
    try {
      this.ws.close(code, reason);
    } catch {
    }
    this.finish(code, reason);
  }
  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
    this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
    this.hooks.closed({ code, reason, error: this.lastError });
  }
};

// src/store.js
var DEFAULT_MAX_STORE_BYTES = 64 * 1024 * 1024;
var SegmentStore = class {
  /** @param {number} [maxBytes] */
  constructor(maxBytes = DEFAULT_MAX_STORE_BYTES) {
    if (!(maxBytes >= 0)) throw new RangeError(`maxBytes must be a non-negative number, got ${maxBytes}`);
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.entries = /* @__PURE__ */ new Map();
    this.storedSeq = /* @__PURE__ */ new Map();
    this.seq = 0;
    this.onChange = null;
  }
  get size() {
    return this.entries.size;
  }
  has(id) {
    return this.entries.has(id);
  }
  /** The segment, marked as recently used; undefined if absent. */
  get(id) {
    const e = this.entries.get(id);
    if (e) {
      this.entries.delete(id);
      this.entries.set(id, e);
    }
    return e;
  }
  /** The segment without touching its recency (uploads should not keep old segments alive). */
  peek(id) {
    return this.entries.get(id);
  }
  /**
   * Stores a segment (replacing one with the same id) and evicts the least recently used ones until
   * the total fits. A segment larger than the whole bound is not stored; returns false then.
   * @param {StoredSegment} segment
   */
  put(segment) {
    const len = segment.bytes.length;
    if (len > this.maxBytes) return false;
    const old = this.entries.get(segment.id);
    if (old) {
      this.entries.delete(segment.id);
      this.bytes -= old.bytes.length;
    }
    this.entries.set(segment.id, segment);
    this.storedSeq.set(segment.id, ++this.seq);
    this.bytes += len;
    for (const [id, e] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(id);
      this.storedSeq.delete(id);
      this.bytes -= e.bytes.length;
    }
    this.onChange?.();
    return true;
  }
  delete(id) {
    const e = this.entries.get(id);
    if (!e) return false;
    this.entries.delete(id);
    this.storedSeq.delete(id);
    this.bytes -= e.bytes.length;
    this.onChange?.();
    return true;
  }
  /** Ids, most recently stored first (what a Have announces). */
  newestIds() {
    return [...this.storedSeq.entries()].sort((a, b) => b[1] - a[1]).map(([id]) => id);
  }
  clear() {
    this.entries.clear();
    this.storedSeq.clear();
    this.bytes = 0;
    this.onChange?.();
  }
};

// src/loader.js
function newLoadStats() {
  return {
    aborted: false,
    loaded: 0,
    retry: 0,
    total: 0,
    chunkCount: 0,
    bwEstimate: 0,
    loading: { start: 0, first: 0, end: 0 },
    parsing: { start: 0, end: 0 },
    buffering: { start: 0, first: 0, end: 0 }
  };
}
function loadingTimes(timing, deliveredAt) {
  const shift = Math.max(0, deliveredAt - timing.end);
  const first = Math.min(Math.max(timing.first, timing.start), timing.end);
  return { start: timing.start + shift, first: first + shift, end: timing.end + shift };
}
function createP2PLoader(Hls, engine) {
  const DefaultLoader = Hls.DefaultConfig.loader;
  return class P2PFragmentLoader {
    constructor(config) {
      this.hlsConfig = config;
      this.stats = newLoadStats();
      this.context = null;
      this.callbacks = null;
      this.request = null;
      this.delegate = null;
      this.timeout = null;
    }
    load(context, config, callbacks) {
      if (this.context) throw new Error("Loader can only be used once.");
      this.context = context;
      this.callbacks = callbacks;
      const frag = context.frag;
      const ranged = (context.rangeStart ?? 0) !== 0 || (context.rangeEnd ?? 0) !== 0;
      const engineCan = !engine.destroyed && (!frag?.type || frag.type === "main") && !context.part;
      if (ranged || !engineCan || !engine.segmentId(context.url)) {
        this.loadByDefault(context, config, callbacks);
        return;
      }
      this.stats.loading.start = now();
      const limit = config.loadPolicy?.maxLoadTimeMs ?? config.timeout;
      if (Number.isFinite(limit) && limit > 0) this.timeout = setTimeout(() => this.timedOut(), limit);
      this.request = engine.fetchSegment(context.url, {
        frag,
        onSuccess: (r) => this.succeed(r),
        onError: (e) => this.fail(e)
      });
    }
    /** hls.js's own loader, sharing this loader's stats object. */
    loadByDefault(context, config, callbacks) {
      const delegate = new DefaultLoader(this.hlsConfig);
      delegate.stats = this.stats;
      this.delegate = delegate;
      delegate.load(context, config, {
        ...callbacks,
        onSuccess: (response, stats, ctx, details) => {
          const data = response.data;
          engine.countHttpOnly(typeof data === "string" ? data.length : data?.byteLength ?? 0);
          callbacks.onSuccess(response, stats, ctx, details);
        }
      });
    }
    succeed(result) {
      const cb = this.finish();
      if (!cb) return;
      const s = this.stats;
      s.loading = { ...s.loading, ...loadingTimes(result.timing, now()) };
      s.loaded = s.total = result.data.byteLength;
      s.chunkCount = 1;
      cb.onSuccess({ url: this.context.url, data: result.data, code: 200 }, s, this.context, null);
    }
    fail(error) {
      const cb = this.finish();
      if (!cb) return;
      cb.onError({ code: error.code ?? 0, text: error.text ?? "segment fetch failed" }, this.context, null, this.stats);
    }
    timedOut() {
      this.timeout = null;
      this.request?.cancel();
      const cb = this.finish();
      cb?.onTimeout(this.stats, this.context, null);
    }
    /** Ends this load: the callbacks to call, or null if it already ended. */
    finish() {
      clearTimeout(this.timeout);
      this.timeout = null;
      this.request = null;
      const cb = this.callbacks;
      this.callbacks = null;
      return cb;
    }
    abort() {
      if (this.delegate) {
        this.delegate.abort();
        return;
      }
      const request = this.request;
      const cb = this.finish();
      if (!cb) return;
      this.stats.aborted = true;
      request?.cancel();
      cb.onAbort?.(this.stats, this.context, null);
    }
    destroy() {
      if (this.delegate) {
        this.delegate.destroy();
        this.delegate = null;
      }
      const request = this.request;
      this.finish();
      request?.cancel();
    }
    getCacheAge() {
      return this.delegate?.getCacheAge?.() ?? null;
    }
    getResponseHeader(name) {
      return this.delegate?.getResponseHeader?.(name) ?? null;
    }
  };
}

// src/playback.js
function watchStalls(media, { started = () => {
}, stalled = () => {
} }) {
  let playing = false;
  const onPlaying = () => {
    if (!playing) {
      playing = true;
      started();
    }
  };
  const onWaiting = () => {
    if (playing && !media.seeking) stalled();
  };
  media.addEventListener("playing", onPlaying);
  media.addEventListener("waiting", onWaiting);
  if (!media.paused && media.readyState > 2) onPlaying();
  return () => {
    media.removeEventListener("playing", onPlaying);
    media.removeEventListener("waiting", onWaiting);
  };
}

// src/engine.js
var DEFAULT_MAX_PEERS = 8;
var DEFAULT_REPORT_INTERVAL_MS = 2e3;
var HAVE_INTERVAL_MS = 1e3;
var LINK_FALLBACK_MS = 5e3;
var LINK_RETRY_FIRST_MS = 5e3;
var LINK_RETRY_MAX_MS = 6e4;
var ABANDONED_GRACE_MS = 3e3;
var MAX_SEGMENT_BYTES = 256 * 1024 * 1024;
var MAX_DIGESTS = 4096;
var MAX_FIRST_SEEN = 4096;
var MAX_REPORT_PEERS = 256;
var MAX_PEER_DELTAS = 1024;
var NO_RECONNECT = /* @__PURE__ */ new Set(["unsupported_version", "unauthorized"]);
var FAILURE_CAUSES = ["timeout", "mismatch", "absent", "disconnect"];
var P2PEngine = class {
  /** @param {P2PEngineOptions} options */
  constructor(options = {}) {
    const env = globalThis;
    const gateway = options.gateway ?? env.location?.origin;
    if (!gateway) throw new Error("P2PEngine: options.gateway is required outside a page");
    this.gatewayOrigin = new URL(gateway).origin;
    this.streamPath = options.stream ? new URL(options.stream, this.gatewayOrigin).pathname : null;
    this.options = {
      iceServers: options.iceServers ?? [],
      maxStoreBytes: options.maxStoreBytes ?? DEFAULT_MAX_STORE_BYTES,
      upload: options.upload ?? true,
      maxPeers: options.maxPeers ?? DEFAULT_MAX_PEERS,
      token: options.token ?? null,
      reportIntervalMs: options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS
    };
    this.impl = {
      WebSocket: options.WebSocket ?? env.WebSocket,
      RTCPeerConnection: options.RTCPeerConnection ?? env.RTCPeerConnection,
      fetch: options.fetch ?? env.fetch?.bind(env)
    };
    this.scheduler = new Scheduler(options.scheduler);
    this.httpRate = null;
    this.traceLog = options.trace ? [] : null;
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
      warnings: 0
    };
    this.log = new WarningLog("[p2p]", (n) => this.stats.warnings = n);
    this.store = new SegmentStore(this.options.maxStoreBytes);
    this.store.onChange = () => {
      this.stats.storedSegments = this.store.size;
      this.stats.storedBytes = this.store.bytes;
      this.haveChanged();
    };
    this.digests = new BoundedMap(MAX_DIGESTS);
    this.firstSeen = new BoundedMap(MAX_FIRST_SEEN);
    this.live = false;
    this.targetDurationMs = 6e3;
    this.needs = /* @__PURE__ */ new Map();
    this.requests = /* @__PURE__ */ new Map();
    this.nextRequestId = 1;
    this.banned = new BoundedMap(1024);
    this.reported = { httpBytes: 0, p2pBytes: 0, httpSegments: 0, p2pSegments: 0, uploadedBytes: 0, failures: { ...this.stats.failures } };
    this.peerDeltas = /* @__PURE__ */ new Map();
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
    env.addEventListener?.("pagehide", this.onPageHide);
    env.addEventListener?.("pageshow", this.onPageShow);
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
    if (this.destroyed) throw new Error("P2PEngine: destroyed");
    this.detach();
    this.hls = hls;
    const E = hls.constructor?.Events ?? this.Hls?.Events;
    if (!E) throw new Error("P2PEngine.attach: cannot find Hls.Events (pass Hls to createLoaderClass first)");
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
        this.log.warn("master-playlist", url, e?.message ?? e);
        await new Promise((r) => setTimeout(r, 1e3 * 2 ** attempt));
      }
    }
  }
  /** hls.js level index → rendition index (position in the master playlist), by URL. */
  mapLevels() {
    const hls = this.hls;
    if (!hls || !this.variantUrls || !hls.levels) return;
    const base = hls.url ?? new URL(this.streamPath, this.gatewayOrigin).href;
    this.levelRendition = hls.levels.map((level2) => {
      const url = level2.uri ?? (Array.isArray(level2.url) ? level2.url[0] : level2.url);
      const r = url ? renditionOfUrl(this.variantUrls, url, base) : -1;
      if (r < 0) this.log.warn("level-not-in-stream", url);
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
    if (details.targetduration > 0) this.targetDurationMs = details.targetduration * 1e3;
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
      started: () => this.playbackStarted = true,
      stalled: () => {
        this.stats.stalls++;
        const b = media.buffered;
        this.trace("stall", { at: media.currentTime, buffered: b.length ? [b.start(0), b.end(b.length - 1)] : [] });
      }
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
    return t + Math.max(0, frag.start - media.currentTime) / rate * 1e3;
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
      onError
    };
    const handle = { cancel: () => this.dropWaiter(id, waiter) };
    const stored = this.store.get(id);
    if (this.traceLog) {
      const t = now();
      this.trace("fetch", { id, in: Math.round(waiter.playsAt(t) - t), level: frag?.level, stored: Boolean(stored) });
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
      const p2p = Boolean(conn?.peerId) && rendition === conn.rendition && frag?.sn !== "initSegment";
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
    if (this.traceLog.length >= 2e3) this.traceLog.splice(0, 500);
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
    const me = conn?.peerId ?? "";
    const links = conn ? [...conn.links.values()].filter((l) => l.state === "ready") : [];
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
          healthy: !this.banned.has(l.remote)
        })),
        need.transfer && {
          peer: need.transfer.peer,
          started: need.transfer.started,
          received: need.transfer.received,
          offset: 0,
          lastProgress: need.transfer.lastProgress
        },
        need.http !== null
      );
      if (this.traceLog && decision.kind !== "Continue" && decision.kind !== "WaitUntil") {
        this.trace("decide", { id: need.id, d: decision.kind, from: decision.from, peer: decision.peer, in: Math.round(playsAt - t), fresh: this.isFreshLive(need.id, t), seeder, digest: Boolean(digest) });
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
      case "FetchFromPeer": {
        const link = conn?.links.get(d.peer);
        if (link) this.requestFromPeer(need, link, t);
        return t + TRANSFER_POLL_MS;
      }
      case "FetchHttp":
      case "RaceHttp":
        this.startHttp(need, this.prefixLength(need) >= d.from ? d.from : 0);
        return t + TRANSFER_POLL_MS;
      case "ReplaceWithHttp": {
        let from = d.from;
        const tr = need.transfer;
        if (tr) {
          if (from > 0 && tr.received >= from) {
            need.partial = { peer: tr.peer, bytes: tr.buffer.slice(0, from), start: tr.started, first: tr.first };
          } else {
            from = 0;
          }
          this.failTransfer(need, "timeout");
        } else if (this.prefixLength(need) < from) {
          from = 0;
        }
        this.startHttp(need, from);
        return t + TRANSFER_POLL_MS;
      }
      case "WaitUntil":
      case "Continue":
        return d.at;
      case "Skip":
        if (need.transfer) this.failTransfer(need, "timeout");
        this.startHttp(need, 0);
        return t + TRANSFER_POLL_MS;
      default:
        this.log.warn("bad-decision", d);
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
    if (need.transfer && !need.transfer.verifying) this.failTransfer(need, "timeout");
    need.http?.controller.abort();
    need.http = null;
    this.needs.delete(need.id);
    return Infinity;
  }
  isFreshLive(id, t) {
    const seen = this.firstSeen.get(id);
    return this.live && seen !== void 0 && t - seen < 2 * this.targetDurationMs;
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
    this.nextRequestId = this.nextRequestId >= 4294967295 ? 1 : this.nextRequestId + 1;
    if (!link.sendFrame({ type: "request", request_id: requestId, segment: need.id, offset: 0 })) return;
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
      verifying: false
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
    if (!need) return;
    const tr = need.transfer;
    const d = this.digests.get(need.id);
    const claimOk = tr.size === null && d && toHex(f.digest) === d.sha256 && f.size === d.size && f.offset === 0 && f.size <= MAX_SEGMENT_BYTES;
    if (!claimOk) {
      link.sendFrame({ type: "cancel", request_id: f.request_id });
      this.caughtLying(need, link, "response differs from the gateway digest");
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
      link.sendFrame({ type: "cancel", request_id: f.request_id });
      this.caughtLying(need, link, "chunk out of order or past the size");
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
      this.log.warn("sha256-failed", e?.message ?? e);
      sha = null;
    }
    if (this.destroyed || need.transfer !== tr) return;
    const d = this.digests.get(need.id);
    if (!d || sha !== d.sha256 || tr.buffer.length !== d.size) {
      this.caughtLying(need, tr.link, "segment does not match the gateway digest");
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
    this.accept(need, tr.buffer, sha, "p2p", { start: tr.started, first: tr.first || tr.end, end: tr.end });
  }
  /** Ends the running transfer of `need` because of `cause` (and tells the peer when it may still send). */
  failTransfer(need, cause) {
    const tr = need.transfer;
    if (!tr) return;
    need.transfer = null;
    this.trace("fail", { id: need.id, cause, peer: tr.peer, received: tr.received, size: tr.size, ms: Math.round(now() - tr.started) });
    this.requests.delete(tr.requestId);
    if (cause === "timeout" && !tr.verifying) tr.link.sendFrame({ type: "cancel", request_id: tr.requestId });
    this.stats.failures[cause]++;
    const delta = this.peerDelta(tr.peer);
    if (cause === "mismatch") delta.mismatch++;
    else delta.failed++;
    tr.link.inFlight = Math.max(0, tr.link.inFlight - 1);
    if (cause === "absent") tr.link.has.delete(need.id);
    this.kick();
  }
  /** A peer sent data that does not match the gateway's digest: never used, the peer is dropped. */
  caughtLying(need, link, why) {
    this.log.warn("mismatch", link.remote, need.id, why);
    this.stats.rejectedSegments++;
    this.failTransfer(need, "mismatch");
    this.ban(link.remote);
  }
  ban(peer) {
    this.banned.set(peer, true);
    this.conn?.links.get(peer)?.close("banned");
  }
  /** This peer's outcome counters for the next report (at most MAX_PEER_DELTAS peers wait). */
  peerDelta(peer) {
    let d = this.peerDeltas.get(peer);
    if (!d) {
      d = { peer_id: peer, ok: 0, failed: 0, mismatch: 0, bytes: 0 };
      if (this.peerDeltas.size >= MAX_PEER_DELTAS) {
        this.log.warn("report-backlog", "per-peer outcome dropped", peer);
        return d;
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
      (e) => this.onHttpFailed(need, e)
    );
  }
  /**
   * GET url (from byte `from` with a Range header when > 0). Resolves to {bytes, from, timing}
   * where `from` is 0 when the server sent the whole body; rejects with {status} on HTTP errors.
   */
  async httpGet(url, from, signal) {
    const start = now();
    const init = { signal, credentials: "same-origin" };
    if (from > 0) init.headers = { Range: `bytes=${from}-` };
    const resp = await this.impl.fetch(url, init);
    if (!resp.ok) throw httpError(resp.status, `HTTP ${resp.status} ${resp.statusText ?? ""}`.trim());
    let got = 0;
    if (from > 0 && resp.status === 206) {
      const m = /^bytes (\d+)-/.exec(resp.headers.get("content-range") ?? "");
      if (!m || Number(m[1]) !== from) throw httpError(0, `unexpected Content-Range for bytes=${from}-`);
      got = from;
    }
    let first = 0;
    const parts = [];
    let total = 0;
    if (resp.body?.getReader) {
      const reader = resp.body.getReader();
      for (; ; ) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!first) first = now();
        parts.push(value);
        total += value.length;
        if (total > MAX_SEGMENT_BYTES) {
          reader.cancel().catch(() => {
          });
          throw httpError(0, "segment too large");
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
    if (this.needs.get(need.id) !== need) return;
    this.stats.httpBytes += r.bytes.length;
    this.httpRate = updateRate(this.httpRate, r.bytes.length, r.timing.end - r.timing.start) ?? this.httpRate;
    let prefix = null;
    if (r.from > 0) {
      const tr = need.transfer;
      if (tr && !tr.verifying && tr.received >= r.from) {
        prefix = { peer: tr.peer, bytes: tr.buffer.subarray(0, r.from), start: tr.started, first: tr.first };
      } else if (need.partial && need.partial.bytes.length === r.from) {
        prefix = need.partial;
      }
      if (!prefix) {
        this.log.warn("range-without-prefix", need.id);
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
      this.log.warn("sha256-failed", e?.message ?? e);
      need.http = null;
      this.failNeed(need, { code: 0, text: "cannot hash the segment" });
      return;
    }
    if (this.needs.get(need.id) !== need) return;
    need.http = null;
    const d = this.digests.get(need.id);
    if (prefix) {
      if (!d || sha !== d.sha256 || whole.length !== d.size) {
        this.log.warn("mismatch", prefix.peer, need.id, "peer prefix failed the check");
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
      this.log.warn("http-digest-differs", need.id);
    }
    this.stats.httpSegments++;
    const timing = prefix ? { start: Math.min(prefix.start, r.timing.start), first: prefix.first || r.timing.first, end: r.timing.end } : r.timing;
    this.accept(need, whole, sha, "http", timing);
  }
  onHttpFailed(need, e) {
    if (this.needs.get(need.id) !== need || e?.name === "AbortError") return;
    need.http = null;
    this.log.warn("http-failed", need.id, e?.message ?? e);
    if (need.transfer) {
      this.kick();
      return;
    }
    this.failNeed(need, { code: e?.status ?? 0, text: e?.message ?? String(e) });
  }
  failNeed(need, error) {
    this.needs.delete(need.id);
    need.http?.controller.abort();
    if (need.transfer) this.failTransfer(need, "timeout");
    for (const w of need.waiters) w.onError(error);
    need.waiters.clear();
  }
  /** Takes a whole segment (verified, or from the gateway): stores it and hands it to the waiters. */
  accept(need, bytes, sha256, source, timing) {
    this.needs.delete(need.id);
    need.http?.controller.abort();
    need.http = null;
    if (need.transfer) this.failTransfer(need, "timeout");
    const entry = { id: need.id, bytes, sha256, source, timing };
    this.trace("accept", { id: need.id, source, waiters: need.waiters.size, took: Math.round(timing.end - timing.start) });
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
    if (!this.suspended && !this.noReconnect) this.connect();
  }
  connect() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (!this.impl.WebSocket) {
      this.log.warn("no-websocket", "P2P disabled");
      return;
    }
    const ws = new URL(`/p2p/v1/ws?stream=${encodeURIComponent(this.streamPath)}`, this.gatewayOrigin);
    ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
    const conn = {
      rendition: this.rendition,
      channel: null,
      peerId: null,
      swarm: null,
      maxPeers: this.options.maxPeers,
      /** The latest peers list: id → PeerInfo, best first. */
      listed: /* @__PURE__ */ new Map(),
      /** Ids in the first peers message after welcome: the senior peers. */
      older: null,
      listedSince: /* @__PURE__ */ new Map(),
      links: /* @__PURE__ */ new Map(),
      retry: /* @__PURE__ */ new Map(),
      /** Segment ids whose digests came on this connection (this rendition): what Have may list. */
      digestIds: new BoundedMap(MAX_DIGESTS),
      timers: []
    };
    conn.channel = new SignallingChannel({
      url: ws.href,
      join: { stream: this.streamPath, rendition: this.rendition, upload: this.options.upload, token: this.options.token },
      WebSocket: this.impl.WebSocket,
      hooks: {
        message: (m) => this.onSignal(conn, m),
        closed: (info) => this.onSignalClosed(conn, info),
        warn: (...a) => this.log.warn(...a)
      }
    });
    this.conn = conn;
  }
  onSignal(conn, m) {
    if (conn !== this.conn) return;
    switch (m.type) {
      case "welcome":
        if (conn.peerId) {
          this.log.warn("bad-signal", "second welcome");
          return;
        }
        conn.peerId = m.peer_id;
        conn.swarm = m.swarm;
        conn.maxPeers = Math.min(this.options.maxPeers, m.max_peers);
        this.stats.peerId = m.peer_id;
        this.stats.swarm = m.swarm;
        this.backoff.reset();
        conn.timers.push(setInterval(() => this.sendReport(conn), this.options.reportIntervalMs));
        conn.timers.push(setInterval(() => this.connectPeers(conn), 1e3));
        return;
      case "digests":
        for (const s of m.segments) {
          this.digests.set(s.id, { sha256: s.sha256, size: s.size });
          conn.digestIds.set(s.id, true);
        }
        this.haveChanged();
        this.kick();
        return;
      case "peers": {
        if (!conn.peerId) {
          this.log.warn("bad-signal", "peers before welcome");
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
      case "relay":
        this.onRelay(conn, m.from, m.payload);
        return;
      case "error":
        this.log.warn("tracker-error", m.code, m.message);
        if (NO_RECONNECT.has(m.code)) this.noReconnect = true;
        return;
    }
  }
  onSignalClosed(conn, info) {
    if (conn !== this.conn) return;
    this.conn = null;
    this.closeConn(conn, "signalling closed");
    if (this.destroyed || this.suspended || this.rendition === null) return;
    if (this.noReconnect || NO_RECONNECT.has(info.error)) {
      this.noReconnect = true;
      this.log.warn("signalling-closed", `no reconnect after ${info.error}`);
      return;
    }
    const delay = this.backoff.next();
    this.log.warn("signalling-closed", info.code, info.reason || info.error || "", `reconnecting in ${delay} ms`);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }
  /** Leaves the current swarm on purpose: last report, `leave`, links closed. */
  leaveSwarm() {
    const conn = this.conn;
    if (!conn) return;
    this.conn = null;
    const last = conn.peerId && conn.channel.open ? [this.reportMessage()] : [];
    conn.channel.leave(last);
    this.closeConn(conn, "leave");
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
      type: "report",
      http_bytes: s.httpBytes - r.httpBytes,
      p2p_bytes: s.p2pBytes - r.p2pBytes,
      http_segments: s.httpSegments - r.httpSegments,
      p2p_segments: s.p2pSegments - r.p2pSegments,
      uploaded_bytes: s.uploadedBytes - r.uploadedBytes,
      failures
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
      failures: { ...s.failures }
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
      if (conn.links.has(id) || this.banned.has(id) || !p.transports.includes("webrtc")) continue;
      if ((conn.retry.get(id)?.at ?? 0) > t) continue;
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
          if (conn === this.conn) conn.channel.send({ type: "relay", to: remote, payload });
        },
        ready: (l) => this.onLinkReady(conn, l),
        frame: (l, f) => this.onFrame(conn, l, f),
        closed: (l, reason) => this.onLinkClosed(conn, l, reason),
        uploaded: (n) => this.stats.uploadedBytes += n,
        warn: (...a) => this.log.warn(...a)
      }
    });
    conn.links.set(remote, link);
    return link;
  }
  onRelay(conn, from, payload) {
    if (!conn.peerId || this.banned.has(from)) return;
    const kind = payload?.kind;
    const valid = (kind === "offer" || kind === "answer" ? typeof payload.sdp === "string" : kind === "candidate" && typeof payload.candidate === "object" && payload.candidate !== null) && from !== conn.peerId;
    if (!valid) {
      this.log.warn("bad-relay", from, kind);
      return;
    }
    let link = conn.links.get(from);
    if (kind === "offer") {
      if (link) {
        if (link.initiator && conn.peerId > from) return;
        link.close("replaced by a new offer");
      } else if (conn.links.size >= conn.maxPeers || !this.impl.RTCPeerConnection) {
        return;
      }
      link = this.createLink(conn, from, false);
    }
    link?.handleSignal(payload);
  }
  onLinkReady(conn, link) {
    if (conn !== this.conn) return;
    conn.retry.delete(link.remote);
    this.stats.peers = [...conn.links.values()].filter((l) => l.state === "ready").length;
    link.sendFrame(this.haveFrame(conn, link));
    this.kick();
  }
  onLinkClosed(conn, link, reason) {
    if (conn.links.get(link.remote) === link) conn.links.delete(link.remote);
    for (const need of this.needs.values()) {
      if (need.transfer?.link === link && !need.transfer.verifying) this.failTransfer(need, "disconnect");
    }
    if (conn !== this.conn) return;
    this.stats.peers = [...conn.links.values()].filter((l) => l.state === "ready").length;
    if (!this.banned.has(link.remote) && reason !== "replaced by a new offer") {
      const prev = conn.retry.get(link.remote)?.delay ?? 0;
      const delay = prev ? Math.min(prev * 2, LINK_RETRY_MAX_MS) : LINK_RETRY_FIRST_MS;
      conn.retry.set(link.remote, { at: now() + delay, delay });
    }
    this.kick();
  }
  onFrame(conn, link, f) {
    switch (f.type) {
      case "have":
        link.has = new Set(f.segments);
        this.kick();
        return;
      case "request":
        this.serve(link, f);
        return;
      case "cancel":
        link.cancelUpload(f.request_id);
        return;
      case "absent": {
        const need = this.transferNeed(link, f.request_id);
        if (need) this.failTransfer(need, "absent");
        return;
      }
      case "response":
        this.onResponse(link, f);
        return;
      case "chunk":
        this.onChunk(link, f);
        return;
    }
  }
  /** Answers a peer's request from the store: Response and chunks, or Absent. */
  serve(link, f) {
    const stored = this.options.upload ? this.store.peek(f.segment) : void 0;
    const ok = stored && typeof f.offset === "number" && f.offset <= stored.bytes.length;
    if (!ok || !link.startUpload(f.request_id, stored.bytes, fromHex(stored.sha256), f.offset)) {
      link.sendFrame({ type: "absent", request_id: f.request_id });
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
        if (link.state === "ready") link.sendFrame(this.haveFrame(conn, link));
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
    return { type: "have", segments };
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
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
    globalThis.removeEventListener?.("pageshow", this.onPageShow);
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
};
function newNeed(id, url, httpOnly) {
  return {
    id,
    url,
    /** No peers for this one (another rendition, not joined, init section): HTTP at once. */
    httpOnly,
    waiters: /* @__PURE__ */ new Set(),
    transfer: null,
    http: null,
    /** Peer bytes kept when HTTP took over: {peer, bytes, start, first}. */
    partial: null,
    abandonedAt: null
  };
}
function deliverable(entry) {
  return { data: entry.bytes.slice().buffer, source: entry.source, timing: { ...entry.timing } };
}
function httpError(status, message) {
  const e = new Error(message);
  e.status = status;
  return e;
}
export {
  DEFAULT_MAX_PEERS,
  DEFAULT_MAX_STORE_BYTES,
  DEFAULT_REPORT_INTERVAL_MS,
  DEFAULT_SCHEDULER_CONFIG,
  P2PEngine,
  Scheduler,
  SegmentStore,
  createP2PLoader,
  fetchVariantUrls,
  frame_exports as frame,
  loadingTimes,
  newLoadStats,
  parseVariantUrls,
  renditionOfUrl,
  signal_exports as signal,
  updateRate,
  watchStalls
};
