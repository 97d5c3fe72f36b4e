//! The BFF's cookies: reading them from untrusted headers, writing them safely.
//!
//! The session cookie holds only a random session id and is `__Host-`
//! prefixed, `HttpOnly`, `Secure`, `SameSite=Strict`, `Path=/`. Browsers and
//! curl accept `Secure` cookies from `http://localhost` and `http://127.0.0.1`,
//! so development needs no exception. The sign-in transaction cookie is
//! `SameSite=Lax`, because the provider's redirect back is a cross-site
//! navigation.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, header};

/// The most bytes of `Cookie` headers inspected; the rest is ignored.
const MAX_COOKIE_BYTES: usize = 16 * 1024;

/// Finds the value of cookie `name` in the request's `Cookie` headers.
///
/// Tolerates garbage: non-UTF-8 bytes, missing `=`, oversized headers. Only
/// the first occurrence counts.
pub(crate) fn read<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut seen = 0usize;
    for value in headers.get_all(header::COOKIE) {
        let bytes = value.as_bytes();
        seen += bytes.len();
        if seen > MAX_COOKIE_BYTES {
            return None;
        }
        for pair in bytes.split(|b| *b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            if &pair[..eq] == name.as_bytes() {
                return std::str::from_utf8(trim(&pair[eq + 1..])).ok();
            }
        }
    }
    None
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if first.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = bytes {
        if last.is_ascii_whitespace() {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

/// A `Set-Cookie` value for a secure, host-only, HttpOnly cookie.
pub(crate) fn set(name: &str, value: &str, max_age: Duration, same_site: SameSite) -> HeaderValue {
    let cookie = Cookie::build((name, value))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(same_site)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .build();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that removes cookie `name`.
pub(crate) fn clear(name: &str, same_site: SameSite) -> HeaderValue {
    set(name, "", Duration::ZERO, same_site)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_the_named_cookie() {
        let h = headers(&[b"a=1; __Host-bff=abc ; b=2"]);
        assert_eq!(read(&h, "__Host-bff"), Some("abc"));
        assert_eq!(read(&h, "b"), Some("2"));
        assert_eq!(read(&h, "c"), None);
    }

    #[test]
    fn tolerates_garbage() {
        let h = headers(&[b"\xff\xfe; noequals; =; __Host-bff=\xff", b"x=1"]);
        assert_eq!(read(&h, "__Host-bff"), None);
        assert_eq!(read(&h, "x"), Some("1"));
        let big = vec![b'a'; MAX_COOKIE_BYTES + 1];
        assert_eq!(read(&headers(&[&big]), "a"), None);
    }

    #[test]
    fn writes_secure_cookies() {
        let v = set(
            "__Host-bff",
            "id",
            Duration::from_secs(60),
            SameSite::Strict,
        );
        let s = v.to_str().unwrap();
        for part in [
            "__Host-bff=id",
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(s.contains(part), "{s}");
        }
        assert!(!s.contains("Domain"));
    }
}
