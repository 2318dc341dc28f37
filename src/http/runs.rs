//! The scenario engine's API: `POST /chaos/run`, `GET /chaos/runs[/{id}[/events]]`,
//! `POST /chaos/runs/{id}/cancel`, `POST /chaos/stop` (the kill switch, a latch),
//! `POST /chaos/resume` and `GET /chaos/scenarios[/{name}]`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody, QueryParams};
use crate::chaos::catalog::Scenario;
use crate::chaos::guard::GuardRequest;
use crate::chaos::report::{Event, RunReport, RunShared, RunSummary, ScriptError};
use crate::chaos::{RunError, RunRequest};
use crate::faults::ledger::{Halt, Outcome};

/// How long the kill switch and shutdown wait for runs to finish their undo.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_run))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(run_events))
        .routes(routes!(run_report))
        .routes(routes!(run_timeline))
        .routes(routes!(check_script))
        .routes(routes!(cancel_run))
        .routes(routes!(kill_switch))
        .routes(routes!(resume))
        .routes(routes!(list_scenarios))
        .routes(routes!(get_scenario))
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

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Runs per page (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9-]+$")]
    cursor: Option<String>,
}

/// How many runs a page of `GET /chaos/runs` holds unless `limit` says otherwise, and at most.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

/// A page of runs.
#[derive(Serialize, ToSchema)]
struct RunList {
    runs: Vec<RunSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Every run, newest first, a page at a time
///
/// Every run this service knows (with a fleet, every replica's): those in progress and the
/// journals in `RUNS_DIR`, newest first, in the short `RunSummary` form, `limit` at a time.
/// `next_cursor` (also a `Link: <…>; rel="next"` header) is the last run id of the page: pass it
/// as `cursor` for the next one. Run ids sort by start time, so a cursor stays valid when its run
/// is pruned.
#[utoipa::path(get, path = "/chaos/runs", tag = "runs", operation_id = "listRuns",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of runs.", body = RunList,
            headers(("Link" = String, description = "The next page, when there is one: `</chaos/runs?limit=N&cursor=C>; rel=\"next\"`."))),
        (status = 422, description = "`limit` is not a whole number from 1 to 1000, or `cursor` is not a run id.", body = ErrorBody),
    ))]
async fn list_runs(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = match q.limit.as_deref() {
        None => PAGE_DEFAULT,
        Some(l) => l.trim().parse().ok().filter(|n| (1..=PAGE_MAX).contains(n)).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "Invalid value for query 'limit': expected a whole number from 1 to {PAGE_MAX}, got '{l}'"
            ))
        })?,
    };
    if let Some(c) = &q.cursor
        && !crate::chaos::valid_run_id(c)
    {
        return Err(ApiError::Unprocessable(format!(
            "Invalid value for query 'cursor': '{c}' is not a run id (pass the next_cursor of the previous page)"
        )));
    }
    let all = state.runs.list_anywhere().await;
    let mut page: Vec<_> =
        all.into_iter().filter(|r| q.cursor.as_deref().is_none_or(|c| r.run_id.as_str() < c)).take(limit + 1).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = more.then(|| page.last().map(|r| r.run_id.clone())).flatten();
    let body = Json(RunList { runs: page, next_cursor: next.clone() });
    Ok(match &next {
        Some(c) => {
            ([(header::LINK, format!("</chaos/runs?limit={limit}&cursor={c}>; rel=\"next\""))], body).into_response()
        }
        None => body.into_response(),
    })
}

/// The `{id}` of the run routes, described once.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // a description only: the handlers take `Path<String>`
struct RunId {
    /// A run id, as `POST /chaos/run` and `GET /chaos/runs` return it.
    id: String,
}

/// A run's report
///
/// The full `RunReport`: status, verdict and reason, the timeline of steps, log lines,
/// expectations, measurements, undos, guards and breach, fault spans, series and impact, and
/// the script error with line and column. Live while the run is in progress; read from its
/// journal afterwards (with a fleet, from the replica that ran it).
#[utoipa::path(get, path = "/chaos/runs/{id}", tag = "runs", operation_id = "getRun",
    params(RunId),
    responses(
        (status = 200, description = "The report.", body = RunReport),
        (status = 404, description = "No such run (or its journal cannot be read).", body = ErrorBody),
    ))]
async fn get_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<RunReport>, ApiError> {
    Ok(Json(state.runs.report_anywhere(&id).await?))
}

