//! `loadgen` command line: run a profile (closed model on goose, or open model with `--rate`),
//! or merge JSON reports from several machines.
//!
//! goose's own options are part of the command line (its `GooseConfiguration` is flattened in),
//! with a few changes made to the built command ([`command`]): the options loadgen cannot honour
//! (goose's web dashboard is not compiled in, its telnet Controller is off) are hidden and refused
//! with the reason (`UNAVAILABLE`); goose's duration options take the shared duration syntax
//! ([`crate::duration`]); and the help of the options loadgen changes says what they do here.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use goose::config::GooseConfiguration;

use super::profile::{self, Scaling};
use super::report::Report;

const EXAMPLES: &str = "\
Examples:
  loadgen --profile staged --host http://127.0.0.1:8000
  loadgen --profile spike --scale 0.01 --time-scale 0.1          # a laptop-sized spike
  loadgen --profile sustained --rate 200 --timeout 5s            # open model: 200 requests/s
  loadgen --profile staged --threshold 'p95<300ms' --threshold 'error-rate<0.5%'
  loadgen --profile staged --json run.json --report-file run.html   # write the reports
  loadgen --profile staged --split 4 --json part-1.json          # one of 4 machines
  loadgen merge part-*.json --json all.json                      # one report for all 4

Reports: none unless asked; the end of the summary says which files were written. --json PATH
has the figures, histograms and a per-second series. --report-file PATH.html is drawn by loadgen
itself, with its per-second chart inline, so it works offline; other --report-file formats
(.json, .md) are goose's and only written by closed-model runs.

While it runs, a live line on stderr shows the elapsed and planned time, users, requests/s, p95
and errors, each --interval, when stderr is a terminal; --live prints it anyway (one line each
time), --quiet turns it off. --progress-json prints JSON lines on stdout, for programs.

Durations (--timeout, --interval, -t, -s, --decrease-time, --threshold-abort-delay): seconds (30)
or a number with a unit: 500ms, 30s, 5m, 1h, 1m30s.

Exit status: 0 every threshold passed, 1 a threshold failed, 2 the run could not start.
Profiles are TOML files (see loadtests/README.md); Locust reads the same files.";

/// goose options that cannot work in loadgen, by clap id, with the reason: hidden from `--help`
/// and refused when given.
const UNAVAILABLE: [(&str, &str); 10] = [
    ("dashboard", NO_DASHBOARD),
    ("dashboard_host", NO_DASHBOARD),
    ("dashboard_port", NO_DASHBOARD),
    ("dashboard_auth_token", NO_DASHBOARD),
    ("dashboard_control", NO_DASHBOARD),
    ("dashboard_no_auth", NO_DASHBOARD),
    ("dashboard_max_clients", NO_DASHBOARD),
    ("telnet_host", NO_TELNET),
    ("telnet_port", NO_TELNET),
    ("render_report", NO_RENDER),
];

const NO_DASHBOARD: &str = "loadgen is built on goose without its web dashboard (goose's `dashboard` \
                            feature); follow a run with the live line on stderr (--live where stderr \
                            is not a terminal), and read it afterwards in the HTML report \
                            (--report-file PATH.html)";
const NO_TELNET: &str = "loadgen runs goose without its telnet Controller: the profile's plan drives the \
                         users (goose's WebSocket Controller, --websocket, is still there)";
const NO_RENDER: &str = "loadgen does not render goose's JSON reports; to draw a loadgen JSON report \
                         as a page, use `loadgen merge REPORT.json --html PAGE.html`";

/// goose options that do nothing in loadgen (loadgen already sets them): hidden, still accepted.
const NO_OPS: [&str; 2] = ["no_telnet", "no_print_metrics"];

/// goose's whole-second duration options (goose reads `30`, `30s`, `1h30m`); loadgen reads them
/// with the shared parser and hands goose the seconds.
const WHOLE_SECONDS: [&str; 4] = ["run_time", "increase_time", "decrease_time", "threshold_abort_delay"];

