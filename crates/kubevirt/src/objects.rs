//! The host-cluster objects of one practice cluster, built from its template: per VM a
//! cloud-init Secret and a VirtualMachine whose `dataVolumeTemplates` clone the golden image;
//! a Service in front of the control plane's API server; the PKI and admin kubeconfig
//! Secrets; baseline snapshots and per-reset restores. All names are deterministic.
//!
//! Networking: every VM's interface is `bridge`-bound to the pod network, so the guest owns
//! its pod IP. With `masquerade` every guest would see the same address (10.0.2.2), and a
//! multi-node kubeadm cluster cannot work with identical node IPs (kubelet endpoints, Calico
//! tunnels, the `kubernetes` Service endpoint). A pod IP changes on every VM start, so all
//! clients reach the API server through the Service `{cluster}-cp`, whose ClusterIP is the
//! cluster's `controlPlaneEndpoint` (see [`Bootstrap`]), and the control plane is made
//! independent of its own IP (see [`crate::kubeadm`] and [`crate::cloud_init`]). KubeVirt
//! must permit bridge binding on the pod network (`permitBridgeInterfaceOnPodNetwork`, true
//! by default).
//!
//! Create VirtualMachines once and afterwards only patch `spec.runStrategy`: a restore with
//! `RandomizeNames` points the VM's volumes and `dataVolumeTemplates` at the restored PVCs,
//! and re-applying [`ClusterLayout::virtual_machine`] would point them back at the original
//! DataVolume, which CDI would then clone afresh from the golden image.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use cks_api::cluster_pool::ClusterTemplate;
use cks_api::names::labels;
use cks_api::practice_cluster::{PracticeCluster, VmStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::cdi::{DataVolumeSource, DataVolumeSourcePvc, DataVolumeSpec, StorageResources, StorageSpec};
use crate::cloud_init;
use crate::common::{Empty, LocalObjectReference, TypedLocalObjectReference};
use crate::error::{Error, Result};
use crate::kubeadm::{self, KubernetesVersion};
use crate::kubevirt::{
    CloudInitNoCloudSource, Cpu, DataVolumeTemplateSpec, DataVolumeVolumeSource, Devices, Disk, DiskTarget,
    DomainSpec, Interface, Network, PodNetwork, ResourceRequirements, RunStrategy, VirtualMachine,
    VirtualMachineInstance, VirtualMachineInstanceSpec, VirtualMachineInstanceTemplateSpec,
    VirtualMachineSpec, Volume,
};
use crate::naming::{self, API_SERVER_PORT, DEFAULT_HOST_CLUSTER_DOMAIN, VmId};
use crate::pki::ClusterPki;
use crate::snapshot::{
    SnapshotDeletionPolicy, TargetReadinessPolicy, VirtualMachineRestore, VirtualMachineRestoreSpec,
    VirtualMachineSnapshot, VirtualMachineSnapshotSpec, VolumeRestorePolicy,
};

/// Key of the cloud-init Secret holding the user data (what `cloudInitNoCloud.secretRef`
/// reads).
pub const USERDATA_KEY: &str = "userdata";
/// Key of the admin kubeconfig Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// Key of the OpenSSH private host key in the SSH host key Secret.
pub const SSH_HOST_KEY_PRIVATE: &str = "ssh_host_ed25519_key";
/// Key of the OpenSSH public host key line in the SSH host key Secret.
pub const SSH_HOST_KEY_PUBLIC: &str = "ssh_host_ed25519_key.pub";
/// Name of the VM volume and disk holding the root file system.
pub const ROOT_DISK: &str = "rootdisk";
/// Name of the VM volume and disk holding the cloud-init NoCloud drive.
pub const CLOUD_INIT_DISK: &str = "cloudinitdisk";
/// Name of the pod network and its interface.
pub const POD_NETWORK: &str = "default";
/// Label KubeVirt puts on virt-launcher pods.
const VIRT_LAUNCHER_LABEL: (&str, &str) = ("kubevirt.io", "virt-launcher");

/// One practice cluster's layout on the host cluster: its name, pool, namespace and template.
#[derive(Clone, Debug)]
pub struct ClusterLayout {
    cluster: String,
    pool: String,
    namespace: String,
    template: ClusterTemplate,
    version: KubernetesVersion,
    host_cluster_domain: String,
}

impl ClusterLayout {
    /// The layout of cluster `cluster` of pool `pool`, whose VMs live in `namespace`. Fails
    /// on names that cannot name the VMs, an unsupported Kubernetes version, or an
    /// `extraCloudInit` the merge rules refuse.
    pub fn new(cluster: &str, pool: &str, namespace: &str, template: &ClusterTemplate) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidClusterName {
            cluster: cluster.to_owned(),
            reason,
        };
        let workers = worker_count(template);
        let longest = VmId::Worker(workers.max(1)).vm_name(cluster);
        // VM names are label values and guest hostnames; the Service name is a DNS-1035 label.
        if !cks_api::common::is_dns1123_label(&longest) {
            return Err(invalid(format!(
                "VM name {longest:?} would not be a DNS-1123 label of at most 63 characters"
            )));
        }
        if !cluster.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(invalid(
                "must start with a letter: it names the control plane's Service".to_owned(),
            ));
        }
        if !cks_api::common::is_dns1123_label(namespace) {
            return Err(invalid(format!(
                "namespace {namespace:?} is not a DNS-1123 label"
            )));
        }
        if let Some(extra) = &template.extra_cloud_init {
            cloud_init::validate_extra(&template.ssh_user, extra)?;
        }
        Ok(Self {
            cluster: cluster.to_owned(),
            pool: pool.to_owned(),
            namespace: namespace.to_owned(),
            template: template.clone(),
            version: KubernetesVersion::parse(&template.kubernetes_version)?,
            host_cluster_domain: DEFAULT_HOST_CLUSTER_DOMAIN.to_owned(),
        })
    }

    /// The layout of `cluster`, whose VMs live in `namespace` (the cluster's own namespace).
    pub fn from_practice_cluster(cluster: &PracticeCluster, namespace: &str) -> Result<Self> {
        Self::new(
            &cluster.name_any(),
            &cluster.spec.pool,
            namespace,
            &cluster.spec.template,
        )
    }

    /// Uses `domain` instead of `cluster.local` as the host cluster's DNS domain.
    pub fn with_host_cluster_domain(mut self, domain: &str) -> Self {
        domain.trim_matches('.').clone_into(&mut self.host_cluster_domain);
        self
    }

    /// Name of the PracticeCluster.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Namespace holding the VMs.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The cluster's VMs, control plane first.
    pub fn vms(&self) -> Vec<VmId> {
        VmId::all(worker_count(&self.template))
    }

    /// Name of the VirtualMachine `id`.
    pub fn vm_name(&self, id: VmId) -> String {
        id.vm_name(&self.cluster)
    }

    /// Initial `status.vms` entries: name, role, target and snapshot name of each VM.
    pub fn vm_statuses(&self) -> Vec<VmStatus> {
        self.vms()
            .into_iter()
            .map(|id| self.vm_status(id, &Observed::default()))
            .collect()
    }

    /// The `status.vms` entry of VM `id` from what was observed of it: ready when the VM
    /// reports ready and its VMI runs with `Ready` true; the IP is the VMI's pod-network IP.
    pub fn vm_status(&self, id: VmId, observed: &Observed<'_>) -> VmStatus {
        let vmi_status = observed.vmi.and_then(|vmi| vmi.status.as_ref());
        let vm_ready = observed
            .vm
            .and_then(|vm| vm.status.as_ref())
            .is_some_and(|s| s.ready);
        VmStatus {
            name: self.vm_name(id),
            role: id.role(),
            target: id.target(),
            ip: vmi_status.and_then(|s| s.primary_ip()).map(str::to_owned),
            ready: vm_ready && vmi_status.is_some_and(|s| s.is_ready()),
            snapshot: Some(naming::snapshot_name(&self.vm_name(id))),
            snapshot_ready: observed
                .snapshot
                .and_then(|s| s.status.as_ref())
                .is_some_and(|s| s.ready_to_use),
        }
    }

    /// Labels of every object of the cluster; with `vm`, also the VM's role and name.
    pub fn labels(&self, vm: Option<VmId>) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            (labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned()),
            (labels::POOL.to_owned(), self.pool.clone()),
            (labels::CLUSTER.to_owned(), self.cluster.clone()),
        ]);
        if let Some(id) = vm {
            let role = match id {
                VmId::ControlPlane => "control-plane",
                VmId::Worker(_) => "worker",
            };
            l.insert(labels::ROLE.to_owned(), role.to_owned());
            l.insert(labels::VM.to_owned(), self.vm_name(id));
        }
        l
    }

    fn meta(&self, name: String, vm: Option<VmId>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(vm)),
            ..ObjectMeta::default()
        }
    }

    /// DNS name of the control plane's Service in the host cluster, for clients there (the
    /// operator). Guests use the Service's ClusterIP instead: see [`Bootstrap`].
    pub fn control_plane_dns_name(&self) -> String {
        format!(
            "{}.{}.svc.{}",
            naming::control_plane_service_name(&self.cluster),
            self.namespace,
            self.host_cluster_domain
        )
    }

    /// URL of the practice cluster's API server, as reached from the host cluster.
    pub fn api_server_url(&self) -> String {
        format!("https://{}:{API_SERVER_PORT}", self.control_plane_dns_name())
    }

    /// Extra names of the API server certificate: the Service's ClusterIP and every spelling
    /// of its DNS name, and loopback for the components next to the API server.
    pub fn cert_sans(&self, api_server_ip: IpAddr) -> Vec<String> {
        let svc = naming::control_plane_service_name(&self.cluster);
        let ns = &self.namespace;
        vec![
            api_server_ip.to_string(),
            self.control_plane_dns_name(),
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}"),
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ]
    }

    /// The `#cloud-config` user data of VM `id`: `kubeadm init` on the control plane,
    /// `kubeadm join` on workers, with the template's `extraCloudInit` merged in.
    pub fn cloud_init(&self, id: VmId, bootstrap: &Bootstrap<'_>) -> Result<String> {
        let hostname = id.target();
        let pki = bootstrap.pki;
        let token = pki.token().expose();
        let endpoint = SocketAddr::new(bootstrap.api_server_ip, API_SERVER_PORT).to_string();
        let config = match id {
            VmId::ControlPlane => {
                let sans = self.cert_sans(bootstrap.api_server_ip);
                let ignore: &[&str] = if self.template.control_plane.cpu < 2 {
                    &["NumCPU"]
                } else {
                    &[]
                };
                let kubeadm_config = kubeadm::init_configuration(&kubeadm::InitParams {
                    version: &self.version,
                    node_name: &hostname,
                    token: &token,
                    control_plane_endpoint: &endpoint,
                    cert_sans: &sans,
                    pod_subnet: &self.template.pod_cidr,
                    service_subnet: &self.template.service_cidr,
                    ignore_preflight_errors: ignore,
                })?;
                cloud_init::control_plane(&cloud_init::ControlPlaneInput {
                    hostname: &hostname,
                    ssh_user: &self.template.ssh_user,
                    ssh_public_key: bootstrap.ssh_public_key,
                    ca_cert_pem: pki.ca_cert_pem(),
                    ca_key_pem: pki.ca_key_pem(),
                    kubeadm_config: &kubeadm_config,
                })?
            }
            VmId::Worker(_) => {
                let kubeadm_config = kubeadm::join_configuration(&kubeadm::JoinParams {
                    version: &self.version,
                    node_name: &hostname,
                    token: &token,
                    ca_cert_hash: pki.ca_cert_hash(),
                    control_plane_endpoint: &endpoint,
                })?;
                cloud_init::worker(&cloud_init::WorkerInput {
                    hostname: &hostname,
                    ssh_user: &self.template.ssh_user,
                    ssh_public_key: bootstrap.ssh_public_key,
                    kubeadm_config: &kubeadm_config,
                })?
            }
        };
        let config = match bootstrap.ssh_host_key {
            Some(key) => config.with_host_key(key.private_openssh, key.public_openssh),
            None => config,
        };
        cloud_init::render(&config, self.template.extra_cloud_init.as_deref())
    }

    /// The Secret `{cluster}-ssh-host-key` keeping the SSH host key pair the cluster's VMs are
    /// given (keys [`SSH_HOST_KEY_PRIVATE`] and [`SSH_HOST_KEY_PUBLIC`]): the operator
    /// generates it once and pins the public half.
    pub fn ssh_host_key_secret(&self, key: SshHostKey<'_>) -> Secret {
        Secret {
            metadata: self.meta(naming::ssh_host_key_secret_name(&self.cluster), None),
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([
                (
                    SSH_HOST_KEY_PRIVATE.to_owned(),
                    ByteString(key.private_openssh.as_bytes().to_vec()),
                ),
                (
                    SSH_HOST_KEY_PUBLIC.to_owned(),
                    ByteString(key.public_openssh.trim().as_bytes().to_vec()),
                ),
            ])),
            ..Secret::default()
        }
    }

    /// The Secret holding VM `id`'s cloud-init user data (key [`USERDATA_KEY`]).
    pub fn cloud_init_secret(&self, id: VmId, bootstrap: &Bootstrap<'_>) -> Result<Secret> {
        let userdata = self.cloud_init(id, bootstrap)?;
        Ok(Secret {
            metadata: self.meta(naming::cloud_init_secret_name(&self.vm_name(id)), Some(id)),
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                USERDATA_KEY.to_owned(),
                ByteString(userdata.into_bytes()),
            )])),
            ..Secret::default()
        })
    }

    /// The VirtualMachine `id`: CPU and memory from the template, a root disk cloned from the
    /// golden image through `dataVolumeTemplates`, the cloud-init drive from its Secret, and
    /// one bridge-bound interface on the pod network.
    pub fn virtual_machine(&self, id: VmId, run_strategy: RunStrategy) -> VirtualMachine {
        let name = self.vm_name(id);
        let (cpu, memory, disk_size) = match id {
            VmId::ControlPlane => {
                let s = &self.template.control_plane;
                (s.cpu, &s.memory, &s.disk_size)
            }
            VmId::Worker(_) => {
                let s = &self.template.workers;
                (s.cpu, &s.memory, &s.disk_size)
            }
        };
        let root_dv = naming::root_disk_name(&name);
        let disk = |disk_name: &str| Disk {
            name: disk_name.to_owned(),
            disk: Some(DiskTarget {
                bus: Some("virtio".to_owned()),
            }),
            boot_order: None,
        };
        let template_meta = ObjectMeta {
            labels: Some(self.labels(Some(id))),
            ..ObjectMeta::default()
        };
        let spec = VirtualMachineSpec {
            run_strategy: Some(run_strategy),
            running: None,
            template: VirtualMachineInstanceTemplateSpec {
                metadata: Some(template_meta),
                spec: VirtualMachineInstanceSpec {
                    domain: DomainSpec {
                        cpu: Some(Cpu {
                            cores: Some(u32::try_from(cpu).unwrap_or(1).max(1)),
                            sockets: None,
                            threads: None,
                        }),
                        resources: Some(ResourceRequirements {
                            requests: BTreeMap::from([("memory".to_owned(), memory.clone())]),
                            limits: BTreeMap::new(),
                        }),
                        devices: Devices {
                            disks: vec![
                                Disk {
                                    boot_order: Some(1),
                                    ..disk(ROOT_DISK)
                                },
                                disk(CLOUD_INIT_DISK),
                            ],
                            interfaces: vec![Interface {
                                name: POD_NETWORK.to_owned(),
                                bridge: Some(Empty {}),
                                ..Interface::default()
                            }],
                        },
                    },
                    networks: vec![Network {
                        name: POD_NETWORK.to_owned(),
                        pod: Some(PodNetwork::default()),
                    }],
                    volumes: vec![
                        Volume {
                            name: ROOT_DISK.to_owned(),
                            data_volume: Some(DataVolumeVolumeSource {
                                name: root_dv.clone(),
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: CLOUD_INIT_DISK.to_owned(),
                            cloud_init_no_cloud: Some(CloudInitNoCloudSource {
                                secret_ref: Some(LocalObjectReference {
                                    name: naming::cloud_init_secret_name(&name),
                                }),
                                ..CloudInitNoCloudSource::default()
                            }),
                            ..Volume::default()
                        },
                    ],
                    hostname: Some(id.target()),
                    termination_grace_period_seconds: None,
                },
            },
            data_volume_templates: vec![DataVolumeTemplateSpec {
                metadata: ObjectMeta {
                    name: Some(root_dv),
                    labels: Some(self.labels(Some(id))),
                    ..ObjectMeta::default()
                },
                spec: self.root_disk_spec(disk_size),
            }],
        };
        let mut vm = VirtualMachine::new(&name, spec);
        vm.metadata = self.meta(name, Some(id));
        vm
    }

    /// A DataVolume spec cloning the golden image PVC into a disk of `size`.
    fn root_disk_spec(&self, size: &Quantity) -> DataVolumeSpec {
        let golden = &self.template.golden_image;
        DataVolumeSpec {
            source: Some(DataVolumeSource {
                pvc: Some(DataVolumeSourcePvc {
                    namespace: golden.namespace.clone(),
                    name: golden.name.clone(),
                }),
            }),
            source_ref: None,
            storage: Some(StorageSpec {
                storage_class_name: self.template.storage_class_name.clone(),
                resources: Some(StorageResources {
                    requests: BTreeMap::from([("storage".to_owned(), size.clone())]),
                }),
                ..StorageSpec::default()
            }),
        }
    }

    /// The ClusterIP Service `{cluster}-cp` in front of the control plane's API server
    /// (port 6443), selecting the control plane's virt-launcher pod. Not-ready addresses are
    /// published so the API is reachable while the VM still boots, as kubeadm needs.
    ///
    /// Create it before rendering cloud-init: its ClusterIP is the cluster's
    /// `controlPlaneEndpoint`. Pass `cluster_ip` (read back from the Secret or the old
    /// Service) to recreate a deleted Service with the same address.
    pub fn control_plane_service(&self, cluster_ip: Option<&str>) -> Service {
        let id = VmId::ControlPlane;
        let selector = BTreeMap::from([
            (labels::VM.to_owned(), self.vm_name(id)),
            (VIRT_LAUNCHER_LABEL.0.to_owned(), VIRT_LAUNCHER_LABEL.1.to_owned()),
        ]);
        Service {
            metadata: self.meta(naming::control_plane_service_name(&self.cluster), Some(id)),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                cluster_ip: cluster_ip.map(str::to_owned),
                selector: Some(selector),
                publish_not_ready_addresses: Some(true),
                ports: Some(vec![ServicePort {
                    name: Some("https".to_owned()),
                    protocol: Some("TCP".to_owned()),
                    port: i32::from(API_SERVER_PORT),
                    target_port: Some(IntOrString::Int(i32::from(API_SERVER_PORT))),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// The Secret `{cluster}-pki` storing `pki` (see [`ClusterPki::to_secret_data`]).
    pub fn pki_secret(&self, pki: &ClusterPki) -> Secret {
        Secret {
            metadata: self.meta(naming::pki_secret_name(&self.cluster), None),
            type_: Some("Opaque".to_owned()),
            data: Some(pki.to_secret_data()),
            ..Secret::default()
        }
    }

    /// The Secret `{cluster}-admin-kubeconfig` (key [`KUBECONFIG_KEY`]) with an admin
    /// kubeconfig for [`api_server_url`](Self::api_server_url).
    pub fn admin_kubeconfig_secret(&self, pki: &ClusterPki) -> Result<Secret> {
        let kubeconfig = pki.admin_kubeconfig(&self.cluster, &self.api_server_url())?;
        Ok(Secret {
            metadata: self.meta(naming::admin_kubeconfig_secret_name(&self.cluster), None),
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                KUBECONFIG_KEY.to_owned(),
                ByteString(kubeconfig.into_bytes()),
            )])),
            ..Secret::default()
        })
    }

    /// The baseline VirtualMachineSnapshot `{vm}-baseline` of VM `id`; its content goes
    /// with it when it is deleted.
    pub fn snapshot(&self, id: VmId) -> VirtualMachineSnapshot {
        let vm = self.vm_name(id);
        let name = naming::snapshot_name(&vm);
        let mut snapshot = VirtualMachineSnapshot::new(
            &name,
            VirtualMachineSnapshotSpec {
                source: TypedLocalObjectReference::virtual_machine(&vm),
                deletion_policy: Some(SnapshotDeletionPolicy::Delete),
                failure_deadline: None,
            },
        );
        snapshot.metadata = self.meta(name, Some(id));
        snapshot
    }

    /// The VirtualMachineRestore `{vm}-reset-{reset}` of VM `id` from its baseline snapshot.
    ///
    /// `targetReadinessPolicy` is `WaitEventually`: the operator stops the VM itself and
    /// bounds the whole reset with its own timeout, instead of KubeVirt failing the restore
    /// after a fixed grace period (a failed restore must be deleted before the next one).
    pub fn restore(
        &self,
        id: VmId,
        reset: u32,
        volume_restore_policy: Option<VolumeRestorePolicy>,
    ) -> VirtualMachineRestore {
        let vm = self.vm_name(id);
        let name = naming::restore_name(&vm, reset);
        let mut restore = VirtualMachineRestore::new(
            &name,
            VirtualMachineRestoreSpec {
                target: TypedLocalObjectReference::virtual_machine(&vm),
                virtual_machine_snapshot_name: naming::snapshot_name(&vm),
                target_readiness_policy: Some(TargetReadinessPolicy::WaitEventually),
                volume_restore_policy,
            },
        );
        restore.metadata = self.meta(name, Some(id));
        restore
    }
}

/// What was observed of one VM, for [`ClusterLayout::vm_status`]; absent objects are `None`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed<'a> {
    /// The VirtualMachine.
    pub vm: Option<&'a VirtualMachine>,
    /// Its VirtualMachineInstance (exists while it runs).
    pub vmi: Option<&'a VirtualMachineInstance>,
    /// Its baseline VirtualMachineSnapshot.
    pub snapshot: Option<&'a VirtualMachineSnapshot>,
}

/// What the cloud-init of a cluster's VMs is rendered from besides the template.
#[derive(Clone, Copy, Debug)]
pub struct Bootstrap<'a> {
    /// The cluster's CA, bootstrap token and CA hash.
    pub pki: &'a ClusterPki,
    /// OpenSSH public key line installed for the template's SSH user.
    pub ssh_public_key: &'a str,
    /// ClusterIP of the control plane's Service: the `controlPlaneEndpoint` host. An IP,
    /// not the Service's DNS name, so bootstrapping does not depend on the guest's resolver:
    /// Ubuntu's systemd-resolved treats `.local` names (`*.svc.cluster.local`) as multicast
    /// DNS unless a routing domain says otherwise, and whether DHCP search domains are used
    /// depends on the network configuration. The ClusterIP stays the same for the Service's
    /// life.
    pub api_server_ip: IpAddr,
    /// The SSH host key every VM of the cluster presents; `None` leaves the image's keys.
    pub ssh_host_key: Option<SshHostKey<'a>>,
}

