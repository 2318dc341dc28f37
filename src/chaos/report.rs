//! What a run produces: its report (the JSON journal on disk and `GET /chaos/runs/{id}`) and the
//! live event stream (`GET /chaos/runs/{id}/events`). One [`RunShared`] per run is written by the
//! run's thread and read by HTTP handlers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

/// Why a run was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    TimedOut,
    KillSwitch,
    Shutdown,
}

impl StopReason {
    pub fn status(self) -> RunStatus {
        match self {
            Self::TimedOut => RunStatus::TimedOut,
            _ => RunStatus::Cancelled,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled by POST /chaos/runs/{id}/cancel",
            Self::TimedOut => "the run exceeded its timeout_seconds",
            Self::KillSwitch => "cancelled by the kill switch (POST /chaos/stop)",
            Self::Shutdown => "cancelled because the service is shutting down",
        }
    }
}

/// A position in the script.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScriptError {
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// One script call in the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub at: String,
    pub offset_s: f64,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expectation {
    pub ok: bool,
    pub message: String,
    pub line: Option<usize>,
    pub at: String,
}

/// One undo performed when the run ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UndoRecord {
    pub action: String,
    pub ok: bool,
    pub detail: String,
    pub at: String,
}

/// The whole story of a run; also its journal on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// The short form `GET /chaos/runs` lists.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// One Server-Sent Event: `event:` name and JSON `data:`.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub data: serde_json::Value,
}

/// A run in progress, shared between its thread and the HTTP handlers.
pub struct RunShared {
    pub id: String,
    pub started: Instant,
    report: Mutex<RunReport>,
    /// Every event so far (replayed to late subscribers) and the live feed, under one lock so a
    /// subscriber never misses or doubles an event.
    events: Mutex<(Vec<Event>, broadcast::Sender<Event>)>,
    /// Set once from outside (cancel, timeout, kill switch, shutdown); read by the engine's
    /// progress hook and by long calls.
    pub stop: watch::Sender<Option<StopReason>>,
    /// True once the run has ended and its undo is complete.
    pub done: watch::Sender<bool>,
    /// The run's trace root; taken (and so closed and exported) when the run ends.
    pub span: Mutex<Option<tracing::Span>>,
}

impl RunShared {
    pub fn new(report: RunReport) -> Self {
        Self {
            id: report.run_id.clone(),
            started: Instant::now(),
            report: Mutex::new(report),
            events: Mutex::new((Vec::new(), broadcast::channel(1024).0)),
            stop: watch::channel(None).0,
            done: watch::channel(false).0,
            span: Mutex::new(None),
        }
    }

    pub fn snapshot(&self) -> RunReport {
        self.report.lock().unwrap().clone()
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut RunReport) -> R) -> R {
        f(&mut self.report.lock().unwrap())
    }

    pub fn emit(&self, name: &'static str, data: serde_json::Value) {
        let mut ev = self.events.lock().unwrap();
        let event = Event { name, data };
        ev.0.push(event.clone());
        let _ = ev.1.send(event);
    }

    /// Events so far, plus a receiver for the ones to come.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let ev = self.events.lock().unwrap();
        (ev.0.clone(), ev.1.subscribe())
    }

    pub fn offset_s(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }

    /// Asks the run to stop; the first reason wins.
    pub fn request_stop(&self, reason: StopReason) {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }
}
