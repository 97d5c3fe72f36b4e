//! `oidc-bff demo` as a newcomer would use it: it prints a URL, the sign-in
//! works without a form, and the sample API answers through the gateway.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_signs_in_and_calls_the_api() {
    let mut child = Command::new(common::binary())
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--idp-port",
            "0",
            "--api-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("http://") {
                let _ = tx.send(format!("http://{url}"));
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo prints its URL");
    let base = url.trim_end_matches('/').to_owned();

    let mut browser = Browser::new();
    let page = browser.navigate(&url).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("Call API"));
    assert!(
        html.contains("Your sessions"),
        "the page shows the session list"
    );

    let (status, _) = browser.get_json(&format!("{base}/bff/user")).await;
    assert_eq!(status, 401);
    let home = browser
        .navigate(&format!("{base}/bff/login?returnUrl=/"))
        .await;
    assert_eq!(home.url().as_str(), url, "back on the page after sign-in");
    let (status, user) = browser.get_json(&format!("{base}/bff/user")).await;
    assert_eq!(status, 200);
    assert_eq!(user["claims"]["name"], "Alice Example");

    let (status, answer) = browser.get_json(&format!("{base}/api/hello")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token"]["sub"], "alice");
    assert_eq!(answer["receivedCookies"], false);
    assert!(answer["token"]["expiresIn"].as_u64().unwrap() <= 30);

    // The session list the page shows: this browser's session, marked current.
    let (status, list) = browser.get_json(&format!("{base}/bff/sessions")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["sessions"][0]["current"], true);

    let _ = child.kill();
    let _ = child.wait();
}
