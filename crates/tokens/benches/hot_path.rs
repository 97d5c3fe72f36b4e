#![allow(missing_docs)]
//! The hot path: a valid access token already in the session.
//!
//! Run with `cargo bench -p oidc-bff-tokens --bench hot_path`, or with
//! `--features sqlite,redis,postgres` (or `bench/hot_path.sh`) to add the
//! persistent stores: `with_store_read_{sqlite,redis,postgres}`. Redis and
//! PostgreSQL are the machine's (`OIDC_BFF_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`; `OIDC_BFF_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`); when one is unavailable its
//! case is skipped with a notice, or fails when `CI=true`.
//! No provider is running: any network call would make the benchmark fail.
//!
//! With `OIDC_BFF_BENCH_METRICS=1` a Prometheus recorder
//! (`metrics-exporter-prometheus`, as the gateway installs it) is installed
//! before the engine is built, so every metric is recorded: compare the two
//! runs to see what recording costs. `hot_path_instructions` counts the
//! instructions of the same call under callgrind.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oidc_bff_tokens::store::{MemoryStore, SessionStore};
use oidc_bff_tokens::{
    AccessToken, Clock, IdToken, OidcConfig, RefreshToken, SessionId, SessionRecord, SystemClock,
    TokenEngine, UserTokenRequest, UserTokens,
};

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
            issued_at: Some(now),
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

/// Installs the Prometheus recorder when `OIDC_BFF_BENCH_METRICS=1`.
fn maybe_install_recorder() {
    if std::env::var("OIDC_BFF_BENCH_METRICS").as_deref() == Ok("1") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder");
        eprintln!("metrics: a Prometheus recorder is installed");
    }
}

fn hot_path(c: &mut Criterion) {
    maybe_install_recorder();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let now = SystemClock.now_unix();
    let store = MemoryStore::new();
    // Unroutable authority: a network call would fail the benchmark.
    let config = OidcConfig::builder("http://127.0.0.1:9", "bff")
        .client_secret("secret")
        .timeouts(Duration::from_millis(50), Duration::from_millis(50))
        .build()
        .expect("config");
    let client = TokenEngine::builder(config)
        .store(Arc::new(store.clone()))
        .build()
        .expect("client");
    // Many sessions, so the lookup is not a one-entry map.
    for _ in 0..10_000 {
        rt.block_on(store.create(&SessionId::generate(), record(now)))
            .expect("create");
    }
    let id = SessionId::generate();
    rt.block_on(store.create(&id, record(now))).expect("create");
    let request = UserTokenRequest::default();
    let loaded = rt
        .block_on(client.load_session(&id))
        .expect("load")
        .expect("present");

    let mut group = c.benchmark_group("user_access_token");
    group.bench_function("session_already_loaded", |b| {
        b.to_async(&rt).iter(|| async {
            client
                .user_access_token(&id, Some(&loaded), &request)
                .await
                .expect("token")
        })
    });
    group.bench_function("with_store_read", |b| {
        b.to_async(&rt).iter(|| async {
            client
                .user_access_token(&id, None, &request)
                .await
                .expect("token")
        })
    });
    #[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
    persistent::cases(&mut group, &rt, now);
    group.finish();
}

/// The same call with the session read from a persistent store each time
/// (decryption and deserialisation included).
#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
mod persistent {
    use std::sync::Arc;
    use std::time::Duration;

    use criterion::BenchmarkGroup;
    use criterion::measurement::WallTime;
    use futures_util::StreamExt as _;
    use oidc_bff_tokens::store::{KeyRing, SessionStore};
    use oidc_bff_tokens::{OidcConfig, SessionId, TokenEngine, UserTokenRequest};
    use tokio::runtime::Runtime;

    use super::record;

    /// Sessions besides the measured one (fewer in a smoke run).
    fn filler() -> usize {
        if std::env::args().any(|a| a == "--bench") {
            10_000
        } else {
            200
        }
    }

    fn suffix() -> String {
        SessionId::generate().as_str()[..10]
            .to_ascii_lowercase()
            .replace(['-', '_'], "x")
    }

    fn unavailable(what: &str, err: &dyn std::fmt::Display) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{what} is required when CI=true but could not be used: {err}");
        }
        eprintln!(
            "skipping {what}: not available here ({err}); set CI=true to make this a failure"
        );
    }

    pub(super) fn cases(group: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, now: u64) {
        let keys = KeyRing::generate("bench");
        #[cfg(feature = "sqlite")]
        {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
            match rt.block_on(
                oidc_bff_tokens::store::SqliteStore::builder(url)
                    .encryption(keys.clone())
                    .build(),
            ) {
                Ok(store) => case(group, rt, now, "sqlite", Arc::new(store)),
                Err(e) => unavailable("SQLite", &e),
            }
        }
        #[cfg(feature = "redis")]
        {
            let url = std::env::var("OIDC_BFF_TEST_REDIS")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            match rt.block_on(
                oidc_bff_tokens::store::RedisStore::builder(url)
                    .key_prefix(format!("bench-{}:", suffix()))
                    .encryption(keys.clone())
                    .build(),
            ) {
                Ok(store) => {
                    let store = Arc::new(store);
                    case(group, rt, now, "redis", store.clone());
                    let _ = rt.block_on(store.drop_all());
                }
                Err(e) => unavailable("Redis", &e),
            }
        }
        #[cfg(feature = "postgres")]
        {
            let url = std::env::var("OIDC_BFF_TEST_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            match rt.block_on(
                oidc_bff_tokens::store::PostgresStore::builder(url)
                    .table_prefix(format!("bench_{}_", suffix()))
                    .encryption(keys.clone())
                    .build(),
            ) {
                Ok(store) => {
                    let store = Arc::new(store);
                    case(group, rt, now, "postgres", store.clone());
                    let _ = rt.block_on(store.drop_tables());
                }
                Err(e) => unavailable("PostgreSQL", &e),
            }
        }
    }

    fn case(
        group: &mut BenchmarkGroup<'_, WallTime>,
        rt: &Runtime,
        now: u64,
        name: &str,
        store: Arc<dyn SessionStore>,
    ) {
        rt.block_on(
            futures_util::stream::iter(0..filler())
                .map(|_| {
                    let store = store.clone();
                    async move { store.create(&SessionId::generate(), record(now)).await }
                })
                .buffer_unordered(16)
                .for_each(|r| async move {
                    r.expect("create");
                }),
        );
        let id = SessionId::generate();
        rt.block_on(store.create(&id, record(now))).expect("create");
        let config = OidcConfig::builder("http://127.0.0.1:9", "bff")
            .client_secret("secret")
            .timeouts(Duration::from_millis(50), Duration::from_millis(50))
            .build()
            .expect("config");
        let client = TokenEngine::builder(config)
            .store(store)
            .build()
            .expect("client");
        let request = UserTokenRequest::default();
        group.bench_function(format!("with_store_read_{name}"), |b| {
            b.to_async(rt).iter(|| async {
                client
                    .user_access_token(&id, None, &request)
                    .await
                    .expect("token")
            })
        });
    }
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
