//! `GET|POST /userinfo`: the signed-in user's claims for a valid access
//! token that was granted the `openid` scope. A DPoP-bound token (`cnf.jkt`)
//! must come as `Authorization: DPoP` with a proof of its key for this
//! method and URL (RFC 9449 §7.1); a bearer use of it is refused. When the
//! token endpoint requires DPoP nonces, so does userinfo.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use super::{bearer_token, has_scope, no_store};
use crate::counters::Counter;
use crate::dpop::{NonceMode, ProofError, Rejection, verify_proof};
use crate::state::Idp;

pub(crate) async fn userinfo(
    State(idp): State<Arc<Idp>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    idp.counters.bump(Counter::Userinfo);
    let (token, dpop_scheme) = match bearer_token(&headers) {
        Some(token) => (token, false),
        None => match dpop_token(&headers) {
            Some(token) => (token, true),
            None => return challenge(StatusCode::UNAUTHORIZED, "Bearer realm=\"dev-idp\""),
        },
    };
    let claims = idp.store().active_access(&token, idp.now()).cloned();
    let Some(claims) = claims else {
        return challenge(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"dev-idp\", error=\"invalid_token\", error_description=\"unknown, expired or revoked\"",
        );
    };
    let bound = claims
        .pointer("/cnf/jkt")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Err(refused) = check_binding(&idp, &method, &headers, &token, bound, dpop_scheme) {
        return refused;
    }
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

/// The token of `Authorization: DPoP <token>`.
fn dpop_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("dpop")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// RFC 9449 §7.1: a bound token needs the `DPoP` scheme and a proof of its
/// key (with `ath`, and the IdP's nonce when nonces are required); an
/// unbound token may not pose as a DPoP one.
#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
fn check_binding(
    idp: &Idp,
    method: &Method,
    headers: &HeaderMap,
    token: &str,
    bound: Option<String>,
    dpop_scheme: bool,
) -> Result<(), Response> {
    let nonce = match idp.faults.snapshot().dpop_nonce {
        NonceMode::Off => None,
        NonceMode::Required | NonceMode::AlwaysNew => Some(idp.dpop_nonce()),
    };
    let reject = |error: &'static str, description: &str| {
        Rejection {
            error,
            description: description.to_owned(),
            nonce: nonce.clone(),
        }
        .into_response()
    };
    let Some(jkt) = bound else {
        return if dpop_scheme {
            Err(reject("invalid_token", "the token is not DPoP-bound"))
        } else {
            Ok(())
        };
    };
    if !dpop_scheme {
        return Err(reject(
            "invalid_token",
            "a DPoP-bound token must be sent with the DPoP scheme",
        ));
    }
    let mut proofs = headers.get_all("dpop").iter();
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err(reject(
            "invalid_dpop_proof",
            "exactly one DPoP proof is required",
        ));
    };
    let verified = verify_proof(
        proof.to_str().unwrap_or_default(),
        method.as_str(),
        &idp.endpoint("/userinfo"),
        Some(token),
        nonce.as_deref(),
        &idp.dpop_replay,
        idp.now(),
    )
    .map_err(|err| match err {
        ProofError::NonceRequired => reject("use_dpop_nonce", "a fresh DPoP nonce is required"),
        ProofError::Invalid(why) => reject("invalid_dpop_proof", &why),
    })?;
    if verified.jkt != jkt {
        return Err(reject(
            "invalid_token",
            "the token is not bound to the proof's key",
        ));
    }
    Ok(())
}

fn challenge(status: StatusCode, www_authenticate: &'static str) -> Response {
    let mut response = no_store(status.into_response());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(www_authenticate),
    );
    response
}
