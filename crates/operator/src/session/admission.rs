//! The checks a new Session passes before it may hold a cluster: its scenario is in the
//! catalog, its pool's clusters have the nodes the scenario needs, and its user is under the
//! limit of active Sessions. Pure: the Session's reconcile runs them to record a failure, the
//! pool's allocator to skip a Session that will fail, both from the same caches.

use std::sync::Arc;

use cks_api::cluster_pool::ClusterPool;
use cks_api::session::{Session, user_key};
use cks_scenarios::{CatalogStore, Scenario};
use kube::{Resource, ResourceExt};

use super::queue::{self, QueueKey};
use super::reasons;

/// Why a Session cannot be admitted: the Failed reason and a message for the student.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// One of [`reasons`].
    pub reason: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

/// The Session's scenario from the catalog.
pub fn scenario(catalog: Option<&Arc<CatalogStore>>, session: &Session) -> Result<Arc<Scenario>, String> {
    let id = &session.spec.scenario;
    let Some(store) = catalog else {
        return Err(format!(
            "scenario {id} cannot be found: no scenario catalog is loaded"
        ));
    };
    store
        .catalog()
        .get(id)
        .cloned()
        .ok_or_else(|| format!("scenario {id} is not in the scenario catalog"))
}

/// The first check `session` fails, in the order they are reported: scenario, pool,
/// requirements, user limit. `user_active` are the queue keys of the active Sessions of the
/// same user in the same namespace (see [`user_active`]; the Session itself may be among them).
pub fn refusal(
    session: &Session,
    scenario: Result<&Scenario, &str>,
    pool: Option<&ClusterPool>,
    user_active: &[QueueKey],
    limit: u32,
) -> Option<Refusal> {
    let scenario = match scenario {
        Ok(s) => s,
        Err(message) => {
            return Some(Refusal {
                reason: reasons::SCENARIO_NOT_FOUND,
                message: message.to_owned(),
            });
        }
    };
    let namespace = session.namespace().unwrap_or_default();
    let pool_name = &session.spec.pool;
    let Some(pool) = pool else {
        return Some(Refusal {
            reason: reasons::POOL_NOT_FOUND,
            message: format!("ClusterPool {pool_name} does not exist in namespace {namespace}"),
        });
    };
    if let Some(why) = queue::requirements_unmet(&scenario.metadata.requirements, &pool.spec.template) {
        return Some(Refusal {
            reason: reasons::REQUIREMENTS_NOT_MET,
            message: format!("pool {pool_name} cannot run scenario {}: {why}", scenario.id()),
        });
    }
    // Only older Sessions count (a key is never older than itself).
    if queue::over_user_limit(&QueueKey::of(session), user_active, limit) {
        return Some(Refusal {
            reason: reasons::USER_LIMIT_REACHED,
            message: format!(
                "user {} already has {limit} active session(s); end one before starting another",
                session.spec.user
            ),
        });
    }
    None
}

/// Who the user limit groups together: namespace and normalised user.
pub fn user_of(session: &Session) -> (String, String) {
    (
        session.namespace().unwrap_or_default(),
        user_key(&session.spec.user),
    )
}

/// True when `s` counts against its user's limit: active and not being deleted.
pub fn counts_for_user(s: &Session) -> bool {
    s.meta().deletion_timestamp.is_none()
        && s.status
            .as_ref()
            .map(|st| st.phase)
            .unwrap_or_default()
            .is_active()
}

/// The queue keys of the active Sessions among `sessions` of the same user as `session`.
pub fn user_active<'a>(session: &Session, sessions: impl IntoIterator<Item = &'a Session>) -> Vec<QueueKey> {
    let user = user_of(session);
    sessions
        .into_iter()
        .filter(|s| counts_for_user(s) && user_of(s) == user)
        .map(QueueKey::of)
        .collect()
}
