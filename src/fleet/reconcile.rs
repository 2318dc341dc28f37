//! Fleet faults: publishing one for other replicas, and each replica applying and undoing its
//! own share of them, through its own ledger.

use std::sync::Arc;

use super::{FAULTS, Fleet, FleetFault, Local};
use crate::chaos_store::Write;
use crate::faults::FaultError;
use crate::faults::ledger::{Applied, FaultKind, Intent, Ledger, Undo};

impl Fleet {
    /// Publishes a fault for other replicas through `ledger` (write-ahead, undone by deleting
    /// its blob); this replica, when among the targets, applies its share at once.
    pub async fn apply_fleet(
        self: &Arc<Self>,
        ledger: &Arc<Ledger>,
        mut fault: FleetFault,
        kind: FaultKind,
    ) -> Result<(String, FleetFault), FaultError> {
        let store = self.store().cloned().ok_or_else(|| {
            FaultError::Unavailable(format!(
                "the chaos store is not reachable{}: faults for other replicas are refused until it answers",
                self.view.lock().unwrap().error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            ))
        })?;
        fault.origin = self.name.clone();
        let key = fault.key();
        let intent = Intent {
            kind,
            owner: fault.owner.clone(),
            target: fault.describe(),
            lease: fault.lease_expires_at,
            undo: Undo::Fleet { key: key.clone() },
        };
        let f = fault.clone();
        let (id, ()) = ledger
            .apply(intent, async move {
                let body = serde_json::to_vec(&f).map_err(|e| FaultError::Backend(e.to_string()))?;
                store.put(&key, body, Write::IfAbsent).await.map_err(|e| FaultError::Backend(e.to_string()))?;
                Ok(Applied { value: (), undo: Undo::Fleet { key: key.clone() }, target: f.describe(), loadgen: None })
            })
            .await?;
        if let Some(local) = self.local.get() {
            self.reconcile_one(&fault, local).await;
        }
        Ok((id, fault))
    }

    /// Applies this replica's share of `fault`, once.
    async fn reconcile_one(&self, fault: &FleetFault, local: &Local) {
        if !fault.replicas.contains(&self.name) || fault.lease_expires_at <= chrono::Utc::now() {
            return;
        }
        {
            let mut view = self.view.lock().unwrap();
            if view.applied.contains_key(&fault.id) {
                return;
            }
            view.applied.insert(fault.id.clone(), None);
        }
        let owner = format!("fleet:{}", fault.id);
        let target = format!("{} (for {} on {})", fault.describe(), fault.owner, fault.origin);
        let intent = |kind| Intent {
            kind,
            owner: owner.clone(),
            target: target.clone(),
            lease: fault.lease_expires_at,
            undo: Undo::Nothing,
        };
        let faults = local.faults.clone();
        let result = match fault.kind.as_str() {
            "load" => {
                let (level, secs) = (fault.level.clone().unwrap_or_else(|| "low".into()), fault.seconds);
                local
                    .ledger
                    .apply(intent(FaultKind::Load), async move {
                        let s = faults.start_load(&level, secs)?;
                        Ok(Applied {
                            undo: Undo::Load { load_id: s.id },
                            target: format!("{level} load"),
                            value: (),
                            loadgen: None,
                        })
                    })
                    .await
                    .map(|(id, ())| Some(id))
            }
            "hang" => {
                let secs = fault.seconds;
                local
                    .ledger
                    .apply(intent(FaultKind::Hang), async move {
                        let t = faults.start_hang(secs, "app")?;
                        Ok(Applied {
                            undo: Undo::Hang { hang_id: t.id() },
                            target: "app hang".into(),
                            value: (),
                            loadgen: None,
                        })
                    })
                    .await
                    .map(|(id, ())| Some(id))
            }
            "redis_reset" => crate::faults::redis_reset(local.redis.as_ref(), true).await.map(|_| None),
            other => Err(FaultError::Invalid(format!("unknown fleet fault kind '{other}'"))),
        };
        match result {
            Ok(id) => {
                tracing::warn!(fault = %fault.id, kind = %fault.kind, origin = %fault.origin, "applied this replica's share of a fleet fault");
                self.view.lock().unwrap().applied.insert(fault.id.clone(), id);
            }
            Err(e) => {
                tracing::error!(fault = %fault.id, error = %e, "could not apply this replica's share of a fleet fault")
            }
        }
    }

    /// Every poll: apply new fleet faults for this replica, undo the ones withdrawn.
    pub(super) async fn reconcile(&self, listed: &[crate::chaos_store::Listed], local: &Local) {
        let Some(store) = self.store() else { return };
        let present: Vec<&crate::chaos_store::Listed> = listed.iter().filter(|l| l.key.starts_with(FAULTS)).collect();
        for l in &present {
            let id = l.key[FAULTS.len()..].trim_end_matches(".json").to_string();
            if self.view.lock().unwrap().applied.contains_key(&id) {
                continue;
            }
            let Ok(Some((bytes, _))) = store.get(&l.key).await else { continue };
            let Ok(fault) = serde_json::from_slice::<FleetFault>(&bytes) else { continue };
            if fault.replicas.contains(&self.name) {
                self.reconcile_one(&fault, local).await;
            } else {
                self.view.lock().unwrap().applied.insert(id, None);
            }
        }
        // Withdrawn (undone by its owner, or its origin's lease cleanup): undo our share.
        let gone: Vec<(String, Option<String>)> = {
            let mut view = self.view.lock().unwrap();
            let keep: Vec<String> =
                present.iter().map(|l| l.key[FAULTS.len()..].trim_end_matches(".json").to_string()).collect();
            let gone: Vec<String> = view.applied.keys().filter(|k| !keep.contains(k)).cloned().collect();
            gone.into_iter()
                .map(|k| {
                    let v = view.applied.remove(&k).flatten();
                    (k, v)
                })
                .collect()
        };
        for (fid, entry) in gone {
            if let Some(entry) = entry
                && let Some(o) = local.ledger.undo(&entry).await
            {
                tracing::warn!(fault = %fid, ok = o.ok, detail = %o.detail, "a fleet fault was withdrawn: undid this replica's share");
            }
        }
    }
}
