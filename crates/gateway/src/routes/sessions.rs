//! Session routes: create (waiting briefly for the claim), list, get, extend, delete, and
//! task validation through ValidationRuns.
//!
//! A student only ever sees their own Sessions: someone else's id answers 404 exactly like an
//! unknown one, so ids cannot be probed. `spec.user` is always the caller.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cks_api::names::{GATEWAY_FIELD_MANAGER, annotations, labels};
use cks_api::session::{SessionPhase, SessionSpec, user_key};
use cks_api::validation_run::ValidationRunSpec;
use cks_api::{Session, ValidationRun};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{Body, Path, Query, Shared};
use crate::auth::Identity;
use crate::errors::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use crate::views::{self, DeletedView, ExtendedView, SessionView, ValidationView};

/// Header that makes `POST /sessions` idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Body of `POST /sessions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    /// Scenario to practise (a scenario id: a DNS-1123 label).
    #[serde(default)]
    #[schema(
        required = true,
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )]
    pub scenario_id: String,
    /// Length in minutes, at most the pool's maximum; the pool's default when absent.
    #[schema(minimum = 5)]
    pub duration_minutes: Option<i32>,
    /// ClusterPool; the configured one when absent.
    pub pool: Option<String>,
}

/// Query of `GET /sessions` and `GET /admin/sessions`.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// Include ended, expired and failed sessions.
    #[serde(default)]
    pub all: bool,
    /// Admins: only this user's sessions.
    pub user: Option<String>,
    /// Only this phase (for example `WaitingForCluster`).
    pub phase: Option<String>,
}

fn phase(s: &Session) -> SessionPhase {
    s.status.as_ref().map(|st| st.phase).unwrap_or_default()
}

fn session_not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "SESSION_NOT_FOUND",
        format!("There is no session {id:?} of yours; it may have ended and been removed."),
    )
}

/// The Session `id` if the caller may see it; 404 otherwise (unknown and foreign alike).
pub(super) fn visible_session(state: &AppState, who: &Identity, id: &str) -> ApiResult<Session> {
    if !cks_api::common::is_dns1123_label(id) {
        return Err(session_not_found(id));
    }
    state
        .caches
        .session(id)
        .filter(|s| who.may_access(&s.spec.user))
        .ok_or_else(|| session_not_found(id))
}

/// The full view of a Session from the caches.
pub(super) fn view(state: &AppState, s: &Session) -> SessionView {
    let catalog = state.catalog.catalog();
    let scenario = catalog.get(&s.spec.scenario).map(|a| a.as_ref());
    let cluster = s
        .status
        .as_ref()
        .and_then(|st| st.cluster.as_deref())
        .and_then(|c| state.caches.cluster(c));
    views::session_view(s, scenario, cluster.as_ref())
}

/// Sessions matching `q` among those `who` may see, oldest first.
pub(super) fn matching(state: &AppState, who: &Identity, q: &SessionQuery) -> Vec<Session> {
    let mut list: Vec<Session> = state
        .caches
        .sessions()
        .into_iter()
        .filter(|s| who.may_access(&s.spec.user))
        .filter(|s| q.all || phase(s).is_active())
        .filter(|s| {
            q.user
                .as_deref()
                .is_none_or(|u| user_key(&s.spec.user) == user_key(u))
        })
        .filter(|s| {
            q.phase
                .as_deref()
                .is_none_or(|p| format!("{:?}", phase(s)).eq_ignore_ascii_case(p))
        })
        .collect();
    list.sort_by(|a, b| {
        (a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any())
            .cmp(&(b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any()))
    });
    list
}

/// `GET /sessions`: the caller's sessions (admins: everyone's), active ones unless `all=true`.
#[utoipa::path(get, path = "/sessions", operation_id = "listSessions", tag = "sessions", params(SessionQuery),
    responses((status = 400, body = ErrorBody), (status = 200, description = "The caller's sessions (admins: everyone's), oldest first", body = Vec<SessionView>)))]
pub async fn list(
    State(state): State<Shared>,
    who: Identity,
    Query(q): Query<SessionQuery>,
) -> Json<Vec<SessionView>> {
    Json(
        matching(&state, &who, &q)
            .iter()
            .map(|s| view(&state, s))
            .collect(),
    )
}

