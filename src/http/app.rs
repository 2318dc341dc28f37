//! The app being broken: `GET /` (reads and seeds a Redis key), `GET /health` (Redis PING,
//! cached, the readiness probe) and `GET /healthz` (liveness, never touches Redis).

use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::store::Store;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(index)).route("/health", get(health)).route("/healthz", get(healthz))
}

async fn index(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let redis_data = match &state.store {
        None => "Redis unavailable".to_string(),
        Some(store) => {
            let count = fastrand::f64() < state.config.request_counter_sample_rate;
            store.sample_data(count).await?
        }
    };
    Ok(Json(json!({
        "message": "Hello from Container Apps Chaos Lab",
        "redis_data": redis_data,
        "timestamp": crate::timestamp(),
    })))
}

async fn health(State(state): State<AppState>) -> Response {
    let Some(store) = &state.store else {
        return Json(json!({
            "status": "healthy",
            "redis": {"connected": false, "enabled": false},
            "timestamp": crate::timestamp(),
        }))
        .into_response();
    };
    let check = state.health.check(store).await;
    let (code, status) = match check.result {
        Ok(_) => (StatusCode::OK, "healthy"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
    };
    let redis = match &check.result {
        Ok(latency) => json!({"connected": true, "latency_ms": round2(latency.as_secs_f64() * 1000.0)}),
        Err(e) => json!({"connected": false, "error": e}),
    };
    (code, Json(json!({"status": status, "redis": redis, "timestamp": crate::timestamp()}))).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "alive", "timestamp": crate::timestamp()}))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
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
