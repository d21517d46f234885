//! How the operator reaches a practice cluster once it is built: its API server with the admin
//! kubeconfig (readiness checks, `kubectl apply` setup steps, resource rules), and its VMs
//! over SSH with the pool's key (setup scripts, command and file rules), accepting only the
//! host key the cluster controller gave the VMs.

use std::fmt;

use cks_api::practice_cluster::PracticeCluster;
use cks_kubevirt::naming::{self, VmId};
use cks_kubevirt::objects::{ClusterLayout, KUBECONFIG_KEY};
use cks_ssh::{AccessError, ClusterSsh};
use cks_validation::{SshConfig, TargetResolver};
use kube::ResourceExt;

use crate::config::PracticeApiAccess;
use crate::context::Context;
use crate::error::{Error, Result, kube_err};

pub use cks_ssh::SSH_PRIVATE_KEY;

// Kept at its old path: the API target is what the probe checks, so it lives there.
pub use crate::probe::ApiTarget;

/// URL of a practice cluster's API and the TLS name to check, by access mode: the control
/// plane Service's DNS name (`service_url`), or the control-plane VMI's IP checked against
/// `service_dns_name`. `None` while the control plane has no IP in vmi-ip mode.
pub fn api_url(
    mode: PracticeApiAccess,
    service_url: &str,
    service_dns_name: &str,
    control_plane_ip: Option<&str>,
) -> Option<(String, Option<String>)> {
    match mode {
        PracticeApiAccess::Service => Some((service_url.to_owned(), None)),
        PracticeApiAccess::VmiIp => {
            let ip = control_plane_ip?;
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_owned()
            };
            Some((
                format!("https://{host}:{}", naming::API_SERVER_PORT),
                Some(service_dns_name.to_owned()),
            ))
        }
    }
}

/// Everything needed to act on one built practice cluster.
#[derive(Clone)]
pub struct PracticeAccess {
    /// PracticeCluster name.
    pub cluster: String,
    /// Namespace of the cluster's VMs.
    pub vm_namespace: String,
    /// Its API server.
    pub api: ApiTarget,
    /// SSH endpoint per VM that has an IP.
    pub targets: TargetResolver,
    /// Login user, key and transport.
    pub ssh: SshConfig,
}

impl fmt::Debug for PracticeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PracticeAccess")
            .field("cluster", &self.cluster)
            .field("vm_namespace", &self.vm_namespace)
            .field("api", &self.api)
            .field("targets", &self.targets)
            .field("ssh", &self.ssh)
            .finish()
    }
}

impl PracticeAccess {
    /// Reads the admin kubeconfig and the pool's SSH private key for a cluster that has been
    /// built (its status names the namespace and the VMs' IPs).
    pub async fn load(ctx: &Context, pc: &PracticeCluster) -> Result<Self> {
        let cluster = pc.name_any();
        let access_err = |reason: String| Error::Access {
            cluster: cluster.clone(),
            reason,
        };
        let status = pc
            .status
            .as_ref()
            .ok_or_else(|| access_err("it has no status yet".to_owned()))?;
        let vm_namespace = status
            .namespace
            .clone()
            .ok_or_else(|| access_err("its status names no namespace yet".to_owned()))?;

        let kubeconfig_secret = status
            .admin_kubeconfig_secret
            .clone()
            .unwrap_or_else(|| naming::admin_kubeconfig_secret_name(&cluster));
        let kubeconfig = secret_value(ctx, &vm_namespace, &kubeconfig_secret, KUBECONFIG_KEY)
            .await?
            .ok_or_else(|| {
                access_err(format!(
                    "Secret {vm_namespace}/{kubeconfig_secret} has no {KUBECONFIG_KEY}"
                ))
            })?;

        // The names the cluster controller built the cluster with.
        let layout = ClusterLayout::from_practice_cluster(pc, &vm_namespace)
            .map_err(|source| Error::Layout {
                cluster: cluster.clone(),
                source,
            })?
            .with_host_cluster_domain(&ctx.config.host_cluster_domain);
        let cp_name = layout.vm_name(VmId::ControlPlane);
        let cp_ip = status
            .vms
            .iter()
            .find(|v| v.name == cp_name)
            .and_then(|v| v.ip.as_deref());
        let (url, tls_server_name) = api_url(
            ctx.config.practice_api,
            &layout.api_server_url(),
            &layout.control_plane_dns_name(),
            cp_ip,
        )
        .ok_or_else(|| access_err("the control-plane VM has no IP yet".to_owned()))?;

        let options = cks_ssh::AccessOptions {
            port: ctx.config.ssh_port,
            transport: ctx.config.ssh_transport,
            host_config: ctx.host_config.clone(),
        };
        let ClusterSsh {
            targets, config: ssh, ..
        } = cks_ssh::access::load(&ctx.client, &options, pc)
            .await
            .map_err(|e| match e {
                AccessError::Cluster { reason } => access_err(reason),
                AccessError::Key {
                    namespace,
                    name,
                    reason,
                } => Error::SshKey {
                    namespace,
                    name,
                    reason,
                },
                AccessError::Read {
                    namespace,
                    name,
                    source,
                } => kube_err("get", "Secret", format!("{namespace}/{name}"))(source),
            })?;

        Ok(Self {
            cluster,
            vm_namespace,
            api: ApiTarget {
                kubeconfig,
                url,
                tls_server_name,
            },
            targets,
            ssh,
        })
    }

    /// A client of the practice cluster's API.
    pub async fn client(&self) -> Result<kube::Client> {
        self.api.client().await.map_err(|reason| Error::Access {
            cluster: self.cluster.clone(),
            reason: format!("practice cluster API: {reason}"),
        })
    }
}

/// One key of a Secret as UTF-8; `None` when the Secret or the key is missing.
pub(crate) async fn secret_value(
    ctx: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    cks_ssh::access::secret_value(&ctx.client, namespace, name, key)
        .await
        .map_err(kube_err("get", "Secret", format!("{namespace}/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_follows_the_access_mode() {
        let svc = "https://c-cp.c.svc.cluster.local:6443";
        let dns = "c-cp.c.svc.cluster.local";
        assert_eq!(
            api_url(PracticeApiAccess::Service, svc, dns, None),
            Some((svc.to_owned(), None))
        );
        assert_eq!(api_url(PracticeApiAccess::VmiIp, svc, dns, None), None);
        assert_eq!(
            api_url(PracticeApiAccess::VmiIp, svc, dns, Some("10.0.0.7")),
            Some(("https://10.0.0.7:6443".to_owned(), Some(dns.to_owned())))
        );
        assert_eq!(
            api_url(PracticeApiAccess::VmiIp, svc, dns, Some("fd00::7"))
                .unwrap()
                .0,
            "https://[fd00::7]:6443"
        );
    }
}
