//! `snapshot.kubevirt.io/v1beta1` VirtualMachineSnapshot, VirtualMachineSnapshotContent and
//! VirtualMachineRestore: baseline snapshots of a practice cluster's VMs and their restores.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, TypedLocalObjectReference};

/// Desired state of a VirtualMachineSnapshot.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineSnapshot",
    plural = "virtualmachinesnapshots",
    namespaced,
    status = "VirtualMachineSnapshotStatus",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotSpec {
    /// The VM to snapshot (`apiGroup: kubevirt.io`, `kind: VirtualMachine`).
    pub source: TypedLocalObjectReference,
    /// What happens to the snapshot content when the snapshot is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<SnapshotDeletionPolicy>,
    /// How long the snapshot may take before it fails (a Go duration, default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_deadline: Option<String>,
}

/// `spec.deletionPolicy` of a VirtualMachineSnapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotDeletionPolicy {
    /// Delete the content (and volume snapshots) with the snapshot.
    Delete,
    /// Keep the content.
    Retain,
    /// A policy this crate does not know.
    #[serde(other)]
    Unrecognized,
}

/// Observed state of a VirtualMachineSnapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotStatus {
    /// UID of the VM the snapshot was taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_uid: Option<String>,
    /// Name of the VirtualMachineSnapshotContent holding the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_snapshot_content_name: Option<String>,
    /// When the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SnapshotPhase>,
    /// True once the snapshot can be restored from.
    #[serde(default)]
    pub ready_to_use: bool,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    /// `Ready`, `Progressing`, `Failure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How the snapshot was taken (`Online`, `GuestAgent`, `NoGuestAgent`, ...). Deprecated
    /// in favour of `sourceIndications`, still written by KubeVirt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indications: Vec<String>,
    /// How the snapshot was taken, with explanations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_indications: Vec<SourceIndication>,
}

impl VirtualMachineSnapshotStatus {
    /// True when the snapshot failed (phase `Failed`).
    pub fn is_failed(&self) -> bool {
        self.phase == Some(SnapshotPhase::Failed)
    }

    /// True when KubeVirt flags the snapshot as taken from a running VM without a guest
    /// agent (crash-consistent rather than filesystem-consistent).
    pub fn is_crash_consistent(&self) -> bool {
        self.indications.iter().any(|i| i == "NoGuestAgent")
            || self
                .source_indications
                .iter()
                .any(|i| i.indication == "NoGuestAgent")
    }
}

/// `status.phase` of a VirtualMachineSnapshot.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPhase {
    /// Being taken.
    InProgress,
    /// Done.
    Succeeded,
    /// Failed (for example past its failure deadline).
    Failed,
    /// KubeVirt cannot tell.
    Unknown,
    /// A phase this crate does not know.
    #[serde(other)]
    Unrecognized,
}

/// `status.error` of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SnapshotError {
    /// When the error happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One entry of `status.sourceIndications`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceIndication {
    /// `Online`, `GuestAgent`, `NoGuestAgent`, `Paused`, ...
    #[serde(default)]
    pub indication: String,
    /// Explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The data behind a VirtualMachineSnapshot, created by KubeVirt. Read only; the VM copy in
/// `source` is kept as raw JSON because cks-lab never looks inside it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineSnapshotContent",
    plural = "virtualmachinesnapshotcontents",
    namespaced,
    status = "VirtualMachineSnapshotContentStatus",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotContentSpec {
    /// Name of the VirtualMachineSnapshot this content belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_snapshot_name: Option<String>,
    /// Copy of the VM at snapshot time.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub source: serde_json::Value,
    /// One backup per snapshotted volume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_backups: Vec<VolumeBackup>,
}

/// One entry of `spec.volumeBackups` of a snapshot content.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackup {
    /// Name of the VM volume.
    #[serde(default)]
    pub volume_name: String,
    /// Name of the CSI VolumeSnapshot holding the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_name: Option<String>,
}

