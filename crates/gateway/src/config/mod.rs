//! The gateway's settings: a TOML file, every key overridable by an
//! environment variable.
//!
//! ```
//! use oidc_bff_gateway::config::GatewayConfig;
//!
//! let config = GatewayConfig::from_toml_str(
//!     r#"
//!     listen = "127.0.0.1:8080"
//!     public_url = "http://127.0.0.1:8080"
//!     [oidc]
//!     authority = "http://127.0.0.1:9000"
//!     client_id = "bff"
//!     client_secret = "secret"
//!     [[api]]
//!     path = "/api"
//!     upstream = "http://127.0.0.1:7000"
//!     token = "user"
//!     "#,
//!     [("OIDC_BFF__OIDC__REFRESH_MARGIN", "30")],
//! )
//! .unwrap();
//! assert_eq!(config.oidc.refresh_margin.as_secs(), 30);
//! assert!(!config.to_string().contains("secret\""));
//! ```
//!
//! An environment variable `OIDC_BFF__SECTION__KEY` (double underscore
//! between levels, any case) overrides `key` in `[section]`; entries of the
//! `[[api]]` and `[[frontend]]` lists are addressed by index:
//! `OIDC_BFF__API__0__UPSTREAM`, `OIDC_BFF__FRONTEND__1__OIDC__CLIENT_ID`.
//! Every problem found is reported with the key, and the line of the file or
//! the name of the environment variable it came from (see [`ConfigError`]).
//!
//! This module holds the schema; the rest is split by step:
//!
//! | file | holds |
//! |---|---|
//! | `sections.rs` | the plain sections: `[server]`, `[static]`, `[log]`, `[metrics]`, `[[api]]` |
//! | `frontend.rs` | `[[frontend]]` entries and their checks |
//! | `load.rs` | reading the file and the environment, turning serde's errors into [`Problem`]s |
//! | `validate.rs` | one check per section, all problems reported at once; builds the key ring and the proxy routes |
//! | `locate.rs` | the file line of a dotted key |
//! | `redact.rs` | secrets out of URLs, keys and error messages |
//! | `render.rs` | the settings as TOML (`check`), serialized from this schema |
//! | `tls.rs` | `[server.tls]` |

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::magic::RelativePathBuf;
use oidc_bff::OidcConfig;
use oidc_bff::TokenPolicy;
use oidc_bff::admin::AdminToken;
use oidc_bff::proxy::RemoteApi;
use oidc_bff::tokens::store::KeyRing;
use serde::{Deserialize, Serialize};
use url::Url;

mod frontend;
mod load;
mod locate;
mod redact;
mod render;
mod sections;
#[cfg(test)]
mod tests;
mod tls;
mod validate;

pub use frontend::FrontendConfig;
use frontend::RawFrontend;
pub(crate) use frontend::strip_port;
use load::Loader;
pub use sections::{
    ApiConfig, KNOWN_METHODS, LogConfig, LogFormat, MetricsConfig, ServerConfig, StaticFilesConfig,
};
use sections::{RawStaticFiles, secs};
pub use tls::TlsConfig;

/// The prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "OIDC_BFF__";

/// The gateway's complete, validated settings.
///
/// Its `Debug` output redacts secrets like `check` does: the client secret,
/// the encryption keys, and passwords in the store's URL. So does its
/// `Serialize` output, which is what `Display` (the TOML `check` prints)
/// is made from.
#[derive(Clone, Serialize)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The socket address to listen on (`listen`).
    pub listen: SocketAddr,
    /// The URL the browser uses to reach the gateway (`public_url`); the OIDC
    /// redirect URI is `{public_url}/bff/callback`.
    #[serde(serialize_with = "redact::url")]
    pub public_url: Url,
    /// The provider and token settings (`[oidc]`), with the client secret
    /// already read from `client_secret_file` when that is used.
    #[serde(serialize_with = "render::oidc")]
    pub oidc: OidcConfig,
    /// Sessions (`[session]`).
    pub session: SessionConfig,
    /// The anti-forgery header (`[csrf]`).
    pub csrf: CsrfConfig,
    /// The HTTP server (`[server]`).
    pub server: ServerConfig,
    /// The SPA's static files (`[static]`), if served by the gateway.
    #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_files: Option<StaticFilesConfig>,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// The operations listener (`[metrics]`): Prometheus metrics and, with
    /// `[admin]`, the admin API; off by default.
    #[serde(skip_serializing_if = "MetricsConfig::is_off")]
    pub metrics: MetricsConfig,
    /// The proxied APIs (`[[api]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api: Vec<ApiConfig>,
    /// The operator's session administration API (`[admin]`).
    #[serde(skip_serializing_if = "AdminConfig::is_off")]
    pub admin: AdminConfig,
    /// Further frontends (`[[frontend]]`), each with its own client,
    /// cookie, management path and APIs; the top-level settings are the
    /// default frontend.
    #[serde(rename = "frontend", skip_serializing_if = "Vec::is_empty")]
    pub frontends: Vec<FrontendConfig>,
    /// The file the settings were loaded from (what `SIGHUP` reloads).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Keys whose value came from an environment variable, with its name.
    #[serde(skip)]
    pub from_env: BTreeMap<String, String>,
    /// What validation built from the settings, used as it is by
    /// [`Gateway::new`](crate::Gateway::new).
    #[serde(skip)]
    built: Built,
}

