//! `ClusterPool`: a GitOps-managed definition of a warm pool of practice clusters.
//!
//! The pool controller keeps `minAvailable` clusters Available (or on their way), never more
//! than `maxClusters` in all, and builds every cluster from `template`.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DNS1123_SUBDOMAIN, LocalObjectReference, NamespacedObjectReference};
use crate::quantity;

/// Desired state of a pool of practice clusters.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cks.io",
    version = "v1alpha1",
    kind = "ClusterPool",
    plural = "clusterpools",
    singular = "clusterpool",
    shortname = "cpool",
    category = "cks",
    namespaced,
    status = "ClusterPoolStatus",
    derive = "PartialEq",
    doc = "A warm pool of practice Kubernetes clusters built from KubeVirt VMs.",
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minAvailable", description = "Warm buffer of Available clusters"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxClusters", description = "Hard cap on clusters"),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.total"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.available"),
    printcolumn(name = "Assigned", type_ = "integer", json_path = ".status.assigned"),
    printcolumn(name = "Provisioning", type_ = "integer", json_path = ".status.provisioning", priority = 1),
    printcolumn(name = "Resetting", type_ = "integer", json_path = ".status.resetting", priority = 1),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Cluster namespaces are named `<pool>-<5 chars>`, which must stay a DNS-1123 label.
    validation = Rule::new("self.metadata.name.size() <= 40").message("ClusterPool names are at most 40 characters: cluster namespaces are named after the pool"),
    // Cluster names are DNS-1123 labels and name each control plane's Service (a DNS-1035
    // label), so the pool's name must be one that starts with a letter.
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("ClusterPool names must be DNS-1035 labels (lower case letters, digits and '-', starting with a letter): they name each cluster's namespace and control-plane Service"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minAvailable <= self.maxClusters").message("minAvailable must not exceed maxClusters"),
    validation = Rule::new("self.maxConcurrentProvisioning <= self.maxClusters").message("maxConcurrentProvisioning must not exceed maxClusters"),
    validation = Rule::new("self.keepFailed < self.maxClusters").message("keepFailed must be less than maxClusters, or failed clusters could take every slot"),
)]
pub struct ClusterPoolSpec {
    /// Warm buffer: how many unassigned clusters to keep Available or on their way to
    /// Available. Sessions beyond the buffer wait while new clusters are built.
    #[serde(default = "default_min_available")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_available: i32,

    /// Hard cap on the number of clusters in the pool, assigned and failed ones included.
    #[schemars(range(min = 1, max = 1000))]
    pub max_clusters: i32,

    /// How many clusters may be provisioning (cloning disks, booting, snapshotting) at once.
    /// Bounds the load a scale-up puts on storage and the KubeVirt control plane.
    #[serde(default = "default_max_concurrent_provisioning")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_provisioning: i32,

    /// How many Failed clusters to keep for inspection instead of deleting them. Kept
    /// clusters count towards `maxClusters`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub keep_failed: i32,

    /// The VMs and Kubernetes setup every cluster of the pool is built from. Changing it rolls
    /// unassigned clusters to the new template; assigned clusters are left alone.
    pub template: ClusterTemplate,

    /// Timeouts and retries while a new cluster is built.
    #[serde(default)]
    pub provisioning: ProvisioningPolicy,

    /// How a cluster is returned to its baseline after a session.
    #[serde(default)]
    pub reset: ResetPolicy,

    /// When a cluster is retired and replaced by a fresh one instead of being reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recycle: Option<RecyclePolicy>,

    /// How a changed template reaches existing clusters.
    #[serde(default)]
    pub rollout: RolloutPolicy,

    /// Network and resource isolation of each cluster's namespace.
    #[serde(default)]
    pub isolation: IsolationPolicy,

    /// Session lengths the pool allows.
    #[serde(default)]
    pub sessions: SessionPolicy,
}

fn default_min_available() -> i32 {
    1
}

fn default_max_concurrent_provisioning() -> i32 {
    2
}

/// What one practice cluster is built from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTemplate {
    /// Kubernetes version installed by the golden image, `MAJOR.MINOR` or `MAJOR.MINOR.PATCH`
    /// (for example `1.33.0`), 1.22 or later (the kubeadm configuration the operator writes
    /// needs v1beta3). Scenarios state the version they need.
    #[schemars(regex(pattern = KUBERNETES_VERSION))]
    pub kubernetes_version: String,

    /// The control-plane VM.
    pub control_plane: VmShape,

    /// The worker VMs.
    pub workers: WorkerShape,

    /// PVC holding the golden disk image (Ubuntu with kubeadm, kubelet and containerd
    /// installed) that every VM disk is cloned from.
    pub golden_image: NamespacedObjectReference,

    /// StorageClass of the cloned VM disks. Unset uses the cluster default; it must support
    /// CSI snapshots for the `Snapshot` reset strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub storage_class_name: Option<String>,

    /// Pod network CIDR of the practice cluster (`kubeadm init --pod-network-cidr`).
    #[serde(default = "default_pod_cidr")]
    #[schemars(regex(pattern = CIDR_V4))]
    pub pod_cidr: String,

    /// Service network CIDR of the practice cluster (`kubeadm init --service-cidr`).
    #[serde(default = "default_service_cidr")]
    #[schemars(regex(pattern = CIDR_V4))]
    pub service_cidr: String,

    /// Secret holding the SSH key pair used to reach the VMs (keys `ssh-privatekey` and
    /// `ssh-publickey`). The public key is installed through cloud-init.
    pub ssh_key_secret_ref: LocalObjectReference,

    /// Login user created on every VM; students and validation rules use it.
    #[serde(default = "default_ssh_user")]
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_-]{0,31}$"))]
    pub ssh_user: String,

    /// Extra cloud-config (YAML) merged into every VM's generated cloud-init, for site
    /// specifics such as a registry mirror. It must not run `kubeadm` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub extra_cloud_init: Option<String>,
}

