//! The user's access token, in one call:
//! [`TokenEngine::user_access_token`](crate::TokenEngine::user_access_token).
//!
//! # When a token is renewed
//!
//! Every token (the sign-in token and each resource token) records when its
//! token response arrived (`issued_at`). It is renewed from
//! `expires_at - min(refresh_margin, lifetime / 2)` on — never in the first
//! half of its life, so a provider issuing 5 s or 60 s tokens costs one grant
//! per token, not one per request (`decide.rs` has the table).
//!
//! # The refresh state machine
//!
//! ```text
//! request ─► decide::TokenState at `now`
//!   Fresh ───────────────────────────────────────────────► token (no I/O)
//!   Due ──── renewal failed < 5 s ago? ──yes─────────────► token
//!              │ no
//!              └─► start the flight unless one runs ─────► token, at once;
//!                                                          the flight runs on
//!   Expired, missing, or forced ─► join or start the flight, wait ─► its result
//!
//! the flight (flights.rs: one spawned task per session and token key; it
//! runs to completion whether or not anyone waits)
//!   take the session's lock (one renewal per session in this process)
//!   take the store lease (lease.rs) ── held elsewhere ─► every 20–40 ms
//!      │                              re-read (load_latest):
//!      │                                renewed there ─► that token
//!      │                                too long ─► old token if valid, else 503
//!      ▼
//!   RE-READ (load_latest) ── decide::under_lease ── Use ─► that token
//!      │ Renew { fallback }
//!      ▼
//!   no refresh token? ── fallback valid ─► fallback
//!      │               └ none ──────────► end session, 401
//!      ▼
//!   refresh::grant ── Renewed ─────────► write_back (fenced, retried) ─► new token
//!      │           ── DeadGrant ───────► re-read (load_latest): renewed elsewhere?
//!      │                                 yes ─► that token; no ─► end session, 401
//!      │           ── Refused,
//!      │              Transient ───────► fallback if still valid (and a 5 s
//!      │                                 pause), else the error (session kept)
//!      │           ── KeysUnreachable ─► store only the rotated refresh token,
//!      │                                 then as Transient
//!      │           ── IdTokenRejected ─► end session, 401
//!   release the lease
//! ```
//!
//! Requests that arrive after a flight finished start a new one whose first
//! step, the re-read under the lease, finds the new token: the old refresh
//! token is never spent twice, which is what one-time-use (rotating) refresh
//! tokens need. Every read that decides whether to spend the refresh token
//! uses [`SessionStore::load_latest`]
//! (past any read cache); the hot path uses `load`.
//!
//! # Where things are
//!
//! - `decide.rs`: pure decisions from a session, a request and the clock.
//! - `flights.rs`: the single flight, the per-session locks, the pause after
//!   a transient failure.
//! - `lease.rs`: the store lease, held by a guard that owns its renewer.
//! - `refresh.rs`: the grant and its typed outcome.
//! - `write_back.rs`: the fenced write of renewed tokens.
//!
//! This module depends on the client only through the `Host` trait that
//! [`TokenEngine`](crate::TokenEngine) implements.

mod decide;
mod flights;
mod lease;
mod refresh;
mod write_back;

use std::future::Future;
use std::sync::Arc;

use crate::config::OidcConfig;
use crate::discovery::ProviderMetadata;
use crate::error::{OAuthErrorCode, TokenError};
use crate::id_token::IdTokenValidator;
use crate::jwks::JwksCache;
use crate::metrics::{self, RefreshOutcome};
use crate::provider::TokenResponse;
use crate::secret::{AccessToken, RefreshToken};
use crate::session::SessionId;
use crate::store::{SessionStore, Versioned};

use decide::{Current, OnRequest, TokenState, UnderLease};
pub(crate) use flights::Flights;
use flights::{Flight, FlightKey, FlightResult};
use lease::Lease;
use refresh::GrantOutcome;
pub(crate) use write_back::user_tokens;

/// Parameters of a user access token request.
///
/// ```
/// use oidc_bff_tokens::UserTokenRequest;
///
/// let req = UserTokenRequest::default().resource("https://api.example.com").scope("read");
/// assert!(!req.force_renewal);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct UserTokenRequest {
    /// Renew even if the current token is still valid (for example after an
    /// API answered 401 to it).
    pub force_renewal: bool,
    /// Ask for a token for this resource (RFC 8707 `resource` parameter).
    pub resource: Option<String>,
    /// Ask for a token with these (down-scoped) scopes.
    pub scope: Option<String>,
}

impl UserTokenRequest {
    /// Renew even if the current token is still valid.
    #[must_use]
    pub fn force_renewal(mut self) -> Self {
        self.force_renewal = true;
        self
    }

