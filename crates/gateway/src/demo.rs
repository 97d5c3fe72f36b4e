//! `oidc-bff demo`: the development IdP, a sample API and the gateway with a
//! small sample page, all on loopback, in one process.
//!
//! ```no_run
//! # async fn run() -> Result<(), oidc_bff_gateway::GatewayError> {
//! use oidc_bff_gateway::demo::{Demo, DemoOptions};
//!
//! let demo = Demo::start(DemoOptions::default()).await?;
//! println!("open {}", demo.url());
//! demo.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The dev IdP signs the demo user in without a form, so the sign-in also
//! works from a script (`curl -L` with a cookie jar). Access tokens live
//! [`DemoOptions::token_lifetime`] (30 s) and are renewed
//! [`DemoOptions::refresh_margin`] (10 s) before they expire, so a refresh
//! shows on the page after about 20 s.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use oidc_bff::tokens::SessionId;
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::GatewayError;
use crate::config::{GatewayConfig, LogFormat};
use crate::serve::Gateway;

const INDEX_HTML: &str = include_str!("../assets/demo/index.html");
const DEMO_JS: &str = include_str!("../assets/demo/demo.js");
const DEMO_CSS: &str = include_str!("../assets/demo/demo.css");

/// Where and how the demo runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DemoOptions {
    /// The gateway's address; `None`: 127.0.0.1:8080, or a free port if taken.
    pub listen: Option<SocketAddr>,
    /// The dev IdP's port on 127.0.0.1; `None`: 9000, or a free port if taken.
    pub idp_port: Option<u16>,
    /// The sample API's port on 127.0.0.1; `None`: a free port.
    pub api_port: Option<u16>,
    /// Lifetime of the access tokens the dev IdP issues (default 30 s).
    pub token_lifetime: Duration,
    /// How long before expiry the gateway renews them (default 10 s).
    pub refresh_margin: Duration,
    /// The log format of the gateway.
    pub log_format: LogFormat,
    /// Serve the page over the gateway's own HTTPS (HTTP/2); `None`: plain
    /// HTTP.
    pub tls: Option<DemoTls>,
}

/// The demo's certificate, with [`DemoOptions::tls`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum DemoTls {
    /// A self-signed certificate for `localhost` and the gateway's address,
    /// made for this run (browsers warn about it).
    SelfSigned,
    /// A certificate chain and key in PEM files.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            listen: None,
            idp_port: None,
            api_port: None,
            token_lifetime: Duration::from_secs(30),
            refresh_margin: Duration::from_secs(10),
            log_format: LogFormat::Human,
            tls: None,
        }
    }
}

/// The running demo.
#[derive(Debug)]
pub struct Demo {
    url: String,
    idp: RunningIdp,
    api_url: String,
    metrics_url: String,
    config: GatewayConfig,
    stop: tokio::sync::oneshot::Sender<()>,
    gateway: JoinHandle<Result<(), GatewayError>>,
    api: JoinHandle<()>,
    /// The self-signed certificate's directory, removed at shutdown.
    tls_dir: Option<PathBuf>,
}

