//! Takeover: the runs and the durable faults of replicas that stopped answering are taken over
//! by one live replica (a conditional write decides which).

use serde_json::{Value, json};

use super::{FAULTS, Fleet, FleetFault, LEDGERS, LIVE_FOR, RUNS};
use crate::chaos_store::{ChaosStore, Etag, Listed, Write};

impl Fleet {
    /// Takes over the runs of replicas that stopped beating: marks each `interrupted` and
    /// withdraws its fleet faults (its in-process faults died with it; its leases are the
    /// backstop for the rest). One replica wins each takeover (a conditional write).
    pub(super) async fn take_over(&self, listed: &[crate::chaos_store::Listed]) {
        let Some(store) = self.store() else { return };
        let settled = self.view.lock().unwrap().since.is_some_and(|t| t.elapsed() > LIVE_FOR);
        if !settled {
            return;
        }
        let live = self.live();
        // Faults of dead replicas that outlive a process (NSG rules, revisions, fleet faults).
        for l in listed.iter().filter(|l| l.key.starts_with(LEDGERS)) {
            let dead = l.key[LEDGERS.len()..].trim_end_matches(".json").to_string();
            if dead == self.name || live.contains(&dead) {
                continue;
            }
            let Some((etag, mirror)) = self.read_marker(store.as_ref(), l).await else { continue };
            let entries: Vec<crate::faults::ledger::Entry> =
                serde_json::from_value(mirror["entries"].clone()).unwrap_or_default();
            if entries.is_empty() || mirror["taken_by"].is_string() {
                continue;
            }
            let claim = json!({"replica": dead, "entries": [], "taken_by": self.name});
            if store.put(&l.key, claim.to_string().into_bytes(), Write::IfMatch(etag)).await.is_err() {
                continue; // another replica took it
            }
            let Some(local) = self.local.get() else { continue };
            let outcomes = local.ledger.adopt(entries, &dead).await;
            tracing::warn!(dead = %dead, undone = outcomes.iter().filter(|o| o.ok).count(), failed = outcomes.iter().filter(|o| !o.ok).count(), "took over the faults of a replica that stopped answering");
        }
        for l in listed.iter().filter(|l| l.key.starts_with(RUNS)) {
            let Some((etag, mut marker)) = self.read_marker(store.as_ref(), l).await else { continue };
            let owner = marker["replica"].as_str().unwrap_or_default().to_string();
            if owner == self.name || live.contains(&owner) || marker["taken_by"].is_string() {
                continue;
            }
            marker["taken_by"] = json!(self.name);
            if store.put(&l.key, marker.to_string().into_bytes(), Write::IfMatch(etag)).await.is_err() {
                continue; // another replica took it
            }
            let run_id = marker["run_id"].as_str().unwrap_or_default().to_string();
            let run_owner = crate::faults::ledger::run_owner(&run_id);
            let mut withdrawn = 0;
            if let Ok(faults) = store.list(FAULTS).await {
                for f in faults {
                    let Ok(Some((b, _))) = store.get(&f.key).await else { continue };
                    if serde_json::from_slice::<FleetFault>(&b).is_ok_and(|x| x.owner == run_owner)
                        && store.delete(&f.key).await.is_ok()
                    {
                        withdrawn += 1;
                    }
                }
            }
            let journal = format!("runs/{run_id}.json");
            if let Ok(Some((b, etag))) = store.get(&journal).await
                && let Ok(mut report) = serde_json::from_slice::<Value>(&b)
            {
                report["status"] = json!("interrupted");
                report["verdict"] = json!("fail");
                report["ended_at"] = json!(crate::timestamp());
                report["reason"] = json!(format!(
                    "replica {owner} stopped answering during this run; replica {} took it over and withdrew {withdrawn} of its fleet fault(s) (its own in-process faults died with it)",
                    self.name
                ));
                let _ = store.put(&journal, report.to_string().into_bytes(), Write::IfMatch(etag)).await;
            }
            let _ = store.delete(&l.key).await;
            tracing::warn!(run = %run_id, dead = %owner, withdrawn, "took over the run of a replica that stopped answering");
        }
    }

    /// A ledger mirror or run marker as JSON with the version read, re-read from the store only
    /// when its version changed since the last read; `None` when it is gone or unreadable.
    async fn read_marker(&self, store: &dyn ChaosStore, l: &Listed) -> Option<(Etag, Value)> {
        let cached = self.view.lock().unwrap().markers.get(&l.key).filter(|(e, _)| *e == l.etag).cloned();
        if cached.is_some() {
            return cached;
        }
        let Ok(Some((bytes, etag))) = store.get(&l.key).await else { return None };
        let v = serde_json::from_slice::<Value>(&bytes).ok()?;
        self.view.lock().unwrap().markers.insert(l.key.clone(), (etag.clone(), v.clone()));
        Some((etag, v))
    }
}
