//! DPoP (RFC 9449) towards APIs: the headers a call with a DPoP-bound token
//! carries, and the nonce challenges APIs answer with.
//!
//! A DPoP-bound token is sent as `Authorization: DPoP <token>` with a fresh
//! proof in the `DPoP` header (its own `jti`, `htm`, `htu` without query and
//! fragment, `iat`, `ath` = hash of the token, and the API origin's latest
//! nonce). A bearer token (DPoP off, a session older than DPoP, or a
//! provider allowed to downgrade) goes as `Authorization: Bearer <token>`.
//!
//! Both the proxy and the managed clients ask [`api_headers`] for the
//! header values; both feed every response to [`observe`], which keeps the
//! API's `DPoP-Nonce` (from any response, successful or not) and says
//! whether the response is a `use_dpop_nonce` challenge worth one retry
//! with the same token.
//!
//! Retries after a nonce challenge: a managed client retries once when its
//! request can be replayed (the same rule as for its 401 retry); the proxy
//! retries once when the browser's request has no body, and otherwise passes
//! the 401 on (the nonce is kept, so the browser's next try succeeds).

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use oidc_bff_tokens::dpop::{DPOP_HEADER, DpopKey, is_nonce_challenge};
use oidc_bff_tokens::{AccessToken, ClientCredentialsRequest, TokenEngine, TokenError, Versioned};
use url::Url;

use crate::token_policy::Used;

/// The credentials of one API call: `Authorization`, and the `DPoP` proof
/// for a DPoP-bound token. Both values are marked sensitive.
pub(crate) type ApiHeaders = Vec<(HeaderName, HeaderValue)>;

/// The headers for a call `method` to `url` with `token`, bound to `key`
/// (`None`: a bearer token). Errors when the token cannot be a header value
/// or the proof cannot be signed.
pub(crate) fn api_headers(
    engine: &TokenEngine,
    method: &Method,
    url: &Url,
    token: &AccessToken,
    key: Option<&DpopKey>,
) -> Result<ApiHeaders, TokenError> {
    let unusable =
        || TokenError::InvalidResponse("the access token cannot be sent in a header".into());
    let Some(key) = key else {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.secret())).map_err(|_| unusable())?;
        value.set_sensitive(true);
        return Ok(vec![(header::AUTHORIZATION, value)]);
    };
    let mut authorization =
        HeaderValue::from_str(&format!("DPoP {}", token.secret())).map_err(|_| unusable())?;
    authorization.set_sensitive(true);
    let proof = engine.dpop_proof(key, method.as_str(), url, token)?;
    let mut proof = HeaderValue::from_str(&proof).map_err(|_| unusable())?;
    proof.set_sensitive(true);
    Ok(vec![
        (header::AUTHORIZATION, authorization),
        (HeaderName::from_static(DPOP_HEADER), proof),
    ])
}

/// Puts `headers` into `map`, replacing any value there.
pub(crate) fn apply(map: &mut HeaderMap, headers: ApiHeaders) {
    for (name, value) in headers {
        map.insert(name, value);
    }
}

/// Keeps the `DPoP-Nonce` of an API response from `url`, and returns
/// whether the response is a `401` DPoP `use_dpop_nonce` challenge that
/// brought a nonce (then one retry with the same token may succeed).
pub(crate) fn observe(
    engine: &TokenEngine,
    url: &Url,
    status: StatusCode,
    headers: &HeaderMap,
) -> bool {
    let fresh = engine.dpop_nonces().remember_headers(url, headers);
    fresh
        && status == StatusCode::UNAUTHORIZED
        && is_nonce_challenge(
            headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
}

/// The DPoP key `token` is bound to, if any: the session's key for a user
/// token (`loaded`: the session as read in this request), the client key
/// for a client token. Always `None` with DPoP off.
pub(crate) async fn binding(
    engine: &TokenEngine,
    client: &ClientCredentialsRequest,
    used: &Used,
    token: &AccessToken,
    loaded: Option<&Versioned>,
) -> Option<DpopKey> {
    if !engine.config().dpop {
        return None;
    }
    match used {
        Used::Client => engine.client_binding(client, token.clone()).await.1,
        Used::User(id) => match loaded {
            Some(current) => current.record.dpop_binding().cloned(),
            None => match engine.load_session(id).await {
                Ok(Some(current)) => current.record.dpop_binding().cloned(),
                _ => None,
            },
        },
    }
}
