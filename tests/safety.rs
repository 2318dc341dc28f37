//! The safety kernel from the user's side (issue 10): one test per row of the issue's table of
//! ways a fault used to outlive its run, each ending with the world checked from outside (see
//! `common::World`): nothing blocked or slowed between the service and Redis, no load, no hang,
//! no fault-ledger entry, no loadgen process, no `chaos-` rule in the fake NSG, revision traffic
//! back where it was.
//!
//! Row 8 (an empty `CHAOS_API_TOKEN` with `APP_HOST=0.0.0.0`) is a startup refusal, tested with
//! the binary's other configuration errors in `tests/binary.rs`.

use chaos_lab_testkit as common;

use std::time::{Duration, Instant};

use common::fake_azure::{FakeAzure, NSG, RG};
use common::*;
use serde_json::{Value, json};

/// A loadgen child that would run for ten minutes (the sustained profile at full time scale)
/// with a handful of users.
const LOADGEN: &str = r#"loadgen_start(#{profile: "sustained", scale: 0.01, time_scale: 1})"#;

/// The undo records of a report.
fn undo_records(r: &Value) -> Vec<Value> {
    r["undo"].as_array().cloned().unwrap_or_default()
}

/// The undo record of the report's (first) `on_rollback` closure.
fn rollback_record(r: &Value) -> Value {
    undo_records(r)
        .into_iter()
        .find(|u| u["action"].as_str().is_some_and(|a| a.starts_with("on_rollback")))
        .unwrap_or_else(|| panic!("no on_rollback undo record: {r:#}"))
}

/// The undo records of faults (the ledger's undos, which name the fault).
fn fault_undos(r: &Value) -> Vec<Value> {
    undo_records(r).into_iter().filter(|u| u["fault_id"].is_string()).collect()
}

/// The ledger entries `/chaos/status` lists.
async fn ledger(url: &str) -> Vec<Value> {
    let (_, s) = get(&format!("{url}/chaos/status")).await;
    s["faults"].as_array().cloned().unwrap_or_default()
}

/// Whether run `id`'s report shows a `name(args)` step still going (e.g. its rollback's sleep).
async fn in_step(url: &str, id: &str, name: &str, args: &str) -> bool {
    let (_, r) = get(&format!("{url}/chaos/runs/{id}")).await;
    let steps = r["steps"].as_array().cloned().unwrap_or_default();
    steps.iter().any(|s| s["name"] == name && s["args"] == args && s["ended_at"].is_null())
}

