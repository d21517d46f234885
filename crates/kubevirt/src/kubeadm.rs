//! kubeadm configuration files for the control plane (`InitConfiguration` +
//! `ClusterConfiguration`) and the workers (`JoinConfiguration`), as typed documents.
//!
//! `kubeadm.k8s.io/v1beta4` is used for Kubernetes 1.31 and later (where it is the current
//! API), `v1beta3` for 1.22 to 1.30. The two differ, for what is written here, only in the
//! shape of `extraArgs` (a list of `{name, value}` in v1beta4, a map in v1beta3) and in where
//! the discovery timeout lives (`timeouts.discovery` vs `discovery.timeout`).
//!
//! The control plane is made independent of its IP address, which changes on every VM start
//! (see `docs/golden-image.md`): etcd listens on loopback only, the API server certificate
//! also carries `127.0.0.1`, and clients reach the API through the control plane's Service
//! (its ClusterIP is the `controlPlaneEndpoint`).

use serde::Serialize;

use crate::error::{Error, Result};

/// The containerd socket of the golden image.
pub const CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";
/// Lifetime of the bootstrap token: long enough for slow clones and retried workers, yet it
/// expires, so a security practice cluster does not keep a standing join credential.
pub const BOOTSTRAP_TOKEN_TTL: &str = "24h0m0s";
/// How long a worker waits for the control plane to publish its join information. Workers
/// boot in parallel with the control plane, so this covers its whole `kubeadm init`.
pub const DISCOVERY_TIMEOUT: &str = "30m0s";

/// The kubeadm configuration API version to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeadmApi {
    /// `kubeadm.k8s.io/v1beta3` (kubeadm 1.22 to 1.30).
    V1Beta3,
    /// `kubeadm.k8s.io/v1beta4` (kubeadm 1.31 and later).
    V1Beta4,
}

impl KubeadmApi {
    /// `apiVersion` of the documents.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1Beta3 => "kubeadm.k8s.io/v1beta3",
            Self::V1Beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }

    fn extra_args(self, args: &[(&str, String)]) -> serde_json::Value {
        match self {
            Self::V1Beta3 => serde_json::Value::Object(
                args.iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
                    .collect(),
            ),
            Self::V1Beta4 => serde_json::Value::Array(
                args.iter()
                    .map(|(k, v)| serde_json::json!({ "name": k, "value": v }))
                    .collect(),
            ),
        }
    }
}

/// A Kubernetes version from a template: `1.33` or `1.33.2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesVersion {
    minor: u32,
    patch: Option<u32>,
    text: String,
}

impl KubernetesVersion {
    /// Parses `1.MINOR` or `1.MINOR.PATCH` (an optional leading `v` is accepted).
    pub fn parse(version: &str) -> Result<Self> {
        let unsupported = |reason| Error::UnsupportedKubernetesVersion {
            version: version.to_owned(),
            reason,
        };
        let text = version.trim().trim_start_matches('v');
        let mut parts = text.split('.');
        let (Some("1"), Some(minor)) = (parts.next(), parts.next()) else {
            return Err(unsupported("expected 1.MINOR or 1.MINOR.PATCH"));
        };
        let minor: u32 = minor
            .parse()
            .map_err(|_| unsupported("minor version is not a number"))?;
        let patch = match parts.next() {
            None => None,
            Some(p) => Some(
                p.parse()
                    .map_err(|_| unsupported("patch version is not a number"))?,
            ),
        };
        if parts.next().is_some() {
            return Err(unsupported("expected 1.MINOR or 1.MINOR.PATCH"));
        }
        if minor < 22 {
            return Err(unsupported(
                "kubeadm configuration v1beta3 needs Kubernetes 1.22 or later",
            ));
        }
        Ok(Self {
            minor,
            patch,
            text: text.to_owned(),
        })
    }

    /// The kubeadm configuration API for this version.
    pub fn kubeadm_api(&self) -> KubeadmApi {
        if self.minor >= 31 {
            KubeadmApi::V1Beta4
        } else {
            KubeadmApi::V1Beta3
        }
    }

    /// `kubernetesVersion` for ClusterConfiguration: `v1.33.2`. Without a patch version it is
    /// left out, and kubeadm uses its own version (after a lookup of the latest release that
    /// fails offline), which is the golden image's version.
    pub fn cluster_configuration_version(&self) -> Option<String> {
        self.patch.map(|_| format!("v{}", self.text))
    }
}

