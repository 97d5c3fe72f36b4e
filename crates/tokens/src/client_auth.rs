//! Client authentication at the provider's endpoints.
//!
//! Three methods, chosen with [`OidcConfig::client_auth`](crate::OidcConfig::client_auth):
//!
//! * [`ClientAuthMethod::ClientSecretBasic`]: the client id and secret in an
//!   HTTP `Authorization: Basic` header (RFC 6749 §2.3.1), both parts
//!   form-urlencoded first;
//! * [`ClientAuthMethod::ClientSecretPost`]: `client_id` and `client_secret`
//!   in the form body;
//! * [`ClientAuthMethod::PrivateKeyJwt`]: a JWT signed with the client's
//!   private key (RFC 7523 §2.2, OpenID Connect Core §9), sent as
//!   `client_assertion` with `client_assertion_type =
//!   urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
//!
//! A public client (no secret, no key, [`public_client`](crate::OidcConfig::public_client))
//! sends its `client_id` only.
//!
//! When no method is configured it is chosen as before this option existed:
//! with a [`ClientKey`], `private_key_jwt`; with a secret,
//! `client_secret_basic` unless the discovery document lists only
//! `client_secret_post` among `token_endpoint_auth_methods_supported`.
//!
//! ## The client assertion
//!
//! A new assertion is signed for every request (token, revocation,
//! introspection and pushed authorization requests): `iss` = `sub` = the
//! client id, `aud` = the provider's **issuer** identifier (as RFC 7523bis
//! and FAPI 2.0 ask; providers accept it, and unlike the token endpoint URL
//! it names one audience for every endpoint), a random 256-bit `jti`, `iat`
//! = now and `exp` = now + [`ASSERTION_LIFETIME`]. The header carries `alg`,
//! `kid` and `typ: JWT`.
//!
//! The key is read once, at start-up, from a PEM file: an RSA key (at least
//! 2048 bits; `PRIVATE KEY` in PKCS#8 or `RSA PRIVATE KEY` in PKCS#1) or an EC
//! P-256 key (`PRIVATE KEY` in PKCS#8 or `EC PRIVATE KEY` in SEC 1).
//! Encrypted keys are refused. The key id (`kid`) is the configured
//! [`client_key_id`](crate::OidcConfig::client_key_id), else the key's RFC
//! 7638 JWK thumbprint. The algorithm is RS256 for RSA keys and ES256 for EC
//! keys unless [`client_key_alg`](crate::OidcConfig::client_key_alg) says
//! PS256. The key never reaches `Debug`, a log line or an error message.
//!
//! ```
//! use oidc_bff_tokens::client_auth::{ClientAuthMethod, ClientKey};
//!
//! let method: ClientAuthMethod = "private_key_jwt".parse().unwrap();
//! assert_eq!(method, ClientAuthMethod::PrivateKeyJwt);
//! let err = ClientKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
//!     .unwrap_err();
//! assert!(err.to_string().contains("no private key"));
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
    RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer};
use sha2::Digest as _;

use crate::error::TokenError;

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a client assertion is valid (`exp - iat`): 60 seconds.
pub const ASSERTION_LIFETIME: u64 = 60;

/// How the client authenticates at the provider's token, revocation,
/// introspection and pushed authorization request endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// The secret in an `Authorization: Basic` header (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// The secret in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523, OIDC Core §9).
    PrivateKeyJwt,
}

impl ClientAuthMethod {
    /// The names accepted by [`FromStr`](std::str::FromStr) and in configuration files.
    pub const NAMES: [&'static str; 3] = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ];

    /// The registered name (`client_secret_basic`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// Whether the method needs a client secret.
    pub fn needs_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ClientAuthMethod {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "client_secret_basic" => Self::ClientSecretBasic,
            "client_secret_post" => Self::ClientSecretPost,
            "private_key_jwt" => Self::PrivateKeyJwt,
            other => {
                return Err(TokenError::Config(format!(
                    "unknown client authentication method {:?}; expected one of {:?}",
                    other.chars().take(40).collect::<String>(),
                    Self::NAMES
                )));
            }
        })
    }
}

/// The JWS algorithm of client assertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum ClientAssertionAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys; the default for them).
    RS256,
    /// RSASSA-PSS with SHA-256 (RSA keys; what FAPI 2.0 asks for).
    PS256,
    /// ECDSA P-256 with SHA-256 (EC keys).
    ES256,
}

impl ClientAssertionAlg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
        }
    }
}

