//! `loadgen`: the lab's load generator. Closed model on goose (users with think time, the
//! staged/spike/sustained profiles), open model on its own clock (`--rate`), one JSON report
//! format that merges across machines. The binary is `src/bin/loadgen.rs`; the service runs it
//! as a child process for the `loadgen()` script function.
//!
//! Both models report every finished request to [`LIVE`]: cumulative counters, and the
//! per-second series (throughput, latency, errors each second) that goes into the report and,
//! with `--progress-json`, out on stdout as each second ends. The same seconds feed the live
//! line on stderr (`live.rs`), which never mixes into stdout.

pub mod cli;
mod closed;
pub mod histogram;
mod live;
mod open;
pub mod profile;
pub mod report;
mod threshold;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use histogram::Histogram;
pub(crate) use live::LiveLine;
use report::Second;

/// What each user does, as the original Locust user did: (request name, path, weight).
pub const TASKS: [(&str, &str, u32); 3] =
    [("GET /health", "/health", 3), ("GET /", "/", 5), ("GET /chaos/status", "/chaos/status", 1)];

/// The service's default address (APP_HOST/APP_PORT defaults).
pub const DEFAULT_HOST: &str = "http://127.0.0.1:8000";

/// Rules applied unless `--threshold` or `--no-default-thresholds` is given.
pub const DEFAULT_THRESHOLDS: [&str; 2] = ["p95<1000ms", "error-rate<1%"];

/// A `/health` body reporting `"status": "unhealthy"` is a failure even with a 2xx status.
pub fn unhealthy(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("status").and_then(|s| s.as_str()) == Some("unhealthy"))
}

/// How many tasks (and per-task slots in the series recorder) there are.
const N_TASKS: usize = TASKS.len();

/// What both models report while a profile runs: cumulative counters, and the per-second series.
pub(crate) struct Live {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Users now: goose users started and not yet stopped, or the open model's stage slots.
    pub users: AtomicU64,
    /// The open model's requests sent and not yet answered (for the live line).
    pub in_flight: AtomicU64,
    /// Whether each closed second is printed as a `{"progress": ...}` line (`--progress-json`).
    progress: AtomicBool,
    /// The live line on stderr, while a run has one (see [`live`]).
    line: Mutex<Option<LiveLine>>,
    recorder: Recorder,
}

pub(crate) static LIVE: Live = Live {
    requests: AtomicU64::new(0),
    failures: AtomicU64::new(0),
    users: AtomicU64::new(0),
    in_flight: AtomicU64::new(0),
    progress: AtomicBool::new(false),
    line: Mutex::new(None),
    recorder: Recorder::new(),
};

impl Live {
    /// One finished request of `task` (an index into [`TASKS`]) that took `us` microseconds.
    pub fn record(&self, task: usize, ok: bool, us: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.recorder.record(task, ok, us);
    }
}

/// Records the per-second series from now until [`take_series`], closing one second each
/// second; with `print_progress`, each closed second is also printed on stdout as
/// `{"progress": {"elapsed_s", "users", "requests", "failures", "rps", "second"}}` (the service's
/// `loadgen()` reads these lines; `requests` and `failures` count from the start, `rps` is the
/// second's, `second` is the [`Second`] with its histogram). With `live`, each closed second
/// also goes to the live line on stderr, until [`take_series`] or [`finish_live`] ends it.
pub(crate) fn spawn_series(print_progress: bool, live: Option<LiveLine>) {
    let started = Instant::now();
    LIVE.progress.store(print_progress, Ordering::Relaxed);
    *lock(&LIVE.line) = live;
    LIVE.recorder.start(started);
    tokio::spawn(async move {
        let first = tokio::time::Instant::from_std(started) + Duration::from_secs(1);
        let mut tick = tokio::time::interval_at(first, Duration::from_secs(1));
        // A tick delayed past the next one (an overloaded machine) closes one longer second
        // rather than a burst of empty ones.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let users = LIVE.users.load(Ordering::Relaxed);
            match LIVE.recorder.close(Instant::now(), users, false) {
                Some(second) => {
                    print_progress_line(&second);
                    if let Some(line) = lock(&LIVE.line).as_mut() {
                        line.second(&second);
                    }
                }
                None => break, // take_series ended the series
            }
        }
    });
}

