//! Conformance-style negative tests: the OpenID Foundation's Relying Party
//! test behaviours, reproduced with the dev IdP's fault injection over real
//! HTTP. Every bad answer of the provider must leave the browser without a
//! session (no cookie, nothing in the store) and with a clean JSON error —
//! never a panic, never a reflected script.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::harness::{self, Browser, Options, TestBff};
use oidc_bff::{Bff, OidcConfig};
use oidc_bff_dev_idp::{DevIdp, DevIdpBuilder, IdTokenFault, SigningAlg};
use oidc_bff_tokens::{Clock, ManualClock};

/// The sign-in of `browser` must fail at the callback without a session.
async fn assert_sign_in_refused(t: &TestBff, browser: &Browser, case: &str) -> serde_json::Value {
    let callback = browser.start_sign_in("/").await;
    let response = browser.get(&callback).await;
    let status = response.status();
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{case}: {status}"
    );
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{case}"
    );
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "{case}"
    );
    let set_cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        !set_cookies.iter().any(|c| c.starts_with("__Host-bff=")),
        "{case}: a session cookie was set: {set_cookies:?}"
    );
    assert!(
        set_cookies
            .iter()
            .any(|c| c.starts_with("__Host-bff-login=;")),
        "{case}: the login cookie must be cleared: {set_cookies:?}"
    );
    let body = response.text().await.unwrap();
    assert!(!body.contains('<'), "{case}: markup in {body}");
    assert!(browser.cookie("__Host-bff").is_none(), "{case}");
    assert_no_session(t, case).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{case}: {e}: {body}"))
}

async fn assert_no_session(t: &TestBff, case: &str) {
    let sessions = t.bff.client().store().find_by_sub("alice").await.unwrap();
    assert!(sessions.is_empty(), "{case}: a session was created");
}

async fn start_with_alg(alg: SigningAlg) -> TestBff {
    harness::start_against(
        DevIdp::builder()
            .signing_alg(alg)
            .access_token_lifetime(Duration::from_secs(300)),
        Options::default(),
    )
    .await
}

#[tokio::test]
async fn bad_id_token_signatures_are_refused_for_rs256_and_es256() {
    for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
        for fault in [
            IdTokenFault::BadSignature,
            IdTokenFault::AlgNone,
            IdTokenFault::Hs256WithPublicKey,
        ] {
            let t = start_with_alg(alg).await;
            t.idp.faults().set_id_token_fault(Some(fault));
            let case = format!("{alg:?} {fault:?}");
            let body = assert_sign_in_refused(&t, &t.browser(), &case).await;
            assert_eq!(body["error"], "invalid_id_token", "{case}: {body}");
            assert_eq!(t.idp.counters().code_grants, 1, "{case}");
        }
    }
}

