//! The user's access token in one call: retrieval, refresh ahead of expiry,
//! rotation, one refresh for many concurrent requests, and the failure
//! statuses — over real HTTP against the dev IdP.

mod common;

use std::time::Duration;

use common::harness::{self, Options};
use oidc_bff_dev_idp::{DevIdp, IdTokenFault};

#[tokio::test]
async fn the_token_is_served_without_calling_the_provider() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let stored = t.session_of(&browser).await.unwrap();
    let before = t.idp.counters();

    for _ in 0..3 {
        let response = browser.api("/api/token").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            stored.record.tokens.access_token.secret()
        );
    }
    assert_eq!(
        t.idp.counters(),
        before,
        "a valid token needs no provider call"
    );
}

#[tokio::test]
async fn anonymous_callers_get_401() {
    let t = harness::start().await;
    let response = t.browser().api("/api/token").await;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
}

/// Polls the IdP's counters until `done` holds (a renewal behind an answer
/// lands on its own time).
async fn wait_for(t: &harness::TestBff, done: impl Fn(&oidc_bff_dev_idp::Counters) -> bool) {
    for _ in 0..500 {
        if done(&t.idp.counters()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {:?}", t.idp.counters());
}

/// Waits until the session holds a token other than `old`.
async fn wait_for_new_token(t: &harness::TestBff, browser: &harness::Browser, old: &str) {
    for _ in 0..500 {
        let stored = t.session_of(browser).await.unwrap().record;
        if stored.tokens.access_token.secret() != old {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the renewed token was never stored");
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_first_and_rotation_is_stored() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let original = t.session_of(&browser).await.unwrap().record;

    // 250 s later the 300 s token expires within the 60 s margin: it is
    // still served, and renewed behind the answer.
    t.advance(250);
    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        original.tokens.access_token.secret()
    );
    wait_for_new_token(&t, &browser, original.tokens.access_token.secret()).await;
    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 200);
    let served = response.text().await.unwrap();
    assert_ne!(served, original.tokens.access_token.secret());
    assert_eq!(t.idp.counters().refresh_grants, 1);

    let refreshed = t.session_of(&browser).await.unwrap().record;
    assert_eq!(served, refreshed.tokens.access_token.secret());
    assert_ne!(
        refreshed.tokens.refresh_token, original.tokens.refresh_token,
        "the rotated refresh token is stored back"
    );
    assert_eq!(refreshed.tokens.refresh_count, 1);
    assert!(refreshed.tokens.refreshed_at.is_some());

    // The next refresh uses the rotated token: no reuse at the provider.
    t.advance(250);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    wait_for(&t, |c| c.refresh_grants == 2).await;
    let counters = t.idp.counters();
    assert_eq!(counters.refresh_grants, 2);
    assert_eq!(counters.refresh_reuse_detected, 0);
}

#[tokio::test]
async fn two_hundred_concurrent_requests_share_one_refresh() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    // Slow the token endpoint so that every request arrives during the refresh.
    t.idp
        .faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    t.advance(400); // expired outright

    let requests = (0..200).map(|_| {
        let browser = browser.clone();
        tokio::spawn(async move {
            let response = browser.api("/api/token").await;
            (response.status().as_u16(), response.text().await.unwrap())
        })
    });
    let results = futures_util::future::join_all(requests).await;
    let tokens: std::collections::HashSet<String> = results
        .into_iter()
        .map(|r| {
            let (status, body) = r.unwrap();
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect();
    assert_eq!(tokens.len(), 1, "everyone got the one new token");
    let counters = t.idp.counters();
    assert_eq!(counters.refresh_attempts, 1, "exactly one refresh grant");
    assert_eq!(counters.refresh_reuse_detected, 0);

    // Requests arriving after the refresh use its result.
    t.idp.faults().set_token_delay(None);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    assert_eq!(t.idp.counters().refresh_attempts, 1);
}

#[tokio::test]
async fn invalid_grant_gives_401_and_ends_the_session() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    t.idp.faults().set_refresh_error(Some("invalid_grant"));
    t.advance(400);

    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 401);
    assert!(
        t.session_of(&browser).await.is_none(),
        "the dead session ended"
    );
    assert_eq!(browser.api("/bff/user").await.status(), 401);
}

#[tokio::test]
async fn provider_down_with_a_still_valid_token_serves_that_token() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let stored = t.session_of(&browser).await.unwrap().record;
    t.idp.clone().shutdown().await;

    t.advance(250); // within the margin, not yet expired
    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        stored.tokens.access_token.secret()
    );
}

