//! Undoing entries: one undo per entry however many ask, each attempt with a timeout, retries
//! with backoff, and the revert of each kind of fault.

use std::sync::Arc;

use chrono::Utc;

use super::{
    Entry, EntryState, KEEP_UNDONE, Ledger, Outcome, SETTLE_TIMEOUT, UNDO_ATTEMPT_TIMEOUT, UNDO_ATTEMPTS, UNDO_BACKOFF,
    UNDO_BACKOFF_CAP, Undo,
};
use crate::child::kill_group;

impl Ledger {
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
            kill_group(pid, ticks);
        }
        self.undo_where(matches).await
    }

    /// Attempts with timeout and backoff, then records the final state.
    async fn perform(self: &Arc<Self>, entry: Entry) -> Outcome {
        let mut last;
        let mut ok = false;
        let mut attempts = 0;
        let mut pauses = crate::backoff::backoff(UNDO_BACKOFF, UNDO_BACKOFF_CAP, UNDO_ATTEMPTS as usize - 1);
        loop {
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
            match pauses.next() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => break,
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
                    kill_group(*pid, *start_ticks);
                    return Ok(match summary {
                        Ok(s) => format!("stopped after {} requests", s["requests"]),
                        Err(err) => format!("stopped ({err})"),
                    });
                }
                Ok(if kill_group(*pid, *start_ticks) {
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
