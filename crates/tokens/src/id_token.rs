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
use crate::secret::{AccessToken, IdToken};

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

/// Compares two byte strings in time independent of their contents (the
/// length may leak).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
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
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::jwks::test_support::*;

    const NOW: u64 = 1_700_000_000;
    const ISSUER: &str = "https://idp.example.com";
    const CLIENT: &str = "bff-client";

    struct Fixture {
        clock: ManualClock,
        validator: IdTokenValidator,
        jwks: JwksCache,
        key: TestKey,
        server: JwksServer,
    }

    impl Fixture {
        async fn new() -> Self {
            Self::with_keys(rsa_key("rsa-1"), &[]).await
        }

        /// Signs with `key`; the JWKS serves `key` and `extra`.
        async fn with_keys(key: TestKey, extra: &[&TestKey]) -> Self {
            let mut keys = vec![&key];
            keys.extend_from_slice(extra);
            let server = JwksServer::start(jwks_json(&keys)).await;
            let clock = ManualClock::new(NOW);
            let jwks = JwksCache::new(
                server.url.clone(),
                http_client(),
                Arc::new(clock.clone()),
                Duration::from_secs(60),
            );
            let validator = IdTokenValidator::new(ISSUER, CLIENT, Arc::new(clock.clone()));
            Self {
                clock,
                validator,
                jwks,
                key,
                server,
            }
        }

        fn claims() -> Value {
            json!({
                "iss": ISSUER,
                "sub": "user-42",
                "aud": CLIENT,
                "exp": NOW + 300,
                "iat": NOW,
                "nonce": "n-0S6_WzA2Mj",
                "sid": "session-1",
                "auth_time": NOW - 10,
                "name": "Jane Doe",
            })
        }

        fn sign_with(key: &TestKey, claims: &Value) -> IdToken {
            let mut header = Header::new(key.alg);
            header.kid = Some(key.kid.clone());
            IdToken::new(jsonwebtoken::encode(&header, claims, &key.encoding).unwrap())
        }

        fn sign(&self, claims: &Value) -> IdToken {
            Self::sign_with(&self.key, claims)
        }

        async fn validate(&self, token: &IdToken) -> Result<IdTokenClaims, TokenError> {
            self.validate_with(&self.validator, token, Self::expect())
                .await
        }

        async fn validate_with(
            &self,
            validator: &IdTokenValidator,
            token: &IdToken,
            expected: IdTokenExpectations<'_>,
        ) -> Result<IdTokenClaims, TokenError> {
            validator.validate(token, &self.jwks, expected).await
        }

        fn expect() -> IdTokenExpectations<'static> {
            IdTokenExpectations {
                nonce: Some("n-0S6_WzA2Mj"),
                access_token: None,
            }
        }

        /// Validates the default claims modified by `edit`.
        async fn validate_edited(
            &self,
            edit: impl FnOnce(&mut Value),
        ) -> Result<IdTokenClaims, TokenError> {
            let mut claims = Self::claims();
            edit(&mut claims);
            self.validate(&self.sign(&claims)).await
        }
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[track_caller]
    fn assert_invalid(result: Result<IdTokenClaims, TokenError>, needle: &str) {
        match result {
            Err(TokenError::InvalidIdToken(msg)) => {
                assert!(msg.contains(needle), "expected {needle:?}, got {msg:?}");
            }
            other => panic!("expected InvalidIdToken({needle:?}), got {other:?}"),
        }
    }

    #[tokio::test]
    async fn good_token_is_accepted() {
        let f = Fixture::new().await;
        let claims = f.validate(&f.sign(&Fixture::claims())).await.unwrap();
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.sub, "user-42");
        assert_eq!(claims.aud, vec![CLIENT.to_owned()]);
        assert_eq!(claims.exp, NOW + 300);
        assert_eq!(claims.iat, NOW);
        assert_eq!(claims.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
        assert_eq!(claims.sid.as_deref(), Some("session-1"));
        assert_eq!(claims.auth_time, Some(NOW - 10));
        assert_eq!(claims.azp, None);
        assert_eq!(claims.at_hash, None);
        assert_eq!(claims.all["name"], "Jane Doe");
        assert_eq!(claims.all.len(), 9);
    }

    #[tokio::test]
    async fn every_rsa_alg_is_accepted_by_default() {
        let f = Fixture::new().await;
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ] {
            let mut header = Header::new(alg);
            header.kid = Some("rsa-1".into());
            let token = IdToken::new(
                jsonwebtoken::encode(&header, &Fixture::claims(), &f.key.encoding).unwrap(),
            );
            // The JWK names RS256, so other algs need a JWK without `alg`.
            if alg == Algorithm::RS256 {
                f.validate(&token).await.unwrap();
            } else {
                assert_invalid(f.validate(&token).await, "no matching key");
            }
        }

        // A JWK without `alg` serves every RSA alg.
        let mut key = rsa_key("rsa-any");
        key.jwk.as_object_mut().unwrap().remove("alg");
        let f = Fixture::with_keys(key, &[]).await;
        for alg in [Algorithm::RS384, Algorithm::PS256, Algorithm::PS512] {
            let mut header = Header::new(alg);
            header.kid = Some("rsa-any".into());
            let token = IdToken::new(
                jsonwebtoken::encode(&header, &Fixture::claims(), &f.key.encoding).unwrap(),
            );
            f.validate(&token).await.unwrap();
        }
    }

    #[tokio::test]
    async fn es256_token_is_accepted() {
        let f = Fixture::with_keys(ec_key("ec-1"), &[]).await;
        let claims = f.validate(&f.sign(&Fixture::claims())).await.unwrap();
        assert_eq!(claims.sub, "user-42");
    }

    #[tokio::test]
    async fn eddsa_token_is_accepted() {
        let f = Fixture::with_keys(ed_key("ed-1"), &[]).await;
        f.validate(&f.sign(&Fixture::claims())).await.unwrap();
    }

    #[tokio::test]
    async fn token_without_kid_is_verified_with_the_fitting_key() {
        let rsa = rsa_key("rsa-1");
        let f = Fixture::with_keys(ec_key("ec-1"), &[&rsa]).await;
        let token = IdToken::new(
            jsonwebtoken::encode(
                &Header::new(Algorithm::ES256),
                &Fixture::claims(),
                &f.key.encoding,
            )
            .unwrap(),
        );
        f.validate(&token).await.unwrap();
    }

    #[tokio::test]
    async fn token_without_kid_after_key_rotation_triggers_one_refetch() {
        // The provider rotates to a new key and signs without a `kid`: the
        // cached (old) key fails, one rate-limited refetch finds the new one.
        let f = Fixture::new().await;
        f.validate(&f.sign(&Fixture::claims())).await.unwrap();
        let rotated = other_rsa_key("rsa-2");
        f.server.set_body(jwks_json(&[&rotated]));
        let unnamed = |claims: &Value| {
            IdToken::new(
                jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &rotated.encoding)
                    .unwrap(),
            )
        };
        f.validate(&unnamed(&Fixture::claims())).await.unwrap();
        assert_eq!(f.jwks.fetch_count(), 2);
        // A forged no-kid token right after cannot force another fetch.
        let forged = IdToken::new(
            jsonwebtoken::encode(
                &Header::new(Algorithm::RS256),
                &Fixture::claims(),
                &rsa_key("rsa-9").encoding,
            )
            .unwrap(),
        );
        assert_invalid(f.validate(&forged).await, "signature");
        assert_eq!(f.jwks.fetch_count(), 2, "rate limited");
    }

    #[tokio::test]
    async fn keys_are_fetched_again_after_their_maximum_age() {
        let f = Fixture::new().await;
        f.validate(&f.sign(&Fixture::claims())).await.unwrap();
        assert_eq!(f.jwks.fetch_count(), 1);
        // The provider withdraws the key; an hour later the cache notices.
        f.server.set_body(jwks_json(&[&other_rsa_key("rsa-2")]));
        f.clock.advance(Duration::from_secs(3600));
        let mut claims = Fixture::claims();
        claims["exp"] = json!(NOW + 3600 + 300);
        claims["iat"] = json!(NOW + 3600);
        assert!(f.validate(&f.sign(&claims)).await.is_err());
        assert_eq!(f.jwks.fetch_count(), 2);
    }

    #[tokio::test]
    async fn signature_by_another_key_is_rejected() {
        let f = Fixture::new().await;
        // Same kid as the published key, different private key.
        let attacker = other_rsa_key("rsa-1");
        let token = Fixture::sign_with(&attacker, &Fixture::claims());
        assert_invalid(f.validate(&token).await, "signature");
    }

    #[tokio::test]
    async fn tampered_payload_is_rejected() {
        let f = Fixture::new().await;
        let token = f.sign(&Fixture::claims());
        let parts: Vec<&str> = token.secret().split('.').collect();
        let mut claims = Fixture::claims();
        claims["sub"] = "admin".into();
        let forged = IdToken::new(format!("{}.{}.{}", parts[0], b64(&claims), parts[2]));
        assert_invalid(f.validate(&forged).await, "signature");
    }

    #[tokio::test]
    async fn alg_none_is_rejected() {
        let f = Fixture::new().await;
        for alg in ["none", "None", "NONE"] {
            let header = json!({ "alg": alg, "typ": "JWT", "kid": "rsa-1" });
            for sig in ["", "AAAA"] {
                let token = IdToken::new(format!(
                    "{}.{}.{sig}",
                    b64(&header),
                    b64(&Fixture::claims())
                ));
                let err = f.validate(&token).await.unwrap_err();
                assert!(matches!(err, TokenError::InvalidIdToken(_)), "{err:?}");
            }
        }
        let token = IdToken::new(format!(
            "{}.{}.x",
            b64(&json!({ "alg": "none" })),
            b64(&Fixture::claims())
        ));
        assert_invalid(f.validate(&token).await, "alg none");
        assert_eq!(f.jwks.fetch_count(), 0, "rejected before any key lookup");
    }

    #[tokio::test]
    async fn hs256_signed_with_the_public_key_is_rejected() {
        let f = Fixture::new().await;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        for secret in [
            rsa_public_der(),
            f.key.jwk["n"].as_str().unwrap().as_bytes().to_vec(),
        ] {
            let token = IdToken::new(
                jsonwebtoken::encode(
                    &header,
                    &Fixture::claims(),
                    &EncodingKey::from_secret(&secret),
                )
                .unwrap(),
            );
            assert_invalid(f.validate(&token).await, "symmetric");
            // Even when a careless configuration lists HS256.
            let lax = f
                .validator
                .clone()
                .with_allowed_algs(vec![Algorithm::HS256, Algorithm::RS256]);
            assert_invalid(
                f.validate_with(&lax, &token, Fixture::expect()).await,
                "symmetric",
            );
        }
    }

    #[tokio::test]
    async fn alg_outside_the_allowed_list_is_rejected() {
        let f = Fixture::with_keys(ec_key("ec-1"), &[]).await;
        let token = f.sign(&Fixture::claims());
        let strict = f
            .validator
            .clone()
            .with_allowed_algs(vec![Algorithm::RS256]);
        assert_invalid(
            f.validate_with(&strict, &token, Fixture::expect()).await,
            "not allowed",
        );
        let empty = f
            .validator
            .clone()
            .with_allowed_algs(vec![Algorithm::HS512]);
        assert_invalid(
            f.validate_with(&empty, &token, Fixture::expect()).await,
            "not allowed",
        );
    }

    #[tokio::test]
    async fn alg_confusion_across_key_types_is_rejected() {
        // Header claims ES256 but names the RSA key: no key fits.
        let ec = ec_key("rsa-1");
        let f = Fixture::new().await;
        let token = Fixture::sign_with(&ec, &Fixture::claims());
        assert_invalid(f.validate(&token).await, "no matching key");
    }

    #[tokio::test]
    async fn unknown_or_malformed_alg_is_rejected() {
        let f = Fixture::new().await;
        for header in [
            json!({ "alg": "RS1" }),
            json!({ "alg": 256 }),
            json!({ "typ": "JWT" }),
            json!({ "alg": "RS256", "kid": 7 }),
            json!({ "alg": "RS256", "crit": ["exp"] }),
        ] {
            let token = IdToken::new(format!("{}.{}.AAAA", b64(&header), b64(&Fixture::claims())));
            let err = f.validate(&token).await.unwrap_err();
            assert!(
                matches!(err, TokenError::InvalidIdToken(_)),
                "{header}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_tokens_are_rejected_without_panicking() {
        let f = Fixture::new().await;
        let good = f.sign(&Fixture::claims());
        let parts: Vec<&str> = good.secret().split('.').collect();
        let header = parts[0];
        let inputs = [
            String::new(),
            ".".into(),
            "..".into(),
            "a.b.c".into(),
            "a.b.c.d".into(),
            "a.b.c.d.e".into(),
            "!!!.###.$$$".into(),
            header.to_string(),
            format!("{header}.{}", parts[1]),
            format!("{header}.{}.", parts[1]),
            format!("{header}.!!!.{}", parts[2]),
            format!("{header}.{}.!!!", parts[1]),
            format!("{}.{}.{}", b64(&json!([1, 2])), parts[1], parts[2]),
            format!("{}=.{}.{}", header, parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
                parts[1],
                parts[2]
            ),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ];
        for input in inputs {
            let err = f.validate(&IdToken::new(input.clone())).await.unwrap_err();
            assert!(
                matches!(err, TokenError::InvalidIdToken(_)),
                "{input:.40}: {err:?}"
            );
            assert!(
                input.len() < 8 || !err.to_string().contains(&input),
                "error message leaks the token"
            );
        }
    }

    #[tokio::test]
    async fn validly_signed_garbage_payloads_are_rejected() {
        let f = Fixture::new().await;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("rsa-1".into());
        let header_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        for payload in [
            b"not json".to_vec(),
            b"[1,2,3]".to_vec(),
            b"\"string\"".to_vec(),
            b"{\"iss\":".to_vec(),
            vec![0xff, 0x00, 0x80],
        ] {
            let message = format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(&payload));
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &f.key.encoding, Algorithm::RS256)
                    .unwrap();
            let token = IdToken::new(format!("{message}.{signature}"));
            assert_invalid(f.validate(&token).await, "malformed payload");
        }
    }

    #[tokio::test]
    async fn claims_of_the_wrong_type_are_rejected() {
        let f = Fixture::new().await;
        let cases: [(&str, Value); 14] = [
            ("iss", json!(1)),
            ("sub", json!(["user"])),
            ("aud", json!(5)),
            ("aud", json!([CLIENT, 5])),
            ("aud", json!({ "a": 1 })),
            ("exp", json!("tomorrow")),
            ("exp", json!(-1)),
            ("exp", json!(1e300)),
            ("iat", json!(null)),
            ("nonce", json!(12)),
            ("azp", json!(true)),
            ("at_hash", json!(1)),
            ("auth_time", json!("x")),
            ("nbf", json!("x")),
        ];
        for (name, value) in cases {
            let result = f
                .validate_edited(|c| {
                    c[name] = value.clone();
                })
                .await;
            assert_invalid(result, name);
        }
    }

    #[tokio::test]
    async fn fractional_and_huge_dates_do_not_panic() {
        let f = Fixture::new().await;
        let claims = f
            .validate_edited(|c| {
                c["exp"] = json!((NOW + 300) as f64 + 0.5);
                c["iat"] = json!(NOW as f64 - 0.25);
            })
            .await
            .unwrap();
        assert_eq!(claims.exp, NOW + 300);
        assert_eq!(claims.iat, NOW - 1);
        let claims = f
            .validate_edited(|c| {
                c["exp"] = json!(u64::MAX);
            })
            .await
            .unwrap();
        assert_eq!(claims.exp, u64::MAX);
        assert_invalid(
            f.validate_edited(|c| {
                c["iat"] = json!(u64::MAX);
            })
            .await,
            "future",
        );
    }

    #[tokio::test]
    async fn wrong_or_missing_iss_is_rejected() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| c["iss"] = "https://evil.example.com".into())
                .await,
            "issuer mismatch",
        );
        assert_invalid(
            f.validate_edited(|c| c["iss"] = format!("{ISSUER}/").into())
                .await,
            "issuer mismatch",
        );
        assert_invalid(
            f.validate_edited(|c| {
                c.as_object_mut().unwrap().remove("iss");
            })
            .await,
            "missing iss",
        );
    }

    #[tokio::test]
    async fn wrong_or_missing_aud_is_rejected() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| c["aud"] = "someone-else".into())
                .await,
            "client_id",
        );
        assert_invalid(
            f.validate_edited(|c| c["aud"] = json!(["someone-else"]))
                .await,
            "client_id",
        );
        assert_invalid(
            f.validate_edited(|c| c["aud"] = json!([])).await,
            "empty aud",
        );
        assert_invalid(
            f.validate_edited(|c| {
                c.as_object_mut().unwrap().remove("aud");
            })
            .await,
            "missing aud",
        );
        // An array holding just our client id is fine.
        let claims = f
            .validate_edited(|c| c["aud"] = json!([CLIENT]))
            .await
            .unwrap();
        assert_eq!(claims.aud, vec![CLIENT.to_owned()]);
    }

    #[tokio::test]
    async fn extra_audiences_must_be_trusted() {
        let f = Fixture::new().await;
        let edit = |c: &mut Value| {
            c["aud"] = json!([CLIENT, "https://api.example.com"]);
            c["azp"] = CLIENT.into();
        };
        assert_invalid(f.validate_edited(edit).await, "untrusted audience");

        let trusting = f
            .validator
            .clone()
            .with_trusted_audiences(vec!["https://api.example.com".into()]);
        let mut claims = Fixture::claims();
        edit(&mut claims);
        let validated = f
            .validate_with(&trusting, &f.sign(&claims), Fixture::expect())
            .await
            .unwrap();
        assert_eq!(validated.aud.len(), 2);

        // A trusted audience alone is not enough: our client id must be there.
        claims["aud"] = json!(["https://api.example.com"]);
        assert_invalid(
            f.validate_with(&trusting, &f.sign(&claims), Fixture::expect())
                .await,
            "client_id",
        );
    }

    #[tokio::test]
    async fn several_audiences_require_azp() {
        let f = Fixture::new().await;
        let trusting = f
            .validator
            .clone()
            .with_trusted_audiences(vec!["other".into()]);
        let mut claims = Fixture::claims();
        claims["aud"] = json!([CLIENT, "other"]);
        assert_invalid(
            f.validate_with(&trusting, &f.sign(&claims), Fixture::expect())
                .await,
            "azp is required",
        );
        claims["azp"] = CLIENT.into();
        f.validate_with(&trusting, &f.sign(&claims), Fixture::expect())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn azp_must_be_our_client() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| c["azp"] = "other-client".into())
                .await,
            "azp mismatch",
        );
        let claims = f
            .validate_edited(|c| c["azp"] = CLIENT.into())
            .await
            .unwrap();
        assert_eq!(claims.azp.as_deref(), Some(CLIENT));
    }

    #[tokio::test]
    async fn missing_or_empty_sub_is_rejected() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| {
                c.as_object_mut().unwrap().remove("sub");
            })
            .await,
            "missing sub",
        );
        assert_invalid(
            f.validate_edited(|c| c["sub"] = "".into()).await,
            "empty sub",
        );
    }

    #[tokio::test]
    async fn exp_is_checked_with_leeway() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| {
                c.as_object_mut().unwrap().remove("exp");
            })
            .await,
            "missing exp",
        );
        // Expired well beyond the leeway.
        assert_invalid(
            f.validate_edited(|c| c["exp"] = (NOW - 61).into()).await,
            "expired",
        );
        assert_invalid(
            f.validate_edited(|c| c["exp"] = (NOW - 60).into()).await,
            "expired",
        );
        // Expired, but within the 60 s leeway.
        f.validate_edited(|c| c["exp"] = (NOW - 59).into())
            .await
            .unwrap();
        f.validate_edited(|c| c["exp"] = NOW.into()).await.unwrap();

        // Time moves on.
        let token = f.sign(&Fixture::claims());
        f.clock.advance(Duration::from_secs(300 + 59));
        f.validate(&token).await.unwrap();
        f.clock.advance(Duration::from_secs(1));
        assert_invalid(f.validate(&token).await, "expired");

        // A custom leeway.
        let strict = f.validator.clone().with_leeway(0);
        f.clock.set(NOW + 299);
        f.validate_with(&strict, &token, Fixture::expect())
            .await
            .unwrap();
        f.clock.set(NOW + 300);
        assert_invalid(
            f.validate_with(&strict, &token, Fixture::expect()).await,
            "expired",
        );
    }

    #[tokio::test]
    async fn iat_is_required_and_not_in_the_future() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| {
                c.as_object_mut().unwrap().remove("iat");
            })
            .await,
            "missing iat",
        );
        assert_invalid(
            f.validate_edited(|c| c["iat"] = (NOW + 61).into()).await,
            "future",
        );
        f.validate_edited(|c| c["iat"] = (NOW + 60).into())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn nbf_in_the_future_is_rejected() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| c["nbf"] = (NOW + 61).into()).await,
            "not yet valid",
        );
        f.validate_edited(|c| c["nbf"] = (NOW + 60).into())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn nonce_is_checked_when_expected() {
        let f = Fixture::new().await;
        assert_invalid(
            f.validate_edited(|c| c["nonce"] = "n-other".into()).await,
            "nonce mismatch",
        );
        assert_invalid(
            f.validate_edited(|c| c["nonce"] = "n-0S6_WzA2M".into())
                .await,
            "nonce mismatch",
        );
        assert_invalid(
            f.validate_edited(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            })
            .await,
            "missing nonce",
        );
        // No nonce expected (e.g. a refreshed id_token): present or not, fine.
        let mut claims = Fixture::claims();
        let no_nonce = IdTokenExpectations::default();
        f.validate_with(&f.validator, &f.sign(&claims), no_nonce)
            .await
            .unwrap();
        claims.as_object_mut().unwrap().remove("nonce");
        f.validate_with(&f.validator, &f.sign(&claims), no_nonce)
            .await
            .unwrap();
    }

    #[test]
    fn at_hash_matches_the_oidc_core_example() {
        // OIDC Core A.3: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
        // signed with RS256 has at_hash "77QmUPtjPfzWtF2AnpK9RQ".
        assert_eq!(
            token_hash(
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y",
                Algorithm::RS256
            )
            .unwrap(),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(token_hash("x", Algorithm::ES384).unwrap().len(), 32);
        assert_eq!(token_hash("x", Algorithm::EdDSA).unwrap().len(), 43);
        assert!(token_hash("x", Algorithm::HS256).is_err());
    }

    #[tokio::test]
    async fn at_hash_is_checked_when_present() {
        let f = Fixture::new().await;
        let access_token = AccessToken::new("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y");
        let expected = IdTokenExpectations {
            nonce: Some("n-0S6_WzA2Mj"),
            access_token: Some(&access_token),
        };
        let mut claims = Fixture::claims();
        claims["at_hash"] = "77QmUPtjPfzWtF2AnpK9RQ".into();
        let validated = f
            .validate_with(&f.validator, &f.sign(&claims), expected)
            .await
            .unwrap();
        assert_eq!(validated.at_hash.as_deref(), Some("77QmUPtjPfzWtF2AnpK9RQ"));

        claims["at_hash"] = "77QmUPtjPfzWtF2AnpK9RR".into();
        assert_invalid(
            f.validate_with(&f.validator, &f.sign(&claims), expected)
                .await,
            "at_hash mismatch",
        );
        // Without the access token at hand, at_hash cannot be checked.
        f.validate_with(&f.validator, &f.sign(&claims), Fixture::expect())
            .await
            .unwrap();
        // Absent at_hash is fine (authorization code flow).
        claims.as_object_mut().unwrap().remove("at_hash");
        f.validate_with(&f.validator, &f.sign(&claims), expected)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn at_hash_uses_the_hash_of_the_alg() {
        let f = Fixture::with_keys(ec_key("ec-1"), &[]).await;
        let access_token = AccessToken::new("an-access-token");
        let expected = IdTokenExpectations {
            nonce: None,
            access_token: Some(&access_token),
        };
        let mut claims = Fixture::claims();
        claims["at_hash"] = token_hash("an-access-token", Algorithm::ES256)
            .unwrap()
            .into();
        f.validate_with(&f.validator, &f.sign(&claims), expected)
            .await
            .unwrap();
        // A SHA-512 at_hash does not match an ES256 token.
        claims["at_hash"] = token_hash("an-access-token", Algorithm::RS512)
            .unwrap()
            .into();
        assert_invalid(
            f.validate_with(&f.validator, &f.sign(&claims), expected)
                .await,
            "at_hash mismatch",
        );
    }

    #[tokio::test]
    async fn jwks_unavailable_is_reported_as_such() {
        let f = Fixture::new().await;
        f.server.set_status(503);
        let err = f.validate(&f.sign(&Fixture::claims())).await.unwrap_err();
        assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn errors_never_contain_the_token() {
        let f = Fixture::new().await;
        let token = f.sign(&json!({ "iss": "x", "sub": "y", "aud": "z", "exp": 1, "iat": 1 }));
        let err = f.validate(&token).await.unwrap_err();
        let message = err.to_string();
        for part in token.secret().split('.') {
            assert!(!message.contains(part));
        }
    }

    /// A compact JWS of raw header and payload text, signed with `key`.
    fn sign_raw(key: &TestKey, header: &str, payload: &str) -> IdToken {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg).unwrap();
        IdToken::new(format!("{message}.{signature}"))
    }

    /// Issue 15, defect 9 / checklist 49: a duplicated member name in the
    /// header or the claims is refused, even when correctly signed.
    #[tokio::test]
    async fn duplicated_json_member_names_are_refused() {
        let f = Fixture::new().await;
        let claims = Fixture::claims().to_string();
        let header = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, f.key.kid);
        // The clean token is accepted...
        f.validate(&sign_raw(&f.key, &header, &claims))
            .await
            .unwrap();
        // ...the same with a second `sub` (an impostor) is not.
        let duplicated_sub = claims.replacen('{', r#"{"sub":"admin","#, 1);
        let err = f
            .validate(&sign_raw(&f.key, &header, &duplicated_sub))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("malformed payload"), "{err}");
        // Nested objects too.
        let nested = claims.replacen('{', r#"{"address":{"a":1,"a":2},"#, 1);
        assert!(
            f.validate(&sign_raw(&f.key, &header, &nested))
                .await
                .is_err()
        );
        // A duplicated header parameter (`alg` twice, `kid` twice).
        for header in [
            format!(r#"{{"alg":"none","alg":"RS256","kid":"{}"}}"#, f.key.kid),
            format!(r#"{{"alg":"RS256","kid":"x","kid":"{}"}}"#, f.key.kid),
        ] {
            let err = f
                .validate(&sign_raw(&f.key, &header, &claims))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("malformed header"),
                "{header}: {err}"
            );
        }
    }

    /// Checklist 19: keys named by the token itself (`jwk`, `jku`, `x5u`,
    /// `x5c`) are never used; only the provider's JWKS counts.
    #[tokio::test]
    async fn keys_from_jwk_jku_x5u_headers_are_never_used() {
        let f = Fixture::new().await;
        let attacker = ec_key("attacker");
        let attacker_jwks = JwksServer::start(jwks_json(&[&attacker])).await;
        let claims = Fixture::claims().to_string();
        let jwk = attacker.jwk.to_string();
        let jku = attacker_jwks.url.to_string();
        for (case, extra) in [
            ("jwk", format!(r#""jwk":{jwk}"#)),
            ("jku", format!(r#""jku":"{jku}""#)),
            ("x5u", format!(r#""x5u":"{jku}""#)),
            ("jwk with the provider's kid", format!(r#""jwk":{jwk}"#)),
        ] {
            let kid = if case.contains("provider") {
                f.key.kid.clone()
            } else {
                attacker.kid.clone()
            };
            let header = format!(r#"{{"alg":"ES256","kid":"{kid}",{extra}}}"#);
            let token = sign_raw(&attacker, &header, &claims);
            let validator = f.validator.clone().with_allowed_algs(vec![
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::ES256,
            ]);
            let err = f
                .validate_with(&validator, &token, Fixture::expect())
                .await
                .unwrap_err();
            assert!(
                matches!(err, TokenError::InvalidIdToken(_)),
                "{case}: {err:?}"
            );
        }
        assert_eq!(
            attacker_jwks.requests(),
            0,
            "the jku/x5u URL was never fetched"
        );
    }

    fn original() -> IdTokenClaims {
        IdTokenClaims {
            iss: ISSUER.into(),
            sub: "user-42".into(),
            aud: vec![CLIENT.into(), "api".into()],
            exp: NOW + 300,
            iat: NOW,
            nonce: Some("n".into()),
            azp: Some(CLIENT.into()),
            sid: Some("s".into()),
            auth_time: Some(NOW - 10),
            at_hash: None,
            all: Map::new(),
        }
    }

    #[test]
    fn refreshed_token_with_the_same_identity_is_accepted() {
        let validator = IdTokenValidator::new(ISSUER, CLIENT, Arc::new(ManualClock::new(NOW)));
        let mut refreshed = original();
        refreshed.aud = vec!["api".into(), CLIENT.into()];
        refreshed.iat = NOW + 1000;
        refreshed.exp = NOW + 1300;
        refreshed.nonce = None;
        validator
            .validate_refreshed(&refreshed, &original())
            .unwrap();
        refreshed.auth_time = None;
        validator
            .validate_refreshed(&refreshed, &original())
            .unwrap();
    }

    #[test]
    fn refreshed_token_with_another_identity_is_rejected() {
        let validator = IdTokenValidator::new(ISSUER, CLIENT, Arc::new(ManualClock::new(NOW)));
        type Edit = fn(&mut IdTokenClaims);
        let cases: [(&str, Edit); 7] = [
            ("iss", |c| c.iss = "https://other.example.com".into()),
            ("sub", |c| c.sub = "user-43".into()),
            ("aud", |c| c.aud = vec![CLIENT.into()]),
            ("aud", |c| c.aud.push("extra".into())),
            ("azp", |c| c.azp = None),
            ("azp", |c| c.azp = Some("api".into())),
            ("auth_time", |c| c.auth_time = Some(NOW)),
        ];
        for (claim, edit) in cases {
            let mut refreshed = original();
            edit(&mut refreshed);
            // auth_time is only fatal with the strict setting (issue 15,
            // defect 2); identity claims always are.
            let validator = validator.clone().with_strict_refresh(claim == "auth_time");
            match validator.validate_refreshed(&refreshed, &original()) {
                Err(TokenError::InvalidIdToken(msg)) => {
                    assert!(msg.contains(claim), "{claim}: {msg}");
                }
                other => panic!("{claim}: {other:?}"),
            }
        }
    }

    /// Issue 15, defect 2: providers that move `auth_time` to the user's
    /// latest sign-in (on any device) must not end sessions; `nonce` alike.
    #[test]
    fn refreshed_token_with_another_auth_time_or_nonce_is_a_warning_unless_strict() {
        let lenient = IdTokenValidator::new(ISSUER, CLIENT, Arc::new(ManualClock::new(NOW)));
        let strict = lenient.clone().with_strict_refresh(true);
        type Edit = fn(&mut IdTokenClaims);
        let cases: [(&str, Edit); 2] = [
            ("auth_time", |c| c.auth_time = Some(NOW + 500)),
            ("nonce", |c| c.nonce = Some("other".into())),
        ];
        for (claim, edit) in cases {
            let mut refreshed = original();
            edit(&mut refreshed);
            lenient
                .validate_refreshed(&refreshed, &original())
                .unwrap_or_else(|e| panic!("{claim}: {e}"));
            match strict.validate_refreshed(&refreshed, &original()) {
                Err(TokenError::InvalidIdToken(msg)) => assert!(msg.contains(claim), "{msg}"),
                other => panic!("{claim}: {other:?}"),
            }
        }
        // An identity claim stays fatal without the strict setting.
        let mut refreshed = original();
        refreshed.auth_time = Some(NOW + 500);
        refreshed.sub = "user-43".into();
        assert!(lenient.validate_refreshed(&refreshed, &original()).is_err());
    }

    #[test]
    fn claims_deserialize_aud_as_string_or_list() {
        let one: IdTokenClaims = serde_json::from_value(json!({
            "iss": ISSUER, "sub": "u", "aud": CLIENT, "exp": 2, "iat": 1
        }))
        .unwrap();
        assert_eq!(one.aud, vec![CLIENT.to_owned()]);
        assert!(one.all.is_empty());
        let many: IdTokenClaims = serde_json::from_value(json!({
            "iss": ISSUER, "sub": "u", "aud": [CLIENT, "b"], "exp": 2, "iat": 1
        }))
        .unwrap();
        assert_eq!(many.aud, vec![CLIENT.to_owned(), "b".to_owned()]);
        assert!(
            serde_json::from_value::<IdTokenClaims>(json!({
                "iss": ISSUER, "sub": "u", "aud": 5, "exp": 2, "iat": 1
            }))
            .is_err()
        );

        // Round trip.
        let original = original();
        let back: IdTokenClaims =
            serde_json::from_str(&serde_json::to_string(&original).unwrap()).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
