//! The built-in fault endpoints of the original lab: `POST /chaos/load`, `POST /chaos/hang`,
//! `POST /chaos/redis-reset` and `GET /chaos/status`, plus the fault ledger's `GET /chaos/faults`
//! and `DELETE /chaos/faults/{id}`. Validation and the faults themselves live in `faults`, and
//! every fault goes through the ledger (owner `endpoint`); this file only translates JSON.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, JsonBody};
use crate::faults::hang::{HangScope, HangStatus};
use crate::faults::ledger::{Applied, FaultKind, Intent, Undo};
use crate::faults::ledger::{Entry, Halt};
use crate::faults::load::{LoadLevel, LoadStatus};
use crate::faults::network::{NetworkFault, NetworkFaultKind, ProxyStatus};
use crate::faults::{self, FaultError, hang::HangEnd};
use crate::fleet::{FleetFault, Selector};
use crate::fleet::{FleetStatus, ReplicaSelector};
use crate::store::LinkState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(load))
        .routes(routes!(hang))
        .routes(routes!(redis_reset))
        .routes(routes!(status))
        .routes(routes!(list_faults))
        .routes(routes!(forget_fault))
}

/// The replicas a body's `replicas` picks; `None` for this replica alone (the original path).
fn targets(state: &AppState, replicas: &Value) -> Result<Option<Vec<String>>, ApiError> {
    let sel = Selector::parse(replicas)
        .map_err(|e| ApiError::Unprocessable(format!("Invalid value for field 'replicas': {e}")))?;
    let chosen = state.lab.fleet.resolve(&sel).map_err(|e| ApiError::Fault(FaultError::Invalid(e)))?;
    Ok((!state.lab.fleet.is_only_me(&chosen)).then_some(chosen))
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
    let (_, f) = state.lab.fleet.apply_fleet(&state.lab.ledger, fault, kind).await?;
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

/// The body of `POST /chaos/load`; optional, every field has a default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
struct LoadRequest {
    /// 30 % / 60 % / 90 % of the CPU the container may use, and 100 / 500 / 1000 MiB held.
    #[schema(value_type = LoadLevel, default = "low")]
    level: String,
    #[schema(minimum = 1, maximum = 3600, default = 60)]
    duration_seconds: i64,
    #[schema(value_type = ReplicaSelector)]
    replicas: Value,
}

/// What `POST /chaos/load` answers once the load has started.
#[derive(Serialize, ToSchema)]
struct LoadStarted {
    #[schema(example = "load_started")]
    status: &'static str,
    #[schema(value_type = LoadLevel)]
    level: String,
    duration_seconds: i64,
    /// The replicas chosen (only when `replicas` reached beyond this one).
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<Vec<String>>,
    /// The fleet fault other replicas apply (only with `replicas`).
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet_fault: Option<String>,
}

impl Default for LoadRequest {
    fn default() -> Self {
        Self { level: "low".into(), duration_seconds: 60, replicas: Value::Null }
    }
}

/// Start a CPU + memory load
///
/// Keeps 30 % / 60 % / 90 % of the CPU the container may use busy (cgroup quota and affinity
/// respected) and holds 100 / 500 / 1000 MiB of resident memory for `duration_seconds`, then
/// releases both. The load runs on its own threads: the service keeps answering while loaded.
/// Answers as soon as the load has started. One load at a time.
///
/// Checks, in order: `replicas` (422 for a malformed one, 400 for an unknown replica), then for
/// this replica the kill switch's latch (423), shutdown (503), a load already active (409), the
/// level (400), the duration (400); for other replicas the level and the duration, then the
/// latch. The load is an entry of the fault ledger (owner `endpoint`, lease
/// `duration_seconds`).
#[utoipa::path(post, path = "/chaos/load", tag = "chaos", operation_id = "startLoad",
    request_body(content = Option<LoadRequest>, content_type = "application/json",
        description = "Optional; missing fields take their defaults, and the body is read as JSON whatever its type."),
    responses(
        (status = 200, description = "The load has started.", body = LoadStarted),
        (status = 400, description = "A value is out of range, or an unknown replica.", body = ErrorBody),
        (status = 409, description = "A load is already running.", body = ErrorBody),
        (status = 422, description = "Not a JSON object, a wrong type or an unknown field: `detail` names the field.", body = ErrorBody),
        (status = 423, description = "The kill switch's latch is set (`POST /chaos/resume` lifts it).", body = ErrorBody),
        (status = 503, description = "The service is shutting down, or the fleet's store is unreachable.", body = ErrorBody),
    ))]
