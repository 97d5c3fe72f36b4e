//! The HTTP server: the router, start-up and shutdown, and the
//! [`RunningIdp`] handle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{Config, DevIdpBuilder};
use crate::counters::{CounterCells, Counters};
use crate::endpoints;
use crate::faults::Faults;
use crate::jwt;
use crate::keys::KeyRing;
use crate::state::Idp;
use crate::store::Store;

/// Handle to a running dev IdP. Cheap to clone; all clones control the same
/// server.
#[derive(Clone)]
pub struct RunningIdp {
    inner: Arc<Inner>,
}

struct Inner {
    idp: Arc<Idp>,
    addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RunningIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningIdp")
            .field("issuer", &self.inner.idp.issuer)
            .finish_non_exhaustive()
    }
}

/// Starting: the builder's last step lives here, next to the server it starts.
impl DevIdpBuilder {
    /// Starts serving on `127.0.0.1` on a random free port.
    pub async fn start(self) -> std::io::Result<RunningIdp> {
        self.start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts serving on `addr`.
    pub async fn start_on(self, addr: SocketAddr) -> std::io::Result<RunningIdp> {
        start(self.config, addr).await
    }
}

pub(crate) async fn start(config: Config, addr: SocketAddr) -> std::io::Result<RunningIdp> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let alg = config.signing_alg;
    let keys = tokio::task::spawn_blocking(move || KeyRing::new(alg))
        .await
        .map_err(std::io::Error::other)?;
    let idp = Arc::new(Idp {
        config,
        issuer: format!("http://{addr}"),
        keys: Mutex::new(keys),
        store: Mutex::new(Store::default()),
        faults: Faults::default(),
        counters: CounterCells::default(),
        dpop_replay: Default::default(),
        dpop_nonce: Mutex::new(crate::random_token(16)),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let app = router(idp.clone());
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "dev IdP server stopped with an error");
        }
    });
    tracing::debug!(issuer = %idp.issuer, "dev IdP started");
    Ok(RunningIdp {
        inner: Arc::new(Inner {
            idp,
            addr,
            stop: Mutex::new(Some(stop_tx)),
            task: Mutex::new(Some(task)),
        }),
    })
}

fn router(idp: Arc<Idp>) -> Router {
    use endpoints::*;
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::discovery),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::oauth_metadata),
        )
        .route("/jwks", get(discovery::jwks))
        .route("/authorize", get(authorize::authorize))
        .route("/token", post(token::token))
        .route("/par", post(par::par))
        .route(
            "/userinfo",
            get(userinfo::userinfo).post(userinfo::userinfo),
        )
        .route("/revoke", post(revoke::revoke))
        .route("/introspect", post(introspect::introspect))
        .route(
            "/endsession",
            get(end_session::end_session).post(end_session::end_session),
        )
        .with_state(idp)
}

impl RunningIdp {
    fn idp(&self) -> &Idp {
        &self.inner.idp
    }

    /// The token endpoint's current DPoP nonce (required with
    /// [`Faults::set_dpop_nonce`]).
    pub fn dpop_nonce(&self) -> String {
        self.idp().dpop_nonce()
    }

    /// Replaces the token endpoint's DPoP nonce (proofs with the old one
    /// are then answered `use_dpop_nonce`).
    pub fn rotate_dpop_nonce(&self) -> String {
        self.idp().rotate_dpop_nonce()
    }

    /// The `cnf.jkt` an access token this IdP issued is bound to (`None`:
    /// unknown, inactive or a bearer token).
    pub fn token_jkt(&self, token: &str) -> Option<String> {
        let idp = self.idp();
        let store = idp.store();
        store
            .active_access(token, idp.now())
            .and_then(|claims| claims.pointer("/cnf/jkt"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }

    /// The issuer as a URL (`http://127.0.0.1:PORT/` once parsed).
    pub fn url(&self) -> url::Url {
        url::Url::parse(&self.idp().issuer).expect("the issuer is a valid URL")
    }

    /// The exact `issuer` string of the discovery document
    /// (`http://127.0.0.1:PORT`, no trailing slash).
    pub fn issuer(&self) -> String {
        self.idp().issuer.clone()
    }

    /// The socket address the IdP listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        self.idp().counters.snapshot()
    }

    /// Runtime fault injection.
    pub fn faults(&self) -> &Faults {
        &self.idp().faults
    }

    /// Signs with a freshly generated key and `kid` from now on; the JWKS
    /// publishes the new key and keeps the previous one.
    pub fn rotate_keys(&self) {
        self.idp().keys().rotate(true);
    }

    /// Like [`rotate_keys`](Self::rotate_keys) but the JWKS then publishes
    /// only the new key.
    pub fn rotate_keys_drop_old(&self) {
        self.idp().keys().rotate(false);
    }

    /// A valid OIDC back-channel logout token for `audience` (a client id),
    /// with `sub` and/or `sid`, signed with the current key.
    pub fn sign_logout_token(
        &self,
        sub: Option<&str>,
        sid: Option<&str>,
        audience: &str,
    ) -> String {
        jwt::logout_token(
            &self.idp().current_key(),
            &self.idp().issuer,
            sub,
            sid,
            audience,
            self.idp().now(),
        )
    }

    /// Signs arbitrary claims with the current key (header `alg`, `kid`,
    /// `typ: JWT`), e.g. for negative tests.
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> String {
        jwt::sign(&self.idp().current_key(), "JWT", claims)
    }

    /// Stops serving: in-flight requests finish (for at most 5 s), then the
    /// listener is closed and further connections are refused.
    pub async fn shutdown(self) {
        let stop = self
            .inner
            .stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}
