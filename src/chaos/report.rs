//! What a run produces: its report (the JSON journal on disk and `GET /chaos/runs/{id}`) and the
//! live event stream (`GET /chaos/runs/{id}/events`). One [`RunShared`] per run is written by the
//! run's thread and read by HTTP handlers.
//!
//! It also bounds what a run may keep ([`RunLimits`]): the engine adds log lines, steps and
//! measurements through [`RunShared::log`], [`RunShared::start_step`] and [`RunShared::measure`],
//! never by pushing into the report itself. A script that floods its log would otherwise grow the
//! service until the kernel OOM-kills it, and a killed service undoes none of the faults the run
//! applied. What a cap drops is counted in the report's `truncated`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

/// How much one run may keep in memory and in its journal. Each cap bounds something a script
/// controls (a loop of `log()`, of calls, of `record()` names); without them one run could exhaust
/// the service's memory, and an OOM-killed service leaves its faults behind. What goes over a cap
/// is dropped and counted in [`RunReport::truncated`]; the script itself keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Log lines kept in the report (`RUN_MAX_LOG_LINES`).
    pub max_log_lines: usize,
    /// Bytes of log messages kept in the report (`RUN_MAX_LOG_BYTES`): a few huge lines are as
    /// heavy as many small ones.
    pub max_log_bytes: usize,
    /// Steps kept in the timeline (`RUN_MAX_STEPS`).
    pub max_steps: usize,
    /// Distinct measurement names (`RUN_MAX_RECORDS`); overwriting a name is always allowed.
    pub max_records: usize,
    /// Events kept for replay to late subscribers of the event stream (`RUN_MAX_EVENTS`).
    pub max_events: usize,
    /// Bytes of event data (as serialized JSON) kept for replay. Every kept event is a second
    /// copy of a log line or step, so the replay needs its own byte cap.
    pub max_event_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_log_lines: 10_000,
            max_log_bytes: 4 * 1024 * 1024,
            max_steps: 10_000,
            max_records: 1_000,
            max_events: 20_000,
            max_event_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What the caps of a run (`RUN_MAX_*`) dropped from it, as counts. Absent from a report (and from
/// journals written before caps existed) when nothing was dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Truncated {
    /// Log lines dropped (RUN_MAX_LOG_LINES or RUN_MAX_LOG_BYTES reached).
    pub logs: u64,
    /// Bytes of the messages of those lines.
    pub log_bytes: u64,
    /// Script calls left out of the timeline (RUN_MAX_STEPS).
    pub steps: u64,
    /// `record()` calls with a new name dropped (RUN_MAX_RECORDS).
    pub records: u64,
    /// Events broadcast live but not kept for replay (RUN_MAX_EVENTS or the replay's byte cap).
    pub events: u64,
    /// Series points dropped once the series held its cap.
    pub series: u64,
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// The service died during the run (crash, `kill -9`, OOM kill); the next start undid what
    /// the ledger held for it and lists that under `recovered`.
    Interrupted,
    /// A guard was breached: the run stopped itself, undid every fault at once, and says which
    /// guard saw what under `breach`.
    Aborted,
}

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    TimedOut,
    KillSwitch,
    Shutdown,
    /// A guard was breached ([`super::observe`]).
    Breach,
}

impl StopReason {
    pub fn status(self) -> RunStatus {
        match self {
            Self::TimedOut => RunStatus::TimedOut,
            Self::Breach => RunStatus::Aborted,
            _ => RunStatus::Cancelled,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled by POST /chaos/runs/{id}/cancel",
            Self::TimedOut => "the run exceeded its timeout_seconds",
            Self::KillSwitch => "cancelled by the kill switch (POST /chaos/stop)",
            Self::Shutdown => "cancelled because the service is shutting down",
            Self::Breach => "aborted: a guard was breached (see breach)",
        }
    }
}

/// A position in the script.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ScriptError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// One script call in the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    pub seq: usize,
    pub name: String,
    /// The call's arguments, for people.
    pub args: String,
    pub line: Option<usize>,
    pub started_at: String,
    /// Seconds since the run started.
    pub offset_s: f64,
    pub ended_at: Option<String>,
    pub duration_ms: Option<f64>,
    /// What it returned, for people.
    pub outcome: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    pub at: String,
    pub offset_s: f64,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Expectation {
    pub ok: bool,
    pub message: String,
    pub line: Option<usize>,
    pub at: String,
}

