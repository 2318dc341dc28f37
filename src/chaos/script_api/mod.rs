//! The script API: every function a scenario can call, registered on the sandbox for one run.
//!
//! Functions that apply a fault are thin adapters over the fault ledger ([`Ctx::apply`]): they
//! check their arguments, refuse inside a rollback, and say how to apply and undo. Probes
//! (`http`, `health`, `status`, `wait_until`) reach the service over loopback; `http()` may not
//! change chaos state (a non-GET to `/chaos/*`), so nothing a script does escapes the ledger.
//!
//! Here the constants, the engine's hooks and the run's own functions (`sleep`, `log`, `param`,
//! `record`, `now`, `guard`, `expect`, `on_rollback`). By area: `faults` (load, hang, Redis
//! reset, on this replica or others), `backends` (network and deployment faults), `probes`
//! (`http`, `health`, `status`, `wait_until`), `loadgen` (load generators), and `args` (how
//! script values become numbers, durations and parameters).

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, NativeCallContext, Position};
use serde_json::{Value, json};

use super::engine::{Ctx, Fallible, Phase};
use super::report::Expectation;
use super::sandbox::sandbox;
use args::{coerce_param, seconds};

mod args;
mod backends;
mod faults;
mod loadgen;
mod probes;

/// Timeout of one `http()` call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The run a script function works for. Functions capture it when they are registered and
/// reach the run through it when they are called; [`build`] binds it to the run. The engine
/// [`known_functions`] builds to read the names is never bound, and never runs anything.
#[derive(Clone, Default)]
pub(super) struct RunRef(Arc<OnceLock<Arc<Ctx>>>);

impl std::ops::Deref for RunRef {
    type Target = Arc<Ctx>;
    fn deref(&self) -> &Arc<Ctx> {
        self.0.get().expect("a script function was called on an engine built without a run")
    }
}

/// Every function a script may call: Rhai's own (those the sandbox keeps) and the script API's,
/// read from the registrations, for the static check (`chaos-lab check`, `POST /chaos/check`).
pub fn known_functions() -> &'static BTreeSet<String> {
    static NAMES: OnceLock<BTreeSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let e = engine(&RunRef::default());
        e.collect_fn_metadata(None, |f| Some(f.metadata.name.to_string()), true).into_iter().collect()
    })
}

impl Ctx {
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

/// Builds the run's engine: the sandbox plus the script API bound to `ctx`.
pub(super) fn build(ctx: &Arc<Ctx>) -> Engine {
    let run = RunRef::default();
    let e = engine(&run);
    let _ = run.0.set(ctx.clone());
    e
}

/// The sandbox with the script API registered, working for `ctx` once it is bound.
fn engine(ctx: &RunRef) -> Engine {
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
    let sleep = |c: RunRef| {
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
    let log = |c: RunRef| move |nc: NativeCallContext, msg: Dynamic| c.log(msg.to_string(), nc.call_position());
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

    faults::register(&mut e, ctx);
    backends::register(&mut e, ctx);
    probes::register(&mut e, ctx);
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
    loadgen::register(&mut e, ctx);
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
