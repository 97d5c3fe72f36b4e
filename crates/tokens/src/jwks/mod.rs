//! The provider's signing keys (JWKS), fetched on demand and cached.
//!
//! [`JwksCache`] holds the verification keys published at the provider's
//! `jwks_uri`:
//!
//! * **Fetch on first use.** Nothing is fetched until the first id_token has to
//!   be verified. If that fetch fails while nothing is cached, the caller gets
//!   [`TokenError::ProviderUnavailable`] (or [`TokenError::InvalidResponse`]
//!   for a document that is not a JWK set), and so does every lookup until
//!   `min_refetch_interval` has passed since that attempt started; then the
//!   next lookup tries again. A JWKS outage thus costs the provider one
//!   request per interval, however many tokens arrive.
//! * **Cache.** Keys are kept until a later fetch replaces them; a lookup of a
//!   known `kid` never touches the network.
//! * **Refetch on unknown `kid`, rate-limited.** When a token names a key we do
//!   not know (the provider rotated its keys), the set is fetched again — but
//!   at most once per `min_refetch_interval`, so a flood of tokens carrying
//!   random `kid`s cannot turn into a flood of requests to the provider. Within
//!   the interval an unknown `kid` simply has no key. A successful first fetch
//!   does not count against this budget; every failed fetch does (with or
//!   without cached keys). When a refetch fails
//!   while keys are cached, the cached keys are kept and the lookup reports
//!   "no matching key".
//! * **Coalescing.** Concurrent lookups that need a fetch share one request:
//!   one task fetches, the others wait for it and use its result (including
//!   its failure).
//! * **Lenient parsing.** A key that cannot be parsed or used (bad base64, an
//!   unsupported key type or curve, a symmetric `oct` key) is skipped and
//!   logged at debug level; it does not make the whole set unusable. Keys whose
//!   `use` is present and not `"sig"`, or whose `key_ops` do not include
//!   `"verify"`, are skipped too. A document that is not a JSON object with a
//!   `keys` array is an error ([`TokenError::InvalidResponse`]) and does not
//!   replace the cached keys.
//!
//! Key selection for a JWS header ([`JwksCache::keys_for`]): with a `kid`, the
//! keys carrying that `kid`; without one, every key. In both cases only keys
//! that fit the header's `alg` are returned: same key type (RSA for `RS*`/`PS*`,
//! EC for `ES*`, OKP for `EdDSA`), the matching curve (P-256 for `ES256`, P-384
//! for `ES384`, Ed25519 for `EdDSA`), and, when the JWK names an `alg`, that
//! exact `alg`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Header};
use url::Url;

use crate::clock::SharedClock;
use crate::error::TokenError;

/// Largest JWKS document accepted, in bytes: the bound of every provider
/// answer.
#[cfg(test)]
const MAX_JWKS_BYTES: usize = crate::http::MAX_RESPONSE_BYTES;

