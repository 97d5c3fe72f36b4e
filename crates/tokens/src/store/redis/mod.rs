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
//! | `{prefix}{<sha256(id)>}:s` | hash | `v` version, `d` sealed record, `h` sealed id, `x` expiry, `u`/`i` index keys; expires with the session |
//! | `{prefix}{<sha256(id)>}:l` | string | the refresh lease's owner, `SET NX PX` |
//! | `{prefix}sub:{<sha256(sub)>}`, `{prefix}sid:{<sha256(sid)>}` | set | hashed ids of a subject's / provider session's sessions |
//! | `{prefix}t:{<sha256(key)>}` | string | a sealed transient value, with `PX` |
//!
//! The braces are Redis Cluster **hash tags**: the record and the lease of
//! one session hash to one slot, each index set to a slot of its own.
//! Versioned writes, creation and deletion are Lua scripts on the record's
//! key alone (plus, outside Cluster, the index sets), so each is atomic;
//! lease renewal and release are compare-and-`PEXPIRE` / compare-and-`DEL`
//! scripts, so only the owner can extend or free a lease. On Cluster the
//! index sets are kept by separate commands: a session is added to its
//! index *before* its record is written (an index never misses a live
//! session) and removed after; a lookup skips entries whose record is gone
//! or names another index.
//!
//! Topologies, URL forms and TLS: see docs/CONFIG.md (`topology.rs`). The connection is
//! re-established automatically after Redis goes away (with Sentinel: to
//! the primary the Sentinels name now); meanwhile every operation fails
//! within the operation timeout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands as _, Script};

use self::topology::{Conn, Link, Target, map_err};
mod topology;

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
    link: Arc<Link>,
    /// Replicas that must hold a write before it is acknowledged (`WAIT`).
    wait_replicas: u32,
    /// Redis Cluster: index sets are kept outside the scripts.
    cluster: bool,
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
    index_add: Script,
}

/// Creates a session unless the key exists; adds it to the index sets in
/// `KEYS[2..]` (none on Cluster) and makes each set live at least as long as
/// the session.
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

/// Compare-and-set: `{-1, '', ''}` missing, `{-2, '', ''}` version conflict, else
/// `{new version, old subject index, old sid index}` (the change is
/// announced on the invalidation channel `ARGV[9]`). With `ARGV[10] == '1'`
/// the index sets are kept here (`KEYS[2..]`); on Cluster the caller keeps them.
const UPDATE: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return {-1, '', ''} end
if v ~= ARGV[8] then return {-2, '', ''} end
local old = redis.call('HMGET', KEYS[1], 'u', 'i')
if ARGV[10] == '1' then
  if old[1] and old[1] ~= ARGV[6] then redis.call('SREM', old[1], ARGV[1]) end
  if old[2] and old[2] ~= '' and old[2] ~= ARGV[7] then redis.call('SREM', old[2], ARGV[1]) end
end
local nv = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'h', ARGV[3], 'x', ARGV[4], 'u', ARGV[6], 'i', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local ttl = tonumber(ARGV[5])
for n = 2, #KEYS do
  redis.call('SADD', KEYS[n], ARGV[1])
  if redis.call('PTTL', KEYS[n]) < ttl then redis.call('PEXPIRE', KEYS[n], ttl) end
end
redis.call('PUBLISH', ARGV[9], ARGV[1] .. ':' .. nv)
return {nv, old[1] or '', old[2] or ''}
";

/// Deletes a session, announces it on `ARGV[2]`; returns `{sealed record,
/// subject index, sid index}` (nothing but empty strings when absent). With `ARGV[3] == '1'` the
/// index entries are removed here.
const DELETE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'd', 'u', 'i')
if not f[1] then return {false, '', ''} end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[1] .. ':0')
if ARGV[3] == '1' then
  if f[2] then redis.call('SREM', f[2], ARGV[1]) end
  if f[3] and f[3] ~= '' then redis.call('SREM', f[3], ARGV[1]) end
end
return {f[1], f[2] or '', f[3] or ''}
";

