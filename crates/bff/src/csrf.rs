//! Anti-forgery: API routes require a custom header.
//!
//! A cross-site page cannot send a custom header without a CORS preflight,
//! which the BFF never grants, so requiring `X-CSRF: 1` on every API request
//! shuts out cross-site request forgery together with the `SameSite` session
//! cookie. Requests without it are answered 401 and never reach the handler.
//!
//! ```
//! use axum::{Router, routing::get};
//! # fn demo(bff: oidc_bff::Bff) {
//! let api: Router = Router::new()
//!     .route("/api/data", get(|| async { "data" }))
//!     .layer(bff.csrf_layer());
//! # }
//! ```

use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, FutureExt as _};
use http::{HeaderName, Request};

use crate::config::Bff;
use crate::error::BffError;

/// Layer that refuses requests lacking the anti-forgery header.
#[derive(Clone, Debug)]
pub struct CsrfLayer {
    name: HeaderName,
    value: String,
}

impl Bff {
    /// A layer requiring the configured anti-forgery header (default `X-CSRF: 1`).
    pub fn csrf_layer(&self) -> CsrfLayer {
        let (name, value) = self.settings().csrf_header.clone();
        CsrfLayer { name, value }
    }
}

impl CsrfLayer {
    pub(crate) fn check<B>(&self, request: &Request<B>) -> bool {
        has_header(request.headers(), &self.name, &self.value)
    }
}

pub(crate) fn has_header(headers: &http::HeaderMap, name: &HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes() == value.as_bytes())
}

impl<S> tower::Layer<S> for CsrfLayer {
    type Service = Csrf<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Csrf {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service of [`CsrfLayer`].
#[derive(Clone, Debug)]
pub struct Csrf<S> {
    inner: S,
    layer: CsrfLayer,
}

impl<S, B> tower::Service<Request<B>> for Csrf<S>
where
    S: tower::Service<Request<B>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.layer.check(&request) {
            self.inner.call(request).boxed()
        } else {
            async { Ok(BffError::MissingCsrfHeader.into_response()) }.boxed()
        }
    }
}
