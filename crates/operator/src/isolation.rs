//! The namespace of a practice cluster and what isolates it on the host cluster: a
//! ResourceQuota and NetworkPolicies from the pool's `isolation` settings, and whether that
//! quota holds what a cluster of the template needs. Pure builders.

use std::collections::BTreeMap;

use cks_api::cluster_pool::{ClusterTemplate, IsolationPolicy, ResetStrategy};
use cks_api::quantity;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Label every namespace carries with its own name (set by the API server since 1.21).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Name of the ResourceQuota in a cluster namespace.
pub const QUOTA_NAME: &str = "cks-cluster-quota";
/// Names of the NetworkPolicies in a cluster namespace.
pub const POLICY_NAMES: [&str; 2] = ["cks-isolation", "cks-allow-operator"];
/// Ports the operator and gateway reach on the VMs: the API server and SSH.
const OPERATOR_PORTS: [i32; 2] = [6443, 22];

/// The namespace `name` with the cluster's labels.
pub fn namespace(name: &str, labels: &BTreeMap<String, String>) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The ResourceQuota of the cluster's namespace, when the pool sets limits.
pub fn resource_quota(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    isolation: &IsolationPolicy,
) -> Option<ResourceQuota> {
    let limits = isolation.resource_quota.as_ref()?;
    let mut hard = BTreeMap::new();
    let mut put = |key: &str, value: Option<Quantity>| {
        if let Some(v) = value {
            hard.insert(key.to_owned(), v);
        }
    };
    put("requests.cpu", limits.cpu.clone());
    put("requests.memory", limits.memory.clone());
    put("requests.storage", limits.storage.clone());
    put("pods", limits.pods.map(|p| Quantity(p.to_string())));
    Some(ResourceQuota {
        metadata: meta(QUOTA_NAME, namespace, labels),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    })
}

/// Whether a pool's ResourceQuota holds one of its clusters at its peak, with the
/// arithmetic for the pool's status; `None` when the pool sets no quota.
///
/// The peak is a `Snapshot` reset: a VirtualMachineRestore writes each VM's disk into a new
/// PVC while the PVC it replaces still exists (the old one is deleted once the cluster is
/// back), so `requests.storage` must hold every disk twice. A `Recreate` reset builds a new
/// cluster in a new namespace, so once is enough. Memory counts the VMs' guest memory (the
/// virt-launcher pods request a little more), pods one virt-launcher pod per VM. CPU is not
/// checked: what a VM's pod requests per core depends on KubeVirt's CPU allocation ratio.
pub fn quota_check(
    template: &ClusterTemplate,
    reset: ResetStrategy,
    isolation: &IsolationPolicy,
) -> Option<QuotaCheck> {
    let limits = isolation.resource_quota.as_ref()?;
    let workers = i128::from(template.workers.count.max(0));
    let vms = 1 + workers;
    let mut shortfalls = Vec::new();
    let mut fits = Vec::new();
    let mut compare = |what: &str, need: Option<i128>, how: String, limit: &Option<Quantity>| {
        let Some(limit) = limit else { return };
        let (Some(need), Some(have)) = (need, quantity::millis(&limit.0)) else {
            shortfalls.push(format!("{what}: cannot compare {how} with quota {}", limit.0));
            return;
        };
        if need > have {
            shortfalls.push(format!(
                "{what}: {how} = {} > quota {}",
                quantity::format_bytes(need),
                limit.0
            ));
        } else {
            fits.push(format!("{what} {} of {}", quantity::format_bytes(need), limit.0));
        }
    };
    let cp_disk = quantity::millis(&template.control_plane.disk_size.0);
    let w_disk = quantity::millis(&template.workers.disk_size.0);
    let disks = cp_disk.zip(w_disk).map(|(c, w)| c + workers * w);
    let disk_terms = format!(
        "{} + {workers} × {}",
        template.control_plane.disk_size.0, template.workers.disk_size.0
    );
    let (storage, storage_how) = match reset {
        ResetStrategy::Snapshot => (
            disks.map(|d| 2 * d),
            format!("a Snapshot reset holds each disk and its restored copy: 2 × ({disk_terms})"),
        ),
        ResetStrategy::Recreate => (disks, format!("the disks: {disk_terms}")),
    };
    compare("storage", storage, storage_how, &limits.storage);
    let memory = quantity::millis(&template.control_plane.memory.0)
        .zip(quantity::millis(&template.workers.memory.0))
        .map(|(c, w)| c + workers * w);
    let memory_how = format!(
        "the VMs' memory {} + {workers} × {}",
        template.control_plane.memory.0, template.workers.memory.0
    );
    compare("memory", memory, memory_how, &limits.memory);
    if let Some(pods) = limits.pods
        && i128::from(pods) < vms
    {
        shortfalls.push(format!(
            "pods: one virt-launcher pod per VM = {vms} > quota {pods}"
        ));
    } else if let Some(pods) = limits.pods {
        fits.push(format!("pods {vms} of {pods}"));
    }
    Some(if shortfalls.is_empty() {
        QuotaCheck {
            sufficient: true,
            message: format!(
                "the ResourceQuota holds a cluster and its reset: {}",
                fits.join(", ")
            ),
        }
    } else {
        QuotaCheck {
            sufficient: false,
            message: format!(
                "the ResourceQuota is too small for a cluster of this template: {}",
                shortfalls.join("; ")
            ),
        }
    })
}

