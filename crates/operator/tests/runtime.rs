//! The operator runtime against the development control plane: leader election between two
//! replicas (only the leader writes; a standby takes over when the leader dies) and the
//! metrics and health endpoints.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cks_api::ClusterPool;
use cks_operator::config::{Args, ControllerConfig};
use cks_operator::http::{self, HttpState};
use cks_operator::metrics::Metrics;
use cks_operator::probe::AlwaysReady;
use cks_operator::runtime::{self, Runtime};
use clap::Parser;
use common::{NS, clusters, eventually, start};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The shipped catalog: the runtime loads and watches it like in production.
const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios");

fn replica(client: &Client, identity: &str) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let args = Args::try_parse_from([
        "cks-operator",
        "--namespace",
        NS,
        "--metrics-addr",
        "127.0.0.1:0",
        "--lease-seconds",
        "2",
        "--identity",
        identity,
        "--scenarios",
        SCENARIOS,
    ])
    .unwrap();
    let rt = Runtime {
        client: client.clone(),
        probe: Some(Arc::new(AlwaysReady)),
        scenarios: None,
        config: Some(ControllerConfig::test()),
    };
    tokio::spawn(async move { runtime::run(&args, rt, std::future::pending()).await })
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    leases.get_opt("cks-operator").await.ok()??.spec?.holder_identity
}

/// Identities that published a `ScaledUp` event on the pool.
async fn scalers(client: &Client) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let mut who: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScaledUp"))
        .filter_map(|e| e.reporting_instance)
        .collect();
    who.sort();
    who.dedup();
    who
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_when_it_dies() {
    let (_server, client) = start().await;
    let a = replica(&client, "replica-a");
    eventually("replica-a to lead", || async {
        (holder(&client).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = replica(&client, "replica-b");

    let pools: Api<ClusterPool> = Api::namespaced(client.clone(), NS);
    pools
        .create(&PostParams::default(), &common::pool("ha", 1, 4, 3))
        .await
        .unwrap();
    eventually("the leader to build the first cluster", || async {
        (clusters(&client, "ha").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(scalers(&client).await, ["replica-a"]);
    assert_eq!(holder(&client).await.as_deref(), Some("replica-a"));

    // The leader dies without releasing the lease; the standby waits out the lease and leads.
    a.abort();
    let _ = a.await;
    eventually("replica-b to take over", || async {
        (holder(&client).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let patch = Patch::Merge(json!({"spec": {"minAvailable": 2}}));
    pools.patch("ha", &PatchParams::default(), &patch).await.unwrap();
    eventually("the new leader to build the second cluster", || async {
        (clusters(&client, "ha").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(scalers(&client).await, ["replica-a", "replica-b"]);
    b.abort();
}

#[tokio::test]
async fn a_stopped_leader_releases_the_lease() {
    let (_server, client) = start().await;
    let args = Args::try_parse_from([
        "cks-operator",
        "--namespace",
        NS,
        "--metrics-addr",
        "127.0.0.1:0",
        "--identity",
        "solo",
        "--scenarios",
        SCENARIOS,
    ])
    .unwrap();
    let rt = Runtime {
        client: client.clone(),
        probe: Some(Arc::new(AlwaysReady)),
        scenarios: None,
        config: Some(ControllerConfig::test()),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runtime::run(&args, rt, async move {
            let _ = rx.await;
        })
        .await
    });
    eventually("solo to lead", || async {
        (holder(&client).await.as_deref() == Some("solo")).then_some(())
    })
    .await;
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(holder(&client).await, None);
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn metrics_and_health_endpoints_answer() {
    let metrics = Metrics::default();
    metrics.reconcile_failed("clusterpool", "Conflict");
    let ready = Arc::new(AtomicBool::new(false));
    let state = HttpState {
        registry: Arc::new(metrics.registry()),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(listener, state, std::future::pending()));

    let body = get(addr, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(r#"cks_operator_reconcile_errors_total{controller="clusterpool",reason="Conflict"} 1"#),
        "{body}"
    );
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_object_that_does_not_deserialize_is_refused_with_a_warning_event() {
    use cks_operator::context::Context;
    use kube::core::DeserializeGuard;

    let (_server, client) = common::start().await;
    let guard: DeserializeGuard<cks_api::ClusterPool> = serde_json::from_value(serde_json::json!({
        "apiVersion": "cks.io/v1alpha1",
        "kind": "ClusterPool",
        "metadata": {"name": "broken", "namespace": common::NS, "uid": "0f3c6d2e-1111-4222-8333-944455556666"},
        "spec": {"maxClusters": "many"}
    }))
    .expect("a guard holds the failure instead of failing");
    let ctx = Context::test(client.clone());

    let err = ctx
        .accept(&guard, "ClusterPool")
        .await
        .expect_err("a malformed pool is refused");
    assert_eq!(err.category(), "InvalidObject");
    assert!(
        err.to_string().contains(&format!("{}/broken", common::NS)),
        "{err}"
    );

    common::warning_event(&client, "InvalidObject", "broken").await;
}
