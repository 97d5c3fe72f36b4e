//! [`OidcClient`]: the token engine's entry point.
//!
//! One `OidcClient` per provider, built at start-up and cloned freely (it is
//! an `Arc` inside). It owns the discovery cache, the JWKS cache, the session
//! store, the clock and the refresh coordination.

use std::sync::Arc;

use url::Url;

use crate::client_credentials::{self, ClientCredentialsRequest, ClientTokenCache};
use crate::clock::{SharedClock, SystemClock};
use crate::config::OidcConfig;
use crate::discovery::{Discovery, ProviderMetadata};
use crate::error::TokenError;
use crate::http::http_client;
use crate::id_token::{IdTokenClaims, IdTokenExpectations, IdTokenValidator};
use crate::jwks::JwksCache;
use crate::login::{
    CallbackParams, LoginStart, LoginTransaction, MAX_RETURN_URL, is_browser_binding,
    pkce_challenge, sanitize_return_url,
};
use crate::provider::{ProviderClient, TokenResponse};
use crate::secret::{AccessToken, AuthorizationCode, IdToken, PkceVerifier, RefreshToken};
use crate::session::{SessionId, SessionRecord, random_token};
use crate::store::{KeyRing, MemoryStore, SessionStore, Versioned};
use crate::user_token::{self, Flights, UserTokenRequest};

/// Claims about the token or the authentication rather than the user
/// (OIDC Core 2 and 3.1.3.6, RFC 7519 4.1, OIDC Back-Channel Logout, RFC
/// 7800, RFC 9068). The userinfo answer never adds them to the session.
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "at_hash",
    "c_hash",
    "s_hash",
    "sid",
    "sub_jwk",
    "cnf",
    "events",
    "client_id",
    "scope",
    "typ",
];

/// The token engine for one provider. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), oidc_bff_tokens::TokenError> {
/// use oidc_bff_tokens::{OidcClient, OidcConfig, UserTokenRequest};
///
/// let config = OidcConfig::builder("https://login.example.com", "bff")
///     .client_secret("secret")
///     .build()?;
/// let client = OidcClient::builder(config).build()?;
///
/// // Sign-in: send the browser to `start.authorization_url`...
/// let start = client.begin_login("https://app.example.com/bff/callback", Some("/")).await?;
/// # let params = Default::default();
/// // ...and at the callback:
/// let signed_in = client.complete_login(&start.binding, &params).await?;
///
/// // Later, in any request of that session: a valid access token, refreshed if needed.
/// let token = client
///     .user_access_token(&signed_in.session_id, None, &UserTokenRequest::default())
///     .await?;
/// # let _ = token;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct OidcClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: OidcConfig,
    pub(crate) http: reqwest::Client,
    pub(crate) clock: SharedClock,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) discovery: Discovery,
    /// The JWKS cache and the `jwks_uri` it was built for; replaced once
    /// when discovery reports a new `jwks_uri`.
    pub(crate) jwks: std::sync::RwLock<Option<(Url, Arc<JwksCache>)>>,
    pub(crate) provider: ProviderClient,
    pub(crate) flights: Flights,
    pub(crate) client_tokens: ClientTokenCache,
    /// Seals pending sign-ins (see [`crate::login`]).
    pub(crate) login_keys: KeyRing,
}

/// Builder of [`OidcClient`].
#[derive(Debug)]
#[must_use]
pub struct OidcClientBuilder {
    config: OidcConfig,
    http: Option<reqwest::Client>,
    clock: Option<SharedClock>,
    store: Option<Arc<dyn SessionStore>>,
    login_keys: Option<KeyRing>,
}

impl OidcClientBuilder {
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

    /// Builds the client. No network call is made until first use.
    pub fn build(self) -> Result<OidcClient, TokenError> {
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
        let provider = ProviderClient::new(&self.config, http.clone());
        Ok(OidcClient {
            inner: Arc::new(Inner {
                config: self.config,
                http,
                clock,
                store,
                discovery,
                jwks: std::sync::RwLock::new(None),
                provider,
                flights: Flights::default(),
                client_tokens: Default::default(),
                login_keys: self
                    .login_keys
                    .unwrap_or_else(|| KeyRing::generate("login")),
            }),
        })
    }
}

/// A completed sign-in.
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The new session's id: put it in the session cookie.
    pub session_id: SessionId,
    /// The new session.
    pub session: Arc<SessionRecord>,
    /// The local path to send the browser to.
    pub return_url: String,
}

