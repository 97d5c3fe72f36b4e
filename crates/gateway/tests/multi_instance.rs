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

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Browser, Gateway, Upstream, config, idp};
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
    Redis { prefix: String },
    Postgres { prefix: String },
    Sqlite { url: String },
}

impl Shared {
    fn session_toml(&self) -> String {
        let (store, prefix) = match self {
            Shared::Redis { prefix } => (REDIS.to_owned(), Some(prefix)),
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
            Shared::Redis { prefix } => {
                let store = oidc_bff::tokens::store::RedisStore::builder(REDIS)
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
    let prefix = format!("oidc-bff-test:{}:", unique());
    three_instances_refresh_once("redis", Shared::Redis { prefix }, storm()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_three_gateways_refresh_once_with_a_slow_token_endpoint() {
    if !service("Redis", "127.0.0.1:6379").await {
        return;
    }
    let prefix = format!("oidc-bff-test:{}:", unique());
    three_instances_refresh_once("redis, slow", Shared::Redis { prefix }, slow()).await;
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
            Shared::Redis { prefix } => std::sync::Arc::new(
                oidc_bff::tokens::store::RedisStore::builder(REDIS)
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
        let prefix = format!("oidc-bff-test:{}:", unique());
        three_gateways_one_grant_per_expiry("redis", Shared::Redis { prefix }, lifetime).await;
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
    let shared = Shared::Redis {
        prefix: format!("oidc-bff-test:{}:", unique()),
    };
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
