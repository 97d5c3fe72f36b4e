//! A session store in Redis, shared by any number of instances.
//!
//! ```no_run
//! # async fn demo() -> Result<(), oidc_bff_tokens::StoreError> {
//! use oidc_bff_tokens::store::{KeyRing, RedisStore};
//!
//! let keys = KeyRing::from_config(["k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="])?;
//! let store = RedisStore::builder("redis://127.0.0.1:6379")
//!     .encryption(keys)
//!     .key_prefix("myapp:bff:")
//!     .build()
//!     .await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! # Layout
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `{prefix}s:{sha256(id)}` | hash | `v` version, `d` sealed record, `h` sealed id, `x` expiry, `u`/`i` index keys; expires with the session |
//! | `{prefix}sub:{sha256(sub)}`, `{prefix}sid:{sha256(sid)}` | set | hashed ids of a subject's / provider session's sessions |
//! | `{prefix}l:{sha256(id)}` | string | the refresh lease's owner, `SET NX PX` |
//! | `{prefix}t:{sha256(key)}` | string | a sealed transient value, with `PX` |
//!
//! Versioned writes, creation and deletion are Lua scripts, so each is
//! atomic; lease renewal and release are compare-and-`PEXPIRE` /
//! compare-and-`DEL` scripts, so only the owner can extend or free a lease.
//! The scripts touch the index sets of a session, which is fine for a
//! standalone Redis (or a primary with replicas) but not Redis Cluster.
//! Connections are plain TCP or Unix sockets (no TLS yet).
//!
//! The connection is re-established automatically after Redis goes away;
//! meanwhile every operation fails within the operation timeout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Script};

use super::cache::{Channel, ChannelTask, ReadCache, spawn_channel};
use super::persistent::{
    Codec, Settings, bounded, common_builder_methods, hash_id, hash_key, millis,
    open_value_or_none, sha256_hex, warn_unreadable_handle, warn_unreadable_session,
};
use super::{SessionStore, StoreError, UpdateOutcome, Versioned};
use crate::clock::SharedClock;
use crate::session::{SessionId, SessionRecord};

/// Sessions in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    conn: ConnectionManager,
    codec: Codec,
    clock: SharedClock,
    op_timeout: Duration,
    prefix: String,
    scripts: Scripts,
    /// The invalidation channel: `{prefix}changes`.
    channel: String,
    cache: Option<Arc<ReadCache>>,
    _channel_task: Option<ChannelTask>,
}

struct Scripts {
    create: Script,
    update: Script,
    delete: Script,
    discard: Script,
    renew: Script,
    release: Script,
}

/// Creates a session unless the key exists; adds it to its index sets and
/// makes each set live at least as long as the session.
const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', 1, 'd', ARGV[2], 'h', ARGV[3], 'x', ARGV[4], 'u', ARGV[6], 'i', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local ttl = tonumber(ARGV[5])
for n = 2, #KEYS do
  redis.call('SADD', KEYS[n], ARGV[1])
  if redis.call('PTTL', KEYS[n]) < ttl then redis.call('PEXPIRE', KEYS[n], ttl) end
end
return 1
";

/// Compare-and-set: -1 missing, -2 version conflict, else the new version
/// (announced on the invalidation channel `ARGV[9]`).
const UPDATE: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[8] then return -2 end
local old = redis.call('HMGET', KEYS[1], 'u', 'i')
if old[1] and old[1] ~= ARGV[6] then redis.call('SREM', old[1], ARGV[1]) end
if old[2] and old[2] ~= '' and old[2] ~= ARGV[7] then redis.call('SREM', old[2], ARGV[1]) end
local nv = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'h', ARGV[3], 'x', ARGV[4], 'u', ARGV[6], 'i', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local ttl = tonumber(ARGV[5])
for n = 2, #KEYS do
  redis.call('SADD', KEYS[n], ARGV[1])
  if redis.call('PTTL', KEYS[n]) < ttl then redis.call('PEXPIRE', KEYS[n], ttl) end
end
redis.call('PUBLISH', ARGV[9], ARGV[1] .. ':' .. nv)
return nv
";

