//! `GET|POST /userinfo`: the signed-in user's claims for a valid bearer
//! access token that was granted the `openid` scope.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;

use super::{bearer_token, has_scope, no_store};
use crate::counters::Counter;
use crate::state::Idp;

pub(crate) async fn userinfo(State(idp): State<Arc<Idp>>, headers: HeaderMap) -> Response {
    idp.counters.bump(Counter::Userinfo);
    let Some(token) = bearer_token(&headers) else {
        return challenge(StatusCode::UNAUTHORIZED, "Bearer realm=\"dev-idp\"");
    };
    let claims = idp.store().active_access(&token, idp.now()).cloned();
    let Some(claims) = claims else {
        return challenge(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"dev-idp\", error=\"invalid_token\", error_description=\"unknown, expired or revoked\"",
        );
    };
    let scope = claims.get("scope").and_then(Value::as_str).unwrap_or("");
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    // Client-credentials tokens have no user behind them.
    if !has_scope(scope, "openid") || sub != idp.config.sub {
        return challenge(
            StatusCode::FORBIDDEN,
            "Bearer realm=\"dev-idp\", error=\"insufficient_scope\", scope=\"openid\"",
        );
    }
    let mut info = idp.config.claims.clone();
    let faults = idp.faults.snapshot();
    if let Some(extra) = faults.userinfo_extra_claims {
        info.extend(extra);
    }
    let sub = faults
        .userinfo_sub
        .unwrap_or_else(|| idp.config.sub.clone());
    info.insert("sub".into(), sub.into());
    no_store(Json(Value::Object(info)).into_response())
}

fn challenge(status: StatusCode, www_authenticate: &'static str) -> Response {
    let mut response = no_store(status.into_response());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(www_authenticate),
    );
    response
}
