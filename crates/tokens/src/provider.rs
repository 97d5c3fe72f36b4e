//! Calls to the provider's endpoints: token, revocation, userinfo, pushed
//! authorization requests (RFC 9126). Client authentication (see
//! [`crate::client_auth`]) is added to each call by one method,
//! `ProviderClient::authenticate`.
//!
//! Every call has the configured connect and total timeouts (set on the HTTP
//! client), reads at most 1 MiB of the answer, and maps
//! failures onto [`TokenError`]: an OAuth error answer becomes
//! [`TokenError::Provider`] with its code parsed into an
//! [`OAuthErrorCode`], another 4xx answer
//! [`TokenError::UnexpectedStatus`] with the status as a number, and a
//! timeout, connection failure, 429 or 5xx
//! [`TokenError::ProviderUnavailable`]. Nothing we send (secrets, codes,
//! tokens) is ever put into an error.

use serde::Deserialize;

use std::sync::Arc;

use crate::client_auth::{AssertionSigner, ClientAuthMethod, JWT_BEARER_ASSERTION_TYPE};
use crate::clock::SharedClock;
use crate::config::OidcConfig;
use crate::discovery::ProviderMetadata;
use crate::dpop::{DPOP_HEADER, DPOP_TOKEN_TYPE, DpopKey, NonceCache};
use crate::error::{OAuthErrorCode, TokenError};
use crate::http::read_limited;
use crate::secret::{AccessToken, ClientSecret, IdToken, RefreshToken};

/// A successful token endpoint answer (RFC 6749 §5.1).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The access token.
    pub access_token: AccessToken,
    /// The token type: `Bearer`, or `DPoP` for a DPoP-bound token.
    pub token_type: String,
    /// Seconds until the access token expires, when the provider says.
    pub expires_in: Option<u64>,
    /// A (possibly rotated) refresh token.
    pub refresh_token: Option<RefreshToken>,
    /// An id_token (always at sign-in, sometimes at refresh).
    pub id_token: Option<IdToken>,
    /// The granted scopes, when the provider says.
    pub scope: Option<String>,
}

#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: String,
    token_type: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// Some providers send `expires_in` as a string; accept both.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Float(f64),
        Str(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        None => None,
        Some(NumOrStr::Num(n)) => Some(n),
        Some(NumOrStr::Float(f)) if f.is_finite() && f >= 0.0 => Some(f as u64),
        Some(NumOrStr::Float(_)) => None,
        Some(NumOrStr::Str(s)) => s.trim().parse().ok(),
    })
}

impl TokenResponse {
    /// Whether the token is DPoP-bound (`token_type` `DPoP`).
    pub fn is_dpop(&self) -> bool {
        self.token_type == DPOP_TOKEN_TYPE
    }

    /// Parses and checks a token endpoint answer body.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TokenError> {
        let raw: RawTokenResponse = serde_json::from_slice(bytes).map_err(|_| {
            TokenError::InvalidResponse(
                "token response is not valid JSON of the expected shape".into(),
            )
        })?;
        if raw.access_token.is_empty() {
            return Err(TokenError::InvalidResponse("empty access_token".into()));
        }
        let token_type = if raw.token_type.eq_ignore_ascii_case("bearer") {
            "Bearer"
        } else if raw.token_type.eq_ignore_ascii_case(DPOP_TOKEN_TYPE) {
            DPOP_TOKEN_TYPE
        } else {
            return Err(TokenError::InvalidResponse(format!(
                "unsupported token_type {:?}",
                raw.token_type.chars().take(20).collect::<String>()
            )));
        };
        Ok(TokenResponse {
            access_token: AccessToken::new(raw.access_token),
            token_type: token_type.into(),
            expires_in: raw.expires_in,
            refresh_token: raw
                .refresh_token
                .filter(|t| !t.is_empty())
                .map(RefreshToken::new),
            id_token: raw.id_token.filter(|t| !t.is_empty()).map(IdToken::new),
            scope: raw.scope,
        })
    }
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// A pushed authorization request's answer (RFC 9126 §2.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PushedAuthorizationRequest {
    /// The reference to send the browser with.
    pub(crate) request_uri: String,
    /// Seconds the `request_uri` is valid.
    pub(crate) expires_in: u64,
}

