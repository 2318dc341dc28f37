//! Guardrails: stop conditions over a run's own live load and health, and the impact figures a
//! run's series give once it has ended.
//!
//! A guard is `#{p95_ms, error_rate_pct, window_s, min_requests, unhealthy_s}`: the run is aborted
//! as soon as the requests that finished in the last `window_s` seconds (at least `min_requests` of
//! them) have a p95 above `p95_ms` or an error rate above `error_rate_pct`, or the service has
//! been unhealthy for `unhealthy_s` seconds in a row. Everything here is pure (samples in, a
//! verdict out), so the edges are unit-tested without a service; [`super::observe`] feeds it.
//!
//! A window longer than the run so far is judged on what the run has: faults usually start in
//! the first seconds, and a guard that stayed blind for its whole window would miss them.
//! `min_requests` is what protects a young window (or one whose load stopped) from noise.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::loadgen::histogram::Histogram;

/// Default sliding window.
pub const DEFAULT_WINDOW_S: u64 = 10;
/// Default number of requests a window needs before latency and errors are judged.
pub const DEFAULT_MIN_REQUESTS: u64 = 10;
/// The longest window (and unhealthy streak) a guard may ask for.
pub const MAX_WINDOW_S: u64 = 3600;
/// Each health sample stands for this long (the service samples once a second).
pub const SAMPLE_S: f64 = 1.0;

const KEYS: &str = "p95_ms, error_rate_pct, window_s, min_requests, unhealthy_s";

/// One guard, as declared (request, scenario header or `guard()`), with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Guard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_pct: Option<f64>,
    pub window_s: u64,
    pub min_requests: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_s: Option<f64>,
    /// `request`, `scenario header line N` or `script line N`.
    pub source: String,
}

/// The requests of one second of one load generator.
#[derive(Debug, Clone, Default)]
pub struct LoadSample {
    /// Run offset (s) at the end of the second.
    pub t: f64,
    pub requests: u64,
    pub failures: u64,
    pub histogram: Histogram,
}

/// One health sample: at run offset `t`, was the service healthy?
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSample {
    pub t: f64,
    pub healthy: bool,
}

/// What a guard saw when it fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `p95_ms`, `error_rate_pct` or `unhealthy_s`.
    pub metric: &'static str,
    pub observed: f64,
    pub threshold: f64,
    /// Requests in the window (0 for `unhealthy_s`).
    pub requests: u64,
}

/// The window's figures, for a guard's verdict and for the impact's "back within the guard".
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowFigures {
    pub requests: u64,
    pub failures: u64,
    pub p95_ms: f64,
    pub error_rate_pct: f64,
}

/// A guard as a request gives it (`guards[i]` of `POST /chaos/run`): at least one of `p95_ms`,
/// `error_rate_pct` and `unhealthy_s`. The same options as a scenario header's `guard:` line and
/// a script's `guard()`.
// A schema only: `Guard::from_json` reads the JSON, the same code for every source.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only
pub struct GuardRequest {
    /// Abort when the window's p95 latency is over this (ms).
    #[schema(exclusive_minimum = 0)]
    p95_ms: Option<f64>,
    /// Abort when the window's failures are over this share of its requests (%).
    #[schema(minimum = 0, exclusive_maximum = 100)]
    error_rate_pct: Option<f64>,
    /// The sliding window, in seconds (default 10).
    #[schema(minimum = 1, maximum = 3600)]
    window_s: Option<u64>,
    /// Requests the window needs before the latency and error guards judge (default 10).
    #[schema(minimum = 1)]
    min_requests: Option<u64>,
    /// Abort when `/health` has not been healthy for this long (s).
    #[schema(exclusive_minimum = 0, maximum = 3600)]
    unhealthy_s: Option<f64>,
}

