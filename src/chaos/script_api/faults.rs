//! Faults a script applies in this process, here or on other replicas (`replicas`): `load`,
//! `hang`, `redis_reset`, and `replicas()` to see who is live.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext};
use serde_json::Value;

use super::RunRef;
use super::args::{int_arg, known_options};
use crate::chaos::engine::{Ctx, Fallible};
use crate::faults;
use crate::faults::ledger::{Applied, FaultKind, Undo};
use crate::fleet::{FleetFault, Selector};

impl Ctx {
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
}

pub(super) fn register(e: &mut Engine, ctx: &RunRef) {
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
        known_options("load", &opts, &["level", "seconds", "replicas"])
            .map_err(|e| EvalAltResult::ErrorRuntime(e.into(), nc.call_position()))?;
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
    e.register_fn(
        "load_stop",
        stop_own(ctx, "load_stop", FaultKind::Load, "no load of this run was on", "load stopped"),
    );

    // --- hang ---
    let hang = |c: RunRef| {
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
        known_options("hang", &opts, &["seconds", "scope", "replicas"])
            .map_err(|e| -> Box<EvalAltResult> { EvalAltResult::ErrorRuntime(e.into(), pos).into() })?;
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
    e.register_fn("hang_stop", stop_own(ctx, "hang_stop", FaultKind::Hang, "no hang of this run was on", "hang ended"));

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
        known_options("redis_reset", &opts, &["replicas"]).map_err(|e| EvalAltResult::ErrorRuntime(e.into(), pos))?;
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
}

/// `load_stop()`, `hang_stop()`: undoes this run's faults of `kind` (through the ledger); says
/// `none` when there was none.
fn stop_own(
    ctx: &RunRef,
    function: &'static str,
    kind: FaultKind,
    none: &'static str,
    done: &'static str,
) -> impl Fn(NativeCallContext) -> Fallible<()> + Send + Sync + 'static {
    let c = ctx.clone();
    move |nc: NativeCallContext| -> Fallible<()> {
        c.step(function, String::new(), nc.call_position(), || {
            if c.dry_run {
                return Ok(((), "dry run".into()));
            }
            let undone = c.undo_own(|e| e.kind == kind)?;
            Ok(((), if undone.is_empty() { none.into() } else { done.into() }))
        })
    }
}
