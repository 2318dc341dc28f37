//! The binary's subcommands. For script authors: `chaos-lab check FILE.rhai` (compile and static
//! checks, no service needed) and `chaos-lab run FILE.rhai|SCENARIO --url URL` (submit a file or
//! a catalog scenario to a running service, stream the run's events until it ends, and write its
//! journal, JUnit XML or HTML report for CI). For operators, replacing the original lab's bash
//! scripts and the `az` CLI: `network inject|clear|list`, `deploy-fault`, `revisions` (see
//! docs/azure.md); they read the azd environment's names.

mod check;
mod operator;
mod run;

use std::path::PathBuf;

pub use operator::{AzureTarget, NetworkAction};

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::Config;
use crate::faults::deploy::DeployFaultKind;

/// chaos-lab: a small Redis-backed service that breaks itself on purpose.
///
/// Without a subcommand, runs the HTTP service (`GET /`, `GET /health`, `/chaos/*`). Every option
/// can also be set with the environment variable shown in brackets; a flag wins over the variable.
/// `check` and `run` help script authors.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "chaos-lab",
    version,
    args_override_self = true,
    after_help = "Examples:\n  chaos-lab                                  # local Redis on localhost:6379, listen on 127.0.0.1:8000\n  REDIS_HOST=10.0.2.4 REDIS_PORT=10000 REDIS_SSL=true APP_HOST=0.0.0.0 chaos-lab\n\nTelemetry (read from the environment; see docs/observability.md):\n  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,\n  OTEL_TRACES_SAMPLER(_ARG), APPLICATIONINSIGHTS_CONNECTION_STRING, APPLICATIONINSIGHTS_ENDPOINT\n\nAPI reference: GET /docs on the running service, or docs/api.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

