//! Unit tests of the views: the shapes the reference frontend depends on (§7 of
//! `http-contract.md`), from hand-made resources and a small catalog.

use std::sync::Arc;

use cks_api::session::{SessionStatus, TaskStatus};
use cks_scenarios::{Catalog, CatalogStore, LoadOptions};
use serde_json::json;

use super::*;

fn write(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn catalog() -> (tempfile::TempDir, Arc<Catalog>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        &root.join("categories.yaml"),
        "categories:\n  - id: rbac\n    name: RBAC and Authentication\n    description: x\n",
    );
    let sc = root.join("lock-down");
    write(
        &sc.join("metadata.yaml"),
        "id: lock-down\ntitle: Lock Down\ndescription: Restrict access.\ndifficulty: advanced\n\
         timeEstimate: 90m\ntopics: [rbac, audit]\ncategory: rbac\n",
    );
    write(
        &sc.join("tasks/01-task.md"),
        "# Restrict\n\n## Description\n\nMake it safe.\n\n## Hints\n\n<details>\n<summary>Look</summary>\n\nAt roles.\n</details>\n",
    );
    write(
        &sc.join("validation/01-validation.yaml"),
        "validation:\n  - id: secret-file\n    type: file_content\n    path: /etc/secret\n    condition: contains\n    value: the-answer\n    errorMessage: Fix it.\n",
    );
    write(
        &sc.join("tasks/02-task.md"),
        "# Second\n\n## Description\n\nMore.\n",
    );
    write(
        &sc.join("validation/02-validation.yaml"),
        "validation:\n  - id: ns\n    type: resource_exists\n    resource: {kind: Namespace, name: x}\n",
    );
    let store = CatalogStore::open(root, LoadOptions::default()).unwrap();
    let catalog = store.catalog();
    assert!(
        catalog.errors().next().is_none(),
        "{:?}",
        catalog.errors().collect::<Vec<_>>()
    );
    (dir, catalog)
}

fn session(status: serde_json::Value) -> Session {
    serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "Session",
        "metadata": {"name": "s1", "namespace": "cks", "creationTimestamp": "2025-01-02T10:00:00Z"},
        "spec": {"scenario": "lock-down", "user": "alice", "pool": "pool", "durationMinutes": 60},
        "status": status,
    }))
    .unwrap()
}

#[test]
fn scenarios_have_the_reference_card_fields_and_hide_the_answers() {
    let (_dir, catalog) = catalog();
    let s = scenario_view(catalog.get("lock-down").unwrap());
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["difficulty"], "advanced");
    assert_eq!(v["timeEstimate"], "1 h 30 min");
    assert_eq!(v["topics"], json!(["rbac", "audit"]));
    assert_eq!(v["tasks"][0]["id"], "task-1");
    assert_eq!(v["tasks"][0]["description"], "Make it safe.");
    assert_eq!(v["tasks"][0]["hints"], json!(["Look At roles."]));
    assert_eq!(
        v["tasks"][0]["validation"],
        json!([{"id": "secret-file", "type": "file_content", "target": "control-plane"}])
    );
    assert_eq!(
        v["tasks"][1]["validation"][0],
        json!({"id": "ns", "type": "resource_exists"})
    );
    let text = v.to_string();
    assert!(
        !text.contains("the-answer") && !text.contains("/etc/secret"),
        "{text}"
    );
    assert_eq!(
        categories(&catalog),
        BTreeMap::from([("rbac".to_owned(), "RBAC and Authentication".to_owned())])
    );
}

#[test]
fn scenario_filters_match_category_or_topic_difficulty_and_text() {
    let (_dir, catalog) = catalog();
    let s = catalog.get("lock-down").unwrap();
    let f = |c: Option<&str>, d: Option<&str>, q: Option<&str>| ScenarioFilter {
        category: c.map(Into::into),
        difficulty: d.map(Into::into),
        search: q.map(Into::into),
    };
    assert!(f(None, None, None).matches(s));
    assert!(f(Some("rbac"), None, None).matches(s));
    assert!(
        f(Some("audit"), None, None).matches(s),
        "a topic counts as a category"
    );
    assert!(!f(Some("network"), None, None).matches(s));
    assert!(f(None, Some("Advanced"), None).matches(s));
    assert!(!f(None, Some("beginner"), None).matches(s));
    assert!(f(None, None, Some("LOCK")).matches(s) && f(None, None, Some("restrict")).matches(s));
    assert!(!f(None, None, Some("falco")).matches(s));
    assert!(
        f(Some(""), Some(" "), Some("")).matches(s),
        "empty filters are ignored"
    );
}

