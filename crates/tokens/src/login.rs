//! Sign-in: the authorization code flow with PKCE, `state` and `nonce`.
//!
//! Nothing is stored per started sign-in. [`TokenEngine::begin_login`](crate::TokenEngine::begin_login)
//! creates a [`LoginTransaction`] (nonce, PKCE verifier, redirect URI,
//! return URL, start time) and **seals** it with AES-256-GCM under the
//! engine's login [`KeyRing`] into the `state` parameter itself. The seal is
//! bound (as associated data) to a random *browser binding* that the BFF
//! keeps in a short-lived cookie; one binding serves every tab of a browser,
//! so parallel sign-ins work and the cookie stays one 43-character value.
//!
//! [`TokenEngine::complete_login`](crate::TokenEngine::complete_login) opens the
//! `state` with the browser's binding (another browser's, a forged or a
//! tampered `state` does not open), refuses it after the login timeout, and
//! refuses a second use: after a successful code exchange the transaction is
//! recorded as *consumed* in the store with
//! [`put_transient_if_absent`](crate::SessionStore::put_transient_if_absent)
//! for the rest of its lifetime. Only completed code exchanges write, so a
//! flood of `/bff/login` (or of forged callbacks) cannot fill the store.
//!
//! Instances that share sessions must share the login key ring (the gateway
//! uses the session encryption keys); rotation works like the stores': add
//! the new key everywhere, then make it first.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use url::Url;

use std::sync::Arc;

use crate::dpop::DpopKey;
use crate::engine::TokenEngine;
use crate::error::TokenError;
use crate::id_token::IdTokenExpectations;
use crate::secret::{AuthorizationCode, PkceVerifier};
use crate::session::{SessionId, SessionRecord, random_token};
use crate::store::KeyRing;
use crate::user_token;

/// The longest return URL carried through a sign-in; a longer one falls back
/// to `/` so the sealed `state` stays short enough for every provider.
pub const MAX_RETURN_URL: usize = 1024;

/// Prefix of the store keys that record consumed sign-ins.
pub(crate) const CONSUMED_KEY_PREFIX: &str = "login-used:";

/// Associated data of a sealed transaction: a purpose label and the browser
/// binding. The label keeps sealed sign-ins apart from anything else sealed
/// with the same keys (session records use other associated data).
fn seal_aad(binding: &str) -> Vec<u8> {
    let mut aad = b"oidc-bff/login/v1\n".to_vec();
    aad.extend_from_slice(binding.as_bytes());
    aad
}

/// A sign-in in progress. It lives only inside the sealed `state`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoginTransaction {
    /// The sealed `state` sent to the provider (not part of the sealed data).
    #[serde(skip)]
    pub state: String,
    /// The `nonce` the id_token must carry.
    #[serde(rename = "n")]
    pub nonce: String,
    /// The PKCE verifier.
    #[serde(rename = "v")]
    pub code_verifier: PkceVerifier,
    /// The redirect URI the code is bound to.
    #[serde(rename = "u")]
    pub redirect_uri: String,
    /// Where to send the browser after sign-in (a validated local path).
    #[serde(rename = "r")]
    pub return_url: String,
    /// When the sign-in started (Unix seconds).
    #[serde(rename = "t")]
    pub created_at: u64,
    /// The session's DPoP key, made now and carried sealed (with DPoP on).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<DpopKey>,
}

impl LoginTransaction {
    /// Seals the transaction for the browser with `binding`; the result is
    /// the `state` parameter (URL-safe: `{key id}.{base64url}`).
    pub(crate) fn seal(&self, keys: &KeyRing, binding: &str) -> Result<String, crate::TokenError> {
        let plain = serde_json::to_vec(self)
            .map_err(|e| crate::TokenError::Config(format!("cannot encode the sign-in: {e}")))?;
        let sealed = keys.encrypt(&plain, &seal_aad(binding))?;
        Ok(sealed.replacen(':', ".", 1))
    }