/// Ends the series: closes the interval still open (the run's last, partial second) and returns
/// every second, without histograms, for the report. The ticker stops at its next tick. The
/// live line ends too (its last, partial interval is not printed: the summary follows).
pub(crate) fn take_series() -> Vec<Second> {
    let users = LIVE.users.load(Ordering::Relaxed);
    if let Some(second) = LIVE.recorder.close(Instant::now(), users, true) {
        print_progress_line(&second);
    }
    finish_live();
    LIVE.recorder.take()
}

/// Ends the live line, if a run has one: nothing more is printed on it, and a line rewritten in
/// place gets its newline, so an error or the summary starts on a line of its own.
pub(crate) fn finish_live() {
    // Taken out under the lock: the ticker, which prints under the same lock, finds none after.
    let line = lock(&LIVE.line).take();
    if let Some(mut line) = line {
        line.finish();
    }
}

fn print_progress_line(second: &Second) {
    if !LIVE.progress.load(Ordering::Relaxed) {
        return;
    }
    let line = serde_json::json!({"progress": {
        "elapsed_s": second.t,
        "users": second.users,
        "requests": LIVE.requests.load(Ordering::Relaxed),
        "failures": LIVE.failures.load(Ordering::Relaxed),
        // A whole number, as the service has always logged it (requests in a 1 s second).
        "rps": second.rps.round() as u64,
        "second": second,
    }});
    println!("{line}");
}

/// What finished on one task in the open interval.
struct Interval {
    histogram: Histogram,
    failures: u64,
}

impl Interval {
    /// An empty interval, usable in a `static` (`Histogram::default` is not `const`).
    const EMPTY: Interval = Interval {
        histogram: Histogram { buckets: BTreeMap::new(), count: 0, min_us: 0, max_us: 0, total_us: 0 },
        failures: 0,
    };
}

/// The per-second series: requests go into the open interval of their task; closing a second
/// swaps the intervals out and turns them into a [`Second`].
///
/// Each task has its own lock, held only to record one sample, so requests of different tasks
/// do not wait for each other, and closing a second holds each lock only for a swap.
struct Recorder {
    open: [Mutex<Interval>; N_TASKS],
    series: Mutex<Series>,
}

/// Everything about the series except the open intervals.
struct Series {
    /// When the load started; `None` until [`Recorder::start`].
    started: Option<Instant>,
    /// When the last second was closed: where the open interval began.
    last_closed: Option<Instant>,
    /// The whole second (1, 2, ...) the last closed second ended on; 0 before the first.
    last_index: u64,
    /// Closed seconds, without histograms.
    seconds: Vec<Second>,
    /// The last closed second's intervals and length, kept so that a final interval too short
    /// to stand as a second of its own (its rate would be noise) is folded into it.
    previous: Option<([Interval; N_TASKS], f64)>,
    /// Set once the final interval is closed: nothing more is recorded into the series.
    done: bool,
}

impl Recorder {
    const fn new() -> Self {
        Recorder {
            open: [const { Mutex::new(Interval::EMPTY) }; N_TASKS],
            series: Mutex::new(Series {
                started: None,
                last_closed: None,
                last_index: 0,
                seconds: Vec::new(),
                previous: None,
                done: false,
            }),
        }
    }

    fn record(&self, task: usize, ok: bool, us: u64) {
        let mut i = lock(&self.open[task.min(N_TASKS - 1)]);
        i.histogram.record(us);
        i.failures += u64::from(!ok);
    }

    /// Starts a new series at `at`; what was recorded before is dropped.
    fn start(&self, at: Instant) {
        let mut s = lock(&self.series);
        for slot in &self.open {
            *lock(slot) = Interval::EMPTY;
        }
        *s = Series {
            started: Some(at),
            last_closed: Some(at),
            last_index: 0,
            seconds: Vec::new(),
            previous: None,
            done: false,
        };
    }

