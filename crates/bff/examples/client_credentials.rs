//! A client that sends the BFF's own token (client credentials grant), in a
//! handler and in a background job.
//!
//! ```text
//! cargo run -p oidc-bff --example client_credentials
//! ```
//!
//! Starts a development IdP and a tiny API on loopback and registers the
//! client `catalog`, which carries a client-credentials token for the scope
//! `catalog.read`. Anonymous requests and a background job use it; the token
//! is fetched once and then served from the cache until shortly before it
//! expires.

use axum::{Router, routing::get};
use oidc_bff::client::{ApiClients, ClientRegistration};
use oidc_bff::{Bff, BffError, ClientCredentialsRequest, OidcConfig};

use axum::http::StatusCode;

mod support;

/// A handler: no user needed, the client's own token is sent.
async fn catalog(clients: ApiClients) -> Result<String, BffError> {
    let response = clients.get("catalog")?.get("items").send().await?;
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
    // The token endpoint comes from discovery; `.client_token_request(
    // ClientCredentialsRequest::default().token_endpoint(url))` sets another.
    .api_client(
        ClientRegistration::client("catalog", format!("{api}/catalog/")).scope("catalog.read"),
    )
    .build()?;

    let app = Router::new()
        .route("/api/catalog", get(catalog))
        .layer(bff.csrf_layer())
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Three anonymous browser requests...
    let browser = support::Browser::new(&app_url)?;
    for _ in 0..3 {
        let (status, body) = browser.api("/api/catalog").await?;
        println!("handler:         GET /api/catalog -> {status}: {body}");
        support::expect("handler", status, StatusCode::OK)?;
    }

    // ...and a background job, outside of any request: the same client.
    let job = bff.api_clients().get("catalog")?;
    let body = job
        .get("sync")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    println!("background job:  {body}");

    // The token itself, for other uses.
    let token = bff
        .engine()
        .client_access_token(&ClientCredentialsRequest::default().scope("catalog.read"))
        .await?;
    println!(
        "cached token:    {token:?} ({} bytes)",
        token.secret().len()
    );

    println!(
        "token requests at the IdP: {} (one, then served from the cache)",
        idp.counters().client_credentials_grants
    );
    let grants = idp.counters().client_credentials_grants;
    if grants != 1 {
        return Err(format!("expected one token request, the IdP saw {grants}").into());
    }
    idp.shutdown().await;
    Ok(())
}
