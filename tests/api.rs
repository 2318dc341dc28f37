//! The HTTP API as a user sees it: endpoints, bodies, the error envelope, request ids, docs.

use chaos_lab_testkit as common;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_creates_the_sample_then_reads_it_back() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;

    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Hello from Container Apps Chaos Lab");
    let created = body["redis_data"].as_str().unwrap().to_string();
    assert!(created.starts_with("Data created at "), "{created}");
    let stored: String = redis::cmd("GET").arg("chaos_lab:data:sample").query(&mut redis.client()).unwrap();
    assert_eq!(stored, created);

    // An existing value is returned as is, and an empty one is recreated.
    let _: () = redis::cmd("SET").arg("chaos_lab:data:sample").arg("hello").query(&mut redis.client()).unwrap();
    assert_eq!(get(&svc.url("/")).await.1["redis_data"], "hello");
    let _: () = redis::cmd("SET").arg("chaos_lab:data:sample").arg("").query(&mut redis.client()).unwrap();
    let again = get(&svc.url("/")).await.1;
    assert!(again["redis_data"].as_str().unwrap().starts_with("Data created at "), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counter_follows_the_sample_rate() {
    let redis = RedisServer::start();
    let always = TestService::start(redis.port, &["--request-counter-sample-rate", "1"]).await;
    for _ in 0..5 {
        assert_eq!(get(&always.url("/")).await.0, 200);
    }
    let count: i64 = redis::cmd("GET").arg("chaos_lab:counter:requests").query(&mut redis.client()).unwrap();
    assert_eq!(count, 5);

    let never = TestService::start(redis.port, &["--request-counter-sample-rate", "0"]).await;
    for _ in 0..5 {
        assert_eq!(get(&never.url("/")).await.0, 200);
    }
    let count: i64 = redis::cmd("GET").arg("chaos_lab:counter:requests").query(&mut redis.client()).unwrap();
    assert_eq!(count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_disabled_answers_without_redis() {
    let svc = TestService::start(free_port(), &["--redis-enabled", "false"]).await;
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 200);
    assert_eq!(body["redis_data"], "Redis unavailable");
    let (status, body) = get(&svc.url("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["redis"]["connected"], false);
    let (status, body) = post(&svc.url("/chaos/redis-reset"), "").await;
    assert_eq!(status, 503);
    assert_envelope(&body, "Service Unavailable", "Redis client not initialized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_latency_and_liveness_never_touches_redis() {
    let mut redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let (status, body) = get(&svc.url("/health")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["redis"]["connected"], true);
    // An integer, as the original lab sent it (typed clients parse it as int); micros beside it.
    assert!(body["redis"]["latency_ms"].is_u64(), "latency_ms is not an integer: {body}");
    let us = body["redis"]["latency_us"].as_u64().expect("latency_us");
    assert_eq!(body["redis"]["latency_ms"].as_u64().unwrap(), (us as f64 / 1000.0).round() as u64);

    redis.stop();
    let (status, body) = get(&svc.url("/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_unhealthy_result_is_still_503() {
    let mut redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--health-cache-ttl-seconds", "30"]).await;
    redis.stop();
    let (status, body) = get(&svc.url("/health")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    // Redis is back, but the cached result stands for the TTL, and it is still a 503.
    redis.restart();
    let (status, body) = get(&svc.url("/health")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["redis"]["connected"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_the_envelope_and_echo_the_request_id() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let client = http();

    let r = client.get(svc.url("/nope")).header("X-Request-ID", "game-day-42").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "game-day-42");
    let body: Value = r.json().await.unwrap();
    assert_envelope(&body, "Not Found", "GET /nope");
    assert_eq!(body["request_id"], "game-day-42");

    let r = client.post(svc.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_envelope(&body, "Method Not Allowed", "use GET");
    assert_eq!(body["request_id"], generated.as_str());

    let (status, body) = post(&svc.url("/chaos/load"), "{not json").await;
    assert_eq!(status, 422);
    assert_envelope(&body, "Unprocessable Entity", "Invalid JSON body");

    let (status, body) = post(&svc.url("/chaos/load"), r#"{"duration_seconds": "ten"}"#).await;
    assert_eq!(status, 422);
    assert_envelope(&body, "Unprocessable Entity", "duration_seconds");

    let (status, body) = post(&svc.url("/chaos/hang"), r#"{"duration": 5}"#).await;
    assert_eq!(status, 422);
    assert_envelope(&body, "Unprocessable Entity", "unknown field `duration`");

    // Successful responses carry the id too.
    let r = client.get(svc.url("/healthz")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_has_every_section() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    get(&svc.url("/")).await;
    let (status, body) = get(&svc.url("/chaos/status")).await;
    assert_eq!(status, 200);
    assert_eq!(body["load"]["active"], false);
    assert_eq!(body["hang"]["active"], false);
    assert_eq!(body["redis"]["connected"], true);
    assert_eq!(body["redis"]["connection_count"], 1);
    assert!(body["redis"]["last_reset"].is_null());
    assert_eq!(body["network"]["blocked"], false);
    assert!(body["network"]["faults"].as_array().unwrap().is_empty());
    assert_eq!(body["runs"]["active"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route_and_docs_render_it() {
    let svc = TestService::start(free_port(), &["--redis-enabled", "false"]).await;
    let (status, spec) = get(&svc.url("/openapi.json")).await;
    assert_eq!(status, 200);
    let routes = [
        ("get", "/"),
        ("get", "/health"),
        ("get", "/healthz"),
        ("post", "/chaos/load"),
        ("post", "/chaos/hang"),
        ("post", "/chaos/redis-reset"),
        ("get", "/chaos/status"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("get", "/metrics"),
        ("post", "/chaos/stop"),
        ("post", "/chaos/resume"),
        ("get", "/chaos/faults"),
        ("post", "/chaos/run"),
        ("get", "/chaos/runs"),
        ("get", "/chaos/scenarios"),
        ("post", "/chaos/check"),
        ("get", "/console"),
    ];
    // Routes with a path parameter: checked against the spec only, not requested.
    let templated = [
        ("get", "/chaos/runs/{id}"),
        ("get", "/chaos/runs/{id}/events"),
        ("get", "/chaos/runs/{id}/report"),
        ("get", "/chaos/runs/{id}/timeline.svg"),
        ("post", "/chaos/runs/{id}/cancel"),
        ("get", "/chaos/scenarios/{name}"),
        ("delete", "/chaos/faults/{id}"),
    ];
    for (method, path) in templated {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from openapi.json");
    }
    for (method, path) in routes {
        assert!(spec["paths"][path][method].is_object(), "{method} {path} missing from openapi.json");
        // ...and the route really exists (POSTs get a broken body: a 422 proves the route without
        // starting a fault).
        let r = http().request(method.to_uppercase().parse().unwrap(), svc.url(path)).body("{").send().await.unwrap();
        assert_ne!(r.status(), 404, "{method} {path}");
        assert_ne!(r.status(), 405, "{method} {path}");
    }
    let documented: usize = spec["paths"].as_object().unwrap().values().map(|m| m.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len() + templated.len(), "openapi.json documents routes the service does not have");

    let r = http().get(svc.url("/docs")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("/openapi.json"));
    assert!(!page.contains("https://"), "the docs page must not load anything from the internet");
}
