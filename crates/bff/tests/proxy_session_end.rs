//! Proxied WebSockets end with their session, and per-route method
//! allow-lists: over real HTTP against the dev IdP, a real WebSocket
//! upstream and, for the cross-instance case, a real Redis shared by two
//! BFF instances.

mod common;

use std::time::Duration;

use common::proxy_support::{self, ProxyBff};
use futures_util::{SinkExt as _, StreamExt as _};
use oidc_bff_tokens::SessionId;
use reqwest::Method;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Guards against a hang: a socket that is never closed fails the test.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// A WebSocket through the BFF at `path`, with the session cookie; checked
/// to echo once.
async fn open(t: &ProxyBff, path: &str, session: &str) -> Socket {
    let mut request = format!("ws://{}{path}", t.addr)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("cookie", format!("__Host-bff={session}").parse().unwrap());
    headers.insert("x-csrf", "1".parse().unwrap());
    let (mut ws, response) = within("handshake", tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("ping")).await.unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("ping"));
    ws
}

/// Reads until the close frame; returns its code and reason.
async fn closed(ws: &mut Socket) -> (u16, String) {
    within("the close frame", async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Ok(Message::Close(None)) => panic!("a close frame without a code"),
                Ok(_) => {}
                Err(err) => panic!("the socket ended without a close frame: {err}"),
            }
        }
        panic!("the socket ended without a close frame");
    })
    .await
}

fn session_id(session: &str) -> SessionId {
    SessionId::parse(session).unwrap()
}

#[tokio::test]
async fn a_websocket_closes_with_4401_on_local_logout() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    // `/ws` re-checks every 2 s; a sign-out here wakes it at once.
    let mut ws = open(&t, "/ws/echo", &session).await;
    let mut other = open(&t, "/ws-fast/echo", &session).await;
    let bystander_session = t.sign_in().await;
    let mut bystander = open(&t, "/ws/echo", &bystander_session).await;

    let logout_id = t
        .bff
        .engine()
        .load_session(&session_id(&session))
        .await
        .unwrap()
        .unwrap()
        .record
        .logout_id
        .clone();
    let response = t
        .request(
            Method::GET,
            &format!("/bff/logout?sid={logout_id}"),
            Some(&session),
            false,
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_redirection(), "{}", response.status());

    for ws in [&mut ws, &mut other] {
        let (code, reason) = closed(ws).await;
        assert_eq!(code, 4401);
        assert_eq!(reason, "session ended");
    }
    // Another session's socket stays open and working.
    bystander.send(Message::text("still here")).await.unwrap();
    let echoed = within("bystander echo", bystander.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("still here"));
}

#[tokio::test]
async fn a_websocket_closes_when_its_refresh_token_dies() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let mut ws = open(&t, "/ws-fast/echo", &session).await;

    // The token expires and the provider rejects the refresh: the socket's
    // own renewal attempt ends the session, nobody else calls the API.
    t.idp.faults().set_refresh_error(Some("invalid_grant"));
    t.clock.advance(Duration::from_secs(400));
    let (code, reason) = closed(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4401, "session ended"));
    assert!(
        t.bff
            .engine()
            .load_session(&session_id(&session))
            .await
            .unwrap()
            .is_none(),
        "the session ended"
    );
}

#[tokio::test]
async fn a_renewed_token_keeps_the_websocket_open() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let mut ws = open(&t, "/ws-expiring/echo", &session).await;
    let old = t.stored_token(&session).await;
    let before = t.idp.counters().refresh_grants;
    t.clock.advance(Duration::from_secs(400));
    // The socket renews the expired token itself and stays open.
    within("renewal", async {
        while t.stored_token(&session).await == old {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(t.idp.counters().refresh_grants, before + 1);
    ws.send(Message::text("after renewal")).await.unwrap();
    let echoed = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("after renewal"));
}

#[tokio::test]
async fn with_the_setting_a_token_expired_unrenewed_closes_with_4408() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let mut expiring = open(&t, "/ws-expiring/echo", &session).await;
    let mut default = open(&t, "/ws-fast/echo", &session).await;

    // The provider is down: the token cannot be renewed, the session lives.
    t.idp.faults().set_token_status(Some(503));
    t.clock.advance(Duration::from_secs(400));
    let (code, reason) = closed(&mut expiring).await;
    assert_eq!((code, reason.as_str()), (4408, "token expired"));
    assert!(
        t.bff
            .engine()
            .load_session(&session_id(&session))
            .await
            .unwrap()
            .is_some(),
        "the session lives on"
    );
    // Without the setting the socket stays open.
    default.send(Message::text("open")).await.unwrap();
    let echoed = within("echo", default.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("open"));
}

