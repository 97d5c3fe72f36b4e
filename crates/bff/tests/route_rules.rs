//! Route rules (`RemoteApi::require`): proxied routes that require claims
//! of the signed-in user, in front of a real upstream and a dev IdP whose
//! user carries groups, an email address and a department.
//!
//! Allowed users reach the upstream; refused ones get 403 (401 when not
//! signed in) with a JSON error, and nothing behind the check happens: the
//! upstream is not called and no token is refreshed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::harness::Browser;
use common::proxy_support::{Upstream, start_upstream};
use oidc_bff::proxy::{RemoteApi, Require};
use oidc_bff::{Bff, OidcConfig, TokenPolicy};
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use oidc_bff_tokens::{Clock as _, ManualClock};
use serde_json::{Value, json};

struct Site {
    idp: RunningIdp,
    url: String,
    clock: ManualClock,
    upstream: Upstream,
    http: reqwest::Client,
}

/// A BFF whose routes require, each:
///
/// | prefix | rule | token |
/// |---|---|---|
/// | `/staff` | groups `staff` or `ops` | user |
/// | `/admins` | groups `admin` | user |
/// | `/admins-open` | groups `admin` | none |
/// | `/corp` | email domain `example.com` | user |
/// | `/partners` | email domain `partner.org` | user |
/// | `/sales` | `department` is `sales` | user |
/// | `/sales-corp` | `department` is `sales` and domain `example.com` | user |
/// | `/free` | nothing | user |
async fn start(user_claims: Value) -> Site {
    let clock = ManualClock::starting_now();
    let idp_clock = clock.clone();
    let idp = DevIdp::builder()
        .user("alice", user_claims)
        .access_token_lifetime(Duration::from_secs(300))
        .id_token_lifetime(Duration::from_secs(3600))
        .clock(move || idp_clock.now_unix())
        .start()
        .await
        .expect("dev idp");
    let upstream = start_upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .scopes(["openid", "profile", "offline_access"])
        .build()
        .expect("config");
    let bff = Bff::builder(config)
        .public_url(&url)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("bff");
    let v1: url::Url = format!("{}/v1/", upstream.url).parse().unwrap();
    let route = |prefix: &str, rule: Require| RemoteApi::new(prefix, v1.clone()).require(rule);
    let app = Router::new()
        .merge(bff.proxy(route("/staff", Require::new().groups(["staff", "ops"]))))
        .merge(bff.proxy(route("/admins", Require::new().groups(["admin"]))))
        .merge(bff.proxy(
            route("/admins-open", Require::new().groups(["admin"])).token(TokenPolicy::None),
        ))
        .merge(bff.proxy(route("/corp", Require::new().email_domain("example.com"))))
        .merge(bff.proxy(route(
            "/partners",
            Require::new().email_domain("partner.org"),
        )))
        .merge(bff.proxy(route(
            "/sales",
            Require::new().claim("department", ["sales"]),
        )))
        .merge(
            bff.proxy(route(
                "/sales-corp",
                Require::new()
                    .claim("department", ["sales"])
                    .email_domain("example.com"),
            )),
        )
        .merge(bff.proxy(route("/free", Require::new())))
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    Site {
        idp,
        url,
        clock,
        upstream,
        http,
    }
}

impl Site {
    async fn sign_in(&self) -> String {
        let browser = Browser::new(&self.url);
        browser.sign_in("/").await;
        browser.cookie("__Host-bff").expect("session cookie")
    }

    /// GET `path` with the anti-forgery header (and the session when given):
    /// status and JSON body.
    async fn get(&self, path: &str, session: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .get(format!("{}{path}", self.url))
            .header("x-csrf", "1");
        if let Some(session) = session {
            request = request.header("cookie", format!("__Host-bff={session}"));
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn alice() -> Value {
    json!({
        "name": "Alice Example",
        "email": "alice@example.com",
        "email_verified": true,
        "groups": ["staff", "readers"],
        "department": "sales",
    })
}

#[tokio::test]
async fn allowed_users_pass_and_refused_users_get_403_before_the_upstream() {
    let site = start(alice()).await;
    let session = site.sign_in().await;
    for allowed in [
        "/staff/x",
        "/corp/x",
        "/sales/x",
        "/sales-corp/x",
        "/free/x",
    ] {
        let before = site.upstream.state.hits();
        let (status, body) = site.get(allowed, Some(&session)).await;
        assert_eq!(status, 200, "{allowed}: {body}");
        assert_eq!(site.upstream.state.hits(), before + 1, "{allowed}");
    }
    let hits = site.upstream.state.hits();
    for refused in ["/admins/x", "/admins-open/x", "/partners/x"] {
        let (status, body) = site.get(refused, Some(&session)).await;
        assert_eq!(status, 403, "{refused}: {body}");
        assert_eq!(body["error"], "forbidden", "{refused}");
        assert!(
            body["message"].as_str().unwrap().contains("requires"),
            "{body}"
        );
    }
    assert_eq!(
        site.upstream.state.hits(),
        hits,
        "the upstream was never called"
    );

    // Not signed in: 401, whatever the rule and the token policy.
    for path in ["/staff/x", "/admins-open/x", "/corp/x"] {
        let (status, body) = site.get(path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "unauthenticated");
    }
    // Without a rule, an anonymous request fails at the token step, as before.
    assert_eq!(site.get("/free/x", None).await.0, 401);
    assert_eq!(site.upstream.state.hits(), hits);
    // Without the anti-forgery header the rule is never reached.
    let response = site
        .http
        .get(format!("{}/staff/x", site.url))
        .header("cookie", format!("__Host-bff={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn an_unverified_or_missing_email_is_refused() {
    let mut claims = alice();
    claims["email_verified"] = json!(false);
    let site = start(claims).await;
    let session = site.sign_in().await;
    for path in ["/corp/x", "/sales-corp/x"] {
        let (status, body) = site.get(path, Some(&session)).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    assert_eq!(site.get("/sales/x", Some(&session)).await.0, 200);

    let site = start(json!({ "department": "sales", "groups": "admin" })).await;
    let session = site.sign_in().await;
    assert_eq!(site.get("/corp/x", Some(&session)).await.0, 403);
    // A single group as a string counts.
    assert_eq!(site.get("/admins/x", Some(&session)).await.0, 200);
    assert_eq!(site.get("/staff/x", Some(&session)).await.0, 403);
}

/// A refused user costs no token work: with the access token expired, a
/// refused request refreshes nothing; an allowed one then refreshes once.
#[tokio::test]
async fn refused_before_any_token_work() {
    let site = start(alice()).await;
    let session = site.sign_in().await;
    site.clock.advance(Duration::from_secs(600));
    for _ in 0..3 {
        assert_eq!(site.get("/admins/x", Some(&session)).await.0, 403);
        assert_eq!(site.get("/partners/x", Some(&session)).await.0, 403);
    }
    assert_eq!(
        site.idp.counters().refresh_grants,
        0,
        "no refresh for a refused user"
    );
    assert_eq!(site.upstream.state.hits(), 0);
    let (status, _) = site.get("/staff/x", Some(&session)).await;
    assert_eq!(status, 200);
    assert_eq!(
        site.idp.counters().refresh_grants,
        1,
        "the allowed route refreshed"
    );
}
