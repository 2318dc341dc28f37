//! One run's report: as JSON, as a self-contained HTML page, and its timeline alone as SVG.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::RunId;
use crate::chaos::report::RunReport;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

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
pub(super) async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunReport>, ApiError> {
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
pub(super) async fn run_report(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
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
pub(super) async fn run_timeline(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let report = state.runs.report_anywhere(&id).await?;
    let svg = crate::chaos::report_page::timeline_svg(&report);
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response())
}
