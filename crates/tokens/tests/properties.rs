//! Property tests (the stable-toolchain stand-in for fuzzing) of every parser
//! that sees untrusted bytes: session ids from cookies, token endpoint
//! answers, discovery and JWKS documents, id_tokens and back-channel logout
//! tokens, and the post-sign-in return URL.
//!
//! Each property runs a bounded number of cases in CI (default below);
//! `PROPTEST_CASES=100000 cargo test -p oidc-bff-tokens --test properties`
//! runs a longer campaign. Failing inputs are saved under
//! `tests/properties.proptest-regressions` and replayed first on every run.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oidc_bff_tokens::discovery::ProviderMetadata;
use oidc_bff_tokens::id_token::{IdTokenExpectations, IdTokenValidator};
use oidc_bff_tokens::jwks::JwksCache;
use oidc_bff_tokens::login::sanitize_return_url;
use oidc_bff_tokens::logout_token::{BACKCHANNEL_LOGOUT_EVENT, LogoutTokenValidator};
use oidc_bff_tokens::provider::TokenResponse;
use oidc_bff_tokens::{AccessToken, IdToken, ManualClock, SessionId, TokenError};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://idp.example.com";
const CLIENT: &str = "bff";

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Any JSON value, a few levels deep.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A claim value that is sometimes right, sometimes subtly wrong.
fn claim(good: Value) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        4 => Just(Some(good)),
        1 => Just(None),
        1 => json_value().prop_map(Some),
        1 => prop_oneof![
            Just(json!("")),
            Just(json!(-1)),
            Just(json!(1.5)),
            Just(json!(u64::MAX)),
            Just(json!(1e300)),
            Just(json!([])),
            Just(json!({})),
            Just(json!("https://idp.example.com/")),
            Just(json!([CLIENT, "other"])),
        ]
        .prop_map(Some),
    ]
    .boxed()
}

fn object(pairs: Vec<(&str, Option<Value>)>, extra: Map<String, Value>) -> Value {
    let mut map = extra;
    for (name, value) in pairs {
        if let Some(value) = value {
            map.insert(name.to_owned(), value);
        }
    }
    Value::Object(map)
}

fn extra_claims() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

/// Logout token claims: mostly valid, each claim possibly missing or wrong.
fn logout_claims() -> BoxedStrategy<Value> {
    (
        (
            claim(json!(ISSUER)),
            claim(json!(CLIENT)),
            claim(json!(NOW)),
            claim(json!(NOW + 120)),
            claim(json!("jti-1")),
        ),
        (
            claim(json!("alice")),
            claim(json!("sid-1")),
            claim(json!({ BACKCHANNEL_LOGOUT_EVENT: {} })),
            prop::option::weighted(0.1, json_value()),
            extra_claims(),
        ),
    )
        .prop_map(
            |((iss, aud, iat, exp, jti), (sub, sid, events, nonce, extra))| {
                object(
                    vec![
                        ("iss", iss),
                        ("aud", aud),
                        ("iat", iat),
                        ("exp", exp),
                        ("jti", jti),
                        ("sub", sub),
                        ("sid", sid),
                        ("events", events),
                        ("nonce", nonce),
                    ],
                    extra,
                )
            },
        )
        .boxed()
}

/// id_token claims: mostly valid, each claim possibly missing or wrong.
fn id_token_claims() -> BoxedStrategy<Value> {
    (
        (
            claim(json!(ISSUER)),
            claim(json!(CLIENT)),
            claim(json!(NOW)),
            claim(json!(NOW + 300)),
            claim(json!("alice")),
        ),
        (
            claim(json!("n-1")),
            prop::option::weighted(0.3, claim(json!(CLIENT))),
            prop::option::weighted(0.3, claim(json!("x"))),
            prop::option::weighted(0.2, claim(json!(NOW + 100))),
            extra_claims(),
        ),
    )
        .prop_map(
            |((iss, aud, iat, exp, sub), (nonce, azp, at_hash, nbf, extra))| {
                object(
                    vec![
                        ("iss", iss),
                        ("aud", aud),
                        ("iat", iat),
                        ("exp", exp),
                        ("sub", sub),
                        ("nonce", nonce),
                        ("azp", azp.flatten()),
                        ("at_hash", at_hash.flatten()),
                        ("nbf", nbf.flatten()),
                    ],
                    extra,
                )
            },
        )
        .boxed()
}

