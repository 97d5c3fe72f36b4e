//! The certificate and key of `[server.tls]`: loaded with errors that name
//! the key at fault, served by a resolver whose pair can be swapped, and
//! reloaded when the files change.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// How often the files' modification times are compared.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The crypto provider of every TLS server of the gateway: the one
/// hyper-rustls, reqwest and the stores already use.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why a certificate and key did not load: the setting at fault and what
/// is wrong with its file. Never contains key material.
#[derive(Debug)]
pub(crate) struct CertProblem {
    /// `server.tls.cert` or `server.tls.key`.
    pub(crate) key: &'static str,
    /// What is wrong, naming the file.
    pub(crate) message: String,
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

const CERT: &str = "server.tls.cert";
const KEY: &str = "server.tls.key";

fn problem(key: &'static str, message: String) -> CertProblem {
    CertProblem { key, message }
}

/// Reads and checks the certificate chain and key files of `tls`: both PEM,
/// the key usable by the provider and matching the leaf certificate.
pub(crate) fn load(tls: &TlsConfig) -> Result<Arc<CertifiedKey>, CertProblem> {
    let cert_pem = read(CERT, &tls.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            problem(
                CERT,
                format!("{}: not a PEM certificate: {e}", tls.cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(problem(
            CERT,
            format!(
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
                tls.cert.display()
            ),
        ));
    }
    let key_pem = read(KEY, &tls.key)?;
    // The parser's message never quotes the key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        problem(
            KEY,
            format!(
                "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                tls.key.display()
            ),
        )
    })?;
    let signing = provider().key_provider.load_private_key(key).map_err(|e| {
        problem(
            KEY,
            format!("{}: unusable private key: {e}", tls.key.display()),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(problem(
            KEY,
            format!(
                "{} does not match the certificate in {}",
                tls.key.display(),
                tls.cert.display()
            ),
        )),
        Err(e) => Err(problem(
            CERT,
            format!("{}: not a usable certificate: {e}", tls.cert.display()),
        )),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, CertProblem> {
    std::fs::read(path).map_err(|e| problem(key, format!("cannot read {}: {e}", path.display())))
}

/// Serves the current certificate and key; [`spawn_reload`] replaces them.
#[derive(Debug)]
pub(crate) struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    pub(crate) fn new(first: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(first),
        }
    }

    fn set(&self, next: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

/// What identifies one version of a file: its modification time and size
/// (`None` while it cannot be read).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Every [`RELOAD_INTERVAL`], reloads the pair into `resolver` when either
/// file changed. A pair that does not load (a key written after its
/// certificate, a broken file) is logged and the pair in use kept; it is
/// tried again when a file changes again.
pub(crate) fn spawn_reload(tls: TlsConfig, resolver: Arc<Resolver>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = (stamp(&tls.cert), stamp(&tls.key));
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = (stamp(&tls.cert), stamp(&tls.key));
            if now == seen {
                continue;
            }
            seen = now;
            let loaded = {
                let tls = tls.clone();
                tokio::task::spawn_blocking(move || load(&tls)).await
            };
            match loaded {
                Ok(Ok(pair)) => {
                    resolver.set(pair);
                    tracing::info!(cert = %tls.cert.display(), "TLS certificate reloaded");
                }
                Ok(Err(problem)) => {
                    tracing::warn!(error = %problem, "the changed TLS certificate or key does not load; still serving the previous one");
                }
                Err(err) => tracing::error!(error = %err, "the TLS reload failed"),
            }
        }
    })
}
