//! A session store in an embedded SQLite file: sessions survive a restart,
//! and several processes on one machine can share the file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oidc_bff_tokens::StoreError> {
//! use oidc_bff_tokens::store::{KeyRing, SqliteStore};
//!
//! let keys = KeyRing::from_config(["k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="])?;
//! let store = SqliteStore::builder("sqlite:///var/lib/oidc-bff/sessions.db")
//!     .encryption(keys)
//!     .build()
//!     .await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! The file is created if missing and opened in WAL mode. Versioned writes
//! are `UPDATE … WHERE id = ? AND version = ?`; the refresh lease is a row of
//! the leases table taken with an upsert that only succeeds when the previous
//! lease has expired. Lease and transient expiry use this machine's clock.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row as _};

use super::persistent::{
    Codec, Settings, bounded, common_builder_methods, hash_id, hash_key, millis, now_ms,
    open_value_or_none, warn_unreadable_handle, warn_unreadable_session,
};
use super::{SessionStore, StoreError, UpdateOutcome, Versioned};
use crate::clock::SharedClock;
use crate::session::{SessionId, SessionRecord};

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 1;

/// Sessions in an SQLite file. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlitePool,
    codec: Codec,
    clock: SharedClock,
    op_timeout: Duration,
    sql: Sql,
    prefix: String,
    schema: tokio::sync::OnceCell<()>,
}

/// Builder of [`SqliteStore`].
#[derive(Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    url: String,
    settings: Settings,
}

impl SqliteStore {
    /// Starts a builder for the database at `url`: `sqlite://relative/path.db`
    /// or `sqlite:///absolute/path.db`. In-memory databases are refused (each
    /// pooled connection would see its own).
    pub fn builder(url: impl Into<String>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            url: url.into(),
            settings: Settings::new("oidc_bff_"),
        }
    }

    /// Opens (creating if needed) the database at `url` with default settings.
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
                Err(err) => warn_unreadable_handle("sqlite", &err),
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

impl SqliteStoreBuilder {
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
    pub fn build_lazy(self) -> Result<SqliteStore, StoreError> {
        let codec = self.settings.codec()?;
        let prefix = self.settings.sql_prefix()?.to_owned();
        let lower = self.url.to_ascii_lowercase();
        if lower.contains(":memory:") || lower.contains("mode=memory") {
            return Err(StoreError::Config(
                "an in-memory SQLite database cannot be shared by a pool; use a file, or MemoryStore"
                    .into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(&self.url)
            .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(self.settings.op_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(self.settings.max_connections)
            .acquire_timeout(self.settings.op_timeout)
            .connect_lazy_with(options);
        Ok(SqliteStore {
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
    pub async fn build(self) -> Result<SqliteStore, StoreError> {
        let store = self.build_lazy()?;
        store.ready().await?;
        Ok(store)
    }
}

impl SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        let p = &self.inner.prefix;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {p}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS {p}sessions (
                 id TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 sub TEXT NOT NULL,
                 sid TEXT,
                 expires_at INTEGER NOT NULL,
                 handle TEXT NOT NULL,
                 data TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {p}sessions_sub ON {p}sessions (sub);
             CREATE INDEX IF NOT EXISTS {p}sessions_sid ON {p}sessions (sid);
             CREATE INDEX IF NOT EXISTS {p}sessions_expires ON {p}sessions (expires_at);
             CREATE TABLE IF NOT EXISTS {p}transient (
                 key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_ms INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS {p}transient_expires ON {p}transient (expires_ms);
             CREATE TABLE IF NOT EXISTS {p}leases (
                 id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms INTEGER NOT NULL);
             INSERT INTO {p}meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')
                 ON CONFLICT (key) DO NOTHING;"
        );
        self.run_unchecked(sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&self.inner.pool))
            .await?;
        let found: String = self
            .run_unchecked(
                sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT value FROM {p}meta WHERE key = 'schema_version'"
                )))
                .fetch_one(&self.inner.pool),
            )
            .await?;
        check_schema_version(&found)
    }
}

pub(super) fn check_schema_version(found: &str) -> Result<(), StoreError> {
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
                "SELECT version, data FROM {p}sessions WHERE id = ?1 AND expires_at > ?2"
            )),
            create: s(format!(
                "INSERT INTO {p}sessions (id, version, sub, sid, expires_at, handle, data)
                 VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING"
            )),
            update: s(format!(
                "UPDATE {p}sessions SET version = version + 1, sub = ?2, sid = ?3, expires_at = ?4,
                 handle = ?5, data = ?6 WHERE id = ?1 AND version = ?7"
            )),
            version_of: s(format!("SELECT version FROM {p}sessions WHERE id = ?1")),
            delete: s(format!(
                "DELETE FROM {p}sessions WHERE id = ?1 RETURNING data"
            )),
            discard: s(format!(
                "DELETE FROM {p}sessions WHERE id = ?1 AND version = ?2"
            )),
            find_sub: s(format!(
                "SELECT id, handle FROM {p}sessions WHERE sub = ?1 AND expires_at > ?2"
            )),
            find_sid: s(format!(
                "SELECT id, handle FROM {p}sessions WHERE sid = ?1 AND expires_at > ?2"
            )),
            put: s(format!(
                "INSERT INTO {p}transient (key, value, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms"
            )),
            put_if_absent: s(format!(
                "INSERT INTO {p}transient (key, value, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms
                 WHERE {p}transient.expires_ms <= ?4"
            )),
            take: s(format!(
                "DELETE FROM {p}transient WHERE key = ?1 RETURNING value, expires_ms"
            )),
            get: s(format!(
                "SELECT value FROM {p}transient WHERE key = ?1 AND expires_ms > ?2"
            )),
            try_lease: s(format!(
                "INSERT INTO {p}leases (id, owner, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
                 WHERE {p}leases.expires_ms <= ?4"
            )),
            renew_lease: s(format!(
                "UPDATE {p}leases SET expires_ms = ?3 WHERE id = ?1 AND owner = ?2 AND expires_ms > ?4"
            )),
            release_lease: s(format!(
                "DELETE FROM {p}leases WHERE id = ?1 AND owner = ?2"
            )),
            purge_sessions: s(format!("DELETE FROM {p}sessions WHERE expires_at <= ?1")),
            purge_transient: s(format!("DELETE FROM {p}transient WHERE expires_ms <= ?1")),
            purge_leases: s(format!("DELETE FROM {p}leases WHERE expires_ms <= ?1")),
        }
    }
}

