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

/// Largest JWKS document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

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
        let result = self.fetch().await;

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
        let result = self.fetch().await;
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
        let mut response = self
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
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| TokenError::from_transport(&err))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(TokenError::InvalidResponse(
                    "jwks document is too large".into(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::parse(&body)
    }
}

/// Test helpers shared with the id_token tests: a loopback JWKS server and
/// freshly generated signing keys.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use url::Url;

    #[derive(Debug)]
    struct Reply {
        status: u16,
        body: String,
        delay: Duration,
    }

    /// A minimal HTTP/1.1 server on 127.0.0.1 answering every request with
    /// the configured JWKS document, counting requests.
    pub(crate) struct JwksServer {
        pub(crate) url: Url,
        requests: Arc<AtomicU64>,
        reply: Arc<Mutex<Reply>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl JwksServer {
        pub(crate) async fn start(body: impl Into<String>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url =
                Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
            let requests = Arc::new(AtomicU64::new(0));
            let reply = Arc::new(Mutex::new(Reply {
                status: 200,
                body: body.into(),
                delay: Duration::ZERO,
            }));
            let task = tokio::spawn({
                let requests = Arc::clone(&requests);
                let reply = Arc::clone(&reply);
                async move {
                    loop {
                        let Ok((mut socket, _)) = listener.accept().await else {
                            return;
                        };
                        let requests = Arc::clone(&requests);
                        let reply = Arc::clone(&reply);
                        tokio::spawn(async move {
                            let mut received = Vec::new();
                            let mut buf = [0u8; 4096];
                            while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                                match socket.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => received.extend_from_slice(&buf[..n]),
                                }
                            }
                            requests.fetch_add(1, Ordering::SeqCst);
                            let (status, body, delay) = {
                                let reply = reply.lock().unwrap();
                                (reply.status, reply.body.clone(), reply.delay)
                            };
                            tokio::time::sleep(delay).await;
                            let response = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = socket.write_all(response.as_bytes()).await;
                            let _ = socket.shutdown().await;
                        });
                    }
                }
            });
            Self {
                url,
                requests,
                reply,
                task,
            }
        }

        /// Requests served so far.
        pub(crate) fn requests(&self) -> u64 {
            self.requests.load(Ordering::SeqCst)
        }

        pub(crate) fn set_body(&self, body: impl Into<String>) {
            self.reply.lock().unwrap().body = body.into();
        }

        pub(crate) fn set_status(&self, status: u16) {
            self.reply.lock().unwrap().status = status;
        }

        pub(crate) fn set_delay(&self, delay: Duration) {
            self.reply.lock().unwrap().delay = delay;
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// An HTTP client that ignores proxy settings of the environment.
    pub(crate) fn http_client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// A signing key with its public JWK.
    pub(crate) struct TestKey {
        pub(crate) kid: String,
        pub(crate) alg: Algorithm,
        pub(crate) encoding: EncodingKey,
        pub(crate) jwk: serde_json::Value,
    }

    impl TestKey {
        fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
            let jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
            let mut jwk = serde_json::to_value(jwk).unwrap();
            jwk["kid"] = kid.into();
            jwk["use"] = "sig".into();
            Self {
                kid: kid.to_owned(),
                alg,
                encoding,
                jwk,
            }
        }
    }

    /// A JWKS document holding these keys.
    pub(crate) fn jwks_json(keys: &[&TestKey]) -> String {
        serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
            .to_string()
    }

    /// RSA-2048 private keys (PKCS#1 DER); generating them is slow, so two
    /// are made once per test run.
    fn rsa_ders() -> &'static [Vec<u8>; 2] {
        static KEYS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
        KEYS.get_or_init(|| {
            let generate = || {
                let pair =
                    aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
                let pkcs8 =
                    AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&pair).unwrap();
                pkcs1_from_pkcs8(pkcs8.as_ref()).to_vec()
            };
            [generate(), generate()]
        })
    }

    /// The RSA key the tests' provider signs with.
    pub(crate) fn rsa_key(kid: &str) -> TestKey {
        TestKey::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(&rsa_ders()[0]),
        )
    }

    /// Another RSA key (an attacker's, or a rotated one).
    pub(crate) fn other_rsa_key(kid: &str) -> TestKey {
        TestKey::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(&rsa_ders()[1]),
        )
    }

    /// A fresh EC P-256 key.
    pub(crate) fn ec_key(kid: &str) -> TestKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        TestKey::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(pkcs8.as_ref()),
        )
    }

    /// A fresh Ed25519 key.
    pub(crate) fn ed_key(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
        TestKey::new(
            kid,
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(pkcs8.as_ref()),
        )
    }

    /// The DER public key (SubjectPublicKeyInfo) of [`rsa_key`].
    pub(crate) fn rsa_public_der() -> Vec<u8> {
        let pair = aws_lc_rs::rsa::KeyPair::from_der(&rsa_ders()[0]).unwrap();
        let public = aws_lc_rs::signature::KeyPair::public_key(&pair);
        AsDer::<aws_lc_rs::encoding::PublicKeyX509Der<'static>>::as_der(public)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// Reads one DER TLV: (tag, contents, rest).
    fn der_tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = input[0];
        let first = input[1] as usize;
        let (len, header) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            let len = input[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + n)
        };
        (tag, &input[header..header + len], &input[header + len..])
    }

    /// The RSAPrivateKey (PKCS#1) inside a PKCS#8 PrivateKeyInfo.
    fn pkcs1_from_pkcs8(pkcs8: &[u8]) -> &[u8] {
        let (tag, info, _) = der_tlv(pkcs8);
        assert_eq!(tag, 0x30);
        let (_, _version, rest) = der_tlv(info);
        let (_, _algorithm, rest) = der_tlv(rest);
        let (tag, private_key, _) = der_tlv(rest);
        assert_eq!(tag, 0x04);
        private_key
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use jsonwebtoken::{Algorithm, Header};

    use super::test_support::*;
    use super::*;
    use crate::clock::ManualClock;

    const INTERVAL: Duration = Duration::from_secs(60);

    fn cache(server: &JwksServer, clock: &ManualClock) -> JwksCache {
        JwksCache::new(
            server.url.clone(),
            http_client(),
            Arc::new(clock.clone()),
            INTERVAL,
        )
    }

    fn header(alg: Algorithm, kid: Option<&str>) -> Header {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        header
    }

    fn is_no_matching_key(err: &TokenError) -> bool {
        matches!(err, TokenError::InvalidIdToken(msg) if msg.contains("no matching key"))
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JwksCache>();
    }

    #[tokio::test]
    async fn fetches_on_first_use_then_serves_from_cache() {
        let key = rsa_key("k1");
        let server = JwksServer::start(jwks_json(&[&key])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        assert_eq!(jwks.fetch_count(), 0, "nothing is fetched before first use");

        let keys = jwks
            .keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(jwks.fetch_count(), 1);

        for _ in 0..10 {
            let again = jwks
                .keys_for(&header(Algorithm::RS256, Some("k1")))
                .await
                .unwrap();
            assert!(Arc::ptr_eq(&again[0], &keys[0]));
        }
        assert_eq!(jwks.fetch_count(), 1);
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn unknown_kid_triggers_one_refetch_that_finds_a_rotated_key() {
        let old = rsa_key("old");
        let new = other_rsa_key("new");
        let server = JwksServer::start(jwks_json(&[&old])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);

        jwks.keys_for(&header(Algorithm::RS256, Some("old")))
            .await
            .unwrap();
        assert_eq!(jwks.fetch_count(), 1);

        server.set_body(jwks_json(&[&old, &new]));
        let keys = jwks
            .keys_for(&header(Algorithm::RS256, Some("new")))
            .await
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(jwks.fetch_count(), 2);

        // Both keys are now cached.
        jwks.keys_for(&header(Algorithm::RS256, Some("old")))
            .await
            .unwrap();
        jwks.keys_for(&header(Algorithm::RS256, Some("new")))
            .await
            .unwrap();
        assert_eq!(jwks.fetch_count(), 2);
    }

    #[tokio::test]
    async fn unknown_kid_still_unknown_after_refetch_is_no_matching_key() {
        let key = rsa_key("k1");
        let server = JwksServer::start(jwks_json(&[&key])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);

        jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("nope")))
            .await
            .unwrap_err();
        assert!(is_no_matching_key(&err), "{err:?}");
        assert_eq!(jwks.fetch_count(), 2);
    }

    #[tokio::test]
    async fn refetches_are_rate_limited() {
        let key = rsa_key("k1");
        let server = JwksServer::start(jwks_json(&[&key])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
        assert_eq!(jwks.fetch_count(), 1);

        for i in 0..1000 {
            let kid = format!("random-{i}");
            let err = jwks
                .keys_for(&header(Algorithm::RS256, Some(&kid)))
                .await
                .unwrap_err();
            assert!(is_no_matching_key(&err), "{err:?}");
        }
        assert_eq!(jwks.fetch_count(), 2, "at most one refetch per interval");

        // Still within the interval: no fetch.
        clock.advance(INTERVAL - Duration::from_secs(1));
        jwks.keys_for(&header(Algorithm::RS256, Some("again")))
            .await
            .unwrap_err();
        assert_eq!(jwks.fetch_count(), 2);

        // Past the interval: exactly one more.
        clock.advance(Duration::from_secs(1));
        for i in 0..100 {
            let kid = format!("later-{i}");
            jwks.keys_for(&header(Algorithm::RS256, Some(&kid)))
                .await
                .unwrap_err();
        }
        assert_eq!(jwks.fetch_count(), 3);
        assert_eq!(server.requests(), 3);

        // Known keys keep working throughout.
        jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn rate_limited_refetch_picks_up_rotation_after_the_interval() {
        let old = rsa_key("old");
        let new = other_rsa_key("new");
        let server = JwksServer::start(jwks_json(&[&old])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        jwks.keys_for(&header(Algorithm::RS256, Some("old")))
            .await
            .unwrap();
        // A bogus kid spends the refetch budget.
        jwks.keys_for(&header(Algorithm::RS256, Some("bogus")))
            .await
            .unwrap_err();
        // The provider rotates; within the interval the new kid is unknown.
        server.set_body(jwks_json(&[&old, &new]));
        jwks.keys_for(&header(Algorithm::RS256, Some("new")))
            .await
            .unwrap_err();
        assert_eq!(jwks.fetch_count(), 2);
        clock.advance(INTERVAL);
        jwks.keys_for(&header(Algorithm::RS256, Some("new")))
            .await
            .unwrap();
        assert_eq!(jwks.fetch_count(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_coalesce_into_one_fetch() {
        let key = rsa_key("k1");
        let server = JwksServer::start(jwks_json(&[&key])).await;
        server.set_delay(Duration::from_millis(200));
        let clock = ManualClock::new(1_700_000_000);
        let jwks = Arc::new(cache(&server, &clock));

        let lookups = (0..50).map(|_| {
            let jwks = Arc::clone(&jwks);
            tokio::spawn(async move { jwks.keys_for(&header(Algorithm::RS256, Some("k1"))).await })
        });
        for result in futures_util::future::join_all(lookups).await {
            assert_eq!(result.unwrap().unwrap().len(), 1);
        }
        assert_eq!(jwks.fetch_count(), 1);
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_unknown_kids_coalesce_into_one_refetch() {
        let key = rsa_key("k1");
        let server = JwksServer::start(jwks_json(&[&key])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = Arc::new(cache(&server, &clock));
        jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
        server.set_delay(Duration::from_millis(200));

        let lookups = (0..50).map(|i| {
            let jwks = Arc::clone(&jwks);
            tokio::spawn(async move {
                let kid = format!("unknown-{i}");
                jwks.keys_for(&header(Algorithm::RS256, Some(&kid))).await
            })
        });
        for result in futures_util::future::join_all(lookups).await {
            assert!(is_no_matching_key(&result.unwrap().unwrap_err()));
        }
        assert_eq!(jwks.fetch_count(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_lookups_share_a_failed_fetch() {
        let server = JwksServer::start("oops").await;
        server.set_status(503);
        server.set_delay(Duration::from_millis(200));
        let clock = ManualClock::new(1_700_000_000);
        let jwks = Arc::new(cache(&server, &clock));

        let lookups = (0..20).map(|_| {
            let jwks = Arc::clone(&jwks);
            tokio::spawn(async move { jwks.keys_for(&header(Algorithm::RS256, Some("k1"))).await })
        });
        for result in futures_util::future::join_all(lookups).await {
            let err = result.unwrap().unwrap_err();
            assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
        }
        assert_eq!(jwks.fetch_count(), 1);
    }

    #[tokio::test]
    async fn garbage_keys_are_skipped() {
        let good = rsa_key("good");
        let ec = ec_key("ec");
        let body = serde_json::json!({ "keys": [
            42,
            "not a key",
            { "kid": 5, "kty": "RSA" },
            { "kty": "RSA", "kid": "bad-b64", "n": "!!!", "e": "AQAB" },
            { "kty": "EC", "kid": "bad-ec", "crv": "P-256", "x": "AAAA", "y": "AAAA" },
            { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AAAA", "y": "AAAA" },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "XYZ", "kid": "unknown-kty" },
            good.jwk,
            ec.jwk,
        ]});
        let server = JwksServer::start(body.to_string()).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);

        assert_eq!(
            jwks.keys_for(&header(Algorithm::RS256, Some("good")))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            jwks.keys_for(&header(Algorithm::ES256, Some("ec")))
                .await
                .unwrap()
                .len(),
            1
        );
        for (alg, kid) in [
            (Algorithm::RS256, "bad-b64"),
            (Algorithm::ES256, "bad-ec"),
            (Algorithm::HS256, "hmac"),
            (Algorithm::RS256, "unknown-kty"),
        ] {
            let err = jwks.keys_for(&header(alg, Some(kid))).await.unwrap_err();
            assert!(is_no_matching_key(&err), "{kid}: {err:?}");
        }
    }

    #[tokio::test]
    async fn keys_not_for_signatures_are_skipped() {
        let key = rsa_key("k");
        let mut enc = key.jwk.clone();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        let mut ops = key.jwk.clone();
        ops["kid"] = "ops".into();
        ops["key_ops"] = serde_json::json!(["encrypt"]);
        let mut verify_ops = key.jwk.clone();
        verify_ops["kid"] = "verify-ops".into();
        verify_ops["key_ops"] = serde_json::json!(["verify"]);
        let body = serde_json::json!({ "keys": [enc, ops, verify_ops] }).to_string();
        let server = JwksServer::start(body).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);

        jwks.keys_for(&header(Algorithm::RS256, Some("verify-ops")))
            .await
            .unwrap();
        for kid in ["enc", "ops"] {
            let err = jwks
                .keys_for(&header(Algorithm::RS256, Some(kid)))
                .await
                .unwrap_err();
            assert!(is_no_matching_key(&err), "{kid}: {err:?}");
        }
    }

    #[tokio::test]
    async fn header_without_kid_gets_keys_fitting_its_alg() {
        let rsa = rsa_key("rsa");
        let ec = ec_key("ec");
        let server = JwksServer::start(jwks_json(&[&rsa])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);

        // One key, no kid in the header.
        assert_eq!(
            jwks.keys_for(&header(Algorithm::RS256, None))
                .await
                .unwrap()
                .len(),
            1
        );
        // PS256 also fits an RSA key without `alg`... but this JWK says RS256.
        let err = jwks
            .keys_for(&header(Algorithm::PS256, None))
            .await
            .unwrap_err();
        assert!(is_no_matching_key(&err));

        // Several keys: only those fitting the alg are candidates.
        let mut rsa_no_alg = other_rsa_key("rsa2").jwk;
        rsa_no_alg.as_object_mut().unwrap().remove("alg");
        server.set_body(serde_json::json!({ "keys": [rsa.jwk, ec.jwk, rsa_no_alg] }).to_string());
        clock.advance(INTERVAL);
        assert_eq!(
            jwks.keys_for(&header(Algorithm::ES256, None))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            jwks.keys_for(&header(Algorithm::RS256, None))
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            jwks.keys_for(&header(Algorithm::PS384, None))
                .await
                .unwrap()
                .len(),
            1,
            "only the RSA key without alg fits PS384"
        );
        // ES384 needs a P-384 key.
        let err = jwks
            .keys_for(&header(Algorithm::ES384, None))
            .await
            .unwrap_err();
        assert!(is_no_matching_key(&err));
    }

    #[tokio::test]
    async fn kid_with_wrong_key_type_does_not_match() {
        let ec = ec_key("k");
        let server = JwksServer::start(jwks_json(&[&ec])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        for alg in [Algorithm::RS256, Algorithm::HS256, Algorithm::EdDSA] {
            let err = jwks.keys_for(&header(alg, Some("k"))).await.unwrap_err();
            assert!(is_no_matching_key(&err), "{alg:?}: {err:?}");
        }
        jwks.keys_for(&header(Algorithm::ES256, Some("k")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn ed25519_keys_are_supported() {
        let ed = ed_key("ed");
        let server = JwksServer::start(jwks_json(&[&ed])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        assert_eq!(
            jwks.keys_for(&header(Algorithm::EdDSA, Some("ed")))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn fetch_failure_with_empty_cache_is_provider_unavailable_and_retried() {
        let key = rsa_key("k1");
        let server = JwksServer::start("down").await;
        server.set_status(500);
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);

        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
        assert!(err.is_transient());

        // Within the interval the failure is reported again without a fetch,
        // even once the provider is back.
        server.set_status(200);
        server.set_body(jwks_json(&[&key]));
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
        assert_eq!(jwks.fetch_count(), 1);

        // After the interval the next lookup tries again.
        clock.advance(INTERVAL);
        jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
        assert_eq!(jwks.fetch_count(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_with_nothing_cached_costs_one_fetch_per_interval() {
        let key = rsa_key("k1");
        let server = JwksServer::start("down").await;
        server.set_status(503);
        let clock = ManualClock::new(1_700_000_000);
        let jwks = Arc::new(cache(&server, &clock));
        let lookup = |kid: String| {
            let jwks = Arc::clone(&jwks);
            async move { jwks.keys_for(&header(Algorithm::RS256, Some(&kid))).await }
        };
        let assert_unavailable = |result: Result<Vec<Arc<DecodingKey>>, TokenError>| {
            let err = result.unwrap_err();
            assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
        };

        // A flood of tokens, one after another and all at once.
        for i in 0..200 {
            assert_unavailable(lookup(format!("kid-{i}")).await);
        }
        let burst = (0..50).map(|i| tokio::spawn(lookup(format!("burst-{i}"))));
        for result in futures_util::future::join_all(burst).await {
            assert_unavailable(result.unwrap());
        }
        assert_eq!(jwks.fetch_count(), 1);
        assert_eq!(server.requests(), 1);

        // Just before the interval ends: still no new fetch.
        clock.advance(INTERVAL - Duration::from_secs(1));
        assert_unavailable(lookup("k1".into()).await);
        assert_eq!(server.requests(), 1);

        // After it: concurrent lookups share exactly one new attempt.
        clock.advance(Duration::from_secs(1));
        server.set_delay(Duration::from_millis(200));
        let burst = (0..50).map(|i| tokio::spawn(lookup(format!("later-{i}"))));
        for result in futures_util::future::join_all(burst).await {
            assert_unavailable(result.unwrap());
        }
        assert_eq!(server.requests(), 2);

        // The provider recovers: the first lookup after the interval succeeds.
        server.set_delay(Duration::ZERO);
        server.set_status(200);
        server.set_body(jwks_json(&[&key]));
        clock.advance(INTERVAL);
        assert_eq!(lookup("k1".into()).await.unwrap().len(), 1);
        assert_eq!(server.requests(), 3);
    }

    #[tokio::test]
    async fn connection_failure_is_provider_unavailable() {
        // Bind then drop a listener to get a port nobody listens on.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let jwks = JwksCache::new(
            Url::parse(&format!("http://{addr}/jwks")).unwrap(),
            http_client(),
            Arc::new(ManualClock::new(1_700_000_000)),
            INTERVAL,
        );
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn unparseable_document_is_invalid_response() {
        for body in ["not json", "[]", "{}", r#"{"keys": {}}"#] {
            let server = JwksServer::start(body).await;
            let clock = ManualClock::new(1_700_000_000);
            let jwks = cache(&server, &clock);
            let err = jwks
                .keys_for(&header(Algorithm::RS256, Some("k1")))
                .await
                .unwrap_err();
            assert!(
                matches!(err, TokenError::InvalidResponse(_)),
                "{body}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn failed_refetch_keeps_cached_keys() {
        let key = rsa_key("k1");
        let server = JwksServer::start(jwks_json(&[&key])).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();

        server.set_status(503);
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("k2")))
            .await
            .unwrap_err();
        assert!(is_no_matching_key(&err), "{err:?}");
        clock.advance(INTERVAL);
        server.set_status(200);
        server.set_body("garbage");
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("k2")))
            .await
            .unwrap_err();
        assert!(is_no_matching_key(&err), "{err:?}");
        assert_eq!(jwks.fetch_count(), 3);

        jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn oversized_document_is_rejected() {
        let huge = format!(r#"{{"keys": [], "pad": "{}"}}"#, "a".repeat(MAX_JWKS_BYTES));
        let server = JwksServer::start(huge).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::InvalidResponse(_)), "{err:?}");
    }
}
