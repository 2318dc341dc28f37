//! The HTTP API: one file per resource, each exporting `router()`, assembled by [`router`] with
//! the middleware every request passes through (request id, trace span, error envelope, hang
//! gate). Tests call [`router`] through [`crate::serve`], exactly as `main` does.

mod app;
mod chaos;
mod console;
pub mod error;
mod metrics;
pub mod openapi;
mod runs;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::azure::{Arm, EntraRedisAuth};
use crate::chaos::Runs;
use crate::chaos::catalog::Catalog;
use crate::chaos::engine::Deps;
use crate::config::{Config, NetworkBackendKind, RedisAuth};
use crate::faults::Faults;
use crate::faults::deploy::{ContainerApp, DeployBackend};
use crate::faults::ledger::Ledger;
use crate::faults::network::{AzureNsg, Disabled, LocalProxy, NetworkBackend};
use crate::store::Store;
use error::ApiError;

/// How long SIGTERM waits for runs to end by themselves (their rollbacks, their undo) before the
/// ledger undoes what is left; a local undo takes milliseconds.
const SHUTDOWN_UNDO_GRACE: Duration = Duration::from_secs(3);
/// How long SIGTERM waits for the ledger's undo (ARM calls on Azure): within the platform's grace
/// period. What is left stays in the ledger file and is undone at the next start.
const SHUTDOWN_CLEAR_TIMEOUT: Duration = Duration::from_secs(15);

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// `None` when `REDIS_ENABLED=false`.
    pub store: Option<Store>,
    pub faults: Arc<Faults>,
    /// The one door for every fault: apply, undo, leases, the halt latch.
    pub ledger: Arc<Ledger>,
    pub network: Arc<dyn NetworkBackend>,
    /// Set when the local backend runs, for the details `/chaos/status` shows.
    pub proxy: Option<Arc<LocalProxy>>,
    /// This replica's view of the fleet (alone without CHAOS_STORE_URL).
    pub fleet: Arc<crate::fleet::Fleet>,
    /// The development Redis this service started for itself, if any (see `dev_redis`).
    pub dev_redis: Option<Arc<crate::dev_redis::DevRedis>>,
    pub runs: Arc<Runs>,
    pub health: Arc<app::HealthCache>,
}

