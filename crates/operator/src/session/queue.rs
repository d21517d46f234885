//! Pure allocation planning of the Session controller: the FIFO queue of a pool, which
//! clusters are candidates, in which order a waiting Session tries them, the per-user limit,
//! the scenario's node requirements, expiry and terminals. No client here; unit-tested below.
//!
//! The queue of a pool is its Sessions waiting for a cluster (and those not yet checked)
//! ordered by `(creationTimestamp, name)`. `creationTimestamp` has a resolution of one second, so
//! Sessions created within the same second are served in name order.

use std::cmp::Ordering;

use cks_api::cluster_pool::ClusterTemplate;
use cks_api::names::annotations;
use cks_api::practice_cluster::{PracticeCluster, PracticeClusterPhase, VmStatus};
use cks_api::session::{Session, SessionPhase, TaskStatus, TerminalStatus};
use cks_scenarios::{Requirements, Scenario};
use jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};

/// What the queue needs to know of a Session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueKey {
    /// When it was created (second resolution).
    pub created: Timestamp,
    /// Its name: breaks ties between Sessions created in the same second.
    pub name: String,
}

impl QueueKey {
    /// The key of `session`; a Session without a creation time (never true of one read from
    /// the API server) sorts last.
    pub fn of(session: &Session) -> Self {
        Self {
            created: session
                .meta()
                .creation_timestamp
                .as_ref()
                .map_or(Timestamp::MAX, |t| t.0),
            name: session.name_any(),
        }
    }
}

impl Ord for QueueKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.created
            .cmp(&other.created)
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for QueueKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// True while a Session waits in its pool's queue (what `queuePosition` is shown for).
pub fn is_waiting(phase: SessionPhase) -> bool {
    phase == SessionPhase::WaitingForCluster
}

/// True while a Session counts in its pool's queue: waiting, or not yet checked (a Pending
/// Session created earlier is ahead of later ones, so it is not overtaken while its checks
/// run).
pub fn is_queued(phase: SessionPhase) -> bool {
    matches!(phase, SessionPhase::Pending | SessionPhase::WaitingForCluster)
}

/// 1-based position of `me` in `queue` (which need not be sorted or contain `me`): one more
/// than the number of queued Sessions ahead of it.
pub fn position(queue: &[QueueKey], me: &QueueKey) -> usize {
    1 + queue.iter().filter(|k| *k < me).count()
}

/// True when `pc` can be claimed for a Session of `pool`: Available, unclaimed, not being
/// deleted and without a pending reset request.
pub fn is_candidate(pc: &PracticeCluster, pool: &str) -> bool {
    pc.spec.pool == pool
        && pc.spec.claim_ref.is_none()
        && pc.meta().deletion_timestamp.is_none()
        && !pc.annotations().contains_key(annotations::RESET_REQUESTED)
        && pc.status.as_ref().map(|s| s.phase) == Some(PracticeClusterPhase::Available)
}

/// Indices into `candidates` (sorted by name) in the order the Session at `position` tries
/// them: the k-th in the queue starts with the k-th candidate, so simultaneous claims spread
/// over the clusters instead of all conflicting on the first, then tries the others.
pub fn claim_order(candidates: usize, position: usize) -> Vec<usize> {
    if candidates == 0 {
        return Vec::new();
    }
    let start = position.saturating_sub(1) % candidates;
    (0..candidates).map(|i| (start + i) % candidates).collect()
}

/// True when `me` is over the per-user limit: `limit` or more OLDER active Sessions of the
/// same user exist. Counting only older ones makes two Sessions arriving together
/// deterministic: the older one wins.
pub fn over_user_limit<'a>(
    me: &QueueKey,
    older_candidates: impl IntoIterator<Item = &'a QueueKey>,
    limit: u32,
) -> bool {
    let older = older_candidates.into_iter().filter(|k| *k < me).count();
    older >= usize::try_from(limit).unwrap_or(usize::MAX)
}

