// One WebRTC link to another peer of the swarm: an RTCPeerConnection with one reliable, ordered data
// channel labelled "p2pa/1", negotiated through the tracker's `relay` messages; one frame per message
// (docs/PROTOCOL.md §5.2 and §6).
//
// The link does the transport work: negotiation, the Handshake check, encoding and decoding, and
// telling when the channel's send buffer has drained. What to request, serve and announce, and how
// fast to upload, is the node core's business (through the engine).

import { decodeFrameExact, encodeFrame, PROTOCOL_VERSION } from './protocol/frame.js';

export const DATA_CHANNEL_LABEL = 'p2pa/1';
/** A link that is not ready (both Handshakes) this long after it was created is closed. */
export const CONNECT_TIMEOUT_MS = 15_000;
/** After the channel opens, the other side's Handshake must come within this. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/** Frames sent count as written while the channel buffers at most this many bytes (`drained`). */
export const BUFFER_LOW = 64 * 1024;
/** ICE candidates kept while the remote description is not set yet. */
const MAX_EARLY_CANDIDATES = 64;

/**
 * @typedef {object} LinkHooks
 * @property {(payload: object) => void} signal     send a relay payload to the remote peer
 * @property {(link: PeerLink) => void} ready       both Handshakes done
 * @property {(link: PeerLink, frame: object) => void} frame  a frame after the Handshake
 * @property {(link: PeerLink, reason: string) => void} closed  the link is gone (called once)
 * @property {(link: PeerLink) => void} drained     the channel's buffer fell to BUFFER_LOW
 * @property {(kind: string, ...details: any[]) => void} warn
 */

export class PeerLink {
  /**
   * @param {object} o
   * @param {string} o.me           this peer's id
   * @param {string} o.remote       the other peer's id
   * @param {boolean} o.initiator   this side creates the channel and the offer
   * @param {RTCIceServer[]} o.iceServers
   * @param {typeof RTCPeerConnection} o.RTCPeerConnection
   * @param {LinkHooks} o.hooks
   */
  constructor({ me, remote, initiator, iceServers, RTCPeerConnection, hooks }) {
    this.me = me;
    this.remote = remote;
    this.initiator = initiator;
    this.hooks = hooks;
    this.state = 'connecting'; // connecting → open (channel) → ready (handshakes) → closed
    this.createdAt = globalThis.performance.now();
    this.remoteDescriptionSet = false;
    this.earlyCandidates = [];
    this.timers = new Set();
    this.dc = null;
    this.pc = new RTCPeerConnection({ iceServers });
    this.pc.onicecandidate = (e) => {
      if (e.candidate && this.state !== 'closed') {
        this.hooks.signal({ kind: 'candidate', candidate: e.candidate.toJSON() });
      }
    };
    this.pc.onconnectionstatechange = () => {
      const s = this.pc.connectionState;
      if (s === 'failed' || s === 'closed') this.close(`connection ${s}`);
    };
    this.pc.ondatachannel = (e) => {
      if (this.initiator || this.dc || e.channel.label !== DATA_CHANNEL_LABEL) {
        this.hooks.warn('unexpected-channel', this.remote, e.channel.label);
        e.channel.close();
        return;
      }
      this.useChannel(e.channel);
    };
    this.later(CONNECT_TIMEOUT_MS, () => {
      if (this.state !== 'ready') this.close('connect timeout');
    });
  }

  /** Starts an initiator's negotiation: the channel and the offer. */
  async start() {
    try {
      this.useChannel(this.pc.createDataChannel(DATA_CHANNEL_LABEL, { ordered: true }));
      const offer = await this.pc.createOffer();
      if (this.state === 'closed') return;
      await this.pc.setLocalDescription(offer);
      if (this.state === 'closed') return;
      this.hooks.signal({ kind: 'offer', sdp: this.pc.localDescription.sdp });
    } catch (e) {
      this.hooks.warn('offer-failed', this.remote, e?.message ?? e);
      this.close('offer failed');
    }
  }

