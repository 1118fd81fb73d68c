// The hls.js fragment loader (config.fLoader) that gets media segments through the P2P engine:
// main fragments through the engine, alternate audio and subtitle fragments through the engine of
// their track (`engine.engineFor`), each in the swarm of its own rendition. Playlists keep hls.js's
// default loader; LL-HLS parts and anything not on the gateway go through hls.js's default loader
// too. A byte-range fragment is a segment of its own (its id names the range, util.rangeId).
//
// `stats` is hls.js's LoadStats, filled truthfully: loading.start/first/end span the real transfer
// that produced the bytes (HTTP or peer), so hls.js's bandwidth estimate sees real transfer times,
// never a near-zero copy out of memory. For a segment that was already in the store (fetched
// earlier), the transfer's real durations are kept and placed so that it ends when the bytes are
// handed over — hls.js measures from loading.start to the end of parsing, and an old start would make
// its estimate far too low instead.

import { now } from './util.js';

/** A fresh hls.js LoadStats. */
export function newLoadStats() {
  return {
    aborted: false,
    loaded: 0,
    retry: 0,
    total: 0,
    chunkCount: 0,
    bwEstimate: 0,
    loading: { start: 0, first: 0, end: 0 },
    parsing: { start: 0, end: 0 },
    buffering: { start: 0, first: 0, end: 0 },
  };
}

/**
 * The loading times hls.js should see for a transfer that ran from `timing.start` to `timing.end`
 * (first byte at `timing.first`) and whose bytes are handed over at `deliveredAt`: the same
 * durations, ending at `deliveredAt` (unchanged when it is handed over as it completes).
 */
export function loadingTimes(timing, deliveredAt) {
  const shift = Math.max(0, deliveredAt - timing.end);
  const first = Math.min(Math.max(timing.first, timing.start), timing.end);
  return { start: timing.start + shift, first: first + shift, end: timing.end + shift };
}

/**
 * @param {typeof import('hls.js').default} Hls the hls.js class (for its default loader)
 * @param {import('./engine.js').P2PEngine} engine
 */
export function createP2PLoader(Hls, engine) {
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
      if (this.context) throw new Error('Loader can only be used once.');
      this.context = context;
      this.callbacks = callbacks;
      const frag = context.frag;
      // A byte-range segment is a segment of its own for peers: [rangeStart, rangeEnd).
      const ranged = (context.rangeStart ?? 0) !== 0 || (context.rangeEnd ?? 0) !== 0;
      const range = ranged ? [context.rangeStart ?? 0, context.rangeEnd ?? 0] : null;
      // Each track (main, alternate audio, subtitles) has its engine, in the swarm of its rendition.
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
        onError: (e) => this.fail(e),
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
          engine.countHttpOnly(typeof data === 'string' ? data.length : (data?.byteLength ?? 0));
          callbacks.onSuccess(response, stats, ctx, details);
        },
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
      cb.onError({ code: error.code ?? 0, text: error.text ?? 'segment fetch failed' }, this.context, null, this.stats);
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
