//! The provider's discovery document (`/.well-known/openid-configuration`).
//!
//! [`Discovery`] fetches the document once, keeps it for the configured
//! refresh interval, and when a refetch fails keeps serving the stale copy
//! (stale-on-error) so a provider hiccup does not stop token refreshes that
//! already know their endpoint. An `issuer` that differs from the configured
//! authority is refused: that is a misconfiguration or an attack. So is any
//! endpoint URL that is not `http(s)` (a `javascript:` end-session endpoint
//! would otherwise receive the browser at logout).
//!
//! While a stale copy exists, no caller ever waits for a refetch: one task
//! refetches, the others get the stale copy at once. After a failed refetch
//! the stale copy is served without any new attempt for
//! [`RETRY_AFTER_FAILURE`] (or the refresh interval, if shorter), so a
//! provider outage costs one request per interval, not one per call.

use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;
use url::Url;

use crate::clock::SharedClock;
use crate::config::OidcConfig;
use crate::error::TokenError;
use crate::provider::read_limited;

/// How long a stale document is served without a new attempt after a failed
/// refetch (shortened to the refresh interval when that is shorter).
pub const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(30);

/// The parts of the provider metadata the engine uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct ProviderMetadata {
    /// The provider's issuer identifier.
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: Url,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: Url,
    /// The provider's signing keys.
    pub jwks_uri: Url,
    /// The userinfo endpoint.
    #[serde(default)]
    pub userinfo_endpoint: Option<Url>,
    /// The token revocation endpoint (RFC 7009).
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// The token introspection endpoint (RFC 7662).
    #[serde(default)]
    pub introspection_endpoint: Option<Url>,
    /// The RP-initiated logout endpoint.
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    /// Client authentication methods at the token endpoint.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// PKCE methods supported.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// Whether the provider adds `iss` to authorization responses (RFC 9207).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Signing algorithms of id_tokens.
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
}

impl ProviderMetadata {
    /// Parses and checks a discovery document against the configured authority.
    pub fn from_json(bytes: &[u8], expected_issuer: &str) -> Result<Self, TokenError> {
        let metadata: ProviderMetadata = serde_json::from_slice(bytes)
            .map_err(|e| TokenError::Discovery(format!("unreadable document: {e}")))?;
        if metadata.issuer.trim_end_matches('/') != expected_issuer.trim_end_matches('/') {
            return Err(TokenError::Discovery(format!(
                "issuer {:?} does not match the configured authority {:?}",
                metadata.issuer, expected_issuer
            )));
        }
        let optional = [
            ("userinfo_endpoint", &metadata.userinfo_endpoint),
            ("revocation_endpoint", &metadata.revocation_endpoint),
            ("introspection_endpoint", &metadata.introspection_endpoint),
            ("end_session_endpoint", &metadata.end_session_endpoint),
        ];
        let urls = [
            ("authorization_endpoint", &metadata.authorization_endpoint),
            ("token_endpoint", &metadata.token_endpoint),
            ("jwks_uri", &metadata.jwks_uri),
        ]
        .into_iter()
        .chain(
            optional
                .into_iter()
                .filter_map(|(name, url)| url.as_ref().map(|url| (name, url))),
        );
        for (name, url) in urls {
            if !matches!(url.scheme(), "https" | "http") {
                return Err(TokenError::Discovery(format!(
                    "{name} is not an http(s) URL"
                )));
            }
        }
        Ok(metadata)
    }

    /// Whether the token endpoint takes `client_secret_basic` (the default when not advertised).
    pub fn prefers_basic_auth(&self) -> bool {
        match &self.token_endpoint_auth_methods_supported {
            None => true,
            Some(methods) => {
                methods.iter().any(|m| m == "client_secret_basic")
                    || !methods.iter().any(|m| m == "client_secret_post")
            }
        }
    }
}

