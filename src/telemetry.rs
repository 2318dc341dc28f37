//! Metrics: OpenTelemetry instruments with the original lab's names, recorded where things
//! happen and read by a Prometheus exporter for `GET /metrics`.
//!
//! One meter provider per process (installed as the global provider), so every module records
//! through [`metrics()`] without threading a handle around. Gauges that describe current state
//! (Redis link, open connections, active faults) are set by their owner when scraped
//! (`http::metrics`), not on every change.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// Every instrument the service records.
pub struct Metrics {
    /// 1 when the last Redis operation succeeded, else 0.
    pub redis_connection_status: Gauge<u64>,
    /// Round-trip time of the health check's PING.
    pub redis_connection_latency_ms: Histogram<f64>,
    /// Open Redis connections.
    pub redis_connection_count: Gauge<u64>,
    /// `redis-reset` faults applied (from the API or a script).
    pub redis_reset: Counter<u64>,
    /// 1 while a fault of `operation` is applied.
    pub chaos_operation_active: Gauge<u64>,
    /// How long faults lasted, by `operation` (load, hang, run).
    pub chaos_operation_duration_seconds: Histogram<f64>,
    /// Runs that ended, by `status`.
    pub chaos_runs: Counter<u64>,
}

struct Telemetry {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
    metrics: Metrics,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

fn telemetry() -> &'static Telemetry {
    TELEMETRY.get_or_init(|| {
        let registry = prometheus::Registry::new();
        // Names stay exactly as the original lab had them: no unit suffix, no scope labels.
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("the Prometheus exporter builds with a fresh registry");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        let meter = provider.meter("chaos-lab");
        let metrics = Metrics {
            redis_connection_status: meter
                .u64_gauge("redis_connection_status")
                .with_description("1 when the last Redis operation succeeded, else 0")
                .build(),
            redis_connection_latency_ms: meter
                .f64_histogram("redis_connection_latency_ms")
                .with_unit("ms")
                .with_description("Round-trip time of the health check's Redis PING")
                .with_boundaries(vec![0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 3000.0])
                .build(),
            redis_connection_count: meter
                .u64_gauge("redis_connection_count")
                .with_unit("{connection}")
                .with_description("Redis connections open in the pool right now")
                .build(),
            redis_reset: meter
                .u64_counter("redis_reset")
                .with_unit("{reset}")
                .with_description("redis-reset faults applied")
                .build(),
            chaos_operation_active: meter
                .u64_gauge("chaos_operation_active")
                .with_description("1 while a fault of this operation is applied")
                .build(),
            chaos_operation_duration_seconds: meter
                .f64_histogram("chaos_operation_duration_seconds")
                .with_unit("s")
                .with_description("How long faults and runs lasted")
                .with_boundaries(vec![1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0])
                .build(),
            chaos_runs: meter
                .u64_counter("chaos_runs")
                .with_unit("{run}")
                .with_description("Chaos runs that ended, by status")
                .build(),
        };
        Telemetry { registry, _provider: provider, metrics }
    })
}

/// The process's instruments.
pub fn metrics() -> &'static Metrics {
    &telemetry().metrics
}

/// Records how long a fault (or run) of `operation` lasted.
pub fn operation_ended(operation: &'static str, seconds: f64) {
    metrics().chaos_operation_duration_seconds.record(seconds, &[KeyValue::new("operation", operation)]);
}

/// Every metric in the Prometheus text format.
pub fn prometheus_text() -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    let families = telemetry().registry.gather();
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
