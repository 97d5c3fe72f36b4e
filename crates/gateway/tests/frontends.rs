//! Several frontends in one gateway (`[[frontend]]`): the real gateway
//! binary, a dev IdP with one client per frontend, and one recording
//! upstream per frontend. Each frontend signs in with its own client, its
//! APIs get that client's tokens, and a session of one frontend is no
//! session at the other, even when its id arrives under the other's cookie
//! name (one shared store).

mod common;

use std::net::SocketAddr;

use common::{Browser, CLIENT_ID, CLIENT_SECRET, Gateway, Upstream};
use http::{StatusCode, header};
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use oidc_bff_gateway::GatewayConfig;
use serde_json::Value;

const A: (&str, &str) = ("spa-a", "secret-a");
const B: (&str, &str) = ("spa-b", "secret-b");

async fn idp() -> RunningIdp {
    DevIdp::builder()
        .client(CLIENT_ID, CLIENT_SECRET)
        .client(A.0, A.1)
        .client(B.0, B.1)
        .start()
        .await
        .expect("start the dev IdP")
}

/// One `[[frontend]]` entry: `selector` lines, its client, one user-token API.
fn frontend(
    selector: &str,
    idp: &RunningIdp,
    client: (&str, &str),
    api: &str,
    upstream: &Upstream,
) -> String {
    format!(
        r#"
[[frontend]]
{selector}
[frontend.oidc]
authority = "{issuer}"
client_id = "{id}"
client_secret = "{secret}"
scopes = ["openid", "profile", "offline_access"]
[[frontend.api]]
path = "{api}"
upstream = "{upstream}"
token = "user"
"#,
        issuer = idp.issuer(),
        id = client.0,
        secret = client.1,
        upstream = upstream.url("/up"),
    )
}

