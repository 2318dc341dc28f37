//! The script API: every function a scenario can call, registered on the sandbox for one run.
//!
//! Functions that apply a fault are thin adapters over the fault ledger ([`Ctx::apply`]): they
//! check their arguments, refuse inside a rollback, and say how to apply and undo. Probes
//! (`http`, `health`, `status`, `wait_until`) reach the service over loopback; `http()` may not
//! change chaos state (a non-GET to `/chaos/*`), so nothing a script does escapes the ledger.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, NativeCallContext, Position};
use serde_json::{Value, json};

use super::engine::{Ctx, Fallible, Loadgen, Phase};
use super::loadgen::{Running, Spec};
use super::report::Expectation;
use super::sandbox::sandbox;
use crate::faults::deploy::{DeployBackend, DeployFaultKind};
use crate::faults::ledger::{Applied, FaultKind, Undo};
use crate::faults::network::{BlockSpec, LatencySpec, NetworkBackend};
use crate::faults::{self, FaultError};
use crate::fleet::{FleetFault, Selector};

/// Timeout of one `http()` call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

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
    "replicas",
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
    "guard",
    "on_rollback",
    "loadgen",
    "loadgen_start",
    "loadgen_wait",
    "loadgen_stop",
];

impl Ctx {
    fn http(&self, method: &str, path: &str, body: Option<Dynamic>) -> Result<Map, String> {
        let method: reqwest::Method =
            method.to_ascii_uppercase().parse().map_err(|_| format!("'{method}' is not an HTTP method"))?;
        if !path.starts_with('/') {
            return Err(format!("path must start with '/', got '{path}' (http() only reaches this service)"));
        }
        if method != reqwest::Method::GET && path.starts_with("/chaos/") {
            return Err(chaos_path_refused(&method, path));
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

    /// Starts `loadgen` for this run through the ledger; its progress goes to the timeline
    /// every 5 s, and each of its seconds to the run's series and guards.
    fn start_loadgen(self: &Arc<Self>, opts: &Map, pos: Position) -> Result<(String, Arc<Running>), String> {
        let spec = Spec::from_map(opts, &self.deps.self_url)?;
        let name = format!("loadgen-{}", self.loadgens.lock().unwrap().len() + 1);
        let c = self.clone();
        let tag = name.clone();
        let progress = move |p: &Value| {
            if let Some(o) = &c.observer
                && let Ok(second) = serde_json::from_value(p["second"].clone())
            {
                o.load_second(&tag, second);
            }
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
        };
        let cfg = self.deps.loadgen.clone();
        let report_name = format!("{}-{name}", self.run.id);
        let target = format!("{name}: {} x{} on {}", spec.profile, spec.scale, spec.host);
        let t = target.clone();
        // Spawned from the ledger's task, i.e. a runtime worker thread, which outlives the child
        // (the parent-death signal follows the spawning thread).
        let (fault_id, running) = self.apply(FaultKind::Loadgen, target, None, Undo::Nothing, async move {
            let running = Arc::new(Running::start(&cfg, &spec, &report_name, progress).map_err(FaultError::Invalid)?);
            Ok(Applied {
                value: running.clone(),
                undo: Undo::Loadgen { pid: running.pid(), start_ticks: running.start_ticks() },
                target: t,
                loadgen: Some(running),
            })
        })?;
        self.loadgens.lock().unwrap().push(Loadgen { name: name.clone(), fault_id, running: running.clone() });
        Ok((name, running))
    }

    /// Waits for a load generator (stopping it first when `stop`), as a script map; its ledger
    /// entry is then settled.
    fn finish_loadgen(&self, name: &str, stop: bool) -> Result<(Map, String), String> {
        let (fault_id, running) = self.loadgen(name)?;
        if stop {
            running.stop();
        }
        let summary = self.block(running.wait())??;
        let ledger = self.deps.ledger.clone();
        self.block(async move { ledger.undo(&fault_id).await })?;
        let outcome = format!(
            "{} requests, {} failed, {} rps, p95 {} ms",
            summary["requests"], summary["failures"], summary["rps"], summary["p95_ms"]
        );
        let map = rhai::serde::to_dynamic(&summary).map_err(|e| e.to_string())?.cast::<Map>();
        Ok((map, outcome))
    }

    /// Applies a network fault planned by `planned` (the NSG rule name, on Azure).
    fn apply_network<F>(
        &self,
        kind: FaultKind,
        duration: Option<Duration>,
        name: String,
        apply: F,
    ) -> Result<faults::network::NetworkFault, String>
    where
        F: std::future::Future<Output = Result<faults::network::NetworkFault, FaultError>> + Send + 'static,
    {
        let backend = self.deps.network.name().to_string();
        // Only the azure backend's faults outlive the process; its rule name is chosen first.
        let planned =
            if backend == "azure" { Undo::Network { backend: backend.clone(), fault_id: name } } else { Undo::Nothing };
        let (_, fault) = self.apply(kind, format!("{backend} network"), duration, planned, async move {
            let f = apply.await?;
            Ok(Applied {
                undo: Undo::Network { backend, fault_id: f.id.clone() },
                target: f.target.clone(),
                value: f,
                loadgen: None,
            })
        })?;
        tracing::Span::current().record("fault.target", fault.target.as_str());
        Ok(fault)
    }

    /// Where a fault with these `replicas` goes: `None` for this replica alone (the local
    /// path), else the replicas picked among the live ones now.
    fn targets(&self, replicas: Option<&Dynamic>) -> Result<Option<Vec<String>>, String> {
        let Some(d) = replicas else { return Ok(None) };
        let v: Value = rhai::serde::from_dynamic(d).map_err(|e| format!("replicas: {e}"))?;
        let chosen = self.deps.fleet.resolve(&Selector::parse(&v)?)?;
        Ok((!self.deps.fleet.is_only_me(&chosen)).then_some(chosen))
    }

    /// Publishes a fault for other replicas (owned by this run, leased like its other faults).
    fn apply_fleet(&self, kind: FaultKind, mut fault: FleetFault) -> Result<String, String> {
        let duration = u64::try_from(fault.seconds).ok().filter(|s| *s > 0).map(Duration::from_secs);
        fault.owner = self.owner.clone();
        fault.lease_expires_at = crate::faults::ledger::lease(duration, self.lease_cap);
        let (fleet, ledger) = (self.deps.fleet.clone(), self.deps.ledger.clone());
        let (id, f) =
            self.block(async move { fleet.apply_fleet(&ledger, fault, kind).await })?.map_err(|e| e.to_string())?;
        self.applied(&id);
        Ok(f.describe())
    }

    /// One-shot faults (a reset) have nothing to undo, but are refused while halted or in a
    /// rollback like any other.
    fn may_break(&self, function: &str) -> Result<(), String> {
        self.may_apply(function)?;
        if self.dry_run {
            return Ok(());
        }
        self.deps.ledger.check_open().map_err(|e| e.to_string())
    }
}

/// Why `http()` refuses to change chaos state, and what to call instead.
fn chaos_path_refused(method: &reqwest::Method, path: &str) -> String {
    let instead = match path.trim_end_matches('/') {
        "/chaos/load" => "use load(level, seconds) and load_stop()",
        "/chaos/hang" => "use hang(seconds, scope) and hang_stop()",
        "/chaos/redis-reset" => "use redis_reset()",
        "/chaos/run" => "a run cannot start runs; put the steps in this script",
        "/chaos/stop" | "/chaos/resume" => "the kill switch is for operators, not scripts",
        _ => "use the script function for it (network_block(), network_clear(), deploy_fault(), ...)",
    };
    format!(
        "http() cannot change chaos state ({method} {path}): faults applied that way would escape the fault \
         ledger and its undo; {instead}"
    )
}

/// Builds the run's engine: the sandbox plus the script API bound to `ctx`.
pub(super) fn build(ctx: &Arc<Ctx>) -> Engine {
    let mut e = sandbox();
    let c = ctx.clone();
    e.on_progress(move |ops| {
        if ops % 128 != 0 {
            return None;
        }
        c.stopped().map(Dynamic::from)
    });
    // print() and debug() go to the run's log (capped), never to the service's stdout.
    let c = ctx.clone();
    e.on_print(move |s| c.log(s.to_string(), Position::NONE));
    let c = ctx.clone();
    e.on_debug(move |s, _, pos| c.log(format!("debug: {s}"), pos));

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
        c.run.measure(name.to_string(), v);
        Ok(())
    });
    let c = ctx.clone();
    e.register_fn("now", move || c.run.started.elapsed().as_secs_f64());

