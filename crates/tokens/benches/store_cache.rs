#![allow(missing_docs)]
//! The shared stores' read cache: `SessionStore::load` of a live session
//! through each store, with and without the cache, against the memory
//! store; and how long a session deleted on one instance is still served
//! by another (the invalidation's travel time).
//!
//! ```text
//! cargo bench -p oidc-bff-tokens --features sqlite,redis,postgres --bench store_cache
//! ```
//!
//! Redis and PostgreSQL are the machine's (`OIDC_BFF_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`; `OIDC_BFF_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`); an unavailable one is
//! skipped with a notice. Keys and tables carry a random prefix and are
//! removed at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use oidc_bff_tokens::store::{KeyRing, MemoryStore, SessionStore};
use oidc_bff_tokens::{
    AccessToken, Clock, IdToken, RefreshToken, SessionId, SessionRecord, SystemClock, UserTokens,
};
use tokio::runtime::Runtime;

fn record(now: u64) -> SessionRecord {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    claims.insert("name".into(), "Alice Example".into());
    SessionRecord {
        sub: "alice".into(),
        sid: Some("sid-1".into()),
        claims,
        tokens: UserTokens {
            // A realistic JWT-sized access token.
            access_token: AccessToken::new("a".repeat(900)),
            expires_at: now + 3600,
            token_type: "Bearer".into(),
            refresh_token: Some(RefreshToken::new("r".repeat(43))),
            id_token: Some(IdToken::new("i".repeat(900))),
            scope: Some("openid profile offline_access".into()),
            refreshed_at: None,
            refresh_count: 0,
            issued_at: None,
        },
        resource_tokens: Default::default(),
        created_at: now,
        expires_at: now + 8 * 3600,
        last_active: now,
        logout_id: "logout".into(),
        user_agent: None,
        dpop_key: None,
    }
}

fn suffix() -> String {
    SessionId::generate().as_str()[..10]
        .to_ascii_lowercase()
        .replace(['-', '_'], "x")
}

fn redis_url() -> String {
    std::env::var("OIDC_BFF_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn postgres_url() -> String {
    std::env::var("OIDC_BFF_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A store to measure, and how to remove what it wrote.
struct Case {
    name: String,
    store: Arc<dyn SessionStore>,
    /// A second instance on the same backend (cached stores only).
    other: Option<Arc<dyn SessionStore>>,
}

async fn cases(keys: &KeyRing) -> (Vec<Case>, Vec<Cleanup>) {
    let mut cases = vec![Case {
        name: "memory".into(),
        store: Arc::new(MemoryStore::new()),
        other: None,
    }];
    let mut cleanups = Vec::new();
    {
        use oidc_bff_tokens::store::SqliteStore;
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::builder(url)
            .encryption(keys.clone())
            .build()
            .await;
        match store {
            Ok(s) => {
                cases.push(Case {
                    name: "sqlite".into(),
                    store: Arc::new(s),
                    other: None,
                });
                cleanups.push(Cleanup::Dir(dir));
            }
            Err(err) => eprintln!("skipping sqlite: {err}"),
        }
    }
    {
        use oidc_bff_tokens::store::RedisStore;
        let prefix = format!("oidc-bff-bench:{}:", suffix());
        let open = |capacity: usize| {
            RedisStore::builder(redis_url())
                .key_prefix(&prefix)
                .encryption(keys.clone())
                .read_cache(capacity)
                .build()
        };
        match (open(100_000).await, open(100_000).await, open(0).await) {
            (Ok(a), Ok(b), Ok(uncached)) => {
                cleanups.push(Cleanup::Redis(uncached.clone()));
                cases.push(Case {
                    name: "redis_uncached".into(),
                    store: Arc::new(uncached),
                    other: None,
                });
                cases.push(Case {
                    name: "redis_cached".into(),
                    store: Arc::new(a),
                    other: Some(Arc::new(b)),
                });
            }
            _ => eprintln!("skipping redis: not available"),
        }
    }
    {
        use oidc_bff_tokens::store::PostgresStore;
        let prefix = format!("bench_{}_", suffix());
        let open = |capacity: usize| {
            PostgresStore::builder(postgres_url())
                .table_prefix(&prefix)
                .encryption(keys.clone())
                .max_connections(2)
                .read_cache(capacity)
                .build()
        };
        match (open(100_000).await, open(100_000).await, open(0).await) {
            (Ok(a), Ok(b), Ok(uncached)) => {
                cleanups.push(Cleanup::Postgres(uncached.clone()));
                cases.push(Case {
                    name: "postgres_uncached".into(),
                    store: Arc::new(uncached),
                    other: None,
                });
                cases.push(Case {
                    name: "postgres_cached".into(),
                    store: Arc::new(a),
                    other: Some(Arc::new(b)),
                });
            }
            _ => eprintln!("skipping postgres: not available"),
        }
    }
    (cases, cleanups)
}

enum Cleanup {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Redis(oidc_bff_tokens::store::RedisStore),
    Postgres(oidc_bff_tokens::store::PostgresStore),
}

/// Waits (up to 10 s) until `store` answers a fresh session from its cache:
/// two loads in a row of a session written by another instance, the second
/// faster than a round trip could be.
async fn warm(store: &Arc<dyn SessionStore>, id: &SessionId) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        store.load(id).await.expect("load").expect("present");
        let t = Instant::now();
        store.load(id).await.expect("load").expect("present");
        if t.elapsed() < Duration::from_micros(20) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("warning: the read cache did not come up");
}

fn store_cache(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let keys = KeyRing::generate("bench");
    let now = SystemClock.now_unix();
    let (cases, cleanups) = rt.block_on(cases(&keys));

    let mut load = c.benchmark_group("store_load");
    load.measurement_time(Duration::from_secs(3));
    load.warm_up_time(Duration::from_millis(500));
    for case in &cases {
        let id = SessionId::generate();
        rt.block_on(async {
            case.store.create(&id, record(now)).await.expect("create");
            if case.other.is_some() {
                warm(&case.store, &id).await;
            }
        });
        load.bench_function(case.name.as_str(), |b| {
            b.to_async(&rt)
                .iter(|| async { case.store.load(&id).await.expect("load").expect("present") })
        });
    }
    load.finish();

    // From the delete returning on instance A to instance B refusing the
    // session: what a logout takes to reach every instance.
    let mut travel = c.benchmark_group("invalidation_travel");
    travel.measurement_time(Duration::from_secs(3));
    travel.warm_up_time(Duration::from_millis(300));
    travel.sample_size(20);
    for case in &cases {
        let Some(other) = &case.other else { continue };
        travel.bench_function(case.name.as_str(), |b| {
            b.to_async(&rt).iter_custom(|iterations| {
                let (a, other) = (case.store.clone(), other.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let id = SessionId::generate();
                        a.create(&id, record(now)).await.expect("create");
                        warm(&other, &id).await;
                        a.delete(&id).await.expect("delete");
                        let started = Instant::now();
                        while other.load(&id).await.expect("load").is_some() {
                            tokio::task::yield_now().await;
                        }
                        total += started.elapsed();
                    }
                    total
                }
            })
        });
    }
    travel.finish();

    rt.block_on(async {
        for cleanup in cleanups {
            match cleanup {
                Cleanup::Dir(_) => {}
                Cleanup::Redis(s) => {
                    let _ = s.drop_all().await;
                }
                Cleanup::Postgres(s) => {
                    let _ = s.drop_tables().await;
                }
            }
        }
    });
}

criterion_group!(benches, store_cache);
criterion_main!(benches);
