// The contribution ledger (docs/LEDGER.md) with real browsers: two Chromium viewers (each in its own
// browser context, so its own IndexedDB key) on a gateway that keeps a ledger in a temporary
// directory. The second viewer signs a receipt for every segment it verified from the first; the
// gateway's tracker checks and stores them, /p2p/v1/ledger credits the first viewer's key, and the
// first viewer's page says "You helped 1 viewer". Run: node --test tests/browser/ledger.test.mjs
// (from web/), after building the Rust binaries.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { LIVE, launchBrowser, openPlayer, sleep, startGateway, waitForPlayback } from './harness.mjs';

const KEY_HEX = /^(?:[0-9a-f]{64}|[0-9a-f]{130})$/;

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** Polls `probe` every `everyMs` until it returns something truthy; throws `what()` after `timeoutMs`. */
async function until(probe, timeoutMs, what, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`not within ${timeoutMs} ms: ${await what()}`);
    await sleep(everyMs);
  }
}

async function getJson(url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  assert.equal(r.status, 200, `${url}: HTTP ${r.status}`);
  return r.json();
}

/** One epoch of the ledger (default: the current one). */
const ledgerAt = (gw, epoch) => getJson(`${gw.url}/p2p/v1/ledger${epoch === undefined ? '' : `?epoch=${epoch}`}`);

/**
 * The uploader lines of every epoch from `firstEpoch` to the current one, summed by key (a test that
 * runs across an epoch's end finds its receipts in two epochs), and the current epoch's view.
 */
async function ledgerSince(gw, firstEpoch) {
  const current = await ledgerAt(gw);
  const byKey = new Map();
  for (let epoch = firstEpoch; epoch <= current.epoch; epoch++) {
    const view = epoch === current.epoch ? current : await ledgerAt(gw, epoch);
    for (const u of view.uploaders) {
      const sum = byKey.get(u.key) ?? { key: u.key, bytes: 0, segments: 0, receivers: 0 };
      sum.bytes += u.bytes;
      sum.segments += u.segments;
      sum.receivers = Math.max(sum.receivers, u.receivers); // one receiver here: the same in each epoch
      byKey.set(u.key, sum);
    }
  }
  return { current, byKey };
}

