//! The PostgreSQL registry store, for one or many `drover` nodes sharing one database.
//!
//! - **Writers** are serialized across nodes by the lock on the revision counter row
//!   (`SELECT … FOR UPDATE` first thing in every write transaction, held until commit), and within
//!   a node by the registry's writer lock before they take a connection. Revisions are therefore
//!   allocated, and become visible, strictly in commit order on every node.
//! - **Other nodes learn of a commit** through `NOTIFY <channel>, '<revision>'` (or `'access'`
//!   when the commit moved the access counter, see [`crate::Registry::subscribe_access`]), sent
//!   in the write transaction (so it is delivered only if, and when, it commits). A background
//!   task listens, re-reads the counters whenever its connection was (re)established, and polls
//!   them every [`PgOptions::poll_interval`] in case a notification was lost. It reconnects with backoff
//!   after PostgreSQL restarts, and stops when the registry is closed or dropped.
//! - **Failures**: no connection within [`PgOptions::acquire_timeout`], a lost connection or a
//!   database shutting down become [`RegistryError::Unavailable`]; a transaction the database
//!   aborts (serialization failure, deadlock) runs again, a few times.
//! - **Schemas**: with [`PgOptions::schema`] every connection uses that schema (created if
//!   missing) through `search_path`, and the notification channel is the schema's own; this is how
//!   several registries, e.g. tests, share one database. Migrations run at connect; nodes starting
//!   together take turns (sqlx holds an advisory lock while migrating).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::Reason;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::sql::{failure, sql_driver, Fallible, Sql};
use crate::store::{
    advance, committed_access, committed_revision, Announcement, Backend, SqlRegistry,
};
use crate::{RegistryError, Result};

/// The registry on PostgreSQL.
pub type PostgresRegistry = SqlRegistry<PostgresStore>;

fn time_arg(t: &DateTime<Utc>) -> DateTime<Utc> {
    *t
}

fn time_column(row: &PgRow, i: usize) -> std::result::Result<DateTime<Utc>, sqlx::Error> {
    sqlx::Row::try_get(row, i)
}

sql_driver!(Postgres, PgRow, time_arg: time_arg, time_column: time_column);

/// The notification channel of the default schema; a named schema's is `drover_changes_<schema>`.
const CHANNEL: &str = "drover_changes";

/// Serializes `CREATE SCHEMA IF NOT EXISTS` across nodes starting together (it is not safe to
/// run concurrently). Any constant works; this one spells "drover" in ASCII.
const SCHEMA_LOCK: i64 = 0x6472_6f76_6572;

/// How a [`PostgresRegistry`] uses its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// The schema of the registry's tables, created if missing: lowercase letters, digits and
    /// `_`, at most 48 characters. `None`: the connection's default (`public`).
    pub schema: Option<String>,
    /// Connections in the pool, at most. One more is kept for listening to notifications.
    pub max_connections: u32,
    /// How long an operation waits for a connection (or a new one) before it fails with
    /// [`RegistryError::Unavailable`].
    pub acquire_timeout: Duration,
    /// How long a write waits for another node's write to finish before it fails with
    /// [`RegistryError::Unavailable`].
    pub lock_timeout: Duration,
    /// How often the revision counter is read in case a notification was lost: a commit on
    /// another node reaches [`crate::Registry::subscribe`] within this time at the latest.
    pub poll_interval: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The PostgreSQL side of [`PostgresRegistry`].
