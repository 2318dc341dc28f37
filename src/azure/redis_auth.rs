//! Microsoft Entra ID for Redis: username = the identity's object id, password = an access token
//! for `https://redis.azure.com/.default`, refreshed before it expires.
//!
//! One background task fetches tokens and publishes them on a watch channel; every Redis
//! connection subscribes (redis' `token-based-authentication`) and re-sends `AUTH` on each new
//! token, so live pooled connections never outlive their password. A failed fetch is retried
//! without end on the service's one jittered backoff ([`crate::backoff`]), 200 ms up to 30 s. We use
//! our own provider, not redis' `entra-id` feature, which would bring a second Azure SDK and OpenSSL.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use backon::Retryable;
use base64::Engine as _;
use futures::Stream;
use redis::{BasicAuth, RedisResult, StreamingCredentialsProvider};
use tokio::sync::watch;

use super::REDIS_SCOPE;

/// Refresh this long before expiry at most (real tokens live for hours)...
const REFRESH_MARGIN: Duration = Duration::from_secs(240);
/// ...and never more often than this (short-lived tokens in tests).
const MIN_REFRESH: Duration = Duration::from_millis(500);
/// Wait after a first failed fetch; doubles (jittered) for each further one...
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(200);
/// ...up to this.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Entra ID credentials for Redis connections; cheap to clone. The refresh task stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct EntraRedisAuth {
    rx: watch::Receiver<Option<BasicAuth>>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EntraRedisAuth {
    /// Starts fetching tokens (call inside the runtime). `username`: REDIS_USERNAME, else the
    /// token's `oid` claim.
    pub fn start(credential: Arc<dyn TokenCredential>, username: Option<String>) -> Self {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            let credential: &dyn TokenCredential = &*credential;
            loop {
                // Without end: Redis stops accepting the service once the last token expires.
                let fetched = (move || credential.get_token(&[REDIS_SCOPE], None))
                    .retry(crate::backoff::backoff(FIRST_RETRY_WAIT, MAX_RETRY_WAIT, usize::MAX))
                    .notify(|e: &azure_core::Error, wait: Duration| {
                        let retry_in_ms = wait.as_millis() as u64;
                        tracing::error!(error = %e, retry_in_ms, "cannot get a Redis access token");
                    })
                    .await;
                let t = match fetched {
                    Ok(t) => t,
                    Err(e) => {
                        // Only after usize::MAX retries; start a new schedule.
                        tracing::error!(error = %e, "cannot get a Redis access token");
                        continue;
                    }
                };
                let token = t.token.secret().to_string();
                let user = username.clone().or_else(|| oid_claim(&token)).unwrap_or_else(|| {
                    tracing::warn!("the Redis token has no oid claim; set REDIS_USERNAME to the identity's object id");
                    "default".into()
                });
                tracing::debug!(user = %user, expires_on = %t.expires_on, "new Redis access token");
                if tx.send(Some(BasicAuth::new(user, token))).is_err() {
                    return;
                }
                let left = (t.expires_on - azure_core::time::OffsetDateTime::now_utc()).unsigned_abs();
                // Halfway for short tokens, REFRESH_MARGIN before expiry for long ones.
                tokio::time::sleep(left.saturating_sub(REFRESH_MARGIN.min(left / 2)).max(MIN_REFRESH)).await;
            }
        });
        Self { rx, _task: Arc::new(AbortOnDrop(task)) }
    }
}

impl StreamingCredentialsProvider for EntraRedisAuth {
    fn subscribe(&self) -> Pin<Box<dyn Stream<Item = RedisResult<BasicAuth>> + Send + 'static>> {
        let mut rx = self.rx.clone();
        rx.mark_changed(); // the current token first, then every new one
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                let current = rx.borrow_and_update().clone();
                if let Some(auth) = current {
                    return Some((Ok(auth), rx));
                }
            }
        }))
    }
}

/// The `oid` claim of a JWT (no signature check: Redis checks the token, we only read a name).
fn oid_claim(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["oid"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oid_claim() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(r#"{"oid":"1234-abcd","aud":"x"}"#));
        assert_eq!(oid_claim(&token).as_deref(), Some("1234-abcd"));
        assert_eq!(oid_claim("not-a-jwt"), None);
    }
}
