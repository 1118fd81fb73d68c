//! Peer-assisted delivery: the wire protocol, the tracker the gateway mounts, transports (QUIC now,
//! WebRTC later) behind one frame-link abstraction, the deadline scheduler, and a native peer node.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod node;
pub mod protocol;
pub mod scheduler;
pub mod tracker;
pub mod transport;
