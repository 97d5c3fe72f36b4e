//! [`TokenEngine`]: the token engine's handle.
//!
//! One `TokenEngine` per provider, built at start-up and cloned freely (it is
//! an `Arc` inside). It owns the discovery cache, the JWKS cache, the session
//! store, the clock and the refresh coordination. Its methods are grouped by
//! flow: sign-in in [`crate::login`], sign-out in [`crate::logout`], the
//! user's token in [`crate::user_token`], client credentials in
//! [`crate::client_credentials`]; this module holds the handle itself, the
//! provider's metadata and keys, and session loading.

use std::sync::Arc;

use url::Url;

use crate::client_credentials::{self, ClientCredentialsRequest, ClientTokenCache};
use crate::clock::{SharedClock, SystemClock};
use crate::config::OidcConfig;
use crate::discovery::{Discovery, ProviderMetadata};
use crate::dpop::{DpopKey, NonceCache};
use crate::error::TokenError;
use crate::http::http_client;
use crate::id_token::{IdTokenClaims, IdTokenExpectations, IdTokenValidator};
use crate::jwks::JwksCache;
use crate::metrics::ProviderEndpoint::Token;
use crate::provider::{ProviderClient, TokenResponse};
use crate::secret::{AccessToken, IdToken, RefreshToken};
use crate::session::{SessionId, SessionRecord};
use crate::store::{KeyRing, MemoryStore, SessionStore, Versioned};
use crate::user_token::{self, Flights, UserTokenRequest};

/// The token engine for one provider. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), oidc_bff_tokens::TokenError> {
/// use oidc_bff_tokens::{TokenEngine, OidcConfig, UserTokenRequest};
///
/// let config = OidcConfig::builder("https://login.example.com", "bff")
///     .client_secret("secret")
///     .build()?;
/// let engine = TokenEngine::builder(config).build()?;
///
/// // Sign-in: send the browser to `start.authorization_url`...
/// let start = engine.begin_login("https://app.example.com/bff/callback", Some("/")).await?;
/// # let params = Default::default();
/// // ...and at the callback:
/// let signed_in = engine.complete_login(&start.binding, &params).await?;
///
/// // Later, in any request of that session: a valid access token, refreshed if needed.
/// let token = engine
///     .user_access_token(&signed_in.session_id, None, &UserTokenRequest::default())
///     .await?;
/// # let _ = token;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TokenEngine {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: OidcConfig,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: SharedClock,
    /// The configured store, every operation recorded (`store/metered.rs`).
    pub(crate) store: Arc<dyn SessionStore>,
    /// The configured store itself: the hot path's `load`, counted only.
    pub(crate) hot_store: Arc<dyn SessionStore>,
    pub(crate) hot_counters: crate::metrics::HotCounters,
    pub(crate) discovery: Discovery,
    /// The JWKS cache and the `jwks_uri` it was built for; replaced once
    /// when discovery reports a new `jwks_uri`.
    pub(crate) jwks: std::sync::RwLock<Option<(Url, Arc<JwksCache>)>>,
    pub(crate) provider: ProviderClient,
    pub(crate) flights: Flights,
    pub(crate) client_tokens: ClientTokenCache,
    /// Seals pending sign-ins (see [`crate::login`]).
    pub(crate) login_keys: KeyRing,
    /// The latest DPoP nonce of each origin (provider and APIs).
    pub(crate) dpop_nonces: Arc<NonceCache>,
    /// The client credentials tokens' DPoP key, once loaded from (or put
    /// into) the store.
    pub(crate) client_dpop_key: tokio::sync::OnceCell<DpopKey>,
}

/// Builder of [`TokenEngine`].
#[derive(Debug)]
#[must_use]
pub struct TokenEngineBuilder {
    config: OidcConfig,
    http: Option<reqwest::Client>,
    clock: Option<SharedClock>,
    store: Option<Arc<dyn SessionStore>>,
    login_keys: Option<KeyRing>,
}

impl TokenEngineBuilder {
    /// The keys that seal pending sign-ins into the `state` parameter
    /// (default: one random key of this process). Every instance that can
    /// receive a callback for another's sign-in must have the same ring;
    /// with a shared session store, pass the store's encryption keys.
    /// Rotate as for the stores: add the new key as a decrypt key
    /// everywhere, then make it first, and drop the old one after the login
    /// timeout.
    pub fn login_keys(mut self, keys: KeyRing) -> Self {
        self.login_keys = Some(keys);
        self
    }