    /// Opens a sealed `state` with the browser's binding; `None` when it was
    /// not sealed by us for this browser (forged, tampered, another browser's,
    /// or sealed with a key no longer in the ring).
    pub(crate) fn open(keys: &KeyRing, state: &str, binding: &str) -> Option<Self> {
        if state.len() > 4 * MAX_RETURN_URL || binding.is_empty() {
            return None;
        }
        let (id, rest) = state.split_once('.')?;
        let plain = keys
            .decrypt(&format!("{id}:{rest}"), &seal_aad(binding))
            .ok()?;
        let mut transaction: Self = serde_json::from_slice(&plain).ok()?;
        transaction.state = state.to_owned();
        Some(transaction)
    }

    /// The store key recording that this transaction was used.
    pub(crate) fn consumed_key(&self) -> String {
        let digest = sha2::Sha256::digest(self.nonce.as_bytes());
        format!("{CONSUMED_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(digest))
    }
}

/// Whether `value` looks like a browser binding this engine issues (43
/// characters of base64url, 256 random bits).
pub fn is_browser_binding(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What [`begin_login`](crate::TokenEngine::begin_login) returns.
#[derive(Clone, Debug)]
pub struct LoginStart {
    /// Where to redirect the browser.
    pub authorization_url: Url,
    /// The sealed `state` sent to the provider.
    pub state: String,
    /// The browser binding: keep it in a short-lived cookie of this browser
    /// and hand it back to `complete_login`. It is the one given to
    /// `begin_login_bound` when that was a valid binding, else a fresh one.
    pub binding: String,
}

/// The query parameters of the callback, as received from the browser.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CallbackParams {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` echoed by the provider.
    pub state: Option<String>,
    /// The issuer (RFC 9207).
    pub iss: Option<String>,
    /// An OAuth error code.
    pub error: Option<String>,
    /// A human-readable error, from the provider; untrusted text.
    pub error_description: Option<String>,
}

/// The S256 PKCE challenge of a verifier.
pub fn pkce_challenge(verifier: &PkceVerifier) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.secret().as_bytes()))
}

/// Accepts a post-sign-in return URL only if it is a local path.
///
/// Anything that a browser could resolve to another origin falls back to
/// `/`: absolute URLs, scheme-relative `//host`, backslash variants
/// (`/\host`), control characters (`/%09/host` once decoded, or raw), and
/// anything not starting with a single `/`.
///
/// ```
/// use oidc_bff_tokens::login::sanitize_return_url;
///
/// assert_eq!(sanitize_return_url(Some("/app?x=1#y")), "/app?x=1#y");
/// for evil in ["//evil", "/\\evil", "https://evil", "/\t/evil", "evil", "/%09/evil", "/%5Cevil"] {
///     assert_eq!(sanitize_return_url(Some(evil)), "/");
/// }
/// ```
pub fn sanitize_return_url(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return "/".into();
    };
    let local = raw.starts_with('/')
        && raw.len() <= 2048
        && !raw.starts_with("//")
        && !raw.starts_with("/\\")
        && !raw.chars().any(|c| c.is_control() || c == '\\')
        && !contains_encoded_danger(raw);
    if local { raw.to_owned() } else { "/".into() }
}

