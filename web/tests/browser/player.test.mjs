// The web player in real Chromium against a real gateway on 127.0.0.1 (issue 4's checks):
// playback, browser-to-browser WebRTC offload, and native (Rust, WebRTC) seed nodes that lie or
// behave. Run: node --test tests/browser/ (from web/), after building the Rust binaries.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  keyFile,
  launchBrowser,
  metric,
  mintToken,
  offloadBetween,
  openPlayer,
  sleep,
  startGateway,
  startNode,
  waitForPlayback,
} from './harness.mjs';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** Runs `body` with a fresh gateway; on failure the gateway's log is added to the error. */
async function withGateway(body) {
  const gw = await startGateway();
  try {
    await body(gw);
  } catch (e) {
    e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-4000)}`;
    throw e;
  } finally {
    await gw.stop();
  }
}

function describeViewer(name, viewer, s) {
  return `${name}: ${JSON.stringify(s)}\n${viewer.console.slice(-20).join('\n')}`;
}

describe('web player', { timeout: 240_000 }, () => {
  test('the gateway serves the page, its bundle and its config', async () => {
    await withGateway(async (gw) => {
      for (const path of ['/', '/player', '/player?src=/demo/vod/master.m3u8']) {
        const r = await fetch(gw.url + path);
        assert.equal(r.status, 200, path);
        assert.match(r.headers.get('content-type'), /^text\/html/);
        assert.match(await r.text(), /player\.js/);
      }
      const js = await fetch(`${gw.url}/player.js`);
      assert.equal(js.status, 200);
      assert.match(js.headers.get('content-type'), /^text\/javascript/);
      const etag = js.headers.get('etag');
      assert.ok(etag, 'an ETag');
      const again = await fetch(`${gw.url}/player.js`, { headers: { 'if-none-match': etag } });
      assert.equal(again.status, 304);
      const engine = await fetch(`${gw.url}/p2p-engine.mjs`);
      assert.equal(engine.status, 200);
      const config = await (await fetch(`${gw.url}/player/config.json`)).json();
      assert.deepEqual(config, { iceServers: [] });
    });
  });

  test('one viewer plays the demo live stream for 30 s without a stall', async () => {
    await withGateway(async (gw) => {
      const viewer = await openPlayer(browser, gw);
      try {
        const start = await waitForPlayback(viewer);
        await sleep(30_000);
        const end = await viewer.stats();
        const why = describeViewer('viewer', viewer, end);
        assert.ok(end.currentTime - start.currentTime >= 25, `currentTime advanced ${
          (end.currentTime - start.currentTime).toFixed(1)} s in 30 s\n${why}`);
        assert.equal(end.stalls, 0, why);
        assert.ok(end.httpBytes > 0, why);
        assert.equal(end.rejectedSegments, 0, why);
      } finally {
        await viewer.close();
      }
    });
  });

  test('LL-HLS: hls.js in low-latency mode plays the LL demo through the gateway within 3 s of live, P2P off and on', async () => {
    await withGateway(async (gw) => {
      const src = encodeURIComponent('/demo/ll/master.m3u8');
      for (const p2p of [false, true]) {
        const viewer = await openPlayer(browser, gw, `?src=${src}&level=0${p2p ? '' : '&p2p=0'}`);
        try {
          const start = await waitForPlayback(viewer);
          await sleep(15_000);
          const end = await viewer.stats();
          // How far behind live the picture is: the wall clock against the playhead's
          // EXT-X-PROGRAM-DATE-TIME (both on this machine's clock).
          const live = await viewer.page.evaluate(() => ({
            behind: window.hls.playingDate ? Date.now() - window.hls.playingDate.getTime() : null,
            lowLatencyMode: window.hls.lowLatencyMode,
            partTarget: window.hls.levels[window.hls.currentLevel]?.details?.partTarget ?? null,
          }));
          const why = `${describeViewer(p2p ? 'p2p' : 'http', viewer, end)}\n${JSON.stringify(live)}`;
          console.log(`# LL-HLS, P2P ${p2p ? 'on' : 'off'}: ${(live.behind / 1000).toFixed(2)} s behind live, ${end.stalls} stalls`);
          assert.ok(live.lowLatencyMode, why);
          assert.equal(live.partTarget, 0.5, why);
          assert.ok(end.currentTime - start.currentTime >= 12, `advanced ${end.currentTime - start.currentTime} s\n${why}`);
          assert.ok(live.behind !== null && live.behind <= 3000, why);
          assert.equal(end.stalls, 0, why);
        } finally {
          await viewer.close();
        }
      }
      // The players' blocking reloads were held at the gateway, not passed to the origin.
      assert.ok((await metric(gw, 'gateway_blocking_reloads_total{result="held"}')) > 20);
    });
  });

  test('CMCD: with ?cmcd=1 hls.js describes itself on every request and the gateway counts it', async (t) => {
    await withGateway(async (gw) => {
      const segments = () => metric(gw, 'gateway_cmcd_requests_total{class="segment"}');
      // In the query through hls.js's own loader; in headers through the P2P engine's HTTP fetch.
      for (const [query, how] of [
        ['?p2p=0&level=0&cmcd=1', 'query, P2P off'],
        ['?level=0&cmcd=headers', 'headers, P2P on'],
      ]) {
        const before = await segments();
        const viewer = await openPlayer(browser, gw, query);
        try {
          await waitForPlayback(viewer, 2);
          // CMSD reaches the page: what the gateway says of a playlist, and of this connection.
          const cmsd = await viewer.page.evaluate(async () => {
            const r = await fetch('/demo/live/master.m3u8');
            return r.headers.get('CMSD-Static');
          });
          assert.match(cmsd, /^ot=m,sf=h,(st=l,)?v=1$/, `${how}: CMSD-Static ${cmsd}`);
        } finally {
          await viewer.close();
        }
        const counted = (await segments()) - before;
        t.diagnostic(`${how}: ${counted} segment requests with CMCD`);
        assert.ok(counted >= 2, `${how}: ${counted} segment requests with CMCD`);
      }
      const playlists = await metric(gw, 'gateway_cmcd_requests_total{class="live_media"}');
      t.diagnostic(`${playlists} live playlist requests with CMCD`);
      assert.ok(playlists >= 2, `${playlists} playlist requests with CMCD`);
      assert.ok((await metric(gw, 'gateway_cmcd_buffer_length_seconds_count')) > 0);
      assert.ok((await metric(gw, 'gateway_cmcd_throughput_bits_per_second_count')) > 0);
      assert.equal(await metric(gw, 'gateway_cmcd_invalid_total'), 0);
    });
  });

  test('signed URLs: a token in the page URL plays the demo, live and VOD, and joins the swarm', async () => {
    const keys = keyFile();
    const gw = await startGateway(['--auth-key-file', keys.file, '--auth-protect', '/demo/']);
    const viewers = [];
    try {
      const token = mintToken(keys.file, '/demo/');
      for (const stream of ['/demo/live/master.m3u8', '/demo/vod/master.m3u8']) {
        const src = encodeURIComponent(`${stream}?token=${token}`);
        viewers.push({ stream, viewer: await openPlayer(browser, gw, `?src=${src}`) });
      }
      for (const { stream, viewer } of viewers) {
        const start = await waitForPlayback(viewer);
        await sleep(12_000);
        const end = await viewer.stats();
        const why = describeViewer(stream, viewer, end);
        assert.ok(end.currentTime - start.currentTime >= 8, `${stream} advanced ${end.currentTime - start.currentTime} s\n${why}`);
        assert.equal(end.stalls, 0, why);
        assert.ok(end.peerId, `${stream}: the tracker took the token\n${why}`);
      }
      // Every object went through the gate: none was refused, and none without a token got in.
      assert.equal(await metric(gw, 'gateway_auth_denied_total'), 0);
      const r = await fetch(`${gw.url}/demo/live/master.m3u8`);
      assert.equal(r.status, 403);
      assert.equal(r.headers.get('access-control-allow-origin'), '*');
    } catch (e) {
      e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-4000)}`;
      throw e;
    } finally {
      for (const { viewer } of viewers) await viewer.close();
      await gw.stop();
      keys.remove();
    }
  });

  test('two viewers on one rendition: the second gets most of its bytes from the first', async (t) => {
    await withGateway(async (gw) => {
      const first = await openPlayer(browser, gw, '?level=0');
      let second;
      try {
        await waitForPlayback(first);
        await sleep(6_000);
        second = await openPlayer(browser, gw, '?level=0');
        await waitForPlayback(second);
        await sleep(8_000); // warm-up: links open, the start-up segments are behind us
        const before = await second.stats();
        await sleep(24_000);
        const after = await second.stats();
        const firstEnd = await first.stats();
        const why = `${describeViewer('second', second, after)}\n${describeViewer('first', first, firstEnd)}`;
        const share = offloadBetween(before, after);
        t.diagnostic(`second viewer after warm-up: ${(share * 100).toFixed(1)}% of ${
          after.p2pBytes - before.p2pBytes + after.httpBytes - before.httpBytes} bytes from peers`);
        assert.ok(share >= 0.5, `second viewer: ${(share * 100).toFixed(1)}% from peers after warm-up\n${why}`);
        assert.ok(after.verifiedSegments > 0 && after.peers >= 1, why);
        assert.equal(after.rejectedSegments, 0, why);
        assert.equal(after.stalls, 0, why);
        assert.equal(firstEnd.stalls, 0, why);
        assert.ok(firstEnd.uploadedBytes === undefined || firstEnd.uploadedBytes > 0, why);
      } finally {
        await second?.close();
        await first.close();
      }
    });
  });

  test('a native seed that corrupts what it uploads is rejected, playback goes on', async () => {
    await withGateway(async (gw) => {
      const liar = await startNode(gw, ['--seed', '--test-lie']);
      let viewer;
      try {
        await sleep(3_000); // the seed holds segments before the viewer arrives
        viewer = await openPlayer(browser, gw, '?level=0');
        await waitForPlayback(viewer);
        const deadline = Date.now() + 30_000;
        let s = await viewer.stats();
        while (Date.now() < deadline && s.rejectedSegments === 0) {
          await sleep(500);
          s = await viewer.stats();
        }
        await sleep(10_000); // keeps playing after the lie, over HTTP
        s = await viewer.stats();
        const why = `${describeViewer('viewer', viewer, s)}\n--- node ---\n${liar.logs().slice(-3000)}`;
        assert.ok(s.rejectedSegments > 0, `the browser rejected nothing\n${why}`);
        assert.equal(s.stalls, 0, why);
        assert.ok(s.httpBytes > 0, why);
        // The browser's delivery report reached the tracker.
        const reportDeadline = Date.now() + 10_000;
        let mismatches = await metric(gw, 'p2p_digest_mismatches_total');
        while (mismatches === 0 && Date.now() < reportDeadline) {
          await sleep(500);
          mismatches = await metric(gw, 'p2p_digest_mismatches_total');
        }
        assert.ok(mismatches > 0, `gateway metrics show no mismatch\n${why}`);
      } finally {
        await viewer?.close();
        await liar.finish();
      }
    });
  });

  test('a native seed that behaves gives the browser bytes over WebRTC', async () => {
    await withGateway(async (gw) => {
      const seed = await startNode(gw, ['--seed']);
      let viewer;
      let summary;
      try {
        await sleep(3_000);
        viewer = await openPlayer(browser, gw, '?level=0');
        await waitForPlayback(viewer);
        await sleep(20_000);
        const s = await viewer.stats();
        summary = await seed.finish();
        const why = `${describeViewer('viewer', viewer, s)}\n--- node ---\n${seed.logs().slice(-3000)}\nsummary: ${
          JSON.stringify({ ...summary, log: undefined })}`;
        assert.ok(s.p2pBytes > 0 && s.verifiedSegments > 0, `no verified peer bytes\n${why}`);
        assert.ok(s.peers >= 1, why);
        assert.equal(s.rejectedSegments, 0, why);
        assert.equal(s.stalls, 0, why);
        assert.ok(summary && summary.uploaded_bytes >= s.p2pBytes, `the seed uploaded what the browser got\n${why}`);
      } finally {
        await viewer?.close();
        if (!summary) await seed.finish();
      }
    });
  });
});
