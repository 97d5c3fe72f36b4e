//! Interop with a certified OpenID Provider: the BFF against `oidc-provider`
//! (OpenID Certified), started from `tests/interop/provider.mjs` on loopback.
//!
//! Needs Node.js (>= 20.19) and the pinned provider installed:
//!
//! ```sh
//! npm ci --prefix tests/interop
//! cargo test -p oidc-bff --test interop
//! ```
//!
//! Without `tests/interop/node_modules` the tests are skipped — unless
//! `CI=true`, where a missing install is a failure.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::harness::{Browser, location};
use oidc_bff::{Bff, BffError, BffSession, OidcConfig, UserAccessToken, UserTokenRequest};
use oidc_bff_tokens::OidcConfigBuilder;
use oidc_bff_tokens::{ClientCredentialsRequest, ManualClock, SessionId};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use url::Url;

const SECRET: &str = "interop-secret-0123456789";

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

/// Whether the provider is installed; fails instead of skipping under CI.
fn installed() -> bool {
    let installed = interop_dir().join("node_modules/oidc-provider").is_dir();
    if !installed {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the interop provider is not installed: run `npm ci --prefix tests/interop`"
        );
        eprintln!("skipped: run `npm ci --prefix tests/interop` to enable the interop tests");
    }
    installed
}

/// The provider process, a BFF in front of it, and a cookie jar for the
/// provider's origin (the harness `Browser` keeps the BFF's cookies).
struct Interop {
    _provider: tokio::process::Child,
    issuer: String,
    bff: Bff,
    url: String,
    clock: ManualClock,
    http: reqwest::Client,
    provider_jar: Mutex<HashMap<String, String>>,
    dpop_api: Option<DpopApi>,
}

/// A resource server for DPoP-bound tokens of `oidc-provider`: it
/// introspects the token (as `bff-dpop`) for its `cnf.jkt`, then checks the
/// request with the dev IdP's verifier (proof, `ath`, key = `cnf.jkt`, a
/// nonce of its own).
#[derive(Clone)]
struct DpopApi {
    url: String,
    state: Arc<DpopApiState>,
}

struct DpopApiState {
    url: String,
    introspection: String,
    http: reqwest::Client,
    verifier: oidc_bff_dev_idp::dpop::ResourceVerifier,
    hits: std::sync::atomic::AtomicUsize,
}

impl DpopApi {
    async fn start(issuer: &str, http: &reqwest::Client) -> DpopApi {
        let discovery: Value = http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let verifier = oidc_bff_dev_idp::dpop::ResourceVerifier::new();
        verifier.require_nonce(true);
        let state = Arc::new(DpopApiState {
            url: url.clone(),
            introspection: discovery["introspection_endpoint"]
                .as_str()
                .unwrap()
                .to_owned(),
            http: http.clone(),
            verifier,
            hits: Default::default(),
        });
        let app = Router::new().fallback(dpop_api).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        DpopApi { url, state }
    }

