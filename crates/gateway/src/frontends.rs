//! Several frontends in one gateway: the application of each (management
//! endpoints, proxied APIs, static files, each with its own [`Bff`]), and
//! the service that picks one per request by `Host` and path prefix.
//!
//! Within a frontend, the proxied APIs are picked by their path prefix
//! before its axum [`Router`] (a [`Dispatch`]): matching the route table,
//! its extensions and the boxed route layers cost about 8 allocations and
//! 4,000–5,000 instructions per proxied request, a tenth of the gateway's
//! own work (docs/ARCHITECTURE.md, "The proxy's data path"). The router
//! still holds the same APIs, for paths the prefix dispatch leaves to it.
//!
//! Selection: entries whose `host` (exact, any case; the port only when the
//! entry names one) and `path` (a prefix on a `/` boundary) match; an entry
//! with both beats one with `host` only, which beats one with `path` only;
//! among equals the longest `path` wins. Requests no entry selects, and
//! `/healthz` and `/readyz`, go to the default (top-level) frontend.

use std::convert::Infallible;
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::get;
use http::{StatusCode, header};
use oidc_bff::Bff;
use oidc_bff::metrics::{HttpMetrics, HttpMetricsLayer, RouteKind, Timed};
use oidc_bff::proxy::{ProxyFuture, ProxyService, RemoteApi};
use oidc_bff::tokens::SessionStore;
use oidc_bff::tokens::store::KeyRing;
use tower::Service;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::timeout::TimeoutLayer;

use crate::GatewayError;
use crate::access_log::{AccessLog, AccessLogLayer};
use crate::config::{FrontendConfig, GatewayConfig, StaticFilesConfig};
use crate::serve::{healthz, readyz};

/// One frontend's routes: its management endpoints, its APIs and its
/// static files, with its [`Bff`] as the request extension. `top` holds
/// routes of the gateway's own (health checks, a demo site) served before
/// the timeout layer like the management endpoints. With `dispatch`, the
/// APIs are also picked by prefix in front of the router (see [`Dispatch`]);
/// only when no route of `top` can lie below an API's prefix.
pub(crate) fn app(
    bff: &Bff,
    top: Router,
    apis: &[RemoteApi],
    static_files: Option<&StaticFilesConfig>,
    request_timeout: std::time::Duration,
    dispatch: bool,
) -> Dispatch {
    let timeout = TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, request_timeout);
    let mut app = top.merge(bff.routes());
    // Timeouts of proxied calls are the APIs' own; the server's request
    // timeout covers everything else. So does the `Bff` in the request
    // extensions, for the BFF's extractors: the proxy reads the session
    // without it (inserting it cost allocations on every proxied call).
    app = app.layer(timeout).layer(bff.layer());
    let mut proxies = Vec::with_capacity(apis.len());
    for api in apis {
        // One service per API, in the router and in front of it alike:
        // one upstream pool, one bearer cache.
        let service = bff.proxy_service(api.clone());
        app = app.merge(service.clone().router());
        if dispatch && prefix_owned(service.prefix(), &bff.settings().base_path) {
            proxies.push(service);
        }
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
    // Longest prefix first, as the router's most specific route wins
    // (the settings refuse overlapping API paths anyway).
    proxies.sort_by_key(|p| std::cmp::Reverse(p.prefix().len()));
    Dispatch {
        proxies: proxies.into(),
        router: app,
    }
}

/// Whether every path below the API's prefix is the API's in the router
/// too: not the root, and neither above nor below the management path and
/// the health checks (the settings refuse those; checked again here, as the
/// dispatch would otherwise take their requests).
fn prefix_owned(prefix: &str, base_path: &str) -> bool {
    let under = |path: &str, prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    !prefix.is_empty()
        && [base_path, "/healthz", "/readyz"]
            .iter()
            .all(|own| !under(own, prefix) && !under(prefix, own))
}

/// One frontend's application: requests below a proxied API's prefix go
/// straight to its [`ProxyService`], everything else to the router.
#[derive(Clone)]
pub(crate) struct Dispatch {
    proxies: Arc<[ProxyService]>,
    router: Router,
}

