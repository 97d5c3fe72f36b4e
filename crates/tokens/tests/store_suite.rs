//! One store test suite, run against every store: memory, SQLite (a temp
//! file), Redis and PostgreSQL (the machine's services; see
//! `tests/common/stores.rs` for how a missing service is handled).
//!
//! Run all of it with
//! `cargo test -p oidc-bff-tokens --features sqlite,redis,postgres --test store_suite`.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stores::{Backend, TestStore};
use oidc_bff_tokens::store::testing::FaultyStore;
use oidc_bff_tokens::store::{KeyRing, spawn_cleanup};
use oidc_bff_tokens::{
    AccessToken, Clock, IdToken, OidcConfig, RefreshToken, SessionId, SessionRecord, SessionStore,
    StoreError, TokenEngine, TokenError, UpdateOutcome, UserTokenRequest, UserTokens, Versioned,
};

/// A record whose secrets are unique strings that a dump must not show.
fn record(s: &TestStore, sub: &str, sid: Option<&str>) -> SessionRecord {
    let now = s.clock.now_unix();
    let tag = common::stores::random_suffix();
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), sub.into());
    claims.insert("email".into(), format!("{tag}@mail.example").into());
    SessionRecord {
        sub: sub.into(),
        sid: sid.map(str::to_owned),
        claims,
        tokens: UserTokens {
            access_token: AccessToken::new(format!("AT-{tag}-secret")),
            expires_at: now + 300,
            token_type: "Bearer".into(),
            refresh_token: Some(RefreshToken::new(format!("RT-{tag}-secret"))),
            id_token: Some(IdToken::new(format!("IDT-{tag}-secret"))),
            scope: Some("openid".into()),
            refreshed_at: None,
            refresh_count: 0,
            issued_at: Some(now),
        },
        resource_tokens: Default::default(),
        created_at: now,
        expires_at: now + 3600,
        last_active: now,
        logout_id: format!("logout-{tag}"),
        user_agent: None,
        dpop_key: None,
    }
}

fn secrets_of(r: &SessionRecord) -> Vec<String> {
    let mut out = vec![
        r.tokens.access_token.secret().to_owned(),
        r.tokens.refresh_token.as_ref().unwrap().secret().to_owned(),
        r.tokens.id_token.as_ref().unwrap().secret().to_owned(),
    ];
    for t in r.resource_tokens.values() {
        out.push(t.access_token.secret().to_owned());
    }
    out
}

async fn create_load_update_delete(s: &TestStore) {
    let id = SessionId::generate();
    let first = record(s, "alice", Some("sid-1"));
    assert_eq!(s.store.create(&id, first.clone()).await.unwrap(), 1);
    let loaded = s.store.load(&id).await.unwrap().expect("created");
    assert_eq!(loaded.version, 1);
    assert_eq!(*loaded.record, first);

    // Another instance sees the same session (and, for the persistent
    // stores, a restart does too).
    let other = s.another_instance().await;
    let seen = other.load(&id).await.unwrap().expect("shared");
    assert_eq!(*seen.record, first);

    let mut second = first.clone();
    second.tokens.access_token = AccessToken::new("AT-second");
    second.tokens.refresh_count = 1;
    assert_eq!(
        s.store.update(&id, second.clone(), 1).await.unwrap(),
        UpdateOutcome::Updated(2)
    );
    let loaded = load_settled(&other, &id, |v| v.as_ref().is_some_and(|v| v.version == 2))
        .await
        .unwrap();
    assert_eq!((loaded.version, &*loaded.record), (2, &second));

    let deleted = s.store.delete(&id).await.unwrap().expect("deleted record");
    assert_eq!(*deleted, second);
    assert!(s.store.load(&id).await.unwrap().is_none());
    assert!(s.store.delete(&id).await.unwrap().is_none());
    // A collision on create is an error, never an overwrite.
    let id2 = SessionId::generate();
    s.store.create(&id2, first.clone()).await.unwrap();
    assert!(s.store.create(&id2, second.clone()).await.is_err());
    assert_eq!(*s.store.load(&id2).await.unwrap().unwrap().record, first);
}

