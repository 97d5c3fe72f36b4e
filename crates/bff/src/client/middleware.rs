//! The `reqwest-middleware` layer of managed clients: it puts the access
//! token on every request and renews it once when the API answers 401.
//!
//! ```text
//! send ──► URL refused? ──yes──► error 400, nothing sent
//!            │ no
//!            ▼
//!          token for the binding, per the client's `TokenPolicy`
//!            │ none can be had ──► error 401 (503 if the provider is down)
//!            │ the policy sends none ──► sent as it is
//!            ▼
//!          clone the request if it can be replayed, retry is on, and the
//!          method is idempotent (or the caller opted in)
//!            ▼
//!          send with `Authorization: Bearer …` (sensitive header), or for a
//!          DPoP-bound token `Authorization: DPoP …` and a fresh `DPoP` proof
//!            │ 401 with a DPoP `use_dpop_nonce` challenge and a replayable
//!            │ clone ──► send once more, same token, new proof with the nonce
//!            │ not 401 ──► response
//!            ▼ 401
//!          no replayable clone ──► the 401 response
//!            ▼
//!          renew the token that was refused (shared with concurrent callers)
//!            │ renewal fails ──► error 401 / 503
//!            │ same token again (nothing newer to be had) ──► the 401 response
//!            ▼
//!          send the clone once with the new token ──► whatever it answers
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Extensions;
use oidc_bff_tokens::dpop::DpopKey;
use oidc_bff_tokens::{AccessToken, TokenEngine, TokenError};
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};

use super::bearer::bearer_header;
use super::binding::{Binding, BoundTo, Refused};
use crate::error::BffError;
use crate::token_policy::{Holder, TokenPolicy, TokenRequests, Used};

/// A request extension that allows the one retry after a 401 for a request
/// whose method is not idempotent (`POST`, `PATCH`): the caller states that
/// sending it twice is harmless. Without it only idempotent requests (`GET`,
/// `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`) are retried.
///
/// ```no_run
/// # async fn demo(client: oidc_bff::client::ManagedClient) -> Result<(), oidc_bff::BffError> {
/// use oidc_bff::client::ReplayOnUnauthorized;
///
/// client
///     .post("search")
///     .json(&serde_json::json!({"q": "widgets"}))
///     .with_extension(ReplayOnUnauthorized)
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayOnUnauthorized;

/// Whether a request may be sent a second time after a 401.
fn may_replay(request: &Request, extensions: &Extensions) -> bool {
    request.method().is_idempotent() || extensions.get::<ReplayOnUnauthorized>().is_some()
}

/// Where a client's tokens come from.
pub(crate) struct TokenSource {
    pub(crate) oidc: TokenEngine,
    pub(crate) policy: TokenPolicy,
    pub(crate) tokens: TokenRequests,
}

impl TokenSource {
    /// The token for a request bound to `binding`; `None`: send none.
    pub(crate) async fn token(
        &self,
        binding: &Binding,
    ) -> Result<Option<(AccessToken, Used)>, TokenError> {
        let user = match binding {
            Binding::Anonymous => None,
            Binding::Request { id, current } => Some(Holder::Loaded { id, current }),
            Binding::Session(id) => Some(Holder::Id(id)),
        };
        self.policy
            .resolve(&self.oidc, &self.tokens, user)
            .await
            .map_err(|refused| refused.error)
    }

    /// A token to replace `sent`, which the API refused.
    async fn renew(&self, used: &Used, sent: &AccessToken) -> Result<AccessToken, TokenError> {
        match used {
            Used::Client => {
                self.oidc
                    .renew_client_access_token(&self.tokens.client, sent)
                    .await
            }
            Used::User(id) => {
                // Another request may have renewed it meanwhile: read the store.
                let current = self
                    .oidc
                    .user_access_token(id, None, &self.tokens.user)
                    .await?;
                if current != *sent {
                    return Ok(current);
                }
                self.oidc
                    .user_access_token(id, None, &self.tokens.user.clone().force_renewal())
                    .await
            }
        }
    }
}

