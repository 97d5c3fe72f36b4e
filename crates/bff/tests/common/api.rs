//! A real test API on 127.0.0.1 for managed-client tests: it records every
//! request, checks bearer tokens at the dev IdP's introspection endpoint, and
//! can be told to answer 401 to the next requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, StatusCode, Uri};

/// One request the API received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// The bearer token, if the request carried one.
    pub token: Option<String>,
    pub body: Vec<u8>,
}

/// A running test API.
#[derive(Clone)]
pub struct TestApi {
    /// `http://127.0.0.1:port`
    pub url: String,
    state: Arc<ApiState>,
}

struct ApiState {
    seen: Mutex<Vec<Seen>>,
    reject_next: AtomicUsize,
    /// The IdP's issuer: tokens are introspected there (as client bff/secret).
    introspect_at: Option<String>,
    http: reqwest::Client,
}

impl TestApi {
    /// An API that accepts only tokens the dev IdP at `issuer` says are active.
    pub async fn start(issuer: &str) -> TestApi {
        Self::start_inner(Some(issuer.to_owned())).await
    }

    /// An API that accepts any bearer token (benchmarks, examples).
    pub async fn start_accepting_any() -> TestApi {
        Self::start_inner(None).await
    }

    async fn start_inner(introspect_at: Option<String>) -> TestApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(ApiState {
            seen: Mutex::default(),
            reject_next: AtomicUsize::new(0),
            introspect_at,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        TestApi { url, state }
    }

    /// Answers 401 to the next `n` requests, whatever token they carry.
    pub fn reject_next(&self, n: usize) {
        self.state.reject_next.store(n, Ordering::SeqCst);
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen").clone()
    }

    /// The bearer tokens of every request received so far.
    pub fn tokens(&self) -> Vec<Option<String>> {
        self.seen().into_iter().map(|s| s.token).collect()
    }

    /// The bearer token of the last request.
    pub fn last_token(&self) -> String {
        self.seen()
            .last()
            .and_then(|s| s.token.clone())
            .expect("a request with a bearer token")
    }
}

async fn handle(
    State(state): State<Arc<ApiState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    state.seen.lock().expect("seen").push(Seen {
        method,
        path: uri.path().to_owned(),
        token: token.clone(),
        body: body.to_vec(),
    });
    let rejected = state
        .reject_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let Some(token) = token.filter(|_| !rejected) else {
        return unauthorized();
    };
    if let Some(issuer) = &state.introspect_at
        && !active(&state.http, issuer, &token).await
    {
        return unauthorized();
    }
    let sub = claims(&token)["sub"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    format!("hello {sub} from {}", uri.path()).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            http::header::WWW_AUTHENTICATE,
            "Bearer error=\"invalid_token\"",
        )],
        "unauthorized",
    )
        .into_response()
}

/// Asks the dev IdP whether `token` is active.
pub async fn active(http: &reqwest::Client, issuer: &str, token: &str) -> bool {
    let answer: serde_json::Value = http
        .post(format!("{issuer}/introspect"))
        .basic_auth("bff", Some("secret"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspection")
        .json()
        .await
        .expect("introspection json");
    answer["active"] == true
}

/// The claims of a JWT access token, unverified (the API introspects).
pub fn claims(jwt: &str) -> serde_json::Value {
    jwt.split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
