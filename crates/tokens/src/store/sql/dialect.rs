//! What differs between the SQL databases behind [`SqlStore`](super::SqlStore):
//! the [`Dialect`] trait (sealed) and the values passed through it.
//!
//! A dialect owns its connection pool and supplies the clock expression,
//! the integer column type, connect options, the migration lock, the
//! statement wrapper that announces a change to other instances, and the
//! invalidation channel of the read cache. Everything else, every statement
//! included, is written once in `sql/mod.rs`; both databases take `$n`
//! placeholders (SQLite reads `$1` as parameter 1).

use std::fmt::Debug;

use async_trait::async_trait;

use crate::store::StoreError;
use crate::store::cache::{ChannelTask, ReadCache};
use crate::store::persistent::Settings;

/// A SQL database a [`SqlStore`](super::SqlStore) can keep sessions in:
/// [`SqliteDialect`](super::SqliteDialect) or
/// [`PostgresDialect`](super::PostgresDialect). Sealed: its methods are
/// this crate's own, so that its private bound is deliberate.
#[allow(private_bounds)]
pub trait Dialect: private::Backend {}

impl<T: private::Backend> Dialect for T {}

/// A bound statement parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg<'a> {
    /// Text.
    Text(&'a str),
    /// Text or NULL.
    MaybeText(Option<&'a str>),
    /// A 64-bit integer.
    Int(i64),
}

/// A column of a fetched row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// An integer column.
    Int(i64),
    /// A text column.
    Text(String),
    /// NULL, or a column of no interest (PostgreSQL's `void`).
    Null,
}

impl Value {
    pub(crate) fn int(&self) -> Result<i64, StoreError> {
        match self {
            Value::Int(v) => Ok(*v),
            _ => Err(StoreError::Corrupt("unexpected stored data".into())),
        }
    }

    pub(crate) fn into_text(self) -> Result<String, StoreError> {
        match self {
            Value::Text(v) => Ok(v),
            _ => Err(StoreError::Corrupt("unexpected stored data".into())),
        }
    }
}

pub(crate) mod private {
    use super::{Arg, ChannelTask, Debug, ReadCache, Settings, StoreError, Value, async_trait};
    use std::sync::Arc;

    /// The methods of [`Dialect`](super::Dialect), private to this crate.
    #[async_trait]
    pub(crate) trait Backend: Send + Sync + Debug + Sized + 'static {
        /// Name in logs and errors (`SQLite`, `PostgreSQL`).
        const LABEL: &'static str;
        /// The database's time in Unix milliseconds, as an SQL expression.
        const NOW_MS: &'static str;
        /// The column type of a 64-bit integer.
        const INTEGER: &'static str;

        /// Parses the URL and builds the pool, without I/O.
        fn open(url: &str, settings: &Settings, prefix: &str) -> Result<Self, StoreError>;

