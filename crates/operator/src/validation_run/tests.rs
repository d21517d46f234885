//! Unit tests of the pure steps: admission, the verdict's status, task bookkeeping, pruning.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use cks_api::practice_cluster::ClaimRef;
use cks_api::session::{SessionSpec, SessionStatus};
use cks_api::validation_run::ValidationRunSpec;
use cks_scenarios::RuleType;
use cks_validation::RuleOutcome;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;

/// A catalog with one scenario `demo` of two tasks, in a fresh directory under the system
/// temp dir (removed when the guard drops).
struct TempCatalog {
    dir: PathBuf,
    catalog: Catalog,
}

impl Drop for TempCatalog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn catalog() -> TempCatalog {
    let dir = std::env::temp_dir().join(format!("cks-vrun-unit-{}", uuid::Uuid::new_v4().simple()));
    let s = dir.join("demo");
    for sub in ["tasks", "validation"] {
        std::fs::create_dir_all(s.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("categories.yaml"),
        "categories:\n  - id: cluster-setup\n    name: Cluster Setup\n",
    )
    .unwrap();
    std::fs::write(
        s.join("metadata.yaml"),
        "id: demo\ntitle: Demo\ndescription: d\ncategory: cluster-setup\n",
    )
    .unwrap();
    for n in ["01", "02"] {
        std::fs::write(
            s.join(format!("tasks/{n}-task.md")),
            format!("# Task {n}\n\n## Description\nDo {n}.\n"),
        )
        .unwrap();
        std::fs::write(
            s.join(format!("validation/{n}-validation.yaml")),
            "validation:\n  - id: ns\n    type: resource_exists\n    resource: {kind: Namespace, name: x}\n    errorMessage: make x\n",
        )
        .unwrap();
    }
    let catalog = Catalog::load(&dir).unwrap();
    assert!(catalog.get("demo").is_some(), "{:?}", catalog.catalog_errors());
    TempCatalog { dir, catalog }
}

fn session(phase: SessionPhase, cluster: Option<&str>) -> Session {
    let mut s = Session::new(
        "s1",
        SessionSpec {
            scenario: "demo".into(),
            user: "alice".into(),
            pool: "p".into(),
            duration_minutes: 60,
        },
    );
    s.metadata.uid = Some("uid-s1".into());
    s.status = Some(SessionStatus {
        phase,
        cluster: cluster.map(str::to_owned),
        ..SessionStatus::default()
    });
    s
}

fn cluster(claimed_by: Option<(&str, &str)>) -> PracticeCluster {
    let mut pc: PracticeCluster = serde_json::from_value(json!({
        "apiVersion": "cks.io/v1alpha1", "kind": "PracticeCluster",
        "metadata": {"name": "c1", "namespace": "cks"},
        "spec": {"pool": "p", "templateHash": "h", "template": {
            "kubernetesVersion": "1.33.0",
            "controlPlane": {"cpu": 2, "memory": "4Gi", "diskSize": "20Gi"},
            "workers": {"count": 1, "cpu": 2, "memory": "2Gi", "diskSize": "20Gi"},
            "goldenImage": {"namespace": "vm-templates", "name": "golden"},
            "sshKeySecretRef": {"name": "ssh-key"}}},
    }))
    .unwrap();
    pc.spec.claim_ref = claimed_by.map(|(name, uid)| ClaimRef {
        name: name.into(),
        uid: Some(uid.into()),
    });
    pc
}

fn reject_reason(r: Result<Admitted, Rejection>) -> &'static str {
    r.expect_err("rejected").reason
}

