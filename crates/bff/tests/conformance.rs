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
    let sessions = t.bff.engine().store().find_by_sub("alice").await.unwrap();
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
    let sessions = t.bff.engine().store().find_by_sub("alice").await.unwrap();
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
    t.advance(t.bff.engine().config().jwks_min_refetch.as_secs());
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
    t.advance(t.bff.engine().config().discovery_refresh.as_secs() + 1);
    let discovery_before = t.idp.counters().discovery;
    let response = browser.get(&callback).await;
    let status = response.status();
    assert_eq!(status, 303, "{}", response.text().await.unwrap());
    assert!(t.idp.counters().discovery > discovery_before, "refetched");
    let metadata = t.bff.engine().metadata().await.unwrap();
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

/// The claims of a compact JWT, without verification (test inspection only).
fn jwt_payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Issue 15, defect 2: a provider that puts the user's latest sign-in (on
/// any browser) into every refreshed id_token's `auth_time` must not sign
/// anybody out. Two sessions of one user; both refresh and keep working,
/// each keeping its original `auth_time`.
#[tokio::test]
async fn a_provider_that_moves_auth_time_on_refresh_signs_nobody_out() {
    let t = harness::start().await;
    t.idp.faults().set_refresh_moves_auth_time(true);
    let first = t.browser();
    first.sign_in("/").await;
    let first_auth_time = t.session_of(&first).await.unwrap().record.claims["auth_time"].clone();
    t.advance(120);
    let second = t.browser();
    second.sign_in("/").await;
    let second_auth_time = t.session_of(&second).await.unwrap().record.claims["auth_time"].clone();
    assert_ne!(first_auth_time, second_auth_time);

    for (name, browser, original) in [
        ("first", &first, &first_auth_time),
        ("second", &second, &second_auth_time),
    ] {
        let response = browser.api("/api/token/forced").await;
        assert_eq!(
            response.status(),
            200,
            "{name}: {}",
            response.text().await.unwrap()
        );
        assert_eq!(browser.api("/bff/user").await.status(), 200, "{name}");
        let session = t.session_of(browser).await.expect(name);
        // The provider did move it...
        let refreshed = jwt_payload(session.record.tokens.id_token.as_ref().unwrap().secret());
        assert_eq!(refreshed["auth_time"], second_auth_time, "{name}");
        // ...and the session keeps the original.
        assert_eq!(&session.record.claims["auth_time"], original, "{name}");
    }
    assert_eq!(t.idp.counters().refresh_grants, 2);
    // Expiry-driven refreshes keep working too.
    t.advance(400);
    assert_eq!(first.api("/api/token").await.status(), 200);
    assert_eq!(second.api("/api/token").await.status(), 200);
    assert_eq!(t.idp.counters().refresh_grants, 4);
}

/// Issue 15, defect 2: with `strict_refresh_claims`, a moved `auth_time`
/// ends the session as before.
#[tokio::test]
async fn with_strict_refresh_claims_a_moved_auth_time_ends_the_session() {
    let t = start_custom(DevIdp::builder(), |c| c.strict_refresh_claims(true)).await;
    t.idp.faults().set_refresh_moves_auth_time(true);
    let first = t.browser();
    first.sign_in("/").await;
    t.advance(120);
    t.browser().sign_in("/").await;
    let id = oidc_bff_tokens::SessionId::parse(&first.cookie("__Host-bff").unwrap()).unwrap();
    let err = t
        .bff
        .engine()
        .user_access_token(
            &id,
            None,
            &oidc_bff_tokens::UserTokenRequest::default().force_renewal(),
        )
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err:?}");
    assert!(t.bff.engine().load_session(&id).await.unwrap().is_none());
}

