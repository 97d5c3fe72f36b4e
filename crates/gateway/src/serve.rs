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
//! With `[metrics] listen`, a second listener serves `GET /metrics` and,
//! when `[admin]` gives a token, the admin API (see [`Gateway::ops_router`]); they are
//! never served on the public port.

use std::future::{Future, IntoFuture as _};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use oidc_bff::Bff;
use oidc_bff::metrics::{HttpMetricsLayer, RouteKind};
use oidc_bff::tokens::store::{OpenOptions, open_url, spawn_cleanup};
use oidc_bff::tokens::{MemoryStore, SessionId, SessionStore};
use tower_http::services::{ServeDir, ServeFile};
use tower_http::timeout::TimeoutLayer;

use crate::GatewayError;
use crate::access_log::AccessLogLayer;
use crate::config::{GatewayConfig, StoreKind};

/// How often expired sessions are purged from the store.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// How long one readiness probe may wait for the provider or the store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A configured gateway, ready to serve.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<GatewayConfig>,
    bff: Bff,
    site: Option<Router>,
    /// The Prometheus recorder's handle, with `[metrics] listen`.
    metrics: Option<PrometheusHandle>,
}

impl Gateway {
    /// Builds the BFF and the session store from the settings.
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
        let mut builder = Bff::builder(config.oidc.clone())
            .public_url(config.public_url.as_str())
            .cookie_name(config.session.cookie_name.clone())
            .csrf_header(config.csrf.header.clone(), config.csrf.value.clone())
            .store(store);
        if let Some(keys) = login_keys {
            builder = builder.login_keys(keys);
        }
        let bff = builder.build()?;
        Ok(Self {
            config: Arc::new(config),
            bff,
            site: None,
            metrics,
        })
    }

    /// Serves `site`'s routes next to the gateway's own (the demo page).
    #[must_use]
    pub fn with_site(mut self, site: Router) -> Self {
        self.site = Some(site);
        self
    }

    /// The BFF.
    pub fn bff(&self) -> &Bff {
        &self.bff
    }

    /// The settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The complete application.
    pub fn router(&self) -> Router {
        let timeout = TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            self.config.server.request_timeout,
        );
        let mut app = Router::new()
            .route("/healthz", get(healthz).layer(RouteKind::Health.layer()))
            .route(
                "/readyz",
                get(readyz)
                    .with_state(self.bff.clone())
                    .layer(RouteKind::Health.layer()),
            )
            .merge(self.bff.routes());
        if let Some(site) = &self.site {
            app = app.merge(site.clone());
        }
        // Timeouts of proxied calls are the APIs' own; the server's request
        // timeout covers everything else. So does the `Bff` in the request
        // extensions, for the BFF's extractors: the proxy reads the session
        // without it (inserting it cost allocations on every proxied call).
        app = app.layer(timeout).layer(self.bff.layer());
        // Checked while the settings were validated.
        for api in self.config.remote_apis() {
            app = app.merge(self.bff.proxy(api.clone()));
        }
        if let Some(files) = &self.config.static_files {
            let dir = ServeDir::new(&files.dir);
            let timeout = tower::ServiceBuilder::new()
                .layer(RouteKind::Static.layer())
                .layer(timeout);
            app = if files.spa_fallback {
                let index = ServeFile::new(files.dir.join("index.html"));
                app.fallback_service(timeout.service(dir.fallback(index)))
            } else {
                app.fallback_service(timeout.service(dir))
            };
        }
        // The access log names method and path only: queries (codes,
        // states) and headers (cookies, tokens) are never logged. Requests
        // by route kind and status class, with `[metrics]` only. One
        // `Router::layer` for both: each boxes every route once more, and a
        // boxed route costs two allocations per request.
        let metrics = self.config.metrics.listen.map(|_| HttpMetricsLayer::new());
        app.layer(
            tower::ServiceBuilder::new()
                .layer(AccessLogLayer)
                .option_layer(metrics),
        )
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
        let app = self.router();
        let ops = self.serve_ops().await?;
        let grace = self.config.server.shutdown_timeout;
        let bff = self.bff.clone();
        // Expired sessions leave the store in the background.
        let cleanup = spawn_cleanup(bff.engine().store().clone(), CLEANUP_INTERVAL);
        tokio::spawn(async move {
            // Load discovery early, so the first sign-in is fast and /readyz turns green.
            if let Err(err) = bff.engine().metadata().await {
                tracing::warn!(error = %err, "provider discovery failed; will retry on demand");
            }
        });
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stopping_tx.send(());
        };
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .into_future();
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

async fn healthz() -> Response {
    no_store(
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ok" })),
        )
            .into_response(),
    )
}

async fn readyz(State(bff): State<Bff>) -> Response {
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
