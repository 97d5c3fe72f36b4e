//! A session store in PostgreSQL, shared by any number of instances.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oidc_bff_tokens::StoreError> {
//! use oidc_bff_tokens::store::{KeyRing, PostgresStore};
//!
//! let keys = KeyRing::from_config(["k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="])?;
//! let store = PostgresStore::builder("postgres://bff@127.0.0.1:5432/bff")
//!     .encryption(keys)
//!     .build()
//!     .await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! Versioned writes are `UPDATE … WHERE id = $1 AND version = $n`. The
//! refresh lease is a row of the leases table taken with
//! `INSERT … ON CONFLICT DO UPDATE … WHERE expires_ms <= now`, renewed and
//! released only by its owner. Lease and transient expiry read the
//! *database server's* clock, so instances with skewed clocks still agree.
//! The schema is created at connect under an advisory lock, so instances
//! starting together do not race. Connections are plain TCP or Unix sockets
//! (the build has no TLS for PostgreSQL yet): keep the database on loopback
//! or a trusted private network.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row as _};

use super::persistent::{
    Codec, Settings, bounded, common_builder_methods, hash_id, hash_key, millis,
    open_value_or_none, warn_unreadable_handle, warn_unreadable_session,
};
use super::{SessionStore, StoreError, UpdateOutcome, Versioned};
use crate::clock::SharedClock;
use crate::session::{SessionId, SessionRecord};

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 1;

/// Sessions in PostgreSQL. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    codec: Codec,
    clock: SharedClock,
    op_timeout: Duration,
    sql: Sql,
    prefix: String,
    schema: tokio::sync::OnceCell<()>,
}

/// Builder of [`PostgresStore`].
#[derive(Debug)]
#[must_use]
pub struct PostgresStoreBuilder {
    url: String,
    settings: Settings,
}

impl PostgresStore {
    /// Starts a builder for the database at `url`, e.g.
    /// `postgres://user@127.0.0.1:5432/db` (password in the URL or `PGPASSWORD`).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            settings: Settings::new("oidc_bff_"),
        }
    }

    /// Connects to the database at `url` with default settings, creating the schema if needed.
    pub async fn connect(url: impl Into<String>, keys: super::KeyRing) -> Result<Self, StoreError> {
        Self::builder(url).encryption(keys).build().await
    }

    /// Every stored text value (for tests that check what a dump shows).
    #[doc(hidden)]
    pub async fn raw_dump(&self) -> Result<Vec<String>, StoreError> {
        let p = &self.inner.prefix;
        let sql = format!(
            "SELECT id || ' ' || sub || ' ' || COALESCE(sid, '') || ' ' || handle || ' ' || data FROM {p}sessions \
             UNION ALL SELECT key || ' ' || value FROM {p}transient \
             UNION ALL SELECT id || ' ' || owner FROM {p}leases"
        );
        let rows = self
            .run(sqlx::query(AssertSqlSafe(sql)).fetch_all(&self.inner.pool))
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(map_err))
            .collect()
    }

    /// Drops this store's tables (tests clean up with it).
    #[doc(hidden)]
    pub async fn drop_tables(&self) -> Result<(), StoreError> {
        let p = &self.inner.prefix;
        let sql = format!(
            "DROP TABLE IF EXISTS {p}sessions; DROP TABLE IF EXISTS {p}transient; \
             DROP TABLE IF EXISTS {p}leases; DROP TABLE IF EXISTS {p}meta;"
        );
        self.run(sqlx::raw_sql(AssertSqlSafe(sql)).execute(&self.inner.pool))
            .await
            .map(|_| ())
    }

    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        self.ready().await?;
        self.run_unchecked(op).await
    }

    async fn run_unchecked<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        bounded(self.inner.op_timeout, async { op.await.map_err(map_err) }).await
    }

    /// Creates the schema on first use (retried on the next operation if it
    /// fails, e.g. while the database is still starting).
    async fn ready(&self) -> Result<(), StoreError> {
        self.inner
            .schema
            .get_or_try_init(|| self.migrate())
            .await
            .map(|_| ())
    }

    fn now(&self) -> i64 {
        i64::try_from(self.inner.clock.now_unix()).unwrap_or(i64::MAX)
    }

    async fn ids(&self, sql: &Arc<str>, value: &str) -> Result<Vec<SessionId>, StoreError> {
        let rows = self
            .run(
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(value)
                    .bind(self.now())
                    .fetch_all(&self.inner.pool),
            )
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let hash: String = row.try_get(0).map_err(map_err)?;
            let handle: String = row.try_get(1).map_err(map_err)?;
            // One unreadable entry must not fail a whole back-channel
            // logout: it is skipped (and deleted when next loaded).
            match self.inner.codec.open_id(&hash, &handle) {
                Ok(id) => ids.push(id),
                Err(err) => warn_unreadable_handle("postgres", &err),
            }
        }
        Ok(ids)
    }

    /// Deletes an unreadable session if it still has `version`; best effort
    /// (a failure is logged, the next load tries again).
    async fn discard(&self, hash: &str, version: i64) {
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.discard.clone()))
                    .bind(hash)
                    .bind(version)
                    .execute(&self.inner.pool),
            )
            .await;
        if let Err(err) = done {
            tracing::warn!(error = %err, "could not delete an unreadable session");
        }
    }
}

