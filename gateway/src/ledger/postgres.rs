//! The PostgreSQL store: every gateway of a fleet writes to one database, so a receipt replayed to
//! another gateway is still a replay and a receiver's credit for a segment is still bounded by its
//! size (the same statements as SQLite, under PostgreSQL's row locks). The connection is made again
//! after a failure.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use peer_assist::accounting::{Receipt, Rejection};
use peer_assist::tracker::receipts::Checked;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::store::{
    alg_of, from_sql, schema, sql, to_sql, Sealed, Store, StoreError, UploaderLine,
};

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError(format!("postgres: {e}"))
    }
}

/// Any number the schema's creation lock is known by (two gateways starting at once).
const SCHEMA_LOCK: i64 = 0x6c65_6467_6572;

#[derive(Clone)]
pub struct Postgres {
    url: Arc<str>,
    client: Arc<Mutex<Option<Client>>>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

/// Connects and makes sure the schema exists (under an advisory lock: gateways that start at
/// once would otherwise race on `CREATE TABLE IF NOT EXISTS`).
async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "ledger database connection ended");
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    let created = client.batch_execute(schema()).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
        .await?;
    created?;
    Ok(client)
}

impl Postgres {
    /// A store for the database at `url` (a `postgres://` URL or a libpq key=value string). It
    /// connects on first use, and creates the schema then if it is not there; a URL that cannot
    /// be parsed is refused at once.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| StoreError(format!("ledger.database_url: {e}")))?;
        Ok(Self {
            url: url.into(),
            client: Arc::new(Mutex::new(None)),
        })
    }

    /// Runs `f` with a live client (connecting again if the last one failed).
    fn run<T, F>(&self, f: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Client) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>
            + Send
            + 'static,
    {
        let this = self.clone();
        Box::pin(async move {
            let mut slot = this.client.lock().await;
            if slot.as_ref().is_none_or(Client::is_closed) {
                *slot = Some(connect(&this.url).await?);
            }
            let Some(client) = slot.as_mut() else {
                return Err(StoreError("no database connection".into()));
            };
            let result = f(client).await;
            if result.is_err() && client.is_closed() {
                *slot = None;
            }
            result.map_err(StoreError::from)
        })
    }
}

impl Store for Postgres {
    fn insert(
        &self,
        epoch: u64,
        accepted_ms: u64,
        batch: Vec<Checked>,
    ) -> BoxFuture<'static, Result<Vec<Result<(), Rejection>>, StoreError>> {
        self.run(move |client| {
            Box::pin(async move {
                let tx = client.transaction().await?;
                let mut out = Vec::with_capacity(batch.len());
                for c in &batch {
                    let r = &c.receipt;
                    let id = r.id();
                    let inserted = tx
                        .execute(
                            sql::INSERT,
                            &[
                                &id,
                                &to_sql(epoch),
                                &to_sql(accepted_ms),
                                &r.alg.label(),
                                &r.uploader,
                                &r.receiver,
                                &r.swarm,
                                &r.segment,
                                &r.sha256,
                                &to_sql(r.bytes),
                                &to_sql(r.time),
                                &r.nonce,
                                &r.sig,
                            ],
                        )
                        .await?;
                    if inserted == 0 {
                        out.push(Err(Rejection::Replay));
                        continue;
                    }
                    let credited = tx
                        .execute(
                            sql::CREDIT,
                            &[
                                &r.receiver,
                                &r.segment,
                                &to_sql(r.bytes),
                                &to_sql(c.segment_size),
                            ],
                        )
                        .await?;
                    if credited == 0 {
                        tx.execute(sql::UNDO, &[&id]).await?;
                        out.push(Err(Rejection::Duplicate));
                        continue;
                    }
                    out.push(Ok(()));
                }
                tx.commit().await?;
                Ok(out)
            })
        })
    }

    fn uploaders(&self, epoch: u64) -> BoxFuture<'static, Result<Vec<UploaderLine>, StoreError>> {
        self.run(move |client| {
            Box::pin(async move {
                let rows = client.query(sql::UPLOADERS, &[&to_sql(epoch)]).await?;
                Ok(rows
                    .iter()
                    .map(|row| UploaderLine {
                        key: row.get(0),
                        bytes: from_sql(row.get(1)),
                        segments: from_sql(row.get(2)),
                        receivers: from_sql(row.get(3)),
                    })
                    .collect())
            })
        })
    }

    fn receipts(&self, epoch: u64) -> BoxFuture<'static, Result<Vec<Receipt>, StoreError>> {
        self.run(move |client| {
            Box::pin(async move {
                let rows = client.query(sql::RECEIPTS, &[&to_sql(epoch)]).await?;
                Ok(rows
                    .iter()
                    .map(|row| Receipt {
                        alg: alg_of(row.get::<_, &str>(0)),
                        uploader: row.get(1),
                        receiver: row.get(2),
                        swarm: row.get(3),
                        segment: row.get(4),
                        sha256: row.get(5),
                        bytes: from_sql(row.get(6)),
                        time: from_sql(row.get(7)),
                        nonce: row.get(8),
                        sig: row.get(9),
                    })
                    .collect())
            })
        })
    }

    fn sealed(
        &self,
        epoch: u64,
        gateway_key: &str,
    ) -> BoxFuture<'static, Result<Option<Sealed>, StoreError>> {
        let key = gateway_key.to_owned();
        self.run(move |client| {
            Box::pin(async move {
                let row = client
                    .query_opt(sql::SEALED, &[&to_sql(epoch), &key])
                    .await?;
                Ok(row.map(|row| Sealed {
                    epoch,
                    root: row.get(0),
                    receipts: from_sql(row.get(1)),
                    gateway_key: key.clone(),
                    signature: row.get(2),
                }))
            })
        })
    }

    fn seal(&self, s: Sealed) -> BoxFuture<'static, Result<(), StoreError>> {
        self.run(move |client| {
            Box::pin(async move {
                client
                    .execute(
                        sql::SEAL,
                        &[
                            &to_sql(s.epoch),
                            &s.gateway_key,
                            &s.root,
                            &to_sql(s.receipts),
                            &s.signature,
                        ],
                    )
                    .await?;
                Ok(())
            })
        })
    }

    fn unsealed(
        &self,
        before: u64,
        gateway_key: &str,
    ) -> BoxFuture<'static, Result<Vec<u64>, StoreError>> {
        let key = gateway_key.to_owned();
        self.run(move |client| {
            Box::pin(async move {
                let rows = client
                    .query(sql::UNSEALED, &[&to_sql(before), &key])
                    .await?;
                Ok(rows.iter().map(|row| from_sql(row.get(0))).collect())
            })
        })
    }
}
