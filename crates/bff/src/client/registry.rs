//! Registering managed clients at start-up: [`ClientRegistration`] and the
//! [`TypedClient`] trait.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use oidc_bff_tokens::{ClientCredentialsRequest, TokenEngine, UserTokenRequest};
use reqwest_middleware::Middleware;
use url::Url;

use super::managed::{ClientShared, ManagedClient};
use super::middleware::{TokenMiddleware, TokenSource};
use crate::error::BffError;
use crate::token_policy::{TokenPolicy, TokenRequests};

/// Connect timeout of a managed client unless configured otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total timeout of a managed client's requests unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which access token a managed client sends: the [`TokenPolicy`] proxied
/// routes use as well.
#[deprecated(note = "use `oidc_bff::TokenPolicy`")]
pub type TokenKind = TokenPolicy;

type Configure = Box<dyn FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send>;

/// A managed client to register on the [`BffBuilder`](crate::BffBuilder).
///
/// ```
/// use std::time::Duration;
/// use oidc_bff::client::ClientRegistration;
///
/// let api = ClientRegistration::user("apiClient", "https://api.example.com/v1/")
///     .resource("https://api.example.com")
///     .configure(|http| http.timeout(Duration::from_secs(10)));
/// let m2m = ClientRegistration::client("catalog", "https://catalog.example.com/")
///     .scope("catalog.read");
/// # let _ = (api, m2m);
/// ```
///
/// Every request of the client goes to `base_url` joined with the path given
/// to [`ManagedClient::get`] and friends; a path that would leave the base
/// URL (another origin, `..` above the base path) is refused before anything
/// is sent, so the token only ever goes where it was meant to. The base URL
/// must be `https` (`http` is accepted on loopback only).
///
/// The underlying HTTP client has a connect timeout of
/// [`DEFAULT_CONNECT_TIMEOUT`], a total timeout of [`DEFAULT_TIMEOUT`] and
/// follows no redirects; [`configure`](Self::configure) can change any
/// of it.
#[must_use]
pub struct ClientRegistration {
    pub(crate) name: String,
    base_url: String,
    policy: TokenPolicy,
    tokens: TokenRequests,
    retry_on_unauthorized: bool,
    configure: Vec<Configure>,
    middleware: Vec<Arc<dyn Middleware>>,
}

impl std::fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("policy", &self.policy)
            .field("tokens", &self.tokens)
            .field("retry_on_unauthorized", &self.retry_on_unauthorized)
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

impl ClientRegistration {
    /// A client named `name` sending the tokens `policy` calls for to
    /// `base_url`.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>, policy: TokenPolicy) -> Self {
        Self {
            name: name.into(),
            base_url: base_url.into(),
            policy,
            tokens: TokenRequests::default(),
            retry_on_unauthorized: true,
            configure: Vec::new(),
            middleware: Vec::new(),
        }
    }

    /// A client that sends the signed-in user's token ([`TokenPolicy::User`]).
    pub fn user(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self::new(name, base_url, TokenPolicy::User)
    }

    /// A client that sends the client's own token ([`TokenPolicy::Client`]).
    pub fn client(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self::new(name, base_url, TokenPolicy::Client)
    }

    /// A client that sends the user's token, or the client's token for
    /// anonymous users ([`TokenPolicy::UserOrClient`]).
    pub fn user_or_client(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self::new(name, base_url, TokenPolicy::UserOrClient)
    }

    /// Asks for tokens with these scopes (user and client tokens; default:
    /// the sign-in token for the user, no `scope` parameter for the client).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.tokens.scope(scope.into());
        self
    }

    /// Asks for tokens for this resource (RFC 8707; user and client tokens;
    /// default: none).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.tokens.resource(resource.into());
        self
    }

    /// The parameters of the user's token (replaces [`scope`](Self::scope)
    /// and [`resource`](Self::resource) for user tokens). `force_renewal` is
    /// ignored: renewal happens when needed, and after a 401.
    pub fn user_token_request(mut self, mut request: UserTokenRequest) -> Self {
        request.force_renewal = false;
        self.tokens.user = request;
        self
    }

    /// The parameters of the client's token (replaces [`scope`](Self::scope)
    /// and [`resource`](Self::resource) for client tokens), e.g. a token
    /// endpoint other than the discovered one.
    pub fn client_token_request(mut self, request: ClientCredentialsRequest) -> Self {
        self.tokens.client = request;
        self
    }

    /// When the API answers 401, renew the token once and send the request
    /// again — only when the request can be replayed (no body, or a buffered
    /// one; streamed bodies are never resent). On by default. Never more than
    /// one retry.
    pub fn retry_on_unauthorized(mut self, on: bool) -> Self {
        self.retry_on_unauthorized = on;
        self
    }

    /// For [`TokenPolicy::UserOrClient`]: when the user's token cannot be had
    /// (refresh rejected, provider down, ...), send the client's token
    /// instead of failing. Off by default: a signed-in user's request never
    /// silently runs with the client's rights.
    pub fn client_token_on_user_failure(mut self, on: bool) -> Self {
        self.tokens.client_token_on_user_failure = on;
        self
    }

    /// Adjusts the underlying `reqwest` client: timeouts, default headers,
    /// TLS settings, proxies. May be called several times; runs in order.
    pub fn configure<F>(mut self, configure: F) -> Self
    where
        F: FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + 'static,
    {
        self.configure.push(Box::new(configure));
        self
    }

    /// Adds a `reqwest-middleware` layer (tracing, metrics, transient-error
    /// retries, ...). Layers run in the order added, after the token layer:
    /// they see the request with its `Authorization` header (marked
    /// sensitive; never log it), and run again when a 401 is retried.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Builds the client.
    fn build(self, oidc: &TokenEngine) -> Result<ClientShared, BffError> {
        let name = self.name;
        let config_error = |what: String| BffError::Config(format!("API client {name:?}: {what}"));
        let base_url = parse_base_url(&self.base_url).map_err(|e| config_error(e.into()))?;
        let mut http = reqwest::Client::builder()
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT)
            .timeout(DEFAULT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("oidc-bff/", env!("CARGO_PKG_VERSION")));
        for configure in self.configure {
            http = configure(http);
        }
        let http = http
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        let source = Arc::new(TokenSource {
            oidc: oidc.clone(),
            policy: self.policy,
            tokens: self.tokens,
        });
        let mut http = reqwest_middleware::ClientBuilder::new(http).with(TokenMiddleware {
            source: source.clone(),
            retry_on_unauthorized: self.retry_on_unauthorized,
            retries: crate::metrics::unauthorized_retries(&name),
        });
        for middleware in self.middleware {
            http = http.with_arc(middleware);
        }
        let http = http.build();
        Ok(ClientShared {
            name,
            base_url,
            http,
            source,
        })
    }
}

