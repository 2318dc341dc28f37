//! `GET /chaos/runs/{id}/events`: a run's events as Server-Sent Events, live from this replica,
//! polled from the store for a run on another one, or the final report for a run that ended.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde_json::json;
use utoipa::ToSchema;

use super::RunId;
use crate::chaos::report::{Event, RunShared};
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// One event of a run's stream, as Server-Sent Events frame it.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: events are written by `sse`
struct RunEvent {
    #[schema(
        pattern = "^(run_started|step_started|step_finished|log|expect|measurement|undo|breach|lagged|run_finished)$"
    )]
    event: String,
    /// The event's place in the stream (`1`, `2`, …), `end` on `run_finished`; none on `lagged`.
    #[schema(pattern = "^([0-9]+|end)$")]
    id: Option<String>,
    /// One line of JSON: the event's object (see the operation's description).
    data: String,
}

/// A run's live events (Server-Sent Events)
///
/// `event: <name>`, `id: <n>` and `data: <one line of JSON>` per event, plus a comment line
/// (`:`) after 15 s without an event. For a run in progress, every event so far is replayed
/// first, then the stream follows live and ends after `run_finished`; for a run that has ended,
/// the stream is a single `run_finished` event whose data is the whole `RunReport`.
///
/// Every event carries an id, its place in the run's stream (1, 2, …), and the final
/// `run_finished` carries `end`. A client that reconnects with `Last-Event-ID` gets only the
/// events after that one; one that sends `Last-Event-ID: end` for a finished run gets 204 No
/// Content, which tells an `EventSource` to stop reconnecting. Close on `run_finished`.
///
/// Events: `run_started` (a `RunSummary`), `step_started` and `step_finished` (a `Step`), `log`
/// (a `LogLine`), `expect` (an `Expectation`), `measurement` (`{name, value}`), `undo` (an
/// `UndoRecord`), `breach` (a `Breach`), `lagged` (`{missed_events}`: a slow client missed
/// events, or the replay was capped; the report has them) and `run_finished` (the `RunReport`).
#[utoipa::path(get, path = "/chaos/runs/{id}/events", tag = "runs", operation_id = "runEvents",
    params(RunId,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event the client has (`EventSource` sends it when it reconnects).")),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = RunEvent),
        (status = 204, description = "The run has ended and the client has its final event: stop reconnecting."),
        (status = 404, description = "No such run.", body = ErrorBody),
    ))]
pub(super) async fn run_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let last = LastEventId::from_headers(&headers);
    let stream = match state.runs.active(&id) {
        Some(run) => live_events(run).boxed(),
        None => {
            let report = state.runs.report_anywhere(&id).await?;
            if report.status == crate::chaos::report::RunStatus::Running {
                // Running on another replica: follow what it publishes to the store.
                remote_events(state.clone(), id).boxed()
            } else if last == LastEventId::End {
                return Ok(StatusCode::NO_CONTENT.into_response());
            } else {
                // Finished: one event with the whole report.
                let ev = Event { name: "run_finished", data: json!(report), seq: None };
                stream::iter([ev]).boxed()
            }
        }
    };
    let stream = stream.filter(move |e| std::future::ready(last.wants(e))).map(|e| Ok::<_, Infallible>(sse(e)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// What a reconnecting client has seen, from its `Last-Event-ID` header.
#[derive(Clone, Copy, PartialEq)]
enum LastEventId {
    /// No header (or one this service never sent): the whole stream.
    None,
    Seen(u64),
    /// The client has the final event.
    End,
}

impl LastEventId {
    fn from_headers(headers: &HeaderMap) -> Self {
        match headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::trim) {
            Some(END_ID) => Self::End,
            Some(n) => n.parse().map_or(Self::None, Self::Seen),
            None => Self::None,
        }
    }

    /// Whether to send `e`: events with an id the client has are skipped; the stream's own
    /// notices and the final event always go.
    fn wants(&self, e: &Event) -> bool {
        match (self, e.seq) {
            (Self::Seen(n), Some(seq)) => e.name == "run_finished" || seq > *n,
            _ => true,
        }
    }
}

/// The SSE id of the final `run_finished` event.
const END_ID: &str = "end";

fn sse(e: Event) -> SseEvent {
    let ev = SseEvent::default().event(e.name).data(e.data.to_string());
    match e.seq {
        _ if e.name == "run_finished" => ev.id(END_ID),
        Some(seq) => ev.id(seq.to_string()),
        None => ev,
    }
}

/// The events of a run on another replica, polled from the store every half second until it
/// has finished (or stopped publishing: its replica died and another took it over).
fn remote_events(state: AppState, id: String) -> impl Stream<Item = Event> {
    stream::unfold(
        (state, id, 0usize, false, std::collections::VecDeque::new()),
        |(state, id, mut sent, mut done, mut queue)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((e, (state, id, sent, done, queue)));
                }
                if done {
                    return None;
                }
                let events = state.runs.remote_events(&id).await.unwrap_or_default();
                for e in events.into_iter().skip(sent) {
                    sent += 1;
                    done |= e.name == "run_finished";
                    queue.push_back(e);
                }
                if queue.is_empty() {
                    // Taken over (interrupted) or ended without a final publish: end with the report.
                    if let Ok(r) = state.runs.report_anywhere(&id).await
                        && r.status != crate::chaos::report::RunStatus::Running
                    {
                        done = true;
                        queue.push_back(Event { name: "run_finished", data: json!(r), seq: None });
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        },
    )
}

fn live_events(run: std::sync::Arc<RunShared>) -> impl Stream<Item = Event> {
    let (past, rx) = run.subscribe();
    let finished_already = past.iter().any(|e| e.name == "run_finished");
    let live = stream::unfold((rx, finished_already), |(mut rx, finished)| async move {
        if finished {
            return None;
        }
        match rx.recv().await {
            Ok(e) => {
                let end = e.name == "run_finished";
                Some((e, (rx, end)))
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                let e = Event { name: "lagged", data: json!({"missed_events": n}), seq: None };
                Some((e, (rx, false)))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    stream::iter(past).chain(live)
}
