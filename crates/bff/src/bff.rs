//! The [`Bff`] handle: the token engine, the HTTP settings and the managed
//! clients, built once by the [`BffBuilder`](crate::BffBuilder) and cloned
//! into every request.
//!
//! Its methods live next to what they serve, so that each feature imports
//! the handle and never the other way round:
//!
//! | method | file |
//! |---|---|
//! | [`Bff::builder`] | `builder.rs` |
//! | [`Bff::client`], [`Bff::settings`], [`Bff::csrf_layer`] | here |
//! | [`Bff::routes`], [`Bff::layer`] | `endpoints.rs` |
//! | [`Bff::admin_routes`] | `admin.rs` |
//! | [`Bff::proxy`] | `proxy/mod.rs` |
//! | [`Bff::api_clients`], [`Bff::api_clients_for`] | `client/extract.rs` |
//!
//! ```no_run
//! # fn demo() -> Result<(), oidc_bff::BffError> {
//! use oidc_bff::{Bff, OidcConfig};
//!
//! let bff = Bff::builder(
//!     OidcConfig::builder("https://login.example.com", "bff")
//!         .client_secret("secret")
//!         .build()?,
//! )
//! .public_url("https://app.example.com")
//! .build()?;
//! # let _ = bff; Ok(()) }
//! ```

use std::sync::Arc;

use http::request::Parts;
use oidc_bff_tokens::TokenEngine;
use url::Url;

use crate::client::Registry;
use crate::csrf::CsrfLayer;
use crate::error::BffError;

/// The default name of the session cookie.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-bff";

/// Settings of the BFF's HTTP surface.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BffSettings {
    /// The URL the browser uses to reach the BFF; redirect URIs are built
    /// from it, never from request headers.
    pub public_url: Url,
    /// Base path of the management endpoints (default `/bff`).
    pub base_path: String,
    /// Name of the session cookie (default `__Host-bff`).
    pub cookie_name: String,
    /// Name of the sign-in transaction cookie (default: session cookie name + `-login`).
    pub login_cookie_name: String,
    /// Anti-forgery header name and value (default `X-CSRF: 1`).
    pub csrf_header: (http::HeaderName, String),
    /// Origins whose requests are not cross-site: the public URL's origin
    /// first, then those given to
    /// [`BffBuilder::trusted_origin`](crate::BffBuilder::trusted_origin).
    pub trusted_origins: Vec<String>,
    /// Where the provider sends the browser after logout (default: the public URL's root).
    pub post_logout_redirect_uri: Option<String>,
}

impl BffSettings {
    /// The redirect URI registered at the provider: public URL + base path + `/callback`.
    pub fn redirect_uri(&self) -> String {
        self.public_path("callback")
    }

    /// An absolute URL under the public URL and base path.
    pub(crate) fn public_path(&self, endpoint: &str) -> String {
        format!(
            "{}{}/{}",
            self.public_url.as_str().trim_end_matches('/'),
            self.base_path,
            endpoint
        )
    }

    /// The post-logout redirect URI sent to the provider.
    pub fn post_logout_redirect_uri(&self) -> String {
        self.post_logout_redirect_uri
            .clone()
            .unwrap_or_else(|| format!("{}/", self.public_url.as_str().trim_end_matches('/')))
    }
}

/// The BFF: token engine plus HTTP settings. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bff {
    pub(crate) inner: Arc<BffInner>,
}

#[derive(Debug)]
pub(crate) struct BffInner {
    pub(crate) engine: TokenEngine,
    pub(crate) settings: BffSettings,
    pub(crate) clients: Registry,
    pub(crate) csrf: CsrfLayer,
    /// Bumped whenever a session ends on this instance, to wake the session
    /// watch of proxied WebSockets.
    pub(crate) sessions_ended: tokio::sync::watch::Sender<u64>,
}

impl Bff {
    /// The token engine: sessions, sign-in and sign-out, the user's and the
    /// client credentials tokens.
    pub fn engine(&self) -> &TokenEngine {
        &self.inner.engine
    }

    /// The token engine's former accessor.
    #[deprecated(since = "0.2.0", note = "renamed to `engine()`")]
    pub fn client(&self) -> &TokenEngine {
        self.engine()
    }

    /// The HTTP settings.
    pub fn settings(&self) -> &BffSettings {
        &self.inner.settings
    }

    /// The [anti-forgery layer](crate::csrf) for API routes: the configured
    /// header (default `X-CSRF: 1`) required, cross-site requests refused.
    pub fn csrf_layer(&self) -> CsrfLayer {
        self.inner.csrf.clone()
    }

    /// The `Bff` placed in the request by [`Bff::layer`].
    pub(crate) fn from_parts(parts: &Parts) -> Result<Bff, BffError> {
        parts.extensions.get::<Bff>().cloned().ok_or_else(|| {
            BffError::Config(
                "the BFF layer is missing: add `.layer(bff.layer())` to the router".into(),
            )
        })
    }
}
