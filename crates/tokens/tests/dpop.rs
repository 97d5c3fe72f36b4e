//! DPoP (RFC 9449) end to end against the dev IdP: sessions bound to one
//! key from the authorization request on, every refresh proved, nonces
//! retried once (never looped), downgrades refused, client credentials
//! bound to one key shared through the store; and the proofs a verifier
//! must refuse.

mod common;

use std::sync::Arc;
use std::time::Duration;

use oidc_bff_dev_idp::RunningIdp;
use oidc_bff_dev_idp::dpop::{NonceMode, ProofError, ReplayCache, verify_proof};
use oidc_bff_tokens::dpop::{DpopAlg, DpopKey};
use oidc_bff_tokens::{
    AccessToken, ClientCredentialsRequest, ManualClock, MemoryStore, OidcConfig, SessionStore,
    TokenEngine, TokenError, UserTokenRequest,
};

fn engine(
    idp: &RunningIdp,
    store: Arc<dyn SessionStore>,
    clock: &ManualClock,
    tune: impl FnOnce(oidc_bff_tokens::OidcConfigBuilder) -> oidc_bff_tokens::OidcConfigBuilder,
) -> TokenEngine {
    let config = tune(
        OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .timeouts(Duration::from_secs(2), Duration::from_secs(5))
            .dpop(true),
    )
    .build()
    .expect("config");
    TokenEngine::builder(config)
        .store(store)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("engine")
}

async fn setup() -> (RunningIdp, ManualClock, Arc<dyn SessionStore>) {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    (idp, clock, store)
}

#[tokio::test]
async fn sign_in_and_refresh_are_bound_to_the_sessions_key() {
    let (idp, clock, store) = setup().await;
    let engine = engine(&idp, store, &clock, |b| b);
    let start = engine
        .begin_login(common::REDIRECT_URI, None)
        .await
        .unwrap();
    let jkt = start
        .authorization_url
        .query_pairs()
        .find(|(k, _)| k == "dpop_jkt")
        .map(|(_, v)| v.into_owned())
        .expect("dpop_jkt on the authorization request");
    let id = common::sign_in(&engine).await;
    let session = engine.load_session(&id).await.unwrap().unwrap();
    let key = session.record.dpop_binding().expect("a DPoP-bound session");
    assert_ne!(key.thumbprint(), jkt, "one key per sign-in");
    assert_eq!(session.record.tokens.token_type, "DPoP");
    let first = session.record.tokens.access_token.clone();
    assert_eq!(
        idp.token_jkt(first.secret()).as_deref(),
        Some(key.thumbprint())
    );

    // Every refresh proves the same key; the new token is bound to it.
    clock.advance(Duration::from_secs(400));
    let renewed = engine
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap();
    assert_ne!(renewed, first);
    assert_eq!(
        idp.token_jkt(renewed.secret()).as_deref(),
        Some(key.thumbprint())
    );
    assert_eq!(idp.counters().refresh_grants, 1);
    let after = engine.load_session(&id).await.unwrap().unwrap();
    assert_eq!(after.record.dpop_key.as_ref(), Some(key));
}

#[tokio::test]
async fn userinfo_is_called_with_the_dpop_scheme_and_a_proof() {
    let (idp, clock, store) = setup().await;
    // Nonces required everywhere: the userinfo call must carry the
    // provider's current one too (learnt at the token endpoint, same origin).
    idp.faults().set_dpop_nonce(NonceMode::Required);
    idp.faults()
        .set_userinfo_extra_claims(Some(serde_json::json!({ "nickname": "bound-ally" })));
    let engine = engine(&idp, store, &clock, |b| b.load_userinfo(true));
    let id = common::sign_in(&engine).await;
    // The dev IdP refuses a bound token sent as `Bearer` (RFC 9449 §7.1):
    // the claim only userinfo carries is there only if the call was proved.
    let session = engine.load_session(&id).await.unwrap().unwrap();
    assert_eq!(
        session.record.claims.get("nickname"),
        Some(&serde_json::json!("bound-ally")),
        "userinfo was refused"
    );
    assert_eq!(idp.counters().userinfo, 1, "no retry: the nonce was known");
}