#[test]
fn admission_refuses_with_a_reason_per_problem() {
    let cat = catalog();
    let c = Some(&cat.catalog);
    let held = cluster(Some(("s1", "uid-s1")));
    assert_eq!(
        reject_reason(admit("s1", "01", None, None, c)),
        reasons::SESSION_NOT_FOUND
    );
    for phase in [SessionPhase::Expired, SessionPhase::Ended, SessionPhase::Failed] {
        let s = session(phase, Some("c1"));
        let r = admit("s1", "01", Some(&s), Some(&held), c);
        assert_eq!(reject_reason(r), reasons::SESSION_NOT_ACTIVE, "{phase:?}");
    }
    let mut deleting = session(SessionPhase::Ready, Some("c1"));
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    assert_eq!(
        reject_reason(admit("s1", "01", Some(&deleting), Some(&held), c)),
        reasons::SESSION_NOT_ACTIVE
    );
    for phase in [SessionPhase::Pending, SessionPhase::WaitingForCluster] {
        let s = session(phase, None);
        assert_eq!(
            reject_reason(admit("s1", "01", Some(&s), None, c)),
            reasons::SESSION_NOT_READY
        );
    }
    let ready = session(SessionPhase::Ready, Some("c1"));
    // The cluster is gone, unclaimed, or claimed by another Session (or an older one of the
    // same name).
    for pc in [
        None,
        Some(cluster(None)),
        Some(cluster(Some(("s2", "uid-s2")))),
        Some(cluster(Some(("s1", "uid-old")))),
    ] {
        assert_eq!(
            reject_reason(admit("s1", "01", Some(&ready), pc.as_ref(), c)),
            reasons::SESSION_NOT_READY
        );
    }
    assert_eq!(
        reject_reason(admit("s1", "01", Some(&ready), Some(&held), None)),
        reasons::SCENARIO_NOT_FOUND
    );
    let mut other = ready.clone();
    other.spec.scenario = "gone".into();
    let r = admit("s1", "01", Some(&other), Some(&held), c).unwrap_err();
    assert_eq!(r.reason, reasons::SCENARIO_NOT_FOUND);
    assert!(r.message.contains("gone"), "{}", r.message);
    let r = admit("s1", "07", Some(&ready), Some(&held), c).unwrap_err();
    assert_eq!(r.reason, reasons::TASK_NOT_FOUND);
    assert!(r.message.contains("task-1, task-2"), "{}", r.message);
}

#[test]
fn admission_accepts_ready_and_initializing_sessions() {
    let cat = catalog();
    let held = cluster(Some(("s1", "uid-s1")));
    for phase in [SessionPhase::Ready, SessionPhase::Initializing] {
        let s = session(phase, Some("c1"));
        let a = admit("s1", "01", Some(&s), Some(&held), Some(&cat.catalog)).unwrap();
        assert_eq!(a.cluster, "c1");
        assert_eq!(a.tasks, ["task-1"]);
    }
    let s = session(SessionPhase::Ready, Some("c1"));
    let all = admit("s1", "", Some(&s), Some(&held), Some(&cat.catalog)).unwrap();
    assert_eq!(all.tasks, ["task-1", "task-2"]);
    let scenario = cat.catalog.get("demo").unwrap();
    assert_eq!(task_label("1", Some(scenario)), "task-1");
    assert_eq!(task_label("task-2", Some(scenario)), "task-2");
    assert_eq!(task_label("09", Some(scenario)), "09");
    assert_eq!(task_label("01", None), "01");
    assert_eq!(task_label("", Some(scenario)), "");
}

fn result(task: &str, id: &str, passed: bool, error: bool) -> RuleResult {
    RuleResult {
        task: task.into(),
        id: id.into(),
        passed,
        message: String::new(),
        expected: None,
        actual: None,
        error,
        duration_millis: 1,
    }
}

