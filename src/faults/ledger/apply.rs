//! Applying a fault: the entry is written (and fsynced) before the apply runs, in a task of its
//! own, and settled with what the apply made.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;

use super::{Applied, Entry, EntryState, Intent, Ledger, Undo, halted_detail};
use crate::faults::FaultError;

impl Ledger {
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
}
