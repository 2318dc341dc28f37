//! The one chart renderer: time series as a self-contained SVG string, drawn on the server.
//!
//! The run report, loadgen's HTML report and any page that shows a run over time draw the same
//! things — faults that were on, load and latency lines, the service's health, the moments a step
//! began or a guard fired — so they are drawn here, once. Callers map their own data to a
//! [`Timeline`]; this module knows nothing about runs, reports or where the numbers came from.
//!
//! The output is plain SVG: no script, no stylesheet or font fetched, every colour inline, so it
//! works offline, embedded in a page or saved as a file. It is 1100 units wide (`viewBox`), as
//! tall as its content. Elements carry classes so pages can style them and tests can find them:
//! `band band-<kind>` (fault bands), `line` (series), `threshold`, `marker marker-step` /
//! `marker marker-breach`, `strip-<state>` (health); `<title>` children give hover tooltips.
//!
//! Drawing must never fail: empty inputs give a small valid chart, and values that are not
//! finite are left out (or treated as 0 where a position is needed), so no `NaN` reaches the SVG.

use std::fmt::Write as _;

/// Everything one chart shows, on one time axis from 0 to `duration_s`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub title: String,
    /// The x axis runs from 0 to this many seconds.
    pub duration_s: f64,
    /// Fault bands at the top of the chart, one lane (row) per band, in this order.
    pub lanes: Vec<Band>,
    /// Line charts stacked under the lanes, sharing the x axis.
    pub panels: Vec<Panel>,
    /// A health strip under the panels.
    pub strip: Option<Strip>,
    /// Vertical lines across the whole chart (steps, breaches).
    pub markers: Vec<Marker>,
}

/// A span of time something was on, e.g. a fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Band {
    pub label: String,
    /// Picks the colour: `network_block`, `network_latency`, `load`, `hang`, `redis_reset`,
    /// `loadgen`, `deploy`; any other kind is grey. Also the `band-<kind>` class.
    pub kind: String,
    pub start_s: f64,
    /// `None`: still on when the timeline ends (drawn to the end, with a hatched end).
    pub end_s: Option<f64>,
}

/// One line chart; y runs from 0 to a round number above every line and threshold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panel {
    pub title: String,
    /// Shown after the title, e.g. `ms`, `req/s`, `%`.
    pub unit: String,
    /// Four distinct colours; a fifth line reuses the first colour.
    pub lines: Vec<Line>,
    /// Dashed horizontal lines, e.g. a p95 limit.
    pub thresholds: Vec<Threshold>,
}

/// One series: (seconds, value) points, drawn in the order given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Threshold {
    pub label: String,
    pub value: f64,
}

/// A moment worth a vertical line across the chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marker {
    pub at_s: f64,
    pub label: String,
    pub kind: MarkerKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MarkerKind {
    /// A step of the run began: a thin grey line.
    #[default]
    Step,
    /// A guard fired: a thick red line.
    Breach,
}

/// A row of coloured segments, e.g. what `/health` said each second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Strip {
    pub label: String,
    pub segments: Vec<StripSegment>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StripSegment {
    pub start_s: f64,
    pub end_s: f64,
    pub state: StripState,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StripState {
    Healthy,
    Unhealthy,
    /// No answer at all.
    Unreachable,
    /// Not sampled.
    #[default]
    Unknown,
}

impl StripState {
    fn name(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Unreachable => "unreachable",
            Self::Unknown => "unknown",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Self::Healthy => "#43a047",
            Self::Unhealthy => "#e53935",
            Self::Unreachable => "#4a0d0d",
            Self::Unknown => "#e0e0e0",
        }
    }
}

