//! Three `oidc-bff` gateway processes sharing one session store (Redis,
//! PostgreSQL, and an SQLite file), in front of a dev IdP that issues
//! one-time-use refresh tokens (rotation with reuse detection: a second use
//! revokes the grant). 300 concurrent API requests spread over the three
//! instances on an expired access token must all succeed with exactly one
//! refresh grant at the IdP — also when the token endpoint is slower than
//! the refresh lease.
//!
//! The services are the machine's Redis (127.0.0.1:6379) and PostgreSQL
//! (127.0.0.1:5432, database `test`, user `postgres`). Without one the test
//! fails when `CI=true` and is skipped with a notice otherwise.
//!
//! The same scenarios run on a Redis Sentinel set-up (primary, replica,
//! three Sentinels) and on a three-primary Redis Cluster that this binary
//! starts on loopback from Debian's `redis-server` (once, shared by its
//! tests), with the tokens crate's starters (`servers.rs`, included below).
//! A Sentinel failover in the middle of a refresh storm over many sessions
//! has a set-up of its own (it moves the primary).

mod common;
// The tokens crate's server starters, the same file (it stands alone).
#[path = "../../tokens/tests/common/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Browser, Gateway, Seen, Upstream, config, idp, introspect};
use oidc_bff::tokens::store::KeyRing;
use reqwest::Method;

const KEY: &str = "mi1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const REDIS: &str = "redis://127.0.0.1:6379";
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn service(name: &str, addr: &str) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => true,
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{name} at {addr} is required when CI=true: {why}");
            }
            eprintln!(
                "skipping: {name} at {addr} is not available ({why}); set CI=true to make this a failure"
            );
            false
        }
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("mi{}x{nanos}", std::process::id())
}

/// Where the three instances keep their sessions, and how to clean up.
#[derive(Clone, Debug)]
enum Shared {
    /// Any Redis topology: `redis://`, `redis+sentinel://`, `redis+cluster://`.
    Redis {
        url: String,
        prefix: String,
    },
    Postgres {
        prefix: String,
    },
    Sqlite {
        url: String,
    },
}

impl Shared {
    /// The Redis at `url`, under a prefix of this test's own.
    fn redis(url: impl Into<String>) -> Shared {
        Shared::Redis {
            url: url.into(),
            prefix: format!("oidc-bff-test:{}:", unique()),
        }
    }

    fn session_toml(&self) -> String {
        let (store, prefix) = match self {
            Shared::Redis { url, prefix } => (url.clone(), Some(prefix)),
            Shared::Postgres { prefix } => (POSTGRES.to_owned(), Some(prefix)),
            Shared::Sqlite { url } => (url.clone(), None),
        };
        let mut toml = format!("store = \"{store}\"\nencryption_keys = [\"{KEY}\"]\n");
        if let Some(p) = prefix {
            toml.push_str(&format!("prefix = \"{p}\"\n"));
        }
        toml
    }

