//! Watching a run while it runs: its load generators' per-second points, a `/health` sample of
//! this replica each second, when each of its faults was on, and its guards. On a breach the run
//! is stopped as `aborted` and every fault it owns is undone at once through the ledger (the
//! same emergency undo as the kill switch), before the script, its rollbacks and the engine's
//! undo phase even notice. When the run has ended, [`Observer::finish`] computes its impact.
//!
//! This module only watches and asks the ledger to undo; it never applies anything. Health is
//! sampled over loopback like the script's `health()` (the service's own `/health`), from the
//! run's start to its end, for every run that is not a dry run: it costs one request a second
//! and is what "the service went unhealthy" and "it recovered" are measured on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;

use super::engine::Deps;
use super::guard::{self, HealthSample, LoadSample};
use super::report::{Breach, FaultSpan, HealthPoint, Impact, LoadPoint, RunReport, RunShared, StopReason};
use crate::faults::ledger::{EntryState, Ledger};
use crate::loadgen::report::Second;
use crate::round_to;

/// Points (load and health together) a run's series keeps; later ones are counted in
/// `truncated.series`. An hour (the longest run) of health and four generators fits.
pub const MAX_SERIES_POINTS: usize = 20_000;
/// A health sample that has no answer within this is `unreachable`.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(900);
/// After the undo, how long the end of a run waits for the service to be healthy again, so the
/// time to recover is measured even when the script did not wait for it (an aborted run).
pub const RECOVERY_WATCH: Duration = Duration::from_secs(10);

/// One per run (not for dry runs: nothing is broken, nothing to watch).
pub(super) struct Observer {
    run: Arc<RunShared>,
    deps: Arc<Deps>,
    ledger: Arc<Ledger>,
    /// The ledger owner of the run's faults.
    owner: String,
    /// The run's start, to turn ledger timestamps into run offsets.
    started_at: Option<DateTime<Utc>>,
    recent: Mutex<Recent>,
    breached: AtomicBool,
    /// Set when the run has ended: the health sampler stops.
    stop: watch::Sender<bool>,
}

/// What the guards judge: recent load seconds with their histograms (the journal keeps figures
/// only) and every health sample.
#[derive(Default)]
struct Recent {
    load: VecDeque<LoadSample>,
    health: Vec<HealthSample>,
}

impl Recent {
    /// The first health sample from `since` on at which the service was fine again: healthy,
    /// and the load that finished after `since` within every guard.
    fn recovered_at(&mut self, guards: &[guard::Guard], since: f64) -> Option<f64> {
        let load = self.load.make_contiguous();
        self.health
            .iter()
            .find(|h| h.t >= since && h.healthy && guards.iter().all(|g| g.load_within(load, h.t, since)))
            .map(|h| h.t)
    }
}

impl Observer {
    pub fn new(run: Arc<RunShared>, deps: Arc<Deps>, owner: String) -> Arc<Self> {
        let started_at = DateTime::parse_from_rfc3339(&run.snapshot().started_at).ok().map(|t| t.with_timezone(&Utc));
        Arc::new(Self {
            ledger: deps.ledger.clone(),
            run,
            deps,
            owner,
            started_at,
            recent: Mutex::new(Recent::default()),
            breached: AtomicBool::new(false),
            stop: watch::channel(false).0,
        })
    }

