// What the player page does after a fatal hls.js error, without touching hls.js (pure, explicit
// time), so a viewer behind a failing origin or a broken segment recovers by itself:
//
// - a fatal network error (a playlist or fragment that kept failing, e.g. during an origin outage):
//   `hls.startLoad()` again after a delay that doubles from `baseDelayMs` to `maxDelayMs`, for as
//   long as it takes; a successful load resets the delay;
// - a fatal media error: `hls.recoverMediaError()`; a second one within `mediaWindowMs`: swap the
//   audio codec and recover again; a third one within the window: recreate the player;
// - any other fatal error (mux, key system, internal): recreate the player after a delay.
//
// The page performs the action after `delayMs` (see src/page/player.js).

/** hls.js's `ErrorTypes` values. */
export const NETWORK_ERROR = 'networkError';
export const MEDIA_ERROR = 'mediaError';

export class Recovery {
  constructor({ baseDelayMs = 1000, maxDelayMs = 8000, mediaWindowMs = 3000 } = {}) {
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.mediaWindowMs = mediaWindowMs;
    this.networkFailures = 0;
    this.mediaErrors = [];
  }

  /**
   * A fatal error of hls.js type `type` at `now` (ms): what to do and after how long.
   * @returns {{ action: 'startLoad' | 'recoverMedia' | 'swapAndRecover' | 'recreate', delayMs: number }}
   */
  onFatal(type, now) {
    if (type === NETWORK_ERROR) {
      const delayMs = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(this.networkFailures, 16));
      this.networkFailures += 1;
      return { action: 'startLoad', delayMs };
    }
    if (type === MEDIA_ERROR) {
      this.mediaErrors = this.mediaErrors.filter((t) => now - t < this.mediaWindowMs);
      this.mediaErrors.push(now);
      if (this.mediaErrors.length === 1) return { action: 'recoverMedia', delayMs: 0 };
      if (this.mediaErrors.length === 2) return { action: 'swapAndRecover', delayMs: 0 };
      this.mediaErrors = [];
      return { action: 'recreate', delayMs: this.baseDelayMs };
    }
    return { action: 'recreate', delayMs: this.baseDelayMs };
  }

  /** A playlist or fragment loaded: the network is back, the next outage starts from the base delay. */
  onLoaded() {
    this.networkFailures = 0;
  }
}
