//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol (CDP): a test renders
//! a page and gets a full-page PNG screenshot ([`Browser::screenshot`]), or the JSON value of a
//! JavaScript expression evaluated in it ([`Browser::eval`]); [`png_stats`] says whether a PNG shows
//! anything at all.
//!
//! Not chromiumoxide: it costs about 2.5 minutes of CI build, and the handful of commands used here
//! fit in one websocket to the browser endpoint with flat sessions (`Target.createTarget`,
//! `Target.attachToTarget {flatten: true}`, then `Page.*`, `Emulation.*`, `Runtime.evaluate` with
//! the `sessionId`), over tokio-tungstenite, which goose already builds. Replies are matched by
//! `id`, events by `method` + `sessionId`; every wait is bounded and panics naming the step and URL.
//!
//! No browser is left behind, even when the test binary is killed with SIGKILL: Chromium runs as
//! `setpriv --pdeathsig KILL chromium ...` (util-linux), so Linux kills it when its parent dies,
//! and in a process group of its own, which [`Browser`]'s drop kills whole (SIGKILL) and reaps.
//! The renderers and zygotes are not covered by the parent-death signal, but they are in the
//! group and, when the browser process dies, exit by themselves within a moment. The parent-death
//! signal fires when the *thread* that spawned the browser ends, not the process: each test must
//! launch and own its browser (no browser shared across tests in a static, none launched from a
//! `spawn_blocking` thread, which the runtime retires when idle). Killed processes may show as
//! zombies (state `Z`) for a second or two until PID 1 reaps them: a check for leftover
//! browsers must count those as dead.
//!
//! Tried by hand against Chromium 156 (Debian 12's `chromium` 156.0.8078.114): the Debian wrapper
//! script prints `/usr/bin/chromium: 9: [: ...: unexpected operator` and D-Bus errors on stderr
//! (harmless), then, on stderr, `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/UUID`.
//! Starting takes about 0.2 s when warm (0.45 s with the websocket connect), but once took 11 s
//! cold (binary not in the page cache): hence the 20 s bound. A screenshot of a 1280x2500 page
//! takes about 0.9 s with the 300 ms settle, and `png_stats` on it 0.1-0.8 s in a debug build.
//! `Page.navigate` to an unreachable URL replies with an `errorText` and still fires
//! `Page.loadEventFired` (for Chrome's error page), so the `errorText` is checked; an HTTP error
//! status (404) is not an `errorText`: the error body loads like any page.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to print its DevTools address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a page may take to fire its load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one DevTools command may take to be answered (a tall screenshot takes well under 1 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a page is left after its load event before it is looked at (late scripts, fonts).
const SETTLE: Duration = Duration::from_millis(300);
/// The viewport: 1280 wide; a screenshot grows it to the page's height, up to `MAX_HEIGHT`.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
const MAX_HEIGHT: u32 = 10_000;
/// Stderr lines kept for panic messages.
const KEPT_LINES: usize = 50;

/// The stderr line that gives the browser's DevTools websocket address.
const LISTENING: &str = "DevTools listening on ";

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
type Sink = SplitSink<Ws, Message>;

/// One Chromium process (and its helpers, in its process group), killed on drop and when the test
/// binary dies. Commands go over one websocket; `&self` methods may run concurrently (each works in
/// a tab of its own).
pub struct Browser {
    sink: tokio::sync::Mutex<Sink>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Last, so the process is killed after the connection is dropped.
    group: Group,
}

/// Who waits for what comes in over the websocket.
#[derive(Default)]
struct Routes {
    /// Command `id` → its reply.
    replies: HashMap<u64, oneshot::Sender<Value>>,
    /// The next event with this `method` and `sessionId` goes to the first waiter.
    events: Vec<EventWaiter>,
    /// Why the connection is gone, once it is: later commands fail at once with this.
    closed: Option<String>,
}

struct EventWaiter {
    method: String,
    session: String,
    tx: oneshot::Sender<Value>,
}

/// A tab attached with a flat session.
struct Tab {
    target_id: String,
    session: String,
}

