//! A catalog written for the reference system (`tests/fixtures/reference`, in the shape its
//! description gives) loads unchanged, and the loaded model means what the reference meant:
//! categories from the topics, `property` inside `resource:` evaluated exactly like the
//! native form, setup step `conditions` carried to whatever runs the steps.

use std::path::Path;
use std::time::Duration;

use cks_scenarios::{Catalog, Check, Condition, SetupAction, Target, WaitFor};

fn fixture() -> Catalog {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    Catalog::load(dir).unwrap()
}

#[test]
fn the_reference_catalog_loads_without_errors() {
    let catalog = fixture();
    let errors: Vec<String> = catalog.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(catalog.len(), 3);
    let warnings: Vec<String> = catalog.warnings().iter().map(ToString::to_string).collect();
    // The differences that deserve an author's look are warnings, not silence.
    for expected in [
        "no `id`; the directory name `kubectl-contexts` is used",
        "none of the topics (kubectl, contexts, certificates, kubeconfig) is a category",
        "02-task.md:1:1: task has no `# Title` heading",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "{expected}: {warnings:#?}"
        );
    }
}

#[test]
fn categories_come_from_the_map_and_scenarios_are_filed_by_their_topics() {
    let catalog = fixture();
    let ids: Vec<&str> = catalog.categories().iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["pod-security", "runtime-security", "network-security", "rbac"]
    );
    assert_eq!(catalog.categories()[3].name, "RBAC and Authentication");
    assert_eq!(
        catalog.categories()[0].description.as_deref(),
        Some("Pod Security Standards, security contexts and admission")
    );
    let category = |id: &str| catalog.get(id).unwrap().metadata.category.clone();
    assert_eq!(category("basic-pod-security").as_deref(), Some("pod-security"));
    // The first topic that is a category, in the order the topics are written.
    assert_eq!(
        category("falco-runtime-security").as_deref(),
        Some("runtime-security")
    );
    assert_eq!(category("kubectl-contexts"), None);
}

#[test]
fn a_property_inside_resource_is_the_same_rule_as_the_native_form() {
    let catalog = fixture();
    let reference = &catalog.get("basic-pod-security").unwrap().tasks[0].rules[1];
    let native_dir = tempfile::tempdir().unwrap();
    // The same scenario with `property` beside `resource:`, as cks-lab writes it.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    for file in [
        "categories.yaml",
        "basic-pod-security/metadata.yaml",
        "basic-pod-security/tasks/01-task.md",
    ] {
        let to = native_dir.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(file), to).unwrap();
    }
    let native_rules = std::fs::read_to_string(src.join("basic-pod-security/validation/01-validation.yaml"))
        .unwrap()
        .replace("      property:", "    property:");
    assert!(native_rules.contains("\n    property:"));
    let to = native_dir
        .path()
        .join("basic-pod-security/validation/01-validation.yaml");
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::write(to, native_rules).unwrap();
    let native_catalog = Catalog::load(native_dir.path()).unwrap();
    let native = &native_catalog.get("basic-pod-security").unwrap().tasks[0].rules[1];

    // What the validation engine consumes: the check (resource and JSONPath) and the condition.
    assert_eq!(json(&reference.check), json(&native.check));
    assert_eq!(json(&reference.condition), json(&native.condition));
    let Check::ResourceProperty { resource, property } = &reference.check else {
        panic!("{:?}", reference.check)
    };
    assert_eq!(resource.kind, "Namespace");
    assert_eq!(resource.name.as_deref(), Some("test-pods"));
    let namespace = serde_json::json!({"metadata": {"name": "test-pods",
        "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}});
    assert_eq!(property.query(&namespace), [&serde_json::json!("baseline")]);
    assert!(matches!(&reference.condition, Some(Condition::Equals(v)) if v == "baseline"));

    // The same for a namespaced Deployment with a numeric value.
    let falco = catalog.get("falco-runtime-security").unwrap();
    let Check::ResourceProperty { resource, property } = &falco.tasks[1].rules[0].check else {
        panic!()
    };
    assert_eq!(resource.namespace.as_deref(), Some("default"));
    assert_eq!(property.translated(), "$.spec.replicas");
}

/// The model as JSON: compares what a rule checks without requiring `PartialEq` on it.
fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn setup_steps_keep_their_conditions_and_reference_fields() {
    let catalog = fixture();
    let falco = catalog.get("falco-runtime-security").unwrap();
    let step = &falco.setup[0];
    assert_eq!(step.id, "deploy-httpd");
    assert_eq!(step.retry_count, 2);
    assert_eq!(step.timeout, Some(Duration::from_secs(60)));
    assert!(
        matches!(&step.action, SetupAction::Command { command } if command.starts_with("kubectl create"))
    );
    assert_eq!(step.conditions.len(), 2);
    let WaitFor::ResourceExists { resource } = &step.conditions[0].wait_for else {
        panic!("{:?}", step.conditions[0])
    };
    assert_eq!(
        (
            resource.kind.as_str(),
            resource.name.as_deref(),
            resource.namespace.as_deref()
        ),
        ("Deployment", Some("httpd"), Some("default"))
    );
    assert_eq!(step.conditions[0].timeout, Some(Duration::from_secs(30)));
    assert!(matches!(
        &step.conditions[1].wait_for,
        WaitFor::Command { command, target: Target::ControlPlane } if command.contains("rollout status")
    ));
    assert_eq!(step.conditions[1].timeout, Some(Duration::from_secs(120)));
    assert!(falco.setup[1].conditions.is_empty());

    // Tasks without hints or a title load; the title is the task's number.
    assert_eq!(falco.tasks[1].title, "Task 2");
    let contexts = catalog.get("kubectl-contexts").unwrap();
    assert!(contexts.tasks[0].hints.is_empty());
    assert_eq!(contexts.setup[0].timeout, Some(Duration::from_secs(30)));
}
