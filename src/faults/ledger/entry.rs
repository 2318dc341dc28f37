//! What the ledger holds and answers: an entry and how to undo it, what an undo did, the halt
//! latch, and what an apply asks for and makes.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::child::Running;
use crate::faults::deploy::DeployFault;

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
    /// every target undo its share ([`crate::fleet`]).
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
    /// When the last undo attempt ended (the timer's retry pace); not persisted.
    #[serde(skip)]
    pub(super) last_try: Option<DateTime<Utc>>,
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
