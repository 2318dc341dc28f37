//! Judging goose `--threshold` rules (`p95<500ms`, `error-rate<1%`, `avg<=200ms`, `max<2s`,
//! `rps>=100`, optionally `for GET /health`) on a loadgen report: goose judges closed-model runs
//! itself; this does it for open-model runs and merged reports, with the same syntax.

use super::report::{Figures, Report, ThresholdOutcome};

pub fn judge(rule: &str, report: &Report) -> Result<ThresholdOutcome, String> {
    // goose's parser gives the syntax errors users already know from goose runs.
    rule.parse::<goose::threshold::Threshold>().map_err(|e| format!("--threshold '{rule}': {e}"))?;
    let (head, request) = match rule.split_once(" for ") {
        Some((h, r)) => (h.trim(), Some(r.trim())),
        None => (rule.trim(), None),
    };
    let at = head.find(['<', '>', '=']).ok_or_else(|| format!("--threshold '{rule}': no operator"))?;
    let (metric, rest) = head.split_at(at);
    let op_len = if rest.starts_with("<=") || rest.starts_with(">=") { 2 } else { 1 };
    let (op, limit) = rest.split_at(op_len);
    let figures: &Figures = match request {
        None => &report.totals,
        Some(name) => match report.endpoints.iter().find(|e| e.name == name) {
            Some(e) => &e.figures,
            None => {
                return Ok(ThresholdOutcome { rule: rule.into(), observed: "no samples".into(), passed: false });
            }
        },
    };
    let (observed, limit, shown) = match metric.trim() {
        "error-rate" => {
            (figures.error_rate_pct, number(limit.trim_end_matches('%'), rule)?, format!("{}%", figures.error_rate_pct))
        }
        "rps" => (figures.rps, number(limit, rule)?, format!("{}", figures.rps)),
        m => {
            let ms = match m {
                "avg" => figures.mean_ms,
                "max" => figures.max_ms,
                p if p.starts_with('p') => match number(&p[1..], rule)? {
                    50.0 => figures.p50_ms,
                    95.0 => figures.p95_ms,
                    99.0 => figures.p99_ms,
                    other => {
                        return Err(format!("--threshold '{rule}': loadgen reports p50, p95 and p99, not p{other}"));
                    }
                },
                _ => return Err(format!("--threshold '{rule}': unknown metric '{m}'")),
            };
            (ms, time_ms(limit, rule)?, format!("{ms}ms"))
        }
    };
    if figures.requests == 0 {
        return Ok(ThresholdOutcome { rule: rule.into(), observed: "no samples".into(), passed: false });
    }
    let passed = match op {
        "<" => observed < limit,
        "<=" => observed <= limit,
        ">" => observed > limit,
        ">=" => observed >= limit,
        _ => observed == limit,
    };
    Ok(ThresholdOutcome { rule: rule.into(), observed: shown, passed })
}

fn number(s: &str, rule: &str) -> Result<f64, String> {
    s.trim().parse().map_err(|_| format!("--threshold '{rule}': '{s}' is not a number"))
}

fn time_ms(s: &str, rule: &str) -> Result<f64, String> {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("ms") {
        number(v, rule)
    } else if let Some(v) = s.strip_suffix('s') {
        Ok(number(v, rule)? * 1000.0)
    } else {
        number(s, rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::report::Endpoint;

    #[test]
    fn rules_judge_totals_and_one_endpoint() {
        let r = Report {
            totals: Figures {
                requests: 100,
                failures: 2,
                error_rate_pct: 2.0,
                p95_ms: 40.0,
                rps: 50.0,
                ..Default::default()
            },
            endpoints: vec![Endpoint {
                name: "GET /health".into(),
                figures: Figures { requests: 10, p95_ms: 900.0, ..Default::default() },
                ..Default::default()
            }],
            ..Default::default()
        };
        let ok = |rule: &str| judge(rule, &r).unwrap().passed;
        assert!(ok("p95<500ms"));
        assert!(!ok("p95<500ms for GET /health"));
        assert!(ok("p95<1s for GET /health"));
        assert!(!ok("error-rate<1%"));
        assert!(ok("error-rate<=2%"));
        assert!(ok("rps>=50"));
        assert!(!ok("p95<1s for GET /nothing"));
        assert!(judge("p95<<1", &r).is_err());
    }
}
