//! Network faults: one interface, several backends. `local` is an embedded TCP fault proxy between
//! the service and Redis (the default when no Azure settings are given); `azure` writes deny
//! rules in an NSG; `recording` applies nothing and only remembers, for dry runs.
//!
//! A backend only applies and removes faults. Who undoes what, and when, is the fault ledger's
//! business (`faults::ledger`).

pub mod azure;
pub mod local;
mod recording;

use std::time::Duration;

use serde::Serialize;

pub use azure::AzureNsg;
pub use local::LocalProxy;
pub use recording::RecordingBackend;

use super::FaultError;

/// What a network fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkFaultKind {
    /// New connections are black-holed (they time out; nothing is refused).
    Block,
    /// Every reply is delayed.
    Latency,
}

/// One applied network fault, as `/chaos/status.network.faults` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NetworkFault {
    /// Backend-specific id, used to clear exactly this fault (`chaos-…` rule name on Azure).
    pub id: String,
    pub kind: NetworkFaultKind,
    /// What it applies to, for people: "redis 127.0.0.1:6379", "NSG x port 10000".
    pub target: String,
    pub started_at: String,
    /// When it clears by itself; `None` = only when cleared.
    pub expires_at: Option<String>,
    /// The run that applied it, if any.
    pub run_id: Option<String>,
    /// Block only: established connections were cut too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut_existing: Option<bool>,
    /// Latency only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

/// A request to block traffic.
#[derive(Debug, Clone, Default)]
pub struct BlockSpec {
    /// Destination port; `None` = the backend's default (the Redis port).
    pub port: Option<u16>,
    /// Clears by itself after this long; `None` = until cleared.
    pub duration: Option<Duration>,
    /// Also cut connections that are already established.
    pub cut_existing: bool,
    pub run_id: Option<String>,
    /// The fault's id, chosen before it is applied so an interrupted apply can still be undone
    /// by name (the NSG rule name); backends whose faults die with the process may ignore it.
    pub name: Option<String>,
}

/// A request to slow traffic down.
#[derive(Debug, Clone, Default)]
pub struct LatencySpec {
    pub latency: Duration,
    pub duration: Option<Duration>,
    pub run_id: Option<String>,
}

/// Where network faults are applied.
#[async_trait::async_trait]
pub trait NetworkBackend: Send + Sync {
    /// `local`, `azure` or `recording`, as `/chaos/status.network.backend` shows it.
    fn name(&self) -> &'static str;
    async fn block(&self, spec: BlockSpec) -> Result<NetworkFault, FaultError>;
    async fn latency(&self, spec: LatencySpec) -> Result<NetworkFault, FaultError>;
    /// Cuts every established connection (TCP reset); returns how many.
    async fn reset_peers(&self) -> Result<usize, FaultError>;
    /// Removes one fault; `Ok(false)` when it was already gone (expired or cleared).
    async fn clear(&self, id: &str) -> Result<bool, FaultError>;
    /// Removes every fault this backend applied; returns how many.
    async fn clear_all(&self) -> Result<usize, FaultError>;
    /// Faults in force now (no I/O: this feeds `/chaos/status`).
    fn faults(&self) -> Vec<NetworkFault>;
    /// The local proxy's state, for `/chaos/status`; `None` for backends without one.
    fn proxy(&self) -> Option<ProxyStatus> {
        None
    }
}

/// The local backend's proxy, as `/chaos/status.network.proxy` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ProxyStatus {
    /// Where the app's Redis client connects.
    pub listen: String,
    /// The Redis the proxy forwards to.
    pub upstream: String,
    /// Connections through the proxy now.
    pub connections: usize,
    /// Connections held open without forwarding (a block without a reset).
    pub blackholed: usize,
    /// Added latency in force, in milliseconds.
    pub latency_ms: u64,
}

/// `NETWORK_FAULT_BACKEND=none`: network faults are refused, and there is nothing to clear.
pub struct Disabled;

#[async_trait::async_trait]
impl NetworkBackend for Disabled {
    fn name(&self) -> &'static str {
        "none"
    }
    async fn block(&self, _: BlockSpec) -> Result<NetworkFault, FaultError> {
        Err(FaultError::Unavailable("network faults are off (NETWORK_FAULT_BACKEND=none)".into()))
    }
    async fn latency(&self, _: LatencySpec) -> Result<NetworkFault, FaultError> {
        Err(FaultError::Unavailable("network faults are off (NETWORK_FAULT_BACKEND=none)".into()))
    }
    async fn reset_peers(&self) -> Result<usize, FaultError> {
        Err(FaultError::Unavailable("network faults are off (NETWORK_FAULT_BACKEND=none)".into()))
    }
    async fn clear(&self, _: &str) -> Result<bool, FaultError> {
        Ok(false)
    }
    async fn clear_all(&self) -> Result<usize, FaultError> {
        Ok(0)
    }
    fn faults(&self) -> Vec<NetworkFault> {
        Vec::new()
    }
}
