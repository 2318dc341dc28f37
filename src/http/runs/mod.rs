//! The scenario engine's API: `POST /chaos/run`, `GET /chaos/runs[/{id}[/events]]`,
//! `POST /chaos/runs/{id}/cancel`, `POST /chaos/stop` (the kill switch, a latch),
//! `POST /chaos/resume` and `GET /chaos/scenarios[/{name}]`.
//!
//! Here: starting and cancelling a run, and the router (one list, so the OpenAPI document keeps
//! its order). `list` pages through runs; `report` serves one run's report (JSON, HTML page, SVG
//! timeline); `events` its event stream (SSE); `halt` the kill switch and resume; `scenarios`
//! the catalog and the script check.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, QueryParams};
use crate::chaos::guard::GuardRequest;
use crate::chaos::report::RunReport;
use crate::chaos::{RunError, RunRequest};

mod events;
mod halt;
mod list;
mod report;
mod scenarios;

/// How long the kill switch and a cancel wait for runs to finish their undo.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_run))
        .routes(routes!(list::list_runs))
        .routes(routes!(report::get_run))
        .routes(routes!(events::run_events))
        .routes(routes!(report::run_report))
        .routes(routes!(report::run_timeline))
        .routes(routes!(scenarios::check_script))
        .routes(routes!(cancel_run))
        .routes(routes!(halt::kill_switch))
        .routes(routes!(halt::resume))
        .routes(routes!(scenarios::list_scenarios))
        .routes(routes!(scenarios::get_scenario))
}

/// The `{id}` of the run routes, described once.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description only: the handlers take `Path<String>`
struct RunId {
    /// A run id, as `POST /chaos/run` and `GET /chaos/runs` return it.
    id: String,
}

/// A run request as JSON: a `script` or a catalog `scenario`, and how to run it.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RunRequest)]
struct RunBody {
    /// The Rhai script to run (or `scenario`).
    script: Option<String>,
    /// The name of a catalog scenario (`GET /chaos/scenarios`) to run (or `script`).
    scenario: Option<String>,
    /// Values for the script's `param()` calls; a scenario accepts only the params its header
    /// declares.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: serde_json::Map<String, Value>,
    /// Stop the run after this many seconds (default 900).
    #[schema(minimum = 1, maximum = 3600)]
    timeout_seconds: Option<u64>,
    /// Apply nothing: faults are recorded, not applied.
    #[serde(default)]
    dry_run: bool,
    /// Guards the run is held to, besides its scenario header's and its `guard()` calls'.
    // Checked by `Runs::start`, which names the guard and the field in its errors.
    #[serde(default)]
    #[schema(value_type = Vec<GuardRequest>)]
    guards: Vec<Value>,
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunQuery {
    /// `true`: answer when the run has ended (and undone its faults), with its report.
    #[param(value_type = Option<bool>)]
    wait: Option<String>,
}

impl RunQuery {
    fn wait(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::Unprocessable(format!(
                "Invalid value for query 'wait': expected true or false, got '{other}'"
            ))),
        }
    }
}

/// What `POST /chaos/run` answers at once (without `wait`).
#[derive(Serialize, ToSchema)]
struct RunAccepted {
    run_id: String,
    #[schema(example = "running")]
    status: &'static str,
    links: RunLinks,
}

#[derive(Serialize, ToSchema)]
struct RunLinks {
    #[serde(rename = "self")]
    report: String,
    events: String,
    cancel: String,
}

