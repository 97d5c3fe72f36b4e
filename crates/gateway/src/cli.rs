//! The command line: `oidc-bff serve | check | demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::GatewayError;
use crate::config::{GatewayConfig, LogConfig, LogFormat};
use crate::demo::{Demo, DemoOptions, DemoTls};
use crate::serve::{Gateway, shutdown_signal};

/// A Backend-for-Frontend gateway: OpenID Connect sign-in, server-side
/// sessions and APIs proxied with the user's access token.
#[derive(Debug, Parser)]
#[command(name = "oidc-bff", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway from a TOML file (keys can be overridden by OIDC_BFF__SECTION__KEY variables).
    Serve {
        /// The configuration file.
        #[arg(short, long, default_value = "bff.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the resolved settings, secrets redacted.
    Check {
        /// The configuration file.
        #[arg(short, long, default_value = "bff.toml")]
        config: PathBuf,
        /// Also fetch the provider's metadata and print each endpoint with
        /// where it was found (OpenID discovery, RFC 8414 metadata, or the
        /// configuration).
        #[arg(long)]
        discover: bool,
    },
    /// Start a dev IdP, a sample API and the gateway with a sample page, all on loopback.
    Demo(DemoArgs),
}

/// Options of `oidc-bff demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The gateway's address [default: 127.0.0.1:8080, or a free port if taken].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The dev IdP's port on 127.0.0.1 [default: 9000, or a free port if taken].
    #[arg(long)]
    pub idp_port: Option<u16>,
    /// The sample API's port on 127.0.0.1 [default: a free port].
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Access token lifetime at the dev IdP, in seconds.
    #[arg(long, default_value_t = 30)]
    pub token_lifetime: u64,
    /// Renew access tokens this many seconds before they expire.
    #[arg(long, default_value_t = 10)]
    pub refresh_margin: u64,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub json_logs: bool,
    /// Serve the page over HTTPS (HTTP/2) with a self-signed certificate,
    /// or the one given by --tls-cert and --tls-key.
    #[arg(long)]
    pub tls: bool,
    /// The certificate chain (PEM) for --tls.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM) for --tls.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Runs the command line; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, discover } => check(&config, discover),
        Command::Serve { config } => {
            let config = match GatewayConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: invalid configuration in {}:\n{e}", config.display());
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log);
            run(config.server.threads(), serve(config))
        }
        Command::Demo(args) => {
            let log = LogConfig {
                format: if args.json_logs {
                    LogFormat::Json
                } else {
                    LogFormat::Human
                },
                ..LogConfig::default()
            };
            init_logging(&log);
            let threads =
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            run(threads, demo(args))
        }
    }
}

fn check(path: &std::path::Path, discover: bool) -> ExitCode {
    match GatewayConfig::load(path) {
        Ok(config) => {
            println!("# {}: OK\n", path.display());
            print!("{config}");
            if discover {
                return run(1, print_endpoints(config.oidc.clone()));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: invalid configuration in {}:\n{e}", path.display());
            ExitCode::from(2)
        }
    }
}

/// Runs `job` on a runtime with `threads` worker threads; one thread means
/// a single-threaded runtime (on one core it serves a request with about a
/// sixth less CPU than a pool of one: docs/BENCHMARKS.md).
fn run(
    threads: usize,
    job: impl std::future::Future<Output = Result<(), GatewayError>>,
) -> ExitCode {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `check --discover`: the provider's endpoints and where each was found.
async fn print_endpoints(oidc: oidc_bff::OidcConfig) -> Result<(), GatewayError> {
    let client = oidc_bff::tokens::TokenEngine::builder(oidc)
        .build()
        .map_err(oidc_bff::BffError::from)?;
    let metadata = client
        .metadata_with_fallback()
        .await
        .map_err(oidc_bff::BffError::from)?;
    println!("\n# provider endpoints (where each was found)");
    let endpoints = [
        (
            "authorization_endpoint",
            Some(&metadata.authorization_endpoint),
        ),
        ("token_endpoint", Some(&metadata.token_endpoint)),
        ("jwks_uri", Some(&metadata.jwks_uri)),
        ("userinfo_endpoint", metadata.userinfo_endpoint.as_ref()),
        ("revocation_endpoint", metadata.revocation_endpoint.as_ref()),
        (
            "introspection_endpoint",
            metadata.introspection_endpoint.as_ref(),
        ),
        (
            "end_session_endpoint",
            metadata.end_session_endpoint.as_ref(),
        ),
    ];
    for (name, url) in endpoints {
        match (url, metadata.sources.get(name)) {
            (Some(url), Some(source)) => println!("{name} = \"{url}\"  # {source}"),
            (Some(url), None) => println!("{name} = \"{url}\""),
            (None, _) => println!("# {name}: none"),
        }
    }
    Ok(())
}

async fn serve(config: GatewayConfig) -> Result<(), GatewayError> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let gateway = Gateway::new(config)?;
    tracing::info!(
        listen = %listener.local_addr()?,
        public_url = %gateway.config().public_url,
        apis = gateway.config().api.len(),
        "oidc-bff gateway listening"
    );
    gateway.serve(listener, shutdown_signal()).await
}

async fn demo(args: DemoArgs) -> Result<(), GatewayError> {
    let options = DemoOptions {
        listen: args.listen,
        idp_port: args.idp_port,
        api_port: args.api_port,
        token_lifetime: Duration::from_secs(args.token_lifetime.max(1)),
        refresh_margin: Duration::from_secs(args.refresh_margin),
        log_format: if args.json_logs {
            LogFormat::Json
        } else {
            LogFormat::Human
        },
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(DemoTls::Files { cert, key }),
            _ if args.tls => Some(DemoTls::SelfSigned),
            _ => None,
        },
    };
    let demo = Demo::start(options).await?;
    println!();
    println!("  oidc-bff demo is running. Open:");
    println!();
    println!("      {}", demo.url());
    println!();
    println!(
        "  dev IdP     {}  (signs in \"alice\" without a form)",
        demo.idp().issuer()
    );
    println!(
        "  sample API  {}  (reached through the gateway at /api)",
        demo.api_url()
    );
    println!(
        "  metrics     {}  (the operations listener)",
        demo.metrics_url()
    );
    println!(
        "  tokens live {} s and are renewed {} s before they expire",
        args.token_lifetime.max(1),
        args.refresh_margin
    );
    println!();
    println!("  Press Ctrl-C to stop.");
    println!();
    shutdown_signal().await;
    demo.shutdown().await;
    Ok(())
}

/// Installs the global log subscriber: `RUST_LOG` if set, else `log.level`.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file are noise, and
    // writing them was a tenth of the gateway's CPU per proxied request
    // (docs/BENCHMARKS.md, "Proxy throughput").
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(crate::log_time::SecondCachedTime)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match (log.format, ansi) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Human, true) => builder.try_init(),
        (LogFormat::Human, false) => {
            let installed = builder.fmt_fields(plain_fields()).try_init();
            // The access log writes these lines itself, the same text
            // (crate::access_log).
            if installed.is_ok() {
                crate::access_log::write_lines_directly();
            }
            installed
        }
    };
}

/// The fields of a human log line without colours, as the default
/// formatter writes them (`message key=value ...`) but without passing each
/// name through the terminal-styling code, which it does even with colours
/// off: about 4% of the instructions of a proxied request went there for the
/// access log line (docs/BENCHMARKS.md, issue 13).
pub(crate) fn plain_fields()
-> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() == "message" {
            write!(writer, "{value:?}")
        } else {
            write!(writer, "{field}={value:?}")
        }
    })
    .delimited(" ")
}
