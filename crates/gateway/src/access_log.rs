//! The access log: one line per request with its method, path, status and
//! latency; INFO below 500, WARN from 500 on. Queries and headers are never
//! logged: they may carry authorization codes, states, cookies and tokens.
//!
//! Each request also gets a `request` span at DEBUG, so at that level every
//! line logged while handling it names the request. At the default level
//! (INFO) the span is disabled and costs next to nothing.
//!
//! Why not tower-http's `TraceLayer`, which the gateway used before: it needs
//! an INFO span per request for the same line, and formatting the span plus a
//! separate response event cost 5.3 µs of the 39 µs of CPU the gateway spent
//! per proxied request (docs/BENCHMARKS.md). One event costs less than half
//! of that.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;
use http::{Method, Uri};
use tower::{Layer, Service};
use tracing::Span;

/// Adds the access log to a service; see the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// The service made by [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> Service<Request> for AccessLog<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let span = tracing::debug_span!(
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        );
        let method = request.method().clone();
        let uri = request.uri().clone();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ResponseFuture {
            future,
            span,
            method,
            uri,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AccessLog`]: logs when the response is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        span: Span,
        method: Method,
        uri: Uri,
        start: Instant,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.enter();
            ready!(this.future.poll(cx))
        };
        if let Ok(response) = &result {
            let status = response.status().as_u16();
            let latency_ms = this.start.elapsed().as_secs_f64() * 1000.0;
            let (method, path) = (this.method.as_str(), this.uri.path());
            if status >= 500 {
                tracing::warn!(method, path, status, latency_ms, "request");
            } else {
                tracing::info!(method, path, status, latency_ms, "request");
            }
        }
        Poll::Ready(result)
    }
}
