//! The Rhai sandbox and the script API.
//!
//! [`sandbox`] builds a hardened engine (operation, depth and size limits, no `eval`, no modules);
//! [`execute`] runs one compiled script on the calling (blocking) thread with the script API
//! registered, then undoes every fault the run applied, in reverse order. Registered functions
//! call into the same `faults` code the built-in endpoints use, through the runtime handle.
//! Cancellation is the progress hook plus long calls watching the run's stop signal.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{AST, Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, NativeCallContext, Position};
use serde_json::{Value, json};

use super::loadgen::{LoadgenConfig, Running, Spec};
use super::report::{Expectation, LogLine, RunShared, RunStatus, ScriptError, Step, StopReason, UndoRecord};
use crate::faults::deploy::{DeployBackend, DeployFault, DeployFaultKind, RecordingDeploy};
use crate::faults::network::{BlockSpec, LatencySpec, NetworkBackend, NetworkFault, RecordingBackend};
use crate::faults::{self, Faults};
use crate::store::Store;

/// Largest script accepted, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Operations a run may execute in all (a runaway loop hits this in well under a second).
pub const MAX_OPERATIONS: u64 = 1_000_000;
/// Nested function calls.
pub const MAX_CALL_LEVELS: usize = 32;
pub const MAX_STRING_SIZE: usize = 64 * 1024;
pub const MAX_ARRAY_SIZE: usize = 10_000;
pub const MAX_MAP_SIZE: usize = 10_000;
/// How long the undo phase (including `on_rollback` closures) may take.
pub const UNDO_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one `http()` call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a run's script can reach: the same faults and Redis handle as the built-in endpoints.
pub struct Deps {
    pub faults: Arc<Faults>,
    pub store: Option<Store>,
    pub network: Arc<dyn NetworkBackend>,
    /// Broken-revision faults; `None` when the service does not know its container app.
    pub deploy: Option<Arc<dyn DeployBackend>>,
    /// The service's own base URL, for `http()`, `health()` and `status()`.
    pub self_url: String,
    pub http: reqwest::Client,
    pub handle: tokio::runtime::Handle,
    /// The `loadgen` binary for `loadgen()` and where its reports go.
    pub loadgen: LoadgenConfig,
}

/// A hardened engine with no script API: used to compile, and as the base of a run's engine.
pub fn sandbox() -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_variables(256)
        .set_max_functions(64)
        .set_max_modules(0)
        .set_strict_variables(true);
    e.disable_symbol("eval");
    e
}

/// Compiles a script, with the size limit; errors carry line and column.
pub fn compile(source: &str) -> Result<AST, ScriptError> {
    if source.len() > MAX_SCRIPT_BYTES {
        return Err(ScriptError {
            message: format!("script is {} bytes; the limit is {MAX_SCRIPT_BYTES} bytes", source.len()),
            line: None,
            column: None,
        });
    }
    sandbox().compile(source).map_err(|e| ScriptError {
        message: e.err_type().to_string(),
        line: e.position().line(),
        column: e.position().position(),
    })
}

/// Names of every function the script API registers (for `chaos-lab check`).
pub const API_FUNCTIONS: &[&str] = &[
    "sleep",
    "log",
    "param",
    "record",
    "now",
    "load",
    "load_stop",
    "hang",
    "hang_stop",
    "redis_reset",
    "network_block",
    "network_clear",
    "network_latency",
    "network_reset_peers",
    "deploy_fault",
    "http",
    "health",
    "status",
    "wait_until",
    "expect",
    "on_rollback",
    "loadgen",
    "loadgen_start",
    "loadgen_wait",
    "loadgen_stop",
];

/// One fault to undo when the run ends.
enum Undo {
    StopLoad(u64),
    StopHang(u64),
    ClearNetwork(String),
    StopLoadgen(String),
    RestoreRevision(DeployFault),
    Rollback(FnPtr),
}

impl Undo {
    fn describe(&self) -> String {
        match self {
            Self::StopLoad(_) => "stop the load".into(),
            Self::StopHang(_) => "end the hang".into(),
            Self::ClearNetwork(id) => format!("clear network fault {id}"),
            Self::StopLoadgen(id) => format!("stop {id}"),
            Self::RestoreRevision(f) => {
                format!("restore revision {} (undo {})", f.previous.as_deref().unwrap_or("?"), f.revision)
            }
            Self::Rollback(f) => format!("on_rollback closure {}", f.fn_name()),
        }
    }
}

/// Per-run state shared by every registered function.
struct Ctx {
    run: Arc<RunShared>,
    deps: Arc<Deps>,
    dry_run: bool,
    params: serde_json::Map<String, Value>,
    /// Faults to undo, in the order applied.
    undo: Mutex<Vec<Undo>>,
    /// >0 inside `wait_until`: polled calls do not add steps to the timeline.
    quiet: AtomicUsize,
    undoing: AtomicBool,
    dry_network: RecordingBackend,
    /// Load generators started by this run, by id (`loadgen-1`, ...).
    loadgens: Mutex<Vec<(String, Arc<Running>)>>,
    dry_deploy: RecordingDeploy,
}

type Fallible<T> = Result<T, Box<EvalAltResult>>;

impl Ctx {
    fn network(&self) -> &dyn NetworkBackend {
        if self.dry_run { &self.dry_network } else { self.deps.network.as_ref() }
    }

