//! [`Idp`]: the state every handler of one IdP shares (configuration, keys,
//! issued codes and tokens, fault switches, counters).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Config;
use crate::counters::CounterCells;
use crate::faults::Faults;
use crate::keys::{KeyRing, SigningKey};
use crate::store::Store;

/// State shared by all handlers of one IdP.
pub(crate) struct Idp {
    pub(crate) config: Config,
    pub(crate) issuer: String,
    pub(crate) keys: Mutex<KeyRing>,
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Faults,
    pub(crate) counters: CounterCells,
    /// The `jti`s of DPoP proofs the token endpoint accepted.
    pub(crate) dpop_replay: crate::dpop::ReplayCache,
    /// The token endpoint's current DPoP nonce.
    pub(crate) dpop_nonce: Mutex<String>,
}

impl Idp {
    /// The current time by the IdP's clock (Unix seconds).
    pub(crate) fn now(&self) -> u64 {
        (self.config.clock.0)()
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keys(&self) -> MutexGuard<'_, KeyRing> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token endpoint's current DPoP nonce.
    pub(crate) fn dpop_nonce(&self) -> String {
        self.dpop_nonce
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the token endpoint's DPoP nonce; returns the new one.
    pub(crate) fn rotate_dpop_nonce(&self) -> String {
        let fresh = crate::random_token(16);
        *self.dpop_nonce.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        fresh
    }

    pub(crate) fn current_key(&self) -> Arc<SigningKey> {
        self.keys().current()
    }

    /// An endpoint URL under the issuer.
    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}
