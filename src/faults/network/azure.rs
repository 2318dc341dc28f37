//! The `azure` network backend: a network fault is an inbound Deny rule in the NSG of the Redis
//! private-endpoint subnet, written with the managed identity through [`NsgRules`] (ARM's REST API
//! on the service's one ARM client, [`crate::azure::Arm`]). This module holds the fault logic only:
//! names, priorities, expiry, the sweeper, what `/chaos/status` shows.
//!
//! - Rules are named `chaos-…`, take priority 100 or the next free one (a collision with a rule
//!   written meanwhile is retried on the next priority), and carry their run id and expiry in the
//!   description: `chaos-lab run=<id> expires=<RFC 3339>`.
//! - Every rule expires: a block without a duration gets [`DEFAULT_TTL`]. A sweeper deletes
//!   expired `chaos-` rules at startup and every [`SWEEP_INTERVAL`], so a crash or `kill -9`
//!   cannot leave Redis blocked; rules without a parseable expiry, and every other rule, are left
//!   alone.
//! - Each request is retried on 429/5xx and transport errors (bounded, jittered, or after
//!   Retry-After) and each write or delete returns once ARM has applied it; both are the ARM
//!   client's business, not this module's.
//!
//! Latency and connection resets cannot be expressed with an NSG and are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{BlockSpec, LatencySpec, NetworkBackend, NetworkFault, NetworkFaultKind};
use crate::azure::{Arm, ArmError, NsgRef, NsgRules};
use crate::faults::FaultError;

/// Prefix of every rule chaos-lab writes; the sweeper and `clear` touch no other rule.
pub const RULE_PREFIX: &str = "chaos-";
/// Expiry of a block that has no duration (a run's timeout is 15 min by default; an operator's
/// manual block is cleared by hand long before this).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// How often expired rules are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Priority of the first chaos rule (lower numbers win in an NSG; 100 is the lowest allowed).
pub const FIRST_PRIORITY: i32 = 100;
/// Priorities tried after a collision before giving up.
const PRIORITY_ATTEMPTS: usize = 5;

/// One chaos rule as found in the NSG.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosRule {
    pub name: String,
    pub priority: i32,
    pub port: String,
    pub run_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: String,
}

/// The backend; cheap to clone.
#[derive(Clone)]
pub struct AzureNsg {
    inner: Arc<Inner>,
}

struct Inner {
    /// The NSG's rules, through the one ARM client.
    rules: NsgRules,
    /// AZURE_NSG_RULE_PORT: what a block without a port denies (Redis' port).
    default_port: u16,
    /// Rules this process wrote and has not removed yet (what `/chaos/status` shows).
    faults: Mutex<Vec<NetworkFault>>,
}

