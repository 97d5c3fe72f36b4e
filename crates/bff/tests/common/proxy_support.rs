//! For the proxy tests: a real upstream API that reports what it received, a
//! WebSocket echo upstream, and a BFF app mounting several remote APIs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use oidc_bff::TokenPolicy;
use oidc_bff::proxy::RemoteApi;
use oidc_bff::{Bff, OidcConfig};
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use oidc_bff_tokens::{ManualClock, SessionId, SessionStore};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

use super::harness::Browser;

/// Size of one generated chunk.
pub const CHUNK: usize = 64 * 1024;
/// 20 MiB.
pub const BIG: usize = 20 * 1024 * 1024;

/// Chunk `i` of the generated test data.
pub fn chunk(i: usize) -> Bytes {
    Bytes::from(
        (0..CHUNK)
            .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The generated data of `len` bytes, as a stream of chunks.
pub fn generated(len: usize) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::iter((0..len.div_ceil(CHUNK)).map(move |i| {
        let mut c = chunk(i);
        c.truncate(len - i * CHUNK);
        Ok(c)
    }))
}

/// Byte count and SHA-256 (hex) of the generated data of `len` bytes.
pub fn generated_digest(len: usize) -> (usize, String) {
    let mut hash = Sha256::new();
    let mut n = 0;
    for i in 0..len.div_ceil(CHUNK) {
        let mut c = chunk(i);
        c.truncate(len - i * CHUNK);
        n += c.len();
        hash.update(&c);
    }
    (n, hex(&hash.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the upstream saw and how often it was called.
#[derive(Default)]
pub struct UpstreamState {
    pub hits: AtomicUsize,
    /// `(method, path?query, headers)` of every request, in order.
    pub seen: Mutex<Vec<Seen>>,
    /// Released by the test to let `/v1/gated-download` finish.
    pub release_download: Notify,
    /// Signalled by `/v1/gated-upload` once its first bytes arrived.
    pub upload_started: Notify,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
}

impl UpstreamState {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

/// A running upstream API on loopback.
pub struct Upstream {
    pub url: String,
    pub state: Arc<UpstreamState>,
}

/// Starts the upstream HTTP API: every path echoes what it received as JSON,
/// plus the special routes below `/v1/`.
pub async fn start_upstream() -> Upstream {
    let state = Arc::new(UpstreamState::default());
    let app = Router::new()
        .route("/v1/set-cookie", get(set_cookie))
        .route("/v1/download", get(download))
        .route("/v1/gated-download", get(gated_download))
        .route("/v1/upload", post(upload))
        .route("/v1/gated-upload", post(gated_upload))
        .route("/v1/slow", any(slow))
        .route("/v1/redirect", get(redirect))
        .fallback(echo)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { url, state }
}

async fn record(State(state): State<Arc<UpstreamState>>, request: Request, next: Next) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().unwrap().push(Seen {
        method: request.method().to_string(),
        target: request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: request.headers().clone(),
    });
    next.run(request).await
}

/// Reads a body as it streams: (byte count, SHA-256 hex).
async fn digest(body: Body) -> (usize, String) {
    let mut stream = body.into_data_stream();
    let mut hash = Sha256::new();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len();
        hash.update(&chunk);
    }
    (n, hex(&hash.finalize()))
}

async fn echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (len, sha256) = digest(body).await;
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .keys()
        .map(|k| {
            let values: Vec<_> = parts
                .headers
                .get_all(k)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            (k.as_str().to_owned(), values.into())
        })
        .collect();
    axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "len": len,
        "sha256": sha256,
    }))
    .into_response()
}

async fn set_cookie() -> Response {
    let mut response = "cookies".into_response();
    let h = response.headers_mut();
    for c in [
        "__Host-bff=planted; Path=/; Secure; HttpOnly",
        "__Host-bff-login=planted; Path=/; Secure",
        "theirs=1; Path=/",
    ] {
        h.append(header::SET_COOKIE, c.parse().unwrap());
    }
    h.insert(
        "clear-site-data",
        "\"cookies\", \"storage\"".parse().unwrap(),
    );
    h.insert("x-theirs", "kept".parse().unwrap());
    response
}

#[derive(serde::Deserialize)]
struct Size {
    bytes: usize,
}

