//! The committed CRDs in `crds/` accept the shipped samples and refuse bad objects, the way an
//! API server would: OpenAPI v3 structure (types, enums, minimums, patterns, required fields)
//! through a JSON-schema validator, and `x-kubernetes-validations` CEL rules through kube-cel.

use std::path::{Path, PathBuf};

use cks_api::{ClusterPool, PracticeCluster, Session, ValidationRun};
use kube::core::cel::Validator;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The openAPIV3Schema of the committed CRD for `plural`.
fn crd_schema(plural: &str) -> Value {
    let crd = read_yaml(&repo_root().join(format!("crds/{plural}.cks.io.yaml")));
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Turns OpenAPI's `nullable: true` into JSON-schema's `type: [T, "null"]`, the one keyword a
/// JSON-schema validator would otherwise read differently from the API server.
fn openapi_to_json_schema(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true))
                && let Some(Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([t, "null"]));
            }
            map.values_mut().for_each(openapi_to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(openapi_to_json_schema),
        _ => {}
    }
}

/// Every reason the API server would refuse `object` (on update when `old` is given).
fn admission_errors(plural: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = crd_schema(plural);
    let mut structural = schema.clone();
    openapi_to_json_schema(&mut structural);
    let validator = jsonschema::validator_for(&structural).expect("CRD schema compiles as JSON schema");
    let mut errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if let Err(cel) = Validator::new().validate(&schema, object, old) {
        errors.extend(cel.as_slice().iter().map(ToString::to_string));
    }
    errors
}

fn sample(file: &str) -> Value {
    read_yaml(&repo_root().join(file))
}

fn assert_admitted_and_typed<T: DeserializeOwned>(plural: &str, file: &str) {
    let object = sample(file);
    let errors = admission_errors(plural, &object, None);
    assert!(
        errors.is_empty(),
        "{file} is refused by the {plural} CRD: {errors:#?}"
    );
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    serde_saphyr::from_str::<T>(&text)
        .unwrap_or_else(|e| panic!("{file} does not parse as its Rust type: {e}"));
}

/// Asserts the object is refused and one error mentions `needle`.
fn assert_refused(plural: &str, object: &Value, old: Option<&Value>, needle: &str) {
    let errors = admission_errors(plural, object, old);
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "expected an error mentioning {needle:?}, got {errors:#?}"
    );
}

#[test]
fn cluster_pool_sample_is_admitted() {
    assert_admitted_and_typed::<ClusterPool>("clusterpools", "config/samples/clusterpool.yaml");
}

#[test]
fn session_sample_is_admitted() {
    assert_admitted_and_typed::<Session>("sessions", "config/samples/session.yaml");
}

#[test]
fn validation_run_sample_is_admitted() {
    assert_admitted_and_typed::<ValidationRun>("validationruns", "config/samples/validationrun.yaml");
}

#[test]
fn practice_cluster_example_is_admitted() {
    assert_admitted_and_typed::<PracticeCluster>("practiceclusters", "config/examples/practicecluster.yaml");
}

#[test]
fn minimal_pool_gets_defaults_from_the_rust_type() {
    let pool: ClusterPool = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ClusterPool",
        "metadata": {"name": "p"},
        "spec": {
            "maxClusters": 3,
            "template": {
                "kubernetesVersion": "1.33",
                "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
                "workers": {"cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
                "goldenImage": {"name": "golden", "namespace": "vm-templates"},
                "sshKeySecretRef": {"name": "key"}
            }
        }
    }))
    .unwrap();
    assert_eq!(pool.spec.min_available, 1);
    assert_eq!(pool.spec.max_concurrent_provisioning, 2);
    assert_eq!(pool.spec.template.workers.count, 1);
    assert_eq!(pool.spec.template.pod_cidr, "10.244.0.0/16");
    assert_eq!(
        pool.spec.reset.strategy,
        cks_api::cluster_pool::ResetStrategy::Snapshot
    );
    assert_eq!(pool.spec.sessions.default_duration_minutes, 60);
    assert!(pool.spec.isolation.network_policy);
}

