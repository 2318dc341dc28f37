//! The open model (`--rate`): requests start on a clock whatever the responses do, so a slow
//! service cannot slow the generator down and hide its own latency (no coordinated omission).
//!
//! Arrival k of a stage is due at `stage start + k / rate`. Each arrival waits for one of the
//! stage's `cap` slots (its users), then picks a task by weight. Latency is measured from the
//! arrival's intended start, so time spent waiting for a slot counts. An arrival sent more than
//! [`LATE_MS`] after it was due is *late*; one that cannot even queue (the backlog holds
//! [`BACKLOG_PER_SLOT`] × cap arrivals) or is still queued when the schedule ends is *dropped*.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::profile::Segment;
use super::report::{Endpoint, Figures, OpenFigures};
use super::{LIVE, TASKS};
use crate::round_to;

/// A request sent this long after its intended start is counted as late.
pub const LATE_MS: f64 = 10.0;
/// Arrivals that may queue for a slot, per slot, before new ones are dropped.
pub const BACKLOG_PER_SLOT: u64 = 16;
/// How long requests still in flight when the schedule ends may take to finish.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Stats {
    histogram: Histogram,
    failures: u64,
    codes: BTreeMap<String, u64>,
}

struct Shared {
    stats: [Mutex<Stats>; 3],
    sent: AtomicU64,
    done: AtomicU64,
    late: AtomicU64,
    waiting: AtomicU64,
    max_delay_us: AtomicU64,
}

pub struct Outcome {
    pub endpoints: Vec<Endpoint>,
    pub open: OpenFigures,
    pub duration_s: f64,
    pub max_users: usize,
}

pub async fn run(host: &str, segments: &[Segment], timeout: Duration) -> Result<Outcome, String> {
    let max_cap = segments.iter().map(|s| s.cap).max().unwrap_or(1);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(max_cap)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let host = host.trim_end_matches('/').to_string();
    let urls: Vec<String> = TASKS.iter().map(|t| format!("{host}{}", t.1)).collect();
    let shared = Arc::new(Shared {
        stats: Default::default(),
        sent: AtomicU64::new(0),
        done: AtomicU64::new(0),
        late: AtomicU64::new(0),
        waiting: AtomicU64::new(0),
        max_delay_us: AtomicU64::new(0),
    });
    let total_weight: u32 = TASKS.iter().map(|t| t.2).sum();
    let (mut scheduled, mut seconds, mut target) = (0u64, 0.0f64, 0.0f64);
    let started = Instant::now();
    let mut stage_start = started;
    // Ctrl-C (or SIGINT from the service stopping a run) ends the schedule early; the report
    // is still written.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    'stages: for seg in segments {
        let stage_end = stage_start + Duration::from_secs_f64(seg.seconds);
        seconds += seg.seconds;
        target += seg.rate * seg.seconds;
        LIVE.users.store(seg.cap as u64, Ordering::Relaxed);
        let slots = Arc::new(Semaphore::new(seg.cap));
        let backlog = BACKLOG_PER_SLOT * seg.cap as u64;
        if seg.rate > 0.0 {
            let mut k = 0u64;
            loop {
                let due = stage_start + Duration::from_secs_f64(k as f64 / seg.rate);
                if due >= stage_end {
                    break;
                }
                if due > Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = &mut interrupted => break 'stages,
                    }
                }
                k += 1;
                scheduled += 1;
                if shared.waiting.load(Ordering::Relaxed) >= backlog {
                    continue; // dropped
                }
                shared.waiting.fetch_add(1, Ordering::Relaxed);
                let task = pick(fastrand::u32(0..total_weight));
                let (client, url, shared, slots) = (client.clone(), urls[task].clone(), shared.clone(), slots.clone());
                tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    shared.waiting.fetch_sub(1, Ordering::Relaxed);
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    let delay = due.elapsed();
                    shared.max_delay_us.fetch_max(delay.as_micros() as u64, Ordering::Relaxed);
                    if delay.as_secs_f64() * 1000.0 > LATE_MS {
                        shared.late.fetch_add(1, Ordering::Relaxed);
                    }
                    LIVE.in_flight.fetch_add(1, Ordering::Relaxed);
                    let (ok, code) = send(&client, &url, task == 0).await;
                    LIVE.in_flight.fetch_sub(1, Ordering::Relaxed);
                    let us = due.elapsed().as_micros() as u64;
                    LIVE.record(task, ok, us);
                    let mut s = shared.stats[task].lock().unwrap();
                    s.histogram.record(us);
                    s.failures += u64::from(!ok);
                    *s.codes.entry(code).or_default() += 1;
                    drop(s);
                    shared.done.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(stage_end) => {}
            _ = &mut interrupted => break 'stages,
        }
        stage_start = stage_end;
    }
    let schedule_s = started.elapsed().as_secs_f64().min(seconds);
    // Let what is in flight finish (bounded); arrivals still queued then are dropped.
    let deadline = Instant::now() + GRACE.min(timeout);
    while shared.done.load(Ordering::Relaxed)
        < shared.sent.load(Ordering::Relaxed) + shared.waiting.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let duration_s = started.elapsed().as_secs_f64();
    let sent = shared.sent.load(Ordering::Relaxed);
    let dropped = scheduled - sent; // refused at the backlog, or still queued at the end
    let endpoints = TASKS
        .iter()
        .zip(&shared.stats)
        .filter_map(|(t, s)| {
            let s = s.lock().unwrap();
            (s.histogram.count > 0).then(|| Endpoint {
                name: t.0.to_string(),
                figures: Figures { failures: s.failures, ..Default::default() },
                status_codes: s.codes.clone(),
                histogram: s.histogram.clone(),
            })
        })
        .collect();
    Ok(Outcome {
        endpoints,
        open: OpenFigures {
            target_rps: round_to(if seconds > 0.0 { target / seconds } else { 0.0 }, 2),
            scheduled,
            sent,
            dropped,
            late: shared.late.load(Ordering::Relaxed),
            max_start_delay_ms: round_to(shared.max_delay_us.load(Ordering::Relaxed) as f64 / 1000.0, 2),
            delivered_rps: round_to(if schedule_s > 0.0 { sent as f64 / schedule_s } else { 0.0 }, 2),
        },
        duration_s,
        max_users: segments.iter().map(|s| s.cap).max().unwrap_or(0),
    })
}

/// The task for a number in `0..total weight`.
fn pick(mut n: u32) -> usize {
    for (i, t) in TASKS.iter().enumerate() {
        if n < t.2 {
            return i;
        }
        n -= t.2;
    }
    TASKS.len() - 1
}

/// Sends one GET; a failure is a transport error, a non-2xx, or an unhealthy `/health` body.
async fn send(client: &reqwest::Client, url: &str, is_health: bool) -> (bool, String) {
    match client.get(url).send().await {
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let ok = status.is_success() && !(is_health && super::unhealthy(&body));
            (ok, status.as_u16().to_string())
        }
        Err(e) if e.is_timeout() => (false, "timeout".into()),
        Err(_) => (false, "error".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn weights_pick_each_task_in_proportion() {
        let counts = (0..9).fold([0; 3], |mut c, n| {
            c[super::pick(n)] += 1;
            c
        });
        assert_eq!(counts, [3, 5, 1]);
    }
}