/// The browser's process group: SIGKILL to the whole group, then the leader reaped, on drop.
struct Group {
    child: Child,
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Browser {
    /// Starts headless Chromium with its profile in `profile_dir` (created if missing; the caller
    /// owns it, e.g. `common::temp_dir("chromium")`) and connects to its DevTools endpoint.
    ///
    /// Panics with a clear message if no chromium is installed (see [`chromium_path`];
    /// `bash tests/run.sh` installs it), or if it does not print its DevTools address within 20 s.
    /// Call it from the test itself (see the module doc: the browser dies with the spawning thread).
    pub async fn launch(profile_dir: &Path) -> Browser {
        let chromium = chromium_path().unwrap_or_else(|| {
            panic!(
                "no chromium to render pages with: `bash tests/run.sh` installs it (apt-get install chromium), \
                 or set CHROMIUM to its path"
            )
        });
        std::fs::create_dir_all(profile_dir)
            .unwrap_or_else(|e| panic!("cannot create the chromium profile {}: {e}", profile_dir.display()));
        let mut user_data_dir = OsString::from("--user-data-dir=");
        user_data_dir.push(profile_dir);
        let mut child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL"])
            .arg(&chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(user_data_dir)
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} through setpriv (util-linux): {e}", chromium.display()));
        let stderr = child.stderr.take().expect("chromium's stderr is piped");
        let group = Group { child };

        // Read stderr up to the DevTools line, then keep draining it so the pipe never fills.
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = oneshot::channel::<String>();
        {
            let lines = lines.clone();
            std::thread::Builder::new()
                .name("chromium-stderr".into())
                .spawn(move || drain_stderr(stderr, &lines, url_tx))
                .expect("cannot start the chromium stderr thread");
        }
        let ws_url = match tokio::time::timeout(START_TIMEOUT, url_rx).await {
            Ok(Ok(url)) => url,
            Ok(Err(_)) => panic!(
                "{} exited before printing `DevTools listening on ws://...`; its stderr:\n{}",
                chromium.display(),
                kept(&lines)
            ),
            Err(_) => panic!(
                "{} did not print `DevTools listening on ws://...` within {START_TIMEOUT:?}; its stderr:\n{}",
                chromium.display(),
                kept(&lines)
            ),
        };

        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let connect = tokio_tungstenite::connect_async_with_config(ws_url.as_str(), Some(config), true);
        let (ws, _) = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| panic!("connecting to chromium's DevTools at {ws_url} took over {CALL_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("cannot connect to chromium's DevTools at {ws_url}: {e}"));
        let (sink, stream) = ws.split();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let reader = tokio::spawn(read_messages(stream, routes.clone()));
        Browser {
            sink: tokio::sync::Mutex::new(sink),
            routes,
            next_id: AtomicU64::new(1),
            reader,
            stderr: lines,
            group,
        }
    }

    /// Opens `url` in a new tab, waits for the load event (bounded: 15 s), then a short settle
    /// (300 ms), and returns a full-page PNG screenshot of a 1280-wide viewport (as tall as the
    /// page, at most 10000 px).
    pub async fn screenshot(&self, url: &str) -> Vec<u8> {
        let what = format!("screenshot of {url}");
        let tab = self.open(url, &what).await;
        tokio::time::sleep(SETTLE).await;
        let session = Some(tab.session.as_str());
        let layout = self.call(session, "Page.getLayoutMetrics", json!({}), &what).await;
        let height = layout["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: Page.getLayoutMetrics gave no cssContentSize.height: {layout}"));
        let height = (height.ceil() as u32).clamp(1, MAX_HEIGHT);
        self.call(session, "Emulation.setDeviceMetricsOverride", metrics(height), &what).await;
        let shot = self
            .call(session, "Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}), &what)
            .await;
        self.close(&tab, &what).await;
        let data = shot["data"].as_str().unwrap_or_else(|| panic!("{what}: Page.captureScreenshot gave no data"));
        STANDARD.decode(data).unwrap_or_else(|e| panic!("{what}: the screenshot is not base64: {e}"))
    }

    /// Evaluates a JS expression in a new tab at `url` after its load event (and the same settle as
    /// [`Browser::screenshot`]), returning its JSON value (`returnByValue`; a promise is awaited;
    /// `undefined` gives `null`). Panics if the expression throws.
    pub async fn eval(&self, url: &str, expression: &str) -> Value {
        let what = format!("eval at {url}");
        let tab = self.open(url, &what).await;
        tokio::time::sleep(SETTLE).await;
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let out = self.call(Some(tab.session.as_str()), "Runtime.evaluate", params, &what).await;
        self.close(&tab, &what).await;
        if let Some(exception) = out.get("exceptionDetails") {
            let why = exception["exception"]["description"].as_str().or(exception["text"].as_str()).unwrap_or("?");
            panic!("{what}: `{expression}` threw: {why}");
        }
        out["result"].get("value").cloned().unwrap_or_default()
    }

    /// A new tab, attached with a flat session, showing `url` after its load event.
    async fn open(&self, url: &str, what: &str) -> Tab {
        let created = self.call(None, "Target.createTarget", json!({"url": "about:blank"}), what).await;
        let target_id = string(&created, "targetId", what);
        let attach = json!({"targetId": target_id, "flatten": true});
        let attached = self.call(None, "Target.attachToTarget", attach, what).await;
        let tab = Tab { session: string(&attached, "sessionId", what), target_id };
        let session = Some(tab.session.as_str());
        self.call(session, "Page.enable", json!({}), what).await;
        self.call(session, "Emulation.setDeviceMetricsOverride", metrics(HEIGHT), what).await;
        // Registered before navigating, so the event cannot slip by.
        let loaded = self.expect_event(&tab.session, "Page.loadEventFired");
        let nav = self.call(session, "Page.navigate", json!({"url": url}), what).await;
        if let Some(error) = nav.get("errorText").and_then(Value::as_str) {
            panic!("{what}: Page.navigate failed: {error}");
        }
        match tokio::time::timeout(LOAD_TIMEOUT, loaded).await {
            Ok(Ok(_)) => tab,
            Ok(Err(_)) => panic!("{what}: no load event: {}", self.closed_why()),
            Err(_) => panic!("{what}: the page did not fire its load event within {LOAD_TIMEOUT:?}"),
        }
    }

    async fn close(&self, tab: &Tab, what: &str) {
        self.call(None, "Target.closeTarget", json!({"targetId": tab.target_id}), what).await;
    }

    /// Sends one command (to the browser, or to a tab's `session`) and returns its `result`;
    /// panics on a CDP error, a timeout or a lost connection.
    async fn call(&self, session: Option<&str>, method: &str, params: Value, what: &str) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let closed = {
            let mut routes = self.routes.lock().unwrap();
            if routes.closed.is_none() {
                routes.replies.insert(id, tx);
            }
            routes.closed.clone()
        };
        if let Some(why) = closed {
            panic!("{what}: cannot send {method}: {why}");
        }
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let send = async { self.sink.lock().await.send(Message::text(message.to_string())).await };
        match tokio::time::timeout(CALL_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{what}: cannot send {method}: {e}"),
            Err(_) => panic!("{what}: sending {method} took over {CALL_TIMEOUT:?}"),
        }
        let mut reply = match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => panic!("{what}: no reply to {method}: {}", self.closed_why()),
            Err(_) => panic!("{what}: chromium did not answer {method} within {CALL_TIMEOUT:?}"),
        };
        if let Some(error) = reply.get("error") {
            panic!("{what}: {method} failed: {error}");
        }
        reply.get_mut("result").map(Value::take).unwrap_or_default()
    }