/// One undo performed when the run ended.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UndoRecord {
    pub action: String,
    pub ok: bool,
    pub detail: String,
    pub at: String,
    /// The fault ledger entry undone (none for an `on_rollback` closure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_id: Option<String>,
}

/// A fault of an interrupted run that the next start undid (or failed to).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recovered {
    pub fault: String,
    pub kind: String,
    pub target: String,
    pub ok: bool,
    pub detail: String,
}

/// What the run saw each second: the load its generators put on the service and the service's
/// own health.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Series {
    /// One point per second per load generator, in time order.
    pub load: Vec<LoadPoint>,
    /// One `/health` sample per second.
    pub health: Vec<HealthPoint>,
}

/// One second of one load generator; `t` is the run's offset at the end of that second.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoadPoint {
    /// The script's name for the generator (`loadgen-1`, ...).
    pub loadgen: String,
    #[serde(flatten)]
    pub second: crate::loadgen::report::Second,
}

/// What `/health` said at run offset `t`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthPoint {
    pub t: f64,
    /// `healthy`, `unhealthy` (an answer that says so) or `unreachable` (no answer within the
    /// sample's second).
    pub state: String,
    /// How long the answer took; none when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// When one of the run's faults was on: applied at `applied_s`, undone at `undone_s` (run
/// offsets). The ledger does the undo; this is only what the report draws.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaultSpan {
    pub fault_id: String,
    pub kind: String,
    pub target: String,
    pub applied_s: f64,
    #[serde(default)]
    pub undone_s: Option<f64>,
    /// The script line that applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The guard breach that aborted a run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Breach {
    pub at: String,
    pub offset_s: f64,
    /// The guard, as declared.
    pub guard: super::guard::Guard,
    /// `p95_ms`, `error_rate_pct` or `unhealthy_s`.
    pub metric: String,
    pub observed: f64,
    pub threshold: f64,
    /// Requests in the guard's window when it fired (0 for `unhealthy_s`).
    pub requests: u64,
}

/// What the run did to users, from its series; computed when a run applied faults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Impact {
    /// First fault applied → first breach or first unhealthy sample; none if neither happened.
    pub time_to_detect_s: Option<f64>,
    /// `breach` or `unhealthy`: what the detection was.
    pub detected_by: Option<String>,
    /// Last fault undone → the first sample healthy and back within every guard; none if the
    /// run ended before that.
    pub time_to_recover_s: Option<f64>,
    /// Requests and failures the run's load generators saw during the run.
    pub requests: u64,
    pub failures: u64,
    pub error_rate_pct: f64,
    /// Failures as a share of what the strictest `error_rate_pct` guard allows for these
    /// requests (100 = the whole budget); none without such a guard or without requests.
    pub error_budget_burned_pct: Option<f64>,
    /// Seconds of samples that were not healthy.
    pub unhealthy_s: f64,
}

/// The whole story of a run; also its journal on disk.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReport {
    pub run_id: String,
    pub scenario: Option<String>,
    pub status: RunStatus,
    /// `pass` or `fail` once the run has ended; `null` while running.
    pub verdict: Option<String>,
    /// Why the run ended the way it did, in a sentence.
    pub reason: Option<String>,
    pub dry_run: bool,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub timeout_seconds: u64,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_s: Option<f64>,
    pub steps: Vec<Step>,
    pub logs: Vec<LogLine>,
    pub expectations: Vec<Expectation>,
    pub measurements: BTreeMap<String, serde_json::Value>,
    pub undo: Vec<UndoRecord>,
    pub error: Option<ScriptError>,
    /// What the script returned, if anything.
    pub result: Option<serde_json::Value>,
    /// What the run's caps (`RUN_MAX_*`) dropped; set as soon as anything is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
    /// The replica that ran it, when the run is shared through the fleet's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Interrupted runs: what the next start undid for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<Recovered>,
    /// The guards the run is held to (request, scenario header and `guard()` calls).
    #[serde(default)]
    pub guards: Vec<super::guard::Guard>,
    /// The breach that aborted the run, if one did.
    #[serde(default)]
    pub breach: Option<Breach>,
    /// When each fault of the run was on.
    #[serde(default)]
    pub faults: Vec<FaultSpan>,
    /// Per-second load and health.
    #[serde(default)]
    pub series: Series,
    /// What the run did to users (runs that applied faults).
    #[serde(default)]
    pub impact: Option<Impact>,
}

