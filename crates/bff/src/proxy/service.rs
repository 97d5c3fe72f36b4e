//! [`ProxyService`]: a mounted remote API as one tower service, for a server
//! that picks proxied requests by their path prefix itself instead of
//! routing them through an axum [`Router`](axum::Router).
//!
//! [`Bff::proxy`](crate::Bff::proxy) mounts the same handler as axum
//! routes. Through a `Router`, every request pays for matching the route
//! table, the `MatchedPath` and url-parameter extensions, and for cloning
//! and boxing each layer's route: about 8 allocations and 4,000–5,000
//! instructions per proxied request (docs/BENCHMARKS.md, issue 13). The
//! service here is the handler under the same two layers (the upstream
//! metrics, then anti-forgery and the cross-site check), with one boxed
//! future, and it does what axum's route does to a response (see
//! [`ProxyFuture`]), so the answers are the same either way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, Method, header};
use tower::Service;

use crate::csrf::{self, Csrf};
use crate::metrics::{Marked, Timed, Upstream};
use crate::proxy::forward::Proxy;

/// The boxed future of the handler inside [`ProxyService`].
type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The proxy handler as a service.
#[derive(Clone, Debug)]
pub(crate) struct Handler(pub(crate) Arc<Proxy>);

impl Service<Request> for Handler {
    type Response = Response;
    type Error = Infallible;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let proxy = self.0.clone();
        Box::pin(async move { Ok(proxy.handle(request).await) })
    }
}

/// One mounted remote API as a service: made by
/// [`Bff::proxy_service`](crate::Bff::proxy_service). Send it the requests
/// whose path is the API's [`prefix`](Self::prefix), or below it on a `/`
/// boundary; cheap to clone.
#[derive(Clone, Debug)]
pub struct ProxyService {
    pub(crate) inner: Upstream<Csrf<Handler>>,
    pub(crate) prefix: Arc<str>,
}

impl ProxyService {
    /// The local prefix as mounted: `""` for the root, else `/a[/b...]`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The API as axum routes: the prefix, the prefix with `/`, and every
    /// path below it (every path for the root). What
    /// [`Bff::proxy`](crate::Bff::proxy) returns.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let prefix = self.prefix.clone();
        if prefix.is_empty() {
            Router::new()
                .route_service("/", self.clone())
                .route_service("/{*rest}", self)
        } else {
            Router::new()
                .route_service(&prefix, self.clone())
                .route_service(&format!("{prefix}/"), self.clone())
                .route_service(&format!("{prefix}/{{*rest}}"), self)
        }
    }

    /// Whether `path` is this API's: the prefix itself or below it (every
    /// path for the root).
    pub fn serves(&self, path: &str) -> bool {
        path.strip_prefix(&*self.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl Service<Request> for ProxyService {
    type Response = Response;
    type Error = Infallible;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every layer inside is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = request.method().clone();
        ProxyFuture {
            future: self.inner.call(request),
            method,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ProxyService`]. It finishes the response
    /// as axum's route would: a `Content-Length` when the body's size is
    /// known and the header is missing, no body for `HEAD`, and none for a
    /// successful `CONNECT`.
    pub struct ProxyFuture {
        #[pin]
        future: Marked<Timed<csrf::ResponseFuture<HandlerFuture>>>,
        method: Method,
    }
}

impl Future for ProxyFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.future.poll(cx))?;
        if *this.method == Method::CONNECT && response.status().is_success() {
            if response.headers().contains_key(header::CONTENT_LENGTH)
                || response.headers().contains_key(header::TRANSFER_ENCODING)
                || response.body().size_hint().lower() != 0
            {
                tracing::error!("response to CONNECT with nonempty body");
                *response.body_mut() = Body::empty();
            }
            return Poll::Ready(Ok(response));
        }
        if !response.headers().contains_key(header::CONTENT_LENGTH)
            && let Some(size) = response.body().size_hint().exact()
        {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        if *this.method == Method::HEAD {
            *response.body_mut() = Body::empty();
        }
        Poll::Ready(Ok(response))
    }
}
