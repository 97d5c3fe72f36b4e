//! `GET|POST /endsession`: OpenID Connect RP-initiated logout. Ends the IdP
//! session named by the `id_token_hint`'s `sid`, sends back-channel logout
//! tokens to the session's clients that registered a back-channel URI, then
//! redirects to the validated `post_logout_redirect_uri` or shows a page.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use http::{Method, StatusCode};
use jsonwebtoken::Validation;
use serde_json::Value;

use super::{Params, html_page, redirect};
use crate::config::Config;
use crate::counters::Counter;
use crate::jwt;
use crate::state::Idp;

pub(crate) async fn end_session(
    State(idp): State<Arc<Idp>>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    idp.counters.bump(Counter::EndSession);
    let bad = |msg: &str| html_page(StatusCode::BAD_REQUEST, "Invalid logout request", msg);
    let raw: &[u8] = if method == Method::POST {
        &body
    } else {
        query.as_deref().unwrap_or("").as_bytes()
    };
    let params = match Params::parse(raw) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let hint = match params.get("id_token_hint").map(|t| verify_hint(&idp, t)) {
        Some(Ok(claims)) => Some(claims),
        Some(Err(e)) => return bad(&format!("invalid id_token_hint: {e}")),
        None => None,
    };
    let hint_client = hint.as_ref().and_then(|c| {
        let aud = c.get("aud")?;
        aud.as_str()
            .or_else(|| aud.get(0)?.as_str())
            .map(str::to_owned)
    });
    let client_id = match (params.get("client_id"), hint_client) {
        (Some(given), Some(hinted)) if given != hinted => {
            return bad("client_id does not match the id_token_hint");
        }
        (Some(given), _) => Some(given.to_owned()),
        (None, hinted) => hinted,
    };
    let target = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let Some(client) = client_id.as_deref().and_then(|id| idp.config.client(id)) else {
                return bad(
                    "post_logout_redirect_uri needs an id_token_hint or client_id of a known client",
                );
            };
            if !Config::uri_allowed(&client.post_logout_redirect_uris, uri) {
                return bad(&format!(
                    "post_logout_redirect_uri '{uri}' is not registered"
                ));
            }
            match url::Url::parse(uri) {
                Ok(url) => Some(url),
                Err(_) => return bad("post_logout_redirect_uri is not a valid URL"),
            }
        }
    };

    if let Some(sid) = hint
        .as_ref()
        .and_then(|c| c.get("sid"))
        .and_then(Value::as_str)
    {
        end_idp_session(&idp, sid);
    }

    match target {
        Some(mut url) => {
            if let Some(state) = params.get("state") {
                url.query_pairs_mut().append_pair("state", state);
            }
            redirect(url.as_str())
        }
        None => html_page(
            StatusCode::OK,
            "Signed out",
            "You have been signed out of the development IdP.",
        ),
    }
}

/// Checks that `token` is an id token this IdP signed (with any key it ever
/// used); it may be expired.
fn verify_hint(idp: &Idp, token: &str) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| idp.keys().find(kid))
        .ok_or("unknown signing key")?;
    let mut validation = Validation::new(key.alg.jwt_alg());
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    validation.set_issuer(&[&idp.issuer]);
    jsonwebtoken::decode::<Value>(token, key.decoding_key(), &validation)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// Marks the session ended and notifies its clients' back-channel logout URIs.
fn end_idp_session(idp: &Idp, sid: &str) {
    let (sub, clients) = {
        let mut store = idp.store();
        let Some(session) = store.sessions.get_mut(sid) else {
            return;
        };
        if session.ended {
            return;
        }
        session.ended = true;
        (session.sub.clone(), session.clients.clone())
    };
    for client_id in clients {
        let Some(uri) = idp
            .config
            .client(&client_id)
            .and_then(|c| c.backchannel_logout_uri.clone())
        else {
            continue;
        };
        let token = jwt::logout_token(
            &idp.current_key(),
            &idp.issuer,
            Some(&sub),
            Some(sid),
            &client_id,
            idp.now(),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build();
            let sent = match client {
                Ok(client) => client
                    .post(&uri)
                    .form(&[("logout_token", token)])
                    .send()
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::warn!(%uri, error = %e, "back-channel logout delivery failed");
            }
        });
    }
}
