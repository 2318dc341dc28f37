//! Load generators: `loadgen` (run one to its end), `loadgen_start`, `loadgen_wait` and
//! `loadgen_stop`; each child is a ledger entry of the run.

use std::sync::Arc;

use rhai::{Dynamic, Engine, ImmutableString, Map, NativeCallContext, Position};
use serde_json::Value;

use super::RunRef;
use super::args::{known_options, positive, text};
use crate::chaos::engine::{Ctx, Fallible, Loadgen};
use crate::chaos::loadgen::Spec;
use crate::child::Running;
use crate::faults::FaultError;
use crate::faults::ledger::{Applied, FaultKind, Undo};

impl Ctx {
    /// Starts `loadgen` for this run through the ledger; its progress goes to the timeline
    /// every 5 s, and each of its seconds to the run's series and guards.
    fn start_loadgen(self: &Arc<Self>, opts: &Map, pos: Position) -> Result<(String, Arc<Running>), String> {
        let spec = spec(opts, &self.deps.self_url)?;
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
}

pub(super) fn register(e: &mut Engine, ctx: &RunRef) {
    let loadgen = |c: RunRef| {
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
}

/// The loadgen a script's options describe: `#{profile, scale, time_scale, host, rate,
/// thresholds}`, each optional; `host` defaults to this service.
fn spec(m: &Map, default_host: &str) -> Result<Spec, String> {
    known_options("loadgen", m, &["profile", "scale", "time_scale", "host", "rate", "thresholds"])?;
    let opt = |k: &str| m.get(k).map(|v| (format!("loadgen option '{k}'"), v));
    let mut spec = Spec {
        profile: "staged".into(),
        scale: 1.0,
        time_scale: 1.0,
        host: default_host.into(),
        rate: None,
        thresholds: Vec::new(),
    };
    if let Some((what, v)) = opt("profile") {
        spec.profile = text(&what, v)?;
    }
    if let Some((what, v)) = opt("scale") {
        spec.scale = positive(&what, v)?;
    }
    if let Some((what, v)) = opt("time_scale") {
        spec.time_scale = positive(&what, v)?;
    }
    if let Some((what, v)) = opt("host") {
        spec.host = text(&what, v)?;
    }
    if let Some((what, v)) = opt("rate") {
        spec.rate = Some(positive(&what, v)?);
    }
    if let Some((what, v)) = opt("thresholds") {
        let list = v.clone().into_array().map_err(|_| format!("{what} must be an array of rules"))?;
        spec.thresholds = list.iter().map(|t| text(&what, t)).collect::<Result<_, _>>()?;
    }
    Ok(spec)
}

/// What `loadgen()` returns in a dry run: the options are checked, nothing is started.
fn dry_loadgen(opts: &Map, host: &str) -> Result<Map, String> {
    spec(opts, host)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_by_name() {
        let mut m = Map::new();
        m.insert("profile".into(), "spike".into());
        m.insert("scale".into(), Dynamic::from_float(0.01));
        m.insert("time_scale".into(), Dynamic::from_int(1));
        let s = spec(&m, "http://127.0.0.1:1").unwrap();
        assert_eq!(
            (s.profile.as_str(), s.scale, s.time_scale, s.host.as_str()),
            ("spike", 0.01, 1.0, "http://127.0.0.1:1")
        );
        m.insert("users".into(), Dynamic::from_int(5));
        let e = spec(&m, "x").unwrap_err();
        assert!(e.contains("unknown loadgen option 'users'") && e.contains("time_scale"), "{e}");
        let mut m = Map::new();
        m.insert("scale".into(), Dynamic::from_int(0));
        assert!(spec(&m, "x").unwrap_err().contains("'scale' must be a number more than 0"));
    }
}