#[test]
fn session_status_is_running_from_the_claim_and_tasks_follow_the_scenario() {
    let (_dir, catalog) = catalog();
    let sc = catalog.get("lock-down").map(|a| a.as_ref());
    let waiting = session(json!({"phase": "WaitingForCluster", "queuePosition": 3, "message": "no cluster"}));
    let v = session_view(&waiting, sc, None);
    assert_eq!((v.status.as_str(), v.queue_position), ("pending", Some(3)));
    assert_eq!(v.status_message.as_deref(), Some("no cluster"));
    assert_eq!(
        (v.start_time.as_str(), v.expiration_time.as_str()),
        (ZERO_TIME, ZERO_TIME)
    );
    assert_eq!(
        v.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["task-1", "task-2"]
    );

    let mut st = SessionStatus {
        phase: SessionPhase::Initializing,
        cluster: Some("pc-1".into()),
        started_at: Some(Time("2025-01-02T10:00:05Z".parse().unwrap())),
        expires_at: Some(Time("2025-01-02T11:00:05Z".parse().unwrap())),
        ..SessionStatus::default()
    };
    // An entry the operator wrote under the task's number still lands on the task.
    st.tasks = vec![TaskStatus {
        id: "02".into(),
        state: TaskState::Passed,
        attempts: 2,
        last_run: Some("s1-task-2-abc".into()),
        last_run_time: Some(Time("2025-01-02T10:30:00Z".parse().unwrap())),
    }];
    let mut s = waiting;
    s.status = Some(st);
    let cluster: PracticeCluster = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "PracticeCluster",
        "metadata": {"name": "pc-1", "namespace": "cks"},
        "spec": {"pool": "pool", "template": {
            "kubernetesVersion": "1.33.0",
            "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
            "workers": {"count": 1, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
            "goldenImage": {"namespace": "vm-templates", "name": "golden"},
            "sshKeySecretRef": {"name": "k"}}, "templateHash": "h"},
        "status": {"phase": "Assigned", "namespace": "cks-pc-1", "vms": [
            {"name": "pc-1-cp", "role": "control-plane", "target": "control-plane", "ip": "10.0.0.1", "ready": true},
            {"name": "pc-1-w1", "role": "worker", "target": "worker-1", "ip": "10.0.0.2", "ready": true}]},
    }))
    .unwrap();
    let v = session_view(&s, sc, Some(&cluster));
    assert_eq!(
        (v.status.as_str(), v.phase),
        ("running", SessionPhase::Initializing)
    );
    assert_eq!(v.status_message, None);
    assert_eq!(
        (v.control_plane_vm.as_str(), v.worker_node_vm.as_str()),
        ("pc-1-cp", "pc-1-w1")
    );
    assert_eq!(v.namespace, "cks-pc-1");
    assert_eq!(v.expiration_time, "2025-01-02T11:00:05Z");
    assert_eq!(v.tasks[0].status, "pending");
    assert_eq!(
        (v.tasks[1].id.as_str(), v.tasks[1].status.as_str()),
        ("task-2", "completed")
    );
    assert_eq!(v.tasks[1].validation_time, "2025-01-02T10:30:00Z");
    let text = serde_json::to_string(&v).unwrap();
    assert!(!text.contains("10.0.0."), "no VM address: {text}");
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "sessionId",
        "controlPlaneVM",
        "workerNodeVM",
        "activeTerminals",
        "clusterLockTime",
    ] {
        assert!(j.get(key).is_some(), "{key} in {j}");
    }
}

