//! `GET /openapi.json` (the API description, kept beside the code in `openapi.json`) and `GET /docs`
//! (a self-contained page that renders it: no CDN, no build-time download).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const OPENAPI: &str = include_str!("openapi.json");
const DOCS_PAGE: &str = include_str!("docs.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route(
            "/docs",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], DOCS_PAGE).into_response() }),
        )
}
