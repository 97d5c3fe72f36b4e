//! The second line against cross-site requests (`Sec-Fetch-Site` / `Origin`,
//! tower-http's `csrf` middleware), over real HTTP: API routes, the proxy and
//! `/bff/user` refuse a cross-site request even when it carries the
//! anti-forgery header; same-origin requests, trusted origins, the sign-in
//! navigations and the back-channel logout endpoint keep working.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use common::harness::{self, Browser};
use common::proxy_support::{self, start_upstream};
use oidc_bff::TokenPolicy;
use oidc_bff::proxy::RemoteApi;
use oidc_bff::{Bff, BffError, OidcConfig};
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use reqwest::Method;

const PARTNER: &str = "https://partner.example";

/// What a browser adds to a request another site's page makes, in the
/// shapes that must all be refused.
fn cross_site_shapes() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "Sec-Fetch-Site: cross-site",
            vec![("sec-fetch-site", "cross-site")],
        ),
        (
            "Sec-Fetch-Site: same-site",
            vec![("sec-fetch-site", "same-site")],
        ),
        (
            "cross-site with a foreign Origin",
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
        ),
        // An older browser: no fetch metadata, a foreign Origin.
        ("foreign Origin", vec![("origin", "https://evil.example")]),
        ("Origin: null", vec![("origin", "null")]),
    ]
}

/// A BFF trusting [`PARTNER`] besides its own origin, with a local API route
/// (every method) behind `csrf_layer()`, a proxied API and the `/bff` routes.
struct App {
    _idp: RunningIdp,
    url: String,
    upstream: proxy_support::Upstream,
    local_hits: Arc<AtomicUsize>,
    http: reqwest::Client,
}

