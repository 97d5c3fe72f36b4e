//! Prometheus metrics on the operations listener (`[metrics] listen`): the
//! gateway binary as a process against the dev IdP and a recording
//! upstream; `/metrics` is scraped before and after a sign-in, proxied
//! calls, a failed and a successful refresh, and the counters' increases
//! are checked. Each gateway is its own process, so each has its own
//! recorder: tests cannot disturb each other's numbers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Browser, Gateway, Upstream, check, config_with, free_port, idp};

/// A parsed scrape: series (name with its labels, as printed) → value.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn take(port: u16) -> Scrape {
        let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .expect("scrape");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Scrape::parse(&response.text().await.expect("scrape body"))
    }

    /// Parses the text format: `name{labels} value` lines; comments skipped.
    fn parse(text: &str) -> Scrape {
        let mut series = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').expect("a `series value` line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
            series.insert(normalise(key), value);
        }
        Scrape(series)
    }

    /// The value of `name` with exactly `labels` (0 when absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .get(&series_key(name, labels))
            .copied()
            .unwrap_or_default()
    }

    /// How much `name{labels}` grew since `before`.
    fn grew(&self, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels) - before.get(name, labels)
    }
}

/// `name{b="2",a="1"}` → `name{a="1",b="2"}`: labels in a stable order.
fn normalise(key: &str) -> String {
    let Some((name, rest)) = key.split_once('{') else {
        return key.to_owned();
    };
    let inner = rest.trim_end_matches('}');
    let mut labels: Vec<(&str, &str)> = inner
        .split("\",")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("label=value");
            (k, v.trim_matches('"'))
        })
        .collect();
    labels.sort_unstable();
    series_key(name, &labels)
}

fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let mut labels = labels.to_vec();
    labels.sort_unstable();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn metrics_section(port: u16) -> String {
    format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_sign_in_proxied_calls_refreshes_and_failures() {
    // Tokens live 3 s and are renewed 1 s before expiry: after 3.2 s a call
    // waits for the renewal (as in gateway.rs).
    let idp = idp(Duration::from_secs(3)).await;
    let upstream = Upstream::start().await;
    let port = free_port();
    let gateway = Gateway::start(&config_with(&idp, &upstream, 1, &metrics_section(port))).await;
    let before = Scrape::take(port).await;

    // A sign-in.
    let mut browser = Browser::new();
    browser.login(&gateway).await;
    // A proxied call with the user's token, and one refused (no CSRF header).
    let (status, _) = browser.get_json(&format!("{}/api/one", gateway.url)).await;
    assert_eq!(status, 200);
    let refused = reqwest::Client::new()
        .get(format!("{}/api/two", gateway.url))
        .header("cookie", browser.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // Client credentials: one token request, then the cache.
    for _ in 0..2 {
        let (status, _) = browser.get_json(&format!("{}/svc/x", gateway.url)).await;
        assert_eq!(status, 200);
    }

    // A failed refresh: the token has expired and the provider answers 503.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    idp.faults().set_token_status(Some(503));
    let (status, _) = browser
        .get_json(&format!("{}/api/three", gateway.url))
        .await;
    assert_eq!(status, 503);
    // A successful one, after the pause that follows a transient failure.
    idp.faults().clear();
    let mut renewed = false;
    for _ in 0..100 {
        let (status, _) = browser.get_json(&format!("{}/api/four", gateway.url)).await;
        if status == 200 {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the refresh never succeeded:\n{}", gateway.logs());
    assert!(idp.counters().refresh_grants >= 1);

    let after = Scrape::take(port).await;
    let grew = |name: &str, labels: &[(&str, &str)]| after.grew(&before, name, labels);

    assert_eq!(grew("oidc_bff_sign_ins_total", &[]), 1.0);
    assert_eq!(after.get("oidc_bff_sessions_active", &[]), 1.0);
    assert_eq!(
        grew(
            "oidc_bff_http_request_duration_seconds_count",
            &[("route", "callback"), ("status_class", "3xx")]
        ),
        1.0
    );
    assert!(
        grew(
            "oidc_bff_http_request_duration_seconds_count",
            &[("route", "api_proxy"), ("status_class", "2xx")]
        ) >= 4.0
    );
    assert_eq!(
        grew(
            "oidc_bff_http_request_duration_seconds_count",
            &[("route", "api_proxy"), ("status_class", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        grew(
            "oidc_bff_http_request_duration_seconds_count",
            &[("route", "api_proxy"), ("status_class", "5xx")]
        ),
        1.0
    );
    assert!(
        grew(
            "oidc_bff_upstream_request_duration_seconds_count",
            &[("api", "/api"), ("status_class", "2xx")]
        ) >= 2.0
    );
    assert_eq!(
        grew(
            "oidc_bff_upstream_request_duration_seconds_count",
            &[("api", "/svc"), ("status_class", "2xx")]
        ),
        2.0
    );
    // The refreshes, by outcome, with their latency and the callers' waits.
    assert_eq!(
        grew(
            "oidc_bff_token_refreshes_total",
            &[("outcome", "transient")]
        ),
        1.0
    );
    assert_eq!(
        grew("oidc_bff_token_refreshes_total", &[("outcome", "renewed")]),
        1.0
    );
    assert_eq!(
        grew(
            "oidc_bff_token_refresh_duration_seconds_count",
            &[("outcome", "renewed")]
        ),
        1.0
    );
    assert!(grew("oidc_bff_token_refresh_wait_seconds_count", &[]) >= 2.0);
    // The provider: the code exchange, the failed and the good refresh,
    // the client credentials grant.
    assert_eq!(
        grew(
            "oidc_bff_provider_requests_total",
            &[("endpoint", "token"), ("outcome", "failed")]
        ),
        1.0
    );
    assert_eq!(
        grew(
            "oidc_bff_provider_requests_total",
            &[("endpoint", "token"), ("outcome", "ok")]
        ),
        3.0
    );
    assert!(
        grew(
            "oidc_bff_provider_request_duration_seconds_count",
            &[("endpoint", "token")]
        ) >= 4.0
    );
    assert_eq!(
        grew(
            "oidc_bff_client_credentials_requests_total",
            &[("outcome", "ok")]
        ),
        1.0
    );
    assert!(grew("oidc_bff_client_credentials_cache_hits_total", &[]) >= 1.0);
    // The store: the session created, read on every request, leases taken.
    assert_eq!(
        grew("oidc_bff_store_operations_total", &[("op", "create")]),
        1.0
    );
    // /api/one, /api/three, /api/four (the refused call never reads it).
    let loads = grew("oidc_bff_store_operations_total", &[("op", "load")]);
    assert!(loads >= 3.0, "{loads} loads");
    assert!(grew("oidc_bff_store_operations_total", &[("op", "try_lease")]) >= 2.0);
    assert!(
        grew(
            "oidc_bff_store_operation_duration_seconds_count",
            &[("op", "update")]
        ) >= 1.0
    );
    assert_eq!(grew("oidc_bff_store_errors_total", &[("op", "load")]), 0.0);

    // A sign-out.
    let (_, user) = browser.get_json(&format!("{}/bff/user", gateway.url)).await;
    let logout = user["logoutUrl"].as_str().expect("logoutUrl").to_owned();
    browser.navigate(&format!("{}{logout}", gateway.url)).await;
    let last = Scrape::take(port).await;
    assert_eq!(last.grew(&after, "oidc_bff_sign_outs_total", &[]), 1.0);
    assert_eq!(last.get("oidc_bff_sessions_active", &[]), 0.0);

    // No label holds a path, a user or a session.
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for leak in [
        "/api/one",
        "/svc/x",
        "alice",
        browser.session().unwrap_or("none"),
    ] {
        assert!(!text.contains(leak), "{leak:?} in the metrics:\n{text}");
    }
    assert!(
        text.contains("# HELP oidc_bff_token_refreshes_total"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE oidc_bff_http_request_duration_seconds histogram"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_never_served_on_the_public_port() {
    let idp = idp(Duration::from_secs(300)).await;
    let upstream = Upstream::start().await;
    // Configured: on its own port only.
    let port = free_port();
    let gateway = Gateway::start(&config_with(&idp, &upstream, 60, &metrics_section(port))).await;
    let public = reqwest::get(format!("{}/metrics", gateway.url))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    assert!(!public.text().await.unwrap().contains("oidc_bff_"));
    let _ = Scrape::take(port).await;
    // Not configured: no listener, and nothing on the public port either.
    let plain = Gateway::start(&config_with(&idp, &upstream, 60, "")).await;
    let public = reqwest::get(format!("{}/metrics", plain.url))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    assert!(!plain.logs().contains("/metrics on"), "{}", plain.logs());
}

#[test]
fn metrics_settings_are_checked_by_key() {
    let good = r#"listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[oidc]
authority = "http://127.0.0.1:9000"
client_id = "bff"
client_secret = "s3cr3t-value"
[session]
store = "memory"
[metrics]
listen = "127.0.0.1:9464"
"#;
    let dir = tempfile::tempdir().unwrap();
    let run = |text: &str| {
        let path = dir.path().join("bff.toml");
        std::fs::write(&path, text).unwrap();
        check(&path, &[])
    };
    let (code, stdout, stderr) = run(good);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("[metrics]\nlisten = \"127.0.0.1:9464\""),
        "{stdout}"
    );

    for (bad, expected) in [
        (
            "listen = \"127.0.0.1:8080\"\n",
            "bff.toml:10: `metrics.listen`: must differ from `listen`",
        ),
        (
            "listen = \"0.0.0.0:8080\"\n",
            "`metrics.listen`: must differ",
        ),
        (
            "listen = \"127.0.0.1:0\"\n",
            "`metrics.listen`: needs a port",
        ),
        ("listen = \"localhost\"\n", "bff.toml:10: `metrics.listen`"),
        (
            "listn = \"127.0.0.1:9464\"\n",
            "`metrics.listn`: unknown key",
        ),
    ] {
        let text = good.replace("listen = \"127.0.0.1:9464\"\n", bad);
        let (code, _, stderr) = run(&text);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains(expected), "{bad}: {stderr}");
    }
}
