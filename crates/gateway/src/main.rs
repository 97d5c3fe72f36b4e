//! The `oidc-bff` command; see `oidc-bff --help`.

fn main() -> std::process::ExitCode {
    oidc_bff_gateway::cli::main()
}
