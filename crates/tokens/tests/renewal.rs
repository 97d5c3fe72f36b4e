//! When tokens are renewed, whatever their lifetime: one refresh grant per
//! expiry for 5 s, 20 s, 60 s and one-hour access tokens with the default
//! configuration (60 s refresh margin), through one engine and through three
//! engines ("instances") sharing a store — memory, Redis, PostgreSQL — and
//! renewal behind the answer once a token is past its renewal point.
//!
//! The IdP and the engines share a [`ManualClock`], so a one-hour token
//! expires without waiting an hour.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::stores::{Backend, TestStore};
use oidc_bff_dev_idp::RunningIdp;
use oidc_bff_tokens::{
    Clock, ManualClock, MemoryStore, SessionId, SessionStore, TokenEngine, UserTokenRequest,
};

const LIFETIMES: [u64; 4] = [5, 20, 60, 3600];

/// `n` concurrent token requests spread over `instances`; every one must
/// succeed, and all get the same token, which is returned.
async fn storm(instances: &[TokenEngine], id: &SessionId, n: usize) -> String {
    let calls = (0..n).map(|i| {
        let client = instances[i % instances.len()].clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .user_access_token(&id, None, &UserTokenRequest::default())
                .await
        })
    });
    let tokens: HashSet<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            r.unwrap()
                .expect("every caller gets a token")
                .secret()
                .to_owned()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "one token for everyone");
    tokens.into_iter().next().unwrap()
}

/// The renewal point of the session's stored token, by the rule under test.
async fn stored_renew_at(client: &TokenEngine, id: &SessionId) -> (String, u64) {
    let margin = client.config().refresh_margin.as_secs();
    let record = client
        .store()
        .load_latest(id)
        .await
        .unwrap()
        .unwrap()
        .record;
    let t = &record.tokens;
    let lifetime = t.expires_at - t.issued_at.unwrap();
    (
        t.access_token.secret().to_owned(),
        t.expires_at - margin.min(lifetime / 2),
    )
}

