//! Client credentials tokens against the dev IdP over real HTTP: caching,
//! single flight, renewal ahead of expiry, per-parameter tokens, failures.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oidc_bff_dev_idp::{DevIdp, RunningIdp};
use oidc_bff_tokens::{
    AccessToken, ClientCredentialsRequest, ErrorKind, ManualClock, OidcConfig, TokenEngine,
    TokenError,
};

struct Setup {
    idp: RunningIdp,
    client: TokenEngine,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let idp = DevIdp::builder()
        .access_token_lifetime(Duration::from_secs(300))
        .start()
        .await
        .expect("dev idp");
    let clock = ManualClock::starting_now();
    let client = client_for(&idp, Some("secret"), &clock);
    Setup { idp, client, clock }
}

fn client_for(idp: &RunningIdp, secret: Option<&str>, clock: &ManualClock) -> TokenEngine {
    let mut config = OidcConfig::builder(idp.url().as_str(), "bff")
        .refresh_margin(Duration::from_secs(60))
        .timeouts(Duration::from_secs(2), Duration::from_secs(5));
    match secret {
        Some(secret) => config = config.client_secret(secret),
        // A client without a secret must say it is public on purpose.
        None => config = config.public_client(true),
    }
    TokenEngine::builder(config.build().expect("config"))
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("client")
}

fn grants(idp: &RunningIdp) -> u64 {
    idp.counters().client_credentials_grants
}

fn claims(token: &AccessToken) -> serde_json::Value {
    let payload = token.secret().split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

#[tokio::test]
async fn one_token_request_for_100_concurrent_first_calls() {
    let s = setup().await;
    // Keep the token endpoint busy so that every caller arrives mid-flight.
    s.idp
        .faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    let request = ClientCredentialsRequest::default().scope("api");
    let calls = (0..100).map(|_| {
        let client = s.client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.client_access_token(&request).await })
    });
    let tokens: Vec<AccessToken> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.expect("task").expect("token"))
        .collect();
    assert_eq!(grants(&s.idp), 1, "exactly one token request");
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "everyone got the same token"
    );

    // Later calls are served from the cache.
    s.idp.faults().clear();
    for _ in 0..10 {
        assert_eq!(
            s.client.client_access_token(&request).await.unwrap(),
            tokens[0]
        );
    }
    assert_eq!(grants(&s.idp), 1);
    let claims = claims(&tokens[0]);
    assert_eq!(claims["sub"], "bff", "a client token is about the client");
    assert_eq!(claims["scope"], "api");
}

#[tokio::test]
async fn renewed_ahead_of_expiry_and_after_it() {
    let s = setup().await;
    let request = ClientCredentialsRequest::default();
    let first = s.client.client_access_token(&request).await.unwrap();

    // 300 s lifetime, 60 s margin: renewal starts at 240 s.
    s.clock.advance(Duration::from_secs(235));
    assert_eq!(s.client.client_access_token(&request).await.unwrap(), first);
    assert_eq!(grants(&s.idp), 1);

    s.clock.advance(Duration::from_secs(10));
    let second = s.client.client_access_token(&request).await.unwrap();
    assert_ne!(second, first, "renewed within the margin");
    assert_eq!(grants(&s.idp), 2);
    assert_eq!(
        s.client.client_access_token(&request).await.unwrap(),
        second
    );
    assert_eq!(grants(&s.idp), 2);

    // Long after expiry: a new token again.
    s.clock.advance(Duration::from_secs(3600));
    let third = s.client.client_access_token(&request).await.unwrap();
    assert_ne!(third, second);
    assert_eq!(grants(&s.idp), 3);
}

#[tokio::test]
async fn separate_tokens_for_different_scopes_and_resources() {
    let s = setup().await;
    let requests = [
        ClientCredentialsRequest::default(),
        ClientCredentialsRequest::default().scope("read"),
        ClientCredentialsRequest::default().scope("write"),
        ClientCredentialsRequest::default().resource("urn:api:one"),
        ClientCredentialsRequest::default()
            .scope("read")
            .resource("urn:api:two"),
    ];
    let mut tokens = Vec::new();
    for request in &requests {
        tokens.push(s.client.client_access_token(request).await.unwrap());
    }
    assert_eq!(grants(&s.idp), 5, "one token per parameter set");
    for (i, a) in tokens.iter().enumerate() {
        for b in &tokens[i + 1..] {
            assert_ne!(a, b, "tokens are never shared across parameters");
        }
    }
    // Each token was issued for what it is cached under.
    assert_eq!(claims(&tokens[1])["scope"], "read");
    assert_eq!(claims(&tokens[2])["scope"], "write");
    assert_eq!(claims(&tokens[3])["aud"], "urn:api:one");
    assert_eq!(claims(&tokens[4])["aud"], "urn:api:two");
    assert_eq!(claims(&tokens[4])["scope"], "read");

    // And each is cached under its own key.
    for (request, token) in requests.iter().zip(&tokens) {
        assert_eq!(&s.client.client_access_token(request).await.unwrap(), token);
    }
    assert_eq!(grants(&s.idp), 5);
}