impl PostgresStoreBuilder {
    common_builder_methods!();

    /// Prefix of the table names (default `oidc_bff_`): lowercase letters,
    /// digits and `_`. Lets several stores share one database file.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// Builds the store without any I/O: the first operation connects and
    /// creates the schema, and operations fail (503) until the database can
    /// be reached. Configuration errors are still reported here.
    pub fn build_lazy(self) -> Result<PostgresStore, StoreError> {
        let codec = self.settings.codec()?;
        let prefix = self.settings.sql_prefix()?.to_owned();
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|_| StoreError::Config("invalid PostgreSQL URL".into()))?
            .application_name("oidc-bff");
        let pool = PgPoolOptions::new()
            .max_connections(self.settings.max_connections)
            .acquire_timeout(self.settings.op_timeout)
            .connect_lazy_with(options);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                codec,
                clock: self.settings.clock.clone(),
                op_timeout: self.settings.op_timeout,
                sql: Sql::new(&prefix),
                prefix,
                schema: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// Connects and creates the schema if needed; fails if the database
    /// cannot be reached within the operation timeout.
    pub async fn build(self) -> Result<PostgresStore, StoreError> {
        let store = self.build_lazy()?;
        store.ready().await?;
        Ok(store)
    }
}

impl PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let p = &self.inner.prefix;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {p}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS {p}sessions (
                 id TEXT PRIMARY KEY,
                 version BIGINT NOT NULL,
                 sub TEXT NOT NULL,
                 sid TEXT,
                 expires_at BIGINT NOT NULL,
                 handle TEXT NOT NULL,
                 data TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {p}sessions_sub ON {p}sessions (sub);
             CREATE INDEX IF NOT EXISTS {p}sessions_sid ON {p}sessions (sid);
             CREATE INDEX IF NOT EXISTS {p}sessions_expires ON {p}sessions (expires_at);
             CREATE TABLE IF NOT EXISTS {p}transient (
                 key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_ms BIGINT NOT NULL);
             CREATE INDEX IF NOT EXISTS {p}transient_expires ON {p}transient (expires_ms);
             CREATE TABLE IF NOT EXISTS {p}leases (
                 id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms BIGINT NOT NULL);
             INSERT INTO {p}meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')
                 ON CONFLICT (key) DO NOTHING;"
        );
        // Instances starting together serialize on an advisory lock named
        // after the prefix: concurrent CREATE … IF NOT EXISTS can otherwise fail.
        let lock_key = i64::from_str_radix(&super::persistent::sha256_hex(p.as_bytes())[..15], 16)
            .unwrap_or(0x0b1d_cb0f);
        let migrate = async {
            let mut tx = self.inner.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(lock_key)
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
            let found: String = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT value FROM {p}meta WHERE key = 'schema_version'"
            )))
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(found)
        };
        let found = bounded(self.inner.op_timeout * 5, async {
            migrate.await.map_err(map_err)
        })
        .await?;
        check_schema_version(&found)
    }
}

fn check_schema_version(found: &str) -> Result<(), StoreError> {
    match found.parse::<i64>() {
        Ok(v) if v <= SCHEMA_VERSION => Ok(()),
        Ok(v) => Err(StoreError::Config(format!(
            "the session store has schema version {v}, newer than this build supports ({SCHEMA_VERSION})"
        ))),
        Err(_) => Err(StoreError::Corrupt("unreadable schema version".into())),
    }
}

/// The statements, built once for the table prefix.
#[derive(Debug)]
struct Sql {
    load: Arc<str>,
    create: Arc<str>,
    update: Arc<str>,
    version_of: Arc<str>,
    delete: Arc<str>,
    discard: Arc<str>,
    find_sub: Arc<str>,
    find_sid: Arc<str>,
    put: Arc<str>,
    put_if_absent: Arc<str>,
    take: Arc<str>,
    get: Arc<str>,
    try_lease: Arc<str>,
    renew_lease: Arc<str>,
    release_lease: Arc<str>,
    purge_sessions: Arc<str>,
    purge_transient: Arc<str>,
    purge_leases: Arc<str>,
}