/// The short form `GET /chaos/runs` lists.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunSummary {
    pub run_id: String,
    pub scenario: Option<String>,
    pub status: RunStatus,
    pub verdict: Option<String>,
    pub dry_run: bool,
    pub started_at: String,
    pub ended_at: Option<String>,
}

impl RunReport {
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            run_id: self.run_id.clone(),
            scenario: self.scenario.clone(),
            status: self.status,
            verdict: self.verdict.clone(),
            dry_run: self.dry_run,
            started_at: self.started_at.clone(),
            ended_at: self.ended_at.clone(),
        }
    }
}

/// The `'static` name of a known event, for events read back from the store.
pub fn event_name(name: &str) -> Option<&'static str> {
    const NAMES: [&str; 11] = [
        "run_started",
        "step_started",
        "step_finished",
        "log",
        "expect",
        "measurement",
        "undo",
        "run_finished",
        "lagged",
        "truncated",
        "breach",
    ];
    NAMES.iter().find(|n| **n == name).copied()
}

/// One Server-Sent Event: `event:` name and JSON `data:`.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub data: serde_json::Value,
    /// The event's place in the run's stream (1, 2, …, dropped events counted), the SSE `id`
    /// a client resumes from; `None` for notices the stream adds itself (`lagged`).
    pub seq: Option<u64>,
}

/// Events that are replayed whatever the caps: the stream of a late subscriber starts with
/// `run_started` and ends at `run_finished` (`http::runs` closes it there).
const ALWAYS_REPLAYED: [&str; 2] = ["run_started", "run_finished"];

/// A run in progress, shared between its thread and the HTTP handlers.
pub struct RunShared {
    pub id: String,
    pub started: Instant,
    /// The caps this run was started with.
    pub limits: RunLimits,
    report: Mutex<Kept>,
    /// Every event kept so far (replayed to late subscribers) and the live feed, under one lock so
    /// a subscriber never misses or doubles an event.
    events: Mutex<Replay>,
    /// Set once from outside (cancel, timeout, kill switch, shutdown); read by the engine's
    /// progress hook and by long calls.
    pub stop: watch::Sender<Option<StopReason>>,
    /// True once the run has ended and its undo is complete.
    pub done: watch::Sender<bool>,
    /// Set by the kill switch or a second stop: `on_rollback` closures are cut short.
    pub abort_rollbacks: watch::Sender<bool>,
    /// The run's trace root; taken (and so closed and exported) when the run ends.
    pub span: Mutex<Option<tracing::Span>>,
}

/// The report and what the caps need to know about it, under one lock.
struct Kept {
    report: RunReport,
    /// Lines and message bytes kept by [`RunShared::log`] (the truncation marker not counted).
    log_lines: usize,
    log_bytes: usize,
    /// Set when the log cap is first reached: every later line is dropped, so the log is a
    /// clean prefix followed by one marker.
    log_cut: bool,
}

/// The replay buffer of the event stream.
struct Replay {
    kept: Vec<Event>,
    /// Serialized size of the data of `kept`.
    bytes: usize,
    /// Events not kept once the buffer was full; from the first one on, only
    /// [`ALWAYS_REPLAYED`] events are kept, so the replay is a prefix of the stream.
    dropped: u64,
    /// Events emitted so far, kept or not: the last `seq` given.
    emitted: u64,
    live: broadcast::Sender<Event>,
}

