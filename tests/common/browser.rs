//! Headless Chromium (Debian's `chromium`) driven over the DevTools protocol (CDP): a test renders
//! a page and gets a full-page PNG screenshot ([`Browser::screenshot`]), or the JSON value of a
//! JavaScript expression evaluated in it ([`Browser::eval`]); [`png_stats`] says whether a PNG shows
//! anything at all. Both open a tab of their own, wait for its load event and a 300 ms settle, and
//! close it.
//!
//! An interactive test keeps one tab through its steps instead (a single-page console changes
//! views with `history.pushState`, so the page stays): [`Browser::open`] gives a [`Tab`], loaded
//! but with no settle, on which [`Tab::eval`], [`Tab::wait_for`] (polls a JS condition, and on
//! failure tells what the page showed), [`Tab::screenshot`], [`Tab::goto`] and
//! [`Tab::accept_dialogs`] work on the page as it is by then; [`Tab::close`] or its drop closes it.
//! `Browser::screenshot` and `Browser::eval` are those same steps on a tab of their own.
//!
//! JavaScript dialogs never block a test: `alert`/`confirm`/`prompt` would stall the page (its load
//! event and every evaluation) until answered, so every `Page.javascriptDialogOpening` of a tab is
//! answered at once with `Page.handleJavaScriptDialog {accept: true}` (confirm gives true), and
//! noted on stderr. `Tab::accept_dialogs` stubs `window.confirm` and `window.alert` in the page so
//! no dialog opens at all; the stubs go with the document, so it must be called again after a
//! navigation (`goto`, a reload, a link to another page; `pushState` keeps them).
//!
//! Not chromiumoxide: it costs about 2.5 minutes of CI build, and the handful of commands used here
//! fit in one websocket to the browser endpoint with flat sessions (`Target.createTarget`,
//! `Target.attachToTarget {flatten: true}`, then `Page.*`, `Emulation.*`, `Runtime.evaluate` with
//! the `sessionId`), over tokio-tungstenite, which goose already builds. Replies are matched by
//! `id`, events by `method` + `sessionId`; every wait is bounded and panics naming the step and URL
//! (for a `Tab`, the URL it last loaded with `open` or `goto`). A tab's drop, which cannot wait,
//! sends its `Target.closeTarget` from a task of its own and ignores the reply (best effort: a
//! browser dropped at once, or the runtime ending, may kill the tab first, which is as good).
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
//! cold (binary not in the page cache): hence a 60 s bound (see START_TIMEOUT). A screenshot of a 1280x2500 page
//! takes about 0.9 s with the 300 ms settle, and `png_stats` on it 0.1-0.8 s in a debug build.
//! `Page.navigate` to an unreachable URL replies with an `errorText` and still fires
//! `Page.loadEventFired` (for Chrome's error page), so the `errorText` is checked; an HTTP error
//! status (404) is not an `errorText`: the error body loads like any page.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

use crate::Proc;