/// The client side of the provider's endpoints.
#[derive(Debug, Clone)]
pub(crate) struct ProviderClient {
    http: reqwest::Client,
    client_id: String,
    client_secret: Option<ClientSecret>,
    /// The configured method; `None` chooses per provider metadata.
    client_auth: Option<ClientAuthMethod>,
    /// Signs `private_key_jwt` assertions when a client key is configured.
    signer: Option<AssertionSigner>,
    clock: SharedClock,
    dpop: DpopSettings,
}

/// What the DPoP step of [`ProviderClient::token_request`] needs.
#[derive(Debug, Clone)]
struct DpopSettings {
    nonces: Arc<NonceCache>,
    clock: SharedClock,
    allow_bearer_downgrade: bool,
}

impl ProviderClient {
    pub(crate) fn new(config: &OidcConfig, http: reqwest::Client, clock: SharedClock) -> Self {
        Self {
            http,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client_auth: config.client_auth,
            signer: config.client_key.clone().map(|key| {
                AssertionSigner::new(
                    key,
                    &config.client_id,
                    config.client_key_id.as_deref(),
                    config.client_key_alg,
                )
            }),
            clock: Arc::clone(&clock),
            dpop: DpopSettings {
                nonces: Arc::default(),
                clock,
                allow_bearer_downgrade: config.allow_bearer_downgrade,
            },
        }
    }

    /// Proofs use this nonce cache and clock (the engine's).
    pub(crate) fn with_dpop(mut self, nonces: Arc<NonceCache>, clock: SharedClock) -> Self {
        self.dpop.nonces = nonces;
        self.dpop.clock = clock;
        self
    }

