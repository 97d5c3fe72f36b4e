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

use std::future::Future;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use oidc_bff_tokens::{SessionId, TokenError, UserTokenRequest};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use url::Url;

use crate::bff::Bff;

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

/// When proxied WebSockets end with their session; see
/// [`RemoteApi::websocket_session_check`](crate::proxy::RemoteApi::websocket_session_check).
#[derive(Clone, Debug)]
pub(crate) struct WebSocketSession {
    /// How often an open socket re-checks its session.
    pub(crate) check_every: Duration,
    /// Close with [`TOKEN_EXPIRED`] when the token has expired and cannot
    /// be renewed.
    pub(crate) close_on_token_expiry: bool,
}

impl Default for WebSocketSession {
    fn default() -> Self {
        WebSocketSession {
            check_every: Duration::from_secs(2),
            close_on_token_expiry: false,
        }
    }
}

/// A close frame's status code and reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Close {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

/// The session ended (signed out here or on another instance, back-channel
/// logout, refresh token rejected, idle or absolute timeout): sign in again.
pub(crate) const SESSION_ENDED: Close = Close {
    code: 4401,
    reason: "session ended",
};

/// The token the socket was opened with expired and could not be renewed
/// (provider unavailable); the session may still be alive: reconnect later.
pub(crate) const TOKEN_EXPIRED: Close = Close {
    code: 4408,
    reason: "token expired",
};

/// How long, after the close frame, the browser's close reply may take to
/// reach the upstream before both connections are dropped; also how long
/// the upstream may take to finish a frame it is in the middle of.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Watches the session a socket was opened in.
#[derive(Debug)]
pub(crate) struct SessionWatch {
    bff: Bff,
    id: SessionId,
    request: UserTokenRequest,
    settings: WebSocketSession,
}

impl SessionWatch {
    pub(crate) fn new(
        bff: Bff,
        id: SessionId,
        request: UserTokenRequest,
        settings: WebSocketSession,
    ) -> SessionWatch {
        SessionWatch {
            bff,
            id,
            request,
            settings,
        }
    }

    /// Resolves when the socket must close, with the close frame to send.
    ///
    /// Checks the session every `check_every`, and at once when a session
    /// ends on this instance. Once its token has expired, renews it as a
    /// request would: a rejected refresh ends the session.
    async fn ended(self) -> Close {
        let mut changed = self.bff.inner.sessions_ended.subscribe();
        let engine = self.bff.engine();
        loop {
            tokio::select! {
                moved = changed.changed() => {
                    if moved.is_err() {
                        // The BFF is gone: only the timer is left.
                        changed = self.bff.inner.sessions_ended.subscribe();
                    }
                }
                () = tokio::time::sleep(self.settings.check_every) => {}
            }
            let current = match engine.load_session(&self.id).await {
                Ok(Some(current)) => current,
                Ok(None) => return SESSION_ENDED,
                // The store is unavailable: keep the socket, look again later.
                Err(_) => continue,
            };
            if current.record.tokens.expires_at > engine.clock().now_unix() {
                continue;
            }
            match engine
                .user_access_token(&self.id, Some(&current), &self.request)
                .await
            {
                Ok(_) => {}
                Err(
                    TokenError::NotAuthenticated
                    | TokenError::NoRefreshToken
                    | TokenError::RefreshRejected { .. },
                ) => return SESSION_ENDED,
                Err(_) if self.settings.close_on_token_expiry => return TOKEN_EXPIRED,
                Err(_) => {}
            }
        }
    }
}

impl Bff {
    /// Wakes the session watch of every proxied WebSocket on this instance:
    /// a session ended here (sign-out, back-channel logout, a rejected
    /// refresh).
    pub(crate) fn sessions_changed(&self) {
        self.inner
            .sessions_ended
            .send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Joins the browser's connection (once its `101` is sent) with the
/// upstream's upgraded connection, in a task of its own. With a session
/// `watch`, the socket is closed when the session ends.
pub(crate) fn bridge(client: OnUpgrade, upstream: OnUpgrade, watch: Option<SessionWatch>) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        let (client, upstream) = match (client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(err), _) => {
                tracing::debug!(error = %err, "the browser's WebSocket upgrade failed");
                return;
            }
            (_, Err(err)) => {
                tracing::debug!(error = %err, "the upstream's WebSocket upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match watch {
            None => match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((up, down)) => tracing::debug!(up, down, "WebSocket closed"),
                Err(err) => tracing::debug!(error = %err, "WebSocket ended"),
            },
            Some(watch) => relay(client, upstream, watch.ended()).await,
        }
    });
}

