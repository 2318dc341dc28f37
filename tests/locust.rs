//! Locust, the load tool of the original lab, runs the shared profiles (`loadtests/profiles/`)
//! against the real service: the stage plan each profile gives, a short clean run with requests on
//! every endpoint, and failures on `/health` while Redis is down. Without `--profile`, the
//! original lab's command lines (`-u 10 -r 2 -t 5m SteadyLoadUser`) size the run themselves, and
//! its user classes keep their task weights.
//!
//! Needs the Python venv `bash tests/run.sh` creates (`target/py`, from
//! `loadtests/locust/requirements.txt`), or `LOCUST=/path/to/locust`. Loopback only; each Locust
//! process is killed after 60 s.

use chaos_lab_testkit as common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Longest a Locust process may live before the test kills it and fails.
const LOCUST_TIMEOUT: Duration = Duration::from_secs(60);

/// The `locust` executable: `$LOCUST`, else the venv `tests/run.sh` creates.
fn locust() -> PathBuf {
    let candidate = match std::env::var_os("LOCUST") {
        Some(p) => PathBuf::from(p),
        None => repo().join("target/py/bin/locust"),
    };
    assert!(
        candidate.is_file(),
        "locust not found at {}: run `bash tests/run.sh` (it creates the venv target/py from \
         loadtests/locust/requirements.txt) or set LOCUST=/path/to/locust",
        candidate.display()
    );
    candidate
}

/// The Python next to `locust` (the venv's, which has `tomli` on Python < 3.11).
fn python() -> PathBuf {
    let beside = locust().with_file_name("python");
    if beside.is_file() { beside } else { PathBuf::from("python3") }
}

/// What `python loadtests/locust/profiles.py ...` printed: exit code, stdout, stderr.
fn profiles_cli(args: &[&str], profiles_dir: Option<&Path>) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(python());
    cmd.arg(repo().join("loadtests/locust/profiles.py")).args(args).env_remove("LOADGEN_PROFILES_DIR");
    if let Some(dir) = profiles_dir {
        cmd.env("LOADGEN_PROFILES_DIR", dir);
    }
    let out = output("python", &mut cmd, Duration::from_secs(60));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The profile as the Locust shape reads it, plus its `tick()` answers at the times `at`.
fn plan(name: &str, extra: &[&str], at: &[f64]) -> Value {
    let at: Vec<String> = at.iter().map(|t| t.to_string()).collect();
    let mut args = vec![name, "--json"];
    args.extend_from_slice(extra);
    for t in &at {
        args.extend(["--at", t.as_str()]);
    }
    let (code, out, err) = profiles_cli(&args, None);
    assert_eq!(code, 0, "profiles.py {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("profiles.py printed no JSON ({e}): {out}"))
}

/// Stages as `[duration_seconds, users, spawn_rate]` (spawn_rate null for a hold).
fn stages(plan: &Value) -> Value {
    plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["duration_seconds"], s["users"], s["spawn_rate"]]))
        .collect()
}