    /// Adds client authentication to a request to the token, revocation,
    /// introspection or pushed authorization request endpoint: the
    /// configured method, or the one chosen as [`crate::client_auth`]
    /// describes. `private_key_jwt` signs a fresh assertion for the
    /// provider's issuer.
    fn authenticate(
        &self,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        metadata: &ProviderMetadata,
    ) -> Result<reqwest::RequestBuilder, TokenError> {
        let method = match self.client_auth {
            Some(method) => Some(method),
            None if self.signer.is_some() => Some(ClientAuthMethod::PrivateKeyJwt),
            None if self.client_secret.is_some() && metadata.prefers_basic_auth() => {
                Some(ClientAuthMethod::ClientSecretBasic)
            }
            None if self.client_secret.is_some() => Some(ClientAuthMethod::ClientSecretPost),
            None => None,
        };
        let missing =
            |what: &str| TokenError::Config(format!("{what} is needed for client authentication"));
        Ok(match method {
            Some(ClientAuthMethod::ClientSecretBasic) => {
                let secret = self
                    .client_secret
                    .as_ref()
                    .ok_or_else(|| missing("a client secret"))?;
                // RFC 6749 §2.3.1: both parts are form-urlencoded first.
                let id = form_urlencode(&self.client_id);
                let secret = form_urlencode(secret.secret());
                request.basic_auth(id, Some(secret))
            }
            Some(ClientAuthMethod::ClientSecretPost) => {
                let secret = self
                    .client_secret
                    .as_ref()
                    .ok_or_else(|| missing("a client secret"))?;
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.secret().to_owned()));
                request
            }
            Some(ClientAuthMethod::PrivateKeyJwt) => {
                let signer = self
                    .signer
                    .as_ref()
                    .ok_or_else(|| missing("a client key"))?;
                let assertion = signer.assertion(&metadata.issuer, self.clock.now_unix())?;
                form.push(("client_id", self.client_id.clone()));
                form.push((
                    "client_assertion_type",
                    JWT_BEARER_ASSERTION_TYPE.to_owned(),
                ));
                form.push(("client_assertion", assertion));
                request
            }
            None => {
                form.push(("client_id", self.client_id.clone()));
                request
            }
        })
    }

    /// Pushes an authorization request (RFC 9126 §2.1) with client
    /// authentication; returns its `request_uri`. A refusal or an answer
    /// without a usable `request_uri` is an error naming the PAR endpoint.
    pub(crate) async fn push_authorization_request(
        &self,
        metadata: &ProviderMetadata,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<PushedAuthorizationRequest, TokenError> {
        #[derive(Deserialize)]
        struct Answer {
            request_uri: String,
            #[serde(default, deserialize_with = "lenient_u64")]
            expires_in: Option<u64>,
        }
        let endpoint = metadata
            .pushed_authorization_request_endpoint
            .clone()
            .ok_or_else(|| {
                TokenError::Discovery(
                    "pushed authorization requests are on, but the provider names no \
                     pushed_authorization_request_endpoint"
                        .into(),
                )
            })?;
        // The client id goes in by authentication; never twice.
        form.retain(|(name, _)| *name != "client_id");
        let request = self.http.post(endpoint);
        let request = self.authenticate(request, &mut form, metadata)?;
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::from_transport(&e))?;
        let status = response.status();
        let body = read_limited(response).await?;
        if !status.is_success() {
            return Err(match error_from_answer(status, &body) {
                TokenError::Provider { error, .. } => TokenError::InvalidResponse(format!(
                    "the provider refused the pushed authorization request: {error}"
                )),
                TokenError::UnexpectedStatus { status } => TokenError::InvalidResponse(format!(
                    "the pushed authorization request endpoint answered HTTP {status}"
                )),
                other => other,
            });
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            TokenError::InvalidResponse(
                "the pushed authorization request answer is not JSON with a request_uri".into(),
            )
        })?;
        if answer.request_uri.is_empty()
            || answer.request_uri.len() > 1024
            || answer.request_uri.chars().any(char::is_control)
        {
            return Err(TokenError::InvalidResponse(
                "the pushed authorization request answer has an unusable request_uri".into(),
            ));
        }
        Ok(PushedAuthorizationRequest {
            request_uri: answer.request_uri,
            expires_in: answer.expires_in.unwrap_or(60),
        })
    }

    /// POSTs a grant to the token endpoint; with `dpop`, proves possession
    /// of that key (see [`Self::dpop_step`]).
    pub(crate) async fn token_request(
        &self,
        metadata: &ProviderMetadata,
        form: Vec<(&'static str, String)>,
        dpop: Option<&DpopKey>,
    ) -> Result<TokenResponse, TokenError> {
        // At most two tries: the second only after a `use_dpop_nonce`
        // answer that brought a new nonce (RFC 9449 §8). Never more.
        let mut nonce_retry = dpop.is_some();
        loop {
            let mut form = form.clone();
            let request = self.http.post(metadata.token_endpoint.clone());
            let request = self.authenticate(request, &mut form, metadata)?;
            let request = self.dpop_step(request, metadata, dpop)?;
            let request = request
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&form);
            let (response, new_nonce) = self
                .send_remembering_nonce(request, &metadata.token_endpoint, dpop.is_some())
                .await?;
            let status = response.status();
            let body = read_limited(response).await?;
            if status.is_success() {
                let answer = TokenResponse::from_json(&body)?;
                return self.check_token_type(answer, dpop.is_some());
            }
            let error = error_from_answer(status, &body);
            let wants_nonce = matches!(
                &error,
                TokenError::Provider { error, .. } if error.as_str() == "use_dpop_nonce"
            );
            if wants_nonce && new_nonce && nonce_retry {
                nonce_retry = false;
                tracing::debug!("the provider asked for a DPoP nonce; retrying once with it");
                continue;
            }
            return Err(error);
        }
    }

    /// The DPoP step of a token request: a fresh proof for the token
    /// endpoint in the `DPoP` header, with the endpoint's latest nonce.
    /// Separate from client authentication on purpose.
    fn dpop_step(
        &self,
        request: reqwest::RequestBuilder,
        metadata: &ProviderMetadata,
        dpop: Option<&DpopKey>,
    ) -> Result<reqwest::RequestBuilder, TokenError> {
        let Some(key) = dpop else {
            return Ok(request);
        };
        let endpoint = &metadata.token_endpoint;
        let nonce = self.dpop.nonces.get(endpoint);
        let proof = key.proof(
            "POST",
            endpoint,
            None,
            nonce.as_deref(),
            self.dpop.clock.now_unix(),
        )?;
        Ok(request.header(DPOP_HEADER, proof))
    }

    /// A `Bearer` answer to a DPoP request is a downgrade (refused unless
    /// allowed); a `DPoP` answer to a request without a proof makes no sense.
    fn check_token_type(
        &self,
        answer: TokenResponse,
        asked_dpop: bool,
    ) -> Result<TokenResponse, TokenError> {
        match (asked_dpop, answer.is_dpop()) {
            (true, false) if !self.dpop.allow_bearer_downgrade => Err(TokenError::DpopDowngrade),
            (true, false) => {
                tracing::warn!(
                    "the provider answered a Bearer token to a DPoP request (allowed by configuration)"
                );
                Ok(answer)
            }
            (false, true) => Err(TokenError::InvalidResponse(
                "a DPoP-bound token was issued to a request without a proof".into(),
            )),
            _ => Ok(answer),
        }
    }

    /// Revokes a token (RFC 7009). Best effort: the caller decides whether to care.
    pub(crate) async fn revoke(
        &self,
        metadata: &ProviderMetadata,
        token: &str,
        hint: &'static str,
    ) -> Result<(), TokenError> {
        let Some(endpoint) = &metadata.revocation_endpoint else {
            return Ok(());
        };
        let mut form = vec![
            ("token", token.to_owned()),
            ("token_type_hint", hint.to_owned()),
        ];
        let request = self.http.post(endpoint.clone());
        let request = self.authenticate(request, &mut form, metadata)?;
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::from_transport(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = read_limited(response).await.unwrap_or_default();
            Err(error_from_answer(status, &body))
        }
    }

    /// Sends `request` to `endpoint`; with DPoP (`dpop`), remembers the
    /// nonce the answer carries. Also returns whether that nonce is new,
    /// which is what allows the one retry after a `use_dpop_nonce` answer.
    async fn send_remembering_nonce(
        &self,
        request: reqwest::RequestBuilder,
        endpoint: &url::Url,
        dpop: bool,
    ) -> Result<(reqwest::Response, bool), TokenError> {
        let response = request
            .send()
            .await
            .map_err(|e| TokenError::from_transport(&e))?;
        let new_nonce = dpop
            && self
                .dpop
                .nonces
                .remember_headers(endpoint, response.headers());
        Ok((response, new_nonce))
    }

    /// Reads the userinfo endpoint with an access token.
    pub(crate) async fn userinfo(
        &self,
        metadata: &ProviderMetadata,
        access_token: &AccessToken,
        dpop: Option<&DpopKey>,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, TokenError> {
        let Some(endpoint) = &metadata.userinfo_endpoint else {
            return Ok(None);
        };
        // A DPoP-bound token goes with the DPoP scheme and a proof of its
        // key for this call (RFC 9449 §7.1); a `use_dpop_nonce` challenge
        // that brings a nonce is answered once, never in a loop.
        let mut nonce_retry = dpop.is_some();
        loop {
            let request = self
                .http
                .get(endpoint.clone())
                .header(reqwest::header::ACCEPT, "application/json");
            let request = match dpop {
                Some(key) => {
                    let nonce = self.dpop.nonces.get(endpoint);
                    let proof = key.proof(
                        "GET",
                        endpoint,
                        Some(access_token),
                        nonce.as_deref(),
                        self.dpop.clock.now_unix(),
                    )?;
                    // Marked sensitive, as `bearer_auth` marks its value.
                    let mut authorization = reqwest::header::HeaderValue::from_str(&format!(
                        "{DPOP_TOKEN_TYPE} {}",
                        access_token.secret()
                    ))
                    .map_err(|_| {
                        TokenError::InvalidResponse("the access token is not a header value".into())
                    })?;
                    authorization.set_sensitive(true);
                    request
                        .header(reqwest::header::AUTHORIZATION, authorization)
                        .header(DPOP_HEADER, proof)
                }
                None => request.bearer_auth(access_token.secret()),
            };
            let (response, new_nonce) = self
                .send_remembering_nonce(request, endpoint, dpop.is_some())
                .await?;
            let status = response.status();
            let challenge = crate::dpop::is_nonce_challenge(
                response
                    .headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let body = read_limited(response).await?;
            if status == reqwest::StatusCode::UNAUTHORIZED && challenge && new_nonce && nonce_retry
            {
                nonce_retry = false;
                tracing::debug!("userinfo asked for a DPoP nonce; retrying once with it");
                continue;
            }
            if !status.is_success() {
                return Err(error_from_answer(status, &body));
            }
            return serde_json::from_slice(&body)
                .map(Some)
                .map_err(|_| TokenError::InvalidResponse("userinfo is not a JSON object".into()));
        }
    }
}

/// Turns a non-success answer into an error.
fn error_from_answer(status: reqwest::StatusCode, body: &[u8]) -> TokenError {
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return TokenError::ProviderUnavailable(format!("provider answered {}", status.as_u16()));
    }
    match serde_json::from_slice::<OAuthErrorBody>(body) {
        Ok(err) => TokenError::Provider {
            error: OAuthErrorCode::from(err.error.as_str()),
            description: err.error_description.map(|d| truncate(&d, 256)),
        },
        Err(_) => TokenError::UnexpectedStatus {
            status: status.as_u16(),
        },
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn form_urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_responses() {
        let r = TokenResponse::from_json(
            br#"{"access_token":"a","token_type":"bearer","expires_in":"300","refresh_token":"r"}"#,
        )
        .unwrap();
        assert_eq!(r.expires_in, Some(300));
        assert_eq!(r.refresh_token.unwrap().secret(), "r");
        assert!(TokenResponse::from_json(br#"{"access_token":"a","token_type":"mac"}"#).is_err());
        let bound =
            TokenResponse::from_json(br#"{"access_token":"a","token_type":"dpop"}"#).unwrap();
        assert!(bound.is_dpop());
        assert_eq!(bound.token_type, "DPoP");
        assert!(TokenResponse::from_json(br#"{"access_token":"","token_type":"Bearer"}"#).is_err());
        assert!(TokenResponse::from_json(b"<html>").is_err());
        let r = TokenResponse::from_json(
            br#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
        );
        assert!(r.is_ok_and(|r| r.expires_in.is_none()));
    }

    #[test]
    fn maps_error_answers() {
        let e = error_from_answer(
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"used"}"#,
        );
        assert!(matches!(e, TokenError::Provider { ref error, .. } if error == "invalid_grant"));
        let e = error_from_answer(reqwest::StatusCode::BAD_GATEWAY, b"");
        assert!(e.is_transient());
        let e = error_from_answer(reqwest::StatusCode::UNAUTHORIZED, b"nope");
        assert!(e.is_unauthorized());
        assert!(matches!(e, TokenError::UnexpectedStatus { status: 401 }));
        let e = error_from_answer(
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_target"}"#,
        );
        assert!(matches!(
            e,
            TokenError::Provider {
                error: OAuthErrorCode::InvalidTarget,
                ..
            }
        ));
    }
}
