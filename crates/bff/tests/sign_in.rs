//! Sign-in, the user endpoint, logout, and hostile input at the management
//! endpoints — over real HTTP against the dev IdP.

mod common;

use common::harness::{self, Browser, location, urlencode};
use oidc_bff_dev_idp::IssParamFault;

#[tokio::test]
async fn sign_in_creates_a_server_side_session_with_secure_cookies() {
    let t = harness::start().await;
    let browser = t.browser();
    let landed = browser.sign_in("/app/page?x=1").await;
    assert_eq!(landed, "/app/page?x=1");

    let set_cookies = browser.set_cookies.lock().unwrap().clone();
    let login_cookie = set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-bff-login="))
        .expect("login cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(login_cookie.contains(attr), "{login_cookie}");
    }
    let session_cookie = set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-bff="))
        .expect("session cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(session_cookie.contains(attr), "{session_cookie}");
    }
    assert!(!session_cookie.contains("Domain"));
    // The cookie holds nothing but a random id; the tokens live server-side.
    let session = t.session_of(&browser).await.expect("session in the store");
    let cookie_value = browser.cookie("__Host-bff").unwrap();
    assert_eq!(cookie_value.len(), 43);
    assert!(!cookie_value.contains(session.record.tokens.access_token.secret()));
    assert_eq!(session.record.sub, "alice");
    assert!(session.record.tokens.refresh_token.is_some());
    assert_eq!(t.idp.counters().code_grants, 1);
}

#[tokio::test]
async fn user_endpoint_returns_claims_and_never_tokens() {
    let t = harness::start().await;
    let browser = t.browser();

    let anonymous = browser.api("/bff/user").await;
    assert_eq!(anonymous.status(), 401);

    browser.sign_in("/").await;
    let without_csrf = browser.get("/bff/user").await;
    assert_eq!(
        without_csrf.status(),
        401,
        "the anti-forgery header is required"
    );

    let response = browser.api("/bff/user").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
    let body = response.text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["sub"], "alice");
    assert_eq!(json["claims"]["name"], "Alice Example");
    assert!(
        json["logoutUrl"]
            .as_str()
            .unwrap()
            .starts_with("/bff/logout?sid=")
    );
    assert!(json["sessionExpiresIn"].as_u64().unwrap() > 0);

    let session = t.session_of(&browser).await.unwrap();
    let tokens = &session.record.tokens;
    for secret in [
        tokens.access_token.secret(),
        tokens.refresh_token.as_ref().unwrap().secret(),
        tokens.id_token.as_ref().unwrap().secret(),
        &browser.cookie("__Host-bff").unwrap(),
    ] {
        assert!(!body.contains(secret), "the user endpoint leaked a secret");
    }
}

#[tokio::test]
async fn every_sign_in_issues_a_new_session_id() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let first = browser.cookie("__Host-bff").unwrap();
    browser.sign_in("/").await;
    let second = browser.cookie("__Host-bff").unwrap();
    assert_ne!(first, second);
    // The previous session ended with the new sign-in.
    let old = oidc_bff_tokens::SessionId::parse(&first).unwrap();
    assert!(t.bff.engine().load_session(&old).await.unwrap().is_none());
}

#[tokio::test]
async fn foreign_return_urls_fall_back_to_root() {
    let t = harness::start().await;
    for evil in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%09/evil.example",
        "/%2F%2Fevil.example",
        "http:evil.example",
        "\\\\evil.example",
    ] {
        let browser = t.browser();
        let landed = browser.sign_in(evil).await;
        assert_eq!(landed, "/", "returnUrl {evil:?} must not leave the site");
    }
}

#[tokio::test]
async fn callback_with_a_wrong_state_creates_no_session() {
    let t = harness::start().await;
    let browser = t.browser();
    let callback = browser.start_sign_in("/").await;
    let tampered = replace_param(&callback, "state", "forged");
    let response = browser.get(&tampered).await;
    assert_eq!(response.status(), 400);
    assert!(browser.cookie("__Host-bff").is_none());
    assert_eq!(
        t.idp.counters().code_grants,
        0,
        "no code exchange on a bad state"
    );
}

#[tokio::test]
async fn callback_from_another_browser_is_refused() {
    // Login CSRF: an attacker's callback URL opened in the victim's browser.
    let t = harness::start().await;
    let attacker = t.browser();
    let callback = attacker.start_sign_in("/").await;
    let victim = t.browser();
    let response = victim.get(&callback).await;
    assert_eq!(response.status(), 400);
    assert!(victim.cookie("__Host-bff").is_none());
}

