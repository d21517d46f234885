//! Deletion: finalizers and deletionTimestamp, owner-reference garbage collection (background,
//! foreground, orphan), namespace deletion, and a kube-runtime Controller with `.owns()`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn owned_by(name: &str, owner: &ConfigMap) -> ConfigMap {
    let mut c = cm(name);
    c.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    c
}

async fn gone(api: &Api<ConfigMap>, name: &str) {
    common::eventually(&format!("{name} to be deleted"), || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn finalizers_hold_an_object_until_removed() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let mut c = cm("held");
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    let deleting = api.delete("held", &DeleteParams::default()).await.unwrap();
    assert!(
        deleting.is_left(),
        "an object with finalizers is not deleted at once"
    );
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&api, "held").await;
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_runs_cleanup() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &cm("f")).await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let run = |api: Api<ConfigMap>, seen: Arc<std::sync::Mutex<Vec<&'static str>>>| async move {
        let obj = Arc::new(api.get("f").await.unwrap());
        finalizer(&api, "example.com/cleanup", obj, |ev| async move {
            seen.lock().unwrap().push(match ev {
                FinalizerEvent::Apply(_) => "apply",
                FinalizerEvent::Cleanup(_) => "cleanup",
            });
            Ok::<_, std::convert::Infallible>(Action::await_change())
        })
        .await
        .unwrap();
    };
    // First call adds the finalizer, second reconciles.
    run(api.clone(), seen.clone()).await;
    assert_eq!(api.get("f").await.unwrap().finalizers(), ["example.com/cleanup"]);
    run(api.clone(), seen.clone()).await;
    api.delete("f", &DeleteParams::default()).await.unwrap();
    run(api.clone(), seen.clone()).await;
    assert_eq!(*seen.lock().unwrap(), vec!["apply", "cleanup"]);
    gone(&api, "f").await;
}

#[tokio::test]
async fn background_deletion_collects_dependents() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let owner = api.create(&PostParams::default(), &cm("owner")).await.unwrap();
    api.create(&PostParams::default(), &owned_by("child", &owner))
        .await
        .unwrap();
    let child = api.get("child").await.unwrap();
    api.create(&PostParams::default(), &owned_by("grandchild", &child))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background()).await.unwrap();
    gone(&api, "child").await;
    gone(&api, "grandchild").await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let owner = api.create(&PostParams::default(), &cm("owner")).await.unwrap();
    let mut child = owned_by("child", &owner);
    child.metadata.finalizers = Some(vec!["example.com/slow".into()]);
    api.create(&PostParams::default(), &child).await.unwrap();
    api.delete("owner", &DeleteParams::foreground()).await.unwrap();
    common::eventually("child marked for deletion", || async {
        api.get("child")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    let o = api.get("owner").await.unwrap();
    assert!(o.finalizers().contains(&"foregroundDeletion".to_string()));
    assert!(o.metadata.deletion_timestamp.is_some());
    api.patch(
        "child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone(&api, "child").await;
    gone(&api, "owner").await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_owner_reference() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let owner = api.create(&PostParams::default(), &cm("owner")).await.unwrap();
    api.create(&PostParams::default(), &owned_by("child", &owner))
        .await
        .unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete("owner", &dp).await.unwrap();
    gone(&api, "owner").await;
    let child = api.get("child").await.unwrap();
    assert!(child.metadata.owner_references.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap(),
        )
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    api.create(&PostParams::default(), &cm("plain")).await.unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let ns = namespaces.get("doomed").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    gone(&api, "plain").await;
    let err = api.create(&PostParams::default(), &cm("late")).await.unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403, "no new content in a terminating namespace");
            assert!(
                s.message.contains("configmaps \"late\" is forbidden"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other}"),
    }
    assert!(
        namespaces.get_opt("doomed").await.unwrap().is_some(),
        "held by the finalizer of its content"
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    common::eventually("namespace gone", || async {
        namespaces
            .get_opt("doomed")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(#[from] kube::Error);

/// Mirrors each ConfigMap's data into an owned Secret.
async fn reconcile(cm: Arc<ConfigMap>, client: Arc<kube::Client>) -> Result<Action, ReconcileError> {
    let secrets: Api<Secret> = Api::namespaced((*client).clone(), &cm.namespace().unwrap());
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": cm.name_any(), "ownerReferences": [cm.controller_owner_ref(&()).unwrap()]},
        "stringData": cm.data.clone().unwrap_or_default(),
    });
    // stringData is write-only on a real server; store it as data here.
    let data: serde_json::Map<String, serde_json::Value> = cm
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, json!(base64_encode(v.as_bytes()))))
        .collect();
    let mut secret = secret;
    secret.as_object_mut().unwrap().remove("stringData");
    secret["data"] = json!(data);
    secrets
        .patch(
            &cm.name_any(),
            &PatchParams::apply("mirror").force(),
            &Patch::Apply(secret),
        )
        .await?;
    Ok(Action::await_change())
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn controller_with_owns_reconciles_real_objects() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let controller = Controller::new(cms.clone(), Default::default())
        .owns(secrets.clone(), Default::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(client.clone()),
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    cms.create(&PostParams::default(), &cm("mirror-me"))
        .await
        .unwrap();
    let expect = |value: &'static str| {
        let secrets = secrets.clone();
        async move {
            common::eventually(&format!("secret with {value}"), || async {
                let s = secrets.get_opt("mirror-me").await.unwrap()?;
                (s.data?.get("k")?.0 == value.as_bytes()).then_some(())
            })
            .await
        }
    };
    expect("v").await;
    cms.patch(
        "mirror-me",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    expect("v2").await;
    // Deleting the owned Secret triggers a reconcile of its owner through .owns().
    secrets
        .delete("mirror-me", &DeleteParams::default())
        .await
        .unwrap();
    expect("v2").await;
    cms.delete("mirror-me", &DeleteParams::default()).await.unwrap();
    handle.abort();
    common::eventually("owned secret collected", || async {
        secrets
            .get_opt("mirror-me")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn kube_runtime_event_recorder_creates_and_updates_series() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let owner = cms.create(&PostParams::default(), &cm("subject")).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "cks-test".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Warning,
        reason: "Broken".into(),
        note: Some("something broke".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = owner.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client.clone());
    let listed = events.list(&Default::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1, "a repeated event becomes a series");
    assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(2));
    // kubectl describe finds it through the core/v1 view, selecting on involvedObject.
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client);
    let selector = format!(
        "involvedObject.name=subject,involvedObject.uid={}",
        owner.uid().unwrap()
    );
    let by_object = core
        .list(&kube::api::ListParams::default().fields(&selector))
        .await
        .unwrap();
    assert_eq!(by_object.items.len(), 1);
    assert_eq!(by_object.items[0].message.as_deref(), Some("something broke"));
    assert_eq!(
        by_object.items[0].involved_object.name.as_deref(),
        Some("subject")
    );
}