impl Dispatch {
    fn call(&self, request: Request) -> DispatchFuture {
        let path = request.uri().path();
        match self.proxies.iter().find(|p| p.serves(path)) {
            Some(proxy) => DispatchFuture::Proxy {
                future: proxy.clone().call(request),
            },
            None => DispatchFuture::Router {
                future: self.router.clone().call(request),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`Dispatch`].
    #[project = DispatchProj]
    pub(crate) enum DispatchFuture {
        Proxy { #[pin] future: ProxyFuture },
        Router { #[pin] future: <Router as Service<Request>>::Future },
    }
}

impl Future for DispatchFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProj::Proxy { future } => future.poll(cx),
            DispatchProj::Router { future } => future.poll(cx),
        }
    }
}

/// The public application the server runs: the access log around the
/// HTTP metrics (with `[metrics]`) around the frontend [`Switch`].
pub(crate) type App = AccessLog<Metered>;

/// The frontend switch, with or without the HTTP metrics.
#[derive(Clone)]
pub(crate) enum Metered {
    On(HttpMetrics<Switch>),
    Off(Switch),
}

pin_project_lite::pin_project! {
    /// The response future of [`Metered`].
    #[project = MeteredProj]
    pub(crate) enum MeteredFuture {
        On { #[pin] future: Timed<DispatchFuture> },
        Off { #[pin] future: DispatchFuture },
    }
}

impl Future for MeteredFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            MeteredProj::On { future } => future.poll(cx),
            MeteredProj::Off { future } => future.poll(cx),
        }
    }
}

impl Service<Request> for Metered {
    type Response = Response;
    type Error = Infallible;
    type Future = MeteredFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers and proxies are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self {
            Metered::On(metrics) => MeteredFuture::On {
                future: metrics.call(request),
            },
            Metered::Off(switch) => MeteredFuture::Off {
                future: switch.call(request),
            },
        }
    }
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
pub(crate) fn router(parts: &Parts) -> App {
    let config = &parts.config;
    let mut top = Router::new()
        .route("/healthz", get(healthz).layer(RouteKind::Health.layer()))
        .route(
            "/readyz",
            get(readyz)
                .with_state(parts.bff.clone())
                .layer(RouteKind::Health.layer()),
        );
    // A site's routes are not known here: one could lie below an API's
    // prefix, so with a site (the demo) the router picks every route.
    let dispatch = parts.site.is_none();
    if let Some(site) = &parts.site {
        top = top.merge(site.clone());
    }
    let default = app(
        &parts.bff,
        top,
        config.remote_apis(),
        config.static_files.as_ref(),
        config.server.request_timeout,
        dispatch,
    );
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
                true,
            );
            (f, app)
        })
        .collect();
    let switch = Switch::new(default, entries);
    // The access log names method and path only: queries (codes,
    // states) and headers (cookies, tokens) are never logged. Requests
    // by route kind and status class, with `[metrics]` only.
    let metered = match config.metrics.listen {
        Some(_) => Metered::On(tower::Layer::layer(&HttpMetricsLayer::new(), switch)),
        None => Metered::Off(switch),
    };
    tower::Layer::layer(&AccessLogLayer, metered)
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

/// The service that hands each request to the frontend selected for it
/// (without `[[frontend]]` entries, always the default one).
#[derive(Clone)]
pub(crate) struct Switch {
    default: Dispatch,
    entries: Arc<[(Selector, Dispatch)]>,
}

impl Switch {
    /// `default` serves what no entry selects; `entries` pairs each
    /// `[[frontend]]` with its application.
    pub(crate) fn new(default: Dispatch, entries: Vec<(&FrontendConfig, Dispatch)>) -> Self {
        Self {
            default,
            entries: entries
                .into_iter()
                .map(|(config, app)| (Selector::of(config), app))
                .collect(),
        }
    }

    fn select(&self, request: &Request) -> &Dispatch {
        let path = request.uri().path();
        if self.entries.is_empty() || path == "/healthz" || path == "/readyz" {
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
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routers and proxies are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.select(&request).call(request)
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
    fn the_dispatch_only_takes_prefixes_that_own_their_paths() {
        assert!(prefix_owned("/api", "/bff"));
        assert!(prefix_owned("/a/b", "/bff"));
        assert!(prefix_owned("/bffx", "/bff"));
        // The root, the management path, the health checks, and what
        // lies above or below them stay with the router.
        for prefix in ["", "/bff", "/bff/api", "/healthz", "/readyz/x"] {
            assert!(!prefix_owned(prefix, "/bff"), "{prefix:?}");
        }
        assert!(!prefix_owned("/app", "/app/bff"));
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
