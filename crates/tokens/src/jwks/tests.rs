//! Unit tests of the `jwks` module.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};

use super::test_support::*;
use super::*;
use crate::clock::ManualClock;

const INTERVAL: Duration = Duration::from_secs(60);

fn cache(server: &JwksServer, clock: &ManualClock) -> JwksCache {
    JwksCache::new(
        server.url.clone(),
        http_client(),
        Arc::new(clock.clone()),
        INTERVAL,
    )
}

fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    header
}

fn is_no_matching_key(err: &TokenError) -> bool {
    matches!(err, TokenError::InvalidIdToken(msg) if msg.contains("no matching key"))
}

#[test]
fn cache_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JwksCache>();
}

#[tokio::test]
async fn fetches_on_first_use_then_serves_from_cache() {
    let key = rsa_key("k1");
    let server = JwksServer::start(jwks_json(&[&key])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);
    assert_eq!(jwks.fetch_count(), 0, "nothing is fetched before first use");

    let keys = jwks
        .keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(jwks.fetch_count(), 1);

    for _ in 0..10 {
        let again = jwks
            .keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&again[0], &keys[0]));
    }
    assert_eq!(jwks.fetch_count(), 1);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn unknown_kid_triggers_one_refetch_that_finds_a_rotated_key() {
    let old = rsa_key("old");
    let new = other_rsa_key("new");
    let server = JwksServer::start(jwks_json(&[&old])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);

    jwks.keys_for(&header(Algorithm::RS256, Some("old")))
        .await
        .unwrap();
    assert_eq!(jwks.fetch_count(), 1);

    server.set_body(jwks_json(&[&old, &new]));
    let keys = jwks
        .keys_for(&header(Algorithm::RS256, Some("new")))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(jwks.fetch_count(), 2);

    // Both keys are now cached.
    jwks.keys_for(&header(Algorithm::RS256, Some("old")))
        .await
        .unwrap();
    jwks.keys_for(&header(Algorithm::RS256, Some("new")))
        .await
        .unwrap();
    assert_eq!(jwks.fetch_count(), 2);
}

#[tokio::test]
async fn unknown_kid_still_unknown_after_refetch_is_no_matching_key() {
    let key = rsa_key("k1");
    let server = JwksServer::start(jwks_json(&[&key])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);

    jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();
    let err = jwks
        .keys_for(&header(Algorithm::RS256, Some("nope")))
        .await
        .unwrap_err();
    assert!(is_no_matching_key(&err), "{err:?}");
    assert_eq!(jwks.fetch_count(), 2);
}

#[tokio::test]
async fn refetches_are_rate_limited() {
    let key = rsa_key("k1");
    let server = JwksServer::start(jwks_json(&[&key])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);
    jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();
    assert_eq!(jwks.fetch_count(), 1);

    for i in 0..1000 {
        let kid = format!("random-{i}");
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some(&kid)))
            .await
            .unwrap_err();
        assert!(is_no_matching_key(&err), "{err:?}");
    }
    assert_eq!(jwks.fetch_count(), 2, "at most one refetch per interval");

    // Still within the interval: no fetch.
    clock.advance(INTERVAL - Duration::from_secs(1));
    jwks.keys_for(&header(Algorithm::RS256, Some("again")))
        .await
        .unwrap_err();
    assert_eq!(jwks.fetch_count(), 2);

    // Past the interval: exactly one more.
    clock.advance(Duration::from_secs(1));
    for i in 0..100 {
        let kid = format!("later-{i}");
        jwks.keys_for(&header(Algorithm::RS256, Some(&kid)))
            .await
            .unwrap_err();
    }
    assert_eq!(jwks.fetch_count(), 3);
    assert_eq!(server.requests(), 3);

    // Known keys keep working throughout.
    jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();
}

