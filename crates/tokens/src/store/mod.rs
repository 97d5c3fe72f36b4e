//! Where sessions live: the [`SessionStore`] trait and its implementations.
//!
//! The trait is built for **versioned writes**: every record carries a version
//! number, and [`SessionStore::update`] only succeeds when the caller saw the
//! latest version. A slow writer can therefore never overwrite tokens that
//! another request (or another instance) stored in the meantime — the write
//! comes back as [`UpdateOutcome::Conflict`] and the caller re-reads.
//!
//! Besides sessions, a store keeps short-lived one-time values
//! ([`put_transient`](SessionStore::put_transient) /
//! [`take_transient`](SessionStore::take_transient)): pending sign-ins and
//! replay caches, which must also be shared between instances.
//!
//! [`MemoryStore`] is the default, for a single process. For several
//! instances, or sessions that survive a restart, enable a persistent store
//! with a cargo feature:
//!
//! | feature    | store             | use |
//! |------------|-------------------|-----|
//! | `sqlite`   | `SqliteStore`     | one machine; survives restarts; instances on that machine share the file |
//! | `redis`    | `RedisStore`      | many instances; Redis (standalone, Sentinel or Cluster; TLS); read cache |
//! | `postgres` | `PostgresStore`   | many instances; PostgreSQL; read cache |
//!
//! `SqliteStore` and `PostgresStore` are one implementation,
//! `sql::SqlStore`, over two `sql::Dialect`s.
//!
//! All three keep sessions under the SHA-256 of their id, encrypt the record
//! with a [`KeyRing`] (AES-256-GCM), bound every operation by a timeout
//! ([`StoreError::Timeout`] → 503), create their schema idempotently at
//! connect, and implement the refresh lease and versioned writes so that
//! exactly one instance refreshes a session's tokens (see
//! `docs/COORDINATION.md`). Connections are plain TCP or Unix sockets (no
//! TLS yet): run the backend on loopback or a trusted private network.
//!
//! # Read cache
//!
//! `RedisStore` and `PostgresStore` answer [`load`](SessionStore::load)
//! from a per-instance cache of the sessions they read or wrote, so the hot
//! path costs no round trip. The store keeps it coherent: every update and
//! delete announces the session's hash and new version on a channel, in the
//! same Lua script (Redis `PUBLISH`) or statement (PostgreSQL `NOTIFY`) as
//! the change, and each instance drops what changed as soon as the
//! announcement arrives (another instance's logout takes effect within
//! 100 ms; measured in milliseconds). While the channel is not live —
//! before it is subscribed, after its connection drops, or when a heartbeat
//! does not come back — the cache is emptied and every read goes to the
//! backend. Writes, leases and compare-and-set always go to the backend,
//! and [`load_latest`](SessionStore::load_latest) (the refresh engine's read)
//! bypasses the cache. The builders' `read_cache(capacity)` sizes it (0
//! turns it off). The protocol is in `docs/COORDINATION.md`.
//!
//! Run [`spawn_cleanup`] to purge expired sessions in the background.

#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
mod cache;
mod crypto;
mod memory;
pub(crate) mod metered;
#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
mod persistent;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "postgres")]
pub use self::sql::{PostgresStore, PostgresStoreBuilder};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use self::sql::{SqlStore, SqlStoreBuilder};
#[cfg(feature = "sqlite")]
pub use self::sql::{SqliteStore, SqliteStoreBuilder};
pub use crypto::{KEY_LEN, KeyRing};
pub use memory::MemoryStore;

use crate::session::{SessionId, SessionRecord};

/// A session record with the version it was read at.
#[derive(Clone, Debug)]
pub struct Versioned {
    /// The version of the record in the store.
    pub version: u64,
    /// The record.
    pub record: Arc<SessionRecord>,
}

/// Result of a versioned [`SessionStore::update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Written; the record now has this version.
    Updated(u64),
    /// The record changed since it was read; nothing was written.
    Conflict,
    /// The session no longer exists; nothing was written.
    Missing,
}

/// Errors of a session store. Always transient from the user's point of view:
/// the request gets 503 and the session is kept.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend took too long.
    #[error("store timed out")]
    Timeout,
    /// A stored value could not be decoded (corrupt, or written with an unknown key).
    ///
    /// Sessions and transient values are not reported this way: the
    /// persistent stores treat an unreadable one as absent (logged, and a
    /// session deleted), so its user signs in again instead of getting 503
    /// on every request.
    #[error("stored value could not be decoded: {0}")]
    Corrupt(String),
    /// The store is misconfigured (bad URL, missing encryption key, ...);
    /// returned when building a store, not by its operations.
    #[error("store configuration error: {0}")]
    Config(String),
}

