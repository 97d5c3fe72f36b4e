//! Runtime fault injection: make the IdP misbehave on purpose so clients'
//! error handling can be tested. All setters take `&self`.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Ways to corrupt id tokens issued while the fault is set.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenFault {
    /// The signature does not verify (one byte flipped).
    BadSignature,
    /// Unsigned token: header `alg: none` and an empty signature.
    AlgNone,
    /// HS256 "key confusion": HMAC-signed with the public key's PEM text as secret.
    Hs256WithPublicKey,
    /// `iss` is a different issuer.
    WrongIssuer,
    /// No `iss` claim.
    MissingIssuer,
    /// `aud` is a different client.
    WrongAudience,
    /// No `aud` claim.
    MissingAudience,
    /// `aud` is an array with the client and one untrusted extra audience.
    ExtraAudience,
    /// `azp` names a different client.
    WrongAzp,
    /// No `azp` claim (allowed with a single audience).
    MissingAzp,
    /// No `sub` claim.
    MissingSub,
    /// No `iat` claim.
    MissingIat,
    /// `exp` (and `iat`) lie in the past.
    Expired,
    /// `nonce` does not match the authorization request's nonce.
    WrongNonce,
    /// No `nonce` claim.
    MissingNonce,
    /// `at_hash` does not match the access token.
    WrongAtHash,
    /// The header has no `kid`.
    NoKid,
    /// The header's `kid` is not in the JWKS.
    UnknownKid,
    /// A different `sub` than the signed-in user's (useful on refresh).
    DifferentSub,
}

/// Ways to corrupt the RFC 9207 `iss` parameter of authorization responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssParamFault {
    /// `iss` names a different issuer.
    Wrong,
    /// No `iss` parameter.
    Missing,
}

/// The current fault settings (all off by default).
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultState {
    pub(crate) token_delay: Option<Duration>,
    pub(crate) token_status: Option<u16>,
    pub(crate) refresh_answer: Option<(u16, String)>,
    pub(crate) jwks_status: Option<u16>,
    pub(crate) refresh_error: Option<String>,
    pub(crate) refresh_omits_refresh_token: bool,
    pub(crate) refresh_omits_id_token: bool,
    pub(crate) omit_expires_in: bool,
    pub(crate) id_token_fault: Option<IdTokenFault>,
    pub(crate) discovery_issuer: Option<String>,
    pub(crate) authorize_iss: Option<IssParamFault>,
    pub(crate) authorize_error: Option<(String, String)>,
    pub(crate) userinfo_sub: Option<String>,
    pub(crate) userinfo_extra_claims: Option<serde_json::Map<String, serde_json::Value>>,
    pub(crate) discovery_jwks_uri: Option<String>,
    pub(crate) jwks_garbage_key: bool,
    pub(crate) revocation_status: Option<u16>,
    pub(crate) no_revocation_endpoint: bool,
    pub(crate) refresh_moves_auth_time: bool,
    pub(crate) revocation_only_in_oauth_metadata: bool,
    pub(crate) revocation_delay: Option<Duration>,
    pub(crate) par_answer: Option<(u16, String)>,
    pub(crate) par_request_uris_expired: bool,
    pub(crate) dpop_nonce: crate::dpop::NonceMode,
    pub(crate) dpop_answer_bearer: bool,
}

