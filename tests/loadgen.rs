//! `loadgen` end to end: the real binary runs each shared profile, scaled down, against the real
//! service (real redis-server); thresholds set the exit code; the open model keeps its clock;
//! reports from several machines merge; scripts start, stop and cancel it as a child process.
//! Its command line: goose options that cannot work are hidden and refused, durations take units,
//! reports are written only where asked, and the live line stays on stderr (on a terminal, or with
//! `--live`; never with `--quiet`).

use chaos_lab_testkit as common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn loadgen(args: &[&str]) -> Command {
    let mut cmd = Command::new(loadgen_bin());
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("LOADGEN_PROFILES_DIR").args(args);
    cmd
}

/// Runs `cmd` (loadgen, or a terminal running it) to its end, a minute at most.
fn within_a_minute(mut cmd: Command) -> Output {
    output("loadgen", &mut cmd, Duration::from_secs(60))
}

/// Runs `loadgen` with reports in `dir`, a minute at most; returns the output and the report.
fn run(dir: &Path, name: &str, args: &[&str]) -> (Output, Value) {
    let json = dir.join(format!("{name}.json"));
    let html = dir.join(format!("{name}.html"));
    let mut cmd = loadgen(args);
    cmd.args(["--json", json.to_str().unwrap(), "--report-file", html.to_str().unwrap(), "--quiet"]);
    let out = within_a_minute(cmd);
    let report = std::fs::read_to_string(&json).map(|t| serde_json::from_str(&t).unwrap()).unwrap_or(Value::Null);
    (out, report)
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The report's per-second series adds up to its totals, and its HTML page draws it with
/// nothing fetched (goose's own page pulls its chart library from a CDN).
fn assert_series_and_offline_chart(report: &Value, html: &str) {
    let series = report["series"].as_array().unwrap_or_else(|| panic!("no series: {report:#}"));
    assert!(!series.is_empty(), "{report:#}");
    let sum: u64 = series.iter().map(|s| s["requests"].as_u64().unwrap()).sum();
    assert_eq!(sum, report["totals"]["requests"].as_u64().unwrap(), "every request is in one second: {series:?}");
    assert!(series.iter().all(|s| s["t"].as_f64().unwrap() > 0.0 && s["p95_ms"].is_number()), "{series:?}");
    assert!(series.iter().all(|s| s["histogram"].is_null()), "histograms stay on the progress channel");
    assert!(html.contains("<svg") && html.contains("class=\"line\""), "no chart in the HTML report");
    for needle in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(needle), "the HTML report contains {needle:?}");
    }
}