/// Storage of server-side sessions.
///
/// Implementations must be safe to share between many tasks (and, for the
/// persistent stores, many processes). Expired sessions (by
/// [`SessionRecord::expires_at`]) must not be returned by [`load`](Self::load).
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Loads a session with its version; `None` when absent or expired.
    ///
    /// A stored record that cannot be decrypted or decoded (its key was
    /// dropped from the key ring, or it is damaged) is also `None`: the store
    /// logs a warning and deletes it, best effort.
    async fn load(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError>;

    /// Loads a session straight from the backend, bypassing any read cache
    /// the store keeps; `None` when absent or expired.
    ///
    /// The refresh engine uses it for every read that decides whether to
    /// spend a refresh token (the re-read under the lease, waiters polling
    /// for another instance's result, the check after `invalid_grant`): a
    /// cached copy that is a few milliseconds old there could spend a
    /// rotated one-time refresh token twice. Everything else uses
    /// [`load`](Self::load). The default is `load`, for stores without a
    /// cache.
    async fn load_latest(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        self.load(id).await
    }

    /// Stores a new session; returns its first version. Overwrites nothing:
    /// ids are random 256-bit values, a collision is treated as an error.
    async fn create(&self, id: &SessionId, record: SessionRecord) -> Result<u64, StoreError>;

    /// Replaces a session if its version is still `expected_version`.
    async fn update(
        &self,
        id: &SessionId,
        record: SessionRecord,
        expected_version: u64,
    ) -> Result<UpdateOutcome, StoreError>;

    /// Removes a session; returns the record it held, if any.
    async fn delete(&self, id: &SessionId) -> Result<Option<Arc<SessionRecord>>, StoreError>;

    /// Ids of the live sessions of a subject (for back-channel logout).
    /// Entries that cannot be decrypted are skipped with a warning.
    async fn find_by_sub(&self, sub: &str) -> Result<Vec<SessionId>, StoreError>;

    /// The live sessions of a subject, each with its id, read from the
    /// backend (past any read cache): session lists and administration use
    /// it, so that a session another instance just ended or touched shows as
    /// it is. The order is unspecified.
    ///
    /// The default asks [`find_by_sub`](Self::find_by_sub) (an index in
    /// every store of this crate) and reads each with
    /// [`load_latest`](Self::load_latest), skipping those that went in
    /// between and any whose record names another subject.
    async fn sessions_of(&self, sub: &str) -> Result<Vec<(SessionId, Versioned)>, StoreError> {
        let mut out = Vec::new();
        for id in self.find_by_sub(sub).await? {
            if let Some(found) = self.load_latest(&id).await?
                && found.record.sub == sub
            {
                out.push((id, found));
            }
        }
        Ok(out)
    }

    /// Ids of the live sessions with a provider session id `sid`.
    async fn find_by_sid(&self, sid: &str) -> Result<Vec<SessionId>, StoreError>;

    /// Stores a short-lived value under `key` for at most `ttl`.
    async fn put_transient(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Stores a short-lived value only if `key` holds none (atomically);
    /// `false` when it already exists. Replay caches (`jti`) use it.
    async fn put_transient_if_absent(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Removes and returns a short-lived value: a second take of the same key
    /// returns `None` (one-time use).
    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Reads a short-lived value without removing it; `None` when absent or
    /// expired. Caches shared between instances (client credentials tokens)
    /// use it. The default shares nothing and always answers `None`.
    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let _ = key;
        Ok(None)
    }

    /// Takes the refresh lease of a session for `ttl` if nobody holds it.
    ///
    /// The lease makes one instance the only user of a session's refresh
    /// token. `owner` is a random value naming the holder; only it can renew
    /// or release the lease. A holder that dies loses the lease when `ttl`
    /// runs out. Returns `false` when another owner holds it.
    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Extends a lease this owner still holds; `false` if it was lost.
    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Releases a lease if this owner still holds it (compare-and-delete).
    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError>;

    /// Removes expired sessions, transient values and leases; returns how
    /// many sessions went. Run it periodically with [`spawn_cleanup`]. The
    /// default does nothing (for stores whose backend expires entries itself).
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// How many live sessions the store holds, for the
    /// `oidc_bff_sessions_active` gauge, or `None` when the store cannot
    /// count them cheaply (the default; Redis would need a scan). The
    /// memory store counts its map (expired sessions included until
    /// purged); the SQL stores count rows through the expiry index.
    ///
    /// (A new method of this trait must also be forwarded by the metering
    /// wrapper in `store/metered.rs`, or its default would answer instead.)
    async fn count_sessions(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}

/// How [`open_url`] builds a store.
///
/// ```
/// use std::time::Duration;
/// use oidc_bff_tokens::store::{open_url, KeyRing, OpenOptions};
///
/// let memory = open_url("memory", OpenOptions::new()).unwrap();
/// let options = OpenOptions::new()
///     .encryption(KeyRing::generate("k1"))
///     .operation_timeout(Duration::from_secs(1));
/// assert!(open_url("mysql://nope", options).is_err());
/// # let _ = memory;
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct OpenOptions {
    keys: Option<KeyRing>,
    operation_timeout: Option<Duration>,
    prefix: Option<String>,
}

impl OpenOptions {
    /// Defaults: no key ring, 2 s operation timeout, the store's default prefix.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key ring that encrypts tokens at rest (required by persistent stores).
    pub fn encryption(mut self, keys: KeyRing) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Bound of every store operation.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = Some(timeout);
        self
    }

    /// Table (SQL) or key (Redis) prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
}

/// Builds the store a URL names, without I/O (the first operation connects
/// and, for SQL, creates the schema; until the backend answers, operations
/// fail with [`StoreError::Unavailable`]/[`StoreError::Timeout`]):
///
/// * `memory` — a [`MemoryStore`];
/// * `sqlite://path/to/file.db` (relative) or `sqlite:///abs/path.db` — feature `sqlite`;
/// * `redis://host:port[/db]`, `rediss://…` (TLS), `redis+unix:///path`,
///   `redis+sentinel://host:26379[,host…]/primary-name`,
///   `redis+cluster://host:port[,host:port…]` (and `rediss+…`) — feature `redis`;
/// * `postgres://user@host:port/db` (or `postgresql://`; TLS with
///   `?sslmode=verify-full&sslrootcert=ca.pem`) — feature `postgres`.
///
/// Must be called within a Tokio runtime.
pub fn open_url(url: &str, options: OpenOptions) -> Result<Arc<dyn SessionStore>, StoreError> {
    let scheme = url
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let _ = &options;
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(
            SqliteStore::builder(url).options(options).build_lazy()?,
        )),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "redis+unix" | "unix" | "redis+sentinel" | "rediss+sentinel"
        | "redis+cluster" | "rediss+cluster" => Ok(Arc::new(
            RedisStore::builder(url).options(options).build_lazy()?,
        )),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(
            PostgresStore::builder(url).options(options).build_lazy()?,
        )),
        #[allow(unreachable_patterns)]
        "sqlite" | "redis" | "rediss" | "redis+unix" | "unix" | "redis+sentinel"
        | "rediss+sentinel" | "redis+cluster" | "rediss+cluster" | "postgres" | "postgresql" => {
            Err(StoreError::Config(format!(
                "the {scheme:?} session store is not in this build (enable the cargo feature)"
            )))
        }
        _ => Err(StoreError::Config(
            "unknown session store URL; expected memory, sqlite://, redis:// or postgres://".into(),
        )),
    }
}

/// Runs [`SessionStore::purge_expired`] every `every` (with up to 10 %
/// jitter, so instances sharing a store spread out) until the returned
/// handle is aborted or dropped with the runtime. Failures are logged and
/// retried at the next tick.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use oidc_bff_tokens::store::{spawn_cleanup, MemoryStore, SessionStore};
///
/// let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
/// let cleanup = spawn_cleanup(store.clone(), Duration::from_secs(300));
/// // ... at shutdown:
/// cleanup.abort();
/// # }
/// ```
pub fn spawn_cleanup(store: Arc<dyn SessionStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        loop {
            let jitter = {
                use rand::Rng as _;
                let max = u64::try_from(every.as_millis() / 10)
                    .unwrap_or(u64::MAX)
                    .max(1);
                Duration::from_millis(rand::rng().random_range(0..max))
            };
            tokio::time::sleep(every + jitter).await;
            match store.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sessions = n, "purged expired sessions"),
                Err(err) => tracing::warn!(error = %err, "purging expired sessions failed"),
            }
        }
    })
}
