//! Child processes that must not outlive the service: `loadgen` children and the development
//! Redis. Linux's parent-death signal kills them when the service dies, `kill -9` included.
//!
//! The signal is requested by the child itself, right after it starts: `loadgen --parent-pid`,
//! and for programs we do not own (redis-server), `chaos-lab exec-guarded --parent-pid PID --
//! PROGRAM ARGS`, which requests it and then `exec`s the program (the request survives `exec`).
//! It fires when the *thread* that spawned the child ends, so the service spawns these from
//! threads that live as long as it does (the main thread, the runtime's workers).
//!
//! A `loadgen` child's handle is here too ([`Running`]: stop it, wait for its summary), and the
//! kill of its process group by pid ([`kill_group`]), which works after a crash of the service as
//! well: the fault ledger undoes a loadgen with both. How a child is started (its options, its
//! report) is the script API's (`chaos::loadgen` adds `Running::start`). This module uses no
//! other module of the crate, so `faults` can reach it without depending on `chaos`.

use std::ffi::CString;

use serde_json::Value;
use tokio::sync::watch;

/// Asks Linux for SIGKILL when the parent dies, then checks the parent is still `pid` (it may
/// have died before the request was made).
pub fn die_with_parent(pid: u32) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("--parent-pid: cannot set the parent-death signal: {e}"))?;
    let parent = nix::unistd::getppid().as_raw();
    if u32::try_from(parent).ok() != Some(pid) {
        return Err(format!("--parent-pid {pid}: the parent is already gone (parent is now {parent})"));
    }
    Ok(())
}

/// `chaos-lab exec-guarded`: [`die_with_parent`], then replaces this process with `command`.
/// Returns only on failure.
pub fn exec_guarded(parent_pid: u32, command: &[String]) -> String {
    if let Err(e) = die_with_parent(parent_pid) {
        return e;
    }
    let args: Result<Vec<CString>, _> = command.iter().map(|a| CString::new(a.as_str())).collect();
    let Ok(args) = args else { return "exec-guarded: an argument contains a NUL byte".into() };
    let Some(program) = args.first() else { return "exec-guarded: no program given".into() };
    match nix::unistd::execvp(program, &args) {
        Ok(never) => match never {},
        Err(e) => format!("exec-guarded: cannot run {}: {e}", command[0]),
    }
}

/// A running `loadgen` child. Its outcome stays readable after it ends (several calls may wait).
pub struct Running {
    // `pub(crate)`: filled in by `Running::start` (`chaos::loadgen`), which spawns the child and
    // its watcher.
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) outcome: watch::Receiver<Option<Result<Value, String>>>,
}

impl Running {
    /// The child's pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When the child started, in clock ticks since boot (tells it from a later process that
    /// reuses the pid).
    pub fn start_ticks(&self) -> u64 {
        self.start_ticks
    }

    /// Asks the child to stop (graceful: it still writes its report).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the child to end; the script's summary.
    pub async fn wait(&self) -> Result<Value, String> {
        let mut rx = self.outcome.clone();
        let r = rx.wait_for(Option::is_some).await.map_err(|_| "loadgen: the child's watcher ended".to_string())?;
        r.clone().expect("waited for Some")
    }
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks since boot.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process group of a loadgen child if `pid` is still the process that started at
/// `ticks` (0 = unknown: the group is killed if it exists). Returns whether anything was killed.
pub fn kill_group(pid: u32, ticks: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match start_ticks(pid) {
        Some(t) if ticks == 0 || t == ticks => {}
        // The leader is gone (or another process has its pid): members may remain, but a pid
        // reused by something else must not be touched.
        Some(_) => return false,
        None => {}
    }
    let group = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).is_ok()
}
