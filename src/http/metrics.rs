//! `GET /metrics`: every metric in the Prometheus text format. Gauges of current state are
//! sampled here, at scrape time, from the same sources `/chaos/status` reads.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use opentelemetry::KeyValue;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::faults::network::NetworkFaultKind;
use crate::store::LinkState;
use crate::telemetry;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scrape))
}

/// Prometheus metrics
///
/// Every metric in the Prometheus text format, the original lab's names included; gauges of
/// current state are sampled at scrape time. Stalls during an app-scope hang.
#[utoipa::path(get, path = "/metrics", tag = "docs", operation_id = "metrics",
    responses((status = 200, description = "The metrics.", content_type = "text/plain", body = String)))]
async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    sample_gauges(&state);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], telemetry::prometheus_text())
}

/// Sets the gauges that describe the state right now.
pub fn sample_gauges(state: &AppState) {
    let m = telemetry::metrics();
    let (up, count) = match &state.lab.store {
        Some(s) => (s.link() == LinkState::Up, s.connection_count()),
        None => (false, 0),
    };
    m.redis_connection_status.record(u64::from(up), &[]);
    m.redis_connection_count.record(count as u64, &[]);
    let faults = state.lab.network.faults();
    let active = [
        ("load", state.lab.faults.load.status().active),
        ("hang", state.lab.faults.hang.status().active),
        ("network_block", faults.iter().any(|f| f.kind == NetworkFaultKind::Block)),
        ("network_latency", faults.iter().any(|f| f.kind == NetworkFaultKind::Latency)),
        ("run", state.runs.active_count() > 0),
    ];
    for (operation, on) in active {
        m.chaos_operation_active.record(u64::from(on), &[KeyValue::new("operation", operation)]);
    }
}
