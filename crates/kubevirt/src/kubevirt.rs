//! `kubevirt.io/v1` VirtualMachine and VirtualMachineInstance, with the fields cks-lab writes
//! and reads. Fields we do not model are dropped on deserialization, so change these objects
//! with patches (merge or server-side apply), never with a read-modify-`PUT`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::cdi::DataVolumeSpec;
use crate::common::{Condition, Empty, LocalObjectReference, condition_is_true};

/// Desired state of a VirtualMachine.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    plural = "virtualmachines",
    namespaced,
    status = "VirtualMachineStatus",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    /// When the VM should run. Replaces the deprecated `running`; setting both is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
    /// Deprecated since KubeVirt v1.4; read only so older objects still parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// The VirtualMachineInstance created when the VM runs.
    #[serde(default)]
    pub template: VirtualMachineInstanceTemplateSpec,
    /// DataVolumes created with the VM and owned by it (deleted with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_volume_templates: Vec<DataVolumeTemplateSpec>,
}

impl VirtualMachine {
    /// Names of the PVCs and DataVolumes the VM's volumes use. After a restore with
    /// `RandomizeNames` these are the restored PVCs (`restore-<uid>-<volume>`); any restore
    /// PVC of the VM not listed here is left over from an earlier reset.
    pub fn claim_names(&self) -> Vec<&str> {
        self.spec
            .template
            .spec
            .volumes
            .iter()
            .filter_map(|v| {
                v.data_volume
                    .as_ref()
                    .map(|d| d.name.as_str())
                    .or_else(|| v.persistent_volume_claim.as_ref().map(|p| p.claim_name.as_str()))
            })
            .collect()
    }
}

/// `spec.runStrategy` of a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStrategy {
    /// Keep a VMI running at all times.
    Always,
    /// Keep the VM stopped.
    Halted,
    /// Start and stop only through the `start`/`stop` subresources.
    Manual,
    /// Restart the VMI only when it fails.
    RerunOnFailure,
    /// Run the VMI once, until it stops.
    Once,
    /// A strategy this crate does not know (newer KubeVirt).
    #[serde(other)]
    Unrecognized,
}

/// Template of the VMI a VirtualMachine runs; its labels reach the VMI and the virt-launcher pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct VirtualMachineInstanceTemplateSpec {
    /// Labels and annotations of the VMI (and of its virt-launcher pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// The VMI's spec.
    #[serde(default)]
    pub spec: VirtualMachineInstanceSpec,
}

/// A DataVolume declared inside a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DataVolumeTemplateSpec {
    /// Name and labels of the DataVolume.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The DataVolume's spec.
    #[serde(default)]
    pub spec: DataVolumeSpec,
}

/// Observed state of a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// One-word summary of the VM's state, as `kubectl get vm` shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<PrintableStatus>,
    /// True when a VMI exists and is ready.
    #[serde(default)]
    pub ready: bool,
    /// True when a VMI exists.
    #[serde(default)]
    pub created: bool,
    /// Name of the VirtualMachineSnapshot in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_in_progress: Option<String>,
    /// Name of the VirtualMachineRestore in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_in_progress: Option<String>,
    /// `Ready`, `Failure`, `Paused`, `RestartRequired`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl VirtualMachineStatus {
    /// True when the `Failure` condition is `True`.
    pub fn has_failure(&self) -> bool {
        condition_is_true(&self.conditions, "Failure")
    }
}

