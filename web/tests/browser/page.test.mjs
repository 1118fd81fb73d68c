// What the viewer sees on the player page, in real Chromium against a real gateway: the delivery
// chart is drawn, the peer table lists the other viewer, the live latency is a number, and the
// stream box switches the stream (?src=). Two viewers on the demo live stream, then one switches to
// the VOD demo. About 30 s. Run: node --test tests/browser/page.test.mjs (from web/), after
// building the Rust binaries (and the gateway again after `npm run build`: it embeds dist/).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { launchBrowser, openPlayer, sleep, startGateway, waitForPlayback } from './harness.mjs';

const VOD = '/demo/vod/master.m3u8';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** Polls `probe` every 250 ms until it returns something truthy; throws `what()` after `timeoutMs`. */
async function until(probe, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`not within ${timeoutMs} ms: ${await what()}`);
    await sleep(250);
  }
}

/** What the page shows: chart, summary, latency, peer rows, stream box. */
function view(page) {
  return page.evaluate(() => {
    const canvas = document.getElementById('chart');
    let painted = 0;
    if (canvas && canvas.width > 0 && canvas.height > 0) {
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
    }
    return {
      samples: Number(canvas?.dataset.samples ?? -1),
      painted,
      canvas: canvas ? { width: canvas.width, height: canvas.height, label: canvas.getAttribute('aria-label') } : null,
      summary: document.getElementById('chart-summary')?.textContent ?? null,
      latencyText: document.getElementById('stat-latency')?.textContent ?? null,
      rows: [...document.querySelectorAll('#peers-body tr[data-peer]')].map((tr) => ({
        peer: tr.dataset.peer,
        cells: [...tr.cells].map((td) => td.textContent),
      })),
      input: document.getElementById('src-input')?.value ?? null,
      inputLabel: document.querySelector('label[for="src-input"]')?.textContent ?? null,
    };
  });
}

describe('player page: chart, peers, latency, stream box', { timeout: 90_000 }, () => {
  test('two viewers on the live demo see each other, a drawn chart and their latency; the box switches to VOD', async (t) => {
    const started = Date.now();
    const gw = await startGateway();
    let first;
    let second;
    let last = {};
    try {
      first = await openPlayer(browser, gw, '?level=0');
      await waitForPlayback(first, 0.5, 20_000);
      await sleep(3_000); // the first holds segments before the second arrives
      second = await openPlayer(browser, gw, '?level=0');
      await waitForPlayback(second, 0.5, 20_000);
      const firstId = (await first.stats()).peerId;
      assert.ok(firstId, 'the first viewer joined the swarm');

      // The second's peer table lists the first (and its stats.links the same).
      const row = await until(
        async () => {
          last = await view(second.page);
          return last.rows.find((r) => r.peer === firstId);
        },
        20_000,
        async () => `second sees ${JSON.stringify(last)}; stats ${JSON.stringify(await second.stats())}\n${second.console.join('\n')}`,
      );
      assert.equal(row.cells.length, 5);
      assert.equal(row.cells[0], firstId.length > 9 ? `${firstId.slice(0, 8)}…` : firstId);
      assert.equal(row.cells[1], 'webrtc');
      assert.match(row.cells[2], /^(–|\d+ kbit\/s)$/);
      assert.match(row.cells[3], /^\d+(\.\d+)? (B|KiB|MiB)$/);
      const s = await second.stats();
      const link = s.links.find((l) => l.peer === firstId);
      assert.ok(link, `stats.links has the first: ${JSON.stringify(s.links)}`);
      assert.equal(link.transport, 'webrtc');

      // The chart has samples and paint; its text alternative says something.
      last = await until(
        async () => {
          const v = await view(second.page);
          return v.samples >= 3 && v.painted > 0 && !v.summary.startsWith('Collecting') ? v : null;
        },
        10_000,
        async () => JSON.stringify(await view(second.page)),
      );
      assert.ok(last.canvas.width > 0 && last.canvas.height > 0, JSON.stringify(last.canvas));
      assert.match(last.canvas.label, /peers/);
      assert.match(last.summary, /^Last \d+ (s|min): .*Now \d+ kbit\/s from peers, \d+ kbit\/s over HTTP\./);
      const firstView = await view(first.page);
      assert.ok(firstView.samples > last.samples, 'the first viewer has been sampling longer');

      // The live latency: a number of seconds, shown and in p2pStats.
      const live = await until(
        async () => {
          const st = await second.stats();
          return typeof st.latency === 'number' && st.latency > 0 ? st : null;
        },
        10_000,
        async () => JSON.stringify(await second.stats()),
      );
      assert.equal(live.live, true);
      assert.ok(live.latency < 60, `latency ${live.latency} s`);
      assert.ok(live.chartSamples > 0);
      assert.match((await view(second.page)).latencyText, /^\d+\.\d s$/);
      assert.match(last.summary + (await view(second.page)).summary, /Live latency \d+\.\d s\./);
      t.diagnostic(`second viewer: latency ${live.latency} s (target ${live.targetLatency}), ${live.links.length} link(s), ${
        last.samples} samples; "${last.summary}"`);

      // The stream box: a foreign origin is refused, the page stays.
      const before = second.page.url();
      assert.equal((await view(second.page)).input, '/demo/live/master.m3u8');
      assert.equal((await view(second.page)).inputLabel, 'Stream');
      await second.page.fill('#src-input', 'https://elsewhere.example/live.m3u8');
      await second.page.click('#src-play');
      await sleep(300);
      assert.equal(second.page.url(), before, 'no navigation for another origin');
      assert.match(await second.page.$eval('#src-input', (el) => el.validationMessage), /Only streams this gateway serves/);

      // …and a path of the gateway switches the stream.
      await second.page.fill('#src-input', VOD);
      await Promise.all([
        second.page.waitForURL((u) => u.searchParams.get('src') === VOD, { timeout: 10_000, waitUntil: 'load' }),
        second.page.click('#src-play'),
      ]);
      const url = new URL(second.page.url());
      assert.equal(url.searchParams.get('src'), VOD);
      assert.equal(url.searchParams.get('level'), null, 'level belongs to the other playlist');
      assert.match(url.search, /src=\/demo\/vod\/master\.m3u8/, 'readable in the address bar');
      const vod = await waitForPlayback(second, 0.5, 20_000);
      assert.equal(await second.page.evaluate(() => window.hls.url?.includes('/demo/vod/master.m3u8')), true);
      assert.equal((await view(second.page)).input, VOD);
      const notLive = await until(
        async () => {
          const st = await second.stats();
          return st.live === false ? st : null;
        },
        5_000,
        async () => JSON.stringify(await second.stats()),
      );
      assert.equal(notLive.latency, null, 'no latency for VOD');
      assert.equal(vod.stalls ?? 0, 0);
      t.diagnostic(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    } catch (e) {
      const tail = (v, name) => (v ? `\n--- ${name} console ---\n${v.console.slice(-20).join('\n')}` : '');
      e.message += `${tail(first, 'first')}${tail(second, 'second')}\n--- gateway log (tail) ---\n${gw.logs().slice(-3000)}`;
      throw e;
    } finally {
      await second?.close();
      await first?.close();
      await gw.stop();
    }
  });
});