async fn start() -> App {
    let idp = DevIdp::builder().start().await.expect("dev idp");
    let upstream = start_upstream().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .scopes(["openid", "profile", "offline_access"])
        .build()
        .unwrap();
    let bff = Bff::builder(config)
        .public_url(&url)
        // Written as a person might; compared as a browser sends it.
        .trusted_origin("HTTPS://Partner.Example:443")
        .build()
        .unwrap();
    let local_hits = Arc::new(AtomicUsize::new(0));
    let hits = local_hits.clone();
    let local = Router::new()
        .route(
            "/local",
            any(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { "local" }
            }),
        )
        .layer(bff.csrf_layer());
    let v1: url::Url = format!("{}/v1/", upstream.url).parse().unwrap();
    let app = Router::new()
        .merge(local)
        .merge(bff.proxy(RemoteApi::new("/api", v1).token(TokenPolicy::UserOrNone)))
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
    App {
        _idp: idp,
        url,
        upstream,
        local_hits,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

impl App {
    async fn send(
        &self,
        method: Method,
        path: &str,
        session: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(session) = session {
            request = request.header("cookie", format!("__Host-bff={session}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn sign_in(&self) -> String {
        let browser = Browser::new(&self.url);
        browser.sign_in("/").await;
        browser.cookie("__Host-bff").expect("session cookie")
    }
}

async fn assert_refused(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), 403, "{case}");
    let body = response.text().await.unwrap();
    assert!(body.contains("cross_site_request"), "{case}: {body}");
}

#[tokio::test]
async fn cross_site_requests_are_refused_even_with_the_anti_forgery_header() {
    let app = start().await;
    let session = app.sign_in().await;
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ] {
        for (shape, extra) in cross_site_shapes() {
            let mut headers = vec![("x-csrf", "1")];
            headers.extend(extra);
            for path in ["/local", "/api/orders"] {
                let response = app
                    .send(method.clone(), path, Some(&session), &headers)
                    .await;
                let case = format!("{method} {path} with {shape}");
                // A refused preflight grants nothing either.
                assert!(
                    !response
                        .headers()
                        .keys()
                        .any(|name| name.as_str().starts_with("access-control-")),
                    "{case}: {:?}",
                    response.headers()
                );
                if method == Method::HEAD {
                    assert_eq!(response.status(), 403, "{case}");
                } else {
                    assert_refused(response, &case).await;
                }
            }
        }
    }
    let response = app
        .send(
            Method::GET,
            "/bff/user",
            Some(&session),
            &[("x-csrf", "1"), ("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_refused(response, "GET /bff/user cross-site").await;
    assert_eq!(app.local_hits.load(Ordering::SeqCst), 0, "no handler ran");
    assert_eq!(
        app.upstream.state.hits(),
        0,
        "the upstream was never called"
    );
}

#[tokio::test]
async fn the_anti_forgery_header_stays_the_first_line() {
    let app = start().await;
    let session = app.sign_in().await;
    // A cross-site request without the header: refused by the first line,
    // with its answer (401), as before the second line existed.
    for path in ["/local", "/api/orders", "/bff/user"] {
        let response = app
            .send(
                Method::GET,
                path,
                Some(&session),
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://evil.example"),
                ],
            )
            .await;
        assert_eq!(response.status(), 401, "{path}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("csrf_header_missing"),
            "{path}"
        );
    }
    // Same-origin but no header: still 401.
    for method in [Method::GET, Method::POST] {
        let response = app
            .send(
                method.clone(),
                "/local",
                Some(&session),
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(response.status(), 401, "{method}");
    }
    assert_eq!(app.local_hits.load(Ordering::SeqCst), 0);
    assert_eq!(app.upstream.state.hits(), 0);
}

#[tokio::test]
async fn same_origin_trusted_and_non_browser_requests_pass() {
    let app = start().await;
    let session = app.sign_in().await;
    let own = app.url.clone();
    let allowed: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("same-origin", vec![("sec-fetch-site", "same-origin")]),
        (
            "same-origin with its Origin",
            vec![("sec-fetch-site", "same-origin"), ("origin", own.as_str())],
        ),
        // Typed into the address bar, a bookmark.
        ("Sec-Fetch-Site: none", vec![("sec-fetch-site", "none")]),
        // An older browser on the BFF's own origin.
        ("own Origin only", vec![("origin", own.as_str())]),
        // The trusted partner, whatever the fetch metadata says.
        (
            "trusted partner, cross-site",
            vec![("sec-fetch-site", "cross-site"), ("origin", PARTNER)],
        ),
        ("trusted partner, no metadata", vec![("origin", PARTNER)]),
        // Not a browser: neither header.
        ("no fetch metadata", vec![]),
    ];
    let mut expected_upstream = 0;
    for method in [Method::GET, Method::POST, Method::DELETE] {
        for (shape, extra) in &allowed {
            let mut headers = vec![("x-csrf", "1")];
            headers.extend(extra.iter().copied());
            let local = app
                .send(method.clone(), "/local", Some(&session), &headers)
                .await;
            assert_eq!(local.status(), 200, "{method} /local with {shape}");
            assert_eq!(local.text().await.unwrap(), "local");
            let proxied = app
                .send(method.clone(), "/api/orders", Some(&session), &headers)
                .await;
            assert_eq!(proxied.status(), 200, "{method} /api/orders with {shape}");
            expected_upstream += 1;
        }
    }
    assert_eq!(app.upstream.state.hits(), expected_upstream);
    let user = app
        .send(
            Method::GET,
            "/bff/user",
            Some(&session),
            &[("x-csrf", "1"), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(user.status(), 200);
    // A look-alike of the partner is not the partner.
    for origin in [
        "https://partner.example.evil.example",
        "http://partner.example",
        "https://partner.example:8443",
    ] {
        let response = app
            .send(
                Method::POST,
                "/local",
                Some(&session),
                &[
                    ("x-csrf", "1"),
                    ("sec-fetch-site", "cross-site"),
                    ("origin", origin),
                ],
            )
            .await;
        assert_refused(response, origin).await;
    }
}

#[tokio::test]
async fn sign_in_works_through_cross_site_navigations() {
    let app = start().await;
    let browser = Browser::new(&app.url);
    // The app's page sends the browser to /bff/login (same-origin navigation).
    let login = browser
        .get_with(
            "/bff/login?returnUrl=%2Fhome",
            &[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
        .await;
    assert_eq!(login.status(), 303);
    let authorize = harness::location(&login);
    // The authorization request carries a PKCE S256 challenge.
    let query: std::collections::HashMap<String, String> = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(
        query.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert_eq!(query.get("code_challenge").map(String::len), Some(43));
    let at_idp = browser.get(&authorize).await;
    assert!(at_idp.status().is_redirection());
    let callback = harness::location(&at_idp);
    // The provider's site sends it back: a cross-site top-level GET.
    let done = browser
        .get_with(
            &callback,
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ],
        )
        .await;
    assert_eq!(done.status(), 303, "the callback completes the sign-in");
    assert_eq!(harness::location(&done), "/home");
    let session = browser.cookie("__Host-bff").expect("session cookie");

    // The signed-in app works; then logout, a same-origin navigation.
    let user = app
        .send(
            Method::GET,
            "/bff/user",
            Some(&session),
            &[("x-csrf", "1"), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(user.status(), 200);
    let user: serde_json::Value = user.json().await.unwrap();
    let logout_url = user["logoutUrl"].as_str().unwrap().to_owned();
    // A cross-site navigation to the logout URL without the sid: no logout.
    let forged = app
        .send(
            Method::GET,
            "/bff/logout",
            Some(&session),
            &[
                ("sec-fetch-site", "cross-site"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
        .await;
    assert_eq!(forged.status(), 400);
    let logout = browser
        .get_with(
            &logout_url,
            &[
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-mode", "navigate"),
            ],
        )
        .await;
    assert_eq!(logout.status(), 303);
    assert!(browser.cookie("__Host-bff").is_none(), "signed out");
}

#[tokio::test]
async fn unsafe_methods_on_the_sign_in_endpoints_are_checked() {
    let app = start().await;
    // The navigation endpoints take GET only; another method from another
    // site is refused (403) before the method is even looked at (405).
    for path in ["/bff/login", "/bff/callback", "/bff/logout"] {
        let response = app
            .send(
                Method::POST,
                path,
                None,
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://evil.example"),
                ],
            )
            .await;
        assert_eq!(response.status(), 403, "{path}");
    }
}

#[tokio::test]
async fn the_back_channel_endpoint_is_exempt() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let record = t.session_of(&browser).await.unwrap().record;
    let sid = record.sid.clone().unwrap();
    let token = t.idp.sign_logout_token(Some("alice"), Some(&sid), "bff");
    // A provider's server may well send fetch metadata or an Origin of its own.
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/bff/backchannel", t.url))
        .header("sec-fetch-site", "cross-site")
        .header("origin", t.idp.issuer())
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(t.session_of(&browser).await.is_none(), "the session ended");
}

#[tokio::test]
async fn websocket_handshakes_from_the_own_origin_still_pass_the_first_line() {
    // The proxy's existing rule (a handshake may show the BFF's own Origin
    // instead of the header) holds with the layer in front.
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = t
        .request(Method::GET, "/ws/echo", Some(&session), false)
        .header("origin", t.url.clone())
        .header("sec-fetch-site", "same-origin")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    // Own Origin trusted: neither 401 nor 403 (the upstream answers 101).
    assert_eq!(response.status(), 101);
    let foreign = t
        .request(Method::GET, "/ws/echo", Some(&session), true)
        .header("origin", "https://evil.example")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403, "a foreign page's handshake");
}

#[test]
fn invalid_trusted_origins_are_configuration_errors() {
    for origin in [
        "partner.example",
        "https://partner.example/",
        "https://partner.example/app",
        "https://partner.example?x=1",
        "https://user@partner.example",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "",
    ] {
        let config = OidcConfig::builder("https://login.example.com", "bff")
            .client_secret("secret")
            .build()
            .unwrap();
        let err = Bff::builder(config)
            .public_url("https://app.example.com")
            .trusted_origin(origin)
            .build()
            .unwrap_err();
        assert!(matches!(err, BffError::Config(_)), "{origin}: {err}");
        assert!(
            err.to_string().contains("trusted origin"),
            "{origin}: {err}"
        );
    }
    let config = OidcConfig::builder("https://login.example.com", "bff")
        .client_secret("secret")
        .build()
        .unwrap();
    let bff = Bff::builder(config)
        .public_url("https://App.Example.com:443/base/")
        .trusted_origin("https://partner.example")
        .build()
        .unwrap();
    assert_eq!(
        bff.settings().trusted_origins,
        ["https://app.example.com", "https://partner.example"],
        "the public URL's origin first, as a browser sends it"
    );
}
