//! Faults applied through a backend: the network (`network_block`, `network_latency`,
//! `network_clear`, `network_reset_peers`) and the deployment (`deploy_fault`).

use std::time::Duration;

use rhai::{Dynamic, Engine, ImmutableString, Map, NativeCallContext};

use super::RunRef;
use super::args::{int_arg, known_options, seconds};
use crate::chaos::engine::{Ctx, Fallible};
use crate::faults::deploy::{DeployBackend, DeployFaultKind};
use crate::faults::ledger::{Applied, FaultKind, Undo};
use crate::faults::network::{BlockSpec, LatencySpec, NetworkBackend};
use crate::faults::{self, FaultError};

impl Ctx {
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
}

pub(super) fn register(e: &mut Engine, ctx: &RunRef) {
    // --- network ---
    let block = |c: RunRef| {
        move |nc: NativeCallContext, opts: Map| -> Fallible<ImmutableString> {
            let args = format!("{opts:?}");
            c.step("network_block", args, nc.call_position(), || {
                c.may_apply("network_block")?;
                let name = faults::network::azure::new_rule_name();
                let mut spec =
                    BlockSpec { run_id: Some(c.run.id.clone()), name: Some(name.clone()), ..BlockSpec::default() };
                known_options("network_block", &opts, &["port", "seconds", "cut_existing"])?;
                for (k, v) in &opts {
                    match k.as_str() {
                        "port" => {
                            spec.port = Some(u16::try_from(int_arg("port", v)?).map_err(|_| "port must be 1-65535")?)
                        }
                        "seconds" => spec.duration = Some(seconds("seconds", v)?).filter(|d| !d.is_zero()),
                        "cut_existing" => {
                            spec.cut_existing = v.as_bool().map_err(|_| "cut_existing must be true or false")?
                        }
                        _ => {}
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

    let latency = |c: RunRef| {
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
}
