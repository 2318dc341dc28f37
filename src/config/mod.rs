//! Service configuration: every setting is an environment variable (the original lab's names) and
//! a `--flag`, parsed once, before any port is bound.
//!
//! Invalid values stop startup with a message that names the variable and the accepted values;
//! that is why every value parser below returns a sentence, not a bare parse error.

use std::net::IpAddr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

pub mod duration;
mod parse;

pub use parse::parse_retain;
use parse::{
    boolean, count, parse_host, parse_http_url, parse_log_level, parse_port, parse_rate, parse_redis_host,
    parse_redis_port, seconds,
};

/// The shortest CHAOS_API_TOKEN accepted: a shorter one can be guessed or brute-forced.
pub const MIN_API_TOKEN_CHARS: usize = 16;

/// `RUNS_RETAIN`'s default: the newest 1000 runs, none older than 30 days.
pub const RETAIN_DEFAULT: &str = "1000,30d";

/// Everything the service needs to start, already validated.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on. The container sets 0.0.0.0.
    #[arg(long, env = "APP_HOST", value_name = "APP_HOST", default_value = "127.0.0.1", value_parser = parse_host)]
    pub app_host: IpAddr,

    /// TCP port to listen on (0 picks a free port and logs it).
    #[arg(long, env = "APP_PORT", value_name = "APP_PORT", default_value = "8000", value_parser = parse_port)]
    pub app_port: u16,

    /// Log filter: trace, debug, info, warn, error, or a tracing directive such as
    /// `chaos_lab=debug,info`.
    #[arg(long, env = "LOG_LEVEL", value_name = "LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log format: `text` for people, `json` for log pipelines (the container default).
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", default_value = "text", value_enum)]
    pub log_format: LogFormat,

    /// How long a `/health` result is reused, in seconds (0 = check Redis on every call).
    #[arg(long, env = "HEALTH_CACHE_TTL_SECONDS", value_name = "HEALTH_CACHE_TTL_SECONDS", default_value = "5",
          value_parser = seconds("HEALTH_CACHE_TTL_SECONDS", 0.0, 3600.0))]
    pub health_cache_ttl_seconds: Duration,

    /// Fraction of `GET /` requests that increment the Redis request counter (0.0 to 1.0).
    #[arg(long, env = "REQUEST_COUNTER_SAMPLE_RATE", value_name = "REQUEST_COUNTER_SAMPLE_RATE",
          default_value = "0.1", value_parser = parse_rate)]
    pub request_counter_sample_rate: f64,

    #[command(flatten)]
    pub redis: RedisConfig,

    #[command(flatten)]
    pub chaos: ChaosConfig,
}

/// Scenario engine and fault backend settings.
#[derive(Debug, Clone, Args)]
pub struct ChaosConfig {
    /// Bearer token required by every /chaos/* request except GET /chaos/status: at least 16
    /// characters (e.g. `openssl rand -hex 32`); an empty or shorter one stops startup. Without
    /// it, the built-in fault endpoints stay open, but POST /chaos/run is refused on a
    /// non-loopback APP_HOST.
    #[arg(long, env = "CHAOS_API_TOKEN", value_name = "CHAOS_API_TOKEN", hide_env_values = true)]
    pub chaos_api_token: Option<String>,

    /// Folder of scenario scripts (*.rhai), watched for changes while the service runs.
    #[arg(long, env = "SCENARIOS_DIR", value_name = "SCENARIOS_DIR", default_value = "scenarios")]
    pub scenarios_dir: std::path::PathBuf,

    /// Folder where finished runs are kept as JSON journals (created when missing).
    #[arg(long, env = "RUNS_DIR", value_name = "RUNS_DIR", default_value = "runs")]
    pub runs_dir: std::path::PathBuf,

    /// Most runs at once; one more is refused with 409 (1 to 16).
    #[arg(long, env = "MAX_CONCURRENT_RUNS", value_name = "MAX_CONCURRENT_RUNS", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub max_concurrent_runs: u32,