async fn download(axum::extract::Query(size): axum::extract::Query<Size>) -> Response {
    Body::from_stream(generated(size.bytes)).into_response()
}

/// Sends the first chunk, then waits for the test to release the rest.
async fn gated_download(State(state): State<Arc<UpstreamState>>) -> Response {
    let stream = async_stream(state);
    Body::from_stream(stream).into_response()
}

fn async_stream(
    state: Arc<UpstreamState>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((0usize, state), |(i, state)| async move {
        if i == 2 {
            return None;
        }
        if i == 1 {
            state.release_download.notified().await;
        }
        Some((Ok(chunk(i)), (i + 1, state)))
    })
}

async fn upload(body: Body) -> Response {
    let (len, sha256) = digest(body).await;
    axum::Json(serde_json::json!({ "len": len, "sha256": sha256 })).into_response()
}

/// Signals when the first bytes arrived, then reads the rest.
async fn gated_upload(State(state): State<Arc<UpstreamState>>, body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut n = 0;
    let mut signalled = false;
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len();
        if !signalled && n > 0 {
            state.upload_started.notify_one();
            signalled = true;
        }
    }
    n.to_string().into_response()
}

/// Reads the whole request body, then falls silent for a minute.
async fn slow(body: Body) -> Response {
    digest(body).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    "too late".into_response()
}

async fn redirect() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/v1/elsewhere")]).into_response()
}

/// A WebSocket echo upstream that records the handshake's headers.
pub struct WsUpstream {
    pub url: String,
    pub handshakes: Arc<Mutex<Vec<(String, HeaderMap)>>>,
}

pub async fn start_ws_upstream() -> WsUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let handshakes: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
    let seen = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback =
                    |req: &tokio_tungstenite::tungstenite::handshake::server::Request, res| {
                        seen.lock()
                            .unwrap()
                            .push((req.uri().to_string(), req.headers().clone()));
                        Ok(res)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    } else if message.is_close() {
                        break;
                    }
                }
            });
        }
    });
    WsUpstream { url, handshakes }
}

/// A BFF with remote APIs mounted, in front of a dev IdP and the upstreams.
pub struct ProxyBff {
    pub idp: RunningIdp,
    pub bff: Bff,
    pub url: String,
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub upstream: Upstream,
    pub ws: WsUpstream,
    pub http: reqwest::Client,
}

/// An address nothing listens on.
pub async fn dead_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Mounts:
///
/// | prefix | upstream | token |
/// |---|---|---|
/// | `/api` | `/v1/` | user |
/// | `/open` | `/v1/` | none |
/// | `/maybe` | `/v1/` | user-or-none |
/// | `/either` | `/v1/` | user-or-client (scope `catalog.read`) |
/// | `/m2m` | `/v1/` | client (scope `catalog.read`) |
/// | `/slow` | `/v1/` | none, 300 ms timeout |
/// | `/trickle` | `/v1/` | none, 1 s timeout |
/// | `/dead` | a closed port | none |
/// | `/ws` | the WebSocket upstream | user, WebSockets on |
/// | `/ws-off` | the WebSocket upstream | user, WebSockets off |
/// | `/ws-fast` | the WebSocket upstream | user, WebSockets on, session re-checked every 100 ms |
/// | `/ws-expiring` | the WebSocket upstream | as `/ws-fast`, closed when the token expires unrenewed |
/// | `/readonly` | `/v1/` | user, `GET` and `POST` only |
///
/// plus `/local` (a local API route behind the CSRF layer) and the `/bff` routes.
pub async fn start() -> ProxyBff {
    start_with_store(ManualClock::starting_now(), None).await
}

