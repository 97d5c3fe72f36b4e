//! DPoP (RFC 9449) on the server side: proof verification for the token
//! endpoint, and a reusable [`ResourceVerifier`] for resource servers (test
//! APIs) that checks a request's proof, its `ath`, the token's `cnf.jkt`
//! and, when switched on, a nonce.
//!
//! A proof is accepted when: it is a JWS with `typ` `dpop+jwt`, an `alg`
//! from [`ALGS`], a public `jwk` (no private member) in the header whose key
//! verifies the signature; `htm` and `htu` (compared without query and
//! fragment) match the request; `iat` is within [`IAT_WINDOW`] seconds of
//! now; its `jti` was not seen before (per verifier); `ath` is the hash of
//! the access token when one is presented; `nonce` is the expected one when
//! a nonce is required.
//!
//! ```no_run
//! # async fn demo(headers: http::HeaderMap, token_jkt: Option<String>) {
//! use oidc_bff_dev_idp::dpop::ResourceVerifier;
//!
//! let verifier = ResourceVerifier::new();
//! verifier.require_nonce(true);
//! match verifier.verify_request(&http::Method::GET, "http://127.0.0.1:9/api", &headers, |_token| token_jkt) {
//!     Ok(verified) => println!("DPoP-bound call with key {}", verified.jkt),
//!     Err(rejection) => { let _response = rejection.into_response(); }
//! }
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The proof algorithms accepted (`dpop_signing_alg_values_supported`).
pub const ALGS: [&str; 4] = ["ES256", "ES384", "RS256", "PS256"];

/// How far (seconds) a proof's `iat` may be from now.
pub const IAT_WINDOW: u64 = 60;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The proof is malformed or does not match the request (the text says
    /// which check failed; it never contains the proof).
    Invalid(String),
    /// A nonce is required and the proof has none or a stale one.
    NonceRequired,
}

impl std::fmt::Display for ProofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProofError::Invalid(why) => write!(f, "invalid DPoP proof: {why}"),
            ProofError::NonceRequired => f.write_str("a DPoP nonce is required"),
        }
    }
}

fn invalid(why: &str) -> ProofError {
    ProofError::Invalid(why.to_owned())
}

/// The `jti` values seen recently, so a proof is accepted once.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, u64>>,
}

impl ReplayCache {
    /// `true` the first time `jti` is offered (until `now + 2 * IAT_WINDOW`).
    fn first_use(&self, jti: &str, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            seen.retain(|_, until| *until > now);
        }
        match seen.get(jti) {
            Some(until) if *until > now => false,
            _ => {
                seen.insert(jti.to_owned(), now + 2 * IAT_WINDOW);
                true
            }
        }
    }
}