/// Maps a driver error onto the store's error without leaking values.
fn map_err(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        sqlx::Error::Configuration(_) => StoreError::Config("invalid SQLite configuration".into()),
        sqlx::Error::Database(db) => StoreError::Unavailable(format!(
            "SQLite error {}",
            db.code().as_deref().unwrap_or("unknown")
        )),
        sqlx::Error::Io(e) => StoreError::Unavailable(format!("SQLite I/O error: {}", e.kind())),
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt("unexpected stored data".into()),
        _ => StoreError::Unavailable("SQLite failed".into()),
    }
}

fn sub_sid(record: &SessionRecord) -> (&str, Option<&str>) {
    (record.sub.as_str(), record.sid.as_deref())
}

fn expires(record: &SessionRecord) -> i64 {
    i64::try_from(record.expires_at).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for SqliteStore {
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
                warn_unreadable_session("sqlite", &err);
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
                .bind(now_ms().saturating_add(millis(ttl)))
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
        let now = now_ms();
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.put_if_absent.clone()))
                    .bind(&hkey)
                    .bind(&sealed)
                    .bind(now.saturating_add(millis(ttl)))
                    .bind(now)
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
        let until: i64 = row.try_get(1).map_err(map_err)?;
        if until <= now_ms() {
            return Ok(None);
        }
        Ok(open_value_or_none(
            &self.inner.codec,
            "sqlite",
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
                    .bind(now_ms())
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
        Ok(sealed.and_then(|s| open_value_or_none(&self.inner.codec, "sqlite", &hkey, &s)))
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.try_lease.clone()))
                    .bind(hash_id(id))
                    .bind(owner)
                    .bind(now.saturating_add(millis(ttl)))
                    .bind(now)
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
        let now = now_ms();
        let done = self
            .run(
                sqlx::query(AssertSqlSafe(self.inner.sql.renew_lease.clone()))
                    .bind(hash_id(id))
                    .bind(owner)
                    .bind(now.saturating_add(millis(ttl)))
                    .bind(now)
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
        let now = now_ms();
        for sql in [
            &self.inner.sql.purge_transient,
            &self.inner.sql.purge_leases,
        ] {
            self.run(
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .bind(now)
                    .execute(&self.inner.pool),
            )
            .await?;
        }
        Ok(sessions)
    }
}
