//! The scenario engine's API: `POST /chaos/run`, `GET /chaos/runs[/{id}[/events]]`,
//! `POST /chaos/runs/{id}/cancel`, `POST /chaos/stop` (the kill switch, a latch),
//! `POST /chaos/resume` and `GET /chaos/scenarios[/{name}]`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::chaos::report::{Event, RunShared};
use crate::chaos::{RunError, RunRequest};

/// How long the kill switch and shutdown wait for runs to finish their undo.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chaos/run", post(start_run))
        .route("/chaos/runs", get(list_runs))
        .route("/chaos/runs/{id}", get(get_run))
        .route("/chaos/runs/{id}/events", get(run_events))
        .route("/chaos/runs/{id}/report", get(run_report))
        .route("/chaos/runs/{id}/timeline.svg", get(run_timeline))
        .route("/chaos/check", post(check_script))
        .route("/chaos/runs/{id}/cancel", post(cancel_run))
        .route("/chaos/stop", post(kill_switch))
        .route("/chaos/resume", post(resume))
        .route("/chaos/scenarios", get(list_scenarios))
        .route("/chaos/scenarios/{name}", get(get_scenario))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    script: Option<String>,
    scenario: Option<String>,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    /// Checked by `Runs::start`, which names the guard and the field in its errors.
    #[serde(default)]
    guards: Vec<Value>,
}

#[derive(Deserialize, Default)]
struct RunQuery {
    wait: Option<String>,
}

impl RunQuery {
    fn wait(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("" | "true" | "1" | "yes") => Ok(true),
            Some(other) => Err(ApiError::Unprocessable(format!(
                "Invalid value for query 'wait': expected true or false, got '{other}'"
            ))),
        }
    }
}

/// The body is a JSON [`RunBody`] (`application/json`, or any body that is a JSON object unless
/// sent as `text/plain`), or else the script itself.
async fn start_run(
    State(state): State<AppState>,
    Query(q): Query<RunQuery>,
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
        Json(json!({
            "run_id": id,
            "status": "running",
            "links": {
                "self": format!("/chaos/runs/{id}"),
                "events": format!("/chaos/runs/{id}/events"),
                "cancel": format!("/chaos/runs/{id}/cancel"),
            },
        })),
    )
        .into_response())
}

async fn list_runs(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"runs": state.runs.list_anywhere().await}))
}

async fn get_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(state.runs.report_anywhere(&id).await?).into_response())
}

/// The run as one self-contained HTML page (timeline, tables); works offline and as an
/// attachment. A run in progress gets the page as it stands.
async fn run_report(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let report = state.runs.report_anywhere(&id).await?;
    Ok(axum::response::Html(crate::chaos::report_page::render(&report)).into_response())
}

/// The report page's timeline alone, as an SVG document (the console redraws it while a run
/// goes on; one renderer for both).
async fn run_timeline(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let report = state.runs.report_anywhere(&id).await?;
    let svg = crate::chaos::report_page::timeline_svg(&report);
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response())
}

/// Checks a script without running it (header, compile, unknown functions); the body is the
/// script. 200 whatever the verdict: the answer is the list of problems.
async fn check_script(body: Bytes) -> Result<Json<Value>, ApiError> {
    let source = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Unprocessable("the script must be UTF-8 text".into()))?;
    let problems = crate::chaos::check::check(&source, false);
    Ok(Json(json!({"ok": problems.is_empty(), "problems": problems})))
}

/// Replays the run's events so far, then streams the rest live until the run ends.
async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let stream = match state.runs.active(&id) {
        Some(run) => live_events(run).boxed(),
        None => {
            let report = state.runs.report_anywhere(&id).await?;
            if report.status == crate::chaos::report::RunStatus::Running {
                // Running on another replica: follow what it publishes to the store.
                remote_events(state.clone(), id).boxed()
            } else {
                // Finished: one event with the whole report.
                let ev = Event { name: "run_finished", data: json!(report) };
                stream::iter([ev]).boxed()
            }
        }
    };
    Ok(Sse::new(stream.map(|e| Ok(SseEvent::default().event(e.name).data(e.data.to_string()))))
        .keep_alive(KeepAlive::default()))
}

