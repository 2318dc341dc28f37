//! Faults: the ways chaos-lab breaks its own service. Each fault has exactly one implementation
//! here, and one door: the [`ledger`], through which the built-in endpoints, script functions,
//! the kill switch, shutdown and startup recovery apply and undo every fault.
//!
//! This module must not know about HTTP or Rhai.

pub mod cpu;
pub mod deploy;
pub mod hang;
pub mod ledger;
pub mod load;
pub mod network;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::{ResetReport, Store};

/// Why a fault could not be applied. Messages are the API's `detail` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The same kind of fault is already running.
    #[error("{0}")]
    AlreadyActive(&'static str),
    /// A parameter is out of range or unknown.
    #[error("{0}")]
    Invalid(String),
    /// What the fault acts on is not there (e.g. Redis disabled).
    #[error("{0}")]
    Unavailable(String),
    /// The backend cannot apply this kind of fault (e.g. latency with an NSG).
    #[error("{0}")]
    Unsupported(String),
    /// The backend failed to apply or remove the fault (e.g. an ARM error); says why.
    #[error("{0}")]
    Backend(String),
    /// The service is shutting down and starts no new fault.
    #[error("The service is shutting down; no new fault can start")]
    ShuttingDown,
    /// The kill switch's latch is set: no new fault until `POST /chaos/resume`.
    #[error("{0}")]
    Halted(String),
    /// No such fault in the ledger.
    #[error("{0}")]
    NotFound(String),
    /// The fault is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
}

/// The built-in faults of one service instance.
#[derive(Default)]
pub struct Faults {
    pub load: load::LoadController,
    pub hang: hang::HangController,
    /// Set once shutdown begins, so a request racing the shutdown cannot start a new fault.
    shutting_down: AtomicBool,
}

impl Faults {
    /// Refuses new faults from now on (the ledger undoes the running ones).
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub(crate) fn check_accepting(&self) -> Result<(), FaultError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(FaultError::ShuttingDown);
        }
        Ok(())
    }

    /// Starts a CPU + memory load (see [`load::LoadController::start`]).
    pub fn start_load(&self, level: &str, duration_seconds: i64) -> Result<load::LoadStatus, FaultError> {
        self.check_accepting()?;
        self.load.start(level, duration_seconds)
    }

    /// Starts a hang (see [`hang::HangController::start`]).
    pub fn start_hang(&self, duration_seconds: i64, scope: &str) -> Result<hang::HangTicket, FaultError> {
        self.check_accepting()?;
        self.hang.start(duration_seconds, scope)
    }
}

/// Closes every pooled Redis connection. `force` aborts commands in flight; otherwise they get
/// the socket timeout to finish.
pub async fn redis_reset(store: Option<&Store>, force: bool) -> Result<ResetReport, FaultError> {
    let store = store.ok_or_else(|| FaultError::Unavailable("Redis client not initialized".into()))?;
    let report = store.reset(force).await;
    crate::telemetry::metrics().redis_reset.add(1, &[]);
    Ok(report)
}