#[test]
fn shape_follows_each_profile_stage_by_stage() {
    let staged = plan("staged", &[], &[0.0, 119.9, 120.0, 299.9, 300.0, 599.9, 600.0]);
    assert_eq!(stages(&staged), json!([[120.0, 100, 10.0], [180.0, 500, 50.0], [300.0, 1000, 100.0]]));
    assert_eq!(staged["wait_seconds"], json!([1.0, 3.0]));
    assert_eq!(
        staged["ticks"],
        json!([[100, 10.0], [100, 10.0], [500, 50.0], [500, 50.0], [1000, 100.0], [1000, 100.0], null])
    );

    // A hold stage keeps the previous users (and spawn rate, which then changes nothing).
    let spike = plan("spike", &[], &[5.0, 10.0, 69.9, 70.0, 80.0]);
    assert_eq!(stages(&spike), json!([[10.0, 5000, 500.0], [60.0, 5000, null], [10.0, 0, 500.0]]));
    assert_eq!(spike["wait_seconds"], json!([0.1, 0.5]));
    assert_eq!(spike["ticks"], json!([[5000, 500.0], [5000, 500.0], [5000, 500.0], [0, 500.0], null]));

    let sustained = plan("sustained", &[], &[0.0, 30.0, 629.0, 630.0]);
    assert_eq!(stages(&sustained), json!([[30.0, 500, 50.0], [600.0, 500, null]]));
    assert_eq!(sustained["ticks"], json!([[500, 50.0], [500, 50.0], [500, 50.0], null]));

    // --scale rounds users (at least 1 where there were some) and --time-scale shortens stages;
    // the spawn rate follows both so that a ramp still fills the same share of its stage.
    let small = plan("staged", &["--scale", "0.01", "--time-scale", "0.01"], &[0.0, 1.2, 3.0, 6.0]);
    assert_eq!(stages(&small), json!([[1.2, 1, 10.0], [1.8, 5, 50.0], [3.0, 10, 100.0]]));
    assert_eq!(small["ticks"], json!([[1, 10.0], [5, 50.0], [10, 100.0], null]));
    let tiny = plan("spike", &["--scale", "0.0001"], &[]);
    assert_eq!(stages(&tiny), json!([[10.0, 1, 0.05], [60.0, 1, null], [10.0, 0, 0.05]]));

    // A stage's rate scales with users; --rate replaces every stage's rate as is (as in loadgen).
    // A profile can also be named by path.
    let dir = temp_dir("rate-profile");
    let file = dir.join("paced.toml");
    std::fs::write(&file, "description = \"p\"\nwait_seconds = [0, 0]\n[[stages]]\nduration_seconds = 10\nusers = 20\nspawn_rate = 5\nrate = 100\n").unwrap();
    let file = file.to_str().unwrap();
    assert_eq!(plan(file, &["--scale", "0.5"], &[])["stages"][0]["rate"], 50.0);
    assert_eq!(plan(file, &["--scale", "0.5", "--rate", "7"], &[])["stages"][0]["rate"], 7.0);
    let fixed = plan("sustained", &["--rate", "40"], &[]);
    assert!(fixed["stages"].as_array().unwrap().iter().all(|s| s["rate"] == 40.0), "{fixed}");
}

#[test]
fn every_profile_file_is_readable_by_the_shape() {
    let dir = repo().join("loadtests/profiles");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".toml").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    for name in &names {
        let p = plan(name, &[], &[]);
        assert!(!stages(&p).as_array().unwrap().is_empty(), "{name}: {p}");
    }
}

#[test]
fn shape_errors_name_the_profiles_and_the_field() {
    let dir = temp_dir("profiles");
    std::fs::write(
        dir.join("good.toml"),
        "description = \"ok\"\nwait_seconds = [1, 2]\n[[stages]]\nduration_seconds = 1\nusers = 1\nspawn_rate = 1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "description = \"bad\"\nwait_seconds = [1, 2]\n[[stages]]\nduration_seconds = 1\nusers = -3\nspawn_rate = 1\n",
    )
    .unwrap();
    std::fs::write(dir.join("badhold.toml"), "description = \"x\"\nwait_seconds = [1, 2]\n[[stages]]\nduration_seconds = 1\nusers = 2\nspawn_rate = 1\n[[stages]]\nduration_seconds = 1\nusers = 3\n").unwrap();

    let (code, _, err) = profiles_cli(&["nope"], Some(&dir));
    assert_ne!(code, 0);
    assert!(err.contains("nope") && err.contains("bad, badhold, good"), "{err}");
    let (code, _, err) = profiles_cli(&["bad"], Some(&dir));
    assert_ne!(code, 0);
    assert!(err.contains("stages[0].users"), "{err}");
    let (code, _, err) = profiles_cli(&["badhold"], Some(&dir));
    assert_ne!(code, 0);
    assert!(err.contains("stages[1]") && err.contains("spawn_rate"), "{err}");
}

