//! Managed HTTP clients (named, typed, client credentials) over real HTTP:
//! a browser signs in at a BFF in front of the dev IdP, and the BFF's
//! handlers call a real test API that introspects every token it gets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use common::api::{TestApi, claims};
use common::harness::Browser;
use futures_util::StreamExt as _;
use http::StatusCode;
use oidc_bff::client::{Api, ApiClients, ClientRegistration, ManagedClient, TypedClient};
use oidc_bff::{Bff, BffBuilder, BffError, OidcConfig, TokenPolicy};
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use oidc_bff_tokens::{ManualClock, SessionId};

/// The typed client of the issue: a struct around a managed client.
struct MyTypedApiClient(ManagedClient);

impl TypedClient for MyTypedApiClient {
    fn from_managed(client: ManagedClient) -> Self {
        Self(client)
    }
}

impl MyTypedApiClient {
    async fn get_data(&self) -> Result<String, BffError> {
        Ok(self
            .0
            .get("data")
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }
}

struct Setup {
    idp: RunningIdp,
    api: TestApi,
    bff: Bff,
    url: String,
    clock: ManualClock,
}

impl Setup {
    fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    async fn signed_in(&self) -> Browser {
        let browser = self.browser();
        browser.sign_in("/").await;
        browser
    }
}

fn session_id(browser: &Browser) -> SessionId {
    SessionId::parse(&browser.cookie("__Host-bff").expect("session cookie")).expect("session id")
}

/// The standard clients: a user client, a typed client, two client-token
/// clients with different scopes, user-or-client clients with and without
/// fallback, and a user client without retry.
fn register(builder: BffBuilder, api: &str) -> BffBuilder {
    let base = format!("{api}/v1/");
    let no_proxy = |http: reqwest::ClientBuilder| http.no_proxy();
    builder
        .api_client(ClientRegistration::user("apiClient", &base).configure(no_proxy))
        .typed_client::<MyTypedApiClient>(
            ClientRegistration::user("typed", &base).configure(no_proxy),
        )
        .api_client(
            ClientRegistration::client("m2m", &base)
                .scope("catalog.read")
                .configure(no_proxy),
        )
        .api_client(
            ClientRegistration::client("m2m-write", &base)
                .scope("catalog.write")
                .configure(no_proxy),
        )
        .api_client(
            ClientRegistration::client("m2m-resource", &base)
                .resource("urn:catalog")
                .configure(no_proxy),
        )
        .api_client(ClientRegistration::user_or_client("either", &base).configure(no_proxy))
        .api_client(
            ClientRegistration::user_or_client("either-fallback", &base)
                .client_token_on_user_failure(true)
                .configure(no_proxy),
        )
        .api_client(
            ClientRegistration::user("no-retry", &base)
                .retry_on_unauthorized(false)
                .configure(no_proxy),
        )
        .api_client(
            ClientRegistration::new("maybe", &base, TokenPolicy::UserOrNone).configure(no_proxy),
        )
        .api_client(ClientRegistration::new("open", &base, TokenPolicy::None).configure(no_proxy))
}

async fn setup() -> Setup {
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .start()
        .await
        .expect("dev idp");
    let api = TestApi::start(&idp.issuer()).await;
    let clock = ManualClock::starting_now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .refresh_margin(Duration::from_secs(60))
        .timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .build()
        .expect("config");
    let bff = register(
        Bff::builder(config)
            .public_url(&url)
            .clock(Arc::new(clock.clone())),
        &api.url,
    )
    .build()
    .expect("bff");
    let app = Router::new()
        .route("/api/named/{client}", get(named))
        .route("/api/typed", get(typed))
        .route("/api/stream", get(streamed_post))
        .route("/api/buffered", get(buffered_post))
        .route("/api/buffered-no-opt-in", get(buffered_post_no_opt_in))
        .route("/api/escape", get(escape))
        .layer(bff.csrf_layer())
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Setup {
        idp,
        api,
        bff,
        url,
        clock,
    }
}

/// GETs `remoteApi` with the named client and passes on the API's answer.
async fn named(
    clients: ApiClients,
    Path(client): Path<String>,
) -> Result<(StatusCode, String), BffError> {
    let response = clients.get(&client)?.get("remoteApi").send().await?;
    Ok((response.status(), response.text().await?))
}

async fn typed(Api(api): Api<MyTypedApiClient>) -> Result<String, BffError> {
    api.get_data().await
}

/// POSTs a streamed (not replayable) body.
async fn streamed_post(clients: ApiClients) -> Result<(StatusCode, String), BffError> {
    let chunks = futures_util::stream::iter(["one ", "two"])
        .map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::from_static(chunk.as_bytes())));
    let response = clients
        .get("apiClient")?
        .post("upload")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

