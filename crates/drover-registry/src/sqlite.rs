//! The embedded registry store: one SQLite file (WAL, synchronous=FULL), used by one process.
//! Writes are serialized by the registry's in-process writer lock, which also makes change
//! revisions visible strictly in commit order.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::Reason;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::watch;

use crate::sql::{failure, sql_driver, Fallible};
use crate::store::{committed_access, committed_revision, Announcement, Backend, SqlRegistry};
use crate::{RegistryError, Result};

/// The embedded SQLite registry.
pub type SqliteRegistry = SqlRegistry<SqliteStore>;

/// Timestamps are stored as RFC 3339 text in UTC with nanoseconds, so that they sort as text.
fn time_arg(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn time_column(row: &SqliteRow, i: usize) -> std::result::Result<DateTime<Utc>, sqlx::Error> {
    let s: String = sqlx::Row::try_get(row, i)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(format!("stored timestamp '{s}': {e}").into()))
}

sql_driver!(Sqlite, SqliteRow, time_arg: time_arg, time_column: time_column);

/// The SQLite side of [`SqliteRegistry`].
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqlRegistry<SqliteStore> {
    /// Opens (creating if needed) the registry database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10));
        Self::open_with(path, opts, 4).await
    }

    /// Opens an existing registry database for this process alone (SQLite's exclusive locking
    /// mode, one connection), e.g. to copy it elsewhere: fails with
    /// [`RegistryError::Unavailable`] while another process (a running server) has it open, and
    /// keeps others from opening it until [`close`](Self::close). Fails with
    /// [`RegistryError::NotFound`] if there is no database at `path`.
    pub async fn open_exclusive(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(RegistryError::NotFound(format!(
                "there is no registry database at {}",
                path.display()
            )));
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .locking_mode(SqliteLockingMode::Exclusive)
            .busy_timeout(Duration::from_secs(1));
        Self::open_with(path, opts, 1)
            .await
            .map_err(|e| match e {
                RegistryError::Unavailable(why) | RegistryError::Internal(why)
                    if in_use(&why) =>
                {
                    RegistryError::Unavailable(Reason::new(format!(
                        "the registry database {} is in use by another process (is a server running on this data directory? stop it first)",
                        path.display()
                    )))
                }
                other => other,
            })
    }

    async fn open_with(path: &Path, opts: SqliteConnectOptions, connections: u32) -> Result<Self> {
        let opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| {
                RegistryError::unavailable(
                    format!("cannot open registry database {}", path.display()),
                    e,
                )
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| {
                RegistryError::internal(
                    format!("cannot migrate registry database {}", path.display()),
                    e,
                )
            })?;
        let (revision, _) = watch::channel(committed_revision(&mut pool.clone()).await?);
        let (access, _) = watch::channel(committed_access(&mut pool.clone()).await?);
        Ok(Self::new(SqliteStore { pool }, revision, access))
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Tx = Transaction<'static, Sqlite>;
    type Pool = SqlitePool;
    const LOCK_REVISION: &'static str = "SELECT revision FROM meta WHERE id = 1";
    const LOCK_DEVICE: &'static str = "SELECT uid FROM devices WHERE app = $1 AND name = $2";

    /// `BEGIN IMMEDIATE`: the transaction takes SQLite's write lock at once, waiting (up to the
    /// busy timeout) for a transaction that still holds it. A deferred one would fail instead when
    /// it first writes, e.g. while the previous writer's dropped transaction is still being
    /// rolled back on its connection.
    async fn begin_write(&self) -> Fallible<Self::Tx> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failure)
    }

    async fn begin_read(&self) -> Fallible<Self::Tx> {
        self.pool.begin().await.map_err(failure)
    }

    async fn announce(&self, _: &mut Self::Tx, _: Announcement) -> Fallible<()> {
        Ok(())
    }

    fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }

    /// Closes the pool (flushes the WAL).
    async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether SQLite refused because another connection holds the database.
fn in_use(why: &Reason) -> bool {
    let message = why.to_string();
    message.contains("locked") || message.contains("busy")
}
