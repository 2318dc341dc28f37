//! The built-in fault endpoints of the original lab: `POST /chaos/load`, `POST /chaos/hang`,
//! `POST /chaos/redis-reset` and `GET /chaos/status`. Validation and the faults themselves live
//! in `faults`; this file only translates between JSON and those calls.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, JsonBody};
use crate::faults::network::NetworkFaultKind;
use crate::faults::{self, hang::HangEnd};
use crate::store::LinkState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chaos/load", post(load))
        .route("/chaos/hang", post(hang))
        .route("/chaos/redis-reset", post(redis_reset))
        .route("/chaos/status", get(status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LoadRequest {
    level: String,
    duration_seconds: i64,
}

impl Default for LoadRequest {
    fn default() -> Self {
        Self { level: "low".into(), duration_seconds: 60 }
    }
}

async fn load(State(state): State<AppState>, JsonBody(req): JsonBody<LoadRequest>) -> Result<Json<Value>, ApiError> {
    let started = state.faults.start_load(&req.level, req.duration_seconds)?;
    Ok(Json(json!({
        "status": "load_started",
        "level": started.level,
        "duration_seconds": req.duration_seconds,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HangRequest {
    duration_seconds: i64,
    scope: String,
}

impl Default for HangRequest {
    fn default() -> Self {
        Self { duration_seconds: 0, scope: "app".into() }
    }
}

async fn hang(State(state): State<AppState>, JsonBody(req): JsonBody<HangRequest>) -> Result<Json<Value>, ApiError> {
    let ticket = state.faults.start_hang(req.duration_seconds, &req.scope)?;
    let scope = ticket.scope;
    let (end, took) = ticket.wait().await;
    Ok(Json(json!({
        "status": "hang_completed",
        "scope": scope,
        "duration_seconds": (took.as_secs_f64() * 1000.0).round() / 1000.0,
        "interrupted": end == HangEnd::Stopped,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ResetRequest {
    force: bool,
}

impl Default for ResetRequest {
    fn default() -> Self {
        Self { force: true }
    }
}

async fn redis_reset(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ResetRequest>,
) -> Result<Json<Value>, ApiError> {
    let report = faults::redis_reset(state.store.as_ref(), req.force).await?;
    Ok(Json(json!({
        "status": "redis_connections_reset",
        "connections_closed": report.connections_closed,
        "still_closing": report.still_closing,
        "force": req.force,
        "timestamp": crate::timestamp(),
    })))
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let redis = match &state.store {
        None => json!({"enabled": false, "connected": false, "connection_count": 0, "last_reset": null}),
        Some(store) => json!({
            "enabled": true,
            "connected": store.link() == LinkState::Up,
            "connection_count": store.connection_count(),
            "last_reset": store.last_reset().map(crate::format_timestamp),
        }),
    };
    Json(json!({
        "load": state.faults.load.status(),
        "hang": state.faults.hang.status(),
        "redis": redis,
        "network": network_status(&state),
        "runs": {"active": state.runs.active_count(), "last": state.runs.last()},
        "timestamp": crate::timestamp(),
    }))
}

fn network_status(state: &AppState) -> Value {
    let faults = state.network.faults();
    let blocked = faults.iter().any(|f| f.kind == NetworkFaultKind::Block);
    let mut v = json!({"backend": state.network.name(), "blocked": blocked, "faults": faults});
    if let Some(p) = &state.proxy {
        v["proxy"] = json!({
            "listen": p.addr().to_string(),
            "upstream": p.upstream(),
            "connections": p.connection_count(),
            "blackholed": p.blackholed_count(),
            "latency_ms": p.latency_ms(),
        });
    }
    v
}