impl AzureNsg {
    /// `endpoint`: AZURE_RESOURCE_MANAGER_ENDPOINT. Sends nothing yet.
    pub fn new(
        nsg: NsgRef,
        default_port: u16,
        endpoint: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, FaultError> {
        reqwest::Url::parse(endpoint).map_err(|e| FaultError::Invalid(format!("bad ARM endpoint {endpoint}: {e}")))?;
        let arm = Arm::new(endpoint, credential).map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner { rules: NsgRules::new(arm, nsg), default_port, faults: Mutex::new(Vec::new()) }),
        })
    }

    fn nsg(&self) -> &NsgRef {
        self.inner.rules.nsg()
    }

    /// Every rule of the NSG whose name starts with `chaos-`.
    pub async fn list(&self) -> Result<Vec<ChaosRule>, FaultError> {
        Ok(self.list_all().await?.into_iter().filter(|r| r.name.starts_with(RULE_PREFIX)).collect())
    }

    /// Every rule of the NSG (priorities of the others matter when choosing ours).
    async fn list_all(&self) -> Result<Vec<ChaosRule>, FaultError> {
        let rules = self.inner.rules.list().await.map_err(backend)?;
        let inbound = rules.into_iter().filter(|r| r.is_inbound()).map(|r| {
            let (run_id, expires_at) = parse_description(&r.description);
            ChaosRule {
                name: r.name,
                priority: r.priority,
                port: r.destination_port_range,
                run_id,
                expires_at,
                description: r.description,
            }
        });
        Ok(inbound.collect())
    }

    /// Writes one deny rule; returns it. Used by `block` and by the operator CLI.
    pub async fn create_rule(
        &self,
        port: u16,
        expires_at: DateTime<Utc>,
        run_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<ChaosRule, FaultError> {
        let name = name.map_or_else(new_rule_name, str::to_string);
        if !name.starts_with(RULE_PREFIX) {
            return Err(FaultError::Invalid(format!("rule name '{name}' must start with {RULE_PREFIX}")));
        }
        let description = format!(
            "chaos-lab run={} expires={}",
            run_id.unwrap_or("-"),
            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let taken: Vec<i32> = self.list_all().await?.iter().map(|r| r.priority).collect();
        let mut priority = next_free(&taken, FIRST_PRIORITY);
        for attempt in 1..=PRIORITY_ATTEMPTS {
            match self.inner.rules.put_inbound_deny(&name, priority, port, &description).await {
                Ok(()) => {
                    return Ok(ChaosRule {
                        name,
                        priority,
                        port: port.to_string(),
                        run_id: run_id.map(str::to_string),
                        expires_at: Some(expires_at),
                        description,
                    });
                }
                Err(e) if is_priority_conflict(&e) && attempt < PRIORITY_ATTEMPTS => {
                    tracing::warn!(priority, rule = %name, "NSG priority taken meanwhile; trying the next one");
                    priority = next_free(&taken, priority + 1);
                }
                Err(e) => return Err(backend(e)),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Deletes one rule and waits until it is gone; `Ok(false)` when it was not there.
    pub async fn delete_rule(&self, name: &str) -> Result<bool, FaultError> {
        if !name.starts_with(RULE_PREFIX) {
            return Err(FaultError::Invalid(format!(
                "'{name}' is not a chaos-lab rule (they start with {RULE_PREFIX})"
            )));
        }
        let found = self.inner.rules.delete(name).await.map_err(backend)?;
        self.inner.faults.lock().unwrap().retain(|f| f.id != name);
        Ok(found)
    }

    /// Deletes every `chaos-` rule whose expiry has passed; returns their names.
    pub async fn sweep_expired(&self) -> Result<Vec<String>, FaultError> {
        let now = Utc::now();
        let mut deleted = Vec::new();
        for rule in self.list().await? {
            if rule.expires_at.is_some_and(|t| t <= now) {
                self.delete_rule(&rule.name).await?;
                tracing::info!(rule = %rule.name, description = %rule.description, "deleted an expired NSG chaos rule");
                deleted.push(rule.name);
            }
        }
        Ok(deleted)
    }

    /// Sweeps now and then every `every`, for as long as the process runs.
    pub fn start_sweeper(&self, every: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = me.sweep_expired().await {
                    tracing::error!(error = %e, nsg = %me.nsg().nsg, "could not sweep expired NSG chaos rules");
                }
            }
        });
    }

    fn fault(&self, rule: &ChaosRule) -> NetworkFault {
        NetworkFault {
            id: rule.name.clone(),
            kind: NetworkFaultKind::Block,
            target: format!("NSG {} port {}", self.nsg().nsg, rule.port),
            started_at: crate::timestamp(),
            expires_at: rule.expires_at.map(crate::format_timestamp),
            run_id: rule.run_id.clone(),
            cut_existing: Some(false),
            latency_ms: None,
        }
    }
}

#[async_trait::async_trait]
impl NetworkBackend for AzureNsg {
    fn name(&self) -> &'static str {
        "azure"
    }

    async fn block(&self, spec: BlockSpec) -> Result<NetworkFault, FaultError> {
        if spec.cut_existing {
            return Err(FaultError::Unsupported(
                "cut_existing is not supported by the azure backend (an NSG rule only stops new \
                 connections): call redis_reset() after network_block()"
                    .into(),
            ));
        }
        let ttl = spec.duration.unwrap_or(DEFAULT_TTL);
        let expires_at = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
        let port = spec.port.unwrap_or(self.inner.default_port);
        let rule = self.create_rule(port, expires_at, spec.run_id.as_deref(), spec.name.as_deref()).await?;
        let fault = self.fault(&rule);
        self.inner.faults.lock().unwrap().push(fault.clone());
        if let Some(d) = spec.duration {
            // Cleared on time by this process; the sweeper is the backstop if it dies first.
            let me = self.clone();
            let name = rule.name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                if let Err(e) = me.delete_rule(&name).await {
                    tracing::error!(error = %e, rule = %name, "could not delete an NSG chaos rule at its expiry");
                }
            });
        }
        Ok(fault)
    }

    async fn latency(&self, _: LatencySpec) -> Result<NetworkFault, FaultError> {
        Err(FaultError::Unsupported(
            "network_latency is not supported by the azure backend (an NSG can only allow or deny)".into(),
        ))
    }

    async fn reset_peers(&self) -> Result<usize, FaultError> {
        Err(FaultError::Unsupported(
            "network_reset_peers is not supported by the azure backend (an NSG cannot reset connections); \
             use redis_reset()"
                .into(),
        ))
    }

    async fn clear(&self, id: &str) -> Result<bool, FaultError> {
        self.delete_rule(id).await
    }

    /// Every `chaos-` rule in the NSG, whoever wrote it (this process, a crashed one, the operator
    /// CLI): what the kill switch removes after the ledger's own undo.
    async fn clear_all(&self) -> Result<usize, FaultError> {
        let mut n = 0;
        for rule in self.list().await? {
            if self.delete_rule(&rule.name).await? {
                tracing::warn!(rule = %rule.name, description = %rule.description, "deleted a chaos rule the ledger did not hold");
                n += 1;
            }
        }
        self.inner.faults.lock().unwrap().clear();
        Ok(n)
    }

    fn faults(&self) -> Vec<NetworkFault> {
        self.inner.faults.lock().unwrap().clone()
    }
}