/// The events of a run on another replica, polled from the store every half second until it
/// has finished (or stopped publishing: its replica died and another took it over).
fn remote_events(state: AppState, id: String) -> impl Stream<Item = Event> {
    stream::unfold(
        (state, id, 0usize, false, std::collections::VecDeque::new()),
        |(state, id, mut sent, mut done, mut queue)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((e, (state, id, sent, done, queue)));
                }
                if done {
                    return None;
                }
                let events = state.runs.remote_events(&id).await.unwrap_or_default();
                for e in events.into_iter().skip(sent) {
                    sent += 1;
                    done |= e.name == "run_finished";
                    queue.push_back(e);
                }
                if queue.is_empty() {
                    // Taken over (interrupted) or ended without a final publish: end with the report.
                    if let Ok(r) = state.runs.report_anywhere(&id).await
                        && r.status != crate::chaos::report::RunStatus::Running
                    {
                        done = true;
                        queue.push_back(Event { name: "run_finished", data: json!(r) });
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        },
    )
}

fn live_events(run: std::sync::Arc<RunShared>) -> impl Stream<Item = Event> {
    let (past, rx) = run.subscribe();
    let finished_already = past.iter().any(|e| e.name == "run_finished");
    let live = stream::unfold((rx, finished_already), |(mut rx, finished)| async move {
        if finished {
            return None;
        }
        match rx.recv().await {
            Ok(e) => {
                let end = e.name == "run_finished";
                Some((e, (rx, end)))
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let e = Event { name: "lagged", data: json!({"missed_events": n}) };
                Some((e, (rx, false)))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    stream::iter(past).chain(live)
}

async fn cancel_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = state.runs.cancel(&id)?;
    // Wait briefly so the caller usually sees the undo done; the run ends on its own anyway.
    let mut done = run.done.subscribe();
    let _ = tokio::time::timeout(STOP_GRACE, done.wait_for(|d| *d)).await;
    Ok((StatusCode::OK, Json(json!(run.snapshot()))).into_response())
}

/// The kill switch, a latch: halts first (no new run or fault from here on, the built-in
/// endpoints included), cancels every run (cutting their rollbacks short), has the ledger undo
/// every fault of every owner, and removes `chaos-` faults the backend holds that the ledger does
/// not know (an operator CLI's NSG rule). `all_clear_ms` is the time until all that was done;
/// the runs' journals are then given a moment to close.
async fn kill_switch(State(state): State<AppState>) -> Json<Value> {
    let load = state.faults.load.status().active;
    let hang = state.faults.hang.status().active;
    let r = crate::chaos::kill_switch(&state.runs, &state.ledger, state.network.as_ref(), "POST /chaos/stop").await;
    // Every other replica follows within a poll; an unreachable store is reported, not fatal here.
    let fleet = match state.fleet.publish_halt(&r.halt).await {
        Ok(()) => json!({"published": true}),
        Err(e) => json!({"published": false, "error": e.to_string()}),
    };
    state.runs.wait_ended(&r.runs, STOP_GRACE).await;
    let failed: Vec<_> = r.outcomes.iter().filter(|o| !o.ok).collect();
    let undone = r.outcomes.len() - failed.len();
    tracing::warn!(
        runs = r.runs.len(),
        undone,
        failed = failed.len(),
        all_clear_ms = r.all_clear_ms,
        "kill switch: halted"
    );
    Json(json!({
        "status": "halted",
        "halt": r.halt,
        "runs_cancelled": r.runs.len(),
        "faults_undone": undone,
        "undo_failed": failed,
        "undone": r.outcomes,
        "unknown_rules_removed": match &r.unknown {
            Ok(n) => json!(n),
            Err(e) => json!({"error": e.to_string()}),
        },
        "all_clear_ms": r.all_clear_ms,
        "fleet": fleet,
        "load_stopped": load,
        "hang_stopped": hang,
        "timestamp": crate::timestamp(),
    }))
}

/// Lifts the kill switch's latch, on every replica of the fleet.
async fn resume(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.fleet.publish_resume().await.map_err(|e| {
        ApiError::Fault(crate::faults::FaultError::Unavailable(format!("cannot resume the fleet: {e}")))
    })?;
    let was = state.ledger.resume();
    if let Some(h) = &was {
        tracing::warn!(halted_since = %h.at, "chaos resumed");
    }
    Ok(Json(json!({
        "status": "resumed",
        "was_halted": was.is_some(),
        "halted_since": was.as_ref().map(|h| h.at.clone()),
        "timestamp": crate::timestamp(),
    })))
}

async fn list_scenarios(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"dir": state.runs.catalog.dir().display().to_string(), "scenarios": state.runs.catalog.list()}))
}

async fn get_scenario(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let s = state
        .runs
        .catalog
        .get(&name)
        .ok_or_else(|| ApiError::Run(RunError::NotFound(format!("no scenario named '{name}'"))))?;
    let mut v = json!(s);
    v["source"] = json!(s.source);
    Ok(Json(v))
}
