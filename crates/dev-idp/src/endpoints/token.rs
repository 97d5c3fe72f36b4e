//! `POST /token`: the `authorization_code` (with PKCE S256),
//! `refresh_token` (rotation, reuse detection) and `client_credentials`
//! grants.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Params, authenticate_client, has_scope, invalid_request, no_store, oauth_error};
use crate::config::RefreshTokenPolicy;
use crate::counters::Counter;
use crate::dpop::{NonceMode, token_endpoint_check};
use crate::faults::FaultState;
use crate::jwt;
use crate::keys::b64url;
use crate::state::Idp;
use crate::store::{AccessEntry, FamilyId, RefreshEntry};

pub(crate) async fn token(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = handle(&idp, &headers, &body).await;
    if !response.status().is_success() {
        idp.counters.bump(Counter::TokenErrors);
    }
    // With nonces on, every answer names the current one (RFC 9449 §8).
    if idp.faults.snapshot().dpop_nonce == NonceMode::Required
        && !response.headers().contains_key("dpop-nonce")
        && let Ok(nonce) = http::HeaderValue::from_str(&idp.dpop_nonce())
    {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    no_store(response)
}

fn invalid_grant(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

async fn handle(idp: &Idp, headers: &HeaderMap, body: &[u8]) -> Response {
    let params = Params::parse(body);
    if params
        .as_ref()
        .is_ok_and(|p| p.get("grant_type") == Some("refresh_token"))
    {
        idp.counters.bump(Counter::RefreshAttempts);
    }
    let faults = idp.faults.snapshot();
    if let Some(delay) = faults.token_delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = faults.token_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return oauth_error(status, "server_error", "injected fault");
    }
    if let Some((status, body)) = &faults.refresh_answer
        && params
            .as_ref()
            .is_ok_and(|p| p.get("grant_type") == Some("refresh_token"))
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [(header::CONTENT_TYPE, "text/html")], body.clone()).into_response();
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| {
            v.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form_type {
        return invalid_request("the body must be application/x-www-form-urlencoded");
    }
    let params = match params {
        Ok(p) => p,
        Err(e) => return invalid_request(&e),
    };
    let client_id = match authenticate_client(idp, headers, &params) {
        Ok(id) => id,
        Err(response) => return response,
    };
    // DPoP (RFC 9449): the key a valid proof holds; `None` without a proof
    // (or when the downgrade fault ignores proofs).
    let jkt = if faults.dpop_answer_bearer {
        None
    } else {
        match token_endpoint_check(idp, headers, faults.dpop_nonce) {
            Ok(jkt) => jkt,
            Err(response) => return response,
        }
    };
    let jkt = jkt.as_deref();
    match params.get("grant_type") {
        Some("authorization_code") => code_grant(idp, &client_id, &params, &faults, jkt),
        Some("refresh_token") => refresh_grant(idp, &client_id, &params, &faults, jkt),
        Some("client_credentials") => {
            client_credentials_grant(idp, &client_id, &params, &faults, jkt)
        }
        Some(other) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("grant_type '{other}' is not supported"),
        ),
        None => invalid_request("missing grant_type"),
    }
}

/// What a user grant (code or refresh) was issued for.
struct UserGrant {
    client_id: String,
    family: FamilyId,
    scope: String,
    sub: String,
    sid: String,
    auth_time: u64,
    /// The DPoP key the tokens are bound to.
    jkt: Option<String>,
}

