//! The one error type of the token engine.
//!
//! Every failure maps onto one of three outcomes for the browser's request,
//! which [`TokenError::kind`] names:
//!
//! * [`ErrorKind::Unauthorized`] — no current, valid token can be had (no
//!   session, no refresh token, the provider rejected the grant, a token failed
//!   validation). The caller should answer 401.
//! * [`ErrorKind::Unavailable`] — a transient failure (provider timeout or 5xx,
//!   store unreachable) while no usable token is at hand. The caller should
//!   answer 503 with `Retry-After`; the session is kept.
//! * [`ErrorKind::Invalid`] — bad input from the browser or the provider during
//!   sign-in (bad `state`, bad `id_token`, ...). The caller should answer 400.
//!
//! Messages never contain a token, code, secret or session id.

use std::time::Duration;

/// What an error means for the request that hit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No current, valid token can be had: answer 401.
    Unauthorized,
    /// A transient failure: answer 503 with `Retry-After`.
    Unavailable,
    /// Invalid input (a bad callback, a bad provider response at sign-in): answer 400.
    Invalid,
    /// Misconfiguration of the BFF itself.
    Config,
}

/// Errors of the token engine.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// There is no signed-in user (no session, or it has ended).
    #[error("not signed in")]
    NotAuthenticated,

    /// The access token has expired and there is no refresh token to renew it.
    #[error("the access token has expired and no refresh token is available")]
    NoRefreshToken,

    /// The provider rejected the refresh token (`invalid_grant` and the like),
    /// or the id_token that came with a renewal failed validation
    /// (`invalid_id_token`); the session has been ended.
    #[error("the provider rejected the refresh token ({error})")]
    RefreshRejected {
        /// The OAuth error code, e.g. [`OAuthErrorCode::InvalidGrant`].
        error: OAuthErrorCode,
    },

    /// The provider answered a token request with an OAuth error.
    ///
    /// The message names the error code only: the provider's free text stays
    /// in `description` (and in `Debug`), out of response bodies.
    #[error("the provider returned an error: {error}")]
    Provider {
        /// The OAuth error code (an unknown one is kept, at most 64
        /// characters, as [`OAuthErrorCode::Extension`]).
        error: OAuthErrorCode,
        /// The provider's `error_description`, if any (at most 256
        /// characters; never contains secrets we sent).
        description: Option<String>,
    },

    /// The provider answered with a 4xx status and no OAuth error body (a
    /// proxy's or firewall's page, for example): it says nothing about the
    /// grant itself.
    #[error("the provider answered HTTP {status} without an OAuth error")]
    UnexpectedStatus {
        /// The HTTP status code.
        status: u16,
    },

    /// The provider could not be reached, timed out or answered 5xx.
    #[error("the provider is unavailable: {0}")]
    ProviderUnavailable(String),

    /// The provider's answer could not be understood.
    #[error("invalid response from the provider: {0}")]
    InvalidResponse(String),

    /// An id_token or logout token failed validation.
    #[error("invalid id_token: {0}")]
    InvalidIdToken(ValidationError),

    /// The discovery document is unusable (wrong issuer, missing endpoint, ...).
    #[error("discovery failed: {0}")]
    Discovery(String),

    /// A sign-in callback was invalid (state, iss, missing code, provider error).
    #[error("invalid sign-in callback: {0}")]
    InvalidCallback(String),

    /// The session store failed.
    #[error("session store error: {0}")]
    Store(#[from] crate::store::StoreError),

    /// The BFF is misconfigured.
    #[error("configuration error: {0}")]
    Config(String),

    /// DPoP was asked for, and the provider answered with a `Bearer` token
    /// (a downgrade, refused unless
    /// [`allow_bearer_downgrade`](crate::OidcConfig::allow_bearer_downgrade)
    /// is set for a provider without DPoP support).
    #[error("the provider answered a Bearer token where a DPoP-bound one was asked for")]
    DpopDowngrade,
}

