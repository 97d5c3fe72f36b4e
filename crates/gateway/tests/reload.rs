//! Configuration reload: the real gateway binary under load while its file
//! is rewritten and `SIGHUP` sent (and, with `watch_config`, without the
//! signal). No request fails, the session survives, new routes answer; a bad
//! file is refused with its key named and the old routes keep answering; a
//! setting that needs a restart is refused.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Browser, Gateway, Upstream};
use http::StatusCode;

/// Sends SIGHUP to the gateway.
fn sighup(gateway: &Gateway) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(gateway.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Replaces the gateway's file (write, then rename: never half a file).
fn rewrite(gateway: &Gateway, text: &str) {
    let path = gateway.config_path();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text.replace("{port}", &gateway.port.to_string())).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

/// Waits until the log holds `needle` more than `before` times.
async fn wait_log(gateway: &Gateway, needle: &str, before: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = gateway.logs();
        if logs.matches(needle).count() > before {
            return logs;
        }
        assert!(
            Instant::now() < deadline,
            "no new {needle:?} in the log:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rewrites the file, sends SIGHUP and waits for the outcome `needle`.
async fn reload(gateway: &Gateway, text: &str, needle: &str) -> String {
    let before = gateway.logs().matches(needle).count();
    rewrite(gateway, text);
    sighup(gateway);
    wait_log(gateway, needle, before).await
}

const RELOADED: &str = "configuration reloaded";
const REFUSED: &str = "configuration not reloaded";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_drops_no_request_and_no_session() {
    let idp = common::idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let base = common::config(&idp, &upstream, 30);
    let gateway = Gateway::start(&base).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    let browser = Arc::new(browser);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for task in 0..8 {
        let (browser, stop, ok, failed) =
            (browser.clone(), stop.clone(), ok.clone(), failed.clone());
        let url = format!("{}/api/load/{task}", gateway.url);
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match browser.api(reqwest::Method::GET, &url).send().await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            errors
        }));
    }
    // Load runs before, between and after the reloads.
    while ok.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let extra = format!(
        "{base}\n[[api]]\npath = \"/extra\"\nupstream = \"{}\"\ntoken = \"user\"\n",
        upstream.url("/extra-base")
    );
    // A route rule changes too: `/api` takes GET only.
    let rule = base.replacen("path = \"/api\"", "path = \"/api\"\nmethods = [\"GET\"]", 1);
    let with_both = format!(
        "{rule}\n[[api]]\npath = \"/extra\"\nupstream = \"{}\"\ntoken = \"user\"\n",
        upstream.url("/extra-base")
    );
    for text in [&extra, &base, &rule, &with_both] {
        let logs = reload(&gateway, text, RELOADED).await;
        assert!(!logs.contains(REFUSED), "{logs}");
        let before = ok.load(Ordering::Relaxed);
        while ok.load(Ordering::Relaxed) < before + 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.expect("load task"));
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);

    // The session survived; the new route answers, the new rule holds.
    let (status, _) = browser.get_json(&format!("{}/bff/user", gateway.url)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = browser.get_json(&format!("{}/extra/x", gateway.url)).await;
    assert_eq!(status, StatusCode::OK, "{}", gateway.logs());
    assert_eq!(upstream.last().target, "/extra-base/x");
    let post = browser
        .api(reqwest::Method::POST, &format!("{}/api/x", gateway.url))
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    let logs = gateway.logs();
    assert!(
        logs.contains("kept: default"),
        "the engine is kept:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_refused_and_the_old_routes_answer() {
    let idp = common::idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    let base = common::config_with(&idp, &upstream, 30, "[server]\nwatch_config = true\n");
    let gateway = Gateway::start(&base).await;
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    let api = format!("{}/api/x", gateway.url);

    let unknown = base.replace(
        "watch_config = true",
        "watch_config = true\ncolour = \"red\"",
    );
    // Each wait is for the refusal of that very file: with `watch_config`
    // a file may be refused twice (its change, and the signal).
    let logs = reload(&gateway, &unknown, "`server.colour`: unknown key").await;
    assert!(logs.contains(REFUSED), "{logs}");
    assert_eq!(browser.get_json(&api).await.0, StatusCode::OK);

    let bad_url = base.replacen(&upstream.url("/base"), "not a url", 1);
    let logs = reload(&gateway, &bad_url, "`api.0.upstream`").await;
    assert!(!logs.contains(RELOADED), "{logs}");
    assert_eq!(browser.get_json(&api).await.0, StatusCode::OK);

    let other_port = common::free_port();
    let listen = base.replacen(
        "listen = \"127.0.0.1:{port}\"",
        &format!("listen = \"127.0.0.1:{other_port}\""),
        1,
    );
    let logs = reload(
        &gateway,
        &listen,
        "`listen` cannot change while the gateway runs",
    )
    .await;
    assert!(!logs.contains(RELOADED), "{logs}");
    assert_eq!(browser.get_json(&api).await.0, StatusCode::OK);
    assert_eq!(
        browser
            .get_json(&format!("{}/bff/user", gateway.url))
            .await
            .0,
        StatusCode::OK
    );

    // `watch_config`: a changed file is picked up without a signal.
    let before = gateway.logs().matches(RELOADED).count();
    let extra = format!(
        "{base}\n[[api]]\npath = \"/extra\"\nupstream = \"{}\"\ntoken = \"user\"\n",
        upstream.url("/extra-base")
    );
    rewrite(&gateway, &extra);
    let logs = wait_log(&gateway, RELOADED, before).await;
    assert!(logs.contains("the file changed"), "{logs}");
    let (status, _) = browser.get_json(&format!("{}/extra/x", gateway.url)).await;
    assert_eq!(status, StatusCode::OK);
}

/// The library call: `Gateway::reload` / `ReloadHandle::reload`.
#[tokio::test]
async fn the_reload_handle_reports_what_changed_and_refuses_restart_only_keys() {
    use oidc_bff_gateway::{Gateway as Lib, GatewayConfig, GatewayError};
    let text = |extra: &str| {
        format!(
            "listen = \"127.0.0.1:8080\"\npublic_url = \"http://127.0.0.1:8080\"\n{extra}\n\
             [oidc]\nauthority = \"http://127.0.0.1:9\"\nclient_id = \"bff\"\nclient_secret = \"s\"\n\
             [[api]]\npath = \"/api\"\nupstream = \"http://127.0.0.1:9\"\n"
        )
    };
    let load = |t: String| GatewayConfig::from_toml_str(&t, Vec::<(String, String)>::new());
    let gateway = Lib::new(load(text("")).expect("valid")).expect("gateway");
    let handle = gateway.reload_handle();

    let more = load(text("") + "[[api]]\npath = \"/more\"\nupstream = \"http://127.0.0.1:9\"\n");
    let report = gateway
        .reload(more.expect("valid"))
        .await
        .expect("reloaded");
    assert_eq!(report.changed, ["api"]);
    assert_eq!(report.kept, ["default"]);
    assert!(report.rebuilt.is_empty());
    assert_eq!(handle.config().await.api.len(), 2);

    let other_client = load(text("").replace("client_id = \"bff\"", "client_id = \"other\""));
    let report = handle
        .reload(other_client.expect("valid"))
        .await
        .expect("reloaded");
    assert_eq!(report.rebuilt, ["default"]);

    let moved = load(text("").replace("127.0.0.1:8080\"\npublic", "127.0.0.1:8081\"\npublic"));
    match handle.reload(moved.expect("valid")).await {
        Err(GatewayError::Reload(why)) => assert!(why.contains("`listen`"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(handle.config().await.listen.port(), 8080);
    assert_eq!(handle.config().await.oidc.client_id, "other");
}
