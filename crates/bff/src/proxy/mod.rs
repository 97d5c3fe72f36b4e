//! The remote API proxy: a remote API mounted under a local path, with the
//! user's (or the BFF's own) access token attached.
//!
//! ```no_run
//! use oidc_bff::TokenPolicy;
//! use oidc_bff::proxy::RemoteApi;
//!
//! # async fn run(bff: oidc_bff::Bff) -> Result<(), Box<dyn std::error::Error>> {
//! let app: axum::Router = axum::Router::new()
//!     // /api/orders?x=1 → https://orders.internal/v1/orders?x=1 with the user's token
//!     .merge(bff.proxy(RemoteApi::new("/api", "https://orders.internal/v1/".parse()?)))
//!     // /catalog/... → the catalog with the user's token, or the BFF's own when anonymous
//!     .merge(bff.proxy(
//!         RemoteApi::new("/catalog", "https://catalog.internal/".parse()?)
//!             .token(TokenPolicy::UserOrClient)
//!             .client_token_request(Some("catalog.read".into()), None),
//!     ))
//!     .merge(bff.routes())
//!     .layer(bff.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(
//!     listener,
//!     app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await?;
//! # Ok(()) }
//! ```
//!
//! What every proxied request goes through:
//!
//! - **Anti-forgery**: the configured header (default `X-CSRF: 1`) is
//!   required; without it the answer is 401 and the upstream is never called.
//!   WebSocket handshakes may show the BFF's own `Origin` instead (browsers
//!   cannot add headers to them). Then a request the browser marks as
//!   cross-site (`Sec-Fetch-Site`, `Origin`) is refused with 403, whatever
//!   its method ([`crate::csrf`]). Failures are always 401/403/503 statuses,
//!   never a redirect to the provider.
//! - **Route rules** ([`Require`]): when the route has one, the signed-in
//!   user's claims must meet it — 401 when anonymous, 403 when not —
//!   before any token work.
//! - **Token** ([`TokenPolicy`](crate::TokenPolicy)): the same engine as the extractors —
//!   a token about to expire is refreshed first, concurrent requests share
//!   one refresh, a session whose refresh is rejected is ended (and its
//!   cookie cleared) and the request answered 401.
//! - **Path safety** (see [below](#path-safety)): only paths below the
//!   prefix reach the upstream, and only below its base path.
//! - **Header hygiene**: the browser's `Cookie`, `Authorization`, `DPoP`,
//!   `Proxy-*`, hop-by-hop and forwarding headers never reach the upstream;
//!   the upstream cannot set or clear the BFF's cookies (its `Set-Cookie`
//!   for them and any `Clear-Site-Data` are dropped).
//! - **Streaming**: bodies flow through in both directions as they arrive.
//!
//! Set `X-Forwarded-For` by serving with
//! [`into_make_service_with_connect_info::<SocketAddr>`](axum::Router::into_make_service_with_connect_info);
//! without it the header is omitted.
//!
//! # Path safety
//!
//! The rest of the path after the prefix is checked in every decoding
//! (raw, percent-decoded, decoded again for double encoding) and refused
//! with 400 if it holds a `.` or `..` segment, an encoded `/` or `\`, a
//! backslash, an empty segment (`//`), a control character or a malformed
//! encoding. Absolute-form targets are refused too. What passes is forwarded
//! exactly as sent.

mod cache;
mod forward;
mod headers;
pub mod methods;
pub(crate) mod path;
mod route;
pub mod rules;
mod service;
mod websocket;

use std::sync::Arc;

use axum::Router;

pub use route::RemoteApi;
#[allow(deprecated)]
pub use route::TokenRequirement;
pub use rules::Require;
pub use service::{ProxyFuture, ProxyService};

use crate::bff::Bff;
use forward::Proxy;