/// What [`OidcClient::logout`] did.
#[derive(Clone, Debug, Default)]
pub struct LoggedOut {
    /// The ended session, if there was one.
    pub session: Option<Arc<SessionRecord>>,
    /// The provider's end-session URL to send the browser to, if it has one.
    pub end_session_url: Option<Url>,
    /// Whether the refresh token was revoked at the provider.
    pub revoked: bool,
    /// The `state` sent with the end-session URL (RP-Initiated Logout 1.0
    /// §2): bind it to the browser and compare it when the provider sends
    /// the browser back.
    pub state: Option<String>,
}

impl OidcClient {
    /// Starts building a client for the provider in `config`.
    pub fn builder(config: OidcConfig) -> OidcClientBuilder {
        OidcClientBuilder {
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

    /// Starts a sign-in: returns the provider URL to redirect the browser to.
    ///
    /// `redirect_uri` must be the callback URL registered at the provider,
    /// built from trusted configuration (never from request headers).
    /// `return_url` is sanitized to a local path. Stores nothing: the
    /// transaction is sealed into the `state` (see [`crate::login`]). Same as
    /// [`begin_login_bound`](Self::begin_login_bound) with no binding yet.
    pub async fn begin_login(
        &self,
        redirect_uri: &str,
        return_url: Option<&str>,
    ) -> Result<LoginStart, TokenError> {
        self.begin_login_bound(redirect_uri, return_url, None).await
    }

    /// Starts a sign-in for a browser that may already hold a binding from
    /// an earlier, still pending sign-in (another tab): a valid `binding` is
    /// reused so that both sign-ins can complete; otherwise a fresh one is
    /// made. Return URLs longer than [`MAX_RETURN_URL`] fall back to `/`.
    pub async fn begin_login_bound(
        &self,
        redirect_uri: &str,
        return_url: Option<&str>,
        binding: Option<&str>,
    ) -> Result<LoginStart, TokenError> {
        let metadata = self.metadata().await?;
        let binding = binding
            .filter(|b| is_browser_binding(b))
            .map_or_else(random_token, str::to_owned);
        let mut return_url = sanitize_return_url(return_url);
        if return_url.len() > MAX_RETURN_URL {
            return_url = "/".into();
        }
        let mut transaction = LoginTransaction {
            state: String::new(),
            nonce: random_token(),
            code_verifier: PkceVerifier::new(random_token()),
            redirect_uri: redirect_uri.to_owned(),
            return_url,
            created_at: self.inner.clock.now_unix(),
        };
        transaction.state = transaction.seal(&self.inner.login_keys, &binding)?;
        let mut url = metadata.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.inner.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.inner.config.scopes.join(" "))
            .append_pair("state", &transaction.state)
            .append_pair("nonce", &transaction.nonce)
            .append_pair(
                "code_challenge",
                &pkce_challenge(&transaction.code_verifier),
            )
            .append_pair("code_challenge_method", "S256");
        Ok(LoginStart {
            authorization_url: url,
            state: transaction.state,
            binding,
        })
    }

    /// Completes a sign-in at the callback and creates the server-side session.
    ///
    /// `binding` is this browser's binding (from the login cookie). Checks,
    /// in order: the `state` opens with the binding (sealed by us, for this
    /// browser, untampered); the sign-in is not older than the login
    /// timeout and was not completed before; provider error; `iss` (RFC
    /// 9207); the code exchange with the PKCE verifier; the sign-in is
    /// recorded as consumed (a concurrent duplicate loses here); the
    /// id_token (signature, iss, aud, azp, exp, iat, nonce, at_hash);
    /// optionally userinfo, whose `sub` must match.
    pub async fn complete_login(
        &self,
        binding: &str,
        params: &CallbackParams,
    ) -> Result<SignedIn, TokenError> {
        let state = params.state.as_deref().unwrap_or_default();
        let transaction = (!state.is_empty())
            .then(|| LoginTransaction::open(&self.inner.login_keys, state, binding))
            .flatten()
            .ok_or_else(|| {
                TokenError::InvalidCallback("state does not match this browser's sign-in".into())
            })?;
        let now = self.inner.clock.now_unix();
        let timeout = self.inner.config.login_timeout.as_secs();
        if now > transaction.created_at.saturating_add(timeout) {
            return Err(TokenError::InvalidCallback(
                "the sign-in took too long".into(),
            ));
        }
        let consumed_key = transaction.consumed_key();
        if self
            .inner
            .store
            .get_transient(&consumed_key)
            .await?
            .is_some()
        {
            return Err(TokenError::InvalidCallback(
                "this sign-in was already completed".into(),
            ));
        }
        if let Some(error) = &params.error {
            return Err(TokenError::InvalidCallback(format!(
                "the provider refused the sign-in: {}",
                safe_error_code(error)
            )));
        }
        let metadata = self.metadata().await?;
        match &params.iss {
            Some(iss) if iss != &metadata.issuer => {
                return Err(TokenError::InvalidCallback(
                    "iss does not name our provider".into(),
                ));
            }
            None if metadata.authorization_response_iss_parameter_supported => {
                return Err(TokenError::InvalidCallback("iss is missing".into()));
            }
            _ => {}
        }
        let code = params
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(AuthorizationCode::new)
            .ok_or_else(|| TokenError::InvalidCallback("code is missing".into()))?;

        let response = self
            .inner
            .provider
            .token_request(
                &metadata,
                vec![
                    ("grant_type", "authorization_code".into()),
                    ("code", code.into_secret()),
                    ("redirect_uri", transaction.redirect_uri.clone()),
                    (
                        "code_verifier",
                        transaction.code_verifier.secret().to_owned(),
                    ),
                ],
            )
            .await
            .map_err(|e| match e {
                TokenError::Provider { error, .. } => TokenError::InvalidCallback(format!(
                    "code exchange refused: {}",
                    safe_error_code(error.as_str())
                )),
                TokenError::UnexpectedStatus { status } => {
                    TokenError::InvalidCallback(format!("code exchange refused: http_{status}"))
                }
                other => other,
            })?;
        // One use: recorded only now, after the provider accepted the code,
        // so that nothing a stranger can send without signing in writes to
        // the store. A concurrent duplicate of this callback loses here.
        let remaining = transaction
            .created_at
            .saturating_add(timeout)
            .saturating_sub(now)
            // Instances' clocks differ a little: outlive the transaction.
            .saturating_add(60);
        if !self
            .inner
            .store
            .put_transient_if_absent(
                &consumed_key,
                "1".into(),
                std::time::Duration::from_secs(remaining),
            )
            .await?
        {
            self.revoke_abandoned(response.refresh_token.as_ref());
            return Err(TokenError::InvalidCallback(
                "this sign-in was already completed".into(),
            ));
        }
        let id_token = response.id_token.clone().ok_or_else(|| {
            TokenError::InvalidIdToken("the token response has no id_token".into())
        })?;
        let jwks = self.jwks(&metadata).await;
        let claims = self
            .validator(&metadata)
            .validate(
                &id_token,
                &jwks,
                IdTokenExpectations {
                    nonce: Some(&transaction.nonce),
                    access_token: Some(&response.access_token),
                },
            )
            .await?;

        let mut all_claims = claims.all.clone();
        // Protocol artefacts of this one response, not facts about the user.
        for artefact in ["nonce", "at_hash", "c_hash"] {
            all_claims.remove(artefact);
        }
        if self.inner.config.load_userinfo {
            match self
                .inner
                .provider
                .userinfo(&metadata, &response.access_token)
                .await
            {
                Ok(Some(info)) if info.get("sub").and_then(|s| s.as_str()) == Some(&claims.sub) => {
                    // Only facts about the user: protocol claims come from
                    // the validated id_token alone (they are compared again
                    // at every refresh, OIDC Core 12.2).
                    for (k, v) in info {
                        if !PROTOCOL_CLAIMS.contains(&k.as_str()) {
                            all_claims.entry(k).or_insert(v);
                        }
                    }
                }
                Ok(Some(_)) => tracing::warn!("userinfo sub differs from the id_token; ignored"),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "userinfo failed; signed in without it"),
            }
        }

        let record = SessionRecord {
            sub: claims.sub.clone(),
            sid: claims.sid.clone(),
            // Rebuilt in one go: after the removals above the map would keep
            // the three-node shape of its larger self (about 1.3 KB more per
            // session in memory; see docs/BENCHMARKS.md, "Sessions at scale").
            claims: all_claims.into_iter().collect(),
            tokens: user_token::user_tokens(
                response,
                None,
                now,
                self.inner.config.default_token_lifetime,
            ),
            resource_tokens: Default::default(),
            created_at: now,
            expires_at: now + self.inner.config.session_lifetime.as_secs(),
            last_active: now,
            logout_id: random_token(),
        };
        let session_id = SessionId::generate();
        self.inner.store.create(&session_id, record.clone()).await?;
        tracing::info!(sub = %record.sub, "signed in");
        Ok(SignedIn {
            session_id,
            session: Arc::new(record),
            return_url: transaction.return_url,
        })
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
            self.inner.store.load(id).await?
        };
        let Some(loaded) = loaded.filter(|v| !v.record.is_expired(now)) else {
            return Ok(None);
        };
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

