// Signalling: JSON text messages between a peer and the gateway's tracker over the WebSocket at
// /p2p/v1/ws?stream=PATH (docs/PROTOCOL.md §2), matching peer-assist/src/protocol/signal.rs.
//
// Decoding is strict, in the Rust order: size (UTF-8 bytes) → TooLarge; JSON syntax, unknown
// `type`, unknown fields at any depth, missing fields and wrong JSON types → Malformed (except a
// join/welcome whose `v` is an integer other than 1: UnsupportedVersion); then value rules →
// Invalid. Decoded messages are rebuilt with their members in canonical order, so encoding a decoded
// message gives back the canonical text (§9): no whitespace, members in protocol order, optional
// members omitted when absent, object keys inside `payload` sorted.
//
// Known differences from serde_json, outside the vectors: JSON.parse keeps the last of duplicate
// keys (serde rejects duplicate fields), cannot tell `1.0` from `1`, and integers above 2^53 − 1 are
// rejected here (the protocol keeps integers below 2^53 for JavaScript's sake).

import { validateSegmentId } from './frame.js';

export const SIGNAL_VERSION = 1;
export const MAX_SIGNAL_LEN = 64 * 1024;
export const MAX_PEER_ID_LEN = 64;
export const MAX_LIST_LEN = 256;
/** Most receipts in one `report`. */
export const MAX_RECEIPTS = 64;

export const ERROR_CODES = Object.freeze([
  'bad_message',
  'unsupported_version',
  'unauthorized',
  'not_found',
  'swarm_full',
  'too_many_swarms',
  'rate_limited',
  'message_too_large',
  'unavailable',
  'internal',
]);
const TRANSPORTS = ['quic', 'webrtc'];
/** Receipt signature schemes (accounting/receipt.rs `Alg`). */
export const RECEIPT_ALGS = Object.freeze(['ed25519', 'p256']);
const U32_MAX = 0xffff_ffff;
const U64_MAX_AS_NUMBER = 2 ** 64; // the first Number above u64::MAX

/** Why a signalling message was rejected; `kind` is the vector file's SignalError name. */
export class SignalError extends Error {
  /** @param {"TooLarge"|"Malformed"|"UnsupportedVersion"|"Invalid"} kind */
  constructor(kind, message) {
    super(message);
    this.name = 'SignalError';
    this.kind = kind;
  }
}

const malformed = (msg) => new SignalError('Malformed', `malformed message: ${msg}`);
const invalid = (msg) => new SignalError('Invalid', `invalid message: ${msg}`);

// ---------------------------------------------------------------------------------------------
// Shapes (serde's structure): each returns the value rebuilt in canonical order or throws Malformed.

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(v, at) {
  if (typeof v !== 'string') throw malformed(`${at}: expected a string`);
  return v;
}

function bool(v, at) {
  if (typeof v !== 'boolean') throw malformed(`${at}: expected a boolean`);
  return v;
}

const uint = (max) => (v, at) => {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw malformed(`${at}: expected an unsigned integer`);
  }
  if (v > max) throw malformed(`${at}: ${v} is out of range`);
  return v;
};
const u32 = uint(U32_MAX);
const u64 = uint(Number.MAX_SAFE_INTEGER);

const oneOf = (names) => (v, at) => {
  if (!names.includes(v)) throw malformed(`${at}: unknown variant ${JSON.stringify(v)}`);
  return v;
};

const list = (item) => (v, at) => {
  if (!Array.isArray(v)) throw malformed(`${at}: expected an array`);
  return v.map((x, i) => item(x, `${at}[${i}]`));
};

/** Any JSON value, with object keys sorted (serde_json::Value re-serializes maps sorted). */
function anyValue(v, at) {
  if (Array.isArray(v)) return v.map((x, i) => anyValue(x, `${at}[${i}]`));
  if (isObject(v)) {
    const out = {};
    for (const k of Object.keys(v).sort(byUtf8)) out[k] = anyValue(v[k], `${at}.${k}`);
    return out;
  }
  if (typeof v === 'number' && !Number.isFinite(v)) throw malformed(`${at}: not a JSON number`);
  if (v === undefined || typeof v === 'function' || typeof v === 'bigint' || typeof v === 'symbol') {
    throw malformed(`${at}: not a JSON value`);
  }
  return v;
}