impl fmt::Display for ClientAssertionAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ClientAssertionAlg {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(Self::RS256),
            "PS256" => Ok(Self::PS256),
            "ES256" => Ok(Self::ES256),
            _ => Err(TokenError::Config(
                "unknown client assertion algorithm; expected RS256, PS256 or ES256".into(),
            )),
        }
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

struct KeyInner {
    pair: Pair,
    /// Where the key came from (a file name, or "PEM data"); never the key.
    source: String,
    /// The public JWK members (`kty`, `n`/`e` or `crv`/`x`/`y`).
    public: serde_json::Map<String, serde_json::Value>,
    /// The RFC 7638 thumbprint (SHA-256, base64url).
    thumbprint: String,
}

/// A private key for `private_key_jwt`, parsed once and ready to sign.
/// Cheap to clone. Its `Debug` shows where it came from, its type and its
/// thumbprint, never the key.
#[derive(Clone)]
pub struct ClientKey(Arc<KeyInner>);

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("source", &self.0.source)
            .field("kty", &self.key_type())
            .field("thumbprint", &self.0.thumbprint)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Reads and parses a PEM private key file. Errors name the file, never
    /// its content.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, TokenError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            TokenError::Config(format!("client key {source}: cannot read the file: {e}"))
        })?;
        Self::parse(&bytes, source)
    }

    /// Parses a PEM private key held in memory.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TokenError> {
        Self::parse(pem, "(PEM data)".to_owned())
    }

    fn parse(pem: &[u8], source: String) -> Result<Self, TokenError> {
        let fail = |why: &str| TokenError::Config(format!("client key {source}: {why}"));
        let text = std::str::from_utf8(pem).map_err(|_| fail("not a PEM text file"))?;
        let (label, der) = private_key_block(text).map_err(|why| fail(&why))?;
        let pair = match label.as_str() {
            "RSA PRIVATE KEY" => Pair::Rsa(
                RsaKeyPair::from_der(&der).map_err(|_| fail("not a valid PKCS#1 RSA key"))?,
            ),
            "EC PRIVATE KEY" => Pair::Ec(
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|_| fail("not a valid EC key on P-256 (only P-256 is supported)"))?,
            ),
            _ => match RsaKeyPair::from_pkcs8(&der) {
                Ok(rsa) => Pair::Rsa(rsa),
                Err(_) => Pair::Ec(
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                        .map_err(|_| fail("not an RSA or EC P-256 private key in PKCS#8 form"))?,
                ),
            },
        };
        let mut public = serde_json::Map::new();
        match &pair {
            Pair::Rsa(rsa) => {
                if rsa.public_modulus_len() < 256 {
                    return Err(fail("RSA keys must have at least 2048 bits"));
                }
                let key = rsa.public_key();
                public.insert(
                    "e".into(),
                    b64(key.exponent().big_endian_without_leading_zero()).into(),
                );
                public.insert("kty".into(), "RSA".into());
                public.insert(
                    "n".into(),
                    b64(key.modulus().big_endian_without_leading_zero()).into(),
                );
            }
            Pair::Ec(ec) => {
                let point = ec.public_key().as_ref();
                if point.len() != 65 || point[0] != 4 {
                    return Err(fail("unexpected EC public key encoding"));
                }
                public.insert("crv".into(), "P-256".into());
                public.insert("kty".into(), "EC".into());
                public.insert("x".into(), b64(&point[1..33]).into());
                public.insert("y".into(), b64(&point[33..]).into());
            }
        }
        // RFC 7638: the required members, sorted, no whitespace; a
        // serde_json::Map is sorted by key.
        let canonical = serde_json::to_vec(&public).map_err(|_| fail("cannot encode the JWK"))?;
        let thumbprint = b64(&sha2::Sha256::digest(&canonical));
        Ok(Self(Arc::new(KeyInner {
            pair,
            source,
            public,
            thumbprint,
        })))
    }

    /// `"RSA"` or `"EC"`.
    pub fn key_type(&self) -> &'static str {
        match self.0.pair {
            Pair::Rsa(_) => "RSA",
            Pair::Ec(_) => "EC",
        }
    }

    /// Where the key was read from (the file name, or `(PEM data)`).
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// The key's RFC 7638 JWK thumbprint (SHA-256, base64url): the default `kid`.
    pub fn thumbprint(&self) -> &str {
        &self.0.thumbprint
    }

    /// The algorithm used when none is configured: RS256 or ES256.
    pub fn default_alg(&self) -> ClientAssertionAlg {
        match self.0.pair {
            Pair::Rsa(_) => ClientAssertionAlg::RS256,
            Pair::Ec(_) => ClientAssertionAlg::ES256,
        }
    }

    /// Whether this key can sign with `alg`.
    pub fn supports(&self, alg: ClientAssertionAlg) -> bool {
        matches!(
            (&self.0.pair, alg),
            (
                Pair::Rsa(_),
                ClientAssertionAlg::RS256 | ClientAssertionAlg::PS256
            ) | (Pair::Ec(_), ClientAssertionAlg::ES256)
        )
    }

    /// The public key as a JWK to register at the provider (`use: sig`,
    /// with `kid` and `alg`).
    pub fn public_jwk(&self, kid: &str, alg: ClientAssertionAlg) -> serde_json::Value {
        let mut jwk = self.0.public.clone();
        jwk.insert("kid".into(), kid.into());
        jwk.insert("alg".into(), alg.as_str().into());
        jwk.insert("use".into(), "sig".into());
        serde_json::Value::Object(jwk)
    }

    fn sign(&self, alg: ClientAssertionAlg, input: &[u8]) -> Result<Vec<u8>, TokenError> {
        let failed = || TokenError::Config("signing the client assertion failed".into());
        match (&self.0.pair, alg) {
            (Pair::Rsa(rsa), ClientAssertionAlg::RS256 | ClientAssertionAlg::PS256) => {
                let padding = if alg == ClientAssertionAlg::PS256 {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                let mut signature = vec![0; rsa.public_modulus_len()];
                rsa.sign(padding, &SystemRandom::new(), input, &mut signature)
                    .map_err(|_| failed())?;
                Ok(signature)
            }
            (Pair::Ec(ec), ClientAssertionAlg::ES256) => ec
                .sign(&SystemRandom::new(), input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed()),
            _ => Err(TokenError::Config(format!(
                "client_key_alg {alg} does not fit the {} client key",
                self.key_type()
            ))),
        }
    }
}

