//! The fault ledger: the one door through which every fault is applied and undone, whoever asks
//! (a built-in endpoint, a script function, the kill switch, shutdown, the lease timer, startup).
//!
//! - **Write-ahead**: an entry is written (and fsynced) in state `applying` *before* the fault is
//!   applied, with everything needed to undo it (the NSG rule's name is chosen up front, the
//!   broken revision's name and the revision to go back to are known before the PATCH). An apply
//!   interrupted half-way is therefore known and undone like any other.
//! - **Applies and undos run to completion**: each is a task of its own, so a run that is
//!   cancelled while an ARM PUT is in flight does not drop it (the entry settles, then its undo
//!   runs), and a rollback stopped at its budget cannot leave an undo half-done.
//! - **Leases**: every entry expires. The ledger's own timer undoes expired entries, so a wedged
//!   run cannot keep a fault alive past its lease.
//! - **Undo**: entries are undone independently and concurrently, each with its own timeout and
//!   retries with backoff. A failed undo stays in the ledger as `undo_failed` (status shows it),
//!   is retried by the timer, and stays until it succeeds or an operator forgets it.
//! - **Recovery**: `<RUNS_DIR>/ledger.json` holds every entry not yet undone and the halt latch.
//!   At startup each entry left by a dead process is undone: NSG rules by name, revisions
//!   restored, loadgen children killed by process group; in-process faults died with it.
//! - **Halt latch**: once halted (the kill switch), no new fault is applied until resumed; the
//!   latch survives a restart.
//!
//! The ledger knows how to undo each kind of fault but not how a run is scripted; it must not
//! know about HTTP or Rhai.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::deploy::{DeployBackend, DeployFault};
use super::network::NetworkBackend;
use super::{FaultError, Faults};
use crate::chaos::loadgen::Running;

/// How long one undo attempt may take before it counts as failed.
pub const UNDO_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per undo before the entry is `undo_failed` (the timer retries it later).
pub const UNDO_ATTEMPTS: u32 = 3;
/// First pause between two attempts; doubles, with jitter.
const UNDO_BACKOFF: Duration = Duration::from_millis(250);
/// How often the timer looks for expired leases and failed undos to retry.
const TICK: Duration = Duration::from_millis(200);
/// How often an `undo_failed` entry is tried again by the timer.
const RETRY_FAILED_EVERY: Duration = Duration::from_secs(30);
/// How long an undo waits for an apply still in flight to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Undone entries kept in memory (so late waiters and reports can read their outcome).
const KEEP_UNDONE: usize = 500;

/// The kinds of fault the ledger holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Load,
    Hang,
    NetworkBlock,
    NetworkLatency,
    Loadgen,
    Deploy,
    /// A Redis connection reset for other replicas (one-shot; the entry withdraws the request).
    RedisReset,
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Applying,
    Active,
    Undoing,
    Undone,
    UndoFailed,
}

/// How to undo one fault (`type` says which kind); data only, so it survives the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Undo {
    /// The load with this id (in-process).
    Load { load_id: u64 },
    /// The hang with this id (in-process).
    Hang { hang_id: u64 },
    /// A network fault of `backend` (`local`: in-process; `azure`: an NSG rule by name).
    Network { backend: String, fault_id: String },
    /// A `loadgen` child, in a process group of its own; `start_ticks` tells it from a later
    /// process that reuses the pid.
    Loadgen { pid: u32, start_ticks: u64 },
    /// A broken revision and the revision to bring back.
    Deploy { fault: DeployFault },
    /// A fault for other replicas, published in the chaos store under `key`: withdrawing it has
    /// every target undo its share (`fleet.rs`).
    Fleet { key: String },
    /// Nothing to undo yet (an apply that has not said what it made).
    Nothing,
}

