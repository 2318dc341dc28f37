//! The fleet, from the user's side: three service processes (r1, r2, r3) sharing one chaos store
//! on the Azurite emulator. So far: every replica sees the others, and the kill switch's latch
//! is fleet-wide (a stop on one replica halts and clears every replica; a resume on any
//! releases them all). A store that is down at startup does not keep the app from serving.

use chaos_lab_testkit as common;

use std::time::{Duration, Instant};

use common::azurite::Azurite;
use common::*;
use serde_json::{Value, json};

async fn replicas(r: &ServiceProcess) -> Vec<String> {
    let s = r.status().await;
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
    assert!(all_seen, "r1 does not list the three replicas: {}", r1.status().await["fleet"]);
    let s = r1.status().await;
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
        let s = r3.status().await;
        s["halted"] == true && s["load"]["active"] == false && s["faults"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(cleared, "r3 is not halted and clear: {}", r3.status().await);
    eprintln!("kill switch on r2 → r3 halted and clear after {:.2} s", stopped.elapsed().as_secs_f64());
    assert!(stopped.elapsed() < Duration::from_secs(3), "the fleet's latch took {:?}", stopped.elapsed());
    // r1 polls the store on its own schedule; it follows within the same bound.
    let r1_halted = eventually(Duration::from_secs(3), || async { r1.status().await["halted"] == true }).await;
    assert!(r1_halted, "r1 is not halted: {}", r1.status().await);
    let (code, body) = post(&r3.url("/chaos/run"), r#"{"script": "sleep(0.1);"}"#).await;
    assert_eq!(code, 423, "{body}");
    assert_envelope(&body, "Locked", "POST /chaos/resume");

    // Resume on r1 releases r3 too.
    let (code, body) = post(&r1.url("/chaos/resume"), "").await;
    assert_eq!(code, 200, "{body}");
    let released = eventually(Duration::from_secs(5), || async { r3.status().await["halted"] == false }).await;
    assert!(released, "r3 stayed halted: {}", r3.status().await);
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
    let said = eventually(Duration::from_secs(15), || async { r.status().await["fleet"]["error"].is_string() }).await;
    let s = r.status().await;
    assert!(said, "status does not say the store is down: {s}");
    assert!(!s["fleet"]["error"].as_str().unwrap().contains("sig="), "{s}");
    let (code, body) = post(&r.url("/chaos/run"), r#"{"script": "sleep(0.1);"}"#).await;
    assert_eq!(code, 503, "runs wait for the store: {body}");
    assert_envelope(&body, "Service Unavailable", "chaos store is unreachable");

    // It joins once the store is back.
    azurite.restart();
    let joined = eventually(Duration::from_secs(20), || async {
        let s = r.status().await;
        s["fleet"]["error"].is_null() && s["fleet"]["replicas"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(joined, "did not join the fleet: {}", r.status().await);
}

/// The fault ledger replica `name` last mirrored to the store at `container_url` (the container
/// URL with its SAS, as `CHAOS_STORE_URL` carries it); `Null` until there is one.
async fn mirrored_ledger(container_url: &str, name: &str) -> Value {
    let (base, sas) = container_url.split_once('?').expect("a container URL with a SAS");
    let blob = format!("{base}/fleet/ledgers/{name}.json?{sas}");
    match http().get(blob).header("x-ms-version", "2019-12-12").send().await {
        Ok(r) if r.status() == 200 => r.json().await.unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Whether `GET /healthz` on `r` answers within `within` (an app hang stalls it).
async fn answers(r: &ServiceProcess, within: Duration) -> bool {
    http().get(r.url("/healthz")).timeout(within).send().await.is_ok_and(|x| x.status() == 200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_reach_the_replicas_a_run_picks_and_leave_with_the_run() {
    let azurite = Azurite::start();
    let redis = RedisServer::start();
    let fleet = fleet_of_three(&azurite, &redis, "fleet-targets").await;
    let (r1, r3) = (&fleet[0], &fleet[2]);
    assert!(eventually(Duration::from_secs(10), || async { replicas(r1).await.len() == 3 }).await);

    // A load on every replica reaches r3 within 1.5 s, and ends with the run.
    let id = start_run_at(
        &r1.url,
        json!({"script": "load(#{level: \"low\", seconds: 60, replicas: \"all\"});\nsleep(600);"}),
    )
    .await;
    let started = Instant::now();
    let reached = eventually(Duration::from_secs(5), || async { r3.status().await["load"]["active"] == true }).await;
    assert!(reached, "the load did not reach r3: {}", r3.status().await);
    eprintln!("load(#{{replicas: \"all\"}}) on r1 → active on r3 after {:.2} s", started.elapsed().as_secs_f64());
    assert!(
        started.elapsed() < Duration::from_millis(1500) + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    // r1's status shows r3's share (from r3's heartbeat, read every 10 s).
    let counted = eventually(Duration::from_secs(15), || async {
        let s = r1.status().await;
        s["fleet"]["replicas"].as_array().into_iter().flatten().any(|r| r["name"] == "r3" && r["faults"] == 1)
    })
    .await;
    assert!(counted, "r1 does not show r3's fault: {}", r1.status().await["fleet"]);
    let (code, body) = post(&r1.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["undo"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["action"].as_str().unwrap().starts_with("withdraw low load on r1, r2, r3")),
        "{body:#}"
    );
    for r in &fleet {
        let off = eventually(Duration::from_secs(5), || async {
            let s = r.status().await;
            s["load"]["active"] == false && s["faults"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
        assert!(off, "the load stayed on: {}", r.status().await);
    }

    // An app hang on exactly two replicas.
    let id = start_run_at(&r1.url, json!({"script": "hang(#{seconds: 6, scope: \"app\", replicas: 2});\nsleep(600);"}))
        .await;
    // /chaos/status answers during an app hang: it shows which replicas took their share.
    let hung = eventually(Duration::from_secs(10), || async {
        let mut n = 0;
        for r in &fleet {
            if r.status().await["hang"]["active"] == true {
                n += 1;
            }
        }
        n >= 2
    })
    .await;
    assert!(hung, "the app hang did not reach two replicas");
    let mut stalled = 0;
    for r in &fleet {
        if !answers(r, Duration::from_millis(800)).await {
            stalled += 1;
        }
    }
    assert_eq!(stalled, 2, "replicas: 2 stalls exactly two replicas");
    let (code, _) = post(&r1.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    // r1 may be one of the hung replicas: its cancel then waits for the hang to end.
    assert!(code == 200 || code == 0, "{code}");
    for r in &fleet {
        assert!(
            eventually(Duration::from_secs(10), || async { answers(r, Duration::from_secs(1)).await }).await,
            "a replica stayed hung"
        );
    }

    // Bad selectors say what is wrong.
    let r = http()
        .post(r1.url("/chaos/run?wait=true"))
        .json(&json!({"script": "load(#{replicas: 5});"}))
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap();
    assert!(
        report["error"]["message"].as_str().unwrap().contains("asked for 5 replicas, but 3 are live"),
        "{report:#}"
    );
    let (code, body) = post(&r1.url("/chaos/load"), r#"{"replicas": "lots"}"#).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("replicas must be"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replica_answers_for_a_run_and_streams_its_events() {
    let azurite = Azurite::start();
    let redis = RedisServer::start();
    let fleet = fleet_of_three(&azurite, &redis, "fleet-runs").await;
    let (r1, r3) = (&fleet[0], &fleet[2]);
    let script = "log(\"on r1\");\nsleep(2);\nrecord(\"answer\", 42);\nsleep(1);";
    let id = start_run_at(&r1.url, json!({"script": script})).await;

    // While it runs, r3 answers for it and streams it.
    let seen = eventually(Duration::from_secs(5), || async {
        let (code, r) = get(&r3.url(&format!("/chaos/runs/{id}"))).await;
        code == 200 && r["status"] == "running" && r["replica"] == "r1"
    })
    .await;
    assert!(seen, "r3 does not answer for r1's run: {:?}", get(&r3.url(&format!("/chaos/runs/{id}"))).await);
    let body = http()
        .get(r3.url(&format!("/chaos/runs/{id}/events")))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for event in
        ["event: run_started", "event: log", "event: step_finished", "event: measurement", "event: run_finished"]
    {
        assert!(body.contains(event), "r3's stream lacks {event}:\n{body}");
    }
    let (_, report) = get(&r3.url(&format!("/chaos/runs/{id}"))).await;
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["measurements"]["answer"], 42, "{report:#}");
    let (_, list) = get(&r3.url("/chaos/runs")).await;
    assert!(list["runs"].as_array().unwrap().iter().any(|r| r["run_id"] == id.as_str()), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_has_its_faults_undone_by_the_others() {
    let azurite = Azurite::start();
    let redis = RedisServer::start();
    let mut fleet = fleet_of_three(&azurite, &redis, "fleet-takeover").await;
    // "all" is resolved against what r1 sees.
    assert!(eventually(Duration::from_secs(10), || async { replicas(&fleet[0]).await.len() == 3 }).await);
    let id = start_run_at(
        &fleet[0].url,
        json!({"script": "load(#{level: \"low\", seconds: 600, replicas: \"all\"});\nsleep(600);"}),
    )
    .await;
    assert!(eventually(Duration::from_secs(5), || async { fleet[2].status().await["load"]["active"] == true }).await);
    fleet[0].kill9();
    let killed = Instant::now();
    let (r2, r3) = (&fleet[1], &fleet[2]);
    let undone = eventually(Duration::from_secs(30), || async {
        r2.status().await["load"]["active"] == false && r3.status().await["load"]["active"] == false
    })
    .await;
    assert!(undone, "r1's load stayed on: {} / {}", r2.status().await, r3.status().await);
    eprintln!("kill -9 of r1 → its fleet load undone on r2 and r3 after {:.1} s", killed.elapsed().as_secs_f64());
    let interrupted = eventually(Duration::from_secs(10), || async {
        get(&r3.url(&format!("/chaos/runs/{id}"))).await.1["status"] == "interrupted"
    })
    .await;
    let (_, report) = get(&r3.url(&format!("/chaos/runs/{id}"))).await;
    assert!(interrupted, "{report:#}");
    assert!(report["reason"].as_str().unwrap().contains("r1 stopped answering"), "{report:#}");
    assert_eq!(replicas(r3).await, ["r2", "r3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_going_down_mid_run_leaves_nothing_applied() {
    let mut azurite = Azurite::start();
    let redis = RedisServer::start();
    let fleet = fleet_of_three(&azurite, &redis, "fleet-outage").await;
    assert!(eventually(Duration::from_secs(10), || async { replicas(&fleet[0]).await.len() == 3 }).await);
    let r1 = &fleet[0];
    let id = start_run_at(
        &r1.url,
        json!({"script": "load(#{level: \"low\", seconds: 600, replicas: \"all\"});\nsleep(600);"}),
    )
    .await;
    assert!(eventually(Duration::from_secs(5), || async { fleet[2].status().await["load"]["active"] == true }).await);
    azurite.stop();
    let (code, report) = post(&r1.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    assert_eq!(code, 200, "{report}");
    for r in &fleet {
        let off = eventually(Duration::from_secs(30), || async { r.status().await["load"]["active"] == false }).await;
        assert!(off, "a load stayed on with the store down: {}", r.status().await);
        assert!(r.status().await["fleet"]["error"].is_string(), "{}", r.status().await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_nsg_rule_is_removed_by_another_replica() {
    use common::fake_azure::FakeAzure;
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-fleet", "client-fleet");
    let nsg = FakeAzure::nsg_path(sub, common::fake_azure::RG, common::fake_azure::NSG);
    let azurite = Azurite::start();
    let url = azurite.container_url("fleet-nsg");
    let mut fleet = Vec::new();
    for name in ["r1", "r2"] {
        let mut env = fake.service_env(sub, client);
        env.extend([("REPLICA_NAME".to_string(), name.to_string()), ("CHAOS_STORE_URL".to_string(), url.clone())]);
        fleet.push(ServiceProcess::start(&temp_dir(&format!("fleet-nsg-{name}")), &env).await);
    }
    assert!(eventually(Duration::from_secs(10), || async { replicas(&fleet[1]).await.len() == 2 }).await);
    start_run_at(&fleet[0].url, json!({"script": "network_block();\nsleep(600);"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async { !fake.rule_names(&nsg).is_empty() }).await,
        "no rule was written"
    );
    // Its ledger reaches the store with the next heartbeat.
    let mirrored = eventually(Duration::from_secs(10), || async {
        let entries = mirrored_ledger(&url, "r1").await["entries"].as_array().cloned().unwrap_or_default();
        entries.iter().any(|e| e["kind"] == "network_block" && e["state"] == "active")
    })
    .await;
    assert!(mirrored, "r1's ledger with its block did not reach the store: {}", mirrored_ledger(&url, "r1").await);
    fleet[0].kill9();
    let killed = Instant::now();
    let gone = eventually(Duration::from_secs(30), || async { fake.rule_names(&nsg).is_empty() }).await;
    assert!(gone, "the dead replica's rule is still there: {:?}", fake.rule_names(&nsg));
    eprintln!(
        "kill -9 of r1 → its NSG rule deleted by r2 after {:.1} s (its expiry was an hour away)",
        killed.elapsed().as_secs_f64()
    );
}
