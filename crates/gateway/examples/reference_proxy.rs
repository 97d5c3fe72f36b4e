//! The floor "on hyper" for `bench/proxy.sh` (row d), not a product
//! feature: the smallest reverse proxy issue 13 describes, on the same
//! crates the gateway uses, doing only what any proxy must.
//!
//! * hyper's HTTP/1 server on a multi-threaded tokio runtime (one worker
//!   per core it may run on, like the gateway), mimalloc as the allocator;
//! * hyper-util's pooled legacy client to one upstream;
//! * the incoming request's URI rewritten in place (scheme and authority
//!   added, path and query kept), its `Cookie` header removed, an
//!   `Authorization: Bearer …` header of a fixed ~900 bytes inserted (the
//!   value built once and shared, as the gateway's bearer cache does);
//! * the upstream's response streamed back as it is.
//!
//! No session, no anti-forgery check, no path safety, no header hygiene
//! beyond the cookie, no access log, no metrics, no timeouts: everything
//! the gateway does besides forwarding is left out, so the gap between the
//! two is what those cost.
//!
//! ```text
//! reference_proxy --listen 127.0.0.1:18406 --upstream 127.0.0.1:18401
//! ```

use std::net::SocketAddr;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bearer's length, about the dev IdP's access tokens.
const BEARER_BYTES: usize = 900;

type Upstream = Client<HttpConnector, Incoming>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut upstream): (Option<SocketAddr>, Option<String>) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().map(|a| a.parse()).transpose()?,
            "--upstream" => upstream = args.next(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    let authority: Authority = upstream
        .ok_or("--upstream HOST:PORT is required")?
        .parse()?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", "x".repeat(BEARER_BYTES - 7)))?;

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, authority, bearer))
}

async fn serve(
    listen: SocketAddr,
    authority: Authority,
    bearer: HeaderValue,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new()).build(connector);
    let listener = TcpListener::bind(listen).await?;
    println!("reference proxy on {listen}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, authority, bearer) = (client.clone(), authority.clone(), bearer.clone());
        let service = service_fn(move |request| {
            forward(client.clone(), authority.clone(), bearer.clone(), request)
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Upstream,
    authority: Authority,
    bearer: HeaderValue,
    mut request: Request<Incoming>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    let headers = request.headers_mut();
    headers.remove(header::COOKIE);
    headers.insert(header::AUTHORIZATION, bearer);
    // An upstream failure closes the browser's connection: enough here.
    client.request(request).await
}
