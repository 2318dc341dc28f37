//! Torture (issue 10): a scenario that applies several faults is interrupted at a random moment
//! in each way a run can end badly (cancel, kill switch, timeout, SIGTERM, kill -9 then restart,
//! a throwing rollback, a looping rollback), and after each trial, and each restart, the world is
//! checked from outside (`common::World`). The bar is 0 leftovers.
//!
//! The service is the binary, on one RUNS_DIR for the whole test, so SIGTERM and kill -9 hit the
//! process that owns the loadgen children and the restart recovers from its ledger.
//! `TORTURE_SEED` replays a sequence; `TORTURE_TRIALS` and `TORTURE_AZURE_TRIALS` lengthen it
//! (bench/safety.sh runs hundreds against the release build).

use chaos_lab_testkit as common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fake_azure::{FakeAzure, NSG, RG};
use common::*;
use serde_json::{Value, json};

/// How a trial ends its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Cancel,
    KillSwitch,
    Timeout,
    Sigterm,
    Kill9,
    ThrowingRollback,
    LoopingRollback,
}

const MODES: [Mode; 7] = [
    Mode::Cancel,
    Mode::KillSwitch,
    Mode::Timeout,
    Mode::Sigterm,
    Mode::Kill9,
    Mode::ThrowingRollback,
    Mode::LoopingRollback,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Cancel => "cancel",
            Mode::KillSwitch => "kill switch",
            Mode::Timeout => "timeout",
            Mode::Sigterm => "SIGTERM",
            Mode::Kill9 => "kill -9 + restart",
            Mode::ThrowingRollback => "throwing rollback",
            Mode::LoopingRollback => "looping rollback",
        }
    }

    fn ends_by_itself(self) -> bool {
        matches!(self, Mode::ThrowingRollback | Mode::LoopingRollback)
    }

    /// The statuses the run's report may end with.
    fn statuses(self) -> &'static [&'static str] {
        match self {
            Mode::Cancel | Mode::KillSwitch => &["cancelled"],
            Mode::Timeout => &["timed_out"],
            // Cancelled by the shutdown; interrupted if it could not finish before the exit.
            Mode::Sigterm => &["cancelled", "interrupted"],
            Mode::Kill9 => &["interrupted"],
            Mode::ThrowingRollback | Mode::LoopingRollback => &["failed"],
        }
    }
}

/// Which faults the scenario applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// Block, latency, load, a loadgen child and a request hang, on the local proxy.
    Local,
    /// An NSG rule, a broken revision, a load and a request hang, on the fake ARM.
    Azure,
}

/// One trial: the script, how it is ended, and when.
struct Trial {
    mode: Mode,
    script: String,
    timeout_seconds: Option<u64>,
    /// When the interruption comes, after the run was accepted (external interruptions only).
    after: Duration,
}

impl Trial {
    fn new(mode: Mode, backend: Backend, rng: &mut fastrand::Rng) -> Self {
        let rollback = match mode {
            Mode::ThrowingRollback => r#"on_rollback(|| { throw "this rollback fails on purpose"; });"#,
            Mode::LoopingRollback => "on_rollback(|| { loop { sleep(0.2); } });",
            // A rollback that undoes is allowed, and must not disturb the ledger's undo.
            _ => r#"on_rollback(|| { log("rollback ran"); network_clear(); });"#,
        };
        // Local applies take milliseconds (the loadgen child tens of them); ARM applies a few
        // seconds each (the fake's operations answer InProgress once, polled 2 s later).
        let (apply_window, faults) = match backend {
            Backend::Local => (
                1.5,
                "network_block();\nnetwork_latency(300);\nload(\"low\", 600);\n\
                 loadgen_start(#{profile: \"sustained\", scale: 0.01, time_scale: 1});",
            ),
            Backend::Azure => (6.0, "network_block();\ndeploy_fault(\"wrong-image\");\nload(\"low\", 600);"),
        };
        let (pre, timeout_seconds) = match (mode, backend) {
            // The 1 s timeout lands before, among or after the applies.
            (Mode::Timeout, Backend::Local) => (format!("sleep({:.3});", 0.6 + 0.6 * rng.f64()), Some(1)),
            (Mode::Timeout, Backend::Azure) => (String::new(), Some(rng.u64(1..=6))),
            _ => (String::new(), None),
        };
        // The request hang comes last: it stalls the script itself. Runs ended from outside wait
        // in it until then; the rollback modes end by themselves shortly after.
        let ending = if mode.ends_by_itself() {
            format!("sleep({:.3});\nhang(1, \"request\");", rng.f64())
        } else {
            "hang(0, \"request\");".to_string()
        };
        // Half the interruptions in the first moments (the applies), the rest spread over the
        // whole window.
        let early = apply_window / 10.0;
        let after = if rng.bool() { early * rng.f64() } else { early + (apply_window - early) * rng.f64() };
        Self {
            mode,
            script: format!("{rollback}\n{pre}\n{faults}\n{ending}\n"),
            timeout_seconds,
            after: Duration::from_secs_f64(after),
        }
    }
}

