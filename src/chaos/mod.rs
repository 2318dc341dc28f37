//! The scenario engine: runs of Rhai scripts (POSTed or from the catalog), their reports and live
//! events, the journals kept on disk, and the kill switch.
//!
//! `chaos` depends on `faults` and never on `http`; Rhai types stay inside `engine`.

pub mod catalog;
pub mod check;
pub mod engine;
pub mod guard;
pub mod loadgen;
mod observe;
pub mod report;
pub mod report_page;
pub mod retention;
pub mod sandbox;
pub mod script_api;
mod stop;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::faults::ledger::{self, Outcome};
use catalog::Catalog;
use engine::Deps;
use report::{Recovered, RunReport, RunShared, RunStatus, RunSummary, ScriptError, StopReason};
pub use stop::{Stop, StopReport};

/// Default and largest `timeout_seconds` of a run.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 900;
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;

/// Why a run could not start or be found. `http::error` maps these to status codes.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(String),
    #[error("the script does not compile: {}", .0.message)]
    Compile(ScriptError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Busy(String),
    #[error("the service is shutting down; no new run can start")]
    ShuttingDown,
    /// The kill switch's latch is set.
    #[error("{0}")]
    Halted(String),
    /// The fleet's chaos store cannot be reached.
    #[error("{0}")]
    StoreDown(String),
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub script: Option<String>,
    pub scenario: Option<String>,
    pub params: serde_json::Map<String, Value>,
    pub timeout_seconds: Option<u64>,
    pub dry_run: bool,
    /// Guards as the request gives them (`guards` in the JSON body), checked here.
    pub guards: Vec<Value>,
}

/// Every run of this service: the ones in progress and the journals of finished ones.
pub struct Runs {
    deps: Arc<Deps>,
    pub catalog: Arc<Catalog>,
    dir: PathBuf,
    max_concurrent: usize,
    /// What each run may keep (`RUN_MAX_*`), so a flooding script cannot exhaust the service.
    limits: report::RunLimits,
    active: Mutex<HashMap<String, Arc<RunShared>>>,
    /// Summaries of every run, journals included, for listing without reading every file. Shared
    /// with the retention pruner, which drops the runs it deletes.
    index: Arc<Mutex<Vec<RunSummary>>>,
    accepting: AtomicBool,
    /// Summaries of other replicas' runs read from the store, by key, with their version.
    remote: Mutex<HashMap<String, (crate::chaos_store::Etag, RunSummary)>>,
}

/// How many runs of other replicas `GET /chaos/runs` reads from the store at most.
const REMOTE_LIST_LIMIT: usize = 200;

pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// With a fleet: the run's journal and events go to the store every second while it runs (so
/// any replica can answer for it and stream it), and once more when it has ended; its marker
/// `fleet/runs/<id>.json` tells the others which replica owns it, for a takeover.
async fn publish_while_running(store: Arc<dyn crate::chaos_store::ChaosStore>, run: Arc<RunShared>, replica: String) {
    use crate::chaos_store::Write;
    let marker = format!("{}{}.json", crate::fleet::RUNS, run.id);
    let body = serde_json::json!({"run_id": run.id, "replica": replica, "started_at": crate::timestamp()});
    if let Err(e) = store.put(&marker, body.to_string().into_bytes(), Write::Overwrite).await {
        tracing::error!(run_id = %run.id, error = %e, "cannot publish the run to the fleet");
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut published = usize::MAX;
    loop {
        tick.tick().await;
        let ended = *run.done.borrow();
        let (events, _) = run.subscribe();
        if events.len() != published || ended {
            let journal = serde_json::to_vec(&run.snapshot()).unwrap_or_default();
            let list: Vec<Value> =
                events.iter().map(|e| serde_json::json!({"event": e.name, "data": e.data, "id": e.seq})).collect();
            let events_body = serde_json::to_vec(&list).unwrap_or_default();
            let ok = store.put(&format!("runs/{}.json", run.id), journal, Write::Overwrite).await.is_ok()
                && store.put(&format!("runs/{}.events.json", run.id), events_body, Write::Overwrite).await.is_ok();
            if ok {
                published = events.len();
            }
        }
        if ended {
            let _ = store.delete(&marker).await;
            return;
        }
    }
}

impl Runs {
    /// Opens (creating if needed) the journal folder, deletes the history `retain` does not keep,
    /// and indexes what is left. A journal still marked `running` belongs to a process that died
    /// mid-run: it is closed as `interrupted`, with what the ledger's startup recovery undid for it
    /// (`recovered`). Within a Tokio runtime, pruning then repeats hourly.
    pub fn open(
        deps: Arc<Deps>,
        catalog: Arc<Catalog>,
        dir: PathBuf,
        max_concurrent: usize,
        limits: report::RunLimits,
        retain: crate::config::Retain,
        recovered: &[Outcome],
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let pruned = retention::prune(&dir, &retain);
        if !pruned.is_empty() {
            tracing::info!(count = pruned.len(), "deleted old run journals (RUNS_RETAIN)");
        }
        let mut index = Vec::new();
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            // The fault ledger's file lives beside the journals.
            if path.extension().and_then(|e| e.to_str()) != Some("json")
                || path.file_name() == Some("ledger.json".as_ref())
            {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            let Ok(mut report) = serde_json::from_str::<RunReport>(&text) else {
                tracing::warn!(file = %path.display(), "ignoring an unreadable run journal");
                continue;
            };
            if report.status == RunStatus::Running {
                let owner = ledger::run_owner(&report.run_id);
                report.recovered = recovered
                    .iter()
                    .filter(|o| o.owner == owner)
                    .map(|o| Recovered {
                        fault: o.fault_id.clone(),
                        kind: crate::json_name(&o.kind),
                        target: o.target.clone(),
                        ok: o.ok,
                        detail: o.detail.clone(),
                    })
                    .collect();
                let failed = report.recovered.iter().filter(|r| !r.ok).count();
                report.status = RunStatus::Interrupted;
                report.verdict = Some("fail".into());
                report.reason = Some(format!(
                    "the service stopped during this run (crash, kill -9 or OOM kill); at the next start the fault \
                     ledger undid {} of its faults{}",
                    report.recovered.len() - failed,
                    if failed > 0 {
                        format!(", and could not undo {failed} (see GET /chaos/faults)")
                    } else {
                        String::new()
                    }
                ));
                report.ended_at.get_or_insert_with(crate::timestamp);
                write_journal(&dir, &report);
            }
            index.push(report.summary());
        }
        index.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let index = Arc::new(Mutex::new(index));
        if tokio::runtime::Handle::try_current().is_ok() {
            retention::spawn_pruner(dir.clone(), retain, retention::PRUNE_INTERVAL, Arc::downgrade(&index));
        }
        Ok(Self {
            deps,
            catalog,
            dir,
            max_concurrent,
            limits,
            active: Mutex::new(HashMap::new()),
            index,
            accepting: AtomicBool::new(true),
            remote: Mutex::new(HashMap::new()),
        })
    }

    /// Validates, compiles and starts a run on a blocking thread.
    pub fn start(self: &Arc<Self>, req: RunRequest) -> Result<Arc<RunShared>, RunError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(RunError::ShuttingDown);
        }
        let timeout = req.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout) {
            return Err(RunError::Invalid(format!(
                "timeout_seconds must be between 1 and {MAX_TIMEOUT_SECONDS}, got {timeout}"
            )));
        }
        let mut guards = Vec::new();
        for (i, g) in req.guards.iter().enumerate() {
            guards.push(
                guard::Guard::from_json(g, "request").map_err(|e| RunError::Invalid(format!("guards[{i}]: {e}")))?,
            );
        }
        let (source, scenario, params) = match (req.script, req.scenario) {
            (Some(_), Some(_)) => return Err(RunError::Invalid("give either 'script' or 'scenario', not both".into())),
            (None, None) => {
                return Err(RunError::Invalid(
                    "nothing to run: give 'script' (Rhai source) or 'scenario' (a name from GET /chaos/scenarios)"
                        .into(),
                ));
            }
            (Some(s), None) => (s, None, req.params),
            (None, Some(name)) => {
                let s = self.catalog.get(&name).ok_or_else(|| {
                    let known: Vec<String> = self.catalog.list().into_iter().map(|s| s.name).collect();
                    RunError::NotFound(format!("no scenario named '{name}'; known: {}", known.join(", ")))
                })?;
                if let Some(e) = s.error {
                    return Err(RunError::Compile(e));
                }
                // Declared defaults first, the caller's values over them; unknown names are typos.
                let mut params: serde_json::Map<String, Value> =
                    s.params.iter().map(|p| (p.name.clone(), p.default.clone())).collect();
                for (k, v) in req.params {
                    if !params.contains_key(&k) {
                        let declared: Vec<&str> = s.params.iter().map(|p| p.name.as_str()).collect();
                        return Err(RunError::Invalid(format!(
                            "scenario '{name}' has no parameter '{k}'; it declares: {}",
                            if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                        )));
                    }
                    params.insert(k, v);
                }
                guards.extend(s.guards);
                (s.source, Some(name), params)
            }
        };
        let ast = sandbox::compile(&source).map_err(RunError::Compile)?;

        let run = {
            let mut active = self.active.lock().unwrap();
            // Checked under the lock the kill switch collects runs with: a run either starts
            // before the halt (and is cancelled by it) or is refused.
            self.deps.ledger.check_open().map_err(|e| RunError::Halted(e.to_string()))?;
            self.deps.fleet.check_reachable().map_err(RunError::StoreDown)?;
            // A run whose report already says it ended is only writing its journal: it does not
            // hold a slot (a client that saw it end may start the next one at once).
            let ids: Vec<&String> =
                active.values().filter(|r| r.update(|r| r.status == RunStatus::Running)).map(|r| &r.id).collect();
            if ids.len() >= self.max_concurrent {
                return Err(RunError::Busy(format!(
                    "{} run(s) already in progress ({ids:?}); MAX_CONCURRENT_RUNS is {}",
                    ids.len(),
                    self.max_concurrent
                )));
            }
            let report = RunReport {
                run_id: new_run_id(),
                scenario,
                status: RunStatus::Running,
                verdict: None,
                reason: None,
                dry_run: req.dry_run,
                params: params.clone(),
                timeout_seconds: timeout,
                started_at: crate::timestamp(),
                ended_at: None,
                duration_s: None,
                steps: Vec::new(),
                logs: Vec::new(),
                expectations: Vec::new(),
                measurements: Default::default(),
                undo: Vec::new(),
                error: None,
                result: None,
                truncated: None,
                replica: self.deps.fleet.shared_store().map(|_| self.deps.fleet.name.clone()),
                recovered: Vec::new(),
                guards,
                breach: None,
                faults: Vec::new(),
                series: Default::default(),
                impact: None,
            };
            let run = Arc::new(RunShared::new(report, self.limits));
            active.insert(run.id.clone(), run.clone());
            run
        };
        let snapshot = run.snapshot();
        // A run is one trace of its own (not part of the request that started it).
        *run.span.lock().unwrap() = Some(tracing::info_span!(
            parent: None,
            "chaos.run",
            otel.name = %format!("chaos run {}", snapshot.scenario.as_deref().unwrap_or("script")),
            run_id = %run.id,
            scenario = snapshot.scenario.as_deref().unwrap_or(""),
            dry_run = req.dry_run,
            status = tracing::field::Empty,
            verdict = tracing::field::Empty,
            impact.time_to_detect_s = tracing::field::Empty,
            impact.time_to_recover_s = tracing::field::Empty,
            impact.requests = tracing::field::Empty,
            impact.failures = tracing::field::Empty,
            impact.error_budget_burned_pct = tracing::field::Empty,
            breach.metric = tracing::field::Empty,
        ));
        self.index.lock().unwrap().push(snapshot.summary());
        write_journal(&self.dir, &snapshot);
        run.emit("run_started", serde_json::json!(snapshot.summary()));
        tracing::info!(run_id = %run.id, scenario = ?snapshot.scenario, dry_run = req.dry_run, "run started");

        if let Some(store) = self.deps.fleet.shared_store() {
            tokio::spawn(publish_while_running(store, run.clone(), self.deps.fleet.name.clone()));
        }

        // The timeout is a stop request like any other.
        let timer_run = run.clone();
        tokio::spawn(async move {
            let mut done = timer_run.done.subscribe();
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(timeout)) => timer_run.request_stop(StopReason::TimedOut),
                _ = done.wait_for(|d| *d) => {}
            }
        });

        let this = self.clone();
        let thread_run = run.clone();
        let deps = self.deps.clone();
        let dry_run = req.dry_run;
        tokio::task::spawn_blocking(move || {
            let run = thread_run.clone();
            let executed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine::execute(run, deps, ast, params, dry_run);
            }));
            if executed.is_err() {
                // Never leave a run "running" (and its slot taken) because of a bug.
                thread_run.update(|r| {
                    r.status = RunStatus::Failed;
                    r.verdict = Some("fail".into());
                    r.reason = Some("internal error while ending the run; check the service log".into());
                });
            }
            this.finish(&thread_run);
        });
        Ok(run)
    }

    fn finish(&self, run: &Arc<RunShared>) {
        let report = run.snapshot();
        write_journal(&self.dir, &report);
        if let Some(s) = self.index.lock().unwrap().iter_mut().find(|s| s.run_id == report.run_id) {
            *s = report.summary();
        }
        self.active.lock().unwrap().remove(&run.id);
        let status = crate::json_name(&report.status);
        if let Some(span) = run.span.lock().unwrap().take() {
            span.record("status", status.as_str());
            span.record("verdict", report.verdict.as_deref().unwrap_or(""));
            if let Some(i) = &report.impact {
                if let Some(t) = i.time_to_detect_s {
                    span.record("impact.time_to_detect_s", t);
                }
                if let Some(t) = i.time_to_recover_s {
                    span.record("impact.time_to_recover_s", t);
                }
                span.record("impact.requests", i.requests);
                span.record("impact.failures", i.failures);
                if let Some(b) = i.error_budget_burned_pct {
                    span.record("impact.error_budget_burned_pct", b);
                }
            }
            if let Some(b) = &report.breach {
                span.record("breach.metric", b.metric.as_str());
            }
        }
        crate::telemetry::metrics().chaos_runs.add(1, &[opentelemetry::KeyValue::new("status", status)]);
        crate::telemetry::operation_ended("run", report.duration_s.unwrap_or_default());
        tracing::info!(run_id = %run.id, status = ?report.status, verdict = ?report.verdict, "run ended");
        run.emit(
            "run_finished",
            serde_json::json!({"run_id": report.run_id, "status": report.status, "verdict": report.verdict, "reason": report.reason}),
        );
        run.done.send_replace(true);
    }

    /// A run in progress.
    pub fn active(&self, id: &str) -> Option<Arc<RunShared>> {
        self.active.lock().unwrap().get(id).cloned()
    }

    pub fn active_count(&self) -> usize {
        self.active.lock().unwrap().len()
    }

    /// Every run, newest first.
    pub fn list(&self) -> Vec<RunSummary> {
        let mut all = self.index.lock().unwrap().clone();
        all.reverse();
        all
    }

    /// The newest run, if any.
    pub fn last(&self) -> Option<RunSummary> {
        self.index.lock().unwrap().last().cloned()
    }

    /// A run's report from here or, with a fleet, from the replica that ran it (through the store).
    pub async fn report_anywhere(&self, id: &str) -> Result<RunReport, RunError> {
        match self.report(id) {
            Err(RunError::NotFound(_)) if valid_run_id(id) => {}
            other => return other,
        }
        let not_found = || RunError::NotFound(format!("no run with id '{id}'"));
        let store = self.deps.fleet.shared_store().ok_or_else(not_found)?;
        match store.get(&format!("runs/{id}.json")).await {
            Ok(Some((bytes, _))) => serde_json::from_slice(&bytes)
                .map_err(|e| RunError::NotFound(format!("journal of run '{id}' is unreadable: {e}"))),
            Ok(None) => Err(not_found()),
            Err(e) => Err(RunError::NotFound(format!("no run '{id}' here, and the chaos store cannot be read: {e}"))),
        }
    }

    /// The events a run on another replica has published so far (through the store).
    pub async fn remote_events(&self, id: &str) -> Option<Vec<report::Event>> {
        let store = self.deps.fleet.shared_store()?;
        let (bytes, _) = store.get(&format!("runs/{id}.events.json")).await.ok()??;
        let list: Vec<Value> = serde_json::from_slice(&bytes).ok()?;
        Some(
            list.into_iter()
                .filter_map(|v| {
                    let name = report::event_name(v["event"].as_str()?)?;
                    Some(report::Event { name, data: v["data"].clone(), seq: v["id"].as_u64() })
                })
                .collect(),
        )
    }

    /// Every run, newest first: this replica's and, with a fleet, the others' (through the store).
    pub async fn list_anywhere(&self) -> Vec<RunSummary> {
        let mut all = self.list();
        let Some(store) = self.deps.fleet.shared_store() else { return all };
        let Ok(listed) = store.list("runs/").await else { return all };
        let known: std::collections::HashSet<String> = all.iter().map(|s| s.run_id.clone()).collect();
        let mut remote: Vec<&crate::chaos_store::Listed> = listed
            .iter()
            .filter(|l| l.key.ends_with(".json") && !l.key.ends_with(".events.json"))
            .filter(|l| !known.contains(l.key["runs/".len()..].trim_end_matches(".json")))
            .collect();
        remote.sort_by(|a, b| b.key.cmp(&a.key));
        for l in remote.into_iter().take(REMOTE_LIST_LIMIT) {
            let cached = self.remote.lock().unwrap().get(&l.key).filter(|(e, _)| *e == l.etag).map(|(_, s)| s.clone());
            let summary = match cached {
                Some(s) => s,
                None => {
                    let Ok(Some((bytes, etag))) = store.get(&l.key).await else { continue };
                    let Ok(r) = serde_json::from_slice::<RunReport>(&bytes) else { continue };
                    self.remote.lock().unwrap().insert(l.key.clone(), (etag, r.summary()));
                    r.summary()
                }
            };
            all.push(summary);
        }
        all.sort_by(|a, b| b.run_id.cmp(&a.run_id));
        all
    }

    /// A run's full report, live or from its journal.
    pub fn report(&self, id: &str) -> Result<RunReport, RunError> {
        if let Some(run) = self.active(id) {
            return Ok(run.snapshot());
        }
        let not_found = || RunError::NotFound(format!("no run with id '{id}'"));
        if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(not_found());
        }
        let text = std::fs::read_to_string(self.dir.join(format!("{id}.json"))).map_err(|_| not_found())?;
        serde_json::from_str(&text).map_err(|e| RunError::NotFound(format!("journal of run '{id}' is unreadable: {e}")))
    }

    /// Asks one run to stop; its undo runs before it ends.
    pub fn cancel(&self, id: &str) -> Result<Arc<RunShared>, RunError> {
        match self.active(id) {
            Some(run) => {
                run.request_stop(StopReason::Cancelled);
                Ok(run)
            }
            None => match self.report(id) {
                Ok(r) => Err(RunError::Busy(format!("run '{id}' already ended ({})", crate::json_name(&r.status)))),
                Err(e) => Err(e),
            },
        }
    }
}

/// Time-ordered (milliseconds), readable and unique: `20261122T174300123Z-1a2b3c`.
fn new_run_id() -> String {
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string().replace('.', "");
    format!("{now}-{:06x}", fastrand::u32(..0x100_0000))
}

/// Writes a journal atomically (temp file + rename), so a crash never leaves half a file.
fn write_journal(dir: &std::path::Path, report: &RunReport) {
    let path = dir.join(format!("{}.json", report.run_id));
    let tmp = dir.join(format!(".{}.json.tmp", report.run_id));
    let result = serde_json::to_vec_pretty(report)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        tracing::error!(run_id = %report.run_id, error = %e, dir = %dir.display(), "cannot write the run journal");
    }
}
