//! loadgen's own report: one JSON document per run (per machine), mergeable, plus the
//! one-screen summary and a self-contained HTML page (both models and merges; its per-second
//! chart is drawn by [`crate::chart`], so the page needs nothing from the internet).

use std::collections::{BTreeMap, BTreeSet};
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
    /// What finished each second of the run, in time order (no histograms: a histogram per
    /// second would make a long run's report huge). Reports written before loadgen kept a
    /// series have none.
    #[serde(default)]
    pub series: Vec<Second>,
}

/// One second of load: what finished during it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Second {
    /// Seconds since the load started, at the end of this second (1.0, 2.0, ...; the run's last,
    /// shorter interval ends where the run did).
    pub t: f64,
    /// Users at the end of the second (the open model: the stage's slots).
    pub users: u64,
    pub requests: u64,
    pub failures: u64,
    /// `requests` over the interval's real length (normally 1 s).
    pub rps: f64,
    /// Latencies of the second's requests in ms; 0 without requests.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Per endpoint, by the names the report's `endpoints` use (`GET /health`, ...); endpoints
    /// without a request in the second are left out.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointSecond>,
    /// All the second's response times: only on the `--progress-json` channel, so a reader can
    /// combine seconds exactly (a sliding window); never in [`Report::series`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub histogram: Option<Histogram>,
}

/// One endpoint's share of a second of load.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EndpointSecond {
    pub requests: u64,
    pub failures: u64,
    pub p95_ms: f64,
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
            rps: crate::round_to(if seconds > 0.0 { requests as f64 / seconds } else { 0.0 }, 2),
            error_rate_pct: crate::round_to(
                if requests > 0 { failures as f64 * 100.0 / requests as f64 } else { 0.0 },
                2,
            ),
            p50_ms: crate::round_to(h.percentile_ms(0.50), 2),
            p95_ms: crate::round_to(h.percentile_ms(0.95), 2),
            p99_ms: crate::round_to(h.percentile_ms(0.99), 2),
            max_ms: crate::round_to(h.max_ms(), 2),
            mean_ms: crate::round_to(h.mean_ms(), 2),
        }
    }
}

impl Second {
    /// The second ending at `t`, after an interval of `length_s` seconds, from each endpoint's
    /// `(name, histogram, failures)` in it; its `histogram` holds them all.
    pub fn of<'a>(
        t: f64,
        length_s: f64,
        users: u64,
        per_endpoint: impl IntoIterator<Item = (&'a str, &'a Histogram, u64)>,
    ) -> Second {
        let mut all = Histogram::default();
        let mut failures = 0;
        let mut endpoints = BTreeMap::new();
        for (name, h, failed) in per_endpoint {
            all.merge(h);
            failures += failed;
            if h.count > 0 {
                endpoints.insert(
                    name.to_string(),
                    EndpointSecond {
                        requests: h.count,
                        failures: failed,
                        p95_ms: crate::round_to(h.percentile_ms(0.95), 2),
                    },
                );
            }
        }
        Second {
            t: crate::round_to(t, 2),
            users,
            requests: all.count,
            failures,
            rps: crate::round_to(if length_s > 0.0 { all.count as f64 / length_s } else { 0.0 }, 2),
            p50_ms: crate::round_to(all.percentile_ms(0.50), 2),
            p95_ms: crate::round_to(all.percentile_ms(0.95), 2),
            p99_ms: crate::round_to(all.percentile_ms(0.99), 2),
            max_ms: crate::round_to(all.max_ms(), 2),
            endpoints,
            histogram: Some(all),
        }
    }

    /// Adds another machine's same second into this one (see [`merge_series`]).
    fn add(&mut self, o: &Second) {
        self.t = self.t.max(o.t);
        self.users += o.users;
        self.requests += o.requests;
        self.failures += o.failures;
        self.rps = crate::round_to(self.rps + o.rps, 2);
        self.p50_ms = self.p50_ms.max(o.p50_ms);
        self.p95_ms = self.p95_ms.max(o.p95_ms);
        self.p99_ms = self.p99_ms.max(o.p99_ms);
        self.max_ms = self.max_ms.max(o.max_ms);
        for (name, e) in &o.endpoints {
            let m = self.endpoints.entry(name.clone()).or_default();
            m.requests += e.requests;
            m.failures += e.failures;
            m.p95_ms = m.p95_ms.max(e.p95_ms);
        }
        self.histogram = None;
    }
}

/// Combines the series of reports run at the same time on several machines, second by second
/// (by `round(t)`: each machine's seconds are counted from its own start, and replicas start
/// within a few seconds of each other). Requests, failures, users and rates add up. Percentiles
/// cannot be recombined without the seconds' histograms, which reports do not keep, so each
/// latency is the highest of the parts' values for that second: an upper bound of the merged
/// second's, exact for `max_ms`.
fn merge_series(into: &mut Vec<Second>, other: Vec<Second>) {
    let mut by_second: BTreeMap<i64, Second> = BTreeMap::new();
    for s in std::mem::take(into).into_iter().chain(other) {
        match by_second.entry(s.t.round() as i64) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Second { histogram: None, ..s });
            }
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().add(&s),
        }
    }
    *into = by_second.into_values().collect();
}