/// `POST /chaos/resume`, expecting the service was halted.
async fn resume(url: &str) {
    let (status, body) = post(&format!("{url}/chaos/resume"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "resumed", "{body}");
    assert_eq!(body["was_halted"], true, "{body}");
}

/// Asserts `r` failed because a fault was applied inside a rollback, naming the function.
fn assert_refused_in_rollback(r: &Value, function: &str) {
    assert_eq!(r["status"], "failed", "{r:#}");
    let rollback = rollback_record(r);
    assert_eq!(rollback["ok"], false, "{r:#}");
    let said = format!("{} {}", rollback["detail"].as_str().unwrap_or_default(), r["error"]["message"]);
    assert!(said.contains("inside on_rollback"), "{function}: {said}");
    assert!(said.contains(&format!("{function}(")), "the error names {function}(): {said}");
}

// --- row 1 -------------------------------------------------------------------------------------

/// Row 1: `on_rollback(|| { network_block(); load("low", 3600); })` left Redis blocked and the load
/// on after a run that "succeeded". Faults applied inside a rollback are now refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row1_faults_applied_inside_a_rollback_are_refused_and_nothing_stays_on() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let world = svc.world(true);

    let script = r#"on_rollback(|| { network_block(); load("low", 3600); }); sleep(0.1);"#;
    let r = run_and_wait(&svc, json!({"script": script})).await;
    assert_refused_in_rollback(&r, "network_block");
    world.assert_clean().await;

    let refused = [
        ("network_latency(200)", "network_latency"),
        (r#"load("low", 3600)"#, "load"),
        ("hang(30)", "hang"),
        (r#"hang(0, "request")"#, "hang"),
        (LOADGEN, "loadgen_start"),
        (r#"loadgen(#{profile: "sustained", scale: 0.01, time_scale: 0.005})"#, "loadgen"),
    ];
    for (call, function) in refused {
        let r = run_and_wait(&svc, json!({"script": format!("on_rollback(|| {{ {call}; }});")})).await;
        assert_refused_in_rollback(&r, function);
        world.assert_clean().await;
    }

    // Undoing is what a rollback is for: those calls are allowed there.
    let script = "network_block();\nload(\"low\", 3600);\nhang(0);\n\
                  on_rollback(|| { network_clear(); load_stop(); hang_stop(); });";
    let r = run_and_wait(&svc, json!({"script": script})).await;
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert!(undo_records(&r).iter().all(|u| u["ok"] == true), "{r:#}");
    world.assert_clean().await;
}

// --- row 2 -------------------------------------------------------------------------------------

/// Row 2: `network_block(); load("low", 3600); on_rollback(|| sleep(31));` ran past the old 30 s
/// undo phase and the block and load undos were skipped. Each rollback now has its own budget,
/// and the fault undos run whatever the rollbacks did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row2_a_rollback_past_its_budget_or_throwing_is_reported_and_the_undos_still_run() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--rollback-timeout-seconds", "1"]).await;
    let world = svc.world(true);

    let started = Instant::now();
    let script = "network_block();\nload(\"low\", 3600);\non_rollback(|| sleep(31));";
    let r = run_and_wait(&svc, json!({"script": script})).await;
    assert!(started.elapsed() < Duration::from_secs(15), "the run took {:?}", started.elapsed());
    assert_eq!(r["status"], "failed", "{r:#}");
    let rollback = rollback_record(&r);
    assert_eq!(rollback["ok"], false, "{r:#}");
    assert!(rollback["detail"].as_str().unwrap_or_default().contains("rollback budget"), "{rollback}");
    let undos = fault_undos(&r);
    assert_eq!(undos.len(), 2, "the block and the load: {r:#}");
    assert!(undos.iter().all(|u| u["ok"] == true), "{r:#}");
    world.assert_clean().await;

    // A rollback that throws: reported, and the undos run.
    let script = "network_block();\non_rollback(|| { throw \"the rollback breaks\"; });\nload(\"low\", 3600);";
    let r = run_and_wait(&svc, json!({"script": script})).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    let rollback = rollback_record(&r);
    assert_eq!(rollback["ok"], false, "{r:#}");
    assert!(rollback["detail"].as_str().unwrap_or_default().contains("the rollback breaks"), "{rollback}");
    let undos = fault_undos(&r);
    assert_eq!(undos.len(), 2, "{r:#}");
    assert!(undos.iter().all(|u| u["ok"] == true), "{r:#}");
    world.assert_clean().await;
}

// --- row 3 -------------------------------------------------------------------------------------

/// Row 3: `on_rollback(|| sleep(86400)); sleep(1);`, then cancel, then the kill switch: the run
/// never ended and every new run got 409 for a day. The kill switch and a second cancel now cut
/// a rollback short (the budget here is long, so it is not what ends them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row3_the_kill_switch_and_a_second_cancel_cut_a_sleeping_rollback_short() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--rollback-timeout-seconds", "300"]).await;
    let world = svc.world(true);

    // The script ends by itself after 1 s; its rollback sleeps; cancel, then the kill switch.
    let id = start_run(&svc, json!({"script": "network_block();\non_rollback(|| sleep(86400));\nsleep(1);"})).await;
    assert!(
        eventually(Duration::from_secs(10), || in_step(&svc.url, &id, "sleep", "86400")).await,
        "the run did not reach its rollback's sleep"
    );
    assert_eq!(get(&svc.url(&format!("/chaos/runs/{id}"))).await.1["status"], "running", "in its rollback");
    let cancel_url = svc.url(&format!("/chaos/runs/{id}/cancel"));
    let cancel = tokio::spawn(async move { post(&cancel_url, "").await });
    // Time must pass: a cancel of a run already in its rollback shows nowhere until the run ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, body) = post(&svc.url("/chaos/stop"), "").await;
    assert_eq!(status, 200, "{body}");
    let r = wait_run(&svc, &id, Duration::from_secs(5)).await;
    eprintln!("kill switch to run end: {:?}, all_clear_ms {}", started.elapsed(), body["all_clear_ms"]);
    assert_eq!(r["status"], "cancelled", "{r:#}");
    assert_eq!(rollback_record(&r)["ok"], false, "the rollback was cut short: {r:#}");
    assert!(fault_undos(&r).iter().all(|u| u["ok"] == true), "{r:#}");
    assert_eq!(tokio::time::timeout(Duration::from_secs(15), cancel).await.unwrap().unwrap().0, 200);
    world.assert_clean().await;
    // Halted until resumed; then runs start again (no slot is held by the old run).
    assert_eq!(post(&svc.url("/chaos/run"), r#"{"script": "1"}"#).await.0, 423);
    resume(&svc.url).await;
    assert_eq!(run_and_wait(&svc, json!({"script": "1"})).await["status"], "succeeded");

    // A second cancel cuts the rollback short.
    let id = start_run(&svc, json!({"script": "network_block();\non_rollback(|| sleep(86400));\nsleep(600);"})).await;
    assert!(eventually(Duration::from_secs(5), || async { svc.status().await["network"]["blocked"] == true }).await);
    let cancel_url = svc.url(&format!("/chaos/runs/{id}/cancel"));
    let first = tokio::spawn(async move { post(&cancel_url, "").await });
    assert!(
        eventually(Duration::from_secs(10), || in_step(&svc.url, &id, "sleep", "86400")).await,
        "the first cancel did not take the run to its rollback's sleep"
    );
    assert_eq!(
        get(&svc.url(&format!("/chaos/runs/{id}"))).await.1["status"],
        "running",
        "one cancel stops the script; the rollback runs within its budget"
    );
    let (status, body) = post(&svc.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    assert_eq!(status, 200, "{body}");
    let r = wait_run(&svc, &id, Duration::from_secs(5)).await;
    assert_eq!(r["status"], "cancelled", "{r:#}");
    assert_eq!(rollback_record(&r)["ok"], false, "{r:#}");
    assert_eq!(tokio::time::timeout(Duration::from_secs(15), first).await.unwrap().unwrap().0, 200);
    world.assert_clean().await;
    assert_eq!(run_and_wait(&svc, json!({"script": "1"})).await["status"], "succeeded");
}

// --- row 4 -------------------------------------------------------------------------------------

/// Row 4: `hang(0, "request"); sleep(600);` then cancel left the request hang active. It is a
/// ledger entry like any other fault now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_a_request_hang_is_undone_when_its_run_is_cancelled() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let id = start_run(&svc, json!({"script": "hang(0, \"request\");\nsleep(600);"})).await;
    assert!(eventually(Duration::from_secs(5), || async { svc.status().await["hang"]["active"] == true }).await);
    let (status, listed) = get(&svc.url("/chaos/faults")).await;
    assert_eq!(status, 200, "{listed}");
    let entries = listed["faults"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries, ledger(&svc.url).await, "GET /chaos/faults and /chaos/status list the same");
    let owner = format!("run:{id}");
    let hang = entries
        .iter()
        .find(|e| e["kind"] == "hang" && e["owner"].as_str() == Some(owner.as_str()))
        .unwrap_or_else(|| panic!("no hang entry of {owner}: {listed:#}"));
    assert_eq!(hang["state"], "active", "{hang}");
    assert!(hang["id"].as_str().is_some_and(|i| i.starts_with("f-")), "{hang}");
    assert!(hang["lease_expires_at"].is_string(), "every entry has a lease: {hang}");

    // Only an undo_failed entry may be forgotten by an operator.
    let fid = hang["id"].as_str().unwrap();
    let r = http().delete(svc.url(&format!("/chaos/faults/{fid}"))).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = http().delete(svc.url("/chaos/faults/f-no-such-fault")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let (status, r) = post(&svc.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    assert_eq!(status, 200, "{r}");
    let r = wait_run(&svc, &id, Duration::from_secs(10)).await;
    assert_eq!(r["status"], "cancelled", "{r:#}");
    let undo = fault_undos(&r);
    assert!(undo.iter().any(|u| u["fault_id"] == fid && u["ok"] == true), "the hang was undone: {r:#}");
    svc.world(true).assert_clean().await;
}

// --- row 5 -------------------------------------------------------------------------------------

/// Row 5: `http("POST", "/chaos/load", ...)` applied a load no undo knew about. A script's
/// `http()` is for probes: a non-GET to `/chaos/*` fails the run and names the function to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row5_http_cannot_apply_faults_around_the_ledger() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let world = svc.world(true);
    let cases = [
        (r#"http("POST", "/chaos/load", #{level: "high", duration_seconds: 3600});"#, "load("),
        (r#"http("POST", "/chaos/hang", #{duration_seconds: 0});"#, "hang("),
        (r#"http("POST", "/chaos/redis-reset");"#, "redis_reset("),
    ];
    for (script, function) in cases {
        let r = run_and_wait(&svc, json!({"script": script})).await;
        assert_eq!(r["status"], "failed", "{script}: {r:#}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("http()") && message.contains(function), "{script}: {message}");
        world.assert_clean().await;
    }

    // Probes still work: GETs to /chaos/*, and any method to the app's own paths.
    let script = r#"
        let s = http("GET", "/chaos/status");
        expect(s.status == 200, `GET /chaos/status answered ${s.status}`);
        let h = http("GET", "/health");
        expect(h.status == 200, `GET /health answered ${h.status}`);
        let d = http("DELETE", "/health");
        expect(d.status == 405, `DELETE /health was sent and answered ${d.status}`);
    "#;
    let r = run_and_wait(&svc, json!({"script": script})).await;
    assert_eq!(r["status"], "succeeded", "{r:#}");
    world.assert_clean().await;
}

// --- row 6 -------------------------------------------------------------------------------------

/// Row 6: a script logging a 32 KiB string 5 000 times grew the service from 17 to 691 MB with a
/// 164 MB journal. A run's footprint is capped now, and the report says what was dropped.
///
/// Measured on the binary, not in-process: the test process hosts other tests' services (a
/// `load("low")` alone holds 100 MiB), which would blur its RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row6_a_log_flood_is_truncated_and_the_service_stays_small() {
    let redis = RedisServer::start();
    let runs = temp_dir("safety-flood");
    let port = redis.port.to_string();
    let svc = ServiceProcess::start(&runs, &[("REDIS_PORT", port.as_str())]).await;
    let rss_before = svc.vm_kib("VmRSS");

    let script = "let s = \"x\";\nfor i in 0..15 { s += s; }\nfor i in 0..5000 { log(s); }\ns.len()";
    // One request that waits for the end (polling a report of several MiB would add to the RSS).
    let client = reqwest::Client::builder().timeout(Duration::from_secs(180)).build().unwrap();
    let resp = client.post(svc.url("/chaos/run?wait=true")).json(&json!({"script": script})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    let (rss_after, peak) = (svc.vm_kib("VmRSS"), svc.vm_kib("VmHWM"));
    let id = r["run_id"].as_str().unwrap().to_string();
    assert_eq!(r["status"], "succeeded", "the script keeps running past the caps: {}", r["error"]);
    assert_eq!(r["result"], 32768, "a 32 KiB string");

    let truncated = &r["truncated"];
    assert!(truncated.is_object(), "the report says it was truncated: {truncated}");
    assert!(truncated["logs"].as_u64().unwrap_or(0) > 0, "{truncated}");
    let dropped = truncated["log_bytes"].as_u64().unwrap_or(0);
    assert!(dropped > 100_000_000, "most of the 160 MiB was dropped: {truncated}");
    let logs = r["logs"].as_array().unwrap();
    assert!(logs.len() < 5000, "{} log lines kept", logs.len());
    assert!(logs.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("log truncated"))), "no marker");

    let journal = std::fs::metadata(runs.join(format!("{id}.json"))).unwrap().len();
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    eprintln!(
        "log flood: RSS {} MiB before, {} MiB after, peak {} MiB (+{growth_mib} MiB); journal {:.1} MiB; {truncated}",
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024,
        journal as f64 / 1048576.0
    );
    assert!(journal < 20_000_000, "journal is {journal} bytes");
    assert!(growth_mib < 150, "the service grew {growth_mib} MiB under the flood");
    svc.world(true).assert_clean().await;
}

// --- row 7 -------------------------------------------------------------------------------------

/// Row 7: runs started while `POST /chaos/stop` waited for the others were not cancelled, and new
/// chaos could start right after. The kill switch is a latch now: what starts during the stop is
/// cancelled too, and after it every fault-making endpoint answers 423 until `POST /chaos/resume`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row7_runs_started_during_the_kill_switch_are_cancelled_and_chaos_stays_halted() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--max-concurrent-runs", "16"]).await;
    let needle = loadgen_needle(&svc.runs_dir());

    // A run that takes a moment to end (a loadgen child to stop) and hangs the app, so requests
    // queue up in front of it and reach the service while the kill switch is at work.
    let first =
        start_run(&svc, json!({"script": format!("network_block();\n{LOADGEN};\nhang(0);\nsleep(600);")})).await;
    assert!(eventually(Duration::from_secs(10), || async { processes_with(&needle) == 1 }).await, "loadgen started");
    assert!(
        eventually(Duration::from_secs(10), || async { svc.status().await["hang"]["active"] == true }).await,
        "the first run's app hang did not start"
    );

    let run_url = svc.url("/chaos/run");
    let body = json!({"script": "network_block();\nload(\"low\", 600);\nsleep(600);"}).to_string();
    let racer = || {
        let (url, body) = (run_url.clone(), body.clone());
        tokio::spawn(async move { post(&url, &body).await })
    };
    let mut racers: Vec<_> = (0..6).map(|_| racer()).collect();
    // Time must pass: the racers are to be in flight, not answered, when the stop starts; nothing
    // outside shows a request on its way in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stop_url = svc.url("/chaos/stop");
    let stop = tokio::spawn(async move { post(&stop_url, "").await });
    while !stop.is_finished() && racers.len() < 200 {
        racers.push(racer());
        // Time must pass: this paces the racers over the stop's duration; there is nothing to wait for.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, stopped) = stop.await.unwrap();
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "halted", "{stopped}");
    assert!(stopped["runs_cancelled"].as_u64().unwrap_or(0) >= 1, "{stopped}");
    assert!(stopped["faults_undone"].is_u64(), "{stopped}");
    assert_eq!(stopped["undo_failed"], json!([]), "{stopped}");
    assert!(stopped["all_clear_ms"].is_number(), "{stopped}");
    assert!(stopped["halt"]["at"].is_string(), "{stopped}");
    eprintln!("kill switch: {} racing POST /chaos/run, all_clear_ms {}", racers.len(), stopped["all_clear_ms"]);

    let mut started = vec![first];
    for r in racers {
        let (code, b) = r.await.unwrap();
        match code {
            202 => started.push(b["run_id"].as_str().unwrap().to_string()),
            423 => assert_envelope(&b, "Locked", "POST /chaos/resume"),
            409 => {} // all slots taken for a moment: not started either
            other => panic!("POST /chaos/run during the stop: {other} {b}"),
        }
    }
    for id in &started {
        let r = wait_run(&svc, id, Duration::from_secs(15)).await;
        assert_eq!(r["status"], "cancelled", "{r:#}");
        assert!(r["reason"].as_str().unwrap_or_default().contains("kill switch"), "{}", r["reason"]);
    }
    eprintln!("{} run(s) started around the stop, all cancelled", started.len());
    svc.world(true).assert_clean().await;

    // Halted: no new chaos, built-in endpoints included.
    let (_, s) = get(&svc.url("/chaos/status")).await;
    assert_eq!(s["halted"], true, "{s}");
    for k in ["at", "by", "detail"] {
        assert!(s["halt"][k].is_string(), "halt.{k}: {s}");
    }
    let refused = [
        ("/chaos/run", r#"{"script": "1"}"#),
        ("/chaos/load", r#"{"level": "low", "duration_seconds": 5}"#),
        ("/chaos/hang", r#"{"duration_seconds": 1}"#),
        ("/chaos/redis-reset", "{}"),
    ];
    for (path, body) in refused {
        let (code, b) = post(&svc.url(path), body).await;
        assert_eq!(code, 423, "{path}: {b}");
        assert_envelope(&b, "Locked", "halted");
        assert_envelope(&b, "Locked", "POST /chaos/resume");
    }
    svc.world(true).assert_clean().await;

    let (status, body) = post(&svc.url("/chaos/resume"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "resumed");
    assert_eq!(body["was_halted"], true);
    assert!(body["halted_since"].is_string(), "{body}");
    let (_, s) = get(&svc.url("/chaos/status")).await;
    assert_eq!(s["halted"], false, "{s}");
    assert!(s["halt"].is_null(), "{s}");
    let (_, body) = post(&svc.url("/chaos/resume"), "").await;
    assert_eq!(body["was_halted"], false, "{body}");
    assert!(body["halted_since"].is_null(), "{body}");
    assert_eq!(run_and_wait(&svc, json!({"script": "1"})).await["status"], "succeeded");
}

// Row 8 (an empty CHAOS_API_TOKEN with APP_HOST=0.0.0.0 turned auth off and lifted the loopback
// guard) is a startup refusal: tests/binary.rs.

// --- row 9 -------------------------------------------------------------------------------------

fn app_template() -> Value {
    json!({"revisionSuffix": null, "scale": {"minReplicas": 1, "maxReplicas": 2}, "containers": [{
        "name": "chaos-lab", "image": "acr.example.io/chaos-lab:1",
        "env": [{"name": "REDIS_HOST", "value": "redis.internal"}, {"name": "REDIS_PORT", "value": "10000"}]}]})
}

fn chaos_rules(fake: &FakeAzure, nsg: &str) -> Vec<String> {
    fake.rule_names(nsg).into_iter().filter(|n| n.starts_with("chaos-")).collect()
}

/// Row 9, first half: a run cancelled while the NSG PUT's long-running operation is in flight.
/// The rule was untracked; now the ledger lists it from before the PUT, and the cancel removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_cancel_while_the_nsg_put_is_in_flight_removes_the_rule() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-safety-inflight", "client-safety-inflight");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    // The PUT's operation status fails twice (the poll retries after 0.5 s and 1 s), then says
    // InProgress once (2 s more): the apply stays in flight for about 3.5 s after the PUT.
    fake.fail_next(sub, "GET", "/operations/", 500, "InternalServerError", "busy", 2);
    let svc = azure_service(fake, sub, client, &["--redis-enabled", "false"]).await;
    let world = svc.world(false).with_azure(Some(nsg.clone()), None);

    let id = start_run(&svc, json!({"script": "network_block();\nsleep(600);"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async { !chaos_rules(fake, &nsg).is_empty() }).await,
        "the PUT never came"
    );
    let owner = format!("run:{id}");
    let entries = ledger(&svc.url).await;
    let entry = entries
        .iter()
        .find(|e| e["kind"] == "network_block" && e["owner"].as_str() == Some(owner.as_str()))
        .unwrap_or_else(|| panic!("the ledger does not know the rule being written: {entries:#?}"));
    assert_eq!(entry["state"], "applying", "{entry}");

    let (status, r) = post(&svc.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    assert_eq!(status, 200, "{r}");
    let r = wait_run(&svc, &id, Duration::from_secs(20)).await;
    assert_eq!(r["status"], "cancelled", "{r:#}");
    assert!(fault_undos(&r).iter().all(|u| u["ok"] == true), "{r:#}");
    world.assert_clean().await;
    let deletes = fake.arm_requests(sub).into_iter().filter(|q| q.method == "DELETE").count();
    assert!(deletes >= 1, "the rule was deleted, not left to its 1 h expiry");
}

/// Row 9: the kill switch while the PUT is in flight; the kill switch also removes `chaos-` rules
/// the ledger does not know (a crashed predecessor's), and leaves every other rule alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_kill_switch_during_the_put_removes_its_rule_and_unknown_chaos_rules() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-safety-stop", "client-safety-stop");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    fake.add_rule(&nsg, "allow-bastion", 200, "platform rule");
    fake.add_rule(&nsg, "chaos-block-stray", 150, "chaos-lab run=gone expires=2999-01-01T00:00:00Z");
    fake.fail_next(sub, "GET", "/operations/", 500, "InternalServerError", "busy", 2);
    let svc = azure_service(fake, sub, client, &["--redis-enabled", "false"]).await;
    let world = svc.world(false).with_azure(Some(nsg.clone()), None);

    let id = start_run(&svc, json!({"script": "network_block();\nsleep(600);"})).await;
    assert!(
        eventually(Duration::from_secs(10), || async { chaos_rules(fake, &nsg).len() == 2 }).await,
        "the PUT never came: {:?}",
        fake.rule_names(&nsg)
    );
    let started = Instant::now();
    let (status, body) = post(&svc.url("/chaos/stop"), "").await;
    eprintln!(
        "kill switch on the fake ARM: answered in {:?}, all_clear_ms {}",
        started.elapsed(),
        body["all_clear_ms"]
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "halted", "{body}");
    assert!(body["unknown_rules_removed"].as_u64().unwrap_or(0) >= 1, "{body}");
    assert_eq!(body["undo_failed"], json!([]), "{body}");
    assert_eq!(fake.rule_names(&nsg), ["allow-bastion"], "only chaos- rules are removed");
    assert_eq!(wait_run(&svc, &id, Duration::from_secs(10)).await["status"], "cancelled");
    world.assert_clean().await;
    resume(&svc.url).await;
}

/// Row 9, second half: kill -9 with a rule and a broken revision in place. Only the sweeper used
/// to remove the rule, at its expiry an hour later, and nothing restored the revision. The
/// restarted service undoes both from the ledger, before it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_kill_9_with_a_rule_and_a_broken_revision_then_restart_recovers_both() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-safety-kill9", "client-safety-kill9");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    let app = FakeAzure::app_path(sub, RG, "chaos-app");
    fake.add_app(&app, "chaos-app", app_template());
    let runs = temp_dir("safety-azure-kill9");
    let mut svc = ServiceProcess::start(&runs, &fake.service_env(sub, client)).await;

    let id = start_run_at(&svc.url, json!({"script": "network_block();\ndeploy_fault(\"wrong-image\");\nsleep(600);"}))
        .await;
    let both_active = || async {
        let e = ledger(&svc.url).await;
        e.len() == 2 && e.iter().all(|e| e["state"] == "active")
    };
    assert!(eventually(Duration::from_secs(20), both_active).await, "{:#?}", ledger(&svc.url).await);
    assert_eq!(chaos_rules(fake, &nsg).len(), 1);
    assert!(!revision_leftovers(&fake.revisions(&app)).is_empty(), "the broken revision serves");

    svc.kill9();
    assert_eq!(chaos_rules(fake, &nsg).len(), 1, "nothing undid the rule: the process died");
    let restarted = Instant::now();
    svc.restart().await;
    let left = svc.world(false).with_azure(Some(nsg.clone()), Some(app.clone())).settle(Duration::from_secs(15)).await;
    eprintln!("kill -9, then restart: world clean {:?} after the restart began", restarted.elapsed());
    assert!(left.is_empty(), "left behind after the restart: {left:#?}");

    let r = wait_run_at(&svc.url, &id, Duration::from_secs(5)).await;
    assert_eq!(r["status"], "interrupted", "{r:#}");
    let recovered = r["recovered"].as_array().cloned().unwrap_or_default();
    let mut kinds: Vec<&str> = recovered.iter().map(|x| x["kind"].as_str().unwrap_or("?")).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["deploy", "network_block"], "{r:#}");
    assert!(recovered.iter().all(|x| x["ok"] == true && x["fault"].is_string()), "{r:#}");
}

/// A failed undo stays in the ledger (status shows it, the kill switch reports it) until it
/// succeeds or an operator forgets it with `DELETE /chaos/faults/{id}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_a_failed_undo_stays_in_the_ledger_until_an_operator_forgets_it() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-safety-undo-failed", "client-safety-undo-failed");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    let denied = "The client does not have authorization to perform action securityRules/delete";
    fake.fail_next(sub, "DELETE", "/securityRules/chaos-", 403, "AuthorizationFailed", denied, 10_000);
    let svc = azure_service(fake, sub, client, &["--redis-enabled", "false"]).await;

    let r = run_and_wait(&svc, json!({"script": "network_block(#{seconds: 300});"})).await;
    assert_eq!(r["status"], "failed", "an undo failed: {r:#}");
    let undo = fault_undos(&r);
    assert!(undo.len() == 1 && undo[0]["ok"] == false, "{r:#}");
    let fid = undo[0]["fault_id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(30), || async {
            ledger(&svc.url).await.iter().any(|e| e["id"] == fid.as_str() && e["state"] == "undo_failed")
        })
        .await,
        "{:#?}",
        ledger(&svc.url).await
    );
    let entry = ledger(&svc.url).await.into_iter().find(|e| e["id"] == fid.as_str()).unwrap();
    assert!(entry["detail"].as_str().is_some_and(|d| !d.is_empty()), "the reason is shown: {entry}");
    assert!(entry["undo_attempts"].as_u64().unwrap_or(0) >= 1, "{entry}");

    let (status, body) = post(&svc.url("/chaos/stop"), "").await;
    assert_eq!(status, 200, "{body}");
    let failed = body["undo_failed"].as_array().cloned().unwrap_or_default();
    let named = |e: &Value| e["id"] == fid.as_str() || e["fault_id"] == fid.as_str();
    assert!(failed.iter().any(named), "the kill switch reports it: {body}");

    let r = http().delete(svc.url(&format!("/chaos/faults/{fid}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(ledger(&svc.url).await.is_empty());
    let r = http().delete(svc.url(&format!("/chaos/faults/{fid}"))).send().await.unwrap();
    assert_eq!(r.status(), 404, "forgotten");
    resume(&svc.url).await;
    // The operator says the rule was removed by hand; in this fake it was not (its DELETE keeps
    // failing), which the ledger no longer tracks.
    assert_eq!(chaos_rules(fake, &nsg).len(), 1);
    assert!(ledger(&svc.url).await.is_empty());
}

// --- row 10 ------------------------------------------------------------------------------------

/// Row 10: a `loadgen_start` child kept running its whole profile after the kill switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_the_kill_switch_stops_a_loadgen_child() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let needle = loadgen_needle(&svc.runs_dir());
    let id = start_run(&svc, json!({"script": format!("{LOADGEN};\nsleep(600);")})).await;
    assert!(eventually(Duration::from_secs(10), || async { processes_with(&needle) == 1 }).await, "loadgen started");
    assert!(ledger(&svc.url).await.iter().any(|e| e["kind"] == "loadgen" && e["state"] == "active"));

    let (status, body) = post(&svc.url("/chaos/stop"), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(eventually(Duration::from_secs(5), || async { processes_with(&needle) == 0 }).await, "loadgen survived");
    assert_eq!(wait_run(&svc, &id, Duration::from_secs(10)).await["status"], "cancelled");
    svc.world(true).assert_clean().await;
    resume(&svc.url).await;
}

/// Row 10: SIGTERM of the service stops its loadgen child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_sigterm_of_the_service_stops_its_loadgen_child() {
    let redis = RedisServer::start();
    let runs = temp_dir("safety-loadgen-term");
    let needle = loadgen_needle(&runs);
    let port = redis.port.to_string();
    let mut svc = ServiceProcess::start(&runs, &[("REDIS_PORT", port.as_str())]).await;
    let id = start_run_at(&svc.url, json!({"script": format!("{LOADGEN};\nsleep(600);")})).await;
    assert!(eventually(Duration::from_secs(10), || async { processes_with(&needle) == 1 }).await, "loadgen started");

    let exit = svc.sigterm(Duration::from_secs(20)).await;
    assert!(exit.is_some_and(|s| s.success()), "exit {exit:?}:\n{}", svc.stderr_tail());
    assert!(eventually(Duration::from_secs(5), || async { processes_with(&needle) == 0 }).await, "loadgen survived");
    let journal: Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(journal["status"], "cancelled", "{journal:#}");
    assert!(
        journal["undo"].as_array().unwrap().iter().any(|u| u["ok"] == true && u["fault_id"].is_string()),
        "{journal:#}"
    );
    svc.restart().await;
    svc.world(true).assert_clean().await;
}

/// Row 10: kill -9 of the service leaves no loadgen child (it dies with its parent), and the
/// restarted service marks the run interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_kill_9_of_the_service_leaves_no_loadgen_child() {
    let redis = RedisServer::start();
    let runs = temp_dir("safety-loadgen-kill9");
    let needle = loadgen_needle(&runs);
    let port = redis.port.to_string();
    let mut svc = ServiceProcess::start(&runs, &[("REDIS_PORT", port.as_str())]).await;
    let id = start_run_at(&svc.url, json!({"script": format!("network_block();\n{LOADGEN};\nsleep(600);")})).await;
    assert!(eventually(Duration::from_secs(10), || async { processes_with(&needle) == 1 }).await, "loadgen started");
    assert!(
        eventually(Duration::from_secs(10), || async {
            ledger(&svc.url).await.iter().any(|e| e["kind"] == "loadgen" && e["state"] == "active")
        })
        .await,
        "the loadgen's ledger entry is not active"
    );

    svc.kill9();
    assert!(
        eventually(Duration::from_secs(5), || async { processes_with(&needle) == 0 }).await,
        "the loadgen child outlived the service's kill -9"
    );
    svc.restart().await;
    let r = wait_run_at(&svc.url, &id, Duration::from_secs(5)).await;
    assert_eq!(r["status"], "interrupted", "{r:#}");
    let recovered = r["recovered"].as_array().cloned().unwrap_or_default();
    assert!(recovered.iter().any(|x| x["kind"] == "loadgen" && x["ok"] == true), "{r:#}");
    assert!(recovered.iter().any(|x| x["kind"] == "network_block" && x["ok"] == true), "{r:#}");
    svc.world(true).assert_clean().await;
}
