//! loadgen's own report: one JSON document per run (per machine), mergeable, plus the
//! one-screen summary and, for runs goose does not report on (open model, merges), an HTML page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::histogram::Histogram;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub profile: String,
    pub host: String,
    /// `closed` (goose users) or `open` (requests on a clock, `--rate`).
    pub model: String,
    pub started_at: String,
    pub duration_s: f64,
    pub scale: f64,
    pub time_scale: f64,
    pub split: u32,
    /// How many reports this one merges (1 for a single run).
    pub parts: u32,
    pub max_users: usize,
    pub totals: Figures,
    pub endpoints: Vec<Endpoint>,
    pub open_model: Option<OpenFigures>,
    pub thresholds: Vec<ThresholdOutcome>,
    pub passed: bool,
}

/// Figures for all requests or one endpoint; latencies in ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub error_rate_pct: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Endpoint {
    /// `GET /health` etc.
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
    pub status_codes: BTreeMap<String, u64>,
    pub histogram: Histogram,
}

/// What the open model scheduled and how well it kept to the clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OpenFigures {
    pub target_rps: f64,
    pub scheduled: u64,
    pub sent: u64,
    /// Arrivals never sent: the backlog was full, or the run ended first.
    pub dropped: u64,
    /// Arrivals sent more than `LATE_MS` after their intended start.
    pub late: u64,
    pub max_start_delay_ms: f64,
    /// `sent` per second of the schedule.
    pub delivered_rps: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdOutcome {
    pub rule: String,
    pub observed: String,
    pub passed: bool,
}

impl Figures {
    pub fn of(h: &Histogram, failures: u64, seconds: f64) -> Self {
        let requests = h.count;
        Self {
            requests,
            failures,
            rps: round2(if seconds > 0.0 { requests as f64 / seconds } else { 0.0 }),
            error_rate_pct: round2(if requests > 0 { failures as f64 * 100.0 / requests as f64 } else { 0.0 }),
            p50_ms: round2(h.percentile_ms(0.50)),
            p95_ms: round2(h.percentile_ms(0.95)),
            p99_ms: round2(h.percentile_ms(0.99)),
            max_ms: round2(h.max_ms()),
            mean_ms: round2(h.mean_ms()),
        }
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Report {
    /// Recomputes totals and per-endpoint figures from the histograms and counts.
    pub fn finish(&mut self) {
        let mut all = Histogram::default();
        let mut failures = 0;
        self.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        for e in &mut self.endpoints {
            e.figures = Figures::of(&e.histogram, e.figures.failures, self.duration_s);
            all.merge(&e.histogram);
            failures += e.figures.failures;
        }
        self.totals = Figures::of(&all, failures, self.duration_s);
    }

    /// Merges reports of the same profile run from several machines at once: counts and
    /// histograms add up, the duration is the longest, and rates are over that duration.
    pub fn merge(parts: Vec<Report>) -> Result<Report, String> {
        let mut it = parts.into_iter();
        let mut out = it.next().ok_or("nothing to merge")?;
        let mut rules: Vec<String> = out.thresholds.iter().map(|t| t.rule.clone()).collect();
        for r in it {
            if r.profile != out.profile || r.model != out.model {
                return Err(format!(
                    "cannot merge a {} run of profile '{}' with a {} run of profile '{}'",
                    r.model, r.profile, out.model, out.profile
                ));
            }
            out.parts += r.parts;
            out.duration_s = out.duration_s.max(r.duration_s);
            out.max_users += r.max_users;
            out.started_at = out.started_at.min(r.started_at);
            for e in r.endpoints {
                match out.endpoints.iter_mut().find(|o| o.name == e.name) {
                    Some(o) => {
                        o.histogram.merge(&e.histogram);
                        o.figures.failures += e.figures.failures;
                        for (code, n) in e.status_codes {
                            *o.status_codes.entry(code).or_default() += n;
                        }
                    }
                    None => out.endpoints.push(e),
                }
            }
            if let (Some(a), Some(b)) = (out.open_model.as_mut(), r.open_model) {
                a.target_rps += b.target_rps;
                a.scheduled += b.scheduled;
                a.sent += b.sent;
                a.dropped += b.dropped;
                a.late += b.late;
                a.max_start_delay_ms = a.max_start_delay_ms.max(b.max_start_delay_ms);
                a.delivered_rps += b.delivered_rps;
            }
            for t in r.thresholds {
                if !rules.contains(&t.rule) {
                    rules.push(t.rule);
                }
            }
        }
        out.finish();
        out.judge(&rules)?;
        Ok(out)
    }

    /// Judges `rules` (goose's `--threshold` syntax) on this report and sets `passed`.
    pub fn judge(&mut self, rules: &[String]) -> Result<(), String> {
        self.thresholds = rules.iter().map(|r| super::threshold::judge(r, self)).collect::<Result<_, _>>()?;
        self.passed = self.thresholds.iter().all(|t| t.passed);
        Ok(())
    }

    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).expect("a report serializes");
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn read_json(path: &Path) -> Result<Report, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a loadgen JSON report: {e}", path.display()))
    }

