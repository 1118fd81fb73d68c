// The browser's node core replays the traces of the Rust core (peer-assist/tests/vectors/
// node_traces.json): built from the trace's config and peer id at t = 0, fed every step's input (or
// woken for a timeout) at the step's time, it must ask for exactly the outputs the Rust core asked
// for, in order, and want to be woken when the Rust core did. A JS port that drifts fails here.

import { createHash } from 'node:crypto';
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { NodeCore } from '../../src/core.js';
import { decodeServer } from '../../src/protocol/signal.js';
import { hex, loadVectors, unhex } from './vectors.js';

const vectors = loadVectors('node_traces.json');

// ---------------------------------------------------------------------------------------------
// Trace JSON → core inputs

/** Byte i of segment n: ((i × 2654435761) + (n × 2246822519)) >> 24, in 32-bit unsigned arithmetic. */
function segmentBytes(n, from, to) {
  const salt = Math.imul(n, 2_246_822_519);
  const out = new Uint8Array(to - from);
  for (let i = from; i < to; i++) out[i - from] = (((Math.imul(i, 2_654_435_761) + salt) >>> 0) >>> 24) & 0xff;
  return out;
}

/** Bytes from outside the core: {segment, from, to, corrupt?} or {hex}. */
function inputBytes(ref) {
  if ('hex' in ref) return unhex(ref.hex);
  const bytes = segmentBytes(ref.segment, ref.from, ref.to);
  if (ref.corrupt) for (let i = 0; i < bytes.length; i += 97) bytes[i] ^= 0x5a;
  return bytes;
}

function inputFrame(f) {
  const frame = { ...f };
  if ('digest_hex' in f) {
    frame.digest = unhex(f.digest_hex);
    delete frame.digest_hex;
  }
  if (f.type === 'chunk') frame.data = inputBytes(f.data);
  return frame;
}

function decodeInput(input) {
  switch (input.type) {
    case 'signal':
      // As the engine gets it: through the strict signalling decoder.
      return { type: 'signal', message: decodeServer(JSON.stringify(input.message)) };
    case 'frame':
      return { ...input, frame: inputFrame(input.frame) };
    case 'http':
      return 'ok' in input ? { ...input, ok: inputBytes(input.ok) } : input;
    default:
      return input;
  }
}

// ---------------------------------------------------------------------------------------------
// Core outputs → trace JSON

/** Bytes the core produced: their length and SHA-256. */
const outputBytes = (bytes) => ({ len: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') });

function outputFrame(f) {
  const frame = { ...f };
  if (f.type === 'response') {
    frame.digest_hex = hex(f.digest);
    delete frame.digest;
  }
  if (f.type === 'chunk') frame.data = outputBytes(f.data);
  return frame;
}

function encodeOutput(o) {
  switch (o.type) {
    case 'send':
      return { ...o, frame: outputFrame(o.frame) };
    case 'verify':
      return { ...o, bytes: outputBytes(o.bytes) };
    case 'deliver':
      return 'ok' in o ? { ...o, ok: { ...o.ok, bytes: outputBytes(o.ok.bytes) } } : o;
    default:
      return o;
  }
}

/** The Rust CoreConfig of a trace as the JS core's config. */
function coreConfig(c) {
  const s = c.scheduler;
  return {
    mode: c.mode,
    transports: c.transports,
    upload: c.upload,
    uploadRate: c.upload_rate,
    privacyFloor: c.privacy_floor,
    window: c.window,
    maxStoreBytes: c.max_store_bytes,
    maxLinks: c.max_links,
    reportEveryMs: c.report_every_ms,
    prefetchAnnounced: c.prefetch_announced,
    scheduler: {
      safetyMarginMs: s.safety_margin_ms,
      peerTimeBudget: s.peer_time_budget,
      urgentWindowMs: s.urgent_window_ms,
      defaultPeerRate: s.default_peer_rate,
      httpRate: s.http_rate,
      httpFirstCount: s.http_first_count,
      defaultSegmentSize: s.default_segment_size,
    },
    test: { lie: c.test.lie, slowUpload: c.test.slow_upload },
  };
}

// ---------------------------------------------------------------------------------------------

/**
 * The simulation wakes a core a quarter millisecond after the instant it asked for, on a whole
 * millisecond (node::sim `wake_time`); 1e-6 ms absorbs the float rounding of the two languages.
 */
const wakeRange = (at) => [Math.ceil(at + 0.25 - 1e-6), Math.ceil(at + 0.25 + 1e-6)];

function replay(trace) {
  const core = new NodeCore(coreConfig(trace.config), trace.me, 0);
  trace.steps.forEach((step, i) => {
    const where = `trace "${trace.name}", step ${i} (t = ${step.t} ms, ${step.timeout ? 'timeout' : step.input.type})`;
    const wake = core.pollTimeout();
    if (step.timeout) {
      const [earliest, latest] = wake === null ? [Infinity, Infinity] : wakeRange(wake);
      assert.ok(earliest <= step.t && step.t <= latest, `${where}: the Rust core was woken now; this core asks for ${wake}`);
      core.handleTimeout(step.t);
    } else {
      if (wake !== null) assert.ok(wakeRange(wake)[1] >= step.t, `${where}: this core asked to be woken at ${wake}, before this step`);
      core.handle(decodeInput(step.input), step.t);
    }
    const outputs = [];
    for (let o = core.pollOutput(); o !== undefined; o = core.pollOutput()) outputs.push(encodeOutput(o));
    try {
      assert.deepStrictEqual(outputs, step.outputs);
    } catch {
      assert.fail(`${where}: outputs differ\n  expected: ${JSON.stringify(step.outputs)}\n  got:      ${JSON.stringify(outputs)}`);
    }
  });
}

test('node_traces.json holds driven traces of every kind of run', () => {
  assert.ok(vectors.traces.length >= 7);
  for (const t of vectors.traces) assert.equal(t.config.mode, 'driven', t.name);
});

for (const trace of vectors.traces) {
  test(`node trace: ${trace.name} (${trace.steps.length} steps)`, () => replay(trace));
}

test('only the driven mode is ported', () => {
  const config = coreConfig(vectors.traces[0].config);
  assert.throws(() => new NodeCore({ ...config, mode: 'play' }, 'p', 0), /driven/);
});