/// Why a pool's template cannot host the scenario, if it cannot.
pub fn requirements_unmet(requirements: &Requirements, template: &ClusterTemplate) -> Option<String> {
    let nodes = requirements.nodes;
    let workers = u32::try_from(template.workers.count).unwrap_or(0);
    // Every cluster has exactly one control plane.
    if nodes.control_plane > 1 {
        return Some(format!(
            "the scenario needs {} control-plane nodes; the pool's clusters have 1",
            nodes.control_plane
        ));
    }
    if nodes.workers > workers {
        return Some(format!(
            "the scenario needs {} worker nodes; the pool's clusters have {workers}",
            nodes.workers
        ));
    }
    None
}

/// Session length granted: the requested minutes capped by the pool's maximum. Returns the
/// minutes and whether the cap applied.
pub fn granted_minutes(requested: i32, pool_max: i32) -> (i32, bool) {
    if requested > pool_max {
        (pool_max, true)
    } else {
        (requested, false)
    }
}

/// When a session's time counts from: its recorded `startedAt`, but never later than `now`
/// (a start in the future, written by hand, would otherwise keep the session from ever
/// expiring); `now` when none is recorded.
pub fn effective_start(recorded: Option<Timestamp>, now: Timestamp) -> Timestamp {
    recorded.map_or(now, |started| started.min(now))
}

/// `startedAt + minutes`.
pub fn expires_at(started: Timestamp, minutes: i32) -> Timestamp {
    started
        .checked_add(SignedDuration::from_mins(i64::from(minutes)))
        .unwrap_or(Timestamp::MAX)
}

/// One terminal per VM with an IP: id `{session}-{target}`, host the VM's IP.
pub fn terminals(session: &str, vms: &[VmStatus], port: u16) -> Vec<TerminalStatus> {
    vms.iter()
        .map(|vm| TerminalStatus {
            target: vm.target.clone(),
            id: format!("{session}-{}", vm.target),
            host: vm.ip.clone(),
            port: vm.ip.as_ref().map(|_| i32::from(port)),
        })
        .collect()
}

