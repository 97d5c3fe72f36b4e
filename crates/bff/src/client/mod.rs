//! HTTP clients that manage the token themselves.
//!
//! Register an API client once at start-up; in a handler, take it and send
//! requests. Every request carries the access token the client calls for —
//! the current user's, refreshed first when it is about to expire, or the
//! client's own (client credentials, cached) — without the handler ever
//! touching a token.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use oidc_bff::client::{Api, ApiClients, ClientRegistration, ManagedClient, TypedClient};
//! use oidc_bff::{Bff, BffError, OidcConfig};
//!
//! // A named client: found by name in a handler.
//! async fn remote(clients: ApiClients) -> Result<String, BffError> {
//!     let api = clients.get("apiClient")?;
//!     // GET https://api.example.com/v1/remoteApi, `Authorization: Bearer <user's token>`
//!     Ok(api.get("remoteApi").send().await?.error_for_status()?.text().await?)
//! }
//!
//! // A typed client: your own type around a managed client.
//! struct MyTypedApiClient(ManagedClient);
//! impl TypedClient for MyTypedApiClient {
//!     fn from_managed(client: ManagedClient) -> Self { Self(client) }
//! }
//! impl MyTypedApiClient {
//!     async fn get_data(&self) -> Result<String, BffError> {
//!         Ok(self.0.get("data").send().await?.error_for_status()?.text().await?)
//!     }
//! }
//! async fn typed(Api(api): Api<MyTypedApiClient>) -> Result<String, BffError> {
//!     api.get_data().await
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bff = Bff::builder(
//!     OidcConfig::builder("https://login.example.com", "bff")
//!         .client_secret("secret")
//!         .build()?,
//! )
//! .public_url("https://app.example.com")
//! .api_client(ClientRegistration::user("apiClient", "https://api.example.com/v1/"))
//! .typed_client::<MyTypedApiClient>(ClientRegistration::user("typed", "https://api.example.com/v1/"))
//! .api_client(ClientRegistration::client("catalog", "https://catalog.example.com/").scope("catalog.read"))
//! .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/api/remote", get(remote))
//!     .route("/api/typed", get(typed))
//!     .layer(bff.csrf_layer())
//!     .merge(bff.routes())
//!     .layer(bff.layer());
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Which token
//!
//! A client sends what its [`TokenPolicy`](crate::TokenPolicy) calls for,
//! the same policy proxied routes use:
//!
//! | policy | signed-in user | anonymous |
//! |---|---|---|
//! | `User` ([`ClientRegistration::user`]) | the user's token | 401 |
//! | `Client` ([`ClientRegistration::client`]) | the client's token | the client's token |
//! | `UserOrClient` ([`ClientRegistration::user_or_client`]) | the user's token | the client's token |
//! | `UserOrNone` ([`ClientRegistration::new`]) | the user's token | no token |
//! | `None` ([`ClientRegistration::new`]) | no token | no token |
//!
//! A `UserOrClient` client never falls back to the client's token after the
//! user's could not be had, unless
//! [`client_token_on_user_failure`](ClientRegistration::client_token_on_user_failure)
//! says so. Tokens for a specific scope or resource:
//! [`scope`](ClientRegistration::scope), [`resource`](ClientRegistration::resource).
//!
//! # Failures
//!
//! When no current, valid token can be had (anonymous user, refresh
//! rejected, client credentials refused), `send()` fails before anything is
//! sent, and `?` in a handler returning `Result<_, BffError>` answers **401**
//! (503 with `Retry-After` when the provider is temporarily down). Transport
//! failures of the API call become 502. Errors never contain a token or URL.
//!
//! # Retry once on 401
//!
//! When the API answers 401, the token is renewed (a forced refresh of the
//! user's token, or a new client token; callers that were refused the same
//! token share the renewal) and the request is sent once more. Only requests
//! that can be replayed are retried: without a body or with a buffered one;
//! a streamed body is never sent twice. And only idempotent methods (`GET`,
//! `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), unless the caller adds the
//! [`ReplayOnUnauthorized`] extension to a request whose repetition is
//! harmless. Never more than one retry. Turn it
//! off with [`retry_on_unauthorized(false)`](ClientRegistration::retry_on_unauthorized).
//!
//! # Client credentials
//!
//! A [`ClientRegistration::client`] sends the BFF's own token (OAuth client
//! credentials grant; token endpoint from discovery, or set with
//! [`ClientCredentialsRequest::token_endpoint`](crate::ClientCredentialsRequest::token_endpoint)).
//! Tokens are cached per client, scope and resource, renewed ahead of
//! expiry, fetched by one request however many callers need one at once, and
//! a failed fetch is not cached.
//!
//! ```no_run
//! use oidc_bff::client::ApiClients;
//! use oidc_bff::{Bff, BffError, ClientCredentialsRequest};
//!
//! // In a handler: no user needed.
//! async fn catalog(clients: ApiClients) -> Result<String, BffError> {
//!     let response = clients.get("catalog")?.get("items").send().await?;
//!     Ok(response.error_for_status()?.text().await?)
//! }
//!
//! # async fn job(bff: Bff) -> Result<(), BffError> {
//! // registered with
//! // .api_client(ClientRegistration::client("catalog", "https://catalog.example.com/").scope("catalog.read"))
//!
//! // In a background job, outside of any request: the same client...
//! let body = bff.api_clients().get("catalog")?.get("sync").send().await?.text().await?;
//! // ...or the token itself.
//! let token = bff
//!     .engine()
//!     .client_access_token(&ClientCredentialsRequest::default().scope("catalog.read"))
//!     .await?;
//! # let _ = (body, token); Ok(()) }
//! ```
//!
//! # Outside of a request
//!
//! [`Bff::api_clients`](crate::Bff::api_clients) gives the clients acting
//! for nobody (client tokens, for background jobs);
//! [`Bff::api_clients_for`](crate::Bff::api_clients_for) acts for a session
//! id. Client tokens alone: [`TokenEngine::client_access_token`](crate::tokens::TokenEngine::client_access_token).
//!
//! # By hand
//!
//! [`BearerTokenExt::bearer_token`] puts an [`AccessToken`](crate::AccessToken)
//! on any `reqwest` request, as a sensitive header.
//!
//! # Examples
//!
//! Each starts a development IdP and a small API on loopback, runs end to end
//! and prints what happened:
//!
//! ```text
//! cargo run -p oidc-bff --example named_client
//! cargo run -p oidc-bff --example typed_client
//! cargo run -p oidc-bff --example client_credentials
//! ```

mod bearer;
mod binding;
mod extract;
mod managed;
mod middleware;
mod registry;

pub use bearer::BearerTokenExt;
pub use extract::{Api, ApiClients};
pub use managed::ManagedClient;
pub use middleware::ReplayOnUnauthorized;
#[allow(deprecated)]
pub use registry::TokenKind;
pub use registry::{ClientRegistration, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, TypedClient};

pub(crate) use registry::{Registry, TypedRegistration};
