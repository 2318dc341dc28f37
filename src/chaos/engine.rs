//! Runs one script: the context every script function shares ([`Ctx`]), the run's end, and its
//! final status.
//!
//! A run ends in three phases, whatever made it end (the script finished or threw, cancel,
//! timeout, kill switch, shutdown):
//! 1. **script**: the script runs; a stop request ends it at the next operation or long call.
//! 2. **rollback**: the script's `on_rollback` closures run, newest first, each within its own
//!    budget (`ROLLBACK_TIMEOUT_SECONDS`); a second stop or the kill switch cuts them short. A
//!    closure may probe and undo (`load_stop()`, `network_clear()`, GET `http()`), but applying
//!    a fault there is refused: a rollback that breaks more could never be undone in turn.
//! 3. **undo**: the fault ledger undoes every fault the run owns, concurrently, each with its own
//!    timeout and retries. Nothing here keeps an undo list of its own: the ledger is the list.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rhai::{AST, Dynamic, EvalAltResult, FnPtr, Position};
use serde_json::{Value, json};

use super::loadgen::{LoadgenConfig, Running};
use super::observe::Observer;
use super::report::{LogLine, RunShared, RunStatus, Step, StopReason, UndoRecord};
use super::sandbox::script_error;
use crate::faults::Faults;
use crate::faults::deploy::{DeployBackend, RecordingDeploy};
use crate::faults::ledger::{self, Applied, FaultKind, Intent, Ledger, Outcome, Undo};
use crate::faults::network::{NetworkBackend, RecordingBackend};
use crate::store::Store;

/// Leases of a run's faults end this long after the run's timeout, on top of the rollback
/// budgets: long enough for a normal end to undo them first, short enough to be a backstop.
pub const UNDO_GRACE: Duration = Duration::from_secs(30);

/// What a run's script can reach: the same faults, ledger and Redis handle as the endpoints.
pub struct Deps {
    pub faults: Arc<Faults>,
    pub ledger: Arc<Ledger>,
    pub store: Option<Store>,
    pub network: Arc<dyn NetworkBackend>,
    /// Broken-revision faults; `None` when the service does not know its container app.
    pub deploy: Option<Arc<dyn DeployBackend>>,
    /// The service's own base URL, for `http()`, `health()` and `status()`.
    pub self_url: String,
    pub http: reqwest::Client,
    pub handle: tokio::runtime::Handle,
    /// The `loadgen` binary for `loadgen()` and where its reports go.
    pub loadgen: LoadgenConfig,
    /// Budget of each `on_rollback` closure.
    pub rollback_timeout: Duration,
    /// This replica's view of the fleet, for faults aimed at other replicas.
    pub fleet: Arc<crate::fleet::Fleet>,
}

/// Where a run is in its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Script = 0,
    Rollback = 1,
    Undo = 2,
}

/// A load generator this run started.
pub(super) struct Loadgen {
    /// The script's name for it: `loadgen-1`, ...
    pub name: String,
    /// Its ledger entry.
    pub fault_id: String,
    pub running: Arc<Running>,
}

/// Per-run state shared by every registered function.
pub(super) struct Ctx {
    pub run: Arc<RunShared>,
    pub deps: Arc<Deps>,
    pub dry_run: bool,
    pub params: serde_json::Map<String, Value>,
    /// The ledger owner of this run's faults.
    pub owner: String,
    /// Leases of faults without a duration end here (timeout + rollback budget + grace).
    pub lease_cap: DateTime<Utc>,
    /// `on_rollback` closures, in the order registered.
    pub rollbacks: Mutex<Vec<FnPtr>>,
    /// >0 inside `wait_until`: polled calls do not add steps to the timeline.
    pub quiet: AtomicUsize,
    phase: AtomicU8,
    /// When the rollback closure now running must end.
    rollback_deadline: Mutex<Option<Instant>>,
    pub dry_network: RecordingBackend,
    pub dry_deploy: RecordingDeploy,
    /// Dry runs apply nothing; what they would have undone, for the report.
    pub dry_undo: Mutex<Vec<String>>,
    pub loadgens: Mutex<Vec<Loadgen>>,
    /// Watches the run's load, health and guards (none in a dry run).
    pub observer: Option<Arc<Observer>>,
}

