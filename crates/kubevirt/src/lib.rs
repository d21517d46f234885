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
//! resources; everything here is deterministic given a [`pki::ClusterPki`], so reconciles can
//! rebuild any object after a restart. The golden image contract the cloud-init relies on is
//! in `docs/golden-image.md`.

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
