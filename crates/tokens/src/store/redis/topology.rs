//! Where the Redis store's data lives: one server, a Sentinel-managed
//! primary, or a Cluster; how its URL names it, how TLS is verified, and the
//! connection every operation goes through.
//!
//! | URL | topology |
//! |-----|----------|
//! | `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS) | one server (or a primary whose address never changes) |
//! | `redis+unix:///path/to/socket`, `unix:///path` | one server on a Unix socket |
//! | `redis+sentinel://[user:password@]host:26379[,host:26379…]/primary-name[/db]`, `rediss+sentinel://…` | the primary that the Sentinels name, found again after a failover |
//! | `redis+cluster://[user:password@]host:port[,host:port…]`, `rediss+cluster://…` | a Redis Cluster (any reachable nodes; the rest are discovered) |
//!
//! Query parameters this crate reads (and removes before the rest reaches
//! the Redis client):
//!
//! * `ca=/path/to/ca.pem` — with TLS, trust this CA (PEM, one or more
//!   certificates) in addition to the system's roots;
//! * `wait_replicas=N` — a write is acknowledged only once `N` replicas hold
//!   it (`WAIT`); default `1` with Sentinel, `0` otherwise; not on Cluster.
//!
//! Certificate verification cannot be turned off: a `#insecure` fragment
//! is refused. With Sentinel and TLS, the Sentinels and the primary are
//! reached over TLS with the same CA; the user name and password are the
//! primary's (Sentinels without a password).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture,
    RedisResult, TlsCertificates, TlsMode, Value,
};

use crate::store::StoreError;

/// What a store URL names.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    /// How many replicas must hold a write before it is acknowledged.
    pub(crate) wait_replicas: u32,
}

/// The three topologies.
pub(crate) enum Kind {
    /// One server: the URL for the Redis client, without our parameters.
    Single { url: String, ca: Option<Vec<u8>> },
    /// A primary named by Sentinels.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        primary: String,
        auth: Auth,
        tls: Option<Tls>,
    },
    /// A Redis Cluster.
    Cluster {
        nodes: Vec<(String, u16)>,
        auth: Auth,
        tls: Option<Tls>,
    },
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.write_str(match self {
            Self::Single { .. } => "Single",
            Self::Sentinel { .. } => "Sentinel",
            Self::Cluster { .. } => "Cluster",
        })
    }
}

/// Credentials and database of the data nodes.
#[derive(Default)]
pub(crate) struct Auth {
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

/// TLS to the nodes: verified, with an optional extra CA.
pub(crate) struct Tls {
    ca: Option<Vec<u8>>,
}

impl Tls {
    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: None,
            root_cert: self.ca.clone(),
        }
    }
}

