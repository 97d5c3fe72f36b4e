//! The proxy handler: checks, token, forwarding, streaming.
//!
//! For each request, in this order:
//!
//! 1. anti-forgery header (or, for a WebSocket handshake, the BFF's own
//!    `Origin`) — else 401, and nothing else happens;
//! 2. request target — absolute-form targets and unsafe paths get 400;
//! 3. the route's token — 401 when no valid user token can be had (with the
//!    session cookie cleared if the session is dead), 503 when the provider
//!    is unavailable;
//! 4. the request goes upstream with cleaned headers and its body streamed
//!    as it arrives; the response comes back the same way.
//!
//! The upstream must answer with its headers within the route's timeout
//! (504 otherwise, also when connecting times out); a refused or failed
//! connection is 502. Redirects from the upstream are passed to the browser
//! as they are, never followed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use cookie::SameSite;
use http::request::Parts;
use http::{StatusCode, Version, header};
use hyper::upgrade::OnUpgrade;
use oidc_bff_tokens::{AccessToken, ErrorKind, TokenError};
use url::Url;

use crate::config::Bff;
use crate::cookies;
use crate::csrf::has_header;
use crate::error::BffError;
use crate::proxy::headers::{self, Added};
use crate::proxy::route::{RemoteApi, TokenRequirement};
use crate::proxy::{path, websocket};
use crate::session::BffSession;

/// One mounted remote API: settings plus its HTTP client.
#[derive(Debug)]
pub(crate) struct Proxy {
    bff: Bff,
    api: RemoteApi,
    /// The normalised local prefix (`""` or `/a/b`).
    pub(crate) prefix: String,
    /// `X-Forwarded-Host`: the public URL's host and port.
    public_host: Option<String>,
    http: Result<reqwest::Client, String>,
}

