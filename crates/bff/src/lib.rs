//! # oidc-bff
//!
//! A Backend-for-Frontend for [axum]: the browser signs in at the BFF
//! (OpenID Connect authorization code + PKCE) and only ever holds an HttpOnly
//! session cookie; access, refresh and id tokens stay server-side. Server code
//! gets the current user's valid access token in one call — refreshed first
//! when it is about to expire, with concurrent requests sharing one refresh.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use oidc_bff::{Bff, OidcConfig, UserAccessToken};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bff = Bff::builder(
//!     OidcConfig::builder("https://login.example.com", "bff")
//!         .client_secret("secret")
//!         .build()?,
//! )
//! .public_url("http://127.0.0.1:8080")
//! .build()?;
//!
//! let app = Router::new()
//!     .route("/api/token-length", get(|UserAccessToken(t): UserAccessToken| async move {
//!         t.secret().len().to_string()
//!     }).layer(bff.csrf_layer()))
//!     .merge(bff.routes()) // /bff/login, /bff/callback, /bff/logout, /bff/user
//!     .layer(bff.layer());
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## Modules
//! - [`Bff`] (the handle) and [`BffBuilder`] (its settings, each with its
//!   default) are at the crate root, with the types most apps use.
//! - [`client`]: HTTP clients that send the right access token themselves
//!   (named, typed, client credentials).
//! - [`session`]: the [`BffSession`] and [`UserAccessToken`] extractors.
//! - [`endpoints`]: login, callback, logout, user and session list endpoints.
//! - [`admin`]: the operator's session administration API (bearer token).
//! - [`csrf`]: the anti-forgery layer (header, then `Sec-Fetch-Site`/`Origin`).
//! - [`proxy`]: remote APIs mounted under a local path, tokens attached,
//!   with optional rules on the user's claims ([`proxy::Require`]).
//! - [`TokenPolicy`]: which token a proxied route or a managed client sends.
//! - [`error`]: [`BffError`] and its HTTP statuses.
//!
//! The token engine itself is the framework-agnostic `oidc-bff-tokens`
//! crate, re-exported as [`tokens`].
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
mod backchannel;
mod bff;
mod builder;
pub mod client;
mod cookies;
pub mod csrf;
mod dpop;
pub mod endpoints;
pub mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod proxy;
pub mod session;
mod token_policy;

pub use bff::{Bff, BffSettings, DEFAULT_COOKIE_NAME};
pub use builder::BffBuilder;
pub use client::{Api, ApiClients, BearerTokenExt, ClientRegistration, ManagedClient, TypedClient};
pub use csrf::CsrfLayer;
pub use error::BffError;
pub use oidc_bff_tokens as tokens;
pub use oidc_bff_tokens::{
    AccessToken, ClientCredentialsRequest, OidcConfig, TokenError, UserTokenRequest,
};
pub use proxy::RemoteApi;
#[allow(deprecated)]
pub use proxy::TokenRequirement;
pub use session::{BffSession, UserAccessToken};
pub use token_policy::TokenPolicy;

/// The README's code compiles (doctest only).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme_doctests {}
