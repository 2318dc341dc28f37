//! The fleet: the replicas of one service that share a chaos store (`CHAOS_STORE_URL`).
//!
//! What is shared so far:
//! - **Heartbeats**: each replica writes `fleet/replicas/<name>.json` every [`HEARTBEAT`]. A
//!   replica is live while its heartbeat's ETag keeps changing: liveness is judged by what this
//!   replica saw change and when, so clocks need not agree.
//! - **The halt latch**: `fleet/halt.json`. The kill switch on any replica writes it; every
//!   replica polls `fleet/` each [`POLL`] and, when it appears, runs the same kill switch locally
//!   (cancel every run, the ledger undoes every fault); when it is removed (`POST /chaos/resume` on
//!   any replica), every replica resumes.
//!
//! - **Fleet faults**: a load, hang or Redis reset for other replicas (`replicas` selector) is
//!   `fleet/faults/<id>.json`. Every replica reconciles at each poll: it applies its share
//!   through its own ledger (same lease) and undoes it when the blob is withdrawn. The origin's
//!   ledger entry withdraws the blob, so the origin's undo, kill switch or crash recovery
//!   reaches every target within a poll, and each target's lease is the backstop.
//!
//! One listing of `fleet/` per second and one heartbeat every two seconds: 1.5 storage operations
//! per replica per second at idle. Without `CHAOS_STORE_URL` there is no fleet: the replica is
//! alone and nothing here calls any store.
//!
//! While the store cannot be reached the replica keeps its own latch and says so in
//! `GET /chaos/status` (`fleet.error`); it never resumes because of an outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::chaos::Runs;
use crate::chaos_store::{ChaosStore, Etag, SharedStore, StoreError, Write};
use crate::faults::ledger::{Applied, FaultKind, Halt, Intent, Ledger, Undo};
use crate::faults::network::NetworkBackend;
use crate::faults::{FaultError, Faults};

/// How often this replica writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the fleet's state is read.
pub const POLL: Duration = Duration::from_secs(1);
/// A replica whose heartbeat has not changed for this long is not live.
pub const LIVE_FOR: Duration = Duration::from_secs(10);
/// A replica that cannot read the store this long undoes its shares of fleet faults: their
/// owners could not withdraw them, so it fails safe rather than keep them until their leases.
pub const FAIL_SAFE_AFTER: Duration = Duration::from_secs(10);
/// How often another replica's heartbeat is read for its fault count (status only; kept rare so
/// a fleet of three stays under two storage calls per replica per second).
const COUNTS_EVERY: Duration = Duration::from_secs(10);

const HALT_KEY: &str = "fleet/halt.json";
const REPLICAS: &str = "fleet/replicas/";
const FAULTS: &str = "fleet/faults/";
/// `fleet/ledgers/<name>.json`: a replica's fault ledger, mirrored when it changes (for takeover).
const LEDGERS: &str = "fleet/ledgers/";
/// `fleet/runs/<id>.json`: a run in progress and the replica that owns it (for takeover).
pub const RUNS: &str = "fleet/runs/";

/// This replica's view of the fleet.
pub struct Fleet {
    /// This replica's name (`REPLICA_NAME`, Container Apps' replica name, or the host name).
    pub name: String,
    /// Whether a store is configured at all (`CHAOS_STORE_URL`).
    shared: bool,
    /// The store, once it could be opened (it may be unreachable at startup); the ledger holds
    /// the same handle, to withdraw fleet faults.
    store: SharedStore,
    /// What the poll loop acts on; set when the loop starts.
    local: std::sync::OnceLock<Local>,
    view: Mutex<View>,
}

#[derive(Default)]
struct View {
    /// Per replica: the heartbeat version last seen, and when it was first seen.
    seen: HashMap<String, (Etag, Instant, chrono::DateTime<chrono::Utc>)>,
    /// The version of the shared halt latch last acted on (`None`: there was none).
    halt: Option<Etag>,
    /// The last store error, if the last poll failed.
    error: Option<String>,
    /// Fleet faults seen, by id, with this replica's ledger entry for its share (`None`: not
    /// for this replica, or nothing to undo).
    applied: HashMap<String, Option<String>>,
    /// When this replica first read the fleet (liveness means nothing before LIVE_FOR has passed).
    since: Option<Instant>,
    /// Other replicas' fault counts from their heartbeats, read at most every [`COUNTS_EVERY`].
    counts: HashMap<String, (u64, Instant)>,
    /// Run markers read, by key, with the version read (re-read only when it changes).
    markers: HashMap<String, (Etag, Value)>,
    /// Since when the store has not answered (for the fail-safe).
    unreachable_since: Option<Instant>,
    /// The ledger version last mirrored to the store.
    mirrored: Option<u64>,
}

