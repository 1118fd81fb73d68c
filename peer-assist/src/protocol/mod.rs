//! The peer-assist wire protocol (docs/PROTOCOL.md).
//!
//! - [`frame`]: binary data frames between peers, the same over QUIC streams and WebRTC data channels.
//! - [`signal`]: JSON signalling messages between a peer and the gateway's tracker over WebSocket.
//!
//! `peer-assist/tests/vectors/` holds the test vectors every implementation must reproduce.

pub mod frame;
pub mod signal;

pub use frame::{decode, decode_exact, read_frame, Frame, FrameError};
pub use signal::{ClientMessage, ServerMessage, SignalError};
