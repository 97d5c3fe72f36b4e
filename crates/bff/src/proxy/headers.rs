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

use crate::proxy::forward::Forwarded;

// Constants, so that the names are checked once at compile time rather than
// by `from_static` on every request (≈125 instructions each).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

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

/// Whether the `Connection` headers list `name` (compared without regard to case).
fn connection_lists(connection: &[&HeaderValue], name: &str) -> bool {
    connection
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(name))
}

fn is_hop_by_hop(name: &HeaderName, connection: &[&HeaderValue]) -> bool {
    let name = name.as_str();
    HOP_BY_HOP.contains(&name)
        || name.starts_with("proxy-")
        || (!connection.is_empty() && connection_lists(connection, name))
}

/// The `Connection` values of a header map; no allocation when there are none.
fn connection_values(headers: &HeaderMap) -> Vec<&HeaderValue> {
    headers.get_all(header::CONNECTION).iter().collect()
}

/// What the BFF adds to a forwarded request (the token aside: see
/// `Proxy::upstream_credentials`).
#[derive(Debug)]
pub(crate) struct Added<'a> {
    /// `X-Forwarded-For`: the TCP peer's address ([`forwarded_for`]).
    pub(crate) forwarded_for: Option<HeaderValue>,
    /// `X-Forwarded-Proto`, `-Host` and `-Prefix`, built once per route.
    pub(crate) forwarded: &'a Forwarded,
    /// The `Upgrade` protocol of a WebSocket handshake.
    pub(crate) upgrade: Option<&'a HeaderValue>,
}

/// Turns a client's request headers into the headers to send upstream, in
/// place: the common request (nothing to drop) costs no allocation here.
pub(crate) fn upstream_request(headers: &mut HeaderMap, added: &Added<'_>) {
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let mut unwanted = Unwanted::default();
    {
        let connection = connection_values(headers);
        for name in headers.keys() {
            let n = name.as_str();
            if is_hop_by_hop(name, &connection)
                || CLIENT_ONLY.contains(&n)
                || n.starts_with("x-forwarded-")
                || n.contains('_')
                // A message with both framings is read as chunked: the length is stale.
                || (chunked && name == header::CONTENT_LENGTH)
            {
                unwanted.push(name.clone());
            }
        }
    }
    unwanted.remove_from(headers);
    if let Some(value) = &added.forwarded_for {
        headers.insert(X_FORWARDED_FOR, value.clone());
    }
    let forwarded = added.forwarded;
    if let Some(value) = &forwarded.proto {
        headers.insert(X_FORWARDED_PROTO, value.clone());
    }
    if let Some(value) = &forwarded.host {
        headers.insert(X_FORWARDED_HOST, value.clone());
    }
    if let Some(value) = &forwarded.prefix {
        headers.insert(X_FORWARDED_PREFIX, value.clone());
    }
    if let Some(protocol) = added.upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// Header names to remove from a map once its keys have been looked at:
/// the usual few (`Cookie`, `Host`) without an allocation.
#[derive(Default)]
struct Unwanted {
    first: [Option<HeaderName>; 6],
    rest: Vec<HeaderName>,
}

impl Unwanted {
    fn push(&mut self, name: HeaderName) {
        match self.first.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(name),
            None => self.rest.push(name),
        }
    }

    fn remove_from(&self, headers: &mut HeaderMap) {
        for name in self.first.iter().flatten().chain(&self.rest) {
            headers.remove(name);
        }
    }
}

/// `Bearer <token>`, marked sensitive, built without a second copy of the
/// (~1 KB) token.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut value = Vec::with_capacity(7 + token.len());
    value.extend_from_slice(b"Bearer ");
    value.extend_from_slice(token.as_bytes());
    let mut value = HeaderValue::try_from(value)?;
    value.set_sensitive(true);
    Ok(value)
}

