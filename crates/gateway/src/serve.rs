//! The gateway's HTTP server: management endpoints, proxied APIs, static
//! files, health checks, request logging and graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> Result<(), oidc_bff_gateway::GatewayError> {
//! use oidc_bff_gateway::{Gateway, GatewayConfig, serve::shutdown_signal};
//!
//! let config = GatewayConfig::load("bff.toml".as_ref())?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! Gateway::new(config)?.serve(listener, shutdown_signal()).await
//! # }
//! ```
//!
//! | route | what |
//! |---|---|
//! | `/bff/login`, `/bff/callback`, `/bff/logout`, `/bff/user`, `/bff/sessions` | the BFF's management endpoints |
//! | each `[[api]]` `path` | proxied to its upstream with the configured token |
//! | `GET /healthz` | liveness: 200 while the process serves |
//! | `GET /readyz` | readiness: 200 once provider discovery is loaded and the session store answers, else 503 |
//! | anything else | the `[static]` directory (with `index.html` for unknown paths), else 404 |
//!
//! With `[server.tls]`, the public port serves HTTPS (HTTP/2 and HTTP/1.1)
//! through [`crate::tls`].
//!
//! With `[[frontend]]` entries, each request first goes to the frontend its
//! `Host` and path select (`frontends.rs`), whose own management path,
//! APIs and static files answer it; the table above is the default
//! frontend's. The application is served through a
//! [`ReloadService`](crate::reload::ReloadService), so `SIGHUP` can swap it.
//!
//! With `[metrics] listen`, a second listener serves `GET /metrics` and,
//! when `[admin]` gives a token, the admin API (see [`Gateway::ops_router`]); they are
//! never served on the public port.

use std::future::{Future, IntoFuture as _};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use oidc_bff::Bff;
use oidc_bff::tokens::store::{OpenOptions, open_url, spawn_cleanup};
use oidc_bff::tokens::{MemoryStore, SessionId, SessionStore};

use crate::GatewayError;
use crate::config::{GatewayConfig, StoreKind};
use crate::frontends::{Parts, bff_key, build_bff};
use crate::reload::{ReloadHandle, Reloaded};

