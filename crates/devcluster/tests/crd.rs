//! CustomResourceDefinitions: serving, discovery, schema validation (types, required, enum,
//! bounds, pattern, int-or-string, preserve-unknown-fields), defaulting, pruning, CEL rules,
//! status subresource, printer columns, OpenAPI, removal, and the repository's own CRDs.

mod common;

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::Discovery;
use serde_json::{Value, json};

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"], "categories": ["examples"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A widget for tests.",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "description": "What the widget should be.",
                            "required": ["size"],
                            "x-kubernetes-validations": [{"rule": "self.size <= 5 || self.mode == 'slow'", "message": "big widgets must be slow"}],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "maximum": 10, "description": "How big."},
                                "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
                                "label": {"type": "string", "pattern": "^[a-z]+$"},
                                "port": {"x-kubernetes-int-or-string": true},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}}
                            }
                        },
                        "status": {"type": "object", "properties": {
                            "conditions": {"type": "array", "items": {"type": "object", "properties": {
                                "type": {"type": "string"}, "status": {"type": "string"}}}},
                            "observed": {"type": "integer"}
                        }}
                    }
                }}
            }]
        }
    }))
    .unwrap()
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets")
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}),
    )
    .unwrap()
}

async fn with_widgets() -> (cks_devcluster::DevCluster, kube::Client, Api<DynamicObject>) {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &widget_crd()).await.unwrap();
    let api = Api::namespaced_with(client.clone(), "default", &widget_resource());
    (cluster, client, api)
}

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn a_created_crd_is_established_and_discoverable() {
    let (_cluster, client, _) = with_widgets().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("widgets.example.com").await.unwrap();
    let conds = crd.status.unwrap().conditions.unwrap();
    for t in ["Established", "NamesAccepted"] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t} missing"
        );
    }
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .expect("served");
    assert_eq!(ar.plural, "widgets");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    let raw: Value = serde_json::from_str(
        &client
            .request_text(
                http::Request::get("/apis/example.com/v1")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(raw["resources"][0]["shortNames"], json!(["wdg"]));
    assert_eq!(raw["resources"][0]["categories"], json!(["examples"]));
}

#[tokio::test]
async fn custom_objects_are_defaulted_and_pruned() {
    let (_cluster, _client, api) = with_widgets().await;
    let w = widget(
        "w",
        json!({"size": 2, "unknown": true, "port": "http", "extra": {"free": {"form": 1}}}),
    );
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"size": 2, "mode": "fast", "port": "http", "extra": {"free": {"form": 1}}})
    );
    assert_eq!(created.metadata.generation, Some(1));
    let w = widget("n", json!({"size": 2, "port": 8080}));
    assert_eq!(
        api.create(&PostParams::default(), &w).await.unwrap().data["spec"]["port"],
        8080
    );
}