#[tokio::test]
async fn failures_are_not_cached() {
    let s = setup().await;
    let request = ClientCredentialsRequest::default();
    s.idp.faults().set_token_status(Some(503));
    let err = s.client.client_access_token(&request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(grants(&s.idp), 0);

    s.idp.faults().clear();
    let token = s.client.client_access_token(&request).await.unwrap();
    assert_eq!(grants(&s.idp), 1, "the next call tried again");
    assert_eq!(s.client.client_access_token(&request).await.unwrap(), token);
}

#[tokio::test]
async fn a_refused_grant_is_unauthorized_and_never_leaks_the_secret() {
    let s = setup().await;
    let wrong = client_for(&s.idp, Some("not-the-secret"), &s.clock);
    let err = wrong
        .client_access_token(&ClientCredentialsRequest::default())
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("not-the-secret"));

    let public = client_for(&s.idp, None, &s.clock);
    let err = public
        .client_access_token(&ClientCredentialsRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Config(_)), "{err:?}");
    assert_eq!(
        s.idp.counters().token_errors,
        1,
        "the public client sent nothing"
    );
}

#[tokio::test]
async fn a_failed_renewal_keeps_serving_the_still_valid_token() {
    let s = setup().await;
    let request = ClientCredentialsRequest::default();
    let first = s.client.client_access_token(&request).await.unwrap();
    s.clock.advance(Duration::from_secs(250)); // within the margin, not expired
    s.idp.faults().set_token_status(Some(500));
    assert_eq!(s.client.client_access_token(&request).await.unwrap(), first);

    s.idp.faults().clear();
    let second = s.client.client_access_token(&request).await.unwrap();
    assert_ne!(second, first);

    // Expired and the provider is down: an error, not the dead token.
    s.clock.advance(Duration::from_secs(400));
    s.idp.faults().set_token_status(Some(500));
    let err = s.client.client_access_token(&request).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn a_caller_that_goes_away_does_not_cut_the_request() {
    let s = setup().await;
    s.idp
        .faults()
        .set_token_delay(Some(Duration::from_millis(300)));
    let request = ClientCredentialsRequest::default();
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        s.client.client_access_token(&request),
    )
    .await;
    assert!(gave_up.is_err(), "the caller went away mid-flight");
    // The next caller joins the request still running (or finds its result).
    let token = s.client.client_access_token(&request).await.unwrap();
    assert_eq!(grants(&s.idp), 1);
    assert_eq!(s.client.client_access_token(&request).await.unwrap(), token);
}

#[tokio::test]
async fn renewing_a_rejected_token_happens_once_for_all_callers() {
    let s = setup().await;
    let request = ClientCredentialsRequest::default().scope("api");
    let rejected = s.client.client_access_token(&request).await.unwrap();
    s.idp
        .faults()
        .set_token_delay(Some(Duration::from_millis(200)));
    let calls = (0..20).map(|_| {
        let client = s.client.clone();
        let request = request.clone();
        let rejected = rejected.clone();
        tokio::spawn(async move { client.renew_client_access_token(&request, &rejected).await })
    });
    let renewed: Vec<AccessToken> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|joined| joined.expect("task").expect("token"))
        .collect();
    assert_eq!(grants(&s.idp), 2, "one renewal for all callers");
    assert!(renewed.iter().all(|t| t == &renewed[0] && t != &rejected));

    // A late caller with the old token gets the new one without a request.
    s.idp.faults().clear();
    let late = s
        .client
        .renew_client_access_token(&request, &rejected)
        .await
        .unwrap();
    assert_eq!(late, renewed[0]);
    assert_eq!(grants(&s.idp), 2);
    assert_eq!(
        s.client.client_access_token(&request).await.unwrap(),
        renewed[0]
    );
}

#[tokio::test]
async fn a_configured_token_endpoint_is_used_and_checked() {
    let s = setup().await;
    let endpoint = url::Url::parse(&format!("{}/token", s.idp.issuer())).unwrap();
    let request = ClientCredentialsRequest::default().token_endpoint(endpoint);
    s.client.client_access_token(&request).await.unwrap();
    assert_eq!(grants(&s.idp), 1);

    // Somewhere else: it is really used (nothing listens there).
    let elsewhere = ClientCredentialsRequest::default()
        .token_endpoint(url::Url::parse("http://127.0.0.1:9/token").unwrap());
    let err = s.client.client_access_token(&elsewhere).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");

    // The secret never goes over plain http to another host.
    let plain = ClientCredentialsRequest::default()
        .token_endpoint(url::Url::parse("http://idp.example.com/token").unwrap());
    let err = s.client.client_access_token(&plain).await.unwrap_err();
    assert!(matches!(err, TokenError::Config(_)), "{err:?}");
    assert_eq!(grants(&s.idp), 1);
}