/// A cache of the provider's JWKS with rate-limited, coalesced refetching.
///
/// See the [module documentation](self) for the behaviour. Cheap to share
/// behind an [`Arc`]; all methods take `&self`.
pub struct JwksCache {
    jwks_uri: Url,
    http: reqwest::Client,
    clock: SharedClock,
    /// `min_refetch_interval` rounded up to whole seconds (the clock's resolution).
    min_refetch_secs: u64,
    max_age_secs: u64,
    state: Mutex<State>,
    /// Held by the one task fetching; others wait on it and reuse the outcome.
    fetch_gate: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("jwks_uri", &self.jwks_uri.as_str())
            .field("min_refetch_secs", &self.min_refetch_secs)
            .field("fetch_count", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

/// How long fetched keys are trusted before the set is fetched again.
const DEFAULT_MAX_AGE_SECS: u64 = 3600;

#[derive(Default)]
struct State {
    /// The key set of the last successful fetch.
    keys: Option<Arc<KeySet>>,
    /// Number of completed fetch attempts (successful or not).
    attempts: u64,
    /// When the last rate-limited fetch started: a refetch while keys were
    /// cached, or a fetch that failed while nothing was cached.
    last_refetch: Option<u64>,
    /// When the cached keys were fetched.
    fetched_at: Option<u64>,
    /// Outcome of the last attempt when it failed with nothing cached.
    last_error: Option<FetchError>,
}

/// A clonable copy of a fetch failure, handed to coalesced waiters.
#[derive(Debug, Clone)]
enum FetchError {
    Unavailable(String),
    Invalid(String),
}

impl FetchError {
    fn from_token_error(err: &TokenError) -> Self {
        match err {
            TokenError::InvalidResponse(msg) => FetchError::Invalid(msg.clone()),
            TokenError::ProviderUnavailable(msg) => FetchError::Unavailable(msg.clone()),
            _ => FetchError::Unavailable("jwks fetch failed".to_owned()),
        }
    }

    fn to_token_error(&self) -> TokenError {
        match self {
            FetchError::Unavailable(msg) => TokenError::ProviderUnavailable(msg.clone()),
            FetchError::Invalid(msg) => TokenError::InvalidResponse(msg.clone()),
        }
    }
}

/// One usable verification key.
struct CachedKey {
    kid: Option<String>,
    family: AlgorithmFamily,
    /// The JWK's `alg`, when it names one.
    alg: Option<Algorithm>,
    curve: Option<EllipticCurve>,
    key: Arc<DecodingKey>,
}

impl CachedKey {
    /// Whether this key may verify a signature made with `alg`.
    fn fits(&self, alg: Algorithm) -> bool {
        if alg.family() != self.family || self.family == AlgorithmFamily::Hmac {
            return false;
        }
        if self.alg.is_some_and(|key_alg| key_alg != alg) {
            return false;
        }
        match alg {
            Algorithm::ES256 => self.curve == Some(EllipticCurve::P256),
            Algorithm::ES384 => self.curve == Some(EllipticCurve::P384),
            Algorithm::EdDSA => self.curve == Some(EllipticCurve::Ed25519),
            _ => true,
        }
    }
}

/// The usable keys of one JWKS document.
struct KeySet {
    keys: Vec<CachedKey>,
}

impl KeySet {
    /// Parses a JWKS document, skipping keys that cannot be used.
    fn parse(body: &[u8]) -> Result<Self, TokenError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(body).map_err(|_| {
            TokenError::InvalidResponse(
                "jwks document is not a JSON object with a keys array".into(),
            )
        })?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| match parse_key(value) {
                Ok(key) => Some(key),
                Err((kid, why)) => {
                    tracing::debug!(kid = kid.as_deref(), reason = why, "skipping JWKS key");
                    None
                }
            })
            .collect();
        Ok(KeySet { keys })
    }

    /// The keys that may verify a token with this header.
    fn candidates(&self, header: &Header) -> Vec<Arc<DecodingKey>> {
        self.keys
            .iter()
            .filter(|key| match &header.kid {
                Some(kid) => key.kid.as_deref() == Some(kid.as_str()),
                None => true,
            })
            .filter(|key| key.fits(header.alg))
            .map(|key| Arc::clone(&key.key))
            .collect()
    }
}