/// Observed state of a VirtualMachineSnapshotContent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotContentStatus {
    /// When the content was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// True once every volume snapshot is ready.
    #[serde(default)]
    pub ready_to_use: bool,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
}

/// Desired state of a VirtualMachineRestore. The spec is immutable, and only one incomplete
/// restore per target is allowed (a failed one counts): delete it before trying again.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineRestore",
    plural = "virtualmachinerestores",
    namespaced,
    status = "VirtualMachineRestoreStatus",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreSpec {
    /// The VM to restore (`apiGroup: kubevirt.io`, `kind: VirtualMachine`).
    pub target: TypedLocalObjectReference,
    /// The snapshot to restore from.
    pub virtual_machine_snapshot_name: String,
    /// What to do while the target VM still runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_readiness_policy: Option<TargetReadinessPolicy>,
    /// Whether restored PVCs get fresh names or replace the originals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_restore_policy: Option<VolumeRestorePolicy>,
}

/// `spec.targetReadinessPolicy` of a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetReadinessPolicy {
    /// Wait up to a grace period (5 minutes) for the VM to stop, then fail. The default.
    WaitGracePeriod,
    /// Stop the VM itself.
    StopTarget,
    /// Fail at once if the VM runs.
    FailImmediate,
    /// Wait for the VM to stop, however long.
    WaitEventually,
    /// A policy this crate does not know.
    #[serde(other)]
    Unrecognized,
}

/// `spec.volumeRestorePolicy` of a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeRestorePolicy {
    /// New PVCs named `restore-<restoreUID>-<volume>`. The default.
    RandomizeNames,
    /// Replace the original PVCs under their own names (KubeVirt v1.6+).
    InPlace,
    /// A policy this crate does not know.
    #[serde(other)]
    Unrecognized,
}

/// Observed state of a VirtualMachineRestore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreStatus {
    /// True once the VM has been restored.
    #[serde(default)]
    pub complete: bool,
    /// When the restore completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<Time>,
    /// The volumes restored, and the PVCs they went to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<VolumeRestore>,
    /// DataVolumes of the VM deleted by the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_data_volumes: Vec<String>,
    /// `Ready`, `Progressing`, `Failure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl VirtualMachineRestoreStatus {
    /// The `Failure` condition's message when the restore failed.
    pub fn failure(&self) -> Option<&str> {
        crate::common::find_condition(&self.conditions, "Failure")
            .filter(|c| c.is_true())
            .map(|c| c.message.as_deref().unwrap_or("restore failed"))
    }
}