    // --- load ---
    let c = ctx.clone();
    let load_fn = Arc::new(move |nc: NativeCallContext, level: ImmutableString, s: Dynamic| -> Fallible<()> {
        c.step("load", format!("{level}, {s}"), nc.call_position(), || {
            c.may_apply("load")?;
            let secs = int_arg("load(level, seconds): seconds", &s)?;
            if c.dry_run {
                faults::load::LoadLevel::parse(&level).map_err(|e| e.to_string())?;
                c.dry_undo.lock().unwrap().push("stop the load".into());
                return Ok(((), "dry run: not applied".into()));
            }
            let faults = c.deps.faults.clone();
            let lvl = level.to_string();
            let duration = u64::try_from(secs).ok().map(Duration::from_secs);
            c.apply(FaultKind::Load, format!("{level} load"), duration, Undo::Nothing, async move {
                let started = faults.start_load(&lvl, secs)?;
                Ok(Applied {
                    value: (),
                    undo: Undo::Load { load_id: started.id },
                    target: format!("{lvl} load"),
                    loadgen: None,
                })
            })?;
            Ok(((), format!("{level} load for {secs} s")))
        })
    });
    let f = load_fn.clone();
    e.register_fn("load", move |nc: NativeCallContext, level: ImmutableString, s: Dynamic| f(nc, level, s));
    // load(#{level, seconds, replicas}): the same load, on other replicas too.
    let c = ctx.clone();
    let load2 = load_fn.clone();
    e.register_fn("load", move |nc: NativeCallContext, opts: Map| -> Fallible<()> {
        let level = opts.get("level").map_or_else(|| "low".to_string(), |v| v.to_string());
        let secs = opts.get("seconds").cloned().unwrap_or(Dynamic::from_int(60));
        if let Some(k) = opts.keys().find(|k| !["level", "seconds", "replicas"].contains(&k.as_str())) {
            return Err(EvalAltResult::ErrorRuntime(
                format!("load: unknown option '{k}'; use level, seconds, replicas").into(),
                nc.call_position(),
            )
            .into());
        }
        let targets = c
            .targets(opts.get("replicas"))
            .map_err(|e| EvalAltResult::ErrorRuntime(format!("load: {e}").into(), nc.call_position()))?;
        let Some(replicas) = targets else { return load2(nc, level.into(), secs) };
        c.step("load", format!("{opts:?}"), nc.call_position(), || {
            c.may_apply("load")?;
            let secs = int_arg("load: seconds", &secs)?;
            faults::load::LoadLevel::parse(&level).map_err(|e| e.to_string())?;
            if c.dry_run {
                return Ok(((), format!("dry run: not applied ({level} load on {})", replicas.join(", "))));
            }
            let fault = FleetFault::new("load", Some(level.clone()), secs, None, replicas);
            Ok(((), c.apply_fleet(FaultKind::Load, fault)?))
        })
    });
    let c = ctx.clone();
    e.register_fn("load_stop", move |nc: NativeCallContext| -> Fallible<()> {
        c.step("load_stop", String::new(), nc.call_position(), || {
            if c.dry_run {
                return Ok(((), "dry run".into()));
            }
            let done = c.undo_own(|e| e.kind == FaultKind::Load)?;
            Ok(((), if done.is_empty() { "no load of this run was on".into() } else { "load stopped".into() }))
        })
    });

