//! The public API of cks-lab: the four custom resources of group `cks.io/v1alpha1`, the label,
//! annotation and finalizer names the controllers agree on, and helpers for status conditions.
//!
//! This crate holds types only; it has no client logic, so every other crate can depend on it.

pub mod cluster_pool;
pub mod common;
pub mod conditions;
pub mod crds;
pub mod names;
pub mod practice_cluster;
pub mod quantity;
pub mod session;
pub mod validation_run;

pub use cluster_pool::{ClusterPool, ClusterPoolSpec, ClusterPoolStatus};
pub use practice_cluster::{
    PracticeCluster, PracticeClusterPhase, PracticeClusterSpec, PracticeClusterStatus,
};
pub use session::{Session, SessionPhase, SessionSpec, SessionStatus};
pub use validation_run::{ValidationRun, ValidationRunPhase, ValidationRunSpec, ValidationRunStatus};

/// API group of every cks-lab custom resource.
pub const GROUP: &str = "cks.io";
/// API version of every cks-lab custom resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "cks.io/v1alpha1";
