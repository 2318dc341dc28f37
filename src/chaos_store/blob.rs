//! The chaos store in an Azure Blob Storage container, shared by every replica.
//!
//! One blob per key. Versions are the blobs' ETags, passed back exactly (quotes included);
//! `IfMatch` and `IfAbsent` are the service's `If-Match` / `If-None-Match: *`. Every call is
//! bounded: the SDK's default policy retries for up to a minute and its transport waits 60 s for
//! an answer, which would stall a kill switch; here a call retries twice within [`CALL_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, Etag as SdkEtag, RequestContent, StatusCode, Transport, Url};
use azure_core::http::{ExponentialRetryOptions, RetryOptions};
use azure_storage_blob::models::{
    BlobClientDeleteOptions, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use futures::TryStreamExt as _;

use super::{ChaosStore, Etag, Listed, StoreError, Write, check_key};

/// The longest one store call may take, retries included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct AzureBlob {
    client: BlobContainerClient,
    calls: std::sync::atomic::AtomicU64,
    /// The container URL without its query (a SAS is a secret).
    shown: String,
}

/// The container at `url` (created when missing). With a SAS in the URL it is used as is;
/// otherwise `credential` signs in (the managed identity; the container needs the app identity's
/// **Storage Blob Data Contributor** role).
pub async fn azure_blob(
    url: &str,
    credential: Option<Arc<dyn TokenCredential>>,
) -> Result<Arc<dyn ChaosStore>, StoreError> {
    let parsed = Url::parse(url.trim().trim_end_matches('/'))
        .map_err(|e| StoreError::Invalid(format!("CHAOS_STORE_URL is not a URL ({e}): give a container URL such as https://<account>.blob.core.windows.net/chaos")))?;
    let sas = parsed.query().is_some_and(|q| q.contains("sig="));
    let mut shown = parsed.clone();
    shown.set_query(None);
    let shown = shown.to_string();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(4))
        .build()
        .map_err(|e| StoreError::Invalid(format!("cannot build the HTTP client: {e}")))?;
    let retry = ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(100),
        max_retries: 2,
        max_total_elapsed: azure_core::time::Duration::seconds(4),
        max_delay: azure_core::time::Duration::seconds(1),
    };
    let options = BlobContainerClientOptions {
        client_options: ClientOptions {
            retry: RetryOptions::exponential(retry),
            transport: Some(Transport::new(Arc::new(http))),
            ..Default::default()
        },
        ..Default::default()
    };
    let credential = if sas { None } else { credential };
    let client = BlobContainerClient::new(parsed, credential, Some(options))
        .map_err(|e| StoreError::Invalid(format!("CHAOS_STORE_URL {shown}: {e}")))?;
    let store = AzureBlob { client, shown, calls: Default::default() };
    store.ensure_container().await?;
    Ok(Arc::new(store))
}

impl AzureBlob {
    async fn ensure_container(&self) -> Result<(), StoreError> {
        let exists = bounded(self.client.exists()).await.map_err(|e| self.error("check the container", e))?;
        if !exists {
            match bounded(self.client.create(None)).await {
                Ok(_) => tracing::info!(container = %self.shown, "created the chaos store container"),
                Err(e) if e.http_status() == Some(StatusCode::Conflict) => {} // created meanwhile
                Err(e) => return Err(self.error("create the container", e)),
            }
        }
        Ok(())
    }

    /// A store error that says what failed and what to do.
    fn error(&self, what: &str, e: azure_core::Error) -> StoreError {
        let code = match e.kind() {
            ErrorKind::HttpResponse { error_code, .. } => error_code.clone().unwrap_or_default(),
            _ => String::new(),
        };
        match e.http_status() {
            Some(StatusCode::Forbidden) if code == "AuthorizationPermissionMismatch" => StoreError::Forbidden(format!(
                "cannot {what} in {}: the identity lacks the 'Storage Blob Data Contributor' role on the storage account",
                self.shown
            )),
            Some(StatusCode::Forbidden) => StoreError::Forbidden(format!(
                "cannot {what} in {}: storage refused the credentials ({code}); check the SAS in CHAOS_STORE_URL or the identity's 'Storage Blob Data Contributor' role",
                self.shown
            )),
            Some(StatusCode::PreconditionFailed | StatusCode::Conflict) => StoreError::Conflict(format!(
                "cannot {what} in {}: {}",
                self.shown,
                if code.is_empty() { "it changed" } else { &code }
            )),
            Some(s) if u16::from(s) < 500 => StoreError::Invalid(format!(
                "cannot {what} in {}: storage answered {} {code}",
                self.shown,
                u16::from(s)
            )),
            _ => StoreError::Unavailable(format!("cannot {what} in {}: {e}", self.shown)),
        }
    }
}

/// `fut`, given up after [`CALL_TIMEOUT`].
async fn bounded<T>(fut: impl std::future::Future<Output = azure_core::Result<T>>) -> azure_core::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(azure_core::Error::with_message(
            ErrorKind::Io,
            format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
        )),
    }
}

/// ETags as the headers carry them, quoted (listings carry them bare).
fn etag(e: Option<SdkEtag>) -> Etag {
    let t = e.map(|e| e.to_string()).unwrap_or_default();
    Etag(if t.starts_with('"') { t } else { format!("\"{t}\"") })
}

#[async_trait::async_trait]
impl ChaosStore for AzureBlob {
    fn describe(&self) -> String {
        format!("azure blob {}", self.shown)
    }

    fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Etag)>, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check_key(key)?;
        let blob = self.client.blob_client(key);
        let read = bounded(async {
            let r = blob.download(None).await?;
            let tag = r.properties.etag.clone();
            let bytes = r.body.collect().await?;
            Ok((bytes.to_vec(), etag(tag)))
        })
        .await;
        match read {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(None),
            Err(e) => Err(self.error(&format!("read {key}"), e)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, write: Write) -> Result<Etag, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check_key(key)?;
        let mut options = BlobClientUploadOptions::default();
        match &write {
            Write::Overwrite => {}
            Write::IfMatch(Etag(t)) => options.if_match = Some(SdkEtag::from(t.as_str())),
            Write::IfAbsent => options.if_none_match = Some(SdkEtag::from("*")),
        }
        let blob = self.client.blob_client(key);
        match bounded(blob.upload(RequestContent::from(bytes), Some(options))).await {
            Ok(r) => Ok(etag(r.etag)),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) && matches!(write, Write::IfMatch(_)) => {
                Err(StoreError::Conflict(format!("{key} no longer exists")))
            }
            Err(e) => Err(self.error(&format!("write {key}"), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let options = BlobContainerClientListBlobsOptions { prefix: Some(prefix.to_string()), ..Default::default() };
        let listed = bounded(async {
            let mut pager = self.client.list_blobs(Some(options))?;
            let mut out = Vec::new();
            while let Some(item) = pager.try_next().await? {
                let Some(key) = item.name.clone() else { continue };
                out.push(Listed { key, etag: etag(item.properties.and_then(|p| p.etag)) });
            }
            Ok(out)
        })
        .await
        .map_err(|e| self.error(&format!("list {prefix}*"), e))?;
        let mut listed = listed;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check_key(key)?;
        let blob = self.client.blob_client(key);
        match bounded(blob.delete(Some(BlobClientDeleteOptions::default()))).await {
            Ok(_) => Ok(true),
            Err(e) if e.http_status() == Some(StatusCode::NotFound) => Ok(false),
            Err(e) => Err(self.error(&format!("delete {key}"), e)),
        }
    }
}