/// Deletes a session and its index entries, announces it on `ARGV[2]`;
/// returns the sealed record.
const DELETE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'd', 'u', 'i')
if not f[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[1] .. ':0')
if f[2] then redis.call('SREM', f[2], ARGV[1]) end
if f[3] and f[3] ~= '' then redis.call('SREM', f[3], ARGV[1]) end
return f[1]
";

/// Deletes a session and its index entries only if it still has the version
/// `ARGV[2]` (an unreadable record, unless another instance rewrote it);
/// announces it on `ARGV[3]`.
const DISCARD: &str = r"
local f = redis.call('HMGET', KEYS[1], 'v', 'u', 'i')
if f[1] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ':0')
if f[2] then redis.call('SREM', f[2], ARGV[1]) end
if f[3] and f[3] ~= '' then redis.call('SREM', f[3], ARGV[1]) end
return 1
";

/// Extends a lease only for its owner.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Releases a lease only for its owner.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Builder of [`RedisStore`].
#[derive(Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    settings: Settings,
}

impl RedisStore {
    /// Starts a builder for the Redis at `url`: `redis://[user:password@]host[:port][/db]`
    /// or `redis+unix:///path/to/socket`.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            settings: Settings::new("oidc-bff:"),
        }
    }

    /// Connects to the Redis at `url` with default settings.
    pub async fn connect(url: impl Into<String>, keys: super::KeyRing) -> Result<Self, StoreError> {
        Self::builder(url).encryption(keys).build().await
    }

    /// Every stored string under this store's prefix (for tests that check
    /// what a dump shows).
    #[doc(hidden)]
    pub async fn raw_dump(&self) -> Result<Vec<String>, StoreError> {
        let keys = self.scan(&format!("{}*", self.inner.prefix)).await?;
        let mut con = self.inner.conn.clone();
        let mut out = Vec::new();
        for key in keys {
            let kind: String = self
                .run(redis::cmd("TYPE").arg(&key).query_async(&mut con))
                .await?;
            let mut line = key.clone();
            match kind.as_str() {
                "string" => {
                    let v: Option<String> = self.run(con.get(&key)).await?;
                    line.extend([" ".to_owned(), v.unwrap_or_default()]);
                }
                "hash" => {
                    let v: Vec<String> = self
                        .run(redis::cmd("HGETALL").arg(&key).query_async(&mut con))
                        .await?;
                    for item in v {
                        line.push(' ');
                        line.push_str(&item);
                    }
                }
                "set" => {
                    let v: Vec<String> = self
                        .run(redis::cmd("SMEMBERS").arg(&key).query_async(&mut con))
                        .await?;
                    for item in v {
                        line.push(' ');
                        line.push_str(&item);
                    }
                }
                _ => {}
            }
            out.push(line);
        }
        Ok(out)
    }

    /// Deletes every key under this store's prefix (tests clean up with it).
    #[doc(hidden)]
    pub async fn drop_all(&self) -> Result<(), StoreError> {
        let keys = self.scan(&format!("{}*", self.inner.prefix)).await?;
        let mut con = self.inner.conn.clone();
        for chunk in keys.chunks(500) {
            let _: i64 = self.run(con.del(chunk)).await?;
        }
        Ok(())
    }

    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        bounded(self.inner.op_timeout, async { op.await.map_err(map_err) }).await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut con = self.inner.conn.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut con),
                )
                .await?;
            out.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    fn session_key(&self, hash: &str) -> String {
        format!("{}s:{hash}", self.inner.prefix)
    }

    fn sub_key(&self, sub: &str) -> String {
        format!("{}sub:{}", self.inner.prefix, sha256_hex(sub.as_bytes()))
    }

    fn sid_key(&self, sid: &str) -> String {
        format!("{}sid:{}", self.inner.prefix, sha256_hex(sid.as_bytes()))
    }

    fn lease_key(&self, id: &SessionId) -> String {
        format!("{}l:{}", self.inner.prefix, hash_id(id))
    }

    fn transient_key(&self, hkey: &str) -> String {
        format!("{}t:{hkey}", self.inner.prefix)
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_unix()
    }

    /// Runs the create or update script for `record`.
    async fn write(
        &self,
        script: &Script,
        id: &SessionId,
        record: &SessionRecord,
        expected: Option<u64>,
    ) -> Result<i64, StoreError> {
        let hash = hash_id(id);
        let data = self.inner.codec.seal_record(&hash, record)?;
        let handle = self.inner.codec.seal_id(&hash, id)?;
        let now = self.now();
        // The key outlives the session by a minute, so a load by the
        // engine's clock (tests move it) and Redis's own expiry agree.
        let ttl_ms = millis(Duration::from_secs(
            record.expires_at.saturating_sub(now).saturating_add(60),
        ));
        let sub_key = self.sub_key(&record.sub);
        let sid_key = record.sid.as_deref().map(|s| self.sid_key(s));
        let mut invocation = script.key(self.session_key(&hash));
        invocation.key(&sub_key);
        if let Some(k) = &sid_key {
            invocation.key(k);
        }
        invocation
            .arg(&hash)
            .arg(&data)
            .arg(&handle)
            .arg(record.expires_at)
            .arg(ttl_ms)
            .arg(&sub_key)
            .arg(sid_key.as_deref().unwrap_or(""));
        if let Some(v) = expected {
            invocation.arg(v.to_string()).arg(&self.inner.channel);
        }
        let mut con = self.inner.conn.clone();
        self.run(invocation.invoke_async(&mut con)).await
    }

    /// Deletes an unreadable session if it still has `version`; best effort
    /// (a failure is logged, the next load tries again).
    async fn discard(&self, id: &SessionId, hash: &str, version: u64) {
        let mut con = self.inner.conn.clone();
        let done: Result<i64, StoreError> = self
            .run(
                self.inner
                    .scripts
                    .discard
                    .key(self.session_key(hash))
                    .arg(hash)
                    .arg(version.to_string())
                    .arg(&self.inner.channel)
                    .invoke_async(&mut con),
            )
            .await;
        self.forget(id, hash);
        if let Err(err) = done {
            tracing::warn!(error = %err, "could not delete an unreadable session");
        }
    }

    /// Reads a session from Redis.
    async fn read(&self, id: &SessionId, hash: &str) -> Result<Option<Versioned>, StoreError> {
        let mut con = self.inner.conn.clone();
        let (version, data, expires): (Option<u64>, Option<String>, Option<u64>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(self.session_key(hash))
                    .arg("v")
                    .arg("d")
                    .arg("x")
                    .query_async(&mut con),
            )
            .await?;
        let (Some(version), Some(data), Some(expires)) = (version, data, expires) else {
            return Ok(None);
        };
        if expires <= self.now() {
            return Ok(None);
        }
        let record = match self.inner.codec.open_record(hash, &data) {
            Ok(record) => record,
            Err(err) => {
                warn_unreadable_session("redis", &err);
                self.discard(id, hash, version).await;
                return Ok(None);
            }
        };
        Ok(Some(Versioned {
            version,
            record: Arc::new(record),
        }))
    }

    /// Reads a session from Redis and refreshes the cache with it.
    async fn read_and_cache(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        let hash = hash_id(id);
        let ticket = self.inner.cache.as_ref().map(|c| c.ticket());
        let found = self.read(id, &hash).await?;
        if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
            cache.fill(ticket, id, &hash, found.as_ref());
        }
        Ok(found)
    }

    fn forget(&self, id: &SessionId, hash: &str) {
        if let Some(cache) = &self.inner.cache {
            cache.forget(id, hash);
        }
    }

    /// Records this instance's own write of `record` at `version`.
    fn wrote(
        &self,
        ticket: Option<super::cache::Ticket>,
        id: &SessionId,
        version: u64,
        record: SessionRecord,
    ) {
        if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
            let written = Versioned {
                version,
                record: Arc::new(record),
            };
            cache.wrote(ticket, id, &hash_id(id), &written);
        }
    }

    /// Whether the read cache answers loads (its invalidation channel is live).
    #[doc(hidden)]
    pub fn read_cache_live(&self) -> bool {
        self.inner.cache.as_ref().is_some_and(|c| c.is_live())
    }

    /// The version the read cache holds for `id`.
    #[doc(hidden)]
    pub fn cached_version(&self, id: &SessionId) -> Option<u64> {
        self.inner.cache.as_ref()?.cached_version(id)
    }

    /// The invalidation channel's connection (its Redis `CLIENT ID`).
    #[doc(hidden)]
    pub fn invalidation_connection_id(&self) -> Option<i64> {
        self.inner.cache.as_ref()?.connection_id()
    }

    async fn ids(&self, index_key: &str) -> Result<Vec<SessionId>, StoreError> {
        let mut con = self.inner.conn.clone();
        let members: HashSet<String> = self.run(con.smembers(index_key)).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let members: Vec<String> = members.into_iter().collect();
        let mut pipe = redis::pipe();
        for hash in &members {
            pipe.cmd("HMGET")
                .arg(self.session_key(hash))
                .arg("h")
                .arg("x");
        }
        let found: Vec<(Option<String>, Option<u64>)> =
            self.run(pipe.query_async(&mut con)).await?;
        let now = self.now();
        let mut ids = Vec::new();
        let mut stale = Vec::new();
        for (hash, (handle, expires)) in members.iter().zip(found) {
            match (handle, expires) {
                // One unreadable entry must not fail a whole back-channel
                // logout: it is skipped (and deleted when next loaded).
                (Some(handle), Some(x)) if x > now => {
                    match self.inner.codec.open_id(hash, &handle) {
                        Ok(id) => ids.push(id),
                        Err(err) => warn_unreadable_handle("redis", &err),
                    }
                }
                (Some(_), Some(_)) => {}
                _ => stale.push(hash.clone()),
            }
        }
        if !stale.is_empty() {
            let _: i64 = self.run(con.srem(index_key, &stale)).await?;
        }
        Ok(ids)
    }
}

