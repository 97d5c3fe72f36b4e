//! Runs the development IdP on http://127.0.0.1:9000 until Ctrl-C.
//!
//! `cargo run -p oidc-bff-dev-idp --example dev_idp`

use oidc_bff_dev_idp::DevIdp;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let idp = DevIdp::builder()
        .client("bff", "secret")
        .start_on(([127, 0, 0, 1], 9000).into())
        .await?;
    println!("dev IdP listening: {}", idp.issuer());
    println!(
        "discovery: {}/.well-known/openid-configuration",
        idp.issuer()
    );
    println!("client: bff / secret (any loopback redirect URI); user: alice");
    tokio::signal::ctrl_c().await?;
    idp.shutdown().await;
    Ok(())
}
