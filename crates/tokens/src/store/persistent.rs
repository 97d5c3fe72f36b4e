//! What the persistent stores share: hashed keys, the sealed record format,
//! bounded operations and the common builder settings.
//!
//! A session is stored under the SHA-256 of its id (hex), never the id
//! itself: the id is a bearer secret. The record is serialized as JSON and
//! sealed as a whole with the [`KeyRing`]; next to it the store keeps the
//! session id sealed on its own (the "handle"), so that
//! [`find_by_sub`](super::SessionStore::find_by_sub) can return ids without a
//! dump ever showing one. The indexed columns (`sub`, `sid`, expiry) stay in
//! clear text.

use std::future::Future;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::{KeyRing, StoreError};
use crate::clock::{SharedClock, SystemClock};
use crate::session::{SessionId, SessionRecord};

/// Default bound of one store operation.
pub(crate) const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// SHA-256 of `input`, lowercase hex.
pub(crate) fn sha256_hex(input: &[u8]) -> String {
    let digest = Sha256::digest(input);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The storage key of a session: SHA-256 of its id.
pub(crate) fn hash_id(id: &SessionId) -> String {
    sha256_hex(id.as_str().as_bytes())
}

/// The storage key of a transient value.
pub(crate) fn hash_key(key: &str) -> String {
    sha256_hex(key.as_bytes())
}

/// A duration in whole milliseconds, at least 1.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Seals and opens what the persistent stores write.
#[derive(Clone, Debug)]
pub(crate) struct Codec {
    keys: KeyRing,
}

impl Codec {
    pub(crate) fn new(keys: KeyRing) -> Self {
        Self { keys }
    }

    pub(crate) fn seal_record(
        &self,
        hash: &str,
        record: &SessionRecord,
    ) -> Result<String, StoreError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode the session: {e}")))?;
        self.keys.encrypt(&json, format!("s:{hash}").as_bytes())
    }

    pub(crate) fn open_record(
        &self,
        hash: &str,
        sealed: &str,
    ) -> Result<SessionRecord, StoreError> {
        let json = self.keys.decrypt(sealed, format!("s:{hash}").as_bytes())?;
        serde_json::from_slice(&json)
            .map_err(|_| StoreError::Corrupt("the stored session is not a session record".into()))
    }

    pub(crate) fn seal_id(&self, hash: &str, id: &SessionId) -> Result<String, StoreError> {
        self.keys
            .encrypt(id.as_str().as_bytes(), format!("h:{hash}").as_bytes())
    }

    /// Opens a sealed session id and checks that it belongs to `hash`.
    pub(crate) fn open_id(&self, hash: &str, sealed: &str) -> Result<SessionId, StoreError> {
        let raw = self.keys.decrypt(sealed, format!("h:{hash}").as_bytes())?;
        let id = std::str::from_utf8(&raw)
            .ok()
            .and_then(SessionId::parse)
            .ok_or_else(|| StoreError::Corrupt("the stored session handle is invalid".into()))?;
        if hash_id(&id) != hash {
            return Err(StoreError::Corrupt(
                "the stored session handle does not match".into(),
            ));
        }
        Ok(id)
    }

    pub(crate) fn seal_value(&self, hkey: &str, value: &str) -> Result<String, StoreError> {
        self.keys
            .encrypt(value.as_bytes(), format!("t:{hkey}").as_bytes())
    }

    pub(crate) fn open_value(&self, hkey: &str, sealed: &str) -> Result<String, StoreError> {
        let raw = self.keys.decrypt(sealed, format!("t:{hkey}").as_bytes())?;
        String::from_utf8(raw).map_err(|_| StoreError::Corrupt("stored value is not text".into()))
    }
}

/// Logs a stored session that cannot be opened (sealed with a key no longer
/// in the ring, or damaged). The caller treats it as absent and deletes it:
/// the user signs in again instead of getting 503 on every request. Only the
/// store's name and the error's kind are logged, never a value.
pub(crate) fn warn_unreadable_session(store: &'static str, err: &StoreError) {
    tracing::warn!(
        store,
        error = %err,
        "a stored session cannot be decrypted or decoded (its key was dropped from the \
         key ring, or it is damaged); treating it as signed out and deleting it"
    );
}

/// Logs an index entry (back-channel logout lookup) whose session handle
/// cannot be opened; the caller skips it.
pub(crate) fn warn_unreadable_handle(store: &'static str, err: &StoreError) {
    tracing::warn!(
        store,
        error = %err,
        "skipped a session whose stored handle cannot be decrypted"
    );
}