/** Every sample of the gateway's /metrics as "name{labels}" → value. */
async function metrics(gw) {
  const r = await fetch(`${gw.url}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const samples = new Map();
  for (const line of (await r.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

const receiptsSeen = (m) =>
  [...m].filter(([k]) => k === 'p2p_receipts_accepted_total' || k.startsWith('p2p_receipts_rejected_total{'))
    .reduce((sum, [, v]) => sum + v, 0);

/** The largest segment of the demo live stream's rendition 0 now in its playlist (Content-Length). */
async function largestSegment(gw) {
  const base = new URL(LIVE.replace('master.m3u8', '240p/index.m3u8'), gw.url);
  const text = await (await fetch(base, { signal: AbortSignal.timeout(5_000) })).text();
  let largest = 0;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const r = await fetch(new URL(line, base), { method: 'HEAD', signal: AbortSignal.timeout(5_000) });
    largest = Math.max(largest, Number(r.headers.get('content-length') ?? 0));
  }
  return largest;
}

function describeViewer(name, viewer, s) {
  return `${name}: ${JSON.stringify(s)}\n${viewer.console.slice(-20).join('\n')}`;
}

describe('contribution ledger', { timeout: 120_000 }, () => {
  test('two Chromium viewers; the first is credited for what the second verified from it', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-ledger-'));
    const gw = await startGateway([
      '--ledger-path', join(dir, 'ledger.sqlite3'),
      '--ledger-key-file', join(dir, 'ledger.key'),
    ]);
    let a;
    let b;
    const why = [];
    try {
      const empty = await ledgerAt(gw);
      assert.equal(empty.epoch_seconds, 3600);
      assert.deepEqual(empty.uploaders, [], 'a fresh ledger credits no one');
      assert.match(empty.gateway_key, /^[0-9a-f]{64}$/);
      const firstEpoch = empty.epoch;

      a = await openPlayer(browser, gw, '?level=0');
      await waitForPlayback(a, 0.5, 20_000);
      await sleep(4_000); // A holds a few segments before B arrives
      const aKey = (await until(async () => (await a.stats()).nodeKey, 5_000, async () =>
        describeViewer('A', a, await a.stats()))).toString();
      assert.match(aKey, KEY_HEX);

      b = await openPlayer(browser, gw, '?level=0');
      await waitForPlayback(b, 0.5, 20_000);
      // B verifies a few segments from A over WebRTC (A is its only peer).
      await until(async () => (await b.stats()).verifiedSegments >= 3, 25_000, async () =>
        `B verified fewer than 3 segments from peers\n${describeViewer('B', b, await b.stats())}`);
      const largest = await largestSegment(gw);

      // B's page goes away (pagehide, as when the tab is closed): the engine reports what it
      // verified since its last report, then sends every receipt still waiting with `leave`. Its
      // counters are final from here on.
      await b.page.evaluate(() => window.dispatchEvent(new Event('pagehide')));
      await sleep(200);
      const bEnd = await b.stats();
      why.push(describeViewer('B (left)', b, bEnd));
      assert.match(bEnd.nodeKey, KEY_HEX);
      assert.notEqual(bEnd.nodeKey, aKey, 'each browser context has its own key');
      assert.ok(['ed25519', 'p256'].includes(bEnd.keyAlg), why.join('\n'));
      assert.ok(bEnd.p2pBytes > 0 && bEnd.receiptsSigned > 0, why.join('\n'));
      assert.equal(bEnd.receiptsDropped, 0, why.join('\n'));
      assert.equal(bEnd.receiptsPending, 0, `B's receipts all went out\n${why.join('\n')}`);
      assert.equal(bEnd.receiptsSent, bEnd.receiptsSigned, why.join('\n'));

      // The tracker checks and stores receipts beside the connection's loop: wait until it has
      // decided on at least every receipt B sent.
      await until(async () => receiptsSeen(await metrics(gw)) >= bEnd.receiptsSent, 10_000, async () =>
        `the tracker decided on ${receiptsSeen(await metrics(gw))} of B's ${bEnd.receiptsSent} receipts`);

      const { current, byKey } = await ledgerSince(gw, firstEpoch);
      const m = await metrics(gw);
      const aLine = byKey.get(aKey);
      const summary = {
        bP2pBytes: bEnd.p2pBytes,
        bVerifiedSegments: bEnd.verifiedSegments,
        bReceipts: bEnd.receiptsSent,
        keyAlg: bEnd.keyAlg,
        aCredit: aLine ?? null,
        largestSegment: largest,
        accepted: m.get('p2p_receipts_accepted_total'),
        rejected: Object.fromEntries([...m].filter(([k, v]) => k.startsWith('p2p_receipts_rejected_total{') && v > 0)),
      };
      t.diagnostic(`ledger: ${JSON.stringify(summary)}`);
      why.push(`ledger: ${JSON.stringify({ ...current, uploaders: [...byKey.values()] })}`, `summary: ${JSON.stringify(summary)}`);
      const explain = why.join('\n');

      assert.ok(aLine, `A's key has a line in the ledger\n${explain}`);
      assert.ok(aLine.bytes > 0, explain);
      assert.equal(aLine.receivers, 1, explain);
      assert.ok(aLine.segments >= 1 && aLine.segments <= bEnd.receiptsSent, explain);
      // A is credited with what B verified from peers (A is B's only peer): never more, and at most
      // one segment less (a receipt still being signed when B left is lost with it).
      assert.ok(aLine.bytes <= bEnd.p2pBytes, `A's credit ${aLine.bytes} > B's peer bytes ${bEnd.p2pBytes}\n${explain}`);
      assert.ok(largest > 0 && largest < 1_500_000, `largest segment ${largest}`);
      assert.ok(aLine.bytes >= bEnd.p2pBytes - largest,
        `A's credit ${aLine.bytes} < B's peer bytes ${bEnd.p2pBytes} - one segment ${largest}\n${explain}`);
      // B is credited only for what it uploaded itself.
      const bLine = byKey.get(bEnd.nodeKey);
      if (bEnd.uploadedBytes === 0) assert.equal(bLine, undefined, `B uploaded nothing\n${explain}`);
      else assert.ok(!bLine || bLine.bytes <= bEnd.uploadedBytes, explain);

      assert.ok(m.get('p2p_receipts_accepted_total') > 0, explain);
      assert.equal(m.get('p2p_receipts_rejected_total{reason="signature"}'), 0, explain);
      // An honest browser whose page went away: the tracker believed every receipt it got.
      assert.deepEqual(summary.rejected, {}, `receipts refused\n${explain}`);
      assert.ok(m.get('p2p_receipts_accepted_total') >= bEnd.receiptsSent, explain);

      // A's page reads the ledger every 10 s: "You helped 1 viewer, … MB this hour". (The page shows
      // the current epoch only: if one ended since B's receipts, A's line there is empty.)
      const bEpoch = current.epoch;
      const helped = await until(async () => {
        const s = await a.stats();
        return s.ledger === 'on' && s.helpedViewers >= 1 ? s : null;
      }, 25_000, async () => `A's page: ${describeViewer('A', a, await a.stats())}`, 500).catch(async (e) => {
        if ((await ledgerAt(gw)).epoch !== bEpoch) return null;
        throw e;
      });
      if (helped === null) {
        t.diagnostic('an epoch ended after B left: the page shows the new one, no helped line to check');
      } else {
        assert.equal(helped.helpedViewers, 1, describeViewer('A', a, helped));
        assert.ok(helped.helpedBytes > 0 && helped.helpedBytes <= aLine.bytes, describeViewer('A', a, helped));
        const text = await a.page.locator('#helped').textContent({ timeout: 5_000 });
        assert.match(text, /^You helped 1 viewer, \d+\.\d MB this hour$/, `#helped: ${text}`);
        assert.equal(await a.page.locator('#helped').isVisible(), true, '#helped is shown');
        t.diagnostic(`A's page: ${text}`);
      }
      const aEnd = await a.stats();
      assert.equal(aEnd.stalls, 0, describeViewer('A', a, aEnd));
      assert.equal(aEnd.rejectedSegments, 0, describeViewer('A', a, aEnd));
    } catch (e) {
      e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-4000)}`;
      throw e;
    } finally {
      await b?.close();
      await a?.close();
      await gw.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