#[test]
fn recording_a_run_counts_once_and_follows_the_verdict() {
    let cat = catalog();
    let scenario = cat.catalog.get("demo").unwrap();
    let t1 = Time(Timestamp::from_second(1_000).unwrap());
    // The Session controller may have written the entry with the task's number.
    let mut entries = vec![TaskStatus {
        id: "01".into(),
        state: TaskState::Pending,
        attempts: 0,
        last_run: None,
        last_run_time: None,
    }];
    let failed = [result("task-1", "a", false, false)];
    assert!(record_run(
        &mut entries,
        scenario,
        &["task-1".into()],
        "r1",
        &failed,
        &t1
    ));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, TaskState::Failed);
    assert_eq!(entries[0].attempts, 1);
    assert_eq!(entries[0].last_run.as_deref(), Some("r1"));
    assert_eq!(entries[0].last_run_time, Some(t1.clone()));
    assert!(
        !record_run(&mut entries, scenario, &["task-1".into()], "r1", &failed, &t1),
        "the same run is recorded once"
    );
    assert_eq!(entries[0].attempts, 1);

    let errored = [
        result("task-1", "a", true, false),
        result("task-1", "b", false, true),
    ];
    assert!(record_run(
        &mut entries,
        scenario,
        &["task-1".into()],
        "r2",
        &errored,
        &t1
    ));
    assert_eq!(entries[0].state, TaskState::Failed, "an error leaves the state");
    assert_eq!(entries[0].attempts, 2, "but counts the attempt");

    // A run of all tasks: per-task verdicts, the missing entry added.
    let all = [
        result("task-1", "a", true, false),
        result("task-2", "a", false, false),
    ];
    let tasks = ["task-1".to_owned(), "task-2".to_owned()];
    assert!(record_run(&mut entries, scenario, &tasks, "r3", &all, &t1));
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].state, TaskState::Passed);
    assert_eq!(entries[0].attempts, 3);
    assert_eq!(entries[1].id, "task-2");
    assert_eq!(entries[1].state, TaskState::Failed);
    assert_eq!(entries[1].attempts, 1);

    // A cluster that could not be reached: no results; the attempt counts, the state stays.
    assert!(record_run(&mut entries, scenario, &tasks, "r4", &[], &t1));
    assert_eq!(entries[0].state, TaskState::Passed);
    assert_eq!(entries[0].attempts, 4);
}

fn vrun(name: &str, task: &str, created: i64, phase: Option<ValidationRunPhase>) -> ValidationRun {
    let mut r = ValidationRun::new(
        name,
        ValidationRunSpec {
            session: "s1".into(),
            task: task.into(),
        },
    );
    r.metadata = ObjectMeta {
        name: Some(name.into()),
        labels: Some(BTreeMap::from([(labels::TASK.to_owned(), task.to_owned())])),
        creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
        ..ObjectMeta::default()
    };
    r.status = phase.map(|phase| ValidationRunStatus {
        phase,
        ..ValidationRunStatus::default()
    });
    r
}

#[test]
fn pruning_keeps_the_newest_finished_runs_of_the_task() {
    use ValidationRunPhase::{Error, Failed, Passed, Running};
    let runs = vec![
        vrun("a", "task-1", 1, Some(Passed)),
        vrun("b", "task-1", 2, Some(Failed)),
        vrun("c", "task-1", 3, Some(Running)),
        vrun("d", "task-1", 3, None),
        vrun("e", "task-1", 4, Some(Error)),
        vrun("f", "task-1", 4, Some(Passed)),
        vrun("g", "task-2", 0, Some(Passed)),
        vrun("h", "", 0, Some(Passed)),
    ];
    let none = HashSet::new();
    let names = |keep, shown: &HashSet<String>| {
        runs_to_prune(&runs, "task-1", keep, shown)
            .into_iter()
            .map(|r| r.name_any())
            .collect::<Vec<_>>()
    };
    // Newest first: f and e (same second, by name), then b, then a.
    assert_eq!(names(2, &none), ["b", "a"]);
    assert_eq!(names(1, &none), ["e", "b", "a"]);
    assert_eq!(names(4, &none), Vec::<String>::new());
    assert!(
        runs_to_prune(&runs, "", 0, &none)
            .iter()
            .all(|r| r.name_any() == "h")
    );
    // The Session recorded e last (f and e are of one second): e is kept, f goes.
    let shown = HashSet::from(["e".to_owned()]);
    assert_eq!(names(1, &shown), ["f", "b", "a"]);
    assert_eq!(names(2, &shown), ["b", "a"]);
    // A run the Session shows is never pruned, even beyond `keep`.
    assert_eq!(names(0, &shown), ["f", "b", "a"]);
    // A shown run of another task changes nothing here.
    assert_eq!(names(1, &HashSet::from(["g".to_owned()])), ["e", "b", "a"]);
}

fn outcome(rule: &str, passed: bool, error: Option<cks_validation::Error>) -> RuleOutcome {
    RuleOutcome {
        task: "task-1".into(),
        rule: rule.into(),
        rule_type: RuleType::Command,
        passed,
        message: if passed {
            String::new()
        } else {
            format!("fix {rule}")
        },
        expected: Some("ok".into()),
        actual: Some("nope".into()),
        duration: Duration::from_millis(3),
        error,
    }
}