impl Guard {
    /// Reads a guard from JSON (a request body's `guards[i]`, a header, a script's map). Errors
    /// name the field and the limit; the caller says where the guard was.
    pub fn from_json(v: &Value, source: &str) -> Result<Guard, String> {
        let m = v.as_object().ok_or_else(|| format!("a guard is a map like #{{error_rate_pct: 5.0}}, got {v}"))?;
        let mut g = Guard {
            p95_ms: None,
            error_rate_pct: None,
            window_s: DEFAULT_WINDOW_S,
            min_requests: DEFAULT_MIN_REQUESTS,
            unhealthy_s: None,
            source: source.to_string(),
        };
        for (k, v) in m {
            let number = || v.as_f64().filter(|f| f.is_finite());
            let whole =
                || v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
            match k.as_str() {
                "p95_ms" => match number() {
                    Some(f) if f > 0.0 => g.p95_ms = Some(f),
                    _ => return Err(format!("p95_ms must be a number of milliseconds more than 0, got {v}")),
                },
                "error_rate_pct" => match number() {
                    Some(f) if (0.0..100.0).contains(&f) => g.error_rate_pct = Some(f),
                    _ => return Err(format!("error_rate_pct must be a percentage from 0 to less than 100, got {v}")),
                },
                "window_s" => match whole() {
                    Some(n) if (1..=MAX_WINDOW_S).contains(&n) => g.window_s = n,
                    _ => {
                        return Err(format!(
                            "window_s must be a whole number of seconds from 1 to {MAX_WINDOW_S}, got {v}"
                        ));
                    }
                },
                "min_requests" => match whole() {
                    Some(n) if n >= 1 => g.min_requests = n,
                    _ => return Err(format!("min_requests must be a whole number of at least 1, got {v}")),
                },
                "unhealthy_s" => match number() {
                    Some(f) if f > 0.0 && f <= MAX_WINDOW_S as f64 => g.unhealthy_s = Some(f),
                    _ => {
                        return Err(format!(
                            "unhealthy_s must be a number of seconds more than 0 and at most {MAX_WINDOW_S}, got {v}"
                        ));
                    }
                },
                other => return Err(format!("unknown guard option '{other}' (known: {KEYS})")),
            }
        }
        if g.p95_ms.is_none() && g.error_rate_pct.is_none() && g.unhealthy_s.is_none() {
            return Err("a guard needs at least one of p95_ms, error_rate_pct or unhealthy_s".into());
        }
        Ok(g)
    }

    /// Judges the guard at run offset `now`; `Some` on a breach. `load` and `health` are in time
    /// order (older samples are ignored; the caller may keep more than the window).
    pub fn check(&self, load: &[LoadSample], health: &[HealthSample], now: f64) -> Option<Verdict> {
        if self.p95_ms.is_some() || self.error_rate_pct.is_some() {
            let w = window(load, now - self.window_s as f64, now);
            if w.requests >= self.min_requests {
                if let Some(limit) = self.error_rate_pct
                    && w.error_rate_pct > limit
                {
                    return Some(Verdict {
                        metric: "error_rate_pct",
                        observed: w.error_rate_pct,
                        threshold: limit,
                        requests: w.requests,
                    });
                }
                if let Some(limit) = self.p95_ms
                    && w.p95_ms > limit
                {
                    return Some(Verdict {
                        metric: "p95_ms",
                        observed: w.p95_ms,
                        threshold: limit,
                        requests: w.requests,
                    });
                }
            }
        }
        if let Some(limit) = self.unhealthy_s {
            let streak = unhealthy_streak(health, now);
            if streak >= limit {
                return Some(Verdict { metric: "unhealthy_s", observed: streak, threshold: limit, requests: 0 });
            }
        }
        None
    }

    /// Whether the load in the window ending at `now`, counting only what finished after
    /// `since`, is within this guard's latency and error limits (a window with too few requests
    /// to judge counts as within). Recovery is judged on the load after the last undo: seconds
    /// from the outage still in the window would otherwise delay it by up to a window.
    pub fn load_within(&self, load: &[LoadSample], now: f64, since: f64) -> bool {
        let w = window(load, (now - self.window_s as f64).max(since), now);
        w.requests < self.min_requests
            || (self.error_rate_pct.is_none_or(|l| w.error_rate_pct <= l) && self.p95_ms.is_none_or(|l| w.p95_ms <= l))
    }