/// A run's report as an HTML page
///
/// One self-contained page (an SVG timeline of faults, load and health; tables): nothing
/// fetched, works offline and as an attachment. A run in progress gets the page as it stands.
#[utoipa::path(get, path = "/chaos/runs/{id}/report", tag = "runs", operation_id = "runReport",
    params(RunId),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 404, description = "No such run.", body = ErrorBody),
    ))]
async fn run_report(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let report = state.runs.report_anywhere(&id).await?;
    Ok(axum::response::Html(crate::chaos::report_page::render(&report)).into_response())
}

/// A run's timeline as SVG
///
/// The report page's timeline alone, as an SVG document (the console redraws it while a run
/// goes on; one renderer for both).
#[utoipa::path(get, path = "/chaos/runs/{id}/timeline.svg", tag = "runs", operation_id = "runTimeline",
    params(RunId),
    responses(
        (status = 200, description = "The timeline.", content_type = "image/svg+xml", body = String),
        (status = 404, description = "No such run.", body = ErrorBody),
    ))]
async fn run_timeline(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let report = state.runs.report_anywhere(&id).await?;
    let svg = crate::chaos::report_page::timeline_svg(&report);
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response())
}

/// What `POST /chaos/check` answers.
#[derive(Serialize, ToSchema)]
struct ScriptCheck {
    /// No problem found.
    ok: bool,
    /// Every problem, in the order found, with its line and column.
    problems: Vec<ScriptError>,
}

/// Check a script without running it
///
/// The body is a Rhai script (any content type, UTF-8). It is checked as `chaos-lab check` does:
/// its `//!` header (params, guards), the compile, and calls to functions that neither the
/// script API, Rhai nor the script defines. Nothing runs. 200 whatever the verdict.
#[utoipa::path(post, path = "/chaos/check", tag = "runs", operation_id = "checkScript",
    request_body(content = String, content_type = "text/plain", description = "The script."),
    responses(
        (status = 200, description = "The check.", body = ScriptCheck),
        (status = 400, description = "The body is empty.", body = ErrorBody),
        (status = 422, description = "The script is not UTF-8.", body = ErrorBody),
    ))]
async fn check_script(body: Bytes) -> Result<Json<ScriptCheck>, ApiError> {
    let source = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Unprocessable("the script must be UTF-8 text".into()))?;
    if source.trim().is_empty() {
        return Err(ApiError::Run(RunError::Invalid("the body is empty: send the Rhai script to check".into())));
    }
    let problems = crate::chaos::check::check(&source, false);
    Ok(Json(ScriptCheck { ok: problems.is_empty(), problems }))
}

/// One event of a run's stream, as Server-Sent Events frame it.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: events are written by `sse`
struct RunEvent {
    #[schema(
        pattern = "^(run_started|step_started|step_finished|log|expect|measurement|undo|breach|lagged|run_finished)$"
    )]
    event: String,
    /// The event's place in the stream (`1`, `2`, …), `end` on `run_finished`; none on `lagged`.
    #[schema(pattern = "^([0-9]+|end)$")]
    id: Option<String>,
    /// One line of JSON: the event's object (see the operation's description).
    data: String,
}

/// A run's live events (Server-Sent Events)
///
/// `event: <name>`, `id: <n>` and `data: <one line of JSON>` per event, plus a comment line
/// (`:`) after 15 s without an event. For a run in progress, every event so far is replayed
/// first, then the stream follows live and ends after `run_finished`; for a run that has ended,
/// the stream is a single `run_finished` event whose data is the whole `RunReport`.
///
/// Every event carries an id, its place in the run's stream (1, 2, …), and the final
/// `run_finished` carries `end`. A client that reconnects with `Last-Event-ID` gets only the
/// events after that one; one that sends `Last-Event-ID: end` for a finished run gets 204 No
/// Content, which tells an `EventSource` to stop reconnecting. Close on `run_finished`.
///
/// Events: `run_started` (a `RunSummary`), `step_started` and `step_finished` (a `Step`), `log`
/// (a `LogLine`), `expect` (an `Expectation`), `measurement` (`{name, value}`), `undo` (an
/// `UndoRecord`), `breach` (a `Breach`), `lagged` (`{missed_events}`: a slow client missed
/// events, or the replay was capped; the report has them) and `run_finished` (the `RunReport`).
#[utoipa::path(get, path = "/chaos/runs/{id}/events", tag = "runs", operation_id = "runEvents",
    params(RunId,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event the client has (`EventSource` sends it when it reconnects).")),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = RunEvent),
        (status = 204, description = "The run has ended and the client has its final event: stop reconnecting."),
        (status = 404, description = "No such run.", body = ErrorBody),
    ))]
