//! chaos-lab: a small Redis-backed HTTP service that breaks itself on purpose, so that detection,
//! alerting and recovery can be watched and measured.
//!
//! # Layout
//! - [`config`]: every setting, from the environment or a flag, validated before anything starts;
//!   a leaf (it imports no other module), with `config::duration` for durations as typed on a
//!   command line (`30`, `30s`, `5m`).
//! - [`store`]: the app's Redis access: pool, retries with backoff, the connection reset.
//! - [`faults`]: CPU/memory load, hangs, network faults (local proxy or Azure NSG), broken
//!   Container Apps revisions; one implementation per fault, each stoppable.
//! - [`azure`]: the managed-identity credential, a small ARM client, Entra ID for Redis.
//! - [`backoff`]: the one retry schedule (exponential, jittered, capped) of Redis, ARM and Entra ID.
//! - [`chaos_store`]: where shared state lives (a local directory, or Azure Blob Storage for a
//!   fleet of replicas); one seam, conditional writes, every call bounded.
//! - [`fleet`]: replicas sharing the chaos store: heartbeats and the fleet-wide halt latch.
//! - [`chaos`]: the scenario engine: Rhai runs, the scenario catalog, journals, undo.
//! - [`service`]: the composition root: builds the backends, the ledger, the fleet and the runs
//!   once from the configuration and hands them to `http` and `chaos`.
//! - [`http`]: routes, extractors, the error envelope; `http` → `chaos` → `faults` → `store`.
//! - [`cli`]: the binary's subcommands: `check`, `run`, and the operator's `network`,
//!   `deploy-fault` and `revisions`.
//! - [`loadgen`]: the load generator behind `cargo run --bin loadgen` and a script's `loadgen()`:
//!   goose users, the open model, profiles, reports and per-second series.
//! - [`dev_redis`]: a development Redis for a fresh machine, started only when nothing else is
//!   configured or answering.
//! - [`child`]: child processes that die with the service (parent-death signal).
//! - [`telemetry`]: metrics with the original lab's names, also served at `GET /metrics`.
//! - [`chart`]: the one time-series chart renderer (fault bands, lines, health, markers) as
//!   inline SVG, shared by the run report and loadgen's HTML report.
//! - [`serve`]: runs the API on a bound listener until a shutdown future resolves.
#![forbid(unsafe_code)]

pub mod azure;
pub mod backoff;
pub mod chaos;
pub mod chaos_store;
pub mod chart;
pub mod child;
pub mod cli;
pub mod config;
pub mod dev_redis;
pub mod faults;
pub mod fleet;
pub mod http;
pub mod loadgen;
pub mod service;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::net::TcpListener;

pub use http::AppState;

/// How long in-flight requests get to finish once shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Now, as the API writes timestamps: RFC 3339 UTC with microseconds.
pub fn timestamp() -> String {
    format_timestamp(Utc::now())
}

pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `x` rounded to `decimals` places, as the API reports measured figures (e.g. milliseconds to
/// the microsecond: `round_to(ms, 3)`).
pub fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// The name a unit enum variant has in the API (e.g. `timed_out`, `network_block`).
pub fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Serves the API on `listener` until `shutdown` resolves. Then it stops every run (each undoes
/// its faults) and ends every running fault (so requests stalled by a hang can finish), stops
/// accepting, and gives in-flight requests [`DRAIN_TIMEOUT`] to complete.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = state.clone();
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: stopping runs and faults, draining requests");
        service::shutdown(&app).await;
        let _ = draining_tx.send(());
    });
    let deadline = async {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r,
        () = deadline => {
            tracing::warn!(seconds = DRAIN_TIMEOUT.as_secs(), "requests still running after the drain timeout; exiting anyway");
            Ok(())
        }
    }
}
