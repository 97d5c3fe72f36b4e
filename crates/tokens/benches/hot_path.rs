#![allow(missing_docs)]
//! The hot path: a valid access token already in the session.
//!
//! Run with `cargo bench -p oidc-bff-tokens --bench hot_path`.
//! No provider is running: any network call would make the benchmark fail.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use oidc_bff_tokens::store::{MemoryStore, SessionStore};
use oidc_bff_tokens::{
    AccessToken, Clock, IdToken, OidcClient, OidcConfig, RefreshToken, SessionId, SessionRecord,
    SystemClock, UserTokenRequest, UserTokens,
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
        },
        resource_tokens: Default::default(),
        created_at: now,
        expires_at: now + 8 * 3600,
        last_active: now,
        logout_id: "logout".into(),
    }
}

fn hot_path(c: &mut Criterion) {
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
    let client = OidcClient::builder(config)
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
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
