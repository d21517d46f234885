//! How the Session controller (reconcile, allocator and setup task alike) writes a Session's
//! status: the whole status by server-side apply with the field manager
//! `cks-operator/session`, guarded by the resourceVersion it was read with, and only when
//! something differs; and the status of a Session that has just been given a cluster or
//! waits in the queue.
//!
//! `tasks` is sent as read (or, at the claim, initialised): the ValidationRun controller
//! applies the list with its own manager, and every write of either is guarded, so neither
//! can put back a list the other changed.

use std::sync::Arc;

use cks_api::cluster_pool::ClusterPool;
use cks_api::conditions::{ConditionStatus, new_condition, set_condition};
use cks_api::names::condition_types;
use cks_api::practice_cluster::PracticeCluster;
use cks_api::session::{Session, SessionPhase, SessionStatus, SetupProgress};
use cks_scenarios::Scenario;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{queue, reasons};
use crate::status::{Guard, managers};

/// The `Ready` condition follows the phase.
pub fn summarise(status: &mut SessionStatus, generation: Option<i64>, now: Timestamp) {
    let ready = status.phase == SessionPhase::Ready;
    let reason = format!("{:?}", status.phase);
    let message = if ready {
        "the scenario is set up; work on the tasks".to_owned()
    } else {
        status.message.clone().unwrap_or_default()
    };
    set_condition(
        &mut status.conditions,
        new_condition(
            condition_types::READY,
            ConditionStatus::from(ready),
            &reason,
            message,
            generation,
            now,
        ),
    );
    status.observed_generation = generation;
}

/// The status as JSON.
pub fn to_json(status: &SessionStatus) -> Value {
    serde_json::to_value(status).unwrap_or_else(|_| json!({}))
}

/// What a guarded status write did.
#[derive(Debug)]
pub enum Written {
    /// Nothing differed: no request was made.
    Unchanged,
    /// Written; the Session as stored now.
    Stored(Box<Session>),
    /// The Session changed since it was read; nothing was written.
    Conflict,
}

/// Writes `next` as `session`'s status, guarded by `session`'s resourceVersion, unless it
/// equals what was read. `summarise` is applied first with `generation` as the observed one.
pub async fn write(
    api: &Api<Session>,
    session: &Session,
    mut next: SessionStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> crate::error::Result<Written> {
    summarise(&mut next, generation, now);
    let current = session.status.clone().unwrap_or_default();
    if to_json(&current) == to_json(&next) {
        return Ok(Written::Unchanged);
    }
    let written =
        crate::status::apply(api, session, managers::SESSION, &next, Guard::ResourceVersion).await?;
    Ok(written.map_or(Written::Conflict, |s| Written::Stored(Box::new(s))))
}

/// The status of `session` once `pc` is claimed for it: Initializing (Ready when the scenario
/// has no setup steps), the cluster, start and expiry, terminals, the tasks (when none are
/// recorded yet) and the conditions. Returns the status and whether the pool's maximum
/// duration cut the requested one.
pub fn assigned(
    session: &Session,
    pc: &PracticeCluster,
    pool: Option<&ClusterPool>,
    scenario: Option<&Arc<Scenario>>,
    ssh_port: u16,
    now: Timestamp,
) -> (SessionStatus, bool) {
    let cluster = pc.name_any();
    let pool_max = pool.map_or(1440, |p| p.spec.sessions.max_duration_minutes);
    let (minutes, capped) = queue::granted_minutes(session.spec.duration_minutes, pool_max);
    let mut next = session.status.clone().unwrap_or_default();
    let fresh = next.cluster.as_deref() != Some(cluster.as_str());
    next.phase = SessionPhase::Initializing;
    next.cluster = Some(cluster.clone());
    next.queue_position = None;
    next.reason = Some(reasons::CLUSTER_CLAIMED.to_owned());
    next.message = Some(format!("cluster {cluster} assigned; setting up the scenario"));
    let started = if fresh {
        now
    } else {
        queue::effective_start(next.started_at.as_ref().map(|t| t.0), now)
    };
    next.started_at = Some(Time(started));
    next.expires_at = Some(Time(queue::expires_at(started, minutes)));
    next.terminals = queue::terminals(
        &session.name_any(),
        pc.status.as_ref().map(|s| s.vms.as_slice()).unwrap_or_default(),
        ssh_port,
    );
    if next.tasks.is_empty()
        && let Some(s) = scenario
    {
        next.tasks = queue::initial_tasks(s);
    }
    let total = scenario.map_or(0, |s| s.setup.len());
    next.setup = Some(SetupProgress {
        total: i32::try_from(total).unwrap_or(i32::MAX),
        completed: 0,
        step: None,
        started_at: Some(Time(now)),
        finished_at: None,
    });
    let generation = session.meta().generation;
    set_condition(
        &mut next.conditions,
        new_condition(
            condition_types::CLUSTER_ASSIGNED,
            ConditionStatus::True,
            reasons::CLUSTER_CLAIMED,
            format!("cluster {cluster}"),
            generation,
            now,
        ),
    );
    // A scenario without setup steps is ready as soon as it has a cluster.
    let no_setup = scenario.is_some_and(|s| s.setup.is_empty());
    let (ready, reason, message) = if no_setup {
        (true, reasons::SETUP_SUCCEEDED, "no setup steps".to_owned())
    } else {
        (
            false,
            reasons::SETUP_RUNNING,
            format!("{total} setup step(s) to run"),
        )
    };
    set_condition(
        &mut next.conditions,
        new_condition(
            condition_types::SCENARIO_READY,
            ConditionStatus::from(ready),
            reason,
            message,
            generation,
            now,
        ),
    );
    if no_setup {
        next.phase = SessionPhase::Ready;
        next.reason = Some(reasons::SETUP_SUCCEEDED.to_owned());
        next.message = Some(format!(
            "cluster {cluster} assigned; the scenario has no setup steps"
        ));
        if let Some(progress) = next.setup.as_mut() {
            progress.finished_at = Some(Time(now));
        }
    }
    (next, capped)
}

/// The status of a Session waiting at `position` in the queue of `pool`.
pub fn waiting(session: &Session, pool: &str, position: usize, now: Timestamp) -> SessionStatus {
    let mut next = session.status.clone().unwrap_or_default();
    next.phase = SessionPhase::WaitingForCluster;
    next.queue_position = Some(i32::try_from(position).unwrap_or(i32::MAX));
    next.reason = Some(reasons::NO_CLUSTER_AVAILABLE.to_owned());
    next.message = Some(format!(
        "waiting for a cluster of pool {pool}: position {position} in the queue"
    ));
    set_condition(
        &mut next.conditions,
        new_condition(
            condition_types::CLUSTER_ASSIGNED,
            ConditionStatus::False,
            reasons::NO_CLUSTER_AVAILABLE,
            format!("position {position} in the queue of pool {pool}"),
            session.meta().generation,
            now,
        ),
    );
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_condition_follows_the_phase() {
        let now = Timestamp::from_second(10).unwrap();
        let mut status = SessionStatus {
            phase: SessionPhase::Ready,
            ..SessionStatus::default()
        };
        summarise(&mut status, Some(2), now);
        assert!(cks_api::conditions::is_condition_true(
            &status.conditions,
            condition_types::READY
        ));
        assert_eq!(status.observed_generation, Some(2));
        status.phase = SessionPhase::Expired;
        summarise(&mut status, Some(2), now);
        assert!(!cks_api::conditions::is_condition_true(
            &status.conditions,
            condition_types::READY
        ));
    }
}