    // --- hang ---
    let hang = |c: Arc<Ctx>| {
        move |nc: NativeCallContext, s: Dynamic, scope: ImmutableString| -> Fallible<()> {
            c.step("hang", format!("{s}, {scope}"), nc.call_position(), || {
                c.may_apply("hang")?;
                let secs = int_arg("hang(seconds): seconds", &s)?;
                if c.dry_run {
                    c.dry_undo.lock().unwrap().push("end the hang".into());
                    return Ok(((), "dry run: not applied".into()));
                }
                let faults = c.deps.faults.clone();
                let sc = scope.to_string();
                let duration = u64::try_from(secs).ok().filter(|s| *s > 0).map(Duration::from_secs);
                let (id, ticket) =
                    c.apply(FaultKind::Hang, format!("{scope} hang"), duration, Undo::Nothing, async move {
                        let ticket = faults.start_hang(secs, &sc)?;
                        let undo = Undo::Hang { hang_id: ticket.id() };
                        Ok(Applied { value: ticket, undo, target: format!("{sc} hang"), loadgen: None })
                    })?;
                if ticket.scope == faults::hang::HangScope::Request {
                    // The "caller" of a request-scope hang is the script itself; when the run is
                    // stopped meanwhile, the undo phase ends the hang.
                    let (_, took) = c.block(ticket.wait())?;
                    let ledger = c.deps.ledger.clone();
                    c.block(async move { ledger.undo(&id).await })?;
                    return Ok(((), format!("script stalled {:.1} s", took.as_secs_f64())));
                }
                Ok(((), if secs == 0 { "app hang until undone".into() } else { format!("app hang for {secs} s") }))
            })
        }
    };
    e.register_fn("hang", hang(ctx.clone()));
    let h = hang(ctx.clone());
    e.register_fn("hang", move |nc: NativeCallContext, s: Dynamic| h(nc, s, "app".into()));
    // hang(#{seconds, scope, replicas}): an app hang on other replicas too.
    let (c, h) = (ctx.clone(), hang(ctx.clone()));
    e.register_fn("hang", move |nc: NativeCallContext, opts: Map| -> Fallible<()> {
        let pos = nc.call_position();
        let err =
            |m: String| -> Box<EvalAltResult> { EvalAltResult::ErrorRuntime(format!("hang: {m}").into(), pos).into() };
        if let Some(k) = opts.keys().find(|k| !["seconds", "scope", "replicas"].contains(&k.as_str())) {
            return Err(err(format!("unknown option '{k}'; use seconds, scope, replicas")));
        }
        let secs = opts.get("seconds").cloned().unwrap_or(Dynamic::from_int(0));
        let scope = opts.get("scope").map_or_else(|| "app".to_string(), |v| v.to_string());
        let Some(replicas) = c.targets(opts.get("replicas")).map_err(err)? else { return h(nc, secs, scope.into()) };
        c.step("hang", format!("{opts:?}"), pos, || {
            c.may_apply("hang")?;
            if scope != "app" {
                return Err(format!(
                    "scope '{scope}' cannot reach other replicas (a request hang stalls its caller): use scope \"app\""
                ));
            }
            let secs = int_arg("hang: seconds", &secs)?;
            if c.dry_run {
                return Ok(((), format!("dry run: not applied (app hang on {})", replicas.join(", "))));
            }
            let fault = FleetFault::new("hang", None, secs, Some("app".into()), replicas);
            Ok(((), c.apply_fleet(FaultKind::Hang, fault)?))
        })
    });
    let c = ctx.clone();
    e.register_fn("hang_stop", move |nc: NativeCallContext| -> Fallible<()> {
        c.step("hang_stop", String::new(), nc.call_position(), || {
            if c.dry_run {
                return Ok(((), "dry run".into()));
            }
            let done = c.undo_own(|e| e.kind == FaultKind::Hang)?;
            Ok(((), if done.is_empty() { "no hang of this run was on".into() } else { "hang ended".into() }))
        })
    });