#[tokio::test]
async fn provider_failing_with_an_expired_token_gives_503_and_keeps_the_session() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    t.idp.faults().set_token_status(Some(503));
    t.advance(400);

    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        t.session_of(&browser).await.is_some(),
        "the session is kept"
    );

    // Once the provider is back, the same session refreshes.
    t.idp.faults().set_token_status(None);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    assert_eq!(t.idp.counters().refresh_grants, 1);
}

#[tokio::test]
async fn provider_down_with_an_expired_token_gives_503() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    t.idp.clone().shutdown().await;
    t.advance(400);
    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 503);
    assert!(t.session_of(&browser).await.is_some());
}

#[tokio::test]
async fn a_hanging_token_endpoint_times_out_into_503() {
    let t = harness::start_with(Options {
        request_timeout: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let browser = t.browser();
    browser.sign_in("/").await;
    t.idp
        .faults()
        .set_token_delay(Some(Duration::from_secs(10)));
    t.advance(400);
    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 503, "a bounded wait, then 503");
    assert!(t.session_of(&browser).await.is_some());
}

#[tokio::test]
async fn without_a_refresh_token_an_expired_session_gets_401() {
    let t = harness::start_with(Options {
        scopes: vec!["openid", "profile"], // no offline_access: no refresh token
        ..Options::default()
    })
    .await;
    let browser = t.browser();
    browser.sign_in("/").await;
    assert!(
        t.session_of(&browser)
            .await
            .unwrap()
            .record
            .tokens
            .refresh_token
            .is_none()
    );
    // Within the margin the still-valid token is served.
    t.advance(250);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    t.advance(100);
    assert_eq!(browser.api("/api/token").await.status(), 401);
    assert!(t.session_of(&browser).await.is_none());
}

#[tokio::test]
async fn forced_renewal_refreshes_a_valid_token() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let before = t.session_of(&browser).await.unwrap().record;
    let response = browser.api("/api/token/forced").await;
    assert_eq!(response.status(), 200);
    assert_ne!(
        response.text().await.unwrap(),
        before.tokens.access_token.secret()
    );
    assert_eq!(t.idp.counters().refresh_grants, 1);
}

#[tokio::test]
async fn resource_tokens_are_kept_apart_and_share_the_rotated_refresh_token() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let default_token = browser.api("/api/token").await.text().await.unwrap();
    let resource_token = browser
        .api("/api/token/resource")
        .await
        .text()
        .await
        .unwrap();
    assert_ne!(default_token, resource_token);
    assert_eq!(t.idp.counters().refresh_grants, 1);
    // Cached: asking again costs nothing.
    assert_eq!(
        browser
            .api("/api/token/resource")
            .await
            .text()
            .await
            .unwrap(),
        resource_token
    );
    assert_eq!(t.idp.counters().refresh_grants, 1);
    // The default token still refreshes with the rotated refresh token.
    t.advance(400);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    assert_eq!(t.idp.counters().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn a_refreshed_id_token_for_another_user_ends_the_session() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    t.idp
        .faults()
        .set_id_token_fault(Some(IdTokenFault::DifferentSub));
    t.advance(400);
    assert_eq!(browser.api("/api/token").await.status(), 401);
    assert!(t.session_of(&browser).await.is_none());
}

#[tokio::test]
async fn a_response_without_rotation_or_expiry_keeps_old_values_and_uses_defaults() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let before = t.session_of(&browser).await.unwrap().record;
    t.idp.faults().set_refresh_omits_refresh_token(true);
    t.idp.faults().set_refresh_omits_id_token(true);
    t.idp.faults().set_omit_expires_in(true);
    t.advance(400);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    let after = t.session_of(&browser).await.unwrap().record;
    assert_eq!(after.tokens.refresh_token, before.tokens.refresh_token);
    assert_eq!(after.tokens.id_token, before.tokens.id_token);
    let now = t.bff.engine().clock().now_unix();
    assert_eq!(
        after.tokens.expires_at,
        now + t.bff.engine().config().default_token_lifetime.as_secs()
    );
}