/// Start a scenario run (a Rhai script)
///
/// Starts a run of a Rhai script: either the body itself (`text/plain`, or any body that is not
/// a JSON object; upload a file with `curl --data-binary @file`), or a JSON `RunRequest`
/// (`Content-Type: application/json`, or any body that is a JSON object unless sent as
/// `text/plain`) naming a `script` or a catalog `scenario`, with `params`, `timeout_seconds`,
/// `dry_run` and `guards`. A script sent as the body runs with the defaults; an empty body is a
/// 400.
///
/// The script is compiled before anything runs: a compile error is a 400 whose envelope also has
/// `line` and `column`. Without `wait`, the answer is 202 at once, with the run's URL in
/// `Location`; follow it with `GET /chaos/runs/{id}` or `GET /chaos/runs/{id}/events`. With
/// `?wait=true` the request blocks until the run has ended and its faults are undone, then
/// answers 200 with the final `RunReport`; the run's outcome is in `status` and `verdict`, not in
/// the HTTP status. Closing the connection does not stop the run.
///
/// Every fault a run applies is an entry of the fault ledger owned by the run, undone however the
/// run ends (success, script error, cancel, timeout, guard breach, kill switch, SIGTERM, or a
/// crash: then at the next start, and the run ends `interrupted`). At most
/// `MAX_CONCURRENT_RUNS` (default 1) runs at once.
///
/// Checks, in order: the token (401, or 403 without `CHAOS_API_TOKEN` on a non-loopback
/// `APP_HOST`), the `wait` query (422), the body (400 when empty, 422 when malformed), shutdown
/// (503), `timeout_seconds` (400), the guards (400), `script` vs `scenario` (400), an unknown
/// scenario (404), a scenario that does not compile (400), an undeclared parameter (400), the
/// compile (400), the kill switch's latch (423), then a free slot (409).
#[utoipa::path(post, path = "/chaos/run", tag = "runs", operation_id = "startRun",
    params(RunQuery),
    request_body(content(
        (RunBody = "application/json", example = json!({"scenario": "redis-outage", "dry_run": true})),
        (String = "text/plain", example = json!("log(\"hello\");\nlet h = health();\nexpect(h.ok, \"healthy\");")),
    )),
    responses(
        (status = 200, description = "With `?wait=true`: the run has ended and its faults are undone.", body = RunReport),
        (status = 202, description = "The run has started (without `wait`).", body = RunAccepted,
            headers(("Location" = String, description = "The run: `/chaos/runs/{id}`.")),
            links(
                ("report" = (operation_id = "getRun", parameters(("id" = "$response.body#/run_id")))),
                ("events" = (operation_id = "runEvents", parameters(("id" = "$response.body#/run_id")))),
                ("page" = (operation_id = "runReport", parameters(("id" = "$response.body#/run_id")))),
                ("timeline" = (operation_id = "runTimeline", parameters(("id" = "$response.body#/run_id")))),
                ("cancel" = (operation_id = "cancelRun", parameters(("id" = "$response.body#/run_id")))),
            )),
        (status = 400, description = "The script does not compile (the envelope adds `line` and `column`), or the \
            request is invalid.", body = ErrorBody),
        (status = 403, description = "No `CHAOS_API_TOKEN` is set and the service listens on a non-loopback address.", body = ErrorBody),
        (status = 404, description = "Unknown scenario.", body = ErrorBody),
        (status = 409, description = "`MAX_CONCURRENT_RUNS` runs are already in progress.", body = ErrorBody),
        (status = 413, description = "The body is over the 2 MB limit.", body = ErrorBody),
        (status = 422, description = "`wait` is not true or false; the JSON body is malformed, has a wrong type or an \
            unknown field (`detail` names it); or a script body is not UTF-8.", body = ErrorBody),
        (status = 423, description = "The kill switch's latch is set.", body = ErrorBody),
        (status = 503, description = "The service is shutting down, or the fleet's store is unreachable.", body = ErrorBody),
    ))]
async fn start_run(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<RunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wait = q.wait()?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let looks_like_json = !content_type.starts_with("text/plain")
        && body.trim_ascii_start().starts_with(b"{")
        && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
    let req = if content_type.starts_with("application/json") || looks_like_json {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        let b: RunBody = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.classify() == serde_json::error::Category::Data && path != "." {
                ApiError::Unprocessable(format!("Invalid value for field '{path}': {inner}"))
            } else {
                ApiError::Unprocessable(format!("Invalid JSON body: {inner}"))
            }
        })?;
        RunRequest {
            script: b.script,
            scenario: b.scenario,
            params: b.params,
            timeout_seconds: b.timeout_seconds,
            dry_run: b.dry_run,
            guards: b.guards,
        }
    } else {
        let script = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::Unprocessable("the script must be UTF-8 text".into()))?;
        if script.trim().is_empty() {
            return Err(ApiError::Run(RunError::Invalid(
                "the body is empty: send a Rhai script (text/plain) or JSON with 'script' or 'scenario'".into(),
            )));
        }
        RunRequest { script: Some(script), ..RunRequest::default() }
    };
    let run = state.runs.start(req)?;
    if wait {
        let mut done = run.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
        return Ok(Json(run.snapshot()).into_response());
    }
    let id = &run.id;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/chaos/runs/{id}"))],
        Json(RunAccepted {
            run_id: id.clone(),
            status: "running",
            links: RunLinks {
                report: format!("/chaos/runs/{id}"),
                events: format!("/chaos/runs/{id}/events"),
                cancel: format!("/chaos/runs/{id}/cancel"),
            },
        }),
    )
        .into_response())
}

/// Cancel a run
///
/// Asks the run to stop: the script is interrupted at its next call, its `on_rollback` closures
/// run, and the ledger undoes its faults. Waits up to 10 s for that, then answers with the report
/// as it stands (usually ended `cancelled`). Cancelling a run that is already stopping cuts its
/// rollbacks short.
#[utoipa::path(post, path = "/chaos/runs/{id}/cancel", tag = "runs", operation_id = "cancelRun",
    params(RunId),
    responses(
        (status = 200, description = "The run's report after the cancel.", body = RunReport),
        (status = 404, description = "No such run.", body = ErrorBody),
        (status = 409, description = "The run has already ended.", body = ErrorBody),
    ))]
async fn cancel_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = state.runs.cancel(&id)?;
    // Wait briefly so the caller usually sees the undo done; the run ends on its own anyway.
    let mut done = run.done.subscribe();
    let _ = tokio::time::timeout(STOP_GRACE, done.wait_for(|d| *d)).await;
    Ok((StatusCode::OK, Json(run.snapshot())).into_response())
}
