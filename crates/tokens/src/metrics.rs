//! What the token engine records, through the [`metrics`] facade: every
//! metric's name, unit, description and labels, in one place, and the small
//! functions the rest of the crate calls (one line per recording site).
//!
//! Nothing is exported unless the application installs a recorder (for
//! example `metrics-exporter-prometheus`, which the gateway uses); without
//! one every call here is a no-op. Install the recorder **before** building
//! the [`TokenEngine`](crate::TokenEngine): the hot path's counters are
//! registered once, when the engine is built, and a handle registered
//! without a recorder stays a no-op.
//!
//! ```
//! // Names and descriptions for the exporter (units, HELP lines); call once
//! // after installing a recorder.
//! oidc_bff_tokens::metrics::describe();
//! assert!(oidc_bff_tokens::metrics::TOKEN_REFRESHES.ends_with("_total"));
//! ```
//!
//! Labels only ever take values from a fixed list (or from the
//! configuration): never a path, a user, a session or a token. The full
//! list, with example alerts, is in `docs/OPERATIONS.md`.

use std::future::Future;
use std::time::{Duration, Instant};

use metrics::{Counter, Unit, counter, describe_counter, describe_gauge, describe_histogram};

use crate::error::TokenError;

/// Counter: completed sign-ins (a session was created).
pub const SIGN_INS: &str = "oidc_bff_sign_ins_total";
/// Counter: sign-outs that ended a session.
pub const SIGN_OUTS: &str = "oidc_bff_sign_outs_total";
/// Counter: back-channel logout tokens accepted; label `outcome`
/// (`ended`: sessions ended, `none`: no session matched).
pub const BACKCHANNEL_LOGOUTS: &str = "oidc_bff_backchannel_logouts_total";
/// Gauge: live sessions in the store, where the store can count them
/// cheaply (memory, SQLite, PostgreSQL); set when it is read.
pub const SESSIONS_ACTIVE: &str = "oidc_bff_sessions_active";
/// Counter: user token refreshes; label `outcome` ([`RefreshOutcome`]).
pub const TOKEN_REFRESHES: &str = "oidc_bff_token_refreshes_total";
/// Histogram (seconds): how long a refresh grant took, by `outcome`.
pub const TOKEN_REFRESH_DURATION: &str = "oidc_bff_token_refresh_duration_seconds";
/// Histogram (seconds): how long a caller waited for a refresh (an expired
/// or missing token, or a forced renewal); callers served at once while a
/// renewal runs behind them are not counted.
pub const TOKEN_REFRESH_WAIT: &str = "oidc_bff_token_refresh_wait_seconds";
/// Histogram (seconds): how long a renewal waited for another instance's
/// refresh lease (only renewals that found it held).
pub const TOKEN_LEASE_WAIT: &str = "oidc_bff_token_refresh_lease_wait_seconds";
/// Counter: client credentials token requests to the provider; label
/// `outcome` (`ok`, `error`).
pub const CLIENT_CREDENTIALS_REQUESTS: &str = "oidc_bff_client_credentials_requests_total";
/// Counter: client credentials tokens served from the cache.
pub const CLIENT_CREDENTIALS_CACHE_HITS: &str = "oidc_bff_client_credentials_cache_hits_total";
/// Counter: session store operations; label `op` ([`StoreOp`]).
pub const STORE_OPERATIONS: &str = "oidc_bff_store_operations_total";
/// Counter: session store operations that failed; label `op`.
pub const STORE_ERRORS: &str = "oidc_bff_store_errors_total";
/// Histogram (seconds): session store operation latency, by `op` (every
/// operation but `load`, the hot path's read, which is counted only).
pub const STORE_DURATION: &str = "oidc_bff_store_operation_duration_seconds";
/// Counter: requests to the provider; labels `endpoint`
/// ([`ProviderEndpoint`]) and `outcome` (`ok`; `oauth_error`: an OAuth
/// error answer such as `invalid_grant`; `failed`: unreachable, timed out,
/// 5xx or an unreadable answer).
pub const PROVIDER_REQUESTS: &str = "oidc_bff_provider_requests_total";
/// Histogram (seconds): provider request latency, by `endpoint`.
pub const PROVIDER_DURATION: &str = "oidc_bff_provider_request_duration_seconds";
/// Counter: requests repeated with a new DPoP nonce; label `target`
/// (`provider`, `api`).
pub const DPOP_NONCE_RETRIES: &str = "oidc_bff_dpop_nonce_retries_total";