/// Waits until the session holds a token other than `old` (a renewal
/// behind an answer lands on its own time).
async fn wait_for_new_token(client: &TokenEngine, id: &SessionId, old: &str) {
    for _ in 0..1000 {
        if stored_renew_at(client, id).await.0 != old {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the renewal never landed");
}

/// Lets a renewal that a call should not have started reach the IdP, so
/// that counting grants afterwards catches it.
async fn quiesce(idp: &RunningIdp) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..200 {
        let c = idp.counters();
        if c.refresh_attempts == c.refresh_grants {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three expiries, each followed by `n` concurrent requests over
/// `instances`: exactly one grant each. Requests in the first half of the
/// new token's life cost nothing.
async fn one_grant_per_expiry(
    label: &str,
    idp: &RunningIdp,
    clock: &ManualClock,
    instances: &[TokenEngine],
    lifetime: u64,
    n: usize,
) {
    let id = common::sign_in(&instances[0]).await;
    let mut seen = HashSet::new();
    for expiry in 1..=3u64 {
        clock.advance(Duration::from_secs(lifetime + 1));
        let token = storm(instances, &id, n).await;
        assert!(seen.insert(token), "{label}: a new token after each expiry");
        let c = idp.counters();
        assert_eq!(
            c.refresh_attempts, expiry,
            "{label}, {lifetime} s tokens: one grant per expiry"
        );
        assert_eq!(c.refresh_reuse_detected, 0, "{label}");
        // Up to just before the new token's renewal point: no grant at all.
        clock.advance(Duration::from_secs(lifetime.div_ceil(2) - 1));
        storm(instances, &id, n).await;
        quiesce(idp).await;
        assert_eq!(idp.counters().refresh_attempts, expiry, "{label}");
    }
}

fn idp_builder(lifetime: u64) -> oidc_bff_dev_idp::DevIdpBuilder {
    oidc_bff_dev_idp::DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(lifetime))
        .refresh_token_rotation(true)
        .refresh_reuse_detection(true)
}

#[tokio::test]
async fn one_instance_one_grant_per_expiry_for_every_lifetime() {
    for lifetime in LIFETIMES {
        let clock = ManualClock::starting_now();
        let idp = common::idp(idp_builder(lifetime), &clock).await;
        let store: Arc<dyn SessionStore> =
            Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let client = common::client(&idp, store, &clock);
        assert_eq!(client.config().refresh_margin, Duration::from_secs(60));
        one_grant_per_expiry("one instance", &idp, &clock, &[client], lifetime, 100).await;
    }
}

async fn three_instances(backend: Backend) {
    for lifetime in LIFETIMES {
        let Some(shared) = TestStore::open(backend).await else {
            return;
        };
        let clock = shared.clock.clone();
        let idp = common::idp(idp_builder(lifetime), &clock).await;
        let mut instances = vec![common::client(&idp, shared.store.clone(), &clock)];
        for _ in 1..3 {
            instances.push(common::client(
                &idp,
                shared.another_instance().await,
                &clock,
            ));
        }
        one_grant_per_expiry(
            &format!("{backend:?}"),
            &idp,
            &clock,
            &instances,
            lifetime,
            60,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_memory_one_grant_per_expiry() {
    three_instances(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_redis_one_grant_per_expiry() {
    three_instances(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_postgres_one_grant_per_expiry() {
    three_instances(Backend::Postgres).await;
}

/// Calls one after another through a token's whole life, one per second:
/// one grant per renewal point crossed (a 20 s token: at 10 s, then every
/// 10 s), never one per call.
#[tokio::test]
async fn calls_one_after_another_renew_once_per_half_life() {
    for lifetime in [5u64, 20, 60] {
        let clock = ManualClock::starting_now();
        let idp = common::idp(idp_builder(lifetime), &clock).await;
        let store: Arc<dyn SessionStore> =
            Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let client = common::client(&idp, store, &clock);
        let id = common::sign_in(&client).await;
        let half = lifetime.div_ceil(2);
        let calls = 4 * lifetime;
        for _ in 0..calls {
            clock.advance(Duration::from_secs(1));
            let (old, renew_at) = stored_renew_at(&client, &id).await;
            let token = client
                .user_access_token(&id, None, &UserTokenRequest::default())
                .await
                .expect("token");
            assert_eq!(token.secret(), old, "answered with the stored token");
            if clock.now_unix() >= renew_at {
                // Due: the renewal runs behind the answer; let it land
                // before the clock moves on.
                wait_for_new_token(&client, &id, &old).await;
            }
        }
        quiesce(&idp).await;
        // A renewal at every `half` seconds: the first at `half`, then each
        // new token is due `half` seconds after it was issued.
        let c = idp.counters();
        assert_eq!(
            c.refresh_attempts,
            calls / half,
            "{lifetime} s tokens, {calls} calls"
        );
        assert_eq!(c.refresh_reuse_detected, 0);
    }
}

/// A resource token renews by its own lifetime too.
#[tokio::test]
async fn resource_tokens_renew_by_their_own_lifetime() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(idp_builder(20), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let client = common::client(&idp, store, &clock);
    let id = common::sign_in(&client).await;
    let request = UserTokenRequest::default().resource("https://api.example.com");
    let first = client.user_access_token(&id, None, &request).await.unwrap();
    assert_eq!(idp.counters().refresh_attempts, 1, "asked for once");
    clock.advance(Duration::from_secs(9));
    for _ in 0..5 {
        assert_eq!(
            client.user_access_token(&id, None, &request).await.unwrap(),
            first
        );
    }
    quiesce(&idp).await;
    assert_eq!(
        idp.counters().refresh_attempts,
        1,
        "not due in its first half"
    );
    clock.advance(Duration::from_secs(12));
    let second = client.user_access_token(&id, None, &request).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(idp.counters().refresh_attempts, 2);
}

/// Records written before `issued_at` existed still decode, and renew by
/// the margin as before.
#[tokio::test]
async fn records_without_an_issue_time_still_work() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(idp_builder(300), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let client = common::client(&idp, store.clone(), &clock);
    let id = common::sign_in(&client).await;
    let stored = store.load(&id).await.unwrap().unwrap();
    let mut json = serde_json::to_value(&*stored.record).unwrap();
    json["tokens"].as_object_mut().unwrap().remove("issued_at");
    let old: oidc_bff_tokens::SessionRecord = serde_json::from_value(json).unwrap();
    assert_eq!(old.tokens.issued_at, None);
    store.update(&id, old, stored.version).await.unwrap();
    // 239 s in: before `expires_at - margin`.
    clock.advance(Duration::from_secs(239));
    client
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(idp.counters().refresh_attempts, 0);
    clock.advance(Duration::from_secs(62));
    client
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(idp.counters().refresh_attempts, 1);
    let renewed = store.load(&id).await.unwrap().unwrap();
    assert!(renewed.record.tokens.issued_at.is_some());
}
