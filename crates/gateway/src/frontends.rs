//! Several frontends in one gateway: the application of each (management
//! endpoints, proxied APIs, static files, each with its own [`Bff`]), and
//! the service that picks one per request by `Host` and path prefix.
//!
//! Selection: entries whose `host` (exact, any case; the port only when the
//! entry names one) and `path` (a prefix on a `/` boundary) match; an entry
//! with both beats one with `host` only, which beats one with `path` only;
//! among equals the longest `path` wins. Requests no entry selects, and
//! `/healthz` and `/readyz`, go to the default (top-level) frontend.

use std::convert::Infallible;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::get;
use http::{StatusCode, header};
use oidc_bff::Bff;
use oidc_bff::metrics::{HttpMetricsLayer, RouteKind};
use oidc_bff::proxy::RemoteApi;
use oidc_bff::tokens::SessionStore;
use oidc_bff::tokens::store::KeyRing;
use tower::Service;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::timeout::TimeoutLayer;

use crate::GatewayError;
use crate::access_log::AccessLogLayer;
use crate::config::{FrontendConfig, GatewayConfig, StaticFilesConfig};
use crate::serve::{healthz, readyz};

/// One frontend's routes: its management endpoints, its APIs and its
/// static files, with its [`Bff`] as the request extension. `top` holds
/// routes of the gateway's own (health checks, a demo site) served before
/// the timeout layer like the management endpoints.
pub(crate) fn app(
    bff: &Bff,
    top: Router,
    apis: &[RemoteApi],
    static_files: Option<&StaticFilesConfig>,
    request_timeout: std::time::Duration,
) -> Router {
    let timeout = TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, request_timeout);
    let mut app = top.merge(bff.routes());
    // Timeouts of proxied calls are the APIs' own; the server's request
    // timeout covers everything else. So does the `Bff` in the request
    // extensions, for the BFF's extractors: the proxy reads the session
    // without it (inserting it cost allocations on every proxied call).
    app = app.layer(timeout).layer(bff.layer());
    for api in apis {
        app = app.merge(bff.proxy(api.clone()));
    }
    if let Some(files) = static_files {
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
    app
}

/// What a gateway's application is made of; kept between reloads.
#[derive(Clone)]
pub(crate) struct Parts {
    /// The settings in force.
    pub(crate) config: Arc<GatewayConfig>,
    /// The default frontend's BFF.
    pub(crate) bff: Bff,
    /// One BFF per `[[frontend]]`, in order, with its [`bff_key`].
    pub(crate) frontends: Vec<(Bff, u64)>,
    /// The session store all frontends share.
    pub(crate) store: Arc<dyn SessionStore>,
    /// The keys sealing pending sign-ins, with a persistent store.
    pub(crate) login_keys: Option<KeyRing>,
    /// Routes served next to the gateway's own (the demo page).
    pub(crate) site: Option<Router>,
}

/// Builds the BFF of the default frontend (`None`) or of `[[frontend]]`
/// entry `Some(i)` on the shared `store`.
pub(crate) fn build_bff(
    config: &GatewayConfig,
    frontend: Option<usize>,
    store: &Arc<dyn SessionStore>,
    login_keys: Option<&KeyRing>,
) -> Result<Bff, GatewayError> {
    let mut builder = match frontend.and_then(|i| config.frontends.get(i)) {
        None => Bff::builder(config.oidc.clone())
            .public_url(config.public_url.as_str())
            .cookie_name(config.session.cookie_name.clone()),
        Some(f) => Bff::builder(f.oidc.clone())
            .public_url(f.effective_public_url(&config.public_url).as_str())
            .base_path(f.base_path.clone())
            .cookie_name(f.cookie_name.clone()),
    };
    builder = builder
        .csrf_header(config.csrf.header.clone(), config.csrf.value.clone())
        .store(store.clone());
    if let Some(keys) = login_keys {
        builder = builder.login_keys(keys.clone());
    }
    Ok(builder.build()?)
}

/// A digest of everything a frontend's BFF is built from: equal keys mean
/// a reload may keep the BFF (and its token engine) as it is.
pub(crate) fn bff_key(config: &GatewayConfig, frontend: Option<usize>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    config.oidc_digest(frontend).hash(&mut hasher);
    match frontend.and_then(|i| config.frontends.get(i)) {
        None => {
            config.public_url.as_str().hash(&mut hasher);
            config.session.cookie_name.hash(&mut hasher);
        }
        Some(f) => {
            f.effective_public_url(&config.public_url)
                .as_str()
                .hash(&mut hasher);
            f.base_path.hash(&mut hasher);
            f.cookie_name.hash(&mut hasher);
        }
    }
    config.csrf.header.hash(&mut hasher);
    config.csrf.value.hash(&mut hasher);
    hasher.finish()
}

