//! DPoP (RFC 9449) towards APIs over real HTTP: a BFF with DPoP on, in
//! front of the dev IdP, proxies to and calls (managed clients) a test API
//! that checks every proof for real (`oidc_bff_dev_idp::dpop::ResourceVerifier`:
//! signature, `htm`, `htu`, `iat`, `jti` replay, `ath`, `cnf.jkt` of the
//! token, nonce). Nonce challenges are retried once, never looped; the
//! browser's own `DPoP` header never reaches an API.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::harness::Browser;
use common::proxy_support::{self, echoed};
use http::{HeaderMap, Method, StatusCode, Uri};
use oidc_bff::client::{ApiClients, ClientRegistration, ReplayOnUnauthorized};
use oidc_bff::proxy::RemoteApi;
use oidc_bff::{Bff, BffError, OidcConfig, TokenPolicy};
use oidc_bff_dev_idp::dpop::ResourceVerifier;
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use oidc_bff_tokens::{Clock, ManualClock, SessionId};

/// A resource server that accepts DPoP-bound tokens only.
struct DpopApi {
    url: String,
    state: Arc<ApiState>,
}

struct ApiState {
    idp: RunningIdp,
    verifier: ResourceVerifier,
    hits: AtomicUsize,
    /// Demand a new nonce on every call (a broken API).
    always_new_nonce: AtomicBool,
    proofs: Mutex<Vec<String>>,
}

async fn start_api(idp: &RunningIdp, clock: &ManualClock) -> DpopApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let c = clock.clone();
    let state = Arc::new(ApiState {
        idp: idp.clone(),
        verifier: ResourceVerifier::new().with_clock(move || c.now_unix()),
        hits: AtomicUsize::new(0),
        always_new_nonce: AtomicBool::new(false),
        proofs: Mutex::default(),
    });
    let base = url.clone();
    let app = Router::new()
        .fallback(move |state, method, uri, headers, body| {
            api(state, base.clone(), method, uri, headers, body)
        })
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    DpopApi { url, state }
}