impl RunShared {
    pub fn new(report: RunReport, limits: RunLimits) -> Self {
        let kept = Kept {
            log_lines: report.logs.len(),
            log_bytes: report.logs.iter().map(|l| l.message.len()).sum(),
            log_cut: false,
            report,
        };
        Self {
            id: kept.report.run_id.clone(),
            started: Instant::now(),
            limits,
            report: Mutex::new(kept),
            events: Mutex::new(Replay {
                kept: Vec::new(),
                bytes: 0,
                dropped: 0,
                emitted: 0,
                live: broadcast::channel(1024).0,
            }),
            stop: watch::channel(None).0,
            done: watch::channel(false).0,
            abort_rollbacks: watch::channel(false).0,
            span: Mutex::new(None),
        }
    }

    pub fn snapshot(&self) -> RunReport {
        self.report.lock().unwrap().report.clone()
    }

    /// Changes the report directly. Log lines, steps and measurements go through [`Self::log`],
    /// [`Self::start_step`] and [`Self::measure`] instead, which apply the caps.
    pub fn update<R>(&self, f: impl FnOnce(&mut RunReport) -> R) -> R {
        f(&mut self.report.lock().unwrap().report)
    }

    /// Adds a line to the log and emits it as a `log` event. Returns false when the line was
    /// dropped: the first line over RUN_MAX_LOG_LINES or RUN_MAX_LOG_BYTES is replaced by one
    /// marker line saying so, and every later line is dropped.
    pub fn log(&self, line: LogLine) -> bool {
        let len = line.message.len();
        let mut k = self.report.lock().unwrap();
        let marker = if k.log_cut {
            None
        } else if k.log_lines < self.limits.max_log_lines && k.log_bytes + len <= self.limits.max_log_bytes {
            k.log_lines += 1;
            k.log_bytes += len;
            let data = json!(line);
            k.report.logs.push(line);
            drop(k);
            self.emit("log", data);
            return true;
        } else {
            k.log_cut = true;
            let (setting, limit) = if k.log_lines >= self.limits.max_log_lines {
                ("RUN_MAX_LOG_LINES", self.limits.max_log_lines)
            } else {
                ("RUN_MAX_LOG_BYTES", self.limits.max_log_bytes)
            };
            let marker = LogLine {
                at: line.at.clone(),
                offset_s: line.offset_s,
                line: line.line,
                message: format!("log truncated: {setting} ({limit}) reached; later lines are dropped"),
            };
            k.report.logs.push(marker.clone());
            Some(marker)
        };
        let t = k.report.truncated.get_or_insert_with(Truncated::default);
        t.logs += 1;
        t.log_bytes += len as u64;
        drop(k);
        if let Some(marker) = marker {
            self.emit("log", json!(marker));
        }
        false
    }

    /// Adds a step to the timeline with the next `seq` and emits `step_started`. `None` when the
    /// timeline is full (RUN_MAX_STEPS): the call still runs, but is not listed.
    pub fn start_step(&self, mut step: Step) -> Option<usize> {
        let mut k = self.report.lock().unwrap();
        if k.report.steps.len() >= self.limits.max_steps {
            let t = k.report.truncated.get_or_insert_with(Truncated::default);
            t.steps += 1;
            let first = t.steps == 1;
            drop(k);
            if first {
                self.note(
                    step.line,
                    format!(
                        "timeline truncated: RUN_MAX_STEPS ({}) reached; later calls run but are not listed",
                        self.limits.max_steps
                    ),
                );
            }
            return None;
        }
        step.seq = k.report.steps.len() + 1;
        let seq = step.seq;
        let data = json!(step);
        k.report.steps.push(step);
        drop(k);
        self.emit("step_started", data);
        Some(seq)
    }

    /// Completes the step `seq` (from [`Self::start_step`]) and emits `step_finished`.
    pub fn finish_step(&self, seq: usize, f: impl FnOnce(&mut Step)) {
        let mut k = self.report.lock().unwrap();
        if seq == 0 || seq > k.report.steps.len() {
            return;
        }
        f(&mut k.report.steps[seq - 1]);
        let data = json!(k.report.steps[seq - 1]);
        drop(k);
        self.emit("step_finished", data);
    }

