//! `[[frontend]]`: further frontends served by the same gateway, each with
//! its own OpenID client, session cookie, management path, APIs and static
//! files, selected by host name and/or path prefix. The top-level `[oidc]`,
//! `[[api]]` and `[static]` are the default frontend, serving every request
//! no `[[frontend]]` selects.
//!
//! ```toml
//! [[frontend]]
//! name = "admin"
//! host = "admin.example.com"
//! cookie_name = "__Host-admin"
//! [frontend.oidc]
//! authority = "https://login.example.com"
//! client_id = "admin-spa"
//! client_secret_file = "admin-secret"
//! [[frontend.api]]
//! path = "/api"
//! upstream = "https://admin-api.internal"
//! ```

use oidc_bff::OidcConfig;
use oidc_bff::proxy::RemoteApi;
use serde::{Deserialize, Serialize};
use url::Url;

use super::validate::{self, Found, is_loopback, is_under};
use super::{ApiConfig, GatewayConfig, RawStaticFiles, StaticFilesConfig, redact, render};

/// One `[[frontend]]` entry.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct FrontendConfig {
    /// A name for logs (`name`, default `frontend.N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The `Host` this frontend answers (`host`, e.g. `"app.example.com"`):
    /// compared exactly but ignoring case, and ignoring the port unless
    /// one is given here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path prefix this frontend answers (`path`, e.g. `"/admin"`); the
    /// longest matching prefix wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The URL the browser reaches this frontend at (`public_url`); default:
    /// `http(s)://{host}` (with the scheme, and the port when `host` has
    /// none, of the top-level `public_url`), else the top-level `public_url`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact::opt_url"
    )]
    pub public_url: Option<Url>,
    /// The session cookie's name (`cookie_name`, default `__Host-bff`).
    /// Frontends that can share a host must use different names.
    pub cookie_name: String,
    /// Where the management endpoints are (`base_path`, default
    /// `{path}/bff`, or `/bff` without `path`).
    pub base_path: String,
    /// The OpenID client (`[frontend.oidc]`: the keys of `[oidc]`).
    #[serde(serialize_with = "render::oidc")]
    pub oidc: OidcConfig,
    /// The proxied APIs (`[[frontend.api]]`: the keys of `[[api]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api: Vec<ApiConfig>,
    /// The SPA's files (`[frontend.static]`: the keys of `[static]`).
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_files: Option<StaticFilesConfig>,
}

impl FrontendConfig {
    /// The URL the management endpoints and the redirect URI are built
    /// from, given the top-level `public_url`.
    pub fn effective_public_url(&self, default: &Url) -> Url {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let Some(host) = &self.host else {
            return default.clone();
        };
        let port = match (host.contains(':'), default.port()) {
            (false, Some(port)) => format!(":{port}"),
            _ => String::new(),
        };
        Url::parse(&format!("{}://{host}{port}/", default.scheme())).unwrap_or(default.clone())
    }

    /// The redirect URI to register at the provider for this frontend.
    pub fn redirect_uri(&self, default: &Url) -> String {
        format!(
            "{}{}/callback",
            self.effective_public_url(default)
                .as_str()
                .trim_end_matches('/'),
            self.base_path
        )
    }

    /// The host name (lowercase, without port) cookies of this frontend
    /// are bound to; `None` when it is selected by path only.
    pub(crate) fn cookie_host(&self) -> Option<String> {
        self.host
            .as_deref()
            .map(|h| strip_port(h).to_ascii_lowercase())
    }
}

/// `host` without a `:port` (IPv6 literals keep their brackets).
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

/// The layout of one `[[frontend]]` entry before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFrontend {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) host: Option<String>,
    #[serde(default)]
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) public_url: Option<Url>,
    #[serde(default)]
    pub(super) cookie_name: Option<String>,
    #[serde(default)]
    pub(super) base_path: Option<String>,
    /// Read separately, like the top-level `[oidc]`.
    #[allow(dead_code)]
    pub(super) oidc: figment::value::Dict,
    #[serde(default)]
    pub(super) api: Vec<ApiConfig>,
    #[serde(default, rename = "static")]
    pub(super) static_files: Option<RawStaticFiles>,
}

impl RawFrontend {
    /// The entry with its defaults filled in.
    pub(super) fn into_config(self, oidc: OidcConfig) -> FrontendConfig {
        let base_path = self.base_path.unwrap_or_else(|| {
            format!(
                "{}/bff",
                self.path.as_deref().unwrap_or("").trim_end_matches('/')
            )
        });
        FrontendConfig {
            name: self.name,
            host: self.host,
            path: self.path,
            public_url: self.public_url,
            cookie_name: self
                .cookie_name
                .unwrap_or_else(|| oidc_bff::DEFAULT_COOKIE_NAME.to_owned()),
            base_path,
            oidc,
            api: self.api,
            static_files: self.static_files.map(|s| StaticFilesConfig {
                dir: s.dir.relative(),
                spa_fallback: s.spa_fallback,
            }),
        }
    }
}