fn pool_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut pool = sample("config/samples/clusterpool.yaml");
    edit(&mut pool);
    pool
}

#[test]
fn negative_warm_buffer_is_refused() {
    let pool = pool_with(|p| p["spec"]["minAvailable"] = json!(-1));
    assert_refused("clusterpools", &pool, None, "/spec/minAvailable");
}

#[test]
fn zero_cluster_cap_is_refused() {
    let pool = pool_with(|p| p["spec"]["maxClusters"] = json!(0));
    assert_refused("clusterpools", &pool, None, "/spec/maxClusters");
}

#[test]
fn unknown_reset_strategy_is_refused() {
    let pool = pool_with(|p| p["spec"]["reset"]["strategy"] = json!("Reimage"));
    assert_refused("clusterpools", &pool, None, "/spec/reset/strategy");
}

#[test]
fn warm_buffer_above_cap_is_refused_by_cel() {
    let pool = pool_with(|p| {
        p["spec"]["minAvailable"] = json!(7);
        p["spec"]["maxClusters"] = json!(6);
    });
    assert_refused(
        "clusterpools",
        &pool,
        None,
        "minAvailable must not exceed maxClusters",
    );
}

#[test]
fn default_session_longer_than_maximum_is_refused_by_cel() {
    let pool = pool_with(|p| p["spec"]["sessions"]["defaultDurationMinutes"] = json!(200));
    assert_refused(
        "clusterpools",
        &pool,
        None,
        "defaultDurationMinutes must not exceed maxDurationMinutes",
    );
}

#[test]
fn golden_image_name_that_is_not_dns1123_is_refused() {
    let pool = pool_with(|p| p["spec"]["template"]["goldenImage"]["name"] = json!("Ubuntu_Golden"));
    assert_refused("clusterpools", &pool, None, "/spec/template/goldenImage/name");
}

#[test]
fn malformed_pod_cidr_is_refused() {
    let pool = pool_with(|p| p["spec"]["template"]["podCidr"] = json!("10.244.0.0"));
    assert_refused("clusterpools", &pool, None, "/spec/template/podCidr");
}

#[test]
fn overlong_pool_name_is_refused_by_cel() {
    let pool = pool_with(|p| p["metadata"]["name"] = json!("a".repeat(41)));
    assert_refused("clusterpools", &pool, None, "at most 40 characters");
}

fn session_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut session = sample("config/samples/session.yaml");
    edit(&mut session);
    session
}

#[test]
fn session_without_scenario_is_refused() {
    let session = session_with(|s| {
        s["spec"].as_object_mut().unwrap().remove("scenario");
    });
    assert_refused("sessions", &session, None, "\"scenario\" is a required property");
}

#[test]
fn session_with_bad_scenario_or_pool_name_is_refused() {
    let session = session_with(|s| s["spec"]["scenario"] = json!("Pod Security!"));
    assert_refused("sessions", &session, None, "/spec/scenario");
    let session = session_with(|s| s["spec"]["pool"] = json!("-pool"));
    assert_refused("sessions", &session, None, "/spec/pool");
}

#[test]
fn session_name_that_is_not_a_label_is_refused_by_cel() {
    let session = session_with(|s| s["metadata"]["name"] = json!("alice.pod-security"));
    assert_refused(
        "sessions",
        &session,
        None,
        "Session names must be DNS-1123 labels",
    );
}

#[test]
fn session_duration_outside_bounds_is_refused() {
    let session = session_with(|s| s["spec"]["durationMinutes"] = json!(2));
    assert_refused("sessions", &session, None, "/spec/durationMinutes");
    let session = session_with(|s| s["spec"]["durationMinutes"] = json!(1441));
    assert_refused("sessions", &session, None, "/spec/durationMinutes");
}

#[test]
fn session_can_be_extended_but_not_shortened() {
    let old = sample("config/samples/session.yaml");
    let longer = session_with(|s| s["spec"]["durationMinutes"] = json!(90));
    assert!(admission_errors("sessions", &longer, Some(&old)).is_empty());
    let shorter = session_with(|s| s["spec"]["durationMinutes"] = json!(30));
    assert_refused(
        "sessions",
        &shorter,
        Some(&old),
        "durationMinutes can only be raised",
    );
}

