//! The HTTP client every call to the provider goes through (connect and
//! total timeouts, no redirects, no cookies) and the bounded read of its
//! answers. Discovery, JWKS and the endpoint calls of `provider` share it.

use std::time::Duration;

use crate::config::OidcConfig;
use crate::error::TokenError;

/// The largest provider answer read, in bytes.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Reads a response body, refusing anything larger than [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, TokenError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
    {
        return Err(TokenError::InvalidResponse(
            "provider answer too large".into(),
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TokenError::from_transport(&e))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(TokenError::InvalidResponse(
                "provider answer too large".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Builds the HTTP client used for every call to the provider: connect and
/// total timeouts from the configuration, no redirects (a token endpoint that
/// redirects is misconfigured or hostile), no cookies.
pub(crate) fn http_client(config: &OidcConfig) -> Result<reqwest::Client, TokenError> {
    http_client_with_timeouts(config.connect_timeout, config.request_timeout)
}

pub(crate) fn http_client_with_timeouts(
    connect: Duration,
    total: Duration,
) -> Result<reqwest::Client, TokenError> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("oidc-bff/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TokenError::Config(format!("cannot build the HTTP client: {e}")))
}