/// Checks a base URL and makes it end with `/`, so paths are joined below it.
fn parse_base_url(raw: &str) -> Result<Url, &'static str> {
    let mut url = Url::parse(raw).map_err(|_| "base_url is not a valid URL")?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err("base_url must be https (http is accepted for loopback only)"),
    }
    if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err("base_url must have a host and no user info");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("base_url must not have a query or fragment");
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// A user-defined API client wrapping a [`ManagedClient`], received in
/// handlers as [`Api<T>`](super::Api).
///
/// ```
/// use oidc_bff::BffError;
/// use oidc_bff::client::{ManagedClient, TypedClient};
///
/// pub struct MyTypedApiClient(ManagedClient);
///
/// impl TypedClient for MyTypedApiClient {
///     fn from_managed(client: ManagedClient) -> Self {
///         Self(client)
///     }
/// }
///
/// impl MyTypedApiClient {
///     pub async fn get_data(&self) -> Result<String, BffError> {
///         Ok(self.0.get("data").send().await?.error_for_status()?.text().await?)
///     }
/// }
/// ```
///
/// Register it with
/// [`BffBuilder::typed_client`](crate::BffBuilder::typed_client).
pub trait TypedClient: Sized + Send + Sync + 'static {
    /// Wraps the managed client registered for this type, bound to the
    /// current request's user.
    fn from_managed(client: ManagedClient) -> Self;
}

/// A typed client waiting for [`Registry::build`].
pub(crate) struct TypedRegistration {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
    pub(crate) registration: ClientRegistration,
}

impl std::fmt::Debug for TypedRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedRegistration")
            .field("type_name", &self.type_name)
            .field("registration", &self.registration)
            .finish()
    }
}

impl TypedRegistration {
    pub(crate) fn of<T: TypedClient>(registration: ClientRegistration) -> Self {
        Self {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            registration,
        }
    }
}

/// The managed clients of a [`Bff`](crate::Bff), by name and by type.
#[derive(Default)]
pub(crate) struct Registry {
    named: HashMap<String, Arc<ClientShared>>,
    typed: HashMap<TypeId, Arc<ClientShared>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.named.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Registry").field("clients", &names).finish()
    }
}

impl Registry {
    /// Builds every registered client; names must be unique, and so must types.
    pub(crate) fn build(
        oidc: &TokenEngine,
        named: Vec<ClientRegistration>,
        typed: Vec<TypedRegistration>,
    ) -> Result<Self, BffError> {
        let mut registry = Registry::default();
        let typed = typed
            .into_iter()
            .map(|t| (Some((t.type_id, t.type_name)), t.registration));
        for (ty, registration) in named.into_iter().map(|r| (None, r)).chain(typed) {
            if registration.name.is_empty() {
                return Err(BffError::Config("an API client needs a name".into()));
            }
            if registry.named.contains_key(&registration.name) {
                return Err(BffError::Config(format!(
                    "two API clients are named {:?}",
                    registration.name
                )));
            }
            let shared = Arc::new(registration.build(oidc)?);
            if let Some((type_id, type_name)) = ty
                && registry.typed.insert(type_id, shared.clone()).is_some()
            {
                return Err(BffError::Config(format!(
                    "the typed client {type_name} is registered twice"
                )));
            }
            registry.named.insert(shared.name.clone(), shared);
        }
        Ok(registry)
    }

    pub(crate) fn named(&self, name: &str) -> Option<&Arc<ClientShared>> {
        self.named.get(name)
    }

    pub(crate) fn typed<T: TypedClient>(&self) -> Option<&Arc<ClientShared>> {
        self.typed.get(&TypeId::of::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_normalised() {
        assert_eq!(
            parse_base_url("https://api.example.com/v1")
                .unwrap()
                .as_str(),
            "https://api.example.com/v1/"
        );
        assert_eq!(
            parse_base_url("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        for bad in [
            "http://api.example.com/",
            "ftp://127.0.0.1/",
            "https://user:pw@api.example.com/",
            "https://api.example.com/?x=1",
            "not a url",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }
}
