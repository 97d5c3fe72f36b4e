//! `private_key_jwt` client authentication (RFC 7523 §2.2, OIDC Core §9):
//! the checks of a client assertion.
//!
//! The assertion must be signed by one of the client's registered public
//! keys (by `kid`, or its only key), with RS256, PS256 or ES256 fitting the
//! key; `iss` and `sub` must both be the client id (and equal a posted
//! `client_id`); `aud` must name the issuer, the token endpoint or the
//! pushed authorization request endpoint; `exp` must lie in the future (by
//! the IdP's clock, no leeway) and at most 10 minutes ahead; `iat`, when
//! present, not more than 60 s in the future; and `jti` must be new — an
//! accepted assertion can not be used again while it would still be valid.
//! Every refusal is `401 invalid_client` with a description that names the
//! failed check.

use http::{HeaderMap, StatusCode, header};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{Params, invalid_request, oauth_error};
use crate::counters::Counter;
use crate::state::Idp;

/// The only `client_assertion_type` there is.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest `exp - now` accepted.
const MAX_LIFETIME_SECS: u64 = 600;

/// Whether the request tries assertion-based client authentication.
pub(crate) fn uses_assertion(params: &Params) -> bool {
    params.get("client_assertion").is_some() || params.get("client_assertion_type").is_some()
}

fn refused(why: &str) -> axum::response::Response {
    oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        &format!("client assertion refused: {why}"),
    )
}

/// Checks the client assertion of a request; the client id, or the answer.
#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
pub(crate) fn authenticate_assertion(
    idp: &Idp,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, axum::response::Response> {
    if headers.contains_key(header::AUTHORIZATION) || params.get("client_secret").is_some() {
        return Err(invalid_request(
            "more than one client authentication method used",
        ));
    }
    if params.get("client_assertion_type") != Some(JWT_BEARER) {
        return Err(refused("client_assertion_type must be jwt-bearer"));
    }
    let Some(assertion) = params.get("client_assertion") else {
        return Err(refused("client_assertion is missing"));
    };
    let claims = unverified_claims(assertion).ok_or_else(|| refused("not a JWT"))?;
    let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let Some(client) = idp.config.client(issuer).filter(|c| !c.jwks.is_empty()) else {
        return Err(refused("iss is not a client with registered keys"));
    };
    let client_id = issuer.to_owned();
    if params.get("client_id").is_some_and(|id| id != client_id) {
        return Err(refused("client_id differs from iss"));
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| refused("bad header"))?;
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256
    ) {
        return Err(refused("alg must be RS256, PS256 or ES256"));
    }
    let jwk = match &header.kid {
        Some(kid) => client
            .jwks
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)),
        None if client.jwks.len() == 1 => client.jwks.first(),
        None => None,
    }
    .ok_or_else(|| refused("no registered key has this kid"))?;
    let key = serde_json::from_value::<Jwk>(jwk.clone())
        .ok()
        .and_then(|jwk| DecodingKey::from_jwk(&jwk).ok())
        .ok_or_else(|| refused("the registered key is unusable"))?;
    // The signature only: the claims are checked below by the IdP's clock.
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|_| refused("the signature does not verify with the registered key"))?;

    if claims.get("sub").and_then(Value::as_str) != Some(&client_id) {
        return Err(refused("sub must be the client id"));
    }
    let accepted = [
        idp.issuer.clone(),
        format!("{}/", idp.issuer),
        idp.endpoint("/token"),
        idp.endpoint("/par"),
    ];
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => accepted.contains(aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|a| a.as_str().is_some_and(|a| accepted.iter().any(|x| x == a))),
        _ => false,
    };
    if !aud_ok {
        return Err(refused("aud must name the issuer or the token endpoint"));
    }
    let now = idp.now();
    let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
        return Err(refused("exp is missing"));
    };
    if exp <= now {
        return Err(refused("expired"));
    }
    if exp > now + MAX_LIFETIME_SECS {
        return Err(refused("exp is too far in the future"));
    }
    if claims
        .get("iat")
        .and_then(Value::as_u64)
        .is_some_and(|iat| iat > now + 60)
    {
        return Err(refused("iat is in the future"));
    }
    let Some(jti) = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
    else {
        return Err(refused("jti is missing"));
    };
    {
        let mut store = idp.store();
        store.purge(now);
        if store
            .assertion_jtis
            .insert(format!("{client_id}\n{jti}"), exp)
            .is_some()
        {
            return Err(refused("jti was already used"));
        }
    }
    idp.counters.bump(Counter::ClientAssertions);
    Ok(client_id)
}

/// The claims of a JWT, before any check.
fn unverified_claims(jwt: &str) -> Option<serde_json::Map<String, Value>> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}