    /// A token for a specific resource.
    #[must_use]
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// A token with specific scopes.
    #[must_use]
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The key of the session's token this request is about: `None` for the
    /// sign-in token, else a key into
    /// [`SessionRecord::resource_tokens`](crate::session::SessionRecord::resource_tokens).
    pub fn token_key(&self) -> Option<String> {
        match (&self.resource, &self.scope) {
            (None, None) => None,
            (r, s) => Some(format!(
                "{}|{}",
                r.as_deref().unwrap_or_default(),
                s.as_deref().unwrap_or_default()
            )),
        }
    }
}

/// What the engine needs from its host, the [`TokenEngine`](crate::TokenEngine):
/// settings, time, the store, the provider. Implemented in `client.rs`, so
/// that this module never depends on the client.
pub(crate) trait Host: Clone + Send + Sync + 'static {
    /// The settings.
    fn config(&self) -> &OidcConfig;
    /// Now, in Unix seconds.
    fn now(&self) -> u64;
    /// The session store.
    fn store(&self) -> &Arc<dyn SessionStore>;
    /// This process's flights.
    fn flights(&self) -> &Flights;
    /// A live session as the hot path reads it (`load`; expiry and idle
    /// checks applied).
    fn load_session(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Versioned>, TokenError>> + Send;
    /// A live session read past any cache (`load_latest`; expiry and idle
    /// checks applied): for every read that decides whether to spend the
    /// refresh token.
    fn load_latest_session(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Versioned>, TokenError>> + Send;
    /// The provider's metadata.
    fn metadata(&self) -> impl Future<Output = Result<Arc<ProviderMetadata>, TokenError>> + Send;
    /// POSTs a grant to the token endpoint, with a DPoP proof of `dpop`.
    fn token_request(
        &self,
        metadata: &ProviderMetadata,
        form: Vec<(&'static str, String)>,
        dpop: Option<&crate::dpop::DpopKey>,
    ) -> impl Future<Output = Result<TokenResponse, TokenError>> + Send;
    /// The provider's signing keys.
    fn signing_keys(
        &self,
        metadata: &ProviderMetadata,
    ) -> impl Future<Output = Arc<JwksCache>> + Send;
    /// An id_token validator for the provider.
    fn id_token_validator(&self, metadata: &ProviderMetadata) -> IdTokenValidator;
    /// Revokes, in the background and best effort, a refresh token the
    /// provider issued for a session that has ended.
    fn revoke_abandoned(&self, token: Option<&RefreshToken>);
}

/// The current user's access token; see
/// [`TokenEngine::user_access_token`](crate::TokenEngine::user_access_token).
pub(crate) async fn user_access_token<H: Host>(
    host: &H,
    session_id: &SessionId,
    loaded: Option<&Versioned>,
    request: &UserTokenRequest,
) -> Result<AccessToken, TokenError> {
    let fetched;
    let current = match loaded {
        Some(v) => v,
        None => {
            fetched = host
                .load_session(session_id)
                .await?
                .ok_or(TokenError::NotAuthenticated)?;
            &fetched
        }
    };
    let now = host.now();
    if current.record.is_expired(now) {
        return Err(TokenError::NotAuthenticated);
    }
    let key = request.token_key();
    let margin = host.config().refresh_margin.as_secs();
    let state = TokenState::of(&current.record, key.as_deref(), now, margin);
    let cooling = matches!(state, TokenState::Due(_))
        && !request.force_renewal
        && host
            .flights()
            .is_cooling(&(session_id.clone(), key.clone()), now);
    match decide::on_request(state, request.force_renewal, cooling) {
        OnRequest::Serve(token) => Ok(token),
        OnRequest::ServeAndRenew(token) => {
            // Nobody waits: the flight runs to completion in its own task.
            drop(start_flight(
                host,
                session_id,
                key,
                request,
                Some(token.clone()),
            ));
            Ok(token)
        }
        OnRequest::Wait { seen } => {
            metrics::refresh_wait(start_flight(host, session_id, key, request, seen)).await
        }
    }
}

/// Joins the running flight for this token, or starts one.
fn start_flight<H: Host>(
    host: &H,
    session_id: &SessionId,
    key: Option<String>,
    request: &UserTokenRequest,
    seen: Option<AccessToken>,
) -> Flight {
    host.flights()
        .join_or_start((session_id.clone(), key.clone()), || {
            let flight = Renewal {
                host: host.clone(),
                session_id: session_id.clone(),
                key,
                request: request.clone(),
                seen,
            };
            async move { flight.run().await }
        })
}

/// One renewal of one token of a session: the body of a flight.
struct Renewal<H> {
    host: H,
    session_id: SessionId,
    key: Option<String>,
    request: UserTokenRequest,
    /// The token the renewal was started over, if any.
    seen: Option<AccessToken>,
}

/// How waiting for the store lease ended.
enum LeaseWait {
    /// Taken; `inherited` when another holder had it first (and let it
    /// lapse: its grant may still be landing).
    Taken { lease: Lease, inherited: bool },
    /// The holder renewed meanwhile, or waiting took too long.
    Settled(FlightResult),
}

impl<H: Host> Renewal<H> {
    async fn run(self) -> FlightResult {
        let _lock = self.host.flights().lock_session(&self.session_id).await;
        let (lease, inherited) = match self.wait_for_lease().await? {
            LeaseWait::Taken { lease, inherited } => (lease, inherited),
            LeaseWait::Settled(result) => return result,
        };
        let result = self.renew(&lease, inherited).await;
        lease.release().await;
        result
    }

    fn flight_key(&self) -> FlightKey {
        (self.session_id.clone(), self.key.clone())
    }

    /// The token's state in `versioned` now, and what to do about it.
    fn under_lease(&self, versioned: &Versioned) -> UnderLease {
        let state = TokenState::of(
            &versioned.record,
            self.key.as_deref(),
            self.host.now(),
            self.host.config().refresh_margin.as_secs(),
        );
        decide::under_lease(state, self.request.force_renewal, self.seen.as_ref())
    }

    /// The session as it is in the store now (past any cache).
    async fn latest(&self) -> Result<Versioned, TokenError> {
        self.host
            .load_latest_session(&self.session_id)
            .await?
            .ok_or(TokenError::NotAuthenticated)
    }

    /// Takes the session's lease in the store (so that one instance of many
    /// renews), watching the store while another holder has it.
    async fn wait_for_lease(&self) -> Result<LeaseWait, TokenError> {
        let config = self.host.config();
        let ttl = config.refresh_lease;
        let deadline = tokio::time::Instant::now() + config.request_timeout + ttl * 2;
        let started = std::time::Instant::now();
        let mut inherited = false;
        loop {
            if let Some(lease) = Lease::try_take(self.host.store(), &self.session_id, ttl).await? {
                if inherited {
                    metrics::lease_wait(started);
                }
                return Ok(LeaseWait::Taken { lease, inherited });
            }
            inherited = true;
            // Another instance is renewing: see whether it is done.
            let fallback = match self.under_lease(&self.latest().await?) {
                UnderLease::Use(token) => {
                    metrics::lease_wait(started);
                    return Ok(LeaseWait::Settled(Ok(token)));
                }
                UnderLease::Renew { fallback } => fallback,
            };
            if tokio::time::Instant::now() >= deadline {
                metrics::lease_wait(started);
                let now = self.host.now();
                return Ok(LeaseWait::Settled(
                    fallback
                        .filter(|f| f.is_valid_at(now))
                        .map(|f| f.token)
                        .ok_or_else(|| {
                            TokenError::ProviderUnavailable(
                                "another instance is still refreshing".into(),
                            )
                        }),
                ));
            }
            tokio::time::sleep(poll_interval()).await;
        }
    }

    /// Under the lease: re-read, and renew if still needed.
    async fn renew(&self, lease: &Lease, inherited: bool) -> FlightResult {
        // Re-read: an earlier flight, or another instance, may have renewed.
        let current = self.latest().await?;
        let now = self.host.now();
        let fallback = match self.under_lease(&current) {
            UnderLease::Use(token) => return Ok(token),
            UnderLease::Renew { fallback } => fallback,
        };
        let Some(refresh_token) = current.record.tokens.refresh_token.clone() else {
            return match fallback {
                Some(fallback) => Ok(fallback.token),
                None => {
                    metrics::refresh(RefreshOutcome::NoRefreshToken, None);
                    self.end_session("no refresh token").await;
                    Err(TokenError::NoRefreshToken)
                }
            };
        };
        let started = std::time::Instant::now();
        let outcome = refresh::grant(
            &self.host,
            &current.record,
            &self.request,
            &refresh_token,
            lease,
        )
        .await;
        metrics::refresh(outcome.metric(), Some(started.elapsed()));
        match outcome {
            GrantOutcome::Renewed(response) => self.store_renewal(current, response, now).await,
            GrantOutcome::DeadGrant(error) => {
                self.after_dead_grant(&refresh_token, inherited, error, &current.record.sub)
                    .await
            }
            GrantOutcome::Refused(err) | GrantOutcome::Transient(err) => {
                self.transient_failure(fallback, err)
            }
            GrantOutcome::KeysUnreachable { rotated, cause } => {
                // The provider has already rotated the refresh token: store
                // that one so the grant survives, use none of the unverified
                // answer, and try again later.
                if let Some(rotated) = rotated {
                    write_back::write_back(&self.host, &self.session_id, current, |record| {
                        record.tokens.refresh_token = Some(rotated.clone());
                    })
                    .await?;
                }
                tracing::warn!(error = %cause, "refreshed id_token cannot be verified now");
                let err = TokenError::ProviderUnavailable(
                    "the provider's signing keys are out of reach".into(),
                );
                self.transient_failure(fallback, err)
            }
            GrantOutcome::IdTokenRejected { rotated, cause } => {
                tracing::warn!(error = %cause, "refreshed id_token rejected; ending the session");
                self.end_session("refreshed id_token rejected").await;
                // The provider answered the grant: its new refresh token must
                // not outlive the session.
                self.host.revoke_abandoned(rotated.as_ref());
                Err(TokenError::RefreshRejected {
                    error: OAuthErrorCode::Extension("invalid_id_token".into()),
                })
            }
        }
    }

    /// Stores the renewed tokens; the new access token is the answer.
    async fn store_renewal(
        &self,
        current: Versioned,
        response: TokenResponse,
        now: u64,
    ) -> FlightResult {
        let token = response.access_token.clone();
        let default_lifetime = self.host.config().default_token_lifetime;
        let key = self.key.as_deref();
        let written = write_back::write_back(&self.host, &self.session_id, current, |record| {
            write_back::apply_renewal(record, key, &response, now, default_lifetime);
        })
        .await;
        match written {
            Ok(()) => {
                self.host.flights().warm_up(&self.flight_key());
                Ok(token)
            }
            // The new token is valid whatever the store did; this request
            // can use it. (A session that vanished meanwhile stays gone.)
            Err(TokenError::Store(err)) => {
                tracing::error!(error = %err, "refreshed tokens could not be stored");
                Ok(token)
            }
            Err(err) => {
                // The session ended meanwhile: its new refresh token goes too.
                self.host.revoke_abandoned(response.refresh_token.as_ref());
                Err(err)
            }
        }
    }

    /// The provider refused the refresh token. Another instance may have
    /// rotated it meanwhile (a lost lease): believe the store before ending
    /// the session. If the lease was taken over from a holder that let it
    /// lapse, that holder's grant may have won and its write still be on
    /// the way: wait for it as long as a grant may take.
    async fn after_dead_grant(
        &self,
        spent: &RefreshToken,
        inherited: bool,
        error: OAuthErrorCode,
        sub: &str,
    ) -> FlightResult {
        let wait_until =
            inherited.then(|| tokio::time::Instant::now() + self.host.config().request_timeout);
        loop {
            if let Some(latest) = self.host.load_latest_session(&self.session_id).await?
                && latest.record.tokens.refresh_token.as_ref() != Some(spent)
                && let TokenState::Fresh(c) | TokenState::Due(c) = TokenState::of(
                    &latest.record,
                    self.key.as_deref(),
                    self.host.now(),
                    self.host.config().refresh_margin.as_secs(),
                )
            {
                return Ok(c.token);
            }
            match wait_until {
                Some(until) if tokio::time::Instant::now() < until => {
                    tokio::time::sleep(poll_interval()).await;
                }
                _ => break,
            }
        }
        tracing::info!(%sub, %error, "refresh token rejected; ending the session");
        self.end_session("refresh rejected").await;
        Err(TokenError::RefreshRejected { error })
    }

    /// A failure that leaves the grant alive: the still-valid token if there
    /// is one (and no new attempt for a few seconds), else the error (the
    /// session is kept).
    fn transient_failure(&self, fallback: Option<Current>, err: TokenError) -> FlightResult {
        tracing::warn!(error = %err, "token refresh failed");
        let now = self.host.now();
        match fallback.filter(|f| f.is_valid_at(now)) {
            Some(fallback) => {
                self.host.flights().cool_down(self.flight_key(), now);
                Ok(fallback.token)
            }
            None => Err(err),
        }
    }

    /// Ends a dead session (best effort: a store failure is logged).
    async fn end_session(&self, why: &'static str) {
        end_session(self.host.store(), &self.session_id, why).await;
    }
}

/// Ends a session (best effort: a store failure is logged).
pub(crate) async fn end_session(
    store: &Arc<dyn SessionStore>,
    session_id: &SessionId,
    why: &'static str,
) {
    if let Err(err) = store.delete(session_id).await {
        tracing::warn!(error = %err, why, "could not end the session");
    }
}

/// How long a waiter sleeps before looking at the store again (20–40 ms).
fn poll_interval() -> std::time::Duration {
    use rand::Rng as _;
    std::time::Duration::from_millis(rand::rng().random_range(20..40))
}
