//! A run in progress, shared between its thread and the HTTP handlers: its report, kept within
//! the run's caps, and its event stream (the live feed and the replay for late subscribers).

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::{LogLine, RunLimits, RunReport, Step, StopReason, Truncated};

/// The `'static` name of a known event, for events read back from the store.
pub fn event_name(name: &str) -> Option<&'static str> {
    const NAMES: [&str; 11] = [
        "run_started",
        "step_started",
        "step_finished",
        "log",
        "expect",
        "measurement",
        "undo",
        "run_finished",
        "lagged",
        "truncated",
        "breach",
    ];
    NAMES.iter().find(|n| **n == name).copied()
}

/// One Server-Sent Event: `event:` name and JSON `data:`.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub data: serde_json::Value,
    /// The event's place in the run's stream (1, 2, …, dropped events counted), the SSE `id`
    /// a client resumes from; `None` for notices the stream adds itself (`lagged`).
    pub seq: Option<u64>,
}

/// Events that are replayed whatever the caps: the stream of a late subscriber starts with
/// `run_started` and ends at `run_finished` (`http::runs::events` closes it there).
const ALWAYS_REPLAYED: [&str; 2] = ["run_started", "run_finished"];

/// A run in progress, shared between its thread and the HTTP handlers.
pub struct RunShared {
    pub id: String,
    pub started: Instant,
    /// The caps this run was started with.
    pub limits: RunLimits,
    report: Mutex<Kept>,
    /// Every event kept so far (replayed to late subscribers) and the live feed, under one lock so
    /// a subscriber never misses or doubles an event.
    events: Mutex<Replay>,
    /// Set once from outside (cancel, timeout, kill switch, shutdown); read by the engine's
    /// progress hook and by long calls.
    pub stop: watch::Sender<Option<StopReason>>,
    /// True once the run has ended and its undo is complete.
    pub done: watch::Sender<bool>,
    /// Set by the kill switch or a second stop: `on_rollback` closures are cut short.
    pub abort_rollbacks: watch::Sender<bool>,
    /// The run's trace root; taken (and so closed and exported) when the run ends.
    pub span: Mutex<Option<tracing::Span>>,
}

/// The report and what the caps need to know about it, under one lock.
struct Kept {
    report: RunReport,
    /// Lines and message bytes kept by [`RunShared::log`] (the truncation marker not counted).
    log_lines: usize,
    log_bytes: usize,
    /// Set when the log cap is first reached: every later line is dropped, so the log is a
    /// clean prefix followed by one marker.
    log_cut: bool,
}

/// The replay buffer of the event stream.
struct Replay {
    kept: Vec<Event>,
    /// Serialized size of the data of `kept`.
    bytes: usize,
    /// Events not kept once the buffer was full; from the first one on, only
    /// [`ALWAYS_REPLAYED`] events are kept, so the replay is a prefix of the stream.
    dropped: u64,
    /// Events emitted so far, kept or not: the last `seq` given.
    emitted: u64,
    live: broadcast::Sender<Event>,
}

impl RunShared {
    pub fn new(report: RunReport, limits: RunLimits) -> Self {
        let kept = Kept {
            log_lines: report.logs.len(),
            log_bytes: report.logs.iter().map(|l| l.message.len()).sum(),
            log_cut: false,
            report,
        };
        Self {
            id: kept.report.run_id.clone(),
            started: Instant::now(),
            limits,
            report: Mutex::new(kept),
            events: Mutex::new(Replay {
                kept: Vec::new(),
                bytes: 0,
                dropped: 0,
                emitted: 0,
                live: broadcast::channel(1024).0,
            }),
            stop: watch::channel(None).0,
            done: watch::channel(false).0,
            abort_rollbacks: watch::channel(false).0,
            span: Mutex::new(None),
        }
    }

    pub fn snapshot(&self) -> RunReport {
        self.report.lock().unwrap().report.clone()
    }

    /// Changes the report directly. Log lines, steps and measurements go through [`Self::log`],
    /// [`Self::start_step`] and [`Self::measure`] instead, which apply the caps.
    pub fn update<R>(&self, f: impl FnOnce(&mut RunReport) -> R) -> R {
        f(&mut self.report.lock().unwrap().report)
    }

    /// Adds a line to the log and emits it as a `log` event. Returns false when the line was
    /// dropped: the first line over RUN_MAX_LOG_LINES or RUN_MAX_LOG_BYTES is replaced by one
    /// marker line saying so, and every later line is dropped.
    pub fn log(&self, line: LogLine) -> bool {
        let len = line.message.len();
        let mut k = self.report.lock().unwrap();
        let marker = if k.log_cut {
            None
        } else if k.log_lines < self.limits.max_log_lines && k.log_bytes + len <= self.limits.max_log_bytes {
            k.log_lines += 1;
            k.log_bytes += len;
            let data = json!(line);
            k.report.logs.push(line);
            drop(k);
            self.emit("log", data);
            return true;
        } else {
            k.log_cut = true;
            let (setting, limit) = if k.log_lines >= self.limits.max_log_lines {
                ("RUN_MAX_LOG_LINES", self.limits.max_log_lines)
            } else {
                ("RUN_MAX_LOG_BYTES", self.limits.max_log_bytes)
            };
            let marker = LogLine {
                at: line.at.clone(),
                offset_s: line.offset_s,
                line: line.line,
                message: format!("log truncated: {setting} ({limit}) reached; later lines are dropped"),
            };
            k.report.logs.push(marker.clone());
            Some(marker)
        };
        let t = k.report.truncated.get_or_insert_with(Truncated::default);
        t.logs += 1;
        t.log_bytes += len as u64;
        drop(k);
        if let Some(marker) = marker {
            self.emit("log", json!(marker));
        }
        false
    }

