//! The store the engine talks to: the configured store, with every
//! operation counted and timed (`oidc_bff_store_*`, see
//! [`crate::metrics`]). The engine wraps its store in [`Metered`] when it is
//! built; the hot path's `load` bypasses the wrapper and is only counted
//! (see `TokenEngine::load_checked`).
//!
//! Every method of [`SessionStore`] is forwarded here, the defaulted ones
//! too: a method left out would answer with the trait's default instead of
//! the wrapped store's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{SessionStore, StoreError, UpdateOutcome, Versioned};
use crate::metrics::{StoreOp, store_call};
use crate::session::{SessionId, SessionRecord};

/// A store whose operations are recorded.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Arc<dyn SessionStore>,
}

impl Metered {
    /// Wraps `inner`.
    pub(crate) fn wrap(inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
        Arc::new(Metered { inner })
    }
}

#[async_trait]
impl SessionStore for Metered {
    async fn load(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        let result = self.inner.load(id).await;
        crate::metrics::store_load(&result);
        result
    }

    async fn load_latest(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        store_call(StoreOp::LoadLatest, self.inner.load_latest(id)).await
    }

    async fn create(&self, id: &SessionId, record: SessionRecord) -> Result<u64, StoreError> {
        store_call(StoreOp::Create, self.inner.create(id, record)).await
    }

    async fn update(
        &self,
        id: &SessionId,
        record: SessionRecord,
        expected_version: u64,
    ) -> Result<UpdateOutcome, StoreError> {
        store_call(
            StoreOp::Update,
            self.inner.update(id, record, expected_version),
        )
        .await
    }

    async fn delete(&self, id: &SessionId) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        store_call(StoreOp::Delete, self.inner.delete(id)).await
    }

    async fn find_by_sub(&self, sub: &str) -> Result<Vec<SessionId>, StoreError> {
        store_call(StoreOp::FindBySub, self.inner.find_by_sub(sub)).await
    }

    async fn find_by_sid(&self, sid: &str) -> Result<Vec<SessionId>, StoreError> {
        store_call(StoreOp::FindBySid, self.inner.find_by_sid(sid)).await
    }

    async fn put_transient(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        store_call(
            StoreOp::PutTransient,
            self.inner.put_transient(key, value, ttl),
        )
        .await
    }

    async fn put_transient_if_absent(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        store_call(
            StoreOp::PutTransientIfAbsent,
            self.inner.put_transient_if_absent(key, value, ttl),
        )
        .await
    }

    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        store_call(StoreOp::TakeTransient, self.inner.take_transient(key)).await
    }

    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        store_call(StoreOp::GetTransient, self.inner.get_transient(key)).await
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        store_call(StoreOp::TryLease, self.inner.try_lease(id, owner, ttl)).await
    }

    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        store_call(StoreOp::RenewLease, self.inner.renew_lease(id, owner, ttl)).await
    }

    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError> {
        store_call(StoreOp::ReleaseLease, self.inner.release_lease(id, owner)).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        store_call(StoreOp::PurgeExpired, self.inner.purge_expired()).await
    }

    async fn count_sessions(&self) -> Result<Option<u64>, StoreError> {
        let count = store_call(StoreOp::CountSessions, self.inner.count_sessions()).await?;
        if let Some(count) = count {
            crate::metrics::set_active_sessions(count);
        }
        Ok(count)
    }
}
