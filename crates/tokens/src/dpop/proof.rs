//! Building DPoP proofs, and reading servers' DPoP challenges.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::Digest as _;
use url::Url;

use super::DpopKey;
use crate::error::TokenError;
use crate::secret::AccessToken;

/// The `htu` of a request URL: without query and fragment (RFC 9449 §4.2).
///
/// ```
/// use oidc_bff_tokens::dpop::htu;
///
/// let url = "https://api.example.com/a/b?x=1#frag".parse().unwrap();
/// assert_eq!(htu(&url), "https://api.example.com/a/b");
/// ```
pub fn htu(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.into()
}

impl DpopKey {
    /// A proof for one request: `method` (`htm`) to `url` (`htu`, query and
    /// fragment dropped), at `now` (Unix seconds, `iat`), with a random
    /// `jti`; `ath` when `access_token` is given (calls to a resource
    /// server), `nonce` when the server gave one.
    pub fn proof(
        &self,
        method: &str,
        url: &Url,
        access_token: Option<&AccessToken>,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<String, TokenError> {
        let mut jti = [0u8; 16];
        rand::rng().fill_bytes(&mut jti);
        let mut claims = serde_json::json!({
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "htm": method,
            "htu": htu(url),
            "iat": now,
        });
        if let Some(token) = access_token {
            claims["ath"] = URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(token.secret().as_bytes()))
                .into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let header = self.encoded_header();
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
        let mut jwt = String::with_capacity(header.len() + payload.len() + 100);
        jwt.push_str(header);
        jwt.push('.');
        jwt.push_str(&payload);
        let signature = self.sign(jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jwt)
    }
}

/// The `error` parameter of a `WWW-Authenticate: DPoP ...` challenge, if the
/// header value is one (e.g. `use_dpop_nonce`, `invalid_dpop_proof`).
///
/// ```
/// use oidc_bff_tokens::dpop::www_authenticate_error;
///
/// let v = r#"DPoP error="use_dpop_nonce", error_description="fresh nonce""#;
/// assert_eq!(www_authenticate_error(v).as_deref(), Some("use_dpop_nonce"));
/// assert_eq!(www_authenticate_error(r#"Bearer error="invalid_token""#), None);
/// ```
pub fn www_authenticate_error(value: &str) -> Option<String> {
    let value = value.trim_start();
    let scheme = value.get(..4)?;
    if !scheme.eq_ignore_ascii_case("dpop") {
        return None;
    }
    let rest = &value[4..];
    let at = rest.find("error=")?;
    // Not `error_description=`: the match must start a parameter.
    let before = rest[..at].trim_end();
    if !(before.is_empty() || before.ends_with(',')) {
        return None;
    }
    let raw = &rest[at + "error=".len()..];
    let code: String = raw
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    (!code.is_empty()).then_some(code)
}

/// Whether a response's `WWW-Authenticate` headers hold a DPoP
/// `use_dpop_nonce` challenge.
pub fn is_nonce_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .any(|v| www_authenticate_error(v).as_deref() == Some("use_dpop_nonce"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpop::DpopAlg;

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let raw = URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn proof_has_the_rfc9449_shape() {
        let key = DpopKey::generate(DpopAlg::Es256).unwrap();
        let url: Url = "https://api.example.com/x?q=1#f".parse().unwrap();
        let token = AccessToken::new("abc");
        let one = key
            .proof("GET", &url, Some(&token), Some("n1"), 42)
            .unwrap();
        let two = key.proof("GET", &url, None, None, 42).unwrap();
        let header = part(&one, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert!(header["jwk"].get("d").is_none());
        let claims = part(&one, 1);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.example.com/x");
        assert_eq!(claims["iat"], 42);
        assert_eq!(claims["nonce"], "n1");
        assert_eq!(
            claims["ath"],
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"abc"))
        );
        let other = part(&two, 1);
        assert_ne!(claims["jti"], other["jti"]);
        assert!(other.get("ath").is_none() && other.get("nonce").is_none());
        // Fixed-size ECDSA signature.
        let sig = URL_SAFE_NO_PAD
            .decode(one.split('.').nth(2).unwrap())
            .unwrap();
        assert_eq!(sig.len(), 64);
    }

    #[test]
    fn challenges() {
        assert!(is_nonce_challenge([r#"DPoP error="use_dpop_nonce""#]));
        assert!(is_nonce_challenge([
            "Bearer realm=\"x\"",
            r#"dpop algs="ES256", error="use_dpop_nonce""#
        ]));
        assert!(!is_nonce_challenge([
            r#"DPoP error_description="use_dpop_nonce", error="invalid_token""#
        ]));
        assert!(!is_nonce_challenge([r#"Bearer error="use_dpop_nonce""#]));
    }
}
