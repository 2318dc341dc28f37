//! The chaos store: what must outlive a process or be shared by replicas (run journals, the fault
//! ledger, the halt latch, replica heartbeats), behind one seam with two implementations:
//!
//! - [`local`]: a directory (`RUNS_DIR`), the default; one process, as before.
//! - [`azure_blob`]: an Azure Blob Storage container (`CHAOS_STORE_URL`), shared by every
//!   replica, through the official `azure_storage_blob` crate and the service's credential (or a
//!   SAS in the URL, which is how tests reach the Azurite emulator).
//!
//! The seam is a small key-value interface with the one primitive replicas need to agree:
//! conditional writes on an ETag ([`Write::IfMatch`], [`Write::IfAbsent`]). Every call is bounded
//! in time: a store that does not answer is [`StoreError::Unavailable`] within seconds, never a
//! request that hangs a run or the kill switch. Nothing else in the crate talks to Blob Storage.

mod blob;
mod local;

use std::sync::Arc;

pub use blob::azure_blob;
pub use local::local;

/// A version of a stored value; changes with every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etag(pub String);

/// How a write may replace what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Whatever is there.
    Overwrite,
    /// Only the version read before (optimistic concurrency).
    IfMatch(Etag),
    /// Only when nothing is stored under the key yet.
    IfAbsent,
}

/// The store as replicas share it: filled once it opens (it may be unreachable at startup).
pub type SharedStore = Arc<std::sync::OnceLock<Arc<dyn ChaosStore>>>;

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub etag: Etag,
}

/// Why a store call failed. Messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the key exists ([`Write::IfAbsent`]) or changed ([`Write::IfMatch`]).
    #[error("{0}")]
    Conflict(String),
    /// The store refused the credentials (names the missing role, or the bad SAS).
    #[error("{0}")]
    Forbidden(String),
    /// The store cannot be reached or answers with a server error.
    #[error("{0}")]
    Unavailable(String),
    /// A bad URL or key.
    #[error("{0}")]
    Invalid(String),
}

/// Where shared state lives.
#[async_trait::async_trait]
pub trait ChaosStore: Send + Sync {
    /// For people: `local directory runs`, `azure blob https://…/chaos`.
    fn describe(&self) -> String;
    /// The value and its version; `None` when nothing is stored under `key`.
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Etag)>, StoreError>;
    /// Stores `bytes` under `key` if `write` allows; returns the new version.
    async fn put(&self, key: &str, bytes: Vec<u8>, write: Write) -> Result<Etag, StoreError>;
    /// Every key starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError>;
    /// Removes `key`; `false` when nothing was there.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Calls made so far (what a fleet pays its storage account for; `bench/fleet.sh` reads it).
    fn calls(&self) -> u64;
}

/// Keys are relative paths of plain segments: `runs/<id>.json`, `replicas/<name>.json`.
fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("'{key}' is not a store key (segments of A-Z a-z 0-9 - _ . separated by /)")))
    }
}

/// The store `CHAOS_STORE_URL` names, else the local directory.
pub async fn open(
    url: Option<&str>,
    local_dir: &std::path::Path,
    credential: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
) -> Result<Arc<dyn ChaosStore>, StoreError> {
    match url.filter(|u| !u.trim().is_empty()) {
        Some(u) => azure_blob(u, credential).await,
        None => local(local_dir).map_err(|e| StoreError::Invalid(format!("cannot use {}: {e}", local_dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_plain_relative_paths() {
        assert!(check_key("runs/2026-x.json").is_ok());
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a b", "ä"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
