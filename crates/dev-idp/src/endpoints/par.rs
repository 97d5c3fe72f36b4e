//! `POST /par`: the pushed authorization request endpoint (RFC 9126).
//!
//! The client authenticates (any method it is registered for), the request
//! is checked as far as it can be without a browser (`response_type`,
//! `redirect_uri`, no `request_uri` inside) and kept under a one-time
//! `request_uri` valid for the configured lifetime (default 60 s).
//! `/authorize` then accepts `client_id` + `request_uri` and uses the pushed
//! parameters (see `authorize.rs`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::json;

use super::{Params, authenticate_client, invalid_request, no_store};
use crate::config::Config;
use crate::counters::Counter;
use crate::state::Idp;
use crate::store::PushedRequest;

/// The prefix of every `request_uri` (RFC 9126 §2.2).
pub(crate) const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// Parameters of client authentication, never kept with the request.
const AUTH_PARAMS: [&str; 3] = ["client_secret", "client_assertion", "client_assertion_type"];

pub(crate) async fn par(State(idp): State<Arc<Idp>>, headers: HeaderMap, body: Bytes) -> Response {
    let faults = idp.faults.snapshot();
    if let Some((status, body)) = &faults.par_answer {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = if body.trim_start().starts_with('{') {
            "application/json"
        } else {
            "text/html"
        };
        return (status, [(header::CONTENT_TYPE, kind)], body.clone()).into_response();
    }
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return invalid_request(&e),
    };
    let client_id = match authenticate_client(&idp, &headers, &params) {
        Ok(id) => id,
        Err(response) => return response,
    };
    if params.get("request_uri").is_some() {
        return invalid_request("request_uri must not be pushed");
    }
    if params.get("response_type") != Some("code") {
        return invalid_request("only response_type=code is supported");
    }
    let registered = idp
        .config
        .client(&client_id)
        .map(|c| c.redirect_uris.clone())
        .unwrap_or_default();
    match params.get("redirect_uri") {
        Some(uri) if Config::uri_allowed(&registered, uri) => {}
        Some(_) => return invalid_request("redirect_uri is not registered for this client"),
        None => return invalid_request("missing redirect_uri"),
    }
    // The pushed parameters, without client authentication; `client_id`
    // always the authenticated one.
    let kept: String = {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        out.append_pair("client_id", &client_id);
        for (k, v) in url::form_urlencoded::parse(&body) {
            if k != "client_id" && !AUTH_PARAMS.contains(&k.as_ref()) {
                out.append_pair(&k, &v);
            }
        }
        out.finish()
    };
    let now = idp.now();
    let lifetime = idp.config.par_lifetime.as_secs();
    let request_uri = format!("{REQUEST_URI_PREFIX}{}", crate::random_token(24));
    {
        let mut store = idp.store();
        store.purge(now);
        store.pushed.insert(
            request_uri.clone(),
            PushedRequest {
                client_id,
                params: kept,
                expires_at: if faults.par_request_uris_expired {
                    now
                } else {
                    now + lifetime
                },
            },
        );
    }
    idp.counters.bump(Counter::PushedAuthorizationRequests);
    no_store(
        (
            StatusCode::CREATED,
            Json(json!({"request_uri": request_uri, "expires_in": lifetime})),
        )
            .into_response(),
    )
}

/// Takes the pushed request behind `request_uri` for `client_id` (one use):
/// its parameters, or why it can not be used.
pub(crate) fn take(idp: &Idp, request_uri: &str, client_id: &str) -> Result<Params, &'static str> {
    let now = idp.now();
    let entry = idp
        .store()
        .pushed
        .remove(request_uri)
        .ok_or("unknown or already used request_uri")?;
    if entry.client_id != client_id {
        return Err("the request_uri belongs to another client");
    }
    if entry.expires_at <= now {
        return Err("the request_uri has expired");
    }
    Params::parse(entry.params.as_bytes()).map_err(|_| "the pushed request is unreadable")
}