    /// Stores a measurement and emits a `measurement` event. Returns false when `name` is new and
    /// the run already has RUN_MAX_RECORDS names; overwriting a name is always allowed.
    pub fn measure(&self, name: String, value: Value) -> bool {
        let data = json!({"name": name, "value": value});
        let mut k = self.report.lock().unwrap();
        let m = &k.report.measurements;
        if !m.contains_key(&name) && m.len() >= self.limits.max_records {
            let t = k.report.truncated.get_or_insert_with(Truncated::default);
            t.records += 1;
            let first = t.records == 1;
            drop(k);
            if first {
                self.note(
                    None,
                    format!(
                        "measurements truncated: RUN_MAX_RECORDS ({}) names reached; record() of a new name \
                         is dropped (first dropped: '{name}')",
                        self.limits.max_records
                    ),
                );
            }
            return false;
        }
        k.report.measurements.insert(name, value);
        drop(k);
        self.emit("measurement", data);
        true
    }

    /// A line of the service's own in the run log.
    pub fn note(&self, line: Option<usize>, message: String) {
        self.log(LogLine { at: crate::timestamp(), offset_s: self.offset_s(), line, message });
    }

    /// Broadcasts an event to the live subscribers and keeps it for replay while the replay is
    /// within RUN_MAX_EVENTS and its byte cap. Past that, events are still broadcast but no
    /// longer kept (counted in `truncated.events`; a late subscriber gets a `lagged` event in
    /// their place).
    pub fn emit(&self, name: &'static str, data: Value) {
        let size = json_len(&data);
        let dropped = {
            let mut r = self.events.lock().unwrap();
            r.emitted += 1;
            let event = Event { name, data, seq: Some(r.emitted) };
            let fits = r.dropped == 0
                && r.kept.len() < self.limits.max_events
                && r.bytes.saturating_add(size) <= self.limits.max_event_bytes;
            let keep = fits || ALWAYS_REPLAYED.contains(&name);
            if keep {
                r.bytes += size;
                r.kept.push(event.clone());
            } else {
                r.dropped += 1;
            }
            let _ = r.live.send(event);
            !keep
        };
        if dropped {
            self.update(|r| r.truncated.get_or_insert_with(Truncated::default).events += 1);
        }
    }

    /// Events kept so far, plus a receiver for the ones to come. When the replay was capped, a
    /// `lagged` event stands where the dropped events were.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let r = self.events.lock().unwrap();
        let mut past = r.kept.clone();
        if r.dropped > 0 {
            let gap = Event {
                seq: None,
                name: "lagged",
                data: json!({
                    "missed_events": r.dropped,
                    "reason": format!(
                        "the run's event replay is full (RUN_MAX_EVENTS is {} events, and {} bytes of \
                         them at most): these events were sent live only; read the report for them",
                        self.limits.max_events, self.limits.max_event_bytes
                    ),
                }),
            };
            let at = past.iter().rposition(|e| e.name == "run_finished").unwrap_or(past.len());
            past.insert(at, gap);
        }
        (past, r.live.subscribe())
    }

    pub fn offset_s(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }

    /// Asks the run to stop; the first reason wins. The kill switch, or any stop of a run that
    /// is already stopping, also cuts its `on_rollback` closures short.
    pub fn request_stop(&self, reason: StopReason) {
        let first = self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(reason);
                true
            } else {
                false
            }
        });
        if !first || reason == StopReason::KillSwitch {
            self.abort_rollbacks.send_replace(true);
        }
    }

    pub fn rollbacks_aborted(&self) -> bool {
        *self.abort_rollbacks.borrow()
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }
}

