//! # oidc-bff-gateway
//!
//! The standalone `oidc-bff` gateway: a Backend-for-Frontend reverse proxy
//! configured from a TOML file. The browser signs in at the gateway and only
//! holds an HttpOnly session cookie; the gateway forwards API calls with the
//! user's access token, refreshing it ahead of expiry.
//!
//! ```text
//! oidc-bff demo                       # dev IdP + sample API + gateway + sample page
//! oidc-bff serve --config bff.toml    # run the gateway
//! oidc-bff check --config bff.toml    # validate and print the resolved settings
//! ```
//!
//! The library half exists so tests and the demo can reuse the gateway:
//!
//! ```no_run
//! # async fn run() -> Result<(), oidc_bff_gateway::GatewayError> {
//! use oidc_bff_gateway::{Gateway, GatewayConfig};
//!
//! let config = GatewayConfig::load("bff.toml".as_ref())?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! Gateway::new(config)?
//!     .serve(listener, oidc_bff_gateway::serve::shutdown_signal())
//!     .await
//! # }
//! ```
//!
//! ## Modules
//! - [`config`]: the settings, their loading and validation.
//! - [`serve`]: the HTTP server (and the operations listener, `ops.rs`);
//!   `frontends.rs` builds each frontend's application and picks one per
//!   request.
//! - [`tls`]: HTTPS served by the gateway itself (`[server.tls]`).
//! - [`reload`]: configuration reload (`SIGHUP`, `watch_config`).
//! - [`demo`]: the self-contained demo.
//! - [`cli`]: the command line.
//! - [`log_time`]: the log lines' timestamp.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod demo;
mod frontends;
pub mod log_time;
mod ops;
pub mod reload;
pub mod serve;
pub mod tls;

pub use config::{ConfigError, GatewayConfig};
pub use reload::{ReloadHandle, Reloaded};
pub use serve::Gateway;

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error("invalid configuration:\n{0}")]
    Config(#[from] ConfigError),
    /// The BFF could not be built from the settings.
    #[error(transparent)]
    Bff(#[from] oidc_bff::BffError),
    /// A socket could not be bound or served.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A new configuration was refused while running (a setting that
    /// needs a restart changed); the one in force stays.
    #[error("{0}")]
    Reload(String),
    /// Something else failed while starting.
    #[error("start-up failed: {0}")]
    Startup(String),
}
