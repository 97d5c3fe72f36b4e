//! Path safety: which request paths may be forwarded, and where to.
//!
//! A request under the local prefix is forwarded to the upstream's base path
//! plus the rest of the request path, in the exact (percent-encoded) form the
//! client sent it. Before that, the rest is checked segment by segment and
//! refused when any reading of it could climb out of the base path:
//!
//! | refused | examples |
//! |---|---|
//! | dot segments, raw or encoded, at any decoding depth | `..`, `.`, `%2e%2e`, `.%2E`, `%252e%252e`, `..;jsessionid=x` |
//! | encoded separators | `%2f`, `%5c`, `%252f` |
//! | backslashes | `\`, `%5C` |
//! | empty segments | `//`, `/a//b` (a trailing `/` is fine) |
//! | malformed or non-UTF-8 encodings | `%zz`, `%2`, `%c0%ae` (overlong `.`) |
//! | control characters | `%00`, `%0a` |
//!
//! Absolute-form request targets (`GET http://host/... HTTP/1.1`) are refused
//! by the handler before the path is looked at. The query string is passed
//! through untouched.

use std::borrow::Cow;
use std::fmt;

/// How often a segment is percent-decoded while looking for hidden dots and
/// separators. Anything still encoded after that is refused.
const MAX_DECODE_ROUNDS: usize = 4;

/// Why a request path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathError {
    /// The path is not the local prefix or below it.
    NotUnderPrefix,
    /// A `.` or `..` segment, in any encoding.
    DotSegment,
    /// An empty segment (`//`).
    EmptySegment,
    /// An encoded `/` inside a segment.
    EncodedSlash,
    /// A backslash, raw or encoded.
    Backslash,
    /// A malformed percent-encoding, non-UTF-8 bytes or too deep an encoding.
    BadEncoding,
    /// A control character.
    ControlCharacter,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotUnderPrefix => "the path is outside the proxied prefix",
            PathError::DotSegment => "the path contains a dot segment",
            PathError::EmptySegment => "the path contains an empty segment",
            PathError::EncodedSlash => "the path contains an encoded slash",
            PathError::Backslash => "the path contains a backslash",
            PathError::BadEncoding => "the path is not properly percent-encoded",
            PathError::ControlCharacter => "the path contains a control character",
        })
    }
}

/// The part of `path` below `prefix` (`""` or starting with `/`), checked.
///
/// `prefix` is normalised: `""` for the root or `/name[/name...]` without a
/// trailing slash.
pub(crate) fn remainder<'p>(path: &'p str, prefix: &str) -> Result<&'p str, PathError> {
    let rest = path.strip_prefix(prefix).ok_or(PathError::NotUnderPrefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(PathError::NotUnderPrefix);
    }
    check(rest)?;
    Ok(rest)
}

/// Checks a path (empty or starting with `/`).
pub(crate) fn check(rest: &str) -> Result<(), PathError> {
    let Some(body) = rest.strip_prefix('/') else {
        return if rest.is_empty() {
            Ok(())
        } else {
            Err(PathError::NotUnderPrefix)
        };
    };
    // Walked without collecting the segments: no allocation per request.
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            if segments.peek().is_none() {
                continue; // a trailing slash
            }
            return Err(PathError::EmptySegment);
        }
        check_segment(segment)?;
    }
    Ok(())
}

/// Checks one segment in every decoding: as sent, decoded once (strictly: the
/// encoding must be well formed), and decoded again as long as that changes
/// anything (to catch double encoding such as `%252e`).
fn check_segment(segment: &str) -> Result<(), PathError> {
    let mut current: Cow<'_, [u8]> = Cow::Borrowed(segment.as_bytes());
    for round in 0..MAX_DECODE_ROUNDS {
        inspect(&current, round > 0)?;
        if !current.contains(&b'%') {
            return Ok(());
        }
        let decoded = decode(&current, round == 0)?;
        if decoded == *current {
            return Ok(()); // only stray '%' left: a literal percent sign
        }
        current = Cow::Owned(decoded);
    }
    Err(PathError::BadEncoding)
}

fn inspect(bytes: &[u8], decoded: bool) -> Result<(), PathError> {
    if bytes.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    if decoded && bytes.contains(&b'/') {
        return Err(PathError::EncodedSlash);
    }
    if bytes.iter().any(|b| b.is_ascii_control()) {
        return Err(PathError::ControlCharacter);
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(PathError::BadEncoding);
    }
    // `..;x` is `..` to servers that strip path parameters (Tomcat, Jetty).
    let name = bytes.split(|b| *b == b';').next().unwrap_or_default();
    if name == b"." || name == b".." {
        return Err(PathError::DotSegment);
    }
    Ok(())
}

/// Percent-decodes `bytes`. `strict`: a `%` must start a valid escape;
/// otherwise stray `%` are kept as they are.
fn decode(bytes: &[u8], strict: bool) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| Some(hex_value(h[0])? << 4 | hex_value(h[1])?));
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None if strict => return Err(PathError::BadEncoding),
                None => {}
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The upstream path for a checked remainder: the base path when the
/// remainder is empty, else the base path without its trailing slash plus the
/// remainder.
#[cfg(test)]
pub(crate) fn join(base_path: &str, rest: &str) -> String {
    let mut out = String::with_capacity(base_path.len() + rest.len());
    join_into(&mut out, base_path, rest);
    out
}

