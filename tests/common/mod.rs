//! Test harness: a real `redis-server` on a free loopback port, and the real service started on
//! `127.0.0.1:0` in-process (or as the `chaos-lab` binary when a test needs signals).
#![allow(dead_code)]

pub mod fake_azure;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    child: Option<Child>,
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
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl not found");
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
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run the README's test command, which installs it");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
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
            env!("CARGO_BIN_EXE_loadgen"),
            // An exported azd environment (AZURE_NSG_NAME, …) must not switch tests to Azure.
            "--network-fault-backend",
            "local",
        ];
        all.extend_from_slice(args);
        let config = Config::from_args(all).expect("test config parses");
        config.validate().expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = AppState::start(config, listener.local_addr().unwrap()).await.unwrap();
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

/// The repository's own `scenarios/` folder.
pub fn repo_scenarios() -> String {
    format!("{}/scenarios", env!("CARGO_MANIFEST_DIR"))
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
