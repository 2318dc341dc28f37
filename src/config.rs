//! Service configuration: every setting is an environment variable (the original lab's names) and
//! a `--flag`, parsed once, before any port is bound.
//!
//! Invalid values stop startup with a message that names the variable and the accepted values;
//! that is why every value parser below returns a sentence, not a bare parse error.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, Parser};

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
    pub command: Option<crate::cli::Command>,

    #[command(flatten)]
    pub config: Config,
}

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
    /// Bearer token required by every /chaos/* request except GET /chaos/status. Without it, the
    /// built-in fault endpoints stay open, but POST /chaos/run is refused on a non-loopback APP_HOST.
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

    /// Where network faults are applied: `local` (an embedded TCP proxy between the service and
    /// Redis) or `none` (network faults are refused; Redis is reached directly).
    #[arg(
        long,
        env = "NETWORK_FAULT_BACKEND",
        value_name = "NETWORK_FAULT_BACKEND",
        default_value = "local",
        value_enum
    )]
    pub network_fault_backend: NetworkBackendKind,

    /// The `loadgen` binary that script runs start for `loadgen()` (default: `loadgen` next to
    /// this executable, else on PATH). Its reports go to RUNS_DIR/loadgen/.
    #[arg(long, env = "LOADGEN_BIN", value_name = "LOADGEN_BIN")]
    pub loadgen_bin: Option<std::path::PathBuf>,
}

/// Which network fault backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkBackendKind {
    Local,
    None,
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

    /// Redis ACL user name (needs REDIS_PASSWORD).
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

impl Config {
    /// Checks rules that involve more than one setting. Called by `main` right after parsing.
    pub fn validate(&self) -> Result<(), String> {
        let r = &self.redis;
        if r.redis_username.is_some() && r.redis_password.is_none() {
            return Err("REDIS_USERNAME is set but REDIS_PASSWORD is not: set both, or neither".into());
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
        Cli::try_parse_from(std::iter::once("chaos-lab".into()).chain(args.into_iter().map(Into::into)))
            .map(|c| c.config)
    }
}

fn parse_host(s: &str) -> Result<IpAddr, String> {
    s.trim().parse().map_err(|_| format!("APP_HOST must be an IP address such as 127.0.0.1 or 0.0.0.0, got '{s}'"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.trim().parse().map_err(|_| format!("APP_PORT must be a port number from 0 to 65535, got '{s}'"))
}

fn parse_redis_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("REDIS_PORT must be a port number from 1 to 65535, got '{s}'")),
    }
}

fn parse_redis_host(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.contains(['/', ' ', '@']) {
        return Err(format!("REDIS_HOST must be a host name or IP address, got '{s}'"));
    }
    Ok(s.to_string())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("REQUEST_COUNTER_SAMPLE_RATE must be a number from 0.0 to 1.0, got '{s}'")),
    }
}

fn parse_log_level(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let s = s.trim().to_ascii_lowercase();
    let message = || {
        format!(
            "LOG_LEVEL must be one of trace, debug, info, warn, error, off, or a tracing directive like \
             'chaos_lab=debug,info', got '{s}'"
        )
    };
    // A bare word must be a level: EnvFilter would take a typo such as "verbose" as a target name
    // and silently log nothing.
    if !s.contains(['=', ',']) && !LEVELS.contains(&s.as_str()) {
        return Err(message());
    }
    tracing_subscriber::EnvFilter::try_new(&s).map_err(|e| format!("{} ({e})", message()))?;
    Ok(s)
}

/// A parser for a number of seconds (fractions allowed) within `min..=max`.
fn seconds(name: &'static str, min: f64, max: f64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s: &str| match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (min..=max).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!("{name} must be a number of seconds from {min} to {max}, got '{s}'")),
    }
}

/// A parser for booleans that accepts what Python's lab accepted (`true/false/1/0/yes/no`).
fn boolean(name: &'static str) -> impl Fn(&str) -> Result<bool, String> + Clone {
    move |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{name} must be true or false (also accepted: 1/0, yes/no, on/off), got '{s}'")),
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
    }
}
