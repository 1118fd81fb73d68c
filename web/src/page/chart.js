// Draws the delivery chart on a <canvas>: bytes from peers and over HTTP as stacked areas (kbit/s,
// or Mbit/s from 10 Mbit/s on; left scale) and the live latency as a line (seconds, right scale),
// over the last minutes. Where things go is computed by layoutChart (series.js); this only paints.
// Colours come from the page's CSS (--peers, --http, --latency, --muted, --grid).

import { layoutChart } from './series.js';

/**
 * Paints `points` (DeliveryHistory.points()) on `canvas`, sized to its CSS box at the device's
 * pixel ratio. Returns false when the canvas has no 2D context or no size (nothing painted).
 */
export function drawChart(canvas, points, { spanMs = 180_000 } = {}) {
  const ctx = canvas.getContext?.('2d');
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!ctx || !(width > 0) || !(height > 0)) return false;
  const ratio = Math.min(Math.max(globalThis.devicePixelRatio || 1, 1), 3);
  const w = Math.round(width * ratio);
  const h = Math.round(height * ratio);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const style = getComputedStyle(canvas);
  const color = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  const peers = color('--peers', '#0b6bcb');
  const http = color('--http', '#9aa1ab');
  const latencyColor = color('--latency', '#d97706');
  const muted = color('--muted', '#5f6672');
  const grid = color('--grid', 'rgba(127,127,127,0.25)');

  const L = layoutChart(points, { width, height, spanMs });
  const { plot, baseline } = L;
  const right = plot.left + plot.width;
  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;

  // Grid and the left scale (kbit/s; Mbit/s from 10 Mbit/s on, for short labels).
  const mega = L.rate.max >= 10_000;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const v of L.rate.ticks) {
    const y = Math.round(L.rate.y(v)) + 0.5;
    ctx.strokeStyle = grid;
    ctx.beginPath();
    ctx.moveTo(plot.left, y);
    ctx.lineTo(right, y);
    ctx.stroke();
    ctx.fillStyle = muted;
    ctx.fillText(String(mega ? Number((v / 1000).toPrecision(6)) : v), plot.left - 6, y);
  }
  ctx.save();
  ctx.translate(10, plot.top + plot.height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = 'center';
  ctx.fillText(mega ? 'Mbit/s' : 'kbit/s', 0, 0);
  ctx.restore();

  // The right scale (latency, s).
  ctx.textAlign = 'left';
  for (const v of L.latencyScale.ticks) {
    ctx.fillStyle = latencyColor;
    ctx.fillText(`${v} s`, right + 6, L.latencyScale.y(v));
  }

  // The time axis: minutes before now.
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  ctx.fillStyle = muted;
  const minutes = Math.floor(spanMs / 60_000);
  for (let m = minutes; m >= 0; m--) {
    const x = plot.left + plot.width * (1 - (m * 60_000) / spanMs);
    ctx.fillText(m === 0 ? 'now' : `−${m} min`, Math.min(Math.max(x, plot.left + 16), right - 12), baseline + 5);
  }

  if (points.length > 0) {
    // Peers at the bottom, HTTP stacked on top of them.
    band(ctx, L.p2p, null, baseline, peers);
    band(ctx, L.total, L.p2p, baseline, http);
    ctx.strokeStyle = latencyColor;
    ctx.lineWidth = 2;
    for (const run of L.latency) {
      ctx.beginPath();
      run.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
      if (run.length === 1) ctx.lineTo(run[0][0] + 1, run[0][1]);
      ctx.stroke();
    }
  }
  ctx.strokeStyle = muted;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(plot.left, baseline + 0.5);
  ctx.lineTo(right, baseline + 0.5);
  ctx.stroke();
  return true;
}

/** Fills between `top` and `under` (another line, or the baseline when null). */
function band(ctx, top, under, baseline, fill) {
  if (top.length === 0) return;
  ctx.beginPath();
  top.forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
  if (under) {
    for (let i = under.length - 1; i >= 0; i--) ctx.lineTo(under[i][0], under[i][1]);
  } else {
    ctx.lineTo(top[top.length - 1][0], baseline);
    ctx.lineTo(top[0][0], baseline);
  }
  ctx.closePath();
  ctx.fillStyle = fill;
  ctx.fill();
}
