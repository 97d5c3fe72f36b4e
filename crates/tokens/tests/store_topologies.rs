//! The Redis store on the topologies operators run, and TLS to the stores,
//! on servers this test binary starts on loopback (tests/common/servers.rs):
//!
//! * the read cache's invalidation channel is live on Sentinel and Cluster,
//!   and another instance's write reaches it;
//! * a Sentinel failover during a refresh storm loses no session and spends
//!   no refresh token twice;
//! * an unverifiable certificate (another CA, another host name) is refused
//!   by the Redis and the PostgreSQL store with an error that says so.
//!
//! The store suite itself runs on the same kinds of servers
//! (`store_suite.rs`, modules `redis_sentinel`, `redis_cluster`,
//! `redis_tls`, `postgres_tls`).
//!
//! `cargo test -p oidc-bff-tokens --all-features --test store_topologies`
#![cfg(all(feature = "redis", feature = "postgres"))]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::servers::{self, Sentinel, shared};
use common::stores::{Backend, Tuning, backend_url, random_suffix, redis_at, unavailable};
use oidc_bff_tokens::store::{KeyRing, PostgresStore, RedisStore};
use oidc_bff_tokens::{
    Clock, ManualClock, OidcConfig, SessionId, SessionStore, StoreError, TokenEngine,
    UserTokenRequest,
};

/// Waits (at most 10 s) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn record(clock: &ManualClock, sub: &str) -> oidc_bff_tokens::SessionRecord {
    let now = clock.now_unix();
    oidc_bff_tokens::SessionRecord {
        sub: sub.into(),
        sid: Some(format!("sid-{sub}")),
        claims: serde_json::Map::new(),
        tokens: oidc_bff_tokens::UserTokens {
            access_token: oidc_bff_tokens::AccessToken::new("AT"),
            expires_at: now + 300,
            token_type: "Bearer".into(),
            refresh_token: Some(oidc_bff_tokens::RefreshToken::new("RT")),
            id_token: None,
            scope: None,
            refreshed_at: None,
            refresh_count: 0,
            issued_at: Some(now),
        },
        resource_tokens: Default::default(),
        created_at: now,
        expires_at: now + 3600,
        last_active: now,
        logout_id: format!("logout-{sub}"),
        user_agent: None,
        dpop_key: None,
    }
}