pub struct PostgresStore {
    pool: PgPool,
    listen_pool: PgPool,
    channel: String,
    follower: AbortHandle,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

fn schema_name(schema: &str) -> Result<&str> {
    let mut chars = schema.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 48;
    if valid {
        Ok(schema)
    } else {
        Err(RegistryError::BadRequest(format!(
            "invalid registry database schema '{schema}': use lowercase letters, digits and '_', at most 48 characters, not starting with a digit"
        )))
    }
}

impl SqlRegistry<PostgresStore> {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`),
    /// creates the schema if one is given and missing, migrates it, and starts following commits
    /// of other nodes.
    ///
    /// Fails with [`RegistryError::Unavailable`] when the database cannot be reached within
    /// [`PgOptions::acquire_timeout`], [`RegistryError::BadRequest`] on a malformed URL or
    /// schema name.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self> {
        let base: PgConnectOptions = url.parse().map_err(|e| {
            RegistryError::BadRequest(format!("invalid registry database URL: {e}"))
        })?;
        let schema = options.schema.as_deref().map(schema_name).transpose()?;
        let target = format!(
            "{}:{}/{}",
            base.get_host(),
            base.get_port(),
            base.get_database().unwrap_or_default()
        );
        let unavailable = |e: sqlx::Error| {
            RegistryError::unavailable(format!("cannot reach the registry database at {target}"), e)
        };
        let base = match schema {
            Some(s) => base.options([("search_path", s)]),
            None => base,
        };

        let mut conn =
            tokio::time::timeout(options.acquire_timeout, PgConnection::connect_with(&base))
                .await
                .map_err(|_| {
                    RegistryError::Unavailable(Reason::new(format!(
                        "cannot reach the registry database at {target}: no connection within the acquire timeout"
                    )))
                })?
                .map_err(unavailable)?;
        let migrated = migrate(&mut conn, schema).await;
        // Closing also ends the session's advisory locks, should migrating have failed.
        let _ = conn.close().await;
        migrated?;

        // Named after the schema, so that `pg_stat_activity` tells registries apart.
        let (channel, name) = match schema {
            Some(s) => (format!("{CHANNEL}_{s}"), format!("drover/{s}")),
            None => (CHANNEL.to_string(), "drover".to_string()),
        };
        let lock_timeout = format!("{}ms", options.lock_timeout.as_millis());
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(
                base.clone()
                    .application_name(&name)
                    .options([("lock_timeout", lock_timeout.as_str())]),
            )
            .await
            .map_err(unavailable)?;
        let listen_pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(base.application_name(&format!("{name}/listener")));

        let (revision, _) = watch::channel(committed_revision(&mut pool.clone()).await?);
        let (access, _) = watch::channel(committed_access(&mut pool.clone()).await?);
        let follower = Follower {
            pool: pool.clone(),
            listen_pool: listen_pool.clone(),
            channel: channel.clone(),
            revision: revision.clone(),
            access: access.clone(),
            poll_interval: options.poll_interval,
        };
        let follower = tokio::spawn(follower.run()).abort_handle();
        let store = PostgresStore {
            pool,
            listen_pool,
            channel,
            follower,
        };
        Ok(Self::new(store, revision, access))
    }
}

/// Creates the schema if needed and brings it to the current version.
async fn migrate(conn: &mut PgConnection, schema: Option<&str>) -> Result<()> {
    fn failed(e: impl std::error::Error + Send + Sync + 'static) -> RegistryError {
        RegistryError::internal("cannot migrate the registry database", e)
    }
    if let Some(schema) = schema {
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        let lock = sqlx::query("SELECT pg_advisory_lock($1)").bind(SCHEMA_LOCK);
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)").bind(SCHEMA_LOCK);
        lock.execute(&mut *conn).await.map_err(failed)?;
        conn.execute(create.as_str()).await.map_err(failed)?;
        unlock.execute(&mut *conn).await.map_err(failed)?;
    }
    sqlx::migrate!("./migrations/postgres")
        .run(conn)
        .await
        .map_err(failed)
}

#[async_trait]
impl Backend for PostgresStore {
    type Tx = Transaction<'static, Postgres>;
    type Pool = PgPool;
    const LOCK_REVISION: &'static str = "SELECT revision FROM meta WHERE id = 1 FOR UPDATE";
    const LOCK_DEVICE: &'static str =
        "SELECT uid FROM devices WHERE app = $1 AND name = $2 FOR UPDATE";

    async fn begin_write(&self) -> Fallible<Self::Tx> {
        self.pool.begin().await.map_err(failure)
    }

    async fn begin_read(&self) -> Fallible<Self::Tx> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(failure)
    }

    async fn announce(&self, tx: &mut Self::Tx, what: Announcement) -> Fallible<()> {
        // Followers re-read both counters on a payload that is not a revision.
        let payload = match what.access {
            Some(_) => "access".to_string(),
            None => what.revision.to_string(),
        };
        tx.exec(
            "SELECT pg_notify($1, $2)",
            &[self.channel.as_str().into(), payload.as_str().into()],
        )
        .await?;
        Ok(())
    }

    fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    async fn close(&self) {
        self.follower.abort();
        self.listen_pool.close().await;
        self.pool.close().await;
    }
}

/// Follows the commits of other nodes: listens for notifications, polls as a fallback.
struct Follower {
    pool: PgPool,
    listen_pool: PgPool,
    channel: String,
    revision: watch::Sender<u64>,
    access: watch::Sender<u64>,
    poll_interval: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Follower {
    async fn run(self) {
        let mut poll = tokio::time::interval(self.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = BACKOFF_MIN;
        let mut failing = false;
        loop {
            match self.listen().await {
                Ok(mut listener) => {
                    if failing {
                        tracing::info!(channel = %self.channel, "listening to registry changes again");
                    }
                    backoff = BACKOFF_MIN;
                    // Listening from here on: what was committed before is in the counter.
                    self.refresh().await;
                    loop {
                        tokio::select! {
                            _ = poll.tick() => self.refresh().await,
                            message = listener.try_recv() => match message {
                                Ok(Some(n)) => match n.payload().parse() {
                                    Ok(revision) => advance(&self.revision, revision),
                                    Err(_) => self.refresh().await,
                                },
                                // The connection was lost and is back: notifications may be lost.
                                Ok(None) => self.refresh().await,
                                Err(e) => {
                                    tracing::warn!(channel = %self.channel, "lost the registry change notifications, reconnecting: {e}");
                                    failing = true;
                                    break;
                                }
                            },
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(channel = %self.channel, "cannot listen to registry changes, polling until it can: {e}");
                    }
                    failing = true;
                }
            }
            let retry = tokio::time::Instant::now() + backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            loop {
                tokio::select! {
                    _ = poll.tick() => self.refresh().await,
                    () = tokio::time::sleep_until(retry) => break,
                }
            }
        }
    }

    async fn listen(&self) -> std::result::Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.listen_pool).await?;
        listener.listen(&self.channel).await?;
        Ok(listener)
    }

    /// Reads the counters; a failure is for the next tick to mend.
    async fn refresh(&self) {
        let mut db = self.pool.clone();
        let read = async {
            let revision = committed_revision(&mut db).await?;
            let access = committed_access(&mut db).await?;
            Ok::<_, crate::sql::Failure>((revision, access))
        };
        match read.await {
            Ok((revision, access)) => {
                advance(&self.revision, revision);
                advance(&self.access, access);
            }
            Err(e) => tracing::debug!(
                "cannot read the registry revision: {}",
                RegistryError::from(e)
            ),
        }
    }
}