fn code_grant(
    idp: &Idp,
    client_id: &str,
    params: &Params,
    faults: &FaultState,
    jkt: Option<&str>,
) -> Response {
    let Some(code) = params.get("code") else {
        return invalid_request("missing code");
    };
    let entry = {
        let mut store = idp.store();
        let Some(entry) = store.codes.get_mut(code) else {
            return invalid_grant("unknown authorization code");
        };
        if entry.client_id != client_id {
            return invalid_grant("the code was issued to another client");
        }
        if entry.redeemed {
            // Replay: revoke everything the code issued (RFC 6749 §4.1.2).
            let family = entry.family;
            store.revoke_family(family);
            return invalid_grant("authorization code already used");
        }
        entry.redeemed = true;
        let entry = entry.clone();
        if entry.expires_at <= idp.now() {
            return invalid_grant("authorization code expired");
        }
        if params.get("redirect_uri") != Some(entry.redirect_uri.as_str()) {
            return invalid_grant("redirect_uri does not match the authorization request");
        }
        let Some(verifier) = params.get("code_verifier") else {
            return invalid_grant("missing code_verifier");
        };
        let verifier_ok = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !verifier_ok || b64url(&Sha256::digest(verifier.as_bytes())) != entry.code_challenge {
            return invalid_grant("PKCE verification failed");
        }
        // RFC 9449 §10: a code bound with dpop_jkt needs a proof of that key.
        if !faults.dpop_answer_bearer
            && let Some(bound) = &entry.dpop_jkt
            && Some(bound.as_str()) != jkt
        {
            return invalid_grant("the DPoP proof's key does not match dpop_jkt");
        }
        if let Some(session) = store.sessions.get_mut(&entry.sid) {
            session.clients.insert(client_id.to_owned());
        }
        entry
    };
    let grant = UserGrant {
        client_id: client_id.to_owned(),
        family: entry.family,
        scope: entry.scope.clone(),
        sub: idp.config.sub.clone(),
        sid: entry.sid,
        auth_time: entry.auth_time,
        jkt: jkt.map(str::to_owned),
    };
    let issue_refresh = match idp.config.refresh_policy {
        RefreshTokenPolicy::Always => true,
        RefreshTokenPolicy::OfflineAccessOnly => has_scope(&entry.scope, "offline_access"),
        RefreshTokenPolicy::Never => false,
    };
    idp.counters.bump(Counter::CodeGrants);
    user_tokens(
        idp,
        &grant,
        &entry.scope,
        &params.resources,
        entry.nonce.as_deref(),
        issue_refresh,
        true,
        faults,
    )
}

fn refresh_grant(
    idp: &Idp,
    client_id: &str,
    params: &Params,
    faults: &FaultState,
    jkt: Option<&str>,
) -> Response {
    if let Some(error) = &faults.refresh_error {
        return oauth_error(StatusCode::BAD_REQUEST, error, "injected fault");
    }
    let Some(token) = params.get("refresh_token") else {
        return invalid_request("missing refresh_token");
    };
    let rotate = idp.config.refresh_token_rotation && !faults.refresh_omits_refresh_token;
    let (entry, scope) = {
        let mut store = idp.store();
        let Some(entry) = store.refresh.get(token).cloned() else {
            return invalid_grant("unknown refresh token");
        };
        if entry.client_id != client_id {
            return invalid_grant("the refresh token was issued to another client");
        }
        if store.family_revoked(entry.family) {
            return invalid_grant("refresh token revoked");
        }
        // A refresh token bound to a DPoP key needs a proof of that key.
        if entry.jkt.is_some() && entry.jkt.as_deref() != jkt {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                "the refresh token is bound to another DPoP key",
            );
        }
        if entry.used {
            idp.counters.bump(Counter::RefreshReuseDetected);
            if idp.config.refresh_reuse_detection {
                store.revoke_family(entry.family);
                return invalid_grant("refresh token reuse detected; the grant is revoked");
            }
            return invalid_grant("refresh token already used");
        }
        let scope = match params.get("scope") {
            Some(requested) if !requested.split(' ').all(|s| has_scope(&entry.scope, s)) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "scope exceeds the original grant",
                );
            }
            Some(requested) => requested.to_owned(),
            None => entry.scope.clone(),
        };
        if rotate && let Some(e) = store.refresh.get_mut(token) {
            e.used = true;
        }
        (entry, scope)
    };
    // Like several real providers: the user's latest sign-in, on any
    // device, instead of the one this grant came from.
    let auth_time = if faults.refresh_moves_auth_time {
        idp.store()
            .last_sign_in
            .get(&entry.sub)
            .copied()
            .unwrap_or(entry.auth_time)
            .max(entry.auth_time)
    } else {
        entry.auth_time
    };
    let grant = UserGrant {
        client_id: entry.client_id,
        family: entry.family,
        scope: entry.scope,
        sub: entry.sub,
        sid: entry.sid,
        auth_time,
        jkt: entry.jkt.or_else(|| jkt.map(str::to_owned)),
    };
    idp.counters.bump(Counter::RefreshGrants);
    let with_id_token = !faults.refresh_omits_id_token;
    user_tokens(
        idp,
        &grant,
        &scope,
        &params.resources,
        None,
        rotate,
        with_id_token,
        faults,
    )
}