impl TokenError {
    /// What this error means for the request that hit it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TokenError::NotAuthenticated
            | TokenError::NoRefreshToken
            | TokenError::RefreshRejected { .. }
            | TokenError::Provider { .. }
            | TokenError::UnexpectedStatus { .. } => ErrorKind::Unauthorized,
            TokenError::ProviderUnavailable(_) | TokenError::Store(_) => ErrorKind::Unavailable,
            TokenError::Discovery(_) => ErrorKind::Unavailable,
            TokenError::InvalidResponse(_)
            | TokenError::InvalidIdToken(_)
            | TokenError::InvalidCallback(_)
            | TokenError::DpopDowngrade => ErrorKind::Invalid,
            TokenError::Config(_) => ErrorKind::Config,
        }
    }

    /// `true` when the caller should answer 401.
    pub fn is_unauthorized(&self) -> bool {
        self.kind() == ErrorKind::Unauthorized
    }

    /// `true` for transient failures worth retrying later.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// A suggested `Retry-After` for transient failures.
    pub fn retry_after(&self) -> Option<Duration> {
        self.is_transient().then(|| Duration::from_secs(5))
    }

    /// Builds the error for a transport failure of an outgoing call.
    pub(crate) fn from_transport(err: &reqwest::Error) -> Self {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "connection failed"
        } else if err.is_decode() || err.is_body() {
            "response body unreadable"
        } else {
            "request failed"
        };
        // The URL is deliberately left out: it may carry query secrets.
        TokenError::ProviderUnavailable(what.to_owned())
    }
}

/// An OAuth 2.0 error code (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8707 §2),
/// parsed once so that decisions match on variants, never on strings.
///
/// A code this crate does not know is kept as [`OAuthErrorCode::Extension`].
///
/// ```
/// use oidc_bff_tokens::error::OAuthErrorCode;
///
/// let code: OAuthErrorCode = "invalid_grant".parse().unwrap();
/// assert_eq!(code, OAuthErrorCode::InvalidGrant);
/// assert!(code.is_dead_grant());
/// assert_eq!(
///     "slow_down".parse::<OAuthErrorCode>().unwrap(),
///     OAuthErrorCode::Extension("slow_down".into())
/// );
/// assert_eq!(OAuthErrorCode::InvalidScope.as_str(), "invalid_scope");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`: the request is malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed.
    InvalidClient,
    /// `invalid_grant`: the grant (code, refresh token) is invalid, expired,
    /// revoked or was issued to another client.
    InvalidGrant,
    /// `unauthorized_client`: this client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`: the scope is invalid or exceeds the grant.
    InvalidScope,
    /// `invalid_target`: the resource is invalid (RFC 8707).
    InvalidTarget,
    /// `invalid_token`: the token presented is invalid (RFC 6750).
    InvalidToken,
    /// Any other code, as the provider sent it (at most 64 characters).
    Extension(String),
}

impl OAuthErrorCode {
    /// The code as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::InvalidTarget => "invalid_target",
            OAuthErrorCode::InvalidToken => "invalid_token",
            OAuthErrorCode::Extension(code) => code,
        }
    }

    /// Whether a refresh token answered with this code will never work
    /// again (the session must end). An answer without an OAuth error body
    /// is never one: it may come from a proxy in front of the provider.
    pub fn is_dead_grant(&self) -> bool {
        matches!(
            self,
            OAuthErrorCode::InvalidGrant
                | OAuthErrorCode::InvalidToken
                | OAuthErrorCode::UnauthorizedClient
        )
    }
}

impl std::str::FromStr for OAuthErrorCode {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "invalid_request" => OAuthErrorCode::InvalidRequest,
            "invalid_client" => OAuthErrorCode::InvalidClient,
            "invalid_grant" => OAuthErrorCode::InvalidGrant,
            "unauthorized_client" => OAuthErrorCode::UnauthorizedClient,
            "unsupported_grant_type" => OAuthErrorCode::UnsupportedGrantType,
            "invalid_scope" => OAuthErrorCode::InvalidScope,
            "invalid_target" => OAuthErrorCode::InvalidTarget,
            "invalid_token" => OAuthErrorCode::InvalidToken,
            other => OAuthErrorCode::Extension(other.chars().take(64).collect()),
        })
    }
}

