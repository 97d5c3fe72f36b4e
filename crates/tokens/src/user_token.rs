//! The user's access token, in one call: [`OidcClient::user_access_token`].
//!
//! # The refresh state machine
//!
//! ```text
//!            ┌──────────── token valid beyond the margin ───────────┐
//! request ──►│ FRESH? ──yes──────────────────────────────────────────┼──► token (no I/O)
//!            └──no──┐                                                │
//!                   ▼                                                │
//!            join or start the flight for (session, resource, scope) │
//!                   │  (one spawned task per key; callers only wait, │
//!                   │   so a caller that goes away cannot cut a      │
//!                   │   refresh in half)                             │
//!                   ▼                                                │
//!            lock the session's refresh token (one user per session) │
//!                   ▼                                                │
//!            RE-READ the store ──fresh now──────────────────────────►│ token
//!                   │ still stale                                    │
//!                   ▼                                                │
//!            no refresh token? ── still valid ─► old token           │
//!                   │             expired ─────► end session, 401    │
//!                   ▼                                                │
//!            refresh grant ── invalid_grant ──► end session, 401     │
//!                   │          timeout/5xx ───► old token if valid,  │
//!                   │                           else 503 (session kept)
//!                   ▼ ok                                             │
//!            validate id_token (OIDC Core 12.2) ── mismatch ─► end, 401
//!                   ▼                                                │
//!            versioned write (retry on conflict) ──────────────────► token
//! ```
//!
//! Requests that arrive after a flight finished start a new one whose first
//! step, the re-read, finds the new token: the old refresh token is never
//! spent twice, which is what one-time-use (rotating) refresh tokens need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::client::OidcClient;
use crate::error::TokenError;
use crate::id_token::{IdTokenClaims, IdTokenExpectations};
use crate::secret::AccessToken;
use crate::session::{ResourceToken, SessionId, SessionRecord};
use crate::store::{UpdateOutcome, Versioned};

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
    /// sign-in token, else a key into [`SessionRecord::resource_tokens`].
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

type FlightResult = Result<AccessToken, TokenError>;
type Flight = Shared<BoxFuture<'static, FlightResult>>;
type FlightKey = (SessionId, Option<String>);

/// How long a token that is still valid is served without a new refresh
/// attempt after a renewal failed transiently (provider down or slow, JWKS
/// unreachable). Without it, every request in the refresh margin would wait
/// for the provider's timeout again while it is down.
const RETRY_AFTER_TRANSIENT_FAILURE_SECS: u64 = 5;

/// How often a write of refreshed tokens is retried when the store fails:
/// the provider has already rotated the refresh token, so giving up early
/// would lose the only one that still works.
const WRITE_BACK_RETRIES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(800),
];

/// In-flight refreshes, per-session refresh locks, and the sessions whose
/// last renewal failed transiently.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<FlightKey, FlightHandle>>,
    session_locks: DashMap<SessionId, Arc<tokio::sync::Mutex<()>>>,
    /// Until when (Unix seconds) a still-valid token is served without a
    /// new attempt.
    cooling: DashMap<FlightKey, u64>,
}

impl Flights {
    /// Whether a renewal of this token failed transiently a moment ago.
    fn is_cooling(&self, key: &FlightKey, now: u64) -> bool {
        match self.cooling.get(key).map(|until| *until) {
            Some(until) if now < until => true,
            Some(_) => {
                self.cooling.remove_if(key, |_, until| now >= *until);
                false
            }
            None => false,
        }
    }

    fn cool_down(&self, key: FlightKey, now: u64) {
        // Entries of sessions that never come back are dropped once the map
        // grows; a live entry lasts a few seconds anyway.
        if self.cooling.len() >= 10_000 {
            self.cooling.retain(|_, until| now < *until);
        }
        self.cooling
            .insert(key, now.saturating_add(RETRY_AFTER_TRANSIENT_FAILURE_SECS));
    }
}

