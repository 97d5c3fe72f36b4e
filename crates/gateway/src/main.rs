//! The `oidc-bff` command; see `oidc-bff --help`.

/// mimalloc instead of the system allocator: on the proxy path glibc's
/// malloc and free took 15% of the gateway's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    oidc_bff_gateway::cli::main()
}
