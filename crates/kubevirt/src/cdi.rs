//! `cdi.kubevirt.io/v1beta1` DataVolume: a PVC populated by CDI, here a clone of the golden
//! image PVC. Used standalone or as a VirtualMachine's `dataVolumeTemplates` entry.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, condition_is_true};

/// Desired state of a DataVolume.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cdi.kubevirt.io",
    version = "v1beta1",
    kind = "DataVolume",
    plural = "datavolumes",
    namespaced,
    status = "DataVolumeStatus",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSpec {
    /// Where the data comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSource>,
    /// A DataSource to clone from instead of `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<DataVolumeSourceRef>,
    /// The PVC to create; CDI fills in access and volume modes from the StorageProfile and can
    /// infer a clone's size. Preferred over the raw `pvc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
}

/// `spec.source`; exactly one member is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DataVolumeSource {
    /// Clone an existing PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<DataVolumeSourcePvc>,
}

/// `spec.source.pvc`: the PVC to clone. `namespace` is required by CDI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DataVolumeSourcePvc {
    /// Namespace of the source PVC.
    pub namespace: String,
    /// Name of the source PVC.
    pub name: String,
}

/// `spec.sourceRef`: a DataSource to clone from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DataVolumeSourceRef {
    /// `DataSource`.
    pub kind: String,
    /// Namespace of the DataSource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the DataSource.
    pub name: String,
}

/// `spec.storage`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// StorageClass of the PVC; unset uses the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes; unset lets CDI pick them from the StorageProfile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// `Filesystem` or `Block`; unset lets CDI pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// Size of the PVC (`requests.storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<StorageResources>,
}

/// `spec.storage.resources`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StorageResources {
    /// `storage`: the PVC size.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

/// Observed state of a DataVolume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DataVolumePhase>,
    /// Progress of the import or clone, such as `45.20%` (or `N/A`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// How often the populating pod restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
    /// Name of the PVC (the DataVolume's own name unless adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// `Ready`, `Bound`, `Running`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl DataVolumeStatus {
    /// The progress as a percentage, when CDI reports one.
    pub fn progress_percent(&self) -> Option<f64> {
        self.progress
            .as_deref()?
            .trim()
            .strip_suffix('%')?
            .trim()
            .parse()
            .ok()
    }

    /// True when the data is in place: phase `Succeeded` (or the `Ready` condition is true).
    pub fn is_ready(&self) -> bool {
        self.phase == Some(DataVolumePhase::Succeeded) || condition_is_true(&self.conditions, "Ready")
    }
}

/// `status.phase` of a DataVolume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataVolumePhase {
    /// Nothing started yet.
    Pending,
    /// The PVC is bound.
    #[serde(rename = "PVCBound")]
    PvcBound,
    /// An import pod is being scheduled.
    ImportScheduled,
    /// Importing.
    ImportInProgress,
    /// A clone is being scheduled.
    CloneScheduled,
    /// Host-assisted cloning.
    CloneInProgress,
    /// Taking the VolumeSnapshot of a smart clone.
    SnapshotForSmartCloneInProgress,
    /// A CSI clone is in progress.
    #[serde(rename = "CSICloneInProgress")]
    CsiCloneInProgress,
    /// The StorageClass binds on first consumer; the VM's pod is that consumer.
    WaitForFirstConsumer,
    /// Waiting for a volume populator.
    PendingPopulation,
    /// Paused (for example a multi-stage import).
    Paused,
    /// Done: the PVC holds the data.
    Succeeded,
    /// Failed.
    Failed,
    /// CDI cannot tell.
    Unknown,
    /// A phase this crate does not know (newer CDI).
    #[serde(other)]
    Unrecognized,
}

impl DataVolumePhase {
    /// True once the DataVolume's work is over, successfully or not.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}
