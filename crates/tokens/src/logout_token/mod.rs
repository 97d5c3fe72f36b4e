//! OpenID Connect Back-Channel Logout: validation of logout tokens and the
//! end of the sessions they name.
//!
//! When a user signs out at the provider (or the provider ends their session
//! for any other reason), the provider POSTs a *logout token* — a signed JWT —
//! to the BFF's back-channel endpoint. [`TokenEngine::backchannel_logout`]
//! validates it and ends the matching server-side sessions:
//!
//! ```no_run
//! # async fn demo(client: oidc_bff_tokens::TokenEngine, logout_token: &str) -> Result<(), oidc_bff_tokens::TokenError> {
//! let done = client.backchannel_logout(logout_token).await?;
//! println!("ended {} session(s)", done.ended.len());
//! # Ok(()) }
//! ```
//!
//! [`LogoutTokenValidator::validate`] performs the checks of OpenID Connect
//! Back-Channel Logout 1.0 §2.6, in this order (the first failure is reported
//! as [`TokenError::InvalidIdToken`] with a short reason that never contains
//! the token):
//!
//! 1. **Shape, algorithm and signature**, exactly as for id_tokens (see
//!    [`id_token`](crate::id_token)): a compact JWS of at most 64 KiB, `alg`
//!    never `none` nor `HS*` and one of the allowed asymmetric algorithms, no
//!    `crit`, signature verified with a key of the provider's JWKS (an
//!    unknown `kid` triggers one rate-limited refetch).
//! 2. **`typ`**, when present, is `logout+jwt` or `JWT` (so an access token
//!    typed `at+jwt` is refused).
//! 3. **`iss`** equals the provider's issuer exactly.
//! 4. **`aud`** (a string or an array) contains our `client_id` and nothing
//!    else.
//! 5. **`iat`** is present, not in the future (beyond the leeway), and not
//!    older than the maximum age (default 10 minutes) — so that the replay
//!    cache below only needs to remember a token that long.
//! 6. **`exp`**, when present, has not passed (beyond the leeway).
//! 7. **`events`** is a JSON object with the member
//!    `http://schemas.openid.net/event/backchannel-logout`, whose value is a
//!    JSON object.
//! 8. **`sub` or `sid`** (or both) is present, as a non-empty string.
//! 9. **No `nonce`**: its presence marks an id_token, which must not be usable
//!    as a logout token.
//! 10. **`jti`** is present, a non-empty string of at most 256 characters.
//!
//! [`TokenEngine::backchannel_logout`] then refuses a `jti` already seen
//! (replay; the cache lives in the [`SessionStore`](crate::SessionStore), so
//! it is shared between instances) and ends the sessions named below. The
//! `jti` of an invalid token is never cached, and when ending the sessions
//! fails (the store is unavailable: 503) the `jti` is forgotten again, so
//! that the provider's retry of the delivery is handled rather than refused
//! as a replay. The sessions that end:
//!
//! * with `sid` (and [`backchannel_logout_all_sessions`] off): the sessions
//!   that carry this provider session id — and, if `sub` is present too, the
//!   same subject;
//! * otherwise (no `sid`, or the option on): every session of `sub`.
//!
//! Each ended session's refresh token is revoked at the provider when
//! [`revoke_on_logout`] is on (best effort, as at logout). An invalid token
//! leaves every session untouched.
//!
//! [`backchannel_logout_all_sessions`]: crate::OidcConfig::backchannel_logout_all_sessions
//! [`revoke_on_logout`]: crate::OidcConfig::revoke_on_logout

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::clock::SharedClock;
use crate::engine::TokenEngine;
use crate::error::TokenError;
use crate::id_token::{
    default_algs, numeric_date, optional_string, required_date, required_string, verify_jws,
};
use crate::jwks::JwksCache;
use crate::session::SessionId;

/// The `events` member that marks a back-channel logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Default tolerated clock skew, in seconds.
const DEFAULT_LEEWAY: u64 = 60;

/// Default maximum age of a logout token (by its `iat`), in seconds.
const DEFAULT_MAX_AGE: u64 = 600;

/// Longest `jti` accepted.
const MAX_JTI_LEN: usize = 256;

/// Key prefix of the replay cache in the session store.
const JTI_KEY_PREFIX: &str = "logout-jti:";

