// Binary data frames exchanged between peers (docs/PROTOCOL.md §5), byte-identical to the Rust
// implementation in peer-assist/src/protocol/frame.rs.
//
// A frame is `type: u8`, `length: u32` (payload length), `payload`; integers are big-endian, strings
// are a u16 byte length followed by UTF-8 bytes. Decoding checks, in this normative order: the type
// byte, the declared length, completeness, then the payload's fields in wire order, then trailing
// bytes. Error names are the vector file's (`FrameError.kind`).
//
// Frames are plain objects with the wire field names:
//   {type: "handshake", version, peer_id}
//   {type: "have", segments: string[]}
//   {type: "request", request_id, segment, offset}
//   {type: "response", request_id, size, offset, digest: Uint8Array(32)}
//   {type: "chunk", request_id, offset, data: Uint8Array}
//   {type: "cancel", request_id}
//   {type: "absent", request_id}
// u64 fields (offset, size) decode to a Number when at most 2^53 − 1 and to a BigInt above that
// (never equal, with ===, to any Number, so such a value cannot pass a size or offset check).

export const PROTOCOL_VERSION = 1;
export const MAGIC = Uint8Array.of(0x50, 0x32, 0x50, 0x41); // "P2PA"
export const HEADER_LEN = 5;
export const MAX_SEGMENT_ID_LEN = 1024;
export const MAX_CHUNK_LEN = 64 * 1024;
export const MAX_HAVE_IDS = 512;
export const MAX_FRAME_LEN = 70_000;
export const RECOMMENDED_CHUNK_LEN = 16 * 1024;

/** Type byte of each frame kind. */
export const FRAME_TYPES = Object.freeze({
  handshake: 0x01,
  have: 0x02,
  request: 0x03,
  response: 0x04,
  chunk: 0x05,
  cancel: 0x06,
  absent: 0x07,
});
const TYPE_NAMES = ['', 'handshake', 'have', 'request', 'response', 'chunk', 'cancel', 'absent'];

/** Why bytes could not be decoded (or a frame could not be encoded). */
export class FrameError extends Error {
  /**
   * @param {string} kind the FrameError variant name of the vectors (e.g. "Truncated")
   * @param {string} message
   * @param {number} [needed] for Incomplete: how many more bytes are needed at least
   */
  constructor(kind, message, needed) {
    super(message);
    this.name = 'FrameError';
    this.kind = kind;
    if (needed !== undefined) this.needed = needed;
  }
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/**
 * Checks a segment id: not empty, at most 1024 UTF-8 bytes, starts with '/', no NUL.
 * @param {string} id
 * @param {number} [byteLength] its UTF-8 length, when already known
 */
export function validateSegmentId(id, byteLength) {
  const len = byteLength ?? utf8Encoder.encode(id).length;
  let reason = null;
  if (id.length === 0) reason = 'empty';
  else if (len > MAX_SEGMENT_ID_LEN) reason = 'too long';
  else if (id[0] !== '/') reason = "does not start with '/'";
  else if (id.includes('\0')) reason = 'contains NUL';
  if (reason) throw new FrameError('InvalidSegmentId', `invalid segment id: ${reason}`);
}

// ---------------------------------------------------------------------------------------------
// Encoding

/**
 * Encodes one frame (header + payload). Throws FrameError for a frame a receiver would reject
 * (unknown type, version ≠ 1, invalid segment id, too many ids, chunk or frame too large, integers
 * out of range): the sender finds out instead of the peer closing the link.
 * @param {object} frame
 * @returns {Uint8Array}
 */
export function encodeFrame(frame) {
  const type = FRAME_TYPES[frame?.type];
  if (!type) throw new FrameError('UnknownType', `unknown frame type ${String(frame?.type)}`);
  const w = new Writer();
  switch (frame.type) {
    case 'handshake':
      if (frame.version !== PROTOCOL_VERSION) {
        throw new FrameError('UnsupportedVersion', `unsupported protocol version ${frame.version}`);
      }
      w.bytes(MAGIC);
      w.u16(frame.version);
      w.str(frame.peer_id);
      break;
    case 'have': {
      const segments = frame.segments;
      if (segments.length > MAX_HAVE_IDS) {
        throw new FrameError('TooManyIds', `too many segment ids: ${segments.length}`);
      }
      w.u16(segments.length);
      for (const s of segments) w.segment(s);
      break;
    }
    case 'request':
      w.u32(frame.request_id);
      w.u64(frame.offset);
      w.segment(frame.segment);
      break;
    case 'response':
      if (!(frame.digest instanceof Uint8Array) || frame.digest.length !== 32) {
        throw new FrameError('Truncated', 'a response digest is 32 bytes');
      }
      w.u32(frame.request_id);
      w.u64(frame.size);
      w.u64(frame.offset);
      w.bytes(frame.digest);
      break;
    case 'chunk':
      if (frame.data.length > MAX_CHUNK_LEN) {
        throw new FrameError('ChunkTooLarge', `chunk of ${frame.data.length} bytes exceeds the limit`);
      }
      w.u32(frame.request_id);
      w.u64(frame.offset);
      w.bytes(frame.data);
      break;
    case 'cancel':
    case 'absent':
      w.u32(frame.request_id);
      break;
  }
  const payload = w.finish();
  if (payload.length > MAX_FRAME_LEN) {
    throw new FrameError('TooLarge', `payload of ${payload.length} bytes exceeds ${MAX_FRAME_LEN}`);
  }
  const out = new Uint8Array(HEADER_LEN + payload.length);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, HEADER_LEN);
  return out;
}

