//! `GET /metrics`: Prometheus text with the original lab's metric names, moving when faults are
//! applied. One test in its own binary: the metrics are process-wide.

use chaos_lab_testkit as common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Parses the Prometheus text format into `name{labels}` → value, checking every line's shape.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split_whitespace().next().unwrap_or_default();
            assert!(kind == "HELP" || kind == "TYPE", "bad comment line: {line}");
            if kind == "TYPE" {
                let t = rest.split_whitespace().nth(2).unwrap_or_default();
                assert!(["counter", "gauge", "histogram"].contains(&t), "bad type: {line}");
            }
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        assert!(name_ok && (!key.contains('{') || key.ends_with('}')), "bad sample name: {line}");
        samples.insert(key.to_string(), value);
    }
    samples
}

async fn scrape(svc: &TestService) -> HashMap<String, f64> {
    let r = http().get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    parse(&r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_the_original_names_and_move_with_faults() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--max-concurrent-runs", "2"]).await;
    assert_eq!(get(&svc.url("/health")).await.0, 200);
    assert_eq!(get(&svc.url("/")).await.0, 200);

    let before = scrape(&svc).await;
    for name in [
        "redis_connection_status",
        "redis_connection_count",
        "redis_connection_latency_ms_count",
        "chaos_operation_active{operation=\"load\"}",
    ] {
        assert!(before.contains_key(name), "{name} missing from /metrics: {before:?}");
    }
    assert_eq!(before["redis_connection_status"], 1.0);
    assert_eq!(before["redis_connection_count"], 1.0);

    // A reset, a load, and two runs (one fails): every counter and gauge follows.
    assert_eq!(post(&svc.url("/chaos/redis-reset"), "").await.0, 200);
    assert_eq!(post(&svc.url("/chaos/load"), r#"{"level": "low", "duration_seconds": 1}"#).await.0, 200);
    let during = scrape(&svc).await;
    assert_eq!(during["redis_reset_total"], before.get("redis_reset_total").copied().unwrap_or(0.0) + 1.0);
    assert_eq!(during["redis_connection_count"], 0.0);
    assert_eq!(during["chaos_operation_active{operation=\"load\"}"], 1.0);

    run_and_wait(&svc, json!({"script": "sleep(0.1);"})).await;
    run_and_wait(&svc, json!({"script": "expect(false, \"no\");"})).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            scrape(&svc).await.get("chaos_operation_active{operation=\"load\"}") == Some(&0.0)
        })
        .await,
        "load gauge did not fall back to 0"
    );
    let after = scrape(&svc).await;
    assert_eq!(after["chaos_runs_total{status=\"succeeded\"}"], 1.0);
    assert_eq!(after["chaos_runs_total{status=\"failed\"}"], 1.0);
    assert_eq!(after["chaos_operation_duration_seconds_count{operation=\"run\"}"], 2.0);
    assert_eq!(after["chaos_operation_duration_seconds_count{operation=\"load\"}"], 1.0);
    assert!(after["redis_connection_latency_ms_count"] >= 1.0);
}
