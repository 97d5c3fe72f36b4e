//! A named HTTP client that manages the user's token itself.
//!
//! ```text
//! cargo run -p oidc-bff --example named_client
//! ```
//!
//! Starts a development IdP and a tiny API on loopback, registers the client
//! `apiClient` at start-up, signs a user in without a browser and calls a
//! handler that uses the client. The API receives the user's access token;
//! the handler never touches it. Then an anonymous caller gets 401.

use std::time::Duration;

use axum::{Router, routing::get};
use oidc_bff::client::{ApiClients, ClientRegistration};
use oidc_bff::{Bff, BffError, OidcConfig};

use axum::http::StatusCode;

mod support;

/// The handler: takes the client by name and calls the API.
async fn remote(clients: ApiClients) -> Result<String, BffError> {
    let api = clients.get("apiClient")?;
    // GET {api}/v1/remoteApi with `Authorization: Bearer <the user's token>`,
    // refreshed first if it is about to expire. No token to be had → 401.
    let response = api.get("remoteApi").send().await?;
    Ok(response.error_for_status()?.text().await?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let idp = oidc_bff_dev_idp::DevIdp::builder().start().await?;
    let api = support::start_api().await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app_url = format!("http://{}", listener.local_addr()?);
    let bff = Bff::builder(
        OidcConfig::builder(idp.issuer(), "bff")
            .client_secret("secret")
            .build()?,
    )
    .public_url(&app_url)
    // Registered once: a base URL and any reqwest settings.
    .api_client(
        ClientRegistration::user("apiClient", format!("{api}/v1/"))
            .configure(|http| http.timeout(Duration::from_secs(10))),
    )
    .build()?;

    let app = Router::new()
        .route("/api/remote", get(remote))
        .layer(bff.csrf_layer())
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = support::Browser::new(&app_url)?;
    browser.sign_in().await?;
    let (status, body) = browser.api("/api/remote").await?;
    println!("signed in:  GET /api/remote -> {status}: {body}");
    support::expect("signed in", status, StatusCode::OK)?;

    let anonymous = support::Browser::new(&app_url)?;
    let (status, body) = anonymous.api("/api/remote").await?;
    println!("anonymous:  GET /api/remote -> {status}: {body}");
    support::expect("anonymous", status, StatusCode::UNAUTHORIZED)?;

    idp.shutdown().await;
    Ok(())
}
