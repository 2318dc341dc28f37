//! `GET /console`: the game-day console, a single page served from the binary (plain HTML, CSS
//! and JS beside this file, no build step, nothing fetched from the internet). The page itself
//! holds no data and needs no token; everything it shows comes from the chaos API, which it
//! calls with the token the user enters (kept in the browser session, sent as a Bearer header).
//!
//! `/console/runs/{id}` is the same page: its script routes on the path, so a link to a run works
//! and moving between views never reloads.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

pub fn router() -> OpenApiRouter<AppState> {
    // Only the entry page is described: the rest is the same page under other paths, and assets.
    OpenApiRouter::new()
        .routes(routes!(page))
        .route("/console/", get(page))
        .route("/console/runs/{id}", get(page))
        .route("/console/assets/{file}", get(asset))
}

/// The game-day console
///
/// One page embedded in the binary (nothing fetched from the internet): the scenario catalog,
/// runs live and past, the fault ledger and the kill switch. It calls this API with the token
/// the user enters once per browser session.
#[utoipa::path(get, path = "/console", tag = "docs", operation_id = "console",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)))]
async fn page() -> Html<&'static str> {
    Html(INDEX)
}

/// An unknown asset is the usual 404 envelope (`No route for GET …`).
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    // Served from the binary: a new build is a new page, so the browser must not keep an old one.
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
