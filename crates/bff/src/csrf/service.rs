//! [`Csrf`]: the service of [`CsrfLayer`](super::CsrfLayer).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, Request, header};
use tower_http::csrf::ProtectionError;

use super::future::ResponseFuture;
use super::has_header;
use crate::error::BffError;

/// What tower-http's layer answers a cross-site request with.
pub(super) type Reject = fn(ProtectionError) -> Response;

/// Service of [`CsrfLayer`](super::CsrfLayer): the anti-forgery header
/// first, then tower-http's cross-site check, then the inner service.
#[derive(Clone, Debug)]
pub struct Csrf<S> {
    pub(super) header: Option<(HeaderName, HeaderValue)>,
    pub(super) every_method: bool,
    pub(super) websocket_handshakes: bool,
    pub(super) trusted: Arc<[HeaderValue]>,
    pub(super) inner: tower_http::csrf::Csrf<Restore<S>, Reject>,
}

impl<S> Csrf<S> {
    /// The first line: the header, or (where allowed) a WebSocket handshake
    /// from a trusted origin.
    fn first_line<B>(&self, request: &Request<B>) -> bool {
        let Some((name, value)) = &self.header else {
            return true;
        };
        has_header(request.headers(), name, value.as_bytes())
            || (self.websocket_handshakes && self.trusted_handshake(request))
    }

    fn trusted_handshake<B>(&self, request: &Request<B>) -> bool {
        let headers = request.headers();
        request.method() == Method::GET
            && headers
                .get_all(header::UPGRADE)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            && headers.get_all(header::ORIGIN).iter().count() == 1
            && headers
                .get(header::ORIGIN)
                .is_some_and(|origin| self.trusted.contains(origin))
    }
}

/// The method a request had before it was shown to tower-http's check as a
/// `POST` (which lets `GET`, `HEAD` and `OPTIONS` pass unchecked).
#[derive(Clone, Debug)]
struct Presented(Method);

impl<S, B> tower::Service<Request<B>> for Csrf<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.first_line(&request) {
            return ResponseFuture::rejected(BffError::MissingCsrfHeader.into_response());
        }
        if self.every_method
            && matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::OPTIONS
            )
        {
            let method = std::mem::replace(request.method_mut(), Method::POST);
            request.extensions_mut().insert(Presented(method));
        }
        ResponseFuture::future(self.inner.call(request))
    }
}

/// Inside tower-http's check: gives the request its method back.
#[derive(Clone, Debug)]
pub(super) struct Restore<S>(pub(super) S);

impl<S, B> tower::Service<Request<B>> for Restore<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(Presented(method)) = request.extensions_mut().remove() {
            *request.method_mut() = method;
        }
        self.0.call(request)
    }
}