impl RedisStoreBuilder {
    common_builder_methods!();

    /// Prefix of every key (default `oidc-bff:`). Lets several applications
    /// (or tests) share one Redis.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// Builds the store without any I/O: the first operation connects, and
    /// operations fail (503) until Redis can be reached. Configuration
    /// errors are still reported here. Must be called within a Tokio runtime.
    pub fn build_lazy(self) -> Result<RedisStore, StoreError> {
        let codec = self.settings.codec()?;
        if self.settings.prefix.contains(['*', '?', '[', ']']) {
            return Err(StoreError::Config(
                "a key prefix must not contain glob characters".into(),
            ));
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|_| StoreError::Config("invalid Redis URL".into()))?;
        let timeout = self.settings.op_timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let channel = format!("{}changes", self.settings.prefix);
        let cache = (self.settings.cache_capacity > 0).then(|| {
            Arc::new(ReadCache::new(
                self.settings.clock.clone(),
                self.settings.cache_capacity,
            ))
        });
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(map_err)?;
        let channel_task = cache.as_ref().and_then(|cache| {
            let subscriber = RedisChannel {
                client: resp3(&client),
                conn: conn.clone(),
                channel: channel.clone(),
                op_timeout: timeout,
            };
            spawn_channel(cache.clone(), subscriber)
        });
        // No channel, no cache.
        let cache = cache.filter(|_| channel_task.is_some());
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                codec,
                clock: self.settings.clock.clone(),
                op_timeout: timeout,
                prefix: self.settings.prefix.clone(),
                scripts: Scripts {
                    create: Script::new(CREATE),
                    update: Script::new(UPDATE),
                    delete: Script::new(DELETE),
                    discard: Script::new(DISCARD),
                    renew: Script::new(RENEW),
                    release: Script::new(RELEASE),
                },
                channel,
                cache,
                _channel_task: channel_task,
            }),
        })
    }

    /// Connects and checks that Redis answers within the operation timeout.
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        let store = self.build_lazy()?;
        let mut con = store.inner.conn.clone();
        let _: String = store.run(redis::cmd("PING").query_async(&mut con)).await?;
        Ok(store)
    }
}

