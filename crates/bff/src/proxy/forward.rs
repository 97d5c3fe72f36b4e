//! The proxy handler: checks, token, forwarding, streaming.
//!
//! For each request, in this order:
//!
//! 1. anti-forgery header (or, for a WebSocket handshake, the BFF's own
//!    `Origin`) — else 401, and nothing else happens;
//! 2. request target — absolute-form targets and unsafe paths get 400;
//! 3. route rules ([`Require`](crate::proxy::Require)) — 401 when not
//!    signed in, 403 when the user's claims do not meet them; no token work
//!    before this passes;
//! 4. the route's token — 401 when no valid user token can be had (with the
//!    session cookie cleared if the session is dead), 503 when the provider
//!    is unavailable;
//! 5. the request goes upstream with cleaned headers and its body streamed
//!    as it arrives; the response comes back the same way.
//!
//! The route's timeout bounds every wait for the upstream, never the whole
//! exchange: while the request body streams, no more than the timeout may
//! pass between two chunks; once it has been sent (or when there is none),
//! the upstream must answer with its headers within the timeout; and while
//! the response body streams, no more than the timeout may pass between two
//! chunks. So a long upload or download that keeps moving is never cut off,
//! while an upstream that falls silent is: 504 before the response headers
//! (also when connecting times out), an aborted response after them. A
//! refused or failed connection is 502. Redirects from the upstream are
//! passed to the browser as they are, never followed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use cookie::SameSite;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, StatusCode, Uri, Version, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use oidc_bff_tokens::dpop::DpopKey;
use oidc_bff_tokens::{AccessToken, SessionId, TokenError};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use url::Url;

use crate::bff::Bff;
use crate::cookies;
use crate::csrf::has_header;
use crate::error::BffError;
use crate::proxy::cache::{BearerCache, PeerCache};
use crate::proxy::headers::{self, Added};
use crate::proxy::route::RemoteApi;
use crate::proxy::{path, rules, websocket};
use crate::session::BffSession;
use crate::token_policy::{Holder, Refused, Used};

/// The proxy's pooled HTTP/1.1 client (plain TCP or rustls).
type UpstreamClient = Client<HttpsConnector<HttpConnector>, Tracked>;

/// One mounted remote API: settings plus its HTTP client, with everything
/// that does not depend on the request computed once.
#[derive(Debug)]
pub(crate) struct Proxy {
    bff: Bff,
    api: RemoteApi,
    /// The normalised local prefix (`""` or `/a/b`).
    pub(crate) prefix: String,
    /// The upstream's scheme, authority and base path, parsed once.
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    /// The `Host` header for the upstream, as hyper-util would build it
    /// (from the URI, on every request: an allocation when it has a port).
    host: Option<HeaderValue>,
    /// `X-Forwarded-*` values: the public URL's scheme and host, the prefix.
    forwarded: Forwarded,
    http: Result<UpstreamClient, String>,
    bearer: BearerCache,
    peers: PeerCache,
}

/// The `X-Forwarded-*` values every request of a route gets.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub(crate) proto: Option<HeaderValue>,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) prefix: Option<HeaderValue>,
}

/// What a proxied request was sent with: the session (for a user token)
/// and the token itself, for the WebSocket session watch.
struct Sent {
    token: Option<AccessToken>,
    session: Option<SessionId>,
    /// The DPoP key the token is bound to, if it is.
    dpop_key: Option<DpopKey>,
}

