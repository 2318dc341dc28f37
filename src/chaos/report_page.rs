//! The run report as one self-contained HTML page (`GET /chaos/runs/{id}/report`,
//! `chaos-lab run --report FILE`): a timeline of faults, load and health on one time axis (drawn
//! by [`crate::chart`], the renderer loadgen's report uses too), then the steps, expectations,
//! measurements, impact and undo tables. Inline CSS, no script, nothing fetched: it works offline
//! and as a mail attachment.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::chart::{
    Band, Line, Marker, MarkerKind, Panel, Strip, StripSegment, StripState, Threshold, Timeline, esc, svg,
};

use super::guard::SAMPLE_S;
use super::report::RunReport;

/// Step markers drawn at most; a long loop of calls would hide the chart under its lines.
const MAX_STEP_MARKERS: usize = 40;
/// Log lines listed at most (the journal has them all).
const MAX_LOG_LINES: usize = 300;

/// The page for `r`.
pub fn render(r: &RunReport) -> String {
    let title = format!("chaos-lab run {}", r.run_id);
    let mut body = String::new();
    let status = crate::json_name(&r.status);
    let _ = write!(
        body,
        "<h1>{name}</h1><p class=\"meta\"><span class=\"status status-{status}\">{status}</span> \
         verdict <b>{verdict}</b> · run <code>{id}</code> · started {start}{dur}{replica}{dry}</p>",
        name = esc(r.scenario.as_deref().unwrap_or("script")),
        verdict = esc(r.verdict.as_deref().unwrap_or("—")),
        id = esc(&r.run_id),
        start = esc(&r.started_at),
        dur = r.duration_s.map_or(String::new(), |d| format!(" · {d:.1} s")),
        replica = r.replica.as_deref().map_or(String::new(), |x| format!(" · replica {}", esc(x))),
        dry = if r.dry_run { " · <b>dry run</b>" } else { "" },
    );
    if let Some(reason) = &r.reason {
        let _ = write!(body, "<p>{}</p>", esc(reason));
    }
    if let Some(b) = &r.breach {
        let _ = write!(
            body,
            "<div class=\"breach\"><b>Guard breached</b> at {:.1} s ({}): {} was {} against {} — {} requests in \
             the window. Every fault was undone at once.</div>",
            b.offset_s,
            esc(&b.guard.describe()),
            esc(&b.metric),
            b.observed,
            b.threshold,
            b.requests
        );
    }
    body.push_str(&svg(&timeline(r)));
    body.push_str(&impact(r));
    body.push_str(&tables(r));
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>{body}</body></html>\n",
        t = esc(&title)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#1b1f24;max-width:1160px}\
h1{margin:0 0 4px}h2{margin:28px 0 8px;font-size:18px}.meta{color:#555}code{font-size:90%}\
table{border-collapse:collapse;margin:4px 0 12px}td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:left;vertical-align:top}\
th{background:#f4f5f7}.ok{color:#1a7f37}.bad{color:#c62828;font-weight:600}\
.status{padding:2px 8px;border-radius:10px;background:#ddd;font-weight:600}.status-succeeded{background:#c8e6c9}\
.status-failed,.status-aborted,.status-timed_out,.status-interrupted{background:#ffcdd2}.status-cancelled{background:#ffe0b2}\
.breach{border-left:5px solid #c62828;background:#fdecea;padding:8px 12px;margin:12px 0}svg{max-width:100%;height:auto}";

/// The page's timeline alone, as a standalone SVG document.
pub fn timeline_svg(r: &RunReport) -> String {
    svg(&timeline(r))
}

/// Faults, load and health on one axis.
fn timeline(r: &RunReport) -> Timeline {
    let end_of_series = r
        .series
        .load
        .iter()
        .map(|p| p.second.t)
        .chain(r.series.health.iter().map(|h| h.t + SAMPLE_S))
        .chain(r.faults.iter().filter_map(|f| f.undone_s))
        .fold(0.0, f64::max);
    let duration_s = r.duration_s.unwrap_or(0.0).max(end_of_series).max(1.0);
    let lanes = r
        .faults
        .iter()
        .map(|f| Band {
            label: match f.line {
                Some(l) => format!("{} · {} (line {l})", f.kind, f.target),
                None => format!("{} · {}", f.kind, f.target),
            },
            kind: f.kind.clone(),
            start_s: f.applied_s,
            end_s: f.undone_s,
        })
        .collect();

    // One line per load generator in each panel.
    let mut by_gen: BTreeMap<&str, Vec<&crate::loadgen::report::Second>> = BTreeMap::new();
    for p in &r.series.load {
        by_gen.entry(p.loadgen.as_str()).or_default().push(&p.second);
    }
    let line = |f: &dyn Fn(&crate::loadgen::report::Second) -> f64, suffix: &str| -> Vec<Line> {
        by_gen
            .iter()
            .map(|(name, points)| Line {
                label: if by_gen.len() == 1 { suffix.to_string() } else { format!("{name} {suffix}") },
                points: points.iter().map(|s| (s.t, f(s))).collect(),
            })
            .collect()
    };
    let error_pct = |s: &crate::loadgen::report::Second| {
        if s.requests > 0 { s.failures as f64 * 100.0 / s.requests as f64 } else { 0.0 }
    };
    let thresholds = |f: &dyn Fn(&super::guard::Guard) -> Option<f64>, what: &str| -> Vec<Threshold> {
        r.guards
            .iter()
            .filter_map(|g| f(g).map(|v| Threshold { label: format!("guard {what} {v}"), value: v }))
            .collect()
    };
    let mut panels = Vec::new();
    if !r.series.load.is_empty() {
        panels.push(Panel {
            title: "Throughput".into(),
            unit: "req/s".into(),
            lines: line(&|s| s.rps, "rps"),
            thresholds: vec![],
        });
        panels.push(Panel {
            title: "Latency p95".into(),
            unit: "ms".into(),
            lines: line(&|s| s.p95_ms, "p95"),
            thresholds: thresholds(&|g| g.p95_ms, "p95 ms"),
        });
        panels.push(Panel {
            title: "Errors".into(),
            unit: "%".into(),
            lines: line(&error_pct, "error rate"),
            thresholds: thresholds(&|g| g.error_rate_pct, "error rate %"),
        });
    }
    let strip = (!r.series.health.is_empty()).then(|| Strip {
        label: "health".into(),
        segments: r
            .series
            .health
            .iter()
            .map(|h| StripSegment {
                start_s: h.t,
                end_s: h.t + SAMPLE_S,
                state: match h.state.as_str() {
                    "healthy" => StripState::Healthy,
                    "unhealthy" => StripState::Unhealthy,
                    "unreachable" => StripState::Unreachable,
                    _ => StripState::Unknown,
                },
            })
            .collect(),
    });
    let mut markers: Vec<Marker> = r
        .steps
        .iter()
        .take(MAX_STEP_MARKERS)
        .map(|s| Marker {
            at_s: s.offset_s,
            label: match s.line {
                Some(l) => format!("{l}: {}", s.name),
                None => s.name.clone(),
            },
            kind: MarkerKind::Step,
        })
        .collect();
    if let Some(b) = &r.breach {
        markers.push(Marker {
            at_s: b.offset_s,
            label: format!("breach: {} {}", b.metric, b.observed),
            kind: MarkerKind::Breach,
        });
    }
    Timeline {
        title: format!("{} — faults, load and health", r.scenario.as_deref().unwrap_or("script")),
        duration_s,
        lanes,
        panels,
        strip,
        markers,
    }
}

fn impact(r: &RunReport) -> String {
    let Some(i) = &r.impact else {
        return "<h2>Impact</h2><p>No fault was applied: nothing to measure.</p>".into();
    };
    let secs = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2} s"));
    let mut s = String::from("<h2>Impact</h2><table>");
    let rows = [
        (
            "time to detect",
            format!(
                "{}{}",
                secs(i.time_to_detect_s),
                i.detected_by.as_deref().map_or(String::new(), |b| format!(" (by {})", esc(b)))
            ),
        ),
        ("time to recover", secs(i.time_to_recover_s)),
        ("requests", i.requests.to_string()),
        ("failures", format!("{} ({:.2} %)", i.failures, i.error_rate_pct)),
        (
            "error budget burned",
            i.error_budget_burned_pct.map_or("— (no error-rate guard)".into(), |b| format!("{b:.1} %")),
        ),
        ("unhealthy", format!("{:.0} s", i.unhealthy_s)),
    ];
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    s.push_str("</table>");
    s
}

fn tables(r: &RunReport) -> String {
    let mut s = String::new();
    let okc = |ok: bool| if ok { "<span class=\"ok\">ok</span>" } else { "<span class=\"bad\">FAILED</span>" };
    if !r.guards.is_empty() {
        s.push_str("<h2>Guards</h2><table><tr><th>guard</th><th>from</th></tr>");
        for g in &r.guards {
            let _ = write!(s, "<tr><td>{}</td><td>{}</td></tr>", esc(&g.describe()), esc(&g.source));
        }
        s.push_str("</table>");
    }
    s.push_str(
        "<h2>Steps</h2><table><tr><th>#</th><th>at</th><th>line</th><th>call</th><th>took</th><th>outcome</th></tr>",
    );
    for st in &r.steps {
        let outcome = match (&st.error, &st.outcome) {
            (Some(e), _) => format!("<span class=\"bad\">{}</span>", esc(e)),
            (None, Some(o)) => esc(o),
            (None, None) => "running".into(),
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.3} s</td><td>{}</td><td><code>{}({})</code></td><td>{}</td><td>{outcome}</td></tr>",
            st.seq,
            st.offset_s,
            st.line.map_or(String::new(), |l| l.to_string()),
            esc(&st.name),
            esc(&st.args),
            st.duration_ms.map_or(String::new(), |d| format!("{d:.1} ms")),
        );
    }
    s.push_str("</table>");
    if !r.expectations.is_empty() {
        s.push_str("<h2>Expectations</h2><table><tr><th></th><th>line</th><th>expectation</th></tr>");
        for x in &r.expectations {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                okc(x.ok),
                x.line.map_or(String::new(), |l| l.to_string()),
                esc(&x.message)
            );
        }
        s.push_str("</table>");
    }
    if !r.measurements.is_empty() {
        s.push_str("<h2>Measurements</h2><table><tr><th>name</th><th>value</th></tr>");
        for (k, v) in &r.measurements {
            let _ = write!(s, "<tr><td>{}</td><td><code>{}</code></td></tr>", esc(k), esc(&v.to_string()));
        }
        s.push_str("</table>");
    }
    if !r.faults.is_empty() {
        s.push_str(
            "<h2>Faults</h2><table><tr><th>fault</th><th>kind</th><th>target</th><th>applied</th><th>undone</th></tr>",
        );
        for f in &r.faults {
            let _ = write!(
                s,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:.3} s</td><td>{}</td></tr>",
                esc(&f.fault_id),
                esc(&f.kind),
                esc(&f.target),
                f.applied_s,
                f.undone_s.map_or("<span class=\"bad\">not undone</span>".to_string(), |u| format!("{u:.3} s"))
            );
        }
        s.push_str("</table>");
    }
    s.push_str("<h2>Undo</h2>");
    if r.undo.is_empty() {
        s.push_str("<p>Nothing to undo.</p>");
    } else {
        s.push_str("<table><tr><th></th><th>action</th><th>detail</th><th>at</th></tr>");
        for u in &r.undo {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                okc(u.ok),
                esc(&u.action),
                esc(&u.detail),
                esc(&u.at)
            );
        }
        s.push_str("</table>");
    }
    if let Some(e) = &r.error {
        let _ = write!(
            s,
            "<h2>Error</h2><p class=\"bad\">line {}, column {}: {}</p>",
            e.line.unwrap_or(0),
            e.column.unwrap_or(0),
            esc(&e.message)
        );
    }
    if !r.logs.is_empty() {
        s.push_str("<h2>Log</h2><table><tr><th>at</th><th>line</th><th>message</th></tr>");
        for l in r.logs.iter().take(MAX_LOG_LINES) {
            let _ = write!(
                s,
                "<tr><td>{:.3} s</td><td>{}</td><td>{}</td></tr>",
                l.offset_s,
                l.line.map_or(String::new(), |n| n.to_string()),
                esc(&l.message)
            );
        }
        s.push_str("</table>");
        if r.logs.len() > MAX_LOG_LINES {
            let _ = write!(s, "<p>{} more lines in the JSON journal.</p>", r.logs.len() - MAX_LOG_LINES);
        }
    }
    s
}
