//! What the BFF records, through the [`metrics`] facade: HTTP requests by
//! route kind, proxied requests by API, and 401 retries of managed clients.
//! The token engine's own metrics (sign-ins, refreshes, store, provider)
//! are in [`oidc_bff_tokens::metrics`].
//!
//! Every metric's name, unit, description and labels is here, with the small
//! functions and layers the rest of the crate uses (one line per recording
//! site). Labels take values from fixed lists or the configuration only:
//! never a path, a user or a session.
//!
//! The BFF's routes ([`Bff::routes`](crate::Bff::routes),
//! [`Bff::proxy`](crate::Bff::proxy)) mark their responses with their
//! [`RouteKind`]; [`HttpMetricsLayer`] around the whole app records each
//! request by that kind (unmarked responses count as
//! [`RouteKind::Other`]; mark your own routes with [`RouteKind::layer`]).
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use oidc_bff::metrics::{HttpMetricsLayer, RouteKind};
//!
//! # fn demo(bff: oidc_bff::Bff) {
//! // Install a recorder first (e.g. metrics-exporter-prometheus), then:
//! oidc_bff::metrics::describe();
//! let app: Router = Router::new()
//!     .route("/healthz", get(|| async { "ok" }).layer(RouteKind::Health.layer()))
//!     .merge(bff.routes())
//!     .layer(bff.layer())
//!     .layer(HttpMetricsLayer::new());
//! # }
//! ```
//!
//! Install the recorder before building the app: the handles are
//! registered when the layers are made.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use metrics::{Counter, Histogram, Unit, counter, describe_counter, describe_histogram, histogram};
use tower::{Layer, Service};

/// Histogram (seconds): HTTP requests served, by `route` ([`RouteKind`])
/// and `status_class` (`1xx` … `5xx`); time to the response's headers. Its
/// `_count` is the number of requests.
pub const HTTP_REQUEST_DURATION: &str = "oidc_bff_http_request_duration_seconds";
/// Histogram (seconds): proxied requests, by `api` (the route's configured
/// local prefix) and `status_class`; from the proxy receiving the request
/// to the upstream's response headers (the token work in front of the
/// upstream call included: microseconds on the hot path).
pub const UPSTREAM_DURATION: &str = "oidc_bff_upstream_request_duration_seconds";
/// Counter: requests a managed API client repeated with a renewed token
/// after a 401; label `client` (the client's configured name).
pub const UNAUTHORIZED_RETRIES: &str = "oidc_bff_client_unauthorized_retries_total";

/// Registers units and descriptions of the BFF's metrics and the token
/// engine's ([`oidc_bff_tokens::metrics::describe`]) with the installed
/// recorder. Call once, after installing it.
pub fn describe() {
    oidc_bff_tokens::metrics::describe();
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP requests by route kind and status class: time to response headers."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Proxied requests by API and status class: time to the upstream's response headers."
    );
    describe_counter!(
        UNAUTHORIZED_RETRIES,
        Unit::Count,
        "Requests a managed API client repeated with a renewed token after a 401."
    );
}

/// What a route is (label `route` of [`HTTP_REQUEST_DURATION`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RouteKind {
    /// `{base}/login`.
    Login,
    /// `{base}/callback`.
    Callback,
    /// `{base}/logout`.
    Logout,
    /// `{base}/logged-out`.
    LoggedOut,
    /// `{base}/user`.
    User,
    /// `{base}/backchannel`.
    Backchannel,
    /// `{base}/sessions…` (session administration).
    Sessions,
    /// Another route under the base path.
    BffOther,
    /// A proxied API route ([`Bff::proxy`](crate::Bff::proxy)).
    ApiProxy,
    /// Liveness and readiness probes.
    Health,
    /// Static files.
    Static,
    /// Anything not marked.
    Other,
}

