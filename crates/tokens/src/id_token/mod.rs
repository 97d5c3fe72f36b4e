//! Validation of OpenID Connect id_tokens.
//!
//! [`IdTokenValidator::validate`] performs the checks of OIDC Core §3.1.3.7
//! on an id_token received at sign-in, in this order (the first failure is
//! reported as [`TokenError::InvalidIdToken`] with a short reason that never
//! contains the token):
//!
//! 1. **Shape.** A JWS in compact serialization: three base64url parts
//!    (encrypted id_tokens — five parts — are not supported), at most 64 KiB.
//! 2. **Algorithm.** The header's `alg` must be in the allowed list (default:
//!    `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`, `ES256`, `ES384`,
//!    `EdDSA`). `none` and the symmetric `HS*` algorithms are never accepted,
//!    even if listed. A header with `crit` is rejected (no extensions are
//!    understood).
//! 3. **Signature.** Verified with a key from the provider's JWKS
//!    ([`JwksCache::keys_for`]), selected by `kid` and compatible with `alg`
//!    (key type and curve), before any claim is looked at. Keys carried by
//!    the token itself (`jwk`, `jku`, `x5u`, `x5c` header parameters) are
//!    never used.
//! 4. **`iss`** equals the provider's issuer exactly.
//! 5. **`aud`** (a string or an array of strings) contains our `client_id`;
//!    every other audience must be one of the configured trusted audiences.
//! 6. **`azp`** is required when `aud` has several (distinct) values, and
//!    when present must equal our `client_id`.
//! 7. **`sub`** is present and non-empty.
//! 8. **`exp`** is present and `exp > now - leeway`.
//! 9. **`iat`** is present and `iat <= now + leeway`.
//! 10. **`nbf`**, when present, is `<= now + leeway`.
//! 11. **`nonce`**: when a nonce is expected, the claim must be present and
//!     equal to it (constant-time comparison).
//! 12. **`at_hash`**: when present and the access token is known, it must equal
//!     the base64url encoding of the left half of the hash of the access token,
//!     the hash being the one of the signature algorithm (SHA-256 for `*256`,
//!     SHA-384 for `*384`, SHA-512 for `*512` and `EdDSA`).
//!
//! Claims must have the right JSON type (`iss`, `sub`, `nonce`, `azp`, `sid`,
//! `at_hash` strings; `exp`, `iat`, `nbf`, `auth_time` non-negative numbers).
//!
//! [`IdTokenValidator::validate_refreshed`] adds the checks of OIDC Core §12.2
//! for an id_token returned by a refresh: same `iss`, `sub`, `aud` (as a set)
//! and `azp` as the session's original id_token, or the session ends. A
//! different `auth_time` or `nonce` (when both tokens carry one) does not
//! change who the user is — several providers put the user's latest sign-in
//! on any device into every refreshed id_token — so it is a logged warning
//! and the session keeps the original value, unless
//! [`with_strict_refresh`](IdTokenValidator::with_strict_refresh) makes it
//! fatal too.
//!
//! Times come from the validator's [`Clock`](crate::clock::Clock); the
//! tolerated clock skew (leeway) defaults to 60 seconds.

use std::collections::BTreeSet;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Header};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::clock::SharedClock;
use crate::error::TokenError;
use crate::jwks::JwksCache;
use crate::secret::{AccessToken, IdToken, constant_time_eq};

/// Largest id_token accepted, in bytes.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Default tolerated clock skew, in seconds.
const DEFAULT_LEEWAY: u64 = 60;

/// The claims of a validated id_token.
///
/// On input (deserialization), `aud` accepts a single string or an array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user's identifier at the provider.
    pub sub: String,
    /// Audiences (a single-string `aud` becomes a one-element list).
    #[serde(deserialize_with = "string_or_list")]
    pub aud: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// The nonce sent in the authorization request, echoed by the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authorized party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    /// The provider's session id (for logout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the user authenticated, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// Access token hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// Every claim as received (for the BFF's `/user` endpoint).
    #[serde(default)]
    pub all: Map<String, Value>,
}

fn string_or_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(aud) => vec![aud],
        OneOrMany::Many(auds) => auds,
    })
}

/// What the caller knows and expects of an id_token at validation time.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdTokenExpectations<'a> {
    /// The nonce sent in the authorization request; when `Some`, the token's
    /// `nonce` claim must be present and equal.
    pub nonce: Option<&'a str>,
    /// The access token issued alongside; when `Some` and the id_token has an
    /// `at_hash`, the hash must match.
    pub access_token: Option<&'a AccessToken>,
}

