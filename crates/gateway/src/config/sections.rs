//! The plain sections of the file: `[server]`, `[static]`, `[log]`,
//! `[metrics]` and the `[[api]]` entries, with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::value::magic::RelativePathBuf;
use oidc_bff::TokenPolicy;
use oidc_bff::proxy::{RemoteApi, Require};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{redact, render};

/// `[server]`: timeouts of the gateway's own HTTP server, and its TLS.
#[derive(Clone, Debug, Deserialize, Serialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// Reload the settings when the file changes (`watch_config`, default
    /// `false`; its modification time is checked every second). `SIGHUP`
    /// reloads them either way.
    #[serde(default)]
    pub watch_config: bool,
    /// HTTPS served by the gateway itself (`[server.tls]`); plain HTTP
    /// without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::TlsConfig>,
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
            watch_config: false,
            tls: None,
        }
    }
}

fn default_server_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[static]`: the SPA's files.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct StaticFilesConfig {
    /// The directory to serve (`dir`, relative to the config file).
    #[serde(serialize_with = "render::path")]
    pub dir: PathBuf,
    /// Answer unknown paths with `index.html`, for client-side routing
    /// (`spa_fallback`, default `true`).
    pub spa_fallback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStaticFiles {
    pub(super) dir: RelativePathBuf,
    #[serde(default = "yes")]
    pub(super) spa_fallback: bool,
}

fn yes() -> bool {
    true
}

/// `[log]`: the log's format and verbosity.
#[derive(Clone, Debug, Deserialize, Serialize)]
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

/// `[metrics]`: the gateway's operations listener, which serves Prometheus
/// metrics on `GET /metrics` (see docs/OPERATIONS.md) and, with `[admin]`,
/// the session administration API. It is a listener of
/// its own, never the public one: put it on loopback or a private network.
///
/// ```toml
/// [metrics]
/// listen = "127.0.0.1:9464"
/// ```
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// The socket address of the operations listener (`listen`); none by
    /// default: no metrics are served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    /// `true` when there is no operations listener.
    pub fn is_off(&self) -> bool {
        self.listen.is_none()
    }
}

/// The log format (`log.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The local path prefix, e.g. `/api` (`path`).
    pub path: String,
    /// The upstream base URL (`upstream`); `{path}/x` goes to `{upstream}/x`.
    #[serde(serialize_with = "redact::url")]
    pub upstream: Url,
    /// Which token to send (`token`, default `"user"`): `none`, `user`,
    /// `client`, `user-or-client`, `user-or-none`.
    #[serde(default)]
    pub token: TokenPolicy,
    /// Scope of the token requested for this API (`scope`, optional; both
    /// user and client tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8707 resource indicator of this API (`resource`, optional; both
    /// user and client tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// What the route requires of the signed-in user's claims (`require =
    /// { groups = ["admin"] }`, `{ email_domain = "example.com" }`,
    /// `{ claim = "x", values = ["a"] }`); see [`Require`]. Default: nothing.
    #[serde(default, skip_serializing_if = "Require::is_empty")]
    pub require: Require,
    /// The only methods this API accepts (`methods`, e.g. `["GET", "POST"]`;
    /// default: every method). Others get 405 with an `Allow` header,
    /// before any token work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// How often a proxied WebSocket re-checks its session, in seconds
    /// (`websocket_session_check`, default 2). Sessions ended on this
    /// instance close their sockets at once.
    #[serde(default = "default_websocket_session_check", with = "secs")]
    pub websocket_session_check: Duration,
    /// Close a proxied WebSocket (code 4408) when its token has expired and
    /// cannot be renewed (`websocket_close_on_token_expiry`, default `false`).
    #[serde(default)]
    pub websocket_close_on_token_expiry: bool,
}

/// The methods `[[api]] methods` may name.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl ApiConfig {
    /// The proxy route for this entry.
    ///
    /// A loaded [`GatewayConfig`](super::GatewayConfig) holds these already, checked:
    /// [`GatewayConfig::remote_apis`](super::GatewayConfig::remote_apis).
    pub fn remote_api(&self) -> RemoteApi {
        let mut api = RemoteApi::new(self.path.clone(), self.upstream.clone()).token(self.token);
        if let Some(scope) = &self.scope {
            api = api.scope(scope.clone());
        }
        if let Some(resource) = &self.resource {
            api = api.resource(resource.clone());
        }
        if let Some(methods) = &self.methods {
            api = api.methods(
                methods
                    .iter()
                    .filter(|m| KNOWN_METHODS.contains(&m.as_str()))
                    .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok()),
            );
        }
        api.timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .websockets(self.websockets)
            .require(self.require.clone())
            .websocket_session_check(self.websocket_session_check)
            .websocket_close_on_token_expiry(self.websocket_close_on_token_expiry)
    }
}

fn default_api_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_websocket_session_check() -> Duration {
    Duration::from_secs(2)
}

pub(super) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}
