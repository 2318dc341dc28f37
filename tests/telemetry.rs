//! OpenTelemetry export seen from a fake OTLP/HTTP collector on loopback: the service binary runs
//! with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at it (JSON protocol, so the test can read it).

use chaos_lab_testkit as common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use common::*;
use serde_json::{Value, json};

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// Starts the binary against `redis_port` with quick export intervals and `env`; returns it
/// (killed when the test ends, whether it passes or panics) with its URL once it answers.
async fn start_exporting(redis_port: u16, env: &[(&str, &str)]) -> (ServiceProcess, String) {
    let port = redis_port.to_string();
    let mut all = vec![
        ("REDIS_PORT", port.as_str()),
        // The exporters see what the service logs at its default level, not the harness's warn.
        ("LOG_LEVEL", "info"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
    ];
    all.extend_from_slice(env);
    let service = ServiceProcess::start(&temp_dir("otel-runs"), &all).await;
    let url = service.url.clone();
    (service, url)
}

/// A collector that keeps every OTLP/HTTP JSON body it receives, by signal (traces, metrics, logs).
async fn fake_collector() -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/{signal}",
            axum::routing::post(|State(r): State<Received>, Path(signal): Path<String>, body: Bytes| async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                r.lock().unwrap().push((signal, v));
                axum::Json(json!({}))
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Every span the collector received: (traceId, spanId, parentSpanId, name, attributes).
fn spans(received: &Received) -> Vec<(String, String, String, String, Value)> {
    let mut out = Vec::new();
    for (signal, body) in received.lock().unwrap().iter() {
        if signal != "traces" {
            continue;
        }
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                    out.push((
                        text("traceId"),
                        text("spanId"),
                        text("parentSpanId"),
                        text("name"),
                        s["attributes"].clone(),
                    ));
                }
            }
        }
    }
    out
}

fn metric_names(received: &Received) -> Vec<String> {
    let mut names = Vec::new();
    for (signal, body) in received.lock().unwrap().iter() {
        if signal != "metrics" {
            continue;
        }
        for rm in body["resourceMetrics"].as_array().into_iter().flatten() {
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    names.push(m["name"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_runs_are_exported_as_traces_metrics_and_logs() {
    let redis = RedisServer::start();
    let (collector, received) = fake_collector().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_SERVICE_NAME", "chaos-lab-test"),
    ];
    let (_service, url) = start_exporting(redis.port, &env).await;

    // A request continuing the caller's trace, a health probe (not traced), and a run.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http()
        .get(format!("{url}/"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&format!("{url}/health")).await.0, 200);
    let r = http()
        .post(format!("{url}/chaos/run?wait=true"))
        // A fault, so the run has an impact to export.
        .body("log(\"hello\");\nhealth();\nnetwork_block();\nsleep(0.3);\nnetwork_clear();\nsleep(0.1);")
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["status"], "succeeded", "{report}");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = spans(&received);
        let request = s.iter().find(|x| x.3 == "GET /");
        let run = s.iter().find(|x| x.3.starts_with("chaos run"));
        let steps = run.map(|run| s.iter().filter(|x| x.0 == run.0 && x.2 == run.1).count()).unwrap_or(0);
        let metrics = metric_names(&received);
        let logs = received.lock().unwrap().iter().any(|(k, v)| k == "logs" && v.to_string().contains("hello"));
        let wanted =
            ["redis_connection_status", "redis_connection_count", "chaos_operation_duration_seconds", "chaos_runs"];
        if let Some(request) = request
            && steps >= 2
            && wanted.iter().all(|w| metrics.iter().any(|m| m == w))
            && logs
        {
            assert_eq!(request.0, trace_id, "the request span must continue the caller's trace");
            assert_eq!(request.2, "00f067aa0ba902b7");
            assert!(!s.iter().any(|x| x.3 == "GET /health"), "/health must not be traced");
            let run = run.unwrap();
            assert_ne!(run.0, trace_id, "a run is a trace of its own");
            let attrs = run.4.to_string();
            assert!(attrs.contains("run_id") && attrs.contains("succeeded"), "run attributes: {attrs}");
            assert!(
                ["impact.requests", "impact.failures", "impact.time_to_recover_s"].iter().all(|k| attrs.contains(k)),
                "run attributes: {attrs}"
            );
            let step_names: Vec<&str> =
                s.iter().filter(|x| x.0 == run.0 && x.2 == run.1).map(|x| x.3.as_str()).collect();
            assert!(step_names.contains(&"health") && step_names.contains(&"sleep"), "{step_names:?}");
            let everything = received.lock().unwrap().iter().map(|(_, v)| v.to_string()).collect::<String>();
            assert!(everything.contains("chaos-lab-test"), "OTEL_SERVICE_NAME is not the resource's service.name");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "collector did not receive everything: {} spans, metrics {:?}, logs {logs}",
            s.len(),
            metrics
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_insights_receives_requests_logs_and_metrics() {
    use std::io::Read as _;
    let redis = RedisServer::start();
    // A fake ingestion endpoint: /v2/track takes gzip-compressed JSON envelopes.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v2/track",
            axum::routing::post(|State(r): State<Arc<Mutex<Vec<Value>>>>, body: Bytes| async move {
                let mut text = String::new();
                flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
                let items: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
                let n = items.len();
                r.lock().unwrap().extend(items);
                axum::Json(json!({"itemsReceived": n, "itemsAccepted": n, "errors": []}))
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let env = [
        (
            "APPLICATIONINSIGHTS_CONNECTION_STRING",
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://example.invalid/",
        ),
        ("APPLICATIONINSIGHTS_ENDPOINT", endpoint.as_str()),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ];
    let (_service, url) = start_exporting(redis.port, &env).await;
    assert_eq!(get(&format!("{url}/")).await.0, 200);
    assert_eq!(get(&format!("{url}/health")).await.0, 200);
    let r = http().post(format!("{url}/chaos/run?wait=true")).body("log(\"hello insights\");").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let kinds = || {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["data"]["baseType"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let ok = eventually(Duration::from_secs(15), || async {
        let k = kinds();
        let logged = received.lock().unwrap().iter().any(|e| e.to_string().contains("hello insights"));
        k.iter().any(|x| x == "RequestData") && k.iter().any(|x| x == "MetricData") && logged
    })
    .await;
    assert!(ok, "Application Insights fake got: {:?}", kinds());
}
