//! The binary's subcommands. For script authors: `chaos-lab check FILE.rhai` (compile and static
//! checks, no service needed) and `chaos-lab run FILE.rhai|SCENARIO --url URL` (submit a file or
//! a catalog scenario to a running service, stream the run's events until it ends, and write its
//! journal, JUnit XML or HTML report for CI). For operators, replacing the original lab's bash
//! scripts and the `az` CLI: `network inject|clear|list`, `deploy-fault`, `revisions` (see
//! docs/azure.md); they read the azd environment's names.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::azure::{AppRef, Arm, NsgRef};
use crate::chart::esc;
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
    /// Run a scenario file or a catalog scenario on a running chaos-lab, stream its steps until
    /// it ends, then print its impact (time to detect, time to recover, requests, failures, error
    /// budget).
    ///
    /// The argument is a file when it ends in .rhai or names an existing file: the script is sent
    /// to the service. Anything else is the name of a scenario in the service's catalog (GET
    /// /chaos/scenarios, the service's SCENARIOS_DIR), run with the defaults and guards its header
    /// declares; --param overrides a declared parameter. An unknown name (or parameter) is
    /// refused with the service's message, which lists the known ones.
    ///
    /// For CI: --journal writes the run's JSON report and --junit a JUnit XML file (one testcase
    /// per expect(), and a testcase "run" when the run failed for another reason) once the run
    /// has ended; --report writes the HTML page.
    ///
    /// Exit codes: 0 when the run succeeded; 1 when it failed (a script error, a failed expect()
    /// or a failed undo), was aborted by a guard, was cancelled, timed out or was interrupted; 2
    /// when it could not start (bad arguments, service unreachable, run refused: unknown
    /// scenario, compile error, another run in progress, kill switch engaged) or a --journal,
    /// --junit or --report file could not be written.
    ///
    /// Ctrl-C cancels the run (its faults are undone) and keeps streaming until it has ended.
    Run {
        /// A .rhai file (sent as the script), or the name of a scenario in the service's catalog
        /// (e.g. redis-outage).
        #[arg(value_name = "FILE.rhai|SCENARIO")]
        target: PathBuf,
        /// Base URL of the service.
        #[arg(long, env = "CHAOS_LAB_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// A parameter for param(): KEY=VALUE (VALUE is read as JSON when it parses, else text).
        /// With a catalog scenario, KEY must be one its header declares.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Bearer token, when the service has CHAOS_API_TOKEN set.
        #[arg(long, env = "CHAOS_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Stop the run (as timed_out, its faults undone) after this long: seconds (300) or a
        /// duration with a unit (90s, 5m, 1h, 1m30s), whole seconds, at most 1 h. Default: the
        /// service's 900 s.
        #[arg(
            long,
            visible_alias = "timeout",
            value_name = "DURATION",
            value_parser = crate::duration::parse_whole_secs
        )]
        timeout_seconds: Option<u64>,
        /// Apply nothing: faults are recorded in the timeline, not applied (a file or a scenario
        /// name alike). Reads of the service (health(), status(), GET requests) still happen.
        #[arg(long)]
        dry_run: bool,
        /// Hold the run to a guard, as JSON: '{"error_rate_pct": 5, "window_s": 10}' (repeatable;
        /// the same options as guard() in a script)
        #[arg(long = "guard", value_name = "JSON")]
        guards: Vec<String>,
        /// When the run has ended, write its HTML report (timeline, tables) to FILE
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// When the run has ended, write its JSON report to FILE: the whole journal, as GET
        /// /chaos/runs/{id} returns it (run_id, status, verdict, reason, steps, expectations,
        /// measurements, undo, impact, ...)
        #[arg(long, value_name = "FILE")]
        journal: Option<PathBuf>,
        /// When the run has ended, write a JUnit XML file to FILE: a testsuite named after the
        /// scenario (or the file's stem) with the run's duration, one testcase per expect() (named
        /// by its message; a failed one has a <failure>), and a failed testcase "run" when the
        /// run did not succeed for another reason (script error, guard breach, cancel, timeout,
        /// failed undo) carrying the reason
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
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
        /// How long until the rule expires: seconds (300) or a duration with a unit (90s, 5m,
        /// 1h), whole seconds, 1 s to 24 h.
        #[arg(long, value_name = "DURATION", value_parser = rule_ttl)]
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
        Command::Run { target, url, params, token, timeout_seconds, dry_run, guards, report, journal, junit } => {
            let opts = RunOptions { params, token, timeout_seconds, dry_run, guards, report, journal, junit };
            run(target, url, opts).await
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

/// `chaos-lab run`'s options besides the target and the URL.
struct RunOptions {
    params: Vec<String>,
    token: Option<String>,
    timeout_seconds: Option<u64>,
    dry_run: bool,
    guards: Vec<String>,
    report: Option<PathBuf>,
    journal: Option<PathBuf>,
    junit: Option<PathBuf>,
}

/// What `chaos-lab run` runs: a local file, sent as the script, or a scenario of the service's
/// catalog, sent by name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    File(PathBuf),
    Scenario(String),
}

