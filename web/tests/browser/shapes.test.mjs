// Stream shapes other than the demo's MPEG-TS, in real Chromium through a real gateway whose origin
// is a plain static file server on 127.0.0.1 holding what a real ffmpeg wrote (issue 14 item 4):
// - VOD as PeerTube publishes it: one fragmented MP4 file, its init section and every segment a
//   byte range of it (EXT-X-MAP BYTERANGE, EXT-X-BYTERANGE). Each range is a segment for peers.
// - Live fMP4 (EXT-X-MAP init section, .m4s segments) from an ffmpeg live encoder.
// - AES-128 (EXT-X-KEY): peers share and verify the ciphertext; hls.js decrypts with the key it
//   fetched over HTTP.
// - A live encoder killed and restarted (segment names reused from 0): P2P viewers stall no more
//   than an HTTP-only viewer of the same stream.
// - Live fMP4 with two video variants and an alternate audio rendition (EXT-X-MEDIA TYPE=AUDIO,
//   variants with AUDIO="..."): the audio is a swarm of its own (rendition 2, after the variants).
// In the others, the second of two viewers must get at least half of its bytes from the first,
// verified, with no stall. Needs ffmpeg (scripts/test installs it).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { launchBrowser, offloadBetween, openPlayer, sleep, startGateway, waitForPlayback } from './harness.mjs';

const TYPES = {
  '.m3u8': 'application/vnd.apple.mpegurl',
  '.m4s': 'video/iso.segment',
  '.mp4': 'video/mp4',
  '.ts': 'video/mp2t',
};

/** A static origin for `dir`: GET and HEAD of whole files, nothing else (no ranges, no listing). */
async function startOrigin(dir) {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    const file = join(dir, path);
    if (!file.startsWith(dir) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': statSync(file).size,
      // A live playlist changes every segment; ffmpeg's segments never do.
      'cache-control': extname(file) === '.m3u8' ? 'max-age=1' : 'max-age=3600',
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((r) => server.close(r)) };
}

/**
 * Runs ffmpeg with a test picture and tone of `seconds` into `dir` (segments of `type`, fmp4 or
 * mpegts); `live` paces it in real time. One variant with the audio in it; with `altAudio`, two
 * video variants (360p, 240p) and the audio as an EXT-X-MEDIA rendition of their group, in `ven/`.
 */
function ffmpeg(dir, { seconds, live, hls, type = 'fmp4', altAudio = false }) {
  const layout = altAudio
    ? [
      '-map', '0:v', '-map', '0:v', '-map', '1:a',
      '-b:v:0', '500k', '-maxrate:v:0', '500k', '-bufsize:v:0', '500k',
      '-s:v:1', '426x240', '-b:v:1', '250k', '-maxrate:v:1', '250k', '-bufsize:v:1', '250k',
    ]
    : ['-b:v', '500k', '-maxrate', '500k', '-bufsize', '500k'];
  const streams = altAudio ? 'v:0,agroup:aud v:1,agroup:aud a:0,agroup:aud,default:yes,language:en,name:en' : 'v:0,a:0';
  const args = [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    ...(live ? ['-re'] : []),
    '-f', 'lavfi', '-i', `testsrc2=size=640x360:rate=24:duration=${seconds}`,
    '-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${seconds}`,
    '-c:v', 'libx264', '-preset', 'veryfast', '-threads', '1', ...layout,
    '-g', '48', '-keyint_min', '48', '-sc_threshold', '0',
    '-c:a', 'aac', '-b:a', altAudio ? '64k' : '48k', '-ac', '1',
    '-f', 'hls', '-hls_time', '2', '-hls_segment_type', type, ...hls,
    '-master_pl_name', 'master.m3u8', '-var_stream_map', streams, join(dir, 'v%v/index.m3u8'),
  ];
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c) => (err = (err + c).slice(-4000)));
  const exited = new Promise((r) => child.once('exit', (code) => r(code)));
  return { child, exited, err: () => err };
}

let browser;
let dir;

