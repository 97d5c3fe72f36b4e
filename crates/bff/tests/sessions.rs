//! Session lists and session administration on one BFF (memory store): the
//! user's `/bff/sessions` endpoints and the operator's `admin::router`,
//! against a dev IdP that counts revocations. The same endpoints across
//! two instances on Redis and PostgreSQL: `crates/gateway/tests/session_admin.rs`.

mod common;

use common::harness::{Browser, TestBff, start};
use oidc_bff::admin::{self, AdminToken};
use oidc_bff_tokens::SessionId;
use serde_json::Value;

const TOKEN: &str = "a-test-admin-token-of-forty-characters!!";

fn public_id(browser: &Browser) -> String {
    SessionId::parse(&browser.cookie("__Host-bff").expect("signed in"))
        .expect("a session id")
        .public_id()
}

async fn post(
    t: &TestBff,
    browser: &Browser,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value, Vec<String>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", t.url))
        .header(
            "cookie",
            format!(
                "__Host-bff={}",
                browser.cookie("__Host-bff").unwrap_or_default()
            ),
        );
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        cookies,
    )
}

async fn list(browser: &Browser) -> (u16, Value) {
    let response = browser.api("/bff/sessions").await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn users_list_and_end_their_own_sessions() {
    let t = start().await;
    let (laptop, phone) = (t.browser(), t.browser());
    laptop.sign_in("/").await;
    phone.sign_in("/").await;

    let (status, body) = list(&laptop).await;
    assert_eq!(status, 200, "{body}");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], public_id(&laptop).as_str());

    // Anonymous, or without the anti-forgery header: refused.
    assert_eq!(list(&t.browser()).await.0, 401);
    assert_eq!(laptop.get("/bff/sessions").await.status(), 401);
    let end_phone = format!("/bff/sessions/{}/end", public_id(&phone));
    assert_eq!(post(&t, &laptop, &end_phone, &[]).await.0, 401);
    assert_eq!(
        post(
            &t,
            &laptop,
            &end_phone,
            &[("x-csrf", "1"), ("sec-fetch-site", "cross-site")]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(&t, &t.browser(), &end_phone, &[("x-csrf", "1")])
            .await
            .0,
        401
    );
    assert_eq!(t.idp.counters().revocations, 0);
    assert_eq!(phone.api("/bff/user").await.status(), 200);

    // Another device: ended, its refresh token revoked, its cookie kept
    // (it is not this browser's).
    let (status, body, cookies) = post(&t, &laptop, &end_phone, &[("x-csrf", "1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], true);
    assert_eq!(body["current"], false);
    assert!(cookies.is_empty(), "{cookies:?}");
    assert_eq!(t.idp.counters().revocations, 1);
    assert_eq!(phone.api("/bff/user").await.status(), 401);
    assert_eq!(
        post(&t, &laptop, &end_phone, &[("x-csrf", "1")]).await.0,
        404
    );

    // This device: ended too, and its cookie cleared.
    let end_self = format!("/bff/sessions/{}/end", public_id(&laptop));
    let (status, body, cookies) = post(&t, &laptop, &end_self, &[("x-csrf", "1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["current"], true);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-bff=;") || c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    assert_eq!(t.idp.counters().revocations, 2);
}

#[tokio::test]
async fn the_admin_router_needs_its_token_and_ends_sessions() {
    let t = start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = format!("http://{}", listener.local_addr().unwrap());
    let app: axum::Router = admin::router(&t.bff, AdminToken::new(TOKEN).unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (a, b) = (t.browser(), t.browser());
    a.sign_in("/").await;
    b.sign_in("/").await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let request = http.request(method, format!("{ops}{path}"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };

    let path = "/admin/subjects/alice/sessions";
    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let response = call(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
    }
    let response = call(reqwest::Method::GET, path, Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sessions"].as_array().unwrap().len(), 2);

    // A subject in percent-encoded form, and nonsense: 200 with nothing, 404.
    let response = call(
        reqwest::Method::GET,
        "/admin/subjects/auth0%7Cnobody/sessions",
        Some(TOKEN),
    )
    .send()
    .await
    .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["sub"], "auth0|nobody");
    assert_eq!(body["sessions"].as_array().unwrap().len(), 0);
    let other = format!("/admin/subjects/bob/sessions/{}/end", public_id(&a));
    assert_eq!(
        call(reqwest::Method::POST, &other, Some(TOKEN))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(a.api("/bff/user").await.status(), 200);

    let one = format!("/admin/subjects/alice/sessions/{}/end", public_id(&a));
    let response = call(reqwest::Method::POST, &one, Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(a.api("/bff/user").await.status(), 401);
    assert_eq!(b.api("/bff/user").await.status(), 200);
    assert_eq!(t.idp.counters().revocations, 1);

    let all = "/admin/subjects/alice/sessions/end";
    assert_eq!(
        call(reqwest::Method::POST, all, None)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let body: Value = call(reqwest::Method::POST, all, Some(TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ended"].as_array().unwrap().len(), 1);
    assert_eq!(b.api("/bff/user").await.status(), 401);
    assert_eq!(t.idp.counters().revocations, 2);
}
