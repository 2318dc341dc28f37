//! The chaos store in a local directory: one file per key, written atomically (temp file +
//! rename). The version of a file is its modification time and length; conditional writes are
//! checked and applied under one lock, which is enough because one process owns the directory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use super::{ChaosStore, Etag, Listed, StoreError, Write, check_key};

struct LocalDir {
    dir: PathBuf,
    /// Serialises check-and-write, so conditional writes are atomic within this process.
    writing: Mutex<()>,
    calls: std::sync::atomic::AtomicU64,
}

/// The store in `dir` (created when missing).
pub fn local(dir: &Path) -> std::io::Result<Arc<dyn ChaosStore>> {
    std::fs::create_dir_all(dir)?;
    Ok(Arc::new(LocalDir { dir: dir.to_path_buf(), writing: Mutex::new(()), calls: Default::default() }))
}

impl LocalDir {
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.dir.join(key))
    }

    fn etag(path: &Path) -> std::io::Result<Option<Etag>> {
        match std::fs::metadata(path) {
            Ok(m) => {
                let nanos = m.modified()?.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
                Ok(Some(Etag(format!("\"{nanos:x}-{:x}\"", m.len()))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("local store: {e}"))
}

#[async_trait::async_trait]
impl ChaosStore for LocalDir {
    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }

    fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Etag)>, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.path(key)?;
        let _w = self.writing.lock().unwrap();
        let Some(etag) = Self::etag(&path).map_err(io)? else { return Ok(None) };
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some((bytes, etag))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, write: Write) -> Result<Etag, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.path(key)?;
        let _w = self.writing.lock().unwrap();
        let current = Self::etag(&path).map_err(io)?;
        match (&write, &current) {
            (Write::IfAbsent, Some(_)) => return Err(StoreError::Conflict(format!("{key} already exists"))),
            (Write::IfMatch(want), Some(have)) if want != have => {
                return Err(StoreError::Conflict(format!("{key} changed since it was read")));
            }
            (Write::IfMatch(_), None) => return Err(StoreError::Conflict(format!("{key} no longer exists"))),
            _ => {}
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let tmp = path.with_extension("tmp~");
        std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path)).map_err(io)?;
        let mut etag = Self::etag(&path).map_err(io)?.ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
        // A rewrite within the file system's timestamp resolution must still be a new version.
        if current.as_ref() == Some(&etag) {
            let later = std::time::SystemTime::now() + std::time::Duration::from_millis(1);
            std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(later)).map_err(io)?;
            etag = Self::etag(&path).map_err(io)?.ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
        }
        Ok(etag)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&self.dir) else { continue };
                let key = rel.to_string_lossy().replace('\\', "/");
                if key.starts_with(prefix)
                    && check_key(&key).is_ok()
                    && let Some(etag) = Self::etag(&p).map_err(io)?
                {
                    out.push(Listed { key, etag });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.path(key)?;
        let _w = self.writing.lock().unwrap();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(e)),
        }
    }
}