impl Sql {
    fn new(p: &str) -> Self {
        let s = |sql: String| Arc::<str>::from(sql);
        Self {
            load: s(format!(
                "SELECT version, data FROM {p}sessions WHERE id = $1 AND expires_at > $2"
            )),
            create: s(format!(
                "INSERT INTO {p}sessions (id, version, sub, sid, expires_at, handle, data)
                 VALUES ($1, 1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING"
            )),
            update: s(format!(
                "UPDATE {p}sessions SET version = version + 1, sub = $2, sid = $3, expires_at = $4,
                 handle = $5, data = $6 WHERE id = $1 AND version = $7"
            )),
            version_of: s(format!("SELECT version FROM {p}sessions WHERE id = $1")),
            delete: s(format!("DELETE FROM {p}sessions WHERE id = $1 RETURNING data")),
            discard: s(format!(
                "DELETE FROM {p}sessions WHERE id = $1 AND version = $2"
            )),
            find_sub: s(format!(
                "SELECT id, handle FROM {p}sessions WHERE sub = $1 AND expires_at > $2"
            )),
            find_sid: s(format!(
                "SELECT id, handle FROM {p}sessions WHERE sid = $1 AND expires_at > $2"
            )),
            put: s(format!(
                "INSERT INTO {p}transient (key, value, expires_ms) VALUES ($1, $2, {NOW_MS} + $3)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_ms = EXCLUDED.expires_ms"
            )),
            put_if_absent: s(format!(
                "INSERT INTO {p}transient (key, value, expires_ms) VALUES ($1, $2, {NOW_MS} + $3)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_ms = EXCLUDED.expires_ms
                 WHERE {p}transient.expires_ms <= {NOW_MS}"
            )),
            take: s(format!(
                "DELETE FROM {p}transient WHERE key = $1 RETURNING value, expires_ms > {NOW_MS} AS live"
            )),
            get: s(format!(
                "SELECT value FROM {p}transient WHERE key = $1 AND expires_ms > {NOW_MS}"
            )),
            try_lease: s(format!(
                "INSERT INTO {p}leases (id, owner, expires_ms) VALUES ($1, $2, {NOW_MS} + $3)
                 ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, expires_ms = EXCLUDED.expires_ms
                 WHERE {p}leases.expires_ms <= {NOW_MS}"
            )),
            renew_lease: s(format!(
                "UPDATE {p}leases SET expires_ms = {NOW_MS} + $3
                 WHERE id = $1 AND owner = $2 AND expires_ms > {NOW_MS}"
            )),
            release_lease: s(format!("DELETE FROM {p}leases WHERE id = $1 AND owner = $2")),
            purge_sessions: s(format!("DELETE FROM {p}sessions WHERE expires_at <= $1")),
            purge_transient: s(format!("DELETE FROM {p}transient WHERE expires_ms <= {NOW_MS}")),
            purge_leases: s(format!("DELETE FROM {p}leases WHERE expires_ms <= {NOW_MS}")),
        }
    }
}

/// The database server's time in Unix milliseconds.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Maps a driver error onto the store's error without leaking values.
fn map_err(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        sqlx::Error::Configuration(_) => {
            StoreError::Config("invalid PostgreSQL configuration".into())
        }
        sqlx::Error::Database(db) => StoreError::Unavailable(format!(
            "PostgreSQL error {}",
            db.code().as_deref().unwrap_or("unknown")
        )),
        sqlx::Error::Io(e) => {
            StoreError::Unavailable(format!("PostgreSQL connection error: {}", e.kind()))
        }
        sqlx::Error::Tls(_) => StoreError::Unavailable("PostgreSQL TLS error".into()),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt("unexpected stored data".into()),
        _ => StoreError::Unavailable("PostgreSQL failed".into()),
    }
}

fn sub_sid(record: &SessionRecord) -> (&str, Option<&str>) {
    (record.sub.as_str(), record.sid.as_deref())
}

