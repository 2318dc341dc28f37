//! The operator commands that replace the original lab's bash scripts and the `az` CLI:
//! `network inject|clear|list`, `deploy-fault`, `revisions` (see docs/azure.md). They read the
//! azd environment's names.

use anyhow::bail;
use serde_json::{Value, json};

use crate::azure::{AppRef, Arm, NsgRef};
use crate::faults::deploy::{ContainerApp, DeployBackend, DeployFault, DeployFaultKind};
use crate::faults::network::azure::{AzureNsg, DEFAULT_TTL};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NetworkAction {
    /// Add a deny rule for the Redis port (new connections to Redis time out), then ask the app
    /// to reset its Redis connections (POST /chaos/redis-reset at SERVICE_APP_URL), as the
    /// original inject script did. The rule expires after --duration (default 1 h); the service
    /// deletes expired rules within a minute.
    Inject {
        /// How long until the rule expires: seconds (300) or a duration with a unit (90s, 5m,
        /// 1h), whole seconds, 1 s to 24 h.
        #[arg(long, value_name = "DURATION", value_parser = rule_ttl)]
        duration: Option<u64>,
        /// Destination port to deny.
        #[arg(long, env = "AZURE_NSG_RULE_PORT", default_value = "10000", value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        #[command(flatten)]
        target: AzureTarget,
    },
    /// Delete every chaos- rule of the NSG (only those; other rules are never touched).
    Clear {
        #[command(flatten)]
        target: AzureTarget,
    },
    /// List the chaos- rules of the NSG with their expiry.
    List {
        #[command(flatten)]
        target: AzureTarget,
    },
}

/// Where the operator commands act: the azd environment's values, or flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AzureTarget {
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID", value_name = "ID")]
    subscription: Option<String>,
    #[arg(long, env = "AZURE_RESOURCE_GROUP", value_name = "NAME")]
    resource_group: Option<String>,
    #[arg(long, env = "AZURE_NSG_NAME", value_name = "NAME")]
    nsg: Option<String>,
    #[arg(long, env = "SERVICE_APP_NAME", value_name = "NAME")]
    app: Option<String>,
    /// Base URL of the deployed service (for POST /chaos/redis-reset).
    #[arg(long, env = "SERVICE_APP_URL", value_name = "URL")]
    url: Option<String>,
    /// Bearer token of the deployed service's /chaos/* endpoints.
    #[arg(long, env = "CHAOS_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Client id of a user-assigned managed identity (only where one exists).
    #[arg(long, env = "AZURE_CLIENT_ID", value_name = "ID")]
    client_id: Option<String>,
    /// ARM base URL (tests point it at a fake).
    #[arg(long, env = "AZURE_RESOURCE_MANAGER_ENDPOINT", default_value = "https://management.azure.com")]
    arm_endpoint: String,
}

impl AzureTarget {
    fn need(value: &Option<String>, var: &str, flag: &str) -> anyhow::Result<String> {
        match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => {
                bail!("{var} is not set: run `azd env get-values` (or `eval \"$(azd env get-values)\"`) or pass {flag}")
            }
        }
    }
    fn nsg(&self) -> anyhow::Result<NsgRef> {
        Ok(NsgRef {
            subscription: Self::need(&self.subscription, "AZURE_SUBSCRIPTION_ID", "--subscription")?,
            resource_group: Self::need(&self.resource_group, "AZURE_RESOURCE_GROUP", "--resource-group")?,
            nsg: Self::need(&self.nsg, "AZURE_NSG_NAME", "--nsg")?,
        })
    }
    fn app(&self) -> anyhow::Result<AppRef> {
        Ok(AppRef {
            subscription: Self::need(&self.subscription, "AZURE_SUBSCRIPTION_ID", "--subscription")?,
            resource_group: Self::need(&self.resource_group, "AZURE_RESOURCE_GROUP", "--resource-group")?,
            name: Self::need(&self.app, "SERVICE_APP_NAME", "--app")?,
        })
    }
    fn credential(&self) -> anyhow::Result<std::sync::Arc<dyn azure_core::credentials::TokenCredential>> {
        crate::azure::credential(self.client_id.as_deref()).map_err(anyhow::Error::msg)
    }
}

/// `network inject --duration`: a duration (`300`, `90s`, `5m`, `1h`) of 1 s to 24 h.
pub(super) fn rule_ttl(s: &str) -> Result<u64, String> {
    let secs = crate::config::duration::parse_whole_secs(s)?;
    if (1..=86_400).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("'{s}' is out of range: the rule must expire after 1 s to 24 h (86400 s)"))
    }
}

/// Prints an operator command's failure; exit code 1 (the settings were fine, Azure said no).
fn failed(e: impl std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    1
}

