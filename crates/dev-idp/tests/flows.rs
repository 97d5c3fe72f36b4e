//! The OAuth/OIDC flows of the dev IdP over real HTTP.

mod common;

use common::*;
use oidc_bff_dev_idp::{Counters, DevIdp, RefreshTokenPolicy};
use serde_json::json;

#[tokio::test]
async fn discovery_document_is_complete() {
    let idp = DevIdp::builder().start().await.unwrap();
    let doc = get_json(&format!(
        "{}/.well-known/openid-configuration",
        idp.issuer()
    ))
    .await;
    assert_eq!(doc["issuer"], idp.issuer());
    assert!(!idp.issuer().ends_with('/'));
    assert_eq!(idp.url().host_str(), Some("127.0.0.1"));
    assert_eq!(idp.url().port(), Some(idp.addr().port()));
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ] {
        let url = doc[endpoint]
            .as_str()
            .unwrap_or_else(|| panic!("{endpoint} missing"));
        assert!(url.starts_with(&idp.issuer()), "{endpoint}: {url}");
    }
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    assert_eq!(doc["backchannel_logout_supported"], true);
    assert_eq!(doc["frontchannel_logout_supported"], false);

    let jwks = get_json(doc["jwks_uri"].as_str().unwrap()).await;
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["alg"].as_str(),
            key["use"].as_str()
        ),
        (Some("RSA"), Some("RS256"), Some("sig"))
    );
    assert!(key["kid"].is_string() && key["n"].is_string() && key["e"].is_string());
    assert_eq!(
        idp.counters(),
        Counters {
            discovery: 1,
            jwks: 1,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn code_flow_with_pkce_issues_verifiable_tokens() {
    let idp = DevIdp::builder().start().await.unwrap();
    let auth = authorize(&idp, "openid profile").await;
    assert!(auth.location.as_str().starts_with(REDIRECT));
    assert_eq!(
        query_param(&auth.location, "state").as_deref(),
        Some("st-1")
    );
    assert_eq!(query_param(&auth.location, "iss"), Some(idp.issuer()));

    let (status, body) = redeem(&idp, &auth.code, &auth.verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "openid profile");
    assert!(
        body.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );

    let id_token = body["id_token"].as_str().unwrap();
    let id = verify(&idp, id_token, Some(CLIENT)).await.unwrap();
    assert_eq!(id["sub"], "alice");
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["azp"], CLIENT);
    assert_eq!(id["name"], "Alice Example");
    assert_eq!(id["email_verified"], true);
    assert!(id["sid"].is_string() && id["auth_time"].is_u64());
    let access_token = body["access_token"].as_str().unwrap();
    let digest = sha2::Digest::finalize(sha2::Digest::chain_update(
        sha2::Sha256::default(),
        access_token,
    ));
    let expected_at_hash = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &digest[..16],
    );
    assert_eq!(id["at_hash"], expected_at_hash);

    let at = verify(&idp, access_token, Some(CLIENT)).await.unwrap();
    assert_eq!(
        (at["sub"].as_str(), at["client_id"].as_str()),
        (Some("alice"), Some(CLIENT))
    );
    assert_eq!(at["scope"], "openid profile");
    assert_eq!(header(access_token)["typ"], "at+jwt");

    let userinfo = http()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), 200);
    let userinfo: serde_json::Value = userinfo.json().await.unwrap();
    assert_eq!(
        (userinfo["sub"].as_str(), userinfo["email"].as_str()),
        (Some("alice"), Some("alice@example.com"))
    );

    let c = idp.counters();
    assert_eq!(
        (c.authorize, c.code_grants, c.userinfo, c.token_errors),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn pkce_mismatch_and_code_replay_are_rejected() {
    let idp = DevIdp::builder().start().await.unwrap();
    let auth = authorize(&idp, "openid").await;
    let wrong = "x".repeat(50);
    let (status, body) = redeem(&idp, &auth.code, &wrong).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Replay: the first redemption works, the second fails and revokes what
    // the code issued.
    let auth = authorize(&idp, "openid offline_access").await;
    let (status, first) = redeem(&idp, &auth.code, &auth.verifier).await;
    assert_eq!(status, 200);
    let (status, body) = redeem(&idp, &auth.code, &auth.verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (_, intro) = post_form(
        &idp,
        "/introspect",
        &[("token", first["access_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(intro["active"], false);
    let (status, _) = refresh(&idp, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(idp.counters().code_grants, 1);
}

#[tokio::test]
async fn refresh_rotation_and_reuse_detection() {
    let idp = DevIdp::builder().start().await.unwrap();
    let tokens = sign_in(&idp, "openid offline_access").await;
    let rt1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let first_sid = claims(tokens["id_token"].as_str().unwrap())["sid"].clone();

    let (status, second) = refresh(&idp, &rt1).await;
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2);
    let id = verify(&idp, second["id_token"].as_str().unwrap(), Some(CLIENT))
        .await
        .unwrap();
    assert_eq!((id["sid"].clone(), id.get("nonce")), (first_sid, None));

    let (status, third) = refresh(&idp, &rt2).await;
    assert_eq!(status, 200);
    let rt3 = third["refresh_token"].as_str().unwrap().to_owned();

    // Reusing rt1 is detected and revokes the family, including rt3.
    let (status, body) = refresh(&idp, &rt1).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = refresh(&idp, &rt3).await;
    assert_eq!(status, 400);
    let (_, intro) = post_form(
        &idp,
        "/introspect",
        &[("token", third["access_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(intro["active"], false);

    let c = idp.counters();
    assert_eq!(
        (
            c.refresh_attempts,
            c.refresh_grants,
            c.refresh_reuse_detected,
            c.token_errors
        ),
        (4, 2, 1, 2)
    );
}

#[tokio::test]
async fn refresh_scope_narrowing_resource_and_no_rotation() {
    let idp = DevIdp::builder()
        .refresh_token_rotation(false)
        .issue_refresh_tokens(RefreshTokenPolicy::Always)
        .start()
        .await
        .unwrap();
    let tokens = sign_in(&idp, "openid email").await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("scope", "email"),
        ("resource", "https://api.example"),
    ];
    let (status, body) = token(&idp, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "email");
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none());
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["aud"],
        "https://api.example"
    );
    let (status, body) = token(
        &idp,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", "openid admin"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    assert_eq!(
        refresh(&idp, rt).await.0,
        200,
        "without rotation the token stays valid"
    );
}

#[tokio::test]
async fn client_credentials_and_client_authentication() {
    let idp = DevIdp::builder()
        .client("svc", "s3cr:t&")
        .client("bff", "secret")
        .start()
        .await
        .unwrap();
    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "api"),
            ("client_id", "svc"),
            ("client_secret", "s3cr:t&"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.unwrap();
    let at = verify(&idp, body["access_token"].as_str().unwrap(), Some("svc"))
        .await
        .unwrap();
    assert_eq!(
        (at["sub"].as_str(), at["scope"].as_str()),
        (Some("svc"), Some("api"))
    );
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none());

    // client_secret_basic with RFC 6749 form-encoding of the secret.
    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth("svc", Some("s3cr%3At%26"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let response = http()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth("svc", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let (status, body) = token(&idp, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body) = token(
        &idp,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "a"),
            ("scope", "b"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let c = idp.counters();
    assert_eq!((c.client_credentials_grants, c.token_errors), (2, 3));
}

#[tokio::test]
async fn revocation_and_introspection() {
    let idp = DevIdp::builder().start().await.unwrap();
    let tokens = sign_in(&idp, "openid offline_access").await;
    let at = tokens["access_token"].as_str().unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();

    let (status, intro) = post_form(&idp, "/introspect", &[("token", at)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        (intro["active"].as_bool(), intro["sub"].as_str()),
        (Some(true), Some("alice"))
    );
    assert_eq!(intro["client_id"], CLIENT);
    let (_, intro) = post_form(&idp, "/introspect", &[("token", rt)]).await;
    assert_eq!(
        (intro["active"].as_bool(), intro["token_type"].as_str()),
        (Some(true), Some("refresh_token"))
    );
    let (_, intro) = post_form(&idp, "/introspect", &[("token", "nonsense")]).await;
    assert_eq!(intro, json!({"active": false}));

    assert_eq!(
        post_form(&idp, "/revoke", &[("token", "unknown")]).await.0,
        200
    );
    assert_eq!(
        post_form(
            &idp,
            "/revoke",
            &[("token", rt), ("token_type_hint", "refresh_token")]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post_form(&idp, "/introspect", &[("token", at)]).await.1["active"],
        false
    );
    assert_eq!(refresh(&idp, rt).await.1["error"], "invalid_grant");
    let userinfo = http()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), 401);
    assert!(
        userinfo.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let response = http()
        .post(format!("{}/revoke", idp.issuer()))
        .form(&[("token", at)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let c = idp.counters();
    assert_eq!((c.revocations, c.introspections, c.userinfo), (3, 4, 1));
}

#[tokio::test]
async fn authorize_rejects_bad_clients_and_redirects_other_errors() {
    let idp = DevIdp::builder()
        .redirect_uri("bff", REDIRECT)
        .start()
        .await
        .unwrap();
    let (_, challenge) = pkce();
    let base = |client: &'static str, redirect: &'static str| {
        vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", redirect),
            ("scope", "openid"),
        ]
    };
    // Unknown client or unregistered redirect URI: an HTML page, no redirect.
    for (client, redirect) in [
        ("nobody", REDIRECT),
        ("bff", "http://127.0.0.1:3000/other"),
        ("bff", "https://evil.example/"),
    ] {
        let response = http()
            .get(format!("{}/authorize", idp.issuer()))
            .query(&base(client, redirect))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let page = response.text().await.unwrap();
        assert!(!page.contains("<script"), "reflected input is escaped");
    }
    let xss = http()
        .get(format!("{}/authorize", idp.issuer()))
        .query(&[("client_id", "<script>alert(1)</script>")])
        .send()
        .await
        .unwrap();
    assert!(xss.text().await.unwrap().contains("&lt;script&gt;"));

    // Missing PKCE and plain PKCE are redirected back as errors.
    let location = authorize_raw(&idp, &base("bff", REDIRECT)).await.unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&location, "iss"), Some(idp.issuer()));
    let mut plain = base("bff", REDIRECT);
    plain.extend([
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "plain"),
        ("state", "s"),
    ]);
    let location = authorize_raw(&idp, &plain).await.unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("s"));
    let mut no_openid = base("bff", REDIRECT);
    no_openid[3] = ("scope", "profile");
    no_openid.extend([
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let location = authorize_raw(&idp, &no_openid).await.unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_scope")
    );
}

#[tokio::test]
async fn end_session_validates_and_redirects() {
    let idp = DevIdp::builder()
        .post_logout_redirect_uri("bff", "http://127.0.0.1:3000/bye")
        .start()
        .await
        .unwrap();
    let tokens = sign_in(&idp, "openid").await;
    let hint = tokens["id_token"].as_str().unwrap();
    let end = |params: Vec<(&'static str, String)>| {
        let url = format!("{}/endsession", idp.issuer());
        async move { http().get(url).query(&params).send().await.unwrap() }
    };
    let response = end(vec![
        ("id_token_hint", hint.to_owned()),
        (
            "post_logout_redirect_uri",
            "http://127.0.0.1:3000/bye".into(),
        ),
        ("state", "xyz".into()),
    ])
    .await;
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "http://127.0.0.1:3000/bye?state=xyz"
    );

    let response = end(vec![
        ("id_token_hint", hint.to_owned()),
        ("post_logout_redirect_uri", "http://127.0.0.1:3000/x".into()),
    ])
    .await;
    assert_eq!(response.status(), 400);
    let forged = idp.sign_jwt(&json!({"iss": "http://elsewhere", "aud": "bff"}));
    assert_eq!(end(vec![("id_token_hint", forged)]).await.status(), 400);
    let response = end(vec![]).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("Signed out"));
    assert_eq!(idp.counters().end_session, 4);
}

#[tokio::test]
async fn shutdown_refuses_connections() {
    let idp = DevIdp::builder().start().await.unwrap();
    let url = format!("{}/jwks", idp.issuer());
    // A client holding an idle keep-alive connection must not stall shutdown.
    let client = http();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    let started = std::time::Instant::now();
    idp.clone().shutdown().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(http().get(&url).send().await.is_err());
    assert!(client.get(&url).send().await.is_err());
}
