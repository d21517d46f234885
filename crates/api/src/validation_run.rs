//! `ValidationRun`: one check of one task (or all tasks) of a session; owned by the Session and
//! immutable once finished.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::DNS1123_LABEL;

/// What to validate.
// Printer columns repeat `type_ = "..."`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cks.io",
    version = "v1alpha1",
    kind = "ValidationRun",
    plural = "validationruns",
    singular = "validationrun",
    shortname = "vrun",
    category = "cks",
    namespaced,
    status = "ValidationRunStatus",
    derive = "PartialEq",
    doc = "One automatic check of a session's task (or all tasks).",
    printcolumn(name = "Session", type_ = "string", json_path = ".spec.session"),
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.task"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Passed",
        type_ = "integer",
        json_path = ".status.passedRules",
        description = "Rules that passed"
    ),
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.totalRules",
        description = "Rules evaluated"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("ValidationRun spec is immutable; create a new run"))]
pub struct ValidationRunSpec {
    /// Name of the Session (same namespace) whose cluster is checked.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub session: String,

    /// Id of the task to check (for example `01`); empty checks every task of the scenario.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63), regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"))]
    pub task: String,
}

/// Lifecycle phase of a validation run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ValidationRunPhase {
    /// Accepted; not started.
    #[default]
    Pending,
    /// Rules are being evaluated.
    Running,
    /// Every rule passed.
    Passed,
    /// At least one rule failed; every rule could be evaluated.
    Failed,
    /// At least one rule could not be evaluated (for example the VM was unreachable); see
    /// `message`.
    Error,
}

impl ValidationRunPhase {
    /// True once the run has finished; its status never changes afterwards.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Passed | Self::Failed | Self::Error)
    }
}

/// Outcome of one validation rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleResult {
    /// Task the rule belongs to.
    pub task: String,
    /// Rule id from the scenario's validation file.
    pub id: String,
    /// Whether the rule passed.
    pub passed: bool,
    /// On failure, the scenario author's message; on error, what went wrong.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// What the rule expected, as shown to the student.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What was found (truncated VM output or property value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
    /// True when the rule could not be evaluated (as opposed to evaluated and failed).
    #[serde(default)]
    pub error: bool,
    /// How long the rule took, in milliseconds.
    #[serde(default)]
    pub duration_millis: i64,
}

/// Observed state of a validation run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidationRunStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current phase.
    #[serde(default)]
    pub phase: ValidationRunPhase,
    /// Why the run is in Error, or a summary of the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When evaluation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When evaluation finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Number of rules that passed.
    #[serde(default)]
    pub passed_rules: i32,
    /// Number of rules evaluated.
    #[serde(default)]
    pub total_rules: i32,
    /// One result per rule, in the order of the scenario's validation files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500))]
    pub results: Vec<RuleResult>,
    /// `Complete` once finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
