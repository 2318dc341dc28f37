//! The composition root: builds the lab's parts once, from the configuration, and hands `http`
//! and `chaos` what they need. The only place that chooses a network backend, makes the Azure
//! credential and clients, opens the ledger and wires the fleet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::AppState;
use crate::azure::{Arm, EntraRedisAuth};
use crate::chaos::catalog::Catalog;
use crate::chaos::engine::Deps;
use crate::chaos::{Runs, Stop};
use crate::config::{Config, NetworkBackendKind, RedisAuth};
use crate::faults::Faults;
use crate::faults::deploy::{ContainerApp, DeployBackend};
use crate::faults::ledger::Ledger;
use crate::faults::network::{AzureNsg, Disabled, LocalProxy, NetworkBackend};
use crate::fleet::{Fleet, HaltHook, Halted};
use crate::store::Store;

/// How long SIGTERM waits for runs to end by themselves (their rollbacks, their undo) before the
/// ledger undoes what is left; a local undo takes milliseconds.
const SHUTDOWN_UNDO_GRACE: Duration = Duration::from_secs(3);
/// How long SIGTERM waits for the ledger's undo (ARM calls on Azure): within the platform's grace
/// period. What is left stays in the ledger file and is undone at the next start.
const SHUTDOWN_CLEAR_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds everything a service that listens on `addr` needs: the development Redis when nothing
/// else is there, the Azure credential when something needs Azure, the network fault backend
/// (starting the local proxy), the Redis client routed through it, the fault ledger (undoing what
/// a crashed predecessor left), the fleet, the scenario catalog (watched) and the run journals.
pub async fn start(mut config: Config, addr: SocketAddr) -> anyhow::Result<AppState> {
    // On a fresh machine: a Redis of our own when nothing is configured or answering. Spawned
    // from this (the main) thread, which lives as long as the service.
    let dev_redis = crate::dev_redis::provide(&config).map(Arc::new);
    if let Some(d) = &dev_redis {
        config.redis.redis_host = "127.0.0.1".into();
        config.redis.redis_port = d.port;
    }
    let azure = &config.chaos.azure;
    let backend = config.chaos.network_backend();
    let app = azure.app();
    let entra = config.redis.redis_enabled && config.redis.auth() == RedisAuth::Entra;
    // One credential for ARM, Redis and the chaos store, made only when something needs Azure.
    let store_url = config.chaos.chaos_store_url.clone().filter(|u| !u.trim().is_empty());
    let store_signs_in = store_url.as_deref().is_some_and(|u| !u.contains("sig="));
    let credential = if backend == NetworkBackendKind::Azure || entra || app.is_some() || store_signs_in {
        Some(crate::azure::credential(azure.azure_client_id.as_deref()).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let mut proxy_addr = None;
    let network: Arc<dyn NetworkBackend> = match backend {
        NetworkBackendKind::Azure => {
            let nsg = azure.nsg().context("NETWORK_FAULT_BACKEND=azure needs AZURE_NSG_NAME and friends")?;
            let cred = credential.clone().context("the Azure credential is set up for the azure backend")?;
            let backend = AzureNsg::new(nsg, azure.azure_nsg_rule_port, &azure.azure_resource_manager_endpoint, cred)?;
            // Removes what a crashed predecessor left, then keeps looking.
            backend.start_sweeper(crate::faults::network::azure::SWEEP_INTERVAL);
            Arc::new(backend)
        }
        NetworkBackendKind::Local => {
            let proxy = LocalProxy::start(
                config.redis.redis_host.clone(),
                config.redis.redis_port,
                config.redis.redis_socket_connect_timeout,
            )
            .context("cannot start the local network-fault proxy")?;
            // The app's Redis traffic goes through the proxy, so its faults reach it.
            proxy_addr = Some(proxy.addr());
            proxy
        }
        NetworkBackendKind::None => Arc::new(Disabled),
    };
    let store = if config.redis.redis_enabled {
        let auth = match (&credential, entra) {
            (Some(c), true) => Some(EntraRedisAuth::start(c.clone(), config.redis.redis_username.clone())),
            _ => None,
        };
        Some(Store::new(&config.redis, proxy_addr, auth).context("cannot set up the Redis client")?)
    } else {
        None
    };
    let faults = Arc::new(Faults::default());
    let deploy: Option<Arc<dyn DeployBackend>> = match (app, &credential) {
        (Some(app), Some(c)) => {
            let arm = Arm::new(&azure.azure_resource_manager_endpoint, c.clone())?;
            Some(Arc::new(ContainerApp::new(app, arm)))
        }
        _ => None,
    };
    let shared = crate::chaos_store::SharedStore::default();
    let fleet = Fleet::new(
        crate::fleet::replica_name(config.chaos.replica_name.as_deref()),
        store_url.is_some(),
        shared.clone(),
    );
    let ledger = Ledger::open(&config.chaos.runs_dir, faults.clone(), network.clone(), deploy.clone(), shared)
        .with_context(|| format!("cannot open the fault ledger in RUNS_DIR {}", config.chaos.runs_dir.display()))?;
    // What a crashed predecessor left is undone before anything new can start.
    let recovered = ledger.recover().await;
    ledger.start_timer();
    let lab = Arc::new(Deps {
        faults: faults.clone(),
        ledger: ledger.clone(),
        rollback_timeout: config.chaos.rollback_timeout_seconds,
        fleet: fleet.clone(),
        store: store.clone(),
        network: network.clone(),
        deploy,
        self_url: format!("http://{}", self_address(addr)),
        http: reqwest::Client::builder().build().context("cannot build the HTTP client")?,
        handle: tokio::runtime::Handle::current(),
        loadgen: crate::chaos::loadgen::LoadgenConfig::new(config.chaos.loadgen_bin.clone(), &config.chaos.runs_dir),
    });
    let catalog = Catalog::load(config.chaos.scenarios_dir.clone());
    catalog.watch();
    let runs = Runs::open(
        lab.clone(),
        catalog,
        config.chaos.runs_dir.clone(),
        config.chaos.max_concurrent_runs as usize,
        config.chaos.run_limits(),
        config.chaos.runs_retain.clone(),
        &recovered,
    )
    .with_context(|| format!("cannot use RUNS_DIR {}", config.chaos.runs_dir.display()))?;
    let runs = Arc::new(runs);
    if let Some(url) = store_url {
        let on_halt = runs.clone();
        let halt: HaltHook = Arc::new(move |by: String| {
            let runs = on_halt.clone();
            Box::pin(async move {
                let r = runs.stop_everything(Stop::KillSwitch { by: &by }).await;
                Halted { runs: r.runs.len(), undone: r.outcomes.len() }
            })
        });
        let local = crate::fleet::Local { halt, ledger, faults, redis: store };
        let open = move || {
            let (url, cred) = (url.clone(), credential.clone());
            async move { crate::chaos_store::azure_blob(&url, cred).await }
        };
        fleet.start(open, local);
    }
    Ok(AppState::new(Arc::new(config), lab, runs, dev_redis))
}

/// What SIGTERM triggers (see [`Stop::Shutdown`]): no new run or fault, the runs given a moment
/// to run their rollbacks and undo, then the ledger undoes whatever is left, of every owner.
pub async fn shutdown(state: &AppState) {
    let how = Stop::Shutdown { grace: SHUTDOWN_UNDO_GRACE, undo_within: SHUTDOWN_CLEAR_TIMEOUT };
    state.runs.stop_everything(how).await;
}

/// Scripts reach the service over loopback even when it listens on all interfaces.
fn self_address(addr: SocketAddr) -> SocketAddr {
    let ip: IpAddr = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