async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = LastEventId::from_headers(&headers);
    let stream = match state.runs.active(&id) {
        Some(run) => live_events(run).boxed(),
        None => {
            let report = state.runs.report_anywhere(&id).await?;
            if report.status == crate::chaos::report::RunStatus::Running {
                // Running on another replica: follow what it publishes to the store.
                remote_events(state.clone(), id).boxed()
            } else if last == LastEventId::End {
                return Ok(StatusCode::NO_CONTENT.into_response());
            } else {
                // Finished: one event with the whole report.
                let ev = Event { name: "run_finished", data: json!(report), seq: None };
                stream::iter([ev]).boxed()
            }
        }
    };
    let stream = stream.filter(move |e| std::future::ready(last.wants(e))).map(|e| Ok::<_, Infallible>(sse(e)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// What a reconnecting client has seen, from its `Last-Event-ID` header.
#[derive(Clone, Copy, PartialEq)]
enum LastEventId {
    /// No header (or one this service never sent): the whole stream.
    None,
    Seen(u64),
    /// The client has the final event.
    End,
}

impl LastEventId {
    fn from_headers(headers: &HeaderMap) -> Self {
        match headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim) {
            Some(END_ID) => Self::End,
            Some(n) => n.parse().map_or(Self::None, Self::Seen),
            None => Self::None,
        }
    }

    /// Whether to send `e`: events with an id the client has are skipped; the stream's own
    /// notices and the final event always go.
    fn wants(&self, e: &Event) -> bool {
        match (self, e.seq) {
            (Self::Seen(n), Some(seq)) => e.name == "run_finished" || seq > *n,
            _ => true,
        }
    }
}

/// The SSE id of the final `run_finished` event.
const END_ID: &str = "end";

fn sse(e: Event) -> SseEvent {
    let ev = SseEvent::default().event(e.name).data(e.data.to_string());
    match e.seq {
        _ if e.name == "run_finished" => ev.id(END_ID),
        Some(seq) => ev.id(seq.to_string()),
        None => ev,
    }
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
                        queue.push_back(Event { name: "run_finished", data: json!(r), seq: None });
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
                let e = Event { name: "lagged", data: json!({"missed_events": n}), seq: None };
                Some((e, (rx, false)))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    stream::iter(past).chain(live)
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

/// What the kill switch answers.
#[derive(Serialize, ToSchema)]
struct KillSwitchReport {
    #[schema(example = "halted")]
    status: &'static str,
    halt: Halt,
    runs_cancelled: usize,
    faults_undone: usize,
    /// The undos that failed; those faults stay in the ledger (`GET /chaos/faults`).
    undo_failed: Vec<Outcome>,
    /// Every undo, as it ended.
    undone: Vec<Outcome>,
    /// `chaos-` network faults the backend held that the ledger did not know, removed (a count),
    /// or why they could not be listed.
    unknown_rules_removed: UnknownRules,
    /// From the kill switch to every fault undone, in ms.
    all_clear_ms: f64,
    /// Whether the halt reached the fleet's store (every replica follows within a poll).
    fleet: Published,
    load_stopped: bool,
    hang_stopped: bool,
    timestamp: String,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum UnknownRules {
    Removed(usize),
    Failed { error: String },
}

#[derive(Serialize, ToSchema)]
struct Published {
    published: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Kill switch: halt chaos, end every run and every fault
///
/// The kill switch, a latch. In this order: it halts (new runs and faults, the built-in
/// endpoints included, answer 423 until `POST /chaos/resume`; the latch survives a restart and
/// reaches every replica of a fleet); it cancels every run in progress and cuts their
/// `on_rollback` closures short; the fault ledger undoes every fault of every owner,
/// concurrently; and it removes the `chaos-` network faults the backend holds that the ledger
/// does not know (an operator CLI's NSG rule). `all_clear_ms` is the time until all that was
/// done; the answer then waits up to 10 s for the cancelled runs to end. It answers during an
/// app-scope hang (it is how to end one). The body is ignored.
#[utoipa::path(post, path = "/chaos/stop", tag = "chaos", operation_id = "killSwitch",
    responses((status = 200, description = "Everything is stopped and chaos is halted.", body = KillSwitchReport)))]
async fn kill_switch(State(state): State<AppState>) -> Json<KillSwitchReport> {
    let load = state.faults.load.status().active;
    let hang = state.faults.hang.status().active;
    let r = crate::chaos::kill_switch(&state.runs, &state.ledger, state.network.as_ref(), "POST /chaos/stop").await;
    // Every other replica follows within a poll; an unreachable store is reported, not fatal here.
    let fleet = match state.fleet.publish_halt(&r.halt).await {
        Ok(()) => Published { published: true, error: None },
        Err(e) => Published { published: false, error: Some(e.to_string()) },
    };
    state.runs.wait_ended(&r.runs, STOP_GRACE).await;
    let failed: Vec<Outcome> = r.outcomes.iter().filter(|o| !o.ok).cloned().collect();
    let undone = r.outcomes.len() - failed.len();
    tracing::warn!(
        runs = r.runs.len(),
        undone,
        failed = failed.len(),
        all_clear_ms = r.all_clear_ms,
        "kill switch: halted"
    );
    Json(KillSwitchReport {
        status: "halted",
        halt: r.halt,
        runs_cancelled: r.runs.len(),
        faults_undone: undone,
        undo_failed: failed,
        undone: r.outcomes,
        unknown_rules_removed: match r.unknown {
            Ok(n) => UnknownRules::Removed(n),
            Err(e) => UnknownRules::Failed { error: e.to_string() },
        },
        all_clear_ms: r.all_clear_ms,
        fleet,
        load_stopped: load,
        hang_stopped: hang,
        timestamp: crate::timestamp(),
    })
}

/// What `POST /chaos/resume` answers.
#[derive(Serialize, ToSchema)]
struct ResumeReport {
    #[schema(example = "resumed")]
    status: &'static str,
    was_halted: bool,
    halted_since: Option<String>,
    timestamp: String,
}

/// Lift the kill switch's latch
///
/// Clears the latch `POST /chaos/stop` set, on every replica of the fleet: new runs and faults
/// may start again. Undoes and starts nothing; with no latch set it is harmless. The body is
/// ignored.
#[utoipa::path(post, path = "/chaos/resume", tag = "chaos", operation_id = "resume",
    responses(
        (status = 200, description = "Chaos is allowed again.", body = ResumeReport),
        (status = 503, description = "The fleet's store is unreachable: the latch stays.", body = ErrorBody),
    ))]