/// One finished Locust run: its exit code, `_stats.csv` rows by name, `_failures.csv` text.
struct LocustRun {
    code: i32,
    stats: HashMap<String, (u64, u64)>,
    failures: String,
    log: String,
    took: Duration,
}

impl LocustRun {
    fn requests(&self, name: &str) -> u64 {
        self.stats.get(name).map_or(0, |r| r.0)
    }
    fn failures(&self, name: &str) -> u64 {
        self.stats.get(name).map_or(0, |r| r.1)
    }
}

/// Runs Locust headless against `host` with `profile`, shrunk by `scale` and `time_scale`.
async fn run_locust(host: &str, profile: &str, scale: &str, time_scale: &str) -> LocustRun {
    run_locust_with(host, &["--profile", profile, "--scale", scale, "--time-scale", time_scale]).await
}

/// Runs `locust -f loadtests/locust/locustfile.py --headless ARGS --host HOST` with CSV stats,
/// `--only-summary` and exit code 1 on any failure; `args` may end with user class names.
async fn run_locust_with(host: &str, args: &[&str]) -> LocustRun {
    let out_dir = temp_dir("locust");
    let prefix = out_dir.join("loc");
    let started = Instant::now();
    let mut cmd = std::process::Command::new(locust());
    cmd.current_dir(repo())
        .args(["-f", "loadtests/locust/locustfile.py", "--headless"])
        .args(args)
        .args(["--host", host, "--only-summary", "--exit-code-on-error", "1"])
        .arg("--csv")
        .arg(&prefix)
        .env_remove("LOADGEN_PROFILE")
        .env_remove("LOADGEN_PROFILES_DIR")
        .env_remove("LOCUST_FAST");
    let out = output_async("locust", cmd, LOCUST_TIMEOUT).await;
    let took = started.elapsed();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let csv = std::fs::read_to_string(out_dir.join("loc_stats.csv"))
        .unwrap_or_else(|e| panic!("no loc_stats.csv ({e}); locust said:\n{log}"));
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').map(|h| h.trim_matches('"')).collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} in {header:?}"));
    let (name_col, count_col, fail_col) = (col("Name"), col("Request Count"), col("Failure Count"));
    let stats = lines
        .map(|l| l.split(',').map(|c| c.trim_matches('"')).collect::<Vec<_>>())
        .map(|c| (c[name_col].to_string(), (c[count_col].parse().unwrap(), c[fail_col].parse().unwrap())))
        .collect();
    let failures = std::fs::read_to_string(out_dir.join("loc_failures.csv")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out_dir);
    LocustRun { code: out.status.code().unwrap_or(-1), stats, failures, log, took }
}

// `sustained` at --time-scale 0.01 lasts 6.3 s; --scale 0.05 gives 25 users, about 100 requests,
// so even `/chaos/status` (weight 1 of 9) is all but certain to be requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locust_runs_a_profile_against_the_service_without_failures() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;

    let run = run_locust(&svc.url, "sustained", "0.05", "0.01").await;
    assert_eq!(run.code, 0, "locust exit code; failures:\n{}\n{}", run.failures, run.log);
    for name in ["/health", "/", "/chaos/status"] {
        assert!(run.requests(name) > 0, "no {name} requests: {:?}\n{}", run.stats, run.log);
        assert_eq!(run.failures(name), 0, "{name} failed: {}", run.failures);
    }
    assert_eq!(run.failures("Aggregated"), 0, "{:?}", run.stats);
    assert!(run.took < Duration::from_secs(30), "the 6.3 s profile took {:?}\n{}", run.took, run.log);
    eprintln!("locust (clean): {:?} in {:?}", run.stats, run.took);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locust_counts_an_unhealthy_health_report_as_a_failure() {
    let mut redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;
    redis.stop();
    assert_eq!(get(&svc.url("/health")).await.1["status"], "unhealthy");

    let run = run_locust(&svc.url, "sustained", "0.05", "0.005").await;
    assert_eq!(run.code, 1, "locust must exit 1 on failures\n{}", run.log);
    assert!(run.requests("/health") > 0, "{:?}", run.stats);
    assert_eq!(run.failures("/health"), run.requests("/health"), "{:?}", run.stats);
    assert!(run.failures.contains("unhealthy"), "failure reason should quote the body: {}", run.failures);
    eprintln!("locust (Redis down): {:?} in {:?}", run.stats, run.took);
}

