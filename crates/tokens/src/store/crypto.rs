//! Encryption at rest for the persistent stores: a [`KeyRing`] of named
//! AES-256-GCM keys.
//!
//! The first key of the ring encrypts; every key decrypts. To rotate, deploy
//! the new key as an *additional* key on every instance first, then make it
//! the first one, and drop the old key once no session written with it can
//! still be alive (the absolute session lifetime).
//!
//! ```
//! use oidc_bff_tokens::store::KeyRing;
//!
//! // Keys are 32 random bytes, given in configuration as `id:base64`.
//! let old = KeyRing::generate("2025");
//! let sealed = old.encrypt(b"refresh-token", b"context").unwrap();
//! assert!(sealed.starts_with("2025:"));
//!
//! // After rotation the new key encrypts and the old one still decrypts.
//! let rotated = KeyRing::generate("2026").with_key_from(&old, "2025").unwrap();
//! assert_eq!(rotated.decrypt(&sealed, b"context").unwrap(), b"refresh-token");
//! // The wrong context (another session) does not decrypt.
//! assert!(rotated.decrypt(&sealed, b"other").is_err());
//! ```
//!
//! A sealed value is `"{key id}:{base64url(nonce ‖ ciphertext ‖ tag)}"` with
//! a random 96-bit nonce per value. The associated data binds a value to
//! where it is stored (the hashed session id), so ciphertexts cannot be
//! moved between sessions.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::StoreError;

/// The length of a key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Named AES-256-GCM keys: the first encrypts, all decrypt.
///
/// `Debug` shows the key ids only.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<NamedKey>,
}

