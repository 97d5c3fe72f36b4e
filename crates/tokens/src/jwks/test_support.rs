//! Test helpers shared by the jwks and id_token tests: a loopback JWKS
//! server that counts and scripts its answers, and freshly generated RSA, EC
//! and Ed25519 signing keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

/// A minimal HTTP/1.1 server on 127.0.0.1 answering every request with
/// the configured JWKS document, counting requests.
pub(crate) struct JwksServer {
    pub(crate) url: Url,
    requests: Arc<AtomicU64>,
    reply: Arc<Mutex<Reply>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub(crate) async fn start(body: impl Into<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body: body.into(),
            delay: Duration::ZERO,
        }));
        let task = tokio::spawn({
            let requests = Arc::clone(&requests);
            let reply = Arc::clone(&reply);
            async move {
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else {
                        return;
                    };
                    let requests = Arc::clone(&requests);
                    let reply = Arc::clone(&reply);
                    tokio::spawn(async move {
                        let mut received = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => received.extend_from_slice(&buf[..n]),
                            }
                        }
                        requests.fetch_add(1, Ordering::SeqCst);
                        let (status, body, delay) = {
                            let reply = reply.lock().unwrap();
                            (reply.status, reply.body.clone(), reply.delay)
                        };
                        tokio::time::sleep(delay).await;
                        let response = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            }
        });
        Self {
            url,
            requests,
            reply,
            task,
        }
    }

    /// Requests served so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn set_body(&self, body: impl Into<String>) {
        self.reply.lock().unwrap().body = body.into();
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.reply.lock().unwrap().status = status;
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        self.reply.lock().unwrap().delay = delay;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP client that ignores proxy settings of the environment.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A signing key with its public JWK.
pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) encoding: EncodingKey,
    pub(crate) jwk: serde_json::Value,
}

impl TestKey {
    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        let mut jwk = serde_json::to_value(jwk).unwrap();
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        }
    }
}

/// A JWKS document holding these keys.
pub(crate) fn jwks_json(keys: &[&TestKey]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
        .to_string()
}

/// RSA-2048 private keys (PKCS#1 DER); generating them is slow, so two
/// are made once per test run.
fn rsa_ders() -> &'static [Vec<u8>; 2] {
    static KEYS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let generate = || {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&pair).unwrap();
            pkcs1_from_pkcs8(pkcs8.as_ref()).to_vec()
        };
        [generate(), generate()]
    })
}

/// The RSA key the tests' provider signs with.
pub(crate) fn rsa_key(kid: &str) -> TestKey {
    TestKey::new(
        kid,
        Algorithm::RS256,
        EncodingKey::from_rsa_der(&rsa_ders()[0]),
    )
}

/// Another RSA key (an attacker's, or a rotated one).
pub(crate) fn other_rsa_key(kid: &str) -> TestKey {
    TestKey::new(
        kid,
        Algorithm::RS256,
        EncodingKey::from_rsa_der(&rsa_ders()[1]),
    )
}

/// A fresh EC P-256 key.
pub(crate) fn ec_key(kid: &str) -> TestKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    TestKey::new(
        kid,
        Algorithm::ES256,
        EncodingKey::from_ec_der(pkcs8.as_ref()),
    )
}

/// A fresh Ed25519 key.
pub(crate) fn ed_key(kid: &str) -> TestKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
    TestKey::new(
        kid,
        Algorithm::EdDSA,
        EncodingKey::from_ed_der(pkcs8.as_ref()),
    )
}

/// The DER public key (SubjectPublicKeyInfo) of [`rsa_key`].
pub(crate) fn rsa_public_der() -> Vec<u8> {
    let pair = aws_lc_rs::rsa::KeyPair::from_der(&rsa_ders()[0]).unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
    AsDer::<aws_lc_rs::encoding::PublicKeyX509Der<'static>>::as_der(public)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Reads one DER TLV: (tag, contents, rest).
fn der_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let first = input[1] as usize;
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        let len = input[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The RSAPrivateKey (PKCS#1) inside a PKCS#8 PrivateKeyInfo.
fn pkcs1_from_pkcs8(pkcs8: &[u8]) -> &[u8] {
    let (tag, info, _) = der_tlv(pkcs8);
    assert_eq!(tag, 0x30);
    let (_, _version, rest) = der_tlv(info);
    let (_, _algorithm, rest) = der_tlv(rest);
    let (tag, private_key, _) = der_tlv(rest);
    assert_eq!(tag, 0x04);
    private_key
}