/// One fault in the ledger, as `/chaos/status.faults` and `GET /chaos/faults` show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub id: String,
    pub kind: FaultKind,
    /// What it acts on, for people.
    pub target: String,
    /// `run:<run id>`, `endpoint` or `cli`.
    pub owner: String,
    /// When the apply finished; `None` while applying.
    pub applied_at: Option<String>,
    /// When it was undone (or found to need no undo); `None` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone_at: Option<String>,
    pub lease_expires_at: DateTime<Utc>,
    pub state: EntryState,
    /// The outcome of the last apply or undo, in a sentence.
    pub detail: Option<String>,
    pub undo_attempts: u32,
    pub undo: Undo,
    /// The process that applied it: in-process faults die with it.
    pub pid: u32,
    #[serde(skip)]
    last_try: Option<DateTime<Utc>>,
}

/// What one undo did, for a run's undo list and the kill switch's answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub fault_id: String,
    pub kind: FaultKind,
    pub target: String,
    pub owner: String,
    pub ok: bool,
    pub detail: String,
    /// When the undo ended (for an entry undone earlier, when that was).
    pub at: String,
}

/// The latch the kill switch sets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Halt {
    pub at: String,
    pub by: String,
    pub detail: String,
}

/// What an apply made: its value for the caller, how to undo it, and its target for people.
pub struct Applied<T> {
    pub value: T,
    pub undo: Undo,
    pub target: String,
    /// A loadgen child's handle, so its undo can stop it gracefully.
    pub loadgen: Option<Arc<Running>>,
}

/// What is asked for, before it is applied.
pub struct Intent {
    pub kind: FaultKind,
    pub owner: String,
    pub target: String,
    pub lease: DateTime<Utc>,
    /// What the undo is when the apply is cut short (an NSG rule name chosen up front); `Nothing`
    /// when a half-done apply leaves nothing behind.
    pub undo: Undo,
}

/// What the ledger file holds.
#[derive(Default, Serialize, Deserialize)]
struct File {
    halt: Option<Halt>,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    halt: Option<Halt>,
    next: u64,
}

/// The fault ledger of this service.
pub struct Ledger {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Bumped on every change, so undo callers can wait for an entry to settle.
    changed: watch::Sender<u64>,
    faults: Arc<Faults>,
    network: Arc<dyn NetworkBackend>,
    deploy: Option<Arc<dyn DeployBackend>>,
    /// The fleet's chaos store, for withdrawing fleet faults.
    shared: crate::chaos_store::SharedStore,
    /// Live loadgen children by entry id (the file has their pid for after a crash).
    loadgens: Mutex<HashMap<String, Arc<Running>>>,
}