/// `status.printableStatus` of a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrintableStatus {
    /// No VMI, and none wanted.
    Stopped,
    /// DataVolumes of the VM are being prepared.
    Provisioning,
    /// A VMI is being created and scheduled.
    Starting,
    /// The VMI runs.
    Running,
    /// The VMI is paused.
    Paused,
    /// The VMI is shutting down.
    Stopping,
    /// The VM is being deleted.
    Terminating,
    /// The VMI keeps failing and is restarted with backoff.
    CrashLoopBackOff,
    /// The VMI is live-migrating.
    Migrating,
    /// KubeVirt cannot tell.
    Unknown,
    /// The virt-launcher pod cannot be scheduled.
    ErrorUnschedulable,
    /// An image cannot be pulled.
    ErrImagePull,
    /// An image pull is backing off.
    ImagePullBackOff,
    /// A PVC the VM needs does not exist.
    ErrorPvcNotFound,
    /// A DataVolume of the VM failed.
    DataVolumeError,
    /// A PVC waits for a consumer before it binds.
    WaitingForVolumeBinding,
    /// A status this crate does not know (newer KubeVirt).
    #[serde(other)]
    Unrecognized,
}

impl PrintableStatus {
    /// True for the statuses that will not go away without someone fixing something.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Self::CrashLoopBackOff
                | Self::ErrorUnschedulable
                | Self::ErrImagePull
                | Self::ImagePullBackOff
                | Self::ErrorPvcNotFound
                | Self::DataVolumeError
        )
    }
}

/// A running (or about to run) instance of a VirtualMachine.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    plural = "virtualmachineinstances",
    namespaced,
    status = "VirtualMachineInstanceStatus",
    derive = "PartialEq",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceSpec {
    /// The virtual hardware.
    #[serde(default)]
    pub domain: DomainSpec,
    /// Networks the interfaces attach to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Volumes the disks read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Guest hostname, handed to the guest through DHCP and the cloud-init metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Seconds a stopping VMI gets to shut down before it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

/// `spec.domain`: CPU, memory and devices.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DomainSpec {
    /// CPU topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Compute resources of the virt-launcher pod; `requests.memory` sizes the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Disks and network interfaces.
    #[serde(default)]
    pub devices: Devices,
}

/// `spec.domain.cpu`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Cores per socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Threads per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

/// `spec.domain.resources`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ResourceRequirements {
    /// Requested resources, such as `memory`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

/// `spec.domain.devices`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Devices {
    /// Disks, each backed by the volume of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// Network interfaces, each attached to the network of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
}

/// One disk of the domain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Name of the volume backing the disk.
    pub name: String,
    /// Attach as a disk (rather than a CD-ROM or LUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTarget>,
    /// Boot order; lower boots first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
}

/// `disk: {bus: ...}` of a disk.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskTarget {
    /// `virtio`, `sata` or `scsi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

/// One network interface; exactly one binding (`masquerade`, `bridge`, ...) is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Name of the network the interface attaches to.
    pub name: String,
    /// NAT behind the pod's IP; the guest sees a fixed private address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Empty>,
    /// The guest owns the pod's IP (handed out over DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Empty>,
    /// Fixed MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

/// A network an interface attaches to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Name referenced by the interface.
    pub name: String,
    /// The pod network of the virt-launcher pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodNetwork>,
}

/// `pod: {}` network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    /// Guest-side CIDR for masquerade (default `10.0.2.0/24`).
    #[serde(default, rename = "vmNetworkCIDR", skip_serializing_if = "Option::is_none")]
    pub vm_network_cidr: Option<String>,
}

/// A volume a disk reads from; exactly one source is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name referenced by the disk.
    pub name: String,
    /// A DataVolume (from `dataVolumeTemplates` or standalone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<DataVolumeVolumeSource>,
    /// A PVC, for example one left by a restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A NoCloud cloud-init drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_no_cloud: Option<CloudInitNoCloudSource>,
}

/// `dataVolume: {name}` volume source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DataVolumeVolumeSource {
    /// Name of the DataVolume.
    pub name: String,
}

/// `persistentVolumeClaim: {claimName}` volume source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimVolumeSource {
    /// Name of the PVC.
    pub claim_name: String,
}

