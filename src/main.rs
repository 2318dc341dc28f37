//! The `chaos-lab` binary: parse the configuration, set up logging, bind, serve until SIGTERM or
//! Ctrl-C.

use anyhow::Context;

use chaos_lab::cli::Cli;
use chaos_lab::config::LogFormat;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // rustls needs one process-wide crypto provider; installing it once keeps every client on aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse_all();
    if let Some(cmd) = cli.command {
        std::process::exit(chaos_lab::cli::main(cmd).await);
    }
    let config = cli.config;
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let telemetry = chaos_lab::telemetry::init(&config.log_level, config.log_format == LogFormat::Json)
        .context("cannot set up telemetry")?;

    if !config.redis.redis_enabled {
        tracing::warn!("REDIS_ENABLED=false: GET / answers without Redis");
    }
    let addr = std::net::SocketAddr::new(config.app_host, config.app_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (set APP_HOST / APP_PORT to another address)"))?;
    let local = listener.local_addr()?;
    let state = chaos_lab::service::start(config.clone(), local).await?;
    tracing::info!(
        address = %local,
        network_backend = state.lab.network.name(),
        redis = %format!("{}:{}", state.config.redis.redis_host, state.config.redis.redis_port),
        redis_enabled = config.redis.redis_enabled,
        "chaos-lab listening"
    );
    chaos_lab::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    // Flushing exports blocks (HTTP): do it off the runtime.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