/** serde_json sorts map keys by their bytes; for strings that is code point order. */
function byUtf8(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

const REQUIRED = 0;
const OPTIONAL = 1; // omitted when absent; null counts as absent (serde Option)
const DEFAULT_ZERO = 2; // a missing counter is 0 (serde default)
const OMIT_EMPTY = 3; // a missing list is empty; an empty list is omitted

/**
 * A struct with deny_unknown_fields. `fields` is [name, shape, presence?][] in canonical order.
 * @param {Array<[string, Function, number?]>} fields
 */
const struct = (fields, skip = []) => {
  const known = new Set([...fields.map((f) => f[0]), ...skip]);
  return (v, at) => {
    if (!isObject(v)) throw malformed(`${at}: expected an object`);
    for (const k of Object.keys(v)) if (!known.has(k)) throw malformed(`${at}: unknown field \`${k}\``);
    const out = {};
    for (const [name, shape, presence = REQUIRED] of fields) {
      const value = v[name];
      const where = at ? `${at}.${name}` : name;
      if (!(name in v) || (value === null && presence === OPTIONAL)) {
        if (presence === REQUIRED) throw malformed(`missing field \`${where}\``);
        if (presence === DEFAULT_ZERO) out[name] = 0;
        continue;
      }
      const shaped = shape(value, where);
      if (presence === OMIT_EMPTY && shaped.length === 0) continue;
      out[name] = shaped;
    }
    return out;
  };
};

const quicAddress = struct([
  ['addr', str],
  ['fingerprint', str],
]);

/**
 * A signed delivery receipt (peer-assist/src/accounting/receipt.rs `Receipt`). Only its JSON shape
 * is checked here (and that the counters are safe integers); its form and signature are the
 * gateway's to check.
 */
const receipt = struct([
  ['alg', oneOf(RECEIPT_ALGS)],
  ['uploader', str],
  ['receiver', str],
  ['swarm', str],
  ['segment', str],
  ['sha256', str],
  ['bytes', u64],
  ['time', u64],
  ['nonce', str],
  ['sig', str],
]);

const CLIENT_SHAPES = {
  join: struct(
    [
      ['v', u32],
      ['stream', str],
      ['rendition', u32],
      [
        'capabilities',
        struct([
          ['transports', list(oneOf(TRANSPORTS))],
          ['upload', bool],
          ['upload_rate', u64, OPTIONAL],
        ]),
      ],
      ['token', str, OPTIONAL],
      ['quic', quicAddress, OPTIONAL],
      ['key', str, OPTIONAL],
    ],
    ['type'],
  ),
  relay: struct(
    [
      ['to', str],
      ['payload', anyValue],
    ],
    ['type'],
  ),
  report: struct(
    [
      ['http_bytes', u64],
      ['p2p_bytes', u64],
      ['http_segments', u64],
      ['p2p_segments', u64],
      ['uploaded_bytes', u64],
      [
        'failures',
        struct([
          ['timeout', u64, DEFAULT_ZERO],
          ['mismatch', u64, DEFAULT_ZERO],
          ['absent', u64, DEFAULT_ZERO],
          ['disconnect', u64, DEFAULT_ZERO],
        ]),
      ],
      [
        'peers',
        list(
          struct([
            ['peer_id', str],
            ['ok', u64],
            ['failed', u64],
            ['mismatch', u64],
            ['bytes', u64],
          ]),
        ),
        OMIT_EMPTY,
      ],
      ['receipts', list(receipt), OMIT_EMPTY],
      ['upload_rate', u64, OPTIONAL],
    ],
    ['type'],
  ),
  leave: struct([], ['type']),
};

const SERVER_SHAPES = {
  welcome: struct(
    [
      ['v', u32],
      ['peer_id', str],
      ['swarm', str],
      ['playlist', str],
      ['max_peers', u32],
    ],
    ['type'],
  ),
  peers: struct(
    [
      [
        'peers',
        list(
          struct([
            ['peer_id', str],
            ['region', str, OPTIONAL],
            ['transports', list(oneOf(TRANSPORTS))],
            ['quic', quicAddress, OPTIONAL],
            ['key', str, OPTIONAL],
            ['upload_rate', u64, OPTIONAL],
          ]),
        ),
      ],
    ],
    ['type'],
  ),
  relay: struct(
    [
      ['from', str],
      ['payload', anyValue],
    ],
    ['type'],
  ),
  digests: struct(
    [
      ['playlist', str],
      [
        'segments',
        list(
          struct([
            ['id', str],
            ['sha256', str],
            ['size', u64],
          ]),
        ),
      ],
    ],
    ['type'],
  ),
  error: struct(
    [
      ['code', oneOf(ERROR_CODES)],
      ['message', str],
      // With swarm_full: the shard to join instead (`&shard=` on the WebSocket URL).
      ['shard', u32, OPTIONAL],
    ],
    ['type'],
  ),
};

// ---------------------------------------------------------------------------------------------
// Value rules (Invalid), applied after the shape.

function checkVersion(v) {
  if (v !== SIGNAL_VERSION) throw new SignalError('UnsupportedVersion', `unsupported signalling version ${v}`);
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

const LOWER_HEX_64 = /^[0-9a-f]{64}$/;

function checkQuic(q) {
  if (!LOWER_HEX_64.test(q.fingerprint)) throw invalid('quic.fingerprint: not 64 lowercase hex digits');
}

/** A public key: lowercase hex of 32 (Ed25519) or 65 (P-256, uncompressed) bytes. */
const PUBLIC_KEY = /^(?:[0-9a-f]{64}|[0-9a-f]{130})$/;

function checkKey(field, key) {
  if (!PUBLIC_KEY.test(key)) throw invalid(`${field}: not a public key (64 or 130 lowercase hex digits)`);
}

const CLIENT_RULES = {
  join(m) {
    checkVersion(m.v);
    checkPath('stream', m.stream);
    if (m.quic) checkQuic(m.quic);
    if (m.key !== undefined) checkKey('key', m.key);
  },
  relay(m) {
    checkPeerId('to', m.to);
  },
  report(m) {
    const peers = m.peers ?? [];
    checkList('peers', peers.length);
    const receipts = m.receipts ?? [];
    if (receipts.length > MAX_RECEIPTS) {
      throw invalid(`receipts: ${receipts.length} entries, at most ${MAX_RECEIPTS}`);
    }
    for (const p of peers) checkPeerId('peer_id', p.peer_id);
  },
  leave() {},
};

const SERVER_RULES = {
  welcome(m) {
    checkVersion(m.v);
    checkPeerId('peer_id', m.peer_id);
    checkPath('playlist', m.playlist);
  },
  peers(m) {
    checkList('peers', m.peers.length);
    for (const p of m.peers) {
      checkPeerId('peer_id', p.peer_id);
      if (p.quic) checkQuic(p.quic);
      if (p.key !== undefined) checkKey('key', p.key);
    }
  },
  relay(m) {
    checkPeerId('from', m.from);
  },
  digests(m) {
    checkPath('playlist', m.playlist);
    checkList('segments', m.segments.length);
    for (const d of m.segments) {
      checkPath('id', d.id);
      if (!LOWER_HEX_64.test(d.sha256)) throw invalid('sha256: not 64 lowercase hex digits');
    }
  },
  error() {},
};

// ---------------------------------------------------------------------------------------------
// Entry points

/** Parses and validates one client → gateway text message. */
export function decodeClient(text) {
  return decode(text, CLIENT_SHAPES, CLIENT_RULES, 'join');
}

/** Parses and validates one gateway → client text message. */
export function decodeServer(text) {
  return decode(text, SERVER_SHAPES, SERVER_RULES, 'welcome');
}

/**
 * Canonical JSON text of a client message; throws SignalError for a message the gateway would
 * reject (so a bug shows up here instead of as a fatal bad_message).
 */
export function encodeClient(msg) {
  return encode(msg, CLIENT_SHAPES, CLIENT_RULES);
}

/** Canonical JSON text of a server message (for tests and tools). */
export function encodeServer(msg) {
  return encode(msg, SERVER_SHAPES, SERVER_RULES);
}

/** UTF-8 byte length of a string (lone surrogates count as the 3 bytes of U+FFFD). */
export function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

function decode(text, shapes, rules, versionedType) {
  if (typeof text !== 'string') throw malformed('signalling messages are text');
  // A UTF-8 byte is at least one UTF-16 unit, so a long string is over the limit without counting.
  if (text.length > MAX_SIGNAL_LEN || utf8Length(text) > MAX_SIGNAL_LEN) {
    throw new SignalError('TooLarge', `message of ${utf8Length(text)} bytes exceeds ${MAX_SIGNAL_LEN}`);
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

/** Checks the structure and rebuilds the message with `type` first, members in canonical order. */
function shape(value, shapes, versionedType) {
  try {
    if (!isObject(value)) throw malformed('expected a JSON object');
    if (!('type' in value)) throw malformed('missing field `type`');
    const type = value.type;
    if (typeof type !== 'string' || !Object.hasOwn(shapes, type)) {
      throw malformed(`unknown variant ${JSON.stringify(type)}`);
    }
    checkStrings(value, 'message');
    return { type, ...shapes[type](value, '') };
  } catch (e) {
    // A newer peer's join/welcome may well have fields this version lacks: say so, not Malformed.
    const v = value?.v;
    const versioned =
      versionedType !== null &&
      isObject(value) &&
      value.type === versionedType &&
      typeof v === 'number' &&
      Number.isInteger(v) &&
      v >= 0 &&
      v < U64_MAX_AS_NUMBER;
    if (versioned && v !== SIGNAL_VERSION) {
      throw new SignalError('UnsupportedVersion', `unsupported signalling version ${v}`);
    }
    throw e;
  }
}

/** serde_json rejects lone surrogates (from \uD800-style escapes); so does this. */
function checkStrings(v, at) {
  if (typeof v === 'string') {
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

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const isWellFormed = (s) => (typeof s.isWellFormed === 'function' ? s.isWellFormed() : !LONE_SURROGATE.test(s));