/// Every task of the scenario, Pending.
pub fn initial_tasks(scenario: &Scenario) -> Vec<TaskStatus> {
    scenario
        .tasks
        .iter()
        .map(|t| TaskStatus {
            id: t.id.clone(),
            state: Default::default(),
            attempts: 0,
            last_run: None,
            last_run_time: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cks_api::practice_cluster::VmRole;
    use cks_scenarios::NodeCount;
    use serde_json::json;

    fn key(second: i64, name: &str) -> QueueKey {
        QueueKey {
            created: Timestamp::from_second(second).unwrap(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn queue_orders_by_creation_then_name() {
        let queue = vec![key(5, "b"), key(5, "a"), key(3, "z"), key(9, "c")];
        assert_eq!(position(&queue, &key(3, "z")), 1);
        assert_eq!(position(&queue, &key(5, "a")), 2);
        assert_eq!(position(&queue, &key(5, "b")), 3);
        assert_eq!(position(&queue, &key(9, "c")), 4);
        // A Session not yet in the list counts everyone ahead of it.
        assert_eq!(position(&queue, &key(6, "new")), 4);
    }

    #[test]
    fn claim_order_starts_at_the_own_position_and_wraps() {
        assert_eq!(claim_order(0, 1), Vec::<usize>::new());
        assert_eq!(claim_order(3, 1), vec![0, 1, 2]);
        assert_eq!(claim_order(3, 2), vec![1, 2, 0]);
        assert_eq!(claim_order(3, 5), vec![1, 2, 0]);
    }

    #[test]
    fn user_limit_counts_only_older_sessions() {
        let me = key(5, "m");
        let others = [key(4, "x"), key(5, "a"), key(6, "later")];
        assert!(over_user_limit(&me, &others, 2));
        assert!(!over_user_limit(&me, &others, 3));
        // The oldest one always passes a limit of one.
        assert!(!over_user_limit(&key(1, "first"), &others, 1));
        assert!(over_user_limit(&key(5, "b"), &others, 1));
    }

    fn template(workers: i32) -> ClusterTemplate {
        serde_json::from_value(json!({
            "kubernetesVersion": "1.33.0",
            "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
            "workers": {"count": workers, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
            "goldenImage": {"namespace": "vm-templates", "name": "golden"},
            "sshKeySecretRef": {"name": "ssh-key"},
        }))
        .unwrap()
    }

    #[test]
    fn requirements_compare_node_counts() {
        let needs = |control_plane, workers| Requirements {
            nodes: NodeCount {
                control_plane,
                workers,
            },
            ..Requirements::default()
        };
        assert_eq!(requirements_unmet(&needs(1, 1), &template(1)), None);
        assert_eq!(requirements_unmet(&needs(1, 0), &template(1)), None);
        let msg = requirements_unmet(&needs(1, 2), &template(1)).unwrap();
        assert!(msg.contains("2 worker nodes") && msg.contains("have 1"), "{msg}");
        assert!(requirements_unmet(&needs(3, 1), &template(2)).is_some());
    }

    #[test]
    fn duration_is_capped_by_the_pool() {
        assert_eq!(granted_minutes(60, 120), (60, false));
        assert_eq!(granted_minutes(200, 120), (120, true));
        let start = Timestamp::from_second(1_000).unwrap();
        assert_eq!(expires_at(start, 2), Timestamp::from_second(1_120).unwrap());
    }

    #[test]
    fn a_start_in_the_future_counts_from_now() {
        let now = Timestamp::from_second(1_000).unwrap();
        let past = Timestamp::from_second(400).unwrap();
        let future = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(effective_start(Some(past), now), past);
        assert_eq!(effective_start(Some(future), now), now);
        assert_eq!(effective_start(None, now), now);
    }

    #[test]
    fn users_are_compared_trimmed_and_without_case() {
        use cks_api::session::user_key;
        assert_eq!(user_key("Alice@Example.com"), user_key(" alice@example.com \t"));
        assert_ne!(user_key("alice@example.com"), user_key("alice2@example.com"));
    }

    #[test]
    fn candidates_are_available_unclaimed_clusters_of_the_pool() {
        let pc = |pool: &str, phase: &str, claim: bool, annotate: bool| -> PracticeCluster {
            let mut v = json!({
                "apiVersion": "cks.io/v1alpha1", "kind": "PracticeCluster",
                "metadata": {"name": "c", "namespace": "cks"},
                "spec": {"pool": pool, "template": template(1), "templateHash": "h"},
                "status": {"phase": phase},
            });
            if claim {
                v["spec"]["claimRef"] = json!({"name": "s", "uid": "u"});
            }
            if annotate {
                v["metadata"]["annotations"] = json!({annotations::RESET_REQUESTED: "x"});
            }
            serde_json::from_value(v).unwrap()
        };
        assert!(is_candidate(&pc("p", "Available", false, false), "p"));
        assert!(!is_candidate(&pc("q", "Available", false, false), "p"));
        assert!(!is_candidate(&pc("p", "Resetting", false, false), "p"));
        assert!(!is_candidate(&pc("p", "Available", true, false), "p"));
        assert!(!is_candidate(&pc("p", "Available", false, true), "p"));
    }

    #[test]
    fn terminals_name_session_and_target() {
        let vms = vec![
            VmStatus {
                name: "c-cp".into(),
                role: VmRole::ControlPlane,
                target: "control-plane".into(),
                ip: Some("10.0.0.2".into()),
                ready: true,
                snapshot: None,
                snapshot_ready: false,
            },
            VmStatus {
                name: "c-w1".into(),
                role: VmRole::Worker,
                target: "worker-1".into(),
                ip: None,
                ready: false,
                snapshot: None,
                snapshot_ready: false,
            },
        ];
        let t = terminals("alice", &vms, 22);
        assert_eq!(t[0].id, "alice-control-plane");
        assert_eq!(t[0].host.as_deref(), Some("10.0.0.2"));
        assert_eq!(t[0].port, Some(22));
        assert_eq!(t[1].id, "alice-worker-1");
        assert_eq!(t[1].port, None);
    }
}