    fn hits(&self) -> usize {
        self.state.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn dpop_api(
    axum::extract::State(state): axum::extract::State<Arc<DpopApiState>>,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    state.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .unwrap_or_default()
        .to_owned();
    let info: Value = state
        .http
        .post(&state.introspection)
        .basic_auth("bff-dpop", Some(SECRET))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jkt = info
        .pointer("/cnf/jkt")
        .and_then(Value::as_str)
        .filter(|_| info["active"] == true)
        .map(str::to_owned);
    let url = format!(
        "{}{}",
        state.url,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    match state
        .verifier
        .verify_request(&method, &url, &headers, |_| jkt.clone())
    {
        Ok(verified) => {
            let mut response =
                axum::Json(serde_json::json!({"jkt": verified.jkt, "sub": info["sub"]}))
                    .into_response();
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

async fn token(UserAccessToken(token): UserAccessToken) -> String {
    token.secret().to_owned()
}

async fn forced_token(session: BffSession) -> Result<String, BffError> {
    let token = session
        .access_token(&UserTokenRequest::default().force_renewal())
        .await?;
    Ok(token.secret().to_owned())
}

impl Interop {
    async fn start() -> Option<Self> {
        Self::start_with("bff", |config| config.client_secret(SECRET), &[], false).await
    }

    /// A BFF with DPoP on, as the provider's `bff-dpop` client (DPoP-bound
    /// tokens required), with `/dpop-api` proxied to a [`DpopApi`].
    async fn start_dpop() -> Option<(Self, DpopApi)> {
        let t =
            Self::start_with("bff-dpop", |config| config.client_secret(SECRET), &[], true).await?;
        let api = t.dpop_api.clone().expect("the DPoP API");
        Some((t, api))
    }

    /// The provider with extra environment `env`, and a BFF for
    /// `client_id` whose client authentication (and more) `auth` sets; with
    /// `dpop`, DPoP on and `/dpop-api` proxied to a [`DpopApi`].
    async fn start_with(
        client_id: &str,
        auth: impl FnOnce(OidcConfigBuilder) -> OidcConfigBuilder,
        env: &[(&str, String)],
        dpop: bool,
    ) -> Option<Self> {
        if !installed() {
            return None;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut provider = tokio::process::Command::new("node")
            .arg(interop_dir().join("provider.mjs"))
            .env("BFF_URL", &url)
            .env("BFF_SECRET", SECRET)
            .env("ACCESS_TOKEN_TTL", "60")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed (Node.js >= 20.19)");
        let stdout = provider.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the provider did not start within 60 s")
            .unwrap()
            .expect("the provider exited before it was ready");
        let issuer = serde_json::from_str::<Value>(&ready).unwrap()["issuer"]
            .as_str()
            .unwrap()
            .to_owned();

        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let discovery = http
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap();
        assert_eq!(discovery.status(), 200);

        let clock = ManualClock::starting_now();
        let config = auth(OidcConfig::builder(&issuer, client_id))
            .scopes(["openid", "profile", "email", "offline_access"])
            .refresh_margin(Duration::from_secs(30))
            .timeouts(Duration::from_secs(2), Duration::from_secs(10))
            .dpop(dpop)
            // DPoP clients also call userinfo, which binds it to the key.
            .load_userinfo(dpop)
            .build()
            .unwrap();
        let dpop_api = if dpop {
            Some(DpopApi::start(&issuer, &http).await)
        } else {
            None
        };
        let bff = Bff::builder(config)
            .public_url(&url)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let api = Router::new()
            .route("/api/token", get(token))
            .route("/api/token/forced", get(forced_token))
            .layer(bff.csrf_layer());
        let mut app = Router::new().merge(api);
        if let Some(dpop_api) = &dpop_api {
            let upstream: Url = format!("{}/", dpop_api.url).parse().unwrap();
            app = app.merge(bff.proxy(oidc_bff::RemoteApi::new("/dpop-api", upstream)));
        }
        let app = app.merge(bff.routes()).layer(bff.layer());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Some(Self {
            _provider: provider,
            issuer,
            bff,
            url,
            clock,
            http,
            provider_jar: Mutex::default(),
            dpop_api,
        })
    }

    /// What the provider counted (grants by type, refresh tokens consumed and
    /// destroyed, back-channel deliveries, ...).
    async fn counters(&self) -> Value {
        self.http
            .get(format!("{}/test/counters", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn counter(&self, name: &str) -> u64 {
        self.counters().await[name].as_u64().unwrap()
    }

    fn absolute(&self, url: &str) -> String {
        Url::parse(&self.issuer)
            .unwrap()
            .join(url)
            .unwrap()
            .to_string()
    }

    /// A request at the provider with the browser's provider cookies.
    async fn at_provider(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let cookies = {
            let jar = self.provider_jar.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let response = request.header("cookie", cookies).send().await.unwrap();
        let mut jar = self.provider_jar.lock().unwrap();
        for value in response.headers().get_all("set-cookie") {
            let raw = value.to_str().unwrap();
            let (pair, attrs) = raw.split_once(';').unwrap_or((raw, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let attrs = attrs.to_ascii_lowercase();
            if value.is_empty() || attrs.contains("max-age=0") || attrs.contains("1970") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        response
    }

    async fn provider_get(&self, url: &str) -> reqwest::Response {
        let url = self.absolute(url);
        self.at_provider(self.http.get(url)).await
    }

    /// Signs `browser` in through the provider (login and consent complete by
    /// script); returns where the BFF finally sent it.
    async fn sign_in(&self, browser: &Browser, return_url: &str) -> String {
        let login = browser
            .get(&format!(
                "/bff/login?returnUrl={}",
                common::harness::urlencode(return_url)
            ))
            .await;
        assert_eq!(login.status(), 303);
        let mut next = location(&login);
        assert!(next.starts_with(&self.issuer), "{next}");
        for _ in 0..10 {
            let response = self.provider_get(&next).await;
            assert!(
                response.status().is_redirection(),
                "{next}: {} {}",
                response.status(),
                response.text().await.unwrap()
            );
            next = self.absolute(&location(&response));
            if next.starts_with(&self.url) {
                break;
            }
        }
        assert!(
            next.starts_with(&format!("{}/bff/callback?", self.url)),
            "{next}"
        );
        let params: HashMap<String, String> = Url::parse(&next)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert_eq!(params.get("iss"), Some(&self.issuer), "RFC 9207 iss");
        let done = browser.get(&next).await;
        assert_eq!(done.status(), 303, "{}", done.text().await.unwrap());
        location(&done)
    }

    async fn session(&self, browser: &Browser) -> Option<oidc_bff_tokens::Versioned> {
        let id = SessionId::parse(&browser.cookie("__Host-bff")?)?;
        self.bff.engine().load_session(&id).await.unwrap()
    }

    /// Presents a refresh token to the provider directly.
    async fn refresh_directly(&self, refresh_token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/token", self.issuer))
            .basic_auth("bff", Some(SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Ends the provider session at its end-session endpoint, confirming the
    /// logout prompt as the user would; returns the final redirect.
    async fn end_provider_session(&self, end_session_url: &str) -> String {
        let page = self.provider_get(end_session_url).await;
        assert_eq!(page.status(), 200, "{end_session_url}");
        let html = page.text().await.unwrap();
        let action = attribute_after(&html, "<form", "action").expect("logout form");
        let xsrf = attribute_after(&html, "name=\"xsrf\"", "value").expect("xsrf field");
        let confirm = self
            .at_provider(
                self.http
                    .post(self.absolute(&action))
                    .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")]),
            )
            .await;
        assert!(
            confirm.status().is_redirection(),
            "{} {}",
            confirm.status(),
            confirm.text().await.unwrap()
        );
        location(&confirm)
    }
}

/// The value of attribute `name` in the first tag at or after `marker`.
fn attribute_after(html: &str, marker: &str, name: &str) -> Option<String> {
    let start = html.find(marker)?;
    let tag_start = html[..=start].rfind('<')?;
    let tag = &html[tag_start..];
    let tag = &tag[..tag.find('>')?];
    let needle = format!("{name}=\"");
    let value_start = tag.find(&needle)? + needle.len();
    let value = &tag[value_start..];
    Some(value[..value.find('"')?].replace("&amp;", "&"))
}

#[tokio::test]
async fn sign_in_user_endpoint_and_refresh_with_rotation() {
    let Some(t) = Interop::start().await else {
        return;
    };
    let browser = Browser::new(&t.url);
    assert_eq!(t.sign_in(&browser, "/app?x=1").await, "/app?x=1");
    assert_eq!(t.counter("code_grants").await, 1);

    let user = browser.api("/bff/user").await;
    assert_eq!(user.status(), 200);
    let user: Value = user.json().await.unwrap();
    assert_eq!(user["sub"], "alice");
    assert_eq!(user["claims"]["name"], "Alice Example");
    assert_eq!(user["claims"]["iss"], t.issuer.as_str());

    let session = t.session(&browser).await.unwrap();
    let first_refresh = session
        .record
        .tokens
        .refresh_token
        .clone()
        .expect("a refresh token");
    let first_access = browser.api("/api/token").await.text().await.unwrap();
    assert_eq!(first_access, session.record.tokens.access_token.secret());
    assert_eq!(
        t.counter("refresh_grants").await,
        0,
        "a valid token is served as is"
    );

    // A refresh with rotation: new access and refresh tokens.
    let forced = browser.api("/api/token/forced").await;
    assert_eq!(forced.status(), 200);
    let second_access = forced.text().await.unwrap();
    assert_ne!(second_access, first_access);
    let session = t.session(&browser).await.unwrap();
    let second_refresh = session.record.tokens.refresh_token.clone().unwrap();
    assert_ne!(second_refresh.secret(), first_refresh.secret(), "rotated");
    assert_eq!(session.record.tokens.refresh_count, 1);
    assert_eq!(t.counter("refresh_grants").await, 1);
    assert_eq!(t.counter("refresh_tokens_consumed").await, 1);
    // The refreshed id_token passed the identity checks and the session lives.
    assert_eq!(browser.api("/bff/user").await.status(), 200);

    // The provider refuses the rotated-away refresh token.
    let replay = t.refresh_directly(first_refresh.secret()).await;
    assert_eq!(replay.status(), 400);
    let body: Value = replay.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn concurrent_requests_share_one_refresh_grant() {
    let Some(t) = Interop::start().await else {
        return;
    };
    let browser = Browser::new(&t.url);
    t.sign_in(&browser, "/").await;
    let before = browser.api("/api/token").await.text().await.unwrap();
    // The 60 s access token has expired: every request waits for the one
    // renewal. (Within the 30 s margin but still valid, they would all get
    // the old token at once while the renewal runs behind them.)
    t.clock.advance(Duration::from_secs(61));
    let requests = (0..100).map(|_| {
        let browser = browser.clone();
        tokio::spawn(async move {
            let response = browser.api("/api/token").await;
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        })
    });
    let tokens: Vec<String> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        tokens.iter().all(|token| *token == tokens[0]),
        "one new token for all"
    );
    assert_ne!(tokens[0], before);
    assert_eq!(t.counter("refresh_grants").await, 1, "exactly one grant");
    assert_eq!(t.counter("grant_errors").await, 0);
}

#[tokio::test]
async fn logout_revokes_the_refresh_token_and_ends_the_provider_session() {
    let Some(t) = Interop::start().await else {
        return;
    };
    let browser = Browser::new(&t.url);
    t.sign_in(&browser, "/").await;
    let session = t.session(&browser).await.unwrap();
    let refresh_token = session.record.tokens.refresh_token.clone().unwrap();
    let user: Value = browser.api("/bff/user").await.json().await.unwrap();

    let logout = browser.get(user["logoutUrl"].as_str().unwrap()).await;
    assert_eq!(logout.status(), 303);
    let end_session = location(&logout);
    assert!(
        end_session.starts_with(&format!("{}/session/end?", t.issuer)),
        "{end_session}"
    );
    assert!(browser.cookie("__Host-bff").is_none());
    assert_eq!(browser.api("/bff/user").await.status(), 401);

    // Revoked at the provider before the browser even got there.
    assert!(t.counter("refresh_tokens_destroyed").await >= 1);
    let denied = t.refresh_directly(refresh_token.secret()).await;
    assert_eq!(denied.status(), 400);
    assert_eq!(
        denied.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );

    // RP-initiated logout: the provider accepts the id_token_hint and sends
    // the browser back to the registered post-logout URI.
    let back = t.end_provider_session(&end_session).await;
    assert!(back.starts_with(&format!("{}/", t.url)), "{back}");
    assert_eq!(t.counter("end_session").await, 1);
}

#[tokio::test]
async fn back_channel_logout_from_the_provider_ends_the_session() {
    let Some(t) = Interop::start().await else {
        return;
    };
    let browser = Browser::new(&t.url);
    t.sign_in(&browser, "/").await;
    let other = Browser::new(&t.url);
    t.sign_in(&other, "/").await; // the same provider session (its cookie)
    let session = t.session(&browser).await.unwrap();
    assert!(session.record.sid.is_some(), "the id_token carries sid");
    let refresh_token = session.record.tokens.refresh_token.clone().unwrap();
    let id_token = session.record.tokens.id_token.clone().unwrap();
    let id = SessionId::parse(&browser.cookie("__Host-bff").unwrap()).unwrap();

    // The user signs out at the provider (not through the BFF).
    let mut end_session = Url::parse(&format!("{}/session/end", t.issuer)).unwrap();
    end_session
        .query_pairs_mut()
        .append_pair("id_token_hint", id_token.secret())
        .append_pair("client_id", "bff");
    t.end_provider_session(end_session.as_str()).await;

    let mut ended = false;
    for _ in 0..400 {
        if t.bff.engine().load_session(&id).await.unwrap().is_none() {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ended, "the back-channel logout did not end the session");
    assert_eq!(t.counter("backchannel_success").await, 1);
    assert_eq!(t.counter("backchannel_error").await, 0);
    assert_eq!(browser.api("/bff/user").await.status(), 401);
    // Both BFF sessions shared the provider session (same sid): both ended.
    assert_eq!(other.api("/bff/user").await.status(), 401);
    // The BFF revoked the ended session's refresh token.
    assert_eq!(
        t.refresh_directly(refresh_token.secret()).await.status(),
        400
    );
}

#[tokio::test]
async fn client_credentials_tokens_are_issued_and_cached() {
    let Some(t) = Interop::start().await else {
        return;
    };
    let request = ClientCredentialsRequest::default().scope("api:read");
    let first = t.bff.engine().client_access_token(&request).await.unwrap();
    let second = t.bff.engine().client_access_token(&request).await.unwrap();
    assert_eq!(first.secret(), second.secret());
    assert_eq!(t.counter("client_credentials_grants").await, 1);

    // The provider knows the token: introspection says active, for our client.
    let introspected: Value = t
        .http
        .post(format!("{}/token/introspection", t.issuer))
        .basic_auth("bff", Some(SECRET))
        .form(&[("token", first.secret())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["client_id"], "bff");
    assert_eq!(introspected["scope"], "api:read");

    // Past the refresh margin a new one is fetched.
    t.clock.advance(Duration::from_secs(31));
    let third = t.bff.engine().client_access_token(&request).await.unwrap();
    assert_ne!(third.secret(), first.secret());
    assert_eq!(t.counter("client_credentials_grants").await, 2);
}

/// A test-only EC P-256 key: its PKCS#8 PEM and the public JWK Set to
/// register at the provider (`kid` = the RFC 7638 thumbprint, as the engine
/// names it).
fn private_key_jwt_key() -> (String, String) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let key = oidc_bff_tokens::ClientKey::from_pem(pem.as_bytes()).unwrap();
    let jwk = key.public_jwk(key.thumbprint(), key.default_alg());
    (pem, serde_json::json!({ "keys": [jwk] }).to_string())
}

/// The `bff-pkjwt` client: private_key_jwt (RFC 7523) at every endpoint,
/// and pushed authorization requests (RFC 9126), which the provider
/// requires of it.
async fn start_private_key_jwt() -> Option<Interop> {
    let (pem, jwks) = private_key_jwt_key();
    Interop::start_with(
        "bff-pkjwt",
        |config| {
            config
                .client_auth(oidc_bff_tokens::ClientAuthMethod::PrivateKeyJwt)
                .client_key_pem(pem.into_bytes())
                .par(true)
        },
        &[("BFF_CLIENT_JWKS", jwks)],
        false,
    )
    .await
}

#[tokio::test]
async fn par_and_private_key_jwt_sign_in_refresh_and_logout() {
    let Some(t) = start_private_key_jwt().await else {
        return;
    };
    let browser = Browser::new(&t.url);
    // The BFF sends the browser with client_id and request_uri only.
    let login = browser.get("/bff/login?returnUrl=/").await;
    let authorize = Url::parse(&location(&login)).unwrap();
    let names: Vec<String> = authorize
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    assert_eq!(names, ["client_id", "request_uri"], "{authorize}");

    assert_eq!(t.sign_in(&browser, "/app").await, "/app");
    assert_eq!(t.counter("pushed_authorization_requests").await, 2);
    assert_eq!(t.counter("code_grants").await, 1);
    let user: Value = browser.api("/bff/user").await.json().await.unwrap();
    assert_eq!(user["sub"], "alice");

    // A refresh, authenticated with a new assertion.
    let before = browser.api("/api/token").await.text().await.unwrap();
    let forced = browser.api("/api/token/forced").await;
    assert_eq!(forced.status(), 200);
    assert_ne!(forced.text().await.unwrap(), before);
    assert_eq!(t.counter("refresh_grants").await, 1);

    // Logout revokes the refresh token with private_key_jwt too.
    let logout = browser.get(user["logoutUrl"].as_str().unwrap()).await;
    assert_eq!(logout.status(), 303);
    assert!(t.counter("refresh_tokens_destroyed").await >= 1);
    assert_eq!(t.counter("grant_errors").await, 0);
}

#[tokio::test]
async fn private_key_jwt_client_credentials() {
    let Some(t) = start_private_key_jwt().await else {
        return;
    };
    let request = ClientCredentialsRequest::default().scope("api:read");
    let first = t.bff.engine().client_access_token(&request).await.unwrap();
    assert!(!first.secret().is_empty());
    assert_eq!(t.counter("client_credentials_grants").await, 1);
    t.clock.advance(Duration::from_secs(31));
    let second = t.bff.engine().client_access_token(&request).await.unwrap();
    assert_ne!(second.secret(), first.secret());
    assert_eq!(t.counter("client_credentials_grants").await, 2);
}

#[tokio::test]
async fn dpop_sign_in_refresh_and_api_calls_with_nonces() {
    let Some((t, api)) = Interop::start_dpop().await else {
        return;
    };
    let browser = Browser::new(&t.url);
    assert_eq!(t.sign_in(&browser, "/").await, "/");
    // The provider asked for its nonce once (`use_dpop_nonce`), then issued
    // a DPoP-bound token for the key announced as `dpop_jkt`.
    assert_eq!(t.counter("code_grants").await, 1);
    let session = t.session(&browser).await.expect("a session");
    let key = session
        .record
        .dpop_binding()
        .expect("a DPoP-bound token")
        .clone();
    assert_eq!(session.record.tokens.token_type, "DPoP");
    // Userinfo took the bound token with a proof (the provider refuses it
    // as a bearer token); `nickname` comes from userinfo only.
    assert_eq!(
        session.record.claims.get("nickname"),
        Some(&serde_json::json!("ally"))
    );

    // The API checks the proof and `cnf.jkt`, and wants its own nonce:
    // one challenge, one retry.
    let response = browser.api("/dpop-api/orders?page=1").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jkt"], key.thumbprint());
    assert_eq!(body["sub"], "alice");
    assert_eq!(api.hits(), 2);

    // A refresh proves the same key; the new token is bound to it.
    let forced = browser.api("/api/token/forced").await;
    assert_eq!(forced.status(), 200);
    assert_eq!(t.counter("refresh_grants").await, 1);
    let response = browser.api("/dpop-api/orders").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jkt"], key.thumbprint());
    assert_eq!(api.hits(), 3, "the API's nonce was kept");

    // Client credentials, bound to the client key.
    let (token, bound) = t
        .bff
        .engine()
        .client_access_token_bound(&ClientCredentialsRequest::default())
        .await
        .unwrap();
    assert!(!token.secret().is_empty());
    assert!(bound.is_some(), "a DPoP-bound client token");
}

/// PAR, private_key_jwt and DPoP together (FAPI 2.0's client profile), as
/// the provider's `bff-fapi` client, which requires all three.
#[tokio::test]
async fn par_private_key_jwt_and_dpop_together() {
    let (pem, jwks) = private_key_jwt_key();
    let Some(t) = Interop::start_with(
        "bff-fapi",
        |config| {
            config
                .client_auth(oidc_bff_tokens::ClientAuthMethod::PrivateKeyJwt)
                .client_key_pem(pem.into_bytes())
                .par(true)
        },
        &[("BFF_CLIENT_JWKS", jwks)],
        true,
    )
    .await
    else {
        return;
    };
    let api = t.dpop_api.clone().expect("the DPoP API");
    let browser = Browser::new(&t.url);
    let login = browser.get("/bff/login?returnUrl=/").await;
    let authorize = Url::parse(&location(&login)).unwrap();
    let names: Vec<String> = authorize
        .query_pairs()
        .map(|(k, _)| k.into_owned())
        .collect();
    assert_eq!(names, ["client_id", "request_uri"], "{authorize}");

    assert_eq!(t.sign_in(&browser, "/").await, "/");
    assert_eq!(t.counter("code_grants").await, 1);
    let session = t.session(&browser).await.expect("a session");
    assert_eq!(session.record.tokens.token_type, "DPoP");
    let key = session
        .record
        .dpop_binding()
        .expect("a DPoP-bound token")
        .clone();

    // The API checks the proof and the token's `cnf.jkt`.
    let response = browser.api("/dpop-api/orders").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jkt"], key.thumbprint());

    // A refresh with a new assertion and a proof of the same key.
    let forced = browser.api("/api/token/forced").await;
    assert_eq!(forced.status(), 200);
    assert_eq!(t.counter("refresh_grants").await, 1);
    let response = browser.api("/dpop-api/orders").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jkt"], key.thumbprint());
    assert!(api.hits() >= 2);
    // The only refused grant is the provider's nonce challenge at the code
    // exchange (a second one only if its nonce window turned in between).
    let errors = t.counter("grant_errors").await;
    assert!((1..=2).contains(&errors), "grant errors: {errors}");
}
