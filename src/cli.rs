//! The binary's subcommands for script authors: `chaos-lab check FILE.rhai` (compile and static
//! checks, no service needed) and `chaos-lab run FILE.rhai --url URL` (submit to a running
//! service and stream the run's events until it ends).

use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;
use rhai::{ASTNode, Expr, Stmt};
use serde_json::{Value, json};

use crate::chaos::{catalog, engine};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Compile scenario scripts and check their header and the functions they call, without
    /// running them. Exits non-zero and prints FILE:LINE:COLUMN for every problem.
    Check {
        /// One or more .rhai files.
        #[arg(required = true, value_name = "FILE.rhai")]
        files: Vec<PathBuf>,
    },
    /// Submit a script to a running chaos-lab and stream its steps until it ends. Exits 0 when
    /// the run succeeded, 1 when it failed, was cancelled or timed out, 2 when it could not start.
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
    },
}

/// Runs a subcommand; returns the process exit code.
pub async fn main(cmd: Command) -> i32 {
    let result = match cmd {
        Command::Check { files } => Ok(check(&files)),
        Command::Run { file, url, params, token, timeout_seconds, dry_run } => {
            run(file, url, params, token, timeout_seconds, dry_run).await
        }
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
        let mut report = |line: Option<usize>, col: Option<usize>, msg: &str| {
            println!("{name}:{}:{}: {msg}", line.unwrap_or(1), col.unwrap_or(1));
            problems += 1;
        };
        match catalog::parse_header(&source) {
            Ok((None, _)) => report(Some(1), Some(1), "header has no '//! description: …' line"),
            Ok(_) => {}
            Err(e) => report(e.line, e.column, &e.message),
        }
        match engine::compile(&source) {
            Err(e) => report(e.line, e.column, &e.message),
            Ok(ast) => {
                for (fname, pos) in unknown_functions(&ast) {
                    report(pos.line(), pos.position(), &format!("unknown function '{fname}'"));
                }
            }
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

/// Functions called by name that neither the script API, Rhai's standard library nor the script
/// itself defines. Rhai only finds these at run time; `check` finds them before.
fn unknown_functions(ast: &rhai::AST) -> Vec<(String, rhai::Position)> {
    let engine = engine::sandbox();
    let mut known: std::collections::HashSet<String> =
        engine.collect_fn_metadata(None, |f| Some(f.metadata.name.to_string()), true).into_iter().collect();
    known.extend(engine::API_FUNCTIONS.iter().map(|s| s.to_string()));
    known.extend(ast.iter_functions().map(|f| f.name.to_string()));
    for kw in ["Fn", "call", "curry", "type_of", "print", "debug", "is_def_var", "is_def_fn", "is_shared"] {
        known.insert(kw.into());
    }
    let mut unknown = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) | Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => {
                Some((call, pos))
            }
            _ => None,
        };
        if let Some((call, pos)) = call {
            let n = call.name.as_str();
            let is_ident = n.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_');
            if is_ident && !call.is_qualified() && !known.contains(n) {
                unknown.push((n.to_string(), *pos));
            }
        }
        true
    });
    unknown
}

async fn run(
    file: PathBuf,
    url: String,
    params: Vec<String>,
    token: Option<String>,
    timeout_seconds: Option<u64>,
    dry_run: bool,
) -> anyhow::Result<i32> {
    let script = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
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
    let body = json!({"script": script, "params": p, "timeout_seconds": timeout_seconds, "dry_run": dry_run});
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
    let status = final_status.or_else(|| report["status"].as_str().map(str::to_string)).unwrap_or_default();
    println!("run {run_id}: {status}, verdict {}", report["verdict"].as_str().unwrap_or("?"));
    Ok(if status == "succeeded" { 0 } else { 1 })
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
        "run_finished" => {
            println!("finished: {} ({})", d["status"].as_str().unwrap_or("?"), d["reason"].as_str().unwrap_or(""))
        }
        _ => {}
    }
}
