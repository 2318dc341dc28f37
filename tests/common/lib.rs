//! Test harness: a real `redis-server` on a free loopback port, and the real service started on
//! `127.0.0.1:0` in-process (or as the `chaos-lab` binary when a test needs signals). Every child
//! process starts through [`proc`].

pub mod azurite;
pub mod browser;
pub mod fake_azure;
pub mod proc;

use std::net::TcpListener as StdListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use self::proc::{Proc, chaos_lab_bin, loadgen_bin, output, output_async};

use chaos_lab::AppState;
use chaos_lab::config::Config;

/// A free TCP port on 127.0.0.1 (bound and released; good enough on loopback).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` owned by the test; killed on drop.
pub struct RedisServer {
    pub port: u16,
    extra: Vec<String>,
    child: Option<Proc>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments, e.g. `["--requirepass", "s3cret"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = Self { port: free_port(), extra: extra.iter().map(|s| s.to_string()).collect(), child: None };
        s.restart();
        s
    }

    /// A Redis that speaks only TLS, with a certificate for `localhost` signed by a CA made for
    /// the test; returns the server and the CA's PEM file.
    pub fn start_tls() -> (Self, std::path::PathBuf) {
        let dir = temp_dir("tls");
        let run = |args: &[&str]| {
            let out = output("openssl", Command::new("openssl").args(args).current_dir(&dir), Duration::from_secs(60));
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=chaos-lab test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ]);
        let port = free_port().to_string();
        let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
        ];
        let mut s =
            Self { port: port.parse().unwrap(), extra: extra.iter().map(|s| s.to_string()).collect(), child: None };
        s.restart();
        (s, dir.join("ca.pem"))
    }

    /// A port where no Redis runs yet; `restart()` starts one there.
    pub fn not_started() -> Self {
        Self { port: free_port(), extra: Vec::new(), child: None }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Proc::spawn(
            "redis-server (the README's test command installs it)",
            Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (-9: clients see their connections reset, as a crashed Redis does).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// A direct connection for checking what Redis holds (not through the service).
    pub fn client(&self) -> redis::Connection {
        let password = self.extra.windows(2).find(|w| w[0] == "--requirepass").map(|w| w[1].clone());
        let url = match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        };
        redis::Client::open(url).unwrap().get_connection().unwrap()
    }

    /// Client connections the server sees, excluding the one asking.
    pub fn client_count(&self) -> usize {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut self.client()).unwrap();
        list.lines().filter(|l| !l.contains("cmd=client|list")).count()
    }

    /// How many times the server has run `command` (lower case, e.g. "get"), from `INFO commandstats`.
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(&mut self.client()).unwrap();
        let line = info.lines().find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")));
        line.and_then(|l| l.strip_prefix("calls=")?.split(',').next()?.parse().ok()).unwrap_or(0)
    }

    /// Waits until the server sees `n` client connections (besides the asker).
    pub fn wait_client_count(&self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let c = self.client_count();
            if c == n || Instant::now() >= deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The service running in-process on a free port.
pub struct TestService {
    pub url: String,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestService {
    /// Starts the service against Redis on `redis_port` with fast test timeouts; `args` are extra
    /// command-line flags (later flags win).
    pub async fn start(redis_port: u16, args: &[&str]) -> Self {
        let port = redis_port.to_string();
        let loadgen = loadgen_bin().to_string_lossy().into_owned();
        let runs_dir = temp_dir("runs");
        let scenarios_dir = temp_dir("scenarios");
        let mut all = vec![
            "--runs-dir",
            runs_dir.to_str().unwrap(),
            "--scenarios-dir",
            scenarios_dir.to_str().unwrap(),
            "--redis-port",
            &port,
            "--redis-host",
            "127.0.0.1",
            "--redis-socket-timeout",
            "1",
            "--redis-socket-connect-timeout",
            "1",
            "--redis-backoff-base",
            "0.1",
            "--redis-backoff-cap",
            "0.3",
            "--health-cache-ttl-seconds",
            "0",
            "--loadgen-bin",
            &loadgen,
            // An exported azd environment (AZURE_NSG_NAME, …) must not switch tests to Azure.
            "--network-fault-backend",
            "local",
        ];
        all.extend_from_slice(args);
        let config = Config::from_args(all).expect("test config parses");
        config.validate().expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = chaos_lab::service::start(config, listener.local_addr().unwrap()).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(chaos_lab::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self { url, state, shutdown: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Graceful shutdown, as SIGTERM does in the binary.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A fresh, empty folder under the system temp dir.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("chaos-lab-test-{what}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The repository's root (this crate is `tests/common` in it).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository")
}

/// The repository's own `scenarios/` folder.
pub fn repo_scenarios() -> String {
    repo().join("scenarios").to_string_lossy().into_owned()
}

/// POSTs a JSON run request with `?wait=true` and returns the final report.
pub async fn run_and_wait(svc: &TestService, body: serde_json::Value) -> serde_json::Value {
    let r = http().post(svc.url("/chaos/run?wait=true")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "run refused");
    r.json().await.unwrap()
}

/// POSTs a JSON run request and returns its run id (the run goes on in the background).
pub async fn start_run(svc: &TestService, body: serde_json::Value) -> String {
    let r = http().post(svc.url("/chaos/run")).json(&body).send().await.unwrap();
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{v}");
    v["run_id"].as_str().unwrap().to_string()
}

/// Waits until run `id` has ended; returns its report.
pub async fn wait_run(svc: &TestService, id: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, r) = get(&svc.url(&format!("/chaos/runs/{id}"))).await;
        if r["status"] != "running" {
            return r;
        }
        assert!(Instant::now() < deadline, "run {id} still running after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts no fault is left: no network fault, no load, no hang, and Redis reachable again.
pub async fn assert_nothing_broken(svc: &TestService) {
    let (_, status) = get(&svc.url("/chaos/status")).await;
    assert_eq!(status["network"]["blocked"], false, "{status}");
    assert!(status["network"]["faults"].as_array().unwrap().is_empty(), "{status}");
    assert_eq!(status["load"]["active"], false, "{status}");
    assert_eq!(status["hang"]["active"], false, "{status}");
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// GET `url`, returning status and JSON body.
pub async fn get(url: &str) -> (u16, serde_json::Value) {
    let r = http().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// POST a raw body, returning status and JSON body.
pub async fn post(url: &str, body: &str) -> (u16, serde_json::Value) {
    let r = http().post(url).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls `f` until it returns true or `within` passes; returns whether it became true.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts `body` is the error envelope with `detail` containing `needle`.
pub fn assert_envelope(body: &serde_json::Value, error: &str, needle: &str) {
    assert_eq!(body["error"], error, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(needle), "detail {detail:?} lacks {needle:?}");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    assert!(body["request_id"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
}

// ---------------------------------------------------------------------------------------------
// The safety kernel (tests/safety.rs, tests/torture.rs): what faults may leave behind, looked at
// from outside, and the `chaos-lab` binary as a child process that can be signalled, killed and
// restarted on the same RUNS_DIR.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use self::fake_azure::FakeAzure;
use serde_json::Value;

impl TestService {
    /// The service's RUNS_DIR: run journals, `ledger.json`, loadgen reports.
    pub fn runs_dir(&self) -> PathBuf {
        self.state.config.chaos.runs_dir.clone()
    }

    /// Where to look for what this service's faults may have left (`ping_redis`: a Redis runs
    /// behind the local proxy, so a PING through it tells blocked and slowed from clean).
    /// `GET /chaos/status` (`Null` when it does not answer JSON).
    pub async fn status(&self) -> Value {
        get(&self.url("/chaos/status")).await.1
    }

    pub fn world(&self, ping_redis: bool) -> World {
        World::new(&self.url, self.runs_dir(), ping_redis)
    }
}

/// Processes whose command line contains `needle` (a zombie's is empty, so it does not count).
pub fn processes_with(needle: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(needle))
        .count()
}

/// What the command line of every loadgen child of a service with this RUNS_DIR contains: its
/// report path, `--json <RUNS_DIR>/loadgen/<run id>-loadgen-<n>.json`.
pub fn loadgen_needle(runs_dir: &Path) -> String {
    format!("{}/loadgen/", runs_dir.display())
}

/// A figure of `/proc/<pid>/status` in KiB, e.g. `VmRSS` or `VmHWM` (`pid` "self": this process).
pub fn vm_kib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The round trip of one Redis `PING` through the local fault proxy at `listen` (a new
/// connection, as a reset pool would open); `None` when no `+PONG` comes within `within`, which
/// is what a black-holed connection looks like.
pub async fn proxy_ping(listen: &str, within: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let started = Instant::now();
    let ping = async {
        let mut s = tokio::net::TcpStream::connect(listen).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.ok()?;
        (buf == *b"+PONG\r\n").then_some(())
    };
    tokio::time::timeout(within, ping).await.ok().flatten().map(|()| started.elapsed())
}

/// What `/chaos/status` says is still broken, one line each; empty when nothing is.
pub fn status_leftovers(s: &Value) -> Vec<String> {
    let list = |v: &Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let f = |k: &str| e[k].as_str().unwrap_or("?").to_string();
                        format!("{} {} {} ({})", f("id"), f("kind"), f("state"), f("owner"))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    };
    let mut left = Vec::new();
    let net = &s["network"];
    if net["blocked"] != false {
        left.push(format!("network.blocked is {}", net["blocked"]));
    }
    match net["faults"].as_array() {
        Some(f) if f.is_empty() => {}
        Some(f) => {
            let ids: Vec<&str> = f.iter().map(|x| x["id"].as_str().unwrap_or("?")).collect();
            left.push(format!("network faults in force: {}", ids.join(", ")));
        }
        None => left.push("status has no network.faults list".into()),
    }
    if let Some(ms) = net["proxy"]["latency_ms"].as_u64()
        && ms > 0
    {
        left.push(format!("the proxy adds {ms} ms of latency"));
    }
    if s["load"]["active"] != false {
        left.push(format!("load active: {}", s["load"]));
    }
    if s["hang"]["active"] != false {
        left.push(format!("hang active: {}", s["hang"]));
    }
    match s["faults"].as_array() {
        Some(f) if f.is_empty() => {}
        Some(_) => left.push(format!("fault ledger entries not undone: {}", list(&s["faults"]))),
        None => left.push("status has no faults list (the fault ledger)".into()),
    }
    if let Some(n) = s["runs"]["active"].as_u64()
        && n > 0
    {
        left.push(format!("{n} run(s) still active"));
    }
    left
}

/// What is wrong with a fake container app's revisions once its deploy faults should be undone:
/// the first revision (the one serving before any fault) must be active with all the traffic,
/// every later (broken) one inactive with none.
pub fn revision_leftovers(revisions: &[Value]) -> Vec<String> {
    let mut left = Vec::new();
    for (i, r) in revisions.iter().enumerate() {
        let name = r["name"].as_str().unwrap_or("?");
        let active = r["properties"]["active"].as_bool().unwrap_or(false);
        let weight = r["properties"]["trafficWeight"].as_i64().unwrap_or(0);
        if i == 0 && (!active || weight != 100) {
            left.push(format!("previous revision {name}: active {active}, traffic {weight}% (want 100%)"));
        }
        if i > 0 && (active || weight != 0) {
            left.push(format!("broken revision {name}: active {active}, traffic {weight}%"));
        }
    }
    left
}

/// Everything a fault can break, for one service: its status (network, load, hang, ledger,
/// runs), Redis through its proxy, its loadgen children, and, for the azure backend, the fake
/// ARM's NSG and container app.
#[derive(Debug, Clone)]
pub struct World {
    pub url: String,
    pub runs_dir: PathBuf,
    /// PING Redis through the local proxy (needs a Redis behind it).
    pub ping_redis: bool,
    /// The fake NSG's path (`FakeAzure::nsg_path`): no `chaos-` rule may stay in it.
    pub nsg: Option<String>,
    /// The fake container app's path (`FakeAzure::app_path`): traffic must be back on its first
    /// revision.
    pub app: Option<String>,
}

impl World {
    pub fn new(url: &str, runs_dir: PathBuf, ping_redis: bool) -> Self {
        Self { url: url.to_string(), runs_dir, ping_redis, nsg: None, app: None }
    }

    /// Also checks the fake ARM's NSG and container app of an azure-backend service.
    pub fn with_azure(mut self, nsg: Option<String>, app: Option<String>) -> Self {
        self.nsg = nsg;
        self.app = app;
        self
    }

    /// Everything still broken, one line each; empty when the world is clean.
    pub async fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
        match client.get(format!("{}/chaos/status", self.url)).send().await {
            Err(e) => left.push(format!("GET /chaos/status failed ({e}): a hang left on, or the service down?")),
            Ok(r) => match r.json::<Value>().await {
                Err(e) => left.push(format!("GET /chaos/status: unreadable body ({e})")),
                Ok(s) => {
                    left.extend(status_leftovers(&s));
                    if self.ping_redis
                        && let Some(listen) = s["network"]["proxy"]["listen"].as_str()
                    {
                        match proxy_ping(listen, Duration::from_secs(1)).await {
                            None => left.push(format!("no PONG through the proxy {listen} within 1 s (blocked)")),
                            Some(t) if t > Duration::from_millis(200) => {
                                left.push(format!("PING through the proxy {listen} took {t:?} (latency)"))
                            }
                            Some(_) => {}
                        }
                    }
                }
            },
        }
        let children = processes_with(&loadgen_needle(&self.runs_dir));
        if children > 0 {
            left.push(format!("{children} loadgen process(es) still running"));
        }
        if let Some(nsg) = &self.nsg {
            for name in FakeAzure::shared().rule_names(nsg).into_iter().filter(|n| n.starts_with("chaos-")) {
                left.push(format!("NSG rule {name} still in place"));
            }
        }
        if let Some(app) = &self.app {
            left.extend(revision_leftovers(&FakeAzure::shared().revisions(app)));
        }
        left
    }

    /// Polls [`World::leftovers`] until nothing is left or `within` has passed; returns what is
    /// left then.
    pub async fn settle(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = self.leftovers().await;
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asserts the world is clean (allowing a few seconds for undos still finishing).
    pub async fn assert_clean(&self) {
        let left = self.settle(Duration::from_secs(5)).await;
        assert!(left.is_empty(), "left behind: {left:#?}");
    }
}

/// The report of run `id` of the service at `base` once it has ended; `None` if it is still
/// running after `within` (or the service stopped answering).
pub async fn ended_run(base: &str, id: &str, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http().get(format!("{base}/chaos/runs/{id}")).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["status"].is_string()
            && v["status"] != "running"
        {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`wait_run`], for a service given by its base URL (e.g. a [`ServiceProcess`]).
pub async fn wait_run_at(base: &str, id: &str, within: Duration) -> Value {
    ended_run(base, id, within).await.unwrap_or_else(|| panic!("run {id} still running after {within:?}"))
}

/// Like [`start_run`], for a service given by its base URL.
pub async fn start_run_at(base: &str, body: Value) -> String {
    let (status, v) = post(&format!("{base}/chaos/run"), &body.to_string()).await;
    assert_eq!(status, 202, "{v}");
    v["run_id"].as_str().unwrap().to_string()
}

/// The `chaos-lab` binary as a child process, for what an in-process service cannot show:
/// SIGTERM, kill -9 and a restart on the same RUNS_DIR. Killed (-9) on drop.
pub struct ServiceProcess {
    pub url: String,
    pub runs_dir: PathBuf,
    /// Environment on top of the defaults of [`ServiceProcess::restart`], kept for restarts.
    env: Vec<(String, String)>,
    child: Option<Proc>,
    /// The last lines of the service's stderr, for failure messages.
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The thread that reads it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServiceProcess {
    /// Starts the binary with RUNS_DIR `runs_dir` and `env` (see [`ServiceProcess::restart`]).
    pub async fn start<K: AsRef<str>, V: AsRef<str>>(runs_dir: &Path, env: &[(K, V)]) -> Self {
        let env = env.iter().map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())).collect();
        let mut s = Self {
            url: String::new(),
            runs_dir: runs_dir.to_path_buf(),
            env,
            child: None,
            stderr: Arc::default(),
            reader: None,
        };
        s.restart().await;
        s
    }

    /// Starts the binary (again) on a new free port, with the same RUNS_DIR and settings, and
    /// waits until `GET /healthz` answers. Defaults, which `env` overrides: loopback, the local
    /// network backend, quick Redis timeouts, LOG_LEVEL=warn, the test build's `loadgen` and the
    /// repository's load profiles. RUNS_DIR goes in the environment, not the command line, so
    /// [`processes_with`] of [`loadgen_needle`] never counts the service itself. A port taken
    /// between [`free_port`] and the service's bind (by a parallel test) is retried on another.
    pub async fn restart(&mut self) {
        for attempt in 1..=3 {
            match self.start_once().await {
                Ok(()) => return,
                Err(taken) if attempt < 3 => eprintln!("{taken}; trying another port"),
                Err(taken) => panic!("{taken}, three times"),
            }
        }
    }

    /// One start on a fresh port; `Err` when the port was taken meanwhile.
    async fn start_once(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the previous chaos-lab process is still running");
        self.stderr.lock().unwrap().clear();
        let port = free_port();
        let mut cmd = Command::new(chaos_lab_bin());
        cmd.env("APP_HOST", "127.0.0.1")
            .env("APP_PORT", port.to_string())
            .env("RUNS_DIR", &self.runs_dir)
            .env("SCENARIOS_DIR", temp_dir("process-scenarios"))
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "warn")
            .env("LOADGEN_BIN", loadgen_bin())
            .env("LOADGEN_PROFILES_DIR", repo().join("loadtests/profiles"))
            .env("NETWORK_FAULT_BACKEND", "local")
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_SOCKET_TIMEOUT", "1")
            .env("REDIS_SOCKET_CONNECT_TIMEOUT", "1")
            .env("REDIS_BACKOFF_BASE", "0.1")
            .env("REDIS_BACKOFF_CAP", "0.3")
            .env("HEALTH_CACHE_TTL_SECONDS", "0")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = Proc::spawn("chaos-lab", &mut cmd);
        let pipe = child.child_mut().stderr.take().unwrap();
        self.child = Some(child);
        let tail = self.stderr.clone();
        self.reader = Some(std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut t = tail.lock().unwrap();
                t.push_back(line);
                if t.len() > 100 {
                    t.pop_front();
                }
            }
        }));
        self.url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = http().get(self.url("/healthz")).timeout(Duration::from_secs(1)).send().await;
            if probe.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().exited() {
                self.child = None;
                // The last lines: the reader ends when the pipe closes with the exit.
                if let Some(reader) = self.reader.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), tokio::task::spawn_blocking(|| reader.join()))
                        .await;
                }
                let said = self.stderr_tail();
                if said.contains("Address already in use") {
                    return Err(format!("port {port} was taken before chaos-lab could listen"));
                }
                panic!("chaos-lab exited at startup ({status}):\n{said}");
            }
            assert!(
                Instant::now() < deadline,
                "chaos-lab did not answer GET /healthz in 30 s:\n{}",
                self.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("chaos-lab is not running").pid()
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(Proc::is_running)
    }

    /// The last lines the service wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Sends SIGTERM and waits up to `within` for the exit; `None` when it was still running then
    /// (it is killed, so the next restart can go ahead).
    pub async fn sigterm(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("chaos-lab is not running");
        let status = child.terminate(within).await;
        self.child = None;
        status
    }

    /// kill -9: nothing in the process gets to run; reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// A figure of the service's `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, ...).
    pub fn vm_kib(&self, field: &str) -> u64 {
        vm_kib(&self.pid().to_string(), field)
    }

    /// Where to look for what this service's faults may have left (see [`TestService::world`]).
    /// `GET /chaos/status` (`Null` when it does not answer JSON).
    pub async fn status(&self) -> Value {
        get(&self.url("/chaos/status")).await.1
    }

    pub fn world(&self, ping_redis: bool) -> World {
        World::new(&self.url, self.runs_dir.clone(), ping_redis)
    }
}

/// The service in-process on the azure backend against `fake` (see [`fake_azure::FakeAzure::service_args`]),
/// with `extra` flags.
pub async fn azure_service(fake: &fake_azure::FakeAzure, sub: &str, client: &str, extra: &[&str]) -> TestService {
    let mut args = fake.service_args(sub, client);
    args.extend_from_slice(extra);
    TestService::start(free_port(), &args).await
}
