//! The binary's subcommands. For script authors: `chaos-lab check FILE.rhai` (compile and static
//! checks, no service needed) and `chaos-lab run FILE.rhai --url URL` (submit to a running
//! service and stream the run's events until it ends). For operators, replacing the original
//! lab's bash scripts and the `az` CLI: `network inject|clear|list`, `deploy-fault`, `revisions`
//! (see docs/azure.md); they read the azd environment's names.

use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::azure::{AppRef, Arm, NsgRef};
use crate::faults::deploy::{ContainerApp, DeployBackend, DeployFault, DeployFaultKind};
use crate::faults::network::azure::{AzureNsg, DEFAULT_TTL};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Internal: run PROGRAM so that it dies with process PARENT_PID (the development Redis).
    #[command(hide = true)]
    ExecGuarded {
        #[arg(long)]
        parent_pid: u32,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Compile scenario scripts and check their header and the functions they call, without
    /// running them. Exits non-zero and prints FILE:LINE:COLUMN for every problem.
    Check {
        /// One or more .rhai files.
        #[arg(required = true, value_name = "FILE.rhai")]
        files: Vec<PathBuf>,
    },
    /// Submit a script to a running chaos-lab and stream its steps until it ends, then print its
    /// impact (time to detect, time to recover, requests, failures, error budget). Exits 0 when
    /// the run succeeded, 1 when it failed, was aborted by a guard, was cancelled or timed out, 2
    /// when it could not start.
    /// Ctrl-C cancels the run (its faults are undone) and keeps streaming until it has ended.
    Run {
        /// The .rhai script to run.
        #[arg(value_name = "FILE.rhai")]
        file: PathBuf,
        /// Base URL of the service.
        #[arg(long, env = "CHAOS_LAB_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// A parameter for param(): KEY=VALUE (VALUE is read as JSON when it parses, else text).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Bearer token, when the service has CHAOS_API_TOKEN set.
        #[arg(long, env = "CHAOS_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Stop the run after this many seconds (default: the service's 900).
        #[arg(long)]
        timeout_seconds: Option<u64>,
        /// Apply nothing: faults are recorded, not applied.
        #[arg(long)]
        dry_run: bool,
        /// Hold the run to a guard, as JSON: '{"error_rate_pct": 5, "window_s": 10}' (repeatable;
        /// the same options as guard() in a script)
        #[arg(long = "guard", value_name = "JSON")]
        guards: Vec<String>,
        /// When the run has ended, write its HTML report (timeline, tables) to FILE
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Block, unblock and list Redis network failures: deny rules in the NSG of the Redis
    /// private endpoint (Azure). Reads AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP,
    /// AZURE_NSG_NAME (`eval "$(azd env get-values)"` sets them).
    Network {
        #[command(subcommand)]
        action: NetworkAction,
    },
    /// Create a broken revision of the container app: `wrong-image` (nginx:alpine) or `bad-env`
    /// (REDIS_HOST empty, REDIS_PORT=invalid). Prints the revision to restore afterwards.
    DeployFault {
        #[arg(value_enum)]
        kind: DeployFaultKind,
        #[command(flatten)]
        target: AzureTarget,
    },
    /// List the container app's revisions; with --activate, restore one (all traffic to it).
    Revisions {
        /// Re-activate this revision and send all traffic to it (undo of deploy-fault).
        #[arg(long, value_name = "REVISION")]
        activate: Option<String>,
        /// With --activate: also deactivate this (broken) revision.
        #[arg(long, value_name = "REVISION", requires = "activate")]
        deactivate: Option<String>,
        #[command(flatten)]
        target: AzureTarget,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NetworkAction {
    /// Add a deny rule for the Redis port (new connections to Redis time out), then ask the app
    /// to reset its Redis connections (POST /chaos/redis-reset at SERVICE_APP_URL), as the
    /// original inject script did. The rule expires after --duration (default 1 h); the service
    /// deletes expired rules within a minute.
    Inject {
        /// Seconds until the rule expires.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        duration: Option<u64>,
        /// Destination port to deny.
        #[arg(long, env = "AZURE_NSG_RULE_PORT", default_value = "10000", value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        #[command(flatten)]
        target: AzureTarget,
    },
    /// Delete every chaos- rule of the NSG (only those; other rules are never touched).
    Clear {
        #[command(flatten)]
        target: AzureTarget,
    },
    /// List the chaos- rules of the NSG with their expiry.
    List {
        #[command(flatten)]
        target: AzureTarget,
    },
}

/// Where the operator commands act: the azd environment's values, or flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AzureTarget {
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID", value_name = "ID")]
    subscription: Option<String>,
    #[arg(long, env = "AZURE_RESOURCE_GROUP", value_name = "NAME")]
    resource_group: Option<String>,
    #[arg(long, env = "AZURE_NSG_NAME", value_name = "NAME")]
    nsg: Option<String>,
    #[arg(long, env = "SERVICE_APP_NAME", value_name = "NAME")]
    app: Option<String>,
    /// Base URL of the deployed service (for POST /chaos/redis-reset).
    #[arg(long, env = "SERVICE_APP_URL", value_name = "URL")]
    url: Option<String>,
    /// Bearer token of the deployed service's /chaos/* endpoints.
    #[arg(long, env = "CHAOS_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Client id of a user-assigned managed identity (only where one exists).
    #[arg(long, env = "AZURE_CLIENT_ID", value_name = "ID")]
    client_id: Option<String>,
    /// ARM base URL (tests point it at a fake).
    #[arg(long, env = "AZURE_RESOURCE_MANAGER_ENDPOINT", default_value = "https://management.azure.com")]
    arm_endpoint: String,
}

impl AzureTarget {
    fn need(value: &Option<String>, var: &str, flag: &str) -> anyhow::Result<String> {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => {
                bail!("{var} is not set: run `azd env get-values` (or `eval \"$(azd env get-values)\"`) or pass {flag}")
            }
        }
    }
    fn nsg(&self) -> anyhow::Result<NsgRef> {
        Ok(NsgRef {
            subscription: Self::need(&self.subscription, "AZURE_SUBSCRIPTION_ID", "--subscription")?,
            resource_group: Self::need(&self.resource_group, "AZURE_RESOURCE_GROUP", "--resource-group")?,
            nsg: Self::need(&self.nsg, "AZURE_NSG_NAME", "--nsg")?,
        })
    }
    fn app(&self) -> anyhow::Result<AppRef> {
        Ok(AppRef {
            subscription: Self::need(&self.subscription, "AZURE_SUBSCRIPTION_ID", "--subscription")?,
            resource_group: Self::need(&self.resource_group, "AZURE_RESOURCE_GROUP", "--resource-group")?,
            name: Self::need(&self.app, "SERVICE_APP_NAME", "--app")?,
        })
    }
    fn credential(&self) -> anyhow::Result<std::sync::Arc<dyn azure_core::credentials::TokenCredential>> {
        crate::azure::credential(self.client_id.as_deref()).map_err(anyhow::Error::msg)
    }
}

/// Runs a subcommand; returns the process exit code.
pub async fn main(cmd: Command) -> i32 {
    let result = match cmd {
        Command::ExecGuarded { parent_pid, command } => {
            eprintln!("{}", crate::child::exec_guarded(parent_pid, &command));
            Ok(2)
        }
        Command::Check { files } => Ok(check(&files)),
        Command::Run { file, url, params, token, timeout_seconds, dry_run, guards, report } => {
            let opts = RunOptions { params, token, timeout_seconds, dry_run, guards, report };
            run(file, url, opts).await
        }
        Command::Network { action } => network(action).await,
        Command::DeployFault { kind, target } => deploy_fault(kind, target).await,
        Command::Revisions { activate, deactivate, target } => revisions(activate, deactivate, target).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        2
    })
}