    /// Run history kept in RUNS_DIR: `<count>`, `<age>` or `<count>,<age>`, the age in days, hours
    /// or minutes (`30d`, `12h`, `90m`). Journals and loadgen reports of the runs beyond the newest
    /// <count>, or that ended more than <age> ago, are deleted at startup and hourly; the journal of
    /// a run still running never is.
    #[arg(long, env = "RUNS_RETAIN", value_name = "RUNS_RETAIN", default_value = RETAIN_DEFAULT,
          value_parser = parse_retain)]
    pub runs_retain: Retain,

    /// Most log lines one run keeps (log(), print(), engine notes). Later lines are dropped, one
    /// marker line says so, and the report's `truncated` counts them.
    #[arg(long, env = "RUN_MAX_LOG_LINES", value_name = "RUN_MAX_LOG_LINES", default_value = "10000",
          value_parser = count("RUN_MAX_LOG_LINES", 1, 1_000_000))]
    pub run_max_log_lines: usize,

    /// Most bytes of log messages one run keeps (default 4 MiB); past it, like RUN_MAX_LOG_LINES.
    #[arg(long, env = "RUN_MAX_LOG_BYTES", value_name = "RUN_MAX_LOG_BYTES", default_value = "4194304",
          value_parser = count("RUN_MAX_LOG_BYTES", 1024, 1 << 30))]
    pub run_max_log_bytes: usize,

    /// Most steps (script calls) one run lists in its timeline; later calls still run, unlisted.
    #[arg(long, env = "RUN_MAX_STEPS", value_name = "RUN_MAX_STEPS", default_value = "10000",
          value_parser = count("RUN_MAX_STEPS", 1, 1_000_000))]
    pub run_max_steps: usize,

    /// Most distinct record() names one run keeps; a new name past it is dropped (overwriting a
    /// name always works).
    #[arg(long, env = "RUN_MAX_RECORDS", value_name = "RUN_MAX_RECORDS", default_value = "1000",
          value_parser = count("RUN_MAX_RECORDS", 1, 100_000))]
    pub run_max_records: usize,

    /// Most events one run keeps to replay to a late subscriber of GET /chaos/runs/{id}/events
    /// (and 8 MiB of them at most). Later events are still sent live.
    #[arg(long, env = "RUN_MAX_EVENTS", value_name = "RUN_MAX_EVENTS", default_value = "20000",
          value_parser = count("RUN_MAX_EVENTS", 1, 1_000_000))]
    pub run_max_events: usize,

    /// Where network faults are applied: `local` (an embedded TCP proxy between the service and
    /// Redis), `azure` (deny rules in the NSG AZURE_NSG_NAME) or `none` (network faults are
    /// refused; Redis is reached directly). Default: `azure` when AZURE_SUBSCRIPTION_ID,
    /// AZURE_RESOURCE_GROUP and AZURE_NSG_NAME are all set, `local` otherwise.
    #[arg(long, env = "NETWORK_FAULT_BACKEND", value_name = "NETWORK_FAULT_BACKEND", value_enum)]
    pub network_fault_backend: Option<NetworkBackendKind>,

    #[command(flatten)]
    pub azure: AzureConfig,

    /// The `loadgen` binary that script runs start for `loadgen()` (default: `loadgen` next to
    /// this executable, else on PATH). Its reports go to RUNS_DIR/loadgen/.
    #[arg(long, env = "LOADGEN_BIN", value_name = "LOADGEN_BIN")]
    pub loadgen_bin: Option<std::path::PathBuf>,

    /// Seconds each `on_rollback` closure of a run may take before it is stopped (and the run's
    /// fault undos still run); 0.1 to 300.
    #[arg(long, env = "ROLLBACK_TIMEOUT_SECONDS", value_name = "ROLLBACK_TIMEOUT_SECONDS", default_value = "10",
          value_parser = seconds("ROLLBACK_TIMEOUT_SECONDS", 0.1, 300.0))]
    pub rollback_timeout_seconds: Duration,

    /// Azure Blob Storage container shared by every replica (the fleet's heartbeats and halt
    /// latch): `https://<account>.blob.core.windows.net/<container>`, signed in with the managed
    /// identity (role Storage Blob Data Contributor), or with a SAS query string used as is.
    /// Unset: this replica is alone and keeps its state in RUNS_DIR.
    #[arg(long, env = "CHAOS_STORE_URL", value_name = "CHAOS_STORE_URL", hide_env_values = true)]
    pub chaos_store_url: Option<String>,

    /// This replica's name in the fleet (default: Container Apps' CONTAINER_APP_REPLICA_NAME, else
    /// the host name).
    #[arg(long, env = "REPLICA_NAME", value_name = "REPLICA_NAME")]
    pub replica_name: Option<String>,
}