async fn api(
    State(state): State<Arc<ApiState>>,
    base: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    for proof in headers.get_all("dpop") {
        state
            .proofs
            .lock()
            .unwrap()
            .push(proof.to_str().unwrap_or_default().to_owned());
    }
    if state.always_new_nonce.load(Ordering::SeqCst) {
        state.verifier.rotate_nonce();
    }
    let url = format!(
        "{base}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let idp = &state.idp;
    match state
        .verifier
        .verify_request(&method, &url, &headers, |token| idp.token_jkt(token))
    {
        Ok(verified) => {
            let mut response =
                axum::Json(serde_json::json!({"jkt": verified.jkt, "path": uri.path()}))
                    .into_response();
            // Like a real server: the current nonce on successes too.
            if let Some(nonce) = state.verifier.current_nonce() {
                response
                    .headers_mut()
                    .insert("dpop-nonce", nonce.parse().unwrap());
            }
            response
        }
        Err(rejection) => rejection.into_response(),
    }
}

impl DpopApi {
    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

struct Setup {
    idp: RunningIdp,
    api: DpopApi,
    echo: proxy_support::Upstream,
    bff: Bff,
    url: String,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let clock = ManualClock::starting_now();
    let c = clock.clone();
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .clock(move || c.now_unix())
        .start()
        .await
        .expect("dev idp");
    let api = start_api(&idp, &clock).await;
    let echo = proxy_support::start_upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .dpop(true)
        .build()
        .expect("config");
    let base = format!("{}/v1/", api.url);
    let no_proxy = |http: reqwest::ClientBuilder| http.no_proxy();
    let bff = Bff::builder(config)
        .public_url(&url)
        .clock(Arc::new(clock.clone()))
        .api_client(ClientRegistration::user("user", &base).configure(no_proxy))
        .api_client(
            ClientRegistration::client("m2m", &base)
                .scope("catalog.read")
                .configure(no_proxy),
        )
        .build()
        .expect("bff");
    let v1: url::Url = base.parse().unwrap();
    let echo_v1: url::Url = format!("{}/v1/", echo.url).parse().unwrap();
    let app = Router::new()
        .merge(bff.proxy(RemoteApi::new("/api", v1.clone()).token(TokenPolicy::User)))
        .merge(
            bff.proxy(
                RemoteApi::new("/m2m", v1)
                    .token(TokenPolicy::Client)
                    .client_token_request(Some("catalog.read".into()), None),
            ),
        )
        .merge(bff.proxy(RemoteApi::new("/echo", echo_v1).token(TokenPolicy::User)))
        .merge(
            Router::new()
                .route("/call/{client}", get(call))
                .route("/post/{client}", post(call_post))
                .layer(bff.csrf_layer()),
        )
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Setup {
        idp,
        api,
        echo,
        bff,
        url,
        clock,
    }
}

async fn call(
    clients: ApiClients,
    Path(client): Path<String>,
) -> Result<(StatusCode, String), BffError> {
    let response = clients.get(&client)?.get("thing?x=1").send().await?;
    Ok((response.status(), response.text().await?))
}

async fn call_post(
    clients: ApiClients,
    Path(client): Path<String>,
) -> Result<(StatusCode, String), BffError> {
    let response = clients
        .get(&client)?
        .post("items")
        .json(&serde_json::json!({"name": "widget"}))
        .with_extension(ReplayOnUnauthorized)
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

impl Setup {
    async fn signed_in(&self) -> (Browser, String) {
        let browser = Browser::new(&self.url);
        browser.sign_in("/").await;
        let id = SessionId::parse(&browser.cookie("__Host-bff").unwrap()).unwrap();
        let session = self.bff.engine().load_session(&id).await.unwrap().unwrap();
        let jkt = session
            .record
            .dpop_binding()
            .expect("a DPoP-bound session")
            .thumbprint()
            .to_owned();
        (browser, jkt)
    }

    async fn client_jkt(&self) -> String {
        self.bff
            .engine()
            .client_dpop_key()
            .await
            .unwrap()
            .unwrap()
            .thumbprint()
            .to_owned()
    }
}

async fn json(response: reqwest::Response) -> (StatusCode, serde_json::Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test]
async fn proxied_user_and_client_calls_are_dpop_bound_and_refreshed() {
    let t = setup().await;
    let (browser, jkt) = t.signed_in().await;
    let (status, body) = json(browser.api("/api/orders?page=2").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jkt"], jkt.as_str());

    // After the token expired: refreshed with a proof, same key at the API.
    t.clock.advance(Duration::from_secs(400));
    let (status, body) = json(browser.api("/api/orders").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jkt"], jkt.as_str());
    assert_eq!(t.idp.counters().refresh_grants, 1);

    // The client's token, bound to the client key.
    let (status, body) = json(browser.api("/m2m/catalog").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jkt"], t.client_jkt().await.as_str());
    assert_ne!(body["jkt"], jkt.as_str());
    // Every proof was fresh.
    let proofs = t.api.state.proofs.lock().unwrap().clone();
    let unique: std::collections::HashSet<_> = proofs.iter().collect();
    assert_eq!(unique.len(), proofs.len());
}

#[tokio::test]
async fn the_browsers_dpop_header_never_reaches_the_api() {
    let t = setup().await;
    let (browser, jkt) = t.signed_in().await;
    let forged = [("x-csrf", "1"), ("dpop", "forged-proof")];
    // The checking API sees exactly one proof, the BFF's (else 401).
    let (status, body) = json(browser.get_with("/api/orders", &forged).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jkt"], jkt.as_str());
    assert!(
        !t.api
            .state
            .proofs
            .lock()
            .unwrap()
            .iter()
            .any(|p| p == "forged-proof")
    );
    // And as an echo: the DPoP scheme and one proof of the session's key.
    let (status, echo) = json(browser.get_with("/echo/headers", &forged).await).await;
    assert_eq!(status, 200);
    let proof = echoed(&echo, "dpop").expect("a proof");
    assert_ne!(proof, "forged-proof");
    let header = proxy_support::jwt_claims(&format!("x.{}", proof.split('.').next().unwrap()));
    assert_eq!(header["typ"], "dpop+jwt");
    assert!(echoed(&echo, "authorization").unwrap().starts_with("DPoP "));
    assert_eq!(t.echo.state.hits(), 1);
}

#[tokio::test]
async fn the_proxy_answers_an_api_nonce_challenge_once() {
    let t = setup().await;
    let (browser, jkt) = t.signed_in().await;
    t.api.state.verifier.require_nonce(true);
    // First call: challenged, retried once with the nonce and the same token.
    let (status, body) = json(browser.api("/api/orders").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jkt"], jkt.as_str());
    assert_eq!(t.api.hits(), 2);
    // The nonce is kept: no challenge now.
    let (status, _) = json(browser.api("/api/orders").await).await;
    assert_eq!(status, 200);
    assert_eq!(t.api.hits(), 3);
    // A request with a body is not sent twice: the 401 is passed on, the
    // nonce kept, and the browser's next try goes through.
    t.api.state.verifier.rotate_nonce();
    let post = |body: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/api/items", t.url))
            .header("x-csrf", "1")
            .header(
                "cookie",
                format!("__Host-bff={}", browser.cookie("__Host-bff").unwrap()),
            )
            .body(body)
    };
    let response = post("one").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(t.api.hits(), 4);
    let response = post("two").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(t.api.hits(), 5);
    // An API that wants a new nonce every time: two tries, then its 401.
    t.api.state.always_new_nonce.store(true, Ordering::SeqCst);
    let (status, _) = json(browser.api("/api/orders").await).await;
    assert_eq!(status, 401);
    assert_eq!(t.api.hits(), 7);
    assert_eq!(t.api.state.verifier.accepted(), 3);
}

#[tokio::test]
async fn managed_clients_send_dpop_bound_tokens_and_answer_a_nonce_once() {
    let t = setup().await;
    let (browser, jkt) = t.signed_in().await;
    let (status, body) = json(browser.api("/call/user").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jkt"], jkt.as_str());
    let (status, body) = json(browser.api("/call/m2m").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jkt"], t.client_jkt().await.as_str());
    assert_eq!(t.api.hits(), 2);

    t.api.state.verifier.require_nonce(true);
    let (status, body) = json(browser.api("/call/user").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(t.api.hits(), 4, "one challenge, one retry");
    // A replayable POST the caller opted in for is retried too.
    t.api.state.verifier.rotate_nonce();
    let response = reqwest::Client::new()
        .post(format!("{}/post/m2m", t.url))
        .header("x-csrf", "1")
        .header(
            "cookie",
            format!("__Host-bff={}", browser.cookie("__Host-bff").unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(t.api.hits(), 6);
    // Never a loop, and no token renewal for a nonce.
    t.api.state.always_new_nonce.store(true, Ordering::SeqCst);
    let grants = t.idp.counters().refresh_grants;
    let (status, _) = json(browser.api("/call/user").await).await;
    assert_eq!(status, 401);
    assert_eq!(t.api.hits(), 8);
    assert_eq!(t.idp.counters().refresh_grants, grants);
}
