//! The HTTP API: one file per resource, each exporting `router()`, assembled by [`router`] with
//! the middleware every request passes through (request id, trace span, error envelope, hang
//! gate). It builds nothing: [`crate::service::start`] hands it the lab's parts in an
//! [`AppState`]. Tests call [`router`] through [`crate::serve`], exactly as `main` does.

mod app;
mod chaos;
mod console;
pub mod error;
mod metrics;
pub mod openapi;
mod runs;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::chaos::Runs;
use crate::chaos::engine::Deps;
use crate::config::Config;
use crate::dev_redis::DevRedis;
use error::ApiError;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The lab's parts (faults, ledger, store, network backend, fleet), the same the engine uses.
    pub lab: Arc<Deps>,
    pub runs: Arc<Runs>,
    /// The development Redis this service started for itself, if any (see `dev_redis`).
    pub dev_redis: Option<Arc<DevRedis>>,
    pub health: Arc<app::HealthCache>,
}

impl AppState {
    /// The HTTP side of a service [`crate::service::start`] has built.
    pub fn new(config: Arc<Config>, lab: Arc<Deps>, runs: Arc<Runs>, dev_redis: Option<Arc<DevRedis>>) -> Self {
        let health = Arc::new(app::HealthCache::new(config.health_cache_ttl_seconds));
        let state = Self { config, lab, runs, dev_redis, health };
        let exporting = ["OTEL_EXPORTER_OTLP_ENDPOINT", "APPLICATIONINSIGHTS_CONNECTION_STRING"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()));
        if exporting {
            // OTLP exports run on a timer: keep the state gauges fresh between scrapes.
            let sampled = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    metrics::sample_gauges(&sampled);
                }
            });
        }
        state
    }
}

/// Every route, each registered with its API description ([`openapi::document`] reads the same).
fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    openapi::base()
        .merge(app::router())
        .merge(chaos::router())
        .merge(openapi::router())
        .merge(runs::router())
        .merge(metrics::router())
        .merge(console::router())
}

/// The whole API with its middleware.
pub fn router(state: AppState) -> Router {
    let (api, _) = routes().split_for_parts();
    let api = api
        .layer(middleware::from_fn_with_state(state.clone(), hang_gate))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state);
    // The cross-cutting layers wrap the finished router (not each route), so they also see the
    // responses axum makes itself: 404, and 405 complete with its Allow header.
    Router::new().fallback_service(api).layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            // Failures are logged once, by the envelope middleware, with their detail.
            .layer(TraceLayer::new_for_http().on_failure(()).make_span_with(request_span))
            .layer(middleware::from_fn(error::envelope)),
    )
}

/// The span of one request: its logs carry the request id, and it is exported as a trace that
/// continues the caller's W3C `traceparent`. Health probes are not traced (they would drown the
/// traces that matter).
fn request_span(req: &Request) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let path = req.uri().path();
    if path == "/health" || path == "/healthz" {
        return tracing::Span::none();
    }
    let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {path}", req.method()),
        otel.kind = "server",
        request_id = %id,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(req.headers())));
    let _ = span.set_parent(parent);
    span
}

/// Reads W3C trace context from request headers.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// An app-scope hang stalls the app's requests here, before they reach their handler: `/`,
/// `/health`, `/healthz`, `/metrics` (what users, probes and scrapers see) and unknown paths.
/// The lab's own controls are not the app and stay reachable, so a hang cannot take the kill
/// switch, the console or the run API with it: `/chaos/*`, `/console`, `/docs`, `/openapi.json`.
async fn hang_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_lab_control(req.uri().path()) {
        state.lab.faults.hang.gate().await;
    }
    next.run(req).await
}

/// The paths an app-scope hang does not stall (see [`hang_gate`]).
fn is_lab_control(path: &str) -> bool {
    path.starts_with("/chaos/")
        || path == "/console"
        || path.starts_with("/console/")
        || path == "/docs"
        || path == "/openapi.json"
}

/// `CHAOS_API_TOKEN`: every `/chaos/*` request except `GET /chaos/status` needs
/// `Authorization: Bearer <token>` (the scheme in any case, as RFC 9110 has it). Without a token,
/// script execution is refused unless the service listens on loopback only. An empty or short
/// token never gets here: `Config::validate` refuses it at startup.
/// Whether `CHAOS_API_TOKEN`, when set, guards this request: every `/chaos/*` operation but
/// `GET /chaos/status` (the API description says so from the same function).
pub(crate) fn needs_token(method: &str, path: &str) -> bool {
    path.starts_with("/chaos/") && !(method.eq_ignore_ascii_case("GET") && path == "/chaos/status")
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if needs_token(req.method().as_str(), path) {
        match &state.config.chaos.chaos_api_token {
            Some(token) => {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer_token)
                    .unwrap_or_default();
                if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    return ApiError::Unauthorized("this endpoint needs 'Authorization: Bearer <CHAOS_API_TOKEN>'")
                        .into_response();
                }
            }
            None if req.method() == Method::POST && path == "/chaos/run" && !state.config.app_host.is_loopback() => {
                return ApiError::Forbidden(
                    "script execution is off: the service listens on a non-loopback address without \
                     CHAOS_API_TOKEN; set CHAOS_API_TOKEN to enable POST /chaos/run",
                )
                .into_response();
            }
            None => {}
        }
    }
    next.run(req).await
}

/// The credentials of an `Authorization: Bearer <token>` header value; the scheme is
/// case-insensitive and may be followed by several spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
}

/// Compares `given` with `token` in constant time (`subtle`), so timing does not reveal how much
/// of the token matched. `given` is padded or cut to the token's length first, because `subtle`
/// returns at once on slices of different lengths; the lengths are then compared in constant time
/// too. The time taken depends on the token's length only.
fn constant_time_eq(given: &[u8], token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let mut padded = vec![0u8; token.len()];
    let n = given.len().min(token.len());
    padded[..n].copy_from_slice(&given[..n]);
    let same_bytes = padded[..].ct_eq(token);
    let same_len = (given.len() as u64).ct_eq(&(token.len() as u64));
    bool::from(same_bytes & same_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn tokens_match_only_when_equal() {
        let token = b"0123456789abcdef";
        assert!(constant_time_eq(b"0123456789abcdef", token));
        assert!(!constant_time_eq(b"0123456789abcdeX", token));
        assert!(!constant_time_eq(b"0123456789abcde", token), "a prefix");
        assert!(!constant_time_eq(b"0123456789abcdef0", token), "a longer one");
        assert!(!constant_time_eq(b"0123456789abcdef\0", token), "padding does not match");
        assert!(!constant_time_eq(b"", token));
    }
}