pub(super) type Fallible<T> = Result<T, Box<EvalAltResult>>;

impl Ctx {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Script,
            1 => Phase::Rollback,
            _ => Phase::Undo,
        }
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    pub fn network(&self) -> &dyn NetworkBackend {
        if self.dry_run { &self.dry_network } else { self.deps.network.as_ref() }
    }

    pub fn deploy(&self) -> Result<Arc<dyn DeployBackend>, String> {
        self.deps.deploy.clone().ok_or_else(|| {
            "deploy faults need the container app: set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and \
             SERVICE_APP_NAME (Container Apps sets CONTAINER_APP_NAME itself)"
                .to_string()
        })
    }

    /// Why the code running now must stop, if it must: the run was stopped (script phase), or the
    /// rollback closure ran out of budget or was cut short (rollback phase). Never while undoing.
    pub fn stopped(&self) -> Option<String> {
        match self.phase() {
            Phase::Script => self.run.stop_reason().map(|r| r.describe().to_string()),
            Phase::Rollback => {
                if self.run.rollbacks_aborted() {
                    return Some("the kill switch (or a second stop) cut the rollback short".into());
                }
                let deadline = (*self.rollback_deadline.lock().unwrap())?;
                (Instant::now() >= deadline).then(|| self.budget_exceeded())
            }
            Phase::Undo => None,
        }
    }

    fn budget_exceeded(&self) -> String {
        format!(
            "the closure ran past its rollback budget of {} s (ROLLBACK_TIMEOUT_SECONDS)",
            self.deps.rollback_timeout.as_secs_f64()
        )
    }

    /// Runs `fut` on the runtime. In the script phase it gives up when the run is stopped; in a
    /// rollback, at the closure's budget or when rollbacks are cut short.
    pub fn block<F: Future>(&self, fut: F) -> Result<F::Output, String> {
        match self.phase() {
            Phase::Undo => Ok(self.deps.handle.block_on(fut)),
            Phase::Script => {
                let mut stop = self.run.stop.subscribe();
                self.deps.handle.block_on(async move {
                    tokio::select! {
                        r = fut => Ok(r),
                        _ = stop.wait_for(Option::is_some) => Err("the run was stopped".to_string()),
                    }
                })
            }
            Phase::Rollback => {
                let deadline = self.rollback_deadline.lock().unwrap().unwrap_or_else(Instant::now);
                let mut abort = self.run.abort_rollbacks.subscribe();
                let budget = self.budget_exceeded();
                self.deps.handle.block_on(async move {
                    tokio::select! {
                        r = fut => Ok(r),
                        () = tokio::time::sleep_until(deadline.into()) => Err(budget),
                        _ = abort.wait_for(|a| *a) => Err("the kill switch (or a second stop) cut the rollback short".to_string()),
                    }
                })
            }
        }
    }

    pub fn sleep(&self, d: Duration) -> Result<(), String> {
        self.block(tokio::time::sleep(d))
    }

    /// Script functions that apply a fault call this first: inside a rollback they are refused.
    pub fn may_apply(&self, function: &str) -> Result<(), String> {
        if self.phase() == Phase::Rollback {
            return Err(format!(
                "{function}() cannot be used inside on_rollback: a rollback undoes, it must not break more \
                 (use load_stop(), hang_stop(), network_clear() or GET http() probes there)"
            ));
        }
        Ok(())
    }

    /// Applies a fault through the ledger, owned by this run. `duration`: how long the fault
    /// lasts by itself (none = until undone); the lease is capped at the run's end.
    pub fn apply<T, F>(
        &self,
        kind: FaultKind,
        target: String,
        duration: Option<Duration>,
        undo: Undo,
        apply: F,
    ) -> Result<(String, T), String>
    where
        T: Send + 'static,
        F: Future<Output = Result<Applied<T>, crate::faults::FaultError>> + Send + 'static,
    {
        let intent =
            Intent { kind, owner: self.owner.clone(), target, lease: ledger::lease(duration, self.lease_cap), undo };
        let ledger = self.deps.ledger.clone();
        // If the run is stopped meanwhile, the apply still completes in the ledger and the
        // run's undo phase undoes it.
        let applied = self.block(async move { ledger.apply(intent, apply).await })?.map_err(|e| e.to_string())?;
        self.applied(&applied.0);
        Ok(applied)
    }

    /// Notes a fault this run applied, for its band in the report.
    pub fn applied(&self, fault_id: &str) {
        if let Some(o) = &self.observer {
            o.applied(fault_id);
        }
    }

    /// Undoes this run's ledger entries that `matches` picks (the script's own `load_stop()`,
    /// `network_clear()`, ...); returns the outcomes.
    pub fn undo_own(&self, matches: impl Fn(&ledger::Entry) -> bool) -> Result<Vec<Outcome>, String> {
        let ledger = self.deps.ledger.clone();
        let owner = self.owner.clone();
        self.block(async move { ledger.undo_where(|e| e.owner == owner && matches(e)).await })
    }

    /// Records a timed step around `f`. `f` returns the value and a short outcome for people.
    pub fn step<T>(
        &self,
        name: &str,
        args: String,
        pos: Position,
        f: impl FnOnce() -> Result<(T, String), String>,
    ) -> Fallible<T> {
        if let Some(reason) = self.stopped() {
            return Err(EvalAltResult::ErrorTerminated(reason.into(), pos).into());
        }
        let quiet = self.quiet.load(Ordering::Relaxed) > 0;
        let seq = if quiet {
            None
        } else {
            self.run.start_step(Step {
                seq: 0,
                name: name.to_string(),
                args,
                line: pos.line(),
                started_at: crate::timestamp(),
                offset_s: self.run.offset_s(),
                ended_at: None,
                duration_ms: None,
                outcome: None,
                error: None,
            })
        };
        let span = if quiet {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "chaos.step",
                otel.name = %name,
                step = %name,
                line = pos.line().unwrap_or(0),
                outcome = tracing::field::Empty,
                error = tracing::field::Empty,
                fault.target = tracing::field::Empty,
            )
        };
        let started = Instant::now();
        let result = span.in_scope(f);
        match &result {
            Ok((_, o)) => span.record("outcome", o.as_str()),
            Err(e) => span.record("error", e.as_str()),
        };
        if let Some(seq) = seq {
            let (outcome, error) = match &result {
                Ok((_, o)) => (Some(o.clone()), None),
                Err(e) => (None, Some(e.clone())),
            };
            self.run.finish_step(seq, |s| {
                s.ended_at = Some(crate::timestamp());
                s.duration_ms = Some(crate::round_to(started.elapsed().as_secs_f64() * 1e3, 3));
                s.outcome = outcome;
                s.error = error;
            });
        }
        match result {
            Ok((v, _)) => Ok(v),
            Err(e) => match self.stopped() {
                Some(reason) => Err(EvalAltResult::ErrorTerminated(reason.into(), pos).into()),
                None => Err(EvalAltResult::ErrorRuntime(format!("{name}: {e}").into(), pos).into()),
            },
        }
    }

    pub fn log(&self, message: String, pos: Position) {
        let line = LogLine { at: crate::timestamp(), offset_s: self.run.offset_s(), line: pos.line(), message };
        let (at_line, text) = (line.line, line.message.clone());
        // Only lines the run keeps reach the service log: a flood stops at the run's cap.
        if self.run.log(line) {
            tracing::info!(run_id = %self.run.id, line = ?at_line, "{text}");
        }
    }

    /// The load generator the script calls `name`.
    pub fn loadgen(&self, name: &str) -> Result<(String, Arc<Running>), String> {
        let all = self.loadgens.lock().unwrap();
        let found = all.iter().find(|l| l.name == name).map(|l| (l.fault_id.clone(), l.running.clone()));
        found.ok_or_else(|| {
            let known: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
            format!(
                "no load generator '{name}' in this run (started: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        })
    }
}

/// Runs `ast` to the end (or until stopped), then runs the rollbacks, has the ledger undo what
/// the run applied, and fills in the final status. Call on a blocking thread.
pub fn execute(run: Arc<RunShared>, deps: Arc<Deps>, ast: AST, params: serde_json::Map<String, Value>, dry_run: bool) {
    let timeout = Duration::from_secs(run.snapshot().timeout_seconds);
    let cap = timeout + deps.rollback_timeout + UNDO_GRACE;
    let owner = ledger::run_owner(&run.id);
    let observer = (!dry_run).then(|| Observer::new(run.clone(), deps.clone(), owner.clone()));
    if let Some(o) = &observer {
        o.start();
    }
    let ctx = Arc::new(Ctx {
        run: run.clone(),
        deps: deps.clone(),
        dry_run,
        params,
        owner,
        lease_cap: Utc::now() + chrono::Duration::from_std(cap).unwrap_or(chrono::Duration::hours(2)),
        rollbacks: Mutex::new(Vec::new()),
        quiet: AtomicUsize::new(0),
        phase: AtomicU8::new(Phase::Script as u8),
        rollback_deadline: Mutex::new(None),
        dry_network: RecordingBackend::default(),
        dry_deploy: RecordingDeploy::default(),
        dry_undo: Mutex::new(Vec::new()),
        loadgens: Mutex::new(Vec::new()),
        observer,
    });
    let run_span = run.span.lock().unwrap().clone().unwrap_or_else(tracing::Span::none);
    let _in_run = run_span.enter(); // every log line of the run carries its run id
    let engine = super::script_api::build(&ctx);
    // A panic in a script function must not skip the end below.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.eval_ast::<Dynamic>(&ast)))
        .unwrap_or_else(|_| {
            Err(EvalAltResult::ErrorRuntime("internal error: a script function panicked".into(), Position::NONE).into())
        });

    run_rollbacks(&ctx, &engine, &ast);
    undo_faults(&ctx);
    if let Some(o) = &ctx.observer {
        o.finish();
    }

    let stop = run.stop_reason();
    run.update(|r| {
        let failed_expectations: Vec<&str> =
            r.expectations.iter().filter(|x| !x.ok).map(|x| x.message.as_str()).collect();
        let (status, reason) = match (&outcome, stop) {
            (_, Some(StopReason::Breach)) => {
                let why = r.breach.as_ref().map_or(String::new(), |b| {
                    format!(": {} was {} against {} ({})", b.metric, b.observed, b.threshold, b.guard.describe())
                });
                (RunStatus::Aborted, format!("aborted by a guard{why}; every fault was undone"))
            }
            (_, Some(reason)) => (reason.status(), reason.describe().to_string()),
            (Err(e), None) => {
                r.error = Some(script_error(e));
                (RunStatus::Failed, "the script stopped with an error".to_string())
            }
            (Ok(_), None) if !failed_expectations.is_empty() => {
                let mut s = format!("{} expectation(s) failed:", failed_expectations.len());
                for m in &failed_expectations {
                    let _ = write!(s, " {m};");
                }
                (RunStatus::Failed, s.trim_end_matches(';').to_string())
            }
            (Ok(_), None) => (RunStatus::Succeeded, "the script finished and every expectation held".to_string()),
        };
        if let Ok(v) = &outcome
            && !v.is_unit()
        {
            r.result = rhai::serde::from_dynamic::<Value>(v).ok();
        }
        if r.undo.iter().any(|u| !u.ok) && status == RunStatus::Succeeded {
            r.status = RunStatus::Failed;
            r.reason = Some("a rollback or an undo failed; check the undo list".into());
        } else {
            r.status = status;
            r.reason = Some(reason);
        }
        r.verdict = Some(if r.status == RunStatus::Succeeded { "pass" } else { "fail" }.to_string());
        r.ended_at = Some(crate::timestamp());
        r.duration_s = Some(run.offset_s());
    });
}

/// Phase 2: the `on_rollback` closures, newest first, each within its budget.
fn run_rollbacks(ctx: &Ctx, engine: &rhai::Engine, ast: &AST) {
    ctx.set_phase(Phase::Rollback);
    let closures: Vec<FnPtr> = std::mem::take(&mut *ctx.rollbacks.lock().unwrap());
    for f in closures.into_iter().rev() {
        let action = format!("on_rollback closure {}", f.fn_name());
        let span = tracing::info_span!("chaos.undo", otel.name = %format!("undo: {action}"), action = %action);
        let (ok, detail) = if ctx.run.rollbacks_aborted() {
            (false, "skipped: the kill switch (or a second stop) cut rollbacks short".to_string())
        } else {
            *ctx.rollback_deadline.lock().unwrap() = Some(Instant::now() + ctx.deps.rollback_timeout);
            let result = span.in_scope(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call::<Dynamic>(engine, ast, ())))
            });
            match result {
                Ok(Ok(_)) => (true, "ran".to_string()),
                Ok(Err(e)) => (
                    false,
                    match &*e {
                        EvalAltResult::ErrorTerminated(why, _) => format!("stopped: {why}"),
                        _ => format!("failed: {}", script_error(&e).message),
                    },
                ),
                Err(_) => (false, "failed: internal error (a script function panicked)".to_string()),
            }
        };
        record_undo(ctx, action, ok, detail, None, crate::timestamp());
    }
    *ctx.rollback_deadline.lock().unwrap() = None;
}

