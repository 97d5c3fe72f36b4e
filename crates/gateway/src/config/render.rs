//! The resolved settings as TOML, for `oidc-bff check`: the schema is
//! serialized (secrets redacted by its `serialize_with` helpers), then each
//! value set by an environment variable is marked with the variable's name.
//!
//! ```text
//! listen = "127.0.0.1:8080"
//! public_url = "http://127.0.0.1:8080/"
//! # redirect URI to register: http://127.0.0.1:8080/bff/callback
//!
//! [oidc]
//! authority = "http://127.0.0.1:9000/"
//! client_id = "bff"
//! client_secret = "[redacted]"
//! refresh_margin = 45  # from OIDC_BFF__OIDC__REFRESH_MARGIN
//! ...
//! ```

use std::fmt;
use std::path::Path;

use oidc_bff::OidcConfig;
use serde::{Serialize, Serializer};
use toml_edit::{DocumentMut, Item, Table, Value};
use url::Url;

use super::{GatewayConfig, redact};

/// `[oidc]` as shown. [`OidcConfig`] belongs to the token engine and has no
/// `Serialize`; this mirrors its keys, durations in seconds.
#[derive(Serialize)]
struct Oidc<'a> {
    #[serde(serialize_with = "redact::url")]
    authority: &'a Url,
    client_id: &'a str,
    /// `"[redacted]"`, or `""` for a public client.
    client_secret: &'static str,
    scopes: &'a [String],
    refresh_margin: u64,
    default_token_lifetime: u64,
    clock_leeway: u64,
    discovery_refresh: u64,
    jwks_min_refetch: u64,
    connect_timeout: u64,
    request_timeout: u64,
    refresh_lease: u64,
    session_lifetime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<u64>,
    login_timeout: u64,
    load_userinfo: bool,
    revoke_on_logout: bool,
    backchannel_logout_all_sessions: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_auth: Option<&'static str>,
    /// The key file's path; never the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_alg: Option<&'static str>,
    par: bool,
    /// DPoP: whether tokens are sender-constrained, and how. No key
    /// material: the keys live in sessions and the store.
    dpop: bool,
    dpop_alg: &'static str,
    allow_bearer_downgrade: bool,
}

/// Serializes `[oidc]`, the client secret redacted.
pub(super) fn oidc<S: Serializer>(o: &OidcConfig, s: S) -> Result<S::Ok, S::Error> {
    Oidc {
        authority: &o.authority,
        client_id: &o.client_id,
        client_secret: if o.client_secret.is_some() {
            "[redacted]"
        } else {
            ""
        },
        scopes: &o.scopes,
        refresh_margin: o.refresh_margin.as_secs(),
        default_token_lifetime: o.default_token_lifetime.as_secs(),
        clock_leeway: o.clock_leeway.as_secs(),
        discovery_refresh: o.discovery_refresh.as_secs(),
        jwks_min_refetch: o.jwks_min_refetch.as_secs(),
        connect_timeout: o.connect_timeout.as_secs(),
        request_timeout: o.request_timeout.as_secs(),
        refresh_lease: o.refresh_lease.as_secs(),
        session_lifetime: o.session_lifetime.as_secs(),
        idle_timeout: o.idle_timeout.map(|d| d.as_secs()),
        login_timeout: o.login_timeout.as_secs(),
        load_userinfo: o.load_userinfo,
        revoke_on_logout: o.revoke_on_logout,
        backchannel_logout_all_sessions: o.backchannel_logout_all_sessions,
        client_auth: o.client_auth.map(|m| m.as_str()),
        client_key: o.client_key.as_ref().map(|k| k.source()),
        client_key_id: o.client_key_id.as_deref(),
        client_key_alg: o.client_key_alg.map(|a| a.as_str()),
        par: o.par,
        dpop: o.dpop,
        dpop_alg: o.dpop_alg.as_str(),
        allow_bearer_downgrade: o.allow_bearer_downgrade,
    }
    .serialize(s)
}

/// Serializes a path as its display form (any path, UTF-8 or not).
pub(super) fn path<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.display().to_string())
}

/// Serializes an optional path as text (only called when it is set).
pub(super) fn opt_path<S: Serializer>(
    path: &Option<std::path::PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => s.serialize_str(&path.display().to_string()),
        None => s.serialize_none(),
    }
}

impl fmt::Display for GatewayConfig {
    /// The resolved settings as TOML, secrets redacted; values set by an
    /// environment variable are marked with its name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = toml::to_string(self).map_err(|_| fmt::Error)?;
        let mut doc: DocumentMut = text.parse().map_err(|_| fmt::Error)?;
        self.annotate(&mut doc);
        f.write_str(&doc.to_string())
    }
}

impl GatewayConfig {
    /// Adds the comments: where values came from, what a default means,
    /// the redirect URI to register.
    fn annotate(&self, doc: &mut DocumentMut) {
        if self.oidc.client_secret.is_none() && self.oidc.client_key.is_none() {
            comment(doc, "oidc.client_secret", "none: public client");
        }
        if let Some(key) = &self.oidc.client_key {
            // What to register at the provider: the key's type and `kid`.
            let kid = self
                .oidc
                .client_key_id
                .as_deref()
                .unwrap_or(key.thumbprint());
            comment(
                doc,
                "oidc.client_key",
                &format!("{} key, kid {kid}", key.key_type()),
            );
        }
        if self.server.worker_threads.is_none()
            && let Some(server) = doc.get_mut("server").and_then(Item::as_table_mut)
        {
            let threads = i64::try_from(self.server.threads()).unwrap_or(i64::MAX);
            server.insert("worker_threads", toml_edit::value(threads));
            comment(doc, "server.worker_threads", "default: one per core");
        }
        for (key, name) in &self.from_env {
            // The secret read from a file shows as `client_secret`.
            let key = match key.as_str() {
                "oidc.client_secret_file" => "oidc.client_secret",
                key => key,
            };
            comment(doc, key, &format!("from {name}"));
        }
        if let Some(oidc) = doc.get_mut("oidc").and_then(Item::as_table_mut) {
            oidc.decor_mut().set_prefix(format!(
                "# redirect URI to register: {}\n\n",
                self.redirect_uri()
            ));
        }
        if let Some(entries) = doc
            .get_mut("frontend")
            .and_then(Item::as_array_of_tables_mut)
        {
            for (entry, frontend) in entries.iter_mut().zip(&self.frontends) {
                if let Some(oidc) = entry.get_mut("oidc").and_then(Item::as_table_mut) {
                    oidc.decor_mut().set_prefix(format!(
                        "# redirect URI to register: {}\n",
                        frontend.redirect_uri(&self.public_url)
                    ));
                }
            }
        }
    }
}

/// Appends `  # {text}` to the line of the value at the dotted `key`, if
/// it is shown (a whole `[[api]]` entry set at once has no single line).
fn comment(doc: &mut DocumentMut, key: &str, text: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    if let Some(value) = value_at(doc.as_table_mut(), &parts) {
        let decor = value.decor_mut();
        let before = decor
            .suffix()
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned();
        decor.set_suffix(format!("{before}  # {text}"));
    }
}

/// The value at `path` below `table`; array-of-tables entries by index.
fn value_at<'a>(table: &'a mut Table, path: &[&str]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    match table.get_mut(first)? {
        Item::Value(value) if rest.is_empty() => Some(value),
        Item::Table(table) => value_at(table, rest),
        Item::ArrayOfTables(array) => {
            let (index, rest) = rest.split_first()?;
            value_at(array.get_mut(index.parse().ok()?)?, rest)
        }
        _ => None,
    }
}
