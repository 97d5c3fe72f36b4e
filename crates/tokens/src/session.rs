//! What a server-side session holds.
//!
//! A [`SessionRecord`] is created at sign-in and lives in a
//! [`SessionStore`](crate::store::SessionStore) under a random [`SessionId`];
//! the browser only ever holds that id, in an HttpOnly cookie.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use crate::dpop::DpopKey;
use crate::secret::{AccessToken, IdToken, RefreshToken};

/// The random id of a server-side session: 256 bits, base64url-encoded.
///
/// Its `Debug` output is redacted, as for any bearer secret.
///
/// ```
/// use oidc_bff_tokens::SessionId;
///
/// let id = SessionId::generate();
/// assert_eq!(id.as_str().len(), 43);
/// assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
/// assert_eq!(SessionId::parse("not a session id"), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// The length of an encoded id.
    pub const LEN: usize = 43;

    /// A fresh random id from a cryptographically secure generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        // The thread-local generator is a CSPRNG seeded (and reseeded) from the OS.
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses an id from untrusted input (a cookie); anything that is not
    /// exactly 43 base64url characters is refused.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == Self::LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(raw.to_owned()))
    }

    /// The encoded id (goes in the cookie). Treat it as a secret.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The session's public id: what session lists show and what ending a
    /// session by id takes (`/bff/sessions`, the admin API).
    ///
    /// It is the first 128 bits of SHA-256 over a fixed label and the id,
    /// base64url-encoded (22 characters): stable for the session's life,
    /// different from the storage key of the persistent stores (SHA-256 of
    /// the id alone), and not derivable into the id, which is a 256-bit
    /// random value. Showing it to the user, another of the user's pages or
    /// an operator does not hand out the cookie.
    ///
    /// ```
    /// use oidc_bff_tokens::SessionId;
    ///
    /// let id = SessionId::generate();
    /// let public = id.public_id();
    /// assert_eq!(public.len(), 22);
    /// assert_eq!(public, id.public_id());
    /// assert!(!id.as_str().contains(&public));
    /// ```
    pub fn public_id(&self) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(PUBLIC_ID_LABEL);
        hasher.update(self.0.as_bytes());
        let digest = hasher.finalize();
        URL_SAFE_NO_PAD.encode(&digest[..16])
    }
}

/// Domain separation of [`SessionId::public_id`].
const PUBLIC_ID_LABEL: &[u8] = b"oidc-bff public session id v1\0";

/// The longest user agent kept in a session, in characters.
pub const MAX_USER_AGENT: usize = 200;

/// The `User-Agent` of a sign-in as kept in the session: control and
/// non-printable characters dropped, whitespace runs folded into one space,
/// at most [`MAX_USER_AGENT`] characters (an ellipsis marks a cut); `None`
/// when nothing is left. It is shown to the user in their session list, as
/// the browser sent it: a label, never trusted.
///
/// ```
/// use oidc_bff_tokens::session::sanitize_user_agent;
///
/// assert_eq!(sanitize_user_agent("Mozilla/5.0 \u{1b}[31m(X11)\r\n").as_deref(), Some("Mozilla/5.0 [31m(X11)"));
/// assert_eq!(sanitize_user_agent(" \t "), None);
/// assert_eq!(sanitize_user_agent(&"x".repeat(500)).unwrap().chars().count(), 200);
/// ```
pub fn sanitize_user_agent(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in raw.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_invisible_format(c) {
            continue;
        }
        if count == MAX_USER_AGENT {
            // One more character to show: cut, and say so.
            out.pop();
            out.push('…');
            return Some(out);
        }
        if space {
            out.push(' ');
            space = false;
            count += 1;
            if count == MAX_USER_AGENT {
                out.pop();
                out.push('…');
                return Some(out);
            }
        }
        out.push(c);
        count += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// Zero-width and bidirectional formatting characters: they would let a
/// user agent string show as something else.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

/// A random, URL-safe value of 256 bits (state, nonce, PKCE verifier).
pub(crate) fn random_token() -> String {
    SessionId::generate().0
}

/// The user's tokens as held in the session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserTokens {
    /// The current access token.
    pub access_token: AccessToken,
    /// When the access token expires (Unix seconds).
    pub expires_at: u64,
    /// The token type, normally `Bearer`.
    pub token_type: String,
    /// The current refresh token, if the provider issued one.
    pub refresh_token: Option<RefreshToken>,
    /// The latest id_token (for `id_token_hint` at logout).
    pub id_token: Option<IdToken>,
    /// Scopes granted, as reported by the provider.
    pub scope: Option<String>,
    /// When the tokens were last renewed with the refresh token (Unix seconds).
    pub refreshed_at: Option<u64>,
    /// How many refreshes this session has seen.
    pub refresh_count: u64,
    /// When the access token was issued, as far as this BFF knows: when its
    /// token response arrived (Unix seconds). With `expires_at` it gives the
    /// token's lifetime, from which the renewal point is computed (never in
    /// the first half of the life). `None` in records written before it
    /// existed: those renew at `expires_at` minus the refresh margin.
    #[serde(default)]
    pub issued_at: Option<u64>,
}

