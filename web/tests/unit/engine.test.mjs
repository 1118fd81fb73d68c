// The engine as a driver of the node core: real engines on a fake gateway, a fake tracker and
// in-process WebRTC. What the core decides is held to the Rust core by the trace replay
// (node-traces.test.mjs); these tests check the glue: needs and deadlines in, links, frames, written
// acknowledgements, HTTP, hashes and reports out, segments to the player with their timing.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { INIT_UNKNOWN_PLAYS_IN_MS } from '../../src/engine.js';
import { FakeTracker, GATEWAY, STREAM, ask, body, fakeGateway, joinedEngine, newEngine, sleep, until } from './fakes.js';

const ID = '/s/0/100.ts';

/** Two engines in one swarm, linked: `first` joined first (the seeder), `second` after it. */
async function linkedPair(files, options = {}) {
  const gw = fakeGateway(files);
  const tracker = new FakeTracker();
  const first = await joinedEngine({ gateway: gw, tracker, options });
  const second = await joinedEngine({ gateway: gw, tracker, options });
  await until(() => first.stats.peers === 1 && second.stats.peers === 1, 'the link between the two');
  return { gw, tracker, first, second };
}

test('the second viewer gets a fresh live segment from the first over WebRTC, verified, and both report', async () => {
  const bytes = body(40_000);
  const { gw, tracker, first, second } = await linkedPair(new Map([[ID, bytes]]), { reportIntervalMs: 100 });
  try {
    assert.equal(first.stats.seeder, true, 'the senior peer seeds');
    assert.equal(second.stats.seeder, false);
    tracker.publish(ID, bytes);
    const [a, b] = await Promise.all([ask(first, ID, 5000), ask(second, ID, 5000)]);
    assert.equal(a.source, 'http');
    assert.equal(b.source, 'p2p');
    assert.deepEqual(new Uint8Array(b.data), bytes);
    assert.deepEqual(gw.requests.map((r) => r.path), [ID], 'one HTTP fetch for the swarm');
    assert.ok(b.timing.start <= b.timing.first && b.timing.first <= b.timing.end, JSON.stringify(b.timing));
    assert.equal(second.stats.verifiedSegments, 1);
    assert.equal(second.stats.p2pBytes, bytes.length);
    assert.equal(first.stats.uploadedBytes, bytes.length);
    assert.equal(second.stats.storedSegments, 1, 'kept to pass on');
    await until(() => tracker.reported().p2p_bytes === bytes.length, 'the report of the peer bytes');
    await until(() => tracker.reported().uploaded_bytes === bytes.length, 'the report of the upload');
    assert.equal(tracker.reported().http_bytes, bytes.length);
  } finally {
    first.destroy();
    second.destroy();
  }
});

test('stats.links: each open link with its peer, measured rate and the chunk bytes each way; stats.httpRate', async () => {
  const bytes = body(40_000);
  const { tracker, first, second } = await linkedPair(new Map([[ID, bytes]]));
  try {
    const [a0] = first.stats.links;
    const [b0] = second.stats.links;
    assert.equal(first.stats.links.length, 1);
    assert.equal(a0.peer, second.stats.peerId);
    assert.equal(b0.peer, first.stats.peerId);
    assert.equal(b0.transport, 'webrtc');
    assert.equal(b0.rate, null, 'no transfer measured yet');
    assert.equal(b0.bytesFrom, 0);
    assert.equal(second.stats.httpRate, null);
    tracker.publish(ID, bytes);
    await ask(first, ID, 5000);
    const b = await ask(second, ID, 5000);
    assert.equal(b.source, 'p2p');
    const [a1] = first.stats.links;
    const [b1] = second.stats.links;
    assert.equal(b1.bytesFrom, bytes.length, 'received from the first');
    assert.equal(b1.bytesTo, 0);
    assert.equal(a1.bytesTo, bytes.length, 'sent to the second');
    assert.equal(a1.bytesFrom, 0);
    assert.ok(b1.rate > 0, `a measured rate: ${b1.rate}`);
    assert.equal(a1.rate, null, 'the first got nothing from the second');
    assert.equal(b1.inFlight, 0);
    assert.ok(Number.isInteger(b1.openFor) && b1.openFor >= 0);
    assert.ok(first.stats.httpRate > 0, 'the first fetched over HTTP');
    // A plain copy (what the page's tests read through page.evaluate) carries the links.
    const copy = JSON.parse(JSON.stringify({ ...second.stats }));
    assert.equal(copy.links[0].bytesFrom, bytes.length);
  } finally {
    first.destroy();
    second.destroy();
  }
  assert.deepEqual(second.stats.links, [], 'no link after destroy');
});

