//! `PracticeCluster`: one practice Kubernetes cluster (a control-plane VM and workers), created
//! and owned by its ClusterPool and claimed by at most one Session at a time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cluster_pool::{ClusterTemplate, IsolationPolicy, ProvisioningPolicy, ResetPolicy};
use crate::common::{DNS1123_LABEL, DNS1123_SUBDOMAIN};

/// Desired state of one practice cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cks.io",
    version = "v1alpha1",
    kind = "PracticeCluster",
    plural = "practiceclusters",
    singular = "practicecluster",
    shortname = "pcluster",
    category = "cks",
    namespaced,
    status = "PracticeClusterStatus",
    derive = "PartialEq",
    doc = "One practice Kubernetes cluster made of KubeVirt VMs, owned by a ClusterPool.",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Session", type_ = "string", json_path = ".spec.claimRef.name"),
    printcolumn(name = "Served", type_ = "integer", json_path = ".status.sessionsServed", description = "Sessions served since creation"),
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace", priority = 1, description = "Namespace holding the cluster's VMs"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.failureReason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The name becomes the cluster's namespace name, so it must be a DNS-1123 label.
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("PracticeCluster names must be DNS-1123 labels (they name the cluster's namespace)"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.template == oldSelf.template").message("template is immutable: the pool replaces clusters instead of changing them"),
    // Name and uid: a Session recreated under the same name is another Session.
    validation = Rule::new("!has(oldSelf.claimRef) || !has(self.claimRef) || (self.claimRef.name == oldSelf.claimRef.name && (has(self.claimRef.uid) ? (has(oldSelf.claimRef.uid) && self.claimRef.uid == oldSelf.claimRef.uid) : !has(oldSelf.claimRef.uid)))").message("claimRef cannot move from one Session to another (name or uid); release it first"),
)]
pub struct PracticeClusterSpec {
    /// Name of the ClusterPool (same namespace) this cluster belongs to.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub pool: String,

    /// Copy of the pool's template at creation time, so later pool edits do not change a
    /// running cluster. Immutable.
    pub template: ClusterTemplate,

    /// Hash of `template`, used to find clusters built from an outdated template.
    #[schemars(length(min = 1, max = 63))]
    pub template_hash: String,

    /// Copy of the pool's provisioning timeouts and retries.
    #[serde(default)]
    pub provisioning: ProvisioningPolicy,

    /// Copy of the pool's reset policy.
    #[serde(default)]
    pub reset: ResetPolicy,

    /// Copy of the pool's isolation settings for the cluster's namespace.
    #[serde(default)]
    pub isolation: IsolationPolicy,

    /// The Session holding this cluster. Written by the session controller guarded by the
    /// cluster's resourceVersion, so two Sessions can never share a cluster; cleared on release,
    /// which starts a reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ClaimRef>,
}

/// Reference to the Session that claimed a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRef {
    /// Name of the Session (same namespace).
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,
    /// UID of the Session, so a recreated Session of the same name is not mistaken for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A claim as the cluster controller observed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedClaim {
    /// Name of the claiming Session.
    pub name: String,
    /// UID of the claiming Session, when the claim names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// When the controller first saw this claim.
    pub since: Time,
}

impl ObservedClaim {
    /// True when this records `claim` (same name and uid).
    pub fn is_of(&self, claim: &ClaimRef) -> bool {
        self.name == claim.name && self.uid == claim.uid
    }
}

/// Lifecycle phase of a practice cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PracticeClusterPhase {
    /// Accepted; nothing created yet.
    #[default]
    Pending,
    /// Namespace, secrets, disk clones and VMs are being created.
    Provisioning,
    /// VMs are booting and running kubeadm; waiting for the API and all Nodes to be Ready.
    Bootstrapping,
    /// Taking the baseline VM snapshots.
    Snapshotting,
    /// Ready to be claimed by a Session.
    Available,
    /// Claimed by the Session in `spec.claimRef`.
    Assigned,
    /// Being restored to its baseline after a session.
    Resetting,
    /// Gave up after retries; see `failureReason` and `failureMessage`.
    Failed,
}

impl PracticeClusterPhase {
    /// True for the phases that lead to Available without a session (counted as "on their
    /// way" by the pool's warm buffer).
    pub fn is_provisioning(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Provisioning | Self::Bootstrapping | Self::Snapshotting
        )
    }
}

/// Role of a VM in its cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VmRole {
    /// Runs the Kubernetes control plane (`kubeadm init`).
    ControlPlane,
    /// Joins as a worker (`kubeadm join`).
    Worker,
}

/// Observed state of one VM of the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    /// Name of the KubeVirt VirtualMachine.
    #[schemars(regex(pattern = DNS1123_SUBDOMAIN))]
    pub name: String,
    /// Role of the VM.
    pub role: VmRole,
    /// Validation and terminal target name of this VM: `control-plane`, `worker-1`, ...
    pub target: String,
    /// IP address of the VM's pod-network interface, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Whether the VM is running and ready.
    #[serde(default)]
    pub ready: bool,
    /// Name of the baseline VirtualMachineSnapshot of this VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Whether the baseline snapshot is ready to restore from.
    #[serde(default)]
    pub snapshot_ready: bool,
}

/// Observed state of a practice cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PracticeClusterStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current lifecycle phase.
    #[serde(default)]
    pub phase: PracticeClusterPhase,
    /// When the current phase began; phase timeouts count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// Failed attempts of the current step; reset when the step succeeds.
    #[serde(default)]
    pub attempts: i32,
    /// Namespace on the host cluster holding this cluster's VMs, disks and snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The cluster's VMs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmStatus>,
    /// Secret (in `namespace`) holding the admin kubeconfig of the practice cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_kubeconfig_secret: Option<String>,
    /// URL of the practice cluster's API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// The claim in `spec.claimRef` and when this controller first saw it. A claim whose
    /// Session (name and uid) no longer exists is released once this is older than the
    /// operator's orphaned-claim grace; the time lives here so a restart does not reset it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ObservedClaim>,
    /// Sessions this cluster has served: claims released, counted at release (an
    /// administrator's reset request is not a session).
    #[serde(default)]
    pub sessions_served: i32,
    /// Resets started since creation, after sessions and on request; numbers each reset's
    /// VirtualMachineRestores.
    #[serde(default)]
    pub resets: i32,
    /// When the cluster first became Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_since: Option<Time>,
    /// Seconds from creation to first Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_duration_seconds: Option<f64>,
    /// When the last reset finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset_time: Option<Time>,
    /// Seconds the last reset took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset_duration_seconds: Option<f64>,
    /// Short machine-readable reason of the failure, when Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// What failed, for humans, when Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// `Ready`, `SnapshotsReady` and `ApiReachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
