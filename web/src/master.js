// The variants of a multivariant (master) playlist in playlist order: the protocol's rendition index
// is a variant's 0-based position there. hls.js reorders and filters its levels, so the engine reads
// the playlist itself and maps hls.js levels to renditions by URL.

/**
 * The absolute URLs of the variants (EXT-X-STREAM-INF URIs), in playlist order.
 * I-frame variants (EXT-X-I-FRAME-STREAM-INF) are not renditions and are not listed.
 * @param {string} text the playlist
 * @param {string} baseUrl the playlist's own absolute URL
 * @returns {string[]}
 */
export function parseVariantUrls(text, baseUrl) {
  const urls = [];
  let expectUri = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('#EXT-X-STREAM-INF')) {
      expectUri = true;
    } else if (line === '' || line.startsWith('#')) {
      continue;
    } else if (expectUri) {
      urls.push(new URL(line, baseUrl).href);
      expectUri = false;
    }
  }
  return urls;
}

/**
 * The rendition index of an hls.js level URL among the variant URLs, or -1. Compared as absolute
 * URLs, then without query and fragment (hls.js may add delivery directives).
 * @param {string[]} variantUrls
 * @param {string} levelUrl
 * @param {string} baseUrl to resolve a relative levelUrl
 */
export function renditionOfUrl(variantUrls, levelUrl, baseUrl) {
  let abs;
  try {
    abs = new URL(levelUrl, baseUrl);
  } catch {
    return -1;
  }
  const exact = variantUrls.indexOf(abs.href);
  if (exact >= 0) return exact;
  const bare = (u) => {
    const x = new URL(u);
    x.search = '';
    x.hash = '';
    return x.href;
  };
  const target = bare(abs.href);
  return variantUrls.findIndex((u) => bare(u) === target);
}

/** Fetches a multivariant playlist and returns its variant URLs (see parseVariantUrls). */
export async function fetchVariantUrls(url, fetchImpl = globalThis.fetch) {
  const resp = await fetchImpl(url, { credentials: 'same-origin' });
  if (!resp.ok) throw new Error(`HTTP ${resp.status} for ${url}`);
  return parseVariantUrls(await resp.text(), resp.url || url);
}
