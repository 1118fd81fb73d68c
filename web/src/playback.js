// Playback events the P2P figures need from the video element.

/**
 * Watches a media element: `started()` at the first `playing`, `stalled()` for every `waiting`
 * after that which is not caused by a seek. Returns a function that stops watching.
 * @param {HTMLMediaElement} media
 * @param {{started?: () => void, stalled?: () => void}} on
 */
export function watchStalls(media, { started = () => {}, stalled = () => {} }) {
  let playing = false;
  const onPlaying = () => {
    if (!playing) {
      playing = true;
      started();
    }
  };
  const onWaiting = () => {
    if (playing && !media.seeking) stalled();
  };
  media.addEventListener('playing', onPlaying);
  media.addEventListener('waiting', onWaiting);
  // Attached to an element that already plays.
  if (!media.paused && media.readyState > 2) onPlaying();
  return () => {
    media.removeEventListener('playing', onPlaying);
    media.removeEventListener('waiting', onWaiting);
  };
}
