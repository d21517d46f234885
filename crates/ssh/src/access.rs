//! SSH access to one built practice cluster, read from the host cluster: each VM's endpoint
//! from the PracticeCluster's status, the login key from the pool's `kubernetes.io/ssh-auth`
//! Secret, the pinned host key from the cluster's `{cluster}-ssh-host-key` Secret, and the
//! transport the deployment chose. The operator (setup steps, rules) and the gateway
//! (terminals) both reach VMs through this.

use std::sync::Arc;

use cks_api::practice_cluster::PracticeCluster;
use cks_kubevirt::naming::{self, VmId};
use cks_kubevirt::objects::SSH_HOST_KEY_PUBLIC;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::client::{Endpoint, SshConfig, TargetResolver};
use crate::portforward::PortForward;

/// Key of the pool's SSH Secret holding the private key (OpenSSH or PEM).
pub const SSH_PRIVATE_KEY: &str = "ssh-privatekey";

/// How the byte stream to a VM's SSH port is opened (the `--ssh-transport` flag of the
/// operator and the gateway).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// TCP straight to the VMI's IP (the caller's pod can route to the VMs' pod network).
    #[default]
    Direct,
    /// Tunnelled through the KubeVirt `portforward` subresource of the VMI, over the host
    /// cluster's API server (no route to the VMs needed).
    PortForward,
}

/// What is the same for every cluster a component reaches.
#[derive(Clone, Default)]
pub struct AccessOptions {
    /// The VMs' SSH port.
    pub port: u16,
    pub transport: TransportKind,
    /// The host cluster's client configuration, for a port-forward client of its own that
    /// sets `TCP_NODELAY` (see [`PortForward::from_config`]); without it the given client is
    /// used.
    pub host_config: Option<Arc<kube::Config>>,
}

impl std::fmt::Debug for AccessOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessOptions")
            .field("port", &self.port)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// Everything needed to open SSH sessions on one practice cluster's VMs.
#[derive(Debug, Clone)]
pub struct ClusterSsh {
    /// Namespace of the cluster's VMs.
    pub vm_namespace: String,
    /// SSH endpoint per VM that has an IP.
    pub targets: TargetResolver,
    /// Login user, key, pinned host key and transport.
    pub config: SshConfig,
}

/// Why a cluster's SSH access could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// Missing or unusable data of the cluster itself (status, host key, transport).
    #[error("{reason}")]
    Cluster { reason: String },
    /// The pool's SSH key Secret is missing or unusable.
    #[error("SSH key Secret {namespace}/{name}: {reason}")]
    Key {
        namespace: String,
        name: String,
        reason: String,
    },
    /// Reading a Secret failed.
    #[error("reading Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Reads the SSH access of a cluster that has been built (its status names the namespace and
/// the VMs' IPs).
pub async fn load(
    client: &kube::Client,
    options: &AccessOptions,
    pc: &PracticeCluster,
) -> Result<ClusterSsh, AccessError> {
    let cluster = pc.name_any();
    let not_ready = |reason: &str| AccessError::Cluster {
        reason: reason.to_owned(),
    };
    let status = pc
        .status
        .as_ref()
        .ok_or_else(|| not_ready("it has no status yet"))?;
    let vm_namespace = status
        .namespace
        .clone()
        .ok_or_else(|| not_ready("its status names no namespace yet"))?;

    let mut targets = TargetResolver::new();
    for vm in &status.vms {
        if let (Some(id), Some(ip)) = (VmId::from_target(&vm.target), vm.ip.as_deref()) {
            targets = targets.with(id, Endpoint::new(&vm.name, ip, options.port));
        }
    }

    let pool_ns = pc.namespace().unwrap_or_default();
    let key_secret = &pc.spec.template.ssh_key_secret_ref.name;
    let key_err = |reason: String| AccessError::Key {
        namespace: pool_ns.clone(),
        name: key_secret.clone(),
        reason,
    };
    let read = |namespace: &str, name: &str| {
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        move |source| AccessError::Read {
            namespace,
            name,
            source,
        }
    };
    let key = secret_value(client, &pool_ns, key_secret, SSH_PRIVATE_KEY)
        .await
        .map_err(read(&pool_ns, key_secret))?
        .ok_or_else(|| key_err(format!("missing or without {SSH_PRIVATE_KEY}")))?;
    let config = SshConfig::from_openssh(&pc.spec.template.ssh_user, &key)
        .map_err(|e| key_err(format!("{SSH_PRIVATE_KEY} is not a usable private key: {e}")))?;

    // The host key the cluster controller gave the VMs through cloud-init: the only one
    // accepted, so a connection that reaches something else never logs in.
    let host_key_secret = naming::ssh_host_key_secret_name(&cluster);
    let host_key = secret_value(client, &vm_namespace, &host_key_secret, SSH_HOST_KEY_PUBLIC)
        .await
        .map_err(read(&vm_namespace, &host_key_secret))?
        .ok_or_else(|| AccessError::Cluster {
            reason: format!(
                "Secret {vm_namespace}/{host_key_secret} has no {SSH_HOST_KEY_PUBLIC}: the cluster has no pinned SSH host key (built before host keys were pinned; recreate it)"
            ),
        })?;
    let config = config
        .with_host_key_openssh(&host_key)
        .map_err(|e| AccessError::Cluster {
            reason: format!("the pinned SSH host key: {e}"),
        })?;
    let config = match options.transport {
        TransportKind::Direct => config,
        TransportKind::PortForward => {
            let tunnel = match &options.host_config {
                Some(host) => {
                    PortForward::from_config(host, &vm_namespace).map_err(|e| AccessError::Cluster {
                        reason: format!("building the port-forward client: {e}"),
                    })?
                }
                None => PortForward::new(client.clone(), &vm_namespace),
            };
            config.with_transport(Arc::new(tunnel))
        }
    };
    Ok(ClusterSsh {
        vm_namespace,
        targets,
        config,
    })
}

/// One key of a Secret as UTF-8; `None` when the Secret or the key is missing.
pub async fn secret_value(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets.get_opt(name).await?;
    let Some(secret) = secret else { return Ok(None) };
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(String::from_utf8(value.0.clone()).ok());
    }
    Ok(secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
}