    fn deploy(&self) -> Result<&dyn DeployBackend, String> {
        if self.dry_run {
            return Ok(&self.dry_deploy);
        }
        self.deps.deploy.as_deref().ok_or_else(|| {
            "deploy faults need the container app: set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and \
             SERVICE_APP_NAME (Container Apps sets CONTAINER_APP_NAME itself)"
                .to_string()
        })
    }

    fn stopped(&self) -> Option<StopReason> {
        if self.undoing.load(Ordering::Relaxed) { None } else { self.run.stop_reason() }
    }

    /// Runs `fut` on the runtime, giving up when the run is stopped (except while undoing).
    fn block<F: Future>(&self, fut: F) -> Result<F::Output, String> {
        if self.undoing.load(Ordering::Relaxed) {
            return Ok(self.deps.handle.block_on(fut));
        }
        let mut stop = self.run.stop.subscribe();
        self.deps.handle.block_on(async move {
            tokio::select! {
                r = fut => Ok(r),
                _ = stop.wait_for(Option::is_some) => Err("the run was stopped".to_string()),
            }
        })
    }

    fn sleep(&self, d: Duration) -> Result<(), String> {
        self.block(tokio::time::sleep(d))
    }

    /// Records a timed step around `f`. `f` returns the value and a short outcome for people.
    fn step<T>(
        &self,
        name: &str,
        args: String,
        pos: Position,
        f: impl FnOnce() -> Result<(T, String), String>,
    ) -> Fallible<T> {
        if let Some(reason) = self.stopped() {
            return Err(EvalAltResult::ErrorTerminated(reason.describe().into(), pos).into());
        }
        let quiet = self.quiet.load(Ordering::Relaxed) > 0;
        let seq = if quiet {
            None
        } else {
            let step = Step {
                seq: 0,
                name: name.to_string(),
                args,
                line: pos.line(),
                started_at: crate::timestamp(),
                offset_s: self.run.offset_s(),
                ended_at: None,
                duration_ms: None,
                outcome: None,
                error: None,
            };
            let (seq, step) = self.run.update(|r| {
                let mut step = step;
                step.seq = r.steps.len() + 1;
                r.steps.push(step.clone());
                (step.seq, step)
            });
            self.run.emit("step_started", json!(step));
            Some(seq)
        };
        let span = if quiet {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "chaos.step",
                otel.name = %name,
                step = %name,
                line = pos.line().unwrap_or(0),
                outcome = tracing::field::Empty,
                error = tracing::field::Empty,
                fault.target = tracing::field::Empty,
            )
        };
        let started = Instant::now();
        let result = span.in_scope(f);
        match &result {
            Ok((_, o)) => span.record("outcome", o.as_str()),
            Err(e) => span.record("error", e.as_str()),
        };
        if let Some(seq) = seq {
            let (outcome, error) = match &result {
                Ok((_, o)) => (Some(o.clone()), None),
                Err(e) => (None, Some(e.clone())),
            };
            let step = self.run.update(|r| {
                let s = &mut r.steps[seq - 1];
                s.ended_at = Some(crate::timestamp());
                s.duration_ms = Some((started.elapsed().as_secs_f64() * 1e6).round() / 1e3);
                s.outcome = outcome;
                s.error = error;
                s.clone()
            });
            self.run.emit("step_finished", json!(step));
        }
        match result {
            Ok((v, _)) => Ok(v),
            Err(e) => match self.stopped() {
                Some(reason) => Err(EvalAltResult::ErrorTerminated(reason.describe().into(), pos).into()),
                None => Err(EvalAltResult::ErrorRuntime(format!("{name}: {e}").into(), pos).into()),
            },
        }
    }

    fn log(&self, message: String, pos: Position) {
        let line = LogLine { at: crate::timestamp(), offset_s: self.run.offset_s(), line: pos.line(), message };
        tracing::info!(run_id = %self.run.id, line = ?line.line, "{}", line.message);
        self.run.emit("log", json!(line));
        self.run.update(|r| r.logs.push(line));
    }

    /// Applies a network fault (inside the current step), tags the step span with its target,
    /// and schedules its undo.
    fn apply_network<F>(&self, apply: F) -> Result<NetworkFault, String>
    where
        F: Future<Output = Result<NetworkFault, crate::faults::FaultError>>,
    {
        let fault = self.block(apply)?.map_err(|e| e.to_string())?;
        tracing::Span::current().record("fault.target", fault.target.as_str());
        self.push_undo(Undo::ClearNetwork(fault.id.clone()));
        Ok(fault)
    }

    /// Starts `loadgen` for this run; its progress goes to the timeline every 5 s.
    fn start_loadgen(self: &Arc<Self>, opts: &Map, pos: Position) -> Result<(String, Arc<Running>), String> {
        let spec = Spec::from_map(opts, &self.deps.self_url)?;
        let id = format!("loadgen-{}", self.loadgens.lock().unwrap().len() + 1);
        let c = self.clone();
        let tag = id.clone();
        let running = {
            let _rt = self.deps.handle.enter();
            Running::start(&self.deps.loadgen, &spec, &format!("{}-{id}", self.run.id), move |p: &Value| {
                let elapsed = p["elapsed_s"].as_f64().unwrap_or(0.0);
                if (elapsed.round() as u64).is_multiple_of(5) {
                    c.log(
                        format!(
                            "{tag}: {elapsed:.0} s, {} users, {} requests, {} failed, {} rps",
                            p["users"], p["requests"], p["failures"], p["rps"]
                        ),
                        pos,
                    );
                }
            })?
        };
        let running = Arc::new(running);
        self.loadgens.lock().unwrap().push((id.clone(), running.clone()));
        self.push_undo(Undo::StopLoadgen(id.clone()));
        Ok((id, running))
    }

    fn loadgen(&self, id: &str) -> Result<Arc<Running>, String> {
        let all = self.loadgens.lock().unwrap();
        let found = all.iter().find(|(i, _)| i == id).map(|(_, r)| r.clone());
        found.ok_or_else(|| {
            let known: Vec<&str> = all.iter().map(|(i, _)| i.as_str()).collect();
            format!(
                "no load generator '{id}' in this run (started: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )
        })
    }

    /// Waits for a load generator (stopping it first when `stop`), as a script map.
    fn finish_loadgen(&self, id: &str, running: &Running, stop: bool) -> Result<(Map, String), String> {
        if stop {
            running.stop();
        }
        let summary = self.block(running.wait())??;
        let target = id.to_string();
        self.forget_undo(|u| matches!(u, Undo::StopLoadgen(i) if *i == target));
        let outcome = format!(
            "{} requests, {} failed, {} rps, p95 {} ms",
            summary["requests"], summary["failures"], summary["rps"], summary["p95_ms"]
        );
        let map = rhai::serde::to_dynamic(&summary).map_err(|e| e.to_string())?.cast::<Map>();
        Ok((map, outcome))
    }

    fn push_undo(&self, u: Undo) {
        self.undo.lock().unwrap().push(u);
    }

    /// Drops pending undos the script performed itself.
    fn forget_undo(&self, matches: impl Fn(&Undo) -> bool) {
        self.undo.lock().unwrap().retain(|u| !matches(u));
    }

    fn http(&self, method: &str, path: &str, body: Option<Dynamic>) -> Result<Map, String> {
        let method: reqwest::Method =
            method.to_ascii_uppercase().parse().map_err(|_| format!("'{method}' is not an HTTP method"))?;
        if !path.starts_with('/') {
            return Err(format!("path must start with '/', got '{path}' (http() only reaches this service)"));
        }
        let mut out = Map::new();
        if self.dry_run && method != reqwest::Method::GET {
            out.insert("status".into(), Dynamic::from_int(0));
            out.insert("ok".into(), Dynamic::TRUE);
            out.insert("dry_run".into(), Dynamic::TRUE);
            out.insert("body".into(), Dynamic::UNIT);
            out.insert("latency_ms".into(), Dynamic::from_float(0.0));
            return Ok(out);
        }
        let mut req = self.deps.http.request(method, format!("{}{path}", self.deps.self_url)).timeout(HTTP_TIMEOUT);
        match body {
            Some(b) if b.is_string() => {
                req = req.header("content-type", "text/plain").body(b.into_string().unwrap_or_default())
            }
            Some(b) if !b.is_unit() => {
                let v: Value =
                    rhai::serde::from_dynamic(&b).map_err(|e| format!("body cannot be sent as JSON: {e}"))?;
                req = req.json(&v);
            }
            _ => {}
        }
        let started = Instant::now();
        let sent = self.block(async move {
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    Ok((status, text))
                }
                Err(e) => Err(e),
            }
        })?;
        let latency = started.elapsed().as_secs_f64() * 1000.0;
        let (status, body) = match sent {
            Ok((status, text)) => {
                let body = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| rhai::serde::to_dynamic(v).ok())
                    .unwrap_or_else(|| Dynamic::from(text));
                (status, body)
            }
            Err(e) => (0, Dynamic::from(if e.is_timeout() { "request timed out".to_string() } else { e.to_string() })),
        };
        out.insert("status".into(), Dynamic::from_int(i64::from(status)));
        out.insert("ok".into(), Dynamic::from_bool((200..300).contains(&status)));
        out.insert("body".into(), body);
        out.insert("latency_ms".into(), Dynamic::from_float((latency * 100.0).round() / 100.0));
        Ok(out)
    }
}

