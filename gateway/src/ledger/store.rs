//! Where the ledger keeps receipts: one SQLite file (the default) or one PostgreSQL database a whole
//! fleet writes to. Both speak the same schema and the same rules, so the answers are the same.
//!
//! Storing a batch is one transaction. For each receipt: insert it (a receipt id or a
//! (receiver, nonce) seen before is a replay), then add its bytes to what that receiver credited
//! for that segment, but only while the sum stays within the segment's size (else the receipt is
//! removed again: a duplicate). A receipt reported stored is committed (SQLite: WAL with
//! `synchronous=FULL`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use peer_assist::accounting::{Alg, Receipt, Rejection};
use peer_assist::tracker::receipts::Checked;
use rusqlite::{params, Connection, OptionalExtension};

/// Why the ledger's storage failed: ours (the disk, the database), never the peer's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ledger storage: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// One uploader's line of an epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UploaderLine {
    /// Its public key, hex.
    pub key: String,
    /// Verified bytes it delivered.
    pub bytes: u64,
    /// Deliveries (receipts): one per segment (or part) per receiver.
    pub segments: u64,
    /// Distinct receivers.
    pub receivers: u64,
}

/// A closed epoch, as one gateway signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub epoch: u64,
    pub root: String,
    pub receipts: u64,
    pub gateway_key: String,
    pub signature: String,
}

/// A receipt store. Every method is one short transaction.
pub trait Store: Send + Sync + 'static {
    /// Stores `batch` as accepted in `epoch`; says per receipt stored or why not.
    fn insert(
        &self,
        epoch: u64,
        accepted_ms: u64,
        batch: Vec<Checked>,
    ) -> BoxFuture<'static, Result<Vec<Result<(), Rejection>>, StoreError>>;
    /// The epoch's uploaders, by key.
    fn uploaders(&self, epoch: u64) -> BoxFuture<'static, Result<Vec<UploaderLine>, StoreError>>;
    /// The epoch's receipts, by id.
    fn receipts(&self, epoch: u64) -> BoxFuture<'static, Result<Vec<Receipt>, StoreError>>;
    /// This gateway's seal of `epoch`, if it sealed it.
    fn sealed(
        &self,
        epoch: u64,
        gateway_key: &str,
    ) -> BoxFuture<'static, Result<Option<Sealed>, StoreError>>;
    /// Records a seal (a second seal of the same epoch by the same key is ignored).
    fn seal(&self, sealed: Sealed) -> BoxFuture<'static, Result<(), StoreError>>;
    /// Epochs before `before` that hold receipts and that `gateway_key` has not sealed.
    fn unsealed(
        &self,
        before: u64,
        gateway_key: &str,
    ) -> BoxFuture<'static, Result<Vec<u64>, StoreError>>;
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS receipts (
    id TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    accepted_ms BIGINT NOT NULL,
    alg TEXT NOT NULL,
    uploader TEXT NOT NULL,
    receiver TEXT NOT NULL,
    swarm TEXT NOT NULL,
    segment TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    nonce TEXT NOT NULL,
    sig TEXT NOT NULL,
    UNIQUE (receiver, nonce)
);
CREATE INDEX IF NOT EXISTS receipts_by_epoch ON receipts (epoch, id);
CREATE TABLE IF NOT EXISTS credited (
    receiver TEXT NOT NULL,
    segment TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (receiver, segment)
);
CREATE TABLE IF NOT EXISTS seals (
    epoch BIGINT NOT NULL,
    gateway_key TEXT NOT NULL,
    root TEXT NOT NULL,
    receipts BIGINT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (epoch, gateway_key)
);
";

