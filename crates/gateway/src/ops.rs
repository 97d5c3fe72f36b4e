//! The operations listener (`[metrics] listen`): a second HTTP listener,
//! never the public one, for the people who run the gateway.
//!
//! | route | what |
//! |---|---|
//! | `GET /metrics` | Prometheus text format (docs/OPERATIONS.md lists every metric) |
//! | `/admin/...` | the session administration API ([`oidc_bff::admin`]), when `[admin]` gives its token |
//!
//! Anything else is 404.
//!
//! The metrics are recorded through the `metrics` facade by the libraries
//! (`oidc_bff::metrics`, `oidc_bff::tokens::metrics`) and the gateway's own
//! layers, into a `metrics-exporter-prometheus` recorder that this module
//! installs (once per process) and renders from. The exporter's own HTTP
//! listener is not used: this one is axum, on the hyper the gateway
//! already has.
//!

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use oidc_bff::Bff;

use crate::access_log::AccessLogLayer;
use crate::config::GatewayConfig;

/// Histogram buckets, in seconds: from a store read on loopback to a slow
/// provider.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded in between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// How long a scrape waits for the store to count sessions.
const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls
/// return the same handle), and registers the metrics' descriptions.
/// `None` when another recorder was installed first (by an application
/// embedding the gateway): then it renders them.
pub(crate) fn install_recorder() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    oidc_bff::metrics::describe();
                    Some(handle)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "metrics: cannot install the Prometheus recorder");
                    None
                }
            }
        })
        .clone()
}

/// Folds histogram samples in every few seconds (the exporter leaves that
/// to its user when its own listener is not used).
pub(crate) fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    })
}

/// What the operations routes need.
#[derive(Clone, Debug)]
struct Ops {
    metrics: Option<PrometheusHandle>,
    bff: Bff,
}

/// The operations listener's routes: `/metrics`, and the admin API when
/// `config` gives its token.
pub(crate) fn router(
    metrics: Option<PrometheusHandle>,
    bff: &Bff,
    config: &GatewayConfig,
) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Ops {
            metrics,
            bff: bff.clone(),
        });
    if let Some(token) = config.admin_token() {
        app = app.merge(oidc_bff::admin::router(bff, token.clone()));
    }
    app.layer(AccessLogLayer)
}

/// `GET /metrics`: the live session count (where the store can count
/// cheaply), then everything recorded, in Prometheus text format.
async fn scrape(State(ops): State<Ops>) -> Response {
    let Some(handle) = &ops.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are recorded by the application's own recorder\n",
        )
            .into_response();
    };
    // Sets `oidc_bff_sessions_active` (see `SessionStore::count_sessions`).
    let store = ops.bff.engine().store();
    if let Err(err) = tokio::time::timeout(COUNT_TIMEOUT, store.count_sessions()).await {
        tracing::debug!(error = %err, "metrics: the store did not count its sessions in time");
    }
    let mut response = handle.render().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
