//! The remote API proxy over real HTTP: a dev IdP, a BFF with remote APIs
//! mounted, and real upstream servers on loopback that report what reached
//! them.

mod common;

use std::time::Duration;

use common::proxy_support::{
    self, BIG, ProxyBff, echoed, generated, generated_digest, hex, jwt_claims,
};
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::Method;
use sha2::{Digest as _, Sha256};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest as _};

/// Guards against a hang (a buffering proxy would hang the gated tests).
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test]
async fn forwards_to_the_upstream_path_with_the_users_token() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let (status, echo) = t
        .echo("/api/users/42?x=1&y=a%20b&x=2", Some(&session))
        .await;
    assert_eq!(status, 200);
    assert_eq!(echo["path"], "/v1/users/42");
    assert_eq!(echo["query"], "x=1&y=a%20b&x=2");
    let token = t.stored_token(&session).await;
    assert_eq!(
        echoed(&echo, "authorization"),
        Some(format!("Bearer {token}"))
    );
    assert_eq!(jwt_claims(&token)["sub"], "alice");

    // The prefix itself and the prefix with a slash map to the base path.
    for path in ["/api", "/api/"] {
        let (status, echo) = t.echo(path, Some(&session)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(echo["path"], "/v1/", "{path}");
    }
}

#[tokio::test]
async fn refreshes_an_expiring_token_once_before_forwarding() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let (_, first) = t.echo("/api/a", Some(&session)).await;
    let old = echoed(&first, "authorization").unwrap();
    let before = t.idp.counters().refresh_grants;

    // 300 s tokens: after 301 s the token has expired and is renewed
    // before forwarding. (Merely due for renewal, it would be forwarded at
    // once while the renewal runs behind: see tests/user_token.rs.)
    t.clock.advance(Duration::from_secs(301));
    let (status, second) = t.echo("/api/b", Some(&session)).await;
    assert_eq!(status, 200);
    assert_eq!(t.idp.counters().refresh_grants, before + 1);
    let new = echoed(&second, "authorization").unwrap();
    assert_ne!(new, old);
    assert_eq!(new, format!("Bearer {}", t.stored_token(&session).await));

    // The renewed token is used as is: no further refresh.
    let (_, third) = t.echo("/api/c", Some(&session)).await;
    assert_eq!(echoed(&third, "authorization").unwrap(), new);
    assert_eq!(t.idp.counters().refresh_grants, before + 1);
}