/**
 * The encoded length of a frame (header included) without encoding it: what `encodeFrame(frame)
 * .length` gives for a valid frame.
 * @param {object} frame
 */
export function encodedLen(frame) {
  const str = (s) => 2 + utf8Encoder.encode(s).length;
  let payload;
  switch (frame.type) {
    case 'handshake':
      payload = MAGIC.length + 2 + str(frame.peer_id);
      break;
    case 'have':
      payload = 2 + frame.segments.reduce((n, s) => n + str(s), 0);
      break;
    case 'request':
      payload = 4 + 8 + str(frame.segment);
      break;
    case 'response':
      payload = 4 + 8 + 8 + 32;
      break;
    case 'chunk':
      payload = 4 + 8 + frame.data.length;
      break;
    case 'cancel':
    case 'absent':
      payload = 4;
      break;
    default:
      throw new FrameError('UnknownType', `unknown frame type ${String(frame?.type)}`);
  }
  return HEADER_LEN + payload;
}

/** Appends big-endian fields to a growing buffer. */
class Writer {
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
    checkUint(v, 0xffff, 'u16');
    this.fixed(2, (d) => d.setUint16(0, v));
  }

  u32(v) {
    checkUint(v, 0xffff_ffff, 'u32');
    this.fixed(4, (d) => d.setUint32(0, v));
  }

  u64(v) {
    const big = typeof v === 'bigint' ? v : (checkUint(v, Number.MAX_SAFE_INTEGER, 'u64'), BigInt(v));
    if (big < 0n || big > 0xffff_ffff_ffff_ffffn) throw new RangeError(`u64 out of range: ${v}`);
    this.fixed(8, (d) => d.setBigUint64(0, big));
  }

  str(s) {
    const b = utf8Encoder.encode(s);
    if (b.length > 0xffff) throw new RangeError(`string of ${b.length} bytes is too long`);
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
}

function checkUint(v, max, what) {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`${what} out of range: ${v}`);
}

// ---------------------------------------------------------------------------------------------
// Decoding

/**
 * Decodes one frame from the start of `buf`, which may hold a partial frame or several frames
 * (a stream). Returns the frame and the number of bytes it occupied; throws FrameError, with
 * kind "Incomplete" (and `needed`) when `buf` is a proper prefix of a frame that is valid so far.
 * @param {Uint8Array} buf
 * @returns {{frame: object, used: number}}
 */