pub(super) async fn network(action: NetworkAction) -> anyhow::Result<i32> {
    let (target, port) = match &action {
        NetworkAction::Inject { target, port, .. } => (target, *port),
        NetworkAction::Clear { target } | NetworkAction::List { target } => (target, 10000),
    };
    let nsg = target.nsg()?;
    let name = nsg.nsg.clone();
    let backend = AzureNsg::new(nsg, port, &target.arm_endpoint, target.credential()?)?;
    match action {
        NetworkAction::Inject { duration, .. } => {
            let ttl = duration.map_or(DEFAULT_TTL, std::time::Duration::from_secs);
            let expires = chrono::Utc::now() + chrono::Duration::from_std(ttl)?;
            let rule = match backend.create_rule(port, expires, Some("cli"), None).await {
                Ok(r) => r,
                Err(e) => return Ok(failed(e)),
            };
            println!(
                "blocked TCP port {port} in NSG {name}: rule {} (priority {}), expires {}",
                rule.name,
                rule.priority,
                crate::format_timestamp(expires)
            );
            let Some(url) = target.url.as_deref().filter(|u| !u.trim().is_empty()) else {
                println!(
                    "SERVICE_APP_URL is not set: skipped POST /chaos/redis-reset, so the app's established \
                     connections keep working until they close"
                );
                return Ok(0);
            };
            let url = format!("{}/chaos/redis-reset", url.trim_end_matches('/'));
            let mut req = reqwest::Client::new().post(&url).json(&json!({"force": true}));
            if let Some(t) = &target.token {
                req = req.bearer_auth(t);
            }
            match req.timeout(std::time::Duration::from_secs(30)).send().await {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    println!("app reset its Redis connections: {} closed", v["connections_closed"]);
                    Ok(0)
                }
                Ok(r) => Ok(failed(format!(
                    "the rule is in place, but POST {url} answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ))),
                Err(e) => Ok(failed(format!("the rule is in place, but POST {url} failed: {e}"))),
            }
        }
        NetworkAction::Clear { .. } => {
            let rules = match backend.list().await {
                Ok(r) => r,
                Err(e) => return Ok(failed(e)),
            };
            let mut deleted = 0;
            for r in &rules {
                match backend.delete_rule(&r.name).await {
                    Ok(true) => {
                        deleted += 1;
                        println!("deleted {}", r.name);
                    }
                    Ok(false) => println!("{} was already gone", r.name),
                    Err(e) => return Ok(failed(e)),
                }
            }
            println!("{deleted} chaos rule(s) deleted from NSG {name}");
            Ok(0)
        }
        NetworkAction::List { .. } => {
            let rules = match backend.list().await {
                Ok(r) => r,
                Err(e) => return Ok(failed(e)),
            };
            if rules.is_empty() {
                println!("no chaos rules in NSG {name}");
            }
            let now = chrono::Utc::now();
            for r in rules {
                let expires = match r.expires_at {
                    Some(t) if t <= now => format!("{} (expired)", crate::format_timestamp(t)),
                    Some(t) => crate::format_timestamp(t),
                    None => "never (no chaos-lab description)".into(),
                };
                println!(
                    "{}  priority {}  port {}  run {}  expires {expires}",
                    r.name,
                    r.priority,
                    r.port,
                    r.run_id.as_deref().unwrap_or("-")
                );
            }
            Ok(0)
        }
    }
}

pub(super) async fn deploy_fault(kind: DeployFaultKind, target: AzureTarget) -> anyhow::Result<i32> {
    let app = target.app()?;
    let arm = Arm::new(&target.arm_endpoint, target.credential()?)?;
    match ContainerApp::new(app, arm).inject(kind).await {
        Ok(f) => {
            println!("created revision {} ({}) of {}", f.revision, kind.as_str(), f.app);
            match &f.previous {
                Some(p) => println!("to undo: chaos-lab revisions --activate {p} --deactivate {}", f.revision),
                None => println!("the app had no ready revision before; nothing to restore"),
            }
            Ok(0)
        }
        Err(e) => Ok(failed(e)),
    }
}

pub(super) async fn revisions(
    activate: Option<String>,
    deactivate: Option<String>,
    target: AzureTarget,
) -> anyhow::Result<i32> {
    let app = target.app()?;
    let arm = Arm::new(&target.arm_endpoint, target.credential()?)?;
    let ca = ContainerApp::new(app.clone(), arm);
    if let Some(previous) = activate {
        let fault = DeployFault {
            kind: DeployFaultKind::WrongImage,
            app: app.name.clone(),
            revision: deactivate.unwrap_or_default(),
            previous: Some(previous),
        };
        match ca.undo(&fault).await {
            Ok(detail) => println!("{detail}"),
            Err(e) => return Ok(failed(e)),
        }
    }
    match ca.revisions().await {
        Ok(list) => {
            for r in list {
                println!(
                    "{}  {}  traffic {}%  {}  {}  {}",
                    r.name,
                    if r.active { "active" } else { "inactive" },
                    r.traffic_weight,
                    r.health,
                    r.created,
                    r.image
                );
            }
            Ok(0)
        }
        Err(e) => Ok(failed(e)),
    }
}
