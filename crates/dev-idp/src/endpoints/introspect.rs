//! `POST /introspect`: token introspection (RFC 7662) for access and
//! refresh tokens. Any registered client may introspect (resource servers
//! are registered as clients).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};

use super::{Params, authenticate_client, invalid_request, no_store};
use crate::counters::Counter;
use crate::state::Idp;

pub(crate) async fn introspect(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    idp.counters.bump(Counter::Introspections);
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return invalid_request(&e),
    };
    if let Err(response) = authenticate_client(&idp, &headers, &params) {
        return response;
    }
    let Some(token) = params.get("token") else {
        return invalid_request("missing token");
    };
    let store = idp.store();
    let answer = if let Some(claims) = store.active_access(token, idp.now()) {
        let mut answer = claims.clone();
        answer["active"] = true.into();
        answer["token_type"] = "Bearer".into();
        answer
    } else if let Some(entry) = store.active_refresh(token) {
        json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": entry.client_id,
            "scope": entry.scope,
            "sub": entry.sub,
            "iss": idp.issuer,
        })
    } else {
        json!({"active": false})
    };
    drop(store);
    no_store(Json::<Value>(answer).into_response())
}