    /// Closes the open interval at `now` and returns it as a second (with its histogram), or
    /// `None` once the series is over (or never started). A tick closes the whole second it
    /// falls on. The final close (`last`) ends where the run ended; if that is less than half a
    /// second past the last whole second, the interval is folded into that second instead (then
    /// `None`: nothing new to report), so `round(t)` numbers every second of the series.
    fn close(&self, now: Instant, users: u64, last: bool) -> Option<Second> {
        let mut s = lock(&self.series);
        let (Some(started), Some(since)) = (s.started, s.last_closed) else { return None };
        if s.done {
            return None;
        }
        let elapsed = now.saturating_duration_since(started).as_secs_f64();
        let mut length = now.saturating_duration_since(since).as_secs_f64();
        let mut taken: [Interval; N_TASKS] =
            std::array::from_fn(|i| std::mem::replace(&mut *lock(&self.open[i]), Interval::EMPTY));
        s.last_closed = Some(now);
        let mut fresh = true;
        let t = if !last {
            // Ticks come on whole seconds; a late one still closes the next second.
            let index = (elapsed.round() as u64).max(s.last_index + 1);
            s.last_index = index;
            index as f64
        } else {
            s.done = true;
            let end = crate::round_to(elapsed, 2);
            let previous_index = s.last_index;
            if (end.round() as u64) <= previous_index
                && let Some((mut prev, prev_length)) = s.previous.take()
            {
                for (p, n) in prev.iter_mut().zip(&taken) {
                    p.histogram.merge(&n.histogram);
                    p.failures += n.failures;
                }
                taken = prev;
                length += prev_length;
                s.seconds.pop();
                fresh = false;
                previous_index as f64
            } else {
                end
            }
        };
        let second =
            Second::of(t, length, users, TASKS.iter().zip(&taken).map(|(task, i)| (task.0, &i.histogram, i.failures)));
        s.seconds.push(Second { histogram: None, ..second.clone() });
        s.previous = Some((taken, length));
        fresh.then_some(second)
    }

    /// The closed seconds, leaving the recorder empty.
    fn take(&self) -> Vec<Second> {
        std::mem::take(&mut lock(&self.series).seconds)
    }
}

/// A lock that a panic elsewhere does not make unusable: the series is counters only.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_close_on_ticks_and_a_short_tail_folds_into_the_last() {
        let r = Recorder::new();
        assert!(r.close(Instant::now(), 0, false).is_none(), "not started");
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        r.start(t0);
        r.record(0, true, 2_000);
        r.record(1, false, 8_000);
        let s1 = r.close(at(1_003), 5, false).unwrap();
        assert_eq!((s1.t, s1.users, s1.requests, s1.failures), (1.0, 5, 2, 1));
        assert_eq!(s1.endpoints["GET /"].failures, 1);
        assert_eq!(s1.histogram.as_ref().unwrap().count, 2, "the progress channel gets the histogram");
        let s2 = r.close(at(2_001), 5, false).unwrap();
        assert_eq!((s2.t, s2.requests, s2.rps), (2.0, 0, 0.0));
        // The run ends 0.3 s later: those requests join second 2 (1.3 s long).
        r.record(2, true, 1_000);
        r.record(2, true, 1_000);
        assert!(r.close(at(2_300), 5, true).is_none());
        assert!(r.close(at(3_000), 5, false).is_none(), "the series is over");
        let series = r.take();
        assert_eq!(series.len(), 2);
        assert_eq!((series[1].t, series[1].requests), (2.0, 2));
        assert!((series[1].rps - 2.0 / 1.299).abs() < 0.01, "{}", series[1].rps);
        assert!(series.iter().all(|s| s.histogram.is_none()), "the report keeps no histograms");
    }

    #[test]
    fn a_long_tail_is_its_own_second() {
        let r = Recorder::new();
        let t0 = Instant::now();
        r.start(t0);
        r.record(0, true, 1_000);
        r.close(t0 + Duration::from_millis(1_000), 1, false).unwrap();
        r.record(0, true, 1_000);
        let tail = r.close(t0 + Duration::from_millis(1_700), 1, true).unwrap();
        assert_eq!((tail.t, tail.requests), (1.7, 1));
        assert!((tail.rps - 1.0 / 0.7).abs() < 0.01);
        assert_eq!(r.take().len(), 2);
    }
}
