//! The tracker the gateway mounts: swarm registry and matching ([`registry`], pure) and the WebSocket
//! shell that runs one task per connected peer ([`hub`]).

pub mod hub;
pub mod metrics;
pub mod receipts;
pub mod registry;
pub mod reports;

pub use hub::{Backend, ConnectionInfo, ReceiptLedger, ResolveError, Tracker};
pub use registry::{Registry, SwarmKey, TrackerConfig, MAX_SHARDS};