test('other renditions go to the gateway at once; an init section nobody holds, by its deadline', async () => {
  const init = body(800, 1);
  const other = body(900, 2);
  const { gw, tracker, first, second } = await linkedPair(
    new Map([
      ['/s/0/init.mp4', init],
      ['/s/1/100.ts', other],
    ]),
  );
  try {
    tracker.publish('/s/0/init.mp4', init);
    let started = performance.now();
    const b = await ask(second, '/s/1/100.ts', 5000, { type: 'main', level: 1, sn: 100, start: 0 });
    assert.ok(performance.now() - started < 1000, 'no wait for the seeders');
    assert.equal(b.source, 'http');
    // A segment of the swarm like any other: this peer is no seeder and waits for one (which
    // does not fetch it here), then goes to the gateway in time.
    started = performance.now();
    const a = await ask(second, '/s/0/init.mp4', 3000, { type: 'main', level: 0, sn: 'initSegment', start: 0 });
    const took = performance.now() - started;
    assert.equal(a.source, 'http');
    assert.ok(took < 3000, `before it is needed: ${took} ms`);
    assert.deepEqual(gw.requests.map((r) => r.path), ['/s/1/100.ts', '/s/0/init.mp4']);
    assert.deepEqual(second.stats.initSections, { http: 1, p2p: 0 });
  } finally {
    first.destroy();
    second.destroy();
  }
});

test('an init section a linked peer holds comes from it, verified, when there is time', async () => {
  const init = body(800, 1);
  const { gw, tracker, first, second } = await linkedPair(new Map([['/s/0/init.mp4', init]]));
  const frag = { type: 'main', level: 0, sn: 'initSegment', start: 0 };
  try {
    tracker.publish('/s/0/init.mp4', init);
    assert.equal((await ask(first, '/s/0/init.mp4', 5000, frag)).source, 'http');
    await until(() => second.stats.links[0]?.advertised >= 1, 'the first announcing the init section');
    const b = await ask(second, '/s/0/init.mp4', 5000, frag);
    assert.equal(b.source, 'p2p');
    assert.deepEqual(new Uint8Array(b.data), init);
    assert.equal(gw.requests.length, 1, 'one HTTP fetch of it for the swarm');
    assert.deepEqual(second.stats.initSections, { http: 0, p2p: 1 });
    assert.deepEqual(first.stats.initSections, { http: 1, p2p: 0 });
    // Needed now (before playback, as at startup): the gateway at once, never a wait for a peer.
    const third = await joinedEngine({ gateway: gw, tracker });
    try {
      const started = performance.now();
      assert.equal((await ask(third, '/s/0/init.mp4', 0, frag)).source, 'http');
      assert.ok(performance.now() - started < 1000);
    } finally {
      third.destroy();
    }
  } finally {
    first.destroy();
    second.destroy();
  }
});

test('an init section is needed when the first fragment it initialises that has not played plays', () => {
  const engine = newEngine({ gateway: fakeGateway(new Map()) });
  try {
    const video = { currentTime: 95, playbackRate: 1 };
    engine.media = video;
    const init = { sn: 'initSegment', start: 0, level: 0 };
    const other = { sn: 'initSegment', start: 0, level: 0 };
    const frags = [90, 92, 94, 96, 98].map((start, i) => ({ url: `${GATEWAY}/s/0/${i}.m4s`, sn: i, start, duration: 2, initSegment: init }));
    engine.onLevelDetails({ targetduration: 2, live: true, fragments: frags });
    const t = 1000;
    assert.equal(engine.playsAt(init, t), t, 'before playback: now');
    engine.playbackStarted = true;
    assert.equal(engine.playsAt(init, t), t, 'the fragment at 94 s is playing: now');
    video.currentTime = 96.5;
    assert.equal(engine.playsAt(init, t), t);
    video.currentTime = 88;
    assert.equal(engine.playsAt(init, t), t + 2000, 'the first, at 90 s');
    video.playbackRate = 2;
    assert.equal(engine.playsAt(init, t), t + 1000);
    assert.equal(engine.playsAt(other, t), t + INIT_UNKNOWN_PLAYS_IN_MS, 'unknown: a short time from now');
  } finally {
    engine.destroy();
  }
});