#[tokio::test]
async fn strict_field_validation_rejects_unknown_fields_instead_of_pruning() {
    let (_cluster, _client, api) = with_widgets().await;
    api.create(&PostParams::default(), &widget("typo", json!({"size": 1})))
        .await
        .unwrap();
    let typo = Patch::Merge(json!({"spec": {"sizee": 2}}));
    let strict = PatchParams::default().validation_strict();
    let s = status_of(api.patch("typo", &strict, &typo).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(
        s.message
            .contains("strict decoding error: unknown field \"spec.sizee\""),
        "{}",
        s.message
    );
    // Without Strict the field is pruned, as before.
    let patched = api.patch("typo", &PatchParams::default(), &typo).await.unwrap();
    assert!(patched.data["spec"].get("sizee").is_none());
}

#[tokio::test]
async fn schema_violations_are_invalid_with_field_causes() {
    let (_cluster, _client, api) = with_widgets().await;
    let w = widget(
        "bad",
        json!({"size": 20, "mode": "warp", "label": "Not-OK", "port": true, "tags": ["a", "b", "c"]}),
    );
    let s = status_of(api.create(&PostParams::default(), &w).await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.starts_with("Widget.example.com \"bad\" is invalid: ["),
        "{}",
        s.message
    );
    for needle in [
        "spec.size: Invalid value: 20: spec.size in body should be less than or equal to 10",
        "spec.mode: Unsupported value: \"warp\": supported values: \"fast\", \"slow\"",
        "spec.label: Invalid value: \"Not-OK\": spec.label in body should match '^[a-z]+$'",
        "spec.port: Invalid value: true: spec.port in body must be of type integer or string",
        "spec.tags: Too many: 3: must have at most 2 items",
    ] {
        assert!(s.message.contains(needle), "missing {needle:?} in {}", s.message);
    }
    let causes = s.details.unwrap().causes;
    let fields: Vec<_> = causes.iter().map(|c| c.field.clone()).collect();
    assert!(fields.contains(&"spec.size".to_string()), "{fields:?}");
    let s = status_of(
        api.create(&PostParams::default(), &widget("missing", json!({})))
            .await
            .unwrap_err(),
    );
    assert!(s.message.contains("spec.size: Required value"), "{}", s.message);
    let wrong_type = widget("typed", json!({"size": "big"}));
    let s = status_of(api.create(&PostParams::default(), &wrong_type).await.unwrap_err());
    assert!(
        s.message
            .contains("spec.size in body must be of type integer: \"string\""),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn cel_rules_reject_with_their_message() {
    let (_cluster, _client, api) = with_widgets().await;
    let s = status_of(
        api.create(&PostParams::default(), &widget("fast-big", json!({"size": 8})))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422);
    assert!(s.message.contains("big widgets must be slow"), "{}", s.message);
    api.create(
        &PostParams::default(),
        &widget("slow-big", json!({"size": 8, "mode": "slow"})),
    )
    .await
    .unwrap();
    // Rules also run on update.
    let patch = Patch::Merge(json!({"spec": {"mode": "fast"}}));
    let s = status_of(
        api.patch("slow-big", &PatchParams::default(), &patch)
            .await
            .unwrap_err(),
    );
    assert!(s.message.contains("big widgets must be slow"), "{}", s.message);
}

#[tokio::test]
async fn a_crd_whose_cel_rule_does_not_compile_is_rejected() {
    let cluster = common::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().await.unwrap());
    let mut crd = serde_json::to_value(widget_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] =
        json!([{"rule": "self.size >>> 1"}]);
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    let s = status_of(crds.create(&PostParams::default(), &crd).await.unwrap_err());
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("failed to compile CEL rule") && s.message.contains("self.size >>> 1"),
        "{}",
        s.message
    );
    assert!(crds.get_opt("widgets.example.com").await.unwrap().is_none());
}

#[tokio::test]
async fn a_crd_whose_cel_rule_cannot_be_evaluated_is_rejected() {
    let cluster = common::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().await.unwrap());
    let mut crd = serde_json::to_value(widget_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] =
        json!([{"rule": "cel.bind(s, self.size, s > 0)"}]);
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    let s = status_of(crds.create(&PostParams::default(), &crd).await.unwrap_err());
    assert_eq!(s.code, 422);
    assert!(
        s.message
            .contains("calls bind(), which this server cannot evaluate"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn status_subresource_and_server_side_apply_for_custom_resources() {
    let (_cluster, _client, api) = with_widgets().await;
    let pp = PatchParams::apply("widget-controller").force();
    let applied = api
        .patch(
            "w",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 1}, "status": {"observed": 9}}),
            ),
        )
        .await
        .unwrap();
    assert!(
        applied.data.get("status").is_none(),
        "status is not written through the main resource"
    );
    let status = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "status": {"observed": 1, "conditions": [{"type": "Ready", "status": "True"}]}});
    let w = api.patch_status("w", &pp, &Patch::Apply(status)).await.unwrap();
    assert_eq!(w.data["status"]["observed"], 1);
    assert_eq!(
        w.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );
    let w = api
        .patch(
            "w",
            &pp,
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(w.metadata.generation, Some(2));
    assert_eq!(w.data["status"]["observed"], 1, "spec writes keep status");
    let s = status_of(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 2}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 415);
}