/// An IPv4 network in CIDR notation, each octet 0-255.
const CIDR_V4: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$";

/// `1.MINOR[.PATCH]` with MINOR 22 or later: what `cks_kubevirt::kubeadm::KubernetesVersion`
/// builds (kubeadm configuration v1beta3 or v1beta4).
const KUBERNETES_VERSION: &str = r"^1\.(2[2-9]|[3-9][0-9]|[1-9][0-9][0-9])(\.[0-9]{1,9})?$";

fn default_pod_cidr() -> String {
    "10.244.0.0/16".to_owned()
}

fn default_service_cidr() -> String {
    "10.96.0.0/12".to_owned()
}

fn default_ssh_user() -> String {
    "ubuntu".to_owned()
}

/// Size of one VM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmShape {
    /// Virtual CPU cores.
    #[schemars(range(min = 1, max = 64))]
    pub cpu: i32,
    /// Memory, as a Kubernetes quantity (for example `4Gi`).
    #[schemars(schema_with = "quantity::positive_quantity")]
    pub memory: Quantity,
    /// Size of the root disk cloned from the golden image; at least the image's size.
    #[schemars(schema_with = "quantity::positive_quantity")]
    pub disk_size: Quantity,
}

/// Number and size of the worker VMs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerShape {
    /// Number of worker VMs; scenarios state how many they need.
    #[serde(default = "default_worker_count")]
    #[schemars(range(min = 0, max = 10))]
    pub count: i32,
    /// Virtual CPU cores of each worker.
    #[schemars(range(min = 1, max = 64))]
    pub cpu: i32,
    /// Memory of each worker, as a Kubernetes quantity.
    #[schemars(schema_with = "quantity::positive_quantity")]
    pub memory: Quantity,
    /// Root disk size of each worker.
    #[schemars(schema_with = "quantity::positive_quantity")]
    pub disk_size: Quantity,
}

fn default_worker_count() -> i32 {
    1
}

/// Timeouts and retries while building a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningPolicy {
    /// Deadline for one attempt to take a new cluster from Pending to Available (disk clones,
    /// boot, kubeadm, snapshots), in seconds.
    #[serde(default = "default_provision_timeout")]
    #[schemars(range(min = 60, max = 86400))]
    pub timeout_seconds: i32,
    /// Attempts of a failing step, with exponential backoff, before the cluster is Failed.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: i32,
}

impl Default for ProvisioningPolicy {
    fn default() -> Self {
        Self {
            timeout_seconds: default_provision_timeout(),
            max_retries: default_max_retries(),
        }
    }
}

fn default_provision_timeout() -> i32 {
    1800
}

fn default_max_retries() -> i32 {
    3
}

/// How a released cluster returns to its baseline.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ResetStrategy {
    /// Restore every VM from its baseline VirtualMachineSnapshot (minutes).
    #[default]
    Snapshot,
    /// Delete the cluster and build a fresh one from the golden image (slower; for storage
    /// without snapshot support).
    Recreate,
}

/// Reset behaviour after a session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetPolicy {
    /// `Snapshot` restores baseline snapshots; `Recreate` rebuilds the cluster.
    #[serde(default)]
    pub strategy: ResetStrategy,
    /// Deadline for one reset attempt (stop, restore, start, ready), in seconds.
    #[serde(default = "default_reset_timeout")]
    #[schemars(range(min = 60, max = 86400))]
    pub timeout_seconds: i32,
    /// Attempts of a failing reset step, with exponential backoff, before the cluster is
    /// Failed and replaced.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub max_retries: i32,
}

impl Default for ResetPolicy {
    fn default() -> Self {
        Self {
            strategy: ResetStrategy::default(),
            timeout_seconds: default_reset_timeout(),
            max_retries: default_max_retries(),
        }
    }
}

fn default_reset_timeout() -> i32 {
    900
}

/// When clusters are retired instead of reset. Unset fields never trigger.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecyclePolicy {
    /// Retire a cluster after it has served this many sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub after_sessions: Option<i32>,
    /// Retire a cluster once it is this old (minutes since creation), at its next release;
    /// an idle cluster is retired at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub max_age_minutes: Option<i32>,
}

/// How clusters built from an older template are replaced.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    /// Replace idle outdated clusters right away, building the replacement first and at most
    /// `maxConcurrentProvisioning` at a time; assigned clusters are replaced once released.
    #[default]
    Rolling,
    /// Replace outdated clusters only when they are released or recycled.
    OnRelease,
}

