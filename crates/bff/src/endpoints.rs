//! The management endpoints: `login`, `callback`, `logout`, `user`,
//! `sessions`.
//!
//! Mounted under the base path (default `/bff`) by [`Bff::routes`]:
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET /bff/login?returnUrl=/path` | starts sign-in (code + PKCE, state, nonce); `returnUrl` must be a local path |
//! | `GET /bff/callback` | completes sign-in, creates the server-side session, sets the session cookie |
//! | `GET /bff/logout?sid=...` | ends the session, revokes the refresh token, redirects to the provider's logout (with a `state` bound to the browser) |
//! | `GET /bff/logged-out?state=...` | optional post-logout landing: checks the provider's `state` against the browser's, then redirects home; a wrong or missing `state` is a 400 with no effect |
//! | `GET /bff/user` | the user's claims, logout URL and session expiry as JSON (requires `X-CSRF: 1`); 401 when anonymous |
//! | `GET /bff/sessions` | the user's own sessions (every device and instance): public id, created, last used, expiry, user agent, which is this one (requires `X-CSRF: 1`); 401 when anonymous |
//! | `POST /bff/sessions/{id}/end` | ends one of the user's own sessions by its public id and revokes its refresh token (requires `X-CSRF: 1`); 404 for an id that is not one of the user's |
//! | `POST /bff/backchannel` | OpenID Connect back-channel logout: a valid `logout_token` ends the sessions it names (200); anything else is 400 |

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cookie::SameSite;
use http::{HeaderMap, HeaderValue, header};
use oidc_bff_tokens::SessionId;
use oidc_bff_tokens::login::CallbackParams;
use oidc_bff_tokens::secret::constant_time_eq;

use crate::bff::Bff;
use crate::cookies;
use crate::csrf::has_header;
use crate::error::BffError;
use crate::session::BffSession;

impl Bff {
    /// The management endpoints under the base path, ready to merge into an app.
    ///
    /// ```
    /// # fn demo(bff: oidc_bff::Bff) {
    /// let app: axum::Router = axum::Router::new()
    ///     .merge(bff.routes())
    ///     .layer(bff.layer());
    /// # }
    /// ```
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let base = &self.settings().base_path;
        let api = self.csrf_layer();
        Router::new()
            .route(&format!("{base}/login"), get(login))
            .route(&format!("{base}/callback"), get(callback))
            .route(&format!("{base}/logout"), get(logout))
            .route(&format!("{base}/logged-out"), get(logged_out))
            // Top-level navigations, the callback coming from the provider's site.
            .route_layer(api.for_navigations())
            .route(&format!("{base}/user"), get(user).route_layer(api.clone()))
            .route(
                &format!("{base}/sessions"),
                get(sessions).route_layer(api.clone()),
            )
            .route(
                &format!("{base}/sessions/{{id}}/end"),
                post(end_session).route_layer(api),
            )
            // Called by the provider, server to server: no anti-forgery layer.
            .route(
                &format!("{base}/backchannel"),
                post(crate::backchannel::backchannel),
            )
            .route_layer(crate::metrics::MarkLayer::bff_routes(base))
            .with_state(self.clone())
    }

    /// The layer that makes the BFF's extractors work in every route of an app.
    pub fn layer(&self) -> axum::Extension<Bff> {
        axum::Extension(self.clone())
    }
}

/// Query parameters are read leniently: of duplicates, the first value
/// counts and later ones are ignored (every value is validated the same way).
fn first(query: &[(String, String)], key: &str) -> Option<String> {
    query
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.clone())
}

/// Starts a sign-in. Nothing is stored: the pending sign-in is sealed into
/// the `state` (see `oidc_bff_tokens::login`), bound to this browser by the
/// login cookie, which holds one random binding shared by all of the
/// browser's tabs (so parallel sign-ins work and the cookie stays small).
async fn login(
    State(bff): State<Bff>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let return_url = first(&query, "returnUrl");
    let settings = bff.settings();
    let binding = cookies::read(&headers, &settings.login_cookie_name);
    let response = match bff
        .engine()
        .begin_login_bound(&settings.redirect_uri(), return_url.as_deref(), binding)
        .await
    {
        Ok(start) => {
            let mut response = redirect(start.authorization_url.as_str());
            response.headers_mut().append(
                header::SET_COOKIE,
                cookies::set(
                    &settings.login_cookie_name,
                    &start.binding,
                    bff.engine().config().login_timeout,
                    SameSite::Lax,
                ),
            );
            response
        }
        Err(err) => BffError::from(err).into_response(),
    };
    no_referrer(response)
}

