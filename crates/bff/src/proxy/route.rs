//! [`RemoteApi`]: one remote API mounted under a local path prefix, with
//! the [`TokenPolicy`] of its route.
//!
//! ```
//! use std::time::Duration;
//! use oidc_bff::proxy::RemoteApi;
//! use oidc_bff::{TokenPolicy, UserTokenRequest};
//!
//! let api = RemoteApi::new("/api", "https://api.example.com/v1/".parse().unwrap())
//!     .token(TokenPolicy::UserOrClient)
//!     .user_token_request(UserTokenRequest::default().resource("https://api.example.com"))
//!     .client_token_request(Some("catalog.read".into()), None)
//!     .timeout(Duration::from_secs(10))
//!     .websockets(true);
//! assert!(api.validate().is_ok());
//! ```

use std::time::Duration;

use http::Method;
use oidc_bff_tokens::UserTokenRequest;
use oidc_bff_tokens::client_credentials::ClientCredentialsRequest;
use url::Url;

use crate::error::BffError;
use crate::proxy::methods::Methods;
use crate::proxy::path;
use crate::proxy::rules::Require;
use crate::proxy::websocket::WebSocketSession;
use crate::token_policy::{TokenPolicy, TokenRequests};

/// Which access token a proxied route sends upstream: the [`TokenPolicy`]
/// managed clients use as well.
#[deprecated(note = "use `oidc_bff::TokenPolicy`")]
pub type TokenRequirement = TokenPolicy;

/// A remote API mounted under a local path prefix; see [`Bff::proxy`](crate::Bff::proxy).
///
/// `RemoteApi::new("/api", "https://remote/v1/")` forwards `/api/users?x=1`
/// to `https://remote/v1/users?x=1` and `/api` to `https://remote/v1/`.
#[derive(Clone, Debug)]
#[must_use]
pub struct RemoteApi {
    pub(crate) local_prefix: String,
    pub(crate) upstream: Url,
    pub(crate) token: TokenPolicy,
    pub(crate) tokens: TokenRequests,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) websockets: bool,
    pub(crate) require: Require,
    pub(crate) methods: Methods,
    pub(crate) websocket_session: WebSocketSession,
}

