//! Unit tests of the `logout_token` module.

use std::sync::Arc;

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
    validator: LogoutTokenValidator,
    jwks: JwksCache,
    key: TestKey,
    _server: JwksServer,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_key(rsa_key("rsa-1")).await
    }

    async fn with_key(key: TestKey) -> Self {
        let server = JwksServer::start(jwks_json(&[&key])).await;
        let clock = ManualClock::new(NOW);
        let jwks = JwksCache::new(
            server.url.clone(),
            http_client(),
            Arc::new(clock.clone()),
            Duration::from_secs(60),
        );
        let validator = LogoutTokenValidator::new(ISSUER, CLIENT, Arc::new(clock.clone()));
        Self {
            clock,
            validator,
            jwks,
            key,
            _server: server,
        }
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": CLIENT,
            "iat": NOW,
            "exp": NOW + 120,
            "jti": "bWJq",
            "sub": "user-42",
            "sid": "08a5019c-17e1-4977-8f42-65a12843ea02",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        })
    }

    fn sign_typed(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.key.alg);
        header.kid = Some(self.key.kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key.encoding).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_typed(Some("logout+jwt"), claims)
    }

    async fn validate(&self, token: &str) -> Result<LogoutTokenClaims, TokenError> {
        self.validator.validate(token, &self.jwks).await
    }

    async fn validate_edited(
        &self,
        edit: impl FnOnce(&mut Value),
    ) -> Result<LogoutTokenClaims, TokenError> {
        let mut claims = Self::claims();
        edit(&mut claims);
        self.validate(&self.sign(&claims)).await
    }
}

#[track_caller]
fn assert_invalid(result: Result<LogoutTokenClaims, TokenError>, needle: &str) {
    match result {
        Err(TokenError::InvalidIdToken(msg)) => {
            assert!(msg.starts_with("logout token: "), "{msg}");
            assert!(msg.contains(needle), "expected {needle:?}, got {msg:?}");
        }
        other => panic!("expected InvalidIdToken({needle:?}), got {other:?}"),
    }
}

