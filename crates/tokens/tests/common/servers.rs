//! Servers the tests start themselves, on loopback, from the Debian
//! binaries: a Redis Sentinel set-up, a three-primary Redis Cluster, a TLS
//! Redis and a PostgreSQL cluster with `ssl=on`, each with a certificate
//! authority generated here.
//!
//! Every server runs under a small shell watchdog that stops it and deletes
//! its temporary directory once the test process is gone, so nothing
//! outlives the test binary. A set-up is started once per test binary
//! ([`shared`]) and shared by its tests. A missing binary fails the test
//! under `CI=true` and skips it elsewhere ([`unavailable`]).
//!
//! This file stands alone (std, `rcgen` for [`Pki`]): the tokens crate's
//! tests use it as `common::servers`, the gateway's multi-instance test
//! includes the same file with
//! `#[path = "../../tokens/tests/common/servers.rs"] mod servers;`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Fails the test when `CI=true` (the set-up is required there), else
/// prints why it is skipped; the caller then returns.
pub fn unavailable(what: &str, err: &dyn std::fmt::Display) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required when CI=true but could not be used: {err}");
    }
    eprintln!("skipping: {what} is not available here ({err}); set CI=true to make this a failure");
}

/// A suffix no other directory of this process has.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{nanos}x{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of `program` on `PATH` (or one of `extra` directories).
pub fn find_binary(program: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn require(program: &str, extra: &[PathBuf]) -> Result<PathBuf, String> {
    find_binary(program, extra).ok_or_else(|| format!("{program} is not installed"))
}

/// A fresh temporary directory that the watchdog of the last server
/// started in it deletes.
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "oidc-bff-{what}-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Starts `program args…` in the background under a watchdog that stops it
/// (and deletes `cleanup`, if given) when this process exits; as `user` if
/// given (PostgreSQL refuses to run as root).
fn spawn_guarded(
    program: &Path,
    args: &[String],
    log: &Path,
    cleanup: Option<&Path>,
    user: Option<&str>,
) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let command: Vec<String> = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| quote(&a))
        .collect();
    let script = format!(
        "{cmd} >>{log} 2>&1 & c=$!; while [ -d /proc/{parent} ] && kill -0 $c 2>/dev/null; do sleep 0.5; done; \
         kill $c 2>/dev/null; wait $c; {rm}",
        cmd = command.join(" "),
        log = quote(&log.display().to_string()),
        parent = std::process::id(),
        rm = cleanup
            .map(|d| format!("rm -rf {}", quote(&d.display().to_string())))
            .unwrap_or_default(),
    );
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", "sh", "-c", &script]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the watchdog shell");
    // Reaped when it ends (its server stopped), so no zombie is left.
    std::thread::spawn(move || child.wait());
}