/// What `loadgen()` returns in a dry run: the options are checked, nothing is started.
fn dry_loadgen(opts: &Map, host: &str) -> Result<Map, String> {
    Spec::from_map(opts, host)?;
    let mut m = Map::new();
    for k in ["requests", "failures"] {
        m.insert(k.into(), Dynamic::from_int(0));
    }
    for k in ["rps", "p50_ms", "p95_ms", "p99_ms"] {
        m.insert(k.into(), Dynamic::from_float(0.0));
    }
    m.insert("dry_run".into(), Dynamic::TRUE);
    Ok(m)
}

fn describe_http(m: &Map) -> String {
    let status = m.get("status").and_then(|s| s.as_int().ok()).unwrap_or(0);
    let ms = m.get("latency_ms").and_then(|s| s.as_float().ok()).unwrap_or(0.0);
    format!("{status} in {ms:.1} ms")
}

/// A number of seconds from a script value (int or float, not negative).
fn seconds(what: &str, v: &Dynamic) -> Result<Duration, String> {
    let s = v
        .as_float()
        .ok()
        .or_else(|| v.as_int().ok().map(|i| i as f64))
        .ok_or_else(|| format!("{what} must be a number of seconds, got {}", v.type_name()))?;
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        return Err(format!("{what} must be between 0 and 86400 seconds, got {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn int_arg(what: &str, v: &Dynamic) -> Result<i64, String> {
    v.as_int()
        .ok()
        .or_else(|| v.as_float().ok().map(|f| f.round() as i64))
        .ok_or_else(|| format!("{what} must be a number, got {}", v.type_name()))
}

/// Turns the run's parameter into the type of the script's default (CLI params arrive as strings).
fn coerce_param(name: &str, given: &Value, default: &Dynamic) -> Result<Dynamic, String> {
    let text = given.as_str().map(str::to_string).unwrap_or_else(|| given.to_string());
    let bad =
        |want: &str| format!("parameter '{name}' must be {want} (the script's default is {default}), got {given}");
    if default.is_int() {
        // A fractional number where the default is whole is still a number: keep it as given.
        given
            .as_i64()
            .or_else(|| text.trim().parse().ok())
            .map(Dynamic::from_int)
            .or_else(|| given.as_f64().or_else(|| text.trim().parse().ok()).map(Dynamic::from_float))
            .ok_or_else(|| bad("a number"))
    } else if default.is_float() {
        given.as_f64().or_else(|| text.trim().parse().ok()).map(Dynamic::from_float).ok_or_else(|| bad("a number"))
    } else if default.is_bool() {
        given.as_bool().or_else(|| text.trim().parse().ok()).map(Dynamic::from_bool).ok_or_else(|| bad("true or false"))
    } else if default.is_string() {
        Ok(Dynamic::from(text))
    } else {
        rhai::serde::to_dynamic(given).map_err(|e| bad(&e.to_string()))
    }
}

/// Builds the run's engine: the sandbox plus the script API bound to `ctx`.
fn build(ctx: &Arc<Ctx>) -> Engine {
    let mut e = sandbox();
    let c = ctx.clone();
    e.on_progress(move |ops| {
        if ops % 128 != 0 {
            return None;
        }
        c.stopped().map(|r| Dynamic::from(r.describe()))
    });
    let c = ctx.clone();
    e.on_print(move |s| c.log(s.to_string(), Position::NONE));

    // Rhai's standard library has its own blocking `sleep(INT/FLOAT)`, found before a `Dynamic`
    // overload: register the exact types so ours (cancellable, a timeline step) wins.
    let sleep = |c: Arc<Ctx>| {
        move |nc: NativeCallContext, s: Dynamic| -> Fallible<()> {
            c.step("sleep", format!("{s}"), nc.call_position(), || {
                let d = seconds("sleep(seconds)", &s)?;
                c.sleep(d)?;
                Ok(((), format!("slept {:.3} s", d.as_secs_f64())))
            })
        }
    };
    let f = sleep(ctx.clone());
    e.register_fn("sleep", move |nc: NativeCallContext, s: i64| f(nc, Dynamic::from_int(s)));
    let f = sleep(ctx.clone());
    e.register_fn("sleep", move |nc: NativeCallContext, s: f64| f(nc, Dynamic::from_float(s)));
    e.register_fn("sleep", sleep(ctx.clone()));
    // `log(FLOAT)` is a logarithm in Rhai's math package; ours logs every type, exact types first.
    let log = |c: Arc<Ctx>| move |nc: NativeCallContext, msg: Dynamic| c.log(msg.to_string(), nc.call_position());
    let f = log(ctx.clone());
    e.register_fn("log", move |nc: NativeCallContext, m: f64| f(nc, Dynamic::from_float(m)));
    let f = log(ctx.clone());
    e.register_fn("log", move |nc: NativeCallContext, m: i64| f(nc, Dynamic::from_int(m)));
    e.register_fn("log", log(ctx.clone()));
    let c = ctx.clone();
    e.register_fn("param", move |name: ImmutableString, default: Dynamic| -> Fallible<Dynamic> {
        match c.params.get(name.as_str()) {
            None => Ok(default),
            Some(v) => coerce_param(&name, v, &default).map_err(Into::into),
        }
    });
    let c = ctx.clone();
    e.register_fn("record", move |name: ImmutableString, value: Dynamic| -> Fallible<()> {
        let v: Value = rhai::serde::from_dynamic(&value)?;
        c.run.emit("measurement", json!({"name": name.as_str(), "value": v}));
        c.run.update(|r| r.measurements.insert(name.to_string(), v));
        Ok(())
    });
    let c = ctx.clone();
    e.register_fn("now", move || c.run.started.elapsed().as_secs_f64());

    // --- load ---
    let c = ctx.clone();
    e.register_fn("load", move |nc: NativeCallContext, level: ImmutableString, s: Dynamic| -> Fallible<()> {
        c.step("load", format!("{level}, {s}"), nc.call_position(), || {
            let secs = int_arg("load(level, seconds): seconds", &s)?;
            if c.dry_run {
                faults::load::LoadLevel::parse(&level).map_err(|e| e.to_string())?;
                return Ok(((), "dry run: not applied".into()));
            }
            let started = c.deps.faults.start_load(&level, secs).map_err(|e| e.to_string())?;
            c.push_undo(Undo::StopLoad(started.id));
            Ok(((), format!("{level} load for {secs} s")))
        })
    });
    let c = ctx.clone();
    e.register_fn("load_stop", move |nc: NativeCallContext| -> Fallible<()> {
        c.step("load_stop", String::new(), nc.call_position(), || {
            if !c.dry_run {
                c.block(c.deps.faults.load.stop())?;
            }
            c.forget_undo(|u| matches!(u, Undo::StopLoad(_)));
            Ok(((), "load stopped".into()))
        })
    });

    // --- hang ---
    let hang = |c: Arc<Ctx>| {
        move |nc: NativeCallContext, s: Dynamic, scope: ImmutableString| -> Fallible<()> {
            c.step("hang", format!("{s}, {scope}"), nc.call_position(), || {
                let secs = int_arg("hang(seconds): seconds", &s)?;
                if c.dry_run {
                    return Ok(((), "dry run: not applied".into()));
                }
                let ticket = c.deps.faults.start_hang(secs, &scope).map_err(|e| e.to_string())?;
                if ticket.scope == faults::hang::HangScope::Request {
                    // The "caller" of a request-scope hang is the script itself.
                    let (_, took) = c.block(ticket.wait())?;
                    return Ok(((), format!("script stalled {:.1} s", took.as_secs_f64())));
                }
                c.push_undo(Undo::StopHang(ticket.id()));
                Ok(((), if secs == 0 { "app hang until undone".into() } else { format!("app hang for {secs} s") }))
            })
        }
    };
    e.register_fn("hang", hang(ctx.clone()));
    let h = hang(ctx.clone());
    e.register_fn("hang", move |nc: NativeCallContext, s: Dynamic| h(nc, s, "app".into()));
    let c = ctx.clone();
    e.register_fn("hang_stop", move |nc: NativeCallContext| -> Fallible<()> {
        c.step("hang_stop", String::new(), nc.call_position(), || {
            if !c.dry_run {
                c.deps.faults.hang.stop();
            }
            c.forget_undo(|u| matches!(u, Undo::StopHang(_)));
            Ok(((), "hang ended".into()))
        })
    });

    // --- redis ---
    let c = ctx.clone();
    e.register_fn("redis_reset", move |nc: NativeCallContext| -> Fallible<i64> {
        c.step("redis_reset", String::new(), nc.call_position(), || {
            if c.dry_run {
                return Ok((0, "dry run: not applied".into()));
            }
            let report = c.block(faults::redis_reset(c.deps.store.as_ref(), true))?.map_err(|e| e.to_string())?;
            Ok((report.connections_closed as i64, format!("{} connections closed", report.connections_closed)))
        })
    });

    // --- network ---
    let block = |c: Arc<Ctx>| {
        move |nc: NativeCallContext, opts: Map| -> Fallible<ImmutableString> {
            let args = format!("{opts:?}");
            c.step("network_block", args, nc.call_position(), || {
                let mut spec = BlockSpec { run_id: Some(c.run.id.clone()), ..BlockSpec::default() };
                for (k, v) in &opts {
                    match k.as_str() {
                        "port" => {
                            spec.port = Some(u16::try_from(int_arg("port", v)?).map_err(|_| "port must be 1-65535")?)
                        }
                        "seconds" => spec.duration = Some(seconds("seconds", v)?).filter(|d| !d.is_zero()),
                        "cut_existing" => {
                            spec.cut_existing = v.as_bool().map_err(|_| "cut_existing must be true or false")?
                        }
                        other => return Err(format!("unknown option '{other}'; use port, seconds, cut_existing")),
                    }
                }
                let fault = c.apply_network(c.network().block(spec))?;
                Ok((fault.id.clone().into(), format!("{} blocked ({})", fault.target, fault.id)))
            })
        }
    };
    e.register_fn("network_block", block(ctx.clone()));
    let b = block(ctx.clone());
    e.register_fn("network_block", move |nc: NativeCallContext| b(nc, Map::new()));

    let latency = |c: Arc<Ctx>| {
        move |nc: NativeCallContext, ms: Dynamic, s: Dynamic| -> Fallible<ImmutableString> {
            c.step("network_latency", format!("{ms} ms, {s}"), nc.call_position(), || {
                let ms = int_arg("network_latency(ms): ms", &ms)?;
                let ms = u64::try_from(ms).map_err(|_| "ms must not be negative")?;
                let duration = if s.is_unit() { None } else { Some(seconds("seconds", &s)?).filter(|d| !d.is_zero()) };
                let spec = LatencySpec { latency: Duration::from_millis(ms), duration, run_id: Some(c.run.id.clone()) };
                let fault = c.apply_network(c.network().latency(spec))?;
                Ok((fault.id.clone().into(), format!("+{ms} ms on {} ({})", fault.target, fault.id)))
            })
        }
    };
    e.register_fn("network_latency", latency(ctx.clone()));
    let l = latency(ctx.clone());
    e.register_fn("network_latency", move |nc: NativeCallContext, ms: Dynamic| l(nc, ms, Dynamic::UNIT));

    let c = ctx.clone();
    e.register_fn("network_clear", move |nc: NativeCallContext| -> Fallible<i64> {
        c.step("network_clear", String::new(), nc.call_position(), || {
            let ids: Vec<String> = c
                .undo
                .lock()
                .unwrap()
                .iter()
                .filter_map(|u| if let Undo::ClearNetwork(id) = u { Some(id.clone()) } else { None })
                .collect();
            let mut cleared = 0;
            for id in &ids {
                if c.block(c.network().clear(id))?.map_err(|e| e.to_string())? {
                    cleared += 1;
                }
            }
            c.forget_undo(|u| matches!(u, Undo::ClearNetwork(_)));
            Ok((cleared, format!("{cleared} network fault(s) cleared")))
        })
    });
    let c = ctx.clone();
    e.register_fn("network_clear", move |nc: NativeCallContext, id: ImmutableString| -> Fallible<bool> {
        c.step("network_clear", id.to_string(), nc.call_position(), || {
            let cleared = c.block(c.network().clear(&id))?.map_err(|e| e.to_string())?;
            c.forget_undo(|u| matches!(u, Undo::ClearNetwork(x) if x == id.as_str()));
            Ok((cleared, if cleared { format!("{id} cleared") } else { format!("{id} was already gone") }))
        })
    });
    let c = ctx.clone();
    e.register_fn("network_reset_peers", move |nc: NativeCallContext| -> Fallible<i64> {
        c.step("network_reset_peers", String::new(), nc.call_position(), || {
            let n = c.block(c.network().reset_peers())?.map_err(|e| e.to_string())?;
            Ok((n as i64, format!("{n} connection(s) reset")))
        })
    });

    // --- deployment ---
    let c = ctx.clone();
    e.register_fn("deploy_fault", move |nc: NativeCallContext, kind: ImmutableString| -> Fallible<ImmutableString> {
        c.step("deploy_fault", kind.to_string(), nc.call_position(), || {
            let kind = DeployFaultKind::parse(&kind).map_err(|e| e.to_string())?;
            let deploy = c.deploy()?;
            let fault = c.block(deploy.inject(kind))?.map_err(|e| e.to_string())?;
            tracing::Span::current().record("fault.target", fault.app.as_str());
            let outcome = format!("revision {} created ({})", fault.revision, kind.as_str());
            let name = fault.revision.clone();
            c.push_undo(Undo::RestoreRevision(fault));
            Ok((name.into(), outcome))
        })
    });

    // --- probes ---
    let c = ctx.clone();
    e.register_fn(
        "http",
        move |nc: NativeCallContext, method: ImmutableString, path: ImmutableString| -> Fallible<Map> {
            c.step("http", format!("{method} {path}"), nc.call_position(), || {
                c.http(&method, &path, None).map(|m| {
                    let d = describe_http(&m);
                    (m, d)
                })
            })
        },
    );
    let c = ctx.clone();
    e.register_fn(
        "http",
        move |nc: NativeCallContext, method: ImmutableString, path: ImmutableString, body: Dynamic| -> Fallible<Map> {
            c.step("http", format!("{method} {path}"), nc.call_position(), || {
                c.http(&method, &path, Some(body)).map(|m| {
                    let d = describe_http(&m);
                    (m, d)
                })
            })
        },
    );
    let c = ctx.clone();
    e.register_fn("health", move |nc: NativeCallContext| -> Fallible<Map> {
        c.step("health", String::new(), nc.call_position(), || {
            c.http("GET", "/health", None).map(|m| {
                let d = describe_http(&m);
                (m, d)
            })
        })
    });
    let c = ctx.clone();
    e.register_fn("status", move |nc: NativeCallContext| -> Fallible<Dynamic> {
        c.step("status", String::new(), nc.call_position(), || {
            let m = c.http("GET", "/chaos/status", None)?;
            let d = describe_http(&m);
            Ok((m.get("body").cloned().unwrap_or(Dynamic::UNIT), d))
        })
    });
    let c = ctx.clone();
    e.register_fn("wait_until", move |nc: NativeCallContext, cond: FnPtr, timeout: Dynamic| -> Fallible<Map> {
        let pos = nc.call_position();
        let limit = seconds("wait_until(condition, timeout_s): timeout_s", &timeout)
            .map_err(|e| Box::new(EvalAltResult::ErrorRuntime(e.into(), pos)))?;
        c.step("wait_until", format!("{} within {:.1} s", cond.fn_name(), limit.as_secs_f64()), pos, || {
            let started = Instant::now();
            c.quiet.fetch_add(1, Ordering::Relaxed);
            let outcome = loop {
                let met = match cond.call_within_context::<bool>(&nc, ()) {
                    Ok(b) => b,
                    Err(e) => break Err(format!("the condition failed: {e}")),
                };
                if met || started.elapsed() >= limit {
                    break Ok(met);
                }
                if let Err(e) = c.sleep(Duration::from_millis(100).min(limit.saturating_sub(started.elapsed()))) {
                    break Err(e);
                }
            };
            c.quiet.fetch_sub(1, Ordering::Relaxed);
            let met = outcome?;
            let secs = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
            let mut m = Map::new();
            m.insert("met".into(), Dynamic::from_bool(met));
            m.insert("seconds".into(), Dynamic::from_float(secs));
            Ok((m, if met { format!("met after {secs:.3} s") } else { format!("not met within {secs:.3} s") }))
        })
    });
    let c = ctx.clone();
    e.register_fn("expect", move |nc: NativeCallContext, ok: bool, msg: ImmutableString| {
        let x = Expectation { ok, message: msg.to_string(), line: nc.call_position().line(), at: crate::timestamp() };
        c.run.emit("expect", json!(x));
        c.run.update(|r| r.expectations.push(x));
    });
    let loadgen = |c: Arc<Ctx>| {
        move |nc: NativeCallContext, opts: Map| -> Fallible<Map> {
            c.step("loadgen", format!("{opts:?}"), nc.call_position(), || {
                if c.dry_run {
                    return Ok((dry_loadgen(&opts, &c.deps.self_url)?, "dry run: not started".into()));
                }
                let (id, running) = c.start_loadgen(&opts, nc.call_position())?;
                c.finish_loadgen(&id, &running, false)
            })
        }
    };
    e.register_fn("loadgen", loadgen(ctx.clone()));
    let f = loadgen(ctx.clone());
    e.register_fn("loadgen", move |nc: NativeCallContext| f(nc, Map::new()));
    let c = ctx.clone();
    e.register_fn("loadgen_start", move |nc: NativeCallContext, opts: Map| -> Fallible<ImmutableString> {
        c.step("loadgen_start", format!("{opts:?}"), nc.call_position(), || {
            if c.dry_run {
                dry_loadgen(&opts, &c.deps.self_url)?;
                return Ok(("loadgen-dry".into(), "dry run: not started".into()));
            }
            let (id, _) = c.start_loadgen(&opts, nc.call_position())?;
            Ok((id.clone().into(), format!("started {id}")))
        })
    });
    for (name, stop) in [("loadgen_wait", false), ("loadgen_stop", true)] {
        let c = ctx.clone();
        e.register_fn(name, move |nc: NativeCallContext, id: ImmutableString| -> Fallible<Map> {
            c.step(name, id.to_string(), nc.call_position(), || {
                if c.dry_run {
                    return Ok((dry_loadgen(&Map::new(), &c.deps.self_url)?, "dry run".into()));
                }
                let running = c.loadgen(&id)?;
                c.finish_loadgen(&id, &running, stop)
            })
        });
    }
    let c = ctx.clone();
    e.register_fn("on_rollback", move |nc: NativeCallContext, f: FnPtr| {
        c.log(format!("registered rollback {}", f.fn_name()), nc.call_position());
        c.push_undo(Undo::Rollback(f));
    });
    e
}

/// Runs `ast` to the end (or until stopped), then undoes what it applied and fills in the final
/// status. Call on a blocking thread.
pub fn execute(run: Arc<RunShared>, deps: Arc<Deps>, ast: AST, params: serde_json::Map<String, Value>, dry_run: bool) {
    let ctx = Arc::new(Ctx {
        run: run.clone(),
        deps: deps.clone(),
        dry_run,
        params,
        undo: Mutex::new(Vec::new()),
        quiet: AtomicUsize::new(0),
        undoing: AtomicBool::new(false),
        dry_network: RecordingBackend::default(),
        loadgens: Mutex::new(Vec::new()),
        dry_deploy: RecordingDeploy::default(),
    });
    let run_span = run.span.lock().unwrap().clone().unwrap_or_else(tracing::Span::none);
    let _in_run = run_span.enter(); // every log line of the run carries its run id
    let engine = build(&ctx);
    // A panic in a script function must not skip the undo below.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.eval_ast::<Dynamic>(&ast)))
        .unwrap_or_else(|_| {
            Err(EvalAltResult::ErrorRuntime("internal error: a script function panicked".into(), Position::NONE).into())
        });

    // Undo, newest first, whatever happened above.
    ctx.undoing.store(true, Ordering::SeqCst);
    let undo_deadline = Instant::now() + UNDO_TIMEOUT;
    let pending: Vec<Undo> = std::mem::take(&mut *ctx.undo.lock().unwrap());
    for u in pending.into_iter().rev() {
        let action = u.describe();
        let span = tracing::info_span!(
            "chaos.undo",
            otel.name = %format!("undo: {action}"),
            action = %action,
            ok = tracing::field::Empty,
            detail = tracing::field::Empty,
        );
        let (ok, detail) = span.in_scope(|| {
            if Instant::now() > undo_deadline {
                (false, format!("skipped: the undo phase exceeded {} s", UNDO_TIMEOUT.as_secs()))
            } else {
                perform_undo(&ctx, &engine, &ast, u, undo_deadline)
            }
        });
        span.record("ok", ok);
        span.record("detail", detail.as_str());
        if ok {
            tracing::info!(run_id = %run.id, %action, %detail, "undo");
        } else {
            tracing::error!(run_id = %run.id, %action, %detail, "undo failed");
        }
        let rec = UndoRecord { action, ok, detail, at: crate::timestamp() };
        run.emit("undo", json!(rec));
        run.update(|r| r.undo.push(rec));
    }

    let stop = run.stop_reason();
    run.update(|r| {
        let failed_expectations: Vec<&str> =
            r.expectations.iter().filter(|x| !x.ok).map(|x| x.message.as_str()).collect();
        let (status, reason) = match (&outcome, stop) {
            (_, Some(reason)) => (reason.status(), reason.describe().to_string()),
            (Err(e), None) => {
                r.error = Some(script_error(e));
                (RunStatus::Failed, "the script stopped with an error".to_string())
            }
            (Ok(_), None) if !failed_expectations.is_empty() => {
                let mut s = format!("{} expectation(s) failed:", failed_expectations.len());
                for m in &failed_expectations {
                    let _ = write!(s, " {m};");
                }
                (RunStatus::Failed, s.trim_end_matches(';').to_string())
            }
            (Ok(_), None) => (RunStatus::Succeeded, "the script finished and every expectation held".to_string()),
        };
        if let Ok(v) = &outcome
            && !v.is_unit()
        {
            r.result = rhai::serde::from_dynamic::<Value>(v).ok();
        }
        if r.undo.iter().any(|u| !u.ok) && status == RunStatus::Succeeded {
            r.status = RunStatus::Failed;
            r.reason = Some("an undo failed; check the undo list".into());
        } else {
            r.status = status;
            r.reason = Some(reason);
        }
        r.verdict = Some(if r.status == RunStatus::Succeeded { "pass" } else { "fail" }.to_string());
        r.ended_at = Some(crate::timestamp());
        r.duration_s = Some(run.offset_s());
    });
}

fn perform_undo(ctx: &Ctx, engine: &Engine, ast: &AST, u: Undo, deadline: Instant) -> (bool, String) {
    let faults = &ctx.deps.faults;
    match u {
        Undo::StopLoad(id) => {
            if ctx.deps.handle.block_on(faults.load.stop_if(id)) {
                (true, "load stopped".into())
            } else {
                (true, "load had already ended".into())
            }
        }
        Undo::StopHang(id) => {
            if faults.hang.stop_if(id) {
                (true, "hang ended".into())
            } else {
                (true, "hang had already ended".into())
            }
        }
        Undo::ClearNetwork(id) => {
            let left = deadline.saturating_duration_since(Instant::now());
            match ctx.deps.handle.block_on(tokio::time::timeout(left, ctx.network().clear(&id))) {
                Ok(Ok(true)) => (true, "cleared".into()),
                Ok(Ok(false)) => (true, "had already expired or been cleared".into()),
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (false, "timed out".into()),
            }
        }
        Undo::StopLoadgen(id) => match ctx.loadgen(&id) {
            Ok(running) => {
                running.stop();
                let left = deadline.saturating_duration_since(Instant::now());
                match ctx.deps.handle.block_on(tokio::time::timeout(left, running.wait())) {
                    Ok(Ok(s)) => (true, format!("stopped after {} requests", s["requests"])),
                    Ok(Err(e)) => (true, format!("stopped ({e})")),
                    Err(_) => (false, "timed out".into()),
                }
            }
            Err(e) => (false, e),
        },
        Undo::RestoreRevision(fault) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let undo = async {
                match ctx.deploy() {
                    Ok(d) => d.undo(&fault).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                }
            };
            match ctx.deps.handle.block_on(tokio::time::timeout(left, undo)) {
                Ok(Ok(detail)) => (true, detail),
                Ok(Err(e)) => (false, e),
                Err(_) => (false, "timed out".into()),
            }
        }
        Undo::Rollback(f) => match f.call::<Dynamic>(engine, ast, ()) {
            Ok(_) => (true, "ran".into()),
            Err(e) => (false, e.to_string()),
        },
    }
}

fn script_error(e: &EvalAltResult) -> ScriptError {
    let pos = e.position();
    let message = match e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("sandbox limit: the script ran more than {MAX_OPERATIONS} operations (a runaway loop?)")
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            format!("sandbox limit: calls nested deeper than {MAX_CALL_LEVELS} levels (runaway recursion?)")
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => format!(
            "sandbox limit: {what} exceeds the limit (strings {MAX_STRING_SIZE} bytes, arrays {MAX_ARRAY_SIZE} items, maps {MAX_MAP_SIZE} entries)"
        ),
        other => {
            let mut m = other.to_string();
            // The position is reported in its own fields.
            if let Some(i) = m.rfind(" (line ") {
                m.truncate(i);
            }
            m
        }
    };
    ScriptError { message, line: pos.line(), column: pos.position() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_take_the_type_of_their_default() {
        let d = |v: Value, default: Dynamic| coerce_param("p", &v, &default);
        assert_eq!(d(json!("5"), Dynamic::from_int(1)).unwrap().as_int().unwrap(), 5);
        assert_eq!(d(json!(0.5), Dynamic::from_int(1)).unwrap().as_float().unwrap(), 0.5);
        assert_eq!(d(json!("2.5"), Dynamic::from_float(1.0)).unwrap().as_float().unwrap(), 2.5);
        assert!(d(json!("true"), Dynamic::FALSE).unwrap().as_bool().unwrap());
        assert_eq!(d(json!(7), Dynamic::from("x")).unwrap().into_string().unwrap(), "7");
        let e = d(json!("five"), Dynamic::from_int(1)).unwrap_err();
        assert!(e.contains("parameter 'p' must be a number"), "{e}");
    }

    #[test]
    fn compile_errors_have_positions_and_size_is_capped() {
        let e = compile("let x = 1;\nlet = 2;").unwrap_err();
        assert_eq!(e.line, Some(2));
        let e = compile(&"x".repeat(MAX_SCRIPT_BYTES + 1)).unwrap_err();
        assert!(e.message.contains("the limit is 65536 bytes"));
    }
}