impl Proxy {
    pub(crate) fn new(bff: Bff, api: RemoteApi) -> Proxy {
        let http = upstream_client(&api).map_err(|e| {
            tracing::error!(error = %e, "cannot build the proxy's HTTP client");
            format!("cannot build the proxy's HTTP client: {e}")
        });
        let public = &bff.settings().public_url;
        let public_host = public.host_str().map(|host| match public.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        });
        let prefix = api.local_prefix();
        let forwarded = Forwarded {
            proto: HeaderValue::from_str(public.scheme()).ok(),
            host: public_host.and_then(|h| HeaderValue::from_str(&h).ok()),
            prefix: (!prefix.is_empty())
                .then(|| HeaderValue::from_str(&prefix).ok())
                .flatten(),
        };
        let upstream = &api.upstream;
        // `validate` has checked: http(s), a host, no credentials.
        let scheme = if upstream.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        // `Url` leaves out a scheme's default port, as hyper-util does.
        let host = upstream.host_str().and_then(|host| {
            HeaderValue::from_str(&match upstream.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
            .ok()
        });
        let authority = Authority::from_maybe_shared(Bytes::copy_from_slice(
            upstream[url::Position::BeforeHost..url::Position::AfterPort].as_bytes(),
        ))
        .unwrap_or_else(|_| Authority::from_static("invalid.invalid"));
        Proxy {
            prefix,
            scheme,
            authority,
            base_path: upstream.path().to_owned(),
            host,
            bff,
            api,
            forwarded,
            http,
            bearer: BearerCache::default(),
            peers: PeerCache::default(),
        }
    }

