//! `private_key_jwt` client authentication (RFC 7523) and pushed
//! authorization requests (RFC 9126), against the dev IdP over real HTTP:
//! sign-in, refresh, revocation at logout and client credentials with RSA
//! and EC keys read from PEM files; a key the provider does not know is
//! refused; PAR on by configuration and forced by discovery, the browser
//! URL carrying only `client_id` and `request_uri`; PAR failures as clear
//! errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{REDIRECT_URI, default_idp, idp, sign_in};
use oidc_bff_dev_idp::RunningIdp;
use oidc_bff_tokens::{
    ClientAssertionAlg, ClientAuthMethod, ClientCredentialsRequest, ClientKey, ErrorKind,
    ManualClock, MemoryStore, OidcConfig, OidcConfigBuilder, TokenEngine, TokenError,
    UserTokenRequest,
};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Rsa,
    Ec,
}

/// A fresh private key as a PKCS#8 PEM document (test-only key material).
fn pem(kind: Kind) -> String {
    let der = match kind {
        Kind::Rsa => RsaKeyPair::generate(KeySize::Rsa2048)
            .unwrap()
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec(),
        Kind::Ec => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap()
                .as_ref()
                .to_vec()
        }
    };
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// A key file in a temporary directory (kept alive by the returned guard).
fn key_file(pem: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client-key.pem");
    std::fs::write(&path, pem).unwrap();
    (dir, path)
}

/// The public JWK of `pem` as the engine will name it (`kid` = thumbprint
/// unless given).
fn public_jwk(pem: &str, kid: Option<&str>, alg: Option<ClientAssertionAlg>) -> serde_json::Value {
    let key = ClientKey::from_pem(pem.as_bytes()).unwrap();
    let kid = kid.unwrap_or(key.thumbprint()).to_owned();
    key.public_jwk(&kid, alg.unwrap_or(key.default_alg()))
}

fn build_engine(config: OidcConfigBuilder, clock: &ManualClock) -> TokenEngine {
    let config = config
        .timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .build()
        .expect("config");
    TokenEngine::builder(config)
        .store(Arc::new(MemoryStore::with_clock(Arc::new(clock.clone()))))
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("engine")
}

struct Setup {
    idp: RunningIdp,
    engine: TokenEngine,
    _dir: tempfile::TempDir,
}

/// A dev IdP knowing only `bff`'s public key, and an engine signing with it.
async fn setup(kind: Kind, clock: &ManualClock) -> Setup {
    let pem = pem(kind);
    let idp = idp(
        default_idp().client_jwks("bff", public_jwk(&pem, None, None)),
        clock,
    )
    .await;
    let (dir, path) = key_file(&pem);
    let engine = build_engine(
        OidcConfig::builder(idp.url().as_str(), "bff")
            .client_auth(ClientAuthMethod::PrivateKeyJwt)
            .client_key_file(path),
        clock,
    );
    Setup {
        idp,
        engine,
        _dir: dir,
    }
}

#[tokio::test]
async fn sign_in_refresh_and_logout_with_private_key_jwt() {
    for kind in [Kind::Rsa, Kind::Ec] {
        let clock = ManualClock::starting_now();
        let Setup { idp, engine, _dir } = setup(kind, &clock).await;
        let session = sign_in(&engine).await;
        assert_eq!(idp.counters().code_grants, 1, "{kind:?}");
        engine
            .user_access_token(&session, None, &UserTokenRequest::default().force_renewal())
            .await
            .expect("refresh");
        assert_eq!(idp.counters().refresh_grants, 1, "{kind:?}");
        let out = engine.logout(&session, None).await.expect("logout");
        assert!(out.revoked, "{kind:?}: the refresh token is revoked");
        // Code exchange, refresh and revocation each brought a new assertion.
        assert_eq!(idp.counters().client_assertions, 3, "{kind:?}");
    }
}

#[tokio::test]
async fn client_credentials_with_private_key_jwt() {
    for kind in [Kind::Rsa, Kind::Ec] {
        let clock = ManualClock::starting_now();
        let Setup { idp, engine, _dir } = setup(kind, &clock).await;
        let request = ClientCredentialsRequest::default();
        let first = engine
            .client_access_token(&request)
            .await
            .expect("client token");
        engine
            .renew_client_access_token(&request, &first)
            .await
            .expect("renewed client token");
        assert_eq!(idp.counters().client_credentials_grants, 2, "{kind:?}");
        // Two grants, two assertions: a `jti` is never reused (the IdP
        // refuses a replay, see crates/dev-idp/tests/client_auth.rs).
        assert_eq!(idp.counters().client_assertions, 2, "{kind:?}");
    }
}

#[tokio::test]
async fn ps256_and_a_configured_key_id() {
    let clock = ManualClock::starting_now();
    let pem = pem(Kind::Rsa);
    let idp = idp(
        default_idp().client_jwks(
            "bff",
            public_jwk(&pem, Some("key-2026"), Some(ClientAssertionAlg::PS256)),
        ),
        &clock,
    )
    .await;
    let engine = build_engine(
        OidcConfig::builder(idp.url().as_str(), "bff")
            .client_key_pem(pem.as_bytes())
            .client_key_id("key-2026")
            .client_key_alg(ClientAssertionAlg::PS256),
        &clock,
    );
    // No method configured: a client key means private_key_jwt.
    engine
        .client_access_token(&ClientCredentialsRequest::default())
        .await
        .expect("PS256 assertion with the configured kid");
    assert_eq!(idp.counters().client_assertions, 1);
}

