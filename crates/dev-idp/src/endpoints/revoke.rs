//! `POST /revoke`: token revocation (RFC 7009). Revoking a refresh token
//! revokes its whole grant family (all its refresh and access tokens).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};

use super::{Params, authenticate_client, invalid_request, no_store, oauth_error};
use crate::counters::Counter;
use crate::state::Idp;

pub(crate) async fn revoke(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    idp.counters.bump(Counter::Revocations);
    if let Some(delay) = idp.faults.snapshot().revocation_delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = idp.faults.snapshot().revocation_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return oauth_error(status, "server_error", "injected fault");
    }
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return invalid_request(&e),
    };
    let client_id = match authenticate_client(&idp, &headers, &params) {
        Ok(id) => id,
        Err(response) => return response,
    };
    let Some(token) = params.get("token") else {
        return invalid_request("missing token");
    };
    // The token_type_hint only speeds up lookups elsewhere; both tables are
    // searched here. Tokens of other clients and unknown tokens are left
    // alone, and the answer is 200 either way (RFC 7009 §2.2).
    let mut store = idp.store();
    if let Some(entry) = store.refresh.get(token) {
        if entry.client_id == client_id {
            let family = entry.family;
            store.revoke_family(family);
        }
    } else if let Some(entry) = store.access.get_mut(token)
        && entry.claims.get("client_id").and_then(|c| c.as_str()) == Some(client_id.as_str())
    {
        entry.revoked = true;
    }
    no_store(StatusCode::OK.into_response())
}
