//! Admin routes (role `admin`): pool and cluster state, everyone's sessions, and the
//! reference's admin actions, each mapped to the nearest declarative action. The pools are
//! owned by git (GitOps): the gateway never creates or scales them, it annotates Sessions
//! and PracticeClusters the way the operator honours (`cks.io/force-release`,
//! `cks.io/reset-requested`) or deletes a PracticeCluster for its pool to rebuild. Every
//! answer says in `message` what actually happened.

use axum::Json;
use axum::extract::State;
use cks_api::PracticeCluster;
use cks_api::names::{GATEWAY_FIELD_MANAGER, annotations};
use cks_api::practice_cluster::PracticeClusterPhase;
use cks_api::session::SessionPhase;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;

use super::sessions::{SessionQuery, matching, view, visible_session};
use super::{Path, Query, Shared};
use crate::auth::Identity;
use crate::errors::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use crate::views::{self, ActionView, AdminSessionsView};

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(GATEWAY_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

fn pool_managed(what: &str) -> ApiError {
    ApiError::conflict(
        "POOL_MANAGED",
        format!(
            "{what} is not done through this API: cluster pools are declared in git (ClusterPool objects) and the \
             operator builds, snapshots and replaces clusters itself. Change the ClusterPool to scale; use \
             /admin/clusters/{{id}}/reset or /recreate for one cluster."
        ),
    )
}

/// `GET /admin/clusters`: the reference's pool status (§4.6) plus the pools.
#[utoipa::path(get, path = "/admin/clusters", operation_id = "adminClusters", tag = "admin",
    responses((status = 200, body = views::PoolStatusView), (status = 403, body = ErrorBody)))]
pub async fn clusters(State(state): State<Shared>, who: Identity) -> ApiResult<Json<views::PoolStatusView>> {
    who.require_admin()?;
    Ok(Json(pool_status(&state, true)))
}

pub(super) fn pool_status(state: &AppState, detailed: bool) -> views::PoolStatusView {
    let sessions = state.caches.sessions();
    views::pool_status(
        &state.caches.clusters(),
        &state.caches.pools(),
        |name| sessions.iter().find(|s| s.name_any() == name),
        detailed,
    )
}

/// `GET /admin/sessions`: `{sessions, stats}` (§3.11), active sessions unless `all=true`,
/// filterable by `user` and `phase`.
#[utoipa::path(get, path = "/admin/sessions", operation_id = "adminSessions", tag = "admin", params(SessionQuery),
    responses((status = 400, body = ErrorBody), (status = 200, body = AdminSessionsView), (status = 403, body = ErrorBody)))]
pub async fn sessions(
    State(state): State<Shared>,
    who: Identity,
    Query(q): Query<SessionQuery>,
) -> ApiResult<Json<AdminSessionsView>> {
    who.require_admin()?;
    let list = matching(&state, &who, &q);
    let stats = views::session_stats(&state.caches.sessions());
    let sessions: Vec<views::SessionView> = list.iter().map(|s| view(&state, s)).collect();
    Ok(Json(AdminSessionsView { sessions, stats }))
}

async fn force_release(state: &AppState, who: &Identity, name: &str) -> ApiResult<()> {
    let note = format!("by {} at {}", who.user, jiff::Timestamp::now());
    let patch = json!({"metadata": {"annotations": {annotations::FORCE_RELEASE: note}}});
    match state
        .sessions_api()
        .patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(ApiError::from_kube(&format!("force-release Session {name}"), &e)),
    }
}

/// `POST /admin/sessions/{id}/end`: force-ends a session at once (its cluster is released
/// and reset); the Session stays as a record, phase `Ended`.
#[utoipa::path(post, path = "/admin/sessions/{id}/end", operation_id = "adminEndSession", tag = "admin", params(("id" = String, Path, description = "Session id")),
    responses((status = 400, body = ErrorBody), (status = 200, body = ActionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn end_session(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    let s = visible_session(&state, &who, &id)?;
    if s.status.as_ref().is_some_and(|st| st.phase.is_terminal()) {
        return Err(ApiError::conflict(
            "SESSION_ENDED",
            format!("Session {id} has already ended."),
        ));
    }
    force_release(&state, &who, &id).await?;
    tracing::info!(session = %id, by = %who.user, "session force-released");
    Ok(Json(ActionView {
        session_id: Some(id.clone()),
        ..ActionView::new(
            "force-release",
            format!("Session {id} is being ended: its cluster is released and reset."),
        )
    }))
}

/// `POST /admin/release-all-clusters`: force-ends every session that holds a cluster; each
/// cluster is then reset and returns to its pool. Free clusters are left alone (unlike the
/// reference, which resets them too and leaves the sessions running without a cluster).
#[utoipa::path(post, path = "/admin/release-all-clusters", operation_id = "adminReleaseAll", tag = "admin",
    responses((status = 200, body = ActionView), (status = 403, body = ErrorBody)))]
