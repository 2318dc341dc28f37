//! Probes: `http` (this service over loopback, never a change of chaos state), `health`,
//! `status` and `wait_until`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, NativeCallContext};
use serde_json::Value;

use super::HTTP_TIMEOUT;
use super::RunRef;
use super::args::seconds;
use crate::chaos::engine::{Ctx, Fallible};

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
        out.insert("latency_ms".into(), Dynamic::from_float(crate::round_to(latency, 2)));
        Ok(out)
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

pub(super) fn register(e: &mut Engine, ctx: &RunRef) {
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
            let secs = crate::round_to(started.elapsed().as_secs_f64(), 3);
            let mut m = Map::new();
            m.insert("met".into(), Dynamic::from_bool(met));
            m.insert("seconds".into(), Dynamic::from_float(secs));
            Ok((m, if met { format!("met after {secs:.3} s") } else { format!("not met within {secs:.3} s") }))
        })
    });
}

fn describe_http(m: &Map) -> String {
    let status = m.get("status").and_then(|s| s.as_int().ok()).unwrap_or(0);
    let ms = m.get("latency_ms").and_then(|s| s.as_float().ok()).unwrap_or(0.0);
    format!("{status} in {ms:.1} ms")
}
