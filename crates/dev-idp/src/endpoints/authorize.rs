//! `GET /authorize`: the authorization endpoint. The configured user is
//! signed in automatically (a new IdP session `sid` per sign-in) and the
//! browser is redirected back with a code, `state` and `iss` (RFC 9207).
//! A pushed request (RFC 9126) is accepted as `client_id` + `request_uri`;
//! with `require_par` nothing else is.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use http::StatusCode;

use super::{Params, has_scope, html_page, par, redirect};
use crate::config::Config;
use crate::counters::Counter;
use crate::faults::IssParamFault;
use crate::jwt::WRONG_ISSUER;
use crate::state::Idp;
use crate::store::{CodeEntry, Session};

/// Authorization codes are valid this long.
const CODE_LIFETIME_SECS: u64 = 60;

pub(crate) async fn authorize(State(idp): State<Arc<Idp>>, RawQuery(query): RawQuery) -> Response {
    idp.counters.bump(Counter::Authorize);
    let bad = |msg: &str| {
        html_page(
            StatusCode::BAD_REQUEST,
            "Invalid authorization request",
            msg,
        )
    };

    // Until client_id and redirect_uri are validated, errors are shown here,
    // never redirected.
    let params = match Params::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let Some(client_id) = params.get("client_id") else {
        return bad("missing client_id");
    };
    // A pushed request (RFC 9126): its parameters replace the query's.
    let pushed = params.get("request_uri").is_some();
    let params = match params.get("request_uri") {
        Some(request_uri) => match par::take(&idp, request_uri, client_id) {
            Ok(pushed) => pushed,
            Err(why) => return bad(&format!("invalid_request_uri: {why}")),
        },
        None if idp.config.require_par => {
            return bad("this provider requires pushed authorization requests");
        }
        None => params,
    };
    let Some(client_id) = params.get("client_id") else {
        return bad("missing client_id");
    };
    let Some(client) = idp.config.client(client_id) else {
        return bad(&format!("unknown client_id '{client_id}'"));
    };
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return bad("missing redirect_uri");
    };
    if !Config::uri_allowed(&client.redirect_uris, redirect_uri) {
        return bad(&format!(
            "redirect_uri '{redirect_uri}' is not registered for client '{client_id}'"
        ));
    }
    let Ok(redirect_url) = url::Url::parse(redirect_uri) else {
        return bad("redirect_uri is not a valid URL");
    };

    let faults = idp.faults.snapshot();
    let state = params.get("state");
    let respond = |pairs: &[(&str, &str)]| {
        let mut url = redirect_url.clone();
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in pairs {
                query.append_pair(k, v);
            }
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            match faults.authorize_iss {
                None => {
                    query.append_pair("iss", &idp.issuer);
                }
                Some(IssParamFault::Wrong) => {
                    query.append_pair("iss", WRONG_ISSUER);
                }
                Some(IssParamFault::Missing) => {}
            }
        }
        redirect(url.as_str())
    };
    let error = |error: &str, description: &str| {
        respond(&[("error", error), ("error_description", description)])
    };

    if params.get("request").is_some() || (!pushed && params.get("request_uri").is_some()) {
        return error("request_not_supported", "request objects are not supported");
    }
    if params.get("response_type") != Some("code") {
        return error(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let scope = params.get("scope").unwrap_or("");
    if !has_scope(scope, "openid") {
        return error("invalid_scope", "scope must contain openid");
    }
    let Some(challenge) = params.get("code_challenge") else {
        return error("invalid_request", "code_challenge (PKCE) is required");
    };
    if params.get("code_challenge_method") != Some("S256") {
        return error("invalid_request", "code_challenge_method must be S256");
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return error(
            "invalid_request",
            "code_challenge must be a base64url SHA-256 hash",
        );
    }
    if let Some((e, d)) = &faults.authorize_error {
        return error(e, d);
    }

    let now = idp.now();
    let code = crate::random_token(32);
    let sid = crate::random_token(16);
    {
        let mut store = idp.store();
        store.purge(now);
        let family = store.new_family();
        store.sessions.insert(
            sid.clone(),
            Session {
                sub: idp.config.sub.clone(),
                ..Session::default()
            },
        );
        store.last_sign_in.insert(idp.config.sub.clone(), now);
        store.codes.insert(
            code.clone(),
            CodeEntry {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: challenge.to_owned(),
                nonce: params.get("nonce").map(str::to_owned),
                scope: scope.to_owned(),
                sid,
                auth_time: now,
                expires_at: now + CODE_LIFETIME_SECS,
                family,
                redeemed: false,
                dpop_jkt: params.get("dpop_jkt").map(str::to_owned),
            },
        );
    }
    respond(&[("code", &code)])
}