/// Runtime fault injection for a [`crate::RunningIdp`]; see
/// [`RunningIdp::faults`](crate::RunningIdp::faults).
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the current settings.
    pub(crate) fn snapshot(&self) -> FaultState {
        self.lock().clone()
    }

    /// Turns every fault off.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }

    /// The token endpoint sleeps this long before answering.
    pub fn set_token_delay(&self, d: Option<Duration>) {
        self.lock().token_delay = d;
    }

    /// The token endpoint answers every grant with this HTTP status and
    /// `{"error":"server_error"}`.
    pub fn set_token_status(&self, status: Option<u16>) {
        self.lock().token_status = status;
    }

    /// `refresh_token` grants answer with this HTTP status and raw body
    /// (`(status, body)`), e.g. an HTML error page or a garbage 200, without
    /// spending the refresh token.
    pub fn set_refresh_answer(&self, answer: Option<(u16, &str)>) {
        self.lock().refresh_answer = answer.map(|(status, body)| (status, body.to_owned()));
    }

    /// The JWKS endpoint answers this HTTP status with no keys (an outage).
    pub fn set_jwks_status(&self, status: Option<u16>) {
        self.lock().jwks_status = status;
    }

    /// `refresh_token` grants answer 400 with this `error` code.
    pub fn set_refresh_error(&self, error: Option<&str>) {
        self.lock().refresh_error = error.map(str::to_owned);
    }

    /// Refresh answers carry no `refresh_token`; the presented one stays valid.
    pub fn set_refresh_omits_refresh_token(&self, on: bool) {
        self.lock().refresh_omits_refresh_token = on;
    }

    /// Refresh answers carry no `id_token`.
    pub fn set_refresh_omits_id_token(&self, on: bool) {
        self.lock().refresh_omits_id_token = on;
    }

    /// Token answers lack `expires_in`.
    pub fn set_omit_expires_in(&self, on: bool) {
        self.lock().omit_expires_in = on;
    }

    /// Corrupts id tokens issued from now on (code and refresh grants).
    pub fn set_id_token_fault(&self, f: Option<IdTokenFault>) {
        self.lock().id_token_fault = f;
    }

    /// Discovery reports this issuer instead of the real one.
    pub fn set_discovery_issuer(&self, issuer: Option<&str>) {
        self.lock().discovery_issuer = issuer.map(str::to_owned);
    }

    /// Corrupts the `iss` parameter of authorization responses.
    pub fn set_authorize_iss(&self, f: Option<IssParamFault>) {
        self.lock().authorize_iss = f;
    }

    /// `/authorize` redirects back with `error` and `error_description`
    /// (`(error, description)`) instead of a code.
    pub fn set_authorize_error(&self, error: Option<(&str, &str)>) {
        self.lock().authorize_error = error.map(|(e, d)| (e.to_owned(), d.to_owned()));
    }

    /// Userinfo reports this `sub` instead of the user's.
    pub fn set_userinfo_sub(&self, sub: Option<&str>) {
        self.lock().userinfo_sub = sub.map(str::to_owned);
    }

    /// Userinfo answers also carry these claims (a JSON object), overriding
    /// the user's; a `sub` among them is ignored (see
    /// [`set_userinfo_sub`](Self::set_userinfo_sub)).
    pub fn set_userinfo_extra_claims(&self, claims: Option<serde_json::Value>) {
        self.lock().userinfo_extra_claims = claims.map(|c| match c {
            serde_json::Value::Object(mut map) => {
                map.remove("sub");
                map
            }
            _ => serde_json::Map::new(),
        });
    }

    /// Discovery reports this `jwks_uri` instead of the real one (`/jwks`
    /// with a query string still serves the keys).
    pub fn set_discovery_jwks_uri(&self, uri: Option<&str>) {
        self.lock().discovery_jwks_uri = uri.map(str::to_owned);
    }

    /// The JWKS also contains one unparseable key entry.
    pub fn set_jwks_garbage_key(&self, on: bool) {
        self.lock().jwks_garbage_key = on;
    }

    /// The revocation endpoint answers this HTTP status (with
    /// `{"error":"server_error"}`) without revoking anything.
    pub fn set_revocation_status(&self, status: Option<u16>) {
        self.lock().revocation_status = status;
    }

    /// Discovery omits `revocation_endpoint` (the endpoint keeps working).
    pub fn set_no_revocation_endpoint(&self, on: bool) {
        self.lock().no_revocation_endpoint = on;
    }

    /// Refreshed id tokens carry as `auth_time` the user's latest sign-in at
    /// the IdP (on any browser), not the one the grant came from — as some
    /// widely used providers do.
    pub fn set_refresh_moves_auth_time(&self, on: bool) {
        self.lock().refresh_moves_auth_time = on;
    }

    /// The OpenID discovery document omits `revocation_endpoint`, which only
    /// the OAuth 2.0 Authorization Server Metadata (RFC 8414,
    /// `/.well-known/oauth-authorization-server`) lists. That document is
    /// served whatever the setting.
    pub fn set_revocation_only_in_oauth_metadata(&self, on: bool) {
        self.lock().revocation_only_in_oauth_metadata = on;
    }

    /// How the token endpoint treats DPoP nonces (default: none needed).
    pub fn set_dpop_nonce(&self, mode: crate::dpop::NonceMode) {
        self.lock().dpop_nonce = mode;
    }

    /// The token endpoint ignores DPoP proofs and answers unbound `Bearer`
    /// tokens (a downgrade, as from a provider without DPoP support).
    pub fn set_dpop_answer_bearer(&self, on: bool) {
        self.lock().dpop_answer_bearer = on;
    }

    /// The revocation endpoint sleeps this long before answering.
    pub fn set_revocation_delay(&self, delay: Option<Duration>) {
        self.lock().revocation_delay = delay;
    }

    /// The pushed authorization request endpoint answers this HTTP status
    /// and raw body (`(status, body)`), e.g. `(400,
    /// r#"{"error":"invalid_request"}"#)` or a 503 page, and stores nothing.
    pub fn set_par_answer(&self, answer: Option<(u16, &str)>) {
        self.lock().par_answer = answer.map(|(status, body)| (status, body.to_owned()));
    }

    /// `request_uri`s issued from now on are already expired when the
    /// browser brings them to `/authorize`.
    pub fn set_par_request_uris_expired(&self, on: bool) {
        self.lock().par_request_uris_expired = on;
    }
}
