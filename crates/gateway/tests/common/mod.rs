//! Shared helpers: the gateway binary as a child process, a dev IdP, a
//! recording upstream API and a small cookie-keeping browser.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::StreamExt as _;
use http::{HeaderMap, StatusCode, header};
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use serde_json::{Value, json};

pub const CLIENT_ID: &str = "bff";
pub const CLIENT_SECRET: &str = "gateway-test-secret";

/// The path of the `oidc-bff` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_oidc-bff")
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A dev IdP with the gateway's client, issuing access tokens that live `lifetime`.
pub async fn idp(lifetime: Duration) -> RunningIdp {
    DevIdp::builder()
        .client(CLIENT_ID, CLIENT_SECRET)
        .access_token_lifetime(lifetime)
        .start()
        .await
        .expect("start the dev IdP")
}

/// Asks the IdP whether `token` is an active access token; its claims.
pub async fn introspect(idp: &RunningIdp, token: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{}/introspect", idp.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("introspection JSON")
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, exactly as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

impl Seen {
    pub fn bearer(&self) -> Option<String> {
        self.headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::to_owned)
    }
}

/// A test API on 127.0.0.1 that records every request. Its routes:
/// `/download/{n}` streams `n` MiB, `/slow` answers after 1.5 s (and
/// signals its start), anything else answers JSON with the byte count of
/// the (streamed, not buffered) request body.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    pub slow_started: Arc<tokio::sync::Notify>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let upstream = Upstream {
            addr: listener.local_addr().expect("addr"),
            seen: Arc::default(),
            hits: Arc::default(),
            slow_started: Arc::default(),
        };
        let app = Router::new()
            .route("/", any(record))
            .route("/{*path}", any(record))
            .with_state(upstream.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        upstream
    }

    pub fn url(&self, base: &str) -> String {
        format!("http://{}{base}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

async fn record(State(up): State<Upstream>, request: Request) -> Response {
    up.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut body_len = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => body_len += bytes.len(),
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    up.seen.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body_len,
    });
    let path = parts.uri.path();
    if let Some(mib) = path
        .rsplit_once("/download/")
        .and_then(|(_, n)| n.parse::<usize>().ok())
    {
        let chunk = bytes::Bytes::from(vec![b'x'; 1024 * 1024]);
        let stream = futures_util::stream::iter(
            (0..mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from_stream(stream))
            .expect("response");
    }
    if path.ends_with("/slow") {
        up.slow_started.notify_one();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        return "slow done".into_response();
    }
    axum::Json(json!({ "target": target, "bytes": body_len })).into_response()
}

/// The gateway binary, running `serve` with a temporary config file.
pub struct Gateway {
    child: Child,
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Writes `config` (with `{port}` replaced by a free port) and starts
    /// `oidc-bff serve`, waiting until `/healthz` answers.
    pub async fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[]).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch(config, env, None).await
    }

    /// Like [`start`](Self::start) for a gateway serving HTTPS
    /// (`[server.tls]` in `config`) with a certificate of the CA `ca_pem`
    /// for 127.0.0.1: `url` is `https://127.0.0.1:{port}`.
    pub async fn start_tls(config: &str, ca_pem: &str) -> Gateway {
        Self::launch(config, &[], Some(ca_pem)).await
    }

    async fn launch(config: &str, env: &[(&str, &str)], ca_pem: Option<&str>) -> Gateway {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bff.toml");
        std::fs::write(&path, config.replace("{port}", &port.to_string())).expect("write config");
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("OIDC_BFF") {
                command.env_remove(k);
            }
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the gateway");
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut log = log.lock().expect("lock");
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let mut gateway = Gateway {
            child,
            port,
            url: format!(
                "{}://127.0.0.1:{port}",
                if ca_pem.is_some() { "https" } else { "http" }
            ),
            dir,
            log,
        };
        let client = match ca_pem {
            Some(ca) => trusting(ca).build().expect("client"),
            None => reqwest::Client::new(),
        };
        gateway.wait_healthy(&client).await;
        gateway
    }

    async fn wait_healthy(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the gateway exited with {status}:\n{}", self.logs());
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not start:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The gateway's stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    /// A `VmHWM`/`VmRSS`-style field of /proc/<pid>/status, in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("memory field")
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit (at most `limit`).
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("bff.toml")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The standard test configuration: the gateway on `{port}`, the IdP, and
/// `/api` → `{upstream}/base` with the user's token.
pub fn config(idp: &RunningIdp, upstream: &Upstream, refresh_margin: u64) -> String {
    config_with(idp, upstream, refresh_margin, "")
}

/// [`config`] with `extra` TOML (sections) inserted before the `[[api]]` list.
pub fn config_with(
    idp: &RunningIdp,
    upstream: &Upstream,
    refresh_margin: u64,
    extra: &str,
) -> String {
    format!(
        r#"
listen = "127.0.0.1:{{port}}"
public_url = "http://127.0.0.1:{{port}}"

[oidc]
authority = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "offline_access"]
refresh_margin = {refresh_margin}

[session]
store = "memory"

[log]
level = "debug,hyper=info,hyper_util=info,reqwest=info,h2=info,rustls=info"

{extra}

[[api]]
path = "/api"
upstream = "{upstream}"
token = "user"

[[api]]
path = "/svc"
upstream = "{svc}"
token = "client"
"#,
        issuer = idp.issuer(),
        upstream = upstream.url("/base"),
        svc = upstream.url("/svc-base"),
    )
}