    /// Ends a session: removes it from the store, revokes its refresh token
    /// when configured (a failing or missing revocation endpoint does not
    /// block the logout), and builds the provider's end-session URL.
    pub async fn logout(
        &self,
        id: &SessionId,
        post_logout_redirect_uri: Option<&str>,
    ) -> Result<LoggedOut, TokenError> {
        let session = self.inner.store.delete(id).await?;
        let Some(session) = session else {
            return Ok(LoggedOut::default());
        };
        let metadata = self.metadata_with_fallback().await.ok();
        let mut revoked = false;
        if let (Some(metadata), true) = (&metadata, self.inner.config.revoke_on_logout) {
            revoked = self.revoke_session_tokens(metadata, &session).await;
        }
        let state = random_token();
        let end_session_url = metadata.as_ref().and_then(|m| {
            let mut url = m.end_session_endpoint.clone()?;
            {
                let mut q = url.query_pairs_mut();
                if let Some(hint) = &session.tokens.id_token {
                    q.append_pair("id_token_hint", hint.secret());
                }
                q.append_pair("client_id", &self.inner.config.client_id);
                if let Some(uri) = post_logout_redirect_uri {
                    q.append_pair("post_logout_redirect_uri", uri);
                }
                q.append_pair("state", &state);
            }
            Some(url)
        });
        tracing::info!(sub = %session.sub, revoked, "signed out");
        Ok(LoggedOut {
            session: Some(session),
            state: end_session_url.is_some().then_some(state),
            end_session_url,
            revoked,
        })
    }

