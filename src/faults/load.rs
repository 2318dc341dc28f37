//! CPU and memory load: busy threads duty-cycled to a share of the CPU this process may use, and
//! memory allocated *and written* so it is resident, held for a duration and then released.
//!
//! Everything runs on dedicated OS threads, never on the async runtime, so the service keeps
//! answering while loaded. One load at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::FaultError;
use super::cpu;

/// Longest load the API accepts, in seconds.
pub const MAX_LOAD_SECONDS: i64 = 3600;
/// Length of one busy/idle cycle of a CPU thread: short enough that the load looks flat to
/// a one-second sampler, long enough that the sleep's wake-up cost is noise.
const DUTY_PERIOD: Duration = Duration::from_millis(20);
const MIB: usize = 1024 * 1024;

/// How hard a load pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoadLevel {
    Low,
    Medium,
    High,
}

impl LoadLevel {
    pub fn parse(s: &str) -> Result<Self, FaultError> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            _ => Err(FaultError::Invalid("Invalid load level. Must be 'low', 'medium', or 'high'".into())),
        }
    }

    /// Share of the available CPU to keep busy.
    pub fn cpu_fraction(self) -> f64 {
        match self {
            Self::Low => 0.3,
            Self::Medium => 0.6,
            Self::High => 0.9,
        }
    }

    /// Memory to hold resident, in MiB.
    pub fn memory_mib(self) -> usize {
        match self {
            Self::Low => 100,
            Self::Medium => 500,
            Self::High => 1000,
        }
    }
}

/// What `/chaos/status` shows of the load.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LoadStatus {
    /// Identifies one load, so a run undoes only the load it started.
    #[serde(skip)]
    pub id: u64,
    pub active: bool,
    /// `low`, `medium` or `high`; `none` when idle, as the original lab said.
    #[serde(serialize_with = "level_or_none")]
    #[schema(value_type = String, pattern = "^(none|low|medium|high)$")]
    pub level: Option<LoadLevel>,
    pub remaining_seconds: u64,
}

fn level_or_none<S: serde::Serializer>(level: &Option<LoadLevel>, s: S) -> Result<S::Ok, S::Error> {
    match level {
        Some(l) => serde::Serialize::serialize(l, s),
        None => s.serialize_str("none"),
    }
}

struct Active {
    id: u64,
    level: LoadLevel,
    ends: Instant,
    stop: Arc<AtomicBool>,
    /// The supervisor thread, unparked with `stop` so the load ends at once rather than at its
    /// next poll (the kill switch's all-clear time is mostly this).
    supervisor: std::thread::Thread,
    /// Becomes true once the threads have ended and the memory is freed.
    done: watch::Receiver<bool>,
}