fn report(results: Vec<RuleOutcome>) -> ValidationReport {
    ValidationReport {
        scenario: "demo".into(),
        results,
        duration: Duration::from_millis(5),
        host_keys: BTreeMap::new(),
    }
}

#[test]
fn the_status_carries_verdict_counts_and_cause() {
    let start = Time(Timestamp::from_second(10).unwrap());
    let now = Timestamp::from_second(11).unwrap();
    let passed = evaluated_status(
        &report(vec![outcome("a", true, None), outcome("b", true, None)]),
        Some(1),
        start.clone(),
        now,
    );
    assert_eq!(passed.phase, ValidationRunPhase::Passed);
    assert_eq!((passed.passed_rules, passed.total_rules), (2, 2));
    assert_eq!(passed.completion_time, Some(Time(now)));
    let complete = find_condition(&passed.conditions, condition_types::COMPLETE).unwrap();
    assert_eq!(
        (complete.status.as_str(), complete.reason.as_str()),
        ("True", "Passed")
    );

    let failed = evaluated_status(
        &report(vec![outcome("a", true, None), outcome("b", false, None)]),
        Some(1),
        start.clone(),
        now,
    );
    assert_eq!(failed.phase, ValidationRunPhase::Failed);
    assert_eq!(failed.message.as_deref(), Some("1 of 2 rules passed; failed: b"));
    assert_eq!(failed.results[1].message, "fix b");
    assert_eq!(failed.results[1].actual.as_deref(), Some("nope"));

    let many: Vec<RuleOutcome> = (0..12).map(|i| outcome(&format!("r{i}"), false, None)).collect();
    let many = evaluated_status(&report(many), Some(1), start.clone(), now);
    assert_eq!(
        many.message.as_deref(),
        Some("0 of 12 rules passed; failed: r0, r1, r2, r3, r4, r5, r6, r7, r8, r9 and 2 more")
    );

    let cause = cks_validation::Error::Ssh {
        target: "control-plane".into(),
        cause: "connection closed".into(),
    };
    let error = evaluated_status(
        &report(vec![outcome("a", false, None), outcome("b", false, Some(cause))]),
        Some(1),
        start,
        now,
    );
    assert_eq!(error.phase, ValidationRunPhase::Error);
    let message = error.message.unwrap();
    assert!(
        message.contains("rule b of task-1 could not be evaluated"),
        "{message}"
    );
    assert_eq!(
        find_condition(&error.conditions, condition_types::COMPLETE)
            .unwrap()
            .reason,
        reasons::RULE_ERROR
    );

    let refused = error_status(reasons::TASK_NOT_FOUND, "no task 7", Some(1), None, now);
    assert_eq!(refused.phase, ValidationRunPhase::Error);
    assert_eq!(refused.start_time, None);
    assert_eq!(
        find_condition(&refused.conditions, condition_types::COMPLETE)
            .unwrap()
            .reason,
        reasons::TASK_NOT_FOUND
    );
}

#[test]
fn a_run_is_settled_once_finished_recorded_labelled_and_owned() {
    let mut run = vrun("r", "task-1", 1, Some(ValidationRunPhase::Failed));
    run.labels_mut().insert(labels::SESSION.into(), "s1".into());
    let session = session(SessionPhase::Ready, Some("c1"));
    run.metadata.owner_references = session.controller_owner_ref(&()).map(|o| vec![o]);
    assert!(is_settled(&run), "a refusal (never started) is settled");

    let status = run.status.as_mut().unwrap();
    status.start_time = Some(Time(Timestamp::from_second(1).unwrap()));
    assert!(
        !is_settled(&run),
        "an evaluated run waits for its attempt to be recorded"
    );
    set_condition(
        &mut run.status.as_mut().unwrap().conditions,
        new_condition(
            TASKS_RECORDED,
            ConditionStatus::True,
            "Recorded",
            "",
            None,
            Timestamp::now(),
        ),
    );
    assert!(is_settled(&run));

    let mut unowned = run.clone();
    unowned.metadata.owner_references = None;
    assert!(!is_settled(&unowned));
    let mut unlabelled = run.clone();
    unlabelled.labels_mut().remove(labels::SESSION);
    assert!(!is_settled(&unlabelled));
    let mut running = run.clone();
    running.status.as_mut().unwrap().phase = ValidationRunPhase::Running;
    assert!(!is_settled(&running));
}