    /// Revokes a refresh token the engine received but will not keep (a
    /// session ended right after the provider answered a grant), best
    /// effort, in a spawned task: the answer to the request never waits for
    /// it. Does nothing when revocation is off or the provider has no
    /// revocation endpoint (in either discovery document or the
    /// configuration).
    pub(crate) fn revoke_refresh_token_in_background(&self, token: RefreshToken) {
        if !self.inner.config.revoke_on_logout {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            let Ok(metadata) = client.metadata_with_fallback().await else {
                return;
            };
            if metadata.revocation_endpoint.is_none() {
                return;
            }
            match client
                .inner
                .provider
                .revoke(&metadata, token.secret(), "refresh_token")
                .await
            {
                Ok(()) => tracing::debug!("revoked a refresh token the engine did not keep"),
                Err(err) => {
                    tracing::warn!(error = %err, "revoking a refresh token the engine did not keep failed");
                }
            }
        });
    }

    /// For the refresh engine: when it ends a session after the provider
    /// answered a grant with a new refresh token, that token is revoked
    /// ([`revoke_refresh_token_in_background`](Self::revoke_refresh_token_in_background))
    /// so that it does not outlive the session.
    pub(crate) fn revoke_abandoned(&self, token: Option<&RefreshToken>) {
        if let Some(token) = token {
            self.revoke_refresh_token_in_background(token.clone());
        }
    }

    /// Revokes a session's refresh token; `true` when the provider confirmed.
    pub(crate) async fn revoke_session_tokens(
        &self,
        metadata: &ProviderMetadata,
        session: &SessionRecord,
    ) -> bool {
        let Some(refresh) = &session.tokens.refresh_token else {
            return false;
        };
        if metadata.revocation_endpoint.is_none() {
            return false;
        }
        match self
            .inner
            .provider
            .revoke(metadata, refresh.secret(), "refresh_token")
            .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, "refresh token revocation failed; signed out locally");
                false
            }
        }
    }
}

/// What the token engine needs from the client.
impl user_token::Host for OidcClient {
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
    ) -> Result<TokenResponse, TokenError> {
        self.inner.provider.token_request(metadata, form).await
    }

    async fn signing_keys(&self, metadata: &ProviderMetadata) -> Arc<JwksCache> {
        self.jwks(metadata).await
    }

    fn id_token_validator(&self, metadata: &ProviderMetadata) -> IdTokenValidator {
        self.validator(metadata)
    }

    fn revoke_abandoned(&self, token: Option<&RefreshToken>) {
        OidcClient::revoke_abandoned(self, token);
    }
}

/// What the client credentials cache needs from the client.
impl client_credentials::CredentialsHost for OidcClient {
    fn client_tokens(&self) -> &ClientTokenCache {
        &self.inner.client_tokens
    }
}

/// An OAuth error code from untrusted input, reduced to the characters real
/// codes use (`[A-Za-z0-9_.-]`, at most 64), so that markup or control
/// characters are never reflected in an error message.
fn safe_error_code(raw: &str) -> String {
    let code: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    if code.is_empty() {
        "unknown_error".to_owned()
    } else {
        code
    }
}