    /// The guard for people: `error_rate_pct > 5 over 10 s (at least 10 requests)`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.p95_ms {
            parts.push(format!("p95 > {p} ms"));
        }
        if let Some(e) = self.error_rate_pct {
            parts.push(format!("error rate > {e} %"));
        }
        let mut s = String::new();
        if !parts.is_empty() {
            s = format!("{} over {} s (at least {} requests)", parts.join(" or "), self.window_s, self.min_requests);
        }
        if let Some(u) = self.unhealthy_s {
            if !s.is_empty() {
                s.push_str(", or ");
            }
            s.push_str(&format!("unhealthy for {u} s"));
        }
        s
    }
}

/// Figures of the requests that finished in `(from, now]`.
pub fn window(load: &[LoadSample], from: f64, now: f64) -> WindowFigures {
    let mut h = Histogram::default();
    let (mut requests, mut failures) = (0, 0);
    // A sample is stamped at the end of its second: a tiny tolerance keeps the second that ends
    // exactly at `now` inside and the one that ends exactly at `from` outside, despite rounding.
    for s in load.iter().filter(|s| s.t > from + 1e-6 && s.t <= now + 1e-6) {
        requests += s.requests;
        failures += s.failures;
        h.merge(&s.histogram);
    }
    WindowFigures {
        requests,
        failures,
        p95_ms: h.percentile_ms(0.95),
        error_rate_pct: if requests > 0 { failures as f64 * 100.0 / requests as f64 } else { 0.0 },
    }
}