/// Validates id_tokens of one provider for one client.
///
/// See the [module documentation](self) for the list of checks.
#[derive(Debug, Clone)]
pub struct IdTokenValidator {
    issuer: String,
    client_id: String,
    clock: SharedClock,
    leeway: u64,
    allowed_algs: Vec<Algorithm>,
    trusted_audiences: Vec<String>,
    strict_refresh: bool,
}

/// The asymmetric signature algorithms accepted by default.
pub(crate) fn default_algs() -> Vec<Algorithm> {
    vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ]
}

fn invalid(reason: &str) -> TokenError {
    TokenError::InvalidIdToken(reason.into())
}

fn is_symmetric(alg: Algorithm) -> bool {
    alg.family() == AlgorithmFamily::Hmac
}

impl IdTokenValidator {
    /// A validator for tokens of `issuer` (the provider's discovery `issuer`)
    /// addressed to `client_id` (ours).
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        clock: SharedClock,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            clock,
            leeway: DEFAULT_LEEWAY,
            allowed_algs: default_algs(),
            trusted_audiences: Vec::new(),
            strict_refresh: false,
        }
    }

    /// Makes a refreshed id_token whose `auth_time` or `nonce` differs from
    /// the original's a failure (default: a logged warning; the original
    /// values are kept). `iss`, `sub`, `aud` and `azp` are always compared
    /// strictly.
    #[must_use]
    pub fn with_strict_refresh(mut self, strict: bool) -> Self {
        self.strict_refresh = strict;
        self
    }

    /// Sets the tolerated clock skew in seconds (default 60).
    #[must_use]
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Sets the accepted signature algorithms. Symmetric algorithms (`HS*`)
    /// are dropped from the list: they are never accepted.
    #[must_use]
    pub fn with_allowed_algs(mut self, algs: Vec<Algorithm>) -> Self {
        self.allowed_algs = algs.into_iter().filter(|alg| !is_symmetric(*alg)).collect();
        self
    }

    /// Sets the audiences tolerated in `aud` besides our `client_id`
    /// (default: none).
    #[must_use]
    pub fn with_trusted_audiences(mut self, auds: Vec<String>) -> Self {
        self.trusted_audiences = auds;
        self
    }

    /// Fully validates an id_token received at sign-in (OIDC Core §3.1.3.7)
    /// and returns its claims.
    ///
    /// # Errors
    ///
    /// [`TokenError::InvalidIdToken`] when any check fails (see the
    /// [module documentation](self)); [`TokenError::ProviderUnavailable`] when
    /// the provider's keys cannot be fetched.
    pub async fn validate(
        &self,
        token: &IdToken,
        jwks: &JwksCache,
        expected: IdTokenExpectations<'_>,
    ) -> Result<IdTokenClaims, TokenError> {
        let verified = verify_jws(token.secret(), jwks, &self.allowed_algs).await?;
        let alg = verified.alg;

        // Claims.
        let claims = parse_claims(verified.payload)?;
        self.check_claims(&claims, alg, expected)?;
        Ok(claims)
    }

    /// Extra checks for an id_token returned by a refresh (OIDC Core §12.2),
    /// given the claims of the session's original id_token: `iss`, `sub`,
    /// `aud` (as a set) and `azp` must be the same. A different `auth_time`
    /// or `nonce` (when both carry one) is logged and tolerated (the caller
    /// keeps the original values), or refused with
    /// [`with_strict_refresh`](Self::with_strict_refresh).
    ///
    /// Call [`validate`](Self::validate) first (with no expected nonce).
    ///
    /// # Errors
    ///
    /// [`TokenError::InvalidIdToken`] naming the claim that differs.
    pub fn validate_refreshed(
        &self,
        refreshed: &IdTokenClaims,
        original: &IdTokenClaims,
    ) -> Result<(), TokenError> {
        if refreshed.iss != original.iss {
            return Err(invalid("refreshed id_token has a different iss"));
        }
        if refreshed.sub != original.sub {
            return Err(invalid("refreshed id_token has a different sub"));
        }
        let set = |auds: &[String]| auds.iter().cloned().collect::<BTreeSet<_>>();
        if set(&refreshed.aud) != set(&original.aud) {
            return Err(invalid("refreshed id_token has a different aud"));
        }
        if refreshed.azp != original.azp {
            return Err(invalid("refreshed id_token has a different azp"));
        }
        if let (Some(new), Some(old)) = (refreshed.auth_time, original.auth_time)
            && new != old
        {
            if self.strict_refresh {
                return Err(invalid("refreshed id_token has a different auth_time"));
            }
            tracing::warn!(
                sub = %original.sub,
                original = old,
                refreshed = new,
                "refreshed id_token has a different auth_time; keeping the original"
            );
        }
        if let (Some(new), Some(old)) = (&refreshed.nonce, &original.nonce)
            && new != old
        {
            if self.strict_refresh {
                return Err(invalid("refreshed id_token has a different nonce"));
            }
            tracing::warn!(
                sub = %original.sub,
                "refreshed id_token has a different nonce; keeping the original"
            );
        }
        Ok(())
    }

    fn check_claims(
        &self,
        claims: &IdTokenClaims,
        alg: Algorithm,
        expected: IdTokenExpectations<'_>,
    ) -> Result<(), TokenError> {
        if claims.iss != self.issuer {
            return Err(invalid("issuer mismatch"));
        }

        if !claims.aud.contains(&self.client_id) {
            return Err(invalid("aud does not contain our client_id"));
        }
        if claims
            .aud
            .iter()
            .any(|aud| *aud != self.client_id && !self.trusted_audiences.contains(aud))
        {
            return Err(invalid("aud contains an untrusted audience"));
        }
        let distinct = claims.aud.iter().collect::<BTreeSet<_>>().len();
        match &claims.azp {
            None if distinct > 1 => {
                return Err(invalid("azp is required with several audiences"));
            }
            Some(azp) if *azp != self.client_id => return Err(invalid("azp mismatch")),
            _ => {}
        }

        if claims.sub.is_empty() {
            return Err(invalid("empty sub"));
        }

        let now = self.clock.now_unix();
        if claims.exp.saturating_add(self.leeway) <= now {
            return Err(invalid("expired"));
        }
        if claims.iat > now.saturating_add(self.leeway) {
            return Err(invalid("issued in the future"));
        }
        match numeric_date(&claims.all, "nbf")? {
            Some(nbf) if nbf > now.saturating_add(self.leeway) => {
                return Err(invalid("not yet valid"));
            }
            _ => {}
        }

        if let Some(expected_nonce) = expected.nonce {
            match &claims.nonce {
                None => return Err(invalid("missing nonce")),
                Some(nonce) if !constant_time_eq(nonce.as_bytes(), expected_nonce.as_bytes()) => {
                    return Err(invalid("nonce mismatch"));
                }
                Some(_) => {}
            }
        }

        if let (Some(at_hash), Some(access_token)) = (&claims.at_hash, expected.access_token) {
            let computed = token_hash(access_token.secret(), alg)?;
            if !constant_time_eq(at_hash.as_bytes(), computed.as_bytes()) {
                return Err(invalid("at_hash mismatch"));
            }
        }
        Ok(())
    }
}