/// What a proof says, once verified.
#[derive(Debug, Clone)]
pub struct VerifiedProof {
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    /// The proof's claims.
    pub claims: Value,
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK (EC, RSA or OKP).
pub fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    let canonical = match s("kty")? {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv")?, s("x")?),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// `url` without query and fragment, as `htu` compares.
fn htu_of(url: &str) -> Option<String> {
    let mut url = url::Url::parse(url).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url.into())
}

/// Verifies `proof` for a request `method` to `url` at `now`; `access_token`
/// for resource calls (`ath`); `nonce` when one is required.
pub fn verify_proof(
    proof: &str,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    nonce: Option<&str>,
    replay: &ReplayCache,
    now: u64,
) -> Result<VerifiedProof, ProofError> {
    if proof.len() > 8192 {
        return Err(invalid("too long"));
    }
    let header_part = proof.split('.').next().unwrap_or_default();
    let header: Value = URL_SAFE_NO_PAD
        .decode(header_part)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or_else(|| invalid("the header is not JSON"))?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(invalid("typ is not dpop+jwt"));
    }
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !ALGS.contains(&alg_name) {
        return Err(invalid("alg is not allowed"));
    }
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| invalid("alg is not allowed"))?;
    let jwk_value = header.get("jwk").ok_or_else(|| invalid("no jwk"))?;
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|private| jwk_value.get(private).is_some())
    {
        return Err(invalid("the jwk holds a private key"));
    }
    let jkt = jwk_thumbprint(jwk_value).ok_or_else(|| invalid("unusable jwk"))?;
    let jwk: Jwk =
        serde_json::from_value(jwk_value.clone()).map_err(|_| invalid("unusable jwk"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("unusable jwk"))?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(proof, &key, &validation)
        .map_err(|_| invalid("the signature does not verify"))?
        .claims;
    let claim = |k: &str| claims.get(k).and_then(Value::as_str);
    if claim("htm") != Some(method) {
        return Err(invalid("htm does not match the request"));
    }
    match (claim("htu").and_then(htu_of), htu_of(url)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(invalid("htu does not match the request")),
    }
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("no iat"))?;
    if iat.abs_diff(now) > IAT_WINDOW {
        return Err(invalid("iat is out of the accepted window"));
    }
    let jti = claim("jti").filter(|j| !j.is_empty() && j.len() <= 256);
    let Some(jti) = jti else {
        return Err(invalid("no jti"));
    };
    match access_token {
        Some(token) => {
            let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            if claim("ath") != Some(ath.as_str()) {
                return Err(invalid("ath does not match the access token"));
            }
        }
        None if claims.get("ath").is_some() => {
            return Err(invalid("ath without an access token"));
        }
        None => {}
    }
    if let Some(expected) = nonce
        && claim("nonce") != Some(expected)
    {
        return Err(ProofError::NonceRequired);
    }
    // Last, so that a refused proof does not burn its jti.
    if !replay.first_use(jti, now) {
        return Err(invalid("jti was used before"));
    }
    Ok(VerifiedProof { jkt, claims })
}

/// A DPoP-bound call a [`ResourceVerifier`] accepted.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    /// The access token (from `Authorization: DPoP <token>`).
    pub token: String,
    /// The thumbprint of the proof's key, equal to the token's `cnf.jkt`.
    pub jkt: String,
}

/// A refused resource call: 401 with a `WWW-Authenticate: DPoP` challenge
/// (and a `DPoP-Nonce` when a nonce is wanted).
#[derive(Debug, Clone)]
pub struct Rejection {
    /// `invalid_token`, `invalid_dpop_proof` or `use_dpop_nonce`.
    pub error: &'static str,
    /// What failed (never a token or a proof).
    pub description: String,
    /// The nonce to use next.
    pub nonce: Option<String>,
}

impl Rejection {
    /// The 401 response.
    pub fn into_response(self) -> Response {
        let challenge = format!(
            "DPoP algs=\"{}\", error=\"{}\", error_description=\"{}\"",
            ALGS.join(" "),
            self.error,
            self.description.replace('"', "'")
        );
        let mut response = (StatusCode::UNAUTHORIZED, self.description).into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(nonce) = self.nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            response.headers_mut().insert("dpop-nonce", nonce);
        }
        response
    }
}

/// Checks DPoP-bound calls at a resource server: the `Authorization: DPoP`
/// scheme, one `DPoP` proof for this method and URL with the token's `ath`,
/// its key's thumbprint equal to the token's `cnf.jkt`, a fresh `jti`, and
/// the server's current nonce when [nonces are
/// required](Self::require_nonce).
#[derive(Default)]
pub struct ResourceVerifier {
    replay: ReplayCache,
    nonce: Mutex<Option<String>>,
    accepted: std::sync::atomic::AtomicUsize,
    clock: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
}

impl std::fmt::Debug for ResourceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceVerifier")
            .field("nonce_required", &self.current_nonce().is_some())
            .finish_non_exhaustive()
    }
}

impl ResourceVerifier {
    /// A verifier that requires no nonce.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the time (Unix seconds) for `iat` checks from `clock` instead
    /// of the system clock (to share a test's manual clock).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    /// Requires (with a fresh value) or stops requiring a nonce.
    pub fn require_nonce(&self, on: bool) {
        *self.nonce.lock().unwrap_or_else(|e| e.into_inner()) = on.then(|| crate::random_token(16));
    }