struct FlightHandle(Flight);

/// Removes a flight from the map when its task ends.
struct Landed {
    client: OidcClient,
    key: (SessionId, Option<String>),
}

impl Drop for Landed {
    fn drop(&mut self) {
        self.client
            .inner
            .flights
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.key);
    }
}

impl std::fmt::Debug for FlightHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Flight")
    }
}

/// What to do with a session's token.
enum Decision {
    /// Use this token.
    Use(AccessToken),
    /// Renew; `fallback` is still valid if renewal fails transiently.
    Refresh { fallback: Option<AccessToken> },
}

/// How long a waiter sleeps before looking at the store again (20–40 ms).
fn poll_interval() -> std::time::Duration {
    use rand::Rng as _;
    std::time::Duration::from_millis(rand::rng().random_range(20..40))
}

/// What a token lookup in a session found.
enum Lookup {
    /// Valid beyond the refresh margin.
    Fresh(AccessToken),
    /// Still valid, but within the margin: renew, yet usable if renewal fails.
    Expiring(AccessToken),
    /// Expired or absent.
    Stale,
}

fn lookup(record: &SessionRecord, key: Option<&str>, now: u64, margin: u64) -> Lookup {
    let (token, expires_at) = match key {
        None => (&record.tokens.access_token, record.tokens.expires_at),
        Some(key) => match record.resource_tokens.get(key) {
            Some(t) => (&t.access_token, t.expires_at),
            None => return Lookup::Stale,
        },
    };
    if now.saturating_add(margin) < expires_at {
        Lookup::Fresh(token.clone())
    } else if now < expires_at {
        Lookup::Expiring(token.clone())
    } else {
        Lookup::Stale
    }
}

