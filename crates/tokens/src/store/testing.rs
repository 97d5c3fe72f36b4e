//! A store wrapper that injects faults, for tests of code built on a
//! [`SessionStore`] (feature `test-util`).
//!
//! [`FaultyStore`] passes every call to the store it wraps, except where a
//! fault is switched on: deletes that fail, lease renewals that report the
//! lease lost, slow loads and updates. It also counts the purges of expired
//! sessions and the writes of short-lived values.
//! Faults can be switched on and off while the code under test runs.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//!
//! use oidc_bff_tokens::SessionId;
//! use oidc_bff_tokens::store::{MemoryStore, SessionStore, testing::FaultyStore};
//!
//! let store = FaultyStore::new(Arc::new(MemoryStore::new()));
//! store.fail_deletes(true);
//! assert!(store.delete(&SessionId::generate()).await.is_err());
//! store.fail_deletes(false);
//! assert!(store.delete(&SessionId::generate()).await.is_ok());
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{SessionStore, StoreError, UpdateOutcome, Versioned};
use crate::session::{SessionId, SessionRecord};

/// Wraps a store and injects faults on demand; see the [module docs](self).
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn SessionStore>,
    fail_deletes: AtomicBool,
    lose_leases: AtomicBool,
    load_delay_ms: AtomicU64,
    update_delay_ms: AtomicU64,
    purge_runs: AtomicU64,
    purged: AtomicU64,
    transient_writes: AtomicU64,
}

impl FaultyStore {
    /// Wraps `inner`, with every fault off.
    pub fn new(inner: Arc<dyn SessionStore>) -> Self {
        Self {
            inner,
            fail_deletes: AtomicBool::new(false),
            lose_leases: AtomicBool::new(false),
            load_delay_ms: AtomicU64::new(0),
            update_delay_ms: AtomicU64::new(0),
            purge_runs: AtomicU64::new(0),
            purged: AtomicU64::new(0),
            transient_writes: AtomicU64::new(0),
        }
    }

    /// While on, [`delete`](SessionStore::delete) fails with
    /// [`StoreError::Unavailable`] and deletes nothing.
    pub fn fail_deletes(&self, on: bool) {
        self.fail_deletes.store(on, Ordering::SeqCst);
    }

    /// While on, [`renew_lease`](SessionStore::renew_lease) answers `false`:
    /// the lease went to someone else.
    pub fn lose_leases(&self, on: bool) {
        self.lose_leases.store(on, Ordering::SeqCst);
    }

    /// Every [`load`](SessionStore::load) waits this long first (zero: no wait).
    pub fn delay_loads(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.load_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every [`update`](SessionStore::update) waits this long first (zero:
    /// no wait): a slow writer.
    pub fn delay_updates(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.update_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many times [`purge_expired`](SessionStore::purge_expired) ran.
    pub fn purge_runs(&self) -> u64 {
        self.purge_runs.load(Ordering::SeqCst)
    }

    /// How many sessions those purges removed in all.
    pub fn purged(&self) -> u64 {
        self.purged.load(Ordering::SeqCst)
    }

    /// How many short-lived values were written
    /// ([`put_transient`](SessionStore::put_transient) and
    /// [`put_transient_if_absent`](SessionStore::put_transient_if_absent)).
    pub fn transient_writes(&self) -> u64 {
        self.transient_writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SessionStore for FaultyStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        let delay = self.load_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.load(id).await
    }

    async fn load_latest(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        let delay = self.load_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.load_latest(id).await
    }

    async fn create(&self, id: &SessionId, record: SessionRecord) -> Result<u64, StoreError> {
        self.inner.create(id, record).await
    }

    async fn update(
        &self,
        id: &SessionId,
        record: SessionRecord,
        expected_version: u64,
    ) -> Result<UpdateOutcome, StoreError> {
        let delay = self.update_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.update(id, record, expected_version).await
    }

    async fn delete(&self, id: &SessionId) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if self.fail_deletes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected delete failure".into()));
        }
        self.inner.delete(id).await
    }

    async fn find_by_sub(&self, sub: &str) -> Result<Vec<SessionId>, StoreError> {
        self.inner.find_by_sub(sub).await
    }

    async fn find_by_sid(&self, sid: &str) -> Result<Vec<SessionId>, StoreError> {
        self.inner.find_by_sid(sid).await
    }

    async fn put_transient(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.transient_writes.fetch_add(1, Ordering::SeqCst);
        self.inner.put_transient(key, value, ttl).await
    }

    async fn put_transient_if_absent(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.transient_writes.fetch_add(1, Ordering::SeqCst);
        self.inner.put_transient_if_absent(key, value, ttl).await
    }

    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.take_transient(key).await
    }

    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.get_transient(key).await
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.try_lease(id, owner, ttl).await
    }

    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if self.lose_leases.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.inner.renew_lease(id, owner, ttl).await
    }

    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError> {
        self.inner.release_lease(id, owner).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let purged = self.inner.purge_expired().await?;
        self.purged.fetch_add(purged, Ordering::SeqCst);
        self.purge_runs.fetch_add(1, Ordering::SeqCst);
        Ok(purged)
    }
}
