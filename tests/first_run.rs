//! A fresh machine, from the user's side (issue 16): the README's first command, exactly as
//! written there, gives a working lab, and the README's "Try it" lines work right after it. The
//! development Redis it starts dies with the service however the service ends; with a Redis
//! address given, nothing is started.
//!
//! The README's commands use the default addresses, so these tests need 127.0.0.1:8000 and
//! 127.0.0.1:6379 free; where something already listens there they say so and do nothing.

use chaos_lab_testkit as common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::*;

const README: &str = include_str!("../README.md");

/// The first ```sh block of the README (the command that runs the service).
fn first_command() -> String {
    let start = README.find("```sh\n").expect("README has a sh block") + "```sh\n".len();
    let end = README[start..].find("```").unwrap() + start;
    README[start..end].trim().to_string()
}

/// The command lines of the README's "Try it" block.
fn try_it_lines() -> Vec<String> {
    let section = &README[README.find("## Try it").expect("README has a Try it section")..];
    let start = section.find("```sh\n").unwrap() + "```sh\n".len();
    let end = section[start..].find("```").unwrap() + start;
    section[start..end].lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn busy(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Whether the default addresses the README relies on are free; says why not.
fn defaults_free() -> bool {
    for port in [8000, 6379] {
        if busy(port) {
            eprintln!("skipped: something already listens on 127.0.0.1:{port}, which the README's commands use");
            return false;
        }
    }
    true
}

/// Takes out what `cargo test` adds to a test's environment (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, ...), so a `cargo` started from here sees the user's shell. Build scripts that
/// declare `rerun-if-env-changed` on those (ring does) would otherwise be rerun, and everything
/// above them rebuilt: minutes of the suite.
fn shell_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        let from_cargo_test = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || matches!(
                k.as_str(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            );
        if from_cargo_test {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Runs the README's first command in the repository, in a process group of its own, with no
/// Redis settings in the environment.
fn run_first_command(runs: &std::path::Path) -> Proc {
    let mut cmd = Command::new("bash");
    shell_env(&mut cmd);
    cmd.args(["-c", &first_command()]).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars() {
        if k.starts_with("REDIS_") || k.starts_with("AZURE_") || k == "APP_PORT" || k == "APP_HOST" {
            cmd.env_remove(k);
        }
    }
    let log = std::fs::File::create(runs.join("first-command.log")).unwrap();
    Proc::spawn("the README's first command", cmd.env("RUNS_DIR", runs).stdout(Stdio::null()).stderr(log))
}

/// Waits until `GET /` on port 8000 answers 200; returns how long it took.
async fn wait_for_app(within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let ok = eventually(within, || async {
        match http().get("http://127.0.0.1:8000/").timeout(Duration::from_secs(2)).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    })
    .await;
    ok.then(|| started.elapsed())
}

/// Whether process `pid` is still alive (a zombie is dead: it only waits to be reaped).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
}

/// Sends `sig` to the command's process group, as a terminal does (Ctrl-C is SIGINT), and waits
/// for bash to end.
async fn signal_and_wait(lab: &mut Proc, sig: Signal) {
    lab.signal_group(sig);
    assert!(lab.wait_within(Duration::from_secs(20)).await.is_some(), "{sig} did not end the README's command");
}

/// The development Redis the service reports.
async fn dev_server_pid() -> u64 {
    let (_, status) = get("http://127.0.0.1:8000/chaos/status").await;
    let dev = &status["redis"]["dev_server"];
    assert!(
        dev["note"].as_str().is_some_and(|n| n.contains("REDIS_HOST")),
        "status says how to use a real Redis: {status}"
    );
    dev["pid"].as_u64().unwrap_or_else(|| panic!("no development Redis in the status: {status}"))
}

async fn wait_dead(pid: u64, within: Duration) -> bool {
    eventually(within, || async move { !alive(pid) }).await
}

// The three tests share port 8000: one test runs them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_command_gives_a_working_lab_and_its_redis_dies_with_it() {
    if !defaults_free() {
        return;
    }
    let runs = temp_dir("first-run");
    // Build first (normally nothing to do: the test build made the binary, with the same
    // features, see Cargo.toml's `resolver`), so the 15 s below time the lab's start.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    shell_env(&mut build).args(["build", "--quiet", "--bin", "chaos-lab"]).current_dir(env!("CARGO_MANIFEST_DIR"));
    let built = output("cargo build", &mut build, Duration::from_secs(900));
    assert!(built.status.success(), "cargo build failed:\n{}", String::from_utf8_lossy(&built.stderr));

    // 1. The first command, then the "Try it" block exactly as written; Ctrl-C ends it all.
    let mut lab = run_first_command(&runs);
    let took = wait_for_app(Duration::from_secs(15)).await;
    let Some(took) = took else {
        lab.kill();
        let log = std::fs::read_to_string(runs.join("first-command.log")).unwrap_or_default();
        panic!("GET / did not answer 200 within 15 s of the README's first command; its output:\n{log}");
    };
    eprintln!("GET / answered 200 {:.1} s after the README's first command", took.as_secs_f64());
    let (_, index) = get("http://127.0.0.1:8000/").await;
    assert!(index["redis_data"].as_str().is_some_and(|d| d.starts_with("Data created at")), "{index}");
    let (status, health) = get("http://127.0.0.1:8000/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")), "{health}");
    let redis = dev_server_pid().await;
    assert!(alive(redis));
    for line in try_it_lines() {
        let out = output("bash", Command::new("bash").args(["-c", &line]), Duration::from_secs(60));
        assert!(out.status.success(), "README line failed: {line}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    signal_and_wait(&mut lab, Signal::SIGINT).await;
    assert!(wait_dead(redis, Duration::from_secs(10)).await, "Ctrl-C left redis-server {redis} behind");

    // 2. kill -9 of the service itself (not of cargo or bash): its Redis dies with it.
    let mut lab = run_first_command(&runs);
    assert!(wait_for_app(Duration::from_secs(15)).await.is_some(), "the lab did not come back");
    let redis = dev_server_pid().await;
    let service = std::fs::read_to_string(format!("/proc/{redis}/stat")).unwrap();
    let service: i32 = service.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(service), Signal::SIGKILL).unwrap();
    assert!(wait_dead(redis, Duration::from_secs(10)).await, "kill -9 of the service left redis-server {redis} behind");
    signal_and_wait(&mut lab, Signal::SIGKILL).await;

    // 3. SIGTERM of the whole command.
    let mut lab = run_first_command(&runs);
    assert!(wait_for_app(Duration::from_secs(15)).await.is_some(), "the lab did not come back");
    let redis = dev_server_pid().await;
    signal_and_wait(&mut lab, Signal::SIGTERM).await;
    assert!(wait_dead(redis, Duration::from_secs(10)).await, "SIGTERM left redis-server {redis} behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_redis_address_given_nothing_is_started() {
    let closed = free_port();
    let runs = temp_dir("first-run-given");
    let closed = closed.to_string();
    let env = [("REDIS_PORT", closed.as_str()), ("REDIS_SOCKET_CONNECT_TIMEOUT", "0.5")];
    let svc = ServiceProcess::start(&runs, &env).await;
    let url = svc.url.clone();
    let (status, body) = get(&format!("{url}/")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().starts_with("Redis connection failed"), "{body}");
    let (_, s) = get(&format!("{url}/chaos/status")).await;
    assert!(s["redis"]["dev_server"].is_null(), "{s}");
}
