//! A minimal ARM REST client on reqwest, the only way the service talks to ARM: bearer token from
//! the shared credential, bounded retries of 429/5xx and transport errors on the service's one
//! jittered backoff ([`crate::backoff`]) or after ARM's Retry-After, readable errors (a 403 names
//! what the identity may not touch), and long-running-operation polling on our own cadence
//! (Retry-After, else 2 s) instead of an SDK's 30 s default.

use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use backon::Retryable;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::ARM_SCOPE;

/// Extra attempts after a 429, a 5xx or a transport error.
const MAX_RETRIES: usize = 4;
/// Wait before the first retry without Retry-After; doubles for each further retry (jittered).
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(500);
/// Longest wait between two attempts, whatever Retry-After says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// Poll interval of a long-running operation without Retry-After.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long a long-running operation may take before we give up on it.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);
/// One HTTP request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an ARM call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArmError {
    #[error("the identity lacks permission on {what} (ARM answered 403 {code}: {message})")]
    Forbidden { what: String, code: String, message: String },
    #[error("ARM answered {status} to {method} {path} ({code}: {message})")]
    Status { status: u16, method: String, path: String, code: String, message: String },
    #[error("cannot get an access token for ARM: {0}")]
    Credential(String),
    #[error("cannot reach ARM: {0}")]
    Transport(String),
    #[error("the ARM operation on {what} {outcome}")]
    Operation { what: String, outcome: String },
}

impl ArmError {
    /// The HTTP status ARM answered, for errors that have one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Forbidden { .. } => Some(403),
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// ARM's error code (`SecurityRuleConflict`, `NotFound`, …), for errors that have one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Forbidden { code, .. } | Self::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// A 403 or any other status, from ARM's error body (`{"error":{"code","message"}}`).
    pub fn from_status(status: u16, method: &str, path: &str, body: &Value, what: &str) -> Self {
        let e = body.get("error").unwrap_or(body);
        let code = e["code"].as_str().unwrap_or("no error code").to_string();
        let message = e["message"].as_str().unwrap_or("no message").to_string();
        if status == 403 {
            Self::Forbidden { what: what.to_string(), code, message }
        } else {
            let path = path.split('?').next().unwrap_or(path).to_string();
            Self::Status { status, method: method.to_string(), path, code, message }
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// `Null` for an empty body.
    pub body: Value,
}

/// ARM at one base URL with one credential; cheap to clone.
#[derive(Clone)]
pub struct Arm {
    http: reqwest::Client,
    endpoint: String,
    credential: Arc<dyn TokenCredential>,
}

impl Arm {
    /// `endpoint`: https://management.azure.com, or a fake on loopback in tests.
    pub fn new(endpoint: &str, credential: Arc<dyn TokenCredential>) -> Result<Self, ArmError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ArmError::Transport(e.to_string()))?;
        Ok(Self { http, endpoint: endpoint.trim_end_matches('/').to_string(), credential })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A bearer token for ARM (the credential caches it).
    pub async fn token(&self) -> Result<String, ArmError> {
        let t = self.credential.get_token(&[ARM_SCOPE], None).await.map_err(|e| ArmError::Credential(e.to_string()))?;
        Ok(t.token.secret().to_string())
    }

    /// Sends one request, retrying 429/5xx and transport errors (bounded). `path_or_url` is a
    /// path under the endpoint (with its query) or an absolute URL ARM gave us (operation status).
    /// `what` names the resource for a 403 ("NSG x", "container app y").
    ///
    /// A retry waits what ARM's Retry-After says, else the jittered backoff from 0.5 s, doubling;
    /// never more than 30 s.
    pub async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<ArmResponse, ArmError> {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.endpoint)
        };
        let (method, url) = (&method, url.as_str());
        let mut retry = 0u32;
        (move || self.send_once(method, url, path_or_url, body, what))
            .retry(crate::backoff::backoff(FIRST_RETRY_WAIT, MAX_RETRY_WAIT, MAX_RETRIES))
            .when(|f: &Failed| f.retryable)
            // ARM's own wait, when it gives one, replaces the backoff; `None` (no retry left) stays.
            .adjust(|f: &Failed, wait: Option<Duration>| {
                wait.map(|w| f.retry_after.map_or(w, |after| after.min(MAX_RETRY_WAIT)))
            })
            .notify(|f: &Failed, wait: Duration| {
                retry += 1;
                let wait_ms = wait.as_millis() as u64;
                tracing::warn!(attempt = retry, wait_ms, error = %f.error, "retrying ARM request");
            })
            .await
            .map_err(|f| f.error)
    }

    /// One attempt of [`Arm::send`].
    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        path_or_url: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<ArmResponse, Failed> {
        let token = self.token().await.map_err(Failed::fatal)?;
        let mut req = self.http.request(method.clone(), url).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                let error = ArmError::Transport(format!("{} {url}: {e}", method.as_str()));
                return Err(Failed { error, retryable: true, retry_after: None });
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| Failed::fatal(ArmError::Transport(e.to_string())))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(ArmResponse { status, headers, body });
        }
        Err(Failed {
            error: ArmError::from_status(status, method.as_str(), path_or_url, &body, what),
            retryable: status == 429 || (500..600).contains(&status),
            retry_after: retry_after(&headers),
        })
    }

    /// Waits for the long-running operation a PUT/PATCH/DELETE/POST answer started, if any: polls
    /// `Azure-AsyncOperation` (until its status is terminal) or else `Location` (until it stops
    /// answering 202), every Retry-After seconds or 2 s.
    pub async fn wait(&self, first: &ArmResponse, what: &str) -> Result<(), ArmError> {
        let async_op = header(&first.headers, "azure-asyncoperation");
        let location = header(&first.headers, "location");
        if !matches!(first.status, 201 | 202) || (async_op.is_none() && location.is_none()) {
            return Ok(()); // done already, or nothing to poll (a 201 alone means the resource is there)
        }
        let deadline = Instant::now() + OPERATION_TIMEOUT;
        let mut wait = retry_after(&first.headers).unwrap_or(POLL_INTERVAL);
        loop {
            if Instant::now() + wait > deadline {
                let outcome = format!("did not finish within {} s", OPERATION_TIMEOUT.as_secs());
                return Err(ArmError::Operation { what: what.to_string(), outcome });
            }
            tokio::time::sleep(wait).await;
            let next = if let Some(url) = &async_op {
                let r = self.send(Method::GET, url, None, what).await?;
                match r.body["status"].as_str().unwrap_or("InProgress") {
                    "Succeeded" => return Ok(()),
                    s @ ("Failed" | "Canceled") => {
                        let detail = r.body["error"]["message"].as_str().unwrap_or("no detail");
                        let outcome = format!("ended {s}: {detail}");
                        return Err(ArmError::Operation { what: what.to_string(), outcome });
                    }
                    _ => r,
                }
            } else {
                let url = location.as_deref().unwrap_or_default();
                let r = self.send(Method::GET, url, None, what).await?;
                if r.status != 202 {
                    return Ok(());
                }
                r
            };
            wait = retry_after(&next.headers).unwrap_or(POLL_INTERVAL);
        }
    }
}

/// A failed attempt, and whether (and when) another one may follow.
struct Failed {
    error: ArmError,
    /// A 429, a 5xx or a transport error; not a credential error, nor an answer ARM meant.
    retryable: bool,
    retry_after: Option<Duration>,
}

impl Failed {
    fn fatal(error: ArmError) -> Self {
        Self { error, retryable: false, retry_after: None }
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string).filter(|s| !s.is_empty())
}

/// Retry-After in seconds (ARM does not send HTTP dates).
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    header(h, "retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}