const WIDTH: f64 = 1100.0;
/// Room for the y-axis labels.
const LEFT: f64 = 64.0;
const RIGHT: f64 = WIDTH - 16.0;
const TITLE_H: f64 = 28.0;
/// Marker labels sit in two staggered rows above everything, so neighbours rarely overlap.
const MARKER_ROW: f64 = 13.0;
const LANE_H: f64 = 16.0;
const LANE_GAP: f64 = 3.0;
const PANEL_HEAD: f64 = 20.0;
const PLOT_H: f64 = 110.0;
const PANEL_GAP: f64 = 12.0;
const STRIP_HEAD: f64 = 13.0;
const STRIP_H: f64 = 14.0;
const AXIS_H: f64 = 24.0;
/// A rough width of one character at the labels' size: enough to decide where a label fits
/// (there is no font metrics on the server, and a few pixels off do not matter).
const CHAR_W: f64 = 6.0;
/// How much of a band still on at the end is hatched.
const OPEN_END_W: f64 = 40.0;

const LINE_COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"];
const THRESHOLD_COLOUR: &str = "#a0522d";
const STEP_COLOUR: &str = "#888888";
const BREACH_COLOUR: &str = "#d32f2f";
const GRID_COLOUR: &str = "#e6e6e6";

/// A fault kind's colour; fixed per kind so every chart of the lab uses the same one.
fn band_colour(kind: &str) -> &'static str {
    match kind {
        "network_block" => "#ef9a9a",
        "network_latency" => "#f8bbd0",
        "load" => "#ffcc80",
        "hang" => "#ce93d8",
        "redis_reset" => "#90caf9",
        "loadgen" => "#a5d6a7",
        "deploy" => "#80cbc4",
        _ => "#cfcfcf",
    }
}

/// Draws `t` as an SVG document (`<svg>…</svg>`), ready to embed inline in HTML.
pub fn svg(t: &Timeline) -> String {
    let x = XScale::new(t.duration_s);
    let mut body = String::new();
    let markers: Vec<&Marker> = {
        let mut m: Vec<&Marker> = t.markers.iter().filter(|m| m.at_s.is_finite()).collect();
        m.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        m
    };
    let mut y = TITLE_H;
    let label_rows_top = y;
    if !markers.is_empty() {
        y += 2.0 * MARKER_ROW + 4.0;
    }
    let content_top = y;

    for (i, band) in t.lanes.iter().enumerate() {
        draw_band(&mut body, band, y + i as f64 * (LANE_H + LANE_GAP), &x);
    }
    if !t.lanes.is_empty() {
        y += t.lanes.len() as f64 * (LANE_H + LANE_GAP) + 6.0;
    }
    for p in &t.panels {
        draw_panel(&mut body, p, y, &x);
        y += PANEL_HEAD + PLOT_H + PANEL_GAP;
    }
    if let Some(s) = &t.strip {
        draw_strip(&mut body, s, y, &x);
        y += STRIP_HEAD + STRIP_H + 8.0;
    }
    if t.lanes.is_empty() && t.panels.is_empty() && t.strip.is_none() {
        y += 20.0; // nothing to draw: keep a little room above the axis
    }
    let content_bottom = y;
    draw_axis(&mut body, content_bottom, &x);
    for (i, m) in markers.iter().enumerate() {
        let row_y = label_rows_top + 10.0 + (i % 2) as f64 * MARKER_ROW;
        draw_marker(&mut body, m, row_y, content_top, content_bottom, &x);
    }
    let height = content_bottom + AXIS_H;

    let title = esc(&t.title);
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" viewBox=\"0 0 {WIDTH} {height:.0}\" \
         width=\"{WIDTH}\" height=\"{height:.0}\" style=\"max-width:100%;height:auto\" \
         font-family=\"system-ui, sans-serif\" font-size=\"11\" role=\"img\" aria-label=\"{title}\">\
         <title>{title}</title>\
         <defs><pattern id=\"chart-open-end\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"3\" height=\"6\" fill=\"#ffffff\" fill-opacity=\"0.7\"/>\
         </pattern></defs>\
         <rect width=\"{WIDTH}\" height=\"{height:.0}\" fill=\"#ffffff\"/>\
         <text class=\"chart-title\" x=\"{LEFT}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{title}</text>"
    );
    out.push_str(&body);
    out.push_str("</svg>");
    out
}