#[tokio::test]
async fn replayed_callback_is_refused() {
    let t = harness::start().await;
    let browser = t.browser();
    let callback = browser.start_sign_in("/").await;
    let login_cookie = browser.cookie("__Host-bff-login").unwrap();
    assert_eq!(browser.get(&callback).await.status(), 303);
    let first_session = browser.cookie("__Host-bff").unwrap();

    // Replay with the login cookie restored, as an attacker holding both would.
    browser.set_cookie("__Host-bff-login", &login_cookie);
    let replay = browser.get(&callback).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(browser.cookie("__Host-bff").unwrap(), first_session);
    assert_eq!(t.idp.counters().code_grants, 1);
}

#[tokio::test]
async fn duplicated_callback_parameters_are_refused() {
    let t = harness::start().await;
    let browser = t.browser();
    let callback = browser.start_sign_in("/").await;
    let response = browser.get(&format!("{callback}&state=other")).await;
    assert_eq!(response.status(), 400);
    assert!(browser.cookie("__Host-bff").is_none());
}

#[tokio::test]
async fn provider_errors_are_reported_without_reflecting_markup() {
    let t = harness::start().await;
    t.idp
        .faults()
        .set_authorize_error(Some(("access_denied", "<script>alert(1)</script>")));
    let browser = t.browser();
    let callback = browser.start_sign_in("/").await;
    let response = browser.get(&callback).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body = response.text().await.unwrap();
    assert!(!body.contains("<script>"), "{body}");
    assert!(browser.cookie("__Host-bff").is_none());
}

#[tokio::test]
async fn wrong_or_missing_iss_in_the_callback_is_refused() {
    for fault in [IssParamFault::Wrong, IssParamFault::Missing] {
        let t = harness::start().await;
        t.idp.faults().set_authorize_iss(Some(fault));
        let browser = t.browser();
        let callback = browser.start_sign_in("/").await;
        let response = browser.get(&callback).await;
        assert_eq!(response.status(), 400);
        assert!(browser.cookie("__Host-bff").is_none());
        assert_eq!(t.idp.counters().code_grants, 0);
    }
}

#[tokio::test]
async fn discovery_issuer_mismatch_stops_the_sign_in() {
    let t = harness::start().await;
    t.idp
        .faults()
        .set_discovery_issuer(Some("https://impostor.example"));
    let browser = t.browser();
    let response = browser.get("/bff/login").await;
    assert!(response.status().is_server_error(), "{}", response.status());
    let body = response.text().await.unwrap();
    assert!(body.contains("issuer"), "{body}");
    assert_eq!(t.idp.counters().authorize, 0);
}

#[tokio::test]
async fn logout_revokes_and_redirects_to_the_provider() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let session = t.session_of(&browser).await.unwrap();
    let refresh_token = session.record.tokens.refresh_token.clone().unwrap();
    let id = oidc_bff_tokens::SessionId::parse(&browser.cookie("__Host-bff").unwrap()).unwrap();
    let user: serde_json::Value = browser.api("/bff/user").await.json().await.unwrap();
    let logout_url = user["logoutUrl"].as_str().unwrap().to_owned();

    let response = browser.get(&logout_url).await;
    assert_eq!(response.status(), 303);
    let target = url::Url::parse(&location(&response)).unwrap();
    assert!(target.as_str().starts_with(t.idp.url().as_str()));
    let params: std::collections::HashMap<_, _> = target.query_pairs().into_owned().collect();
    assert_eq!(
        params.get("id_token_hint").map(String::as_str),
        Some(session.record.tokens.id_token.as_ref().unwrap().secret())
    );
    assert_eq!(params["post_logout_redirect_uri"], format!("{}/", t.url));
    assert!(browser.cookie("__Host-bff").is_none(), "cookie cleared");
    assert!(
        t.bff.engine().load_session(&id).await.unwrap().is_none(),
        "session ended"
    );
    assert_eq!(browser.api("/bff/user").await.status(), 401);
    assert_eq!(t.idp.counters().revocations, 1);

    // The revoked refresh token no longer works at the provider.
    let denied = refresh_directly(&t.idp, refresh_token.secret()).await;
    assert_eq!(denied.status(), 400);
}

#[tokio::test]
async fn logout_needs_the_sid_parameter() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    for url in ["/bff/logout", "/bff/logout?sid=wrong", "/bff/logout?sid="] {
        let response = browser.get(url).await;
        assert_eq!(response.status(), 400, "{url}");
        assert_eq!(browser.api("/bff/user").await.status(), 200, "session kept");
    }
    assert_eq!(t.idp.counters().revocations, 0);
}