/// Parses a store URL; `ca_file` (the builder's setting) is used when the
/// URL has no `ca=` parameter.
pub(crate) fn parse(url: &str, ca_file: Option<&std::path::Path>) -> Result<Target, StoreError> {
    let invalid = |why: &str| StoreError::Config(format!("invalid Redis URL: {why}"));
    let (url, fragment) = match url.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (url, None),
    };
    if fragment.is_some_and(|f| f.contains("insecure")) {
        return Err(StoreError::Config(
            "Redis TLS certificate verification cannot be turned off (#insecure)".into(),
        ));
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected scheme://"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let mut ca_path: Option<String> = ca_file.map(|p| p.display().to_string());
    let mut wait: Option<u32> = None;
    let mut others = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "ca" => ca_path = Some(v.into_owned()),
            "wait_replicas" => {
                wait = Some(
                    v.parse()
                        .map_err(|_| invalid("wait_replicas must be a number"))?,
                );
            }
            _ => others.push((k.into_owned(), v.into_owned())),
        }
    }
    let tls = matches!(
        scheme.as_str(),
        "rediss" | "rediss+sentinel" | "rediss+cluster"
    );
    if ca_path.is_some() && !tls {
        return Err(StoreError::Config(
            "a Redis CA file is set but the URL does not use TLS (rediss://)".into(),
        ));
    }
    let ca = match ca_path {
        Some(path) => Some(read_ca(&path)?),
        None => None,
    };
    let kind = match scheme.as_str() {
        "redis" | "rediss" | "redis+unix" | "unix" => {
            let mut url = format!("{scheme}://{rest}");
            if !others.is_empty() {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.extend_pairs(others);
                url.push('?');
                url.push_str(&q.finish());
            }
            Kind::Single { url, ca }
        }
        "redis+sentinel" | "rediss+sentinel" | "redis+cluster" | "rediss+cluster" => {
            if let Some((k, _)) = others.first() {
                return Err(invalid(&format!("unknown parameter {k:?}")));
            }
            let (userinfo, rest) = match rest.rsplit_once('@') {
                Some((u, r)) => (Some(u), r),
                None => (None, rest),
            };
            let (hosts, path) = match rest.split_once('/') {
                Some((h, p)) => (h, p),
                None => (rest, ""),
            };
            let mut auth = Auth::default();
            if let Some(userinfo) = userinfo {
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                auth.username = Some(percent_decode(user)?).filter(|u| !u.is_empty());
                auth.password = password.map(percent_decode).transpose()?;
            }
            let sentinel = scheme.ends_with("sentinel");
            let default_port = if sentinel { 26379 } else { 6379 };
            let nodes = hosts
                .split(',')
                .map(|h| host_port(h, default_port))
                .collect::<Result<Vec<_>, _>>()?;
            let tls = tls.then_some(Tls { ca });
            let mut segments = path.split('/').filter(|s| !s.is_empty());
            if sentinel {
                let primary = segments
                    .next()
                    .ok_or_else(|| invalid("a Sentinel URL names the primary: /name"))?;
                if let Some(db) = segments.next() {
                    auth.db = db
                        .parse()
                        .map_err(|_| invalid("the database is a number"))?;
                }
                Kind::Sentinel {
                    sentinels: nodes,
                    primary: percent_decode(primary)?,
                    auth,
                    tls,
                }
            } else {
                if segments.next().is_some() {
                    return Err(invalid(
                        "a Cluster URL has no path (Cluster has one database)",
                    ));
                }
                if wait.is_some_and(|w| w > 0) {
                    return Err(StoreError::Config(
                        "wait_replicas is not supported with Redis Cluster".into(),
                    ));
                }
                Kind::Cluster { nodes, auth, tls }
            }
        }
        _ => return Err(invalid("unknown scheme")),
    };
    let wait_replicas = wait.unwrap_or(u32::from(matches!(kind, Kind::Sentinel { .. })));
    Ok(Target {
        kind,
        wait_replicas,
    })
}

fn read_ca(path: &str) -> Result<Vec<u8>, StoreError> {
    let pem = std::fs::read(path)
        .map_err(|e| StoreError::Config(format!("cannot read the Redis CA file {path:?}: {e}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(StoreError::Config(format!(
            "the Redis CA file {path:?} holds no PEM certificate"
        )));
    }
    Ok(pem)
}

fn host_port(s: &str, default_port: u16) -> Result<(String, u16), StoreError> {
    let invalid = || StoreError::Config(format!("invalid Redis URL: bad host {s:?}"));
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(invalid)?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(invalid());
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| invalid())?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::Config("invalid Redis URL: bad %-escape".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| StoreError::Config("invalid Redis URL: not UTF-8".into()))
}

/// Maps a client error onto the store's error without leaking values.
pub(crate) fn map_err(err: RedisError) -> StoreError {
    if err.is_timeout() {
        StoreError::Timeout
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        if is_tls_error(&err) {
            StoreError::Unavailable(format!(
                "Redis TLS handshake failed (certificate not verified?): {}",
                tls_reason(&err)
            ))
        } else {
            StoreError::Unavailable("Redis connection failed".into())
        }
    } else {
        match err.kind() {
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse => {
                StoreError::Corrupt("unexpected reply from Redis".into())
            }
            kind => StoreError::Unavailable(format!("Redis error: {kind:?}")),
        }
    }
}

