//! [`ManagedClient`]: an HTTP client whose requests carry the right access
//! token.

use std::sync::Arc;

use http::Method;
use oidc_bff_tokens::{AccessToken, TokenError};
use reqwest_middleware::{ClientWithMiddleware, RequestBuilder};
use url::Url;

use super::binding::{Binding, BoundTo, Refused};
use super::middleware::TokenSource;
use crate::error::BffError;

/// A registered client, shared by every [`ManagedClient`] handed out for it.
pub(crate) struct ClientShared {
    pub(crate) name: String,
    pub(crate) base_url: Url,
    pub(crate) http: ClientWithMiddleware,
    pub(crate) source: Arc<TokenSource>,
}

impl ClientShared {
    /// `path` joined below the base URL; refused when the result would leave it.
    fn resolve(&self, path: &str) -> Result<Url, &'static str> {
        let url = self
            .base_url
            .join(path.trim_start_matches('/'))
            .map_err(|_| "the request path is not valid")?;
        if url.origin() != self.base_url.origin() || !url.path().starts_with(self.base_url.path()) {
            return Err("the request URL is outside the API client's base URL");
        }
        Ok(url)
    }
}

/// A registered API client, bound to a user (or to nobody): every request
/// it sends carries the access token its [`TokenPolicy`](crate::TokenPolicy)
/// calls for — current and valid, renewed first when needed.
///
/// Get one from [`ApiClients`](super::ApiClients) (in a handler, or for a
/// session outside of any request). Cheap to clone.
///
/// ```
/// use oidc_bff::BffError;
/// use oidc_bff::client::ApiClients;
///
/// async fn handler(clients: ApiClients) -> Result<String, BffError> {
///     let api = clients.get("apiClient")?;
///     // GET {base_url}/remoteApi with `Authorization: Bearer <the user's token>`.
///     let response = api.get("remoteApi").send().await?;
///     Ok(response.error_for_status()?.text().await?)
/// }
/// ```
///
/// Requests are built with `reqwest-middleware`'s request builder (`.query()`,
/// `.json()`, `.header()`, ... as in `reqwest`). Sending fails with a
/// [`BffError`]-convertible error when no token can be had, so `?` in a
/// handler answers 401 (or 503 when the provider is temporarily down).
#[derive(Clone)]
pub struct ManagedClient {
    shared: Arc<ClientShared>,
    binding: Arc<Binding>,
}

impl std::fmt::Debug for ManagedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = match &*self.binding {
            Binding::Anonymous => "anonymous",
            Binding::Request { .. } => "request session",
            Binding::Session(_) => "session",
        };
        f.debug_struct("ManagedClient")
            .field("name", &self.shared.name)
            .field("base_url", &self.shared.base_url.as_str())
            .field("policy", &self.shared.source.policy)
            .field("bound_to", &bound)
            .finish()
    }
}

impl ManagedClient {
    pub(crate) fn new(shared: Arc<ClientShared>, binding: Arc<Binding>) -> Self {
        Self { shared, binding }
    }

    /// The name the client was registered under.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The base URL every request goes below (ends with `/`).
    pub fn base_url(&self) -> &Url {
        &self.shared.base_url
    }

    /// The URL a request to `path` goes to: the base URL joined with `path`
    /// (a leading `/` is ignored). Refused when it would leave the base URL.
    pub fn url(&self, path: &str) -> Result<Url, BffError> {
        self.shared
            .resolve(path)
            .map_err(|why| BffError::BadRequest(why.into()))
    }

    /// A request with `method` to `path` below the base URL.
    ///
    /// A path that would leave the base URL (an absolute URL to another
    /// origin, `..` above the base path) makes `send()` fail with
    /// [`BffError::BadRequest`] before anything is sent.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = match self.shared.resolve(path) {
            Ok(url) => self.shared.http.request(method, url),
            Err(why) => self
                .shared
                .http
                .request(method, self.shared.base_url.clone())
                .with_extension(Refused(why)),
        };
        builder.with_extension(BoundTo(self.binding.clone()))
    }

    /// A `GET` request to `path` below the base URL.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// A `POST` request to `path` below the base URL.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// A `PUT` request to `path` below the base URL.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// A `PATCH` request to `path` below the base URL.
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// A `DELETE` request to `path` below the base URL.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// A `HEAD` request to `path` below the base URL.
    pub fn head(&self, path: &str) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    /// The access token this client's next request would carry (for calls
    /// made some other way, e.g. a WebSocket or gRPC channel). When its
    /// [`TokenPolicy`](crate::TokenPolicy) sends none (`None`, or
    /// `UserOrNone` for an anonymous user): [`TokenError::NotAuthenticated`].
    pub async fn access_token(&self) -> Result<AccessToken, TokenError> {
        match self.shared.source.token(&self.binding).await? {
            Some((token, _)) => Ok(token),
            None => Err(TokenError::NotAuthenticated),
        }
    }
}