fn endpoint<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap_or_else(|| {
        panic!("no {name} in {report:#}");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_runs_scaled_down_with_its_plan_and_reports_each_endpoint() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let dir = temp_dir("loadgen-profiles");
    // (profile, scale, time scale, most users the scaled plan reaches)
    let cases = [("staged", "0.01", "0.005", 10), ("spike", "0.01", "0.05", 50), ("sustained", "0.02", "0.005", 10)];
    let host = svc.url("");
    let runs: Vec<_> = cases
        .iter()
        .map(|&(profile, scale, time, _)| {
            let (dir, host) = (dir.clone(), host.clone());
            std::thread::spawn(move || {
                run(&dir, profile, &["--profile", profile, "--scale", scale, "--time-scale", time, "--host", &host])
            })
        })
        .collect();
    for ((profile, _, _, users), handle) in cases.iter().zip(runs) {
        let (out, report) = handle.join().unwrap();
        assert!(out.status.success(), "{profile}: {}", text(&out));
        assert_eq!(report["profile"], *profile);
        assert_eq!(report["model"], "closed");
        assert_eq!(report["max_users"], *users, "{profile}: {report:#}");
        assert_eq!(report["passed"], true);
        assert_eq!(report["totals"]["failures"], 0, "{profile}: {report:#}");
        // The spike's 50 users with 0.1-0.5 s think time reach every endpoint; the others may
        // not call /chaos/status (weight 1 of 9) in 3 s, but always call / and /health.
        let names: &[&str] = if *profile == "spike" {
            &["GET /", "GET /health", "GET /chaos/status"]
        } else {
            &["GET /", "GET /health"]
        };
        for name in names {
            let e = endpoint(&report, name);
            assert!(e["requests"].as_u64().unwrap() > 0, "{profile} {name}: {e}");
            assert!(
                e["p95_ms"].as_f64().unwrap() > 0.0 && e["p99_ms"].as_f64().unwrap() >= e["p50_ms"].as_f64().unwrap()
            );
            assert!(e["status_codes"]["200"].as_u64().unwrap() > 0);
        }
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("p95 ms") && summary.contains("result: PASS"), "{summary}");
        let html = std::fs::read_to_string(dir.join(format!("{profile}.html"))).unwrap();
        assert_series_and_offline_chart(&report, &html);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_threshold_exits_non_zero() {
    let mut redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    redis.stop(); // every /health and GET / now fails
    let dir = temp_dir("loadgen-threshold");
    let host = svc.url("");
    let (out, report) = tokio::task::spawn_blocking(move || {
        run(&dir, "down", &["--profile", "sustained", "--scale", "0.02", "--time-scale", "0.005", "--host", &host])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(report["passed"], false);
    let rule = report["thresholds"].as_array().unwrap().iter().find(|t| t["rule"] == "error-rate<1%").unwrap();
    assert_eq!(rule["passed"], false, "{rule}");
    assert!(endpoint(&report, "GET /health")["failures"].as_u64().unwrap() > 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("result: FAIL"));

    // A rule given on the command line replaces the defaults, and a broken one is refused.
    let (out, _) = run(&temp_dir("loadgen-rule"), "bad", &["--threshold", "p95<<1", "--host", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_keeps_its_rate_and_reports_late_and_dropped() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let dir = temp_dir("loadgen-open");
    let dir_open = dir.clone();
    let host = svc.url("");
    let (out, report) = tokio::task::spawn_blocking(move || {
        run(&dir, "open", &["--profile", "sustained", "--time-scale", "0.005", "--rate", "300", "--host", &host])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report["model"], "open");
    let open = &report["open_model"];
    // The rate it keeps is a performance figure: bench/loadgen.sh measures it. Here: the report
    // says what was asked and what was delivered.
    let target = open["target_rps"].as_f64().unwrap();
    assert!(target > 0.0 && target <= 300.0, "target {target} rps for --rate 300: {open}");
    assert!(open["delivered_rps"].as_f64().unwrap() > 0.0, "{open}");
    assert_eq!(open["dropped"], 0, "{open}");
    assert!(open["late"].is_u64() && open["scheduled"].as_u64().unwrap() > 800, "{open}");
    assert_eq!(report["totals"]["requests"], open["sent"]);
    let html_path = dir_open.join("open.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_series_and_offline_chart(&report, &html);
    // A real browser draws it from the file, offline.
    let browser = common::browser::Browser::launch(&temp_dir("loadgen-chromium")).await;
    let png = browser.screenshot(&format!("file://{}", html_path.display())).await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("loadgen-report-open.png"), &png).unwrap();
    let (_, _, drawn) = common::browser::png_stats(&png);
    assert!(drawn > 0.02, "the loadgen report renders blank: {drawn:.4}");

    // Per-stage rates from the profile (rate-ramp: 100, 500, 100 req/s over 30, 60, 30 s), scaled:
    // rates x 0.5 and durations x 0.02 give 0.6 s at 50, 1.2 s at 250, 0.6 s at 50 = 360 arrivals.
    let (dir, host) = (temp_dir("loadgen-rate-ramp"), svc.url(""));
    let (out, report) = tokio::task::spawn_blocking(move || {
        run(&dir, "ramp", &["--profile", "rate-ramp", "--scale", "0.5", "--time-scale", "0.02", "--host", &host])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(report["model"], "open", "a profile with rates runs the open model");
    let scheduled = report["open_model"]["scheduled"].as_u64().unwrap();
    assert!((350..=370).contains(&scheduled), "{scheduled} arrivals scheduled, 360 expected: {report:#}");
    assert_eq!(report["max_users"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_counts_a_stall_from_the_intended_start() {
    // A closed-model user stuck behind a hung service sends nothing and so records one slow
    // request; on the open model's clock every arrival during the stall waits, and its latency
    // counts from when it was due.
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let (dir, host) = (temp_dir("loadgen-stall"), svc.url(""));
    let generator = tokio::task::spawn_blocking(move || {
        // 100 requests/s for 3.15 s, at most 10 in flight (sustained × 0.02 users).
        let args = ["--profile", "sustained", "--scale", "0.02", "--time-scale", "0.005", "--rate", "100"];
        run(&dir, "stall", &[&args[..], &["--host", &host, "--no-default-thresholds"]].concat())
    });
    // The hang lands while the generator is sending: a second of its requests (each GET / reads
    // Redis) has been served.
    let sending = eventually(Duration::from_secs(20), || async { redis.calls("get") >= 100 });
    assert!(sending.await, "loadgen's requests did not reach the service");
    let (status, _) = post(&svc.url("/chaos/hang"), r#"{"duration_seconds": 1, "scope": "app"}"#).await;
    assert_eq!(status, 200);
    let (out, report) = generator.await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let open = &report["open_model"];
    assert_eq!(open["dropped"], 0, "{open}");
    assert!(open["late"].as_u64().unwrap() > 20, "arrivals queued behind the 10 stalled slots: {open}");
    let max = report["totals"]["max_ms"].as_f64().unwrap();
    let p95 = report["totals"]["p95_ms"].as_f64().unwrap();
    assert!(max >= 800.0, "the first arrival of the 1 s stall waited ~1 s, max {max} ms");
    assert!(p95 >= 200.0, "about a third of the arrivals fell in the stall, p95 {p95} ms: {report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_from_several_machines_merge_into_one() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let dir = temp_dir("loadgen-merge");
    let host = svc.url("");
    let parts: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let (dir, host) = (dir.clone(), host.clone());
            std::thread::spawn(move || {
                let args =
                    ["--profile", "spike", "--scale", "0.02", "--time-scale", "0.03", "--split", "2", "--host", &host];
                run(&dir, name, &args)
            })
        })
        .collect();
    let reports: Vec<Value> = parts
        .into_iter()
        .map(|h| h.join().unwrap())
        .map(|(o, r)| {
            assert!(o.status.success(), "{}", text(&o));
            r
        })
        .collect();
    assert!(reports.iter().all(|r| r["max_users"] == 50 && r["split"] == 2), "each machine takes half of 100 users");
    let merged: PathBuf = dir.join("merged.json");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    let out = within_a_minute(loadgen(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        merged.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    let sum = |r: &Value| r["totals"]["requests"].as_u64().unwrap();
    assert_eq!(sum(&m), sum(&reports[0]) + sum(&reports[1]));
    assert_eq!(m["parts"], 2);
    assert_eq!(m["max_users"], 100);
    assert_eq!(m["passed"], true);
    let health = |r: &Value| endpoint(r, "GET /health")["histogram"]["count"].as_u64().unwrap();
    assert_eq!(health(&m), health(&reports[0]) + health(&reports[1]));
    // A report of another profile does not merge.
    let other = dir.join("other.json");
    let mut r: Value = reports[0].clone();
    r["profile"] = json!("staged");
    std::fs::write(&other, r.to_string()).unwrap();
    let out = within_a_minute(loadgen(&["merge", dir.join("a.json").to_str().unwrap(), other.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot merge"), "{}", text(&out));
}

#[test]
fn bad_profiles_and_options_are_refused_with_the_reason() {
    let out = within_a_minute(loadgen(&["--profile", "nope"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("available profiles") && text(&out).contains("staged"), "{}", text(&out));
    let out = within_a_minute(loadgen(&["--scale", "0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--scale") && text(&out).contains("more than 0"), "{}", text(&out));
    let out = within_a_minute(loadgen(&["--help"]));
    let help = text(&out);
    for flag in
        ["--profile", "--scale", "--time-scale", "--rate", "--split", "--json", "--threshold", "--report-file", "merge"]
    {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn goose_options_loadgen_cannot_honour_are_hidden_and_refused() {
    for help_flag in ["--help", "-h"] {
        let out = within_a_minute(loadgen(&[help_flag]));
        assert!(out.status.success(), "{}", text(&out));
        let help = text(&out);
        // goose is built without its dashboard, and loadgen runs it without the telnet Controller.
        for hidden in ["--dashboard", "--telnet", "--no-telnet", "--render-report", "--no-print-metrics"] {
            assert!(!help.contains(hidden), "{help_flag} lists {hidden}:\n{help}");
        }
        let shown = ["--live", "--interval", "--timeout <DURATION>", "--report-file <FILE>", "--no-percentiles-over"];
        for shown in shown {
            assert!(help.contains(shown), "{help_flag} lacks {shown}:\n{help}");
        }
    }
    let refused: [(&[&str], &str); 4] = [
        (&["--dashboard"], "dashboard` feature"),
        (&["--dashboard-port", "5118"], "dashboard` feature"),
        (&["--telnet-port", "6116"], "telnet Controller"),
        (&["--render-report", "report.json"], "loadgen merge REPORT.json --html"),
    ];
    for (args, why) in refused {
        let out = within_a_minute(loadgen(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        let refusal = format!("{} is not available in loadgen", args[0]);
        assert!(err.contains(&refusal) && err.contains(why), "{args:?}: {err}");
    }
}

#[test]
fn durations_take_units_and_bad_ones_are_refused() {
    // --print-plan exits before any load, after the command line is parsed and checked.
    let fine: [&[&str]; 4] = [
        &["-u", "1", "-t", "1m30s"],
        &["--timeout", "500ms"],
        &["--interval", "5s"],
        &["--threshold", "p95<1s", "--threshold-abort-delay", "1m"],
    ];
    for args in fine {
        let out = within_a_minute(loadgen(&[args, &["--print-plan"][..]].concat()));
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let refused: [(&[&str], &str); 6] = [
        (&["-t", "1.5s"], "whole number of seconds"),
        (&["--timeout", "0s"], "more than 0"),
        (&["--timeout", "5x"], "500ms, 30s, 5m"),
        (&["--increase-time", "soon"], "500ms, 30s, 5m"),
        (&["--interval", "0"], "at least 1s"),
        (&["--live", "--quiet"], "cannot be used with"),
    ];
    for (args, why) in refused {
        let out = within_a_minute(loadgen(&[args, &["--print-plan"][..]].concat()));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(why), "{args:?}: {}", text(&out));
    }
}

const PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/loadtests/profiles");

/// Runs `loadgen` with `dir` as its working directory (relative report paths land there).
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = loadgen(args);
    cmd.args(["--profiles-dir", PROFILES]).current_dir(dir);
    within_a_minute(cmd)
}

/// The live lines in some output: `[elapsed/total] users N | R rps | p95 P ms | errors E (X%)`.
fn live_lines(output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(output)
        .split(['\n', '\r'])
        .map(|l| l.trim_start_matches("\x1b[2K").to_string())
        .filter(|l| l.starts_with('[') && l.contains(" rps | p95 "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_written_only_where_asked_and_the_live_line_stays_on_stderr() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let host = svc.url("");
    // The open model at 40 requests/s for 3.15 s (sustained: 30 s + 600 s, x 0.005).
    let open = ["--profile", "sustained", "--time-scale", "0.005", "--rate", "40"];
    let runs: Vec<(PathBuf, Vec<&'static str>)> = vec![
        // Closed model sized by goose's own flags, in units (goose itself reads no `5s` timeout);
        // no report flags; stderr is a pipe, not a terminal.
        (temp_dir("loadgen-no-reports"), vec!["-u", "2", "-r", "2", "-t", "2s", "--timeout", "5s"]),
        // Reports asked for by relative paths; the live line forced, beside the JSON progress.
        (
            temp_dir("loadgen-reports-asked"),
            [&open[..], &["--timeout", "1500ms", "--live", "--progress-json"]].concat(),
        ),
        (temp_dir("loadgen-quiet"), [&open[..], &["--quiet", "--json", "out/run.json"]].concat()),
    ];
    let handles: Vec<_> = runs
        .into_iter()
        .enumerate()
        .map(|(i, (dir, args))| {
            let host = host.clone();
            std::thread::spawn(move || {
                let asked: &[&str] = if i == 1 { &["--json", "run.json", "--report-file", "run.html"] } else { &[] };
                let out = run_in(&dir, &[&args[..], asked, &["--host", &host]].concat());
                (dir, out)
            })
        })
        .collect();
    let results: Vec<(PathBuf, Output)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    fn files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    }

    let (dir, out) = &results[0];
    assert!(out.status.success(), "{}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("result: PASS") && stdout.contains("reports: none written"), "{stdout}");
    assert!(files(dir).is_empty(), "nothing asked, nothing written: {:?}", files(dir));
    assert!(live_lines(&out.stderr).is_empty(), "stderr is not a terminal: {}", text(out));

    let (dir, out) = &results[1];
    assert!(out.status.success(), "{}", text(out));
    let mut written = files(dir);
    written.sort();
    assert_eq!(written, ["run.html", "run.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports = stdout.lines().find(|l| l.starts_with("reports: ")).unwrap_or_else(|| panic!("{stdout}"));
    let dir_name = dir.file_name().unwrap().to_str().unwrap();
    for name in ["run.json", "run.html"] {
        assert!(reports.contains(&format!("{dir_name}/{name}")), "{reports}");
    }
    let live = live_lines(&out.stderr);
    assert!(live.len() >= 2, "a live line each second: {}", text(out));
    assert!(live[0].starts_with("[1s/3s] users ") && live[0].contains(" in flight) | "), "{live:?}");
    let rps: f64 = live[0].split(" | ").nth(1).and_then(|r| r.strip_suffix(" rps")).unwrap().parse().unwrap();
    assert!((20.0..=60.0).contains(&rps), "the second's rate, 40 requested: {live:?}");
    assert!(live.iter().all(|l| l.contains("p95 ") && l.ends_with("errors 0 (0.00%)")), "{live:?}");
    // stdout keeps the JSON progress lines (what the service reads) and the summary.
    assert!(live_lines(&out.stdout).is_empty(), "{stdout}");
    assert!(stdout.lines().filter(|l| l.starts_with(r#"{"progress":"#)).count() >= 2, "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("progress"), "{}", text(out));

    let (dir, out) = &results[2];
    assert!(out.status.success(), "{}", text(out));
    assert!(live_lines(&out.stderr).is_empty(), "--quiet: {}", text(out));
    assert!(dir.join("out/run.json").is_file(), "--json makes the directory it names: {:?}", files(dir));
}

/// Runs `loadgen` on a terminal of its own (util-linux `script`); stdout and stderr both go to
/// the terminal, so the output is what a user sees.
fn run_on_a_terminal(dir: &Path, args: &[&str]) -> Output {
    let bin = loadgen_bin().to_string_lossy().into_owned();
    let line: Vec<String> = std::iter::once(bin.as_str())
        .chain(args.iter().copied())
        .chain(["--profiles-dir", PROFILES])
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"])
        .current_dir(dir)
        .env_remove("LOADGEN_PROFILES_DIR")
        .stdin(std::process::Stdio::null());
    within_a_minute(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_the_live_line_is_rewritten_in_place_unless_quiet() {
    let on_path =
        |name| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(name).is_file());
    if !on_path("script") {
        eprintln!("skipped: no `script` (util-linux) to give loadgen a terminal");
        return;
    }
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let host = svc.url("");
    let dir = temp_dir("loadgen-terminal");
    let extras: [&[&str]; 2] = [&[], &["--quiet"]];
    let handles: Vec<_> = extras
        .into_iter()
        .map(|extra| {
            let (dir, host) = (dir.clone(), host.clone());
            let open = ["--profile", "sustained", "--time-scale", "0.005", "--rate", "40", "--host", &host];
            let args = [&open[..], extra].concat().into_iter().map(String::from).collect::<Vec<_>>();
            std::thread::spawn(move || run_on_a_terminal(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        })
        .collect();
    let outs: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let seen = String::from_utf8_lossy(&outs[0].stdout).into_owned();
    assert!(outs[0].status.success(), "{}", text(&outs[0]));
    assert!(seen.contains("\r\x1b[2K[1s/3s] users "), "the line is rewritten in place: {seen:?}");
    assert!(live_lines(seen.as_bytes()).len() >= 2, "{seen:?}");
    let summary = seen.lines().find(|l| l.contains("loadgen: profile sustained")).unwrap_or_else(|| panic!("{seen:?}"));
    assert!(!summary.contains(" rps | p95 "), "the summary starts on a line of its own: {summary:?}");
    let quiet = String::from_utf8_lossy(&outs[1].stdout).into_owned();
    assert!(outs[1].status.success(), "{}", text(&outs[1]));
    assert!(quiet.contains("result: PASS") && live_lines(quiet.as_bytes()).is_empty(), "--quiet: {quiet:?}");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "no report files were asked for");
}

/// Processes whose command line mentions `needle` (the run id is in the report path).
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_get_a_summary_and_a_cancelled_run_stops_its_load() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    let report = run_and_wait(
        &svc,
        json!({"script": "let s = loadgen(#{profile: \"sustained\", scale: 0.02, time_scale: 0.005});\n\
                          expect(s.requests > 0, `requests: ${s.requests}`);\ns"}),
    )
    .await;
    assert_eq!(report["status"], "succeeded", "{report:#}");
    let s = &report["result"];
    for k in ["requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms"] {
        assert!(s[k].is_number(), "summary lacks {k}: {s}");
    }
    assert_eq!(s["failures"], 0);

    // A long profile started in the background is stopped when the run is cancelled.
    let before = redis.calls("get");
    let id =
        start_run(&svc, json!({"script": "let lg = loadgen_start(#{profile: \"staged\", scale: 0.01});\nsleep(600);"}))
            .await;
    assert!(eventually(Duration::from_secs(10), || async { processes_with(&id) == 1 }).await, "loadgen child running");
    // It is cancelled while it sends: its requests (each GET / reads Redis) reach the service.
    let sending = eventually(Duration::from_secs(20), || async { redis.calls("get") > before });
    assert!(sending.await, "the background loadgen sent nothing");
    http().post(svc.url(&format!("/chaos/runs/{id}/cancel"))).send().await.unwrap();
    let report = wait_run(&svc, &id, Duration::from_secs(20)).await;
    assert_eq!(report["status"], "cancelled", "{report:#}");
    let undo = &report["undo"][0];
    assert_eq!(undo["action"], "stop loadgen-1", "{report:#}");
    assert_eq!(undo["ok"], true, "{undo}");
    assert!(undo["detail"].as_str().unwrap().starts_with("stopped after"), "{undo}");
    assert_eq!(processes_with(&id), 0, "the loadgen child is gone");

    // Options are checked by name, with the script line.
    let report = run_and_wait(&svc, json!({"script": "\nloadgen(#{users: 5});"})).await;
    assert_eq!(report["status"], "failed");
    assert!(report["error"]["message"].as_str().unwrap().contains("unknown loadgen option 'users'"), "{report:#}");
    assert_eq!(report["error"]["line"], 2);
}
