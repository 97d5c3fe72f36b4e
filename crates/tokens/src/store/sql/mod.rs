//! The SQL session stores: one [`SqlStore`] over a [`Dialect`]
//! ([`SqliteStore`] = `SqlStore<SqliteDialect>`, [`PostgresStore`] =
//! `SqlStore<PostgresDialect>`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), oidc_bff_tokens::StoreError> {
//! use oidc_bff_tokens::store::{KeyRing, PostgresStore, SqliteStore};
//!
//! let keys = KeyRing::from_config(["k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="])?;
//! let shared = PostgresStore::builder("postgres://bff@127.0.0.1:5432/bff")
//!     .encryption(keys.clone())
//!     .build()
//!     .await?;
//! let local = SqliteStore::builder("sqlite:///var/lib/oidc-bff/sessions.db")
//!     .encryption(keys)
//!     .build()
//!     .await?;
//! # let _ = (shared, local); Ok(()) }
//! ```
//!
//! Versioned writes are `UPDATE … WHERE id = $1 AND version = $7`. The
//! refresh lease is a row of the leases table taken with
//! `INSERT … ON CONFLICT DO UPDATE … WHERE expires_ms <= now`, renewed and
//! released only by its owner. Lease and transient expiry read the
//! *database's* clock (PostgreSQL: the server's, so instances with skewed
//! clocks still agree; SQLite: this machine's). The schema is created at
//! first use (PostgreSQL: under an advisory lock, so instances starting
//! together do not race). An SQLite file is opened in WAL mode and created
//! if missing. PostgreSQL is reached over TCP, a Unix socket, or TLS
//! (rustls): `?sslmode=verify-full&sslrootcert=/path/ca.pem` verifies the
//! server's certificate and host name; a certificate that cannot be verified
//! fails with an error that names TLS.
//!
//! PostgreSQL stores keep a read cache of sessions, kept coherent by
//! `NOTIFY` in the same statement as every write (see
//! [`store`](crate::store) and `docs/COORDINATION.md`).

mod dialect;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::dialect::Dialect;
use self::dialect::{Arg, Value, map_err};
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresDialect;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteDialect;
use super::cache::{ChannelTask, ReadCache};
use super::persistent::{
    Codec, Settings, bounded, common_builder_methods, hash_id, hash_key, millis,
    open_value_or_none, sha256_hex, warn_unreadable_handle, warn_unreadable_session,
};
use super::{SessionStore, StoreError, UpdateOutcome, Versioned};
use crate::clock::SharedClock;
use crate::session::{SessionId, SessionRecord};

/// Sessions in an SQLite file: they survive a restart, and several
/// processes on one machine can share the file.
#[cfg(feature = "sqlite")]
pub type SqliteStore = SqlStore<SqliteDialect>;
/// Builder of [`SqliteStore`].
#[cfg(feature = "sqlite")]
pub type SqliteStoreBuilder = SqlStoreBuilder<SqliteDialect>;
/// Sessions in PostgreSQL, shared by any number of instances.
#[cfg(feature = "postgres")]
pub type PostgresStore = SqlStore<PostgresDialect>;
/// Builder of [`PostgresStore`].
#[cfg(feature = "postgres")]
pub type PostgresStoreBuilder = SqlStoreBuilder<PostgresDialect>;

/// The schema version this build writes.
const SCHEMA_VERSION: i64 = 1;