impl RemoteApi {
    /// Mounts `upstream` (an `http` or `https` URL whose path is the base
    /// path) under `local_prefix` (e.g. `/api`; `/` mounts at the root).
    pub fn new(local_prefix: impl Into<String>, upstream: Url) -> Self {
        RemoteApi {
            local_prefix: local_prefix.into(),
            upstream,
            token: TokenPolicy::User,
            tokens: TokenRequests::default(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            websockets: false,
            require: Require::default(),
            methods: Methods::default(),
            websocket_session: WebSocketSession::default(),
        }
    }

    /// The token the route sends upstream (default [`TokenPolicy::User`]).
    pub fn token(mut self, policy: TokenPolicy) -> Self {
        self.token = policy;
        self
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

    /// Resource and scope of the user token (replaces [`scope`](Self::scope)
    /// and [`resource`](Self::resource) for user tokens; default: the
    /// sign-in token).
    pub fn user_token_request(mut self, r: UserTokenRequest) -> Self {
        self.tokens.user = r;
        self
    }

    /// Scope and resource of the client credentials token, for
    /// [`TokenPolicy::Client`] and [`TokenPolicy::UserOrClient`] (replaces
    /// [`scope`](Self::scope) and [`resource`](Self::resource) for client
    /// tokens; default: neither).
    pub fn client_token_request(mut self, scope: Option<String>, resource: Option<String>) -> Self {
        let mut request = ClientCredentialsRequest::default();
        if let Some(scope) = scope {
            request = request.scope(scope);
        }
        if let Some(resource) = resource {
            request = request.resource(resource);
        }
        self.tokens.client = request;
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

    /// The longest wait for the upstream (default 30 s): for its response
    /// headers once the request body has been sent, and the longest pause
    /// while the request body or the response body streams. A long upload or
    /// download that keeps moving is never cut off. Answered with 504 when
    /// exceeded before the response headers.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// How long connecting to the upstream may take (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Whether WebSocket handshakes are proxied (default `false`: the
    /// `Upgrade` header is dropped like any hop-by-hop header).
    pub fn websockets(mut self, on: bool) -> Self {
        self.websockets = on;
        self
    }

    /// What the route requires of the signed-in user's claims (default:
    /// nothing). With a rule, anonymous requests get 401 and users who do
    /// not meet it 403, before any token work; see [`Require`].
    pub fn require(mut self, rule: Require) -> Self {
        self.require = rule;
        self
    }

    /// Accepts only these methods (default: every method). Any other is
    /// answered `405 Method Not Allowed` with an `Allow` header, before any
    /// token work; see [`methods`](crate::proxy::methods).
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = Methods::only(methods);
        self
    }

    /// How often a proxied WebSocket re-checks that its session is alive
    /// (default 2 s). A session ended on this instance closes its sockets at
    /// once; one ended on another instance is seen at the next check. See
    /// [`websocket`](crate::proxy#websockets-that-end-with-the-session).
    pub fn websocket_session_check(mut self, every: Duration) -> Self {
        self.websocket_session.check_every = every;
        self
    }

    /// Closes a proxied WebSocket (code 4408) when the access token it was
    /// opened with has expired and cannot be renewed (default `false`: it
    /// stays open while the session lives).
    pub fn websocket_close_on_token_expiry(mut self, on: bool) -> Self {
        self.websocket_session.close_on_token_expiry = on;
        self
    }

    /// The local prefix as mounted: `""` for the root, else `/a[/b...]`.
    pub fn local_prefix(&self) -> String {
        path::normalise_prefix(&self.local_prefix)
    }

    /// The upstream URL.
    pub fn upstream(&self) -> &Url {
        &self.upstream
    }

    /// Checks the settings; [`Bff::proxy`](crate::Bff::proxy) panics on the
    /// errors reported here, so call it first when the settings come from a
    /// configuration file.
    pub fn validate(&self) -> Result<(), BffError> {
        let bad = |m: &str| {
            Err(BffError::Config(format!(
                "remote API {:?}: {m}",
                self.local_prefix
            )))
        };
        let prefix = self.local_prefix();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()+,;=@/".contains(c);
        if !prefix.chars().all(allowed) || path::check(&prefix).is_err() {
            return bad("the local prefix must be a plain path like /api");
        }
        let u = &self.upstream;
        if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
            return bad("the upstream must be an http(s) URL");
        }
        if !u.username().is_empty() || u.password().is_some() {
            return bad("the upstream URL must not hold credentials");
        }
        if u.query().is_some() || u.fragment().is_some() {
            return bad("the upstream URL must not have a query or fragment");
        }
        if self.methods.is_empty() {
            return bad("the method list must not be empty");
        }
        if self.websocket_session.check_every.is_zero() {
            return bad("the WebSocket session check interval must be positive");
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeouts must be positive");
        }
        if let Err((key, why)) = self.require.validate() {
            return bad(&format!("require.{key}: {why}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(prefix: &str, upstream: &str) -> RemoteApi {
        RemoteApi::new(prefix, upstream.parse().unwrap())
    }

    #[test]
    fn defaults() {
        let a = api("/api/", "http://127.0.0.1:7000/v1/");
        assert_eq!(a.token, TokenPolicy::User);
        assert_eq!(a.timeout, Duration::from_secs(30));
        assert_eq!(a.connect_timeout, Duration::from_secs(5));
        assert!(!a.websockets);
        assert_eq!(a.local_prefix(), "/api");
        assert!(a.validate().is_ok());
        assert!(api("/", "https://remote/").validate().is_ok());
    }

    #[test]
    fn refuses_bad_settings() {
        for (prefix, upstream) in [
            ("/{x}", "http://h/"),
            ("/a/*rest", "http://h/"),
            ("/a/../b", "http://h/"),
            ("/a//b", "http://h/"),
            ("/a%2fb", "http://h/"),
            ("/api", "ftp://h/"),
            ("/api", "http://user:pw@h/"),
            ("/api", "http://h/?q=1"),
            ("/api", "http://h/#f"),
        ] {
            assert!(
                api(prefix, upstream).validate().is_err(),
                "{prefix} {upstream}"
            );
        }
        assert!(
            api("/api", "http://h/")
                .timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn token_requirements_deserialize() {
        for (raw, t) in [
            ("none", TokenPolicy::None),
            ("user", TokenPolicy::User),
            ("client", TokenPolicy::Client),
            ("user-or-client", TokenPolicy::UserOrClient),
            ("user-or-none", TokenPolicy::UserOrNone),
        ] {
            let parsed: TokenPolicy = serde_json::from_str(&format!("\"{raw}\"")).unwrap();
            assert_eq!(parsed, t);
        }
        assert!(serde_json::from_str::<TokenPolicy>("\"User\"").is_err());
    }
}
