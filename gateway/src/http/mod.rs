//! The HTTP side of the gateway, in the order a request meets it: [`server`] accepts connections and
//! applies limits, [`service`] routes (operational endpoints, CORS preflight, the player, peer-assist,
//! cached objects), [`path`] refuses unsafe request paths, and [`range`] answers byte ranges and
//! validators. [`web`] is the embedded player.

pub mod path;
pub mod range;
pub mod server;
pub mod service;
pub mod web;