/// Sessions in a SQL database. Cheap to clone.
#[derive(Debug)]
pub struct SqlStore<D: Dialect> {
    inner: Arc<Inner<D>>,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<D> {
    db: D,
    codec: Codec,
    clock: SharedClock,
    op_timeout: Duration,
    sql: Sql,
    prefix: String,
    schema: tokio::sync::OnceCell<()>,
    cache: Option<Arc<ReadCache>>,
    _channel: Option<ChannelTask>,
}

/// Builder of a [`SqlStore`] ([`SqliteStoreBuilder`], [`PostgresStoreBuilder`]).
#[derive(Debug)]
#[must_use]
pub struct SqlStoreBuilder<D> {
    url: String,
    settings: Settings,
    dialect: PhantomData<D>,
}

impl<D: Dialect> SqlStore<D> {
    /// Starts a builder for the database at `url`: `sqlite://relative/path.db`
    /// or `sqlite:///absolute/path.db` (in-memory databases are refused:
    /// each pooled connection would see its own), or
    /// `postgres://user@127.0.0.1:5432/db` (password in the URL or `PGPASSWORD`).
    pub fn builder(url: impl Into<String>) -> SqlStoreBuilder<D> {
        SqlStoreBuilder {
            url: url.into(),
            settings: Settings::new("oidc_bff_"),
            dialect: PhantomData,
        }
    }

    /// Connects to (or creates) the database at `url` with default
    /// settings, creating the schema if needed.
    pub async fn connect(url: impl Into<String>, keys: super::KeyRing) -> Result<Self, StoreError> {
        Self::builder(url).encryption(keys).build().await
    }

    /// Every stored text value (for tests that check what a dump shows).
    #[doc(hidden)]
    pub async fn raw_dump(&self) -> Result<Vec<String>, StoreError> {
        let p = &self.inner.prefix;
        let sql: Arc<str> = format!(
            "SELECT id || ' ' || sub || ' ' || COALESCE(sid, '') || ' ' || handle || ' ' || data FROM {p}sessions \
             UNION ALL SELECT key || ' ' || value FROM {p}transient \
             UNION ALL SELECT id || ' ' || owner FROM {p}leases"
        )
        .into();
        self.fetch(&sql, &[])
            .await?
            .into_iter()
            .map(|mut row| row.swap_remove(0).into_text())
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
        self.ready().await?;
        self.bounded(self.inner.db.script(sql)).await
    }

    /// Whether the read cache answers loads (its invalidation channel is
    /// live); `false` for a store without one.
    #[doc(hidden)]
    pub fn read_cache_live(&self) -> bool {
        self.inner.cache.as_ref().is_some_and(|c| c.is_live())
    }

    /// The version the read cache holds for `id`.
    #[doc(hidden)]
    pub fn cached_version(&self, id: &SessionId) -> Option<u64> {
        self.inner.cache.as_ref()?.cached_version(id)
    }

    /// The invalidation channel's connection (PostgreSQL backend pid).
    #[doc(hidden)]
    pub fn invalidation_connection_id(&self) -> Option<i64> {
        self.inner.cache.as_ref()?.connection_id()
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        bounded(self.inner.op_timeout, async {
            op.await.map_err(map_err::<D>)
        })
        .await
    }

    async fn execute(&self, sql: &Arc<str>, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.ready().await?;
        self.bounded(self.inner.db.execute(sql, args)).await
    }

