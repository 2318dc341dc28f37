//! A development Redis, so that the README's first command on a fresh machine gives a working lab
//! instead of a service answering 503.
//!
//! Started only when nothing else is asked for or there: Redis enabled, `REDIS_HOST`/`REDIS_PORT`
//! not given, no TLS, auth or Azure settings, `REDIS_DEV_SERVER` not `off`, nothing answering at
//! the default `localhost:6379`, and `redis-server` on PATH. It then listens on a free loopback
//! port (behind the fault proxy, like any Redis), keeps nothing on disk (no RDB, no AOF, a
//! scratch folder removed at exit), and dies with the service: it is started through
//! `chaos-lab exec-guarded`, so Linux kills it when the service dies, `kill -9` included.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, DevServer, RedisAuth};

/// Where a Redis is looked for when nothing is configured.
const DEFAULT_PORT: u16 = 6379;
/// Scratch folders are `<temp>/chaos-lab-dev-redis-<service pid>`.
const DIR_PREFIX: &str = "chaos-lab-dev-redis-";
/// How long the started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The running development Redis; killed (and its folder removed) on drop.
pub struct DevRedis {
    pub port: u16,
    pub pid: u32,
    child: Child,
    dir: PathBuf,
}

impl DevRedis {
    /// What `/chaos/status` and the startup log say about it.
    pub fn describe(&self) -> String {
        format!(
            "development Redis started by chaos-lab (redis-server pid {} on 127.0.0.1:{}, nothing kept on disk, \
             stops with the service); set REDIS_HOST and REDIS_PORT to use a real one",
            self.pid, self.port
        )
    }
}

impl Drop for DevRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a development Redis when the configuration leaves the choice to us and nothing answers
/// at the default address. `None` when one is not wanted or cannot be had; the reason is logged
/// in one line saying what to do.
pub fn provide(config: &Config) -> Option<DevRedis> {
    let r = &config.redis;
    let azure = &config.chaos.azure;
    let configured = !r.redis_enabled
        || r.redis_address_given
        || r.redis_dev_server == DevServer::Off
        || r.redis_ssl
        || r.auth() != RedisAuth::None
        || azure.azure_subscription_id.is_some()
        || azure.azure_nsg_name.is_some();
    if configured || answers(DEFAULT_PORT) {
        return None;
    }
    let Some(server) = find_on_path("redis-server") else {
        tracing::warn!(
            "no Redis answers at localhost:{DEFAULT_PORT} and redis-server is not installed: run \
             `apt-get install -y redis-server` and restart (or set REDIS_HOST/REDIS_PORT); until then GET / answers 503"
        );
        return None;
    };
    match start(&server) {
        Ok(dev) => {
            tracing::warn!(
                pid = dev.pid,
                port = dev.port,
                "no Redis answers at localhost:{DEFAULT_PORT}: using a {}",
                dev.describe()
            );
            Some(dev)
        }
        Err(e) => {
            tracing::error!(
                "no Redis answers at localhost:{DEFAULT_PORT} and a development Redis could not be started ({e}); \
                 start one (`redis-server`) or set REDIS_HOST/REDIS_PORT"
            );
            None
        }
    }
}

/// Removes the scratch folders of development Redis servers whose service is gone (`kill -9`
/// leaves its folder behind; there is nothing in it).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start(server: &std::path::Path) -> Result<DevRedis, String> {
    remove_stale_dirs();
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find the chaos-lab executable: {e}"))?;
    let mut child = Command::new(me)
        .args(["exec-guarded", "--parent-pid", &std::process::id().to_string(), "--"])
        .arg(server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "yes"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
    let started = Instant::now();
    while !answers(port) {
        if let Ok(Some(status)) = child.try_wait() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("redis-server exited at once ({status})"));
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "redis-server did not listen on 127.0.0.1:{port} within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(DevRedis { port, pid: child.id(), child, dir })
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_millis(300)).is_ok()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(program)).find(|p| p.is_file())
}
