//! The scenario catalog (`GET /chaos/scenarios[/{name}]`) and checking a script without running
//! it (`POST /chaos/check`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::chaos::RunError;
use crate::chaos::catalog::Scenario;
use crate::chaos::report::ScriptError;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// What `POST /chaos/check` answers.
#[derive(Serialize, ToSchema)]
pub(super) struct ScriptCheck {
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
pub(super) async fn check_script(body: Bytes) -> Result<Json<ScriptCheck>, ApiError> {
    let source = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::Unprocessable("the script must be UTF-8 text".into()))?;
    if source.trim().is_empty() {
        return Err(ApiError::Run(RunError::Invalid("the body is empty: send the Rhai script to check".into())));
    }
    let problems = crate::chaos::check::check(&source, false);
    Ok(Json(ScriptCheck { ok: problems.is_empty(), problems }))
}

/// What `GET /chaos/scenarios` answers.
#[derive(Serialize, ToSchema)]
pub(super) struct ScenarioList {
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
pub(super) async fn list_scenarios(State(state): State<AppState>) -> Json<ScenarioList> {
    Json(ScenarioList { dir: state.runs.catalog.dir().display().to_string(), scenarios: state.runs.catalog.list() })
}

/// A scenario and its source.
#[derive(Serialize, ToSchema)]
pub(super) struct ScenarioDetail {
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
pub(super) async fn get_scenario(
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