/// POSTs a buffered (replayable) JSON body; the caller opts in to the retry
/// after a 401 (a POST is not idempotent).
async fn buffered_post(clients: ApiClients) -> Result<(StatusCode, String), BffError> {
    let response = clients
        .get("apiClient")?
        .post("items")
        .json(&serde_json::json!({"name": "widget"}))
        .with_extension(oidc_bff::client::ReplayOnUnauthorized)
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

/// POSTs a buffered JSON body without opting in to a retry.
async fn buffered_post_no_opt_in(clients: ApiClients) -> Result<(StatusCode, String), BffError> {
    let response = clients
        .get("apiClient")?
        .post("items")
        .json(&serde_json::json!({"name": "widget"}))
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

/// Tries to send the token to another origin.
async fn escape(clients: ApiClients) -> Result<(StatusCode, String), BffError> {
    let response = clients
        .get("apiClient")?
        .get("http://127.0.0.1:9/steal")
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

fn sub(token: &str) -> String {
    claims(token)["sub"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_named_client_sends_the_current_users_token() {
    let s = setup().await;
    let browser = s.signed_in().await;
    let response = browser.api("/api/named/apiClient").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "hello alice from /v1/remoteApi"
    );

    let seen = s.api.seen();
    assert_eq!(seen.len(), 1);
    let session = s
        .bff
        .engine()
        .load_session(&session_id(&browser))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen[0].token.as_deref(),
        Some(session.record.tokens.access_token.secret()),
        "the session's current token"
    );
    assert_eq!(
        s.idp.counters().refresh_attempts,
        0,
        "a valid token is not refreshed"
    );
}

#[tokio::test]
async fn a_typed_client_sends_the_current_users_token() {
    let s = setup().await;
    let browser = s.signed_in().await;
    let response = browser.api("/api/typed").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello alice from /v1/data");
    let session = s
        .bff
        .engine()
        .load_session(&session_id(&browser))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.api.last_token(),
        session.record.tokens.access_token.secret()
    );
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_before_the_call() {
    let s = setup().await;
    let browser = s.signed_in().await;
    assert_eq!(browser.api("/api/named/apiClient").await.status(), 200);
    let first = s.api.last_token();

    // 300 s lifetime: at +301 s the token has expired and is renewed first.
    // (Past the renewal point but still valid, the call would get the old
    // token at once and the renewal would run behind it: see
    // tests/user_token.rs.)
    s.advance(301);
    assert_eq!(browser.api("/api/typed").await.status(), 200);
    let second = s.api.last_token();
    assert_ne!(second, first, "the API got a renewed token");
    assert_eq!(s.idp.counters().refresh_grants, 1);
    let session = s
        .bff
        .engine()
        .load_session(&session_id(&browser))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.record.tokens.access_token.secret(), second);

    // And the renewed token is then used as is.
    assert_eq!(browser.api("/api/named/apiClient").await.status(), 200);
    assert_eq!(s.api.last_token(), second);
    assert_eq!(s.idp.counters().refresh_grants, 1);
}

#[tokio::test]
async fn anonymous_callers_get_401_and_nothing_is_sent() {
    let s = setup().await;
    let browser = s.browser();
    for path in ["/api/named/apiClient", "/api/typed", "/api/stream"] {
        let response = browser.api(path).await;
        assert_eq!(response.status(), 401, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthenticated");
    }
    assert!(s.api.seen().is_empty(), "no request without a token");
}

#[tokio::test]
async fn a_rejected_refresh_gives_401_and_ends_the_session() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.idp.faults().set_refresh_error(Some("invalid_grant"));
    s.advance(400); // expired
    let response = browser.api("/api/named/apiClient").await;
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    assert!(!body.contains("eyJ"), "no token in the error body: {body}");
    assert!(s.api.seen().is_empty());
    assert!(
        s.bff
            .engine()
            .load_session(&session_id(&browser))
            .await
            .unwrap()
            .is_none(),
        "the dead session is gone"
    );
    // The browser is anonymous now: a user-or-client client sends the client's token.
    assert_eq!(browser.api("/api/named/either").await.status(), 200);
    assert_eq!(sub(&s.api.last_token()), "bff");
}

#[tokio::test]
async fn a_provider_outage_with_an_expired_token_gives_503() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.idp.faults().set_token_status(Some(503));
    s.advance(400);
    let response = browser.api("/api/named/apiClient").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(s.api.seen().is_empty());
}

#[tokio::test]
async fn a_401_from_the_api_renews_the_token_once_and_retries() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.api.reject_next(1);
    let response = browser.api("/api/named/apiClient").await;
    assert_eq!(response.status(), 200);
    let tokens = s.api.tokens();
    assert_eq!(tokens.len(), 2, "one retry");
    assert_ne!(tokens[0], tokens[1], "the retry carried a renewed token");
    assert_eq!(s.idp.counters().refresh_grants, 1, "one forced renewal");
    let session = s
        .bff
        .engine()
        .load_session(&session_id(&browser))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Some(session.record.tokens.access_token.secret()),
        tokens[1].as_deref()
    );
}

