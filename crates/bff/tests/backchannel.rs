//! OpenID Connect Back-Channel Logout at `POST /bff/backchannel`, over real
//! HTTP against the dev IdP: valid tokens end the sessions they name, every
//! invalid one is refused with 400 and touches nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::harness::{self, Browser, Options, TestBff};
use oidc_bff::{Bff, OidcConfig};
use oidc_bff_dev_idp::DevIdp;
use oidc_bff_tokens::{Clock, ManualClock, OidcConfigBuilder, SessionId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// POSTs a logout token the way a provider does.
async fn post_token(t: &TestBff, token: &str) -> reqwest::Response {
    http()
        .post(format!("{}/bff/backchannel", t.url))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn signed_in(t: &TestBff) -> (Browser, SessionId, String) {
    let browser = t.browser();
    browser.sign_in("/").await;
    let id = SessionId::parse(&browser.cookie("__Host-bff").unwrap()).unwrap();
    let sid = t
        .session_of(&browser)
        .await
        .unwrap()
        .record
        .sid
        .clone()
        .unwrap();
    (browser, id, sid)
}

async fn alive(t: &TestBff, id: &SessionId) -> bool {
    t.bff.engine().load_session(id).await.unwrap().is_some()
}

/// The provider's revocation count once it has reached `expected` (the
/// refresh tokens of ended sessions are revoked in the background), or
/// after a bounded wait.
async fn revocations(t: &TestBff, expected: u64) -> u64 {
    for _ in 0..400 {
        if t.idp.counters().revocations >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    t.idp.counters().revocations
}

/// A BFF with non-default back-channel settings, optionally registered at the
/// dev IdP for back-channel logout (so the BFF's URL is known first).
async fn start_custom(all_sessions: bool, register: bool) -> TestBff {
    start_configured(register, |c| {
        c.backchannel_logout_all_sessions(all_sessions)
    })
    .await
}

/// Like [`start_custom`], with any engine settings.
async fn start_configured(
    register: bool,
    configure: impl FnOnce(OidcConfigBuilder) -> OidcConfigBuilder,
) -> TestBff {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let clock = ManualClock::starting_now();
    let idp_clock = clock.clone();
    let mut idp = DevIdp::builder().clock(move || idp_clock.now_unix());
    if register {
        idp = idp.backchannel_logout_uri("bff", &format!("{url}/bff/backchannel"));
    }
    let idp = idp.start().await.unwrap();
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

/// The claims of a valid logout token for `sid`, to be edited by a test.
fn claims(t: &TestBff, sid: &str) -> Value {
    let now = t.clock.now_unix();
    json!({
        "iss": t.idp.issuer(),
        "aud": "bff",
        "iat": now,
        "exp": now + 120,
        "jti": format!("jti-{}", SessionId::generate().as_str()),
        "sub": "alice",
        "sid": sid,
        "events": { EVENT: {} },
    })
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// HMAC-SHA-256 (RFC 2104), for forging HS256 tokens.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    block.resize(64, 0);
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A JWS over `claims` with `header`, HMAC-signed with `key`.
fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha256(key, input.as_bytes()));
    format!("{input}.{sig}")
}

#[track_caller]
fn assert_header(response: &reqwest::Response, name: &str, value: &str) {
    assert_eq!(
        response.headers().get(name).map(|v| v.to_str().unwrap()),
        Some(value),
        "{name}"
    );
}

async fn refresh_directly(t: &TestBff, refresh_token: &str) -> reqwest::StatusCode {
    http()
        .post(format!("{}/token", t.idp.issuer()))
        .basic_auth("bff", Some("secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_valid_token_ends_the_session_with_its_sid_and_revokes_its_refresh_token() {
    let t = harness::start().await;
    let (a, a_id, a_sid) = signed_in(&t).await;
    let (b, b_id, b_sid) = signed_in(&t).await;
    assert_ne!(a_sid, b_sid, "each sign-in is a new provider session");
    let a_refresh = t
        .session_of(&a)
        .await
        .unwrap()
        .record
        .tokens
        .refresh_token
        .clone()
        .unwrap();

    let token = t.idp.sign_logout_token(Some("alice"), Some(&a_sid), "bff");
    let response = post_token(&t, &token).await;
    assert_eq!(response.status(), 200);
    assert_header(&response, "cache-control", "no-store");
    assert!(response.text().await.unwrap().is_empty());

    assert!(!alive(&t, &a_id).await, "the named session ended");
    assert_eq!(a.api("/bff/user").await.status(), 401);
    assert!(alive(&t, &b_id).await, "the other session is untouched");
    assert_eq!(b.api("/bff/user").await.status(), 200);
    assert_eq!(revocations(&t, 1).await, 1);
    assert_eq!(
        refresh_directly(&t, a_refresh.secret()).await,
        400,
        "the ended session's refresh token was revoked at the provider"
    );
}

#[tokio::test]
async fn a_token_with_only_sub_ends_every_session_of_the_user() {
    let t = harness::start().await;
    let (_, a_id, _) = signed_in(&t).await;
    let (_, b_id, _) = signed_in(&t).await;
    let token = t.idp.sign_logout_token(Some("alice"), None, "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    assert!(!alive(&t, &a_id).await);
    assert!(!alive(&t, &b_id).await);
    assert_eq!(revocations(&t, 2).await, 2);
}

#[tokio::test]
async fn with_all_sessions_configured_a_sid_token_ends_every_session_of_the_user() {
    let t = start_custom(true, false).await;
    let (_, a_id, a_sid) = signed_in(&t).await;
    let (_, b_id, _) = signed_in(&t).await;
    let token = t.idp.sign_logout_token(Some("alice"), Some(&a_sid), "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    assert!(!alive(&t, &a_id).await);
    assert!(!alive(&t, &b_id).await);
}

#[tokio::test]
async fn a_token_naming_another_user_or_an_unknown_session_ends_nothing() {
    let t = harness::start().await;
    let (_, id, sid) = signed_in(&t).await;
    // The right sid but another subject: the session is not that user's.
    let token = t.idp.sign_logout_token(Some("mallory"), Some(&sid), "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    assert!(alive(&t, &id).await);
    // An unknown provider session: valid, nothing to do.
    let token = t.idp.sign_logout_token(None, Some("unknown-sid"), "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    let token = t.idp.sign_logout_token(Some("bob"), None, "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    assert!(alive(&t, &id).await);
    assert_eq!(t.idp.counters().revocations, 0);
}

#[tokio::test]
async fn a_replayed_token_is_refused() {
    let t = harness::start().await;
    let (_, first, _) = signed_in(&t).await;
    let token = t.idp.sign_logout_token(Some("alice"), None, "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    assert!(!alive(&t, &first).await);

    // The user signs in again; an attacker replays the captured token.
    let (_, again, _) = signed_in(&t).await;
    let replay = post_token(&t, &token).await;
    assert_eq!(replay.status(), 400);
    let body: Value = replay.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("replayed"),
        "{body}"
    );
    assert!(alive(&t, &again).await, "the replay ended nothing");
}

#[tokio::test]
async fn invalid_tokens_are_refused_and_touch_no_session() {
    let t = harness::start().await;
    let (browser, id, sid) = signed_in(&t).await;
    let session = t.session_of(&browser).await.unwrap();
    let now = t.clock.now_unix();

    type Edit = Box<dyn Fn(&mut Value)>;
    let remove = |name: &'static str| -> Edit {
        Box::new(move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(name);
        })
    };
    let set = |name: &'static str, value: Value| -> Edit {
        Box::new(move |c: &mut Value| c[name] = value.clone())
    };
    let cases: Vec<(&str, Edit)> = vec![
        ("wrong iss", set("iss", "https://impostor.example".into())),
        ("missing iss", remove("iss")),
        ("wrong aud", set("aud", "another-client".into())),
        ("extra aud", set("aud", json!(["bff", "untrusted"]))),
        ("missing aud", remove("aud")),
        ("missing iat", remove("iat")),
        ("iat in the future", set("iat", (now + 3600).into())),
        ("iat too old", set("iat", (now - 3600).into())),
        ("expired", set("exp", (now - 3600).into())),
        ("missing events", remove("events")),
        (
            "other event",
            set("events", json!({ "http://schemas.openid.net/event/x": {} })),
        ),
        ("event not an object", set("events", json!({ EVENT: true }))),
        ("events an array", set("events", json!([EVENT]))),
        ("nonce present", set("nonce", "n-0S6_WzA2Mj".into())),
        ("missing jti", remove("jti")),
        ("empty jti", set("jti", "".into())),
        (
            "neither sub nor sid",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("sub");
                c.as_object_mut().unwrap().remove("sid");
            }),
        ),
        ("sid not a string", set("sid", json!(7))),
    ];
    let mut tokens: Vec<(String, String)> = cases
        .iter()
        .map(|(name, edit)| {
            let mut c = claims(&t, &sid);
            edit(&mut c);
            ((*name).to_owned(), t.idp.sign_jwt(&c))
        })
        .collect();

    let valid = t.idp.sign_logout_token(Some("alice"), Some(&sid), "bff");
    let (header, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    // A flipped signature byte.
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[0] ^= 1;
    tokens.push((
        "bad signature".into(),
        format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(&sig)),
    ));
    // Another payload under the provider's signature.
    let mut forged = claims(&t, &sid);
    forged["sub"] = "alice".into();
    tokens.push((
        "tampered payload".into(),
        format!("{header}.{}.{signature}", b64(&forged)),
    ));
    // alg none, with and without a signature.
    let none = json!({ "alg": "none", "typ": "logout+jwt" });
    tokens.push((
        "alg none".into(),
        format!("{}.{}.", b64(&none), b64(&claims(&t, &sid))),
    ));
    tokens.push((
        "alg none with signature".into(),
        format!("{}.{}.{signature}", b64(&none), b64(&claims(&t, &sid))),
    ));
    // HS256 keyed with the provider's public key, under its kid.
    let jwks: Value = http()
        .get(format!("{}/jwks", t.idp.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = &jwks["keys"][0];
    let hs_header = json!({ "alg": "HS256", "typ": "logout+jwt", "kid": jwk["kid"] });
    for key in [jwk.to_string(), jwk["n"].as_str().unwrap().to_owned()] {
        tokens.push((
            "HS256 with the public key".into(),
            hs256(&hs_header, &claims(&t, &sid), key.as_bytes()),
        ));
    }
    // An unexpected asymmetric alg (the key is RS256).
    let mut ps = json!({ "alg": "PS256", "kid": jwk["kid"] });
    ps["typ"] = "logout+jwt".into();
    tokens.push((
        "PS256 header on an RS256 key".into(),
        format!("{}.{payload}.{signature}", b64(&ps)),
    ));
    // The session's own id_token and access token are not logout tokens.
    tokens.push((
        "id_token".into(),
        session
            .record
            .tokens
            .id_token
            .clone()
            .unwrap()
            .secret()
            .to_owned(),
    ));
    tokens.push((
        "access token".into(),
        session.record.tokens.access_token.secret().to_owned(),
    ));
    // A token of another provider (unknown key).
    let other = DevIdp::builder().start().await.unwrap();
    let mut foreign = claims(&t, &sid);
    foreign["iss"] = t.idp.issuer().into();
    tokens.push(("another provider's key".into(), other.sign_jwt(&foreign)));
    // Garbage.
    for garbage in [
        "x",
        "a.b.c",
        "a.b.c.d.e",
        "....",
        "<script>alert(1)</script>",
    ] {
        tokens.push((format!("garbage {garbage:?}"), garbage.to_owned()));
    }
    tokens.push(("oversized".into(), format!("{}.x.y", "a".repeat(70_000))));

    for (name, token) in &tokens {
        let response = post_token(&t, token).await;
        assert_eq!(response.status(), 400, "{name}");
        assert_header(&response, "content-type", "application/json");
        assert_header(&response, "cache-control", "no-store");
        let body = response.text().await.unwrap();
        assert!(!body.contains("<script>"), "{name}: {body}");
        assert!(
            !body.contains(token.as_str()),
            "{name}: the token is echoed"
        );
        assert!(alive(&t, &id).await, "{name}: the session must survive");
    }
    assert_eq!(t.idp.counters().revocations, 0);
    assert_eq!(browser.api("/bff/user").await.status(), 200);
    // The valid token still works afterwards: the cases that carry its
    // payload ("bad signature", "PS256 header") did not use up its jti. For
    // claim failures see `an_invalid_token_does_not_use_up_its_jti`.
    assert_eq!(post_token(&t, &valid).await.status(), 200);
    assert!(!alive(&t, &id).await);
}

/// A refused token must not use up its `jti`: were the `jti` cached before
/// (or while) the token is validated, the genuine token that carries the
/// same `jti` would then be refused as a replay and the session would live on.
#[tokio::test]
async fn an_invalid_token_does_not_use_up_its_jti() {
    let t = harness::start().await;
    let (browser, id, sid) = signed_in(&t).await;
    let jti = "jti-shared-by-forgeries-and-the-genuine-token";
    let mut genuine = claims(&t, &sid);
    genuine["jti"] = jti.into();
    let valid = t.idp.sign_jwt(&genuine);

    let now = t.clock.now_unix();
    let mut forgeries: Vec<(&str, String)> = Vec::new();
    // Properly signed by the provider, but with a claim that fails.
    for (name, value) in [
        ("aud", json!("another-client")),
        ("iss", json!("https://impostor.example")),
        ("exp", json!(now - 3600)),
        ("nonce", json!("n-0S6_WzA2Mj")),
    ] {
        let mut c = genuine.clone();
        c[name] = value;
        forgeries.push((name, t.idp.sign_jwt(&c)));
    }
    // The genuine payload under a broken signature.
    let (input, signature) = valid.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[0] ^= 1;
    forgeries.push((
        "bad signature",
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig)),
    ));
    // The genuine claims signed by another provider's key.
    let other = DevIdp::builder().start().await.unwrap();
    forgeries.push(("another provider's key", other.sign_jwt(&genuine)));

    for (name, forgery) in &forgeries {
        let payload = forgery.split('.').nth(1).unwrap();
        let carried: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(carried["jti"], jti, "{name}: the forgery carries the jti");
        assert_eq!(post_token(&t, forgery).await.status(), 400, "{name}");
        assert!(alive(&t, &id).await, "{name}: the session must survive");
    }

    // The genuine token with the same jti is handled and ends the session.
    let response = post_token(&t, &valid).await;
    let status = response.status();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    assert!(!alive(&t, &id).await, "the genuine token ended the session");
    assert_eq!(browser.api("/bff/user").await.status(), 401);
    // Now, and only now, the jti is remembered.
    let replay = post_token(&t, &valid).await;
    assert_eq!(replay.status(), 400);
    let body: Value = replay.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("replayed"),
        "{body}"
    );
}

#[tokio::test]
async fn without_revoke_on_logout_the_refresh_token_stays_usable() {
    let t = start_configured(false, |c| c.revoke_on_logout(false)).await;
    let (browser, id, sid) = signed_in(&t).await;
    let refresh = t
        .session_of(&browser)
        .await
        .unwrap()
        .record
        .tokens
        .refresh_token
        .clone()
        .unwrap();

    let token = t.idp.sign_logout_token(Some("alice"), Some(&sid), "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    assert!(!alive(&t, &id).await, "the session ended");
    assert_eq!(browser.api("/bff/user").await.status(), 401);
    assert_eq!(t.idp.counters().revocations, 0, "nothing was revoked");
    assert_eq!(
        refresh_directly(&t, refresh.secret()).await,
        200,
        "the refresh token still works at the provider"
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_causes_at_most_one_jwks_refetch() {
    let t = harness::start().await;
    let (_, id, sid) = signed_in(&t).await;
    let jwks_before = t.idp.counters().jwks;
    let other = DevIdp::builder().start().await.unwrap();
    let valid = t.idp.sign_logout_token(Some("alice"), Some(&sid), "bff");
    let (_, rest) = valid.split_once('.').unwrap();
    for i in 0..50 {
        // Another provider's key, and random kids under a real signature.
        let mut c = claims(&t, &sid);
        c["iss"] = t.idp.issuer().into();
        assert_eq!(post_token(&t, &other.sign_jwt(&c)).await.status(), 400);
        let header = json!({ "alg": "RS256", "typ": "logout+jwt", "kid": format!("random-{i}") });
        let token = format!("{}.{rest}", b64(&header));
        assert_eq!(post_token(&t, &token).await.status(), 400);
    }
    assert!(
        t.idp.counters().jwks - jwks_before <= 1,
        "{} JWKS fetches",
        t.idp.counters().jwks - jwks_before
    );
    assert!(alive(&t, &id).await);
}

#[tokio::test]
async fn a_token_signed_with_a_rotated_key_is_verified_after_one_refetch() {
    let t = harness::start().await;
    let (_, id, sid) = signed_in(&t).await;
    let jwks_before = t.idp.counters().jwks;
    t.idp.rotate_keys_drop_old();
    let token = t.idp.sign_logout_token(Some("alice"), Some(&sid), "bff");
    assert_eq!(post_token(&t, &token).await.status(), 200);
    assert!(!alive(&t, &id).await);
    assert_eq!(t.idp.counters().jwks - jwks_before, 1);
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let t = harness::start().await;
    let (_, id, sid) = signed_in(&t).await;
    let valid = t.idp.sign_logout_token(Some("alice"), Some(&sid), "bff");
    let url = format!("{}/bff/backchannel", t.url);
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        ("no body", Some(form), String::new()),
        ("no logout_token", Some(form), "token=x".into()),
        ("empty logout_token", Some(form), "logout_token=".into()),
        (
            "duplicated logout_token",
            Some(form),
            format!("logout_token={valid}&logout_token={valid}"),
        ),
        ("no content type", None, format!("logout_token={valid}")),
        (
            "JSON body",
            Some("application/json"),
            json!({ "logout_token": valid }).to_string(),
        ),
        (
            "oversized body",
            Some(form),
            format!("logout_token={valid}&pad={}", "a".repeat(200_000)),
        ),
        (
            "non-UTF-8 garbage",
            Some(form),
            "logout_token=%FF%FE%00".into(),
        ),
    ];
    for (name, content_type, body) in cases {
        let mut request = http().post(&url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{name}");
        assert!(alive(&t, &id).await, "{name}");
    }
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = http().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method}");
    }
    let get = http()
        .get(format!("{url}?logout_token={valid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert!(alive(&t, &id).await);

    // With a charset parameter, and without any anti-forgery header: accepted.
    let response = http()
        .post(&url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(format!("logout_token={valid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!alive(&t, &id).await);
}

#[tokio::test]
async fn signing_out_at_the_provider_ends_the_bff_session() {
    let t = start_custom(false, true).await;
    let (browser, id, _) = signed_in(&t).await;
    let id_token = t
        .session_of(&browser)
        .await
        .unwrap()
        .record
        .tokens
        .id_token
        .clone()
        .unwrap();
    // The user signs out at the provider (e.g. from another application).
    let response = http()
        .get(format!("{}/endsession", t.idp.issuer()))
        .query(&[("id_token_hint", id_token.secret())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The provider delivers the logout token asynchronously.
    let mut ended = false;
    for _ in 0..200 {
        if !alive(&t, &id).await {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ended, "the back-channel logout did not arrive");
    assert_eq!(browser.api("/bff/user").await.status(), 401);
    assert_eq!(revocations(&t, 1).await, 1);
}

#[tokio::test]
async fn the_endpoint_answers_only_under_the_base_path() {
    // The default harness mounts /bff; no other path answers.
    let t = harness::start_with(Options::default()).await;
    let response = http()
        .post(format!("{}/backchannel", t.url))
        .form(&[("logout_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// Issue 15, defect 5: every matching session ends before any (slow)
/// revocation runs, so a server timeout that cuts the request off cannot
/// leave sessions alive behind a remembered `jti`.
#[tokio::test]
async fn slow_revocations_never_leave_sessions_alive_behind_a_server_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let clock = ManualClock::starting_now();
    let idp_clock = clock.clone();
    let idp = DevIdp::builder()
        .clock(move || idp_clock.now_unix())
        .start()
        .await
        .unwrap();
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .timeouts(Duration::from_secs(2), Duration::from_secs(10))
        .build()
        .unwrap();
    let bff = Bff::builder(config)
        .public_url(&url)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    // The server gives every request one second, like a TimeoutLayer.
    let app =
        Router::new()
            .merge(bff.routes())
            .layer(bff.layer())
            .layer(axum::middleware::from_fn(
                |request: axum::extract::Request, next: axum::middleware::Next| async move {
                    match tokio::time::timeout(Duration::from_secs(1), next.run(request)).await {
                        Ok(response) => response,
                        Err(_) => axum::http::StatusCode::REQUEST_TIMEOUT.into_response(),
                    }
                },
            ));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let t = TestBff {
        idp,
        bff,
        url,
        clock,
    };
    let sessions = [
        signed_in(&t).await,
        signed_in(&t).await,
        signed_in(&t).await,
    ];
    // Each revocation takes three seconds.
    t.idp
        .faults()
        .set_revocation_delay(Some(Duration::from_secs(3)));
    let token = t.idp.sign_logout_token(Some("alice"), None, "bff");
    let response = post_token(&t, &token).await;
    assert_eq!(
        response.status(),
        200,
        "answered before any revocation finished"
    );
    for (_, id, _) in &sessions {
        assert!(!alive(&t, id).await, "every session of the user ended");
    }
    // The revocations still happen, afterwards.
    assert_eq!(revocations(&t, 3).await, 3);
}
