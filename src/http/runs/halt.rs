//! The kill switch (`POST /chaos/stop`) and lifting its latch (`POST /chaos/resume`), on this
//! replica and, through the fleet's store, on every other.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::STOP_GRACE;
use crate::chaos::Stop;
use crate::faults::ledger::{Halt, Outcome};
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// What the kill switch answers.
#[derive(Serialize, ToSchema)]
pub(super) struct KillSwitchReport {
    #[schema(example = "halted")]
    status: &'static str,
    halt: Halt,
    runs_cancelled: usize,
    faults_undone: usize,
    /// The undos that failed; those faults stay in the ledger (`GET /chaos/faults`).
    undo_failed: Vec<Outcome>,
    /// Every undo, as it ended.
    undone: Vec<Outcome>,
    /// `chaos-` network faults the backend held that the ledger did not know, removed (a count),
    /// or why they could not be listed.
    unknown_rules_removed: UnknownRules,
    /// From the kill switch to every fault undone, in ms.
    all_clear_ms: f64,
    /// Whether the halt reached the fleet's store (every replica follows within a poll).
    fleet: Published,
    load_stopped: bool,
    hang_stopped: bool,
    timestamp: String,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum UnknownRules {
    Removed(usize),
    Failed { error: String },
}

#[derive(Serialize, ToSchema)]
struct Published {
    published: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Kill switch: halt chaos, end every run and every fault
///
/// The kill switch, a latch. In this order: it halts (new runs and faults, the built-in
/// endpoints included, answer 423 until `POST /chaos/resume`; the latch survives a restart and
/// reaches every replica of a fleet); it cancels every run in progress and cuts their
/// `on_rollback` closures short; the fault ledger undoes every fault of every owner,
/// concurrently; and it removes the `chaos-` network faults the backend holds that the ledger
/// does not know (an operator CLI's NSG rule). `all_clear_ms` is the time until all that was
/// done; the answer then waits up to 10 s for the cancelled runs to end. It answers during an
/// app-scope hang (it is how to end one). The body is ignored.
#[utoipa::path(post, path = "/chaos/stop", tag = "chaos", operation_id = "killSwitch",
    responses((status = 200, description = "Everything is stopped and chaos is halted.", body = KillSwitchReport)))]
pub(super) async fn kill_switch(State(state): State<AppState>) -> Json<KillSwitchReport> {
    let load = state.lab.faults.load.status().active;
    let hang = state.lab.faults.hang.status().active;
    let r = state.runs.stop_everything(Stop::KillSwitch { by: "POST /chaos/stop" }).await;
    let halt = r.halt.clone().expect("the kill switch always sets the latch");
    // Every other replica follows within a poll; an unreachable store is reported, not fatal here.
    let fleet = match state.lab.fleet.publish_halt(&halt).await {
        Ok(()) => Published { published: true, error: None },
        Err(e) => Published { published: false, error: Some(e.to_string()) },
    };
    state.runs.wait_ended(&r.runs, STOP_GRACE).await;
    let failed: Vec<Outcome> = r.outcomes.iter().filter(|o| !o.ok).cloned().collect();
    let undone = r.outcomes.len() - failed.len();
    tracing::warn!(
        runs = r.runs.len(),
        undone,
        failed = failed.len(),
        all_clear_ms = r.all_clear_ms,
        "kill switch: halted"
    );
    Json(KillSwitchReport {
        status: "halted",
        halt,
        runs_cancelled: r.runs.len(),
        faults_undone: undone,
        undo_failed: failed,
        undone: r.outcomes,
        unknown_rules_removed: match r.unknown {
            Ok(n) => UnknownRules::Removed(n),
            Err(e) => UnknownRules::Failed { error: e.to_string() },
        },
        all_clear_ms: r.all_clear_ms,
        fleet,
        load_stopped: load,
        hang_stopped: hang,
        timestamp: crate::timestamp(),
    })
}

/// What `POST /chaos/resume` answers.
#[derive(Serialize, ToSchema)]
pub(super) struct ResumeReport {
    #[schema(example = "resumed")]
    status: &'static str,
    was_halted: bool,
    halted_since: Option<String>,
    timestamp: String,
}

/// Lift the kill switch's latch
///
/// Clears the latch `POST /chaos/stop` set, on every replica of the fleet: new runs and faults
/// may start again. Undoes and starts nothing; with no latch set it is harmless. The body is
/// ignored.
#[utoipa::path(post, path = "/chaos/resume", tag = "chaos", operation_id = "resume",
    responses(
        (status = 200, description = "Chaos is allowed again.", body = ResumeReport),
        (status = 503, description = "The fleet's store is unreachable: the latch stays.", body = ErrorBody),
    ))]
pub(super) async fn resume(State(state): State<AppState>) -> Result<Json<ResumeReport>, ApiError> {
    state.lab.fleet.publish_resume().await.map_err(|e| {
        ApiError::Fault(crate::faults::FaultError::Unavailable(format!("cannot resume the fleet: {e}")))
    })?;
    let was = state.lab.ledger.resume();
    if let Some(h) = &was {
        tracing::warn!(halted_since = %h.at, "chaos resumed");
    }
    Ok(Json(ResumeReport {
        status: "resumed",
        was_halted: was.is_some(),
        halted_since: was.as_ref().map(|h| h.at.clone()),
        timestamp: crate::timestamp(),
    }))
}