/// Which network fault backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkBackendKind {
    Local,
    Azure,
    None,
}

/// Where the service finds its Azure resources (the azd environment's names). Every value is
/// optional: only the features that need one ask for it, and say which is missing.
#[derive(Debug, Clone, Default, Args)]
pub struct AzureConfig {
    /// Subscription holding the NSG and the container app.
    #[arg(long, env = "AZURE_SUBSCRIPTION_ID", value_name = "AZURE_SUBSCRIPTION_ID")]
    pub azure_subscription_id: Option<String>,

    /// Resource group holding the NSG and the container app.
    #[arg(long, env = "AZURE_RESOURCE_GROUP", value_name = "AZURE_RESOURCE_GROUP")]
    pub azure_resource_group: Option<String>,

    /// Network security group of the Redis private-endpoint subnet (the azure network backend
    /// writes its deny rules there).
    #[arg(long, env = "AZURE_NSG_NAME", value_name = "AZURE_NSG_NAME")]
    pub azure_nsg_name: Option<String>,

    /// Destination port an NSG deny rule blocks when the fault names none (Azure Managed Redis
    /// listens on 10000).
    #[arg(long, env = "AZURE_NSG_RULE_PORT", value_name = "AZURE_NSG_RULE_PORT", default_value = "10000",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub azure_nsg_rule_port: u16,

    /// Client id of the user-assigned managed identity to use (none = the system-assigned one).
    #[arg(long, env = "AZURE_CLIENT_ID", value_name = "AZURE_CLIENT_ID")]
    pub azure_client_id: Option<String>,

    /// Azure Resource Manager base URL. Only tests change it (to a fake on loopback); tokens are
    /// still requested for https://management.azure.com.
    #[arg(long, env = "AZURE_RESOURCE_MANAGER_ENDPOINT", value_name = "AZURE_RESOURCE_MANAGER_ENDPOINT",
          default_value = "https://management.azure.com", value_parser = parse_http_url("AZURE_RESOURCE_MANAGER_ENDPOINT"))]
    pub azure_resource_manager_endpoint: String,

    /// Name of this container app, for deploy_fault() (falls back to CONTAINER_APP_NAME, which
    /// Container Apps sets by itself).
    #[arg(long, env = "SERVICE_APP_NAME", value_name = "SERVICE_APP_NAME")]
    pub service_app_name: Option<String>,
}

impl AzureConfig {
    /// The NSG the azure network backend edits, when all three names are set.
    pub fn nsg(&self) -> Option<NsgRef> {
        Some(NsgRef {
            subscription: self.azure_subscription_id.clone()?,
            resource_group: self.azure_resource_group.clone()?,
            nsg: self.azure_nsg_name.clone()?,
        })
    }

    /// This container app, when subscription, group and app name are known.
    pub fn app(&self) -> Option<AppRef> {
        let name = self
            .service_app_name
            .clone()
            .or_else(|| std::env::var("CONTAINER_APP_NAME").ok())
            .filter(|n| !n.trim().is_empty())?;
        Some(AppRef {
            subscription: self.azure_subscription_id.clone()?,
            resource_group: self.azure_resource_group.clone()?,
            name,
        })
    }
}

/// What run history to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retain {
    /// The newest runs kept (`usize::MAX` when `RUNS_RETAIN` gives only an age).
    pub max_runs: usize,
    /// Runs that ended longer ago than this are deleted; `None` when `RUNS_RETAIN` gives only a
    /// count.
    pub max_age: Option<Duration>,
}

impl Default for Retain {
    fn default() -> Self {
        Self { max_runs: 1000, max_age: Some(Duration::from_secs(30 * 86_400)) }
    }
}

/// A network security group, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsgRef {
    pub subscription: String,
    pub resource_group: String,
    pub nsg: String,
}

