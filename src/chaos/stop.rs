//! Stopping runs: one, all of them, and "stop everything" (the kill switch and SIGTERM), which
//! also has the ledger undo every fault.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Runs;
use super::report::{RunShared, StopReason};
use crate::faults::ledger::Outcome;

impl Runs {
    /// Asks every run to stop; returns them.
    pub fn request_stop_all(&self, reason: StopReason) -> Vec<Arc<RunShared>> {
        let runs: Vec<Arc<RunShared>> = self.active.lock().unwrap().values().cloned().collect();
        for r in &runs {
            r.request_stop(reason);
        }
        runs
    }

    /// Waits (up to `within`) until each of `runs` has ended.
    pub async fn wait_ended(&self, runs: &[Arc<RunShared>], within: Duration) {
        let waits = runs.iter().map(|r| {
            let mut done = r.done.subscribe();
            async move {
                let _ = done.wait_for(|d| *d).await;
            }
        });
        if tokio::time::timeout(within, futures::future::join_all(waits)).await.is_err() {
            tracing::error!("some runs did not end within {within:?}; the fault ledger undoes their faults");
        }
    }

    /// The one implementation of "stop everything", for the kill switch (`POST /chaos/stop`, the
    /// fleet's latch) and for SIGTERM alike: nothing new may start, every run is stopped, the
    /// ledger undoes every fault of every owner. See [`Stop`] for how the two differ.
    pub async fn stop_everything(&self, how: Stop<'_>) -> StopReport {
        let started = std::time::Instant::now();
        let d = &self.deps;
        let (halt, runs, undo_within) = match how {
            Stop::KillSwitch { by } => (Some(d.ledger.halt(by)), self.request_stop_all(StopReason::KillSwitch), None),
            Stop::Shutdown { grace, undo_within } => {
                d.faults.shutdown();
                self.accepting.store(false, Ordering::SeqCst);
                let runs = self.request_stop_all(StopReason::Shutdown);
                self.wait_ended(&runs, grace).await;
                (None, runs, Some(undo_within))
            }
        };
        let outcomes = match undo_within {
            None => d.ledger.undo_all().await,
            // Bounded: an unreachable ARM must not hold the process past the platform's grace
            // period; what is not undone stays in the ledger file for the next start.
            Some(within) => tokio::time::timeout(within, d.ledger.undo_all()).await.unwrap_or_else(|_| {
                tracing::error!(
                    seconds = within.as_secs(),
                    "faults not undone in time at shutdown; the next start undoes them (NSG rules also expire)"
                );
                Vec::new()
            }),
        };
        for o in outcomes.iter().filter(|o| !o.ok) {
            tracing::error!(fault = %o.fault_id, detail = %o.detail, "could not undo a fault; the ledger retries");
        }
        // An operator CLI's NSG rule is the kill switch's to remove, not a shutdown's.
        let unknown = if halt.is_some() { d.network.clear_all().await } else { Ok(0) };
        let all_clear_ms = crate::round_to(started.elapsed().as_secs_f64() * 1e3, 3);
        StopReport { halt, runs, outcomes, unknown, all_clear_ms }
    }
}

/// How [`Runs::stop_everything`] is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Stop<'a> {
    /// The kill switch: halts first (no new run or fault until resumed), cancels every run at once
    /// (cutting their rollbacks short), and also removes the backend's faults the ledger does not
    /// know (an operator CLI's NSG rule). `by` says who pulled it.
    KillSwitch { by: &'a str },
    /// SIGTERM: refuses new runs and faults, gives the runs `grace` to run their own rollbacks
    /// and undo, then has the ledger undo what is left within `undo_within`.
    Shutdown { grace: Duration, undo_within: Duration },
}

/// What [`Runs::stop_everything`] did on this replica.
pub struct StopReport {
    /// The latch the kill switch set (`None` at shutdown).
    pub halt: Option<crate::faults::ledger::Halt>,
    /// The runs it stopped (they end on their own threads).
    pub runs: Vec<Arc<RunShared>>,
    /// Every fault the ledger undid (or failed to).
    pub outcomes: Vec<Outcome>,
    /// Network faults the backend held that the ledger did not know, removed (kill switch only).
    pub unknown: Result<usize, crate::faults::FaultError>,
    /// From the start to every fault undone.
    pub all_clear_ms: f64,
}