/// Deletes a session only if it still has the version `ARGV[2]` (an
/// unreadable record, unless another instance rewrote it); announces it on
/// `ARGV[3]`; returns `{subject index, sid index}` (empty when not deleted).
/// With `ARGV[4] == '1'` the index entries are removed here.
const DISCARD: &str = r"
local f = redis.call('HMGET', KEYS[1], 'v', 'u', 'i')
if f[1] ~= ARGV[2] then return {'', ''} end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ':0')
if ARGV[4] == '1' then
  if f[2] then redis.call('SREM', f[2], ARGV[1]) end
  if f[3] and f[3] ~= '' then redis.call('SREM', f[3], ARGV[1]) end
end
return {f[2] or '', f[3] or ''}
";

/// Adds `ARGV[1]` to the index set `KEYS[1]` and makes the set live at
/// least `ARGV[2]` ms (Cluster: an index set is in a slot of its own).
const INDEX_ADD: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
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
    ca_file: Option<std::path::PathBuf>,
    settings: Settings,
}

impl RedisStore {
    /// Starts a builder for the Redis at `url`: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://…` (TLS), `redis+unix:///path/to/socket`,
    /// `redis+sentinel://host:26379[,host:26379…]/primary-name`,
    /// `redis+cluster://host:port[,host:port…]` (all forms and
    /// parameters: docs/CONFIG.md).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            ca_file: None,
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
        let mut con = self.conn().await?;
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
        let mut con = self.conn().await?;
        // One key per command: on Cluster the keys are in many slots.
        for key in keys {
            let _: i64 = self.run(con.del(&key)).await?;
        }
        Ok(())
    }

    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        bounded(self.inner.op_timeout, async { op.await.map_err(map_err) }).await
    }

    /// A connection for one operation (with Sentinel, to the primary the
    /// Sentinels name).
    async fn conn(&self) -> Result<Conn, StoreError> {
        self.run(self.inner.link.conn()).await
    }

    /// Waits until the configured number of replicas hold every write made
    /// so far on `con`. A write whose replication is not confirmed may be
    /// lost in a failover, so it is reported as failed (and the next
    /// operation asks the Sentinels for the primary again).
    async fn replicated(&self, con: &mut Conn) -> Result<(), StoreError> {
        let wanted = self.inner.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let wait_ms = millis(self.inner.op_timeout / 2);
        let acked: Result<i64, StoreError> = self
            .run(redis::cmd("WAIT").arg(wanted).arg(wait_ms).query_async(con))
            .await;
        match acked {
            Ok(n) if n >= i64::from(wanted) => Ok(()),
            Ok(_) => {
                con.forget();
                Err(StoreError::Unavailable(
                    "a Redis write was not confirmed by a replica in time".into(),
                ))
            }
            Err(err) => {
                con.forget();
                Err(err)
            }
        }
    }

    /// Every key matching `pattern` (on Cluster: on every primary).
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut con = self.conn().await?;
        if let Conn::Cluster(cluster) = &mut con {
            let mut out = Vec::new();
            for (host, port) in self.cluster_primaries(cluster).await? {
                let route = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress { host, port },
                );
                let mut cursor: u64 = 0;
                loop {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(500);
                    let reply = self.run(cluster.route_command(cmd, route.clone())).await?;
                    let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)
                        .map_err(|_| StoreError::Corrupt("unexpected reply from Redis".into()))?;
                    out.extend(keys);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            return Ok(out);
        }
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

    /// The Cluster's primaries (`host`, `port`), from `CLUSTER NODES`.
    async fn cluster_primaries(
        &self,
        cluster: &mut redis::cluster_async::ClusterConnection,
    ) -> Result<Vec<(String, u16)>, StoreError> {
        let text: String = self
            .run(redis::cmd("CLUSTER").arg("NODES").query_async(cluster))
            .await?;
        let mut out = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                continue;
            }
            let addr = addr.split('@').next().unwrap_or_default();
            if let Some((host, port)) = addr.rsplit_once(':')
                && let Ok(port) = port.parse()
            {
                out.push((host.trim_matches(['[', ']']).to_owned(), port));
            }
        }
        Ok(out)
    }

    fn session_key(&self, hash: &str) -> String {
        format!("{}{{{hash}}}:s", self.inner.prefix)
    }

    fn sub_key(&self, sub: &str) -> String {
        format!(
            "{}sub:{{{}}}",
            self.inner.prefix,
            sha256_hex(sub.as_bytes())
        )
    }

    fn sid_key(&self, sid: &str) -> String {
        format!(
            "{}sid:{{{}}}",
            self.inner.prefix,
            sha256_hex(sid.as_bytes())
        )
    }

    fn lease_key(&self, id: &SessionId) -> String {
        format!("{}{{{}}}:l", self.inner.prefix, hash_id(id))
    }

    fn transient_key(&self, hkey: &str) -> String {
        format!("{}t:{{{hkey}}}", self.inner.prefix)
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_unix()
    }

    /// `"1"` when the scripts keep the index sets (outside Cluster).
    fn indexes_in_script(&self) -> &'static str {
        if self.inner.cluster { "0" } else { "1" }
    }

    /// Cluster: adds `hash` to the index sets, alive for `ttl_ms`.
    async fn index_add(
        &self,
        con: &mut Conn,
        keys: &[&str],
        hash: &str,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        for key in keys {
            let _: i64 = self
                .run(
                    self.inner
                        .scripts
                        .index_add
                        .key(*key)
                        .arg(hash)
                        .arg(ttl_ms)
                        .invoke_async(con),
                )
                .await?;
        }
        Ok(())
    }

    /// Cluster: removes `hash` from the index sets named (empty names skipped).
    async fn index_remove(&self, con: &mut Conn, keys: &[&str], hash: &str) {
        for key in keys.iter().filter(|k| !k.is_empty()) {
            let removed: Result<i64, StoreError> = self.run(con.srem(*key, hash)).await;
            if let Err(err) = removed {
                // A stale entry is skipped by lookups and expires with its set.
                tracing::debug!(error = %err, "could not remove a session index entry");
            }
        }
    }

    /// Runs the create (`expected` = `None`) or update script for `record`;
    /// returns the script's status (1 created / 0 exists; new version / -1 /
    /// -2) once the write is replicated as configured.
    async fn write(
        &self,
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
        let mut indexes = vec![sub_key.as_str()];
        indexes.extend(sid_key.as_deref());
        let mut con = self.conn().await?;
        let script = match expected {
            None => &self.inner.scripts.create,
            Some(_) => &self.inner.scripts.update,
        };
        let mut invocation = script.key(self.session_key(&hash));
        if self.inner.cluster {
            // Indexed before the record exists or moves: a lookup never
            // misses a live session.
            self.index_add(&mut con, &indexes, &hash, ttl_ms).await?;
        } else {
            for k in &indexes {
                invocation.key(*k);
            }
        }
        invocation
            .arg(&hash)
            .arg(&data)
            .arg(&handle)
            .arg(record.expires_at)
            .arg(ttl_ms)
            .arg(&sub_key)
            .arg(sid_key.as_deref().unwrap_or(""));
        let status = match expected {
            None => {
                let created: i64 = self.run(invocation.invoke_async(&mut con)).await?;
                if created == 1 && self.inner.cluster {
                    // Again, after: a purge that ran between the first add
                    // and the record's creation may have dropped the entry.
                    self.index_add(&mut con, &indexes, &hash, ttl_ms).await?;
                }
                created
            }
            Some(v) => {
                invocation
                    .arg(v.to_string())
                    .arg(&self.inner.channel)
                    .arg(self.indexes_in_script());
                let (status, old_sub, old_sid): (i64, Option<String>, Option<String>) =
                    self.run(invocation.invoke_async(&mut con)).await?;
                if status > 0 && self.inner.cluster {
                    let old_sub = old_sub.filter(|k| *k != sub_key).unwrap_or_default();
                    let old_sid = old_sid
                        .filter(|k| Some(k.as_str()) != sid_key.as_deref())
                        .unwrap_or_default();
                    self.index_remove(&mut con, &[&old_sub, &old_sid], &hash)
                        .await;
                }
                status
            }
        };
        // A conflict is confirmed like a write: the caller acts on the
        // version it lost to (the engine's write-back accepts tokens it
        // finds there as stored), and on a primary that a failover has just
        // left without its replica that version may be one no replica holds
        // (an earlier attempt of this very write). `WAIT` fails there, so
        // the conflict is reported as a failure, retried, and decided on
        // the new primary.
        if status > 0 || status == -2 {
            self.replicated(&mut con).await?;
        }
        Ok(status)
    }

    /// Deletes the session `hash`; the sealed record it had, if any.
    async fn delete_hash(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let mut con = self.conn().await?;
        let (data, sub, sid): (Option<String>, Option<String>, Option<String>) = self
            .run(
                self.inner
                    .scripts
                    .delete
                    .key(self.session_key(hash))
                    .arg(hash)
                    .arg(&self.inner.channel)
                    .arg(self.indexes_in_script())
                    .invoke_async(&mut con),
            )
            .await?;
        if data.is_some() {
            if self.inner.cluster {
                let (sub, sid) = (sub.unwrap_or_default(), sid.unwrap_or_default());
                self.index_remove(&mut con, &[&sub, &sid], hash).await;
            }
            self.replicated(&mut con).await?;
        }
        Ok(data)
    }

    /// Deletes an unreadable session if it still has `version`; best effort
    /// (a failure is logged, the next load tries again).
    async fn discard(&self, id: &SessionId, hash: &str, version: u64) {
        let done = async {
            let mut con = self.conn().await?;
            let (sub, sid): (Option<String>, Option<String>) = self
                .run(
                    self.inner
                        .scripts
                        .discard
                        .key(self.session_key(hash))
                        .arg(hash)
                        .arg(version.to_string())
                        .arg(&self.inner.channel)
                        .arg(self.indexes_in_script())
                        .invoke_async(&mut con),
                )
                .await?;
            if self.inner.cluster {
                let (sub, sid) = (sub.unwrap_or_default(), sid.unwrap_or_default());
                self.index_remove(&mut con, &[&sub, &sid], hash).await;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        self.forget(id, hash);
        if let Err(err) = done {
            tracing::warn!(error = %err, "could not delete an unreadable session");
        }
    }

    /// Reads a session from Redis.
    async fn read(&self, id: &SessionId, hash: &str) -> Result<Option<Versioned>, StoreError> {
        let mut con = self.conn().await?;
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
        let mut con = self.conn().await?;
        let members: HashSet<String> = self.run(con.smembers(index_key)).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let members: Vec<String> = members.into_iter().collect();
        type Fields = (Option<String>, Option<u64>, Option<String>, Option<String>);
        let hmget = |hash: &str| {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(self.session_key(hash))
                .arg("h")
                .arg("x")
                .arg("u")
                .arg("i");
            cmd
        };
        let found: Vec<Fields> = if self.inner.cluster {
            // The records are in many slots: one command each.
            let reads = members.iter().map(|hash| {
                let mut con = con.clone();
                let cmd = hmget(hash);
                async move { self.run(cmd.query_async::<Fields>(&mut con)).await }
            });
            futures_util::future::try_join_all(reads).await?
        } else {
            let mut pipe = redis::pipe();
            for hash in &members {
                pipe.add_command(hmget(hash));
            }
            self.run(pipe.query_async(&mut con)).await?
        };
        let now = self.now();
        let mut ids = Vec::new();
        let mut stale = Vec::new();
        for (hash, (handle, expires, sub, sid)) in members.iter().zip(found) {
            let indexed_here =
                sub.as_deref() == Some(index_key) || sid.as_deref() == Some(index_key);
            match (handle, expires) {
                // One unreadable entry must not fail a whole back-channel
                // logout: it is skipped (and deleted when next loaded).
                (Some(handle), Some(x)) if x > now && indexed_here => {
                    match self.inner.codec.open_id(hash, &handle) {
                        Ok(id) => ids.push(id),
                        Err(err) => warn_unreadable_handle("redis", &err),
                    }
                }
                // Moved to another index: its writer removes this entry.
                (Some(_), Some(_)) => {}
                _ => stale.push(hash.clone()),
            }
        }
        // On Cluster an entry is added before its record is created, so an
        // entry without a record may be one being created: left to the
        // purge (which the creator's second add repairs).
        if !stale.is_empty() && !self.inner.cluster {
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
        let target: Target = topology::parse(&self.url, self.ca_file.as_deref())?;
        let wait_replicas = target.wait_replicas;
        let timeout = self.settings.op_timeout;
        let link = Arc::new(Link::open(target, timeout)?);
        let channel = format!("{}changes", self.settings.prefix);
        let cache = (self.settings.cache_capacity > 0).then(|| {
            Arc::new(ReadCache::new(
                self.settings.clock.clone(),
                self.settings.cache_capacity,
            ))
        });
        let channel_task = cache.as_ref().and_then(|cache| {
            let subscriber = RedisChannel {
                link: link.clone(),
                channel: channel.clone(),
                op_timeout: timeout,
            };
            spawn_channel(cache.clone(), subscriber)
        });
        // No channel, no cache.
        let cache = cache.filter(|_| channel_task.is_some());
        Ok(RedisStore {
            inner: Arc::new(Inner {
                cluster: link.is_cluster(),
                link,
                wait_replicas,
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
                    index_add: Script::new(INDEX_ADD),
                },
                channel,
                cache,
                _channel_task: channel_task,
            }),
        })
    }

    /// With TLS (`rediss://`, `rediss+sentinel://`, `rediss+cluster://`),
    /// trusts the CA certificates in this PEM file besides the system's
    /// roots (the URL's `ca=` parameter does the same and wins). Server
    /// certificates are always verified, host name included.
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Connects and checks that Redis answers within the operation timeout.
    pub async fn build(self) -> Result<RedisStore, StoreError> {
        let store = self.build_lazy()?;
        let mut con = store.conn().await?;
        let _: String = store.run(redis::cmd("PING").query_async(&mut con)).await?;
        Ok(store)
    }
}

/// `SUBSCRIBE` on a RESP3 connection of its own; heartbeats are published
/// through the store's connection.
struct RedisChannel {
    link: Arc<Link>,
    channel: String,
    op_timeout: Duration,
}

/// A live subscription: the connection and the messages it receives.
struct Subscribed {
    _conn: topology::Subscriber,
    pushed: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
}

#[async_trait]
impl Channel for RedisChannel {
    type Subscription = Subscribed;

    async fn subscribe(&self) -> Result<(Subscribed, i64), StoreError> {
        let subscribe = async {
            let (conn, pushed, id) = self.link.subscribe(&self.channel, self.op_timeout).await?;
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
        bounded(self.op_timeout, async {
            let mut conn = self.link.conn().await.map_err(map_err)?;
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
        match self.write(id, &record, None).await? {
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
        let outcome = self.write(id, &record, Some(expected_version)).await;
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
        let data = self.delete_hash(&hash).await;
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
        let mut con = self.conn().await?;
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
        self.replicated(&mut con).await
    }

    async fn put_transient_if_absent(
        &self,
        key: &str,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let hkey = hash_key(key);
        let sealed = self.inner.codec.seal_value(&hkey, &value)?;
        let mut con = self.conn().await?;
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
        if set.is_some() {
            self.replicated(&mut con).await?;
        }
        Ok(set.is_some())
    }

    async fn take_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let mut con = self.conn().await?;
        let sealed: Option<String> = self
            .run(
                redis::cmd("GETDEL")
                    .arg(self.transient_key(&hkey))
                    .query_async(&mut con),
            )
            .await?;
        if sealed.is_some() {
            // Taken once: a failover must not bring it back.
            self.replicated(&mut con).await?;
        }
        Ok(sealed.and_then(|s| open_value_or_none(&self.inner.codec, "redis", &hkey, &s)))
    }

    async fn get_transient(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hkey = hash_key(key);
        let mut con = self.conn().await?;
        let sealed: Option<String> = self.run(con.get(self.transient_key(&hkey))).await?;
        Ok(sealed.and_then(|s| open_value_or_none(&self.inner.codec, "redis", &hkey, &s)))
    }

    async fn try_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.conn().await?;
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
        if set.is_some() {
            // A lease a failover could lose would let a second instance
            // spend the same refresh token.
            self.replicated(&mut con).await?;
        }
        Ok(set.is_some())
    }

    async fn renew_lease(
        &self,
        id: &SessionId,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.conn().await?;
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
        if renewed == 1 {
            self.replicated(&mut con).await?;
        }
        Ok(renewed == 1)
    }

    async fn release_lease(&self, id: &SessionId, owner: &str) -> Result<(), StoreError> {
        let mut con = self.conn().await?;
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
        let mut con = self.conn().await?;
        for index in self.scan(&format!("{}sub:*", self.inner.prefix)).await? {
            let members: Vec<String> = self.run(con.smembers(&index)).await?;
            for hash in members {
                let x: Option<u64> = self.run(con.hget(self.session_key(&hash), "x")).await?;
                match x {
                    Some(x) if x > now => {}
                    Some(_) => {
                        let gone = self.delete_hash(&hash).await?;
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