async fn load(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LoadRequest>,
) -> Result<Json<LoadStarted>, ApiError> {
    if let Some(replicas) = targets(&state, &req.replicas)? {
        crate::faults::load::LoadLevel::parse(&req.level)?;
        if !(1..=crate::faults::load::MAX_LOAD_SECONDS).contains(&req.duration_seconds) {
            return Err(FaultError::Invalid("Duration must be between 1 and 3600 seconds".into()).into());
        }
        let fault = FleetFault::new("load", Some(req.level.clone()), req.duration_seconds, None, replicas);
        let f = apply_fleet(&state, FaultKind::Load, fault, Duration::from_secs(req.duration_seconds as u64)).await?;
        return Ok(Json(LoadStarted {
            status: "load_started",
            level: req.level,
            duration_seconds: req.duration_seconds,
            replicas: Some(f.replicas),
            fleet_fault: Some(f.id),
        }));
    }
    let faults = state.lab.faults.clone();
    let level = req.level.clone();
    let secs = req.duration_seconds;
    let duration = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let (_, _started) = state
        .lab
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
    Ok(Json(LoadStarted {
        status: "load_started",
        level: req.level,
        duration_seconds: req.duration_seconds,
        replicas: None,
        fleet_fault: None,
    }))
}

/// The body of `POST /chaos/hang`; optional, every field has a default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
struct HangRequest {
    /// 0 = until restart (or the kill switch).
    #[schema(minimum = 0, maximum = 86400, default = 0)]
    duration_seconds: i64,
    /// `app`: every request to the app stalls; `request`: only this one.
    #[schema(value_type = HangScope, default = "app")]
    scope: String,
    /// Other replicas take an `app` hang only.
    #[schema(value_type = ReplicaSelector)]
    replicas: Value,
}

/// What `POST /chaos/hang` answers: when the hang has ended here, or at once when it was sent
/// to other replicas.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum HangReply {
    Completed(HangCompleted),
    Started(HangStarted),
}

/// The hang on this replica has ended.
#[derive(Serialize, ToSchema)]
struct HangCompleted {
    #[schema(example = "hang_completed")]
    status: &'static str,
    scope: HangScope,
    /// How long it lasted, in seconds.
    duration_seconds: f64,
    /// Ended early by the kill switch or shutdown.
    interrupted: bool,
}

/// The hang was sent to other replicas (a `replicas` beyond this one).
#[derive(Serialize, ToSchema)]
struct HangStarted {
    #[schema(example = "hang_started")]
    status: &'static str,
    #[schema(value_type = HangScope)]
    scope: &'static str,
    duration_seconds: i64,
    replicas: Vec<String>,
    fleet_fault: String,
}

impl Default for HangRequest {
    fn default() -> Self {
        Self { duration_seconds: 0, scope: "app".into(), replicas: Value::Null }
    }
}

/// Hang the service or this request
///
/// `scope: app` (default): the app stops answering (every request to `/`, `/health`, `/healthz`
/// and `/metrics` stalls until the hang ends) while the TCP listener keeps accepting connections,
/// like a blocked event loop. The lab's controls (`/chaos/*`, `/console`, `/docs`,
/// `/openapi.json`) keep answering: `POST /chaos/stop` ends the hang. `scope: request`: only this
/// request stalls.
///
/// The caller's response arrives when the hang ends: 200 `hang_completed`. With
/// `duration_seconds` 0 the hang lasts until restart; SIGTERM and `POST /chaos/stop` end it too.
/// One hang at a time. Checks, in order: `replicas` (422 malformed, 400 unknown), then the kill
/// switch's latch (423), shutdown (503), the scope (400), the duration (400), a hang already
/// active (409). The hang is an entry of the fault
/// ledger (owner `endpoint`).
#[utoipa::path(post, path = "/chaos/hang", tag = "chaos", operation_id = "startHang",
    request_body(content = Option<HangRequest>, content_type = "application/json",
        description = "Optional; missing fields take their defaults, and the body is read as JSON whatever its type."),
    responses(
        (status = 200, description = "The hang ended (or was sent to other replicas).", body = HangReply),
        (status = 400, description = "A value is out of range, or an unknown replica.", body = ErrorBody),
        (status = 409, description = "A hang is already active (of either scope).", body = ErrorBody),
        (status = 422, description = "Not a JSON object, a wrong type or an unknown field: `detail` names the field.", body = ErrorBody),
        (status = 423, description = "The kill switch's latch is set.", body = ErrorBody),
        (status = 503, description = "The service is shutting down, or the fleet's store is unreachable.", body = ErrorBody),
    ))]