/// One of `known`, or any string matching `regex`.
fn words(known: &'static [&'static str], regex: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(known).prop_map(str::to_owned),
        1 => regex,
    ]
    .boxed()
}

/// Strings built from the pieces open-redirect payloads are made of.
fn url_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/"),
        Just("//"),
        Just("\\"),
        Just("%2f"),
        Just("%2F"),
        Just("%5c"),
        Just("%5C"),
        Just("%09"),
        Just("%0a"),
        Just("%00"),
        Just("%"),
        Just("%25"),
        Just("\t"),
        Just("\n"),
        Just("\u{3000}"),
        Just("\u{ff0f}"),
        Just(":"),
        Just("@"),
        Just("."),
        Just(".."),
        Just("?"),
        Just("#"),
        Just("http"),
        Just("https:"),
        Just("javascript:"),
        Just("evil.example"),
        Just("a"),
        Just(" "),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

// ---------------------------------------------------------------------------
// A loopback JWKS server and signing key
// ---------------------------------------------------------------------------

struct Served {
    runtime: tokio::runtime::Runtime,
    url: Url,
    body: Arc<Mutex<Vec<u8>>>,
}

impl Served {
    /// A runtime with an HTTP server answering every request with `body`.
    fn start(body: Vec<u8>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let body = Arc::new(Mutex::new(body));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
        let served = Arc::clone(&body);
        runtime.spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let body = served.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut received = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { runtime, url, body }
    }

    fn jwks(&self) -> JwksCache {
        JwksCache::new(
            self.url.clone(),
            reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            Arc::new(ManualClock::new(NOW)),
            Duration::from_secs(30),
        )
    }
}

/// An ES256 key (fast to make) and a server publishing it.
struct Signer {
    served: Served,
    key: EncodingKey,
    jwks: JwksCache,
}

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap(),
        )
        .unwrap();
        jwk["kid"] = "k1".into();
        let served = Served::start(json!({ "keys": [jwk] }).to_string().into_bytes());
        let jwks = served.jwks();
        Signer { served, key, jwks }
    })
}