/// Everything the control plane's kubeadm configuration depends on.
#[derive(Clone, Debug)]
pub struct InitParams<'a> {
    /// Kubernetes version of the cluster.
    pub version: &'a KubernetesVersion,
    /// Node name (the VM's target name).
    pub node_name: &'a str,
    /// The full bootstrap token, `<id>.<secret>`.
    pub token: &'a str,
    /// `controlPlaneEndpoint`, `host:port`: the control plane Service's ClusterIP and 6443.
    pub control_plane_endpoint: &'a str,
    /// Extra names for the API server certificate.
    pub cert_sans: &'a [String],
    /// Pod network CIDR.
    pub pod_subnet: &'a str,
    /// Service network CIDR.
    pub service_subnet: &'a str,
    /// kubeadm preflight checks to ignore (for example `NumCPU` on a 1-CPU control plane).
    pub ignore_preflight_errors: &'a [&'a str],
}

/// The control plane's kubeadm configuration: `InitConfiguration` and `ClusterConfiguration`
/// as one multi-document YAML file for `kubeadm init --config`.
pub fn init_configuration(p: &InitParams<'_>) -> Result<String> {
    let api = p.version.kubeadm_api();
    let loopback = |port: u16| format!("https://127.0.0.1:{port}");
    let init = InitConfiguration {
        api_version: api.api_version(),
        kind: "InitConfiguration",
        bootstrap_tokens: vec![BootstrapTokenConfig {
            token: p.token,
            description: "cks-lab worker join token",
            ttl: BOOTSTRAP_TOKEN_TTL,
            usages: &["signing", "authentication"],
            groups: &["system:bootstrappers:kubeadm:default-node-token"],
        }],
        node_registration: NodeRegistration {
            name: p.node_name,
            cri_socket: CRI_SOCKET,
            ignore_preflight_errors: p.ignore_preflight_errors,
        },
    };
    let cluster = ClusterConfiguration {
        api_version: api.api_version(),
        kind: "ClusterConfiguration",
        kubernetes_version: p.version.cluster_configuration_version(),
        control_plane_endpoint: p.control_plane_endpoint,
        networking: Networking {
            pod_subnet: p.pod_subnet,
            service_subnet: p.service_subnet,
        },
        api_server: ApiServer {
            cert_sans: p.cert_sans,
        },
        etcd: Etcd {
            local: LocalEtcd {
                // Loopback only: a single etcd member needs no peers, and loopback addresses
                // survive the VM's IP changing between starts.
                extra_args: api.extra_args(&[
                    ("listen-client-urls", loopback(2379)),
                    ("advertise-client-urls", loopback(2379)),
                    ("listen-peer-urls", loopback(2380)),
                    ("initial-advertise-peer-urls", loopback(2380)),
                    ("initial-cluster", format!("{}={}", p.node_name, loopback(2380))),
                ]),
                server_cert_sans: &["127.0.0.1", "localhost"],
                peer_cert_sans: &["127.0.0.1", "localhost"],
            },
        },
    };
    to_yaml_documents(
        "kubeadm InitConfiguration",
        vec![serde_json::to_value(init), serde_json::to_value(cluster)],
    )
}

/// Everything a worker's kubeadm configuration depends on.
#[derive(Clone, Debug)]
pub struct JoinParams<'a> {
    /// Kubernetes version of the cluster.
    pub version: &'a KubernetesVersion,
    /// Node name (the VM's target name).
    pub node_name: &'a str,
    /// The full bootstrap token, `<id>.<secret>`.
    pub token: &'a str,
    /// `sha256:<hex>` of the CA's public key.
    pub ca_cert_hash: &'a str,
    /// API server endpoint, `host:port`: the control plane Service's ClusterIP and 6443.
    pub control_plane_endpoint: &'a str,
}

/// A worker's `JoinConfiguration` for `kubeadm join --config`.
pub fn join_configuration(p: &JoinParams<'_>) -> Result<String> {
    let api = p.version.kubeadm_api();
    let join = JoinConfiguration {
        api_version: api.api_version(),
        kind: "JoinConfiguration",
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: p.control_plane_endpoint,
                token: p.token,
                ca_cert_hashes: vec![p.ca_cert_hash],
            },
            timeout: (api == KubeadmApi::V1Beta3).then_some(DISCOVERY_TIMEOUT),
        },
        node_registration: NodeRegistration {
            name: p.node_name,
            cri_socket: CRI_SOCKET,
            ignore_preflight_errors: &[],
        },
        timeouts: (api == KubeadmApi::V1Beta4).then_some(JoinTimeouts {
            discovery: DISCOVERY_TIMEOUT,
        }),
    };
    to_yaml_documents("kubeadm JoinConfiguration", vec![serde_json::to_value(join)])
}