impl Demo {
    /// Starts the dev IdP, the sample API and the gateway.
    pub async fn start(options: DemoOptions) -> Result<Demo, GatewayError> {
        let gateway_listener =
            bind_or_free(options.listen, SocketAddr::from(([127, 0, 0, 1], 8080))).await?;
        let gateway_addr = gateway_listener.local_addr()?;
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let public_url = format!("{scheme}://{gateway_addr}");
        let (tls_toml, tls_dir) = match &options.tls {
            None => (String::new(), None),
            Some(tls) => {
                let (cert, key, dir) = match tls {
                    DemoTls::Files { cert, key } => (cert.clone(), key.clone(), None),
                    DemoTls::SelfSigned => {
                        let (cert, key, dir) = self_signed(gateway_addr)?;
                        (cert, key, Some(dir))
                    }
                };
                let quote = |p: &PathBuf| toml::Value::String(p.display().to_string()).to_string();
                (
                    format!(
                        "\n[server.tls]\ncert = {}\nkey = {}\n",
                        quote(&cert),
                        quote(&key)
                    ),
                    dir,
                )
            }
        };

        // Throwaway secrets, fresh each run.
        let bff_secret = SessionId::generate().as_str().to_owned();
        let api_secret = SessionId::generate().as_str().to_owned();
        let builder = DevIdp::builder()
            .client("bff", &bff_secret)
            .client("sample-api", &api_secret)
            .redirect_uri("bff", &format!("{public_url}/bff/callback"))
            .post_logout_redirect_uri("bff", &format!("{public_url}/"))
            .access_token_lifetime(options.token_lifetime);
        let idp = match options.idp_port {
            Some(port) => {
                builder
                    .start_on(SocketAddr::from(([127, 0, 0, 1], port)))
                    .await?
            }
            None => match builder
                .clone()
                .start_on(SocketAddr::from(([127, 0, 0, 1], 9000)))
                .await
            {
                Ok(idp) => idp,
                Err(e) if e.kind() == ErrorKind::AddrInUse => builder.start().await?,
                Err(e) => return Err(e.into()),
            },
        };

        let api_listener = TcpListener::bind(SocketAddr::from((
            [127, 0, 0, 1],
            options.api_port.unwrap_or(0),
        )))
        .await?;
        let api_url = format!("http://{}", api_listener.local_addr()?);
        let sample = SampleApi::new(&idp, &api_secret, &api_url)?;
        let api = tokio::spawn(async move {
            if let Err(e) = axum::serve(api_listener, sample.router()).await {
                tracing::warn!(error = %e, "the sample API stopped");
            }
        });

        // The operations listener: 9464 (Prometheus' exporter port), or a
        // free one. Released here, bound again by the gateway.
        let metrics_addr = bind_or_free(None, SocketAddr::from(([127, 0, 0, 1], 9464)))
            .await?
            .local_addr()?;
        let metrics_url = format!("http://{metrics_addr}/metrics");

        let log_format = match options.log_format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        let toml = format!(
            r#"
listen = "{gateway_addr}"
public_url = "{public_url}"

[oidc]
authority = "{authority}"
client_id = "bff"
client_secret = "{bff_secret}"
scopes = ["openid", "profile", "email", "offline_access"]
refresh_margin = {margin}

[session]
store = "memory"

[log]
format = "{log_format}"
{tls_toml}
[metrics]
listen = "{metrics_addr}"

[[api]]
path = "/api"
upstream = "{api_url}"
token = "user"
"#,
            authority = idp.issuer(),
            margin = options.refresh_margin.as_secs(),
        );
        let config = GatewayConfig::from_toml_str(&toml, std::iter::empty::<(String, String)>())?;
        let gateway = Gateway::new(config.clone())?.with_site(site(&metrics_url));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(gateway.serve(gateway_listener, async move {
            let _ = stopped.await;
        }));
        Ok(Demo {
            url: format!("{public_url}/"),
            idp,
            api_url,
            metrics_url,
            config,
            stop,
            gateway,
            api,
            tls_dir,
        })
    }

    /// The URL to open in a browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dev IdP.
    pub fn idp(&self) -> &RunningIdp {
        &self.idp
    }

    /// The sample API's own URL (the page reaches it through the gateway at `/api`).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The gateway's Prometheus metrics (its operations listener), linked
    /// from the demo page.
    pub fn metrics_url(&self) -> &str {
        &self.metrics_url
    }

    /// The gateway's settings (as `oidc-bff check` would print them).
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Stops the gateway (letting requests finish), the sample API and the IdP.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        match self.gateway.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "the gateway stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "the gateway task failed"),
            Ok(Ok(())) => {}
        }
        self.api.abort();
        self.idp.shutdown().await;
        if let Some(dir) = self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes a self-signed certificate for `localhost` and `addr`'s IP, and
/// its key, to a new directory under the system's temporary directory:
/// (certificate, key, directory).
fn self_signed(addr: SocketAddr) -> Result<(PathBuf, PathBuf, PathBuf), GatewayError> {
    let names = vec!["localhost".to_owned(), addr.ip().to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| GatewayError::Startup(format!("demo: cannot make a certificate: {e}")))?;
    let dir = std::env::temp_dir().join(format!(
        "oidc-bff-demo-tls-{}-{}",
        std::process::id(),
        addr.port()
    ));
    std::fs::create_dir_all(&dir)?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem())?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    Ok((cert, key, dir))
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}

