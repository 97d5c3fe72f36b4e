//! [`CsrfLayer`]: the anti-forgery header and the cross-site check, as a
//! tower layer.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue};
use tower_http::csrf::ProtectionError;

use super::service::{Csrf, Reject, Restore};
use crate::error::BffError;

/// Layer refusing requests that lack the anti-forgery header (`401`) or that
/// the browser marks as cross-site (`403`); see the [module docs](super).
///
/// Made by [`Bff::csrf_layer`](crate::Bff::csrf_layer) from the BFF's
/// settings, or by [`CsrfLayer::new`] from a header name and value.
#[derive(Clone, Debug)]
#[must_use]
pub struct CsrfLayer {
    /// The required header, `None` for the sign-in navigations.
    pub(super) header: Option<(HeaderName, HeaderValue)>,
    /// Whether `GET`, `HEAD` and `OPTIONS` are checked for their origin too.
    pub(super) every_method: bool,
    /// Whether a WebSocket handshake from a trusted origin may go without
    /// the header (browsers cannot add headers to it).
    pub(super) websocket_handshakes: bool,
    /// The trusted origins, as browsers send them.
    pub(super) trusted: Arc<[HeaderValue]>,
    pub(super) cross_site: tower_http::csrf::CsrfLayer<Reject>,
}

impl CsrfLayer {
    /// A layer requiring the header `name: value` on every request and
    /// refusing cross-site requests of every method. No origin is trusted
    /// beyond the request's own host; add some with [`trusted_origin`](Self::trusted_origin).
    pub fn new(name: HeaderName, value: HeaderValue) -> Self {
        CsrfLayer {
            header: Some((name, value)),
            every_method: true,
            websocket_handshakes: false,
            trusted: Arc::from([]),
            cross_site: tower_http::csrf::CsrfLayer::new()
                .with_rejection_response(refuse as Reject),
        }
    }

    /// Trusts requests whose `Origin` is `origin` (e.g. the single-page app's
    /// origin when it is served from another host than the BFF). The value
    /// is normalised as [`check_trusted_origin`](super::check_trusted_origin)
    /// says; anything but an `http(s)` origin is a
    /// [`BffError::Config`](crate::BffError::Config).
    pub fn trusted_origin(mut self, origin: &str) -> Result<Self, BffError> {
        let origin = super::check_trusted_origin(origin)
            .map_err(|why| BffError::Config(format!("trusted origin {origin:?}: {why}")))?;
        self.cross_site = self
            .cross_site
            .add_trusted_origin(&origin)
            .map_err(|err| BffError::Config(format!("trusted origin: {err}")))?;
        let value = HeaderValue::from_str(&origin)
            .map_err(|_| BffError::Config(format!("trusted origin {origin:?} is no header")))?;
        let mut trusted = self.trusted.to_vec();
        if !trusted.contains(&value) {
            trusted.push(value);
        }
        self.trusted = trusted.into();
        Ok(self)
    }

    /// The trusted origins, in the order given, as browsers send them.
    pub fn trusted_origins(&self) -> impl Iterator<Item = &str> {
        self.trusted
            .iter()
            .filter_map(|origin| origin.to_str().ok())
    }

    /// The same trusted origins for top-level navigations (`/bff/login`,
    /// `/bff/callback`, `/bff/logout`): no header required, and tower-http's
    /// rule for safe methods, so a `GET` arriving from the provider's site
    /// passes while any other method must come from a trusted origin.
    pub(crate) fn for_navigations(&self) -> Self {
        CsrfLayer {
            header: None,
            every_method: false,
            websocket_handshakes: false,
            ..self.clone()
        }
    }

    /// Lets a WebSocket handshake from a trusted origin go without the
    /// header: browsers cannot add headers to it (the proxy's rule).
    pub(crate) fn websocket_handshakes_from_trusted_origins(mut self) -> Self {
        self.websocket_handshakes = true;
        self
    }
}

/// The answer to a request refused as cross-site.
fn refuse(error: ProtectionError) -> Response {
    tracing::debug!(reason = %error, "cross-site request refused");
    BffError::CrossSiteRequest.into_response()
}

impl<S> tower::Layer<S> for CsrfLayer {
    type Service = Csrf<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Csrf {
            header: self.header.clone(),
            every_method: self.every_method,
            websocket_handshakes: self.websocket_handshakes,
            trusted: self.trusted.clone(),
            inner: tower::Layer::layer(&self.cross_site, Restore(inner)),
        }
    }
}