    /// Starts sampling `/health` once a second until [`Self::finish`].
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        let mut stop = self.stop.subscribe();
        self.deps.handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                me.sample_health().await;
                me.sync_faults();
            }
        });
    }

    async fn sample_health(&self) {
        let t = self.run.offset_s();
        let started = std::time::Instant::now();
        let url = format!("{}/health", self.deps.self_url);
        let answer = self.deps.http.get(url).timeout(HEALTH_TIMEOUT).send().await;
        let (state, latency_ms) = match answer {
            Ok(r) => {
                let ok = r.status().is_success();
                let body = r.text().await.unwrap_or_default();
                let latency = round_to(started.elapsed().as_secs_f64() * 1000.0, 2);
                let healthy = ok && !crate::loadgen::unhealthy(&body);
                (if healthy { "healthy" } else { "unhealthy" }, Some(latency))
            }
            Err(_) => ("unreachable", None),
        };
        let point = HealthPoint { t, state: state.to_string(), latency_ms };
        if self.keep_point() {
            self.run.update(|r| r.series.health.push(point));
        }
        let healthy = state == "healthy";
        {
            let mut recent = self.recent.lock().unwrap();
            recent.health.push(HealthSample { t, healthy });
        }
        self.evaluate(t);
    }

    /// A second of load from the generator the script calls `loadgen`.
    pub fn load_second(&self, loadgen: &str, mut second: Second) {
        let t = self.run.offset_s();
        let histogram = second.histogram.take().unwrap_or_default();
        let sample = LoadSample { t, requests: second.requests, failures: second.failures, histogram };
        second.t = t;
        if self.keep_point() {
            let point = LoadPoint { loadgen: loadgen.to_string(), second };
            self.run.update(|r| r.series.load.push(point));
        }
        {
            let mut recent = self.recent.lock().unwrap();
            recent.load.push_back(sample);
            // The longest window any guard may have, and a second of slack.
            while recent.load.front().is_some_and(|s| s.t < t - guard::MAX_WINDOW_S as f64 - 1.0) {
                recent.load.pop_front();
            }
        }
        self.evaluate(t);
    }

    /// Whether the series has room for one more point; counts the ones it has not.
    fn keep_point(&self) -> bool {
        self.run.update(|r| {
            let full = r.series.load.len() + r.series.health.len() >= MAX_SERIES_POINTS;
            if full {
                r.truncated.get_or_insert_with(Default::default).series += 1;
            }
            !full
        })
    }

    /// Judges every guard at `t`; the first breach aborts the run.
    fn evaluate(&self, t: f64) {
        let guards = self.run.update(|r| r.guards.clone());
        let verdict = {
            let mut locked = self.recent.lock().unwrap();
            let recent = &mut *locked;
            let load = recent.load.make_contiguous();
            guards.iter().find_map(|g| g.check(load, &recent.health, t).map(|v| (g.clone(), v)))
        };
        if let Some((g, v)) = verdict {
            self.breach(g, v, t);
        }
    }

    fn breach(&self, guard: guard::Guard, v: guard::Verdict, t: f64) {
        // The first breach stops the run; a run already stopping for another reason keeps it.
        if self.run.stop_reason().is_some() || self.breached.swap(true, Ordering::SeqCst) {
            return;
        }
        let record = Breach {
            at: crate::timestamp(),
            offset_s: t,
            metric: v.metric.to_string(),
            observed: round_to(v.observed, 2),
            threshold: v.threshold,
            requests: v.requests,
            guard,
        };
        let message = format!(
            "guard breached ({}): {} {} > {} — aborting the run and undoing every fault",
            record.guard.describe(),
            record.metric,
            record.observed,
            record.threshold
        );
        tracing::warn!(run_id = %self.run.id, metric = %record.metric, observed = record.observed, "{message}");
        self.run.update(|r| r.breach = Some(record.clone()));
        self.run.emit("breach", json!(record));
        self.run.note(None, message);
        self.run.request_stop(StopReason::Breach);
        // At once, from here: the script may be in the middle of a long call, and its rollbacks
        // have budgets of their own. The engine's undo phase then finds these undone.
        let (ledger, owner) = (self.ledger.clone(), self.owner.clone());
        self.deps.handle.spawn(async move { ledger.undo_at_once(|e| e.owner == owner).await });
    }

    /// Notes a fault the run applied (its band in the report starts now).
    pub fn applied(&self, fault_id: &str) {
        let Some(e) = self.ledger.get(fault_id) else { return };
        let t = self.run.offset_s();
        let kind = crate::json_name(&e.kind);
        self.run.update(|r| {
            let line = r.steps.last().and_then(|s| s.line);
            r.faults.push(FaultSpan {
                fault_id: e.id.clone(),
                kind,
                target: e.target.clone(),
                applied_s: t,
                undone_s: None,
                line,
            })
        });
    }

    /// Notes when a fault was undone (`at`: the ledger's timestamp of the undo).
    pub fn undone(&self, fault_id: &str, at: &str) {
        let t = self.offset_of(at).unwrap_or_else(|| self.run.offset_s());
        self.run.update(|r| {
            if let Some(f) = r.faults.iter_mut().find(|f| f.fault_id == fault_id && f.undone_s.is_none()) {
                f.undone_s = Some(t);
            }
        });
    }

    /// Brings the bands in line with the ledger (faults undone by the script, a lease, the kill
    /// switch or a breach), so the live report shows them ending.
    fn sync_faults(&self) {
        let open: Vec<String> =
            self.run.update(|r| r.faults.iter().filter(|f| f.undone_s.is_none()).map(|f| f.fault_id.clone()).collect());
        for id in open {
            if let Some(e) = self.ledger.get(&id)
                && e.state == EntryState::Undone
                && let Some(at) = &e.undone_at
            {
                self.undone(&id, at);
            }
        }
    }

    fn offset_of(&self, ts: &str) -> Option<f64> {
        let at = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
        let ms = (at - self.started_at?).num_milliseconds();
        Some((ms.max(0) as f64) / 1000.0)
    }

    /// The end of the run's watch, after its undo: waits (up to [`RECOVERY_WATCH`]) for the
    /// service to be fine again if the run broke something and ended by itself, a breach or its
    /// timeout; stops sampling; computes the impact. Call on the run's blocking thread.
    pub fn finish(&self) {
        self.sync_faults();
        let (last_undone, guards) = self.run.update(|r| (last_undone(&breaking(r)), r.guards.clone()));
        let recovered_at = || last_undone.and_then(|u| self.recent.lock().unwrap().recovered_at(&guards, u));
        // Someone waits on a run stopped from outside (a cancel or the kill switch answers when
        // it has ended; shutdown has a drain deadline): those end at once, measured or not.
        let watch = matches!(self.run.stop_reason(), None | Some(StopReason::Breach | StopReason::TimedOut));
        if watch && last_undone.is_some() {
            let deadline = std::time::Instant::now() + RECOVERY_WATCH;
            while std::time::Instant::now() < deadline && recovered_at().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.stop.send_replace(true);
        let recovered = recovered_at();
        self.run.update(|r| r.impact = impact(r, recovered));
    }
}