fn sign(claims: &Value, typ: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &signer().key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token from arbitrary header/payload bytes and signature.
fn raw_token() -> BoxedStrategy<String> {
    prop_oneof![
        ".{0,200}",
        (
            prop::collection::vec(any::<u8>(), 0..80),
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(any::<u8>(), 0..80),
        )
            .prop_map(|(h, p, s)| format!("{}.{}.{}", b64(&h), b64(&p), b64(&s))),
        (
            json_value(),
            json_value(),
            prop::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(h, p, s)| format!(
                "{}.{}.{}",
                b64(h.to_string().as_bytes()),
                b64(p.to_string().as_bytes()),
                b64(&s)
            )),
        (
            prop_oneof![
                Just("none"),
                Just("HS256"),
                Just("RS256"),
                Just("ES256"),
                Just("EdDSA"),
                Just("PS512"),
                Just("nOnE"),
            ],
            prop::option::of("[a-z0-9]{0,4}"),
            logout_claims(),
        )
            .prop_map(|(alg, kid, claims)| {
                let mut header = json!({ "alg": alg });
                if let Some(kid) = kid {
                    header["kid"] = kid.into();
                }
                format!(
                    "{}.{}.{}",
                    b64(header.to_string().as_bytes()),
                    b64(claims.to_string().as_bytes()),
                    b64(b"sig")
                )
            }),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn session_id_parse_accepts_exactly_43_base64url_chars(raw in prop_oneof![
        ".{0,60}",
        "[A-Za-z0-9_-]{43}",
        "[A-Za-z0-9_+/=-]{42,44}",
    ]) {
        match SessionId::parse(&raw) {
            Some(id) => {
                prop_assert_eq!(id.as_str(), raw.as_str());
                prop_assert_eq!(raw.len(), 43);
                prop_assert!(raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                let debug = format!("{:?}", id);
                prop_assert!(!debug.contains(&raw));
            }
            None => prop_assert!(
                raw.len() != 43 || raw.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            ),
        }
    }

    #[test]
    fn generated_session_ids_round_trip(_seed in any::<u8>()) {
        let id = SessionId::generate();
        prop_assert_eq!(SessionId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn token_responses_never_panic(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (claim(json!("at")), claim(json!("Bearer")), claim(json!(300)), claim(json!("rt")), claim(json!("x.y.z")), claim(json!("openid")))
            .prop_map(|(a, t, e, r, i, s)| object(vec![
                ("access_token", a), ("token_type", t), ("expires_in", e),
                ("refresh_token", r), ("id_token", i), ("scope", s),
            ], Map::new()).to_string().into_bytes()),
    ]) {
        if let Ok(response) = TokenResponse::from_json(&bytes) {
            prop_assert!(!response.access_token.secret().is_empty());
            prop_assert_eq!(response.token_type.as_str(), "Bearer");
            prop_assert!(response.refresh_token.as_ref().is_none_or(|t| !t.secret().is_empty()));
            prop_assert!(response.id_token.as_ref().is_none_or(|t| !t.secret().is_empty()));
        }
    }

    #[test]
    fn discovery_documents_never_panic(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (
            claim(json!(ISSUER)),
            claim(json!("https://idp.example.com/authorize")),
            claim(json!("https://idp.example.com/token")),
            claim(json!("https://idp.example.com/jwks")),
            claim(json!("javascript:alert(1)")),
            claim(json!(true)),
        )
            .prop_map(|(iss, authz, token, jwks, end, iss_param)| object(vec![
                ("issuer", iss),
                ("authorization_endpoint", authz),
                ("token_endpoint", token),
                ("jwks_uri", jwks),
                ("end_session_endpoint", end),
                ("authorization_response_iss_parameter_supported", iss_param),
            ], Map::new()).to_string().into_bytes()),
    ]) {
        if let Ok(metadata) = ProviderMetadata::from_json(&bytes, ISSUER) {
            prop_assert_eq!(metadata.issuer.trim_end_matches('/'), ISSUER);
            for url in [&metadata.authorization_endpoint, &metadata.token_endpoint, &metadata.jwks_uri] {
                prop_assert!(matches!(url.scheme(), "http" | "https"));
            }
        }
    }

    #[test]
    fn return_urls_always_stay_on_the_site(raw in prop_oneof![".{0,80}", url_like()]) {
        let out = sanitize_return_url(Some(&raw));
        prop_assert!(out.starts_with('/'), "{out:?}");
        prop_assert!(!out.starts_with("//"), "{out:?}");
        prop_assert!(!out.contains('\\'), "{out:?}");
        prop_assert!(!out.chars().any(char::is_control), "{out:?}");
        let base = Url::parse("https://app.example/").unwrap();
        let resolved = base.join(&out).unwrap();
        prop_assert_eq!(resolved.origin(), base.origin(), "{:?}", out);
        // Anything kept is kept verbatim.
        prop_assert!(out == "/" || out == raw);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn jwks_documents_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            json_value().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(
                (
                    words(&["RSA", "EC", "OKP", "oct"], ".{0,4}"),
                    prop::option::of(words(&["P-256", "P-384", "Ed25519", "P-521"], ".{0,5}")),
                    prop::option::of(words(&["RS256", "ES256", "EdDSA", "HS256"], ".{0,5}")),
                    prop::option::of("[A-Za-z0-9_-]{0,60}"),
                    prop::option::of("[A-Za-z0-9_-]{0,60}"),
                    prop::option::of(prop_oneof![Just("k1"), Just("k2")]),
                    prop::option::of(words(&["sig", "enc"], ".{0,3}")),
                ),
                0..5,
            )
            .prop_map(|keys| {
                let keys: Vec<Value> = keys
                    .into_iter()
                    .map(|(kty, crv, alg, a, b, kid, use_)| {
                        object(
                            vec![
                                ("kty", Some(json!(kty))),
                                ("crv", crv.map(Value::from)),
                                ("alg", alg.map(Value::from)),
                                ("n", a.clone().map(Value::from)),
                                ("e", b.clone().map(Value::from)),
                                ("x", a.map(Value::from)),
                                ("y", b.map(Value::from)),
                                ("kid", kid.map(Value::from)),
                                ("use", use_.map(Value::from)),
                            ],
                            Map::new(),
                        )
                    })
                    .collect();
                json!({ "keys": keys }).to_string().into_bytes()
            }),
        ],
        alg in prop_oneof![
            Just(Algorithm::RS256),
            Just(Algorithm::PS256),
            Just(Algorithm::ES256),
            Just(Algorithm::ES384),
            Just(Algorithm::EdDSA),
            Just(Algorithm::HS256),
        ],
        kid in prop::option::of(prop_oneof![Just("k1"), Just("k2"), Just("other")]),
    ) {
        static SERVED: OnceLock<Served> = OnceLock::new();
        let served = SERVED.get_or_init(|| Served::start(Vec::new()));
        *served.body.lock().unwrap() = body;
        let jwks = served.jwks();
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let result = served.runtime.block_on(jwks.keys_for(&header));
        match result {
            Ok(keys) => prop_assert!(!keys.is_empty()),
            Err(TokenError::InvalidIdToken(_) | TokenError::InvalidResponse(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        prop_assert_eq!(jwks.fetch_count(), 1);
    }

    #[test]
    fn logout_token_validation_never_panics(token in prop_oneof![
        raw_token(),
        (logout_claims(), prop::option::of(words(&["logout+jwt", "JWT", "at+jwt"], ".{0,8}")))
            .prop_map(|(claims, typ)| sign(&claims, typ.as_deref())),
    ]) {
        let signer = signer();
        let validator = LogoutTokenValidator::new(ISSUER, CLIENT, Arc::new(ManualClock::new(NOW)));
        match signer.served.runtime.block_on(validator.validate(&token, &signer.jwks)) {
            Ok(claims) => {
                prop_assert_eq!(claims.iss.as_str(), ISSUER);
                prop_assert_eq!(claims.aud, vec![CLIENT.to_owned()]);
                prop_assert!(claims.sub.is_some() || claims.sid.is_some());
                prop_assert!(!claims.jti.is_empty());
                prop_assert!(claims.all.get("nonce").is_none());
                prop_assert!(claims.all["events"][BACKCHANNEL_LOGOUT_EVENT].is_object());
                prop_assert!(claims.iat <= NOW + 60);
                prop_assert!(claims.exp.is_none_or(|exp| exp.saturating_add(60) > NOW));
            }
            Err(TokenError::InvalidIdToken(message)) => {
                prop_assert!(message.starts_with("logout token: "), "{}", message);
                for part in token.split('.').filter(|p| p.len() > 8) {
                    prop_assert!(!message.contains(part), "the token is echoed: {}", message);
                }
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }

    #[test]
    fn id_token_validation_never_panics(token in prop_oneof![
        raw_token(),
        id_token_claims().prop_map(|claims| sign(&claims, Some("JWT"))),
    ]) {
        let signer = signer();
        let validator = IdTokenValidator::new(ISSUER, CLIENT, Arc::new(ManualClock::new(NOW)));
        let access_token = AccessToken::new("at");
        let expected = IdTokenExpectations { nonce: Some("n-1"), access_token: Some(&access_token) };
        let result = signer
            .served
            .runtime
            .block_on(validator.validate(&IdToken::new(token.clone()), &signer.jwks, expected));
        match result {
            Ok(claims) => {
                prop_assert_eq!(claims.iss.as_str(), ISSUER);
                prop_assert!(claims.aud.iter().all(|a| a == CLIENT));
                prop_assert!(!claims.sub.is_empty());
                prop_assert_eq!(claims.nonce.as_deref(), Some("n-1"));
                prop_assert!(claims.exp.saturating_add(60) > NOW);
                prop_assert!(claims.at_hash.is_none(), "no at_hash can match \"at\" by chance");
            }
            Err(TokenError::InvalidIdToken(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
    }
}

/// The properties above would pass vacuously if no generated token could
/// ever validate; this shows the unmodified claims do.
#[test]
fn the_generators_can_produce_valid_tokens() {
    let signer = signer();
    let logout = json!({
        "iss": ISSUER, "aud": CLIENT, "iat": NOW, "exp": NOW + 120, "jti": "jti-1",
        "sub": "alice", "sid": "sid-1", "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    });
    let validator = LogoutTokenValidator::new(ISSUER, CLIENT, Arc::new(ManualClock::new(NOW)));
    signer
        .served
        .runtime
        .block_on(validator.validate(&sign(&logout, Some("logout+jwt")), &signer.jwks))
        .unwrap();

    let id_token = json!({
        "iss": ISSUER, "aud": CLIENT, "iat": NOW, "exp": NOW + 300, "sub": "alice", "nonce": "n-1",
    });
    let validator = IdTokenValidator::new(ISSUER, CLIENT, Arc::new(ManualClock::new(NOW)));
    let expected = IdTokenExpectations {
        nonce: Some("n-1"),
        access_token: None,
    };
    signer
        .served
        .runtime
        .block_on(validator.validate(
            &IdToken::new(sign(&id_token, Some("JWT"))),
            &signer.jwks,
            expected,
        ))
        .unwrap();
}
