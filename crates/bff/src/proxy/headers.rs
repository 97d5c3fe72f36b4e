//! Header hygiene in both directions.
//!
//! Towards the upstream, the browser's credentials and anything that claims to
//! describe the connection are removed, and the BFF's own values take their
//! place:
//!
//! | removed from the request | replaced by |
//! |---|---|
//! | `Cookie` | — (the session stays at the BFF) |
//! | `Authorization`, `DPoP` | the route's bearer token, if any |
//! | `Proxy-*`, hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`), `Expect`, `Host` | the client's own (`Host` from the upstream URL); `Connection`/`Upgrade` again for a WebSocket handshake |
//! | `Forwarded`, `X-Forwarded-*`, `X-Real-IP` | `X-Forwarded-For` (the TCP peer), `-Proto` and `-Host` (the BFF's public URL), `-Prefix` (the local prefix) |
//! | every header whose name contains `_` (`X_Forwarded_For`, `Proxy_Authorization`, ...) | — |
//!
//! Header names with an underscore are dropped because upstreams that map
//! headers to variables (CGI, WSGI, Rack, PHP) read `_` and `-` alike: an
//! `X_Forwarded_For` or `X_Real_IP` would reach them as the client address
//! the BFF vouches for (CVE-2025-64484). Browsers never need them; nginx and
//! Apache drop them by default too.
//!
//! Towards the browser, hop-by-hop and `Proxy-*` headers are removed (except
//! `Connection`/`Upgrade` on a `101 Switching Protocols`), a `Set-Cookie`
//! for one of the BFF's own cookie names is dropped, and so is
//! `Clear-Site-Data` (it would make the browser delete every cookie of the
//! origin, the session cookie included), so an API cannot plant or clear the
//! session.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// A response header that makes the browser delete the origin's cookies and
/// storage (W3C Clear Site Data): only the BFF may end its session.
const CLEAR_SITE_DATA: &str = "clear-site-data";

/// Request headers the client may not pass to the upstream.
const CLIENT_ONLY: [&str; 7] = [
    "cookie",
    "authorization",
    "dpop",
    "host",
    "expect",
    "forwarded",
    "x-real-ip",
];

/// The header names listed in the `Connection` headers (lower case).
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-") || listed.iter().any(|l| l == name)
}

/// What the BFF adds to a forwarded request.
#[derive(Debug, Default)]
pub(crate) struct Added<'a> {
    /// `Authorization: Bearer <token>`.
    pub(crate) bearer: Option<&'a str>,
    /// The TCP peer's address, for `X-Forwarded-For`.
    pub(crate) peer: Option<std::net::IpAddr>,
    /// `X-Forwarded-Proto`.
    pub(crate) proto: &'a str,
    /// `X-Forwarded-Host`.
    pub(crate) host: Option<&'a str>,
    /// `X-Forwarded-Prefix` (omitted when empty).
    pub(crate) prefix: &'a str,
    /// The `Upgrade` protocol of a WebSocket handshake.
    pub(crate) upgrade: Option<&'a HeaderValue>,
}

