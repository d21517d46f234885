//! CRUD semantics through kube-rs: metadata rules, optimistic concurrency, errors, list options.

mod common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn create_sets_uid_timestamp_resource_version_and_generation() {
    let cluster = common::start().await;
    let api: Api<Deployment> = Api::default_namespaced(cluster.client().await.unwrap());
    let d = api
        .create(&PostParams::default(), &deployment("web"))
        .await
        .unwrap();
    assert!(d.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(d.metadata.creation_timestamp.is_some());
    assert_eq!(d.metadata.generation, Some(1));
    let rv1: u64 = d.metadata.resource_version.clone().unwrap().parse().unwrap();

    // Spec change bumps generation; label change does not.
    let d = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    let rv2: u64 = d.metadata.resource_version.clone().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    let d = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    // A no-op write does not bump the resourceVersion.
    let same = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(same.metadata.resource_version, d.metadata.resource_version);
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status_writes() {
    let cluster = common::start().await;
    let api: Api<Deployment> = Api::default_namespaced(cluster.client().await.unwrap());
    let mut d = deployment("web");
    d.status = Some(serde_json::from_value(json!({"replicas": 7})).unwrap());
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    // Status in a main-resource write is ignored.
    assert!(created.status.is_none() || created.status.as_ref().unwrap().replicas.is_none());
    let with_status = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 2}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.status.unwrap().replicas, Some(2));
    assert_eq!(
        with_status.spec.unwrap().replicas,
        Some(1),
        "status writes leave spec alone"
    );
    assert_eq!(with_status.metadata.generation, Some(1));
    let updated = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 5}, "spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(
        updated.status.unwrap().replicas,
        Some(2),
        "main writes leave status alone"
    );
    assert_eq!(updated.spec.unwrap().replicas, Some(4));
    let st = api.get_status("web").await.unwrap();
    assert_eq!(st.status.unwrap().replicas, Some(2));
}

