//! The session stores under test, each isolated by a random prefix and
//! cleaned up when dropped.
//!
//! Redis and PostgreSQL are the services of the machine
//! (`OIDC_BFF_TEST_REDIS`, default `redis://127.0.0.1:6379`, and
//! `OIDC_BFF_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`). When
//! one cannot be reached the test fails if `CI=true`, and is skipped with a
//! notice otherwise.

use std::sync::Arc;
use std::time::Duration;

use oidc_bff_tokens::store::KeyRing;
use oidc_bff_tokens::{Clock, ManualClock, MemoryStore, SessionStore};

/// Which store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Redis,
    Postgres,
    /// A Sentinel set-up started by the test binary (`common::servers`).
    RedisSentinel,
    /// A three-primary Cluster started by the test binary.
    RedisCluster,
    /// A TLS-only Redis started by the test binary, verified with its CA.
    RedisTls,
    /// A private PostgreSQL with `ssl=on`, `sslmode=verify-full`.
    PostgresTls,
}

/// The URL of a Redis or PostgreSQL backend; `Err` when its servers cannot
/// be started or reached.
pub fn backend_url(backend: Backend) -> Result<String, String> {
    use super::servers::{self, shared};
    let missing = || format!("{backend:?} servers could not be started");
    Ok(match backend {
        Backend::Redis => redis_url(),
        Backend::Postgres => postgres_url(),
        Backend::RedisSentinel => shared(
            &servers::SENTINEL,
            "Redis Sentinel",
            servers::Sentinel::start,
        )
        .ok_or_else(missing)?
        .url(),
        Backend::RedisCluster => {
            shared(&servers::CLUSTER, "Redis Cluster", servers::Cluster::start)
                .ok_or_else(missing)?
                .url()
        }
        Backend::RedisTls => shared(&servers::TLS_REDIS, "TLS Redis", servers::TlsRedis::start)
            .ok_or_else(missing)?
            .url(),
        Backend::PostgresTls => shared(
            &servers::TLS_POSTGRES,
            "TLS PostgreSQL",
            servers::TlsPostgres::start,
        )
        .ok_or_else(missing)?
        .url(),
        Backend::Memory | Backend::Sqlite => return Err("not a server".into()),
    })
}

pub fn redis_url() -> String {
    std::env::var("OIDC_BFF_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn postgres_url() -> String {
    std::env::var("OIDC_BFF_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Fails under CI, skips (with a notice) elsewhere.
pub use super::servers::unavailable;

/// A random lowercase suffix for prefixes.
pub fn random_suffix() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// A store under test.
pub struct TestStore {
    pub backend: Backend,
    pub store: Arc<dyn SessionStore>,
    pub clock: ManualClock,
    pub keys: KeyRing,
    location: Location,
}

#[derive(Clone)]
enum Location {
    Memory,
    #[allow(dead_code)]
    Sqlite {
        dir: Arc<tempfile::TempDir>,
        url: String,
    },
    #[allow(dead_code)]
    Redis {
        prefix: String,
        url: String,
    },
    #[allow(dead_code)]
    Postgres {
        prefix: String,
        url: String,
    },
}

impl TestStore {
    /// Opens a fresh, isolated store; `None` when the service is missing
    /// outside CI.
    pub async fn open(backend: Backend) -> Option<TestStore> {
        Self::open_with(backend, |b| b).await
    }

    /// As [`open`](Self::open), with a smaller operation timeout etc.
    pub async fn open_with(backend: Backend, tune: impl Fn(Tuning) -> Tuning) -> Option<TestStore> {
        let clock = ManualClock::starting_now();
        let keys = KeyRing::generate("test1");
        let tuning = tune(Tuning::default());
        let location = match backend {
            Backend::Memory => Location::Memory,
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
                Location::Sqlite {
                    dir: Arc::new(dir),
                    url,
                }
            }
            Backend::Redis
            | Backend::RedisSentinel
            | Backend::RedisCluster
            | Backend::RedisTls
            | Backend::Postgres
            | Backend::PostgresTls => {
                let url = match backend_url(backend) {
                    Ok(url) => url,
                    // Already reported (fails under CI).
                    Err(_) => return None,
                };
                if matches!(backend, Backend::Postgres | Backend::PostgresTls) {
                    Location::Postgres {
                        prefix: format!("t_{}_", random_suffix()),
                        url,
                    }
                } else {
                    Location::Redis {
                        prefix: format!("oidc-bff-test:{}:", random_suffix()),
                        url,
                    }
                }
            }
        };
        let store = match connect(&location, keys.clone(), &clock, &tuning).await {
            Ok(store) => store,
            Err(err) => {
                unavailable(&format!("{backend:?}"), &err);
                return None;
            }
        };
        Some(TestStore {
            backend,
            store,
            clock,
            keys,
            location,
        })
    }

    pub fn is_persistent(&self) -> bool {
        self.backend != Backend::Memory
    }

    /// The same storage opened again with another key ring (another
    /// instance, or a restart with rotated keys).
    pub async fn reopen(&self, keys: KeyRing) -> Arc<dyn SessionStore> {
        connect(&self.location, keys, &self.clock, &Tuning::default())
            .await
            .expect("reopen")
    }

    /// Another handle on the same storage with the same keys (another instance).
    pub async fn another_instance(&self) -> Arc<dyn SessionStore> {
        if self.backend == Backend::Memory {
            return self.store.clone();
        }
        self.reopen(self.keys.clone()).await
    }

    /// Everything the backend holds for this store, as text (`None` for memory).
    pub async fn raw_dump(&self) -> Option<Vec<String>> {
        match &self.location {
            Location::Memory => None,
            #[cfg(feature = "sqlite")]
            Location::Sqlite { url, .. } => Some(
                sqlite(url, self.keys.clone(), &self.clock, &Tuning::default())
                    .await
                    .expect("sqlite")
                    .raw_dump()
                    .await
                    .expect("dump"),
            ),
            #[cfg(feature = "redis")]
            Location::Redis { prefix, url } => Some(
                redis_at(
                    url,
                    prefix,
                    self.keys.clone(),
                    &self.clock,
                    &Tuning::default(),
                )
                .await
                .expect("redis")
                .raw_dump()
                .await
                .expect("dump"),
            ),
            #[cfg(feature = "postgres")]
            Location::Postgres { prefix, url } => Some(
                postgres_at(
                    url,
                    prefix,
                    self.keys.clone(),
                    &self.clock,
                    &Tuning::default(),
                )
                .await
                .expect("postgres")
                .raw_dump()
                .await
                .expect("dump"),
            ),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let location = self.location.clone();
        let keys = self.keys.clone();
        let clock = self.clock.clone();
        // Clean up on a thread of its own: Drop cannot await, and the
        // test's runtime may already be shutting down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let _ = (&keys, &clock);
                match location {
                    Location::Memory | Location::Sqlite { .. } => {}
                    #[cfg(feature = "redis")]
                    Location::Redis { prefix, url } => {
                        if let Ok(s) =
                            redis_at(&url, &prefix, keys, &clock, &Tuning::default()).await
                        {
                            let _ = s.drop_all().await;
                        }
                    }
                    #[cfg(feature = "postgres")]
                    Location::Postgres { prefix, url } => {
                        if let Ok(s) =
                            postgres_at(&url, &prefix, keys, &clock, &Tuning::default()).await
                        {
                            let _ = s.drop_tables().await;
                        }
                    }
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            });
        })
        .join();
    }
}

