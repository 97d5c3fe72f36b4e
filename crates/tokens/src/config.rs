//! Configuration of the token engine.
//!
//! Only the provider's authority, the client id and the client secret are
//! required; every endpoint comes from the provider's discovery document.
//!
//! ```
//! use std::time::Duration;
//! use oidc_bff_tokens::OidcConfig;
//!
//! let config = OidcConfig::builder("https://login.example.com", "bff")
//!     .client_secret("secret")
//!     .scopes(["openid", "profile", "offline_access"])
//!     .refresh_margin(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.client_id, "bff");
//! ```

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::client_auth::{ClientAssertionAlg, ClientAuthMethod, ClientKey};
use crate::error::TokenError;
use crate::secret::ClientSecret;

/// Settings of the token engine. Build with [`OidcConfig::builder`], or
/// deserialize (all fields but `authority` and `client_id` have defaults;
/// durations are given in seconds).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OidcConfig {
    /// The provider's issuer URL; discovery is read from
    /// `{authority}/.well-known/openid-configuration`.
    pub authority: Url,
    /// Our client id at the provider.
    pub client_id: String,
    /// Our client secret (confidential client). `None` (the default) for a
    /// public client.
    #[serde(default)]
    pub client_secret: Option<ClientSecret>,
    /// Scopes requested at sign-in (default `openid profile offline_access`).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Renew an access token when it expires within this margin — but never
    /// in the first half of its life: the renewal point is
    /// `expires_at - min(refresh_margin, lifetime / 2)`, so short-lived
    /// tokens (5 s, 60 s) cost one grant each, not one per request. A token
    /// past that point is still served at once while the renewal runs
    /// behind it. Default 60 s.
    #[serde(default = "default_refresh_margin", with = "secs")]
    pub refresh_margin: Duration,
    /// Lifetime assumed for an access token whose response lacks `expires_in`
    /// (default 300 s).
    #[serde(default = "default_token_lifetime", with = "secs")]
    pub default_token_lifetime: Duration,
    /// Clock skew tolerated when validating id_tokens (default 60 s).
    #[serde(default = "default_leeway", with = "secs")]
    pub clock_leeway: Duration,
    /// How long a fetched discovery document is used before it is fetched
    /// again (default 1 h).
    #[serde(default = "default_discovery_refresh", with = "secs")]
    pub discovery_refresh: Duration,
    /// The least time between two JWKS fetches caused by an unknown `kid`
    /// (default 30 s).
    #[serde(default = "default_jwks_refetch", with = "secs")]
    pub jwks_min_refetch: Duration,
    /// Connect timeout of every call to the provider (default 5 s).
    #[serde(default = "default_connect_timeout", with = "secs")]
    pub connect_timeout: Duration,
    /// Total timeout of every call to the provider (default 15 s).
    #[serde(default = "default_request_timeout", with = "secs")]
    pub request_timeout: Duration,
    /// Initial time-to-live of a session's refresh lease (renewed while the
    /// refresh runs; default 5 s); bounds how long a crashed instance blocks
    /// others.
    #[serde(default = "default_refresh_lease", with = "secs")]
    pub refresh_lease: Duration,
    /// Absolute lifetime of a session (default 8 h).
    #[serde(default = "default_session_lifetime", with = "secs")]
    pub session_lifetime: Duration,
    /// Idle (sliding) lifetime: a session unused for this long ends, even
    /// before its absolute lifetime. `None` (the default) disables it.
    #[serde(default, with = "opt_secs")]
    pub idle_timeout: Option<Duration>,
    /// How long a started sign-in may take before its callback is refused
    /// (default 10 min).
    #[serde(default = "default_login_timeout", with = "secs")]
    pub login_timeout: Duration,
    /// Call the userinfo endpoint at sign-in and merge its claims (default off).
    #[serde(default)]
    pub load_userinfo: bool,
    /// Revoke the refresh token at the provider when the user signs out
    /// (default on).
    #[serde(default = "yes")]
    pub revoke_on_logout: bool,
    /// Back-channel logout ends every session of the token's `sub`, not only
    /// the one with its `sid` (default off). A token without `sid` always
    /// ends all of the subject's sessions.
    #[serde(default)]
    pub backchannel_logout_all_sessions: bool,
    /// A refreshed id_token whose `auth_time` or `nonce` differs from the
    /// original's ends the session (default off: a logged warning, the
    /// original values are kept). `iss`, `sub`, `aud` and `azp` are always
    /// compared strictly.
    #[serde(default)]
    pub strict_refresh_claims: bool,
    /// This client is public on purpose (no secret, no key): without it, a
    /// configuration without a client secret is refused.
    #[serde(default)]
    pub public_client: bool,
    /// How the client authenticates at the provider (see
    /// [`crate::client_auth`]). `None` (the default) chooses: with a
    /// [`client_key`](Self::client_key), `private_key_jwt`; with a secret,
    /// `client_secret_basic`, or `client_secret_post` when the discovery
    /// document lists only that one.
    #[serde(default)]
    pub client_auth: Option<ClientAuthMethod>,
    /// The private key of `private_key_jwt` (default: none). Deserialized
    /// from the path of a PEM file, which is read and parsed at once.
    #[serde(default)]
    pub client_key: Option<ClientKey>,
    /// The `kid` of client assertions (default: the key's RFC 7638
    /// thumbprint).
    #[serde(default)]
    pub client_key_id: Option<String>,
    /// The algorithm of client assertions (default: RS256 for RSA keys,
    /// ES256 for EC keys; PS256 may be chosen for RSA keys).
    #[serde(default)]
    pub client_key_alg: Option<ClientAssertionAlg>,
    /// Push every authorization request to the provider's pushed
    /// authorization request endpoint (RFC 9126) and send the browser with
    /// its `request_uri` only (default off; always on when the discovery
    /// document has `require_pushed_authorization_requests: true`).
    #[serde(default)]
    pub par: bool,
    /// Endpoints given explicitly; they win over the discovery documents.
    #[serde(default)]
    pub endpoints: EndpointOverrides,
    /// Sender-constrained tokens (DPoP, RFC 9449; default off): every token
    /// is bound to a key this engine holds (one per session, one for the
    /// client credentials tokens) and every use carries a fresh proof. See
    /// [`crate::dpop`].
    #[serde(default)]
    pub dpop: bool,
    /// The DPoP proof algorithm (default ES256).
    #[serde(default)]
    pub dpop_alg: crate::dpop::DpopAlg,
    /// With [`dpop`](Self::dpop) on, accept a `Bearer` token from a provider
    /// that does not support DPoP (default off: such an answer is refused
    /// with [`TokenError::DpopDowngrade`]). The tokens are then sent as
    /// bearer tokens.
    #[serde(default)]
    pub allow_bearer_downgrade: bool,
}