/// How long Chromium may take to print its DevTools address. It usually takes under 0.5 s, but
/// 11 s was seen cold, and more than 20 s on 2 cores while other tests ran load generators.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a page may take to fire its load event.
const LOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one DevTools command may take to be answered (a tall screenshot takes well under 1 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a page is left after its load event before it is looked at (late scripts, fonts).
const SETTLE: Duration = Duration::from_millis(300);
/// How often [`Tab::wait_for`] evaluates its expression, and the least time one evaluation gets.
const POLL: Duration = Duration::from_millis(50);
const MIN_POLL_BOUND: Duration = Duration::from_millis(500);
/// How long [`Tab::wait_for`]'s failure may take to read what the page shows.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of `document.body.innerText` a [`Tab::wait_for`] failure shows (characters).
const SHOWN_TEXT: usize = 2000;
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
/// binary dies. Commands go over one websocket; `&self` methods may run concurrently, and so may
/// several [`Tab`]s (each works in a tab of its own).
pub struct Browser {
    wire: Arc<Wire>,
    routes: Arc<Mutex<Routes>>,
    reader: tokio::task::JoinHandle<()>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Last, so the process is killed after the connection is dropped.
    group: Proc,
}

/// The sending half of the websocket, and the command ids. Shared with the reader task (which
/// answers JavaScript dialogs) and with [`Tab`]'s drop (which closes the tab): those two cannot
/// wait for a reply, and send with [`Wire::send_detached`].
struct Wire {
    sink: tokio::sync::Mutex<Sink>,
    next_id: AtomicU64,
}

/// Who waits for what comes in over the websocket.
#[derive(Default)]
struct Routes {
    /// Command `id` → its reply.
    replies: HashMap<u64, oneshot::Sender<Value>>,
    /// The next event with this `method` and `sessionId` goes to the first waiter still waiting.
    events: Vec<EventWaiter>,
    /// Why the connection is gone, once it is: later commands fail at once with this.
    closed: Option<String>,
}

struct EventWaiter {
    method: String,
    session: String,
    tx: oneshot::Sender<Value>,
}

/// Why [`Tab`]'s `Runtime.evaluate` gave no value.
enum Unevaluated {
    /// The expression threw this (the exception's description, else its value, else CDP's text).
    Threw(String),
    /// The command failed (the [`Browser::request`] error).
    Failed(String),
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Wire {
    /// A command as sent: a fresh `id`, and the `sessionId` of the tab it goes to, if any.
    fn command(&self, session: Option<&str>, method: &str, params: Value) -> (u64, String) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        (id, message.to_string())
    }

    /// Sends a command from a task of its own (bounded by `CALL_TIMEOUT`), nobody waiting for the
    /// reply, which the reader then ignores; errors are ignored too. Outside a Tokio runtime, does
    /// nothing (best effort: used from drop and from the reader).
    fn send_detached(self: &Arc<Self>, session: Option<&str>, method: &str, params: Value) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (_, text) = self.command(session, method, params);
        let wire = self.clone();
        runtime.spawn(async move {
            let send = async { wire.sink.lock().await.send(Message::text(text)).await };
            let _ = tokio::time::timeout(CALL_TIMEOUT, send).await;
        });
    }
}