impl RouteKind {
    const ALL: [RouteKind; 12] = [
        Self::Login,
        Self::Callback,
        Self::Logout,
        Self::LoggedOut,
        Self::User,
        Self::Backchannel,
        Self::Sessions,
        Self::BffOther,
        Self::ApiProxy,
        Self::Health,
        Self::Static,
        Self::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Callback => "callback",
            Self::Logout => "logout",
            Self::LoggedOut => "logged_out",
            Self::User => "user",
            Self::Backchannel => "backchannel",
            Self::Sessions => "sessions",
            Self::BffOther => "bff_other",
            Self::ApiProxy => "api_proxy",
            Self::Health => "health",
            Self::Static => "static",
            Self::Other => "other",
        }
    }

    /// A layer that marks the responses of the routes it wraps as this kind.
    pub fn layer(self) -> MarkLayer {
        MarkLayer {
            kind: Some(self),
            base: None,
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or(Self::ALL.len() - 1)
    }
}

/// The status class of `status`: 0 for `1xx` … 4 for `5xx`.
fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Records every request by the [`RouteKind`] its response is marked with;
/// see the [module docs](self).
#[derive(Clone, Debug)]
pub struct HttpMetricsLayer {
    handles: Arc<Vec<Histogram>>,
}

/// Whether an [`HttpMetricsLayer`] exists in this process: the only reader
/// of the marks the proxy's [`UpstreamLayer`] puts on its responses, which
/// it skips otherwise (a mark is an extension map, three allocations).
static MARKS_READ: AtomicBool = AtomicBool::new(false);

impl HttpMetricsLayer {
    /// Registers the histograms (one per route kind and status class).
    pub fn new() -> Self {
        MARKS_READ.store(true, Ordering::Relaxed);
        let mut handles = Vec::with_capacity(RouteKind::ALL.len() * CLASSES.len());
        for kind in RouteKind::ALL {
            for class in CLASSES {
                handles.push(histogram!(
                    HTTP_REQUEST_DURATION,
                    "route" => kind.as_str(),
                    "status_class" => class
                ));
            }
        }
        Self {
            handles: Arc::new(handles),
        }
    }
}

impl Default for HttpMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// The service made by [`HttpMetricsLayer`].
#[derive(Clone, Debug)]
pub struct HttpMetrics<S> {
    inner: S,
    handles: Arc<Vec<Histogram>>,
}

impl<S> Service<Request> for HttpMetrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Timed {
            future: self.inner.call(request),
            start: Instant::now(),
            record: Record::Http(self.handles.clone()),
        }
    }
}

/// Where a [`Timed`] response lands.
#[derive(Debug)]
enum Record {
    /// By route kind and status class.
    Http(Arc<Vec<Histogram>>),
    /// By status class, for one API.
    Upstream(Arc<[Histogram; 5]>),
}

pin_project_lite::pin_project! {
    /// The response future of the metrics layers.
    pub struct Timed<F> {
        #[pin]
        future: F,
        start: Instant,
        record: Record,
    }
}

impl<F, E> Future for Timed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        if let Ok(response) = &result {
            let class = class_index(response.status().as_u16());
            let took = this.start.elapsed();
            match this.record {
                Record::Http(handles) => {
                    let kind = response
                        .extensions()
                        .get::<RouteKind>()
                        .copied()
                        .unwrap_or(RouteKind::Other);
                    handles[kind.index() * CLASSES.len() + class].record(took);
                }
                Record::Upstream(handles) => handles[class].record(took),
            }
        }
        Poll::Ready(result)
    }
}

/// Records the proxied requests of one API and marks them
/// [`RouteKind::ApiProxy`] (used by [`Bff::proxy`](crate::Bff::proxy)).
#[derive(Clone, Debug)]
pub(crate) struct UpstreamLayer {
    handles: Arc<[Histogram; 5]>,
}

impl UpstreamLayer {
    /// Registers the API's histograms; `api` is its configured local prefix.
    pub(crate) fn new(api: &str) -> Self {
        let api: Arc<str> = if api.is_empty() {
            "/".into()
        } else {
            api.into()
        };
        let handles = CLASSES.map(|class| {
            histogram!(UPSTREAM_DURATION, "api" => api.to_string(), "status_class" => class)
        });
        Self {
            handles: Arc::new(handles),
        }
    }
}