fn expires(record: &SessionRecord) -> i64 {
    i64::try_from(record.expires_at).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        let hash = hash_id(id);
        let row = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.load.clone()))
                    .bind(&hash)
                    .bind(self.now())
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.try_get(0).map_err(map_err)?;
        let data: String = row.try_get(1).map_err(map_err)?;
        let record = match self.inner.codec.open_record(&hash, &data) {
            Ok(record) => record,
            Err(err) => {
                warn_unreadable_session("postgres", &err);
                self.discard(&hash, version).await;
                return Ok(None);
            }
        };
        Ok(Some(Versioned {
            version: u64::try_from(version).unwrap_or_default(),
            record: Arc::new(record),
        }))
    }

    async fn create(&self, id: &SessionId, record: SessionRecord) -> Result<u64, StoreError> {
        let hash = hash_id(id);
        let data = self.inner.codec.seal_record(&hash, &record)?;
        let handle = self.inner.codec.seal_id(&hash, id)?;
        let (sub, sid) = sub_sid(&record);
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.create.clone()))
                    .bind(&hash)
                    .bind(sub)
                    .bind(sid)
                    .bind(expires(&record))
                    .bind(&handle)
                    .bind(&data)
                    .execute(&self.inner.pool),
            )
            .await?;
        if done.rows_affected() == 1 {
            Ok(1)
        } else {
            Err(StoreError::Unavailable("session id collision".into()))
        }
    }

    async fn update(
        &self,
        id: &SessionId,
        record: SessionRecord,
        expected_version: u64,
    ) -> Result<UpdateOutcome, StoreError> {
        let hash = hash_id(id);
        let data = self.inner.codec.seal_record(&hash, &record)?;
        let handle = self.inner.codec.seal_id(&hash, id)?;
        let (sub, sid) = sub_sid(&record);
        let expected = i64::try_from(expected_version).unwrap_or(-1);
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.update.clone()))
                    .bind(&hash)
                    .bind(sub)
                    .bind(sid)
                    .bind(expires(&record))
                    .bind(&handle)
                    .bind(&data)
                    .bind(expected)
                    .execute(&self.inner.pool),
            )
            .await?;
        if done.rows_affected() == 1 {
            return Ok(UpdateOutcome::Updated(expected_version + 1));
        }
        let exists: Option<i64> = self
            .run(
                sqlx::query_scalar(AssertSqlSafe(self.inner.sql.version_of.clone()))
                    .bind(&hash)
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
        Ok(match exists {
            Some(_) => UpdateOutcome::Conflict,
            None => UpdateOutcome::Missing,
        })
    }

    async fn delete(&self, id: &SessionId) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let hash = hash_id(id);
        let data: Option<String> = self
            .run(
                sqlx::query_scalar(AssertSqlSafe(self.inner.sql.delete.clone()))
                    .bind(&hash)
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
        match data {
            None => Ok(None),
            // The row is gone either way; an unreadable one is reported as absent.
            Some(data) => Ok(self
                .inner
                .codec
                .open_record(&hash, &data)
                .ok()
                .map(Arc::new)),
        }
    }

    async fn find_by_sub(&self, sub: &str) -> Result<Vec<SessionId>, StoreError> {
        self.ids(&self.inner.sql.find_sub, sub).await
    }

    async fn find_by_sid(&self, sid: &str) -> Result<Vec<SessionId>, StoreError> {
        self.ids(&self.inner.sql.find_sid, sid).await
    }

    async fn put_transient(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let hkey = hash_key(key);
        let sealed = self.inner.codec.seal_value(&hkey, &value)?;
        self.run(
            sqlx::query(AssertSqlSafe(self.inner.sql.put.clone()))
                .bind(&hkey)
                .bind(&sealed)
                .bind(millis(ttl))
                .execute(&self.inner.pool),
        )
        .await
        .map(|_| ())
    }

    async fn put_transient_if_absent(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let hkey = hash_key(key);
        let sealed = self.inner.codec.seal_value(&hkey, &value)?;
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.put_if_absent.clone()))
                    .bind(&hkey)
                    .bind(&sealed)
                    .bind(millis(ttl))
                    .execute(&self.inner.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let row = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.take.clone()))
                    .bind(&hkey)
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = row.try_get(0).map_err(map_err)?;
        let live: bool = row.try_get(1).map_err(map_err)?;
        if !live {
            return Ok(None);
        }
        Ok(open_value_or_none(
            &self.inner.codec,
            "postgres",
            &hkey,
            &sealed,
        ))
    }

    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let sealed: Option<String> = self
            .run(
                sqlx::query_scalar(AssertSqlSafe(self.inner.sql.get.clone()))
                    .bind(&hkey)
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
        Ok(sealed.and_then(|s| open_value_or_none(&self.inner.codec, "postgres", &hkey, &s)))
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.try_lease.clone()))
                    .bind(hash_id(id))
                    .bind(owner)
                    .bind(millis(ttl))
                    .execute(&self.inner.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.renew_lease.clone()))
                    .bind(hash_id(id))
                    .bind(owner)
                    .bind(millis(ttl))
                    .execute(&self.inner.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError> {
        self.run(
            sqlx::query(AssertSqlSafe(self.inner.sql.release_lease.clone()))
                .bind(hash_id(id))
                .bind(owner)
                .execute(&self.inner.pool),
        )
        .await
        .map(|_| ())
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let sessions = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.purge_sessions.clone()))
                    .bind(self.now())
                    .execute(&self.inner.pool),
            )
            .await?
            .rows_affected();
        for sql in [
            &self.inner.sql.purge_transient,
            &self.inner.sql.purge_leases,
        ] {
            self.run(sqlx::query(AssertSqlSafe(sql.clone())).execute(&self.inner.pool))
                .await?;
        }
        Ok(sessions)
    }
}