fn invalid(reason: &str) -> TokenError {
    TokenError::InvalidIdToken(format!("logout token: {reason}").into())
}

/// The claims of a validated logout token.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LogoutTokenClaims {
    /// Issuer.
    pub iss: String,
    /// The subject whose sessions end, if named.
    pub sub: Option<String>,
    /// The provider session that ended, if named.
    pub sid: Option<String>,
    /// Audiences (just our client id).
    pub aud: Vec<String>,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, when the provider set one.
    pub exp: Option<u64>,
    /// The token's unique id (replay detection).
    pub jti: String,
    /// Every claim as received.
    pub all: Map<String, Value>,
}

/// Validates back-channel logout tokens of one provider for one client.
///
/// See the [module documentation](self) for the list of checks.
#[derive(Debug, Clone)]
pub struct LogoutTokenValidator {
    issuer: String,
    client_id: String,
    clock: SharedClock,
    leeway: u64,
    max_age: u64,
    allowed_algs: Vec<Algorithm>,
}

impl LogoutTokenValidator {
    /// A validator for logout tokens of `issuer` (the provider's discovery
    /// `issuer`) addressed to `client_id` (ours).
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        clock: SharedClock,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            clock,
            leeway: DEFAULT_LEEWAY,
            max_age: DEFAULT_MAX_AGE,
            allowed_algs: default_algs(),
        }
    }

    /// Sets the tolerated clock skew in seconds (default 60).
    #[must_use]
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Sets the maximum age of a token by its `iat` (default 10 minutes).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age.as_secs();
        self
    }

    /// Sets the accepted signature algorithms. Symmetric algorithms (`HS*`)
    /// are never accepted, even if listed.
    #[must_use]
    pub fn with_allowed_algs(mut self, algs: Vec<Algorithm>) -> Self {
        self.allowed_algs = algs;
        self
    }

    /// How long a `jti` must be remembered to refuse every replay of a token
    /// that this validator would otherwise accept.
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs(
            self.max_age
                .saturating_add(self.leeway.saturating_mul(2))
                .max(1),
        )
    }

    /// Validates a logout token (signature and claims; not replay, which
    /// needs a store) and returns its claims.
    ///
    /// # Errors
    ///
    /// [`TokenError::InvalidIdToken`] when any check fails (see the
    /// [module documentation](self)); [`TokenError::ProviderUnavailable`] when
    /// the provider's keys cannot be fetched.
    pub async fn validate(
        &self,
        token: &str,
        jwks: &JwksCache,
    ) -> Result<LogoutTokenClaims, TokenError> {
        let verified =
            verify_jws(token, jwks, &self.allowed_algs)
                .await
                .map_err(|err| match err {
                    TokenError::InvalidIdToken(reason) => invalid(&reason),
                    other => other,
                })?;
        if let Some(typ) = &verified.header.typ {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            if typ != "logout+jwt" && typ != "jwt" {
                return Err(invalid("typ is not logout+jwt"));
            }
        }
        self.check_claims(verified.payload)
    }

    fn check_claims(&self, all: Map<String, Value>) -> Result<LogoutTokenClaims, TokenError> {
        let ours = |err: TokenError| match err {
            TokenError::InvalidIdToken(reason) => invalid(&reason),
            other => other,
        };
        let iss = required_string(&all, "iss").map_err(ours)?;
        if iss != self.issuer {
            return Err(invalid("issuer mismatch"));
        }

        let aud = match all.get("aud") {
            None => return Err(invalid("missing aud")),
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(values)) => values
                .iter()
                .map(|value| value.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("malformed aud"))?,
            Some(_) => return Err(invalid("malformed aud")),
        };
        if !aud.contains(&self.client_id) {
            return Err(invalid("aud does not contain our client_id"));
        }
        if aud.iter().any(|a| *a != self.client_id) {
            return Err(invalid("aud contains another audience"));
        }

        let now = self.clock.now_unix();
        let iat = required_date(&all, "iat").map_err(ours)?;
        if iat > now.saturating_add(self.leeway) {
            return Err(invalid("issued in the future"));
        }
        if iat.saturating_add(self.max_age).saturating_add(self.leeway) < now {
            return Err(invalid("too old"));
        }
        let exp = numeric_date(&all, "exp").map_err(ours)?;
        if exp.is_some_and(|exp| exp.saturating_add(self.leeway) <= now) {
            return Err(invalid("expired"));
        }
        if let Some(nbf) = numeric_date(&all, "nbf").map_err(ours)?
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(invalid("not yet valid"));
        }

        match all.get("events") {
            None => return Err(invalid("missing events")),
            Some(Value::Object(events)) => match events.get(BACKCHANNEL_LOGOUT_EVENT) {
                Some(Value::Object(_)) => {}
                Some(_) => return Err(invalid("malformed back-channel logout event")),
                None => return Err(invalid("events lacks the back-channel logout event")),
            },
            Some(_) => return Err(invalid("malformed events")),
        }

        let sub = optional_string(&all, "sub").map_err(ours)?;
        let sid = optional_string(&all, "sid").map_err(ours)?;
        if sub.as_deref().is_some_and(str::is_empty) || sid.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("empty sub or sid"));
        }
        if sub.is_none() && sid.is_none() {
            return Err(invalid("neither sub nor sid"));
        }

        if all.contains_key("nonce") {
            return Err(invalid("nonce is not allowed"));
        }

        let jti = required_string(&all, "jti").map_err(ours)?;
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(invalid("malformed jti"));
        }

        Ok(LogoutTokenClaims {
            iss,
            sub,
            sid,
            aud,
            iat,
            exp,
            jti,
            all,
        })
    }
}