    /// Answers one proxied request (the checks, the token, the exchange).
    pub(crate) async fn handle(&self, request: Request) -> Response {
        let (mut parts, body) = request.into_parts();
        let settings = self.bff.settings();

        // The checks before any token work, in order. Each answers at once.
        // 1. The route's methods (405 with `Allow`).
        if let Some(refused) = self.api.methods.refuse(&parts.method) {
            return refused;
        }
        // 2. Anti-forgery.
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
        // 3. Where to (path safety).
        let uri = match self.target(&parts) {
            Ok(uri) => uri,
            Err(err) => return err.into_response(),
        };

        // 3. Route rules, before any token work.
        let session = match rules::enforce(&self.bff, &self.api.require, &parts).await {
            Ok(session) => session,
            Err(response) => return *response,
        };

        // 4. Which token.
        let sent = match self.token(&parts, session).await {
            Ok(sent) => sent,
            Err(response) => return *response,
        };

        // 5. Forward: the incoming request, its headers cleaned in place.
        let client_upgrade = match upgrade {
            Some(_) => parts.extensions.remove::<OnUpgrade>(),
            None => None,
        };
        let upgrade = upgrade.filter(|_| client_upgrade.is_some());
        let forwarded_for = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .and_then(|ConnectInfo(addr)| self.peers.get(addr.ip()));
        let mut outgoing = std::mem::take(&mut parts.headers);
        headers::upstream_request(
            &mut outgoing,
            &Added {
                forwarded_for,
                forwarded: &self.forwarded,
                upgrade: upgrade.as_ref(),
            },
        );
        if let Some(host) = &self.host {
            outgoing.insert(header::HOST, host.clone());
        }
        // DPoP-bound tokens go as `Authorization: DPoP` with a fresh proof
        // (see crate::dpop); others as a bearer token.
        let dpop = match (&sent.token, &sent.dpop_key) {
            (Some(token), Some(key)) => match Url::parse(&uri.to_string()) {
                Ok(url) => Some((url, token, key)),
                Err(_) => {
                    return BffError::BadRequest("the request path is not allowed".into())
                        .into_response();
                }
            },
            _ => None,
        };
        let dpop_headers = |method: &http::Method| match &dpop {
            Some((url, token, key)) => {
                crate::dpop::api_headers(self.bff.engine(), method, url, token, Some(key)).map(Some)
            }
            None => Ok(None),
        };
        match dpop_headers(&parts.method) {
            Ok(Some(added)) => crate::dpop::apply(&mut outgoing, added),
            Ok(None) => self.upstream_credentials(sent.token.as_ref(), &mut outgoing),
            Err(err) => return BffError::from(err).into_response(),
        }
        let (body, upload) = if body.size_hint().exact() == Some(0) {
            (Tracked::empty(), None)
        } else {
            let (tracked, progress) = Tracked::new(body);
            (tracked, Some(progress))
        };
        // A request without a body can be sent again after a DPoP nonce
        // challenge; one with a body is not (its nonce is kept for the next).
        let replay = (dpop.is_some() && upload.is_none())
            .then(|| (parts.method.clone(), uri.clone(), outgoing.clone()));
        let mut upstream_request = http::Request::new(body);
        *upstream_request.method_mut() = parts.method;
        *upstream_request.uri_mut() = uri;
        *upstream_request.headers_mut() = outgoing;
        let mut response = match self.send(upstream_request, upload).await {
            Ok(response) => response,
            Err(err) => return err.into_response(),
        };
        if let Some((url, _, _)) = &dpop
            && crate::dpop::observe(
                self.bff.engine(),
                url,
                response.status(),
                response.headers(),
            )
            && let Some((method, uri, mut headers)) = replay
        {
            match dpop_headers(&method) {
                Ok(Some(added)) => crate::dpop::apply(&mut headers, added),
                Ok(None) => {}
                Err(err) => return BffError::from(err).into_response(),
            }
            drop(response);
            tracing::debug!("the API asked for a DPoP nonce; retrying once with it");
            let mut again = http::Request::new(Tracked::empty());
            *again.method_mut() = method;
            *again.uri_mut() = uri;
            *again.headers_mut() = headers;
            response = match self.send(again, None).await {
                Ok(response) => response,
                Err(err) => return err.into_response(),
            };
            crate::dpop::observe(
                self.bff.engine(),
                url,
                response.status(),
                response.headers(),
            );
        }

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
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let (mut head, _) = response.into_parts();
            headers::browser_response(&mut head.headers, &own, true);
            let watch = sent.session.map(|id| {
                websocket::SessionWatch::new(
                    self.bff.clone(),
                    id,
                    self.api.tokens.user.clone(),
                    self.api.websocket_session.clone(),
                )
            });
            websocket::bridge(client_upgrade, upstream_upgrade, watch);
            let mut switching = Response::new(Body::empty());
            *switching.status_mut() = status;
            *switching.headers_mut() = head.headers;
            return switching;
        }
        let (mut head, body) = response.into_parts();
        headers::browser_response(&mut head.headers, &own, false);
        let body = IdleTimeout::new(body, self.api.timeout);
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = status;
        *out.headers_mut() = head.headers;
        out
    }

    /// The token -> upstream credentials step: the headers that carry the
    /// route's token to the upstream (today `Authorization: Bearer`). Any
    /// other way of presenting the token belongs here.
    fn upstream_credentials(&self, token: Option<&AccessToken>, headers: &mut HeaderMap) {
        if let Some(value) = token.and_then(|t| self.bearer.get(t.secret())) {
            headers.insert(header::AUTHORIZATION, value);
        }
    }

    /// The upstream URI for a request, or 400.
    fn target(&self, parts: &Parts) -> Result<Uri, BffError> {
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
        let base = self.base_path.as_str();
        let query = uri.query();
        let mut target =
            String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
        path::join_into(&mut target, base, rest);
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        let refused = || BffError::BadRequest("the request path is not allowed".into());
        let path_and_query =
            PathAndQuery::from_maybe_shared(Bytes::from(target)).map_err(|_| refused())?;
        let mut out = http::uri::Parts::default();
        out.scheme = Some(self.scheme.clone());
        out.authority = Some(self.authority.clone());
        out.path_and_query = Some(path_and_query);
        Uri::from_parts(out).map_err(|_| refused())
    }

    /// The token for this request per the route's [`TokenPolicy`](crate::TokenPolicy),
    /// and the session it is the user's token of. Errors are finished
    /// responses.
    ///
    /// `loaded` is the session the route rules already read, if they did.
    async fn token(
        &self,
        parts: &Parts,
        loaded: Option<BffSession>,
    ) -> Result<Sent, Box<Response>> {
        let policy = self.api.token;
        let mut had_cookie = false;
        let session = if policy.uses_session() {
            let cookie = cookies::read(&parts.headers, &self.bff.settings().cookie_name);
            had_cookie = cookie.is_some();
            match loaded {
                Some(session) => Some(session),
                None => BffSession::for_request(&self.bff, parts, cookie)
                    .await
                    .map_err(|e| Box::new(e.into_response()))?,
            }
        } else {
            None
        };
        let user = session.as_ref().map(|session| Holder::Loaded {
            id: session.id(),
            current: session.versioned(),
        });
        match policy
            .resolve(self.bff.engine(), &self.api.tokens, user)
            .await
        {
            Ok(Some((token, used))) => {
                let dpop_key = crate::dpop::binding(
                    self.bff.engine(),
                    &self.api.tokens.client,
                    &used,
                    &token,
                    session.as_ref().map(BffSession::versioned),
                )
                .await;
                let session = match used {
                    Used::User(id) => Some(id),
                    _ => None,
                };
                Ok(Sent {
                    token: Some(token),
                    session,
                    dpop_key,
                })
            }
            Ok(None) => Ok(Sent {
                token: None,
                session: None,
                dpop_key: None,
            }),
            Err(Refused { error, user: true }) => Err(self.user_token_failed(error, had_cookie)),
            Err(Refused { error, .. }) => Err(Box::new(BffError::from(error).into_response())),
        }
    }

    /// 401/503 (500 for a configuration error) for a failed user token. The
    /// session cookie is cleared only when the session really ended (there
    /// is none, or the engine ended it): an error that keeps the session
    /// (`invalid_scope` for one route, a misconfigured client or resource)
    /// must not sign the browser out while the server session lives on.
    fn user_token_failed(&self, err: TokenError, had_cookie: bool) -> Box<Response> {
        let dead = had_cookie && session_ended(&err);
        let err = configuration_error(err);
        let mut response = BffError::from(err).into_response();
        if dead {
            // Its WebSockets on this instance close now, not at their next check.
            self.bff.sessions_changed();
            response.headers_mut().append(
                header::SET_COOKIE,
                cookies::clear(&self.bff.settings().cookie_name, SameSite::Strict),
            );
        }
        Box::new(response)
    }

    /// Sends the request and waits for the response headers.
    ///
    /// The route's timeout restarts whenever `upload` reports a chunk of the
    /// request body taken by the connection, and once more when the body has
    /// been sent: so it bounds each pause of the upload and then the wait for
    /// the answer, never the upload as a whole.
    async fn send(
        &self,
        request: http::Request<Tracked>,
        mut upload: Option<watch::Receiver<Upload>>,
    ) -> Result<http::Response<Incoming>, BffError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| BffError::Config(e.clone()))?;
        let timed_out = || BffError::UpstreamTimeout("the upstream did not answer in time".into());
        let call = http.request(request);
        tokio::pin!(call);
        let sleep = tokio::time::sleep(self.api.timeout);
        tokio::pin!(sleep);
        let outcome = loop {
            let step = tokio::select! {
                biased;
                result = &mut call => Step::Answered(result),
                () = &mut sleep => Step::TimedOut,
                moved = progressed(upload.as_mut()) => Step::Progress(moved),
            };
            match step {
                Step::Answered(result) => break Some(result),
                Step::TimedOut => break None,
                // A chunk went out: wait afresh. Once the body is complete
                // (or dropped), the next wait is for the response headers.
                Step::Progress(moved) => {
                    let sending = upload
                        .as_ref()
                        .is_some_and(|rx| moved && *rx.borrow() == Upload::Sending);
                    if !sending {
                        upload = None;
                    }
                    sleep.as_mut().reset(Instant::now() + self.api.timeout);
                }
            }
        };
        match outcome {
            None => Err(timed_out()),
            Some(Ok(response)) => Ok(response),
            Some(Err(err)) => {
                // The error's text never holds the URI; log its kind only.
                tracing::warn!(error = %err, prefix = %self.prefix, "upstream call failed");
                if timed_out_below(&err) {
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

/// The pooled client of one route: HTTP/1.1 over TCP, or over rustls (the
/// crypto provider and platform verifier reqwest uses in this workspace) to
/// an `https` upstream. No proxy from the environment, no decompression, no
/// redirects followed: the proxy passes everything on as it is.
fn upstream_client(api: &RemoteApi) -> Result<UpstreamClient, rustls::Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(api.connect_timeout));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let tls = if api.upstream.scheme() == "https" {
        hyper_rustls::ConfigBuilderExt::try_with_platform_verifier(tls)?.with_no_client_auth()
    } else {
        // Plain HTTP: the TLS side is never used; no root store to load.
        tls.with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(connector))
}

/// Whether a client error comes from a timeout below HTTP (connecting).
fn timed_out_below(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// One turn of the wait in [`Proxy::send`].
enum Step {
    Answered(Result<http::Response<Incoming>, hyper_util::client::legacy::Error>),
    TimedOut,
    /// The request body moved on; `false` when its stream was dropped.
    Progress(bool),
}

/// Where the request body is on its way to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    Sending,
    /// Its last chunk (or an error) has been taken by the connection.
    Sent,
}

/// Resolves when the upload reports progress (`true`) or its stream is gone
/// (`false`); never without an upload.
async fn progressed(upload: Option<&mut watch::Receiver<Upload>>) -> bool {
    match upload {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The browser's request body on its way upstream, reporting each chunk the
/// connection takes, and the end.
pub(crate) struct Tracked {
    inner: Body,
    progress: Option<watch::Sender<Upload>>,
}

impl Tracked {
    fn new(inner: Body) -> (Tracked, watch::Receiver<Upload>) {
        let (progress, rx) = watch::channel(Upload::Sending);
        (
            Tracked {
                inner,
                progress: Some(progress),
            },
            rx,
        )
    }

    /// No body.
    fn empty() -> Tracked {
        Tracked {
            inner: Body::empty(),
            progress: None,
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(progress) = &self.progress {
            match &item {
                Some(Ok(_)) => progress.send_modify(|_| {}),
                Some(Err(_)) | None => {
                    progress.send_replace(Upload::Sent);
                }
            }
        }
        Poll::Ready(item)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream's response body, failing when the upstream sends nothing for
/// `timeout` while the BFF waits for its next chunk. Time spent waiting for
/// the browser to read (back-pressure) does not count.
struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    /// Created at the first wait: a body that is always ready needs none.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the last poll found no frame (the timer is running).
    waiting: bool,
}

impl<B> IdleTimeout<B> {
    fn new(inner: B, timeout: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            timeout,
            sleep: None,
            waiting: false,
        }
    }
}

impl<B> hyper::body::Body for IdleTimeout<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        // Nothing yet: the timer runs from the first poll that found nothing.
        if !this.waiting {
            this.waiting = true;
            let deadline = Instant::now() + this.timeout;
            if let Some(sleep) = this.sleep.as_mut() {
                sleep.as_mut().reset(deadline);
            } else {
                this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline)));
            }
        }
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_ready() {
            tracing::warn!("the upstream's response body stalled; aborting it");
            return Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the upstream's response body stalled",
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The provider refusing the BFF's client (`invalid_client`) or a route's
/// configured resource (`invalid_target`) is a configuration error (500),
/// not something the user could fix by signing in again (401).
fn configuration_error(err: TokenError) -> TokenError {
    match err {
        TokenError::Provider { error, .. }
            if matches!(error.as_str(), "invalid_client" | "invalid_target") =>
        {
            TokenError::Config(format!("the provider answered {error}"))
        }
        other => other,
    }
}

/// Whether a user token failure means the browser's session is over: there
/// was none (or it expired), or the engine ended it (no refresh token, the
/// grant was rejected, a refreshed id_token was refused).
fn session_ended(err: &TokenError) -> bool {
    matches!(
        err,
        TokenError::NotAuthenticated
            | TokenError::NoRefreshToken
            | TokenError::RefreshRejected { .. }
    )
}
