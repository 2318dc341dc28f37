//! Hangs: `app` scope stalls every HTTP request (the listener still accepts TCP, like a blocked
//! event loop); `request` scope stalls only the caller.
//!
//! The hang's end is owned by a timer task, not by the request that started it, so a caller that
//! disconnects cannot leave the service hung. `stop` ends any hang at once (kill switch, shutdown).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;

use super::FaultError;
use super::load::ceil_secs;

/// Longest finite hang the API accepts, in seconds (0 means "until restart").
pub const MAX_HANG_SECONDS: i64 = 86_400;

/// Who stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HangScope {
    App,
    Request,
}

/// How a hang ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangEnd {
    /// Its duration passed.
    Completed,
    /// The kill switch or shutdown ended it early.
    Stopped,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// Increments with every hang, so waiters can tell "my hang ended" from "a new one began".
    id: u64,
    active: bool,
    scope: Option<HangScope>,
    /// `None` while active means "until restart".
    ends: Option<Instant>,
    started: Option<Instant>,
    last_end: Option<HangEnd>,
}

/// What `/chaos/status` shows of the hang.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HangStatus {
    pub active: bool,
    pub scope: Option<HangScope>,
    pub remaining_seconds: u64,
    /// True for a hang with duration 0, which only a restart (or the kill switch) ends.
    pub until_restart: bool,
    /// Requests an app-scope hang is holding right now; they are answered when it ends.
    pub held_requests: u64,
}

/// The one hang this process may have.
pub struct HangController {
    state: Arc<watch::Sender<State>>,
    /// Requests waiting in [`HangController::gate`].
    held: AtomicU64,
}

impl Default for HangController {
    fn default() -> Self {
        Self { state: Arc::new(watch::channel(State::default()).0), held: AtomicU64::new(0) }
    }
}

/// Counts one request held at the gate for as long as it waits (also when the client goes away).
struct Held<'a>(&'a AtomicU64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handed to whoever started a hang; [`HangTicket::wait`] returns when it ends.
#[derive(Debug)]
pub struct HangTicket {
    id: u64,
    started: Instant,
    pub scope: HangScope,
    rx: watch::Receiver<State>,
}

impl HangTicket {
    /// Identifies this hang, so a run undoes only the hang it started.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for this hang to end; returns how and after how long.
    pub async fn wait(mut self) -> (HangEnd, Duration) {
        let id = self.id;
        let end = match self.rx.wait_for(|s| s.id != id || !s.active).await {
            Ok(s) if s.id == id => s.last_end.unwrap_or(HangEnd::Stopped),
            _ => HangEnd::Stopped,
        };
        (end, self.started.elapsed())
    }
}

impl HangController {
    /// Starts a hang. `duration_seconds` 0 = until restart; scope `app` or `request`.
    pub fn start(&self, duration_seconds: i64, scope: &str) -> Result<HangTicket, FaultError> {
        let scope = match scope {
            "app" => HangScope::App,
            "request" => HangScope::Request,
            _ => return Err(FaultError::Invalid("Invalid hang scope. Must be 'app' or 'request'".into())),
        };
        if !(0..=MAX_HANG_SECONDS).contains(&duration_seconds) {
            return Err(FaultError::Invalid(format!(
                "Duration must be between 0 and {MAX_HANG_SECONDS} seconds (0 = until restart)"
            )));
        }
        let duration = (duration_seconds > 0).then(|| Duration::from_secs(duration_seconds as u64));
        let started = Instant::now();
        let mut id = 0;
        let mut refused = false;
        self.state.send_if_modified(|s| {
            if s.active {
                refused = true;
                return false;
            }
            s.id += 1;
            id = s.id;
            *s = State {
                id,
                active: true,
                scope: Some(scope),
                ends: duration.map(|d| started + d),
                started: Some(started),
                last_end: None,
            };
            true
        });
        if refused {
            return Err(FaultError::AlreadyActive("Hang already active"));
        }
        if let Some(d) = duration {
            let state = self.state.clone();
            let mut rx = self.state.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(d) => { end(&state, id, HangEnd::Completed); }
                    _ = rx.wait_for(|s| s.id != id || !s.active) => {}
                }
            });
        }
        tracing::warn!(?scope, duration_seconds, "hang started");
        Ok(HangTicket { id, started, scope, rx: self.state.subscribe() })
    }

    /// Ends the current hang, if any.
    pub fn stop(&self) {
        let id = self.state.borrow().id;
        end(&self.state, id, HangEnd::Stopped);
    }

    /// Ends hang `id` if it is still active; returns whether it was.
    pub fn stop_if(&self, id: u64) -> bool {
        end(&self.state, id, HangEnd::Stopped)
    }

    /// Returns at once unless an app-scope hang is active; then waits for it to end.
    pub async fn gate(&self) {
        if !self.app_hang_active() {
            return;
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        let _held = Held(&self.held);
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| !(s.active && s.scope == Some(HangScope::App))).await;
    }

    fn app_hang_active(&self) -> bool {
        let s = self.state.borrow();
        s.active && s.scope == Some(HangScope::App)
    }

    pub fn status(&self) -> HangStatus {
        let s = self.state.borrow();
        HangStatus {
            active: s.active,
            scope: s.active.then_some(s.scope).flatten(),
            remaining_seconds: s
                .ends
                .filter(|_| s.active)
                .map_or(0, |e| ceil_secs(e.saturating_duration_since(Instant::now()))),
            until_restart: s.active && s.ends.is_none(),
            held_requests: self.held.load(Ordering::Relaxed),
        }
    }
}

fn end(state: &watch::Sender<State>, id: u64, how: HangEnd) -> bool {
    let ended = state.send_if_modified(|s| {
        if s.id == id && s.active {
            s.active = false;
            s.last_end = Some(how);
            true
        } else {
            false
        }
    });
    if ended {
        tracing::warn!(?how, "hang ended");
        if let Some(started) = state.borrow().started {
            crate::telemetry::operation_ended("hang", started.elapsed().as_secs_f64());
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finite_hang_ends_by_itself_and_frees_the_gate() {
        let h = HangController::default();
        let t = h.start(1, "app").unwrap();
        assert_eq!(h.start(1, "request").unwrap_err(), FaultError::AlreadyActive("Hang already active"));
        assert_eq!(h.status().remaining_seconds, 1);
        let (end, took) = t.wait().await;
        assert_eq!(end, HangEnd::Completed);
        assert!(took >= Duration::from_secs(1));
        h.gate().await; // returns at once now
        assert!(!h.status().active);
    }

    #[tokio::test]
    async fn stop_ends_a_permanent_hang() {
        let h = Arc::new(HangController::default());
        let t = h.start(0, "app").unwrap();
        assert!(h.status().until_restart);
        let h2 = h.clone();
        let gate = tokio::spawn(async move { h2.gate().await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!gate.is_finished());
        h.stop();
        gate.await.unwrap();
        assert_eq!(t.wait().await.0, HangEnd::Stopped);
    }

    #[test]
    fn bad_input() {
        let h = HangController::default();
        assert!(h.start(-1, "app").unwrap_err().to_string().contains("between 0 and"));
        assert!(h.start(1, "process").unwrap_err().to_string().contains("'app' or 'request'"));
    }
}
