//! What a run produces: its report (the JSON journal on disk and `GET /chaos/runs/{id}`) and the
//! live event stream (`GET /chaos/runs/{id}/events`). One [`RunShared`] per run is written by the
//! run's thread and read by HTTP handlers.
//!
//! It also bounds what a run may keep ([`RunLimits`]): the engine adds log lines, steps and
//! measurements through [`RunShared::log`], [`RunShared::start_step`] and [`RunShared::measure`],
//! never by pushing into the report itself. A script that floods its log would otherwise grow the
//! service until the kernel OOM-kills it, and a killed service undoes none of the faults the run
//! applied. What a cap drops is counted in the report's `truncated`.
//!
//! Here the report's types (the journal's shape) and the caps; [`RunShared`], the run in
//! progress that applies the caps and feeds the event stream, is in `shared`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod shared;

pub use shared::{Event, RunShared, event_name};

pub use crate::config::RunLimits;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A journal as written before footprint limits existed (no `truncated`).
    pub(super) fn report() -> RunReport {
        serde_json::from_value(json!({
            "run_id": "20260730T120000123Z-1a2b3c", "scenario": null, "status": "running", "verdict": null,
            "reason": null, "dry_run": false, "params": {}, "timeout_seconds": 900,
            "started_at": "2026-07-30T12:00:00.123456Z", "ended_at": null, "duration_s": null,
            "steps": [], "logs": [], "expectations": [], "measurements": {}, "undo": [], "error": null, "result": null
        }))
        .unwrap()
    }

    #[test]
    fn old_journals_read_and_untruncated_reports_do_not_mention_it() {
        let r = report();
        assert!(r.truncated.is_none());
        assert!(!serde_json::to_string(&r).unwrap().contains("truncated"));
    }
}
