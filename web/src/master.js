// The renditions of a multivariant (master) playlist, numbered as the protocol's `join.rendition`
// names them (docs/PROTOCOL.md §1): the variants (EXT-X-STREAM-INF) in playlist order, then every
// EXT-X-MEDIA with a URI (alternate audio, subtitles, any TYPE) in playlist order, each by the
// gateway path of its media playlist, a path listed once. hls.js reorders and filters its levels
// and tracks, so the engine reads the playlist itself and maps hls.js levels and tracks to
// renditions by path. `peer_assist::hls::stream_renditions` is the Rust side; both pass
// peer-assist/tests/vectors/renditions.json.

import { gatewayPath } from './util.js';

/**
 * An attribute list (RFC 8216 §4.2) as `peer_assist::hls::attributes::parse` reads it: lenient
 * like players (an entry without `=` is skipped, an unterminated quote ends the list), names as
 * written, the first of a name wins.
 * @returns {Map<string, string>}
 */
export function parseAttributes(list) {
  const out = new Map();
  let i = 0;
  const n = list.length;
  while (i < n) {
    while (i < n && (list[i] === ' ' || list[i] === '\t')) i++;
    const nameStart = i;
    while (i < n && list[i] !== '=' && list[i] !== ',') i++;
    if (i >= n || list[i] !== '=') {
      i++;
      continue;
    }
    const name = list.slice(nameStart, i).trim();
    i++;
    let value;
    if (list[i] === '"') {
      const end = list.indexOf('"', i + 1);
      if (end < 0) break;
      value = list.slice(i + 1, end);
      i = end + 1;
      while (i < n && list[i] !== ',') i++;
    } else {
      const start = i;
      while (i < n && list[i] !== ',') i++;
      value = list.slice(start, i).trimEnd();
    }
    if (!out.has(name)) out.set(name, value);
    i++;
  }
  return out;
}

/**
 * The gateway path a URI written in the playlist at `baseUrl` names, as
 * `peer_assist::hls::uri::resolve_path` gives it: relative and root-relative references only
 * (the gateway serves the absolute URLs of its origin root-relative), query and fragment dropped;
 * null for another host, a scheme (`data:`) or an empty reference.
 */
export function playlistUriPath(reference, baseUrl) {
  const ref = reference.trim().split(/[?#]/)[0];
  if (ref === '' || ref.startsWith('//') || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(ref)) return null;
  return gatewayPath(ref, baseUrl);
}

/**
 * The renditions of a multivariant playlist, in rendition-index order.
 * I-frame playlists (EXT-X-I-FRAME-STREAM-INF) and EXT-X-MEDIA without a URI are not renditions.
 * @param {string} text the playlist
 * @param {string} baseUrl the playlist's own absolute URL (on the gateway)
 * @returns {{path: string, kind: string, group: string | null, name: string | null}[]} kind:
 *   `VARIANT`, or the EXT-X-MEDIA TYPE as written (`AUDIO`, `SUBTITLES`…)
 */
export function parseRenditions(text, baseUrl) {
  const lines = text.replace(/^\uFEFF/, '').split('\n').map((l) => l.trim()).filter((l) => l !== '');
  if (lines[0] !== '#EXTM3U') return [];
  const variants = [];
  const media = [];
  let pending = false;
  for (const line of lines.slice(1)) {
    if (!line.startsWith('#')) {
      if (pending) variants.push({ uri: line, kind: 'VARIANT', group: null, name: null });
      pending = false;
      continue;
    }
    const colon = line.indexOf(':');
    const tag = colon < 0 ? line : line.slice(0, colon);
    if (tag === '#EXT-X-STREAM-INF') {
      pending = true;
    } else if (tag === '#EXT-X-MEDIA') {
      const a = parseAttributes(colon < 0 ? '' : line.slice(colon + 1));
      if (a.has('URI')) {
        media.push({ uri: a.get('URI'), kind: a.get('TYPE') ?? '', group: a.get('GROUP-ID') ?? '', name: a.get('NAME') ?? '' });
      }
    }
  }
  const out = [];
  const seen = new Set();
  for (const r of [...variants, ...media]) {
    const path = playlistUriPath(r.uri, baseUrl);
    if (path === null || seen.has(path)) continue;
    seen.add(path);
    out.push({ path, kind: r.kind, group: r.group, name: r.name });
  }
  return out;
}

/**
 * The rendition index of the media playlist at `url` (an hls.js level's or track's URL), or -1:
 * compared by gateway path, so a query hls.js adds (delivery directives, a token) does not matter.
 * @param {{path: string}[]} renditions from parseRenditions
 * @param {string} url
 * @param {string} baseUrl to resolve a relative `url`; its origin is the gateway's
 */
export function renditionOfUrl(renditions, url, baseUrl) {
  const path = url ? gatewayPath(url, baseUrl) : null;
  return path === null ? -1 : renditions.findIndex((r) => r.path === path);
}

/** Fetches a multivariant playlist and returns its renditions (see parseRenditions). */
export async function fetchRenditions(url, fetchImpl = globalThis.fetch) {
  const resp = await fetchImpl(url, { credentials: 'same-origin' });
  if (!resp.ok) throw new Error(`HTTP ${resp.status} for ${url}`);
  return parseRenditions(await resp.text(), resp.url || url);
}
