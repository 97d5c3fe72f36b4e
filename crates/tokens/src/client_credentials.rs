//! Machine-to-machine access tokens: the OAuth 2.0 client credentials grant
//! (RFC 6749 §4.4), cached.
//!
//! ```no_run
//! # async fn demo(client: oidc_bff_tokens::TokenEngine) -> Result<(), oidc_bff_tokens::TokenError> {
//! use oidc_bff_tokens::ClientCredentialsRequest;
//!
//! let request = ClientCredentialsRequest::default()
//!     .scope("catalog.read")
//!     .resource("https://catalog.example.com");
//! // The first call asks the provider; later calls are answered from the cache
//! // until the token comes within the refresh margin of its expiry.
//! let token = client.client_access_token(&request).await?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! # The cache
//!
//! * One entry per [`ClientCredentialsRequest`] (scope, resource, token
//!   endpoint) of an [`TokenEngine`](crate::TokenEngine) (one client id): a token is never handed
//!   out for parameters it was not requested with.
//! * A cached token is renewed once it expires within the configured
//!   [`refresh_margin`](crate::OidcConfig::refresh_margin) (at most half its
//!   lifetime, so a short-lived token is still used for a while).
//! * On a miss, concurrent callers share one token request: it runs in a
//!   spawned task, so a caller that goes away cannot cut it in half.
//! * A failed request is not cached: the next caller tries again. While a
//!   renewal fails, a cached token that has not yet expired is still served.
//! * [`TokenEngine::renew_client_access_token`](crate::TokenEngine::renew_client_access_token) replaces a token an API
//!   rejected; callers that saw the same rejected token share one renewal.
//! * Instances sharing a persistent session store share the tokens too: on
//!   a miss an instance first looks in the store; otherwise one instance
//!   (holding a short lock in the store) asks the provider and stores the
//!   token (encrypted, like everything in a persistent store) for the
//!   others. A failing store never blocks a token: the provider is then
//!   asked directly.
//!
//! Nothing here needs an HTTP request or a session, so background jobs can
//! call it directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use url::Url;

use crate::error::TokenError;
use crate::secret::AccessToken;
use crate::user_token::Host;

/// Entries kept before expired ones are swept out.
const SWEEP_ABOVE: usize = 1024;

/// Parameters of a client credentials token: the cache key.
///
/// ```
/// use oidc_bff_tokens::ClientCredentialsRequest;
///
/// let a = ClientCredentialsRequest::default().scope("read");
/// let b = ClientCredentialsRequest::default().scope("read").resource("urn:api");
/// assert_ne!(a, b); // different tokens
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ClientCredentialsRequest {
    /// Ask for a token with these scopes (space separated); `None` lets the
    /// provider choose.
    pub scope: Option<String>,
    /// Ask for a token for this resource (RFC 8707 `resource` parameter).
    pub resource: Option<String>,
    /// Send the grant to this token endpoint instead of the discovered one.
    /// It receives the client secret, so it must be `https` (or `http` on
    /// loopback).
    pub token_endpoint: Option<Url>,
}

impl ClientCredentialsRequest {
    /// A token with these scopes (space separated).
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// A token for this resource (RFC 8707).
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Use this token endpoint instead of the one from discovery.
    #[must_use]
    pub fn token_endpoint(mut self, endpoint: Url) -> Self {
        self.token_endpoint = Some(endpoint);
        self
    }
}

type FlightResult = Result<AccessToken, TokenError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;

/// The client credentials token cache of one [`TokenEngine`](crate::TokenEngine).
pub(crate) struct ClientTokenCache {
    slots: Mutex<HashMap<ClientCredentialsRequest, Slot>>,
    /// `oidc_bff_client_credentials_cache_hits_total`, registered once.
    hits: metrics::Counter,
}

impl std::fmt::Debug for ClientTokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.lock().len();
        f.debug_struct("ClientTokenCache")
            .field("entries", &entries)
            .finish()
    }
}

