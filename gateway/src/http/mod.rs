//! The HTTP side of the gateway, in the order a request meets it: [`server`] accepts connections and
//! applies limits; [`service`] routes (operational endpoints, CORS preflight, the player, peer-assist);
//! [`deliver`] answers everything else from the cache, after [`path`] has refused unsafe request paths,
//! with [`range`] for byte ranges and validators. [`response`] holds the body type and the small text
//! answers every part sends; [`web`] is the embedded player.

pub mod deliver;
pub mod path;
pub mod range;
pub mod response;
pub mod server;
pub mod service;
pub mod web;