impl Target {
    /// A file when the argument ends in `.rhai` or names an existing file, else a scenario name.
    fn from_arg(arg: PathBuf) -> anyhow::Result<Self> {
        let rhai = arg.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("rhai"));
        if rhai || arg.is_file() {
            return Ok(Self::File(arg));
        }
        match arg.to_str().map(str::trim) {
            Some(name) if !name.is_empty() => Ok(Self::Scenario(name.to_string())),
            _ => bail!("'{}' is neither a .rhai file nor a scenario name", arg.display()),
        }
    }

    /// How messages name it: the file's path, or the scenario's name.
    fn label(&self) -> String {
        match self {
            Self::File(f) => f.display().to_string(),
            Self::Scenario(name) => name.clone(),
        }
    }

    /// The JUnit testsuite and classname: the scenario's name, or the file's stem.
    fn suite(&self) -> String {
        match self {
            Self::File(f) => {
                f.file_stem().map_or_else(|| f.display().to_string(), |s| s.to_string_lossy().into_owned())
            }
            Self::Scenario(name) => name.clone(),
        }
    }
}

async fn run(target: PathBuf, url: String, opts: RunOptions) -> anyhow::Result<i32> {
    let RunOptions { params, token, timeout_seconds, dry_run, guards, report: report_file, journal, junit } = opts;
    let target = Target::from_arg(target)?;
    let label = target.label();
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
    let mut body = json!({
        "params": p, "timeout_seconds": timeout_seconds, "dry_run": dry_run, "guards": guards,
    });
    match &target {
        Target::File(file) => {
            let script = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            body["script"] = Value::String(script);
        }
        Target::Scenario(name) => body["scenario"] = Value::String(name.clone()),
    }
    let url = url.trim_end_matches('/').to_string();
    let client = reqwest::Client::new();
    let auth = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let resp = auth(client.post(format!("{url}/chaos/run")).json(&body))
        .send()
        .await
        .with_context(|| format!("cannot reach chaos-lab at {url}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = answer["detail"].as_str().unwrap_or("no detail");
        match (answer["line"].as_u64(), answer["column"].as_u64()) {
            (Some(l), Some(c)) => eprintln!("{label}:{l}:{c}: {detail}"),
            _ => eprintln!("run refused ({status}): {detail}"),
        }
        return Ok(2);
    }
    let run_id = answer["run_id"].as_str().context("the service did not return a run_id")?.to_string();
    println!("run {run_id} started{}", if dry_run { " (dry run)" } else { "" });

    let events = auth(client.get(format!("{url}/chaos/runs/{run_id}/events"))).send().await?.error_for_status()?;
    let mut stream = events.bytes_stream();
    let mut sse = SseReader::default();
    let mut cancel_sent = false;
    let mut final_status = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'outer: loop {
        tokio::select! {
            chunk = stream.next() => {
                let Some(chunk) = chunk else { break };
                for event in sse.feed(&chunk?) {
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    if event.name == "run_finished" && data["steps"].is_array() {
                        // The run ended before we subscribed: replay its report as events.
                        replay(&data);
                    }
                    print_event(&event.name, &data);
                    if event.name == "run_finished" {
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
    let journal_text =
        auth(client.get(format!("{url}/chaos/runs/{run_id}"))).send().await?.error_for_status()?.text().await?;
    let report: Value = serde_json::from_str(&journal_text).context("the run's report is not JSON")?;
    if let Some(e) = report["error"].as_object() {
        println!(
            "error at {label}:{}:{}: {}",
            e.get("line").and_then(Value::as_u64).unwrap_or(0),
            e.get("column").and_then(Value::as_u64).unwrap_or(0),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    if let Some(m) = report["measurements"].as_object().filter(|m| !m.is_empty()) {
        println!("measurements: {}", Value::Object(m.clone()));
    }
    print_impact(&report);
    if let Some(path) = &journal {
        let mut text = journal_text;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("cannot write the journal to {}", path.display()))?;
        println!("journal: {}", path.display());
    }
    if let Some(path) = &junit {
        std::fs::write(path, junit_xml(&report, &target.suite()))
            .with_context(|| format!("cannot write the JUnit file to {}", path.display()))?;
        println!("junit: {}", path.display());
    }
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

/// `network inject --duration`: a duration (`300`, `90s`, `5m`, `1h`) of 1 s to 24 h.
fn rule_ttl(s: &str) -> Result<u64, String> {
    let secs = crate::duration::parse_whole_secs(s)?;
    if (1..=86_400).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("'{s}' is out of range: the rule must expire after 1 s to 24 h (86400 s)"))
    }
}

/// One event of a Server-Sent Events stream: its `event:` name and its `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamEvent {
    name: String,
    data: String,
}

/// Reads the run's event stream (`GET /chaos/runs/{id}/events`) as the HTML standard defines
/// Server-Sent Events: lines end in `\n`, `\r\n` or `\r`; a blank line ends an event; `event:`
/// names it (default `message`); `data:` lines, one or more, are joined with `\n`; `id:`,
/// `retry:`, other fields and comments (lines starting with `:`, the keep-alives) are ignored,
/// and an event without data is not one. Chunks may split anything, a `\r\n` or a UTF-8
/// character included: lines are decoded whole.
#[derive(Debug, Default)]
struct SseReader {
    /// Bytes received and not yet read as lines.
    buf: Vec<u8>,
    /// How many bytes at the start of `buf` are known to hold no line end.
    scanned: usize,
    /// The first line has been read (a byte-order mark is dropped from it).
    started: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl SseReader {
    /// Takes the next chunk of the stream; returns the events it completed, in order.
    fn feed(&mut self, chunk: &[u8]) -> Vec<StreamEvent> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut i = self.scanned;
        loop {
            let Some(off) = self.buf[i..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                i = self.buf.len();
                break;
            };
            let end = i + off;
            let next = match (self.buf[end], self.buf.get(end + 1)) {
                // A \r that ends the chunk may be the first half of a \r\n: wait for the next one.
                (b'\r', None) => {
                    i = end;
                    break;
                }
                (b'\r', Some(b'\n')) => end + 2,
                _ => end + 1,
            };
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            start = next;
            i = next;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.buf.drain(..start);
        self.scanned = i - start;
        events
    }

    fn line(&mut self, line: &str) -> Option<StreamEvent> {
        let line = if self.started {
            line
        } else {
            self.started = true;
            line.strip_prefix('\u{feff}').unwrap_or(line)
        };
        if line.is_empty() {
            let name = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let name = if name.is_empty() { "message".to_string() } else { name };
            return Some(StreamEvent { name, data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id`, `retry` and fields this reader does not know: nothing the CLI needs.
            _ => {}
        }
        None
    }
}

/// Why a run that did not succeed failed, besides its expectations: none when it succeeded, or
/// when its failed `expect()`s are the whole story (they have their own testcases). Otherwise the
/// status and reason, with the script error, the breach and the failed undos.
fn run_failure(report: &Value) -> Option<String> {
    let status = report["status"].as_str().unwrap_or("unknown");
    if status == "succeeded" {
        return None;
    }
    let expect_failed =
        report["expectations"].as_array().is_some_and(|xs| xs.iter().any(|x| x["ok"].as_bool() != Some(true)));
    let undo_failed: Vec<&Value> = report["undo"]
        .as_array()
        .map(|u| u.iter().filter(|u| u["ok"].as_bool() != Some(true)).collect())
        .unwrap_or_default();
    let error = report["error"].as_object();
    if status == "failed" && expect_failed && error.is_none() && undo_failed.is_empty() {
        return None;
    }
    let mut why = format!("{status}: {}", report["reason"].as_str().unwrap_or("no reason given"));
    if let Some(e) = error {
        let _ = write!(
            why,
            "\nscript error at line {}, column {}: {}",
            e.get("line").and_then(Value::as_u64).map_or("?".to_string(), |l| l.to_string()),
            e.get("column").and_then(Value::as_u64).map_or("?".to_string(), |c| c.to_string()),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    if let Some(b) = report["breach"].as_object() {
        let _ = write!(
            why,
            "\nguard breached at {:.3} s: {} was {} against {} ({} requests in the window)",
            b.get("offset_s").and_then(Value::as_f64).unwrap_or(0.0),
            b.get("metric").and_then(Value::as_str).unwrap_or("?"),
            b.get("observed").unwrap_or(&Value::Null),
            b.get("threshold").unwrap_or(&Value::Null),
            b.get("requests").unwrap_or(&Value::Null)
        );
    }
    for u in undo_failed {
        let _ = write!(
            why,
            "\nundo failed: {}: {}",
            u["action"].as_str().unwrap_or("?"),
            u["detail"].as_str().map_or_else(|| u["detail"].to_string(), str::to_string)
        );
    }
    Some(why)
}

/// The run as a JUnit XML file: one `<testsuite>` named `suite` (the scenario, or the file's
/// stem) with the run's duration; one `<testcase>` per `expect()`, named by its message, with a
/// `<failure>` when it did not hold; and a failed testcase `run` when the run did not succeed for
/// another reason ([`run_failure`]).
fn junit_xml(report: &Value, suite: &str) -> String {
    let suite_attr = esc(suite);
    let mut cases = String::new();
    let (mut tests, mut failures) = (0usize, 0usize);
    for x in report["expectations"].as_array().into_iter().flatten() {
        tests += 1;
        let message = x["message"].as_str().unwrap_or("");
        let _ = write!(cases, "  <testcase classname=\"{suite_attr}\" name=\"{}\"", esc(message));
        if x["ok"].as_bool() == Some(true) {
            cases.push_str("/>\n");
            continue;
        }
        failures += 1;
        let at = x["line"].as_u64().map_or(String::new(), |l| format!(" at line {l}"));
        let _ = write!(
            cases,
            ">\n    <failure message=\"{}\" type=\"expect\">expect() failed{at}: {}</failure>\n  </testcase>\n",
            esc(message),
            esc(message)
        );
    }
    if let Some(why) = run_failure(report) {
        tests += 1;
        failures += 1;
        let _ = write!(
            cases,
            "  <testcase classname=\"{suite_attr}\" name=\"run\">\n    <failure message=\"{}\" type=\"{}\">{}</failure>\n  </testcase>\n",
            esc(report["reason"].as_str().unwrap_or("the run did not succeed")),
            esc(report["status"].as_str().unwrap_or("unknown")),
            esc(&why)
        );
    }
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = write!(
        xml,
        "<testsuite name=\"{suite_attr}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\"",
        report["duration_s"].as_f64().unwrap_or(0.0)
    );
    if let Some(t) = report["started_at"].as_str() {
        let _ = write!(xml, " timestamp=\"{}\"", esc(t));
    }
    xml.push_str(">\n  <properties>\n");
    for key in ["run_id", "scenario", "status", "verdict", "reason", "dry_run"] {
        let value = match &report[key] {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = writeln!(xml, "    <property name=\"{key}\" value=\"{}\"/>", esc(&value));
    }
    xml.push_str("  </properties>\n");
    xml.push_str(&cases);
    xml.push_str("</testsuite>\n");
    xml
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Feeds `chunks` one after the other; returns every event as (name, data).
    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut reader = SseReader::default();
        chunks.iter().flat_map(|c| reader.feed(c)).map(|e| (e.name, e.data)).collect()
    }

    fn pair(name: &str, data: &str) -> (String, String) {
        (name.to_string(), data.to_string())
    }

    #[test]
    fn sse_events_as_the_service_sends_them_today() {
        let stream = "event: run_started\ndata: {\"a\":1}\n\n:\n\nevent: run_finished\ndata: {\"b\":2}\n\n";
        assert_eq!(
            events(&[stream.as_bytes()]),
            vec![pair("run_started", "{\"a\":1}"), pair("run_finished", "{\"b\":2}")]
        );
    }

    #[test]
    fn sse_ids_retries_comments_crlf_and_multi_line_data() {
        let stream = "retry: 3000\r\n\r\n: keep-alive\r\n\r\nid: 1\r\nevent: log\r\ndata: {\"m\":\r\ndata: 1}\r\n\r\n\
                      id: 2\r\nevent: run_finished\r\nretry: 10\r\ndata: {}\r\n\r\n";
        let whole = events(&[stream.as_bytes()]);
        assert_eq!(whole, vec![pair("log", "{\"m\":\n1}"), pair("run_finished", "{}")]);
        let data: Value = serde_json::from_str(&whole[0].1).unwrap();
        assert_eq!(data["m"], 1);
        // Split anywhere, a \r\n included, the events are the same.
        let bytes: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        assert_eq!(events(&bytes), whole);
        let (a, b) = stream.as_bytes().split_at(stream.find("\r\n\r\nid: 2").unwrap() + 1);
        assert_eq!(events(&[a, b]), whole);
    }

    #[test]
    fn sse_bare_cr_no_space_default_name_bom_and_split_characters() {
        // A \r at the very end may still become a \r\n: the blank line is read once more follows.
        assert!(events(&[b"event:x\rdata:1\r\r".as_slice()]).is_empty());
        assert_eq!(events(&[b"event:x\rdata:1\r\r".as_slice(), b": next\r".as_slice()]), vec![pair("x", "1")]);
        assert_eq!(events(&["\u{feff}data: plain\n\n".as_bytes()]), vec![pair("message", "plain")]);
        // An event without data is no event; its name does not leak into the next one.
        assert_eq!(events(&[b"event: lonely\n\ndata: d\n\n".as_slice()]), vec![pair("message", "d")]);
        let text = "event: log\ndata: {\"message\":\"caf\u{e9}\"}\n\n".as_bytes();
        let cut = text.iter().position(|&b| b == 0xc3).unwrap() + 1;
        assert_eq!(events(&[&text[..cut], &text[cut..]]), vec![pair("log", "{\"message\":\"caf\u{e9}\"}")]);
    }

    fn report(status: &str, reason: &str, expectations: Value) -> Value {
        json!({
            "run_id": "20260730T120000123Z-1a2b3c", "scenario": "demo", "status": status,
            "verdict": if status == "succeeded" { "pass" } else { "fail" }, "reason": reason, "dry_run": false,
            "started_at": "2026-07-30T12:00:00.123456Z", "duration_s": 1.5, "expectations": expectations,
            "undo": [], "error": null, "breach": null,
        })
    }

    #[test]
    fn junit_has_a_testcase_per_expectation() {
        let ok = json!([{"ok": true, "message": "healthy", "line": 1}, {"ok": true, "message": "fast", "line": 2}]);
        let xml = junit_xml(&report("succeeded", "the script finished and every expectation held", ok), "demo");
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"demo\""), "{xml}");
        assert!(xml.contains("tests=\"2\" failures=\"0\"") && xml.contains("time=\"1.500\""), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 2, "{xml}");
        assert!(xml.contains("<testcase classname=\"demo\" name=\"healthy\"/>"), "{xml}");
        assert!(!xml.contains("<failure"), "{xml}");
        assert!(xml.contains("<property name=\"run_id\" value=\"20260730T120000123Z-1a2b3c\"/>"), "{xml}");
        assert!(xml.trim_end().ends_with("</testsuite>"), "{xml}");

        let failed = json!([{"ok": false, "message": "a <b> & \"c\"\nnext", "line": 3}, {"ok": true, "message": "x"}]);
        let xml = junit_xml(&report("failed", "1 expectation(s) failed: a <b>", failed), "my file");
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"a &lt;b&gt; &amp; &quot;c&quot;&#10;next\">"), "{xml}");
        assert!(
            xml.contains("<failure message=\"a &lt;b&gt; &amp; &quot;c&quot;&#10;next\" type=\"expect\">"),
            "{xml}"
        );
        assert!(xml.contains("expect() failed at line 3: a &lt;b&gt;"), "{xml}");
        assert!(!xml.contains("name=\"run\""), "failed expectations alone need no run testcase: {xml}");
    }

    #[test]
    fn junit_adds_a_failed_run_testcase_for_other_reasons() {
        let one = json!([{"ok": true, "message": "started", "line": 1}]);
        let xml = junit_xml(&report("timed_out", "the run exceeded its timeout_seconds", one), "slow");
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("<testcase classname=\"slow\" name=\"run\">"), "{xml}");
        assert!(xml.contains("<failure message=\"the run exceeded its timeout_seconds\" type=\"timed_out\">"), "{xml}");

        let mut r = report("failed", "the script stopped with an error", json!([]));
        r["error"] = json!({"message": "boom", "line": 2, "column": 1});
        let xml = junit_xml(&r, "broken");
        assert!(xml.contains("tests=\"1\" failures=\"1\""), "{xml}");
        assert!(xml.contains("script error at line 2, column 1: boom"), "{xml}");

        // A failed undo is worth a testcase even beside a failed expectation.
        let mut r = report("failed", "1 expectation(s) failed: x", json!([{"ok": false, "message": "x"}]));
        r["undo"] = json!([{"action": "stop the load", "ok": false, "detail": "undo failed: gone", "at": "t"}]);
        let xml = junit_xml(&r, "undo");
        assert!(xml.contains("tests=\"2\" failures=\"2\""), "{xml}");
        assert!(xml.contains("undo failed: stop the load: undo failed: gone"), "{xml}");
    }

    #[test]
    fn a_run_target_is_a_file_or_a_scenario_name() {
        assert_eq!(Target::from_arg("redis-outage".into()).unwrap(), Target::Scenario("redis-outage".into()));
        assert_eq!(Target::from_arg("missing.rhai".into()).unwrap(), Target::File("missing.rhai".into()));
        let dir = std::env::temp_dir().join(format!("chaos-lab-cli-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("no-extension");
        std::fs::write(&plain, "log(1);\n").unwrap();
        assert_eq!(Target::from_arg(plain.clone()).unwrap(), Target::File(plain.clone()));
        assert_eq!(Target::File("scenarios/redis-outage.rhai".into()).suite(), "redis-outage");
        assert_eq!(Target::Scenario("cpu-pressure".into()).suite(), "cpu-pressure");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn duration_flags_take_units() {
        let parse = |args: &[&str]| {
            crate::config::Cli::try_parse_from(std::iter::once("chaos-lab").chain(args.iter().copied()))
        };
        let cli =
            parse(&["run", "redis-outage", "--timeout", "5m", "--junit", "j.xml", "--journal", "r.json"]).unwrap();
        let Some(Command::Run { target, timeout_seconds, junit, journal, .. }) = cli.command else { panic!("not run") };
        assert_eq!(target, PathBuf::from("redis-outage"));
        assert_eq!(timeout_seconds, Some(300));
        assert_eq!((junit, journal), (Some(PathBuf::from("j.xml")), Some(PathBuf::from("r.json"))));
        let cli = parse(&["run", "x.rhai", "--timeout-seconds", "45"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run { timeout_seconds: Some(45), .. })));
        let e = parse(&["run", "x.rhai", "--timeout-seconds", "5x"]).unwrap_err().to_string();
        assert!(e.contains("'5x' is not a duration") && e.contains("30s, 5m"), "{e}");

        let cli = parse(&["network", "inject", "--duration", "90s"]).unwrap();
        let Some(Command::Network { action: NetworkAction::Inject { duration, .. } }) = cli.command else {
            panic!("not network inject")
        };
        assert_eq!(duration, Some(90));
        let e = parse(&["network", "inject", "--duration", "25h"]).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