/// A compact JWS whose signature verified with one of the provider's keys.
pub(crate) struct VerifiedJws {
    /// The verified signature algorithm.
    pub(crate) alg: Algorithm,
    /// The protected header.
    pub(crate) header: Header,
    /// The payload, a JSON object (not yet checked in any way).
    pub(crate) payload: Map<String, Value>,
}

/// Steps 1–3 of the [module documentation](self), shared by id_tokens and
/// back-channel logout tokens: shape, algorithm (never `none` or `HS*`, and
/// one of `allowed_algs`), no `crit`, and the signature, verified with a key
/// of the provider's JWKS before the payload is even decoded.
pub(crate) async fn verify_jws(
    token: &str,
    jwks: &JwksCache,
    allowed_algs: &[Algorithm],
) -> Result<VerifiedJws, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token is too large"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let (header_b64, payload_b64, signature_b64) = match parts.as_slice() {
        [header, payload, signature] => (*header, *payload, *signature),
        [_, _, _, _, _] => return Err(invalid("encrypted id_tokens are not supported")),
        _ => return Err(invalid("not a JWS in compact serialization")),
    };
    if signature_b64.is_empty() {
        return Err(invalid("unsigned token"));
    }

    // Algorithm and header.
    let header_json = decode_json_object(header_b64).ok_or_else(|| invalid("malformed header"))?;
    let alg = check_alg(&header_json, allowed_algs)?;
    if header_json.contains_key("crit") {
        return Err(invalid("unsupported critical header parameters"));
    }
    let header: Header = serde_json::from_value(Value::Object(header_json))
        .map_err(|_| invalid("malformed header"))?;
    debug_assert_eq!(header.alg, alg);

    // Signature.
    let message = &token[..header_b64.len() + 1 + payload_b64.len()];
    let verify = |keys: &[std::sync::Arc<jsonwebtoken::DecodingKey>]| {
        keys.iter().any(|key| {
            matches!(
                jsonwebtoken::crypto::verify(signature_b64, message.as_bytes(), key, alg),
                Ok(true)
            )
        })
    };
    let mut verified = verify(&jwks.keys_for(&header).await?);
    // Without a `kid` an unknown key cannot be noticed by name: the provider
    // may have rotated. Fetch the set once more (rate limited) and retry.
    if !verified && header.kid.is_none() && jwks.refresh().await {
        verified = verify(&jwks.keys_for(&header).await?);
    }
    if !verified {
        return Err(invalid("signature verification failed"));
    }

    let payload = decode_json_object(payload_b64).ok_or_else(|| invalid("malformed payload"))?;
    Ok(VerifiedJws {
        alg,
        header,
        payload,
    })
}