#[tokio::test]
async fn a_key_the_provider_does_not_know_is_refused() {
    let clock = ManualClock::starting_now();
    let idp = idp(
        default_idp().client_jwks("bff", public_jwk(&pem(Kind::Ec), Some("k1"), None)),
        &clock,
    )
    .await;
    // Another key under the registered kid: the signature does not verify.
    let engine = build_engine(
        OidcConfig::builder(idp.url().as_str(), "bff")
            .client_key_pem(pem(Kind::Ec).as_bytes())
            .client_key_id("k1"),
        &clock,
    );
    let err = engine
        .client_access_token(&ClientCredentialsRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::Provider { error, .. } if error.as_str() == "invalid_client"),
        "{err:?}"
    );
    assert_eq!(idp.counters().client_assertions, 0);
}

#[tokio::test]
async fn secret_methods_still_work_and_are_chosen_as_configured() {
    let clock = ManualClock::starting_now();
    let idp = idp(default_idp(), &clock).await;
    for method in [
        ClientAuthMethod::ClientSecretBasic,
        ClientAuthMethod::ClientSecretPost,
    ] {
        let engine = build_engine(
            OidcConfig::builder(idp.url().as_str(), "bff")
                .client_secret("secret")
                .client_auth(method),
            &clock,
        );
        let session = sign_in(&engine).await;
        engine
            .user_access_token(&session, None, &UserTokenRequest::default().force_renewal())
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
    }
    // private_key_jwt without a key is refused when the engine is built.
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .client_auth(ClientAuthMethod::PrivateKeyJwt)
        .build()
        .unwrap();
    let err = TokenEngine::builder(config).build().unwrap_err();
    assert!(err.to_string().contains("client_key"), "{err}");
}

/// The authorization URL's query parameter names.
fn query_names(url: &url::Url) -> Vec<String> {
    url.query_pairs().map(|(k, _)| k.into_owned()).collect()
}

#[tokio::test]
async fn par_on_by_configuration() {
    let clock = ManualClock::starting_now();
    // With a secret and with a key: PAR authenticates the client like the
    // token endpoint does.
    for key in [false, true] {
        let pem = pem(Kind::Ec);
        let builder = if key {
            default_idp().client_jwks("bff", public_jwk(&pem, None, None))
        } else {
            default_idp()
        };
        let idp = idp(builder, &clock).await;
        let config = OidcConfig::builder(idp.url().as_str(), "bff").par(true);
        let config = if key {
            config.client_key_pem(pem.as_bytes())
        } else {
            config.client_secret("secret")
        };
        let engine = build_engine(config, &clock);
        let start = engine.begin_login(REDIRECT_URI, Some("/")).await.unwrap();
        assert_eq!(
            query_names(&start.authorization_url),
            ["client_id", "request_uri"]
        );
        assert_eq!(idp.counters().pushed_authorization_requests, 1);
        let session = sign_in(&engine).await;
        assert!(engine.load_session(&session).await.unwrap().is_some());
        assert_eq!(idp.counters().pushed_authorization_requests, 2);
        assert_eq!(idp.counters().code_grants, 1);
    }
}

#[tokio::test]
async fn par_forced_by_discovery() {
    let clock = ManualClock::starting_now();
    let idp = idp(default_idp().require_par(true), &clock).await;
    // Not configured: the provider's `require_pushed_authorization_requests` wins.
    let engine = build_engine(
        OidcConfig::builder(idp.url().as_str(), "bff").client_secret("secret"),
        &clock,
    );
    let start = engine.begin_login(REDIRECT_URI, None).await.unwrap();
    assert_eq!(
        query_names(&start.authorization_url),
        ["client_id", "request_uri"]
    );
    sign_in(&engine).await;
    assert_eq!(idp.counters().code_grants, 1);

    // And a plain authorization request is indeed refused by that provider.
    let plain = engine_without_par_url(&idp);
    let status = reqwest::get(plain).await.unwrap().status();
    assert_eq!(status, 400);
}

/// An authorization URL with all parameters in the query.
fn engine_without_par_url(idp: &RunningIdp) -> url::Url {
    let mut url = idp.url().join("authorize").unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "bff")
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "openid")
        .append_pair("code_challenge", &"a".repeat(43))
        .append_pair("code_challenge_method", "S256");
    url
}

#[tokio::test]
async fn par_failures_are_clear_errors() {
    let clock = ManualClock::starting_now();
    let idp = idp(default_idp(), &clock).await;
    let engine = build_engine(
        OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .par(true),
        &clock,
    );
    idp.faults().set_par_answer(Some((
        400,
        r#"{"error":"invalid_request","error_description":"no"}"#,
    )));
    let err = engine.begin_login(REDIRECT_URI, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err:?}");
    assert!(
        err.to_string()
            .contains("refused the pushed authorization request: invalid_request"),
        "{err}"
    );
    idp.faults()
        .set_par_answer(Some((200, "<html>not json</html>")));
    let err = engine.begin_login(REDIRECT_URI, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err:?}");
    assert!(err.to_string().contains("request_uri"), "{err}");
    idp.faults().set_par_answer(Some((503, "down")));
    let err = engine.begin_login(REDIRECT_URI, None).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    idp.faults().set_par_answer(None);
    engine
        .begin_login(REDIRECT_URI, None)
        .await
        .expect("recovered");

    // A provider without a PAR endpoint, PAR configured: a discovery error.
    let engine = build_engine(
        OidcConfig::builder(idp.url().as_str(), "bff")
            .client_secret("secret")
            .par(true)
            .endpoint(
                "pushed_authorization_request_endpoint",
                idp.url().join("nowhere").unwrap().as_str(),
            ),
        &clock,
    );
    let err = engine.begin_login(REDIRECT_URI, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err:?}");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}