/// `cloudInitNoCloud` volume source. The user data comes from a Secret (key `userdata` or
/// `userData`), so keys and tokens never appear in the VM object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CloudInitNoCloudSource {
    /// Secret holding the user data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Secret holding the network config (key `networkdata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_data_secret_ref: Option<LocalObjectReference>,
    /// Inline user data (not used by cks-lab: it would expose the cluster CA key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

/// Observed state of a VirtualMachineInstance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VmiPhase>,
    /// Network interfaces and their addresses; the pod-network interface comes first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<VmiInterfaceStatus>,
    /// Node running the VMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `Ready`, `AgentConnected`, `LiveMigratable`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl VirtualMachineInstanceStatus {
    /// IP address of the first interface that has one: the pod-network interface, which
    /// KubeVirt reports even without a guest agent.
    pub fn primary_ip(&self) -> Option<&str> {
        self.interfaces
            .iter()
            .filter_map(|i| i.ip_address.as_deref())
            .find(|ip| !ip.is_empty())
    }

    /// True when the VMI runs and its `Ready` condition is `True`.
    pub fn is_ready(&self) -> bool {
        self.phase == Some(VmiPhase::Running) && condition_is_true(&self.conditions, "Ready")
    }
}

/// `status.phase` of a VirtualMachineInstance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmiPhase {
    /// Accepted, not yet scheduled.
    Pending,
    /// The virt-launcher pod is being scheduled.
    Scheduling,
    /// The pod is scheduled; the domain is starting.
    Scheduled,
    /// The domain runs.
    Running,
    /// The domain stopped cleanly.
    Succeeded,
    /// The domain failed.
    Failed,
    /// KubeVirt cannot tell.
    Unknown,
    /// A phase this crate does not know (newer KubeVirt).
    #[serde(other)]
    Unrecognized,
}