    async fn cleanup(&self) {
        let keys = KeyRing::from_config([KEY]).unwrap();
        match self {
            Shared::Redis { url, prefix } => {
                let store = oidc_bff::tokens::store::RedisStore::builder(url)
                    .key_prefix(prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap();
                store.drop_all().await.unwrap();
            }
            Shared::Postgres { prefix } => {
                let store = oidc_bff::tokens::store::PostgresStore::builder(POSTGRES)
                    .table_prefix(prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap();
                store.drop_tables().await.unwrap();
            }
            Shared::Sqlite { .. } => {}
        }
    }
}

struct Scenario {
    /// How long the IdP's access tokens live (real time: three processes
    /// cannot share a test clock). Longer than the token endpoint's delay
    /// plus the refresh margin, or a fresh token would already be due.
    token_lifetime: Duration,
    /// The token endpoint's delay during the storm.
    token_delay: Duration,
    /// `[oidc] refresh_lease`, in seconds.
    refresh_lease: u64,
    requests: usize,
}

async fn three_instances_refresh_once(label: &str, shared: Shared, scenario: Scenario) {
    let idp = idp(scenario.token_lifetime).await;
    let upstream = Upstream::start().await;
    let toml = config(&idp, &upstream, 1)
        .replace("store = \"memory\"\n", &shared.session_toml())
        .replace(
            "refresh_margin = 1\n",
            &format!(
                "refresh_margin = 1\nrefresh_lease = {}\n",
                scenario.refresh_lease
            ),
        );
    let gateways = vec![
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
    ];
    let mut browser = Browser::new();
    browser.login(&gateways[0]).await;
    // The session is usable on every instance.
    for g in &gateways {
        let (status, user) = browser.get_json(&format!("{}/bff/user", g.url)).await;
        assert_eq!(status, 200, "{}", g.logs());
        assert_eq!(user["sub"], "alice");
    }

    // Let the access token expire (beyond the refresh margin), then storm.
    tokio::time::sleep(scenario.token_lifetime + Duration::from_millis(300)).await;
    idp.faults().set_token_delay(Some(scenario.token_delay));
    let before = idp.counters();
    let hits_before = upstream.hits();
    let started = Instant::now();
    let calls = (0..scenario.requests).map(|i| {
        let request = browser
            .api(
                Method::GET,
                &format!("{}/api/items/{i}", gateways[i % gateways.len()].url),
            )
            .send();
        async move {
            let response = request.await.expect("request");
            response.status()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let took = started.elapsed();
    let after = idp.counters();
    let logs = gateways
        .iter()
        .map(Gateway::logs)
        .collect::<Vec<_>>()
        .join("\n----\n");
    // Clean up before asserting, so a failure leaves nothing behind.
    drop(gateways);
    shared.cleanup().await;
    eprintln!(
        "{label}: {} requests over 3 gateway processes on an expired token \
         (token endpoint delay {:?}, lease {} s): {took:?}",
        scenario.requests, scenario.token_delay, scenario.refresh_lease
    );
    let failed: Vec<_> = statuses.iter().filter(|s| s.as_u16() != 200).collect();
    assert!(
        failed.is_empty(),
        "{label}: {} of {} requests failed ({:?}...)\n{}",
        failed.len(),
        statuses.len(),
        failed.first(),
        logs,
    );
    assert_eq!(
        after.refresh_attempts - before.refresh_attempts,
        1,
        "{label}: exactly one refresh grant"
    );
    assert_eq!(after.refresh_grants - before.refresh_grants, 1);
    assert_eq!(
        after.refresh_reuse_detected, 0,
        "{label}: no refresh token spent twice"
    );
    // Every proxied call carried the one new token.
    let seen = upstream.seen();
    let tokens: HashSet<_> = seen[hits_before..]
        .iter()
        .map(|s| s.bearer().expect("bearer"))
        .collect();
    assert_eq!(seen.len() - hits_before, scenario.requests);
    assert_eq!(tokens.len(), 1, "{label}: one token after the refresh");
}

fn storm() -> Scenario {
    Scenario {
        token_lifetime: Duration::from_secs(3),
        token_delay: Duration::from_millis(200),
        refresh_lease: 5,
        requests: 300,
    }
}

/// The token endpoint takes 2.5 s, the lease starts at 1 s: only renewal
/// keeps the other instances from spending the refresh token again.
fn slow() -> Scenario {
    Scenario {
        token_lifetime: Duration::from_secs(6),
        token_delay: Duration::from_millis(2500),
        refresh_lease: 1,
        requests: 300,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_gateways_refresh_once() {
    if !service("Redis", "127.0.0.1:6379").await {
        return;
    }
    three_instances_refresh_once("redis", Shared::redis(REDIS), storm()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_gateways_refresh_once_with_a_slow_token_endpoint() {
    if !service("Redis", "127.0.0.1:6379").await {
        return;
    }
    three_instances_refresh_once("redis, slow", Shared::redis(REDIS), slow()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_gateways_refresh_once() {
    if !service("PostgreSQL", "127.0.0.1:5432").await {
        return;
    }
    let prefix = format!("{}_", unique());
    three_instances_refresh_once("postgres", Shared::Postgres { prefix }, storm()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_gateways_refresh_once_with_a_slow_token_endpoint() {
    if !service("PostgreSQL", "127.0.0.1:5432").await {
        return;
    }
    let prefix = format!("{}_", unique());
    three_instances_refresh_once("postgres, slow", Shared::Postgres { prefix }, slow()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_shared_by_three_gateways_refreshes_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    three_instances_refresh_once("sqlite", Shared::Sqlite { url }, storm()).await;
}

/// The single-machine default: sessions in an SQLite file survive a
/// restart of the gateway (the user stays signed in, the refresh token
/// still works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let idp = idp(Duration::from_secs(3)).await;
    let upstream = Upstream::start().await;
    let toml = config(&idp, &upstream, 1).replace(
        "store = \"memory\"\n",
        &Shared::Sqlite { url }.session_toml(),
    );
    let first = Gateway::start(&toml).await;
    let mut browser = Browser::new();
    browser.login(&first).await;
    let (status, _) = browser.get_json(&format!("{}/bff/user", first.url)).await;
    assert_eq!(status, 200);
    first.sigterm();
    drop(first);

    // A new process on the same file: same session, and once the access
    // token has expired, a refresh with the stored refresh token.
    let second = Gateway::start(&toml).await;
    let (status, user) = browser.get_json(&format!("{}/bff/user", second.url)).await;
    assert_eq!(status, 200, "{}", second.logs());
    assert_eq!(user["sub"], "alice");
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let response = browser
        .api(Method::GET, &format!("{}/api/after-restart", second.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", second.logs());
    assert_eq!(idp.counters().refresh_grants, 1);
    assert_eq!(idp.counters().refresh_reuse_detected, 0);
}

impl Shared {
    /// A handle on the shared store, as a fourth "instance" (the test's own).
    async fn open(&self) -> std::sync::Arc<dyn oidc_bff::tokens::SessionStore> {
        let keys = KeyRing::from_config([KEY]).unwrap();
        match self {
            Shared::Redis { url, prefix } => std::sync::Arc::new(
                oidc_bff::tokens::store::RedisStore::builder(url)
                    .key_prefix(prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap(),
            ),
            Shared::Postgres { prefix } => std::sync::Arc::new(
                oidc_bff::tokens::store::PostgresStore::builder(POSTGRES)
                    .table_prefix(prefix)
                    .encryption(keys)
                    .build()
                    .await
                    .unwrap(),
            ),
            Shared::Sqlite { .. } => unreachable!("not used here"),
        }
    }
}

/// Moves a session's access token `lifetime + 1` seconds into the past, as
/// if that much time had gone by: three processes cannot share a test
/// clock, and an hour is too long to wait.
async fn age_token(store: &dyn oidc_bff::tokens::SessionStore, session: &str, lifetime: u64) {
    let id = oidc_bff::tokens::SessionId::parse(session).expect("session id");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let current = store.load_latest(&id).await.unwrap().expect("session");
    let mut record = oidc_bff::tokens::SessionRecord::clone(&current.record);
    assert_eq!(
        record.tokens.expires_at - record.tokens.issued_at.unwrap(),
        lifetime,
        "the IdP's lifetime"
    );
    record.tokens.issued_at = Some(now - lifetime - 1);
    record.tokens.expires_at = now - 1;
    let outcome = store.update(&id, record, current.version).await.unwrap();
    assert!(matches!(
        outcome,
        oidc_bff::tokens::UpdateOutcome::Updated(_)
    ));
    // The gateways' read caches hear of this write over the store's change
    // channel (stated bound: 100 ms). Real expiry needs no write; this
    // artificial one must reach them before the requests go out, or a
    // gateway would rightly serve the token it still holds as valid.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// The default configuration (60 s refresh margin), access tokens living
/// `lifetime`: after each expiry, `requests` concurrent API calls over three
/// gateways cost exactly one refresh grant, and every call carries the one
/// new token. The first expiry of 5 s tokens is waited out in real time;
/// longer lifetimes are expired by moving the stored token into the past.
async fn three_gateways_one_grant_per_expiry(label: &str, shared: Shared, lifetime: u64) {
    let idp = idp(Duration::from_secs(lifetime)).await;
    let upstream = Upstream::start().await;
    let toml = config(&idp, &upstream, 1)
        .replace("refresh_margin = 1\n", "")
        .replace("store = \"memory\"\n", &shared.session_toml());
    assert!(!toml.contains("refresh_margin"), "the default margin");
    let gateways = vec![
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
    ];
    let store = shared.open().await;
    let mut browser = Browser::new();
    browser.login(&gateways[0]).await;
    let session = browser.session().unwrap().to_owned();
    let requests = 60;
    let mut outcome = Ok(());
    let mut all_tokens = HashSet::new();
    for expiry in 0..2 {
        if expiry == 0 && lifetime <= 5 {
            tokio::time::sleep(Duration::from_secs(lifetime) + Duration::from_millis(300)).await;
        } else {
            age_token(&*store, &session, lifetime).await;
        }
        let before = idp.counters();
        let hits_before = upstream.hits();
        let calls = (0..requests).map(|i| {
            let request = browser
                .api(
                    Method::GET,
                    &format!("{}/api/items/{i}", gateways[i % gateways.len()].url),
                )
                .send();
            async move { request.await.expect("request").status() }
        });
        let statuses = futures_util::future::join_all(calls).await;
        let after = idp.counters();
        let seen = upstream.seen();
        let tokens: HashSet<_> = seen[hits_before..]
            .iter()
            .map(|s| s.bearer().expect("bearer"))
            .collect();
        let failed = statuses.iter().filter(|s| s.as_u16() != 200).count();
        let checks = [
            (failed == 0, format!("{failed} of {requests} failed")),
            (
                after.refresh_attempts - before.refresh_attempts == 1,
                format!(
                    "{} grants, expected exactly one",
                    after.refresh_attempts - before.refresh_attempts
                ),
            ),
            (
                after.refresh_reuse_detected == 0,
                "a refresh token spent twice".into(),
            ),
            (
                tokens.len() == 1,
                format!("{} distinct tokens upstream", tokens.len()),
            ),
            (
                tokens.iter().all(|t| all_tokens.insert(t.clone())),
                "no new token after the expiry".into(),
            ),
        ];
        if let Some((_, why)) = checks.into_iter().find(|(ok, _)| !ok) {
            outcome = Err(format!(
                "{label}, {lifetime} s tokens, expiry {expiry}: {why}"
            ));
            break;
        }
    }
    let logs = gateways
        .iter()
        .map(Gateway::logs)
        .collect::<Vec<_>>()
        .join("\n----\n");
    // Clean up before asserting, so a failure leaves nothing behind.
    drop(gateways);
    shared.cleanup().await;
    if let Err(why) = outcome {
        panic!("{why}\n{logs}");
    }
}

const LIFETIMES: [u64; 4] = [5, 20, 60, 3600];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_gateways_one_grant_per_expiry_whatever_the_lifetime() {
    if !service("Redis", "127.0.0.1:6379").await {
        return;
    }
    for lifetime in LIFETIMES {
        three_gateways_one_grant_per_expiry("redis", Shared::redis(REDIS), lifetime).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_three_gateways_one_grant_per_expiry_whatever_the_lifetime() {
    if !service("PostgreSQL", "127.0.0.1:5432").await {
        return;
    }
    for lifetime in LIFETIMES {
        let prefix = format!("{}_", unique());
        three_gateways_one_grant_per_expiry("postgres", Shared::Postgres { prefix }, lifetime)
            .await;
    }
}

/// DPoP with three gateways sharing Redis: the session's key lives
/// (encrypted) in the shared session record, so a refresh on one instance
/// and API calls on the others all prove the same key, and the API sees one
/// `cnf.jkt`; the client credentials key is shared through the store too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_gateways_share_one_sessions_dpop_key() {
    if !service("Redis", "127.0.0.1:6379").await {
        return;
    }
    let shared = Shared::redis(REDIS);
    let idp = idp(Duration::from_secs(3)).await;
    let upstream = Upstream::start().await;
    let toml = config(&idp, &upstream, 1)
        .replace("store = \"memory\"\n", &shared.session_toml())
        .replace("refresh_margin = 1\n", "refresh_margin = 1\ndpop = true\n");
    let gateways = vec![
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
    ];
    let mut browser = Browser::new();
    browser.login(&gateways[0]).await;
    let verifier = oidc_bff_dev_idp::dpop::ResourceVerifier::new();
    // Each call checked at once, as the API would (the token is active now).
    let call = async |gateway: usize, path: &str| -> String {
        let response = browser
            .api(Method::GET, &format!("{}{path}", gateways[gateway].url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", gateways[gateway].logs());
        let seen = upstream.last();
        let url = format!("http://{}{}", upstream.addr, seen.target);
        let method: http::Method = seen.method.parse().unwrap();
        verifier
            .verify_request(&method, &url, &seen.headers, |token| idp.token_jkt(token))
            .unwrap_or_else(|rejection| panic!("{path}: {rejection:?}"))
            .jkt
    };
    let first = call(1, "/api/before").await;
    tokio::time::sleep(Duration::from_millis(3300)).await;
    // The refresh happens on instance 2, the next call goes to instance 0.
    let refreshed = call(2, "/api/refresh").await;
    assert_eq!(idp.counters().refresh_grants, 1);
    let after = call(0, "/api/after").await;
    assert_eq!(idp.counters().refresh_grants, 1);
    assert_eq!(first, refreshed);
    assert_eq!(first, after);
    // Client tokens: one shared key, another than the session's.
    let svc_one = call(0, "/svc/a").await;
    let svc_two = call(2, "/svc/b").await;
    drop(gateways);
    shared.cleanup().await;
    assert_eq!(svc_one, svc_two);
    assert_ne!(svc_one, first);
}

/// The Sentinel set-up this binary's tests share (started once).
fn sentinel() -> Option<&'static servers::Sentinel> {
    servers::shared(
        &servers::SENTINEL,
        "Redis Sentinel",
        servers::Sentinel::start,
    )
}

/// The three-primary Cluster this binary's tests share (started once).
fn cluster() -> Option<&'static servers::Cluster> {
    servers::shared(&servers::CLUSTER, "Redis Cluster", servers::Cluster::start)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_three_gateways_refresh_once() {
    let Some(sentinel) = sentinel() else { return };
    three_instances_refresh_once("sentinel", Shared::redis(sentinel.url()), storm()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_three_gateways_refresh_once_with_a_slow_token_endpoint() {
    let Some(sentinel) = sentinel() else { return };
    three_instances_refresh_once("sentinel, slow", Shared::redis(sentinel.url()), slow()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_three_gateways_one_grant_per_expiry_whatever_the_lifetime() {
    let Some(sentinel) = sentinel() else { return };
    for lifetime in LIFETIMES {
        three_gateways_one_grant_per_expiry("sentinel", Shared::redis(sentinel.url()), lifetime)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_gateways_refresh_once() {
    let Some(cluster) = cluster() else { return };
    three_instances_refresh_once("cluster", Shared::redis(cluster.url()), storm()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_gateways_refresh_once_with_a_slow_token_endpoint() {
    let Some(cluster) = cluster() else { return };
    three_instances_refresh_once("cluster, slow", Shared::redis(cluster.url()), slow()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_three_gateways_one_grant_per_expiry_whatever_the_lifetime() {
    let Some(cluster) = cluster() else { return };
    for lifetime in LIFETIMES {
        three_gateways_one_grant_per_expiry("cluster", Shared::redis(cluster.url()), lifetime)
            .await;
    }
}

/// What a storm's requests got back, by status.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    unavailable: usize,
    /// Anything else: `(session, status or transport error)`.
    wrong: Vec<(usize, String)>,
}

impl Tally {
    fn add(&mut self, session: usize, outcome: Result<u16, String>) {
        match outcome {
            Ok(200) => self.ok += 1,
            Ok(503) => self.unavailable += 1,
            Ok(status) => self.wrong.push((session, status.to_string())),
            Err(err) => self.wrong.push((session, err)),
        }
    }
}

/// Three gateways on a Sentinel set-up of their own (primary, replica,
/// three Sentinels), a provider that rotates one-time refresh tokens (a
/// second use revokes the grant) and answers slowly, many sessions whose
/// access tokens are all due. Rounds of concurrent proxied calls for every
/// session over the three gateways; `SENTINEL FAILOVER` lands in the
/// first round, while the refreshes are in flight. Every call gets 200 or
/// 503 (store unavailable while the primary moves) — never 401, never 500;
/// afterwards every session answers 200 on every gateway with an active
/// token, also after one more expiry (its newest refresh token survived
/// the failover), and no refresh token was presented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_during_a_refresh_storm_over_three_gateways() {
    const SESSIONS: usize = 24;
    const PER_SESSION: usize = 3;
    let sentinel = match tokio::task::spawn_blocking(servers::Sentinel::start)
        .await
        .expect("start the Sentinel set-up")
    {
        Ok(s) => s,
        Err(err) => return servers::unavailable("Redis Sentinel", &err),
    };
    let shared = Shared::redis(sentinel.url());
    let lifetime = Duration::from_secs(4);
    let idp = idp(lifetime).await;
    let upstream = Upstream::start().await;
    let toml = config(&idp, &upstream, 1).replace("store = \"memory\"\n", &shared.session_toml());
    let gateways = vec![
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
        Gateway::start(&toml).await,
    ];
    let mut browsers = Vec::new();
    for i in 0..SESSIONS {
        let mut browser = Browser::new();
        browser.login(&gateways[i % gateways.len()]).await;
        browsers.push(browser);
    }
    let first_primary = sentinel.primary_port().expect("a primary");
    // Every session's access token due (refresh margin 1 s).
    tokio::time::sleep(lifetime + Duration::from_millis(300)).await;
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    let before = idp.counters();

    let storm_started = Instant::now();
    let mut tally = Tally::default();
    let mut failover = None;
    let mut rounds = 0;
    let mut moved_at = None;
    loop {
        rounds += 1;
        let calls = (0..SESSIONS * PER_SESSION).map(|n| {
            let (s, k) = (n % SESSIONS, n / SESSIONS);
            let url = format!(
                "{}/api/storm/s{s}/r{rounds}/{k}",
                gateways[(s + k) % gateways.len()].url
            );
            let request = browsers[s].api(Method::GET, &url).send();
            async move {
                let outcome = match request.await {
                    Ok(response) => Ok(response.status().as_u16()),
                    Err(err) => Err(format!("transport error: {err}")),
                };
                (s, outcome)
            }
        });
        let round = futures_util::future::join_all(calls);
        let results = if failover.is_none() {
            let s = sentinel.clone();
            let (results, out) = tokio::join!(round, async move {
                // The refreshes are at the provider (300 ms) by now.
                tokio::time::sleep(Duration::from_millis(150)).await;
                tokio::task::spawn_blocking(move || s.failover())
                    .await
                    .expect("failover")
            });
            failover = Some(out);
            results
        } else {
            round.await
        };
        let round_ok = results.iter().all(|(_, o)| matches!(o, Ok(200)));
        for (s, outcome) in results {
            tally.add(s, outcome);
        }
        if moved_at.is_none() && sentinel.primary_port().is_some_and(|p| p != first_primary) {
            moved_at = Some(storm_started.elapsed());
        }
        // Until the primary has moved, the new one serves every call, and
        // the storm has run past one more expiry (a refresh wave on the
        // new primary).
        if moved_at.is_some() && round_ok && storm_started.elapsed() > lifetime * 2 {
            break;
        }
        if storm_started.elapsed() > Duration::from_secs(60) || !tally.wrong.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let storm_took = storm_started.elapsed();

    // Afterwards: one more expiry, then every session on every gateway; the
    // token its last call carried is active at the provider (checked at
    // once: it lives only seconds).
    let mut after = Tally::default();
    let mut inactive = Vec::new();
    if tally.wrong.is_empty() {
        tokio::time::sleep(lifetime).await;
        for (s, browser) in browsers.iter().enumerate() {
            for (g, gateway) in gateways.iter().enumerate() {
                let url = format!("{}/api/after/s{s}/g{g}", gateway.url);
                let outcome = match browser.api(Method::GET, &url).send().await {
                    Ok(response) => Ok(response.status().as_u16()),
                    Err(err) => Err(format!("transport error: {err}")),
                };
                after.add(s, outcome);
            }
            let prefix = format!("/base/after/s{s}/");
            let last = upstream
                .seen()
                .iter()
                .rev()
                .find(|r| r.target.starts_with(&prefix))
                .and_then(Seen::bearer);
            let active = match last {
                Some(token) => introspect(&idp, &token).await["active"] == true,
                None => false,
            };
            if !active {
                inactive.push(s);
            }
        }
    }
    let counters = idp.counters();
    let logs = gateways
        .iter()
        .map(Gateway::logs)
        .collect::<Vec<_>>()
        .join("\n----\n");
    drop(gateways);
    shared.cleanup().await;
    eprintln!(
        "sentinel failover: {SESSIONS} sessions, {rounds} rounds in {storm_took:?} \
         (primary moved after {moved_at:?}): {} × 200, {} × 503; {} refresh grants",
        tally.ok,
        tally.unavailable,
        counters.refresh_grants - before.refresh_grants,
    );
    let failover = failover.expect("the failover was issued");
    assert!(
        failover.as_ref().is_ok_and(|o| o.contains("OK")),
        "SENTINEL FAILOVER: {failover:?}"
    );
    assert!(moved_at.is_some(), "the primary moved");
    assert!(
        tally.wrong.is_empty(),
        "during the failover, only 200 or 503: {:?} ({} wrong)\n{logs}",
        &tally.wrong[..tally.wrong.len().min(10)],
        tally.wrong.len()
    );
    assert!(
        after.wrong.is_empty() && after.unavailable == 0,
        "afterwards every session answers 200 everywhere: {after:?}\n{logs}"
    );
    assert!(
        inactive.is_empty(),
        "inactive tokens for sessions {inactive:?}"
    );
    assert_eq!(
        counters.refresh_reuse_detected, 0,
        "a refresh token was presented twice\n{logs}"
    );
    // Every session was refreshed in the storm and again afterwards.
    assert!(
        counters.refresh_grants - before.refresh_grants >= 2 * SESSIONS as u64,
        "{} refresh grants for {SESSIONS} sessions over two expiries",
        counters.refresh_grants - before.refresh_grants
    );
}