#[tokio::test]
async fn one_time_refresh_tokens_with_reuse_detection_survive_a_storm() {
    // The dev IdP revokes the whole grant on reuse: spending the old refresh
    // token twice would log the user out. Run several storms in a row.
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .refresh_token_rotation(true)
        .refresh_reuse_detection(true);
    let t = harness::start_against(idp, Options::default()).await;
    let browser = t.browser();
    browser.sign_in("/").await;
    for round in 1..=3u64 {
        t.advance(400);
        let requests = (0..100).map(|_| {
            let browser = browser.clone();
            tokio::spawn(async move { browser.api("/api/token").await.status().as_u16() })
        });
        for status in futures_util::future::join_all(requests).await {
            assert_eq!(status.unwrap(), 200, "round {round}");
        }
        assert_eq!(t.idp.counters().refresh_attempts, round);
    }
    assert_eq!(t.idp.counters().refresh_reuse_detected, 0);
}

/// What the dev IdP says about a token at its introspection endpoint.
async fn introspect(t: &harness::TestBff, token: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{}introspect", t.idp.url()))
        .basic_auth("bff", Some("secret"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_down_scoped_token_is_asked_for_and_kept_apart() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let default_token = browser.api("/api/token").await.text().await.unwrap();

    let response = browser.api("/api/token/scoped").await;
    assert_eq!(response.status(), 200);
    let scoped = response.text().await.unwrap();
    assert_ne!(scoped, default_token);
    let about = introspect(&t, &scoped).await;
    assert_eq!(about["active"], true);
    assert_eq!(
        about["scope"], "openid",
        "the provider issued the narrower scope"
    );
    assert_eq!(
        introspect(&t, &default_token).await["scope"],
        "openid profile offline_access"
    );
    // Cached under its own key; the default token is untouched.
    assert_eq!(
        browser.api("/api/token/scoped").await.text().await.unwrap(),
        scoped
    );
    assert_eq!(
        browser.api("/api/token").await.text().await.unwrap(),
        default_token
    );
    assert_eq!(t.idp.counters().refresh_grants, 1);
}

#[tokio::test]
async fn a_scope_the_grant_does_not_cover_gives_401_and_keeps_the_session() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let response = browser.api("/api/token/overscoped").await;
    assert_eq!(response.status(), 401);
    let body = response.text().await.unwrap();
    assert!(body.contains("invalid_scope"), "{body}");
    assert!(t.session_of(&browser).await.is_some(), "the grant is fine");
    assert_eq!(browser.api("/api/token").await.status(), 200);
}

#[tokio::test]
async fn answers_that_are_not_oauth_errors_are_transient_and_keep_the_session() {
    // A proxy's HTML error page, a bare 401 and an unreadable 200 say nothing
    // about the grant: 503, and the same refresh token works afterwards.
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .refresh_token_rotation(true)
        .refresh_reuse_detection(true);
    let t = harness::start_against(idp, Options::default()).await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let cases = [
        (400, "<html><body>Request blocked</body></html>"),
        (401, "Unauthorized"),
        (200, "this is not JSON"),
    ];
    for (round, (status, body)) in cases.into_iter().enumerate() {
        t.advance(400);
        t.idp.faults().set_refresh_answer(Some((status, body)));
        let response = browser.api("/api/token").await;
        assert_eq!(response.status(), 503, "{status} {body}");
        assert!(response.headers().contains_key("retry-after"));
        assert!(
            t.session_of(&browser).await.is_some(),
            "{status}: session kept"
        );

        t.idp.faults().set_refresh_answer(None);
        assert_eq!(
            browser.api("/api/token").await.status(),
            200,
            "{status}: recovers"
        );
        assert_eq!(t.idp.counters().refresh_grants, round as u64 + 1);
    }
    assert_eq!(t.idp.counters().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn after_a_transient_failure_the_valid_token_is_served_without_waiting_again() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let original = t.session_of(&browser).await.unwrap().record;
    t.idp.faults().set_token_status(Some(503));

    t.advance(250); // inside the 60 s margin, still valid
    for _ in 0..5 {
        let response = browser.api("/api/token").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            original.tokens.access_token.secret()
        );
    }
    assert_eq!(
        t.idp.counters().refresh_attempts,
        1,
        "one attempt, then the old token for a few seconds"
    );

    // After the pause the next request tries again (behind its answer,
    // which is the still-valid token), and succeeds.
    t.idp.faults().set_token_status(None);
    t.advance(6);
    let served = browser.api("/api/token").await.text().await.unwrap();
    assert_eq!(served, original.tokens.access_token.secret());
    wait_for_new_token(&t, &browser, original.tokens.access_token.secret()).await;
    let renewed = browser.api("/api/token").await.text().await.unwrap();
    assert_ne!(renewed, original.tokens.access_token.secret());
    assert_eq!(t.idp.counters().refresh_grants, 1);
}

#[tokio::test]
async fn a_jwks_outage_during_a_refresh_keeps_the_session_and_the_rotated_refresh_token() {
    // The provider rotates its signing key, so the refreshed id_token names a
    // key the BFF must fetch, and the JWKS is down. The provider has already
    // rotated the one-time refresh token: losing it would end the grant.
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .refresh_token_rotation(true)
        .refresh_reuse_detection(true);
    let t = harness::start_against(idp, Options::default()).await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let original = t.session_of(&browser).await.unwrap().record;
    t.idp.rotate_keys();
    t.idp.faults().set_jwks_status(Some(503));
    t.advance(400);

    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 503, "cannot verify now: not a 401");
    let kept = t
        .session_of(&browser)
        .await
        .expect("the session is kept")
        .record;
    assert_ne!(
        kept.tokens.refresh_token, original.tokens.refresh_token,
        "the rotated refresh token was stored"
    );
    assert_eq!(
        kept.tokens.access_token, original.tokens.access_token,
        "nothing of the unverified answer is used"
    );

    // Keys reachable again (after the JWKS refetch interval): the stored
    // refresh token works, and nothing was spent twice.
    t.idp.faults().set_jwks_status(None);
    t.advance(120);
    assert_eq!(browser.api("/api/token").await.status(), 200);
    let counters = t.idp.counters();
    assert_eq!(counters.refresh_grants, 2);
    assert_eq!(counters.refresh_reuse_detected, 0);
}

