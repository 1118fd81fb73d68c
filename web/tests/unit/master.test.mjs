import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parseVariantUrls, renditionOfUrl } from '../../src/master.js';

const MASTER = `#EXTM3U
#EXT-X-VERSION:3
#EXT-X-STREAM-INF:BANDWIDTH=200784,RESOLUTION=426x240
240p/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI="240p/iframes.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=451200,RESOLUTION=854x480

480p/index.m3u8?token=abc
#EXT-X-STREAM-INF:BANDWIDTH=309824,RESOLUTION=640x360
/demo/live/360p/index.m3u8
`;

test('variants in playlist order, resolved against the playlist URL; I-frame playlists are not renditions', () => {
  const base = 'http://gw.test/demo/live/master.m3u8';
  assert.deepEqual(parseVariantUrls(MASTER, base), [
    'http://gw.test/demo/live/240p/index.m3u8',
    'http://gw.test/demo/live/480p/index.m3u8?token=abc',
    'http://gw.test/demo/live/360p/index.m3u8',
  ]);
  assert.deepEqual(parseVariantUrls(MASTER.replaceAll('\n', '\r\n'), base).length, 3);
});

test('hls.js levels map to renditions by URL, whatever order hls.js keeps them in', () => {
  const base = 'http://gw.test/demo/live/master.m3u8';
  const urls = parseVariantUrls(MASTER, base);
  // hls.js sorts levels by bitrate: 240p, 360p, 480p.
  assert.equal(renditionOfUrl(urls, 'http://gw.test/demo/live/240p/index.m3u8', base), 0);
  assert.equal(renditionOfUrl(urls, 'http://gw.test/demo/live/360p/index.m3u8', base), 2);
  assert.equal(renditionOfUrl(urls, 'http://gw.test/demo/live/480p/index.m3u8?token=abc', base), 1);
  // Relative, or with other query parameters (delivery directives): still found.
  assert.equal(renditionOfUrl(urls, '360p/index.m3u8', base), 2);
  assert.equal(renditionOfUrl(urls, 'http://gw.test/demo/live/480p/index.m3u8?_HLS_msn=5', base), 1);
  assert.equal(renditionOfUrl(urls, 'http://gw.test/demo/live/1080p/index.m3u8', base), -1);
});
