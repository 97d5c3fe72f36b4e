//! The per-instance read cache of the shared stores, and the loop that keeps
//! it coherent through the store's own invalidation channel.
//!
//! A [`ReadCache`] holds the sessions this instance read or wrote, each with
//! its version. It answers [`load`](super::SessionStore::load) without a
//! round trip while its **invalidation channel** is live: every write and
//! delete of a session publishes `"<sha256(id)>:<version>"` (`0` for a
//! delete) in the same script (Redis) or transaction (PostgreSQL) as the
//! change, and [`run_channel`] applies what arrives on a dedicated
//! subscriber connection.
//!
//! Rules that keep it from ever serving a token older than a known change:
//!
//! * **Generation check.** Every invalidation bumps a generation counter
//!   before it removes the entry. A read takes a [`Ticket`] (the generation)
//!   *before* it asks the store, and its answer is cached only if the
//!   generation is unchanged: an invalidation that arrived while the read
//!   was in flight keeps the older value out.
//! * **Versions only go up.** An entry is replaced only by a higher (or the
//!   same) version, and an invalidation naming a version the entry already
//!   has is a no-op (this instance's own write, already written through).
//! * **No channel, no cache.** Until the subscription is confirmed, after
//!   the connection drops, or when a heartbeat (a message this instance
//!   publishes on the channel every second) does not come back within the
//!   next beat, the cache is emptied and bypassed; reconnecting bumps the
//!   generation again so that no read started during the outage is cached.
//!
//! Writes, leases and compare-and-set never look at the cache: the store is
//! the source of truth, and a version mismatch there wins.

// With SQLite alone no store has a channel.
#![cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;

use super::{StoreError, Versioned};
use crate::clock::SharedClock;
use crate::session::SessionId;

/// Default number of sessions one instance caches.
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// How often the channel loop proves its subscription with a heartbeat.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// The version an invalidation carries for a deleted session.
pub(crate) const GONE: u64 = 0;

/// Sessions this instance has read or written, valid while the channel is live.
#[derive(Debug)]
pub(crate) struct ReadCache {
    entries: DashMap<SessionId, Versioned>,
    /// Storage hash → id, for invalidations (which never carry an id).
    by_hash: DashMap<String, SessionId>,
    generation: AtomicU64,
    live: AtomicBool,
    capacity: usize,
    clock: SharedClock,
    /// Identifies this cache's heartbeats on a channel shared by instances.
    origin: String,
    /// The subscriber connection's id (Redis `CLIENT ID`, PostgreSQL
    /// backend pid), for tests that cut it; -1 when not connected.
    connection_id: AtomicI64,
}

/// The generation a read or write started at.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

impl ReadCache {
    pub(crate) fn new(clock: SharedClock, capacity: usize) -> Self {
        Self {
            entries: DashMap::new(),
            by_hash: DashMap::new(),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            capacity: capacity.max(1),
            clock,
            origin: crate::session::random_token()[..16].to_owned(),
            connection_id: AtomicI64::new(-1),
        }
    }