/// An access token obtained for a specific resource and/or scope.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResourceToken {
    /// The access token.
    pub access_token: AccessToken,
    /// When it expires (Unix seconds).
    pub expires_at: u64,
    /// The token type, normally `Bearer`.
    pub token_type: String,
    /// When its token response arrived (Unix seconds; `None` in records
    /// written before it existed). See [`UserTokens::issued_at`].
    #[serde(default)]
    pub issued_at: Option<u64>,
}

/// Everything a server-side session holds.
///
/// `Debug` shows no token (they are redacting newtypes) and not the
/// `logout_id`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    /// The user's subject identifier at the provider.
    pub sub: String,
    /// The provider's session id (`sid` claim), used by back-channel logout.
    pub sid: Option<String>,
    /// The id_token's claims (merged with userinfo when configured).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The user's tokens.
    pub tokens: UserTokens,
    /// Tokens for specific resources/scopes, keyed by [`TokenKey`](crate::user_token::UserTokenRequest).
    #[serde(default)]
    pub resource_tokens: BTreeMap<String, ResourceToken>,
    /// When the session was created (Unix seconds).
    pub created_at: u64,
    /// When the session ends regardless of activity (Unix seconds).
    pub expires_at: u64,
    /// When the session was last used, to within a quarter of the idle
    /// timeout (Unix seconds; 0 in records written before it existed).
    #[serde(default)]
    pub last_active: u64,
    /// A random, non-secret value that a logout request must present, so a
    /// cross-site request cannot sign the user out. Never the session id.
    #[serde(default)]
    pub logout_id: String,
    /// The browser's `User-Agent` at sign-in, sanitised
    /// ([`sanitize_user_agent`]); shown in session lists. `None` when the
    /// browser sent none, and in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,

    /// The session's DPoP key (see [`crate::dpop`]): made when the sign-in
    /// started, it proves every token request of the session and every API
    /// call with its tokens. Only in this record, which persistent stores
    /// encrypt; never in a cookie. `None` without DPoP (and in records
    /// written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<DpopKey>,
}

impl SessionRecord {
    /// Whether this session was signed in through client `client_id`: the
    /// id_token's `azp` is that client or, without `azp`, its `aud` names
    /// it (OpenID Connect Core 3.1.3.7). A record holding neither claim (one
    /// not made by a sign-in, e.g. in tests) belongs to any client.
    pub fn belongs_to(&self, client_id: &str) -> bool {
        if let Some(azp) = self.claims.get("azp") {
            return azp.as_str() == Some(client_id);
        }
        match self.claims.get("aud") {
            None => true,
            Some(serde_json::Value::String(aud)) => aud == client_id,
            Some(serde_json::Value::Array(auds)) => {
                auds.iter().any(|a| a.as_str() == Some(client_id))
            }
            Some(_) => false,
        }
    }
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("sub", &self.sub)
            .field("sid", &self.sid)
            .field("claims", &self.claims)
            .field("tokens", &self.tokens)
            .field("resource_tokens", &self.resource_tokens)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("last_active", &self.last_active)
            .field("logout_id", &"[redacted]")
            .field("user_agent", &self.user_agent)
            .field("dpop_key", &self.dpop_key)
            .finish()
    }
}

impl SessionRecord {
    /// The key the session's tokens are bound to: its DPoP key, when the
    /// provider issued a DPoP-bound token (`token_type` `DPoP`). `None`:
    /// the tokens are bearer tokens.
    pub fn dpop_binding(&self) -> Option<&DpopKey> {
        self.dpop_key
            .as_ref()
            .filter(|_| self.tokens.token_type == crate::dpop::DPOP_TOKEN_TYPE)
    }