    // --- redis ---
    let c = ctx.clone();
    e.register_fn("redis_reset", move |nc: NativeCallContext| -> Fallible<i64> {
        c.step("redis_reset", String::new(), nc.call_position(), || {
            c.may_break("redis_reset")?;
            if c.dry_run {
                return Ok((0, "dry run: not applied".into()));
            }
            let report = c.block(faults::redis_reset(c.deps.store.as_ref(), true))?.map_err(|e| e.to_string())?;
            Ok((report.connections_closed as i64, format!("{} connections closed", report.connections_closed)))
        })
    });

    let c = ctx.clone();
    e.register_fn("redis_reset", move |nc: NativeCallContext, opts: Map| -> Fallible<Dynamic> {
        let pos = nc.call_position();
        if let Some(k) = opts.keys().find(|k| k.as_str() != "replicas") {
            return Err(EvalAltResult::ErrorRuntime(
                format!("redis_reset: unknown option '{k}'; use replicas").into(),
                pos,
            )
            .into());
        }
        let targets = c
            .targets(opts.get("replicas"))
            .map_err(|e| EvalAltResult::ErrorRuntime(format!("redis_reset: {e}").into(), pos))?;
        c.step("redis_reset", format!("{opts:?}"), pos, || {
            c.may_break("redis_reset")?;
            match targets {
                None => {
                    if c.dry_run {
                        return Ok((Dynamic::from_int(0), "dry run: not applied".into()));
                    }
                    let r = c.block(faults::redis_reset(c.deps.store.as_ref(), true))?.map_err(|e| e.to_string())?;
                    Ok((
                        Dynamic::from_int(r.connections_closed as i64),
                        format!("{} connections closed", r.connections_closed),
                    ))
                }
                Some(replicas) if c.dry_run => {
                    Ok((Dynamic::UNIT, format!("dry run: not applied (on {})", replicas.join(", "))))
                }
                Some(replicas) => {
                    let mut fault = FleetFault::new("redis_reset", None, 30, None, replicas);
                    fault.seconds = 30; // the request is withdrawn at the run's end or after 30 s
                    Ok((Dynamic::UNIT, c.apply_fleet(FaultKind::RedisReset, fault)?))
                }
            }
        })
    });
    let c = ctx.clone();
    e.register_fn("replicas", move || -> rhai::Array { c.deps.fleet.live().into_iter().map(Dynamic::from).collect() });