test('HTTP errors reach the player when nothing else can deliver', async () => {
  const engine = newEngine({ gateway: fakeGateway(new Map()) });
  try {
    const r = await ask(engine, '/s/0/missing.ts', 0);
    assert.equal(r.ok, false);
    assert.equal(r.error.code, 404);
    assert.equal(engine.waiters.size, 0);
  } finally {
    engine.destroy();
  }
});

test('a store hit gives each caller its own copy, timed as the transfer that stored it', async () => {
  const bytes = body(5000);
  const gw = fakeGateway(new Map([[ID, bytes]]), { delayMs: 60 });
  const engine = newEngine({ gateway: gw });
  try {
    const [a, b] = await Promise.all([ask(engine, ID, 0), ask(engine, ID, 0)]);
    assert.equal(gw.requests.length, 1, 'two callers, one fetch');
    assert.notEqual(a.data, b.data, 'each gets its own copy (hls.js may transfer it)');
    assert.ok(a.timing.end - a.timing.start >= 50, `the fetch took ${a.timing.end - a.timing.start} ms`);
    new Uint8Array(a.data).fill(0);
    const c = await ask(engine, ID, 0);
    assert.equal(gw.requests.length, 1, 'from the store');
    assert.deepEqual(new Uint8Array(c.data), bytes, 'the store keeps its own bytes');
    assert.deepEqual(c.timing, a.timing, 'the first transfer\'s times, not a near-zero copy');
  } finally {
    engine.destroy();
  }
});

test('a caller that gives up: the core stops the fetch after the grace period', async () => {
  const gw = fakeGateway(new Map([[ID, body(100)]]), { delayMs: 10_000 });
  const engine = newEngine({ gateway: gw });
  try {
    const handle = engine.fetchSegment(`http://gw.test${ID}`, {
      playsAt: (t) => t,
      onSuccess: () => assert.fail('abandoned'),
      onError: () => assert.fail('abandoned'),
    });
    await until(() => gw.requests.length === 1, 'the fetch');
    handle.cancel();
    await sleep(1000);
    assert.equal(gw.requests[0].aborted, false, 'it may still finish into the store');
    await until(() => gw.requests[0].aborted, 'the fetch stopped', 4000);
  } finally {
    engine.destroy();
  }
});

test('a deadline that moved is sent to the core again; one that stays "now" is not', () => {
  const engine = newEngine({ gateway: fakeGateway(new Map()) });
  try {
    let playsAt = (t) => t; // before playback starts: needed now
    engine.fetchSegment(`http://gw.test${ID}`, { playsAt: (t) => playsAt(t), onSuccess() {}, onError() {} });
    assert.deepEqual(engine.movedDeadlines(), [], 'still needed now');
    const at = performance.now() + 8000;
    playsAt = () => at; // playback started: it plays in 8 s
    const moved = engine.movedDeadlines();
    assert.deepEqual(moved, [{ type: 'need', waiter: 1, id: ID, plays_at: at, p2p: false }]);
    assert.deepEqual(engine.movedDeadlines(), [], 'sent once');
  } finally {
    engine.destroy();
  }
});

test('frames count as written at once while the channel buffers little, else when it drains', () => {
  const engine = newEngine({ gateway: fakeGateway(new Map()) });
  const fed = [];
  const feed = engine.feed.bind(engine);
  engine.feed = (...inputs) => {
    fed.push(...inputs.filter((i) => i.type === 'written'));
    feed(...inputs);
  };
  try {
    const link = { bufferedAmount: 0, sendFrame: () => true };
    engine.links.set(7, link);
    engine.send(7, { type: 'cancel', request_id: 1 });
    assert.deepEqual(fed, [{ type: 'written', link: 7, bytes: 9 }]);
    link.bufferedAmount = 1_000_000;
    engine.send(7, { type: 'absent', request_id: 1 });
    engine.send(7, { type: 'absent', request_id: 2 });
    assert.equal(fed.length, 1, 'held while the channel is full');
    link.bufferedAmount = 0;
    engine.written(7); // the channel's bufferedamountlow
    assert.deepEqual(fed.at(-1), { type: 'written', link: 7, bytes: 18 });
  } finally {
    engine.destroy();
  }
});

/** hls.js as the engine sees it: levels, the master URL, and events the test triggers. */
class FakeHls {
  static Events = Object.fromEntries(
    ['MANIFEST_PARSED', 'LEVELS_UPDATED', 'LEVEL_SWITCHING', 'LEVEL_UPDATED', 'LEVEL_LOADED', 'AUDIO_TRACK_SWITCHING',
      'AUDIO_TRACK_LOADED', 'SUBTITLE_TRACK_SWITCH', 'SUBTITLE_TRACK_LOADED', 'MEDIA_ATTACHED', 'MEDIA_DETACHING', 'DESTROYING']
      .map((e) => [e, e]),
  );

