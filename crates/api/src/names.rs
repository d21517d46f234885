//! Names the controllers, the gateway and operators agree on: labels, annotations, finalizers,
//! condition types and reasons. Changing one is an API change.

/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "cks-operator";
/// Field manager for writes made by the HTTP gateway.
pub const GATEWAY_FIELD_MANAGER: &str = "cks-gateway";

/// Labels set on objects cks-lab creates.
pub mod labels {
    /// `app.kubernetes.io/managed-by` on every object the operator creates.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "cks-operator";
    /// Name of the ClusterPool an object belongs to.
    pub const POOL: &str = "cks.io/pool";
    /// Name of the PracticeCluster an object belongs to.
    pub const CLUSTER: &str = "cks.io/cluster";
    /// Name of the Session an object belongs to.
    pub const SESSION: &str = "cks.io/session";
    /// Scenario id of a Session or ValidationRun.
    pub const SCENARIO: &str = "cks.io/scenario";
    /// Task id of a ValidationRun.
    pub const TASK: &str = "cks.io/task";
    /// Role of a VM in its practice cluster: `control-plane` or `worker`.
    pub const ROLE: &str = "cks.io/role";
    /// Hash of the cluster template a PracticeCluster was built from; drives rollouts.
    pub const TEMPLATE_HASH: &str = "cks.io/template-hash";
    /// Name of the VM (KubeVirt VirtualMachine) an object belongs to.
    pub const VM: &str = "cks.io/vm";
}

/// Annotations read or written by cks-lab.
pub mod annotations {
    /// Set (any value) on a PracticeCluster to have it reset as soon as it is not assigned.
    pub const RESET_REQUESTED: &str = "cks.io/reset-requested";
    /// Set on a Session by an administrator to release its cluster at once, whatever the
    /// Session's phase; the Session ends.
    pub const FORCE_RELEASE: &str = "cks.io/force-release";
    /// The user a Session belongs to, copied for display where labels cannot carry it.
    pub const USER: &str = "cks.io/user";
    /// Written on a Session by a pool's allocator, guarded by the Session's resourceVersion,
    /// before it claims a cluster for it: `{allocator} {RFC 3339 time}`. Another allocator
    /// leaves a Session with a recent intent alone, so two operators never claim two clusters
    /// for one Session. Kept afterwards as a record of the last claim.
    pub const CLAIM_INTENT: &str = "cks.io/claim-intent";
}

/// Finalizers, each guarding cleanup that owner-reference garbage collection cannot do.
pub mod finalizers {
    /// On a PracticeCluster: its namespace, VMs, disks and snapshots are removed first.
    pub const CLUSTER_CLEANUP: &str = "cks.io/cluster-cleanup";
    /// On a Session: its cluster is released (and reset) before the Session goes away.
    pub const SESSION_RELEASE: &str = "cks.io/session-release";
}

/// Condition types used in the status of the four kinds.
pub mod condition_types {
    /// ClusterPool: the warm buffer is met. PracticeCluster: it can serve a session.
    /// Session: the scenario is set up and the student can work.
    pub const READY: &str = "Ready";
    /// ClusterPool: some clusters failed or cannot be created.
    pub const DEGRADED: &str = "Degraded";
    /// ClusterPool: the ResourceQuota of each cluster namespace holds what a cluster needs,
    /// its reset included.
    pub const QUOTA_SUFFICIENT: &str = "QuotaSufficient";
    /// PracticeCluster: baseline snapshots exist and are ready to restore.
    pub const SNAPSHOTS_READY: &str = "SnapshotsReady";
    /// PracticeCluster: its practice API answered the last readiness check (Available and
    /// Assigned clusters are checked periodically).
    pub const API_REACHABLE: &str = "ApiReachable";
    /// Session: a PracticeCluster is claimed for it.
    pub const CLUSTER_ASSIGNED: &str = "ClusterAssigned";
    /// Session: the scenario's setup steps have run successfully.
    pub const SCENARIO_READY: &str = "ScenarioReady";
    /// ValidationRun: the run has finished (whatever its verdict).
    pub const COMPLETE: &str = "Complete";
}
