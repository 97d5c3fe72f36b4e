//! # oidc-bff-tokens
//!
//! Framework-agnostic OAuth 2.0 / OpenID Connect token management for a
//! Backend-for-Frontend: discovery, sign-in (authorization code + PKCE),
//! server-side sessions, and the user's access token in one call —
//! refreshed ahead of expiry, with concurrent callers sharing one refresh.
//!
//! The axum integration lives in the `oidc-bff` crate; this crate has no web
//! framework in it.
//!
//! ```no_run
//! # async fn demo(session_id: oidc_bff_tokens::SessionId) -> Result<(), oidc_bff_tokens::TokenError> {
//! use oidc_bff_tokens::{TokenEngine, OidcConfig, UserTokenRequest};
//!
//! let engine = TokenEngine::builder(
//!     OidcConfig::builder("https://login.example.com", "bff")
//!         .client_secret("secret")
//!         .build()?,
//! )
//! .build()?;
//!
//! let token = engine
//!     .user_access_token(&session_id, None, &UserTokenRequest::default())
//!     .await?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! ## Modules
//! - [`engine`]: [`TokenEngine`], the handle that owns all of the below.
//! - [`config`]: settings, with a builder.
//! - [`discovery`]: the cached discovery document.
//! - [`jwks`] and [`id_token`]: signing keys and id_token validation.
//! - [`login`]: sign-in, the authorization code flow with PKCE.
//! - [`logout`]: sign-out, revocation and the end-session URL.
//! - [`logout_token`]: back-channel logout tokens and the sessions they end.
//! - [`user_token`]: the user's access token and the refresh state machine.
//! - [`client_credentials`]: machine-to-machine tokens, cached.
//! - [`session`] and [`store`]: what a session holds and where it lives.
//! - [`session_admin`]: a subject's sessions listed and ended (session lists, admin APIs).
//! - [`provider`]: calls to the provider's endpoints.
//! - [`client_auth`]: client authentication (secrets, `private_key_jwt`).
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod client_auth;
pub mod client_credentials;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod dpop;
pub mod engine;
pub mod error;
mod http;
pub mod id_token;
pub mod jwks;
pub mod login;
pub mod logout;
pub mod logout_token;
pub mod metrics;
pub mod provider;
pub mod secret;
pub mod session;
pub mod session_admin;
pub mod store;
pub mod user_token;

pub use engine::{TokenEngine, TokenEngineBuilder};
pub use login::SignedIn;
pub use logout::LoggedOut;

/// The token engine's former name.
#[deprecated(
    since = "0.2.0",
    note = "renamed to `TokenEngine`: it is the token engine's handle, not an OAuth client"
)]
pub type OidcClient = TokenEngine;
pub use client_auth::{ClientAssertionAlg, ClientAuthMethod, ClientKey};
pub use client_credentials::ClientCredentialsRequest;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{OidcConfig, OidcConfigBuilder};
pub use error::{ErrorKind, OAuthErrorCode, TokenError, ValidationError, ValidationKind};
pub use logout_token::{BackchannelLogout, LogoutTokenClaims};
pub use secret::{
    AccessToken, AuthorizationCode, ClientSecret, IdToken, PkceVerifier, RefreshToken,
};
pub use session::{SessionId, SessionRecord, UserTokens};
pub use session_admin::{EndedSession, SessionSummary};
pub use store::{MemoryStore, SessionStore, StoreError, UpdateOutcome, Versioned};
pub use user_token::UserTokenRequest;
