//! [`BffBuilder`]: the settings of the BFF's endpoints, cookies and managed
//! clients, checked once when the [`Bff`] is built. Every option states its
//! default.
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
//! .public_url("https://app.example.com")  // required
//! .base_path("/bff")                      // the default
//! .cookie_name("__Host-bff")              // the default
//! .csrf_header("X-CSRF", "1")             // the default
//! .build()?;
//! # let _ = bff; Ok(()) }
//! ```

use std::sync::Arc;

use oidc_bff_tokens::{OidcConfig, SessionStore, SharedClock, TokenEngine, TokenEngineBuilder};
use url::Url;

use crate::bff::{Bff, BffInner, BffSettings, DEFAULT_COOKIE_NAME};
use crate::client::{ClientRegistration, Registry, TypedClient, TypedRegistration};
use crate::csrf::{CsrfLayer, check_header_name, check_header_value};
use crate::error::BffError;

impl Bff {
    /// Starts a builder for the provider in `config`. Only
    /// [`public_url`](BffBuilder::public_url) must be set; every other
    /// option has the default its documentation states.
    pub fn builder(config: OidcConfig) -> BffBuilder {
        BffBuilder {
            engine: TokenEngine::builder(config),
            public_url: None,
            base_path: "/bff".into(),
            cookie_name: DEFAULT_COOKIE_NAME.into(),
            csrf_header: ("x-csrf".into(), "1".into()),
            trusted_origins: Vec::new(),
            post_logout_redirect_uri: None,
            api_clients: Vec::new(),
            typed_clients: Vec::new(),
        }
    }
}

/// Builder of [`Bff`].
#[derive(Debug)]
#[must_use]
pub struct BffBuilder {
    engine: TokenEngineBuilder,
    public_url: Option<String>,
    base_path: String,
    cookie_name: String,
    csrf_header: (String, String),
    trusted_origins: Vec<String>,
    post_logout_redirect_uri: Option<String>,
    api_clients: Vec<ClientRegistration>,
    typed_clients: Vec<TypedRegistration>,
}