/// [`join`] into a buffer (the proxy appends the query to it).
pub(crate) fn join_into(out: &mut String, base_path: &str, rest: &str) {
    if rest.is_empty() {
        out.push_str(base_path);
    } else {
        out.push_str(base_path.trim_end_matches('/'));
        out.push_str(rest);
    }
}

/// Normalises a configured local prefix: `""` for the root, else
/// `/a/b` (leading slash, no trailing slash).
pub(crate) fn normalise_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        let ok = [
            ("/api", ""),
            ("/api/", "/"),
            ("/api/users", "/users"),
            ("/api/users/", "/users/"),
            ("/api/users/42/orders", "/users/42/orders"),
            ("/api/a%20b", "/a%20b"),
            ("/api/100%25", "/100%25"),
            ("/api/50%25off/x", "/50%25off/x"),
            ("/api/caf%C3%A9", "/caf%C3%A9"),
            ("/api/...", "/..."),
            ("/api/.well-known/x", "/.well-known/x"),
            ("/api/file.txt", "/file.txt"),
            ("/api/a..b", "/a..b"),
            ("/api/v1;v=2", "/v1;v=2"),
            ("/api/%3Fnot-a-query", "/%3Fnot-a-query"),
        ];
        for (path, rest) in ok {
            assert_eq!(remainder(path, "/api"), Ok(rest), "{path}");
        }
        assert_eq!(remainder("/anything/x", ""), Ok("/anything/x"));
        assert_eq!(remainder("/", ""), Ok("/"));
    }

    #[test]
    fn refuses_hostile_paths() {
        use PathError::*;
        let hostile = [
            ("/api/..", DotSegment),
            ("/api/../admin", DotSegment),
            ("/api/./x", DotSegment),
            ("/api/.", DotSegment),
            ("/api/x/../../admin", DotSegment),
            ("/api/%2e%2e/admin", DotSegment),
            ("/api/%2E%2E/admin", DotSegment),
            ("/api/.%2e/admin", DotSegment),
            ("/api/%2e./admin", DotSegment),
            ("/api/%2e/x", DotSegment),
            ("/api/%252e%252e/admin", DotSegment),
            ("/api/%25252e%25252e/admin", DotSegment),
            ("/api/..;/admin", DotSegment),
            ("/api/%2e%2e;x=1/admin", DotSegment),
            ("/api/..%2fadmin", EncodedSlash),
            ("/api/%2f", EncodedSlash),
            ("/api/a%2Fb", EncodedSlash),
            ("/api/%252f", EncodedSlash),
            ("/api/%2e%2e%2fadmin", EncodedSlash),
            ("/api/..\\admin", Backslash),
            ("/api/a\\b", Backslash),
            ("/api/%5c..", Backslash),
            ("/api/%5C", Backslash),
            ("/api/%255c", Backslash),
            ("/api//x", EmptySegment),
            ("/api//", EmptySegment),
            ("/api/a//b", EmptySegment),
            ("/api/%zz", BadEncoding),
            ("/api/%2", BadEncoding),
            ("/api/%", BadEncoding),
            ("/api/%u002e%u002e", BadEncoding),
            ("/api/%c0%ae%c0%ae/admin", BadEncoding),
            ("/api/%e0%80%ae", BadEncoding),
            ("/api/%ff", BadEncoding),
            ("/api/%2525252e", BadEncoding),
            ("/api/%00", ControlCharacter),
            ("/api/a%0d%0aX-Injected:%201", ControlCharacter),
            ("/api/%2500", ControlCharacter),
            ("/apix", NotUnderPrefix),
            ("/apix/../api", NotUnderPrefix),
            ("/other/api", NotUnderPrefix),
            ("/", NotUnderPrefix),
        ];
        for (path, why) in hostile {
            assert_eq!(remainder(path, "/api"), Err(why), "{path}");
        }
        assert_eq!(remainder("//x", ""), Err(EmptySegment));
        assert_eq!(remainder("/..", ""), Err(DotSegment));
    }

    #[test]
    fn joins_onto_the_base_path() {
        assert_eq!(join("/v1/", ""), "/v1/");
        assert_eq!(join("/v1/", "/"), "/v1/");
        assert_eq!(join("/v1/", "/users"), "/v1/users");
        assert_eq!(join("/v1", "/users"), "/v1/users");
        assert_eq!(join("/", "/users"), "/users");
        assert_eq!(join("/", ""), "/");
    }

    #[test]
    fn normalises_prefixes() {
        assert_eq!(normalise_prefix("/api"), "/api");
        assert_eq!(normalise_prefix("api/"), "/api");
        assert_eq!(normalise_prefix("/a/b/"), "/a/b");
        assert_eq!(normalise_prefix("/"), "");
        assert_eq!(normalise_prefix(""), "");
    }
}