    /// Adds a step to the timeline with the next `seq` and emits `step_started`. `None` when the
    /// timeline is full (RUN_MAX_STEPS): the call still runs, but is not listed.
    pub fn start_step(&self, mut step: Step) -> Option<usize> {
        let mut k = self.report.lock().unwrap();
        if k.report.steps.len() >= self.limits.max_steps {
            let t = k.report.truncated.get_or_insert_with(Truncated::default);
            t.steps += 1;
            let first = t.steps == 1;
            drop(k);
            if first {
                self.note(
                    step.line,
                    format!(
                        "timeline truncated: RUN_MAX_STEPS ({}) reached; later calls run but are not listed",
                        self.limits.max_steps
                    ),
                );
            }
            return None;
        }
        step.seq = k.report.steps.len() + 1;
        let seq = step.seq;
        let data = json!(step);
        k.report.steps.push(step);
        drop(k);
        self.emit("step_started", data);
        Some(seq)
    }

    /// Completes the step `seq` (from [`Self::start_step`]) and emits `step_finished`.
    pub fn finish_step(&self, seq: usize, f: impl FnOnce(&mut Step)) {
        let mut k = self.report.lock().unwrap();
        if seq == 0 || seq > k.report.steps.len() {
            return;
        }
        f(&mut k.report.steps[seq - 1]);
        let data = json!(k.report.steps[seq - 1]);
        drop(k);
        self.emit("step_finished", data);
    }

    /// Stores a measurement and emits a `measurement` event. Returns false when `name` is new and
    /// the run already has RUN_MAX_RECORDS names; overwriting a name is always allowed.
    pub fn measure(&self, name: String, value: Value) -> bool {
        let data = json!({"name": name, "value": value});
        let mut k = self.report.lock().unwrap();
        let m = &k.report.measurements;
        if !m.contains_key(&name) && m.len() >= self.limits.max_records {
            let t = k.report.truncated.get_or_insert_with(Truncated::default);
            t.records += 1;
            let first = t.records == 1;
            drop(k);
            if first {
                self.note(
                    None,
                    format!(
                        "measurements truncated: RUN_MAX_RECORDS ({}) names reached; record() of a new name \
                         is dropped (first dropped: '{name}')",
                        self.limits.max_records
                    ),
                );
            }
            return false;
        }
        k.report.measurements.insert(name, value);
        drop(k);
        self.emit("measurement", data);
        true
    }

    /// A line of the service's own in the run log.
    pub fn note(&self, line: Option<usize>, message: String) {
        self.log(LogLine { at: crate::timestamp(), offset_s: self.offset_s(), line, message });
    }

    /// Broadcasts an event to the live subscribers and keeps it for replay while the replay is
    /// within RUN_MAX_EVENTS and its byte cap. Past that, events are still broadcast but no
    /// longer kept (counted in `truncated.events`; a late subscriber gets a `lagged` event in
    /// their place).
    pub fn emit(&self, name: &'static str, data: Value) {
        let size = json_len(&data);
        let dropped = {
            let mut r = self.events.lock().unwrap();
            r.emitted += 1;
            let event = Event { name, data, seq: Some(r.emitted) };
            let fits = r.dropped == 0
                && r.kept.len() < self.limits.max_events
                && r.bytes.saturating_add(size) <= self.limits.max_event_bytes;
            let keep = fits || ALWAYS_REPLAYED.contains(&name);
            if keep {
                r.bytes += size;
                r.kept.push(event.clone());
            } else {
                r.dropped += 1;
            }
            let _ = r.live.send(event);
            !keep
        };
        if dropped {
            self.update(|r| r.truncated.get_or_insert_with(Truncated::default).events += 1);
        }
    }