/// The run-time objects built once, while the settings were validated.
#[derive(Clone, Default)]
struct Built {
    /// The keys of `session.encryption_keys`; `None` for the memory store.
    key_ring: Option<KeyRing>,
    /// One proxy route per `[[api]]` entry, in order.
    remote_apis: Vec<RemoteApi>,
    /// The admin API's bearer token, read from `admin.token_file` or
    /// `admin.token_env`.
    admin_token: Option<AdminToken>,
    /// One proxy route list per `[[frontend]]`, in order.
    frontend_apis: Vec<Vec<RemoteApi>>,
    /// A digest of each client's settings (`[oidc]` first, then each
    /// `[frontend.oidc]`), secrets and key files included: a reload keeps a
    /// frontend's token engine while its digest stays the same.
    oidc_digests: Vec<u64>,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("public_url", &redact::shown(&self.public_url))
            .field("oidc", &self.oidc)
            .field("session", &self.session)
            .field("csrf", &self.csrf)
            .field("server", &self.server)
            .field("static_files", &self.static_files)
            .field("log", &self.log)
            .field("metrics", &self.metrics)
            .field("api", &self.api)
            .field("metrics", &self.metrics)
            .field("admin", &self.admin)
            .field("frontends", &self.frontends)
            .field("from_env", &self.from_env)
            .finish_non_exhaustive()
    }
}

/// `[session]`: where sessions live and the session cookie.
///
/// Its `Debug` output shows the store's URL with passwords redacted and only
/// the ids of the encryption keys.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The session store (`store`, default `"memory"`): `"memory"`,
    /// `"sqlite://path/to/sessions.db"`, `"redis://host:6379"` or
    /// `"postgres://user@host:5432/db"`.
    #[serde(default, serialize_with = "redact::store")]
    pub store: StoreKind,
    /// The session cookie's name (`cookie_name`, default `__Host-bff`).
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Keys that encrypt tokens at rest in a persistent store
    /// (`encryption_keys`), each `"id:base64 of 32 bytes"`; the first
    /// encrypts, all decrypt. Required unless the store is `"memory"`.
    #[serde(default, serialize_with = "redact::keys")]
    pub encryption_keys: Vec<String>,
    /// Bound of every session store operation, in seconds
    /// (`operation_timeout`, default 2); past it the request gets 503.
    #[serde(default = "default_store_timeout", with = "secs")]
    pub operation_timeout: Duration,
    /// Prefix of the store's keys (Redis) or tables (SQL) (`prefix`; default
    /// `oidc-bff:` / `oidc_bff_`), so several applications can share one
    /// Redis or database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("store", &self.store)
            .field("cookie_name", &self.cookie_name)
            .field("encryption_keys", &redact::key_ids(&self.encryption_keys))
            .field("operation_timeout", &self.operation_timeout)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::default(),
            cookie_name: default_cookie_name(),
            encryption_keys: Vec::new(),
            operation_timeout: default_store_timeout(),
            prefix: None,
        }
    }
}

fn default_store_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_cookie_name() -> String {
    oidc_bff::DEFAULT_COOKIE_NAME.to_owned()
}