/// Phase 3: the ledger undoes every fault of the run.
fn undo_faults(ctx: &Ctx) {
    ctx.set_phase(Phase::Undo);
    if ctx.dry_run {
        for action in std::mem::take(&mut *ctx.dry_undo.lock().unwrap()).into_iter().rev() {
            record_undo(ctx, action, true, "dry run: nothing was applied".into(), None, crate::timestamp());
        }
        return;
    }
    let ledger = ctx.deps.ledger.clone();
    let owner = ctx.owner.clone();
    let outcomes = ctx.deps.handle.block_on(async move { ledger.undo_owner(&owner).await });
    for o in outcomes {
        let action = describe(ctx, &o);
        if let Some(obs) = ctx.observer.as_ref().filter(|_| o.ok) {
            obs.undone(&o.fault_id, &o.at);
        }
        record_undo(ctx, action, o.ok, o.detail.clone(), Some(o.fault_id.clone()), o.at.clone());
    }
}

/// The undo of one fault, for people.
fn describe(ctx: &Ctx, o: &Outcome) -> String {
    match o.kind {
        FaultKind::Load | FaultKind::Hang if o.target.contains(" on ") => format!("withdraw {}", o.target),
        FaultKind::Load => "stop the load".into(),
        FaultKind::Hang => "end the hang".into(),
        FaultKind::NetworkBlock | FaultKind::NetworkLatency => match ctx.deps.ledger.get(&o.fault_id).map(|e| e.undo) {
            Some(Undo::Network { fault_id, .. }) => format!("clear network fault {fault_id}"),
            _ => format!("clear network fault {}", o.target),
        },
        FaultKind::Loadgen => {
            let name = ctx.loadgens.lock().unwrap().iter().find(|l| l.fault_id == o.fault_id).map(|l| l.name.clone());
            format!("stop {}", name.unwrap_or_else(|| o.target.clone()))
        }
        FaultKind::Deploy => format!("restore the revision before {}", o.target),
        FaultKind::RedisReset => format!("withdraw {}", o.target),
    }
}

/// `at`: when the undo ended (the ledger's time for a fault, which may be earlier than now: a
/// guard breach or the kill switch undoes before the engine gets here).
fn record_undo(ctx: &Ctx, action: String, ok: bool, detail: String, fault_id: Option<String>, at: String) {
    if ok {
        tracing::info!(run_id = %ctx.run.id, %action, %detail, "undo");
    } else {
        tracing::error!(run_id = %ctx.run.id, %action, %detail, "undo failed");
    }
    let rec = UndoRecord { action, ok, detail, at, fault_id };
    ctx.run.emit("undo", json!(rec));
    ctx.run.update(|r| r.undo.push(rec));
}
