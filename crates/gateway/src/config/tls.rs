//! `[server.tls]`: the gateway terminates TLS itself. The files are read
//! and checked while the settings are validated (see `validate.rs`) and
//! again by the server, which reloads them when they change
//! ([`crate::tls`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Serialize};

use super::render;

/// `[server.tls]`: the certificate chain and private key the gateway serves
/// HTTPS with (HTTP/2 and HTTP/1.1, chosen by ALPN).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(from = "RawTls")]
#[non_exhaustive]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first (`cert`, relative to the
    /// config file).
    #[serde(serialize_with = "render::path")]
    pub cert: PathBuf,
    /// The private key of the leaf certificate, PEM: PKCS#8, PKCS#1 (RSA) or
    /// SEC1 (EC) (`key`, relative to the config file).
    #[serde(serialize_with = "render::path")]
    pub key: PathBuf,
    /// Reload the certificate and key when their files change (`reload`,
    /// default `true`). A new pair that does not load is logged and the
    /// previous one is kept.
    pub reload: bool,
    /// A plain-HTTP listener that redirects every request to `public_url`
    /// (`redirect_http`, e.g. `"0.0.0.0:80"`); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_http: Option<SocketAddr>,
}

impl TlsConfig {
    /// TLS with the certificate chain and key in these PEM files, reloaded
    /// when they change, without a redirecting listener.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            reload: true,
            redirect_http: None,
        }
    }
}

/// The section as written: paths relative to the file that holds them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: RelativePathBuf,
    key: RelativePathBuf,
    #[serde(default = "default_reload")]
    reload: bool,
    #[serde(default)]
    redirect_http: Option<SocketAddr>,
}

fn default_reload() -> bool {
    true
}

impl From<RawTls> for TlsConfig {
    fn from(raw: RawTls) -> Self {
        Self {
            cert: raw.cert.relative(),
            key: raw.key.relative(),
            reload: raw.reload,
            redirect_http: raw.redirect_http,
        }
    }
}