/// Runs `redis-cli args…` and returns its output.
fn redis_cli(args: &[&str]) -> Result<String, String> {
    let out = Command::new(require("redis-cli", &[])?)
        .args(args)
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Waits until `check` holds, for at most `limit`.
fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Result<(), String> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > limit {
            return Err(format!("{what} did not come up within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn redis_ping(port: u16) -> bool {
    redis_cli(&["-p", &port.to_string(), "ping"]).is_ok_and(|o| o.contains("PONG"))
}

/// Starts one `redis-server` on loopback with `extra` settings.
fn redis_server(dir: &Path, port: u16, extra: &[&str]) -> Result<(), String> {
    let bin = require("redis-server", &[])?;
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    spawn_guarded(
        &bin,
        &args,
        &dir.join(format!("redis-{port}.log")),
        Some(dir),
        None,
    );
    Ok(())
}

/// A Sentinel set-up: one primary, one replica, three Sentinels.
#[derive(Clone, Debug)]
pub struct Sentinel {
    pub primary_name: String,
    pub sentinel_ports: Vec<u16>,
    pub data_ports: [u16; 2],
}

impl Sentinel {
    /// `redis+sentinel://127.0.0.1:p1,…/name`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.primary_name)
    }

    /// Starts a new set-up (seconds).
    pub fn start() -> Result<Self, String> {
        require("redis-cli", &[])?;
        let dir = temp_dir("sentinel");
        let (primary, replica) = (free_port(), free_port());
        redis_server(&dir, primary, &[])?;
        redis_server(
            &dir,
            replica,
            &["--replicaof", "127.0.0.1", &primary.to_string()],
        )?;
        wait_for("the Redis primary", Duration::from_secs(30), || {
            redis_ping(primary)
        })?;
        wait_for("the Redis replica", Duration::from_secs(30), || {
            redis_cli(&["-p", &replica.to_string(), "info", "replication"])
                .is_ok_and(|o| o.contains("master_link_status:up"))
        })?;
        let name = "oidcbff".to_owned();
        let mut sentinel_ports = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = dir.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let bin = require("redis-server", &[])?;
            spawn_guarded(
                &bin,
                &[conf.display().to_string(), "--sentinel".into()],
                &dir.join(format!("sentinel-{port}.log")),
                Some(&dir),
                None,
            );
            sentinel_ports.push(port);
        }
        for port in &sentinel_ports {
            wait_for("a Sentinel", Duration::from_secs(30), || {
                redis_cli(&["-p", &port.to_string(), "sentinel", "replicas", &name])
                    .is_ok_and(|o| o.contains(&replica.to_string()))
            })?;
        }
        Ok(Self {
            primary_name: name,
            sentinel_ports,
            data_ports: [primary, replica],
        })
    }

    /// The port of the node the Sentinels call the primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let out = redis_cli(&[
            "-p",
            &self.sentinel_ports[0].to_string(),
            "sentinel",
            "get-master-addr-by-name",
            &self.primary_name,
        ])
        .ok()?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// `SENTINEL FAILOVER`: the replica becomes the primary.
    pub fn failover(&self) -> Result<String, String> {
        redis_cli(&[
            "-p",
            &self.sentinel_ports[0].to_string(),
            "sentinel",
            "failover",
            &self.primary_name,
        ])
    }
}

/// A Redis Cluster of three primaries, no replicas.
pub struct Cluster {
    pub ports: [u16; 3],
}

impl Cluster {
    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Starts a new Cluster (seconds).
    pub fn start() -> Result<Self, String> {
        require("redis-cli", &[])?;
        let dir = temp_dir("cluster");
        let ports = [free_port(), free_port(), free_port()];
        for port in ports {
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
            redis_server(
                &node_dir,
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    // The bus port would be the data port + 10000: one of its own.
                    "--cluster-port",
                    &free_port().to_string(),
                ],
            )?;
        }
        for port in ports {
            wait_for("a Cluster node", Duration::from_secs(30), || {
                redis_ping(port)
            })?;
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = redis_cli(&args)?;
        if !out.contains("All 16384 slots covered") {
            return Err(format!("redis-cli --cluster create failed: {out}"));
        }
        for port in ports {
            wait_for("the Cluster", Duration::from_secs(30), || {
                redis_cli(&["-p", &port.to_string(), "cluster", "info"])
                    .is_ok_and(|o| o.contains("cluster_state:ok"))
            })?;
        }
        Ok(Self { ports })
    }
}

/// A certificate authority and a server certificate it signed, as PEM
/// files in a directory of their own.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Another CA, which signed nothing here.
    pub other_ca: PathBuf,
}

impl Pki {
    /// A CA, and a server certificate for `127.0.0.1` only (so `localhost`
    /// is a wrong host name), valid for a day.
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "oidc-bff test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");

        let other_key = KeyPair::generate().expect("other CA key");
        let mut other = CertificateParams::new(Vec::<String>::new()).expect("other CA params");
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other_ca = other.self_signed(&other_key).expect("other CA");

        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Self {
            dir: dir.to_owned(),
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("server.pem", cert.pem()),
            key: write("server.key", key.serialize_pem()),
            other_ca: write("other-ca.pem", other_ca.pem()),
        }
    }
}

/// A Redis that speaks only TLS.
pub struct TlsRedis {
    pub port: u16,
    pub pki: Pki,
}