/// A token past its renewal point is answered at once while the renewal
/// runs behind it: with a token endpoint that takes 2 s, the answers come
/// back while the IdP still holds the grant, every one carries the valid
/// old token, there is exactly one grant, and the call after it carries the
/// new token.
#[tokio::test]
async fn calls_in_the_renewal_window_do_not_wait_for_the_provider() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let original = t.session_of(&browser).await.unwrap().record;
    let old = original.tokens.access_token.secret().to_owned();
    t.idp.faults().set_token_delay(Some(Duration::from_secs(2)));

    t.advance(250); // due (renewal point 240 s), valid until 300 s
    for _ in 0..5 {
        let response = browser.api("/api/token").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            old,
            "the valid token, at once"
        );
        let c = t.idp.counters();
        assert_eq!(
            c.refresh_grants, 0,
            "answered before the grant (2 s at the IdP) completed"
        );
        assert!(c.refresh_attempts <= 1);
    }
    // The grant was sent once, and is still in flight at the IdP.
    wait_for(&t, |c| c.refresh_attempts == 1).await;
    assert_eq!(t.idp.counters().refresh_grants, 0);

    wait_for_new_token(&t, &browser, &old).await;
    let stored = t.session_of(&browser).await.unwrap().record;
    let response = browser.api("/api/token").await;
    let renewed = response.text().await.unwrap();
    assert_ne!(renewed, old);
    assert_eq!(renewed, stored.tokens.access_token.secret());
    let c = t.idp.counters();
    assert_eq!(
        (c.refresh_attempts, c.refresh_grants),
        (1, 1),
        "exactly one grant"
    );
    assert_eq!(c.refresh_reuse_detected, 0);
}

