//! Telemetry: logs (text or JSON), and OpenTelemetry traces, metrics and logs exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Metrics keep the original lab's names and
//! are also read by a Prometheus exporter for `GET /metrics`.
//!
//! One meter provider per process (installed as the global provider), so every module records
//! through [`metrics()`] without threading a handle around. Gauges that describe current state
//! (Redis link, open connections, active faults) are set when scraped (`http::metrics`) and
//! before each OTLP export.
//!
//! Exporters run on their own threads with blocking HTTP clients, so an export never holds up a
//! request; [`Guard::shutdown`] flushes them.

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
    TELEMETRY.get_or_init(|| build_metrics(|b| b))
}

type MeterBuilder = opentelemetry_sdk::metrics::MeterProviderBuilder;

/// The meter provider: the Prometheus reader, plus whatever `exporters` adds (OTLP, App Insights).
fn build_metrics(exporters: impl FnOnce(MeterBuilder) -> MeterBuilder) -> Telemetry {
    {
        let registry = prometheus::Registry::new();
        // Names stay exactly as the original lab had them: no unit suffix, no scope labels.
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("the Prometheus exporter builds with a fresh registry");
        let provider = exporters(SdkMeterProvider::builder().with_reader(exporter).with_resource(resource())).build();
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
    }
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

/// Service name `chaos-lab` unless `OTEL_SERVICE_NAME` says otherwise; `OTEL_RESOURCE_ATTRIBUTES`
/// is read by the SDK's own detectors.
fn resource() -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name("chaos-lab").build()
    }
}

/// Flushes and stops the exporters at shutdown.
pub struct Guard {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    logger: Option<opentelemetry_sdk::logs::SdkLoggerProvider>,
}

impl Guard {
    /// Exports what is still buffered. Blocking: call off the async runtime.
    pub fn shutdown(self) {
        if let Some(t) = self.tracer {
            let _ = t.shutdown();
        }
        if let Some(l) = self.logger {
            let _ = l.shutdown();
        }
        if let Some(t) = TELEMETRY.get() {
            let _ = t._provider.shutdown();
        }
    }
}

/// Sets up logging (per-layer filters, so `LOG_LEVEL` never starves the exporters) and, when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OTLP export of traces, metrics and logs. The standard
/// `OTEL_*` variables (protocol, service name, resource attributes, sampler, batch and export
/// intervals) are read by the OpenTelemetry SDK itself.
pub fn init(level: &str, json: bool) -> anyhow::Result<Guard> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};

    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = if json {
        fmt.json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
    } else {
        fmt.boxed()
    };
    let fmt = fmt.with_filter(EnvFilter::new(level));

    let otlp = env_set("OTEL_EXPORTER_OTLP_ENDPOINT");
    let app_insights = env_set("APPLICATIONINSIGHTS_CONNECTION_STRING");
    if !otlp && !app_insights {
        tracing_subscriber::registry().with(fmt).try_init()?;
        return Ok(Guard { tracer: None, logger: None });
    }

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithHttpConfig as _;
    // The exporters' threads use a blocking client; it must be created off the async runtime.
    let client =
        std::thread::spawn(|| reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(10)).build())
            .join()
            .map_err(|_| anyhow::anyhow!("cannot build the telemetry HTTP client"))??;

    let mut tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_resource(resource());
    let mut logger = opentelemetry_sdk::logs::SdkLoggerProvider::builder().with_resource(resource());
    let mut otlp_metrics = None;
    if otlp {
        use opentelemetry_otlp::{Protocol, WithExportConfig as _};
        // http/protobuf unless OTEL_EXPORTER_OTLP_PROTOCOL says otherwise (the OTLP default; the
        // crate would pick JSON, which costs more to encode, because both are compiled in).
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Ok("http/json") => Protocol::HttpJson,
            _ => Protocol::HttpBinary,
        };
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_http_client(client.clone())
            .build()?;
        let logs = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_http_client(client.clone())
            .build()?;
        otlp_metrics = Some(
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_http_client(client.clone())
                .build()?,
        );
        tracer = tracer.with_batch_exporter(spans);
        logger = logger.with_batch_exporter(logs);
    }
    let mut ai_metrics = None;
    if app_insights {
        let exporter = app_insights_exporter(&client)?;
        if !env_set("OTEL_TRACES_SAMPLER") {
            // Application Insights bills per item: keep 10 % of traces unless told otherwise.
            use opentelemetry_sdk::trace::Sampler;
            tracer = tracer.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(AI_SAMPLE_RATE))));
        }
        tracer = tracer.with_batch_exporter(exporter.clone().with_sample_rate(sample_rate()));
        logger = logger.with_batch_exporter(exporter.clone());
        ai_metrics = Some(exporter);
    }
    let tracer = tracer.build();
    let logger = logger.build();
    let metrics = build_metrics(|mut b| {
        if let Some(e) = otlp_metrics {
            b = b.with_periodic_exporter(e);
        }
        if let Some(e) = ai_metrics {
            b = b.with_periodic_exporter(e);
        }
        b
    });
    if TELEMETRY.set(metrics).is_err() {
        tracing::warn!("metrics were set up before telemetry::init; they are not exported");
    }
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());

    // Per-span extras (code location, thread, busy/idle timing) cost CPU on every request and
    // answer no question a chaos run asks.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("chaos-lab"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let otel_logs = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&logger)
        .with_filter(EnvFilter::new(level));
    tracing_subscriber::registry().with(fmt).with(traces).with(otel_logs).try_init()?;
    Ok(Guard { tracer: Some(tracer), logger: Some(logger) })
}

/// Trace sampling given to Application Insights when `OTEL_TRACES_SAMPLER` is not set.
const AI_SAMPLE_RATE: f64 = 0.1;

/// The sample rate Application Insights is told about (it scales counts back up).
fn sample_rate() -> f64 {
    if !env_set("OTEL_TRACES_SAMPLER") {
        return AI_SAMPLE_RATE;
    }
    match std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default().as_str() {
        "traceidratio" | "parentbased_traceidratio" => {
            std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0)
        }
        "always_off" | "parentbased_always_off" => 0.0,
        _ => 1.0,
    }
}

type AiExporter = opentelemetry_application_insights::Exporter<reqwest::blocking::Client>;

/// The Application Insights exporter from `APPLICATIONINSIGHTS_CONNECTION_STRING`.
/// `APPLICATIONINSIGHTS_ENDPOINT` overrides the ingestion endpoint (a local proxy or a test's
/// fake; connection strings only allow https).
fn app_insights_exporter(client: &reqwest::blocking::Client) -> anyhow::Result<AiExporter> {
    let cs = std::env::var("APPLICATIONINSIGHTS_CONNECTION_STRING")?;
    let exporter = AiExporter::new_from_connection_string(&cs, client.clone())
        .map_err(|e| anyhow::anyhow!("APPLICATIONINSIGHTS_CONNECTION_STRING is not valid: {e}"))?;
    match std::env::var("APPLICATIONINSIGHTS_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => {
            #[allow(deprecated)] // the only way to reach a plain-http endpoint
            let e = exporter
                .with_endpoint(endpoint.trim())
                .map_err(|e| anyhow::anyhow!("APPLICATIONINSIGHTS_ENDPOINT is not valid: {e}"))?;
            Ok(e)
        }
        _ => Ok(exporter),
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}