/// A whole-run rule (`p95<1000ms`, `error-rate<1%`, `rps>=100`) as (metric, limit in ms, % or
/// req/s), to draw on the chart; `None` for rules on one endpoint (`for GET /health`).
fn rule_limit(rule: &str) -> Option<(&str, f64)> {
    if rule.contains(" for ") {
        return None;
    }
    let at = rule.find(['<', '>', '='])?;
    let (metric, rest) = rule.split_at(at);
    let limit = rest.trim_start_matches(['<', '>', '=']).trim();
    let value = if let Some(v) = limit.strip_suffix('%') {
        v.trim().parse().ok()?
    } else if let Some(v) = limit.strip_suffix("ms") {
        v.trim().parse().ok()?
    } else if let Some(v) = limit.strip_suffix('s') {
        v.trim().parse::<f64>().ok()? * 1000.0
    } else {
        limit.parse().ok()?
    };
    Some((metric.trim(), value))
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
            merge_series(&mut out.series, r.series);
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

    /// The per-second chart of [`Report::series`]: throughput, latency and error rate, with the
    /// run's whole-run rules as thresholds.
    pub fn timeline(&self) -> crate::chart::Timeline {
        use crate::chart::{Line, Panel, Threshold, Timeline};
        let line = |label: &str, value: &dyn Fn(&Second) -> f64| Line {
            label: label.to_string(),
            points: self.series.iter().map(|s| (s.t, value(s))).collect(),
        };
        // An endpoint's rate over its second's length (rps = requests / length).
        let length = |s: &Second| if s.requests > 0 && s.rps > 0.0 { s.requests as f64 / s.rps } else { 1.0 };
        let names: BTreeSet<&str> = self.series.iter().flat_map(|s| s.endpoints.keys().map(String::as_str)).collect();
        let mut throughput = vec![line("all", &|s| s.rps)];
        for name in names {
            throughput.push(line(name, &|s| {
                s.endpoints.get(name).map_or(0.0, |e| crate::round_to(e.requests as f64 / length(s), 2))
            }));
        }
        let rules: Vec<(&str, f64, &str)> = self
            .thresholds
            .iter()
            .filter_map(|t| rule_limit(&t.rule).map(|(metric, value)| (metric, value, t.rule.as_str())))
            .collect();
        let thresholds = |metrics: &[&str]| -> Vec<Threshold> {
            rules
                .iter()
                .filter(|(m, _, _)| metrics.contains(m))
                .map(|&(_, value, rule)| Threshold { label: rule.to_string(), value })
                .collect()
        };
        Timeline {
            title: format!("loadgen: {} per second", self.profile),
            duration_s: self.series.iter().map(|s| s.t).fold(self.duration_s, f64::max),
            panels: vec![
                Panel {
                    title: "Throughput".into(),
                    unit: "req/s".into(),
                    lines: throughput,
                    thresholds: thresholds(&["rps"]),
                },
                Panel {
                    title: "Latency".into(),
                    unit: "ms".into(),
                    lines: vec![line("p50", &|s| s.p50_ms), line("p95", &|s| s.p95_ms), line("p99", &|s| s.p99_ms)],
                    thresholds: thresholds(&["p50", "p95", "p99", "avg", "max"]),
                },
                Panel {
                    title: "Errors".into(),
                    unit: "%".into(),
                    lines: vec![line("error rate", &|s| {
                        if s.requests > 0 {
                            crate::round_to(s.failures as f64 * 100.0 / s.requests as f64, 2)
                        } else {
                            0.0
                        }
                    })],
                    thresholds: thresholds(&["error-rate"]),
                },
            ],
            ..Default::default()
        }
    }

    /// A self-contained HTML page: the figures, the rules and the per-second chart (inline CSS
    /// and SVG; nothing fetched, so it reads the same offline).
    pub fn html(&self) -> String {
        use crate::chart::esc;
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
        let chart = if self.series.is_empty() {
            "<p class=\"no-series\">no per-second data in this report</p>".to_string()
        } else {
            format!("<div class=\"chart\">{}</div>", crate::chart::svg(&self.timeline()))
        };
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>loadgen report: {p}</title>\
             <style>body{{font-family:sans-serif}}td,th{{padding:2px 10px;text-align:right}}td:first-child{{text-align:left}}\
             .chart{{margin:1em 0;max-width:1100px}}</style>\
             </head><body><h1>loadgen: {p}</h1><p>{model} model against {host}, started {start}, {dur:.1} s, up to {users} users, \
             {parts} report(s).</p>{open}<table><tr><th>endpoint</th><th>requests</th><th>failed</th><th>rps</th><th>p50 ms</th>\
             <th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr>{rows}</table><ul>{rules}</ul><p>Result: <b>{res}</b></p>\
             <h2>Per second</h2>{chart}</body></html>\n",
            p = esc(&self.profile),
            model = esc(&self.model),
            host = esc(&self.host),
            start = esc(&self.started_at),
            dur = self.duration_s,
            users = self.max_users,
            parts = self.parts,
            res = if self.passed { "PASS" } else { "FAIL" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(t: f64, requests: u64, failures: u64, p95_ms: f64) -> Second {
        let endpoints = BTreeMap::from([("GET /".to_string(), EndpointSecond { requests, failures, p95_ms })]);
        Second {
            t,
            users: 2,
            requests,
            failures,
            rps: requests as f64,
            p95_ms,
            max_ms: p95_ms,
            endpoints,
            ..Default::default()
        }
    }

    #[test]
    fn a_report_written_before_the_series_still_reads() {
        let mut v = serde_json::to_value(Report { profile: "staged".into(), ..Default::default() }).unwrap();
        v.as_object_mut().unwrap().remove("series");
        let r: Report = serde_json::from_value(v).unwrap();
        assert!(r.series.is_empty());
        // A second without histogram or endpoints (the report's form) reads too.
        let s: Second = serde_json::from_str(
            r#"{"t":1.0,"users":1,"requests":2,"failures":0,"rps":2.0,"p50_ms":1,"p95_ms":2,"p99_ms":2,"max_ms":2}"#,
        )
        .unwrap();
        assert!(s.requests == 2 && s.histogram.is_none() && s.endpoints.is_empty());
        assert!(!serde_json::to_string(&s).unwrap().contains("histogram"));
    }

    #[test]
    fn a_second_is_built_from_its_endpoints_histograms() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        for _ in 0..9 {
            a.record(10_000);
        }
        b.record(500_000);
        let s = Second::of(
            3.0,
            0.5,
            4,
            [("GET /", &a, 1), ("GET /health", &b, 0), ("GET /chaos/status", &Histogram::default(), 0)],
        );
        assert_eq!((s.t, s.users, s.requests, s.failures, s.rps), (3.0, 4, 10, 1, 20.0));
        assert_eq!(s.max_ms, 500.0);
        assert_eq!(s.endpoints.len(), 2, "no entry for an endpoint without requests");
        assert_eq!(s.endpoints["GET /"].requests, 9);
        assert_eq!(s.histogram.as_ref().map(|h| h.count), Some(10));
        assert_eq!(Second::of(1.0, 1.0, 0, Vec::<(&str, &Histogram, u64)>::new()).p95_ms, 0.0);
    }

    #[test]
    fn merged_series_add_up_second_by_second() {
        let a =
            Report { series: vec![second(1.0, 10, 1, 20.0), second(2.0, 10, 0, 30.0)], parts: 1, ..Default::default() };
        let b = Report {
            series: vec![second(1.0, 5, 0, 50.0), second(2.0, 5, 5, 10.0), second(2.6, 1, 0, 5.0)],
            parts: 1,
            ..Default::default()
        };
        let m = Report::merge(vec![a, b]).unwrap();
        assert_eq!(m.series.len(), 3);
        let s1 = &m.series[0];
        assert_eq!((s1.t, s1.requests, s1.failures, s1.users, s1.rps), (1.0, 15, 1, 4, 15.0));
        assert_eq!(s1.p95_ms, 50.0, "the highest part's p95");
        assert_eq!(s1.endpoints["GET /"].requests, 15);
        assert_eq!(m.series[1].failures, 5);
        assert_eq!(m.series[2].t, 2.6, "the last, shorter second of one part stays its own");
    }

    #[test]
    fn the_html_page_draws_the_series_or_says_there_is_none() {
        let mut r = Report {
            profile: "staged".into(),
            thresholds: vec![ThresholdOutcome { rule: "p95<1000ms".into(), observed: "5ms".into(), passed: true }],
            ..Default::default()
        };
        let page = r.html();
        assert!(page.contains("no per-second data in this report") && !page.contains("<svg"));
        r.series = vec![second(1.0, 10, 1, 20.0), second(2.0, 10, 0, 30.0)];
        let page = r.html();
        assert!(page.contains("<svg") && page.contains("class=\"line\"") && page.contains("class=\"threshold\""));
        assert!(!page.contains("src=") && !page.contains("<link") && !page.contains("<script"), "nothing fetched");
        assert_eq!(rule_limit("p95<1000ms"), Some(("p95", 1000.0)));
        assert_eq!(rule_limit("max<2s"), Some(("max", 2000.0)));
        assert_eq!(rule_limit("error-rate<=0.5%"), Some(("error-rate", 0.5)));
        assert_eq!(rule_limit("p95<1s for GET /health"), None);
    }
}