    /// Events kept so far, plus a receiver for the ones to come. When the replay was capped, a
    /// `lagged` event stands where the dropped events were.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let r = self.events.lock().unwrap();
        let mut past = r.kept.clone();
        if r.dropped > 0 {
            let gap = Event {
                seq: None,
                name: "lagged",
                data: json!({
                    "missed_events": r.dropped,
                    "reason": format!(
                        "the run's event replay is full (RUN_MAX_EVENTS is {} events, and {} bytes of \
                         them at most): these events were sent live only; read the report for them",
                        self.limits.max_events, self.limits.max_event_bytes
                    ),
                }),
            };
            let at = past.iter().rposition(|e| e.name == "run_finished").unwrap_or(past.len());
            past.insert(at, gap);
        }
        (past, r.live.subscribe())
    }

    pub fn offset_s(&self) -> f64 {
        crate::round_to(self.started.elapsed().as_secs_f64(), 3)
    }

    /// Asks the run to stop; the first reason wins. The kill switch, or any stop of a run that
    /// is already stopping, also cuts its `on_rollback` closures short.
    pub fn request_stop(&self, reason: StopReason) {
        let first = self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(reason);
                true
            } else {
                false
            }
        });
        if !first || reason == StopReason::KillSwitch {
            self.abort_rollbacks.send_replace(true);
        }
    }

    pub fn rollbacks_aborted(&self) -> bool {
        *self.abort_rollbacks.borrow()
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }
}

/// The length of `v` serialized as JSON, without building the string.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

#[cfg(test)]
mod tests {
    use super::super::tests::report;
    use super::*;

    fn line(message: &str) -> LogLine {
        LogLine { at: crate::timestamp(), offset_s: 0.0, line: Some(1), message: message.into() }
    }

    fn step() -> Step {
        Step {
            seq: 0,
            name: "sleep".into(),
            args: "1".into(),
            line: Some(2),
            started_at: crate::timestamp(),
            offset_s: 0.0,
            ended_at: None,
            duration_ms: None,
            outcome: None,
            error: None,
        }
    }

    #[test]
    fn the_log_stops_at_its_cap_with_one_marker() {
        let run = RunShared::new(report(), RunLimits { max_log_lines: 3, ..RunLimits::default() });
        let kept: Vec<bool> = (0..5).map(|i| run.log(line(&format!("line {i}")))).collect();
        assert_eq!(kept, [true, true, true, false, false]);
        let r = run.snapshot();
        assert_eq!(r.logs.len(), 4);
        assert_eq!(r.logs[3].message, "log truncated: RUN_MAX_LOG_LINES (3) reached; later lines are dropped");
        assert_eq!(r.truncated, Some(Truncated { logs: 2, log_bytes: 12, ..Truncated::default() }));

        let run = RunShared::new(report(), RunLimits { max_log_bytes: 10, ..RunLimits::default() });
        assert!(run.log(line("0123456789")));
        assert!(!run.log(line("x")));
        assert!(!run.log(line("y")), "later lines are dropped even if they would fit");
        let r = run.snapshot();
        assert_eq!(r.logs.len(), 2);
        assert!(r.logs[1].message.contains("RUN_MAX_LOG_BYTES (10) reached"), "{}", r.logs[1].message);
    }

    #[test]
    fn steps_and_records_stop_at_their_caps() {
        let run = RunShared::new(report(), RunLimits { max_steps: 2, max_records: 1, ..RunLimits::default() });
        assert_eq!(run.start_step(step()), Some(1));
        assert_eq!(run.start_step(step()), Some(2));
        assert_eq!(run.start_step(step()), None);
        run.finish_step(2, |s| s.outcome = Some("slept".into()));
        assert!(run.measure("a".into(), json!(1)));
        assert!(run.measure("a".into(), json!(2)), "overwriting a name is always allowed");
        assert!(!run.measure("b".into(), json!(3)));
        let r = run.snapshot();
        assert_eq!(r.steps.len(), 2);
        assert_eq!(r.steps[1].outcome.as_deref(), Some("slept"));
        assert_eq!(r.measurements["a"], 2);
        assert!(!r.measurements.contains_key("b"));
        assert_eq!(r.truncated.as_ref().map(|t| (t.steps, t.records)), Some((1, 1)));
        assert_eq!(r.logs.len(), 2, "one note for each cap: {:?}", r.logs);
    }

    #[test]
    fn the_replay_stops_at_its_cap_while_live_subscribers_get_everything() {
        let run = RunShared::new(report(), RunLimits { max_events: 3, ..RunLimits::default() });
        let (_, mut live) = run.subscribe();
        run.emit("run_started", json!({}));
        for i in 0..5 {
            run.emit("log", json!({"message": i}));
        }
        run.emit("run_finished", json!({}));
        let (past, _) = run.subscribe();
        let names: Vec<&str> = past.iter().map(|e| e.name).collect();
        assert_eq!(names, ["run_started", "log", "log", "lagged", "run_finished"]);
        assert_eq!(past[3].data["missed_events"], 3);
        assert_eq!(run.snapshot().truncated.map(|t| t.events), Some(3));
        let mut received = 0;
        while live.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 7);

        let run = RunShared::new(report(), RunLimits { max_event_bytes: 20, ..RunLimits::default() });
        run.emit("log", json!({"a": 1})); // 7 bytes
        run.emit("log", json!({"a": 12})); // 8 bytes
        run.emit("log", json!({"a": 123})); // 9: over 20
        assert_eq!(run.subscribe().0.len(), 3, "two kept and the lagged marker");
        assert_eq!(json_len(&json!({"a": 1})), 7);
    }
}
