//! HTTP endpoints and the helpers they share: parameter parsing, client
//! authentication, OAuth error answers and HTML pages.

pub(crate) mod authorize;
pub(crate) mod client_auth;
pub(crate) mod discovery;
pub(crate) mod end_session;
pub(crate) mod introspect;
pub(crate) mod par;
pub(crate) mod revoke;
pub(crate) mod token;
pub(crate) mod userinfo;

use std::collections::HashMap;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::Json;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use crate::state::Idp;

/// Parsed `application/x-www-form-urlencoded` parameters (query or body).
#[derive(Debug, Default)]
pub(crate) struct Params {
    map: HashMap<String, String>,
    /// RFC 8707 `resource` values (the only parameter that may repeat).
    pub(crate) resources: Vec<String>,
}

impl Params {
    /// Parses `raw`; a repeated parameter (other than `resource`) is an error,
    /// as RFC 6749 §3.1 / §3.2 require. Empty values count as absent.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut params = Params::default();
        for (k, v) in url::form_urlencoded::parse(raw) {
            if v.is_empty() {
                continue;
            }
            if k == "resource" {
                params.resources.push(v.into_owned());
            } else if params
                .map
                .insert(k.clone().into_owned(), v.into_owned())
                .is_some()
            {
                return Err(format!("parameter '{k}' repeated"));
            }
        }
        Ok(params)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }
}

/// A JSON OAuth error answer (`Cache-Control: no-store`).
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut body = json!({"error": error});
    if !description.is_empty() {
        body["error_description"] = description.into();
    }
    no_store((status, Json(body)).into_response())
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache`.
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A bare `400 Bad Request` JSON answer for malformed requests.
pub(crate) fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Authenticates the client with `client_secret_basic`,
/// `client_secret_post` or `private_key_jwt` (see `client_auth.rs`).
/// Returns the client id, or the error answer.
#[allow(clippy::result_large_err)] // the error is the finished HTTP answer
pub(crate) fn authenticate_client(
    idp: &Idp,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, Response> {
    if client_auth::uses_assertion(params) {
        return client_auth::authenticate_assertion(idp, headers, params);
    }
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => Some(parse_basic(value).ok_or_else(|| unauthorized_client(true))?),
        None => None,
    };
    let posted_secret = params.get("client_secret");
    let (client_id, secret, used_basic) = match (basic, posted_secret) {
        (Some(_), Some(_)) => {
            return Err(invalid_request(
                "more than one client authentication method used",
            ));
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|posted| posted != id) {
                return Err(unauthorized_client(true));
            }
            (id, secret, true)
        }
        (None, Some(secret)) => match params.get("client_id") {
            Some(id) => (id.to_owned(), secret.to_owned(), false),
            None => return Err(unauthorized_client(false)),
        },
        (None, None) => return Err(unauthorized_client(false)),
    };
    match idp.config.client(&client_id) {
        Some(client)
            if verify_slices_are_equal(client.secret.as_bytes(), secret.as_bytes()).is_ok() =>
        {
            Ok(client_id)
        }
        _ => Err(unauthorized_client(used_basic)),
    }
}

fn unauthorized_client(basic: bool) -> Response {
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "client authentication failed",
    );
    if basic {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"dev-idp\""),
        );
    }
    response
}

/// Decodes `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Extracts the bearer token of an `Authorization` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Whether the space-separated `scope` contains `wanted`.
pub(crate) fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split(' ').any(|s| s == wanted)
}

/// A small HTML page; `message` is escaped.
pub(crate) fn html_page(status: StatusCode, title: &str, message: &str) -> Response {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>",
        t = html_escape(title),
        m = html_escape(message)
    );
    no_store((status, Html(page)).into_response())
}

/// Escapes text for use in HTML element content and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A `302 Found` to `location`.
pub(crate) fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => no_store((StatusCode::FOUND, [(header::LOCATION, value)]).into_response()),
        Err(_) => html_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "invalid redirect location",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_reject_duplicates_but_collect_resources() {
        assert!(Params::parse(b"a=1&a=2").is_err());
        let p = Params::parse(b"resource=x&resource=y&b=%20z&empty=").unwrap();
        assert_eq!(p.resources, ["x", "y"]);
        assert_eq!(p.get("b"), Some(" z"));
        assert_eq!(p.get("empty"), None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode("my%3Aclient:s+e%26cret")
        ))
        .unwrap();
        assert_eq!(
            parse_basic(&header),
            Some(("my:client".into(), "s e&cret".into()))
        );
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic !!!")), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