impl Browser {
    /// Starts headless Chromium with its profile in `profile_dir` (created if missing; the caller
    /// owns it, e.g. `common::temp_dir("chromium")`) and connects to its DevTools endpoint.
    ///
    /// Panics with a clear message if no chromium is installed (see [`chromium_path`];
    /// `bash tests/run.sh` installs it), or if it does not print its DevTools address within START_TIMEOUT (60 s).
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
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL"])
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
            .stderr(Stdio::piped());
        let mut group = Proc::spawn(&format!("{} through setpriv (util-linux)", chromium.display()), &mut cmd);
        let stderr = group.child_mut().stderr.take().expect("chromium's stderr is piped");

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
        let wire = Arc::new(Wire { sink: tokio::sync::Mutex::new(sink), next_id: AtomicU64::new(1) });
        let routes = Arc::new(Mutex::new(Routes::default()));
        let reader = tokio::spawn(read_messages(stream, routes.clone(), wire.clone()));
        Browser { wire, routes, reader, stderr: lines, group }
    }

    /// Opens `url` in a new tab, waits for the load event (bounded: 15 s), then a short settle
    /// (300 ms), and returns a full-page PNG screenshot of a 1280-wide viewport (as tall as the
    /// page, at most 10000 px); the tab is closed. [`Tab::screenshot`] on a tab of [`Browser::open`].
    pub async fn screenshot(&self, url: &str) -> Vec<u8> {
        let what = format!("screenshot of {url}");
        let tab = self.open_as(url, &what).await;
        tokio::time::sleep(SETTLE).await;
        let png = tab.screenshot_as(&what).await;
        tab.close_as(&what).await;
        png
    }

    /// Evaluates a JS expression in a new tab at `url` after its load event (and the same settle as
    /// [`Browser::screenshot`]), returning its JSON value (`returnByValue`; a promise is awaited;
    /// `undefined` gives `null`); the tab is closed. Panics if the expression throws.
    /// [`Tab::eval`] on a tab of [`Browser::open`].
    pub async fn eval(&self, url: &str, expression: &str) -> Value {
        let what = format!("eval at {url}");
        let tab = self.open_as(url, &what).await;
        tokio::time::sleep(SETTLE).await;
        let value = tab.eval_as(expression, &what).await;
        tab.close_as(&what).await;
        value
    }

    /// Opens `url` in a new tab (1280x900 viewport) and waits for its load event (bounded: 15 s;
    /// no settle after it); the tab stays open until [`Tab::close`] or until it is dropped.
    /// Panics if the page cannot be loaded (see the module doc).
    pub async fn open(&self, url: &str) -> Tab<'_> {
        self.open_as(url, &format!("opening {url}")).await
    }

    /// A new tab, attached with a flat session, showing `url` after its load event.
    async fn open_as(&self, url: &str, what: &str) -> Tab<'_> {
        let created = self.call(None, "Target.createTarget", json!({"url": "about:blank"}), what).await;
        let target_id = string(&created, "targetId", what);
        let attach = json!({"targetId": target_id, "flatten": true});
        // Closed by its drop from here on, should a later step panic.
        let mut tab = Tab { browser: self, target_id, session: String::new(), url: Mutex::new(url.into()), open: true };
        let attached = self.call(None, "Target.attachToTarget", attach, what).await;
        tab.session = string(&attached, "sessionId", what);
        let session = Some(tab.session.as_str());
        // Page events from here on, `Page.javascriptDialogOpening` included (see `route`).
        self.call(session, "Page.enable", json!({}), what).await;
        self.call(session, "Emulation.setDeviceMetricsOverride", metrics(HEIGHT), what).await;
        tab.navigate(url, what).await;
        tab
    }

    /// Sends one command (to the browser, or to a tab's `session`) and returns its `result`;
    /// panics on a CDP error, a timeout or a lost connection.
    async fn call(&self, session: Option<&str>, method: &str, params: Value, what: &str) -> Value {
        self.request(session, method, params).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// [`Browser::call`], saying why not instead of panicking.
    async fn request(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let (id, text) = self.wire.command(session, method, params);
        let (tx, rx) = oneshot::channel();
        let closed = {
            let mut routes = self.routes.lock().unwrap();
            if routes.closed.is_none() {
                routes.replies.insert(id, tx);
            }
            routes.closed.clone()
        };
        if let Some(why) = closed {
            return Err(format!("cannot send {method}: {why}"));
        }
        let send = async { self.wire.sink.lock().await.send(Message::text(text)).await };
        match tokio::time::timeout(CALL_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("cannot send {method}: {e}")),
            Err(_) => return Err(format!("sending {method} took over {CALL_TIMEOUT:?}")),
        }
        let mut reply = match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(format!("no reply to {method}: {}", self.closed_why())),
            Err(_) => return Err(format!("chromium did not answer {method} within {CALL_TIMEOUT:?}")),
        };
        if let Some(error) = reply.get("error") {
            return Err(format!("{method} failed: {error}"));
        }
        Ok(reply.get_mut("result").map(Value::take).unwrap_or_default())
    }

    /// A receiver for the next event `method` of tab `session` (dropping it gives up the wait).
    fn expect_event(&self, session: &str, method: &str) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        let waiter = EventWaiter { method: method.to_string(), session: session.to_string(), tx };
        let mut routes = self.routes.lock().unwrap();
        routes.events.retain(|w| !w.tx.is_closed());
        routes.events.push(waiter);
        rx
    }

    /// Why the connection is gone, with Chromium's last stderr lines.
    fn closed_why(&self) -> String {
        let why = self.routes.lock().unwrap().closed.clone().unwrap_or_else(|| "connection dropped".into());
        format!("{why}; chromium (pid {}) said on stderr:\n{}", self.group.pid(), kept(&self.stderr))
    }

    fn is_closed(&self) -> bool {
        self.routes.lock().unwrap().closed.is_some()
    }
}

