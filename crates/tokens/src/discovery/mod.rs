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
use crate::http::read_limited;

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
    /// The pushed authorization request endpoint (RFC 9126 §5).
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// Whether the provider accepts authorization requests only through
    /// the pushed authorization request endpoint (RFC 9126 §5): the engine
    /// then pushes them whatever the configuration says.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
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
fn endpoint_fields(m: &mut ProviderMetadata) -> [(&'static str, EndpointSlot<'_>); 8] {
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
        (
            "pushed_authorization_request_endpoint",
            EndpointSlot::Optional(&mut m.pushed_authorization_request_endpoint),
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

    /// Fills the revocation, introspection and pushed authorization request
    /// endpoints this document lacks
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
            #[serde(default)]
            pushed_authorization_request_endpoint: Option<Url>,
            #[serde(default)]
            require_pushed_authorization_requests: bool,
        }
        let other: AsMetadata = serde_json::from_slice(document)
            .map_err(|e| TokenError::Discovery(format!("unreadable RFC 8414 document: {e}")))?;
        if other.issuer.trim_end_matches('/') != self.issuer.trim_end_matches('/') {
            return Err(TokenError::Discovery(
                "the RFC 8414 document names another issuer".into(),
            ));
        }
        let mut filled = Vec::new();
        self.require_pushed_authorization_requests |= other.require_pushed_authorization_requests;
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
            (
                "pushed_authorization_request_endpoint",
                &mut self.pushed_authorization_request_endpoint,
                other.pushed_authorization_request_endpoint,
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
            match crate::metrics::provider_call(
                crate::metrics::ProviderEndpoint::Discovery,
                self.fetch_document(url),
            )
            .await
            {
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
        let body = crate::metrics::provider_call(
            crate::metrics::ProviderEndpoint::Discovery,
            self.fetch_document(&self.url),
        )
        .await?;
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
mod tests;
