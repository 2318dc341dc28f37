//! The built-in fault endpoints of the original lab: `POST /chaos/load`, `POST /chaos/hang`,
//! `POST /chaos/redis-reset` and `GET /chaos/status`, plus the fault ledger's `GET /chaos/faults`
//! and `DELETE /chaos/faults/{id}`. Validation and the faults themselves live in `faults`, and
//! every fault goes through the ledger (owner `endpoint`); this file only translates JSON.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, JsonBody};
use crate::faults::ledger::{Applied, FaultKind, Intent, Undo};
use crate::faults::network::NetworkFaultKind;
use crate::faults::{self, FaultError, hang::HangEnd};
use crate::fleet::{FleetFault, Selector};
use crate::store::LinkState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chaos/load", post(load))
        .route("/chaos/hang", post(hang))
        .route("/chaos/redis-reset", post(redis_reset))
        .route("/chaos/status", get(status))
        .route("/chaos/faults", get(list_faults))
        .route("/chaos/faults/{id}", delete(forget_fault))
}

/// The replicas a body's `replicas` picks; `None` for this replica alone (the original path).
fn targets(state: &AppState, replicas: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let sel = Selector::parse(replicas)
        .map_err(|e| ApiError::Unprocessable(format!("Invalid value for field 'replicas': {e}")))?;
    let chosen = state.fleet.resolve(&sel).map_err(|e| ApiError::Fault(FaultError::Invalid(e)))?;
    Ok((!state.fleet.is_only_me(&chosen)).then_some(chosen))
}

/// Publishes a fault for other replicas, owned by `endpoint`, leased for `duration`.
async fn apply_fleet(
    state: &AppState,
    kind: FaultKind,
    mut fault: FleetFault,
    duration: Duration,
) -> Result<FleetFault, ApiError> {
    fault.owner = OWNER.into();
    fault.lease_expires_at =
        chrono::Utc::now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::days(1));
    let (_, f) = state.fleet.apply_fleet(&state.ledger, fault, kind).await?;
    Ok(f)
}

/// The owner of faults applied by these endpoints.
const OWNER: &str = "endpoint";
/// Lease of a hang "until restart" (duration 0): the longest finite hang.
const FOREVER: Duration = Duration::from_secs(faults::hang::MAX_HANG_SECONDS as u64);

fn intent(kind: FaultKind, target: String, duration: Duration) -> Intent {
    let lease = chrono::Utc::now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::days(1));
    Intent { kind, owner: OWNER.into(), target, lease, undo: Undo::Nothing }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LoadRequest {
    level: String,
    duration_seconds: i64,
    /// Which replicas: `"self"` (default), `"all"`, a count, a share (`"50%"`) or names.
    replicas: Value,
}

impl Default for LoadRequest {
    fn default() -> Self {
        Self { level: "low".into(), duration_seconds: 60, replicas: Value::Null }
    }
}

async fn load(State(state): State<AppState>, JsonBody(req): JsonBody<LoadRequest>) -> Result<Json<Value>, ApiError> {
    if let Some(replicas) = targets(&state, &req.replicas)? {
        crate::faults::load::LoadLevel::parse(&req.level)?;
        if !(1..=crate::faults::load::MAX_LOAD_SECONDS).contains(&req.duration_seconds) {
            return Err(FaultError::Invalid("Duration must be between 1 and 3600 seconds".into()).into());
        }
        let fault = FleetFault::new("load", Some(req.level.clone()), req.duration_seconds, None, replicas);
        let f = apply_fleet(&state, FaultKind::Load, fault, Duration::from_secs(req.duration_seconds as u64)).await?;
        return Ok(Json(json!({
            "status": "load_started",
            "level": req.level,
            "duration_seconds": req.duration_seconds,
            "replicas": f.replicas,
            "fleet_fault": f.id,
        })));
    }
    let faults = state.faults.clone();
    let level = req.level.clone();
    let secs = req.duration_seconds;
    let duration = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let (_, started) = state
        .ledger
        .apply(intent(FaultKind::Load, format!("{} load", req.level), duration), async move {
            let started = faults.start_load(&level, secs)?;
            Ok(Applied {
                undo: Undo::Load { load_id: started.id },
                target: format!("{level} load"),
                value: started,
                loadgen: None,
            })
        })
        .await?;
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
    /// Which replicas (see [`LoadRequest`]); other replicas take an `app` hang only.
    replicas: Value,
}