/// A renewal behind an answer that the provider refuses for good ends the
/// session: the answer already given was the valid token, the next call
/// gets 401.
#[tokio::test]
async fn a_dead_grant_found_behind_an_answer_ends_the_session() {
    let t = harness::start().await;
    let browser = t.browser();
    browser.sign_in("/").await;
    let original = t.session_of(&browser).await.unwrap().record;
    t.idp.faults().set_refresh_error(Some("invalid_grant"));
    t.advance(250);
    let response = browser.api("/api/token").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        original.tokens.access_token.secret()
    );
    for _ in 0..500 {
        if t.session_of(&browser).await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(t.session_of(&browser).await.is_none(), "the session ended");
    assert_eq!(browser.api("/api/token").await.status(), 401);
    assert_eq!(t.idp.counters().refresh_attempts, 1);
}

/// N concurrent requests after each expiry, through one BFF, with the
/// default configuration (60 s margin): one grant per expiry for 5 s, 20 s,
/// 60 s and one-hour tokens.
#[tokio::test]
async fn one_grant_per_expiry_whatever_the_lifetime() {
    for lifetime in [5u64, 20, 60, 3600] {
        let idp = DevIdp::builder()
            .access_token_lifetime(Duration::from_secs(lifetime))
            .refresh_token_rotation(true)
            .refresh_reuse_detection(true);
        let t = harness::start_against(idp, Options::default()).await;
        assert_eq!(
            t.bff.engine().config().refresh_margin,
            Duration::from_secs(60)
        );
        let browser = t.browser();
        browser.sign_in("/").await;
        let mut seen = std::collections::HashSet::new();
        for expiry in 1..=2u64 {
            t.advance(lifetime + 1);
            let requests = (0..50).map(|_| {
                let browser = browser.clone();
                tokio::spawn(async move {
                    let response = browser.api("/api/token").await;
                    (response.status().as_u16(), response.text().await.unwrap())
                })
            });
            let tokens: std::collections::HashSet<String> =
                futures_util::future::join_all(requests)
                    .await
                    .into_iter()
                    .map(|r| {
                        let (status, body) = r.unwrap();
                        assert_eq!(status, 200, "{body}");
                        body
                    })
                    .collect();
            assert_eq!(tokens.len(), 1, "{lifetime} s: one token for all");
            assert!(seen.insert(tokens.into_iter().next().unwrap()));
            let c = t.idp.counters();
            assert_eq!(
                c.refresh_attempts, expiry,
                "{lifetime} s: one grant per expiry"
            );
            assert_eq!(c.refresh_reuse_detected, 0);
            // The new token is not due in its first half: more calls are free.
            for _ in 0..5 {
                assert_eq!(browser.api("/api/token").await.status(), 200);
            }
            assert_eq!(t.idp.counters().refresh_attempts, expiry);
        }
    }
}

mod lease {
    //! A lease lost before the grant is sent means no grant: another
    //! instance may be spending the same refresh token.

    use std::sync::Arc;
    use std::time::Duration;

    use oidc_bff_tokens::ManualClock;
    use oidc_bff_tokens::store::MemoryStore;
    use oidc_bff_tokens::store::testing::FaultyStore;

    use super::harness::{self, Options};

    #[tokio::test]
    async fn a_refresh_whose_lease_was_lost_sends_no_grant() {
        let clock = ManualClock::starting_now();
        let store = Arc::new(FaultyStore::new(Arc::new(MemoryStore::with_clock(
            Arc::new(clock.clone()),
        ))));
        let options = Options {
            refresh_lease: Duration::from_millis(300), // renewed every 100 ms
            ..Options::default()
        };
        let t = harness::start_with_store(options, clock, store.clone()).await;
        let browser = t.browser();
        browser.sign_in("/").await;
        t.advance(400);

        // The re-read under the lease takes longer than a renewal period,
        // and the renewal finds the lease gone.
        store.delay_loads(Duration::from_millis(400));
        store.lose_leases(true);
        let response = browser.api("/api/token").await;
        assert_eq!(response.status(), 503);
        assert_eq!(
            t.idp.counters().refresh_attempts,
            0,
            "no grant without the lease"
        );

        store.delay_loads(Duration::ZERO);
        store.lose_leases(false);
        assert_eq!(browser.api("/api/token").await.status(), 200);
        assert_eq!(t.idp.counters().refresh_grants, 1);
    }
}