/// New help for the goose options whose goose help does not hold in loadgen: (id, short, long).
const HELP: [(&str, &str, &str); 8] = [
    (
        "report_file",
        "Write a report to FILE (.html, .json, .md); repeatable",
        "Write a report to FILE (.html, .json, .md); repeatable\n\n\
         Writes a report when the run ends; nothing is written unless asked. FILE.html (or .htm) \
         is loadgen's own HTML report, with its per-second chart, for both models. FILE.json and \
         FILE.md are goose's reports, closed model only (loadgen's own JSON report is --json). \
         Repeat the option to write several.\n\n\
         Example: --report-file report.html",
    ),
    (
        "timeout",
        "Request timeout [default: 60s]",
        "Request timeout [default: 60s]\n\n\
         How long each request may take before it fails, in both models: seconds (15, 0.5) or a \
         duration (500ms, 15s, 1m).\n\n\
         Example: --timeout 15s",
    ),
    (
        "quiet",
        "Less output: no live line, goose warnings only",
        "Less output: no live line, goose warnings only\n\n\
         Turns off the live line on stderr, and goose's console shows only warnings and errors. \
         The summary is still printed. Not allowed with --verbose or --live.\n\n\
         Example: -q",
    ),
    (
        "output_dir",
        "Run folder, or goose-runs/<start time>",
        "Run folder, or goose-runs/<start time>\n\n\
         Sets the folder for goose's output flags given without a path (-G, --request-log, \
         --error-log, ...). Goose creates it as the run starts, and removes it at the end of a run \
         that wrote nothing into it. When the folder already holds files, the run uses DIR-2, \
         DIR-3 and so on. Needs an output flag given without a path.\n\n\
         Example: --output-dir goose-runs/nightly --request-log",
    ),
    (
        "notes",
        "Label the run in goose's reports",
        "Label the run in goose's reports\n\n\
         Stores TEXT in goose's JSON report and shows it at the top of goose's Markdown report. \
         Needs a goose report: --report-file FILE.json or FILE.md, or --pdf-print-html.\n\n\
         Example: --notes \"baseline before cache change\"",
    ),
    (
        "report_graph_data",
        "Add graph data to goose's JSON report",
        "Add graph data to goose's JSON report\n\n\
         Adds the per second data behind goose's report graphs to goose's JSON report. Needs \
         --report-file FILE.json or FILE.md. (loadgen's own --json report always has its \
         per-second series.)",
    ),
    (
        "no_granular_report",
        "Graph only totals in goose's reports",
        "Graph only totals in goose's reports\n\n\
         goose's report graphs show a line for the total and one more for each request, \
         transaction or scenario; this leaves out the extra lines. Needs a goose report: \
         --report-file FILE.json or FILE.md, or --pdf-print-html.",
    ),
    (
        "no_autostart",
        "Wait for the WebSocket Controller to start the test",
        "Wait for the WebSocket Controller to start the test\n\n\
         Starts idle and waits for a start command from goose's WebSocket Controller, which needs \
         --websocket. Closed model only.",
    ),
];

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for chaos-lab: the staged, spike and sustained profiles on goose",
    long_about = "Load generator for chaos-lab. Runs a load profile (loadtests/profiles/NAME.toml) \
                  against the service: a closed model on goose (users with think time; goose's \
                  options below apply), or an open model with --rate (requests start on a clock; \
                  latency counts from the intended start). Shows a live line on stderr while it \
                  runs, prints a one-screen summary, and exits non-zero when a threshold fails. \
                  Writes reports only when asked: a JSON report (--json) and an HTML report with a \
                  per-second chart (--report-file NAME.html; drawn by loadgen, works offline).",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    goose: GooseConfiguration,
}

