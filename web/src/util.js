// Small helpers shared by the engine's parts.

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]];
  return s;
}

/** Bytes of a lowercase or uppercase hex string (even length, hex digits only). */
export function fromHex(hex) {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error(`not hex: ${hex.slice(0, 20)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Lowercase hex SHA-256 of bytes, by WebCrypto. */
export async function sha256Hex(bytes) {
  return toHex(new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes)));
}

/**
 * Orders strings by code point, which is the byte order of their UTF-8 (Rust's `String` order);
 * JavaScript's `<` compares UTF-16 units, which puts U+10000 and above before U+E000–U+FFFF.
 */
export function compareIds(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codeOrder(x) - codeOrder(y);
  }
  return a.length - b.length;
}

/** A UTF-16 unit's rank in code point order: surrogates (code points ≥ U+10000) after U+FFFF. */
const codeOrder = (u) => (u >= 0xd800 && u <= 0xdfff ? u + 0x2000 : u >= 0xe000 ? u - 0x800 : u);

/**
 * The gateway path `url` names (the browser's URL parser resolves it against `base` and
 * percent-encodes it; query and fragment dropped): a segment id, or a playlist's path. Null when
 * it is not a URL on `origin` (the gateway's).
 * @param {string} url
 * @param {string} base an absolute URL to resolve a relative `url` against
 * @param {string} [origin] default: `base`'s
 */
export function gatewayPath(url, base, origin = null) {
  try {
    const u = new URL(url, base);
    return u.origin === (origin ?? new URL(base).origin) ? u.pathname : null;
  } catch {
    return null;
  }
}

/**
 * The segment id of bytes [start, end) of the file at gateway path `path` (an EXT-X-BYTERANGE
 * segment): `${path}#bytes=${first}-${last}`, as `peer_assist::hls::range_id`; null for an empty
 * or invalid range.
 */
export function rangeId(path, start, end) {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end <= start) return null;
  return `${path}#bytes=${start}-${end - 1}`;
}

/**
 * A segment id split into the gateway path to GET and, for a byte-range segment, its range
 * `{offset, length}` (null otherwise), as `peer_assist::hls::split_range_id`.
 * @returns {{path: string, range: {offset: number, length: number} | null}}
 */
export function splitRangeId(id) {
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

/** Concatenates byte arrays into one. */
export function concatBytes(parts, total = parts.reduce((n, p) => n + p.length, 0)) {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The time source of the engine: performance.now() (ms), the scale hls.js's stats use. */
export const now = () => globalThis.performance.now();

/**
 * A token bucket counting messages: `take()` is true when one may be sent now.
 * @param {number} rate tokens per second
 * @param {number} burst capacity
 */
export class TokenBucket {
  constructor(rate, burst, at = now()) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.last = at;
  }

  refill(at) {
    this.tokens = Math.min(this.burst, this.tokens + (Math.max(0, at - this.last) / 1000) * this.rate);
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
    return this.tokens >= 1 ? 0 : ((1 - this.tokens) / this.rate) * 1000;
  }
}

/**
 * Reconnect backoff: 1 s doubling to 30 s by default, each delay drawn in [d/2, d) so that the
 * peers of a gateway that went away do not all come back at the same instant (as the native node's).
 */
export class Backoff {
  constructor(firstMs = 1000, maxMs = 30_000) {
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
}

/**
 * Warnings that are counted and logged (console.warn), the first few of each kind in full and then
 * one in a hundred, so a misbehaving peer cannot flood the console.
 */
export class WarningLog {
  constructor(prefix = '[p2p]', onCount = () => {}) {
    this.prefix = prefix;
    this.onCount = onCount;
    this.byKind = new Map();
    this.total = 0;
  }

  /** @param {string} kind a short stable label, e.g. "bad-frame" */
  warn(kind, ...details) {
    const n = (this.byKind.get(kind) ?? 0) + 1;
    if (this.byKind.size < 200 || this.byKind.has(kind)) this.byKind.set(kind, n);
    this.total++;
    this.onCount(this.total, kind);
    if (n <= 10 || n % 100 === 0) {
      console.warn(this.prefix, kind, ...details, n > 10 ? `(${n} times)` : '');
    }
  }
}

/** A Map with a size bound that forgets its oldest insertions first. */
export class BoundedMap extends Map {
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
}
