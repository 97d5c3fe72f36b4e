#![allow(missing_docs)]
//! The hot path (a valid token in a memory-store session, read from the
//! store) run a fixed number of times, for instruction counts under
//! callgrind, which are repeatable on a busy machine where wall time is not:
//!
//! ```sh
//! cargo bench -p oidc-bff-tokens --bench hot_path_instructions --no-run
//! BIN=$(ls -t target/release/deps/hot_path_instructions-* | grep -v '\.d$' | head -1)
//! for n in 0 100000; do
//!   for m in 0 1; do
//!     OIDC_BFF_BENCH_METRICS=$m ITERATIONS=$n valgrind --tool=callgrind \
//!       --callgrind-out-file=/dev/null "$BIN" 2>&1 | grep 'Collected'
//!   done
//! done
//! ```
//!
//! (instructions at 100,000 − instructions at 0) / 100,000 is the cost of
//! one call; `OIDC_BFF_BENCH_METRICS=1` installs the Prometheus recorder
//! first, as the gateway does with `[metrics] listen`.

use std::sync::Arc;
use std::time::Duration;

use oidc_bff_tokens::store::{MemoryStore, SessionStore};
use oidc_bff_tokens::{
    AccessToken, Clock, IdToken, OidcConfig, RefreshToken, SessionId, SessionRecord, SystemClock,
    TokenEngine, UserTokenRequest, UserTokens,
};

fn record(now: u64) -> SessionRecord {
    SessionRecord {
        sub: "alice".into(),
        sid: Some("sid-1".into()),
        claims: serde_json::Map::new(),
        tokens: UserTokens {
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

fn main() {
    // `cargo bench` passes `--bench`; a smoke run (`cargo test --benches`)
    // runs a few iterations.
    let iterations: u64 = std::env::var("ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    if std::env::var("OIDC_BFF_BENCH_METRICS").as_deref() == Ok("1") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("install the recorder");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let now = SystemClock.now_unix();
    let store = MemoryStore::new();
    let config = OidcConfig::builder("http://127.0.0.1:9", "bff")
        .client_secret("secret")
        .timeouts(Duration::from_millis(50), Duration::from_millis(50))
        .build()
        .expect("config");
    let engine = TokenEngine::builder(config)
        .store(Arc::new(store.clone()))
        .build()
        .expect("engine");
    let id = SessionId::generate();
    rt.block_on(store.create(&id, record(now))).expect("create");
    let request = UserTokenRequest::default();
    rt.block_on(async {
        for _ in 0..iterations {
            let token = engine
                .user_access_token(&id, None, &request)
                .await
                .expect("token");
            std::hint::black_box(token);
        }
    });
}