/// Seconds → x. Positions outside the axis are clamped onto it; a position that is not finite
/// goes to 0.
struct XScale {
    /// The axis length in seconds; 1 when the timeline has no length, so nothing divides by 0.
    span: f64,
    /// Whether the labels read m:ss (long timelines) or seconds.
    clock: bool,
}

impl XScale {
    fn new(duration_s: f64) -> Self {
        let span = if duration_s.is_finite() && duration_s > 0.0 { duration_s } else { 1.0 };
        Self { span, clock: span > 120.0 }
    }

    fn at(&self, s: f64) -> f64 {
        let s = if s.is_finite() { s.clamp(0.0, self.span) } else { 0.0 };
        LEFT + s / self.span * (RIGHT - LEFT)
    }

    /// Tick positions in seconds: a round step giving at most 10 labels (6 or more on most
    /// lengths), on steps a reader expects (…, 10 s, 15 s, 30 s, 1 min, 2 min, 5 min, …).
    fn ticks(&self) -> (f64, Vec<f64>) {
        const STEPS: [f64; 21] = [
            0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
            10800.0, 21600.0, 43200.0, 86400.0,
        ];
        let fits = |step: f64| (self.span / step + 1e-9).floor() < 10.0;
        let mut step = STEPS.iter().copied().find(|&s| fits(s)).unwrap_or(86400.0);
        while !fits(step) {
            step *= 2.0;
        }
        let n = (self.span / step + 1e-9).floor() as usize;
        (step, (0..=n).map(|i| i as f64 * step).collect())
    }

    /// A tick label: `1:30` (or `1:02:03`) on long timelines, `45s` / `2.5s` otherwise.
    fn label(&self, s: f64, step: f64) -> String {
        if self.clock {
            clock(s)
        } else if step < 1.0 {
            format!("{s:.1}s")
        } else {
            format!("{s:.0}s")
        }
    }

    /// A time for a tooltip.
    fn when(&self, s: f64) -> String {
        if !s.is_finite() {
            "?".into()
        } else if self.clock {
            clock(s)
        } else {
            format!("{s:.1} s")
        }
    }
}

fn clock(s: f64) -> String {
    let total = s.max(0.0).round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 { format!("{h}:{m:02}:{sec:02}") } else { format!("{m}:{sec:02}") }
}

fn draw_band(out: &mut String, b: &Band, top: f64, x: &XScale) {
    if !b.start_s.is_finite() {
        return;
    }
    let kind = class_key(&b.kind);
    let x0 = x.at(b.start_s);
    let end = b.end_s.filter(|e| e.is_finite());
    let x1 = end.map_or(x.at(x.span), |e| x.at(e)).max(x0);
    // An instant band (or one shorter than a pixel) stays visible.
    let w = (x1 - x0).max(2.0);
    let until = end.map_or_else(|| "still on at the end".to_string(), |e| x.when(e));
    let _ = write!(
        out,
        "<rect class=\"band band-{kind}\" x=\"{x0:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"{LANE_H}\" rx=\"2\" \
         fill=\"{fill}\"><title>{label}: {from} – {until}</title></rect>",
        fill = band_colour(&kind),
        label = esc(&b.label),
        from = x.when(b.start_s),
    );
    if end.is_none() {
        let hx = (x0 + w - OPEN_END_W).max(x0);
        let _ = write!(
            out,
            "<rect class=\"band-open\" x=\"{hx:.1}\" y=\"{top:.1}\" width=\"{hw:.1}\" height=\"{LANE_H}\" \
             fill=\"url(#chart-open-end)\"/>",
            hw = x0 + w - hx,
        );
    }
    // Inside the band if it fits, else after it, else before it.
    let text_w = text_width(&b.label);
    let (tx, anchor) = if text_w + 8.0 <= w {
        (x0 + 4.0, "start")
    } else if x0 + w + 4.0 + text_w <= RIGHT {
        (x0 + w + 4.0, "start")
    } else {
        (x0 - 4.0, "end")
    };
    let _ = write!(
        out,
        "<text class=\"band-label\" x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" \
         fill=\"#222222\">{label}</text>",
        ty = top + LANE_H - 4.5,
        label = esc(&b.label),
    );
}