#[derive(Debug)]
struct Cached {
    metadata: Arc<ProviderMetadata>,
    /// When the copy stops being fresh: the refresh interval after a
    /// successful fetch, the retry delay after a failed refetch.
    fresh_until: u64,
}

/// A cached, self-refreshing discovery document.
#[derive(Debug)]
pub struct Discovery {
    url: Url,
    expected_issuer: String,
    refresh_after: u64,
    /// Seconds a stale copy is served without a new attempt after a failure.
    retry_after: u64,
    http: reqwest::Client,
    clock: SharedClock,
    cached: RwLock<Option<Cached>>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl Discovery {
    /// A cache for the provider named in `config`.
    pub fn new(config: &OidcConfig, http: reqwest::Client, clock: SharedClock) -> Self {
        Self {
            url: config.discovery_url(),
            expected_issuer: config.expected_issuer().to_owned(),
            refresh_after: config.discovery_refresh.as_secs(),
            retry_after: RETRY_AFTER_FAILURE
                .as_secs()
                .min(config.discovery_refresh.as_secs()),
            http,
            clock,
            cached: RwLock::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The metadata, fetched if absent or due for refresh; a failed refetch
    /// serves the stale copy.
    ///
    /// With a stale copy cached this never waits for another task's fetch:
    /// while one refetch runs, the other callers get the stale copy at once,
    /// and after a failed refetch the stale copy is served without a new
    /// attempt for [`RETRY_AFTER_FAILURE`]. Without any copy, callers wait
    /// for the one fetch in progress.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, TokenError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _guard = match self.stale() {
            Some(stale) => match self.fetch_lock.try_lock() {
                Ok(guard) => guard,
                // Someone is refetching: do not queue behind a slow provider.
                Err(_) => return Ok(stale),
            },
            None => self.fetch_lock.lock().await,
        };
        // Another task may have fetched (or failed and backed off) meanwhile.
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let result = self.fetch().await;
        let now = self.clock.now_unix();
        let mut slot = self.cached.write().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                *slot = Some(Cached {
                    metadata: metadata.clone(),
                    fresh_until: now.saturating_add(self.refresh_after),
                });
                Ok(metadata)
            }
            Err(err) => {
                let Some(cached) = slot.as_mut() else {
                    return Err(err);
                };
                cached.fresh_until = now.saturating_add(self.retry_after);
                let stale = cached.metadata.clone();
                drop(slot);
                tracing::warn!(
                    error = %err,
                    retry_in_secs = self.retry_after,
                    "discovery refresh failed; serving the cached document"
                );
                Ok(stale)
            }
        }
    }

    /// The cached metadata without any fetch, fresh or stale.
    pub fn cached(&self) -> Option<Arc<ProviderMetadata>> {
        self.stale()
    }

    fn fresh(&self) -> Option<Arc<ProviderMetadata>> {
        let now = self.clock.now_unix();
        let slot = self.cached.read().unwrap_or_else(PoisonError::into_inner);
        let cached = slot.as_ref()?;
        (now < cached.fresh_until).then(|| cached.metadata.clone())
    }

    fn stale(&self) -> Option<Arc<ProviderMetadata>> {
        let slot = self.cached.read().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|c| c.metadata.clone())
    }

    async fn fetch(&self) -> Result<ProviderMetadata, TokenError> {
        let response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| TokenError::from_transport(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(if status.is_server_error() {
                TokenError::ProviderUnavailable(format!("discovery answered {status}"))
            } else {
                TokenError::Discovery(format!("discovery answered {status}"))
            });
        }
        let body = read_limited(response).await?;
        ProviderMetadata::from_json(&body, &self.expected_issuer)
    }
}

#[cfg(test)]
mod tests {
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
            ProviderMetadata::from_json(&doc("https://idp.example/"), "https://idp.example")
                .is_ok()
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
            big["padding"] = "a".repeat(crate::provider::MAX_RESPONSE_BYTES).into();
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
}
