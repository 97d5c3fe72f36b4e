//! The token engine without any web framework: refresh coordination between
//! instances sharing a store, cancellation safety, and token bookkeeping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use oidc_bff_tokens::{ManualClock, MemoryStore, SessionStore, TokenError, UserTokenRequest};

#[tokio::test]
async fn three_instances_sharing_a_store_refresh_once() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    // Three engines = three instances: separate in-process coordination,
    // one shared store. Only the store's lease can keep them to one refresh.
    let instances: Vec<_> = (0..3)
        .map(|_| common::client(&idp, store.clone(), &clock))
        .collect();
    let id = common::sign_in(&instances[0]).await;
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    clock.advance(Duration::from_secs(400));

    let calls = (0..300).map(|i| {
        let client = instances[i % 3].clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .user_access_token(&id, None, &UserTokenRequest::default())
                .await
        })
    });
    let results = futures_util::future::join_all(calls).await;
    let mut tokens = std::collections::HashSet::new();
    for result in results {
        let token = result.unwrap().expect("every caller gets a token");
        tokens.insert(token.secret().to_owned());
    }
    assert_eq!(tokens.len(), 1);
    assert_eq!(idp.counters().refresh_attempts, 1);
    assert_eq!(idp.counters().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn a_refresh_finishes_even_when_every_caller_gives_up() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let client = common::client(&idp, store.clone(), &clock);
    let id = common::sign_in(&client).await;
    let before = client.load_session(&id).await.unwrap().unwrap();
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    clock.advance(Duration::from_secs(400));

    // Callers that are dropped mid-refresh (a browser that disconnected).
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            let id = id.clone();
            tokio::spawn(async move {
                client
                    .user_access_token(&id, None, &UserTokenRequest::default())
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for caller in &callers {
        caller.abort();
    }
    // The refresh ran to completion and stored its rotated tokens.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = client.load_session(&id).await.unwrap().unwrap();
    assert_ne!(
        after.record.tokens.refresh_token,
        before.record.tokens.refresh_token
    );
    assert_eq!(idp.counters().refresh_grants, 1);

    idp.faults().set_token_delay(None);
    let token = client
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap();
    assert_eq!(token, after.record.tokens.access_token);
    assert_eq!(idp.counters().refresh_attempts, 1);
}

#[tokio::test]
async fn an_instance_that_died_holding_the_lease_delays_but_does_not_block() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let client = common::client(&idp, store.clone(), &clock);
    let id = common::sign_in(&client).await;
    // A crashed instance's lease: never renewed, never released.
    assert!(
        store
            .try_lease(&id, "dead-instance", Duration::from_millis(500))
            .await
            .unwrap()
    );
    clock.advance(Duration::from_secs(400));
    let token = client
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .expect("the lease expires and this instance refreshes");
    let stored = client.load_session(&id).await.unwrap().unwrap();
    assert_eq!(token, stored.record.tokens.access_token);
    assert_eq!(idp.counters().refresh_grants, 1);
}

#[tokio::test]
async fn a_slow_refresh_keeps_its_lease_alive() {
    // The token endpoint takes longer than the initial lease; a second
    // instance must not take over and spend the refresh token again.
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let config = |idp: &oidc_bff_dev_idp::RunningIdp| {
        oidc_bff_tokens::OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .refresh_lease(Duration::from_millis(400))
            .timeouts(Duration::from_secs(2), Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let instances: Vec<_> = (0..2)
        .map(|_| {
            oidc_bff_tokens::TokenEngine::builder(config(&idp))
                .store(store.clone())
                .clock(Arc::new(clock.clone()))
                .build()
                .unwrap()
        })
        .collect();
    let id = common::sign_in(&instances[0]).await;
    idp.faults()
        .set_token_delay(Some(Duration::from_millis(1500)));
    clock.advance(Duration::from_secs(400));
    let calls = instances.iter().map(|client| {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .user_access_token(&id, None, &UserTokenRequest::default())
                .await
        })
    });
    for result in futures_util::future::join_all(calls).await {
        result.unwrap().expect("token");
    }
    assert_eq!(idp.counters().refresh_attempts, 1);
    assert_eq!(idp.counters().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn an_ended_session_is_not_authenticated() {
    let clock = ManualClock::starting_now();
    let idp = common::idp(common::default_idp(), &clock).await;
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let client = common::client(&idp, store.clone(), &clock);
    let id = common::sign_in(&client).await;
    let logged_out = client.logout(&id, None).await.unwrap();
    assert!(logged_out.revoked);
    let err = client
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NotAuthenticated));
    // And a session past its absolute lifetime is gone too.
    let id = common::sign_in(&client).await;
    clock.advance(client.config().session_lifetime + Duration::from_secs(1));
    let err = client
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await
        .unwrap_err();
    assert!(err.is_unauthorized());
}

/// Instance A's lease lapses while its grant is in flight (its renewals
/// fail), B takes the lease over and spends the same refresh token, and the
/// provider (rotation without reuse detection) refuses B with
/// `invalid_grant`. A's grant won, but its write is slow: B must wait for it
/// instead of ending the session, and both get A's new token.
#[tokio::test]
async fn an_inherited_lease_waits_for_the_previous_holders_write() {
    use oidc_bff_tokens::store::testing::FaultyStore;

    let clock = ManualClock::starting_now();
    let idp = common::idp(
        common::default_idp()
            .refresh_token_rotation(true)
            .refresh_reuse_detection(false),
        &clock,
    )
    .await;
    let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::with_clock(
        Arc::new(clock.clone()),
    ))));
    let instance = || {
        let config = oidc_bff_tokens::OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .timeouts(Duration::from_secs(2), Duration::from_secs(5))
            .refresh_lease(Duration::from_millis(300))
            .build()
            .unwrap();
        oidc_bff_tokens::TokenEngine::builder(config)
            .store(store.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    };
    let (a, b) = (instance(), instance());
    let id = common::sign_in(&a).await;
    let original = a.load_session(&id).await.unwrap().unwrap();

    idp.faults()
        .set_token_delay(Some(Duration::from_millis(600)));
    store.lose_leases(true); // renewals fail: A's lease lapses after 300 ms
    store.delay_updates(Duration::from_millis(800)); // A's write lands late
    clock.advance(Duration::from_secs(400));

    let first = {
        let (a, id) = (a.clone(), id.clone());
        tokio::spawn(async move {
            a.user_access_token(&id, None, &UserTokenRequest::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = b
        .user_access_token(&id, None, &UserTokenRequest::default())
        .await;
    let first = first.await.unwrap();

    let counters = idp.counters();
    assert_eq!(counters.refresh_attempts, 2, "B did send its own grant");
    assert_eq!(counters.refresh_grants, 1, "and only A's succeeded");
    let a_token = first.expect("A's refresh stands");
    let b_token = second.expect("B waited for A's write instead of ending the session");
    assert_eq!(a_token, b_token);
    let stored = a
        .load_session(&id)
        .await
        .unwrap()
        .expect("the session lives");
    assert_ne!(
        stored.record.tokens.refresh_token,
        original.record.tokens.refresh_token
    );
    assert_eq!(&stored.record.tokens.access_token, &a_token);
}