impl AppState {
    /// Builds everything the API needs for a service that listens on `addr`: the network fault
    /// backend (starting the local proxy), the Redis client routed through it, the scenario
    /// catalog (watched) and the run journals.
    pub async fn start(mut config: Config, addr: SocketAddr) -> anyhow::Result<Self> {
        // On a fresh machine: a Redis of our own when nothing is configured or answering. Spawned
        // from this (the main) thread, which lives as long as the service.
        let dev_redis = crate::dev_redis::provide(&config).map(Arc::new);
        if let Some(d) = &dev_redis {
            config.redis.redis_host = "127.0.0.1".into();
            config.redis.redis_port = d.port;
        }
        let azure = &config.chaos.azure;
        let backend = config.chaos.network_backend();
        let app = azure.app();
        let entra = config.redis.redis_enabled && config.redis.auth() == RedisAuth::Entra;
        // One credential for ARM and Redis, made only when something needs Azure.
        let store_url = config.chaos.chaos_store_url.clone().filter(|u| !u.trim().is_empty());
        let store_signs_in = store_url.as_deref().is_some_and(|u| !u.contains("sig="));
        let credential = if backend == NetworkBackendKind::Azure || entra || app.is_some() || store_signs_in {
            Some(crate::azure::credential(azure.azure_client_id.as_deref()).map_err(anyhow::Error::msg)?)
        } else {
            None
        };
        let (network, proxy): (Arc<dyn NetworkBackend>, _) = match backend {
            NetworkBackendKind::Azure => {
                let nsg = azure.nsg().context("NETWORK_FAULT_BACKEND=azure needs AZURE_NSG_NAME and friends")?;
                let cred = credential.clone().context("the Azure credential is set up for the azure backend")?;
                let backend =
                    AzureNsg::new(nsg, azure.azure_nsg_rule_port, &azure.azure_resource_manager_endpoint, cred)?;
                // Removes what a crashed predecessor left, then keeps looking.
                backend.start_sweeper(crate::faults::network::azure::SWEEP_INTERVAL);
                (Arc::new(backend), None)
            }
            NetworkBackendKind::Local => {
                let proxy = LocalProxy::start(
                    config.redis.redis_host.clone(),
                    config.redis.redis_port,
                    config.redis.redis_socket_connect_timeout,
                )
                .context("cannot start the local network-fault proxy")?;
                (proxy.clone(), Some(proxy))
            }
            NetworkBackendKind::None => (Arc::new(Disabled), None),
        };
        let store = if config.redis.redis_enabled {
            Some(
                Store::new(
                    &config.redis,
                    proxy.as_ref().map(|p| p.addr()),
                    match (&credential, entra) {
                        (Some(c), true) => Some(EntraRedisAuth::start(c.clone(), config.redis.redis_username.clone())),
                        _ => None,
                    },
                )
                .context("cannot set up the Redis client")?,
            )
        } else {
            None
        };
        let faults = Arc::new(Faults::default());
        // Scripts reach the service over loopback even when it listens on all interfaces.
        let self_ip: IpAddr = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        let deploy: Option<Arc<dyn DeployBackend>> = match (app, &credential) {
            (Some(app), Some(c)) => {
                let arm = Arm::new(&azure.azure_resource_manager_endpoint, c.clone())?;
                Some(Arc::new(ContainerApp::new(app, arm)))
            }
            _ => None,
        };
        let shared = crate::chaos_store::SharedStore::default();
        let fleet = crate::fleet::Fleet::new(
            crate::fleet::replica_name(config.chaos.replica_name.as_deref()),
            store_url.is_some(),
            shared.clone(),
        );
        let ledger = Ledger::open(&config.chaos.runs_dir, faults.clone(), network.clone(), deploy.clone(), shared)
            .with_context(|| format!("cannot open the fault ledger in RUNS_DIR {}", config.chaos.runs_dir.display()))?;
        // What a crashed predecessor left is undone before anything new can start.
        let recovered = ledger.recover().await;
        ledger.start_timer();
        let deps = Arc::new(Deps {
            faults: faults.clone(),
            ledger: ledger.clone(),
            rollback_timeout: config.chaos.rollback_timeout_seconds,
            fleet: fleet.clone(),
            store: store.clone(),
            network: network.clone(),
            deploy,
            self_url: format!("http://{}", SocketAddr::new(self_ip, addr.port())),
            http: reqwest::Client::builder().build().context("cannot build the HTTP client")?,
            handle: tokio::runtime::Handle::current(),
            loadgen: crate::chaos::loadgen::LoadgenConfig::new(
                config.chaos.loadgen_bin.clone(),
                &config.chaos.runs_dir,
            ),
        });
        let catalog = Catalog::load(config.chaos.scenarios_dir.clone());
        catalog.watch();
        let runs = Runs::open(
            deps,
            catalog,
            config.chaos.runs_dir.clone(),
            config.chaos.max_concurrent_runs as usize,
            config.chaos.run_limits(),
            config.chaos.runs_retain.clone(),
            &recovered,
        )
        .with_context(|| format!("cannot use RUNS_DIR {}", config.chaos.runs_dir.display()))?;
        let runs = Arc::new(runs);
        if let Some(url) = store_url {
            let local = crate::fleet::Local {
                runs: runs.clone(),
                ledger: ledger.clone(),
                network: network.clone(),
                faults: faults.clone(),
                redis: store.clone(),
            };
            let cred = credential.clone();
            let open = move || {
                let (url, cred) = (url.clone(), cred.clone());
                async move { crate::chaos_store::azure_blob(&url, cred).await }
            };
            fleet.start(open, local);
        }
        let ttl = config.health_cache_ttl_seconds;
        let state = Self {
            config: Arc::new(config),
            store,
            faults,
            ledger,
            network,
            proxy,
            dev_redis,
            runs,
            fleet,
            health: Arc::new(app::HealthCache::new(ttl)),
        };
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
        Ok(state)
    }

    /// What SIGTERM triggers: no new run or fault, runs stopped (given a moment to run their
    /// rollbacks and undo), then the ledger undoes whatever is left, of every owner.
    pub async fn shutdown(&self) {
        self.faults.shutdown();
        self.runs.shutdown(SHUTDOWN_UNDO_GRACE).await;
        // Bounded: an unreachable ARM must not hold the process past the platform's grace period;
        // what is not undone stays in the ledger file for the next start.
        match tokio::time::timeout(SHUTDOWN_CLEAR_TIMEOUT, self.ledger.undo_all()).await {
            Ok(outcomes) => {
                for o in outcomes.iter().filter(|o| !o.ok) {
                    tracing::error!(fault = %o.fault_id, detail = %o.detail, "could not undo a fault at shutdown; the next start retries");
                }
            }
            Err(_) => tracing::error!(
                seconds = SHUTDOWN_CLEAR_TIMEOUT.as_secs(),
                "faults not undone in time at shutdown; the next start undoes them (NSG rules also expire)"
            ),
        }
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
        state.faults.hang.gate().await;
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
