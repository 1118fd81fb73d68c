// One WebSocket to the gateway's tracker for one swarm (docs/PROTOCOL.md §2): sends `join` first,
// decodes every server message strictly, and paces what it sends under the tracker's per-connection
// budget (20 messages/s sustained, a burst of 40, over which the socket is closed with rate_limited).

import { decodeServer, encodeClient, SIGNAL_VERSION } from './protocol/signal.js';
import { TokenBucket } from './util.js';

/** Our own pace, below the tracker's budget. */
export const SIGNAL_RATE = 10;
export const SIGNAL_BURST = 20;
/** Messages waiting for the pace; beyond this the oldest relay is dropped (and counted). */
export const MAX_SIGNAL_QUEUE = 256;

/**
 * @typedef {object} SignallingHooks
 * @property {(msg: object) => void} message  a decoded server message
 * @property {(info: {code: number, reason: string, error: string|null}) => void} closed
 *   the socket closed (once); `error` is the code of the last `error` message, if any
 * @property {(kind: string, ...details: any[]) => void} warn
 */

export class SignallingChannel {
  /**
   * @param {object} o
   * @param {string} o.url        ws:// or wss:// URL of /p2p/v1/ws?stream=…
   * @param {object} o.join       {stream, rendition, upload, token?, key?} (key: the node's public key, hex)
   * @param {typeof WebSocket} o.WebSocket
   * @param {SignallingHooks} o.hooks
   */
  constructor({ url, join, WebSocket, hooks }) {
    this.hooks = hooks;
    this.queue = [];
    this.bucket = new TokenBucket(SIGNAL_RATE, SIGNAL_BURST);
    this.timer = null;
    this.closed = false;
    this.lastError = null;
    this.ws = new WebSocket(url);
    this.ws.onopen = () => {
      const msg = {
        type: 'join',
        v: SIGNAL_VERSION,
        stream: join.stream,
        rendition: join.rendition,
        capabilities: { transports: ['webrtc'], upload: join.upload },
      };
      if (join.token) msg.token = join.token;
      if (join.key) msg.key = join.key;
      this.send(msg);
    };
    this.ws.onmessage = (e) => {
      if (typeof e.data !== 'string') {
        this.hooks.warn('bad-signal', 'binary message from the tracker');
        return;
      }
      let msg;
      try {
        msg = decodeServer(e.data);
      } catch (err) {
        this.hooks.warn('bad-signal', err.kind ?? '', err.message);
        return;
      }
      if (msg.type === 'error') this.lastError = msg.code;
      this.hooks.message(msg);
    };
    this.ws.onerror = () => {}; // the close event follows and says what happened
    this.ws.onclose = (e) => this.finish(e.code, e.reason);
  }

  get open() {
    return !this.closed && this.ws.readyState === 1;
  }

  /** Queues a client message under the pace. */
  send(msg) {
    if (this.closed) return;
    let text;
    try {
      text = encodeClient(msg);
    } catch (e) {
      this.hooks.warn('bad-outgoing-signal', msg?.type, e.message);
      return;
    }
    if (this.queue.length >= MAX_SIGNAL_QUEUE) {
      const i = this.queue.findIndex((t) => t.startsWith('{"type":"relay"'));
      this.queue.splice(i >= 0 ? i : 0, 1);
      this.hooks.warn('signal-queue-full', 'dropped a queued message');
    }
    this.queue.push(text);
    this.flush();
  }

  /** Sends at once, outside the pace (the last report and leave when the page goes away). */
  sendNow(msg) {
    if (!this.open) return;
    try {
      this.ws.send(encodeClient(msg));
    } catch (e) {
      this.hooks.warn('bad-outgoing-signal', msg?.type, e.message);
    }
  }

  flush() {
    if (this.timer !== null || this.closed || this.ws.readyState !== 1) return;
    while (this.queue.length > 0) {
      if (!this.bucket.take()) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.flush();
        }, Math.max(1, this.bucket.waitMs()));
        return;
      }
      this.ws.send(this.queue.shift());
    }
  }

  /** Sends what is queued now, then `leave`, and closes. */
  leave(lastMessages = []) {
    if (this.closed) return;
    if (this.ws.readyState === 1) {
      for (const text of this.queue) this.ws.send(text);
      this.queue = [];
      for (const m of lastMessages) this.sendNow(m);
      this.sendNow({ type: 'leave' });
    }
    this.close(1000, 'leave');
  }

  close(code = 1000, reason = '') {
    if (this.closed) return;
    try {
      this.ws.close(code, reason);
    } catch {
      /* not open yet or already closing */
    }
    this.finish(code, reason);
  }

  finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
    this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
    this.hooks.closed({ code, reason, error: this.lastError });
  }
}