/// Deserializes a [`ClientKey`] from the path of its PEM file.
impl<'de> Deserialize<'de> for ClientKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = std::path::PathBuf::deserialize(d)?;
        ClientKey::from_pem_file(&path).map_err(serde::de::Error::custom)
    }
}

/// The first private key block of a PEM text: its label and DER bytes.
fn private_key_block(text: &str) -> Result<(String, Vec<u8>), String> {
    let mut rest = text;
    let mut labels = Vec::new();
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let label_end = after.find("-----").ok_or("a PEM header is not closed")?;
        let label = after[..label_end].to_owned();
        let body = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let end = body
            .find(&end_marker)
            .ok_or_else(|| format!("the {label} block has no END line"))?;
        let block = &body[..end];
        rest = &body[end + end_marker.len()..];
        match label.as_str() {
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                if block.contains("ENCRYPTED") {
                    return Err("the key is encrypted; give an unencrypted key (e.g. `openssl pkcs8 -topk8 -nocrypt`)".into());
                }
                let b64: String = block
                    .lines()
                    .filter(|line| !line.contains(':'))
                    .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
                    .collect();
                let der = STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| format!("the {label} block is not valid base64"))?;
                return Ok((label, der));
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err("the key is encrypted; give an unencrypted key (e.g. `openssl pkcs8 -topk8 -nocrypt`)".into());
            }
            _ => labels.push(label),
        }
    }
    Err(if labels.is_empty() {
        "no private key found: expected a PEM block PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY"
            .into()
    } else {
        format!(
            "no private key found (the file holds {}): expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY",
            labels.join(", ")
        )
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs client assertions for one client: the key, its `kid` and `alg`.
#[derive(Clone, Debug)]
pub(crate) struct AssertionSigner {
    key: ClientKey,
    client_id: String,
    alg: ClientAssertionAlg,
    /// The encoded header, the same for every assertion.
    header: String,
}

impl AssertionSigner {
    pub(crate) fn new(
        key: ClientKey,
        client_id: &str,
        kid: Option<&str>,
        alg: Option<ClientAssertionAlg>,
    ) -> Self {
        let alg = alg.unwrap_or_else(|| key.default_alg());
        let kid = kid.unwrap_or_else(|| key.thumbprint()).to_owned();
        let header = serde_json::json!({"alg": alg.as_str(), "kid": kid, "typ": "JWT"});
        Self {
            header: b64(header.to_string().as_bytes()),
            key,
            client_id: client_id.to_owned(),
            alg,
        }
    }

    /// A fresh assertion for `audience` at `now` (Unix seconds).
    pub(crate) fn assertion(&self, audience: &str, now: u64) -> Result<String, TokenError> {
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": crate::session::random_token(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let mut jwt = format!("{}.{}", self.header, b64(claims.to_string().as_bytes()));
        let signature = self.key.sign(self.alg, jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&b64(&signature));
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{self, UnparsedPublicKey};

    fn pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn verify(jwt: &str, key: &ClientKey, alg: &'static dyn signature::VerificationAlgorithm) {
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let public: Vec<u8> = match &key.0.pair {
            Pair::Rsa(rsa) => rsa.public_key().as_der().unwrap().as_ref().to_vec(),
            Pair::Ec(ec) => ec.public_key().as_ref().to_vec(),
        };
        UnparsedPublicKey::new(alg, public)
            .verify(input.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn ec_keys_in_pkcs8_and_sec1_sign_es256() {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let key = ClientKey::from_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        assert_eq!(key.key_type(), "EC");
        assert_eq!(key.default_alg(), ClientAssertionAlg::ES256);
        let signer = AssertionSigner::new(key.clone(), "bff", None, None);
        let jwt = signer.assertion("https://idp", 1000).unwrap();
        verify(&jwt, &key, &signature::ECDSA_P256_SHA256_FIXED);
        let parts: Vec<&str> = jwt.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], key.thumbprint());
        assert_eq!(header["alg"], "ES256");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "bff");
        assert_eq!(claims["sub"], "bff");
        assert_eq!(claims["aud"], "https://idp");
        assert_eq!(claims["exp"], 1060);
        assert_ne!(
            claims["jti"],
            serde_json::from_slice::<serde_json::Value>(
                &URL_SAFE_NO_PAD
                    .decode(signer.assertion("x", 1).unwrap().split('.').nth(1).unwrap())
                    .unwrap()
            )
            .unwrap()["jti"]
        );
        // SEC 1 form of the same key.
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let sec1 = pair.private_key().as_der().unwrap();
        let again = ClientKey::from_pem(pem("EC PRIVATE KEY", sec1.as_ref()).as_bytes()).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert!(!format!("{key:?}").contains(&pem("PRIVATE KEY", pkcs8.as_ref())[30..60]));
    }

    #[test]
    fn rsa_keys_sign_rs256_and_ps256() {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let key = ClientKey::from_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        assert_eq!(key.key_type(), "RSA");
        let rs = AssertionSigner::new(key.clone(), "bff", Some("k1"), None);
        verify(
            &rs.assertion("a", 1).unwrap(),
            &key,
            &signature::RSA_PKCS1_2048_8192_SHA256,
        );
        let ps = AssertionSigner::new(key.clone(), "bff", None, Some(ClientAssertionAlg::PS256));
        verify(
            &ps.assertion("a", 1).unwrap(),
            &key,
            &signature::RSA_PSS_2048_8192_SHA256,
        );
        assert!(!key.supports(ClientAssertionAlg::ES256));
        assert_eq!(
            key.public_jwk("k1", ClientAssertionAlg::RS256)["kty"],
            "RSA"
        );
    }

    #[test]
    fn rfc7638_thumbprint() {
        // RFC 7638 §3.1's example key, as an RSA public JWK; checks the
        // canonical form and hash used for our keys.
        let mut public = serde_json::Map::new();
        public.insert("e".into(), "AQAB".into());
        public.insert("kty".into(), "RSA".into());
        public.insert("n".into(), "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into());
        let canonical = serde_json::to_vec(&public).unwrap();
        assert_eq!(
            b64(&sha2::Sha256::digest(&canonical)),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn bad_keys_are_clear_errors_without_key_material() {
        for (pem_text, expected) in [
            ("hello".to_owned(), "no private key"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                    .to_owned(),
                "encrypted",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nc2VjcmV0a2V5bWF0ZXJpYWw=\n-----END PRIVATE KEY-----\n"
                    .to_owned(),
                "PKCS#8",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\n!!!\n-----END RSA PRIVATE KEY-----\n".to_owned(),
                "base64",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n".to_owned(),
                "no END line",
            ),
        ] {
            let err = ClientKey::from_pem(pem_text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("c2VjcmV0"), "{err}");
        }
        let err = ClientKey::from_pem_file("/nonexistent/key.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/key.pem"), "{err}");
    }
}