#[tokio::test]
async fn a_rejected_refresh_ends_the_session_with_401() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    t.idp.faults().set_refresh_error(Some("invalid_grant"));
    t.clock.advance(Duration::from_secs(400)); // the token has expired
    let hits = t.upstream.state.hits();
    let response = t
        .request(Method::GET, "/api/x", Some(&session), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let cleared: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("__Host-bff=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_eq!(t.upstream.state.hits(), hits, "the upstream was not called");
    let id = oidc_bff_tokens::SessionId::parse(&session).unwrap();
    assert!(
        t.bff.engine().load_session(&id).await.unwrap().is_none(),
        "session ended"
    );
    // And stays 401, never a redirect.
    let again = t
        .request(Method::GET, "/api/x", Some(&session), true)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn requests_without_the_anti_forgery_header_never_reach_the_upstream() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let hits = t.upstream.state.hits();
    for (method, path, session) in [
        (Method::GET, "/api/x", Some(session.as_str())),
        (Method::POST, "/api/x", Some(session.as_str())),
        (Method::DELETE, "/api", Some(session.as_str())),
        (Method::GET, "/open/x", None),
        (Method::GET, "/m2m/x", None),
        (Method::GET, "/local", Some(session.as_str())),
    ] {
        let response = t
            .request(method.clone(), path, session, false)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        assert!(response.headers().get("location").is_none());
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "csrf_header_missing");
    }
    // A wrong value is no better.
    let response = t
        .request(Method::GET, "/api/x", Some(&session), false)
        .header("x-csrf", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(t.upstream.state.hits(), hits);
    // No client token was fetched either.
    assert_eq!(t.idp.counters().client_credentials_grants, 0);
}

#[tokio::test]
async fn browser_credentials_and_forged_headers_are_replaced() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = t
        .request(Method::GET, "/api/headers", Some(&session), true)
        .header("cookie", "other=1")
        .header("authorization", "Bearer forged")
        .header("dpop", "forged-proof")
        .header("proxy-authorization", "Basic Zm9yZ2Vk")
        .header("proxy-foo", "1")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-prefix", "/evil")
        .header("x-forwarded-port", "1")
        .header("forwarded", "for=6.6.6.6;host=evil.example")
        .header("x-real-ip", "6.6.6.6")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("te", "trailers")
        .header("x-app", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    let token = t.stored_token(&session).await;
    assert_eq!(
        echoed(&echo, "authorization"),
        Some(format!("Bearer {token}"))
    );
    assert_eq!(
        echoed(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echoed(&echo, "x-forwarded-host"), Some(t.addr.to_string()));
    assert_eq!(echoed(&echo, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(echoed(&echo, "x-forwarded-prefix").as_deref(), Some("/api"));
    assert_eq!(echoed(&echo, "x-app").as_deref(), Some("kept"));
    assert_eq!(
        echoed(&echo, "host"),
        Some(t.upstream.url.trim_start_matches("http://").to_owned())
    );
    for gone in [
        "cookie",
        "dpop",
        "proxy-authorization",
        "proxy-foo",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-hop",
        "te",
    ] {
        let names: Vec<_> = echo["headers"].as_object().unwrap().keys().collect();
        assert!(
            echo["headers"].get(gone).is_none(),
            "{gone} reached the upstream: {names:?}"
        );
    }
    // Anonymous routes get no Authorization at all, whatever the client sends.
    let response = t
        .request(Method::GET, "/open/x", None, true)
        .header("authorization", "Bearer forged")
        .header("cookie", format!("__Host-bff={session}"))
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = response.json().await.unwrap();
    assert!(echo["headers"].get("authorization").is_none());
    assert!(echo["headers"].get("cookie").is_none());
}

#[tokio::test]
async fn upstream_cannot_set_the_bffs_cookies() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = t
        .request(Method::GET, "/api/set-cookie", Some(&session), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookies: Vec<_> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, ["theirs=1; Path=/"]);
    // Nor make the browser wipe every cookie of the origin.
    assert!(
        response.headers().get("clear-site-data").is_none(),
        "Clear-Site-Data reached the browser"
    );
    assert_eq!(response.headers()["x-theirs"], "kept");
    // The session still works.
    let (status, _) = t.echo("/api/x", Some(&session)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn upstream_redirects_are_passed_on_not_followed() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = t
        .request(Method::GET, "/api/redirect", Some(&session), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/v1/elsewhere");
}

#[tokio::test]
async fn token_requirements_for_anonymous_and_signed_in_callers() {
    let t = proxy_support::start().await;
    let hits = t.upstream.state.hits();

    // user: anonymous → 401, upstream untouched; a stale cookie too.
    let (status, _) = t.echo("/api/x", None).await;
    assert_eq!(status, 401);
    let stale = oidc_bff_tokens::SessionId::generate();
    let (status, _) = t.echo("/api/x", Some(stale.as_str())).await;
    assert_eq!(status, 401);
    assert_eq!(t.upstream.state.hits(), hits);

    // none and user-or-none: anonymous → forwarded without a token.
    for path in ["/open/x", "/maybe/x"] {
        let (status, echo) = t.echo(path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(echo["headers"].get("authorization").is_none(), "{path}");
    }
    assert_eq!(t.upstream.state.hits(), hits + 2);

    // user-or-client and client: anonymous → the BFF's client token.
    let (status, echo) = t.echo("/either/x", None).await;
    assert_eq!(status, 200);
    let bearer = echoed(&echo, "authorization").expect("a client token");
    let claims = jwt_claims(bearer.strip_prefix("Bearer ").unwrap());
    assert_eq!(claims["sub"], "bff");
    assert_eq!(claims["scope"], "catalog.read");
    let (status, echo) = t.echo("/m2m/x", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        echoed(&echo, "authorization").unwrap(),
        bearer,
        "cached client token"
    );
    assert_eq!(t.idp.counters().client_credentials_grants, 1);

    // Signed in: user-or-none and user-or-client send the user's token,
    // client still sends the client token.
    let session = t.sign_in().await;
    let user = format!("Bearer {}", t.stored_token(&session).await);
    for path in ["/maybe/x", "/either/x", "/api/x"] {
        let (status, echo) = t.echo(path, Some(&session)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(echoed(&echo, "authorization").unwrap(), user, "{path}");
    }
    let (_, echo) = t.echo("/m2m/x", Some(&session)).await;
    assert_eq!(echoed(&echo, "authorization").unwrap(), bearer);
    let (_, echo) = t.echo("/open/x", Some(&session)).await;
    assert!(echo["headers"].get("authorization").is_none());
}

#[tokio::test]
async fn a_signed_in_user_whose_token_fails_gets_401_not_the_client_token() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    t.idp.faults().set_refresh_error(Some("invalid_grant"));
    t.clock.advance(Duration::from_secs(400));
    let hits = t.upstream.state.hits();
    let (status, _) = t.echo("/either/x", Some(&session)).await;
    assert_eq!(status, 401);
    assert_eq!(t.upstream.state.hits(), hits);
    // The session has ended: the same cookie is now anonymous.
    let (status, echo) = t.echo("/maybe/x", Some(&session)).await;
    assert_eq!(status, 200);
    assert!(echo["headers"].get("authorization").is_none());
    assert_eq!(t.idp.counters().client_credentials_grants, 0);
}

#[tokio::test]
async fn unavailable_provider_with_an_expired_token_is_503() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    t.idp.faults().set_token_status(Some(503));
    t.clock.advance(Duration::from_secs(400));
    let hits = t.upstream.state.hits();
    let response = t
        .request(Method::GET, "/api/x", Some(&session), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(t.upstream.state.hits(), hits);
    // The session is kept.
    t.idp.faults().clear();
    let (status, _) = t.echo("/api/x", Some(&session)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn paths_that_could_escape_the_prefix_are_refused() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let hits = t.upstream.state.hits();
    let hostile = [
        "/api/..",
        "/api/../bff/user",
        "/api/./x",
        "/api/x/../../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E/admin",
        "/api/.%2e/admin",
        "/api/%252e%252e/admin",
        "/api/..;/admin",
        "/api/..%2fadmin",
        "/api/a%2fb",
        "/api/a%2Fb",
        "/api/%252f",
        "/api/a%5cb",
        "/api/%5C..%5Cadmin",
        "/api//admin",
        "/api/a//b",
        "/api/%zz",
        "/api/%c0%ae%c0%ae/admin",
        "/api/%00",
        "/api/a%0d%0aX-Injected:%201",
        "http://evil.example/api/x",
        "http://127.0.0.1/api/x",
    ];
    let mut let_through = Vec::new();
    for target in hostile {
        let status = t.raw_status(target, Some(&session)).await;
        if status != 400 {
            let_through.push((target, status));
        }
    }
    assert!(
        let_through.is_empty(),
        "not refused with 400: {let_through:?}"
    );
    assert_eq!(
        t.upstream.state.hits(),
        hits,
        "no hostile request reached the upstream"
    );
    assert_eq!(t.idp.counters().refresh_attempts, 0);

    // The same tools used honestly still work.
    for (target, path) in [
        ("/api/a%20b", "/v1/a%20b"),
        ("/api/100%25", "/v1/100%25"),
        ("/api/x.json", "/v1/x.json"),
        ("/api/...", "/v1/..."),
    ] {
        assert_eq!(t.raw_status(target, Some(&session)).await, 200, "{target}");
        assert_eq!(t.upstream.state.last().target, path);
    }
}

#[tokio::test]
async fn a_20_mib_request_body_streams_to_the_upstream() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = within(
        "upload",
        t.request(Method::POST, "/api/upload", Some(&session), true)
            .body(reqwest::Body::wrap_stream(generated(BIG)))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let got: serde_json::Value = response.json().await.unwrap();
    let (len, sha256) = generated_digest(BIG);
    assert_eq!(got["len"], len);
    assert_eq!(got["sha256"], sha256);
    let seen = t.upstream.state.last();
    assert_eq!(seen.target, "/v1/upload");
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
}

#[tokio::test]
async fn a_sized_request_body_keeps_its_length() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let body = vec![7u8; 3 * 1024 * 1024];
    let response = t
        .request(Method::PUT, "/api/put", Some(&session), true)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["len"], body.len());
    assert_eq!(echo["method"], "PUT");
    assert_eq!(
        echoed(&echo, "content-length"),
        Some(body.len().to_string())
    );
    assert_eq!(echo["sha256"], hex(&Sha256::digest(&body)));
}

#[tokio::test]
async fn a_20_mib_response_body_streams_to_the_browser() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = t
        .request(
            Method::GET,
            &format!("/api/download?bytes={BIG}"),
            Some(&session),
            true,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut hash = Sha256::new();
    let mut n = 0;
    while let Some(chunk) = within("download", stream.next()).await {
        let chunk = chunk.unwrap();
        n += chunk.len();
        hash.update(&chunk);
    }
    assert_eq!((n, hex(&hash.finalize())), generated_digest(BIG));
}

#[tokio::test]
async fn response_bytes_arrive_before_the_upstream_has_finished() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = t
        .request(Method::GET, "/api/gated-download", Some(&session), true)
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    // The upstream holds back its second chunk until we have the first: a
    // proxy that buffered the body would never deliver it.
    let mut n = 0;
    while n < proxy_support::CHUNK {
        n += within("first chunk", stream.next())
            .await
            .unwrap()
            .unwrap()
            .len();
    }
    t.upstream.state.release_download.notify_one();
    while let Some(chunk) = within("rest", stream.next()).await {
        n += chunk.unwrap().len();
    }
    assert_eq!(n, 2 * proxy_support::CHUNK);
}

#[tokio::test]
async fn request_bytes_arrive_before_the_browser_has_finished() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = t
        .request(Method::POST, "/api/gated-upload", Some(&session), true)
        .body(body)
        .send();
    let sending = tokio::spawn(request);
    tx.send(Ok(proxy_support::chunk(0))).await.unwrap();
    // The rest is only sent once the upstream has the first bytes: a proxy
    // that buffered the request would never deliver them.
    within(
        "first bytes upstream",
        t.upstream.state.upload_started.notified(),
    )
    .await;
    tx.send(Ok(proxy_support::chunk(1))).await.unwrap();
    drop(tx);
    let response = within("response", sending).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        (2 * proxy_support::CHUNK).to_string()
    );
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_slow_upstream_is_504_and_a_dead_one_502() {
    let t = proxy_support::start().await;
    let response = t
        .request(Method::GET, "/slow/slow", None, true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "gateway_timeout");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no upstream address in {body}"
    );

    let response = t
        .request(Method::GET, "/dead/x", None, true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no upstream address in {body}"
    );
}

/// A request body of `chunks` KiB, one KiB every `gap`.
fn trickle(
    chunks: usize,
    gap: Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(gap).await;
        Some((Ok(proxy_support::chunk(i).slice(..1024)), i + 1))
    })
}

