//! Sign-out: ending a session at the BFF and at the provider.
//!
//! [`TokenEngine::logout`] removes the session from the store, revokes its
//! refresh token (RFC 7009) when configured, and builds the provider's
//! end-session URL (RP-Initiated Logout 1.0) with a fresh `state`. A
//! refresh token the engine received but will not keep (the session ended
//! while a grant was in flight) is revoked in the background.

use std::sync::Arc;

use url::Url;

use crate::discovery::ProviderMetadata;
use crate::engine::TokenEngine;
use crate::error::TokenError;
use crate::secret::RefreshToken;
use crate::session::{SessionId, SessionRecord, random_token};

/// What [`TokenEngine::logout`] did.
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

impl TokenEngine {
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
        crate::metrics::sign_out();
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
            match crate::metrics::provider_call(
                crate::metrics::ProviderEndpoint::Revocation,
                client
                    .inner
                    .provider
                    .revoke(&metadata, token.secret(), "refresh_token"),
            )
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
        match crate::metrics::provider_call(
            crate::metrics::ProviderEndpoint::Revocation,
            self.inner
                .provider
                .revoke(metadata, refresh.secret(), "refresh_token"),
        )
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