/// Starts and stops the one load this process may run.
#[derive(Default)]
pub struct LoadController {
    active: Arc<Mutex<Option<Active>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl LoadController {
    /// Starts a load. Checks, in this order: a load already running (409 in the API), the level,
    /// the duration.
    pub fn start(&self, level: &str, duration_seconds: i64) -> Result<LoadStatus, FaultError> {
        let mut slot = self.active.lock().unwrap();
        if slot.is_some() {
            return Err(FaultError::AlreadyActive("Load simulation already active"));
        }
        let level = LoadLevel::parse(level)?;
        if !(1..=MAX_LOAD_SECONDS).contains(&duration_seconds) {
            return Err(FaultError::Invalid(format!("Duration must be between 1 and {MAX_LOAD_SECONDS} seconds")));
        }
        let duration = Duration::from_secs(duration_seconds as u64);
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = watch::channel(false);
        let ends = Instant::now() + duration;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;

        // The thread clears the slot when it ends, which waits for this lock: it is filled first.
        let active = self.active.clone();
        let stopped = stop.clone();
        let supervisor = std::thread::Builder::new()
            .name("load-supervisor".into())
            .spawn(move || {
                run_load(level, ends, &stopped);
                *active.lock().unwrap() = None;
                let _ = done_tx.send(true);
            })
            .map_err(|e| FaultError::Invalid(format!("cannot start load thread: {e}")))?;
        *slot = Some(Active { id, level, ends, stop, supervisor: supervisor.thread().clone(), done });
        tracing::info!(level = ?level, duration_seconds, "load started");
        Ok(LoadStatus { id, active: true, level: Some(level), remaining_seconds: duration_seconds as u64 })
    }

    /// Ends the running load (if any) and waits until its threads are gone and memory is freed.
    pub async fn stop(&self) {
        self.stop_matching(|_| true).await;
    }

    /// Ends load `id` if it is still the one running; returns whether it was.
    pub async fn stop_if(&self, id: u64) -> bool {
        self.stop_matching(|a| a.id == id).await
    }

    async fn stop_matching(&self, matches: impl Fn(&Active) -> bool) -> bool {
        let done = {
            let slot = self.active.lock().unwrap();
            match slot.as_ref() {
                Some(a) if matches(a) => {
                    a.stop.store(true, Ordering::SeqCst);
                    a.supervisor.unpark();
                    a.done.clone()
                }
                _ => return false,
            }
        };
        let mut done = done;
        let _ = done.wait_for(|d| *d).await;
        true
    }

    pub fn status(&self) -> LoadStatus {
        match self.active.lock().unwrap().as_ref() {
            Some(a) => LoadStatus {
                id: a.id,
                active: true,
                level: Some(a.level),
                remaining_seconds: ceil_secs(a.ends.saturating_duration_since(Instant::now())),
            },
            None => LoadStatus { id: 0, active: false, level: None, remaining_seconds: 0 },
        }
    }
}

/// Whole seconds in `left`, rounded up (so a running fault never shows 0 remaining).
pub fn ceil_secs(left: Duration) -> u64 {
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

/// Holds the load until `ends` or until `stop` is set. Runs on its own thread.
fn run_load(level: LoadLevel, ends: Instant, stop: &Arc<AtomicBool>) {
    let started = Instant::now();
    let (threads, duty) = cpu::plan(level.cpu_fraction(), cpu::available_cpus());
    let burners: Vec<_> = (0..threads)
        .filter_map(|i| {
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("load-cpu-{i}")).spawn(move || burn(duty, ends, &stop)).ok()
        })
        .collect();

    // Allocate while the CPU threads already run: the load starts at once.
    let memory = touch_memory(level.memory_mib() * MIB, stop);
    // Parked until the end or a stop (which unparks this thread); a spurious wake-up just loops.
    while !stop.load(Ordering::SeqCst) && Instant::now() < ends {
        std::thread::park_timeout(ends.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::SeqCst);
    for b in &burners {
        b.thread().unpark(); // cut the rest of its period short
    }
    for b in burners {
        let _ = b.join();
    }
    drop(memory); // large blocks are mmap-backed: freeing returns them to the OS at once
    crate::telemetry::operation_ended("load", started.elapsed().as_secs_f64());
    tracing::info!(level = ?level, "load ended");
}

/// Busy for `duty` of every period, asleep for the rest. The busy time is accounted against the
/// wall clock since the start, so a sleep that overshoots (timer slack, wake-up latency) is paid
/// back in the next period instead of lowering the load.
fn burn(duty: f64, ends: Instant, stop: &AtomicBool) {
    let start = Instant::now();
    let mut busy = Duration::ZERO;
    let mut x: u64 = 1;
    while !stop.load(Ordering::Relaxed) && Instant::now() < ends {
        // The period we are in (1-based) and the busy time owed by its end.
        let period = (start.elapsed().as_nanos() / DUTY_PERIOD.as_nanos()) as u32 + 1;
        let owed = DUTY_PERIOD.mul_f64(duty * f64::from(period));
        let spun = Instant::now();
        while busy + spun.elapsed() < owed {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        busy += spun.elapsed();
        if let Some(rest) = (start + DUTY_PERIOD * period).checked_duration_since(Instant::now()) {
            // Parked rather than asleep, so a stop (which unparks it) ends the load at once; an
            // early wake-up is paid back by the accounting above.
            std::thread::park_timeout(rest);
        }
    }
}

/// Allocates `bytes` in chunks and writes to every page, so the memory is resident rather than
/// merely reserved. Chunks are larger than glibc's largest mmap threshold (32 MiB), so each is
/// its own mapping and freeing it returns it to the OS. Stops early when `stop` is set.
fn touch_memory(bytes: usize, stop: &AtomicBool) -> Vec<Vec<u8>> {
    const CHUNK: usize = 64 * MIB;
    const PAGE: usize = 4096;
    let mut chunks = Vec::new();
    let mut left = bytes;
    while left > 0 && !stop.load(Ordering::Relaxed) {
        let mut chunk = vec![0u8; left.min(CHUNK)];
        for i in (0..chunk.len()).step_by(PAGE) {
            chunk[i] = 0xA5;
        }
        left -= chunk.len();
        chunks.push(std::hint::black_box(chunk));
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_order_and_messages() {
        let c = LoadController::default();
        assert_eq!(
            c.start("extreme", 10).unwrap_err().to_string(),
            "Invalid load level. Must be 'low', 'medium', or 'high'"
        );
        assert_eq!(c.start("low", 0).unwrap_err().to_string(), "Duration must be between 1 and 3600 seconds");
        assert_eq!(c.start("low", 3601).unwrap_err().to_string(), "Duration must be between 1 and 3600 seconds");
    }

    #[test]
    fn memory_is_resident() {
        let before = resident_kib();
        let m = touch_memory(64 * MIB, &AtomicBool::new(false));
        let during = resident_kib();
        assert!(during - before >= 60 * 1024, "RSS grew by {} KiB only", during - before);
        drop(m);
        let after = resident_kib();
        assert!(during - after >= 60 * 1024, "RSS did not fall after release: {during} -> {after} KiB");
    }

    fn resident_kib() -> i64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}
