//! Deterministic names of everything a practice cluster consists of, so every object can be
//! found again from the cluster name alone (restart-safe reconciles), and the validation and
//! terminal target names (`control-plane`, `worker-1`, ...) the VMs answer to.

use std::fmt;

use cks_api::practice_cluster::VmRole;

/// Target name of the control-plane VM.
pub const CONTROL_PLANE_TARGET: &str = "control-plane";
/// Port of the practice cluster's API server.
pub const API_SERVER_PORT: u16 = 6443;
/// Default DNS domain of the host cluster, used to build the control plane's Service FQDN.
pub const DEFAULT_HOST_CLUSTER_DOMAIN: &str = "cluster.local";

/// One VM of a practice cluster: the control plane, or worker `n` (counted from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VmId {
    /// The control-plane VM.
    ControlPlane,
    /// Worker `n`, `n >= 1`.
    Worker(u32),
}

impl VmId {
    /// All VMs of a cluster with `workers` workers, control plane first.
    pub fn all(workers: u32) -> Vec<VmId> {
        std::iter::once(VmId::ControlPlane)
            .chain((1..=workers).map(VmId::Worker))
            .collect()
    }

    /// The VM's role.
    pub fn role(self) -> VmRole {
        match self {
            Self::ControlPlane => VmRole::ControlPlane,
            Self::Worker(_) => VmRole::Worker,
        }
    }

    /// Validation and terminal target name: `control-plane`, `worker-1`, ... It is also the
    /// VM's hostname and its Kubernetes Node name, so scenarios can name nodes portably.
    pub fn target(self) -> String {
        match self {
            Self::ControlPlane => CONTROL_PLANE_TARGET.to_owned(),
            Self::Worker(n) => format!("worker-{n}"),
        }
    }

    /// The VM name suffix: `cp`, `w1`, `w2`, ...
    fn suffix(self) -> String {
        match self {
            Self::ControlPlane => "cp".to_owned(),
            Self::Worker(n) => format!("w{n}"),
        }
    }

    /// Name of the KubeVirt VirtualMachine: `{cluster}-cp`, `{cluster}-w1`, ...
    pub fn vm_name(self, cluster: &str) -> String {
        format!("{cluster}-{}", self.suffix())
    }

    /// The VM a target name refers to. Besides `control-plane` and `worker-N`, accepts the
    /// names scenarios written for the reference system use: `worker` and `worker-node`
    /// (worker 1).
    pub fn from_target(target: &str) -> Option<VmId> {
        match target {
            CONTROL_PLANE_TARGET => Some(Self::ControlPlane),
            "worker" | "worker-node" => Some(Self::Worker(1)),
            _ => {
                let n: u32 = target.strip_prefix("worker-")?.parse().ok()?;
                // Refuse `worker-01` and `worker-0`: one spelling per VM.
                (n >= 1 && target == format!("worker-{n}")).then_some(Self::Worker(n))
            }
        }
    }

    /// The VM a VirtualMachine name of `cluster` refers to.
    pub fn from_vm_name(cluster: &str, vm: &str) -> Option<VmId> {
        let suffix = vm.strip_prefix(cluster)?.strip_prefix('-')?;
        if suffix == "cp" {
            return Some(Self::ControlPlane);
        }
        let n: u32 = suffix.strip_prefix('w')?.parse().ok()?;
        (n >= 1 && suffix == format!("w{n}")).then_some(Self::Worker(n))
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target())
    }
}

/// Name of the DataVolume (and PVC) holding a VM's root disk.
pub fn root_disk_name(vm: &str) -> String {
    format!("{vm}-root")
}

/// Name of the Secret holding a VM's cloud-init user data.
pub fn cloud_init_secret_name(vm: &str) -> String {
    format!("{vm}-cloudinit")
}

/// Name of a VM's baseline VirtualMachineSnapshot.
pub fn snapshot_name(vm: &str) -> String {
    format!("{vm}-baseline")
}

/// Name of the VirtualMachineRestore of a VM for reset number `reset` (the count of resets
/// started so far). A new reset never reuses the name of an older, possibly incomplete one.
pub fn restore_name(vm: &str, reset: u32) -> String {
    format!("{vm}-reset-{reset}")
}

/// Name of the Service in front of the control plane's API server.
pub fn control_plane_service_name(cluster: &str) -> String {
    VmId::ControlPlane.vm_name(cluster)
}

/// Name of the Secret holding the cluster's CA, bootstrap token and admin credentials.
pub fn pki_secret_name(cluster: &str) -> String {
    format!("{cluster}-pki")
}

/// Name of the Secret holding the admin kubeconfig (key `kubeconfig`).
pub fn admin_kubeconfig_secret_name(cluster: &str) -> String {
    format!("{cluster}-admin-kubeconfig")
}

/// Name of the Secret holding the cluster's pinned SSH host key pair (see
/// [`crate::objects::ClusterLayout::ssh_host_key_secret`]).
pub fn ssh_host_key_secret_name(cluster: &str) -> String {
    format!("{cluster}-ssh-host-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_names_and_targets_follow_the_cluster_name() {
        let ids = VmId::all(2);
        let names: Vec<_> = ids.iter().map(|id| id.vm_name("intro-x7k2p")).collect();
        assert_eq!(names, ["intro-x7k2p-cp", "intro-x7k2p-w1", "intro-x7k2p-w2"]);
        let targets: Vec<_> = ids.iter().map(|id| id.target()).collect();
        assert_eq!(targets, ["control-plane", "worker-1", "worker-2"]);
        assert_eq!(VmId::ControlPlane.role(), VmRole::ControlPlane);
        assert_eq!(VmId::Worker(2).role(), VmRole::Worker);
    }

    #[test]
    fn targets_parse_back_including_reference_system_aliases() {
        for id in VmId::all(3) {
            assert_eq!(VmId::from_target(&id.target()), Some(id));
            assert_eq!(VmId::from_vm_name("c1", &id.vm_name("c1")), Some(id));
        }
        assert_eq!(VmId::from_target("worker"), Some(VmId::Worker(1)));
        assert_eq!(VmId::from_target("worker-node"), Some(VmId::Worker(1)));
        for bad in ["worker-0", "worker-01", "worker-", "cp", "node01", ""] {
            assert_eq!(VmId::from_target(bad), None, "{bad}");
        }
        for bad in ["c1-w0", "c1-w01", "c2-cp", "c1cp", "c1-x"] {
            assert_eq!(VmId::from_vm_name("c1", bad), None, "{bad}");
        }
    }

    #[test]
    fn restore_names_differ_per_reset() {
        assert_eq!(snapshot_name("c-cp"), "c-cp-baseline");
        assert_eq!(restore_name("c-cp", 1), "c-cp-reset-1");
        assert_ne!(restore_name("c-cp", 1), restore_name("c-cp", 2));
    }
}