/// One entry of `status.interfaces` of a VMI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VmiInterfaceStatus {
    /// Name of the interface in the VMI spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Primary IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// All IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Interface name inside the guest (from the guest agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// Where the information came from (`domain`, `guest-agent`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_source: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn virtual_machine_from_a_server_parses_status_and_ignores_unknown_fields() {
        let vm: VirtualMachine = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "c1-cp", "namespace": "c1", "uid": "u1", "generation": 3,
                         "annotations": {"kubevirt.io/latest-observed-api-version": "v1"}},
            "spec": {
                "runStrategy": "Always",
                "instancetype": {"name": "u1.medium"},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"cks.io/vm": "c1-cp"}},
                    "spec": {
                        "architecture": "amd64",
                        "domain": {
                            "cpu": {"cores": 2, "model": "host-model"},
                            "machine": {"type": "q35"},
                            "resources": {"requests": {"memory": "4Gi"}},
                            "devices": {
                                "disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}],
                                "interfaces": [{"name": "default", "bridge": {}, "macAddress": "02:00:00:00:00:01"}]
                            },
                            "firmware": {"uuid": "abc"}
                        },
                        "networks": [{"name": "default", "pod": {}}],
                        "volumes": [
                            {"name": "rootdisk", "dataVolume": {"name": "restore-9f3-rootdisk"}},
                            {"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch-pvc"}},
                            {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": "c1-cp-cloudinit"}}}
                        ]
                    }
                },
                "dataVolumeTemplates": [{
                    "metadata": {"name": "restore-9f3-rootdisk", "creationTimestamp": null},
                    "spec": {"source": {"pvc": {"namespace": "golden", "name": "img"}},
                             "storage": {"resources": {"requests": {"storage": "20Gi"}}}}
                }]
            },
            "status": {
                "printableStatus": "Running",
                "ready": true,
                "created": true,
                "desiredGeneration": 3,
                "observedGeneration": 3,
                "runStrategy": "Always",
                "volumeSnapshotStatuses": [{"name": "rootdisk", "enabled": true}],
                "conditions": [
                    {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "2026-11-21T10:00:00Z"},
                    {"type": "LiveMigratable", "status": "False", "reason": "InterfaceNotLiveMigratable",
                     "message": "cannot migrate VMI which does not use masquerade", "lastProbeTime": null, "lastTransitionTime": null}
                ]
            }
        }))
        .unwrap();
        assert_eq!(vm.spec.run_strategy, Some(RunStrategy::Always));
        assert_eq!(vm.spec.template.spec.domain.cpu.as_ref().unwrap().cores, Some(2));
        assert_eq!(vm.claim_names(), ["restore-9f3-rootdisk", "scratch-pvc"]);
        let status = vm.status.unwrap();
        assert_eq!(status.printable_status, Some(PrintableStatus::Running));
        assert!(status.ready && status.created && !status.has_failure());
        assert!(crate::common::condition_is_true(&status.conditions, "Ready"));
        assert!(!crate::common::condition_is_true(
            &status.conditions,
            "LiveMigratable"
        ));
    }

    #[test]
    fn unknown_enum_values_and_missing_status_fields_still_parse() {
        let vm: VirtualMachine = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "c1-w1"},
            "spec": {"runStrategy": "WaitAsReceiver", "template": {"spec": {"domain": {"devices": {}}}}},
            "status": {"printableStatus": "SomethingNew", "snapshotInProgress": "c1-w1-baseline",
                       "restoreInProgress": "c1-w1-reset-2"}
        }))
        .unwrap();
        assert_eq!(vm.spec.run_strategy, Some(RunStrategy::Unrecognized));
        let status = vm.status.unwrap();
        assert_eq!(status.printable_status, Some(PrintableStatus::Unrecognized));
        assert!(!status.ready && !status.created);
        assert_eq!(status.snapshot_in_progress.as_deref(), Some("c1-w1-baseline"));
        assert_eq!(status.restore_in_progress.as_deref(), Some("c1-w1-reset-2"));

        let stopped: VirtualMachine = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "c1-w1"}, "spec": {"running": false, "template": {"spec": {}}},
            "status": {"printableStatus": "ErrorPvcNotFound"}
        }))
        .unwrap();
        assert_eq!(stopped.spec.running, Some(false));
        assert!(stopped.status.unwrap().printable_status.unwrap().is_error());
    }

    #[test]
    fn vmi_status_gives_the_pod_network_ip_and_readiness() {
        let vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "c1-cp", "namespace": "c1"},
            "spec": {"domain": {"devices": {}}},
            "status": {
                "phase": "Running",
                "nodeName": "node-a",
                "guestOSInfo": {"id": "ubuntu"},
                "interfaces": [
                    {"name": "default", "ipAddress": "10.244.1.23", "ipAddresses": ["10.244.1.23", "fd00::17"],
                     "mac": "02:00:00:00:00:01", "interfaceName": "enp1s0", "infoSource": "domain, guest-agent",
                     "queueCount": 1, "podInterfaceName": "eth0"}
                ],
                "conditions": [
                    {"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": null},
                    {"type": "AgentConnected", "status": "True", "lastProbeTime": null, "lastTransitionTime": null}
                ],
                "migrationMethod": "BlockMigration"
            }
        }))
        .unwrap();
        let status = vmi.status.unwrap();
        assert_eq!(status.primary_ip(), Some("10.244.1.23"));
        assert!(status.is_ready());
        assert_eq!(status.interfaces[0].ip_addresses.len(), 2);
        assert_eq!(status.node_name.as_deref(), Some("node-a"));

        let pending: VirtualMachineInstanceStatus = serde_json::from_value(json!({
            "phase": "Scheduling", "interfaces": [{"name": "default"}]
        }))
        .unwrap();
        assert_eq!(pending.primary_ip(), None);
        assert!(!pending.is_ready());
        let odd: VirtualMachineInstanceStatus =
            serde_json::from_value(json!({"phase": "WaitingForSync"})).unwrap();
        assert_eq!(odd.phase, Some(VmiPhase::Unrecognized));
    }
}
