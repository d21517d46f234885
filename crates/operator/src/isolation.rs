//! The namespace of a practice cluster and what isolates it on the host cluster: a
//! ResourceQuota and NetworkPolicies from the pool's `isolation` settings. Pure builders.

use std::collections::BTreeMap;

use cks_api::cluster_pool::IsolationPolicy;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
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
    let mut put = |key: &str, value: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        if let Some(v) = value {
            hard.insert(key.to_owned(), v);
        }
    };
    put("requests.cpu", limits.cpu.clone());
    put("requests.memory", limits.memory.clone());
    put("requests.storage", limits.storage.clone());
    put(
        "pods",
        limits
            .pods
            .map(|p| k8s_openapi::apimachinery::pkg::api::resource::Quantity(p.to_string())),
    );
    Some(ResourceQuota {
        metadata: meta(QUOTA_NAME, namespace, labels),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    })
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
}