    /// Uses this HTTP client for calls to the provider. It should have
    /// timeouts and must not follow redirects; the default one does both.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Reads time from `clock` (tests use a [`ManualClock`](crate::ManualClock)).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Keeps sessions in `store` (default: a [`MemoryStore`]).
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Builds the engine. No network call is made until first use.
    pub fn build(self) -> Result<TokenEngine, TokenError> {
        self.config.validate()?;
        self.config.check_client_authentication()?;
        let http = match self.http {
            Some(http) => http,
            None => http_client(&self.config)?,
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(clock.clone())));
        let discovery = Discovery::new(&self.config, http.clone(), clock.clone());
        let dpop_nonces = Arc::new(NonceCache::default());
        let provider = ProviderClient::new(&self.config, http.clone(), clock.clone())
            .with_dpop(Arc::clone(&dpop_nonces), clock.clone());
        Ok(TokenEngine {
            inner: Arc::new(Inner {
                config: self.config,
                http,
                clock,
                store: crate::store::metered::Metered::wrap(store.clone()),
                hot_store: store,
                hot_counters: crate::metrics::HotCounters::register(),
                discovery,
                jwks: std::sync::RwLock::new(None),
                provider,
                flights: Flights::default(),
                client_tokens: ClientTokenCache::new(),
                login_keys: self
                    .login_keys
                    .unwrap_or_else(|| KeyRing::generate("login")),
                dpop_nonces,
                client_dpop_key: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

impl TokenEngine {
    /// Starts building the engine for the provider in `config`.
    pub fn builder(config: OidcConfig) -> TokenEngineBuilder {
        TokenEngineBuilder {
            config,
            http: None,
            clock: None,
            store: None,
            login_keys: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The session store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    /// The HTTP client used for the provider.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The provider's metadata (cached discovery document).
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, TokenError> {
        self.inner.discovery.metadata().await
    }

    /// The provider's metadata completed for revocation: endpoints the
    /// OpenID document lacks are taken from the provider's RFC 8414
    /// Authorization Server Metadata (see
    /// [`Discovery::metadata_with_fallback`]). [`ProviderMetadata::sources`]
    /// tells where each endpoint was found.
    pub async fn metadata_with_fallback(&self) -> Result<Arc<ProviderMetadata>, TokenError> {
        self.inner.discovery.metadata_with_fallback().await
    }

    /// Whether discovery has been loaded at least once (for readiness checks).
    pub fn is_discovery_loaded(&self) -> bool {
        self.inner.discovery.cached().is_some()
    }

    /// The JWKS cache for the provider's current `jwks_uri`.
    ///
    /// One cache is kept; when the provider moves its keys to a new
    /// `jwks_uri`, it is replaced once by a cache for the new location (so
    /// the rate limit and coalescing of [`JwksCache`] keep working).
    pub(crate) async fn jwks(&self, metadata: &ProviderMetadata) -> Arc<JwksCache> {
        let current = |slot: &Option<(Url, Arc<JwksCache>)>| {
            slot.as_ref()
                .filter(|(uri, _)| *uri == metadata.jwks_uri)
                .map(|(_, cache)| Arc::clone(cache))
        };
        if let Some(cache) = current(
            &self
                .inner
                .jwks
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return cache;
        }
        let mut slot = self
            .inner
            .jwks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another task may have swapped it meanwhile.
        if let Some(cache) = current(&slot) {
            return cache;
        }
        if slot.is_some() {
            tracing::info!(jwks_uri = %metadata.jwks_uri, "the provider's jwks_uri changed; using a new key cache");
        }
        let cache = Arc::new(JwksCache::new(
            metadata.jwks_uri.clone(),
            self.inner.http.clone(),
            self.inner.clock.clone(),
            self.inner.config.jwks_min_refetch,
        ));
        *slot = Some((metadata.jwks_uri.clone(), Arc::clone(&cache)));
        cache
    }

    pub(crate) fn validator(&self, metadata: &ProviderMetadata) -> IdTokenValidator {
        IdTokenValidator::new(
            metadata.issuer.clone(),
            self.inner.config.client_id.clone(),
            self.inner.clock.clone(),
        )
        .with_leeway(self.inner.config.clock_leeway.as_secs())
        .with_strict_refresh(self.inner.config.strict_refresh_claims)
    }

    /// Validates an id_token from this provider (signature, iss, aud, exp, iat,
    /// nonce when given, at_hash when given).
    pub async fn validate_id_token(
        &self,
        token: &IdToken,
        expected: IdTokenExpectations<'_>,
    ) -> Result<IdTokenClaims, TokenError> {
        let metadata = self.metadata().await?;
        let jwks = self.jwks(&metadata).await;
        self.validator(&metadata)
            .validate(token, &jwks, expected)
            .await
    }

    /// A client credentials access token for `request`, from the cache when
    /// it holds one that does not expire within the refresh margin.
    ///
    /// Cached per (client id, scope, resource, token endpoint); renewed ahead
    /// of expiry; one token request for any number of concurrent callers on
    /// a miss; failures are not cached. Needs a client secret.
    ///
    /// Errors: [`TokenError::Provider`] when the provider refuses the grant
    /// (401: no token can be had), [`TokenError::ProviderUnavailable`] and
    /// [`TokenError::Discovery`] when it cannot be reached (503),
    /// [`TokenError::Config`] without a client secret or with a bad token
    /// endpoint.
    pub async fn client_access_token(
        &self,
        request: &ClientCredentialsRequest,
    ) -> Result<AccessToken, TokenError> {
        client_credentials::client_access_token(self, request).await
    }

    /// [`client_access_token`](Self::client_access_token) with the DPoP key
    /// the token is bound to (`None`: a bearer token). Send it with
    /// `Authorization: DPoP` and a [proof](Self::dpop_proof) per request.
    pub async fn client_access_token_bound(
        &self,
        request: &ClientCredentialsRequest,
    ) -> Result<(AccessToken, Option<DpopKey>), TokenError> {
        let token = self.client_access_token(request).await?;
        Ok(self.client_binding(request, token).await)
    }

    /// The DPoP key `token` (a client credentials token for `request`) is
    /// bound to, if any.
    pub async fn client_binding(
        &self,
        request: &ClientCredentialsRequest,
        token: AccessToken,
    ) -> (AccessToken, Option<DpopKey>) {
        let Some(jkt) = self.inner.client_tokens.bound_jkt(request, &token) else {
            return (token, None);
        };
        let key = self
            .client_dpop_key()
            .await
            .ok()
            .flatten()
            .filter(|key| key.thumbprint() == jkt);
        (token, key)
    }

    /// Replaces a client credentials token that an API rejected (answered
    /// 401 to), and returns the new one.
    ///
    /// If the cache already holds a different, current token (another caller
    /// renewed it meanwhile), that one is returned without a token request;
    /// callers rejected with the same token share one renewal.
    pub async fn renew_client_access_token(
        &self,
        request: &ClientCredentialsRequest,
        rejected: &AccessToken,
    ) -> Result<AccessToken, TokenError> {
        client_credentials::renew_client_access_token(self, request, rejected).await
    }

    /// The current user's access token: valid, and renewed ahead of expiry.
    ///
    /// `loaded` is the session as already read in this request, if any (saves
    /// a store read). The hot path — a valid token in the session — costs no
    /// network call and no write. A token past its renewal point (see
    /// [`user_token`]) is returned at once while one
    /// renewal runs behind it; only an expired or missing token, or
    /// [`UserTokenRequest::force_renewal`], waits for the provider.
    /// Concurrent callers of one session share a single renewal.
    ///
    /// Errors: [`TokenError::NotAuthenticated`], [`TokenError::NoRefreshToken`]
    /// and [`TokenError::RefreshRejected`] (the session is then ended) mean
    /// 401; [`TokenError::ProviderUnavailable`] and [`TokenError::Store`] mean
    /// 503 (the session is kept).
    pub async fn user_access_token(
        &self,
        session_id: &SessionId,
        loaded: Option<&Versioned>,
        request: &UserTokenRequest,
    ) -> Result<AccessToken, TokenError> {
        user_token::user_access_token(self, session_id, loaded, request).await
    }

    /// The latest DPoP nonce of each origin (the provider's and the APIs'),
    /// kept from every response that carried one.
    pub fn dpop_nonces(&self) -> &NonceCache {
        &self.inner.dpop_nonces
    }

    /// A DPoP proof with `key` for a call to a resource server: `method` to
    /// `url` with `access_token` (`ath`), carrying the latest nonce of
    /// `url`'s origin, stamped with the engine's clock.
    pub fn dpop_proof(
        &self,
        key: &DpopKey,
        method: &str,
        url: &Url,
        access_token: &AccessToken,
    ) -> Result<String, TokenError> {
        let nonce = self.inner.dpop_nonces.get(url);
        key.proof(
            method,
            url,
            Some(access_token),
            nonce.as_deref(),
            self.inner.clock.now_unix(),
        )
    }

    /// The DPoP key of this client's client credentials tokens (`None`
    /// with DPoP off). Every instance sharing the store converges on one
    /// key: the first to need it puts it there (encrypted by persistent
    /// stores) with `put_transient_if_absent`, the others read it; once
    /// loaded it stays in memory.
    pub async fn client_dpop_key(&self) -> Result<Option<DpopKey>, TokenError> {
        if !self.inner.config.dpop {
            return Ok(None);
        }
        self.inner
            .client_dpop_key
            .get_or_try_init(|| crate::dpop::key::shared_client_key(self))
            .await
            .cloned()
            .map(Some)
    }

    /// Loads a live session.
    ///
    /// With an [idle timeout](OidcConfig::idle_timeout), a session unused for
    /// longer is ended here; otherwise its `last_active` is moved forward,
    /// with a versioned write only when more than a quarter of the idle
    /// timeout has passed since it was last written (so most requests do
    /// not write).
    pub async fn load_session(&self, id: &SessionId) -> Result<Option<Versioned>, TokenError> {
        self.load_checked(id, false).await
    }

    /// [`load_session`](Self::load_session) from
    /// [`SessionStore::load`] or, with `latest`, from
    /// [`SessionStore::load_latest`] (past any read cache).
    async fn load_checked(
        &self,
        id: &SessionId,
        latest: bool,
    ) -> Result<Option<Versioned>, TokenError> {
        let now = self.inner.clock.now_unix();
        let loaded = if latest {
            self.inner.store.load_latest(id).await?
        } else {
            let loaded = self.inner.hot_store.load(id).await;
            self.inner.hot_counters.load(&loaded);
            loaded?
        };
        let Some(loaded) = loaded.filter(|v| !v.record.is_expired(now)) else {
            return Ok(None);
        };
        // One store may hold the sessions of several clients (a gateway
        // serving several frontends): a session signed in through another
        // client is no session here, whatever cookie carried its id.
        if !loaded.record.belongs_to(&self.inner.config.client_id) {
            tracing::debug!("session of another client presented; treated as none");
            return Ok(None);
        }
        let Some(idle) = self.inner.config.idle_timeout else {
            return Ok(Some(loaded));
        };
        if loaded.record.is_idle(now, idle) {
            user_token::end_session(&self.inner.store, id, "idle timeout").await;
            return Ok(None);
        }
        let last = loaded.record.last_active.max(loaded.record.created_at);
        if now.saturating_sub(last) <= idle.as_secs() / 4 {
            return Ok(Some(loaded));
        }
        let mut record = SessionRecord::clone(&loaded.record);
        record.last_active = now;
        match self
            .inner
            .store
            .update(id, record.clone(), loaded.version)
            .await
        {
            Ok(crate::store::UpdateOutcome::Updated(version)) => Ok(Some(Versioned {
                version,
                record: Arc::new(record),
            })),
            // Someone else wrote meanwhile (and so touched the session): fine.
            Ok(_) => Ok(Some(loaded)),
            Err(err) => {
                tracing::debug!(error = %err, "could not record session activity");
                Ok(Some(loaded))
            }
        }
    }
}

/// What the token engine needs from its handle.
impl user_token::Host for TokenEngine {
    fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_unix()
    }

    fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    fn flights(&self) -> &Flights {
        &self.inner.flights
    }

    async fn load_session(&self, id: &SessionId) -> Result<Option<Versioned>, TokenError> {
        self.load_checked(id, false).await
    }

    async fn load_latest_session(&self, id: &SessionId) -> Result<Option<Versioned>, TokenError> {
        self.load_checked(id, true).await
    }

    async fn metadata(&self) -> Result<Arc<ProviderMetadata>, TokenError> {
        self.inner.discovery.metadata().await
    }

    async fn token_request(
        &self,
        metadata: &ProviderMetadata,
        form: Vec<(&'static str, String)>,
        dpop: Option<&DpopKey>,
    ) -> Result<TokenResponse, TokenError> {
        crate::metrics::provider_call(
            Token,
            self.inner.provider.token_request(metadata, form, dpop),
        )
        .await
    }

    async fn signing_keys(&self, metadata: &ProviderMetadata) -> Arc<JwksCache> {
        self.jwks(metadata).await
    }

    fn id_token_validator(&self, metadata: &ProviderMetadata) -> IdTokenValidator {
        self.validator(metadata)
    }

    fn revoke_abandoned(&self, token: Option<&RefreshToken>) {
        TokenEngine::revoke_abandoned(self, token);
    }
}

/// What the client credentials cache needs from its handle.
impl client_credentials::CredentialsHost for TokenEngine {
    fn client_tokens(&self) -> &ClientTokenCache {
        &self.inner.client_tokens
    }

    async fn client_dpop_key(&self) -> Result<Option<DpopKey>, TokenError> {
        TokenEngine::client_dpop_key(self).await
    }
}