impl Ledger {
    /// Opens `<dir>/ledger.json` (the entries of a previous process stay in it until
    /// [`Ledger::recover`] has undone them).
    pub fn open(
        dir: &std::path::Path,
        faults: Arc<Faults>,
        network: Arc<dyn NetworkBackend>,
        deploy: Option<Arc<dyn DeployBackend>>,
        shared: crate::chaos_store::SharedStore,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("ledger.json");
        let file: File = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "{} is unreadable ({e}); fix or remove it after checking that nothing it lists is still broken",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(e),
        };
        let next = file.entries.len() as u64;
        Ok(Arc::new(Self {
            path,
            inner: Mutex::new(Inner { entries: file.entries, halt: file.halt, next }),
            changed: watch::channel(0).0,
            faults,
            network,
            deploy,
            shared,
            loadgens: Mutex::new(HashMap::new()),
        }))
    }

    /// Undoes every entry a previous process left (call once, at startup, before serving).
    pub async fn recover(self: &Arc<Self>) -> Vec<Outcome> {
        let me = std::process::id();
        let ids: Vec<String> = {
            let mut inner = self.inner.lock().unwrap();
            let mut ids = Vec::new();
            for e in inner.entries.iter_mut().filter(|e| e.pid != me && e.state != EntryState::Undone) {
                // Its apply or undo died with its process: undo it with what was planned.
                if matches!(e.state, EntryState::Applying | EntryState::Undoing) {
                    e.state = EntryState::Active;
                }
                ids.push(e.id.clone());
            }
            ids
        };
        let outcomes = futures::future::join_all(ids.iter().map(|id| self.undo(id))).await;
        let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
        for o in &outcomes {
            if o.ok {
                tracing::warn!(fault = %o.fault_id, owner = %o.owner, detail = %o.detail, "recovered a fault left by a previous process");
            } else {
                tracing::error!(fault = %o.fault_id, owner = %o.owner, detail = %o.detail, "could not undo a fault left by a previous process");
            }
        }
        outcomes
    }

    /// Runs the lease timer for as long as the process lives.
    pub fn start_timer(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(ledger) = me.upgrade() else { return };
                let now = Utc::now();
                let due: Vec<String> = {
                    let inner = ledger.inner.lock().unwrap();
                    inner
                        .entries
                        .iter()
                        .filter(|e| match e.state {
                            EntryState::Active => e.lease_expires_at <= now,
                            EntryState::UndoFailed => e.last_try.is_none_or(|t| {
                                now - t >= chrono::Duration::from_std(RETRY_FAILED_EVERY).unwrap_or_default()
                            }),
                            _ => false,
                        })
                        .map(|e| e.id.clone())
                        .collect()
                };
                for id in due {
                    let l = ledger.clone();
                    tokio::spawn(async move {
                        if let Some(o) = l.undo(&id).await {
                            tracing::info!(fault = %o.fault_id, ok = o.ok, detail = %o.detail, "lease expired: undone");
                        }
                    });
                }
            }
        });
    }

    /// Refused while halted.
    pub fn check_open(&self) -> Result<(), FaultError> {
        match &self.inner.lock().unwrap().halt {
            Some(h) => Err(FaultError::Halted(halted_detail(h))),
            None => Ok(()),
        }
    }

    /// Sets the halt latch (persisted); returns it. Halting twice keeps the first time.
    pub fn halt(&self, by: &str) -> Halt {
        let mut inner = self.inner.lock().unwrap();
        let h = inner
            .halt
            .get_or_insert_with(|| Halt {
                at: crate::timestamp(),
                by: by.to_string(),
                detail: "the kill switch ended every run and fault".into(),
            })
            .clone();
        self.persist(&inner, false);
        h
    }

    /// Clears the halt latch; returns the halt that was in force.
    pub fn resume(&self) -> Option<Halt> {
        let mut inner = self.inner.lock().unwrap();
        let was = inner.halt.take();
        self.persist(&inner, false);
        was
    }

    pub fn halted(&self) -> Option<Halt> {
        self.inner.lock().unwrap().halt.clone()
    }

    /// Bumped on every change (the fleet mirrors the ledger when it moves).
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Takes over entries of a replica that died (read from its mirror in the fleet's store) and
    /// undoes them here: NSG rules by name, revisions, fleet faults. Its in-process faults and
    /// loadgen children died with it (another machine's pids mean nothing here) and are skipped.
    pub async fn adopt(self: &Arc<Self>, entries: Vec<Entry>, from: &str) -> Vec<Outcome> {
        let ids: Vec<String> = {
            let mut inner = self.inner.lock().unwrap();
            let mut ids = Vec::new();
            for mut e in entries {
                let durable = matches!(&e.undo, Undo::Network { backend, .. } if backend == "azure")
                    || matches!(e.undo, Undo::Deploy { .. } | Undo::Fleet { .. });
                if !durable || e.state == EntryState::Undone || inner.entries.iter().any(|x| x.id == e.id) {
                    continue;
                }
                e.owner = format!("{} (taken over from replica {from})", e.owner);
                e.state = EntryState::Active;
                ids.push(e.id.clone());
                inner.entries.push(e);
            }
            self.persist(&inner, true);
            ids
        };
        self.bump();
        futures::future::join_all(ids.iter().map(|id| self.undo(id))).await.into_iter().flatten().collect()
    }

    /// Entries not yet undone, oldest first.
    pub fn list(&self) -> Vec<Entry> {
        self.inner.lock().unwrap().entries.iter().filter(|e| e.state != EntryState::Undone).cloned().collect()
    }

    /// One entry, undone ones included while they are remembered.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.inner.lock().unwrap().entries.iter().find(|e| e.id == id).cloned()
    }

    /// An operator gives up on an `undo_failed` entry (after fixing the world by hand).
    pub fn forget(&self, id: &str) -> Result<Entry, FaultError> {
        let mut inner = self.inner.lock().unwrap();
        let i = inner
            .entries
            .iter()
            .position(|e| e.id == id && e.state != EntryState::Undone)
            .ok_or_else(|| FaultError::NotFound(format!("no fault '{id}' in the ledger")))?;
        if inner.entries[i].state != EntryState::UndoFailed {
            return Err(FaultError::Conflict(format!(
                "fault '{id}' is {}; only an undo_failed fault can be forgotten (the others are undone by the ledger)",
                crate::json_name(&inner.entries[i].state)
            )));
        }
        let mut e = inner.entries.remove(i);
        e.state = EntryState::Undone;
        e.undone_at = Some(crate::timestamp());
        e.detail = Some("forgotten by an operator (DELETE /chaos/faults)".into());
        self.persist(&inner, false);
        drop(inner);
        self.bump();
        tracing::warn!(fault = %e.id, "an operator forgot an undo_failed fault");
        Ok(e)
    }

    /// Applies a fault: writes the intent, runs `apply` to completion in a task of its own (a
    /// caller that gives up does not cut it short), then records what it made. Returns the
    /// entry id and the apply's value.
    pub async fn apply<T, F>(self: &Arc<Self>, intent: Intent, apply: F) -> Result<(String, T), FaultError>
    where
        T: Send + 'static,
        F: Future<Output = Result<Applied<T>, FaultError>> + Send + 'static,
    {
        let id = {
            let mut inner = self.inner.lock().unwrap();
            if let Some(h) = &inner.halt {
                return Err(FaultError::Halted(halted_detail(h)));
            }
            inner.next += 1;
            let id = format!("f-{}-{:04x}", inner.next, fastrand::u16(..));
            inner.entries.push(Entry {
                id: id.clone(),
                kind: intent.kind,
                target: intent.target,
                owner: intent.owner,
                applied_at: None,
                undone_at: None,
                lease_expires_at: intent.lease,
                state: EntryState::Applying,
                detail: None,
                undo_attempts: 0,
                undo: intent.undo,
                pid: std::process::id(),
                last_try: None,
            });
            // Write-ahead: durable before anything is touched.
            self.persist(&inner, true);
            id
        };
        self.bump();
        let me = self.clone();
        let entry = id.clone();
        let task = tokio::spawn(async move {
            let result = apply.await;
            me.settle(&entry, result)
        });
        match task.await {
            Ok(r) => r.map(|v| (id, v)),
            Err(e) => {
                // The apply panicked: leave the entry for the undo (its planned undo, if any).
                self.settle::<T>(&id, Err(FaultError::Backend(format!("internal error while applying: {e}"))))
                    .map(|v| (id, v))
            }
        }
    }

    /// Records the result of an apply.
    fn settle<T>(self: &Arc<Self>, id: &str, result: Result<Applied<T>, FaultError>) -> Result<T, FaultError> {
        let mut inner = self.inner.lock().unwrap();
        let Some(e) = inner.entries.iter_mut().find(|e| e.id == id) else {
            return result.map(|a| a.value);
        };
        let out = match result {
            Ok(a) => {
                e.state = EntryState::Active;
                e.applied_at = Some(crate::timestamp());
                e.undo = a.undo;
                e.target = a.target;
                if let Some(lg) = a.loadgen {
                    self.loadgens.lock().unwrap().insert(id.to_string(), lg);
                }
                Ok(a.value)
            }
            Err(err) => {
                e.detail = Some(format!("apply failed: {err}"));
                // Only a backend failure may come half-way through (refusals come before any write).
                if e.undo == Undo::Nothing || !matches!(err, FaultError::Backend(_)) {
                    e.state = EntryState::Undone;
                    e.undone_at = Some(crate::timestamp());
                } else {
                    // Half-applied, perhaps (an ARM PUT that failed late): undo what was planned.
                    e.state = EntryState::Active;
                    e.applied_at = Some(crate::timestamp());
                    e.lease_expires_at = Utc::now();
                }
                Err(err)
            }
        };
        self.persist(&inner, false);
        drop(inner);
        self.bump();
        out
    }

    /// Undoes one entry (waiting for an apply in flight to settle first). Concurrent callers
    /// share the one undo. `None` when the id is unknown.
    pub async fn undo(self: &Arc<Self>, id: &str) -> Option<Outcome> {
        let mut changes = self.changed.subscribe();
        let settle_deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let claimed = {
                let mut inner = self.inner.lock().unwrap();
                let e = inner.entries.iter_mut().find(|e| e.id == id)?;
                match e.state {
                    EntryState::Undone => return Some(outcome(e, true)),
                    EntryState::Applying | EntryState::Undoing => None,
                    EntryState::Active | EntryState::UndoFailed => {
                        e.state = EntryState::Undoing;
                        Some(e.clone())
                    }
                }
            };
            if let Some(entry) = claimed {
                self.bump();
                // A task of its own: a caller that gives up (a rollback out of budget) must not
                // leave the entry claimed and half-undone.
                let me = self.clone();
                let fallback = outcome(&entry, false);
                return Some(
                    tokio::spawn(async move { me.perform(entry).await }).await.unwrap_or_else(|e| Outcome {
                        detail: format!("internal error while undoing: {e}"),
                        ..fallback
                    }),
                );
            }
            // Applying or being undone by someone else: wait for a change.
            if tokio::time::timeout_at(settle_deadline, changes.changed()).await.is_err() {
                let inner = self.inner.lock().unwrap();
                let e = inner.entries.iter().find(|e| e.id == id)?;
                return Some(Outcome {
                    ok: false,
                    detail: format!(
                        "still {} after {} s; the ledger keeps it",
                        crate::json_name(&e.state),
                        SETTLE_TIMEOUT.as_secs()
                    ),
                    ..outcome(e, false)
                });
            }
        }
    }

    /// Undoes every entry `matches` picks, concurrently; outcomes newest entry first.
    pub async fn undo_where(self: &Arc<Self>, matches: impl Fn(&Entry) -> bool) -> Vec<Outcome> {
        let ids: Vec<String> = {
            let inner = self.inner.lock().unwrap();
            inner
                .entries
                .iter()
                .rev()
                .filter(|e| e.state != EntryState::Undone && matches(e))
                .map(|e| e.id.clone())
                .collect()
        };
        futures::future::join_all(ids.iter().map(|id| self.undo(id))).await.into_iter().flatten().collect()
    }

    /// Undoes every entry of `owner`; entries someone else (the kill switch, the lease timer, the
    /// owner's own script) already undid are reported with their outcome too, so a run's undo
    /// list always covers every fault it applied.
    pub async fn undo_owner(self: &Arc<Self>, owner: &str) -> Vec<Outcome> {
        let ids: Vec<String> = {
            let inner = self.inner.lock().unwrap();
            // Not the applies that failed and left nothing to undo.
            let never_applied = |e: &Entry| e.state == EntryState::Undone && e.applied_at.is_none();
            inner.entries.iter().rev().filter(|e| e.owner == owner && !never_applied(e)).map(|e| e.id.clone()).collect()
        };
        futures::future::join_all(ids.iter().map(|id| self.undo(id))).await.into_iter().flatten().collect()
    }

    /// Undoes every entry of every owner.
    /// This is the emergency stop (kill switch, shutdown): see [`Self::undo_at_once`].
    pub async fn undo_all(self: &Arc<Self>) -> Vec<Outcome> {
        self.undo_at_once(|_| true).await
    }

    /// Undoes every entry `matches` picks as an emergency (the kill switch, a run's guard
    /// breach): load generators are killed at once rather than asked to stop and write their
    /// reports, so their traffic ends within milliseconds.
    pub async fn undo_at_once(self: &Arc<Self>, matches: impl Fn(&Entry) -> bool) -> Vec<Outcome> {
        let children: Vec<(u32, u64)> = {
            let inner = self.inner.lock().unwrap();
            inner
                .entries
                .iter()
                .filter(|e| e.state != EntryState::Undone && e.pid == std::process::id() && matches(e))
                .filter_map(|e| match e.undo {
                    Undo::Loadgen { pid, start_ticks } => Some((pid, start_ticks)),
                    _ => None,
                })
                .collect()
        };
        for (pid, ticks) in children {
            crate::chaos::loadgen::kill_group(pid, ticks);
        }
        self.undo_where(matches).await
    }

    /// Attempts with timeout and backoff, then records the final state.
    async fn perform(self: &Arc<Self>, entry: Entry) -> Outcome {
        let mut last = String::new();
        let mut ok = false;
        let mut attempts = 0;
        for attempt in 0..UNDO_ATTEMPTS {
            attempts += 1;
            match tokio::time::timeout(UNDO_ATTEMPT_TIMEOUT, self.revert(&entry)).await {
                Ok(Ok(detail)) => {
                    ok = true;
                    last = detail;
                    break;
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("timed out after {} s", UNDO_ATTEMPT_TIMEOUT.as_secs()),
            }
            if attempt + 1 < UNDO_ATTEMPTS {
                let pause = UNDO_BACKOFF * 2u32.pow(attempt);
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64())).await;
            }
        }
        let mut inner = self.inner.lock().unwrap();
        let mut result = None;
        if let Some(e) = inner.entries.iter_mut().find(|e| e.id == entry.id) {
            e.undo_attempts += attempts;
            e.last_try = Some(Utc::now());
            e.state = if ok { EntryState::Undone } else { EntryState::UndoFailed };
            if ok {
                e.undone_at = Some(crate::timestamp());
            }
            e.detail = Some(if ok { last.clone() } else { format!("undo failed: {last}") });
            result = Some(outcome(e, ok));
        }
        // Forget the oldest undone entries beyond what is worth remembering.
        let undone = inner.entries.iter().filter(|e| e.state == EntryState::Undone).count();
        if undone > KEEP_UNDONE {
            let mut drop_n = undone - KEEP_UNDONE;
            inner.entries.retain(|e| {
                if drop_n > 0 && e.state == EntryState::Undone {
                    drop_n -= 1;
                    false
                } else {
                    true
                }
            });
        }
        self.persist(&inner, false);
        drop(inner);
        if ok {
            self.loadgens.lock().unwrap().remove(&entry.id);
        }
        self.bump();
        if !ok {
            tracing::error!(fault = %entry.id, kind = ?entry.kind, detail = %last, "undo failed; the ledger keeps the fault and retries");
        }
        result.unwrap_or_else(|| Outcome { ok, detail: last, ..outcome(&entry, ok) })
    }

    /// One undo attempt.
    async fn revert(&self, e: &Entry) -> Result<String, String> {
        let same_process = e.pid == std::process::id();
        let died = || format!("died with the process that applied it (pid {})", e.pid);
        match &e.undo {
            Undo::Nothing => Ok("nothing was applied".into()),
            Undo::Load { load_id } => {
                if !same_process {
                    return Ok(died());
                }
                Ok(if self.faults.load.stop_if(*load_id).await { "load stopped" } else { "load had already ended" }
                    .into())
            }
            Undo::Hang { hang_id } => {
                if !same_process {
                    return Ok(died());
                }
                Ok(if self.faults.hang.stop_if(*hang_id) { "hang ended" } else { "hang had already ended" }.into())
            }
            Undo::Network { backend, fault_id } => {
                if backend != "azure" && !same_process {
                    return Ok(died());
                }
                if backend != self.network.name() {
                    return Err(format!(
                        "fault {fault_id} belongs to the {backend} network backend, but this service runs {}",
                        self.network.name()
                    ));
                }
                match self.network.clear(fault_id).await {
                    Ok(true) => Ok("cleared".into()),
                    Ok(false) => Ok("had already expired or been cleared".into()),
                    Err(err) => Err(err.to_string()),
                }
            }
            Undo::Loadgen { pid, start_ticks } => {
                let running = self.loadgens.lock().unwrap().get(&e.id).cloned();
                if let Some(running) = running.filter(|_| same_process) {
                    running.stop();
                    let summary = running.wait().await;
                    crate::chaos::loadgen::kill_group(*pid, *start_ticks);
                    return Ok(match summary {
                        Ok(s) => format!("stopped after {} requests", s["requests"]),
                        Err(err) => format!("stopped ({err})"),
                    });
                }
                Ok(if crate::chaos::loadgen::kill_group(*pid, *start_ticks) {
                    format!("loadgen pid {pid} killed")
                } else {
                    format!("loadgen pid {pid} had already exited")
                })
            }
            Undo::Fleet { key } => {
                let store = self.shared.get().ok_or_else(|| {
                    "the chaos store is not open (unreachable?): the targets undo their share at its lease".to_string()
                })?;
                store.delete(key).await.map_err(|err| err.to_string())?;
                Ok("withdrawn: every target undoes its share within a second".into())
            }
            Undo::Deploy { fault } => {
                let deploy = self.deploy.as_ref().ok_or_else(|| {
                    "this service does not know its container app (AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, \
                     SERVICE_APP_NAME): restore the revision by hand, then DELETE /chaos/faults/{id}"
                        .to_string()
                })?;
                deploy.undo(fault).await.map_err(|err| err.to_string())
            }
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Writes the file atomically (temp file + rename); `sync` also fsyncs it (write-ahead).
    fn persist(&self, inner: &Inner, sync: bool) {
        let file = File {
            halt: inner.halt.clone(),
            entries: inner.entries.iter().filter(|e| e.state != EntryState::Undone).cloned().collect(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other).and_then(|bytes| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            if sync {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &self.path)?;
            if sync && let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!(error = %e, file = %self.path.display(), "cannot write the fault ledger");
        }
    }
}

/// The lease of a fault that lasts `duration` (none = until undone), capped at `cap`.
pub fn lease(duration: Option<Duration>, cap: DateTime<Utc>) -> DateTime<Utc> {
    match duration.and_then(|d| chrono::Duration::from_std(d).ok()) {
        Some(d) => (Utc::now() + d).min(cap),
        None => cap,
    }
}

/// `run:<id>`, the owner of a run's faults.
pub fn run_owner(run_id: &str) -> String {
    format!("run:{run_id}")
}

fn outcome(e: &Entry, ok: bool) -> Outcome {
    Outcome {
        fault_id: e.id.clone(),
        kind: e.kind,
        target: e.target.clone(),
        owner: e.owner.clone(),
        ok,
        detail: e.detail.clone().unwrap_or_default(),
        at: e.undone_at.clone().unwrap_or_else(crate::timestamp),
    }
}

fn halted_detail(h: &Halt) -> String {
    format!(
        "chaos is halted since {} by {}: no new run or fault starts; POST /chaos/resume allows chaos again",
        h.at, h.by
    )
}
