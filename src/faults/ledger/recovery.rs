//! Recovery: undoing what a dead process left (at startup), the lease timer, and taking over
//! the entries of a replica that died.

use std::sync::Arc;

use chrono::Utc;

use super::{Entry, EntryState, Ledger, Outcome, RETRY_FAILED_EVERY, TICK, Undo};

impl Ledger {
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
}
