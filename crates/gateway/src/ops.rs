//! The operations listener (`[metrics] listen`): endpoints for operators,
//! on an address of their own, never on the public port.
//!
//! | route | what |
//! |---|---|
//! | `/admin/...` | the session administration API ([`oidc_bff::admin`]), when `[admin]` gives its token |
//!
//! Anything else is 404.

use axum::Router;
use oidc_bff::Bff;

use crate::access_log::AccessLogLayer;
use crate::config::GatewayConfig;

/// The operations endpoints of `bff` as `config` enables them.
pub(crate) fn router(bff: &Bff, config: &GatewayConfig) -> Router {
    let mut app = Router::new();
    if let Some(token) = config.admin_token() {
        app = app.merge(oidc_bff::admin::router(bff, token.clone()));
    }
    app.layer(AccessLogLayer)
}
