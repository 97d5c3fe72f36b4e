//! Shared helpers for the dev IdP integration tests.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use oidc_bff_dev_idp::RunningIdp;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const CLIENT: &str = "bff";
pub const SECRET: &str = "secret";
pub const REDIRECT: &str = "http://127.0.0.1:3000/callback";

/// An HTTP client that does not follow redirects.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A PKCE pair `(verifier, S256 challenge)`.
pub fn pkce() -> (String, String) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-some-more-entropy".to_owned();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The result of an authorization request.
pub struct Authorized {
    pub code: String,
    pub verifier: String,
    pub location: url::Url,
}

/// Runs `/authorize` for the default client and returns the code.
pub async fn authorize(idp: &RunningIdp, scope: &str) -> Authorized {
    let (verifier, challenge) = pkce();
    let location = authorize_raw(
        idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await
    .expect("a redirect");
    let code = query_param(&location, "code").expect("a code in the redirect");
    Authorized {
        code,
        verifier,
        location,
    }
}

/// Sends an authorization request; returns the redirect target, or `None`
/// when the IdP did not redirect.
pub async fn authorize_raw(idp: &RunningIdp, params: &[(&str, &str)]) -> Option<url::Url> {
    let url = format!("{}/authorize", idp.issuer());
    let response = http().get(url).query(params).send().await.unwrap();
    if response.status() != reqwest::StatusCode::FOUND {
        return None;
    }
    let location = response.headers()["location"].to_str().unwrap();
    Some(url::Url::parse(location).unwrap())
}

pub fn query_param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// POSTs a form to `path` with Basic client authentication.
pub async fn post_form(idp: &RunningIdp, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http()
        .post(format!("{}{path}", idp.issuer()))
        .basic_auth(CLIENT, Some(SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A token request with Basic client authentication.
pub async fn token(idp: &RunningIdp, form: &[(&str, &str)]) -> (u16, Value) {
    post_form(idp, "/token", form).await
}

/// The complete code flow; returns the token answer.
pub async fn sign_in(idp: &RunningIdp, scope: &str) -> Value {
    let auth = authorize(idp, scope).await;
    let (status, body) = redeem(idp, &auth.code, &auth.verifier).await;
    assert_eq!(status, 200, "{body}");
    body
}

pub async fn redeem(idp: &RunningIdp, code: &str, verifier: &str) -> (u16, Value) {
    token(
        idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

pub async fn refresh(idp: &RunningIdp, refresh_token: &str) -> (u16, Value) {
    token(
        idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The claims of a JWT, without verification.
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The protected header of a JWT.
pub fn header(jwt: &str) -> Value {
    let header = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

pub async fn get_json(url: &str) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// Verifies a JWT's signature against the IdP's published JWKS (audience
/// and expiry are checked only when `audience` is given).
pub async fn verify(idp: &RunningIdp, jwt: &str, audience: Option<&str>) -> Result<Value, String> {
    let jwks: JwkSet =
        serde_json::from_value(get_json(&format!("{}/jwks", idp.issuer())).await).unwrap();
    let head = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    let kid = head.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("kid not in JWKS")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(head.alg);
    validation.set_issuer(&[idp.issuer()]);
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}