export function decodeFrame(buf) {
  if (buf.length === 0) throw incomplete(HEADER_LEN);
  const type = buf[0];
  if (type < FRAME_TYPES.handshake || type > FRAME_TYPES.absent) {
    throw new FrameError('UnknownType', `unknown frame type 0x${type.toString(16).padStart(2, '0')}`);
  }
  if (buf.length < HEADER_LEN) throw incomplete(HEADER_LEN - buf.length);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const len = view.getUint32(1);
  if (len > MAX_FRAME_LEN) {
    throw new FrameError('TooLarge', `declared payload length ${len} exceeds ${MAX_FRAME_LEN}`);
  }
  const total = HEADER_LEN + len;
  if (buf.length < total) throw incomplete(total - buf.length);
  const frame = decodePayload(type, buf.subarray(HEADER_LEN, total));
  return { frame, used: total };
}

/**
 * Decodes a buffer that holds exactly one frame (one data-channel message): like decodeFrame, and
 * bytes after the frame are TrailingBytes.
 * @param {Uint8Array | ArrayBuffer} buf
 */
export function decodeFrameExact(buf) {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  const { frame, used } = decodeFrame(bytes);
  if (used !== bytes.length) throw new FrameError('TrailingBytes', 'bytes after the frame');
  return frame;
}

function incomplete(needed) {
  return new FrameError('Incomplete', `incomplete frame: ${needed} more bytes needed`, needed);
}

/** A cursor over one payload; reading past its end is Truncated. */
class Reader {
  /** @param {Uint8Array} buf */
  constructor(buf) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.at = 0;
  }

  need(n) {
    if (this.buf.length - this.at < n) throw new FrameError('Truncated', 'payload shorter than its fields');
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
      throw new FrameError('InvalidUtf8', 'string is not valid UTF-8');
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
    if (this.at !== this.buf.length) throw new FrameError('TrailingBytes', "bytes after the payload's fields");
  }
}

function decodePayload(type, payload) {
  const r = new Reader(payload);
  let frame;
  switch (TYPE_NAMES[type]) {
    case 'handshake': {
      const magic = r.take(4);
      if (!MAGIC.every((b, i) => magic[i] === b)) throw new FrameError('BadMagic', 'bad handshake magic');
      const version = r.u16();
      // Checked before the rest: a later version may lay out the rest differently.
      if (version !== PROTOCOL_VERSION) {
        throw new FrameError('UnsupportedVersion', `unsupported protocol version ${version}`);
      }
      frame = { type: 'handshake', version, peer_id: r.str().text };
      break;
    }
    case 'have': {
      const count = r.u16();
      if (count > MAX_HAVE_IDS) throw new FrameError('TooManyIds', `too many segment ids: ${count}`);
      const segments = [];
      for (let i = 0; i < count; i++) segments.push(r.segment());
      frame = { type: 'have', segments };
      break;
    }
    case 'request': {
      const request_id = r.u32();
      const offset = r.u64();
      frame = { type: 'request', request_id, segment: r.segment(), offset };
      break;
    }
    case 'response': {
      const request_id = r.u32();
      const size = r.u64();
      const offset = r.u64();
      frame = { type: 'response', request_id, size, offset, digest: r.take(32).slice() };
      break;
    }
    case 'chunk': {
      const request_id = r.u32();
      const offset = r.u64();
      const data = r.rest();
      if (data.length > MAX_CHUNK_LEN) {
        throw new FrameError('ChunkTooLarge', `chunk of ${data.length} bytes exceeds the limit`);
      }
      frame = { type: 'chunk', request_id, offset, data };
      break;
    }
    case 'cancel':
      frame = { type: 'cancel', request_id: r.u32() };
      break;
    case 'absent':
      frame = { type: 'absent', request_id: r.u32() };
      break;
  }
  r.finish();
  return frame;
}
