//! Session administration across two `oidc-bff` gateway processes sharing
//! one store (Redis, then PostgreSQL): the user's own session list
//! (`/bff/sessions`, on the public port) and the operator's admin API (on
//! each instance's operations listener, `[metrics] listen`, behind the
//! `[admin]` bearer token read from an environment variable).
//!
//! What one instance lists includes the sessions made on the other; what
//! one ends is gone on the other, its refresh token revoked at the dev IdP
//! (which counts revocations). Requests without the anti-forgery header,
//! without or with a wrong admin token, and for another user's session are
//! refused. The admin API is not on the public port.
//!
//! The services are the machine's Redis (127.0.0.1:6379) and PostgreSQL
//! (127.0.0.1:5432, database `test`). Without one the test fails when
//! `CI=true` and is skipped with a notice otherwise.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Browser, Gateway, Upstream, config_with, free_port, idp};
use oidc_bff::tokens::store::KeyRing;
use oidc_bff::tokens::{
    AccessToken, RefreshToken, SessionId, SessionRecord, SessionStore, UserTokens,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;

const KEY: &str = "sa1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const REDIS: &str = "redis://127.0.0.1:6379";
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
const TOKEN_VAR: &str = "BFF_TEST_ADMIN_TOKEN";
const ADMIN_TOKEN: &str = "admin-token-0123456789-abcdefghijklmnop";

async fn service(name: &str, addr: &str) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => true,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{name} at {addr} is required when CI=true: {why}");
            }
            eprintln!(
                "skipping: {name} at {addr} is not available ({why}); set CI=true to make this a failure"
            );
            false
        }
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("sa{}x{nanos}", std::process::id())
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Redis,
    Postgres,
}

/// The two instances' shared store, and a handle on it for the test.
struct Shared {
    backend: Backend,
    prefix: String,
}

impl Shared {
    fn session_toml(&self) -> String {
        let url = match self.backend {
            Backend::Redis => REDIS,
            Backend::Postgres => POSTGRES,
        };
        format!(
            "store = \"{url}\"\nencryption_keys = [\"{KEY}\"]\nprefix = \"{}\"\n",
            self.prefix
        )
    }