/// The length of `v` serialized as JSON, without building the string.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal as written before footprint limits existed (no `truncated`).
    fn report() -> RunReport {
        serde_json::from_value(json!({
            "run_id": "20260730T120000123Z-1a2b3c", "scenario": null, "status": "running", "verdict": null,
            "reason": null, "dry_run": false, "params": {}, "timeout_seconds": 900,
            "started_at": "2026-07-30T12:00:00.123456Z", "ended_at": null, "duration_s": null,
            "steps": [], "logs": [], "expectations": [], "measurements": {}, "undo": [], "error": null, "result": null
        }))
        .unwrap()
    }

    fn line(message: &str) -> LogLine {
        LogLine { at: crate::timestamp(), offset_s: 0.0, line: Some(1), message: message.into() }
    }

    fn step() -> Step {
        Step {
            seq: 0,
            name: "sleep".into(),
            args: "1".into(),
            line: Some(2),
            started_at: crate::timestamp(),
            offset_s: 0.0,
            ended_at: None,
            duration_ms: None,
            outcome: None,
            error: None,
        }
    }

    #[test]
    fn old_journals_read_and_untruncated_reports_do_not_mention_it() {
        let r = report();
        assert!(r.truncated.is_none());
        assert!(!serde_json::to_string(&r).unwrap().contains("truncated"));
    }

    #[test]
    fn the_log_stops_at_its_cap_with_one_marker() {
        let run = RunShared::new(report(), RunLimits { max_log_lines: 3, ..RunLimits::default() });
        let kept: Vec<bool> = (0..5).map(|i| run.log(line(&format!("line {i}")))).collect();
        assert_eq!(kept, [true, true, true, false, false]);
        let r = run.snapshot();
        assert_eq!(r.logs.len(), 4);
        assert_eq!(r.logs[3].message, "log truncated: RUN_MAX_LOG_LINES (3) reached; later lines are dropped");
        assert_eq!(r.truncated, Some(Truncated { logs: 2, log_bytes: 12, ..Truncated::default() }));

        let run = RunShared::new(report(), RunLimits { max_log_bytes: 10, ..RunLimits::default() });
        assert!(run.log(line("0123456789")));
        assert!(!run.log(line("x")));
        assert!(!run.log(line("y")), "later lines are dropped even if they would fit");
        let r = run.snapshot();
        assert_eq!(r.logs.len(), 2);
        assert!(r.logs[1].message.contains("RUN_MAX_LOG_BYTES (10) reached"), "{}", r.logs[1].message);
    }

    #[test]
    fn steps_and_records_stop_at_their_caps() {
        let run = RunShared::new(report(), RunLimits { max_steps: 2, max_records: 1, ..RunLimits::default() });
        assert_eq!(run.start_step(step()), Some(1));
        assert_eq!(run.start_step(step()), Some(2));
        assert_eq!(run.start_step(step()), None);
        run.finish_step(2, |s| s.outcome = Some("slept".into()));
        assert!(run.measure("a".into(), json!(1)));
        assert!(run.measure("a".into(), json!(2)), "overwriting a name is always allowed");
        assert!(!run.measure("b".into(), json!(3)));
        let r = run.snapshot();
        assert_eq!(r.steps.len(), 2);
        assert_eq!(r.steps[1].outcome.as_deref(), Some("slept"));
        assert_eq!(r.measurements["a"], 2);
        assert!(!r.measurements.contains_key("b"));
        assert_eq!(r.truncated.as_ref().map(|t| (t.steps, t.records)), Some((1, 1)));
        assert_eq!(r.logs.len(), 2, "one note for each cap: {:?}", r.logs);
    }

    #[test]
    fn the_replay_stops_at_its_cap_while_live_subscribers_get_everything() {
        let run = RunShared::new(report(), RunLimits { max_events: 3, ..RunLimits::default() });
        let (_, mut live) = run.subscribe();
        run.emit("run_started", json!({}));
        for i in 0..5 {
            run.emit("log", json!({"message": i}));
        }
        run.emit("run_finished", json!({}));
        let (past, _) = run.subscribe();
        let names: Vec<&str> = past.iter().map(|e| e.name).collect();
        assert_eq!(names, ["run_started", "log", "log", "lagged", "run_finished"]);
        assert_eq!(past[3].data["missed_events"], 3);
        assert_eq!(run.snapshot().truncated.map(|t| t.events), Some(3));
        let mut received = 0;
        while live.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 7);

        let run = RunShared::new(report(), RunLimits { max_event_bytes: 20, ..RunLimits::default() });
        run.emit("log", json!({"a": 1})); // 7 bytes
        run.emit("log", json!({"a": 12})); // 8 bytes
        run.emit("log", json!({"a": 123})); // 9: over 20
        assert_eq!(run.subscribe().0.len(), 3, "two kept and the lagged marker");
        assert_eq!(json_len(&json!({"a": 1})), 7);
    }
}