/// Attaches the token and retries once on 401.
pub(crate) struct TokenMiddleware {
    pub(crate) source: Arc<TokenSource>,
    pub(crate) retry_on_unauthorized: bool,
    /// `oidc_bff_client_unauthorized_retries_total{client}`.
    pub(crate) retries: metrics::Counter,
}

fn fail(err: impl Into<BffError>) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(err.into())
}

fn authorize(
    oidc: &TokenEngine,
    request: &mut Request,
    token: &AccessToken,
    key: Option<&DpopKey>,
) -> Result<(), reqwest_middleware::Error> {
    if key.is_some() {
        let method = request.method().clone();
        let url = request.url().clone();
        let headers = crate::dpop::api_headers(oidc, &method, &url, token, key).map_err(fail)?;
        crate::dpop::apply(request.headers_mut(), headers);
        return Ok(());
    }
    let value = bearer_header(token).ok_or_else(|| {
        fail(TokenError::InvalidResponse(
            "the access token cannot be sent in a header".into(),
        ))
    })?;
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, value);
    Ok(())
}

// The trait is declared with `async_trait`; this is its expanded form.
impl Middleware for TokenMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        request: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.send(request, extensions, next))
    }
}

impl TokenMiddleware {
    async fn send(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if let Some(Refused(why)) = extensions.get::<Refused>() {
            return Err(fail(BffError::BadRequest((*why).into())));
        }
        let binding = match extensions.get::<BoundTo>() {
            Some(BoundTo(binding)) => binding.clone(),
            None => Arc::new(Binding::Anonymous),
        };
        let Some((token, used)) = self.source.token(&binding).await.map_err(fail)? else {
            // The policy sends no token here: nothing to renew either.
            return next.run(request, extensions).await;
        };
        let oidc = &self.source.oidc;
        let loaded = match &*binding {
            Binding::Request { current, .. } => Some(current),
            _ => None,
        };
        let key =
            crate::dpop::binding(oidc, &self.source.tokens.client, &used, &token, loaded).await;
        // `None` for streamed bodies: those are never sent twice. Nor is a
        // request the API may have acted on (not idempotent) unless the
        // caller said so.
        let replay = if self.retry_on_unauthorized && may_replay(&request, extensions) {
            request.try_clone()
        } else {
            None
        };
        // One more clone for a DPoP nonce challenge.
        let nonce_replay = key
            .as_ref()
            .and(replay.as_ref())
            .and_then(Request::try_clone);
        let url = request.url().clone();
        authorize(oidc, &mut request, &token, key.as_ref())?;
        let mut response = next.clone().run(request, extensions).await?;
        if key.is_some()
            && crate::dpop::observe(oidc, &url, response.status(), response.headers())
            && let Some(mut again) = nonce_replay
        {
            drop(response);
            tracing::debug!("the API asked for a DPoP nonce; retrying once with it");
            authorize(oidc, &mut again, &token, key.as_ref())?;
            response = next.clone().run(again, extensions).await?;
            if crate::dpop::observe(oidc, &url, response.status(), response.headers()) {
                // A nonce again: a new token would not help. Never loop.
                return Ok(response);
            }
        }
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(mut replay) = replay else {
            return Ok(response);
        };
        let renewed = self.source.renew(&used, &token).await.map_err(fail)?;
        if renewed == token {
            // Nothing newer can be had: the API's answer stands.
            return Ok(response);
        }
        drop(response);
        self.retries.increment(1);
        tracing::debug!("the API refused the access token; retrying once with a renewed one");
        let key =
            crate::dpop::binding(oidc, &self.source.tokens.client, &used, &renewed, None).await;
        authorize(oidc, &mut replay, &renewed, key.as_ref())?;
        next.run(replay, extensions).await
    }
}
