//! Load from scripts: the `loadgen` binary as a child process (goose owns signal handling, so it
//! cannot run inside the service). Progress lines stream into the run's timeline; the child's
//! JSON report becomes the script's summary. Stopping sends SIGINT, so goose ends its users and
//! still writes the reports; a child that has not exited 10 s later is killed.
//!
//! A child lives in a process group of its own (so its whole group can be killed by pid after a
//! crash of the service) and is started with `--parent-pid`, so Linux kills it when the service
//! dies, `kill -9` included. The parent-death signal fires when the *thread* that spawned the
//! child ends, so children are spawned from the runtime's worker threads (the fault ledger's
//! apply task), never from a script's blocking thread.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// The handle on a running child (defined with the other child-process code; `engine` names it
/// from here).
pub use crate::child::Running;
use crate::child::start_ticks;

/// How long a stopped child may take to write its reports before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where the service finds `loadgen` and puts its reports.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    pub bin: PathBuf,
    pub reports_dir: PathBuf,
}

impl LoadgenConfig {
    /// `bin` if given, else `loadgen` next to the running executable, else `loadgen` on PATH.
    pub fn new(bin: Option<PathBuf>, runs_dir: &Path) -> Self {
        let bin = bin.unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .map(|exe| exe.with_file_name("loadgen"))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("loadgen"))
        });
        Self { bin, reports_dir: runs_dir.join("loadgen") }
    }
}

/// What a script asks for: `#{profile, scale, time_scale, host, rate, thresholds}` (read by the
/// script API).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub profile: String,
    pub scale: f64,
    pub time_scale: f64,
    pub host: String,
    pub rate: Option<f64>,
    pub thresholds: Vec<String>,
}

impl Spec {
    fn args(&self, json: &Path, html: &Path) -> Vec<String> {
        let mut a = vec![
            "--profile".into(),
            self.profile.clone(),
            "--scale".into(),
            self.scale.to_string(),
            "--time-scale".into(),
            self.time_scale.to_string(),
            "--host".into(),
            self.host.clone(),
            "--json".into(),
            json.display().to_string(),
            "--report-file".into(),
            html.display().to_string(),
            "--progress-json".into(),
            "--quiet".into(),
            // Load that stops itself when errors appear would end the traffic in the middle of an
            // outage; rules are judged at the end (`passed`). goose also exits at once, without
            // its reports, on a SIGINT that follows an abort.
            "--no-threshold-abort".into(),
        ];
        if let Some(r) = self.rate {
            a.extend(["--rate".into(), r.to_string()]);
        }
        for t in &self.thresholds {
            a.extend(["--threshold".into(), t.clone()]);
        }
        a
    }
}

// `Running` (the handle on a child) lives in `crate::child`, where the fault ledger reaches it
// without depending on `chaos`; how a child is started is this module's.
impl Running {
    /// Starts `loadgen`; `progress` gets each progress object. Reports go to
    /// `<reports_dir>/<name>.json|.html`.
    pub fn start(
        cfg: &LoadgenConfig,
        spec: &Spec,
        name: &str,
        progress: impl Fn(&Value) + Send + 'static,
    ) -> Result<Running, String> {
        std::fs::create_dir_all(&cfg.reports_dir)
            .map_err(|e| format!("cannot create {}: {e}", cfg.reports_dir.display()))?;
        let json = cfg.reports_dir.join(format!("{name}.json"));
        let html = cfg.reports_dir.join(format!("{name}.html"));
        let mut child = tokio::process::Command::new(&cfg.bin)
            .args(spec.args(&json, &html))
            .args(["--parent-pid".to_string(), std::process::id().to_string()])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {} ({e}); set LOADGEN_BIN to the loadgen binary", cfg.bin.display()))?;
        let pid = child.id().unwrap_or(0);
        let (stop, mut stopped) = watch::channel(false);
        let (done, outcome) = watch::channel(None);
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        tokio::spawn(async move {
            let out = tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && let Some(p) = v.get("progress")
                    {
                        progress(p);
                    }
                }
            });
            let err = tokio::spawn(async move {
                let mut tail = Vec::new();
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tail.push(line);
                    if tail.len() > 20 {
                        tail.remove(0);
                    }
                }
                tail
            });
            let status = tokio::select! {
                s = child.wait() => s,
                _ = async { let _ = stopped.wait_for(|s| *s).await; } => {
                    if let Some(pid) = child.id() {
                        let pid = nix::unistd::Pid::from_raw(pid as i32);
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
                    }
                    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            let _ = child.kill().await;
                            child.wait().await
                        }
                    }
                }
            };
            let _ = out.await;
            let tail = err.await.unwrap_or_default();
            let result = match status {
                Err(e) => Err(format!("loadgen: {e}")),
                Ok(status) => match status.code() {
                    Some(0 | 1) => read_summary(&json),
                    _ if stop_asked(&stopped) && json.is_file() => read_summary(&json),
                    code => {
                        let why = tail.iter().rev().find(|l| l.starts_with("loadgen:")).or(tail.last());
                        Err(format!(
                            "loadgen exited with {}: {}",
                            code.map_or("a signal".to_string(), |c| format!("status {c}")),
                            why.map_or("no error output", String::as_str)
                        ))
                    }
                },
            };
            let _ = done.send(Some(result));
        });
        Ok(Running { pid, start_ticks: start_ticks(pid).unwrap_or(0), stop, outcome })
    }
}

fn stop_asked(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow()
}

/// The script's summary from a loadgen JSON report.
fn read_summary(path: &Path) -> Result<Value, String> {
    let report = crate::loadgen::report::Report::read_json(path)?;
    let t = &report.totals;
    let mut v = serde_json::json!({
        "requests": t.requests,
        "failures": t.failures,
        "rps": t.rps,
        "error_rate_pct": t.error_rate_pct,
        "p50_ms": t.p50_ms,
        "p95_ms": t.p95_ms,
        "p99_ms": t.p99_ms,
        "max_ms": t.max_ms,
        "duration_s": crate::round_to(report.duration_s, 2),
        "max_users": report.max_users,
        "passed": report.passed,
        "report": path.display().to_string(),
    });
    if let Some(o) = &report.open_model {
        v["delivered_rps"] = o.delivered_rps.into();
        v["dropped"] = o.dropped.into();
        v["late"] = o.late.into();
    }
    Ok(v)
}