    // --- network ---
    let block = |c: Arc<Ctx>| {
        move |nc: NativeCallContext, opts: Map| -> Fallible<ImmutableString> {
            let args = format!("{opts:?}");
            c.step("network_block", args, nc.call_position(), || {
                c.may_apply("network_block")?;
                let name = faults::network::azure::new_rule_name();
                let mut spec =
                    BlockSpec { run_id: Some(c.run.id.clone()), name: Some(name.clone()), ..BlockSpec::default() };
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
                let fault = if c.dry_run {
                    let f = c.block(c.dry_network.block(spec))?.map_err(|e| e.to_string())?;
                    c.dry_undo.lock().unwrap().push(format!("clear network fault {}", f.id));
                    f
                } else {
                    let network = c.deps.network.clone();
                    let duration = spec.duration;
                    c.apply_network(FaultKind::NetworkBlock, duration, name, async move { network.block(spec).await })?
                };
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
                c.may_apply("network_latency")?;
                let ms = int_arg("network_latency(ms): ms", &ms)?;
                let ms = u64::try_from(ms).map_err(|_| "ms must not be negative")?;
                let duration = if s.is_unit() { None } else { Some(seconds("seconds", &s)?).filter(|d| !d.is_zero()) };
                let spec = LatencySpec { latency: Duration::from_millis(ms), duration, run_id: Some(c.run.id.clone()) };
                let fault =
                    if c.dry_run {
                        let f = c.block(c.dry_network.latency(spec))?.map_err(|e| e.to_string())?;
                        c.dry_undo.lock().unwrap().push(format!("clear network fault {}", f.id));
                        f
                    } else {
                        let network = c.deps.network.clone();
                        let name = faults::network::azure::new_rule_name();
                        c.apply_network(FaultKind::NetworkLatency, duration, name, async move {
                            network.latency(spec).await
                        })?
                    };
                Ok((fault.id.clone().into(), format!("+{ms} ms on {} ({})", fault.target, fault.id)))
            })
        }
    };
    e.register_fn("network_latency", latency(ctx.clone()));
    let l = latency(ctx.clone());
    e.register_fn("network_latency", move |nc: NativeCallContext, ms: Dynamic| l(nc, ms, Dynamic::UNIT));