fn draw_panel(out: &mut String, p: &Panel, top: f64, x: &XScale) {
    let title = if p.unit.is_empty() { p.title.clone() } else { format!("{} ({})", p.title, p.unit) };
    let _ = write!(
        out,
        "<g class=\"panel\"><text class=\"panel-title\" x=\"{LEFT}\" y=\"{ty:.1}\" font-weight=\"bold\">{t}</text>",
        ty = top + 13.0,
        t = esc(&title),
    );
    // The legend follows the title on the same row.
    let mut lx = LEFT + text_width(&title) + 20.0;
    for (i, line) in p.lines.iter().enumerate() {
        let colour = LINE_COLOURS[i % LINE_COLOURS.len()];
        let _ = write!(
            out,
            "<g class=\"legend\"><rect x=\"{lx:.1}\" y=\"{ry:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" font-size=\"10\" fill=\"#444444\">{label}</text></g>",
            ry = top + 8.5,
            tx = lx + 14.0,
            ty = top + 13.0,
            label = esc(&line.label),
        );
        lx += 14.0 + text_width(&line.label) + 14.0;
    }

    let plot_top = top + PANEL_HEAD;
    let plot_bottom = plot_top + PLOT_H;
    let highest = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|&(_, v)| v))
        .chain(p.thresholds.iter().map(|t| t.value))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (step, n) = nice_scale(highest);
    let ymax = step * n as f64;
    // Values below 0 sit on the baseline: the axis starts at 0.
    let y = |v: f64| plot_bottom - v.clamp(0.0, ymax) / ymax * PLOT_H;

    for i in 0..=n {
        let v = step * i as f64;
        let gy = y(v);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{RIGHT}\" y2=\"{gy:.1}\" stroke=\"{GRID_COLOUR}\"/>\
             <text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#666666\">{v}</text>",
            lx = LEFT - 6.0,
            ly = gy + 3.5,
            v = fmt_num(v, step),
        );
    }
    let (_, ticks) = x.ticks();
    for s in ticks {
        let gx = x.at(s);
        let _ = write!(
            out,
            "<line x1=\"{gx:.1}\" y1=\"{plot_top:.1}\" x2=\"{gx:.1}\" y2=\"{plot_bottom:.1}\" stroke=\"{GRID_COLOUR}\"/>"
        );
    }
    let _ = write!(
        out,
        "<rect x=\"{LEFT}\" y=\"{plot_top:.1}\" width=\"{w:.1}\" height=\"{PLOT_H}\" fill=\"none\" stroke=\"#cccccc\"/>",
        w = RIGHT - LEFT,
    );

    for t in p.thresholds.iter().filter(|t| t.value.is_finite()) {
        let ty = y(t.value);
        let _ = write!(
            out,
            "<g class=\"threshold\"><title>{label}: {value}</title>\
             <line x1=\"{LEFT}\" y1=\"{ty:.1}\" x2=\"{RIGHT}\" y2=\"{ty:.1}\" stroke=\"{THRESHOLD_COLOUR}\" \
             stroke-width=\"1.2\" stroke-dasharray=\"6 4\"/>\
             <text x=\"{tx:.1}\" y=\"{ly:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"{THRESHOLD_COLOUR}\">{label}</text></g>",
            label = esc(if t.label.is_empty() { "threshold" } else { t.label.as_str() }),
            value = fmt_num(t.value, step / 100.0),
            tx = RIGHT - 4.0,
            // Above the line, unless that would leave the plot.
            ly = if ty - 3.0 > plot_top + 10.0 { ty - 3.0 } else { ty + 11.0 },
        );
    }

    for (i, line) in p.lines.iter().enumerate() {
        let colour = LINE_COLOURS[i % LINE_COLOURS.len()];
        let pts: Vec<(f64, f64)> =
            line.points.iter().filter(|(t, v)| t.is_finite() && v.is_finite()).map(|&(t, v)| (x.at(t), y(v))).collect();
        match pts.as_slice() {
            [] => {}
            // One point draws no line: a dot instead.
            [(px, py)] => {
                let _ = write!(
                    out,
                    "<circle class=\"line\" cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"2.5\" fill=\"{colour}\">\
                     <title>{label}</title></circle>",
                    label = esc(&line.label),
                );
            }
            _ => {
                let mut points = String::with_capacity(pts.len() * 12);
                for (px, py) in &pts {
                    let _ = write!(points, "{px:.1},{py:.1} ");
                }
                let _ = write!(
                    out,
                    "<polyline class=\"line\" points=\"{points}\" fill=\"none\" stroke=\"{colour}\" \
                     stroke-width=\"1.5\" stroke-linejoin=\"round\"><title>{label}</title></polyline>",
                    points = points.trim_end(),
                    label = esc(&line.label),
                );
            }
        }
    }
    out.push_str("</g>");
}