/// A container app, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRef {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

/// How much one run may keep in memory and in its journal. Each cap bounds something a script
/// controls (a loop of `log()`, of calls, of `record()` names); without them one run could exhaust
/// the service's memory, and an OOM-killed service leaves its faults behind. What goes over a cap
/// is dropped and counted in the run report's `truncated`; the script itself keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Log lines kept in the report (`RUN_MAX_LOG_LINES`).
    pub max_log_lines: usize,
    /// Bytes of log messages kept in the report (`RUN_MAX_LOG_BYTES`): a few huge lines are as
    /// heavy as many small ones.
    pub max_log_bytes: usize,
    /// Steps kept in the timeline (`RUN_MAX_STEPS`).
    pub max_steps: usize,
    /// Distinct measurement names (`RUN_MAX_RECORDS`); overwriting a name is always allowed.
    pub max_records: usize,
    /// Events kept for replay to late subscribers of the event stream (`RUN_MAX_EVENTS`).
    pub max_events: usize,
    /// Bytes of event data (as serialized JSON) kept for replay. Every kept event is a second
    /// copy of a log line or step, so the replay needs its own byte cap.
    pub max_event_bytes: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_log_lines: 10_000,
            max_log_bytes: 4 * 1024 * 1024,
            max_steps: 10_000,
            max_records: 1_000,
            max_events: 20_000,
            max_event_bytes: 8 * 1024 * 1024,
        }
    }
}

/// How the service authenticates to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisAuth {
    /// No AUTH.
    None,
    /// REDIS_PASSWORD (and REDIS_USERNAME for an ACL user).
    Password,
    /// Microsoft Entra ID: an access token of the managed identity, refreshed on live connections.
    Entra,
}

/// Whether the service may start a development Redis for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevServer {
    Auto,
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Redis connection settings (names and defaults of the original lab).
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Use Redis at all. With `false`, `GET /` answers "Redis unavailable" and `/health` is healthy.
    #[arg(long, env = "REDIS_ENABLED", value_name = "REDIS_ENABLED", default_value = "true",
          value_parser = boolean("REDIS_ENABLED"), action = clap::ArgAction::Set)]
    pub redis_enabled: bool,

    /// Redis host name or address.
    #[arg(long, env = "REDIS_HOST", value_name = "REDIS_HOST", default_value = "localhost", value_parser = parse_redis_host)]
    pub redis_host: String,

    /// `auto`: when REDIS_HOST and REDIS_PORT are not set (nor Azure, TLS or auth settings), no
    /// Redis answers at localhost:6379 and `redis-server` is installed, start a development Redis
    /// on a private loopback port (nothing kept on disk; it dies with the service). `off`: never.
    #[arg(long, env = "REDIS_DEV_SERVER", value_name = "REDIS_DEV_SERVER", default_value = "auto", value_enum)]
    pub redis_dev_server: DevServer,

    /// Whether REDIS_HOST or REDIS_PORT was given (by flag or environment), not defaulted.
    #[arg(skip)]
    pub redis_address_given: bool,

    /// Redis port (10000 on Azure Managed Redis).
    #[arg(long, env = "REDIS_PORT", value_name = "REDIS_PORT", default_value = "6379", value_parser = parse_redis_port)]
    pub redis_port: u16,

    /// Connect with TLS (`rediss://`).
    #[arg(long, env = "REDIS_SSL", value_name = "REDIS_SSL", default_value = "false",
          value_parser = boolean("REDIS_SSL"), action = clap::ArgAction::Set)]
    pub redis_ssl: bool,

    /// PEM file with the CA that signed the Redis server certificate, when it is not a public CA.
    #[arg(long, env = "REDIS_CA_CERT", value_name = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<std::path::PathBuf>,

    /// How to authenticate: `none`, `password` (REDIS_PASSWORD) or `entra` (a Microsoft Entra ID
    /// token of the managed identity; needs REDIS_SSL=true). Default: `password` when
    /// REDIS_PASSWORD is set, `none` otherwise.
    #[arg(long, env = "REDIS_AUTH", value_name = "REDIS_AUTH", value_enum)]
    pub redis_auth: Option<RedisAuth>,

    /// Redis ACL user name. With REDIS_AUTH=password it needs REDIS_PASSWORD; with entra it
    /// defaults to the identity's object id (the token's `oid` claim).
    #[arg(long, env = "REDIS_USERNAME", value_name = "REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Redis password (for `requirepass` or an ACL user).
    #[arg(long, env = "REDIS_PASSWORD", value_name = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,

    /// Most connections the pool keeps open (1 to 10000).
    #[arg(long, env = "REDIS_MAX_CONNECTIONS", value_name = "REDIS_MAX_CONNECTIONS", default_value = "50",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub redis_max_connections: u32,

    /// Seconds a Redis command may take before it fails with "Redis operation timeout".
    #[arg(long, env = "REDIS_SOCKET_TIMEOUT", value_name = "REDIS_SOCKET_TIMEOUT", default_value = "3",
          value_parser = seconds("REDIS_SOCKET_TIMEOUT", 0.001, 600.0))]
    pub redis_socket_timeout: Duration,

    /// Seconds a new Redis connection may take to open.
    #[arg(long, env = "REDIS_SOCKET_CONNECT_TIMEOUT", value_name = "REDIS_SOCKET_CONNECT_TIMEOUT", default_value = "3",
          value_parser = seconds("REDIS_SOCKET_CONNECT_TIMEOUT", 0.001, 600.0))]
    pub redis_socket_connect_timeout: Duration,

    /// Extra attempts after a failed Redis operation (0 = no retry).
    #[arg(long, env = "REDIS_MAX_RETRIES", value_name = "REDIS_MAX_RETRIES", default_value = "1",
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub redis_max_retries: u32,

    /// Seconds to wait before the first retry; doubles for each further retry.
    #[arg(long, env = "REDIS_BACKOFF_BASE", value_name = "REDIS_BACKOFF_BASE", default_value = "1",
          value_parser = seconds("REDIS_BACKOFF_BASE", 0.0, 60.0))]
    pub redis_backoff_base: Duration,

    /// Longest wait between two retries, in seconds.
    #[arg(long, env = "REDIS_BACKOFF_CAP", value_name = "REDIS_BACKOFF_CAP", default_value = "3",
          value_parser = seconds("REDIS_BACKOFF_CAP", 0.0, 600.0))]
    pub redis_backoff_cap: Duration,
}

