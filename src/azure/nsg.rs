//! The security rules of one network security group, over ARM's REST API (api-version
//! [`NSG_API_VERSION`]) with the one [`Arm`] client: list them (following `nextLink`), write an
//! inbound TCP deny rule, delete one. A write or a delete returns once ARM has applied it (its
//! long-running operation polled by [`Arm::wait`]).
//!
//! Typed, so that `faults::network::azure` speaks rules and priorities rather than URLs and JSON.
//! Which rule to write or delete, and when, is the fault's business, not this module's.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Arm, ArmError, NsgRef};

/// The api-version of every NSG request (the one `azure_mgmt_network` 0.21 used: the requests
/// are the same as when the SDK sent them).
pub const NSG_API_VERSION: &str = "2024-03-01";

/// One security rule, as far as chaos-lab reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityRule {
    pub name: String,
    pub priority: i32,
    /// `Inbound` or `Outbound`: priorities are unique per direction.
    pub direction: String,
    /// A port, a range (`100-200`) or `*`.
    pub destination_port_range: String,
    /// Empty when the rule has none.
    pub description: String,
}

impl SecurityRule {
    pub fn is_inbound(&self) -> bool {
        self.direction.eq_ignore_ascii_case("Inbound")
    }
}

/// The rules of one NSG; cheap to clone.
#[derive(Clone)]
pub struct NsgRules {
    arm: Arm,
    nsg: NsgRef,
}

impl NsgRules {
    pub fn new(arm: Arm, nsg: NsgRef) -> Self {
        Self { arm, nsg }
    }

    pub fn nsg(&self) -> &NsgRef {
        &self.nsg
    }

    /// What a 403 names.
    fn what(&self) -> String {
        format!("NSG {}", self.nsg.nsg)
    }

    /// ARM path of the NSG's rules (no api-version).
    fn rules_path(&self) -> String {
        let n = &self.nsg;
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkSecurityGroups/{}/securityRules",
            n.subscription, n.resource_group, n.nsg
        )
    }

    fn rule_path(&self, name: &str) -> String {
        format!("{}/{name}?api-version={NSG_API_VERSION}", self.rules_path())
    }

    /// Every rule of the NSG, both directions, all pages.
    pub async fn list(&self) -> Result<Vec<SecurityRule>, ArmError> {
        let what = self.what();
        let mut next = Some(format!("{}?api-version={NSG_API_VERSION}", self.rules_path()));
        let mut rules = Vec::new();
        while let Some(url) = next.take() {
            let page = self.arm.send(Method::GET, &url, None, &what).await?.body;
            rules.extend(page["value"].as_array().into_iter().flatten().filter_map(parse_rule));
            // An absolute URL; `Arm::send` takes it as it is.
            next = page["nextLink"].as_str().filter(|l| !l.is_empty()).map(str::to_string);
        }
        Ok(rules)
    }

    /// Creates (or replaces) rule `name`: inbound, TCP, deny, from any address and port to `port`
    /// on any address, at `priority`. Returns once ARM has applied it. ARM refuses a priority
    /// another rule of the same direction holds: 400 `SecurityRuleConflict` (or 409 while another
    /// write to the NSG is in progress), which is not retried here.
    pub async fn put_inbound_deny(
        &self,
        name: &str,
        priority: i32,
        port: u16,
        description: &str,
    ) -> Result<(), ArmError> {
        let body = json!({"properties": {
            "description": description,
            "protocol": "Tcp",
            "sourcePortRange": "*",
            "destinationPortRange": port.to_string(),
            "sourceAddressPrefix": "*",
            "destinationAddressPrefix": "*",
            "access": "Deny",
            "priority": priority,
            "direction": "Inbound"
        }});
        let what = self.what();
        let first = self.arm.send(Method::PUT, &self.rule_path(name), Some(&body), &what).await?;
        self.arm.wait(&first, &what).await
    }

    /// Deletes rule `name` and returns once it is gone; `Ok(false)` when there was no such rule.
    pub async fn delete(&self, name: &str) -> Result<bool, ArmError> {
        let what = self.what();
        let first = match self.arm.send(Method::DELETE, &self.rule_path(name), None, &what).await {
            Ok(first) => first,
            Err(e) if e.status() == Some(404) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.arm.wait(&first, &what).await?;
        Ok(first.status != 204) // 204: nothing to delete
    }
}

/// A rule of a listing; `None` for one without properties or priority (ARM always sends them).
fn parse_rule(rule: &Value) -> Option<SecurityRule> {
    let p = rule.get("properties")?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Some(SecurityRule {
        name: text(&rule["name"]),
        priority: p["priority"].as_i64().and_then(|n| i32::try_from(n).ok())?,
        direction: text(&p["direction"]),
        destination_port_range: text(&p["destinationPortRange"]),
        description: text(&p["description"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_rule_is_read_and_one_without_properties_skipped() {
        let rule = json!({"name": "chaos-block-1", "properties": {"priority": 101, "direction": "Inbound",
            "destinationPortRange": "10000", "description": "chaos-lab run=r1 expires=2999-01-01T00:00:00Z"}});
        let read = parse_rule(&rule).unwrap();
        assert_eq!((read.name.as_str(), read.priority), ("chaos-block-1", 101));
        assert_eq!(read.destination_port_range, "10000");
        assert!(read.is_inbound());
        assert_eq!(read.description, "chaos-lab run=r1 expires=2999-01-01T00:00:00Z");
        assert_eq!(parse_rule(&json!({"name": "x"})), None);
        let bare = parse_rule(&json!({"name": "y", "properties": {"priority": 300, "direction": "Outbound"}})).unwrap();
        assert!(!bare.is_inbound() && bare.description.is_empty());
    }
}
