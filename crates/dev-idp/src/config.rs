//! Static configuration of a dev IdP: clients, the signed-in user, lifetimes
//! and policies, plus the [`DevIdpBuilder`] that assembles it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The JWS algorithm the IdP signs tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit RSA key (the default).
    #[default]
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl SigningAlg {
    /// The JOSE name of the algorithm (`"RS256"` or `"ES256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }

    pub(crate) fn jwt_alg(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlg::Rs256 => jsonwebtoken::Algorithm::RS256,
            SigningAlg::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// When the token endpoint issues refresh tokens for authorization-code grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshTokenPolicy {
    /// Always issue a refresh token.
    Always,
    /// Only when the granted scope contains `offline_access` (the default).
    #[default]
    OfflineAccessOnly,
    /// Never issue refresh tokens.
    Never,
}

/// A registered client.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client {
    pub(crate) secret: String,
    /// Public JWKs of a `private_key_jwt` client (see `client_auth.rs`).
    pub(crate) jwks: Vec<Value>,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) post_logout_redirect_uris: Vec<String>,
    pub(crate) backchannel_logout_uri: Option<String>,
}

/// Everything that does not change while the IdP runs.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Clients by id; entries with an empty secret do not count as registered.
    pub(crate) clients: BTreeMap<String, Client>,
    pub(crate) sub: String,
    pub(crate) claims: Map<String, Value>,
    pub(crate) access_token_lifetime: Duration,
    pub(crate) id_token_lifetime: Duration,
    pub(crate) refresh_token_rotation: bool,
    pub(crate) refresh_reuse_detection: bool,
    pub(crate) signing_alg: SigningAlg,
    pub(crate) refresh_policy: RefreshTokenPolicy,
    pub(crate) clock: Clock,
    /// Authorization requests only through PAR (RFC 9126); also announced
    /// in discovery.
    pub(crate) require_par: bool,
    /// How long a pushed request's `request_uri` is valid.
    pub(crate) par_lifetime: Duration,
}

