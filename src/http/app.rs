//! The app being broken: `GET /` (reads and seeds a Redis key), `GET /health` (Redis PING,
//! cached, the readiness probe) and `GET /healthz` (liveness, never touches Redis).

use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::store::Store;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(index)).routes(routes!(health)).routes(routes!(healthz))
}

/// What `GET /` answers.
#[derive(Serialize, ToSchema)]
pub struct Index {
    #[schema(example = "Hello from Container Apps Chaos Lab")]
    message: &'static str,
    /// The sample value read from (or just written to) Redis; `Redis unavailable` with
    /// `REDIS_ENABLED=false`.
    #[schema(example = "Data created at 2026-07-30T12:00:00.123456Z")]
    redis_data: String,
    timestamp: String,
}

/// The app: read (and seed) a Redis value
///
/// Reads the Redis key `chaos_lab:data:sample`; if it is missing or empty, sets it to `Data created
/// at <timestamp>` and returns that. Increments `chaos_lab:counter:requests` for a random share of
/// requests (`REQUEST_COUNTER_SAMPLE_RATE`, default 0.1). Failed Redis operations are retried with
/// exponential backoff (`REDIS_MAX_RETRIES`, `REDIS_BACKOFF_BASE`, `REDIS_BACKOFF_CAP`) before the
/// 503. With `REDIS_ENABLED=false` it answers 200 with `redis_data` = `Redis unavailable`.
#[utoipa::path(get, path = "/", tag = "app", operation_id = "index", responses(
    (status = 200, description = "The sample value.", body = Index),
    (status = 503, description = "Redis failed: `detail` is `Redis connection failed: <cause>`, `Redis operation \
        timeout: <cause>` or `Redis authentication failed: <cause>` (rarely `Redis command failed: <cause>`).", body = ErrorBody),
))]
async fn index(State(state): State<AppState>) -> Result<Json<Index>, ApiError> {
    let redis_data = match &state.lab.store {
        None => "Redis unavailable".to_string(),
        Some(store) => {
            let count = fastrand::f64() < state.config.request_counter_sample_rate;
            store.sample_data(count).await?
        }
    };
    Ok(Json(Index { message: "Hello from Container Apps Chaos Lab", redis_data, timestamp: crate::timestamp() }))
}

/// What `GET /health` answers, healthy (200) or not (503).
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    #[schema(example = "healthy")]
    status: &'static str,
    redis: RedisHealth,
    /// Time of the response (not of the cached PING).
    timestamp: String,
}

/// The result of the (possibly cached) Redis PING.
#[derive(Serialize, ToSchema)]
pub struct RedisHealth {
    /// Whether the PING succeeded; always false when Redis is disabled.
    connected: bool,
    /// PING round trip in whole milliseconds, an integer as the original lab sent it. Present
    /// only when `connected` is true.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
    /// The same round trip in microseconds, for precision.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_us: Option<u64>,
    /// Why the PING failed. Present only when the status is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Present (and false) only when `REDIS_ENABLED=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
}

/// Readiness probe: Redis PING, cached
///
/// PINGs Redis once (no retries) and reports the result. The result is cached for
/// `HEALTH_CACHE_TTL_SECONDS` (default 5 s; 0 = PING on every call), and concurrent callers share
/// one PING. A cached unhealthy result is still answered with 503. With `REDIS_ENABLED=false` it is
/// always 200 healthy with `redis.connected` and `redis.enabled` false. The 503 body is this health
/// report with `status` `unhealthy`, not the `Error` envelope.
#[utoipa::path(get, path = "/health", tag = "app", operation_id = "health", responses(
    (status = 200, description = "Healthy.", body = Health),
    (status = 503, description = "Unhealthy: the Redis PING failed (now or within the cache TTL).", body = Health),
))]
async fn health(State(state): State<AppState>) -> Response {
    let Some(store) = &state.lab.store else {
        let redis =
            RedisHealth { connected: false, latency_ms: None, latency_us: None, error: None, enabled: Some(false) };
        return Json(Health { status: "healthy", redis, timestamp: crate::timestamp() }).into_response();
    };
    let check = state.health.check(store).await;
    let (code, status, redis) = match check.result {
        // An integer, as the original lab sent it (typed clients parse it as int); the precise
        // round trip is `latency_us`.
        Ok(latency) => (
            StatusCode::OK,
            "healthy",
            RedisHealth {
                connected: true,
                latency_ms: Some((latency.as_secs_f64() * 1000.0).round() as u64),
                latency_us: Some(latency.as_micros() as u64),
                error: None,
                enabled: None,
            },
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            RedisHealth { connected: false, latency_ms: None, latency_us: None, error: Some(e), enabled: None },
        ),
    };
    (code, Json(Health { status, redis, timestamp: crate::timestamp() })).into_response()
}

/// What `GET /healthz` answers.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "alive")]
    status: &'static str,
    timestamp: String,
}

/// Liveness probe
///
/// Answers as long as the HTTP service runs; never touches Redis. Stalls during an app-scope
/// hang, like every request to the app.
#[utoipa::path(get, path = "/healthz", tag = "app", operation_id = "healthz",
    responses((status = 200, description = "Alive.", body = Liveness)))]
async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "alive", timestamp: crate::timestamp() })
}

/// A Redis health result, reused for the TTL. Unhealthy results are cached too (and still 503).
#[derive(Clone)]
pub struct HealthCheck {
    pub result: Result<Duration, String>,
    at: Instant,
}

/// Caches `/health` so probes and load tests do not PING Redis on every call; one PING at a time
/// refreshes it (concurrent callers wait for that one instead of piling on).
pub struct HealthCache {
    ttl: Duration,
    last: RwLock<Option<HealthCheck>>,
    refresh: tokio::sync::Mutex<()>,
}

impl HealthCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, last: RwLock::new(None), refresh: tokio::sync::Mutex::new(()) }
    }

    pub async fn check(&self, store: &Store) -> HealthCheck {
        if let Some(c) = self.fresh() {
            return c;
        }
        let _one = self.refresh.lock().await;
        if let Some(c) = self.fresh() {
            return c; // someone else refreshed while we waited
        }
        let result = store.ping().await.map_err(|e| e.to_string());
        if let Ok(latency) = &result {
            crate::telemetry::metrics().redis_connection_latency_ms.record(latency.as_secs_f64() * 1000.0, &[]);
        }
        let check = HealthCheck { result, at: Instant::now() };
        *self.last.write().unwrap() = Some(check.clone());
        check
    }

    fn fresh(&self) -> Option<HealthCheck> {
        let last = self.last.read().unwrap();
        last.as_ref().filter(|c| c.at.elapsed() < self.ttl).cloned()
    }
}
