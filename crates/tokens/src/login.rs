//! Sign-in: the authorization code flow with PKCE, `state` and `nonce`.
//!
//! Nothing is stored per started sign-in. [`OidcClient::begin_login`](crate::OidcClient::begin_login)
//! creates a [`LoginTransaction`] (nonce, PKCE verifier, redirect URI,
//! return URL, start time) and **seals** it with AES-256-GCM under the
//! engine's login [`KeyRing`] into the `state` parameter itself. The seal is
//! bound (as associated data) to a random *browser binding* that the BFF
//! keeps in a short-lived cookie; one binding serves every tab of a browser,
//! so parallel sign-ins work and the cookie stays one 43-character value.
//!
//! [`OidcClient::complete_login`](crate::OidcClient::complete_login) opens the
//! `state` with the browser's binding (another browser's, a forged or a
//! tampered `state` does not open), refuses it after the login timeout, and
//! refuses a second use: after a successful code exchange the transaction is
//! recorded as *consumed* in the store with
//! [`put_transient_if_absent`](crate::SessionStore::put_transient_if_absent)
//! for the rest of its lifetime. Only completed code exchanges write, so a
//! flood of `/bff/login` (or of forged callbacks) cannot fill the store.
//!
//! Instances that share sessions must share the login key ring (the gateway
//! uses the session encryption keys); rotation works like the stores': add
//! the new key everywhere, then make it first.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use url::Url;

use crate::secret::PkceVerifier;
use crate::store::KeyRing;

/// The longest return URL carried through a sign-in; a longer one falls back
/// to `/` so the sealed `state` stays short enough for every provider.
pub const MAX_RETURN_URL: usize = 1024;

/// Prefix of the store keys that record consumed sign-ins.
pub(crate) const CONSUMED_KEY_PREFIX: &str = "login-used:";

/// Associated data of a sealed transaction: a purpose label and the browser
/// binding. The label keeps sealed sign-ins apart from anything else sealed
/// with the same keys (session records use other associated data).
fn seal_aad(binding: &str) -> Vec<u8> {
    let mut aad = b"oidc-bff/login/v1\n".to_vec();
    aad.extend_from_slice(binding.as_bytes());
    aad
}

/// A sign-in in progress. It lives only inside the sealed `state`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoginTransaction {
    /// The sealed `state` sent to the provider (not part of the sealed data).
    #[serde(skip)]
    pub state: String,
    /// The `nonce` the id_token must carry.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The PKCE verifier.
    #[serde(rename = "v")]
    pub code_verifier: PkceVerifier,
    /// The redirect URI the code is bound to.
    #[serde(rename = "u")]
    pub redirect_uri: String,
    /// Where to send the browser after sign-in (a validated local path).
    #[serde(rename = "r")]
    pub return_url: String,
    /// When the sign-in started (Unix seconds).
    #[serde(rename = "t")]
    pub created_at: u64,
}

impl LoginTransaction {
    /// Seals the transaction for the browser with `binding`; the result is
    /// the `state` parameter (URL-safe: `{key id}.{base64url}`).
    pub(crate) fn seal(&self, keys: &KeyRing, binding: &str) -> Result<String, crate::TokenError> {
        let plain = serde_json::to_vec(self)
            .map_err(|e| crate::TokenError::Config(format!("cannot encode the sign-in: {e}")))?;
        let sealed = keys.encrypt(&plain, &seal_aad(binding))?;
        Ok(sealed.replacen(':', ".", 1))
    }

    /// Opens a sealed `state` with the browser's binding; `None` when it was
    /// not sealed by us for this browser (forged, tampered, another browser's,
    /// or sealed with a key no longer in the ring).
    pub(crate) fn open(keys: &KeyRing, state: &str, binding: &str) -> Option<Self> {
        if state.len() > 4 * MAX_RETURN_URL || binding.is_empty() {
            return None;
        }
        let (id, rest) = state.split_once('.')?;
        let plain = keys
            .decrypt(&format!("{id}:{rest}"), &seal_aad(binding))
            .ok()?;
        let mut transaction: Self = serde_json::from_slice(&plain).ok()?;
        transaction.state = state.to_owned();
        Some(transaction)
    }

    /// The store key recording that this transaction was used.
    pub(crate) fn consumed_key(&self) -> String {
        let digest = sha2::Sha256::digest(self.nonce.as_bytes());
        format!("{CONSUMED_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(digest))
    }
}

/// Whether `value` looks like a browser binding this engine issues (43
/// characters of base64url, 256 random bits).
pub fn is_browser_binding(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What [`begin_login`](crate::OidcClient::begin_login) returns.
#[derive(Clone, Debug)]
pub struct LoginStart {
    /// Where to redirect the browser.
    pub authorization_url: Url,
    /// The sealed `state` sent to the provider.
    pub state: String,
    /// The browser binding: keep it in a short-lived cookie of this browser
    /// and hand it back to `complete_login`. It is the one given to
    /// `begin_login_bound` when that was a valid binding, else a fresh one.
    pub binding: String,
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
