//! Built-in faults seen from outside: load start/409/countdown/expiry, hang scopes observed from a
//! second client, and shutdown during a permanent hang.

use chaos_lab_testkit as common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_starts_conflicts_counts_down_and_expires() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;

    let (status, body) = post(&svc.url("/chaos/load"), r#"{"level": "extreme"}"#).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "Invalid load level. Must be 'low', 'medium', or 'high'");
    let (status, body) = post(&svc.url("/chaos/load"), r#"{"level": "low", "duration_seconds": 0}"#).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "Duration must be between 1 and 3600 seconds");
    let (status, _) = post(&svc.url("/chaos/load"), r#"{"duration_seconds": 3601}"#).await;
    assert_eq!(status, 400);

    let (status, body) = post(&svc.url("/chaos/load"), r#"{"level": "medium", "duration_seconds": 3}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"status": "load_started", "level": "medium", "duration_seconds": 3}));

    // While loaded: a second load is refused first (before its bad level is even looked at).
    let (status, body) = post(&svc.url("/chaos/load"), r#"{"level": "bogus"}"#).await;
    assert_eq!(status, 409);
    assert_envelope(&body, "Conflict", "Load simulation already active");

    // The service keeps answering while loaded, and the status counts down.
    let started = Instant::now();
    let (status, _) = get(&svc.url("/health")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "health took {:?} under load", started.elapsed());
    let load = svc.status().await["load"].clone();
    assert_eq!(load["active"], true);
    assert_eq!(load["level"], "medium");
    let first = load["remaining_seconds"].as_u64().unwrap();
    assert!((1..=3).contains(&first), "{load}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            svc.status().await["load"]["remaining_seconds"].as_u64().is_some_and(|s| s < first)
        })
        .await,
        "remaining_seconds did not drop below {first}"
    );
    let second = svc.status().await["load"]["remaining_seconds"].as_u64().unwrap();
    assert!(second < first, "no countdown: {first} then {second}");

    assert!(
        eventually(Duration::from_secs(6), || async { svc.status().await["load"]["active"] == false }).await,
        "load did not expire"
    );
    // Idle, the level is "none" as in the original lab (not null).
    assert_eq!(svc.status().await["load"]["level"], "none");
    let (status, _) = post(&svc.url("/chaos/load"), r#"{"level": "low", "duration_seconds": 1}"#).await;
    assert_eq!(status, 200, "a new load can start once the last one ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_hang_stalls_everyone_while_the_listener_still_accepts() {
    let svc = TestService::start(free_port(), &["--redis-enabled", "false"]).await;
    let started = Instant::now();
    let hang = tokio::spawn(post_owned(svc.url("/chaos/hang"), r#"{"duration_seconds": 2, "scope": "app"}"#));
    // /chaos/* answers during an app hang (src/http/mod.rs, hang_gate).
    assert!(
        eventually(Duration::from_secs(10), || async {
            let s = svc.status().await;
            s["hang"]["active"] == true && s["hang"]["scope"] == "app"
        })
        .await,
        "the app hang did not start"
    );

    // A second client: TCP connects at once, but the answer waits for the hang to end.
    let addr = svc.url.trim_start_matches("http://").to_string();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_ok(), "listener must keep accepting");
    let (status, _) = get(&svc.url("/healthz")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(1900), "request was not stalled: {:?}", started.elapsed());
    let (status, body) = hang.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "hang_completed");
    assert_eq!(body["interrupted"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_hang_stalls_only_the_caller() {
    let svc = TestService::start(free_port(), &["--redis-enabled", "false"]).await;
    let hang = tokio::spawn(post_owned(svc.url("/chaos/hang"), r#"{"duration_seconds": 2, "scope": "request"}"#));
    assert!(
        eventually(Duration::from_secs(10), || async { svc.status().await["hang"]["active"] == true }).await,
        "the request hang did not start"
    );

    let started = Instant::now();
    let (status, body) = get(&svc.url("/chaos/status")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(500), "other requests must not stall");
    assert_eq!(body["hang"]["active"], true);
    assert_eq!(body["hang"]["scope"], "request");

    let (status, body) = post(&svc.url("/chaos/hang"), r#"{"duration_seconds": 1}"#).await;
    assert_eq!(status, 409);
    assert_envelope(&body, "Conflict", "Hang already active");
    let (status, body) = hang.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "hang_completed");

    let (status, body) = post(&svc.url("/chaos/hang"), r#"{"duration_seconds": -1}"#).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "Duration must be between 0 and");
    let (status, body) = post(&svc.url("/chaos/hang"), r#"{"scope": "process"}"#).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "'app' or 'request'");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_ends_a_permanent_hang_and_lets_stalled_requests_finish() {
    let svc = TestService::start(free_port(), &["--redis-enabled", "false"]).await;
    let hang = tokio::spawn(post_owned(svc.url("/chaos/hang"), "{}"));
    assert!(
        eventually(Duration::from_secs(10), || async { svc.status().await["hang"]["active"] == true }).await,
        "the permanent hang did not start"
    );
    let stalled = tokio::spawn(get_owned(svc.url("/healthz")));
    // The request must be accepted and held by the hang before shutdown: a connection still in
    // the listen backlog when shutdown starts would be refused, not drained.
    assert!(
        eventually(Duration::from_secs(10), || async { svc.status().await["hang"]["held_requests"] == 1 }).await,
        "the GET /healthz is not held by the hang"
    );
    assert!(!stalled.is_finished());

    let started = Instant::now();
    svc.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
    assert_eq!(stalled.await.unwrap().0, 200, "the stalled request must finish");
    let (status, body) = hang.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["interrupted"], true);
}

async fn post_owned(url: String, body: &'static str) -> (u16, serde_json::Value) {
    post(&url, body).await
}

async fn get_owned(url: String) -> (u16, serde_json::Value) {
    get(&url).await
}