/// What [`TokenEngine::backchannel_logout`] did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BackchannelLogout {
    /// The sessions that ended.
    pub ended: Vec<SessionId>,
    /// How many of their refresh tokens are being revoked at the provider:
    /// revocation runs in a spawned task after every session has ended, so
    /// the answer to the provider never waits for it.
    pub revoked: usize,
}

/// Forgets a recorded `jti` unless [`completed`](Self::completed): when the
/// handling of a logout token fails, or is cut off (a server timeout drops
/// the request's future), the provider's retry must be handled, not refused
/// as a replay.
struct ForgetJtiUnlessCompleted {
    store: Option<std::sync::Arc<dyn crate::store::SessionStore>>,
    key: String,
}

impl ForgetJtiUnlessCompleted {
    /// The logout was handled: keep the `jti`.
    fn completed(mut self) {
        self.store = None;
    }

    /// Forgets the `jti` now (after a failure), waiting for the store.
    async fn forget_now(mut self) {
        if let Some(store) = self.store.take()
            && let Err(err) = store.take_transient(&self.key).await
        {
            // The store went away in the middle of the request: the jti
            // stays until the replay window closes, and a retry before then
            // is refused as a replay.
            tracing::warn!(
                error = %err,
                "back-channel logout failed and its jti could not be forgotten"
            );
        }
    }
}

impl Drop for ForgetJtiUnlessCompleted {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = store.take_transient(&key).await {
                        tracing::warn!(error = %err, "a cut-off back-channel logout could not forget its jti");
                    }
                });
            }
            Err(_) => tracing::warn!("a cut-off back-channel logout could not forget its jti"),
        }
    }
}

impl TokenEngine {
    /// A logout token validator for this client and provider.
    pub(crate) fn logout_validator(
        &self,
        metadata: &crate::discovery::ProviderMetadata,
    ) -> LogoutTokenValidator {
        LogoutTokenValidator::new(
            metadata.issuer.clone(),
            self.inner.config.client_id.clone(),
            self.inner.clock.clone(),
        )
        .with_leeway(self.inner.config.clock_leeway.as_secs())
    }

    /// Validates a back-channel logout token from this provider (signature,
    /// claims; not replay). See the [module documentation](self).
    ///
    /// # Errors
    ///
    /// [`TokenError::InvalidIdToken`] for an invalid token;
    /// [`TokenError::ProviderUnavailable`] / [`TokenError::Discovery`] when
    /// the provider's metadata or keys cannot be had.
    pub async fn validate_logout_token(
        &self,
        logout_token: &str,
    ) -> Result<LogoutTokenClaims, TokenError> {
        let metadata = self.metadata().await?;
        let jwks = self.jwks(&metadata).await;
        self.logout_validator(&metadata)
            .validate(logout_token, &jwks)
            .await
    }