#[tokio::test]
async fn logout_works_when_revocation_fails_or_is_absent() {
    for no_endpoint in [false, true] {
        let t = harness::start().await;
        if no_endpoint {
            t.idp.faults().set_no_revocation_endpoint(true);
        } else {
            t.idp.faults().set_revocation_status(Some(500));
        }
        let browser = t.browser();
        browser.sign_in("/").await;
        let user: serde_json::Value = browser.api("/bff/user").await.json().await.unwrap();
        let response = browser.get(user["logoutUrl"].as_str().unwrap()).await;
        assert_eq!(response.status(), 303);
        assert_eq!(
            browser.api("/bff/user").await.status(),
            401,
            "signed out locally"
        );
    }
}

#[tokio::test]
async fn garbage_cookies_are_anonymous_not_errors() {
    let t = harness::start().await;
    let browser = Browser::new(&t.url);
    for value in ["", "x", &"A".repeat(43), &"%".repeat(5000), "a\"b\\c,d"] {
        browser.set_cookie("__Host-bff", value);
        let response = browser.api("/bff/user").await;
        assert_eq!(response.status(), 401, "{value:?}");
    }
    // Non-UTF-8 cookie bytes.
    let raw = reqwest::Client::new()
        .get(format!("{}/bff/user", t.url))
        .header("x-csrf", "1")
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(b"__Host-bff=\xff\xfe; a=b").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 401);
    let login = browser
        .get(&format!("/bff/login?returnUrl={}", urlencode("/")))
        .await;
    assert_eq!(login.status(), 303);
}

fn replace_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == name {
                (k, value.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// Presents a refresh token to the provider directly, as an attacker holding it would.
async fn refresh_directly(
    idp: &oidc_bff_dev_idp::RunningIdp,
    refresh_token: &str,
) -> reqwest::Response {
    let discovery: serde_json::Value =
        reqwest::get(format!("{}/.well-known/openid-configuration", idp.issuer()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    reqwest::Client::new()
        .post(discovery["token_endpoint"].as_str().unwrap())
        .basic_auth("bff", Some("secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
}

/// Issue 15, defect 1: several tabs of one browser sign in at once; each
/// callback completes, in any order (the pending sign-ins travel sealed in
/// their `state`, all bound to the one login cookie of the browser).
#[tokio::test]
async fn parallel_sign_ins_from_several_tabs_all_complete() {
    let t = harness::start().await;
    let browser = t.browser();
    let mut callbacks = Vec::new();
    for tab in ["/one", "/two", "/three"] {
        callbacks.push((tab, browser.start_sign_in(tab).await));
    }
    let binding = browser.cookie("__Host-bff-login").unwrap();
    assert_eq!(binding.len(), 43, "one short cookie for every tab");
    // Complete them in reverse order.
    for (tab, callback) in callbacks.into_iter().rev() {
        let done = browser.get(&callback).await;
        assert_eq!(done.status(), 303, "{tab}");
        assert_eq!(location(&done), tab);
        assert_eq!(browser.api("/bff/user").await.status(), 200, "{tab}");
    }
    assert_eq!(t.idp.counters().code_grants, 3);
}

/// Checklist 3: a transaction older than the login timeout is refused (400,
/// no token call, cookie cleared); a new sign-in then works.
#[tokio::test]
async fn an_expired_login_transaction_is_refused_and_login_restarts() {
    let t = harness::start().await;
    let browser = t.browser();
    let callback = browser.start_sign_in("/late").await;
    t.advance(t.bff.engine().config().login_timeout.as_secs() + 1);
    let response = browser.get(&callback).await;
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("too long"), "{body}");
    assert!(browser.cookie("__Host-bff").is_none());
    assert!(browser.cookie("__Host-bff-login").is_none(), "cleared");
    assert_eq!(t.idp.counters().code_grants, 0);
    assert_eq!(browser.sign_in("/late").await, "/late");
}

/// Checklist 11 and "separate key spaces": what the sign-in puts in the
/// browser (the login cookie's binding, the sealed `state`) is never a
/// session id, and the store keeps no sign-in under a session's key.
#[tokio::test]
async fn login_values_are_never_session_ids() {
    let t = harness::start().await;
    let browser = t.browser();
    let callback = browser.start_sign_in("/").await;
    let binding = browser.cookie("__Host-bff-login").unwrap();
    let state = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    for value in [&binding, &state] {
        let intruder = t.browser();
        intruder.set_cookie("__Host-bff", value);
        assert_eq!(intruder.api("/bff/user").await.status(), 401);
        if let Some(id) = oidc_bff_tokens::SessionId::parse(value) {
            assert!(t.bff.engine().store().load(&id).await.unwrap().is_none());
        }
    }
    // Completing the sign-in records it under its own key space only.
    assert_eq!(browser.get(&callback).await.status(), 303);
    let session = browser.cookie("__Host-bff").unwrap();
    assert_ne!(session, binding);
    assert_eq!(browser.api("/bff/user").await.status(), 200);
}

/// Checklist 10: a cookie of another name (no prefix, another prefix, other
/// case) carrying a valid session id is ignored.
#[tokio::test]
async fn a_session_id_under_another_cookie_name_is_ignored() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let id = browser.cookie("__Host-bff").unwrap();
    for name in [
        "bff",
        "Host-bff",
        "__host-bff",
        "__Secure-bff",
        "__Host-bff-login",
        "__Host-BFF",
    ] {
        let other = t.browser();
        other.set_cookie(name, &id);
        assert_eq!(other.api("/bff/user").await.status(), 401, "{name}");
    }
}

/// Issue 15, defect 9: the login and callback answers say
/// `Referrer-Policy: no-referrer` (the code and state never leak onwards).
#[tokio::test]
async fn login_and_callback_send_no_referrer() {
    let t = harness::start().await;
    let browser = t.browser();
    let login = browser.get("/bff/login?returnUrl=%2F").await;
    assert_eq!(login.headers()["referrer-policy"], "no-referrer");
    let at_idp = browser.get(&location(&login)).await;
    let done = browser.get(&location(&at_idp)).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["referrer-policy"], "no-referrer");
    let failed = browser.get("/bff/callback?state=x&code=y").await;
    assert_eq!(failed.status(), 400);
    assert_eq!(failed.headers()["referrer-policy"], "no-referrer");
}

/// Issue 15, defect 9: RP-initiated logout carries a `state` bound to the
/// browser, and the optional post-logout landing checks it.
#[tokio::test]
async fn logout_sends_a_state_that_is_checked_on_return() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let user: serde_json::Value = browser.api("/bff/user").await.json().await.unwrap();
    let response = browser.get(user["logoutUrl"].as_str().unwrap()).await;
    assert_eq!(response.status(), 303);
    let target = url::Url::parse(&location(&response)).unwrap();
    let state = target
        .query_pairs()
        .find(|(k, _)| k == "state")
        .expect("state on the end-session URL")
        .1
        .into_owned();
    assert_eq!(
        browser.cookie("__Host-bff-logout").as_deref(),
        Some(state.as_str())
    );

    // Wrong, missing or duplicated state: refused, no effect.
    for query in [
        "?state=wrong".to_owned(),
        String::new(),
        format!("?state={state}&state={state}"),
    ] {
        let other = t.browser();
        other.set_cookie("__Host-bff-logout", &state);
        let response = other.get(&format!("/bff/logged-out{query}")).await;
        assert_eq!(response.status(), 400, "{query}");
    }
    // Another browser presenting the right state has no binding: refused.
    let stranger = t.browser();
    let response = stranger
        .get(&format!("/bff/logged-out?state={}", urlencode(&state)))
        .await;
    assert_eq!(response.status(), 400);
    // The right one goes home and forgets the state.
    let response = browser
        .get(&format!("/bff/logged-out?state={}", urlencode(&state)))
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), format!("{}/", t.url));
    assert!(browser.cookie("__Host-bff-logout").is_none());
}

