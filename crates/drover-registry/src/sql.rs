//! The small SQL layer both stores share: statement arguments, row access, what database errors
//! mean for the registry, and [`sql_driver!`], which implements all of it for one sqlx driver.
//!
//! Statements are written once, in [`crate::store`], with `$1`-style placeholders (SQLite reads
//! them as numbered parameters too). JSON documents and timestamps are bound and read through
//! [`Arg`] and [`Fields`], so each store keeps its native column types (TEXT in SQLite, JSONB and
//! TIMESTAMPTZ in PostgreSQL) without a second copy of the SQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use drover_model::Reason;

use crate::RegistryError;

/// Why a store operation failed.
#[derive(Debug)]
pub enum Failure {
    /// The operation's answer (not found, conflict, database down, …).
    Final(RegistryError),
    /// The database aborted and rolled back the transaction (serialization failure, deadlock):
    /// running the whole operation again may succeed.
    Retry(RegistryError),
}

pub type Fallible<T> = std::result::Result<T, Failure>;

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Failure::Final(e)
    }
}

impl From<drover_model::ValidationError> for Failure {
    fn from(e: drover_model::ValidationError) -> Self {
        Failure::Final(e.into())
    }
}

impl From<Failure> for RegistryError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Final(e) | Failure::Retry(e) => e,
        }
    }
}

/// What a database error means for the caller.
pub fn failure(e: sqlx::Error) -> Failure {
    use sqlx::Error as E;
    let unavailable = |e: E| {
        Failure::Final(RegistryError::unavailable(
            "registry database unavailable",
            e,
        ))
    };
    match &e {
        E::PoolTimedOut => Failure::Final(RegistryError::Unavailable(Reason::new(
            "registry database unavailable: no connection could be had in time (is the database running and reachable?)",
        ))),
        E::Io(_) | E::Tls(_) | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => unavailable(e),
        E::Database(d) => match d.code().as_deref() {
            // serialization_failure, deadlock_detected: the transaction was rolled back.
            Some("40001" | "40P01") => Failure::Retry(RegistryError::unavailable(
                "registry database busy, try again",
                e,
            )),
            // connection exceptions, insufficient resources, operator intervention (shutdown,
            // cannot connect now, statement timeout), a read-only transaction (on a standby),
            // the lock timeout (another writer held the revision counter for too long).
            Some(c) if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") => {
                unavailable(e)
            }
            Some("25006" | "55P03") => unavailable(e),
            _ => Failure::Final(RegistryError::internal("registry database error", e)),
        },
        E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) | E::ColumnIndexOutOfBounds { .. } => {
            Failure::Final(RegistryError::internal("stored data is corrupt", e))
        }
        _ => Failure::Final(RegistryError::internal("registry database error", e)),
    }
}

/// One argument of a statement.
pub enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    Bool(bool),
    /// A JSON document (TEXT in SQLite, JSONB in PostgreSQL).
    Json(Box<RawValue>),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
}

impl Arg<'_> {
    pub fn json<T: Serialize>(v: &T) -> Fallible<Arg<'static>> {
        serde_json::value::to_raw_value(v)
            .map(Arg::Json)
            .map_err(|e| Failure::Final(RegistryError::internal("cannot store document", e)))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::OptText(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<u64> for Arg<'_> {
    fn from(v: u64) -> Self {
        Arg::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl From<Option<DateTime<Utc>>> for Arg<'_> {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::OptTime(v)
    }
}

impl From<DateTime<Utc>> for Arg<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Time(v)
    }
}

/// Something statements run on: a transaction or a pool.
#[async_trait]
pub trait Sql: Send {
    type Row: Fields + Send;
    /// Runs a statement; returns how many rows it changed.
    async fn exec(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Fallible<u64>;
    async fn rows(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Fallible<Vec<Self::Row>>;
    async fn row(&mut self, sql: &'static str, args: &[Arg<'_>]) -> Fallible<Option<Self::Row>> {
        Ok(self.rows(sql, args).await?.into_iter().next())
    }
}

/// A transaction: dropped without commit, it rolls back.
#[async_trait]
pub trait Tx: Sql {
    async fn commit(self) -> Fallible<()>;
}

/// Typed access to the columns of a result row.
pub trait Fields {
    fn text(&self, i: usize) -> Fallible<String>;
    fn opt_text(&self, i: usize) -> Fallible<Option<String>>;
    fn int(&self, i: usize) -> Fallible<i64>;
    fn opt_int(&self, i: usize) -> Fallible<Option<i64>>;
    fn flag(&self, i: usize) -> Fallible<bool>;
    fn json<T: DeserializeOwned>(&self, i: usize) -> Fallible<T>;
    fn time(&self, i: usize) -> Fallible<DateTime<Utc>>;
    /// Whether the column is NULL.
    fn is_null(&self, i: usize) -> Fallible<bool>;

    fn opt_time(&self, i: usize) -> Fallible<Option<DateTime<Utc>>> {
        if self.is_null(i)? {
            Ok(None)
        } else {
            self.time(i).map(Some)
        }
    }

