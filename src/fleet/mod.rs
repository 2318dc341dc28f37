//! The fleet: the replicas of one service that share a chaos store (`CHAOS_STORE_URL`).
//!
//! What is shared so far:
//! - **Heartbeats**: each replica writes `fleet/replicas/<name>.json` every [`HEARTBEAT`]. A
//!   replica is live while its heartbeat's ETag keeps changing: liveness is judged by what this
//!   replica saw change and when, so clocks need not agree.
//! - **The halt latch**: `fleet/halt.json`. The kill switch on any replica writes it; every
//!   replica polls `fleet/` each [`POLL`] and, when it appears, runs the same kill switch locally
//!   ([`Local::halt`]: cancel every run, the ledger undoes every fault); when it is removed
//!   (`POST /chaos/resume` on any replica), every replica resumes.
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
//!
//! The fleet must not depend on `chaos`: what a halt does to runs comes in as a hook
//! ([`HaltHook`]), and faults go through the ledger like any other.
//!
//! Layout: here the replica's view and what it reads from it (liveness, selectors, status, the
//! halt latch's writes); `poll` the loop's heartbeats and polls (following the latch, the
//! fail-safe); `reconcile` fleet faults (publishing one, applying and undoing this replica's
//! share); `takeover` the runs and faults of replicas that stopped answering; `api` the types the
//! HTTP API and scripts use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::chaos_store::{ChaosStore, Etag, SharedStore, StoreError, Write};
use crate::faults::Faults;
use crate::faults::ledger::{Halt, Ledger};

mod api;
mod poll;
mod reconcile;
mod takeover;

pub use api::{FleetFault, FleetStatus, ReplicaSelector, ReplicaView, Selector};

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

/// What this replica does when the fleet is halted elsewhere: the kill switch, given who halted.
pub type HaltHook = Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Halted> + Send + Sync>;

/// What the halt hook stopped here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Halted {
    /// Runs cancelled.
    pub runs: usize,
    /// Faults the ledger undid (or tried to: failed undos are counted too).
    pub undone: usize,
}

/// What the fleet acts on, on this replica: the kill switch when the fleet is halted, the ledger
/// (mirrored for takeover, and the door for this replica's share of fleet faults), and what those
/// shares break.
pub struct Local {
    /// Runs the kill switch here (cancels the runs; the ledger undoes every fault).
    pub halt: HaltHook,
    pub ledger: Arc<Ledger>,
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