impl BffBuilder {
    /// The URL the browser uses to reach the BFF (required), e.g.
    /// `https://app.example.com`. The redirect URI is
    /// `{public_url}{base_path}/callback`.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// Base path of the management endpoints (default `/bff`).
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.base_path = path.into();
        self
    }

    /// Name of the session cookie (default `__Host-bff`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// Anti-forgery header name and value (default `X-CSRF: 1`). A header a
    /// cross-site page may send freely (`Content-Type`) or one only the
    /// browser sets (`Cookie`) is refused by [`build`](Self::build); see
    /// [`check_header_name`](crate::csrf::check_header_name).
    pub fn csrf_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.csrf_header = (name.into(), value.into());
        self
    }

    /// Trusts requests from another origin, e.g. `https://app.example.com`
    /// when the single-page app is served from another host than the BFF
    /// (default: only the public URL's origin). See [`crate::csrf`].
    pub fn trusted_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }

    /// Where the provider sends the browser after logout (default: the
    /// public URL's root, `{public_url}/`). Register it at the provider as a
    /// post-logout redirect URI.
    pub fn post_logout_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.post_logout_redirect_uri = Some(uri.into());
        self
    }

    /// The session store (default: in memory).
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.engine = self.engine.store(store);
        self
    }

    /// The keys that seal pending sign-ins (default: a random key of this
    /// process). Instances behind one load balancer must share them; the
    /// session store's encryption keys serve well. See
    /// [`TokenEngineBuilder::login_keys`](crate::tokens::TokenEngineBuilder::login_keys).
    pub fn login_keys(mut self, keys: oidc_bff_tokens::store::KeyRing) -> Self {
        self.engine = self.engine.login_keys(keys);
        self
    }

    /// The clock (default: the system clock; tests use a
    /// [`ManualClock`](crate::tokens::ManualClock)).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.engine = self.engine.clock(clock);
        self
    }

    /// The HTTP client used to call the provider (default: one with the
    /// [`OidcConfig`]'s connect and request timeouts that follows no
    /// redirects). A client of your own should have timeouts and must not
    /// follow redirects.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.engine = self.engine.http_client(http);
        self
    }

    /// Registers a managed API client, obtained in handlers by name through
    /// [`ApiClients`](crate::client::ApiClients). Names must be unique
    /// (default: no clients).
    ///
    /// ```
    /// # fn demo(builder: oidc_bff::BffBuilder) -> oidc_bff::BffBuilder {
    /// use oidc_bff::client::ClientRegistration;
    ///
    /// builder.api_client(
    ///     ClientRegistration::user("apiClient", "https://api.example.com/")
    ///         .configure(|http| http.timeout(std::time::Duration::from_secs(10))),
    /// )
    /// # }
    /// ```
    pub fn api_client(mut self, registration: ClientRegistration) -> Self {
        self.api_clients.push(registration);
        self
    }

    /// Registers the [typed client](crate::client::TypedClient) `T`, received
    /// in handlers as [`Api<T>`](crate::client::Api). Its registration name
    /// must be unique among all clients, and it can be had by name as well.
    pub fn typed_client<T: TypedClient>(mut self, registration: ClientRegistration) -> Self {
        self.typed_clients
            .push(TypedRegistration::of::<T>(registration));
        self
    }

    /// Validates the settings and builds the BFF.
    pub fn build(self) -> Result<Bff, BffError> {
        let raw = self
            .public_url
            .ok_or_else(|| BffError::Config("public_url is required".into()))?;
        let public_url = Url::parse(&raw)
            .map_err(|e| BffError::Config(format!("public_url is not a valid URL: {e}")))?;
        if !matches!(public_url.scheme(), "http" | "https") || public_url.host().is_none() {
            return Err(BffError::Config("public_url must be an http(s) URL".into()));
        }
        let base_path = format!("/{}", self.base_path.trim_matches('/'));
        if base_path == "/" || base_path.contains(['?', '#', ' ']) {
            return Err(BffError::Config(
                "base_path must be a path like /bff".into(),
            ));
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(BffError::Config(
                "cookie_name may only hold letters, digits, '-', '_' and '.'".into(),
            ));
        }
        check_header_name(&self.csrf_header.0)
            .map_err(|why| BffError::Config(format!("csrf header name: {why}")))?;
        check_header_value(&self.csrf_header.1)
            .map_err(|why| BffError::Config(format!("csrf header value: {why}")))?;
        let csrf_name = http::HeaderName::from_bytes(self.csrf_header.0.as_bytes())
            .map_err(|_| BffError::Config("csrf header name is not a valid header name".into()))?;
        let value = http::HeaderValue::from_str(&self.csrf_header.1)
            .map_err(|_| BffError::Config("csrf header value is not a valid header".into()))?;
        let mut csrf = CsrfLayer::new(csrf_name.clone(), value)
            .trusted_origin(&public_url.origin().ascii_serialization())?;
        for origin in &self.trusted_origins {
            csrf = csrf.trusted_origin(origin)?;
        }
        let settings = BffSettings {
            public_url,
            base_path,
            login_cookie_name: format!("{}-login", self.cookie_name),
            cookie_name: self.cookie_name,
            csrf_header: (csrf_name, self.csrf_header.1),
            trusted_origins: csrf.trusted_origins().map(str::to_owned).collect(),
            post_logout_redirect_uri: self.post_logout_redirect_uri,
        };
        let engine = self.engine.build()?;
        let clients = Registry::build(&engine, self.api_clients, self.typed_clients)?;
        Ok(Bff {
            inner: Arc::new(BffInner {
                engine,
                settings,
                clients,
                csrf,
                sessions_ended: tokio::sync::watch::Sender::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> BffBuilder {
        let config = oidc_bff_tokens::OidcConfig::builder("https://login.example.com", "bff")
            .client_secret("s")
            .build()
            .unwrap();
        Bff::builder(config).public_url("https://app.example.com")
    }

    #[tokio::test]
    async fn unsafe_anti_forgery_headers_are_refused() {
        for (name, value) in [
            ("Content-Type", "x"),
            ("cookie", "1"),
            ("Sec-Fetch-Site", "same-origin"),
            ("Proxy-Authorization", "1"),
            ("bad header", "1"),
            ("X-CSRF", ""),
            ("X-CSRF", " 1"),
        ] {
            let err = builder().csrf_header(name, value).build().unwrap_err();
            assert!(err.to_string().contains("csrf header"), "{name}: {err}");
        }
        assert!(
            builder()
                .csrf_header("X-Requested-By", "app")
                .build()
                .is_ok()
        );
        assert!(builder().build().is_ok(), "the default X-CSRF: 1");
    }
}