/// Registers units and descriptions with the installed recorder (the HELP
/// and TYPE lines of a Prometheus scrape). Call once, after installing it.
pub fn describe() {
    describe_counter!(
        SIGN_INS,
        Unit::Count,
        "Completed sign-ins (sessions created)."
    );
    describe_counter!(SIGN_OUTS, Unit::Count, "Sign-outs that ended a session.");
    describe_counter!(
        BACKCHANNEL_LOGOUTS,
        Unit::Count,
        "Back-channel logout tokens accepted, by whether they ended sessions."
    );
    describe_gauge!(
        SESSIONS_ACTIVE,
        Unit::Count,
        "Live sessions in the session store (stores that can count them cheaply)."
    );
    describe_counter!(
        TOKEN_REFRESHES,
        Unit::Count,
        "User token refreshes by outcome."
    );
    describe_histogram!(
        TOKEN_REFRESH_DURATION,
        Unit::Seconds,
        "Duration of user token refresh grants, by outcome."
    );
    describe_histogram!(
        TOKEN_REFRESH_WAIT,
        Unit::Seconds,
        "How long callers waited for a user token refresh."
    );
    describe_histogram!(
        TOKEN_LEASE_WAIT,
        Unit::Seconds,
        "How long a renewal waited for another instance's refresh lease."
    );
    describe_counter!(
        CLIENT_CREDENTIALS_REQUESTS,
        Unit::Count,
        "Client credentials token requests to the provider, by outcome."
    );
    describe_counter!(
        CLIENT_CREDENTIALS_CACHE_HITS,
        Unit::Count,
        "Client credentials tokens served from the cache."
    );
    describe_counter!(
        STORE_OPERATIONS,
        Unit::Count,
        "Session store operations, by kind."
    );
    describe_counter!(
        STORE_ERRORS,
        Unit::Count,
        "Failed session store operations, by kind."
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Session store operation latency, by kind (load is not timed)."
    );
    describe_counter!(
        PROVIDER_REQUESTS,
        Unit::Count,
        "Requests to the OpenID provider, by endpoint and outcome."
    );
    describe_histogram!(
        PROVIDER_DURATION,
        Unit::Seconds,
        "OpenID provider request latency, by endpoint."
    );
    describe_counter!(
        DPOP_NONCE_RETRIES,
        Unit::Count,
        "Requests repeated with a server-provided DPoP nonce, by target."
    );
}

/// How a user token refresh ended (label `outcome` of [`TOKEN_REFRESHES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// New tokens.
    Renewed,
    /// The provider says the refresh token is dead; the session ended.
    DeadGrant,
    /// The provider refused this request but not the grant (`invalid_scope`…).
    Refused,
    /// The provider was unreachable, slow or broken; the session is kept.
    Transient,
    /// Renewed, but the new id_token cannot be checked now (keys out of reach).
    KeysUnreachable,
    /// The new id_token is invalid or about another user; the session ended.
    IdTokenRejected,
    /// The session had no refresh token (and no valid token left); it ended.
    NoRefreshToken,
}

impl RefreshOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Renewed => "renewed",
            Self::DeadGrant => "dead_grant",
            Self::Refused => "refused",
            Self::Transient => "transient",
            Self::KeysUnreachable => "keys_unreachable",
            Self::IdTokenRejected => "id_token_rejected",
            Self::NoRefreshToken => "no_refresh_token",
        }
    }
}

/// A provider endpoint (label `endpoint` of [`PROVIDER_REQUESTS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderEndpoint {
    /// The discovery document (OpenID or RFC 8414 metadata).
    Discovery,
    /// The JWKS document.
    Jwks,
    /// The token endpoint (code exchange, refresh, client credentials).
    Token,
    /// The userinfo endpoint.
    Userinfo,
    /// The revocation endpoint.
    Revocation,
}

impl ProviderEndpoint {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::Jwks => "jwks",
            Self::Token => "token",
            Self::Userinfo => "userinfo",
            Self::Revocation => "revocation",
        }
    }
}

/// A session store operation (label `op` of [`STORE_OPERATIONS`]): the
/// [`SessionStore`](crate::store::SessionStore) method, in snake case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StoreOp {
    Load,
    LoadLatest,
    Create,
    Update,
    Delete,
    FindBySub,
    FindBySid,
    PutTransient,
    PutTransientIfAbsent,
    TakeTransient,
    GetTransient,
    TryLease,
    RenewLease,
    ReleaseLease,
    PurgeExpired,
    CountSessions,
}

impl StoreOp {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::LoadLatest => "load_latest",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::FindBySub => "find_by_sub",
            Self::FindBySid => "find_by_sid",
            Self::PutTransient => "put_transient",
            Self::PutTransientIfAbsent => "put_transient_if_absent",
            Self::TakeTransient => "take_transient",
            Self::GetTransient => "get_transient",
            Self::TryLease => "try_lease",
            Self::RenewLease => "renew_lease",
            Self::ReleaseLease => "release_lease",
            Self::PurgeExpired => "purge_expired",
            Self::CountSessions => "count_sessions",
        }
    }
}

/// The target of a DPoP nonce retry (label `target` of [`DPOP_NONCE_RETRIES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpopTarget {
    /// The provider's token endpoint (`use_dpop_nonce` error).
    Provider,
    /// A resource server (`WWW-Authenticate: DPoP error="use_dpop_nonce"`).
    Api,
}