/// The faults that break something: a load generator is the run's instrument, not a fault, so
/// it counts for neither detection nor recovery.
fn breaking(r: &RunReport) -> Vec<&FaultSpan> {
    r.faults.iter().filter(|f| f.kind != "loadgen").collect()
}

/// When the last of `faults` was undone; none while one is still on.
fn last_undone(faults: &[&FaultSpan]) -> Option<f64> {
    if faults.iter().all(|f| f.undone_s.is_some()) {
        faults.iter().filter_map(|f| f.undone_s).max_by(f64::total_cmp)
    } else {
        None
    }
}

/// The run's impact from its report and when the service was fine again after the last undo;
/// `None` when it applied no fault (load alone breaks nothing on purpose).
fn impact(r: &RunReport, recovered_at: Option<f64>) -> Option<Impact> {
    let faults = breaking(r);
    let first_applied = faults.iter().map(|f| f.applied_s).min_by(f64::total_cmp)?;
    let last_undone = last_undone(&faults);
    let breach = r.breach.as_ref().map(|b| (b.offset_s, "breach"));
    let unhealthy =
        r.series.health.iter().find(|h| h.t >= first_applied && h.state != "healthy").map(|h| (h.t, "unhealthy"));
    let detected = [breach, unhealthy].into_iter().flatten().min_by(|a, b| a.0.total_cmp(&b.0));
    let recovered = last_undone.zip(recovered_at).map(|(u, t)| t - u);
    let requests: u64 = r.series.load.iter().map(|p| p.second.requests).sum();
    let failures: u64 = r.series.load.iter().map(|p| p.second.failures).sum();
    let budget_pct = r.guards.iter().filter_map(|g| g.error_rate_pct).min_by(f64::total_cmp);
    let allowed = budget_pct.map(|p| requests as f64 * p / 100.0).filter(|a| *a > 0.0);
    Some(Impact {
        time_to_detect_s: detected.map(|(t, _)| round_to((t - first_applied).max(0.0), 2)),
        detected_by: detected.map(|(_, by)| by.to_string()),
        time_to_recover_s: recovered.map(|r| round_to(r, 2)),
        requests,
        failures,
        error_rate_pct: if requests > 0 { round_to(failures as f64 * 100.0 / requests as f64, 2) } else { 0.0 },
        error_budget_burned_pct: allowed.map(|a| round_to(failures as f64 * 100.0 / a, 2)),
        unhealthy_s: r.series.health.iter().filter(|h| h.state != "healthy").count() as f64 * guard::SAMPLE_S,
    })
}