#[tokio::test]
async fn rate_limited_refetch_picks_up_rotation_after_the_interval() {
    let old = rsa_key("old");
    let new = other_rsa_key("new");
    let server = JwksServer::start(jwks_json(&[&old])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);
    jwks.keys_for(&header(Algorithm::RS256, Some("old")))
        .await
        .unwrap();
    // A bogus kid spends the refetch budget.
    jwks.keys_for(&header(Algorithm::RS256, Some("bogus")))
        .await
        .unwrap_err();
    // The provider rotates; within the interval the new kid is unknown.
    server.set_body(jwks_json(&[&old, &new]));
    jwks.keys_for(&header(Algorithm::RS256, Some("new")))
        .await
        .unwrap_err();
    assert_eq!(jwks.fetch_count(), 2);
    clock.advance(INTERVAL);
    jwks.keys_for(&header(Algorithm::RS256, Some("new")))
        .await
        .unwrap();
    assert_eq!(jwks.fetch_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_coalesce_into_one_fetch() {
    let key = rsa_key("k1");
    let server = JwksServer::start(jwks_json(&[&key])).await;
    server.set_delay(Duration::from_millis(200));
    let clock = ManualClock::new(1_700_000_000);
    let jwks = Arc::new(cache(&server, &clock));

    let lookups = (0..50).map(|_| {
        let jwks = Arc::clone(&jwks);
        tokio::spawn(async move { jwks.keys_for(&header(Algorithm::RS256, Some("k1"))).await })
    });
    for result in futures_util::future::join_all(lookups).await {
        assert_eq!(result.unwrap().unwrap().len(), 1);
    }
    assert_eq!(jwks.fetch_count(), 1);
    assert_eq!(server.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_coalesce_into_one_refetch() {
    let key = rsa_key("k1");
    let server = JwksServer::start(jwks_json(&[&key])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = Arc::new(cache(&server, &clock));
    jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();
    server.set_delay(Duration::from_millis(200));

    let lookups = (0..50).map(|i| {
        let jwks = Arc::clone(&jwks);
        tokio::spawn(async move {
            let kid = format!("unknown-{i}");
            jwks.keys_for(&header(Algorithm::RS256, Some(&kid))).await
        })
    });
    for result in futures_util::future::join_all(lookups).await {
        assert!(is_no_matching_key(&result.unwrap().unwrap_err()));
    }
    assert_eq!(jwks.fetch_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_a_failed_fetch() {
    let server = JwksServer::start("oops").await;
    server.set_status(503);
    server.set_delay(Duration::from_millis(200));
    let clock = ManualClock::new(1_700_000_000);
    let jwks = Arc::new(cache(&server, &clock));

    let lookups = (0..20).map(|_| {
        let jwks = Arc::clone(&jwks);
        tokio::spawn(async move { jwks.keys_for(&header(Algorithm::RS256, Some("k1"))).await })
    });
    for result in futures_util::future::join_all(lookups).await {
        let err = result.unwrap().unwrap_err();
        assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
    }
    assert_eq!(jwks.fetch_count(), 1);
}

#[tokio::test]
async fn garbage_keys_are_skipped() {
    let good = rsa_key("good");
    let ec = ec_key("ec");
    let body = serde_json::json!({ "keys": [
        42,
        "not a key",
        { "kid": 5, "kty": "RSA" },
        { "kty": "RSA", "kid": "bad-b64", "n": "!!!", "e": "AQAB" },
        { "kty": "EC", "kid": "bad-ec", "crv": "P-256", "x": "AAAA", "y": "AAAA" },
        { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AAAA", "y": "AAAA" },
        { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
        { "kty": "XYZ", "kid": "unknown-kty" },
        good.jwk,
        ec.jwk,
    ]});
    let server = JwksServer::start(body.to_string()).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);

    assert_eq!(
        jwks.keys_for(&header(Algorithm::RS256, Some("good")))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        jwks.keys_for(&header(Algorithm::ES256, Some("ec")))
            .await
            .unwrap()
            .len(),
        1
    );
    for (alg, kid) in [
        (Algorithm::RS256, "bad-b64"),
        (Algorithm::ES256, "bad-ec"),
        (Algorithm::HS256, "hmac"),
        (Algorithm::RS256, "unknown-kty"),
    ] {
        let err = jwks.keys_for(&header(alg, Some(kid))).await.unwrap_err();
        assert!(is_no_matching_key(&err), "{kid}: {err:?}");
    }
}

#[tokio::test]
async fn keys_not_for_signatures_are_skipped() {
    let key = rsa_key("k");
    let mut enc = key.jwk.clone();
    enc["kid"] = "enc".into();
    enc["use"] = "enc".into();
    let mut ops = key.jwk.clone();
    ops["kid"] = "ops".into();
    ops["key_ops"] = serde_json::json!(["encrypt"]);
    let mut verify_ops = key.jwk.clone();
    verify_ops["kid"] = "verify-ops".into();
    verify_ops["key_ops"] = serde_json::json!(["verify"]);
    let body = serde_json::json!({ "keys": [enc, ops, verify_ops] }).to_string();
    let server = JwksServer::start(body).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);

    jwks.keys_for(&header(Algorithm::RS256, Some("verify-ops")))
        .await
        .unwrap();
    for kid in ["enc", "ops"] {
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some(kid)))
            .await
            .unwrap_err();
        assert!(is_no_matching_key(&err), "{kid}: {err:?}");
    }
}

#[tokio::test]
async fn header_without_kid_gets_keys_fitting_its_alg() {
    let rsa = rsa_key("rsa");
    let ec = ec_key("ec");
    let server = JwksServer::start(jwks_json(&[&rsa])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);

    // One key, no kid in the header.
    assert_eq!(
        jwks.keys_for(&header(Algorithm::RS256, None))
            .await
            .unwrap()
            .len(),
        1
    );
    // PS256 also fits an RSA key without `alg`... but this JWK says RS256.
    let err = jwks
        .keys_for(&header(Algorithm::PS256, None))
        .await
        .unwrap_err();
    assert!(is_no_matching_key(&err));

    // Several keys: only those fitting the alg are candidates.
    let mut rsa_no_alg = other_rsa_key("rsa2").jwk;
    rsa_no_alg.as_object_mut().unwrap().remove("alg");
    server.set_body(serde_json::json!({ "keys": [rsa.jwk, ec.jwk, rsa_no_alg] }).to_string());
    clock.advance(INTERVAL);
    assert_eq!(
        jwks.keys_for(&header(Algorithm::ES256, None))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        jwks.keys_for(&header(Algorithm::RS256, None))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        jwks.keys_for(&header(Algorithm::PS384, None))
            .await
            .unwrap()
            .len(),
        1,
        "only the RSA key without alg fits PS384"
    );
    // ES384 needs a P-384 key.
    let err = jwks
        .keys_for(&header(Algorithm::ES384, None))
        .await
        .unwrap_err();
    assert!(is_no_matching_key(&err));
}

#[tokio::test]
async fn kid_with_wrong_key_type_does_not_match() {
    let ec = ec_key("k");
    let server = JwksServer::start(jwks_json(&[&ec])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);
    for alg in [Algorithm::RS256, Algorithm::HS256, Algorithm::EdDSA] {
        let err = jwks.keys_for(&header(alg, Some("k"))).await.unwrap_err();
        assert!(is_no_matching_key(&err), "{alg:?}: {err:?}");
    }
    jwks.keys_for(&header(Algorithm::ES256, Some("k")))
        .await
        .unwrap();
}

#[tokio::test]
async fn ed25519_keys_are_supported() {
    let ed = ed_key("ed");
    let server = JwksServer::start(jwks_json(&[&ed])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);
    assert_eq!(
        jwks.keys_for(&header(Algorithm::EdDSA, Some("ed")))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn fetch_failure_with_empty_cache_is_provider_unavailable_and_retried() {
    let key = rsa_key("k1");
    let server = JwksServer::start("down").await;
    server.set_status(500);
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);

    let err = jwks
        .keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
    assert!(err.is_transient());

    // Within the interval the failure is reported again without a fetch,
    // even once the provider is back.
    server.set_status(200);
    server.set_body(jwks_json(&[&key]));
    let err = jwks
        .keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
    assert_eq!(jwks.fetch_count(), 1);

    // After the interval the next lookup tries again.
    clock.advance(INTERVAL);
    jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();
    assert_eq!(jwks.fetch_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_nothing_cached_costs_one_fetch_per_interval() {
    let key = rsa_key("k1");
    let server = JwksServer::start("down").await;
    server.set_status(503);
    let clock = ManualClock::new(1_700_000_000);
    let jwks = Arc::new(cache(&server, &clock));
    let lookup = |kid: String| {
        let jwks = Arc::clone(&jwks);
        async move { jwks.keys_for(&header(Algorithm::RS256, Some(&kid))).await }
    };
    let assert_unavailable = |result: Result<Vec<Arc<DecodingKey>>, TokenError>| {
        let err = result.unwrap_err();
        assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
    };

    // A flood of tokens, one after another and all at once.
    for i in 0..200 {
        assert_unavailable(lookup(format!("kid-{i}")).await);
    }
    let burst = (0..50).map(|i| tokio::spawn(lookup(format!("burst-{i}"))));
    for result in futures_util::future::join_all(burst).await {
        assert_unavailable(result.unwrap());
    }
    assert_eq!(jwks.fetch_count(), 1);
    assert_eq!(server.requests(), 1);

    // Just before the interval ends: still no new fetch.
    clock.advance(INTERVAL - Duration::from_secs(1));
    assert_unavailable(lookup("k1".into()).await);
    assert_eq!(server.requests(), 1);

    // After it: concurrent lookups share exactly one new attempt.
    clock.advance(Duration::from_secs(1));
    server.set_delay(Duration::from_millis(200));
    let burst = (0..50).map(|i| tokio::spawn(lookup(format!("later-{i}"))));
    for result in futures_util::future::join_all(burst).await {
        assert_unavailable(result.unwrap());
    }
    assert_eq!(server.requests(), 2);

    // The provider recovers: the first lookup after the interval succeeds.
    server.set_delay(Duration::ZERO);
    server.set_status(200);
    server.set_body(jwks_json(&[&key]));
    clock.advance(INTERVAL);
    assert_eq!(lookup("k1".into()).await.unwrap().len(), 1);
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn connection_failure_is_provider_unavailable() {
    // Bind then drop a listener to get a port nobody listens on.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let jwks = JwksCache::new(
        Url::parse(&format!("http://{addr}/jwks")).unwrap(),
        http_client(),
        Arc::new(ManualClock::new(1_700_000_000)),
        INTERVAL,
    );
    let err = jwks
        .keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::ProviderUnavailable(_)), "{err:?}");
}

#[tokio::test]
async fn unparseable_document_is_invalid_response() {
    for body in ["not json", "[]", "{}", r#"{"keys": {}}"#] {
        let server = JwksServer::start(body).await;
        let clock = ManualClock::new(1_700_000_000);
        let jwks = cache(&server, &clock);
        let err = jwks
            .keys_for(&header(Algorithm::RS256, Some("k1")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TokenError::InvalidResponse(_)),
            "{body}: {err:?}"
        );
    }
}

#[tokio::test]
async fn failed_refetch_keeps_cached_keys() {
    let key = rsa_key("k1");
    let server = JwksServer::start(jwks_json(&[&key])).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);
    jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();

    server.set_status(503);
    let err = jwks
        .keys_for(&header(Algorithm::RS256, Some("k2")))
        .await
        .unwrap_err();
    assert!(is_no_matching_key(&err), "{err:?}");
    clock.advance(INTERVAL);
    server.set_status(200);
    server.set_body("garbage");
    let err = jwks
        .keys_for(&header(Algorithm::RS256, Some("k2")))
        .await
        .unwrap_err();
    assert!(is_no_matching_key(&err), "{err:?}");
    assert_eq!(jwks.fetch_count(), 3);

    jwks.keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap();
}

#[tokio::test]
async fn oversized_document_is_rejected() {
    let huge = format!(r#"{{"keys": [], "pad": "{}"}}"#, "a".repeat(MAX_JWKS_BYTES));
    let server = JwksServer::start(huge).await;
    let clock = ManualClock::new(1_700_000_000);
    let jwks = cache(&server, &clock);
    let err = jwks
        .keys_for(&header(Algorithm::RS256, Some("k1")))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse(_)), "{err:?}");
}