/// Counters of the hot path, registered once when the engine is built (a
/// registry lookup per request would cost more than the rest of it).
#[derive(Clone)]
pub(crate) struct HotCounters {
    /// `oidc_bff_store_operations_total{op="load"}`.
    pub(crate) loads: Counter,
    /// `oidc_bff_store_errors_total{op="load"}`.
    pub(crate) load_errors: Counter,
}

impl HotCounters {
    pub(crate) fn register() -> Self {
        Self {
            loads: counter!(STORE_OPERATIONS, "op" => StoreOp::Load.as_str()),
            load_errors: counter!(STORE_ERRORS, "op" => StoreOp::Load.as_str()),
        }
    }

    /// Counts a `load` (the hot path's read; not timed).
    pub(crate) fn load<T, E>(&self, result: &Result<T, E>) {
        self.loads.increment(1);
        if result.is_err() {
            self.load_errors.increment(1);
        }
    }
}

impl std::fmt::Debug for HotCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HotCounters")
    }
}

/// Counts a `load` outside the hot path (not timed either, like the hot
/// path's).
pub(crate) fn store_load<T, E>(result: &Result<T, E>) {
    counter!(STORE_OPERATIONS, "op" => StoreOp::Load.as_str()).increment(1);
    if result.is_err() {
        counter!(STORE_ERRORS, "op" => StoreOp::Load.as_str()).increment(1);
    }
}

/// The counter of client credentials cache hits, registered once.
pub(crate) fn client_credentials_cache_hits() -> Counter {
    counter!(CLIENT_CREDENTIALS_CACHE_HITS)
}

/// A session was created by a completed sign-in.
pub(crate) fn sign_in() {
    counter!(SIGN_INS).increment(1);
}

/// A sign-out ended a session.
pub(crate) fn sign_out() {
    counter!(SIGN_OUTS).increment(1);
}

/// A back-channel logout token was accepted; `ended` sessions ended.
pub(crate) fn backchannel_logout(ended: usize) {
    let outcome = if ended > 0 { "ended" } else { "none" };
    counter!(BACKCHANNEL_LOGOUTS, "outcome" => outcome).increment(1);
}

/// Sets the live session count (from [`SessionStore::count_sessions`](crate::store::SessionStore::count_sessions)).
#[allow(clippy::cast_precision_loss)]
pub fn set_active_sessions(count: u64) {
    metrics::gauge!(SESSIONS_ACTIVE).set(count as f64);
}

/// A refresh ended with `outcome` after `took` (`None`: no grant was sent).
pub(crate) fn refresh(outcome: RefreshOutcome, took: Option<Duration>) {
    let label = outcome.as_str();
    counter!(TOKEN_REFRESHES, "outcome" => label).increment(1);
    if let Some(took) = took {
        metrics::histogram!(TOKEN_REFRESH_DURATION, "outcome" => label).record(took);
    }
}

/// Runs `wait` (a caller waiting for a refresh), recording how long it took.
pub(crate) async fn refresh_wait<F: Future>(wait: F) -> F::Output {
    let started = Instant::now();
    let output = wait.await;
    metrics::histogram!(TOKEN_REFRESH_WAIT).record(started.elapsed());
    output
}

/// A renewal waited `since.elapsed()` for another instance's lease.
pub(crate) fn lease_wait(since: Instant) {
    metrics::histogram!(TOKEN_LEASE_WAIT).record(since.elapsed());
}

/// A client credentials token request to the provider ended.
pub(crate) fn client_credentials_request<T>(result: &Result<T, TokenError>) {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    counter!(CLIENT_CREDENTIALS_REQUESTS, "outcome" => outcome).increment(1);
}

/// Runs `call` (one request to the provider's `endpoint`), recording its
/// latency and outcome.
pub(crate) async fn provider_call<T, F>(
    endpoint: ProviderEndpoint,
    call: F,
) -> Result<T, TokenError>
where
    F: Future<Output = Result<T, TokenError>>,
{
    let started = Instant::now();
    let result = call.await;
    let label = endpoint.as_str();
    metrics::histogram!(PROVIDER_DURATION, "endpoint" => label).record(started.elapsed());
    let outcome = match &result {
        Ok(_) => "ok",
        Err(TokenError::Provider { .. }) => "oauth_error",
        Err(_) => "failed",
    };
    counter!(PROVIDER_REQUESTS, "endpoint" => label, "outcome" => outcome).increment(1);
    result
}

/// Runs `call` (one store operation), recording its latency and outcome.
pub(crate) async fn store_call<T, E, F>(op: StoreOp, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let result = call.await;
    let label = op.as_str();
    metrics::histogram!(STORE_DURATION, "op" => label).record(started.elapsed());
    counter!(STORE_OPERATIONS, "op" => label).increment(1);
    if result.is_err() {
        counter!(STORE_ERRORS, "op" => label).increment(1);
    }
    result
}

/// A request was repeated with a new DPoP nonce from `target`.
pub fn dpop_nonce_retry(target: DpopTarget) {
    let label = match target {
        DpopTarget::Provider => "provider",
        DpopTarget::Api => "api",
    };
    counter!(DPOP_NONCE_RETRIES, "target" => label).increment(1);
}
