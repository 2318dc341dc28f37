//! Azure access shared by the service and the operator CLI: the one token credential, the one
//! Azure Resource Manager (ARM) client ([`Arm`]: bounded, jittered retries and our own
//! long-running-operation polling), the typed NSG security-rule calls on it ([`NsgRules`]), and
//! the Entra ID credentials provider for Redis.
//!
//! What to do with Azure (which NSG rules, which Container Apps revisions) lives in `faults/`;
//! this module only knows how to talk to Azure. Of its Azure SDK types only the credential
//! (`Arc<dyn TokenCredential>`) crosses its boundary (the Blob Storage SDK is `chaos_store`'s).

mod arm;
mod nsg;
mod redis_auth;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

pub use arm::{Arm, ArmError, ArmResponse};
pub use nsg::{NsgRules, SecurityRule};
pub use redis_auth::EntraRedisAuth;

/// Scope of every ARM token (also when ARM itself is a fake on loopback).
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Scope of the tokens Azure Managed Redis accepts as passwords.
pub const REDIS_SCOPE: &str = "https://redis.azure.com/.default";

pub use crate::config::{AppRef, NsgRef};

impl AppRef {
    /// ARM path of the app (no api-version).
    pub fn path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.App/containerApps/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// The credential for ARM and Redis alike.
///
/// - With `IDENTITY_ENDPOINT` set (Container Apps, App Service): the managed identity, through
///   that endpoint and `IDENTITY_HEADER`; `client_id` (AZURE_CLIENT_ID) picks a user-assigned one.
/// - Otherwise (an operator's laptop): the developer tools credential, i.e. the account of
///   `az login`, then of `azd auth login`. No secret is ever read from the environment.
pub fn credential(client_id: Option<&str>) -> Result<Arc<dyn TokenCredential>, String> {
    let managed = std::env::var_os("IDENTITY_ENDPOINT").is_some_and(|v| !v.is_empty());
    if managed {
        let options = azure_identity::ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(|id| azure_identity::UserAssignedId::ClientId(id.to_string())),
            ..Default::default()
        };
        let c = azure_identity::ManagedIdentityCredential::new(Some(options))
            .map_err(|e| format!("cannot set up the managed identity credential: {e}"))?;
        Ok(c)
    } else {
        let c = azure_identity::DeveloperToolsCredential::new(None)
            .map_err(|e| format!("cannot set up the Azure CLI / azd credential: {e}"))?;
        Ok(c)
    }
}
