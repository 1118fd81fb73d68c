//! The contribution ledger (docs/LEDGER.md): receipts the tracker believes are stored per epoch;
//! each closed epoch's receipts are committed to by a Merkle root this gateway signs; anyone can
//! read an epoch's totals and a receipt's inclusion proof over HTTP, and an operator exports an
//! epoch for whatever reward scheme it runs.

pub mod endpoints;
pub mod postgres;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use peer_assist::accounting::{merkle, NodeKey, Receipt, Rejection};
use peer_assist::tracker::receipts::Checked;
use peer_assist::tracker::ReceiptLedger;

use crate::config::LedgerConfig;
pub use store::{Sealed, Store, StoreError, UploaderLine};

/// An epoch closes this long after its end: receipts accepted just before the end may still be
/// on their way into the store (every gateway of a fleet must keep its clock within this).
pub const SEAL_GRACE: Duration = Duration::from_secs(5);

/// The first line of the text a gateway signs to seal an epoch.
pub const SEAL_DOMAIN: &str = "hls-p2p-epoch/1";

/// Why the ledger could not start: the operator's configuration or disk.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("ledger key: {0}")]
    Key(#[from] peer_assist::accounting::KeyError),
}

/// An epoch as the HTTP endpoint and the export show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochView {
    pub epoch: u64,
    pub epoch_seconds: u64,
    /// Unix seconds of its start and end.
    pub start: u64,
    pub end: u64,
    /// Whether it is over and sealed (its root signed).
    pub closed: bool,
    pub receipts: u64,
    /// Merkle root (hex) over its receipts, so far if it is open.
    pub root: String,
    pub gateway_key: String,
    /// This gateway's signature over the seal text (hex); `None` while open.
    pub signature: Option<String>,
    pub uploaders: Vec<UploaderLine>,
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn Store>,
    key: Arc<NodeKey>,
    epoch: Duration,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("gateway_key", &self.key.public_hex())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// The seal text: domain, epoch, epoch length in seconds, receipt count, root; one per line.
pub fn seal_text(epoch: u64, epoch_seconds: u64, receipts: u64, root: &str) -> String {
    format!("{SEAL_DOMAIN}\n{epoch}\n{epoch_seconds}\n{receipts}\n{root}")
}

/// The key file used when `ledger.key_file` is not set: next to the SQLite file, or in the
/// working directory.
pub fn default_key_file(config: &LedgerConfig) -> PathBuf {
    match (&config.key_file, &config.path) {
        (Some(k), _) => k.clone(),
        (None, Some(p)) if config.database_url.is_none() => p.with_extension("key"),
        _ => PathBuf::from("ledger.key"),
    }
}

impl Ledger {
    /// The ledger `config` describes, or `None` when it is off. A PostgreSQL ledger connects on
    /// first use.
    pub fn open(config: &LedgerConfig) -> Result<Option<Ledger>, LedgerError> {
        let store: Arc<dyn Store> = match (&config.database_url, &config.path) {
            (Some(url), _) => Arc::new(postgres::Postgres::new(url)?),
            (None, Some(path)) => Arc::new(store::Sqlite::open(path)?),
            (None, None) => return Ok(None),
        };
        let key = NodeKey::load_or_create(&default_key_file(config))?;
        Ok(Some(Ledger::with_store(store, key, config.epoch)))
    }

    pub fn with_store(store: Arc<dyn Store>, key: NodeKey, epoch: Duration) -> Self {
        Self {
            store,
            key: Arc::new(key),
            epoch: epoch.max(Duration::from_secs(1)),
        }
    }

    /// The gateway's public key, hex.
    pub fn gateway_key(&self) -> &str {
        self.key.public_hex()
    }

    pub fn epoch_seconds(&self) -> u64 {
        self.epoch.as_secs().max(1)
    }