#[derive(Default)]
struct Slot {
    token: Option<Cached>,
    flight: Option<Flight>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Cached {
    access_token: AccessToken,
    /// When the token expires (Unix seconds).
    expires_at: u64,
    /// From when on it is renewed (Unix seconds).
    renew_at: u64,
    /// The thumbprint of the DPoP key the token is bound to (`None`: a
    /// bearer token).
    #[serde(default)]
    jkt: Option<String>,
}

impl ClientTokenCache {
    pub(crate) fn new() -> Self {
        Self {
            slots: Mutex::default(),
            hits: crate::metrics::client_credentials_cache_hits(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientCredentialsRequest, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The DPoP key thumbprint `token` (cached for `request`) is bound to.
    pub(crate) fn bound_jkt(
        &self,
        request: &ClientCredentialsRequest,
        token: &AccessToken,
    ) -> Option<String> {
        self.lock()
            .get(request)
            .and_then(|slot| slot.token.as_ref())
            .filter(|cached| cached.access_token == *token)
            .and_then(|cached| cached.jkt.clone())
    }
}

/// What the client credentials cache needs from the client: the engine's
/// host, plus the cache itself. [`TokenEngine`](crate::TokenEngine) implements
/// it, so this module never imports the client.
pub(crate) trait CredentialsHost: Host {
    /// The client credentials tokens of this client.
    fn client_tokens(&self) -> &ClientTokenCache;
    /// The DPoP key of the client credentials tokens (`None`: DPoP off).
    fn client_dpop_key(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<crate::dpop::DpopKey>, TokenError>> + Send;
}

/// [`TokenEngine::client_access_token`](crate::TokenEngine::client_access_token).
pub(crate) async fn client_access_token<H: CredentialsHost>(
    host: &H,
    request: &ClientCredentialsRequest,
) -> Result<AccessToken, TokenError> {
    let now = host.now();
    let flight = {
        let mut slots = host.client_tokens().lock();
        // The hot path: no allocation, no await.
        if let Some(Slot {
            token: Some(cached),
            ..
        }) = slots.get(request)
            && now < cached.renew_at
        {
            host.client_tokens().hits.increment(1);
            return Ok(cached.access_token.clone());
        }
        join_or_start(host, &mut slots, request, None)
    };
    flight.await
}

/// [`TokenEngine::renew_client_access_token`](crate::TokenEngine::renew_client_access_token).
pub(crate) async fn renew_client_access_token<H: CredentialsHost>(
    host: &H,
    request: &ClientCredentialsRequest,
    rejected: &AccessToken,
) -> Result<AccessToken, TokenError> {
    let now = host.now();
    let flight = {
        let mut slots = host.client_tokens().lock();
        if let Some(slot) = slots.get_mut(request) {
            match &slot.token {
                Some(cached) if cached.access_token != *rejected && now < cached.renew_at => {
                    return Ok(cached.access_token.clone());
                }
                // Never fall back to the token the API refused.
                Some(cached) if cached.access_token == *rejected => slot.token = None,
                _ => {}
            }
        }
        join_or_start(host, &mut slots, request, Some(rejected))
    };
    flight.await
}

/// Joins the running token request for `request`, or starts one.
/// Called with the cache locked.
fn join_or_start<H: CredentialsHost>(
    host: &H,
    slots: &mut HashMap<ClientCredentialsRequest, Slot>,
    request: &ClientCredentialsRequest,
    rejected: Option<&AccessToken>,
) -> Flight {
    if !slots.contains_key(request) && slots.len() >= SWEEP_ABOVE {
        let now = host.now();
        slots.retain(|_, slot| {
            slot.flight.is_some() || slot.token.as_ref().is_some_and(|t| now < t.expires_at)
        });
    }
    let slot = slots.entry(request.clone()).or_default();
    if let Some(flight) = &slot.flight {
        return flight.clone();
    }
    let client = host.clone();
    let request = request.clone();
    let rejected = rejected.cloned();
    // The task can only finish after the flight is registered: it needs
    // the lock this caller holds.
    let handle = tokio::spawn(async move {
        let result = fetch_client_token(&client, &request, rejected.as_ref()).await;
        let now = client.now();
        let mut slots = client.client_tokens().lock();
        let slot = slots.entry(request.clone()).or_default();
        slot.flight = None;
        match result {
            Ok(fresh) => {
                let token = fresh.access_token.clone();
                slot.token = Some(fresh);
                Ok(token)
            }
            // A failed renewal: keep serving the old token while it lasts.
            Err(err) => match slot.token.as_ref().filter(|old| now < old.expires_at) {
                Some(old) => {
                    tracing::warn!(error = %err, "client credentials token renewal failed; using the current token");
                    Ok(old.access_token.clone())
                }
                None => {
                    tracing::warn!(error = %err, "client credentials token request failed");
                    slots.remove(&request);
                    Err(err)
                }
            },
        }
    });
    let flight: Flight = async move {
        handle.await.unwrap_or_else(|_| {
            Err(TokenError::ProviderUnavailable(
                "the token request task failed".into(),
            ))
        })
    }
    .boxed()
    .shared();
    slot.flight = Some(flight.clone());
    flight
}

/// A token for `request` from the shared store if another instance put
/// a current one there (never `rejected`), else from the provider — by
/// one instance at a time, which then shares it.
async fn fetch_client_token<H: CredentialsHost>(
    host: &H,
    request: &ClientCredentialsRequest,
    rejected: Option<&AccessToken>,
) -> Result<Cached, TokenError> {
    let store = host.store();
    let key = shared_key(&host.config().client_id, request);
    let lock = format!("{key}|lock");
    let owner = crate::session::random_token();
    let wait = host.config().request_timeout;
    let deadline = tokio::time::Instant::now() + wait;
    let mut locked = false;
    loop {
        match shared_token(host, &key, rejected).await {
            Ok(Some(shared)) => return Ok(shared),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "shared client token cache unavailable; asking the provider");
                return fetch_from_provider(host, request).await;
            }
        }
        match store
            .put_transient_if_absent(&lock, owner.clone(), wait)
            .await
        {
            Ok(true) => {
                locked = true;
                break;
            }
            // Another instance is asking the provider: wait for its token.
            Ok(false) if tokio::time::Instant::now() < deadline => {
                use rand::Rng as _;
                let pause = rand::rng().random_range(20..40);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Ok(false) => break,
            Err(err) => {
                tracing::warn!(error = %err, "shared client token lock unavailable; asking the provider");
                break;
            }
        }
    }
    // The instance that held the lock before may have shared its token
    // between our last look and our taking the lock: look once more.
    if locked && let Ok(Some(shared)) = shared_token(host, &key, rejected).await {
        release(store, &lock).await;
        return Ok(shared);
    }
    let result = fetch_from_provider(host, request).await;
    if let Ok(fresh) = &result {
        let now = host.now();
        let ttl = std::time::Duration::from_secs(fresh.expires_at.saturating_sub(now).max(1));
        match serde_json::to_string(fresh) {
            Ok(json) => {
                if let Err(err) = store.put_transient(&key, json, ttl).await {
                    tracing::warn!(error = %err, "could not share the client token");
                }
            }
            Err(err) => tracing::warn!(error = %err, "could not encode the client token"),
        }
    }
    if locked {
        release(store, &lock).await;
    }
    result
}

/// The token another instance shared for `key`, if it is current, not
/// `rejected`, and bound to our DPoP key (if any).
async fn shared_token<H: CredentialsHost>(
    host: &H,
    key: &str,
    rejected: Option<&AccessToken>,
) -> Result<Option<Cached>, crate::store::StoreError> {
    let Some(raw) = host.store().get_transient(key).await? else {
        return Ok(None);
    };
    let now = host.now();
    match serde_json::from_str::<Cached>(&raw) {
        Ok(shared)
            if now < shared.renew_at
                && Some(&shared.access_token) != rejected
                && shared.jkt == own_jkt(host).await =>
        {
            Ok(Some(shared))
        }
        _ => Ok(None),
    }
}

/// Releases the client token lock (it expires on its own if this fails).
async fn release(store: &Arc<dyn crate::store::SessionStore>, lock: &str) {
    if let Err(err) = store.take_transient(lock).await {
        tracing::debug!(error = %err, "could not release the client token lock; it expires");
    }
}

/// One client credentials grant at the provider.
async fn fetch_from_provider<H: CredentialsHost>(
    host: &H,
    request: &ClientCredentialsRequest,
) -> Result<Cached, TokenError> {
    if host.config().client_secret.is_none() && host.config().client_key.is_none() {
        return Err(TokenError::Config(
            "client credentials tokens need a client secret or a client key".into(),
        ));
    }
    let discovered = host.metadata().await?;
    let metadata = match &request.token_endpoint {
        None => discovered,
        Some(endpoint) => {
            if !is_safe_endpoint(endpoint) {
                return Err(TokenError::Config(
                    "the client credentials token endpoint must be https (http only on loopback)"
                        .into(),
                ));
            }
            let mut metadata = crate::discovery::ProviderMetadata::clone(&discovered);
            metadata.token_endpoint = endpoint.clone();
            Arc::new(metadata)
        }
    };
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    if let Some(scope) = &request.scope {
        form.push(("scope", scope.clone()));
    }
    if let Some(resource) = &request.resource {
        form.push(("resource", resource.clone()));
    }
    let dpop = host.client_dpop_key().await?;
    // Expiry counts from before the request: never later than the provider's.
    let started = host.now();
    let response = host.token_request(&metadata, form, dpop.as_ref()).await;
    crate::metrics::client_credentials_request(&response);
    let response = response?;
    let jkt = dpop
        .filter(|_| response.is_dpop())
        .map(|key| key.thumbprint().to_owned());
    let lifetime = response
        .expires_in
        .unwrap_or(host.config().default_token_lifetime.as_secs());
    let margin = host.config().refresh_margin.as_secs().min(lifetime / 2);
    let expires_at = started.saturating_add(lifetime);
    tracing::debug!(
        scope = request.scope.as_deref(),
        resource = request.resource.as_deref(),
        lifetime,
        "client credentials token issued"
    );
    Ok(Cached {
        access_token: response.access_token,
        expires_at,
        renew_at: expires_at.saturating_sub(margin),
        jkt,
    })
}

/// The thumbprint a shared token must be bound to, to be usable here: this
/// instance's client key (`None` with DPoP off, or when the key cannot be
/// had: then only bearer tokens match).
async fn own_jkt<H: CredentialsHost>(host: &H) -> Option<String> {
    match host.client_dpop_key().await {
        Ok(key) => key.map(|k| k.thumbprint().to_owned()),
        Err(_) => None,
    }
}

/// The shared store's key of a client token: client id and request.
fn shared_key(client_id: &str, request: &ClientCredentialsRequest) -> String {
    // JSON keeps the parts apart whatever characters they hold.
    let parts = serde_json::json!([
        client_id,
        request.scope,
        request.resource,
        request.token_endpoint.as_ref().map(Url::as_str),
    ]);
    format!("client-token:{parts}")
}

fn is_safe_endpoint(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_distinct_keys() {
        let plain = ClientCredentialsRequest::default();
        let scoped = ClientCredentialsRequest::default().scope("a");
        let other_scope = ClientCredentialsRequest::default().scope("b");
        let resource = ClientCredentialsRequest::default()
            .scope("a")
            .resource("urn:x");
        let keys: std::collections::HashSet<_> =
            [plain, scoped.clone(), other_scope, resource, scoped]
                .into_iter()
                .collect();
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn endpoint_must_be_https_or_loopback() {
        assert!(is_safe_endpoint(
            &Url::parse("https://idp.example.com/token").unwrap()
        ));
        assert!(is_safe_endpoint(
            &Url::parse("http://127.0.0.1:8080/token").unwrap()
        ));
        assert!(!is_safe_endpoint(
            &Url::parse("http://idp.example.com/token").unwrap()
        ));
        assert!(!is_safe_endpoint(
            &Url::parse("ftp://127.0.0.1/token").unwrap()
        ));
    }
}