#[test]
fn session_scenario_cannot_change() {
    let old = sample("config/samples/session.yaml");
    let changed = session_with(|s| s["spec"]["scenario"] = json!("network-policies"));
    assert_refused("sessions", &changed, Some(&old), "scenario is immutable");
}

#[test]
fn validation_run_without_session_is_refused_and_spec_is_immutable() {
    let mut run = sample("config/samples/validationrun.yaml");
    let old = run.clone();
    run["spec"]["task"] = json!("02");
    assert_refused(
        "validationruns",
        &run,
        Some(&old),
        "ValidationRun spec is immutable",
    );
    run["spec"].as_object_mut().unwrap().remove("session");
    assert_refused("validationruns", &run, None, "\"session\" is a required property");
}

#[test]
fn claimed_cluster_cannot_be_handed_to_another_session() {
    let old = sample("config/examples/practicecluster.yaml");
    let mut stolen = old.clone();
    stolen["spec"]["claimRef"]["name"] = json!("mallory-session");
    assert_refused("practiceclusters", &stolen, Some(&old), "claimRef cannot move");
    // The uid is the Session's identity too: a recreated Session of the same name is another.
    let mut claimed = old.clone();
    claimed["spec"]["claimRef"]["uid"] = json!("5a1d0b7c-6f4e-4c3b-9e2f-1a2b3c4d5e6f");
    let mut moved = claimed.clone();
    moved["spec"]["claimRef"]["uid"] = json!("0b7c6f4e-5a1d-4c3b-9e2f-1a2b3c4d5e6f");
    assert_refused("practiceclusters", &moved, Some(&claimed), "claimRef cannot move");
    let mut dropped = claimed.clone();
    dropped["spec"]["claimRef"].as_object_mut().unwrap().remove("uid");
    assert_refused(
        "practiceclusters",
        &dropped,
        Some(&claimed),
        "claimRef cannot move",
    );
    assert_refused("practiceclusters", &claimed, Some(&old), "claimRef cannot move");
    assert!(admission_errors("practiceclusters", &claimed, Some(&claimed)).is_empty());
    let mut released = old.clone();
    released["spec"].as_object_mut().unwrap().remove("claimRef");
    assert!(admission_errors("practiceclusters", &released, Some(&old)).is_empty());
}

#[test]
fn practice_cluster_template_is_immutable() {
    let old = sample("config/examples/practicecluster.yaml");
    let mut changed = old.clone();
    changed["spec"]["template"]["controlPlane"]["cpu"] = json!(4);
    assert_refused("practiceclusters", &changed, Some(&old), "template is immutable");
}

#[test]
fn unknown_phase_in_status_is_refused() {
    let mut session = sample("config/samples/session.yaml");
    session["status"] = json!({"phase": "Running"});
    assert_refused("sessions", &session, None, "/status/phase");
}

fn assert_admitted(plural: &str, object: &Value) {
    let errors = admission_errors(plural, object, None);
    assert!(errors.is_empty(), "refused: {errors:#?}");
}

#[test]
fn kubernetes_versions_the_operator_cannot_bootstrap_are_refused() {
    for version in ["1.12.0", "1.21", "1.21.9", "2.0", "1.33.0.1", "v1.33", "1.0999"] {
        let pool = pool_with(|p| p["spec"]["template"]["kubernetesVersion"] = json!(version));
        assert_refused("clusterpools", &pool, None, "/spec/template/kubernetesVersion");
    }
    for version in ["1.22", "1.22.0", "1.33.2", "1.100"] {
        let pool = pool_with(|p| p["spec"]["template"]["kubernetesVersion"] = json!(version));
        assert_admitted("clusterpools", &pool);
    }
}

