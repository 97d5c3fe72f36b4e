//! Unit tests of the `discovery` module.

use super::*;

fn doc(issuer: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
    }))
    .unwrap()
}

#[test]
fn issuer_must_match() {
    assert!(
        ProviderMetadata::from_json(&doc("https://idp.example"), "https://idp.example").is_ok()
    );
    assert!(
        ProviderMetadata::from_json(&doc("https://idp.example/"), "https://idp.example").is_ok()
    );
    let err = ProviderMetadata::from_json(&doc("https://evil.example"), "https://idp.example")
        .unwrap_err();
    assert!(matches!(err, TokenError::Discovery(_)));
}

#[test]
fn every_endpoint_must_be_http() {
    let issuer = "https://idp.example";
    let with = |field: &str, url: &str| {
        let mut doc: serde_json::Value = serde_json::from_slice(&doc(issuer)).unwrap();
        doc[field] = url.into();
        serde_json::to_vec(&doc).unwrap()
    };
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "userinfo_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ] {
        assert!(
            ProviderMetadata::from_json(&with(field, "https://idp.example/x"), issuer).is_ok(),
            "{field}"
        );
        for bad in [
            "javascript:alert(document.cookie)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "ftp://idp.example/x",
        ] {
            let err = ProviderMetadata::from_json(&with(field, bad), issuer).unwrap_err();
            assert!(
                matches!(&err, TokenError::Discovery(msg) if msg.contains(field)),
                "{field} = {bad}: {err:?}"
            );
        }
    }
}

/// Issue 15, defect 8: an https provider's endpoints must be https.
#[test]
fn plain_http_endpoints_are_refused_except_on_loopback() {
    let issuer = "https://idp.example";
    let with = |field: &str, url: &str| {
        let mut doc: serde_json::Value = serde_json::from_slice(&doc(issuer)).unwrap();
        doc[field] = url.into();
        serde_json::to_vec(&doc).unwrap()
    };
    for field in [
        "jwks_uri",
        "token_endpoint",
        "revocation_endpoint",
        "end_session_endpoint",
    ] {
        let err =
            ProviderMetadata::from_json(&with(field, "http://idp.example/x"), issuer).unwrap_err();
        assert!(
            matches!(&err, TokenError::Discovery(m) if m.contains(field)),
            "{err:?}"
        );
        for loopback in [
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
            "http://[::1]/x",
        ] {
            assert!(ProviderMetadata::from_json(&with(field, loopback), issuer).is_ok());
        }
    }
}