/// The statements, with `$n` placeholders (SQLite accepts them as well as PostgreSQL).
pub mod sql {
    pub const INSERT: &str = "INSERT INTO receipts (id, epoch, accepted_ms, alg, uploader, receiver, swarm, segment, sha256, bytes, time_ms, nonce, sig) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING";
    pub const CREDIT: &str = "INSERT INTO credited (receiver, segment, bytes) VALUES ($1, $2, $3) ON CONFLICT (receiver, segment) DO UPDATE SET bytes = credited.bytes + excluded.bytes WHERE credited.bytes + excluded.bytes <= $4";
    pub const UNDO: &str = "DELETE FROM receipts WHERE id = $1";
    pub const UPLOADERS: &str = "SELECT uploader, CAST(SUM(bytes) AS BIGINT), COUNT(*), COUNT(DISTINCT receiver) FROM receipts WHERE epoch = $1 GROUP BY uploader ORDER BY uploader";
    pub const RECEIPTS: &str = "SELECT alg, uploader, receiver, swarm, segment, sha256, bytes, time_ms, nonce, sig FROM receipts WHERE epoch = $1 ORDER BY id";
    pub const SEALED: &str =
        "SELECT root, receipts, signature FROM seals WHERE epoch = $1 AND gateway_key = $2";
    pub const SEAL: &str = "INSERT INTO seals (epoch, gateway_key, root, receipts, signature) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    pub const UNSEALED: &str = "SELECT DISTINCT epoch FROM receipts WHERE epoch < $1 AND epoch NOT IN (SELECT epoch FROM seals WHERE gateway_key = $2) ORDER BY epoch";
}

/// The schema, for any backend.
pub fn schema() -> &'static str {
    SCHEMA
}

pub fn alg_of(label: &str) -> Alg {
    if label == "p256" {
        Alg::P256
    } else {
        Alg::Ed25519
    }
}

/// Integers are stored as SQL BIGINT (signed); receipts' are at most 2^53 − 1.
pub fn to_sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn from_sql(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The SQLite store: one connection, used from the blocking pool.
#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").field("path", &self.path).finish()
    }
}

impl Sqlite {
    /// Opens (creating) the ledger file: WAL, full sync, the schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |e: rusqlite::Error| StoreError(format!("{}: {e}", path.display()));
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
        })
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let conn = Arc::clone(&self.conn);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                f(&mut conn).map_err(StoreError::from)
            })
            .await
            .map_err(|e| StoreError(format!("ledger task failed: {e}")))?
        })
    }
}

fn insert_one(
    tx: &rusqlite::Transaction<'_>,
    epoch: u64,
    accepted_ms: u64,
    c: &Checked,
) -> Result<Result<(), Rejection>, rusqlite::Error> {
    let r = &c.receipt;
    let id = r.id();
    let inserted = tx.execute(
        sql::INSERT,
        params![
            id,
            to_sql(epoch),
            to_sql(accepted_ms),
            r.alg.label(),
            r.uploader,
            r.receiver,
            r.swarm,
            r.segment,
            r.sha256,
            to_sql(r.bytes),
            to_sql(r.time),
            r.nonce,
            r.sig
        ],
    )?;
    if inserted == 0 {
        return Ok(Err(Rejection::Replay));
    }
    let credited = tx.execute(
        sql::CREDIT,
        params![
            r.receiver,
            r.segment,
            to_sql(r.bytes),
            to_sql(c.segment_size)
        ],
    )?;
    if credited == 0 {
        tx.execute(sql::UNDO, params![id])?;
        return Ok(Err(Rejection::Duplicate));
    }
    Ok(Ok(()))
}

