//! `loadgen` command line: run a profile (closed model on goose, or open model with `--rate`),
//! or merge JSON reports from several machines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use goose::config::GooseConfiguration;

use super::profile::{self, Scaling};
use super::report::Report;

const EXAMPLES: &str = "\
Examples:
  loadgen --profile staged --host http://127.0.0.1:8000
  loadgen --profile spike --scale 0.01 --time-scale 0.1          # a laptop-sized spike
  loadgen --profile sustained --rate 200                         # open model: 200 requests/s
  loadgen --profile staged --threshold 'p95<300ms' --threshold 'error-rate<0.5%'
  loadgen --profile staged --split 4 --json part-1.json          # one of 4 machines
  loadgen merge part-*.json --json all.json                      # one report for all 4

Reports: --json PATH (default loadgen-report.json) has the figures, histograms and a per-second
series. --report-file PATH.html (default loadgen-report.html) is drawn by loadgen itself, with its
per-second chart inline, so it works offline; other --report-file formats (.json, .md) are goose's
and only written by closed-model runs.

Exit status: 0 every threshold passed, 1 a threshold failed, 2 the run could not start.
Profiles are TOML files (see loadtests/README.md); Locust reads the same files.";

/// Where the HTML report goes unless `--report-file` names an `.html` file.
const DEFAULT_HTML: &str = "loadgen-report.html";

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator for chaos-lab: the staged, spike and sustained profiles on goose",
    long_about = "Load generator for chaos-lab. Runs a load profile (loadtests/profiles/NAME.toml) \
                  against the service: a closed model on goose (users with think time, every goose \
                  option below works), or an open model with --rate (requests start on a clock; \
                  latency counts from the intended start). Writes a JSON report (--json) and an \
                  HTML report with a per-second chart (--report-file NAME.html; drawn by loadgen, \
                  works offline), prints a one-screen summary, and exits non-zero when a threshold \
                  fails.",
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

#[derive(Subcommand)]
enum Command {
    /// Merge JSON reports of one profile run from several machines into one report
    Merge {
        /// loadgen JSON reports (from --json)
        #[arg(required = true, value_name = "REPORT")]
        files: Vec<PathBuf>,
        /// Where to write the merged JSON report
        #[arg(long, value_name = "PATH", default_value = "loadgen-merged.json")]
        json: PathBuf,
        /// Also write the merged figures as an HTML page
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
    /// Where to write loadgen's JSON report (per-endpoint figures and histograms, a per-second
    /// series; mergeable)
    #[arg(long, value_name = "PATH", default_value = "loadgen-report.json")]
    json: PathBuf,
    /// Do not apply the default thresholds (p95<1000ms, error-rate<1%) when no --threshold is given
    #[arg(long)]
    no_default_thresholds: bool,
    /// Print one JSON progress line per second on stdout, with that second's figures (used by
    /// the service's loadgen())
    #[arg(long)]
    progress_json: bool,
    /// Print the goose test plan (or the open-model stages) the profile gives, and exit
    #[arg(long)]
    print_plan: bool,
    /// Die with process PID: the service passes its own pid, so a load it started cannot outlive
    /// it (Linux parent-death signal; exits at once if PID is already gone)
    #[arg(long, value_name = "PID")]
    parent_pid: Option<u32>,
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
    let cli = Cli::parse();
    if let Some(pid) = cli.run.parent_pid
        && let Err(e) = crate::child::die_with_parent(pid)
    {
        eprintln!("loadgen: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    let result = match cli.command {
        Some(Command::Merge { files, json, html, threshold }) => merge(&files, &json, html.as_deref(), &threshold),
        None => runtime.block_on(run(cli.run, cli.goose)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

fn merge(
    files: &[PathBuf],
    json: &std::path::Path,
    html: Option<&std::path::Path>,
    rules: &[String],
) -> Result<bool, String> {
    let parts = files.iter().map(|f| Report::read_json(f)).collect::<Result<Vec<_>, _>>()?;
    let mut merged = Report::merge(parts)?;
    if !rules.is_empty() {
        merged.judge(rules)?;
    }
    merged.write_json(json)?;
    if let Some(h) = html {
        std::fs::write(h, merged.html()).map_err(|e| format!("cannot write {}: {e}", h.display()))?;
    }
    print!("{}", merged.summary());
    Ok(merged.passed)
}

/// Runs one profile; Ok(passed).
async fn run(args: RunArgs, mut goose: GooseConfiguration) -> Result<bool, String> {
    let (_, profile) = profile::load(&args.profiles_dir, &args.profile)?;
    let share = f64::from(args.split);
    let scaling = Scaling { users: args.scale / share, time: args.time_scale };
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
            for s in profile.open_segments(scaling, args.rate.map(|r| r / share)) {
                println!("{:.3}s at {:.2} requests/s, at most {} in flight", s.seconds, s.rate, s.cap);
            }
        } else {
            println!("{}", profile.goose_plan(scaling));
        }
        return Ok(true);
    }
    // loadgen writes the HTML report itself, for both models: goose's fetches its chart library
    // from a CDN and shows nothing offline. The other formats asked of goose stay goose's.
    let (mut html, others): (Vec<String>, Vec<String>) =
        std::mem::take(&mut goose.report_file).into_iter().partition(|f| is_html(f));
    goose.report_file = others;
    if html.is_empty() {
        html.push(DEFAULT_HTML.to_string());
    }
    super::spawn_series(args.progress_json);
    let mut report = if open {
        let host = goose.host.clone().unwrap_or_else(|| super::DEFAULT_HOST.to_string());
        let timeout = match goose.timeout.as_deref() {
            Some(t) => Duration::from_secs_f64(positive(t).map_err(|e| format!("--timeout {e}"))?),
            None => Duration::from_secs(60),
        };
        let segments = profile.open_segments(scaling, args.rate.map(|r| r / share));
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
    report.write_json(&args.json)?;
    let page = report.html();
    for path in &html {
        std::fs::write(path, &page).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    print!("{}", report.summary());
    Ok(report.passed)
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