/// `Referrer-Policy: no-referrer`: the authorization URL and the callback
/// URL (with its code) never leak to the next page (RFC 9700 4.2.4).
fn no_referrer(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn callback(
    State(bff): State<Bff>,
    headers: HeaderMap,
    raw: axum::extract::RawQuery,
) -> Response {
    no_referrer(complete_sign_in(&bff, &headers, raw.0.as_deref()).await)
}

async fn complete_sign_in(bff: &Bff, headers: &HeaderMap, raw: Option<&str>) -> Response {
    let settings = bff.settings();
    // Duplicated parameters are refused outright: a callback is machine-made.
    let params = match parse_callback(raw.unwrap_or_default()) {
        Ok(params) => params,
        Err(err) => return with_cleared_login(err.into_response(), bff),
    };
    let binding = cookies::read(headers, &settings.login_cookie_name).unwrap_or_default();
    // Kept (sanitised) in the session, for the user's session list.
    let user_agent = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let signed_in = match bff
        .engine()
        .complete_login_from(binding, &params, user_agent.as_deref())
        .await
    {
        Ok(signed_in) => signed_in,
        Err(err) => return with_cleared_login(BffError::from(err).into_response(), bff),
    };
    // A sign-in always gets a new session id; the previous session ends.
    if let Some(old) = cookies::read(headers, &settings.cookie_name).and_then(SessionId::parse)
        && let Err(err) = bff.engine().store().delete(&old).await
    {
        tracing::warn!(error = %err, "could not remove the previous session");
    }
    let lifetime = std::time::Duration::from_secs(
        signed_in
            .session
            .expires_at
            .saturating_sub(signed_in.session.created_at),
    );
    let mut response = redirect(&signed_in.return_url);
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::set(
            &settings.cookie_name,
            signed_in.session_id.as_str(),
            lifetime,
            SameSite::Strict,
        ),
    );
    // The login cookie stays: it binds the browser's other pending sign-ins
    // (tabs) and expires with the login timeout.
    response
}

pub(crate) fn parse_callback(raw: &str) -> Result<CallbackParams, BffError> {
    let mut params = CallbackParams::default();
    for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let slot = match key.as_ref() {
            "code" => &mut params.code,
            "state" => &mut params.state,
            "iss" => &mut params.iss,
            "error" => &mut params.error,
            "error_description" => &mut params.error_description,
            _ => continue,
        };
        if slot.is_some() {
            return Err(BffError::BadRequest(format!(
                "duplicated parameter {key:?}"
            )));
        }
        *slot = Some(value.into_owned());
    }
    Ok(params)
}

fn with_cleared_login(mut response: Response, bff: &Bff) -> Response {
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::clear(&bff.settings().login_cookie_name, SameSite::Lax),
    );
    response
}

async fn logout(
    State(bff): State<Bff>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let settings = bff.settings();
    let id = cookies::read(&headers, &settings.cookie_name).and_then(SessionId::parse);
    let session = match id {
        Some(id) => match BffSession::load(&bff, id).await {
            Ok(session) => session,
            Err(err) => return BffError::from(err).into_response(),
        },
        None => None,
    };
    let Some(session) = session else {
        // Nobody to sign out: go home, clearing any stale cookie.
        return with_cleared_session(redirect(&settings.post_logout_redirect_uri()), &bff);
    };
    // Only a page that could read /bff/user knows the logout id: a cross-site
    // request cannot end the session.
    let presented = first(&query, "sid").unwrap_or_default();
    if session.record().logout_id.is_empty()
        || !constant_time_eq(presented.as_bytes(), session.record().logout_id.as_bytes())
    {
        return BffError::BadRequest("logout requires the session's sid parameter".into())
            .into_response();
    }
    let post_logout = settings.post_logout_redirect_uri();
    match bff.engine().logout(session.id(), Some(&post_logout)).await {
        Ok(done) => {
            bff.sessions_changed();
            let target = done
                .end_session_url
                .map(|u| u.to_string())
                .unwrap_or(post_logout);
            let mut response = with_cleared_session(redirect(&target), &bff);
            if let Some(state) = &done.state {
                // The provider's redirect back is a cross-site navigation.
                response.headers_mut().append(
                    header::SET_COOKIE,
                    cookies::set(
                        &logout_cookie_name(&bff),
                        state,
                        bff.engine().config().login_timeout,
                        SameSite::Lax,
                    ),
                );
            }
            response
        }
        Err(err) => BffError::from(err).into_response(),
    }
}

fn logout_cookie_name(bff: &Bff) -> String {
    format!("{}-logout", bff.settings().cookie_name)
}

