//! Configuration reload without a restart.
//!
//! The server serves a [`ReloadService`]: each request loads the current
//! application (a cheap clone behind a lock) and runs it, so a
//! reload swaps routes, frontends and route rules between two requests
//! while connections, requests in flight and sessions stay. The session
//! store is kept, and so is each frontend's [`Bff`] (and token engine) whose
//! client settings did not change.
//!
//! Settings the running process cannot change (the listeners, the store
//! and its keys, logging, the admin token, the worker threads) are refused
//! with a message naming the key; so is any invalid file, with the loader's
//! key-precise problems. Either way the old configuration stays in force.
//!
//! `SIGHUP` reloads the file the gateway was started with; with `[server]
//! watch_config = true` so does a change of its modification time (checked
//! every second). [`ReloadHandle::reload`] is the library call.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::response::Response;
use oidc_bff::Bff;
use tower::Service;

use crate::GatewayError;
use crate::config::GatewayConfig;
use crate::frontends::{App, Parts, bff_key, build_bff, router};

/// How often `watch_config` looks at the file's modification time.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Reloads a running gateway's settings; cheap to clone. Made by
/// [`Gateway::reload_handle`](crate::Gateway::reload_handle).
#[derive(Clone)]
pub struct ReloadHandle {
    inner: Arc<Inner>,
}

struct Inner {
    /// The application requests are served by.
    current: RwLock<App>,
    /// What it was built from; held while a reload builds the next one.
    parts: tokio::sync::Mutex<Parts>,
}

impl std::fmt::Debug for ReloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadHandle").finish_non_exhaustive()
    }
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The top-level keys whose settings changed, e.g. `api`, `frontend`.
    pub changed: Vec<String>,
    /// Frontends whose BFF was kept: `default` or `frontend.N`.
    pub kept: Vec<String>,
    /// Frontends whose BFF was built anew (new, or client settings changed).
    pub rebuilt: Vec<String>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |l: &[String]| {
            if l.is_empty() {
                "none".to_owned()
            } else {
                l.join(", ")
            }
        };
        write!(
            f,
            "changed: {}; kept: {}; rebuilt: {}",
            list(&self.changed),
            list(&self.kept),
            list(&self.rebuilt)
        )
    }
}

