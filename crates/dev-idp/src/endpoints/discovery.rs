//! `GET /.well-known/openid-configuration`, `GET
//! /.well-known/oauth-authorization-server` (RFC 8414) and `GET /jwks`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use crate::counters::Counter;
use crate::state::Idp;

/// Client authentication methods of every endpoint that authenticates clients.
const AUTH_METHODS: [&str; 3] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
];

/// Algorithms accepted for `private_key_jwt` assertions.
const ASSERTION_ALGS: [&str; 3] = ["RS256", "PS256", "ES256"];

/// The OpenID Provider metadata document.
pub(crate) async fn discovery(State(idp): State<Arc<Idp>>) -> Json<Value> {
    idp.counters.bump(Counter::Discovery);
    let faults = idp.faults.snapshot();
    let mut doc = json!({
        "issuer": faults.discovery_issuer.unwrap_or_else(|| idp.issuer.clone()),
        "authorization_endpoint": idp.endpoint("/authorize"),
        "token_endpoint": idp.endpoint("/token"),
        "userinfo_endpoint": idp.endpoint("/userinfo"),
        "jwks_uri": faults.discovery_jwks_uri.unwrap_or_else(|| idp.endpoint("/jwks")),
        "revocation_endpoint": idp.endpoint("/revoke"),
        "introspection_endpoint": idp.endpoint("/introspect"),
        "end_session_endpoint": idp.endpoint("/endsession"),
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": crate::dpop::ALGS,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "pushed_authorization_request_endpoint": idp.endpoint("/par"),
        "require_pushed_authorization_requests": idp.config.require_par,
        "id_token_signing_alg_values_supported": [idp.config.signing_alg.as_str()],
        "subject_types_supported": ["public"],
        "claims_supported": claims_supported(&idp),
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "frontchannel_logout_supported": false,
    });
    if (faults.no_revocation_endpoint || faults.revocation_only_in_oauth_metadata)
        && let Value::Object(map) = &mut doc
    {
        map.remove("revocation_endpoint");
        map.remove("revocation_endpoint_auth_methods_supported");
    }
    Json(doc)
}

/// The OAuth 2.0 Authorization Server Metadata (RFC 8414): the OAuth
/// endpoints only. With `no_revocation_endpoint` it lacks the revocation
/// endpoint too.
pub(crate) async fn oauth_metadata(State(idp): State<Arc<Idp>>) -> Json<Value> {
    let faults = idp.faults.snapshot();
    let mut doc = json!({
        "issuer": faults.discovery_issuer.unwrap_or_else(|| idp.issuer.clone()),
        "authorization_endpoint": idp.endpoint("/authorize"),
        "token_endpoint": idp.endpoint("/token"),
        "jwks_uri": idp.endpoint("/jwks"),
        "revocation_endpoint": idp.endpoint("/revoke"),
        "introspection_endpoint": idp.endpoint("/introspect"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "pushed_authorization_request_endpoint": idp.endpoint("/par"),
        "require_pushed_authorization_requests": idp.config.require_par,
    });
    if faults.no_revocation_endpoint
        && let Value::Object(map) = &mut doc
    {
        map.remove("revocation_endpoint");
        map.remove("revocation_endpoint_auth_methods_supported");
    }
    Json(doc)
}

fn claims_supported(idp: &Idp) -> Vec<String> {
    let standard = [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "sid",
        "azp",
        "at_hash",
    ];
    standard
        .iter()
        .map(|s| (*s).to_owned())
        .chain(idp.config.claims.keys().cloned())
        .collect()
}

/// The JSON Web Key Set: the current key, the previous one after a rotation,
/// and (as a fault) one unparseable entry.
pub(crate) async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    idp.counters.bump(Counter::Jwks);
    let faults = idp.faults.snapshot();
    if let Some(status) = faults.jwks_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, "injected fault").into_response();
    }
    let mut keys = idp.keys().published();
    if faults.jwks_garbage_key {
        keys.push(json!({"kty": "RSA", "kid": "garbage", "use": "sig", "alg": "RS256", "n": "!not base64!", "e": 42}));
    }
    Json(json!({ "keys": keys })).into_response()
}
