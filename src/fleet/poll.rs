//! The loop's two beats: this replica's heartbeat (and ledger mirror), and the poll of `fleet/`
//! that follows the halt latch, reconciles fleet faults, takes over dead replicas and fails safe
//! while the store does not answer.

use std::time::Instant;

use serde_json::{Value, json};

use super::{COUNTS_EVERY, FAIL_SAFE_AFTER, Fleet, HALT_KEY, LEDGERS, Local, REPLICAS};
use crate::chaos_store::Write;
use crate::faults::ledger::Halt;

impl Fleet {
    pub(super) async fn beat(&self, local: &Local) {
        let Some(store) = self.store() else { return };
        let body = json!({
            "name": self.name,
            "pid": std::process::id(),
            "at": crate::timestamp(),
            "faults": local.ledger.list().len(),
        });
        if let Err(e) =
            store.put(&format!("{REPLICAS}{}.json", self.name), body.to_string().into_bytes(), Write::Overwrite).await
        {
            self.failed(&e);
        }
        // The ledger, when it moved: what another replica undoes if this one dies.
        let version = local.ledger.version();
        if self.view.lock().unwrap().mirrored != Some(version) {
            let mirror = json!({"replica": self.name, "entries": local.ledger.list()});
            match store
                .put(&format!("{LEDGERS}{}.json", self.name), mirror.to_string().into_bytes(), Write::Overwrite)
                .await
            {
                Ok(_) => self.view.lock().unwrap().mirrored = Some(version),
                Err(e) => self.failed(&e),
            }
        }
    }

    /// Reads `fleet/`: heartbeats and the halt latch, and follows the latch.
    pub(super) async fn poll(&self, local: &Local) {
        let Some(store) = self.store() else { return };
        let listed = match store.list("fleet/").await {
            Ok(l) => {
                self.view.lock().unwrap().unreachable_since = None;
                l
            }
            Err(e) => {
                self.failed(&e);
                let shares: Vec<String> = {
                    let mut view = self.view.lock().unwrap();
                    let since = *view.unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < FAIL_SAFE_AFTER {
                        return;
                    }
                    // Forget them as applied (`None`), so they are not applied again when the
                    // store answers and still lists them.
                    view.applied.values_mut().filter_map(Option::take).collect()
                };
                for entry in shares {
                    if let Some(o) = local.ledger.undo(&entry).await {
                        tracing::warn!(fault = %o.fault_id, ok = o.ok, "the chaos store is unreachable: undid this replica's share of a fleet fault (fail-safe)");
                    }
                }
                return;
            }
        };
        self.view.lock().unwrap().since.get_or_insert_with(Instant::now);
        self.reconcile(&listed, local).await;
        self.take_over(&listed).await;
        let halt = listed.iter().find(|l| l.key == HALT_KEY).map(|l| l.etag.clone());
        {
            let mut view = self.view.lock().unwrap();
            view.error = None;
            let now = Instant::now();
            for l in listed.iter().filter(|l| l.key.starts_with(REPLICAS)) {
                let name = l.key[REPLICAS.len()..].trim_end_matches(".json").to_string();
                let changed = view.seen.get(&name).is_none_or(|(etag, _, _)| *etag != l.etag);
                if changed {
                    view.seen.insert(name, (l.etag.clone(), now, chrono::Utc::now()));
                }
            }
        }
        // Other replicas' fault counts, for the status.
        let due: Vec<(String, String)> = {
            let view = self.view.lock().unwrap();
            listed
                .iter()
                .filter(|l| l.key.starts_with(REPLICAS))
                .map(|l| (l.key.clone(), l.key[REPLICAS.len()..].trim_end_matches(".json").to_string()))
                .filter(|(_, n)| {
                    *n != self.name && view.counts.get(n).is_none_or(|(_, at)| at.elapsed() >= COUNTS_EVERY)
                })
                .collect()
        };
        for (key, name) in due {
            if let Ok(Some((bytes, _))) = store.get(&key).await
                && let Ok(beat) = serde_json::from_slice::<Value>(&bytes)
            {
                let n = beat["faults"].as_u64().unwrap_or(0);
                self.view.lock().unwrap().counts.insert(name, (n, Instant::now()));
            }
        }
        let acted = self.view.lock().unwrap().halt.clone();
        match (halt, acted) {
            (Some(etag), acted) if acted.as_ref() != Some(&etag) => {
                // Halted elsewhere (or again): stop here too.
                let by = match store.get(HALT_KEY).await {
                    Ok(Some((bytes, _))) => serde_json::from_slice::<Halt>(&bytes).map(|h| h.by).unwrap_or_default(),
                    _ => String::new(),
                };
                let halted = (local.halt)(format!("{by} (fleet)")).await;
                tracing::warn!(
                    runs = halted.runs,
                    undone = halted.undone,
                    "the fleet is halted: this replica stopped its runs and faults"
                );
                self.view.lock().unwrap().halt = Some(etag);
            }
            (None, Some(_)) => {
                if local.ledger.resume().is_some() {
                    tracing::warn!("the fleet was resumed: chaos allowed again on this replica");
                }
                self.view.lock().unwrap().halt = None;
            }
            _ => {}
        }
    }
}
