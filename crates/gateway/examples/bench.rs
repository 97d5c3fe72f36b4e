//! The harness of the benchmarks in `bench/` (see `bench/README.md`).
//!
//! One binary with a subcommand per job, so the scripts build it once:
//!
//! ```text
//! bench upstream --listen 127.0.0.1:18401          # a fast upstream answering a small JSON body
//! bench idp --port 18404 --control-port 18405 \     # the dev IdP, out of process, with its
//!           --public-url http://127.0.0.1:18403      #   counters at GET /counters
//! bench storm --url http://127.0.0.1:18403/api/x --cookie '__Host-bff=…' -n 1000
//! bench startup --bin target/release/oidc-bff --config bff.toml --url http://127.0.0.1:18403
//! bench sessions-memory --sessions 100000          # RSS of the gateway with N live sessions
//! ```
//!
//! The gateway measured by `bench/proxy.sh`, `bench/refresh_storm.sh` and
//! `bench/startup.sh` is always the real release `oidc-bff serve` process;
//! this binary only plays the other parts. `sessions-memory` is the exception:
//! it runs the gateway in-process, so it can fill its memory store directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use clap::{Parser, Subcommand};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use oidc_bff::tokens::SessionId;
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use oidc_bff_gateway::{Gateway, GatewayConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// The client the benchmarks register at the dev IdP. Not a real secret.
const CLIENT_ID: &str = "bff";
const CLIENT_SECRET: &str = "bench-client-secret";

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Harness of the oidc-bff benchmarks (see bench/README.md)"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A fast upstream API: every path answers a small JSON body.
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// The dev IdP on 127.0.0.1:PORT, with its counters as JSON at
    /// http://127.0.0.1:CONTROL_PORT/counters.
    Idp {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        control_port: u16,
        /// The gateway's public URL (its redirect URIs are registered).
        #[arg(long)]
        public_url: String,
        /// Access token lifetime, seconds.
        #[arg(long, default_value_t = 3600)]
        lifetime: u64,
    },
    /// N requests on N connections opened beforehand, released at once;
    /// prints the wall time until the last answer and the statuses as JSON.
    Storm {
        #[arg(long)]
        url: String,
        /// The `Cookie` header value.
        #[arg(long)]
        cookie: String,
        #[arg(short, default_value_t = 1000)]
        n: usize,
    },
    /// Starts the gateway RUNS times; time from spawn to listening and to
    /// `/readyz` 200.
    Startup {
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// The gateway's base URL (from the config).
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// The gateway in-process with N live sessions in its memory store;
    /// prints the resident memory per session.
    SessionsMemory {
        #[arg(long, default_value_t = 100_000)]
        sessions: usize,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.command {
            Cmd::Upstream { listen } => upstream(listen).await,
            Cmd::Idp {
                port,
                control_port,
                public_url,
                lifetime,
            } => idp(port, control_port, &public_url, lifetime).await,
            Cmd::Storm { url, cookie, n } => storm(&url, &cookie, n).await,
            Cmd::Startup {
                bin,
                config,
                url,
                runs,
            } => startup(&bin, &config, &url, runs).await,
            Cmd::SessionsMemory { sessions } => sessions_memory(sessions).await,
        }
    })
}

// ---------------------------------------------------------------- upstream

async fn upstream(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(listen).await?;
    println!("upstream listening on {}", listener.local_addr()?);
    axum::serve(listener, upstream_router()).await?;
    Ok(())
}

/// Answers `{"ok":true,"bearer":…}`: whether an `Authorization: Bearer`
/// header arrived, so a script can check the proxy attached the token.
fn upstream_router() -> Router {
    async fn answer(headers: HeaderMap) -> Response {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"Bearer "));
        let body: &'static str = if bearer {
            r#"{"ok":true,"bearer":true}"#
        } else {
            r#"{"ok":true,"bearer":false}"#
        };
        let mut response = body.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
    Router::new()
        .route("/", any(answer))
        .route("/{*path}", any(answer))
}

// --------------------------------------------------------------------- idp