#[tokio::test]
async fn a_buffered_body_is_replayed_on_401() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.api.reject_next(1);
    assert_eq!(browser.api("/api/buffered").await.status(), 200);
    let seen = s.api.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, br#"{"name":"widget"}"#);
    assert_eq!(seen[1].body, seen[0].body, "the same body, sent again");
    assert_eq!(seen[1].method, http::Method::POST);
}

/// Issue 15, defect 9: a request that is not idempotent is not sent twice
/// unless its caller opted in.
#[tokio::test]
async fn a_post_is_not_retried_on_401_without_the_callers_consent() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.api.reject_next(1);
    let response = browser.api("/api/buffered-no-opt-in").await;
    assert_eq!(response.status(), 401, "the API's answer is passed on");
    let seen = s.api.seen();
    assert_eq!(seen.len(), 1, "sent once");
    assert_eq!(seen[0].method, http::Method::POST);
    assert_eq!(s.idp.counters().refresh_attempts, 0, "and no renewal");
}

#[tokio::test]
async fn a_streamed_body_is_never_sent_twice() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.api.reject_next(1);
    let response = browser.api("/api/stream").await;
    assert_eq!(
        response.status(),
        401,
        "the handler passes the API's answer on"
    );
    assert_eq!(response.text().await.unwrap(), "unauthorized");
    let seen = s.api.seen();
    assert_eq!(seen.len(), 1, "no retry of a streamed body");
    assert_eq!(seen[0].body, b"one two");
    assert_eq!(s.idp.counters().refresh_attempts, 0, "and no renewal");
}

#[tokio::test]
async fn never_more_than_one_retry() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.api.reject_next(10);
    let response = browser.api("/api/named/apiClient").await;
    assert_eq!(response.text().await.unwrap(), "unauthorized");
    assert_eq!(s.api.seen().len(), 2);
    assert_eq!(s.idp.counters().refresh_grants, 1);
}

#[tokio::test]
async fn retry_can_be_turned_off() {
    let s = setup().await;
    let browser = s.signed_in().await;
    s.api.reject_next(1);
    let response = browser.api("/api/named/no-retry").await;
    assert_eq!(response.text().await.unwrap(), "unauthorized");
    assert_eq!(s.api.seen().len(), 1);
    assert_eq!(s.idp.counters().refresh_attempts, 0);
}