/// The header's `alg`, if it is acceptable.
fn check_alg(
    header: &Map<String, Value>,
    allowed_algs: &[Algorithm],
) -> Result<Algorithm, TokenError> {
    let name = match header.get("alg") {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => return Err(invalid("malformed alg")),
        None => return Err(invalid("missing alg")),
    };
    if name.eq_ignore_ascii_case("none") {
        return Err(invalid("alg none is not allowed"));
    }
    let alg = Algorithm::from_str(name).map_err(|_| invalid("unsupported alg"))?;
    if is_symmetric(alg) {
        return Err(invalid("symmetric algs are not allowed"));
    }
    if !allowed_algs.contains(&alg) {
        return Err(TokenError::InvalidIdToken(
            format!("alg {alg:?} is not allowed").into(),
        ));
    }
    Ok(alg)
}

/// `base64url(left half of hash(value))` with the hash of the signature
/// algorithm (OIDC Core §3.1.3.6 `at_hash`, §3.3.2.11 `c_hash`).
fn token_hash(value: &str, alg: Algorithm) -> Result<String, TokenError> {
    use aws_lc_rs::digest;
    let hash = match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => &digest::SHA256,
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => &digest::SHA384,
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => &digest::SHA512,
        _ => return Err(invalid("unsupported alg for at_hash")),
    };
    let digest = digest::digest(hash, value.as_bytes());
    let bytes = digest.as_ref();
    Ok(URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2]))
}

/// Decodes one base64url JWS part holding a JSON object. An object with a
/// duplicated member name (at any depth) is refused: parsers differ on which
/// of the two counts (RFC 7515 §5.2, RFC 7519 §7.2), so a token could mean
/// one thing to the provider and another to us.
fn decode_json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice::<UniqueKeys>(&bytes).ok()?.0 {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A JSON value whose objects have no duplicated member names.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::Bool(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::String(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::String(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::Null))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(UniqueKeys(Value::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicated member name"));
            }
        }
        Ok(UniqueKeys(Value::Object(object)))
    }
}

/// A NumericDate claim: a non-negative JSON number (fractions are truncated).
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, TokenError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let malformed = || TokenError::InvalidIdToken(format!("malformed {name}").into());
    let Value::Number(number) = value else {
        return Err(malformed());
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        // `u64::MAX as f64` rounds up to 2^64, so `<` keeps the cast exact-or-truncating.
        Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(malformed()),
    }
}

pub(crate) fn required_date(claims: &Map<String, Value>, name: &str) -> Result<u64, TokenError> {
    numeric_date(claims, name)?
        .ok_or_else(|| TokenError::InvalidIdToken(format!("missing {name}").into()))
}

pub(crate) fn optional_string(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::InvalidIdToken(
            format!("malformed {name}").into(),
        )),
    }
}

pub(crate) fn required_string(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<String, TokenError> {
    optional_string(claims, name)?
        .ok_or_else(|| TokenError::InvalidIdToken(format!("missing {name}").into()))
}

/// Extracts the registered claims, checking their JSON types.
fn parse_claims(all: Map<String, Value>) -> Result<IdTokenClaims, TokenError> {
    let aud = match all.get("aud") {
        None => return Err(invalid("missing aud")),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(values)) => values
            .iter()
            .map(|value| value.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("malformed aud"))?,
        Some(_) => return Err(invalid("malformed aud")),
    };
    if aud.is_empty() {
        return Err(invalid("empty aud"));
    }
    Ok(IdTokenClaims {
        iss: required_string(&all, "iss")?,
        sub: required_string(&all, "sub")?,
        aud,
        exp: required_date(&all, "exp")?,
        iat: required_date(&all, "iat")?,
        nonce: optional_string(&all, "nonce")?,
        azp: optional_string(&all, "azp")?,
        sid: optional_string(&all, "sid")?,
        auth_time: numeric_date(&all, "auth_time")?,
        at_hash: optional_string(&all, "at_hash")?,
        all,
    })
}

#[cfg(test)]
mod tests;
