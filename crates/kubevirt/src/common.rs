//! Small types shared by the KubeVirt, CDI and snapshot resources: conditions and references.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// A status condition as KubeVirt and CDI write it. Unlike `meta/v1` `Condition`, every field
/// but `type` and `status` may be missing or `null` (KubeVirt writes `lastProbeTime: null`),
/// and CDI adds `lastHeartbeatTime`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, for example `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// When the condition was last probed (KubeVirt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// When the condition was last refreshed (CDI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
}

impl Condition {
    /// True when the condition's status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The condition of type `type_` in `conditions`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when `conditions` holds a condition `type_` with status `True`.
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(Condition::is_true)
}

/// Reference to an object by name in the same namespace, with its group and kind
/// (`core/v1` `TypedLocalObjectReference`), as snapshots and restores name their VM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TypedLocalObjectReference {
    /// API group of the referenced kind, `kubevirt.io` for a VirtualMachine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the referenced object.
    #[serde(default)]
    pub kind: String,
    /// Name of the referenced object.
    #[serde(default)]
    pub name: String,
}

impl TypedLocalObjectReference {
    /// A reference to the VirtualMachine `name`.
    pub fn virtual_machine(name: &str) -> Self {
        Self {
            api_group: Some("kubevirt.io".to_owned()),
            kind: "VirtualMachine".to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Reference to an object by name in the same namespace (`core/v1` `LocalObjectReference`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalObjectReference {
    /// Name of the referenced object.
    #[serde(default)]
    pub name: String,
}

/// An empty object (`{}`): KubeVirt selects options by the presence of a key, such as
/// `bridge: {}` on an interface or `pod: {}` on a network.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Empty {}