async fn idp(
    port: u16,
    control_port: u16,
    public_url: &str,
    lifetime: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let public_url = public_url.trim_end_matches('/');
    let idp = DevIdp::builder()
        .client(CLIENT_ID, CLIENT_SECRET)
        .redirect_uri(CLIENT_ID, &format!("{public_url}/bff/callback"))
        .post_logout_redirect_uri(CLIENT_ID, &format!("{public_url}/"))
        .access_token_lifetime(Duration::from_secs(lifetime))
        .start_on(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    let control = Router::new()
        .route("/counters", get(counters))
        .with_state(idp.clone());
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], control_port))).await?;
    println!(
        "dev IdP {} (counters on {})",
        idp.issuer(),
        listener.local_addr()?
    );
    axum::serve(listener, control).await?;
    Ok(())
}

async fn counters(State(idp): State<RunningIdp>) -> Response {
    let c = idp.counters();
    axum::Json(json!({
        "discovery": c.discovery,
        "jwks": c.jwks,
        "authorize": c.authorize,
        "code_grants": c.code_grants,
        "refresh_attempts": c.refresh_attempts,
        "refresh_grants": c.refresh_grants,
        "refresh_reuse_detected": c.refresh_reuse_detected,
        "token_errors": c.token_errors,
        "revocations": c.revocations,
    }))
    .into_response()
}

// ------------------------------------------------------------------- storm

async fn storm(url: &str, cookie: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let url = url::Url::parse(url)?;
    let addr: SocketAddr = format!(
        "{}:{}",
        url.host_str().ok_or("no host")?,
        url.port_or_known_default().ok_or("no port")?
    )
    .parse()?;
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let request: Arc<[u8]> = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
    .into();

    // Every connection is open before the first request is sent.
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for mut stream in streams {
        let request = request.clone();
        let mut go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            go.wait_for(|go| *go).await.map_err(|e| e.to_string())?;
            stream
                .write_all(&request)
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = Vec::with_capacity(1024);
            tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
                .await
                .map_err(|_| "no answer within 60 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let done = Instant::now();
            let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            Ok::<_, String>((status, done))
        }));
    }
    // Let every task reach its wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    go_tx.send(true)?;
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut last = start;
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        match task.await? {
            Ok((status, done)) => {
                *statuses.entry(status.to_string()).or_default() += 1;
                last = last.max(done);
                latencies.push(done.duration_since(start));
            }
            Err(e) => {
                eprintln!("request failed: {e}");
                *statuses.entry("error".into()).or_default() += 1;
            }
        }
    }
    latencies.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .map(ms)
    };
    println!(
        "{}",
        json!({
            "requests": n,
            "wall_ms": ms(last.duration_since(start)),
            "first_ms": pick(0.0),
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "statuses": statuses,
        })
    );
    Ok(())
}

// ----------------------------------------------------------------- startup

/// One HTTP/1.1 GET; the status, or `None` when the connection fails.
async fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
}

