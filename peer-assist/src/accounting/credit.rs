//! A key's line of a gateway's ledger (`peer-assist ledger`): what a peer or seed reads back.

use serde::Serialize;

use crate::node::http::{GatewayClient, HttpError};

/// One key's credit in one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credit {
    pub epoch: u64,
    pub key: String,
    /// Verified bytes it delivered.
    pub bytes: u64,
    /// Deliveries (receipts).
    pub segments: u64,
    /// Distinct receivers.
    pub receivers: u64,
    /// The epoch's Merkle root (so far, while open).
    pub root: String,
    /// Whether the epoch is sealed.
    pub closed: bool,
}

/// Why the ledger could not be read: the gateway's answer or the network.
#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("the gateway's ledger is not what was expected: {0}")]
    Invalid(String),
}

/// `key`'s line of epoch `epoch` (default: the current one) of the ledger at `gateway`; zeros
/// when the key delivered nothing that epoch.
pub async fn read_credit(
    gateway: &str,
    key: &str,
    epoch: Option<u64>,
) -> Result<Credit, CreditError> {
    let path = match epoch {
        Some(n) => format!("/p2p/v1/ledger?epoch={n}"),
        None => "/p2p/v1/ledger".to_owned(),
    };
    let body = GatewayClient::new(gateway).get(&path, 0).await?;
    let ledger: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| CreditError::Invalid(e.to_string()))?;
    let field = |v: &serde_json::Value, name: &str| {
        v[name]
            .as_u64()
            .ok_or_else(|| CreditError::Invalid(format!("no {name}")))
    };
    let uploaders = ledger["uploaders"]
        .as_array()
        .ok_or_else(|| CreditError::Invalid("no uploaders".into()))?;
    let mine = uploaders.iter().find(|u| u["key"] == key);
    let (bytes, segments, receivers) = match mine {
        Some(m) => (
            field(m, "bytes")?,
            field(m, "segments")?,
            field(m, "receivers")?,
        ),
        None => (0, 0, 0),
    };
    Ok(Credit {
        epoch: field(&ledger, "epoch")?,
        key: key.to_owned(),
        bytes,
        segments,
        receivers,
        root: ledger["root"].as_str().unwrap_or_default().to_owned(),
        closed: ledger["closed"].as_bool().unwrap_or(false),
    })
}