fn draw_strip(out: &mut String, s: &Strip, top: f64, x: &XScale) {
    let row = top + STRIP_HEAD;
    let _ = write!(
        out,
        "<g class=\"strip\"><text class=\"strip-label\" x=\"{LEFT}\" y=\"{ty:.1}\" font-size=\"10\" fill=\"#444444\">{label}</text>",
        ty = top + 10.0,
        label = esc(&s.label),
    );
    for seg in s.segments.iter().filter(|g| g.start_s.is_finite() && g.end_s.is_finite()) {
        let (a, b) = (x.at(seg.start_s.min(seg.end_s)), x.at(seg.start_s.max(seg.end_s)));
        let state = seg.state.name();
        let _ = write!(
            out,
            "<rect class=\"strip-{state}\" x=\"{a:.1}\" y=\"{row:.1}\" width=\"{w:.1}\" height=\"{STRIP_H}\" \
             fill=\"{fill}\"><title>{state}: {from} – {to}</title></rect>",
            w = (b - a).max(0.5),
            fill = seg.state.colour(),
            from = x.when(seg.start_s),
            to = x.when(seg.end_s),
        );
    }
    out.push_str("</g>");
}

fn draw_axis(out: &mut String, y: f64, x: &XScale) {
    let _ = write!(
        out,
        "<g class=\"axis\"><line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{RIGHT}\" y2=\"{y:.1}\" stroke=\"#999999\"/>"
    );
    let (step, ticks) = x.ticks();
    for s in ticks {
        let tx = x.at(s);
        // The last label may end at the right edge rather than run past it.
        let anchor = if tx > RIGHT - 20.0 { "end" } else { "middle" };
        let _ = write!(
            out,
            "<line x1=\"{tx:.1}\" y1=\"{y:.1}\" x2=\"{tx:.1}\" y2=\"{y2:.1}\" stroke=\"#999999\"/>\
             <text x=\"{tx:.1}\" y=\"{ly:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"#666666\">{label}</text>",
            y2 = y + 4.0,
            ly = y + 15.0,
            label = esc(&x.label(s, step)),
        );
    }
    out.push_str("</g>");
}

fn draw_marker(out: &mut String, m: &Marker, label_y: f64, top: f64, bottom: f64, x: &XScale) {
    let mx = x.at(m.at_s);
    let (class, colour, width, weight) = match m.kind {
        MarkerKind::Step => ("marker-step", STEP_COLOUR, 1.0, "normal"),
        MarkerKind::Breach => ("marker-breach", BREACH_COLOUR, 3.0, "bold"),
    };
    let text_w = text_width(&m.label);
    let (tx, anchor) = if mx + 3.0 + text_w > WIDTH { (mx - 3.0, "end") } else { (mx + 3.0, "start") };
    let _ = write!(
        out,
        "<g class=\"marker {class}\"><title>{label} at {when}</title>\
         <line x1=\"{mx:.1}\" y1=\"{ly1:.1}\" x2=\"{mx:.1}\" y2=\"{bottom:.1}\" stroke=\"{colour}\" stroke-width=\"{width}\"/>\
         <text x=\"{tx:.1}\" y=\"{label_y:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"{colour}\" \
         font-weight=\"{weight}\">{label}</text></g>",
        label = esc(&m.label),
        when = x.when(m.at_s),
        // The line reaches up to its label's row.
        ly1 = (label_y + 2.0).min(top),
    );
}