/// What the trials found, per mode: (trials, trials with leftovers, unexpected outcomes).
#[derive(Default)]
struct Tally {
    per_mode: BTreeMap<Mode, (usize, usize, usize)>,
    problems: Vec<String>,
    kill_switch_ms: Vec<f64>,
}

impl Tally {
    fn record(&mut self, n: usize, trial: &Trial, leftovers: &[String], unexpected: &[String]) {
        let e = self.per_mode.entry(trial.mode).or_default();
        e.0 += 1;
        e.1 += usize::from(!leftovers.is_empty());
        e.2 += usize::from(!unexpected.is_empty());
        for l in leftovers {
            self.problems.push(format!("trial {n} ({}): LEFTOVER {l}", trial.mode.name()));
        }
        for u in unexpected {
            self.problems.push(format!("trial {n} ({}): unexpected: {u}", trial.mode.name()));
        }
    }

    fn report(&self, what: &str, seed: u64) {
        let total: usize = self.per_mode.values().map(|e| e.0).sum();
        let left: usize = self.per_mode.values().map(|e| e.1).sum();
        eprintln!("\ntorture ({what}, TORTURE_SEED={seed}): {total} trials, {left} with leftovers");
        eprintln!("  mode                 trials  leftovers unexpected");
        for (mode, (n, l, u)) in &self.per_mode {
            eprintln!("  {:<20} {n:>6} {l:>10} {u:>10}", mode.name());
        }
        if !self.kill_switch_ms.is_empty() {
            let mut ms = self.kill_switch_ms.clone();
            ms.sort_by(f64::total_cmp);
            eprintln!("  kill switch all_clear_ms: median {:.1}, max {:.1}", ms[ms.len() / 2], ms[ms.len() - 1]);
        }
        for p in &self.problems {
            eprintln!("  {p}");
        }
    }

