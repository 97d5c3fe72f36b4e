//! Session administration: a subject's sessions listed, one or all ended.
//!
//! What the user's own session list (`/bff/sessions` in the axum crate) and
//! the operator's admin API are built on. Sessions are named by their
//! [public id](SessionId::public_id), never by the id in the cookie, and
//! are always looked up **within a subject**: a public id of another
//! user's session finds nothing.
//!
//! Ending a session removes it from the store (every instance sharing the
//! store sees it gone; the persistent stores' read caches drop it on the
//! store's announcement) and revokes its refresh token at the provider
//! (RFC 7009) when [`revoke_on_logout`](crate::OidcConfig::revoke_on_logout)
//! is on, as sign-out does. A failed revocation does not keep the session.
//!
//! ```no_run
//! # async fn demo(engine: oidc_bff_tokens::TokenEngine) -> Result<(), oidc_bff_tokens::TokenError> {
//! for session in engine.sessions_of("alice").await? {
//!     println!("{} since {} ({:?})", session.id, session.created_at, session.user_agent);
//! }
//! let ended = engine.end_sessions_of("alice").await?;
//! println!("{} ended, {} refresh tokens revoked", ended.len(), ended.iter().filter(|e| e.revoked).count());
//! # Ok(()) }
//! ```

use serde::Serialize;

use crate::engine::TokenEngine;
use crate::error::TokenError;
use crate::session::{SessionId, SessionRecord};

/// One session as a list shows it: no token, no cookie value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SessionSummary {
    /// The session's [public id](SessionId::public_id).
    pub id: String,
    /// The subject whose session it is.
    pub sub: String,
    /// When the session was created: the sign-in (Unix seconds).
    pub created_at: u64,
    /// When the session was last used, to within a quarter of the idle
    /// timeout when one is set, else its sign-in or last token refresh
    /// (Unix seconds).
    pub last_used: u64,
    /// When the session ends regardless of activity (Unix seconds).
    pub expires_at: u64,
    /// The browser's `User-Agent` at sign-in, sanitised; `None` when unknown.
    pub user_agent: Option<String>,
}

impl SessionSummary {
    /// The summary of the session `id` holding `record`.
    pub fn of(id: &SessionId, record: &SessionRecord) -> Self {
        let last_used = record
            .last_active
            .max(record.created_at)
            .max(record.tokens.refreshed_at.unwrap_or(0));
        Self {
            id: id.public_id(),
            sub: record.sub.clone(),
            created_at: record.created_at,
            last_used,
            expires_at: record.expires_at,
            user_agent: record.user_agent.clone(),
        }
    }
}

/// A session ended by [`TokenEngine::end_session_of`] or
/// [`TokenEngine::end_sessions_of`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EndedSession {
    /// The session's public id.
    pub id: String,
    /// Whether the provider confirmed the revocation of its refresh token.
    pub revoked: bool,
}

impl TokenEngine {
    /// The live sessions of `sub`, oldest first, read past any read cache.
    /// Sessions past their lifetime or idle timeout are left out.
    pub async fn sessions_of(&self, sub: &str) -> Result<Vec<SessionSummary>, TokenError> {
        let mut out: Vec<SessionSummary> = self
            .live_sessions_of(sub)
            .await?
            .iter()
            .map(|(id, record)| SessionSummary::of(id, record))
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Ends the session of `sub` whose public id is `public_id` and revokes
    /// its refresh token; `None` when `sub` has no such live session (it is
    /// another subject's, ended already, or never was).
    pub async fn end_session_of(
        &self,
        sub: &str,
        public_id: &str,
    ) -> Result<Option<EndedSession>, TokenError> {
        let found = self
            .live_sessions_of(sub)
            .await?
            .into_iter()
            .find(|(id, _)| id.public_id() == public_id);
        match found {
            Some((id, _)) => self.end_one(&id).await,
            None => Ok(None),
        }
    }

    /// Ends every session of `sub`, revoking their refresh tokens; returns
    /// those it ended.
    pub async fn end_sessions_of(&self, sub: &str) -> Result<Vec<EndedSession>, TokenError> {
        let mut ended = Vec::new();
        for id in self.inner.store.find_by_sub(sub).await? {
            if let Some(done) = self.end_one_of(&id, sub).await? {
                ended.push(done);
            }
        }
        tracing::info!(sub, ended = ended.len(), "ended all sessions of a subject");
        Ok(ended)
    }

    /// The sessions of `sub` that [`load_session`](Self::load_session)
    /// would accept: neither past their lifetime nor idle.
    async fn live_sessions_of(
        &self,
        sub: &str,
    ) -> Result<Vec<(SessionId, std::sync::Arc<SessionRecord>)>, TokenError> {
        let now = self.inner.clock.now_unix();
        let idle = self.inner.config.idle_timeout;
        Ok(self
            .inner
            .store
            .sessions_of(sub)
            .await?
            .into_iter()
            .filter(|(_, v)| {
                v.record.sub == sub
                    && !v.record.is_expired(now)
                    && idle.is_none_or(|idle| !v.record.is_idle(now, idle))
            })
            .map(|(id, v)| (id, v.record))
            .collect())
    }

    /// Ends the session `id` if it (still) belongs to `sub`.
    async fn end_one_of(
        &self,
        id: &SessionId,
        sub: &str,
    ) -> Result<Option<EndedSession>, TokenError> {
        match self.inner.store.load_latest(id).await? {
            Some(current) if current.record.sub == sub => self.end_one(id).await,
            _ => Ok(None),
        }
    }

    /// Removes a session and revokes its refresh token (when configured and
    /// the provider has a revocation endpoint; failures are logged).
    async fn end_one(&self, id: &SessionId) -> Result<Option<EndedSession>, TokenError> {
        let Some(session) = self.inner.store.delete(id).await? else {
            return Ok(None);
        };
        let mut revoked = false;
        if self.inner.config.revoke_on_logout {
            match self.metadata_with_fallback().await {
                Ok(metadata) => revoked = self.revoke_session_tokens(&metadata, &session).await,
                Err(err) => {
                    tracing::warn!(error = %err, "provider metadata unavailable; session ended without revocation");
                }
            }
        }
        tracing::info!(sub = %session.sub, revoked, "session ended by administration");
        Ok(Some(EndedSession {
            id: id.public_id(),
            revoked,
        }))
    }
}
