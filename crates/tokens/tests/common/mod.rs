//! Helpers for the engine's integration tests: a dev IdP sharing a
//! [`ManualClock`] with the engine, and a sign-in without a browser.
#![allow(dead_code)]

pub mod servers;
pub mod stores;

use std::sync::Arc;
use std::time::Duration;

use oidc_bff_dev_idp::{DevIdp, DevIdpBuilder, RunningIdp};
use oidc_bff_tokens::login::CallbackParams;
use oidc_bff_tokens::{Clock, ManualClock, OidcConfig, SessionId, SessionStore, TokenEngine};

pub const REDIRECT_URI: &str = "http://127.0.0.1:1/callback";

/// A dev IdP whose clock is `clock`.
pub async fn idp(builder: DevIdpBuilder, clock: &ManualClock) -> RunningIdp {
    let c = clock.clone();
    builder
        .clock(move || c.now_unix())
        .start()
        .await
        .expect("dev idp")
}

pub fn default_idp() -> DevIdpBuilder {
    DevIdp::builder().access_token_lifetime(Duration::from_secs(300))
}

/// An engine for `idp` with the given store and clock.
pub fn client(idp: &RunningIdp, store: Arc<dyn SessionStore>, clock: &ManualClock) -> TokenEngine {
    let config = OidcConfig::builder(idp.url().as_str(), "bff")
        .client_secret("secret")
        .timeouts(Duration::from_secs(2), Duration::from_secs(5))
        .build()
        .expect("config");
    TokenEngine::builder(config)
        .store(store)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("client")
}

/// Signs the dev IdP's user in through `client`; returns the new session id.
pub async fn sign_in(client: &TokenEngine) -> SessionId {
    let start = client
        .begin_login(REDIRECT_URI, Some("/"))
        .await
        .expect("begin");
    let params = authorize(&start).await;
    client
        .complete_login(&start.binding, &params)
        .await
        .expect("complete")
        .session_id
}

/// Follows a started sign-in to the dev IdP and back: the callback's parameters.
pub async fn authorize(start: &oidc_bff_tokens::login::LoginStart) -> CallbackParams {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("http");
    let response = http
        .get(start.authorization_url.clone())
        .send()
        .await
        .expect("authorize");
    let location = response
        .headers()
        .get("location")
        .expect("redirect")
        .to_str()
        .expect("ascii");
    let callback = url::Url::parse(location).expect("url");
    let mut params = CallbackParams::default();
    for (k, v) in callback.query_pairs() {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "code" => params.code = v,
            "state" => params.state = v,
            "iss" => params.iss = v,
            _ => {}
        }
    }
    params
}
