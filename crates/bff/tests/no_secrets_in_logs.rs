//! Tokens, codes, secrets and session ids never reach a log line, even at
//! the most verbose level: a full sign-in, refresh, failure and logout run
//! with every log event captured, then the log is searched for each secret.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::harness;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_is_ever_logged() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let t = harness::start().await;
    let browser = t.browser();
    let callback = browser.start_sign_in("/").await;
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(browser.get(&callback).await.status(), 303);
    let first = t.session_of(&browser).await.unwrap().record;
    t.advance(400);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    let second = t.session_of(&browser).await.unwrap().record;
    let session_id = browser.cookie("__Host-bff").unwrap();
    // A failing refresh logs too.
    t.idp.faults().set_refresh_error(Some("invalid_grant"));
    t.advance(400);
    assert_eq!(browser.api("/api/token").await.status(), 401);

    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("signed in"),
        "the capture works: {}",
        log.len()
    );
    // The client secret travels in HTTP Basic: look for its encoded form too.
    let basic = "YmZmOnNlY3JldA==".to_owned(); // base64("bff:secret")
    let mut secrets = vec![code, session_id, basic, "secret".to_owned()];
    for record in [&first, &second] {
        secrets.push(record.tokens.access_token.secret().to_owned());
        secrets.push(
            record
                .tokens
                .refresh_token
                .as_ref()
                .unwrap()
                .secret()
                .to_owned(),
        );
        secrets.push(record.tokens.id_token.as_ref().unwrap().secret().to_owned());
    }
    for secret in secrets {
        // "secret" (the client secret) is a common word: look for it as a value.
        let needle = if secret == "secret" {
            "=secret".to_owned()
        } else {
            secret
        };
        assert!(!log.contains(&needle), "a secret reached the log");
    }
}