/// Reads `id` through `store` until `settled` holds, for at most 5 s.
///
/// A store with a read cache sees another instance's write once that
/// write's announcement arrives (milliseconds; docs/COORDINATION.md), not
/// at the moment the write returns; `load_latest` sees it at once.
async fn load_settled(
    store: &Arc<dyn SessionStore>,
    id: &SessionId,
    settled: impl Fn(&Option<Versioned>) -> bool,
) -> Option<Versioned> {
    let started = Instant::now();
    loop {
        let seen = store.load(id).await.unwrap();
        if settled(&seen) || started.elapsed() > Duration::from_secs(5) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `load_latest` reads the backend: another instance's write is seen at
/// once, whatever a read cache holds, and `load` sees it afterwards.
async fn load_latest_sees_other_instances_at_once(s: &TestStore) {
    let id = SessionId::generate();
    let first = record(s, "alice", Some("sid-latest"));
    s.store.create(&id, first.clone()).await.unwrap();
    let other = s.another_instance().await;
    for _ in 0..3 {
        assert_eq!(other.load(&id).await.unwrap().unwrap().version, 1);
    }
    let mut second = first.clone();
    second.tokens.access_token = AccessToken::new("AT-latest");
    assert_eq!(
        s.store.update(&id, second.clone(), 1).await.unwrap(),
        UpdateOutcome::Updated(2)
    );
    let latest = other.load_latest(&id).await.unwrap().expect("latest");
    assert_eq!((latest.version, &*latest.record), (2, &second));
    let cached = other.load(&id).await.unwrap().expect("loaded");
    assert_eq!(cached.version, 2, "load_latest refreshed the cache");
    // A version mismatch on write still wins over anything cached.
    assert_eq!(
        other.update(&id, first.clone(), 1).await.unwrap(),
        UpdateOutcome::Conflict
    );
    s.store.delete(&id).await.unwrap();
    assert!(other.load_latest(&id).await.unwrap().is_none());
    assert!(other.load(&id).await.unwrap().is_none());
    assert!(
        s.store
            .load_latest(&SessionId::generate())
            .await
            .unwrap()
            .is_none()
    );
}

async fn versioned_update_conflict_and_missing(s: &TestStore) {
    let id = SessionId::generate();
    let r = record(s, "alice", None);
    s.store.create(&id, r.clone()).await.unwrap();
    assert_eq!(
        s.store.update(&id, r.clone(), 1).await.unwrap(),
        UpdateOutcome::Updated(2)
    );
    // A writer that read version 1 is too late: nothing written.
    let mut stale = r.clone();
    stale.tokens.access_token = AccessToken::new("AT-stale");
    assert_eq!(
        s.store.update(&id, stale, 1).await.unwrap(),
        UpdateOutcome::Conflict
    );
    assert_eq!(*s.store.load(&id).await.unwrap().unwrap().record, r);
    assert_eq!(
        s.store.update(&id, r.clone(), 7).await.unwrap(),
        UpdateOutcome::Conflict
    );
    s.store.delete(&id).await.unwrap();
    assert_eq!(
        s.store.update(&id, r.clone(), 2).await.unwrap(),
        UpdateOutcome::Missing
    );
    assert_eq!(
        s.store.update(&SessionId::generate(), r, 1).await.unwrap(),
        UpdateOutcome::Missing
    );
}

async fn sessions_are_indexed_by_sub_and_sid(s: &TestStore) {
    let sub = format!("user-{}", common::stores::random_suffix());
    let other_sub = format!("other-{}", common::stores::random_suffix());
    let (a, b, c) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    s.store
        .create(&a, record(s, &sub, Some("sid-a")))
        .await
        .unwrap();
    s.store
        .create(&b, record(s, &sub, Some("sid-b")))
        .await
        .unwrap();
    s.store
        .create(&c, record(s, &other_sub, Some("sid-a")))
        .await
        .unwrap();

    let set = |v: Vec<SessionId>| v.into_iter().collect::<HashSet<_>>();
    assert_eq!(
        set(s.store.find_by_sub(&sub).await.unwrap()),
        set(vec![a.clone(), b.clone()])
    );
    assert_eq!(
        set(s.store.find_by_sid("sid-a").await.unwrap()),
        set(vec![a.clone(), c.clone()])
    );
    assert_eq!(s.store.find_by_sid("sid-b").await.unwrap(), vec![b.clone()]);
    assert!(s.store.find_by_sub("nobody").await.unwrap().is_empty());

    // Indexes follow updates and deletes.
    let mut moved = (*s.store.load(&b).await.unwrap().unwrap().record).clone();
    moved.sid = Some("sid-c".into());
    s.store.update(&b, moved, 1).await.unwrap();
    assert!(s.store.find_by_sid("sid-b").await.unwrap().is_empty());
    assert_eq!(s.store.find_by_sid("sid-c").await.unwrap(), vec![b.clone()]);
    s.store.delete(&a).await.unwrap();
    assert_eq!(s.store.find_by_sub(&sub).await.unwrap(), vec![b.clone()]);
    assert_eq!(s.store.find_by_sid("sid-a").await.unwrap(), vec![c.clone()]);
    for id in [&b, &c] {
        s.store.delete(id).await.unwrap();
    }
}

/// Session lists come from the backend: another instance that has a
/// session cached sees its latest version, and a deletion at once.
async fn sessions_of_reads_past_the_cache(s: &TestStore) {
    let sub = format!("list-{}", common::stores::random_suffix());
    let (a, b, c) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    s.store.create(&a, record(s, &sub, None)).await.unwrap();
    s.store.create(&b, record(s, &sub, None)).await.unwrap();
    s.store
        .create(&c, record(s, "someone-else", None))
        .await
        .unwrap();
    let other = s.another_instance().await;
    // Warm the other instance's read cache with version 1 of `a`.
    assert_eq!(other.load(&a).await.unwrap().unwrap().version, 1);
    let mut touched = (*s.store.load(&a).await.unwrap().unwrap().record).clone();
    touched.last_active += 7;
    touched.user_agent = Some("Agent/2".into());
    assert_eq!(
        s.store.update(&a, touched.clone(), 1).await.unwrap(),
        UpdateOutcome::Updated(2)
    );
    let listed = other.sessions_of(&sub).await.unwrap();
    let by_id: std::collections::HashMap<_, _> = listed
        .iter()
        .map(|(id, v)| (id.clone(), (v.version, v.record.clone())))
        .collect();
    assert_eq!(by_id.len(), 2, "only the subject's sessions");
    assert_eq!(by_id[&a].0, 2, "the latest version, not the cached one");
    assert_eq!(*by_id[&a].1, touched);
    assert_eq!(by_id[&b].0, 1);
    s.store.delete(&b).await.unwrap();
    let ids: Vec<SessionId> = other
        .sessions_of(&sub)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec![a.clone()]);
    assert!(other.sessions_of("nobody-at-all").await.unwrap().is_empty());
    for id in [&a, &c] {
        s.store.delete(id).await.unwrap();
    }
}

async fn expired_sessions_are_gone_and_purged(s: &TestStore) {
    let sub = format!("exp-{}", common::stores::random_suffix());
    let short = SessionId::generate();
    let long = SessionId::generate();
    let mut r = record(s, &sub, Some("sid-exp"));
    r.expires_at = s.clock.now_unix() + 100;
    s.store.create(&short, r.clone()).await.unwrap();
    r.expires_at = s.clock.now_unix() + 10_000;
    s.store.create(&long, r).await.unwrap();
    assert!(s.store.load(&short).await.unwrap().is_some());

    s.clock.advance(Duration::from_secs(101));
    assert!(s.store.load(&short).await.unwrap().is_none());
    assert_eq!(s.store.find_by_sub(&sub).await.unwrap(), vec![long.clone()]);
    assert_eq!(
        s.store.find_by_sid("sid-exp").await.unwrap(),
        vec![long.clone()]
    );
    let purged = s.store.purge_expired().await.unwrap();
    // Memory may have dropped it at load already; the others purge it now.
    assert!(purged <= 1, "purged {purged}");
    if s.is_persistent() {
        assert_eq!(purged, 1);
    }
    assert!(s.store.load(&long).await.unwrap().is_some());
    assert_eq!(s.store.purge_expired().await.unwrap(), 0);
}

async fn transient_values_are_taken_once(s: &TestStore) {
    let key = format!("login:{}", common::stores::random_suffix());
    s.store
        .put_transient(&key, "pkce-verifier-secret".into(), Duration::from_secs(60))
        .await
        .unwrap();
    // Shared with other instances.
    let other = s.another_instance().await;
    assert_eq!(
        other.take_transient(&key).await.unwrap().as_deref(),
        Some("pkce-verifier-secret")
    );
    assert_eq!(s.store.take_transient(&key).await.unwrap(), None);
    assert_eq!(s.store.take_transient("never-stored").await.unwrap(), None);

    // Many concurrent takers: exactly one gets it.
    s.store
        .put_transient(&key, "once".into(), Duration::from_secs(60))
        .await
        .unwrap();
    let takers = (0..20).map(|_| {
        let store = s.store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.take_transient(&key).await.unwrap() })
    });
    let got: Vec<_> = futures_util::future::join_all(takers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .filter(Option::is_some)
        .collect();
    assert_eq!(got, vec![Some("once".to_owned())]);

    // put-if-absent: refused while a live value is there, allowed once it expired.
    let jti = format!("jti:{}", common::stores::random_suffix());
    assert!(
        s.store
            .put_transient_if_absent(&jti, "1".into(), Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(
        !other
            .put_transient_if_absent(&jti, "2".into(), Duration::from_secs(60))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        other
            .put_transient_if_absent(&jti, "3".into(), Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        s.store.take_transient(&jti).await.unwrap().as_deref(),
        Some("3")
    );

    // An expired value is never returned.
    s.store
        .put_transient(&key, "short".into(), Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(s.store.take_transient(&key).await.unwrap(), None);

    // Concurrent put-if-absent: exactly one wins.
    let jti = format!("jti:{}", common::stores::random_suffix());
    let puts = (0..20).map(|i| {
        let store = s.store.clone();
        let jti = jti.clone();
        tokio::spawn(async move {
            store
                .put_transient_if_absent(&jti, i.to_string(), Duration::from_secs(60))
                .await
                .unwrap()
        })
    });
    let wins = futures_util::future::join_all(puts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
}

async fn leases_are_exclusive_owned_and_expire(s: &TestStore) {
    let id = SessionId::generate();
    let other = s.another_instance().await;
    let ttl = Duration::from_secs(30);
    assert!(s.store.try_lease(&id, "owner-a", ttl).await.unwrap());
    assert!(!other.try_lease(&id, "owner-b", ttl).await.unwrap());
    assert!(
        !s.store.try_lease(&id, "owner-a", ttl).await.unwrap(),
        "not re-entrant"
    );
    // Only the owner renews or releases.
    assert!(!other.renew_lease(&id, "owner-b", ttl).await.unwrap());
    assert!(other.renew_lease(&id, "owner-a", ttl).await.unwrap());
    other.release_lease(&id, "owner-b").await.unwrap();
    assert!(!other.try_lease(&id, "owner-c", ttl).await.unwrap());
    s.store.release_lease(&id, "owner-a").await.unwrap();
    assert!(other.try_lease(&id, "owner-c", ttl).await.unwrap());
    other.release_lease(&id, "owner-c").await.unwrap();

    // A holder that dies loses the lease when its time runs out.
    assert!(
        s.store
            .try_lease(&id, "dead", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(!other.try_lease(&id, "alive", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(other.try_lease(&id, "alive", ttl).await.unwrap());
    // The dead holder cannot renew or release the new owner's lease.
    assert!(!s.store.renew_lease(&id, "dead", ttl).await.unwrap());
    s.store.release_lease(&id, "dead").await.unwrap();
    assert!(!s.store.try_lease(&id, "third", ttl).await.unwrap());
    other.release_lease(&id, "alive").await.unwrap();

    // Renewal keeps a lease alive past its first time-to-live.
    let short = Duration::from_millis(300);
    assert!(s.store.try_lease(&id, "renewer", short).await.unwrap());
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(s.store.renew_lease(&id, "renewer", short).await.unwrap());
    }
    assert!(!other.try_lease(&id, "thief", ttl).await.unwrap());
    s.store.release_lease(&id, "renewer").await.unwrap();

    // Many contenders at once: exactly one wins.
    let id = SessionId::generate();
    let tries = (0..50).map(|i| {
        let store = if i % 2 == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        let id = id.clone();
        tokio::spawn(async move { store.try_lease(&id, &format!("o{i}"), ttl).await.unwrap() })
    });
    let wins = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);
    let _ = s.store.purge_expired().await.unwrap();
}

async fn concurrent_writers_one_winner_per_version(s: &TestStore) {
    let id = SessionId::generate();
    let base = record(s, "alice", None);
    s.store.create(&id, base.clone()).await.unwrap();
    let other = s.another_instance().await;

    // 50 writers on version 1 at once: exactly one wins.
    let writers = (0..50).map(|i| {
        let store = if i % 2 == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        let id = id.clone();
        let mut r = base.clone();
        r.tokens.refresh_count = i;
        tokio::spawn(async move { store.update(&id, r, 1).await.unwrap() })
    });
    let outcomes: Vec<_> = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == UpdateOutcome::Updated(2))
            .count(),
        1
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == UpdateOutcome::Conflict)
            .count(),
        49
    );

    // 50 writers that re-read and retry: each version is won exactly once.
    let writers = (0..50u64).map(|i| {
        let store = if i % 2 == 0 {
            s.store.clone()
        } else {
            other.clone()
        };
        let id = id.clone();
        tokio::spawn(async move {
            loop {
                let current = store.load(&id).await.unwrap().unwrap();
                let mut r = (*current.record).clone();
                r.tokens.refresh_count += 1;
                match store.update(&id, r, current.version).await.unwrap() {
                    UpdateOutcome::Updated(v) => return v,
                    UpdateOutcome::Conflict => continue,
                    UpdateOutcome::Missing => panic!("session vanished"),
                }
            }
        })
    });
    let versions: BTreeSet<u64> = futures_util::future::join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(versions, (3..=52).collect());
    let last = load_settled(&s.store, &id, |v| {
        v.as_ref().is_some_and(|v| v.version == 52)
    })
    .await
    .unwrap();
    assert_eq!(last.version, 52);
    // No lost update: every increment is there.
    let first_winner = last.record.tokens.refresh_count - 50;
    assert!(first_winner < 50);
}

async fn tokens_are_encrypted_at_rest(s: &TestStore) {
    if !s.is_persistent() {
        return;
    }
    let id = SessionId::generate();
    let mut r = record(s, "alice", Some("sid-enc"));
    // The session's DPoP key is sealed with the rest of the record.
    r.dpop_key = Some(oidc_bff_tokens::dpop::DpopKey::generate(Default::default()).unwrap());
    let dpop_private = serde_json::to_value(r.dpop_key.as_ref().unwrap()).unwrap()["k"]
        .as_str()
        .unwrap()
        .to_owned();
    r.resource_tokens.insert(
        "urn:api|".into(),
        oidc_bff_tokens::session::ResourceToken {
            access_token: AccessToken::new(format!(
                "RES-{}-secret",
                common::stores::random_suffix()
            )),
            expires_at: r.tokens.expires_at,
            token_type: "Bearer".into(),
            issued_at: r.tokens.issued_at,
        },
    );
    s.store.create(&id, r.clone()).await.unwrap();
    s.store
        .put_transient(
            "login:state-xyz",
            "verifier-PLAINTEXT-secret".into(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        s.store
            .try_lease(&id, "owner-enc", Duration::from_secs(30))
            .await
            .unwrap()
    );

    let dump = s.raw_dump().await.unwrap().join("\n");
    assert!(
        dump.contains("test1:"),
        "values are sealed with the configured key id"
    );
    for secret in secrets_of(&r) {
        assert!(!dump.contains(&secret), "a token is readable in the store");
    }
    assert!(
        !dump.contains(id.as_str()),
        "a session id is readable in the store"
    );
    assert!(!dump.contains("verifier-PLAINTEXT-secret"));
    assert!(!dump.contains("state-xyz"), "transient keys are hashed");
    assert!(
        !dump.contains(r.claims["email"].as_str().unwrap()),
        "claims are sealed too"
    );
    assert!(!dump.contains(&r.logout_id));
    assert!(
        !dump.contains(&dpop_private),
        "a DPoP key is readable in the store"
    );
    assert!(!dump.contains(r.dpop_key.as_ref().unwrap().thumbprint()));

    // Another key ring (the same key id with another key, or an unknown
    // id) cannot read it: to such an instance it does not exist. (Loading it
    // there would delete it; see `unreadable_sessions_are_signed_out`.)
    for stranger in [
        s.reopen(KeyRing::generate("test1")).await,
        s.reopen(KeyRing::generate("other")).await,
    ] {
        assert!(stranger.find_by_sub("alice").await.unwrap().is_empty());
        assert!(stranger.find_by_sid("sid-enc").await.unwrap().is_empty());
        assert_eq!(
            stranger.get_transient("login:state-xyz").await.unwrap(),
            None
        );
    }

    // A rotated ring (new key first, old key kept) reads old data and
    // writes with the new key.
    let rotated_keys = KeyRing::generate("test2")
        .with_key_from(&s.keys, "test1")
        .unwrap();
    let rotated = s.reopen(rotated_keys).await;
    let loaded = rotated.load(&id).await.unwrap().unwrap();
    assert_eq!(*loaded.record, r);
    assert_eq!(
        rotated.find_by_sid("sid-enc").await.unwrap(),
        vec![id.clone()]
    );
    assert_eq!(
        rotated
            .update(&id, r.clone(), loaded.version)
            .await
            .unwrap(),
        UpdateOutcome::Updated(loaded.version + 1)
    );
    let dump = s.raw_dump().await.unwrap().join("\n");
    assert!(dump.contains("test2:"));
    assert_eq!(
        rotated
            .take_transient("login:state-xyz")
            .await
            .unwrap()
            .as_deref(),
        Some("verifier-PLAINTEXT-secret")
    );
    // An instance still on the old ring cannot read what the new key sealed:
    // to it the session is gone, and it deletes it. Hence the rotation order:
    // add the new key everywhere before making it first.
    assert!(load_settled(&s.store, &id, Option::is_none).await.is_none());
    assert!(
        load_settled(&rotated, &id, Option::is_none).await.is_none(),
        "deleted"
    );
}

/// A record that cannot be opened any more (its key was dropped from the
/// ring, or it is damaged) is no session: `None`, deleted, skipped by the
/// back-channel lookups; never a `Corrupt` error, which would answer 503
/// forever.
async fn unreadable_sessions_are_signed_out(s: &TestStore) {
    if !s.is_persistent() {
        // The memory store keeps records as they are: nothing to decrypt.
        return;
    }
    let sub = format!("unreadable-{}", common::stores::random_suffix());
    let sid = format!("sid-{}", common::stores::random_suffix());
    // Written by instances whose keys this one does not have: a key since
    // dropped from the ring, and another key under this ring's key id.
    let retired = s.reopen(KeyRing::generate("retired")).await;
    let replaced = s.reopen(KeyRing::generate("test1")).await;
    let (lost, clobbered, good) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    retired
        .create(&lost, record(s, &sub, Some(&sid)))
        .await
        .unwrap();
    replaced
        .create(&clobbered, record(s, &sub, Some(&sid)))
        .await
        .unwrap();
    let readable = record(s, &sub, Some(&sid));
    s.store.create(&good, readable.clone()).await.unwrap();

    // Back-channel logout still finds the readable session.
    assert_eq!(s.store.find_by_sub(&sub).await.unwrap(), vec![good.clone()]);
    assert_eq!(s.store.find_by_sid(&sid).await.unwrap(), vec![good.clone()]);

    for (id, writer) in [(&lost, &retired), (&clobbered, &replaced)] {
        assert!(
            writer.load(id).await.unwrap().is_some(),
            "its writer can read it"
        );
        assert!(s.store.load(id).await.unwrap().is_none(), "no session");
        // ...and it is gone, for its writer too.
        assert!(
            load_settled(writer, id, Option::is_none).await.is_none(),
            "deleted"
        );
        assert!(s.store.load(id).await.unwrap().is_none());
        assert_eq!(
            s.store.update(id, readable.clone(), 1).await.unwrap(),
            UpdateOutcome::Missing
        );
    }
    assert_eq!(
        retired.find_by_sub(&sub).await.unwrap(),
        Vec::<SessionId>::new(),
        "its index entries went with it"
    );
    assert_eq!(
        *s.store.load(&good).await.unwrap().unwrap().record,
        readable
    );

    // Transient values sealed with a dropped key are absent too.
    let key = format!("login:{}", common::stores::random_suffix());
    retired
        .put_transient(&key, "pkce".into(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(s.store.get_transient(&key).await.unwrap(), None);
    assert_eq!(s.store.take_transient(&key).await.unwrap(), None);
}

/// The background cleanup purges expired sessions (by the store's clock),
/// keeps ticking, and stops when aborted.
async fn cleanup_task_purges_expired_sessions(s: &TestStore) {
    let sub = format!("cleanup-{}", common::stores::random_suffix());
    let (short, long) = (SessionId::generate(), SessionId::generate());
    let mut r = record(s, &sub, None);
    r.expires_at = s.clock.now_unix() + 100;
    s.store.create(&short, r.clone()).await.unwrap();
    r.expires_at = s.clock.now_unix() + 10_000;
    s.store.create(&long, r).await.unwrap();
    s.clock.advance(Duration::from_secs(101));

    let counting = Arc::new(FaultyStore::new(s.store.clone()));
    // Once a second (the least it allows), plus up to 10 % jitter.
    let cleanup = spawn_cleanup(counting.clone(), Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    while counting.purge_runs() < 2 {
        assert!(Instant::now() < deadline, "the cleanup task did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cleanup.abort();
    assert_eq!(counting.purged(), 1, "the expired session, once");
    // Gone from the backend: nothing is left for another purge.
    assert_eq!(s.store.purge_expired().await.unwrap(), 0);
    assert!(s.store.load(&short).await.unwrap().is_none());
    assert!(s.store.load(&long).await.unwrap().is_some(), "kept");

    // Aborted: no further runs.
    let _ = cleanup.await;
    let runs = counting.purge_runs();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(counting.purge_runs(), runs);
}

// ---------------------------------------------------------------------------
// The token engine over each store: three engines (= three instances) share
// one store, the provider issues one-time-use refresh tokens.
// ---------------------------------------------------------------------------

/// Three engines, each with its own handle on the store (its own connection
/// pool, as separate processes would have).
async fn instances(
    s: &TestStore,
    idp: &oidc_bff_dev_idp::RunningIdp,
    tune: impl Fn(oidc_bff_tokens::OidcConfigBuilder) -> oidc_bff_tokens::OidcConfigBuilder,
) -> Vec<TokenEngine> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let config = tune(
            OidcConfig::builder(idp.url().as_str(), "bff")
                .client_secret("secret")
                .timeouts(Duration::from_secs(2), Duration::from_secs(10)),
        )
        .build()
        .unwrap();
        out.push(
            TokenEngine::builder(config)
                .store(s.another_instance().await)
                .clock(Arc::new(s.clock.clone()))
                .build()
                .unwrap(),
        );
    }
    out
}

async fn storm(instances: &[TokenEngine], id: &SessionId, n: usize) -> HashSet<String> {
    let calls = (0..n).map(|i| {
        let client = instances[i % instances.len()].clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .user_access_token(&id, None, &UserTokenRequest::default())
                .await
        })
    });
    let mut tokens = HashSet::new();
    for result in futures_util::future::join_all(calls).await {
        let token = result.unwrap().expect("every caller gets a token");
        tokens.insert(token.secret().to_owned());
    }
    tokens
}

async fn engine_three_instances_refresh_once(s: &TestStore) {
    let idp = common::idp(common::default_idp(), &s.clock).await;
    let instances = instances(s, &idp, |c| c).await;
    let id = common::sign_in(&instances[0]).await;
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(200)));
    s.clock.advance(Duration::from_secs(400));

    let started = Instant::now();
    let tokens = storm(&instances, &id, 300).await;
    eprintln!(
        "{:?}: 300 requests over 3 instances on an expired token took {:?}",
        s.backend,
        started.elapsed()
    );
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.counters().refresh_attempts, 1);
    assert_eq!(idp.counters().refresh_reuse_detected, 0);
    let stored = instances[2].load_session(&id).await.unwrap().unwrap();
    assert!(tokens.contains(stored.record.tokens.access_token.secret()));
    assert_eq!(stored.record.tokens.refresh_count, 1);

    // And again, a second round: still one refresh per expiry.
    s.clock.advance(Duration::from_secs(400));
    let tokens = storm(&instances, &id, 90).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.counters().refresh_attempts, 2);
    assert_eq!(idp.counters().refresh_reuse_detected, 0);
}

async fn engine_slow_token_endpoint_outlives_the_lease(s: &TestStore) {
    let idp = common::idp(common::default_idp(), &s.clock).await;
    let instances = instances(s, &idp, |c| c.refresh_lease(Duration::from_millis(400))).await;
    let id = common::sign_in(&instances[0]).await;
    // The token endpoint takes almost four initial lease times.
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(1500)));
    s.clock.advance(Duration::from_secs(400));
    let started = Instant::now();
    let tokens = storm(&instances, &id, 60).await;
    eprintln!(
        "{:?}: a 1.5 s refresh with a 0.4 s lease, 60 requests, took {:?}",
        s.backend,
        started.elapsed()
    );
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.counters().refresh_attempts, 1);
    assert_eq!(idp.counters().refresh_reuse_detected, 0);
}

