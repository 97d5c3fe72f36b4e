//! Entry points for the fuzz targets under `fuzz/` (compiled only with
//! `--cfg fuzzing`, as `cargo fuzz` builds): the parsers that read what a
//! browser sends, which are not public API otherwise.

/// The value of cookie `name` in `Cookie` headers with these raw values,
/// as the BFF reads it.
pub fn read_cookie(values: &[&[u8]], name: &str) -> Option<String> {
    let mut headers = http::HeaderMap::new();
    for value in values {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            headers.append(http::header::COOKIE, value);
        }
    }
    crate::cookies::read(&headers, name).map(str::to_owned)
}

/// Whether the proxy forwards `path` under the local `prefix` (normalised
/// first, as [`RemoteApi`](crate::RemoteApi) does); the rest of the path
/// below the prefix when it does.
pub fn proxy_path(path: &str, prefix: &str) -> Option<String> {
    let prefix = crate::proxy::path::normalise_prefix(prefix);
    crate::proxy::path::remainder(path, &prefix)
        .ok()
        .map(str::to_owned)
}

/// The sign-in callback's query string as the BFF reads it: `Err` for a
/// duplicated parameter.
pub fn callback_query(raw: &str) -> Result<(), String> {
    crate::endpoints::parse_callback(raw)
        .map(|_| ())
        .map_err(|err| err.to_string())
}
