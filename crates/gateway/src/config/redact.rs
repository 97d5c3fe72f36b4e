//! Secrets out of what the gateway shows: passwords in URLs and their
//! secret-looking query parameters, encryption keys (only their ids are
//! shown), quoted values in error messages. The `serialize_with` helpers
//! here make the schema's `Serialize` output (and so `check`) redacted.

use serde::Serializer;
use url::Url;

use super::StoreKind;

/// `id:[redacted]` for each `id:key` entry.
pub(super) fn key_ids(keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| format!("{}:[redacted]", k.split(':').next().unwrap_or_default()))
        .collect()
}

/// Serializes a URL as [`shown`].
pub(super) fn url<S: Serializer>(url: &Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&shown(url))
}

/// Serializes an optional URL as [`shown`] (only called when set).
pub(super) fn opt_url<S: Serializer>(url: &Option<Url>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(&shown(url)),
        None => s.serialize_none(),
    }
}

/// Serializes a store as [`StoreKind::shown`].
pub(super) fn store<S: Serializer>(store: &StoreKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&store.shown())
}

/// Serializes encryption keys as their [`key_ids`].
pub(super) fn keys<S: Serializer>(keys: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(key_ids(keys))
}

/// Error messages of figment quote offending values; for secret keys only the
/// key is named.
pub(super) fn redact_message(message: &str, path: &[&str]) -> String {
    if path.last().is_some_and(|k| k.contains("secret")) || path.contains(&"encryption_keys") {
        "invalid value".to_owned()
    } else {
        message.to_owned()
    }
}

/// A URL for display: the password of its user part and the values of
/// secret-looking query parameters (see [`StoreKind::shown`]) are replaced.
pub(super) fn shown(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("[redacted]"));
    }
    if let Some(query) = url.query() {
        let redacted = redact_query(query);
        url.set_query(Some(&redacted));
    }
    url.to_string()
}

/// A store URL with several hosts (`redis+sentinel://u:pw@h1:1,h2:2/name`),
/// which is no URL to the `url` crate: the password of its user part and
/// secret-looking query parameters are replaced.
pub(super) fn shown_multi_host(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "[unparsable URL]".to_owned();
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = match rest.rsplit_once('@') {
        Some((user, hosts)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:[redacted]@{hosts}"),
            None => format!("{user}@{hosts}"),
        },
        None => rest.to_owned(),
    };
    match query {
        Some(q) => format!("{scheme}://{rest}?{}", redact_query(q)),
        None => format!("{scheme}://{rest}"),
    }
}

/// Parts of a parameter's name that mark its value as a secret.
const SECRET_PARAMS: [&str; 8] = [
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "sig",
];

/// A query string with the value of every secret-looking parameter replaced
/// by `[redacted]`; names are compared percent-decoded and in any case.
pub(super) fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            let decoded: String = url::form_urlencoded::parse(name.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            let decoded = decoded.to_ascii_lowercase();
            let secret = SECRET_PARAMS.iter().any(|s| decoded.contains(s));
            match value {
                Some(_) if secret => format!("{name}=[redacted]"),
                Some(value) => format!("{name}={value}"),
                None => name.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}