/// `GET /sessions/{id}`.
#[utoipa::path(get, path = "/sessions/{id}", operation_id = "getSession", tag = "sessions", params(("id" = String, Path, description = "Session id")),
    responses((status = 400, body = ErrorBody), (status = 200, body = SessionView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let s = visible_session(&state, &who, &id)?;
    Ok(Json(view(&state, &s)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True for a Session that counts against its user's limit of active sessions: as in the
/// operator, one being deleted does not (so "end, then start another" works at once).
pub fn counts_against_limit(s: &Session) -> bool {
    phase(s).is_active() && s.metadata.deletion_timestamp.is_none()
}

/// The Session name for a create: random, or derived from user and idempotency key so a
/// retried request names the same Session.
pub fn session_name(user: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => {
            // The user as ownership compares it, so a replay by the same user in another case
            // or spacing finds the same Session.
            let user = cks_api::session::user_key(user);
            let mut input = Vec::with_capacity(user.len() + key.len() + 1);
            input.extend_from_slice(user.as_bytes());
            input.push(0);
            input.extend_from_slice(key.as_bytes());
            let d = ring::digest::digest(&ring::digest::SHA256, &input);
            format!("s{}", &hex(d.as_ref())[..15])
        }
        None => format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..15]),
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = v.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "BAD_IDEMPOTENCY_KEY",
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// The pool a new Session uses.
fn pick_pool(state: &AppState, asked: Option<&str>) -> ApiResult<cks_api::ClusterPool> {
    if let Some(name) = asked {
        if !cks_api::common::is_dns1123_label(name) {
            return Err(ApiError::invalid(
                "INVALID_POOL",
                format!("{name:?} is not a valid pool name."),
            ));
        }
        return state.caches.pool(name).ok_or_else(|| {
            ApiError::invalid("POOL_NOT_FOUND", format!("There is no cluster pool {name:?}."))
        });
    }
    if let Some(name) = &state.settings.pool {
        return state.caches.pool(name).ok_or_else(|| {
            ApiError::unavailable(
                "NO_POOL",
                format!("The cluster pool {name:?} does not exist yet; ask an administrator to create it."),
            )
        });
    }
    let mut pools = state.caches.pools();
    match pools.len() {
        1 => Ok(pools.remove(0)),
        0 => Err(ApiError::unavailable(
            "NO_POOL",
            "There is no cluster pool yet; ask an administrator to create one.",
        )),
        _ => Err(ApiError::invalid(
            "POOL_REQUIRED",
            "There are several cluster pools; say which one in \"pool\".",
        )),
    }
}

/// What a create that has been waited on answers.
fn created(state: &AppState, s: &Session) -> ApiResult<Response> {
    let st = s.status.clone().unwrap_or_default();
    if st.phase == SessionPhase::Failed {
        let message = st
            .message
            .clone()
            .unwrap_or_else(|| "The session could not start.".to_owned());
        return Err(match st.reason.as_deref() {
            Some("UserLimitReached") => ApiError::conflict("SESSION_LIMIT", message),
            Some("ScenarioNotFound") => ApiError::not_found("SCENARIO_NOT_FOUND", message),
            Some("RequirementsNotMet") => ApiError::invalid("REQUIREMENTS_NOT_MET", message),
            Some("PoolNotFound") => ApiError::unavailable("NO_POOL", message),
            _ => ApiError::conflict("SESSION_FAILED", message),
        });
    }
    let mut response = (StatusCode::CREATED, Json(view(state, s))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/sessions/{}", s.name_any())) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Waits (bounded) until Session `name` with `uid` has a cluster or cannot get one now.
async fn settle(state: &AppState, name: &str, uid: Option<&str>, fallback: Session) -> Session {
    let settled = |s: &Session| !matches!(phase(s), SessionPhase::Pending | SessionPhase::WaitingForCluster);
    let same = |s: &Session| uid.is_none() || s.uid().as_deref() == uid;
    let waited = state
        .caches
        .wait_for(state.settings.create_wait, |c| {
            c.session(name).filter(|s| same(s) && settled(s))
        })
        .await;
    waited
        .or_else(|| state.caches.session(name).filter(same))
        .unwrap_or(fallback)
}

/// `POST /sessions {scenarioId}`: creates a Session and waits up to `--create-wait-seconds`
/// for a cluster. 201 with `status: "running"` once assigned, else 201 with
/// `status: "pending"` and the queue position. With `Idempotency-Key`, a repeated request
/// answers with the Session the first one created.
#[utoipa::path(post, path = "/sessions", operation_id = "createSession", tag = "sessions", request_body = CreateSession,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]([ -~]*[!-~])?$",
        description = "1 to 255 visible ASCII characters; makes a retry answer with the session the first call created")),
    responses(
        (status = 201, description = "Created; `status` is `running` once a cluster is assigned, else `pending` with a queue position", body = SessionView),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<Shared>,
    who: Identity,
    headers: HeaderMap,
    Body(body): Body<CreateSession>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let scenario_id = body.scenario_id.trim().to_owned();
    if scenario_id.is_empty() {
        return Err(ApiError::invalid(
            "SCENARIO_REQUIRED",
            "Say which scenario to start in \"scenarioId\".",
        ));
    }
    if !cks_api::common::is_dns1123_label(&scenario_id) || state.catalog.catalog().get(&scenario_id).is_none()
    {
        return Err(ApiError::not_found(
            "SCENARIO_NOT_FOUND",
            format!("There is no scenario {scenario_id:?}."),
        ));
    }
    let name = session_name(&who.user, key.as_deref());
    if key.is_some() {
        let api = state.sessions_api();
        let existing = match state.caches.session(&name) {
            Some(s) => Some(s),
            None => api
                .get_opt(&name)
                .await
                .map_err(|e| ApiError::from_kube("get Session", &e))?,
        };
        if let Some(s) = existing {
            return replay(&state, &who, &scenario_id, s).await;
        }
    }
    state.limiter.check("create", &who.user)?;
    let active: Vec<String> = state
        .caches
        .sessions()
        .iter()
        .filter(|s| who.is(&s.spec.user) && counts_against_limit(s))
        .map(ResourceExt::name_any)
        .collect();
    if active.len() >= state.settings.max_sessions_per_user as usize {
        return Err(ApiError::conflict(
            "SESSION_LIMIT",
            format!(
                "You already have {} active session(s) ({}); end one (DELETE /api/v1/sessions/{{id}}) or wait for it to expire.",
                active.len(),
                active.join(", ")
            ),
        ));
    }
    let pool = pick_pool(&state, body.pool.as_deref())?;
    let policy = &pool.spec.sessions;
    let minutes = body.duration_minutes.unwrap_or(policy.default_duration_minutes);
    if !(5..=policy.max_duration_minutes).contains(&minutes) {
        return Err(ApiError::invalid(
            "INVALID_DURATION",
            format!(
                "durationMinutes must be between 5 and {} (the pool's maximum).",
                policy.max_duration_minutes
            ),
        ));
    }
    let session = Session {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(state.settings.namespace.clone()),
            labels: Some(BTreeMap::from([(
                labels::SCENARIO.to_owned(),
                scenario_id.clone(),
            )])),
            annotations: Some(BTreeMap::from([(annotations::USER.to_owned(), who.user.clone())])),
            ..ObjectMeta::default()
        },
        spec: SessionSpec {
            scenario: scenario_id.clone(),
            user: who.user.clone(),
            pool: pool.name_any(),
            duration_minutes: minutes,
        },
        status: None,
    };
    let params = PostParams {
        field_manager: Some(GATEWAY_FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let api = state.sessions_api();
    let made = match api.create(&params, &session).await {
        Ok(made) => made,
        Err(kube::Error::Api(s)) if s.code == 409 && key.is_some() => {
            // Two retries raced: the other one created it.
            let s = api
                .get(&name)
                .await
                .map_err(|e| ApiError::from_kube("get Session", &e))?;
            return replay(&state, &who, &scenario_id, s).await;
        }
        Err(e) => return Err(ApiError::from_kube(&format!("create Session {name}"), &e)),
    };
    tracing::info!(session = %name, user = %who.user, scenario = %scenario_id, "session created");
    let uid = made.uid();
    let settled = settle(&state, &name, uid.as_deref(), made).await;
    created(&state, &settled)
}

/// The answer to a create whose Session already exists under its idempotency name.
async fn replay(state: &AppState, who: &Identity, scenario_id: &str, s: Session) -> ApiResult<Response> {
    if !who.is(&s.spec.user) {
        return Err(ApiError::conflict(
            "IDEMPOTENCY_KEY_CONFLICT",
            "Use another Idempotency-Key.",
        ));
    }
    if s.spec.scenario != scenario_id {
        return Err(ApiError::conflict(
            "IDEMPOTENCY_KEY_REUSED",
            format!(
                "This Idempotency-Key already started a session of scenario {:?}; use a new key for another scenario.",
                s.spec.scenario
            ),
        ));
    }
    let uid = s.uid();
    let name = s.name_any();
    let settled = settle(state, &name, uid.as_deref(), s).await;
    created(state, &settled)
}

/// `DELETE /sessions/{id}`: ends the session; its cluster is released and reset.
#[utoipa::path(delete, path = "/sessions/{id}", operation_id = "deleteSession", tag = "sessions", params(("id" = String, Path, description = "Session id")),
    responses((status = 400, body = ErrorBody), (status = 200, body = DeletedView), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<DeletedView>> {
    let s = visible_session(&state, &who, &id)?;
    match state
        .sessions_api()
        .delete(&s.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(ApiError::from_kube(&format!("delete Session {id}"), &e)),
    }
    tracing::info!(session = %id, by = %who.user, "session deleted");
    Ok(Json(DeletedView {
        message: "Session deleted successfully".to_owned(),
        session_id: id,
    }))
}

/// Body of `PUT /sessions/{id}/extend`.
#[derive(Debug, Deserialize, Default, ToSchema)]
pub struct Extend {
    /// Minutes to add; 30 when absent.
    pub minutes: Option<i64>,
}

/// `PUT /sessions/{id}/extend {minutes}`: adds `minutes` (default 30) to the session's
/// length, capped by the pool's maximum. (The reference sets the expiry to now + minutes,
/// which shortens a session with more time left; this adds.)
#[utoipa::path(put, path = "/sessions/{id}/extend", operation_id = "extendSession", tag = "sessions", params(("id" = String, Path, description = "Session id")), request_body = Extend,
    responses((status = 200, body = ExtendedView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn extend(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
    Body(body): Body<Extend>,
) -> ApiResult<Json<ExtendedView>> {
    let minutes = body.minutes.unwrap_or(30);
    if !(1..=1440).contains(&minutes) {
        return Err(ApiError::invalid(
            "INVALID_MINUTES",
            "minutes must be between 1 and 1440.",
        ));
    }
    let mut s = visible_session(&state, &who, &id)?;
    let api = state.sessions_api();
    for _ in 0..5 {
        if !phase(&s).is_active() {
            return Err(ApiError::conflict(
                "SESSION_ENDED",
                "The session has ended; start a new one.",
            ));
        }
        let max = state
            .caches
            .pool(&s.spec.pool)
            .map_or(1440, |p| p.spec.sessions.max_duration_minutes);
        let current = s.spec.duration_minutes;
        let wanted = i64::from(current) + minutes;
        let next = i32::try_from(wanted.min(i64::from(max))).unwrap_or(max);
        if next <= current {
            return Err(ApiError::conflict(
                "EXTEND_LIMIT",
                format!("The session already has the longest time this pool allows ({max} minutes)."),
            ));
        }
        let patch = json!({
            "metadata": {"resourceVersion": s.resource_version()},
            "spec": {"durationMinutes": next},
        });
        let params = PatchParams {
            field_manager: Some(GATEWAY_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api.patch(&id, &params, &Patch::Merge(&patch)).await {
            Ok(updated) => {
                let expires = updated
                    .status
                    .as_ref()
                    .and_then(|st| st.started_at.as_ref())
                    .and_then(|t| {
                        t.0.checked_add(jiff::SignedDuration::from_mins(i64::from(next)))
                            .ok()
                    })
                    .map_or_else(|| views::ZERO_TIME.to_owned(), |t| t.to_string());
                let added = next - current;
                let message = if i64::from(added) < minutes {
                    format!("Session extended by {added} minutes (the pool's maximum is {max} minutes)")
                } else {
                    format!("Session extended by {added} minutes")
                };
                return Ok(Json(ExtendedView {
                    message,
                    session_id: id,
                    added_minutes: added,
                    duration_minutes: next,
                    expiration_time: expires,
                }));
            }
            // Someone else changed it meanwhile: read it again and add to the new length.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                s = api
                    .get(&id)
                    .await
                    .map_err(|e| ApiError::from_kube("get Session", &e))?;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Err(session_not_found(&id)),
            Err(e) => return Err(ApiError::from_kube(&format!("extend Session {id}"), &e)),
        }
    }
    Err(ApiError::conflict(
        "CONFLICT",
        "The session kept changing; try again.",
    ))
}

/// `POST /sessions/{id}/tasks/{taskId}/validate`: creates a ValidationRun and waits up to
/// `--validate-wait-seconds` for it. 200 with the results (also when checks fail:
/// `success: false`), or 202 with the run's URL when it takes longer.
#[utoipa::path(post, path = "/sessions/{id}/tasks/{task_id}/validate", operation_id = "validateTask", tag = "sessions",
    params(("id" = String, Path, description = "Session id"), ("task_id" = String, Path, description = "Task id, as in the scenario's tasks[].id")),
    responses((status = 400, body = ErrorBody),
        (status = 200, description = "The run finished; failed checks are `success: false` with per-rule results", body = ValidationView),
        (status = 202, description = "Still running past the bound: poll `url`", body = ValidationView),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn validate(
    State(state): State<Shared>,
    who: Identity,
    Path((id, task_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let s = visible_session(&state, &who, &id)?;
    let catalog = state.catalog.catalog();
    let scenario = catalog.get(&s.spec.scenario).ok_or_else(|| {
        ApiError::not_found(
            "SCENARIO_NOT_FOUND",
            format!(
                "The session's scenario {:?} is no longer in the catalog.",
                s.spec.scenario
            ),
        )
    })?;
    let task = scenario.task(&task_id).ok_or_else(|| {
        ApiError::not_found(
            "TASK_NOT_FOUND",
            format!("Scenario {:?} has no task {task_id:?}.", s.spec.scenario),
        )
    })?;
    let st = s.status.clone().unwrap_or_default();
    match st.phase {
        SessionPhase::Initializing | SessionPhase::Ready => {}
        p if p.is_terminal() => {
            return Err(ApiError::conflict(
                "SESSION_ENDED",
                "The session has ended; start a new one.",
            ));
        }
        _ => {
            let place = st
                .queue_position
                .map(|p| format!(" (place {p} in the queue)"))
                .unwrap_or_default();
            return Err(ApiError::conflict(
                "SESSION_NOT_READY",
                format!("The session has no cluster yet{place}; validate once it is running."),
            ));
        }
    }
    state.limiter.check("validate", &who.user)?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let name = format!("{id}-{}-{suffix}", task.id);
    let run = ValidationRun {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(state.settings.namespace.clone()),
            labels: Some(BTreeMap::from([
                (labels::SESSION.to_owned(), id.clone()),
                (labels::TASK.to_owned(), task.id.clone()),
            ])),
            owner_references: s.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: ValidationRunSpec {
            session: id.clone(),
            task: task.id.clone(),
        },
        status: None,
    };
    let params = PostParams {
        field_manager: Some(GATEWAY_FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let made = state
        .runs_api()
        .create(&params, &run)
        .await
        .map_err(|e| ApiError::from_kube(&format!("create ValidationRun {name}"), &e))?;
    let finished = state
        .caches
        .wait_for(state.settings.validate_wait, |c| {
            c.run(&name)
                .filter(|r| r.status.as_ref().is_some_and(|st| st.phase.is_finished()))
        })
        .await;
    let scenario = Some(scenario.as_ref());
    match finished {
        Some(run) => Ok(Json(views::validation_view(&run, scenario)).into_response()),
        None => {
            let run = state.caches.run(&name).unwrap_or(made);
            let url = format!("/api/v1/sessions/{id}/validations/{name}");
            let body = ValidationView {
                url: Some(url.clone()),
                message: "Validation is still running; poll the url for the result.".to_owned(),
                ..views::validation_view(&run, scenario)
            };
            let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&url) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            Ok(response)
        }
    }
}

/// `GET /sessions/{id}/validations`: the session's runs, newest first.
#[utoipa::path(get, path = "/sessions/{id}/validations", operation_id = "listValidations", tag = "sessions", params(("id" = String, Path, description = "Session id")),
    responses((status = 400, body = ErrorBody), (status = 200, description = "The session's validation runs, newest first", body = Vec<ValidationView>), (status = 404, body = ErrorBody)))]
pub async fn list_runs(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<views::ValidationView>>> {
    let s = visible_session(&state, &who, &id)?;
    let catalog = state.catalog.catalog();
    let scenario = catalog.get(&s.spec.scenario).map(|a| a.as_ref());
    let mut runs: Vec<ValidationRun> = state
        .caches
        .runs()
        .into_iter()
        .filter(|r| r.spec.session == id)
        .collect();
    runs.sort_by(|a, b| {
        (b.metadata.creation_timestamp.as_ref().map(|t| t.0), b.name_any())
            .cmp(&(a.metadata.creation_timestamp.as_ref().map(|t| t.0), a.name_any()))
    });
    Ok(Json(
        runs.iter().map(|r| views::validation_view(r, scenario)).collect(),
    ))
}

/// `GET /sessions/{id}/validations/{run}`: one run of the session (poll after a 202).
#[utoipa::path(get, path = "/sessions/{id}/validations/{run}", operation_id = "getValidation", tag = "sessions",
    params(("id" = String, Path, description = "Session id"), ("run" = String, Path, description = "ValidationRun name")),
    responses((status = 400, body = ErrorBody), (status = 200, body = ValidationView), (status = 404, body = ErrorBody)))]
pub async fn get_run(
    State(state): State<Shared>,
    who: Identity,
    Path((id, run)): Path<(String, String)>,
) -> ApiResult<Json<views::ValidationView>> {
    let s = visible_session(&state, &who, &id)?;
    let r = state
        .caches
        .run(&run)
        .filter(|r| r.spec.session == id)
        .ok_or_else(|| {
            ApiError::not_found(
                "RUN_NOT_FOUND",
                format!("Session {id} has no validation {run:?}."),
            )
        })?;
    let catalog = state.catalog.catalog();
    Ok(Json(views::validation_view(
        &r,
        catalog.get(&s.spec.scenario).map(|a| a.as_ref()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_name_the_same_session_per_user() {
        let a = session_name("alice", Some("k1"));
        assert_eq!(a, session_name("alice", Some("k1")));
        assert_ne!(a, session_name("bob", Some("k1")));
        assert_ne!(a, session_name("alice", Some("k2")));
        // The same user as ownership compares it (trimmed, lowercased).
        assert_eq!(a, session_name(" Alice ", Some("k1")));
        assert_ne!(session_name("alice", None), session_name("alice", None));
        for name in [a, session_name("alice", None)] {
            assert!(
                cks_api::common::is_dns1123_label(&name) && name.len() == 16,
                "{name}"
            );
        }
    }

    #[test]
    fn ended_and_deleting_sessions_do_not_count_against_the_limit() {
        let s = |phase: &str, deleting: bool| -> Session {
            let mut v = json!({
                "apiVersion": "cks.io/v1alpha1", "kind": "Session",
                "metadata": {"name": "s", "namespace": "cks"},
                "spec": {"scenario": "x", "user": "alice", "pool": "p", "durationMinutes": 60},
                "status": {"phase": phase},
            });
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2025-01-02T10:00:00Z");
            }
            serde_json::from_value(v).unwrap()
        };
        assert!(counts_against_limit(&s("Ready", false)));
        assert!(counts_against_limit(&s("WaitingForCluster", false)));
        assert!(!counts_against_limit(&s("Ready", true)));
        assert!(!counts_against_limit(&s("Expired", false)));
    }

    #[test]
    fn idempotency_key_header_must_be_short_and_visible() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("abc"));
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("abc"));
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert_eq!(idempotency_key(&h).unwrap_err().status, 400);
        h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("  "));
        assert_eq!(idempotency_key(&h).unwrap_err().code, "BAD_IDEMPOTENCY_KEY");
    }
}