impl Proxy {
    pub(crate) fn new(bff: Bff, api: RemoteApi) -> Proxy {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .http1_only()
            .connect_timeout(api.connect_timeout)
            .read_timeout(api.timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                tracing::error!(error = %e, "cannot build the proxy's HTTP client");
                format!("cannot build the proxy's HTTP client: {e}")
            });
        let public = &bff.settings().public_url;
        let public_host = public.host_str().map(|host| match public.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        });
        Proxy {
            prefix: api.local_prefix(),
            bff,
            api,
            public_host,
            http,
        }
    }

    async fn handle(&self, request: Request) -> Response {
        let (mut parts, body) = request.into_parts();
        let settings = self.bff.settings();

        // 1. Anti-forgery, before anything else.
        let upgrade = self
            .api
            .websockets
            .then(|| websocket::handshake(&parts.method, parts.version, &parts.headers))
            .flatten();
        let (csrf_name, csrf_value) = &settings.csrf_header;
        let trusted = has_header(&parts.headers, csrf_name, csrf_value)
            || (upgrade.is_some() && websocket::same_origin(&parts.headers, &settings.public_url));
        if !trusted {
            return BffError::MissingCsrfHeader.into_response();
        }

        // 2. Where to.
        let url = match self.target(&parts) {
            Ok(url) => url,
            Err(err) => return err.into_response(),
        };

        // 3. Which token.
        let token = match self.token(&mut parts).await {
            Ok(token) => token,
            Err(response) => return *response,
        };

        // 4. Forward.
        let client_upgrade = match upgrade {
            Some(_) => parts.extensions.remove::<OnUpgrade>(),
            None => None,
        };
        let upgrade = upgrade.filter(|_| client_upgrade.is_some());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let outgoing = headers::upstream_request(
            &parts.headers,
            &Added {
                bearer: token.as_ref().map(AccessToken::secret),
                peer,
                proto: settings.public_url.scheme(),
                host: self.public_host.as_deref(),
                prefix: &self.prefix,
                upgrade: upgrade.as_ref(),
            },
        );
        let mut upstream_request = reqwest::Request::new(parts.method.clone(), url);
        *upstream_request.headers_mut() = outgoing;
        if body.size_hint().exact() != Some(0) {
            *upstream_request.body_mut() =
                Some(reqwest::Body::wrap_stream(body.into_data_stream()));
        }
        let response = match self.send(upstream_request).await {
            Ok(response) => response,
            Err(err) => return err.into_response(),
        };

        let status = response.status();
        let own = [
            settings.cookie_name.as_str(),
            settings.login_cookie_name.as_str(),
        ];
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return BffError::Upstream("the upstream switched protocols unasked".into())
                    .into_response();
            };
            let headers = headers::browser_response(response.headers(), &own, true);
            websocket::bridge(client_upgrade, response);
            let mut switching = Response::new(Body::empty());
            *switching.status_mut() = status;
            *switching.headers_mut() = headers;
            return switching;
        }
        let headers = headers::browser_response(response.headers(), &own, false);
        let body = http::Response::<reqwest::Body>::from(response).into_body();
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        out
    }

    /// The upstream URL for a request, or 400.
    fn target(&self, parts: &Parts) -> Result<Url, BffError> {
        let uri = &parts.uri;
        if parts.version <= Version::HTTP_11
            && (uri.scheme().is_some() || uri.authority().is_some())
        {
            return Err(BffError::BadRequest(
                "absolute-form request targets are not accepted".into(),
            ));
        }
        let rest = path::remainder(uri.path(), &self.prefix)
            .map_err(|e| BffError::BadRequest(e.to_string()))?;
        let base = &self.api.upstream;
        let joined = path::join(base.path(), rest);
        let mut url = base.clone();
        url.set_path(&joined);
        url.set_query(uri.query());
        // Belt and braces: the URL parser must not have reinterpreted anything.
        if url.path() != joined
            || url.scheme() != base.scheme()
            || url.host() != base.host()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(BffError::BadRequest(
                "the request path is not allowed".into(),
            ));
        }
        Ok(url)
    }

    /// The token for this request per the route's requirement. Errors are
    /// finished responses.
    async fn token(&self, parts: &mut Parts) -> Result<Option<AccessToken>, Box<Response>> {
        let requirement = self.api.token;
        match requirement {
            TokenRequirement::None => return Ok(None),
            TokenRequirement::Client => return self.client_token().await.map(Some),
            _ => {}
        }
        if parts.extensions.get::<Bff>().is_none() {
            parts.extensions.insert(self.bff.clone());
        }
        let had_cookie = cookies::read(&parts.headers, &self.bff.settings().cookie_name).is_some();
        let session = BffSession::from_parts(parts)
            .await
            .map_err(|e| Box::new(e.into_response()))?;
        match (session, requirement) {
            (Some(session), _) => session
                .access_token(&self.api.user_token_request)
                .await
                .map(Some)
                .map_err(|e| self.user_token_failed(e, had_cookie)),
            (None, TokenRequirement::UserOrClient) => self.client_token().await.map(Some),
            (None, TokenRequirement::UserOrNone) => Ok(None),
            (None, _) => Err(self.user_token_failed(TokenError::NotAuthenticated, had_cookie)),
        }
    }

    async fn client_token(&self) -> Result<AccessToken, Box<Response>> {
        self.bff
            .client()
            .client_access_token(&self.api.client_token_request)
            .await
            .map_err(|e| Box::new(BffError::from(e).into_response()))
    }

    /// 401/503 for a failed user token; a dead session's cookie is cleared.
    fn user_token_failed(&self, err: TokenError, had_cookie: bool) -> Box<Response> {
        let dead = had_cookie && err.kind() == ErrorKind::Unauthorized;
        let mut response = BffError::from(err).into_response();
        if dead {
            response.headers_mut().append(
                header::SET_COOKIE,
                cookies::clear(&self.bff.settings().cookie_name, SameSite::Strict),
            );
        }
        Box::new(response)
    }

    async fn send(&self, request: reqwest::Request) -> Result<reqwest::Response, BffError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| BffError::Config(e.clone()))?;
        let timed_out = || BffError::UpstreamTimeout("the upstream did not answer in time".into());
        match tokio::time::timeout(self.api.timeout, http.execute(request)).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => {
                let err = err.without_url();
                tracing::warn!(error = %err, prefix = %self.prefix, "upstream call failed");
                if err.is_timeout() {
                    Err(timed_out())
                } else if err.is_connect() {
                    Err(BffError::Upstream(
                        "could not connect to the upstream".into(),
                    ))
                } else {
                    Err(BffError::Upstream("the upstream call failed".into()))
                }
            }
        }
    }
}

/// The axum handler of every proxied route.
pub(crate) async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    proxy.handle(request).await
}
