//! How the operator reaches a practice cluster once it is built: its API server with the admin
//! kubeconfig (readiness checks, `kubectl apply` setup steps, resource rules), and its VMs
//! over SSH with the pool's key (setup scripts, command and file rules), accepting only the
//! host key the cluster controller gave the VMs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use cks_api::practice_cluster::PracticeCluster;
use cks_kubevirt::naming::{self, VmId};
use cks_kubevirt::objects::{ClusterLayout, KUBECONFIG_KEY, SSH_HOST_KEY_PUBLIC};
use cks_validation::{Endpoint, PortForward, SshConfig, TargetResolver};
use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, ResourceExt};

use crate::config::{PracticeApiAccess, SshTransportKind};
use crate::context::Context;
use crate::error::{Error, Result, kube_err};

/// Key of the pool's SSH Secret holding the private key (OpenSSH or PEM).
pub const SSH_PRIVATE_KEY: &str = "ssh-privatekey";

/// Where a practice cluster's API server is reached.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiTarget {
    /// Admin kubeconfig (YAML) with the cluster CA and client certificate.
    pub kubeconfig: String,
    /// URL to connect to, overriding the kubeconfig's server.
    pub url: String,
    /// Name to verify the serving certificate against, when `url` is an IP.
    pub tls_server_name: Option<String>,
}

impl fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The kubeconfig holds the admin key: never print it.
        f.debug_struct("ApiTarget")
            .field("url", &self.url)
            .field("tls_server_name", &self.tls_server_name)
            .finish_non_exhaustive()
    }
}

impl ApiTarget {
    /// A client of the practice cluster's API with short timeouts (a practice cluster that
    /// does not answer must not hold a reconcile for long).
    pub async fn client(&self) -> Result<kube::Client, String> {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig).map_err(|e| e.to_string())?;
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        config.cluster_url = self.url.parse().map_err(|e| format!("URL {}: {e}", self.url))?;
        config.tls_server_name.clone_from(&self.tls_server_name);
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        kube::Client::try_from(config).map_err(|e| e.to_string())
    }
}

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

        let mut targets = TargetResolver::new();
        for vm in &status.vms {
            if let (Some(id), Some(ip)) = (VmId::from_target(&vm.target), vm.ip.as_deref()) {
                targets = targets.with(id, Endpoint::new(&vm.name, ip, ctx.config.ssh_port));
            }
        }

        let pool_ns = pc.namespace().unwrap_or_default();
        let key_secret = &pc.spec.template.ssh_key_secret_ref.name;
        let key_err = |reason: &str| Error::SshKey {
            namespace: pool_ns.clone(),
            name: key_secret.clone(),
            reason: reason.to_owned(),
        };
        let key = secret_value(ctx, &pool_ns, key_secret, SSH_PRIVATE_KEY)
            .await?
            .ok_or_else(|| key_err(&format!("missing or without {SSH_PRIVATE_KEY}")))?;
        let ssh = SshConfig::from_openssh(&pc.spec.template.ssh_user, &key)
            .map_err(|e| key_err(&format!("{SSH_PRIVATE_KEY} is not a usable private key: {e}")))?;
        // The host key the cluster controller gave the VMs through cloud-init: the only one
        // accepted, so a connection that reaches something else never logs in.
        let host_key_secret = naming::ssh_host_key_secret_name(&cluster);
        let host_key = secret_value(ctx, &vm_namespace, &host_key_secret, SSH_HOST_KEY_PUBLIC)
            .await?
            .ok_or_else(|| {
                access_err(format!(
                    "Secret {vm_namespace}/{host_key_secret} has no {SSH_HOST_KEY_PUBLIC}: the cluster has no pinned SSH host key (built before host keys were pinned; recreate it)"
                ))
            })?;
        let ssh = ssh
            .with_host_key_openssh(&host_key)
            .map_err(|e| access_err(format!("the pinned SSH host key: {e}")))?;
        let ssh = match ctx.config.ssh_transport {
            SshTransportKind::Direct => ssh,
            SshTransportKind::PortForward => {
                let tunnel = match &ctx.host_config {
                    Some(config) => PortForward::from_config(config, &vm_namespace)
                        .map_err(|e| access_err(format!("building the port-forward client: {e}")))?,
                    None => PortForward::new(ctx.client.clone(), &vm_namespace),
                };
                ssh.with_transport(Arc::new(tunnel))
            }
        };

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
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret =
        secrets
            .get_opt(name)
            .await
            .map_err(kube_err("get", "Secret", format!("{namespace}/{name}")))?;
    let Some(secret) = secret else { return Ok(None) };
    if let Some(value) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(String::from_utf8(value.0.clone()).ok());
    }
    Ok(secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
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

    #[test]
    fn debug_output_hides_the_kubeconfig() {
        let t = ApiTarget {
            kubeconfig: "client-key-data: SECRET".into(),
            url: "https://x:6443".into(),
            tls_server_name: None,
        };
        assert!(!format!("{t:?}").contains("SECRET"));
    }
}
