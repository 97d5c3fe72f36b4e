//! The PostgreSQL dialect: the server's clock, an advisory lock around the
//! migration, and `LISTEN`/`NOTIFY` as the read cache's invalidation
//! channel (every session write notifies in its own statement, so the
//! notification is sent exactly when the change commits).

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row as _};

use super::dialect::{Arg, Value, map_err, pool_queries, private::Backend};
use crate::store::StoreError;
use crate::store::cache::{Channel, ChannelTask, ReadCache, spawn_channel};
use crate::store::persistent::{Settings, bounded};

/// PostgreSQL, for [`PostgresStore`](super::PostgresStore).
#[derive(Debug)]
pub struct PostgresDialect {
    pool: PgPool,
    /// One connection of its own for `LISTEN`, outside the main pool.
    listen_pool: PgPool,
    channel: String,
    op_timeout: Duration,
}

/// The channel a store's writes are announced on.
fn channel_name(prefix: &str) -> String {
    format!("{prefix}changes")
}

pool_queries!(PostgresDialect);

#[async_trait]
impl Backend for PostgresDialect {
    const LABEL: &'static str = "PostgreSQL";
    const NOW_MS: &'static str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";
    const INTEGER: &'static str = "BIGINT";

    fn open(url: &str, settings: &Settings, prefix: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Config("invalid PostgreSQL URL".into()))?
            .application_name("oidc-bff");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.op_timeout)
            .connect_lazy_with(options.clone());
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.op_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            listen_pool,
            channel: channel_name(prefix),
            op_timeout: settings.op_timeout,
        })
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
        lock_key: i64,
        ddl: String,
        check: String,
    ) -> Result<String, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
        let found: String = sqlx::query(AssertSqlSafe(check))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(found)
    }

    fn announce(write: &str, columns: &str, version: &str, prefix: &str) -> String {
        // One statement, so one transaction: the notification is delivered
        // when (and only if) the change commits.
        let channel = channel_name(prefix);
        format!(
            "WITH w AS ({write} RETURNING id, {columns}) \
             SELECT {columns}, pg_notify('{channel}', id || ':' || {version}) FROM w"
        )
    }

    fn start_channel(&self, cache: &Arc<ReadCache>) -> Option<ChannelTask> {
        let channel = PgChannel {
            pool: self.pool.clone(),
            listen_pool: self.listen_pool.clone(),
            channel: self.channel.clone(),
            op_timeout: self.op_timeout,
        };
        spawn_channel(cache.clone(), channel)
    }
}

/// `LISTEN` on a connection of its own; heartbeats go through the main pool.
struct PgChannel {
    pool: PgPool,
    listen_pool: PgPool,
    channel: String,
    op_timeout: Duration,
}

#[async_trait]
impl Channel for PgChannel {
    type Subscription = PgListener;

    async fn subscribe(&self) -> Result<(PgListener, i64), StoreError> {
        bounded(self.op_timeout, async {
            let subscribe = async {
                let mut listener = PgListener::connect_with(&self.listen_pool).await?;
                listener.listen(&self.channel).await?;
                let pid: i32 = sqlx::query("SELECT pg_backend_pid()")
                    .fetch_one(&mut listener)
                    .await?
                    .try_get(0)?;
                Ok::<_, sqlx::Error>((listener, i64::from(pid)))
            };
            subscribe.await.map_err(map_err::<PostgresDialect>)
        })
        .await
    }

    async fn next(&self, listener: &mut PgListener) -> Option<String> {
        match listener.try_recv().await {
            Ok(Some(notification)) => Some(notification.payload().to_owned()),
            // `None`: the connection was lost (and notifications with it).
            Ok(None) | Err(_) => None,
        }
    }

    async fn publish(&self, message: &str) -> Result<(), StoreError> {
        bounded(self.op_timeout, async {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(message)
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(map_err::<PostgresDialect>)
        })
        .await
    }
}
