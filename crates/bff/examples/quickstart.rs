//! The smallest useful BFF: sign-in, the user endpoint, and a route that
//! gets the signed-in user's access token in one call.
//!
//! Runs against the development IdP so it works offline:
//!
//! ```text
//! cargo run -p oidc-bff --example quickstart
//! # then open http://127.0.0.1:3000/bff/login?returnUrl=/token
//! ```

use axum::{Router, routing::get};
use oidc_bff::{Bff, OidcConfig, UserAccessToken};

async fn token_info(UserAccessToken(token): UserAccessToken) -> String {
    // Use the token as a bearer token for your API; never send it to the browser.
    format!(
        "you have a valid access token of {} bytes\n",
        token.secret().len()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A development provider on loopback (use your real provider's URL instead).
    let idp = oidc_bff_dev_idp::DevIdp::builder().start().await?;

    let bff = Bff::builder(
        OidcConfig::builder(idp.issuer(), "bff")
            .client_secret("secret")
            .scopes(["openid", "profile", "offline_access"])
            .build()?,
    )
    .public_url("http://127.0.0.1:3000")
    .build()?;

    let app = Router::new()
        // Browsers navigate here directly, so no anti-forgery header in this demo;
        // API routes called with fetch() should add `.layer(bff.csrf_layer())`.
        .route("/token", get(token_info))
        .merge(bff.routes())
        .layer(bff.layer());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("provider: {}", idp.issuer());
    println!("open http://127.0.0.1:3000/bff/login?returnUrl=/token");
    axum::serve(listener, app).await?;
    Ok(())
}