impl TlsRedis {
    /// `rediss://127.0.0.1:port?ca=…` (verifiable).
    pub fn url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}?ca={}",
            self.port,
            self.pki.ca.display()
        )
    }

    pub fn start() -> Result<Self, String> {
        require("redis-cli", &[])?;
        let dir = temp_dir("redis-tls");
        let pki = Pki::generate(&dir);
        let port = free_port();
        let port_s = port.to_string();
        let (cert, key, ca) = (
            pki.cert.display().to_string(),
            pki.key.display().to_string(),
            pki.ca.display().to_string(),
        );
        redis_server(
            &dir,
            0,
            &[
                "--tls-port",
                &port_s,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
            ],
        )?;
        wait_for("the TLS Redis", Duration::from_secs(30), || {
            redis_cli(&[
                "--tls",
                "--cacert",
                &ca,
                "-h",
                "127.0.0.1",
                "-p",
                &port_s,
                "ping",
            ])
            .is_ok_and(|o| o.contains("PONG"))
        })?;
        Ok(Self { port, pki })
    }
}

/// A private PostgreSQL cluster with `ssl=on`, trust authentication.
pub struct TlsPostgres {
    pub port: u16,
    pub pki: Pki,
}

impl TlsPostgres {
    /// `postgres://postgres@127.0.0.1:port/postgres?sslmode=verify-full&sslrootcert=…`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.pki.ca.display()
        )
    }

    pub fn start() -> Result<Self, String> {
        let bin_dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                let mut v: Vec<PathBuf> = d.flatten().map(|e| e.path().join("bin")).collect();
                v.sort();
                v.reverse();
                v
            })
            .unwrap_or_default();
        let initdb = require("initdb", &bin_dirs)?;
        let postgres = require("postgres", &bin_dirs)?;
        let dir = temp_dir("postgres-tls");
        let pki = Pki::generate(&dir);
        let data = dir.join("data");
        // initdb and postgres refuse to run as root: as the postgres user.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let user = root.then_some("postgres");
        if root {
            let owned = Command::new("chown")
                .args(["-R", "postgres:", &dir.display().to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !owned.success() {
                return Err("cannot hand the temp dir to the postgres user".into());
            }
        }
        let as_user = |program: &Path, args: &[&str]| {
            let mut c = match user {
                Some(u) => {
                    let mut c = Command::new("runuser");
                    c.args(["-u", u, "--"]).arg(program);
                    c
                }
                None => Command::new(program),
            };
            c.args(args).output()
        };
        let out = as_user(
            &initdb,
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )
        .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // The key must be private to the server's user.
        let key = dir.join("server.key");
        let _ = Command::new("chmod").arg("600").arg(&key).status();
        let port = free_port();
        spawn_guarded(
            &postgres,
            &[
                "-D".into(),
                data.display().to_string(),
                "-p".into(),
                port.to_string(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-c".into(),
                format!("unix_socket_directories={}", dir.display()),
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", pki.cert.display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
                "-c".into(),
                "fsync=off".into(),
            ],
            &dir.join("postgres.log"),
            Some(&dir),
            user,
        );
        wait_for("the TLS PostgreSQL", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::fs::read_to_string(dir.join("postgres.log"))
                    .is_ok_and(|l| l.contains("ready to accept connections"))
        })?;
        Ok(Self { port, pki })
    }
}

/// The set-ups a test binary shares.
pub static SENTINEL: OnceLock<Result<Sentinel, String>> = OnceLock::new();
pub static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
pub static TLS_REDIS: OnceLock<Result<TlsRedis, String>> = OnceLock::new();
pub static TLS_POSTGRES: OnceLock<Result<TlsPostgres, String>> = OnceLock::new();

/// A set-up started once per test binary and shared by its tests; `None`
/// (after the CI check) when it cannot be started.
pub fn shared<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    what: &str,
    start: impl FnOnce() -> Result<T, String>,
) -> Option<&'static T> {
    match cell.get_or_init(start) {
        Ok(t) => Some(t),
        Err(err) => {
            unavailable(what, err);
            None
        }
    }
}