/// The same server over RESP3, whose connections carry pushed messages.
fn resp3(client: &redis::Client) -> redis::Client {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    // Opening parsed connection info cannot fail; fall back to the original.
    redis::Client::open(info.set_redis_settings(settings)).unwrap_or_else(|_| client.clone())
}

/// `SUBSCRIBE` on a RESP3 connection of its own; heartbeats are published
/// through the store's connection.
struct RedisChannel {
    client: redis::Client,
    conn: ConnectionManager,
    channel: String,
    op_timeout: Duration,
}

/// A live subscription: the connection and the messages it receives.
struct Subscribed {
    _conn: redis::aio::MultiplexedConnection,
    pushed: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
}

#[async_trait]
impl Channel for RedisChannel {
    type Subscription = Subscribed;

    async fn subscribe(&self) -> Result<(Subscribed, i64), StoreError> {
        let (tx, pushed) = tokio::sync::mpsc::unbounded_channel();
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout))
            .set_push_sender(tx);
        let subscribe = async {
            let mut conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await?;
            conn.subscribe(&self.channel).await?;
            Ok((
                Subscribed {
                    _conn: conn,
                    pushed,
                },
                id,
            ))
        };
        bounded(self.op_timeout, async { subscribe.await.map_err(map_err) }).await
    }

    async fn next(&self, subscription: &mut Subscribed) -> Option<String> {
        loop {
            let push = subscription.pushed.recv().await?;
            match push.kind {
                redis::PushKind::Message => {
                    let payload = push.data.last()?;
                    return redis::from_redis_value_ref::<String>(payload).ok();
                }
                redis::PushKind::Disconnection => return None,
                // Subscription confirmations and the like.
                _ => {}
            }
        }
    }

    async fn publish(&self, message: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, async {
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(message)
                .query_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(map_err)
        })
        .await
    }
}