/// How often expired sessions are purged from the store.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// How long one readiness probe may wait for the provider or the store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A configured gateway, ready to serve.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<GatewayConfig>,
    bff: Bff,
    /// What the application is built from: the store, the BFF of each
    /// frontend.
    parts: Parts,
    /// The Prometheus recorder's handle, with `[metrics] listen`.
    metrics: Option<PrometheusHandle>,
    /// Made by [`reload_handle`](Self::reload_handle) or [`serve`](Self::serve).
    reload: std::sync::OnceLock<ReloadHandle>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("frontends", &self.frontends.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the BFF of each frontend and the session store they share
    /// from the settings.
    pub fn new(config: GatewayConfig) -> Result<Self, GatewayError> {
        // Before anything registers a metric: handles registered without a
        // recorder stay no-ops.
        let metrics = config
            .metrics
            .listen
            .and_then(|_| crate::ops::install_recorder());
        // Pending sign-ins are sealed with the session keys, so that a
        // callback may reach any instance sharing the store.
        let mut login_keys = None;
        let store: Arc<dyn SessionStore> = match &config.session.store {
            StoreKind::Memory => Arc::new(MemoryStore::new()),
            // Built without I/O: the first request connects (and creates the
            // schema); until the store answers, requests get 503 and
            // /readyz reports it.
            persistent => {
                // Built once, while the settings were validated.
                let keys = config.key_ring().cloned().ok_or_else(|| {
                    GatewayError::Startup(
                        "session.encryption_keys: a persistent session store needs a key".into(),
                    )
                })?;
                login_keys = Some(keys.clone());
                let mut options = OpenOptions::new()
                    .encryption(keys)
                    .operation_timeout(config.session.operation_timeout);
                if let Some(prefix) = &config.session.prefix {
                    options = options.prefix(prefix.clone());
                }
                open_url(persistent.url().unwrap_or_default(), options)
                    .map_err(|e| GatewayError::Startup(format!("session.store: {e}")))?
            }
        };
        let bff = build_bff(&config, None, &store, login_keys.as_ref())?;
        let frontends = (0..config.frontends.len())
            .map(|i| {
                let bff = build_bff(&config, Some(i), &store, login_keys.as_ref())?;
                Ok((bff, bff_key(&config, Some(i))))
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        let config = Arc::new(config);
        Ok(Self {
            parts: Parts {
                config: config.clone(),
                bff: bff.clone(),
                frontends,
                store,
                login_keys,
                site: None,
            },
            config,
            bff,
            metrics,
            reload: std::sync::OnceLock::new(),
        })
    }

    /// Serves `site`'s routes next to the gateway's own (the demo page).
    /// Call it before [`reload_handle`](Self::reload_handle).
    #[must_use]
    pub fn with_site(mut self, site: Router) -> Self {
        self.parts.site = Some(site);
        self
    }

    /// The default frontend's BFF.
    pub fn bff(&self) -> &Bff {
        &self.bff
    }

    /// The BFF of each `[[frontend]]`, in order (as built at start).
    pub fn frontend_bffs(&self) -> impl Iterator<Item = &Bff> {
        self.parts.frontends.iter().map(|(bff, _)| bff)
    }

    /// The settings (as loaded at start; see [`ReloadHandle::config`]).
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The complete application, as configured at start.
    pub fn router(&self) -> Router {
        Router::new().fallback_service(crate::frontends::router(&self.parts))
    }

    /// The handle that reloads the settings of this gateway while it
    /// serves (what `SIGHUP` does).
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload
            .get_or_init(|| ReloadHandle::new(self.parts.clone()))
            .clone()
    }

    /// Applies `config` to the running gateway; see [`ReloadHandle::reload`].
    pub async fn reload(&self, config: GatewayConfig) -> Result<Reloaded, GatewayError> {
        self.reload_handle().reload(config).await
    }

    /// The operations listener's routes (`GET /metrics`, and the admin API
    /// when `[admin]` gives its token), served on `[metrics] listen` by
    /// [`serve`](Self::serve). Never merge it into the public router.
    pub fn ops_router(&self) -> Router {
        crate::ops::router(self.metrics.clone(), &self.bff, &self.config)
    }

    /// Serves on `listener` until `shutdown` completes; requests in flight
    /// then get up to `server.shutdown_timeout` to finish. With `[metrics]
    /// listen`, the operations endpoints are served there as well, until
    /// the public server stops.
    pub async fn serve<F>(
        self,
        listener: tokio::net::TcpListener,
        shutdown: F,
    ) -> Result<(), GatewayError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let reload = self.reload_handle();
        let app = reload.service();
        let tls = match &self.config.server.tls {
            Some(tls) => Some(crate::tls::TlsServer::new(tls)?),
            None => None,
        };
        let mut ops = self.serve_ops().await?;
        if let Some(addr) = self
            .config
            .server
            .tls
            .as_ref()
            .and_then(|t| t.redirect_http)
        {
            ops.push(crate::tls::spawn_redirect(addr, &self.config.public_url).await?);
        }
        let watcher = crate::reload::spawn_watch(reload, self.config.source.clone());
        let grace = self.config.server.shutdown_timeout;
        let bff = self.bff.clone();
        // Expired sessions leave the store in the background.
        let cleanup = spawn_cleanup(bff.engine().store().clone(), CLEANUP_INTERVAL);
        let others: Vec<Bff> = self.frontend_bffs().cloned().collect();
        tokio::spawn(async move {
            // Load discovery early, so the first sign-in is fast and /readyz turns green.
            for bff in std::iter::once(&bff).chain(&others) {
                crate::reload::discover(bff).await;
            }
        });
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stopping_tx.send(());
        };
        // `[server.tls]`: our own accept loop (HTTP/2 by ALPN); else axum's.
        let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls
        {
            Some(tls) => Box::pin(tls.serve(listener, app, signal)),
            None => {
                // Served as it is: no router in front of the reloadable one.
                let app =
                    axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                        std::net::SocketAddr,
                    >(app);
                Box::pin(
                    axum::serve(listener, app)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                )
            }
        };
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            () = async {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(grace).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(seconds = grace.as_secs(), "requests still in flight after the shutdown timeout; stopping anyway");
            }
        }
        cleanup.abort();
        watcher.abort();
        for task in ops {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

impl Gateway {
    /// With `[metrics] listen`: binds it and serves the operations routes
    /// there, and keeps the recorder's histograms folded in; the tasks.
    async fn serve_ops(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, GatewayError> {
        let Some(addr) = self.config.metrics.listen else {
            return Ok(Vec::new());
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            GatewayError::Startup(format!("metrics.listen: cannot listen on {addr}: {e}"))
        })?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        let ops = self.ops_router();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, ops).await {
                tracing::error!(error = %err, "the operations listener failed");
            }
        })];
        if let Some(handle) = &self.metrics {
            tasks.push(crate::ops::spawn_upkeep(handle.clone()));
        }
        Ok(tasks)
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

pub(crate) async fn healthz() -> Response {
    no_store(
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ok" })),
        )
            .into_response(),
    )
}

pub(crate) async fn readyz(State(bff): State<Bff>) -> Response {
    let client = bff.engine();
    let discovery = client.is_discovery_loaded()
        || matches!(
            tokio::time::timeout(PROBE_TIMEOUT, client.metadata()).await,
            Ok(Ok(_))
        );
    // Loading an id that cannot exist exercises the store without side effects.
    let store = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, client.store().load(&SessionId::generate())).await,
        Ok(Ok(_))
    );
    let ready = discovery && store;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "discovery": discovery,
        "store": store,
    });
    no_store((status, axum::Json(body)).into_response())
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