#[tokio::test]
async fn client_tokens_are_fetched_once_for_100_concurrent_calls() {
    let s = setup().await;
    // Keep the token endpoint busy so the calls pile up on the first request.
    s.idp
        .faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    let browser = s.browser(); // anonymous: client tokens need no user
    let calls = (0..100).map(|_| {
        let browser = browser.clone();
        tokio::spawn(async move { browser.api("/api/named/m2m").await.status() })
    });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(s.idp.counters().client_credentials_grants, 1);
    let tokens = s.api.tokens();
    assert_eq!(tokens.len(), 100);
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    let token = tokens[0].clone().unwrap();
    assert_eq!(sub(&token), "bff");
    assert_eq!(claims(&token)["scope"], "catalog.read");

    // After expiry: a new token, fetched once.
    s.idp.faults().clear();
    s.advance(301);
    for _ in 0..3 {
        assert_eq!(browser.api("/api/named/m2m").await.status(), 200);
    }
    assert_eq!(s.idp.counters().client_credentials_grants, 2);
    assert_ne!(s.api.last_token(), token);
}

#[tokio::test]
async fn client_tokens_are_separate_per_scope_and_resource() {
    let s = setup().await;
    let browser = s.browser();
    let mut tokens = Vec::new();
    for client in ["m2m", "m2m-write", "m2m-resource", "m2m", "m2m-write"] {
        assert_eq!(
            browser.api(&format!("/api/named/{client}")).await.status(),
            200
        );
        tokens.push(s.api.last_token());
    }
    assert_eq!(s.idp.counters().client_credentials_grants, 3);
    assert_eq!(claims(&tokens[0])["scope"], "catalog.read");
    assert_eq!(claims(&tokens[1])["scope"], "catalog.write");
    assert_eq!(claims(&tokens[2])["aud"], "urn:catalog");
    assert_ne!(tokens[0], tokens[1]);
    assert_ne!(tokens[0], tokens[2]);
    assert_eq!(tokens[3], tokens[0]);
    assert_eq!(tokens[4], tokens[1]);
}

#[tokio::test]
async fn a_client_token_refused_by_the_api_is_renewed_once() {
    let s = setup().await;
    let browser = s.browser();
    s.api.reject_next(1);
    assert_eq!(browser.api("/api/named/m2m").await.status(), 200);
    let tokens = s.api.tokens();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(s.idp.counters().client_credentials_grants, 2);
}

#[tokio::test]
async fn user_or_client_uses_the_client_token_only_for_anonymous_users() {
    let s = setup().await;
    let anonymous = s.browser();
    assert_eq!(anonymous.api("/api/named/either").await.status(), 200);
    assert_eq!(
        sub(&s.api.last_token()),
        "bff",
        "anonymous: the client's token"
    );

    let browser = s.signed_in().await;
    assert_eq!(browser.api("/api/named/either").await.status(), 200);
    assert_eq!(
        sub(&s.api.last_token()),
        "alice",
        "signed in: the user's token"
    );

    // The user's token cannot be had (provider down, token expired):
    s.idp.faults().set_token_status(Some(503));
    s.advance(400);
    let before = s.api.seen().len();
    assert_eq!(
        browser.api("/api/named/either").await.status(),
        503,
        "no silent fallback"
    );
    assert_eq!(s.api.seen().len(), before);

    // ...unless the client is configured to fall back (with a cached client token).
    s.idp.faults().clear();
    s.bff
        .engine()
        .client_access_token(&Default::default())
        .await
        .unwrap();
    s.idp.faults().set_token_status(Some(503));
    assert_eq!(
        browser.api("/api/named/either-fallback").await.status(),
        200
    );
    assert_eq!(sub(&s.api.last_token()), "bff");
}