#[tokio::test]
async fn an_upload_longer_than_the_timeout_succeeds_while_it_keeps_moving() {
    let t = proxy_support::start().await;
    // `/trickle` allows 1 s of silence; the upload takes 10 × 200 ms = 2 s.
    let started = std::time::Instant::now();
    let response = within(
        "trickled upload",
        t.request(Method::POST, "/trickle/upload", None, true)
            .body(reqwest::Body::wrap_stream(trickle(
                10,
                Duration::from_millis(200),
            )))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200, "the upload was cut off");
    assert!(started.elapsed() >= Duration::from_secs(2));
    let got: serde_json::Value = response.json().await.unwrap();
    assert_eq!(got["len"], 10 * 1024);

    // An upstream that takes the whole upload and then falls silent still
    // gets 504, the timeout counted from the end of the body.
    let started = std::time::Instant::now();
    let response = within(
        "trickled upload to a silent upstream",
        t.request(Method::POST, "/trickle/slow", None, true)
            .body(reqwest::Body::wrap_stream(trickle(
                10,
                Duration::from_millis(200),
            )))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 504);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(30),
        "504 after {waited:?}: the upload (2 s) plus the timeout (1 s)"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "gateway_timeout");

    // Without a body the upstream gets the timeout from the start.
    let started = std::time::Instant::now();
    let response = t
        .request(Method::GET, "/trickle/slow", None, true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_response_body_that_stalls_is_aborted() {
    let t = proxy_support::start().await;
    // `/slow` allows 300 ms of silence; the upstream sends one chunk and then
    // waits for a release that never comes.
    let response = t
        .request(Method::GET, "/slow/gated-download", None, true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut n = 0;
    let failed = within("stalled body", async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => n += chunk.len(),
                Err(_) => return true,
            }
        }
        false
    })
    .await;
    assert!(failed, "a stalled body must be aborted, not ended cleanly");
    assert!(n <= proxy_support::CHUNK, "{n} bytes");
}