async fn resume(State(state): State<AppState>) -> Result<Json<ResumeReport>, ApiError> {
    state.fleet.publish_resume().await.map_err(|e| {
        ApiError::Fault(crate::faults::FaultError::Unavailable(format!("cannot resume the fleet: {e}")))
    })?;
    let was = state.ledger.resume();
    if let Some(h) = &was {
        tracing::warn!(halted_since = %h.at, "chaos resumed");
    }
    Ok(Json(ResumeReport {
        status: "resumed",
        was_halted: was.is_some(),
        halted_since: was.as_ref().map(|h| h.at.clone()),
        timestamp: crate::timestamp(),
    }))
}

/// What `GET /chaos/scenarios` answers.
#[derive(Serialize, ToSchema)]
struct ScenarioList {
    /// `SCENARIOS_DIR`, watched: a file added, changed or removed shows within a second.
    dir: String,
    scenarios: Vec<Scenario>,
}

/// The scenario catalog
///
/// Every `.rhai` file of `SCENARIOS_DIR`, by name, with its header (description, params with
/// their defaults, guards) and whether it compiles (else its error with line and column).
#[utoipa::path(get, path = "/chaos/scenarios", tag = "runs", operation_id = "listScenarios",
    responses((status = 200, description = "The catalog.", body = ScenarioList)))]
async fn list_scenarios(State(state): State<AppState>) -> Json<ScenarioList> {
    Json(ScenarioList { dir: state.runs.catalog.dir().display().to_string(), scenarios: state.runs.catalog.list() })
}

/// A scenario and its source.
#[derive(Serialize, ToSchema)]
struct ScenarioDetail {
    #[serde(flatten)]
    scenario: Scenario,
    /// The file's text.
    source: String,
}

/// One scenario, with its source
#[utoipa::path(get, path = "/chaos/scenarios/{name}", tag = "runs", operation_id = "getScenario",
    params(("name" = String, Path, description = "A scenario name (its file name without `.rhai`).")),
    responses(
        (status = 200, description = "The scenario.", body = ScenarioDetail),
        (status = 404, description = "No such scenario.", body = ErrorBody),
    ))]
async fn get_scenario(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScenarioDetail>, ApiError> {
    let s = state
        .runs
        .catalog
        .get(&name)
        .ok_or_else(|| ApiError::Run(RunError::NotFound(format!("no scenario named '{name}'"))))?;
    let source = s.source.clone();
    Ok(Json(ScenarioDetail { scenario: s, source }))
}