/// `chaos-lab check`: prints one line per problem; returns 0 when every file is clean.
pub fn check(files: &[PathBuf]) -> i32 {
    let mut problems = 0;
    for file in files {
        let name = file.display();
        let source = match std::fs::read_to_string(file) {
            Ok(s) => s,
            Err(e) => {
                println!("{name}: cannot read: {e}");
                problems += 1;
                continue;
            }
        };
        for p in crate::chaos::check::check(&source, true) {
            println!("{name}:{}:{}: {}", p.line.unwrap_or(1), p.column.unwrap_or(1), p.message);
            problems += 1;
        }
    }
    if problems == 0 {
        println!("ok: {} file(s) checked", files.len());
        0
    } else {
        println!("{problems} problem(s)");
        1
    }
}

/// `chaos-lab run`'s options besides the file and the URL.
struct RunOptions {
    params: Vec<String>,
    token: Option<String>,
    timeout_seconds: Option<u64>,
    dry_run: bool,
    guards: Vec<String>,
    report: Option<PathBuf>,
}

async fn run(file: PathBuf, url: String, opts: RunOptions) -> anyhow::Result<i32> {
    let RunOptions { params, token, timeout_seconds, dry_run, guards, report: report_file } = opts;
    let script = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let guards: Vec<Value> = guards
        .iter()
        .enumerate()
        .map(|(i, g)| serde_json::from_str(g).with_context(|| format!("--guard #{} is not JSON: {g}", i + 1)))
        .collect::<anyhow::Result<_>>()?;
    let mut p = serde_json::Map::new();
    for kv in params {
        let Some((k, v)) = kv.split_once('=') else { bail!("--param takes KEY=VALUE, got '{kv}'") };
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        p.insert(k.to_string(), value);
    }
    let url = url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let body = json!({
        "script": script, "params": p, "timeout_seconds": timeout_seconds, "dry_run": dry_run, "guards": guards,
    });
    let resp = auth(client.post(format!("{url}/chaos/run")).json(&body))
        .send()
        .await
        .with_context(|| format!("cannot reach chaos-lab at {url}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = answer["detail"].as_str().unwrap_or("no detail");
        match (answer["line"].as_u64(), answer["column"].as_u64()) {
            (Some(l), Some(c)) => eprintln!("{}:{l}:{c}: {detail}", file.display()),
            _ => eprintln!("run refused ({status}): {detail}"),
        }
        return Ok(2);
    }
    let run_id = answer["run_id"].as_str().context("the service did not return a run_id")?.to_string();
    println!("run {run_id} started{}", if dry_run { " (dry run)" } else { "" });

    let events = auth(client.get(format!("{url}/chaos/runs/{run_id}/events"))).send().await?.error_for_status()?;
    let mut stream = events.bytes_stream();
    let mut buf = String::new();
    let mut cancel_sent = false;
    let mut final_status = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'outer: loop {
        tokio::select! {
            chunk = stream.next() => {
                let Some(chunk) = chunk else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk?));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut name, mut data) = ("message".to_string(), String::new());
                    for line in block.lines() {
                        if let Some(n) = line.strip_prefix("event:") { name = n.trim().to_string(); }
                        if let Some(d) = line.strip_prefix("data:") { data.push_str(d.trim_start()); }
                    }
                    let data: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if name == "run_finished" && data["steps"].is_array() {
                        // The run ended before we subscribed: replay its report as events.
                        replay(&data);
                    }
                    print_event(&name, &data);
                    if name == "run_finished" {
                        final_status = data["status"].as_str().map(str::to_string);
                        break 'outer;
                    }
                }
            }
            _ = &mut ctrl_c, if !cancel_sent => {
                cancel_sent = true;
                eprintln!("cancelling run {run_id} (its faults will be undone)...");
                let c = client.clone();
                let cancel = auth(c.post(format!("{url}/chaos/runs/{run_id}/cancel")));
                tokio::spawn(async move { let _ = cancel.send().await; });
            }
        }
    }
    let report: Value = auth(client.get(format!("{url}/chaos/runs/{run_id}"))).send().await?.json().await?;
    if let Some(e) = report["error"].as_object() {
        println!(
            "error at {}:{}:{}: {}",
            file.display(),
            e.get("line").and_then(Value::as_u64).unwrap_or(0),
            e.get("column").and_then(Value::as_u64).unwrap_or(0),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    if let Some(m) = report["measurements"].as_object().filter(|m| !m.is_empty()) {
        println!("measurements: {}", Value::Object(m.clone()));
    }
    print_impact(&report);
    if let Some(path) = &report_file {
        let page = auth(client.get(format!("{url}/chaos/runs/{run_id}/report"))).send().await?.error_for_status()?;
        let html = page.text().await?;
        std::fs::write(path, html).with_context(|| format!("cannot write the report to {}", path.display()))?;
        println!("report: {}", path.display());
    }
    let status = final_status.or_else(|| report["status"].as_str().map(str::to_string)).unwrap_or_default();
    println!("run {run_id}: {status}, verdict {}", report["verdict"].as_str().unwrap_or("?"));
    Ok(if status == "succeeded" { 0 } else { 1 })
}

/// The run's impact, in a few lines (runs that applied no fault have none).
fn print_impact(report: &Value) {
    let Some(i) = report["impact"].as_object() else { return };
    let secs = |k: &str| i.get(k).and_then(Value::as_f64).map_or("-".to_string(), |v| format!("{v:.2} s"));
    let by = i.get("detected_by").and_then(Value::as_str).map_or(String::new(), |b| format!(" (by {b})"));
    println!("impact: time to detect {}{by}, time to recover {}", secs("time_to_detect_s"), secs("time_to_recover_s"));
    let n = |k: &str| i.get(k).and_then(Value::as_u64).unwrap_or(0);
    let budget = i
        .get("error_budget_burned_pct")
        .and_then(Value::as_f64)
        .map_or("no error-rate guard".to_string(), |b| format!("{b:.1} % of the error budget burned"));
    println!(
        "        {} requests, {} failed ({:.2} %), {budget}",
        n("requests"),
        n("failures"),
        i.get("error_rate_pct").and_then(Value::as_f64).unwrap_or(0.0)
    );
}

/// Prints a finished run's report the way its live events would have looked.
fn replay(report: &Value) {
    let list = |k: &str| report[k].as_array().cloned().unwrap_or_default();
    let mut events: Vec<(f64, &str, Value)> = Vec::new();
    for s in list("steps") {
        events.push((s["offset_s"].as_f64().unwrap_or(0.0), "step_finished", s));
    }
    for l in list("logs") {
        events.push((l["offset_s"].as_f64().unwrap_or(0.0), "log", l));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, name, d) in &events {
        print_event(name, d);
    }
    for x in list("expectations") {
        print_event("expect", &x);
    }
    for u in list("undo") {
        print_event("undo", &u);
    }
}

fn print_event(name: &str, d: &Value) {
    let at = d["offset_s"].as_f64().map(|t| format!("[{t:8.3}s]")).unwrap_or_else(|| " ".repeat(11));
    let line = d["line"].as_u64().map(|l| format!("  (line {l})")).unwrap_or_default();
    match name {
        "step_started" => {
            println!("{at} > {}({}){line}", d["name"].as_str().unwrap_or("?"), d["args"].as_str().unwrap_or(""))
        }
        "step_finished" => match d["error"].as_str() {
            Some(e) => println!("{at} x {}: {e}", d["name"].as_str().unwrap_or("?")),
            None => println!(
                "{at}   {}: {} ({:.1} ms)",
                d["name"].as_str().unwrap_or("?"),
                d["outcome"].as_str().unwrap_or(""),
                d["duration_ms"].as_f64().unwrap_or(0.0)
            ),
        },
        "log" => println!("{at}   log: {}", d["message"].as_str().unwrap_or("")),
        "expect" => println!(
            "{}   expect {}: {}{line}",
            " ".repeat(11),
            if d["ok"].as_bool() == Some(true) { "ok" } else { "FAILED" },
            d["message"].as_str().unwrap_or("")
        ),
        "measurement" => println!("{}   record {} = {}", " ".repeat(11), d["name"].as_str().unwrap_or("?"), d["value"]),
        "undo" => println!(
            "{}   undo {}: {}",
            " ".repeat(11),
            d["action"].as_str().unwrap_or("?"),
            if d["ok"].as_bool() == Some(true) {
                d["detail"].as_str().unwrap_or("ok").to_string()
            } else {
                format!("FAILED {}", d["detail"])
            }
        ),
        "breach" => println!(
            "{at} ! guard breached: {} was {} against {} ({} requests in the window); aborting",
            d["metric"].as_str().unwrap_or("?"),
            d["observed"],
            d["threshold"],
            d["requests"]
        ),
        "run_finished" => {
            println!("finished: {} ({})", d["status"].as_str().unwrap_or("?"), d["reason"].as_str().unwrap_or(""))
        }
        _ => {}
    }
}

/// Prints an operator command's failure; exit code 1 (the settings were fine, Azure said no).
fn failed(e: impl std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    1
}

async fn network(action: NetworkAction) -> anyhow::Result<i32> {
    let (target, port) = match &action {
        NetworkAction::Inject { target, port, .. } => (target, *port),
        NetworkAction::Clear { target } | NetworkAction::List { target } => (target, 10000),
    };
    let nsg = target.nsg()?;
    let name = nsg.nsg.clone();
    let backend = AzureNsg::new(nsg, port, &target.arm_endpoint, target.credential()?)?;
    match action {
        NetworkAction::Inject { duration, .. } => {
            let ttl = duration.map_or(DEFAULT_TTL, std::time::Duration::from_secs);
            let expires = chrono::Utc::now() + chrono::Duration::from_std(ttl)?;
            let rule = match backend.create_rule(port, expires, Some("cli"), None).await {
                Ok(r) => r,
                Err(e) => return Ok(failed(e)),
            };
            println!(
                "blocked TCP port {port} in NSG {name}: rule {} (priority {}), expires {}",
                rule.name,
                rule.priority,
                crate::format_timestamp(expires)
            );
            let Some(url) = target.url.as_deref().filter(|u| !u.trim().is_empty()) else {
                println!(
                    "SERVICE_APP_URL is not set: skipped POST /chaos/redis-reset, so the app's established \
                     connections keep working until they close"
                );
                return Ok(0);
            };
            let url = format!("{}/chaos/redis-reset", url.trim_end_matches('/'));
            let mut req = reqwest::Client::new().post(&url).json(&json!({"force": true}));
            if let Some(t) = &target.token {
                req = req.bearer_auth(t);
            }
            match req.timeout(std::time::Duration::from_secs(30)).send().await {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    println!("app reset its Redis connections: {} closed", v["connections_closed"]);
                    Ok(0)
                }
                Ok(r) => Ok(failed(format!(
                    "the rule is in place, but POST {url} answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ))),
                Err(e) => Ok(failed(format!("the rule is in place, but POST {url} failed: {e}"))),
            }
        }
        NetworkAction::Clear { .. } => {
            let rules = match backend.list().await {
                Ok(r) => r,
                Err(e) => return Ok(failed(e)),
            };
            let mut deleted = 0;
            for r in &rules {
                match backend.delete_rule(&r.name).await {
                    Ok(true) => {
                        deleted += 1;
                        println!("deleted {}", r.name);
                    }
                    Ok(false) => println!("{} was already gone", r.name),
                    Err(e) => return Ok(failed(e)),
                }
            }
            println!("{deleted} chaos rule(s) deleted from NSG {name}");
            Ok(0)
        }
        NetworkAction::List { .. } => {
            let rules = match backend.list().await {
                Ok(r) => r,
                Err(e) => return Ok(failed(e)),
            };
            if rules.is_empty() {
                println!("no chaos rules in NSG {name}");
            }
            let now = chrono::Utc::now();
            for r in rules {
                let expires = match r.expires_at {
                    Some(t) if t <= now => format!("{} (expired)", crate::format_timestamp(t)),
                    Some(t) => crate::format_timestamp(t),
                    None => "never (no chaos-lab description)".into(),
                };
                println!(
                    "{}  priority {}  port {}  run {}  expires {expires}",
                    r.name,
                    r.priority,
                    r.port,
                    r.run_id.as_deref().unwrap_or("-")
                );
            }
            Ok(0)
        }
    }
}

async fn deploy_fault(kind: DeployFaultKind, target: AzureTarget) -> anyhow::Result<i32> {
    let app = target.app()?;
    let arm = Arm::new(&target.arm_endpoint, target.credential()?)?;
    match ContainerApp::new(app, arm).inject(kind).await {
        Ok(f) => {
            println!("created revision {} ({}) of {}", f.revision, kind.as_str(), f.app);
            match &f.previous {
                Some(p) => println!("to undo: chaos-lab revisions --activate {p} --deactivate {}", f.revision),
                None => println!("the app had no ready revision before; nothing to restore"),
            }
            Ok(0)
        }
        Err(e) => Ok(failed(e)),
    }
}

async fn revisions(activate: Option<String>, deactivate: Option<String>, target: AzureTarget) -> anyhow::Result<i32> {
    let app = target.app()?;
    let arm = Arm::new(&target.arm_endpoint, target.credential()?)?;
    let ca = ContainerApp::new(app.clone(), arm);
    if let Some(previous) = activate {
        let fault = DeployFault {
            kind: DeployFaultKind::WrongImage,
            app: app.name.clone(),
            revision: deactivate.unwrap_or_default(),
            previous: Some(previous),
        };
        match ca.undo(&fault).await {
            Ok(detail) => println!("{detail}"),
            Err(e) => return Ok(failed(e)),
        }
    }
    match ca.revisions().await {
        Ok(list) => {
            for r in list {
                println!(
                    "{}  {}  traffic {}%  {}  {}  {}",
                    r.name,
                    if r.active { "active" } else { "inactive" },
                    r.traffic_weight,
                    r.health,
                    r.created,
                    r.image
                );
            }
            Ok(0)
        }
        Err(e) => Ok(failed(e)),
    }
}
