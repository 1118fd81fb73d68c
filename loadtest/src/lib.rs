//! The load-test harness: simulated viewers with a real player model, a synthetic origin, scenarios,
//! and a QoE and cost report.
#![cfg_attr(test, allow(clippy::unwrap_used))]
pub mod edge_delay;
pub mod html;
pub mod netem;
pub mod origin;
pub mod player;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shard;
pub mod tracker;