/// The IdP's time source, in Unix seconds.
#[derive(Clone)]
pub(crate) struct Clock(pub(crate) std::sync::Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Builder for a [`RunningIdp`](crate::RunningIdp); obtained from [`crate::DevIdp::builder`].
///
/// Every setting is optional. Without any call the IdP knows one confidential
/// client `bff` / `secret` (accepting any loopback redirect URI) and signs in
/// the user `alice`.
#[must_use]
#[derive(Debug, Clone)]
pub struct DevIdpBuilder {
    pub(crate) config: Config,
    clients_customised: bool,
}

impl Default for DevIdpBuilder {
    fn default() -> Self {
        let mut clients = BTreeMap::new();
        clients.insert(
            "bff".to_owned(),
            Client {
                secret: "secret".into(),
                ..Client::default()
            },
        );
        let claims =
            json!({"name": "Alice Example", "email": "alice@example.com", "email_verified": true});
        Self {
            config: Config {
                clients,
                sub: "alice".into(),
                claims: object(claims),
                access_token_lifetime: Duration::from_secs(300),
                id_token_lifetime: Duration::from_secs(300),
                refresh_token_rotation: true,
                refresh_reuse_detection: true,
                signing_alg: SigningAlg::Rs256,
                refresh_policy: RefreshTokenPolicy::OfflineAccessOnly,
                clock: Clock(std::sync::Arc::new(crate::now)),
                require_par: false,
                par_lifetime: Duration::from_secs(60),
            },
            clients_customised: false,
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl DevIdpBuilder {
    /// Registers a confidential client (may be called several times). The
    /// first call retires the default `bff` / `secret` client; calling it
    /// again for an existing id replaces its secret. Only clients with a
    /// (non-empty) secret or [keys](Self::client_jwks) exist for the
    /// endpoints.
    pub fn client(mut self, client_id: &str, client_secret: &str) -> Self {
        self.retire_default_client();
        self.client_mut(client_id).secret = client_secret.to_owned();
        self
    }

    /// Registers a client that authenticates with `private_key_jwt` (RFC
    /// 7523): `jwks` is its public JWK Set (`{"keys": [...]}`) or one JWK.
    /// Like [`client`](Self::client), the first call retires the default
    /// client. A client may have both a secret and keys.
    pub fn client_jwks(mut self, client_id: &str, jwks: Value) -> Self {
        self.retire_default_client();
        let keys = match jwks {
            Value::Object(mut set) if set.contains_key("keys") => match set.remove("keys") {
                Some(Value::Array(keys)) => keys,
                _ => Vec::new(),
            },
            jwk @ Value::Object(_) => vec![jwk],
            _ => Vec::new(),
        };
        self.client_mut(client_id).jwks = keys;
        self
    }

    fn retire_default_client(&mut self) {
        if !self.clients_customised {
            // Retire the default `bff`/`secret` client; URIs registered for
            // any client id so far are kept.
            if let Some(default) = self.config.clients.get_mut("bff") {
                default.secret.clear();
            }
            self.clients_customised = true;
        }
    }

    /// Accept authorization requests only as pushed authorization requests
    /// (RFC 9126) and say so in discovery
    /// (`require_pushed_authorization_requests`; default off: both work).
    pub fn require_par(mut self, on: bool) -> Self {
        self.config.require_par = on;
        self
    }

    /// How long the `request_uri` of a pushed request is valid (default
    /// 60 s); each one can be used once.
    pub fn par_request_uri_lifetime(mut self, d: Duration) -> Self {
        self.config.par_lifetime = d;
        self
    }

    fn client_mut(&mut self, client_id: &str) -> &mut Client {
        self.config.clients.entry(client_id.to_owned()).or_default()
    }

    /// Registers a redirect URI for a client. A client without registered
    /// redirect URIs accepts any `http://127.0.0.1:*/…` or
    /// `http://localhost:*/…` URI; otherwise the match is exact.
    pub fn redirect_uri(mut self, client_id: &str, uri: &str) -> Self {
        self.client_mut(client_id)
            .redirect_uris
            .push(uri.to_owned());
        self
    }

    /// Registers a post-logout redirect URI for a client (same rules as
    /// [`redirect_uri`](Self::redirect_uri): exact match once any is registered,
    /// any loopback URI otherwise).
    pub fn post_logout_redirect_uri(mut self, client_id: &str, uri: &str) -> Self {
        self.client_mut(client_id)
            .post_logout_redirect_uris
            .push(uri.to_owned());
        self
    }

    /// Registers the client's OIDC back-channel logout URI: when a session the
    /// client took part in ends at `/endsession`, the IdP POSTs a logout token
    /// there.
    pub fn backchannel_logout_uri(mut self, client_id: &str, uri: &str) -> Self {
        self.client_mut(client_id).backchannel_logout_uri = Some(uri.to_owned());
        self
    }

    /// Sets the user who is signed in automatically at `/authorize`. `claims`
    /// (a JSON object) go into id tokens and the userinfo answer; a `sub`
    /// inside them is ignored.
    pub fn user(mut self, sub: &str, claims: Value) -> Self {
        self.config.sub = sub.to_owned();
        self.config.claims = object(claims);
        self.config.claims.remove("sub");
        self
    }

    /// The IdP's time source in Unix seconds (default: the system clock).
    /// Tests share one controllable clock between the IdP and the BFF, so
    /// that moving time forward expires tokens on both sides alike.
    pub fn clock(mut self, now: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.config.clock = Clock(std::sync::Arc::new(now));
        self
    }

    /// Lifetime of access tokens (default 300 s).
    pub fn access_token_lifetime(mut self, d: Duration) -> Self {
        self.config.access_token_lifetime = d;
        self
    }

    /// Lifetime of id tokens (default 300 s).
    pub fn id_token_lifetime(mut self, d: Duration) -> Self {
        self.config.id_token_lifetime = d;
        self
    }

    /// Refresh token rotation (default on): each refresh grant returns a new
    /// refresh token and the presented one becomes invalid.
    pub fn refresh_token_rotation(mut self, on: bool) -> Self {
        self.config.refresh_token_rotation = on;
        self
    }

    /// Refresh token reuse detection (default on): presenting an already used
    /// refresh token revokes the whole grant family.
    pub fn refresh_reuse_detection(mut self, on: bool) -> Self {
        self.config.refresh_reuse_detection = on;
        self
    }

    /// The signing algorithm (default RS256).
    pub fn signing_alg(mut self, alg: SigningAlg) -> Self {
        self.config.signing_alg = alg;
        self
    }

    /// When refresh tokens are issued (default: only for `offline_access`).
    pub fn issue_refresh_tokens(mut self, when: RefreshTokenPolicy) -> Self {
        self.config.refresh_policy = when;
        self
    }
}

impl Config {
    /// The registered client with this id, if any.
    pub(crate) fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients
            .get(client_id)
            .filter(|c| !c.secret.is_empty() || !c.jwks.is_empty())
    }

    /// Whether `uri` may be used as a redirect target given the registered
    /// list: exact match, or any loopback `http` or `https` URI when nothing
    /// is registered.
    pub(crate) fn uri_allowed(registered: &[String], uri: &str) -> bool {
        if !registered.is_empty() {
            return registered.iter().any(|r| r == uri);
        }
        match url::Url::parse(uri) {
            Ok(u) => {
                // https too: a gateway serving TLS itself on loopback.
                matches!(u.scheme(), "http" | "https")
                    && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none()
            }
            Err(_) => false,
        }
    }
}
