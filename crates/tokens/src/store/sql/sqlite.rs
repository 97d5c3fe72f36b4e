//! The SQLite dialect: a file on this machine, opened in WAL mode, shared by
//! the processes that open it. No read cache: there is no channel to learn
//! of another process's writes.

use std::str::FromStr as _;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row as _};

use super::dialect::{Arg, Value, pool_queries, private::Backend};
use crate::store::StoreError;
use crate::store::cache::{ChannelTask, ReadCache};
use crate::store::persistent::Settings;

/// SQLite, for [`SqliteStore`](super::SqliteStore).
#[derive(Debug)]
pub struct SqliteDialect {
    pool: SqlitePool,
}

pool_queries!(SqliteDialect);

#[async_trait]
impl Backend for SqliteDialect {
    const LABEL: &'static str = "SQLite";
    // This machine's clock, in milliseconds ('now' is fixed within a statement).
    const NOW_MS: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
    const INTEGER: &'static str = "INTEGER";

    fn open(url: &str, settings: &Settings, _prefix: &str) -> Result<Self, StoreError> {
        let lower = url.to_ascii_lowercase();
        if lower.contains(":memory:") || lower.contains("mode=memory") {
            return Err(StoreError::Config(
                "an in-memory SQLite database cannot be shared by a pool; use a file, or MemoryStore"
                    .into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.op_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.op_timeout)
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    async fn execute(&self, sql: &Arc<str>, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        self.pool_execute(sql, args).await
    }

    async fn fetch(
        &self,
        sql: &Arc<str>,
        args: &[Arg<'_>],
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        self.pool_fetch(sql, args).await
    }

    async fn script(&self, sql: String) -> Result<(), sqlx::Error> {
        self.pool_script(sql).await
    }

    async fn migrate(
        &self,
        _lock_key: i64,
        ddl: String,
        check: String,
    ) -> Result<String, sqlx::Error> {
        // SQLite serializes schema changes on the file's own lock.
        self.script(ddl).await?;
        let row = sqlx::query(AssertSqlSafe(check))
            .fetch_one(&self.pool)
            .await?;
        row.try_get(0)
    }

    fn announce(write: &str, columns: &str, _version: &str, _prefix: &str) -> String {
        format!("{write} RETURNING {columns}")
    }

    fn start_channel(&self, _cache: &Arc<ReadCache>) -> Option<ChannelTask> {
        None
    }
}
