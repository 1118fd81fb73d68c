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

// src/protocol/signal.js
var signal_exports = {};
__export(signal_exports, {
  ERROR_CODES: () => ERROR_CODES,
  MAX_LIST_LEN: () => MAX_LIST_LEN,
  MAX_PEER_ID_LEN: () => MAX_PEER_ID_LEN,
  MAX_RECEIPTS: () => MAX_RECEIPTS,
  MAX_SIGNAL_LEN: () => MAX_SIGNAL_LEN,
  RECEIPT_ALGS: () => RECEIPT_ALGS,
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
var MAX_RECEIPTS = 64;
var ERROR_CODES = Object.freeze([
  "bad_message",
  "unsupported_version",
  "unauthorized",
  "not_found",
  "swarm_full",
  "too_many_swarms",
  "rate_limited",
  "message_too_large",
  "unavailable",
  "internal"
]);
var TRANSPORTS = ["quic", "webrtc"];
var RECEIPT_ALGS = Object.freeze(["ed25519", "p256"]);
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
var receipt = struct([
  ["alg", oneOf(RECEIPT_ALGS)],
  ["uploader", str],
  ["receiver", str],
  ["swarm", str],
  ["segment", str],
  ["sha256", str],
  ["bytes", u64],
  ["time", u64],
  ["nonce", str],
  ["sig", str]
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
          ["upload", bool],
          ["upload_rate", u64, OPTIONAL]
        ])
      ],
      ["token", str, OPTIONAL],
      ["quic", quicAddress, OPTIONAL],
      ["key", str, OPTIONAL]
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
      ],
      ["receipts", list(receipt), OMIT_EMPTY],
      ["upload_rate", u64, OPTIONAL]
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
            ["quic", quicAddress, OPTIONAL],
            ["key", str, OPTIONAL],
            ["upload_rate", u64, OPTIONAL]
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
      ["message", str],
      // With swarm_full: the shard to join instead (`&shard=` on the WebSocket URL).
      ["shard", u32, OPTIONAL]
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
var PUBLIC_KEY = /^(?:[0-9a-f]{64}|[0-9a-f]{130})$/;
function checkKey(field, key) {
  if (!PUBLIC_KEY.test(key)) throw invalid(`${field}: not a public key (64 or 130 lowercase hex digits)`);
}
var CLIENT_RULES = {
  join(m) {
    checkVersion(m.v);
    checkPath("stream", m.stream);
    if (m.quic) checkQuic(m.quic);
    if (m.key !== void 0) checkKey("key", m.key);
  },
  relay(m) {
    checkPeerId("to", m.to);
  },
  report(m) {
    const peers = m.peers ?? [];
    checkList("peers", peers.length);
    const receipts = m.receipts ?? [];
    if (receipts.length > MAX_RECEIPTS) {
      throw invalid(`receipts: ${receipts.length} entries, at most ${MAX_RECEIPTS}`);
    }
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
      if (p.key !== void 0) checkKey("key", p.key);
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
function gatewayPath(url, base, origin = null) {
  try {
    const u = new URL(url, base);
    return u.origin === (origin ?? new URL(base).origin) ? u.pathname : null;
  } catch {
    return null;
  }
}
function rangeId(path, start, end) {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end <= start) return null;
  return `${path}#bytes=${start}-${end - 1}`;
}
function splitRangeId(id) {
  const m = /^([^]*)#bytes=(\d+)-(\d+)$/.exec(id);
  if (m) {
    const first = Number(m[2]);
    const last = Number(m[3]);
    if (Number.isSafeInteger(first) && Number.isSafeInteger(last) && last >= first) {
      return { path: m[1], range: { offset: first, length: last - first + 1 } };
    }
  }
  return { path: id, range: null };
}
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
  constructor(firstMs = 1e3, maxMs = 3e4) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.nextMs = firstMs;
  }
  /** The delay to wait now (`random` in [0, 1) picks it in [d/2, d)); the next one doubles. */
  next(random = Math.random()) {
    const d = this.nextMs;
    this.nextMs = Math.min(this.maxMs, this.nextMs * 2);
    return Math.floor(d * (0.5 + 0.5 * Math.min(Math.max(random, 0), 1)));
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
var FNV_OFFSET = 0xcbf29ce484222325n;
var FNV_PRIME = 0x100000001b3n;
var U64 = (1n << 64n) - 1n;
var utf8 = new TextEncoder();
function pairRank(me, peer) {
  let h = FNV_OFFSET;
  const eat = (b) => {
    h = (h ^ BigInt(b)) * FNV_PRIME & U64;
  };
  for (const b of utf8.encode(me)) eat(b);
  eat(0);
  for (const b of utf8.encode(peer)) eat(b);
  return h;
}
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
    const takeoverBy = f.deadline - transferTime(remaining, this.httpRate());
    const switchAt = this.httpStartBy(need) - HTTP_START_SLACK_MS;
    if (failed) return now2 < switchAt ? { kind: "DropPeer" } : { kind: "ReplaceWithHttp", from: done };
    if (projectedFinish > f.deadline) {
      return now2 < switchAt ? { kind: "Continue", at: recheck(now2, switchAt) } : { kind: "ReplaceWithHttp", from: done };
    }
    if (projectedFinish > takeoverBy && now2 + HTTP_START_SLACK_MS >= takeoverBy) return { kind: "RaceHttp", from: done };
    return { kind: "Continue", at: recheck(now2, takeoverBy - HTTP_START_SLACK_MS) };
  }
  /** The usable-or-not best candidate: {peer, expected} (expected finish time in ms), or null. */
  bestPeer(me, peers, size) {
    let best = null;
    for (const p of peers) {
      if (p.peer === me || !p.has || !p.healthy || p.inFlight >= MAX_IN_FLIGHT_PER_PEER) continue;
      const expected = transferTime(size, validRate(p.rate) ?? this.defaultPeerRate());
      if (!best || expected < best.expected) {
        best = { peer: p.peer, expected };
      } else if (expected === best.expected) {
        const rank = pairRank(me, p.peer);
        const bestRank = pairRank(me, best.peer);
        if (rank < bestRank || rank === bestRank && compareIds(p.peer, best.peer) < 0) best = { peer: p.peer, expected };
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

// src/core.js
var HAVE_INTERVAL_MS = 100;
var ABANDONED_GRACE_MS = 3e3;
var MAX_SEGMENT_BYTES = 256 * 1024 * 1024;
var MAX_DIGESTS = 4096;
var MAX_FIRST_SEEN = 4096;
var MAX_REPORT_PEERS = 256;
var LINK_FALLBACK_MS = 5e3;
var LINK_RETRY_FIRST_MS = 5e3;
var LINK_RETRY_MAX_MS = 6e4;
var CONNECT_TIMEOUT_MS = 15e3;
var CONNECT_CHECK_MS = 1e3;
var LINK_WINDOW = 64 * 1024;
var MAX_WAITING_UPLOADS = 0;
var DRAIN_SLACK = 32 * 1024;
var BUSY_BACKOFF_MS = 250;
function busyBackoffMs(streak) {
  return BUSY_BACKOFF_MS * 2 ** Math.min(streak, 5);
}
var FAILURE_CAUSES = ["timeout", "mismatch", "absent", "disconnect"];
var LOWER_HEX_642 = /^[0-9a-f]{64}$/;
var NO_BYTES = new Uint8Array(0);
var DEFAULT_CORE_CONFIG = Object.freeze({
  mode: "driven",
  transports: ["webrtc"],
  upload: true,
  uploadRate: 2e7,
  privacyFloor: 2,
  window: MAX_HAVE_IDS,
  maxStoreBytes: 64 * 1024 * 1024,
  maxLinks: 8,
  reportEveryMs: 2e3,
  scheduler: DEFAULT_SCHEDULER_CONFIG,
  receipts: false,
  prefetchAnnounced: true,
  test: Object.freeze({ lie: false, slowUpload: null })
});
var MAX_ANNOUNCED = 3;
var NodeCore = class {
  /**
   * A node that joined as `me` at `now` (a browser that has no id yet passes ''; the first
   * `welcome` names it).
   * @param {Partial<CoreConfig>} config
   * @param {string} me
   * @param {number} now
   */
  constructor(config, me, now2) {
    const c = { ...DEFAULT_CORE_CONFIG, ...config, test: { ...DEFAULT_CORE_CONFIG.test, ...config.test } };
    if (c.mode !== "driven") {
      throw new Error(`NodeCore: mode ${JSON.stringify(c.mode)} is not supported here; the browser's core is driven by its player ("driven")`);
    }
    this.config = c;
    this.scheduler = new Scheduler(c.scheduler);
    this.me = me;
    this.started = now2;
    this.outputs = [];
    this.stopped = false;
    this.listed = [];
    this.listedSince = /* @__PURE__ */ new Map();
    this.elders = null;
    this.maxPeers = null;
    this.links = /* @__PURE__ */ new Map();
    this.linkOf = /* @__PURE__ */ new Map();
    this.connecting = /* @__PURE__ */ new Map();
    this.retry = /* @__PURE__ */ new Map();
    this.banned = /* @__PURE__ */ new Set();
    this.prefixStrikes = /* @__PURE__ */ new Set();
    this.nextConnectCheck = null;
    this.digests = new Bounded(MAX_DIGESTS);
    this.firstSeen = new Bounded(MAX_FIRST_SEEN);
    this.live = true;
    this.targetMs = 2e3;
    this.store = new Store(c.window, c.maxStoreBytes);
    this.work = /* @__PURE__ */ new Map();
    this.waiting = /* @__PURE__ */ new Map();
    this.waiterSegment = /* @__PURE__ */ new Map();
    this.announced = [];
    this.lastNeed = null;
    this.requests = /* @__PURE__ */ new Map();
    this.nextRequest = 1;
    this.jobs = /* @__PURE__ */ new Map();
    this.nextTicket = 1;
    this.httpRate = null;
    this.nextWork = now2;
    this.dirty = false;
    this.uploads = [];
    const rate = c.test.slowUpload == null ? c.uploadRate : Math.min(c.test.slowUpload, c.uploadRate);
    this.bucket = new TokenBucket2(rate, Math.max(rate / 2, RECOMMENDED_CHUNK_LEN), now2);
    this.nextUpload = null;
    this.haveDirty = false;
    this.lastHave = null;
    this.summary = newCounters();
    this.mismatches = 0;
    this.peersDroppedForLying = [];
    this.identityMismatches = 0;
    this.reported = newCounters();
    this.peerDeltas = /* @__PURE__ */ new Map();
    this.nextReport = now2 + c.reportEveryMs;
    this.swarm = "";
    this.peerKeys = /* @__PURE__ */ new Map();
    this.receivedFrom = /* @__PURE__ */ new Map();
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
      activeUploads: this.uploads.length
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
  handle(input, now2) {
    if (this.stopped) return;
    switch (input.type) {
      case "signal":
        this.onSignal(input.message, now2);
        break;
      case "signal_closed":
        break;
      // HTTP only until a new welcome
      case "link_up":
        this.onLinkUp(input.link, input.peer, input.initiated, input.max_frame, input.fingerprint ?? null, now2);
        break;
      case "link_down":
        if (this.links.has(input.link)) this.forgetLink(input.link, "disconnect", now2);
        break;
      case "connect_failed":
        if (this.connecting.delete(input.peer)) this.backOff(input.peer, now2);
        break;
      case "frame":
        this.onFrame(input.link, input.frame, now2);
        break;
      case "written": {
        const l = this.links.get(input.link);
        if (l) l.unacked = Math.max(0, l.unacked - input.bytes);
        break;
      }
      case "playlist":
        this.onPlaylist(input, now2);
        break;
      case "http":
        this.onHttp(input.id, input.from, input, now2);
        break;
      case "verified":
        this.onVerified(input.ticket, input.sha256, now2);
        break;
      case "need":
        this.onNeed(input.waiter, input.id, input.plays_at, input.p2p, now2);
        break;
      case "abandon":
        this.onAbandon(input.waiter, now2);
        break;
      case "stop":
        this.stop();
        return;
      default:
        throw new Error(`NodeCore: unknown input ${JSON.stringify(input?.type)}`);
    }
    this.step(now2);
  }
  /** Called at (or after) `pollTimeout()`. */
  handleTimeout(now2) {
    if (this.stopped) return;
    if (now2 >= this.nextReport) {
      this.sendReport();
      this.nextReport = now2 + this.config.reportEveryMs;
    }
    if (this.nextConnectCheck !== null && now2 >= this.nextConnectCheck) this.connectPeers(now2);
    this.step(now2);
  }
  /** Runs what may have become due: the scheduler, uploads, Have frames. */
  step(now2) {
    if (this.dirty || this.nextWork === null || now2 >= this.nextWork) {
      this.dirty = false;
      this.runWork(now2);
    }
    this.pumpUploads(now2);
    this.flushHave(now2);
  }
  // =============================================================================================
  // Signalling
  onSignal(m, now2) {
    switch (m.type) {
      case "digests":
        for (const e of m.segments) {
          if (LOWER_HEX_642.test(e.sha256)) this.digests.insert(e.id, { digest: e.sha256, size: e.size });
        }
        this.haveDirty = true;
        this.dirty = true;
        if (m.segments.length === 1) this.announce(m.segments[0].id, now2);
        break;
      case "peers":
        this.onPeers(m.peers, now2);
        break;
      case "welcome":
        this.maxPeers = m.max_peers;
        this.swarm = m.swarm;
        if (m.peer_id !== this.me) this.rejoined(m.peer_id, now2);
        break;
      default:
        break;
    }
  }
  /**
   * A new tracker session (a reconnect, or another rendition's swarm) under a new peer id: the old
   * swarm is gone (its links close, transfers on them fall back to HTTP); what the node waits for,
   * holds and knows about segments stays.
   */
  rejoined(peerId, now2) {
    for (const link of this.linkIds()) this.dropLink(link, "disconnect", "left the swarm", now2);
    this.me = peerId;
    this.listed = [];
    this.listedSince.clear();
    this.elders = null;
    this.connecting.clear();
    this.retry.clear();
    this.banned.clear();
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
  onPlaylist(input, now2) {
    const playlist = input.ok;
    if (!playlist) return;
    this.live = !playlist.ended;
    this.targetMs = playlist.target_duration_ms;
    for (const s of playlist.segments) {
      if (!this.firstSeen.contains(s.id)) this.firstSeen.insert(s.id, now2);
    }
    this.dirty = true;
  }
  // =============================================================================================
  // Needs
  /** A digest announced one newly cached segment (config.prefetchAnnounced). */
  announce(id, now2) {
    const playing = this.lastNeed !== null && Math.max(0, now2 - this.lastNeed) < this.targetMs * 2;
    if (!this.config.prefetchAnnounced || !playing || this.firstSeen.contains(id) || this.store.contains(id)) return;
    this.firstSeen.insert(id, now2);
    this.announced.push([id, now2]);
    while (this.announced.length > MAX_ANNOUNCED) this.dropUnwanted(this.announced.shift()[0]);
    this.dirty = true;
  }
  /** Stops the work on a segment nobody waits for (an announcement that expired or was pushed out). */
  dropUnwanted(id) {
    const waiting = this.waiting.get(id);
    if (waiting && waiting.waiters.size > 0) return;
    this.failTransfer(id, "timeout");
    this.cancelHttp(id);
    this.work.delete(id);
  }
  /**
   * The announced segments to work on now: a seeder's over HTTP at once (null), the others' as
   * prefetches, which the scheduler never sends to HTTP. An announcement ends when the player asks
   * for the segment, when it is stored, or after two target durations.
   */
  announcedAgenda(now2) {
    const expired = this.announced.filter(([, at]) => Math.max(0, now2 - at) >= this.targetMs * 2).map(([id]) => id);
    for (const id of expired) this.dropUnwanted(id);
    this.announced = this.announced.filter(([id]) => {
      const waiting = this.waiting.get(id);
      return !expired.includes(id) && !this.store.contains(id) && !(waiting && waiting.waiters.size > 0);
    });
    const seeder = this.schedulerNow().isSeeder(this.seniority());
    const prefetch = now2 + this.scheduler.config.urgentWindowMs + WAIT_POLL_MS;
    return this.announced.map(([id]) => [id, seeder ? null : prefetch]);
  }
  onNeed(waiter, id, playsAt, p2p, now2) {
    this.lastNeed = now2;
    this.announced = this.announced.filter(([a]) => a !== id);
    const previous = this.waiterSegment.get(waiter);
    if (previous !== void 0 && previous !== id) {
      this.onAbandon(waiter, now2);
      this.waiterSegment.delete(waiter);
    }
    const stored = this.store.get(id);
    if (stored) {
      const delivery = { bytes: stored.bytes, source: stored.source, started: now2 - stored.took, finished: now2, from_store: true };
      this.store.touch(id);
      this.outputs.push({ type: "deliver", waiters: [waiter], id, ok: delivery });
      return;
    }
    if (!this.firstSeen.contains(id)) this.firstSeen.insert(id, now2);
    this.waiterSegment.set(waiter, id);
    let waiting = this.waiting.get(id);
    if (!waiting) {
      waiting = { waiters: /* @__PURE__ */ new Map(), httpOnly: false, abandonedAt: null };
      this.waiting.set(id, waiting);
    }
    if (waiting.waiters.size === 0 && waiting.abandonedAt === null) waiting.httpOnly = !p2p;
    waiting.waiters.set(waiter, playsAt);
    waiting.abandonedAt = null;
    if (waiting.httpOnly) this.startHttp(id, 0, now2);
    else this.dirty = true;
  }
  onAbandon(waiter, now2) {
    const id = this.waiterSegment.get(waiter);
    if (id === void 0) return;
    this.waiterSegment.delete(waiter);
    const waiting = this.waiting.get(id);
    if (waiting) {
      waiting.waiters.delete(waiter);
      if (waiting.waiters.size === 0) {
        waiting.abandonedAt = now2;
        this.dirty = true;
      }
    }
  }
  /** Segments to decide on now, by id, with when each plays (null: over HTTP at once). */
  agenda(now2) {
    const out = [];
    for (const id of sortedKeys(this.waiting)) {
      const w = this.waiting.get(id);
      if (!w.httpOnly && w.waiters.size > 0) out.push([id, Math.min(...w.waiters.values())]);
    }
    if (this.announced.length > 0) out.push(...this.announcedAgenda(now2));
    return out;
  }
  /** Runs the scheduler over every segment on the agenda. */
  runWork(now2) {
    let next = Math.min(now2 + WAIT_POLL_MS, this.tendAbandoned(now2));
    const seniority = this.seniority();
    const scheduler = this.schedulerNow();
    for (const [id, playsAt] of this.agenda(now2)) {
      if (this.store.contains(id)) continue;
      const work = this.workOf(id);
      if (work.transfer?.verifying) continue;
      if (playsAt === null) {
        this.startHttp(id, 0, now2);
        continue;
      }
      const digest = this.digests.get(id);
      const seen = this.firstSeen.get(id);
      const freshLive = this.live && seen !== void 0 && Math.max(0, now2 - seen) < this.targetMs * 2;
      const need = { segment: id, size: digest ? digest.size : null, playsAt, freshLive };
      const peers = this.linkIds().map((link) => {
        const l = this.links.get(link);
        return {
          peer: l.peer,
          // Only verifiable bytes are worth asking for.
          has: digest !== void 0 && l.has.has(id),
          rate: l.rate,
          // A busy peer is not a candidate for a new request until its backoff ends.
          inFlight: l.busyUntil > now2 ? Math.max(l.inFlight, MAX_IN_FLIGHT_PER_PEER) : l.inFlight,
          healthy: !this.banned.has(l.peer)
        };
      });
      const t = work.transfer;
      const transfer = t && { peer: t.peer, started: t.started, received: t.received, offset: 0, lastProgress: t.lastProgress };
      const decision = scheduler.decide(now2, this.me, seniority, need, peers, transfer, work.http !== null);
      next = Math.min(next, this.execute(id, decision, now2));
    }
    this.nextWork = Math.max(next, now2 + MIN_RECHECK_MS);
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
  execute(id, d, now2) {
    switch (d.kind) {
      case "FetchFromPeer":
        this.requestFromPeer(id, d.peer, now2);
        break;
      case "FetchHttp":
      case "RaceHttp":
        this.startHttp(id, this.prefixLen(id) >= d.from ? d.from : 0, now2);
        break;
      case "ReplaceWithHttp": {
        let from = d.from;
        const running = this.work.get(id)?.transfer;
        if (running) {
          if (from > 0 && running.received >= from) {
            this.work.get(id).partial = { peer: running.peer, bytes: running.data.slice(0, from) };
          } else {
            from = 0;
          }
          this.failTransfer(id, "timeout");
        } else if (this.prefixLen(id) < from) {
          from = 0;
        }
        this.startHttp(id, from, now2);
        break;
      }
      case "WaitUntil":
      case "Continue":
        return d.at;
      case "DropPeer": {
        const link = this.work.get(id)?.transfer?.link;
        this.failTransfer(id, "timeout");
        const l = link === void 0 ? void 0 : this.links.get(link);
        if (l) l.busyUntil = now2 + BUSY_BACKOFF_MS;
        return now2;
      }
      case "Skip": {
        this.failTransfer(id, "timeout");
        const waiting = this.waiting.get(id);
        if (waiting && waiting.waiters.size > 0) {
          this.startHttp(id, 0, now2);
          break;
        }
        this.announced = this.announced.filter(([a]) => a !== id);
        return now2 + WAIT_POLL_MS;
      }
      default:
        throw new Error(`NodeCore: unknown decision ${d.kind}`);
    }
    return now2 + TRANSFER_POLL_MS;
  }
  /**
   * Needs nobody waits for: their running work may finish (into the store) for a short while.
   * Returns when to look again.
   */
  tendAbandoned(now2) {
    let next = now2 + WAIT_POLL_MS;
    const abandoned = [];
    for (const id of sortedKeys(this.waiting)) {
      const w = this.waiting.get(id);
      if (w.waiters.size === 0) abandoned.push([id, w.abandonedAt ?? now2]);
    }
    for (const [id, since] of abandoned) {
      const w = this.work.get(id);
      const running = Boolean(w && (w.transfer || w.http));
      const until = since + ABANDONED_GRACE_MS;
      if (running && now2 < until) {
        next = Math.min(next, until);
        continue;
      }
      this.waiting.delete(id);
      if (running) {
        this.failTransfer(id, "timeout");
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
      this.outputs.push({ type: "http_cancel", id });
    }
  }
  /** Bytes of `id` already in hand from a peer (a running transfer or a kept prefix). */
  prefixLen(id) {
    const w = this.work.get(id);
    if (!w) return 0;
    if (w.transfer) return w.transfer.received;
    return w.partial ? w.partial.bytes.length : 0;
  }
  startHttp(id, from, now2) {
    const work = this.workOf(id);
    if (work.http) return;
    if (from === 0) work.partial = null;
    work.http = { from, started: now2, verifying: false };
    this.outputs.push({ type: "http_get", id, from });
  }
  /**
   * Takes a whole segment (verified, or from the gateway): stores it, hands it to its callers,
   * counts it, tells the peers.
   */
  accept(id, bytes, digest, source, started, finished) {
    this.failTransfer(id, "timeout");
    this.cancelHttp(id);
    this.work.delete(id);
    const waiting = this.waiting.get(id);
    this.waiting.delete(id);
    if (waiting) {
      const waiters = [...waiting.waiters.keys()].sort((a, b) => a - b);
      for (const w of waiters) this.waiterSegment.delete(w);
      if (waiters.length > 0) {
        this.outputs.push({ type: "deliver", waiters, id, ok: { bytes, source, started, finished, from_store: false } });
      }
    }
    this.store.put(id, bytes, digest, source, Math.max(0, finished - started));
    this.summary.segments++;
    if (source === "p2p") this.summary.p2p_segments++;
    else this.summary.http_segments++;
    this.haveDirty = true;
    this.dirty = true;
  }
  /** A caller's HTTP fetch failed and no peer can deliver: the callers get the error. */
  failWaiters(id, error) {
    const waiting = this.waiting.get(id);
    if (!waiting) return;
    this.waiting.delete(id);
    this.failTransfer(id, "timeout");
    this.work.delete(id);
    const waiters = [...waiting.waiters.keys()].sort((a, b) => a - b);
    for (const w of waiters) this.waiterSegment.delete(w);
    if (waiters.length > 0) this.outputs.push({ type: "deliver", waiters, id, err: error });
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
      type: "report",
      http_bytes: Math.max(0, s.http_bytes - r.http_bytes),
      p2p_bytes: Math.max(0, s.p2p_bytes - r.p2p_bytes),
      http_segments: Math.max(0, s.http_segments - r.http_segments),
      p2p_segments: Math.max(0, s.p2p_segments - r.p2p_segments),
      uploaded_bytes: Math.max(0, s.uploaded_bytes - r.uploaded_bytes),
      failures
    };
    if (peers.length > 0) report.peers = peers;
    this.reported = { ...s, failures: { ...s.failures } };
    this.outputs.push({ type: "signal", message: report });
  }
  /**
   * `peer` sent `bytes` of segment `id` that verified against `sha256`: counted by the peer's key,
   * and (with receipts on) a receipt to sign.
   */
  deliveredBy(peer, id, sha256, bytes) {
    const uploader = this.peerKeys.get(peer);
    if (uploader === void 0 || bytes === 0) return;
    this.receivedFrom.set(uploader, (this.receivedFrom.get(uploader) ?? 0) + bytes);
    if (!this.config.receipts || this.swarm === "") return;
    this.outputs.push({ type: "delivered", uploader, swarm: this.swarm, segment: id, sha256, bytes });
  }
  /** Leave: last report, `leave`, every link closed, HTTP fetches cancelled. Final. */
  stop() {
    this.sendReport();
    this.outputs.push({ type: "signal", message: { type: "leave" } });
    for (const link of this.linkIds()) this.outputs.push({ type: "close", link, reason: "node stopped" });
    this.links.clear();
    this.linkOf.clear();
    this.uploads = [];
    for (const id of sortedKeys(this.work)) {
      if (this.work.get(id).http) this.outputs.push({ type: "http_cancel", id });
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
  onPeers(peers, now2) {
    const listed = peers.filter((p) => p.peer_id !== this.me);
    if (this.elders === null) this.elders = new Set(listed.map((p) => p.peer_id));
    for (const p of listed) {
      if (!this.listedSince.has(p.peer_id)) this.listedSince.set(p.peer_id, now2);
      if (p.key !== void 0) this.peerKeys.set(p.peer_id, p.key);
    }
    const ids = new Set(listed.map((p) => p.peer_id));
    for (const id of [...this.listedSince.keys()]) if (!ids.has(id)) this.listedSince.delete(id);
    this.listed = listed;
    this.connectPeers(now2);
    this.dirty = true;
  }
  /** Links a transport both sides have: QUIC first. */
  commonTransport(peer) {
    const ours = this.config.transports;
    if (ours.includes("quic") && peer.transports.includes("quic") && peer.quic) return "quic";
    return ours.includes("webrtc") && peer.transports.includes("webrtc") ? "webrtc" : null;
  }
  linkCap() {
    return this.maxPeers === null ? this.config.maxLinks : Math.min(this.maxPeers, this.config.maxLinks);
  }
  /** Opens links to listed peers, up to the cap, and plans the next look. */
  connectPeers(now2) {
    for (const [peer, since] of [...this.connecting]) {
      if (!(Math.max(0, now2 - since) < CONNECT_TIMEOUT_MS)) this.connecting.delete(peer);
    }
    let waitingForSomething = false;
    for (const peer of [...this.listed]) {
      if (this.links.size + this.connecting.size >= this.linkCap()) break;
      const id = peer.peer_id;
      if (this.linkOf.has(id) || this.connecting.has(id) || this.banned.has(id)) continue;
      const transport = this.commonTransport(peer);
      if (transport === null) continue;
      const retry = this.retry.get(id);
      if (retry && retry.at > now2) {
        waitingForSomething = true;
        continue;
      }
      const since = this.listedSince.get(id) ?? now2;
      const ours = compareIds(this.me, id) > 0 || Math.max(0, now2 - since) >= LINK_FALLBACK_MS;
      if (!ours) {
        waitingForSomething = true;
        continue;
      }
      this.connecting.set(id, now2);
      this.outputs.push({ type: "connect", peer: id, transport, quic: transport === "quic" ? peer.quic ?? null : null });
    }
    const pending = waitingForSomething || this.connecting.size > 0;
    this.nextConnectCheck = pending ? now2 + CONNECT_CHECK_MS : null;
  }
  /** The next try of `peer` waits (doubling). */
  backOff(peer, now2) {
    const r = this.retry.get(peer);
    const delay = r ? Math.min(r.delay * 2, LINK_RETRY_MAX_MS) : LINK_RETRY_FIRST_MS;
    this.retry.set(peer, { at: now2 + delay, delay });
    if (this.nextConnectCheck === null) this.nextConnectCheck = now2 + CONNECT_CHECK_MS;
  }
  onLinkUp(link, peer, initiated, maxFrame, fingerprint, now2) {
    this.connecting.delete(peer);
    if (this.banned.has(peer)) {
      this.outputs.push({ type: "close", link, reason: "banned" });
      return;
    }
    const listed = this.listed.find((p) => p.peer_id === peer);
    if (fingerprint !== null && listed !== void 0) {
      const published = listed.quic?.fingerprint;
      if (published === void 0 || normalFingerprint(published) !== normalFingerprint(fingerprint)) {
        this.identityMismatches++;
        this.outputs.push({ type: "close", link, reason: "identity" });
        return;
      }
    }
    const existing = this.linkOf.get(peer);
    if (existing !== void 0) {
      const iAmGreater = compareIds(this.me, peer) > 0;
      const newWins = initiated === iAmGreater;
      const oldWins = this.links.get(existing)?.initiated === iAmGreater;
      if (!newWins || oldWins) {
        this.outputs.push({ type: "close", link, reason: "duplicate link" });
        return;
      }
      this.dropLink(existing, "disconnect", "duplicate link", now2);
    }
    this.retry.delete(peer);
    this.linkOf.set(peer, link);
    this.links.set(link, { peer, initiated, maxFrame, has: /* @__PURE__ */ new Set(), rate: null, inFlight: 0, unacked: 0, busyUntil: 0, busyStreak: 0 });
    this.send(link, this.haveFrame(link));
    this.dirty = true;
  }
  /** Closes a link we no longer want and forgets it. */
  dropLink(link, cause, reason, now2) {
    if (this.links.has(link)) {
      this.outputs.push({ type: "close", link, reason });
      this.forgetLink(link, cause, now2);
    }
  }
  /** A link is gone: its transfers fail with `cause`, its uploads stop, the peer may be retried. */
  forgetLink(link, cause, now2) {
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
    if (!this.banned.has(gone.peer)) this.backOff(gone.peer, now2);
    this.dirty = true;
  }
  /** Queues a frame on a link (counted against the link's upload window until written). */
  send(link, frame) {
    const l = this.links.get(link);
    if (l) {
      l.unacked += encodedLen(frame);
      this.outputs.push({ type: "send", link, frame });
    }
  }
  /** When the pending Have frames may go out. */
  nextHave() {
    if (!this.haveDirty || this.links.size === 0) return null;
    return this.lastHave === null ? this.started : this.lastHave + HAVE_INTERVAL_MS;
  }
  /** Sends Have to every link if the store changed and the last Have is old enough. */
  flushHave(now2) {
    const at = this.nextHave();
    if (at === null || now2 < at) return;
    this.haveDirty = false;
    this.lastHave = now2;
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
    return { type: "have", segments };
  }
  /**
   * A peer sent data that does not match the gateway's digest: never used, the peer is banned and
   * disconnected and will be reported (`mismatch`).
   */
  caughtLying(id, link, now2) {
    const peer = this.links.get(link)?.peer;
    if (peer === void 0) {
      this.failTransfer(id, "mismatch");
      return;
    }
    this.mismatches++;
    this.failTransfer(id, "mismatch");
    this.ban(peer, now2);
  }
  /** Bans `peer`: its link closes, it is never linked or asked again (in this swarm session). */
  ban(peer, now2) {
    if (!this.banned.has(peer)) {
      this.banned.add(peer);
      this.peersDroppedForLying.push(peer);
    }
    const link = this.linkOf.get(peer);
    if (link !== void 0) this.dropLink(link, "disconnect", "banned", now2);
  }
  // =============================================================================================
  // Transfers: requests to peers and what comes back, HTTP answers, and the check of every byte
  // against the gateway's digest before anything is used. A Response header is only the peer's
  // claim; a complete transfer is hashed (`verify`) and used only if it matches. Peer bytes that
  // HTTP took over (a Range request for the rest) are joined with the HTTP rest and verified as a
  // whole; if the whole does not match, the peer lied and the segment is fetched whole over HTTP.
  onFrame(link, frame, now2) {
    const l = this.links.get(link);
    if (!l) return;
    switch (frame.type) {
      case "handshake":
        return;
      case "have":
        l.has = new Set(frame.segments);
        this.dirty = true;
        return;
      case "request":
        this.serve(link, frame.request_id, frame.segment, frame.offset, now2);
        return;
      case "cancel":
        this.uploads = this.uploads.filter((u) => !(u.link === link && u.requestId === frame.request_id));
        return;
      case "absent": {
        const id = this.transferOf(link, frame.request_id);
        if (id !== null && l.has.has(id)) {
          l.busyUntil = now2 + busyBackoffMs(l.busyStreak);
          l.busyStreak += 1;
        }
        if (id !== null) this.failTransfer(id, "absent");
        return;
      }
      case "response": {
        const id = this.transferOf(link, frame.request_id);
        if (id === null) return;
        const truth = this.digests.get(id);
        const t = this.work.get(id).transfer;
        const honest = truth !== void 0 && truth.digest === toHex(frame.digest) && truth.size === frame.size && frame.offset === 0 && frame.size <= MAX_SEGMENT_BYTES && t.size === null;
        if (!honest) {
          this.caughtLying(id, link, now2);
          return;
        }
        l.busyStreak = 0;
        t.size = frame.size;
        t.data = new Uint8Array(frame.size);
        if (frame.size === 0) this.completePeerTransfer(id, now2);
        return;
      }
      case "chunk": {
        const id = this.transferOf(link, frame.request_id);
        if (id === null) return;
        const t = this.work.get(id).transfer;
        const fits = t.size !== null && !t.verifying && frame.offset === t.received && t.received + frame.data.length <= t.size;
        if (!fits) {
          this.caughtLying(id, link, now2);
          return;
        }
        t.data.set(frame.data, t.received);
        t.received += frame.data.length;
        t.lastProgress = now2;
        if (t.received === t.size) this.completePeerTransfer(id, now2);
        return;
      }
      default:
        return;
    }
  }
  /** The segment whose running transfer is `requestId` on `link`, or null. */
  transferOf(link, requestId) {
    const id = this.requests.get(requestId);
    if (id === void 0) return null;
    const t = this.work.get(id)?.transfer;
    return t && t.link === link && t.requestId === requestId ? id : null;
  }
  requestFromPeer(id, peer, now2) {
    const link = this.linkOf.get(peer);
    if (link === void 0) return;
    const requestId = this.nextRequest;
    this.nextRequest = this.nextRequest >= 4294967295 ? 1 : this.nextRequest + 1;
    const l = this.links.get(link);
    if (l) l.inFlight++;
    this.send(link, { type: "request", request_id: requestId, segment: id, offset: 0 });
    this.requests.set(requestId, id);
    this.workOf(id).transfer = {
      link,
      peer,
      requestId,
      started: now2,
      lastProgress: now2,
      /** The size the Response announced (null before it). */
      size: null,
      data: NO_BYTES,
      received: 0,
      /** Complete and being hashed: {ticket, at} (when the last byte arrived). */
      verifying: null
    };
  }
  /** Ends the running transfer of `id` because of `cause`, telling the peer when it may still be sending. */
  failTransfer(id, cause) {
    const w = this.work.get(id);
    const t = w?.transfer;
    if (!t) return;
    w.transfer = null;
    this.requests.delete(t.requestId);
    if (!t.verifying && (cause === "timeout" || cause === "mismatch")) {
      this.send(t.link, { type: "cancel", request_id: t.requestId });
    }
    if (t.verifying) this.jobs.delete(t.verifying.ticket);
    this.summary.failures[cause]++;
    const delta = this.peerDelta(t.peer);
    if (cause === "mismatch") delta.mismatch++;
    else if (cause !== "absent") delta.failed++;
    const l = this.links.get(t.link);
    if (l) {
      l.inFlight = Math.max(0, l.inFlight - 1);
    }
    this.dirty = true;
  }
  /** Every byte is in: hash it. */
  completePeerTransfer(id, now2) {
    const ticket = this.nextTicket++;
    const t = this.work.get(id)?.transfer;
    if (!t) return;
    this.requests.delete(t.requestId);
    t.verifying = { ticket, at: now2 };
    this.jobs.set(ticket, { kind: "peer", id });
    this.outputs.push({ type: "verify", ticket, bytes: t.data });
  }
  onHttp(id, from, result, now2) {
    const work = this.work.get(id);
    if (!work) return;
    const fetch = work.http;
    if (!fetch || fetch.from !== from || fetch.verifying) return;
    const httpStarted = fetch.started;
    if (result.ok === void 0) {
      work.http = null;
      if (work.transfer) this.dirty = true;
      else this.failWaiters(id, result.err);
      return;
    }
    const body = result.ok;
    this.summary.http_bytes += body.length;
    this.httpRate = updateRate(this.httpRate, body.length, Math.max(0, now2 - httpStarted)) ?? this.httpRate;
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
      this.startHttp(id, 0, now2);
      return;
    }
    fetch.verifying = true;
    const whole = prefix ? concatBytes([prefix.bytes, body]) : body;
    const ticket = this.nextTicket++;
    this.jobs.set(ticket, {
      kind: "http",
      id,
      from,
      prefix: prefix && { peer: prefix.peer, len: prefix.bytes.length },
      httpStarted,
      whole
    });
    this.outputs.push({ type: "verify", ticket, bytes: whole });
  }
  onVerified(ticket, sha256, now2) {
    const job = this.jobs.get(ticket);
    if (!job) return;
    this.jobs.delete(ticket);
    if (job.kind === "peer") this.peerVerified(job.id, ticket, sha256, now2);
    else this.httpVerified(job, sha256, now2);
  }
  peerVerified(id, ticket, sha256, now2) {
    const work = this.work.get(id);
    const t = work?.transfer;
    if (!t || t.verifying?.ticket !== ticket) return;
    work.transfer = null;
    const ended = t.verifying.at;
    const bytes = t.data;
    const truth = this.digests.get(id);
    if (!truth || truth.digest !== sha256 || truth.size !== bytes.length) {
      work.transfer = { ...t, lastProgress: ended, data: NO_BYTES, received: 0 };
      this.caughtLying(id, t.link, now2);
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
    this.accept(id, bytes, sha256, "p2p", t.started, ended);
  }
  httpVerified({ id, from, prefix, httpStarted, whole }, sha256, now2) {
    const w = this.work.get(id);
    if (!(w?.http && w.http.from === from && w.http.verifying)) return;
    const truth = this.digests.get(id);
    if (prefix && (!truth || truth.digest !== sha256 || truth.size !== whole.length)) {
      this.mismatches++;
      this.summary.failures.mismatch++;
      w.partial = null;
      w.http = null;
      if (this.prefixStrikes.has(prefix.peer)) {
        this.peerDelta(prefix.peer).mismatch++;
        this.ban(prefix.peer, now2);
      } else {
        this.prefixStrikes.add(prefix.peer);
      }
      this.startHttp(id, 0, now2);
      return;
    }
    w.http = null;
    this.summary.p2p_bytes += prefix ? prefix.len : 0;
    if (prefix) this.deliveredBy(prefix.peer, id, sha256, prefix.len);
    this.accept(id, whole, sha256, "http", httpStarted, now2);
  }
  // =============================================================================================
  // Uploads: requests answered from the store within the upload policy (opt-out, privacy floor),
  // chunks paced by one token bucket for the whole node (the upload cap) and by each link's window
  // of unwritten bytes (a slow link does not pile frames up in memory). Served one after another,
  // not all at once (an uplink shared by every requester finishes every transfer late): the next
  // starts once the previous one has drained from its link (DRAIN_SLACK), at most
  // MAX_WAITING_UPLOADS wait behind it, and a request beyond them is answered Absent at once.
  serve(link, requestId, id, offset, now2) {
    const allowed = this.config.upload && this.listed.length + 1 >= this.config.privacyFloor;
    const s = this.store.get(id);
    const stored = s && offset <= s.bytes.length ? s : null;
    const duplicate = this.uploads.some((u) => u.link === link && u.requestId === requestId);
    const busy = this.uploads.length > MAX_WAITING_UPLOADS;
    if (!stored || !allowed || duplicate || busy) {
      this.send(link, { type: "absent", request_id: requestId });
      return;
    }
    const bytes = stored.bytes;
    this.send(link, { type: "response", request_id: requestId, size: bytes.length, offset, digest: fromHex(stored.digest) });
    if (offset < bytes.length) this.uploads.push({ link, requestId, bytes, next: offset, started: false });
    this.pumpUploads(now2);
  }
  /**
   * Sends chunks of the oldest upload while the bucket and its link's window allow; a new upload
   * starts only once the links of earlier ones have drained.
   */
  pumpUploads(now2) {
    this.nextUpload = null;
    for (; ; ) {
      let sent = false;
      let i = 0;
      while (i < Math.min(this.uploads.length, 1)) {
        const u = this.uploads[i];
        if (!u.started) {
          const draining = [...this.links].some(([id, l2]) => id !== u.link && l2.unacked > DRAIN_SLACK);
          if (draining) return;
        }
        const start = u.next;
        const end = Math.min(start + RECOMMENDED_CHUNK_LEN, u.bytes.length);
        const l = this.links.get(u.link);
        if (!(l && l.unacked < LINK_WINDOW)) {
          i++;
          continue;
        }
        const wait = this.bucket.tryTake(end - start, now2);
        if (wait !== null) {
          this.nextUpload = wait;
          return;
        }
        const chunk = u.bytes.subarray(start, end);
        const data = this.config.test.lie ? corrupt(chunk) : chunk;
        this.send(u.link, { type: "chunk", request_id: u.requestId, offset: start, data });
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
};
function newCounters() {
  return {
    http_bytes: 0,
    p2p_bytes: 0,
    uploaded_bytes: 0,
    segments: 0,
    http_segments: 0,
    p2p_segments: 0,
    failures: { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 }
  };
}
function sortedKeys(map) {
  return [...map.keys()].sort(compareIds);
}
function corrupt(data) {
  const bad = data.slice();
  for (let i = 0; i < bad.length; i += 97) bad[i] ^= 90;
  return bad;
}
var Bounded = class {
  constructor(cap) {
    this.cap = cap;
    this.map = /* @__PURE__ */ new Map();
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
};
var Store = class {
  constructor(maxCount, maxBytes) {
    this.maxCount = maxCount;
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.clock = 0;
    this.entries = /* @__PURE__ */ new Map();
    this.order = /* @__PURE__ */ new Map();
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
};
var TokenBucket2 = class {
  /** Fills at `rate` bytes/s up to `burst`, full at `now`; an unusable rate means no limit. */
  constructor(rate, burst, now2) {
    this.rate = Number.isFinite(rate) && rate > 0 ? rate : Number.MAX_VALUE;
    this.burst = burst;
    this.tokens = burst;
    this.last = now2;
  }
  refill(now2) {
    const elapsed = Math.max(0, now2 - this.last) / 1e3;
    this.last = Math.max(this.last, now2);
    this.tokens = Math.min(this.tokens + elapsed * this.rate, this.burst);
  }
  /**
   * Takes `bytes` if the bucket is not in debt at `now` (the take itself may go into debt, so large
   * chunks are not starved) and returns null; otherwise returns when it will be out of debt.
   */
  tryTake(bytes, now2) {
    this.refill(now2);
    if (this.tokens < 0) {
      const waitMs = Math.min(-this.tokens / this.rate * 1e3, 36e5);
      return now2 + Math.max(waitMs, 1e-3);
    }
    this.tokens -= bytes;
    return null;
  }
};
function normalFingerprint(fingerprint) {
  return fingerprint.replaceAll(":", "").toLowerCase();
}

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
      const range = ranged ? [context.rangeStart ?? 0, context.rangeEnd ?? 0] : null;
      const target = engine.destroyed || context.part ? null : engine.engineFor(frag);
      if (!target || target.destroyed || !target.segmentId(context.url, range)) {
        this.loadByDefault(context, config, callbacks);
        return;
      }
      this.stats.loading.start = now();
      const limit = config.loadPolicy?.maxLoadTimeMs ?? config.timeout;
      if (Number.isFinite(limit) && limit > 0) this.timeout = setTimeout(() => this.timedOut(), limit);
      this.request = target.fetchSegment(context.url, {
        frag,
        range,
        headers: context.headers,
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
      const request2 = this.request;
      const cb = this.finish();
      if (!cb) return;
      this.stats.aborted = true;
      request2?.cancel();
      cb.onAbort?.(this.stats, this.context, null);
    }
    destroy() {
      if (this.delegate) {
        this.delegate.destroy();
        this.delegate = null;
      }
      const request2 = this.request;
      this.finish();
      request2?.cancel();
    }
    getCacheAge() {
      return this.delegate?.getCacheAge?.() ?? null;
    }
    getResponseHeader(name) {
      return this.delegate?.getResponseHeader?.(name) ?? null;
    }
  };
}

// src/master.js
function parseAttributes(list2) {
  const out = /* @__PURE__ */ new Map();
  let i = 0;
  const n = list2.length;
  while (i < n) {
    while (i < n && (list2[i] === " " || list2[i] === "	")) i++;
    const nameStart = i;
    while (i < n && list2[i] !== "=" && list2[i] !== ",") i++;
    if (i >= n || list2[i] !== "=") {
      i++;
      continue;
    }
    const name = list2.slice(nameStart, i).trim();
    i++;
    let value;
    if (list2[i] === '"') {
      const end = list2.indexOf('"', i + 1);
      if (end < 0) break;
      value = list2.slice(i + 1, end);
      i = end + 1;
      while (i < n && list2[i] !== ",") i++;
    } else {
      const start = i;
      while (i < n && list2[i] !== ",") i++;
      value = list2.slice(start, i).trimEnd();
    }
    if (!out.has(name)) out.set(name, value);
    i++;
  }
  return out;
}
function playlistUriPath(reference, baseUrl) {
  const ref = reference.trim().split(/[?#]/)[0];
  if (ref === "" || ref.startsWith("//") || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(ref)) return null;
  return gatewayPath(ref, baseUrl);
}
function parseRenditions(text, baseUrl) {
  const lines = text.replace(/^\uFEFF/, "").split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (lines[0] !== "#EXTM3U") return [];
  const variants = [];
  const media = [];
  let pending = false;
  for (const line of lines.slice(1)) {
    if (!line.startsWith("#")) {
      if (pending) variants.push({ uri: line, kind: "VARIANT", group: null, name: null });
      pending = false;
      continue;
    }
    const colon = line.indexOf(":");
    const tag = colon < 0 ? line : line.slice(0, colon);
    if (tag === "#EXT-X-STREAM-INF") {
      pending = true;
    } else if (tag === "#EXT-X-MEDIA") {
      const a = parseAttributes(colon < 0 ? "" : line.slice(colon + 1));
      if (a.has("URI")) {
        media.push({ uri: a.get("URI"), kind: a.get("TYPE") ?? "", group: a.get("GROUP-ID") ?? "", name: a.get("NAME") ?? "" });
      }
    }
  }
  const out = [];
  const seen = /* @__PURE__ */ new Set();
  for (const r of [...variants, ...media]) {
    const path = playlistUriPath(r.uri, baseUrl);
    if (path === null || seen.has(path)) continue;
    seen.add(path);
    out.push({ path, kind: r.kind, group: r.group, name: r.name });
  }
  return out;
}
function renditionOfUrl(renditions, url, baseUrl) {
  const path = url ? gatewayPath(url, baseUrl) : null;
  return path === null ? -1 : renditions.findIndex((r) => r.path === path);
}
async function fetchRenditions(url, fetchImpl = globalThis.fetch) {
  const resp = await fetchImpl(url, { credentials: "same-origin" });
  if (!resp.ok) throw new Error(`HTTP ${resp.status} for ${url}`);
  return parseRenditions(await resp.text(), resp.url || url);
}

// src/peer-link.js
var DATA_CHANNEL_LABEL = "p2pa/1";
var CONNECT_TIMEOUT_MS2 = 15e3;
var HANDSHAKE_TIMEOUT_MS = 5e3;
var BUFFER_LOW = 64 * 1024;
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
    this.later(CONNECT_TIMEOUT_MS2, () => {
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
    dc.onbufferedamountlow = () => this.hooks.drained(this);
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
  /** Bytes sent on the channel and not yet handed to the network. */
  get bufferedAmount() {
    return this.dc?.bufferedAmount ?? 0;
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

// src/keys.js
var RECEIPT_DOMAIN = "hls-p2p-receipt/1";
var KEY_DB = "p2pa";
var KEY_STORE = "keys";
var KEY_ID = "node";
var IDB_TIMEOUT_MS = 3e3;
var ALGORITHMS = {
  ed25519: { generate: { name: "Ed25519" }, sign: { name: "Ed25519" } },
  p256: { generate: { name: "ECDSA", namedCurve: "P-256" }, sign: { name: "ECDSA", hash: "SHA-256" } }
};
function receiptText(r) {
  return [RECEIPT_DOMAIN, r.alg, r.uploader, r.receiver, r.swarm, r.segment, r.sha256, r.bytes, r.time, r.nonce].join("\n");
}
function randomHex(n = 16, crypto = globalThis.crypto) {
  return toHex(crypto.getRandomValues(new Uint8Array(n)));
}
async function generateKeyPair(subtle = globalThis.crypto?.subtle) {
  if (!subtle) throw new Error("no WebCrypto");
  let failure = null;
  for (const alg of ["ed25519", "p256"]) {
    try {
      const pair = await subtle.generateKey(ALGORITHMS[alg].generate, false, ["sign", "verify"]);
      return { alg, privateKey: pair.privateKey, publicKey: pair.publicKey };
    } catch (e) {
      failure = e;
    }
  }
  throw failure;
}
async function nodeKeyOf({ alg, privateKey, publicKey }, { subtle = globalThis.crypto?.subtle, persistent = false } = {}) {
  const params = ALGORITHMS[alg]?.sign;
  if (!params) throw new Error(`unknown key algorithm ${alg}`);
  const publicHex = toHex(new Uint8Array(await subtle.exportKey("raw", publicKey)));
  const encoder = new TextEncoder();
  return Object.freeze({
    alg,
    publicHex,
    persistent,
    async sign(text) {
      return toHex(new Uint8Array(await subtle.sign(params, privateKey, encoder.encode(text))));
    }
  });
}
async function sessionKey(subtle = globalThis.crypto?.subtle) {
  return nodeKeyOf(await generateKeyPair(subtle), { subtle });
}
async function loadOrCreateKey({ indexedDB = globalThis.indexedDB, subtle = globalThis.crypto?.subtle, warn = () => {
} } = {}) {
  if (!subtle) throw new Error("no WebCrypto");
  if (indexedDB) {
    try {
      const stored = await withTimeout(storedKey(indexedDB, subtle), IDB_TIMEOUT_MS);
      return await nodeKeyOf(stored, { subtle, persistent: true });
    } catch (e) {
      warn("key-store", e?.message ?? String(e), "using a key for this session only");
    }
  }
  return sessionKey(subtle);
}
var pageKey = null;
function pageNodeKey(o) {
  pageKey ??= loadOrCreateKey(o).catch((e) => {
    pageKey = null;
    throw e;
  });
  return pageKey;
}
async function storedKey(indexedDB, subtle) {
  const db = await openDb(indexedDB);
  try {
    const found = await request(db.transaction(KEY_STORE, "readonly").objectStore(KEY_STORE).get(KEY_ID));
    if (isPair(found)) return found;
    const pair = await generateKeyPair(subtle);
    const record = { alg: pair.alg, privateKey: pair.privateKey, publicKey: pair.publicKey };
    try {
      const tx = db.transaction(KEY_STORE, "readwrite");
      const done = transactionDone(tx);
      if (found === void 0) tx.objectStore(KEY_STORE).add(record, KEY_ID);
      else tx.objectStore(KEY_STORE).put(record, KEY_ID);
      await done;
      return record;
    } catch (e) {
      if (e?.name !== "ConstraintError") throw e;
      const theirs = await request(db.transaction(KEY_STORE, "readonly").objectStore(KEY_STORE).get(KEY_ID));
      if (isPair(theirs)) return theirs;
      throw e;
    }
  } finally {
    db.close();
  }
}
var isPair = (r) => Boolean(r && ALGORITHMS[r.alg] && r.privateKey && r.publicKey);
function openDb(indexedDB) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(KEY_DB, 1);
    open.onupgradeneeded = () => {
      if (!open.result.objectStoreNames.contains(KEY_STORE)) open.result.createObjectStore(KEY_STORE);
    };
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error ?? new Error("IndexedDB open failed"));
    open.onblocked = () => reject(new Error("IndexedDB open blocked"));
  });
}
function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
function transactionDone(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = (e) => reject(e?.target?.error ?? tx.error ?? new Error("IndexedDB write failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}
function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`IndexedDB did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// src/signalling.js
var SIGNAL_RATE = 10;
var SIGNAL_BURST = 20;
var MAX_SIGNAL_QUEUE = 256;
var SignallingChannel = class {
  /**
   * @param {object} o
   * @param {string} o.url        ws:// or wss:// URL of /p2p/v1/ws?stream=…
   * @param {object} o.join       {stream, rendition, upload, token?, key?} (key: the node's public key, hex)
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
      if (join.key) msg.key = join.key;
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

// src/engine.js
var DEFAULT_MAX_PEERS = DEFAULT_CORE_CONFIG.maxLinks;
var DEFAULT_REPORT_INTERVAL_MS = DEFAULT_CORE_CONFIG.reportEveryMs;
var DEFAULT_MAX_STORE_BYTES = DEFAULT_CORE_CONFIG.maxStoreBytes;
var DEFAULT_MAX_STORE_SEGMENTS = DEFAULT_CORE_CONFIG.window;
var MAX_SEGMENT_BYTES2 = 256 * 1024 * 1024;
var DEADLINE_SLACK_MS = 100;
var INIT_UNKNOWN_PLAYS_IN_MS = 2e3;
var CLOSE_SERVICE_RESTART = 1012;
var RESTART_JITTER_MS = 500;
var NO_RECONNECT = /* @__PURE__ */ new Set(["unsupported_version", "unauthorized"]);
var MAX_SHARD_HOPS = 16;
var TIMEOUT = /* @__PURE__ */ Symbol("timeout");
var REPORT_NOW = /* @__PURE__ */ Symbol("report now");
var MAX_PENDING_RECEIPTS = 1024;
var LAST_RECEIPT_REPORTS = 4;
var REPORT_SIZE_LIMIT = MAX_SIGNAL_LEN - 1024;
var P2PEngine = class _P2PEngine {
  /** @param {P2PEngineOptions} options */
  constructor(options = {}) {
    const env = globalThis;
    const gateway = options.gateway ?? env.location?.origin;
    if (!gateway) throw new Error("P2PEngine: options.gateway is required outside a page");
    this.gatewayOrigin = new URL(gateway).origin;
    this.track = options.track ?? "main";
    this.parent = options.parent ?? null;
    this.givenOptions = options;
    this.tracks = /* @__PURE__ */ new Map();
    this.trackUrl = null;
    const streamUrl = options.stream ? new URL(options.stream, this.gatewayOrigin) : null;
    this.streamPath = streamUrl ? streamUrl.pathname : null;
    this.options = {
      iceServers: options.iceServers ?? [],
      upload: options.upload ?? true,
      maxPeers: options.maxPeers ?? DEFAULT_MAX_PEERS,
      // A signed URL's token (docs/SECURITY.md): given, or the `token` of the stream's URL.
      token: options.token ?? streamUrl?.searchParams.get("token") ?? null
    };
    this.impl = {
      WebSocket: options.WebSocket ?? env.WebSocket,
      RTCPeerConnection: options.RTCPeerConnection ?? env.RTCPeerConnection,
      fetch: options.fetch ?? env.fetch?.bind(env)
    };
    this.receiptsOn = (options.receipts ?? Boolean(env.crypto?.subtle)) && options.nodeKey !== null;
    const core = { transports: ["webrtc"], upload: this.options.upload, maxLinks: this.options.maxPeers, receipts: this.receiptsOn };
    const tuning = {
      uploadRate: options.uploadRate,
      window: options.maxStoreSegments,
      maxStoreBytes: options.maxStoreBytes,
      reportEveryMs: options.reportIntervalMs,
      scheduler: options.scheduler
    };
    for (const [k, v] of Object.entries(tuning)) if (v !== void 0) core[k] = v;
    this.core = new NodeCore(core, "", now());
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
      tracks: {}
    };
    Object.defineProperty(this.stats, "links", { enumerable: true, configurable: true, get: () => this.peerStats() });
    this.otherHttp = { bytes: 0, segments: 0 };
    this.initDelivered = { http: 0, p2p: 0 };
    this.log = new WarningLog("[p2p]", (n) => this.stats.warnings = n);
    this.inbox = [];
    this.busy = false;
    this.timer = null;
    this.timerAt = null;
    this.waiters = /* @__PURE__ */ new Map();
    this.nextWaiter = 1;
    this.urls = new BoundedMap(1024);
    this.requestHeaders = new BoundedMap(1024);
    this.http = /* @__PURE__ */ new Map();
    this.firstByte = new BoundedMap(1024);
    this.requested = new BoundedMap(1024);
    this.timings = new BoundedMap(1024);
    this.pendingReport = null;
    this.receipts = [];
    this.nodeKey = null;
    this.keyPending = false;
    this.connectWhenKeyReady = false;
    this.stopping = false;
    this.links = /* @__PURE__ */ new Map();
    this.peerLinks = /* @__PURE__ */ new Map();
    this.nextLinkId = 1;
    this.unwritten = /* @__PURE__ */ new Map();
    this.rendition = null;
    this.conn = null;
    this.backoff = new Backoff();
    this.reconnectTimer = null;
    this.noReconnect = false;
    this.shard = 0;
    this.shardHops = 0;
    this.suspended = false;
    this.destroyed = false;
    this.hls = null;
    this.hlsHandlers = [];
    this.renditions = null;
    this.initUsers = /* @__PURE__ */ new WeakMap();
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
      this.log.warn("no-key", e?.message ?? e, "no receipts");
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
        for (let o = this.core.pollOutput(); o !== void 0; o = this.core.pollOutput()) {
          try {
            this.perform(o);
          } catch (e) {
            this.log.warn("output-failed", o.type, e?.message ?? e);
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
      case "connect":
        this.connectTo(o.peer);
        return;
      case "send":
        this.send(o.link, o.frame);
        return;
      case "close": {
        const link = this.links.get(o.link);
        if (!link) return;
        this.forgetLink(o.link);
        this.trace("close", { peer: link.remote, reason: o.reason });
        link.close(o.reason);
        return;
      }
      case "http_get":
        this.trace("http", { id: o.id, from: o.from });
        this.httpGet(o.id, o.from);
        return;
      case "http_cancel":
        this.http.get(o.id)?.controller.abort();
        this.http.delete(o.id);
        return;
      case "verify":
        this.verify(o.ticket, o.bytes);
        return;
      case "signal":
        this.signal(o.message);
        return;
      case "deliver":
        this.deliver(o);
        return;
      case "delivered":
        this.signReceipt(o);
        return;
      default:
        this.log.warn("unknown-output", o.type);
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
      for (const k of ["httpBytes", "p2pBytes", "httpSegments", "p2pSegments", "verifiedSegments", "rejectedSegments", "uploadedBytes", "storedSegments", "storedBytes"]) {
        s[k] += t[k];
      }
      for (const [k, n] of Object.entries(t.failures)) s.failures[k] = (s.failures[k] ?? 0) + n;
    }
    s.initSections = { ...this.initDelivered };
    for (const engine of this.tracks.values()) {
      for (const k of ["http", "p2p"]) s.initSections[k] += engine.initDelivered[k];
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
        transport: "webrtc",
        rate: l.rate,
        bytesFrom: link?.bytesFrom ?? 0,
        bytesTo: link?.bytesTo ?? 0,
        inFlight: l.inFlight,
        advertised: l.advertised,
        initiated: l.initiated,
        openFor: link?.readyAt === void 0 ? 0 : Math.max(0, Math.round((t - link.readyAt) / 1e3))
      };
    });
  }
  trace(what, details) {
    if (!this.traceLog) return;
    if (this.traceLog.length >= 2e3) this.traceLog.splice(0, 500);
    this.traceLog.push({ t: Math.round(now()), what, ...details });
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
    on(E.AUDIO_TRACK_SWITCHING, (_, d) => this.engineForTrack("audio")?.followTrack(d?.url ?? null));
    on(E.AUDIO_TRACK_LOADED, (_, d) => this.engineForTrack("audio")?.onLevelDetails(d.details));
    on(E.SUBTITLE_TRACK_SWITCH, (_, d) => this.engineForTrack("subtitle")?.followTrack(d?.url ?? null));
    on(E.SUBTITLE_TRACK_LOADED, (_, d) => this.engineForTrack("subtitle")?.onLevelDetails(d.details));
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
    if (this.options.token) master.searchParams.set("token", this.options.token);
    const url = master.href;
    for (let attempt = 0; attempt < 3 && !this.destroyed; attempt++) {
      try {
        this.renditions = await fetchRenditions(url, this.impl.fetch);
        this.mapLevels();
        for (const engine of this.tracks.values()) engine.followTrack(engine.trackUrl);
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
    if (!hls || !this.renditions || !hls.levels) return;
    const base = this.masterUrl();
    this.levelRendition = hls.levels.map((level2) => {
      const url = level2.uri ?? (Array.isArray(level2.url) ? level2.url[0] : level2.url);
      const r = url ? renditionOfUrl(this.renditions, url, base) : -1;
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
    const type = frag?.type ?? "main";
    if (type === "main" || this.parent) return this;
    return this.engineForTrack(type);
  }
  /** The main engine's engine for track type `type` ('audio' or 'subtitle'), made on first use. */
  engineForTrack(type) {
    if (this.parent || this.destroyed || type !== "audio" && type !== "subtitle") return null;
    let engine = this.tracks.get(type);
    if (!engine) {
      const options = { ...this.givenOptions, gateway: this.gatewayOrigin, track: type, parent: this, trace: Boolean(this.traceLog) };
      if (this.receiptsOn) options.nodeKey = this.keyReady;
      engine = new _P2PEngine(options);
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
    if (!renditions) return;
    const r = url ? renditionOfUrl(renditions, url, this.parent.masterUrl()) : -1;
    if (r >= 0) {
      this.setRendition(r);
      return;
    }
    if (url) this.log.warn("track-not-in-stream", this.track, url);
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
    const users = /* @__PURE__ */ new Map();
    for (const frag of details.fragments ?? []) {
      const range = frag.byteRange?.length === 2 ? frag.byteRange : null;
      const id = this.segmentId(frag.url, range);
      if (id) segments.push({ sequence: frag.sn, id, duration_ms: frag.duration * 1e3 });
      const init = frag.initSegment;
      if (init && typeof init === "object" && Number.isFinite(frag.start)) {
        if (!users.has(init)) users.set(init, []);
        users.get(init).push({ start: frag.start, end: frag.start + frag.duration });
      }
    }
    for (const [init, list2] of users) (this.parent ?? this).initUsers.set(init, list2);
    this.feed({ type: "playlist", ok: { segments, target_duration_ms: details.targetduration * 1e3, ended: !details.live } });
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
    if (this.parent) return this.parent.playsAt(frag, t);
    const media = this.media;
    if (!media || !this.playbackStarted || !frag) return t;
    if (frag.sn === "initSegment") return this.initPlaysAt(frag, t);
    if (!Number.isFinite(frag.start)) return t;
    const rate = media.playbackRate > 0 ? media.playbackRate : 1;
    return t + Math.max(0, frag.start - media.currentTime) / rate * 1e3;
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
    const conn = this.conn;
    const rendition = this.renditionOfFrag(frag);
    const p2p = Boolean(conn?.peerId) && rendition === conn.rendition;
    const init = frag?.sn === "initSegment";
    const w = { id, p2p, init, playsAt: playsAt ?? ((at) => this.playsAt(frag, at)), sentPlaysAt: 0, onSuccess, onError, cancelled: false };
    w.sentPlaysAt = w.playsAt(t);
    this.waiters.set(waiter, w);
    this.trace("need", { id, in: Math.round(w.sentPlaysAt - t), level: frag?.level, p2p });
    this.feed({ type: "need", waiter, id, plays_at: w.sentPlaysAt, p2p });
    return {
      cancel: () => {
        if (w.cancelled) return;
        w.cancelled = true;
        if (this.waiters.delete(waiter)) this.feed({ type: "abandon", waiter });
      }
    };
  }
  /** `need` again for the waiters whose deadline moved (playback started, paused, seeked…). */
  movedDeadlines() {
    const t = now();
    const moved = [];
    for (const [waiter, w] of this.waiters) {
      const at = w.playsAt(t);
      const due = at <= t && w.sentPlaysAt <= t;
      if (due || Math.abs(at - w.sentPlaysAt) <= DEADLINE_SLACK_MS) continue;
      w.sentPlaysAt = at;
      moved.push({ type: "need", waiter, id: w.id, plays_at: at, p2p: w.p2p });
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
      this.trace("deliver", { id: o.id, source: o.ok.source, took: Math.round(timing.end - timing.start) });
    } else {
      this.trace("deliver", { id: o.id, error: o.err.kind });
    }
    for (const waiter of o.waiters) {
      const w = this.waiters.get(waiter);
      if (!w) continue;
      this.waiters.delete(waiter);
      if (o.ok && w.init) this.initDelivered[o.ok.source === "p2p" ? "p2p" : "http"]++;
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
    if (this.options.token) url.searchParams.set("token", this.options.token);
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
        if (this.http.get(id) !== fetch) return;
        this.http.delete(id);
        this.feed({ type: "http", id, from, ok: bytes });
      },
      (err) => {
        if (this.http.get(id) !== fetch || err?.name === "AbortError") return;
        this.http.delete(id);
        this.log.warn("http-failed", id, describeHttpError(err));
        this.feed({ type: "http", id, from, err: err.kind ? err : { kind: "network", message: String(err?.message ?? err) } });
      }
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
    const end = range ? range.offset + range.length : null;
    if (end !== null && first >= end) return new Uint8Array(0);
    const spec = end !== null ? `bytes=${first}-${end - 1}` : first > 0 ? `bytes=${first}-` : null;
    const init = { signal, credentials: "same-origin" };
    if (headers || spec) init.headers = { ...headers, ...spec ? { Range: spec } : {} };
    const resp = await this.impl.fetch(url, init);
    if (!resp.ok) {
      const kind = resp.status === 404 || resp.status === 410 ? "absent" : "status";
      throw { kind, status: resp.status };
    }
    let skip = 0;
    let keep = Infinity;
    if (spec && resp.status === 206) {
      const m = /^bytes (\d+)-/.exec(resp.headers.get("content-range") ?? "");
      if (!m || Number(m[1]) !== first) throw { kind: "network", message: `unexpected Content-Range for ${spec}` };
    } else {
      skip = first;
    }
    if (end !== null) keep = end - first;
    const parts = [];
    let total = 0;
    if (resp.body?.getReader) {
      const reader = resp.body.getReader();
      for (; ; ) {
        const { done, value } = await reader.read();
        if (done) break;
        firstByte();
        parts.push(value);
        total += value.length;
        if (total > MAX_SEGMENT_BYTES2) {
          reader.cancel().catch(() => {
          });
          throw { kind: "too_large", limit: MAX_SEGMENT_BYTES2 };
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
      (sha256) => this.feed({ type: "verified", ticket, sha256 }),
      (e) => {
        this.log.warn("sha256-failed", e?.message ?? e);
        this.feed({ type: "verified", ticket, sha256: "" });
      }
    );
  }
  // ===========================================================================================
  // Peer links for the core
  /** The core asks for a link to `peer`: offer one (the outcome is `link_up` or `connect_failed`). */
  connectTo(peer) {
    const conn = this.conn;
    if (!conn?.peerId || !conn.channel.open || !this.impl.RTCPeerConnection) {
      this.feed({ type: "connect_failed", peer });
      return;
    }
    const existing = this.peerLinks.get(peer);
    if (existing) {
      existing.asked = true;
      return;
    }
    this.trace("connect", { peer });
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
          if (conn === this.conn) conn.channel.send({ type: "relay", to: remote, payload });
        },
        ready: (l) => this.onLinkReady(conn, l),
        frame: (l, f) => this.onFrame(l, f),
        closed: (l) => this.onLinkClosed(l),
        drained: (l) => this.written(l.coreId),
        warn: (...a) => this.log.warn(...a)
      }
    });
    link.asked = false;
    link.coreId = null;
    this.peerLinks.set(remote, link);
    return link;
  }
  onLinkReady(conn, link) {
    if (conn !== this.conn) {
      link.close("left the swarm");
      return;
    }
    link.coreId = this.nextLinkId++;
    link.asked = false;
    link.bytesFrom = 0;
    link.bytesTo = 0;
    link.readyAt = now();
    this.links.set(link.coreId, link);
    this.unwritten.set(link.coreId, 0);
    this.feed({ type: "link_up", link: link.coreId, peer: link.remote, initiated: link.initiator, max_frame: link.maxMessageSize });
  }
  onFrame(link, frame) {
    if (link.coreId === null || this.links.get(link.coreId) !== link) return;
    if (frame.type === "chunk") {
      link.bytesFrom += frame.data.length;
      const key = `${link.coreId}:${frame.request_id}`;
      const id = this.requested.get(key);
      if (id !== void 0) {
        this.requested.delete(key);
        if (!this.firstByte.has(id)) this.firstByte.set(id, now());
      }
    }
    this.feed({ type: "frame", link: link.coreId, frame });
  }
  onLinkClosed(link) {
    if (this.peerLinks.get(link.remote) === link) this.peerLinks.delete(link.remote);
    if (link.coreId !== null && this.links.get(link.coreId) === link) {
      this.forgetLink(link.coreId);
      this.feed({ type: "link_down", link: link.coreId });
    } else if (link.asked) {
      link.asked = false;
      this.feed({ type: "connect_failed", peer: link.remote });
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
      this.feed({ type: "link_down", link: id });
      return;
    }
    if (frame.type === "request") this.requested.set(`${id}:${frame.request_id}`, frame.segment);
    if (!link.sendFrame(frame)) return;
    if (frame.type === "chunk") link.bytesTo += frame.data.length;
    this.unwritten.set(id, (this.unwritten.get(id) ?? 0) + encodedLen(frame));
    if (link.bufferedAmount <= BUFFER_LOW) this.written(id);
  }
  written(id) {
    const bytes = this.unwritten.get(id);
    if (!bytes) return;
    this.unwritten.set(id, 0);
    this.feed({ type: "written", link: id, bytes });
  }
  /** A relayed negotiation message. Of two crossing offers the greater id's wins (PROTOCOL.md §6). */
  onRelay(conn, from, payload) {
    if (!conn.peerId || this.core.isBanned(from)) return;
    const kind = payload?.kind;
    const valid = (kind === "offer" || kind === "answer" ? typeof payload.sdp === "string" : kind === "candidate" && typeof payload.candidate === "object" && payload.candidate !== null) && from !== conn.peerId;
    if (!valid) {
      this.log.warn("bad-relay", from, kind);
      return;
    }
    let link = this.peerLinks.get(from);
    if (kind === "offer") {
      let asked = false;
      if (link) {
        if (link.initiator && compareIds(conn.peerId, from) > 0) return;
        asked = link.asked;
        link.asked = false;
        link.close("replaced by a new offer");
      } else if (this.peerLinks.size >= conn.maxPeers || !this.impl.RTCPeerConnection) {
        return;
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
    this.shard = this.shardHops = 0;
    if (!this.suspended && !this.noReconnect) this.connect();
  }
  connect() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (!this.impl.WebSocket) {
      this.log.warn("no-websocket", "P2P disabled");
      return;
    }
    if (!globalThis.crypto?.subtle) {
      this.log.warn("no-webcrypto", "P2P disabled: peer bytes cannot be verified outside a secure context");
      return;
    }
    if (this.keyPending) {
      this.connectWhenKeyReady = true;
      return;
    }
    const shard = this.shard > 0 ? `&shard=${this.shard}` : "";
    const ws = new URL(`/p2p/v1/ws?stream=${encodeURIComponent(this.streamPath)}${shard}`, this.gatewayOrigin);
    ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
    const conn = {
      rendition: this.rendition,
      channel: null,
      peerId: null,
      swarm: null,
      maxPeers: this.options.maxPeers,
      nextShard: null
    };
    conn.channel = new SignallingChannel({
      url: ws.href,
      join: {
        stream: this.streamPath,
        rendition: this.rendition,
        upload: this.options.upload,
        token: this.options.token,
        key: this.nodeKey?.publicHex ?? null
      },
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
        this.stats.shard = this.shard;
        this.shardHops = 0;
        this.backoff.reset();
        this.feed({ type: "signal", message: m });
        this.flushReport();
        return;
      case "digests":
      case "peers":
        if (!conn.peerId) {
          this.log.warn("bad-signal", `${m.type} before welcome`);
          return;
        }
        this.feed({ type: "signal", message: m });
        return;
      case "relay":
        this.onRelay(conn, m.from, m.payload);
        return;
      case "error":
        if (m.code === "swarm_full" && m.shard !== void 0) {
          conn.nextShard = m.shard;
          return;
        }
        this.log.warn("tracker-error", m.code, m.message);
        if (NO_RECONNECT.has(m.code)) this.noReconnect = true;
        return;
    }
  }
  onSignalClosed(conn, info) {
    if (conn !== this.conn) return;
    this.conn = null;
    this.stats.peerId = this.stats.swarm = null;
    this.feed({ type: "signal_closed" });
    if (this.destroyed || this.suspended || this.rendition === null) return;
    if (this.noReconnect || NO_RECONNECT.has(info.error)) {
      this.noReconnect = true;
      this.log.warn("signalling-closed", `no reconnect after ${info.error}`);
      return;
    }
    if (conn.nextShard !== null && conn.nextShard > this.shard && this.shardHops < MAX_SHARD_HOPS) {
      this.shard = conn.nextShard;
      this.shardHops += 1;
      this.connect();
      return;
    }
    const delay = info.code === CLOSE_SERVICE_RESTART ? Math.floor(Math.random() * RESTART_JITTER_MS) : this.backoff.next();
    this.stats.signallingReconnects += 1;
    this.log.warn("signalling-closed", info.code, info.reason || info.error || "", `reconnecting in ${delay} ms`);
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
      const forGood = this.stopping || this.suspended;
      while (forGood && this.receipts.length > 0 && last.length < LAST_RECEIPT_REPORTS + 1) {
        last.push(this.withReceipts(emptyReport()));
      }
    }
    conn.channel.leave(last);
    this.closePeerLinks("leave");
    this.updateStats();
  }
  /** A message from the core for the tracker. */
  signal(message) {
    if (message.type === "leave") {
      this.leaveSwarm();
      return;
    }
    if (this.pendingReport) {
      const merged = mergeReports(this.pendingReport, message);
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
    if (!key || o.uploader === key.publicHex) return;
    const receipt2 = {
      alg: key.alg,
      uploader: o.uploader,
      receiver: key.publicHex,
      swarm: o.swarm,
      segment: o.segment,
      sha256: o.sha256,
      bytes: o.bytes,
      time: Date.now(),
      nonce: randomHex(16)
    };
    key.sign(receiptText(receipt2)).then(
      (sig) => {
        if (this.destroyed) return;
        this.stats.receiptsSigned++;
        this.trace("receipt", { segment: o.segment, bytes: o.bytes });
        this.queueReceipts([{ ...receipt2, sig }]);
      },
      (e) => this.log.warn("sign-failed", e?.message ?? e)
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
    for (const engine of this.tracks.values()) engine.destroy();
    this.stopping = true;
    this.feed({ type: "stop" });
    this.destroyed = true;
    this.detach();
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
    globalThis.removeEventListener?.("pageshow", this.onPageShow);
    clearTimeout(this.timer);
    clearTimeout(this.reconnectTimer);
    this.timer = this.reconnectTimer = null;
    this.closePeerLinks("destroyed");
    for (const fetch of this.http.values()) fetch.controller.abort();
    this.http.clear();
    this.waiters.clear();
  }
};
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
    uploadedBytes: s.uploadedBytes
  };
}
function emptyReport() {
  return {
    type: "report",
    http_bytes: 0,
    p2p_bytes: 0,
    http_segments: 0,
    p2p_segments: 0,
    uploaded_bytes: 0,
    failures: { timeout: 0, mismatch: 0, absent: 0, disconnect: 0 }
  };
}
function mergeReports(a, b) {
  const out = { ...b, failures: { ...b.failures } };
  for (const k of ["http_bytes", "p2p_bytes", "http_segments", "p2p_segments", "uploaded_bytes"]) out[k] += a[k];
  for (const c of Object.keys(a.failures)) out.failures[c] = (out.failures[c] ?? 0) + a.failures[c];
  const peers = /* @__PURE__ */ new Map();
  for (const p of [...a.peers ?? [], ...b.peers ?? []]) {
    const q = peers.get(p.peer_id);
    if (q) for (const k of ["ok", "failed", "mismatch", "bytes"]) q[k] += p[k];
    else if (peers.size < MAX_LIST_LEN) peers.set(p.peer_id, { ...p });
  }
  if (peers.size > 0) out.peers = [...peers.values()];
  const receipts = [...a.receipts ?? [], ...b.receipts ?? []];
  if (receipts.length > 0) out.receipts = receipts;
  else delete out.receipts;
  return out;
}
function describeHttpError(e) {
  if (e?.status) return `HTTP ${e.status}`;
  if (e?.kind === "too_large") return "segment too large";
  return e?.message ?? e?.kind ?? String(e);
}
export {
  DEFAULT_CORE_CONFIG,
  DEFAULT_MAX_PEERS,
  DEFAULT_MAX_STORE_BYTES,
  DEFAULT_MAX_STORE_SEGMENTS,
  DEFAULT_REPORT_INTERVAL_MS,
  DEFAULT_SCHEDULER_CONFIG,
  NodeCore,
  P2PEngine,
  RECEIPT_DOMAIN,
  Scheduler,
  createP2PLoader,
  fetchRenditions,
  frame_exports as frame,
  loadOrCreateKey,
  loadingTimes,
  newLoadStats,
  pageNodeKey,
  parseRenditions,
  receiptText,
  renditionOfUrl,
  sessionKey,
  signal_exports as signal,
  updateRate,
  watchStalls
};