/// [`start`], keeping the BFF's sessions in `store` when given (build the
/// store with the same `clock`).
pub async fn start_with_store(
    clock: ManualClock,
    store: Option<Arc<dyn SessionStore>>,
) -> ProxyBff {
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .id_token_lifetime(Duration::from_secs(3600))
        .start()
        .await
        .expect("dev idp");
    let upstream = start_upstream().await;
    let ws = start_ws_upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .scopes(["openid", "profile", "offline_access"])
        .build()
        .expect("config");
    let mut builder = Bff::builder(config)
        .public_url(&url)
        .clock(Arc::new(clock.clone()));
    if let Some(store) = store {
        builder = builder.store(store);
    }
    let bff = builder.build().expect("bff");

    let v1: url::Url = format!("{}/v1/", upstream.url).parse().unwrap();
    let mount = |prefix: &str, t: TokenPolicy| RemoteApi::new(prefix, v1.clone()).token(t);
    let client_scope = || Some("catalog.read".to_owned());
    let dead: url::Url = format!("http://{}/", dead_port().await).parse().unwrap();
    let ws_url: url::Url = ws.url.parse().unwrap();
    let app = Router::new()
        .merge(bff.proxy(mount("/api", TokenPolicy::User)))
        .merge(bff.proxy(mount("/open", TokenPolicy::None)))
        .merge(bff.proxy(mount("/maybe", TokenPolicy::UserOrNone)))
        .merge(bff.proxy(
            mount("/either", TokenPolicy::UserOrClient).client_token_request(client_scope(), None),
        ))
        .merge(
            bff.proxy(
                mount("/m2m", TokenPolicy::Client).client_token_request(client_scope(), None),
            ),
        )
        .merge(bff.proxy(mount("/slow", TokenPolicy::None).timeout(Duration::from_millis(300))))
        .merge(bff.proxy(mount("/trickle", TokenPolicy::None).timeout(Duration::from_secs(1))))
        .merge(bff.proxy(RemoteApi::new("/dead", dead).token(TokenPolicy::None)))
        .merge(bff.proxy(RemoteApi::new("/ws", ws_url.clone()).websockets(true)))
        .merge(bff.proxy(RemoteApi::new("/ws-off", ws_url.clone())))
        .merge(
            bff.proxy(
                RemoteApi::new("/ws-fast", ws_url.clone())
                    .websockets(true)
                    .websocket_session_check(Duration::from_millis(100)),
            ),
        )
        .merge(
            bff.proxy(
                RemoteApi::new("/ws-expiring", ws_url)
                    .websockets(true)
                    .websocket_session_check(Duration::from_millis(100))
                    .websocket_close_on_token_expiry(true),
            ),
        )
        .merge(bff.proxy(
            mount("/readonly", TokenPolicy::User).methods([http::Method::GET, http::Method::POST]),
        ))
        .merge(
            Router::new()
                .route("/local", get(|| async { "local" }))
                .layer(bff.csrf_layer()),
        )
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    ProxyBff {
        idp,
        bff,
        url,
        addr,
        clock,
        upstream,
        ws,
        http,
    }
}

impl ProxyBff {
    /// A signed-in browser; returns its session cookie value.
    pub async fn sign_in(&self) -> String {
        let browser = Browser::new(&self.url);
        browser.sign_in("/").await;
        browser.cookie("__Host-bff").expect("session cookie")
    }

    /// The access token currently stored in a session.
    pub async fn stored_token(&self, session: &str) -> String {
        let id = SessionId::parse(session).expect("session id");
        let v = self
            .bff
            .engine()
            .load_session(&id)
            .await
            .unwrap()
            .expect("session exists");
        v.record.tokens.access_token.secret().to_owned()
    }

    /// A request to the BFF; `session` adds the session cookie, `csrf` the header.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        session: Option<&str>,
        csrf: bool,
    ) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(s) = session {
            r = r.header("cookie", format!("__Host-bff={s}"));
        }
        if csrf {
            r = r.header("x-csrf", "1");
        }
        r
    }

    /// GET with the anti-forgery header; the upstream's echo as JSON.
    pub async fn echo(&self, path: &str, session: Option<&str>) -> (StatusCode, serde_json::Value) {
        let r = self
            .request(reqwest::Method::GET, path, session, true)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Sends a raw HTTP/1.1 request line (for targets reqwest would normalise)
    /// and returns the status code.
    pub async fn raw_status(&self, target: &str, session: Option<&str>) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let cookie = session
            .map(|s| format!("Cookie: __Host-bff={s}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nX-CSRF: 1\r\n{cookie}Connection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no status line for {target:?}: {text:?}"));
        status.parse().unwrap()
    }
}

/// The claims of a JWT (not verified: the tests only look).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json claims")
}

/// The single value of a header in an echo, if present.
pub fn echoed(echo: &serde_json::Value, name: &str) -> Option<String> {
    let values = echo["headers"].get(name)?.as_array()?;
    assert_eq!(values.len(), 1, "{name} once: {values:?}");
    values[0].as_str().map(str::to_owned)
}