impl Bff {
    /// Routes `prefix` and `prefix/*` (every method) to the remote API, with
    /// the anti-forgery header enforced and cross-site requests refused.
    ///
    /// Merge the result into the app, next to [`Bff::routes`] and under
    /// [`Bff::layer`].
    ///
    /// ```
    /// use oidc_bff::proxy::RemoteApi;
    ///
    /// # fn demo(bff: oidc_bff::Bff) {
    /// let app: axum::Router = axum::Router::new()
    ///     .merge(bff.proxy(RemoteApi::new("/api", "http://127.0.0.1:7000/v1/".parse().unwrap())))
    ///     .merge(bff.routes())
    ///     .layer(bff.layer());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When [`RemoteApi::validate`] fails (a prefix that is not a plain path,
    /// an upstream that is not an `http(s)` URL, ...), like axum's
    /// [`Router::route`] does for an invalid path.
    pub fn proxy<S: Clone + Send + Sync + 'static>(&self, api: RemoteApi) -> Router<S> {
        self.proxy_service(api).router()
    }

    /// The remote API as one service, for a server that sends it the
    /// requests of its prefix itself ([`ProxyService::serves`]) rather than
    /// through an axum `Router`: what [`Bff::proxy`] mounts, with the same
    /// checks and answers, minus the router's cost per request (see
    /// [`ProxyService`]). A router in front must not hold routes below the
    /// prefix that should win over it.
    ///
    /// # Panics
    ///
    /// When [`RemoteApi::validate`] fails, like [`Bff::proxy`].
    pub fn proxy_service(&self, api: RemoteApi) -> ProxyService {
        if let Err(err) = api.validate() {
            panic!("{err}");
        }
        let proxy = Arc::new(Proxy::new(self.clone(), api));
        let prefix: Arc<str> = proxy.prefix.as_str().into();
        // Outermost first: the metrics see the anti-forgery refusals too.
        let layers = tower::ServiceBuilder::new()
            .layer(crate::metrics::UpstreamLayer::new(&prefix))
            .layer(
                self.csrf_layer()
                    .websocket_handshakes_from_trusted_origins(),
            );
        ProxyService {
            inner: layers.service(service::Handler(proxy)),
            prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;
    use crate::OidcConfig;

    fn bff() -> Bff {
        let config = OidcConfig::builder("http://127.0.0.1:9", "bff")
            .client_secret("secret")
            .build()
            .unwrap();
        Bff::builder(config)
            .public_url("http://127.0.0.1:8080")
            .build()
            .unwrap()
    }

    async fn status(app: &Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn mounts_beside_other_routes() {
        let bff = bff();
        let upstream: url::Url = "http://127.0.0.1:9/".parse().unwrap();
        for prefix in ["/", "/api", "/a/b/"] {
            let app: Router = Router::new()
                .route("/local", get(|| async { "local" }))
                .merge(bff.proxy(RemoteApi::new(prefix, upstream.clone())))
                .merge(bff.routes())
                .layer(bff.layer());
            assert_eq!(status(&app, "/local").await.1, "local", "{prefix}");
            let mounted = RemoteApi::new(prefix, upstream.clone()).local_prefix();
            for path in [format!("{mounted}/"), format!("{mounted}/x/y")] {
                let (code, body) = status(&app, &path).await;
                assert_eq!(code, StatusCode::UNAUTHORIZED, "{path}");
                assert!(body.contains("csrf_header_missing"), "{path}: {body}");
            }
        }
    }

    #[test]
    fn a_proxy_service_serves_its_prefix_on_segment_boundaries() {
        let upstream: url::Url = "http://127.0.0.1:9/".parse().unwrap();
        let api = bff().proxy_service(RemoteApi::new("/api/", upstream.clone()));
        assert_eq!(api.prefix(), "/api");
        for path in ["/api", "/api/", "/api/x/y", "/api//x"] {
            assert!(api.serves(path), "{path}");
        }
        for path in ["/", "/ap", "/apix", "/apix/y", "/x/api"] {
            assert!(!api.serves(path), "{path}");
        }
        let root = bff().proxy_service(RemoteApi::new("/", upstream));
        assert!(root.serves("/") && root.serves("/anything/at/all"));
    }

    #[tokio::test]
    async fn a_proxy_service_answers_like_its_route() {
        let upstream: url::Url = "http://127.0.0.1:9/".parse().unwrap();
        let mut api = bff().proxy_service(RemoteApi::new("/api", upstream));
        // No anti-forgery header: refused before anything else, as through
        // the router (`mounts_beside_other_routes`).
        let response = tower::Service::call(
            &mut api,
            Request::get("/api/x").body(Body::empty()).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("csrf_header_missing"));
    }

    #[test]
    #[should_panic(expected = "local prefix")]
    fn refuses_an_invalid_prefix() {
        let _: Router = bff().proxy(RemoteApi::new("/{id}", "http://h/".parse().unwrap()));
    }
}
