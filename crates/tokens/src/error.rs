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

    /// The provider rejected the refresh token (`invalid_grant` and the like);
    /// the session has been ended.
    #[error("the provider rejected the refresh token ({error})")]
    RefreshRejected {
        /// The OAuth error code, e.g. `invalid_grant`.
        error: String,
    },

    /// The provider answered a token request with an OAuth error.
    ///
    /// The message names the error code only: the provider's free text stays
    /// in `description` (and in `Debug`), out of response bodies.
    #[error("the provider returned an error: {error}")]
    Provider {
        /// The OAuth error code (at most 64 characters).
        error: String,
        /// The provider's `error_description`, if any (at most 256
        /// characters; never contains secrets we sent).
        description: Option<String>,
    },

    /// The provider could not be reached, timed out or answered 5xx.
    #[error("the provider is unavailable: {0}")]
    ProviderUnavailable(String),

    /// The provider's answer could not be understood.
    #[error("invalid response from the provider: {0}")]
    InvalidResponse(String),

    /// An id_token or logout token failed validation.
    #[error("invalid id_token: {0}")]
    InvalidIdToken(String),

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
}

impl TokenError {
    /// What this error means for the request that hit it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TokenError::NotAuthenticated
            | TokenError::NoRefreshToken
            | TokenError::RefreshRejected { .. }
            | TokenError::Provider { .. } => ErrorKind::Unauthorized,
            TokenError::ProviderUnavailable(_) | TokenError::Store(_) => ErrorKind::Unavailable,
            TokenError::Discovery(_) => ErrorKind::Unavailable,
            TokenError::InvalidResponse(_)
            | TokenError::InvalidIdToken(_)
            | TokenError::InvalidCallback(_) => ErrorKind::Invalid,
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
}