    let is_network =
        |e: &crate::faults::ledger::Entry| matches!(e.kind, FaultKind::NetworkBlock | FaultKind::NetworkLatency);
    let c = ctx.clone();
    e.register_fn("network_clear", move |nc: NativeCallContext| -> Fallible<i64> {
        c.step("network_clear", String::new(), nc.call_position(), || {
            if c.dry_run {
                let n = c.block(c.dry_network.clear_all())?.map_err(|e| e.to_string())?;
                return Ok((n as i64, format!("{n} network fault(s) cleared (dry run)")));
            }
            let done = c.undo_own(is_network)?;
            let cleared = done.iter().filter(|o| o.ok).count() as i64;
            if let Some(failed) = done.iter().find(|o| !o.ok) {
                return Err(format!("could not clear {}: {}", failed.fault_id, failed.detail));
            }
            Ok((cleared, format!("{cleared} network fault(s) cleared")))
        })
    });
    let c = ctx.clone();
    e.register_fn("network_clear", move |nc: NativeCallContext, id: ImmutableString| -> Fallible<bool> {
        c.step("network_clear", id.to_string(), nc.call_position(), || {
            if c.dry_run {
                let cleared = c.block(c.dry_network.clear(&id))?.map_err(|e| e.to_string())?;
                return Ok((cleared, format!("{id} cleared (dry run)")));
            }
            let wanted = id.to_string();
            let matches = move |e: &crate::faults::ledger::Entry| {
                matches!(&e.undo, Undo::Network { fault_id, .. } if *fault_id == wanted)
            };
            let ledger = c.deps.ledger.clone();
            let done = c.block(async move { ledger.undo_where(matches).await })?;
            let cleared = match done.first() {
                Some(o) if !o.ok => return Err(format!("could not clear {id}: {}", o.detail)),
                Some(o) => !o.detail.contains("already"),
                // Not in the ledger (an operator's rule, say): clearing it is an undo all the same.
                None => c.block(c.network().clear(&id))?.map_err(|e| e.to_string())?,
            };
            Ok((cleared, if cleared { format!("{id} cleared") } else { format!("{id} was already gone") }))
        })
    });
    let c = ctx.clone();
    e.register_fn("network_reset_peers", move |nc: NativeCallContext| -> Fallible<i64> {
        c.step("network_reset_peers", String::new(), nc.call_position(), || {
            c.may_break("network_reset_peers")?;
            let n = c.block(c.network().reset_peers())?.map_err(|e| e.to_string())?;
            Ok((n as i64, format!("{n} connection(s) reset")))
        })
    });

