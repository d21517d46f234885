//! `GET /sessions/{id}/events`: Server-Sent Events of a session, fed by the watch.
//!
//! Each `session` event carries the full session view (phase, queue position, setup progress,
//! task results, expiry: everything a lab page shows), sent whenever the view changes; its id
//! is the Session's resourceVersion. A client reconnecting with `Last-Event-ID` equal to the
//! current resourceVersion gets nothing until the next change; with any other id it gets the
//! current state at once (each event is a whole state, so nothing in between is needed).
//! When the Session is gone a `deleted` event ends the stream. Comment heartbeats keep
//! proxies from closing an idle stream. Streams end when the server shuts down and after
//! `--sse-max-lifetime-seconds` (clients resume with `Last-Event-ID` and authenticate again, so
//! a revoked token stops working then); a user may hold `--sse-max-streams-per-user` at once.

use std::convert::Infallible;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use kube::ResourceExt;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::sessions::{view, visible_session};
use super::{Path, Shared};
use crate::auth::Identity;
use crate::errors::{ApiResult, ErrorBody};
use crate::limits::StreamSlot;

/// Counts an open stream for as long as it lives.
struct Open(Gauge);

impl Open {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Cursor {
    state: Shared,
    id: String,
    changes: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    /// The JSON last sent, to send only changes.
    last: Option<String>,
    /// `Last-Event-ID` of a reconnect, consulted once.
    resume: Option<String>,
    done: bool,
    /// When the stream ends at the latest.
    deadline: Instant,
    _open: Open,
    _slot: StreamSlot,
}

impl Cursor {
    /// The next event: now if the view changed since the last one, else after the next
    /// change of the caches. `None` ends the stream.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if self.done || *self.stopping.borrow() || Instant::now() >= self.deadline {
                return None;
            }
            self.changes.mark_unchanged();
            let Some(s) = self.state.caches.session(&self.id) else {
                self.done = true;
                let data = serde_json::json!({"sessionId": self.id}).to_string();
                return Some((Ok(Event::default().event("deleted").data(data)), self));
            };
            let rv = s.resource_version().unwrap_or_default();
            let json = serde_json::to_string(&view(&self.state, &s)).unwrap_or_default();
            let resumed = self.resume.take().is_some_and(|seen| seen == rv);
            if self.last.as_deref() != Some(json.as_str()) {
                self.last = Some(json.clone());
                if !resumed {
                    let event = Event::default()
                        .event("session")
                        .id(rv)
                        .retry(Duration::from_secs(2))
                        .data(json);
                    return Some((Ok(event), self));
                }
            }
            tokio::select! {
                changed = self.changes.changed() => if changed.is_err() {
                    return None;
                },
                _ = self.stopping.wait_for(|s| *s) => return None,
                () = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }
}

/// `GET /sessions/{id}/events`.
#[utoipa::path(get, path = "/sessions/{id}/events", operation_id = "sessionEvents", tag = "sessions",
    params(("id" = String, Path, description = "Session id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event seen, to resume")),
    responses((status = 400, body = ErrorBody),
        (status = 200, content_type = "text/event-stream",
            description = "`session` events with the session view as JSON data (see SessionView), comment heartbeats, a final `deleted` event",
            body = String),
        (status = 404, body = ErrorBody),
        (status = 429, description = "The user has the most event streams open (`TOO_MANY_STREAMS`)", body = ErrorBody)))]
pub async fn session_events(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    visible_session(&state, &who, &id)?;
    let slot = state.sse_slots.acquire(&who.user)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cursor = Cursor {
        changes: state.caches.subscribe(),
        stopping: state.stopping.clone(),
        _open: Open::new(&state.sse_clients),
        _slot: slot,
        deadline: Instant::now() + state.settings.sse_max_lifetime,
        state: state.clone(),
        id,
        last: None,
        resume,
        done: false,
    };
    let heartbeat = state.settings.sse_heartbeat;
    let stream = futures::stream::unfold(cursor, Cursor::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}