#[tokio::test]
async fn background_jobs_use_the_same_clients() {
    let s = setup().await;
    let browser = s.signed_in().await;
    let id = session_id(&browser);

    // For a session, by id: the user's token.
    let api = s.bff.api_clients_for(id.clone()).get("apiClient").unwrap();
    let response = api.get("job").send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "hello alice from /v1/job");

    // For nobody: client tokens work, user tokens are 401.
    let m2m = s.bff.api_clients().get("m2m").unwrap();
    assert_eq!(m2m.get("sync").send().await.unwrap().status(), 200);
    assert_eq!(sub(&s.api.last_token()), "bff");
    let err = s
        .bff
        .api_clients()
        .get("apiClient")
        .unwrap()
        .get("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(BffError::from(err).status(), 401);

    // A typed client, and the token a client would send.
    let typed: MyTypedApiClient = s.bff.api_clients_for(id.clone()).typed().unwrap();
    assert_eq!(typed.get_data().await.unwrap(), "hello alice from /v1/data");
    let token = api.access_token().await.unwrap();
    assert_eq!(s.api.last_token(), token.secret());

    // After logout the session's clients answer 401.
    s.bff.engine().logout(&id, None).await.unwrap();
    let err = api.get("job").send().await.unwrap_err();
    assert_eq!(BffError::from(err).status(), 401);
}

#[tokio::test]
async fn misuse_is_a_clear_error_not_a_panic() {
    let s = setup().await;
    let browser = s.signed_in().await;

    let response = browser.api("/api/named/nope").await;
    assert_eq!(response.status(), 500);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );

    let response = browser.api("/api/escape").await;
    assert_eq!(
        response.status(),
        400,
        "the token never leaves the base URL"
    );
    assert!(s.api.seen().is_empty());

    let api = s.bff.api_clients().get("apiClient").unwrap();
    assert!(api.url("../../outside").is_err());
    assert!(
        api.url("//evil.example/x")
            .is_ok_and(|u| u.host_str() == Some("127.0.0.1"))
    );
    assert_eq!(api.url("/a/b?c=d").unwrap().path(), "/v1/a/b");
    assert!(s.bff.api_clients().typed::<MyTypedApiClient>().is_ok());

    // Duplicate names and bad base URLs are refused at start-up.
    let config = || {
        OidcConfig::builder(s.idp.url().as_str(), "bff")
            .client_secret("secret")
            .build()
            .unwrap()
    };
    let twice = Bff::builder(config())
        .public_url("http://127.0.0.1:1")
        .api_client(ClientRegistration::user("a", "https://api.example.com/"))
        .api_client(ClientRegistration::client("a", "https://api.example.com/"))
        .build();
    assert!(matches!(twice, Err(BffError::Config(_))));
    let plain_http = Bff::builder(config())
        .public_url("http://127.0.0.1:1")
        .api_client(ClientRegistration::user("a", "http://api.example.com/"))
        .build();
    assert!(matches!(plain_http, Err(BffError::Config(_))));
}

#[tokio::test]
async fn debug_output_never_shows_tokens_or_session_ids() {
    let s = setup().await;
    let browser = s.signed_in().await;
    let id = session_id(&browser);
    let clients = s.bff.api_clients_for(id.clone());
    let api = clients.get("apiClient").unwrap();
    api.get("x").send().await.unwrap();
    let token = s.api.last_token();
    let printed = format!("{clients:?} {api:?} {:?}", api.get("y"));
    assert!(!printed.contains(&token));
    assert!(!printed.contains(id.as_str()));
}

#[tokio::test]
async fn user_or_none_and_none_clients_send_what_their_policy_calls_for() {
    let s = setup().await;
    // Anonymous: both go out without a token (and the API refuses them).
    let anonymous = s.browser();
    for client in ["maybe", "open"] {
        let response = anonymous.api(&format!("/api/named/{client}")).await;
        assert_eq!(response.status(), 401, "{client}: the API's own answer");
    }
    assert_eq!(s.api.tokens(), vec![None, None]);

    // Signed in: `maybe` sends the user's token, `open` still none.
    let browser = s.signed_in().await;
    let response = browser.api("/api/named/maybe").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "hello alice from /v1/remoteApi"
    );
    let response = browser.api("/api/named/open").await;
    assert_eq!(response.status(), 401);
    let session = s
        .bff
        .engine()
        .load_session(&session_id(&browser))
        .await
        .unwrap()
        .unwrap();
    let current = session.record.tokens.access_token.secret().to_owned();
    assert_eq!(s.api.tokens()[2..], [Some(current), None]);
    assert_eq!(
        s.idp.counters().refresh_attempts,
        0,
        "no token to renew after the 401 of a request sent without one"
    );
}
