//! `chaos-lab run`: submit a file or a catalog scenario to a running service, stream the run's
//! events until it ends, print its impact, and write its journal, JUnit XML or HTML report.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::chart::esc;

/// `chaos-lab run`'s options besides the target and the URL.
pub(super) struct RunOptions {
    pub(super) params: Vec<String>,
    pub(super) token: Option<String>,
    pub(super) timeout_seconds: Option<u64>,
    pub(super) dry_run: bool,
    pub(super) guards: Vec<String>,
    pub(super) report: Option<PathBuf>,
    pub(super) journal: Option<PathBuf>,
    pub(super) junit: Option<PathBuf>,
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

pub(super) async fn run(target: PathBuf, url: String, opts: RunOptions) -> anyhow::Result<i32> {
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
    // Server-Sent Events as the HTML standard reads them (line ends, multi-line data, comments).
    let mut stream = events.bytes_stream().eventsource();
    let mut cancel_sent = false;
    let mut final_status = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            chunk = stream.next() => {
                let Some(event) = chunk else { break };
                let event = event.context("the run's event stream broke off")?;
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                if event.event == "run_finished" && data["steps"].is_array() {
                    // The run ended before we subscribed: replay its report as events.
                    replay(&data);
                }
                print_event(&event.event, &data);
                if event.event == "run_finished" {
                    final_status = data["status"].as_str().map(str::to_string);
                    break;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
