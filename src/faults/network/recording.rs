//! A backend that applies nothing: dry runs use it to show what a script would do.

use std::sync::Mutex;

use super::{BlockSpec, LatencySpec, NetworkBackend, NetworkFault, NetworkFaultKind};
use crate::faults::FaultError;

#[derive(Default)]
pub struct RecordingBackend {
    faults: Mutex<Vec<NetworkFault>>,
    next: Mutex<u64>,
}

impl RecordingBackend {
    fn record(
        &self,
        kind: NetworkFaultKind,
        run_id: Option<String>,
        cut: Option<bool>,
        ms: Option<u64>,
    ) -> NetworkFault {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let fault = NetworkFault {
            id: format!("dry-run-{}", *next),
            kind,
            target: "nothing (dry run)".into(),
            started_at: crate::timestamp(),
            expires_at: None,
            run_id,
            cut_existing: cut,
            latency_ms: ms,
        };
        self.faults.lock().unwrap().push(fault.clone());
        fault
    }
}

#[async_trait::async_trait]
impl NetworkBackend for RecordingBackend {
    fn name(&self) -> &'static str {
        "recording"
    }
    async fn block(&self, spec: BlockSpec) -> Result<NetworkFault, FaultError> {
        Ok(self.record(NetworkFaultKind::Block, spec.run_id, Some(spec.cut_existing), None))
    }
    async fn latency(&self, spec: LatencySpec) -> Result<NetworkFault, FaultError> {
        Ok(self.record(NetworkFaultKind::Latency, spec.run_id, None, Some(spec.latency.as_millis() as u64)))
    }
    async fn reset_peers(&self) -> Result<usize, FaultError> {
        Ok(0)
    }
    async fn clear(&self, id: &str) -> Result<bool, FaultError> {
        let mut f = self.faults.lock().unwrap();
        let before = f.len();
        f.retain(|x| x.id != id);
        Ok(f.len() < before)
    }
    async fn clear_all(&self) -> Result<usize, FaultError> {
        Ok(std::mem::take(&mut *self.faults.lock().unwrap()).len())
    }
    fn faults(&self) -> Vec<NetworkFault> {
        self.faults.lock().unwrap().clone()
    }
}