    /// The one-screen summary printed at the end.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadgen: profile {} ({} model) against {}: {:.1} s, up to {} users{}",
            self.profile,
            self.model,
            self.host,
            self.duration_s,
            self.max_users,
            if self.parts > 1 { format!(", {} reports merged", self.parts) } else { String::new() }
        );
        let _ = writeln!(
            s,
            "{:<20} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "endpoint", "requests", "failed", "rps", "p50 ms", "p95 ms", "p99 ms"
        );
        let row = |s: &mut String, name: &str, f: &Figures| {
            let _ = writeln!(
                s,
                "{:<20} {:>9} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2}",
                name, f.requests, f.failures, f.rps, f.p50_ms, f.p95_ms, f.p99_ms
            );
        };
        for e in &self.endpoints {
            row(&mut s, &e.name, &e.figures);
        }
        row(&mut s, "all", &self.totals);
        if let Some(o) = &self.open_model {
            let _ = writeln!(
                s,
                "open model: target {:.1} rps, delivered {:.1} rps; {} scheduled, {} sent, {} dropped, {} late \
                 (start > {} ms after intended; max {:.1} ms); latency counts from the intended start",
                o.target_rps,
                o.delivered_rps,
                o.scheduled,
                o.sent,
                o.dropped,
                o.late,
                super::open::LATE_MS,
                o.max_start_delay_ms
            );
        }
        for t in &self.thresholds {
            let _ = writeln!(
                s,
                "threshold {:<28} observed {:<12} {}",
                t.rule,
                t.observed,
                if t.passed { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(s, "result: {}", if self.passed { "PASS" } else { "FAIL" });
        s
    }

    /// A small self-contained HTML page with the same figures (used where goose writes none).
    pub fn html(&self) -> String {
        let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let mut rows = String::new();
        for (name, f) in self.endpoints.iter().map(|e| (e.name.as_str(), &e.figures)).chain([("all", &self.totals)]) {
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                esc(name),
                f.requests,
                f.failures,
                f.rps,
                f.p50_ms,
                f.p95_ms,
                f.p99_ms,
                f.max_ms
            );
        }
        let mut rules = String::new();
        for t in &self.thresholds {
            let _ = write!(
                rules,
                "<li>{} — observed {} — <b>{}</b></li>",
                esc(&t.rule),
                esc(&t.observed),
                if t.passed { "pass" } else { "FAIL" }
            );
        }
        let open = self.open_model.as_ref().map_or(String::new(), |o| {
            format!(
                "<p>Open model: target {:.1} rps, delivered {:.1} rps; {} scheduled, {} sent, {} dropped, {} late.</p>",
                o.target_rps, o.delivered_rps, o.scheduled, o.sent, o.dropped, o.late
            )
        });
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadgen report: {p}</title>\
             <style>body{{font-family:sans-serif}}td,th{{padding:2px 10px;text-align:right}}td:first-child{{text-align:left}}</style>\
             </head><body><h1>loadgen: {p}</h1><p>{model} model against {host}, started {start}, {dur:.1} s, up to {users} users, \
             {parts} report(s).</p>{open}<table><tr><th>endpoint</th><th>requests</th><th>failed</th><th>rps</th><th>p50 ms</th>\
             <th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>{rows}</table><ul>{rules}</ul><p>Result: <b>{res}</b></p></body></html>\n",
            p = esc(&self.profile),
            model = self.model,
            host = esc(&self.host),
            start = self.started_at,
            dur = self.duration_s,
            users = self.max_users,
            parts = self.parts,
            res = if self.passed { "PASS" } else { "FAIL" },
        )
    }
}
