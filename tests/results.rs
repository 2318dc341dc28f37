//! Seeing a run, from the user's side (issue 12): a guard over the run's own live load aborts
//! it and undoes every fault within a second; the journal has the per-second series, the fault
//! bands and the impact; the report is one offline HTML page that a real browser (Debian's
//! headless chromium) renders. Screenshots are kept under `target/screenshots/`.

use chaos_lab_testkit as common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::browser::{Browser, png_stats};
use common::*;
use futures::StreamExt as _;
use serde_json::{Value, json};

fn at(ts: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(ts.as_str().unwrap_or_else(|| panic!("not a timestamp: {ts}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// Reads a run's event stream to its end; returns the event names in order.
async fn event_names(svc: &TestService, id: &str) -> Vec<String> {
    let r =
        http().get(svc.url(&format!("/chaos/runs/{id}/events"))).timeout(Duration::from_secs(90)).send().await.unwrap();
    let mut text = String::new();
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text.lines().filter_map(|l| l.strip_prefix("event:")).map(|n| n.trim().to_string()).collect()
}

/// Where the test keeps its screenshots (CI artefacts).
fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The report page references nothing on the internet, nor anything else: no script,
/// stylesheet, image, frame or font to fetch. (Text may mention URLs: the load's target host.)
fn assert_offline(html: &str) {
    for needle in ["<script", "<link", "<img", "<iframe", "<object", "@import", "src=", "url(", "href="] {
        assert!(!html.contains(needle), "the report contains {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_aborts_a_run_that_hurts_users_and_the_report_shows_it() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let script = r#"
guard(#{error_rate_pct: 5.0, window_s: 5, min_requests: 10});
let lg = loadgen_start(#{profile: "sustained", rate: 40, time_scale: 1});
sleep(3.0);
network_block();
redis_reset();
sleep(60.0);
"#;
    let id = start_run(&svc, json!({"script": script})).await;
    let events = event_names(&svc, &id).await;
    assert!(events.iter().any(|e| e == "breach"), "no breach event on the stream: {events:?}");
    let (_, r) = get(&svc.url(&format!("/chaos/runs/{id}"))).await;

    assert_eq!(r["status"], "aborted", "{r:#}");
    assert_eq!(r["verdict"], "fail");
    assert!(r["duration_s"].as_f64().unwrap() < 30.0, "ended well before the sleep: {}", r["duration_s"]);
    let b = &r["breach"];
    assert_eq!(b["metric"], "error_rate_pct", "{b}");
    assert!(b["observed"].as_f64().unwrap() > 5.0 && b["threshold"] == 5.0, "{b}");
    assert!(b["requests"].as_u64().unwrap() >= 10, "{b}");
    assert_eq!(b["guard"]["source"], "script line 2", "{b}");
    assert!(r["reason"].as_str().unwrap().contains("aborted by a guard"), "{}", r["reason"]);

    // Breach → every fault undone, in the journal's own timestamps.
    let undos: Vec<&Value> = r["undo"].as_array().unwrap().iter().filter(|u| u["fault_id"].is_string()).collect();
    assert!(undos.len() >= 2, "the block and the loadgen are undone: {:#}", r["undo"]);
    assert!(undos.iter().all(|u| u["ok"] == true), "{:#}", r["undo"]);
    let last = undos.iter().map(|u| at(&u["at"])).max().unwrap();
    let took = (last - at(&b["at"])).num_milliseconds();
    eprintln!("breach → last undo: {took} ms");
    assert!((0..1000).contains(&took), "breach → last undo took {took} ms: {r:#}");
    assert_nothing_broken(&svc).await;

    // The journal: series, bands, impact.
    let load = r["series"]["load"].as_array().unwrap();
    assert!(load.len() >= 3, "per-second load points: {load:?}");
    assert!(load.iter().all(|p| p["loadgen"] == "loadgen-1" && p["t"].is_number() && p["p95_ms"].is_number()));
    assert!(load.iter().any(|p| p["failures"].as_u64().unwrap() > 0), "the outage shows as failures");
    assert!(load[0]["endpoints"].is_object(), "{}", load[0]);
    let health = r["series"]["health"].as_array().unwrap();
    assert!(
        health.iter().any(|h| h["state"] == "healthy") && health.iter().any(|h| h["state"] != "healthy"),
        "{health:?}"
    );
    let faults = r["faults"].as_array().unwrap();
    let block = faults.iter().find(|f| f["kind"] == "network_block").unwrap_or_else(|| panic!("{faults:?}"));
    assert!(block["undone_s"].as_f64().unwrap() >= block["applied_s"].as_f64().unwrap(), "{block}");
    assert_eq!(block["line"], 5, "{block}");
    let i = &r["impact"];
    assert!(i["time_to_detect_s"].as_f64().is_some_and(|t| (0.0..20.0).contains(&t)), "{i}");
    assert!(i["requests"].as_u64().unwrap() > 0 && i["failures"].as_u64().unwrap() > 0, "{i}");
    assert!(i["error_budget_burned_pct"].as_f64().unwrap() > 0.0, "{i}");

    // The report: one offline page with the picture.
    let resp = http().get(svc.url(&format!("/chaos/runs/{id}/report"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("<svg"), "no SVG timeline");
    assert!(html.contains("band band-network_block"), "no band for the block");
    assert!(html.contains("marker-breach"), "no breach marker");
    assert!(html.contains("Time to detect") || html.contains("time to detect"));
    assert_offline(&html);

    // A real browser renders it.
    let profile = temp_dir("chromium");
    let browser = Browser::launch(&profile).await;
    let png = browser.screenshot(&svc.url(&format!("/chaos/runs/{id}/report"))).await;
    std::fs::write(screenshot_path("run-report-aborted.png"), &png).unwrap();
    let (w, h, drawn) = png_stats(&png);
    assert!(w >= 1000 && h >= 600, "screenshot is {w}x{h}");
    assert!(drawn > 0.03, "the screenshot is blank: {:.4} of its pixels differ from the background", drawn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_within_its_guards_measures_detection_and_recovery() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let script = r#"
let lg = loadgen_start(#{profile: "sustained", rate: 20, time_scale: 1});
sleep(2.0);
network_block();
redis_reset();
sleep(3.0);
network_clear();
let back = wait_until(|| health().ok, 20);
sleep(2.0);
"#;
    // A guard from the request that never fires.
    let body = json!({"script": script, "guards": [{"p95_ms": 60000, "window_s": 5}]});
    let r = http().post(svc.url("/chaos/run?wait=true")).json(&body).send().await.unwrap();
    let r: Value = r.json().await.unwrap();
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert!(r["breach"].is_null());
    assert_eq!(r["guards"][0]["source"], "request");
    let i = &r["impact"];
    assert_eq!(i["detected_by"], "unhealthy", "{i}");
    let ttd = i["time_to_detect_s"].as_f64().unwrap();
    let ttr = i["time_to_recover_s"].as_f64().unwrap_or_else(|| panic!("no time to recover: {i}"));
    eprintln!("time to detect {ttd} s, time to recover {ttr} s");
    assert!((0.0..5.0).contains(&ttd) && (0.0..20.0).contains(&ttr), "{i}");
    assert!(i["error_budget_burned_pct"].is_null(), "no error-rate guard: {i}");
    let html = http().get(svc.url(&format!("/chaos/runs/{}/report", r["run_id"].as_str().unwrap()))).send().await;
    let html = html.unwrap().text().await.unwrap();
    assert!(html.contains("band band-network_block") && !html.contains("marker-breach"));
    assert_offline(&html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_guards_are_refused_with_the_field_and_the_line() {
    let redis = RedisServer::start();
    let scenarios = temp_dir("guard-scenarios");
    std::fs::write(
        scenarios.join("guarded.rhai"),
        "//! description: held to a guard\n//! guard: #{unhealthy_s: 3}\nsleep(0.1);\n",
    )
    .unwrap();
    std::fs::write(scenarios.join("typo.rhai"), "//! description: a typo\n//! guard: #{p99_ms: 3}\nsleep(0.1);\n")
        .unwrap();
    let svc = TestService::start(redis.port, &["--scenarios-dir", scenarios.to_str().unwrap()]).await;

    let (code, body) = post(
        &svc.url("/chaos/run"),
        r#"{"script": "sleep(0.1);", "guards": [{"error_rate_pct": 5}, {"window_s": 5}]}"#,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_envelope(&body, "Bad Request", "guards[1]: a guard needs at least one of p95_ms");
    let (code, body) = post(&svc.url("/chaos/run"), r#"{"script": "sleep(0.1);", "guards": [{"p95_ms": -1}]}"#).await;
    assert_eq!(code, 400, "{body}");
    assert_envelope(&body, "Bad Request", "guards[0]: p95_ms must be a number of milliseconds more than 0");

    // In a script: the run fails at the guard's line.
    let r = run_and_wait(&svc, json!({"script": "sleep(0.1);\nguard(#{error_rate_pct: 5, window: 3});"})).await;
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["error"]["line"], 2);
    assert!(r["error"]["message"].as_str().unwrap().contains("unknown guard option 'window'"), "{r:#}");

    // In a scenario header: listed with the scenario, and every run of it is held to it.
    let (_, list) = get(&svc.url("/chaos/scenarios")).await;
    let all = list["scenarios"].as_array().unwrap_or_else(|| panic!("{list}"));
    let guarded = all.iter().find(|s| s["name"] == "guarded").unwrap();
    assert_eq!(guarded["guards"][0]["unhealthy_s"], 3.0, "{guarded}");
    let typo = all.iter().find(|s| s["name"] == "typo").unwrap();
    assert_eq!(typo["valid"], false);
    assert_eq!(typo["error"]["line"], 2, "{typo}");
    assert!(typo["error"]["message"].as_str().unwrap().contains("unknown guard option 'p99_ms'"), "{typo}");
    let r = run_and_wait(&svc, json!({"scenario": "guarded"})).await;
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert_eq!(r["guards"][0]["source"], "scenario header line 2", "{r:#}");
    assert!(r["impact"].is_null(), "no fault, no impact: {r:#}");
}