/// A y scale from 0 that holds `highest`: (step, number of steps), with 3 or 4 steps of 1, 2,
/// 2.5 or 5 × a power of ten.
fn nice_scale(highest: f64) -> (f64, usize) {
    // Nothing to show (or nothing measurable): a 0–1 scale.
    let v = if highest.is_finite() && highest > 1e-9 { highest } else { 1.0 };
    let mut p = 10f64.powf((v / 4.0).log10().floor());
    // The step reaches v/4 within two decades; the bound only guards against float surprises.
    for _ in 0..4 {
        for m in [1.0, 2.0, 2.5, 5.0] {
            let step = m * p;
            let n = (v / step - 1e-9).ceil().max(1.0);
            if n <= 4.0 {
                return (step, n as usize);
            }
        }
        p *= 10.0;
    }
    (v, 1)
}

/// A number with as many decimals as `step` needs (`0.25`, `2.5`, `1000`).
fn fmt_num(v: f64, step: f64) -> String {
    let decimals = (0..6)
        .find(|&d| {
            let s = step.abs() * 10f64.powi(d);
            (s - s.round()).abs() < 1e-6 * s.max(1.0)
        })
        .unwrap_or(6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * CHAR_W
}

/// A kind as a class name: lowercase `[a-z0-9_-]`, anything else becomes `-`.
fn class_key(kind: &str) -> String {
    let k: String = kind
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '-' })
        .collect();
    if k.is_empty() { "unknown".into() } else { k }
}