    /// A receiver for the next event `method` of tab `session`.
    fn expect_event(&self, session: &str, method: &str) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        let waiter = EventWaiter { method: method.to_string(), session: session.to_string(), tx };
        self.routes.lock().unwrap().events.push(waiter);
        rx
    }

    /// Why the connection is gone, with Chromium's last stderr lines.
    fn closed_why(&self) -> String {
        let why = self.routes.lock().unwrap().closed.clone().unwrap_or_else(|| "connection dropped".into());
        format!("{why}; chromium (pid {}) said on stderr:\n{}", self.group.child.id(), kept(&self.stderr))
    }
}

/// Decodes a PNG and returns (width, height, share of pixels that differ from the most common
/// colour, 0..1): about 0 for a blank page, more the more the page shows.
pub fn png_stats(png: &[u8]) -> (u32, u32, f64) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("not a PNG: {e}"));
    let size = reader.output_buffer_size().expect("the PNG is too large to decode");
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).unwrap_or_else(|e| panic!("cannot decode the PNG: {e}"));
    let (width, height) = (info.width, info.height);
    let samples = info.color_type.samples();
    // Rows come in long runs of one colour, and often repeat the row above: count runs, and
    // reuse the row above's, rather than hash every pixel (this runs in debug builds).
    let mut counts: HashMap<u32, u64> = HashMap::new();
    let mut above: (&[u8], Vec<(u32, u64)>) = (&[], Vec::new());
    for row in buf.chunks_exact(info.line_size).take(height as usize) {
        let row = &row[..width as usize * samples];
        if row != above.0 {
            above = (row, runs(row, samples));
        }
        for &(colour, n) in &above.1 {
            *counts.entry(colour).or_default() += n;
        }
    }
    let total = u64::from(width) * u64::from(height);
    let most = counts.values().copied().max().unwrap_or(0);
    let share = if total == 0 { 0.0 } else { (total - most) as f64 / total as f64 };
    (width, height, share)
}

