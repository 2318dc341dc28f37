//! The tests' child processes: one way to start them and one way to end them.
//!
//! Every process an integration test starts (the `chaos-lab` and `loadgen` binaries, redis-server,
//! Azurite, Chromium, Locust, schemathesis, bash, openssl) goes through [`Proc::spawn`] or
//! [`output`]; `tests/architecture.rs` checks that no test file starts one itself.
//! - Each child leads a process group of its own, so ending it also ends what it started (a
//!   shell's children, Chromium's renderers, npm's node).
//! - Ending it is [`Proc::terminate`]: SIGTERM to the process (what a container platform sends
//!   PID 1), a bounded wait, then SIGKILL to the group.
//! - Dropping it kills the group (-9) and reaps it, so a failing test leaves nothing running.
//! - [`output`] runs a command to its end within a time bound, killing it if it runs over.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How often a wait looks at the child again.
const POLL: Duration = Duration::from_millis(20);

/// A child process in a process group of its own; killed with its group on drop.
pub struct Proc {
    /// What the failure messages call it, e.g. "redis-server".
    name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `cmd` as the leader of a new process group; panics, naming `name`, when it cannot.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd.process_group(0).spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name: name.to_string(), child: Some(child) }
    }

    /// The process id (also its group id).
    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    /// The child while it runs; panics, naming it, once it has ended.
    pub fn child(&self) -> &Child {
        self.child.as_ref().unwrap_or_else(|| panic!("{} has already ended", self.name))
    }

    /// The child, to take its stdout or stderr pipe.
    pub fn child_mut(&mut self) -> &mut Child {
        let name = &self.name;
        self.child.as_mut().unwrap_or_else(|| panic!("{name} has already ended"))
    }

    /// Its exit status once it has exited (and is reaped); `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name))?;
        self.child = None;
        Some(status)
    }

    /// Whether it still runs (reaps it when it has exited).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// Sends `sig` to the process alone (not its group), as `kill -SIG pid` does.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).unwrap_or_else(|e| panic!("{sig} to {}: {e}", self.name));
    }

    /// Sends `sig` to its whole process group.
    pub fn signal_group(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = killpg(Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// One look at the child: `Some(status)` once it has exited or `deadline` has passed (the
    /// status `None` then), `None` while it is worth looking again.
    fn look(&mut self, deadline: Instant) -> Option<Option<ExitStatus>> {
        match self.exited() {
            Some(status) => Some(Some(status)),
            None if self.child.is_none() || Instant::now() >= deadline => Some(None),
            None => None,
        }
    }

    /// Waits up to `within` for it to exit; `None` when it still runs then.
    pub async fn wait_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.look(deadline) {
                Some(status) => return status,
                None => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// [`Proc::wait_within`] for code outside an async runtime (drop, blocking helpers).
    pub fn wait_within_blocking(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.look(deadline) {
                Some(status) => return status,
                None => std::thread::sleep(POLL),
            }
        }
    }

    /// SIGTERM to the process, then up to `within` for the exit; `None` when it had to be killed
    /// (with its group).
    pub async fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        let status = self.wait_within(within).await;
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// [`Proc::terminate`] for code outside an async runtime.
    pub fn terminate_blocking(&mut self, within: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        let status = self.wait_within_blocking(within);
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// SIGKILL to the group (nothing in it gets to run), and reaps the child.
    pub fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to its end with stdin closed and stdout and stderr captured; panics, with what it
/// printed, when it does not end within `within` (it is killed with its group first).
pub fn output(name: &str, cmd: &mut Command, within: Duration) -> Output {
    let mut p = Proc::spawn(name, cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let child = p.child_mut();
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = p.wait_within_blocking(within);
    p.kill();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "{name} did not end within {within:?}; it printed:\n{}\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Output { status, stdout, stderr }
}

/// [`output`] from async code: the blocking wait runs off the runtime's worker threads.
pub async fn output_async(name: &str, mut cmd: Command, within: Duration) -> Output {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || output(&name, &mut cmd, within)).await.unwrap()
}

/// A binary of this package, built by `cargo test` next to the test executables
/// (`target/<profile>/<name>`; tests run from `target/<profile>/deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built: run the tests with cargo test", path.display());
    path
}

/// The service binary, `chaos-lab`.
pub fn chaos_lab_bin() -> PathBuf {
    bin("chaos-lab")
}

/// The load generator binary, `loadgen`.
pub fn loadgen_bin() -> PathBuf {
    bin("loadgen")
}
