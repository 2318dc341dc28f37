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
//! One listing of `fleet/` per second and one heartbeat every two seconds: 1.5 storage operations
//! per replica per second at idle. Without `CHAOS_STORE_URL` there is no fleet: the replica is
//! alone and nothing here calls any store.
//!
//! While the store cannot be reached the replica keeps its own latch and says so in
//! `GET /chaos/status` (`fleet.error`); it never resumes because of an outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::chaos::Runs;
use crate::chaos_store::{ChaosStore, Etag, StoreError, Write};
use crate::faults::ledger::{Halt, Ledger};
use crate::faults::network::NetworkBackend;

/// How often this replica writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the fleet's state is read.
pub const POLL: Duration = Duration::from_secs(1);
/// A replica whose heartbeat has not changed for this long is not live.
pub const LIVE_FOR: Duration = Duration::from_secs(10);

const HALT_KEY: &str = "fleet/halt.json";
const REPLICAS: &str = "fleet/replicas/";

/// This replica's view of the fleet.
pub struct Fleet {
    /// This replica's name (`REPLICA_NAME`, Container Apps' replica name, or the host name).
    pub name: String,
    /// Whether a store is configured at all (`CHAOS_STORE_URL`).
    shared: bool,
    /// The store, once it could be opened (it may be unreachable at startup).
    store: std::sync::OnceLock<Arc<dyn ChaosStore>>,
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
}

/// What the fleet needs to run the kill switch on this replica.
pub struct Local {
    pub runs: Arc<Runs>,
    pub ledger: Arc<Ledger>,
    pub network: Arc<dyn NetworkBackend>,
}

impl Fleet {
    /// A replica alone (no `CHAOS_STORE_URL`).
    pub fn alone(name: String) -> Arc<Self> {
        Arc::new(Self { name, shared: false, store: std::sync::OnceLock::new(), view: Mutex::default() })
    }

    /// A replica of the fleet sharing the store `open` opens; until it opens (the store may be
    /// unreachable at startup) it is retried every few seconds while the service serves. Then
    /// the heartbeat and poll loop runs.
    pub fn join<F, Fut>(name: String, open: F, local: Local) -> Arc<Self>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn ChaosStore>, StoreError>> + Send,
    {
        let fleet = Arc::new(Self { name, shared: true, store: std::sync::OnceLock::new(), view: Mutex::default() });
        let me = Arc::downgrade(&fleet);
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
                if n.is_multiple_of(HEARTBEAT.as_secs().max(1)) {
                    fleet.beat(&local).await;
                }
                fleet.poll(&local).await;
                n += 1;
            }
        });
        fleet
    }

    fn store(&self) -> Option<&Arc<dyn ChaosStore>> {
        self.store.get()
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
    }

    /// Reads `fleet/`: heartbeats and the halt latch, and follows the latch.
    async fn poll(&self, local: &Local) {
        let Some(store) = self.store() else { return };
        let listed = match store.list("fleet/").await {
            Ok(l) => l,
            Err(e) => return self.failed(&e),
        };
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
    pub fn status(&self) -> Value {
        let view = self.view.lock().unwrap();
        let Some(store) = self.store() else {
            let me = json!([{"name": self.name, "self": true, "last_seen": crate::timestamp()}]);
            let store = if self.shared { json!("not open yet") } else { Value::Null };
            return json!({"store": store, "replica": self.name, "replicas": me, "error": view.error});
        };
        let mut replicas: Vec<Value> = view
            .seen
            .iter()
            .filter(|(_, (_, at, _))| at.elapsed() < LIVE_FOR)
            .map(|(name, (_, _, seen))| json!({"name": name, "self": *name == self.name, "last_seen": crate::format_timestamp(*seen)}))
            .collect();
        replicas.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        json!({"store": store.describe(), "replica": self.name, "replicas": replicas, "error": view.error})
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