/// Outcome of [`quota_check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaCheck {
    /// The quota holds a cluster at its peak.
    pub sufficient: bool,
    /// The arithmetic, for the pool's `QuotaSufficient` condition.
    pub message: String,
}

fn meta(name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some("TCP".to_owned()),
        port: Some(IntOrString::Int(port)),
        end_port: None,
    }
}

fn same_namespace() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }
}

/// The NetworkPolicies of the cluster's namespace, empty when the pool turns them off.
///
/// `cks-isolation` selects every pod (so everything not allowed is denied, both ways) and
/// allows: traffic between the cluster's own VMs (kubeadm, kubelet, CNI), DNS to the host
/// cluster's resolver, and the pool's egress allow-list. `cks-allow-operator` lets the
/// operator's namespace reach the API server and SSH of every VM.
pub fn network_policies(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    isolation: &IsolationPolicy,
    operator_namespace: &str,
) -> Vec<NetworkPolicy> {
    if !isolation.network_policy {
        return Vec::new();
    }
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(
            ["UDP", "TCP"]
                .into_iter()
                .map(|protocol| NetworkPolicyPort {
                    protocol: Some(protocol.to_owned()),
                    port: Some(IntOrString::Int(53)),
                    end_port: None,
                })
                .collect(),
        ),
    };
    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![same_namespace()]),
            ports: None,
        },
        dns,
    ];
    egress.extend(isolation.egress.iter().map(|rule| NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: rule.cidr.clone(),
                except: (!rule.except.is_empty()).then(|| rule.except.clone()),
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: (!rule.ports.is_empty()).then(|| rule.ports.iter().map(|p| tcp(p.0)).collect()),
    }));
    let isolation_policy = NetworkPolicy {
        metadata: meta(POLICY_NAMES[0], namespace, labels),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![same_namespace()]),
                ports: None,
            }]),
            egress: Some(egress),
        }),
    };
    let operator_policy = NetworkPolicy {
        metadata: meta(POLICY_NAMES[1], namespace, labels),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            NAMESPACE_NAME_LABEL.to_owned(),
                            operator_namespace.to_owned(),
                        )])),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(OPERATOR_PORTS.into_iter().map(tcp).collect()),
            }]),
            egress: None,
        }),
    };
    vec![isolation_policy, operator_policy]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn isolation() -> IsolationPolicy {
        serde_json::from_value(json!({
            "egress": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"], "ports": [443]}],
            "resourceQuota": {"cpu": "8", "memory": "12Gi", "pods": 20},
        }))
        .unwrap()
    }

    #[test]
    fn quota_holds_the_pool_limits() {
        let q = serde_json::to_value(resource_quota("c1", &BTreeMap::new(), &isolation()).unwrap()).unwrap();
        assert_eq!(q["metadata"]["namespace"], "c1");
        assert_eq!(
            q["spec"]["hard"],
            json!({"requests.cpu": "8", "requests.memory": "12Gi", "pods": "20"})
        );
        let none = IsolationPolicy::default();
        assert!(resource_quota("c1", &BTreeMap::new(), &none).is_none());
    }

    #[test]
    fn policies_deny_by_default_and_allow_vms_dns_egress_and_operator() {
        let policies = network_policies("c1", &BTreeMap::new(), &isolation(), "cks-lab");
        let p = serde_json::to_value(&policies).unwrap();
        assert_eq!(p[0]["spec"]["podSelector"], json!({}));
        assert_eq!(p[0]["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(p[0]["spec"]["ingress"], json!([{"from": [{"podSelector": {}}]}]));
        let egress = &p[0]["spec"]["egress"];
        assert_eq!(egress[0], json!({"to": [{"podSelector": {}}]}));
        assert_eq!(egress[1]["ports"][0], json!({"protocol": "UDP", "port": 53}));
        assert_eq!(
            egress[2],
            json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                   "ports": [{"protocol": "TCP", "port": 443}]})
        );
        assert_eq!(
            p[1]["spec"]["ingress"][0],
            json!({
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cks-lab"}}}],
                "ports": [{"protocol": "TCP", "port": 6443}, {"protocol": "TCP", "port": 22}],
            })
        );
        let off = IsolationPolicy {
            network_policy: false,
            ..isolation()
        };
        assert!(network_policies("c1", &BTreeMap::new(), &off, "cks-lab").is_empty());
    }

    fn template(workers: i32) -> ClusterTemplate {
        serde_json::from_value(json!({
            "kubernetesVersion": "1.33.0",
            "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
            "workers": {"count": workers, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
            "goldenImage": {"namespace": "vm-templates", "name": "img"},
            "sshKeySecretRef": {"name": "key"},
        }))
        .unwrap()
    }

    fn quota(storage: &str) -> IsolationPolicy {
        serde_json::from_value(json!({
            "resourceQuota": {"cpu": "8", "memory": "12Gi", "storage": storage, "pods": 20},
        }))
        .unwrap()
    }

    #[test]
    fn a_snapshot_reset_needs_every_disk_twice() {
        // The sample's 100Gi holds a 1-worker cluster's reset (80Gi) but not a 2-worker one's.
        let one = quota_check(&template(1), ResetStrategy::Snapshot, &quota("100Gi")).unwrap();
        assert!(one.sufficient, "{}", one.message);
        assert!(one.message.contains("storage 80Gi of 100Gi"), "{}", one.message);
        let two = quota_check(&template(2), ResetStrategy::Snapshot, &quota("100Gi")).unwrap();
        assert!(!two.sufficient);
        assert!(
            two.message
                .contains("2 × (20Gi + 2 × 20Gi) = 120Gi > quota 100Gi"),
            "{}",
            two.message
        );
        let recreate = quota_check(&template(2), ResetStrategy::Recreate, &quota("100Gi")).unwrap();
        assert!(recreate.sufficient, "{}", recreate.message);
    }

    #[test]
    fn memory_and_pods_are_checked_and_no_quota_checks_nothing() {
        let mut isolation = quota("1Ti");
        let limits = isolation.resource_quota.as_mut().unwrap();
        limits.memory = Some(Quantity("5Gi".into()));
        limits.pods = Some(1);
        let check = quota_check(&template(1), ResetStrategy::Snapshot, &isolation).unwrap();
        assert!(!check.sufficient);
        assert!(
            check.message.contains("memory 4Gi + 1 × 2Gi = 6Gi > quota 5Gi"),
            "{}",
            check.message
        );
        assert!(check.message.contains("= 2 > quota 1"), "{}", check.message);
        assert!(quota_check(&template(1), ResetStrategy::Snapshot, &IsolationPolicy::default()).is_none());
    }
}
