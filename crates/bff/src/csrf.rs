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

/// Request headers a page on another site may send without a CORS preflight
/// (Fetch: CORS-safelisted request headers): useless against forgery.
const CORS_SAFELISTED: [&str; 5] = [
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "range",
];

/// Request headers only the browser sets (Fetch: forbidden request headers):
/// the single-page app could not send them.
const BROWSER_ONLY: [&str; 21] = [
    "accept-charset",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "connection",
    "content-length",
    "cookie",
    "cookie2",
    "date",
    "dnt",
    "expect",
    "host",
    "keep-alive",
    "origin",
    "referer",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
];

/// Checks an anti-forgery header name: it must be a valid header name that
/// a cross-site page cannot send without a CORS preflight and that the
/// application's own script can set. The error says why not.
///
/// ```
/// use oidc_bff::csrf::check_header_name;
///
/// assert!(check_header_name("X-CSRF").is_ok());
/// assert!(check_header_name("Content-Type").is_err()); // sent cross-site freely
/// assert!(check_header_name("Cookie").is_err());       // only the browser sets it
/// ```
pub fn check_header_name(name: &str) -> Result<(), &'static str> {
    let name = name.to_ascii_lowercase();
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        Err("not a valid header name")
    } else if CORS_SAFELISTED.contains(&name.as_str()) {
        Err(
            "another site's page may send this header without a CORS preflight; \
             choose a custom one such as \"X-CSRF\"",
        )
    } else if BROWSER_ONLY.contains(&name.as_str())
        || name.starts_with("proxy-")
        || name.starts_with("sec-")
    {
        Err("only the browser sets this header; choose a custom one such as \"X-CSRF\"")
    } else {
        Ok(())
    }
}

/// Checks an anti-forgery header value: non-empty printable ASCII without
/// leading or trailing spaces.
pub fn check_header_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty()
        || value.trim() != value
        || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        Err("must be non-empty printable ASCII without leading or trailing spaces")
    } else {
        Ok(())
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