    /// The cached session, if the channel is live and it has not expired.
    pub(crate) fn get(&self, id: &SessionId) -> Option<Versioned> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let found = self.entries.get(id)?.clone();
        (found.record.expires_at > self.clock.now_unix()).then_some(found)
    }

    /// Takes a ticket before asking the store.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::SeqCst))
    }

    /// Caches what a read that started at `ticket` found (`None` forgets).
    pub(crate) fn fill(
        &self,
        ticket: Ticket,
        id: &SessionId,
        hash: &str,
        found: Option<&Versioned>,
    ) {
        match found {
            Some(found) => {
                self.insert(ticket, id, hash, found);
            }
            None => self.forget(id, hash),
        }
    }

    /// Records this instance's own committed write of `written` (a write
    /// that started at `ticket`): written through if nothing was invalidated
    /// meanwhile, else forgotten.
    pub(crate) fn wrote(&self, ticket: Ticket, id: &SessionId, hash: &str, written: &Versioned) {
        if !self.insert(ticket, id, hash, written) {
            self.forget(id, hash);
        }
    }

    /// Forgets a session (this instance deleted it, or lost a version race).
    pub(crate) fn forget(&self, id: &SessionId, hash: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(id);
        self.by_hash.remove(hash);
    }

    /// Inserts under the generation check, never replacing a newer version.
    fn insert(&self, ticket: Ticket, id: &SessionId, hash: &str, value: &Versioned) -> bool {
        if !self.live.load(Ordering::Acquire) {
            return false;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(id) {
            self.clear();
            return false;
        }
        // Registered first: an invalidation that bumps the generation after
        // the check below finds the entry through it.
        self.by_hash.insert(hash.to_owned(), id.clone());
        let slot = self.entries.entry(id.clone());
        // Checked under the entry's lock: an invalidation bumps the
        // generation before it takes that lock to remove the entry.
        if self.generation.load(Ordering::SeqCst) != ticket.0 {
            return false;
        }
        match slot {
            dashmap::Entry::Occupied(e) if e.get().version > value.version => {}
            dashmap::Entry::Occupied(mut e) => {
                e.insert(value.clone());
            }
            dashmap::Entry::Vacant(e) => {
                e.insert(value.clone());
            }
        }
        true
    }

    /// Applies an invalidation from the channel: the session `hash` changed
    /// to `version` ([`GONE`] when deleted).
    pub(crate) fn invalidate(&self, hash: &str, version: u64) {
        let id = self.by_hash.get(hash).map(|e| e.value().clone());
        if version != GONE
            && let Some(id) = &id
            && self.entries.get(id).is_some_and(|e| e.version >= version)
        {
            // Already has this write (this instance's own, written through).
            return;
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = id {
            self.entries.remove(&id);
            self.by_hash.remove(hash);
        }
    }

    /// The channel came up (subscription confirmed) or went down.
    pub(crate) fn set_live(&self, live: bool) {
        if live {
            // Reads that started while the channel was down must not be
            // cached: a change in that window was never announced to us.
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.live.store(true, Ordering::Release);
        } else {
            self.live.store(false, Ordering::Release);
            self.connection_id.store(-1, Ordering::Relaxed);
            self.clear();
        }
    }

    fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
        self.by_hash.clear();
    }

    /// Whether the channel is live (reads may be answered from the cache).
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The version cached for `id`, if any.
    pub(crate) fn cached_version(&self, id: &SessionId) -> Option<u64> {
        self.entries.get(id).map(|e| e.version)
    }

    /// The subscriber connection's id, when connected.
    pub(crate) fn connection_id(&self) -> Option<i64> {
        let id = self.connection_id.load(Ordering::Relaxed);
        (id >= 0).then_some(id)
    }

    /// Applies one message from the channel; returns the heartbeat number if
    /// it is one of ours.
    fn apply(&self, message: &str) -> Option<u64> {
        if let Some(beat) = message.strip_prefix("beat:") {
            let (origin, n) = beat.split_once(':')?;
            return (origin == self.origin).then(|| n.parse().ok()).flatten();
        }
        match message.split_once(':') {
            Some((hash, version)) => match version.parse() {
                Ok(version) => self.invalidate(hash, version),
                // Unknown message: to be safe, assume anything changed.
                Err(_) => self.clear(),
            },
            None => self.clear(),
        }
        None
    }
}

/// The invalidation channel of a store: a dedicated subscriber connection
/// and a way to publish on the channel over the store's ordinary connections.
#[async_trait]
pub(crate) trait Channel: Send + Sync + 'static {
    /// A live subscription.
    type Subscription: Send;

    /// Connects and subscribes; returns once the server confirmed it, with
    /// the connection's id.
    async fn subscribe(&self) -> Result<(Self::Subscription, i64), StoreError>;

    /// The next message; `None` when the connection is lost.
    async fn next(&self, subscription: &mut Self::Subscription) -> Option<String>;

    /// Publishes `message` on the channel.
    async fn publish(&self, message: &str) -> Result<(), StoreError>;
}

/// Stops the channel loop when the store is dropped.
#[derive(Debug)]
pub(crate) struct ChannelTask(tokio::task::AbortHandle);

impl Drop for ChannelTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the loop that keeps `cache` coherent through `channel`; `None`
/// outside a Tokio runtime (the store then keeps no cache).
pub(crate) fn spawn_channel<C: Channel>(cache: Arc<ReadCache>, channel: C) -> Option<ChannelTask> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    Some(ChannelTask(
        runtime.spawn(run_channel(cache, channel)).abort_handle(),
    ))
}