/// One row's runs of one colour, as (colour, pixels).
fn runs(row: &[u8], samples: usize) -> Vec<(u32, u64)> {
    let mut runs: Vec<(u32, u64)> = Vec::new();
    for pixel in row.chunks_exact(samples) {
        let colour = pixel.iter().fold(0u32, |c, &b| (c << 8) | u32::from(b));
        match runs.last_mut() {
            Some((last, n)) if *last == colour => *n += 1,
            _ => runs.push((colour, 1)),
        }
    }
    runs
}

/// The Chromium to run: `CHROMIUM` if set, else `chromium` or `chromium-browser` on `PATH`. None,
/// with an eprintln saying why, when there is none (callers fail the test; `tests/run.sh` installs
/// it).
pub fn chromium_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if executable(&path) {
            return Some(path);
        }
        eprintln!("CHROMIUM={} is not an executable file", path.display());
        return None;
    }
    let dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let found = ["chromium", "chromium-browser"]
        .iter()
        .find_map(|name| dirs.iter().map(|dir| dir.join(name)).find(|path| executable(path)));
    if found.is_none() {
        eprintln!("no chromium or chromium-browser on PATH (and CHROMIUM is not set)");
    }
    found
}

fn executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The viewport as `Emulation.setDeviceMetricsOverride` takes it.
fn metrics(height: u32) -> Value {
    json!({"width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": false})
}

/// A string field of a command's result.
fn string(result: &Value, field: &str, what: &str) -> String {
    let value = result[field].as_str();
    value.unwrap_or_else(|| panic!("{what}: no {field} in {result}")).to_string()
}

/// Chromium's stderr, line by line: the first `DevTools listening on ws://...` address goes to
/// `url_tx`; the last lines are kept for panic messages; reads to the end so the pipe never fills.
fn drain_stderr(stderr: std::process::ChildStderr, lines: &Mutex<Vec<String>>, url_tx: oneshot::Sender<String>) {
    let mut url_tx = Some(url_tx);
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if matches!(reader.read_until(b'\n', &mut buf), Ok(0) | Err(_)) {
            return;
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if let Some((_, url)) = line.split_once(LISTENING)
            && url.starts_with("ws://")
            && let Some(tx) = url_tx.take()
        {
            let _ = tx.send(url.trim().to_string());
        }
        let mut kept = lines.lock().unwrap();
        if kept.len() == KEPT_LINES {
            kept.remove(0);
        }
        kept.push(line);
    }
}

fn kept(lines: &Mutex<Vec<String>>) -> String {
    lines.lock().unwrap().join("\n")
}

/// Routes what comes in over the websocket: replies by `id`, events by `method` + `sessionId`.
/// When the connection ends, records why and drops every waiter (which then fails at once).
async fn read_messages(mut stream: SplitStream<Ws>, routes: Arc<Mutex<Routes>>) {
    let why = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => route(&routes, text.as_str()),
            Some(Ok(Message::Close(frame))) => break format!("chromium closed the DevTools connection ({frame:?})"),
            Some(Ok(_)) => {}
            Some(Err(e)) => break format!("the DevTools connection failed: {e}"),
            None => break "the DevTools connection ended".to_string(),
        }
    };
    let mut routes = routes.lock().unwrap();
    routes.closed = Some(why);
    routes.replies.clear();
    routes.events.clear();
}

fn route(routes: &Mutex<Routes>, text: &str) {
    let Ok(message) = serde_json::from_str::<Value>(text) else { return };
    let mut routes = routes.lock().unwrap();
    if let Some(id) = message.get("id").and_then(Value::as_u64) {
        if let Some(tx) = routes.replies.remove(&id) {
            let _ = tx.send(message);
        }
        return;
    }
    let Some(method) = message.get("method").and_then(Value::as_str) else { return };
    let session = message.get("sessionId").and_then(Value::as_str).unwrap_or("");
    if let Some(i) = routes.events.iter().position(|w| w.method == method && w.session == session) {
        let waiter = routes.events.swap_remove(i);
        let _ = waiter.tx.send(message);
    }
}