impl From<&str> for OAuthErrorCode {
    fn from(s: &str) -> Self {
        match s.parse() {
            Ok(code) => code,
            Err(never) => match never {},
        }
    }
}

impl std::fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for OAuthErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// What kind of validation failure an [`TokenError::InvalidIdToken`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationKind {
    /// The token is wrong (signature, claims, shape, algorithm).
    Rejected,
    /// No key in the provider's JWKS fits the token: it may be signed with a
    /// key the cache has not fetched yet (a refetch failed or is rate
    /// limited), so this is not proof that the token is forged.
    UnknownKey,
}

/// A token validation failure: its [`ValidationKind`] and a short reason
/// that never contains the token. Dereferences to the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    kind: ValidationKind,
    reason: String,
}

impl ValidationError {
    /// A failure of `kind` with a short reason.
    pub fn new(kind: ValidationKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ValidationKind {
        self.kind
    }

    /// The short reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl std::ops::Deref for ValidationError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.reason
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A rejected token ([`ValidationKind::Rejected`]) with this reason.
impl From<String> for ValidationError {
    fn from(reason: String) -> Self {
        Self::new(ValidationKind::Rejected, reason)
    }
}

/// A rejected token ([`ValidationKind::Rejected`]) with this reason.
impl From<&str> for ValidationError {
    fn from(reason: &str) -> Self {
        Self::new(ValidationKind::Rejected, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(TokenError::NotAuthenticated.is_unauthorized());
        assert!(
            TokenError::RefreshRejected {
                error: "invalid_grant".into()
            }
            .is_unauthorized()
        );
        assert!(TokenError::ProviderUnavailable("timed out".into()).is_transient());
        assert_eq!(
            TokenError::InvalidCallback("state".into()).kind(),
            ErrorKind::Invalid
        );
    }

    #[test]
    fn provider_text_stays_out_of_the_message() {
        let err = TokenError::Provider {
            error: "invalid_scope".into(),
            description: Some("<script>alert(1)</script>".into()),
        };
        assert_eq!(
            err.to_string(),
            "the provider returned an error: invalid_scope"
        );
        assert!(format!("{err:?}").contains("alert"), "kept for debugging");
    }

    #[test]
    fn oauth_error_codes_round_trip() {
        for code in [
            "invalid_request",
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "unsupported_grant_type",
            "invalid_scope",
            "invalid_target",
            "invalid_token",
            "server_error",
        ] {
            let parsed = OAuthErrorCode::from(code);
            assert_eq!(parsed.as_str(), code);
            assert_eq!(parsed.to_string(), code);
        }
        assert!(matches!(
            OAuthErrorCode::from("server_error"),
            OAuthErrorCode::Extension(_)
        ));
        let long = "x".repeat(100);
        assert_eq!(OAuthErrorCode::from(long.as_str()).as_str().len(), 64);
        let dead: Vec<_> = ["invalid_grant", "invalid_token", "unauthorized_client"]
            .into_iter()
            .map(OAuthErrorCode::from)
            .collect();
        assert!(dead.iter().all(OAuthErrorCode::is_dead_grant));
        assert!(!OAuthErrorCode::InvalidScope.is_dead_grant());
        assert!(!OAuthErrorCode::from("http_400").is_dead_grant());
    }

    #[test]
    fn statuses_without_an_oauth_body_are_not_grant_errors() {
        let err = TokenError::UnexpectedStatus { status: 403 };
        assert!(err.is_unauthorized());
        assert_eq!(
            err.to_string(),
            "the provider answered HTTP 403 without an OAuth error"
        );
    }
}
