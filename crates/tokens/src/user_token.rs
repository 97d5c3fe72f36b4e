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
use std::sync::{Arc, Mutex};

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

/// In-flight refreshes and per-session refresh locks.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<(SessionId, Option<String>), FlightHandle>>,
    session_locks: DashMap<SessionId, Arc<tokio::sync::Mutex<()>>>,
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
        while !store.try_lease(session_id, &owner, ttl).await? {
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
        // Keep the lease alive for as long as the refresh takes.
        let renewer = {
            let store = store.clone();
            let id = session_id.clone();
            let owner = owner.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    match store.renew_lease(&id, &owner, ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("refresh lease lost while refreshing");
                            break;
                        }
                        Err(err) => tracing::warn!(error = %err, "refresh lease renewal failed"),
                    }
                }
            })
        };
        let result = self.refresh_locked(session_id, request, seen).await;
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

    async fn refresh_locked(
        &self,
        session_id: &SessionId,
        request: &UserTokenRequest,
        seen: Option<&AccessToken>,
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
            Err(err) => return fallback.ok_or(err),
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
        let response = match self.inner.provider.token_request(&metadata, form).await {
            Ok(response) => response,
            Err(TokenError::Provider { error, .. }) if is_dead_grant(&error) => {
                // Another instance may have rotated the token meanwhile (a lost
                // lease): believe the store before ending the session.
                if let Some(latest) = self.load_session(session_id).await?
                    && latest.record.tokens.refresh_token.as_ref() != Some(&refresh_token)
                    && let Decision::Use(token) = self.decide(&latest.record, request, None)
                {
                    return Ok(token);
                }
                tracing::info!(sub = %current.record.sub, %error, "refresh token rejected; ending the session");
                self.end_session(session_id, "refresh rejected").await;
                return Err(TokenError::RefreshRejected { error });
            }
            Err(err) => {
                tracing::warn!(error = %err, "token refresh failed");
                return fallback.ok_or(err);
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
            if let Err(err) = checked {
                tracing::warn!(error = %err, "refreshed id_token rejected; ending the session");
                self.end_session(session_id, "refreshed id_token rejected")
                    .await;
                return Err(TokenError::RefreshRejected {
                    error: "invalid_id_token".into(),
                });
            }
        }

        let token = response.access_token.clone();
        self.store_refreshed(session_id, current, request.token_key(), response, now)
            .await?;
        Ok(token)
    }

    /// Writes refreshed tokens back with a versioned write, merging into the
    /// latest record when something else changed the session meanwhile.
    async fn store_refreshed(
        &self,
        session_id: &SessionId,
        mut current: Versioned,
        key: Option<String>,
        response: crate::provider::TokenResponse,
        now: u64,
    ) -> Result<(), TokenError> {
        for _ in 0..5 {
            let mut record = SessionRecord::clone(&current.record);
            let response = response.clone();
            match &key {
                None => record.tokens = self.user_tokens(response, Some(&record.tokens), now),
                Some(key) => {
                    let lifetime = response
                        .expires_in
                        .unwrap_or(self.inner.config.default_token_lifetime.as_secs());
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
            }
            match self
                .inner
                .store
                .update(session_id, record, current.version)
                .await?
            {
                UpdateOutcome::Updated(_) => {
                    tracing::debug!("tokens refreshed and stored");
                    return Ok(());
                }
                UpdateOutcome::Missing => return Err(TokenError::NotAuthenticated),
                UpdateOutcome::Conflict => {
                    let latest = self
                        .inner
                        .store
                        .load(session_id)
                        .await?
                        .ok_or(TokenError::NotAuthenticated)?;
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
        Err(TokenError::Store(crate::store::StoreError::Unavailable(
            "the session kept changing during the token update".into(),
        )))
    }

    /// Ends a dead session (best effort: a store failure is logged).
    pub(crate) async fn end_session(&self, session_id: &SessionId, why: &'static str) {
        if let Err(err) = self.inner.store.delete(session_id).await {
            tracing::warn!(error = %err, why, "could not end the session");
        }
    }
}

/// OAuth errors after which the refresh token will never work again.
fn is_dead_grant(error: &str) -> bool {
    matches!(
        error,
        "invalid_grant" | "invalid_token" | "unauthorized_client" | "http_400" | "http_401"
    )
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
