//! Child processes that must not outlive the service: `loadgen` children and the development
//! Redis. Linux's parent-death signal kills them when the service dies, `kill -9` included.
//!
//! The signal is requested by the child itself, right after it starts: `loadgen --parent-pid`,
//! and for programs we do not own (redis-server), `chaos-lab exec-guarded --parent-pid PID --
//! PROGRAM ARGS`, which requests it and then `exec`s the program (the request survives `exec`).
//! It fires when the *thread* that spawned the child ends, so the service spawns these from
//! threads that live as long as it does (the main thread, the runtime's workers).

use std::ffi::CString;

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