fn to_yaml_documents(what: &'static str, docs: Vec<serde_json::Result<serde_json::Value>>) -> Result<String> {
    let err = |message: String| Error::Serialize { what, message };
    let docs = docs
        .into_iter()
        .map(|d| d.map_err(|e| err(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    serde_saphyr::to_string_multiple(&docs).map_err(|e| err(e.to_string()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration<'a> {
    api_version: &'a str,
    kind: &'a str,
    bootstrap_tokens: Vec<BootstrapTokenConfig<'a>>,
    node_registration: NodeRegistration<'a>,
}

#[derive(Serialize)]
struct BootstrapTokenConfig<'a> {
    token: &'a str,
    description: &'a str,
    ttl: &'a str,
    usages: &'a [&'a str],
    groups: &'a [&'a str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration<'a> {
    name: &'a str,
    cri_socket: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ignore_preflight_errors: &'a [&'a str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration<'a> {
    api_version: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes_version: Option<String>,
    control_plane_endpoint: &'a str,
    networking: Networking<'a>,
    api_server: ApiServer<'a>,
    etcd: Etcd<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking<'a> {
    pod_subnet: &'a str,
    service_subnet: &'a str,
}

#[derive(Serialize)]
struct ApiServer<'a> {
    #[serde(rename = "certSANs")]
    cert_sans: &'a [String],
}

#[derive(Serialize)]
struct Etcd<'a> {
    local: LocalEtcd<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocalEtcd<'a> {
    extra_args: serde_json::Value,
    #[serde(rename = "serverCertSANs")]
    server_cert_sans: &'a [&'a str],
    #[serde(rename = "peerCertSANs")]
    peer_cert_sans: &'a [&'a str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration<'a> {
    api_version: &'a str,
    kind: &'a str,
    discovery: Discovery<'a>,
    node_registration: NodeRegistration<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeouts: Option<JoinTimeouts<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery<'a> {
    bootstrap_token: BootstrapTokenDiscovery<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery<'a> {
    api_server_endpoint: &'a str,
    token: &'a str,
    ca_cert_hashes: Vec<&'a str>,
}

#[derive(Serialize)]
struct JoinTimeouts<'a> {
    discovery: &'a str,
}

