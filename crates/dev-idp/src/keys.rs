//! Signing keys: generation with aws-lc-rs, the JWKS, and key rotation.
//!
//! Key material is generated with aws-lc-rs and handed to `jsonwebtoken` as
//! an [`EncodingKey`]. The first key of every IdP instance in a process comes
//! from a small process-wide cache (generating RSA keys is the slow part of
//! starting an IdP); every instance still gets its own random `kid`.
//! [`KeyRing::rotate`] always generates genuinely fresh key material.

use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::Value;

use crate::config::SigningAlg;

/// Raw key material, shareable between IdP instances.
struct Material {
    encoding: EncodingKey,
    /// The public key as a PEM document (used by the HS256 key-confusion fault).
    public_pem: String,
    /// The public JWK without `kid`/`use`.
    jwk: Value,
    decoding: DecodingKey,
}

/// One signing key as used by an IdP instance.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    pub(crate) alg: SigningAlg,
    material: Arc<Material>,
}

impl SigningKey {
    fn new(alg: SigningAlg, material: Arc<Material>) -> Self {
        Self {
            kid: format!("{}-{}", alg.as_str().to_lowercase(), crate::random_token(9)),
            alg,
            material,
        }
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.material.encoding
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.material.decoding
    }

    pub(crate) fn public_pem(&self) -> &str {
        &self.material.public_pem
    }

    /// The public JWK with `kid`, `alg` and `use`.
    pub(crate) fn public_jwk(&self) -> Value {
        let mut jwk = self.material.jwk.clone();
        if let Value::Object(map) = &mut jwk {
            map.insert("kid".into(), self.kid.clone().into());
            map.insert("alg".into(), self.alg.as_str().into());
            map.insert("use".into(), "sig".into());
        }
        jwk
    }
}

/// The keys of one IdP instance.
pub(crate) struct KeyRing {
    alg: SigningAlg,
    current: Arc<SigningKey>,
    /// Keys still published in the JWKS besides the current one.
    previous: Option<Arc<SigningKey>>,
    /// Every key this instance ever used (to recognise its own id tokens).
    history: Vec<Arc<SigningKey>>,
}

impl KeyRing {
    pub(crate) fn new(alg: SigningAlg) -> Self {
        let current = Arc::new(SigningKey::new(alg, cached_material(alg)));
        Self {
            alg,
            current: current.clone(),
            previous: None,
            history: vec![current],
        }
    }

    pub(crate) fn current(&self) -> Arc<SigningKey> {
        self.current.clone()
    }

    /// Replaces the current key with a freshly generated one.
    pub(crate) fn rotate(&mut self, keep_old: bool) {
        let fresh = Arc::new(SigningKey::new(self.alg, Arc::new(generate(self.alg))));
        let old = std::mem::replace(&mut self.current, fresh.clone());
        self.previous = keep_old.then_some(old);
        self.history.push(fresh);
    }

    /// The public JWKs to publish: current key first, then the previous one.
    pub(crate) fn published(&self) -> Vec<Value> {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(|k| k.public_jwk())
            .collect()
    }

    /// Finds any key this instance ever signed with.
    pub(crate) fn find(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.history.iter().find(|k| k.kid == kid).cloned()
    }
}

fn cached_material(alg: SigningAlg) -> Arc<Material> {
    static RSA: OnceLock<Mutex<Option<Arc<Material>>>> = OnceLock::new();
    static EC: OnceLock<Mutex<Option<Arc<Material>>>> = OnceLock::new();
    let cell = match alg {
        SigningAlg::Rs256 => &RSA,
        SigningAlg::Es256 => &EC,
    };
    let mut slot = cell
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(|| Arc::new(generate(alg))).clone()
}

fn generate(alg: SigningAlg) -> Material {
    match alg {
        SigningAlg::Rs256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
            let pkcs8 = pair.as_der().expect("RSA PKCS#8 encoding");
            let private_pem = pem("PRIVATE KEY", pkcs8.as_ref());
            let encoding =
                EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA key import");
            let spki = pair.public_key().as_der().expect("RSA public key encoding");
            let public_pem = pem("PUBLIC KEY", spki.as_ref());
            let decoding =
                DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("RSA public key import");
            let jwk = jwk_of(&encoding, Algorithm::RS256);
            Material {
                encoding,
                public_pem,
                jwk,
                decoding,
            }
        }
        SigningAlg::Es256 => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .expect("EC key generation");
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .expect("EC key import");
            let spki = pair.public_key().as_der().expect("EC public key encoding");
            let public_pem = pem("PUBLIC KEY", spki.as_ref());
            let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
            let decoding =
                DecodingKey::from_ec_pem(public_pem.as_bytes()).expect("EC public key import");
            let jwk = jwk_of(&encoding, Algorithm::ES256);
            Material {
                encoding,
                public_pem,
                jwk,
                decoding,
            }
        }
    }
}

fn jwk_of(key: &EncodingKey, alg: Algorithm) -> Value {
    let jwk = Jwk::from_encoding_key(key, alg).expect("public JWK from private key");
    serde_json::to_value(jwk).expect("JWK serialises")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// base64url without padding, as used all over JOSE.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_makes_new_material_and_kid() {
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            let mut ring = KeyRing::new(alg);
            let first = ring.current();
            ring.rotate(true);
            let second = ring.current();
            assert_ne!(first.kid, second.kid);
            assert_ne!(first.material.jwk, second.material.jwk);
            assert_eq!(ring.published().len(), 2);
            assert!(ring.find(&first.kid).is_some());
            ring.rotate(false);
            assert_eq!(ring.published().len(), 1);
            assert!(ring.find(&first.kid).is_some(), "history keeps old keys");
        }
    }
}
