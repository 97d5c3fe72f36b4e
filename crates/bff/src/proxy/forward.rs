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
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use cookie::SameSite;
use futures_util::{Stream, StreamExt as _};
use http::request::Parts;
use http::{StatusCode, Version, header};
use hyper::body::{Frame, SizeHint};
use hyper::upgrade::OnUpgrade;
use oidc_bff_tokens::dpop::DpopKey;
use oidc_bff_tokens::{AccessToken, TokenError};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use url::Url;

use crate::bff::Bff;
use crate::cookies;
use crate::csrf::has_header;
use crate::error::BffError;
use crate::proxy::headers::{self, Added};
use crate::proxy::route::RemoteApi;
use crate::proxy::{path, rules, websocket};
use crate::session::BffSession;
use crate::token_policy::{Holder, Refused};

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

        // 3. Route rules, before any token work.
        if let Err(response) = rules::enforce(&self.bff, &self.api.require, &mut parts).await {
            return *response;
        }

        // 4. Which token.
        let token = match self.token(&mut parts).await {
            Ok(token) => token,
            Err(response) => return *response,
        };

        // 5. Forward.
        let client_upgrade = match upgrade {
            Some(_) => parts.extensions.remove::<OnUpgrade>(),
            None => None,
        };
        let upgrade = upgrade.filter(|_| client_upgrade.is_some());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let (token, dpop_key) = token.unzip();
        let dpop_key = dpop_key.flatten();
        let mut outgoing = headers::upstream_request(
            &parts.headers,
            &Added {
                bearer: token
                    .as_ref()
                    .filter(|_| dpop_key.is_none())
                    .map(AccessToken::secret),
                peer,
                proto: settings.public_url.scheme(),
                host: self.public_host.as_deref(),
                prefix: &self.prefix,
                upgrade: upgrade.as_ref(),
            },
        );
        // DPoP: `Authorization: DPoP` and a fresh proof (see crate::dpop).
        let dpop_headers = |method: &http::Method, url: &Url| match (&token, &dpop_key) {
            (Some(token), Some(key)) => {
                crate::dpop::api_headers(self.bff.engine(), method, url, token, Some(key)).map(Some)
            }
            _ => Ok(None),
        };
        match dpop_headers(&parts.method, &url) {
            Ok(Some(added)) => crate::dpop::apply(&mut outgoing, added),
            Ok(None) => {}
            Err(err) => return BffError::from(err).into_response(),
        }
        let mut upstream_request = reqwest::Request::new(parts.method.clone(), url.clone());
        *upstream_request.headers_mut() = outgoing;
        let mut upload = None;
        if body.size_hint().exact() != Some(0) {
            let (tracked, progress) = Tracked::new(body.into_data_stream());
            *upstream_request.body_mut() = Some(reqwest::Body::wrap_stream(tracked));
            upload = Some(progress);
        }
        // A request without a body can be sent again after a DPoP nonce
        // challenge; one with a body is not (its nonce is kept for the next).
        let replay = (dpop_key.is_some() && upload.is_none())
            .then(|| upstream_request.try_clone())
            .flatten();
        let mut response = match self.send(upstream_request, upload).await {
            Ok(response) => response,
            Err(err) => return err.into_response(),
        };
        if dpop_key.is_some()
            && crate::dpop::observe(
                self.bff.engine(),
                &url,
                response.status(),
                response.headers(),
            )
            && let Some(mut again) = replay
        {
            match dpop_headers(&parts.method, &url) {
                Ok(Some(added)) => crate::dpop::apply(again.headers_mut(), added),
                Ok(None) => {}
                Err(err) => return BffError::from(err).into_response(),
            }
            drop(response);
            tracing::debug!("the API asked for a DPoP nonce; retrying once with it");
            response = match self.send(again, None).await {
                Ok(response) => response,
                Err(err) => return err.into_response(),
            };
            crate::dpop::observe(
                self.bff.engine(),
                &url,
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
            let headers = headers::browser_response(response.headers(), &own, true);
            websocket::bridge(client_upgrade, response);
            let mut switching = Response::new(Body::empty());
            *switching.status_mut() = status;
            *switching.headers_mut() = headers;
            return switching;
        }
        let headers = headers::browser_response(response.headers(), &own, false);
        let body = http::Response::<reqwest::Body>::from(response).into_body();
        let body = IdleTimeout::new(body, self.api.timeout);
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

    /// The token for this request per the route's [`TokenPolicy`](crate::TokenPolicy).
    /// Errors are finished responses.
    async fn token(
        &self,
        parts: &mut Parts,
    ) -> Result<Option<(AccessToken, Option<DpopKey>)>, Box<Response>> {
        let policy = self.api.token;
        let mut had_cookie = false;
        let session = if policy.uses_session() {
            if parts.extensions.get::<Bff>().is_none() {
                parts.extensions.insert(self.bff.clone());
            }
            had_cookie = cookies::read(&parts.headers, &self.bff.settings().cookie_name).is_some();
            BffSession::from_parts(parts)
                .await
                .map_err(|e| Box::new(e.into_response()))?
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
                let key = crate::dpop::binding(
                    self.bff.engine(),
                    &self.api.tokens.client,
                    &used,
                    &token,
                    session.as_ref().map(BffSession::versioned),
                )
                .await;
                Ok(Some((token, key)))
            }
            Ok(None) => Ok(None),
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
        request: reqwest::Request,
        mut upload: Option<watch::Receiver<Upload>>,
    ) -> Result<reqwest::Response, BffError> {
        let http = self
            .http
            .as_ref()
            .map_err(|e| BffError::Config(e.clone()))?;
        let timed_out = || BffError::UpstreamTimeout("the upstream did not answer in time".into());
        let call = http.execute(request);
        tokio::pin!(call);
        let outcome = loop {
            let step = tokio::select! {
                biased;
                result = &mut call => Step::Answered(result),
                () = tokio::time::sleep(self.api.timeout) => Step::TimedOut,
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
                }
            }
        };
        match outcome {
            None => Err(timed_out()),
            Some(Ok(response)) => Ok(response),
            Some(Err(err)) => {
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

/// One turn of the wait in [`Proxy::send`].
enum Step {
    Answered(Result<reqwest::Response, reqwest::Error>),
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
struct Tracked<S> {
    inner: S,
    progress: watch::Sender<Upload>,
}

impl<S> Tracked<S> {
    fn new(inner: S) -> (Tracked<S>, watch::Receiver<Upload>) {
        let (progress, rx) = watch::channel(Upload::Sending);
        (Tracked { inner, progress }, rx)
    }
}

impl<S, E> Stream for Tracked<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(self.inner.poll_next_unpin(cx));
        match &item {
            Some(Ok(_)) => self.progress.send_modify(|_| {}),
            Some(Err(_)) | None => {
                self.progress.send_replace(Upload::Sent);
            }
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
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

/// The axum handler of every proxied route.
pub(crate) async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    proxy.handle(request).await
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
