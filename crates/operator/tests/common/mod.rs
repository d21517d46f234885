//! Shared helpers of the operator's integration tests: a fresh development control plane
//! with the cks-lab CRDs, object builders, and waiting on conditions with a deadline.
#![allow(dead_code)]

pub mod fake_kubevirt;
pub mod ledger;
pub mod session_env;
pub mod sim;
pub mod vrun_fixtures;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use cks_api::{ClusterPool, PracticeCluster};
use cks_devcluster::{DevCluster, Options};
use cks_operator::config::{Args, ControllerConfig};
use cks_operator::probe::AlwaysReady;
use cks_operator::runtime::{self, Runtime};
use cks_scenarios::CatalogStore;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

pub const NS: &str = "cks";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh server with the cks-lab CRDs and the namespace [`NS`].
pub async fn start() -> (DevCluster, Client) {
    // `CKS_TEST_LOG=<filter>` shows the operator's logs (tracing EnvFilter syntax).
    if let Ok(filter) = std::env::var("CKS_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let cluster = DevCluster::start(Options::default())
        .await
        .expect("devcluster starts");
    let mut manifests = cks_devcluster::apply::read_manifests(&repo_root().join("crds")).unwrap();
    cks_devcluster::apply::order(&mut manifests);
    cluster.apply(&manifests).expect("CRDs apply");
    let client = cluster.client().await.expect("client");
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = ns
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await;
    (cluster, client)
}

/// Polls `check` until it returns `Some`, failing the test after a generous deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn template(workers: i32) -> serde_json::Value {
    json!({
        "kubernetesVersion": "1.33.0",
        "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
        "workers": {"count": workers, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
        "goldenImage": {"namespace": "vm-templates", "name": "golden"},
        "sshKeySecretRef": {"name": "ssh-key"},
    })
}

pub fn pool(name: &str, min: i32, max: i32, in_flight: i32) -> ClusterPool {
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ClusterPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "minAvailable": min, "maxClusters": max, "maxConcurrentProvisioning": in_flight,
            "template": template(1),
        },
    }))
    .unwrap()
}

pub async fn clusters(client: &Client, pool: &str) -> Vec<PracticeCluster> {
    let api: Api<PracticeCluster> = Api::namespaced(client.clone(), NS);
    api.list(&ListParams::default().labels(&format!("cks.io/pool={pool}")))
        .await
        .unwrap()
        .items
}

/// Waits for a Warning event with `reason` on the object named `object` in [`NS`].
pub async fn warning_event(client: &Client, reason: &str, object: &str) -> k8s_openapi::api::core::v1::Event {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), NS);
    eventually(&format!("a {reason} Warning event on {object}"), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
                && e.involved_object.name.as_deref() == Some(object)
        })
    })
    .await
}

/// The shipped catalog: a replica loads and watches it like in production.
pub const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios");

/// One operator replica as the binary runs it (every controller, leader election with a 2 s
/// lease on [`NS`]), with test settings and an always-ready probe; `scenarios` replaces the
/// shipped catalog. Abort the task to kill it without releasing the lease.
pub fn replica(
    client: &Client,
    identity: &str,
    scenarios: Option<Arc<CatalogStore>>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(run_replica(
        client.clone(),
        identity.to_owned(),
        scenarios,
        std::future::pending(),
    ))
}

/// A [`replica`] as its Deployment keeps it: started again whenever it exits (a replica
/// exits when it loses its lease, which a loaded test machine may make it do). Abort the
/// task to kill it for good without releasing the lease.
pub fn supervised_replica(
    client: &Client,
    identity: &str,
    scenarios: Option<Arc<CatalogStore>>,
) -> tokio::task::JoinHandle<()> {
    let (client, identity) = (client.clone(), identity.to_owned());
    tokio::spawn(async move {
        loop {
            let result = run_replica(
                client.clone(),
                identity.clone(),
                scenarios.clone(),
                std::future::pending(),
            )
            .await;
            eprintln!("{identity} exited ({result:?}); starting it again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Runs a [`replica`] in the calling task until `shutdown` resolves (a clean stop: the lease
/// is released) or it exits on its own.
pub async fn run_replica(
    client: Client,
    identity: String,
    scenarios: Option<Arc<CatalogStore>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use clap::Parser;
    let args = Args::try_parse_from([
        "cks-operator",
        "--namespace",
        NS,
        "--metrics-addr",
        "127.0.0.1:0",
        "--lease-seconds",
        "2",
        "--identity",
        &identity,
        "--scenarios",
        SCENARIOS,
    ])
    .unwrap();
    let rt = Runtime {
        client,
        probe: Some(Arc::new(AlwaysReady)),
        scenarios,
        host_config: None,
        config: Some(ControllerConfig::test()),
    };
    runtime::run(&args, rt, shutdown).await
}

/// The holder of the operator's leader Lease in [`NS`].
pub async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    leases.get_opt("cks-operator").await.ok()??.spec?.holder_identity
}
