//! Deployment faults: a broken Container Apps revision of this very app, the way the original
//! lab's bash scripts made one.
//!
//! - `wrong-image`: the app's template with the image `nginx:alpine` (it does not answer /health).
//! - `bad-env`: the app's template with `REDIS_HOST=` (empty) and `REDIS_PORT=invalid`.
//!
//! Injecting GETs the app, copies its template with the change and a new `revisionSuffix`, and
//! PATCHes it (a long-running operation we poll). The undo re-activates the revision that was
//! serving before, routes all traffic back to it and deactivates the broken one. Traffic by
//! revision name needs the app in `Multiple` revision mode (see docs/azure.md).
//!
//! Container Apps are reached with plain REST ([`Arm`]); no SDK is needed for four calls.

use std::sync::Mutex;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::FaultError;
use crate::azure::{AppRef, Arm, ArmError};

/// api-version of every Microsoft.App call.
pub const APP_API_VERSION: &str = "2024-03-01";
/// The image a `wrong-image` revision runs.
pub const WRONG_IMAGE: &str = "nginx:alpine";

/// Which broken revision to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeployFaultKind {
    /// Runs nginx:alpine instead of the service.
    WrongImage,
    /// Sets REDIS_HOST= (empty) and REDIS_PORT=invalid.
    BadEnv,
}

impl DeployFaultKind {
    pub fn parse(s: &str) -> Result<Self, FaultError> {
        match s {
            "wrong-image" => Ok(Self::WrongImage),
            "bad-env" => Ok(Self::BadEnv),
            _ => Err(FaultError::Invalid(format!("unknown deploy fault '{s}'; use \"wrong-image\" or \"bad-env\""))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongImage => "wrong-image",
            Self::BadEnv => "bad-env",
        }
    }
}

/// A broken revision that was created, and what to restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployFault {
    pub kind: DeployFaultKind,
    pub app: String,
    /// The broken revision.
    pub revision: String,
    /// The revision that served before, which the undo brings back.
    pub previous: Option<String>,
}

/// One revision, as `chaos-lab revisions` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revision {
    pub name: String,
    pub active: bool,
    pub traffic_weight: i64,
    pub created: String,
    pub health: String,
    pub image: String,
}

/// A broken revision about to be made: its name and the revision to go back to are known before
/// anything changes, so the fault ledger can record the undo first (write-ahead).
#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub fault: DeployFault,
    /// The PATCH body that creates the revision.
    body: Value,
}

/// Where deployment faults are applied: Container Apps, or nowhere (dry runs).
#[async_trait::async_trait]
pub trait DeployBackend: Send + Sync {
    /// Reads the app and plans the broken revision; changes nothing.
    async fn prepare(&self, kind: DeployFaultKind) -> Result<DeployPlan, FaultError>;
    /// Creates the planned revision.
    async fn apply(&self, plan: &DeployPlan) -> Result<(), FaultError>;
    /// Plans and creates a broken revision (the operator CLI; the ledger calls the two halves).
    async fn inject(&self, kind: DeployFaultKind) -> Result<DeployFault, FaultError> {
        let plan = self.prepare(kind).await?;
        self.apply(&plan).await?;
        Ok(plan.fault)
    }
    /// Brings back `fault.previous`; returns what was done, for the run's undo list.
    async fn undo(&self, fault: &DeployFault) -> Result<String, FaultError>;
    async fn revisions(&self) -> Result<Vec<Revision>, FaultError>;
}

/// This container app, through ARM.
pub struct ContainerApp {
    app: AppRef,
    arm: Arm,
}

impl ContainerApp {
    pub fn new(app: AppRef, arm: Arm) -> Self {
        Self { app, arm }
    }

    fn what(&self) -> String {
        format!("container app {}", self.app.name)
    }

    fn url(&self, sub: &str) -> String {
        format!("{}{sub}?api-version={APP_API_VERSION}", self.app.path())
    }

    async fn call(&self, method: Method, sub: &str, body: Option<&Value>) -> Result<Value, FaultError> {
        self.call_arm(method, sub, body).await.map_err(backend)
    }

    async fn call_arm(&self, method: Method, sub: &str, body: Option<&Value>) -> Result<Value, ArmError> {
        let what = self.what();
        let r = self.arm.send(method, &self.url(sub), body, &what).await?;
        self.arm.wait(&r, &what).await?;
        Ok(r.body)
    }
}

fn backend(e: crate::azure::ArmError) -> FaultError {
    FaultError::Backend(e.to_string())
}