impl RedisConfig {
    /// REDIS_AUTH, or what REDIS_PASSWORD implies when it is not set.
    pub fn auth(&self) -> RedisAuth {
        self.redis_auth.unwrap_or(if self.redis_password.is_some() { RedisAuth::Password } else { RedisAuth::None })
    }
}

impl ChaosConfig {
    /// The caps of each run, from the RUN_MAX_* settings.
    pub fn run_limits(&self) -> RunLimits {
        RunLimits {
            max_log_lines: self.run_max_log_lines,
            max_log_bytes: self.run_max_log_bytes,
            max_steps: self.run_max_steps,
            max_records: self.run_max_records,
            max_events: self.run_max_events,
            ..RunLimits::default()
        }
    }

    /// NETWORK_FAULT_BACKEND, or `azure` when the NSG is fully named, else `local`.
    pub fn network_backend(&self) -> NetworkBackendKind {
        self.network_fault_backend.unwrap_or(if self.azure.nsg().is_some() {
            NetworkBackendKind::Azure
        } else {
            NetworkBackendKind::Local
        })
    }
}

impl Config {
    /// Checks rules that involve more than one setting. Called by `main` right after parsing.
    pub fn validate(&self) -> Result<(), String> {
        self.chaos.validate_token()?;
        let r = &self.redis;
        match r.auth() {
            RedisAuth::Entra => {
                if r.redis_password.is_some() {
                    return Err("REDIS_AUTH=entra uses an access token as the password: unset REDIS_PASSWORD".into());
                }
                if !r.redis_ssl {
                    return Err("REDIS_AUTH=entra sends an access token: set REDIS_SSL=true (Azure Managed Redis \
                                accepts TLS only)"
                        .into());
                }
            }
            RedisAuth::Password if r.redis_password.is_none() => {
                return Err("REDIS_AUTH=password needs REDIS_PASSWORD".into());
            }
            RedisAuth::Password | RedisAuth::None => {
                if r.redis_username.is_some() && r.redis_password.is_none() {
                    return Err("REDIS_USERNAME is set but REDIS_PASSWORD is not: set both, or neither".into());
                }
            }
        }
        if r.auth() == RedisAuth::None && r.redis_password.is_some() {
            return Err("REDIS_AUTH=none but REDIS_PASSWORD is set: unset one of them".into());
        }
        if self.chaos.network_fault_backend == Some(NetworkBackendKind::Azure) && self.chaos.azure.nsg().is_none() {
            return Err("NETWORK_FAULT_BACKEND=azure needs AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and \
                        AZURE_NSG_NAME (run `azd env get-values` to see them)"
                .into());
        }
        if r.redis_ca_cert.is_some() && !r.redis_ssl {
            return Err("REDIS_CA_CERT is set but REDIS_SSL is false: set REDIS_SSL=true to use TLS".into());
        }
        if r.redis_backoff_cap < r.redis_backoff_base {
            return Err(format!(
                "REDIS_BACKOFF_CAP ({}s) is smaller than REDIS_BACKOFF_BASE ({}s): the cap must be at least the base",
                r.redis_backoff_cap.as_secs_f64(),
                r.redis_backoff_base.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Defaults for tests and embedding: what `chaos-lab` uses with an empty environment.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        #[command(name = "chaos-lab", args_override_self = true)]
        struct Service {
            #[command(flatten)]
            config: Config,
        }
        let matches = Service::command()
            .try_get_matches_from(std::iter::once("chaos-lab".into()).chain(args.into_iter().map(Into::into)))?;
        Self::from_matches(&matches)
    }

    /// The settings parsed into `m` (by any command that flattens [`Config`]), plus which were
    /// given rather than defaulted.
    pub fn from_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut config = Self::from_arg_matches(m)?;
        let given = |id: &str| m.value_source(id).is_some_and(|s| s != ValueSource::DefaultValue);
        config.redis.redis_address_given = given("redis_host") || given("redis_port");
        Ok(config)
    }
}

impl ChaosConfig {
    /// An empty or short token would leave `/chaos/*` open or guessable, and an empty one once
    /// lifted the non-loopback guard of POST /chaos/run too: both stop startup.
    fn validate_token(&self) -> Result<(), String> {
        const HOW: &str = "use at least 16 random characters, e.g. `export CHAOS_API_TOKEN=$(openssl rand -hex 32)`, \
                           or unset CHAOS_API_TOKEN to run without one (then POST /chaos/run is refused on a \
                           non-loopback APP_HOST)";
        // clap passes `CHAOS_API_TOKEN=` on as `Some("")`; should a version drop empty values,
        // the variable is still set and still refused.
        let empty_env = || std::env::var_os("CHAOS_API_TOKEN").is_some_and(|v| v.is_empty());
        match &self.chaos_api_token {
            Some(t) if t.is_empty() => Err(format!("CHAOS_API_TOKEN is empty: {HOW}")),
            None if empty_env() => Err(format!("CHAOS_API_TOKEN is empty: {HOW}")),
            Some(t) if t.chars().count() < MIN_API_TOKEN_CHARS => Err(format!(
                "CHAOS_API_TOKEN is {} characters long, shorter than the minimum of {MIN_API_TOKEN_CHARS}: {HOW}",
                t.chars().count()
            )),
            Some(t) if t.trim() != t => Err(format!(
                "CHAOS_API_TOKEN starts or ends with whitespace (a trailing newline from a file?), which an \
                 Authorization header cannot carry: remove it, or {HOW}"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_original_lab() {
        // Clear the variables a developer may have exported so the test sees the defaults.
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.app_port, 8000);
        assert_eq!(c.redis.redis_max_connections, 50);
        assert_eq!(c.redis.redis_socket_timeout, Duration::from_secs(3));
        assert_eq!(c.health_cache_ttl_seconds, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_the_variable_and_accepted_values() {
        let e = Config::from_args(["--redis-port", "abc"]).unwrap_err().to_string();
        assert!(e.contains("REDIS_PORT must be a port number from 1 to 65535"), "{e}");
        let e = Config::from_args(["--redis-ssl", "maybe"]).unwrap_err().to_string();
        assert!(e.contains("REDIS_SSL must be true or false"), "{e}");
        let e = Config::from_args(["--request-counter-sample-rate", "2"]).unwrap_err().to_string();
        assert!(e.contains("from 0.0 to 1.0"), "{e}");
    }

    #[test]
    fn cross_field_rules() {
        let c = Config::from_args(["--redis-backoff-base", "5", "--redis-backoff-cap", "1"]).unwrap();
        assert!(c.validate().unwrap_err().contains("REDIS_BACKOFF_CAP"));
        let c = Config::from_args(["--redis-auth", "entra"]).unwrap();
        assert!(c.validate().unwrap_err().contains("set REDIS_SSL=true"));
        let c = Config::from_args(["--redis-auth", "entra", "--redis-ssl", "true", "--redis-password", "x"]).unwrap();
        assert!(c.validate().unwrap_err().contains("unset REDIS_PASSWORD"));
        let c = Config::from_args(["--redis-auth", "password"]).unwrap();
        assert!(c.validate().unwrap_err().contains("needs REDIS_PASSWORD"));
        let c = Config::from_args(["--network-fault-backend", "azure", "--azure-nsg-name", "n"]).unwrap();
        assert!(c.validate().unwrap_err().contains("AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP"));
    }

    #[test]
    fn an_empty_or_short_api_token_stops_startup() {
        for token in ["", "short", "fifteen-chars-x"] {
            let c = Config::from_args(["--chaos-api-token", token]).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.contains("CHAOS_API_TOKEN is") && e.contains("openssl rand -hex 32"), "'{token}': {e}");
        }
        let e = Config::from_args(["--chaos-api-token", "short"]).unwrap().validate().unwrap_err();
        assert!(e.contains("5 characters long, shorter than the minimum of 16"), "{e}");
        let e = Config::from_args(["--chaos-api-token", "0123456789abcdef\n"]).unwrap().validate().unwrap_err();
        assert!(e.contains("whitespace"), "{e}");
        let c = Config::from_args(["--chaos-api-token", "0123456789abcdef"]).unwrap();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn run_limits_and_retention() {
        let c = Config::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(c.chaos.run_limits(), RunLimits::default());
        assert_eq!(c.chaos.runs_retain, Retain::default());
        let c = Config::from_args(["--run-max-log-lines", "5", "--runs-retain", "20,12h"]).unwrap();
        assert_eq!(c.chaos.run_limits().max_log_lines, 5);
        assert_eq!(c.chaos.runs_retain, Retain { max_runs: 20, max_age: Some(Duration::from_secs(12 * 3600)) });
        let e = Config::from_args(["--run-max-log-lines", "0"]).unwrap_err().to_string();
        assert!(e.contains("RUN_MAX_LOG_LINES must be a whole number from 1 to 1000000, got '0'"), "{e}");
        let e = Config::from_args(["--run-max-log-bytes", "4MiB"]).unwrap_err().to_string();
        assert!(e.contains("RUN_MAX_LOG_BYTES must be a whole number"), "{e}");
        let e = Config::from_args(["--runs-retain", "0"]).unwrap_err().to_string();
        assert!(e.contains("RUNS_RETAIN") && e.contains("a count of 0 would delete every run"), "{e}");
    }

    #[test]
    fn azure_backend_is_chosen_when_the_nsg_is_named() {
        let named = ["--azure-subscription-id", "s", "--azure-resource-group", "g", "--azure-nsg-name", "n"];
        let c = Config::from_args(named).unwrap();
        assert_eq!(c.chaos.network_backend(), NetworkBackendKind::Azure);
        let c = Config::from_args(named.into_iter().chain(["--network-fault-backend", "local"])).unwrap();
        assert_eq!(c.chaos.network_backend(), NetworkBackendKind::Local);
        let c = Config::from_args(["--azure-nsg-name", "n"]).unwrap();
        assert_eq!(c.chaos.network_backend(), NetworkBackendKind::Local);
        assert_eq!(c.redis.auth(), RedisAuth::None);
    }
}