fn b64(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let f = Fixture::new().await;
    let claims = f.validate(&f.sign(&Fixture::claims())).await.unwrap();
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.sub.as_deref(), Some("user-42"));
    assert_eq!(
        claims.sid.as_deref(),
        Some("08a5019c-17e1-4977-8f42-65a12843ea02")
    );
    assert_eq!(claims.aud, vec![CLIENT.to_owned()]);
    assert_eq!(claims.iat, NOW);
    assert_eq!(claims.exp, Some(NOW + 120));
    assert_eq!(claims.jti, "bWJq");

    // Untyped, JWT-typed, and only one of sub/sid, and no exp: all fine.
    f.validate(&f.sign_typed(None, &Fixture::claims()))
        .await
        .unwrap();
    f.validate(&f.sign_typed(Some("JWT"), &Fixture::claims()))
        .await
        .unwrap();
    f.validate(&f.sign_typed(Some("application/logout+jwt"), &Fixture::claims()))
        .await
        .unwrap();
    f.validate_edited(|c| {
        c.as_object_mut().unwrap().remove("sub");
    })
    .await
    .unwrap();
    let only_sub = f
        .validate_edited(|c| {
            c.as_object_mut().unwrap().remove("sid");
            c.as_object_mut().unwrap().remove("exp");
        })
        .await
        .unwrap();
    assert_eq!(only_sub.sid, None);
    assert_eq!(only_sub.exp, None);
    f.validate_edited(|c| c["aud"] = json!([CLIENT]))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_signature_is_checked_like_an_id_token() {
    let f = Fixture::new().await;
    // Another key under the published kid.
    let attacker = other_rsa_key("rsa-1");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let forged = jsonwebtoken::encode(&header, &Fixture::claims(), &attacker.encoding).unwrap();
    assert_invalid(f.validate(&forged).await, "signature");

    // Tampered payload.
    let token = f.sign(&Fixture::claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = Fixture::claims();
    claims["sid"] = "someone-else".into();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_invalid(f.validate(&tampered).await, "signature");

    // alg none, with and without a signature part.
    for sig in ["", "x"] {
        let none = format!(
            "{}.{}.{sig}",
            b64(&json!({ "alg": "none", "typ": "logout+jwt" })),
            b64(&Fixture::claims())
        );
        assert!(matches!(
            f.validate(&none).await,
            Err(TokenError::InvalidIdToken(_))
        ));
    }

    // HS256 keyed with the public key's modulus.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &Fixture::claims(),
        &EncodingKey::from_secret(f.key.jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert_invalid(f.validate(&hs).await, "symmetric");
    let lax = f
        .validator
        .clone()
        .with_allowed_algs(vec![Algorithm::HS256, Algorithm::RS256]);
    assert!(lax.validate(&hs, &f.jwks).await.is_err());

    // An allowed-list that excludes RS256.
    let es_only = f
        .validator
        .clone()
        .with_allowed_algs(vec![Algorithm::ES256]);
    assert!(
        es_only
            .validate(&f.sign(&Fixture::claims()), &f.jwks)
            .await
            .is_err()
    );

    // Garbage.
    for garbage in ["", "a", "a.b", "a.b.c", "a.b.c.d.e", "...."] {
        assert!(matches!(
            f.validate(garbage).await,
            Err(TokenError::InvalidIdToken(_))
        ));
    }
    let huge = format!("{}.{}.x", "a".repeat(70_000), "b");
    assert_invalid(f.validate(&huge).await, "too large");
}

#[tokio::test]
async fn es256_tokens_verify() {
    let f = Fixture::with_key(ec_key("ec-1")).await;
    f.validate(&f.sign(&Fixture::claims())).await.unwrap();
}

#[tokio::test]
async fn unexpected_typ_is_rejected() {
    let f = Fixture::new().await;
    for typ in ["at+jwt", "secevent+jwt", "id_token"] {
        assert_invalid(
            f.validate(&f.sign_typed(Some(typ), &Fixture::claims()))
                .await,
            "typ",
        );
    }
}

#[tokio::test]
async fn claims_are_checked() {
    let f = Fixture::new().await;
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit)> = vec![
        ("issuer mismatch", |c| {
            c["iss"] = "https://evil.example".into()
        }),
        ("issuer mismatch", |c| {
            c["iss"] = format!("{ISSUER}/").into()
        }),
        ("missing iss", |c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
        ("client_id", |c| c["aud"] = "other-client".into()),
        ("client_id", |c| c["aud"] = json!([])),
        ("another audience", |c| c["aud"] = json!([CLIENT, "api"])),
        ("missing aud", |c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        ("malformed aud", |c| c["aud"] = json!(5)),
        ("missing iat", |c| {
            c.as_object_mut().unwrap().remove("iat");
        }),
        ("malformed iat", |c| c["iat"] = "now".into()),
        ("future", |c| c["iat"] = (NOW + 61).into()),
        ("too old", |c| {
            c["iat"] = (NOW - 661).into();
            c.as_object_mut().unwrap().remove("exp");
        }),
        ("expired", |c| c["exp"] = (NOW - 60).into()),
        ("not yet valid", |c| c["nbf"] = (NOW + 61).into()),
        ("missing events", |c| {
            c.as_object_mut().unwrap().remove("events");
        }),
        ("malformed events", |c| {
            c["events"] = json!([BACKCHANNEL_LOGOUT_EVENT])
        }),
        ("lacks the back-channel", |c| {
            c["events"] = json!({ "http://schemas.openid.net/event/other": {} })
        }),
        ("malformed back-channel", |c| {
            c["events"] = json!({ BACKCHANNEL_LOGOUT_EVENT: "yes" })
        }),
        ("neither sub nor sid", |c| {
            c.as_object_mut().unwrap().remove("sub");
            c.as_object_mut().unwrap().remove("sid");
        }),
        ("empty", |c| c["sid"] = "".into()),
        ("malformed sub", |c| c["sub"] = json!(42)),
        ("nonce", |c| c["nonce"] = "n-0S6_WzA2Mj".into()),
        ("missing jti", |c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
        ("malformed jti", |c| c["jti"] = "".into()),
        ("malformed jti", |c| c["jti"] = "j".repeat(257).into()),
    ];
    for (needle, edit) in cases {
        assert_invalid(f.validate_edited(edit).await, needle);
    }
    // Within the leeway is fine.
    f.validate_edited(|c| c["iat"] = (NOW + 60).into())
        .await
        .unwrap();
    f.validate_edited(|c| c["exp"] = (NOW - 59).into())
        .await
        .unwrap();
}

#[tokio::test]
async fn time_moves_on() {
    let f = Fixture::new().await;
    let token = f.sign(&Fixture::claims());
    f.validate(&token).await.unwrap();
    f.clock.advance(Duration::from_secs(120 + 60));
    assert_invalid(f.validate(&token).await, "expired");

    let mut claims = Fixture::claims();
    claims.as_object_mut().unwrap().remove("exp");
    let no_exp = f.sign(&claims);
    f.clock.set(NOW + 600 + 60);
    f.validate(&no_exp).await.unwrap();
    f.clock.advance(Duration::from_secs(1));
    assert_invalid(f.validate(&no_exp).await, "too old");
    assert!(f.validator.replay_window() >= Duration::from_secs(661));
}

#[tokio::test]
async fn an_id_token_is_not_a_logout_token() {
    let f = Fixture::new().await;
    let id_token = json!({
        "iss": ISSUER, "sub": "user-42", "aud": CLIENT, "iat": NOW, "exp": NOW + 300,
        "nonce": "n", "sid": "s", "jti": "j",
    });
    assert_invalid(
        f.validate(&f.sign_typed(Some("JWT"), &id_token)).await,
        "events",
    );
}

#[tokio::test]
async fn errors_never_contain_the_token() {
    let f = Fixture::new().await;
    let token = f.sign(&json!({ "iss": "x", "aud": CLIENT }));
    let message = f.validate(&token).await.unwrap_err().to_string();
    for part in token.split('.') {
        assert!(!message.contains(part));
    }
}

/// Signs the dev IdP's user in through `client` (no browser); returns
/// the new session id.
async fn sign_in_at_dev_idp(client: &TokenEngine) -> SessionId {
    let start = client
        .begin_login("http://127.0.0.1:1/callback", Some("/"))
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let response = http.get(start.authorization_url).send().await.unwrap();
    let location = response.headers()["location"].to_str().unwrap();
    let callback = url::Url::parse(location).unwrap();
    let mut params = crate::login::CallbackParams::default();
    for (k, v) in callback.query_pairs() {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "code" => params.code = v,
            "state" => params.state = v,
            "iss" => params.iss = v,
            _ => {}
        }
    }
    client
        .complete_login(&start.binding, &params)
        .await
        .unwrap()
        .session_id
}

/// The dev IdP and a client on a [`FaultyStore`](crate::store::testing::FaultyStore)
/// over the memory store, sharing one manual clock.
async fn client_over_a_faulty_store() -> (
    oidc_bff_dev_idp::RunningIdp,
    Arc<crate::store::testing::FaultyStore>,
    TokenEngine,
) {
    use crate::clock::Clock as _;

    let clock = ManualClock::starting_now();
    let idp_clock = clock.clone();
    let idp = oidc_bff_dev_idp::DevIdp::builder()
        .clock(move || idp_clock.now_unix())
        .start()
        .await
        .unwrap();
    let store = Arc::new(crate::store::testing::FaultyStore::new(Arc::new(
        crate::store::MemoryStore::with_clock(Arc::new(clock.clone())),
    )));
    let config = crate::OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .build()
        .unwrap();
    let client = TokenEngine::builder(config)
        .store(store.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (idp, store, client)
}

/// docs/SECURITY.md: "a failure remembers no jti". The provider's retry
/// of a delivery that failed on the store must end the session, not be
/// refused as a replay.
#[tokio::test]
async fn after_a_store_failure_the_providers_retry_ends_the_session() {
    let (idp, store, client) = client_over_a_faulty_store().await;
    let id = sign_in_at_dev_idp(&client).await;
    let sid = client
        .load_session(&id)
        .await
        .unwrap()
        .unwrap()
        .record
        .sid
        .clone()
        .unwrap();
    let token = idp.sign_logout_token(Some("alice"), Some(&sid), "bff");

    // The store fails while the session is being ended: a transient
    // error (503 at the endpoint), and the session is still there.
    store.fail_deletes(true);
    let err = client.backchannel_logout(&token).await.unwrap_err();
    assert!(matches!(err, TokenError::Store(_)), "{err}");
    assert!(err.is_transient());
    assert!(client.load_session(&id).await.unwrap().is_some());

    // The store is back and the provider retries the same token.
    store.fail_deletes(false);
    let done = client.backchannel_logout(&token).await.unwrap();
    assert!(done.ended == [id.clone()], "the retry ended the session");
    assert_eq!(done.revoked, 1);
    assert!(client.load_session(&id).await.unwrap().is_none());
    // Revocation runs in the background.
    for _ in 0..200 {
        if idp.counters().revocations > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(idp.counters().revocations, 1);

    // Handled once, the token is remembered: a replay is refused.
    match client.backchannel_logout(&token).await {
        Err(TokenError::InvalidIdToken(reason)) => assert!(reason.contains("replayed")),
        other => panic!("a replay must be refused: {other:?}"),
    }
}

/// Issue 15, defect 5: a handling cut off half-way (a server timeout
/// drops the future while the store is slow) forgets its `jti`, so the
/// provider's retry ends the session instead of being refused.
#[tokio::test]
async fn a_cut_off_logout_forgets_its_jti() {
    let (idp, store, client) = client_over_a_faulty_store().await;
    let id = sign_in_at_dev_idp(&client).await;
    let token = idp.sign_logout_token(Some("alice"), None, "bff");

    store.delay_loads(Duration::from_secs(5));
    let cut = tokio::time::timeout(
        Duration::from_millis(300),
        client.backchannel_logout(&token),
    )
    .await;
    assert!(cut.is_err(), "the handling was cut off");
    store.delay_loads(Duration::ZERO);
    // The guard forgets the jti in a spawned task: give it a moment.
    let mut done = None;
    for _ in 0..100 {
        match client.backchannel_logout(&token).await {
            Ok(d) => {
                done = Some(d);
                break;
            }
            Err(TokenError::InvalidIdToken(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    let done = done.expect("the retry was refused as a replay");
    assert!(done.ended == [id.clone()]);
    assert!(client.load_session(&id).await.unwrap().is_none());
}
