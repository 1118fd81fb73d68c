//! Contribution accounting, the parts every party shares (docs/LEDGER.md): peer keys, signed
//! delivery receipts, and the Merkle tree an epoch's receipts are committed to. The gateway keeps
//! the ledger; a node signs receipts; anyone verifies them with this module alone.

pub mod credit;
pub mod keys;
pub mod merkle;
pub mod receipt;

pub use keys::{KeyError, NodeKey};
pub use receipt::{Alg, Receipt, ReceiptBody, Rejection};
