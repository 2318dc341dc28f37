//! Run history retention (`RUNS_RETAIN`): which finished run journals in `RUNS_DIR`, and the
//! loadgen reports of those runs in `RUNS_DIR/loadgen/`, are deleted, by count and by age.
//!
//! It deletes only files named like a run (`<run_id>.json`, `<run_id>-*.json|.html`) and never the
//! journal of a run whose status is still `running`: that run may be in progress, or be one a
//! crashed process left for the next start to close.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::report::RunSummary;
use crate::config::Retain;

/// How often a running service prunes (it also prunes at startup).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes the finished journals of `dir` beyond the newest `max_runs` runs or that ended more
/// than `max_age` ago, with their loadgen reports. Returns the ids pruned, oldest first. Files it
/// cannot read or delete are left (and logged); this never fails.
pub fn prune(dir: &Path, retain: &Retain) -> Vec<String> {
    prune_at(dir, retain, Utc::now())
}

fn prune_at(dir: &Path, retain: &Retain, now: DateTime<Utc>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    // Run ids start with the run's start time, so sorting them sorts the runs; a name that does
    // not parse is not a run journal (a temp file, some other state) and is not ours to delete.
    let mut runs: Vec<(String, DateTime<Utc>)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?;
            Some((id.to_string(), id_time(id)?))
        })
        .collect();
    runs.sort_by(|a, b| b.0.cmp(&a.0));
    let cutoff =
        retain.max_age.and_then(|age| TimeDelta::from_std(age).ok()).and_then(|age| now.checked_sub_signed(age));
    let reports = loadgen_reports(dir);
    let mut pruned = Vec::new();
    for (i, (id, started)) in runs.iter().enumerate() {
        let over_count = i >= retain.max_runs;
        // A run ends after it starts: one that started within the age is kept without reading it.
        if !over_count && cutoff.is_none_or(|c| *started >= c) {
            continue;
        }
        let path = dir.join(format!("{id}.json"));
        let Some(head) = read_head(&path) else { continue };
        if head.status == "running" || head.run_id != *id {
            continue;
        }
        let ended = head
            .ended_at
            .as_deref()
            .or(head.started_at.as_deref())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or_else(|| Some(std::fs::metadata(&path).ok()?.modified().ok()?.into()));
        let too_old = matches!((cutoff, ended), (Some(c), Some(t)) if t < c);
        if !over_count && !too_old {
            continue;
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete an old run journal (RUNS_RETAIN)");
            continue;
        }
        let prefix = format!("{id}-");
        for report in reports.iter().filter(|(name, _)| name.starts_with(&prefix)) {
            if let Err(e) = std::fs::remove_file(&report.1) {
                tracing::warn!(file = %report.1.display(), error = %e, "cannot delete an old loadgen report (RUNS_RETAIN)");
            }
        }
        pruned.push(id.clone());
    }
    pruned.reverse();
    pruned
}

/// Prunes `dir` every `every` on the blocking pool and drops the pruned runs from `index`; ends
/// once `index` is gone (its `Runs` dropped). Must be called within a Tokio runtime.
pub fn spawn_pruner(
    dir: PathBuf,
    retain: Retain,
    every: Duration,
    index: Weak<Mutex<Vec<RunSummary>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the owner has just pruned.
        tick.tick().await;
        loop {
            tick.tick().await;
            if index.strong_count() == 0 {
                return;
            }
            let (d, r) = (dir.clone(), retain.clone());
            let Ok(ids) = tokio::task::spawn_blocking(move || prune(&d, &r)).await else { continue };
            let Some(live) = index.upgrade() else { return };
            if !ids.is_empty() {
                tracing::info!(count = ids.len(), "deleted old run journals (RUNS_RETAIN)");
                live.lock().unwrap().retain(|s| !ids.contains(&s.run_id));
            }
        }
    })
}

/// The fields of a journal that pruning needs (the rest is skipped, not kept).
#[derive(Deserialize)]
struct Head {
    run_id: String,
    /// A string, not `RunStatus`, so a status this build does not know is still never `running`.
    status: String,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    ended_at: Option<String>,
}

