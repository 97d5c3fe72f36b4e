//! Minting JWTs: access tokens, id tokens (with optional faults) and
//! back-channel logout tokens.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::faults::IdTokenFault;
use crate::keys::{SigningKey, b64url};

/// The issuer used by the `WrongIssuer` faults.
pub(crate) const WRONG_ISSUER: &str = "http://wrong-issuer.invalid";

/// Signs `claims` with `key` (header `alg`, `kid` and the given `typ`).
pub(crate) fn sign(key: &SigningKey, typ: &str, claims: &Value) -> String {
    let mut header = Header::new(key.alg.jwt_alg());
    header.kid = Some(key.kid.clone());
    header.typ = Some(typ.to_owned());
    encode(&header, claims, key.encoding_key())
}

fn encode(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    // Signing JSON claims with a key we generated ourselves cannot fail.
    jsonwebtoken::encode(header, claims, key).expect("signing with the IdP's own key")
}

/// The OIDC `at_hash` of an access token (left half of its SHA-256, base64url).
pub(crate) fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    b64url(&digest[..16])
}

/// Signs id token `claims`, corrupted according to `fault`.
pub(crate) fn id_token(
    key: &SigningKey,
    mut claims: Map<String, Value>,
    fault: Option<IdTokenFault>,
    now: u64,
) -> String {
    use IdTokenFault as F;
    match fault {
        Some(F::WrongIssuer) => {
            claims.insert("iss".into(), WRONG_ISSUER.into());
        }
        Some(F::MissingIssuer) => {
            claims.remove("iss");
        }
        Some(F::WrongAudience) => {
            claims.insert("aud".into(), "some-other-client".into());
        }
        Some(F::MissingAudience) => {
            claims.remove("aud");
        }
        Some(F::ExtraAudience) => {
            let aud = claims.get("aud").cloned().unwrap_or(Value::Null);
            claims.insert("aud".into(), json!([aud, "untrusted-extra-audience"]));
        }
        Some(F::WrongAzp) => {
            claims.insert("azp".into(), "some-other-client".into());
        }
        Some(F::MissingAzp) => {
            claims.remove("azp");
        }
        Some(F::MissingSub) => {
            claims.remove("sub");
        }
        Some(F::DifferentSub) => {
            claims.insert("sub".into(), "different-subject".into());
        }
        Some(F::MissingIat) => {
            claims.remove("iat");
        }
        Some(F::Expired) => {
            claims.insert("iat".into(), now.saturating_sub(600).into());
            claims.insert("exp".into(), now.saturating_sub(300).into());
        }
        Some(F::WrongNonce) => {
            claims.insert("nonce".into(), "wrong-nonce".into());
        }
        Some(F::MissingNonce) => {
            claims.remove("nonce");
        }
        Some(F::WrongAtHash) => {
            claims.insert("at_hash".into(), at_hash("not-the-access-token").into());
        }
        _ => {}
    }
    let claims = Value::Object(claims);
    let mut header = Header::new(key.alg.jwt_alg());
    header.kid = Some(key.kid.clone());
    match fault {
        Some(F::NoKid) => header.kid = None,
        Some(F::UnknownKid) => header.kid = Some("unknown-kid".into()),
        Some(F::AlgNone) => {
            let header = json!({"alg": "none", "typ": "JWT"});
            return format!(
                "{}.{}.",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
        }
        Some(F::Hs256WithPublicKey) => {
            header.alg = Algorithm::HS256;
            return encode(
                &header,
                &claims,
                &EncodingKey::from_secret(key.public_pem().as_bytes()),
            );
        }
        Some(F::BadSignature) => {
            return corrupt_signature(&encode(&header, &claims, key.encoding_key()));
        }
        _ => {}
    }
    encode(&header, &claims, key.encoding_key())
}

fn corrupt_signature(token: &str) -> String {
    use base64::Engine;
    let (signing_input, sig) = token.rsplit_once('.').unwrap_or((token, ""));
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap_or_default();
    if let Some(b) = sig.first_mut() {
        *b ^= 0x01;
    }
    format!("{signing_input}.{}", b64url(&sig))
}

/// An OIDC back-channel logout token (`typ: logout+jwt`, valid 2 minutes).
pub(crate) fn logout_token(
    key: &SigningKey,
    issuer: &str,
    sub: Option<&str>,
    sid: Option<&str>,
    audience: &str,
    now: u64,
) -> String {
    let mut claims = json!({
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + 120,
        "jti": crate::random_token(16),
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
    });
    if let Some(sub) = sub {
        claims["sub"] = sub.into();
    }
    if let Some(sid) = sid {
        claims["sid"] = sid.into();
    }
    sign(key, "logout+jwt", &claims)
}
