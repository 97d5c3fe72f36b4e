//! Request counters, so tests can assert how a client used the IdP.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the IdP's request counters (see
/// [`RunningIdp::counters`](crate::RunningIdp::counters)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Discovery document requests.
    pub discovery: u64,
    /// JWKS requests.
    pub jwks: u64,
    /// Authorization requests.
    pub authorize: u64,
    /// Successful `authorization_code` grants.
    pub code_grants: u64,
    /// Every `refresh_token` grant request received.
    pub refresh_attempts: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Presented refresh tokens that had already been used.
    pub refresh_reuse_detected: u64,
    /// Successful `client_credentials` grants.
    pub client_credentials_grants: u64,
    /// Error answers of the token endpoint.
    pub token_errors: u64,
    /// Userinfo requests.
    pub userinfo: u64,
    /// Revocation requests.
    pub revocations: u64,
    /// Introspection requests.
    pub introspections: u64,
    /// End-session (RP-initiated logout) requests.
    pub end_session: u64,
    /// Pushed authorization requests accepted (RFC 9126).
    pub pushed_authorization_requests: u64,
    /// `private_key_jwt` client assertions accepted (RFC 7523).
    pub client_assertions: u64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Discovery,
    Jwks,
    Authorize,
    CodeGrants,
    RefreshAttempts,
    RefreshGrants,
    RefreshReuseDetected,
    ClientCredentialsGrants,
    TokenErrors,
    Userinfo,
    Revocations,
    Introspections,
    EndSession,
    PushedAuthorizationRequests,
    ClientAssertions,
}

const N: usize = 15;

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct CounterCells([AtomicU64; N]);

impl CounterCells {
    pub(crate) fn bump(&self, c: Counter) {
        self.0[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let v = |c: Counter| self.0[c as usize].load(Ordering::Relaxed);
        Counters {
            discovery: v(Counter::Discovery),
            jwks: v(Counter::Jwks),
            authorize: v(Counter::Authorize),
            code_grants: v(Counter::CodeGrants),
            refresh_attempts: v(Counter::RefreshAttempts),
            refresh_grants: v(Counter::RefreshGrants),
            refresh_reuse_detected: v(Counter::RefreshReuseDetected),
            client_credentials_grants: v(Counter::ClientCredentialsGrants),
            token_errors: v(Counter::TokenErrors),
            userinfo: v(Counter::Userinfo),
            revocations: v(Counter::Revocations),
            introspections: v(Counter::Introspections),
            end_session: v(Counter::EndSession),
            pushed_authorization_requests: v(Counter::PushedAuthorizationRequests),
            client_assertions: v(Counter::ClientAssertions),
        }
    }
}
