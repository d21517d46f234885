//! Scenario routes: the catalog as the reference frontend reads it, and an admin reload.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;

use super::{Path, Query, Shared};
use crate::auth::Identity;
use crate::errors::ErrorBody;
use crate::errors::{ApiError, ApiResult};
use crate::views::{self, ReloadView, ScenarioFilter, ScenarioView};

/// `GET /scenarios`: a bare array, sorted by id, filtered by `category`, `difficulty` and
/// `search`.
#[utoipa::path(get, path = "/scenarios", operation_id = "listScenarios", tag = "scenarios", params(ScenarioFilter),
    responses((status = 400, body = ErrorBody), (status = 200, description = "The scenarios, a bare array", body = Vec<ScenarioView>)))]
pub async fn list(
    State(state): State<Shared>,
    _who: Identity,
    Query(filter): Query<ScenarioFilter>,
) -> Json<Vec<ScenarioView>> {
    let catalog = state.catalog.catalog();
    let mut list: Vec<ScenarioView> = catalog
        .list()
        .filter(|s| filter.matches(s))
        .map(|s| views::scenario_view(s))
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Json(list)
}

/// `GET /scenarios/categories`: a flat object id → name.
#[utoipa::path(get, path = "/scenarios/categories", operation_id = "scenarioCategories", tag = "scenarios",
    responses((status = 200, description = "Category id -> display name", body = BTreeMap<String, String>)))]
pub async fn categories(State(state): State<Shared>, _who: Identity) -> Json<BTreeMap<String, String>> {
    Json(views::categories(&state.catalog.catalog()))
}

/// `GET /scenarios/{id}`.
#[utoipa::path(get, path = "/scenarios/{id}", operation_id = "getScenario", tag = "scenarios", params(("id" = String, Path, description = "Scenario id")),
    responses((status = 400, body = ErrorBody), (status = 200, body = ScenarioView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<Shared>,
    _who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Json<ScenarioView>> {
    let catalog = state.catalog.catalog();
    let scenario = catalog
        .get(&id)
        .ok_or_else(|| ApiError::not_found("SCENARIO_NOT_FOUND", format!("There is no scenario {id:?}.")))?;
    Ok(Json(views::scenario_view(scenario)))
}

/// `POST /scenarios/reload` (admin): reads the catalog directory again now instead of at the
/// next file change. Broken scenarios keep their previous version; their errors are listed.
#[utoipa::path(post, path = "/scenarios/reload", operation_id = "reloadScenarios", tag = "admin",
    responses((status = 200, body = ReloadView), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn reload(State(state): State<Shared>, who: Identity) -> ApiResult<Json<ReloadView>> {
    who.require_admin()?;
    let store = state.catalog.clone();
    let result = tokio::task::spawn_blocking(move || store.reload())
        .await
        .map_err(|_| ApiError::unavailable("RELOAD_FAILED", "The reload did not finish; try again."))?;
    let catalog = result.map_err(|e| {
        tracing::warn!(error = %e, "scenario reload failed");
        ApiError::unavailable(
            "RELOAD_FAILED",
            "The scenario directory could not be read; the previous catalog stays. See the gateway log.",
        )
    })?;
    let errors: Vec<String> = catalog.errors().map(ToString::to_string).collect();
    Ok(Json(ReloadView {
        message: format!(
            "Scenario catalog reloaded: {} scenarios, {} errors",
            catalog.len(),
            errors.len()
        ),
        scenarios: catalog.len(),
        errors,
        stale: catalog.stale().iter().cloned().collect(),
        warnings: catalog.warnings().len(),
    }))
}
