//! The one error type of the axum integration, and how it becomes a response.
//!
//! | error | status |
//! |---|---|
//! | not signed in, no refresh token, refresh rejected, missing anti-forgery header | 401 |
//! | a cross-site request (`Sec-Fetch-Site`, `Origin`) | 403 |
//! | a signed-in user a route's rules refuse ([`crate::proxy::Require`]) | 403 |
//! | a session id that is not the user's (`/bff/sessions/{id}/end`) | 404 |
//! | provider or store temporarily unavailable | 503 with `Retry-After` |
//! | bad sign-in callback, bad logout request | 400 |
//! | a proxied API could not be reached | 502 |
//! | a proxied API did not answer in time | 504 |
//! | the BFF is misconfigured (e.g. its layer is missing) | 500 |
//!
//! Bodies are small JSON documents (`{"error": "...", "message": "..."}`)
//! that never contain a token, code, secret or session id. Handlers can
//! return `Result<_, BffError>` and use `?` on every token call: a
//! [`TokenError`] converts into the right status.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use oidc_bff_tokens::{ErrorKind, TokenError};

/// Errors of the BFF's axum integration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BffError {
    /// A token engine error (sign-in, token retrieval, refresh).
    #[error(transparent)]
    Token(#[from] TokenError),

    /// The request lacks the anti-forgery header.
    #[error("the anti-forgery header is missing")]
    MissingCsrfHeader,

    /// The browser marked the request as cross-site (`Sec-Fetch-Site`,
    /// `Origin`); see [`crate::csrf`].
    #[error("cross-site request refused")]
    CrossSiteRequest,

    /// The signed-in user's claims do not meet the route's rules
    /// ([`Require`](crate::proxy::Require)).
    #[error("forbidden: {0}")]
    Forbidden(String),

    /// What the request names does not exist (for this user).
    #[error("not found: {0}")]
    NotFound(String),

    /// A request to a management endpoint was malformed or not allowed.
    #[error("bad request: {0}")]
    BadRequest(String),

    /// An outgoing API call failed below HTTP (connect error, timeout).
    #[error("upstream call failed: {0}")]
    Upstream(String),

    /// An outgoing API call timed out before the response headers arrived.
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),

    /// The BFF is used without its layer or with bad settings.
    #[error("BFF misconfigured: {0}")]
    Config(String),

    /// No API client is registered under this name (or for this type): a
    /// programming error.
    #[error("no API client is registered as {0:?}")]
    UnknownClient(String),
}

impl BffError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            BffError::Token(err) => match err.kind() {
                ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
                ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::Invalid => StatusCode::BAD_REQUEST,
                ErrorKind::Config => StatusCode::INTERNAL_SERVER_ERROR,
            },
            BffError::MissingCsrfHeader => StatusCode::UNAUTHORIZED,
            BffError::CrossSiteRequest | BffError::Forbidden(_) => StatusCode::FORBIDDEN,
            BffError::NotFound(_) => StatusCode::NOT_FOUND,
            BffError::BadRequest(_) => StatusCode::BAD_REQUEST,
            BffError::Upstream(_) => StatusCode::BAD_GATEWAY,
            BffError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            BffError::Config(_) | BffError::UnknownClient(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            BffError::Token(TokenError::NotAuthenticated) => "unauthenticated",
            BffError::Token(TokenError::InvalidCallback(_)) => "invalid_callback",
            BffError::Token(TokenError::InvalidIdToken(_)) => "invalid_id_token",
            BffError::Token(err) => match err.kind() {
                ErrorKind::Unauthorized => "unauthorized",
                ErrorKind::Unavailable => "temporarily_unavailable",
                ErrorKind::Invalid => "invalid_response",
                ErrorKind::Config => "server_error",
            },
            BffError::MissingCsrfHeader => "csrf_header_missing",
            BffError::CrossSiteRequest => "cross_site_request",
            BffError::Forbidden(_) => "forbidden",
            BffError::NotFound(_) => "not_found",
            BffError::BadRequest(_) => "invalid_request",
            BffError::Upstream(_) => "bad_gateway",
            BffError::UpstreamTimeout(_) => "gateway_timeout",
            BffError::Config(_) | BffError::UnknownClient(_) => "server_error",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            BffError::Token(err) => err.retry_after(),
            _ => None,
        }
    }
}

/// An error of a [managed client](crate::client) request: a token failure
/// keeps its meaning (401, 503), a refused URL is 400, and a transport
/// failure is 502 (504 for a timeout) — so `?` in a handler answers correctly.
impl From<reqwest_middleware::Error> for BffError {
    fn from(err: reqwest_middleware::Error) -> Self {
        match err {
            reqwest_middleware::Error::Reqwest(err) => BffError::from(err),
            reqwest_middleware::Error::Middleware(err) => match err.downcast::<BffError>() {
                Ok(err) => err,
                Err(err) => match err.downcast::<TokenError>() {
                    Ok(err) => BffError::Token(err),
                    // Another middleware's error: its text may hold anything, keep it out.
                    Err(_) => BffError::Upstream("a client middleware failed".into()),
                },
            },
        }
    }
}

/// A failed outgoing call (or `error_for_status()`) becomes 502, a timeout
/// 504. The URL, which may carry secrets, is left out.
impl From<reqwest::Error> for BffError {
    fn from(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return BffError::UpstreamTimeout("the API did not answer in time".into());
        }
        let what = if let Some(status) = err.status() {
            format!("the API answered {}", status.as_u16())
        } else if err.is_connect() {
            "connection failed".to_owned()
        } else if err.is_decode() || err.is_body() {
            "response body unreadable".to_owned()
        } else if err.is_builder() {
            "the request could not be built".to_owned()
        } else {
            "request failed".to_owned()
        };
        BffError::Upstream(what)
    }
}

impl IntoResponse for BffError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(after) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_errors_map_to_statuses() {
        let cases = [
            (TokenError::NotAuthenticated, 401),
            (TokenError::NoRefreshToken, 401),
            (
                TokenError::RefreshRejected {
                    error: "invalid_grant".into(),
                },
                401,
            ),
            (TokenError::ProviderUnavailable("timed out".into()), 503),
            (TokenError::InvalidCallback("state".into()), 400),
            (TokenError::UnexpectedStatus { status: 403 }, 401),
            (
                TokenError::Provider {
                    error: "invalid_scope".into(),
                    description: None,
                },
                401,
            ),
            (TokenError::InvalidIdToken("bad signature".into()), 400),
        ];
        for (err, status) in cases {
            let response = BffError::from(err).into_response();
            assert_eq!(response.status().as_u16(), status);
        }
        let response = BffError::from(TokenError::ProviderUnavailable("x".into())).into_response();
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }
}