#[test]
fn rfc8414_urls() {
    let urls = |issuer: &str| {
        authorization_server_metadata_urls(&Url::parse(issuer).unwrap())
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        urls("https://idp.example"),
        ["https://idp.example/.well-known/oauth-authorization-server"]
    );
    assert_eq!(
        urls("https://idp.example/tenant/"),
        [
            "https://idp.example/.well-known/oauth-authorization-server/tenant",
            "https://idp.example/tenant/.well-known/oauth-authorization-server"
        ]
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bytes in [&b""[..], b"{", b"[]", b"{\"issuer\":1}", &[0xff, 0xfe]] {
        assert!(ProviderMetadata::from_json(bytes, "https://idp.example").is_err());
    }
}

mod fetching {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::jwks::test_support::{JwksServer, http_client};

    const REFRESH: Duration = Duration::from_secs(3600);

    /// A server answering every path with a discovery document for itself.
    async fn server() -> (JwksServer, String) {
        let server = JwksServer::start("").await;
        let issuer = server.url.origin().ascii_serialization();
        server.set_body(String::from_utf8(doc(&issuer)).unwrap());
        (server, issuer)
    }

    fn discovery(issuer: &str, clock: &ManualClock) -> Arc<Discovery> {
        let config = OidcConfig::builder(issuer, "bff")
            .discovery_refresh(REFRESH)
            .build()
            .unwrap();
        Arc::new(Discovery::new(
            &config,
            http_client(),
            Arc::new(clock.clone()),
        ))
    }

    #[tokio::test]
    async fn an_oversized_document_is_refused() {
        let (server, issuer) = server().await;
        let mut big: serde_json::Value = serde_json::from_slice(&doc(&issuer)).unwrap();
        big["padding"] = "a".repeat(crate::http::MAX_RESPONSE_BYTES).into();
        server.set_body(big.to_string());
        let clock = ManualClock::new(1_700_000_000);
        let err = discovery(&issuer, &clock).metadata().await.unwrap_err();
        assert!(matches!(err, TokenError::InvalidResponse(_)), "{err:?}");
    }

    #[tokio::test]
    async fn fetched_once_then_served_until_the_refresh_interval() {
        let (server, issuer) = server().await;
        let clock = ManualClock::new(1_700_000_000);
        let discovery = discovery(&issuer, &clock);
        let first = discovery.metadata().await.unwrap();
        clock.advance(REFRESH - Duration::from_secs(1));
        assert!(Arc::ptr_eq(&discovery.metadata().await.unwrap(), &first));
        assert_eq!(server.requests(), 1);
        clock.advance(Duration::from_secs(1));
        discovery.metadata().await.unwrap();
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_never_queue_behind_a_refetch_of_a_stale_copy() {
        let (server, issuer) = server().await;
        let clock = ManualClock::new(1_700_000_000);
        let discovery = discovery(&issuer, &clock);
        let first = discovery.metadata().await.unwrap();

        // The provider hangs; the copy goes stale.
        server.set_delay(Duration::from_secs(3));
        clock.advance(REFRESH);
        let refetch = tokio::spawn({
            let discovery = Arc::clone(&discovery);
            async move { discovery.metadata().await }
        });
        while server.requests() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // While it runs, every other caller gets the stale copy at once.
        let calls = (0..20).map(|_| {
            let discovery = Arc::clone(&discovery);
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(1), discovery.metadata()).await
            })
        });
        for result in futures_util::future::join_all(calls).await {
            let metadata = result.unwrap().expect("no waiting").unwrap();
            assert!(Arc::ptr_eq(&metadata, &first));
        }
        assert_eq!(server.requests(), 2, "one refetch, not one per caller");
        refetch.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_refetch_backs_off_while_serving_the_stale_copy() {
        let (server, issuer) = server().await;
        let clock = ManualClock::new(1_700_000_000);
        let discovery = discovery(&issuer, &clock);
        let first = discovery.metadata().await.unwrap();

        server.set_status(503);
        clock.advance(REFRESH);
        let calls = (0..20).map(|_| {
            let discovery = Arc::clone(&discovery);
            tokio::spawn(async move { discovery.metadata().await })
        });
        for result in futures_util::future::join_all(calls).await {
            assert!(Arc::ptr_eq(&result.unwrap().unwrap(), &first));
        }
        assert_eq!(server.requests(), 2);

        // No new attempt during the back-off...
        for _ in 0..20 {
            assert!(Arc::ptr_eq(&discovery.metadata().await.unwrap(), &first));
        }
        clock.advance(RETRY_AFTER_FAILURE - Duration::from_secs(1));
        discovery.metadata().await.unwrap();
        assert_eq!(server.requests(), 2);
        // ...one after it (failing again: another back-off)...
        clock.advance(Duration::from_secs(1));
        discovery.metadata().await.unwrap();
        discovery.metadata().await.unwrap();
        assert_eq!(server.requests(), 3);

        // ...and once the provider is back, a fresh copy for the full interval.
        server.set_status(200);
        clock.advance(RETRY_AFTER_FAILURE);
        let second = discovery.metadata().await.unwrap();
        assert!(!Arc::ptr_eq(&second, &first));
        assert_eq!(server.requests(), 4);
        clock.advance(REFRESH - Duration::from_secs(1));
        assert!(Arc::ptr_eq(&discovery.metadata().await.unwrap(), &second));
        assert_eq!(server.requests(), 4);
    }

    #[tokio::test]
    async fn the_back_off_is_never_longer_than_the_refresh_interval() {
        let (server, issuer) = server().await;
        let clock = ManualClock::new(1_700_000_000);
        let config = OidcConfig::builder(issuer.as_str(), "bff")
            .discovery_refresh(Duration::from_secs(10))
            .build()
            .unwrap();
        let discovery = Discovery::new(&config, http_client(), Arc::new(clock.clone()));
        discovery.metadata().await.unwrap();
        server.set_status(503);
        clock.advance(Duration::from_secs(10));
        discovery.metadata().await.unwrap();
        assert_eq!(server.requests(), 2);
        clock.advance(Duration::from_secs(10));
        discovery.metadata().await.unwrap();
        assert_eq!(server.requests(), 3);
    }
}