/// One entry of `status.restores` of a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestore {
    /// Name of the VM volume.
    #[serde(default)]
    pub volume_name: String,
    /// PVC the volume was restored to.
    #[serde(default)]
    pub persistent_volume_claim: String,
    /// VolumeSnapshot restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_name: Option<String>,
    /// DataVolume created for the restored PVC, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_status_parses_readiness_error_and_indications() {
        let snap: VirtualMachineSnapshot = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "c1-cp-baseline", "namespace": "c1", "finalizers": ["snapshot.kubevirt.io/vmsnapshot-protection"]},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "c1-cp"},
                     "deletionPolicy": "Delete", "failureDeadline": "5m0s"},
            "status": {
                "sourceUID": "u1",
                "virtualMachineSnapshotContentName": "vmsnapshot-content-u2",
                "creationTime": "2026-11-21T10:00:00Z",
                "phase": "Succeeded",
                "readyToUse": true,
                "indications": ["Online", "NoGuestAgent"],
                "sourceIndications": [{"indication": "Online", "message": "online snapshot"},
                                      {"indication": "NoGuestAgent", "message": "no guest agent"}],
                "snapshotVolumes": {"includedVolumes": ["rootdisk"], "excludedVolumes": ["cloudinitdisk"]},
                "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "Operation complete", "lastProbeTime": null, "lastTransitionTime": "2026-11-21T10:00:05Z"},
                    {"type": "Ready", "status": "True", "reason": "Operation complete", "lastProbeTime": null, "lastTransitionTime": "2026-11-21T10:00:05Z"}
                ]
            }
        }))
        .unwrap();
        assert_eq!(
            snap.spec.source,
            TypedLocalObjectReference::virtual_machine("c1-cp")
        );
        assert_eq!(snap.spec.deletion_policy, Some(SnapshotDeletionPolicy::Delete));
        let status = snap.status.unwrap();
        assert!(status.ready_to_use && !status.is_failed());
        assert_eq!(status.phase, Some(SnapshotPhase::Succeeded));
        assert!(status.is_crash_consistent());

        let failed: VirtualMachineSnapshotStatus = serde_json::from_value(json!({
            "phase": "Failed", "readyToUse": false,
            "error": {"time": "2026-11-21T10:05:00Z", "message": "snapshot deadline exceeded"}
        }))
        .unwrap();
        assert!(failed.is_failed());
        assert_eq!(
            failed.error.unwrap().message.as_deref(),
            Some("snapshot deadline exceeded")
        );
    }

    #[test]
    fn restore_status_parses_completion_and_failure() {
        let restore: VirtualMachineRestore = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
            "metadata": {"name": "c1-cp-reset-1", "namespace": "c1", "uid": "r1"},
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "c1-cp"},
                     "virtualMachineSnapshotName": "c1-cp-baseline"},
            "status": {
                "complete": true,
                "restoreTime": "2026-11-21T11:00:00Z",
                "restores": [{"volumeName": "rootdisk", "persistentVolumeClaim": "restore-r1-rootdisk",
                              "volumeSnapshotName": "vmsnapshot-u2-volume-rootdisk", "dataVolumeName": "restore-r1-rootdisk"}],
                "deletedDataVolumes": ["c1-cp-root"],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Operation complete"}]
            }
        }))
        .unwrap();
        assert_eq!(restore.spec.target_readiness_policy, None);
        let status = restore.status.unwrap();
        assert!(status.complete);
        assert!(status.restore_time.is_some());
        assert_eq!(status.restores[0].persistent_volume_claim, "restore-r1-rootdisk");
        assert_eq!(status.deleted_data_volumes, ["c1-cp-root"]);
        assert_eq!(status.failure(), None);

        let failed: VirtualMachineRestoreStatus = serde_json::from_value(json!({
            "complete": false,
            "conditions": [{"type": "Failure", "status": "True", "message": "VM c1-cp is running"}]
        }))
        .unwrap();
        assert_eq!(failed.failure(), Some("VM c1-cp is running"));
        let fresh: VirtualMachineRestoreStatus = serde_json::from_value(json!({})).unwrap();
        assert!(!fresh.complete && fresh.failure().is_none());
    }

    #[test]
    fn snapshot_content_keeps_the_vm_copy_as_raw_json() {
        let content: VirtualMachineSnapshotContent = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent",
            "metadata": {"name": "vmsnapshot-content-u2"},
            "spec": {"virtualMachineSnapshotName": "c1-cp-baseline",
                     "source": {"virtualMachine": {"metadata": {"name": "c1-cp"}}},
                     "volumeBackups": [{"volumeName": "rootdisk", "volumeSnapshotName": "vs-1",
                                        "persistentVolumeClaim": {"metadata": {"name": "c1-cp-root"}}}]},
            "status": {"readyToUse": true, "volumeSnapshotStatus": [{"volumeSnapshotName": "vs-1", "readyToUse": true}]}
        }))
        .unwrap();
        assert_eq!(content.spec.source["virtualMachine"]["metadata"]["name"], "c1-cp");
        assert_eq!(
            content.spec.volume_backups[0].volume_snapshot_name.as_deref(),
            Some("vs-1")
        );
        assert!(content.status.unwrap().ready_to_use);
    }
}
