//! The signed-in user's session in a handler: the [`BffSession`] extractor.
//!
//! ```
//! use axum::{Json, Router, routing::get};
//! use oidc_bff::{BffError, BffSession, UserTokenRequest};
//!
//! async fn me(session: BffSession) -> Result<Json<serde_json::Value>, BffError> {
//!     // One call: a valid access token, refreshed first if it is about to expire.
//!     let token = session.access_token(&UserTokenRequest::default()).await?;
//!     # let _ = token;
//!     Ok(Json(serde_json::json!({ "sub": session.sub() })))
//! }
//!
//! // Anonymous users get 401 before the handler runs; use
//! // `Option<BffSession>` to accept them.
//! let app: Router = Router::new().route("/me", get(me));
//! ```
//!
//! The extractors find the [`Bff`] in the request extensions, put there by
//! [`Bff::layer`]. The session is read from the store at most once per
//! request, and only when a handler asks for it.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use oidc_bff_tokens::{
    AccessToken, SessionId, SessionRecord, TokenError, UserTokenRequest, Versioned,
};

use crate::bff::Bff;
use crate::cookies;
use crate::error::BffError;

/// The signed-in user's server-side session.
#[derive(Clone, Debug)]
pub struct BffSession {
    bff: Bff,
    id: SessionId,
    current: Versioned,
}

/// The session as loaded in this request (cached in the request extensions).
#[derive(Clone, Debug)]
struct Loaded(Option<BffSession>);

impl BffSession {
    /// The session's id. A bearer secret: never log it or send it to a browser
    /// other than in the session cookie.
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// The session as stored.
    pub fn record(&self) -> &SessionRecord {
        &self.current.record
    }

    /// The user's subject identifier.
    pub fn sub(&self) -> &str {
        &self.current.record.sub
    }

    /// The user's claims (from the id_token, plus userinfo when configured).
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.current.record.claims
    }

    /// The session record with the version it was loaded at.
    pub(crate) fn versioned(&self) -> &Versioned {
        &self.current
    }

    /// The BFF this session belongs to.
    pub fn bff(&self) -> &Bff {
        &self.bff
    }

    /// The user's access token: current and valid, refreshed first when it
    /// expires within the refresh margin. Concurrent callers share one refresh.
    ///
    /// Use `?` in a handler returning `Result<_, BffError>`: a failure becomes
    /// 401 (no valid token can be had) or 503 (provider or store temporarily
    /// unavailable).
    pub async fn access_token(
        &self,
        request: &UserTokenRequest,
    ) -> Result<AccessToken, TokenError> {
        self.bff
            .engine()
            .user_access_token(&self.id, Some(&self.current), request)
            .await
    }

    /// Loads a session by id, outside of any request (background jobs).
    pub async fn load(bff: &Bff, id: SessionId) -> Result<Option<BffSession>, TokenError> {
        Ok(bff
            .engine()
            .load_session(&id)
            .await?
            .map(|current| BffSession {
                bff: bff.clone(),
                id,
                current,
            }))
    }

    /// Reads the session of a request (cached per request).
    pub(crate) async fn from_parts(parts: &mut Parts) -> Result<Option<BffSession>, BffError> {
        if let Some(Loaded(cached)) = parts.extensions.get::<Loaded>() {
            return Ok(cached.clone());
        }
        let bff = Bff::from_parts(parts)?;
        let id =
            cookies::read(&parts.headers, &bff.settings().cookie_name).and_then(SessionId::parse);
        let session = match id {
            None => None,
            Some(id) => BffSession::load(&bff, id).await?,
        };
        parts.extensions.insert(Loaded(session.clone()));
        Ok(session)
    }

    /// Reads the session of a request for `bff` without touching the
    /// request's extensions (the proxy's hot path: no [`Bff`] and no cache
    /// inserted, each an allocation); a session an outer extractor already
    /// loaded is taken from its cache. `cookie` is the session cookie's
    /// value, as [`cookies::read`] found it in `parts`.
    pub(crate) async fn for_request(
        bff: &Bff,
        parts: &Parts,
        cookie: Option<&str>,
    ) -> Result<Option<BffSession>, BffError> {
        if let Some(Loaded(cached)) = parts.extensions.get::<Loaded>() {
            return Ok(cached.clone());
        }
        match cookie.and_then(SessionId::parse) {
            None => Ok(None),
            Some(id) => Ok(BffSession::load(bff, id).await?),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BffSession {
    type Rejection = BffError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        BffSession::from_parts(parts)
            .await?
            .ok_or(BffError::Token(TokenError::NotAuthenticated))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for BffSession {
    type Rejection = BffError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        BffSession::from_parts(parts).await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bff {
    type Rejection = BffError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Bff::from_parts(parts)
    }
}

/// The signed-in user's current access token, as an extractor.
///
/// Rejects with 401 when there is no session or no valid token can be had,
/// 503 when the provider is temporarily unavailable and the token has expired.
///
/// ```
/// use oidc_bff::UserAccessToken;
///
/// async fn call_api(UserAccessToken(token): UserAccessToken) -> String {
///     // Send `token.secret()` as a bearer token to your API.
///     format!("token of {} bytes", token.secret().len())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct UserAccessToken(pub AccessToken);

impl<S: Send + Sync> FromRequestParts<S> for UserAccessToken {
    type Rejection = BffError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = <BffSession as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        Ok(UserAccessToken(
            session.access_token(&UserTokenRequest::default()).await?,
        ))
    }
}