/// Like `copy_bidirectional`, but when `ended` resolves the browser gets a
/// close frame, sent between two of the upstream's frames.
///
/// Only the upstream-to-browser direction is followed frame by frame, and
/// only its frame headers are read (the payload is copied as is): that is
/// enough to know where a close frame may go. The browser answers with its
/// own close frame, which still flows to the upstream, so the upstream sees
/// an ordinary close with the same code.
async fn relay<C, U>(client: C, upstream: U, ended: impl Future<Output = Close>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = async {
        let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
        copied
    };
    tokio::pin!(up, ended);
    let grace = tokio::time::sleep(Duration::from_secs(365 * 86_400));
    tokio::pin!(grace);
    let mut buf = vec![0; 16 * 1024];
    let mut frames = Frames::default();
    let mut up_done = false;
    let mut closing: Option<Close> = None;
    let close = loop {
        tokio::select! {
            copied = &mut up, if !up_done => {
                up_done = true;
                if copied.is_err() {
                    return;
                }
            }
            close = &mut ended, if closing.is_none() => {
                if frames.at_boundary() {
                    break close;
                }
                // In the middle of one of the upstream's frames: finish it first.
                closing = Some(close);
                grace.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            read = upstream_read.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        let _ = client_write.shutdown().await;
                        if !up_done {
                            let _ = (&mut up).await;
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                let take = frames.advance(&buf[..n], closing.is_some());
                if client_write.write_all(&buf[..take]).await.is_err() {
                    return;
                }
                if let Some(close) = closing.filter(|_| frames.at_boundary()) {
                    break close;
                }
            }
            () = &mut grace, if closing.is_some() => {
                tracing::debug!("the upstream did not finish its frame; WebSocket cut");
                return;
            }
        }
    };
    tracing::debug!(code = close.code, "closing a WebSocket: {}", close.reason);
    if client_write.write_all(&close_frame(close)).await.is_err() {
        return;
    }
    let _ = client_write.flush().await;
    // The browser's close reply still flows to the upstream; the upstream's
    // answer is read and dropped. Once the upstream hangs up (or the browser
    // does, or the grace period ends) both connections are dropped.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        loop {
            tokio::select! {
                _ = &mut up, if !up_done => return,
                read = upstream_read.read(&mut buf) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return;
                    }
                }
            }
        }
    })
    .await;
}

/// An unmasked close frame (a server's), with a status code and reason.
fn close_frame(close: Close) -> Vec<u8> {
    let reason = close.reason.as_bytes();
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88); // FIN + close
    frame.push(u8::try_from(2 + reason.len()).unwrap_or(2)); // < 126: one length byte
    frame.extend_from_slice(&close.code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// Where a byte stream of WebSocket frames is: in a frame header (`have`
/// bytes of it read), or in a payload (`payload` bytes left).
#[derive(Debug, Default)]
struct Frames {
    header: [u8; 14],
    have: usize,
    payload: u64,
}

impl Frames {
    /// Between two frames.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload == 0
    }

    /// Follows `data`; returns how much of it was taken: all of it, or with
    /// `stop_at_boundary` up to the first frame boundary.
    fn advance(&mut self, data: &[u8], stop_at_boundary: bool) -> usize {
        let mut i = 0;
        while i < data.len() {
            if stop_at_boundary && self.at_boundary() {
                break;
            }
            if self.payload > 0 {
                let left = (data.len() - i) as u64;
                let n = self.payload.min(left);
                self.payload -= n;
                i += usize::try_from(n).unwrap_or(data.len() - i);
                continue;
            }
            self.header[self.have] = data[i];
            self.have += 1;
            i += 1;
            if let Some(len) = payload_len(&self.header[..self.have]) {
                self.payload = len;
                self.have = 0;
            }
        }
        i
    }
}

/// The payload length once `header` holds a whole frame header.
fn payload_len(header: &[u8]) -> Option<u64> {
    let [_, second, ..] = *header else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let (extended, short) = match second & 0x7f {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(u64::from(n))),
    };
    let need = 2 + extended + if masked { 4 } else { 0 };
    if header.len() < need {
        return None;
    }
    Some(short.unwrap_or_else(|| {
        header[2..2 + extended]
            .iter()
            .fold(0, |len, b| (len << 8) | u64::from(*b))
    }))
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
    fn follows_frame_boundaries() {
        // A text frame "hi", a 300-byte binary frame (16-bit length), a masked ping.
        let mut stream = vec![0x81, 2, b'h', b'i', 0x82, 126, 1, 44];
        stream.extend(std::iter::repeat_n(7u8, 300));
        stream.extend([0x89, 0x80, 1, 2, 3, 4]);
        // Fed one byte at a time, the boundaries are where the frames end.
        let mut frames = Frames::default();
        let mut boundaries = Vec::new();
        for (i, byte) in stream.iter().enumerate() {
            assert_eq!(frames.advance(std::slice::from_ref(byte), false), 1);
            if frames.at_boundary() {
                boundaries.push(i + 1);
            }
        }
        assert_eq!(boundaries, [4, 308, 314]);
        // Stopping at a boundary takes the rest of the current frame only.
        let mut frames = Frames::default();
        assert_eq!(frames.advance(&stream[..6], false), 6);
        assert_eq!(frames.advance(&stream[6..], true), 302);
        assert!(frames.at_boundary());
        assert_eq!(frames.advance(&stream[308..], true), 0);
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        assert_eq!(
            close_frame(SESSION_ENDED),
            [&[0x88, 15, 0x11, 0x31][..], b"session ended"].concat()
        );
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
