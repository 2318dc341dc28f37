//! The `chaos-lab` binary itself: configuration errors, `--help`, and SIGTERM during a permanent
//! hang and a load.

use chaos_lab_testkit as common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Runs `chaos-lab args…` to its end (a minute at most).
fn chaos_lab(args: &[&str]) -> Output {
    output("chaos-lab", Command::new(chaos_lab_bin()).args(args), Duration::from_secs(60))
}

/// Runs the binary with one extra environment variable and expects it to refuse to start.
fn refused_start(var: &str, value: &str) -> String {
    refused_start_with(&[(var, value)])
}

/// Runs the binary with extra environment variables and expects it to refuse to start.
fn refused_start_with(vars: &[(&str, &str)]) -> String {
    let shown: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut child = Proc::spawn(
        "chaos-lab",
        Command::new(chaos_lab_bin())
            .env("APP_PORT", "0") // should it start after all, it must not collide with anything
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = child.child_mut().stderr.take().unwrap();
    let status = child.wait_within_blocking(Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("{} was accepted: the service started", shown.join(" ")));
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    err
}

#[test]
fn invalid_settings_stop_startup_naming_the_variable() {
    let err = refused_start("REDIS_PORT", "six");
    assert!(err.contains("REDIS_PORT must be a port number from 1 to 65535, got 'six'"), "{err}");
    let err = refused_start("LOG_LEVEL", "verbose");
    assert!(err.contains("LOG_LEVEL must be one of trace, debug, info, warn, error"), "{err}");
    let err = refused_start("REDIS_MAX_CONNECTIONS", "0");
    assert!(err.contains("REDIS_MAX_CONNECTIONS"), "{err}");
    let err = refused_start("REDIS_USERNAME", "app");
    assert!(err.contains("REDIS_USERNAME is set but REDIS_PASSWORD is not"), "{err}");
    let err = refused_start("RUNS_RETAIN", "0");
    assert!(err.contains("RUNS_RETAIN"), "{err}");
}

#[test]
fn an_empty_or_short_api_token_stops_startup() {
    let err = refused_start("CHAOS_API_TOKEN", "");
    assert!(err.contains("CHAOS_API_TOKEN is empty"), "{err}");
    let err = refused_start("CHAOS_API_TOKEN", "short");
    assert!(err.contains("CHAOS_API_TOKEN is 5 characters long, shorter than the minimum of 16"), "{err}");
    assert!(err.contains("openssl rand -hex 32"), "{err}");
    // The original hole: an empty token turned auth off and lifted the non-loopback guard of
    // POST /chaos/run.
    let err = refused_start_with(&[("APP_HOST", "0.0.0.0"), ("CHAOS_API_TOKEN", "")]);
    assert!(err.contains("CHAOS_API_TOKEN is empty"), "{err}");
}

#[test]
fn help_documents_every_setting() {
    let out = chaos_lab(&["--help"]);
    assert!(out.status.success());
    // clap wraps long lines; compare with the whitespace folded.
    let help = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    for var in [
        "APP_HOST",
        "APP_PORT",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "HEALTH_CACHE_TTL_SECONDS",
        "REQUEST_COUNTER_SAMPLE_RATE",
        "REDIS_ENABLED",
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_SSL",
        "REDIS_MAX_CONNECTIONS",
        "REDIS_SOCKET_TIMEOUT",
        "REDIS_SOCKET_CONNECT_TIMEOUT",
        "REDIS_MAX_RETRIES",
        "REDIS_BACKOFF_BASE",
        "REDIS_BACKOFF_CAP",
        "REDIS_PASSWORD",
        "REDIS_USERNAME",
        "REDIS_CA_CERT",
        "RUNS_RETAIN",
        "RUN_MAX_LOG_LINES",
        "RUN_MAX_LOG_BYTES",
        "RUN_MAX_STEPS",
        "RUN_MAX_RECORDS",
        "RUN_MAX_EVENTS",
    ] {
        assert!(help.contains(&format!("[env: {var}")), "--help does not mention {var}");
    }
}

/// The binary on a free port against Redis on `redis_port`, with RUNS_DIR `runs`.
async fn service_process(redis_port: u16, runs: &std::path::Path) -> ServiceProcess {
    ServiceProcess::start(runs, &[("REDIS_PORT", redis_port.to_string())]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_permanent_hang_and_a_load_exits_within_seconds() {
    let redis = RedisServer::start();
    let mut svc = service_process(redis.port, &temp_dir("sigterm-hang-runs")).await;
    let url = svc.url.clone();

    let (status, _) = post(&format!("{url}/chaos/load"), r#"{"level": "high", "duration_seconds": 600}"#).await;
    assert_eq!(status, 200);
    let hang_url = format!("{url}/chaos/hang");
    let hang = tokio::spawn(async move { post(&hang_url, r#"{"duration_seconds": 0}"#).await });
    let hung = eventually(Duration::from_secs(10), || async { svc.status().await["hang"]["active"] == true });
    assert!(hung.await, "the hang did not start");
    let stalled_url = format!("{url}/");
    let stalled = tokio::spawn(async move { get(&stalled_url).await });
    // The request must be accepted and held, not still in the listen backlog (shutdown would
    // refuse that one, not drain it).
    let held = eventually(Duration::from_secs(10), || async { svc.status().await["hang"]["held_requests"] == 1 });
    assert!(held.await, "GET / is not held by the app hang");
    assert!(!stalled.is_finished(), "GET / should be stalled by the app hang");

    let exit = svc.sigterm(Duration::from_secs(4)).await;
    let exit = exit.expect("still running 4 s after SIGTERM (drain deadline is 5 s)");
    assert!(exit.success(), "exit status {exit:?}");
    assert_eq!(stalled.await.unwrap().0, 200, "in-flight request was not allowed to finish");
    assert_eq!(hang.await.unwrap().1["interrupted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run_undoes_its_faults_and_journals_it() {
    let redis = RedisServer::start();
    let runs = temp_dir("sigterm-runs");
    let mut svc = service_process(redis.port, &runs).await;
    let url = svc.url.clone();
    let script = "network_block();\nload(\"low\", 600);\nsleep(600);";
    let r = http().post(format!("{url}/chaos/run")).body(script).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    let faulted = || async {
        let s = svc.status().await;
        s["network"]["blocked"] == true && s["load"]["active"] == true
    };
    assert!(eventually(Duration::from_secs(10), faulted).await, "the run's faults are not in force");

    assert!(svc.sigterm(Duration::from_secs(5)).await.is_some(), "still running 5 s after SIGTERM");
    let journal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(format!("{id}.json"))).unwrap()).unwrap();
    assert_eq!(journal["status"], "cancelled", "{journal:#}");
    assert!(journal["reason"].as_str().unwrap().contains("shutting down"));
    let undo: Vec<(&str, bool)> = journal["undo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["action"].as_str().unwrap(), u["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(undo.len(), 2, "{undo:?}");
    assert_eq!(undo[0], ("stop the load", true));
    assert!(undo[1].0.starts_with("clear network fault") && undo[1].1, "{undo:?}");
}

#[test]
fn check_reports_positions_and_exit_codes() {
    let dir = temp_dir("check");
    let good = dir.join("good.rhai");
    std::fs::write(&good, "//! description: fine\nlog(\"hi\");\nsleep(1);\n").unwrap();
    let out = chaos_lab(&["check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    let bad = dir.join("bad.rhai");
    std::fs::write(&bad, "//! description: typo\nlog(\"hi\");\nnetwork_blok();\n").unwrap();
    let out = chaos_lab(&["check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.rhai:3:1: unknown function 'network_blok'"), "{text}");

    let broken = dir.join("broken.rhai");
    std::fs::write(&broken, "//! description: syntax\nlet x = ;\n").unwrap();
    let out = chaos_lab(&["check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("broken.rhai:2:"));

    // The shipped scenarios are clean.
    for entry in std::fs::read_dir(repo_scenarios()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rhai") {
            continue;
        }
        let out = chaos_lab(&["check", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stdout));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_streams_the_timeline_and_exits_by_verdict() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &["--chaos-api-token", "cli-run-token-0123"]).await;
    let dir = temp_dir("cli-run");
    let pass = dir.join("pass.rhai");
    std::fs::write(&pass, "let n = param(\"n\", 1);\nlog(`n is ${n}`);\nexpect(health().ok, \"healthy\");\n").unwrap();
    let fail = dir.join("fail.rhai");
    std::fs::write(&fail, "expect(false, \"deliberately failing\");\n").unwrap();

    let run = |file: std::path::PathBuf, extra: Vec<String>| {
        let url = svc.url.clone();
        let mut cmd = Command::new(chaos_lab_bin());
        cmd.args(["run", file.to_str().unwrap(), "--url", &url, "--token", "cli-run-token-0123"]).args(extra);
        tokio::spawn(output_async("chaos-lab run", cmd, Duration::from_secs(120)))
    };
    let out = run(pass, vec!["--param".into(), "n=7".into()]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("log: n is 7"), "{text}");
    assert!(text.contains("> health()"), "{text}");
    assert!(text.contains("succeeded"), "{text}");

    let out = run(fail, vec![]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("expect FAILED: deliberately failing"), "{text}");

    let bad = dir.join("bad.rhai");
    std::fs::write(&bad, "let = ;\n").unwrap();
    let out = run(bad, vec![]).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.rhai:1:"), "{}", String::from_utf8_lossy(&out.stderr));

    // A guard from the command line aborts the run; the impact is printed, the report written.
    let outage = dir.join("outage.rhai");
    std::fs::write(&outage, "network_block();\nredis_reset();\nsleep(30.0);\n").unwrap();
    let page = dir.join("report.html");
    let args = |g: &str| vec!["--guard".to_string(), g.to_string(), "--report".into(), page.display().to_string()];
    let out = run(outage.clone(), args(r#"{"unhealthy_s": 2}"#)).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("! guard breached: unhealthy_s"), "{text}");
    assert!(text.contains("aborted"), "{text}");
    assert!(text.contains("impact: time to detect"), "{text}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && html.contains("band band-network_block"), "{html}");
    // Bad guards: not JSON, or an unknown option (refused by the service, nothing runs).
    let out = run(outage.clone(), args("{unhealthy_s: 2}")).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--guard #1 is not JSON"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(outage, args(r#"{"unhealthy": 2}"#)).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("guards[0]: unknown guard option 'unhealthy'"), "{err}");
}

/// Owned arguments for the binary.
fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `s` as it must appear in an XML attribute (what `chaos-lab run --junit` writes).
fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('\n', "&#10;")
}

/// Every `&` in `s` starts one of XML's entities or a character reference.
fn assert_entities(s: &str, xml: &str) {
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        let after = &rest[amp + 1..];
        let semi = after.find(';').unwrap_or_else(|| panic!("a bare & in {xml}"));
        let name = &after[..semi];
        let known = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
            || name.strip_prefix('#').is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        assert!(known, "unknown entity &{name}; in {xml}");
        rest = &after[semi + 1..];
    }
}

/// `name="value"` pairs, each quoted, with valid entities and no `<`, no name twice.
fn assert_attributes(attrs: &str, xml: &str) {
    let mut names: Vec<&str> = Vec::new();
    let mut rest = attrs.trim_start();
    while !rest.is_empty() {
        let (name, tail) = rest.split_once("=\"").unwrap_or_else(|| panic!("attribute without a quoted value: {rest}"));
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}: {xml}");
        assert!(!names.contains(&name), "attribute {name} twice in {xml}");
        names.push(name);
        let end = tail.find('"').unwrap_or_else(|| panic!("unterminated attribute {name} in {xml}"));
        assert!(!tail[..end].contains('<'), "a < in attribute {name} of {xml}");
        assert_entities(&tail[..end], xml);
        rest = tail[end + 1..].trim_start();
    }
}

/// A small well-formedness check of what `--junit` writes: the XML declaration, one root element,
/// every element closed in order, attributes quoted, text and attribute values properly escaped.
fn assert_well_formed_xml(xml: &str) {
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .unwrap_or_else(|| panic!("no XML declaration: {xml}"));
    let mut open: Vec<&str> = Vec::new();
    let mut roots = 0;
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        assert!(!open.is_empty() || text.trim().is_empty(), "text outside the root element: {xml}");
        assert_entities(text, xml);
        let gt = lt + rest[lt..].find('>').unwrap_or_else(|| panic!("unclosed tag in {xml}"));
        let tag = &rest[lt + 1..gt];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name), "</{name}> closes the wrong element in {xml}");
        } else {
            let empty = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, attrs) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()), "bad tag <{tag}> in {xml}");
            assert_attributes(attrs, xml);
            if open.is_empty() {
                roots += 1;
            }
            if !empty {
                open.push(name);
            }
        }
        rest = &rest[gt + 1..];
    }
    assert!(rest.trim().is_empty(), "text after the root element: {xml}");
    assert!(open.is_empty(), "unclosed elements {open:?} in {xml}");
    assert_eq!(roots, 1, "{xml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_by_name_writes_the_journal_and_a_junit_file() {
    const TOKEN: &str = "cli-junit-token-0123";
    let redis = RedisServer::start();
    let scenarios = repo_scenarios();
    let svc = TestService::start(redis.port, &["--chaos-api-token", TOKEN, "--scenarios-dir", &scenarios]).await;
    let dir = temp_dir("cli-junit");
    let path = |name: &str| dir.join(name).display().to_string();
    let run = |target: String, extra: Vec<String>| {
        let url = svc.url.clone();
        let mut cmd = Command::new(chaos_lab_bin());
        cmd.args(["run", &target, "--url", &url, "--token", TOKEN]).args(extra);
        tokio::spawn(output_async("chaos-lab run", cmd, Duration::from_secs(120)))
    };
    let read_json = |file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap_or_else(|e| panic!("{file}: {e}"))
    };

    // A shipped scenario by name, as a dry run: flaky-redis passes without anything applied.
    let (journal, junit) = (path("flaky-redis.json"), path("flaky-redis.xml"));
    let mut args = strings(&["--dry-run", "--journal", journal.as_str(), "--junit", junit.as_str()]);
    for p in ["rounds=2", "latency_ms=50", "requests=2", "pause_s=0.2", "recover_timeout_s=10"] {
        args.extend(strings(&["--param", p]));
    }
    let out = run("flaky-redis".into(), args).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("dry run: not applied"), "{text}");
    let j = read_json(&journal);
    let id = j["run_id"].as_str().unwrap().to_string();
    assert!(text.contains(&format!("run {id} started (dry run)")), "{text}");
    assert!(text.contains(&format!("run {id}: succeeded")), "{text}");
    assert_eq!(j["status"], "succeeded", "{j:#}");
    assert_eq!(j["scenario"], "flaky-redis");
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["params"]["rounds"], 2);
    let served: serde_json::Value = http()
        .get(svc.url(&format!("/chaos/runs/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in ["run_id", "status", "verdict", "reason", "expectations", "steps"] {
        assert_eq!(served[key], j[key], "{key}");
    }
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_well_formed_xml(&xml);
    let expectations = j["expectations"].as_array().unwrap();
    let n = expectations.len();
    assert!(n >= 2, "{j:#}");
    assert_eq!(xml.matches("<testcase ").count(), n, "{xml}");
    assert!(xml.contains(&format!("<testsuite name=\"flaky-redis\" tests=\"{n}\" failures=\"0\"")), "{xml}");
    assert!(xml.contains(&format!("time=\"{:.3}\"", j["duration_s"].as_f64().unwrap())), "{xml}");
    for x in expectations {
        let name = xml_attr(x["message"].as_str().unwrap());
        assert!(xml.contains(&format!("<testcase classname=\"flaky-redis\" name=\"{name}\"/>")), "{name}: {xml}");
    }
    assert!(!xml.contains("<failure"), "{xml}");

    // A failing expect(): a <failure> with the message, exit 1; a duration with a unit is taken.
    let failing = dir.join("failing.rhai");
    std::fs::write(
        &failing,
        "expect(true, \"baseline\");\nexpect(1 > 2, \"one is <more> than two & 'that' fails\");\n",
    )
    .unwrap();
    let (journal, junit) = (path("failing.json"), path("failing.xml"));
    let args = strings(&["--timeout-seconds", "5m", "--journal", journal.as_str(), "--junit", junit.as_str()]);
    let out = run(failing.display().to_string(), args).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("expect FAILED: one is <more> than two"), "{text}");
    let j = read_json(&journal);
    assert_eq!(j["status"], "failed", "{j:#}");
    assert_eq!(j["timeout_seconds"], 300);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_well_formed_xml(&xml);
    assert!(xml.contains("<testsuite name=\"failing\" tests=\"2\" failures=\"1\""), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
    assert!(xml.contains("<testcase classname=\"failing\" name=\"baseline\"/>"), "{xml}");
    let message = xml_attr("one is <more> than two & 'that' fails");
    assert!(xml.contains(&format!("<failure message=\"{message}\" type=\"expect\">")), "{xml}");
    assert!(!xml.contains("name=\"run\""), "a failed expect() alone adds no run testcase: {xml}");

    // Timed out (--timeout, 1s): the run's own failed testcase carries the reason.
    let slow = dir.join("slow.rhai");
    std::fs::write(&slow, "expect(true, \"started\");\nsleep(30);\n").unwrap();
    let (journal, junit) = (path("slow.json"), path("slow.xml"));
    let args = strings(&["--timeout", "1s", "--journal", journal.as_str(), "--junit", junit.as_str()]);
    let out = run(slow.display().to_string(), args).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let j = read_json(&journal);
    assert_eq!(j["status"], "timed_out", "{j:#}");
    assert_eq!(j["timeout_seconds"], 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_well_formed_xml(&xml);
    assert!(xml.contains("<testsuite name=\"slow\" tests=\"2\" failures=\"1\""), "{xml}");
    assert!(xml.contains("<testcase classname=\"slow\" name=\"started\"/>"), "{xml}");
    assert!(xml.contains("<testcase classname=\"slow\" name=\"run\">"), "{xml}");
    assert!(xml.contains("<failure message=\"the run exceeded its timeout_seconds\" type=\"timed_out\">"), "{xml}");

    // Refused: an unknown scenario, an undeclared parameter; the service's message, exit 2.
    let out = run("no-such-scenario".into(), vec![]).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no scenario named 'no-such-scenario'; known: ") && err.contains("flaky-redis"), "{err}");
    let out = run("flaky-redis".into(), strings(&["--param", "nope=1"])).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("scenario 'flaky-redis' has no parameter 'nope'"), "{err}");
}

#[test]
fn duration_flags_refuse_nonsense_with_the_accepted_forms() {
    // clap wraps long lines; compare with the whitespace folded.
    let refused = |args: &[&str]| {
        let out = chaos_lab(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let err = refused(&["run", "anything.rhai", "--timeout-seconds", "5x"]);
    assert!(err.contains("invalid value '5x' for '--timeout-seconds <DURATION>'"), "{err}");
    assert!(err.contains("'5x' is not a duration: use seconds (30), or a number with a unit: 500ms, 30s, 5m"), "{err}");
    let err = refused(&["run", "anything.rhai", "--timeout", "1.5s"]);
    assert!(err.contains("'1.5s' must be a whole number of seconds"), "{err}");
    let err = refused(&["network", "inject", "--duration", "5x"]);
    assert!(err.contains("'5x' is not a duration"), "{err}");
    let err = refused(&["network", "inject", "--duration", "25h"]);
    assert!(err.contains("'25h' is out of range"), "{err}");
}
