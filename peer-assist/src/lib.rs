//! Peer-assisted delivery: the wire protocol, the tracker the gateway mounts, transports (QUIC and
//! WebRTC) behind one frame-link abstraction, the deadline scheduler, and a native peer node; and
//! what every part of the project shares: HLS playlists as they are read everywhere ([`hls`]) and
//! one grammar for durations and sizes ([`units`]).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod accounting;
#[doc(hidden)]
pub mod fuzzing;
pub mod hls;
pub mod net;
pub mod node;
pub mod protocol;
pub mod scheduler;
pub mod tracker;
pub mod transport;
pub mod units;