async fn engine_recovers_from_a_crashed_lease_holder(s: &TestStore) {
    let idp = common::idp(common::default_idp(), &s.clock).await;
    let instances = instances(s, &idp, |c| c.refresh_lease(Duration::from_millis(500))).await;
    let id = common::sign_in(&instances[0]).await;
    // An instance died mid-refresh: its lease is never renewed nor released.
    assert!(
        s.store
            .try_lease(&id, "crashed-instance", Duration::from_millis(600))
            .await
            .unwrap()
    );
    s.clock.advance(Duration::from_secs(400));
    let tokens = storm(&instances, &id, 30).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.counters().refresh_grants, 1);
    let stored = instances[1].load_session(&id).await.unwrap().unwrap();
    assert!(tokens.contains(stored.record.tokens.access_token.secret()));
}

async fn engine_ends_idle_sessions(s: &TestStore) {
    let idp = common::idp(common::default_idp(), &s.clock).await;
    let instances = instances(s, &idp, |c| c.idle_timeout(Duration::from_secs(100))).await;
    let id = common::sign_in(&instances[0]).await;
    let first = instances[0].load_session(&id).await.unwrap().unwrap();
    // Within a quarter of the idle timeout: no write.
    s.clock.advance(Duration::from_secs(20));
    let v = instances[1].load_session(&id).await.unwrap().unwrap();
    assert_eq!(v.version, first.version);
    // Later: activity is recorded (one versioned write), sliding the window.
    s.clock.advance(Duration::from_secs(60));
    let v = instances[1].load_session(&id).await.unwrap().unwrap();
    assert_eq!(v.version, first.version + 1);
    assert_eq!(v.record.last_active, s.clock.now_unix());
    s.clock.advance(Duration::from_secs(90));
    assert!(
        instances[2].load_session(&id).await.unwrap().is_some(),
        "slid"
    );
    // Unused for longer than the idle timeout: ended, everywhere.
    s.clock.advance(Duration::from_secs(101));
    assert!(instances[0].load_session(&id).await.unwrap().is_none());
    assert!(
        s.store.load(&id).await.unwrap().is_none(),
        "deleted from the store"
    );
    let err = instances[1]
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NotAuthenticated));
}