    // --- deployment ---
    let c = ctx.clone();
    e.register_fn("deploy_fault", move |nc: NativeCallContext, kind: ImmutableString| -> Fallible<ImmutableString> {
        c.step("deploy_fault", kind.to_string(), nc.call_position(), || {
            c.may_apply("deploy_fault")?;
            let kind = DeployFaultKind::parse(&kind).map_err(|e| e.to_string())?;
            if c.dry_run {
                let f = c.block(c.dry_deploy.inject(kind))?.map_err(|e| e.to_string())?;
                c.dry_undo.lock().unwrap().push(format!("restore the revision before {}", f.revision));
                return Ok((f.revision.into(), format!("dry run: revision would be created ({})", kind.as_str())));
            }
            let deploy = c.deploy()?;
            c.deps.ledger.check_open().map_err(|e| e.to_string())?;
            // Read-only: learns the revision to come back to, so the undo is known first.
            let d = deploy.clone();
            let plan = c.block(async move { d.prepare(kind).await })?.map_err(|e| e.to_string())?;
            let fault = plan.fault.clone();
            let (_, fault) = c.apply(
                FaultKind::Deploy,
                fault.revision.clone(),
                None,
                Undo::Deploy { fault: fault.clone() },
                async move {
                    deploy.apply(&plan).await?;
                    let f = plan.fault.clone();
                    Ok(Applied {
                        value: f.clone(),
                        undo: Undo::Deploy { fault: f },
                        target: plan.fault.revision.clone(),
                        loadgen: None,
                    })
                },
            )?;
            tracing::Span::current().record("fault.target", fault.app.as_str());
            let outcome = format!("revision {} created ({})", fault.revision, kind.as_str());
            Ok((fault.revision.into(), outcome))
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
    e.register_fn("guard", move |nc: NativeCallContext, opts: Map| -> Fallible<()> {
        c.step("guard", format!("{opts:?}"), nc.call_position(), || {
            let source = format!("script line {}", nc.call_position().line().unwrap_or(0));
            let v: Value = rhai::serde::from_dynamic(&Dynamic::from_map(opts.clone())).map_err(|e| e.to_string())?;
            let g = super::guard::Guard::from_json(&v, &source)?;
            let described = g.describe();
            c.run.update(|r| r.guards.push(g));
            Ok(((), format!("guarding: {described}")))
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
                c.may_apply("loadgen")?;
                if c.dry_run {
                    return Ok((dry_loadgen(&opts, &c.deps.self_url)?, "dry run: not started".into()));
                }
                let (name, _) = c.start_loadgen(&opts, nc.call_position())?;
                c.finish_loadgen(&name, false)
            })
        }
    };
    e.register_fn("loadgen", loadgen(ctx.clone()));
    let f = loadgen(ctx.clone());
    e.register_fn("loadgen", move |nc: NativeCallContext| f(nc, Map::new()));
    let c = ctx.clone();
    e.register_fn("loadgen_start", move |nc: NativeCallContext, opts: Map| -> Fallible<ImmutableString> {
        c.step("loadgen_start", format!("{opts:?}"), nc.call_position(), || {
            c.may_apply("loadgen_start")?;
            if c.dry_run {
                dry_loadgen(&opts, &c.deps.self_url)?;
                return Ok(("loadgen-dry".into(), "dry run: not started".into()));
            }
            let (name, _) = c.start_loadgen(&opts, nc.call_position())?;
            Ok((name.clone().into(), format!("started {name}")))
        })
    });
    for (name, stop) in [("loadgen_wait", false), ("loadgen_stop", true)] {
        let c = ctx.clone();
        e.register_fn(name, move |nc: NativeCallContext, id: ImmutableString| -> Fallible<Map> {
            c.step(name, id.to_string(), nc.call_position(), || {
                if c.dry_run {
                    return Ok((dry_loadgen(&Map::new(), &c.deps.self_url)?, "dry run".into()));
                }
                c.finish_loadgen(&id, stop)
            })
        });
    }
    let c = ctx.clone();
    e.register_fn("on_rollback", move |nc: NativeCallContext, f: FnPtr| -> Fallible<()> {
        if c.phase() != Phase::Script {
            return Err(EvalAltResult::ErrorRuntime(
                "on_rollback() cannot be used inside on_rollback (rollbacks are already running)".into(),
                nc.call_position(),
            )
            .into());
        }
        c.log(format!("registered rollback {}", f.fn_name()), nc.call_position());
        c.rollbacks.lock().unwrap().push(f);
        Ok(())
    });
    e
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
}