impl Store for Sqlite {
    fn insert(
        &self,
        epoch: u64,
        accepted_ms: u64,
        batch: Vec<Checked>,
    ) -> BoxFuture<'static, Result<Vec<Result<(), Rejection>>, StoreError>> {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let mut out = Vec::with_capacity(batch.len());
            for c in &batch {
                out.push(insert_one(&tx, epoch, accepted_ms, c)?);
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn uploaders(&self, epoch: u64) -> BoxFuture<'static, Result<Vec<UploaderLine>, StoreError>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(sql::UPLOADERS)?;
            let rows = stmt.query_map(params![to_sql(epoch)], |row| {
                Ok(UploaderLine {
                    key: row.get(0)?,
                    bytes: from_sql(row.get(1)?),
                    segments: from_sql(row.get(2)?),
                    receivers: from_sql(row.get(3)?),
                })
            })?;
            rows.collect()
        })
    }

    fn receipts(&self, epoch: u64) -> BoxFuture<'static, Result<Vec<Receipt>, StoreError>> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(sql::RECEIPTS)?;
            let rows = stmt.query_map(params![to_sql(epoch)], |row| {
                Ok(Receipt {
                    alg: alg_of(&row.get::<_, String>(0)?),
                    uploader: row.get(1)?,
                    receiver: row.get(2)?,
                    swarm: row.get(3)?,
                    segment: row.get(4)?,
                    sha256: row.get(5)?,
                    bytes: from_sql(row.get(6)?),
                    time: from_sql(row.get(7)?),
                    nonce: row.get(8)?,
                    sig: row.get(9)?,
                })
            })?;
            rows.collect()
        })
    }

    fn sealed(
        &self,
        epoch: u64,
        gateway_key: &str,
    ) -> BoxFuture<'static, Result<Option<Sealed>, StoreError>> {
        let key = gateway_key.to_owned();
        self.run(move |conn| {
            conn.query_row(sql::SEALED, params![to_sql(epoch), key], |row| {
                Ok(Sealed {
                    epoch,
                    root: row.get(0)?,
                    receipts: from_sql(row.get(1)?),
                    gateway_key: key.clone(),
                    signature: row.get(2)?,
                })
            })
            .optional()
        })
    }

    fn seal(&self, s: Sealed) -> BoxFuture<'static, Result<(), StoreError>> {
        self.run(move |conn| {
            conn.execute(
                sql::SEAL,
                params![
                    to_sql(s.epoch),
                    s.gateway_key,
                    s.root,
                    to_sql(s.receipts),
                    s.signature
                ],
            )?;
            Ok(())
        })
    }

    fn unsealed(
        &self,
        before: u64,
        gateway_key: &str,
    ) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let key = gateway_key.to_owned();
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(sql::UNSEALED)?;
            let rows = stmt.query_map(params![to_sql(before), key], |row| {
                Ok(from_sql(row.get(0)?))
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_assist::accounting::{NodeKey, ReceiptBody};

    fn receipt(receiver: &NodeKey, segment: &str, bytes: u64, nonce: u8) -> Checked {
        Checked {
            receipt: Receipt::sign(
                &ReceiptBody {
                    uploader: "ab".repeat(32),
                    swarm: "/s/v0.m3u8".into(),
                    segment: segment.into(),
                    sha256: [1; 32],
                    bytes,
                    time_ms: 1,
                    nonce: [nonce; 16],
                },
                receiver,
            ),
            segment_size: 1000,
        }
    }

    #[tokio::test]
    async fn replays_and_overfull_segments_are_refused_and_a_reopened_file_keeps_everything() {
        let dir = std::env::temp_dir().join(format!("ledger-store-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sqlite3");
        let store = Sqlite::open(&path).unwrap();
        let (a, b) = (NodeKey::from_seed(&[1; 32]), NodeKey::from_seed(&[2; 32]));
        let batch = vec![
            receipt(&a, "/s/1.ts", 600, 1),
            receipt(&a, "/s/1.ts", 600, 1),  // the same receipt again
            receipt(&a, "/s/1.ts", 400, 2),  // fills the segment
            receipt(&a, "/s/1.ts", 1, 3),    // one byte too many
            receipt(&b, "/s/1.ts", 1000, 1), // another receiver, same nonce: its own
        ];
        let out = store.insert(5, 10, batch).await.unwrap();
        assert_eq!(
            out,
            vec![
                Ok(()),
                Err(Rejection::Replay),
                Ok(()),
                Err(Rejection::Duplicate),
                Ok(())
            ]
        );
        drop(store);
        let store = Sqlite::open(&path).unwrap();
        let lines = store.uploaders(5).await.unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].bytes, lines[0].segments, lines[0].receivers),
            (2000, 3, 2)
        );
        let receipts = store.receipts(5).await.unwrap();
        assert_eq!(receipts.len(), 3);
        assert!(receipts.windows(2).all(|w| w[0].id() < w[1].id()));
        assert_eq!(store.unsealed(6, "k").await.unwrap(), vec![5]);
        store
            .seal(Sealed {
                epoch: 5,
                root: "r".into(),
                receipts: 3,
                gateway_key: "k".into(),
                signature: "s".into(),
            })
            .await
            .unwrap();
        assert!(store.unsealed(6, "k").await.unwrap().is_empty());
        assert_eq!(store.unsealed(6, "other").await.unwrap(), vec![5]);
        assert_eq!(store.sealed(5, "k").await.unwrap().unwrap().root, "r");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