/// The headers to send upstream for a client's request headers.
pub(crate) fn upstream_request(incoming: &HeaderMap, added: &Added<'_>) -> HeaderMap {
    let listed = connection_listed(incoming);
    let chunked = incoming.contains_key(header::TRANSFER_ENCODING);
    let mut out = HeaderMap::with_capacity(incoming.len() + 6);
    for (name, value) in incoming {
        let n = name.as_str();
        if is_hop_by_hop(name, &listed)
            || CLIENT_ONLY.contains(&n)
            || n.starts_with("x-forwarded-")
            || n.contains('_')
        {
            continue;
        }
        // A message with both framings is read as chunked: the length is stale.
        if chunked && name == header::CONTENT_LENGTH {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Some(token) = added.bearer
        && let Ok(mut value) = bearer(token)
    {
        value.set_sensitive(true);
        out.insert(header::AUTHORIZATION, value);
    }
    if let Some(value) = added.peer.and_then(forwarded_for) {
        out.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    if let Ok(value) = HeaderValue::from_str(added.proto) {
        out.insert(HeaderName::from_static("x-forwarded-proto"), value);
    }
    if let Some(Ok(value)) = added.host.map(HeaderValue::from_str) {
        out.insert(HeaderName::from_static("x-forwarded-host"), value);
    }
    if !added.prefix.is_empty()
        && let Ok(value) = HeaderValue::from_str(added.prefix)
    {
        out.insert(HeaderName::from_static("x-forwarded-prefix"), value);
    }
    if let Some(protocol) = added.upgrade {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        out.insert(header::UPGRADE, protocol.clone());
    }
    out
}

/// `Bearer <token>`, built without a second copy of the (~1 KB) token.
fn bearer(token: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut value = Vec::with_capacity(7 + token.len());
    value.extend_from_slice(b"Bearer ");
    value.extend_from_slice(token.as_bytes());
    HeaderValue::try_from(value)
}

/// The peer's address for `X-Forwarded-For`. IPv4 is written by hand:
/// `Ipv4Addr`'s `Display` (padding support, one `fmt` call per octet) was 2%
/// of a proxied request's instructions (docs/BENCHMARKS.md).
fn forwarded_for(peer: std::net::IpAddr) -> Option<HeaderValue> {
    match peer {
        std::net::IpAddr::V4(v4) => {
            let mut out = Vec::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
            HeaderValue::try_from(out).ok()
        }
        std::net::IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string()).ok(),
    }
}

/// The headers to send to the browser for an upstream's response headers.
///
/// `own_cookies` are the BFF's cookie names; `switching` keeps the
/// `Upgrade` header of a `101 Switching Protocols`.
pub(crate) fn browser_response(
    upstream: &HeaderMap,
    own_cookies: &[&str],
    switching: bool,
) -> HeaderMap {
    let listed = connection_listed(upstream);
    let mut out = HeaderMap::with_capacity(upstream.len());
    for (name, value) in upstream {
        if is_hop_by_hop(name, &listed) {
            continue;
        }
        if name == header::SET_COOKIE && sets_own_cookie(value, own_cookies) {
            tracing::warn!("dropped an upstream Set-Cookie for one of the BFF's own cookies");
            continue;
        }
        if name.as_str() == CLEAR_SITE_DATA {
            tracing::warn!("dropped an upstream Clear-Site-Data header");
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if switching && let Some(protocol) = upstream.get(header::UPGRADE) {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        out.insert(header::UPGRADE, protocol.clone());
    }
    out
}

/// Whether a `Set-Cookie` value names one of `own` (compared without regard
/// to case, as some browsers do for the `__Host-` prefix).
fn sets_own_cookie(value: &HeaderValue, own: &[&str]) -> bool {
    let bytes = value.as_bytes();
    let pair = bytes.split(|b| *b == b';').next().unwrap_or_default();
    let name = match pair.iter().position(|b| *b == b'=') {
        Some(eq) => &pair[..eq],
        None => pair,
    };
    let name = name.trim_ascii();
    own.iter().any(|o| name.eq_ignore_ascii_case(o.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "1.99.100.101",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let addr: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(forwarded_for(addr).unwrap(), addr.to_string().as_str());
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn request_loses_credentials_and_forged_forwarding() {
        let incoming = map(&[
            ("cookie", "__Host-bff=secret"),
            ("authorization", "Bearer forged"),
            ("dpop", "proof"),
            ("proxy-authorization", "Basic x"),
            ("proxy-foo", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-prefix", "/evil"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("host", "evil.example"),
            ("connection", "keep-alive, x-drop-me"),
            ("keep-alive", "timeout=5"),
            ("x-drop-me", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("expect", "100-continue"),
            ("accept", "application/json"),
            ("x-csrf", "1"),
            ("x-custom", "a"),
            ("x-custom", "b"),
        ]);
        let out = upstream_request(
            &incoming,
            &Added {
                bearer: Some("tok"),
                peer: Some([127, 0, 0, 1].into()),
                proto: "https",
                host: Some("app.example.com"),
                prefix: "/api",
                upgrade: None,
            },
        );
        let mut names: Vec<_> = out.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "x-csrf",
                "x-custom",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-prefix",
                "x-forwarded-proto",
            ]
        );
        assert_eq!(out["authorization"], "Bearer tok");
        assert!(out["authorization"].is_sensitive());
        assert_eq!(out["x-forwarded-for"], "127.0.0.1");
        assert_eq!(out["x-forwarded-host"], "app.example.com");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-prefix"], "/api");
        assert_eq!(out.get_all("x-custom").iter().count(), 2);
    }

    #[test]
    fn anonymous_requests_carry_no_authorization() {
        let incoming = map(&[("authorization", "Bearer forged")]);
        let out = upstream_request(
            &incoming,
            &Added {
                proto: "http",
                ..Added::default()
            },
        );
        assert!(!out.contains_key("authorization"));
        assert!(!out.contains_key("x-forwarded-for"));
        assert!(!out.contains_key("x-forwarded-prefix"));
    }

    #[test]
    fn chunked_requests_lose_a_stale_length() {
        let incoming = map(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        let out = upstream_request(&incoming, &Added::default());
        assert!(!out.contains_key("content-length"));
        assert!(!out.contains_key("transfer-encoding"));
        let sized = upstream_request(&map(&[("content-length", "5")]), &Added::default());
        assert_eq!(sized["content-length"], "5");
    }

    #[test]
    fn websocket_handshakes_get_our_upgrade_headers() {
        let incoming = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("sec-websocket-version", "13"),
        ]);
        let upgrade = HeaderValue::from_static("websocket");
        let out = upstream_request(
            &incoming,
            &Added {
                upgrade: Some(&upgrade),
                ..Added::default()
            },
        );
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["sec-websocket-key"], "k");
    }

    #[test]
    fn response_loses_own_cookies_and_hop_by_hop() {
        let upstream = map(&[
            ("set-cookie", "__Host-bff=planted; Path=/; Secure"),
            ("set-cookie", "__host-BFF=planted"),
            ("set-cookie", " __Host-bff-login =x"),
            ("set-cookie", "__Host-bff"),
            ("set-cookie", "theirs=1; Path=/"),
            ("set-cookie", "__Host-bff2=kept"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("content-type", "text/plain"),
            ("www-authenticate", "Bearer"),
            ("clear-site-data", "\"cookies\""),
            ("Clear-Site-Data", "\"*\""),
        ]);
        let out = browser_response(&upstream, &["__Host-bff", "__Host-bff-login"], false);
        let cookies: Vec<_> = out.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["theirs=1; Path=/", "__Host-bff2=kept"]);
        let mut names: Vec<_> = out.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["content-type", "set-cookie", "www-authenticate"]);
    }

    #[test]
    fn switching_protocols_keeps_the_upgrade() {
        let upstream = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "a"),
        ]);
        let out = browser_response(&upstream, &[], true);
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["sec-websocket-accept"], "a");
        assert!(!browser_response(&upstream, &[], false).contains_key("upgrade"));
    }
}