/// A client builder that trusts only the CA `ca_pem`.
pub fn trusting(ca_pem: &str) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA certificate");
    reqwest::Client::builder().tls_certs_only([ca])
}

/// A client that keeps cookies like a browser would for one host (cookies
/// ignore ports), and follows redirects itself.
pub struct Browser {
    pub http: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Self::with(reqwest::Client::builder())
    }

    /// A browser that trusts only the CA `ca_pem` (for a gateway serving HTTPS).
    pub fn trusting(ca_pem: &str) -> Browser {
        Self::with(trusting(ca_pem))
    }

    fn with(builder: reqwest::ClientBuilder) -> Browser {
        Browser {
            http: builder
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            cookies: BTreeMap::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(header::SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let pair = value.split(';').next().unwrap_or_default();
            let Some((name, v)) = pair.split_once('=') else {
                continue;
            };
            let expired = value.to_ascii_lowercase().contains("max-age=0");
            if v.is_empty() || expired {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), v.trim().to_owned());
            }
        }
    }

    /// GET `url`, following redirects; the final response.
    pub async fn navigate(&mut self, url: &str) -> reqwest::Response {
        let mut url = reqwest::Url::parse(url).expect("url");
        for _ in 0..10 {
            let response = self
                .http
                .get(url.clone())
                .header(header::COOKIE, self.cookie_header())
                .send()
                .await
                .expect("navigate");
            self.store(response.headers());
            if !response.status().is_redirection() {
                return response;
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .expect("redirect location");
            url = url.join(location).expect("redirect target");
        }
        panic!("too many redirects");
    }

    /// Signs in through the gateway.
    pub async fn login(&mut self, gateway: &Gateway) {
        self.navigate(&format!("{}/bff/login?returnUrl=/", gateway.url))
            .await;
        assert!(
            self.session().is_some(),
            "no session cookie after sign-in; cookies: {:?}\n{}",
            self.cookies.keys(),
            gateway.logs()
        );
    }

    pub fn session(&self) -> Option<&str> {
        self.cookies.get("__Host-bff").map(String::as_str)
    }

    /// A request to the gateway carrying the cookies and `X-CSRF: 1`.
    pub fn api(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(header::COOKIE, self.cookie_header())
            .header("x-csrf", "1")
    }

    pub async fn get_json(&self, url: &str) -> (StatusCode, Value) {
        let response = self
            .api(reqwest::Method::GET, url)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }
}

/// Sends a raw HTTP/1.1 GET with `target` exactly as given (no client-side
/// normalisation) and returns the status code.
pub async fn raw_get(port: u16, target: &str, cookie: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-CSRF: 1\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {target:?}: {text:?}"))
}

/// Runs `oidc-bff check --config <path>` with extra environment; (exit code, stdout, stderr).
pub fn check(path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.arg("check").arg("--config").arg(path);
    for (k, _) in std::env::vars() {
        if k.starts_with("OIDC_BFF") {
            command.env_remove(k);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