async fn hang(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<HangRequest>,
) -> Result<Json<HangReply>, ApiError> {
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
        return Ok(Json(HangReply::Started(HangStarted {
            status: "hang_started",
            scope: "app",
            duration_seconds: req.duration_seconds,
            replicas: f.replicas,
            fleet_fault: f.id,
        })));
    }
    let faults = state.lab.faults.clone();
    let (secs, scope) = (req.duration_seconds, req.scope.clone());
    let duration = u64::try_from(secs).ok().filter(|s| *s > 0).map_or(FOREVER, Duration::from_secs);
    let (id, ticket) = state
        .lab
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
    state.lab.ledger.undo(&id).await;
    Ok(Json(HangReply::Completed(HangCompleted {
        status: "hang_completed",
        scope,
        duration_seconds: crate::round_to(took.as_secs_f64(), 3),
        interrupted: end == HangEnd::Stopped,
    })))
}

/// The body of `POST /chaos/redis-reset`; optional.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
struct ResetRequest {
    /// `true`: abort commands in flight at once; `false`: let them finish first.
    #[schema(default = true)]
    force: bool,
    #[schema(value_type = ReplicaSelector)]
    replicas: Value,
}

/// What `POST /chaos/redis-reset` answers.
#[derive(Serialize, ToSchema)]
struct ResetReply {
    #[schema(example = "redis_connections_reset")]
    status: &'static str,
    /// The real number of sockets closed (this replica).
    #[serde(skip_serializing_if = "Option::is_none")]
    connections_closed: Option<usize>,
    /// Sockets still busy when `force: false` gave up waiting; normally 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    still_closing: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    force: Option<bool>,
    /// With `replicas`: the replicas asked to reset, and the fleet fault that asks them.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet_fault: Option<String>,
    timestamp: String,
}

impl Default for ResetRequest {
    fn default() -> Self {
        Self { force: true, replicas: Value::Null }
    }
}

/// Close every pooled Redis connection
///
/// Closes every Redis connection the pool holds, idle ones included; the next Redis operation
/// opens a new connection. `connections_closed` is the real number of sockets closed. `force:
/// true` (default) aborts commands in flight at once (they fail and are retried per the retry
/// policy); `force: false` lets them finish first, waiting up to `REDIS_SOCKET_TIMEOUT` + 0.5 s,
/// and reports any socket still busy after that in `still_closing`. Refused with 423 while the
/// kill switch's latch is set (checked first, once the body is read).
#[utoipa::path(post, path = "/chaos/redis-reset", tag = "chaos", operation_id = "redisReset",
    request_body(content = Option<ResetRequest>, content_type = "application/json",
        description = "Optional; an empty body means `force: true` on this replica."),
    responses(
        (status = 200, description = "The connections are closed.", body = ResetReply),
        (status = 400, description = "An unknown replica in `replicas`.", body = ErrorBody),
        (status = 422, description = "Not a JSON object, a wrong type or an unknown field: `detail` names the field.", body = ErrorBody),
        (status = 423, description = "The kill switch's latch is set.", body = ErrorBody),
        (status = 503, description = "Redis is disabled (`REDIS_ENABLED=false`), or the fleet's store is unreachable.", body = ErrorBody),
    ))]
async fn redis_reset(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ResetRequest>,
) -> Result<Json<ResetReply>, ApiError> {
    state.lab.ledger.check_open()?;
    if let Some(replicas) = targets(&state, &req.replicas)? {
        let fault = FleetFault::new("redis_reset", None, 30, None, replicas);
        let f = apply_fleet(&state, FaultKind::RedisReset, fault, Duration::from_secs(30)).await?;
        return Ok(Json(ResetReply {
            status: "redis_connections_reset",
            connections_closed: None,
            still_closing: None,
            force: None,
            replicas: Some(f.replicas),
            fleet_fault: Some(f.id),
            timestamp: crate::timestamp(),
        }));
    }
    let report = faults::redis_reset(state.lab.store.as_ref(), req.force).await?;
    Ok(Json(ResetReply {
        status: "redis_connections_reset",
        connections_closed: Some(report.connections_closed),
        still_closing: Some(report.still_closing),
        force: Some(req.force),
        replicas: None,
        fleet_fault: None,
        timestamp: crate::timestamp(),
    }))
}

/// What `GET /chaos/status` answers.
#[derive(Serialize, ToSchema)]
struct Status {
    load: LoadStatus,
    hang: HangStatus,
    redis: RedisStatus,
    network: NetworkStatus,
    runs: RunsStatus,
    /// Whether the kill switch's latch is set.
    halted: bool,
    halt: Option<Halt>,
    /// The fault ledger: every fault not yet undone, of every owner (as `GET /chaos/faults`).
    faults: Vec<Entry>,
    fleet: FleetStatus,
    timestamp: String,
}

/// The app's Redis pool (the original lab's field names).
#[derive(Serialize, ToSchema)]
struct RedisStatus {
    enabled: bool,
    connected: bool,
    connection_count: usize,
    last_reset: Option<String>,
    /// The development Redis the service started itself (a fresh machine with nothing
    /// configured); null when Redis is configured or disabled.
    dev_server: Option<DevServer>,
}

