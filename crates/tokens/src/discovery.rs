//! The provider's discovery document (`/.well-known/openid-configuration`).
//!
//! [`Discovery`] fetches the document once, keeps it for the configured
//! refresh interval, and when a refetch fails keeps serving the stale copy
//! (stale-on-error) so a provider hiccup does not stop token refreshes that
//! already know their endpoint. An `issuer` that differs from the configured
//! authority is refused: that is a misconfiguration or an attack. So is any
//! endpoint URL that is not `https` — plain `http` only to a loopback host,
//! the rule of the configured authority — since a network attacker could
//! otherwise swap the signing keys or read the client secret (and a
//! `javascript:` end-session endpoint would receive the browser at logout).
//!
//! Endpoints named in the configuration ([`OidcConfig::endpoints`]) win over
//! the document. Endpoints the OpenID document lacks (the revocation and
//! introspection endpoints) are looked up in the provider's OAuth 2.0
//! Authorization Server Metadata (RFC 8414,
//! `/.well-known/oauth-authorization-server`) when they are needed, by
//! [`Discovery::metadata_with_fallback`]; each endpoint's origin is kept in
//! [`ProviderMetadata::sources`].
//!
//! While a stale copy exists, no caller ever waits for a refetch: one task
//! refetches, the others get the stale copy at once. After a failed refetch
//! the stale copy is served without any new attempt for
//! [`RETRY_AFTER_FAILURE`] (or the refresh interval, if shorter), so a
//! provider outage costs one request per interval, not one per call.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;
use url::Url;

use crate::clock::SharedClock;
use crate::config::{EndpointOverrides, OidcConfig, is_secure_endpoint};
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
    /// Where each endpoint was found (endpoint name → source); filled by
    /// [`Discovery`].
    #[serde(skip)]
    pub sources: BTreeMap<&'static str, EndpointSource>,
}

/// Where an endpoint of [`ProviderMetadata`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointSource {
    /// The OpenID discovery document.
    OpenIdDiscovery,
    /// The OAuth 2.0 Authorization Server Metadata (RFC 8414).
    AuthorizationServerMetadata,
    /// The configuration.
    Configuration,
}

impl std::fmt::Display for EndpointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OpenIdDiscovery => "openid-configuration",
            Self::AuthorizationServerMetadata => "oauth-authorization-server (RFC 8414)",
            Self::Configuration => "configuration",
        })
    }
}

/// The endpoint fields of the metadata, by name.
fn endpoint_fields(m: &mut ProviderMetadata) -> [(&'static str, EndpointSlot<'_>); 7] {
    [
        (
            "authorization_endpoint",
            EndpointSlot::Required(&mut m.authorization_endpoint),
        ),
        (
            "token_endpoint",
            EndpointSlot::Required(&mut m.token_endpoint),
        ),
        ("jwks_uri", EndpointSlot::Required(&mut m.jwks_uri)),
        (
            "userinfo_endpoint",
            EndpointSlot::Optional(&mut m.userinfo_endpoint),
        ),
        (
            "revocation_endpoint",
            EndpointSlot::Optional(&mut m.revocation_endpoint),
        ),
        (
            "introspection_endpoint",
            EndpointSlot::Optional(&mut m.introspection_endpoint),
        ),
        (
            "end_session_endpoint",
            EndpointSlot::Optional(&mut m.end_session_endpoint),
        ),
    ]
}

