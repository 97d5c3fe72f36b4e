//! A typed HTTP client: your own type around a managed client, received
//! directly as a handler argument.
//!
//! ```text
//! cargo run -p oidc-bff --example typed_client
//! ```
//!
//! Starts a development IdP and a tiny API on loopback, registers
//! `MyTypedApiClient` once at start-up, signs a user in without a browser
//! and calls a handler that takes `Api<MyTypedApiClient>`. The API receives
//! the user's access token; neither the handler nor the client type touches
//! it.

use axum::{Router, routing::get};
use oidc_bff::client::{Api, ClientRegistration, ManagedClient, TypedClient};
use oidc_bff::{Bff, BffError, OidcConfig};

use axum::http::StatusCode;

mod support;

/// The typed client: any struct around a `ManagedClient`.
pub struct MyTypedApiClient(ManagedClient);

impl TypedClient for MyTypedApiClient {
    fn from_managed(client: ManagedClient) -> Self {
        Self(client)
    }
}

impl MyTypedApiClient {
    /// GET {base}/data with the current user's token.
    pub async fn get_data(&self) -> Result<String, BffError> {
        let response = self.0.get("data").send().await?;
        Ok(response.error_for_status()?.text().await?)
    }
}

/// The handler receives the typed client (bound to the current user).
async fn data(Api(api): Api<MyTypedApiClient>) -> Result<String, BffError> {
    api.get_data().await
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
    // Registered once, by type.
    .typed_client::<MyTypedApiClient>(ClientRegistration::user("myApi", format!("{api}/v1/")))
    .build()?;

    let app = Router::new()
        .route("/api/data", get(data))
        .layer(bff.csrf_layer())
        .merge(bff.routes())
        .layer(bff.layer());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = support::Browser::new(&app_url)?;
    browser.sign_in().await?;
    let (status, body) = browser.api("/api/data").await?;
    println!("signed in:  GET /api/data -> {status}: {body}");
    support::expect("signed in", status, StatusCode::OK)?;

    let anonymous = support::Browser::new(&app_url)?;
    let (status, body) = anonymous.api("/api/data").await?;
    println!("anonymous:  GET /api/data -> {status}: {body}");
    support::expect("anonymous", status, StatusCode::UNAUTHORIZED)?;

    idp.shutdown().await;
    Ok(())
}