    async fn fetch(&self, sql: &Arc<str>, args: &[Arg<'_>]) -> Result<Vec<Vec<Value>>, StoreError> {
        self.ready().await?;
        self.bounded(self.inner.db.fetch(sql, args)).await
    }

    async fn fetch_one(
        &self,
        sql: &Arc<str>,
        args: &[Arg<'_>],
    ) -> Result<Option<Vec<Value>>, StoreError> {
        Ok(self.fetch(sql, args).await?.into_iter().next())
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

    async fn migrate(&self) -> Result<(), StoreError> {
        let p = &self.inner.prefix;
        let int = D::INTEGER;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {p}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS {p}sessions (
                 id TEXT PRIMARY KEY,
                 version {int} NOT NULL,
                 sub TEXT NOT NULL,
                 sid TEXT,
                 expires_at {int} NOT NULL,
                 handle TEXT NOT NULL,
                 data TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS {p}sessions_sub ON {p}sessions (sub);
             CREATE INDEX IF NOT EXISTS {p}sessions_sid ON {p}sessions (sid);
             CREATE INDEX IF NOT EXISTS {p}sessions_expires ON {p}sessions (expires_at);
             CREATE TABLE IF NOT EXISTS {p}transient (
                 key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_ms {int} NOT NULL);
             CREATE INDEX IF NOT EXISTS {p}transient_expires ON {p}transient (expires_ms);
             CREATE TABLE IF NOT EXISTS {p}leases (
                 id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms {int} NOT NULL);
             INSERT INTO {p}meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')
                 ON CONFLICT (key) DO NOTHING;"
        );
        let check = format!("SELECT value FROM {p}meta WHERE key = 'schema_version'");
        // Instances starting together serialize on a lock named after the
        // prefix: concurrent CREATE … IF NOT EXISTS can otherwise fail.
        let lock_key =
            i64::from_str_radix(&sha256_hex(p.as_bytes())[..15], 16).unwrap_or(0x0b1d_cb0f);
        let found = bounded(self.inner.op_timeout * 5, async {
            self.inner
                .db
                .migrate(lock_key, ddl, check)
                .await
                .map_err(map_err::<D>)
        })
        .await?;
        check_schema_version(&found)
    }

    fn now(&self) -> i64 {
        i64::try_from(self.inner.clock.now_unix()).unwrap_or(i64::MAX)
    }

    async fn ids(&self, sql: &Arc<str>, value: &str) -> Result<Vec<SessionId>, StoreError> {
        let rows = self
            .fetch(sql, &[Arg::Text(value), Arg::Int(self.now())])
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let mut row = row.into_iter();
            let (Some(hash), Some(handle)) = (row.next(), row.next()) else {
                continue;
            };
            let (hash, handle) = (hash.into_text()?, handle.into_text()?);
            // One unreadable entry must not fail a whole back-channel
            // logout: it is skipped (and deleted when next loaded).
            match self.inner.codec.open_id(&hash, &handle) {
                Ok(id) => ids.push(id),
                Err(err) => warn_unreadable_handle(D::LABEL, &err),
            }
        }
        Ok(ids)
    }

    /// Reads a session from the database.
    async fn read(&self, id: &SessionId, hash: &str) -> Result<Option<Versioned>, StoreError> {
        let Some(row) = self
            .fetch_one(
                &self.inner.sql.load,
                &[Arg::Text(hash), Arg::Int(self.now())],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut row = row.into_iter();
        let version = row.next().unwrap_or(Value::Null).int()?;
        let data = row.next().unwrap_or(Value::Null).into_text()?;
        match self.inner.codec.open_record(hash, &data) {
            Ok(record) => Ok(Some(Versioned {
                version: u64::try_from(version).unwrap_or_default(),
                record: Arc::new(record),
            })),
            Err(err) => {
                warn_unreadable_session(D::LABEL, &err);
                self.discard(id, hash, version).await;
                Ok(None)
            }
        }
    }

    /// Reads a session from the database and refreshes the cache with it.
    async fn read_and_cache(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        let hash = hash_id(id);
        let ticket = self.inner.cache.as_ref().map(|c| c.ticket());
        let found = self.read(id, &hash).await?;
        if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
            cache.fill(ticket, id, &hash, found.as_ref());
        }
        Ok(found)
    }

    fn forget(&self, id: &SessionId, hash: &str) {
        if let Some(cache) = &self.inner.cache {
            cache.forget(id, hash);
        }
    }

    /// Deletes an unreadable session if it still has `version`; best effort
    /// (a failure is logged, the next load tries again).
    async fn discard(&self, id: &SessionId, hash: &str, version: i64) {
        let done = self
            .fetch(
                &self.inner.sql.discard,
                &[Arg::Text(hash), Arg::Int(version)],
            )
            .await;
        self.forget(id, hash);
        if let Err(err) = done {
            tracing::warn!(error = %err, "could not delete an unreadable session");
        }
    }

    /// Seals a record: its hash, sealed data and sealed handle.
    fn seal(
        &self,
        id: &SessionId,
        record: &SessionRecord,
    ) -> Result<(String, String, String), StoreError> {
        let hash = hash_id(id);
        let data = self.inner.codec.seal_record(&hash, record)?;
        let handle = self.inner.codec.seal_id(&hash, id)?;
        Ok((hash, data, handle))
    }

    /// A transient-value or lease statement changing one row: `true` if it did.
    async fn changed_one(
        &self,
        sql: &Arc<str>,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let mut args = vec![Arg::Text(key), Arg::Text(value)];
        if let Some(ttl) = ttl {
            args.push(Arg::Int(millis(ttl)));
        }
        Ok(self.execute(sql, &args).await? == 1)
    }
}

impl<D: Dialect> SqlStoreBuilder<D> {
    common_builder_methods!();

    /// Prefix of the table names (default `oidc_bff_`): lowercase letters,
    /// digits and `_`. Lets several stores share one database.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// Builds the store without any I/O: the first operation connects and
    /// creates the schema, and operations fail (503) until the database can
    /// be reached. Configuration errors are still reported here. Must be
    /// called within a Tokio runtime (PostgreSQL starts its invalidation
    /// listener in the background).
    pub fn build_lazy(self) -> Result<SqlStore<D>, StoreError> {
        let codec = self.settings.codec()?;
        let prefix = self.settings.sql_prefix()?.to_owned();
        let db = D::open(&self.url, &self.settings, &prefix)?;
        let mut cache = (self.settings.cache_capacity > 0).then(|| {
            Arc::new(ReadCache::new(
                self.settings.clock.clone(),
                self.settings.cache_capacity,
            ))
        });
        let channel = cache.as_ref().and_then(|c| db.start_channel(c));
        if channel.is_none() {
            cache = None;
        }
        Ok(SqlStore {
            inner: Arc::new(Inner {
                db,
                codec,
                clock: self.settings.clock.clone(),
                op_timeout: self.settings.op_timeout,
                sql: Sql::new::<D>(&prefix),
                prefix,
                schema: tokio::sync::OnceCell::new(),
                cache,
                _channel: channel,
            }),
        })
    }

    /// Connects and creates the schema if needed; fails if the database
    /// cannot be reached within the operation timeout.
    pub async fn build(self) -> Result<SqlStore<D>, StoreError> {
        let store = self.build_lazy()?;
        store.ready().await?;
        Ok(store)
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

/// The statements, built once for the table prefix and the dialect.
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
    count_sessions: Arc<str>,
    purge_transient: Arc<str>,
    purge_leases: Arc<str>,
}

impl Sql {
    fn new<D: Dialect>(p: &str) -> Self {
        let s = |sql: String| Arc::<str>::from(sql);
        let announce =
            |write: &str, columns: &str, version: &str| D::announce(write, columns, version, p);
        let now = D::NOW_MS;
        Self {
            load: s(format!(
                "SELECT version, data FROM {p}sessions WHERE id = $1 AND expires_at > $2"
            )),
            create: s(format!(
                "INSERT INTO {p}sessions (id, version, sub, sid, expires_at, handle, data)
                 VALUES ($1, 1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING"
            )),
            update: s(announce(
                &format!(
                    "UPDATE {p}sessions SET version = version + 1, sub = $2, sid = $3, expires_at = $4,
                     handle = $5, data = $6 WHERE id = $1 AND version = $7"
                ),
                "version",
                "version",
            )),
            version_of: s(format!("SELECT version FROM {p}sessions WHERE id = $1")),
            delete: s(announce(&format!("DELETE FROM {p}sessions WHERE id = $1"), "data", "0")),
            discard: s(announce(
                &format!("DELETE FROM {p}sessions WHERE id = $1 AND version = $2"),
                "version",
                "0",
            )),
            find_sub: s(format!(
                "SELECT id, handle FROM {p}sessions WHERE sub = $1 AND expires_at > $2"
            )),
            find_sid: s(format!(
                "SELECT id, handle FROM {p}sessions WHERE sid = $1 AND expires_at > $2"
            )),
            put: s(format!(
                "INSERT INTO {p}transient (key, value, expires_ms) VALUES ($1, $2, {now} + $3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms"
            )),
            put_if_absent: s(format!(
                "INSERT INTO {p}transient (key, value, expires_ms) VALUES ($1, $2, {now} + $3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms
                 WHERE {p}transient.expires_ms <= {now}"
            )),
            take: s(format!(
                "DELETE FROM {p}transient WHERE key = $1 RETURNING value, expires_ms - {now} AS left_ms"
            )),
            get: s(format!(
                "SELECT value FROM {p}transient WHERE key = $1 AND expires_ms > {now}"
            )),
            try_lease: s(format!(
                "INSERT INTO {p}leases (id, owner, expires_ms) VALUES ($1, $2, {now} + $3)
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms
                 WHERE {p}leases.expires_ms <= {now}"
            )),
            renew_lease: s(format!(
                "UPDATE {p}leases SET expires_ms = {now} + $3
                 WHERE id = $1 AND owner = $2 AND expires_ms > {now}"
            )),
            release_lease: s(format!("DELETE FROM {p}leases WHERE id = $1 AND owner = $2")),
            purge_sessions: s(format!("DELETE FROM {p}sessions WHERE expires_at <= $1")),
            count_sessions: s(format!("SELECT COUNT(*) FROM {p}sessions WHERE expires_at > $1")),
            purge_transient: s(format!("DELETE FROM {p}transient WHERE expires_ms <= {now}")),
            purge_leases: s(format!("DELETE FROM {p}leases WHERE expires_ms <= {now}")),
        }
    }
}

fn sub_sid(record: &SessionRecord) -> (&str, Option<&str>) {
    (record.sub.as_str(), record.sid.as_deref())
}

fn expires(record: &SessionRecord) -> i64 {
    i64::try_from(record.expires_at).unwrap_or(i64::MAX)
}

#[async_trait]
impl<D: Dialect> SessionStore for SqlStore<D> {
    async fn load(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        if let Some(hit) = self.inner.cache.as_ref().and_then(|c| c.get(id)) {
            return Ok(Some(hit));
        }
        self.read_and_cache(id).await
    }

    async fn load_latest(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        self.read_and_cache(id).await
    }

    async fn create(&self, id: &SessionId, record: SessionRecord) -> Result<u64, StoreError> {
        let (hash, data, handle) = self.seal(id, &record)?;
        let (sub, sid) = sub_sid(&record);
        let ticket = self.inner.cache.as_ref().map(|c| c.ticket());
        let created = self
            .execute(
                &self.inner.sql.create,
                &[
                    Arg::Text(&hash),
                    Arg::Text(sub),
                    Arg::MaybeText(sid),
                    Arg::Int(expires(&record)),
                    Arg::Text(&handle),
                    Arg::Text(&data),
                ],
            )
            .await?;
        if created != 1 {
            return Err(StoreError::Unavailable("session id collision".into()));
        }
        if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
            let written = Versioned {
                version: 1,
                record: Arc::new(record),
            };
            cache.wrote(ticket, id, &hash, &written);
        }
        Ok(1)
    }

    async fn update(
        &self,
        id: &SessionId,
        record: SessionRecord,
        expected_version: u64,
    ) -> Result<UpdateOutcome, StoreError> {
        let (hash, data, handle) = self.seal(id, &record)?;
        let (sub, sid) = sub_sid(&record);
        let expected = i64::try_from(expected_version).unwrap_or(-1);
        let ticket = self.inner.cache.as_ref().map(|c| c.ticket());
        let updated = self
            .fetch(
                &self.inner.sql.update,
                &[
                    Arg::Text(&hash),
                    Arg::Text(sub),
                    Arg::MaybeText(sid),
                    Arg::Int(expires(&record)),
                    Arg::Text(&handle),
                    Arg::Text(&data),
                    Arg::Int(expected),
                ],
            )
            .await;
        let updated = match updated {
            Ok(rows) => rows,
            Err(err) => {
                // The write may or may not have happened.
                self.forget(id, &hash);
                return Err(err);
            }
        };
        if let Some(row) = updated.into_iter().next() {
            let version =
                u64::try_from(row.first().unwrap_or(&Value::Null).int()?).unwrap_or_default();
            if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
                let written = Versioned {
                    version,
                    record: Arc::new(record),
                };
                cache.wrote(ticket, id, &hash, &written);
            }
            return Ok(UpdateOutcome::Updated(version));
        }
        self.forget(id, &hash);
        let exists = self
            .fetch_one(&self.inner.sql.version_of, &[Arg::Text(&hash)])
            .await?;
        Ok(match exists {
            Some(_) => UpdateOutcome::Conflict,
            None => UpdateOutcome::Missing,
        })
    }

    async fn delete(&self, id: &SessionId) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let hash = hash_id(id);
        let deleted = self
            .fetch_one(&self.inner.sql.delete, &[Arg::Text(&hash)])
            .await;
        self.forget(id, &hash);
        match deleted?.and_then(|row| row.into_iter().next()) {
            None => Ok(None),
            // The row is gone either way; an unreadable one is reported as absent.
            Some(data) => Ok(self
                .inner
                .codec
                .open_record(&hash, &data.into_text()?)
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
        self.changed_one(&self.inner.sql.put, &hkey, &sealed, Some(ttl))
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
        self.changed_one(&self.inner.sql.put_if_absent, &hkey, &sealed, Some(ttl))
            .await
    }

    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let Some(row) = self
            .fetch_one(&self.inner.sql.take, &[Arg::Text(&hkey)])
            .await?
        else {
            return Ok(None);
        };
        let mut row = row.into_iter();
        let sealed = row.next().unwrap_or(Value::Null).into_text()?;
        if row.next().unwrap_or(Value::Null).int()? <= 0 {
            return Ok(None);
        }
        Ok(open_value_or_none(
            &self.inner.codec,
            D::LABEL,
            &hkey,
            &sealed,
        ))
    }

    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let Some(row) = self
            .fetch_one(&self.inner.sql.get, &[Arg::Text(&hkey)])
            .await?
        else {
            return Ok(None);
        };
        let sealed = row.into_iter().next().unwrap_or(Value::Null).into_text()?;
        Ok(open_value_or_none(
            &self.inner.codec,
            D::LABEL,
            &hkey,
            &sealed,
        ))
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.changed_one(&self.inner.sql.try_lease, &hash_id(id), owner, Some(ttl))
            .await
    }

    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.changed_one(&self.inner.sql.renew_lease, &hash_id(id), owner, Some(ttl))
            .await
    }

    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError> {
        self.changed_one(&self.inner.sql.release_lease, &hash_id(id), owner, None)
            .await
            .map(|_| ())
    }

    async fn count_sessions(&self) -> Result<Option<u64>, StoreError> {
        let row = self
            .fetch_one(&self.inner.sql.count_sessions, &[Arg::Int(self.now())])
            .await?;
        let count = match row.as_deref() {
            Some([count, ..]) => count.int()?,
            _ => 0,
        };
        Ok(Some(u64::try_from(count).unwrap_or_default()))
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        // Expired sessions are never served from the cache either: it
        // checks the expiry itself.
        let sessions = self
            .execute(&self.inner.sql.purge_sessions, &[Arg::Int(self.now())])
            .await?;
        for sql in [
            &self.inner.sql.purge_transient,
            &self.inner.sql.purge_leases,
        ] {
            self.execute(sql, &[]).await?;
        }
        Ok(sessions)
    }
}