/// How long the service has been unhealthy without a break, up to `now` (0 if the latest
/// sample is healthy or there is none). Each sample stands for [`SAMPLE_S`].
pub fn unhealthy_streak(health: &[HealthSample], now: f64) -> f64 {
    let mut first = None;
    for s in health.iter().rev().filter(|s| s.t <= now + 1e-6) {
        if s.healthy {
            break;
        }
        first = Some(s.t);
    }
    first.map_or(0.0, |t| now - t + SAMPLE_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn second(t: f64, requests: u64, failures: u64, ms: u64) -> LoadSample {
        let mut histogram = Histogram::default();
        for _ in 0..requests {
            histogram.record(ms * 1000);
        }
        LoadSample { t, requests, failures, histogram }
    }

    fn guard(v: Value) -> Guard {
        Guard::from_json(&v, "test").unwrap()
    }

    #[test]
    fn options_are_checked_by_name_and_limit() {
        let g = guard(json!({"error_rate_pct": 5}));
        assert_eq!((g.window_s, g.min_requests, g.error_rate_pct), (DEFAULT_WINDOW_S, DEFAULT_MIN_REQUESTS, Some(5.0)));
        let e = |v: Value| Guard::from_json(&v, "t").unwrap_err();
        assert!(e(json!({"p95": 3})).contains("unknown guard option 'p95' (known: p95_ms"), "{}", e(json!({"p95": 3})));
        assert!(e(json!({"window_s": 5})).contains("at least one of p95_ms"));
        assert!(e(json!({"p95_ms": 0})).contains("p95_ms must be a number of milliseconds more than 0"));
        assert!(e(json!({"error_rate_pct": 100})).contains("from 0 to less than 100"));
        assert!(
            e(json!({"p95_ms": 1, "window_s": 0}))
                .contains("window_s must be a whole number of seconds from 1 to 3600")
        );
        assert!(e(json!({"p95_ms": 1, "window_s": 2.5})).contains("window_s"));
        assert!(
            e(json!({"p95_ms": 1, "min_requests": 0})).contains("min_requests must be a whole number of at least 1")
        );
        assert!(e(json!({"unhealthy_s": -1})).contains("unhealthy_s must be"));
        assert!(e(json!([1])).contains("a guard is a map"));
        assert_eq!(guard(json!({"p95_ms": 1, "window_s": 3.0})).window_s, 3);
    }

    #[test]
    fn a_window_with_too_few_requests_is_not_judged() {
        let g = guard(json!({"error_rate_pct": 5, "window_s": 5, "min_requests": 10}));
        let load = [second(1.0, 4, 4, 1), second(2.0, 5, 5, 1)];
        assert_eq!(g.check(&load, &[], 2.0), None, "9 requests, all failed, but fewer than min_requests");
        let load = [second(1.0, 4, 4, 1), second(2.0, 6, 6, 1)];
        let v = g.check(&load, &[], 2.0).unwrap();
        assert_eq!((v.metric, v.observed, v.threshold, v.requests), ("error_rate_pct", 100.0, 5.0, 10));
    }

    #[test]
    fn a_window_longer_than_the_run_judges_what_the_run_has() {
        let g = guard(json!({"p95_ms": 100, "window_s": 60, "min_requests": 10}));
        let load = [second(1.0, 20, 0, 50), second(2.0, 20, 0, 400)];
        let v = g.check(&load, &[], 2.0).expect("40 requests, half of them at 400 ms");
        assert_eq!(v.metric, "p95_ms");
        assert!(v.observed > 390.0 && v.observed < 410.0, "{v:?}");
        assert_eq!(g.check(&load[..1], &[], 1.0), None);
    }

    #[test]
    fn load_that_stops_mid_window_ages_out() {
        let g = guard(json!({"error_rate_pct": 10, "window_s": 5, "min_requests": 15}));
        // 20 requests with 4 failures in seconds 1–2, then nothing.
        let load = [second(1.0, 10, 2, 1), second(2.0, 10, 2, 1)];
        assert!(g.check(&load, &[], 3.0).is_some(), "20 % over the window");
        assert!(g.check(&load, &[], 5.9).is_some(), "both seconds still inside (0.9, 5.9]");
        assert_eq!(g.check(&load, &[], 6.0), None, "only second 2 left: 10 requests, too few");
        assert_eq!(g.check(&load, &[], 7.0), None, "everything aged out");
        assert!(g.load_within(&load, 7.0, 0.0));
        // The window's edges: (from, now].
        assert_eq!(window(&load, 1.0, 6.0).requests, 10);
        assert_eq!(window(&load, 0.0, 5.0).requests, 20);
    }

    #[test]
    fn unhealthy_streaks_are_counted_from_the_last_healthy_sample() {
        let g = guard(json!({"unhealthy_s": 3}));
        let h = |t: f64, healthy: bool| HealthSample { t, healthy };
        let health = [h(1.0, true), h(2.0, false), h(3.0, false), h(4.0, true), h(5.0, false), h(6.0, false)];
        assert_eq!(unhealthy_streak(&health, 3.0), 2.0);
        assert_eq!(unhealthy_streak(&health, 4.0), 0.0);
        assert_eq!(g.check(&[], &health, 6.0), None, "2 s in a row");
        let mut more = health.to_vec();
        more.push(h(7.0, false));
        let v = g.check(&[], &more, 7.0).unwrap();
        assert_eq!((v.metric, v.observed, v.threshold), ("unhealthy_s", 3.0, 3.0));
        assert_eq!(unhealthy_streak(&[], 5.0), 0.0);
    }

    #[test]
    fn load_within_needs_every_limit() {
        let g = guard(json!({"error_rate_pct": 5, "p95_ms": 100, "window_s": 2, "min_requests": 5}));
        assert!(!g.load_within(&[second(1.0, 10, 0, 500)], 1.0, 0.0));
        assert!(!g.load_within(&[second(1.0, 10, 1, 10)], 1.0, 0.0));
        assert!(g.load_within(&[second(1.0, 10, 0, 10)], 1.0, 0.0));
        assert!(g.load_within(&[second(1.0, 2, 2, 500)], 1.0, 0.0), "too few requests to judge");
        // Only what finished after `since` counts: the outage's seconds do not delay recovery.
        let load = [second(1.0, 10, 10, 10), second(2.0, 10, 0, 10)];
        assert!(!g.load_within(&load, 2.0, 0.0));
        assert!(g.load_within(&load, 2.0, 1.0), "only the good second after 1.0 counts");
        assert_eq!(g.describe(), "p95 > 100 ms or error rate > 5 % over 2 s (at least 5 requests)");
    }
}
