//! The dev IdP's `private_key_jwt` checks (RFC 7523) and pushed
//! authorization requests (RFC 9126), with hand-made assertions so that
//! every check can be seen to fail: wrong `aud`, `iss`, `sub`, expired or
//! missing `exp`, missing or replayed `jti`, a foreign key, an unknown
//! `kid`; PAR with one-time, expiring `request_uri`s, `require_par`, and
//! client authentication at the PAR endpoint.

mod common;

use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{REDIRECT, get_json, http, pkce, query_param};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A test-only EC P-256 key: the signing key and its public JWK (`kid` "k1").
fn new_key() -> (EncodingKey, Value) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Valid claims for client `bff` at `idp`, with a fresh `jti`.
fn claims(idp: &RunningIdp) -> Value {
    let now = now();
    json!({
        "iss": "bff", "sub": "bff", "aud": idp.issuer(),
        "jti": format!("jti-{}", rand_suffix()), "iat": now, "exp": now + 60,
    })
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", now(), N.fetch_add(1, Ordering::Relaxed))
}

/// A client credentials grant authenticated by `assertion`.
async fn grant(idp: &RunningIdp, assertion: &str) -> (u16, Value) {
    post(
        idp,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
    .await
}

async fn post(idp: &RunningIdp, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http()
        .post(format!("{}{path}", idp.issuer()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn idp_with_key(jwk: Value) -> RunningIdp {
    DevIdp::builder()
        .client_jwks("bff", json!({"keys": [jwk]}))
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_valid_assertion_is_accepted_once() {
    let (key, jwk) = new_key();
    let idp = idp_with_key(jwk).await;
    let assertion = sign(&key, Some("k1"), &claims(&idp));
    let (status, body) = grant(&idp, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.counters().client_assertions, 1);
    // The same assertion again: its jti was used.
    let (status, body) = grant(&idp, &assertion).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("jti was already used"),
        "{body}"
    );
    // The token endpoint URL is an accepted audience too.
    let mut c = claims(&idp);
    c["aud"] = json!([format!("{}/token", idp.issuer())]);
    assert_eq!(grant(&idp, &sign(&key, Some("k1"), &c)).await.0, 200);
    // A secret does not work for a client registered with keys only.
    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth("bff", Some("secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn every_claim_is_checked() {
    let (key, jwk) = new_key();
    let idp = idp_with_key(jwk).await;
    let now = now();
    type Edit = fn(&mut Value, u64);
    let cases: [(&str, Edit, &str); 9] = [
        (
            "wrong aud",
            |c, _| c["aud"] = json!("https://elsewhere.example"),
            "aud",
        ),
        (
            "no aud",
            |c, _| {
                c.as_object_mut().unwrap().remove("aud");
            },
            "aud",
        ),
        ("wrong iss", |c, _| c["iss"] = json!("other"), "iss"),
        ("sub differs", |c, _| c["sub"] = json!("alice"), "sub"),
        ("expired", |c, now| c["exp"] = json!(now - 1), "expired"),
        (
            "no exp",
            |c, _| {
                c.as_object_mut().unwrap().remove("exp");
            },
            "exp",
        ),
        (
            "exp far ahead",
            |c, now| c["exp"] = json!(now + 3600),
            "exp",
        ),
        (
            "no jti",
            |c, _| {
                c.as_object_mut().unwrap().remove("jti");
            },
            "jti",
        ),
        (
            "iat in the future",
            |c, now| c["iat"] = json!(now + 600),
            "iat",
        ),
    ];
    for (what, edit, expected) in cases {
        let mut c = claims(&idp);
        edit(&mut c, now);
        let (status, body) = grant(&idp, &sign(&key, Some("k1"), &c)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], "invalid_client", "{what}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(expected), "{what}: {description}");
    }
    // Signed by another key, under the registered kid; or an unknown kid.
    let (other, _) = new_key();
    for (signer, kid, expected) in [(&other, "k1", "signature"), (&key, "k2", "kid")] {
        let (status, body) = grant(&idp, &sign(signer, Some(kid), &claims(&idp))).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{body}"
        );
    }
    // A wrong assertion type; a posted client_id that is not the issuer.
    let assertion = sign(&key, Some("k1"), &claims(&idp));
    let (status, _) = post(
        &idp,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:example:other"),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &idp,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "someone-else"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(idp.counters().client_assertions, 0);
}

#[tokio::test]
async fn discovery_announces_private_key_jwt_and_par() {
    let idp = DevIdp::builder().require_par(true).start().await.unwrap();
    let doc = get_json(&format!(
        "{}/.well-known/openid-configuration",
        idp.issuer()
    ))
    .await;
    assert_eq!(
        doc["pushed_authorization_request_endpoint"],
        format!("{}/par", idp.issuer())
    );
    assert_eq!(doc["require_pushed_authorization_requests"], true);
    assert!(
        doc["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );
    let plain = DevIdp::builder().start().await.unwrap();
    let doc = get_json(&format!(
        "{}/.well-known/oauth-authorization-server",
        plain.issuer()
    ))
    .await;
    assert_eq!(doc["require_pushed_authorization_requests"], false);
}

/// Pushes an authorization request for `bff` / `secret`; the answer.
async fn push(idp: &RunningIdp, challenge: &str) -> (u16, Value) {
    let response = http()
        .post(format!("{}/par", idp.issuer()))
        .basic_auth("bff", Some("secret"))
        .form(&[
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "st"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn authorize_with(idp: &RunningIdp, request_uri: &str) -> reqwest::Response {
    http()
        .get(format!("{}/authorize", idp.issuer()))
        .query(&[("client_id", "bff"), ("request_uri", request_uri)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pushed_requests_are_one_time_and_expire() {
    let idp = DevIdp::builder()
        .require_par(true)
        .par_request_uri_lifetime(Duration::from_secs(30))
        .start()
        .await
        .unwrap();
    let (_, challenge) = pkce();
    let (status, body) = push(&idp, &challenge).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in"], 30);
    let request_uri = body["request_uri"].as_str().unwrap().to_owned();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    let response = authorize_with(&idp, &request_uri).await;
    assert_eq!(response.status(), 302);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert!(query_param(&location, "code").is_some(), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st"));
    // One use only.
    assert_eq!(authorize_with(&idp, &request_uri).await.status(), 400);
    // With require_par, a plain request is refused.
    let response = http()
        .get(format!("{}/authorize", idp.issuer()))
        .query(&[
            ("response_type", "code"),
            ("client_id", "bff"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // An expired request_uri is refused.
    idp.faults().set_par_request_uris_expired(true);
    let (_, body) = push(&idp, &challenge).await;
    let response = authorize_with(&idp, body["request_uri"].as_str().unwrap()).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("expired"));
    // Another client can not use it.
    idp.faults().set_par_request_uris_expired(false);
    let (_, body) = push(&idp, &challenge).await;
    let response = http()
        .get(format!("{}/authorize", idp.issuer()))
        .query(&[
            ("client_id", "other"),
            ("request_uri", body["request_uri"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(idp.counters().pushed_authorization_requests, 3);
}

#[tokio::test]
async fn the_par_endpoint_authenticates_and_checks_the_request() {
    let idp = DevIdp::builder().start().await.unwrap();
    let (_, challenge) = pkce();
    // No client authentication.
    let (status, body) = post(
        &idp,
        "/par",
        &[
            ("client_id", "bff"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // A request_uri inside a pushed request; a foreign redirect URI.
    for extra in [
        [("redirect_uri", REDIRECT), ("request_uri", "urn:x")],
        [
            ("redirect_uri", "https://evil.example/cb"),
            ("scope", "openid"),
        ],
    ] {
        let mut form = vec![
            ("response_type", "code"),
            ("code_challenge", challenge.as_str()),
        ];
        form.extend(extra);
        let response = http()
            .post(format!("{}/par", idp.issuer()))
            .basic_auth("bff", Some("secret"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{extra:?}");
    }
    // Injected failure.
    idp.faults()
        .set_par_answer(Some((503, "<html>maintenance</html>")));
    assert_eq!(push(&idp, &challenge).await.0, 503);
    assert_eq!(idp.counters().pushed_authorization_requests, 0);
}
