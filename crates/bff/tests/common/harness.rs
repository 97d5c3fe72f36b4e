//! A dev IdP + a BFF served on 127.0.0.1, and a minimal browser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use oidc_bff::{Bff, BffError, BffSession, OidcConfig, UserAccessToken, UserTokenRequest};
use oidc_bff_dev_idp::{DevIdp, DevIdpBuilder, RunningIdp};
use oidc_bff_tokens::{Clock, ManualClock, SessionId};

/// What a test needs: the IdP, the BFF, its URL and the BFF's clock.
pub struct TestBff {
    pub idp: RunningIdp,
    pub bff: Bff,
    pub url: String,
    pub clock: ManualClock,
}

/// Knobs for [`start`].
#[derive(Clone)]
pub struct Options {
    pub request_timeout: Duration,
    pub scopes: Vec<&'static str>,
    pub refresh_lease: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            scopes: vec!["openid", "profile", "offline_access"],
            refresh_lease: Duration::from_secs(5),
        }
    }
}

pub async fn start() -> TestBff {
    start_with(Options::default()).await
}

pub async fn start_with(options: Options) -> TestBff {
    start_against(
        DevIdp::builder().access_token_lifetime(Duration::from_secs(300)),
        options,
    )
    .await
}

/// A BFF app in front of a dev IdP built from `idp`; both read one
/// [`ManualClock`], so advancing it expires tokens on both sides alike.
pub async fn start_against(idp: DevIdpBuilder, options: Options) -> TestBff {
    let clock = ManualClock::starting_now();
    let idp_clock = clock.clone();
    let idp = idp
        .clock(move || idp_clock.now_unix())
        .start()
        .await
        .expect("dev idp");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .scopes(options.scopes.clone())
        .timeouts(Duration::from_secs(2), options.request_timeout)
        .refresh_lease(options.refresh_lease)
        .build()
        .expect("config");
    let bff = Bff::builder(config)
        .public_url(&url)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("bff");
    let api = Router::new()
        .route("/api/token", get(token))
        .route("/api/token/forced", get(forced_token))
        .route("/api/token/resource", get(resource_token))
        .route("/api/token/scoped", get(scoped_token))
        .route("/api/token/overscoped", get(overscoped_token))
        .layer(bff.csrf_layer());
    let app = Router::new()
        .merge(api)
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    TestBff {
        idp,
        bff,
        url,
        clock,
    }
}

/// A BFF app like [`start_with`], keeping its sessions in `store`; `clock`
/// is shared by the IdP and the BFF (give the store the same clock).
pub async fn start_with_store(
    options: Options,
    clock: ManualClock,
    store: Arc<dyn oidc_bff_tokens::SessionStore>,
) -> TestBff {
    let idp_clock = clock.clone();
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .clock(move || idp_clock.now_unix())
        .start()
        .await
        .expect("dev idp");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .scopes(options.scopes.clone())
        .timeouts(Duration::from_secs(2), options.request_timeout)
        .refresh_lease(options.refresh_lease)
        .build()
        .expect("config");
    let bff = Bff::builder(config)
        .public_url(&url)
        .clock(Arc::new(clock.clone()))
        .store(store)
        .build()
        .expect("bff");
    let api = Router::new()
        .route("/api/token", get(token))
        .layer(bff.csrf_layer());
    let app = Router::new()
        .merge(api)
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    TestBff {
        idp,
        bff,
        url,
        clock,
    }
}

/// The user's access token, in one call.
async fn token(UserAccessToken(token): UserAccessToken) -> String {
    token.secret().to_owned()
}

async fn forced_token(session: BffSession) -> Result<String, BffError> {
    let token = session
        .access_token(&UserTokenRequest::default().force_renewal())
        .await?;
    Ok(token.secret().to_owned())
}

async fn resource_token(session: BffSession) -> Result<String, BffError> {
    let token = session
        .access_token(&UserTokenRequest::default().resource("urn:test:api"))
        .await?;
    Ok(token.secret().to_owned())
}

/// A down-scoped token: `openid` only (the grant has more).
async fn scoped_token(session: BffSession) -> Result<String, BffError> {
    let token = session
        .access_token(&UserTokenRequest::default().scope("openid"))
        .await?;
    Ok(token.secret().to_owned())
}

