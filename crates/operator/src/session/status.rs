//! How the Session controller writes a Session's status: the fields it owns (everything but
//! `tasks`, which the ValidationRun controller keeps once the claim initialised them), as a
//! JSON merge patch of only what changed, guarded by the resourceVersion the status was read
//! with; and the status of a Session that has just been given a cluster.

use std::sync::Arc;

use cks_api::cluster_pool::ClusterPool;
use cks_api::conditions::{ConditionStatus, new_condition, set_condition};
use cks_api::names::condition_types;
use cks_api::practice_cluster::PracticeCluster;
use cks_api::session::{Session, SessionPhase, SessionStatus, SetupProgress};
use cks_scenarios::Scenario;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{queue, reasons};

/// JSON merge patch turning `from` into `to` (objects recursively, everything else replaced;
/// a field missing in `to` becomes `null`).
pub fn merge_diff(from: &Value, to: &Value) -> Option<Value> {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in b {
                match a.get(k) {
                    Some(old) => {
                        if let Some(d) = merge_diff(old, v) {
                            patch.insert(k.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if from == to => None,
        _ => Some(to.clone()),
    }
}

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

/// The status of a Session as this controller writes it: everything but `tasks`, which only
/// the claim initialises (the ValidationRun controller owns the entries afterwards).
pub fn owned_json(status: &SessionStatus, with_tasks: bool) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if !with_tasks && let Some(o) = v.as_object_mut() {
        o.remove("tasks");
    }
    v
}

/// What a guarded status write did.
#[derive(Debug)]
pub enum Written {
    /// Nothing differed: no request was made.
    Unchanged,
    /// Written; the Session as stored now.
    Stored(Box<Session>),
    /// The Session changed (or went away) since it was read; nothing was written.
    Conflict,
}

/// Writes the owned fields of `next` that differ from `session`'s status, guarded by
/// `session`'s resourceVersion. `summarise` is applied to `next` first.
pub async fn write(
    api: &Api<Session>,
    session: &Session,
    mut next: SessionStatus,
    with_tasks: bool,
    now: Timestamp,
) -> Result<Written, kube::Error> {
    summarise(&mut next, session.meta().generation, now);
    let current = session.status.clone().unwrap_or_default();
    let Some(diff) = merge_diff(&owned_json(&current, with_tasks), &owned_json(&next, with_tasks)) else {
        return Ok(Written::Unchanged);
    };
    let patch = json!({"metadata": {"resourceVersion": session.resource_version()}, "status": diff});
    match api
        .patch_status(
            &session.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(stored) => Ok(Written::Stored(Box::new(stored))),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Written::Conflict),
        Err(e) => Err(e),
    }
}

/// The status of `session` once `pc` is claimed for it: Initializing (Ready when the scenario
/// has no setup steps), the cluster, start and expiry, terminals, the tasks (when none are
/// recorded yet) and the conditions. Returns the status, whether it initialises `tasks`, and
/// whether the pool's maximum duration cut the requested one.
pub fn assigned(
    session: &Session,
    pc: &PracticeCluster,
    pool: Option<&ClusterPool>,
    scenario: Option<&Arc<Scenario>>,
    ssh_port: u16,
    now: Timestamp,
) -> (SessionStatus, bool, bool) {
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
    let with_tasks = next.tasks.is_empty();
    if with_tasks && let Some(s) = scenario {
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
    (next, with_tasks, capped)
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
    fn merge_diff_writes_only_changes_and_nulls_removed_fields() {
        let from =
            json!({"phase": "WaitingForCluster", "queuePosition": 3, "setup": {"completed": 1, "step": "a"}});
        let to = json!({"phase": "WaitingForCluster", "queuePosition": 2, "setup": {"completed": 2}});
        assert_eq!(
            merge_diff(&from, &to),
            Some(json!({"queuePosition": 2, "setup": {"completed": 2, "step": null}}))
        );
        assert_eq!(merge_diff(&from, &from), None);
    }

    #[test]
    fn owned_status_leaves_tasks_alone_unless_initialising_them() {
        let status = SessionStatus {
            tasks: vec![cks_api::session::TaskStatus {
                id: "task-1".into(),
                state: Default::default(),
                attempts: 2,
                last_run: None,
                last_run_time: None,
            }],
            ..SessionStatus::default()
        };
        assert!(owned_json(&status, false).get("tasks").is_none());
        assert!(owned_json(&status, true).get("tasks").is_some());
    }

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