impl OidcClient {
    /// The current user's access token: valid, refreshed first if it expires
    /// within the refresh margin.
    ///
    /// `loaded` is the session as already read in this request, if any (saves
    /// a store read). The hot path — a valid token in the session — costs no
    /// network call and no write. Concurrent callers of one session share a
    /// single refresh.
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
        let fetched;
        let current = match loaded {
            Some(v) => v,
            None => {
                fetched = self
                    .load_session(session_id)
                    .await?
                    .ok_or(TokenError::NotAuthenticated)?;
                &fetched
            }
        };
        let now = self.inner.clock.now_unix();
        if current.record.is_expired(now) {
            return Err(TokenError::NotAuthenticated);
        }
        let key = request.token_key();
        let margin = self.inner.config.refresh_margin.as_secs();
        let seen = match lookup(&current.record, key.as_deref(), now, margin) {
            Lookup::Fresh(token) if !request.force_renewal => return Ok(token),
            // Renewal failed transiently moments ago: the token still works,
            // so serve it rather than wait for the provider again.
            Lookup::Expiring(token)
                if !request.force_renewal
                    && self
                        .inner
                        .flights
                        .is_cooling(&(session_id.clone(), key.clone()), now) =>
            {
                return Ok(token);
            }
            Lookup::Fresh(token) | Lookup::Expiring(token) => Some(token),
            Lookup::Stale => None,
        };
        self.join_flight(session_id, key, request, seen).await
    }

    async fn join_flight(
        &self,
        session_id: &SessionId,
        key: Option<String>,
        request: &UserTokenRequest,
        seen: Option<AccessToken>,
    ) -> Result<AccessToken, TokenError> {
        let flight_key = (session_id.clone(), key);
        let flight = {
            let mut running = self
                .inner
                .flights
                .running
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(FlightHandle(flight)) = running.get(&flight_key) {
                flight.clone()
            } else {
                let client = self.clone();
                let id = session_id.clone();
                let request = request.clone();
                let task_key = flight_key.clone();
                let handle = tokio::spawn(async move {
                    // Leaves the map when the task ends, even by a panic, so a
                    // failed flight is never served to later callers.
                    let _landed = Landed {
                        client: client.clone(),
                        key: task_key,
                    };
                    client.refresh_flight(&id, &request, seen).await
                });
                let flight: Flight = async move {
                    handle.await.unwrap_or_else(|_| {
                        Err(TokenError::ProviderUnavailable(
                            "the refresh task failed".into(),
                        ))
                    })
                }
                .boxed()
                .shared();
                running.insert(flight_key, FlightHandle(flight.clone()));
                flight
            }
        };
        flight.await
    }

    /// One refresh, run to completion in its own task.
    async fn refresh_flight(
        &self,
        session_id: &SessionId,
        request: &UserTokenRequest,
        seen: Option<AccessToken>,
    ) -> Result<AccessToken, TokenError> {
        let lock = self
            .inner
            .flights
            .session_locks
            .entry(session_id.clone())
            .or_default()
            .clone();
        let result = {
            let _guard = lock.lock().await;
            self.refresh_leased(session_id, request, seen.as_ref())
                .await
        };
        drop(lock);
        self.inner
            .flights
            .session_locks
            .remove_if(session_id, |_, l| Arc::strong_count(l) == 1);
        result
    }

    /// Takes the session's refresh lease in the store (so that one instance
    /// of many refreshes), waiting for another holder to finish first.
    async fn refresh_leased(
        &self,
        session_id: &SessionId,
        request: &UserTokenRequest,
        seen: Option<&AccessToken>,
    ) -> Result<AccessToken, TokenError> {
        let store = &self.inner.store;
        let ttl = self.inner.config.refresh_lease;
        let owner = crate::session::random_token();
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout + ttl * 2;
        // Set when the lease was held by someone else first: if we get it,
        // that holder let it lapse and may still be finishing its grant.
        let mut inherited = false;
        while !store.try_lease(session_id, &owner, ttl).await? {
            inherited = true;
            // Another instance is refreshing: wait, then see whether it is done.
            let current = self
                .load_session(session_id)
                .await?
                .ok_or(TokenError::NotAuthenticated)?;
            let fallback = match self.decide(&current.record, request, seen) {
                Decision::Use(token) => return Ok(token),
                Decision::Refresh { fallback } => fallback,
            };
            if tokio::time::Instant::now() >= deadline {
                return fallback.ok_or_else(|| {
                    TokenError::ProviderUnavailable("another instance is still refreshing".into())
                });
            }
            tokio::time::sleep(poll_interval()).await;
        }
        // Keep the lease alive for as long as the refresh takes. `held`
        // turns false once the lease may have passed to another instance;
        // the grant is not sent after that.
        let held = Arc::new(AtomicBool::new(true));
        let renewer = {
            let store = store.clone();
            let id = session_id.clone();
            let owner = owner.clone();
            let held = held.clone();
            tokio::spawn(async move {
                let mut renewed_at = tokio::time::Instant::now();
                let mut wait = ttl / 3;
                loop {
                    tokio::time::sleep(wait).await;
                    match store.renew_lease(&id, &owner, ttl).await {
                        Ok(true) => {
                            renewed_at = tokio::time::Instant::now();
                            wait = ttl / 3;
                        }
                        Ok(false) => {
                            held.store(false, Ordering::Release);
                            tracing::warn!("refresh lease lost while refreshing");
                            break;
                        }
                        Err(err) => {
                            if renewed_at.elapsed() >= ttl {
                                held.store(false, Ordering::Release);
                                tracing::warn!(error = %err, "refresh lease expired: renewals failed");
                                break;
                            }
                            // Try again soon: the lease must not run out.
                            tracing::warn!(error = %err, "refresh lease renewal failed; retrying");
                            wait = (ttl / 10).max(Duration::from_millis(20));
                        }
                    }
                }
            })
        };
        let result = self
            .refresh_locked(session_id, request, seen, &held, inherited)
            .await;
        renewer.abort();
        if let Err(err) = store.release_lease(session_id, &owner).await {
            tracing::warn!(error = %err, "could not release the refresh lease; it will expire");
        }
        result
    }

    /// Whether the session's token can be used as is, or must be renewed.
    fn decide(
        &self,
        record: &SessionRecord,
        request: &UserTokenRequest,
        seen: Option<&AccessToken>,
    ) -> Decision {
        let now = self.inner.clock.now_unix();
        let margin = self.inner.config.refresh_margin.as_secs();
        match lookup(record, request.token_key().as_deref(), now, margin) {
            Lookup::Fresh(token) => {
                // A forced renewal is satisfied by any token other than the one
                // the caller saw (someone renewed in the meantime).
                if !request.force_renewal || seen != Some(&token) {
                    Decision::Use(token)
                } else {
                    Decision::Refresh {
                        fallback: Some(token),
                    }
                }
            }
            Lookup::Expiring(token) => Decision::Refresh {
                fallback: Some(token),
            },
            Lookup::Stale => Decision::Refresh { fallback: None },
        }
    }

    /// A transient failure: the still-valid token if there is one (and no new
    /// attempt for a few seconds), else the error (503, session kept).
    fn transient_failure(
        &self,
        session_id: &SessionId,
        request: &UserTokenRequest,
        fallback: Option<AccessToken>,
        err: TokenError,
    ) -> Result<AccessToken, TokenError> {
        tracing::warn!(error = %err, "token refresh failed");
        match fallback {
            Some(token) => {
                self.inner.flights.cool_down(
                    (session_id.clone(), request.token_key()),
                    self.inner.clock.now_unix(),
                );
                Ok(token)
            }
            None => Err(err),
        }
    }

    async fn refresh_locked(
        &self,
        session_id: &SessionId,
        request: &UserTokenRequest,
        seen: Option<&AccessToken>,
        lease_held: &AtomicBool,
        inherited: bool,
    ) -> Result<AccessToken, TokenError> {
        // Re-read: an earlier flight, or another instance, may have renewed.
        let current = self
            .load_session(session_id)
            .await?
            .ok_or(TokenError::NotAuthenticated)?;
        let now = self.inner.clock.now_unix();
        let fallback = match self.decide(&current.record, request, seen) {
            Decision::Use(token) => return Ok(token),
            Decision::Refresh { fallback } => fallback,
        };

        let Some(refresh_token) = current.record.tokens.refresh_token.clone() else {
            return match fallback {
                Some(token) => Ok(token),
                None => {
                    self.end_session(session_id, "no refresh token").await;
                    Err(TokenError::NoRefreshToken)
                }
            };
        };

        let metadata = match self.metadata().await {
            Ok(m) => m,
            Err(err) => return self.transient_failure(session_id, request, fallback, err),
        };
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.secret().to_owned()),
        ];
        if let Some(scope) = &request.scope {
            form.push(("scope", scope.clone()));
        }
        if let Some(resource) = &request.resource {
            form.push(("resource", resource.clone()));
        }
        if !lease_held.load(Ordering::Acquire) {
            // Another instance may hold the lease now: spending the refresh
            // token here could use it twice.
            let err = TokenError::ProviderUnavailable("the refresh lease was lost".into());
            return self.transient_failure(session_id, request, fallback, err);
        }
        let response = match self.inner.provider.token_request(&metadata, form).await {
            Ok(response) => response,
            Err(TokenError::Provider { error, .. }) if is_dead_grant(&error) => {
                // Another instance may have rotated the token meanwhile (a lost
                // lease): believe the store before ending the session. If we
                // took the lease over from a holder that let it lapse, its
                // grant may have won and its write still be on the way: wait
                // for it as long as a grant may take.
                let wait_until = inherited
                    .then(|| tokio::time::Instant::now() + self.inner.config.request_timeout);
                loop {
                    if let Some(latest) = self.load_session(session_id).await?
                        && latest.record.tokens.refresh_token.as_ref() != Some(&refresh_token)
                        && let Decision::Use(token) = self.decide(&latest.record, request, None)
                    {
                        return Ok(token);
                    }
                    match wait_until {
                        Some(until) if tokio::time::Instant::now() < until => {
                            tokio::time::sleep(poll_interval()).await;
                        }
                        _ => break,
                    }
                }
                tracing::info!(sub = %current.record.sub, %error, "refresh token rejected; ending the session");
                self.end_session(session_id, "refresh rejected").await;
                return Err(TokenError::RefreshRejected { error });
            }
            Err(err) => {
                // A 4xx without an OAuth error body (a proxy's or firewall's
                // page) or an unreadable 200 says nothing about the grant:
                // transient, the session is kept.
                let err = match err {
                    TokenError::Provider { error, .. } if error.starts_with("http_") => {
                        TokenError::ProviderUnavailable(format!(
                            "the token endpoint answered {}",
                            error.trim_start_matches("http_")
                        ))
                    }
                    TokenError::InvalidResponse(why) => TokenError::ProviderUnavailable(why),
                    other => other,
                };
                return self.transient_failure(session_id, request, fallback, err);
            }
        };

        // A returned id_token must be valid and about the same user (OIDC Core 12.2).
        if let Some(id_token) = &response.id_token {
            let checked = async {
                let jwks = self.jwks(&metadata).await;
                let validator = self.validator(&metadata);
                let claims = validator
                    .validate(
                        id_token,
                        &jwks,
                        IdTokenExpectations {
                            nonce: None,
                            access_token: Some(&response.access_token),
                        },
                    )
                    .await?;
                let original = original_claims(&current.record);
                validator.validate_refreshed(&claims, &original)
            }
            .await;
            match checked {
                Ok(()) => {}
                Err(err) if cannot_verify_now(&err) => {
                    // The provider's keys are out of reach (or it rotated to a
                    // key we cannot fetch yet). The provider has already
                    // rotated the refresh token: store that one so the grant
                    // survives, use none of the unverified answer, and try
                    // again later.
                    if let Some(rotated) = response.refresh_token {
                        self.write_back(session_id, current, |record| {
                            record.tokens.refresh_token = Some(rotated.clone());
                        })
                        .await?;
                    }
                    tracing::warn!(error = %err, "refreshed id_token cannot be verified now");
                    let err = TokenError::ProviderUnavailable(
                        "the provider's signing keys are out of reach".into(),
                    );
                    return self.transient_failure(session_id, request, fallback, err);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "refreshed id_token rejected; ending the session");
                    self.end_session(session_id, "refreshed id_token rejected")
                        .await;
                    self.revoke_abandoned(response.refresh_token.as_ref());
                    return Err(TokenError::RefreshRejected {
                        error: "invalid_id_token".into(),
                    });
                }
            }
        }

        let token = response.access_token.clone();
        let key = request.token_key();
        let lifetime_default = self.inner.config.default_token_lifetime.as_secs();
        let written = self
            .write_back(session_id, current, |record| match &key {
                None => {
                    record.tokens = self.user_tokens(response.clone(), Some(&record.tokens), now);
                }
                Some(key) => {
                    let response = response.clone();
                    let lifetime = response.expires_in.unwrap_or(lifetime_default);
                    if let Some(rotated) = response.refresh_token {
                        record.tokens.refresh_token = Some(rotated);
                    }
                    record.tokens.refreshed_at = Some(now);
                    record.tokens.refresh_count += 1;
                    record.resource_tokens.insert(
                        key.clone(),
                        ResourceToken {
                            access_token: response.access_token,
                            expires_at: now.saturating_add(lifetime),
                            token_type: response.token_type,
                        },
                    );
                }
            })
            .await;
        match written {
            Ok(()) => {
                self.inner
                    .flights
                    .cooling
                    .remove(&(session_id.clone(), key));
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
                self.revoke_abandoned(response.refresh_token.as_ref());
                Err(err)
            }
        }
    }

    /// Writes a change to the session's tokens with a versioned write:
    /// `apply` runs on the latest record, again after a conflict with a
    /// change that left the tokens alone. A conflict with newer tokens keeps
    /// those (a slow writer never rolls them back). Store failures are
    /// retried a few times.
    async fn write_back(
        &self,
        session_id: &SessionId,
        mut current: Versioned,
        apply: impl Fn(&mut SessionRecord),
    ) -> Result<(), TokenError> {
        let mut retries = WRITE_BACK_RETRIES.iter();
        let mut conflicts = 0;
        loop {
            let mut record = SessionRecord::clone(&current.record);
            apply(&mut record);
            let outcome = match self
                .inner
                .store
                .update(session_id, record, current.version)
                .await
            {
                Ok(outcome) => outcome,
                Err(err) => match retries.next() {
                    Some(pause) => {
                        tracing::warn!(error = %err, "storing refreshed tokens failed; retrying");
                        tokio::time::sleep(*pause).await;
                        continue;
                    }
                    None => return Err(err.into()),
                },
            };
            match outcome {
                UpdateOutcome::Updated(_) => {
                    tracing::debug!("tokens refreshed and stored");
                    return Ok(());
                }
                UpdateOutcome::Missing => return Err(TokenError::NotAuthenticated),
                UpdateOutcome::Conflict => {
                    conflicts += 1;
                    if conflicts > 5 {
                        return Err(TokenError::Store(crate::store::StoreError::Unavailable(
                            "the session kept changing during the token update".into(),
                        )));
                    }
                    let latest = match self.inner.store.load(session_id).await {
                        Ok(Some(latest)) => latest,
                        Ok(None) => return Err(TokenError::NotAuthenticated),
                        Err(err) => return Err(err.into()),
                    };
                    if latest.record.tokens.refresh_token != current.record.tokens.refresh_token {
                        // Someone stored newer tokens: never overwrite them
                        // with ours. Our access token is still valid to use.
                        tracing::warn!("tokens changed during the refresh; kept the newer ones");
                        return Ok(());
                    }
                    // Something else changed (not the tokens): merge and retry.
                    current = latest;
                }
            }
        }
    }

    /// Ends a dead session (best effort: a store failure is logged).
    pub(crate) async fn end_session(&self, session_id: &SessionId, why: &'static str) {
        if let Err(err) = self.inner.store.delete(session_id).await {
            tracing::warn!(error = %err, why, "could not end the session");
        }
    }
}

