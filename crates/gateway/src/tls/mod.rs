//! HTTPS served by the gateway itself (`[server.tls]`): rustls with the
//! certificate and key reloaded when their files change, HTTP/2 or HTTP/1.1
//! chosen by ALPN, WebSocket upgrades over HTTP/1.1, and the same graceful
//! shutdown as the plain server.
//!
//! | file | holds |
//! |---|---|
//! | `certs.rs` | loading the PEM files (errors name `server.tls.cert` or `server.tls.key`), the swappable certificate, the reload task |
//! | `accept.rs` | the accept loop: TLS handshake, hyper's HTTP/1.1 + HTTP/2 server, `ConnectInfo`, graceful shutdown |
//!
//! ```no_run
//! # async fn run(app: axum::Router) -> Result<(), oidc_bff_gateway::GatewayError> {
//! use oidc_bff_gateway::config::TlsConfig;
//! use oidc_bff_gateway::tls::TlsServer;
//!
//! let tls = TlsServer::new(&TlsConfig::new("cert.pem", "key.pem"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! tls.serve(listener, app, oidc_bff_gateway::serve::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use tokio_rustls::TlsAcceptor;
use url::Url;

use crate::GatewayError;
use crate::config::TlsConfig;

mod accept;
mod certs;

pub(crate) use certs::load as load_certified_key;

/// A TLS server: the acceptor with its certificate, and (with `reload`)
/// the task that reloads the certificate, stopped when this is dropped.
pub struct TlsServer {
    acceptor: TlsAcceptor,
    reload: Option<tokio::task::JoinHandle<()>>,
}

impl TlsServer {
    /// Loads the certificate and key of `tls` and, when `tls.reload` is
    /// set, starts watching their files (call it within a Tokio runtime).
    /// A file that is missing, not PEM, or a key that does not match the
    /// certificate is an error naming `server.tls.cert` or `server.tls.key`.
    pub fn new(tls: &TlsConfig) -> Result<Self, GatewayError> {
        let first =
            certs::load(tls).map_err(|problem| GatewayError::Startup(problem.to_string()))?;
        let resolver = Arc::new(certs::Resolver::new(first));
        let mut config = rustls::ServerConfig::builder_with_provider(certs::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| GatewayError::Startup(format!("server.tls: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let reload = tls
            .reload
            .then(|| certs::spawn_reload(tls.clone(), resolver));
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            reload,
        })
    }

    /// Serves `service` over TLS on `listener` until `shutdown` completes,
    /// then stops accepting and waits for the open connections to finish
    /// their requests (HTTP/2 connections get a GOAWAY, idle HTTP/1.1 ones
    /// are closed). Bound that wait from outside, as
    /// [`Gateway::serve`](crate::Gateway::serve) does with
    /// `server.shutdown_timeout`.
    ///
    /// Each request carries `ConnectInfo<SocketAddr>` with the TCP peer, as
    /// with axum's `into_make_service_with_connect_info`.
    pub async fn serve<S, B, F>(
        self,
        listener: tokio::net::TcpListener,
        service: S,
        shutdown: F,
    ) -> std::io::Result<()>
    where
        S: tower::Service<Request<Incoming>, Response = http::Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: Future<Output = ()> + Send + 'static,
    {
        accept::serve(listener, self.acceptor.clone(), service, shutdown).await
    }
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("reload", &self.reload.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(task) = self.reload.take() {
            task.abort();
        }
    }
}

/// `[server.tls] redirect_http`: answers every plain-HTTP request with a
/// permanent redirect (308) to the same path and query at `public_url`.
pub fn redirect_router(public_url: &Url) -> Router {
    let origin = public_url.origin().ascii_serialization();
    Router::new().fallback(move |request: Request| {
        let origin = origin.clone();
        async move { redirect(&origin, &request) }
    })
}

fn redirect(origin: &str, request: &Request) -> Response {
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    match HeaderValue::try_from(format!("{origin}{target}")) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Binds `addr` and serves [`redirect_router`] there; the task.
pub(crate) async fn spawn_redirect(
    addr: SocketAddr,
    public_url: &Url,
) -> Result<tokio::task::JoinHandle<()>, GatewayError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        GatewayError::Startup(format!(
            "server.tls.redirect_http: cannot listen on {addr}: {e}"
        ))
    })?;
    let app = redirect_router(public_url);
    tracing::info!(%addr, "redirecting plain HTTP on {addr} to {}", public_url.origin().ascii_serialization());
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "the HTTP redirect listener failed");
        }
    }))
}
