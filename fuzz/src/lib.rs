//! What the fuzz targets share: a fixed Ed25519 signing key, its JWKS served
//! over loopback by a tiny HTTP server (so the real `JwksCache` fetches it
//! once and caches it), validators for id_tokens and logout tokens, and a
//! single-threaded runtime to drive them.
//!
//! Everything is built once per process and reused by every input; after the
//! first fetch no input causes network traffic, except in the `jwks` target,
//! which serves each input as the JWKS document.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use oidc_bff_tokens::id_token::IdTokenValidator;
use oidc_bff_tokens::jwks::JwksCache;
use oidc_bff_tokens::logout_token::LogoutTokenValidator;
use oidc_bff_tokens::{ManualClock, SharedClock};

/// The issuer every token is checked against.
pub const ISSUER: &str = "https://idp.example";
/// Our client id.
pub const CLIENT_ID: &str = "bff";
/// The key id of the signing key.
pub const KID: &str = "fuzz-key";
/// The validators' "now" (unix seconds).
pub const NOW: u64 = 1_800_000_000;

/// The shared set-up.
pub struct Fixture {
    /// Drives the async validators.
    pub runtime: tokio::runtime::Runtime,
    /// The JWKS of [`Fixture::key`], fetched once from the loopback server.
    pub jwks: JwksCache,
    /// Signs tokens the validators accept the signature of.
    pub key: EncodingKey,
    /// Validates id_tokens of [`ISSUER`] for [`CLIENT_ID`].
    pub id_tokens: IdTokenValidator,
    /// Validates logout tokens of [`ISSUER`] for [`CLIENT_ID`].
    pub logout_tokens: LogoutTokenValidator,
    /// Reaches the loopback server.
    pub http: reqwest::Client,
    /// The loopback server's JWKS URL.
    pub jwks_url: url::Url,
    clock: SharedClock,
}

/// What the loopback server answers with (the fixed JWKS unless a target
/// sets something else).
static SERVED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The set-up, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

fn build() -> Fixture {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).expect("key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let jwks = serde_json::json!({
        "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": KID, "use": "sig", "alg": "EdDSA" }]
    });
    *SERVED.lock().expect("served") = jwks.to_string().into_bytes();
    let jwks_url = serve();

    let clock: SharedClock = Arc::new(ManualClock::new(NOW));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let jwks = JwksCache::new(
        jwks_url.clone(),
        http.clone(),
        clock.clone(),
        // No refetch for an unknown kid while the clock stands still.
        Duration::from_secs(3600),
    );
    Fixture {
        runtime,
        jwks,
        key: EncodingKey::from_ed_der(pkcs8.as_ref()),
        id_tokens: IdTokenValidator::new(ISSUER, CLIENT_ID, clock.clone()),
        logout_tokens: LogoutTokenValidator::new(ISSUER, CLIENT_ID, clock.clone()),
        http,
        jwks_url,
        clock,
    }
}

impl Fixture {
    /// The validators' clock.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// `header.claims.signature` with the fixture's key (EdDSA), the header
    /// and claims taken as given (any bytes, base64url-encoded).
    pub fn sign(&self, header: &[u8], claims: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, Algorithm::EdDSA)
            .expect("sign");
        format!("{input}.{signature}")
    }

    /// Has the loopback server answer with `body` from now on.
    pub fn serve(&self, body: &[u8]) {
        *SERVED.lock().expect("served") = body.to_vec();
    }
}

/// Starts the loopback HTTP server; returns its JWKS URL.
fn serve() -> url::Url {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            // Read the request head; the body (there is none) is ignored.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" || line == "\n" {
                    break;
                }
                line.clear();
            }
            let body = SERVED.lock().expect("served").clone();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let mut stream = &stream;
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url.parse().expect("url")
}

/// Splits fuzz input at the first `0xff` byte (never valid UTF-8, so JSON
/// and text inputs can carry the separator unambiguously).
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
