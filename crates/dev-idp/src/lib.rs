//! A small, honest development OpenID Provider served over real HTTP on
//! loopback, for integration tests and demos.
//!
//! It implements the authorization code flow with PKCE (S256 only), refresh
//! tokens with rotation and reuse detection, client credentials, userinfo,
//! token revocation (RFC 7009) and introspection (RFC 7662), the RFC 9207
//! `iss` authorization response parameter, pushed authorization requests
//! (RFC 9126), `private_key_jwt` client authentication (RFC 7523),
//! RP-initiated logout and
//! back-channel logout tokens. The configured user is signed in
//! automatically; there are no login forms. All state lives in memory.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use oidc_bff_dev_idp::DevIdp;
//! let idp = DevIdp::builder().client("bff", "secret").start().await?;
//! println!("issuer: {}", idp.issuer());
//! idp.faults().set_token_status(Some(503)); // make the token endpoint fail
//! idp.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Access tokens are JWTs signed with the current key, carrying `iss`, `sub`
//! (the user, or the client id for client credentials), `aud` (the `resource`
//! parameter(s) when given, else the client id), `client_id`, `scope`, `iat`,
//! `exp`, `jti` and, for user grants, `sid` and `auth_time`.

mod config;
mod counters;
pub mod dpop;
mod endpoints;
mod faults;
mod jwt;
mod keys;
mod server;
mod state;
mod store;

pub use config::{DevIdpBuilder, RefreshTokenPolicy, SigningAlg};
pub use counters::Counters;
pub use faults::{Faults, IdTokenFault, IssParamFault};
pub use server::RunningIdp;

/// Entry point: `DevIdp::builder()…start().await`.
#[derive(Debug, Clone, Copy)]
pub struct DevIdp;

impl DevIdp {
    /// A builder with the defaults described on [`DevIdpBuilder`].
    pub fn builder() -> DevIdpBuilder {
        DevIdpBuilder::default()
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A random base64url string of `bytes` random bytes.
pub(crate) fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    keys::b64url(&buf)
}
