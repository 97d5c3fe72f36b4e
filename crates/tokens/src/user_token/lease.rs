//! The session's refresh lease in the store, held by a guard.
//!
//! Only the instance holding a session's lease spends its refresh token.
//! [`Lease`] owns the task that keeps the lease alive while a renewal runs
//! and tells, through [`Lease::is_held`], whether the lease may have passed
//! to another instance (then the grant must not be sent). Finish with
//! [`Lease::release`]; a guard dropped without it (a panic, a cancelled
//! future) still stops its renewer and gives the lease back in the
//! background, in the manner of tower-http's `on_early_drop` guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::session::SessionId;
use crate::store::{SessionStore, StoreError};

/// A held refresh lease. See the [module docs](self).
pub(crate) struct Lease {
    store: Arc<dyn SessionStore>,
    id: SessionId,
    owner: String,
    held: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    released: bool,
}

impl Lease {
    /// Takes the session's lease for `ttl`, renewed every `ttl / 3` until
    /// released; `None` when another holder has it.
    pub(crate) async fn try_take(
        store: &Arc<dyn SessionStore>,
        id: &SessionId,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let owner = crate::session::random_token();
        if !store.try_lease(id, &owner, ttl).await? {
            return Ok(None);
        }
        let held = Arc::new(AtomicBool::new(true));
        let renewer = tokio::spawn(keep_alive(
            Arc::clone(store),
            id.clone(),
            owner.clone(),
            ttl,
            Arc::clone(&held),
        ));
        Ok(Some(Lease {
            store: Arc::clone(store),
            id: id.clone(),
            owner,
            held,
            renewer,
            released: false,
        }))
    }

    /// `false` once the lease may have passed to another instance (a
    /// renewal found it gone, or renewals failed for a whole `ttl`).
    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// The renewal is over: stop renewing and give the lease back (a store
    /// failure is logged; the lease then expires on its own).
    pub(crate) async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        if let Err(err) = self.store.release_lease(&self.id, &self.owner).await {
            tracing::warn!(error = %err, "could not release the refresh lease; it will expire");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        if self.released {
            return;
        }
        // Dropped early: give the lease back without waiting for it.
        let (store, id, owner) = (
            Arc::clone(&self.store),
            self.id.clone(),
            std::mem::take(&mut self.owner),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.release_lease(&id, &owner).await;
            });
        }
    }
}

/// Renews the lease every `ttl / 3`; on a store failure it retries sooner,
/// and it gives up (clearing `held`) when the lease is gone or could not be
/// renewed for a whole `ttl`.
async fn keep_alive(
    store: Arc<dyn SessionStore>,
    id: SessionId,
    owner: String,
    ttl: Duration,
    held: Arc<AtomicBool>,
) {
    let mut renewed_at = tokio::time::Instant::now();
    let mut wait = ttl / 3;
    loop {
        tokio::time::sleep(wait).await;
        match store.renew_lease(&id, &owner, ttl).await {
            Ok(true) => {
                renewed_at = tokio::time::Instant::now();
                wait = ttl / 3;
            }
            Ok(false) => {
                held.store(false, Ordering::Release);
                tracing::warn!("refresh lease lost while refreshing");
                return;
            }
            Err(err) => {
                if renewed_at.elapsed() >= ttl {
                    held.store(false, Ordering::Release);
                    tracing::warn!(error = %err, "refresh lease expired: renewals failed");
                    return;
                }
                // Try again soon: the lease must not run out.
                tracing::warn!(error = %err, "refresh lease renewal failed; retrying");
                wait = (ttl / 10).max(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn one_holder_and_released_on_drop() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let id = SessionId::generate();
        let ttl = Duration::from_secs(30);
        let lease = Lease::try_take(&store, &id, ttl).await.unwrap().unwrap();
        assert!(lease.is_held());
        assert!(Lease::try_take(&store, &id, ttl).await.unwrap().is_none());
        lease.release().await;
        let again = Lease::try_take(&store, &id, ttl).await.unwrap().unwrap();
        // Dropped without `release` (a cancelled renewal): given back anyway.
        drop(again);
        let mut taken = None;
        for _ in 0..100 {
            taken = Lease::try_take(&store, &id, ttl).await.unwrap();
            if taken.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(taken.is_some(), "the dropped lease was released");
    }

    #[tokio::test]
    async fn a_lease_taken_over_is_no_longer_held() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let id = SessionId::generate();
        let lease = Lease::try_take(&store, &id, Duration::from_millis(300))
            .await
            .unwrap()
            .unwrap();
        // Another owner takes the session's lease over (as after an expiry).
        store.release_lease(&id, &lease.owner).await.unwrap();
        assert!(
            store
                .try_lease(&id, "other", Duration::from_secs(30))
                .await
                .unwrap()
        );
        // The renewer (every 100 ms) finds the lease gone.
        for _ in 0..500 {
            if !lease.is_held() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!lease.is_held());
    }
}