/// The peer's address for `X-Forwarded-For`. IPv4 is written by hand:
/// `Ipv4Addr`'s `Display` (padding support, one `fmt` call per octet) was 2%
/// of a proxied request's instructions (docs/BENCHMARKS.md).
pub(crate) fn forwarded_for(peer: std::net::IpAddr) -> Option<HeaderValue> {
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

/// Turns an upstream's response headers into the headers to send to the
/// browser, in place.
///
/// `own_cookies` are the BFF's cookie names; `switching` keeps the
/// `Upgrade` header of a `101 Switching Protocols`.
pub(crate) fn browser_response(headers: &mut HeaderMap, own_cookies: &[&str], switching: bool) {
    let upgrade = if switching {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let mut unwanted = Unwanted::default();
    let mut own_cookie = false;
    {
        let connection = connection_values(headers);
        for name in headers.keys() {
            if is_hop_by_hop(name, &connection) {
                unwanted.push(name.clone());
            } else if name.as_str() == CLEAR_SITE_DATA {
                tracing::warn!("dropped an upstream Clear-Site-Data header");
                unwanted.push(name.clone());
            } else if name == header::SET_COOKIE {
                own_cookie = headers
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .any(|v| sets_own_cookie(v, own_cookies));
            }
        }
    }
    unwanted.remove_from(headers);
    if own_cookie {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| {
                let own = sets_own_cookie(v, own_cookies);
                if own {
                    tracing::warn!(
                        "dropped an upstream Set-Cookie for one of the BFF's own cookies"
                    );
                }
                !own
            })
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for value in kept {
            headers.append(header::SET_COOKIE, value);
        }
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
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

    fn none() -> Forwarded {
        Forwarded {
            proto: None,
            host: None,
            prefix: None,
        }
    }

    fn added(forwarded: &Forwarded) -> Added<'_> {
        Added {
            forwarded_for: None,
            forwarded,
            upgrade: None,
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
        let mut out = incoming;
        let forwarded = Forwarded {
            proto: Some(HeaderValue::from_static("https")),
            host: Some(HeaderValue::from_static("app.example.com")),
            prefix: Some(HeaderValue::from_static("/api")),
        };
        upstream_request(
            &mut out,
            &Added {
                forwarded_for: forwarded_for([127, 0, 0, 1].into()),
                forwarded: &forwarded,
                upgrade: None,
            },
        );
        // What `Proxy::upstream_credentials` adds.
        out.insert(header::AUTHORIZATION, bearer("tok").unwrap());
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
        let mut out = map(&[("authorization", "Bearer forged")]);
        let forwarded = Forwarded {
            proto: Some(HeaderValue::from_static("http")),
            ..none()
        };
        upstream_request(&mut out, &added(&forwarded));
        assert!(!out.contains_key("authorization"));
        assert!(!out.contains_key("x-forwarded-for"));
        assert!(!out.contains_key("x-forwarded-prefix"));
    }

    #[test]
    fn chunked_requests_lose_a_stale_length() {
        let mut out = map(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
        let forwarded = none();
        upstream_request(&mut out, &added(&forwarded));
        assert!(!out.contains_key("content-length"));
        assert!(!out.contains_key("transfer-encoding"));
        let mut sized = map(&[("content-length", "5")]);
        upstream_request(&mut sized, &added(&forwarded));
        assert_eq!(sized["content-length"], "5");
    }

    #[test]
    fn websocket_handshakes_get_our_upgrade_headers() {
        let mut out = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("sec-websocket-version", "13"),
        ]);
        let upgrade = HeaderValue::from_static("websocket");
        let forwarded = none();
        upstream_request(
            &mut out,
            &Added {
                upgrade: Some(&upgrade),
                ..added(&forwarded)
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
        let mut out = upstream;
        browser_response(&mut out, &["__Host-bff", "__Host-bff-login"], false);
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
        let mut out = upstream.clone();
        browser_response(&mut out, &[], true);
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["sec-websocket-accept"], "a");
        let mut plain = upstream;
        browser_response(&mut plain, &[], false);
        assert!(!plain.contains_key("upgrade"));
    }
}