/// Binds `requested`, or `default` falling back to a free port when taken.
async fn bind_or_free(
    requested: Option<SocketAddr>,
    default: SocketAddr,
) -> std::io::Result<TcpListener> {
    match requested {
        Some(addr) => TcpListener::bind(addr).await,
        None => match TcpListener::bind(default).await {
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                TcpListener::bind(SocketAddr::new(default.ip(), 0)).await
            }
            other => other,
        },
    }
}

/// The demo page: HTML (linking `metrics_url`), script and styles, with a
/// strict CSP.
fn site(metrics_url: &str) -> Router {
    fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
        let mut response = body.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
    let index: Arc<str> = INDEX_HTML.replace("{{METRICS_URL}}", metrics_url).into();
    Router::new()
        .route(
            "/",
            get(|| async move { asset("text/html; charset=utf-8", index.to_string()) }),
        )
        .route(
            "/demo.js",
            get(|| async { asset("text/javascript; charset=utf-8", DEMO_JS) }),
        )
        .route(
            "/demo.css",
            get(|| async { asset("text/css; charset=utf-8", DEMO_CSS) }),
        )
}

/// The sample API: checks the token at the IdP's introspection endpoint and
/// echoes what it learned. A DPoP-bound token (`Authorization: DPoP`, with
/// `[oidc] dpop = true`) must come with a valid proof of the key in its
/// `cnf.jkt` (checked by the dev IdP's resource-server verifier).
#[derive(Clone)]
struct SampleApi {
    http: reqwest::Client,
    introspect: String,
    secret: Arc<str>,
    /// `http://host:port` of this API, for the proofs' `htu`.
    base: Arc<str>,
    dpop: Arc<oidc_bff_dev_idp::dpop::ResourceVerifier>,
}

impl SampleApi {
    fn new(idp: &RunningIdp, secret: &str, base: &str) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| GatewayError::Startup(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            introspect: format!("{}/introspect", idp.issuer()),
            secret: secret.into(),
            base: base.into(),
            dpop: Arc::default(),
        })
    }

    fn router(self) -> Router {
        Router::new()
            .route("/", any(sample_api))
            .route("/{*path}", any(sample_api))
            .with_state(self)
    }
}

async fn sample_api(
    State(api): State<SampleApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let unauthorized = |error: &str| {
        let mut r = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": error })),
        )
            .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (dpop, token) = match authorization.split_once(' ') {
        Some(("Bearer", token)) => (false, token),
        Some(("DPoP", token)) => (true, token),
        _ => return unauthorized("missing bearer token"),
    };
    let answer = api
        .http
        .post(&api.introspect)
        .basic_auth("sample-api", Some(&*api.secret))
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await;
    let info: Value = match answer {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(_) => return (StatusCode::BAD_GATEWAY, "bad introspection answer").into_response(),
        },
        _ => return (StatusCode::BAD_GATEWAY, "introspection failed").into_response(),
    };
    if info["active"] != Value::Bool(true) || info["token_type"] == "refresh_token" {
        return unauthorized("invalid_token");
    }
    let bound = info.pointer("/cnf/jkt").and_then(Value::as_str);
    if dpop || bound.is_some() {
        // A bound token needs its proof; the proof needs a bound token.
        let url = format!(
            "{}{}",
            api.base,
            uri.path_and_query().map_or("/", |p| p.as_str())
        );
        if let Err(rejection) = api
            .dpop
            .verify_request(&method, &url, &headers, |_| bound.map(str::to_owned))
        {
            return rejection.into_response();
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let exp = info["exp"].as_u64().unwrap_or_default();
    let sub = info["sub"].as_str().unwrap_or("someone");
    let body = json!({
        "message": format!("Hello {sub}, this is the sample API."),
        "method": method.as_str(),
        "path": uri.path(),
        "receivedCookies": headers.contains_key(header::COOKIE),
        "token": {
            "sub": info["sub"],
            "client_id": info["client_id"],
            "scope": info["scope"],
            "jti": info["jti"],
            "iat": info["iat"],
            "exp": exp,
            "expiresIn": exp.saturating_sub(now),
        },
        "time": now,
    });
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