before(async () => {
  browser = await launchBrowser();
  dir = mkdtempSync(join(tmpdir(), 'p2pa-shapes-'));
});

after(async () => {
  await browser?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function describeViewer(name, viewer, s) {
  return `${name}: ${JSON.stringify(s)}\n${viewer.console.slice(-20).join('\n')}`;
}

/** Share of a track's bytes from peers between two `stats` snapshots (`stats.tracks[track]`). */
function trackOffload(before, after, track) {
  const [b, a] = [before.tracks?.[track] ?? { p2pBytes: 0, httpBytes: 0 }, after.tracks?.[track]];
  return { share: a ? offloadBetween(b, a) : 0, bytes: a ? a.p2pBytes - b.p2pBytes + a.httpBytes - b.httpBytes : 0 };
}

/**
 * Two viewers of `src` on a gateway in front of `origin`: the second opens 6 s after the first
 * plays. Live: after an 8 s warm-up, 24 s of its bytes are measured. VOD (`whole`): all of its
 * bytes over 32 s (hls.js buffers a short VOD ahead within seconds, so there is no steady state to
 * wait for). Asserts the checks of issue 14; with `audio`, for the alternate audio track too.
 * `init` reports how many init sections came from peers. `query` is added to the page's (such as
 * `&level=0`).
 */
async function twoViewers(t, origin, src, { whole = false, audio = false, init = false, query = '' } = {}) {
  const gw = await startGateway(['--origin', origin.url]);
  let first;
  let second;
  try {
    first = await openPlayer(browser, gw, `?src=${src}${query}`);
    await waitForPlayback(first);
    await sleep(6_000);
    second = await openPlayer(browser, gw, `?src=${src}${query}`);
    await waitForPlayback(second);
    await sleep(8_000);
    const before = whole ? { p2pBytes: 0, httpBytes: 0 } : await second.stats();
    await sleep(24_000);
    const after = await second.stats();
    const firstEnd = await first.stats();
    const why = `${describeViewer('second', second, after)}\n${describeViewer('first', first, firstEnd)}`;
    const share = offloadBetween(before, after);
    t.diagnostic(`second viewer${whole ? '' : ' after warm-up'}: ${(share * 100).toFixed(1)}% of ${
      after.p2pBytes - before.p2pBytes + after.httpBytes - before.httpBytes} bytes from peers`);
    if (init) {
      // Init sections are needs like segments (plays_at of the fragment they initialise): one
      // comes from a peer only if a linked peer holds it and there is time; at startup (needed
      // now) it goes over HTTP.
      const i = (s) => `${s.initSections?.p2p} of ${(s.initSections?.p2p ?? 0) + (s.initSections?.http ?? 0)}`;
      t.diagnostic(`init sections from peers: second viewer ${i(after)}, first viewer ${i(firstEnd)}`);
      assert.ok(after.initSections.p2p + after.initSections.http >= 1, `the init section went through the engine\n${why}`);
    }
    if (audio) {
      const a = trackOffload(before, after, 'audio');
      const v = trackOffload(before, after, 'main');
      const track = after.tracks?.audio;
      t.diagnostic(`second viewer after warm-up: audio ${(a.share * 100).toFixed(1)}% of ${a.bytes} bytes from peers ` +
        `(rendition ${track?.rendition}, ${track?.verifiedSegments} verified segments, ${track?.peers} peer links); ` +
        `main ${(v.share * 100).toFixed(1)}% of ${v.bytes} bytes`);
      assert.equal(track?.rendition, 2, `the audio swarm is rendition 2, after the two variants\n${why}`);
      assert.ok(a.share >= 0.5, `second viewer's audio: ${(a.share * 100).toFixed(1)}% from peers\n${why}`);
      assert.ok(track.verifiedSegments > 0 && track.peers >= 1 && track.rejectedSegments === 0, why);
      assert.ok(firstEnd.tracks?.audio?.uploadedBytes > 0, `the first viewer uploaded audio\n${why}`);
    }
    assert.ok(share >= 0.5, `second viewer: ${(share * 100).toFixed(1)}% from peers${whole ? '' : ' after warm-up'}\n${why}`);
    assert.ok(after.verifiedSegments > 0 && after.peers >= 1, why);
    assert.equal(after.rejectedSegments, 0, why);
    assert.equal(after.stalls, 0, why);
    assert.equal(firstEnd.stalls, 0, why);
  } catch (e) {
    e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-4000)}`;
    throw e;
  } finally {
    await second?.close();
    await first?.close();
    await gw.stop();
  }
}

describe('stream shapes', { timeout: 420_000 }, () => {
  test('byte-range fMP4 VOD (one file, as PeerTube publishes): the second viewer gets its ranges from the first', async (t) => {
    const vod = join(dir, 'vod');
    const enc = ffmpeg(vod, { seconds: 90, live: false, hls: ['-hls_playlist_type', 'vod', '-hls_flags', 'single_file'] });
    const code = await enc.exited;
    assert.equal(code, 0, `ffmpeg failed: ${enc.err()}`);
    const playlist = join(vod, 'v0/index.m3u8');
    assert.ok(existsSync(playlist), 'ffmpeg wrote the media playlist');
    const origin = await startOrigin(vod);
    try {
      await twoViewers(t, origin, '/master.m3u8', { whole: true });
    } finally {
      await origin.close();
    }
  });

  test('AES-128 encrypted VOD: peers share the ciphertext, verified; the player decrypts it', async (t) => {
    const aes = join(dir, 'aes');
    mkdirSync(aes, { recursive: true });
    writeFileSync(join(aes, 'enc.key'), randomBytes(16));
    // The key URI as written in the media playlist (v0/index.m3u8), then where ffmpeg reads it.
    writeFileSync(join(aes, 'key_info'), `../enc.key\n${join(aes, 'enc.key')}\n`);
    const enc = ffmpeg(aes, {
      seconds: 90,
      live: false,
      type: 'mpegts',
      hls: ['-hls_playlist_type', 'vod', '-hls_key_info_file', join(aes, 'key_info')],
    });
    const code = await enc.exited;
    assert.equal(code, 0, `ffmpeg failed: ${enc.err()}`);
    const origin = await startOrigin(aes);
    try {
      await twoViewers(t, origin, '/master.m3u8', { whole: true });
    } finally {
      await origin.close();
    }
  });

  test('a live encoder that dies and restarts: P2P viewers stall no more than an HTTP-only viewer', async (t) => {
    const live = join(dir, 'restart');
    const encode = () => ffmpeg(live, {
      seconds: 600,
      live: true,
      type: 'mpegts',
      hls: ['-hls_list_size', '6', '-hls_flags', 'delete_segments+temp_file+independent_segments'],
    });
    let enc = encode();
    const origin = await startOrigin(live);
    const gw = await startGateway(['--origin', origin.url]);
    const viewers = [];
    try {
      const deadline = Date.now() + 30_000;
      const ready = () => existsSync(join(live, 'master.m3u8')) && existsSync(join(live, 'v0/index2.ts'));
      while (!ready() && Date.now() < deadline && enc.child.exitCode === null) await sleep(250);
      assert.ok(ready(), `the live encoder did not start: ${enc.err()}`);
      viewers.push({ name: 'http', v: await openPlayer(browser, gw, '?src=/master.m3u8&p2p=0') });
      viewers.push({ name: 'p2p-1', v: await openPlayer(browser, gw, '?src=/master.m3u8') });
      for (const { v } of viewers) await waitForPlayback(v);
      await sleep(4_000);
      viewers.push({ name: 'p2p-2', v: await openPlayer(browser, gw, '?src=/master.m3u8') });
      await waitForPlayback(viewers[2].v);
      await sleep(12_000);
      // The encoder dies without a word (no ENDLIST) and comes back 2 s later, numbering from 0.
      enc.child.kill('SIGKILL');
      await enc.exited;
      await sleep(2_000);
      enc = encode();
      await sleep(40_000);
      const end = {};
      for (const { name, v } of viewers) end[name] = await v.stats();
      const why = viewers.map(({ name, v }) => describeViewer(name, v, end[name])).join('\n');
      t.diagnostic(`stalls: ${viewers.map(({ name }) => `${name} ${end[name].stalls}`).join(', ')}; from peers: ${
        ['p2p-1', 'p2p-2'].map((name) => `${name} ${end[name].p2pBytes} B`).join(', ')}`);
      // Issue 14 saw a P2P viewer stall three times more than the HTTP viewer after a restart.
      // Measured here (3 runs): HTTP 1, 2, 2 stalls; each P2P viewer 1, 1, 1. One stall of
      // slack keeps a real browser's jitter from failing the run; three more would.
      for (const name of ['p2p-1', 'p2p-2']) {
        assert.ok(end[name].stalls <= end.http.stalls + 1, `${name} stalled more than the HTTP viewer\n${why}`);
        assert.equal(end[name].rejectedSegments, 0, why);
      }
      for (const { name } of viewers) assert.ok(!end[name].paused, `${name} is playing at the end\n${why}`);
      assert.ok(end['p2p-2'].p2pBytes > 0, `P2P was in play: the second P2P viewer got bytes from peers\n${why}`);
    } catch (e) {
      e.message += `\n--- gateway log (tail) ---\n${gw.logs().slice(-4000)}`;
      throw e;
    } finally {
      for (const { v } of viewers) await v.close();
      await gw.stop();
      enc.child.kill('SIGKILL');
      await enc.exited;
      await origin.close();
    }
  });

  test('live fMP4 with an init section, from a real ffmpeg live encoder: the second viewer gets most from the first', async (t) => {
    const live = join(dir, 'live');
    const enc = ffmpeg(live, {
      seconds: 180,
      live: true,
      hls: ['-hls_list_size', '8', '-hls_flags', 'delete_segments+temp_file+independent_segments'],
    });
    const origin = await startOrigin(live);
    try {
      // Three segments out before the first viewer comes (hls.js starts three target durations behind).
      const deadline = Date.now() + 30_000;
      const ready = () => existsSync(join(live, 'master.m3u8')) && existsSync(join(live, 'v0/index2.m4s'));
      while (!ready() && Date.now() < deadline && enc.child.exitCode === null) await sleep(250);
      assert.ok(ready(), `the live encoder did not start: ${enc.err()}`);
      await twoViewers(t, origin, '/master.m3u8', { init: true });
    } finally {
      enc.child.kill('SIGKILL');
      await enc.exited;
      await origin.close();
    }
  });

  test('live fMP4 with an alternate audio rendition: the audio swarm is its own, the second viewer gets its audio from the first', async (t) => {
    const live = join(dir, 'alt-audio');
    const enc = ffmpeg(live, {
      seconds: 180,
      live: true,
      altAudio: true,
      hls: ['-hls_list_size', '8', '-hls_flags', 'delete_segments+temp_file+independent_segments'],
    });
    const origin = await startOrigin(live);
    try {
      const deadline = Date.now() + 30_000;
      const ready = () => ['master.m3u8', 'v0/index2.m4s', 'ven/index2.m4s'].every((f) => existsSync(join(live, f)));
      while (!ready() && Date.now() < deadline && enc.child.exitCode === null) await sleep(250);
      assert.ok(ready(), `the live encoder did not start: ${enc.err()}`);
      const master = await (await fetch(`${origin.url}master.m3u8`)).text();
      assert.match(master, /#EXT-X-MEDIA:TYPE=AUDIO,.*URI="ven\/index.m3u8"/, master);
      assert.match(master, /AUDIO="group_aud"/, master);
      // Both viewers on the 360p variant (rendition 0), so that the main track is one swarm too.
      await twoViewers(t, origin, '/master.m3u8', { audio: true, init: true, query: '&level=0' });
    } finally {
      enc.child.kill('SIGKILL');
      await enc.exited;
      await origin.close();
    }
  });
});
