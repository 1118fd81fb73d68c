//! Emulated network links for simulated viewers (the load-test harness): per-viewer uplink and
//! downlink rates, round-trip time, loss, and NATs that accept no inbound connection, applied to
//! the viewer's QUIC socket ([`udp::ShapedUdpSocket`]) and to its HTTP connections
//! ([`stream::ShapedConnector`]). The model ([`link`]) is pure and tested on explicit time.
//! WebRTC links are not shaped.

pub mod link;
pub mod stream;
pub mod udp;

pub use link::{Link, LinkProfile};
