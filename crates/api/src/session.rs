//! `Session`: a student's use of one practice cluster for one scenario.
//!
//! Creating a Session is all a frontend (or `kubectl apply`) does to start practising; the
//! session controller claims a cluster, runs the scenario's setup and expires the session.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::DNS1123_LABEL;

/// Desired state of a practice session.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cks.io",
    version = "v1alpha1",
    kind = "Session",
    plural = "sessions",
    singular = "session",
    shortname = "sess",
    category = "cks",
    namespaced,
    status = "SessionStatus",
    derive = "PartialEq",
    doc = "A student's use of one practice cluster for one scenario.",
    printcolumn(name = "Scenario", type_ = "string", json_path = ".spec.scenario"),
    printcolumn(name = "User", type_ = "string", json_path = ".spec.user"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".status.cluster"),
    printcolumn(name = "Queue", type_ = "integer", json_path = ".status.queuePosition", priority = 1, description = "Position in the queue while waiting for a cluster"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Session names end up in label values and terminal ids.
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("Session names must be DNS-1123 labels (they are used in labels and terminal ids)"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.scenario == oldSelf.scenario").message("scenario is immutable; start a new Session for another scenario"),
    validation = Rule::new("self.user == oldSelf.user").message("user is immutable"),
    validation = Rule::new("self.pool == oldSelf.pool").message("pool is immutable"),
    validation = Rule::new("self.durationMinutes >= oldSelf.durationMinutes").message("durationMinutes can only be raised (to extend a session); delete the Session to end it early"),
)]
pub struct SessionSpec {
    /// Id of the scenario to practise (a directory of the scenario catalog).
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub scenario: String,

    /// The student this session belongs to, as the identity provider names them. At most
    /// the configured number of active sessions per user is allowed; users are compared with
    /// surrounding whitespace trimmed and case ignored.
    #[schemars(length(min = 1, max = 253))]
    pub user: String,

    /// Name of the ClusterPool (same namespace) to take a cluster from.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub pool: String,

    /// Length of the session in minutes, counted from when a cluster is assigned. Raise it to
    /// extend the session; the pool's `sessions.maxDurationMinutes` caps it.
    #[serde(default = "default_duration_minutes")]
    #[schemars(range(min = 5, max = 1440))]
    pub duration_minutes: i32,
}

fn default_duration_minutes() -> i32 {
    60
}

/// The identity `user` stands for: surrounding whitespace dropped and lowercased, so
/// `Alice@Example.com` and ` alice@example.com ` are one user (identity providers differ in
/// case, and hand-written Sessions in whitespace). The per-user limit compares these.
pub fn user_key(user: &str) -> String {
    user.trim().to_lowercase()
}

/// Lifecycle phase of a session.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SessionPhase {
    /// Accepted; not yet checked.
    #[default]
    Pending,
    /// Queued until a cluster of the pool becomes Available; see `queuePosition`.
    WaitingForCluster,
    /// A cluster is assigned and the scenario's setup steps are running; terminals already work.
    Initializing,
    /// Setup done; the student works on the tasks.
    Ready,
    /// The session ran out of time; its cluster was released.
    Expired,
    /// The session was ended (deleted or force-released); its cluster was released.
    Ended,
    /// The session could not start; see `reason` and `message`.
    Failed,
}

impl SessionPhase {
    /// True for phases after which the session never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Expired | Self::Ended | Self::Failed)
    }

    /// True while the session counts against its user's limit of active sessions.
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

/// Progress of one task of the scenario.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TaskState {
    /// Not validated yet.
    #[default]
    Pending,
    /// The last validation passed.
    Passed,
    /// The last validation failed.
    Failed,
}

/// Validation status of one task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Task id from the scenario (for example `01`).
    pub id: String,
    /// Result of the most recent validation.
    #[serde(default)]
    pub state: TaskState,
    /// Number of validations run for this task.
    #[serde(default)]
    pub attempts: i32,
    /// Name of the most recent ValidationRun for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When the most recent validation finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
}

/// A terminal the student can open on one VM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TerminalStatus {
    /// VM target: `control-plane`, `worker-1`, ...
    pub target: String,
    /// Stable terminal id, `{session}-{target}`, so a frontend can reconnect.
    pub id: String,
    /// SSH host of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// SSH port of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// Observed state of a session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current lifecycle phase.
    #[serde(default)]
    pub phase: SessionPhase,
    /// Short machine-readable reason of the current phase, for example `ScenarioNotFound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Explanation of the current phase for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Position in the pool's queue (1 = next) while WaitingForCluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// Name of the PracticeCluster assigned to this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// When the cluster was assigned; the session's time counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the session expires: `startedAt` + `durationMinutes` (capped by the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the session ended, expired or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,
    /// Per-task validation status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskStatus>,
    /// Terminals of the assigned cluster's VMs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminals: Vec<TerminalStatus>,
    /// Progress of the scenario's setup steps, so a restarted operator resumes where it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<SetupProgress>,
    /// `ClusterAssigned`, `ScenarioReady` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Progress of the scenario's setup steps on the assigned cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetupProgress {
    /// Number of setup steps of the scenario.
    #[serde(default)]
    pub total: i32,
    /// Steps that succeeded, in order; a resumed setup starts after them.
    #[serde(default)]
    pub completed: i32,
    /// Id of the step running now, or of the step that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When the setup began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the setup finished (succeeded or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}
