//! An in-process session store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{SessionStore, StoreError, UpdateOutcome, Versioned};
use crate::clock::{SharedClock, SystemClock};
use crate::session::{SessionId, SessionRecord};

/// Pending values kept at most; beyond it the oldest expire first.
const MAX_TRANSIENT: usize = 100_000;

/// Sessions in memory, for a single process.
///
/// Reads are lock-free for different sessions and cost an `Arc` clone, so the
/// hot path (a valid token already in the session) stays in the
/// sub-microsecond range. Sessions are lost when the process stops; use a
/// persistent store for several instances or restarts.
///
/// ```
/// # tokio_test_block_on(async {
/// use oidc_bff_tokens::store::{MemoryStore, SessionStore};
///
/// let store = MemoryStore::new();
/// store.put_transient("k", "v".into(), std::time::Duration::from_secs(60)).await.unwrap();
/// assert_eq!(store.take_transient("k").await.unwrap().as_deref(), Some("v"));
/// assert_eq!(store.take_transient("k").await.unwrap(), None);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: DashMap<SessionId, Versioned>,
    /// The sessions of each subject: [`SessionStore::find_by_sub`] reads
    /// it instead of scanning every session. An entry may outlive its
    /// session for a moment (readers check each id against `sessions`).
    by_sub: DashMap<String, Vec<SessionId>>,
    transient: DashMap<String, (String, Instant)>,
    leases: DashMap<SessionId, (String, Instant)>,
    puts: AtomicU64,
    clock: SharedClock,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store using the system clock for session expiry.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store reading time from `clock` (share the engine's clock in tests).
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: DashMap::new(),
                by_sub: DashMap::new(),
                transient: DashMap::new(),
                leases: DashMap::new(),
                puts: AtomicU64::new(0),
                clock,
            }),
        }
    }

    /// Number of sessions held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.inner.sessions.len()
    }

    /// `true` when no session is held.
    pub fn is_empty(&self) -> bool {
        self.inner.sessions.is_empty()
    }

    /// Removes expired sessions and transient values; returns how many sessions went.
    pub fn purge_expired(&self) -> usize {
        let now = self.inner.clock.now_unix();
        let before = self.inner.sessions.len();
        self.inner.sessions.retain(|_, v| !v.record.is_expired(now));
        let sessions = &self.inner.sessions;
        self.inner.by_sub.retain(|_, ids| {
            ids.retain(|id| sessions.contains_key(id));
            !ids.is_empty()
        });
        let instant = Instant::now();
        self.inner
            .transient
            .retain(|_, (_, until)| *until > instant);
        before.saturating_sub(self.inner.sessions.len())
    }

    fn ids_where(&self, pred: impl Fn(&SessionRecord) -> bool) -> Vec<SessionId> {
        let now = self.inner.clock.now_unix();
        self.inner
            .sessions
            .iter()
            .filter(|e| !e.record.is_expired(now) && pred(&e.record))
            .map(|e| e.key().clone())
            .collect()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        let now = self.inner.clock.now_unix();
        let found = self.inner.sessions.get(id).map(|e| e.value().clone());
        match found {
            Some(v) if v.record.is_expired(now) => {
                self.inner
                    .sessions
                    .remove_if(id, |_, cur| cur.version == v.version);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    async fn create(&self, id: &SessionId, record: SessionRecord) -> Result<u64, StoreError> {
        use dashmap::mapref::entry::Entry;
        let sub = record.sub.clone();
        match self.inner.sessions.entry(id.clone()) {
            Entry::Occupied(_) => {
                return Err(StoreError::Unavailable("session id collision".into()));
            }
            Entry::Vacant(v) => {
                v.insert(Versioned {
                    version: 1,
                    record: Arc::new(record),
                });
            }
        }
        // Indexed once the session's own lock is released (the index is
        // always locked before, never while, a session is).
        self.inner.by_sub.entry(sub).or_default().push(id.clone());
        Ok(1)
    }

    async fn update(
        &self,
        id: &SessionId,
        record: SessionRecord,
        expected_version: u64,
    ) -> Result<UpdateOutcome, StoreError> {
        let Some(mut entry) = self.inner.sessions.get_mut(id) else {
            return Ok(UpdateOutcome::Missing);
        };
        if entry.version != expected_version {
            return Ok(UpdateOutcome::Conflict);
        }
        entry.version += 1;
        entry.record = Arc::new(record);
        Ok(UpdateOutcome::Updated(entry.version))
    }

    async fn delete(&self, id: &SessionId) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let removed = self.inner.sessions.remove(id).map(|(_, v)| v.record);
        if let Some(record) = &removed
            && let Some(mut ids) = self.inner.by_sub.get_mut(&record.sub)
        {
            ids.retain(|other| other != id);
            let empty = ids.is_empty();
            drop(ids);
            if empty {
                self.inner
                    .by_sub
                    .remove_if(&record.sub, |_, ids| ids.is_empty());
            }
        }
        Ok(removed)
    }

    async fn find_by_sub(&self, sub: &str) -> Result<Vec<SessionId>, StoreError> {
        let now = self.inner.clock.now_unix();
        let Some(mut ids) = self.inner.by_sub.get_mut(sub) else {
            return Ok(Vec::new());
        };
        // Forget ids whose session went (deleted, or purged/expired).
        let sessions = &self.inner.sessions;
        ids.retain(|id| sessions.contains_key(id));
        let live = ids
            .iter()
            .filter(|id| {
                sessions
                    .get(*id)
                    .is_some_and(|v| v.record.sub == sub && !v.record.is_expired(now))
            })
            .cloned()
            .collect();
        let empty = ids.is_empty();
        drop(ids);
        if empty {
            self.inner.by_sub.remove_if(sub, |_, ids| ids.is_empty());
        }
        Ok(live)
    }

    async fn find_by_sid(&self, sid: &str) -> Result<Vec<SessionId>, StoreError> {
        Ok(self.ids_where(|r| r.sid.as_deref() == Some(sid)))
    }

    async fn put_transient(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let puts = self.inner.puts.fetch_add(1, Ordering::Relaxed);
        if puts.is_multiple_of(1024) || self.inner.transient.len() >= MAX_TRANSIENT {
            let now = Instant::now();
            self.inner.transient.retain(|_, (_, until)| *until > now);
            if self.inner.transient.len() >= MAX_TRANSIENT {
                return Err(StoreError::Unavailable(
                    "too many pending values; try again later".into(),
                ));
            }
        }
        self.inner
            .transient
            .insert(key.to_owned(), (value, Instant::now() + ttl));
        Ok(())
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        use dashmap::mapref::entry::Entry;
        let now = Instant::now();
        match self.inner.leases.entry(id.clone()) {
            Entry::Occupied(mut held) if held.get().1 <= now => {
                held.insert((owner.to_owned(), now + ttl));
                Ok(true)
            }
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(free) => {
                free.insert((owner.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(match self.inner.leases.get_mut(id) {
            Some(mut held) if held.0 == owner && held.1 > now => {
                held.1 = now + ttl;
                true
            }
            _ => false,
        })
    }

    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError> {
        self.inner.leases.remove_if(id, |_, held| held.0 == owner);
        Ok(())
    }

    async fn put_transient_if_absent(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        use dashmap::mapref::entry::Entry;
        let now = Instant::now();
        match self.inner.transient.entry(key.to_owned()) {
            Entry::Occupied(mut held) if held.get().1 <= now => {
                held.insert((value, now + ttl));
                Ok(true)
            }
            Entry::Occupied(_) => Ok(false),
            Entry::Vacant(free) => {
                free.insert((value, now + ttl));
                Ok(true)
            }
        }
    }

    async fn count_sessions(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.len() as u64))
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.inner
            .leases
            .retain(|_, (_, until)| *until > Instant::now());
        Ok(MemoryStore::purge_expired(self) as u64)
    }

    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .transient
            .get(key)
            .and_then(|e| (e.1 > Instant::now()).then(|| e.0.clone())))
    }

    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .inner
            .transient
            .remove(key)
            .and_then(|(_, (value, until))| (until > Instant::now()).then_some(value)))
    }
}