/// Issue 15, defect 1: instances that share the login keys (and the store)
/// complete each other's sign-ins; an instance with other keys refuses them.
#[tokio::test]
async fn a_sign_in_started_on_one_instance_completes_on_another_with_the_same_keys() {
    use std::sync::Arc;

    use oidc_bff::{Bff, OidcConfig};
    use oidc_bff_tokens::store::KeyRing;

    let idp = oidc_bff_dev_idp::DevIdp::builder().start().await.unwrap();
    let store: Arc<dyn oidc_bff_tokens::SessionStore> =
        Arc::new(oidc_bff_tokens::MemoryStore::new());
    let keys = KeyRing::generate("shared");
    let mut urls = Vec::new();
    for ring in [keys.clone(), keys.clone(), KeyRing::generate("other")] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .build()
            .unwrap();
        let bff = Bff::builder(config)
            .public_url(&url)
            .store(store.clone())
            .login_keys(ring)
            .build()
            .unwrap();
        let app = axum::Router::new().merge(bff.routes()).layer(bff.layer());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        urls.push(url);
    }
    for (other, expected) in [(&urls[1], 303), (&urls[2], 400)] {
        let browser = Browser::new(&urls[0]);
        let callback = browser.start_sign_in("/x").await;
        let binding = browser.cookie("__Host-bff-login").unwrap();
        // The load balancer sends the callback to another instance.
        let elsewhere = Browser::new(other);
        elsewhere.set_cookie("__Host-bff-login", &binding);
        let moved = callback.replacen(&urls[0], other, 1);
        let response = elsewhere.get(&moved).await;
        assert_eq!(response.status(), expected, "{other}");
    }
}