// The original lab's command lines (`locust -f locustfile.py --headless -u 10 -r 2 -t 5m
// SteadyLoadUser`) carry no profile: Locust's -u/-r/-t must size the run. A load shape would
// ignore them (it would run the whole `staged` profile, 10 minutes, or stop at once), so the run
// must stop after its 6 s, with only the class named on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locust_without_a_profile_honours_users_spawn_rate_and_run_time() {
    let redis = RedisServer::start();
    let svc = TestService::start(redis.port, &[]).await;

    let run = run_locust_with(&svc.url, &["-u", "4", "-r", "4", "-t", "6s", "SteadyLoadUser"]).await;
    assert_eq!(run.code, 0, "locust exit code; failures:\n{}\n{}", run.failures, run.log);
    assert!(run.took < Duration::from_secs(30), "the -t 6s run took {:?}\n{}", run.took, run.log);
    assert!(run.took >= Duration::from_secs(5), "the -t 6s run ended after {:?}\n{}", run.took, run.log);
    assert!(run.log.contains("--run-time limit reached"), "not stopped by -t:\n{}", run.log);
    assert!(!run.log.contains("Shape test"), "a load shape drove the run:\n{}", run.log);
    assert!(
        run.log.contains(r#"All users spawned: {"SteadyLoadUser": 4}"#),
        "expected 4 SteadyLoadUser users and no other class:\n{}",
        run.log
    );
    assert!(run.requests("/") > 0, "no / requests: {:?}\n{}", run.stats, run.log);
    assert!(run.requests("Aggregated") > 0, "no requests: {:?}\n{}", run.stats, run.log);
    assert_eq!(run.failures("Aggregated"), 0, "{:?}\n{}", run.stats, run.failures);
    eprintln!("locust (-u 4 -r 4 -t 6s SteadyLoadUser): {:?} in {:?}", run.stats, run.took);
}

// The original lab's classes, with the weights its Locust ran. Its SpikeTestUser added `/` at 10
// and `/health` at 1 to the base class's 5 and 3 (Locust keeps a base class's tasks).
#[test]
fn original_user_classes_keep_their_task_weights() {
    let mut cmd = std::process::Command::new(locust());
    cmd.current_dir(repo())
        .args(["-f", "loadtests/locust/locustfile.py", "--show-task-ratio-json"])
        .args(["SteadyLoadUser", "SpikeTestUser", "ChaosTestUser"])
        .env_remove("LOADGEN_PROFILE")
        .env_remove("LOCUST_FAST");
    let out = output("locust", &mut cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "locust --show-task-ratio-json failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ratios: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("--show-task-ratio-json printed no JSON ({e}): {stdout}"));

    let expected = [
        ("SteadyLoadUser", vec![("check_health", 3.0), ("index", 5.0), ("chaos_status", 1.0)]),
        ("SpikeTestUser", vec![("check_health", 4.0), ("index", 15.0), ("chaos_status", 1.0)]),
        ("ChaosTestUser", vec![("check_health", 3.0), ("index", 5.0), ("chaos_status", 1.0), ("trigger_load", 1.0)]),
    ];
    for (class, weights) in &expected {
        let tasks =
            ratios["per_class"][*class]["tasks"].as_object().unwrap_or_else(|| panic!("no class {class} in {ratios}"));
        assert_eq!(tasks.len(), weights.len(), "{class}: {tasks:?}");
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        for (task, weight) in weights {
            let ratio = tasks
                .get(*task)
                .and_then(|t| t["ratio"].as_f64())
                .unwrap_or_else(|| panic!("{class}: no task {task} in {tasks:?}"));
            assert!((ratio - weight / total).abs() < 1e-9, "{class}.{task}: ratio {ratio}, expected {weight}/{total}");
        }
    }
}
