//! Talking to origins: [`client`] fetches objects (timeouts, retries, failover, body limits) and
//! [`arriving`] shows a body to waiting viewers while it arrives, and
//! [`breaker`] decides, per origin, whether a request may go there at all (pure, explicit time).

pub mod arriving;
pub mod breaker;
pub mod client;

pub use client::{OriginClient, OriginResponse};
