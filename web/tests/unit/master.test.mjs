import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseAttributes, parseRenditions, renditionOfUrl } from '../../src/master.js';
import { loadVectors } from './vectors.js';

const MASTER = `#EXTM3U
#EXT-X-VERSION:3
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",URI="audio/en.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=200784,RESOLUTION=426x240,AUDIO="aud"
240p/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI="240p/iframes.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=451200,RESOLUTION=854x480,AUDIO="aud"

480p/index.m3u8?token=abc
#EXT-X-STREAM-INF:BANDWIDTH=309824,RESOLUTION=640x360,AUDIO="aud"
/demo/live/360p/index.m3u8
`;

test('the shared vectors: the same renditions, in the same order, as peer_assist::hls::stream_renditions', () => {
  const v = loadVectors('renditions.json');
  assert.ok(v.cases.length >= 5);
  for (const c of v.cases) {
    const got = parseRenditions(c.playlist, `http://gw.test${c.master}`).map(({ path, kind }) => ({ path, kind }));
    assert.deepEqual(got, c.renditions, c.name);
  }
});

test('variants first, then EXT-X-MEDIA playlists; I-frame playlists are not renditions', () => {
  const base = 'http://gw.test/demo/live/master.m3u8';
  assert.deepEqual(parseRenditions(MASTER, base), [
    { path: '/demo/live/240p/index.m3u8', kind: 'VARIANT', group: null, name: null },
    { path: '/demo/live/480p/index.m3u8', kind: 'VARIANT', group: null, name: null },
    { path: '/demo/live/360p/index.m3u8', kind: 'VARIANT', group: null, name: null },
    { path: '/demo/live/audio/en.m3u8', kind: 'AUDIO', group: 'aud', name: 'English, main' },
  ]);
  assert.deepEqual(parseRenditions(MASTER.replaceAll('\n', '\r\n'), base).length, 4);
  assert.deepEqual(parseRenditions('not a playlist\n' + MASTER, base), []);
});

test('hls.js levels and tracks map to renditions by path, whatever order hls.js keeps them in', () => {
  const base = 'http://gw.test/demo/live/master.m3u8';
  const r = parseRenditions(MASTER, base);
  // hls.js sorts levels by bitrate: 240p, 360p, 480p.
  assert.equal(renditionOfUrl(r, 'http://gw.test/demo/live/240p/index.m3u8', base), 0);
  assert.equal(renditionOfUrl(r, 'http://gw.test/demo/live/360p/index.m3u8', base), 2);
  assert.equal(renditionOfUrl(r, 'http://gw.test/demo/live/480p/index.m3u8?token=abc', base), 1);
  assert.equal(renditionOfUrl(r, 'http://gw.test/demo/live/audio/en.m3u8', base), 3);
  // Relative, or with other query parameters (delivery directives): still found.
  assert.equal(renditionOfUrl(r, '360p/index.m3u8', base), 2);
  assert.equal(renditionOfUrl(r, 'http://gw.test/demo/live/480p/index.m3u8?_HLS_msn=5', base), 1);
  assert.equal(renditionOfUrl(r, 'http://gw.test/demo/live/1080p/index.m3u8', base), -1);
  assert.equal(renditionOfUrl(r, 'http://other.test/demo/live/240p/index.m3u8', base), -1, 'another host');
  assert.equal(renditionOfUrl(r, undefined, base), -1);
});

test('attribute lists read like the Rust parser: quoted commas, first of a name wins, lenient', () => {
  const a = parseAttributes('TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",URI="a/b.m3u8",DEFAULT=YES ,TYPE=VIDEO');
  assert.equal(a.get('NAME'), 'English, main');
  assert.equal(a.get('URI'), 'a/b.m3u8');
  assert.equal(a.get('DEFAULT'), 'YES');
  assert.equal(a.get('TYPE'), 'AUDIO');
  assert.deepEqual([...parseAttributes('ALONE,X=1, Y = 2')], [['X', '1'], ['Y', ' 2']]);
  assert.deepEqual([...parseAttributes('A="open,B=1')], []);
});