/// An SSH host key pair in OpenSSH formats.
#[derive(Clone, Copy)]
pub struct SshHostKey<'a> {
    /// OpenSSH private key.
    pub private_openssh: &'a str,
    /// OpenSSH public key line.
    pub public_openssh: &'a str,
}

impl std::fmt::Debug for SshHostKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshHostKey")
            .field("public_openssh", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

impl<'a> Bootstrap<'a> {
    /// Bootstrap inputs with `api_server_ip` as read from the Service's `spec.clusterIP`.
    pub fn new(pki: &'a ClusterPki, ssh_public_key: &'a str, api_server_ip: &str) -> Result<Self> {
        let ip = api_server_ip
            .trim()
            .parse()
            .map_err(|_| Error::InvalidApiServerIp(api_server_ip.to_owned()))?;
        Ok(Self {
            pki,
            ssh_public_key,
            api_server_ip: ip,
            ssh_host_key: None,
        })
    }

    /// Gives every VM `key` as its SSH host key.
    pub fn with_ssh_host_key(mut self, key: SshHostKey<'a>) -> Self {
        self.ssh_host_key = Some(key);
        self
    }
}

fn worker_count(template: &ClusterTemplate) -> u32 {
    u32::try_from(template.workers.count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa5c2Pf0b6y6k3c cks@lab";

    fn template(workers: i32) -> ClusterTemplate {
        serde_json::from_value(json!({
            "kubernetesVersion": "1.33.0",
            "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
            "workers": {"count": workers, "cpu": 2, "memory": "2Gi", "diskSize": "15Gi"},
            "goldenImage": {"namespace": "vm-templates", "name": "ubuntu-2204-kube-1-33"},
            "storageClassName": "longhorn",
            "sshKeySecretRef": {"name": "pool-ssh"},
        }))
        .unwrap()
    }

    fn layout(workers: i32) -> ClusterLayout {
        ClusterLayout::new("intro-x7k2p", "intro", "intro-x7k2p", &template(workers)).unwrap()
    }

    const API_IP: &str = "10.96.12.34";

    fn boot(pki: &ClusterPki) -> Bootstrap<'_> {
        Bootstrap::new(pki, SSH_KEY, API_IP).unwrap()
    }

    #[test]
    fn every_vm_gets_the_clusters_host_key_which_its_secret_keeps() {
        let pki = ClusterPki::generate().unwrap();
        let key = SshHostKey {
            private_openssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
            public_openssh: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa5c2Pf0b6y6k3c",
        };
        let l = layout(1);
        for id in l.vms() {
            let config = parse_cloud_config(&l.cloud_init(id, &boot(&pki).with_ssh_host_key(key)).unwrap());
            assert_eq!(
                config["ssh_keys"]["ed25519_private"], key.private_openssh,
                "{id:?}"
            );
            assert_eq!(config["ssh_keys"]["ed25519_public"], key.public_openssh, "{id:?}");
            assert_eq!(config["ssh_deletekeys"], true);
        }
        let secret = l.ssh_host_key_secret(key);
        assert_eq!(secret.metadata.name.as_deref(), Some("intro-x7k2p-ssh-host-key"));
        let data = secret.data.unwrap();
        assert_eq!(data[SSH_HOST_KEY_PUBLIC].0, key.public_openssh.as_bytes());
        assert_eq!(data[SSH_HOST_KEY_PRIVATE].0, key.private_openssh.as_bytes());
        assert!(!format!("{key:?}").contains("PRIVATE KEY"));
    }

    fn parse_cloud_config(userdata: &str) -> Value {
        assert!(userdata.starts_with("#cloud-config\n"), "{userdata}");
        serde_saphyr::from_str(userdata).expect("cloud-config parses as YAML")
    }

    fn files(config: &Value) -> Vec<(&str, &str, &str)> {
        config["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap(),
                    f["permissions"].as_str().unwrap_or_default(),
                    f["content"].as_str().unwrap(),
                )
            })
            .collect()
    }

    fn file<'a>(config: &'a Value, path: &str) -> (&'a str, &'a str) {
        let (_, mode, content) = files(config).into_iter().find(|(p, _, _)| *p == path).unwrap();
        (mode, content)
    }

    fn runcmd(config: &Value) -> Vec<String> {
        config["runcmd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| match c {
                Value::Array(words) => words
                    .iter()
                    .map(|w| w.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" "),
                other => other.as_str().unwrap().to_owned(),
            })
            .collect()
    }

    #[test]
    fn control_plane_cloud_init_runs_kubeadm_init_with_the_cluster_ca_and_token() {
        let pki = ClusterPki::generate().unwrap();
        let l = layout(2);
        let config = parse_cloud_config(&l.cloud_init(VmId::ControlPlane, &boot(&pki)).unwrap());
        assert_eq!(config["hostname"], "control-plane");
        assert_eq!(config["ssh_pwauth"], false);
        assert_eq!(config["users"][0]["name"], "ubuntu");
        assert_eq!(config["users"][0]["ssh_authorized_keys"], json!([SSH_KEY]));
        assert_eq!(config["users"][0]["sudo"], "ALL=(ALL) NOPASSWD:ALL");

        assert_eq!(
            file(&config, "/etc/kubernetes/pki/ca.crt"),
            ("0644", pki.ca_cert_pem())
        );
        assert_eq!(
            file(&config, "/etc/kubernetes/pki/ca.key"),
            ("0600", pki.ca_key_pem())
        );
        let (mode, kubeadm_yaml) = file(&config, "/etc/kubernetes/kubeadm/config.yaml");
        assert_eq!(mode, "0600");
        let docs = crate::kubeadm::parse_documents(kubeadm_yaml);
        assert_eq!(docs[0]["kind"], "InitConfiguration");
        assert_eq!(docs[0]["bootstrapTokens"][0]["token"], pki.token().expose());
        assert_eq!(docs[0]["nodeRegistration"]["name"], "control-plane");
        assert!(docs[0]["nodeRegistration"].get("ignorePreflightErrors").is_none());
        assert_eq!(docs[1]["kind"], "ClusterConfiguration");
        assert_eq!(docs[1]["controlPlaneEndpoint"], "10.96.12.34:6443");
        assert_eq!(docs[1]["kubernetesVersion"], "v1.33.0");
        assert_eq!(docs[1]["networking"]["podSubnet"], "10.244.0.0/16");
        assert_eq!(docs[1]["networking"]["serviceSubnet"], "10.96.0.0/12");
        assert_eq!(
            docs[1]["apiServer"]["certSANs"],
            json!([
                "10.96.12.34",
                "intro-x7k2p-cp.intro-x7k2p.svc.cluster.local",
                "intro-x7k2p-cp.intro-x7k2p.svc",
                "intro-x7k2p-cp.intro-x7k2p",
                "127.0.0.1",
                "localhost"
            ])
        );
        let (mode, script) = file(&config, "/usr/local/sbin/cks-reip");
        assert_eq!(mode, "0755");
        assert!(script.starts_with("#!/bin/sh\n"));
        let (_, unit) = file(&config, "/etc/systemd/system/cks-reip.service");
        assert!(
            unit.contains("Before=kubelet.service") && unit.contains("ExecStart=/usr/local/sbin/cks-reip")
        );

        assert_eq!(
            runcmd(&config),
            [
                "kubeadm init --config /etc/kubernetes/kubeadm/config.yaml",
                "kubectl --kubeconfig /etc/kubernetes/controller-manager.conf config set-cluster kubernetes --server=https://127.0.0.1:6443",
                "kubectl --kubeconfig /etc/kubernetes/scheduler.conf config set-cluster kubernetes --server=https://127.0.0.1:6443",
                "systemctl enable --now cks-reip.service",
                "kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f /opt/cks/calico.yaml",
                "install -d -m 0700 -o ubuntu -g ubuntu /home/ubuntu/.kube",
                "install -m 0600 -o ubuntu -g ubuntu /etc/kubernetes/admin.conf /home/ubuntu/.kube/config",
            ]
        );
    }

    #[test]
    fn worker_cloud_init_joins_with_token_and_ca_hash_and_never_sees_the_ca_key() {
        let pki = ClusterPki::generate().unwrap();
        let l = layout(2);
        let userdata = l.cloud_init(VmId::Worker(2), &boot(&pki)).unwrap();
        assert!(!userdata.contains("PRIVATE KEY"));
        let config = parse_cloud_config(&userdata);
        assert_eq!(config["hostname"], "worker-2");
        assert_eq!(files(&config).len(), 1);
        let (mode, kubeadm_yaml) = file(&config, "/etc/kubernetes/kubeadm/config.yaml");
        assert_eq!(mode, "0600");
        let join = crate::kubeadm::parse_documents(kubeadm_yaml).remove(0);
        assert_eq!(join["kind"], "JoinConfiguration");
        assert_eq!(join["nodeRegistration"]["name"], "worker-2");
        let discovery = &join["discovery"]["bootstrapToken"];
        assert_eq!(discovery["apiServerEndpoint"], "10.96.12.34:6443");
        assert_eq!(discovery["token"], pki.token().expose());
        assert_eq!(discovery["caCertHashes"], json!([pki.ca_cert_hash()]));
        assert_eq!(
            runcmd(&config),
            ["kubeadm join --config /etc/kubernetes/kubeadm/config.yaml"]
        );
    }

    #[test]
    fn small_control_plane_ignores_the_cpu_preflight_check() {
        let mut t = template(1);
        t.control_plane.cpu = 1;
        let l = ClusterLayout::new("c1", "p", "c1", &t).unwrap();
        let pki = ClusterPki::generate().unwrap();
        let config = parse_cloud_config(&l.cloud_init(VmId::ControlPlane, &boot(&pki)).unwrap());
        let docs = crate::kubeadm::parse_documents(file(&config, "/etc/kubernetes/kubeadm/config.yaml").1);
        assert_eq!(
            docs[0]["nodeRegistration"]["ignorePreflightErrors"],
            json!(["NumCPU"])
        );
    }

    #[test]
    fn extra_cloud_init_is_merged_into_every_vm() {
        let mut t = template(1);
        t.extra_cloud_init = Some(
            "#cloud-config\npackages: [jq]\nruncmd:\n- systemctl restart containerd\nwrite_files:\n- path: /etc/containerd/certs.d/docker.io/hosts.toml\n  content: mirror\n".to_owned(),
        );
        let l = ClusterLayout::new("c1", "p", "c1", &t).unwrap();
        let pki = ClusterPki::generate().unwrap();
        for id in l.vms() {
            let config = parse_cloud_config(&l.cloud_init(id, &boot(&pki)).unwrap());
            assert_eq!(config["packages"], json!(["jq"]));
            let cmds = runcmd(&config);
            assert_eq!(cmds[0], "systemctl restart containerd");
            assert!(cmds[1].starts_with("kubeadm "));
            let paths: Vec<_> = files(&config).into_iter().map(|(p, _, _)| p).collect();
            assert_eq!(
                paths.last(),
                Some(&"/etc/containerd/certs.d/docker.io/hosts.toml")
            );
        }
    }

    #[test]
    fn empty_or_multiline_ssh_keys_are_refused() {
        let pki = ClusterPki::generate().unwrap();
        for bad in ["", "  \n", "ssh-ed25519 AAA a\nssh-ed25519 BBB b"] {
            let bootstrap = Bootstrap::new(&pki, bad, API_IP).unwrap();
            let err = layout(0).cloud_init(VmId::ControlPlane, &bootstrap).unwrap_err();
            assert_eq!(err.category(), "InvalidSshKey", "{bad:?}");
        }
    }

    #[test]
    fn api_server_ip_must_be_an_ip_and_ipv6_endpoints_are_bracketed() {
        let pki = ClusterPki::generate().unwrap();
        let err = Bootstrap::new(&pki, SSH_KEY, "intro-x7k2p-cp").unwrap_err();
        assert_eq!(err.category(), "InvalidApiServerIp");
        let v6 = Bootstrap::new(&pki, SSH_KEY, "fd00:10:96::1a").unwrap();
        let config = parse_cloud_config(&layout(1).cloud_init(VmId::Worker(1), &v6).unwrap());
        let join =
            crate::kubeadm::parse_documents(file(&config, "/etc/kubernetes/kubeadm/config.yaml").1).remove(0);
        assert_eq!(
            join["discovery"]["bootstrapToken"]["apiServerEndpoint"],
            "[fd00:10:96::1a]:6443"
        );
    }

    #[test]
    fn virtual_machine_has_the_kubevirt_shape() {
        let vm =
            serde_json::to_value(layout(2).virtual_machine(VmId::Worker(1), RunStrategy::Halted)).unwrap();
        assert_eq!(vm["apiVersion"], "kubevirt.io/v1");
        assert_eq!(vm["kind"], "VirtualMachine");
        assert_eq!(vm["metadata"]["name"], "intro-x7k2p-w1");
        assert_eq!(vm["metadata"]["namespace"], "intro-x7k2p");
        let expected_labels = json!({
            "app.kubernetes.io/managed-by": "cks-operator",
            "cks.io/pool": "intro",
            "cks.io/cluster": "intro-x7k2p",
            "cks.io/role": "worker",
            "cks.io/vm": "intro-x7k2p-w1",
        });
        assert_eq!(vm["metadata"]["labels"], expected_labels);
        assert_eq!(vm["spec"]["runStrategy"], "Halted");
        assert!(vm["spec"].get("running").is_none());
        let tmpl = &vm["spec"]["template"];
        assert_eq!(tmpl["metadata"]["labels"], expected_labels);
        let spec = &tmpl["spec"];
        assert_eq!(spec["hostname"], "worker-1");
        assert_eq!(spec["domain"]["cpu"], json!({"cores": 2}));
        assert_eq!(
            spec["domain"]["resources"],
            json!({"requests": {"memory": "2Gi"}})
        );
        assert_eq!(
            spec["domain"]["devices"]["disks"],
            json!([
                {"name": "rootdisk", "disk": {"bus": "virtio"}, "bootOrder": 1},
                {"name": "cloudinitdisk", "disk": {"bus": "virtio"}},
            ])
        );
        assert_eq!(
            spec["domain"]["devices"]["interfaces"],
            json!([{"name": "default", "bridge": {}}])
        );
        assert_eq!(spec["networks"], json!([{"name": "default", "pod": {}}]));
        assert_eq!(
            spec["volumes"],
            json!([
                {"name": "rootdisk", "dataVolume": {"name": "intro-x7k2p-w1-root"}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {"secretRef": {"name": "intro-x7k2p-w1-cloudinit"}}},
            ])
        );
        let dvt = &vm["spec"]["dataVolumeTemplates"];
        assert_eq!(dvt.as_array().unwrap().len(), 1);
        assert_eq!(dvt[0]["metadata"]["name"], "intro-x7k2p-w1-root");
        assert_eq!(dvt[0]["metadata"]["labels"], expected_labels);
        assert_eq!(
            dvt[0]["spec"],
            json!({
                "source": {"pvc": {"namespace": "vm-templates", "name": "ubuntu-2204-kube-1-33"}},
                "storage": {"storageClassName": "longhorn", "resources": {"requests": {"storage": "15Gi"}}},
            })
        );
    }

    #[test]
    fn control_plane_vm_uses_the_control_plane_shape() {
        let vm = layout(1).virtual_machine(VmId::ControlPlane, RunStrategy::Always);
        let json = serde_json::to_value(&vm).unwrap();
        assert_eq!(json["metadata"]["name"], "intro-x7k2p-cp");
        assert_eq!(json["metadata"]["labels"]["cks.io/role"], "control-plane");
        assert_eq!(json["spec"]["runStrategy"], "Always");
        assert_eq!(json["spec"]["template"]["spec"]["hostname"], "control-plane");
        assert_eq!(
            json["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"],
            "4Gi"
        );
        assert_eq!(
            json["spec"]["dataVolumeTemplates"][0]["spec"]["storage"]["resources"]["requests"]["storage"],
            "20Gi"
        );
        let back: VirtualMachine = serde_json::from_value(json).unwrap();
        assert_eq!(back, vm);
    }

    #[test]
    fn unset_storage_class_is_left_to_the_cluster_default() {
        let mut t = template(0);
        t.storage_class_name = None;
        let l = ClusterLayout::new("c1", "p", "c1", &t).unwrap();
        assert_eq!(l.vms(), [VmId::ControlPlane]);
        let vm = serde_json::to_value(l.virtual_machine(VmId::ControlPlane, RunStrategy::Always)).unwrap();
        assert!(
            vm["spec"]["dataVolumeTemplates"][0]["spec"]["storage"]
                .get("storageClassName")
                .is_none()
        );
    }

    #[test]
    fn cloud_init_secret_holds_the_userdata_the_vm_references() {
        let pki = ClusterPki::generate().unwrap();
        let l = layout(1);
        let secret = l.cloud_init_secret(VmId::Worker(1), &boot(&pki)).unwrap();
        let vm = l.virtual_machine(VmId::Worker(1), RunStrategy::Always);
        let referenced = vm.spec.template.spec.volumes[1]
            .cloud_init_no_cloud
            .as_ref()
            .unwrap();
        assert_eq!(
            secret.metadata.name,
            referenced.secret_ref.as_ref().map(|r| r.name.clone())
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("intro-x7k2p"));
        let data = secret.data.unwrap();
        let userdata = String::from_utf8(data["userdata"].0.clone()).unwrap();
        assert!(userdata.starts_with("#cloud-config\n"));
        assert_eq!(secret.metadata.labels.unwrap()["cks.io/vm"], "intro-x7k2p-w1");
    }

    #[test]
    fn control_plane_service_selects_the_control_plane_launcher_pod() {
        let svc = serde_json::to_value(layout(1).control_plane_service(None)).unwrap();
        assert_eq!(svc["metadata"]["name"], "intro-x7k2p-cp");
        assert_eq!(svc["metadata"]["namespace"], "intro-x7k2p");
        assert_eq!(
            svc["spec"],
            json!({
                "type": "ClusterIP",
                "selector": {"cks.io/vm": "intro-x7k2p-cp", "kubevirt.io": "virt-launcher"},
                "publishNotReadyAddresses": true,
                "ports": [{"name": "https", "protocol": "TCP", "port": 6443, "targetPort": 6443}],
            })
        );
        // The VMI (and so its launcher pod) carries the selected label.
        let vm = layout(1).virtual_machine(VmId::ControlPlane, RunStrategy::Always);
        let pod_labels = vm.spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels["cks.io/vm"], "intro-x7k2p-cp");
        assert_eq!(
            layout(1).api_server_url(),
            "https://intro-x7k2p-cp.intro-x7k2p.svc.cluster.local:6443"
        );
        let custom = layout(1).with_host_cluster_domain("corp.example.");
        assert_eq!(
            custom.control_plane_dns_name(),
            "intro-x7k2p-cp.intro-x7k2p.svc.corp.example"
        );
    }

    #[test]
    fn pki_and_kubeconfig_secrets_restore_the_same_credentials() {
        let pki = ClusterPki::generate().unwrap();
        let l = layout(1);
        let stored = l.pki_secret(&pki);
        assert_eq!(stored.metadata.name.as_deref(), Some("intro-x7k2p-pki"));
        let back = ClusterPki::from_secret_data(stored.data.as_ref().unwrap()).unwrap();
        // Everything rendered from the parsed-back PKI is identical: restart-safe.
        for id in l.vms() {
            assert_eq!(
                l.cloud_init(id, &boot(&back)).unwrap(),
                l.cloud_init(id, &boot(&pki)).unwrap()
            );
        }
        let secret = l.admin_kubeconfig_secret(&back).unwrap();
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("intro-x7k2p-admin-kubeconfig")
        );
        let yaml = String::from_utf8(secret.data.unwrap()["kubeconfig"].0.clone()).unwrap();
        let config = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(
            config.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://intro-x7k2p-cp.intro-x7k2p.svc.cluster.local:6443")
        );
    }

    #[test]
    fn snapshot_and_restore_name_the_vm_and_baseline() {
        let l = layout(1);
        let snap = serde_json::to_value(l.snapshot(VmId::Worker(1))).unwrap();
        assert_eq!(snap["apiVersion"], "snapshot.kubevirt.io/v1beta1");
        assert_eq!(snap["kind"], "VirtualMachineSnapshot");
        assert_eq!(snap["metadata"]["name"], "intro-x7k2p-w1-baseline");
        assert_eq!(
            snap["spec"],
            json!({
                "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "intro-x7k2p-w1"},
                "deletionPolicy": "Delete",
            })
        );
        let restore =
            serde_json::to_value(l.restore(VmId::Worker(1), 3, Some(VolumeRestorePolicy::InPlace))).unwrap();
        assert_eq!(restore["apiVersion"], "snapshot.kubevirt.io/v1beta1");
        assert_eq!(restore["kind"], "VirtualMachineRestore");
        assert_eq!(restore["metadata"]["name"], "intro-x7k2p-w1-reset-3");
        assert_eq!(
            restore["spec"],
            json!({
                "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "intro-x7k2p-w1"},
                "virtualMachineSnapshotName": "intro-x7k2p-w1-baseline",
                "targetReadinessPolicy": "WaitEventually",
                "volumeRestorePolicy": "InPlace",
            })
        );
        let default_policy = serde_json::to_value(l.restore(VmId::ControlPlane, 4, None)).unwrap();
        assert!(default_policy["spec"].get("volumeRestorePolicy").is_none());
    }

    #[test]
    fn vm_statuses_list_every_vm_with_target_and_snapshot() {
        let statuses = layout(2).vm_statuses();
        let summary: Vec<_> = statuses
            .iter()
            .map(|s| (s.name.as_str(), s.target.as_str(), s.snapshot.as_deref().unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                ("intro-x7k2p-cp", "control-plane", "intro-x7k2p-cp-baseline"),
                ("intro-x7k2p-w1", "worker-1", "intro-x7k2p-w1-baseline"),
                ("intro-x7k2p-w2", "worker-2", "intro-x7k2p-w2-baseline"),
            ]
        );
    }

    #[test]
    fn vm_status_is_ready_only_when_vm_and_vmi_are_ready() {
        let l = layout(1);
        let vm: VirtualMachine = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "intro-x7k2p-w1"},
            "spec": {"template": {"spec": {}}}, "status": {"ready": true, "printableStatus": "Running"}
        }))
        .unwrap();
        let vmi = |ready: &str| -> VirtualMachineInstance {
            serde_json::from_value(json!({
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "intro-x7k2p-w1"},
                "spec": {"domain": {"devices": {}}},
                "status": {"phase": "Running", "interfaces": [{"name": "default", "ipAddress": "10.244.3.7"}],
                           "conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        let snapshot: VirtualMachineSnapshot = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
            "metadata": {"name": "intro-x7k2p-w1-baseline"},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "intro-x7k2p-w1"}},
            "status": {"readyToUse": true, "phase": "Succeeded"}
        }))
        .unwrap();
        let ready_vmi = vmi("True");
        let status = l.vm_status(
            VmId::Worker(1),
            &Observed {
                vm: Some(&vm),
                vmi: Some(&ready_vmi),
                snapshot: Some(&snapshot),
            },
        );
        assert!(status.ready && status.snapshot_ready);
        assert_eq!(status.ip.as_deref(), Some("10.244.3.7"));
        assert_eq!(
            (status.name.as_str(), status.target.as_str()),
            ("intro-x7k2p-w1", "worker-1")
        );

        let booting = vmi("False");
        let status = l.vm_status(
            VmId::Worker(1),
            &Observed {
                vm: Some(&vm),
                vmi: Some(&booting),
                snapshot: None,
            },
        );
        assert!(!status.ready && !status.snapshot_ready);
        assert_eq!(status.ip.as_deref(), Some("10.244.3.7"));
        let stopped = l.vm_status(
            VmId::Worker(1),
            &Observed {
                vm: Some(&vm),
                ..Observed::default()
            },
        );
        assert!(!stopped.ready && stopped.ip.is_none());
    }

    #[test]
    fn layout_refuses_names_that_cannot_name_vms_or_services() {
        let t = template(10);
        let long = "a".repeat(60);
        let err = ClusterLayout::new(&long, "p", "ns", &t).unwrap_err();
        assert_eq!(err.category(), "InvalidClusterName");
        assert!(err.to_string().contains("-w10"), "{err}");
        let err = ClusterLayout::new("1abc", "p", "ns", &t).unwrap_err();
        assert!(err.to_string().contains("must start with a letter"), "{err}");
        let mut old = template(1);
        old.kubernetes_version = "1.20.0".to_owned();
        let err = ClusterLayout::new("c1", "p", "c1", &old).unwrap_err();
        assert_eq!(err.category(), "UnsupportedKubernetesVersion");
        let mut bad_extra = template(1);
        bad_extra.extra_cloud_init = Some("runcmd: [kubeadm reset -f]".to_owned());
        let err = ClusterLayout::new("c1", "p", "c1", &bad_extra).unwrap_err();
        assert_eq!(err.category(), "InvalidExtraCloudInit");
    }

    #[test]
    fn layout_from_practice_cluster_uses_its_name_and_pool() {
        let pc: PracticeCluster = serde_json::from_value(json!({
            "apiVersion": "cks.io/v1alpha1",
            "kind": "PracticeCluster",
            "metadata": {"name": "intro-x7k2p", "namespace": "cks"},
            "spec": {"pool": "intro", "templateHash": "abc", "template": serde_json::to_value(template(1)).unwrap()},
        }))
        .unwrap();
        let l = ClusterLayout::from_practice_cluster(&pc, "intro-x7k2p").unwrap();
        assert_eq!(l.cluster(), "intro-x7k2p");
        assert_eq!(l.namespace(), "intro-x7k2p");
        assert_eq!(l.labels(None)["cks.io/pool"], "intro");
        assert_eq!(l.vms(), [VmId::ControlPlane, VmId::Worker(1)]);
    }
}