fn ws_request(
    t: &ProxyBff,
    path: &str,
    headers: &[(&'static str, String)],
) -> tungstenite::handshake::client::Request {
    let mut request = format!("ws://{}{path}", t.addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(*k, v.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn websockets_are_proxied_with_the_users_token() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let cookie = ("cookie", format!("__Host-bff={session}"));
    let request = ws_request(
        &t,
        "/ws/echo?room=1",
        &[cookie.clone(), ("x-csrf", "1".into())],
    );
    let (mut ws, response) = within("handshake", tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake");
    assert_eq!(response.status(), 101);
    for text in ["hello", "world"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap(), text);
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &[1u8, 2, 3]);
    ws.close(None).await.unwrap();

    let (target, headers) = t.ws.handshakes.lock().unwrap().last().cloned().unwrap();
    assert_eq!(target, "/echo?room=1");
    let token = t.stored_token(&session).await;
    assert_eq!(headers["authorization"], format!("Bearer {token}"));
    assert!(headers.get("cookie").is_none());

    // Browsers cannot add headers to a handshake: the BFF's own Origin will do.
    let request = ws_request(&t, "/ws/echo", &[cookie.clone(), ("origin", t.url.clone())]);
    let (mut ws, _) = within("handshake", tokio_tungstenite::connect_async(request))
        .await
        .expect("same-origin handshake");
    ws.send(Message::text("via origin")).await.unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap(), "via origin");
}

#[tokio::test]
async fn websocket_handshakes_are_refused_when_not_allowed() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let cookie = ("cookie", format!("__Host-bff={session}"));
    let before = t.ws.handshakes.lock().unwrap().len();
    let status = |r: Result<_, tungstenite::Error>| match r {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the handshake must fail"),
    };

    // Another site's page: no header, foreign Origin.
    let request = ws_request(
        &t,
        "/ws/echo",
        &[cookie.clone(), ("origin", "http://evil.example".into())],
    );
    assert_eq!(
        status(tokio_tungstenite::connect_async(request).await.map(|_| ())),
        401
    );
    // Anonymous.
    let request = ws_request(&t, "/ws/echo", &[("x-csrf", "1".into())]);
    assert_eq!(
        status(tokio_tungstenite::connect_async(request).await.map(|_| ())),
        401
    );
    assert_eq!(
        t.ws.handshakes.lock().unwrap().len(),
        before,
        "the upstream saw no handshake"
    );

    // A route without WebSockets forwards a plain GET, which is no handshake.
    let request = ws_request(&t, "/ws-off/echo", &[cookie, ("x-csrf", "1".into())]);
    let code = status(tokio_tungstenite::connect_async(request).await.map(|_| ()));
    assert_ne!(code, 101);
    assert_eq!(t.ws.handshakes.lock().unwrap().len(), before);
}

/// Issue 15, defect 7: header names with `_` that upstreams (CGI, WSGI,
/// Rack) read like their `-` twins never reach the upstream.
#[tokio::test]
async fn underscore_spellings_of_forwarding_headers_are_dropped() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let response = t
        .request(Method::GET, "/api/echo", Some(&session), true)
        .header("X_Forwarded_For", "6.6.6.6")
        .header("x_forwarded_host", "evil.example")
        .header("X_Real_IP", "6.6.6.6")
        .header("Proxy_Authorization", "Basic Zm9vOmJhcg==")
        .header("X_Custom_Thing", "1")
        .header("x-app", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    let names: Vec<String> = echo["headers"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(
        !names.iter().any(|n| n.contains('_')),
        "a header with '_' reached the upstream: {names:?}"
    );
    assert_eq!(
        echoed(&echo, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(echoed(&echo, "x-app").as_deref(), Some("kept"));
}

/// Issue 15, defect 6: the proxy clears the session cookie only when the
/// session really ended; `invalid_client` and `invalid_target` are
/// configuration errors (5xx), `invalid_scope` a 401 that keeps the session.
#[tokio::test]
async fn errors_that_keep_the_session_do_not_clear_its_cookie() {
    for (code, status) in [
        ("invalid_scope", 401),
        ("invalid_client", 500),
        ("invalid_target", 500),
    ] {
        let t = proxy_support::start().await;
        let session = t.sign_in().await;
        t.idp.faults().set_refresh_error(Some(code));
        t.clock.advance(Duration::from_secs(400)); // the token has expired
        let response = t
            .request(Method::GET, "/api/x", Some(&session), true)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{code}");
        let set_cookies: Vec<_> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert!(
            !set_cookies.iter().any(|c| c.starts_with("__Host-bff=")),
            "{code}: the session cookie was cleared: {set_cookies:?}"
        );
        let id = oidc_bff_tokens::SessionId::parse(&session).unwrap();
        assert!(
            t.bff.engine().load_session(&id).await.unwrap().is_some(),
            "{code}: the server session lives on"
        );
        // Once the provider is fine again, the same cookie works.
        t.idp.faults().set_refresh_error(None);
        let (status, _) = t.echo("/api/x", Some(&session)).await;
        assert_eq!(status, 200, "{code}");
    }
}