#[test]
fn phases_map_to_the_reference_statuses_and_stats() {
    assert_eq!(reference_status(SessionPhase::Pending), "pending");
    assert_eq!(reference_status(SessionPhase::Ready), "running");
    assert_eq!(reference_status(SessionPhase::Failed), "failed");
    assert_eq!(reference_task_status(TaskState::Passed), "completed");
    assert_eq!(reference_cluster_status(PracticeClusterPhase::Assigned), "locked");
    assert_eq!(
        reference_cluster_status(PracticeClusterPhase::Bootstrapping),
        "creating"
    );
    let sessions = [
        session(json!({"phase": "Ready"})),
        session(json!({"phase": "WaitingForCluster"})),
        session(json!({"phase": "Ended"})),
    ];
    assert_eq!(
        session_stats(&sessions),
        SessionStats {
            total_sessions: 2,
            running_sessions: 1,
            provisioning_sessions: 1
        }
    );
}

#[test]
fn validation_results_take_rule_types_from_the_catalog_and_say_what_failed() {
    let (_dir, catalog) = catalog();
    let run: ValidationRun = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ValidationRun",
        "metadata": {"name": "r1", "namespace": "cks", "creationTimestamp": "2025-01-02T10:00:00Z"},
        "spec": {"session": "s1", "task": "task-1"},
        "status": {"phase": "Failed", "completionTime": "2025-01-02T10:00:02Z", "results": [
            {"task": "task-1", "id": "secret-file", "passed": false, "message": "Fix it.",
             "expected": "contains the-answer", "actual": "nothing", "durationMillis": 4},
            {"task": "task-1", "id": "gone", "passed": false, "error": true, "message": "VM unreachable"}]},
    }))
    .unwrap();
    let v = serde_json::to_value(validation_view(
        &run,
        catalog.get("lock-down").map(|a| a.as_ref()),
    ))
    .unwrap();
    assert_eq!(
        (v["success"].as_bool(), v["message"].as_str()),
        (Some(false), Some("One or more validations failed"))
    );
    assert_eq!(v["timestamp"], "2025-01-02T10:00:02Z");
    assert_eq!(v["results"][0]["ruleType"], "file_content");
    assert_eq!(v["results"][0]["errorCode"], "CHECK_FAILED");
    assert_eq!(v["results"][0]["expected"], "contains the-answer");
    assert_eq!(v["results"][1]["errorCode"], "RULE_ERROR");
    assert_eq!(
        v["results"][1]["ruleType"], "",
        "a rule the catalog no longer has"
    );
    assert_eq!(v["finished"], true);

    let running: ValidationRun = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "ValidationRun",
        "metadata": {"name": "r2", "namespace": "cks"},
        "spec": {"session": "s1", "task": "task-1"},
    }))
    .unwrap();
    let v = validation_view(&running, None);
    assert!(!v.success && !v.finished);
    assert_eq!((v.results.len(), v.timestamp.as_str()), (0, ZERO_TIME));
}

#[test]
fn reference_catalogs_keep_the_contract_shapes_when_a_scenario_has_no_category() {
    // The scenarios crate's fixture in the reference system's format: categories.yaml as a
    // bare id map, categories derived from topics, one scenario (kubectl-contexts) under none.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/tests/fixtures/reference");
    let store = CatalogStore::open(&dir, LoadOptions::default()).unwrap();
    let catalog = store.catalog();
    let v = serde_json::to_value(scenario_view(catalog.get("kubectl-contexts").unwrap())).unwrap();
    assert!(
        v.get("category").is_none(),
        "no category: the key is absent, not null: {v}"
    );
    assert_eq!(
        v["topics"],
        json!(["kubectl", "contexts", "certificates", "kubeconfig"])
    );
    let v = serde_json::to_value(scenario_view(catalog.get("basic-pod-security").unwrap())).unwrap();
    assert_eq!(v["category"], "pod-security", "derived from the topics");
    let cats = serde_json::to_value(categories(&catalog)).unwrap();
    assert_eq!(
        cats["rbac"], "RBAC and Authentication",
        "a flat id -> name object: {cats}"
    );
    assert!(
        cats.as_object()
            .unwrap()
            .values()
            .all(serde_json::Value::is_string)
    );
}