fn read_head(path: &Path) -> Option<Head> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The start time a run id begins with (`20261122T174300123Z-1a2b3c`), or `None` when `id` is
/// not shaped like a run id.
fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let (stamp, rest) = (id.get(..19)?, id.get(19..)?);
    if !rest.starts_with('-') || !rest[1..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3fZ").ok()?.and_utc())
}

/// `(file name, path)` of every loadgen report (`RUNS_DIR/loadgen/*.json|.html`).
fn loadgen_reports(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.join("loadgen")) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (name.ends_with(".json") || name.ends_with(".html")).then(|| (name, e.path()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal as `Runs` writes it (only the fields pruning reads, plus one it skips).
    fn journal(dir: &Path, started: DateTime<Utc>, suffix: &str, status: &str) -> String {
        let id = format!("{}-{suffix}", started.format("%Y%m%dT%H%M%S%3fZ"));
        let ended = (status != "running").then(|| crate::format_timestamp(started + TimeDelta::seconds(5)));
        let body = serde_json::json!({
            "run_id": id,
            "status": status,
            "started_at": crate::format_timestamp(started),
            "ended_at": ended,
            "logs": [{"message": "x".repeat(100)}],
        });
        std::fs::write(dir.join(format!("{id}.json")), body.to_string()).unwrap();
        id
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chaos-lab-{name}-{}-{:08x}", std::process::id(), fastrand::u32(..)));
        std::fs::create_dir_all(dir.join("loadgen")).unwrap();
        dir
    }

    #[test]
    fn prunes_beyond_the_count_and_the_age_but_never_a_running_run() {
        let dir = temp_dir("retention");
        let now = Utc::now();
        let ago = |days: i64| now - TimeDelta::days(days) - TimeDelta::minutes(1);
        let expired = journal(&dir, ago(40), "00000a", "succeeded");
        let stale_running = journal(&dir, ago(39), "00000b", "running");
        let third = journal(&dir, ago(3), "00000c", "failed");
        let second = journal(&dir, ago(2), "00000d", "cancelled");
        let newest = journal(&dir, ago(1), "00000e", "succeeded");
        for id in [&expired, &second] {
            for ext in ["json", "html"] {
                std::fs::write(dir.join("loadgen").join(format!("{id}-loadgen-1.{ext}")), "{}").unwrap();
            }
        }
        // Not run journals: never touched.
        for other in ["ledger.json", "notes.json", ".x.json.tmp"] {
            std::fs::write(dir.join(other), r#"{"status": "succeeded"}"#).unwrap();
        }
        let exists = |id: &String| dir.join(format!("{id}.json")).exists();

        let by_age = Retain { max_runs: usize::MAX, max_age: Some(Duration::from_secs(30 * 86_400)) };
        assert_eq!(prune_at(&dir, &by_age, now), std::slice::from_ref(&expired));
        assert!(!dir.join("loadgen").join(format!("{expired}-loadgen-1.json")).exists());
        assert!(!dir.join("loadgen").join(format!("{expired}-loadgen-1.html")).exists());
        assert!(dir.join("loadgen").join(format!("{second}-loadgen-1.html")).exists());
        assert!(exists(&stale_running), "a running journal is never deleted, however old");

        let by_count = Retain { max_runs: 2, max_age: None };
        assert_eq!(prune_at(&dir, &by_count, now), std::slice::from_ref(&third));
        assert!(exists(&newest) && exists(&second) && exists(&stale_running) && !exists(&third));
        assert!(prune_at(&dir, &by_count, now).is_empty(), "nothing more to prune");
        for other in ["ledger.json", "notes.json", ".x.json.tmp"] {
            assert!(dir.join(other).exists(), "{other} was deleted");
        }

        std::fs::remove_dir_all(&dir).unwrap();
        assert!(prune(&dir, &by_count).is_empty(), "a missing folder prunes nothing");
    }
}