/// The post-logout landing (register `{public_url}/bff/logged-out` as the
/// post-logout redirect URI to use it): the `state` the provider echoes must
/// be the one bound to this browser at logout. Nothing depends on it — the
/// session already ended — so a mismatch is only refused (400), never acted
/// on; a match redirects to the site's root.
async fn logged_out(
    State(bff): State<Bff>,
    headers: HeaderMap,
    raw: axum::extract::RawQuery,
) -> Response {
    let name = logout_cookie_name(&bff);
    let bound = cookies::read(&headers, &name).unwrap_or_default();
    let mut states = url::form_urlencoded::parse(raw.0.as_deref().unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned());
    let presented = states.next().unwrap_or_default();
    let valid = states.next().is_none()
        && !bound.is_empty()
        && constant_time_eq(presented.as_bytes(), bound.as_bytes());
    let mut response = if valid {
        let home = format!(
            "{}/",
            bff.settings().public_url.as_str().trim_end_matches('/')
        );
        redirect(&home)
    } else {
        BffError::BadRequest("the logout state does not match this browser".into()).into_response()
    };
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookies::clear(&name, SameSite::Lax));
    response
}

fn with_cleared_session(mut response: Response, bff: &Bff) -> Response {
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::clear(&bff.settings().cookie_name, SameSite::Strict),
    );
    response
}

async fn user(State(bff): State<Bff>, headers: HeaderMap, session: Option<BffSession>) -> Response {
    let settings = bff.settings();
    if !has_header(&headers, &settings.csrf_header.0, &settings.csrf_header.1) {
        return BffError::MissingCsrfHeader.into_response();
    }
    let Some(session) = session else {
        return BffError::from(oidc_bff_tokens::TokenError::NotAuthenticated).into_response();
    };
    let record = session.record();
    let now = bff.engine().clock().now_unix();
    let logout_url = format!(
        "{}/logout?sid={}",
        settings.base_path,
        url::form_urlencoded::byte_serialize(record.logout_id.as_bytes()).collect::<String>()
    );
    let body = serde_json::json!({
        "sub": record.sub,
        "claims": record.claims,
        "logoutUrl": logout_url,
        "sessionExpiresAt": record.expires_at,
        "sessionExpiresIn": record.expires_at.saturating_sub(now),
        "accessTokenExpiresAt": record.tokens.expires_at,
        "tokensRefreshedAt": record.tokens.refreshed_at,
        "refreshCount": record.tokens.refresh_count,
    });
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The signed-in user's sessions, oldest first, read from the store past
/// any read cache (so sessions made or ended on other instances show as
/// they are). Ids are public ids ([`SessionId::public_id`]), never cookie
/// values.
async fn sessions(session: Option<BffSession>) -> Response {
    let Some(session) = session else {
        return BffError::from(oidc_bff_tokens::TokenError::NotAuthenticated).into_response();
    };
    let bff = session.bff();
    let current = session.id().public_id();
    let listed = match bff.engine().sessions_of(session.sub()).await {
        Ok(listed) => listed,
        Err(err) => return BffError::from(err).into_response(),
    };
    let sessions: Vec<serde_json::Value> = listed
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "createdAt": s.created_at,
                "lastUsed": s.last_used,
                "expiresAt": s.expires_at,
                "userAgent": s.user_agent,
                "current": s.id == current,
            })
        })
        .collect();
    no_store(Json(serde_json::json!({ "sessions": sessions })).into_response())
}

/// Ends one of the signed-in user's own sessions ("sign out my other
/// devices"): looked up among the user's sessions only, so an id of
/// another user's session is 404 like an unknown one. Its refresh token is
/// revoked as at sign-out. Ending the current session also clears its
/// cookie.
async fn end_session(session: Option<BffSession>, Path(id): Path<String>) -> Response {
    let Some(session) = session else {
        return BffError::from(oidc_bff_tokens::TokenError::NotAuthenticated).into_response();
    };
    let bff = session.bff();
    let ended = match bff.engine().end_session_of(session.sub(), &id).await {
        Ok(Some(ended)) => ended,
        Ok(None) => {
            return BffError::NotFound("no such session of this user".into()).into_response();
        }
        Err(err) => return BffError::from(err).into_response(),
    };
    let current = ended.id == session.id().public_id();
    let response = no_store(
        Json(serde_json::json!({
            "ended": ended.id,
            "revoked": ended.revoked,
            "current": current,
        }))
        .into_response(),
    );
    if current {
        with_cleared_session(response, bff)
    } else {
        response
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn redirect(to: &str) -> Response {
    // A local return URL may hold non-ASCII text; send it percent-encoded so
    // the `Location` header is plain ASCII, read alike by every client.
    let to = ascii_location(to);
    let mut response = Redirect::to(&to).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Percent-encodes every non-ASCII byte (and control character) of `to`.
fn ascii_location(to: &str) -> String {
    let mut out = String::with_capacity(to.len());
    for b in to.bytes() {
        if b.is_ascii() && !b.is_ascii_control() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
