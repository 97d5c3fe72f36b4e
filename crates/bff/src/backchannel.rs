//! `POST /bff/backchannel`: OpenID Connect Back-Channel Logout.
//!
//! The provider calls this endpoint server-to-server with a form body
//! `logout_token=<JWT>` when a user's session at the provider ends. The token
//! is validated ([`oidc_bff_tokens::logout_token`]: signature from the
//! provider's JWKS, `iss`, `aud`, `iat`, `exp`, `events`, `sub`/`sid`, no
//! `nonce`, `jti` not replayed) and the matching server-side sessions end,
//! their refresh tokens revoked when configured.
//!
//! | outcome | answer |
//! |---|---|
//! | valid token (whether or not a session matched) | `200`, `Cache-Control: no-store`, empty body |
//! | invalid, replayed or missing token, wrong content type, duplicated parameter | `400` JSON, no session touched |
//! | provider keys or session store temporarily unavailable | `503` JSON with `Retry-After` |
//! | any method but `POST` | `405` |
//!
//! No anti-forgery header is required: the caller is the provider, and only a
//! token signed with its keys has any effect.
//!
//! Register the URL `{public_url}/bff/backchannel` as the client's
//! `backchannel_logout_uri` at the provider.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use oidc_bff_tokens::TokenError;

use crate::bff::Bff;
use crate::error::BffError;

/// The largest request body read, in bytes (a logout token is at most 64 KiB).
const MAX_BODY_BYTES: usize = 96 * 1024;

pub(crate) async fn backchannel(
    State(bff): State<Bff>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&bff, &headers, body).await {
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(err) => err.into_response(),
    }
}

async fn handle(bff: &Bff, headers: &HeaderMap, body: Body) -> Result<(), BffError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(bad("the body must be application/x-www-form-urlencoded"));
    }
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| bad("the body is too large or unreadable"))?;
    let mut token = None;
    for (key, value) in url::form_urlencoded::parse(&body) {
        if key == "logout_token" {
            if token.is_some() {
                return Err(bad("duplicated parameter \"logout_token\""));
            }
            token = Some(value.into_owned());
        }
    }
    let token = token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("logout_token is missing"))?;
    match bff.engine().backchannel_logout(&token).await {
        Ok(_) => {
            bff.sessions_changed();
            Ok(())
        }
        Err(TokenError::InvalidIdToken(reason)) => Err(invalid_logout_token(&reason)),
        Err(TokenError::InvalidResponse(reason)) => Err(invalid_logout_token(&reason)),
        Err(err) => Err(BffError::Token(err)),
    }
}

fn invalid_logout_token(reason: &str) -> BffError {
    let reason = reason.strip_prefix("logout token: ").unwrap_or(reason);
    BffError::BadRequest(format!("invalid logout_token: {reason}"))
}

fn bad(reason: &str) -> BffError {
    BffError::BadRequest(reason.to_owned())
}