/// A tab of a [`Browser`] (flat session, 1280x900 viewport) that lives through several steps, for
/// interactive tests: [`Browser::open`] loads a page, then [`Tab::eval`], [`Tab::wait_for`],
/// [`Tab::screenshot`] and [`Tab::goto`] work on whatever the page shows by then (a single-page
/// app's `history.pushState` views included). Closed by [`Tab::close`], or else on drop (best
/// effort: the command is sent from a task of its own, nobody waiting for its reply; never
/// panics). Its methods panic naming the step and the URL it last loaded (with `open` or `goto`:
/// not the page's own `pushState` moves), and a JavaScript dialog that opens in it is accepted at
/// once (see the module doc). Its methods may run concurrently, though a test rarely wants that.
pub struct Tab<'a> {
    browser: &'a Browser,
    target_id: String,
    session: String,
    /// The URL last loaded with `open` or `goto`, for panic messages.
    url: Mutex<String>,
    /// False once [`Tab::close`] has closed it, so drop does not close it again.
    open: bool,
}

impl Drop for Tab<'_> {
    fn drop(&mut self) {
        if self.open {
            self.browser.wire.send_detached(None, "Target.closeTarget", json!({"targetId": self.target_id}));
        }
    }
}

impl Tab<'_> {
    /// Evaluates a JS expression in the page (`Runtime.evaluate`, a promise awaited, the result
    /// returned by value: its JSON, `undefined` giving `null`). Panics with the expression and the
    /// exception's text if it throws.
    pub async fn eval(&self, expression: &str) -> Value {
        self.eval_as(expression, &format!("eval in the tab at {}", self.url())).await
    }

    /// Evaluates the JS boolean `expression` every 50 ms until it gives `true` (exactly: a truthy
    /// non-boolean does not count; use `!!(...)`). An evaluation that throws (an element not
    /// rendered yet) counts as not yet. Panics after `within` (plus at most one evaluation, which
    /// gets at least 0.5 s) with the expression, its last result, the page's URL and the first
    /// 2000 characters of `document.body.innerText`, so a failure says what the page showed;
    /// panics at once if the connection to Chromium is lost.
    pub async fn wait_for(&self, expression: &str, within: Duration) {
        let what = format!("wait_for in the tab at {}", self.url());
        let start = tokio::time::Instant::now();
        let deadline = start + within;
        let last = loop {
            let bound = deadline.saturating_duration_since(tokio::time::Instant::now()).max(MIN_POLL_BOUND);
            let last = match tokio::time::timeout(bound, self.try_eval(expression)).await {
                Ok(Ok(Value::Bool(true))) => return,
                Ok(Ok(value)) => format!("it gave {value}"),
                Ok(Err(Unevaluated::Threw(why))) => format!("it threw {why}"),
                Ok(Err(Unevaluated::Failed(e))) => e,
                Err(_) => format!("an evaluation took over {bound:?}"),
            };
            let lost = self.browser.is_closed();
            assert!(!lost, "{what}: waiting for `{expression}`: {last}; {}", self.browser.closed_why());
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break last;
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        };
        let waited = start.elapsed();
        let (url, text) = self.showing().await;
        panic!(
            "{what}: `{expression}` was not true within {within:?} (last: {last}); after {waited:?} the page is at {url} \
             and its document.body.innerText is:\n{text}"
        );
    }

    /// A full-page PNG screenshot of the tab as it is now: the viewport grown to the page's height
    /// (at most 10000 px, 1280 wide), captured beyond the viewport, then set back to 1280x900.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.screenshot_as(&format!("screenshot of the tab at {}", self.url())).await
    }

    /// Navigates the tab to `url` (`Page.navigate`) and waits for the load event (bounded: 15 s;
    /// none is awaited for a same-document navigation, e.g. to a `#fragment`). A new document
    /// drops what [`Tab::accept_dialogs`] set: call it again.
    pub async fn goto(&self, url: &str) {
        self.navigate(url, &format!("goto {url} in the tab at {}", self.url())).await;
    }

    /// Makes `window.confirm` return true and `window.alert` do nothing in the page as it is now,
    /// so a console's "are you sure?" passes without a dialog. Lasts until the next document
    /// loads (a [`Tab::goto`], a reload, a link or form to another page; not a `pushState`): call
    /// it again then. A real dialog is accepted anyway (see the module doc); this just spares it.
    pub async fn accept_dialogs(&self) {
        let what = format!("accept_dialogs in the tab at {}", self.url());
        self.eval_as("window.confirm = () => true; window.alert = () => {};", &what).await;
    }

    /// Closes the tab (`Target.closeTarget`), waiting for Chromium's reply; panics if it fails.
    pub async fn close(self) {
        let what = format!("closing the tab at {}", self.url());
        self.close_as(&what).await;
    }

    async fn close_as(mut self, what: &str) {
        self.browser.call(None, "Target.closeTarget", json!({"targetId": self.target_id}), what).await;
        self.open = false;
    }

    async fn eval_as(&self, expression: &str, what: &str) -> Value {
        match self.try_eval(expression).await {
            Ok(value) => value,
            Err(Unevaluated::Threw(why)) => panic!("{what}: `{expression}` threw: {why}"),
            Err(Unevaluated::Failed(e)) => panic!("{what}: {e}"),
        }
    }

    /// `Runtime.evaluate` of `expression`: its value, or why not.
    async fn try_eval(&self, expression: &str) -> Result<Value, Unevaluated> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let request = self.browser.request(Some(&self.session), "Runtime.evaluate", params);
        let out = request.await.map_err(Unevaluated::Failed)?;
        if let Some(exception) = out.get("exceptionDetails") {
            let thrown = &exception["exception"];
            let why = thrown["description"].as_str().map(str::to_string);
            let why = why.or_else(|| thrown.get("value").map(Value::to_string));
            let why = why.or_else(|| exception["text"].as_str().map(str::to_string));
            return Err(Unevaluated::Threw(why.unwrap_or_else(|| "?".into())));
        }
        Ok(out["result"].get("value").cloned().unwrap_or_default())
    }

    async fn screenshot_as(&self, what: &str) -> Vec<u8> {
        let session = Some(self.session.as_str());
        let layout = self.browser.call(session, "Page.getLayoutMetrics", json!({}), what).await;
        let height = layout["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: Page.getLayoutMetrics gave no cssContentSize.height: {layout}"));
        let height = (height.ceil() as u32).clamp(1, MAX_HEIGHT);
        self.browser.call(session, "Emulation.setDeviceMetricsOverride", metrics(height), what).await;
        let capture = json!({"format": "png", "captureBeyondViewport": true});
        let shot = self.browser.call(session, "Page.captureScreenshot", capture, what).await;
        // Back to the usual viewport, so what the test does next does not depend on this shot.
        self.browser.call(session, "Emulation.setDeviceMetricsOverride", metrics(HEIGHT), what).await;
        let data = shot["data"].as_str().unwrap_or_else(|| panic!("{what}: Page.captureScreenshot gave no data"));
        STANDARD.decode(data).unwrap_or_else(|e| panic!("{what}: the screenshot is not base64: {e}"))
    }

    /// `Page.navigate` to `url`, then its load event (unless it stayed in the same document).
    async fn navigate(&self, url: &str, what: &str) {
        // Registered before navigating, so the event cannot slip by.
        let loaded = self.browser.expect_event(&self.session, "Page.loadEventFired");
        let nav = self.browser.call(Some(&self.session), "Page.navigate", json!({"url": url}), what).await;
        if let Some(error) = nav.get("errorText").and_then(Value::as_str) {
            panic!("{what}: Page.navigate failed: {error}");
        }
        *self.url.lock().unwrap() = url.to_string();
        // No loaderId: a same-document navigation (a fragment), which fires no load event.
        if nav.get("loaderId").is_none() {
            return;
        }
        match tokio::time::timeout(LOAD_TIMEOUT, loaded).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("{what}: no load event: {}", self.browser.closed_why()),
            Err(_) => panic!("{what}: the page did not fire its load event within {LOAD_TIMEOUT:?}"),
        }
    }

    /// The page's URL and the start of `document.body.innerText`, for a failure message; says why
    /// not instead (a page busy in a loop answers no evaluation), with the URL from the browser.
    async fn showing(&self) -> (String, String) {
        let read = format!(
            "(() => {{ const t = document.body ? document.body.innerText : '(no document.body)'; \
             const shown = Array.from(t.slice(0, {twice})).slice(0, {SHOWN_TEXT}).join(''); \
             return {{url: location.href, text: shown, more: t.length > shown.length}}; }})()",
            twice = 2 * SHOWN_TEXT
        );
        match tokio::time::timeout(DIAGNOSE_TIMEOUT, self.try_eval(&read)).await {
            Ok(Ok(page)) => {
                let url = page["url"].as_str().unwrap_or("?").to_string();
                let mut text = page["text"].as_str().unwrap_or("?").to_string();
                if page["more"].as_bool() == Some(true) {
                    text.push_str("\n[... cut here]");
                }
                (url, text)
            }
            failed => {
                let why = match failed {
                    Ok(Err(Unevaluated::Threw(why))) => format!("it threw {why}"),
                    Ok(Err(Unevaluated::Failed(e))) => e,
                    _ => format!("no answer within {DIAGNOSE_TIMEOUT:?}"),
                };
                let info = json!({"targetId": self.target_id});
                let info =
                    tokio::time::timeout(DIAGNOSE_TIMEOUT, self.browser.request(None, "Target.getTargetInfo", info));
                let url = match info.await {
                    Ok(Ok(info)) => info["targetInfo"]["url"].as_str().unwrap_or("?").to_string(),
                    _ => "(unknown)".to_string(),
                };
                (url, format!("(cannot read it: {why})"))
            }
        }
    }

    fn url(&self) -> String {
        self.url.lock().unwrap().clone()
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

/// Routes what comes in over the websocket: replies by `id`, events by `method` + `sessionId`, and
/// accepts every JavaScript dialog that opens in a tab. When the connection ends, records why and
/// drops every waiter (which then fails at once).
async fn read_messages(mut stream: SplitStream<Ws>, routes: Arc<Mutex<Routes>>, wire: Arc<Wire>) {
    let why = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Some(session) = route(&routes, text.as_str()) {
                    let accept = json!({"accept": true});
                    wire.send_detached(Some(&session), "Page.handleJavaScriptDialog", accept);
                }
            }
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

/// Hands one message to its waiter, if any; returns the session of a tab where a JavaScript
/// dialog (`alert`, `confirm`, `prompt`, `beforeunload`) has just opened, for the caller to accept
/// it: an open dialog blocks the page (its load event, every `Runtime.evaluate`) until answered.
fn route(routes: &Mutex<Routes>, text: &str) -> Option<String> {
    let Ok(message) = serde_json::from_str::<Value>(text) else { return None };
    let mut routes = routes.lock().unwrap();
    if let Some(id) = message.get("id").and_then(Value::as_u64) {
        if let Some(tx) = routes.replies.remove(&id) {
            let _ = tx.send(message);
        }
        return None;
    }
    let method = message.get("method").and_then(Value::as_str)?;
    let session = message.get("sessionId").and_then(Value::as_str).unwrap_or("");
    let dialog = (method == "Page.javascriptDialogOpening" && !session.is_empty()).then(|| {
        let params = &message["params"];
        let (kind, said) = (params["type"].as_str().unwrap_or("?"), params["message"].as_str().unwrap_or("?"));
        eprintln!(
            "chromium: accepting a JavaScript {kind} dialog at {}: {said:?}",
            params["url"].as_str().unwrap_or("?")
        );
        session.to_string()
    });
    // A waiter whose receiver is gone (its wait timed out or was given up) takes nothing.
    routes.events.retain(|w| !w.tx.is_closed());
    if let Some(i) = routes.events.iter().position(|w| w.method == method && w.session == session) {
        let waiter = routes.events.swap_remove(i);
        let _ = waiter.tx.send(message);
    }
    dialog
}