        /// Runs a statement; returns the number of rows it changed.
        async fn execute(&self, sql: &Arc<str>, args: &[Arg<'_>]) -> Result<u64, sqlx::Error>;

        /// Runs a query; returns its rows.
        async fn fetch(
            &self,
            sql: &Arc<str>,
            args: &[Arg<'_>],
        ) -> Result<Vec<Vec<Value>>, sqlx::Error>;

        /// Runs several statements without parameters.
        async fn script(&self, sql: String) -> Result<(), sqlx::Error>;

        /// Runs the DDL under the dialect's migration lock (named by
        /// `lock_key`) and returns what `check` selects.
        async fn migrate(
            &self,
            lock_key: i64,
            ddl: String,
            check: String,
        ) -> Result<String, sqlx::Error>;

        /// `write` (an `UPDATE`/`DELETE` of a session row of the tables
        /// named by `prefix`, without `RETURNING`) changed so that it
        /// returns `columns` and, where the dialect has a channel, announces
        /// `id:<version>` to the other instances in the same transaction.
        fn announce(write: &str, columns: &str, version: &str, prefix: &str) -> String;

        /// Starts the invalidation channel of `cache`; `None` when the
        /// dialect has none (the store then keeps no read cache).
        fn start_channel(&self, cache: &Arc<ReadCache>) -> Option<ChannelTask>;
    }
}

/// Maps a driver error onto the store's error without leaking values.
pub(crate) fn map_err<D: Dialect>(err: sqlx::Error) -> StoreError {
    let label = D::LABEL;
    match err {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        sqlx::Error::Configuration(_) => {
            StoreError::Config(format!("invalid {label} configuration"))
        }
        sqlx::Error::Database(db) => StoreError::Unavailable(format!(
            "{label} error {}",
            db.code().as_deref().unwrap_or("unknown")
        )),
        // rustls reports a refused certificate as invalid data.
        sqlx::Error::Io(e)
            if e.kind() == std::io::ErrorKind::InvalidData
                && e.to_string().contains("certificate") =>
        {
            StoreError::Unavailable(format!(
                "{label} TLS handshake failed (certificate not verified?): {}",
                e.to_string().chars().take(200).collect::<String>()
            ))
        }
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("{label} I/O error: {}", e.kind())),
        // The handshake's reason (rustls names the certificate problem, no
        // secret), so an unverifiable server is told apart from a lost one.
        sqlx::Error::Tls(e) => StoreError::Unavailable(format!(
            "{label} TLS handshake failed (certificate not verified?): {}",
            e.to_string().chars().take(200).collect::<String>()
        )),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt("unexpected stored data".into()),
        _ => StoreError::Unavailable(format!("{label} failed")),
    }
}

/// `Backend::{execute, fetch, script}` for a dialect whose pool is
/// `self.pool`, as an inherent `impl` (the trait's methods call them).
macro_rules! pool_queries {
    ($dialect:ty) => {
        impl $dialect {
            async fn pool_execute(
                &self,
                sql: &std::sync::Arc<str>,
                args: &[$crate::store::sql::dialect::Arg<'_>],
            ) -> Result<u64, sqlx::Error> {
                let query = $crate::store::sql::dialect::bind_all!(
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone())),
                    args
                );
                Ok(query.execute(&self.pool).await?.rows_affected())
            }

            async fn pool_fetch(
                &self,
                sql: &std::sync::Arc<str>,
                args: &[$crate::store::sql::dialect::Arg<'_>],
            ) -> Result<Vec<Vec<$crate::store::sql::dialect::Value>>, sqlx::Error> {
                let query = $crate::store::sql::dialect::bind_all!(
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone())),
                    args
                );
                let rows = query.fetch_all(&self.pool).await?;
                Ok(rows
                    .iter()
                    .map(|row| $crate::store::sql::dialect::decode_row!(row))
                    .collect())
            }

            async fn pool_script(&self, sql: String) -> Result<(), sqlx::Error> {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
            }
        }
    };
}
pub(crate) use pool_queries;

/// Binds `args` to a query of any sqlx database, in order.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for arg in $args {
            q = match *arg {
                $crate::store::sql::dialect::Arg::Text(v) => q.bind(v),
                $crate::store::sql::dialect::Arg::MaybeText(v) => q.bind(v),
                $crate::store::sql::dialect::Arg::Int(v) => q.bind(v),
            };
        }
        q
    }};
}
pub(crate) use bind_all;

/// Reads every column of a row as an integer, text or NULL.
macro_rules! decode_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        (0..row.len())
            .map(|i| {
                if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                    v.map_or(
                        $crate::store::sql::dialect::Value::Null,
                        $crate::store::sql::dialect::Value::Int,
                    )
                } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                    v.map_or(
                        $crate::store::sql::dialect::Value::Null,
                        $crate::store::sql::dialect::Value::Text,
                    )
                } else {
                    $crate::store::sql::dialect::Value::Null
                }
            })
            .collect::<Vec<_>>()
    }};
}
pub(crate) use decode_row;