/// Rollout of template changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// `Rolling` replaces idle outdated clusters now; `OnRelease` waits for their next release.
    #[serde(default)]
    pub strategy: RolloutStrategy,
}

/// Isolation of each practice cluster's namespace on the host cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsolationPolicy {
    /// Create NetworkPolicies that deny all traffic of the cluster's VMs except DNS, traffic
    /// between its own VMs, the operator and gateway, and `egress`.
    #[serde(default = "default_true")]
    pub network_policy: bool,
    /// Egress destinations the VMs may reach besides DNS (for example container registries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress: Vec<EgressRule>,
    /// Limits of the ResourceQuota created in the cluster's namespace. Unset creates none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_quota: Option<ResourceQuotaLimits>,
}

impl Default for IsolationPolicy {
    fn default() -> Self {
        Self {
            network_policy: true,
            egress: Vec::new(),
            resource_quota: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// An allowed egress destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
// What the NetworkPolicy API requires of an ipBlock's `except`.
#[x_kube(validation = Rule::new("!has(self.except) || self.except.all(e, cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength())").message("every except network must lie strictly inside cidr"))]
pub struct EgressRule {
    /// Destination network, in CIDR notation.
    #[schemars(regex(pattern = CIDR_V4))]
    pub cidr: String,
    /// Networks inside `cidr` that stay blocked (for example the host cluster's own ranges,
    /// link-local `169.254.0.0/16` with cloud metadata services, and `100.64.0.0/10`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = CIDR_V4)))]
    pub except: Vec<String>,
    /// TCP ports allowed; empty allows every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortNumber>,
}

/// A TCP port number.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct PortNumber(#[schemars(range(min = 1, max = 65535))] pub i32);

/// Hard limits for a cluster namespace's ResourceQuota.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceQuotaLimits {
    /// Total CPU requests (`requests.cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::optional_positive_quantity")]
    pub cpu: Option<Quantity>,
    /// Total memory requests (`requests.memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::optional_positive_quantity")]
    pub memory: Option<Quantity>,
    /// Total storage requested by PVCs (`requests.storage`). A Snapshot reset holds every
    /// VM's disk and its restored copy at once, so it needs twice the disks of a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity::optional_positive_quantity")]
    pub storage: Option<Quantity>,
    /// Maximum number of pods (`pods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pods: Option<i32>,
}

/// Session lengths allowed on the pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.defaultDurationMinutes <= self.maxDurationMinutes").message("defaultDurationMinutes must not exceed maxDurationMinutes"))]
pub struct SessionPolicy {
    /// Length of a session that does not ask for one, in minutes.
    #[serde(default = "default_session_minutes")]
    #[schemars(range(min = 5, max = 1440))]
    pub default_duration_minutes: i32,
    /// Longest a session may run, extensions included, in minutes; a Session asking for more
    /// is capped.
    #[serde(default = "default_max_session_minutes")]
    #[schemars(range(min = 5, max = 1440))]
    pub max_duration_minutes: i32,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            default_duration_minutes: default_session_minutes(),
            max_duration_minutes: default_max_session_minutes(),
        }
    }
}

fn default_session_minutes() -> i32 {
    60
}

fn default_max_session_minutes() -> i32 {
    240
}

/// Observed state of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPoolStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// All clusters of the pool, whatever their phase.
    #[serde(default)]
    pub total: i32,
    /// Clusters being built: Pending, Provisioning, Bootstrapping or Snapshotting.
    #[serde(default)]
    pub provisioning: i32,
    /// Clusters ready to be claimed.
    #[serde(default)]
    pub available: i32,
    /// Clusters claimed by a Session.
    #[serde(default)]
    pub assigned: i32,
    /// Clusters being restored to their baseline.
    #[serde(default)]
    pub resetting: i32,
    /// Clusters that failed (kept for inspection or about to be replaced).
    #[serde(default)]
    pub failed: i32,
    /// Clusters built from the current template.
    #[serde(default)]
    pub updated: i32,
    /// Hash of the current template; clusters labelled with another hash are outdated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// When the pool last created or deleted a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// What the last scale event was, for example `created cluster intro-x7k2p (buffer 1/2)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_event: Option<String>,
    /// Clusters built from the current template that failed since one last became
    /// Available. Each one doubles the wait before the pool creates another cluster.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// When the pool last saw one of its clusters fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// `failureReason` of the cluster that failed last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// `failureMessage` of the cluster that failed last, with its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_message: Option<String>,
    /// While clusters keep failing, the pool creates none before this time (exponential
    /// backoff, capped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_create_time: Option<Time>,
    /// Failed clusters already counted in `consecutiveFailures`, so that each is counted once
    /// however often the pool reconciles; a name leaves the list once its cluster is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted_failures: Vec<String>,
    /// `Ready` (warm buffer met), `Degraded` (clusters failing, the template unbuildable or
    /// the cap reached) and `QuotaSufficient` (the ResourceQuota holds a cluster's reset).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