/// Subscribes, applies invalidations, and proves the subscription with a
/// heartbeat; on any loss empties the cache and subscribes again.
pub(crate) async fn run_channel<C: Channel>(cache: Arc<ReadCache>, channel: C) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let (mut subscription, connection_id) = match channel.subscribe().await {
            Ok(s) => s,
            Err(err) => {
                tracing::debug!(error = %err, "session cache: cannot subscribe to invalidations yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        cache.connection_id.store(connection_id, Ordering::Relaxed);
        cache.set_live(true);
        tracing::debug!("session cache: invalidation channel live");
        let echoed = AtomicU64::new(0);
        let receive = async {
            while let Some(message) = channel.next(&mut subscription).await {
                if let Some(n) = cache.apply(&message) {
                    echoed.fetch_max(n, Ordering::AcqRel);
                }
            }
        };
        let heartbeat = async {
            let mut sent = 0u64;
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if echoed.load(Ordering::Acquire) < sent {
                    tracing::warn!(
                        "session cache: a heartbeat did not come back; cache off until resubscribed"
                    );
                    return;
                }
                sent += 1;
                let beat = format!("beat:{}:{sent}", cache.origin);
                if let Err(err) = channel.publish(&beat).await {
                    tracing::warn!(error = %err, "session cache: heartbeat failed; cache off until resubscribed");
                    return;
                }
            }
        };
        tokio::select! {
            () = receive => tracing::warn!("session cache: invalidation channel lost; cache off until resubscribed"),
            () = heartbeat => {}
        }
        cache.set_live(false);
        drop(subscription);
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccessToken;
    use crate::clock::{Clock as _, SystemClock};
    use crate::session::{SessionRecord, UserTokens};

    fn record() -> Arc<SessionRecord> {
        let now = SystemClock.now_unix();
        Arc::new(SessionRecord {
            sub: "alice".into(),
            sid: None,
            claims: serde_json::Map::new(),
            tokens: UserTokens {
                access_token: AccessToken::new("at"),
                expires_at: now + 300,
                token_type: "Bearer".into(),
                refresh_token: None,
                id_token: None,
                scope: None,
                refreshed_at: None,
                refresh_count: 0,
                issued_at: None,
            },
            resource_tokens: Default::default(),
            created_at: now,
            expires_at: now + 3600,
            last_active: now,
            logout_id: "l".into(),
            user_agent: None,
            dpop_key: None,
        })
    }

    fn versioned(version: u64) -> Versioned {
        Versioned {
            version,
            record: record(),
        }
    }

    fn live_cache() -> ReadCache {
        let cache = ReadCache::new(Arc::new(SystemClock), 10);
        cache.set_live(true);
        cache
    }

    #[test]
    fn an_invalidation_during_a_read_keeps_the_older_value_out() {
        let cache = live_cache();
        let id = SessionId::generate();
        let ticket = cache.ticket();
        // The read is in flight; another instance writes version 2.
        cache.invalidate("h", 2);
        cache.fill(ticket, &id, "h", Some(&versioned(1)));
        assert!(cache.get(&id).is_none());
        // A read that starts afterwards is cached.
        let ticket = cache.ticket();
        cache.fill(ticket, &id, "h", Some(&versioned(2)));
        assert_eq!(cache.get(&id).unwrap().version, 2);
    }

    #[test]
    fn invalidations_remove_older_versions_and_skip_own_writes() {
        let cache = live_cache();
        let id = SessionId::generate();
        let t = cache.ticket();
        cache.wrote(t, &id, "h", &versioned(3));
        cache.invalidate("h", 3);
        assert_eq!(cache.get(&id).unwrap().version, 3, "own write: kept");
        cache.invalidate("h", 4);
        assert!(cache.get(&id).is_none());
        let t = cache.ticket();
        cache.fill(t, &id, "h", Some(&versioned(4)));
        cache.invalidate("h", GONE);
        assert!(cache.get(&id).is_none(), "deleted");
    }

    #[test]
    fn versions_only_go_up() {
        let cache = live_cache();
        let id = SessionId::generate();
        let t = cache.ticket();
        cache.fill(t, &id, "h", Some(&versioned(5)));
        cache.fill(t, &id, "h", Some(&versioned(4)));
        assert_eq!(cache.get(&id).unwrap().version, 5);
    }

    #[test]
    fn no_channel_no_cache() {
        let cache = live_cache();
        let id = SessionId::generate();
        let t = cache.ticket();
        cache.fill(t, &id, "h", Some(&versioned(1)));
        assert!(cache.get(&id).is_some());
        cache.set_live(false);
        assert!(cache.get(&id).is_none(), "emptied and bypassed");
        let t = cache.ticket();
        cache.fill(t, &id, "h", Some(&versioned(1)));
        cache.set_live(true);
        assert!(
            cache.get(&id).is_none(),
            "nothing read during the outage is kept"
        );
        // A read started before the channel came back is not cached either.
        cache.fill(t, &id, "h", Some(&versioned(1)));
        assert!(cache.get(&id).is_none());
    }

    #[test]
    fn the_capacity_bounds_the_cache() {
        let cache = live_cache();
        for n in 0..25 {
            let t = cache.ticket();
            cache.fill(
                t,
                &SessionId::generate(),
                &format!("h{n}"),
                Some(&versioned(1)),
            );
        }
        assert!(cache.entries.len() <= 10);
    }

    #[test]
    fn heartbeats_are_recognised_by_origin() {
        let cache = live_cache();
        assert_eq!(cache.apply(&format!("beat:{}:7", cache.origin)), Some(7));
        assert_eq!(cache.apply("beat:someone-else:7"), None);
        let id = SessionId::generate();
        let t = cache.ticket();
        cache.fill(t, &id, "h", Some(&versioned(1)));
        assert_eq!(cache.apply("garbage"), None);
        assert!(
            cache.get(&id).is_none(),
            "an unknown message empties the cache"
        );
    }
}
