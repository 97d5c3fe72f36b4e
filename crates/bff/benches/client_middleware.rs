#![allow(missing_docs)]
//! What a managed client adds to a request when the token is already valid.
//!
//! Run with `cargo bench -p oidc-bff --bench client_middleware`.
//!
//! * `middleware/*`: the managed client's own work — resolving the URL below
//!   the base URL, binding the request to the user, finding the token (in the
//!   loaded session, in the store, or in the client-credentials cache),
//!   keeping a replayable copy for the 401 retry and setting the header. The
//!   request ends in a terminal middleware that answers 200 at once, so no
//!   network is involved; `baseline` is the same request through a
//!   `reqwest-middleware` client with only that terminal. The overhead is
//!   `middleware/* - middleware/baseline`.
//! * `loopback/*`: a full round trip to an API on 127.0.0.1, by plain
//!   `reqwest` with the token set by hand and by the managed client, for
//!   scale (the difference drowns in the round trip's noise).
//!
//! A dev IdP runs only to issue the one client-credentials token before the
//! measurements start; the measured loops make no call to it.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Extensions;
use oidc_bff::client::{BearerTokenExt as _, ClientRegistration};
use oidc_bff::tokens::store::{MemoryStore, SessionStore};
use oidc_bff::tokens::{
    AccessToken, Clock, IdToken, RefreshToken, SessionId, SessionRecord, SystemClock, UserTokens,
};
use oidc_bff::{Bff, BffSession, OidcConfig};
use reqwest_middleware::{Next, Result as MwResult};

/// The terminal: answers 200 without sending anything.
fn canned<'a>(
    _request: reqwest::Request,
    _extensions: &'a mut Extensions,
    _next: Next<'a>,
) -> futures_util::future::BoxFuture<'a, MwResult<reqwest::Response>> {
    Box::pin(async { Ok(reqwest::Response::from(http::Response::new(""))) })
}

fn record(now: u64) -> SessionRecord {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
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

async fn start_api() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn client_middleware(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let idp = rt
        .block_on(
            oidc_bff_dev_idp::DevIdp::builder()
                .access_token_lifetime(Duration::from_secs(3600))
                .start(),
        )
        .expect("dev idp");
    let api = rt.block_on(start_api());
    let now = SystemClock.now_unix();
    let store = MemoryStore::new();
    // Many sessions, so the lookup is not a one-entry map.
    for _ in 0..10_000 {
        rt.block_on(store.create(&SessionId::generate(), record(now)))
            .expect("create");
    }
    let id = SessionId::generate();
    rt.block_on(store.create(&id, record(now))).expect("create");

    let nowhere = "http://127.0.0.1:9/v1/";
    let no_proxy = |http: reqwest::ClientBuilder| http.no_proxy();
    let bff = Bff::builder(
        OidcConfig::builder(idp.issuer(), "bff")
            .client_secret("secret")
            .build()
            .expect("config"),
    )
    .public_url("http://127.0.0.1:3000")
    .store(Arc::new(store.clone()))
    .api_client(ClientRegistration::user("user", nowhere).middleware(canned))
    .api_client(ClientRegistration::client("client", nowhere).middleware(canned))
    .api_client(ClientRegistration::user("loopback", format!("{api}/v1/")).configure(no_proxy))
    .build()
    .expect("bff");

    let session = rt
        .block_on(BffSession::load(&bff, id.clone()))
        .expect("load")
        .expect("session");
    let in_request = oidc_bff::client::ApiClients::for_session(&session)
        .get("user")
        .expect("client");
    let by_id = bff.api_clients_for(id.clone()).get("user").expect("client");
    let client_token = bff.api_clients().get("client").expect("client");
    // Issue the client token now: the loop below must find it cached.
    rt.block_on(client_token.access_token())
        .expect("client token");
    let baseline = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(canned)
        .build();
    let baseline_url = format!("{nowhere}data");

    let mut group = c.benchmark_group("middleware");
    group.bench_function("baseline", |b| {
        b.to_async(&rt)
            .iter(|| async { baseline.get(&baseline_url).send().await.expect("send") })
    });
    group.bench_function("user_token_session_loaded", |b| {
        b.to_async(&rt)
            .iter(|| async { in_request.get("data").send().await.expect("send") })
    });
    group.bench_function("user_token_store_read", |b| {
        b.to_async(&rt)
            .iter(|| async { by_id.get("data").send().await.expect("send") })
    });
    group.bench_function("client_token_cached", |b| {
        b.to_async(&rt)
            .iter(|| async { client_token.get("data").send().await.expect("send") })
    });
    group.finish();

    let plain = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let token = session.record().tokens.access_token.clone();
    let loopback = oidc_bff::client::ApiClients::for_session(&session)
        .get("loopback")
        .expect("client");
    let plain_url = format!("{api}/v1/data");
    let mut group = c.benchmark_group("loopback");
    group.bench_function("plain_reqwest", |b| {
        b.to_async(&rt).iter(|| async {
            let response = plain
                .get(&plain_url)
                .bearer_token(&token)
                .send()
                .await
                .expect("send");
            response.bytes().await.expect("body")
        })
    });
    group.bench_function("managed_client", |b| {
        b.to_async(&rt).iter(|| async {
            let response = loopback.get("data").send().await.expect("send");
            response.bytes().await.expect("body")
        })
    });
    group.finish();
    assert_eq!(
        idp.counters().client_credentials_grants,
        1,
        "the measured loops made no token request"
    );
}

criterion_group!(benches, client_middleware);
criterion_main!(benches);
