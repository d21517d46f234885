//! KubeVirt side of cks-lab practice clusters, as pure functions without a client:
//!
//! - typed `kubevirt.io/v1`, `cdi.kubevirt.io/v1beta1` and `snapshot.kubevirt.io/v1beta1`
//!   resources ([`kubevirt`], [`cdi`], [`snapshot`]) with the fields the operator uses;
//! - deterministic names and target names ([`naming`]);
//! - the cluster PKI and kubeadm join material ([`pki`]);
//! - kubeadm configuration and cloud-init rendering ([`kubeadm`], [`cloud_init`]);
//! - the objects of one practice cluster built from its template ([`objects`]).
//!
//! The operator applies what these functions return and reads status back through the typed
//! resources. Everything here is deterministic given the cluster's [`pki::ClusterPki`] (kept
//! in a Secret) and its control plane Service's ClusterIP, so reconciles can rebuild any
//! object after a restart. Typical order: PKI Secret and control plane Service
//! ([`objects::ClusterLayout::control_plane_service`]) first, then per VM the cloud-init
//! Secret and the VirtualMachine. The golden image contract the cloud-init relies on is in
//! `docs/golden-image.md`.

pub mod cdi;
pub mod cloud_init;
pub mod common;
pub mod error;
pub mod kubeadm;
pub mod kubevirt;
pub mod naming;
pub mod objects;
pub mod pki;
pub mod snapshot;

pub use error::{Error, Result};

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;

    fn gvk<K: Resource<DynamicType = ()>>() -> (String, String, String) {
        (
            K::api_version(&()).into_owned(),
            K::kind(&()).into_owned(),
            K::plural(&()).into_owned(),
        )
    }

    #[test]
    fn resources_address_the_real_kubevirt_and_cdi_apis() {
        let expected = [
            (
                gvk::<kubevirt::VirtualMachine>(),
                ("kubevirt.io/v1", "VirtualMachine", "virtualmachines"),
            ),
            (
                gvk::<kubevirt::VirtualMachineInstance>(),
                (
                    "kubevirt.io/v1",
                    "VirtualMachineInstance",
                    "virtualmachineinstances",
                ),
            ),
            (
                gvk::<cdi::DataVolume>(),
                ("cdi.kubevirt.io/v1beta1", "DataVolume", "datavolumes"),
            ),
            (
                gvk::<snapshot::VirtualMachineSnapshot>(),
                (
                    "snapshot.kubevirt.io/v1beta1",
                    "VirtualMachineSnapshot",
                    "virtualmachinesnapshots",
                ),
            ),
            (
                gvk::<snapshot::VirtualMachineSnapshotContent>(),
                (
                    "snapshot.kubevirt.io/v1beta1",
                    "VirtualMachineSnapshotContent",
                    "virtualmachinesnapshotcontents",
                ),
            ),
            (
                gvk::<snapshot::VirtualMachineRestore>(),
                (
                    "snapshot.kubevirt.io/v1beta1",
                    "VirtualMachineRestore",
                    "virtualmachinerestores",
                ),
            ),
        ];
        for ((api_version, kind, plural), want) in expected {
            assert_eq!((api_version.as_str(), kind.as_str(), plural.as_str()), want);
        }
    }
}