/// Whether the error is a failed TLS handshake (rustls reports it as an
/// I/O error wrapping its own).
fn is_tls_error(err: &RedisError) -> bool {
    let text = err.to_string();
    text.contains("certificate") || text.contains("InvalidCertificate") || text.contains("TLS")
}

/// The handshake failure's reason (from rustls: no secrets, only the
/// certificate problem), bounded in length.
fn tls_reason(err: &RedisError) -> String {
    let text = err.to_string();
    text.chars().take(200).collect()
}

/// The connections of a store: built once, cloned per operation.
// One per store, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Link {
    Single {
        manager: ConnectionManager,
        client: redis::Client,
    },
    Sentinel(Arc<SentinelLink>),
    Cluster {
        conn: tokio::sync::OnceCell<ClusterConnection>,
        client: redis::cluster::ClusterClient,
        nodes: Vec<(String, u16)>,
        auth: Auth,
        tls: Option<Tls>,
    },
}

/// The invalidation channel's own connection, held open while subscribed.
pub(crate) enum Subscriber {
    Single { _conn: MultiplexedConnection },
    Cluster { _conn: ClusterConnection },
}

impl Link {
    /// Builds the connections without I/O (Cluster connects on first use).
    pub(crate) fn open(target: Target, op_timeout: Duration) -> Result<Self, StoreError> {
        let bad = |_| StoreError::Config("invalid Redis URL".into());
        match target.kind {
            Kind::Single { url, ca } => {
                let client = match ca {
                    Some(ca) => redis::Client::build_with_tls(
                        url.as_str(),
                        TlsCertificates {
                            client_tls: None,
                            root_cert: Some(ca),
                        },
                    )
                    .map_err(bad)?,
                    None => redis::Client::open(url.as_str()).map_err(bad)?,
                };
                if let ConnectionAddr::TcpTls { insecure: true, .. } =
                    client.get_connection_info().addr()
                {
                    return Err(StoreError::Config(
                        "Redis TLS certificate verification cannot be turned off".into(),
                    ));
                }
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(op_timeout))
                    .set_response_timeout(Some(op_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(map_err)?;
                Ok(Self::Single { manager, client })
            }
            Kind::Sentinel {
                sentinels,
                primary,
                auth,
                tls,
            } => {
                let client = sentinel_client(&sentinels, &primary, &auth, tls.as_ref())?;
                Ok(Self::Sentinel(Arc::new(SentinelLink {
                    client: tokio::sync::Mutex::new(client),
                    current: std::sync::Mutex::new(None),
                    generation: AtomicU64::new(0),
                    config: AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(op_timeout))
                        .set_response_timeout(Some(op_timeout)),
                })))
            }
            Kind::Cluster { nodes, auth, tls } => {
                let client = cluster_client(&nodes, &auth, tls.as_ref(), op_timeout, None)?;
                Ok(Self::Cluster {
                    conn: tokio::sync::OnceCell::new(),
                    client,
                    nodes,
                    auth,
                    tls,
                })
            }
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A connection for one operation.
    pub(crate) async fn conn(&self) -> RedisResult<Conn> {
        match self {
            Self::Single { manager, .. } => Ok(Conn::Single(manager.clone())),
            Self::Sentinel(link) => link.get().await.map(Conn::Sentinel),
            Self::Cluster { conn, client, .. } => conn
                .get_or_try_init(|| client.get_async_connection())
                .await
                .map(|c| Conn::Cluster(c.clone())),
        }
    }
}

impl Link {
    /// A connection of its own, over RESP3, subscribed to `channel`; the
    /// messages arrive on the returned receiver. Returns the connection's
    /// `CLIENT ID` (0 on Cluster, where it names no single node).
    pub(crate) async fn subscribe(
        &self,
        channel: &str,
        op_timeout: Duration,
    ) -> RedisResult<(
        Subscriber,
        tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
        i64,
    )> {
        let (tx, pushed) = tokio::sync::mpsc::unbounded_channel();
        let client = match self {
            Self::Single { client, .. } => client.clone(),
            Self::Sentinel(link) => link.primary_client().await?,
            Self::Cluster {
                nodes, auth, tls, ..
            } => {
                // Plain (not sharded) pub/sub: a PUBLISH on any node reaches
                // subscribers on every node, so one subscription suffices.
                let client = cluster_client(nodes, auth, tls.as_ref(), op_timeout, Some(tx))
                    .map_err(|_| RedisError::from((ErrorKind::InvalidClientConfig, "cluster")))?;
                let mut conn = client.get_async_connection().await?;
                conn.subscribe(channel).await?;
                return Ok((Subscriber::Cluster { _conn: conn }, pushed, 0));
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_push_sender(tx);
        let mut conn = resp3(&client)
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        conn.subscribe(channel).await?;
        Ok((Subscriber::Single { _conn: conn }, pushed, id))
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

fn sentinel_client(
    sentinels: &[(String, u16)],
    primary: &str,
    auth: &Auth,
    tls: Option<&Tls>,
) -> Result<SentinelClient, StoreError> {
    let bad = |_| StoreError::Config("invalid Redis Sentinel settings".into());
    let addrs = sentinels.iter().map(|(host, port)| match tls {
        Some(_) => ConnectionAddr::TcpTls {
            host: host.clone(),
            port: *port,
            insecure: false,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(host.clone(), *port),
    });
    let mut builder =
        SentinelClientBuilder::new(addrs, primary, SentinelServerType::Master).map_err(bad)?;
    builder = builder.set_client_to_redis_db(auth.db);
    if let Some(u) = &auth.username {
        builder = builder.set_client_to_redis_username(u);
    }
    if let Some(p) = &auth.password {
        builder = builder.set_client_to_redis_password(p);
    }
    if let Some(tls) = tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_certificates(tls.certificates())
            .set_client_to_sentinel_certificates(tls.certificates());
    }
    builder.build().map_err(bad)
}

/// A Cluster client; with `push`, over RESP3 with pushed messages sent there.
pub(crate) fn cluster_client(
    nodes: &[(String, u16)],
    auth: &Auth,
    tls: Option<&Tls>,
    op_timeout: Duration,
    push: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<redis::cluster::ClusterClient, StoreError> {
    let scheme = if tls.is_some() { "rediss" } else { "redis" };
    let urls: Vec<String> = nodes
        .iter()
        .map(|(h, p)| {
            if h.contains(':') {
                format!("{scheme}://[{h}]:{p}")
            } else {
                format!("{scheme}://{h}:{p}")
            }
        })
        .collect();
    let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(op_timeout)
        .response_timeout(op_timeout)
        .retries(3);
    if let Some(u) = &auth.username {
        builder = builder.username(u);
    }
    if let Some(p) = &auth.password {
        builder = builder.password(p);
    }
    if let Some(tls) = tls {
        builder = builder.tls(TlsMode::Secure).certs(tls.certificates());
    }
    if let Some(push) = push {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push);
    }
    builder
        .build()
        .map_err(|_| StoreError::Config("invalid Redis Cluster settings".into()))
}

/// The primary named by the Sentinels, and the connection to it; found
/// again when the connection fails or the node turned read-only (it was
/// demoted by a failover).
pub(crate) struct SentinelLink {
    client: tokio::sync::Mutex<SentinelClient>,
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
}

impl SentinelLink {
    async fn get(self: &Arc<Self>) -> RedisResult<SentinelConn> {
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        let mut client = self.client.lock().await;
        if let Some(found) = self.cached() {
            return Ok(found);
        }
        // `async_get_client` asks the Sentinels and checks that the node
        // calls itself a primary.
        let primary = client.async_get_client().await?;
        let conn = primary
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *lock(&self.current) = Some((generation, conn.clone()));
        Ok(SentinelConn {
            conn,
            generation,
            link: self.clone(),
        })
    }

    fn cached(self: &Arc<Self>) -> Option<SentinelConn> {
        let current = lock(&self.current);
        let (generation, conn) = current.as_ref()?;
        Some(SentinelConn {
            conn: conn.clone(),
            generation: *generation,
            link: self.clone(),
        })
    }

    /// The primary's client (for the invalidation channel's own connection).
    pub(crate) async fn primary_client(&self) -> RedisResult<redis::Client> {
        self.client.lock().await.async_get_client().await
    }

    /// Forgets the connection of `generation` (the next operation asks the
    /// Sentinels again).
    fn forget(&self, generation: u64) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether an error means "this is no longer (or not) the primary, or the
/// connection is gone": ask the Sentinels again.
fn lost_primary(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
        // `min-replicas-to-write`: a primary cut off from its replicas.
        || err.code() == Some("NOREPLICAS")
}

/// One connection to the Sentinels' primary.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    conn: MultiplexedConnection,
    generation: u64,
    link: Arc<SentinelLink>,
}

impl SentinelConn {
    fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(err) = &result
            && lost_primary(err)
        {
            self.link.forget(self.generation);
        }
        result
    }
}

/// A connection of any topology.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Sentinel(SentinelConn),
    Cluster(ClusterConnection),
}

impl Conn {
    /// After a write whose replication could not be confirmed: the next
    /// operation finds the primary again (it may have changed).
    pub(crate) fn forget(&self) {
        if let Self::Sentinel(s) = self {
            s.link.forget(s.generation);
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(s) => Box::pin(async move {
                let result = s.conn.req_packed_command(cmd).await;
                s.check(result)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Self::Sentinel(s) => Box::pin(async move {
                let result = s.conn.req_packed_commands(cmd, offset, count).await;
                s.check(result)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(s) => s.conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let t = parse("redis+sentinel://u:p%40ss@a:1,b/prim/2", None).unwrap();
        let Kind::Sentinel {
            sentinels,
            primary,
            auth,
            tls,
        } = t.kind
        else {
            panic!("sentinel")
        };
        assert_eq!(sentinels, [("a".into(), 1), ("b".into(), 26379)]);
        assert_eq!(primary, "prim");
        assert_eq!(auth.password.as_deref(), Some("p@ss"));
        assert_eq!(auth.db, 2);
        assert!(tls.is_none());
        assert_eq!(t.wait_replicas, 1);

        let t = parse("redis+cluster://[::1]:7000,h:7001?wait_replicas=0", None).unwrap();
        let Kind::Cluster { nodes, .. } = t.kind else {
            panic!("cluster")
        };
        assert_eq!(nodes, [("::1".into(), 7000), ("h".into(), 7001)]);

        let t = parse("redis://h:1/3?protocol=resp3", None).unwrap();
        let Kind::Single { url, .. } = t.kind else {
            panic!("single")
        };
        assert_eq!(url, "redis://h:1/3?protocol=resp3");
        assert_eq!(t.wait_replicas, 0);
    }

    #[test]
    fn unverified_tls_and_bad_urls_are_refused() {
        for bad in [
            "rediss://h:1/#insecure",
            "redis+sentinel://h:1",
            "redis+cluster://h:1/0",
            "redis+cluster://h:1?wait_replicas=1",
            "redis+cluster://h:x",
            "redis://h:1?ca=/nonexistent",
            "rediss://h:1?ca=/nonexistent",
            "mysql://h",
        ] {
            assert!(parse(bad, None).is_err(), "{bad}");
        }
    }
}