/// The client the token an upstream saw last was issued to.
async fn token_client(idp: &RunningIdp, upstream: &Upstream) -> String {
    let token = upstream.last().bearer().expect("a bearer token upstream");
    let claims = common::introspect(idp, &token).await;
    assert_eq!(claims["active"], Value::Bool(true), "{claims}");
    claims
        .get("client_id")
        .or_else(|| claims.get("azp"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no client in {claims}"))
        .to_owned()
}

/// GET with exactly `cookie` (and the CSRF header); the status.
async fn get_with_cookie(browser: &Browser, url: &str, cookie: &str) -> StatusCode {
    browser
        .http
        .get(url)
        .header(header::COOKIE, cookie)
        .header("x-csrf", "1")
        .send()
        .await
        .expect("request")
        .status()
}

/// A browser whose requests for `localhost` go to 127.0.0.1:`port`.
fn browser_for_localhost(port: u16) -> Browser {
    let mut browser = Browser::new();
    browser.http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .expect("client");
    browser
}

/// A gateway with frontend A on host `127.0.0.1` and B on `b_host` (a
/// spelling of `localhost`), both with the default cookie name, and a
/// browser signed in at each.
struct ByHost {
    idp: RunningIdp,
    default_up: Upstream,
    up_a: Upstream,
    up_b: Upstream,
    gateway: Gateway,
    a_url: String,
    b_url: String,
    a: Browser,
    b: Browser,
}

async fn signed_in_by_host(b_host: &str) -> ByHost {
    let idp = idp().await;
    let default_up = Upstream::start().await;
    let (up_a, up_b) = (Upstream::start().await, Upstream::start().await);
    let extra = [
        frontend("name = \"a\"\nhost = \"127.0.0.1\"", &idp, A, "/api", &up_a),
        frontend(
            &format!("name = \"b\"\nhost = \"{b_host}\""),
            &idp,
            B,
            "/api",
            &up_b,
        ),
    ]
    .concat();
    let config = format!("{}\n{extra}", common::config(&idp, &default_up, 30));
    let gateway = Gateway::start(&config).await;
    let a_url = format!("http://127.0.0.1:{}", gateway.port);
    let b_url = format!("http://localhost:{}", gateway.port);
    let mut a = Browser::new();
    a.navigate(&format!("{a_url}/bff/login?returnUrl=/")).await;
    let mut b = browser_for_localhost(gateway.port);
    b.navigate(&format!("{b_url}/bff/login?returnUrl=/")).await;
    ByHost {
        idp,
        default_up,
        up_a,
        up_b,
        gateway,
        a_url,
        b_url,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_selected_by_host_never_share_sessions() {
    // Both use the default cookie name: only the session's client keeps
    // them apart when a cookie reaches the other host.
    let ByHost {
        idp,
        default_up,
        up_a,
        up_b,
        gateway,
        a_url,
        b_url,
        a,
        b,
    } = signed_in_by_host("LOCALHOST").await;
    let a_session = a.session().expect("A's session cookie").to_owned();
    let b_session = b.session().expect("B's session cookie").to_owned();
    assert_ne!(a_session, b_session);

    // Each frontend's API gets its own client's token.
    let (status, _) = a.get_json(&format!("{a_url}/api/x")).await;
    assert_eq!(status, StatusCode::OK, "{}", gateway.logs());
    assert_eq!(up_a.hits(), 1);
    assert_eq!(token_client(&idp, &up_a).await, A.0);
    let (status, _) = b.get_json(&format!("{b_url}/api/x")).await;
    assert_eq!(status, StatusCode::OK, "{}", gateway.logs());
    assert_eq!(up_b.hits(), 1);
    assert_eq!(token_client(&idp, &up_b).await, B.0);
    let (status, user) = a.get_json(&format!("{a_url}/bff/user")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(user.is_object(), "{user}");
    assert_eq!(default_up.hits(), 0);

    // A's cookie at B, and B's at A: 401 at the API, anonymous at /bff/user.
    let a_cookie = format!("__Host-bff={a_session}");
    let b_cookie = format!("__Host-bff={b_session}");
    for (url, cookie) in [(&b_url, &a_cookie), (&a_url, &b_cookie)] {
        let browser = browser_for_localhost(gateway.port);
        assert_eq!(
            get_with_cookie(&browser, &format!("{url}/api/x"), cookie).await,
            StatusCode::UNAUTHORIZED,
            "{url} with the other frontend's session"
        );
        assert_eq!(
            get_with_cookie(&browser, &format!("{url}/bff/user"), cookie).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!((up_a.hits(), up_b.hits()), (1, 1));
    // And each session still works at home.
    let (status, _) = b.get_json(&format!("{b_url}/api/y")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token_client(&idp, &up_b).await, B.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_selected_by_path_never_share_sessions() {
    let idp = idp().await;
    let default_up = Upstream::start().await;
    let (up_a, up_b) = (Upstream::start().await, Upstream::start().await);
    let extra = [
        frontend(
            "path = \"/a\"\ncookie_name = \"__Host-a\"",
            &idp,
            A,
            "/a/api",
            &up_a,
        ),
        frontend(
            "path = \"/b\"\ncookie_name = \"__Host-b\"",
            &idp,
            B,
            "/b/api",
            &up_b,
        ),
    ]
    .concat();
    let config = format!("{}\n{extra}", common::config(&idp, &default_up, 30));
    let gateway = Gateway::start(&config).await;
    let url = &gateway.url;

    let mut a = Browser::new();
    a.navigate(&format!("{url}/a/bff/login?returnUrl=/a/"))
        .await;
    let a_session = a.cookies.get("__Host-a").expect("A's cookie").clone();
    let mut b = Browser::new();
    b.navigate(&format!("{url}/b/bff/login?returnUrl=/b/"))
        .await;
    let b_session = b.cookies.get("__Host-b").expect("B's cookie").clone();

    let (status, _) = a.get_json(&format!("{url}/a/api/x")).await;
    assert_eq!(status, StatusCode::OK, "{}", gateway.logs());
    assert_eq!(token_client(&idp, &up_a).await, A.0);
    assert_eq!(up_a.last().target, "/up/x");
    let (status, _) = b.get_json(&format!("{url}/b/api/x")).await;
    assert_eq!(status, StatusCode::OK, "{}", gateway.logs());
    assert_eq!(token_client(&idp, &up_b).await, B.0);

    // The other frontend's session under this frontend's own cookie name.
    let probe = Browser::new();
    for (prefix, cookie) in [
        ("/b", format!("__Host-b={a_session}")),
        ("/a", format!("__Host-a={b_session}")),
    ] {
        assert_eq!(
            get_with_cookie(&probe, &format!("{url}{prefix}/api/x"), &cookie).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get_with_cookie(&probe, &format!("{url}{prefix}/bff/user"), &cookie).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // Nor is either one a session of the default frontend.
    assert_eq!(
        get_with_cookie(
            &probe,
            &format!("{url}/api/x"),
            &format!("__Host-bff={a_session}")
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(up_a.hits() + up_b.hits() + default_up.hits(), 2);

    // The default frontend still signs in on its own.
    let mut d = Browser::new();
    d.login(&gateway).await;
    let (status, _) = d.get_json(&format!("{url}/api/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token_client(&idp, &default_up).await, CLIENT_ID);
}

/// A back-channel logout is addressed to one client (its `aud`): it ends
/// that frontend's sessions of the user, not another frontend's on the
/// same store, even when it names only the subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_channel_logout_ends_only_its_own_frontends_sessions() {
    let ByHost {
        idp,
        up_a,
        up_b,
        gateway,
        a_url,
        b_url,
        a,
        b,
        ..
    } = signed_in_by_host("localhost").await;
    assert_eq!(
        a.get_json(&format!("{a_url}/api/x")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        b.get_json(&format!("{b_url}/api/x")).await.0,
        StatusCode::OK
    );

    // The dev IdP signs both in as "alice": a token for client A naming
    // only the subject, delivered to A's back-channel endpoint.
    let token = idp.sign_logout_token(Some("alice"), None, A.0);
    let response = reqwest::Client::new()
        .post(format!("{a_url}/bff/backchannel"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("back-channel request");
    assert_eq!(response.status(), StatusCode::OK, "{}", gateway.logs());

    assert_eq!(
        a.get_json(&format!("{a_url}/api/x")).await.0,
        StatusCode::UNAUTHORIZED,
        "A's session ended"
    );
    assert_eq!(
        b.get_json(&format!("{b_url}/api/x")).await.0,
        StatusCode::OK,
        "B's session is another client's: untouched"
    );
    assert_eq!((up_a.hits(), up_b.hits()), (1, 2));

    // A token for B delivered to B's endpoint ends B's.
    let token = idp.sign_logout_token(Some("alice"), None, B.0);
    let response = b
        .http
        .post(format!("{b_url}/bff/backchannel"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("back-channel request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        b.get_json(&format!("{b_url}/api/x")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<GatewayConfig, String> {
    GatewayConfig::from_toml_str(text, env.iter().copied()).map_err(|e| e.to_string())
}

const BASE: &str = r#"
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[oidc]
authority = "http://127.0.0.1:9000"
client_id = "bff"
client_secret = "s"
"#;

fn entry(selector: &str, client_id: &str) -> String {
    format!(
        "[[frontend]]\n{selector}\n[frontend.oidc]\nauthority = \"http://127.0.0.1:9000\"\n\
         client_id = \"{client_id}\"\nclient_secret = \"s\"\n"
    )
}

#[test]
fn frontend_settings_are_checked_with_precise_keys() {
    // Valid: two hosts with the same cookie name, derived redirect URIs.
    let text = format!(
        "{BASE}{}{}",
        entry("host = \"a.localhost\"", "a"),
        entry("path = \"/b\"\ncookie_name = \"__Host-b\"", "b")
    );
    let config = load(&text, &[]).expect("valid");
    assert_eq!(
        config.frontends[0].redirect_uri(&config.public_url),
        "http://a.localhost:8080/bff/callback"
    );
    assert_eq!(
        config.frontends[1].redirect_uri(&config.public_url),
        "http://127.0.0.1:8080/b/bff/callback"
    );

    // An empty client id, an API outside the frontend's path.
    let text = format!(
        "{BASE}{}[[frontend.api]]\npath = \"/elsewhere\"\nupstream = \"http://127.0.0.1:7000\"\n",
        entry("path = \"/b\"\ncookie_name = \"b\"", "")
    );
    let err = load(&text, &[]).unwrap_err();
    assert!(err.contains("`frontend.0.oidc.client_id`"), "{err}");
    assert!(err.contains("`frontend.0.api.0.path`"), "{err}");

    // Same cookie on one host (path-only frontends share every host), a
    // duplicate selector, no selector at all.
    let text = format!(
        "{BASE}{}{}{}",
        entry("path = \"/a\"", "a"),
        entry("host = \"x.localhost\"\npath = \"/x\"", "x"),
        entry(
            "host = \"X.localhost\"\npath = \"/x\"\ncookie_name = \"x2\"",
            "x2"
        ),
    ) + &entry("", "none");
    let err = load(&text, &[]).unwrap_err();
    assert!(err.contains("`frontend.0.cookie_name`"), "{err}");
    assert!(
        err.contains("`frontend.2`: selects the same requests as frontend.1"),
        "{err}"
    );
    assert!(
        err.contains("`frontend.3`: needs `host` and/or `path`"),
        "{err}"
    );

    // Unknown keys and bad URLs name the entry.
    let text = format!(
        "{BASE}{}colour = \"red\"\n",
        entry("path = \"/a\"\ncookie_name = \"a\"", "a")
    );
    let err = load(&text, &[]).unwrap_err();
    assert!(err.contains("frontend.0.oidc.colour"), "{err}");

    // Environment overrides address entries by index.
    let text = format!("{BASE}{}", entry("path = \"/a\"\ncookie_name = \"a\"", "a"));
    let config = load(
        &text,
        &[
            ("OIDC_BFF__FRONTEND__0__OIDC__CLIENT_ID", "from-env"),
            ("OIDC_BFF__FRONTEND__0__API__0__PATH", "/a/api"),
            (
                "OIDC_BFF__FRONTEND__0__API__0__UPSTREAM",
                "http://127.0.0.1:7000",
            ),
        ],
    )
    .expect("valid with overrides");
    assert_eq!(config.frontends[0].oidc.client_id, "from-env");
    assert_eq!(config.frontends[0].api[0].path, "/a/api");
    let err = load(
        &text,
        &[("OIDC_BFF__FRONTEND__0__OIDC__AUTHORITY", "not a url")],
    )
    .unwrap_err();
    assert!(
        err.contains("OIDC_BFF__FRONTEND__0__OIDC__AUTHORITY"),
        "{err}"
    );
}

#[test]
fn check_prints_each_frontends_redirect_uri() {
    let text = format!(
        "{BASE}{}",
        entry("host = \"admin.localhost\"\ncookie_name = \"adm\"", "admin")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bff.toml");
    std::fs::write(&path, text).expect("write");
    let (code, out, err) = common::check(&path, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("# redirect URI to register: http://admin.localhost:8080/bff/callback"),
        "{out}"
    );
    assert!(out.contains("[[frontend]]"), "{out}");
    assert!(!out.contains("client_secret = \"s\""), "{out}");
}