impl Cli {
    /// Parses the process's arguments and environment (exits with clap's message on an error).
    pub fn parse_all() -> Self {
        let matches = Cli::command().get_matches();
        Cli::from_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// What was parsed, plus which settings were given rather than defaulted.
    fn from_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = Cli::from_arg_matches(m)?;
        cli.config = Config::from_matches(m)?;
        Ok(cli)
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Internal: run PROGRAM so that it dies with process PARENT_PID (the development Redis).
    #[command(hide = true)]
    ExecGuarded {
        #[arg(long)]
        parent_pid: u32,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Compile scenario scripts and check their header and the functions they call, without
    /// running them. Exits non-zero and prints FILE:LINE:COLUMN for every problem.
    Check {
        /// One or more .rhai files.
        #[arg(required = true, value_name = "FILE.rhai")]
        files: Vec<PathBuf>,
    },
    /// Run a scenario file or a catalog scenario on a running chaos-lab, stream its steps until
    /// it ends, then print its impact (time to detect, time to recover, requests, failures, error
    /// budget).
    ///
    /// The argument is a file when it ends in .rhai or names an existing file: the script is sent
    /// to the service. Anything else is the name of a scenario in the service's catalog (GET
    /// /chaos/scenarios, the service's SCENARIOS_DIR), run with the defaults and guards its header
    /// declares; --param overrides a declared parameter. An unknown name (or parameter) is
    /// refused with the service's message, which lists the known ones.
    ///
    /// For CI: --journal writes the run's JSON report and --junit a JUnit XML file (one testcase
    /// per expect(), and a testcase "run" when the run failed for another reason) once the run
    /// has ended; --report writes the HTML page.
    ///
    /// Exit codes: 0 when the run succeeded; 1 when it failed (a script error, a failed expect()
    /// or a failed undo), was aborted by a guard, was cancelled, timed out or was interrupted; 2
    /// when it could not start (bad arguments, service unreachable, run refused: unknown
    /// scenario, compile error, another run in progress, kill switch engaged) or a --journal,
    /// --junit or --report file could not be written.
    ///
    /// Ctrl-C cancels the run (its faults are undone) and keeps streaming until it has ended.
    Run {
        /// A .rhai file (sent as the script), or the name of a scenario in the service's catalog
        /// (e.g. redis-outage).
        #[arg(value_name = "FILE.rhai|SCENARIO")]
        target: PathBuf,
        /// Base URL of the service.
        #[arg(long, env = "CHAOS_LAB_URL", default_value = "http://127.0.0.1:8000")]
        url: String,
        /// A parameter for param(): KEY=VALUE (VALUE is read as JSON when it parses, else text).
        /// With a catalog scenario, KEY must be one its header declares.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Bearer token, when the service has CHAOS_API_TOKEN set.
        #[arg(long, env = "CHAOS_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Stop the run (as timed_out, its faults undone) after this long: seconds (300) or a
        /// duration with a unit (90s, 5m, 1h, 1m30s), whole seconds, at most 1 h. Default: the
        /// service's 900 s.
        #[arg(
            long,
            visible_alias = "timeout",
            value_name = "DURATION",
            value_parser = crate::config::duration::parse_whole_secs
        )]
        timeout_seconds: Option<u64>,
        /// Apply nothing: faults are recorded in the timeline, not applied (a file or a scenario
        /// name alike). Reads of the service (health(), status(), GET requests) still happen.
        #[arg(long)]
        dry_run: bool,
        /// Hold the run to a guard, as JSON: '{"error_rate_pct": 5, "window_s": 10}' (repeatable;
        /// the same options as guard() in a script)
        #[arg(long = "guard", value_name = "JSON")]
        guards: Vec<String>,
        /// When the run has ended, write its HTML report (timeline, tables) to FILE
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// When the run has ended, write its JSON report to FILE: the whole journal, as GET
        /// /chaos/runs/{id} returns it (run_id, status, verdict, reason, steps, expectations,
        /// measurements, undo, impact, ...)
        #[arg(long, value_name = "FILE")]
        journal: Option<PathBuf>,
        /// When the run has ended, write a JUnit XML file to FILE: a testsuite named after the
        /// scenario (or the file's stem) with the run's duration, one testcase per expect() (named
        /// by its message; a failed one has a <failure>), and a failed testcase "run" when the
        /// run did not succeed for another reason (script error, guard breach, cancel, timeout,
        /// failed undo) carrying the reason
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Block, unblock and list Redis network failures: deny rules in the NSG of the Redis
    /// private endpoint (Azure). Reads AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP,
    /// AZURE_NSG_NAME (`eval "$(azd env get-values)"` sets them).
    Network {
        #[command(subcommand)]
        action: NetworkAction,
    },
    /// Create a broken revision of the container app: `wrong-image` (nginx:alpine) or `bad-env`
    /// (REDIS_HOST empty, REDIS_PORT=invalid). Prints the revision to restore afterwards.
    DeployFault {
        #[arg(value_enum)]
        kind: DeployFaultKind,
        #[command(flatten)]
        target: AzureTarget,
    },
    /// List the container app's revisions; with --activate, restore one (all traffic to it).
    Revisions {
        /// Re-activate this revision and send all traffic to it (undo of deploy-fault).
        #[arg(long, value_name = "REVISION")]
        activate: Option<String>,
        /// With --activate: also deactivate this (broken) revision.
        #[arg(long, value_name = "REVISION", requires = "activate")]
        deactivate: Option<String>,
        #[command(flatten)]
        target: AzureTarget,
    },
}

/// Runs a subcommand; returns the process exit code.
pub async fn main(cmd: Command) -> i32 {
    let result = match cmd {
        Command::ExecGuarded { parent_pid, command } => {
            eprintln!("{}", crate::child::exec_guarded(parent_pid, &command));
            Ok(2)
        }
        Command::Check { files } => Ok(check::check(&files)),
        Command::Run { target, url, params, token, timeout_seconds, dry_run, guards, report, journal, junit } => {
            let opts = run::RunOptions { params, token, timeout_seconds, dry_run, guards, report, journal, junit };
            run::run(target, url, opts).await
        }
        Command::Network { action } => operator::network(action).await,
        Command::DeployFault { kind, target } => operator::deploy_fault(kind, target).await,
        Command::Revisions { activate, deactivate, target } => operator::revisions(activate, deactivate, target).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_take_units() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("chaos-lab").chain(args.iter().copied()));
        let cli =
            parse(&["run", "redis-outage", "--timeout", "5m", "--junit", "j.xml", "--journal", "r.json"]).unwrap();
        let Some(Command::Run { target, timeout_seconds, junit, journal, .. }) = cli.command else { panic!("not run") };
        assert_eq!(target, PathBuf::from("redis-outage"));
        assert_eq!(timeout_seconds, Some(300));
        assert_eq!((junit, journal), (Some(PathBuf::from("j.xml")), Some(PathBuf::from("r.json"))));
        let cli = parse(&["run", "x.rhai", "--timeout-seconds", "45"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run { timeout_seconds: Some(45), .. })));
        let e = parse(&["run", "x.rhai", "--timeout-seconds", "5x"]).unwrap_err().to_string();
        assert!(e.contains("'5x' is not a duration") && e.contains("30s, 5m"), "{e}");

        let cli = parse(&["network", "inject", "--duration", "90s"]).unwrap();
        let Some(Command::Network { action: NetworkAction::Inject { duration, .. } }) = cli.command else {
            panic!("not network inject")
        };
        assert_eq!(duration, Some(90));
        let e = parse(&["network", "inject", "--duration", "25h"]).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