impl ReloadHandle {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(router(&parts)),
                parts: tokio::sync::Mutex::new(parts),
            }),
        }
    }

    /// The service the server runs: each request goes to the application
    /// in force when it arrives.
    pub fn service(&self) -> ReloadService {
        ReloadService {
            handle: self.clone(),
        }
    }

    /// The settings in force.
    pub async fn config(&self) -> Arc<GatewayConfig> {
        self.inner.parts.lock().await.config.clone()
    }

    /// Loads the file the settings in force came from again (with the
    /// process's environment) and applies it.
    pub async fn reload_file(&self) -> Result<Reloaded, GatewayError> {
        let Some(path) = self.config().await.source.clone() else {
            return Err(GatewayError::Reload(
                "the settings were not loaded from a file".into(),
            ));
        };
        let config = tokio::task::spawn_blocking(move || GatewayConfig::load(&path))
            .await
            .map_err(|e| GatewayError::Reload(format!("loading the file failed: {e}")))??;
        self.reload(config).await
    }

    /// Applies `config`: routes, frontends and route rules change for the
    /// next request; the session store stays, and so does each frontend's
    /// BFF whose client settings are unchanged. A setting that needs a
    /// restart is refused ([`GatewayError::Reload`], naming the key), and
    /// the settings in force stay.
    pub async fn reload(&self, config: GatewayConfig) -> Result<Reloaded, GatewayError> {
        let mut parts = self.inner.parts.lock().await;
        let old = parts.config.clone();
        restart_only(&old, &config)?;
        let mut report = Reloaded {
            changed: changed_sections(&old, &config),
            ..Reloaded::default()
        };
        let bff = if bff_key(&old, None) == bff_key(&config, None) {
            report.kept.push("default".into());
            parts.bff.clone()
        } else {
            report.rebuilt.push("default".into());
            build_bff(&config, None, &parts.store, parts.login_keys.as_ref())?
        };
        let mut frontends = Vec::with_capacity(config.frontends.len());
        for i in 0..config.frontends.len() {
            let key = bff_key(&config, Some(i));
            let name = config.frontends[i]
                .name
                .clone()
                .unwrap_or_else(|| format!("frontend.{i}"));
            match parts.frontends.iter().find(|(_, k)| *k == key) {
                Some((bff, _)) => {
                    report.kept.push(name);
                    frontends.push((bff.clone(), key));
                }
                None => {
                    report.rebuilt.push(name);
                    let bff = build_bff(&config, Some(i), &parts.store, parts.login_keys.as_ref())?;
                    let early = bff.clone();
                    tokio::spawn(async move { discover(&early).await });
                    frontends.push((bff, key));
                }
            }
        }
        let next = Parts {
            config: Arc::new(config),
            bff,
            frontends,
            store: parts.store.clone(),
            login_keys: parts.login_keys.clone(),
            site: parts.site.clone(),
        };
        let app = router(&next);
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = app;
        *parts = next;
        Ok(report)
    }

    fn current(&self) -> App {
        self.inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Loads provider discovery ahead of the first sign-in.
pub(crate) async fn discover(bff: &Bff) {
    if let Err(err) = bff.engine().metadata().await {
        tracing::warn!(error = %err, "provider discovery failed; will retry on demand");
    }
}

/// The settings a running gateway cannot change: the first one that
/// differs, as an error naming its key.
fn restart_only(old: &GatewayConfig, new: &GatewayConfig) -> Result<(), GatewayError> {
    let tls = |c: &GatewayConfig| {
        c.server
            .tls
            .as_ref()
            .map(|t| (t.cert.clone(), t.key.clone(), t.reload, t.redirect_http))
    };
    let differs: [(&str, bool); 11] = [
        ("listen", old.listen != new.listen),
        ("session.store", old.session.store != new.session.store),
        (
            "session.encryption_keys",
            old.session.encryption_keys != new.session.encryption_keys,
        ),
        ("session.prefix", old.session.prefix != new.session.prefix),
        (
            "session.operation_timeout",
            old.session.operation_timeout != new.session.operation_timeout,
        ),
        ("metrics.listen", old.metrics.listen != new.metrics.listen),
        (
            "admin",
            old.admin.token_file != new.admin.token_file
                || old.admin.token_env != new.admin.token_env,
        ),
        (
            "server.worker_threads",
            old.server.worker_threads != new.server.worker_threads,
        ),
        (
            "server.shutdown_timeout",
            old.server.shutdown_timeout != new.server.shutdown_timeout,
        ),
        // The certificate files themselves are reloaded when they change
        // (`server.tls.reload`); where they are, and whether TLS is on, not.
        ("server.tls", tls(old) != tls(new)),
        (
            "log",
            old.log.format != new.log.format || old.log.level != new.log.level,
        ),
    ];
    let keys: Vec<&str> = differs
        .iter()
        .filter(|(_, d)| *d)
        .map(|(k, _)| *k)
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    Err(GatewayError::Reload(format!(
        "`{}` cannot change while the gateway runs: restart it to apply {}; the configuration \
         in force stays",
        keys.join("`, `"),
        if keys.len() == 1 { "it" } else { "them" }
    )))
}

/// The top-level keys whose (redacted, rendered) settings differ.
fn changed_sections(old: &GatewayConfig, new: &GatewayConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// The [`tower::Service`] the server runs; see [`ReloadHandle::service`].
#[derive(Clone, Debug)]
pub struct ReloadService {
    handle: ReloadHandle,
}

impl<B> Service<http::Request<B>> for ReloadService
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ReloadFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers and proxies are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // `Body::new` keeps a `Body` as it is (no boxing).
        ReloadFuture {
            inner: self
                .handle
                .current()
                .call(request.map(axum::body::Body::new)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ReloadService`].
    pub struct ReloadFuture {
        #[pin]
        inner: crate::access_log::ResponseFuture<crate::frontends::MeteredFuture>,
    }
}

impl std::future::Future for ReloadFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// Reloads on `SIGHUP` and, with `server.watch_config`, when the file's
/// modification time changes; logs the outcome. A no-op task without a
/// file.
pub(crate) fn spawn_watch(
    handle: ReloadHandle,
    file: Option<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(file) = file else {
            return;
        };
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = modified(&file);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let signal = async {
                match hup.as_mut() {
                    Some(hup) => {
                        hup.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let signal = std::future::pending::<()>();
            let why = tokio::select! {
                () = signal => "SIGHUP",
                _ = tick.tick() => {
                    if !handle.config().await.server.watch_config {
                        continue;
                    }
                    let now = modified(&file);
                    if now == seen {
                        continue;
                    }
                    "the file changed"
                }
            };
            seen = modified(&file);
            match handle.reload_file().await {
                Ok(report) => tracing::info!(
                    trigger = why,
                    file = %file.display(),
                    %report,
                    "configuration reloaded"
                ),
                Err(err) => tracing::error!(
                    trigger = why,
                    file = %file.display(),
                    "configuration not reloaded; the one in force stays: {err}"
                ),
            }
        }
    })
}

fn modified(file: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}
