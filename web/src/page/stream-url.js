// The page's "play another stream" box: what the viewer typed → the player's new query string.
// Pure (tests/unit/series.test.mjs).

/**
 * The query string (with its "?") that plays `input` — a path on the gateway
 * ("/demo/vod/master.m3u8") or a full URL of the page's origin — keeping the page's other
 * parameters (p2p, trace, cmcd) but `level` (a rendition index of another playlist). `page` is the
 * page's URL (location.href). Slashes stay readable in `src`. Returns {query} or {error}.
 * @param {string} input
 * @param {string} page
 * @returns {{query: string, src: string} | {error: string}}
 */
export function streamQuery(input, page) {
  const value = String(input ?? '').trim();
  if (value === '') return { error: 'Enter the path or URL of a playlist on this gateway.' };
  const here = new URL(page);
  let url;
  try {
    url = new URL(value, here);
  } catch {
    return { error: `Not a URL: ${value}` };
  }
  if (url.origin !== here.origin) {
    return { error: `Only streams this gateway serves can be played here (${here.origin}).` };
  }
  const src = url.pathname + url.search;
  const params = new URLSearchParams(here.search);
  params.delete('level');
  params.set('src', src);
  return { query: `?${params.toString().replace(/%2F/gi, '/')}`, src };
}
