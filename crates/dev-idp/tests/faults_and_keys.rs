//! Fault injection, key rotation, ES256 and logout tokens.

mod common;

use std::time::Duration;

use common::*;
use oidc_bff_dev_idp::{DevIdp, IdTokenFault, IssParamFault, SigningAlg};
use serde_json::json;

#[tokio::test]
async fn token_status_and_refresh_error_faults() {
    let idp = DevIdp::builder().start().await.unwrap();
    let tokens = sign_in(&idp, "openid offline_access").await;
    let rt = tokens["refresh_token"].as_str().unwrap();

    idp.faults().set_token_status(Some(503));
    let (status, body) = refresh(&idp, rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("server_error"))
    );
    idp.faults().clear();

    idp.faults().set_refresh_error(Some("invalid_grant"));
    let (status, body) = refresh(&idp, rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    idp.faults().set_refresh_error(None);

    // The token was not consumed by the failed attempts.
    idp.faults().set_refresh_omits_refresh_token(true);
    idp.faults().set_omit_expires_in(true);
    let (status, body) = refresh(&idp, rt).await;
    assert_eq!(status, 200);
    assert!(body.get("refresh_token").is_none() && body.get("expires_in").is_none());
    assert_eq!(
        refresh(&idp, rt).await.0,
        200,
        "the old refresh token stays valid"
    );

    let c = idp.counters();
    assert_eq!(
        (c.refresh_attempts, c.refresh_grants, c.token_errors),
        (4, 2, 2)
    );
}

#[tokio::test]
async fn token_delay_fault() {
    let idp = DevIdp::builder().start().await.unwrap();
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let (status, _) = token(&idp, &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn id_token_faults() {
    let idp = DevIdp::builder().start().await.unwrap();
    idp.faults()
        .set_id_token_fault(Some(IdTokenFault::WrongIssuer));
    let id_token = sign_in(&idp, "openid").await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(claims(&id_token)["iss"], idp.issuer());
    assert!(verify(&idp, &id_token, Some(CLIENT)).await.is_err());

    let cases = [
        (IdTokenFault::BadSignature, "InvalidSignature"),
        (IdTokenFault::UnknownKid, "kid not in JWKS"),
        (IdTokenFault::NoKid, "no kid"),
        (IdTokenFault::Expired, "ExpiredSignature"),
        (IdTokenFault::WrongAudience, "InvalidAudience"),
    ];
    for (fault, expected) in cases {
        idp.faults().set_id_token_fault(Some(fault));
        let id_token = sign_in(&idp, "openid").await["id_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let err = verify(&idp, &id_token, Some(CLIENT)).await.unwrap_err();
        assert!(err.contains(expected), "{fault:?}: {err}");
    }

    idp.faults().set_id_token_fault(Some(IdTokenFault::AlgNone));
    let id_token = sign_in(&idp, "openid").await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(header(&id_token)["alg"], "none");
    assert!(id_token.ends_with('.'));
    idp.faults()
        .set_id_token_fault(Some(IdTokenFault::Hs256WithPublicKey));
    let id_token = sign_in(&idp, "openid").await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(header(&id_token)["alg"], "HS256");

    let simple = [
        (IdTokenFault::MissingNonce, "nonce", None),
        (
            IdTokenFault::WrongNonce,
            "nonce",
            Some(json!("wrong-nonce")),
        ),
        (IdTokenFault::MissingSub, "sub", None),
        (
            IdTokenFault::DifferentSub,
            "sub",
            Some(json!("different-subject")),
        ),
        (
            IdTokenFault::ExtraAudience,
            "aud",
            Some(json!(["bff", "untrusted-extra-audience"])),
        ),
        (
            IdTokenFault::WrongAzp,
            "azp",
            Some(json!("some-other-client")),
        ),
        (IdTokenFault::MissingIat, "iat", None),
    ];
    for (fault, claim, expected) in simple {
        idp.faults().set_id_token_fault(Some(fault));
        let id_token = sign_in(&idp, "openid").await["id_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(claims(&id_token).get(claim).cloned(), expected, "{fault:?}");
    }
}

#[tokio::test]
async fn discovery_authorize_and_userinfo_faults() {
    let idp = DevIdp::builder().start().await.unwrap();
    let discovery = format!("{}/.well-known/openid-configuration", idp.issuer());
    idp.faults().set_discovery_issuer(Some("http://other"));
    idp.faults().set_no_revocation_endpoint(true);
    let doc = get_json(&discovery).await;
    assert_eq!(doc["issuer"], "http://other");
    assert!(doc.get("revocation_endpoint").is_none());

    idp.faults().set_authorize_iss(Some(IssParamFault::Missing));
    assert_eq!(
        query_param(&authorize(&idp, "openid").await.location, "iss"),
        None
    );
    idp.faults().set_authorize_iss(Some(IssParamFault::Wrong));
    assert_ne!(
        query_param(&authorize(&idp, "openid").await.location, "iss"),
        Some(idp.issuer())
    );
    idp.faults().clear();

    idp.faults()
        .set_authorize_error(Some(("access_denied", "user <said> no")));
    let (_, challenge) = pkce();
    let location = authorize_raw(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "abc"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(
        query_param(&location, "error_description").as_deref(),
        Some("user <said> no")
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some("abc"));
    idp.faults().clear();

    let at = sign_in(&idp, "openid").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    idp.faults().set_userinfo_sub(Some("mallory"));
    let info: serde_json::Value = http()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], "mallory");
    idp.faults().set_userinfo_sub(None);
    idp.faults()
        .set_userinfo_extra_claims(Some(json!({"azp": "x", "sub": "eve", "email": "e@x"})));
    let info: serde_json::Value = http()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&info["sub"], &info["azp"], &info["email"]),
        (&json!("alice"), &json!("x"), &json!("e@x"))
    );

    let moved = format!("{}/jwks?moved=1", idp.issuer());
    idp.faults().set_discovery_jwks_uri(Some(&moved));
    assert_eq!(get_json(&discovery).await["jwks_uri"], moved.as_str());
    assert!(get_json(&moved).await["keys"].is_array());

    idp.faults().set_jwks_garbage_key(true);
    let jwks = get_json(&format!("{}/jwks", idp.issuer())).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);

    idp.faults().set_revocation_status(Some(503));
    assert_eq!(post_form(&idp, "/revoke", &[("token", &at)]).await.0, 503);
}