    /// `true` once the session's absolute lifetime has passed.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// `true` once the session has been unused for longer than `idle`.
    pub fn is_idle(&self, now: u64, idle: std::time::Duration) -> bool {
        let last = self.last_active.max(self.created_at);
        now > last.saturating_add(idle.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{AccessToken, IdToken, RefreshToken};

    #[test]
    fn debug_shows_no_token_and_no_logout_id() {
        let record = SessionRecord {
            sub: "alice".into(),
            sid: Some("sid-1".into()),
            claims: serde_json::Map::new(),
            tokens: UserTokens {
                access_token: AccessToken::new("access-secret-value"),
                expires_at: 100,
                token_type: "Bearer".into(),
                refresh_token: Some(RefreshToken::new("refresh-secret-value")),
                id_token: Some(IdToken::new("id-secret-value")),
                scope: None,
                refreshed_at: None,
                refresh_count: 0,
                issued_at: Some(1),
            },
            resource_tokens: BTreeMap::new(),
            created_at: 1,
            expires_at: 2,
            last_active: 1,
            logout_id: "logout-secret-value".into(),
            user_agent: None,
            dpop_key: Some(DpopKey::generate(crate::dpop::DpopAlg::Es256).unwrap()),
        };
        let shown = format!("{record:?}");
        let key_json = serde_json::to_value(record.dpop_key.as_ref().unwrap()).unwrap();
        assert!(!shown.contains(key_json["k"].as_str().unwrap()));
        // Records written before DPoP decode, without a key.
        let mut old = serde_json::to_value(&record).unwrap();
        old.as_object_mut().unwrap().remove("dpop_key");
        let old: SessionRecord = serde_json::from_value(old).unwrap();
        assert_eq!(old.dpop_key, None);
        assert!(shown.contains("alice"));
        for secret in [
            "access-secret",
            "refresh-secret",
            "id-secret",
            "logout-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
        // A sign-in records its client (id_token `azp`/`aud`); another
        // client's engine sees no session in it.
        let mut mine = old.clone();
        assert!(mine.belongs_to("anyone"), "no client claims: any client");
        mine.claims
            .insert("aud".into(), serde_json::json!(["a", "b"]));
        assert!(mine.belongs_to("a") && mine.belongs_to("b"));
        assert!(!mine.belongs_to("c"));
        mine.claims.insert("azp".into(), serde_json::json!("a"));
        assert!(mine.belongs_to("a"));
        assert!(!mine.belongs_to("b"), "azp names the one client");
    }
}

#[cfg(test)]
mod public_id_tests {
    use super::*;

    #[test]
    fn public_id_is_not_the_id_nor_its_storage_key() {
        let id = SessionId::generate();
        let public = id.public_id();
        assert_ne!(public, id.as_str());
        assert!(!id.as_str().contains(&public));
        use sha2::Digest as _;
        let storage = sha2::Sha256::digest(id.as_str().as_bytes());
        assert_ne!(URL_SAFE_NO_PAD.encode(&storage[..16]), public);
        assert_ne!(SessionId::generate().public_id(), public);
    }

    #[test]
    fn old_records_decode_without_a_user_agent() {
        let record = SessionRecord {
            sub: "alice".into(),
            sid: None,
            claims: serde_json::Map::new(),
            tokens: UserTokens {
                access_token: AccessToken::new("a"),
                expires_at: 100,
                token_type: "Bearer".into(),
                refresh_token: None,
                id_token: None,
                scope: None,
                refreshed_at: None,
                refresh_count: 0,
                issued_at: None,
            },
            resource_tokens: BTreeMap::new(),
            created_at: 1,
            expires_at: 2,
            last_active: 1,
            logout_id: String::new(),
            user_agent: None,
            dpop_key: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains("user_agent"));
        let back: SessionRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.user_agent, None);
        let with = SessionRecord {
            user_agent: Some("Firefox".into()),
            ..record
        };
        let back: SessionRecord =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back.user_agent.as_deref(), Some("Firefox"));
    }

    #[test]
    fn user_agents_are_cut_on_a_character() {
        let long = "é".repeat(300);
        let cut = sanitize_user_agent(&long).unwrap();
        assert_eq!(cut.chars().count(), MAX_USER_AGENT);
        assert!(cut.ends_with('…'));
        assert_eq!(
            sanitize_user_agent("a\u{202e}b\u{0}c").as_deref(),
            Some("abc")
        );
        assert_eq!(sanitize_user_agent("  a   b  ").as_deref(), Some("a b"));
    }
}
