//! Setting an access token on a request by hand: [`BearerTokenExt`].
//!
//! ```
//! use oidc_bff::AccessToken;
//! use oidc_bff::client::BearerTokenExt as _;
//!
//! let token = AccessToken::new("eyJhbGciOi...");
//! let request = reqwest::Client::new()
//!     .get("https://api.example.com/data")
//!     .bearer_token(&token)
//!     .build()
//!     .unwrap();
//! assert_eq!(request.headers()["authorization"], "Bearer eyJhbGciOi...");
//! // The header is marked sensitive: Debug output does not show it.
//! assert!(!format!("{request:?}").contains("eyJhbGciOi"));
//! ```

use oidc_bff_tokens::AccessToken;

/// Puts an [`AccessToken`] on a request as `Authorization: Bearer <token>`,
/// with the header marked sensitive so it never shows in `Debug` output.
///
/// The counterpart of ASP.NET's `SetBearerToken`, for requests you build
/// yourself; [managed clients](crate::client) do it on every request.
pub trait BearerTokenExt: Sized {
    /// Sets the `Authorization` header to `Bearer <token>`.
    #[must_use]
    fn bearer_token(self, token: &AccessToken) -> Self;
}

impl BearerTokenExt for reqwest::RequestBuilder {
    fn bearer_token(self, token: &AccessToken) -> Self {
        // reqwest marks the value sensitive.
        self.bearer_auth(token.secret())
    }
}

impl BearerTokenExt for reqwest_middleware::RequestBuilder {
    fn bearer_token(self, token: &AccessToken) -> Self {
        self.bearer_auth(token.secret())
    }
}

impl BearerTokenExt for http::request::Builder {
    fn bearer_token(self, token: &AccessToken) -> Self {
        match bearer_header(token) {
            Some(value) => self.header(http::header::AUTHORIZATION, value),
            // An unusable token leaves the request without the header; the API will answer 401.
            None => self,
        }
    }
}

/// `Bearer <token>` as a sensitive header value; `None` when the token holds
/// bytes a header cannot carry.
pub(crate) fn bearer_header(token: &AccessToken) -> Option<http::HeaderValue> {
    let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.secret())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_builder_gets_a_sensitive_header() {
        let token = AccessToken::new("tok-123");
        let request = http::Request::builder()
            .uri("https://api.example.com/")
            .bearer_token(&token)
            .body(())
            .unwrap();
        let value = &request.headers()[http::header::AUTHORIZATION];
        assert_eq!(value, "Bearer tok-123");
        assert!(value.is_sensitive());
        assert!(!format!("{request:?}").contains("tok-123"));
    }

    #[test]
    fn middleware_builder_hides_the_token() {
        let client = reqwest_middleware::ClientWithMiddleware::from(reqwest::Client::new());
        let builder = client
            .get("https://api.example.com/")
            .bearer_token(&AccessToken::new("tok-456"));
        assert!(!format!("{builder:?}").contains("tok-456"));
        let request = builder.build().unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer tok-456");
    }

    #[test]
    fn a_token_with_newlines_is_not_sent() {
        let request = http::Request::builder()
            .uri("https://api.example.com/")
            .bearer_token(&AccessToken::new("a\r\nX-Evil: 1"))
            .body(())
            .unwrap();
        assert!(request.headers().get(http::header::AUTHORIZATION).is_none());
    }
}