#[derive(Serialize, ToSchema)]
struct DevServer {
    pid: u32,
    address: String,
    /// What it is and how to point the lab at a real Redis.
    note: String,
}

#[derive(Serialize, ToSchema)]
struct NetworkStatus {
    /// `local` (the embedded fault proxy between the service and Redis), `azure` (NSG rules) or
    /// `none`.
    backend: &'static str,
    blocked: bool,
    faults: Vec<NetworkFault>,
    /// The local fault proxy's counters (backend `local` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxyStatus>,
}

#[derive(Serialize, ToSchema)]
struct RunsStatus {
    /// Runs in progress.
    active: usize,
    /// The newest run, in progress or not.
    last: Option<crate::chaos::report::RunSummary>,
}

/// State of every fault, the fault ledger and the halt latch
///
/// The active load and hang, the Redis pool, the network faults in force, the scenario runs and
/// the fleet. `load`, `hang` and `redis` keep the original lab's field names (`load.level` is
/// `"none"` when idle, as there). Makes no Redis call. Never needs a token, even when
/// `CHAOS_API_TOKEN` is set.
#[utoipa::path(get, path = "/chaos/status", tag = "chaos", operation_id = "status",
    responses((status = 200, description = "Current state.", body = Status)))]
async fn status(State(state): State<AppState>) -> Json<Status> {
    let dev_server = state.dev_redis.as_ref().map(|d| DevServer {
        pid: d.pid,
        address: format!("127.0.0.1:{}", d.port),
        note: d.describe(),
    });
    let redis = match &state.lab.store {
        None => RedisStatus { enabled: false, connected: false, connection_count: 0, last_reset: None, dev_server },
        Some(store) => RedisStatus {
            enabled: true,
            connected: store.link() == LinkState::Up,
            connection_count: store.connection_count(),
            last_reset: store.last_reset().map(crate::format_timestamp),
            dev_server,
        },
    };
    Json(Status {
        load: state.lab.faults.load.status(),
        hang: state.lab.faults.hang.status(),
        redis,
        network: network_status(&state),
        runs: RunsStatus { active: state.runs.active_count(), last: state.runs.last() },
        halted: state.lab.ledger.halted().is_some(),
        halt: state.lab.ledger.halted(),
        faults: state.lab.ledger.list(),
        fleet: state.lab.fleet.status(),
        timestamp: crate::timestamp(),
    })
}

fn network_status(state: &AppState) -> NetworkStatus {
    let faults = state.lab.network.faults();
    let blocked = faults.iter().any(|f| f.kind == NetworkFaultKind::Block);
    NetworkStatus { backend: state.lab.network.name(), blocked, faults, proxy: state.lab.network.proxy() }
}

/// What `GET /chaos/faults` answers.
#[derive(Serialize, ToSchema)]
struct FaultList {
    faults: Vec<Entry>,
    halt: Option<Halt>,
}

/// The fault ledger
///
/// Every fault the ledger holds and has not undone yet, of every owner (runs, built-in
/// endpoints, the operator CLI), oldest first, and the kill switch's latch. An `undo_failed`
/// entry stays listed (the ledger retries it every 30 s) until its undo succeeds or an operator
/// forgets it with `DELETE /chaos/faults/{id}`. Makes no backend call.
#[utoipa::path(get, path = "/chaos/faults", tag = "chaos", operation_id = "listFaults",
    responses((status = 200, description = "The ledger.", body = FaultList)))]
async fn list_faults(State(state): State<AppState>) -> Json<FaultList> {
    Json(FaultList { faults: state.lab.ledger.list(), halt: state.lab.ledger.halted() })
}

#[derive(Serialize, ToSchema)]
struct ForgottenFault {
    forgotten: Entry,
}

/// Forget an undo_failed fault
///
/// Removes an `undo_failed` entry from the ledger, for an operator who has undone the fault by
/// hand (deleted the NSG rule, moved the traffic back). It touches nothing outside the ledger.
/// Only `undo_failed` entries can be forgotten: the ledger undoes the others itself. Allowed
/// while halted.
#[utoipa::path(delete, path = "/chaos/faults/{id}", tag = "chaos", operation_id = "forgetFault",
    params(("id" = String, Path, description = "A fault ledger entry id, as `GET /chaos/faults` lists it.")),
    responses(
        (status = 200, description = "Forgotten.", body = ForgottenFault),
        (status = 404, description = "No such fault in the ledger (or it is already undone).", body = ErrorBody),
        (status = 409, description = "The fault is not `undo_failed`.", body = ErrorBody),
    ))]
async fn forget_fault(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ForgottenFault>, ApiError> {
    let entry = state.lab.ledger.forget(&id)?;
    Ok(Json(ForgottenFault { forgotten: entry }))
}
