//! Redis resilience as a user sees it: outages, recovery without a restart, retries, timeouts,
//! authentication, and `redis-reset` checked against the Redis server's own `CLIENT LIST`.

use chaos_lab_testkit as common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_mid_run_then_recovery_without_restarting_the_service() {
    let mut redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    assert_eq!(get(&svc.url("/")).await.0, 200);

    redis.stop();
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 503, "{body}");
    assert_envelope(&body, "Service Unavailable", "Redis connection failed: ");
    let (status, body) = get(&svc.url("/health")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["redis"]["connected"], false);
    assert_eq!(svc.status().await["redis"]["connected"], false);

    redis.restart();
    let recovered = eventually(Duration::from_secs(10), || async {
        get(&svc.url("/")).await.0 == 200 && get(&svc.url("/health")).await.0 == 200
    })
    .await;
    assert!(recovered, "service did not recover after Redis came back");
    assert_eq!(svc.status().await["redis"]["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_then_appears() {
    let mut redis = RedisServer::not_started();
    let svc = TestService::start(redis.port, &[]).await;
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "Service Unavailable", "Redis connection failed");
    assert_eq!(get(&svc.url("/health")).await.0, 503);

    redis.restart();
    assert!(eventually(Duration::from_secs(10), || async { get(&svc.url("/")).await.0 == 200 }).await);
    assert_eq!(get(&svc.url("/health")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_backoff_rides_out_a_short_outage() {
    let mut redis = RedisServer::start();
    // One retry, 1.5 s later: Redis is back before then, so the request succeeds.
    let svc = TestService::start(
        redis.port,
        &["--redis-max-retries", "1", "--redis-backoff-base", "1.5", "--redis-backoff-cap", "1.5"],
    )
    .await;
    redis.stop();
    let url = svc.url("/");
    let started = Instant::now();
    let request = tokio::spawn(async move { get(&url).await });
    // Time must pass: the first attempt's failure shows nowhere (redis.connected moves after the last retry).
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "the retry did not happen: {body}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "answered before the backoff: {:?}", started.elapsed());

    // Without retries the same outage is a fast 503.
    let svc = TestService::start(redis.port, &["--redis-max-retries", "0"]).await;
    redis.stop();
    let started = Instant::now();
    assert_eq!(get(&svc.url("/")).await.0, 503);
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_is_an_operation_timeout() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--redis-socket-timeout", "0.3", "--redis-max-retries", "0"]).await;
    assert_eq!(get(&svc.url("/")).await.0, 200);
    // CLIENT PAUSE makes the server hold every client's commands.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).query(&mut redis.client()).unwrap();
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 503, "{body}");
    assert_envelope(&body, "Service Unavailable", "Redis operation timeout: ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_auth_and_wrong_password() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    // Generous timeouts: on a loaded machine a slow answer must not pass for an auth failure.
    let slow = ["--redis-socket-timeout", "10", "--redis-socket-connect-timeout", "10"];
    let with = |extra: &'static [&'static str]| [&slow[..], extra].concat();
    let good = TestService::start(redis.port, &with(&["--redis-password", "s3cret"])).await;
    assert_eq!(get(&good.url("/")).await.0, 200);
    assert_eq!(get(&good.url("/health")).await.0, 200);

    let bad = TestService::start(redis.port, &with(&["--redis-password", "wrong"])).await;
    let (status, body) = get(&bad.url("/")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "Service Unavailable", "Redis authentication failed: ");

    let none = TestService::start(redis.port, &with(&[])).await;
    let (status, body) = get(&none.url("/")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "Service Unavailable", "Redis authentication failed: ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_closes_every_connection_and_the_next_request_reconnects() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--redis-max-connections", "8"]).await;
    // Concurrent requests open several pooled connections.
    let reqs: Vec<_> = (0..16).map(|_| tokio::spawn(get_owned(svc.url("/")))).collect();
    for r in reqs {
        assert_eq!(r.await.unwrap().0, 200);
    }
    let open = svc.status().await["redis"]["connection_count"].as_u64().unwrap() as usize;
    assert!(open >= 2, "expected several pooled connections, got {open}");
    assert_eq!(redis.client_count(), open, "status connection_count disagrees with CLIENT LIST");

    let (status, body) = post(&svc.url("/chaos/redis-reset"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "redis_connections_reset");
    assert_eq!(body["connections_closed"].as_u64().unwrap() as usize, open);
    assert_eq!(redis.wait_client_count(0, Duration::from_secs(2)), 0, "Redis still sees our connections");
    let status = svc.status().await;
    assert_eq!(status["redis"]["connection_count"], 0);
    assert!(status["redis"]["last_reset"].as_str().is_some());

    assert_eq!(get(&svc.url("/")).await.0, 200);
    assert_eq!(redis.client_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_reset_cuts_commands_in_flight_and_gentle_reset_waits_for_them() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--redis-socket-timeout", "5", "--redis-max-retries", "0"]).await;
    assert_eq!(get(&svc.url("/")).await.0, 200);

    // Hold the server for 2 s so a GET / is in flight, then force a reset: it must not wait.
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(2000).query(&mut redis.client()).unwrap();
    let in_flight = tokio::spawn(get_owned(svc.url("/")));
    // Time must pass: a command held by the paused Redis shows nowhere (CLIENT LIST waits too).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = post(&svc.url("/chaos/redis-reset"), r#"{"force": true}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_millis(1000), "forced reset waited {:?}", started.elapsed());
    assert_eq!(body["connections_closed"], 1);
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_envelope(&body, "Service Unavailable", "forced redis-reset");
    redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut redis.client()).unwrap();

    // A gentle reset lets the command in flight finish first.
    assert_eq!(get(&svc.url("/")).await.0, 200);
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1000).query(&mut redis.client()).unwrap();
    let in_flight = tokio::spawn(get_owned(svc.url("/")));
    // Time must pass: as above, nothing shows the GET's command in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = post(&svc.url("/chaos/redis-reset"), r#"{"force": false}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() >= Duration::from_millis(500), "gentle reset did not wait: {:?}", started.elapsed());
    assert_eq!(body["connections_closed"], 1);
    assert_eq!(in_flight.await.unwrap().0, 200);
    assert_eq!(redis.wait_client_count(0, Duration::from_secs(2)), 0);
}

async fn get_owned(url: String) -> (u16, serde_json::Value) {
    get(&url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_the_local_proxy_in_between() {
    let (redis, ca) = RedisServer::start_tls();
    let ca = ca.to_str().unwrap();
    let tls = [
        "--redis-ssl",
        "true",
        "--redis-host",
        "localhost",
        "--redis-socket-timeout",
        "5",
        "--redis-socket-connect-timeout",
        "5",
    ];
    let svc = TestService::start(redis.port, &[&tls[..], &["--redis-ca-cert", ca]].concat()).await;
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&svc.url("/health")).await.0, 200);
    // The TLS connection runs through the local fault proxy (TLS still verifies "localhost").
    assert_eq!(svc.status().await["network"]["proxy"]["connections"], 1);

    // Without the private CA the certificate is not trusted.
    let untrusted = TestService::start(redis.port, &[&tls[..], &["--redis-max-retries", "0"]].concat()).await;
    let (status, body) = get(&untrusted.url("/")).await;
    assert_eq!(status, 503, "{body}");
    assert_envelope(&body, "Service Unavailable", "Redis connection failed");
}
