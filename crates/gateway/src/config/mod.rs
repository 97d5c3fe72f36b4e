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
//! `[[api]]` list are addressed by index: `OIDC_BFF__API__0__UPSTREAM`.
//! Every problem found is reported with the key, and the line of the file or
//! the name of the environment variable it came from (see [`ConfigError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format as _, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use oidc_bff::OidcConfig;
use oidc_bff::UserTokenRequest;
use oidc_bff::proxy::{RemoteApi, TokenRequirement};
use oidc_bff::tokens::ClientSecret;
use serde::Deserialize;
use url::Url;

/// The prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "OIDC_BFF__";

/// The gateway's complete, validated settings.
///
/// Its `Debug` output redacts secrets like `check` does: the client secret,
/// the encryption keys, and passwords in the store's URL.
#[derive(Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The socket address to listen on (`listen`).
    pub listen: SocketAddr,
    /// The URL the browser uses to reach the gateway (`public_url`); the OIDC
    /// redirect URI is `{public_url}/bff/callback`.
    pub public_url: Url,
    /// The provider and token settings (`[oidc]`), with the client secret
    /// already read from `client_secret_file` when that is used.
    pub oidc: OidcConfig,
    /// Sessions (`[session]`).
    pub session: SessionConfig,
    /// The anti-forgery header (`[csrf]`).
    pub csrf: CsrfConfig,
    /// The HTTP server (`[server]`).
    pub server: ServerConfig,
    /// The SPA's static files (`[static]`), if served by the gateway.
    pub static_files: Option<StaticFilesConfig>,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// The proxied APIs (`[[api]]`).
    pub api: Vec<ApiConfig>,
    /// Keys whose value came from an environment variable, with its name.
    pub from_env: BTreeMap<String, String>,
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("public_url", &shown(&self.public_url))
            .field("oidc", &self.oidc)
            .field("session", &self.session)
            .field("csrf", &self.csrf)
            .field("server", &self.server)
            .field("static_files", &self.static_files)
            .field("log", &self.log)
            .field("api", &self.api)
            .field("from_env", &self.from_env)
            .finish()
    }
}

/// `[session]`: where sessions live and the session cookie.
///
/// Its `Debug` output shows the store's URL with passwords redacted and only
/// the ids of the encryption keys.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SessionConfig {
    /// The session store (`store`, default `"memory"`): `"memory"`,
    /// `"sqlite://path/to/sessions.db"`, `"redis://host:6379"` or
    /// `"postgres://user@host:5432/db"`.
    #[serde(default)]
    pub store: StoreKind,
    /// The session cookie's name (`cookie_name`, default `__Host-bff`).
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Keys that encrypt tokens at rest in a persistent store
    /// (`encryption_keys`), each `"id:base64 of 32 bytes"`; the first
    /// encrypts, all decrypt. Required unless the store is `"memory"`.
    #[serde(default)]
    pub encryption_keys: Vec<String>,
    /// Bound of every session store operation, in seconds
    /// (`operation_timeout`, default 2); past it the request gets 503.
    #[serde(default = "default_store_timeout", with = "secs")]
    pub operation_timeout: Duration,
    /// Prefix of the store's keys (Redis) or tables (SQL) (`prefix`; default
    /// `oidc-bff:` / `oidc_bff_`), so several applications can share one
    /// Redis or database.
    #[serde(default)]
    pub prefix: Option<String>,
}

impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("store", &self.store)
            .field("cookie_name", &self.cookie_name)
            .field("encryption_keys", &key_ids(&self.encryption_keys))
            .field("operation_timeout", &self.operation_timeout)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// `id:[redacted]` for each `id:key` entry.
fn key_ids(keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|k| format!("{}:[redacted]", k.split(':').next().unwrap_or_default()))
        .collect()
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
    oidc_bff::config::DEFAULT_COOKIE_NAME.to_owned()
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
    /// Redis (`"redis://host:6379/0"`), shared by many instances.
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
                Some((base, query)) => format!("{base}?{}", redact_query(query)),
                None => url.clone(),
            },
            StoreKind::Redis(url) | StoreKind::Postgres(url) => match Url::parse(url) {
                Ok(parsed) => shown(&parsed),
                Err(_) => "[unparsable URL]".to_owned(),
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
            "redis" | "redis+unix" if value.contains("://") => Ok(StoreKind::Redis(value)),
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
#[derive(Clone, Debug, Deserialize)]
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

/// `[server]`: timeouts of the gateway's own HTTP server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Longest time to answer a request to the management endpoints, health
    /// checks and static files, in seconds (`request_timeout`, default 30).
    /// Proxied APIs have their own `timeout`.
    #[serde(default = "default_server_timeout", with = "secs")]
    pub request_timeout: Duration,
    /// How long in-flight requests may take to complete after SIGTERM or
    /// Ctrl-C, in seconds (`shutdown_timeout`, default 30).
    #[serde(default = "default_server_timeout", with = "secs")]
    pub shutdown_timeout: Duration,
    /// Threads that serve requests (`worker_threads`, default: one per core
    /// the process may use). With 1 the gateway runs on a single-threaded
    /// runtime, which costs less per request than a one-thread pool.
    #[serde(default)]
    pub worker_threads: Option<std::num::NonZeroUsize>,
}