    fn assert_none(&self) {
        let left: usize = self.per_mode.values().map(|e| e.1).sum();
        let unexpected: usize = self.per_mode.values().map(|e| e.2).sum();
        assert_eq!(left, 0, "trials left faults behind:\n{}", self.problems.join("\n"));
        assert_eq!(unexpected, 0, "trials ended unexpectedly:\n{}", self.problems.join("\n"));
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs one trial on `svc`; returns (leftovers, unexpected outcomes). `world` builds the
/// checks for the service's current URL (it changes with each restart).
async fn run_trial(
    svc: &mut ServiceProcess,
    world: &dyn Fn(&ServiceProcess) -> World,
    trial: &Trial,
    tally: &mut Tally,
) -> (Vec<String>, Vec<String>) {
    let mut unexpected = Vec::new();
    let mut leftovers = Vec::new();
    let needle = loadgen_needle(&svc.runs_dir);
    let mut body = json!({"script": trial.script});
    if let Some(t) = trial.timeout_seconds {
        body["timeout_seconds"] = json!(t);
    }
    let (code, started) = post(&svc.url("/chaos/run"), &body.to_string()).await;
    if code != 202 {
        unexpected.push(format!("POST /chaos/run answered {code}: {started}"));
        return (world(&*svc).settle(Duration::from_secs(5)).await, unexpected);
    }
    let id = started["run_id"].as_str().unwrap_or_default().to_string();
    if !trial.mode.ends_by_itself() && trial.mode != Mode::Timeout {
        // Time must pass: the trial cuts the run at a chosen moment (what it is testing).
        tokio::time::sleep(trial.after).await;
    }

    let report: Option<Value> = match trial.mode {
        Mode::Cancel => {
            let (code, r) = post(&svc.url(&format!("/chaos/runs/{id}/cancel")), "").await;
            if code != 200 {
                unexpected.push(format!("cancel answered {code}: {r}"));
            }
            ended_run(&svc.url, &id, Duration::from_secs(30)).await
        }
        Mode::KillSwitch => {
            let (code, r) = post(&svc.url("/chaos/stop"), "").await;
            if code != 200 {
                unexpected.push(format!("the kill switch answered {code}: {r}"));
            }
            if r["undo_failed"].as_array().is_some_and(|a| !a.is_empty()) {
                unexpected.push(format!("the kill switch reports failed undos: {}", r["undo_failed"]));
            }
            if let Some(ms) = r["all_clear_ms"].as_f64() {
                tally.kill_switch_ms.push(ms);
            }
            let report = ended_run(&svc.url, &id, Duration::from_secs(30)).await;
            // Checked while halted, before chaos is allowed again.
            leftovers.extend(world(&*svc).settle(Duration::from_secs(5)).await);
            let (code, r) = post(&svc.url("/chaos/resume"), "").await;
            if code != 200 || r["was_halted"] != true {
                unexpected.push(format!("resume answered {code}: {r}"));
            }
            report
        }
        Mode::Timeout | Mode::ThrowingRollback | Mode::LoopingRollback => {
            ended_run(&svc.url, &id, Duration::from_secs(30)).await
        }
        Mode::Sigterm => {
            match svc.sigterm(Duration::from_secs(20)).await {
                None => unexpected.push(format!("still running 20 s after SIGTERM:\n{}", svc.stderr_tail())),
                Some(s) if !s.success() => unexpected.push(format!("exit status {s} after SIGTERM")),
                Some(_) => {}
            }
            if !eventually(Duration::from_secs(5), || async { processes_with(&needle) == 0 }).await {
                leftovers.push("a loadgen child survived SIGTERM of the service".into());
            }
            svc.restart().await;
            ended_run(&svc.url, &id, Duration::from_secs(10)).await
        }
        Mode::Kill9 => {
            svc.kill9();
            if !eventually(Duration::from_secs(5), || async { processes_with(&needle) == 0 }).await {
                leftovers.push("a loadgen child survived kill -9 of the service".into());
            }
            svc.restart().await;
            let report = ended_run(&svc.url, &id, Duration::from_secs(10)).await;
            // What the restart undid for the run (absent when it had applied nothing yet).
            let recovered = report.as_ref().and_then(|r| r["recovered"].as_array().cloned()).unwrap_or_default();
            for x in recovered.iter().filter(|x| x["ok"] != true) {
                unexpected.push(format!("recovery failed: {x}"));
            }
            report
        }
    };

    match &report {
        None => unexpected.push(format!("run {id} never ended; the service's log ends with:\n{}", svc.stderr_tail())),
        Some(r) => {
            let status = r["status"].as_str().unwrap_or("?");
            if !trial.mode.statuses().contains(&status) {
                unexpected.push(format!("run ended {status}: {}", r["reason"]));
            }
            if trial.mode.ends_by_itself() {
                let rollback = r["undo"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|u| u["action"].as_str().is_some_and(|a| a.starts_with("on_rollback")));
                if rollback.is_none_or(|u| u["ok"] != false) {
                    unexpected.push(format!("the rollback was not reported failed: {}", r["undo"]));
                }
            }
            let failed: Vec<&Value> = r["undo"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|u| u["fault_id"].is_string() && u["ok"] != true)
                .collect();
            if !failed.is_empty() {
                unexpected.push(format!("fault undos failed: {failed:?}"));
            }
        }
    }
    let w = world(&*svc);
    leftovers.extend(w.settle(Duration::from_secs(5)).await);
    match http().get(svc.url("/chaos/status")).timeout(Duration::from_secs(3)).send().await {
        Ok(r) => {
            let s: Value = r.json().await.unwrap_or_default();
            if s["halted"] != false {
                unexpected.push(format!("halted after the trial: {} {}", s["halted"], s["halt"]));
                post(&svc.url("/chaos/resume"), "").await;
            }
        }
        Err(e) => unexpected.push(format!("GET /chaos/status failed after the trial: {e}")),
    }
    let outcome = report.as_ref().and_then(|r| r["status"].as_str()).unwrap_or("never ended");
    let when = match trial.timeout_seconds {
        Some(t) => format!("timeout_seconds {t}"),
        None if trial.mode.ends_by_itself() => "ends by itself".to_string(),
        None => format!("at +{:.3} s", trial.after.as_secs_f64()),
    };
    eprintln!(
        "trial {} ({when}): {outcome}, {} leftover(s), {} unexpected",
        trial.mode.name(),
        leftovers.len(),
        unexpected.len()
    );
    (leftovers, unexpected)
}

async fn torture(
    what: &str,
    backend: Backend,
    trials: u64,
    svc: &mut ServiceProcess,
    world: &dyn Fn(&ServiceProcess) -> World,
) {
    let seed = env_number("TORTURE_SEED", fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    let started = Instant::now();
    // Every mode in turn, so each is tried as often; the moment and the timeouts are random.
    for n in 0..trials as usize {
        let trial = Trial::new(MODES[n % MODES.len()], backend, &mut rng);
        let (leftovers, unexpected) = run_trial(svc, world, &trial, &mut tally).await;
        tally.record(n, &trial, &leftovers, &unexpected);
    }
    tally.report(what, seed);
    eprintln!("  {trials} trials in {:.1} s", started.elapsed().as_secs_f64());
    tally.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_faults_are_undone_however_the_run_is_interrupted() {
    let redis = RedisServer::start();
    let runs = temp_dir("torture-local");
    let port = redis.port.to_string();
    let env = [("REDIS_PORT", port.as_str()), ("ROLLBACK_TIMEOUT_SECONDS", "1"), ("REDIS_MAX_RETRIES", "0")];
    let mut svc = ServiceProcess::start(&runs, &env).await;
    let world = |s: &ServiceProcess| s.world(true);
    torture("local backend", Backend::Local, env_number("TORTURE_TRIALS", 28), &mut svc, &world).await;
}

fn app_template() -> Value {
    json!({"revisionSuffix": null, "scale": {"minReplicas": 1, "maxReplicas": 2}, "containers": [{
        "name": "chaos-lab", "image": "acr.example.io/chaos-lab:1",
        "env": [{"name": "REDIS_HOST", "value": "redis.internal"}, {"name": "REDIS_PORT", "value": "10000"}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsg_rules_and_broken_revisions_are_undone_however_the_run_is_interrupted() {
    let fake = FakeAzure::shared();
    let (sub, client) = ("sub-torture", "client-torture");
    let nsg = FakeAzure::nsg_path(sub, RG, NSG);
    let app = FakeAzure::app_path(sub, RG, "chaos-app");
    fake.add_app(&app, "chaos-app", app_template());
    let runs = temp_dir("torture-azure");
    let mut env = fake.service_env(sub, client);
    env.push(("ROLLBACK_TIMEOUT_SECONDS".into(), "1".into()));
    let mut svc = ServiceProcess::start(&runs, &env).await;
    let world = |s: &ServiceProcess| s.world(false).with_azure(Some(nsg.clone()), Some(app.clone()));
    torture("azure backend, fake ARM", Backend::Azure, env_number("TORTURE_AZURE_TRIALS", 7), &mut svc, &world).await;
}