/// Maps a client error onto the store's error without leaking values.
fn map_err(err: redis::RedisError) -> StoreError {
    if err.is_timeout() {
        StoreError::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        StoreError::Unavailable("Redis connection failed".into())
    } else {
        match err.kind() {
            redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse => {
                StoreError::Corrupt("unexpected reply from Redis".into())
            }
            kind => StoreError::Unavailable(format!("Redis error: {kind:?}")),
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        if let Some(hit) = self.inner.cache.as_ref().and_then(|c| c.get(id)) {
            return Ok(Some(hit));
        }
        self.read_and_cache(id).await
    }

    async fn load_latest(&self, id: &SessionId) -> Result<Option<Versioned>, StoreError> {
        self.read_and_cache(id).await
    }

    async fn create(&self, id: &SessionId, record: SessionRecord) -> Result<u64, StoreError> {
        let ticket = self.inner.cache.as_ref().map(|c| c.ticket());
        match self
            .write(&self.inner.scripts.create, id, &record, None)
            .await?
        {
            1 => {
                self.wrote(ticket, id, 1, record);
                Ok(1)
            }
            _ => Err(StoreError::Unavailable("session id collision".into())),
        }
    }

    async fn update(
        &self,
        id: &SessionId,
        record: SessionRecord,
        expected_version: u64,
    ) -> Result<UpdateOutcome, StoreError> {
        let ticket = self.inner.cache.as_ref().map(|c| c.ticket());
        let outcome = self
            .write(
                &self.inner.scripts.update,
                id,
                &record,
                Some(expected_version),
            )
            .await;
        let outcome = match outcome {
            Ok(-1) => UpdateOutcome::Missing,
            Ok(-2) => UpdateOutcome::Conflict,
            Ok(v) => UpdateOutcome::Updated(u64::try_from(v).unwrap_or_default()),
            Err(err) => {
                // The write may or may not have happened.
                self.forget(id, &hash_id(id));
                return Err(err);
            }
        };
        match outcome {
            UpdateOutcome::Updated(v) => self.wrote(ticket, id, v, record),
            _ => self.forget(id, &hash_id(id)),
        }
        Ok(outcome)
    }

    async fn delete(&self, id: &SessionId) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let hash = hash_id(id);
        let mut con = self.inner.conn.clone();
        let data: Result<Option<String>, StoreError> = self
            .run(
                self.inner
                    .scripts
                    .delete
                    .key(self.session_key(&hash))
                    .arg(&hash)
                    .arg(&self.inner.channel)
                    .invoke_async(&mut con),
            )
            .await;
        self.forget(id, &hash);
        let data = data?;
        // The session is gone either way; an unreadable one is reported as absent.
        Ok(data.and_then(|d| self.inner.codec.open_record(&hash, &d).ok().map(Arc::new)))
    }

    async fn find_by_sub(&self, sub: &str) -> Result<Vec<SessionId>, StoreError> {
        self.ids(&self.sub_key(sub)).await
    }

    async fn find_by_sid(&self, sid: &str) -> Result<Vec<SessionId>, StoreError> {
        self.ids(&self.sid_key(sid)).await
    }

    async fn put_transient(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let hkey = hash_key(key);
        let sealed = self.inner.codec.seal_value(&hkey, &value)?;
        let mut con = self.inner.conn.clone();
        let _: () = self
            .run(
                redis::cmd("SET")
                    .arg(self.transient_key(&hkey))
                    .arg(sealed)
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut con),
            )
            .await?;
        Ok(())
    }

    async fn put_transient_if_absent(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let hkey = hash_key(key);
        let sealed = self.inner.codec.seal_value(&hkey, &value)?;
        let mut con = self.inner.conn.clone();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.transient_key(&hkey))
                    .arg(sealed)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut con),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let mut con = self.inner.conn.clone();
        let sealed: Option<String> = self
            .run(
                redis::cmd("GETDEL")
                    .arg(self.transient_key(&hkey))
                    .query_async(&mut con),
            )
            .await?;
        Ok(sealed.and_then(|s| open_value_or_none(&self.inner.codec, "redis", &hkey, &s)))
    }

    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let mut con = self.inner.conn.clone();
        let sealed: Option<String> = self.run(con.get(self.transient_key(&hkey))).await?;
        Ok(sealed.and_then(|s| open_value_or_none(&self.inner.codec, "redis", &hkey, &s)))
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.inner.conn.clone();
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.lease_key(id))
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async(&mut con),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.inner.conn.clone();
        let renewed: i64 = self
            .run(
                self.inner
                    .scripts
                    .renew
                    .key(self.lease_key(id))
                    .arg(owner)
                    .arg(millis(ttl))
                    .invoke_async(&mut con),
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError> {
        let mut con = self.inner.conn.clone();
        let _: i64 = self
            .run(
                self.inner
                    .scripts
                    .release
                    .key(self.lease_key(id))
                    .arg(owner)
                    .invoke_async(&mut con),
            )
            .await?;
        Ok(())
    }

    /// Redis expires keys itself; this removes sessions that are expired by
    /// the store's clock but not yet by Redis, and stale index entries.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let mut purged = 0;
        let now = self.now();
        let mut con = self.inner.conn.clone();
        for index in self.scan(&format!("{}sub:*", self.inner.prefix)).await? {
            let members: Vec<String> = self.run(con.smembers(&index)).await?;
            for hash in members {
                let x: Option<u64> = self.run(con.hget(self.session_key(&hash), "x")).await?;
                match x {
                    Some(x) if x > now => {}
                    Some(_) => {
                        let gone: Option<String> = self
                            .run(
                                self.inner
                                    .scripts
                                    .delete
                                    .key(self.session_key(&hash))
                                    .arg(&hash)
                                    .arg(&self.inner.channel)
                                    .invoke_async(&mut con),
                            )
                            .await?;
                        purged += u64::from(gone.is_some());
                    }
                    None => {
                        let _: i64 = self.run(con.srem(&index, &hash)).await?;
                    }
                }
            }
        }
        for index in self.scan(&format!("{}sid:*", self.inner.prefix)).await? {
            let members: Vec<String> = self.run(con.smembers(&index)).await?;
            for hash in members {
                let exists: bool = self.run(con.exists(self.session_key(&hash))).await?;
                if !exists {
                    let _: i64 = self.run(con.srem(&index, &hash)).await?;
                }
            }
        }
        Ok(purged)
    }
}