impl<S> Layer<S> for UpstreamLayer {
    type Service = Upstream<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Upstream {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// The service made by [`UpstreamLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Upstream<S> {
    inner: S,
    handles: Arc<[Histogram; 5]>,
}

impl<S> Service<Request> for Upstream<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Marked<Timed<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Marked {
            future: Timed {
                future: self.inner.call(request),
                start: Instant::now(),
                record: Record::Upstream(self.handles.clone()),
            },
            kind: MARKS_READ
                .load(Ordering::Relaxed)
                .then_some(RouteKind::ApiProxy),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future whose response gets marked with a [`RouteKind`].
    pub struct Marked<F> {
        #[pin]
        future: F,
        kind: Option<RouteKind>,
    }
}

impl<F, B, E> Future for Marked<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = ready!(this.future.poll(cx));
        if let (Ok(response), Some(kind)) = (&mut result, *this.kind) {
            response.extensions_mut().insert(kind);
        }
        Poll::Ready(result)
    }
}

/// Marks responses with a [`RouteKind`]: made by [`RouteKind::layer`], or
/// for the management endpoints by the route they matched.
#[derive(Clone, Debug)]
pub struct MarkLayer {
    kind: Option<RouteKind>,
    /// The base path of the management endpoints, when `kind` is `None`.
    base: Option<Arc<str>>,
}

impl MarkLayer {
    /// Marks the management endpoints under `base` by the route they
    /// matched (used by [`Bff::routes`](crate::Bff::routes)), so that routes
    /// added there later need no line of their own.
    pub(crate) fn bff_routes(base: &str) -> Self {
        MarkLayer {
            kind: None,
            base: Some(base.into()),
        }
    }
}

impl<S> Layer<S> for MarkLayer {
    type Service = Mark<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Mark {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`MarkLayer`].
#[derive(Clone, Debug)]
pub struct Mark<S> {
    inner: S,
    layer: MarkLayer,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Mark<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Marked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let kind = match (&self.layer.kind, &self.layer.base) {
            (Some(kind), _) => *kind,
            (None, base) => bff_route(request.extensions(), base.as_deref().unwrap_or_default()),
        };
        Marked {
            future: self.inner.call(request),
            kind: Some(kind),
        }
    }
}

/// The kind of a management endpoint, by the route it matched.
fn bff_route(extensions: &http::Extensions, base: &str) -> RouteKind {
    extensions
        .get::<MatchedPath>()
        .and_then(|p| p.as_str().strip_prefix(base))
        .map_or(RouteKind::BffOther, |rest| match rest {
            "/login" => RouteKind::Login,
            "/callback" => RouteKind::Callback,
            "/logout" => RouteKind::Logout,
            "/logged-out" => RouteKind::LoggedOut,
            "/user" => RouteKind::User,
            "/backchannel" => RouteKind::Backchannel,
            s if s.starts_with("/sessions") => RouteKind::Sessions,
            _ => RouteKind::BffOther,
        })
}

/// The counter of a managed client's 401 retries; `client` is its
/// configured name.
pub(crate) fn unauthorized_retries(client: &str) -> Counter {
    counter!(UNAUTHORIZED_RETRIES, "client" => client.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(CLASSES[class_index(101)], "1xx");
        assert_eq!(CLASSES[class_index(200)], "2xx");
        assert_eq!(CLASSES[class_index(302)], "3xx");
        assert_eq!(CLASSES[class_index(404)], "4xx");
        assert_eq!(CLASSES[class_index(503)], "5xx");
        assert_eq!(CLASSES[class_index(999)], "5xx");
        assert_eq!(CLASSES[class_index(0)], "1xx");
    }

    #[test]
    fn every_kind_has_its_own_slot() {
        for (i, kind) in RouteKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }
}