#[tokio::test]
async fn a_session_deleted_in_the_store_closes_its_socket_at_the_next_check() {
    // What a store without a change channel relies on: the periodic check.
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let mut ws = open(&t, "/ws-fast/echo", &session).await;
    t.bff
        .engine()
        .store()
        .delete(&session_id(&session))
        .await
        .unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4401, "session ended"));
    // After the close handshake the stream ends.
    within("the end", async { while ws.next().await.is_some() {} }).await;
}

#[tokio::test]
async fn methods_outside_the_allow_list_get_405_before_token_work() {
    let t = proxy_support::start().await;
    let session = t.sign_in().await;
    let hits = t.upstream.state.hits();

    for method in [Method::GET, Method::POST] {
        let response = t
            .request(method.clone(), "/readonly/x", Some(&session), true)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
    }
    assert_eq!(t.upstream.state.hits(), hits + 2);

    for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::HEAD] {
        let response = t
            .request(method.clone(), "/readonly/x", Some(&session), true)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "GET, POST", "{method}");
    }
    assert_eq!(
        t.upstream.state.hits(),
        hits + 2,
        "the upstream was not called"
    );

    // Anonymous: 405, not 401 (no session or token is looked at).
    let response = t
        .request(Method::DELETE, "/readonly/x", None, true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");

    // With an expired token and a rejecting provider, a refused method
    // neither refreshes nor ends the session.
    t.idp.faults().set_refresh_error(Some("invalid_grant"));
    t.clock.advance(Duration::from_secs(400));
    let before = t.idp.counters().refresh_grants;
    let response = t
        .request(Method::DELETE, "/readonly/x", Some(&session), true)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.headers().get("set-cookie").is_none());
    assert_eq!(t.idp.counters().refresh_grants, before);
    assert!(
        t.bff
            .engine()
            .load_session(&session_id(&session))
            .await
            .unwrap()
            .is_some(),
        "no refresh was attempted"
    );
}

/// Two BFF instances share one Redis: a back-channel logout processed by
/// the second closes the socket held by the first.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_websocket_closes_on_back_channel_logout_at_another_instance() {
    use std::sync::Arc;

    use oidc_bff::{Bff, OidcConfig};
    use oidc_bff_tokens::store::{KeyRing, RedisStore};
    use oidc_bff_tokens::{ManualClock, SessionStore};

    if !redis_available().await {
        return;
    }
    let prefix = format!(
        "oidc-bff-ws-{}-{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let keys = KeyRing::generate("ws");
    let clock = ManualClock::starting_now();
    let store = |clock: &ManualClock| {
        RedisStore::builder("redis://127.0.0.1:6379")
            .key_prefix(prefix.clone())
            .encryption(keys.clone())
            .clock(Arc::new(clock.clone()))
            .build()
    };
    let a_store: Arc<dyn SessionStore> = Arc::new(store(&clock).await.expect("redis"));
    let t = proxy_support::start_with_store(clock.clone(), Some(a_store)).await;

    // Instance B: same provider, same store, its own process state.
    let b_store: Arc<dyn SessionStore> = Arc::new(store(&clock).await.expect("redis"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_url = format!("http://{}", listener.local_addr().unwrap());
    let config = OidcConfig::builder(t.idp.url().as_str(), "bff")
        .client_secret("secret")
        .scopes(["openid", "profile", "offline_access"])
        .build()
        .unwrap();
    let b = Bff::builder(config)
        .public_url(&b_url)
        .clock(Arc::new(clock.clone()))
        .store(b_store)
        .build()
        .unwrap();
    let app = axum::Router::new().merge(b.routes()).layer(b.layer());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let session = t.sign_in().await;
    let mut ws = open(&t, "/ws-fast/echo", &session).await;
    let sid = t
        .bff
        .engine()
        .load_session(&session_id(&session))
        .await
        .unwrap()
        .unwrap()
        .record
        .sid
        .clone()
        .expect("the dev IdP sends a sid");
    let token = t.idp.sign_logout_token(Some("alice"), Some(&sid), "bff");
    let response = reqwest::Client::new()
        .post(format!("{b_url}/bff/backchannel"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (code, reason) = closed(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4401, "session ended"));
}

/// `true` when Redis answers; fails under `CI=true` when it does not.
#[cfg(feature = "redis")]
async fn redis_available() -> bool {
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect("127.0.0.1:6379"),
    )
    .await
    {
        Ok(Ok(_)) => true,
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("Redis at 127.0.0.1:6379 is required when CI=true")
        }
        _ => {
            eprintln!(
                "skipping: Redis at 127.0.0.1:6379 is not available; set CI=true to make this a failure"
            );
            false
        }
    }
}
