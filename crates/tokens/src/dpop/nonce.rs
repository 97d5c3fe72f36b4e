//! [`NonceCache`]: the latest `DPoP-Nonce` of each origin.

use std::collections::HashMap;
use std::sync::Mutex;

use url::Url;

/// Origins remembered before the cache starts over (a bound against a
/// flood of distinct upstreams; nonces are cheap to learn again).
const MAX_ORIGINS: usize = 1024;

/// The latest nonce each server (origin) sent in a `DPoP-Nonce` header, from
/// any response, successful or not. Proofs to that origin carry it.
///
/// ```
/// use oidc_bff_tokens::dpop::NonceCache;
///
/// let cache = NonceCache::default();
/// let url = "https://idp.example.com/token".parse().unwrap();
/// assert_eq!(cache.get(&url), None);
/// cache.remember(&url, Some("n-1"));
/// assert_eq!(cache.get(&"https://idp.example.com/other".parse().unwrap()).as_deref(), Some("n-1"));
/// ```
#[derive(Debug, Default)]
pub struct NonceCache {
    nonces: Mutex<HashMap<String, String>>,
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A nonce as servers send it: visible ASCII (RFC 9449 §8.1), bounded.
fn acceptable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= 512
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"')
}

impl NonceCache {
    /// The nonce to send to `url`'s origin, if it gave one.
    pub fn get(&self, url: &Url) -> Option<String> {
        self.lock().get(&origin(url)).cloned()
    }

    /// Records the `DPoP-Nonce` header value of a response from `url`
    /// (nothing when the response had none or an unusable one). Returns
    /// whether a nonce was recorded.
    pub fn remember(&self, url: &Url, nonce: Option<&str>) -> bool {
        let Some(nonce) = nonce.map(str::trim).filter(|n| acceptable(n)) else {
            return false;
        };
        let mut map = self.lock();
        if map.len() >= MAX_ORIGINS && !map.contains_key(&origin(url)) {
            map.clear();
        }
        map.insert(origin(url), nonce.to_owned());
        true
    }

    /// Records the nonce of a response's headers, if any (see
    /// [`remember`](Self::remember)).
    pub fn remember_headers(&self, url: &Url, headers: &http_headers::HeaderMap) -> bool {
        let value = headers
            .get(super::DPOP_NONCE_HEADER)
            .and_then(|v| v.to_str().ok());
        self.remember(url, value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.nonces.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `http` crate's header map, as reqwest re-exports it.
mod http_headers {
    pub use reqwest::header::HeaderMap;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_per_origin_and_refuses_junk() {
        let cache = NonceCache::default();
        let a: Url = "https://a.example/x".parse().unwrap();
        let b: Url = "https://b.example/x".parse().unwrap();
        assert!(cache.remember(&a, Some("1")));
        assert!(cache.remember(&a, Some("2")));
        assert!(!cache.remember(&b, Some("bad nonce")));
        assert!(!cache.remember(&b, Some("")));
        assert_eq!(cache.get(&a).as_deref(), Some("2"));
        assert_eq!(cache.get(&b), None);
    }
}