/// Two instances on `backend`: the channel comes up on both, B caches a
/// session, A's write reaches B's cache (B then answers the new version
/// without asking).
async fn read_cache_follows_writes(backend: Backend) {
    let Ok(url) = backend_url(backend) else {
        return;
    };
    let clock = ManualClock::starting_now();
    let keys = KeyRing::generate("k");
    let prefix = format!("oidc-bff-test:{}:", random_suffix());
    let tuning = Tuning::default();
    let a = redis_at(&url, &prefix, keys.clone(), &clock, &tuning)
        .await
        .expect("instance A");
    let b = redis_at(&url, &prefix, keys, &clock, &tuning)
        .await
        .expect("instance B");
    eventually("both channels live", async || {
        a.read_cache_live() && b.read_cache_live()
    })
    .await;
    let id = SessionId::generate();
    let sub = random_suffix();
    a.create(&id, record(&clock, &sub)).await.unwrap();
    assert_eq!(b.load(&id).await.unwrap().unwrap().version, 1);
    assert_eq!(b.cached_version(&id), Some(1));
    let mut changed = record(&clock, &sub);
    changed.tokens.refresh_count = 1;
    a.update(&id, changed, 1).await.unwrap();
    eventually("B's cache hears of A's write", async || {
        b.cached_version(&id) != Some(1)
    })
    .await;
    assert_eq!(b.load(&id).await.unwrap().unwrap().version, 2);
    assert_eq!(b.find_by_sub(&sub).await.unwrap(), vec![id.clone()]);
    a.delete(&id).await.unwrap();
    eventually("B's cache hears of the delete", async || {
        b.load(&id).await.unwrap().is_none()
    })
    .await;
    assert!(b.find_by_sub(&sub).await.unwrap().is_empty());
    a.drop_all().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_cache_follows_writes_on_sentinel() {
    read_cache_follows_writes(Backend::RedisSentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_cache_follows_writes_on_cluster() {
    read_cache_follows_writes(Backend::RedisCluster).await;
}

/// Three instances on a Sentinel set-up of their own; the provider rotates
/// refresh tokens and reports a reuse. A `SENTINEL FAILOVER` lands in the
/// middle of refresh storms: callers may get a transient error (503) while
/// the primary moves, but the session survives, each expiry is refreshed
/// once, and no refresh token is ever presented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_during_a_refresh_storm() {
    let sentinel = match Sentinel::start() {
        Ok(s) => s,
        Err(err) => return unavailable("Redis Sentinel", &err),
    };
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    let keys = KeyRing::generate("k");
    let prefix = format!("oidc-bff-test:{}:", random_suffix());
    let mut instances = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::builder(sentinel.url())
            .key_prefix(&prefix)
            .encryption(keys.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .await
            .expect("store on Sentinel");
        let config = OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .timeouts(Duration::from_secs(2), Duration::from_secs(10))
            .build()
            .unwrap();
        instances.push(
            TokenEngine::builder(config)
                .store(Arc::new(store))
                .clock(Arc::new(clock.clone()))
                .build()
                .unwrap(),
        );
    }
    let id = common::sign_in(&instances[0]).await;
    let first_primary = sentinel.primary_port().expect("a primary");

    let mut failed_over = false;
    let mut rounds = 0;
    let mut transient = 0;
    // Storms until the failover has happened and one more full round.
    while rounds < 12 {
        rounds += 1;
        clock.advance(Duration::from_secs(400));
        let calls = (0..60).map(|i| {
            let engine = instances[i % 3].clone();
            let id = id.clone();
            tokio::spawn(async move {
                engine
                    .user_access_token(&id, None, &UserTokenRequest::default())
                    .await
            })
        });
        let storm = tokio::spawn(futures_util::future::join_all(calls));
        if !failed_over {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let out = tokio::task::spawn_blocking({
                let s = Sentinel {
                    primary_name: sentinel.primary_name.clone(),
                    sentinel_ports: sentinel.sentinel_ports.clone(),
                    data_ports: sentinel.data_ports,
                };
                move || s.failover()
            })
            .await
            .unwrap();
            assert!(out.as_ref().is_ok_and(|o| o.contains("OK")), "{out:?}");
            failed_over = true;
        }
        let mut tokens = HashSet::new();
        for result in storm.await.unwrap() {
            match result.unwrap() {
                Ok(token) => {
                    tokens.insert(token.secret().to_owned());
                }
                Err(err) => {
                    assert!(err.is_transient(), "only transient errors: {err:?}");
                    transient += 1;
                }
            }
        }
        assert!(tokens.len() <= 1, "one token per expiry: {}", tokens.len());
        let counters = idp.counters();
        assert_eq!(
            counters.refresh_reuse_detected, 0,
            "a refresh token was presented twice (round {rounds})"
        );
        let moved = sentinel.primary_port().is_some_and(|p| p != first_primary);
        if moved && tokens.len() == 1 && rounds >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_ne!(
        sentinel.primary_port(),
        Some(first_primary),
        "the failover happened"
    );
    eprintln!("{rounds} storms, {transient} transient errors during the failover");
    // The session lives on the new primary with the newest tokens: one
    // more expiry, one more refresh, no reuse.
    let before = idp.counters().refresh_grants;
    clock.advance(Duration::from_secs(400));
    let token = instances[1]
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .expect("the session survived the failover");
    assert!(!token.secret().is_empty());
    assert_eq!(idp.counters().refresh_grants, before + 1);
    assert_eq!(idp.counters().refresh_reuse_detected, 0);
}

/// An unverifiable certificate is refused, with an error that says TLS.
fn assert_tls_refused(what: &str, result: Result<impl Sized, StoreError>) {
    match result {
        Ok(_) => panic!("{what}: an unverifiable certificate was accepted"),
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("TLS"), "{what}: {msg}");
        }
        Err(other) => panic!("{what}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_refuses_unverifiable_certificates() {
    let Some(redis) = shared(&servers::TLS_REDIS, "TLS Redis", servers::TlsRedis::start) else {
        return;
    };
    let keys = KeyRing::generate("k");
    let connect = |url: String| {
        let keys = keys.clone();
        async move {
            RedisStore::builder(url)
                .encryption(keys)
                .operation_timeout(Duration::from_secs(2))
                .build()
                .await
        }
    };
    // The right CA: fine.
    connect(redis.url()).await.expect("verifiable");
    // Another CA.
    let other = format!(
        "rediss://127.0.0.1:{}?ca={}",
        redis.port,
        redis.pki.other_ca.display()
    );
    assert_tls_refused("another CA", connect(other).await);
    // The system's roots only.
    assert_tls_refused(
        "system roots",
        connect(format!("rediss://127.0.0.1:{}", redis.port)).await,
    );
    // The right CA, another host name (the certificate names 127.0.0.1).
    let host = format!(
        "rediss://localhost:{}?ca={}",
        redis.port,
        redis.pki.ca.display()
    );
    assert_tls_refused("another host name", connect(host).await);
    // Verification cannot be turned off.
    let insecure = format!("rediss://127.0.0.1:{}/#insecure", redis.port);
    assert!(matches!(
        connect(insecure).await,
        Err(StoreError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_refuses_unverifiable_certificates() {
    let Some(pg) = shared(
        &servers::TLS_POSTGRES,
        "TLS PostgreSQL",
        servers::TlsPostgres::start,
    ) else {
        return;
    };
    let keys = KeyRing::generate("k");
    let connect = |url: String| {
        let keys = keys.clone();
        async move {
            PostgresStore::builder(url)
                .table_prefix(format!("t_{}_", random_suffix()))
                .encryption(keys)
                .operation_timeout(Duration::from_secs(3))
                .build()
                .await
        }
    };
    let store = connect(pg.url()).await.expect("verifiable");
    store.drop_tables().await.unwrap();
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    assert_tls_refused(
        "another CA",
        connect(format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            pg.pki.other_ca.display()
        ))
        .await,
    );
    assert_tls_refused(
        "bundled roots",
        connect(format!("{base}?sslmode=verify-full")).await,
    );
    assert_tls_refused(
        "another host name",
        connect(format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            pg.port,
            pg.pki.ca.display()
        ))
        .await,
    );
}
