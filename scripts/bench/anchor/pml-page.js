// The anchor's player page: hls.js + p2p-media-loader 2.3 (its hls.js integration), bundled by
// anchor.sh with esbuild. Query: src (the stream URL on the gateway), tracker (ws:// URL of the
// local bittorrent-tracker), tuning (default | live).
// Exposes window.hls and window.pmlBytes = {http, p2p} (segment bytes by source, from the
// engine's onChunkDownloaded events) for the driver.
import Hls from 'hls.js';
// The projects' own browser bundles (their lib/ needs Node's built-ins bundled in).
import { HlsJsP2PEngine } from './node_modules/p2p-media-loader-hlsjs/dist/p2p-media-loader-hlsjs.es.js';

const params = new URLSearchParams(location.search);
const tuning = params.get('tuning') ?? 'default';
const core = { announceTrackers: [params.get('tracker')], rtcConfig: { iceServers: [] } };
const hlsConfig = {};
if (tuning === 'live') {
  // Live tuning as the project recommends it for a better P2P ratio: HTTP only for what is due
  // soon, a wider P2P window, and a player further from the live edge (more time to share).
  Object.assign(core, { highDemandTimeWindow: 6, httpDownloadTimeWindow: 6, p2pDownloadTimeWindow: 20 });
  hlsConfig.liveSyncDurationCount = 7;
}
window.pmlBytes = { http: 0, p2p: 0 };
const HlsWithP2P = HlsJsP2PEngine.injectMixin(Hls);
const hls = new HlsWithP2P({
  ...hlsConfig,
  p2p: {
    core,
    onHlsJsCreated(h) {
      h.p2pEngine.addEventListener('onChunkDownloaded', (bytes, source) => {
        if (source === 'p2p') window.pmlBytes.p2p += bytes;
        else window.pmlBytes.http += bytes;
      });
    },
  },
});
window.hls = hls;
hls.loadSource(params.get('src'));
hls.attachMedia(document.getElementById('video'));