    /// Handles a back-channel logout: validates the token, refuses a replayed
    /// `jti`, ends the matching sessions and revokes their refresh tokens
    /// (when [`revoke_on_logout`](crate::OidcConfig::revoke_on_logout) is on).
    ///
    /// A valid token that matches no session is not an error.
    ///
    /// # Errors
    ///
    /// [`TokenError::InvalidIdToken`] for an invalid or replayed token (no
    /// session is touched); [`TokenError::ProviderUnavailable`],
    /// [`TokenError::Discovery`] or [`TokenError::Store`] for transient
    /// failures. After a transient failure the token's `jti` is not
    /// remembered, so the provider's retry is handled, not refused as a
    /// replay.
    pub async fn backchannel_logout(
        &self,
        logout_token: &str,
    ) -> Result<BackchannelLogout, TokenError> {
        let metadata = self.metadata().await?;
        let jwks = self.jwks(&metadata).await;
        let validator = self.logout_validator(&metadata);
        let claims = validator.validate(logout_token, &jwks).await?;

        let replay_key = format!("{JTI_KEY_PREFIX}{}", claims.jti);
        let fresh = self
            .inner
            .store
            .put_transient_if_absent(
                &replay_key,
                claims.iat.to_string(),
                validator.replay_window(),
            )
            .await?;
        if !fresh {
            return Err(invalid("replayed (jti already seen)"));
        }

        // A failure remembers no jti: the provider retries a delivery that
        // got 503, and the retry must be able to end what this attempt could
        // not (sessions already ended stay ended; ending is idempotent). The
        // guard also forgets it when this future is dropped half-way.
        let guard = ForgetJtiUnlessCompleted {
            store: Some(self.inner.store.clone()),
            key: replay_key,
        };
        let (mut done, ended) = match self.end_named_sessions(&claims).await {
            Ok(done) => done,
            Err(err) => {
                guard.forget_now().await;
                return Err(err);
            }
        };
        guard.completed();
        crate::metrics::backchannel_logout(done.ended.len());
        done.revoked = self.revoke_in_background(ended);
        tracing::info!(
            sub = claims.sub.as_deref(),
            ended = done.ended.len(),
            revoked = done.revoked,
            "back-channel logout"
        );
        Ok(done)
    }

    /// Revokes the refresh tokens of ended sessions in a spawned task, when
    /// configured; returns how many it will try.
    fn revoke_in_background(
        &self,
        ended: Vec<std::sync::Arc<crate::session::SessionRecord>>,
    ) -> usize {
        if !self.inner.config.revoke_on_logout {
            return 0;
        }
        let mut count = 0;
        for session in ended {
            if let Some(token) = &session.tokens.refresh_token {
                self.revoke_refresh_token_in_background(token.clone());
                count += 1;
            }
        }
        count
    }

    /// Ends every session a validated logout token names (revocation comes
    /// afterwards, see [`revoke_in_background`](Self::revoke_in_background));
    /// returns them.
    async fn end_named_sessions(
        &self,
        claims: &LogoutTokenClaims,
    ) -> Result<
        (
            BackchannelLogout,
            Vec<std::sync::Arc<crate::session::SessionRecord>>,
        ),
        TokenError,
    > {
        let store = &self.inner.store;
        let by_sid = claims
            .sid
            .as_deref()
            .filter(|_| !self.inner.config.backchannel_logout_all_sessions || claims.sub.is_none());
        let candidates = match (by_sid, claims.sub.as_deref()) {
            (Some(sid), _) => store.find_by_sid(sid).await?,
            (None, Some(sub)) => store.find_by_sub(sub).await?,
            (None, None) => Vec::new(),
        };

        let mut done = BackchannelLogout::default();
        let mut ended = Vec::new();
        for id in candidates {
            // Re-check against the record: only sessions of this subject (and
            // provider session, when matching by sid) end, and only this
            // client's: the token's audience is this client, and another
            // client sharing the store gets its own token from the provider.
            let Some(current) = store.load(&id).await? else {
                continue;
            };
            let record = &current.record;
            if !record.belongs_to(&self.inner.config.client_id)
                || claims.sub.as_deref().is_some_and(|sub| record.sub != sub)
                || by_sid.is_some_and(|sid| record.sid.as_deref() != Some(sid))
            {
                continue;
            }
            let Some(session) = store.delete(&id).await? else {
                continue;
            };
            ended.push(session);
            done.ended.push(id);
        }
        Ok((done, ended))
    }
}

#[cfg(test)]
mod tests;