/// The session store (`session.store`). Its `Debug` output is
/// [`StoreKind::shown`]: passwords redacted.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[non_exhaustive]
pub enum StoreKind {
    /// In the gateway's memory: sessions end when it restarts (`"memory"`).
    #[default]
    Memory,
    /// An SQLite file (`"sqlite://relative.db"`, `"sqlite:///absolute.db"`):
    /// survives restarts; instances on one machine can share it.
    Sqlite(String),
    /// Redis (`"redis://host:6379/0"`, `"rediss://…"` over TLS,
    /// `"redis+sentinel://h1:26379,h2:26379/primary"`,
    /// `"redis+cluster://h1:7000,h2:7001"`), shared by many instances.
    Redis(String),
    /// PostgreSQL (`"postgres://user@host:5432/db"`), shared by many instances.
    Postgres(String),
}

impl fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            StoreKind::Memory => return f.write_str("Memory"),
            StoreKind::Sqlite(_) => "Sqlite",
            StoreKind::Redis(_) => "Redis",
            StoreKind::Postgres(_) => "Postgres",
        };
        f.debug_tuple(kind).field(&self.shown()).finish()
    }
}

impl StoreKind {
    /// The store's URL (`"memory"` for memory), any password redacted: the
    /// one of the user part, and the values of query parameters whose name
    /// suggests a secret (containing `pass`, `pwd`, `secret`, `token`, `key`,
    /// `auth`, `credential` or `sig`, in any case).
    pub fn shown(&self) -> String {
        match self {
            StoreKind::Memory => "memory".to_owned(),
            StoreKind::Sqlite(url) => match url.split_once('?') {
                Some((base, query)) => format!("{base}?{}", redact::redact_query(query)),
                None => url.clone(),
            },
            StoreKind::Redis(url) | StoreKind::Postgres(url) => match Url::parse(url) {
                Ok(parsed) => redact::shown(&parsed),
                // Several hosts (Sentinel, Cluster) are no URL authority.
                Err(_) => redact::shown_multi_host(url),
            },
        }
    }

    /// The URL to connect to; `None` for memory.
    pub fn url(&self) -> Option<&str> {
        match self {
            StoreKind::Memory => None,
            StoreKind::Sqlite(url) | StoreKind::Redis(url) | StoreKind::Postgres(url) => Some(url),
        }
    }
}

impl TryFrom<String> for StoreKind {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let scheme = value
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match scheme.as_str() {
            "memory" if value == "memory" => Ok(StoreKind::Memory),
            "sqlite" if value.len() > "sqlite:".len() => Ok(StoreKind::Sqlite(value)),
            "redis" | "rediss" | "redis+unix" | "unix" | "redis+sentinel" | "rediss+sentinel"
            | "redis+cluster" | "rediss+cluster"
                if value.contains("://") =>
            {
                Ok(StoreKind::Redis(value))
            }
            "postgres" | "postgresql" if value.contains("://") => Ok(StoreKind::Postgres(value)),
            "sqlite" | "redis" | "postgres" | "postgresql" => Err(format!(
                "give the {scheme} store as a URL, e.g. \"sqlite://sessions.db\", \
                 \"redis://127.0.0.1:6379\" or \"postgres://user@127.0.0.1:5432/db\""
            )),
            _ => Err(
                "unknown session store; expected \"memory\" or a sqlite://, redis:// \
                 or postgres:// URL"
                    .to_owned(),
            ),
        }
    }
}

/// `[csrf]`: the anti-forgery header that calls to the APIs and to
/// `/bff/user` must carry (default `X-CSRF: 1`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CsrfConfig {
    /// The header's name (`header`, default `"X-CSRF"`). Not one a page of
    /// another site may send without a CORS preflight (`Accept`,
    /// `Content-Type`, ...), nor one only the browser may set.
    #[serde(default = "default_csrf_header")]
    pub header: String,
    /// The value it must have (`value`, default `"1"`).
    #[serde(default = "default_csrf_value")]
    pub value: String,
}

impl Default for CsrfConfig {
    fn default() -> Self {
        Self {
            header: default_csrf_header(),
            value: default_csrf_value(),
        }
    }
}

fn default_csrf_header() -> String {
    "X-CSRF".to_owned()
}

fn default_csrf_value() -> String {
    "1".to_owned()
}

