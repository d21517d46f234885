//! `GET /admin/events`: Server-Sent Events of the admin console's whole picture (pool status
//! with every cluster, active sessions of all users, counts), sent at once and again whenever
//! it changes, so the console's numbers move live without polling. Bounded like the session
//! streams: the per-user slots, the lifetime, and the end at shutdown.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::ToSchema;

use super::Shared;
use super::admin::pool_status;
use super::sessions::{SessionQuery, matching, view};
use crate::auth::Identity;
use crate::errors::{ApiResult, ErrorBody};
use crate::limits::StreamSlot;
use crate::state::AppState;
use crate::views::{self, AdminSessionsView, PoolStatusView};

/// The data of an `admin` event: what `GET /admin/clusters` and `GET /admin/sessions` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPicture {
    /// As `GET /admin/clusters`.
    pub clusters: PoolStatusView,
    /// As `GET /admin/sessions` (active sessions).
    pub sessions: AdminSessionsView,
}

fn picture(state: &AppState, who: &Identity) -> AdminPicture {
    let sessions = matching(state, who, &SessionQuery::default())
        .iter()
        .map(|s| view(state, s))
        .collect();
    AdminPicture {
        clusters: pool_status(state, true),
        sessions: AdminSessionsView {
            sessions,
            stats: views::session_stats(&state.caches.sessions()),
        },
    }
}

struct Cursor {
    state: Shared,
    who: Identity,
    changes: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    last: Option<String>,
    deadline: Instant,
    gauge: Gauge,
    _slot: StreamSlot,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Cursor {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if *self.stopping.borrow() || Instant::now() >= self.deadline {
                return None;
            }
            self.changes.mark_unchanged();
            let json = serde_json::to_string(&picture(&self.state, &self.who)).unwrap_or_default();
            if self.last.as_deref() != Some(json.as_str()) {
                self.last = Some(json.clone());
                let event = Event::default()
                    .event("admin")
                    .retry(Duration::from_secs(2))
                    .data(json);
                return Some((Ok(event), self));
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

/// `GET /admin/events`.
#[utoipa::path(get, path = "/admin/events", operation_id = "adminEvents", tag = "admin",
    responses((status = 200, content_type = "text/event-stream",
            description = "`admin` events with the console's picture as JSON data (see AdminPicture), comment heartbeats",
            body = AdminPicture),
        (status = 403, body = ErrorBody),
        (status = 429, description = "The user has the most event streams open (`TOO_MANY_STREAMS`)", body = ErrorBody)))]
pub async fn admin_events(
    State(state): State<Shared>,
    who: Identity,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    who.require_admin()?;
    let slot = state.sse_slots.acquire(&who.user)?;
    state.sse_clients.inc();
    let cursor = Cursor {
        changes: state.caches.subscribe(),
        stopping: state.stopping.clone(),
        deadline: Instant::now() + state.settings.sse_max_lifetime,
        gauge: state.sse_clients.clone(),
        _slot: slot,
        state: state.clone(),
        who,
        last: None,
    };
    let heartbeat = state.settings.sse_heartbeat;
    let stream = futures::stream::unfold(cursor, Cursor::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat")))
}