/// Parses kubeadm's multi-document output back, for tests.
#[cfg(test)]
pub(crate) fn parse_documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_str_multiple(yaml).expect("kubeadm config parses as YAML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(version: &str) -> KubernetesVersion {
        KubernetesVersion::parse(version).unwrap()
    }

    fn init(version: &KubernetesVersion) -> Vec<serde_json::Value> {
        let sans = vec!["c1-cp.c1.svc.cluster.local".to_owned(), "127.0.0.1".to_owned()];
        let yaml = init_configuration(&InitParams {
            version,
            node_name: "control-plane",
            token: "abcdef.0123456789abcdef",
            control_plane_endpoint: "10.96.12.34:6443",
            cert_sans: &sans,
            pod_subnet: "10.244.0.0/16",
            service_subnet: "10.96.0.0/12",
            ignore_preflight_errors: &[],
        })
        .unwrap();
        parse_documents(&yaml)
    }

    #[test]
    fn versions_pick_the_kubeadm_api_and_exact_kubernetes_version() {
        assert_eq!(v("1.33.0").kubeadm_api(), KubeadmApi::V1Beta4);
        assert_eq!(v("1.31").kubeadm_api(), KubeadmApi::V1Beta4);
        assert_eq!(v("1.30.4").kubeadm_api(), KubeadmApi::V1Beta3);
        assert_eq!(
            v("1.33.0").cluster_configuration_version().as_deref(),
            Some("v1.33.0")
        );
        assert_eq!(
            v("v1.33.1").cluster_configuration_version().as_deref(),
            Some("v1.33.1")
        );
        assert_eq!(v("1.33").cluster_configuration_version(), None);
        for bad in ["1.21.0", "2.1.0", "1", "1.x", "1.33.0.1", "1.33.x"] {
            let err = KubernetesVersion::parse(bad).unwrap_err();
            assert_eq!(err.category(), "UnsupportedKubernetesVersion", "{bad}");
        }
    }

    #[test]
    fn init_configuration_v1beta4_has_token_endpoint_networking_and_loopback_etcd() {
        let docs = init(&v("1.33.0"));
        assert_eq!(docs.len(), 2);
        let (init, cluster) = (&docs[0], &docs[1]);
        assert_eq!(init["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(init["kind"], "InitConfiguration");
        assert_eq!(
            init["bootstrapTokens"][0],
            json!({
                "token": "abcdef.0123456789abcdef",
                "description": "cks-lab worker join token",
                "ttl": "24h0m0s",
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            })
        );
        assert_eq!(
            init["nodeRegistration"],
            json!({"name": "control-plane", "criSocket": "unix:///var/run/containerd/containerd.sock"})
        );
        assert_eq!(cluster["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(cluster["kind"], "ClusterConfiguration");
        assert_eq!(cluster["kubernetesVersion"], "v1.33.0");
        assert_eq!(cluster["controlPlaneEndpoint"], "10.96.12.34:6443");
        assert_eq!(
            cluster["networking"],
            json!({"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"})
        );
        assert_eq!(
            cluster["apiServer"]["certSANs"],
            json!(["c1-cp.c1.svc.cluster.local", "127.0.0.1"])
        );
        let args = &cluster["etcd"]["local"]["extraArgs"];
        assert!(args.as_array().unwrap().contains(&json!({
            "name": "initial-cluster", "value": "control-plane=https://127.0.0.1:2380"
        })));
        assert!(args.as_array().unwrap().contains(&json!({
            "name": "listen-client-urls", "value": "https://127.0.0.1:2379"
        })));
        assert_eq!(
            cluster["etcd"]["local"]["serverCertSANs"],
            json!(["127.0.0.1", "localhost"])
        );
    }

    #[test]
    fn init_configuration_v1beta3_uses_map_extra_args() {
        let docs = init(&v("1.30.2"));
        assert_eq!(docs[0]["apiVersion"], "kubeadm.k8s.io/v1beta3");
        assert_eq!(docs[1]["apiVersion"], "kubeadm.k8s.io/v1beta3");
        assert_eq!(
            docs[1]["etcd"]["local"]["extraArgs"]["listen-peer-urls"],
            "https://127.0.0.1:2380"
        );
    }

    #[test]
    fn join_configuration_pins_the_ca_and_waits_for_the_control_plane() {
        let join = |version: &str| {
            let yaml = join_configuration(&JoinParams {
                version: &v(version),
                node_name: "worker-1",
                token: "abcdef.0123456789abcdef",
                ca_cert_hash: "sha256:00ff",
                control_plane_endpoint: "10.96.12.34:6443",
            })
            .unwrap();
            parse_documents(&yaml).remove(0)
        };
        let doc = join("1.33.0");
        assert_eq!(doc["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(doc["kind"], "JoinConfiguration");
        assert_eq!(
            doc["discovery"],
            json!({"bootstrapToken": {
                "apiServerEndpoint": "10.96.12.34:6443",
                "token": "abcdef.0123456789abcdef",
                "caCertHashes": ["sha256:00ff"],
            }})
        );
        assert_eq!(doc["timeouts"], json!({"discovery": "30m0s"}));
        assert_eq!(doc["nodeRegistration"]["name"], "worker-1");

        let old = join("1.29.0");
        assert_eq!(old["apiVersion"], "kubeadm.k8s.io/v1beta3");
        assert_eq!(old["discovery"]["timeout"], "30m0s");
        assert!(old.get("timeouts").is_none());
    }

    #[test]
    fn tokens_that_look_like_numbers_stay_strings() {
        let version = KubernetesVersion::parse("1.33.0").unwrap();
        for token in [
            "123456.1234567890123456",
            "000000.0000000000000000",
            "1e1000.0000000000000000",
        ] {
            let yaml = join_configuration(&JoinParams {
                version: &version,
                node_name: "worker-1",
                token,
                ca_cert_hash: "sha256:00",
                control_plane_endpoint: "10.0.0.1:6443",
            })
            .unwrap();
            let doc = parse_documents(&yaml).remove(0);
            assert_eq!(doc["discovery"]["bootstrapToken"]["token"], token, "{yaml}");
        }
    }
}
