//! `GET /chaos/runs`: every run, newest first, a page at a time.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::chaos::report::RunSummary;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody, QueryParams};

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
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
pub(super) async fn list_runs(
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
