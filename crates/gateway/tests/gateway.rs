//! The `oidc-bff` binary as a process, against the dev IdP and a recording
//! upstream: sign-in, proxying with tokens, refresh, CSRF, path escapes,
//! streaming, health checks and graceful shutdown.

mod common;

use std::time::Duration;

use common::{Browser, Gateway, Upstream, config, idp, introspect, raw_get};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_proxy_with_the_user_token() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, 60)).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    assert_eq!(idp.counters().code_grants, 1);

    let (status, user) = browser.get_json(&format!("{}/bff/user", gateway.url)).await;
    assert_eq!(status, 200);
    assert_eq!(user["sub"], "alice");

    let response = browser
        .api(
            Method::POST,
            &format!("{}/api/things/1?x=1&y=%20z", gateway.url),
        )
        .header("cookie", "extra=1")
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["target"], "/base/things/1?x=1&y=%20z");
    assert_eq!(body["bytes"], 17);

    assert_eq!(upstream.hits(), 1);
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    // No cookie of the browser reaches the upstream, nor the CSRF header's session.
    assert!(
        seen.headers.get("cookie").is_none(),
        "cookies leaked upstream: {:?}",
        seen.headers.get("cookie")
    );
    let token = seen.bearer().expect("a bearer token upstream");
    let claims = introspect(&idp, &token).await;
    assert_eq!(claims["active"], true, "{claims}");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "bff");

    // Neither the token nor the session id shows up in the gateway's logs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gateway.logs();
    assert!(
        logs.contains("/api/things/1"),
        "request logging is on:\n{logs}"
    );
    assert!(!logs.contains(&token), "the access token was logged");
    assert!(
        !logs.contains(browser.session().unwrap()),
        "the session id was logged"
    );
    assert!(
        !logs.contains(common::CLIENT_SECRET),
        "the client secret was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_csrf_header_is_401_and_the_upstream_is_not_called() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, 60)).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;

    for method in [Method::GET, Method::POST, Method::DELETE] {
        let response = browser
            .http
            .request(method.clone(), format!("{}/api/data", gateway.url))
            .header("cookie", browser.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method}");
    }
    let wrong = browser
        .http
        .get(format!("{}/api/data", gateway.url))
        .header("cookie", browser.cookie_header())
        .header("x-csrf", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Anonymous callers get 401 too, even with the header.
    let anonymous = Browser::new();
    let (status, _) = anonymous
        .get_json(&format!("{}/api/data", gateway.url))
        .await;
    assert_eq!(status, 401);

    assert_eq!(upstream.hits(), 0, "the upstream must not be called");

    // With the header it goes through.
    let (status, _) = browser.get_json(&format!("{}/api/data", gateway.url)).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refreshes_an_expiring_token() {
    // Tokens live 6 s and are renewed 2 s before expiry: fresh right after
    // sign-in, due for renewal 4 s later, expired after 6 s. Once expired,
    // the call waits for the renewal (merely due, it would get the old token
    // at once and the renewal would run behind it).
    let idp = idp(Duration::from_secs(6)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, 2)).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;

    let (status, _) = browser.get_json(&format!("{}/api/one", gateway.url)).await;
    assert_eq!(status, 200);
    let first = upstream.last().bearer().unwrap();
    assert_eq!(idp.counters().refresh_grants, 0);

    tokio::time::sleep(Duration::from_millis(6200)).await;

    let (status, _) = browser.get_json(&format!("{}/api/two", gateway.url)).await;
    assert_eq!(status, 200);
    let second = upstream.last().bearer().unwrap();
    assert_eq!(idp.counters().refresh_grants, 1);
    assert_ne!(first, second, "the upstream gets the renewed token");
    assert_eq!(introspect(&idp, &second).await["active"], true);

    // The next call reuses the renewed token: no further refresh.
    let (status, _) = browser
        .get_json(&format!("{}/api/three", gateway.url))
        .await;
    assert_eq!(status, 200);
    assert_eq!(upstream.last().bearer().unwrap(), second);
    assert_eq!(idp.counters().refresh_grants, 1);

    let (_, user) = browser.get_json(&format!("{}/bff/user", gateway.url)).await;
    assert_eq!(user["refreshCount"], 1);
    assert!(user["tokensRefreshedAt"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_token_apis_use_client_credentials() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, 60)).await;

    // No sign-in needed for a client token; the CSRF header still is.
    let anonymous = Browser::new();
    let (status, body) = anonymous
        .get_json(&format!("{}/svc/report", gateway.url))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["target"], "/svc-base/report");
    let token = upstream.last().bearer().expect("a client token");
    let claims = introspect(&idp, &token).await;
    assert_eq!(claims["active"], true);
    assert_eq!(claims["sub"], "bff", "a client credentials token: {claims}");
    assert_eq!(idp.counters().client_credentials_grants, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_escapes_are_refused() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, 60)).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    let cookie = browser.cookie_header();

    for target in [
        "/api/../secret",
        "/api/..",
        "/api/./x/../../secret",
        "/api/%2e%2e/secret",
        "/api/%2E%2e/secret",
        "/api/.%2e/secret",
        "/api/%252e%252e/secret",
        "/api/x/..%2f..%2fsecret",
        "/api/x%2f..%2f..%2fsecret",
        "/api/..%5csecret",
        "/api/..\\secret",
        "/api//secret",
        "/api/%00/secret",
        "/api%2f..%2fsecret",
        "/apix/secret",
        "http://127.0.0.1:1/api/x",
    ] {
        let status = raw_get(gateway.port, target, &cookie).await;
        assert!((400..500).contains(&status), "{target:?} answered {status}");
    }
    assert_eq!(
        upstream.hits(),
        0,
        "escapes reached the upstream: {:?}",
        upstream
            .seen()
            .iter()
            .map(|s| s.target.clone())
            .collect::<Vec<_>>()
    );

    // A plain path still works over the same raw client.
    assert_eq!(raw_get(gateway.port, "/api/ok/..x/y", &cookie).await, 200);
    assert_eq!(upstream.last().target, "/base/ok/..x/y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_without_buffering() {
    const MIB: usize = 1024 * 1024;
    const SIZE_MIB: usize = 50;
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, 60)).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    // Warm up: connection pools, the session, the token.
    let (status, _) = browser.get_json(&format!("{}/api/warm", gateway.url)).await;
    assert_eq!(status, 200);
    let before = gateway.memory_kib("VmHWM");

    // Upload 50 MiB.
    let chunk = bytes::Bytes::from(vec![b'u'; 256 * 1024]);
    let chunks = futures_util::stream::iter(
        (0..SIZE_MIB * 4).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = browser
        .api(Method::POST, &format!("{}/api/upload", gateway.url))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["bytes"], SIZE_MIB * MIB);
    assert_eq!(upstream.last().body_len, SIZE_MIB * MIB);

    // Download 50 MiB.
    let response = browser
        .api(
            Method::GET,
            &format!("{}/api/download/{SIZE_MIB}", gateway.url),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut stream = response.bytes_stream();
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len();
    }
    assert_eq!(received, SIZE_MIB * MIB);

    let after = gateway.memory_kib("VmHWM");
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("gateway VmHWM: before {before} KiB, after {after} KiB, growth {growth_mib} MiB");
    assert!(
        growth_mib < 25,
        "peak memory grew by {growth_mib} MiB moving {SIZE_MIB} MiB each way (before {before} KiB, after {after} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(&config(&idp, &upstream, 60)).await;
    let http = reqwest::Client::new();

    let health = http
        .get(format!("{}/healthz", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("{}/readyz", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["discovery"], true);
    assert_eq!(body["store"], true);

    // A gateway whose provider is down is alive but not ready.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let down = Gateway::start(&config(&idp, &upstream, 60).replace(&idp.issuer(), &dead)).await;
    let health = http
        .get(format!("{}/healthz", down.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("{}/readyz", down.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["discovery"], false);
    assert_eq!(body["store"], true);

    // Signing in there fails cleanly instead of hanging or crashing.
    let response = Browser::new()
        .http
        .get(format!("{}/bff/login", down.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_requests_in_flight_complete() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let mut gateway = Gateway::start(&config(&idp, &upstream, 60)).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;

    let started = upstream.slow_started.notified();
    let request = browser
        .api(Method::GET, &format!("{}/api/slow", gateway.url))
        .send();
    let in_flight = tokio::spawn(async move {
        let response = request.await.expect("the request in flight completes");
        (response.status(), response.text().await.unwrap_or_default())
    });
    started.await;
    gateway.sigterm();

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slow done");
    let exit = gateway.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.success(), "exit status {exit}:\n{}", gateway.logs());
    assert!(gateway.logs().contains("shutting down"));

    // New connections are refused once it is gone.
    assert!(
        reqwest::Client::new()
            .get(format!("{}/healthz", gateway.url))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_with_spa_fallback_and_json_logs() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<h1>the app</h1>").unwrap();
    std::fs::write(site.path().join("app.js"), "console.log(1)").unwrap();
    let text = common::config_with(
        &idp,
        &upstream,
        60,
        &format!("[static]\ndir = {:?}\n", site.path().display().to_string()),
    );
    let gateway = Gateway::start_with_env(&text, &[("OIDC_BFF__LOG__FORMAT", "json")]).await;
    let http = reqwest::Client::new();

    let get = |path: &str| http.get(format!("{}{path}", gateway.url)).send();
    let index = get("/").await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.text().await.unwrap(), "<h1>the app</h1>");
    assert_eq!(
        get("/app.js").await.unwrap().text().await.unwrap(),
        "console.log(1)"
    );
    // Client-side routes get index.html; the gateway's own routes still win.
    let deep = get("/orders/42?code=leak-me").await.unwrap();
    assert_eq!(deep.status(), 200);
    assert_eq!(deep.text().await.unwrap(), "<h1>the app</h1>");
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/bff/user").await.unwrap().status(), 401);
    assert_eq!(upstream.hits(), 0);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = gateway.logs();
    let request_lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .filter(|v: &serde_json::Value| v["fields"]["path"] == "/orders/42")
        .collect();
    assert_eq!(
        request_lines.len(),
        1,
        "one access line per request: {logs}"
    );
    assert_eq!(request_lines[0]["fields"]["status"], 200);
    assert_eq!(request_lines[0]["fields"]["method"], "GET");
    assert_eq!(request_lines[0]["level"], "INFO");
    assert!(request_lines[0]["fields"]["latency_ms"].is_f64());
    // Queries (codes, states) never reach the log.
    assert!(!logs.contains("leak-me"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_anti_forgery_header_replaces_the_default() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let text = common::config_with(
        &idp,
        &upstream,
        60,
        "[csrf]\nheader = \"X-Requested-By\"\nvalue = \"my-app\"\n",
    );
    let gateway = Gateway::start(&text).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;

    let call = |path: &str, header: Option<(&str, &str)>| {
        let mut request = browser
            .http
            .get(format!("{}{path}", gateway.url))
            .header("cookie", browser.cookie_header());
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.send()
    };
    for path in ["/api/data", "/bff/user"] {
        let hits = upstream.hits();
        // The default header no longer counts, nor a wrong value, nor nothing.
        for header in [
            Some(("x-csrf", "1")),
            Some(("x-requested-by", "1")),
            Some(("x-requested-by", "my-app2")),
            None,
        ] {
            let response = call(path, header).await.unwrap();
            assert_eq!(response.status(), 401, "{path} with {header:?}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], "csrf_header_missing", "{path}");
        }
        assert_eq!(upstream.hits(), hits, "the upstream must not be called");
        let response = call(path, Some(("X-Requested-By", "my-app")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_session_store_is_unreachable() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    // Redis on a port nothing listens on.
    let store = format!(
        "[session]\nstore = \"redis://127.0.0.1:{}\"\n\
         encryption_keys = [\"k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"]\n\
         operation_timeout = 1\n",
        common::free_port()
    );
    let text = config(&idp, &upstream, 60).replace("[session]\nstore = \"memory\"\n", &store);
    assert!(text.contains("redis://"), "{text}");
    let gateway = Gateway::start(&text).await;
    let http = reqwest::Client::new();

    // Alive, but not ready.
    let health = http
        .get(format!("{}/healthz", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("{}/readyz", gateway.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["store"], false, "{body}");
    assert_eq!(body["status"], "not ready", "{body}");

    // A caller with a session cookie gets 503, never 401 or the upstream.
    let session = oidc_bff::tokens::SessionId::generate();
    let response = http
        .get(format!("{}/api/data", gateway.url))
        .header("cookie", format!("__Host-bff={}", session.as_str()))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_threaded_gateway_signs_in_proxies_and_shares_one_refresh() {
    // `server.worker_threads = 1`: a current-thread runtime. Everything that
    // spawns (refresh flights, lease renewal, streaming) must work on it.
    let idp = idp(Duration::from_secs(3)).await;
    let upstream = Upstream::start().await;
    let gateway = Gateway::start_with_env(
        &config(&idp, &upstream, 1),
        &[("OIDC_BFF__SERVER__WORKER_THREADS", "1")],
    )
    .await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    let (status, _) = browser.get_json(&format!("{}/api/one", gateway.url)).await;
    assert_eq!(status, 200);
    assert_eq!(idp.counters().refresh_grants, 0);

    // Past expiry: 50 concurrent requests wait for one shared refresh.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let url = format!("{}/api/burst", gateway.url);
    let answers = futures_util::future::join_all((0..50).map(|_| browser.get_json(&url))).await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(idp.counters().refresh_grants, 1);
    assert_eq!(upstream.hits(), 51);
}