    /// The epoch of Unix time `unix_ms`.
    pub fn epoch_at(&self, unix_ms: u64) -> u64 {
        unix_ms / (self.epoch_seconds() * 1000)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Seals every epoch that ended more than [`SEAL_GRACE`] before `unix_ms` and is not sealed
    /// by this gateway yet. Returns the epochs sealed.
    pub async fn seal_due(&self, unix_ms: u64) -> Result<Vec<u64>, StoreError> {
        let closed_before = self.epoch_at(unix_ms.saturating_sub(SEAL_GRACE.as_millis() as u64));
        let due = self
            .store
            .unsealed(closed_before, self.gateway_key())
            .await?;
        for &epoch in &due {
            let receipts = self.store.receipts(epoch).await?;
            let root = hex::encode(root_of(&receipts));
            let count = receipts.len() as u64;
            let text = seal_text(epoch, self.epoch_seconds(), count, &root);
            let signature = hex::encode(self.key.sign(text.as_bytes()));
            self.store
                .seal(Sealed {
                    epoch,
                    root,
                    receipts: count,
                    gateway_key: self.gateway_key().to_owned(),
                    signature,
                })
                .await?;
            tracing::info!(epoch, receipts = count, "ledger epoch sealed");
        }
        Ok(due)
    }

    /// Epoch `epoch` as of `unix_ms`.
    pub async fn view(&self, epoch: u64, unix_ms: u64) -> Result<EpochView, StoreError> {
        let uploaders = self.store.uploaders(epoch).await?;
        let sealed = self.store.sealed(epoch, self.gateway_key()).await?;
        let (root, receipts, signature) = match sealed {
            Some(s) => (s.root, s.receipts, Some(s.signature)),
            None => {
                let receipts = self.store.receipts(epoch).await?;
                let over = epoch < self.epoch_at(unix_ms);
                // An epoch that is over but has no receipts is sealed on the fly (nothing to
                // store); one with receipts waits for `seal_due`.
                let root = hex::encode(root_of(&receipts));
                let signature = (over && receipts.is_empty()).then(|| {
                    let text = seal_text(epoch, self.epoch_seconds(), 0, &root);
                    hex::encode(self.key.sign(text.as_bytes()))
                });
                (root, receipts.len() as u64, signature)
            }
        };
        let start = epoch.saturating_mul(self.epoch_seconds());
        Ok(EpochView {
            epoch,
            epoch_seconds: self.epoch_seconds(),
            start,
            end: start.saturating_add(self.epoch_seconds()),
            closed: signature.is_some(),
            receipts,
            root,
            gateway_key: self.gateway_key().to_owned(),
            signature,
            uploaders,
        })
    }

    /// Runs [`Ledger::seal_due`] now and then, until the process ends.
    pub fn spawn_sealer(&self) {
        let ledger = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = ledger.seal_due(unix_ms()).await {
                    tracing::warn!(error = %e, "cannot seal the ledger's epochs");
                }
                let period =
                    (ledger.epoch / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
                tokio::time::sleep(period).await;
            }
        });
    }
}

/// The Merkle root over `receipts` (in id order, as the store returns them).
pub fn root_of(receipts: &[Receipt]) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = receipts.iter().map(Receipt::leaf_hash).collect();
    merkle::root(&leaves)
}

impl ReceiptLedger for Ledger {
    fn store(&self, receipts: Vec<Checked>) -> BoxFuture<'static, Vec<Result<(), Rejection>>> {
        let now = unix_ms();
        let epoch = self.epoch_at(now);
        let count = receipts.len();
        let insert = self.store.insert(epoch, now, receipts);
        Box::pin(async move {
            match insert.await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store receipts");
                    vec![Err(Rejection::Storage); count]
                }
            }
        })
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Opens the SQLite ledger at `path` directly (the export tool).
pub fn open_sqlite(path: &Path) -> Result<store::Sqlite, StoreError> {
    store::Sqlite::open(path)
}