/// Turns one JWK into a usable key, or says why not (with its `kid`, if any).
fn parse_key(value: serde_json::Value) -> Result<CachedKey, (Option<String>, &'static str)> {
    let kid = value
        .get("kid")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let jwk: Jwk = serde_json::from_value(value).map_err(|_| (kid.clone(), "unparseable JWK"))?;
    let fail = |why: &'static str| (kid.clone(), why);

    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err(fail("use is not sig")),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err(fail("key_ops lacks verify"));
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(key_alg) => Some(
            Algorithm::try_from(key_alg)
                .map_err(|_| fail("alg is not a JWS signature algorithm"))?,
        ),
    };

    let (family, curve, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            let key = DecodingKey::from_rsa_components(&params.n, &params.e)
                .map_err(|_| fail("bad RSA components"))?;
            (AlgorithmFamily::Rsa, None, key)
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let coordinate_len = match params.curve {
                EllipticCurve::P256 => 32,
                EllipticCurve::P384 => 48,
                _ => return Err(fail("unsupported EC curve")),
            };
            if base64_len(&params.x) != Some(coordinate_len)
                || base64_len(&params.y) != Some(coordinate_len)
            {
                return Err(fail("bad EC coordinates"));
            }
            let key = DecodingKey::from_ec_components(&params.x, &params.y)
                .map_err(|_| fail("bad EC coordinates"))?;
            (AlgorithmFamily::Ec, Some(params.curve.clone()), key)
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Err(fail("unsupported OKP curve"));
            }
            if base64_len(&params.x) != Some(32) {
                return Err(fail("bad Ed25519 key"));
            }
            let key =
                DecodingKey::from_ed_components(&params.x).map_err(|_| fail("bad Ed25519 key"))?;
            (AlgorithmFamily::Ed, Some(EllipticCurve::Ed25519), key)
        }
        AlgorithmParameters::OctetKey(_) => return Err(fail("symmetric keys are never used")),
        _ => return Err(fail("unsupported key type")),
    };
    if alg.is_some_and(|alg| alg.family() != family) {
        return Err(fail("alg does not fit the key type"));
    }
    Ok(CachedKey {
        kid,
        family,
        alg,
        curve,
        key: Arc::new(key),
    })
}

/// Length of base64url (no padding) data once decoded, if it decodes.
fn base64_len(s: &str) -> Option<usize> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .map(|bytes| bytes.len())
}

fn no_matching_key() -> TokenError {
    TokenError::InvalidIdToken(crate::error::ValidationError::new(
        crate::error::ValidationKind::UnknownKey,
        "no matching key in the provider's JWKS",
    ))
}