  /** A relay payload from the remote peer: offer, answer or candidate. */
  async handleSignal(payload) {
    if (this.state === 'closed') return;
    try {
      if (payload.kind === 'offer') {
        if (this.initiator || this.remoteDescriptionSet) throw new Error('unexpected offer');
        await this.pc.setRemoteDescription({ type: 'offer', sdp: payload.sdp });
        await this.remoteSet();
        const answer = await this.pc.createAnswer();
        if (this.state === 'closed') return;
        await this.pc.setLocalDescription(answer);
        if (this.state === 'closed') return;
        this.hooks.signal({ kind: 'answer', sdp: this.pc.localDescription.sdp });
      } else if (payload.kind === 'answer') {
        if (!this.initiator || this.remoteDescriptionSet) throw new Error('unexpected answer');
        await this.pc.setRemoteDescription({ type: 'answer', sdp: payload.sdp });
        await this.remoteSet();
      } else if (payload.kind === 'candidate') {
        if (!this.remoteDescriptionSet) {
          if (this.earlyCandidates.length >= MAX_EARLY_CANDIDATES) throw new Error('too many early candidates');
          this.earlyCandidates.push(payload.candidate);
        } else {
          await this.pc.addIceCandidate(payload.candidate);
        }
      }
    } catch (e) {
      if (this.state === 'closed') return;
      this.hooks.warn('negotiation-failed', this.remote, payload.kind, e?.message ?? e);
      this.close('negotiation failed');
    }
  }

  async remoteSet() {
    this.remoteDescriptionSet = true;
    const early = this.earlyCandidates;
    this.earlyCandidates = [];
    for (const c of early) await this.pc.addIceCandidate(c);
  }

  useChannel(dc) {
    this.dc = dc;
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = BUFFER_LOW;
    dc.onopen = () => this.onOpen();
    dc.onclose = () => this.close('channel closed');
    dc.onerror = (e) => {
      // SCTP cause 12, "User-Initiated Abort": the other side closed the channel, not an error.
      if (this.state === 'closed' || e?.error?.sctpCauseCode === 12) return;
      this.hooks.warn('channel-error', this.remote, e?.error?.message ?? '');
    };
    dc.onmessage = (e) => this.onMessage(e.data);
    dc.onbufferedamountlow = () => this.hooks.drained(this);
    if (dc.readyState === 'open') this.onOpen();
  }

  onOpen() {
    if (this.state !== 'connecting') return;
    this.state = 'open';
    this.sendFrame({ type: 'handshake', version: PROTOCOL_VERSION, peer_id: this.me });
    this.later(HANDSHAKE_TIMEOUT_MS, () => {
      if (this.state === 'open') this.close('no handshake');
    });
  }

  onMessage(data) {
    if (this.state === 'closed') return;
    if (!(data instanceof ArrayBuffer)) {
      this.hooks.warn('bad-frame', this.remote, 'text message on the data channel');
      this.close('protocol error');
      return;
    }
    let frame;
    try {
      frame = decodeFrameExact(new Uint8Array(data));
    } catch (e) {
      this.hooks.warn('bad-frame', this.remote, e.kind ?? e.message);
      this.close('protocol error');
      return;
    }
    if (this.state === 'open') {
      // The first frame must be the Handshake, from the peer the tracker said this is.
      if (frame.type !== 'handshake' || frame.peer_id !== this.remote) {
        this.hooks.warn('bad-handshake', this.remote, frame.type, frame.peer_id);
        this.close('bad handshake');
        return;
      }
      this.state = 'ready';
      this.hooks.ready(this);
      return;
    }
    if (frame.type === 'handshake') {
      this.hooks.warn('bad-frame', this.remote, 'second handshake');
      this.close('protocol error');
      return;
    }
    this.hooks.frame(this, frame);
  }

  /** Bytes sent on the channel and not yet handed to the network. */
  get bufferedAmount() {
    return this.dc?.bufferedAmount ?? 0;
  }

  /** The remote side's SCTP max-message-size (bytes), for trimming a large Have. */
  get maxMessageSize() {
    const m = this.pc.sctp?.maxMessageSize;
    return typeof m === 'number' && m > 0 ? m : 65_536;
  }

  /** Encodes and sends a frame; false if the channel is not open (or the frame is invalid). */
  sendFrame(frame) {
    if (!this.dc || this.dc.readyState !== 'open') return false;
    try {
      this.dc.send(encodeFrame(frame));
      return true;
    } catch (e) {
      this.hooks.warn('send-failed', this.remote, frame.type, e?.message ?? e);
      this.close('send failed');
      return false;
    }
  }

  // -------------------------------------------------------------------------------------------

  later(ms, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  /** Closes everything; the `closed` hook runs once. */
  close(reason) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.earlyCandidates = [];
    if (this.dc) {
      this.dc.onopen = this.dc.onclose = this.dc.onmessage = this.dc.onerror = this.dc.onbufferedamountlow = null;
      try {
        this.dc.close();
      } catch {
        /* already closed */
      }
    }
    this.pc.onicecandidate = this.pc.onconnectionstatechange = this.pc.ondatachannel = null;
    try {
      this.pc.close();
    } catch {
      /* already closed */
    }
    this.hooks.closed(this, reason);
  }
}