#[derive(Clone)]
struct NamedKey {
    id: String,
    raw: [u8; KEY_LEN],
    key: std::sync::Arc<LessSafeKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

fn config_error(msg: impl Into<String>) -> StoreError {
    StoreError::Config(msg.into())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl NamedKey {
    fn new(id: &str, raw: [u8; KEY_LEN]) -> Result<Self, StoreError> {
        if !valid_id(id) {
            return Err(config_error(
                "an encryption key id must be 1-32 characters of A-Z, a-z, 0-9, '-' or '_'",
            ));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| config_error("invalid AES-256-GCM key"))?;
        Ok(Self {
            id: id.to_owned(),
            raw,
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
        })
    }
}

impl KeyRing {
    /// A ring with one key, which encrypts. `id` names the key in every value
    /// it seals (1-32 characters of `A-Z a-z 0-9 - _`).
    pub fn new(id: &str, key: [u8; KEY_LEN]) -> Result<Self, StoreError> {
        Ok(Self {
            keys: vec![NamedKey::new(id, key)?],
        })
    }

    /// A ring with one fresh random key (for tests and development: values
    /// sealed with it are unreadable after a restart).
    pub fn generate(id: &str) -> Self {
        let mut raw = [0u8; KEY_LEN];
        // The OS generator only fails on a broken system; fall back to the
        // thread-local CSPRNG rather than panic.
        if aws_lc_rs::rand::fill(&mut raw).is_err() {
            use rand::RngCore as _;
            rand::rng().fill_bytes(&mut raw);
        }
        let id = if valid_id(id) { id } else { "generated" };
        match NamedKey::new(id, raw) {
            Ok(key) => Self { keys: vec![key] },
            Err(_) => unreachable!("a 32-byte key with a valid id is always accepted"),
        }
    }

    /// Parses keys given in configuration, each as `"id:base64"` (standard or
    /// URL-safe base64 of 32 bytes). The first entry encrypts.
    ///
    /// ```
    /// use oidc_bff_tokens::store::KeyRing;
    ///
    /// let ring = KeyRing::from_config([
    ///     "k2:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ///     "k1:HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=",
    /// ]).unwrap();
    /// assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
    /// assert!(KeyRing::from_config(["k1:tooshort"]).is_err());
    /// ```
    pub fn from_config<I, S>(entries: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut keys: Vec<NamedKey> = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            let (id, b64) = entry
                .split_once(':')
                .ok_or_else(|| config_error("an encryption key must be given as \"id:base64\""))?;
            let bytes = STANDARD
                .decode(b64)
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')))
                .map_err(|_| config_error(format!("encryption key {id:?} is not valid base64")))?;
            let raw: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
                config_error(format!("encryption key {id:?} must be exactly 32 bytes"))
            })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(config_error(format!(
                    "encryption key id {id:?} is used twice"
                )));
            }
            keys.push(NamedKey::new(id, raw)?);
        }
        if keys.is_empty() {
            return Err(config_error("at least one encryption key is required"));
        }
        Ok(Self { keys })
    }

    /// Adds an older key that only decrypts.
    pub fn with_decrypt_key(mut self, id: &str, key: [u8; KEY_LEN]) -> Result<Self, StoreError> {
        if self.keys.iter().any(|k| k.id == id) {
            return Err(config_error(format!(
                "encryption key id {id:?} is used twice"
            )));
        }
        self.keys.push(NamedKey::new(id, key)?);
        Ok(self)
    }

    /// Adds the key named `id` of another ring as a decrypt-only key.
    pub fn with_key_from(self, other: &KeyRing, id: &str) -> Result<Self, StoreError> {
        let key = other
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| config_error(format!("no encryption key {id:?} in that ring")))?;
        self.with_decrypt_key(id, key.raw)
    }

    /// The key ids, the encrypting one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Encrypts `plaintext` with the first key, bound to `aad`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, StoreError> {
        let key = self
            .keys
            .first()
            .ok_or_else(|| config_error("the key ring is empty"))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Unavailable("no randomness for a nonce".into()))?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        buf.extend_from_slice(&nonce);
        let mut in_out = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| StoreError::Corrupt("encryption failed".into()))?;
        buf.extend_from_slice(&in_out);
        let mut out = String::with_capacity(key.id.len() + 1 + buf.len() * 4 / 3 + 4);
        out.push_str(&key.id);
        out.push(':');
        URL_SAFE_NO_PAD.encode_string(&buf, &mut out);
        Ok(out)
    }

    /// Decrypts a value sealed by [`encrypt`](Self::encrypt) with any key of
    /// the ring. An unknown key id, a wrong `aad` or tampering give
    /// [`StoreError::Corrupt`].
    pub fn decrypt(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (id, b64) = sealed
            .split_once(':')
            .ok_or_else(|| StoreError::Corrupt("not an encrypted value".into()))?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| {
            StoreError::Corrupt("encrypted with a key that is not configured".into())
        })?;
        let mut buf = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| StoreError::Corrupt("not an encrypted value".into()))?;
        if buf.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(StoreError::Corrupt("encrypted value too short".into()));
        }
        let (nonce, rest) = buf.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StoreError::Corrupt("bad nonce".into()))?;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(aad), rest)
            .map_err(|_| StoreError::Corrupt("decryption failed (wrong key or tampered)".into()))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let ring = KeyRing::generate("a");
        let sealed = ring.encrypt(b"secret", b"ctx").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(ring.decrypt(&sealed, b"ctx").unwrap(), b"secret");
        assert!(matches!(
            ring.decrypt(&sealed, b"ctx2"),
            Err(StoreError::Corrupt(_))
        ));
        let other = KeyRing::generate("a");
        assert!(matches!(
            other.decrypt(&sealed, b"ctx"),
            Err(StoreError::Corrupt(_))
        ));
        // Two seals of one value differ (random nonces).
        assert_ne!(sealed, ring.encrypt(b"secret", b"ctx").unwrap());
    }

    #[test]
    fn tampering_is_detected() {
        let ring = KeyRing::generate("a");
        let mut sealed = ring.encrypt(b"secret", b"ctx").unwrap().into_bytes();
        let last = sealed.len() - 3;
        sealed[last] = if sealed[last] == b'A' { b'B' } else { b'A' };
        let sealed = String::from_utf8(sealed).unwrap();
        assert!(ring.decrypt(&sealed, b"ctx").is_err());
        assert!(ring.decrypt("nonsense", b"ctx").is_err());
        assert!(ring.decrypt("a:", b"ctx").is_err());
    }

    #[test]
    fn config_parsing() {
        let b64 = STANDARD.encode([7u8; 32]);
        let ring = KeyRing::from_config([format!("new:{b64}")]).unwrap();
        assert!(!format!("{ring:?}").contains(&b64));
        assert!(KeyRing::from_config(Vec::<String>::new()).is_err());
        assert!(KeyRing::from_config([format!("bad id:{b64}")]).is_err());
        assert!(KeyRing::from_config([format!("a:{b64}"), format!("a:{b64}")]).is_err());
        assert!(KeyRing::from_config(["a:!!!"]).is_err());
    }
}