/// Provider endpoints named in the configuration instead of (or besides)
/// discovery: each one set here wins over the OpenID discovery document and
/// the OAuth 2.0 Authorization Server Metadata (RFC 8414). Each must be
/// `https` (`http` only for loopback).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EndpointOverrides {
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: Option<Url>,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: Option<Url>,
    /// The provider's signing keys.
    pub jwks_uri: Option<Url>,
    /// The userinfo endpoint.
    pub userinfo_endpoint: Option<Url>,
    /// The token revocation endpoint (RFC 7009).
    pub revocation_endpoint: Option<Url>,
    /// The token introspection endpoint (RFC 7662).
    pub introspection_endpoint: Option<Url>,
    /// The RP-initiated logout endpoint.
    pub end_session_endpoint: Option<Url>,
    /// The pushed authorization request endpoint (RFC 9126).
    pub pushed_authorization_request_endpoint: Option<Url>,
}

impl EndpointOverrides {
    /// The names accepted by [`OidcConfigBuilder::endpoint`].
    pub const NAMES: [&'static str; 8] = [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "userinfo_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
        "pushed_authorization_request_endpoint",
    ];

    /// The slot of endpoint `name`.
    fn slot(&mut self, name: &str) -> Option<&mut Option<Url>> {
        Some(match name {
            "authorization_endpoint" => &mut self.authorization_endpoint,
            "token_endpoint" => &mut self.token_endpoint,
            "jwks_uri" => &mut self.jwks_uri,
            "userinfo_endpoint" => &mut self.userinfo_endpoint,
            "revocation_endpoint" => &mut self.revocation_endpoint,
            "introspection_endpoint" => &mut self.introspection_endpoint,
            "end_session_endpoint" => &mut self.end_session_endpoint,
            "pushed_authorization_request_endpoint" => {
                &mut self.pushed_authorization_request_endpoint
            }
            _ => return None,
        })
    }