/// What the fleet needs to run the kill switch on this replica.
pub struct Local {
    pub runs: Arc<Runs>,
    pub ledger: Arc<Ledger>,
    pub network: Arc<dyn NetworkBackend>,
    pub faults: Arc<Faults>,
    pub redis: Option<crate::store::Store>,
}

impl Fleet {
    /// This replica: alone unless `shared` (a store is configured); `store` is filled once the
    /// store opens (see [`Fleet::start`]).
    pub fn new(name: String, shared: bool, store: SharedStore) -> Arc<Self> {
        Arc::new(Self { name, shared, store, local: std::sync::OnceLock::new(), view: Mutex::default() })
    }

    /// Opens the store with `open`, retried every few seconds while the service serves (it may
    /// be unreachable at startup), then runs the heartbeat and poll loop. Nothing without a store.
    pub fn start<F, Fut>(self: &Arc<Self>, open: F, local: Local)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn ChaosStore>, StoreError>> + Send,
    {
        if !self.shared || self.local.set(local).is_err() {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let store = open().await;
                let Some(fleet) = me.upgrade() else { return };
                match store {
                    Ok(s) => {
                        tracing::info!(store = %s.describe(), replica = %fleet.name, "joined the fleet");
                        let _ = fleet.store.set(s);
                        fleet.view.lock().unwrap().error = None;
                        break;
                    }
                    Err(e) => fleet.failed(&e),
                }
                drop(fleet);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(fleet) = me.upgrade() else { return };
                let Some(local) = fleet.local.get() else { return };
                if n.is_multiple_of(HEARTBEAT.as_secs().max(1)) {
                    fleet.beat(local).await;
                }
                fleet.poll(local).await;
                n += 1;
            }
        });
    }

    fn store(&self) -> Option<&Arc<dyn ChaosStore>> {
        self.store.get()
    }

    /// With a fleet, runs and fleet faults need the store: `Err` (saying why) while it cannot be
    /// reached, so nothing starts that other replicas could not see or undo.
    pub fn check_reachable(&self) -> Result<(), String> {
        if !self.shared {
            return Ok(());
        }
        let view = self.view.lock().unwrap();
        match (self.store.get(), &view.error) {
            (Some(_), None) => Ok(()),
            (_, Some(e)) => Err(format!(
                "the chaos store is unreachable ({e}): runs and fleet faults wait until it answers (CHAOS_STORE_URL)"
            )),
            (None, None) => Err("the chaos store is not open yet: retry in a few seconds".into()),
        }
    }

    /// The fleet's store, once open (`None` for a lone replica).
    pub fn shared_store(&self) -> Option<Arc<dyn ChaosStore>> {
        self.store.get().cloned()
    }

    /// Takes over the runs of replicas that stopped beating: marks each `interrupted` and
    /// withdraws its fleet faults (its in-process faults died with it; its leases are the
    /// backstop for the rest). One replica wins each takeover (a conditional write).
    async fn take_over(&self, listed: &[crate::chaos_store::Listed]) {
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
            let cached = self.view.lock().unwrap().markers.get(&l.key).filter(|(e, _)| *e == l.etag).cloned();
            let (etag, mirror) = match cached {
                Some(c) => c,
                None => {
                    let Ok(Some((bytes, etag))) = store.get(&l.key).await else { continue };
                    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else { continue };
                    self.view.lock().unwrap().markers.insert(l.key.clone(), (etag.clone(), v.clone()));
                    (etag, v)
                }
            };
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
            let cached = self.view.lock().unwrap().markers.get(&l.key).filter(|(e, _)| *e == l.etag).cloned();
            let (etag, mut marker) = match cached {
                Some(c) => c,
                None => {
                    let Ok(Some((bytes, etag))) = store.get(&l.key).await else { continue };
                    let Ok(marker) = serde_json::from_slice::<Value>(&bytes) else { continue };
                    self.view.lock().unwrap().markers.insert(l.key.clone(), (etag.clone(), marker.clone()));
                    (etag, marker)
                }
            };
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

    /// Names of the live replicas, sorted (this one alone without a store).
    pub fn live(&self) -> Vec<String> {
        if self.store().is_none() {
            return vec![self.name.clone()];
        }
        let view = self.view.lock().unwrap();
        let mut names: Vec<String> =
            view.seen.iter().filter(|(_, (_, at, _))| at.elapsed() < LIVE_FOR).map(|(n, _)| n.clone()).collect();
        if !names.contains(&self.name) {
            names.push(self.name.clone());
        }
        names.sort();
        names
    }

    /// The replicas `selector` picks among the live ones, now.
    pub fn resolve(&self, selector: &Selector) -> Result<Vec<String>, String> {
        let live = self.live();
        let pick = |n: usize| -> Result<Vec<String>, String> {
            if n > live.len() {
                return Err(format!("asked for {n} replicas, but {} are live: {}", live.len(), live.join(", ")));
            }
            let mut all = live.clone();
            fastrand::shuffle(&mut all);
            let mut chosen: Vec<String> = all.into_iter().take(n).collect();
            chosen.sort();
            Ok(chosen)
        };
        match selector {
            Selector::SelfOnly => Ok(vec![self.name.clone()]),
            Selector::All => Ok(live.clone()),
            Selector::Count(n) => pick(*n),
            Selector::Percent(p) => pick((live.len() * *p as usize).div_ceil(100).max(1)),
            Selector::Names(names) => {
                let missing: Vec<&String> = names.iter().filter(|n| !live.contains(n)).collect();
                if !missing.is_empty() {
                    let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                    return Err(format!("no live replica named {}; live: {}", missing.join(", "), live.join(", ")));
                }
                let mut n = names.clone();
                n.sort();
                n.dedup();
                Ok(n)
            }
        }
    }

    /// Whether `replicas` is just this replica (then the fault is applied here, as always).
    pub fn is_only_me(&self, replicas: &[String]) -> bool {
        replicas.len() == 1 && replicas[0] == self.name
    }

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
    async fn reconcile(&self, listed: &[crate::chaos_store::Listed], local: &Local) {
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

    async fn beat(&self, local: &Local) {
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
    async fn poll(&self, local: &Local) {
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
                let report = crate::chaos::kill_switch(
                    &local.runs,
                    &local.ledger,
                    local.network.as_ref(),
                    &format!("{by} (fleet)"),
                )
                .await;
                tracing::warn!(
                    runs = report.runs.len(),
                    undone = report.outcomes.len(),
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

    fn failed(&self, e: &StoreError) {
        let mut view = self.view.lock().unwrap();
        if view.error.is_none() {
            tracing::error!(error = %e, "the chaos store is unreachable: fleet state is stale until it answers");
        }
        view.error = Some(e.to_string());
    }

    /// The kill switch ran on this replica: halt the fleet.
    pub async fn publish_halt(&self, halt: &Halt) -> Result<(), StoreError> {
        let Some(store) = self.store() else { return Ok(()) };
        let body = serde_json::to_vec(halt).unwrap_or_default();
        let etag = store.put(HALT_KEY, body, Write::Overwrite).await?;
        self.view.lock().unwrap().halt = Some(etag);
        Ok(())
    }

    /// `POST /chaos/resume` on this replica: resume the fleet.
    pub async fn publish_resume(&self) -> Result<(), StoreError> {
        let Some(store) = self.store() else { return Ok(()) };
        store.delete(HALT_KEY).await?;
        self.view.lock().unwrap().halt = None;
        Ok(())
    }

    /// `GET /chaos/status` → `fleet`.
    pub fn status(&self) -> FleetStatus {
        let view = self.view.lock().unwrap();
        let Some(store) = self.store() else {
            let me =
                ReplicaView { name: self.name.clone(), is_self: true, last_seen: crate::timestamp(), faults: None };
            return FleetStatus {
                store: self.shared.then(|| "not open yet".to_string()),
                replica: self.name.clone(),
                replicas: vec![me],
                error: view.error.clone(),
                store_calls: None,
            };
        };
        // This replica's own fault count, and the others' from their last heartbeat read.
        let mine = self.local.get().map(|l| l.ledger.list().len() as u64);
        let mut replicas: Vec<ReplicaView> = view
            .seen
            .iter()
            .filter(|(_, (_, at, _))| at.elapsed() < LIVE_FOR)
            .map(|(name, (_, _, seen))| {
                let me = *name == self.name;
                let faults = if me { mine } else { view.counts.get(name).map(|(n, _)| *n) };
                ReplicaView { name: name.clone(), is_self: me, last_seen: crate::format_timestamp(*seen), faults }
            })
            .collect();
        replicas.sort_by(|a, b| a.name.cmp(&b.name));
        FleetStatus {
            store: Some(store.describe()),
            replica: self.name.clone(),
            replicas,
            error: view.error.clone(),
            store_calls: Some(store.calls()),
        }
    }
}

/// The fleet as `GET /chaos/status` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FleetStatus {
    /// The chaos store (`CHAOS_STORE_URL` without its query); null for a replica alone.
    pub store: Option<String>,
    /// This replica's name.
    pub replica: String,
    /// Live replicas (a heartbeat within the last ~10 s), by name.
    pub replicas: Vec<ReplicaView>,
    /// The last store error, if the store is failing.
    pub error: Option<String>,
    /// Calls made to the store so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_calls: Option<u64>,
}

/// One live replica.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplicaView {
    pub name: String,
    /// The replica answering.
    #[serde(rename = "self")]
    pub is_self: bool,
    pub last_seen: String,
    /// Faults its ledger held at its last heartbeat (unknown until one was read).
    pub faults: Option<u64>,
}

/// The JSON forms of a `replicas` field, for the API description ([`Selector::parse`] reads
/// them): `"self"` (or absent, or null), `"all"`, a count, a share or a list of names.
pub struct ReplicaSelector;

impl utoipa::PartialSchema for ReplicaSelector {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let string = || ObjectBuilder::new().schema_type(Type::String);
        OneOfBuilder::new()
            .item(
                string().enum_values(Some(["self", "all"])).description(Some("This replica alone, or every live one.")),
            )
            .item(string().pattern(Some("^(100|[1-9][0-9]?)%$")).description(Some("A share of the live replicas.")))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .description(Some("A number of replicas.")),
            )
            .item(ArrayBuilder::new().items(string()).min_items(Some(1)).description(Some("Replica names.")))
            .item(ObjectBuilder::new().schema_type(Type::Null).description(Some("This replica alone.")))
            .description(Some(
                "Which replicas: \"self\" (the default), \"all\", a count such as 2, a share such as \"50%\", or a \
                 list of replica names; resolved against live heartbeats when applied.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ReplicaSelector {}

/// An in-process fault meant for other replicas: `fleet/faults/<id>.json`. Each target applies
/// its share through its own ledger (owner `fleet:<id>`, the same lease) and undoes it when the
/// blob is gone or the lease ends. The origin's ledger entry (`Undo::Fleet`) deletes the blob.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetFault {
    pub id: String,
    /// `load`, `hang` or `redis_reset`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default)]
    pub seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub replicas: Vec<String>,
    /// Who applied it (`run:<id>` or `endpoint`) and on which replica.
    pub owner: String,
    pub origin: String,
    pub lease_expires_at: chrono::DateTime<chrono::Utc>,
}

impl FleetFault {
    /// A new fault for `replicas`; owner, origin and lease are filled in where it is applied.
    pub fn new(kind: &str, level: Option<String>, seconds: i64, scope: Option<String>, replicas: Vec<String>) -> Self {
        Self {
            id: format!("ff-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            kind: kind.into(),
            level,
            seconds,
            scope,
            replicas,
            owner: String::new(),
            origin: String::new(),
            lease_expires_at: chrono::Utc::now(),
        }
    }

    pub fn key(&self) -> String {
        format!("{FAULTS}{}.json", self.id)
    }

    /// For people: `low load on r2, r3`.
    pub fn describe(&self) -> String {
        let what = match self.kind.as_str() {
            "load" => format!("{} load", self.level.as_deref().unwrap_or("?")),
            "hang" => format!("{} hang", self.scope.as_deref().unwrap_or("app")),
            other => other.replace('_', " "),
        };
        format!("{what} on {}", self.replicas.join(", "))
    }
}

/// Which replicas an in-process fault (load, hang, Redis reset) is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// This replica only (the default; what a lone replica always does).
    SelfOnly,
    /// Every live replica.
    All,
    /// This many live replicas, picked at random.
    Count(usize),
    /// This share of the live replicas (rounded up), picked at random.
    Percent(u32),
    /// These replicas, by name.
    Names(Vec<String>),
}

impl Selector {
    /// From the `replicas` field of a request body or script map: `"self"`, `"all"`, a count
    /// (`2`), a share (`"50%"`) or a list of names.
    pub fn parse(v: &Value) -> Result<Self, String> {
        const HOW: &str = "replicas must be \"self\", \"all\", a count such as 2, a share such as \"50%\", or a list of replica names";
        match v {
            Value::Null => Ok(Self::SelfOnly),
            Value::String(s) if s == "self" => Ok(Self::SelfOnly),
            Value::String(s) if s == "all" => Ok(Self::All),
            Value::String(s) if s.ends_with('%') => match s.trim_end_matches('%').trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Self::Percent(p)),
                _ => Err(format!("{HOW}; a share is 1% to 100%, got '{s}'")),
            },
            Value::Number(n) => match n.as_u64() {
                Some(c) if c >= 1 => Ok(Self::Count(c as usize)),
                _ => Err(format!("{HOW}; a count is 1 or more, got {n}")),
            },
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(|| format!("{HOW}; got a list with {x}")))
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Names),
            other => Err(format!("{HOW}; got {other}")),
        }
    }
}

/// This replica's name: `REPLICA_NAME`, else Container Apps' `CONTAINER_APP_REPLICA_NAME`, else
/// the host name.
pub fn replica_name(configured: Option<&str>) -> String {
    configured
        .map(str::to_string)
        .or_else(|| std::env::var("CONTAINER_APP_REPLICA_NAME").ok())
        .filter(|n| !n.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect()
}