/// Opens a sealed transient value; one that cannot be opened (its key was
/// dropped from the ring, or it is damaged) is logged and treated as absent.
pub(crate) fn open_value_or_none(
    codec: &Codec,
    store: &'static str,
    hkey: &str,
    sealed: &str,
) -> Option<String> {
    match codec.open_value(hkey, sealed) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(
                store,
                error = %err,
                "a stored transient value cannot be decrypted; treating it as absent"
            );
            None
        }
    }
}

/// Runs `op`, giving up with [`StoreError::Timeout`] after `limit`.
pub(crate) async fn bounded<T>(
    limit: Duration,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout),
    }
}

/// Settings every persistent store's builder has.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) keys: Option<KeyRing>,
    pub(crate) clock: SharedClock,
    pub(crate) op_timeout: Duration,
    pub(crate) prefix: String,
    pub(crate) max_connections: u32,
    /// Sessions kept in the read cache; 0 turns it off.
    pub(crate) cache_capacity: usize,
}

impl Settings {
    pub(crate) fn new(default_prefix: &str) -> Self {
        Self {
            keys: None,
            clock: std::sync::Arc::new(SystemClock),
            op_timeout: DEFAULT_OP_TIMEOUT,
            prefix: default_prefix.to_owned(),
            max_connections: 8,
            cache_capacity: super::cache::DEFAULT_CAPACITY,
        }
    }

    /// Applies what [`open_url`](super::open_url) was given.
    pub(crate) fn apply(&mut self, options: super::OpenOptions) {
        if let Some(keys) = options.keys {
            self.keys = Some(keys);
        }
        if let Some(timeout) = options.operation_timeout {
            self.op_timeout = timeout;
        }
        if let Some(prefix) = options.prefix {
            self.prefix = prefix;
        }
    }

    /// The key ring, required by every persistent store.
    pub(crate) fn codec(&self) -> Result<Codec, StoreError> {
        self.keys.clone().map(Codec::new).ok_or_else(|| {
            StoreError::Config(
                "a persistent session store needs an encryption key ring (tokens are encrypted at rest)"
                    .into(),
            )
        })
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    /// Checks a SQL table prefix: lowercase letters, digits and `_`, starting
    /// with a letter or `_`, at most 40 characters.
    pub(crate) fn sql_prefix(&self) -> Result<&str, StoreError> {
        let p = &self.prefix;
        let ok = p.len() <= 40
            && p.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(p)
        } else {
            Err(StoreError::Config(
                "a table prefix must be 1-40 characters of a-z, 0-9 and '_', not starting with a digit"
                    .into(),
            ))
        }
    }
}

/// The builder methods shared by the persistent stores.
macro_rules! common_builder_methods {
    () => {
        /// Encrypts tokens at rest with this key ring (required): the first
        /// key encrypts, every key decrypts.
        pub fn encryption(mut self, keys: $crate::store::KeyRing) -> Self {
            self.settings.keys = Some(keys);
            self
        }

        /// Reads time from `clock` for session expiry (tests share the
        /// engine's [`ManualClock`](crate::ManualClock)). Leases and transient
        /// values always use real time.
        pub fn clock(mut self, clock: $crate::clock::SharedClock) -> Self {
            self.settings.clock = clock;
            self
        }

        /// Bound of every store operation (default 2 s); past it the
        /// operation fails with [`StoreError::Timeout`](crate::StoreError::Timeout),
        /// which the BFF answers with 503.
        pub fn operation_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.settings.op_timeout = timeout;
            self
        }

        /// The most connections kept open to the backend (default 8).
        pub fn max_connections(mut self, max: u32) -> Self {
            self.settings.max_connections = max.max(1);
            self
        }

        /// Keeps up to `capacity` sessions in this instance's read cache
        /// (default 100 000; `0` turns the cache off). Where the store has
        /// an invalidation channel (Redis, PostgreSQL) a cached session is
        /// served without a round trip and dropped as soon as any instance
        /// changes or deletes it; see the [`store`](crate::store) module.
        pub fn read_cache(mut self, capacity: usize) -> Self {
            self.settings.cache_capacity = capacity;
            self
        }

        /// Applies the options of [`open_url`](crate::store::open_url).
        pub(crate) fn options(mut self, options: $crate::store::OpenOptions) -> Self {
            self.settings.apply(options);
            self
        }
    };
}
pub(crate) use common_builder_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn handles_are_bound_to_their_hash() {
        let codec = Codec::new(KeyRing::generate("k"));
        let id = SessionId::generate();
        let other = SessionId::generate();
        let hash = hash_id(&id);
        let sealed = codec.seal_id(&hash, &id).unwrap();
        assert_eq!(codec.open_id(&hash, &sealed).unwrap(), id);
        assert!(codec.open_id(&hash_id(&other), &sealed).is_err());
    }
}