  constructor(levels) {
    this.url = GATEWAY + STREAM;
    this.levels = levels.map((path) => ({ url: [GATEWAY + path] }));
    this.currentLevel = -1;
    this.handlers = new Map();
  }

  on(event, fn) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), fn]);
  }

  off(event, fn) {
    this.handlers.set(event, (this.handlers.get(event) ?? []).filter((f) => f !== fn));
  }

  trigger(event, data) {
    for (const fn of this.handlers.get(event) ?? []) fn(event, data);
  }
}

test('alternate audio is a swarm of its own: joined by its rendition index, its fragments from the peer in it', async () => {
  const master = `#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",DEFAULT=YES,URI="audio/en.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="s",NAME="en",URI="subs/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=500000,AUDIO="a",SUBTITLES="s"
v0/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=900000,AUDIO="a",SUBTITLES="s"
v1/index.m3u8
`;
  const AUDIO = '/s/audio/en0.aac';
  const audio = body(3000, 4);
  const gw = fakeGateway(new Map([[STREAM, new TextEncoder().encode(master)], [AUDIO, audio]]));
  const tracker = new FakeTracker();
  const viewers = [];
  try {
    for (let i = 0; i < 2; i++) {
      const engine = newEngine({ gateway: gw, tracker });
      const hls = new FakeHls(['/s/v1/index.m3u8', '/s/v0/index.m3u8']);
      engine.attach(hls);
      hls.trigger('LEVEL_SWITCHING', { level: 1 });
      hls.trigger('AUDIO_TRACK_SWITCHING', { id: 0, url: `${GATEWAY}/s/audio/en.m3u8` });
      await until(() => engine.conn?.peerId && engine.tracks.get('audio')?.conn?.peerId, 'both swarms joined');
      viewers.push({ engine, hls });
    }
    const [first, second] = viewers.map((v) => v.engine);
    const joins = tracker.received.filter((m) => m.type === 'join').map((m) => m.rendition);
    assert.deepEqual(joins, [0, 2, 0, 2], 'hls.js level 1 is rendition 0 (v0); the audio, rendition 2 after the two variants');
    const [audioA, audioB] = [first, second].map((e) => e.tracks.get('audio'));
    await until(() => audioA.stats.peers === 1 && audioB.stats.peers === 1 && second.stats.peers === 1, 'links in both swarms');
    assert.equal(second.stats.tracks.audio.swarm, '/s/master.m3u8#2');
    assert.equal(second.stats.rendition, 0, 'the main track is still the main rendition');

    tracker.publish(AUDIO, audio);
    const frag = { type: 'audio', level: 0, sn: 0, start: 0, baseurl: `${GATEWAY}/s/audio/en.m3u8?_HLS_msn=1` };
    const a = await ask(first.engineFor(frag), AUDIO, 5000, frag);
    const b = await ask(second.engineFor(frag), AUDIO, 5000, frag);
    assert.equal(a.source, 'http');
    assert.equal(b.source, 'p2p');
    assert.deepEqual(new Uint8Array(b.data), audio);
    assert.equal(second.stats.tracks.audio.p2pBytes, audio.length);
    assert.equal(second.stats.p2pBytes, audio.length, 'the totals count the audio track');
    assert.equal(second.stats.verifiedSegments, 1);
    assert.equal(first.stats.uploadedBytes, audio.length);
    assert.deepEqual(gw.requests.filter((r) => r.path === AUDIO).length, 1, 'one HTTP fetch for the audio swarm');

    // Subtitles off: no swarm; on: the subtitles' rendition (3).
    viewers[1].hls.trigger('SUBTITLE_TRACK_SWITCH', { id: -1 });
    assert.equal(second.tracks.get('subtitle').conn, null);
    viewers[1].hls.trigger('SUBTITLE_TRACK_SWITCH', { id: 0, url: `${GATEWAY}/s/subs/en.m3u8` });
    await until(() => second.tracks.get('subtitle').conn?.peerId, 'the subtitle swarm');
    assert.equal(tracker.received.filter((m) => m.type === 'join').at(-1).rendition, 3);
  } finally {
    for (const { engine } of viewers) engine.destroy();
  }
  assert.ok(tracker.sockets.length === 0, 'every swarm left');
});
