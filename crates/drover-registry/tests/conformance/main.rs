//! Behaviour every registry store must show: each check runs against the embedded SQLite store
//! and against PostgreSQL. The PostgreSQL runs are `#[ignore]`d, so a plain `cargo test` shows
//! them as ignored (never as passed); `cargo test -- --include-ignored` with
//! `DROVER_TEST_DATABASE_URL` set (for example `postgres://postgres@127.0.0.1:5432/test`) runs
//! them, as CI does — without the variable they fail. Each PostgreSQL run gets a schema of its
//! own (`drover_t_<pid>_<n>`), dropped at the end.
//!
//! `conformance!(check, …)` in a module makes the tests `<module>::sqlite::<check>` and
//! `<module>::postgres::<check>`; a check is an `async fn(Subject)`.
#![allow(clippy::unwrap_used)]

/// Asserts that a result is the registry error of this kind.
macro_rules! assert_err {
    ($res:expr, $kind:ident) => {{
        let res = &$res;
        assert!(
            matches!(res, Err(drover_registry::RegistryError::$kind(_))),
            "expected {}, got {:?}",
            stringify!($kind),
            res.as_ref().map(|_| "a success")
        );
    }};
}

/// Makes a SQLite and a PostgreSQL test of each check.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let (subject, _dir) = $crate::sqlite().await;
                    super::$check(subject).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs PostgreSQL: set DROVER_TEST_DATABASE_URL and run with --include-ignored (CI does)"]
                async fn $check() {
                    let pg = $crate::Postgres::start().await;
                    super::$check(pg.subject()).await;
                    pg.finish().await;
                }
            )*
        }
    };
}

mod access;
mod accounts;
mod cluster;
mod directory;
mod feed;
mod migrate;
mod resources;
mod twins;
mod webhooks;

use std::io::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drover_auth::device::DeviceDirectory;
use drover_auth::user::UserDirectory;
use drover_model::{Principal, Resource, ResourceInput};
use drover_registry::{PgOptions, PostgresRegistry, Registry, SqliteRegistry, TwinStore};
use sqlx::Connection;

/// What a check gets: a registry that is also a device and a user directory.
pub type Subject = Arc<dyn Store>;

pub trait Store: Registry + DeviceDirectory + UserDirectory + TwinStore {}
impl<T: Registry + DeviceDirectory + UserDirectory + TwinStore> Store for T {}

/// Creates an application with nothing but a name, as the system administrator.
pub async fn new_app(reg: &Subject, name: &str) -> Resource {
    reg.create_app(
        &admin(),
        input(serde_json::json!({"metadata": {"name": name}})),
    )
    .await
    .unwrap()
}

pub fn input(v: serde_json::Value) -> ResourceInput {
    serde_json::from_value(v).unwrap()
}

pub fn admin() -> Principal {
    Principal::SystemAdmin("admin".into())
}

pub fn user(name: &str) -> Principal {
    Principal::User(name.into())
}

/// Waits for `check` to hold, at most five seconds.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn sqlite() -> (Subject, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let reg = SqliteRegistry::open(&dir.path().join("r.db"))
        .await
        .unwrap();
    (Arc::new(reg), dir)
}

/// A schema of its own on the test database, and the registries (nodes) on it.
pub struct Postgres {
    pub url: String,
    pub schema: String,
    pub nodes: Vec<Arc<PostgresRegistry>>,
    finished: bool,
}

impl Postgres {
    /// A fresh schema with one node.
    pub async fn start() -> Self {
        Self::with(PgOptions::default()).await
    }

    /// A fresh schema with one node made with `options` (its schema and pool size are the
    /// test's).
    pub async fn with(options: PgOptions) -> Self {
        let mut pg = Self::fresh();
        let node = pg.node(options).await;
        pg.nodes.push(node);
        pg
    }

    /// A fresh schema and no node yet.
    ///
    /// # Panics
    /// When `DROVER_TEST_DATABASE_URL` is not set: the test was asked to run (it is ignored
    /// otherwise) and cannot.
    pub fn fresh() -> Self {
        let url = std::env::var("DROVER_TEST_DATABASE_URL").unwrap_or_else(|_| {
            panic!("this test needs PostgreSQL: set DROVER_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test)")
        });
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let schema = format!(
            "drover_t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Postgres {
            url,
            schema,
            nodes: Vec::new(),
            finished: false,
        }
    }

    /// Another node on the same schema.
    pub async fn node(&self, options: PgOptions) -> Arc<PostgresRegistry> {
        let options = PgOptions {
            schema: Some(self.schema.clone()),
            max_connections: 4,
            ..options
        };
        Arc::new(PostgresRegistry::connect(&self.url, options).await.unwrap())
    }

    pub fn subject(&self) -> Subject {
        self.nodes[0].clone()
    }

    /// Runs SQL on a connection of its own, in the test's schema.
    pub async fn sql(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let sql = format!("SET search_path TO {}; {sql}", self.schema);
        sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }

    /// The number a query answers, on a connection of its own.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        n
    }

    /// Closes the nodes and drops the schema.
    pub async fn finish(mut self) {
        for node in &self.nodes {
            node.close().await;
        }
        self.sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
        self.finished = true;
    }
}

impl Drop for Postgres {
    /// A test that failed did not finish: drop its schema all the same, from a thread and runtime
    /// of its own (the test's runtime is busy unwinding), giving up on locks after a while.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&url).await?;
                    let sql =
                        format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE");
                    sqlx::raw_sql(&sql).execute(&mut conn).await?;
                    conn.close().await
                })
                .map_err(std::io::Error::other)
        });
        if !matches!(cleanup.join(), Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test schema {}",
                self.schema
            );
        }
    }
}
