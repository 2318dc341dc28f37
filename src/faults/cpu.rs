//! How much CPU this process may use: the affinity mask and the cgroup CPU quota (v2 `cpu.max`,
//! or v1 `cpu.cfs_quota_us`), whichever is smaller. Container Apps gives fractional CPUs
//! (e.g. 0.5), so the budget is a fraction, not a thread count.

use std::path::{Path, PathBuf};

/// CPUs this process may use, e.g. `2.0`, or `0.5` under a half-CPU quota.
pub fn available_cpus() -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    match cgroup_quota(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup")) {
        Some(q) if q > 0.0 => q.min(threads),
        _ => threads,
    }
}

/// How to spread `fraction` of `cpus` over whole threads: the thread count, and the share of
/// each period a thread spends busy.
pub fn plan(fraction: f64, cpus: f64) -> (usize, f64) {
    let threads = cpus.ceil().max(1.0) as usize;
    let duty = (fraction * cpus / threads as f64).clamp(0.0, 1.0);
    (threads, duty)
}

/// The tightest CPU quota on this process's cgroup path, in CPUs.
fn cgroup_quota(proc_cgroup: &Path, root: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(proc_cgroup).ok()?;
    let mut best: Option<f64> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let candidates: Vec<(PathBuf, bool)> = if controllers.is_empty() {
            vec![(root.to_path_buf(), true)] // cgroup v2 unified hierarchy
        } else if controllers.split(',').any(|c| c == "cpu") {
            vec![(root.join("cpu"), false), (root.join("cpu,cpuacct"), false)]
        } else {
            continue;
        };
        for (base, v2) in candidates {
            // Walk from the process's own cgroup up to the root: a parent's quota binds too.
            let mut dir = base.join(rel);
            loop {
                let q = if v2 { read_v2(&dir) } else { read_v1(&dir) };
                if let Some(q) = q {
                    best = Some(best.map_or(q, |b: f64| b.min(q)));
                }
                if dir == base || !dir.pop() {
                    break;
                }
            }
        }
    }
    best
}

fn read_v2(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    parse_cpu_max(&text)
}

fn read_v1(dir: &Path) -> Option<f64> {
    let quota: i64 = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?.trim().parse().ok()?;
    let period: i64 = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// Parses cgroup v2 `cpu.max`: `"max 100000"` (no quota) or `"50000 100000"` (0.5 CPU).
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    Some(quota.parse::<f64>().ok()? / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_formats() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
    }

    #[test]
    fn plan_spreads_fractional_budgets() {
        assert_eq!(plan(0.9, 2.0), (2, 0.9));
        let (t, d) = plan(0.9, 0.5);
        assert_eq!(t, 1);
        assert!((d - 0.45).abs() < 1e-9);
        let (t, d) = plan(0.6, 1.5);
        assert_eq!(t, 2);
        assert!((d - 0.45).abs() < 1e-9);
    }

    #[test]
    fn quota_is_read_from_the_tightest_ancestor() {
        let dir = std::env::temp_dir().join(format!("chaos-lab-cg-{}", std::process::id()));
        let leaf = dir.join("kubepods/pod1");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(dir.join("kubepods/cpu.max"), "150000 100000\n").unwrap();
        std::fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        let proc = dir.join("proc-cgroup");
        std::fs::write(&proc, "0::/kubepods/pod1\n").unwrap();
        assert_eq!(cgroup_quota(&proc, &dir), Some(1.5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