/// The command line as loadgen parses it: [`Cli`], with goose's options adapted (see the module
/// documentation).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for (id, _) in UNAVAILABLE {
        cmd = cmd.mut_arg(id, |a| a.hide(true));
    }
    for id in NO_OPS {
        cmd = cmd.mut_arg(id, |a| a.hide(true));
    }
    for id in WHOLE_SECONDS {
        cmd = cmd.mut_arg(id, |a| a.value_parser(whole_seconds));
    }
    for (id, short, long) in HELP {
        cmd = cmd.mut_arg(id, |a| a.help(short).long_help(long));
    }
    cmd.mut_arg("timeout", |a| a.value_parser(timeout_seconds).value_name("DURATION"))
        // A path is needed: goose's bare --report-file writes goose's own HTML report.
        .mut_arg("report_file", |a| a.num_args(1).default_missing_value(None::<&'static str>))
        // Its heading's other options are hidden; it is about goose's metrics.
        .mut_arg("no_percentiles_over_time", |a| {
            a.help_heading("Metrics").long_help(
                "Don't track per-second response times\n\n\
                 Leaves out goose's per-second response time percentiles, which saves memory, and \
                 the response time heatmap of goose's reports. loadgen's own per-second series is \
                 kept.",
            )
        })
}

/// Whether option `id` was given on the command line (not a default).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// A goose whole-second duration (`-t 2m`) as the seconds goose reads.
fn whole_seconds(s: &str) -> Result<String, String> {
    crate::config::duration::parse_whole_secs(s).map(|n| n.to_string())
}

/// `--timeout` (`500ms`, `15s`, `15`) as the decimal seconds goose reads.
fn timeout_seconds(s: &str) -> Result<String, String> {
    let d = crate::config::duration::parse(s)?;
    if d.is_zero() {
        return Err(format!("'{s}' must be more than 0"));
    }
    Ok(d.as_secs_f64().to_string())
}

/// `--interval`: whole seconds, at least 1 (the live line is made of the per-second series).
fn parse_interval(s: &str) -> Result<u64, String> {
    match crate::config::duration::parse_whole_secs(s)? {
        0 => Err(format!("'{s}' must be at least 1s")),
        n => Ok(n),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Merge JSON reports of one profile run from several machines into one report
    Merge {
        /// loadgen JSON reports (from --json)
        #[arg(required = true, value_name = "REPORT")]
        files: Vec<PathBuf>,
        /// Write the merged JSON report to PATH (nothing is written unless asked)
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Write the merged figures as an HTML page to PATH
        #[arg(long, value_name = "PATH")]
        html: Option<PathBuf>,
        /// Judge these rules instead of the ones the reports carry (goose --threshold syntax)
        #[arg(long, value_name = "RULE")]
        threshold: Vec<String>,
    },
}

#[derive(Args)]
#[command(next_help_heading = "Profile")]
struct RunArgs {
    /// Load profile: a name in the profiles directory (staged, spike, sustained, ...) or a path
    #[arg(long, env = "LOADGEN_PROFILE", default_value = "staged", value_name = "NAME")]
    profile: String,
    /// Directory of profile files
    #[arg(long, env = "LOADGEN_PROFILES_DIR", default_value = profile::DEFAULT_DIR, value_name = "DIR")]
    profiles_dir: PathBuf,
    /// Multiply every stage's user count (and rate) by F; a stage with users keeps at least 1
    #[arg(long, default_value_t = 1.0, value_parser = positive, value_name = "F")]
    scale: f64,
    /// Multiply every stage's duration by F (0.01 runs a 10-minute profile in 6 s)
    #[arg(long, default_value_t = 1.0, value_parser = positive, value_name = "F")]
    time_scale: f64,
    /// This machine's share when N machines run the profile together: users (and rate) / N
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "N")]
    split: u32,
    /// Open model: start N requests per second for the whole profile (stage `rate`s otherwise)
    #[arg(long, value_parser = positive, value_name = "N")]
    rate: Option<f64>,
    /// Write loadgen's JSON report to PATH (per-endpoint figures and histograms, a per-second
    /// series; mergeable). Nothing is written unless asked
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    json: Option<PathBuf>,
    /// Do not apply the default thresholds (p95<1000ms, error-rate<1%) when no --threshold is given
    #[arg(long)]
    no_default_thresholds: bool,
    /// Print one JSON progress line per second on stdout, with that second's figures (used by
    /// the service's loadgen())
    #[arg(long, help_heading = "Output")]
    progress_json: bool,
    /// Print the live line on stderr even when stderr is not a terminal: one line each interval
    /// (on a terminal it is shown anyway, rewritten in place)
    #[arg(long, help_heading = "Output", conflicts_with = "quiet")]
    live: bool,
    /// How often the live line is printed: whole seconds (1, 5s, 1m)
    #[arg(
        long,
        help_heading = "Output",
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_interval
    )]
    interval: u64,
    /// Print the goose test plan (or the open-model stages) the profile gives, and exit
    #[arg(long)]
    print_plan: bool,
    /// Die with process PID: the service passes its own pid, so a load it started cannot outlive
    /// it (Linux parent-death signal; exits at once if PID is already gone)
    #[arg(long, value_name = "PID")]
    parent_pid: Option<u32>,
    /// Whether `--test-plan` was given (goose keeps the plan to itself): set after parsing.
    #[arg(skip)]
    plan_given: bool,
}

fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("must be a number more than 0, got '{s}'")),
    }
}

pub fn main() -> ExitCode {
    // rustls needs one process-wide crypto provider when more than one is compiled in.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut cmd = command();
    let matches = cmd.get_matches_mut();
    if let Some(&(id, why)) = UNAVAILABLE.iter().find(|&&(id, _)| given(&matches, id)) {
        let flag = format!("--{}", id.replace('_', "-"));
        cmd.error(ErrorKind::ArgumentConflict, format!("{flag} is not available in loadgen: {why}")).exit();
    }
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.format(&mut cmd).exit(),
    };
    cli.run.plan_given = given(&matches, "test_plan");
    if let Some(pid) = cli.run.parent_pid
        && let Err(e) = crate::child::die_with_parent(pid)
    {
        eprintln!("loadgen: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let result = match cli.command {
        Some(Command::Merge { files, json, html, threshold }) => {
            merge(&files, json.as_deref(), html.as_deref(), &threshold)
        }
        None => runtime.block_on(run(cli.run, cli.goose)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // A live line rewritten in place gets its newline first.
            super::finish_live();
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn merge(files: &[PathBuf], json: Option<&Path>, html: Option<&Path>, rules: &[String]) -> Result<bool, String> {
    let parts = files.iter().map(|f| Report::read_json(f)).collect::<Result<Vec<_>, _>>()?;
    let mut merged = Report::merge(parts)?;
    if !rules.is_empty() {
        merged.judge(rules)?;
    }
    let mut written = Vec::new();
    if let Some(j) = json {
        create_parent(j)?;
        merged.write_json(j)?;
        written.push(j.to_path_buf());
    }
    if let Some(h) = html {
        write_file(h, &merged.html())?;
        written.push(h.to_path_buf());
    }
    print!("{}", merged.summary());
    print!("{}", reports_line(&written, "--json PATH, --html PATH"));
    Ok(merged.passed)
}

/// Runs one profile; Ok(passed).
async fn run(args: RunArgs, mut goose: GooseConfiguration) -> Result<bool, String> {
    let (_, profile) = profile::load(&args.profiles_dir, &args.profile)?;
    let share = f64::from(args.split);
    let scaling = Scaling { users: args.scale / share, time: args.time_scale };
    let rate = args.rate.map(|r| r / share);
    let open = args.rate.is_some() || profile.has_rates();
    let rules: Vec<String> = if !goose.threshold.is_empty() {
        goose.threshold.clone()
    } else if args.no_default_thresholds {
        Vec::new()
    } else {
        super::DEFAULT_THRESHOLDS.iter().map(|s| s.to_string()).collect()
    };
    if args.print_plan {
        if open {
            for s in profile.open_segments(scaling, rate) {
                println!("{:.3}s at {:.2} requests/s, at most {} in flight", s.seconds, s.rate, s.cap);
            }
        } else {
            println!("{}", profile.goose_plan(scaling));
        }
        return Ok(true);
    }
    // loadgen writes the HTML report itself, for both models: goose's fetches its chart library
    // from a CDN and shows nothing offline. The other formats asked of goose stay goose's.
    let (html, others): (Vec<String>, Vec<String>) =
        std::mem::take(&mut goose.report_file).into_iter().partition(|f| is_html(f));
    if open && !others.is_empty() {
        return Err(format!(
            "--report-file {}: the open model writes loadgen's own reports only: --json PATH for JSON, \
             --report-file PATH.html for HTML",
            others.join(", ")
        ));
    }
    goose.report_file = others.clone();
    // The planned length, for the live line: the open model's stages, or the profile's goose
    // plan unless the command line sizes the run itself.
    let total_s: Option<f64> = if open {
        Some(profile.open_segments(scaling, rate).iter().map(|s| s.seconds).sum())
    } else if !super::closed::sized_by_flags(&goose) && !args.plan_given {
        Some(profile.test_plan(scaling).iter().map(|&(_, secs)| secs as f64).sum())
    } else {
        None
    };
    let terminal = std::io::stderr().is_terminal();
    let live = (goose.quiet == 0 && (args.live || terminal))
        .then(|| super::LiveLine::new(terminal, args.interval, total_s, open));
    super::spawn_series(args.progress_json, live);
    let mut report = if open {
        let host = goose.host.clone().unwrap_or_else(|| super::DEFAULT_HOST.to_string());
        // Already decimal seconds (see `timeout_seconds`).
        let timeout = match goose.timeout.as_deref() {
            Some(t) => Duration::from_secs_f64(positive(t).map_err(|e| format!("--timeout {e}"))?),
            None => Duration::from_secs(60),
        };
        let segments = profile.open_segments(scaling, rate);
        let started_at = crate::timestamp();
        let out = super::open::run(&host, &segments, timeout).await?;
        let series = super::take_series();
        let mut report = Report {
            model: "open".into(),
            host,
            started_at,
            duration_s: out.duration_s,
            parts: 1,
            max_users: out.max_users,
            endpoints: out.endpoints,
            open_model: Some(out.open),
            series,
            ..Default::default()
        };
        report.finish();
        report.judge(&rules)?;
        report
    } else {
        // goose judges the rules: the ones given, or the defaults, all as goose defaults.
        goose.threshold.clear();
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let (mut report, _) = super::closed::run(goose, &profile, scaling, &rules).await.map_err(describe)?;
        report.series = super::take_series();
        report
    };
    report.profile = args.profile;
    report.scale = args.scale;
    report.time_scale = args.time_scale;
    report.split = args.split;
    // goose has written the reports asked of it by now; loadgen writes its own.
    let mut written: Vec<PathBuf> = others.iter().map(PathBuf::from).collect();
    if let Some(json) = &args.json {
        create_parent(json)?;
        report.write_json(json)?;
        written.push(json.clone());
    }
    if !html.is_empty() {
        let page = report.html();
        for path in &html {
            write_file(Path::new(path), &page)?;
            written.push(PathBuf::from(path));
        }
    }
    print!("{}", report.summary());
    print!("{}", reports_line(&written, "--json PATH, --report-file PATH.html"));
    Ok(report.passed)
}

/// Creates the directory `path` goes in, if it names one that is not there yet.
fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    create_parent(path)?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The summary's last line: the report files written (absolute paths), or how to ask for them.
fn reports_line(written: &[PathBuf], how: &str) -> String {
    if written.is_empty() {
        return format!("reports: none written (ask with {how})\n");
    }
    let shown: Vec<String> =
        written.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string()).collect();
    format!("reports: {}\n", shown.join(", "))
}

/// Whether a `--report-file` entry is an HTML report (goose picks the type by extension too).
fn is_html(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.ends_with(".html") || p.ends_with(".htm")
}

/// goose's `Display` leaves out which option was refused and why.
fn describe(e: goose::GooseError) -> String {
    match e {
        goose::GooseError::InvalidOption { option, value, detail } => format!("{option} = '{value}': {detail}"),
        other => other.to_string(),
    }
}