#[async_trait::async_trait]
impl DeployBackend for ContainerApp {
    async fn prepare(&self, kind: DeployFaultKind) -> Result<DeployPlan, FaultError> {
        let app = self.call(Method::GET, "", None).await?;
        let props = &app["properties"];
        let previous =
            props["latestReadyRevisionName"].as_str().or(props["latestRevisionName"].as_str()).map(str::to_string);
        let mut template = props["template"].clone();
        if template["containers"].as_array().is_none_or(|c| c.is_empty()) {
            return Err(FaultError::Backend(format!("{} has no containers in its template", self.what())));
        }
        let suffix = format!("chaos-{}-{}", kind.as_str(), &uuid::Uuid::new_v4().simple().to_string()[..6]);
        template["revisionSuffix"] = json!(suffix);
        for c in template["containers"].as_array_mut().into_iter().flatten() {
            match kind {
                DeployFaultKind::WrongImage => c["image"] = json!(WRONG_IMAGE),
                DeployFaultKind::BadEnv => {
                    let mut env: Vec<Value> = c["env"].as_array().cloned().unwrap_or_default();
                    env.retain(|e| !matches!(e["name"].as_str(), Some("REDIS_HOST" | "REDIS_PORT")));
                    env.push(json!({"name": "REDIS_HOST", "value": ""}));
                    env.push(json!({"name": "REDIS_PORT", "value": "invalid"}));
                    c["env"] = Value::Array(env);
                }
            }
        }
        let fault = DeployFault {
            kind,
            app: self.app.name.clone(),
            revision: format!("{}--{suffix}", self.app.name),
            previous,
        };
        Ok(DeployPlan { fault, body: json!({"properties": {"template": template}}) })
    }

    async fn apply(&self, plan: &DeployPlan) -> Result<(), FaultError> {
        self.call(Method::PATCH, "", Some(&plan.body)).await.map(|_| ())
    }

    async fn undo(&self, fault: &DeployFault) -> Result<String, FaultError> {
        let Some(previous) = &fault.previous else {
            return Err(FaultError::Backend(format!(
                "{} had no ready revision before {}; nothing to go back to",
                self.what(),
                fault.revision
            )));
        };
        self.call(Method::POST, &format!("/revisions/{previous}/activate"), None).await?;
        let traffic = json!({"properties": {"configuration": {"ingress": {"traffic": [
            {"revisionName": previous, "weight": 100}
        ]}}}});
        self.call(Method::PATCH, "", Some(&traffic)).await?;
        if fault.revision.is_empty() {
            return Ok(format!("{previous} active with 100% traffic"));
        }
        // An apply cut short may never have created the broken revision.
        match self.call_arm(Method::POST, &format!("/revisions/{}/deactivate", fault.revision), None).await {
            Ok(_) => Ok(format!("{previous} active with 100% traffic, {} deactivated", fault.revision)),
            Err(e) if e.status() == Some(404) => {
                Ok(format!("{previous} active with 100% traffic; {} was never created", fault.revision))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn revisions(&self) -> Result<Vec<Revision>, FaultError> {
        let body = self.call(Method::GET, "/revisions", None).await?;
        let list = body["value"].as_array().cloned().unwrap_or_default();
        Ok(list
            .iter()
            .map(|r| {
                let p = &r["properties"];
                Revision {
                    name: r["name"].as_str().unwrap_or_default().to_string(),
                    active: p["active"].as_bool().unwrap_or(false),
                    traffic_weight: p["trafficWeight"].as_i64().unwrap_or(0),
                    created: p["createdTime"].as_str().unwrap_or_default().to_string(),
                    health: p["healthState"].as_str().unwrap_or_default().to_string(),
                    image: p["template"]["containers"][0]["image"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect())
    }
}

/// Dry runs: remembers what would have been deployed, calls nothing.
#[derive(Default)]
pub struct RecordingDeploy {
    made: Mutex<u64>,
}

#[async_trait::async_trait]
impl DeployBackend for RecordingDeploy {
    async fn prepare(&self, kind: DeployFaultKind) -> Result<DeployPlan, FaultError> {
        let mut n = self.made.lock().unwrap();
        *n += 1;
        let fault = DeployFault {
            kind,
            app: "nothing (dry run)".into(),
            revision: format!("dry-run-{}", *n),
            previous: Some("dry-run-previous".into()),
        };
        Ok(DeployPlan { fault, body: Value::Null })
    }
    async fn apply(&self, _: &DeployPlan) -> Result<(), FaultError> {
        Ok(())
    }
    async fn undo(&self, fault: &DeployFault) -> Result<String, FaultError> {
        Ok(format!("would re-activate the revision before {} (dry run)", fault.revision))
    }
    async fn revisions(&self) -> Result<Vec<Revision>, FaultError> {
        Ok(Vec::new())
    }
}