impl Default for HangRequest {
    fn default() -> Self {
        Self { duration_seconds: 0, scope: "app".into(), replicas: Value::Null }
    }
}

async fn hang(State(state): State<AppState>, JsonBody(req): JsonBody<HangRequest>) -> Result<Json<Value>, ApiError> {
    if let Some(replicas) = targets(&state, &req.replicas)? {
        if req.scope != "app" {
            return Err(FaultError::Invalid(format!(
                "scope '{}' cannot reach other replicas (a request hang stalls its caller): use scope \"app\"",
                req.scope
            ))
            .into());
        }
        if !(0..=faults::hang::MAX_HANG_SECONDS).contains(&req.duration_seconds) {
            return Err(FaultError::Invalid(format!(
                "Duration must be between 0 and {} seconds (0 = until restart)",
                faults::hang::MAX_HANG_SECONDS
            ))
            .into());
        }
        let fault = FleetFault::new("hang", None, req.duration_seconds, Some("app".into()), replicas);
        let lease = u64::try_from(req.duration_seconds).ok().filter(|s| *s > 0).map_or(FOREVER, Duration::from_secs);
        let f = apply_fleet(&state, FaultKind::Hang, fault, lease).await?;
        // Other replicas hang; this request does not wait for them.
        return Ok(Json(json!({
            "status": "hang_started",
            "scope": "app",
            "duration_seconds": req.duration_seconds,
            "replicas": f.replicas,
            "fleet_fault": f.id,
        })));
    }
    let faults = state.faults.clone();
    let (secs, scope) = (req.duration_seconds, req.scope.clone());
    let duration = u64::try_from(secs).ok().filter(|s| *s > 0).map_or(FOREVER, Duration::from_secs);
    let (id, ticket) = state
        .ledger
        .apply(intent(FaultKind::Hang, format!("{} hang", req.scope), duration), async move {
            let ticket = faults.start_hang(secs, &scope)?;
            Ok(Applied {
                undo: Undo::Hang { hang_id: ticket.id() },
                target: format!("{scope} hang"),
                value: ticket,
                loadgen: None,
            })
        })
        .await?;
    let scope = ticket.scope;
    let (end, took) = ticket.wait().await;
    // Ended (by its time, the kill switch or shutdown): settle the entry.
    state.ledger.undo(&id).await;
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
    /// Which replicas (see [`LoadRequest`]).
    replicas: Value,
}

impl Default for ResetRequest {
    fn default() -> Self {
        Self { force: true, replicas: Value::Null }
    }
}

async fn redis_reset(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ResetRequest>,
) -> Result<Json<Value>, ApiError> {
    state.ledger.check_open()?;
    if let Some(replicas) = targets(&state, &req.replicas)? {
        let fault = FleetFault::new("redis_reset", None, 30, None, replicas);
        let f = apply_fleet(&state, FaultKind::RedisReset, fault, Duration::from_secs(30)).await?;
        return Ok(Json(json!({
            "status": "redis_connections_reset",
            "replicas": f.replicas,
            "fleet_fault": f.id,
            "timestamp": crate::timestamp(),
        })));
    }
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
    let mut redis = match &state.store {
        None => json!({"enabled": false, "connected": false, "connection_count": 0, "last_reset": null}),
        Some(store) => json!({
            "enabled": true,
            "connected": store.link() == LinkState::Up,
            "connection_count": store.connection_count(),
            "last_reset": store.last_reset().map(crate::format_timestamp),
        }),
    };
    redis["dev_server"] = match &state.dev_redis {
        Some(d) => json!({"pid": d.pid, "address": format!("127.0.0.1:{}", d.port), "note": d.describe()}),
        None => Value::Null,
    };
    Json(json!({
        "load": state.faults.load.status(),
        "hang": state.faults.hang.status(),
        "redis": redis,
        "network": network_status(&state),
        "runs": {"active": state.runs.active_count(), "last": state.runs.last()},
        "halted": state.ledger.halted().is_some(),
        "halt": state.ledger.halted(),
        "faults": state.ledger.list(),
        "fleet": state.fleet.status(),
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

async fn list_faults(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"faults": state.ledger.list(), "halt": state.ledger.halted()}))
}

/// An operator gives up on an `undo_failed` fault after fixing things by hand.
async fn forget_fault(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let entry = state.ledger.forget(&id)?;
    Ok(Json(json!({"forgotten": entry})))
}
