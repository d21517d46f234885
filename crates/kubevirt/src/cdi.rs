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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_volume_status_parses_phase_progress_and_conditions() {
        let dv: DataVolume = serde_json::from_value(json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "c1-cp-root", "namespace": "c1",
                         "annotations": {"cdi.kubevirt.io/storage.usePopulator": "true"}},
            "spec": {"source": {"pvc": {"namespace": "golden", "name": "img"}},
                     "storage": {"storageClassName": "longhorn", "accessModes": ["ReadWriteOnce"],
                                 "resources": {"requests": {"storage": "20Gi"}}}},
            "status": {
                "phase": "CloneInProgress",
                "progress": "45.20%",
                "restartCount": 0,
                "claimName": "c1-cp-root",
                "conditions": [
                    {"type": "Bound", "status": "True", "reason": "Bound", "message": "PVC c1-cp-root Bound",
                     "lastHeartbeatTime": "2026-11-21T10:00:00Z", "lastTransitionTime": "2026-11-21T10:00:00Z"},
                    {"type": "Ready", "status": "False", "lastHeartbeatTime": "2026-11-21T10:00:00Z",
                     "lastTransitionTime": "2026-11-21T10:00:00Z"},
                    {"type": "Running", "status": "True", "reason": "Populator is running"}
                ]
            }
        }))
        .unwrap();
        assert_eq!(dv.spec.source.unwrap().pvc.unwrap().namespace, "golden");
        assert_eq!(dv.spec.storage.unwrap().access_modes, ["ReadWriteOnce"]);
        let status = dv.status.unwrap();
        assert_eq!(status.phase, Some(DataVolumePhase::CloneInProgress));
        assert_eq!(status.progress_percent(), Some(45.2));
        assert!(!status.is_ready());
        assert!(!status.phase.unwrap().is_terminal());
    }

    #[test]
    fn data_volume_phases_use_cdi_spellings() {
        for (text, phase) in [
            ("PVCBound", DataVolumePhase::PvcBound),
            ("CSICloneInProgress", DataVolumePhase::CsiCloneInProgress),
            ("WaitForFirstConsumer", DataVolumePhase::WaitForFirstConsumer),
            ("Succeeded", DataVolumePhase::Succeeded),
            ("BrandNewPhase", DataVolumePhase::Unrecognized),
        ] {
            let status: DataVolumeStatus =
                serde_json::from_value(json!({"phase": text, "progress": "N/A"})).unwrap();
            assert_eq!(status.phase, Some(phase), "{text}");
            assert_eq!(status.progress_percent(), None);
        }
        let done: DataVolumeStatus =
            serde_json::from_value(json!({"phase": "Succeeded", "progress": "100.0%"})).unwrap();
        assert!(done.is_ready() && done.phase.unwrap().is_terminal());
        assert_eq!(
            serde_json::to_value(DataVolumePhase::PvcBound).unwrap(),
            "PVCBound"
        );
    }
}