    /// The endpoints set, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Url)> {
        [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("jwks_uri", &self.jwks_uri),
            ("userinfo_endpoint", &self.userinfo_endpoint),
            ("revocation_endpoint", &self.revocation_endpoint),
            ("introspection_endpoint", &self.introspection_endpoint),
            ("end_session_endpoint", &self.end_session_endpoint),
            (
                "pushed_authorization_request_endpoint",
                &self.pushed_authorization_request_endpoint,
            ),
        ]
        .into_iter()
        .filter_map(|(name, url)| url.as_ref().map(|url| (name, url)))
    }
}

/// Whether `url` is acceptable for talking to the provider: `https`, or
/// `http` to a loopback host (development).
pub fn is_secure_endpoint(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => is_loopback(url),
        _ => false,
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "offline_access"]
        .into_iter()
        .map(String::from)
        .collect()
}
fn default_refresh_margin() -> Duration {
    Duration::from_secs(60)
}
fn default_token_lifetime() -> Duration {
    Duration::from_secs(300)
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_discovery_refresh() -> Duration {
    Duration::from_secs(3600)
}
fn default_jwks_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_refresh_lease() -> Duration {
    Duration::from_secs(5)
}
fn default_session_lifetime() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_login_timeout() -> Duration {
    Duration::from_secs(600)
}
fn yes() -> bool {
    true
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|s| s.map(Duration::from_secs))
    }
}

impl OidcConfig {
    /// Starts a builder with the two required settings.
    pub fn builder(authority: impl AsRef<str>, client_id: impl Into<String>) -> OidcConfigBuilder {
        OidcConfigBuilder {
            authority: authority.as_ref().to_owned(),
            config: OidcConfig {
                authority: Url::parse("http://unset.invalid").unwrap_or_else(|_| unreachable!()),
                client_id: client_id.into(),
                client_secret: None,
                scopes: default_scopes(),
                refresh_margin: default_refresh_margin(),
                default_token_lifetime: default_token_lifetime(),
                clock_leeway: default_leeway(),
                discovery_refresh: default_discovery_refresh(),
                jwks_min_refetch: default_jwks_refetch(),
                connect_timeout: default_connect_timeout(),
                request_timeout: default_request_timeout(),
                refresh_lease: default_refresh_lease(),
                session_lifetime: default_session_lifetime(),
                idle_timeout: None,
                login_timeout: default_login_timeout(),
                load_userinfo: false,
                revoke_on_logout: true,
                backchannel_logout_all_sessions: false,
                strict_refresh_claims: false,
                public_client: false,
                client_auth: None,
                client_key: None,
                client_key_id: None,
                client_key_alg: None,
                par: false,
                endpoints: EndpointOverrides::default(),
                dpop: false,
                dpop_alg: crate::dpop::DpopAlg::Es256,
                allow_bearer_downgrade: false,
            },
            endpoints: Vec::new(),
            client_key: None,
        }
    }