/// A scope the grant does not cover: the provider refuses it.
async fn overscoped_token(session: BffSession) -> Result<String, BffError> {
    let token = session
        .access_token(&UserTokenRequest::default().scope("openid admin"))
        .await?;
    Ok(token.secret().to_owned())
}

impl TestBff {
    pub fn browser(&self) -> Browser {
        Browser::new(&self.url)
    }

    /// Advances the BFF's clock.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// The session a browser holds, read straight from the store.
    pub async fn session_of(&self, browser: &Browser) -> Option<oidc_bff_tokens::Versioned> {
        let id = SessionId::parse(&browser.cookie("__Host-bff")?)?;
        self.bff.engine().load_session(&id).await.expect("store")
    }
}

/// A cookie-keeping HTTP client that follows no redirects by itself.
#[derive(Clone)]
pub struct Browser {
    pub base: String,
    http: reqwest::Client,
    jar: Arc<Mutex<HashMap<String, String>>>,
    /// Every Set-Cookie value received, for attribute checks.
    pub set_cookies: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            jar: Default::default(),
            set_cookies: Default::default(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().expect("jar").get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .expect("jar")
            .insert(name.to_owned(), value.to_owned());
    }

    pub fn forget_cookie(&self, name: &str) {
        self.jar.lock().expect("jar").remove(name);
    }

    fn cookie_header(&self) -> Option<String> {
        let jar = self.jar.lock().expect("jar");
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{}", self.base, url)
        }
    }

    /// A GET with the jar's cookies (only to the BFF's origin) and optional extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let url = self.absolute(url);
        let mut request = self.http.get(&url);
        if url.starts_with(&self.base)
            && let Some(cookies) = self.cookie_header()
        {
            request = request.header("cookie", cookies);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("request");
        if url.starts_with(&self.base) {
            self.remember(&response);
        }
        response
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.get_with(url, &[]).await
    }

    /// A GET to a local API route, with the anti-forgery header.
    pub async fn api(&self, path: &str) -> reqwest::Response {
        self.get_with(path, &[("x-csrf", "1")]).await
    }

    fn remember(&self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let raw = value.to_str().expect("ascii cookie").to_owned();
            let (pair, attrs) = raw.split_once(';').unwrap_or((&raw, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            let expired = attrs.to_ascii_lowercase().contains("max-age=0");
            let mut jar = self.jar.lock().expect("jar");
            if expired || value.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
            self.set_cookies.lock().expect("cookies").push(raw);
        }
    }

    /// Follows redirects by hand, returning the last response (not a redirect).
    pub async fn follow(
        &self,
        mut response: reqwest::Response,
    ) -> (reqwest::Response, Vec<String>) {
        let mut visited = Vec::new();
        for _ in 0..10 {
            if !response.status().is_redirection() {
                break;
            }
            let location = response
                .headers()
                .get("location")
                .expect("location")
                .to_str()
                .expect("ascii")
                .to_owned();
            visited.push(location.clone());
            response = self.get(&location).await;
        }
        (response, visited)
    }

    /// Starts a sign-in and returns the URL of the callback the IdP redirected to.
    pub async fn start_sign_in(&self, return_url: &str) -> String {
        let login = self
            .get(&format!("/bff/login?returnUrl={}", urlencode(return_url)))
            .await;
        assert_eq!(login.status(), 303, "login must redirect to the provider");
        let authorize = location(&login);
        let at_idp = self.get(&authorize).await;
        assert!(
            at_idp.status().is_redirection(),
            "the dev IdP signs in without a form"
        );
        location(&at_idp)
    }

    /// Signs in; returns where the BFF finally sent the browser.
    pub async fn sign_in(&self, return_url: &str) -> String {
        let callback = self.start_sign_in(return_url).await;
        let done = self.get(&callback).await;
        assert_eq!(
            done.status(),
            303,
            "callback must redirect: {:?}",
            done.status()
        );
        assert!(self.cookie("__Host-bff").is_some(), "session cookie set");
        location(&done)
    }
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("location header")
        .to_str()
        .expect("ascii")
        .to_owned()
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