/// Session administration across instances: a list on one sees sessions
/// made on others, ending one on one instance ends it for all and revokes
/// its refresh token at the provider, and ids of another subject find
/// nothing.
async fn engine_lists_and_ends_sessions_across_instances(s: &TestStore) {
    let idp = common::idp(common::default_idp(), &s.clock).await;
    let instances = instances(s, &idp, |c| c).await;
    let first = common::sign_in(&instances[0]).await;
    s.clock.advance(Duration::from_secs(5));
    let second = common::sign_in(&instances[1]).await;
    let sub = instances[0]
        .load_session(&first)
        .await
        .unwrap()
        .unwrap()
        .record
        .sub
        .clone();
    let listed = instances[2].sessions_of(&sub).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![first.public_id(), second.public_id()],
        "oldest first"
    );
    assert!(listed[0].created_at < listed[1].created_at);
    assert!(
        listed
            .iter()
            .all(|l| l.sub == sub && l.expires_at > l.created_at)
    );
    let shown = serde_json::to_string(&listed).unwrap();
    for id in [&first, &second] {
        assert!(
            !shown.contains(id.as_str()),
            "a list never shows a session id"
        );
    }

    // Another subject's view of the id finds nothing; nothing ends.
    assert_eq!(
        instances[2]
            .end_session_of("mallory", &first.public_id())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        instances[2]
            .end_session_of(&sub, "no-such-id")
            .await
            .unwrap(),
        None
    );
    assert_eq!(idp.counters().revocations, 0);

    // Ended on instance 2: gone on instance 0 (which had it cached).
    assert!(instances[0].load_session(&second).await.unwrap().is_some());
    let ended = instances[2]
        .end_session_of(&sub, &second.public_id())
        .await
        .unwrap()
        .expect("ended");
    assert_eq!(ended.id, second.public_id());
    assert!(ended.revoked);
    assert_eq!(idp.counters().revocations, 1);
    // Gone from the store at once; from instance 0's read cache as soon as
    // the store's announcement arrives (see the store module's docs).
    assert!(
        instances[0]
            .store()
            .load_latest(&second)
            .await
            .unwrap()
            .is_none()
    );
    gone_everywhere(&instances, &second).await;
    assert!(instances[0].load_session(&first).await.unwrap().is_some());

    // All of a subject's sessions.
    let third = common::sign_in(&instances[1]).await;
    let ended = instances[0].end_sessions_of(&sub).await.unwrap();
    let mut ended_ids: Vec<String> = ended.iter().map(|e| e.id.clone()).collect();
    ended_ids.sort();
    let mut expected = vec![first.public_id(), third.public_id()];
    expected.sort();
    assert_eq!(ended_ids, expected);
    assert!(ended.iter().all(|e| e.revoked));
    assert_eq!(idp.counters().revocations, 3);
    assert!(instances[1].sessions_of(&sub).await.unwrap().is_empty());
    for id in [&first, &third] {
        gone_everywhere(&instances, id).await;
    }
    assert!(instances[0].end_sessions_of(&sub).await.unwrap().is_empty());
}