    /// Replaces the nonce (when one is required): the next call with the
    /// old one gets a `use_dpop_nonce` challenge.
    pub fn rotate_nonce(&self) {
        let mut nonce = self.nonce.lock().unwrap_or_else(|e| e.into_inner());
        if nonce.is_some() {
            *nonce = Some(crate::random_token(16));
        }
    }

    /// The nonce currently required, if any.
    pub fn current_nonce(&self) -> Option<String> {
        self.nonce.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many calls were accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Verifies a call; `token_jkt` gives the `cnf.jkt` the token is bound
    /// to (from introspection or the token itself), `None` when unbound.
    pub fn verify_request(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        token_jkt: impl FnOnce(&str) -> Option<String>,
    ) -> Result<VerifiedRequest, Rejection> {
        let nonce = self.current_nonce();
        let reject = |error: &'static str, description: &str| Rejection {
            error,
            description: description.to_owned(),
            nonce: nonce.clone(),
        };
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let token = match authorization.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("dpop") => token.trim(),
            _ => return Err(reject("invalid_token", "a DPoP-bound token is required")),
        };
        let mut proofs = headers.get_all("dpop").iter();
        let (Some(proof), None) = (proofs.next(), proofs.next()) else {
            return Err(reject(
                "invalid_dpop_proof",
                "exactly one DPoP proof is required",
            ));
        };
        let proof = proof.to_str().unwrap_or_default();
        let verified = verify_proof(
            proof,
            method.as_str(),
            url,
            Some(token),
            nonce.as_deref(),
            &self.replay,
            self.clock.as_ref().map_or_else(crate::now, |clock| clock()),
        )
        .map_err(|err| match err {
            ProofError::NonceRequired => reject("use_dpop_nonce", "a fresh DPoP nonce is required"),
            ProofError::Invalid(why) => reject("invalid_dpop_proof", &why),
        })?;
        if token_jkt(token).as_deref() != Some(verified.jkt.as_str()) {
            return Err(reject(
                "invalid_token",
                "the token is not bound to the proof's key",
            ));
        }
        self.accepted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(VerifiedRequest {
            token: token.to_owned(),
            jkt: verified.jkt,
        })
    }
}

/// How the token endpoint treats DPoP nonces (a fault switch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum NonceMode {
    /// No nonce needed (default).
    #[default]
    Off,
    /// Proofs must carry the IdP's current nonce; every answer names it.
    Required,
    /// Every proof is answered `use_dpop_nonce` with yet another nonce (a
    /// broken server: clients must not loop).
    AlwaysNew,
}

/// The outcome of the token endpoint's DPoP check: the proof's key, or an
/// error answer.
#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
pub(crate) fn token_endpoint_check(
    idp: &crate::state::Idp,
    headers: &HeaderMap,
    mode: NonceMode,
) -> Result<Option<String>, Response> {
    let mut proofs = headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => return Ok(None),
        (Some(p), None) => p.to_str().unwrap_or_default(),
        (Some(_), Some(_)) => {
            return Err(token_error(
                "invalid_dpop_proof",
                "more than one DPoP proof",
                None,
            ));
        }
    };
    let expected = match mode {
        NonceMode::Off => None,
        NonceMode::Required => Some(idp.dpop_nonce()),
        NonceMode::AlwaysNew => {
            let fresh = idp.rotate_dpop_nonce();
            return Err(token_error(
                "use_dpop_nonce",
                "a DPoP nonce is required",
                Some(fresh),
            ));
        }
    };
    match verify_proof(
        proof,
        "POST",
        &idp.endpoint("/token"),
        None,
        expected.as_deref(),
        &idp.dpop_replay,
        idp.now(),
    ) {
        Ok(verified) => Ok(Some(verified.jkt)),
        Err(ProofError::NonceRequired) => Err(token_error(
            "use_dpop_nonce",
            "a DPoP nonce is required",
            expected,
        )),
        Err(ProofError::Invalid(why)) => Err(token_error("invalid_dpop_proof", &why, None)),
    }
}

fn token_error(error: &str, description: &str, nonce: Option<String>) -> Response {
    let mut response = (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_of_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jwk_thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }
}