#[tokio::test]
async fn id_tokens_with_bad_claims_are_refused() {
    let cases = [
        (IdTokenFault::WrongIssuer, "issuer mismatch"),
        (IdTokenFault::MissingIssuer, "missing iss"),
        (IdTokenFault::WrongAudience, "client_id"),
        (IdTokenFault::MissingAudience, "missing aud"),
        (IdTokenFault::ExtraAudience, "untrusted audience"),
        (IdTokenFault::WrongAzp, "azp mismatch"),
        (IdTokenFault::MissingSub, "missing sub"),
        (IdTokenFault::MissingIat, "missing iat"),
        (IdTokenFault::Expired, "expired"),
        (IdTokenFault::WrongNonce, "nonce mismatch"),
        (IdTokenFault::MissingNonce, "missing nonce"),
        (IdTokenFault::WrongAtHash, "at_hash mismatch"),
        (IdTokenFault::UnknownKid, "no matching key"),
    ];
    for (fault, reason) in cases {
        let t = harness::start().await;
        t.idp.faults().set_id_token_fault(Some(fault));
        let case = format!("{fault:?}");
        let body = assert_sign_in_refused(&t, &t.browser(), &case).await;
        assert_eq!(body["error"], "invalid_id_token", "{case}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(reason), "{case}: {message}");
    }
}

#[tokio::test]
async fn a_missing_kid_is_fine_with_one_key_and_with_several() {
    // One key published.
    let t = harness::start().await;
    t.idp.faults().set_id_token_fault(Some(IdTokenFault::NoKid));
    t.browser().sign_in("/").await;
    assert_eq!(t.idp.counters().jwks, 1);

    // Several keys published (the current and a previous one): every key
    // fitting the alg is tried and the right one verifies.
    let t = harness::start().await;
    t.idp.rotate_keys();
    t.idp.faults().set_id_token_fault(Some(IdTokenFault::NoKid));
    t.browser().sign_in("/").await;
    t.browser().sign_in("/").await;
    assert_eq!(t.idp.counters().jwks, 1);
    let sessions = t.bff.client().store().find_by_sub("alice").await.unwrap();
    assert_eq!(sessions.len(), 2);
}

#[tokio::test]
async fn an_unparseable_key_in_the_jwks_is_skipped() {
    let t = harness::start().await;
    t.idp.faults().set_jwks_garbage_key(true);
    t.browser().sign_in("/").await;
    assert!(t.idp.counters().jwks >= 1);
}

#[tokio::test]
async fn key_rotation_costs_one_jwks_refetch() {
    let t = harness::start().await;
    t.browser().sign_in("/").await;
    assert_eq!(t.idp.counters().jwks, 1);
    // The provider rotates and stops publishing the old key.
    t.idp.rotate_keys_drop_old();
    t.browser().sign_in("/").await;
    assert_eq!(t.idp.counters().jwks, 2, "one refetch for the new kid");
    t.browser().sign_in("/").await;
    assert_eq!(t.idp.counters().jwks, 2, "the new key is cached");
}

#[tokio::test]
async fn unknown_kids_cannot_cause_a_flood_of_jwks_fetches() {
    let t = harness::start().await;
    t.browser().sign_in("/").await;
    let before = t.idp.counters().jwks;
    t.idp
        .faults()
        .set_id_token_fault(Some(IdTokenFault::UnknownKid));
    for i in 0..30 {
        let browser = t.browser();
        let callback = browser.start_sign_in("/").await;
        let response = browser.get(&callback).await;
        assert_eq!(response.status(), 400, "attempt {i}");
    }
    assert!(
        t.idp.counters().jwks <= before + 1,
        "{} JWKS fetches for 30 unknown kids",
        t.idp.counters().jwks - before
    );
    // Once the rate limit's interval has passed, a genuine rotation is found.
    t.idp.faults().clear();
    t.idp.rotate_keys_drop_old();
    t.advance(t.bff.client().config().jwks_min_refetch.as_secs());
    t.browser().sign_in("/").await;
}

#[tokio::test]
async fn a_userinfo_answer_about_another_subject_is_discarded() {
    let t = start_custom(
        DevIdp::builder().user(
            "alice",
            serde_json::json!({ "name": "Alice Example", "email": "alice@example.com" }),
        ),
        |c| c.load_userinfo(true),
    )
    .await;
    // A claim that only the userinfo answer carries, never the id_token: it
    // shows whether the answer was merged or discarded.
    t.idp
        .faults()
        .set_userinfo_extra_claims(Some(serde_json::json!({ "phone_number": "+1 555 0100" })));

    // About the signed-in subject: merged.
    let browser = t.browser();
    browser.sign_in("/").await;
    assert_eq!(t.idp.counters().userinfo, 1);
    let user: serde_json::Value = browser.api("/bff/user").await.json().await.unwrap();
    assert_eq!(user["sub"], "alice");
    assert_eq!(
        user["claims"]["phone_number"], "+1 555 0100",
        "a matching userinfo answer is merged: {user}"
    );

    // About another subject: discarded as a whole; the id_token's claims stay.
    t.idp.faults().set_userinfo_sub(Some("mallory"));
    let browser = t.browser();
    browser.sign_in("/").await;
    assert_eq!(t.idp.counters().userinfo, 2);
    let session = t.session_of(&browser).await.unwrap();
    assert_eq!(session.record.sub, "alice");
    assert_eq!(session.record.claims["sub"], "alice");
    assert!(!session.record.claims.contains_key("phone_number"));
    let user: serde_json::Value = browser.api("/bff/user").await.json().await.unwrap();
    assert_eq!(user["sub"], "alice");
    assert_eq!(user["claims"]["sub"], "alice");
    assert_eq!(user["claims"]["name"], "Alice Example");
    assert!(
        user["claims"].get("phone_number").is_none(),
        "the answer about another subject was merged: {user}"
    );
}

#[tokio::test]
async fn a_refreshed_id_token_about_another_identity_ends_the_session() {
    for fault in [
        IdTokenFault::WrongIssuer,
        IdTokenFault::DifferentSub,
        IdTokenFault::WrongAudience,
        IdTokenFault::WrongAzp,
        IdTokenFault::BadSignature,
        IdTokenFault::AlgNone,
    ] {
        let t = harness::start().await;
        let browser = t.browser();
        browser.sign_in("/").await;
        assert_eq!(browser.api("/api/token").await.status(), 200);
        t.idp.faults().set_id_token_fault(Some(fault));
        let response = browser.api("/api/token/forced").await;
        assert_eq!(response.status(), 401, "{fault:?}");
        assert_eq!(t.idp.counters().refresh_grants, 1, "{fault:?}");
        assert!(t.session_of(&browser).await.is_none(), "{fault:?}");
        assert_eq!(browser.api("/bff/user").await.status(), 401, "{fault:?}");
        assert_no_session(&t, &format!("{fault:?}")).await;
    }
}

#[tokio::test]
async fn provider_errors_with_markup_are_never_reflected_raw() {
    let payloads = [
        ("access_denied", "<script>alert(1)</script>"),
        ("<script>alert(1)</script>", "x"),
        (
            "access_denied\"><img src=x onerror=alert(1)>",
            "<b>bold</b>",
        ),
        ("server_error", &"<".repeat(5000)),
    ];
    for (error, description) in payloads {
        let t = harness::start().await;
        t.idp
            .faults()
            .set_authorize_error(Some((error, description)));
        let body = assert_sign_in_refused(&t, &t.browser(), error).await;
        assert_eq!(body["error"], "invalid_callback");
        assert_eq!(t.idp.counters().code_grants, 0);
    }
}

#[tokio::test]
async fn a_provider_that_later_reports_another_issuer_is_not_believed() {
    // Discovery was verified at login; when the provider starts reporting
    // another issuer, the refetched document is refused and the verified one
    // stays in use: the sign-in completes against the real issuer.
    let t = start_custom(DevIdp::builder(), |c| {
        c.discovery_refresh(Duration::from_secs(30))
    })
    .await;
    let browser = t.browser();
    let callback = browser.start_sign_in("/").await;
    t.idp
        .faults()
        .set_discovery_issuer(Some("https://impostor.example"));
    t.advance(t.bff.client().config().discovery_refresh.as_secs() + 1);
    let discovery_before = t.idp.counters().discovery;
    let response = browser.get(&callback).await;
    let status = response.status();
    assert_eq!(status, 303, "{}", response.text().await.unwrap());
    assert!(t.idp.counters().discovery > discovery_before, "refetched");
    let metadata = t.bff.client().metadata().await.unwrap();
    assert_eq!(metadata.issuer, t.idp.issuer());
}

/// A BFF in front of a dev IdP built from `idp`, with extra engine settings.
async fn start_custom(
    idp: DevIdpBuilder,
    configure: impl FnOnce(oidc_bff::tokens::OidcConfigBuilder) -> oidc_bff::tokens::OidcConfigBuilder,
) -> TestBff {
    let clock = ManualClock::starting_now();
    let idp_clock = clock.clone();
    let idp = idp
        .clock(move || idp_clock.now_unix())
        .start()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = configure(
        OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .timeouts(Duration::from_secs(2), Duration::from_secs(5)),
    )
    .build()
    .unwrap();
    let bff = Bff::builder(config)
        .public_url(&url)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let app = Router::new().merge(bff.routes()).layer(bff.layer());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestBff {
        idp,
        bff,
        url,
        clock,
    }
}