    fn uint(&self, i: usize) -> Fallible<u64> {
        Ok(u64::try_from(self.int(i)?).unwrap_or_default())
    }
}

/// Implements [`Sql`] and [`Tx`] for the driver's transactions and pool, and [`Fields`] for its
/// rows. `time_arg` turns a timestamp into what the driver binds, `time_column` reads one back.
macro_rules! sql_driver {
    // `Sql` for what `$executor` turns `&mut $target` into an executor of.
    (@sql $target:ty, $row:ty, |$s:ident| $executor:expr) => {
        #[async_trait::async_trait]
        impl $crate::sql::Sql for $target {
            type Row = $row;
            async fn exec(
                &mut self,
                sql: &'static str,
                args: &[$crate::sql::Arg<'_>],
            ) -> $crate::sql::Fallible<u64> {
                let $s = self;
                exec_on($executor, sql, args).await
            }
            async fn rows(
                &mut self,
                sql: &'static str,
                args: &[$crate::sql::Arg<'_>],
            ) -> $crate::sql::Fallible<Vec<$row>> {
                let $s = self;
                rows_on($executor, sql, args).await
            }
        }
    };
    ($db:ty, $row:ty, time_arg: $time_arg:path, time_column: $time_column:path) => {
        type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>;

        fn bind<'q>(mut q: Query<'q>, args: &'q [$crate::sql::Arg<'_>]) -> Query<'q> {
            use $crate::sql::Arg;
            for a in args {
                q = match a {
                    Arg::Text(v) => q.bind(*v),
                    Arg::OptText(v) => q.bind(*v),
                    Arg::Int(v) => q.bind(*v),
                    Arg::Bool(v) => q.bind(*v),
                    Arg::Json(v) => q.bind(sqlx::types::Json(&**v)),
                    Arg::Time(v) => q.bind($time_arg(v)),
                    Arg::OptTime(v) => q.bind(v.as_ref().map($time_arg)),
                };
            }
            q
        }

        async fn exec_on<'c, E>(
            ex: E,
            sql: &'static str,
            args: &[$crate::sql::Arg<'_>],
        ) -> $crate::sql::Fallible<u64>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            let done = bind(sqlx::query(sql), args)
                .execute(ex)
                .await
                .map_err($crate::sql::failure)?;
            Ok(done.rows_affected())
        }

        async fn rows_on<'c, E>(
            ex: E,
            sql: &'static str,
            args: &[$crate::sql::Arg<'_>],
        ) -> $crate::sql::Fallible<Vec<$row>>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            bind(sqlx::query(sql), args)
                .fetch_all(ex)
                .await
                .map_err($crate::sql::failure)
        }

        $crate::sql::sql_driver!(@sql sqlx::Transaction<'static, $db>, $row, |tx| &mut **tx);
        $crate::sql::sql_driver!(@sql sqlx::Pool<$db>, $row, |pool| &*pool);

        #[async_trait::async_trait]
        impl $crate::sql::Tx for sqlx::Transaction<'static, $db> {
            async fn commit(self) -> $crate::sql::Fallible<()> {
                sqlx::Transaction::commit(self)
                    .await
                    .map_err($crate::sql::failure)
            }
        }

        impl $crate::sql::Fields for $row {
            fn text(&self, i: usize) -> $crate::sql::Fallible<String> {
                sqlx::Row::try_get(self, i).map_err($crate::sql::failure)
            }
            fn opt_text(&self, i: usize) -> $crate::sql::Fallible<Option<String>> {
                sqlx::Row::try_get(self, i).map_err($crate::sql::failure)
            }
            fn int(&self, i: usize) -> $crate::sql::Fallible<i64> {
                sqlx::Row::try_get(self, i).map_err($crate::sql::failure)
            }
            fn opt_int(&self, i: usize) -> $crate::sql::Fallible<Option<i64>> {
                sqlx::Row::try_get(self, i).map_err($crate::sql::failure)
            }
            fn flag(&self, i: usize) -> $crate::sql::Fallible<bool> {
                sqlx::Row::try_get(self, i).map_err($crate::sql::failure)
            }
            fn json<T: serde::de::DeserializeOwned>(&self, i: usize) -> $crate::sql::Fallible<T> {
                sqlx::Row::try_get::<sqlx::types::Json<T>, _>(self, i)
                    .map(|j| j.0)
                    .map_err($crate::sql::failure)
            }
            fn time(&self, i: usize) -> $crate::sql::Fallible<chrono::DateTime<chrono::Utc>> {
                $time_column(self, i).map_err($crate::sql::failure)
            }
            fn is_null(&self, i: usize) -> $crate::sql::Fallible<bool> {
                use sqlx::ValueRef as _;
                sqlx::Row::try_get_raw(self, i)
                    .map(|v| v.is_null())
                    .map_err($crate::sql::failure)
            }
        }
    };
}

pub(crate) use sql_driver;