impl ServerConfig {
    /// The number of threads that serve requests: `worker_threads`, or one
    /// per core this process may run on.
    pub fn threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            std::num::NonZeroUsize::get,
        )
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout: default_server_timeout(),
            shutdown_timeout: default_server_timeout(),
            worker_threads: None,
        }
    }
}

fn default_server_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[static]`: the SPA's files.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StaticFilesConfig {
    /// The directory to serve (`dir`, relative to the config file).
    pub dir: PathBuf,
    /// Answer unknown paths with `index.html`, for client-side routing
    /// (`spa_fallback`, default `true`).
    pub spa_fallback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticFiles {
    dir: RelativePathBuf,
    #[serde(default = "yes")]
    spa_fallback: bool,
}

fn yes() -> bool {
    true
}

/// `[log]`: the log's format and verbosity.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LogConfig {
    /// `"human"` (default) or `"json"` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `"info"` or `"info,oidc_bff=debug"`
    /// (`level`, default `"info"`); `RUST_LOG` takes precedence when set.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

/// The log format (`log.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// One `[[api]]` entry: a local path prefix proxied to an upstream API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The local path prefix, e.g. `/api` (`path`).
    pub path: String,
    /// The upstream base URL (`upstream`); `{path}/x` goes to `{upstream}/x`.
    pub upstream: Url,
    /// Which token to send (`token`, default `"user"`): `none`, `user`,
    /// `client`, `user-or-client`, `user-or-none`.
    #[serde(default = "default_token")]
    pub token: TokenRequirement,
    /// Scope of the token requested for this API (`scope`, optional).
    #[serde(default)]
    pub scope: Option<String>,
    /// RFC 8707 resource indicator of this API (`resource`, optional).
    #[serde(default)]
    pub resource: Option<String>,
    /// Total timeout of an upstream call until its response starts, in
    /// seconds (`timeout`, default 30).
    #[serde(default = "default_api_timeout", with = "secs")]
    pub timeout: Duration,
    /// Connect timeout to the upstream, in seconds (`connect_timeout`, default 5).
    #[serde(default = "default_connect_timeout", with = "secs")]
    pub connect_timeout: Duration,
    /// Proxy WebSocket upgrades (`websockets`, default `false`).
    #[serde(default)]
    pub websockets: bool,
}

impl ApiConfig {
    /// The proxy route for this entry.
    pub fn remote_api(&self) -> RemoteApi {
        let mut user = UserTokenRequest::default();
        if let Some(scope) = &self.scope {
            user = user.scope(scope.clone());
        }
        if let Some(resource) = &self.resource {
            user = user.resource(resource.clone());
        }
        RemoteApi::new(self.path.clone(), self.upstream.clone())
            .token(self.token)
            .user_token_request(user)
            .client_token_request(self.scope.clone(), self.resource.clone())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .websockets(self.websockets)
    }
}

fn default_token() -> TokenRequirement {
    TokenRequirement::User
}
fn default_api_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
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
    oidc: Dict,
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
    api: Vec<ApiConfig>,
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
        Loader::new(text, Some(path.to_owned()), env)?.load()
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
}

/// Loads and validates one configuration.
struct Loader {
    text: String,
    file: Option<PathBuf>,
    doc: toml_edit::ImDocument<String>,
    /// `OIDC_BFF__*` variables: dotted lowercase key → (name, value).
    env: BTreeMap<String, (String, String)>,
    problems: Vec<Problem>,
}