/// Issues the answer of a user grant: access token, id token (if `openid` was
/// granted and `with_id_token`) and a new refresh token of the same family
/// (if `new_refresh`).
#[allow(clippy::too_many_arguments)]
fn user_tokens(
    idp: &Idp,
    grant: &UserGrant,
    scope: &str,
    resources: &[String],
    nonce: Option<&str>,
    new_refresh: bool,
    with_id_token: bool,
    faults: &FaultState,
) -> Response {
    let now = idp.now();
    let key = idp.current_key();
    let mut extra = json!({"sid": grant.sid, "auth_time": grant.auth_time});
    if let Some(jkt) = &grant.jkt {
        extra["cnf"] = json!({"jkt": jkt});
    }
    let access_token = access_token(
        idp,
        &grant.client_id,
        &grant.sub,
        scope,
        resources,
        Some(grant.family),
        extra,
    );
    let mut answer = token_answer(idp, &access_token, scope, faults, grant.jkt.is_some());
    if with_id_token && has_scope(scope, "openid") {
        let mut claims: Map<String, Value> = idp.config.claims.clone();
        let standard = json!({
            "iss": idp.issuer,
            "sub": grant.sub,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "iat": now,
            "exp": now + idp.config.id_token_lifetime.as_secs(),
            "auth_time": grant.auth_time,
            "sid": grant.sid,
            "at_hash": jwt::at_hash(&access_token),
        });
        if let Value::Object(standard) = standard {
            claims.extend(standard);
        }
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), nonce.into());
        }
        answer["id_token"] = jwt::id_token(&key, claims, faults.id_token_fault, idp.now()).into();
    }
    if new_refresh {
        let refresh_token = crate::random_token(32);
        idp.store().refresh.insert(
            refresh_token.clone(),
            RefreshEntry {
                client_id: grant.client_id.clone(),
                family: grant.family,
                scope: grant.scope.clone(),
                sub: grant.sub.clone(),
                sid: grant.sid.clone(),
                auth_time: grant.auth_time,
                used: false,
                jkt: grant.jkt.clone(),
            },
        );
        answer["refresh_token"] = refresh_token.into();
    }
    Json(answer).into_response()
}

fn client_credentials_grant(
    idp: &Idp,
    client_id: &str,
    params: &Params,
    faults: &FaultState,
    jkt: Option<&str>,
) -> Response {
    let scope = params.get("scope").unwrap_or("");
    let extra = match jkt {
        Some(jkt) => json!({"cnf": {"jkt": jkt}}),
        None => json!({}),
    };
    let token = access_token(
        idp,
        client_id,
        client_id,
        scope,
        &params.resources,
        None,
        extra,
    );
    idp.counters.bump(Counter::ClientCredentialsGrants);
    Json(token_answer(idp, &token, scope, faults, jkt.is_some())).into_response()
}

/// The common part of token answers.
fn token_answer(
    idp: &Idp,
    access_token: &str,
    scope: &str,
    faults: &FaultState,
    dpop_bound: bool,
) -> Value {
    let token_type = if dpop_bound { "DPoP" } else { "Bearer" };
    let mut answer = json!({"access_token": access_token, "token_type": token_type});
    if !faults.omit_expires_in {
        answer["expires_in"] = idp.config.access_token_lifetime.as_secs().into();
    }
    if !scope.is_empty() {
        answer["scope"] = scope.into();
    }
    answer
}

/// Mints and records a JWT access token. `aud` is the `resource` value(s)
/// when given, else the client id.
fn access_token(
    idp: &Idp,
    client_id: &str,
    sub: &str,
    scope: &str,
    resources: &[String],
    family: Option<FamilyId>,
    extra: Value,
) -> String {
    let now = idp.now();
    let exp = now + idp.config.access_token_lifetime.as_secs();
    let aud = match resources {
        [] => Value::from(client_id),
        [one] => Value::from(one.as_str()),
        many => Value::from(many.to_vec()),
    };
    let mut claims = json!({
        "iss": idp.issuer,
        "sub": sub,
        "aud": aud,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "exp": exp,
        "jti": crate::random_token(16),
    });
    if let (Value::Object(claims), Value::Object(extra)) = (&mut claims, extra) {
        claims.extend(extra);
    }
    let token = jwt::sign(&idp.current_key(), "at+jwt", &claims);
    idp.store().access.insert(
        token.clone(),
        AccessEntry {
            family,
            exp,
            revoked: false,
            claims,
        },
    );
    token
}