#[tokio::test]
async fn generate_name_gets_a_random_suffix() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let mut c = cm("", json!({}));
    c.metadata.name = None;
    c.metadata.generate_name = Some("gen-".into());
    let a = api.create(&PostParams::default(), &c).await.unwrap();
    let b = api.create(&PostParams::default(), &c).await.unwrap();
    let (na, nb) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(na.starts_with("gen-") && na.len() == 9, "{na}");
    assert_ne!(na, nb);
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let first = api
        .create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    let mut second = first.clone();
    api.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "changed"}})),
    )
    .await
    .unwrap();
    second.data = Some([("k".to_string(), "mine".to_string())].into());
    let err = api_error(
        api.replace("c", &PostParams::default(), &second)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    let stale = json!({"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"k": "x"}});
    let err = api_error(
        api.patch("c", &PatchParams::default(), &Patch::Merge(stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn conflicting_writers_converge_with_retries() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    api.create(&PostParams::default(), &cm("counter", json!({})))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..5 {
                loop {
                    let mut c = api.get("counter").await.unwrap();
                    let data = c.data.get_or_insert_with(Default::default);
                    let n: u32 = data.get("n").map(|v| v.parse().unwrap()).unwrap_or(0);
                    data.insert("n".into(), (n + 1).to_string());
                    match api.replace("counter", &PostParams::default(), &c).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = api.get("counter").await.unwrap();
    assert_eq!(c.data.unwrap()["n"], "40", "every increment survived");
}

#[tokio::test]
async fn errors_are_status_objects_with_reasons() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let err = api_error(api.get("missing").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "configmaps \"missing\" not found");
    api.create(&PostParams::default(), &cm("dup", json!({})))
        .await
        .unwrap();
    let err = api_error(
        api.create(&PostParams::default(), &cm("dup", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    let err = api_error(
        api.create(&PostParams::default(), &cm("Bad_Name", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let missing_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let err = api_error(
        missing_ns
            .create(&PostParams::default(), &cm("x", json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    let req = http::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/configmaps/dup")
        .header("content-type", "text/plain")
        .body(b"{}".to_vec())
        .unwrap();
    let err = api_error(client.request_text(req).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (415, "UnsupportedMediaType"));
    let req = http::Request::builder()
        .method("POST")
        .uri("/api/v1/namespaces/default/configmaps/dup")
        .body(b"{}".to_vec())
        .unwrap();
    let err = api_error(client.request_text(req).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (405, "MethodNotAllowed"));
    let err = api_error(
        api.list(&ListParams::default().labels("a in ("))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn list_filters_by_labels_and_fields_and_pages() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
    )
    .await
    .unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(
            &PostParams::default(),
            &cm(&format!("cm-{i:02}"), json!({"tier": tier, "app": "x"})),
        )
        .await
        .unwrap();
    }
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(&PostParams::default(), &cm("cm-00", json!({"tier": "even"})))
        .await
        .unwrap();
    let names = |l: kube::api::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        api.list(&ListParams::default().labels("tier=odd"))
            .await
            .unwrap()
            .items
            .len(),
        12
    );
    assert_eq!(
        api.list(&ListParams::default().labels("tier in (odd,even),app"))
            .await
            .unwrap()
            .items
            .len(),
        25
    );
    assert_eq!(
        api.list(&ListParams::default().labels("tier notin (odd),!app"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=cm-03"))
                .await
                .unwrap()
        ),
        vec!["cm-03"]
    );
    let all: Api<ConfigMap> = Api::all(client.clone());
    let in_other = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(names(in_other), vec!["cm-00"]);
    assert_eq!(
        all.list(&ListParams::default().fields("metadata.name=cm-00"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        assert!(page.metadata.resource_version.is_some());
        pages += 1;
        let token = page.metadata.continue_.clone();
        seen.extend(names(page));
        match token {
            Some(t) if !t.is_empty() => lp = ListParams::default().limit(10).continue_token(&t),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..25).map(|i| format!("cm-{i:02}")).collect::<Vec<_>>());

    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=even"),
    )
    .await
    .unwrap();
    assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 12);
}

#[tokio::test]
async fn cluster_scoped_resources_ignore_namespaces() {
    let cluster = common::start().await;
    let nodes: Api<Node> = Api::all(cluster.client().await.unwrap());
    let n: Node =
        serde_json::from_value(json!({"metadata": {"name": "node-1"}, "status": {"phase": "Running"}}))
            .unwrap();
    let created = nodes.create(&PostParams::default(), &n).await.unwrap();
    assert!(created.metadata.namespace.is_none());
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn core_and_events_k8s_io_events_share_storage() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let ev: EventsV1 = serde_json::from_value(json!({"metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reason": "Test", "action": "Testing", "reportingController": "t", "reportingInstance": "t", "type": "Normal", "note": "hi",
        "regarding": {"kind": "ConfigMap", "name": "x", "namespace": "default"}}))
    .unwrap();
    Api::<EventsV1>::default_namespaced(client.clone())
        .create(&PostParams::default(), &ev)
        .await
        .unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client);
    let listed = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.name.as_deref(), Some("e1"));
    // Each API sees its own field names: events.k8s.io `note`/`regarding` are core
    // `message`/`involvedObject`, for reads and for writes.
    assert_eq!(listed.items[0].message.as_deref(), Some("hi"));
    assert_eq!(listed.items[0].involved_object.name.as_deref(), Some("x"));
    core.patch(
        "e1",
        &PatchParams::default(),
        &Patch::Merge(json!({"message": "changed"})),
    )
    .await
    .unwrap();
    let ev = Api::<EventsV1>::default_namespaced(cluster.client().await.unwrap())
        .get("e1")
        .await
        .unwrap();
    assert_eq!(ev.note.as_deref(), Some("changed"));
    assert_eq!(ev.regarding.unwrap().name.as_deref(), Some("x"));
}

#[tokio::test]
async fn secret_string_data_is_stored_as_data() {
    let cluster = common::start().await;
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::default_namespaced(cluster.client().await.unwrap());
    let s = serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}}))
        .unwrap();
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    assert!(created.string_data.is_none());
    assert_eq!(created.data.unwrap()["password"].0, b"hunter2");
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn rbac_names_may_contain_colons() {
    let cluster = common::start().await;
    let api: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(cluster.client().await.unwrap());
    let role =
        serde_json::from_value(json!({"metadata": {"name": "system:cks:reader"}, "rules": []})).unwrap();
    api.create(&PostParams::default(), &role).await.unwrap();
    assert!(api.get_opt("system:cks:reader").await.unwrap().is_some());
    // Percent-escaped names in paths resolve too.
    let client = cluster.client().await.unwrap();
    let req = http::Request::get("/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Acks%3Areader")
        .body(Vec::new())
        .unwrap();
    assert!(
        client
            .request_text(req)
            .await
            .unwrap()
            .contains("system:cks:reader")
    );
}

#[tokio::test]
async fn dry_run_writes_validate_without_persisting() {
    let cluster = common::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().await.unwrap());
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let shown = api.create(&dry, &cm("dry", json!({}))).await.unwrap();
    assert_eq!(shown.metadata.name.as_deref(), Some("dry"));
    assert!(api.get_opt("dry").await.unwrap().is_none());
    api.create(&PostParams::default(), &cm("real", json!({})))
        .await
        .unwrap();
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let patched = api
        .patch("real", &pp, &Patch::Merge(json!({"data": {"k": "dry"}})))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "dry");
    assert_eq!(api.get("real").await.unwrap().data.unwrap()["k"], "v");
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("real", &dp).await.unwrap();
    assert!(api.get_opt("real").await.unwrap().is_some());
}

#[tokio::test]
async fn services_get_a_cluster_ip_that_updates_and_applies_keep() {
    use k8s_openapi::api::core::v1::Service;
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let services: Api<Service> = Api::namespaced(client, "default");
    let svc = |name: &str| -> Service {
        serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name}, "spec": {"ports": [{"port": 6443}]}}))
        .unwrap()
    };
    let a = services.create(&PostParams::default(), &svc("a")).await.unwrap();
    let ip_a = a.spec.unwrap().cluster_ip.unwrap();
    assert!(ip_a.starts_with("10.96."), "{ip_a}");
    let b = services
        .patch("b", &PatchParams::apply("test"), &Patch::Apply(svc("b")))
        .await
        .unwrap();
    let ip_b = b.spec.unwrap().cluster_ip.unwrap();
    assert_ne!(ip_a, ip_b);
    let b = services
        .patch("b", &PatchParams::apply("test"), &Patch::Apply(svc("b")))
        .await
        .unwrap();
    assert_eq!(
        b.spec.unwrap().cluster_ip.unwrap(),
        ip_b,
        "a re-apply keeps the address"
    );
    let mut current = services.get("a").await.unwrap();
    current.spec.as_mut().unwrap().cluster_ip = None;
    current.spec.as_mut().unwrap().cluster_ips = None;
    let a = services
        .replace("a", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(
        a.spec.unwrap().cluster_ip.unwrap(),
        ip_a,
        "an update keeps the address"
    );
}
