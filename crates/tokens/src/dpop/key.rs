//! [`DpopKey`]: one DPoP key pair, parsed once and kept ready.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::TokenError;

/// The signature algorithm of DPoP proofs.
///
/// In configuration files: `"ES256"` (the default) or `"ES384"`.
///
/// ```
/// use oidc_bff_tokens::dpop::DpopAlg;
///
/// let alg: DpopAlg = serde_json::from_str("\"ES384\"").unwrap();
/// assert_eq!(alg.as_str(), "ES384");
/// assert_eq!(DpopAlg::default(), DpopAlg::Es256);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DpopAlg {
    /// ECDSA with P-256 and SHA-256.
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// ECDSA with P-384 and SHA-384.
    #[serde(rename = "ES384")]
    Es384,
}

impl DpopAlg {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            DpopAlg::Es256 => "ES256",
            DpopAlg::Es384 => "ES384",
        }
    }

    /// Parses a JWS `alg` name (`None` for any other).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(DpopAlg::Es256),
            "ES384" => Some(DpopAlg::Es384),
            _ => None,
        }
    }

    fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            DpopAlg::Es256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
            DpopAlg::Es384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
        }
    }

    fn curve(self) -> &'static str {
        match self {
            DpopAlg::Es256 => "P-256",
            DpopAlg::Es384 => "P-384",
        }
    }
}

/// A DPoP key pair, ready to sign: parsed once, with its public JWK, its
/// RFC 7638 thumbprint and the encoded proof header computed up front.
/// Cheap to clone.
///
/// Serializes (for the sealed sign-in `state` and the session record, both
/// encrypted) as `{"alg": "ES256", "k": "<base64url PKCS#8>"}`; `Debug`
/// shows the algorithm only. Two keys are equal when their thumbprints are.
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<Inner>,
}

struct Inner {
    alg: DpopAlg,
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    jwk: serde_json::Value,
    thumbprint: String,
    /// The base64url proof header, the same for every proof of this key.
    header: String,
}

impl DpopKey {
    /// A fresh random key pair.
    pub fn generate(alg: DpopAlg) -> Result<Self, TokenError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg.signing(), &SystemRandom::new())
            .map_err(|_| TokenError::Config("cannot generate a DPoP key".into()))?;
        Self::from_pkcs8(alg, pkcs8.as_ref())
    }

    /// A key pair from its PKCS#8 (DER) encoding.
    pub fn from_pkcs8(alg: DpopAlg, pkcs8: &[u8]) -> Result<Self, TokenError> {
        let pair = EcdsaKeyPair::from_pkcs8(alg.signing(), pkcs8)
            .map_err(|_| TokenError::Config("a DPoP key cannot be read".into()))?;
        let point = pair.public_key().as_ref();
        // Uncompressed point: 0x04 || x || y.
        let half = (point.len().saturating_sub(1)) / 2;
        if point.first() != Some(&4) || half == 0 {
            return Err(TokenError::Config("a DPoP key cannot be read".into()));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..=half]);
        let y = URL_SAFE_NO_PAD.encode(&point[1 + half..]);
        // RFC 7638: the required members, in lexicographic order, no spaces.
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{x}","y":"{y}"}}"#,
            alg.curve()
        );
        let thumbprint = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()));
        let jwk = serde_json::json!({"kty": "EC", "crv": alg.curve(), "x": x, "y": y});
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": alg.as_str(), "jwk": jwk});
        let header = URL_SAFE_NO_PAD.encode(header.to_string().as_bytes());
        Ok(DpopKey {
            inner: Arc::new(Inner {
                alg,
                pair,
                pkcs8: pkcs8.to_vec(),
                jwk,
                thumbprint,
                header,
            }),
        })
    }

    /// The signature algorithm.
    pub fn alg(&self) -> DpopAlg {
        self.inner.alg
    }

    /// The public key as a JWK (no private part).
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.inner.jwk
    }

    /// The RFC 7638 JWK SHA-256 thumbprint (`dpop_jkt`, `cnf.jkt`).
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    pub(crate) fn encoded_header(&self) -> &str {
        &self.inner.header
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.inner
            .pair
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| TokenError::Config("cannot sign a DPoP proof".into()))
    }
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DpopKey({}, [redacted])", self.inner.alg.as_str())
    }
}

impl PartialEq for DpopKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.thumbprint == other.inner.thumbprint
    }
}

impl Eq for DpopKey {}

#[derive(Serialize, Deserialize)]
struct Stored {
    alg: DpopAlg,
    k: String,
}

impl Serialize for DpopKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Stored {
            alg: self.inner.alg,
            k: URL_SAFE_NO_PAD.encode(&self.inner.pkcs8),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for DpopKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = Stored::deserialize(d)?;
        let der = URL_SAFE_NO_PAD
            .decode(stored.k.as_bytes())
            .map_err(|_| serde::de::Error::custom("a DPoP key is not base64url"))?;
        DpopKey::from_pkcs8(stored.alg, &der)
            .map_err(|_| serde::de::Error::custom("a DPoP key cannot be read"))
    }
}

/// How long the shared client key is kept in the store. Each instance
/// keeps the key in memory once loaded; a client token is only shared with
/// instances holding the key it is bound to.
const CLIENT_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The client credentials key of `engine`'s client, from the store or put
/// there (see [`TokenEngine::client_dpop_key`](crate::TokenEngine::client_dpop_key)).
pub(crate) async fn shared_client_key(engine: &crate::TokenEngine) -> Result<DpopKey, TokenError> {
    let config = engine.config();
    let name = format!(
        "dpop-client-key:{}",
        serde_json::json!([config.client_id, config.authority.as_str()])
    );
    let store = engine.store();
    let read = |raw: Option<String>| {
        raw.and_then(|raw| serde_json::from_str::<DpopKey>(&raw).ok())
            .filter(|key| key.alg() == config.dpop_alg)
    };
    if let Some(key) = read(store.get_transient(&name).await?) {
        return Ok(key);
    }
    let fresh = DpopKey::generate(config.dpop_alg)?;
    let encoded = serde_json::to_string(&fresh)
        .map_err(|_| TokenError::Config("cannot encode a DPoP key".into()))?;
    if store
        .put_transient_if_absent(&name, encoded.clone(), CLIENT_KEY_TTL)
        .await?
    {
        return Ok(fresh);
    }
    // Another instance was first: use its key.
    match read(store.get_transient(&name).await?) {
        Some(key) => Ok(key),
        None => {
            // Unreadable (another algorithm, or a key no longer in the
            // ring): replace it.
            store.put_transient(&name, encoded, CLIENT_KEY_TTL).await?;
            Ok(fresh)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_redacts() {
        for alg in [DpopAlg::Es256, DpopAlg::Es384] {
            let key = DpopKey::generate(alg).unwrap();
            let json = serde_json::to_string(&key).unwrap();
            let back: DpopKey = serde_json::from_str(&json).unwrap();
            assert_eq!(back, key);
            assert_eq!(back.thumbprint(), key.thumbprint());
            assert!(!format!("{key:?}").contains(&json[10..30]));
            assert!(key.public_jwk().get("d").is_none());
        }
        assert!(serde_json::from_str::<DpopKey>(r#"{"alg":"ES256","k":"AAAA"}"#).is_err());
    }

    #[test]
    fn rfc7638_thumbprint_shape() {
        let key = DpopKey::generate(DpopAlg::Es256).unwrap();
        let jwk = key.public_jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(
            key.thumbprint(),
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
        );
    }
}