/// Checks every `[[frontend]]` entry and how they fit together: the proxy
/// routes of each.
pub(super) fn validate(c: &GatewayConfig, found: &mut Found) -> Vec<Vec<RemoteApi>> {
    let mut routes = Vec::with_capacity(c.frontends.len());
    for (i, f) in c.frontends.iter().enumerate() {
        let key = |k: &str| format!("frontend.{i}.{k}");
        if let Some(host) = &f.host
            && (host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
        {
            found.add(
                key("host"),
                "must be a host name, optionally with a port (e.g. \"app.example.com\"), \
                 without scheme or path",
            );
        }
        if let Some(path) = &f.path {
            if !plain_path(path) {
                found.add(
                    key("path"),
                    "must be a plain path like \"/app\" (no trailing '/', no '..', '%', '*', '?' or '#')",
                );
            } else if ["/bff", "/healthz", "/readyz"]
                .iter()
                .any(|own| is_under(path, own) || is_under(own, path))
            {
                found.add(
                    key("path"),
                    "collides with the gateway's own endpoints (/bff, /healthz, /readyz)",
                );
            }
        }
        if f.host.is_none() && f.path.is_none() {
            found.add(
                format!("frontend.{i}"),
                "needs `host` and/or `path`: requests no frontend selects go to the top-level one",
            );
        }
        let url = f.effective_public_url(&c.public_url);
        let url_key = if f.public_url.is_some() {
            key("public_url")
        } else {
            key("host")
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            _ => found.add(
                url_key.clone(),
                format!(
                    "the frontend's public URL {} must be https (http only for loopback): \
                     the session cookie is Secure",
                    url.as_str()
                ),
            ),
        }
        if url.query().is_some() || url.fragment().is_some() {
            found.add(url_key, "must not have a query or fragment");
        }
        if !plain_path(&f.base_path) {
            found.add(key("base_path"), "must be a plain path like \"/bff\"");
        } else if let Some(path) = &f.path
            && !is_under(&f.base_path, path)
        {
            found.add(
                key("base_path"),
                format!("must lie under the frontend's `path` ({path}), or its requests would go elsewhere"),
            );
        }
        let cookie = &f.cookie_name;
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            found.add(
                key("cookie_name"),
                "may only hold letters, digits, '-', '_' and '.'",
            );
        }
        validate::oidc(&f.oidc, &key("oidc"), found);
        let apis = validate::api(&f.api, &f.oidc, &key("api"), &f.base_path, found);
        if let Some(path) = &f.path {
            for (j, api) in f.api.iter().enumerate() {
                if !is_under(&api.path, path) {
                    found.add(
                        key(&format!("api.{j}.path")),
                        format!("must lie under the frontend's `path` ({path})"),
                    );
                }
            }
        }
        if let Some(s) = &f.static_files
            && !s.dir.is_dir()
        {
            found.add(
                key("static.dir"),
                format!("{} is not a directory", s.dir.display()),
            );
        }
        // Two entries selecting the same requests.
        for (j, other) in c.frontends[..i].iter().enumerate() {
            let same_host = match (&f.host, &other.host) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            };
            if same_host && f.path == other.path {
                found.add(
                    format!("frontend.{i}"),
                    format!("selects the same requests as frontend.{j} (same `host` and `path`)"),
                );
            }
        }
        // Cookies are per host, not per port or path: frontends that can
        // be reached on one host need their own cookie names.
        let names = |n: &str| [n.to_owned(), format!("{n}-login"), format!("{n}-logout")];
        let mine = names(cookie);
        let mut others: Vec<(String, Option<String>, String)> = vec![(
            "session.cookie_name".to_owned(),
            None,
            c.session.cookie_name.clone(),
        )];
        others.extend(c.frontends[..i].iter().enumerate().map(|(j, o)| {
            (
                format!("frontend.{j}.cookie_name"),
                o.cookie_host(),
                o.cookie_name.clone(),
            )
        }));
        for (other_key, host, name) in others {
            if host == f.cookie_host() && names(&name).iter().any(|n| mine.contains(n)) {
                found.add(
                    key("cookie_name"),
                    format!(
                        "`{cookie}` collides with `{other_key}` (`{name}`) on the same host: \
                         browsers keep cookies per host, not per port or path; give each \
                         frontend its own name"
                    ),
                );
            }
        }
        routes.push(apis);
    }
    routes
}

/// A path like `/app`: no trailing '/', no '..', no special characters.
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() >= 2
        && !path.ends_with('/')
        && !path.contains(['?', '#', '%', '*', '{', '}', ' '])
        && !path.split('/').any(|s| s == "." || s == "..")
        && !path.contains("//")
}
