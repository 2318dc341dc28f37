//! `loadgen`: the lab's load generator. Closed model on goose (users with think time, the
//! staged/spike/sustained profiles), open model on its own clock (`--rate`), one JSON report
//! format that merges across machines. The binary is `src/bin/loadgen.rs`; the service runs it
//! as a child process for the `loadgen()` script function.

pub mod cli;
mod closed;
pub mod histogram;
mod open;
pub mod profile;
pub mod report;
mod threshold;

use std::sync::atomic::{AtomicU64, Ordering};

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

/// Live counters for `--progress-json` (both models feed them).
pub(crate) struct Live {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub users: AtomicU64,
}

pub(crate) static LIVE: Live =
    Live { requests: AtomicU64::new(0), failures: AtomicU64::new(0), users: AtomicU64::new(0) };

impl Live {
    pub fn count(&self, ok: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Prints one JSON line per second on stdout until the process ends: `{"progress": {...}}`.
pub(crate) fn spawn_progress() {
    tokio::spawn(async {
        let started = std::time::Instant::now();
        let mut last = 0;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let requests = LIVE.requests.load(Ordering::Relaxed);
            let line = serde_json::json!({"progress": {
                "elapsed_s": report::round2(started.elapsed().as_secs_f64()),
                "users": LIVE.users.load(Ordering::Relaxed),
                "requests": requests,
                "failures": LIVE.failures.load(Ordering::Relaxed),
                "rps": requests - last,
            }});
            last = requests;
            println!("{line}");
        }
    });
}
