// The engine bundle for integrators (dist/p2p-engine.mjs): everything but hls.js, which the page
// brings itself.

export {
  P2PEngine,
  DEFAULT_MAX_PEERS,
  DEFAULT_MAX_STORE_BYTES,
  DEFAULT_MAX_STORE_SEGMENTS,
  DEFAULT_REPORT_INTERVAL_MS,
} from './engine.js';
export { NodeCore, DEFAULT_CORE_CONFIG } from './core.js';
export { createP2PLoader, loadingTimes, newLoadStats } from './loader.js';
export { Scheduler, DEFAULT_SCHEDULER_CONFIG, updateRate } from './scheduler.js';
export { parseRenditions, renditionOfUrl, fetchRenditions } from './master.js';
export { watchStalls } from './playback.js';
export { pageNodeKey, loadOrCreateKey, sessionKey, receiptText, RECEIPT_DOMAIN } from './keys.js';
export * as frame from './protocol/frame.js';
export * as signal from './protocol/signal.js';
