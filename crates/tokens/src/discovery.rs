//! The provider's discovery document (`/.well-known/openid-configuration`).
//!
//! [`Discovery`] fetches the document once, keeps it for the configured
//! refresh interval, and when a refetch fails keeps serving the stale copy
//! (stale-on-error) so a provider hiccup does not stop token refreshes that
//! already know their endpoint. An `issuer` that differs from the configured
//! authority is refused: that is a misconfiguration or an attack.

use std::sync::{Arc, RwLock};

use serde::Deserialize;
use url::Url;

use crate::clock::SharedClock;
use crate::config::OidcConfig;
use crate::error::TokenError;

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
        for (name, url) in [
            ("authorization_endpoint", &metadata.authorization_endpoint),
            ("token_endpoint", &metadata.token_endpoint),
            ("jwks_uri", &metadata.jwks_uri),
        ] {
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
    fetched_at: u64,
}

/// A cached, self-refreshing discovery document.
#[derive(Debug)]
pub struct Discovery {
    url: Url,
    expected_issuer: String,
    refresh_after: u64,
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
            http,
            clock,
            cached: RwLock::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The metadata, fetched if absent or due for refresh; a failed refetch
    /// serves the stale copy.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, TokenError> {
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        let _guard = self.fetch_lock.lock().await;
        // Another task may have fetched while we waited.
        if let Some(fresh) = self.fresh() {
            return Ok(fresh);
        }
        match self.fetch().await {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                if let Ok(mut slot) = self.cached.write() {
                    *slot = Some(Cached {
                        metadata: metadata.clone(),
                        fetched_at: self.clock.now_unix(),
                    });
                }
                Ok(metadata)
            }
            Err(err) => match self.stale() {
                Some(stale) => {
                    tracing::warn!(error = %err, "discovery refresh failed; serving the cached document");
                    Ok(stale)
                }
                None => Err(err),
            },
        }
    }

    /// The cached metadata without any fetch, fresh or stale.
    pub fn cached(&self) -> Option<Arc<ProviderMetadata>> {
        self.stale()
    }

    fn fresh(&self) -> Option<Arc<ProviderMetadata>> {
        let now = self.clock.now_unix();
        let slot = self.cached.read().ok()?;
        let cached = slot.as_ref()?;
        (now < cached.fetched_at.saturating_add(self.refresh_after))
            .then(|| cached.metadata.clone())
    }

    fn stale(&self) -> Option<Arc<ProviderMetadata>> {
        let slot = self.cached.read().ok()?;
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
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::from_transport(&e))?;
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
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"{", b"[]", b"{\"issuer\":1}", &[0xff, 0xfe]] {
            assert!(ProviderMetadata::from_json(bytes, "https://idp.example").is_err());
        }
    }
}
