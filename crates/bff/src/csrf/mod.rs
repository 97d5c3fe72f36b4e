//! Anti-forgery: two lines of defence against cross-site requests.
//!
//! 1. **The anti-forgery header.** A cross-site page cannot send a custom
//!    header without a CORS preflight, which the BFF never grants, so
//!    requiring `X-CSRF: 1` on every API request shuts out cross-site request
//!    forgery together with the `SameSite` session cookie. Requests without
//!    it are answered `401` and never reach the handler.
//! 2. **Where the request comes from.** Should a header get through anyway
//!    (a CORS policy of another part of the site, a taken-over sibling
//!    subdomain the session cookie's `SameSite` does not stop), the request
//!    is refused `403` when the browser says it is cross-site: the
//!    `Sec-Fetch-Site` / `Origin` check of [`tower_http::csrf`] (the scheme
//!    Go 1.25 adopted). `Sec-Fetch-Site: same-origin` or `none` passes, so
//!    does an `Origin` that is trusted (the public URL's origin and those
//!    given to [`BffBuilder::trusted_origin`](crate::BffBuilder::trusted_origin))
//!    or that names the request's own host, and so does a request carrying
//!    neither header (not sent by a browser). `same-site` and `cross-site`
//!    are refused.
//!
//! [`Bff::csrf_layer`](crate::Bff::csrf_layer) applies both to **every
//! method** — unlike tower-http's layer on its own, which lets `GET`, `HEAD`
//! and `OPTIONS` pass, as an API's `GET` may hand data to a script that could
//! read it. [`Bff::routes`](crate::Bff::routes) and [`Bff::proxy`](crate::Bff::proxy)
//! put it in front of `/bff/user` and of every proxied API; the sign-in
//! navigations (`/bff/login`, `/bff/callback`, `/bff/logout`) get only the
//! second line, with tower-http's rule for safe methods, since the provider
//! sends the browser back to `/bff/callback` with a cross-site `GET`. The
//! back-channel logout endpoint, which the provider calls server to server,
//! has neither: only a logout token signed by the provider has any effect.
//!
//! ```
//! use axum::{Router, routing::get};
//! # fn demo(bff: oidc_bff::Bff) {
//! let api: Router = Router::new()
//!     .route("/api/data", get(|| async { "data" }))
//!     .layer(bff.csrf_layer());
//! # }
//! ```
//!
//! The layer can be had without a [`Bff`](crate::Bff) as well:
//!
//! ```
//! use http::{HeaderName, HeaderValue};
//! use oidc_bff::csrf::CsrfLayer;
//!
//! let layer = CsrfLayer::new(HeaderName::from_static("x-csrf"), HeaderValue::from_static("1"))
//!     .trusted_origin("https://app.example.com")
//!     .expect("a valid origin");
//! # let _ = layer;
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::CsrfLayer;
pub use service::Csrf;

use http::HeaderName;

/// Request headers a page on another site may send without a CORS preflight
/// (Fetch: CORS-safelisted request headers): useless against forgery.
const CORS_SAFELISTED: [&str; 5] = [
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "range",
];

/// Request headers only the browser sets (Fetch: forbidden request headers):
/// the single-page app could not send them.
const BROWSER_ONLY: [&str; 21] = [
    "accept-charset",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "connection",
    "content-length",
    "cookie",
    "cookie2",
    "date",
    "dnt",
    "expect",
    "host",
    "keep-alive",
    "origin",
    "referer",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
];

/// Checks an anti-forgery header name: it must be a valid header name that
/// a cross-site page cannot send without a CORS preflight and that the
/// application's own script can set. The error says why not.
///
/// ```
/// use oidc_bff::csrf::check_header_name;
///
/// assert!(check_header_name("X-CSRF").is_ok());
/// assert!(check_header_name("Content-Type").is_err()); // sent cross-site freely
/// assert!(check_header_name("Cookie").is_err());       // only the browser sets it
/// ```
pub fn check_header_name(name: &str) -> Result<(), &'static str> {
    let name = name.to_ascii_lowercase();
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        Err("not a valid header name")
    } else if CORS_SAFELISTED.contains(&name.as_str()) {
        Err(
            "another site's page may send this header without a CORS preflight; \
             choose a custom one such as \"X-CSRF\"",
        )
    } else if BROWSER_ONLY.contains(&name.as_str())
        || name.starts_with("proxy-")
        || name.starts_with("sec-")
    {
        Err("only the browser sets this header; choose a custom one such as \"X-CSRF\"")
    } else {
        Ok(())
    }
}

/// Checks an anti-forgery header value: non-empty printable ASCII without
/// leading or trailing spaces.
pub fn check_header_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty()
        || value.trim() != value
        || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        Err("must be non-empty printable ASCII without leading or trailing spaces")
    } else {
        Ok(())
    }
}

/// Checks a trusted origin and returns it as a browser sends it in `Origin`
/// (`scheme://host[:port]`: host lower-cased and in punycode, default port
/// left out), since origins are compared byte for byte.
///
/// ```
/// use oidc_bff::csrf::check_trusted_origin;
///
/// assert_eq!(check_trusted_origin("HTTPS://App.Example.com:443").unwrap(), "https://app.example.com");
/// assert!(check_trusted_origin("https://app.example.com/path").is_err());
/// assert!(check_trusted_origin("file:///etc").is_err());
/// ```
pub fn check_trusted_origin(origin: &str) -> Result<String, &'static str> {
    const WHAT: &str = "must be an origin such as https://app.example.com \
                        (http or https, a host, an optional port, nothing else)";
    let url = url::Url::parse(origin).map_err(|_| WHAT)?;
    let bare = origin.split_once("://").map_or("", |(_, rest)| rest);
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
        || bare.contains(['/', '?', '#'])
    {
        return Err(WHAT);
    }
    Ok(url.origin().ascii_serialization())
}

/// Whether the first `name` header of `headers` has the value `value`.
pub(crate) fn has_header(
    headers: &http::HeaderMap,
    name: &HeaderName,
    value: impl AsRef<[u8]>,
) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes() == value.as_ref())
}
