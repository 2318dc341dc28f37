//! The HTTP API: one file per resource, each exporting `router()`, assembled by [`router`] with
//! the middleware every request passes through (request id, trace span, error envelope, hang
//! gate). Tests call [`router`] through [`crate::serve`], exactly as `main` does.

mod app;
mod chaos;
mod docs;
pub mod error;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::faults::Faults;
use crate::store::Store;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// `None` when `REDIS_ENABLED=false`.
    pub store: Option<Store>,
    pub faults: Arc<Faults>,
    pub health: Arc<app::HealthCache>,
}

impl AppState {
    pub fn new(config: Config, store: Option<Store>) -> Self {
        let ttl = config.health_cache_ttl_seconds;
        Self {
            config: Arc::new(config),
            store,
            faults: Arc::new(Faults::default()),
            health: Arc::new(app::HealthCache::new(ttl)),
        }
    }

    /// How long a non-forced redis-reset waits for commands in flight.
    pub fn reset_grace(&self) -> Duration {
        self.config.redis.redis_socket_timeout + Duration::from_millis(500)
    }
}

/// The whole API with its middleware.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(app::router())
        .merge(chaos::router())
        .merge(docs::router())
        .layer(middleware::from_fn_with_state(state.clone(), hang_gate))
        .with_state(state);
    // The cross-cutting layers wrap the finished router (not each route), so they also see the
    // responses axum makes itself: 404, and 405 complete with its Allow header.
    Router::new().fallback_service(api).layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .extensions()
                    .get::<RequestId>()
                    .and_then(|id| id.header_value().to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(middleware::from_fn(error::envelope)),
    )
}

/// An app-scope hang stalls every request here, before it reaches its handler.
async fn hang_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.faults.hang.gate().await;
    next.run(req).await
}