#[test]
fn quantities_that_are_not_positive_quantities_are_refused() {
    let fields: [&[&str]; 7] = [
        &["template", "controlPlane", "memory"],
        &["template", "controlPlane", "diskSize"],
        &["template", "workers", "memory"],
        &["template", "workers", "diskSize"],
        &["isolation", "resourceQuota", "cpu"],
        &["isolation", "resourceQuota", "memory"],
        &["isolation", "resourceQuota", "storage"],
    ];
    for path in fields {
        let set = |value: Value| {
            pool_with(|p| {
                let mut node = &mut p["spec"];
                for key in path {
                    node = &mut node[*key];
                }
                *node = value;
            })
        };
        for bad in [
            json!("lots"),
            json!("-5Gi"),
            json!(-5),
            json!("0"),
            json!(0),
            json!("1e2.5"),
        ] {
            let errors = admission_errors("clusterpools", &set(bad.clone()), None);
            assert!(!errors.is_empty(), "{path:?} = {bad} is admitted");
        }
        for good in [
            json!("4Gi"),
            json!("500m"),
            json!(2),
            json!("1.5Gi"),
            json!("1e3"),
        ] {
            assert_admitted("clusterpools", &set(good));
        }
    }
    let pool = pool_with(|p| p["spec"]["template"]["controlPlane"]["memory"] = json!("lots"));
    assert_refused("clusterpools", &pool, None, "greater than zero");
}

#[test]
fn pool_names_that_cannot_name_a_cluster_are_refused_by_cel() {
    for name in ["1pool", "pool.a"] {
        let pool = pool_with(|p| p["metadata"]["name"] = json!(name));
        assert_refused("clusterpools", &pool, None, "DNS-1035 labels");
    }
}

#[test]
fn cidrs_with_octets_above_255_are_refused() {
    let pool = pool_with(|p| p["spec"]["template"]["serviceCidr"] = json!("10.300.0.0/16"));
    assert_refused("clusterpools", &pool, None, "/spec/template/serviceCidr");
    let pool = pool_with(|p| p["spec"]["isolation"]["egress"][0]["cidr"] = json!("256.0.0.0/0"));
    assert_refused("clusterpools", &pool, None, "/spec/isolation/egress/0/cidr");
}

#[test]
fn egress_exceptions_must_be_networks_inside_the_rule() {
    let pool = pool_with(|p| p["spec"]["isolation"]["egress"][0]["except"] = json!(["10.0.0.0"]));
    assert_refused("clusterpools", &pool, None, "/spec/isolation/egress/0/except/0");
    let pool = pool_with(|p| {
        p["spec"]["isolation"]["egress"] = json!([{"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}]);
    });
    assert_refused("clusterpools", &pool, None, "strictly inside cidr");
    let pool = pool_with(|p| {
        p["spec"]["isolation"]["egress"] = json!([{"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}]);
    });
    assert_refused("clusterpools", &pool, None, "strictly inside cidr");
    let pool = pool_with(|p| {
        p["spec"]["isolation"]["egress"] = json!([{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]);
    });
    assert_admitted("clusterpools", &pool);
}

#[test]
fn storage_class_names_must_be_dns_subdomains() {
    let pool = pool_with(|p| p["spec"]["template"]["storageClassName"] = json!("Fast_SSD"));
    assert_refused("clusterpools", &pool, None, "/spec/template/storageClassName");
}

#[test]
fn the_operators_quantity_parser_agrees_with_kubernetes_cel_is_quantity() {
    let schema = json!({"type": "string", "x-kubernetes-validations": [{"rule": "isQuantity(self)"}]});
    for text in [
        "4Gi", "500m", "1.5", ".5", "5.", "1e3", "1E-3", "0", "+2", "-5Gi", "1n", "2Ei", "lots", "", "1gi",
        "1.2.3", "1e", "1e2.5", "1Kb", "--1", ".", "Gi", "1 Gi",
    ] {
        let cel = Validator::new().validate(&schema, &json!(text), None).is_ok();
        assert_eq!(
            cks_api::quantity::millis(text).is_some(),
            cel,
            "{text:?}: the parser and CEL's isQuantity disagree"
        );
    }
}