/// Issue 15, defect 3: when the engine ends a session right after the
/// provider answered a refresh (here: the refreshed id_token names another
/// user), the refresh token it just received is revoked, not dropped.
#[tokio::test]
async fn a_session_ended_after_a_refresh_revokes_the_new_refresh_token() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let access_token = t
        .session_of(&browser)
        .await
        .unwrap()
        .record
        .tokens
        .access_token
        .clone();
    t.idp
        .faults()
        .set_id_token_fault(Some(IdTokenFault::DifferentSub));
    assert_eq!(browser.api("/api/token/forced").await.status(), 401);
    assert!(t.session_of(&browser).await.is_none());
    // Revocation runs in the background: wait for it (bounded).
    for _ in 0..200 {
        if t.idp.counters().revocations > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        t.idp.counters().revocations,
        1,
        "the new refresh token was revoked"
    );
    // Revoking it revoked its grant: the session's access token is dead too.
    let introspection: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/introspect", t.idp.issuer()))
        .basic_auth("bff", Some("secret"))
        .form(&[("token", access_token.secret())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspection["active"], false, "{introspection}");
}

/// Issue 15, defect 4: a provider that lists `revocation_endpoint` only in
/// its RFC 8414 Authorization Server Metadata still gets the refresh token
/// revoked at logout; so does one whose endpoint is only in the
/// configuration.
#[tokio::test]
async fn logout_revokes_with_an_endpoint_from_rfc8414_metadata_or_the_configuration() {
    for case in ["rfc8414", "configuration"] {
        let t = if case == "rfc8414" {
            let t = start_custom(DevIdp::builder(), |c| c).await;
            t.idp.faults().set_revocation_only_in_oauth_metadata(true);
            t
        } else {
            // The endpoint's URL is only known once the IdP runs: start one
            // to learn it, then configure it explicitly.
            let t = start_custom_with_revocation_override().await;
            t.idp.faults().set_no_revocation_endpoint(true);
            t
        };
        let browser = t.browser();
        browser.sign_in("/").await;
        let user: serde_json::Value = browser.api("/bff/user").await.json().await.unwrap();
        let response = browser.get(user["logoutUrl"].as_str().unwrap()).await;
        assert_eq!(response.status(), 303, "{case}");
        assert_eq!(t.idp.counters().revocations, 1, "{case}");
        let metadata = t.bff.engine().metadata_with_fallback().await.unwrap();
        let source = metadata.sources["revocation_endpoint"];
        assert_eq!(
            source,
            if case == "rfc8414" {
                oidc_bff_tokens::discovery::EndpointSource::AuthorizationServerMetadata
            } else {
                oidc_bff_tokens::discovery::EndpointSource::Configuration
            },
            "{case}"
        );
    }
}

async fn start_custom_with_revocation_override() -> TestBff {
    let clock = ManualClock::starting_now();
    let idp_clock = clock.clone();
    let idp = DevIdp::builder()
        .clock(move || idp_clock.now_unix())
        .start()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .endpoint("revocation_endpoint", format!("{}/revoke", idp.issuer()))
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

/// Issue 15, defect 8: an endpoint in plain http to a host that is not
/// loopback (a network attacker could swap the keys or read the client
/// secret) makes discovery fail: nothing is trusted, the sign-in stops.
#[tokio::test]
async fn plain_http_endpoints_of_a_provider_are_refused() {
    let t = harness::start().await;
    t.idp
        .faults()
        .set_discovery_jwks_uri(Some("http://keys.example.com/jwks"));
    let browser = t.browser();
    let response = browser.get("/bff/login").await;
    assert!(response.status().is_server_error(), "{}", response.status());
    let body = response.text().await.unwrap();
    assert!(body.contains("https"), "{body}");
    assert_eq!(t.idp.counters().authorize, 0);
}

/// Issue 15, defect 9: a client without a secret is refused unless the
/// configuration says it is public on purpose.
#[tokio::test]
async fn a_client_without_a_secret_must_be_declared_public() {
    let config = OidcConfig::builder("https://login.example.com", "bff")
        .build()
        .unwrap();
    let err = Bff::builder(config)
        .public_url("https://app.example.com")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("public_client"), "{err}");
    let config = OidcConfig::builder("https://login.example.com", "bff")
        .public_client(true)
        .build()
        .unwrap();
    assert!(
        Bff::builder(config)
            .public_url("https://app.example.com")
            .build()
            .is_ok()
    );
}
