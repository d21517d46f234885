//! Resource rules against a real Kubernetes-API-compatible server (cks-devcluster): discovery
//! of kinds, namespaced and cluster-scoped objects, NotFound, label selectors and JSONPath.

mod common;

use cks_api::validation_run::ValidationRunPhase;
use cks_devcluster::{DevCluster, Options};
use cks_scenarios::ResourceRef;
use cks_validation::{ClusterApi, Engine, KubeCluster, TaskSelector};
use common::{assert_error, assert_failed, assert_passed, outcome, scenario};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::sync::Arc;

async fn create<K>(api: &Api<K>, object: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("valid object");
    api.create(&PostParams::default(), &object).await.expect("create");
}

/// A server holding a labelled namespace, two pods in it and one in `default`.
async fn cluster() -> (DevCluster, Client) {
    let dev = DevCluster::start(Options::default())
        .await
        .expect("devcluster starts");
    let client = dev.client().await.expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["default", "test-pods"] {
        let labels = if ns == "test-pods" {
            json!({"pod-security.kubernetes.io/enforce": "baseline", "team": "a"})
        } else {
            json!({})
        };
        // `default` may exist already on a fresh server; only its presence matters.
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns, "labels": labels}})).unwrap();
        let _ = namespaces.create(&PostParams::default(), &object).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "test-pods");
    for (name, app, image, privileged) in [
        ("web", "web", "nginx:1.27", false),
        ("db", "db", "postgres:16", true),
    ] {
        create(
            &pods,
            json!({"metadata": {"name": name, "labels": {"app": app}},
                   "spec": {"containers": [{"name": "main", "image": image,
                                            "securityContext": {"privileged": privileged}}],
                            "automountServiceAccountToken": false}}),
        )
        .await;
    }
    let default_pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create(
        &default_pods,
        json!({"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    )
    .await;
    (dev, client)
}

#[tokio::test]
async fn resource_rules_evaluate_against_the_practice_cluster_api() {
    let (dev, client) = cluster().await;
    let s = scenario(&[r#"
- id: ns-exists
  type: resource_exists
  resource: {kind: Namespace, name: test-pods}
- id: ns-missing
  type: resource_exists
  resource: {kind: Namespace, name: prod}
  errorMessage: Create the prod namespace
- id: ns-absent
  type: resource_exists
  resource: {kind: Namespace, name: prod}
  condition: not_exists
- id: enforce-label
  type: resource_property
  resource: {kind: Namespace, name: test-pods}
  property: .metadata.labels.pod-security\.kubernetes\.io/enforce
  condition: equals
  value: baseline
- id: enforce-restricted
  type: resource_property
  resource: {kind: Namespace, name: test-pods}
  property: '{.metadata.labels.pod-security\.kubernetes\.io/enforce}'
  condition: equals
  value: restricted
  errorMessage: Enforce the restricted profile
- id: pod-in-namespace
  type: resource_property
  resource: {kind: Pod, name: db, namespace: test-pods}
  property: .spec.containers[?(@.name=="main")].securityContext.privileged
  condition: equals
  value: false
  errorMessage: The db pod must not be privileged
- id: pod-default-namespace
  type: resource_exists
  resource: {kind: Pod, name: probe}
- id: pods-by-label
  type: resource_property
  resource: {kind: Pod, namespace: test-pods, labelSelector: app=web}
  property: .spec.containers[*].image
  condition: matches_regex
  value: "^nginx:1\\.2[0-9]$"
- id: all-pods-images
  type: resource_property
  resource: {kind: Pod, namespace: test-pods}
  property: $.spec.containers[*].image
  condition: contains
  value: postgres
- id: no-token
  type: resource_property
  resource: {kind: pod, apiVersion: v1, name: web, namespace: test-pods}
  property: .spec.automountServiceAccountToken
  condition: equals
  value: false
- id: no-annotations
  type: resource_property
  resource: {kind: Namespace, name: test-pods}
  property: .metadata.annotations.audit
  condition: not_exists
- id: no-selected-pods
  type: resource_exists
  resource: {kind: Pod, namespace: test-pods, labelSelector: app=cache}
  condition: not_exists
- id: unknown-kind
  type: resource_exists
  resource: {kind: Widget, name: w}
- id: wrong-group
  type: resource_exists
  resource: {kind: Pod, apiVersion: apps/v1, name: web}
"#]);
    let engine = Engine::with_backends(Some(Arc::new(KubeCluster::new(client, "default"))), None);
    let report = engine.validate(&s, TaskSelector::All).await.unwrap();

    assert_passed(&report, "ns-exists");
    let o = assert_failed(&report, "ns-missing");
    assert_eq!(o.message, "Create the prod namespace");
    assert_eq!(o.actual.as_deref(), Some("Namespace prod does not exist"));
    assert_passed(&report, "ns-absent");
    assert_passed(&report, "enforce-label");
    let o = assert_failed(&report, "enforce-restricted");
    assert_eq!(
        (o.expected.as_deref(), o.actual.as_deref()),
        (Some("restricted"), Some("baseline"))
    );
    let o = assert_failed(&report, "pod-in-namespace");
    assert_eq!(o.actual.as_deref(), Some("true"));
    assert_eq!(o.message, "The db pod must not be privileged");
    assert_passed(&report, "pod-default-namespace");
    assert_passed(&report, "pods-by-label");
    assert_passed(&report, "all-pods-images");
    assert_passed(&report, "no-token");
    assert_passed(&report, "no-annotations");
    assert_passed(&report, "no-selected-pods");
    let o = assert_error(&report, "unknown-kind", "unknown-kind");
    assert_eq!(o.message, "the practice cluster serves no kind `Widget`");
    assert_error(&report, "wrong-group", "unknown-kind");
    assert_eq!(report.phase(), ValidationRunPhase::Error);
    assert_eq!(outcome(&report, "ns-exists").task, "task-1");
    dev.shutdown().await;
}

#[tokio::test]
async fn objects_are_found_as_json_with_their_namespace_in_messages() {
    let (dev, client) = cluster().await;
    let api = KubeCluster::new(client, "default");
    let pod = ResourceRef {
        kind: "Pod".into(),
        name: Some("web".into()),
        namespace: Some("test-pods".into()),
        api_version: None,
        label_selector: None,
    };
    let found = api.find(&pod).await.unwrap();
    assert_eq!(found.what, "Pod web in namespace test-pods");
    assert_eq!(found.objects.len(), 1);
    assert_eq!(found.objects[0]["kind"], "Pod");
    assert_eq!(found.objects[0]["spec"]["containers"][0]["image"], "nginx:1.27");

    let missing = ResourceRef {
        name: Some("gone".into()),
        namespace: None,
        ..pod.clone()
    };
    let found = api.find(&missing).await.unwrap();
    assert_eq!(found.what, "Pod gone in namespace default");
    assert!(found.objects.is_empty());

    let all = ResourceRef {
        kind: "Namespace".into(),
        name: None,
        namespace: None,
        api_version: None,
        label_selector: Some("team=a".into()),
    };
    let found = api.find(&all).await.unwrap();
    assert_eq!(found.what, "Namespace objects labelled team=a");
    let names: Vec<_> = found
        .objects
        .iter()
        .map(|o| o["metadata"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("test-pods")]);
    dev.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_api_server_makes_resource_rules_errors() {
    let (dev, client) = cluster().await;
    dev.shutdown().await;
    let s = scenario(&["- id: ns\n  type: resource_exists\n  resource: {kind: Namespace, name: x}\n"]);
    let engine = Engine::with_backends(Some(Arc::new(KubeCluster::new(client, "default"))), None);
    let report = engine.validate(&s, TaskSelector::All).await.unwrap();
    let o = assert_error(&report, "ns", "discovery");
    assert!(
        o.message
            .starts_with("API discovery on the practice cluster failed: "),
        "{}",
        o.message
    );
}
