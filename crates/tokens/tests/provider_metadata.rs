//! How the engine follows what the provider publishes: a moved `jwks_uri`,
//! and what userinfo may (and may not) add to a session.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use oidc_bff_dev_idp::IdTokenFault;
use oidc_bff_tokens::{ManualClock, MemoryStore, OidcConfig, TokenEngine, UserTokenRequest};
use serde_json::json;

fn b64(value: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn a_moved_jwks_uri_gets_one_new_key_cache_not_one_per_call() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let client = common::client(&idp, store, &clock);
    common::sign_in(&client).await;
    assert_eq!(idp.counters().jwks, 1);

    // The provider moves its keys; the engine notices at the next discovery refresh.
    let moved = format!("{}/jwks?moved=1", idp.issuer());
    idp.faults().set_discovery_jwks_uri(Some(&moved));
    clock.advance(client.config().discovery_refresh);

    // Back-channel logout tokens, as the unauthenticated endpoint receives them.
    for _ in 0..20 {
        let token = idp.sign_logout_token(Some("alice"), None, "bff");
        client.validate_logout_token(&token).await.expect("valid");
    }
    assert_eq!(client.metadata().await.unwrap().jwks_uri.as_str(), moved);
    assert_eq!(idp.counters().jwks, 2, "one fetch at the new location");

    // The new cache keeps the refetch rate limit: random kids cost one refetch.
    let valid = idp.sign_logout_token(Some("alice"), None, "bff");
    let (_, rest) = valid.split_once('.').unwrap();
    for i in 0..20 {
        let header = json!({ "alg": "RS256", "typ": "logout+jwt", "kid": format!("random-{i}") });
        let forged = format!("{}.{rest}", b64(&header));
        assert!(client.validate_logout_token(&forged).await.is_err());
    }
    assert_eq!(idp.counters().jwks, 3);
}

#[tokio::test]
async fn a_jwks_outage_before_any_keys_are_cached_costs_one_fetch_per_interval() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let client = common::client(&idp, store, &clock);
    idp.faults().set_jwks_status(Some(503));

    // A flood of back-channel logout tokens while the keys cannot be had.
    for _ in 0..50 {
        let token = idp.sign_logout_token(Some("alice"), None, "bff");
        let err = client.validate_logout_token(&token).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }
    assert_eq!(idp.counters().jwks, 1);

    // The provider recovers; the next attempt waits for the refetch interval.
    idp.faults().set_jwks_status(None);
    let token = idp.sign_logout_token(Some("alice"), None, "bff");
    assert!(client.validate_logout_token(&token).await.is_err());
    assert_eq!(idp.counters().jwks, 1);
    clock.advance(client.config().jwks_min_refetch);
    let token = idp.sign_logout_token(Some("alice"), None, "bff");
    client.validate_logout_token(&token).await.expect("valid");
    assert_eq!(idp.counters().jwks, 2);
}

#[tokio::test]
async fn userinfo_adds_user_claims_but_no_protocol_claims() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    // A provider whose id_tokens carry no `azp` (one audience: allowed), and
    // whose userinfo answer carries claims about tokens and authentication.
    idp.faults()
        .set_id_token_fault(Some(IdTokenFault::MissingAzp));
    idp.faults().set_userinfo_extra_claims(Some(json!({
        "nickname": "ally",
        "azp": "someone-else",
        "iss": "http://evil.example",
        "aud": "evil",
        "exp": 1,
        "iat": 1,
        "auth_time": 1,
        "sid": "another-session",
        "nonce": "replayed",
        "at_hash": "x",
        "c_hash": "y",
        "jti": "z",
        "acr": "weak",
        "amr": ["none"],
    })));
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .load_userinfo(true)
        .timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .build()
        .unwrap();
    let client = TokenEngine::builder(config)
        .store(Arc::new(MemoryStore::with_clock(Arc::new(clock.clone()))))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let id = common::sign_in(&client).await;
    assert_eq!(idp.counters().userinfo, 1);

    let session = client.load_session(&id).await.unwrap().unwrap();
    let claims = &session.record.claims;
    assert_eq!(claims.get("nickname"), Some(&json!("ally")), "user claims");
    assert_eq!(claims.get("email"), Some(&json!("alice@example.com")));
    for protocol in ["azp", "nonce", "at_hash", "c_hash", "jti", "acr", "amr"] {
        assert!(
            !claims.contains_key(protocol),
            "{protocol} came from userinfo"
        );
    }
    // Those the id_token had keep the id_token's values.
    assert_eq!(claims.get("iss"), Some(&json!(idp.issuer())));
    assert_eq!(claims.get("aud"), Some(&json!("bff")));
    assert_ne!(claims.get("auth_time"), Some(&json!(1)));
    assert_ne!(claims.get("exp"), Some(&json!(1)));
    assert_eq!(
        claims.get("sid"),
        session.record.sid.as_ref().map(|s| json!(s)).as_ref()
    );
    assert_ne!(claims.get("sid"), Some(&json!("another-session")));

    // The refresh comparison (OIDC Core 12.2) sees the id_token's claims
    // only: the refreshed id_token (again without azp) is accepted.
    clock.advance(Duration::from_secs(400));
    let token = client
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .expect("the refresh is accepted and the session kept");
    assert_ne!(&token, &session.record.tokens.access_token);
    assert_eq!(idp.counters().refresh_grants, 1);
    assert!(client.load_session(&id).await.unwrap().is_some());
}
