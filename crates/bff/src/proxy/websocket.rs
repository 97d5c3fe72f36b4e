//! WebSocket handshakes through the proxy.
//!
//! On a route with [`RemoteApi::websockets`](crate::proxy::RemoteApi::websockets)
//! enabled, an HTTP/1.1 `GET` with `Connection: upgrade` and
//! `Upgrade: websocket` is forwarded as a handshake (with the route's token,
//! like any request). When the upstream answers `101 Switching Protocols`,
//! the browser gets the `101` too, and the two upgraded connections are
//! joined byte for byte until either side closes. The WebSocket protocol
//! itself (frames, subprotocols, extensions) is the two ends' business.
//!
//! Browsers cannot add headers to a WebSocket handshake, so instead of the
//! anti-forgery header a handshake may carry an `Origin` equal to the BFF's
//! public origin: a page on another site cannot forge it.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use url::Url;

/// The `Upgrade` value of a WebSocket handshake request, if it is one.
pub(crate) fn handshake(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Option<HeaderValue> {
    if method != Method::GET || version != Version::HTTP_11 {
        return None;
    }
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers.get(header::UPGRADE)?;
    (connection_upgrade && upgrade.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .then(|| upgrade.clone())
}

/// Whether the handshake's `Origin` is the BFF's own public origin.
pub(crate) fn same_origin(headers: &HeaderMap, public_url: &Url) -> bool {
    let expected = public_url.origin().ascii_serialization();
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(origin), None) => origin.as_bytes().eq_ignore_ascii_case(expected.as_bytes()),
        _ => false,
    }
}

/// Joins the browser's connection (once its `101` is sent) with the
/// upstream's upgraded connection, in a task of its own.
pub(crate) fn bridge(client: OnUpgrade, upstream: reqwest::Response) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream.upgrade());
        let (client, mut upstream) = match (client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(err), _) => {
                tracing::debug!(error = %err, "the browser's WebSocket upgrade failed");
                return;
            }
            (_, Err(err)) => {
                tracing::debug!(error = %err.without_url(), "the upstream's WebSocket upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "WebSocket closed"),
            Err(err) => tracing::debug!(error = %err, "WebSocket ended"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn recognises_handshakes() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert!(handshake(&Method::GET, Version::HTTP_11, &ws).is_some());
        assert!(handshake(&Method::POST, Version::HTTP_11, &ws).is_none());
        assert!(handshake(&Method::GET, Version::HTTP_2, &ws).is_none());
        let h2c = headers(&[("connection", "upgrade"), ("upgrade", "h2c")]);
        assert!(handshake(&Method::GET, Version::HTTP_11, &h2c).is_none());
        let no_connection = headers(&[("upgrade", "websocket")]);
        assert!(handshake(&Method::GET, Version::HTTP_11, &no_connection).is_none());
    }

    #[test]
    fn checks_the_origin() {
        let public: Url = "https://app.example.com".parse().unwrap();
        assert!(same_origin(
            &headers(&[("origin", "https://app.example.com")]),
            &public
        ));
        for bad in [
            &[("origin", "https://evil.example")][..],
            &[("origin", "http://app.example.com")],
            &[("origin", "https://app.example.com.evil.example")],
            &[("origin", "null")],
            &[],
            &[
                ("origin", "https://app.example.com"),
                ("origin", "https://evil.example"),
            ],
        ] {
            assert!(!same_origin(&headers(bad), &public), "{bad:?}");
        }
    }
}
