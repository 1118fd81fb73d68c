// Verified segments kept in memory to play and to upload to other peers, bounded by bytes with
// least-recently-used eviction. Only whole segments that were verified against the gateway's digest
// (or fetched from the gateway over HTTP) go in.

export const DEFAULT_MAX_STORE_BYTES = 64 * 1024 * 1024;

/**
 * @typedef {object} TransferTiming the real times of the transfer that produced the bytes
 *   (performance.now() scale, ms)
 * @property {number} start  the request was made
 * @property {number} first  the first byte arrived
 * @property {number} end    the last byte arrived
 *
 * @typedef {object} StoredSegment
 * @property {string} id
 * @property {Uint8Array} bytes
 * @property {string} sha256   lowercase hex SHA-256 of `bytes`
 * @property {"http"|"p2p"} source
 * @property {TransferTiming} timing
 */

export class SegmentStore {
  /** @param {number} [maxBytes] */
  constructor(maxBytes = DEFAULT_MAX_STORE_BYTES) {
    if (!(maxBytes >= 0)) throw new RangeError(`maxBytes must be a non-negative number, got ${maxBytes}`);
    this.maxBytes = maxBytes;
    this.bytes = 0;
    /** @type {Map<string, StoredSegment>} least recently used first */
    this.entries = new Map();
    /** @type {Map<string, number>} when each id was stored (a counter), for `newestIds` */
    this.storedSeq = new Map();
    this.seq = 0;
    /** Called with the ids evicted or replaced, so announcements can follow. */
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
}
