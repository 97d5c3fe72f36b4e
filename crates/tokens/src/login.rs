//! Sign-in: the authorization code flow with PKCE, `state` and `nonce`.
//!
//! [`OidcClient::begin_login`](crate::OidcClient::begin_login) creates a
//! [`LoginTransaction`] (kept server-side, in the store, for the configured
//! login timeout) and the URL to send the browser to.
//! [`OidcClient::complete_login`](crate::OidcClient::complete_login) checks the
//! callback against it, exchanges the code and validates the id_token. A
//! transaction can be completed once: a replayed callback finds nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use url::Url;

use crate::secret::PkceVerifier;

/// A sign-in in progress.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoginTransaction {
    /// The `state` sent to the provider; also names the transaction.
    pub state: String,
    /// The `nonce` the id_token must carry.
    pub nonce: String,
    /// The PKCE verifier.
    pub code_verifier: PkceVerifier,
    /// The redirect URI the code is bound to.
    pub redirect_uri: String,
    /// Where to send the browser after sign-in (a validated local path).
    pub return_url: String,
    /// When the sign-in started (Unix seconds).
    pub created_at: u64,
}

/// What [`begin_login`](crate::OidcClient::begin_login) returns.
#[derive(Clone, Debug)]
pub struct LoginStart {
    /// Where to redirect the browser.
    pub authorization_url: Url,
    /// The transaction's `state`; bind it to the browser (a short-lived cookie)
    /// and hand it back to `complete_login`.
    pub state: String,
}

/// The query parameters of the callback, as received from the browser.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CallbackParams {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` echoed by the provider.
    pub state: Option<String>,
    /// The issuer (RFC 9207).
    pub iss: Option<String>,
    /// An OAuth error code.
    pub error: Option<String>,
    /// A human-readable error, from the provider; untrusted text.
    pub error_description: Option<String>,
}

/// The S256 PKCE challenge of a verifier.
pub fn pkce_challenge(verifier: &PkceVerifier) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.secret().as_bytes()))
}

/// Accepts a post-sign-in return URL only if it is a local path.
///
/// Anything that a browser could resolve to another origin falls back to
/// `/`: absolute URLs, scheme-relative `//host`, backslash variants
/// (`/\host`), control characters (`/%09/host` once decoded, or raw), and
/// anything not starting with a single `/`.
///
/// ```
/// use oidc_bff_tokens::login::sanitize_return_url;
///
/// assert_eq!(sanitize_return_url(Some("/app?x=1#y")), "/app?x=1#y");
/// for evil in ["//evil", "/\\evil", "https://evil", "/\t/evil", "evil", "/%09/evil", "/%5Cevil"] {
///     assert_eq!(sanitize_return_url(Some(evil)), "/");
/// }
/// ```
pub fn sanitize_return_url(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return "/".into();
    };
    let local = raw.starts_with('/')
        && raw.len() <= 2048
        && !raw.starts_with("//")
        && !raw.starts_with("/\\")
        && !raw.chars().any(|c| c.is_control() || c == '\\')
        && !contains_encoded_danger(raw);
    if local { raw.to_owned() } else { "/".into() }
}

/// Percent-encoded control characters, backslashes or slashes right after the
/// first one would turn into a foreign origin in some browsers once decoded.
fn contains_encoded_danger(raw: &str) -> bool {
    let decoded: String = url::form_urlencoded::parse(format!("x={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let path_only = decoded.split(['?', '#']).next().unwrap_or_default();
    decoded.chars().any(|c| c.is_control() || c == '\\')
        || path_only.starts_with("//")
        || raw.to_ascii_lowercase().contains("%2f%2f")
        || raw[1..].to_ascii_lowercase().starts_with("%2f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let v = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            pkce_challenge(&v),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn return_urls() {
        assert_eq!(sanitize_return_url(None), "/");
        assert_eq!(sanitize_return_url(Some("/")), "/");
        assert_eq!(sanitize_return_url(Some("/a/b?c=%20d")), "/a/b?c=%20d");
        for evil in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "javascript:alert(1)",
            "/%09/evil.com",
            "/%2f/evil.com",
            "/%2F%2Fevil.com",
            "/\r\n/evil",
            "",
            " /x",
        ] {
            assert_eq!(sanitize_return_url(Some(evil)), "/", "{evil:?}");
        }
    }
}