/// Waits until no instance loads the session `id` any more (the read
/// caches drop it when the store's announcement arrives).
async fn gone_everywhere(instances: &[TokenEngine], id: &SessionId) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for instance in instances {
        while instance.load_session(id).await.unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "an instance still serves an ended session"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Item 6: N instances on one store fetch one machine token, not N.
async fn engine_client_tokens_are_shared(s: &TestStore) {
    let idp = common::idp(common::default_idp(), &s.clock).await;
    let instances = instances(s, &idp, |c| c).await;
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(200)));
    let request = oidc_bff_tokens::ClientCredentialsRequest::default().scope("api");
    let calls = (0..60).map(|i| {
        let client = instances[i % 3].clone();
        let request = request.clone();
        tokio::spawn(async move { client.client_access_token(&request).await })
    });
    let tokens: HashSet<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("client token").secret().to_owned())
        .collect();
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.counters().client_credentials_grants, 1);
    if s.is_persistent() {
        let dump = s.raw_dump().await.unwrap().join("\n");
        assert!(
            !dump.contains(tokens.iter().next().unwrap().as_str()),
            "sealed at rest"
        );
    }

    // A token an API rejected is replaced once, for every instance.
    let rejected = oidc_bff_tokens::AccessToken::new(tokens.into_iter().next().unwrap());
    let renewed = instances[1]
        .renew_client_access_token(&request, &rejected)
        .await
        .unwrap();
    assert_ne!(renewed, rejected);
    assert_eq!(idp.counters().client_credentials_grants, 2);
    // Another instance whose own cache is still current keeps it until
    // renewal; a third asking fresh (another scope) gets its own.
    let other = oidc_bff_tokens::ClientCredentialsRequest::default().scope("other");
    instances[2].client_access_token(&other).await.unwrap();
    instances[0].client_access_token(&other).await.unwrap();
    assert_eq!(idp.counters().client_credentials_grants, 3);
}