#[tokio::test]
async fn table_output_uses_printer_columns() {
    let (_cluster, client, api) = with_widgets().await;
    api.create(&PostParams::default(), &widget("w", json!({"size": 4})))
        .await
        .unwrap();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    api.patch_status("w", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let req = http::Request::get("/apis/example.com/v1/namespaces/default/widgets")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: Value = serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    assert_eq!(table["kind"], "Table");
    let names: Vec<_> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec!["Name", "Size", "Mode", "Ready", "Age"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "w");
    assert_eq!(cells[1], 4);
    assert_eq!(cells[2], "fast");
    assert_eq!(cells[3], "True");
    assert!(
        cells[4].as_str().unwrap().ends_with('s'),
        "age is human-readable: {}",
        cells[4]
    );
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[tokio::test]
async fn openapi_v3_publishes_crd_schemas_with_their_kind() {
    let (_cluster, client, _api) = with_widgets().await;
    let index: Value = serde_json::from_str(
        &client
            .request_text(http::Request::get("/openapi/v3").body(Vec::new()).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    let url = index["paths"]["apis/example.com/v1"]["serverRelativeURL"]
        .as_str()
        .expect("group version listed");
    let doc: Value = serde_json::from_str(
        &client
            .request_text(http::Request::get(url).body(Vec::new()).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    let schema = &doc["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], "Widget");
    assert_eq!(
        schema["properties"]["spec"]["properties"]["size"]["description"],
        "How big."
    );
}

#[tokio::test]
async fn deleting_a_crd_removes_its_objects_and_stops_serving_it() {
    let (_cluster, client, api) = with_widgets().await;
    api.create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let s = status_of(api.get("w").await.unwrap_err());
    assert_eq!(s.code, 404);
    // Recreating the CRD does not bring old objects back.
    crds.create(&PostParams::default(), &widget_crd()).await.unwrap();
    assert!(api.get_opt("w").await.unwrap().is_none());
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn the_repository_crds_and_samples_are_accepted() {
    let cluster = common::start().await;
    let mut manifests = cks_devcluster::apply::read_manifests(&repo_root().join("crds")).unwrap();
    assert!(manifests.len() >= 4, "crds/ holds the generated CRDs");
    manifests.extend(cks_devcluster::apply::read_manifests(&repo_root().join("config/samples")).unwrap());
    cks_devcluster::apply::order(&mut manifests);
    let applied = cluster.apply(&manifests).unwrap();
    assert!(
        applied.iter().any(|a| a == "clusterpool/cks-standard"),
        "{applied:?}"
    );
    let client = cluster.client().await.unwrap();
    let discovery = Discovery::new(client).run().await.unwrap();
    for kind in ["ClusterPool", "PracticeCluster", "Session", "ValidationRun"] {
        assert!(
            discovery
                .resolve_gvk(&GroupVersionKind::gvk("cks.io", "v1alpha1", kind))
                .is_some(),
            "{kind} served"
        );
    }
}

#[tokio::test]
async fn a_crd_may_not_take_over_a_served_resource() {
    let cluster = common::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().await.unwrap());
    let mut crd = serde_json::to_value(widget_crd()).unwrap();
    crd["metadata"]["name"] = json!("deployments.apps");
    crd["spec"]["group"] = json!("apps");
    crd["spec"]["names"] = json!({"plural": "deployments", "kind": "Deployment"});
    let s = status_of(
        crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap())
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422);
    assert!(s.message.contains("already served"), "{}", s.message);
}

#[tokio::test]
async fn every_served_version_reads_the_same_objects() {
    let cluster = common::start().await;
    let client = cluster.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = serde_json::to_value(widget_crd()).unwrap();
    let mut v2 = crd["spec"]["versions"][0].clone();
    v2["name"] = json!("v2");
    v2["storage"] = json!(false);
    crd["spec"]["versions"].as_array_mut().unwrap().push(v2);
    crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap())
        .await
        .unwrap();
    let v1: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &widget_resource());
    v1.create(&PostParams::default(), &widget("shared", json!({"size": 1})))
        .await
        .unwrap();
    let ar2 =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v2", "Widget"), "widgets");
    let v2: Api<DynamicObject> = Api::default_namespaced_with(client, &ar2);
    let read = v2.get("shared").await.unwrap();
    assert_eq!(read.types.unwrap().api_version, "example.com/v2");
    assert_eq!(read.data["spec"]["size"], 1);
    let crd = crds.get("widgets.example.com").await.unwrap();
    assert_eq!(crd.status.unwrap().stored_versions, Some(vec!["v1".to_string()]));
}

async fn with_repo_crds() -> (cks_devcluster::DevCluster, kube::Client) {
    let cluster = common::start().await;
    let mut manifests = cks_devcluster::apply::read_manifests(&repo_root().join("crds")).unwrap();
    manifests.extend(cks_devcluster::apply::read_manifests(&repo_root().join("config/samples")).unwrap());
    cks_devcluster::apply::order(&mut manifests);
    cluster.apply(&manifests).unwrap();
    let client = cluster.client().await.unwrap();
    (cluster, client)
}

fn cks_api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("cks.io", "v1alpha1", kind), plural);
    Api::namespaced_with(client.clone(), "cks-lab", &ar)
}

#[tokio::test]
async fn repository_crd_rules_guard_pools() {
    let (_cluster, client) = with_repo_crds().await;
    let pools = cks_api(&client, "ClusterPool", "clusterpools");
    let mut pool = pools.get("cks-standard").await.unwrap();
    pool.metadata.resource_version = None;
    pool.metadata.uid = None;
    pool.metadata.creation_timestamp = None;
    // Cross-field rule on the spec.
    let mut bad = pool.clone();
    bad.metadata.name = Some("too-small".into());
    bad.data["spec"]["minAvailable"] = json!(10);
    let s = status_of(pools.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(s.code, 422);
    assert!(s.message.contains("spec"), "{}", s.message);
    // Root rule over metadata.name.
    let mut long = pool.clone();
    long.metadata.name = Some("a".repeat(41));
    let s = status_of(pools.create(&PostParams::default(), &long).await.unwrap_err());
    assert!(s.message.contains("at most 40 characters"), "{}", s.message);
    let mut ok = pool.clone();
    ok.metadata.name = Some("a".repeat(40));
    pools.create(&PostParams::default(), &ok).await.unwrap();
}

#[tokio::test]
async fn repository_crd_transition_rules_keep_session_fields_immutable() {
    let (_cluster, client) = with_repo_crds().await;
    let sessions = cks_api(&client, "Session", "sessions");
    let patch = Patch::Merge(json!({"spec": {"user": "mallory@example.com"}}));
    let s = status_of(
        sessions
            .patch("alice-pod-security", &PatchParams::default(), &patch)
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422);
    assert!(s.message.contains("user is immutable"), "{}", s.message);
    // Extending is allowed; shortening is not.
    let longer = Patch::Merge(json!({"spec": {"durationMinutes": 90}}));
    sessions
        .patch("alice-pod-security", &PatchParams::default(), &longer)
        .await
        .unwrap();
    let shorter = Patch::Merge(json!({"spec": {"durationMinutes": 30}}));
    let s = status_of(
        sessions
            .patch("alice-pod-security", &PatchParams::default(), &shorter)
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 422, "{}", s.message);
}
