//! Readiness of a practice cluster, checked through its own API server with the admin
//! kubeconfig: `/readyz` answers `ok` and every expected Node is Ready. Behind a trait so
//! controller tests can run without a practice cluster. Depends on no other module of the
//! crate (the context holds a probe, and `access` builds [`ApiTarget`]s), so no import circle
//! goes through it.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

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

/// Where and how to reach one practice cluster's API server, and which Nodes must be Ready.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The API server (its `Debug` hides the kubeconfig).
    pub api: ApiTarget,
    /// Node names that must be Ready (the VM targets).
    pub nodes: Vec<String>,
}

/// Checks practice clusters. `Ok(None)` is ready; `Ok(Some(why))` not yet ready;
/// `Err` the check itself could not run (also "not yet", during boot).
pub trait ClusterProbe: Send + Sync + fmt::Debug {
    /// Checks one cluster.
    fn check<'a>(&'a self, target: &'a ProbeTarget) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// [`ClusterProbe`] over HTTPS with kube-rs.
#[derive(Debug, Default)]
pub struct KubeProbe;

impl ClusterProbe for KubeProbe {
    fn check<'a>(&'a self, target: &'a ProbeTarget) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let client = target.api.client().await?;
            let readyz = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            let body = client
                .request_text(readyz)
                .await
                .map_err(|e| format!("/readyz: {e}"))?;
            if body.trim() != "ok" {
                return Ok(Some(format!("/readyz answered {:?}", body.trim())));
            }
            let nodes = Api::<Node>::all(client)
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing nodes: {e}"))?;
            Ok(nodes_verdict(&nodes.items, &target.nodes))
        })
    }
}

/// `None` when every expected node exists with `Ready=True`, else what is missing.
pub fn nodes_verdict(nodes: &[Node], expected: &[String]) -> Option<String> {
    let ready = |name: &str| {
        nodes.iter().any(|n| {
            n.metadata.name.as_deref() == Some(name)
                && n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    };
    let missing: Vec<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|n| !ready(n))
        .collect();
    (!missing.is_empty()).then(|| format!("nodes not Ready: {}", missing.join(", ")))
}

/// A probe that reports every cluster ready, for tests without practice clusters.
#[derive(Debug, Default)]
pub struct AlwaysReady;

impl ClusterProbe for AlwaysReady {
    fn check<'a>(&'a self, _target: &'a ProbeTarget) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    #[test]
    fn all_expected_nodes_must_be_ready() {
        let expected = vec!["control-plane".to_owned(), "worker-1".to_owned()];
        let nodes = [node("control-plane", "True"), node("worker-1", "False")];
        assert_eq!(
            nodes_verdict(&nodes, &expected).as_deref(),
            Some("nodes not Ready: worker-1")
        );
        let nodes = [node("control-plane", "True")];
        assert!(nodes_verdict(&nodes, &expected).unwrap().contains("worker-1"));
        let nodes = [
            node("control-plane", "True"),
            node("worker-1", "True"),
            node("extra", "False"),
        ];
        assert_eq!(nodes_verdict(&nodes, &expected), None);
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