#[tokio::test]
async fn key_rotation_publishes_new_kid() {
    let idp = DevIdp::builder().start().await.unwrap();
    let jwks_url = format!("{}/jwks", idp.issuer());
    let old_token = sign_in(&idp, "openid").await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = header(&old_token)["kid"].as_str().unwrap().to_owned();
    let old_n = get_json(&jwks_url).await["keys"][0]["n"].clone();

    idp.rotate_keys();
    let new_token = sign_in(&idp, "openid").await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_kid = header(&new_token)["kid"].as_str().unwrap().to_owned();
    assert_ne!(old_kid, new_kid);
    let jwks = get_json(&jwks_url).await;
    let kids: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, [new_kid.clone(), old_kid.clone()]);
    assert_ne!(jwks["keys"][0]["n"], old_n, "genuinely new key material");
    assert!(verify(&idp, &old_token, Some(CLIENT)).await.is_ok());
    assert!(verify(&idp, &new_token, Some(CLIENT)).await.is_ok());

    idp.rotate_keys_drop_old();
    let jwks = get_json(&jwks_url).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_ne!(jwks["keys"][0]["kid"].as_str(), Some(new_kid.as_str()));
    assert!(verify(&idp, &old_token, Some(CLIENT)).await.is_err());
}

#[tokio::test]
async fn es256_signing() {
    let idp = DevIdp::builder()
        .signing_alg(SigningAlg::Es256)
        .start()
        .await
        .unwrap();
    let key = &get_json(&format!("{}/jwks", idp.issuer())).await["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    let tokens = sign_in(&idp, "openid").await;
    let id = verify(&idp, tokens["id_token"].as_str().unwrap(), Some(CLIENT))
        .await
        .unwrap();
    assert_eq!(id["sub"], "alice");
    let logout = http()
        .get(format!("{}/endsession", idp.issuer()))
        .query(&[
            ("id_token_hint", tokens["id_token"].as_str().unwrap()),
            ("post_logout_redirect_uri", "http://localhost:8080/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 302, "an ES256 id_token_hint is recognised");
    idp.rotate_keys();
    let token = sign_in(&idp, "openid").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(verify(&idp, &token, Some(CLIENT)).await.is_ok());
}

#[tokio::test]
async fn logout_tokens_and_arbitrary_jwts() {
    let idp = DevIdp::builder().start().await.unwrap();
    let token = idp.sign_logout_token(Some("alice"), Some("sid-1"), "bff");
    assert_eq!(header(&token)["typ"], "logout+jwt");
    let c = verify(&idp, &token, Some("bff")).await.unwrap();
    assert_eq!(
        (c["sub"].as_str(), c["sid"].as_str()),
        (Some("alice"), Some("sid-1"))
    );
    assert_eq!(
        c["events"],
        json!({"http://schemas.openid.net/event/backchannel-logout": {}})
    );
    assert!(c["jti"].is_string() && c.get("nonce").is_none());

    let jwt = idp
        .sign_jwt(&json!({"iss": idp.issuer(), "aud": "x", "exp": 4_000_000_000u64, "custom": 1}));
    assert_eq!(verify(&idp, &jwt, Some("x")).await.unwrap()["custom"], 1);
}

#[tokio::test]
async fn end_session_sends_back_channel_logout() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let receiver = axum::Router::new().route(
        "/backchannel",
        post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/backchannel", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let idp = DevIdp::builder()
        .backchannel_logout_uri(CLIENT, &uri)
        .start()
        .await
        .unwrap();
    let id_token = sign_in(&idp, "openid").await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let sid = claims(&id_token)["sid"].clone();
    let response = http()
        .get(format!("{}/endsession", idp.issuer()))
        .query(&[("id_token_hint", &id_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let body = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let logout_token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .unwrap()
        .1;
    let c = verify(&idp, &logout_token, Some(CLIENT)).await.unwrap();
    assert_eq!((c["sid"].clone(), c["sub"].as_str()), (sid, Some("alice")));
}
