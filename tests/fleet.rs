//! The fleet, from the user's side: three service processes (r1, r2, r3) sharing one chaos store
//! on the Azurite emulator. So far: every replica sees the others, and the kill switch's latch
//! is fleet-wide (a stop on one replica halts and clears every replica; a resume on any
//! releases them all). A store that is down at startup does not keep the app from serving.

mod common;

use std::time::{Duration, Instant};

use common::azurite::Azurite;
use common::*;
use serde_json::{Value, json};

async fn status(r: &ServiceProcess) -> Value {
    get(&r.url("/chaos/status")).await.1
}

async fn replicas(r: &ServiceProcess) -> Vec<String> {
    let s = status(r).await;
    s["fleet"]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str().map(str::to_string))
        .collect()
}

async fn fleet_of_three(azurite: &Azurite, redis: &RedisServer, container: &str) -> Vec<ServiceProcess> {
    let url = azurite.container_url(container);
    let mut all = Vec::new();
    for name in ["r1", "r2", "r3"] {
        let env = [
            ("REPLICA_NAME", name.to_string()),
            ("CHAOS_STORE_URL", url.clone()),
            ("REDIS_PORT", redis.port.to_string()),
        ];
        all.push(ServiceProcess::start(&temp_dir(&format!("fleet-{name}")), &env).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_sees_the_others_and_the_kill_switch_halts_the_whole_fleet() {
    let azurite = Azurite::start();
    let redis = RedisServer::start();
    let fleet = fleet_of_three(&azurite, &redis, "fleet-latch").await;
    let (r1, r2, r3) = (&fleet[0], &fleet[1], &fleet[2]);

    let all_seen = eventually(Duration::from_secs(10), || async { replicas(r1).await == ["r1", "r2", "r3"] }).await;
    assert!(all_seen, "r1 does not list the three replicas: {}", status(r1).await["fleet"]);
    let s = status(r1).await;
    assert_eq!(s["fleet"]["replica"], "r1", "{s}");
    assert!(s["fleet"]["store"].as_str().unwrap().contains("/devstoreaccount1/fleet-latch"), "{s}");
    assert!(!s["fleet"]["store"].as_str().unwrap().contains("sig="), "the SAS is a secret: {s}");

    // A load on r3, then the kill switch on r2.
    let (code, body) = post(&r3.url("/chaos/load"), r#"{"level": "low", "duration_seconds": 600}"#).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(&r2.url("/chaos/stop"), "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["fleet"]["published"], true, "{body}");
    let stopped = Instant::now();
    let cleared = eventually(Duration::from_secs(5), || async {
        let s = status(r3).await;
        s["halted"] == true && s["load"]["active"] == false && s["faults"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(cleared, "r3 is not halted and clear: {}", status(r3).await);
    eprintln!("kill switch on r2 → r3 halted and clear after {:.2} s", stopped.elapsed().as_secs_f64());
    assert!(stopped.elapsed() < Duration::from_secs(3), "the fleet's latch took {:?}", stopped.elapsed());
    assert_eq!(status(r1).await["halted"], true);
    let (code, body) = post(&r3.url("/chaos/run"), r#"{"script": "sleep(0.1);"}"#).await;
    assert_eq!(code, 423, "{body}");
    assert_envelope(&body, "Locked", "POST /chaos/resume");

    // Resume on r1 releases r3 too.
    let (code, body) = post(&r1.url("/chaos/resume"), "").await;
    assert_eq!(code, 200, "{body}");
    let released = eventually(Duration::from_secs(5), || async { status(r3).await["halted"] == false }).await;
    assert!(released, "r3 stayed halted: {}", status(r3).await);
    let r = http().post(r3.url("/chaos/run?wait=true")).json(&json!({"script": "sleep(0.1);"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_startup_leaves_the_app_serving_and_says_so() {
    let mut azurite = Azurite::start();
    let url = azurite.container_url("fleet-down");
    azurite.stop();
    let redis = RedisServer::start();
    let env =
        [("REPLICA_NAME", "lonely".to_string()), ("CHAOS_STORE_URL", url), ("REDIS_PORT", redis.port.to_string())];
    let r = ServiceProcess::start(&temp_dir("fleet-down"), &env).await;
    assert_eq!(get(&r.url("/")).await.0, 200, "the app serves without the store");
    let said = eventually(Duration::from_secs(15), || async { status(&r).await["fleet"]["error"].is_string() }).await;
    let s = status(&r).await;
    assert!(said, "status does not say the store is down: {s}");
    assert!(!s["fleet"]["error"].as_str().unwrap().contains("sig="), "{s}");

    // It joins once the store is back.
    azurite.restart();
    let joined = eventually(Duration::from_secs(20), || async {
        let s = status(&r).await;
        s["fleet"]["error"].is_null() && s["fleet"]["replicas"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(joined, "did not join the fleet: {}", status(&r).await);
}