/// Text for HTML, SVG or XML content and attribute values: the one escape of the crate (the
/// pages that embed a chart and `chaos-lab run --junit` use it too). Besides the five markup
/// characters, line breaks and tabs become character references, which an XML parser would
/// otherwise fold into spaces in an attribute (the same characters everywhere else), and the
/// control characters XML 1.0 cannot carry at all become U+FFFD.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Timeline {
        Timeline {
            title: "run 42".into(),
            duration_s: 60.0,
            lanes: vec![
                Band { label: "network_block".into(), kind: "network_block".into(), start_s: 10.0, end_s: Some(30.0) },
                Band { label: "hang 5 s".into(), kind: "Hang".into(), start_s: 40.0, end_s: None },
            ],
            panels: vec![Panel {
                title: "Latency".into(),
                unit: "ms".into(),
                lines: vec![Line {
                    label: "p95".into(),
                    points: (0..60).map(|s| (s as f64, 50.0 + s as f64)).collect(),
                }],
                thresholds: vec![Threshold { label: "p95 < 1000 ms".into(), value: 1000.0 }],
            }],
            strip: Some(Strip {
                label: "health".into(),
                segments: vec![
                    StripSegment { start_s: 0.0, end_s: 12.0, state: StripState::Healthy },
                    StripSegment { start_s: 12.0, end_s: 31.0, state: StripState::Unreachable },
                    StripSegment { start_s: 31.0, end_s: 60.0, state: StripState::Unknown },
                ],
            }),
            markers: vec![
                Marker { at_s: 10.0, label: "step 1".into(), kind: MarkerKind::Step },
                Marker { at_s: 21.5, label: "guard p95_ms".into(), kind: MarkerKind::Breach },
            ],
        }
    }

    #[test]
    fn a_timeline_draws_its_bands_markers_lines_thresholds_and_strip() {
        let s = svg(&sample());
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && s.ends_with("</svg>"));
        assert!(s.contains("viewBox=\"0 0 1100 "));
        assert!(s.contains("class=\"band band-network_block\""), "{s}");
        assert!(s.contains("class=\"band band-hang\""), "kinds are lowercased: {s}");
        assert!(s.contains("class=\"band-open\""), "a band still on gets its hatched end");
        assert!(s.contains("network_block: 10.0 s – 30.0 s"), "band tooltip: {s}");
        assert!(s.contains("still on at the end"));
        assert!(s.contains("class=\"marker marker-breach\"") && s.contains("class=\"marker marker-step\""));
        assert!(s.contains("class=\"line\""));
        assert!(s.contains("class=\"threshold\"") && s.contains("p95 &lt; 1000 ms"));
        assert!(s.contains("class=\"strip-healthy\"") && s.contains("class=\"strip-unreachable\""));
        assert!(s.contains("class=\"strip-unknown\""));
        // The scale holds the threshold: 1000 is its top gridline label.
        assert!(s.contains(">1000</text>"), "{s}");
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let mut t = sample();
        t.title = "a <b> & \"c\"".into();
        t.lanes[0].label = "<&>".into();
        t.lanes[0].kind = "net<work> &x".into();
        t.panels[0].lines[0].label = "<&>".into();
        t.markers[0].label = "<&>".into();
        let s = svg(&t);
        assert!(!s.contains("<&>") && !s.contains("<b>"), "{s}");
        assert!(s.contains("&lt;&amp;&gt;") && s.contains("a &lt;b&gt; &amp; &quot;c&quot;"));
        assert!(s.contains("class=\"band band-net-work---x\""), "{s}");
    }

    #[test]
    fn empty_and_degenerate_timelines_still_draw() {
        let s = svg(&Timeline::default());
        assert!(s.starts_with("<svg") && s.ends_with("</svg>") && !s.contains("NaN"), "{s}");
        let t = Timeline {
            title: String::new(),
            duration_s: f64::NAN,
            lanes: vec![Band { label: "x".into(), kind: String::new(), start_s: f64::NAN, end_s: None }],
            panels: vec![
                Panel::default(),
                Panel {
                    lines: vec![
                        Line { label: "nan".into(), points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)] },
                        Line { label: "one".into(), points: vec![(0.0, 0.0)] },
                        Line { label: "flat".into(), points: vec![(0.0, 0.0), (1.0, 0.0)] },
                    ],
                    thresholds: vec![Threshold { label: "t".into(), value: f64::NAN }],
                    ..Default::default()
                },
            ],
            strip: Some(Strip { label: String::new(), segments: vec![] }),
            markers: vec![Marker { at_s: f64::INFINITY, label: "never".into(), kind: MarkerKind::Breach }],
        };
        let s = svg(&t);
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        assert!(!s.contains("never"), "a marker with no time is left out");
        let zero = svg(&Timeline { duration_s: 0.0, ..sample() });
        assert!(!zero.contains("NaN"));
    }

    #[test]
    fn scales_and_ticks_are_round() {
        let close = |(step, n): (f64, usize), want: (f64, usize)| (step - want.0).abs() < 1e-9 && n == want.1;
        assert!(close(nice_scale(900.0), (250.0, 4)));
        assert!(close(nice_scale(1.0), (0.25, 4)));
        assert!(close(nice_scale(0.0), (0.25, 4)), "nothing to show: 0 to 1");
        let (step, n) = nice_scale(1.01);
        assert!((3..=4).contains(&n) && step * n as f64 >= 1.01);
        for v in [0.003, 0.7, 3.0, 47.0, 123.4, 99_999.0] {
            let (step, n) = nice_scale(v);
            assert!((3..=4).contains(&n) && step * n as f64 >= v, "{v}: {step} x {n}");
        }
        for (duration, step) in [(60.0, 10.0), (600.0, 120.0), (1.0, 0.2), (45.0, 5.0), (100_000.0, 10800.0)] {
            let x = XScale::new(duration);
            let (s, ticks) = x.ticks();
            assert_eq!(s, step, "{duration}");
            assert!(ticks.len() <= 10 && ticks.len() >= 4, "{duration}: {ticks:?}");
        }
        assert_eq!(XScale::new(600.0).label(90.0, 60.0), "1:30");
        assert_eq!(XScale::new(60.0).label(30.0, 10.0), "30s");
        assert_eq!(fmt_num(750.0, 250.0), "750");
        assert_eq!(fmt_num(0.5, 0.25), "0.5");
        assert_eq!(fmt_num(0.75, 0.25), "0.75");
    }
}