impl Loader {
    fn new<I, K, V>(text: String, file: Option<PathBuf>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let doc = toml_edit::ImDocument::parse(text.clone()).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            ConfigError {
                problems: vec![Problem {
                    key: None,
                    origin: match (&file, line) {
                        (Some(path), Some(line)) => Some(Origin::File {
                            path: path.clone(),
                            line,
                        }),
                        _ => None,
                    },
                    message: format!("invalid TOML: {}", e.message()),
                }],
            }
        })?;
        let env = env
            .into_iter()
            .filter_map(|(k, v)| {
                let name: String = k.into();
                let rest = name.strip_prefix(ENV_PREFIX)?;
                if rest.is_empty() || rest.split("__").any(str::is_empty) {
                    return None;
                }
                let key = rest
                    .split("__")
                    .collect::<Vec<_>>()
                    .join(".")
                    .to_ascii_lowercase();
                Some((key, (name, v.into())))
            })
            .collect();
        Ok(Self {
            text,
            file,
            doc,
            env,
            problems: Vec::new(),
        })
    }

    fn figment(&mut self) -> Figment {
        let base = match &self.file {
            Some(path) => Figment::from(Toml::file_exact(path)),
            None => Figment::from(Toml::string(&self.text)),
        };
        // Overrides of `[[api]]` entries are applied index by index to the
        // file's list; all other keys nest normally.
        let mut dict = Dict::new();
        let mut api = match base.find_value("api") {
            Ok(Value::Array(_, items)) => Some(items),
            _ => None,
        };
        // Numeric parts in numeric order, so `api.2` is added before `api.10`.
        let mut overrides: Vec<_> = self.env.iter().collect();
        overrides.sort_by_key(|(key, _)| {
            key.split('.')
                .map(|p| {
                    p.parse::<usize>()
                        .map_or_else(|_| p.to_owned(), |n| format!("{n:020}"))
                })
                .collect::<Vec<_>>()
        });
        for (key, (name, raw)) in overrides {
            let value = env_value(raw);
            let parts: Vec<&str> = key.split('.').collect();
            if let ["api", index, rest @ ..] = parts.as_slice() {
                let items = api.get_or_insert_with(Vec::new);
                let Ok(i) = index.parse::<usize>() else {
                    self.problems.push(Problem {
                        key: Some(key.clone()),
                        origin: Some(Origin::Env(name.clone())),
                        message: "entries of `api` are addressed by index, e.g. OIDC_BFF__API__0__UPSTREAM"
                            .into(),
                    });
                    continue;
                };
                if i > items.len() {
                    self.problems.push(Problem {
                        key: Some(key.clone()),
                        origin: Some(Origin::Env(name.clone())),
                        message: format!(
                            "only indexes 0 to {} of `api` exist; a new entry must use index {}",
                            items.len().saturating_sub(1),
                            items.len()
                        ),
                    });
                    continue;
                }
                if i == items.len() {
                    items.push(Value::from(Dict::new()));
                }
                if rest.is_empty() {
                    items[i] = value;
                } else if let Value::Dict(_, entry) = &mut items[i] {
                    insert_path(entry, rest, value);
                }
                continue;
            }
            insert_path(&mut dict, &parts, value);
        }
        if let Some(items) = api
            && self.env.keys().any(|k| k.starts_with("api."))
        {
            dict.insert("api".into(), Value::from(items));
        }
        base.merge(EnvOverrides { dict })
    }

    fn load(mut self) -> Result<GatewayConfig, ConfigError> {
        let figment = self.figment();
        let raw: Option<RawConfig> = match figment.extract_lossy::<RawConfig>() {
            Ok(raw) => Some(raw),
            Err(err) => {
                self.figment_problems(err, &[]);
                None
            }
        };
        let oidc = self.oidc(&figment);
        let (raw, oidc) = match (raw, oidc) {
            (Some(raw), Some(oidc)) if self.problems.is_empty() => (raw, oidc),
            _ => return Err(self.into_error()),
        };
        let static_files = raw.static_files.map(|s| StaticFilesConfig {
            dir: s.dir.relative(),
            spa_fallback: s.spa_fallback,
        });
        let from_env = self
            .env
            .iter()
            .map(|(k, (name, _))| (k.clone(), name.clone()))
            .collect();
        let config = GatewayConfig {
            listen: raw.listen,
            public_url: raw.public_url,
            oidc,
            session: raw.session,
            csrf: raw.csrf,
            server: raw.server,
            static_files,
            log: raw.log,
            api: raw.api,
            from_env,
        };
        self.validate(&config);
        if self.problems.is_empty() {
            Ok(config)
        } else {
            Err(self.into_error())
        }
    }

    /// Reads `[oidc]` into [`OidcConfig`], taking the client secret from
    /// `client_secret_file` when given.
    fn oidc(&mut self, figment: &Figment) -> Option<OidcConfig> {
        let mut dict = match figment.find_value("oidc") {
            Ok(Value::Dict(_, dict)) => dict,
            // RawConfig reports a missing or mistyped section.
            _ => return None,
        };
        let secret_file = dict.remove("client_secret_file").map(|_| {
            figment
                .extract_inner_lossy::<RelativePathBuf>("oidc.client_secret_file")
                .map_err(Box::new)
        });
        let secret_file = match secret_file {
            None => None,
            Some(Ok(path)) => Some(path.relative()),
            Some(Err(err)) => {
                self.figment_problems(*err, &[]);
                return None;
            }
        };
        let mut oidc = match Figment::from(Serialized::defaults(dict)).extract_lossy::<OidcConfig>()
        {
            Ok(oidc) => oidc,
            Err(err) => {
                self.figment_problems(err, &["oidc"]);
                return None;
            }
        };
        if let Some(path) = secret_file {
            if oidc.client_secret.is_some() {
                self.problem(
                    "oidc.client_secret_file",
                    "give either `client_secret` or `client_secret_file`, not both",
                );
                return None;
            }
            match std::fs::read_to_string(&path) {
                Ok(secret) => {
                    let secret = secret.trim_end_matches(['\r', '\n']);
                    if secret.is_empty() {
                        self.problem(
                            "oidc.client_secret_file",
                            format!("{} is empty", path.display()),
                        );
                        return None;
                    }
                    oidc.client_secret = Some(ClientSecret::new(secret));
                }
                Err(e) => {
                    self.problem(
                        "oidc.client_secret_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        Some(oidc)
    }

    fn validate(&mut self, c: &GatewayConfig) {
        match c.public_url.scheme() {
            "https" => {}
            "http" if is_loopback(&c.public_url) => {}
            "http" => self.problem(
                "public_url",
                "must be an https URL (http only for loopback): the session cookie is Secure",
            ),
            _ => self.problem("public_url", "must be an http(s) URL"),
        }
        if c.public_url.query().is_some() || c.public_url.fragment().is_some() {
            self.problem("public_url", "must not have a query or fragment");
        }

        match c.oidc.authority.scheme() {
            "https" => {}
            "http" if is_loopback(&c.oidc.authority) => {}
            _ => self.problem(
                "oidc.authority",
                "must be an https URL (http is accepted for loopback only)",
            ),
        }
        if c.oidc.client_id.is_empty() {
            self.problem("oidc.client_id", "must not be empty");
        }
        if !c.oidc.scopes.iter().any(|s| s == "openid") {
            self.problem("oidc.scopes", "must include \"openid\"");
        }
        for key in ["connect_timeout", "request_timeout"] {
            let value = if key == "connect_timeout" {
                c.oidc.connect_timeout
            } else {
                c.oidc.request_timeout
            };
            if value.is_zero() {
                self.problem(&format!("oidc.{key}"), "must be greater than zero");
            }
        }
        if self.problems.is_empty()
            && let Err(err) = c.oidc.validate()
        {
            self.problem("oidc", err.to_string());
        }

        if c.session.store != StoreKind::Memory {
            if c.session.encryption_keys.is_empty() {
                self.problem(
                    "session.encryption_keys",
                    "a persistent session store needs at least one key (\"id:base64 of 32 random \
                     bytes\", e.g. from `openssl rand -base64 32`): tokens are encrypted at rest",
                );
            } else if let Err(err) =
                oidc_bff::tokens::store::KeyRing::from_config(&c.session.encryption_keys)
            {
                self.problem("session.encryption_keys", err.to_string());
            }
        }
        if c.session.operation_timeout.is_zero() {
            self.problem("session.operation_timeout", "must be greater than zero");
        }
        let cookie = &c.session.cookie_name;
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.problem(
                "session.cookie_name",
                "may only hold letters, digits, '-', '_' and '.'",
            );
        }
        if let Err(why) = oidc_bff::csrf::check_header_name(&c.csrf.header) {
            self.problem("csrf.header", why);
        }
        if let Err(why) = oidc_bff::csrf::check_header_value(&c.csrf.value) {
            self.problem("csrf.value", why);
        }
        if c.server.request_timeout.is_zero() {
            self.problem("server.request_timeout", "must be greater than zero");
        }
        if let Some(s) = &c.static_files
            && !s.dir.is_dir()
        {
            self.problem(
                "static.dir",
                format!("{} is not a directory", s.dir.display()),
            );
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&c.log.level) {
            self.problem("log.level", format!("not a valid filter: {e}"));
        }

        let mut seen = Vec::new();
        for (i, api) in c.api.iter().enumerate() {
            let key = |k: &str| format!("api.{i}.{k}");
            let path = api.path.as_str();
            if !path.starts_with('/') || path.len() < 2 {
                self.problem(&key("path"), "must be a path like \"/api\"");
            } else if path.ends_with('/')
                || path.contains(['?', '#', '%', '*', '{', '}', ' '])
                || path.split('/').any(|s| s == "." || s == "..")
                || path.contains("//")
            {
                self.problem(
                    &key("path"),
                    "must be a plain path like \"/api\" (no trailing '/', no '..', '%', '*', '?' or '#')",
                );
            } else if is_under(path, "/bff")
                || is_under(path, "/healthz")
                || is_under(path, "/readyz")
            {
                self.problem(
                    &key("path"),
                    "collides with the gateway's own endpoints (/bff, /healthz, /readyz)",
                );
            } else if let Some(j) = seen
                .iter()
                .position(|p: &&str| is_under(path, p) || is_under(p, path))
            {
                self.problem(&key("path"), format!("overlaps with api.{j}.path"));
            }
            seen.push(path);
            if !matches!(api.upstream.scheme(), "http" | "https") || api.upstream.host().is_none() {
                self.problem(&key("upstream"), "must be an http(s) URL");
            }
            if api.upstream.query().is_some() || api.upstream.fragment().is_some() {
                self.problem(&key("upstream"), "must not have a query or fragment");
            }
            if matches!(
                api.token,
                TokenRequirement::Client | TokenRequirement::UserOrClient
            ) && c.oidc.client_secret.is_none()
            {
                self.problem(
                    &key("token"),
                    "client tokens need `oidc.client_secret` (or `oidc.client_secret_file`)",
                );
            }
            if !api.upstream.username().is_empty() || api.upstream.password().is_some() {
                self.problem(&key("upstream"), "must not hold credentials");
            }
            if api.timeout.is_zero() {
                self.problem(&key("timeout"), "must be greater than zero");
            }
            if api.connect_timeout.is_zero() {
                self.problem(&key("connect_timeout"), "must be greater than zero");
            }
            if self.problems.is_empty() {
                // The proxy's own checks, as a backstop.
                if let Err(err) = api.remote_api().validate() {
                    self.problem(&format!("api.{i}"), err.to_string());
                }
            }
        }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path: Vec<&str> = key.split('.').collect();
        let origin = self.origin(&path);
        self.problems.push(Problem {
            key: Some(key.to_owned()),
            origin,
            message: message.into(),
        });
    }

    /// Turns figment's errors into problems; `prefix` is the path of the
    /// value the failing extraction started at.
    fn figment_problems(&mut self, err: figment::Error, prefix: &[&str]) {
        for err in err {
            let mut path: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
            path.extend(err.path.iter().cloned());
            let (message, leaf) = match &err.kind {
                figment::error::Kind::UnknownField(field, expected) => (
                    if expected.is_empty() {
                        "unknown key".to_owned()
                    } else {
                        format!("unknown key; expected one of: {}", expected.join(", "))
                    },
                    Some(field.clone()),
                ),
                figment::error::Kind::MissingField(field) => {
                    ("missing required key".to_owned(), Some(field.to_string()))
                }
                kind => (kind.to_string(), None),
            };
            if let Some(leaf) = leaf
                && path.last() != Some(&leaf)
            {
                path.push(leaf);
            }
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let origin = self.origin(&parts);
            self.problems.push(Problem {
                key: (!path.is_empty()).then(|| path.join(".")),
                origin,
                message: redact_message(&message, &parts),
            });
        }
    }

    /// The environment variable that set `path`, else the line of the file
    /// holding it (or its closest enclosing table).
    fn origin(&self, path: &[&str]) -> Option<Origin> {
        let key = path.join(".");
        if let Some((name, _)) = self.env.get(&key) {
            return Some(Origin::Env(name.clone()));
        }
        let file = self
            .file
            .clone()
            .unwrap_or_else(|| PathBuf::from("<config>"));
        let offset = locate(&self.doc, path)?;
        Some(Origin::File {
            path: file,
            line: line_of(&self.text, offset),
        })
    }

    fn into_error(self) -> ConfigError {
        ConfigError {
            problems: self.problems,
        }
    }
}

/// Error messages of figment quote offending values; for secret keys only the
/// key is named.
fn redact_message(message: &str, path: &[&str]) -> String {
    if path.last().is_some_and(|k| k.contains("secret")) || path.contains(&"encryption_keys") {
        "invalid value".to_owned()
    } else {
        message.to_owned()
    }
}

/// Byte offset of the key at `path` in the document (or of the deepest
/// enclosing item found).
fn locate(doc: &toml_edit::ImDocument<String>, path: &[&str]) -> Option<usize> {
    locate_item(doc.as_item(), path, None)
}

fn locate_item(item: &toml_edit::Item, path: &[&str], found: Option<usize>) -> Option<usize> {
    use toml_edit::Item;
    let Some((part, rest)) = path.split_first() else {
        return found;
    };
    match item {
        Item::Table(table) => locate_table(table, part, rest, found),
        Item::ArrayOfTables(array) => match part.parse::<usize>().ok().and_then(|i| array.get(i)) {
            Some(table) => {
                let here = table.span().map(|s| s.start).or(found);
                match rest.split_first() {
                    Some((key, rest)) => locate_table(table, key, rest, here),
                    None => here,
                }
            }
            None => found,
        },
        Item::Value(value) => locate_value(value, path, found),
        Item::None => found,
    }
}

fn locate_table(
    table: &toml_edit::Table,
    key: &str,
    rest: &[&str],
    found: Option<usize>,
) -> Option<usize> {
    match table.get_key_value(key) {
        Some((k, v)) => {
            let here = k.span().or_else(|| v.span()).map(|s| s.start).or(found);
            locate_item(v, rest, here)
        }
        None => found,
    }
}

fn locate_value(value: &toml_edit::Value, path: &[&str], found: Option<usize>) -> Option<usize> {
    use toml_edit::Value;
    let Some((part, rest)) = path.split_first() else {
        return found;
    };
    match value {
        Value::InlineTable(table) => match table.get_key_value(part) {
            Some((k, v)) => {
                let here = k.span().or_else(|| v.span()).map(|s| s.start).or(found);
                locate_item(v, rest, here)
            }
            None => found,
        },
        Value::Array(array) => match part.parse::<usize>().ok().and_then(|i| array.get(i)) {
            Some(v) => locate_value(v, rest, v.span().map(|s| s.start).or(found)),
            None => found,
        },
        _ => found,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// Parses an environment value like figment's `Env` does, but keeps
/// scalars as strings: lossy extraction turns them into numbers or booleans
/// only where one is expected, so a numeric secret stays a string.
fn env_value(raw: &str) -> Value {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let Ok(value) = trimmed.parse::<Value>();
        if matches!(value, Value::Array(..) | Value::Dict(..)) {
            return value;
        }
    }
    Value::from(raw.to_owned())
}

fn insert_path(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// The environment overrides as a figment provider.
struct EnvOverrides {
    dict: Dict,
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A URL for display: the password of its user part and the values of
/// secret-looking query parameters (see [`StoreKind::shown`]) are replaced.
fn shown(url: &Url) -> String {
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
fn redact_query(query: &str) -> String {
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

impl fmt::Display for GatewayConfig {
    /// The resolved settings as TOML, secrets redacted; values set by an
    /// environment variable are marked with its name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = |key: &str| {
            self.from_env
                .get(key)
                .map(|name| format!("  # from {name}"))
                .unwrap_or_default()
        };
        let line = |f: &mut fmt::Formatter<'_>, key: &str, full: &str, value: String| {
            writeln!(f, "{key} = {value}{}", env(full))
        };
        let s = |v: &str| format!("{v:?}");
        let secs = |d: Duration| d.as_secs().to_string();
        line(f, "listen", "listen", s(&self.listen.to_string()))?;
        line(f, "public_url", "public_url", s(&shown(&self.public_url)))?;
        writeln!(f, "# redirect URI to register: {}", self.redirect_uri())?;

        let o = &self.oidc;
        writeln!(f, "\n[oidc]")?;
        line(f, "authority", "oidc.authority", s(&shown(&o.authority)))?;
        line(f, "client_id", "oidc.client_id", s(&o.client_id))?;
        let secret = if o.client_secret.is_some() {
            "\"[redacted]\""
        } else {
            "\"\"  # none: public client"
        };
        let secret_key = if self.from_env.contains_key("oidc.client_secret_file") {
            "oidc.client_secret_file"
        } else {
            "oidc.client_secret"
        };
        line(f, "client_secret", secret_key, secret.to_owned())?;
        line(f, "scopes", "oidc.scopes", format!("{:?}", o.scopes))?;
        line(
            f,
            "refresh_margin",
            "oidc.refresh_margin",
            secs(o.refresh_margin),
        )?;
        line(
            f,
            "default_token_lifetime",
            "oidc.default_token_lifetime",
            secs(o.default_token_lifetime),
        )?;
        line(f, "clock_leeway", "oidc.clock_leeway", secs(o.clock_leeway))?;
        line(
            f,
            "discovery_refresh",
            "oidc.discovery_refresh",
            secs(o.discovery_refresh),
        )?;
        line(
            f,
            "jwks_min_refetch",
            "oidc.jwks_min_refetch",
            secs(o.jwks_min_refetch),
        )?;
        line(
            f,
            "connect_timeout",
            "oidc.connect_timeout",
            secs(o.connect_timeout),
        )?;
        line(
            f,
            "request_timeout",
            "oidc.request_timeout",
            secs(o.request_timeout),
        )?;
        line(
            f,
            "refresh_lease",
            "oidc.refresh_lease",
            secs(o.refresh_lease),
        )?;
        line(
            f,
            "session_lifetime",
            "oidc.session_lifetime",
            secs(o.session_lifetime),
        )?;
        if let Some(idle) = o.idle_timeout {
            line(f, "idle_timeout", "oidc.idle_timeout", secs(idle))?;
        }
        line(
            f,
            "login_timeout",
            "oidc.login_timeout",
            secs(o.login_timeout),
        )?;
        line(
            f,
            "load_userinfo",
            "oidc.load_userinfo",
            o.load_userinfo.to_string(),
        )?;
        line(
            f,
            "revoke_on_logout",
            "oidc.revoke_on_logout",
            o.revoke_on_logout.to_string(),
        )?;

        writeln!(f, "\n[session]")?;
        line(f, "store", "session.store", s(&self.session.store.shown()))?;
        let key_ids = key_ids(&self.session.encryption_keys);
        line(
            f,
            "encryption_keys",
            "session.encryption_keys",
            format!("{key_ids:?}"),
        )?;
        line(
            f,
            "operation_timeout",
            "session.operation_timeout",
            secs(self.session.operation_timeout),
        )?;
        if let Some(prefix) = &self.session.prefix {
            line(f, "prefix", "session.prefix", s(prefix))?;
        }
        line(
            f,
            "cookie_name",
            "session.cookie_name",
            s(&self.session.cookie_name),
        )?;

        writeln!(f, "\n[csrf]")?;
        line(f, "header", "csrf.header", s(&self.csrf.header))?;
        line(f, "value", "csrf.value", s(&self.csrf.value))?;

        writeln!(f, "\n[server]")?;
        line(
            f,
            "request_timeout",
            "server.request_timeout",
            secs(self.server.request_timeout),
        )?;
        line(
            f,
            "shutdown_timeout",
            "server.shutdown_timeout",
            secs(self.server.shutdown_timeout),
        )?;
        let threads = match self.server.worker_threads {
            Some(n) => n.to_string(),
            None => format!("{}  # default: one per core", self.server.threads()),
        };
        line(f, "worker_threads", "server.worker_threads", threads)?;

        if let Some(st) = &self.static_files {
            writeln!(f, "\n[static]")?;
            line(f, "dir", "static.dir", s(&st.dir.display().to_string()))?;
            line(
                f,
                "spa_fallback",
                "static.spa_fallback",
                st.spa_fallback.to_string(),
            )?;
        }

        writeln!(f, "\n[log]")?;
        let format = match self.log.format {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        };
        line(f, "format", "log.format", s(format))?;
        line(f, "level", "log.level", s(&self.log.level))?;

        for (i, api) in self.api.iter().enumerate() {
            let k = |key: &str| format!("api.{i}.{key}");
            writeln!(f, "\n[[api]]")?;
            line(f, "path", &k("path"), s(&api.path))?;
            line(f, "upstream", &k("upstream"), s(&shown(&api.upstream)))?;
            line(f, "token", &k("token"), s(token_name(api.token)))?;
            if let Some(scope) = &api.scope {
                line(f, "scope", &k("scope"), s(scope))?;
            }
            if let Some(resource) = &api.resource {
                line(f, "resource", &k("resource"), s(resource))?;
            }
            line(f, "timeout", &k("timeout"), secs(api.timeout))?;
            line(
                f,
                "connect_timeout",
                &k("connect_timeout"),
                secs(api.connect_timeout),
            )?;
            line(
                f,
                "websockets",
                &k("websockets"),
                api.websockets.to_string(),
            )?;
        }
        Ok(())
    }
}

/// The configuration name of a token requirement.
pub fn token_name(token: TokenRequirement) -> &'static str {
    match token {
        TokenRequirement::None => "none",
        TokenRequirement::User => "user",
        TokenRequirement::Client => "client",
        TokenRequirement::UserOrClient => "user-or-client",
        TokenRequirement::UserOrNone => "user-or-none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
oidc = { authority = "http://127.0.0.1:9000", client_id = "bff" }

[[api]]
path = "/api"
upstream = "http://127.0.0.1:7000"
"#;

    fn load(env: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_toml_str(BASE, env.iter().copied())
    }

    #[test]
    fn numeric_env_values_stay_strings_for_string_keys() {
        let c = load(&[
            ("OIDC_BFF__OIDC__CLIENT_SECRET", "12345"),
            ("OIDC_BFF__OIDC__REFRESH_MARGIN", "45"),
            ("OIDC_BFF__OIDC__LOAD_USERINFO", "true"),
        ])
        .unwrap();
        assert_eq!(c.oidc.client_secret.unwrap().secret(), "12345");
        assert_eq!(c.oidc.refresh_margin, Duration::from_secs(45));
        assert!(c.oidc.load_userinfo);
    }

    #[test]
    fn api_entries_are_overridden_and_added_by_index() {
        let mut env = vec![
            ("OIDC_BFF__API__0__TOKEN", "none".to_owned()),
            ("OIDC_BFF__OIDC__CLIENT_SECRET", "s".to_owned()),
        ];
        // Indexes 1..=10, given out of numeric order.
        let names: Vec<(String, String)> = (1..=10)
            .rev()
            .flat_map(|i| {
                [
                    (format!("OIDC_BFF__API__{i}__PATH"), format!("/p{i}")),
                    (
                        format!("OIDC_BFF__API__{i}__UPSTREAM"),
                        "http://127.0.0.1:1".to_owned(),
                    ),
                ]
            })
            .collect();
        let c = GatewayConfig::from_toml_str(
            BASE,
            env.drain(..).map(|(k, v)| (k.to_owned(), v)).chain(names),
        )
        .unwrap();
        assert_eq!(c.api.len(), 11);
        assert_eq!(c.api[0].token, TokenRequirement::None);
        assert_eq!(c.api[10].path, "/p10");
        assert_eq!(c.from_env["api.0.token"], "OIDC_BFF__API__0__TOKEN");
    }

    #[test]
    fn inline_tables_are_located() {
        let err = GatewayConfig::from_toml_str(
            &BASE.replace("client_id = \"bff\"", "client_id = \"bff\", nope = 1"),
            std::iter::empty::<(String, String)>(),
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key.as_deref(), Some("oidc.nope"));
        assert!(
            matches!(err.problems[0].origin, Some(Origin::File { line: 4, .. })),
            "{err}"
        );
    }

    #[test]
    fn secret_query_parameters_are_redacted() {
        assert_eq!(
            redact_query("password=a&sslmode=disable&PassWord=b&x&api%5Fkey=c&Token=d&user=u"),
            "password=[redacted]&sslmode=disable&PassWord=[redacted]&x&api%5Fkey=[redacted]\
             &Token=[redacted]&user=u"
        );
        let store = StoreKind::Postgres(
            "postgres://u:pw1@h:5432/db?password=pw2&application_name=bff&client_secret=pw3"
                .to_owned(),
        );
        let shown = store.shown();
        for secret in ["pw1", "pw2", "pw3"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("application_name=bff"), "{shown}");
        let debug = format!("{store:?}");
        assert!(debug.starts_with("Postgres(\"postgres://u:"), "{debug}");
        for secret in ["pw1", "pw2", "pw3"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let sqlite = StoreKind::Sqlite("sqlite://s.db?mode=rwc&key=pw4".to_owned());
        assert_eq!(sqlite.shown(), "sqlite://s.db?mode=rwc&key=[redacted]");
    }

    #[test]
    fn secrets_are_not_quoted_in_errors() {
        let err = load(&[("OIDC_BFF__OIDC__CLIENT_SECRET", "[hunter2]")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(err.problems[0].key.as_deref(), Some("oidc.client_secret"));
    }
}