enum EndpointSlot<'a> {
    Required(&'a mut Url),
    Optional(&'a mut Option<Url>),
}

impl EndpointSlot<'_> {
    fn get(&self) -> Option<&Url> {
        match self {
            Self::Required(url) => Some(url),
            Self::Optional(url) => url.as_ref(),
        }
    }

    fn set(&mut self, url: Url) {
        match self {
            Self::Required(slot) => **slot = url,
            Self::Optional(slot) => **slot = Some(url),
        }
    }
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
        let mut metadata = metadata;
        let mut sources = BTreeMap::new();
        for (name, slot) in endpoint_fields(&mut metadata) {
            let Some(url) = slot.get() else { continue };
            if !matches!(url.scheme(), "https" | "http") {
                return Err(TokenError::Discovery(format!(
                    "{name} is not an http(s) URL"
                )));
            }
            if !is_secure_endpoint(url) {
                return Err(TokenError::Discovery(format!(
                    "{name} is plain http to a host that is not loopback; https is required"
                )));
            }
            sources.insert(name, EndpointSource::OpenIdDiscovery);
        }
        metadata.sources = sources;
        Ok(metadata)
    }

    /// Puts the configured endpoints in place of the discovered ones.
    pub fn apply_overrides(&mut self, overrides: &EndpointOverrides) {
        let mut set = Vec::new();
        for (name, mut slot) in endpoint_fields(self) {
            if let Some((_, url)) = overrides.iter().find(|(n, _)| *n == name) {
                slot.set(url.clone());
                set.push(name);
            }
        }
        for name in set {
            self.sources.insert(name, EndpointSource::Configuration);
        }
    }

    /// Fills the revocation and introspection endpoints this document lacks
    /// from an RFC 8414 Authorization Server Metadata document of the same
    /// issuer (its other fields are not used). Returns the names filled.
    pub fn fill_from_authorization_server_metadata(
        &mut self,
        document: &[u8],
    ) -> Result<Vec<&'static str>, TokenError> {
        #[derive(Deserialize)]
        struct AsMetadata {
            issuer: String,
            #[serde(default)]
            revocation_endpoint: Option<Url>,
            #[serde(default)]
            introspection_endpoint: Option<Url>,
        }
        let other: AsMetadata = serde_json::from_slice(document)
            .map_err(|e| TokenError::Discovery(format!("unreadable RFC 8414 document: {e}")))?;
        if other.issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
            return Err(TokenError::Discovery(
                "the RFC 8414 document names another issuer".into(),
            ));
        }
        let mut filled = Vec::new();
        for (name, ours, theirs) in [
            (
                "revocation_endpoint",
                &mut self.revocation_endpoint,
                other.revocation_endpoint,
            ),
            (
                "introspection_endpoint",
                &mut self.introspection_endpoint,
                other.introspection_endpoint,
            ),
        ] {
            let (None, Some(url)) = (&ours, theirs) else {
                continue;
            };
            if !is_secure_endpoint(&url) {
                return Err(TokenError::Discovery(format!(
                    "{name} of the RFC 8414 document is not https"
                )));
            }
            *ours = Some(url);
            filled.push(name);
        }
        for name in &filled {
            self.sources
                .insert(name, EndpointSource::AuthorizationServerMetadata);
        }
        Ok(filled)
    }

    /// Whether an endpoint that RFC 8414 metadata could supply is missing.
    fn lacks_oauth_endpoints(&self) -> bool {
        self.revocation_endpoint.is_none() || self.introspection_endpoint.is_none()
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
    /// Candidate URLs of the RFC 8414 document, tried in order.
    as_metadata_urls: Vec<Url>,
    overrides: EndpointOverrides,
    /// The last OpenID document completed from RFC 8414 metadata, with the
    /// document it was made from (so a refetched one is completed again).
    completed: RwLock<Option<(Arc<ProviderMetadata>, Arc<ProviderMetadata>)>>,
    complete_lock: tokio::sync::Mutex<()>,
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
            as_metadata_urls: authorization_server_metadata_urls(&config.authority),
            overrides: config.endpoints.clone(),
            completed: RwLock::new(None),
            complete_lock: tokio::sync::Mutex::new(()),
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

    /// Like [`metadata`](Self::metadata), with the revocation and
    /// introspection endpoints that the OpenID document lacks (and the
    /// configuration does not name) taken from the provider's RFC 8414
    /// Authorization Server Metadata. That document is fetched once per
    /// OpenID document (so at most once per refresh interval); when it is
    /// missing or unusable the OpenID document is used as it is.
    pub async fn metadata_with_fallback(&self) -> Result<Arc<ProviderMetadata>, TokenError> {
        let base = self.metadata().await?;
        if !base.lacks_oauth_endpoints() {
            return Ok(base);
        }
        let completed_for = |slot: &Option<(Arc<ProviderMetadata>, Arc<ProviderMetadata>)>| {
            slot.as_ref()
                .filter(|(from, _)| Arc::ptr_eq(from, &base))
                .map(|(_, done)| Arc::clone(done))
        };
        if let Some(done) = completed_for(
            &self
                .completed
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            return Ok(done);
        }
        let _guard = self.complete_lock.lock().await;
        if let Some(done) = completed_for(
            &self
                .completed
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            return Ok(done);
        }
        let mut done = ProviderMetadata::clone(&base);
        for url in &self.as_metadata_urls {
            match self.fetch_document(url).await {
                Ok(body) => match done.fill_from_authorization_server_metadata(&body) {
                    Ok(filled) => {
                        if !filled.is_empty() {
                            tracing::info!(?filled, "endpoints taken from the RFC 8414 metadata");
                        }
                        // The configuration still wins.
                        done.apply_overrides(&self.overrides);
                        break;
                    }
                    Err(err) => tracing::warn!(error = %err, %url, "RFC 8414 metadata not used"),
                },
                Err(err) => tracing::debug!(error = %err, %url, "no RFC 8414 metadata"),
            }
        }
        let done = Arc::new(done);
        *self
            .completed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some((base, Arc::clone(&done)));
        Ok(done)
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
        let body = self.fetch_document(&self.url).await?;
        let mut metadata = ProviderMetadata::from_json(&body, &self.expected_issuer)?;
        metadata.apply_overrides(&self.overrides);
        Ok(metadata)
    }

    async fn fetch_document(&self, url: &Url) -> Result<Vec<u8>, TokenError> {
        let response = self
            .http
            .get(url.clone())
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
        read_limited(response).await
    }
}

/// Where RFC 8414 puts the metadata of `issuer`: `/.well-known/oauth-authorization-server`
/// inserted before the issuer's path (RFC 8414 §3.1), and, for issuers with
/// a path, also appended to it (as some providers publish it).
fn authorization_server_metadata_urls(issuer: &Url) -> Vec<Url> {
    const WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";
    let path = issuer.path().trim_end_matches('/');
    let mut urls = Vec::new();
    let mut inserted = issuer.clone();
    inserted.set_path(&format!("{WELL_KNOWN}{path}"));
    inserted.set_query(None);
    urls.push(inserted);
    if !path.is_empty() {
        let mut appended = issuer.clone();
        appended.set_path(&format!("{path}{WELL_KNOWN}"));
        appended.set_query(None);
        urls.push(appended);
    }
    urls
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
            let err = ProviderMetadata::from_json(&with(field, "http://idp.example/x"), issuer)
                .unwrap_err();
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
