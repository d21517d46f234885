//! `cks-ssh`: how cks-lab components reach a practice cluster's VMs over SSH. The operator
//! runs setup scripts and validation rules through it (via `cks-validation`), the gateway
//! bridges terminals to it; neither needs the other's code.
//!
//! - [`client`]: endpoints, transports, login configuration and [`connect`] with pinned host
//!   keys.
//! - [`portforward`]: the transport through the KubeVirt `portforward` subresource.
//! - [`access`]: assembling all of that for one PracticeCluster from the host cluster's
//!   objects.

pub mod access;
pub mod client;
pub mod portforward;

pub use access::{AccessError, AccessOptions, ClusterSsh, SSH_PRIVATE_KEY, TransportKind};
pub use client::{
    ConnectError, Connection, DEFAULT_OUTPUT_LIMIT, Direct, Endpoint, HostKeyCheck, HostKeyPair, KeyError,
    SshConfig, SshStream, TargetResolver, Transport, connect, connect_with, generate_host_key,
};
pub use portforward::PortForward;
