// The player page's time series: what it sampled each second (bytes from peers, bytes over HTTP,
// live latency), the rates drawn from them, the chart's scales and where its lines go. Pure (no
// DOM, no clock): the page gives the times; tests/unit/series.test.mjs checks them.

/** A ring of at most `capacity` items, oldest first; pushing to a full ring drops the oldest. */
export class Ring {
  constructor(capacity) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`Ring: bad capacity ${capacity}`);
    this.capacity = capacity;
    this.items = new Array(capacity);
    this.start = 0;
    this.length = 0;
  }

  push(item) {
    if (this.length < this.capacity) {
      this.items[(this.start + this.length) % this.capacity] = item;
      this.length++;
    } else {
      this.items[this.start] = item;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  /** The i-th item, 0 the oldest (negative: from the newest, -1 the newest); undefined outside. */
  at(i) {
    const k = i < 0 ? this.length + i : i;
    if (!Number.isInteger(k) || k < 0 || k >= this.length) return undefined;
    return this.items[(this.start + k) % this.capacity];
  }

  toArray() {
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.items[(this.start + i) % this.capacity];
    return out;
  }

  clear() {
    this.items = new Array(this.capacity);
    this.start = 0;
    this.length = 0;
  }
}

/**
 * What the page samples once a second: the cumulative byte counters (window.p2pStats's p2pBytes and
 * httpBytes) and the live latency (s, null when not live or not known yet), at times in ms. Rates
 * are taken over a trailing window (`rateWindowMs`, 5 s by default: segments arrive in bursts, a
 * one-second rate would be mostly zeros and spikes). Keeps `spanMs` of samples plus the window.
 */
export class DeliveryHistory {
  constructor({ spanMs = 180_000, everyMs = 1000, rateWindowMs = 5000 } = {}) {
    this.spanMs = spanMs;
    this.rateWindowMs = rateWindowMs;
    this.samples = new Ring(Math.ceil((spanMs + rateWindowMs) / everyMs) + 2);
  }

  /** One sample at `t` (ms, increasing); an earlier time than the last one is ignored. */
  add(t, p2pBytes, httpBytes, latency = null) {
    const last = this.samples.at(-1);
    if (!Number.isFinite(t) || (last && t <= last.t)) return false;
    this.samples.push({
      t,
      p2p: finiteOr(p2pBytes, 0),
      http: finiteOr(httpBytes, 0),
      latency: Number.isFinite(latency) ? latency : null,
    });
    return true;
  }

  /** Samples kept. */
  get length() {
    return this.samples.length;
  }

  /**
   * The samples of the last `spanMs` with their rates in bits/s: {t, p2pRate, httpRate, latency}.
   * The first sample has rate 0 (nothing to compare with); a counter that went down (a new
   * engine) counts as no bytes.
   */
  points() {
    const all = this.samples.toArray();
    if (all.length === 0) return [];
    const from = all[all.length - 1].t - this.spanMs;
    const out = [];
    let j = 0;
    for (let i = 0; i < all.length; i++) {
      const s = all[i];
      // The oldest sample within the window before s (not s itself).
      while (j < i - 1 && s.t - all[j].t > this.rateWindowMs) j++;
      let p2pRate = 0;
      let httpRate = 0;
      if (j < i) {
        const r = all[j];
        const seconds = (s.t - r.t) / 1000;
        p2pRate = (Math.max(0, s.p2p - r.p2p) * 8) / seconds;
        httpRate = (Math.max(0, s.http - r.http) * 8) / seconds;
      }
      if (s.t >= from) out.push({ t: s.t, p2pRate, httpRate, latency: s.latency });
    }
    return out;
  }

  /**
   * The chart's text alternative, as figures: over the samples of the last `spanMs`, the seconds
   * covered, bytes from peers and over HTTP, the share from peers (null without bytes), the
   * current rates (bits/s) and latency (s or null).
   */
  summary() {
    const all = this.samples.toArray();
    const points = this.points();
    if (points.length === 0) {
      return { seconds: 0, p2pBytes: 0, httpBytes: 0, share: null, p2pRate: 0, httpRate: 0, latency: null };
    }
    const first = all.find((s) => s.t >= points[0].t);
    const last = all[all.length - 1];
    const p2pBytes = Math.max(0, last.p2p - first.p2p);
    const httpBytes = Math.max(0, last.http - first.http);
    const now = points[points.length - 1];
    return {
      seconds: Math.round((last.t - first.t) / 1000),
      p2pBytes,
      httpBytes,
      share: p2pBytes + httpBytes > 0 ? p2pBytes / (p2pBytes + httpBytes) : null,
      p2pRate: now.p2pRate,
      httpRate: now.httpRate,
      latency: now.latency,
    };
  }
}

function finiteOr(x, fallback) {
  return Number.isFinite(x) ? x : fallback;
}

/**
 * The smallest "nice" number (1, 2, 2.5 or 5 times a power of ten) at least `x`; `min` when x is
 * not above it (a chart of nothing still has a scale).
 */
export function niceCeil(x, min = 1) {
  if (!(x > min)) return min;
  const power = 10 ** Math.floor(Math.log10(x));
  for (const step of [1, 2, 2.5, 5, 10]) {
    const v = step * power;
    // Rounding: 3 * 0.1 is 0.30000000000000004.
    if (v >= x * (1 - 1e-12)) return Number(v.toPrecision(12));
  }
  return 10 * power;
}

/** `count` + 1 evenly spaced values from 0 to `max`. */
export function ticks(max, count = 4) {
  const out = [];
  for (let i = 0; i <= count; i++) out.push(Number(((max * i) / count).toPrecision(12)));
  return out;
}

/**
 * Where the chart's lines go on a `width` × `height` canvas (CSS pixels) with margins `pad`
 * ({left, right, top, bottom}), for `points` (from DeliveryHistory.points()) over the last
 * `spanMs` up to the newest point: x grows with time, y with the value (0 at the bottom).
 *
 * Rates are stacked (peers at the bottom, HTTP on top) on the left scale, in kbit/s; the latency
 * has its own scale on the right, in seconds. Returns the plot box, both scales (maximum and
 * ticks), `p2p` and `total` (the top of each band: [x, y] per point), the baseline y, and
 * `latency` as runs of [x, y] (a point without latency breaks the line).
 */
export function layoutChart(points, { width, height, pad = { left: 54, right: 40, top: 10, bottom: 22 }, spanMs = 180_000 } = {}) {
  const plot = {
    left: pad.left,
    top: pad.top,
    width: Math.max(1, width - pad.left - pad.right),
    height: Math.max(1, height - pad.top - pad.bottom),
  };
  const bottom = plot.top + plot.height;
  const end = points.length > 0 ? points[points.length - 1].t : 0;
  const x = (t) => plot.left + ((t - (end - spanMs)) / spanMs) * plot.width;

  let maxKbps = 0;
  let maxLatency = 0;
  for (const p of points) {
    maxKbps = Math.max(maxKbps, (p.p2pRate + p.httpRate) / 1000);
    if (p.latency !== null) maxLatency = Math.max(maxLatency, p.latency);
  }
  const rateMax = niceCeil(maxKbps * 1.05, 100);
  const latencyMax = niceCeil(maxLatency * 1.1, 1);
  const yRate = (kbps) => bottom - (Math.min(kbps, rateMax) / rateMax) * plot.height;
  const yLatency = (s) => bottom - (Math.min(Math.max(0, s), latencyMax) / latencyMax) * plot.height;

  const p2p = [];
  const total = [];
  const latency = [];
  let run = null;
  for (const p of points) {
    const px = x(p.t);
    p2p.push([px, yRate(p.p2pRate / 1000)]);
    total.push([px, yRate((p.p2pRate + p.httpRate) / 1000)]);
    if (p.latency === null) {
      run = null;
    } else {
      if (run === null) {
        run = [];
        latency.push(run);
      }
      run.push([px, yLatency(p.latency)]);
    }
  }
  return {
    plot,
    baseline: bottom,
    rate: { max: rateMax, ticks: ticks(rateMax), y: yRate },
    latencyScale: { max: latencyMax, ticks: ticks(latencyMax), y: yLatency },
    p2p,
    total,
    latency,
    x,
  };
}

/** Bits/s as whole kbit/s ("850 kbit/s"); "–" when unknown. */
export function formatKbps(bitsPerSecond) {
  if (!Number.isFinite(bitsPerSecond) || bitsPerSecond < 0) return '–';
  return `${Math.round(bitsPerSecond / 1000)} kbit/s`;
}

/** Bytes in B, KiB or MiB (the page's units). */
export function formatBytes(n) {
  if (!Number.isFinite(n)) return '–';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(2)} MiB`;
}

/** Seconds with one decimal ("4.2 s"); "–" when unknown. */
export function formatSeconds(s) {
  return Number.isFinite(s) ? `${s.toFixed(1)} s` : '–';
}

/** A peer id short enough for a table cell: its first 8 characters and "…" when longer. */
export function shortPeerId(id) {
  const s = String(id ?? '');
  return s.length > 9 ? `${s.slice(0, 8)}…` : s;
}

/** The chart's summary line (its text alternative) from DeliveryHistory.summary(). */
export function summaryText(sum, spanMs = 180_000) {
  const span = spanMs % 60_000 === 0 ? `${spanMs / 60_000} min` : `${Math.round(spanMs / 1000)} s`;
  if (sum.seconds === 0) return 'Collecting the first samples…';
  const total = sum.p2pBytes + sum.httpBytes;
  const window = sum.seconds * 1000 >= spanMs - 1000 ? `Last ${span}` : `Last ${sum.seconds} s`;
  const parts = [
    total > 0
      ? `${window}: ${(100 * sum.share).toFixed(0)} % of ${formatBytes(total)} from peers.`
      : `${window}: no segment bytes.`,
    `Now ${formatKbps(sum.p2pRate)} from peers, ${formatKbps(sum.httpRate)} over HTTP.`,
  ];
  if (sum.latency !== null) parts.push(`Live latency ${formatSeconds(sum.latency)}.`);
  return parts.join(' ');
}