    /// Checks the settings for consistency.
    pub fn validate(&self) -> Result<(), TokenError> {
        match self.authority.scheme() {
            "https" => {}
            "http" if is_loopback(&self.authority) => {}
            _ => {
                return Err(TokenError::Config(
                    "authority must be an https URL (http is accepted for loopback only)".into(),
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(TokenError::Config("client_id must not be empty".into()));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(TokenError::Config("scopes must include \"openid\"".into()));
        }
        if self.refresh_lease.as_millis() < 300 {
            return Err(TokenError::Config(
                "refresh_lease must be at least 300 ms".into(),
            ));
        }
        if self.idle_timeout.is_some_and(|idle| idle.as_secs() < 4) {
            return Err(TokenError::Config(
                "idle_timeout must be at least 4 seconds".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(TokenError::Config(
                "timeouts must be greater than zero".into(),
            ));
        }
        if self.allow_bearer_downgrade && !self.dpop {
            return Err(TokenError::Config(
                "allow_bearer_downgrade has no effect without dpop".into(),
            ));
        }
        for (name, url) in self.endpoints.iter() {
            if !is_secure_endpoint(url) {
                return Err(TokenError::Config(format!(
                    "endpoints.{name} must be an https URL (http is accepted for loopback only)"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a client that can not authenticate (no secret) unless it is
    /// [public on purpose](Self::public_client). Checked when the engine is
    /// built.
    ///
    /// Also checks the [client authentication](crate::client_auth) settings:
    /// `private_key_jwt` needs a [`client_key`](Self::client_key), the
    /// secret methods need a secret, a `client_key_id` or `client_key_alg`
    /// needs a key (that fits the algorithm).
    pub fn check_client_authentication(&self) -> Result<(), TokenError> {
        if let Some((key, why)) = self.client_authentication_problems().into_iter().next() {
            return Err(TokenError::Config(format!("{key}: {why}")));
        }
        if self.client_secret.is_none() && self.client_key.is_none() && !self.public_client {
            return Err(TokenError::Config(
                "no client_secret: give one, or set public_client = true if this client is public on purpose".into(),
            ));
        }
        Ok(())
    }

    /// The problems of the client authentication settings, each with the
    /// key it is about (`client_key`, `client_secret`, ...); empty when
    /// they fit together. Used by [`check_client_authentication`](Self::check_client_authentication)
    /// and by configuration checkers that report every problem at once.
    pub fn client_authentication_problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        match self.client_auth {
            Some(ClientAuthMethod::PrivateKeyJwt) if self.client_key.is_none() => problems.push((
                "client_key",
                "client_auth = \"private_key_jwt\" needs a client_key (a PEM private key)".into(),
            )),
            Some(method) if method.needs_secret() && self.client_secret.is_none() => problems
                .push((
                    "client_secret",
                    format!("client_auth = \"{method}\" needs a client_secret"),
                )),
            Some(method) if method.needs_secret() && self.client_key.is_some() => problems.push((
                "client_key",
                format!(
                    "a client_key is only used with client_auth = \"private_key_jwt\", not \"{method}\""
                ),
            )),
            _ => {}
        }
        if self.client_key.is_none() {
            if self.client_key_id.is_some() {
                problems.push(("client_key_id", "needs a client_key".into()));
            }
            if self.client_key_alg.is_some() {
                problems.push(("client_key_alg", "needs a client_key".into()));
            }
        }
        if let (Some(key), Some(alg)) = (&self.client_key, self.client_key_alg)
            && !key.supports(alg)
        {
            problems.push((
                "client_key_alg",
                format!("{alg} does not fit the {} client key", key.key_type()),
            ));
        }
        if self.client_key_id.as_deref().is_some_and(|kid| {
            kid.is_empty() || kid.len() > 256 || kid.chars().any(char::is_control)
        }) {
            problems.push((
                "client_key_id",
                "must be 1 to 256 characters, no control characters".into(),
            ));
        }
        if self.public_client && (self.client_key.is_some() || self.client_auth.is_some()) {
            problems.push((
                "public_client",
                "a public client has no client_auth and no client_key".into(),
            ));
        }
        problems
    }

    /// The client authentication method in use when the provider's
    /// metadata says `prefers_basic` about `client_secret_basic` (see
    /// [`crate::client_auth`]); `None` for a public client.
    pub fn effective_client_auth(&self, prefers_basic: bool) -> Option<ClientAuthMethod> {
        match self.client_auth {
            Some(method) => Some(method),
            None if self.client_key.is_some() => Some(ClientAuthMethod::PrivateKeyJwt),
            None if self.client_secret.is_some() => Some(if prefers_basic {
                ClientAuthMethod::ClientSecretBasic
            } else {
                ClientAuthMethod::ClientSecretPost
            }),
            None => None,
        }
    }

    /// The URL of the discovery document.
    pub fn discovery_url(&self) -> Url {
        let mut base = self.authority.as_str().trim_end_matches('/').to_owned();
        base.push_str("/.well-known/openid-configuration");
        Url::parse(&base).unwrap_or_else(|_| self.authority.clone())
    }

    /// The issuer the provider must report: the authority without a trailing slash.
    pub fn expected_issuer(&self) -> &str {
        self.authority.as_str().trim_end_matches('/')
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Builder of [`OidcConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct OidcConfigBuilder {
    authority: String,
    config: OidcConfig,
    endpoints: Vec<(String, String)>,
    /// A key given as a file or PEM bytes, parsed by `build`.
    client_key: Option<KeySource>,
}

#[derive(Clone)]
enum KeySource {
    File(std::path::PathBuf),
    Pem(Vec<u8>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Pem(_) => f.write_str("Pem([redacted])"),
        }
    }
}

impl OidcConfigBuilder {
    /// The client secret (confidential client; default: none, a public
    /// client).
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.config.client_secret = Some(ClientSecret::new(secret));
        self
    }

    /// Scopes requested at sign-in (default `openid profile offline_access`;
    /// must include `openid`; `offline_access` gets a refresh token from
    /// most providers).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Renew access tokens that expire within this margin (default 60 s),
    /// but never in the first half of a token's life.
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.config.refresh_margin = margin;
        self
    }

    /// Lifetime assumed when a token response lacks `expires_in` (default 300 s).
    pub fn default_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.default_token_lifetime = lifetime;
        self
    }

    /// Clock skew tolerated when validating id_tokens (default 60 s).
    pub fn clock_leeway(mut self, leeway: Duration) -> Self {
        self.config.clock_leeway = leeway;
        self
    }

    /// Refresh interval of the cached discovery document (default 1 h).
    pub fn discovery_refresh(mut self, interval: Duration) -> Self {
        self.config.discovery_refresh = interval;
        self
    }

    /// Least time between JWKS refetches caused by unknown key ids (default 30 s).
    pub fn jwks_min_refetch(mut self, interval: Duration) -> Self {
        self.config.jwks_min_refetch = interval;
        self
    }

    /// Connect and total timeouts of every call to the provider (defaults 5 s and 15 s).
    pub fn timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.config.connect_timeout = connect;
        self.config.request_timeout = total;
        self
    }

    /// Initial time-to-live of the refresh lease (default 5 s); it is renewed
    /// while a refresh runs, so it only bounds recovery after a crash.
    pub fn refresh_lease(mut self, ttl: Duration) -> Self {
        self.config.refresh_lease = ttl;
        self
    }

    /// Absolute session lifetime (default 8 h).
    pub fn session_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.session_lifetime = lifetime;
        self
    }

    /// End sessions unused for `idle` (sliding lifetime; default: none).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.config.idle_timeout = Some(idle);
        self
    }

    /// Call the userinfo endpoint at sign-in and merge its claims (default off).
    pub fn load_userinfo(mut self, on: bool) -> Self {
        self.config.load_userinfo = on;
        self
    }

    /// Revoke the refresh token when the user signs out (default on).
    pub fn revoke_on_logout(mut self, on: bool) -> Self {
        self.config.revoke_on_logout = on;
        self
    }

    /// Make back-channel logout end every session of the user, not only the
    /// provider session named by the logout token's `sid` (default off).
    pub fn backchannel_logout_all_sessions(mut self, on: bool) -> Self {
        self.config.backchannel_logout_all_sessions = on;
        self
    }

    /// Ends the session when a refreshed id_token's `auth_time` or `nonce`
    /// differs from the original's (default off: a logged warning).
    pub fn strict_refresh_claims(mut self, on: bool) -> Self {
        self.config.strict_refresh_claims = on;
        self
    }

    /// Declares the client public on purpose: no client secret (default
    /// off, and a client without a secret is refused).
    pub fn public_client(mut self, on: bool) -> Self {
        self.config.public_client = on;
        self
    }

    /// How the client authenticates at the provider (default: chosen, see
    /// [`OidcConfig::client_auth`]).
    pub fn client_auth(mut self, method: crate::client_auth::ClientAuthMethod) -> Self {
        self.config.client_auth = Some(method);
        self
    }

    /// The PEM file of the `private_key_jwt` key (default: none); read and
    /// parsed by [`build`](Self::build), whose error names the file.
    pub fn client_key_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.client_key = Some(KeySource::File(path.into()));
        self
    }

    /// The `private_key_jwt` key as PEM bytes (default: none); parsed by
    /// [`build`](Self::build).
    pub fn client_key_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.client_key = Some(KeySource::Pem(pem.into()));
        self
    }

    /// An already parsed `private_key_jwt` key (default: none).
    pub fn client_key(mut self, key: ClientKey) -> Self {
        self.client_key = None;
        self.config.client_key = Some(key);
        self
    }

    /// The `kid` of client assertions (default: the key's RFC 7638 thumbprint).
    pub fn client_key_id(mut self, kid: impl Into<String>) -> Self {
        self.config.client_key_id = Some(kid.into());
        self
    }

    /// The algorithm of client assertions (default: RS256 for RSA keys,
    /// ES256 for EC keys).
    pub fn client_key_alg(mut self, alg: ClientAssertionAlg) -> Self {
        self.config.client_key_alg = Some(alg);
        self
    }

    /// Pushed authorization requests (RFC 9126; default off, and on
    /// whatever this says when the provider requires them).
    pub fn par(mut self, on: bool) -> Self {
        self.config.par = on;
        self
    }

    /// Binds tokens to a key with DPoP (RFC 9449; default off). See
    /// [`crate::dpop`].
    pub fn dpop(mut self, on: bool) -> Self {
        self.config.dpop = on;
        self
    }

    /// The DPoP proof algorithm (default ES256).
    pub fn dpop_alg(mut self, alg: crate::dpop::DpopAlg) -> Self {
        self.config.dpop_alg = alg;
        self
    }

    /// Accepts `Bearer` tokens from a provider without DPoP support when
    /// DPoP is on (default off: refused as a downgrade).
    pub fn allow_bearer_downgrade(mut self, on: bool) -> Self {
        self.config.allow_bearer_downgrade = on;
        self
    }

    /// Names a provider endpoint explicitly (one of
    /// [`EndpointOverrides::NAMES`], e.g. `"revocation_endpoint"`); it wins
    /// over discovery. Checked by [`build`](Self::build).
    pub fn endpoint(mut self, name: impl Into<String>, url: impl Into<String>) -> Self {
        self.endpoints.push((name.into(), url.into()));
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<OidcConfig, TokenError> {
        self.config.authority = Url::parse(&self.authority)
            .map_err(|e| TokenError::Config(format!("authority is not a valid URL: {e}")))?;
        for (name, raw) in std::mem::take(&mut self.endpoints) {
            let url = Url::parse(&raw).map_err(|e| {
                TokenError::Config(format!("endpoint {name} is not a valid URL: {e}"))
            })?;
            let slot = self.config.endpoints.slot(&name).ok_or_else(|| {
                TokenError::Config(format!(
                    "unknown endpoint {name:?}; expected one of {:?}",
                    EndpointOverrides::NAMES
                ))
            })?;
            *slot = Some(url);
        }
        match self.client_key.take() {
            Some(KeySource::File(path)) => {
                self.config.client_key = Some(ClientKey::from_pem_file(path)?);
            }
            Some(KeySource::Pem(pem)) => self.config.client_key = Some(ClientKey::from_pem(&pem)?),
            None => {}
        }
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_https_except_loopback() {
        assert!(
            OidcConfig::builder("http://idp.example.com", "c")
                .build()
                .is_err()
        );
        assert!(
            OidcConfig::builder("http://127.0.0.1:9000", "c")
                .build()
                .is_ok()
        );
        assert!(
            OidcConfig::builder("https://idp.example.com/tenant/", "c")
                .build()
                .is_ok()
        );
    }

    #[test]
    fn discovery_url_keeps_path() {
        let c = OidcConfig::builder("https://idp.example.com/tenant/", "c")
            .build()
            .unwrap();
        assert_eq!(
            c.discovery_url().as_str(),
            "https://idp.example.com/tenant/.well-known/openid-configuration"
        );
        assert_eq!(c.expected_issuer(), "https://idp.example.com/tenant");
    }

    #[test]
    fn explicit_endpoints_must_be_secure_and_known() {
        let ok = OidcConfig::builder("https://idp.example.com", "c")
            .endpoint(
                "revocation_endpoint",
                "https://idp.example.com/oauth/revoke",
            )
            .build()
            .unwrap();
        assert_eq!(
            ok.endpoints.revocation_endpoint.unwrap().as_str(),
            "https://idp.example.com/oauth/revoke"
        );
        for (name, url) in [
            ("revocation_endpoint", "http://idp.example.com/revoke"),
            ("jwks_uri", "ftp://idp.example.com/jwks"),
            ("nonsense_endpoint", "https://idp.example.com/x"),
            ("token_endpoint", "not a url"),
        ] {
            assert!(
                OidcConfig::builder("https://idp.example.com", "c")
                    .endpoint(name, url)
                    .build()
                    .is_err(),
                "{name} = {url}"
            );
        }
    }

    #[test]
    fn a_client_without_a_secret_must_be_public_on_purpose() {
        let config = OidcConfig::builder("https://idp.example.com", "c")
            .build()
            .unwrap();
        assert!(config.check_client_authentication().is_err());
        let public = OidcConfig::builder("https://idp.example.com", "c")
            .public_client(true)
            .build()
            .unwrap();
        assert!(public.check_client_authentication().is_ok());
        let confidential = OidcConfig::builder("https://idp.example.com", "c")
            .client_secret("s")
            .build()
            .unwrap();
        assert!(confidential.check_client_authentication().is_ok());
    }

    #[test]
    fn requires_openid_scope() {
        let err = OidcConfig::builder("https://idp.example.com", "c")
            .scopes(["profile"])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("openid"));
    }

    #[test]
    fn deserializes_with_defaults() {
        let c: OidcConfig = serde_json::from_value(serde_json::json!({
            "authority": "https://idp.example.com",
            "client_id": "bff",
            "client_secret": "s",
            "refresh_margin": 30
        }))
        .unwrap();
        assert_eq!(c.refresh_margin, Duration::from_secs(30));
        assert_eq!(c.scopes, default_scopes());
        assert!(!format!("{c:?}").contains("\"s\""));
    }
}