pub async fn release_all(State(state): State<Shared>, who: Identity) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    let before = pool_status(&state, false);
    let holding: Vec<String> = state
        .caches
        .sessions()
        .iter()
        .filter(|s| {
            let st = s.status.clone().unwrap_or_default();
            matches!(st.phase, SessionPhase::Initializing | SessionPhase::Ready) && st.cluster.is_some()
        })
        .map(ResourceExt::name_any)
        .collect();
    for name in &holding {
        force_release(&state, &who, name).await?;
    }
    tracing::info!(sessions = holding.len(), by = %who.user, "released all clusters");
    let message = format!(
        "Ending {} session(s) that held a cluster; their clusters reset and return to the pool.",
        holding.len()
    );
    Ok(Json(ActionView {
        released: Some(holding),
        pool_status: Some(before),
        ..ActionView::new("force-release", message)
    }))
}

fn cluster_of(state: &AppState, id: &str) -> ApiResult<PracticeCluster> {
    let not_found = || ApiError::not_found("CLUSTER_NOT_FOUND", format!("There is no cluster {id:?}."));
    if !cks_api::common::is_dns1123_label(id) {
        return Err(not_found());
    }
    state.caches.cluster(id).ok_or_else(not_found)
}

fn phase(pc: &PracticeCluster) -> PracticeClusterPhase {
    pc.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

fn refuse_if_assigned(pc: &PracticeCluster) -> ApiResult<()> {
    if let Some(claim) = &pc.spec.claim_ref {
        return Err(ApiError::conflict(
            "CLUSTER_ASSIGNED",
            format!(
                "Cluster {} is in use by session {}; end that session (POST /api/v1/admin/sessions/{}/end) and the \
                 cluster resets by itself.",
                pc.name_any(),
                claim.name,
                claim.name
            ),
        ));
    }
    Ok(())
}

/// `POST /admin/clusters/{id}/reset`: asks the operator to restore a free cluster from its
/// baseline snapshots (`cks.io/reset-requested`).
#[utoipa::path(post, path = "/admin/clusters/{id}/reset", operation_id = "adminResetCluster", tag = "admin", params(("id" = String, Path, description = "PracticeCluster name")),
    responses((status = 400, body = ErrorBody), (status = 200, body = ActionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reset_cluster(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    let pc = cluster_of(&state, &id)?;
    refuse_if_assigned(&pc)?;
    match phase(&pc) {
        PracticeClusterPhase::Available => {}
        PracticeClusterPhase::Resetting => {
            return Err(ApiError::conflict(
                "CLUSTER_BUSY",
                format!("Cluster {id} is resetting already."),
            ));
        }
        PracticeClusterPhase::Failed => {
            return Err(ApiError::conflict(
                "CLUSTER_FAILED",
                format!(
                    "Cluster {id} has failed and cannot be reset; recreate it (POST .../clusters/{id}/recreate)."
                ),
            ));
        }
        p => {
            return Err(ApiError::conflict(
                "CLUSTER_BUSY",
                format!("Cluster {id} is still being built ({p:?}); it is clean when it becomes available."),
            ));
        }
    }
    // The resourceVersion makes the patch conditional on the phase and claim checked above.
    let patch = json!({"metadata": {
        "resourceVersion": pc.metadata.resource_version,
        "annotations": {annotations::RESET_REQUESTED: who.user},
    }});
    state
        .clusters_api()
        .patch(&id, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| ApiError::from_kube(&format!("request reset of PracticeCluster {id}"), &e))?;
    tracing::info!(cluster = %id, by = %who.user, "cluster reset requested");
    Ok(Json(ActionView {
        cluster_id: Some(id.clone()),
        ..ActionView::new(
            "reset-requested",
            format!("Cluster {id} will be restored from its baseline snapshots and then be available again."),
        )
    }))
}

async fn recreate(state: &AppState, who: &Identity, pc: &PracticeCluster) -> ApiResult<()> {
    refuse_if_assigned(pc)?;
    let name = pc.name_any();
    // Guarded by what was checked: a claim written since the cache copy makes this a 409
    // instead of deleting a cluster a student has just been given.
    let guarded = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pc.metadata.uid.clone(),
            resource_version: pc.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match state.clusters_api().delete(&name, &guarded).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(ApiError::from_kube(&format!("delete PracticeCluster {name}"), &e)),
    }
    tracing::info!(cluster = %name, by = %who.user, "cluster deleted for recreation");
    Ok(())
}

/// `POST /admin/clusters/{id}/recreate`: deletes a free cluster; its pool builds a fresh one.
#[utoipa::path(post, path = "/admin/clusters/{id}/recreate", operation_id = "adminRecreateCluster", tag = "admin", params(("id" = String, Path, description = "PracticeCluster name")),
    responses((status = 400, body = ErrorBody), (status = 200, body = ActionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn recreate_cluster(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    let pc = cluster_of(&state, &id)?;
    recreate(&state, &who, &pc).await?;
    Ok(Json(ActionView {
        cluster_id: Some(id.clone()),
        ..ActionView::new(
            "recreate",
            format!(
                "Cluster {id} is being deleted; pool {} builds a replacement as it needs one.",
                pc.spec.pool
            ),
        )
    }))
}

/// `POST /admin/clusters/{id}/bootstrap` (reference): the nearest declarative action is to
/// recreate the cluster, which builds it from scratch.
#[utoipa::path(post, path = "/admin/clusters/{id}/bootstrap", operation_id = "adminBootstrapCluster", tag = "admin", params(("id" = String, Path, description = "PracticeCluster name")),
    responses((status = 400, body = ErrorBody), (status = 200, body = ActionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn bootstrap_cluster(
    state: State<Shared>,
    who: Identity,
    id: Path<String>,
) -> ApiResult<Json<ActionView>> {
    recreate_cluster(state, who, id).await
}

/// `POST /admin/clusters/{id}/destroy` (reference): refused; a pool keeps its clusters.
#[utoipa::path(post, path = "/admin/clusters/{id}/destroy", operation_id = "adminDestroyCluster", tag = "admin", params(("id" = String, Path, description = "PracticeCluster name")),
    responses((status = 400, body = ErrorBody), (status = 200, body = ActionView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn destroy_cluster(
    State(state): State<Shared>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    cluster_of(&state, &id)?;
    Err(pool_managed("Destroying a single cluster"))
}

/// `POST /admin/bootstrap-pool` (reference): recreates the pools' failed clusters; the pools
/// themselves are built by the operator from git.
#[utoipa::path(post, path = "/admin/bootstrap-pool", operation_id = "adminBootstrapPool", tag = "admin",
    responses((status = 200, body = ActionView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn bootstrap_pool(State(state): State<Shared>, who: Identity) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    let failed: Vec<PracticeCluster> = state
        .caches
        .clusters()
        .into_iter()
        .filter(|pc| phase(pc) == PracticeClusterPhase::Failed && pc.spec.claim_ref.is_none())
        .collect();
    for pc in &failed {
        recreate(&state, &who, pc).await?;
    }
    let names: Vec<String> = failed.iter().map(ResourceExt::name_any).collect();
    let message = if names.is_empty() {
        "Nothing to do: the operator builds and keeps the pools' clusters from their ClusterPool objects."
            .to_owned()
    } else {
        format!(
            "Recreating {} failed cluster(s); the operator builds the rest from the ClusterPool objects.",
            names.len()
        )
    };
    Ok(Json(ActionView {
        clusters: Some(names),
        ..ActionView::new("recreate-failed", message)
    }))
}

/// `POST /admin/destroy-pool` (reference): refused; pools are declared in git.
#[utoipa::path(post, path = "/admin/destroy-pool", operation_id = "adminDestroyPool", tag = "admin",
    responses((status = 403, body = ErrorBody), (status = 409, description = "Refused: pools are declared in git", body = ErrorBody)))]
pub async fn destroy_pool(who: Identity) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    Err(pool_managed("Destroying a pool"))
}

/// `POST /admin/create-snapshots` (reference): refused; the operator snapshots every
/// cluster it builds.
#[utoipa::path(post, path = "/admin/create-snapshots", operation_id = "adminCreateSnapshots", tag = "admin",
    responses((status = 403, body = ErrorBody), (status = 409, description = "Refused: the operator snapshots every cluster it builds", body = ErrorBody)))]
pub async fn create_snapshots(who: Identity) -> ApiResult<Json<ActionView>> {
    who.require_admin()?;
    Err(pool_managed("Taking snapshots"))
}
