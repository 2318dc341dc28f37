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
//!
//! Layout: `entry` is what the ledger holds (entries, their undo, outcomes, the halt latch);
//! `apply` writes an entry ahead and runs the apply; `undo` runs undos (attempts, backoff, the
//! revert of each kind); `recovery` undoes what a dead process left, runs the lease timer and
//! takes over a dead replica's entries.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::deploy::DeployBackend;
use super::network::NetworkBackend;
use super::{FaultError, Faults};
use crate::child::Running;

mod apply;
mod entry;
mod recovery;
mod undo;

pub use entry::{Applied, Entry, EntryState, FaultKind, Halt, Intent, Outcome, Undo};

/// How long one undo attempt may take before it counts as failed.
pub const UNDO_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per undo before the entry is `undo_failed` (the timer retries it later).
pub const UNDO_ATTEMPTS: u32 = 3;
/// First pause between two attempts; doubles, with jitter (`crate::backoff`), up to the cap.
const UNDO_BACKOFF: Duration = Duration::from_millis(250);
const UNDO_BACKOFF_CAP: Duration = Duration::from_secs(2);
/// How often the timer looks for expired leases and failed undos to retry.
const TICK: Duration = Duration::from_millis(200);
/// How often an `undo_failed` entry is tried again by the timer.
const RETRY_FAILED_EVERY: Duration = Duration::from_secs(30);
/// How long an undo waits for an apply still in flight to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Undone entries kept in memory (so late waiters and reports can read their outcome).
const KEEP_UNDONE: usize = 500;

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

fn halted_detail(h: &Halt) -> String {
    format!(
        "chaos is halted since {} by {}: no new run or fault starts; POST /chaos/resume allows chaos again",
        h.at, h.by
    )
}
