//! Unit tests of the `id_token` module.

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
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg).unwrap();
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