/// A fresh `chaos-block-<hex>` rule name.
pub fn new_rule_name() -> String {
    format!("{RULE_PREFIX}block-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The lowest priority from `from` up that no rule uses.
fn next_free(taken: &[i32], from: i32) -> i32 {
    (from..=4096).find(|p| !taken.contains(p)).unwrap_or(4096)
}

/// ARM refuses a second rule with the same priority and direction: 400 `SecurityRuleConflict`
/// (or a 409 while another write to the NSG is in progress).
fn is_priority_conflict(e: &ArmError) -> bool {
    e.status() == Some(409) || (e.status() == Some(400) && e.code().is_some_and(|c| c.contains("Conflict")))
}

/// An ARM error as a fault error; its text names the NSG, the status, ARM's code and message (a
/// 403: what the identity may not touch).
fn backend(e: ArmError) -> FaultError {
    FaultError::Backend(e.to_string())
}

/// `chaos-lab run=<id> expires=<RFC 3339>` → run id and expiry.
fn parse_description(d: &str) -> (Option<String>, Option<DateTime<Utc>>) {
    if !d.starts_with("chaos-lab ") {
        return (None, None);
    }
    let field = |k: &str| d.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
    let run = field("run=").filter(|r| r != "-");
    let expires = field("expires=").and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
    (run, expires)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_round_trip_and_foreign_ones_are_ignored() {
        let (run, at) = parse_description("chaos-lab run=abc expires=2026-01-02T03:04:05Z");
        assert_eq!(run.as_deref(), Some("abc"));
        assert_eq!(at.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(parse_description("chaos-lab run=- expires=bogus"), (None, None));
        assert_eq!(parse_description("allow the bastion"), (None, None));
    }

    #[test]
    fn priorities_skip_the_taken_ones() {
        assert_eq!(next_free(&[], 100), 100);
        assert_eq!(next_free(&[100, 101, 103], 100), 102);
        assert_eq!(next_free(&[100, 101, 103], 103), 104);
    }
}