async fn startup(
    bin: &std::path::Path,
    config: &std::path::Path,
    url: &str,
    runs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let url = url::Url::parse(url)?;
    let addr: SocketAddr = format!(
        "{}:{}",
        url.host_str().ok_or("no host")?,
        url.port_or_known_default().ok_or("no port")?
    )
    .parse()?;
    let mut listening = Vec::with_capacity(runs);
    let mut ready = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut first_listen = None;
        let deadline = start + Duration::from_secs(30);
        let outcome = loop {
            if Instant::now() > deadline {
                break Err("not ready within 30 s");
            }
            if let Some(status) = child.try_wait()? {
                eprintln!("the gateway exited: {status}");
                break Err("the gateway exited");
            }
            match get_status(addr, "/readyz").await {
                Some(200) => break Ok(start.elapsed()),
                Some(_) => {
                    first_listen.get_or_insert(start.elapsed());
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_micros(250)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        let took = outcome?;
        listening.push(first_listen.unwrap_or(took));
        ready.push(took);
    }
    listening.sort();
    ready.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 1e2;
    let stats = |v: &[Duration]| {
        json!({
            "min_ms": ms(v[0]),
            "median_ms": ms(v[v.len() / 2]),
            "max_ms": ms(v[v.len() - 1]),
        })
    };
    println!(
        "{}",
        json!({ "runs": runs, "listening": stats(&listening), "ready": stats(&ready) })
    );
    Ok(())
}

// --------------------------------------------------------- sessions-memory

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A browser that keeps cookies and follows redirects by hand.
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn navigate(&mut self, url: &str) -> Result<StatusCode, Box<dyn std::error::Error>> {
        let mut url = reqwest::Url::parse(url)?;
        for _ in 0..10 {
            let response = self
                .http
                .get(url.clone())
                .header(header::COOKIE, self.cookie_header())
                .send()
                .await?;
            for value in response.headers().get_all(header::SET_COOKIE) {
                let pair = value.to_str()?.split(';').next().unwrap_or_default();
                if let Some((name, v)) = pair.split_once('=') {
                    self.cookies.insert(name.trim().into(), v.trim().into());
                }
            }
            if !response.status().is_redirection() {
                return Ok(response.status());
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .ok_or("redirect without location")?
                .to_str()?;
            url = url.join(location)?;
        }
        Err("too many redirects".into())
    }
}

async fn sessions_memory(n: usize) -> Result<(), Box<dyn std::error::Error>> {
    // Upstream and gateway on free ports; the IdP knows the gateway's URL.
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream_listener.local_addr()?;
    tokio::spawn(async move { axum::serve(upstream_listener, upstream_router()).await });
    let gateway_listener = TcpListener::bind("127.0.0.1:0").await?;
    let public_url = format!("http://{}", gateway_listener.local_addr()?);
    let idp = DevIdp::builder()
        .client(CLIENT_ID, CLIENT_SECRET)
        .redirect_uri(CLIENT_ID, &format!("{public_url}/bff/callback"))
        .access_token_lifetime(Duration::from_secs(3600))
        .start()
        .await?;
    let toml = format!(
        r#"
listen = "{addr}"
public_url = "{public_url}"
[oidc]
authority = "{authority}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
[log]
level = "warn"
[[api]]
path = "/api"
upstream = "http://{upstream_addr}"
token = "user"
"#,
        addr = gateway_listener.local_addr()?,
        authority = idp.issuer(),
    );
    let config = GatewayConfig::from_toml_str(&toml, std::iter::empty::<(String, String)>())?;
    let gateway = Gateway::new(config)?;
    let bff = gateway.bff().clone();
    let cookie_name = bff.settings().cookie_name.clone();
    tokio::spawn(gateway.serve(gateway_listener, std::future::pending()));

    // One real sign-in: the template of every session.
    let mut browser = Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?,
        cookies: BTreeMap::new(),
    };
    browser
        .navigate(&format!("{public_url}/bff/login?returnUrl=/"))
        .await?;
    let id = browser
        .cookies
        .get(&cookie_name)
        .and_then(|v| SessionId::parse(v))
        .ok_or("no session after sign-in")?;
    let store = bff.engine().store().clone();
    let template = store
        .load(&id)
        .await?
        .ok_or("session not in the store")?
        .record;
    let token_bytes = template.tokens.access_token.secret().len()
        + template
            .tokens
            .refresh_token
            .as_ref()
            .map_or(0, |t| t.secret().len())
        + template
            .tokens
            .id_token
            .as_ref()
            .map_or(0, |t| t.secret().len());
    let api_call = |browser: &Browser| {
        browser
            .http
            .get(format!("{public_url}/api/hello"))
            .header(header::COOKIE, browser.cookie_header())
            .header("X-CSRF", "1")
            .send()
    };
    // Warm every code path once before the baseline.
    api_call(&browser).await?.error_for_status()?;

    let before = rss_kib();
    let started = Instant::now();
    for _ in 0..n {
        // A deep copy: each session owns its strings, as after real sign-ins.
        let mut record = (*template).clone();
        record.logout_id = SessionId::generate().as_str().to_owned();
        store.create(&SessionId::generate(), record).await?;
    }
    let fill = started.elapsed();
    let after = rss_kib();
    // The signed-in session still works among all the others.
    let status = api_call(&browser).await?.status();
    let per_session = (after.saturating_sub(before) as f64 * 1024.0) / n.max(1) as f64;
    println!(
        "{}",
        json!({
            "sessions": n,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "bytes_per_session": per_session.round(),
            "token_bytes_per_session": token_bytes,
            "overhead_bytes_per_session": (per_session - token_bytes as f64).round(),
            "claims": template.claims.len(),
            "fill_ms": fill.as_millis() as u64,
            "api_status_after": status.as_u16(),
        })
    );
    idp.shutdown().await;
    Ok(())
}
