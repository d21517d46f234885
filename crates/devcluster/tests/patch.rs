//! Patch types: JSON merge, JSON patch, strategic merge with list merge keys, server-side apply.

mod common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "side:1"}
            ]}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn merge_and_json_patches_apply() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let c: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})).unwrap();
    api.create(&PostParams::default(), &c).await.unwrap();
    let c = api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(c.data).unwrap(), json!({"b": "2", "c": "3"}));
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}
    ]))
    .unwrap();
    let c = api
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["b"], "20");
    assert_eq!(c.metadata.labels.unwrap()["x"], "y");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/b", "value": "nope"}])).unwrap();
    let err = api
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(failing))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_env_and_ports_by_key() {
    let cluster = common::start().await;
    let api: Api<Deployment> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &deployment()).await.unwrap();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}], "ports": [{"containerPort": 8080}]}
    ]}}}});
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let containers = d.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(containers.len(), 2, "sidecar kept");
    assert_eq!(containers[0].image.as_deref(), Some("app:2"));
    let env: Vec<_> = containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, vec!["A", "B"]);
    let ports: Vec<_> = containers[0]
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, vec![80, 8080]);
    let delete =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}});
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(delete))
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().template.spec.unwrap().containers.len(), 1);
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_drops_unapplied_fields() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let pp = PatchParams::apply("test-manager").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "labels": {"a": "1"}},
        "data": {"keep": "1", "drop": "2"}});
    let c = api.patch("ssa", &pp, &Patch::Apply(first)).await.unwrap();
    assert_eq!(c.data.clone().unwrap().len(), 2);
    // Another writer's field survives; the manager's dropped field goes away.
    api.patch(
        "ssa",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"theirs": "3"}})),
    )
    .await
    .unwrap();
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "labels": {"a": "1"}},
        "data": {"keep": "10"}});
    let c = api.patch("ssa", &pp, &Patch::Apply(second)).await.unwrap();
    assert_eq!(
        serde_json::to_value(c.data).unwrap(),
        json!({"keep": "10", "theirs": "3"})
    );
    let err = api
        .patch("ssa", &PatchParams::default(), &Patch::Apply(json!({"data": {}})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == 400),
        "apply needs a field manager"
    );
}

#[tokio::test]
async fn server_side_apply_of_status_changes_only_status() {
    let cluster = common::start().await;
    let api: Api<Deployment> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &deployment()).await.unwrap();
    let pp = PatchParams::apply("status-writer").force();
    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 50}, "status": {"readyReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}});
    let d = api.patch_status("web", &pp, &Patch::Apply(status)).await.unwrap();
    assert_eq!(d.status.clone().unwrap().ready_replicas, Some(1));
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    let again = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "status": {"readyReplicas": 1, "conditions": [{"type": "Available", "status": "False"}]}});
    let d = api.patch_status("web", &pp, &Patch::Apply(again)).await.unwrap();
    let conds = d.status.unwrap().conditions.unwrap();
    assert_eq!(conds.len(), 1, "conditions merge by type");
    assert_eq!(conds[0].status, "False");
}

#[tokio::test]
async fn server_side_apply_with_a_resource_version_is_a_precondition_also_on_status() {
    let cluster = common::start().await;
    let api: Api<Deployment> = Api::default_namespaced(cluster.client().await.unwrap());
    let created = api.create(&PostParams::default(), &deployment()).await.unwrap();
    let read_rv = created.metadata.resource_version.clone().unwrap();
    let pp = PatchParams::apply("status-writer").force();
    let status = |rv: &str, ready: i32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "resourceVersion": rv}, "status": {"readyReplicas": ready}})
    };
    let d = api
        .patch_status("web", &pp, &Patch::Apply(status(&read_rv, 1)))
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(1));
    // The object changed since `read_rv`: a write guarded by it must fail.
    let err = api
        .patch_status("web", &pp, &Patch::Apply(status(&read_rv, 2)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == 409),
        "stale resourceVersion"
    );
    let err = api
        .patch(
            "web",
            &pp,
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "resourceVersion": read_rv}, "spec": {"replicas": 3}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == 409),
        "stale resourceVersion on the object"
    );
    assert_eq!(
        api.get("web").await.unwrap().status.unwrap().ready_replicas,
        Some(1)
    );
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers_unless_forced() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let cfg = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}, "data": {"owned": v}});
    api.patch("shared", &PatchParams::apply("alpha"), &Patch::Apply(cfg("a")))
        .await
        .unwrap();
    // Same value from another manager is shared ownership, not a conflict.
    api.patch("shared", &PatchParams::apply("beta"), &Patch::Apply(cfg("a")))
        .await
        .unwrap();
    let err = api
        .patch("shared", &PatchParams::apply("beta"), &Patch::Apply(cfg("b")))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert!(
                s.message.contains("conflict with \"alpha\": .data.owned"),
                "{}",
                s.message
            );
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let forced = api
        .patch(
            "shared",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(cfg("b")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owned"], "b");
    // alpha lost the field: dropping it from alpha's config leaves beta's value.
    let empty = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}});
    let after = api
        .patch("shared", &PatchParams::apply("alpha"), &Patch::Apply(empty))
        .await
        .unwrap();
    assert_eq!(after.data.unwrap()["owned"], "b");
}