/// The file's layout, before validation. `[oidc]` is read separately into
/// [`OidcConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: SocketAddr,
    public_url: Url,
    /// Read separately (see `Loader::oidc`); here only its presence and type
    /// are checked.
    #[allow(dead_code)]
    oidc: figment::value::Dict,
    #[serde(default)]
    session: SessionConfig,
    #[serde(default)]
    csrf: CsrfConfig,
    #[serde(default)]
    server: ServerConfig,
    #[serde(default, rename = "static")]
    static_files: Option<RawStaticFiles>,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    api: Vec<ApiConfig>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    frontend: Vec<RawFrontend>,
}

/// `[admin]`: the session administration API on the operations listener.
/// Its bearer token is read from a file or an environment variable, never
/// written in the settings file.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct AdminConfig {
    /// A file holding the token (a trailing newline is ignored).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "render::opt_path"
    )]
    pub token_file: Option<PathBuf>,
    /// The name of an environment variable holding the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
}

impl AdminConfig {
    /// `true` when no admin API is configured.
    pub fn is_off(&self) -> bool {
        self.token_file.is_none() && self.token_env.is_none()
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    token_file: Option<RelativePathBuf>,
    #[serde(default)]
    token_env: Option<String>,
}

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A line of the config file.
    File {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
    },
    /// An environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// One problem in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The dotted key, e.g. `oidc.authority` or `api.0.upstream`, when known.
    pub key: Option<String>,
    /// Where the offending value (or its section) is, when known.
    pub origin: Option<Origin>,
    /// What is wrong. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The configuration could not be loaded: every problem found, each naming
/// its key and the file line or environment variable it came from.
///
/// ```text
/// bff.toml:4: `oidc.authority`: relative URL without a base
/// ```
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: None,
                origin: None,
                message: message.into(),
            }],
        }
    }
}

impl GatewayConfig {
    /// Loads the file at `path`, applying overrides from the process's
    /// environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads the file at `path`, applying overrides from `env` (pairs of
    /// variable name and value; only `OIDC_BFF__*` names are used).
    pub fn load_with_env<I, K, V>(path: &Path, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::single(format!("cannot read {}: {e}", path.display())))?;
        let mut config = Loader::new(text, Some(path.to_owned()), env)?.load()?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Reads settings from TOML text (relative paths are relative to the
    /// working directory), applying overrides from `env`.
    pub fn from_toml_str<I, K, V>(text: &str, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Loader::new(text.to_owned(), None, env)?.load()
    }

    /// The OIDC redirect URI to register at the provider.
    pub fn redirect_uri(&self) -> String {
        format!(
            "{}/bff/callback",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    /// The key ring of `session.encryption_keys`, built while the settings
    /// were validated; `None` for the memory store.
    pub fn key_ring(&self) -> Option<&KeyRing> {
        self.built.key_ring.as_ref()
    }

    /// The proxy route of each `[[api]]` entry, in order, built and checked
    /// while the settings were validated.
    pub fn remote_apis(&self) -> &[RemoteApi] {
        &self.built.remote_apis
    }

    /// The proxy routes of `[[frontend]]` entry `index`, built and checked
    /// while the settings were validated.
    pub fn frontend_apis(&self, index: usize) -> &[RemoteApi] {
        self.built
            .frontend_apis
            .get(index)
            .map_or(&[], Vec::as_slice)
    }

    /// A digest of a client's settings: `None` for the top-level `[oidc]`,
    /// `Some(i)` for `[[frontend]]` entry `i`. Equal digests mean the same
    /// client settings (secrets and key files included).
    pub(crate) fn oidc_digest(&self, frontend: Option<usize>) -> u64 {
        let index = frontend.map_or(0, |i| i + 1);
        self.built
            .oidc_digests
            .get(index)
            .copied()
            .unwrap_or_default()
    }

    /// The admin API's bearer token, when `[admin]` is configured.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.built.admin_token.as_ref()
    }
}

/// The configuration name of a token requirement.
pub fn token_name(token: TokenPolicy) -> &'static str {
    match token {
        TokenPolicy::None => "none",
        TokenPolicy::User => "user",
        TokenPolicy::Client => "client",
        TokenPolicy::UserOrClient => "user-or-client",
        TokenPolicy::UserOrNone => "user-or-none",
    }
}