    async fn open(&self) -> Arc<dyn SessionStore> {
        let keys = KeyRing::from_config([KEY]).unwrap();
        match self.backend {
            Backend::Redis => Arc::new(
                oidc_bff::tokens::store::RedisStore::builder(REDIS)
                    .key_prefix(&self.prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap(),
            ),
            Backend::Postgres => Arc::new(
                oidc_bff::tokens::store::PostgresStore::builder(POSTGRES)
                    .table_prefix(&self.prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap(),
            ),
        }
    }

    async fn cleanup(&self) {
        let keys = KeyRing::from_config([KEY]).unwrap();
        match self.backend {
            Backend::Redis => {
                let store = oidc_bff::tokens::store::RedisStore::builder(REDIS)
                    .key_prefix(&self.prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap();
                store.drop_all().await.unwrap();
            }
            Backend::Postgres => {
                let store = oidc_bff::tokens::store::PostgresStore::builder(POSTGRES)
                    .table_prefix(&self.prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap();
                store.drop_tables().await.unwrap();
            }
        }
    }
}

/// A session of another subject, written straight into the shared store.
fn record_of(sub: &str) -> SessionRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    SessionRecord {
        sub: sub.into(),
        sid: None,
        claims: serde_json::Map::new(),
        tokens: UserTokens {
            access_token: AccessToken::new("mallory-access"),
            expires_at: now + 300,
            token_type: "Bearer".into(),
            refresh_token: Some(RefreshToken::new("mallory-refresh")),
            id_token: None,
            scope: None,
            refreshed_at: None,
            refresh_count: 0,
            issued_at: Some(now),
        },
        resource_tokens: Default::default(),
        created_at: now,
        expires_at: now + 3600,
        last_active: now,
        logout_id: "mallory-logout".into(),
        user_agent: None,
        dpop_key: None,
    }
}

fn browser(agent: &str) -> Browser {
    Browser {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(agent)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        cookies: Default::default(),
    }
}

fn public_id(browser: &Browser) -> String {
    SessionId::parse(browser.session().expect("signed in"))
        .expect("a session id")
        .public_id()
}

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// An admin API request to `ops` (a port) with `token` as bearer, if any.
fn admin(method: Method, ops: u16, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new().request(method, format!("http://127.0.0.1:{ops}{path}"));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Waits until `browser` is signed out at the gateway `url`: at once in
/// the store, and in that instance's read cache as soon as the store's
/// announcement arrives.
async fn signed_out(browser: &Browser, url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = browser.get_json(&format!("{url}/bff/user")).await;
        if status == 401 {
            return;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the session still works at {url}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn two_instances(shared: Shared) {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let ops = [free_port(), free_port()];
    let base = config_with(
        &idp,
        &upstream,
        1,
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:OPS_PORT\"\n\n[admin]\ntoken_env = \"{TOKEN_VAR}\"\n"
        ),
    )
    .replace("store = \"memory\"\n", &shared.session_toml());
    let env = [(TOKEN_VAR, ADMIN_TOKEN)];
    let gateways = [
        Gateway::start_with_env(&base.replace("OPS_PORT", &ops[0].to_string()), &env).await,
        Gateway::start_with_env(&base.replace("OPS_PORT", &ops[1].to_string()), &env).await,
    ];
    let (g0, g1) = (&gateways[0], &gateways[1]);
    let logs = || format!("{}\n---\n{}", g0.logs(), g1.logs());

    let mut laptop = browser("Laptop/1.0 (X11)");
    laptop.login(g0).await;
    let mut phone = browser("Phone/2.0\t\tMobile");
    phone.login(g1).await;
    let (laptop_id, phone_id) = (public_id(&laptop), public_id(&phone));

    // --- The user's list: instance 1 shows the session made on instance 0.
    let (status, body, headers) =
        send(laptop.api(Method::GET, &format!("{}/bff/sessions", g1.url))).await;
    assert_eq!(status, 200, "{body}\n{}", logs());
    assert_eq!(headers["cache-control"], "no-store");
    let sessions = body["sessions"].as_array().expect("a list");
    assert_eq!(sessions.len(), 2, "{body}");
    let find = |id: &str| sessions.iter().find(|s| s["id"] == id).cloned().expect(id);
    assert_eq!(find(&laptop_id)["current"], true);
    assert_eq!(find(&phone_id)["current"], false);
    assert_eq!(find(&laptop_id)["userAgent"], "Laptop/1.0 (X11)");
    assert_eq!(
        find(&phone_id)["userAgent"],
        "Phone/2.0 Mobile",
        "sanitised"
    );
    for s in sessions {
        assert!(s["createdAt"].as_u64().unwrap() <= s["lastUsed"].as_u64().unwrap());
        assert!(s["expiresAt"].as_u64().unwrap() > s["createdAt"].as_u64().unwrap());
    }
    let text = body.to_string();
    for cookie in [laptop.session().unwrap(), phone.session().unwrap()] {
        assert!(!text.contains(cookie), "a cookie value in the list");
    }

    // --- Anti-forgery: no header → 401; a cross-site request → 403.
    let bare = laptop
        .http
        .get(format!("{}/bff/sessions", g0.url))
        .header("cookie", laptop.cookie_header());
    assert_eq!(send(bare).await.0, 401);
    let end_phone = format!("{}/bff/sessions/{phone_id}/end", g0.url);
    let bare = laptop
        .http
        .post(&end_phone)
        .header("cookie", laptop.cookie_header());
    assert_eq!(send(bare).await.0, 401);
    let cross = laptop
        .api(Method::POST, &end_phone)
        .header("sec-fetch-site", "cross-site");
    assert_eq!(send(cross).await.0, 403);
    assert_eq!(idp.counters().revocations, 0);
    // Not signed in: 401.
    let (status, _, _) = send(
        reqwest::Client::new()
            .get(format!("{}/bff/sessions", g0.url))
            .header("x-csrf", "1"),
    )
    .await;
    assert_eq!(status, 401);

    // --- Another user's session, and an unknown id: 404, nothing ends.
    let store = shared.open().await;
    let mallory = SessionId::generate();
    store.create(&mallory, record_of("mallory")).await.unwrap();
    for id in [mallory.public_id(), "unknown".to_owned(), "x".repeat(300)] {
        let (status, body, _) =
            send(laptop.api(Method::POST, &format!("{}/bff/sessions/{id}/end", g0.url))).await;
        assert_eq!(status, 404, "{id}: {body}");
        assert_eq!(body["error"], "not_found");
    }
    assert!(store.load_latest(&mallory).await.unwrap().is_some());

    // --- "Sign out my other device": ended on instance 0, used on instance 1.
    let (status, body, _) = send(laptop.api(Method::POST, &end_phone)).await;
    assert_eq!(status, 200, "{body}\n{}", logs());
    assert_eq!(body["ended"], phone_id.as_str());
    assert_eq!(body["revoked"], true);
    assert_eq!(body["current"], false);
    assert_eq!(
        idp.counters().revocations,
        1,
        "the refresh token was revoked"
    );
    signed_out(&phone, &g1.url).await;
    let (status, _) = laptop.get_json(&format!("{}/bff/user", g1.url)).await;
    assert_eq!(status, 200, "the laptop is not");
    assert_eq!(
        send(laptop.api(Method::POST, &end_phone)).await.0,
        404,
        "once"
    );

    // --- The admin API: only with the token, only on the operations port.
    let list = "/admin/subjects/alice/sessions";
    let (status, body, headers) = send(admin(Method::GET, ops[0], list, None)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_token");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let wrong = format!("{ADMIN_TOKEN}x");
    for token in [wrong.as_str(), &ADMIN_TOKEN[1..], "", "Basic x"] {
        assert_eq!(
            send(admin(Method::GET, ops[0], list, Some(token))).await.0,
            401
        );
    }
    let raw = admin(Method::GET, ops[0], list, None).header("authorization", ADMIN_TOKEN);
    assert_eq!(send(raw).await.0, 401, "no scheme");
    let end_all = "/admin/subjects/alice/sessions/end";
    assert_eq!(
        send(admin(Method::POST, ops[1], end_all, None)).await.0,
        401
    );
    for g in [g0, g1] {
        let public = reqwest::Client::new()
            .get(format!("{}{list}", g.url))
            .bearer_auth(ADMIN_TOKEN);
        assert_eq!(
            send(public).await.0,
            404,
            "the admin API is not on the public port"
        );
    }
    assert!(!logs().contains(ADMIN_TOKEN), "the token was logged");

    let (status, body, _) = send(admin(Method::GET, ops[1], list, Some(ADMIN_TOKEN))).await;
    assert_eq!(status, 200, "{body}\n{}", logs());
    assert_eq!(body["sub"], "alice");
    let ids: Vec<&str> = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![laptop_id.as_str()]);
    let (status, body, _) = send(admin(
        Method::GET,
        ops[0],
        "/admin/subjects/mallory/sessions",
        Some(ADMIN_TOKEN),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["sessions"][0]["id"], mallory.public_id().as_str());

    // End one (made on instance 0) through instance 1's admin API.
    let mut tablet = browser("Tablet/3.0");
    tablet.login(g1).await;
    let tablet_id = public_id(&tablet);
    let end_laptop = format!("/admin/subjects/alice/sessions/{laptop_id}/end");
    let (status, body, _) = send(admin(Method::POST, ops[1], &end_laptop, Some(ADMIN_TOKEN))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ended"][0]["id"], laptop_id.as_str());
    assert_eq!(body["ended"][0]["revoked"], true);
    assert_eq!(idp.counters().revocations, 2);
    signed_out(&laptop, &g0.url).await;
    // Another subject's id, an unknown one, an ended one: 404.
    for path in [
        format!("/admin/subjects/alice/sessions/{}/end", mallory.public_id()),
        format!("/admin/subjects/mallory/sessions/{tablet_id}/end"),
        end_laptop.clone(),
    ] {
        let (status, body, _) = send(admin(Method::POST, ops[0], &path, Some(ADMIN_TOKEN))).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // End all of alice's sessions through instance 0: the tablet (instance 1).
    let (status, body, _) = send(admin(Method::POST, ops[0], end_all, Some(ADMIN_TOKEN))).await;
    assert_eq!(status, 200, "{body}");
    let ended = body["ended"].as_array().unwrap();
    assert_eq!(ended.len(), 1, "{body}");
    assert_eq!(ended[0]["id"], tablet_id.as_str());
    assert_eq!(idp.counters().revocations, 3);
    signed_out(&tablet, &g1.url).await;
    let (_, body, _) = send(admin(Method::GET, ops[1], list, Some(ADMIN_TOKEN))).await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 0);
    assert!(
        store.load_latest(&mallory).await.unwrap().is_some(),
        "another subject's session stays"
    );
    assert!(!logs().contains(ADMIN_TOKEN), "the token was logged");

    drop(gateways);
    shared.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_instances() {
    if !service("Redis", "127.0.0.1:6379").await {
        return;
    }
    two_instances(Shared {
        backend: Backend::Redis,
        prefix: format!("{}:", unique()),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances() {
    if !service("PostgreSQL", "127.0.0.1:5432").await {
        return;
    }
    two_instances(Shared {
        backend: Backend::Postgres,
        prefix: format!("{}_", unique()),
    })
    .await;
}