// ---------------------------------------------------------------------------

macro_rules! backend_tests {
    ($module:ident, $backend:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(store) = super::TestStore::open($backend).await else {
                        return;
                    };
                    super::$test(&store).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        backend_tests!(memory, super::Backend::Memory, [$($test),*]);
        #[cfg(feature = "sqlite")]
        backend_tests!(sqlite, super::Backend::Sqlite, [$($test),*]);
        #[cfg(feature = "redis")]
        backend_tests!(redis, super::Backend::Redis, [$($test),*]);
        #[cfg(feature = "postgres")]
        backend_tests!(postgres, super::Backend::Postgres, [$($test),*]);
        // Servers this test binary starts (tests/common/servers.rs).
        #[cfg(feature = "redis")]
        backend_tests!(redis_sentinel, super::Backend::RedisSentinel, [$($test),*]);
        #[cfg(feature = "redis")]
        backend_tests!(redis_cluster, super::Backend::RedisCluster, [$($test),*]);
        #[cfg(feature = "redis")]
        backend_tests!(redis_tls, super::Backend::RedisTls, [$($test),*]);
        #[cfg(feature = "postgres")]
        backend_tests!(postgres_tls, super::Backend::PostgresTls, [$($test),*]);
    };
}

suite![
    create_load_update_delete,
    load_latest_sees_other_instances_at_once,
    versioned_update_conflict_and_missing,
    sessions_are_indexed_by_sub_and_sid,
    sessions_of_reads_past_the_cache,
    expired_sessions_are_gone_and_purged,
    transient_values_are_taken_once,
    leases_are_exclusive_owned_and_expire,
    concurrent_writers_one_winner_per_version,
    tokens_are_encrypted_at_rest,
    unreadable_sessions_are_signed_out,
    cleanup_task_purges_expired_sessions,
    engine_three_instances_refresh_once,
    engine_slow_token_endpoint_outlives_the_lease,
    engine_recovers_from_a_crashed_lease_holder,
    engine_ends_idle_sessions,
    engine_client_tokens_are_shared,
    engine_lists_and_ends_sessions_across_instances,
];