/// Percent-encoded control characters, backslashes or slashes right after the
/// first one would turn into a foreign origin in some browsers once decoded.
fn contains_encoded_danger(raw: &str) -> bool {
    let decoded: String = url::form_urlencoded::parse(format!("x={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let path_only = decoded.split(['?', '#']).next().unwrap_or_default();
    decoded.chars().any(|c| c.is_control() || c == '\\')
        || path_only.starts_with("//")
        || raw.to_ascii_lowercase().contains("%2f%2f")
        || raw[1..].to_ascii_lowercase().starts_with("%2f")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let v = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            pkce_challenge(&v),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn return_urls() {
        assert_eq!(sanitize_return_url(None), "/");
        assert_eq!(sanitize_return_url(Some("/")), "/");
        assert_eq!(sanitize_return_url(Some("/a/b?c=%20d")), "/a/b?c=%20d");
        for evil in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "javascript:alert(1)",
            "/%09/evil.com",
            "/%2f/evil.com",
            "/%2F%2Fevil.com",
            "/\r\n/evil",
            "",
            " /x",
        ] {
            assert_eq!(sanitize_return_url(Some(evil)), "/", "{evil:?}");
        }
    }
}

/// A completed sign-in.
#[derive(Clone, Debug)]
pub struct SignedIn {
    /// The new session's id: put it in the session cookie.
    pub session_id: SessionId,
    /// The new session.
    pub session: Arc<SessionRecord>,
    /// The local path to send the browser to.
    pub return_url: String,
}

impl TokenEngine {
    /// Starts a sign-in: returns the provider URL to redirect the browser to.
    ///
    /// `redirect_uri` must be the callback URL registered at the provider,
    /// built from trusted configuration (never from request headers).
    /// `return_url` is sanitized to a local path. Stores nothing: the
    /// transaction is sealed into the `state` (see [`crate::login`]). Same as
    /// [`begin_login_bound`](Self::begin_login_bound) with no binding yet.
    pub async fn begin_login(
        &self,
        redirect_uri: &str,
        return_url: Option<&str>,
    ) -> Result<LoginStart, TokenError> {
        self.begin_login_bound(redirect_uri, return_url, None).await
    }

    /// Starts a sign-in for a browser that may already hold a binding from
    /// an earlier, still pending sign-in (another tab): a valid `binding` is
    /// reused so that both sign-ins can complete; otherwise a fresh one is
    /// made. Return URLs longer than [`MAX_RETURN_URL`] fall back to `/`.
    pub async fn begin_login_bound(
        &self,
        redirect_uri: &str,
        return_url: Option<&str>,
        binding: Option<&str>,
    ) -> Result<LoginStart, TokenError> {
        let metadata = self.metadata().await?;
        let binding = binding
            .filter(|b| is_browser_binding(b))
            .map_or_else(random_token, str::to_owned);
        let mut return_url = sanitize_return_url(return_url);
        if return_url.len() > MAX_RETURN_URL {
            return_url = "/".into();
        }
        let mut transaction = LoginTransaction {
            state: String::new(),
            nonce: random_token(),
            code_verifier: PkceVerifier::new(random_token()),
            redirect_uri: redirect_uri.to_owned(),
            return_url,
            created_at: self.inner.clock.now_unix(),
            dpop_key: if self.inner.config.dpop {
                Some(DpopKey::generate(self.inner.config.dpop_alg)?)
            } else {
                None
            },
        };
        transaction.state = transaction.seal(&self.inner.login_keys, &binding)?;
        let challenge = pkce_challenge(&transaction.code_verifier);
        // The authorization request, as a parameter list: put on the URL,
        // or pushed to the provider (RFC 9126) when PAR is on.
        let mut params: Vec<(&'static str, String)> = vec![
            ("response_type", "code".into()),
            ("client_id", self.inner.config.client_id.clone()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("scope", self.inner.config.scopes.join(" ")),
            ("state", transaction.state.clone()),
            ("nonce", transaction.nonce.clone()),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256".into()),
        ];
        if let Some(key) = &transaction.dpop_key {
            // RFC 9449 §10: the code is bound to the key from the start.
            params.push(("dpop_jkt", key.thumbprint().to_owned()));
        }
        let url = self.authorization_url(&metadata, params).await?;
        Ok(LoginStart {
            authorization_url: url,
            state: transaction.state,
            binding,
        })
    }

    /// The URL that sends the browser to the provider with the
    /// authorization request `params`: all of them in the query, or, with
    /// pushed authorization requests (configured, or required by the
    /// provider), only `client_id` and the `request_uri` the provider gave
    /// for the pushed parameters.
    async fn authorization_url(
        &self,
        metadata: &crate::discovery::ProviderMetadata,
        params: Vec<(&'static str, String)>,
    ) -> Result<Url, TokenError> {
        let mut url = metadata.authorization_endpoint.clone();
        if !(self.inner.config.par || metadata.require_pushed_authorization_requests) {
            let mut query = url.query_pairs_mut();
            for (name, value) in &params {
                query.append_pair(name, value);
            }
            drop(query);
            return Ok(url);
        }
        let pushed = self
            .inner
            .provider
            .push_authorization_request(metadata, params)
            .await?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.inner.config.client_id)
            .append_pair("request_uri", &pushed.request_uri);
        Ok(url)
    }

    /// Completes a sign-in at the callback and creates the server-side session.
    ///
    /// `binding` is this browser's binding (from the login cookie). Checks,
    /// in order: the `state` opens with the binding (sealed by us, for this
    /// browser, untampered); the sign-in is not older than the login
    /// timeout and was not completed before; provider error; `iss` (RFC
    /// 9207); the code exchange with the PKCE verifier; the sign-in is
    /// recorded as consumed (a concurrent duplicate loses here); the
    /// id_token (signature, iss, aud, azp, exp, iat, nonce, at_hash);
    /// optionally userinfo, whose `sub` must match.
    pub async fn complete_login(
        &self,
        binding: &str,
        params: &CallbackParams,
    ) -> Result<SignedIn, TokenError> {
        self.complete_login_from(binding, params, None).await
    }

    /// [`complete_login`](Self::complete_login), keeping the browser's
    /// `User-Agent` in the session (sanitised with
    /// [`sanitize_user_agent`](crate::session::sanitize_user_agent)) so that
    /// session lists can show it.
    pub async fn complete_login_from(
        &self,
        binding: &str,
        params: &CallbackParams,
        user_agent: Option<&str>,
    ) -> Result<SignedIn, TokenError> {
        let state = params.state.as_deref().unwrap_or_default();
        let transaction = (!state.is_empty())
            .then(|| LoginTransaction::open(&self.inner.login_keys, state, binding))
            .flatten()
            .ok_or_else(|| {
                TokenError::InvalidCallback("state does not match this browser's sign-in".into())
            })?;
        let now = self.inner.clock.now_unix();
        let timeout = self.inner.config.login_timeout.as_secs();
        if now > transaction.created_at.saturating_add(timeout) {
            return Err(TokenError::InvalidCallback(
                "the sign-in took too long".into(),
            ));
        }
        let consumed_key = transaction.consumed_key();
        if self
            .inner
            .store
            .get_transient(&consumed_key)
            .await?
            .is_some()
        {
            return Err(TokenError::InvalidCallback(
                "this sign-in was already completed".into(),
            ));
        }
        if let Some(error) = &params.error {
            return Err(TokenError::InvalidCallback(format!(
                "the provider refused the sign-in: {}",
                safe_error_code(error)
            )));
        }
        let metadata = self.metadata().await?;
        match &params.iss {
            Some(iss) if iss != &metadata.issuer => {
                return Err(TokenError::InvalidCallback(
                    "iss does not name our provider".into(),
                ));
            }
            None if metadata.authorization_response_iss_parameter_supported => {
                return Err(TokenError::InvalidCallback("iss is missing".into()));
            }
            _ => {}
        }
        let code = params
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(AuthorizationCode::new)
            .ok_or_else(|| TokenError::InvalidCallback("code is missing".into()))?;

        let exchange = self.inner.provider.token_request(
            &metadata,
            vec![
                ("grant_type", "authorization_code".into()),
                ("code", code.into_secret()),
                ("redirect_uri", transaction.redirect_uri.clone()),
                (
                    "code_verifier",
                    transaction.code_verifier.secret().to_owned(),
                ),
            ],
            transaction.dpop_key.as_ref(),
        );
        let response =
            crate::metrics::provider_call(crate::metrics::ProviderEndpoint::Token, exchange)
                .await
                .map_err(|e| match e {
                    TokenError::Provider { error, .. } => TokenError::InvalidCallback(format!(
                        "code exchange refused: {}",
                        safe_error_code(error.as_str())
                    )),
                    TokenError::UnexpectedStatus { status } => {
                        TokenError::InvalidCallback(format!("code exchange refused: http_{status}"))
                    }
                    other => other,
                })?;
        // One use: recorded only now, after the provider accepted the code,
        // so that nothing a stranger can send without signing in writes to
        // the store. A concurrent duplicate of this callback loses here.
        let remaining = transaction
            .created_at
            .saturating_add(timeout)
            .saturating_sub(now)
            // Instances' clocks differ a little: outlive the transaction.
            .saturating_add(60);
        if !self
            .inner
            .store
            .put_transient_if_absent(
                &consumed_key,
                "1".into(),
                std::time::Duration::from_secs(remaining),
            )
            .await?
        {
            self.revoke_abandoned(response.refresh_token.as_ref());
            return Err(TokenError::InvalidCallback(
                "this sign-in was already completed".into(),
            ));
        }
        let id_token = response.id_token.clone().ok_or_else(|| {
            TokenError::InvalidIdToken("the token response has no id_token".into())
        })?;
        let jwks = self.jwks(&metadata).await;
        let claims = self
            .validator(&metadata)
            .validate(
                &id_token,
                &jwks,
                IdTokenExpectations {
                    nonce: Some(&transaction.nonce),
                    access_token: Some(&response.access_token),
                },
            )
            .await?;

        let mut all_claims = claims.all.clone();
        // Protocol artefacts of this one response, not facts about the user.
        for artefact in ["nonce", "at_hash", "c_hash"] {
            all_claims.remove(artefact);
        }
        if self.inner.config.load_userinfo {
            match crate::metrics::provider_call(
                crate::metrics::ProviderEndpoint::Userinfo,
                self.inner.provider.userinfo(
                    &metadata,
                    &response.access_token,
                    // Only a DPoP-bound token is sent with a proof.
                    transaction.dpop_key.as_ref().filter(|_| response.is_dpop()),
                ),
            )
            .await
            {
                Ok(Some(info)) if info.get("sub").and_then(|s| s.as_str()) == Some(&claims.sub) => {
                    // Only facts about the user: protocol claims come from
                    // the validated id_token alone (they are compared again
                    // at every refresh, OIDC Core 12.2).
                    for (k, v) in info {
                        if !PROTOCOL_CLAIMS.contains(&k.as_str()) {
                            all_claims.entry(k).or_insert(v);
                        }
                    }
                }
                Ok(Some(_)) => tracing::warn!("userinfo sub differs from the id_token; ignored"),
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "userinfo failed; signed in without it"),
            }
        }

        let record = SessionRecord {
            sub: claims.sub.clone(),
            sid: claims.sid.clone(),
            // Rebuilt in one go: after the removals above the map would keep
            // the three-node shape of its larger self (about 1.3 KB more per
            // session in memory; see docs/BENCHMARKS.md, "Sessions at scale").
            claims: all_claims.into_iter().collect(),
            tokens: user_token::user_tokens(
                response,
                None,
                now,
                self.inner.config.default_token_lifetime,
            ),
            resource_tokens: Default::default(),
            created_at: now,
            expires_at: now + self.inner.config.session_lifetime.as_secs(),
            last_active: now,
            logout_id: random_token(),
            user_agent: user_agent.and_then(crate::session::sanitize_user_agent),
            dpop_key: transaction.dpop_key,
        };
        let session_id = SessionId::generate();
        self.inner.store.create(&session_id, record.clone()).await?;
        crate::metrics::sign_in();
        tracing::info!(sub = %record.sub, "signed in");
        Ok(SignedIn {
            session_id,
            session: Arc::new(record),
            return_url: transaction.return_url,
        })
    }
}

/// Claims about the token or the authentication rather than the user
/// (OIDC Core 2 and 3.1.3.6, RFC 7519 4.1, OIDC Back-Channel Logout, RFC
/// 7800, RFC 9068). The userinfo answer never adds them to the session.
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "at_hash",
    "c_hash",
    "s_hash",
    "sid",
    "sub_jwk",
    "cnf",
    "events",
    "client_id",
    "scope",
    "typ",
];

/// An OAuth error code from untrusted input, reduced to the characters real
/// codes use (`[A-Za-z0-9_.-]`, at most 64), so that markup or control
/// characters are never reflected in an error message.
fn safe_error_code(raw: &str) -> String {
    let code: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    if code.is_empty() {
        "unknown_error".to_owned()
    } else {
        code
    }
}