impl JwksCache {
    /// A cache for the JWKS at `jwks_uri`, fetched with `http`.
    ///
    /// `min_refetch_interval` bounds how often an unknown `kid` may trigger a
    /// refetch (it is rounded up to whole seconds; zero disables the limit).
    pub fn new(
        jwks_uri: Url,
        http: reqwest::Client,
        clock: SharedClock,
        min_refetch_interval: Duration,
    ) -> Self {
        let min_refetch_secs =
            min_refetch_interval.as_secs() + u64::from(min_refetch_interval.subsec_nanos() > 0);
        Self {
            jwks_uri,
            http,
            clock,
            min_refetch_secs,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            state: Mutex::new(State::default()),
            fetch_gate: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Candidate verification keys for a JWS header.
    ///
    /// With a `kid`: the keys carrying it (refetching the set once if it is
    /// unknown and the rate limit allows). Without a `kid`: every key whose
    /// type (and curve, and `alg` if the JWK names one) fits `header.alg`.
    ///
    /// # Errors
    ///
    /// * [`TokenError::InvalidIdToken`] ("no matching key ...", of kind
    ///   [`ValidationKind::UnknownKey`](crate::error::ValidationKind::UnknownKey))
    ///   when no key fits.
    /// * [`TokenError::ProviderUnavailable`] when the JWKS could not be fetched
    ///   and nothing is cached (with keys cached, a failed refetch just means
    ///   "no matching key"); [`TokenError::InvalidResponse`] when the fetched
    ///   document is not a JWK set and nothing is cached.
    pub async fn keys_for(&self, header: &Header) -> Result<Vec<Arc<DecodingKey>>, TokenError> {
        // Keys older than the maximum age are fetched again (kept on failure),
        // so a key the provider withdrew does not stay trusted forever.
        let stale = {
            let state = self.state();
            state
                .fetched_at
                .is_some_and(|at| self.clock.now_unix().saturating_sub(at) >= self.max_age_secs)
                && self.refetch_allowed(&state)
        };
        if stale {
            self.refresh().await;
        }
        // Fast path: answer from the cache, or decide that no fetch is allowed.
        let seen_attempts = {
            let state = self.state();
            match &state.keys {
                Some(keys) => {
                    let found = keys.candidates(header);
                    if !found.is_empty() {
                        return Ok(found);
                    }
                    if !self.refetch_allowed(&state) {
                        return Err(no_matching_key());
                    }
                }
                // Nothing cached and the last fetch failed recently: report
                // that failure again rather than asking the provider again.
                None => {
                    if let Some(err) = &state.last_error
                        && !self.refetch_allowed(&state)
                    {
                        return Err(err.to_token_error());
                    }
                }
            }
            state.attempts
        };

        // Slow path: one task fetches at a time; waiters reuse its outcome.
        let _gate = self.fetch_gate.lock().await;
        let had_keys = {
            let state = self.state();
            if state.attempts != seen_attempts {
                match &state.keys {
                    Some(keys) => {
                        let found = keys.candidates(header);
                        if !found.is_empty() {
                            return Ok(found);
                        }
                        if !self.refetch_allowed(&state) {
                            return Err(no_matching_key());
                        }
                    }
                    None => {
                        return Err(state.last_error.as_ref().map_or_else(
                            || TokenError::ProviderUnavailable("jwks fetch failed".into()),
                            FetchError::to_token_error,
                        ));
                    }
                }
            }
            state.keys.is_some()
        };

        let started = self.clock.now_unix();
        let result =
            crate::metrics::provider_call(crate::metrics::ProviderEndpoint::Jwks, self.fetch())
                .await;

        let mut state = self.state();
        state.attempts += 1;
        if had_keys || result.is_err() {
            state.last_refetch = Some(started);
        }
        match result {
            Ok(keys) => {
                let keys = Arc::new(keys);
                state.keys = Some(Arc::clone(&keys));
                state.fetched_at = Some(started);
                state.last_error = None;
                drop(state);
                tracing::debug!(keys = keys.keys.len(), "fetched the provider's JWKS");
                let found = keys.candidates(header);
                if found.is_empty() {
                    Err(no_matching_key())
                } else {
                    Ok(found)
                }
            }
            Err(err) if state.keys.is_some() => {
                tracing::warn!(error = %err, "refetching the provider's JWKS failed; keeping the cached keys");
                Err(no_matching_key())
            }
            Err(err) => {
                state.last_error = Some(FetchError::from_token_error(&err));
                Err(err)
            }
        }
    }

    /// Fetches the set again if the rate limit allows, whatever the cache
    /// holds; `true` when new keys were stored. Used when a token without a
    /// `kid` fails verification (the provider may have rotated keys) and when
    /// the cached set is older than the maximum age. A failed fetch keeps the
    /// cached keys.
    pub async fn refresh(&self) -> bool {
        let _gate = self.fetch_gate.lock().await;
        if !self.refetch_allowed(&self.state()) {
            return false;
        }
        let started = self.clock.now_unix();
        let result =
            crate::metrics::provider_call(crate::metrics::ProviderEndpoint::Jwks, self.fetch())
                .await;
        let mut state = self.state();
        state.attempts += 1;
        state.last_refetch = Some(started);
        match result {
            Ok(keys) => {
                state.keys = Some(Arc::new(keys));
                state.fetched_at = Some(started);
                state.last_error = None;
                true
            }
            Err(err) => {
                if state.keys.is_none() {
                    state.last_error = Some(FetchError::from_token_error(&err));
                }
                tracing::warn!(error = %err, "refetching the provider's JWKS failed; keeping the cached keys");
                false
            }
        }
    }

    /// Sets how long fetched keys are trusted before the set is fetched
    /// again (default one hour; a failed refetch keeps the old keys).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age_secs = max_age.as_secs().max(1);
        self
    }

    /// Number of HTTP fetches performed (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the rate limit allows a refetch now (keys being cached), or a
    /// new attempt after a failed fetch (nothing cached).
    fn refetch_allowed(&self, state: &State) -> bool {
        match state.last_refetch {
            None => true,
            Some(at) => self.clock.now_unix().saturating_sub(at) >= self.min_refetch_secs,
        }
    }

    /// One HTTP fetch of the JWKS document.
    async fn fetch(&self) -> Result<KeySet, TokenError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .get(self.jwks_uri.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| TokenError::from_transport(&err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::ProviderUnavailable(format!(
                "jwks endpoint answered HTTP {}",
                status.as_u16()
            )));
        }
        let body = crate::http::read_limited(response).await?;
        KeySet::parse(&body)
    }
}

/// Test helpers shared with the id_token tests: a loopback JWKS server and
/// freshly generated signing keys.
#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