/// A backend that cannot be reached: building lazily succeeds, every
/// operation fails with a store error (503 upstream), never a panic or hang.
#[tokio::test]
async fn unreachable_backends_fail_with_store_errors() {
    use oidc_bff_tokens::store::{OpenOptions, open_url};
    let mut urls = vec![];
    if cfg!(feature = "redis") {
        urls.push("redis://127.0.0.1:1");
    }
    if cfg!(feature = "postgres") {
        urls.push("postgres://postgres@127.0.0.1:1/test");
    }
    if cfg!(feature = "sqlite") {
        urls.push("sqlite:///nonexistent-dir/for/sure/sessions.db");
    }
    for url in urls {
        let store = open_url(
            url,
            OpenOptions::new()
                .encryption(KeyRing::generate("k"))
                .operation_timeout(Duration::from_millis(500)),
        )
        .expect("lazy build does no I/O");
        let err = store.load(&SessionId::generate()).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
            "{url}: {err:?}"
        );
        assert!(TokenError::from(err).is_transient());
    }
    // A persistent store without a key ring is refused.
    if cfg!(feature = "redis") {
        let err = open_url("redis://127.0.0.1:6379", OpenOptions::new()).unwrap_err();
        assert!(matches!(err, StoreError::Config(_)));
    }
    assert!(open_url("mysql://x", OpenOptions::new()).is_err());
}