#[tokio::test]
async fn a_refresh_token_is_useless_with_another_key() {
    let (idp, clock, store) = setup().await;
    let engine = engine(&idp, store.clone(), &clock, |b| b);
    let id = common::sign_in(&engine).await;
    // Someone with the refresh token but another key.
    let loaded = store.load(&id).await.unwrap().unwrap();
    let mut stolen = (*loaded.record).clone();
    stolen.dpop_key = Some(DpopKey::generate(DpopAlg::Es256).unwrap());
    store.update(&id, stolen, loaded.version).await.unwrap();
    clock.advance(Duration::from_secs(400));
    let err = engine
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::Provider { error, .. } if error.as_str() == "invalid_dpop_proof"),
        "{err:?}"
    );
    assert_eq!(idp.counters().refresh_grants, 0);
}

#[tokio::test]
async fn the_providers_nonce_is_used_after_one_retry() {
    let (idp, clock, store) = setup().await;
    idp.faults().set_dpop_nonce(NonceMode::Required);
    let engine = engine(&idp, store, &clock, |b| b);
    let id = common::sign_in(&engine).await;
    // The code exchange: one `use_dpop_nonce`, then success.
    assert_eq!(idp.counters().token_errors, 1);
    assert_eq!(idp.counters().code_grants, 1);
    // The nonce is remembered: the refresh needs no retry...
    clock.advance(Duration::from_secs(400));
    engine
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(idp.counters().token_errors, 1);
    // ...until the provider moves on: one more retry.
    idp.rotate_dpop_nonce();
    clock.advance(Duration::from_secs(400));
    engine
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(idp.counters().token_errors, 2);
    assert_eq!(idp.counters().refresh_grants, 2);
}

#[tokio::test]
async fn a_provider_wanting_a_new_nonce_every_time_is_asked_twice_only() {
    let (idp, clock, store) = setup().await;
    idp.faults().set_dpop_nonce(NonceMode::AlwaysNew);
    let engine = engine(&idp, store, &clock, |b| b);
    let start = engine
        .begin_login(common::REDIRECT_URI, None)
        .await
        .unwrap();
    let params = common::authorize(&start).await;
    let err = engine
        .complete_login(&start.binding, &params)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use_dpop_nonce"), "{err}");
    assert_eq!(idp.counters().token_errors, 2, "one try and one retry");
    // Client credentials too.
    let err = engine
        .client_access_token(&ClientCredentialsRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Provider { .. }), "{err:?}");
    assert_eq!(idp.counters().token_errors, 4);
}

#[tokio::test]
async fn a_bearer_answer_is_a_refused_downgrade_unless_allowed() {
    let (idp, clock, store) = setup().await;
    idp.faults().set_dpop_answer_bearer(true);
    let strict = engine(&idp, store.clone(), &clock, |b| b);
    let start = strict
        .begin_login(common::REDIRECT_URI, None)
        .await
        .unwrap();
    let params = common::authorize(&start).await;
    let err = strict
        .complete_login(&start.binding, &params)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::DpopDowngrade), "{err:?}");
    let err = strict
        .client_access_token(&ClientCredentialsRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::DpopDowngrade), "{err:?}");

    let lenient = engine(&idp, store, &clock, |b| b.allow_bearer_downgrade(true));
    let id = common::sign_in(&lenient).await;
    let session = lenient.load_session(&id).await.unwrap().unwrap();
    assert_eq!(session.record.tokens.token_type, "Bearer");
    assert!(
        session.record.dpop_binding().is_none(),
        "sent as a bearer token"
    );
    let (_, key) = lenient
        .client_access_token_bound(&ClientCredentialsRequest::default())
        .await
        .unwrap();
    assert!(key.is_none());
}