/// OAuth errors after which the refresh token will never work again. A 4xx
/// without an OAuth error body is not one of them: it may come from a proxy
/// in front of the provider.
fn is_dead_grant(error: &str) -> bool {
    matches!(
        error,
        "invalid_grant" | "invalid_token" | "unauthorized_client"
    )
}

/// Whether a refreshed id_token could not be checked *now*, as opposed to
/// being wrong: the JWKS is unreachable, or names no key for the token
/// because a refetch failed or is rate limited. The token came straight from
/// the token endpoint, so this is a provider availability problem.
fn cannot_verify_now(err: &TokenError) -> bool {
    err.is_transient()
        || matches!(err, TokenError::InvalidIdToken(why) if why.starts_with("no matching key"))
}

/// The original id_token's identity claims, as kept in the session.
fn original_claims(record: &SessionRecord) -> IdTokenClaims {
    let get_str = |k: &str| {
        record
            .claims
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let get_u64 = |k: &str| record.claims.get(k).and_then(|v| v.as_u64());
    let aud = match record.claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    IdTokenClaims {
        iss: get_str("iss").unwrap_or_default(),
        sub: record.sub.clone(),
        aud,
        exp: get_u64("exp").unwrap_or_default(),
        iat: get_u64("iat").unwrap_or_default(),
        nonce: None,
        azp: get_str("azp"),
        sid: record.sid.clone(),
        auth_time: get_u64("auth_time"),
        at_hash: None,
        all: record.claims.clone(),
    }
}