/// The complete public application of `parts`.
pub(crate) fn router(parts: &Parts) -> Router {
    let config = &parts.config;
    let mut top = Router::new()
        .route("/healthz", get(healthz).layer(RouteKind::Health.layer()))
        .route(
            "/readyz",
            get(readyz)
                .with_state(parts.bff.clone())
                .layer(RouteKind::Health.layer()),
        );
    if let Some(site) = &parts.site {
        top = top.merge(site.clone());
    }
    let default = app(
        &parts.bff,
        top,
        config.remote_apis(),
        config.static_files.as_ref(),
        config.server.request_timeout,
    );
    let app = if config.frontends.is_empty() {
        default
    } else {
        let entries = config
            .frontends
            .iter()
            .zip(&parts.frontends)
            .enumerate()
            .map(|(i, (f, (bff, _)))| {
                let app = app(
                    bff,
                    Router::new(),
                    config.frontend_apis(i),
                    f.static_files.as_ref(),
                    config.server.request_timeout,
                );
                (f, app)
            })
            .collect();
        Router::new().fallback_service(Switch::new(default, entries))
    };
    // The access log names method and path only: queries (codes,
    // states) and headers (cookies, tokens) are never logged. Requests
    // by route kind and status class, with `[metrics]` only. One
    // `Router::layer` for both: each boxes every route once more, and a
    // boxed route costs two allocations per request.
    let metrics = config.metrics.listen.map(|_| HttpMetricsLayer::new());
    app.layer(
        tower::ServiceBuilder::new()
            .layer(AccessLogLayer)
            .option_layer(metrics),
    )
}

/// How a `[[frontend]]` entry is selected.
#[derive(Clone, Debug)]
struct Selector {
    /// Lowercase; with a port only when the entry gave one.
    host: Option<String>,
    has_port: bool,
    path: Option<String>,
}

impl Selector {
    fn of(config: &FrontendConfig) -> Self {
        let host = config.host.as_deref().map(str::to_ascii_lowercase);
        let has_port = host
            .as_deref()
            .is_some_and(|h| crate::config::strip_port(h) != h);
        Self {
            host,
            has_port,
            path: config.path.clone(),
        }
    }

    /// The rank of a match (higher wins), or `None`.
    fn rank(&self, host: Option<&str>, path: &str) -> Option<(u8, usize)> {
        if let Some(wanted) = &self.host {
            let host = host?;
            let host = if self.has_port {
                host
            } else {
                crate::config::strip_port(host)
            };
            if !host.eq_ignore_ascii_case(wanted) {
                return None;
            }
        }
        if let Some(prefix) = &self.path
            && !(path == prefix
                || path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
        {
            return None;
        }
        let kind = match (&self.host, &self.path) {
            (Some(_), Some(_)) => 3,
            (Some(_), None) => 2,
            _ => 1,
        };
        Some((kind, self.path.as_ref().map_or(0, String::len)))
    }
}

/// The service that hands each request to the frontend selected for it.
#[derive(Clone)]
pub(crate) struct Switch {
    default: Router,
    entries: Arc<[(Selector, Router)]>,
}

impl Switch {
    /// `default` serves what no entry selects; `entries` pairs each
    /// `[[frontend]]` with its application.
    pub(crate) fn new(default: Router, entries: Vec<(&FrontendConfig, Router)>) -> Self {
        Self {
            default,
            entries: entries
                .into_iter()
                .map(|(config, app)| (Selector::of(config), app))
                .collect(),
        }
    }

    fn select(&self, request: &Request) -> &Router {
        let path = request.uri().path();
        if path == "/healthz" || path == "/readyz" {
            return &self.default;
        }
        // HTTP/2 carries the host in the URI (`:authority`).
        let host = request.uri().authority().map(|a| a.as_str()).or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        self.entries
            .iter()
            .filter_map(|(selector, app)| Some((selector.rank(host, path)?, app)))
            .max_by_key(|(rank, _)| *rank)
            .map_or(&self.default, |(_, app)| app)
    }
}

impl Service<Request> for Switch {
    type Response = Response;
    type Error = Infallible;
    type Future = <Router as Service<Request>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mut app = self.select(&request).clone();
        app.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(host: Option<&str>, path: Option<&str>) -> Selector {
        let host = host.map(str::to_ascii_lowercase);
        Selector {
            has_port: host
                .as_deref()
                .is_some_and(|h| crate::config::strip_port(h) != h),
            host,
            path: path.map(str::to_owned),
        }
    }

    #[test]
    fn host_matches_any_case_and_port_unless_given() {
        let s = selector(Some("App.Example"), None);
        assert!(s.rank(Some("app.example:8080"), "/").is_some());
        assert!(s.rank(Some("APP.EXAMPLE"), "/").is_some());
        assert!(s.rank(Some("other.example"), "/").is_none());
        assert!(s.rank(None, "/").is_none());
        let s = selector(Some("app.example:8443"), None);
        assert!(s.rank(Some("app.example:8443"), "/").is_some());
        assert!(s.rank(Some("app.example:8080"), "/").is_none());
    }

    #[test]
    fn path_matches_on_segment_boundaries_and_ranks_win_in_order() {
        let path = selector(None, Some("/a"));
        assert!(path.rank(None, "/a").is_some());
        assert!(path.rank(None, "/a/x").is_some());
        assert!(path.rank(None, "/ab").is_none());
        let longer = selector(None, Some("/a/b"));
        let host = selector(Some("h"), None);
        let both = selector(Some("h"), Some("/a"));
        let at = |s: &Selector| s.rank(Some("h"), "/a/b/c");
        assert!(at(&longer) > at(&path));
        assert!(at(&host) > at(&longer));
        assert!(at(&both) > at(&host));
    }
}