#[tokio::test]
async fn client_credentials_share_one_key_through_the_store() {
    let (idp, clock, store) = setup().await;
    let one = engine(&idp, store.clone(), &clock, |b| b);
    let two = engine(&idp, store.clone(), &clock, |b| b);
    let (k1, k2) = tokio::join!(one.client_dpop_key(), two.client_dpop_key());
    let (k1, k2) = (k1.unwrap().unwrap(), k2.unwrap().unwrap());
    assert_eq!(k1, k2, "instances converge on one key");
    let request = ClientCredentialsRequest::default().scope("api");
    let (token, key) = one.client_access_token_bound(&request).await.unwrap();
    assert_eq!(key.as_ref(), Some(&k1));
    assert_eq!(
        idp.token_jkt(token.secret()).as_deref(),
        Some(k1.thumbprint())
    );
    // The other instance takes the shared token, bound to the same key.
    let (shared, key) = two.client_access_token_bound(&request).await.unwrap();
    assert_eq!(shared, token);
    assert_eq!(key.as_ref(), Some(&k1));
    assert_eq!(idp.counters().client_credentials_grants, 1);
}

#[test]
fn a_verifier_refuses_wrong_proofs() {
    let key = DpopKey::generate(DpopAlg::Es256).unwrap();
    let other = DpopKey::generate(DpopAlg::Es256).unwrap();
    let url: url::Url = "http://127.0.0.1:9/api/orders?x=1".parse().unwrap();
    let token = AccessToken::new("the-token");
    let now = 1_800_000_000;
    let replay = ReplayCache::default();
    let check = |proof: &str, method: &str, url: &str, token: &str, nonce: Option<&str>| {
        verify_proof(proof, method, url, Some(token), nonce, &replay, now)
    };
    let good = key.proof("GET", &url, Some(&token), None, now).unwrap();
    // Query strings do not count in htu.
    let ok = check(
        &good,
        "GET",
        "http://127.0.0.1:9/api/orders",
        "the-token",
        None,
    )
    .unwrap();
    assert_eq!(ok.jkt, key.thumbprint());
    // Replayed jti.
    assert!(matches!(
        check(&good, "GET", url.as_str(), "the-token", None),
        Err(ProofError::Invalid(why)) if why.contains("jti")
    ));
    let fresh = || key.proof("GET", &url, Some(&token), None, now).unwrap();
    for (proof, method, at, tok, what) in [
        (fresh(), "POST", url.as_str(), "the-token", "htm"),
        (
            fresh(),
            "GET",
            "http://127.0.0.1:9/api/other",
            "the-token",
            "htu",
        ),
        (fresh(), "GET", url.as_str(), "another-token", "ath"),
        (
            key.proof("GET", &url, Some(&token), None, now - 600)
                .unwrap(),
            "GET",
            url.as_str(),
            "the-token",
            "iat",
        ),
    ] {
        match check(&proof, method, at, tok, None) {
            Err(ProofError::Invalid(why)) => assert!(why.contains(what), "{what}: {why}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    // Signed by another key than the header's jwk.
    let forged = {
        let theirs = other.proof("GET", &url, Some(&token), None, now).unwrap();
        let mine = fresh();
        let mut parts: Vec<&str> = mine.split('.').collect();
        parts[2] = theirs.split('.').nth(2).unwrap();
        parts.join(".")
    };
    assert!(matches!(
        check(&forged, "GET", url.as_str(), "the-token", None),
        Err(ProofError::Invalid(why)) if why.contains("signature")
    ));
    // A nonce demanded and missing, or stale.
    assert_eq!(
        check(&fresh(), "GET", url.as_str(), "the-token", Some("n-1")).unwrap_err(),
        ProofError::NonceRequired
    );
    let stale = key
        .proof("GET", &url, Some(&token), Some("n-0"), now)
        .unwrap();
    assert_eq!(
        check(&stale, "GET", url.as_str(), "the-token", Some("n-1")).unwrap_err(),
        ProofError::NonceRequired
    );
    let right = key
        .proof("GET", &url, Some(&token), Some("n-1"), now)
        .unwrap();
    assert!(check(&right, "GET", url.as_str(), "the-token", Some("n-1")).is_ok());
}
