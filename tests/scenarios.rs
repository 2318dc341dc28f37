//! The scenario engine end to end: real service, real redis-server, real local fault proxy.

use chaos_lab_testkit as common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Service settings for scenario tests: quick Redis timeouts, the repository's scenarios.
async fn service(redis: &RedisServer, extra: &[&str]) -> TestService {
    let dir = repo_scenarios();
    let mut args = vec!["--scenarios-dir", dir.as_str()];
    args.extend_from_slice(extra);
    TestService::start(redis.port, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_block_alone_changes_nothing_until_reset_then_clear_recovers() {
    let redis = RedisServer::start();
    let svc = service(&redis, &["--redis-max-retries", "0"]).await;
    assert_eq!(get(&svc.url("/")).await.0, 200);

    // Step by step, the way the canonical scenario does it, observed from outside.
    let script = r#"
        network_block();
        sleep(60);
    "#;
    let id = start_run(&svc, json!({"script": script})).await;
    assert!(eventually(Duration::from_secs(5), || async { svc.status().await["network"]["blocked"] == true }).await);
    assert_eq!(get(&svc.url("/")).await.0, 200, "established connections must keep working under a block");

    let (status, body) = post(&svc.url("/chaos/redis-reset"), "").await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let (status, body) = get(&svc.url("/")).await;
    assert_eq!(status, 503, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.starts_with("Redis operation timeout") || detail.starts_with("Redis connection failed"), "{detail}");
    assert!(started.elapsed() >= Duration::from_millis(900), "a black hole times out; it does not refuse");

    // Cancelling the run undoes the block: the service recovers.
    let (status, report) = post(&svc.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "cancelled");
    assert!(eventually(Duration::from_secs(5), || async { get(&svc.url("/")).await.0 == 200 }).await);
    assert_nothing_broken(&svc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_scenario_measures_detection_and_recovery() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let report = run_and_wait(
        &svc,
        json!({"scenario": "redis-outage", "params": {"outage_s": 1, "detect_timeout_s": 15, "recover_timeout_s": 15}}),
    )
    .await;
    assert_eq!(report["status"], "succeeded", "{report:#}");
    assert_eq!(report["verdict"], "pass");
    let m = &report["measurements"];
    assert_eq!(m["get_status_blocked_established"], 200, "{m}");
    assert_eq!(m["get_status_during_outage"], 503, "{m}");
    let detect = m["time_to_detect_s"].as_f64().unwrap();
    let recover = m["time_to_recover_s"].as_f64().unwrap();
    assert!(detect > 0.0 && detect < 15.0, "time to detect {detect}");
    assert!((0.0..10.0).contains(&recover), "time to recover {recover}");
    // User traffic ran through the outage (loadgen, a child process) and was stopped at the end.
    assert!(m["load_requests"].as_u64().unwrap() > 0, "{m}");
    assert!(m["load_failures"].is_u64() && m["load_p95_ms"].is_number(), "{m}");
    // Steps are timed and in order.
    let steps = report["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap_or_else(|| panic!("no {n} step in {names:?}"));
    assert!(pos("network_block") < pos("redis_reset") && pos("redis_reset") < pos("network_clear"), "{names:?}");
    assert!(steps.iter().all(|s| s["ended_at"].is_string() && s["line"].is_u64()));
    assert_nothing_broken(&svc).await;
    assert_eq!(get(&svc.url("/")).await.0, 200);
}

/// A script that applies a network block and a load, then ends the way `ending` says.
fn faulty(ending: &str) -> String {
    format!("network_block();\nload(\"low\", 600);\n{ending}\n")
}

/// Whether both faults of [`faulty`] are on: the network block and the load.
async fn faulty_applied(svc: &TestService) -> bool {
    let (_, s) = get(&svc.url("/chaos/status")).await;
    s["network"]["blocked"] == true && s["load"]["active"] == true
}

async fn assert_undone(svc: &TestService, report: &serde_json::Value) {
    let undo = report["undo"].as_array().unwrap();
    assert_eq!(undo.len(), 2, "{report:#}");
    assert!(undo.iter().all(|u| u["ok"] == true), "{undo:?}");
    // Newest first: the load was applied last, so it is undone first.
    assert_eq!(undo[0]["action"], "stop the load");
    assert!(undo[1]["action"].as_str().unwrap().starts_with("clear network fault"));
    assert_nothing_broken(svc).await;
    assert!(eventually(Duration::from_secs(5), || async { get(&svc.url("/")).await.0 == 200 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ending_undoes_the_faults() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;

    // Script error: the position is reported and the faults are undone.
    let r = run_and_wait(&svc, json!({"script": faulty("let x = no_such_fn(1);")})).await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["line"], 3, "{r:#}");
    assert!(r["error"]["message"].as_str().unwrap().contains("no_such_fn"));
    assert_undone(&svc, &r).await;

    // Cancel.
    let id = start_run(&svc, json!({"script": faulty("sleep(600);")})).await;
    assert!(eventually(Duration::from_secs(10), || faulty_applied(&svc)).await, "the block and the load are not on");
    let (status, r) = post(&svc.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    assert_eq!(status, 200);
    assert_eq!(r["status"], "cancelled");
    assert_undone(&svc, &r).await;

    // Timeout.
    let r = run_and_wait(&svc, json!({"script": faulty("sleep(600);"), "timeout_seconds": 1})).await;
    assert_eq!(r["status"], "timed_out", "{r:#}");
    assert_undone(&svc, &r).await;

    // Kill switch, which also ends faults applied outside any run.
    let id = start_run(&svc, json!({"script": faulty("loop { sleep(1); }")})).await;
    assert!(eventually(Duration::from_secs(10), || faulty_applied(&svc)).await, "the block and the load are not on");
    let (status, body) = post(&svc.url("/chaos/stop"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs_cancelled"], 1);
    let r = wait_run(&svc, &id, Duration::from_secs(5)).await;
    assert_eq!(r["status"], "cancelled");
    assert!(r["reason"].as_str().unwrap().contains("kill switch"));
    assert_undone(&svc, &r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_works_during_an_app_hang() {
    let svc = TestService::start(free_port(), &["--redis-enabled", "false"]).await;
    let id = start_run(&svc, json!({"script": "hang(0);\nsleep(600);"})).await;
    // /chaos/status answers during an app hang.
    assert!(
        eventually(Duration::from_secs(10), || async { svc.status().await["hang"]["active"] == true }).await,
        "the app hang did not start"
    );
    let started = Instant::now();
    let (status, body) = post(&svc.url("/chaos/stop"), "").await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(get(&svc.url("/healthz")).await.0, 200);
    assert_eq!(wait_run(&svc, &id, Duration::from_secs(5)).await["status"], "cancelled");
    assert_nothing_broken(&svc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_scripts_are_stopped_while_health_answers() {
    let redis = RedisServer::start();
    let svc = service(&redis, &["--max-concurrent-runs", "4"]).await;
    let cases = [
        ("let x = 0;\nloop { x += 1; }", "operations"),
        ("fn f(n) { f(n + 1) }\nf(1)", "nested deeper"),
        ("let s = \"ab\";\nloop { s += s; }", "exceeds the limit"),
    ];
    let ids = futures_ids(&svc, &cases).await;
    // Meanwhile the service answers.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(get(&svc.url("/health")).await.0, 200);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    for (id, (_, needle)) in ids.iter().zip(cases) {
        let r = wait_run(&svc, id, Duration::from_secs(20)).await;
        assert_eq!(r["status"], "failed");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains("sandbox limit") && msg.contains(needle), "{msg}");
        assert_eq!(r["error"]["line"], 2);
    }
}

async fn futures_ids(svc: &TestService, cases: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    for (script, _) in cases {
        ids.push(start_run(svc, json!({"script": script})).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_errors_are_400_with_position_and_size_is_limited() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let r = http().post(svc.url("/chaos/run")).body("log(\"a\");\nlet = 5;").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_envelope(&body, "Bad Request", "does not compile");
    assert_eq!(body["line"], 2);
    assert!(body["column"].is_u64());

    let huge = "// x\n".repeat(20_000);
    let (status, body) = post(&svc.url("/chaos/run"), &json!({"script": huge}).to_string()).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "the limit is 65536 bytes");

    let (status, body) = post(&svc.url("/chaos/run"), r#"{"scenario": "nope"}"#).await;
    assert_eq!(status, 404);
    assert_envelope(&body, "Not Found", "redis-outage");
    let (status, body) = post(&svc.url("/chaos/run"), r#"{"scenario": "redis-outage", "params": {"outage": 1}}"#).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "has no parameter 'outage'");
    let (status, body) = post(&svc.url("/chaos/run"), r#"{"script": "1", "timeout_seconds": 0}"#).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "timeout_seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_at_a_time_by_default_and_journals_survive_a_restart() {
    let redis = RedisServer::start();
    let runs = temp_dir("journal");
    let runs_dir = runs.to_str().unwrap();
    let svc = service(&redis, &["--runs-dir", runs_dir]).await;
    let id = start_run(&svc, json!({"script": "sleep(30);"})).await;
    let (status, body) = post(&svc.url("/chaos/run"), r#"{"script": "1"}"#).await;
    assert_eq!(status, 409);
    assert_envelope(&body, "Conflict", "MAX_CONCURRENT_RUNS is 1");
    post(&svc.url(&format!("/chaos/runs/{id}/cancel")), "").await;
    let done = run_and_wait(&svc, json!({"script": "record(\"answer\", 42); 7"})).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"], 7);
    svc.stop().await;

    let again = service(&redis, &["--runs-dir", runs_dir]).await;
    let (_, list) = get(&again.url("/chaos/runs")).await;
    let listed: Vec<&str> = list["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![done["run_id"].as_str().unwrap(), id.as_str()], "newest first");
    let (status, old) = get(&again.url(&format!("/chaos/runs/{}", done["run_id"].as_str().unwrap()))).await;
    assert_eq!(status, 200);
    assert_eq!(old["measurements"]["answer"], 42);
    assert_eq!(get(&again.url("/chaos/runs/nope")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_breaks_nothing() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    assert_eq!(get(&svc.url("/")).await.0, 200);
    let before = redis.client_count();
    let script = r#"
        network_block(#{cut_existing: true});
        redis_reset();
        load("high", 60);
        hang(30);
        network_latency(500);
        let r = http("POST", "/", #{level: "high"});
        expect(r.dry_run, "non-GET http is not sent in a dry run");
        expect(health().ok, "still healthy");
    "#;
    let r = run_and_wait(&svc, json!({"script": script, "dry_run": true})).await;
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert_eq!(r["dry_run"], true);
    assert!(r["steps"].as_array().unwrap().iter().any(|s| s["outcome"] == "dry run: not applied"));
    assert_nothing_broken(&svc).await;
    assert_eq!(redis.client_count(), before, "a dry run must not reset connections");
    assert_eq!(get(&svc.url("/")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_fail_the_verdict_without_stopping_the_run() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let script = "expect(1 == 2, \"math is broken\");\nlog(\"still running\");\nexpect(true, \"fine\");";
    let r = run_and_wait(&svc, json!({"script": script})).await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["verdict"], "fail");
    assert!(r["reason"].as_str().unwrap().contains("math is broken"));
    assert_eq!(r["logs"][0]["message"], "still running");
    assert_eq!(r["expectations"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_run_first_newest_first_then_the_ledger_undoes_the_faults() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let script = r#"
        on_rollback(|| log("first rollback"));
        network_block();
        on_rollback(|| { log("second rollback"); network_clear(); });
        throw "boom";
    "#;
    let r = run_and_wait(&svc, json!({"script": script})).await;
    assert_eq!(r["status"], "failed");
    let actions: Vec<&str> = r["undo"].as_array().unwrap().iter().map(|u| u["action"].as_str().unwrap()).collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert!(actions[0].starts_with("on_rollback"));
    assert!(actions[1].starts_with("on_rollback"));
    assert!(actions[2].starts_with("clear network fault"));
    assert!(r["undo"].as_array().unwrap().iter().all(|u| u["ok"] == true), "{r:#}");
    let logs: Vec<&str> = r["logs"].as_array().unwrap().iter().filter_map(|l| l["message"].as_str()).collect();
    let (second, first) = (
        logs.iter().position(|m| *m == "second rollback").unwrap(),
        logs.iter().position(|m| *m == "first rollback").unwrap(),
    );
    assert!(second < first, "rollbacks run newest first: {logs:?}");
    // The second rollback cleared the block itself: the run's undo list reports that one undo.
    assert_eq!(r["undo"][2]["detail"], "cleared", "{r:#}");
    assert!(r["steps"].as_array().unwrap().iter().any(|s| s["name"] == "network_clear"), "{r:#}");
    assert_nothing_broken(&svc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_delivers_steps_in_order() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let script = "sleep(0.3);\nlog(\"a\");\nhealth();\nsleep(0.1);\nrecord(\"x\", 1);";
    let id = start_run(&svc, json!({"script": script})).await;
    let resp = http().get(svc.url(&format!("/chaos/runs/{id}/events"))).send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text =
        tokio::time::timeout(Duration::from_secs(10), resp.text()).await.expect("stream ends with the run").unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(
        names,
        vec![
            "run_started",
            "step_started",
            "step_finished",
            "log",
            "step_started",
            "step_finished",
            "step_started",
            "step_finished",
            "measurement",
            "run_finished"
        ],
        "{text}"
    );
    let seqs: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect();
    assert_eq!(seqs, vec![1, 1, 2, 2, 3, 3]);

    // Every event carries an SSE id: 1, 2, … in stream order, and `end` on the final one.
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    let expected: Vec<String> = (1..names.len()).map(|n| n.to_string()).chain(["end".to_string()]).collect();
    assert_eq!(ids, expected, "{text}");

    // A finished run's stream is one event holding the whole report.
    let text = http().get(svc.url(&format!("/chaos/runs/{id}/events"))).send().await.unwrap().text().await.unwrap();
    assert!(text.starts_with("event: run_finished"), "{text}");
    assert!(text.contains("id: end"), "{text}");
    // A client that has the end is told to stop reconnecting (EventSource closes on 204).
    let again =
        http().get(svc.url(&format!("/chaos/runs/{id}/events"))).header("last-event-id", "end").send().await.unwrap();
    assert_eq!(again.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_resume_after_last_event_id_without_replaying() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let script = "log(\"one\");\nlog(\"two\");\nlog(\"three\");\nsleep(1.5);\nlog(\"four\");";
    let id = start_run(&svc, json!({"script": script})).await;
    // Reconnect as EventSource would after having event 3 (the second log line), once event 4 (the
    // third) is there too.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let (_, r) = get(&svc.url(&format!("/chaos/runs/{id}"))).await;
            r["logs"].as_array().is_some_and(|l| l.len() >= 3)
        })
        .await,
        "the run did not log its three lines"
    );
    let resp =
        http().get(svc.url(&format!("/chaos/runs/{id}/events"))).header("last-event-id", "3").send().await.unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text()).await.expect("stream ends").unwrap();
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids.first(), Some(&"4"), "resumes after id 3: {text}");
    assert!(!text.contains("\"one\"") && !text.contains("\"two\""), "replayed what the client had: {text}");
    assert!(text.contains("\"three\"") && text.contains("\"four\""), "{text}");
    assert_eq!(ids.last(), Some(&"end"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_location_header_and_runs_list_pages_with_a_cursor() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let r = http().post(svc.url("/chaos/run")).json(&json!({"script": "log(1);"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let id = r.json::<serde_json::Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/chaos/runs/{id}"));
    assert_eq!(get(&svc.url(&location)).await.0, 200);
    wait_run(&svc, &id, Duration::from_secs(10)).await;
    for _ in 0..4 {
        run_and_wait(&svc, json!({"script": "log(1);"})).await;
    }
    // Five runs, pages of two: 2 + 2 + 1, newest first, none twice.
    let mut seen = Vec::new();
    let mut url = svc.url("/chaos/runs?limit=2");
    let mut pages = 0;
    loop {
        let r = http().get(&url).send().await.unwrap();
        let link = r.headers().get("link").map(|v| v.to_str().unwrap().to_string());
        let v: serde_json::Value = r.json().await.unwrap();
        pages += 1;
        seen.extend(v["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert!(link.unwrap().contains(&format!("cursor={c}")));
                url = svc.url(&format!("/chaos/runs?limit=2&cursor={c}"));
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "newest first, no run twice");
    assert_eq!(seen.len(), 5);
    for bad in ["0", "1001", "two"] {
        let (status, body) = get(&svc.url(&format!("/chaos/runs?limit={bad}"))).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("'limit'"), "{body}");
    }
    let (status, body) = get(&svc.url("/chaos/runs?cursor=..%2Fetc")).await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_catalog_reloads_added_changed_broken_and_removed_files() {
    let redis = RedisServer::start();
    let dir = temp_dir("catalog");
    let svc = TestService::start(redis.port, &["--scenarios-dir", dir.to_str().unwrap()]).await;
    let names = || async {
        let (_, v) = get(&svc.url("/chaos/scenarios")).await;
        v["scenarios"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert!(names().await.is_empty());

    let file = dir.join("probe.rhai");
    std::fs::write(
        &file,
        "//! description: First.\n//! param n = 2 // how many\nlet n = param(\"n\", 2);\nrecord(\"n\", n);\n",
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async { names().await == ["probe"] }).await,
        "added file not picked up"
    );
    let (_, s) = get(&svc.url("/chaos/scenarios/probe")).await;
    assert_eq!(s["description"], "First.");
    assert_eq!(s["params"][0]["name"], "n");
    assert_eq!(s["params"][0]["default"], 2);
    let r = run_and_wait(&svc, json!({"scenario": "probe", "params": {"n": "5"}})).await;
    assert_eq!(r["measurements"]["n"], 5, "string params are coerced to the default's type");

    std::fs::write(&file, "//! description: Second, longer.\nrecord(\"n\", 1);\n").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&svc.url("/chaos/scenarios/probe")).await.1["description"] == "Second, longer."
        })
        .await,
        "edit not picked up"
    );

    std::fs::write(&file, "//! description: Broken.\nlet x = ;\n").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(&svc.url("/chaos/scenarios/probe")).await.1["valid"] == false
        })
        .await
    );
    let (_, s) = get(&svc.url("/chaos/scenarios/probe")).await;
    assert_eq!(s["error"]["line"], 2);
    let (status, body) = post(&svc.url("/chaos/run"), r#"{"scenario": "probe"}"#).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "Bad Request", "does not compile");

    std::fs::remove_file(&file).unwrap();
    assert!(eventually(Duration::from_secs(5), || async { names().await.is_empty() }).await, "removal not picked up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix() {
    let redis = RedisServer::start();
    const TOKEN: &str = "s3cret-token-4d1f9a";
    let svc = service(&redis, &["--chaos-api-token", TOKEN]).await;
    let client = http();
    let run = |token: Option<&'static str>| {
        let mut r = client.post(svc.url("/chaos/run")).body("1");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = run(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(run(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(run(Some("s3cret-token-4d1f9a-and-more")).await.unwrap().status(), 401);
    assert_eq!(run(Some(&TOKEN[..15])).await.unwrap().status(), 401, "a prefix of the token");
    assert_eq!(run(Some(TOKEN)).await.unwrap().status(), 202);
    for scheme in ["bearer", "BEARER"] {
        let r = client.get(svc.url("/chaos/runs")).header("authorization", format!("{scheme} {TOKEN}")).send();
        assert_eq!(r.await.unwrap().status(), 200, "the {scheme} scheme is case-insensitive");
    }
    assert_eq!(get(&svc.url("/chaos/status")).await.0, 200, "status stays open");
    assert_eq!(post(&svc.url("/chaos/load"), "{}").await.0, 401, "built-in faults need the token too");
    assert_eq!(get(&svc.url("/chaos/runs")).await.0, 401);
    assert_eq!(get(&svc.url("/health")).await.0, 200, "the app itself is not behind the token");

    // No token and a non-loopback APP_HOST: scripts are refused, the original endpoints stay open.
    let open = service(&redis, &["--app-host", "0.0.0.0"]).await;
    let (status, body) = post(&open.url("/chaos/run"), r#"{"script": "1"}"#).await;
    assert_eq!(status, 403);
    assert_envelope(&body, "Forbidden", "CHAOS_API_TOKEN");
    assert_eq!(post(&open.url("/chaos/redis-reset"), "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_scenario_passes_on_a_healthy_service() {
    let redis = RedisServer::start();
    let svc = service(&redis, &[]).await;
    let cases = [
        ("cpu-pressure", json!({"level": "low", "seconds": 2, "samples": 2})),
        ("hang-and-recover", json!({"hang_s": 1, "recover_timeout_s": 10})),
        ("flaky-redis", json!({"rounds": 2, "latency_ms": 50, "requests": 2, "pause_s": 0.2, "recover_timeout_s": 10})),
        ("replica-hang", json!({"seconds": 2, "probe_s": 1, "settle_s": 1})),
    ];
    for (name, params) in cases {
        let r = run_and_wait(&svc, json!({"scenario": name, "params": params})).await;
        assert_eq!(r["status"], "succeeded", "{name}: {r:#}");
        assert!(!r["measurements"].as_object().unwrap().is_empty(), "{name} recorded nothing");
        assert_nothing_broken(&svc).await;
    }
}