/// Store settings a test may change.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub op_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_secs(5),
        }
    }
}

async fn connect(
    location: &Location,
    keys: KeyRing,
    clock: &ManualClock,
    tuning: &Tuning,
) -> Result<Arc<dyn SessionStore>, String> {
    let _ = (&keys, tuning);
    match location {
        Location::Memory => Ok(Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())))),
        #[cfg(feature = "sqlite")]
        Location::Sqlite { url, .. } => Ok(Arc::new(
            sqlite(url, keys, clock, tuning)
                .await
                .map_err(|e| e.to_string())?,
        )),
        #[cfg(feature = "redis")]
        Location::Redis { prefix, url } => Ok(Arc::new(
            // Boxed: the store's connect future is deep (queries overflow
            // the compiler's depth limit in some test binaries otherwise).
            Box::pin(redis_at(url, prefix, keys, clock, tuning))
                .await
                .map_err(|e| e.to_string())?,
        )),
        #[cfg(feature = "postgres")]
        Location::Postgres { prefix, url } => Ok(Arc::new(
            Box::pin(postgres_at(url, prefix, keys, clock, tuning))
                .await
                .map_err(|e| e.to_string())?,
        )),
        #[allow(unreachable_patterns)]
        _ => Err("this store's cargo feature is not enabled".into()),
    }
}

#[cfg(feature = "sqlite")]
async fn sqlite(
    url: &str,
    keys: KeyRing,
    clock: &ManualClock,
    tuning: &Tuning,
) -> Result<oidc_bff_tokens::store::SqliteStore, oidc_bff_tokens::StoreError> {
    oidc_bff_tokens::store::SqliteStore::builder(url)
        .encryption(keys)
        .clock(Arc::new(clock.clone()))
        .operation_timeout(tuning.op_timeout)
        .build()
        .await
}

#[cfg(feature = "redis")]
pub async fn redis(
    prefix: &str,
    keys: KeyRing,
    clock: &ManualClock,
    tuning: &Tuning,
) -> Result<oidc_bff_tokens::store::RedisStore, oidc_bff_tokens::StoreError> {
    redis_at(&redis_url(), prefix, keys, clock, tuning).await
}

/// A Redis store at `url`.
#[cfg(feature = "redis")]
pub async fn redis_at(
    url: &str,
    prefix: &str,
    keys: KeyRing,
    clock: &ManualClock,
    tuning: &Tuning,
) -> Result<oidc_bff_tokens::store::RedisStore, oidc_bff_tokens::StoreError> {
    oidc_bff_tokens::store::RedisStore::builder(url)
        .key_prefix(prefix)
        .encryption(keys)
        .clock(Arc::new(clock.clone()))
        .operation_timeout(tuning.op_timeout)
        .build()
        .await
}

#[cfg(feature = "postgres")]
pub async fn postgres(
    prefix: &str,
    keys: KeyRing,
    clock: &ManualClock,
    tuning: &Tuning,
) -> Result<oidc_bff_tokens::store::PostgresStore, oidc_bff_tokens::StoreError> {
    postgres_at(&postgres_url(), prefix, keys, clock, tuning).await
}

/// A PostgreSQL store at `url`.
#[cfg(feature = "postgres")]
pub async fn postgres_at(
    url: &str,
    prefix: &str,
    keys: KeyRing,
    clock: &ManualClock,
    tuning: &Tuning,
) -> Result<oidc_bff_tokens::store::PostgresStore, oidc_bff_tokens::StoreError> {
    oidc_bff_tokens::store::PostgresStore::builder(url)
        .table_prefix(prefix)
        .encryption(keys)
        .clock(Arc::new(clock.clone()))
        .operation_timeout(tuning.op_timeout)
        .max_connections(4)
        .build()
        .await
}

/// Unix time by the test clock.
pub fn now(clock: &ManualClock) -> u64 {
    clock.now_unix()
}
