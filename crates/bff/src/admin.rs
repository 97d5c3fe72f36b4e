//! The operator's session administration API, behind a bearer token.
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET /admin/subjects/{sub}/sessions` | the subject's live sessions: public id, created, last used, expiry, user agent |
//! | `POST /admin/subjects/{sub}/sessions/{id}/end` | ends one of them (by public id) and revokes its refresh token; 404 when the subject has no such session |
//! | `POST /admin/subjects/{sub}/sessions/end` | ends all of them, revoking their refresh tokens |
//!
//! Every request must carry `Authorization: Bearer <token>` with the token
//! given to [`router`]; anything else is answered `401` (with
//! `WWW-Authenticate: Bearer`) before the store is touched. The token is
//! compared in constant time and never logged. `{sub}` is the subject as
//! the provider names it, percent-encoded in the path.
//!
//! Sessions are read from the store past any read cache and ended in the
//! store, so the API works on every store and every instance sharing it
//! (see [`oidc_bff_tokens::session_admin`]). Serve it on a listener of its
//! own that only operators can reach — **never on the public port**: the
//! gateway serves it on the ops listener (`[metrics] listen`) only.
//!
//! ```
//! use oidc_bff::admin::{self, AdminToken};
//!
//! # fn demo(bff: oidc_bff::Bff) -> Result<(), oidc_bff::BffError> {
//! let token = AdminToken::new(std::env::var("ADMIN_TOKEN").unwrap_or_else(|_| "x".repeat(32)))?;
//! let ops: axum::Router = admin::router(&bff, token);
//! // axum::serve(ops_listener, ops) on an address operators alone reach.
//! # let _ = ops; Ok(()) }
//! ```

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use oidc_bff_tokens::secret::constant_time_eq;

use crate::bff::Bff;
use crate::error::BffError;

/// The shortest admin token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 32;

/// The longest subject accepted in a path, in bytes.
const MAX_SUB_LEN: usize = 1024;

/// The bearer token of the admin API. `Debug` is redacted.
///
/// ```
/// use oidc_bff::admin::AdminToken;
///
/// assert!(AdminToken::new("too short").is_err());
/// let token = AdminToken::new("0123456789abcdef0123456789abcdef").unwrap();
/// assert_eq!(format!("{token:?}"), "AdminToken([redacted])");
/// ```
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token of at least [`MIN_TOKEN_LEN`] printable ASCII characters
    /// (e.g. `openssl rand -base64 32`); a trailing newline (from a file) is
    /// dropped.
    pub fn new(token: impl Into<String>) -> Result<Self, BffError> {
        let token: String = token.into();
        let token = token.trim_end_matches(['\r', '\n']).to_owned();
        if token.len() < MIN_TOKEN_LEN {
            return Err(BffError::Config(format!(
                "the admin token must be at least {MIN_TOKEN_LEN} characters long"
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BffError::Config(
                "the admin token must be printable ASCII without spaces".into(),
            ));
        }
        Ok(Self(token))
    }

    /// Whether an `Authorization` header value presents this token.
    fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization.map(HeaderValue::as_bytes) else {
            return false;
        };
        let Some((scheme, presented)) = value.split_first_chunk::<7>() else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ")
            && constant_time_eq(presented.trim_ascii(), self.0.as_bytes())
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// The admin API for `bff`'s sessions, every route behind `token`.
pub fn router<S: Clone + Send + Sync + 'static>(bff: &Bff, token: AdminToken) -> Router<S> {
    Router::new()
        .route("/admin/subjects/{sub}/sessions", get(list))
        .route("/admin/subjects/{sub}/sessions/end", post(end_all))
        .route("/admin/subjects/{sub}/sessions/{id}/end", post(end_one))
        .route_layer(middleware::from_fn_with_state(token, authorize))
        .with_state(bff.clone())
}

impl Bff {
    /// The operator's [admin API](crate::admin) for this BFF's sessions,
    /// behind `token`. Same as [`admin::router`](crate::admin::router).
    pub fn admin_routes<S: Clone + Send + Sync + 'static>(&self, token: AdminToken) -> Router<S> {
        router(self, token)
    }
}

/// The bearer check in front of every route.
async fn authorize(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    if token.admits(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    tracing::warn!(
        path = request.uri().path(),
        "admin API request without a valid bearer token"
    );
    let mut response = no_store(
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({
                "error": "invalid_token",
                "message": "the admin API requires its bearer token",
            })),
        )
            .into_response(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"oidc-bff admin\""),
    );
    response
}

fn checked_sub(sub: &str) -> Result<&str, BffError> {
    if sub.is_empty() || sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
        return Err(BffError::BadRequest(
            "the subject must be 1 to 1024 printable characters".into(),
        ));
    }
    Ok(sub)
}

async fn list(State(bff): State<Bff>, Path(sub): Path<String>) -> Response {
    let sub = match checked_sub(&sub) {
        Ok(sub) => sub,
        Err(err) => return err.into_response(),
    };
    match bff.engine().sessions_of(sub).await {
        Ok(sessions) => {
            no_store(Json(serde_json::json!({ "sub": sub, "sessions": sessions })).into_response())
        }
        Err(err) => BffError::from(err).into_response(),
    }
}

async fn end_one(State(bff): State<Bff>, Path((sub, id)): Path<(String, String)>) -> Response {
    let sub = match checked_sub(&sub) {
        Ok(sub) => sub,
        Err(err) => return err.into_response(),
    };
    match bff.engine().end_session_of(sub, &id).await {
        Ok(Some(ended)) => {
            tracing::info!(sub, "admin API ended a session");
            no_store(Json(serde_json::json!({ "sub": sub, "ended": [ended] })).into_response())
        }
        Ok(None) => BffError::NotFound("the subject has no such session".into()).into_response(),
        Err(err) => BffError::from(err).into_response(),
    }
}

async fn end_all(State(bff): State<Bff>, Path(sub): Path<String>) -> Response {
    let sub = match checked_sub(&sub) {
        Ok(sub) => sub,
        Err(err) => return err.into_response(),
    };
    match bff.engine().end_sessions_of(sub).await {
        Ok(ended) => {
            tracing::info!(
                sub,
                ended = ended.len(),
                "admin API ended a subject's sessions"
            );
            no_store(Json(serde_json::json!({ "sub": sub, "ended": ended })).into_response())
        }
        Err(err) => BffError::from(err).into_response(),
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_only_the_bearer_token() {
        let token = AdminToken::new(format!("{}\n", "t".repeat(40))).unwrap();
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        let good = "t".repeat(40);
        assert!(token.admits(Some(&header(&format!("Bearer {good}")))));
        assert!(token.admits(Some(&header(&format!("bearer {good}")))));
        for bad in [
            String::new(),
            good.clone(),
            format!("Basic {good}"),
            format!("Bearer {good}x"),
            format!("Bearer {}", &good[1..]),
            "Bearer ".into(),
            "Bearer".into(),
        ] {
            assert!(!token.admits(Some(&header(&bad))), "{bad:?}");
        }
        assert!(!token.admits(None));
        assert!(AdminToken::new("x".repeat(31)).is_err());
        assert!(AdminToken::new(format!("{} y", "x".repeat(40))).is_err());
    }
}
